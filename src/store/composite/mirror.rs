//! Consul as a mirror of the ledger: brought up to it after a reconcile, in one
//! transaction when it can, and not asked at all when nothing changed since.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConsulSync, Packed, Stores};
use crate::store::{AppliedState, ConsulStore, Result, Version};

/// What Consul holds of a config id after a sync: every version up to the newest,
/// and these applied states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Mirror {
    newest: i64,
    applied: BTreeMap<String, (i64, String)>,
}

/// A mirror, and the version whose content Consul lacks and why, if any.
pub(super) type Mirrored = (Mirror, Option<(i64, String)>);

impl Mirror {
    fn of<'a>(newest: i64, applied: impl IntoIterator<Item = &'a AppliedState>) -> Self {
        let applied = applied
            .into_iter()
            .map(|a| (a.environment.clone(), (a.version, a.checksum.clone())))
            .collect();
        Self { newest, applied }
    }
}

impl Stores {
    /// Brings Consul up to the ledger's versions and applied state for one config id,
    /// writing only what is missing or behind; nothing at all, without a request, when
    /// this operator knows of nothing since it last did. (Consul losing or changing
    /// keys behind its back is what a DriftCheck finds.) `None` when Consul is not
    /// configured.
    pub async fn sync_consul(&self, config_id: &str) -> Option<Result<ConsulSync>> {
        let consul = self.consul.as_ref()?;
        Some(self.sync_into(consul, config_id).await)
    }

    /// What Consul holds once synced, as far as this operator knows: `None` when it
    /// knows of no version or applied state yet.
    fn known_mirror(&self, config_id: &str) -> Option<Mirror> {
        let id = config_id.to_owned();
        let applied = self.applied.get(&id)?;
        Some(Mirror::of(self.newest.get(&id)?, applied.get().values()))
    }

    /// Every version of `config_id`, oldest first, if memory holds them all.
    fn known_versions(&self, config_id: &str) -> Option<Vec<Version>> {
        let newest = self.newest.get(&config_id.to_owned())?;
        self.versions.all(config_id, newest)
    }

    async fn sync_into(&self, consul: &ConsulStore, config_id: &str) -> Result<ConsulSync> {
        let id = config_id.to_owned();
        if let (Some(known), Some((mirrored, content_omitted))) = (
            self.known_mirror(config_id),
            self.mirrored.get(&id).map(|p| p.get()),
        ) && known == mirrored
        {
            return Ok(ConsulSync {
                content_omitted,
                ..ConsulSync::default()
            });
        }
        let recorded = match self.known_versions(config_id) {
            Some(known) => known,
            None => self.ledger.versions(config_id).await?,
        };
        let applied = self.applied(config_id).await?;
        let report = match consul.sync_at_once(config_id, &recorded, &applied).await? {
            Some(report) => report,
            None => sync_key_by_key(consul, config_id, &recorded, &applied).await?,
        };
        if let Some(latest) = recorded.last() {
            self.note_newest(config_id, latest.version);
            let mirror = Mirror::of(latest.version, &applied);
            let mirrored = (mirror, report.content_omitted.clone());
            self.mirrored.insert(id, Packed::new(&mirrored));
        }
        Ok(report)
    }
}

/// Brings Consul up to `recorded` (oldest first) and `applied` one key at a time, each
/// write a check-and-set retried when it loses a race.
async fn sync_key_by_key(
    consul: &ConsulStore,
    config_id: &str,
    recorded: &[Version],
    applied: &[AppliedState],
) -> Result<ConsulSync> {
    let mut report = ConsulSync::default();
    let mirrored = consul.headers(config_id).await?;
    for version in recorded {
        if !mirrored.iter().any(|m| m.version == version.version) {
            consul.store_version(version).await?;
            report.versions_written += 1;
        }
    }
    if let Some(latest) = recorded.last() {
        let mut current = consul.latest_header(config_id).await?;
        if current.as_ref().is_none_or(|l| l.version < latest.version) {
            consul.store_version(latest).await?;
            current = consul.latest_header(config_id).await?;
        }
        report.content_omitted = current
            .filter(|l| l.version == latest.version)
            .and_then(|l| l.content_omitted.map(|why| (l.version, why)));
    }
    let mirrored = consul.applied(config_id).await?;
    for state in applied {
        let current = mirrored.iter().find(|m| m.environment == state.environment);
        if current.is_none_or(|m| m.version != state.version || m.checksum != state.checksum) {
            consul.store_applied(state).await?;
            report.applied_written += 1;
        }
    }
    Ok(report)
}

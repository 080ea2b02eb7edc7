//! What a change's decisions depend on, read from the store: the config id's newest
//! version, what the environment runs, what the change recorded before, the version it
//! names, and who may approve it.

use kube::ResourceExt;

use crate::{
    api::v1alpha1::{
        ANNOTATION_CHANGE_AUTHORS, ApprovalPolicy, ConfigChange, ConfigEntry, EnvironmentSpec,
    },
    controller::{Context, Error, Result},
    core::{
        approval::{self, Excluded, Tally},
        change::{Decision, Known, Proposal, Recorded},
        entry::target_allowed,
        promotion::relaxed_to,
    },
    store::{Source, Version},
};

use super::workflow::change_id;

/// The environment `change` is for, as its entry declares it now. One whose ConfigMap
/// points where the entry may not project ends the change before anything is read
/// there (its canary's workloads, its metrics): the author chose that namespace.
pub(super) fn environment_of<'e>(
    change: &ConfigChange,
    entry: &'e ConfigEntry,
    ctx: &Context,
) -> Result<std::result::Result<&'e EnvironmentSpec, Decision>> {
    let name = &change.spec.environment;
    let environment = entry
        .environment(name)
        .ok_or_else(|| Error::EnvironmentGone {
            entry: entry.name_any(),
            environment: name.clone(),
        })?;
    let allowed = &ctx.settings.allowed_namespaces;
    Ok(target_allowed(entry, environment, allowed)
        .map(|()| environment)
        .map_err(Decision::failed))
}

/// The recorded versions a change's proposal builds on.
pub struct Facts {
    latest: Version,
    applied: Option<i64>,
    own: Option<Version>,
    live: Option<Version>,
    named: Option<Version>,
}

impl Facts {
    /// Reads them; `None` when the config id has no version yet.
    pub async fn gather(
        change: &ConfigChange,
        entry: &ConfigEntry,
        ctx: &Context,
    ) -> Result<Option<Self>> {
        let config_id = &entry.spec.config_id;
        let stores = &ctx.stores;
        let Some(latest) = stores.latest(config_id).await.map_err(Error::Store)? else {
            return Ok(None);
        };
        // What this environment runs now: changes build on it, never on a newer version
        // that still waits for approval here.
        let applied = stores
            .applied(config_id)
            .await
            .map_err(Error::Store)?
            .into_iter()
            .find(|a| a.environment == change.spec.environment)
            .map(|a| a.version);
        let own = stores
            .recorded_by(config_id, &change_id(change))
            .await
            .map_err(Error::Store)?;
        let (mut live, mut named) = (None, None);
        if own.is_none() {
            let live_version = applied.unwrap_or(latest.version);
            live = stores
                .version(config_id, live_version)
                .await
                .map_err(Error::Store)?;
            if let Some(wanted) = change.spec.rollback_to.or(change.spec.version) {
                named = stores
                    .version(config_id, wanted)
                    .await
                    .map_err(Error::Store)?;
            }
        }
        Ok(Some(Self {
            latest,
            applied,
            own,
            live,
            named,
        }))
    }

    /// The facts as the change's decisions read them.
    pub fn known<'a>(&'a self, entry: &'a ConfigEntry) -> Known<'a> {
        let recorded = |version: &'a Version| Recorded {
            number: version.version,
            snapshot: &version.snapshot,
        };
        Known {
            config_id: &entry.spec.config_id,
            latest: recorded(&self.latest),
            applied: self.applied,
            spec_latest: entry.status.as_ref().and_then(|s| s.latest_version),
            own: self.own.as_ref().map(recorded),
            live: self.live.as_ref().map(|v| &v.snapshot),
            named: self.named.as_ref().map(recorded),
        }
    }

    /// The newest version's number.
    pub fn latest_number(&self) -> i64 {
        self.latest.version
    }

    /// The change's approvals, counted against every requirement of the environment,
    /// and the approval floor the environment keeps once it applies (if it changes).
    pub async fn tally(
        &self,
        change: &ConfigChange,
        entry: &ConfigEntry,
        environment: &EnvironmentSpec,
        proposal: &Proposal,
        ctx: &Context,
    ) -> Result<(Tally, Option<Option<ApprovalPolicy>>)> {
        let config_id = &entry.spec.config_id;
        let floors = ctx.stores.floors(config_id).await.map_err(Error::Store)?;
        let floor = floors.iter().find(|f| f.environment == environment.name);
        let requirements =
            ctx.requirements(&environment.name, environment.approval.as_ref(), floor);
        let excluded = excluded(change, config_id, proposal.promoted(), self.applied, ctx).await?;
        let tally = requirements.count(&change.spec.approvals, &excluded);
        let after = approval::floor_change(
            floor.map(|f| f.policy.as_ref()),
            environment.approval.as_ref(),
            proposed_floor(change, entry, environment),
        );
        Ok((tally, after))
    }
}

/// The entry whose operator-made proposal this change is, by its controller owner.
fn operator_owned(change: &ConfigChange, ctx: &Context) -> Option<String> {
    let entry = ctx.entry(
        &change.namespace().unwrap_or_default(),
        &change.spec.config_entry,
    )?;
    owned_by(change, &entry).then(|| entry.name_any())
}

/// Whether the entry's controller owns the change: the operator proposed it.
fn owned_by(change: &ConfigChange, entry: &ConfigEntry) -> bool {
    let uid = entry.uid().unwrap_or_default();
    change
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

/// The approval floor a change lowers the environment to: only the operator's own
/// proposal of what the entry's spec asks now. Anything else a change names leaves the
/// floor where it is: a floor is lowered by the spec, through the approvers it guards.
pub fn proposed_floor<'c>(
    change: &'c ConfigChange,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
) -> Option<&'c ApprovalPolicy> {
    let proposed = change.spec.approval_policy.as_ref()?;
    let what_the_spec_asks = *proposed == relaxed_to(environment.approval.as_ref());
    (owned_by(change, entry) && what_the_spec_asks).then_some(proposed)
}

/// Who may not approve the change: its requester, and everyone who wrote content it
/// brings live: for a spec version, the authors of every version since the live one up
/// to it; for a rollback, the authors of the version it brings back.
async fn excluded(
    change: &ConfigChange,
    config_id: &str,
    promoted: Option<i64>,
    live_version: Option<i64>,
    ctx: &Context,
) -> Result<Excluded> {
    let requester = &change.spec.requested_by;
    let mut excluded = Excluded::requester(requester);
    let promoted = match promoted {
        Some(number) => ctx
            .stores
            .version(config_id, number)
            .await
            .map_err(Error::Store)?,
        None => None,
    };
    let (numbers, why): (Vec<i64>, &str) = match (&promoted, change.spec.rollback_to) {
        // The spec versions since the live one, up to the one proposed (a hundred at
        // most: older content is what was live long since). A relaxation of the live
        // version's policy brings no content live.
        (Some(promoted), _) if promoted.source == Source::Spec => {
            let first = live_version.map_or(1, |v| v + 1).max(promoted.version - 99);
            (
                (first..=promoted.version).collect(),
                "which this change also brings live",
            )
        }
        (None, Some(back)) => (vec![back], "whose content this change brings back"),
        _ => (Vec::new(), ""),
    };
    let wanted: Vec<(String, i64)> = numbers.iter().map(|n| (config_id.to_owned(), *n)).collect();
    ctx.stores
        .prefetch_versions(&wanted)
        .await
        .map_err(Error::Store)?;
    for number in numbers {
        let Some(version) = ctx
            .stores
            .version(config_id, number)
            .await
            .map_err(Error::Store)?
        else {
            continue;
        };
        // Content another ConfigChange recorded is not in a spec version.
        if promoted.is_some() && version.source != Source::Spec {
            continue;
        }
        let authors = if version.authors_proven() {
            version.authors.clone()
        } else {
            vec![version.created_by.clone()]
        };
        for author in authors.iter().filter(|a| *a != requester) {
            excluded.add(author, format!("{author} wrote version {number}, {why}"));
        }
    }
    // The operator's proposal also names everyone whose writes it carries (a relaxation
    // of the policy is in no version).
    if let Some(entry) = operator_owned(change, ctx) {
        let listed = change
            .annotations()
            .get(ANNOTATION_CHANGE_AUTHORS)
            .cloned()
            .unwrap_or_default();
        for author in listed.lines().filter(|a| !a.is_empty() && *a != requester) {
            excluded.add(
                author,
                format!("{author} wrote the spec of ConfigEntry {entry} that this change proposes"),
            );
        }
    }
    Ok(excluded)
}

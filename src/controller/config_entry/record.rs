//! Recording the spec: the entry claims its config id, and PostgreSQL decides the
//! version number, in one transaction with its audit row.

use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};

use super::KIND;
use crate::controller::{Error, Result};
use crate::{
    api::v1alpha1::{ANNOTATION_SPEC_AUTHORS, ApprovalPolicy, ConfigEntry, FINALIZER_CLEANUP},
    controller::{Context, guards::Guarded},
    core::{
        Note,
        entry::{
            authors::{self, UNKNOWN_AUTHOR},
            proposal::{Proposal, Writers},
            status::Live,
        },
        ownership::Claimant,
        resolve::Snapshot,
    },
    store::{AppliedState, Error as StoreError, Floor, NewVersion, Source, Version},
};

/// The entry's history as this reconcile recorded it.
pub struct Recorded {
    pub config_id: String,
    pub claimant: Claimant,
    /// The newest version: the spec's, or an older one with the same content.
    pub latest: Version,
    pub applied: Vec<AppliedState>,
    pub floors: Vec<Floor>,
    /// Who last wrote the spec, and everyone whose writes it holds since it was last
    /// recorded (empty when nothing proves it).
    pub author: String,
    pub authors: Vec<String>,
    /// What recording did that people should hear of: a new version.
    pub news: Option<Note>,
}

impl Recorded {
    pub fn applied_in(&self, environment: &str) -> Option<&AppliedState> {
        self.applied.iter().find(|a| a.environment == environment)
    }

    pub fn floor_of(&self, environment: &str) -> Option<&Floor> {
        self.floors.iter().find(|f| f.environment == environment)
    }

    /// The proposal of `version` (relaxing the floor to `policy`), by the newest
    /// version's authors and the spec's writers since.
    pub fn proposal(
        &self,
        (version, policy): (i64, Option<ApprovalPolicy>),
        content_live: bool,
    ) -> Proposal {
        let recorded = Writers {
            author: &self.latest.created_by,
            authors: &self.latest.authors,
        };
        let spec = Writers {
            author: &self.author,
            authors: &self.authors,
        };
        Proposal::new((version, policy), content_live, recorded, spec)
    }
}

/// What status says of a version live in an environment.
pub fn live_of(applied: &AppliedState) -> Live {
    Live::new(applied.version, &applied.checksum, applied.applied_at)
}

/// Records the spec as a version of the entry's config id, unless another entry holds
/// it (then nothing of that history is read or written).
pub async fn record(
    ctx: &Context,
    entry: &ConfigEntry,
    snapshot: &Snapshot,
) -> Result<Recorded, StoreError> {
    let config_id = entry.spec.config_id.clone();
    let claimant = Claimant::of(entry);
    let authors = authors::spec_authors(entry, &ctx.rules.guards.verdict(Guarded::Authors));
    let author = if authors.is_empty() {
        UNKNOWN_AUTHOR.to_owned()
    } else {
        authors::spec_author(entry)
    };
    let new_version = NewVersion {
        config_id: config_id.clone(),
        claimant: claimant.clone(),
        checksum: snapshot.checksum(),
        snapshot: snapshot.clone(),
        source: Source::Spec,
        created_by: author.clone(),
        authors: authors.clone(),
        message: format!(
            "spec of ConfigEntry {} (generation {})",
            entry.name_any(),
            entry.metadata.generation.unwrap_or(0)
        ),
        based_on: None,
    };
    let stored = async {
        ctx.stores.claim(&config_id, &claimant).await?;
        let recorded = ctx.stores.record(&new_version).await?;
        let applied = ctx.stores.applied(&config_id).await?;
        let floors = ctx.stores.floors(&config_id).await?;
        Ok((recorded, applied, floors))
    }
    .await;
    let answered = stored.is_ok() || matches!(stored, Err(StoreError::Claimed(_)));
    ctx.metrics.backend(ctx.stores.backend(), answered);
    let (recorded, applied, floors) = stored?;
    let latest = recorded.version;
    let news = recorded.created.then(|| {
        tracing::info!(%config_id, version = latest.version, "version recorded");
        ctx.metrics.versions_recorded.inc();
        let note = format!(
            "recorded version {} of {config_id} (checksum {})",
            latest.version,
            &latest.checksum[..12]
        );
        Note::normal("VersionRecorded", note)
    });
    Ok(Recorded {
        news,
        config_id,
        claimant,
        latest,
        applied,
        floors,
        author,
        authors,
    })
}

/// Brings the entry's metadata up to what recording it calls for, in one write: the
/// cleanup finalizer before anything is projected, and the list of spec writers
/// emptied once a version holds them all, unless the entry was written since it was
/// read (then the next version holds the newer writers too). A write that recorded
/// nothing new (an approval policy changed, say) keeps the list: its writers are no
/// version's authors yet.
///
/// Fails only when the finalizer is missing and cannot be added: nothing may be
/// projected that a deletion would not clean up.
pub async fn settle_metadata(
    ctx: &Context,
    entry: &ConfigEntry,
    recorded: &[String],
) -> Result<()> {
    let finalizers = entry.finalizers();
    let unguarded = !finalizers.iter().any(|f| f == FINALIZER_CLEANUP);
    let forget_authors = authors::all_recorded(entry, recorded);
    if !unguarded && !forget_authors {
        return Ok(());
    }
    let mut metadata = serde_json::json!({"resourceVersion": entry.resource_version()});
    if unguarded {
        let guarded = finalizers
            .iter()
            .map(String::as_str)
            .chain([FINALIZER_CLEANUP]);
        metadata["finalizers"] = guarded.collect::<Vec<_>>().into();
    }
    if forget_authors {
        metadata["annotations"] = serde_json::json!({ANNOTATION_SPEC_AUTHORS: null});
    }
    let api = ctx.namespaced::<ConfigEntry>(&entry.namespace().unwrap_or_default());
    let patch = Patch::Merge(serde_json::json!({ "metadata": metadata }));
    let patched = api
        .patch(&entry.name_any(), &PatchParams::default(), &patch)
        .await;
    match patched {
        Ok(_) => {
            ctx.count_write(KIND, "configentry");
            Ok(())
        }
        Err(error) if unguarded => Err(Error::kube(format!(
            "add the finalizer {FINALIZER_CLEANUP}"
        ))(error)),
        Err(error) => {
            tracing::debug!(%error, "spec writers kept for the next version");
            Ok(())
        }
    }
}

//! The ConfigChange reconcile loop: an approval workflow. A change is checked as soon
//! as it exists, so nobody approves what can never apply; it counts the approvals its
//! environment's policy accepts; once satisfied it applies through the version store (a
//! new version, or the recorded spec version it promotes, then the applied state with
//! its audit row) and has its entry project it. `Applied`, `Rejected`, `Failed`,
//! `Superseded` and `Expired` are final. The `approval_workflows` table mirrors it all.

use std::{sync::Arc, time::Duration};

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde_json::{Value, json};
use tracing::instrument;

use super::{
    Context, Error, Result,
    config_entry::{
        claimant,
        validate::{compile, schema_source},
    },
    guards::{Guarded, Verdict},
    observed, requeue_after_error,
    status::{self, Invalid, now},
};
use crate::api::v1alpha1::{ANNOTATION_CHANGE_AUTHORS, CONDITION_READY, CONDITION_VALIDATED};
use crate::{
    api::v1alpha1::{
        ChangePhase, Conditions, ConfigChange, ConfigChangeSpec, ConfigChangeStatus, ConfigEntry,
        ConfigFormat, EnvironmentSpec, free_form, parse_duration,
    },
    core::render::render,
    core::resolve::{Snapshot, checksum, merge_patch},
    core::{
        approval::{self, Excluded, Tally},
        promotion::relaxed_to,
    },
    store::{
        self, Application, FloorUpdate, NewVersion, Source, Version, Workflow, WorkflowApproval,
    },
    telemetry::{EnvironmentLabels, StageLabels},
};

/// The most validation errors a change's status lists; the message says how many more.
const STATUS_LIST_LIMIT: usize = 20;

const KIND: &str = "ConfigChange";

/// A pending change older than this counts as stalled.
const STALLED_AFTER: Duration = Duration::from_secs(24 * 3600);

#[instrument(skip_all, fields(namespace = change.namespace().unwrap_or_default(), name = change.name_any()))]
pub async fn reconcile(change: Arc<ConfigChange>, ctx: Arc<Context>) -> Result<Action> {
    let result = observed(KIND, change.as_ref(), &ctx, reconcile_change(&change, &ctx)).await;
    refresh_pending_metrics(&ctx);
    result
}

pub fn error_policy(change: Arc<ConfigChange>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, change.as_ref(), error, &ctx)
}

/// Where this reconcile leaves the change.
#[derive(Debug, Default)]
struct Decision {
    phase: Option<ChangePhase>,
    /// The `Ready` condition's reason and message (and the Event's, on a transition).
    reason: &'static str,
    message: String,
    /// `Validated`: `Ok(message)` or the reason it failed.
    validated: Option<Result<String, Invalid>>,
    base_version: Option<i64>,
    resulting_version: Option<i64>,
    validation_errors: Vec<String>,
    approvals: Option<Tally>,
    /// Who ended the change, for the audit trail.
    ended_by: Option<String>,
    requeue: Option<Duration>,
    /// Whether the change may be mirrored in the approval_workflows table and audited:
    /// not while nothing vouches for it, nor under a config id its entry does not hold.
    unrecorded: bool,
}

impl Decision {
    fn waiting(reason: &'static str, message: String) -> Self {
        Self {
            phase: Some(ChangePhase::Pending),
            reason,
            message,
            ..Self::default()
        }
    }

    fn end(phase: ChangePhase, reason: &'static str, message: String) -> Self {
        Self {
            phase: Some(phase),
            reason,
            message,
            ..Self::default()
        }
    }

    fn failed(invalid: Invalid) -> Self {
        Self {
            phase: Some(ChangePhase::Failed),
            reason: invalid.reason,
            message: invalid.message.clone(),
            validated: Some(Err(invalid)),
            ..Self::default()
        }
    }
}

async fn reconcile_change(change: &ConfigChange, ctx: &Context) -> Result<Action> {
    let current = change.status.clone().unwrap_or_default();
    if current.phase.is_some_and(is_final) {
        return Ok(Action::await_change());
    }
    let namespace = change.namespace().unwrap_or_default();
    let entry = ctx.entry(&namespace, &change.spec.config_entry);
    let decision = match (vouched(change, ctx), check_target(change, entry.as_deref())) {
        (Err(decision), _) => *decision,
        // GitOps tools apply in any order: wait for the entry to appear.
        (Ok(()), Err(invalid)) if entry.is_none() && invalid.reason == "EntryNotFound" => {
            Decision {
                validated: Some(Err(Invalid {
                    reason: invalid.reason,
                    message: invalid.message.clone(),
                })),
                ..Decision::waiting(invalid.reason, invalid.message)
            }
        }
        (Ok(()), Err(invalid)) => Decision::failed(invalid),
        (Ok(()), Ok(_)) => {
            let entry = entry.as_deref().ok_or(Error::CacheClosed)?;
            let config_id = &entry.spec.config_id;
            match ctx.stores.verify_claim(config_id, &claimant(entry)).await {
                Ok(()) => decide(change, entry, &current, ctx).await?,
                // Another entry's history: nothing of it is read, applied or audited.
                Err(store::Error::Claimed(refused)) => Decision {
                    unrecorded: true,
                    ..Decision::failed(Invalid {
                        reason: "ConfigIdClaimed",
                        message: format!(
                            "ConfigEntry {:?} cannot take changes: {}",
                            entry.name_any(),
                            refused.message
                        ),
                    })
                },
                // The entry has recorded nothing under its config id yet (it may be
                // refused it): the change waits for the entry.
                Err(store::Error::Unclaimed { .. }) => Decision {
                    unrecorded: true,
                    ..Decision::waiting(
                        "NoVersionYet",
                        format!(
                            "ConfigEntry {:?} has recorded no version yet; see its status",
                            entry.name_any()
                        ),
                    )
                },
                Err(error) => return Err(Error::Store(error)),
            }
        }
    };
    let requeue = decision.requeue;
    finish(change, entry.as_deref(), &current, decision, ctx).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Whether the admission policies vouch for the change's requester and approvals:
/// they are all in place, and were before the change was created.
fn vouched(change: &ConfigChange, ctx: &Context) -> Result<(), Box<Decision>> {
    match ctx.rules.guards.verdict(Guarded::Changes) {
        Verdict::NotRequired => Ok(()),
        Verdict::Missing(why) => Err(Box::new(Decision {
            unrecorded: true,
            ..Decision::waiting(
                "GuardsMissing",
                format!("{why}; this change waits until the policy is back"),
            )
        })),
        Verdict::Guarded { since: Some(since) }
            if change
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|created| created.0 <= since.0) =>
        {
            Err(Box::new(Decision {
                unrecorded: true,
                ..Decision::failed(Invalid {
                    reason: "Unvouched",
                    message: format!(
                        "created before the admission policies that prove who requested and approved it were all in place (the last at {}); its requester and approvals cannot be trusted: create it again",
                        since.0
                    ),
                })
            }))
        }
        Verdict::Guarded { .. } => Ok(()),
    }
}

/// The workflow's step for a change whose entry and environment exist.
async fn decide(
    change: &ConfigChange,
    entry: &ConfigEntry,
    current: &ConfigChangeStatus,
    ctx: &Context,
) -> Result<Decision> {
    let environment = entry
        .spec
        .environments
        .iter()
        .find(|e| e.name == change.spec.environment)
        .ok_or(Error::CacheClosed)?;
    let config_id = &entry.spec.config_id;
    let Some(latest) = ctx.stores.latest(config_id).await.map_err(Error::Store)? else {
        return Ok(Decision::waiting(
            "NoVersionYet",
            format!(
                "ConfigEntry {} has recorded no version yet",
                entry.name_any()
            ),
        ));
    };
    // What this environment runs now: changes build on it, never on a newer version
    // that still waits for approval here.
    let applied = ctx
        .stores
        .applied(config_id)
        .await
        .map_err(Error::Store)?
        .into_iter()
        .find(|a| a.environment == environment.name);
    let live_version = applied.as_ref().map_or(latest.version, |a| a.version);
    let base = change
        .spec
        .base_version
        .or(current.base_version)
        .or(change.spec.version)
        .unwrap_or(live_version);
    let with_base = |mut decision: Decision| {
        decision.base_version = Some(base);
        decision
    };

    let proposal = match propose(
        change,
        entry,
        &latest,
        applied.as_ref().map(|a| a.version),
        base,
        ctx,
    )
    .await?
    {
        Ok(proposal) => proposal,
        Err(decision) => return Ok(with_base(decision)),
    };
    let Some(content) = proposal.snapshot.resolve(&environment.name) else {
        return Ok(with_base(Decision::failed(Invalid {
            reason: "EnvironmentNotInVersion",
            message: format!(
                "spec.environment: the proposed version has no environment {:?}",
                environment.name
            ),
        })));
    };
    if let Err(decision) = check_content(&content, entry, environment, ctx) {
        return Ok(with_base(*decision));
    }
    let validated = Some(Ok(format!(
        "the proposed content of {} satisfies the entry's schema",
        environment.name
    )));

    if let Some(rejection) = &change.spec.rejection {
        return Ok(with_base(Decision {
            validated,
            ended_by: Some(rejection.rejected_by.clone()),
            ..Decision::end(
                ChangePhase::Rejected,
                "Rejected",
                format!(
                    "rejected by {}: {}",
                    rejection.rejected_by, rejection.reason
                ),
            )
        }));
    }
    let waited = age(change);
    let expiry = environment
        .approval
        .as_ref()
        .and_then(|p| p.pending_expiry.as_deref())
        .and_then(|text| parse_duration(text).ok());
    let floors = ctx.stores.floors(config_id).await.map_err(Error::Store)?;
    let floor = floors.iter().find(|f| f.environment == environment.name);
    let requirements = ctx.requirements(&environment.name, environment.approval.as_ref(), floor);
    let excluded = excluded(
        change,
        config_id,
        proposal.promoted.as_ref(),
        applied.as_ref().map(|a| a.version),
        ctx,
    )
    .await?;
    let approvals = requirements.count(&change.spec.approvals, &excluded);
    if !approvals.approved() {
        if let Some(expiry) = expiry
            && waited >= expiry
        {
            return Ok(with_base(Decision {
                validated,
                approvals: Some(approvals),
                ..Decision::end(
                    ChangePhase::Expired,
                    "Expired",
                    format!(
                        "not approved within {} (the environment's pendingExpiry)",
                        environment
                            .approval
                            .as_ref()
                            .and_then(|p| p.pending_expiry.clone())
                            .unwrap_or_default()
                    ),
                )
            }));
        }
        let message = approvals.waiting_message();
        return Ok(with_base(Decision {
            validated,
            approvals: Some(approvals),
            requeue: expiry.map(|e| e.saturating_sub(waited) + Duration::from_secs(1)),
            ..Decision::waiting("WaitingForApproval", message)
        }));
    }

    // Approved: record (or take the promoted version), then move the environment.
    let change_id = change_id(change);
    if current.approved_at.is_none() {
        ctx.metrics
            .approval_seconds
            .get_or_create(&StageLabels { stage: "approved" })
            .observe(waited.as_secs_f64());
    }
    sync_workflow(
        change,
        entry,
        base,
        &approvals.counted,
        ChangePhase::Approved,
        None,
        ctx,
    )
    .await?;
    let version = match proposal.promoted {
        Some(version) => version,
        None => {
            let new = NewVersion {
                config_id: config_id.clone(),
                claimant: claimant(entry),
                checksum: proposal.snapshot.checksum(),
                snapshot: proposal.snapshot.clone(),
                source: Source::Change {
                    change: change_id.clone(),
                },
                created_by: change.spec.requested_by.clone(),
                // The admission policy proved the requester: the author of what it asks.
                authors: vec![change.spec.requested_by.clone()],
                message: change.spec.message.clone(),
                // Nothing recorded in between: a concurrent record makes this retry.
                based_on: Some(latest.version),
            };
            match ctx.stores.record(&new).await {
                Ok(recorded) => {
                    if recorded.created {
                        ctx.metrics.versions_recorded.inc();
                    }
                    recorded.version
                }
                Err(store::Error::Superseded { .. }) => {
                    // Another version landed between reading and recording: build again.
                    return Ok(with_base(Decision {
                        validated,
                        approvals: Some(approvals),
                        requeue: Some(Duration::from_secs(1)),
                        ..Decision::waiting(
                            "Retrying",
                            "another version was recorded meanwhile; building on it".into(),
                        )
                    }));
                }
                Err(error) => return Err(Error::Store(error)),
            }
        }
    };
    let approvers: Vec<&str> = approvals.counted.iter().map(String::as_str).collect();
    let floor = approval::floor_change(
        floor.map(|f| f.policy.as_ref()),
        environment.approval.as_ref(),
        proposed_floor(change, entry, environment),
    )
    .map_or(FloorUpdate::Keep, FloorUpdate::Record);
    let application = Application {
        forward_only: true,
        claimant: claimant(entry),
        floor,
        config_id: config_id.clone(),
        environment: environment.name.clone(),
        version: version.version,
        checksum: version
            .snapshot
            .environment_checksum(&environment.name)
            .unwrap_or_else(|| checksum(&content)),
        actor: if approvers.is_empty() {
            change.spec.requested_by.clone()
        } else {
            approvers.join(",")
        },
        message: format!(
            "ConfigChange {change_id}: {} (requested by {}, {})",
            change.spec.message,
            change.spec.requested_by,
            if approvers.is_empty() {
                "auto-approved".to_owned()
            } else {
                format!("approved by {}", approvers.join(", "))
            }
        ),
    };
    match ctx.stores.apply(&application).await {
        Ok(_) => {}
        Err(store::Error::Superseded { latest, .. }) => {
            return Ok(with_base(Decision {
                validated,
                approvals: Some(approvals),
                ..Decision::end(
                    ChangePhase::Superseded,
                    "Superseded",
                    format!(
                        "version {latest} went live in {} while this change applied",
                        environment.name
                    ),
                )
            }));
        }
        Err(error) => return Err(Error::Store(error)),
    }
    ctx.reconcile_entry(&entry.namespace().unwrap_or_default(), &entry.name_any());
    ctx.metrics
        .approval_seconds
        .get_or_create(&StageLabels { stage: "applied" })
        .observe(age(change).as_secs_f64());
    Ok(with_base(Decision {
        validated,
        resulting_version: Some(version.version),
        approvals: Some(approvals),
        ..Decision::end(
            ChangePhase::Applied,
            "Applied",
            format!(
                "version {} is live in {}",
                version.version, environment.name
            ),
        )
    }))
}

fn superseded(base: i64, latest: i64) -> Decision {
    Decision::end(
        ChangePhase::Superseded,
        "Superseded",
        format!(
            "proposed against version {base}, but version {latest} was recorded since; propose again against the newest version"
        ),
    )
}

/// What a change proposes: a snapshot, and the recorded version itself when it
/// promotes one as it is.
struct Proposal {
    snapshot: Snapshot,
    promoted: Option<Version>,
}

/// Builds the proposed content, or the final decision when there is none to build.
async fn propose(
    change: &ConfigChange,
    entry: &ConfigEntry,
    latest: &Version,
    applied_version: Option<i64>,
    base: i64,
    ctx: &Context,
) -> Result<Result<Proposal, Decision>> {
    let spec = &change.spec;
    let config_id = &entry.spec.config_id;
    // A retry after this change recorded its version: apply that version if it never
    // went live, finish if it is live, and never revert whatever came after it.
    let live_version = applied_version.unwrap_or(latest.version);
    let id = change_id(change);
    let recorded = ctx
        .stores
        .recorded_by(config_id, &id)
        .await
        .map_err(Error::Store)?;
    if let Some(own) = recorded {
        if live_version > own.version {
            return Ok(Err(Decision::end(
                ChangePhase::Superseded,
                "Superseded",
                format!(
                    "version {} went live after this change's version {}",
                    live_version, own.version
                ),
            )));
        }
        return Ok(Ok(Proposal {
            snapshot: own.snapshot.clone(),
            promoted: Some(own),
        }));
    }
    // Build on what the environment runs, not on a newer version waiting here.
    let mut snapshot = ctx
        .stores
        .version(config_id, live_version)
        .await
        .map_err(Error::Store)?
        .map_or_else(|| latest.snapshot.clone(), |v| v.snapshot);
    if let Some(data) = &spec.data {
        if live_version != base {
            return Ok(Err(superseded(base, live_version)));
        }
        snapshot.data = data.clone();
    } else if let Some(patch) = &spec.patch {
        merge_patch(&mut snapshot.data, patch);
    } else if let Some(wanted) = spec.rollback_to.or(spec.version) {
        if spec.version.is_some() {
            let spec_version = entry.status.as_ref().and_then(|s| s.latest_version);
            if let Some(newer) = spec_version.filter(|v| *v > wanted) {
                return Ok(Err(Decision::end(
                    ChangePhase::Superseded,
                    "Superseded",
                    format!(
                        "the ConfigEntry's spec has recorded version {newer} since version {wanted}"
                    ),
                )));
            }
            if applied_version.is_some_and(|v| v > wanted) {
                return Ok(Err(Decision::end(
                    ChangePhase::Superseded,
                    "Superseded",
                    format!(
                        "{} already runs version {live_version}, newer than version {wanted}",
                        spec.environment
                    ),
                )));
            }
        }
        let Some(version) = ctx
            .stores
            .version(config_id, wanted)
            .await
            .map_err(Error::Store)?
        else {
            let field = if spec.version.is_some() {
                "spec.version"
            } else {
                "spec.rollbackTo"
            };
            return Ok(Err(Decision::failed(Invalid {
                reason: "VersionNotFound",
                message: format!(
                    "{field}: {config_id} has no version {wanted} (the newest is {})",
                    latest.version
                ),
            })));
        };
        if spec.version.is_some() {
            return Ok(Ok(Proposal {
                snapshot: version.snapshot.clone(),
                promoted: Some(version),
            }));
        }
        snapshot = version.snapshot;
    }
    Ok(Ok(Proposal {
        snapshot,
        promoted: None,
    }))
}

/// Checks the proposed content of the environment against the entry's schema, and that
/// it renders into the environment's ConfigMap.
fn check_content(
    content: &Value,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    ctx: &Context,
) -> Result<(), Box<Decision>> {
    let schema = compile(schema_source(entry, ctx)).map_err(|i| Box::new(Decision::failed(i)))?;
    if let Some((schema, origin)) = schema {
        let violations = schema.violations(content);
        if !violations.is_empty() {
            let errors: Vec<String> = violations.iter().map(ToString::to_string).collect();
            return Err(Box::new(Decision {
                validation_errors: errors.clone(),
                ..Decision::failed(Invalid {
                    reason: "SchemaViolation",
                    message: format!(
                        "the proposed content of {} violates {origin}: {}",
                        environment.name,
                        errors.join("; ")
                    ),
                })
            }));
        }
    }
    let format = environment
        .config_map
        .as_ref()
        .and_then(|t| t.format)
        .unwrap_or(ConfigFormat::Json);
    render(content, format).map_err(|error| {
        Box::new(Decision::failed(Invalid {
            reason: "RenderFailed",
            message: format!(
                "the proposed content of {} cannot be projected: {error}",
                environment.name
            ),
        }))
    })?;
    Ok(())
}

/// The entry whose operator-made proposal this change is, by its controller owner.
fn operator_owned(change: &ConfigChange, ctx: &Context) -> Option<String> {
    let entry = ctx.entry(
        &change.namespace().unwrap_or_default(),
        &change.spec.config_entry,
    )?;
    let uid = entry.uid().unwrap_or_default();
    change
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
        .then(|| entry.name_any())
}

/// The approval floor a change lowers the environment to: only the operator's own
/// proposal of what the entry's spec asks now. Anything else a change names leaves the
/// floor where it is: a floor is lowered by the spec, through the approvers it guards.
fn proposed_floor<'c>(
    change: &'c ConfigChange,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
) -> Option<&'c crate::api::v1alpha1::ApprovalPolicy> {
    let proposed = change.spec.approval_policy.as_ref()?;
    let uid = entry.uid().unwrap_or_default();
    let the_operators = change
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true));
    let what_the_spec_asks = *proposed == relaxed_to(environment.approval.as_ref());
    (the_operators && what_the_spec_asks).then_some(proposed)
}

/// At most [`STATUS_LIST_LIMIT`] items, the last saying how many more there were.
fn bounded_list(items: &[String]) -> Vec<String> {
    if items.len() <= STATUS_LIST_LIMIT {
        return items.to_vec();
    }
    let mut kept = items[..STATUS_LIST_LIMIT - 1].to_vec();
    kept.push(format!(
        "... and {} more",
        items.len() - (STATUS_LIST_LIMIT - 1)
    ));
    kept
}

/// Who may not approve the change: its requester, and everyone who wrote content it
/// brings live: for a spec version, the authors of every version since the live one up
/// to it; for a rollback, the authors of the version it brings back.
async fn excluded(
    change: &ConfigChange,
    config_id: &str,
    promoted: Option<&Version>,
    live_version: Option<i64>,
    ctx: &Context,
) -> Result<Excluded> {
    let requester = &change.spec.requested_by;
    let mut excluded = Excluded::requester(requester);
    let (config_id, numbers, why) = match (promoted, change.spec.rollback_to) {
        // The spec versions since the live one, up to the one proposed (a hundred at
        // most: older content is what was live long since). A relaxation of the live
        // version's policy brings no content live.
        (Some(promoted), _) if promoted.source == Source::Spec => {
            let first = live_version.map_or(1, |v| v + 1).max(promoted.version - 99);
            (
                config_id.to_owned(),
                (first..=promoted.version).collect::<Vec<_>>(),
                "which this change also brings live",
            )
        }
        (None, Some(back)) => (
            config_id.to_owned(),
            vec![back],
            "whose content this change brings back",
        ),
        _ => (config_id.to_owned(), Vec::new(), ""),
    };
    let wanted: Vec<(String, i64)> = numbers.iter().map(|n| (config_id.clone(), *n)).collect();
    ctx.stores
        .prefetch_versions(&wanted)
        .await
        .map_err(Error::Store)?;
    for number in numbers {
        let Some(version) = ctx
            .stores
            .version(&config_id, number)
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

fn is_final(phase: ChangePhase) -> bool {
    !matches!(phase, ChangePhase::Pending | ChangePhase::Approved)
}

/// `namespace/name@uid`: a change deleted and created again under its name is another
/// change, with its own workflow row and versions. At most 63 + 1 + 253 + 1 + 36
/// characters, which the `change_id` column holds.
fn change_id(change: &ConfigChange) -> String {
    let uid = change.uid().unwrap_or_default();
    let uid: String = uid.chars().take(36).collect();
    format!(
        "{}/{}@{uid}",
        change.namespace().unwrap_or_default(),
        change.name_any()
    )
}

/// How long ago the change was created.
fn age(change: &ConfigChange) -> Duration {
    change
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|created| {
            let seconds = now().0.as_second() - created.0.as_second();
            Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
        })
        .unwrap_or_default()
}

fn proposal(spec: &ConfigChangeSpec) -> Value {
    match (&spec.data, &spec.patch, spec.rollback_to, spec.version) {
        (Some(data), ..) => json!({"kind": "data", "environment": spec.environment, "data": data}),
        (_, Some(patch), ..) => {
            json!({"kind": "patch", "environment": spec.environment, "patch": patch})
        }
        (_, _, Some(version), _) => {
            json!({"kind": "rollbackTo", "environment": spec.environment, "version": version})
        }
        (_, _, _, version) => {
            json!({"kind": "version", "environment": spec.environment, "version": version})
        }
    }
}

fn phase_name(phase: ChangePhase) -> String {
    format!("{phase:?}").to_lowercase()
}

/// Mirrors the change in `approval_workflows`, with audit rows for each new step.
async fn sync_workflow(
    change: &ConfigChange,
    entry: &ConfigEntry,
    base: i64,
    counted: &[String],
    phase: ChangePhase,
    ended: Option<(&str, &str)>,
    ctx: &Context,
) -> Result<()> {
    let workflow = Workflow {
        change_id: change_id(change),
        config_id: entry.spec.config_id.clone(),
        environment: change.spec.environment.clone(),
        base_version: base,
        proposal: proposal(&change.spec),
        requested_by: change.spec.requested_by.clone(),
        requested_at: change
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(|| now().0, |t| t.0),
        message: change.spec.message.clone(),
        approvals: change
            .spec
            .approvals
            .iter()
            .map(|a| WorkflowApproval {
                approver: a.approver.clone(),
                comment: a.comment.clone(),
                counted: counted.contains(&a.approver),
            })
            .collect(),
        status: phase_name(phase),
        ended_by: ended.map(|(by, _)| by.to_owned()),
        end_reason: ended.map(|(_, why)| why.to_owned()),
        auto_approve_for: entry
            .spec
            .environments
            .iter()
            .filter(|e| e.auto_approves())
            .map(|e| e.name.clone())
            .collect(),
    };
    ctx.stores
        .sync_workflow(&workflow)
        .await
        .map_err(Error::Store)?;
    Ok(())
}

/// Records the decision: the workflow row, status (only when it changed) and an Event
/// when the phase changed.
async fn finish(
    change: &ConfigChange,
    entry: Option<&ConfigEntry>,
    current: &ConfigChangeStatus,
    decision: Decision,
    ctx: &Context,
) -> Result<()> {
    let phase = decision.phase.unwrap_or(ChangePhase::Pending);
    if let (Some(entry), Some(base), false) = (entry, decision.base_version, decision.unrecorded) {
        let counted = decision
            .approvals
            .as_ref()
            .map(|a| a.counted.clone())
            .unwrap_or_default();
        let ended = matches!(
            phase,
            ChangePhase::Rejected
                | ChangePhase::Expired
                | ChangePhase::Superseded
                | ChangePhase::Failed
        )
        .then_some((
            decision
                .ended_by
                .as_deref()
                .unwrap_or(ctx.identity.as_str()),
            decision.message.as_str(),
        ));
        sync_workflow(change, entry, base, &counted, phase, ended, ctx).await?;
    }

    let now = now();
    let generation = change.metadata.generation;
    let mut next = current.clone();
    next.observed_generation = generation;
    next.phase = Some(phase);
    next.base_version = decision.base_version.or(current.base_version);
    next.resulting_version = decision.resulting_version.or(current.resulting_version);
    next.validation_errors = bounded_list(&decision.validation_errors);
    if let Some(approvals) = &decision.approvals {
        let counted = i32::try_from(approvals.counted_toward_required()).unwrap_or(i32::MAX);
        let required = i32::try_from(approvals.required).unwrap_or(i32::MAX);
        next.approvals_counted = Some(counted);
        next.approvals_required = Some(required);
        next.approvals_summary = Some(format!("{counted}/{required}"));
        next.ignored_approvals = approvals.ignored.clone();
    }
    if matches!(phase, ChangePhase::Applied) && next.approved_at.is_none() {
        next.approved_at = Some(now.clone());
    }
    if matches!(phase, ChangePhase::Applied) && next.applied_at.is_none() {
        next.applied_at = Some(now.clone());
    }
    if is_final(phase) && phase != ChangePhase::Applied && next.finished_at.is_none() {
        next.finished_at = Some(now.clone());
    }
    let mut conditions = Conditions::new(&mut next.conditions, generation, now);
    match &decision.validated {
        Some(Ok(message)) => conditions.set(CONDITION_VALIDATED, true, "Valid", message),
        Some(Err(invalid)) => {
            conditions.set(CONDITION_VALIDATED, false, invalid.reason, &invalid.message);
        }
        None => {}
    }
    conditions.set(
        CONDITION_READY,
        phase == ChangePhase::Applied,
        decision.reason,
        &decision.message,
    );
    status::apply_status(ctx, KIND, change, change.status.as_ref(), &next).await?;
    if current.phase != Some(phase) {
        let type_ = match phase {
            ChangePhase::Pending | ChangePhase::Approved | ChangePhase::Applied => {
                EventType::Normal
            }
            _ => EventType::Warning,
        };
        tracing::info!(phase = ?phase, reason = decision.reason, "change moved");
        ctx.publish(change, type_, decision.reason, decision.message)
            .await;
        // Its entry says where its proposals stand, and proposes again when one can
        // never be approved.
        if is_final(phase) {
            ctx.reconcile_entry(
                &change.namespace().unwrap_or_default(),
                &change.spec.config_entry,
            );
        }
    }
    Ok(())
}

/// Pending changes per environment, and those pending for over a day, from the cache.
fn refresh_pending_metrics(ctx: &Context) {
    let mut pending = std::collections::BTreeMap::<String, i64>::new();
    let mut stalled = 0;
    for change in ctx.changes.state() {
        let phase = change.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, None | Some(ChangePhase::Pending)) {
            *pending.entry(change.spec.environment.clone()).or_default() += 1;
            if age(&change) > STALLED_AFTER {
                stalled += 1;
            }
        }
    }
    ctx.metrics.pending_changes.clear();
    for (environment, count) in pending {
        ctx.metrics
            .pending_changes
            .get_or_create(&EnvironmentLabels { environment })
            .set(count);
    }
    ctx.metrics.stalled_changes.set(stalled);
}

/// Checks that the change targets an existing entry and one of its environments, and
/// that its content could be read.
fn check_target(change: &ConfigChange, entry: Option<&ConfigEntry>) -> Result<String, Invalid> {
    for (field, value) in [
        ("spec.data", &change.spec.data),
        ("spec.patch", &change.spec.patch),
    ] {
        if value.as_ref().is_some_and(free_form::is_too_deep) {
            return Err(Invalid {
                reason: "Unreadable",
                message: format!(
                    "{field} nests objects and arrays deeper than {} levels, more than the operator reads: flatten it",
                    free_form::MAX_DEPTH
                ),
            });
        }
    }
    let entry_name = &change.spec.config_entry;
    let entry = entry.ok_or_else(|| Invalid {
        reason: "EntryNotFound",
        message: format!(
            "spec.configEntry: ConfigEntry {entry_name:?} does not exist in this namespace"
        ),
    })?;
    let environment = &change.spec.environment;
    if !entry
        .spec
        .environments
        .iter()
        .any(|e| &e.name == environment)
    {
        let known: Vec<&str> = entry
            .spec
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        return Err(Invalid {
            reason: "EnvironmentNotFound",
            message: format!(
                "spec.environment: ConfigEntry {entry_name:?} has no environment {environment:?} (it has {})",
                known.join(", ")
            ),
        });
    }
    Ok(format!(
        "targets environment {environment:?} of ConfigEntry {entry_name:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(yaml: &str) -> ConfigChange {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn entry() -> ConfigEntry {
        serde_yaml_ng::from_str(
            r#"
apiVersion: config.summit.io/v1alpha1
kind: ConfigEntry
metadata: {name: payments, namespace: team}
spec:
  configId: payments
  data: {}
  environments: [{name: development}, {name: production}]
"#,
        )
        .unwrap()
    }

    const CHANGE: &str = r#"
apiVersion: config.summit.io/v1alpha1
kind: ConfigChange
metadata: {name: raise-pool, namespace: team}
spec:
  configEntry: payments
  environment: staging
  patch: {pool: {max: 20}}
  message: more connections
  requestedBy: alice
"#;

    #[test]
    fn a_missing_entry_is_named() {
        let invalid = check_target(&change(CHANGE), None).unwrap_err();
        assert_eq!(invalid.reason, "EntryNotFound");
        assert!(
            invalid.message.contains("\"payments\" does not exist"),
            "{}",
            invalid.message
        );
    }

    #[test]
    fn an_unknown_environment_lists_the_known_ones() {
        let invalid = check_target(&change(CHANGE), Some(&entry())).unwrap_err();
        assert_eq!(
            invalid.message,
            "spec.environment: ConfigEntry \"payments\" has no environment \"staging\" (it has development, production)"
        );
    }

    #[test]
    fn a_known_environment_passes() {
        let change = change(&CHANGE.replace("staging", "production"));
        assert!(check_target(&change, Some(&entry())).is_ok());
    }
}

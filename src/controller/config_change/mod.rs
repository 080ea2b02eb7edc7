//! The ConfigChange reconcile loop: read what the change depends on, ask
//! [`core::change`](crate::core::change) where it stands, carry that out (record its
//! version, move its environment), mirror it in `approval_workflows`, and report.
//! `Applied`, `Rejected`, `Failed`, `Superseded` and `Expired` are final.

mod canary;
mod facts;
mod flag_split;
mod prometheus;
mod workflow;

use std::{sync::Arc, time::Duration};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    Context, Error, Result,
    guards::Guarded,
    observed, requeue_after_error,
    status::{self, now},
};
use crate::controller::events::EventType;
use crate::{
    api::v1alpha1::{
        ChangePhase, ConfigChange, ConfigChangeStatus, ConfigEntry, ConfigFormat, EnvironmentSpec,
    },
    core::{
        Invalid,
        approval::Tally,
        change::{self, Decision, Judged, Proposal},
        entry::validate::compile,
        ownership::Claimant,
        resolve::checksum,
        rollout::split,
    },
    store::{self, Application, FloorUpdate, NewVersion, Source},
    telemetry::{EnvironmentLabels, StageLabels},
};
use facts::Facts;
use workflow::{change_id, sync_workflow};

const KIND: &str = "ConfigChange";

/// The approval floor a change leaves its environment: unchanged (`None`), or recorded.
type Floor = Option<Option<crate::api::v1alpha1::ApprovalPolicy>>;

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

async fn reconcile_change(change: &ConfigChange, ctx: &Context) -> Result<Action> {
    let current = change.status.clone().unwrap_or_default();
    if current.phase.is_some_and(change::is_final) {
        return Ok(Action::await_change());
    }
    let namespace = change.namespace().unwrap_or_default();
    let entry = ctx.entry(&namespace, &change.spec.config_entry);
    let vouching = ctx.rules.guards.verdict(Guarded::Changes);
    let created = change.metadata.creation_timestamp.as_ref();
    let decision = match (
        change::vouched(&vouching, created),
        change::target(&change.spec, entry.as_deref()),
    ) {
        (Err(decision), _) => *decision,
        // GitOps tools apply in any order: wait for the entry to appear.
        (Ok(()), Err(invalid)) if entry.is_none() && invalid.reason == "EntryNotFound" => {
            Decision {
                validated: Some(Err(invalid.clone())),
                ..Decision::waiting(invalid.reason, invalid.message)
            }
        }
        (Ok(()), Err(invalid)) => Decision::failed(invalid),
        (Ok(()), Ok(_)) => {
            let entry = entry.as_deref().ok_or_else(|| Error::EnvironmentGone {
                entry: change.spec.config_entry.clone(),
                environment: change.spec.environment.clone(),
            })?;
            held(change, entry, &current, ctx).await?
        }
    };
    let requeue = decision.requeue;
    finish(change, entry.as_deref(), &current, decision, ctx).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The change's step, if its entry holds its config id: nothing of another entry's
/// history is read, applied or audited.
async fn held(
    change: &ConfigChange,
    entry: &ConfigEntry,
    current: &ConfigChangeStatus,
    ctx: &Context,
) -> Result<Decision> {
    let config_id = &entry.spec.config_id;
    match ctx
        .stores
        .verify_claim(config_id, &Claimant::of(entry))
        .await
    {
        Ok(()) => decide(change, entry, current, ctx).await,
        Err(store::Error::Claimed(refused)) => Ok(Decision::failed(Invalid {
            reason: "ConfigIdClaimed",
            message: format!(
                "ConfigEntry {:?} cannot take changes: {}",
                entry.name_any(),
                refused.message
            ),
        })
        .unrecorded()),
        // The entry has recorded nothing under its config id yet (it may be refused
        // it): the change waits for the entry.
        Err(store::Error::Unclaimed { .. }) => Ok(Decision::waiting(
            "NoVersionYet",
            format!(
                "ConfigEntry {:?} has recorded no version yet; see its status",
                entry.name_any()
            ),
        )
        .unrecorded()),
        Err(error) => Err(Error::Store(error)),
    }
}

/// The workflow's step for a change whose entry holds its config id.
async fn decide(
    change: &ConfigChange,
    entry: &ConfigEntry,
    current: &ConfigChangeStatus,
    ctx: &Context,
) -> Result<Decision> {
    let environment = match facts::environment_of(change, entry, ctx)? {
        Ok(environment) => environment,
        Err(decision) => return Ok(decision),
    };
    let Some(facts) = Facts::gather(change, entry, ctx).await? else {
        return Ok(Decision::waiting(
            "NoVersionYet",
            format!(
                "ConfigEntry {} has recorded no version yet",
                entry.name_any()
            ),
        ));
    };
    let known = facts.known(entry);
    let base = change::base_version(&change.spec, current.base_version, known.live_version());
    let proposal = match change::propose(&change.spec, base, &known) {
        Ok(proposal) => proposal,
        Err(decision) => return Ok(decision.based_on(base)),
    };
    let Some(content) = proposal.snapshot().resolve(&environment.name) else {
        return Ok(Decision::failed(Invalid {
            reason: "EnvironmentNotInVersion",
            message: format!(
                "spec.environment: the proposed version has no environment {:?}",
                environment.name
            ),
        })
        .based_on(base));
    };
    let splitting = change::split_under_way(&change.spec, &known);
    if let Some(split) = &change.spec.split
        && !splitting
        && let Err(invalid) = split::check(split, environment, &proposal.snapshot().data, &content)
    {
        return Ok(Decision::failed(invalid).based_on(base));
    }
    let schema = compile(ctx.schema_source(entry));
    let validated =
        match change::check_content(&content, &environment.name, schema, format(environment)) {
            Ok(message) => Some(Ok(message)),
            Err(decision) => return Ok(decision.based_on(base)),
        };
    let (tally, floor) = facts
        .tally(change, entry, environment, &proposal, ctx)
        .await?;
    let expiry = change::expiry_of(environment);
    let judgement = change::judge(change.spec.rejection.as_ref(), &tally, expiry, age(change));
    let unapproved = match change::judged(judgement, splitting) {
        Judged::Applies { unapproved } => unapproved,
        Judged::Decided(decided) => {
            return Ok(Decision {
                validated,
                ..*decided
            }
            .based_on(base));
        }
    };
    let approved = Approved {
        change,
        entry,
        environment,
        base,
        tally: &tally,
        current,
        unapproved,
    };
    let step = Decision {
        approvals: Some(tally.clone()),
        ..approved
            .apply(&proposal, &content, &facts, floor, ctx)
            .await?
    };
    Ok(Decision { validated, ..step }.based_on(base))
}

/// The ConfigMap format of an environment.
fn format(environment: &EnvironmentSpec) -> ConfigFormat {
    environment
        .config_map
        .as_ref()
        .and_then(|t| t.format)
        .unwrap_or(ConfigFormat::Json)
}

/// An approved change, about to apply.
struct Approved<'a> {
    change: &'a ConfigChange,
    entry: &'a ConfigEntry,
    environment: &'a EnvironmentSpec,
    base: i64,
    tally: &'a Tally,
    current: &'a ConfigChangeStatus,
    /// Why a split under way is no longer approved, if it is not (an approval withdrawn,
    /// or a policy that asks for more): it goes back.
    unapproved: Option<String>,
}

impl Approved<'_> {
    /// Records the proposal (or takes the version it promotes), then moves the
    /// environment to it, with its approval floor.
    async fn apply(
        &self,
        proposal: &Proposal,
        content: &serde_json::Value,
        facts: &Facts,
        floor: Floor,
        ctx: &Context,
    ) -> Result<Decision> {
        let (change, entry, environment) = (self.change, self.entry, self.environment);
        if self.current.approved_at.is_none() {
            ctx.metrics
                .approval_seconds
                .get_or_create(&StageLabels { stage: "approved" })
                .observe(age(change).as_secs_f64());
        }
        let base = self.base;
        sync_workflow(
            change,
            entry,
            base,
            &self.tally.counted,
            ChangePhase::Approved,
            None,
            ctx,
        )
        .await?;
        let version = match proposal {
            Proposal::Promote { version, snapshot } => (*version, snapshot.clone()),
            Proposal::New(snapshot) => {
                match self.record(snapshot, facts.latest_number(), ctx).await? {
                    Ok(version) => version,
                    Err(decision) => return Ok(decision),
                }
            }
        };
        if let Some(split) = &change.spec.split {
            return self.split(split, version, facts, floor, ctx).await;
        }
        let checksum = version
            .1
            .environment_checksum(&environment.name)
            .unwrap_or_else(|| checksum(content));
        let mut promoted = None;
        if let Some(rollout) = &environment.rollout
            && facts.known(entry).applied.is_some()
        {
            match self.stage(rollout, version.0, &checksum, ctx).await? {
                canary::Staged::Decided(decision) => return Ok(*decision),
                canary::Staged::Promote(status) => promoted = Some(status),
            }
        }
        if let Err(decision) = self.go_live(version.0, checksum, floor, ctx).await? {
            return Ok(decision);
        }
        ctx.metrics
            .approval_seconds
            .get_or_create(&StageLabels { stage: "applied" })
            .observe(age(change).as_secs_f64());
        Ok(Decision {
            rollout: promoted,
            ..change::applied(version.0, &environment.name)
        })
    }

    /// Moves the environment to `version` (whose content there has `checksum`), with
    /// the approval floor the change sets; or the decision that ends the change when a
    /// newer version went live first.
    async fn go_live(
        &self,
        version: i64,
        checksum: String,
        floor: Floor,
        ctx: &Context,
    ) -> Result<Result<(), Decision>> {
        let (change, entry, environment) = (self.change, self.entry, self.environment);
        let (actor, message) =
            change::application_note(&change_id(change), &change.spec, &self.tally.counted);
        let application = Application {
            change: Some(change_id(change)),
            forward_only: true,
            claimant: Claimant::of(entry),
            floor: floor.map_or(FloorUpdate::Keep, FloorUpdate::Record),
            config_id: entry.spec.config_id.clone(),
            environment: environment.name.clone(),
            version,
            checksum,
            actor,
            message,
        };
        match ctx.stores.apply(&application).await {
            Ok(_) => {}
            Err(store::Error::Superseded { latest, .. }) => {
                return Ok(Err(change::overtaken(latest, &environment.name)));
            }
            Err(error) => return Err(Error::Store(error)),
        }
        ctx.reconcile_entry(&entry.namespace().unwrap_or_default(), &entry.name_any());
        Ok(Ok(()))
    }

    /// Records new content as a version of the change's own, unless another version
    /// landed since it was read.
    async fn record(
        &self,
        snapshot: &crate::core::resolve::Snapshot,
        latest: i64,
        ctx: &Context,
    ) -> Result<Result<(i64, crate::core::resolve::Snapshot), Decision>> {
        let spec = &self.change.spec;
        let new = NewVersion {
            config_id: self.entry.spec.config_id.clone(),
            claimant: Claimant::of(self.entry),
            checksum: snapshot.checksum(),
            snapshot: snapshot.clone(),
            source: Source::Change {
                change: change_id(self.change),
            },
            created_by: spec.requested_by.clone(),
            // The admission policy proved the requester: the author of what it asks.
            authors: vec![spec.requested_by.clone()],
            message: spec.message.clone(),
            // Nothing recorded in between: a concurrent record makes this retry.
            based_on: Some(latest),
        };
        match ctx.stores.record(&new).await {
            Ok(recorded) => {
                if recorded.created {
                    ctx.metrics.versions_recorded.inc();
                }
                Ok(Ok((recorded.version.version, recorded.version.snapshot)))
            }
            Err(store::Error::Superseded { .. }) => Ok(Err(change::recorded_meanwhile())),
            Err(error) => Err(Error::Store(error)),
        }
    }
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
        let ended = (change::is_final(phase) && phase != ChangePhase::Applied).then_some((
            decision
                .ended_by
                .as_deref()
                .unwrap_or(ctx.settings.identity.as_str()),
            decision.message.as_str(),
        ));
        sync_workflow(change, entry, base, &counted, phase, ended, ctx).await?;
    }
    let next = change::status(current, &decision, change.metadata.generation, now());
    // A rollout's step moved (not only its bake's end): an audit row, and its entry
    // projects the canary.
    let stepped = step_of(current.rollout.as_ref()) != step_of(next.rollout.as_ref());
    if let (Some(entry), Some(rollout), true) = (entry, &next.rollout, stepped) {
        let row = canary::rollout_row(
            &change_id(change),
            &change.spec,
            &entry.spec.config_id,
            rollout,
        );
        ctx.stores.audit(&row).await.map_err(Error::Store)?;
    }
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
    }
    // Its entry says where its proposals stand, proposes again when one can never be
    // approved, and projects the canary of a staged rollout.
    let ended = current.phase != Some(phase) && change::is_final(phase);
    if ended || stepped {
        let namespace = change.namespace().unwrap_or_default();
        ctx.reconcile_entry(&namespace, &change.spec.config_entry);
    }
    Ok(())
}

/// Where a rollout stands, without when its bake ends.
fn step_of(
    rollout: Option<&crate::api::v1alpha1::RolloutStatus>,
) -> Option<(crate::api::v1alpha1::RolloutStep, i64, Option<i32>)> {
    rollout.map(|r| (r.step, r.version, r.share))
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

/// Pending changes per environment, and those pending for over a day, from the cache.
fn refresh_pending_metrics(ctx: &Context) {
    let mut pending = std::collections::BTreeMap::<String, i64>::new();
    let mut stalled = 0;
    for change in ctx.caches.changes.state() {
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

//! Moving each environment toward the newest version: applied at once where nothing
//! needs approval, proposed as a ConfigChange where something does. What each
//! environment does is decided in [`core::promotion`](crate::core::promotion); this
//! carries it out.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kube::{ResourceExt, api::PostParams, runtime::reflector::ObjectRef};

use super::{
    KIND,
    record::{Recorded, live_of},
};
use crate::controller::events::EventType;
use crate::{
    api::v1alpha1::{ConfigChange, ConfigEntry, EnvironmentPhase, EnvironmentSpec},
    controller::{Context, Error, guards::Guarded, status},
    core::{
        Note,
        approval::{self, Requirements},
        entry::{
            Plan,
            proposal::{self, Choice, Proposal},
            status::{EnvironmentOutcome, Live},
        },
        promotion::{self, Step, promote},
    },
    store::{Application, Error as StoreError, Floor, FloorUpdate, RaisedFloor},
};

/// Where the environments stand after promotion.
#[derive(Default)]
pub struct Promoted {
    pub outcomes: Vec<EnvironmentOutcome>,
    /// When each environment that moved to a new version did, for the apply latency.
    pub moved_at: HashMap<String, Instant>,
    /// When to look again for a proposal that cannot be made yet.
    pub propose_after: Option<Duration>,
    /// What moved, and what was asked for, for the pass's Event.
    pub happened: Vec<Note>,
}

/// A store that failed part way, and what that leaves of the entry.
pub struct Stopped {
    pub error: StoreError,
    pub consequence: String,
    /// What moved before it failed, for the pass's Event.
    pub happened: Vec<Note>,
}

impl Stopped {
    pub fn new(consequence: impl Into<String>) -> impl FnOnce(StoreError) -> Self {
        let consequence = consequence.into();
        move |error| Self {
            error,
            consequence,
            happened: Vec::new(),
        }
    }
}

/// Promotes every environment in turn; `plans` learn what their changes need.
pub async fn promote_all(
    ctx: &Context,
    entry: &ConfigEntry,
    recorded: &Recorded,
    plans: &mut [Plan<'_>],
) -> Result<Promoted, Stopped> {
    let mut promoted = Promoted::default();
    for plan in plans {
        match promote_one(ctx, entry, recorded, plan, &mut promoted).await {
            Ok(outcome) => promoted.outcomes.push(outcome),
            Err(stop) => {
                let happened = std::mem::take(&mut promoted.happened);
                return Err(Stopped { happened, ..stop });
            }
        }
    }
    Ok(promoted)
}

async fn promote_one(
    ctx: &Context,
    entry: &ConfigEntry,
    recorded: &Recorded,
    plan: &mut Plan<'_>,
    promoted: &mut Promoted,
) -> Result<EnvironmentOutcome, Stopped> {
    let name = plan.spec.name.clone();
    let latest = &recorded.latest;
    let current = recorded.applied_in(&name);
    let floor = recorded.floor_of(&name);
    let requirements = ctx.requirements(&name, plan.spec.approval.as_ref(), floor);
    plan.guard = (!requirements.auto_approves()).then(|| requirements.clone());
    let promotion = promote(&promotion::Environment {
        latest: (latest.version, &plan.checksum),
        live: current.map(|c| (c.version, c.checksum.as_str())),
        spec_policy: plan.spec.approval.as_ref(),
        floor: floor.map(|f| f.policy.as_ref()),
        requirements: &requirements,
        staged: plan.spec.rollout.is_some(),
    });
    if let Some(policy) = promotion.record_floor {
        let version = current.map_or(latest.version, |c| c.version);
        raise_floor(ctx, recorded, &name, policy, version).await?;
    }
    let mut outcome = EnvironmentOutcome::live(&name, current.map(live_of));
    match promotion.step {
        Step::Live => {}
        // A ConfigChange (or rollback) applied after the spec's newest version: the
        // newest version wins until the spec changes again.
        Step::NewerLive { version } => {
            outcome.message = Some(format!(
                "version {version} from a ConfigChange is live; the spec's newest version is {}",
                latest.version
            ));
        }
        Step::Apply => {
            promoted.moved_at.insert(name, Instant::now());
            let (live, note) = apply(ctx, recorded, plan, floor).await?;
            outcome.live = live;
            promoted.happened.extend(note);
        }
        Step::Propose { version, policy } => {
            let content_live = current.is_some_and(|c| c.checksum == plan.checksum);
            let proposal = recorded.proposal((version, policy), content_live);
            outcome.phase = EnvironmentPhase::PendingApproval;
            outcome.pending_version = Some(version);
            let vouching = ctx.rules.guards.verdict(Guarded::Changes);
            match proposal::held(&vouching, latest.authors_proven(), version, &status::now()) {
                Some(held) => {
                    outcome.message = Some(held.message);
                    promoted.propose_after = soonest(promoted.propose_after, held.retry);
                }
                None => {
                    ask(
                        ctx,
                        entry,
                        plan.spec,
                        &proposal,
                        &requirements,
                        &mut outcome,
                    )
                    .await
                }
            }
        }
    }
    Ok(outcome)
}

/// Records an environment's approval floor raised by the spec, as of `version`.
async fn raise_floor(
    ctx: &Context,
    recorded: &Recorded,
    environment: &str,
    policy: Option<crate::api::v1alpha1::ApprovalPolicy>,
    version: i64,
) -> Result<(), Stopped> {
    let raised = RaisedFloor {
        config_id: recorded.config_id.clone(),
        claimant: recorded.claimant.clone(),
        floor: Floor {
            environment: environment.to_owned(),
            policy,
            version,
        },
        actor: recorded.author.clone(),
    };
    ctx.stores
        .record_floor(&raised)
        .await
        .map_err(Stopped::new("what is live stays live"))
}

/// Applies the newest version where nothing needs approval. Returns what is live now,
/// and a note if it moved.
async fn apply(
    ctx: &Context,
    recorded: &Recorded,
    plan: &Plan<'_>,
    floor: Option<&Floor>,
) -> Result<(Option<Live>, Option<Note>), Stopped> {
    let latest = &recorded.latest;
    let name = &plan.spec.name;
    let floor_update = approval::floor_change(
        floor.map(|f| f.policy.as_ref()),
        plan.spec.approval.as_ref(),
        None,
    );
    let application = Application {
        change: None,
        forward_only: true,
        config_id: recorded.config_id.clone(),
        claimant: recorded.claimant.clone(),
        environment: name.clone(),
        version: latest.version,
        checksum: plan.checksum.clone(),
        actor: latest.created_by.clone(),
        message: format!(
            "applied version {} to {name} (no approval needed)",
            latest.version
        ),
        floor: floor_update.map_or(FloorUpdate::Keep, FloorUpdate::Record),
    };
    let not_applied = format!("version {} is recorded but not applied yet", latest.version);
    let moved = ctx
        .stores
        .apply(&application)
        .await
        .map_err(Stopped::new(not_applied))?;
    if let Some(live) = moved {
        tracing::info!(config_id = %recorded.config_id, environment = %name, version = latest.version, "applied");
        let note = Note::normal("Applied", application.message);
        return Ok((Some(live_of(&live)), Some(note)));
    }
    // Another writer moved it first: what is live is the ledger's to say.
    let applied = ctx
        .stores
        .applied(&recorded.config_id)
        .await
        .map_err(Stopped::new("what is live stays live"))?;
    let live = applied.iter().find(|a| &a.environment == name).map(live_of);
    Ok((live, None))
}

/// Asks for approval of `proposal`: finds its ConfigChange in the change controller's
/// cache, or creates it. Only this environment suffers if it cannot.
async fn ask(
    ctx: &Context,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    proposal: &Proposal,
    requirements: &Requirements,
    outcome: &mut EnvironmentOutcome,
) {
    let namespace = entry.namespace().unwrap_or_default();
    let choice = proposal::choose(entry, environment, proposal, |name| {
        ctx.caches
            .changes
            .get(&ObjectRef::new(name).within(&namespace))
    });
    let made = match &choice {
        Choice::Create(name) => create(ctx, entry, environment, proposal, name).await,
        _ => Ok(()),
    };
    let message = proposal::message(&choice, proposal, requirements);
    match (choice, made) {
        (_, Err(error)) => {
            outcome.phase = EnvironmentPhase::Degraded;
            outcome.message = Some(format!(
                "cannot propose version {}: {error}",
                proposal.version
            ));
        }
        (Choice::Taken, Ok(())) => {
            outcome.phase = EnvironmentPhase::Degraded;
            outcome.message = Some(message);
        }
        (Choice::Waiting(change) | Choice::Create(change) | Choice::Ended(change, _), Ok(())) => {
            // Where nothing needs approval, the change is there for the canary.
            let staged = environment.rollout.is_some() && requirements.auto_approves();
            outcome.message = Some(match staged {
                true => format!(
                    "version {} goes through the canary on ConfigChange {change}",
                    proposal.version
                ),
                false => message,
            });
            outcome.pending_change = Some(change);
        }
    }
}

/// Creates the ConfigChange of `proposal` under `name`.
async fn create(
    ctx: &Context,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    proposal: &Proposal,
    name: &str,
) -> Result<(), Error> {
    let namespace = entry.namespace().unwrap_or_default();
    let change = proposal::change(entry, environment, proposal, name);
    let created = ctx
        .namespaced::<ConfigChange>(&namespace)
        .create(&PostParams::default(), &change)
        .await;
    match created {
        Ok(_) => {
            ctx.count_write(KIND, "configchange");
            let note = format!(
                "version {} waits for approval in {} on ConfigChange {name}",
                proposal.version, environment.name
            );
            ctx.publish(entry, EventType::Normal, "ApprovalRequested", note)
                .await;
            Ok(())
        }
        // Made a moment ago, by an earlier reconcile whose write the cache has not seen.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(Error::kube(format!(
            "propose ConfigChange {namespace}/{name}"
        ))(error)),
    }
}

/// The sooner of two waits, either of which may be absent.
pub fn soonest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

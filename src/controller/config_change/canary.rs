//! An approved change to an environment that stages its versions: the version bakes
//! on the canary consumers first, and goes to every consumer only once they stayed
//! healthy through the bake time. A canary that fails is rolled back: the change ends
//! `Failed`, and its entry puts the canary back on what is live.

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{Api, ResourceExt, api::ListParams};

use super::{Approved, KIND, prometheus};
use crate::{
    api::v1alpha1::{
        ChangePhase, ConfigChangeSpec, RestartTarget, RolloutAction, RolloutDecision, RolloutSpec,
        RolloutStatus, RolloutStep, Time,
    },
    controller::{
        Context, Error, Result, config_entry::restart_annotation, status::now, workloads::Workload,
    },
    core::{
        change::Decision,
        entry::config_map_target,
        rollout::{
            self, Consumer, ConsumerState, LOOK_EVERY, Verdict, metric::Reading, pods::Pods,
        },
    },
    store::AuditRow,
    telemetry::ResultLabels,
};

/// What staging decided.
pub(super) enum Staged {
    /// The change stays on the canary, or ended there.
    Decided(Box<Decision>),
    /// The canary stayed healthy: the version goes to every consumer, and the change
    /// reports this.
    Promote(RolloutStatus),
}

impl Approved<'_> {
    /// Moves version `version` (whose content has `checksum` in the environment)
    /// through the canary of `rollout`.
    pub(super) async fn stage(
        &self,
        rollout: &RolloutSpec,
        version: i64,
        checksum: &str,
        ctx: &Context,
    ) -> Result<Staged> {
        let bake = rollout::bake_time(rollout).unwrap_or(LOOK_EVERY);
        let current = self.current.rollout.as_ref();
        let baking = current.filter(|r| r.version == version && r.step == RolloutStep::Canary);
        let (baking, fresh) = match baking {
            Some(baking) => (baking.clone(), false),
            None => (started(version, bake), true),
        };
        if fresh && let Some(other) = self.other_baking(ctx) {
            let message = format!(
                "approved; waits for ConfigChange {other} to finish baking on the canary of {}",
                self.environment.name
            );
            return Ok(Staged::Decided(Box::new(Decision {
                requeue: Some(LOOK_EVERY),
                ..Decision::waiting_approved("WaitingForCanary", message)
            })));
        }
        // A decision counts only for a version already baking: never to skip a canary.
        if let Some(decision) = self
            .change
            .spec
            .rollout_decision
            .as_ref()
            .filter(|_| !fresh)
        {
            return Ok(self.decided(decision, rollout, &baking, version, ctx));
        }
        if fresh {
            return Ok(self.baking(baking, LOOK_EVERY));
        }
        let baking = &baking;
        Ok(match self.health(rollout, baking, checksum, ctx).await? {
            Verdict::Hold { until } => {
                self.nudge(ctx);
                self.baking(held(baking, until), LOOK_EVERY)
            }
            Verdict::Wait(after) => self.baking(baking.clone(), after),
            Verdict::Promote => {
                let result = ResultLabels { result: "promoted" };
                ctx.metrics.rollouts.get_or_create(&result).inc();
                Staged::Promote(RolloutStatus {
                    step: RolloutStep::Promoted,
                    message: Some(format!(
                        "the canary stayed healthy for {}",
                        rollout.bake_time
                    )),
                    ..baking.clone()
                })
            }
            Verdict::RollBack(why) => self.rolled_back(rollout, baking, version, why, ctx),
        })
    }

    /// How the version baking as `baking` (projected with `checksum`) stands: its canary
    /// consumers and metric checks, judged by the environment's rollout rules. A canary
    /// and each step of a split are judged alike.
    pub(super) async fn health(
        &self,
        rollout: &RolloutSpec,
        baking: &RolloutStatus,
        checksum: &str,
        ctx: &Context,
    ) -> Result<Verdict> {
        let bake = rollout::bake_time(rollout).unwrap_or(LOOK_EVERY);
        let clock = clock(baking);
        match self.consumers(rollout, checksum, ctx).await {
            Ok(consumers) => {
                let readings = self.readings(rollout, ctx).await;
                Ok(rollout::judge(rollout, bake, clock, &consumers, &readings))
            }
            // Health that cannot be read by the end of the bake is not health.
            Err(error) if clock.now >= clock.until => Ok(Verdict::RollBack(format!(
                "the canary consumers cannot be read: {error}"
            ))),
            Err(error) => Err(error),
        }
    }

    /// The canary's consumers have not been given the version yet: its entry projects
    /// it (it may not have seen this change's status when asked).
    pub(super) fn nudge(&self, ctx: &Context) {
        let namespace = self.entry.namespace().unwrap_or_default();
        ctx.reconcile_entry(&namespace, &self.entry.name_any());
    }

    /// Another change of the same environment baking on its canary or splitting a flag
    /// now: one rollout at a time, the later one waits.
    pub(super) fn other_baking(&self, ctx: &Context) -> Option<String> {
        let namespace = self.change.namespace();
        let name = self.change.name_any();
        ctx.caches.changes.state().iter().find_map(|other| {
            let status = other.status.as_ref()?;
            let baking = status.phase == Some(ChangePhase::Approved)
                && status
                    .rollout
                    .as_ref()
                    .is_some_and(|r| matches!(r.step, RolloutStep::Canary | RolloutStep::Split));
            let same = other.namespace() == namespace
                && other.name_any() != name
                && other.spec.config_entry == self.change.spec.config_entry
                && other.spec.environment == self.change.spec.environment;
            (baking && same).then(|| other.name_any())
        })
    }

    /// What a person decided for the version on the canary.
    fn decided(
        &self,
        decision: &RolloutDecision,
        rollout: &RolloutSpec,
        baking: &RolloutStatus,
        version: i64,
        ctx: &Context,
    ) -> Staged {
        let why = format!(
            "{} by {}: {}",
            match decision.action {
                RolloutAction::Promote => "promoted",
                RolloutAction::Abort => "aborted",
            },
            decision.decided_by,
            decision.reason
        );
        match decision.action {
            RolloutAction::Abort => self.rolled_back(rollout, baking, version, why, ctx),
            RolloutAction::Promote => {
                let result = ResultLabels { result: "promoted" };
                ctx.metrics.rollouts.get_or_create(&result).inc();
                Staged::Promote(RolloutStatus {
                    step: RolloutStep::Promoted,
                    message: Some(why),
                    ..baking.clone()
                })
            }
        }
    }

    /// The change, failed: its canary returns to what is live.
    fn rolled_back(
        &self,
        rollout: &RolloutSpec,
        baking: &RolloutStatus,
        version: i64,
        why: String,
        ctx: &Context,
    ) -> Staged {
        let result = ResultLabels {
            result: "rolled_back",
        };
        ctx.metrics.rollouts.get_or_create(&result).inc();
        let environment = &self.environment.name;
        let message = format!(
            "version {version} was rolled back from the canary of {environment} ({} bake): {why}; the rest of {environment} never had it",
            rollout.bake_time
        );
        Staged::Decided(Box::new(Decision {
            rollout: Some(RolloutStatus {
                step: RolloutStep::RolledBack,
                message: Some(why),
                ..baking.clone()
            }),
            ..Decision::end(ChangePhase::Failed, "CanaryFailed", message)
        }))
    }

    /// The change, waiting on the canary; looked at again after `after`.
    fn baking(&self, status: RolloutStatus, after: std::time::Duration) -> Staged {
        let message = format!(
            "version {} bakes on the canary of {} until {}; the rest keep what is live",
            status.version, self.environment.name, status.bake_until.0
        );
        Staged::Decided(Box::new(Decision {
            rollout: Some(status),
            requeue: Some(after),
            phase: Some(ChangePhase::Approved),
            reason: "Canary",
            message,
            ..Decision::default()
        }))
    }

    /// What the rollout's metric checks come to now, about the entry's own namespace:
    /// never the namespace its spec targets, which its author chooses.
    pub(super) async fn readings(&self, rollout: &RolloutSpec, ctx: &Context) -> Vec<Reading> {
        if rollout.metrics.is_empty() {
            return Vec::new();
        }
        let namespace = self.entry.namespace().unwrap_or_default();
        prometheus::readings(rollout, &namespace, ctx).await
    }

    /// How each canary consumer stands on the version whose content has `checksum`.
    pub(super) async fn consumers(
        &self,
        rollout: &RolloutSpec,
        checksum: &str,
        ctx: &Context,
    ) -> Result<Vec<Consumer>> {
        let (namespace, _) = config_map_target(self.entry, self.environment);
        let annotation = restart_annotation(&self.entry.name_any());
        let mut consumers = Vec::new();
        for target in &rollout.canary_targets {
            let name = format!("{:?} {namespace}/{}", target.kind, target.name);
            let workloads = &ctx.caches.workloads;
            let workload = workloads.get(target.kind, &namespace, &target.name);
            let given = workload
                .as_ref()
                .is_some_and(|w| w.carries(&annotation, checksum));
            let (state, pods) = match workload {
                None => (ConsumerState::Missing, Pods::default()),
                Some(w) => {
                    let state = if w.runs(&annotation, checksum) {
                        ConsumerState::Running
                    } else {
                        ConsumerState::Rolling
                    };
                    let on = (namespace.as_str(), annotation.as_str(), checksum);
                    (state, pods_of(ctx, target, &w, on).await?)
                }
            };
            consumers.push(Consumer {
                name,
                state,
                restarts: pods.restarts,
                given,
                older: pods.older,
            });
        }
        Ok(consumers)
    }
}

/// Where the bake of `baking` stands now.
fn clock(baking: &RolloutStatus) -> rollout::Clock {
    rollout::Clock {
        started: baking.started_at.0.as_second(),
        until: baking.bake_until.0.as_second(),
        now: now().0.as_second(),
    }
}

/// `baking`, with its bake ending at `until` (seconds since the epoch).
pub(super) fn held(baking: &RolloutStatus, until: i64) -> RolloutStatus {
    let until = Timestamp::from_second(until).unwrap_or(Timestamp::MAX);
    RolloutStatus {
        bake_until: Time(until),
        ..baking.clone()
    }
}

/// A canary given `version` now, baking for `bake`.
pub(super) fn started(version: i64, bake: std::time::Duration) -> RolloutStatus {
    let started = now();
    let seconds = i64::try_from(bake.as_secs()).unwrap_or(i64::MAX);
    let until = Timestamp::from_second(started.0.as_second().saturating_add(seconds));
    RolloutStatus {
        step: RolloutStep::Canary,
        version,
        share: None,
        started_at: started,
        bake_until: Time(until.unwrap_or(Timestamp::MAX)),
        message: None,
    }
}

/// `target`'s pods (`workload`, from the cache), counted against the canary version in
/// `namespace`: their template carries `checksum` under `annotation`.
async fn pods_of(
    ctx: &Context,
    target: &RestartTarget,
    workload: &Workload,
    (namespace, annotation, checksum): (&str, &str, &str),
) -> Result<Pods> {
    if workload.selector.is_empty() {
        return Ok(Pods::default());
    }
    let describe = || format!("{:?} {namespace}/{}", target.kind, target.name);
    let selector: Vec<String> = workload
        .selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .map_err(Error::kube(format!("list the pods of {}", describe())))?;
    let pods = rollout::pods::count(&listed.items, target, annotation, checksum);
    tracing::debug!(kind = KIND, workload = %describe(), restarts = pods.restarts, older = pods.older, "canary pods");
    Ok(pods)
}

/// The audit row of a step of a staged rollout: the canary given the version,
/// promoted, or rolled back (and why), against the version, by the operator.
pub(super) fn rollout_row(
    change_id: &str,
    spec: &ConfigChangeSpec,
    config_id: &str,
    rollout: &RolloutStatus,
) -> AuditRow {
    if let Some(split) = &spec.split {
        return super::flag_split::split_row(change_id, spec, split, config_id, rollout);
    }
    let (event, what) = match rollout.step {
        RolloutStep::Canary | RolloutStep::Split => ("canaryStarted", "went to the canary"),
        RolloutStep::Promoted => ("canaryPromoted", "was promoted from the canary"),
        RolloutStep::RolledBack => ("canaryRolledBack", "was rolled back from the canary"),
    };
    let environment = &spec.environment;
    let why = row_why(rollout);
    AuditRow {
        config_id: config_id.to_owned(),
        version: Some(rollout.version),
        actor: row_actor(spec, rollout),
        message: format!(
            "version {} {what} of {environment} (ConfigChange {change_id}){why}",
            rollout.version
        ),
        changes: serde_json::json!({
            "event": event,
            "change": change_id,
            "environment": environment,
            "bakeUntil": rollout.bake_until,
        }),
    }
}

/// Who a rollout's audit row names: a person's promote or abort is theirs; the rest is
/// the operator's.
pub(super) fn row_actor(spec: &ConfigChangeSpec, rollout: &RolloutStatus) -> String {
    match (&spec.rejection, &spec.rollout_decision, rollout.step) {
        (Some(rejection), _, RolloutStep::RolledBack) => rejection.rejected_by.clone(),
        (_, Some(decision), RolloutStep::Promoted | RolloutStep::RolledBack) => {
            decision.decided_by.clone()
        }
        _ => "summit-config".into(),
    }
}

/// `": why"` of a rollout's audit row, from its status message.
pub(super) fn row_why(rollout: &RolloutStatus) -> String {
    rollout
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

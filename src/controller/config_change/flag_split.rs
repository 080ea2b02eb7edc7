//! An approved split: a flag's variant goes to a growing share of targeting keys, one
//! recorded version per step. Each step is live in the whole environment and bakes
//! under the environment's rollout rules, judged on its canary consumers; a healthy
//! step moves to the next, the last ends the change `Applied`, and a failing one puts
//! the flag back as it was before the split and ends the change `Failed`.

use std::time::Duration;

use super::{Approved, Floor, canary::held, facts::Facts};
use crate::{
    api::v1alpha1::{
        ChangePhase, ConfigChangeSpec, RolloutAction, RolloutStatus, RolloutStep, SplitSpec,
    },
    controller::{Context, Error, Result},
    core::{
        change::{self, Decision},
        resolve::{Snapshot, checksum},
        rollout::{self, LOOK_EVERY, Verdict, split},
    },
    store::AuditRow,
    telemetry::ResultLabels,
};

impl Approved<'_> {
    /// Moves the split on from the change's newest version, `version`.
    pub(super) async fn split(
        &self,
        split: &SplitSpec,
        version: (i64, Snapshot),
        facts: &Facts,
        floor: Floor,
        ctx: &Context,
    ) -> Result<Decision> {
        let (number, snapshot) = version;
        let Some(share) = split::share_of(&snapshot.data, split) else {
            // The version that put the flag back, whose report was lost.
            return self.back(split, (number, &snapshot), floor, ctx).await;
        };
        let current = self.current.rollout.as_ref();
        let baking = current.filter(|r| r.step == RolloutStep::Split && r.version == number);
        if let Some(why) = self.stopped() {
            // A step recorded and not yet reported may be live: it goes back all the same.
            let unreported = || self.baking_from_now(number, share);
            let baking = baking.cloned().unwrap_or_else(unreported);
            return self
                .undo(split, &baking, &snapshot, why, facts, floor, ctx)
                .await;
        }
        let rollout = match split::rollout_of(self.environment) {
            Ok(rollout) => rollout,
            Err(invalid) => return Ok(Decision::failed(invalid)),
        };
        let Some(baking) = baking else {
            if current.is_none()
                && let Some(other) = self.other_baking(ctx)
            {
                let message = format!(
                    "approved; waits for ConfigChange {other} to finish its rollout in {}",
                    self.environment.name
                );
                return Ok(Decision {
                    requeue: Some(LOOK_EVERY),
                    ..Decision::waiting_approved("WaitingForRollout", message)
                });
            }
            // A step recorded and not yet reported: it goes live now.
            return self.step(split, (number, &snapshot), floor, ctx).await;
        };
        let share = baking.share.unwrap_or_default();
        let sum = checksum_in(&snapshot, &self.environment.name);
        let next = match self.change.spec.rollout_decision.as_ref() {
            // Straight to the last step, which a promotion then ends.
            Some(_) => split.steps.last().copied().filter(|last| *last > share),
            None => match self.health(rollout, baking, &sum, ctx).await? {
                Verdict::Hold { until } => {
                    self.nudge(ctx);
                    return Ok(self.splitting(held(baking, until), LOOK_EVERY));
                }
                Verdict::Wait(after) => return Ok(self.splitting(baking.clone(), after)),
                Verdict::RollBack(why) => {
                    return self
                        .undo(split, baking, &snapshot, why, facts, floor, ctx)
                        .await;
                }
                Verdict::Promote => split::next_share(split, Some(share)),
            },
        };
        let Some(next) = next else {
            return Ok(self.completed(split, baking, number, ctx));
        };
        let data = match split::at_share(&snapshot.data, split, next) {
            Ok(data) => data,
            Err(invalid) => return Ok(Decision::failed(invalid)),
        };
        let recorded = self.record_step(&snapshot, data, facts, ctx).await?;
        match recorded {
            Ok((number, snapshot)) => self.step(split, (number, &snapshot), floor, ctx).await,
            Err(retry) => Ok(retry),
        }
    }

    /// Why the split under way stops here, if it does: rollout rules that went away (an
    /// approver's edit), approvals that no longer suffice, a rejection, or an abort.
    fn stopped(&self) -> Option<String> {
        let spec = &self.change.spec;
        if let Err(invalid) = split::rollout_of(self.environment) {
            return Some(invalid.message);
        }
        if let Some(unapproved) = &self.unapproved {
            return Some(format!("no longer approved: {unapproved}"));
        }
        if let Some(rejected) = &spec.rejection {
            return Some(format!(
                "rejected by {}: {}",
                rejected.rejected_by, rejected.reason
            ));
        }
        let decision = spec.rollout_decision.as_ref()?;
        (decision.action == RolloutAction::Abort)
            .then(|| format!("aborted by {}: {}", decision.decided_by, decision.reason))
    }

    /// The status of step `number` at `share`, baking from now under the environment's
    /// rollout rules: a step just put live, or one recorded and never reported.
    fn baking_from_now(&self, number: i64, share: i32) -> RolloutStatus {
        let rollout = split::rollout_of(self.environment).ok();
        let bake = rollout.and_then(rollout::bake_time).unwrap_or(LOOK_EVERY);
        RolloutStatus {
            step: RolloutStep::Split,
            share: Some(share),
            ..super::canary::started(number, bake)
        }
    }

    /// The split's last step baked: the change is applied at its version `number`.
    fn completed(
        &self,
        split: &SplitSpec,
        baking: &RolloutStatus,
        number: i64,
        ctx: &Context,
    ) -> Decision {
        ctx.metrics
            .rollouts
            .get_or_create(&ResultLabels { result: "promoted" })
            .inc();
        let share = baking.share.unwrap_or_default();
        Decision {
            rollout: Some(RolloutStatus {
                step: RolloutStep::Promoted,
                message: Some(format!(
                    "flag {} serves {} to {share}% of targeting keys",
                    split.flag, split.variant
                )),
                ..baking.clone()
            }),
            ..change::applied(number, &self.environment.name)
        }
    }

    /// Puts the step `version` live, and reports it baking there.
    async fn step(
        &self,
        split: &SplitSpec,
        (number, snapshot): (i64, &Snapshot),
        floor: Floor,
        ctx: &Context,
    ) -> Result<Decision> {
        if let Err(decision) = self.live(number, snapshot, floor, ctx).await? {
            return Ok(decision);
        }
        let share = split::share_of(&snapshot.data, split).unwrap_or_default();
        Ok(self.splitting(self.baking_from_now(number, share), LOOK_EVERY))
    }

    /// Puts version `number` (the content of `snapshot`) live in the environment.
    async fn live(
        &self,
        number: i64,
        snapshot: &Snapshot,
        floor: Floor,
        ctx: &Context,
    ) -> Result<Result<(), Decision>> {
        let sum = checksum_in(snapshot, &self.environment.name);
        self.go_live(number, sum, floor, ctx).await
    }

    /// The flag back as it was before the split: recorded, live, and the change failed.
    #[allow(
        clippy::too_many_arguments,
        reason = "one step of one rollout, spelled out"
    )]
    async fn undo(
        &self,
        split: &SplitSpec,
        baking: &RolloutStatus,
        snapshot: &Snapshot,
        why: String,
        facts: &Facts,
        floor: Floor,
        ctx: &Context,
    ) -> Result<Decision> {
        let config_id = &self.entry.spec.config_id;
        let before = ctx
            .stores
            .version(config_id, self.base)
            .await
            .map_err(Error::Store)?
            .ok_or_else(|| Error::VersionMissing {
                version: self.base,
                environment: self.environment.name.clone(),
            })?;
        let data = split::restored(&snapshot.data, &before.snapshot.data, &split.flag);
        let (number, restored) = match self.record_step(snapshot, data, facts, ctx).await? {
            Ok(recorded) => recorded,
            Err(retry) => return Ok(retry),
        };
        if let Err(decision) = self.live(number, &restored, floor, ctx).await? {
            return Ok(decision);
        }
        ctx.metrics
            .rollouts
            .get_or_create(&ResultLabels {
                result: "rolled_back",
            })
            .inc();
        Ok(self.put_back(split, baking, number, why))
    }

    /// The put-back version `number`, recorded by an earlier look whose report was lost:
    /// live, and the change ended as that look would have ended it.
    async fn back(
        &self,
        split: &SplitSpec,
        (number, snapshot): (i64, &Snapshot),
        floor: Floor,
        ctx: &Context,
    ) -> Result<Decision> {
        if let Err(decision) = self.live(number, snapshot, floor, ctx).await? {
            return Ok(decision);
        }
        let why = self
            .stopped()
            .unwrap_or_else(|| "a step failed the rollout's checks".to_owned());
        let reported = self.current.rollout.clone();
        let baking = reported.unwrap_or_else(|| self.baking_from_now(number, 0));
        Ok(self.put_back(split, &baking, number, why))
    }

    /// The change ended by version `number`, which put the flag back while `baking`:
    /// `Rejected` when an approver rejected it, `Failed` otherwise.
    fn put_back(
        &self,
        split: &SplitSpec,
        baking: &RolloutStatus,
        number: i64,
        why: String,
    ) -> Decision {
        let environment = &self.environment.name;
        let message = format!(
            "the split of flag {} was rolled back at {}% in {environment}: {why}; version {number} puts the flag back as it was in version {}",
            split.flag,
            baking.share.unwrap_or_default(),
            self.base
        );
        let failed = Decision {
            rollout: Some(RolloutStatus {
                step: RolloutStep::RolledBack,
                message: Some(why),
                ..baking.clone()
            }),
            ..Decision::end(ChangePhase::Failed, "SplitRolledBack", message)
        };
        match &self.change.spec.rejection {
            // Put back because an approver rejected it: it ends as a rejected canary does.
            Some(rejected) => Decision {
                phase: Some(ChangePhase::Rejected),
                reason: "Rejected",
                ended_by: Some(rejected.rejected_by.clone()),
                ..failed
            },
            None => failed,
        }
    }

    /// Records `data` as the change's next version, built on `snapshot` (the step live
    /// now); or the decision to retry when another version landed first.
    async fn record_step(
        &self,
        snapshot: &Snapshot,
        data: serde_json::Value,
        facts: &Facts,
        ctx: &Context,
    ) -> Result<Result<(i64, Snapshot), Decision>> {
        let next = Snapshot {
            data,
            ..snapshot.clone()
        };
        Ok(match self.record(&next, facts.latest_number(), ctx).await? {
            Ok(recorded) => Ok(recorded),
            // Still approved, and still where it was: build again on what landed.
            Err(_) => Err(Decision {
                requeue: Some(Duration::from_secs(1)),
                ..Decision::waiting_approved(
                    "Retrying",
                    "another version was recorded meanwhile; the split's next step builds on it"
                        .into(),
                )
            }),
        })
    }

    /// The change, with its split baking at `status`; looked at again after `after`.
    fn splitting(&self, status: RolloutStatus, after: Duration) -> Decision {
        let split = self.change.spec.split.as_ref();
        let message = format!(
            "version {} serves {} of flag {} to {}% of targeting keys in {}; bakes until {}",
            status.version,
            split.map(|s| s.variant.as_str()).unwrap_or_default(),
            split.map(|s| s.flag.as_str()).unwrap_or_default(),
            status.share.unwrap_or_default(),
            self.environment.name,
            status.bake_until.0
        );
        Decision {
            rollout: Some(status),
            requeue: Some(after),
            phase: Some(ChangePhase::Approved),
            reason: "Splitting",
            message,
            ..Decision::default()
        }
    }
}

/// The checksum of a version's content in `environment`, as its projection carries it.
fn checksum_in(snapshot: &Snapshot, environment: &str) -> String {
    snapshot
        .environment_checksum(environment)
        .unwrap_or_else(|| checksum(&snapshot.resolve(environment).unwrap_or_default()))
}

/// The audit row of a step of a split: a share reached, the split complete, or rolled
/// back (and why).
pub(super) fn split_row(
    change_id: &str,
    spec: &ConfigChangeSpec,
    split: &SplitSpec,
    config_id: &str,
    rollout: &RolloutStatus,
) -> AuditRow {
    let share = rollout.share.unwrap_or_default();
    let (event, what) = match rollout.step {
        RolloutStep::RolledBack => ("splitRolledBack", format!("was rolled back at {share}%")),
        RolloutStep::Promoted => ("splitCompleted", format!("completed at {share}%")),
        RolloutStep::Split | RolloutStep::Canary => ("splitStep", format!("moved to {share}%")),
    };
    let why = super::canary::row_why(rollout);
    AuditRow {
        config_id: config_id.to_owned(),
        version: Some(rollout.version),
        actor: super::canary::row_actor(spec, rollout),
        message: format!(
            "the split of flag {} to variant {} {what} of targeting keys in {} (version {}, ConfigChange {change_id}){why}",
            split.flag, split.variant, spec.environment, rollout.version
        ),
        changes: serde_json::json!({
            "event": event,
            "change": change_id,
            "environment": spec.environment,
            "flag": split.flag,
            "variant": split.variant,
            "share": share,
            "bakeUntil": rollout.bake_until,
        }),
    }
}

//! `rollout split`, which proposes a percentage rollout of a flag; `rollout promote`
//! and `rollout abort`: a person's decision on a version while it bakes on its
//! environment's canary or splits a flag, signed as the caller (the admission policy
//! requires what approving requires).

use clap::Subcommand;
use kube::api::{Api, PostParams};

use super::changes::whoami;
use super::client::{Error, Target, connect, request};
use crate::api::v1alpha1::{
    ChangePhase, ConfigChange, RolloutAction, RolloutDecision, RolloutStep, SplitSpec,
};

/// The rollout commands.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Propose moving a flag's variant to a growing share of targeting keys, one step
    /// at a time, each baked under the environment's rollout rules.
    #[command(
        after_help = "Example:\n  summit-config rollout split checkout-flags --env production --flag new-checkout --variant on --steps 10,50,100 -m \"new checkout for everyone\""
    )]
    Split {
        #[command(flatten)]
        change: super::changes::Propose,
        /// The flag's key.
        #[arg(long)]
        flag: String,
        /// The variant that gains the share (not the flag's default variant).
        #[arg(long)]
        variant: String,
        /// The variant's share at each step, in percent, strictly rising.
        #[arg(long, value_delimiter = ',', required = true)]
        steps: Vec<i32>,
        #[command(flatten)]
        target: Target,
    },
    /// Give the version baking on the canary to every consumer now, without waiting out
    /// the bake. Needs what approving needs.
    #[command(
        after_help = "Example:\n  summit-config rollout promote payments-production-v7 --reason \"dashboards clean\""
    )]
    Promote {
        /// The ConfigChange whose version bakes on the canary.
        change: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Roll the canary back now: the change ends Failed, and the rest of the
    /// environment never gets the version. Needs what approving needs.
    #[command(
        after_help = "Example:\n  summit-config rollout abort payments-production-v7 --reason \"p99 latency up\""
    )]
    Abort {
        /// The ConfigChange whose version bakes on the canary.
        change: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a rollout command.
pub async fn run(command: RolloutCommand) -> Result<(), Error> {
    let (action, change, reason, target) = match command {
        RolloutCommand::Split {
            change,
            flag,
            variant,
            steps,
            target,
        } => {
            if !steps.is_sorted_by(|a, b| a < b) || steps.iter().any(|s| !(1..=100).contains(s)) {
                return Err(Error::Invalid(format!(
                    "--steps {steps:?}: each step is a percentage from 1 to 100, strictly rising (e.g. 10,50,100)"
                )));
            }
            let split = SplitSpec {
                flag,
                variant,
                steps,
            };
            let proposal = super::changes::Proposal::Split(split);
            return super::changes::propose(&target, &change, proposal).await;
        }
        RolloutCommand::Promote {
            change,
            reason,
            target,
        } => (RolloutAction::Promote, change, reason, target),
        RolloutCommand::Abort {
            change,
            reason,
            target,
        } => (RolloutAction::Abort, change, reason, target),
    };
    decide(&target, &change, action, &reason).await
}

/// Records `action` on ConfigChange `name`, which must be on its canary.
pub async fn decide(
    target: &Target,
    name: &str,
    action: RolloutAction,
    reason: &str,
) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let (user, _) = whoami(&client).await?;
    let changes: Api<ConfigChange> = Api::namespaced(client, &namespace);
    for _ in 0..5 {
        let mut change = changes
            .get_opt(name)
            .await
            .map_err(request(format!("read ConfigChange {namespace}/{name}")))?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "ConfigChange {namespace}/{name} does not exist; `kubectl get configchanges` lists them with their Rollout column"
                ))
            })?;
        let status = change.status.as_ref();
        let baking = status.is_some_and(|s| {
            s.phase == Some(ChangePhase::Approved)
                && s.rollout
                    .as_ref()
                    .is_some_and(|r| matches!(r.step, RolloutStep::Canary | RolloutStep::Split))
        });
        if !baking {
            let phase = status.and_then(|s| s.phase).unwrap_or(ChangePhase::Pending);
            return Err(Error::Invalid(format!(
                "ConfigChange {name} is {phase:?} and neither on a canary nor splitting a flag; only a version baking on its canary, or a split, can be promoted or aborted"
            )));
        }
        if let Some(decided) = &change.spec.rollout_decision {
            return Err(Error::Invalid(format!(
                "ConfigChange {name} was already decided ({:?} by {}); a decision is final",
                decided.action, decided.decided_by
            )));
        }
        change.spec.rollout_decision = Some(RolloutDecision {
            action,
            decided_by: user.clone(),
            reason: reason.to_owned(),
        });
        match changes.replace(name, &PostParams::default(), &change).await {
            Ok(_) => {
                let done = match action {
                    RolloutAction::Promote => "promoted",
                    RolloutAction::Abort => "aborted",
                };
                println!("configchange/{name} {done} by {user}");
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(request(format!("record your decision on {name}"))(error)),
        }
    }
    Err(Error::Invalid(format!(
        "ConfigChange {name} kept changing while recording your decision; try again"
    )))
}

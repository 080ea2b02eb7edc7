//! Staged rollouts: a new version goes to an environment's canary consumers first,
//! and to the rest only after the canary stayed healthy through the bake time. Pure:
//! the change controller reads the canary's workloads, asks here, and promotes the
//! version or rolls the canary back.

use std::time::Duration;

use crate::api::v1alpha1::{ConfigEntry, EnvironmentSpec, RolloutSpec};

/// How often a canary is looked at while it bakes.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The ConfigMap the canary consumers read: the rollout's, or
/// `<entry>-<environment>-canary`.
pub fn canary_config_map(entry: &ConfigEntry, environment: &EnvironmentSpec) -> Option<String> {
    let rollout = environment.rollout.as_ref()?;
    let name = rollout.canary_config_map.clone().unwrap_or_else(|| {
        let entry_name = entry.metadata.name.as_deref().unwrap_or_default();
        format!("{entry_name}-{}-canary", environment.name)
    });
    Some(name)
}

/// How one canary consumer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    /// `Deployment team-a/payments-api-canary`, as messages name it.
    pub name: String,
    pub state: ConsumerState,
    /// Container restarts of its pods that run the canary version.
    pub restarts: u32,
    /// Whether its pod template carries the canary version yet.
    pub given: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerState {
    /// It does not exist.
    Missing,
    /// Not every pod runs the canary version and is ready yet.
    Rolling,
    /// Every pod runs the canary version and is ready.
    Running,
}

/// What happens to a canary now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy so far: look again after this long.
    Wait(Duration),
    /// Healthy through the bake time: the version goes to every consumer.
    Promote,
    /// The canary returns to what is live, and the change fails, for this reason.
    RollBack(String),
}

/// The bake time of a rollout, as written and as a duration.
pub fn bake_time(rollout: &RolloutSpec) -> Option<Duration> {
    crate::api::v1alpha1::parse_duration(&rollout.bake_time).ok()
}

/// Judges a canary `baked` into its bake time of `bake`.
pub fn judge(
    rollout: &RolloutSpec,
    bake: Duration,
    baked: Duration,
    consumers: &[Consumer],
) -> Verdict {
    let allowed = u32::try_from(rollout.max_restarts.unwrap_or(0)).unwrap_or(0);
    let restarts: u32 = consumers.iter().map(|c| c.restarts).sum();
    if restarts > allowed {
        return Verdict::RollBack(format!(
            "canary pods restarted {restarts} time(s) during the bake (at most {allowed} allowed)"
        ));
    }
    if baked < bake {
        return Verdict::Wait((bake - baked).min(LOOK_EVERY));
    }
    let unhealthy: Vec<String> = consumers
        .iter()
        .filter(|c| c.state != ConsumerState::Running)
        .map(|c| match c.state {
            ConsumerState::Missing => format!("{} does not exist", c.name),
            _ => format!("{} is not ready", c.name),
        })
        .collect();
    if unhealthy.is_empty() {
        return Verdict::Promote;
    }
    Verdict::RollBack(format!(
        "after the bake time ({}), {}",
        rollout.bake_time,
        unhealthy.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{RestartTarget, WorkloadKind};

    fn rollout(max_restarts: Option<i32>) -> RolloutSpec {
        RolloutSpec {
            canary_config_map: None,
            canary_targets: vec![RestartTarget {
                kind: WorkloadKind::Deployment,
                name: "api-canary".into(),
            }],
            bake_time: "30s".into(),
            max_restarts,
        }
    }

    fn consumer(state: ConsumerState, restarts: u32) -> Consumer {
        Consumer {
            name: "Deployment team-a/api-canary".into(),
            state,
            restarts,
            given: true,
        }
    }

    const BAKE: Duration = Duration::from_secs(30);

    #[test]
    fn a_healthy_canary_waits_out_the_bake_then_is_promoted() {
        let running = [consumer(ConsumerState::Running, 0)];
        let early = judge(&rollout(None), BAKE, Duration::from_secs(2), &running);
        assert_eq!(early, Verdict::Wait(LOOK_EVERY));
        let late = judge(&rollout(None), BAKE, Duration::from_secs(28), &running);
        assert_eq!(late, Verdict::Wait(Duration::from_secs(2)));
        assert_eq!(
            judge(&rollout(None), BAKE, BAKE, &running),
            Verdict::Promote
        );
    }

    #[test]
    fn a_canary_not_ready_by_the_end_of_the_bake_is_rolled_back() {
        let rolling = [consumer(ConsumerState::Rolling, 0)];
        let early = judge(&rollout(None), BAKE, Duration::from_secs(10), &rolling);
        assert!(matches!(early, Verdict::Wait(_)), "it may still come up");
        let Verdict::RollBack(why) = judge(&rollout(None), BAKE, BAKE, &rolling) else {
            panic!("rolled back");
        };
        assert_eq!(
            why,
            "after the bake time (30s), Deployment team-a/api-canary is not ready"
        );
        let missing = [consumer(ConsumerState::Missing, 0)];
        assert!(matches!(
            judge(&rollout(None), BAKE, BAKE, &missing),
            Verdict::RollBack(why) if why.contains("does not exist")
        ));
    }

    #[test]
    fn restarts_beyond_the_allowance_roll_back_at_once() {
        let crashing = [consumer(ConsumerState::Rolling, 2)];
        let verdict = judge(&rollout(None), BAKE, Duration::from_secs(1), &crashing);
        assert!(matches!(verdict, Verdict::RollBack(why) if why.contains("restarted 2 time(s)")));
        let tolerated = judge(&rollout(Some(2)), BAKE, Duration::from_secs(1), &crashing);
        assert!(matches!(tolerated, Verdict::Wait(_)));
    }
}

//! Staged rollouts: a new version goes to an environment's canary consumers first,
//! and to the rest only after the canary stayed healthy through the bake time. Pure:
//! the change controller reads the canary's workloads, asks here, and promotes the
//! version or rolls the canary back. A split ([`split`]) takes a flag's variant to a
//! growing share of targeting keys, judged step by step by the same rules.

pub mod metric;
pub mod pods;
pub mod split;

use std::time::Duration;

use crate::api::v1alpha1::{ConfigEntry, EnvironmentSpec, RolloutSpec};
use metric::Reading;

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
    /// Its pods of an older version still there, terminating ones included: Prometheus
    /// may still read their series.
    pub older: u32,
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

/// How long consumers may wait for their restart onto a version before the rollout
/// fails: the operator restarts one workload at most every `restartIntervalSeconds`.
pub const GIVEN_WITHIN: Duration = Duration::from_secs(300);

/// What happens to a canary now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy so far: look again after this long.
    Wait(Duration),
    /// A consumer still waits for its restart onto the version: the bake has not begun
    /// for it, and now ends at `until` (seconds since the epoch).
    Hold { until: i64 },
    /// Healthy through the bake time: the version goes to every consumer.
    Promote,
    /// The canary returns to what is live, and the change fails, for this reason.
    RollBack(String),
}

/// The bake time of a rollout, as written and as a duration.
pub fn bake_time(rollout: &RolloutSpec) -> Option<Duration> {
    crate::api::v1alpha1::parse_duration(&rollout.bake_time).ok()
}

/// A bake's clock, in seconds since the epoch: when the version was given to the
/// canary, when its bake ends, and now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub started: i64,
    pub until: i64,
    pub now: i64,
}

/// Judges a canary whose bake of `bake` stands at `clock`, from its consumers and the
/// readings of its metric checks. The bake ends `bake` after every consumer was given
/// the version: while one waits for its restart, the end moves on with the clock, for at
/// most [`GIVEN_WITHIN`]. Metrics fail it once every consumer runs the version and no
/// pod of an older one is left, and every metric must have answered so, within
/// bounds, at the end.
pub fn judge(
    rollout: &RolloutSpec,
    bake: Duration,
    clock: Clock,
    consumers: &[Consumer],
    readings: &[Reading],
) -> Verdict {
    if let Some(why) = crashing(rollout, consumers) {
        return Verdict::RollBack(why);
    }
    if let Some(verdict) = waiting(bake, clock, consumers) {
        return verdict;
    }
    // Metrics speak for the version only once no pod of an older one serves.
    let older = consumers
        .iter()
        .any(|c| c.state == ConsumerState::Rolling || c.older > 0);
    if !older && let Some(why) = metric::failed(readings) {
        return Verdict::RollBack(why);
    }
    let left = clock.until - clock.now;
    if left > 0 {
        let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
        return Verdict::Wait(left.min(LOOK_EVERY));
    }
    if let Some(why) = unhealthy(rollout, consumers) {
        return Verdict::RollBack(why);
    }
    if let Some(missing) = unanswered(consumers, readings) {
        if clock.now - clock.until > seconds(metric::ANSWER_WITHIN) {
            return Verdict::RollBack(format!(
                "{missing}: no answer {}s after the bake time",
                metric::ANSWER_WITHIN.as_secs()
            ));
        }
        return Verdict::Wait(LOOK_EVERY);
    }
    Verdict::Promote
}

/// Which metric checks have not answered for the version alone, if any: all of them
/// while a consumer still has pods of an older version.
fn unanswered(consumers: &[Consumer], readings: &[Reading]) -> Option<String> {
    let lingering = consumers.iter().find(|c| c.older > 0);
    match lingering {
        Some(consumer) if !readings.is_empty() => Some(format!(
            "the metric checks ({} still has {} pod(s) of an older version)",
            consumer.name, consumer.older
        )),
        _ => metric::unanswered(readings),
    }
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Why the canary's restarts fail it, if they do.
fn crashing(rollout: &RolloutSpec, consumers: &[Consumer]) -> Option<String> {
    let allowed = u32::try_from(rollout.max_restarts.unwrap_or(0)).unwrap_or(0);
    let restarts: u32 = consumers.iter().map(|c| c.restarts).sum();
    (restarts > allowed).then(|| {
        format!(
            "canary pods restarted {restarts} time(s) during the bake (at most {allowed} allowed)"
        )
    })
}

/// While a consumer waits for its restart onto the version, the bake holds; past
/// [`GIVEN_WITHIN`], it fails.
fn waiting(bake: Duration, clock: Clock, consumers: &[Consumer]) -> Option<Verdict> {
    let waiting: Vec<&str> = consumers
        .iter()
        .filter(|c| c.state != ConsumerState::Missing && !c.given)
        .map(|c| c.name.as_str())
        .collect();
    if waiting.is_empty() {
        return None;
    }
    if clock.now - clock.started > seconds(bake + GIVEN_WITHIN) {
        return Some(Verdict::RollBack(format!(
            "{} not restarted onto the version within {}s",
            waiting.join(", "),
            (bake + GIVEN_WITHIN).as_secs()
        )));
    }
    let until = clock.until.max(clock.now.saturating_add(seconds(bake)));
    Some(Verdict::Hold { until })
}

/// Why the consumers fail the canary at the end of the bake, if they do.
fn unhealthy(rollout: &RolloutSpec, consumers: &[Consumer]) -> Option<String> {
    let unhealthy: Vec<String> = consumers
        .iter()
        .filter(|c| c.state != ConsumerState::Running)
        .map(|c| match c.state {
            ConsumerState::Missing => format!("{} does not exist", c.name),
            _ => format!("{} is not ready", c.name),
        })
        .collect();
    (!unhealthy.is_empty()).then(|| {
        format!(
            "after the bake time ({}), {}",
            rollout.bake_time,
            unhealthy.join(", ")
        )
    })
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
            metrics: Vec::new(),
        }
    }

    fn consumer(state: ConsumerState, restarts: u32) -> Consumer {
        Consumer {
            name: "Deployment team-a/api-canary".into(),
            state,
            restarts,
            given: true,
            older: 0,
        }
    }

    const BAKE: Duration = Duration::from_secs(30);

    /// The clock `baked` into a bake of [`BAKE`] that started at 0.
    fn at(baked: Duration) -> Clock {
        Clock {
            started: 0,
            until: 30,
            now: i64::try_from(baked.as_secs()).unwrap(),
        }
    }

    #[test]
    fn a_healthy_canary_waits_out_the_bake_then_is_promoted() {
        let running = [consumer(ConsumerState::Running, 0)];
        let early = judge(
            &rollout(None),
            BAKE,
            at(Duration::from_secs(2)),
            &running,
            &[],
        );
        assert_eq!(early, Verdict::Wait(LOOK_EVERY));
        let late = judge(
            &rollout(None),
            BAKE,
            at(Duration::from_secs(28)),
            &running,
            &[],
        );
        assert_eq!(late, Verdict::Wait(Duration::from_secs(2)));
        assert_eq!(
            judge(&rollout(None), BAKE, at(BAKE), &running, &[]),
            Verdict::Promote
        );
    }

    #[test]
    fn a_canary_not_ready_by_the_end_of_the_bake_is_rolled_back() {
        let rolling = [consumer(ConsumerState::Rolling, 0)];
        let early = judge(
            &rollout(None),
            BAKE,
            at(Duration::from_secs(10)),
            &rolling,
            &[],
        );
        assert!(matches!(early, Verdict::Wait(_)), "it may still come up");
        let Verdict::RollBack(why) = judge(&rollout(None), BAKE, at(BAKE), &rolling, &[]) else {
            panic!("rolled back");
        };
        assert_eq!(
            why,
            "after the bake time (30s), Deployment team-a/api-canary is not ready"
        );
        let missing = [consumer(ConsumerState::Missing, 0)];
        assert!(matches!(
            judge(&rollout(None), BAKE, at(BAKE), &missing, &[]),
            Verdict::RollBack(why) if why.contains("does not exist")
        ));
    }

    #[test]
    fn the_bake_waits_for_consumers_to_be_restarted_onto_the_version() {
        let waiting = [Consumer {
            given: false,
            ..consumer(ConsumerState::Rolling, 0)
        }];
        // Given nothing yet at 25s into a 30s bake: the end moves to 30s from now.
        let held = judge(
            &rollout(None),
            BAKE,
            at(Duration::from_secs(25)),
            &waiting,
            &[],
        );
        assert_eq!(held, Verdict::Hold { until: 55 });
        // Never given: after the bake and GIVEN_WITHIN, it rolls back.
        let late = BAKE + GIVEN_WITHIN + Duration::from_secs(1);
        let Verdict::RollBack(why) = judge(&rollout(None), BAKE, at(late), &waiting, &[]) else {
            panic!("rolled back");
        };
        assert!(
            why.contains("not restarted onto the version within 330s"),
            "{why}"
        );
        // A missing consumer is not waited for: the bake judges it at its end.
        let missing = [Consumer {
            given: false,
            ..consumer(ConsumerState::Missing, 0)
        }];
        let verdict = judge(
            &rollout(None),
            BAKE,
            at(Duration::from_secs(25)),
            &missing,
            &[],
        );
        assert!(matches!(verdict, Verdict::Wait(_)));
    }

    #[test]
    fn restarts_beyond_the_allowance_roll_back_at_once() {
        let crashing = [consumer(ConsumerState::Rolling, 2)];
        let verdict = judge(
            &rollout(None),
            BAKE,
            at(Duration::from_secs(1)),
            &crashing,
            &[],
        );
        assert!(matches!(verdict, Verdict::RollBack(why) if why.contains("restarted 2 time(s)")));
        let tolerated = judge(
            &rollout(Some(2)),
            BAKE,
            at(Duration::from_secs(1)),
            &crashing,
            &[],
        );
        assert!(matches!(tolerated, Verdict::Wait(_)));
    }

    fn reading(answer: metric::Answer) -> Reading {
        let check = serde_json::from_value(serde_json::json!({
            "name": "errors", "query": "sum(errors)", "failAbove": 0,
        }));
        Reading {
            check: check.expect("a check"),
            answer,
        }
    }

    #[test]
    fn metrics_fail_the_bake_at_once_and_must_answer_by_its_end() {
        use metric::Answer;
        let running = [consumer(ConsumerState::Running, 0)];
        let judged = |baked: Duration, answer: Answer| {
            judge(
                &rollout(None),
                BAKE,
                at(baked),
                &running,
                &[reading(answer)],
            )
        };
        let early = Duration::from_secs(2);
        let breach = judged(early, Answer::Value(3.0));
        assert_eq!(
            breach,
            Verdict::RollBack("metric \"errors\" is 3, above 0".into())
        );
        assert!(matches!(judged(early, Answer::Empty), Verdict::Wait(_)));
        assert_eq!(judged(BAKE, Answer::Value(0.0)), Verdict::Promote);
        // Unanswered at the end: ask again, for at most ANSWER_WITHIN.
        let down = || Answer::Unreachable("connection refused".into());
        assert_eq!(judged(BAKE, down()), Verdict::Wait(LOOK_EVERY));
        let late = BAKE + metric::ANSWER_WITHIN + Duration::from_secs(1);
        let Verdict::RollBack(why) = judged(late, down()) else {
            panic!("rolled back");
        };
        assert!(why.contains("connection refused"), "{why}");
        // While older pods still serve, the metrics are not the version's.
        let rolling = [consumer(ConsumerState::Rolling, 0)];
        let verdict = judge(
            &rollout(None),
            BAKE,
            at(early),
            &rolling,
            &[reading(Answer::Value(3.0))],
        );
        assert!(matches!(verdict, Verdict::Wait(_)), "{verdict:?}");
        // Waiting for a restart, the metrics of the version are not in yet.
        let waiting = [Consumer {
            given: false,
            ..consumer(ConsumerState::Rolling, 0)
        }];
        let verdict = judge(
            &rollout(None),
            BAKE,
            at(early),
            &waiting,
            &[reading(Answer::Value(3.0))],
        );
        assert!(matches!(verdict, Verdict::Hold { .. }));
    }

    #[test]
    fn pods_of_an_older_version_keep_the_metrics_from_judging_until_they_are_gone() {
        use metric::Answer;
        let lingering = [Consumer {
            older: 1,
            ..consumer(ConsumerState::Running, 0)
        }];
        let judged = |baked: Duration| {
            judge(
                &rollout(None),
                BAKE,
                at(baked),
                &lingering,
                &[reading(Answer::Value(3.0))],
            )
        };
        // A terminating pod's errors are not the version's: no breach, and no promotion.
        let early = judged(Duration::from_secs(2));
        assert!(matches!(early, Verdict::Wait(_)), "{early:?}");
        assert_eq!(judged(BAKE), Verdict::Wait(LOOK_EVERY));
        let late = BAKE + metric::ANSWER_WITHIN + Duration::from_secs(1);
        let Verdict::RollBack(why) = judged(late) else {
            panic!("rolled back");
        };
        assert!(why.contains("1 pod(s) of an older version"), "{why}");
        // Never promoted on readings taken while it lingers, however good.
        let fine = judge(
            &rollout(None),
            BAKE,
            at(BAKE),
            &lingering,
            &[reading(Answer::Value(0.0))],
        );
        assert_eq!(fine, Verdict::Wait(LOOK_EVERY));
        // With no metric checks, a lingering pod changes nothing.
        let unmeasured = judge(&rollout(None), BAKE, at(BAKE), &lingering, &[]);
        assert_eq!(unmeasured, Verdict::Promote);
    }
}

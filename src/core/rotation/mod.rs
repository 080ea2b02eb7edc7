//! Where a rotation is decided: whether a policy's schedule is valid, when a rotation
//! is due and what holds it back, what status records after each step, when the
//! previous value may retire, what the target Secret holds, and what status, Events
//! and notifications say. Time is an argument. The SecretRotationPolicy controller
//! talks to the provider and the apiserver, and carries the steps out.

mod schedule;
mod target;

use std::time::Duration;

use kube::ResourceExt;

pub use schedule::{Schedule, check_schedule, later};
pub use target::{holder, target_checksums, target_data};

use crate::{
    api::v1alpha1::{
        ANNOTATION_ROTATE, CONDITION_READY, CONDITION_ROTATING, CONDITION_ROTATION_FAILED,
        CONDITION_VALIDATED, Conditions, SecretRotationPolicy, SecretRotationPolicyStatus, Time,
    },
    core::Note,
};

/// Whether a rotation is due, and whether it may go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Neither asked for nor scheduled.
    No,
    /// Due, and free to go; `request` is the annotation value it answers, if asked.
    Rotate { request: Option<String> },
    /// Due, and held back: why.
    Waits(String),
}

/// Whether `policy` rotates now: asked for (a new value of its rotate annotation) or
/// scheduled (unless suspended), and neither the previous value still in its grace
/// period nor the minimum interval holds it back.
pub fn due(
    policy: &SecretRotationPolicy,
    status: &SecretRotationPolicyStatus,
    schedule: &Schedule,
    now: &Time,
) -> Due {
    let request = policy.annotations().get(ANNOTATION_ROTATE).cloned();
    let requested = request.is_some() && request != status.last_handled_request;
    let scheduled = policy.spec.suspend != Some(true)
        && status
            .next_rotation_time
            .as_ref()
            .is_some_and(|at| at.0 <= now.0);
    if !requested && !scheduled {
        return Due::No;
    }
    if let Some(previous) = &status.previous_version {
        return Due::Waits(format!(
            "a rotation is due, and waits until the previous version {previous} retires"
        ));
    }
    let allowed = status
        .last_rotation_time
        .as_ref()
        .map(|last| later(last, schedule.minimum))
        .filter(|allowed| allowed.0 > now.0);
    if let Some(allowed) = allowed {
        return Due::Waits(format!(
            "a rotation is due, and waits for the minimum interval: not before {}",
            allowed.0
        ));
    }
    Due::Rotate {
        request: requested.then_some(request).flatten(),
    }
}

/// What happens to the previous value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retirement {
    /// None is in its grace period, or the period is not over.
    NotYet,
    /// The grace period is over, and some restart targets still run the previous value:
    /// they are restarted again, and it waits (why).
    Consumers(String),
    /// It retires now.
    Retire(String),
}

/// Whether the previous value retires `now`: after its grace period, once all `total`
/// restart targets (`running` of them so far) run the current one.
pub fn retirement(
    status: &SecretRotationPolicyStatus,
    (running, total): (i32, i32),
    now: &Time,
) -> Retirement {
    let (Some(previous), Some(retires_at)) =
        (&status.previous_version, &status.previous_retires_at)
    else {
        return Retirement::NotYet;
    };
    if retires_at.0 > now.0 {
        return Retirement::NotYet;
    }
    if running < total {
        return Retirement::Consumers(format!(
            "the grace period is over; the previous version {previous} stays until every restart target runs the new one ({running} of {total} do)"
        ));
    }
    Retirement::Retire(previous.clone())
}

/// Status once the provider's current value is first taken (`created` or adopted).
pub fn adopted(
    status: &mut SecretRotationPolicyStatus,
    version: &str,
    schedule: &Schedule,
    now: &Time,
) {
    status.current_version = Some(version.to_owned());
    status.next_rotation_time = Some(later(now, schedule.interval));
    status.rotation_count.get_or_insert(0);
}

/// Status once rotation number `count` made `new` current and `previous` the value in
/// its grace period.
pub fn rotated(
    status: &mut SecretRotationPolicyStatus,
    (previous, new): (&str, &str),
    count: i64,
    schedule: &Schedule,
    now: &Time,
) {
    status.previous_version = Some(previous.to_owned());
    status.current_version = Some(new.to_owned());
    status.last_rotation_time = Some(now.clone());
    status.next_rotation_time = Some(later(now, schedule.interval));
    status.previous_retires_at = Some(later(now, schedule.grace));
    status.rotation_count = Some(count);
}

/// Status once the previous value retired.
pub fn retired(status: &mut SecretRotationPolicyStatus) {
    status.previous_version = None;
    status.previous_retires_at = None;
}

/// The idempotency token of rotation number `count` of the policy with `uid`: a retry
/// finds the version the first attempt staged.
pub fn token(uid: &str, count: i64) -> String {
    format!("{uid}-{count}")
}

/// Something that happened: its Event, and the webhook notification's event name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Happened {
    pub note: Note,
    pub notification: &'static str,
}

impl Happened {
    pub fn adopted(created: bool, secret_id: &str, version: &str, target: &str) -> Self {
        let (reason, verb) = if created {
            ("SecretCreated", "created")
        } else {
            ("SecretAdopted", "adopted")
        };
        Self {
            note: Note::normal(
                reason,
                format!(
                    "{verb} secret {secret_id} version {version} is projected into Secret {target}"
                ),
            ),
            notification: verb,
        }
    }

    pub fn rotated(secret_id: &str, new: &str, previous: &str) -> Self {
        Self {
            note: Note::normal(
                "Rotated",
                format!(
                    "rotated {secret_id}: version {new} is current, version {previous} stays valid through the grace period"
                ),
            ),
            notification: "rotated",
        }
    }

    pub fn retired(secret_id: &str, previous: &str) -> Self {
        Self {
            note: Note::normal(
                "PreviousRetired",
                format!("version {previous} of {secret_id} is retired"),
            ),
            notification: "retired",
        }
    }

    pub fn restored(target: &str, edited: bool, version: &str) -> Self {
        let how = if edited { "edited" } else { "deleted" };
        Self {
            note: Note::normal(
                "TargetRestored",
                format!("Secret {target} was {how} by hand; version {version} is projected again"),
            ),
            notification: "restored",
        }
    }
}

/// What a reconcile did: what happened, and why a due rotation or retirement waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub happened: Vec<Happened>,
    pub waiting: Option<String>,
}

/// The status after a reconcile that took `current` to `next`, and the failure Event
/// it calls for. `failure` is the reason and message of a step the provider (or the
/// apiserver) refused; the target Secret then keeps its last good value.
pub fn status(
    current: &SecretRotationPolicyStatus,
    mut next: SecretRotationPolicyStatus,
    (schedule, target): (&Schedule, &str),
    progress: &Progress,
    failure: Option<(&str, String)>,
    (generation, now): (Option<i64>, Time),
) -> (SecretRotationPolicyStatus, Option<Happened>) {
    next.observed_generation = generation;
    let in_grace = next.previous_version.is_some();
    let rotating = match (&next.previous_version, &next.previous_retires_at) {
        (Some(previous), Some(at)) => format!(
            "the previous version {previous} stays valid until {} and until every restart target runs the new one",
            at.0
        ),
        _ => progress
            .waiting
            .clone()
            .unwrap_or_else(|| "no rotation in progress".into()),
    };
    let failed_before = current
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_ROTATION_FAILED && c.status == "True")
        .map(|c| c.message.clone());
    let projected = next.current_version.clone();
    let mut conditions = Conditions::new(&mut next.conditions, generation, now);
    conditions.set(CONDITION_VALIDATED, true, "Valid", &schedule.summary);
    let reason = if in_grace { "PreviousInGrace" } else { "Idle" };
    conditions.set(CONDITION_ROTATING, in_grace, reason, rotating);
    let mut failed = None;
    match failure {
        None => conditions.set(
            CONDITION_ROTATION_FAILED,
            false,
            "Succeeded",
            "the provider answered every step",
        ),
        Some((reason, error)) => {
            let message = format!("{error}; the target Secret keeps its last good value");
            conditions.set(CONDITION_ROTATION_FAILED, true, reason, &message);
            if failed_before.as_deref() != Some(message.as_str()) {
                failed = Some(Happened {
                    note: Note::warning("RotationFailed", message),
                    notification: "failed",
                });
            }
        }
    }
    match &projected {
        Some(version) => {
            let message = format!("Secret {target} holds version {version}");
            conditions.set(CONDITION_READY, true, "Projected", message);
        }
        None => conditions.set(
            CONDITION_READY,
            false,
            "NoValue",
            "no value has been projected yet",
        ),
    }
    conditions.summarize(None);
    (next, failed)
}

/// How often a policy looks again while something waits (restart targets are read
/// from the watch cache).
pub const WAITING_POLL: Duration = Duration::from_secs(5);
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// When to look again: at the next rotation or retirement, or soon while something
/// waits; at least once an hour.
pub fn requeue(status: &SecretRotationPolicyStatus, waiting: bool, now: &Time) -> Duration {
    let now = now.0.as_second();
    let due = [
        status.next_rotation_time.as_ref(),
        status.previous_retires_at.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|at| at.0.as_second() - now)
    // A time already past is either acted on now or waits on something else (a
    // suspended schedule, the grace period, consumers): never a hot loop.
    .filter(|seconds| *seconds > 0)
    .min();
    let mut delay = due.map_or(LONGEST_SLEEP, |seconds| {
        Duration::from_secs(u64::try_from(seconds).unwrap_or(1))
    });
    if waiting {
        delay = delay.min(WAITING_POLL);
    }
    delay.min(LONGEST_SLEEP)
}

#[cfg(test)]
mod tests;

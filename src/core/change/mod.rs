//! Where a ConfigChange is approved, and what happens to it: whether anything vouches
//! for it, what it proposes (built on what its environment runs), whether that content
//! is valid, whether its approvals meet every requirement of the environment, and the
//! phase it ends in. Pure: the change controller gathers the facts, asks here, and
//! carries out the answer.

mod proposal;
mod status;

use std::time::Duration;

pub use proposal::{Known, Proposal, Recorded, check_content, propose};
pub use status::{STATUS_LIST_LIMIT, bounded_list, status};

use crate::{
    api::v1alpha1::{
        ChangePhase, ConfigChangeSpec, ConfigEntry, EnvironmentSpec, Rejection, RolloutStatus,
        Time, free_form, parse_duration,
    },
    core::{Invalid, approval::Tally, vouching::Vouching},
};

/// Where this reconcile leaves the change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub phase: Option<ChangePhase>,
    /// The `Ready` condition's reason and message (and the Event's, on a transition).
    pub reason: &'static str,
    pub message: String,
    /// `Validated`: `Ok(message)` or the reason it failed.
    pub validated: Option<Result<String, Invalid>>,
    pub base_version: Option<i64>,
    pub resulting_version: Option<i64>,
    pub validation_errors: Vec<String>,
    pub approvals: Option<Tally>,
    /// Who ended the change, for the audit trail.
    pub ended_by: Option<String>,
    pub requeue: Option<Duration>,
    /// Whether the change stays out of the approval_workflows table and the audit trail:
    /// while nothing vouches for it, or under a config id its entry does not hold.
    pub unrecorded: bool,
    /// Where its version stands in a staged rollout, when it has moved.
    pub rollout: Option<RolloutStatus>,
}

impl Decision {
    pub fn waiting(reason: &'static str, message: String) -> Self {
        Self {
            phase: Some(ChangePhase::Pending),
            reason,
            message,
            ..Self::default()
        }
    }

    /// Approved, and waiting for something other than approvals.
    pub fn waiting_approved(reason: &'static str, message: String) -> Self {
        Self {
            phase: Some(ChangePhase::Approved),
            reason,
            message,
            ..Self::default()
        }
    }

    pub fn end(phase: ChangePhase, reason: &'static str, message: String) -> Self {
        Self {
            phase: Some(phase),
            reason,
            message,
            ..Self::default()
        }
    }

    pub fn failed(invalid: Invalid) -> Self {
        Self {
            phase: Some(ChangePhase::Failed),
            reason: invalid.reason,
            message: invalid.message.clone(),
            validated: Some(Err(invalid)),
            ..Self::default()
        }
    }

    /// Kept out of the workflow table and the audit trail.
    pub fn unrecorded(self) -> Self {
        Self {
            unrecorded: true,
            ..self
        }
    }

    /// Made against `base`.
    pub fn based_on(self, base: i64) -> Self {
        Self {
            base_version: Some(base),
            ..self
        }
    }
}

/// Whether a phase is final: nothing moves a change out of it.
pub fn is_final(phase: ChangePhase) -> bool {
    !matches!(phase, ChangePhase::Pending | ChangePhase::Approved)
}

/// Whether the admission policies vouch for the change's requester and approvals: they
/// are all in place, and were before the change was created (to the second).
pub fn vouched(vouching: &Vouching, created: Option<&Time>) -> Result<(), Box<Decision>> {
    match vouching {
        Vouching::NotRequired | Vouching::Since(None) => Ok(()),
        Vouching::Missing(why) => Err(Box::new(
            Decision::waiting(
                "GuardsMissing",
                format!("{why}; this change waits until the policy is back"),
            )
            .unrecorded(),
        )),
        Vouching::Since(Some(since)) if created.is_none_or(|created| created.0 <= since.0) => {
            Err(Box::new(
                Decision::failed(Invalid {
                    reason: "Unvouched",
                    message: format!(
                        "created before the admission policies that prove who requested and approved it were all in place (the last at {}); its requester and approvals cannot be trusted: create it again",
                        since.0
                    ),
                })
                .unrecorded(),
            ))
        }
        Vouching::Since(Some(_)) => Ok(()),
    }
}

/// Checks that the change targets an existing entry and one of its environments, and
/// that its content could be read.
pub fn target(spec: &ConfigChangeSpec, entry: Option<&ConfigEntry>) -> Result<String, Invalid> {
    for (field, value) in [("spec.data", &spec.data), ("spec.patch", &spec.patch)] {
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
    let entry_name = &spec.config_entry;
    let entry = entry.ok_or_else(|| Invalid {
        reason: "EntryNotFound",
        message: format!(
            "spec.configEntry: ConfigEntry {entry_name:?} does not exist in this namespace"
        ),
    })?;
    let environment = &spec.environment;
    if entry.environment(environment).is_none() {
        return Err(Invalid {
            reason: "EnvironmentNotFound",
            message: format!(
                "spec.environment: ConfigEntry {entry_name:?} has no environment {environment:?} (it has {})",
                entry.environment_names()
            ),
        });
    }
    Ok(format!(
        "targets environment {environment:?} of ConfigEntry {entry_name:?}"
    ))
}

/// The version the change was proposed against: what it names, what status
/// remembered, the version it promotes, or what the environment runs now.
pub fn base_version(spec: &ConfigChangeSpec, remembered: Option<i64>, live: i64) -> i64 {
    spec.base_version
        .or(remembered)
        .or(spec.version)
        .unwrap_or(live)
}

/// What a change's approvals decide once its content is valid.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// Someone rejected it.
    Rejected(Decision),
    /// Not approved in time.
    Expired(Decision),
    /// Still short of approvals.
    Waiting(Decision),
    /// Every requirement is met: it applies.
    Approved,
}

/// The pending expiry of the environment's policy, as written and as a duration.
pub type Expiry<'a> = (&'a str, Duration);

/// Judges a change's approvals: a rejection ends it; short of approvals it waits, or
/// expires after `expiry`; otherwise it is approved.
pub fn judge(
    rejection: Option<&Rejection>,
    tally: &Tally,
    expiry: Option<Expiry<'_>>,
    waited: Duration,
) -> Judgement {
    if let Some(rejection) = rejection {
        return Judgement::Rejected(Decision {
            ended_by: Some(rejection.rejected_by.clone()),
            ..Decision::end(
                ChangePhase::Rejected,
                "Rejected",
                format!(
                    "rejected by {}: {}",
                    rejection.rejected_by, rejection.reason
                ),
            )
        });
    }
    if tally.approved() {
        return Judgement::Approved;
    }
    if let Some((text, after)) = expiry
        && waited >= after
    {
        return Judgement::Expired(Decision {
            approvals: Some(tally.clone()),
            ..Decision::end(
                ChangePhase::Expired,
                "Expired",
                format!("not approved within {text} (the environment's pendingExpiry)"),
            )
        });
    }
    Judgement::Waiting(Decision {
        approvals: Some(tally.clone()),
        requeue: expiry.map(|(_, after)| after.saturating_sub(waited) + Duration::from_secs(1)),
        ..Decision::waiting("WaitingForApproval", tally.waiting_message())
    })
}

/// The pending expiry of the environment's approval policy, if it sets one.
pub fn expiry_of(environment: &EnvironmentSpec) -> Option<Expiry<'_>> {
    let text = environment.approval.as_ref()?.pending_expiry.as_deref()?;
    Some((text, parse_duration(text).ok()?))
}

/// Whether the change splits a flag and has recorded a step, which may be live: only
/// its approved path can put the flag back, so neither a broken rule nor its approvals
/// end it before that.
pub fn split_under_way(spec: &ConfigChangeSpec, known: &Known<'_>) -> bool {
    spec.split.is_some() && known.own.is_some()
}

/// Where the approvals leave a change.
#[derive(Debug, PartialEq)]
pub enum Judged {
    /// Ended, or waiting: this is its decision.
    Decided(Box<Decision>),
    /// On to its approved path; for a split under way that is no longer approved, why.
    Applies { unapproved: Option<String> },
}

/// Where `judgement` leaves the change. Under way, a split ends only through its
/// approved path, which puts its flag back first.
pub fn judged(judgement: Judgement, splitting: bool) -> Judged {
    match judgement {
        Judgement::Approved => Judged::Applies { unapproved: None },
        Judgement::Rejected(decision)
        | Judgement::Expired(decision)
        | Judgement::Waiting(decision)
            if !splitting =>
        {
            Judged::Decided(Box::new(decision))
        }
        Judgement::Rejected(_) => Judged::Applies { unapproved: None },
        Judgement::Expired(decision) | Judgement::Waiting(decision) => Judged::Applies {
            unapproved: Some(decision.message),
        },
    }
}

/// Who the audit row of an application names, and what it says.
pub fn application_note(
    change_id: &str,
    spec: &ConfigChangeSpec,
    counted: &[String],
) -> (String, String) {
    if counted.is_empty() {
        let message = format!(
            "ConfigChange {change_id}: {} (requested by {}, auto-approved)",
            spec.message, spec.requested_by
        );
        return (spec.requested_by.clone(), message);
    }
    let message = format!(
        "ConfigChange {change_id}: {} (requested by {}, approved by {})",
        spec.message,
        spec.requested_by,
        counted.join(", ")
    );
    (counted.join(","), message)
}

/// Another version was recorded between reading and recording: build again.
pub fn recorded_meanwhile() -> Decision {
    Decision {
        requeue: Some(Duration::from_secs(1)),
        ..Decision::waiting(
            "Retrying",
            "another version was recorded meanwhile; building on it".into(),
        )
    }
}

/// A newer version went live in the environment while this change applied.
pub fn overtaken(latest: i64, environment: &str) -> Decision {
    Decision::end(
        ChangePhase::Superseded,
        "Superseded",
        format!("version {latest} went live in {environment} while this change applied"),
    )
}

/// The change's version is live.
pub fn applied(version: i64, environment: &str) -> Decision {
    Decision {
        resulting_version: Some(version),
        ..Decision::end(
            ChangePhase::Applied,
            "Applied",
            format!("version {version} is live in {environment}"),
        )
    }
}

#[cfg(test)]
mod tests;

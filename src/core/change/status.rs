//! A ConfigChange's status, from where its reconcile left it.

use super::{Decision, is_final};
use crate::api::v1alpha1::{
    CONDITION_READY, CONDITION_VALIDATED, ChangePhase, Conditions, ConfigChangeStatus,
    RolloutStatus, RolloutStep, Time,
};

/// The most validation errors a change's status lists; the last says how many more.
pub const STATUS_LIST_LIMIT: usize = 20;

/// The status a change gets: `current` moved on by `decision`, at `now`.
pub fn status(
    current: &ConfigChangeStatus,
    decision: &Decision,
    generation: Option<i64>,
    now: Time,
) -> ConfigChangeStatus {
    let phase = decision.phase.unwrap_or(ChangePhase::Pending);
    let mut next = current.clone();
    next.observed_generation = generation;
    next.phase = Some(phase);
    next.base_version = decision.base_version.or(current.base_version);
    next.resulting_version = decision.resulting_version.or(current.resulting_version);
    next.validation_errors = bounded_list(&decision.validation_errors);
    match (&decision.rollout, &current.rollout) {
        (Some(rollout), _) => next.rollout = Some(rollout.clone()),
        // Ended while baking, any other way (rejected, superseded, failed): the canary
        // returns to what is live.
        (None, Some(baking))
            if baking.step == RolloutStep::Canary
                && is_final(phase)
                && phase != ChangePhase::Applied =>
        {
            next.rollout = Some(RolloutStatus {
                step: RolloutStep::RolledBack,
                message: Some(decision.message.clone()),
                ..baking.clone()
            });
        }
        _ => {}
    }
    if let Some(approvals) = &decision.approvals {
        let counted = i32::try_from(approvals.counted_toward_required()).unwrap_or(i32::MAX);
        let required = i32::try_from(approvals.required).unwrap_or(i32::MAX);
        next.approvals_counted = Some(counted);
        next.approvals_required = Some(required);
        next.approvals_summary = Some(format!("{counted}/{required}"));
        next.ignored_approvals = approvals.ignored.clone();
    }
    if phase == ChangePhase::Applied {
        next.approved_at.get_or_insert_with(|| now.clone());
        next.applied_at.get_or_insert_with(|| now.clone());
    }
    if is_final(phase) && phase != ChangePhase::Applied {
        next.finished_at.get_or_insert_with(|| now.clone());
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
    // A change that ended without being applied waits for nobody: only a new change
    // moves it.
    let ended = is_final(phase) && phase != ChangePhase::Applied;
    conditions.summarize(ended.then_some((decision.reason, decision.message.as_str())));
    next
}

/// At most [`STATUS_LIST_LIMIT`] items, the last saying how many more there were.
pub fn bounded_list(items: &[String]) -> Vec<String> {
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

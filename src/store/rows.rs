//! The audit rows every ledger writes, built in one place so PostgreSQL and the
//! cluster ledger tell the same story in the same words.

use serde_json::{Value, json};

use super::{AuditRow, Claimant, Floor, Projection, Rotation, Target, Workflow, WorkflowApproval};

/// The actor of rows the operator writes on its own account.
const OPERATOR: &str = "summit-config";

fn row(
    config_id: &str,
    version: Option<i64>,
    actor: &str,
    message: &str,
    changes: Value,
) -> AuditRow {
    AuditRow {
        config_id: config_id.to_owned(),
        version,
        actor: actor.to_owned(),
        message: message.to_owned(),
        changes,
    }
}

/// `claimant` took a config id (`renewed`: an entry of the same name came back with a
/// new uid and took it up again).
pub fn claimed(config_id: &str, claimant: &Claimant, renewed: bool) -> AuditRow {
    let event = if renewed { "claimRenewed" } else { "claimed" };
    row(
        config_id,
        None,
        &claimant.entry(),
        &format!("config id {event} by ConfigEntry {claimant}"),
        json!({"event": event, "entry": claimant.entry(), "uid": claimant.uid}),
    )
}

/// An environment's approval floor changed from `previous` (absent: none was kept).
pub fn floor(config_id: &str, floor: &Floor, previous: Option<Value>, actor: &str) -> AuditRow {
    let policy = serde_json::to_value(&floor.policy).unwrap_or(Value::Null);
    row(
        config_id,
        Some(floor.version),
        actor,
        &format!(
            "approval floor of {}: {}",
            floor.environment,
            crate::core::approval::describe(floor.policy.as_ref())
        ),
        json!({"event": "approvalFloor", "environment": floor.environment, "policy": policy, "previous": previous}),
    )
}

/// `target` moved from one projection to another: a row for each config id.
pub fn rebound(target: &Target, from: &Projection, to: &Projection) -> [AuditRow; 2] {
    let changes = json!({
        "event": "targetRebound",
        "target": target.to_string(),
        "from": {"configId": from.config_id, "environment": from.environment},
        "to": {"configId": to.config_id, "environment": to.environment},
    });
    let message = format!(
        "{target} passes from {} of {} to {} of {}, guarded at least as well",
        from.environment, from.config_id, to.environment, to.config_id
    );
    [&from.config_id, &to.config_id]
        .map(|config_id| row(config_id, None, OPERATOR, &message, changes.clone()))
}

/// The entry holding a config id was deleted and its applied state forgotten.
pub fn deleted(config_id: &str, latest: i64, actor: &str) -> AuditRow {
    row(
        config_id,
        Some(latest),
        actor,
        "ConfigEntry deleted with deletionPolicy Delete",
        json!({"event": "deleted"}),
    )
}

/// One step of a secret's life under its rotation policy: version ids, never a value.
pub fn rotation(rotation: &Rotation) -> AuditRow {
    row(
        &rotation.audit_id(),
        None,
        &rotation.actor,
        &format!(
            "{} by SecretRotationPolicy {}",
            rotation.event, rotation.policy
        ),
        json!({
            "event": rotation.event,
            "policy": rotation.policy,
            "currentVersion": rotation.current_version,
            "previousVersion": rotation.previous_version,
        }),
    )
}

/// What a ledger knew of a workflow before: its approvals and status.
pub struct Known<'a> {
    pub approvals: &'a [WorkflowApproval],
    pub status: &'a str,
}

/// The audit rows of a workflow's steps that `known` has not seen: the request (when
/// nothing was known), each new approval, and the end other than `applied` (which the
/// application's own row records).
pub fn workflow_steps(workflow: &Workflow, known: Option<Known<'_>>) -> Vec<AuditRow> {
    let base = Some(workflow.base_version);
    let id = workflow.config_id.as_str();
    let step = |event: &str| json!({"event": event, "change": workflow.change_id, "environment": workflow.environment});
    let mut rows = Vec::new();
    if known.is_none() {
        let mut requested = step("requested");
        requested["proposal"] = workflow.proposal.clone();
        rows.push(row(
            id,
            base,
            &workflow.requested_by,
            &workflow.message,
            requested,
        ));
    }
    let known_approvals = known.as_ref().map_or(&[][..], |k| k.approvals);
    let new = workflow
        .approvals
        .iter()
        .filter(|a| !known_approvals.iter().any(|k| k.approver == a.approver));
    for approval in new {
        let mut approved = step("approved");
        approved["counted"] = json!(approval.counted);
        let comment = approval.comment.as_deref().unwrap_or("");
        rows.push(row(id, base, &approval.approver, comment, approved));
    }
    let ended = ["rejected", "expired", "superseded", "failed"];
    let status = known.as_ref().map(|k| k.status);
    if status != Some(workflow.status.as_str()) && ended.contains(&workflow.status.as_str()) {
        let by = workflow.ended_by.as_deref().unwrap_or(OPERATOR);
        let why = workflow.end_reason.as_deref().unwrap_or("");
        rows.push(row(id, base, by, why, step(&workflow.status)));
    }
    rows
}

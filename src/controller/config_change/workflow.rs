//! The `approval_workflows` mirror of a change, with audit rows for each new step.

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::{
    api::v1alpha1::{ChangePhase, ConfigChange, ConfigChangeSpec, ConfigEntry},
    controller::{Context, Error, Result, status::now},
    store::{Workflow, WorkflowApproval},
};

/// `namespace/name@uid`: a change deleted and created again under its name is another
/// change, with its own workflow row and versions. At most 63 + 1 + 253 + 1 + 36
/// characters, which the `change_id` column holds.
pub fn change_id(change: &ConfigChange) -> String {
    let uid = change.uid().unwrap_or_default();
    let uid: String = uid.chars().take(36).collect();
    format!(
        "{}/{}@{uid}",
        change.namespace().unwrap_or_default(),
        change.name_any()
    )
}

fn proposal(spec: &ConfigChangeSpec) -> Value {
    if let Some(split) = &spec.split {
        return json!({"kind": "split", "environment": spec.environment, "split": split});
    }
    match (&spec.data, &spec.patch, spec.rollback_to, spec.version) {
        (Some(data), ..) => json!({"kind": "data", "environment": spec.environment, "data": data}),
        (_, Some(patch), ..) => {
            json!({"kind": "patch", "environment": spec.environment, "patch": patch})
        }
        (_, _, Some(version), _) => {
            json!({"kind": "rollbackTo", "environment": spec.environment, "version": version})
        }
        (_, _, _, version) => {
            json!({"kind": "version", "environment": spec.environment, "version": version})
        }
    }
}

fn phase_name(phase: ChangePhase) -> String {
    format!("{phase:?}").to_lowercase()
}

/// Mirrors the change in `approval_workflows`, with audit rows for each new step.
pub async fn sync_workflow(
    change: &ConfigChange,
    entry: &ConfigEntry,
    base: i64,
    counted: &[String],
    phase: ChangePhase,
    ended: Option<(&str, &str)>,
    ctx: &Context,
) -> Result<()> {
    let workflow = Workflow {
        change_id: change_id(change),
        config_id: entry.spec.config_id.clone(),
        environment: change.spec.environment.clone(),
        base_version: base,
        proposal: proposal(&change.spec),
        requested_by: change.spec.requested_by.clone(),
        requested_at: change
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(|| now().0, |t| t.0),
        message: change.spec.message.clone(),
        approvals: change
            .spec
            .approvals
            .iter()
            .map(|a| WorkflowApproval {
                approver: a.approver.clone(),
                comment: a.comment.clone(),
                counted: counted.contains(&a.approver),
            })
            .collect(),
        status: phase_name(phase),
        ended_by: ended.map(|(by, _)| by.to_owned()),
        end_reason: ended.map(|(_, why)| why.to_owned()),
        auto_approve_for: entry
            .spec
            .environments
            .iter()
            .filter(|e| e.auto_approves())
            .map(|e| e.name.clone())
            .collect(),
    };
    ctx.stores
        .sync_workflow(&workflow)
        .await
        .map_err(Error::Store)?;
    Ok(())
}

//! Putting drifted copies back, through the path a normal apply takes, with an audit
//! row naming the operator and the DriftCheck.

use kube::ResourceExt;

use crate::controller::events::EventType;
use serde_json::json;

use super::{Drift, Repair};
use crate::{
    api::v1alpha1::{DriftCheck, DriftSource},
    controller::{
        Context, Error, Result,
        config_entry::{project_secrets, restore_config_map},
    },
    core::drift::Want,
    store::{self, Application, AppliedState, AuditRow, FloorUpdate},
};

/// Puts one drifted copy back through the path a normal apply takes, with an audit
/// row naming the operator and this DriftCheck. Returns whether it did: a copy whose
/// entry moved on, or a Secret whose provider does not answer, stays drifted, and an
/// Event says why.
pub async fn remediate_one(check: &DriftCheck, drift: &Drift, ctx: &Context) -> Result<bool> {
    let why = format!(
        "drift found by DriftCheck {}/{} at {}: restored version {}",
        check.namespace().unwrap_or_default(),
        check.name_any(),
        drift.finding.location,
        drift.expected.version
    );
    let want = &drift.expected;
    match drift.finding.source {
        DriftSource::Postgres => {
            let restored = ctx
                .stores
                .apply(&Application {
                    change: None,
                    // Never back over a change that applied meanwhile.
                    forward_only: true,
                    claimant: drift.claimant.clone(),
                    floor: FloorUpdate::Keep,
                    config_id: want.config_id.clone(),
                    environment: want.environment.clone(),
                    version: want.version,
                    checksum: want.checksum.clone(),
                    actor: ctx.settings.identity.clone(),
                    message: why,
                })
                .await;
            return match restored {
                Ok(_) => Ok(true),
                Err(store::Error::Superseded { .. }) => Ok(false),
                Err(error) => Err(Error::Store(error)),
            };
        }
        DriftSource::Consul => restore_consul(ctx, want).await?,
        DriftSource::Kubernetes => {
            if let Err(error) = restore_object(check, drift, ctx).await {
                let finding = &drift.finding;
                let note = format!(
                    "{} {}: cannot restore {}: {error}",
                    finding.entry, finding.environment, finding.location
                );
                ctx.publish(check, EventType::Warning, "RemediationFailed", note)
                    .await;
                return Ok(false);
            }
        }
    }
    audit(ctx, drift, &why).await?;
    Ok(true)
}

/// Writes Consul's record of what is applied in the environment again.
async fn restore_consul(ctx: &Context, want: &Want) -> Result<()> {
    let applied = ctx
        .stores
        .applied(&want.config_id)
        .await
        .map_err(Error::Store)?
        .into_iter()
        .find(|a| a.environment == want.environment)
        .unwrap_or_else(|| AppliedState {
            config_id: want.config_id.clone(),
            environment: want.environment.clone(),
            version: want.version,
            checksum: want.checksum.clone(),
            applied_at: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        });
    ctx.stores
        .restore_consul_applied(&applied)
        .await
        .map_err(Error::Store)
}

/// Projects a drifted ConfigMap or Secret again, for the entry it belongs to.
async fn restore_object(check: &DriftCheck, drift: &Drift, ctx: &Context) -> Result<()> {
    let namespace = check.namespace().unwrap_or_default();
    let want = &drift.expected;
    let moved = || Error::EnvironmentMoved {
        environment: want.environment.clone(),
        version: want.version,
    };
    let entry = ctx
        .entry(&namespace, &drift.finding.entry)
        .ok_or_else(moved)?;
    match &drift.repair {
        Repair::ConfigMap(projection) => restore_config_map(ctx, &entry, projection)
            .await
            .map(|_| ()),
        Repair::Secret => {
            let environment = entry.environment(&want.environment).ok_or_else(moved)?;
            // The entry controller may have applied a newer version since the pass
            // began: its Secret is the entry's to write, not this check's.
            let live = entry
                .status
                .as_ref()
                .and_then(|s| s.environments.iter().find(|e| e.name == want.environment))
                .and_then(|e| e.version);
            if live != Some(want.version) {
                return Err(moved());
            }
            let refs = ctx
                .stores
                .version(&want.config_id, want.version)
                .await
                .map_err(Error::Store)?
                .map(|v| v.snapshot.secret_refs(&environment.name))
                .ok_or_else(|| Error::VersionMissing {
                    version: want.version,
                    environment: environment.name.clone(),
                })?;
            project_secrets(ctx, &entry, environment, want.version, &refs, true, None)
                .await
                .map(|_| ())
        }
        Repair::Record => Ok(()),
    }
}

async fn audit(ctx: &Context, drift: &Drift, why: &str) -> Result<()> {
    let finding = &drift.finding;
    let row = AuditRow {
        config_id: drift.expected.config_id.clone(),
        version: Some(drift.expected.version),
        actor: ctx.settings.identity.clone(),
        message: why.to_owned(),
        changes: json!({
            "event": "driftRemediated",
            "environment": finding.environment,
            "location": finding.location,
            "paths": finding.paths,
        }),
    };
    ctx.stores.audit(&row).await.map_err(Error::Store)
}

//! The canary projection of an environment with a staged rollout: the canary ConfigMap
//! holds the version a ConfigChange bakes there, else what is live, and the canary
//! consumers roll onto it. When a canary fails, its change ends and the next pass
//! puts the canary back on what is live: the main projection never saw the version.

use std::time::Duration;

use kube::ResourceExt;

use super::{
    project::apply_config_map,
    projection::live_content,
    promote::soonest,
    restart::{Restart, restart, restart_annotation},
};
use crate::{
    api::v1alpha1::{ChangePhase, ConfigEntry, EnvironmentPhase, RolloutStep},
    controller::{Context, Error, Result},
    core::{
        entry::{Plan, status::EnvironmentOutcome},
        render::{ProjectedConfigMap, render},
        resolve::{Snapshot, checksum},
        rollout,
    },
};

/// Projects the canary of `plan`'s environment, if it stages its versions, and rolls
/// its consumers. Returns when to try again a restart the rate limit held back.
pub async fn project_canary(
    ctx: &Context,
    entry: &ConfigEntry,
    snapshot: &Snapshot,
    plan: &Plan<'_>,
    outcome: &mut EnvironmentOutcome,
) -> Option<Duration> {
    let rollout = plan.spec.rollout.as_ref()?;
    let name = rollout::canary_config_map(entry, plan.spec)?;
    let live = outcome.live.clone()?;
    let baking = baking(ctx, entry, &plan.spec.name);
    let projected = match baking {
        Some(version) if version != live.version => candidate(ctx, entry, plan, version).await,
        _ => live_content(ctx, entry, snapshot, plan, &live)
            .await
            .map(|(data, _)| (live.version, live.checksum.clone(), data)),
    };
    let written = match projected {
        Ok((version, checksum, data)) => {
            let projection = ProjectedConfigMap {
                namespace: plan.namespace.clone(),
                name,
                environment: plan.spec.name.clone(),
                version,
                checksum: checksum.clone(),
                data,
            };
            let guard = plan.guard.as_ref();
            let applied = apply_config_map(ctx, entry, &projection, guard).await;
            applied.map(|_| checksum)
        }
        Err(error) => Err(error),
    };
    let checksum = match written {
        Ok(checksum) => checksum,
        Err(error) => {
            outcome.phase = EnvironmentPhase::Degraded;
            outcome.message = Some(format!("canary projection failed: {error}"));
            return None;
        }
    };
    let annotation = restart_annotation(&entry.name_any());
    // While a version bakes, look again now and then: the change's end reaches this
    // cache a moment after the change controller asks for this pass.
    let mut retry = baking.map(|_| rollout::LOOK_EVERY);
    for target in &rollout.canary_targets {
        match restart(ctx, &plan.namespace, target, &annotation, &checksum).await {
            Ok(Restart::Deferred(wait)) => retry = soonest(retry, Some(wait)),
            Ok(_) => {}
            Err(error) => {
                outcome.phase = EnvironmentPhase::Degraded;
                let workload = format!("{:?} {}/{}", target.kind, plan.namespace, target.name);
                outcome.message = Some(format!("cannot restart canary {workload}: {error}"));
            }
        }
    }
    retry
}

/// The version a ConfigChange of the entry bakes on the environment's canary now,
/// from the change controller's cache.
fn baking(ctx: &Context, entry: &ConfigEntry, environment: &str) -> Option<i64> {
    let (namespace, name) = (entry.namespace()?, entry.name_any());
    let changes = ctx.caches.changes.state();
    let baking = changes.iter().filter_map(|change| {
        let status = change.status.as_ref()?;
        let rollout = status.rollout.as_ref()?;
        let ours = change.namespace().as_deref() == Some(namespace.as_str())
            && change.spec.config_entry == name
            && change.spec.environment == environment;
        let baking =
            status.phase == Some(ChangePhase::Approved) && rollout.step == RolloutStep::Canary;
        (ours && baking).then_some(rollout.version)
    });
    // One bakes at a time; should the cache briefly show two, the newest wins.
    baking.max()
}

/// A recorded version's content for the environment, rendered: its version, checksum
/// and ConfigMap data.
async fn candidate(
    ctx: &Context,
    entry: &ConfigEntry,
    plan: &Plan<'_>,
    version: i64,
) -> Result<(i64, String, std::collections::BTreeMap<String, String>)> {
    let environment = &plan.spec.name;
    let missing = || Error::VersionMissing {
        version,
        environment: environment.clone(),
    };
    let found = ctx
        .stores
        .version(&entry.spec.config_id, version)
        .await
        .map_err(Error::Store)?
        .ok_or_else(missing)?;
    let content = found.snapshot.resolve(environment).ok_or_else(missing)?;
    let sum = found
        .snapshot
        .environment_checksum(environment)
        .unwrap_or_else(|| checksum(&content));
    Ok((version, sum, render(&content, plan.format)?))
}

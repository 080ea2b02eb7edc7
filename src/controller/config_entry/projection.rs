//! Projecting what is live in each environment: its ConfigMap, its Secret, and the
//! restart of what consumes them; and removing projections nothing asks for any more.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;

use crate::controller::events::EventType;
use serde_json::{Map, Value};

use super::{
    KIND,
    canary::project_canary,
    project::apply_config_map,
    promote::soonest,
    restart::{Restart, restart, restart_annotation},
    secrets::{consumed_checksum, project_secrets},
};
use crate::{
    api::v1alpha1::{ConfigEntry, EnvironmentPhase},
    controller::{Context, Error, Result},
    core::{
        entry::{
            Plan, secret_target,
            status::{Consumers, EnvironmentOutcome, Live, SecretsOutcome},
        },
        ownership::Claimant,
        render::{ProjectedConfigMap, render},
        resolve::Snapshot,
    },
};

/// What projecting every environment left to do.
#[derive(Default)]
pub struct Projected {
    /// The Secrets environments hold: the others this entry made go away.
    pub secret_targets: Vec<(String, String)>,
    /// Whether any environment has secret references (their values change upstream
    /// without telling anyone, so they are looked at again from time to time).
    pub has_secrets: bool,
    /// When a restart held back by the rate limit may go ahead.
    pub restart_after: Option<Duration>,
}

/// Projects what is live in each environment into its `outcome`.
pub async fn project_all(
    ctx: &Context,
    entry: &ConfigEntry,
    snapshot: &Snapshot,
    plans: &[Plan<'_>],
    moved_at: &HashMap<String, Instant>,
    outcomes: &mut [EnvironmentOutcome],
) -> Projected {
    let mut projected = Projected::default();
    for (plan, outcome) in plans.iter().zip(outcomes.iter_mut()) {
        let moved = moved_at.get(&plan.spec.name).copied();
        project_one(ctx, entry, snapshot, plan, moved, outcome, &mut projected).await;
        let wait = project_canary(ctx, entry, snapshot, plan, outcome).await;
        projected.restart_after = soonest(projected.restart_after, wait);
    }
    projected
}

async fn project_one(
    ctx: &Context,
    entry: &ConfigEntry,
    snapshot: &Snapshot,
    plan: &Plan<'_>,
    moved: Option<Instant>,
    outcome: &mut EnvironmentOutcome,
    projected: &mut Projected,
) {
    let secret_target = secret_target(entry, plan.spec);
    // Only an environment whose live version has no secret references gives up its
    // Secret: one that failed part way keeps it, and what status said of it.
    let previous_secrets = entry
        .status
        .as_ref()
        .and_then(|s| s.environments.iter().find(|e| e.name == plan.spec.name))
        .and_then(SecretsOutcome::from_status);
    let Some(live) = outcome.live.clone() else {
        projected.secret_targets.push(secret_target);
        return;
    };
    let written = match live_content(ctx, entry, snapshot, plan, &live).await {
        Ok((data, refs)) => {
            let projection = ProjectedConfigMap {
                namespace: plan.namespace.clone(),
                name: plan.name.clone(),
                environment: plan.spec.name.clone(),
                version: live.version,
                checksum: live.checksum.clone(),
                data,
            };
            apply_config_map(ctx, entry, &projection, plan.guard.as_ref())
                .await
                .map(|_| refs)
        }
        Err(error) => Err(error),
    };
    let refs = match written {
        Ok(refs) => refs,
        Err(error) => {
            outcome.phase = EnvironmentPhase::Degraded;
            outcome.message = Some(format!("projection failed: {error}"));
            outcome.secrets = previous_secrets;
            projected.secret_targets.push(secret_target);
            return;
        }
    };
    if let Some(started) = moved {
        let elapsed = started.elapsed().as_secs_f64();
        ctx.metrics.apply_seconds.observe(elapsed);
    }
    // Secret references, resolved now: only their checksum reaches status.
    let secrets = if refs.is_empty() {
        None
    } else {
        projected.has_secrets = true;
        projected.secret_targets.push(secret_target);
        let (version, guard) = (live.version, plan.guard.as_ref());
        match project_secrets(ctx, entry, plan.spec, version, &refs, false, guard).await {
            Ok(secrets) => Some(secrets),
            Err(error) => {
                outcome.phase = EnvironmentPhase::Degraded;
                outcome.message = Some(format!("{error}; the Secret keeps its last good values"));
                previous_secrets
            }
        }
    };
    let consumed = consumed_checksum(
        &live.checksum,
        secrets.as_ref().map(|s| s.checksum.as_str()),
    );
    outcome.secrets = secrets;
    let wait = restart_consumers(ctx, entry, plan, live.version, &consumed, outcome).await;
    projected.restart_after = soonest(projected.restart_after, wait);
}

/// What is live in the environment, rendered, and its secret references: the plan's
/// when the live version holds the spec's content, else the recorded version's.
pub(super) async fn live_content(
    ctx: &Context,
    entry: &ConfigEntry,
    snapshot: &Snapshot,
    plan: &Plan<'_>,
    live: &Live,
) -> Result<(BTreeMap<String, String>, Map<String, Value>)> {
    let environment = &plan.spec.name;
    if live.checksum == plan.checksum {
        return Ok((plan.data.clone(), snapshot.secret_refs(environment)));
    }
    let missing = || Error::VersionMissing {
        version: live.version,
        environment: environment.clone(),
    };
    let found = ctx
        .stores
        .version(&entry.spec.config_id, live.version)
        .await
        .map_err(Error::Store)?
        .ok_or_else(missing)?;
    let content = found.snapshot.resolve(environment).ok_or_else(missing)?;
    let data = render(&content, plan.format)?;
    Ok((data, found.snapshot.secret_refs(environment)))
}

/// Rolls the environment's restart targets onto `consumed`, and counts those that run
/// it. Returns when to try again a restart the rate limit held back.
async fn restart_consumers(
    ctx: &Context,
    entry: &ConfigEntry,
    plan: &Plan<'_>,
    version: i64,
    consumed: &str,
    outcome: &mut EnvironmentOutcome,
) -> Option<Duration> {
    let targets = &plan.spec.restart_targets;
    if targets.is_empty() {
        return None;
    }
    let annotation = restart_annotation(&entry.name_any());
    let mut running = 0;
    let mut retry = None;
    for target in targets {
        let workload = format!("{:?} {}/{}", target.kind, plan.namespace, target.name);
        match restart(ctx, &plan.namespace, target, &annotation, consumed).await {
            Ok(Restart::Current { running: true }) => running += 1,
            Ok(Restart::Current { running: false }) => {}
            Ok(Restart::Rolled) => {
                tracing::info!(%workload, version, "restarted");
                let note = format!(
                    "restarting {workload} for version {version} of {}",
                    plan.spec.name
                );
                ctx.publish(entry, EventType::Normal, "Restarted", note)
                    .await;
            }
            Ok(Restart::Deferred(wait)) => {
                tracing::info!(%workload, ?wait, "restart deferred by the rate limit");
                retry = soonest(retry, Some(wait));
            }
            Ok(Restart::Missing) => {
                outcome.message = Some(format!("restart target {workload} does not exist"));
            }
            Err(error) => {
                outcome.phase = EnvironmentPhase::Degraded;
                outcome.message = Some(format!("cannot restart {workload}: {error}"));
            }
        }
    }
    outcome.consumers = Some(Consumers {
        running,
        total: targets.len(),
    });
    retry
}

/// Deletes the ConfigMaps this entry projected that no current plan targets, and the
/// Secrets it projected that no environment with secret references holds: what a
/// removed environment or a renamed target left behind.
pub async fn remove_stale(
    ctx: &Context,
    entry: &ConfigEntry,
    plans: &[Plan<'_>],
    secret_targets: &[(String, String)],
) -> Result<()> {
    let owner = Claimant::of(entry).entry();
    let canaries = plans.iter().filter_map(|p| {
        let name = crate::core::rollout::canary_config_map(entry, p.spec)?;
        Some((p.namespace.clone(), name))
    });
    let planned: Vec<(String, String)> = plans
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .chain(canaries)
        .collect();
    let caches = &ctx.caches;
    let unplanned = |kept: &[(String, String)], place: &(String, String)| !kept.contains(place);
    let config_maps = caches.config_map_owners.of(&owner).into_iter();
    let config_maps = config_maps
        .filter(|place| unplanned(&planned, place))
        .map(|(namespace, name)| (Stale::ConfigMap, namespace, name));
    let secrets = caches.managed_secrets.projected_by(&owner).into_iter();
    let secrets = secrets
        .filter(|place| unplanned(secret_targets, place))
        .map(|(namespace, name)| (Stale::Secret, namespace, name));
    let stale: Vec<_> = config_maps.chain(secrets).collect();
    for (kind, namespace, name) in stale {
        remove(ctx, entry, kind, &namespace, &name).await?;
    }
    Ok(())
}

async fn remove(
    ctx: &Context,
    entry: &ConfigEntry,
    kind: Stale,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let deleted = match kind {
        Stale::ConfigMap => ctx
            .namespaced::<ConfigMap>(namespace)
            .delete(name, &Default::default())
            .await
            .map(|_| ()),
        Stale::Secret => {
            ctx.caches.managed_secrets.forget(namespace, name);
            ctx.namespaced::<Secret>(namespace)
                .delete(name, &Default::default())
                .await
                .map(|_| ())
        }
    };
    let (what, target) = kind.names();
    match deleted {
        Ok(()) => {}
        // The cache may still hold one that is already gone.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => {
            return Err(Error::kube(format!(
                "delete stale {what} {namespace}/{name}"
            ))(error));
        }
    }
    ctx.count_write(KIND, target);
    let note =
        format!("removed {what} {namespace}/{name}: no environment projects into it any more");
    ctx.publish(entry, EventType::Normal, "ProjectionRemoved", note)
        .await;
    Ok(())
}

#[derive(Clone, Copy)]
enum Stale {
    ConfigMap,
    Secret,
}

impl Stale {
    /// The kind, as Events and the write metric name it.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Stale::ConfigMap => ("ConfigMap", "configmap"),
            Stale::Secret => ("Secret", "secret"),
        }
    }
}

//! Applying an entry's projections to the cluster.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};

use super::KIND;
use crate::api::v1alpha1::{ANNOTATION_CHECKSUM, ANNOTATION_ENTRY, FIELD_MANAGER};
use crate::{
    api::v1alpha1::ConfigEntry,
    controller::{Context, Error, Result, targets as target},
    core::render::{
        ProjectedConfigMap, desired_config_map, foreign_keys, forget_content, needs_apply,
    },
    core::{
        approval::Requirements,
        ownership::{Projection, Target, TargetKind},
    },
    telemetry::WriteLabels,
};

/// Makes the ConfigMap of `projection` exactly what the operator wants, comparing with
/// the watch cache first so that an unchanged projection costs no request. Returns
/// whether it wrote. An environment that needs approval (`guard`: what it needs)
/// binds the ConfigMap to itself.
pub async fn apply_config_map(
    ctx: &Context,
    entry: &ConfigEntry,
    projection: &ProjectedConfigMap,
    guard: Option<&Requirements>,
) -> Result<bool> {
    write_config_map(ctx, entry, projection, Write::Project { guard }).await
}

/// Puts a drifted ConfigMap back, for the DriftCheck that found it.
pub async fn restore_config_map(
    ctx: &Context,
    entry: &ConfigEntry,
    projection: &ProjectedConfigMap,
) -> Result<bool> {
    write_config_map(ctx, entry, projection, Write::Restore).await
}

#[derive(Clone, Copy)]
enum Write<'g> {
    Project { guard: Option<&'g Requirements> },
    Restore,
}

async fn write_config_map(
    ctx: &Context,
    entry: &ConfigEntry,
    projection: &ProjectedConfigMap,
    write: Write<'_>,
) -> Result<bool> {
    let (namespace, name) = (&projection.namespace, &projection.name);
    let desired = desired_config_map(entry, projection);
    let api = ctx.namespaced::<ConfigMap>(namespace);
    let describe = || format!("apply ConfigMap {namespace}/{name}");
    let cached = ctx.managed_config_map(namespace, name);
    let target = target::Write {
        entry,
        target: Target {
            kind: TargetKind::ConfigMap,
            namespace: namespace.clone(),
            name: name.clone(),
        },
        wanted: Projection {
            config_id: entry.spec.config_id.clone(),
            environment: projection.environment.clone(),
        },
        guard: match write {
            Write::Project { guard } => guard,
            Write::Restore => None,
        },
    };
    let live = match cached {
        Some(live) => Some(live),
        // Not in the cache: new (then created here, in one request), deleted, or
        // somebody else's (then the create fails, and it is read).
        None => match create(ctx, &api, &target, &desired).await? {
            Created::Yes => return Ok(true),
            // Compared as the cache would keep it, like every other live object.
            Created::Exists => api
                .get_opt(name)
                .await
                .map_err(Error::kube(describe()))?
                .map(|mut live| {
                    forget_content(&mut live);
                    Arc::new(live)
                }),
        },
    };
    // Never take over a ConfigMap another entry, another environment or a person made.
    // One this operator wrote whose annotation was lost (`kubectl replace`) is still its
    // own.
    let held = live.as_deref().filter(|live| !lost_annotation(live));
    target.admit(ctx, held.map(|live| &live.metadata)).await?;
    if !needs_apply(live.as_deref(), &desired) {
        return Ok(false);
    }
    target.prepare(ctx).await?;
    // A hand edit of the live version under a DriftCheck is the check's to report or
    // remediate (with its audit row); a new version is applied as always.
    let same_version = live.as_ref().is_some_and(|live| {
        live.annotations().get(ANNOTATION_CHECKSUM) == Some(&projection.checksum)
    });
    let restoring = matches!(write, Write::Restore);
    if !restoring && same_version && ctx.drift_checked(entry, &projection.environment) {
        return Ok(false);
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &apply, &Patch::Apply(&desired))
        .await
        .map_err(Error::kube(describe()))?;
    ctx.count_write(KIND, "configmap");
    // Keys someone else added are not ours to own through apply: remove them explicitly,
    // so the ConfigMap holds exactly the rendered content.
    let live_keys = live
        .iter()
        .flat_map(|l| l.data.iter().flatten().map(|(k, _)| k));
    if let Some(removal) = foreign_keys(live_keys, &projection.data) {
        api.patch(name, &PatchParams::default(), &Patch::Merge(removal))
            .await
            .map_err(Error::kube(describe()))?;
        ctx.count_write(KIND, "configmap");
    }
    Ok(true)
}

enum Created {
    Yes,
    Exists,
}

/// Creates the ConfigMap `desired` unless one of its name exists.
async fn create(
    ctx: &Context,
    api: &Api<ConfigMap>,
    target: &target::Write<'_>,
    desired: &ConfigMap,
) -> Result<Created> {
    target.admit(ctx, None).await?;
    target.prepare(ctx).await?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api.create(&params, desired).await {
        Ok(_) => {
            ctx.count_write(KIND, "configmap");
            Ok(Created::Yes)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Created::Exists),
        Err(error) => Err(Error::kube(format!("create ConfigMap {}", target.target))(
            error,
        )),
    }
}

/// Whether the operator wrote this ConfigMap and someone dropped its annotations.
fn lost_annotation(live: &ConfigMap) -> bool {
    live.annotations().get(ANNOTATION_ENTRY).is_none()
        && live
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER))
}

/// Counts a write to the apiserver, for the steady-state check.
impl Context {
    pub fn count_write(&self, kind: &'static str, target: &'static str) {
        self.metrics
            .apiserver_writes
            .get_or_create(&WriteLabels { kind, target })
            .inc();
    }
}

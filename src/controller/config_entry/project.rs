//! Applying an entry's projections to the cluster.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};

use crate::api::v1alpha1::{ANNOTATION_CHECKSUM, ANNOTATION_ENTRY, FIELD_MANAGER};
use crate::{
    api::v1alpha1::ConfigEntry,
    controller::{
        Context, Error, Result,
        targets::{check_binding, foreign_holder},
    },
    core::render::{ProjectedConfigMap, desired_config_map, foreign_keys, needs_apply},
    core::{
        approval::Requirements,
        ownership::{Claimant, Projection, Target, TargetKind},
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
    let restoring = matches!(write, Write::Restore);
    let desired = desired_config_map(entry, projection);
    let api = ctx.namespaced::<ConfigMap>(&projection.namespace);
    let describe = || {
        format!(
            "apply ConfigMap {}/{}",
            projection.namespace, projection.name
        )
    };
    let live = match ctx.managed_config_map(&projection.namespace, &projection.name) {
        Some(live) => Some(live),
        // Not in the cache: new, deleted, or somebody else's.
        None => api
            .get_opt(&projection.name)
            .await
            .map_err(Error::kube(describe()))?
            .map(Arc::new),
    };
    // Never take over a ConfigMap another entry, another environment or a person made.
    // One this operator wrote whose annotation was lost (`kubectl replace`) is still its
    // own.
    let owner = desired.annotations().get(ANNOTATION_ENTRY);
    let wanted = Projection {
        config_id: entry.spec.config_id.clone(),
        environment: projection.environment.clone(),
    };
    let written_by_us = |live: &ConfigMap| {
        live.annotations().get(ANNOTATION_ENTRY).is_none()
            && live
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER))
    };
    if let Some(live) = &live
        && !written_by_us(live)
        && let Some(holder) = foreign_holder(
            &live.metadata,
            owner.map(String::as_str).unwrap_or_default(),
            &wanted,
        )
    {
        return Err(Error::NotOwned {
            object: format!("ConfigMap {}/{}", projection.namespace, projection.name),
            holder,
        });
    }
    let target = Target {
        kind: TargetKind::ConfigMap,
        namespace: projection.namespace.clone(),
        name: projection.name.clone(),
    };
    let guard = match write {
        Write::Project { guard } => guard,
        Write::Restore => None,
    };
    // A protected environment binds its object even when it has nothing to write
    // (once: bindings are cached), so that objects projected before bindings existed
    // are bound too.
    if guard.is_some() {
        check_binding(ctx, &Claimant::of(entry), &target, &wanted, guard).await?;
    }
    if !needs_apply(live.as_deref(), &desired) {
        return Ok(false);
    }
    if guard.is_none() {
        check_binding(ctx, &Claimant::of(entry), &target, &wanted, None).await?;
    }
    // A hand edit of the live version under a DriftCheck is the check's to report or
    // remediate (with its audit row); a new version is applied as always.
    let same_version = live.as_ref().is_some_and(|live| {
        live.annotations().get(ANNOTATION_CHECKSUM) == Some(&projection.checksum)
    });
    if !restoring && same_version && ctx.drift_checked(entry, &projection.environment) {
        return Ok(false);
    }
    api.patch(
        &projection.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(Error::kube(describe()))?;
    ctx.count_write("ConfigEntry", "configmap");

    // Keys someone else added are not ours to own through apply: remove them explicitly,
    // so the ConfigMap holds exactly the rendered content.
    let live_keys = live
        .iter()
        .flat_map(|l| l.data.iter().flatten().map(|(k, _)| k));
    if let Some(removal) = foreign_keys(live_keys, &projection.data) {
        api.patch(
            &projection.name,
            &PatchParams::default(),
            &Patch::Merge(removal),
        )
        .await
        .map_err(Error::kube(describe()))?;
        ctx.count_write("ConfigEntry", "configmap");
    }
    Ok(true)
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

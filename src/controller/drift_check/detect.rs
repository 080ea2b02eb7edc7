//! Reading every copy a check covers, and comparing it with what the operator applied.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::json;

use super::{Drift, Repair};
use crate::{
    api::v1alpha1::{ConfigEntry, ConfigFormat, DriftCheck, DriftSource},
    controller::{Context, Error, Result, managed_secrets::cached_checksums},
    core::{
        drift::{self, LiveSecret, Want},
        entry::{config_map_target, secret_target},
        render::{ProjectedConfigMap, render},
        resolve::checksum,
    },
};

/// Compares every covered copy with what the operator applied.
pub async fn detect(
    check: &DriftCheck,
    ctx: &Context,
    entries: &[Arc<ConfigEntry>],
) -> Result<Vec<Drift>> {
    let wanted: Vec<(&ConfigEntry, Want)> = entries
        .iter()
        .flat_map(|entry| {
            let wants = drift::wanted(check, entry);
            wants.into_iter().map(move |want| (entry.as_ref(), want))
        })
        .collect();
    let mut drifts = Vec::new();
    if drift::reads(&check.spec, DriftSource::Postgres) {
        drifts.extend(postgres_drift(ctx, &wanted).await?);
    }
    if drift::reads(&check.spec, DriftSource::Consul) {
        drifts.extend(consul_drift(ctx, &wanted).await?);
    }
    if drift::reads(&check.spec, DriftSource::Kubernetes) {
        drifts.extend(kubernetes_drift(ctx, &wanted).await?);
    }
    Ok(drifts)
}

/// PostgreSQL's applied state against the entries' status. PostgreSQL decides what is
/// live: a newer recorded version there is a change that applied before the entry's
/// status caught up, never drift to undo. One that names no recorded content is.
async fn postgres_drift(ctx: &Context, wanted: &[(&ConfigEntry, Want)]) -> Result<Vec<Drift>> {
    let ids: Vec<String> = wanted.iter().map(|(_, w)| w.config_id.clone()).collect();
    let rows = ctx.stores.applied_for(&ids).await.map_err(Error::Store)?;
    let row_of = |want: &Want| {
        rows.iter()
            .find(|r| r.config_id == want.config_id && r.environment == want.environment)
    };
    let newer = wanted
        .iter()
        .filter_map(|(_, want)| row_of(want).filter(|r| r.version > want.version))
        .map(|r| (r.config_id.clone(), r.version));
    prefetch(ctx, newer).await?;
    let mut drifts = Vec::new();
    for (entry, want) in wanted {
        let row = row_of(want);
        if let Some(row) = row.filter(|r| r.version > want.version) {
            let recorded = ctx
                .stores
                .version(&row.config_id, row.version)
                .await
                .map_err(Error::Store)?
                .and_then(|v| v.snapshot.environment_checksum(&row.environment));
            if recorded.as_deref() == Some(row.checksum.as_str()) {
                continue;
            }
        }
        let actual = row.map(|r| (r.version, r.checksum.as_str()));
        if let Some(paths) = drift::applied_paths(want, actual) {
            let place = ("postgres:applied_state".to_owned(), DriftSource::Postgres);
            let sum = row.map(|r| r.checksum.clone());
            drifts.push(Drift::new(entry, want, place, paths, sum));
        }
    }
    Ok(drifts)
}

/// Consul's `applied/` keys against the entries' status, in one recursive read.
async fn consul_drift(ctx: &Context, wanted: &[(&ConfigEntry, Want)]) -> Result<Vec<Drift>> {
    let Some(read) = ctx.stores.consul_applied().await else {
        return Ok(Vec::new());
    };
    let keys = read.map_err(Error::Store)?;
    let mut drifts = Vec::new();
    for (entry, want) in wanted {
        let Some(key) = ctx
            .stores
            .consul_applied_key(&want.config_id, &want.environment)
        else {
            continue;
        };
        let actual = keys.get(&key).cloned().flatten();
        let held = actual.as_ref().map(|a| (a.version, a.checksum.as_str()));
        if let Some(paths) = drift::applied_paths(want, held) {
            let place = (format!("consul:{key}"), DriftSource::Consul);
            let sum = actual.map(|a| a.checksum);
            drifts.push(Drift::new(entry, want, place, paths, sum));
        }
    }
    Ok(drifts)
}

/// Brings `versions` into the store's cache, in one query at most, before a pass reads
/// them one by one.
async fn prefetch(ctx: &Context, versions: impl Iterator<Item = (String, i64)>) -> Result<()> {
    let versions: Vec<(String, i64)> = versions.collect();
    let stores = &ctx.stores;
    stores
        .prefetch_versions(&versions)
        .await
        .map_err(Error::Store)
}

/// Each environment's Secret and ConfigMap against the recorded content of its live
/// version (read in one query at most).
async fn kubernetes_drift(ctx: &Context, wanted: &[(&ConfigEntry, Want)]) -> Result<Vec<Drift>> {
    let versions = wanted
        .iter()
        .map(|(_, want)| (want.config_id.clone(), want.version));
    prefetch(ctx, versions).await?;
    let mut drifts = Vec::new();
    for (entry, want) in wanted {
        drifts.extend(secret_drift(ctx, entry, want));
        drifts.extend(config_map_drift(ctx, entry, want).await?);
    }
    Ok(drifts)
}

/// How an environment's ConfigMap differs from its live version's content.
async fn config_map_drift(
    ctx: &Context,
    entry: &ConfigEntry,
    want: &Want,
) -> Result<Option<Drift>> {
    let Some(environment) = entry.environment(&want.environment) else {
        return Ok(None);
    };
    let format = environment
        .config_map
        .as_ref()
        .and_then(|t| t.format)
        .unwrap_or(ConfigFormat::Json);
    let Some(content) = ctx
        .stores
        .version(&want.config_id, want.version)
        .await
        .map_err(Error::Store)?
        .and_then(|v| v.snapshot.resolve(&environment.name))
    else {
        return Ok(None);
    };
    let Ok(rendered) = render(&content, format) else {
        return Ok(None);
    };
    let (namespace, name) = config_map_target(entry, environment);
    let cached = ctx.managed_config_map(&namespace, &name);
    if drift::config_map_matches(want, &rendered, cached.as_deref()) {
        return Ok(None);
    }
    // The cache keeps long values as digests: where they differ is read from the
    // object itself, once, and only when something differs.
    let live = ctx
        .namespaced::<ConfigMap>(&namespace)
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("read ConfigMap {namespace}/{name}")))?;
    let Some((paths, actual)) = drift::config_map_paths(want, &rendered, format, live.as_ref())
    else {
        return Ok(None);
    };
    let place = (
        format!("configmap/{namespace}/{name}"),
        DriftSource::Kubernetes,
    );
    let repair = Repair::ConfigMap(ProjectedConfigMap {
        namespace,
        name,
        environment: environment.name.clone(),
        version: want.version,
        checksum: want.checksum.clone(),
        data: rendered,
    });
    Ok(Some(Drift {
        repair,
        ..Drift::new(entry, want, place, paths, actual)
    }))
}

/// How an environment's Secret differs from the key checksums the entry controller
/// last resolved for it. Values are never read: the Secret cache holds checksums only,
/// and expectations live in memory.
fn secret_drift(ctx: &Context, entry: &ConfigEntry, want: &Want) -> Option<Drift> {
    let environment = entry.environment(&want.environment)?;
    let versions = entry
        .status
        .as_ref()?
        .environments
        .iter()
        .find(|e| e.name == environment.name)?
        .secrets_checksum
        .clone()?;
    let (namespace, name) = secret_target(entry, environment);
    if !ctx.caches.managed_secrets.covers(&namespace) {
        return None;
    }
    // Known once the entry controller resolved the references (it does at start-up).
    let expected = ctx.caches.managed_secrets.expected(&namespace, &name)?;
    let live = ctx.caches.managed_secrets.get(&namespace, &name);
    let actual = live.as_deref().map(cached_checksums);
    let held = live
        .as_deref()
        .zip(actual.as_ref())
        .map(|(live, keys)| LiveSecret {
            keys,
            annotations: live.annotations(),
        });
    let paths = drift::secret_paths(&expected, held, &versions)?;
    let place = (
        format!("secret/{namespace}/{name}"),
        DriftSource::Kubernetes,
    );
    let sum = actual.map(|a| checksum(&json!(a)));
    let mut found = Drift::new(entry, want, place, paths, sum);
    found.finding.expected_checksum = checksum(&json!(expected));
    found.repair = Repair::Secret;
    Some(found)
}

//! Restart targets: workloads that consume an environment's projection get a pod
//! template annotation holding the checksum of what they consume, so they roll exactly
//! when that content changes — never for a timestamp, never twice for one content.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{
    api::{Api, ApiResource, DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
};
use serde_json::json;

use crate::api::v1alpha1::FIELD_MANAGER;
use crate::{
    api::v1alpha1::{RestartTarget, WorkloadKind},
    controller::{Context, Error, Result, workloads::Workloads},
};

/// The pod template annotation an entry writes; one per entry, so that several
/// entries can restart the same workload independently.
pub fn restart_annotation(entry_name: &str) -> String {
    // Annotation names are at most 63 characters after the prefix.
    let name: String = entry_name.chars().take(63).collect();
    let name = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("checksum.config.summit.io/{name}")
}

/// When each workload was last restarted, to keep its restarts at least `interval` apart.
pub struct RestartLimiter {
    interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl RestartLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::default(),
        }
    }

    /// Whether `workload` may restart now; if so, records that it did. Otherwise, how
    /// long to wait.
    pub fn try_acquire(&self, workload: &str, now: Instant) -> Result<(), Duration> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = last.get(workload) {
            let elapsed = now.saturating_duration_since(*previous);
            if elapsed < self.interval {
                return Err(self.interval - elapsed);
            }
        }
        last.insert(workload.to_owned(), now);
        Ok(())
    }
}

/// What happened to one restart target.
#[derive(Debug, PartialEq, Eq)]
pub enum Restart {
    /// Its pod template already carries the checksum; `running` once every pod runs it.
    Current { running: bool },
    /// Its pod template now carries the checksum; it rolls.
    Rolled,
    /// It restarted recently; try again after this long.
    Deferred(Duration),
    /// It does not exist (yet).
    Missing,
}

fn api_resource(kind: WorkloadKind) -> ApiResource {
    let kind = match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind))
}

/// Makes `target` in `namespace` carry `checksum` under `annotation`.
pub async fn restart(
    ctx: &Context,
    namespace: &str,
    target: &RestartTarget,
    annotation: &str,
    checksum: &str,
) -> Result<Restart> {
    let resource = api_resource(target.kind);
    let describe = || format!("{} {namespace}/{}", resource.kind, target.name);
    let cached = ctx
        .caches
        .workloads
        .get(target.kind, namespace, &target.name);
    if let Some(workload) = &cached
        && workload.carries(annotation, checksum)
    {
        return Ok(Restart::Current {
            running: workload.rolled_out,
        });
    }
    if cached.is_none() && ctx.watches(namespace) {
        return Ok(Restart::Missing);
    }
    // The cache may not have seen the operator's own last restart yet, and namespaces
    // outside the watch have no cache: ask before rolling anything.
    let Some(workload) = Workloads::fetch(&ctx.client, target.kind, namespace, &target.name)
        .await
        .map_err(Error::kube(format!("read {}", describe())))?
    else {
        return Ok(Restart::Missing);
    };
    if workload.carries(annotation, checksum) {
        return Ok(Restart::Current {
            running: workload.rolled_out,
        });
    }
    let key = describe();
    if let Err(wait) = ctx.restarts.try_acquire(&key, Instant::now()) {
        return Ok(Restart::Deferred(wait));
    }
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": target.name},
        "spec": {"template": {"metadata": {"annotations": {annotation: checksum}}}},
    });
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    api.patch(
        &target.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!("restart {}", describe())))?;
    ctx.count_write("ConfigEntry", "restart");
    Ok(Restart::Rolled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_of_one_workload_are_kept_apart() {
        let limiter = RestartLimiter::new(Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(limiter.try_acquire("Deployment a/b", start), Ok(()));
        let soon = start + Duration::from_secs(10);
        assert_eq!(
            limiter.try_acquire("Deployment a/b", soon),
            Err(Duration::from_secs(20))
        );
        assert_eq!(
            limiter.try_acquire("Deployment a/c", soon),
            Ok(()),
            "other workloads are not held up"
        );
        assert_eq!(
            limiter.try_acquire("Deployment a/b", start + Duration::from_secs(30)),
            Ok(())
        );
    }

    #[test]
    fn annotation_names_fit_the_limit() {
        assert_eq!(
            restart_annotation("payments"),
            "checksum.config.summit.io/payments"
        );
        let long = restart_annotation(&"a".repeat(100));
        assert_eq!(long.split('/').nth(1).unwrap().len(), 63);
    }
}

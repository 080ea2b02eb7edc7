//! The ConfigEntry reconcile loop, a pipeline: validate → render every environment →
//! record a version → move the environments whose policy allows it → project → bring
//! Consul up to date → status. Nothing is written unless every environment validates
//! and renders.

mod canary;
mod cleanup;
mod pipeline;
mod project;
mod projection;
mod promote;
mod record;
mod restart;
mod secrets;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::instrument;

pub use project::restore_config_map;
pub use restart::{RestartLimiter, restart, restart_annotation};
pub use secrets::project_secrets;

use super::{Context, Error, Result, observed, requeue_after_error};
use crate::api::v1alpha1::{ANNOTATION_ENTRY, FIELD_MANAGER, FINALIZER_CLEANUP};
use crate::api::v1alpha1::{ConfigEntry, WorkloadKind};
use crate::core::entry::config_map_target;

pub const KIND: &str = "ConfigEntry";

#[instrument(skip_all, fields(namespace = entry.namespace().unwrap_or_default(), name = entry.name_any()))]
pub async fn reconcile(entry: Arc<ConfigEntry>, ctx: Arc<Context>) -> Result<Action> {
    let work = async {
        if entry.metadata.deletion_timestamp.is_some() {
            return delete(&entry, &ctx).await;
        }
        // The pipeline adds the finalizer with its first write of the entry. Boxed: its
        // state is large, and a boxed future keeps the controller's task small.
        Box::pin(pipeline::reconcile_entry(&entry, &ctx)).await
    };
    observed(KIND, entry.as_ref(), &ctx, work).await
}

/// Cleans up after a deleted entry, then lets it go.
async fn delete(entry: &ConfigEntry, ctx: &Context) -> Result<Action> {
    if !entry.finalizers().iter().any(|f| f == FINALIZER_CLEANUP) {
        return Ok(Action::await_change());
    }
    cleanup::cleanup(entry, ctx).await?;
    // Only from the entry as read: if anyone wrote it since, this fails and the next
    // reconcile looks again.
    let rest: Vec<&String> = entry
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER_CLEANUP)
        .collect();
    let patch = Patch::Merge(serde_json::json!({"metadata": {
        "resourceVersion": entry.resource_version(),
        "finalizers": rest,
    }}));
    let api = ctx.namespaced::<ConfigEntry>(&entry.namespace().unwrap_or_default());
    api.patch(&entry.name_any(), &PatchParams::default(), &patch)
        .await
        .map_err(Error::kube(format!(
            "remove the finalizer {FINALIZER_CLEANUP}"
        )))?;
    Ok(Action::await_change())
}

pub fn error_policy(entry: Arc<ConfigEntry>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, entry.as_ref(), error, &ctx)
}

/// Drives the ConfigMap watches the entry controller reads (schema ConfigMaps, and the
/// ConfigMaps it projected) in tasks of their own, and turns their events into
/// reconcile requests: a schema ConfigMap re-validates the entries that reference it,
/// and a projected ConfigMap edited or deleted by hand brings its entry back to repair
/// it. The caches fill before any reconcile needs them, and a busy controller never
/// holds them back.
pub fn config_map_triggers(
    entries: Store<ConfigEntry>,
    schema_events: impl Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static,
    projected_events: impl Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>>
    + Send
    + 'static,
) -> impl Stream<Item = ObjectRef<ConfigEntry>> + Send + 'static {
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    let schema_sender = sender.clone();
    tokio::spawn(schema_events.for_each(move |event| {
        let Ok(config_map) = event else {
            return std::future::ready(());
        };
        let namespace = config_map.namespace();
        let name = config_map.name_any();
        for entry in entries.state() {
            let references = entry
                .spec
                .schema_ref
                .as_ref()
                .is_some_and(|r| r.name == name);
            if references && entry.namespace() == namespace {
                let _ = schema_sender.unbounded_send(ObjectRef::from_obj(entry.as_ref()));
            }
        }
        std::future::ready(())
    }));
    tokio::spawn(projected_events.for_each(move |event| {
        let touched = match event {
            Ok(watcher::Event::Delete(config_map)) => Some(config_map),
            Ok(watcher::Event::Apply(config_map) | watcher::Event::InitApply(config_map))
                if !only_ours(&config_map) =>
            {
                Some(config_map)
            }
            _ => None,
        };
        if let Some(entry) = touched.as_ref().and_then(owner) {
            let _ = sender.unbounded_send(entry);
        }
        std::future::ready(())
    }));
    receiver
}

/// Whether the operator alone wrote `config_map`: its own writes need no reconcile
/// (the one that wrote it knew what it wrote); anyone else's, or a deletion, does.
fn only_ours(config_map: &ConfigMap) -> bool {
    let managers = config_map.metadata.managed_fields.iter().flatten();
    managers
        .map(|fields| fields.manager.as_deref())
        .all(|manager| manager == Some(FIELD_MANAGER))
}

/// The entry a projected object belongs to, from its annotation.
fn owner(object: &impl ResourceExt) -> Option<ObjectRef<ConfigEntry>> {
    let (namespace, name) = object
        .annotations()
        .get(ANNOTATION_ENTRY)?
        .split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Drives the workload watches in a task of their own (as for ConfigMaps) and turns
/// changes of workloads into reconcile requests for the entries that name them as
/// restart targets, so that a rollout's progress reaches their status.
pub fn workload_triggers(
    entries: Store<ConfigEntry>,
    workloads: impl Stream<Item = (WorkloadKind, String, String)> + Send + 'static,
) -> impl Stream<Item = ObjectRef<ConfigEntry>> + Send + 'static {
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    tokio::spawn(workloads.for_each(move |(kind, namespace, name)| {
        let restarting = entries
            .state()
            .into_iter()
            .filter(|entry| {
                entry.spec.environments.iter().any(|environment| {
                    config_map_target(entry, environment).0 == namespace
                        && environment
                            .restart_targets
                            .iter()
                            .any(|t| t.kind == kind && t.name == name)
                })
            })
            .map(|entry| ObjectRef::from_obj(entry.as_ref()));
        for entry in restarting {
            let _ = sender.unbounded_send(entry);
        }
        std::future::ready(())
    }));
    receiver
}

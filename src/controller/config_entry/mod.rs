//! The ConfigEntry reconcile loop, a pipeline: validate → render every environment →
//! record a version → move the environments whose policy allows it → project → bring
//! Consul up to date → status. Nothing is written unless every environment validates
//! and renders.

mod pipeline;
mod project;
mod report;
mod restart;
mod validate;

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use tracing::instrument;

pub use restart::RestartLimiter;
pub use validate::SCHEMA_LABEL;

use super::{Context, Error, Result, observed, requeue_after_error};
use crate::{api::v1alpha1::ConfigEntry, project::ANNOTATION_ENTRY};

pub const KIND: &str = "ConfigEntry";

#[instrument(skip_all, fields(namespace = entry.namespace().unwrap_or_default(), name = entry.name_any()))]
pub async fn reconcile(entry: Arc<ConfigEntry>, ctx: Arc<Context>) -> Result<Action> {
    observed(
        KIND,
        entry.as_ref(),
        &ctx,
        pipeline::reconcile_entry(&entry, &ctx),
    )
    .await
}

pub fn error_policy(entry: Arc<ConfigEntry>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, entry.as_ref(), error, &ctx)
}

/// Adds the entry controller's secondary watches: schema ConfigMaps re-validate the
/// entries that reference them, and a projected ConfigMap edited or deleted by hand
/// brings its entry back to repair it.
pub fn watches(
    controller: Controller<ConfigEntry>,
    schema_events: impl Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static,
    projected_events: impl Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static,
) -> Controller<ConfigEntry> {
    let entries = controller.store();
    controller
        .watches_stream(schema_events, move |config_map| {
            let namespace = config_map.namespace();
            let name = config_map.name_any();
            entries
                .state()
                .into_iter()
                .filter(|entry| {
                    entry.namespace() == namespace
                        && entry
                            .spec
                            .schema_ref
                            .as_ref()
                            .is_some_and(|r| r.name == name)
                })
                .map(|entry| ObjectRef::from_obj(entry.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(projected_events, |config_map| {
            let owner = config_map.annotations().get(ANNOTATION_ENTRY).cloned();
            owner.and_then(|owner| {
                let (namespace, name) = owner.split_once('/')?;
                Some(ObjectRef::<ConfigEntry>::new(name).within(namespace))
            })
        })
}

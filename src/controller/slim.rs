//! What the watch caches keep of each object: only what a reconcile reads. An object
//! arrives with its field-ownership trees (`managedFields`) and, when applied with
//! `kubectl apply`, a second copy of itself in an annotation; a workload arrives with
//! its whole pod spec. Kept for every cached object, they are most of the operator's
//! memory at scale, and nothing reads them.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::ConfigMap,
    },
    apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta},
};

use crate::api::v1alpha1::{ConfigChange, ConfigEntry, DriftCheck, SecretRotationPolicy};
use crate::core::render::forget_content;

/// The annotation `kubectl apply` (client-side) keeps its last applied copy in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as the caches keep it.
pub trait Slim {
    fn slim(&mut self);
}

/// Forgets the last applied copy, and which fields each manager owns: a manager's name,
/// operation, subresource and time are what reconciles read of `managedFields` (who
/// wrote a ConfigMap, when a spec was last written).
fn slim_metadata(metadata: &mut ObjectMeta) {
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    for field in metadata.managed_fields.iter_mut().flatten() {
        *field = ManagedFieldsEntry {
            manager: field.manager.take(),
            operation: field.operation.take(),
            subresource: field.subresource.take(),
            time: field.time.take(),
            ..ManagedFieldsEntry::default()
        };
    }
}

macro_rules! slim_metadata_only {
    ($($kind:ty),*) => {$(
        /// Its metadata slimmed; all the rest is read.
        impl Slim for $kind {
            fn slim(&mut self) {
                slim_metadata(&mut self.metadata);
            }
        }
    )*};
}

/// A ConfigMap the operator projected: slim, and its long values kept as digests
/// (see [`forget_content`]).
pub fn projection(config_map: &mut ConfigMap) {
    config_map.slim();
    forget_content(config_map);
}

slim_metadata_only!(
    ConfigEntry,
    ConfigChange,
    DriftCheck,
    SecretRotationPolicy,
    ConfigMap
);

macro_rules! slim_workload {
    ($($kind:ty),*) => {$(
        /// A restart target: its pod template's annotations, its selector and its
        /// rollout's progress are read, never its pods' spec.
        impl Slim for $kind {
            fn slim(&mut self) {
                slim_metadata(&mut self.metadata);
                let template = &mut self.spec.template;
                template.spec = None;
                if let Some(metadata) = template.metadata.as_mut() {
                    metadata.managed_fields = None;
                }
            }
        }
    )*};
}

slim_workload!(Deployment, StatefulSet, DaemonSet);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slim_object_keeps_who_wrote_it_and_when_but_not_what() {
        let mut config_map: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "c",
                    "annotations": {LAST_APPLIED: "{\"big\": true}", "kept": "yes"},
                    "managedFields": [{
                        "manager": "summit-config", "operation": "Apply",
                        "time": "2026-11-30T00:00:00Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:data": {"f:config.json": {}}},
                    }],
                },
                "data": {"config.json": "{}"},
            }))
            .unwrap();
        config_map.slim();
        let fields = config_map.metadata.managed_fields.as_deref().unwrap();
        assert_eq!(fields[0].manager.as_deref(), Some("summit-config"));
        assert!(fields[0].time.is_some());
        assert!(fields[0].fields_v1.is_none());
        let annotations = config_map.metadata.annotations.unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["kept"]);
        assert!(config_map.data.is_some(), "the data is read");
    }

    #[test]
    fn a_slim_workload_keeps_its_template_annotations_and_rollout() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": 2},
            "spec": {
                "replicas": 2,
                "selector": {},
                "template": {
                    "metadata": {"annotations": {"checksum.config.summit.io/e": "abc"}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
            },
            "status": {"observedGeneration": 2, "updatedReplicas": 2},
        }))
        .unwrap();
        deployment.slim();
        let spec = &deployment.spec;
        assert!(spec.template.spec.is_none());
        assert_eq!(spec.replicas, Some(2));
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref();
        assert!(
            annotations
                .unwrap()
                .contains_key("checksum.config.summit.io/e")
        );
        assert!(deployment.status.is_some());
    }
}

//! The custom resources summit-config serves, by API version.
//!
//! This module depends on nothing but the Kubernetes type crates: controllers,
//! stores and clients depend on it, never the other way round.

pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every summit-config resource.
pub const GROUP: &str = "config.summit.io";

/// Every CustomResourceDefinition the operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        v1alpha1::ConfigEntry::crd(),
        v1alpha1::ConfigChange::crd(),
        v1alpha1::SecretRotationPolicy::crd(),
        v1alpha1::DriftCheck::crd(),
        record(v1alpha1::ConfigVersion::crd()),
    ]
}

/// A kind the operator writes whole, status included, in one request: no status
/// subresource.
fn record(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        version.subresources = None;
    }
    crd
}

/// Renders a CRD as the YAML document committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

/// The file name a CRD is committed under, e.g. `configentries.config.summit.io.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

//! The target Secret a policy writes: whose it is, and what it holds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    api::v1alpha1::{
        ANNOTATION_ENTRY, ANNOTATION_POLICY, ANNOTATION_PREVIOUS_VERSION, ANNOTATION_VERSION,
        LABEL_MANAGED_BY, MANAGED_BY, SecretRotationPolicy,
    },
    core::render::key_checksums,
};

/// Whose a live Secret is, when it is not the policy's: a policy writes only a Secret
/// labelled as summit-config's and annotated as its target. A policy that could write
/// any Secret would let its author replace values other workloads trust.
pub fn holder(live: &Secret, policy: &SecretRotationPolicy) -> Option<String> {
    let own = format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    );
    let labelled = live.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY);
    let holder = live.annotations().get(ANNOTATION_POLICY);
    if labelled && holder == Some(&own) {
        return None;
    }
    Some(match (holder, live.annotations().get(ANNOTATION_ENTRY)) {
        (Some(policy), _) => format!("SecretRotationPolicy {policy}"),
        (None, Some(entry)) => format!("ConfigEntry {entry}"),
        (None, None) => "someone else (it is not labelled as this policy's)".to_owned(),
    })
}

/// The target Secret's data and annotations: the current value, and the previous one
/// under its own key during the grace period.
pub fn target_data(
    policy: &SecretRotationPolicy,
    (current_version, current): (&str, &SecretString),
    previous: Option<(&str, &SecretString)>,
) -> (BTreeMap<String, SecretString>, BTreeMap<String, String>) {
    let target = &policy.spec.target;
    let namespace = policy.namespace().unwrap_or_default();
    let mut data = BTreeMap::from([(
        target.key.clone().unwrap_or_else(|| "value".into()),
        current.clone(),
    )]);
    let mut annotations = BTreeMap::from([
        (
            ANNOTATION_POLICY.to_owned(),
            format!("{namespace}/{}", policy.name_any()),
        ),
        (ANNOTATION_VERSION.to_owned(), current_version.to_owned()),
    ]);
    if let Some((previous_version, previous)) = previous {
        let key = target.previous_key.clone();
        data.insert(key.unwrap_or_else(|| "previous".into()), previous.clone());
        annotations.insert(
            ANNOTATION_PREVIOUS_VERSION.to_owned(),
            previous_version.to_owned(),
        );
    }
    (data, annotations)
}

/// The key checksums of the target Secret holding `current` (and `previous`).
pub fn target_checksums(
    policy: &SecretRotationPolicy,
    current: (&str, &SecretString),
    previous: Option<(&str, &SecretString)>,
) -> BTreeMap<String, String> {
    let (data, _) = target_data(policy, current, previous);
    key_checksums(
        "",
        data.iter()
            .map(|(key, value)| (key.as_str(), value.expose_secret().as_bytes())),
    )
}

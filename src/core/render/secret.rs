//! Projected Secrets: the values a workload consumes, written with server-side apply
//! under the operator's field manager. Values appear here and nowhere else the operator
//! writes; labels and annotations carry versions and checksums only.

use std::collections::BTreeMap;

use crate::api::v1alpha1::{LABEL_MANAGED_BY, MANAGED_BY};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, api::ObjectMeta};
use secrecy::{ExposeSecret, SecretString};

/// HMAC-SHA256 of each key's value, under a key this process drew at random and never
/// shows, with `salt` (the Secret's provider-versions checksum) and the key name in the
/// message. What the Secret cache holds in place of values, and what a DriftCheck
/// compares and reports: without the process's key, no checksum can be matched against
/// guessed values, and none of them means anything after the operator restarts.
pub fn key_checksums<'a>(
    salt: &str,
    values: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, String> {
    use hmac::{Hmac, Mac};
    use rand::RngExt;
    use std::sync::OnceLock;
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| rand::rng().random());
    values
        .into_iter()
        .map(|(name, value)| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
            for part in [salt.as_bytes(), name.as_bytes(), value] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part);
            }
            let digest = mac.finalize().into_bytes();
            let hex = digest.iter().map(|byte| format!("{byte:02x}")).collect();
            (name.to_owned(), hex)
        })
        .collect()
}

/// A Secret about to be applied.
pub struct ProjectedSecret {
    pub namespace: String,
    pub name: String,
    /// Key → value.
    pub data: BTreeMap<String, SecretString>,
    /// What the Secret says about itself: owner, versions, checksums. Never values.
    pub annotations: BTreeMap<String, String>,
}

/// The whole Secret for a projection, owned by `owner` when they share a namespace.
pub fn desired_secret<K>(owner: &K, projection: &ProjectedSecret) -> Secret
where
    K: Resource<DynamicType = ()>,
{
    let same_namespace = owner.meta().namespace.as_deref() == Some(projection.namespace.as_str());
    Secret {
        metadata: ObjectMeta {
            name: Some(projection.name.clone()),
            namespace: Some(projection.namespace.clone()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: Some(projection.annotations.clone()),
            owner_references: same_namespace
                .then(|| owner.controller_owner_ref(&()))
                .flatten()
                .map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            projection
                .data
                .iter()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        ByteString(value.expose_secret().as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

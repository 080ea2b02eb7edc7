//! The ConfigMap an environment projects into, as the operator wants it.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Resource, ResourceExt};

use crate::api::v1alpha1::ConfigEntry;
use crate::api::v1alpha1::{
    ANNOTATION_CHECKSUM, ANNOTATION_CONFIG_ID, ANNOTATION_ENTRY, ANNOTATION_VERSION,
    LABEL_ENVIRONMENT, LABEL_MANAGED_BY, MANAGED_BY,
};

/// One environment's projection: where it goes and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedConfigMap {
    pub namespace: String,
    pub name: String,
    pub environment: String,
    pub version: i64,
    pub checksum: String,
    pub data: BTreeMap<String, String>,
}

/// The whole ConfigMap for a projection, labelled, annotated and, in the entry's own
/// namespace, owned by the entry (objects in other namespaces cannot be owned; the
/// entry's finalizer removes them).
pub fn desired_config_map(entry: &ConfigEntry, projection: &ProjectedConfigMap) -> ConfigMap {
    let entry_namespace = entry.namespace().unwrap_or_default();
    let owner_references = (projection.namespace == entry_namespace)
        .then(|| entry.controller_owner_ref(&()))
        .flatten()
        .map(|owner| vec![owner]);
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(projection.name.clone()),
            namespace: Some(projection.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                (LABEL_ENVIRONMENT.to_owned(), projection.environment.clone()),
            ])),
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_ENTRY.to_owned(),
                    format!("{entry_namespace}/{}", entry.name_any()),
                ),
                (
                    ANNOTATION_CONFIG_ID.to_owned(),
                    entry.spec.config_id.clone(),
                ),
                (
                    ANNOTATION_VERSION.to_owned(),
                    projection.version.to_string(),
                ),
                (ANNOTATION_CHECKSUM.to_owned(), projection.checksum.clone()),
            ])),
            owner_references,
            ..ObjectMeta::default()
        },
        data: Some(projection.data.clone()),
        ..ConfigMap::default()
    }
}

/// Values longer than this are kept in the watch cache as their digest.
const KEPT_VERBATIM: usize = 64;

/// The prefix of a value's digest in the cache.
const DIGEST: &str = "sha256:";

/// A projected value as the watch cache keeps it: a short value as it is, a longer one
/// as its SHA-256, which is longer than any value kept as it is, so two different
/// values never look alike. Every entry's projections stay in the operator's memory;
/// their content need not. A value that looks like a digest is hashed too: a digest
/// written by hand never passes for the content it names.
pub fn cached_value(value: &str) -> String {
    if value.len() <= KEPT_VERBATIM {
        value.to_owned()
    } else {
        format!(
            "{DIGEST}{}",
            crate::core::resolve::sha256_hex(value.as_bytes())
        )
    }
}

/// Replaces a projected ConfigMap's values by what the cache keeps of them (see
/// [`cached_value`]), and forgets its binary data but for the keys.
pub fn forget_content(config_map: &mut ConfigMap) {
    for value in config_map
        .data
        .iter_mut()
        .flat_map(|data| data.values_mut())
    {
        *value = cached_value(value);
    }
    for value in config_map
        .binary_data
        .iter_mut()
        .flat_map(|data| data.values_mut())
    {
        value.0 = Vec::new();
    }
}

/// Whether the live ConfigMap differs from the desired one in anything the operator
/// owns; other managers' labels and annotations are left alone. The live object is as
/// the cache keeps it ([`forget_content`]): its values are compared with what the cache
/// would keep of the desired ones.
pub fn needs_apply(live: Option<&ConfigMap>, desired: &ConfigMap) -> bool {
    let Some(live) = live else {
        return true;
    };
    let contains = |live: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| live.as_ref().and_then(|l| l.get(k)) == Some(v))
    };
    let desired_content = desired.data.iter().flatten();
    let desired_content: BTreeMap<&String, String> = desired_content
        .map(|(key, value)| (key, cached_value(value)))
        .collect();
    let live_content: BTreeMap<&String, String> = live
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    live_content != desired_content
        || live.binary_data.as_ref().is_some_and(|b| !b.is_empty())
        || !contains(&live.metadata.labels, &desired.metadata.labels)
        || !contains(&live.metadata.annotations, &desired.metadata.annotations)
        || desired
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|want| {
                !live
                    .owner_references()
                    .iter()
                    .any(|have| have.uid == want.uid)
            })
        || live.meta().deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ConfigEntry {
        serde_yaml_ng::from_str(
            r#"
apiVersion: config.summit.io/v1alpha1
kind: ConfigEntry
metadata: {name: payments, namespace: team, uid: 1234-5678}
spec: {configId: payments, data: {}, environments: [{name: production}]}
"#,
        )
        .unwrap()
    }

    fn projection(namespace: &str) -> ProjectedConfigMap {
        ProjectedConfigMap {
            namespace: namespace.into(),
            name: "payments-production".into(),
            environment: "production".into(),
            version: 3,
            checksum: "abc".into(),
            data: BTreeMap::from([("config.json".into(), "{}\n".into())]),
        }
    }

    #[test]
    fn a_projection_in_the_entrys_namespace_is_owned_by_it() {
        let desired = desired_config_map(&entry(), &projection("team"));
        let owners = desired.metadata.owner_references.unwrap();
        assert_eq!(owners[0].uid, "1234-5678");
        assert_eq!(owners[0].controller, Some(true));
        let annotations = desired.metadata.annotations.unwrap();
        assert_eq!(annotations[ANNOTATION_VERSION], "3");
        assert_eq!(annotations[ANNOTATION_ENTRY], "team/payments");
    }

    #[test]
    fn the_cache_keeps_short_values_and_digests_of_long_ones_without_confusing_them() {
        let short = "{}\n";
        assert_eq!(cached_value(short), short);
        let long = "x".repeat(KEPT_VERBATIM + 1);
        let digest = cached_value(&long);
        assert!(digest.starts_with(DIGEST) && digest.len() > KEPT_VERBATIM);
        assert_ne!(
            cached_value(&digest),
            digest,
            "a digest is no value's stand-in"
        );
        assert_ne!(cached_value(&"x".repeat(KEPT_VERBATIM + 2)), digest);

        let desired = desired_config_map(&entry(), &projection("team"));
        let mut long_desired = desired.clone();
        long_desired.data = Some(BTreeMap::from([("config.json".into(), long.clone())]));
        let mut cached = long_desired.clone();
        forget_content(&mut cached);
        assert_eq!(cached.data.as_ref().unwrap()["config.json"], digest);
        assert!(!needs_apply(Some(&cached), &long_desired));
        let mut edited = long_desired.clone();
        edited.data = Some(BTreeMap::from([("config.json".into(), format!("{long}y"))]));
        forget_content(&mut edited);
        assert!(needs_apply(Some(&edited), &long_desired));

        let mut forged = long_desired.clone();
        forged.data = Some(BTreeMap::from([("config.json".into(), digest.clone())]));
        forget_content(&mut forged);
        assert!(
            needs_apply(Some(&forged), &long_desired),
            "the digest written in place of the content is repaired"
        );
    }

    #[test]
    fn a_projection_elsewhere_has_no_owner() {
        let desired = desired_config_map(&entry(), &projection("shared"));
        assert!(desired.metadata.owner_references.is_none());
    }

    #[test]
    fn only_differences_in_what_the_operator_owns_need_an_apply() {
        let desired = desired_config_map(&entry(), &projection("team"));
        assert!(needs_apply(None, &desired));
        let mut live = desired.clone();
        live.metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "payments".into());
        assert!(
            !needs_apply(Some(&live), &desired),
            "someone else's label is not drift"
        );
        live.data
            .get_or_insert_default()
            .insert("config.json".into(), "{\"edited\": true}".into());
        assert!(
            needs_apply(Some(&live), &desired),
            "an edited value is repaired"
        );
    }
}

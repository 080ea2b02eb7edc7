//! Where a copy differs from what it should hold. Secret values are never compared:
//! only the keyed checksums the operator keeps of them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::Want;
use crate::{
    api::v1alpha1::{
        ANNOTATION_CHECKSUM, ANNOTATION_SECRETS_CHECKSUM, ANNOTATION_VERSION, ConfigFormat,
    },
    core::{diff::changed_paths, render::cached_value, resolve::checksum},
};

/// Where a copy of the applied state (version and checksum) differs from what was
/// applied: `$` when it is missing; `None` when it matches.
pub fn applied_paths(want: &Want, actual: Option<(i64, &str)>) -> Option<Vec<String>> {
    let Some((version, sum)) = actual else {
        return Some(vec!["$".to_owned()]);
    };
    let paths: Vec<String> = [
        (version != want.version).then(|| "$.version".to_owned()),
        (sum != want.checksum).then(|| "$.checksum".to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!paths.is_empty()).then_some(paths)
}

/// Whether a projected ConfigMap as the watch cache keeps it (long values as their
/// digests, see [`cached_value`]) holds `rendered` under the stamps of the version it
/// should hold. The cache answers "the same?" without reading anything; where it says
/// no, [`config_map_paths`] tells where, on the object read whole.
pub fn config_map_matches(
    want: &Want,
    rendered: &BTreeMap<String, String>,
    cached: Option<&ConfigMap>,
) -> bool {
    let Some(cached) = cached else {
        return false;
    };
    let annotations = cached.annotations();
    let stamped = annotations.get(ANNOTATION_CHECKSUM) == Some(&want.checksum)
        && annotations.get(ANNOTATION_VERSION) == Some(&want.version.to_string());
    let held = cached.data.as_ref();
    stamped
        && held.map_or(0, BTreeMap::len) == rendered.len()
        && held
            .into_iter()
            .flatten()
            .zip(rendered)
            .all(|((have_key, have), (key, value))| have_key == key && *have == cached_value(value))
}

/// Where a projected ConfigMap differs from `rendered`, the content of the version it
/// should hold, and the checksum of what it holds; `None` when it matches.
pub fn config_map_paths(
    want: &Want,
    rendered: &BTreeMap<String, String>,
    format: ConfigFormat,
    live: Option<&ConfigMap>,
) -> Option<(Vec<String>, Option<String>)> {
    let Some(live) = live else {
        return Some((vec!["$".into()], None));
    };
    let data = live.data.clone().unwrap_or_default();
    let annotations = live.annotations();
    let stamped = annotations.get(ANNOTATION_CHECKSUM) == Some(&want.checksum);
    let version = annotations.get(ANNOTATION_VERSION) == Some(&want.version.to_string());
    if data == *rendered && version && stamped {
        return None;
    }
    let actual = checksum(&json!(data));
    Some((differing_paths(rendered, &data, format), Some(actual)))
}

/// Where a Secret differs from the key checksums the entry controller last resolved
/// for it (`expected`), given the keyed checksums of what it holds (`actual`) and the
/// provider versions it should say it holds (`versions`) beside its annotations;
/// `None` when it matches.
pub fn secret_paths(
    expected: &BTreeMap<String, String>,
    live: Option<LiveSecret<'_>>,
    versions: &str,
) -> Option<Vec<String>> {
    let Some(LiveSecret {
        keys: actual,
        annotations,
    }) = live
    else {
        return Some(vec!["$".to_owned()]);
    };
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let mut paths: Vec<String> = keys
        .into_iter()
        .filter(|key| expected.get(*key) != actual.get(*key))
        .map(|key| format!("$.data.{key}"))
        .collect();
    if paths.is_empty()
        && annotations
            .get(ANNOTATION_SECRETS_CHECKSUM)
            .map(String::as_str)
            != Some(versions)
    {
        paths.push("metadata.annotations".into());
    }
    (!paths.is_empty()).then_some(paths)
}

/// What the Secret cache holds of a live Secret: keyed checksums of its values, and
/// its annotations.
#[derive(Clone, Copy, Debug)]
pub struct LiveSecret<'a> {
    pub keys: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// The JSON paths where a projected ConfigMap's data differs from the render.
pub fn differing_paths(
    rendered: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
    format: ConfigFormat,
) -> Vec<String> {
    let parse = |data: &BTreeMap<String, String>| -> Option<Value> {
        match format {
            ConfigFormat::Json => serde_json::from_str(data.get("config.json")?).ok(),
            ConfigFormat::Yaml => serde_yaml_ng::from_str(data.get("config.yaml")?).ok(),
            ConfigFormat::Flagd => {
                serde_json::from_str(data.get(crate::core::render::FLAGD_KEY)?).ok()
            }
            ConfigFormat::Env => None,
        }
    };
    let mut paths = Vec::new();
    match (parse(rendered), parse(live)) {
        (Some(want), Some(have)) => paths = changed_paths(&want, &have),
        _ => {
            let keys: BTreeSet<&String> = rendered.keys().chain(live.keys()).collect();
            for key in keys {
                if rendered.get(key) != live.get(key) {
                    paths.push(format!("$.{key}"));
                }
            }
        }
    }
    if paths.is_empty() {
        // Same content, other annotations: the version or checksum stamp changed.
        paths.push("metadata.annotations".into());
    }
    paths
}

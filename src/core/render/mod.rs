//! What an environment's applied version becomes in the cluster: the content of its
//! ConfigMap (JSON, YAML, `KEY=value` or flagd flag definitions) and the ConfigMap and Secret objects as the
//! operator wants them. Pure: applying them is the controllers' business.

mod config_map;
mod content;
pub mod flags;
mod secret;

pub use config_map::{
    ProjectedConfigMap, cached_value, desired_config_map, forget_content, needs_apply,
};
pub use content::{CONFIG_MAP_LIMIT, FLAGD_KEY, RenderError, render};
pub use secret::{ProjectedSecret, desired_secret, key_checksums};

/// The keys of a live object's `data` that the projection does not have, as a merge
/// patch removing them: keys someone else added are not ours to own through apply, so
/// they are removed explicitly and the object holds exactly what was projected.
pub fn foreign_keys<'a, V>(
    live: impl IntoIterator<Item = &'a String>,
    projected: &std::collections::BTreeMap<String, V>,
) -> Option<serde_json::Value> {
    let extra: serde_json::Map<String, serde_json::Value> = live
        .into_iter()
        .filter(|key| !projected.contains_key(*key))
        .map(|key| (key.clone(), serde_json::Value::Null))
        .collect();
    (!extra.is_empty()).then(|| serde_json::json!({"data": extra}))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::foreign_keys;

    #[test]
    fn keys_added_by_hand_are_found() {
        let live = ["config.json".to_owned(), "injected".to_owned()];
        let rendered = BTreeMap::from([("config.json".to_owned(), "{}".to_owned())]);
        assert_eq!(
            foreign_keys(&live, &rendered),
            Some(json!({"data": {"injected": null}}))
        );
        assert_eq!(foreign_keys(&live[..1], &rendered), None);
    }
}

//! The content of a version: base data, every environment's overrides and the secret
//! references, taken from a ConfigEntry's spec.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{checksum, merge_patch};
use crate::api::v1alpha1::ConfigEntrySpec;

/// What a version holds (the seed's `config` and `overrides` columns, plus secret
/// references). Never a secret value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Base data shared by every environment.
    pub data: Value,
    /// The JSON merge patch of every environment, `{}` for one without overrides: the
    /// keys are the environments the version serves.
    pub overrides: BTreeMap<String, Value>,
    /// Secret references, shared (`""`) and per environment; references only.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub secrets: Value,
}

impl Snapshot {
    /// The content a spec describes.
    pub fn from_spec(spec: &ConfigEntrySpec) -> Self {
        let data = spec.data.value();
        let overrides = spec
            .environments
            .iter()
            .map(|e| (e.name.clone(), super::environment_patch(&data, e)))
            .collect();
        let mut secrets = Map::new();
        if !spec.secrets.is_empty() {
            secrets.insert(String::new(), json!(spec.secrets));
        }
        for environment in spec.environments.iter().filter(|e| !e.secrets.is_empty()) {
            secrets.insert(environment.name.clone(), json!(environment.secrets));
        }
        Self {
            data,
            overrides,
            secrets: if secrets.is_empty() {
                Value::Null
            } else {
                Value::Object(secrets)
            },
        }
    }

    /// SHA-256 of the canonical JSON of the whole snapshot.
    pub fn checksum(&self) -> String {
        checksum(&json!({"data": self.data, "overrides": self.overrides, "secrets": self.secrets}))
    }

    /// One environment's secret references: the shared ones, with the environment's
    /// own replacing those of the same key. References only, as JSON by key.
    pub fn secret_refs(&self, environment: &str) -> Map<String, Value> {
        let mut refs = self
            .secrets
            .get("")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = self.secrets.get(environment).and_then(Value::as_object) {
            refs.extend(own.clone());
        }
        refs
    }

    /// Checksum of what one environment consumes: its content, and its secret
    /// references when it has any (so a new reference is a change, while an
    /// environment without secrets keeps the checksum of its content alone).
    pub fn environment_checksum(&self, environment: &str) -> Option<String> {
        let content = self.resolve(environment)?;
        let refs = self.secret_refs(environment);
        Some(if refs.is_empty() {
            checksum(&content)
        } else {
            checksum(&json!({"content": content, "secrets": refs}))
        })
    }

    /// One environment's content: base data with its overrides merged in; `None` when
    /// the version does not serve that environment.
    pub fn resolve(&self, environment: &str) -> Option<Value> {
        let patch = self.overrides.get(environment)?;
        let mut content = self.data.clone();
        merge_patch(&mut content, patch);
        Some(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ConfigEntrySpec {
        crate::core::fixtures::yaml(text)
    }

    const SPEC: &str = r#"
configId: payments
data: {pool: {max: 10}, host: db}
environments:
  - name: development
  - name: production
    overrides: {pool: {max: 50}}
"#;

    #[test]
    fn a_snapshot_serves_every_environment_of_the_spec() {
        let snapshot = Snapshot::from_spec(&spec(SPEC));
        assert_eq!(
            snapshot.resolve("development"),
            Some(json!({"pool": {"max": 10}, "host": "db"}))
        );
        assert_eq!(
            snapshot.resolve("production"),
            Some(json!({"pool": {"max": 50}, "host": "db"}))
        );
        assert_eq!(snapshot.resolve("staging"), None);
    }

    #[test]
    fn the_checksum_follows_content_not_layout() {
        let a = Snapshot::from_spec(&spec(SPEC));
        let reordered = spec(
            r#"
configId: payments
data: {host: db, pool: {max: 10}}
environments:
  - name: production
    overrides: {pool: {max: 50}}
  - name: development
"#,
        );
        assert_eq!(a.checksum(), Snapshot::from_spec(&reordered).checksum());
        let changed = spec(&SPEC.replace("max: 50", "max: 51"));
        assert_ne!(a.checksum(), Snapshot::from_spec(&changed).checksum());
    }
}

//! Turning a ConfigEntry's spec into each environment's content: config id checks,
//! JSON merge of overrides, and JSON Schema validation. Pure functions only.

mod canonical;
mod config_id;
mod merge;
mod removal;
mod schema;
mod snapshot;

pub use canonical::{canonical_json, checksum, sha256_hex};
pub use config_id::{ConfigIdError, validate_config_id};
pub use merge::merge_patch;
pub use removal::{RemovalError, patch_with_removals};
pub use schema::{CompiledSchema, SchemaError, Violation, json_path};
pub use snapshot::Snapshot;

use serde_json::Value;

use crate::api::v1alpha1::{ConfigEntrySpec, EnvironmentSpec, free_form::FreeForm};

/// One environment's resolved content: base data with its overrides merged in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedEnvironment {
    pub name: String,
    pub content: Value,
}

/// Merges every environment's overrides (and removals) onto the base data. A removal
/// that cannot be made is left out here; validation reports it.
pub fn resolve_environments(spec: &ConfigEntrySpec) -> Vec<ResolvedEnvironment> {
    let data = spec.data.value();
    spec.environments
        .iter()
        .map(|environment| {
            let mut content = data.clone();
            merge_patch(&mut content, &environment_patch(&data, environment));
            ResolvedEnvironment {
                name: environment.name.clone(),
                content,
            }
        })
        .collect()
}

/// An environment's merge patch over the spec's `data` (parsed): its overrides, and its
/// removals as `null`s. A removal that cannot be made is left out; validation reports
/// it.
pub fn environment_patch(data: &Value, environment: &EnvironmentSpec) -> Value {
    let overrides = environment.overrides.as_ref().map(FreeForm::value);
    patch_with_removals(data, overrides.as_ref(), &environment.remove)
        .unwrap_or_else(|_| overrides.unwrap_or_else(|| Value::Object(serde_json::Map::new())))
}

/// A violation found in one environment's resolved content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentViolation {
    pub environment: String,
    pub violation: Violation,
}

impl std::fmt::Display for EnvironmentViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "environment {:?}: {}", self.environment, self.violation)
    }
}

/// Validates every environment's resolved content against the schema, returning every
/// violation in environment order.
pub fn validate_environments(
    schema: &CompiledSchema,
    environments: &[ResolvedEnvironment],
) -> Vec<EnvironmentViolation> {
    environments
        .iter()
        .flat_map(|environment| {
            schema
                .violations(&environment.content)
                .into_iter()
                .map(|violation| EnvironmentViolation {
                    environment: environment.name.clone(),
                    violation,
                })
        })
        .collect()
}

/// Whether `name` is a DNS label: lower-case letters, digits and '-', starting and
/// ending with a letter or digit, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// What kind of JSON value this is, for messages: "an object", "a string", ...
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(text: &str) -> ConfigEntrySpec {
        crate::core::fixtures::yaml(text)
    }

    #[test]
    fn each_environment_gets_its_own_overrides() {
        let spec = spec(
            r#"
configId: payments/database
data: {pool: {min: 1, max: 10}, host: db}
environments:
  - name: development
  - name: production
    overrides: {pool: {max: 50}, host: null}
"#,
        );
        let resolved = resolve_environments(&spec);
        assert_eq!(
            resolved[0].content,
            json!({"pool": {"min": 1, "max": 10}, "host": "db"})
        );
        assert_eq!(resolved[1].content, json!({"pool": {"min": 1, "max": 50}}));
    }

    #[test]
    fn a_violation_names_the_environment_and_the_path() {
        let spec = spec(crate::core::fixtures::PAYMENTS_SPEC);
        let schema = CompiledSchema::compile(&json!({
            "type": "object",
            "properties": {"pool": {"properties": {"max": {"type": "integer", "maximum": 100}}}}
        }))
        .unwrap();
        let violations = validate_environments(&schema, &resolve_environments(&spec));
        assert_eq!(violations.len(), 1);
        assert_eq!(
            violations[0].to_string(),
            "environment \"production\": $.pool.max: 500 is greater than the maximum of 100"
        );
    }
}

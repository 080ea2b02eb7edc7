//! Validation of a ConfigEntry: its config id, its schema, and every environment's
//! resolved content against that schema.

use std::collections::BTreeSet;

use kube::ResourceExt;
use serde_json::Value;

use crate::{
    api::v1alpha1::{ConfigEntry, ConfigEntrySpec},
    controller::{Context, status::Invalid},
    resolve::{self, CompiledSchema},
};

/// How many violations a condition message lists before it summarises the rest.
const LISTED_VIOLATIONS: usize = 5;

/// Label that marks a ConfigMap as holding JSON Schemas for `schemaRef`. Only labelled
/// ConfigMaps are watched, so the operator never caches unrelated ConfigMaps.
pub const SCHEMA_LABEL: &str = "config.summit.io/schema";

pub const REASON_SCHEMA_NOT_FOUND: &str = "SchemaNotFound";

/// Reads the entry's schema: inline, or from the watched schema ConfigMaps.
pub fn schema_source(entry: &ConfigEntry, ctx: &Context) -> SchemaSource {
    let namespace = entry.namespace().unwrap_or_default();
    match &entry.spec.schema_ref {
        Some(reference) => SchemaSource::Referenced {
            name: reference.name.clone(),
            key: reference.key.clone(),
            text: ctx
                .schema_config_map(&namespace, &reference.name)
                .and_then(|cm| cm.data.as_ref()?.get(&reference.key).cloned()),
        },
        None => SchemaSource::Inline(entry.spec.schema.clone()),
    }
}

/// Where the entry's schema comes from, already read.
pub enum SchemaSource {
    Inline(Option<Value>),
    Referenced {
        name: String,
        key: String,
        text: Option<String>,
    },
}

/// Why an entry does not validate, and which environments are at fault (none when the
/// fault is the entry's, such as its schema).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub invalid: Invalid,
    pub environments: BTreeSet<String>,
}

impl From<Invalid> for Refusal {
    fn from(invalid: Invalid) -> Self {
        Self {
            invalid,
            environments: BTreeSet::new(),
        }
    }
}

/// The entry's schema, compiled, and where it came from; `None` when it has none.
pub fn compile(schema: SchemaSource) -> Result<Option<(CompiledSchema, String)>, Invalid> {
    let (schema, origin) = match schema {
        SchemaSource::Inline(None) => return Ok(None),
        SchemaSource::Inline(Some(schema)) => (schema, "spec.schema".to_owned()),
        SchemaSource::Referenced { name, key, text } => {
            let origin = format!("ConfigMap {name} key {key:?} (spec.schemaRef)");
            let text = text.ok_or_else(|| Invalid {
                reason: REASON_SCHEMA_NOT_FOUND,
                message: format!("{origin} does not exist, or lacks the label {SCHEMA_LABEL}"),
            })?;
            let schema = serde_yaml_ng::from_str::<Value>(&text).map_err(|error| Invalid {
                reason: "InvalidSchema",
                message: format!("{origin} is neither JSON nor YAML: {error}"),
            })?;
            (schema, origin)
        }
    };
    let compiled = CompiledSchema::compile(&schema).map_err(|error| Invalid {
        reason: "InvalidSchema",
        message: format!("{origin} is {error}"),
    })?;
    Ok(Some((compiled, origin)))
}

/// Validates the config id, the schema and every environment's resolved content.
/// Returns the `Validated` message on success.
pub fn validate(spec: &ConfigEntrySpec, schema: SchemaSource) -> Result<String, Refusal> {
    resolve::validate_config_id(&spec.config_id).map_err(|error| Invalid {
        reason: "InvalidConfigId",
        message: format!("spec.configId: {error}"),
    })?;
    let Some((compiled, origin)) = compile(schema)? else {
        return Ok(format!(
            "no schema: {} environment(s) accepted as they are",
            spec.environments.len()
        ));
    };
    let environments = resolve::resolve_environments(spec);
    let violations = resolve::validate_environments(&compiled, &environments);
    if violations.is_empty() {
        return Ok(format!(
            "every environment ({}) satisfies {origin}",
            environments
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut message = format!("{} violation(s) of {origin}: ", violations.len());
    let listed: Vec<String> = violations
        .iter()
        .take(LISTED_VIOLATIONS)
        .map(ToString::to_string)
        .collect();
    message.push_str(&listed.join("; "));
    if violations.len() > LISTED_VIOLATIONS {
        message.push_str(&format!(
            "; and {} more",
            violations.len() - LISTED_VIOLATIONS
        ));
    }
    Err(Refusal {
        invalid: Invalid {
            reason: "SchemaViolation",
            message,
        },
        environments: violations.into_iter().map(|v| v.environment).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(yaml: &str) -> ConfigEntrySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const SPEC: &str = r#"
configId: payments/database
data: {pool: {max: 10}}
environments:
  - name: development
  - name: production
    overrides: {pool: {max: 500}}
"#;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"pool": {"properties": {"max": {"maximum": 100}}}}})
    }

    #[test]
    fn no_schema_accepts_everything() {
        let message = validate(&spec(SPEC), SchemaSource::Inline(None)).unwrap();
        assert!(message.contains("no schema"), "{message}");
    }

    #[test]
    fn a_violation_names_environment_and_path() {
        let failure = validate(&spec(SPEC), SchemaSource::Inline(Some(schema()))).unwrap_err();
        assert_eq!(failure.invalid.reason, "SchemaViolation");
        assert_eq!(
            failure.invalid.message,
            "1 violation(s) of spec.schema: environment \"production\": $.pool.max: 500 is greater than the maximum of 100"
        );
    }

    #[test]
    fn a_referenced_schema_in_yaml_is_read() {
        let source = SchemaSource::Referenced {
            name: "schemas".into(),
            key: "database.yaml".into(),
            text: Some(
                "type: object\nproperties: {pool: {properties: {max: {maximum: 100}}}}".into(),
            ),
        };
        let failure = validate(&spec(SPEC), source).unwrap_err();
        assert!(
            failure
                .invalid
                .message
                .contains("ConfigMap schemas key \"database.yaml\""),
            "{}",
            failure.invalid.message
        );
    }

    #[test]
    fn a_missing_referenced_schema_is_reported() {
        let source = SchemaSource::Referenced {
            name: "schemas".into(),
            key: "database.json".into(),
            text: None,
        };
        let failure = validate(&spec(SPEC), source).unwrap_err();
        assert_eq!(failure.invalid.reason, REASON_SCHEMA_NOT_FOUND);
    }

    #[test]
    fn an_invalid_schema_is_reported_as_such() {
        let failure =
            validate(&spec(SPEC), SchemaSource::Inline(Some(json!({"type": 12})))).unwrap_err();
        assert_eq!(failure.invalid.reason, "InvalidSchema");
        assert!(
            failure
                .invalid
                .message
                .starts_with("spec.schema is not a valid JSON Schema"),
            "{}",
            failure.invalid.message
        );
    }

    #[test]
    fn many_violations_are_summarised() {
        let spec = spec(
            r#"
configId: x
data: {a: 1, b: 1, c: 1, d: 1, e: 1, f: 1, g: 1}
environments: [{name: dev}]
"#,
        );
        let schema = json!({"additionalProperties": {"type": "string"}});
        let failure = validate(&spec, SchemaSource::Inline(Some(schema))).unwrap_err();
        assert!(
            failure.invalid.message.starts_with("7 violation(s)"),
            "{}",
            failure.invalid.message
        );
        assert!(
            failure.invalid.message.ends_with("; and 2 more"),
            "{}",
            failure.invalid.message
        );
    }
}

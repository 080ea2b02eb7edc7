//! The ConfigEntry reconcile loop: validate the schema and every environment's
//! resolved content, and report it in `status`.

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use serde_json::Value;
use tracing::instrument;

use super::{
    Context, Error, Result, observed, requeue_after_error,
    status::{self, Invalid},
};
use crate::{
    api::v1alpha1::{ConfigEntry, ConfigEntrySpec},
    resolve::{self, CompiledSchema},
};

const KIND: &str = "ConfigEntry";

/// How many violations a condition message lists before it summarises the rest.
const LISTED_VIOLATIONS: usize = 5;

#[instrument(skip_all, fields(namespace = entry.namespace().unwrap_or_default(), name = entry.name_any()))]
pub async fn reconcile(entry: Arc<ConfigEntry>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, entry.as_ref(), &ctx, reconcile_entry(&entry, &ctx)).await
}

pub fn error_policy(entry: Arc<ConfigEntry>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, entry.as_ref(), error, &ctx)
}

async fn reconcile_entry(entry: &ConfigEntry, ctx: &Context) -> Result<Action> {
    let namespace = entry.namespace().unwrap_or_default();
    let schema = match &entry.spec.schema_ref {
        Some(reference) => SchemaSource::Referenced {
            name: reference.name.clone(),
            key: reference.key.clone(),
            text: ctx
                .schema_config_map(&namespace, &reference.name)
                .and_then(|cm| cm.data.as_ref()?.get(&reference.key).cloned()),
        },
        None => SchemaSource::Inline(entry.spec.schema.clone()),
    };
    let validation = validate(&entry.spec, schema);
    status::report_validation(ctx, KIND, entry, entry.status.as_ref(), &validation).await?;

    // Schema ConfigMaps are watched: a change to one triggers its entries.
    Ok(Action::await_change())
}

/// Label that marks a ConfigMap as holding JSON Schemas for `schemaRef`. Only labelled
/// ConfigMaps are watched, so the operator never caches unrelated ConfigMaps.
pub const SCHEMA_LABEL: &str = "config.summit.io/schema";

const REASON_SCHEMA_NOT_FOUND: &str = "SchemaNotFound";

/// Re-validates every entry whose `schemaRef` names a schema ConfigMap when it changes.
pub fn watch_schemas(
    controller: Controller<ConfigEntry>,
    schema_events: impl Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static,
) -> Controller<ConfigEntry> {
    let entries = controller.store();
    controller.watches_stream(schema_events, move |config_map| {
        let namespace = config_map.namespace();
        let name = config_map.name_any();
        entries
            .state()
            .into_iter()
            .filter(|entry| {
                entry.namespace() == namespace
                    && entry
                        .spec
                        .schema_ref
                        .as_ref()
                        .is_some_and(|r| r.name == name)
            })
            .map(|entry| ObjectRef::from_obj(entry.as_ref()))
            .collect::<Vec<_>>()
    })
}

/// Where the entry's schema comes from, already read.
enum SchemaSource {
    Inline(Option<Value>),
    Referenced {
        name: String,
        key: String,
        text: Option<String>,
    },
}

/// Validates the config id, the schema and every environment's resolved content.
/// Returns the `Validated` message on success.
fn validate(spec: &ConfigEntrySpec, schema: SchemaSource) -> Result<String, Invalid> {
    resolve::validate_config_id(&spec.config_id).map_err(|error| Invalid {
        reason: "InvalidConfigId",
        message: format!("spec.configId: {error}"),
    })?;
    let (schema, origin) = match schema {
        SchemaSource::Inline(None) => {
            return Ok(format!(
                "no schema: {} environment(s) accepted as they are",
                spec.environments.len()
            ));
        }
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
    Err(Invalid {
        reason: "SchemaViolation",
        message,
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
        assert_eq!(failure.reason, "SchemaViolation");
        assert_eq!(
            failure.message,
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
                .message
                .contains("ConfigMap schemas key \"database.yaml\""),
            "{}",
            failure.message
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
        assert_eq!(failure.reason, REASON_SCHEMA_NOT_FOUND);
    }

    #[test]
    fn an_invalid_schema_is_reported_as_such() {
        let failure =
            validate(&spec(SPEC), SchemaSource::Inline(Some(json!({"type": 12})))).unwrap_err();
        assert_eq!(failure.reason, "InvalidSchema");
        assert!(
            failure
                .message
                .starts_with("spec.schema is not a valid JSON Schema"),
            "{}",
            failure.message
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
            failure.message.starts_with("7 violation(s)"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.ends_with("; and 2 more"),
            "{}",
            failure.message
        );
    }
}

//! Validation of a ConfigEntry: its config id, its schema, and every environment's
//! resolved content against that schema.

use std::collections::BTreeSet;

use kube::ResourceExt;
use serde_json::Value;

use super::plan::{config_map_target, secret_target};
use crate::{
    api::v1alpha1::{
        ConfigEntry, ConfigEntrySpec, LABEL_SCHEMA,
        free_form::{self, FreeForm},
    },
    core::Invalid,
    core::ownership::{self, Target, TargetKind},
    core::resolve::{self, CompiledSchema},
};

/// How many violations a condition message lists before it summarises the rest.
const LISTED_VIOLATIONS: usize = 5;

pub const REASON_SCHEMA_NOT_FOUND: &str = "SchemaNotFound";

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

impl Refusal {
    /// Refused for `reason` (`message` says why), the fault of `environments`.
    pub fn of(
        reason: &'static str,
        message: String,
        environments: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            invalid: Invalid { reason, message },
            environments: environments.into_iter().collect(),
        }
    }
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
                message: format!("{origin} does not exist, or lacks the label {LABEL_SCHEMA}"),
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

/// Checks what the entry's place decides: its config id starts with the prefix its
/// namespace is given, and no two environments project into one object.
pub fn check_place(entry: &ConfigEntry, config_id_prefix: &str) -> Result<(), Refusal> {
    let namespace = entry.namespace().unwrap_or_default();
    ownership::check_prefix(&entry.spec.config_id, &namespace, config_id_prefix).map_err(
        |refused| Invalid {
            reason: "ConfigIdNotAllowed",
            message: format!("spec.configId: {refused}"),
        },
    )?;
    let targets: Vec<(String, Target)> = entry
        .spec
        .environments
        .iter()
        .flat_map(|environment| {
            let (namespace, name) = config_map_target(entry, environment);
            let config_map = Target {
                kind: TargetKind::ConfigMap,
                namespace,
                name,
            };
            let (namespace, name) = secret_target(entry, environment);
            let secret = Target {
                kind: TargetKind::Secret,
                namespace,
                name,
            };
            [
                (environment.name.clone(), config_map),
                (environment.name.clone(), secret),
            ]
        })
        .collect();
    let shared = ownership::shared_targets(&targets);
    if shared.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = shared
        .iter()
        .map(|(first, second, target)| {
            format!("environments {first:?} and {second:?} both project into {target}")
        })
        .collect();
    Err(Refusal {
        invalid: Invalid {
            reason: "SharedTarget",
            message: format!(
                "{}: each object holds one environment's content; name another target",
                problems.join("; ")
            ),
        },
        environments: shared
            .iter()
            .flat_map(|(a, b, _)| [(*a).to_owned(), (*b).to_owned()])
            .collect(),
    })
}

/// Checks that every free-form field could be read (see
/// [`free_form`](crate::api::v1alpha1::free_form)).
fn readable(spec: &ConfigEntrySpec) -> Result<(), Refusal> {
    let too_deep = FreeForm::is_too_deep;
    let mut fields = Vec::new();
    let mut environments = BTreeSet::new();
    if too_deep(&spec.data) {
        fields.push("spec.data".to_owned());
    }
    if spec.schema.as_ref().is_some_and(too_deep) {
        fields.push("spec.schema".to_owned());
    }
    for environment in &spec.environments {
        if environment.overrides.as_ref().is_some_and(too_deep) {
            fields.push(format!("the overrides of {:?}", environment.name));
            environments.insert(environment.name.clone());
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    let message = format!(
        "{} nest objects and arrays deeper than {} levels, more than the operator reads: flatten them",
        fields.join(", "),
        free_form::MAX_DEPTH
    );
    Err(Refusal::of("Unreadable", message, environments))
}

/// Checks that every environment's removals can be made.
fn removals(spec: &ConfigEntrySpec) -> Result<(), Refusal> {
    let mut problems = Vec::new();
    let mut environments = BTreeSet::new();
    let data = spec.data.value();
    for environment in &spec.environments {
        let overrides = environment.overrides.as_ref().map(FreeForm::value);
        let removed = resolve::patch_with_removals(&data, overrides.as_ref(), &environment.remove);
        if let Err(error) = removed {
            problems.push(format!("environment {:?}: {error}", environment.name));
            environments.insert(environment.name.clone());
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Refusal::of(
        "InvalidRemoval",
        problems.join("; "),
        environments,
    ))
}

/// Checks that every canary metric query is PromQL, before a version waits on it.
fn metric_queries(spec: &ConfigEntrySpec) -> Result<(), Refusal> {
    let (problems, environments): (Vec<String>, Vec<String>) = spec
        .environments
        .iter()
        .filter_map(|e| {
            let error = crate::core::rollout::metric::checked(e.rollout.as_ref()?).err()?;
            Some((format!("environment {:?}: {error}", e.name), e.name.clone()))
        })
        .unzip();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Refusal::of(
        "InvalidMetric",
        problems.join("; "),
        environments,
    ))
}

/// Checks that every environment's resolved content renders in its ConfigMap's format
/// (flag definitions included), as projecting it will: what `schema validate` adds to
/// [`validate`] offline, where the operator renders while it plans.
pub fn renderable(spec: &ConfigEntrySpec) -> Result<(), Refusal> {
    let formats = spec.environments.iter().map(|e| {
        let format = e.config_map.as_ref().and_then(|t| t.format);
        format.unwrap_or(crate::api::v1alpha1::ConfigFormat::Json)
    });
    let mut problems = Vec::new();
    let mut environments = BTreeSet::new();
    let mut flags = false;
    for (environment, format) in resolve::resolve_environments(spec).into_iter().zip(formats) {
        if let Err(error) = crate::core::render::render(&environment.content, format) {
            flags |= matches!(error, crate::core::render::RenderError::Flags(_));
            problems.push(format!("environment {:?}: {error}", environment.name));
            environments.insert(environment.name);
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let reason = if flags {
        "InvalidFlags"
    } else {
        "RenderFailed"
    };
    Err(Refusal::of(reason, problems.join("; "), environments))
}

/// Validates the config id, the schema and every environment's resolved content.
/// Returns the `Validated` message on success.
pub fn validate(spec: &ConfigEntrySpec, schema: SchemaSource) -> Result<String, Refusal> {
    readable(spec)?;
    resolve::validate_config_id(&spec.config_id).map_err(|error| Invalid {
        reason: "InvalidConfigId",
        message: format!("spec.configId: {error}"),
    })?;
    removals(spec)?;
    metric_queries(spec)?;
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
    let at_fault = violations.into_iter().map(|v| v.environment);
    Err(Refusal::of("SchemaViolation", message, at_fault))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{entry_in, yaml};
    use serde_json::json;

    fn spec(text: &str) -> ConfigEntrySpec {
        yaml(text)
    }

    use crate::core::fixtures::PAYMENTS_SPEC as SPEC;

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
    fn content_too_deep_to_read_is_refused_by_field() {
        let deep = format!("{}1{}", "[".repeat(80), "]".repeat(80));
        let spec: ConfigEntrySpec = serde_json::from_str(&format!(
            r#"{{"configId": "x", "data": {{"a": {deep}}}, "environments": [{{"name": "dev"}}, {{"name": "prod", "overrides": {{"b": {deep}}}}}]}}"#
        ))
        .unwrap();
        let failure = validate(&spec, SchemaSource::Inline(None)).unwrap_err();
        assert_eq!(failure.invalid.reason, "Unreadable");
        assert!(
            failure.invalid.message.starts_with(
                "spec.data, the overrides of \"prod\" nest objects and arrays deeper than 64 levels"
            ),
            "{}",
            failure.invalid.message
        );
        assert_eq!(failure.environments, BTreeSet::from(["prod".to_owned()]));
    }

    #[test]
    fn removals_are_checked_and_applied_before_the_schema() {
        let removed = spec(
            r#"
configId: x
data: {legacy: true, pool: {max: 10}}
environments: [{name: prod, remove: [/legacy]}]
"#,
        );
        let schema = json!({"properties": {"legacy": false}});
        assert!(validate(&removed, SchemaSource::Inline(Some(schema))).is_ok());
        let contradiction = spec(
            r#"
configId: x
data: {legacy: true}
environments: [{name: prod, overrides: {legacy: false}, remove: [/legacy]}]
"#,
        );
        let failure = validate(&contradiction, SchemaSource::Inline(None)).unwrap_err();
        assert_eq!(failure.invalid.reason, "InvalidRemoval");
        assert_eq!(
            failure.invalid.message,
            "environment \"prod\": remove \"/legacy\": overrides also set this key: keep the override or the removal"
        );
    }

    #[test]
    fn config_ids_outside_the_namespace_prefix_are_refused() {
        let entry = entry_in(
            "team-a",
            "{configId: team-b/payments, data: {}, environments: [{name: dev}]}",
        );
        let failure = check_place(&entry, "{namespace}/").unwrap_err();
        assert_eq!(failure.invalid.reason, "ConfigIdNotAllowed");
        assert!(check_place(&entry, "").is_ok());
    }

    #[test]
    fn two_environments_never_share_a_target() {
        let entry = entry_in(
            "team",
            r#"
configId: payments
data: {}
environments:
  - {name: development, configMap: {name: payments-production}}
  - {name: production}
"#,
        );
        let failure = check_place(&entry, "").unwrap_err();
        assert_eq!(failure.invalid.reason, "SharedTarget");
        assert_eq!(
            failure.invalid.message,
            "environments \"development\" and \"production\" both project into ConfigMap team/payments-production: each object holds one environment's content; name another target"
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

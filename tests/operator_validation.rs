//! The operator against the real apiserver: every controller reports
//! `observedGeneration`, and a ConfigEntry whose data breaks its schema is reported
//! `Validated=False` with the environment and JSON path, then `True` once fixed.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_VALIDATED, ConfigChange, DriftCheck, SecretRotationPolicy,
};
use support::{
    Tenant, change, condition_where, config_map, create, drift_check, entry, environment_where,
    event_with_reason, merge, policy, present, setup, validated_at,
};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"pool": {"type": "object", "properties": {"max": {"type": "integer", "maximum": 100}}}}
    })
}

/// Entry `payments` with a schema, whose production has `overrides`, under a config id
/// of its namespace's own, so tests never share one.
fn payments(s: &Tenant, overrides: Value) -> summit_config::api::v1alpha1::ConfigEntry {
    entry(
        "payments",
        json!({
            "configId": format!("validation/{}", s.ns),
            "schema": schema(),
            "data": {"pool": {"max": 10}},
            "environments": [
                {"name": "development"},
                {"name": "production", "overrides": overrides},
            ],
        }),
    )
}

#[tokio::test]
async fn a_schema_violation_names_the_environment_and_the_path() {
    let (s, _operator) = setup("schema-violation").await;
    let entries = s.entries();
    create(&entries, &payments(&s, json!({"pool": {"max": 500}}))).await;
    let condition = validated_at(&entries, "payments", 1).await;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason, "SchemaViolation");
    assert_eq!(
        condition.message,
        "1 violation(s) of spec.schema: environment \"production\": $.pool.max: 500 is greater than the maximum of 100"
    );
    assert_eq!(condition.observed_generation, Some(1));

    let warning = event_with_reason(&s.admin(), &s.ns, "ValidationFailed").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.unwrap_or_default().contains("$.pool.max"));

    let fix = json!({"spec": {"environments": [
        {"name": "development"},
        {"name": "production", "overrides": {"pool": {"max": 50}}},
    ]}});
    merge(&entries, "payments", fix).await;
    let condition = validated_at(&entries, "payments", 2).await;
    assert_eq!(condition.status, "True", "{condition:?}");
    assert_eq!(
        condition.message,
        "every environment (development, production) satisfies spec.schema"
    );
}

#[tokio::test]
async fn an_invalid_schema_and_a_schema_from_a_config_map_are_reported() {
    let (s, _operator) = setup("schema-sources").await;
    let entries = s.entries();
    let mut broken = payments(&s, json!({}));
    broken.spec.schema =
        Some(json!({"type": "object", "properties": {"pool": {"type": "strnig"}}}).into());
    create(&entries, &broken).await;
    let condition = validated_at(&entries, "payments", 1).await;
    assert_eq!(condition.reason, "InvalidSchema", "{condition:?}");
    assert!(
        condition
            .message
            .starts_with("spec.schema is not a valid JSON Schema: $.properties.pool.type"),
        "{}",
        condition.message
    );

    // The same entry, its schema now kept in a ConfigMap that does not exist yet.
    let by_reference =
        json!({"spec": {"schema": null, "schemaRef": {"name": "schemas", "key": "payments.yaml"}}});
    merge(&entries, "payments", by_reference).await;
    let condition = validated_at(&entries, "payments", 2).await;
    assert_eq!(condition.reason, "SchemaNotFound", "{condition:?}");

    let mut schemas = config_map(
        "schemas",
        json!({"payments.yaml": "type: object\nproperties: {pool: {properties: {max: {maximum: 5}}}}\n"}),
    );
    schemas.metadata.labels =
        Some([("config.summit.io/schema".to_owned(), "true".to_owned())].into());
    create(&s.config_maps(), &schemas).await;
    let message = condition_where(&entries, "payments", CONDITION_VALIDATED, |c| {
        c.reason == "SchemaViolation"
    })
    .await
    .message;
    assert!(
        message.contains("ConfigMap schemas key \"payments.yaml\"")
            && message.contains("$.pool.max: 10"),
        "{message}"
    );
}

#[tokio::test]
async fn every_controller_reports_its_observed_generation() {
    let (s, _operator) = setup("observed-generation").await;
    let entries = s.entries();
    create(&entries, &payments(&s, json!({}))).await;
    let changes: Api<ConfigChange> = s.api();
    let spec = json!({
        "configEntry": "payments",
        "environment": "staging",
        "patch": {"pool": {"max": 20}},
        "message": "try it in staging",
    });
    create(&changes, &change("to-staging", "admin", spec)).await;
    let policies: Api<SecretRotationPolicy> = s.api();
    let spec = json!({
        "provider": "InCluster",
        "secretId": "db",
        "rotationInterval": "1d",
        "gracePeriod": "2d",
        "target": {"name": "db"},
    });
    create(&policies, &policy("db", spec)).await;
    let checks: Api<DriftCheck> = s.api();
    create(&checks, &drift_check("all", json!({"interval": "1m"}))).await;

    let entry = validated_at(&entries, "payments", 1).await;
    assert_eq!(entry.status, "True", "{entry:?}");
    let change = validated_at(&changes, "to-staging", 1).await;
    assert_eq!(change.reason, "EnvironmentNotFound", "{change:?}");
    assert!(
        change.message.contains("no environment \"staging\""),
        "{}",
        change.message
    );
    let policy = validated_at(&policies, "db", 1).await;
    assert_eq!(policy.reason, "InvalidSchedule", "{policy:?}");
    let check = validated_at(&checks, "all", 1).await;
    assert_eq!(check.status, "True", "{check:?}");
}

#[tokio::test]
async fn a_config_map_the_entry_does_not_own_is_never_taken_over() {
    let (s, _operator) = setup("not-owned").await;
    // Somebody's ConfigMap, under the name the entry's development environment targets.
    let config_maps: Api<ConfigMap> = s.config_maps();
    let theirs = config_map("payments-development", json!({"owner": "somebody else"}));
    create(&config_maps, &theirs).await;
    create(&s.entries(), &payments(&s, json!({}))).await;
    let ownerless = "belongs to nobody in summit-config";
    let development = environment_where(
        &s.entries(),
        "payments",
        "development",
        "development to say why",
        |e| e.message.as_deref().is_some_and(|m| m.contains(ownerless)),
    )
    .await;
    let message = development.message.unwrap_or_default();
    assert!(message.contains("payments-development"), "{message}");
    let degraded = event_with_reason(&s.admin(), &s.ns, "Degraded").await;
    assert_eq!(degraded.type_.as_deref(), Some("Warning"));
    let note = degraded.note.unwrap_or_default();
    assert!(
        note.starts_with("development: ") && note.contains(ownerless),
        "{note}"
    );
    // Production, whose target is free, is projected as always.
    present(&config_maps, "payments-production").await;
    let untouched = config_maps
        .get("payments-development")
        .await
        .expect("their ConfigMap");
    assert_eq!(
        untouched.data.expect("data"),
        std::collections::BTreeMap::from([("owner".to_owned(), "somebody else".to_owned())])
    );
}

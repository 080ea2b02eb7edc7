//! The operator against the real apiserver: every controller reports
//! `observedGeneration`, and a ConfigEntry whose data breaks its schema is reported
//! `Validated=False` with the environment and JSON path, then `True` once fixed.

mod support;

use std::time::Duration;

use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, Resource,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_VALIDATED, Condition, ConfigChange, ConfigEntry, DriftCheck, SecretRotationPolicy,
    find_condition,
};
use support::{Operator, eventually, fresh_namespace};

const WAIT: Duration = Duration::from_secs(30);

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"pool": {"type": "object", "properties": {"max": {"type": "integer", "maximum": 100}}}}
    })
}

/// An entry with a config id of its namespace's own, so tests never share one.
fn entry(ns: &str, overrides: Value) -> ConfigEntry {
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("validation/{ns}"),
            "schema": schema(),
            "data": {"pool": {"max": 10}},
            "environments": [
                {"name": "development"},
                {"name": "production", "overrides": overrides},
            ],
        },
    }))
    .expect("entry")
}

/// Waits until the object's status describes its current generation, then returns
/// its `Validated` condition.
async fn validated_for_generation<K>(api: &Api<K>, name: &str, generation: i64) -> Condition
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + HasStatus,
{
    eventually(
        &format!("{name} to report generation {generation}"),
        WAIT,
        || async {
            let object = api.get(name).await.ok()?;
            let (observed, conditions) = object.observed()?;
            (observed == generation)
                .then(|| find_condition(&conditions, CONDITION_VALIDATED).cloned())
                .flatten()
        },
    )
    .await
}

trait HasStatus {
    fn observed(&self) -> Option<(i64, Vec<Condition>)>;
}

macro_rules! has_status {
    ($($kind:ty),*) => {$(
        impl HasStatus for $kind {
            fn observed(&self) -> Option<(i64, Vec<Condition>)> {
                let status = self.status.as_ref()?;
                Some((status.observed_generation?, status.conditions.clone()))
            }
        }
    )*};
}
has_status!(ConfigEntry, ConfigChange, SecretRotationPolicy, DriftCheck);

#[tokio::test]
async fn a_schema_violation_names_the_environment_and_the_path() {
    let (client, ns) = fresh_namespace("schema-violation").await;
    let _operator = Operator::start(&ns);
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);

    entries
        .create(
            &PostParams::default(),
            &entry(&ns, json!({"pool": {"max": 500}})),
        )
        .await
        .expect("create entry");
    let condition = validated_for_generation(&entries, "payments", 1).await;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason, "SchemaViolation");
    assert_eq!(
        condition.message,
        "1 violation(s) of spec.schema: environment \"production\": $.pool.max: 500 is greater than the maximum of 100"
    );
    assert_eq!(condition.observed_generation, Some(1));

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let warning = eventually("a ValidationFailed Event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ValidationFailed"))
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.unwrap_or_default().contains("$.pool.max"));

    let fix = json!({"spec": {"environments": [
        {"name": "development"},
        {"name": "production", "overrides": {"pool": {"max": 50}}},
    ]}});
    entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix the entry");
    let condition = validated_for_generation(&entries, "payments", 2).await;
    assert_eq!(condition.status, "True", "{condition:?}");
    assert_eq!(
        condition.message,
        "every environment (development, production) satisfies spec.schema"
    );
}

#[tokio::test]
async fn an_invalid_schema_and_a_schema_from_a_config_map_are_reported() {
    let (client, ns) = fresh_namespace("schema-sources").await;
    let _operator = Operator::start(&ns);
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);

    let mut broken = entry(&ns, json!({}));
    broken.spec.schema =
        Some(json!({"type": "object", "properties": {"pool": {"type": "strnig"}}}));
    entries
        .create(&PostParams::default(), &broken)
        .await
        .expect("create entry");
    let condition = validated_for_generation(&entries, "payments", 1).await;
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
    entries
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(&by_reference),
        )
        .await
        .expect("point at a ConfigMap");
    let condition = validated_for_generation(&entries, "payments", 2).await;
    assert_eq!(condition.reason, "SchemaNotFound", "{condition:?}");

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let schemas: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "schemas", "labels": {"config.summit.io/schema": "true"}},
        "data": {"payments.yaml": "type: object\nproperties: {pool: {properties: {max: {maximum: 5}}}}\n"},
    }))
    .expect("config map");
    config_maps
        .create(&PostParams::default(), &schemas)
        .await
        .expect("create schemas");
    let message = eventually("the referenced schema to be used", WAIT, || async {
        let entry = entries.get("payments").await.ok()?;
        let condition = find_condition(&entry.status?.conditions, CONDITION_VALIDATED)?.clone();
        (condition.reason == "SchemaViolation").then_some(condition.message)
    })
    .await;
    assert!(
        message.contains("ConfigMap schemas key \"payments.yaml\"")
            && message.contains("$.pool.max: 10"),
        "{message}"
    );
}

#[tokio::test]
async fn every_controller_reports_its_observed_generation() {
    let (client, ns) = fresh_namespace("observed-generation").await;
    let _operator = Operator::start(&ns);

    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    entries
        .create(&PostParams::default(), &entry(&ns, json!({})))
        .await
        .expect("entry");

    let changes: Api<ConfigChange> = Api::namespaced(client.clone(), &ns);
    let change: ConfigChange = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigChange",
        "metadata": {"name": "to-staging"},
        "spec": {
            "configEntry": "payments",
            "environment": "staging",
            "patch": {"pool": {"max": 20}},
            "message": "try it in staging",
            "requestedBy": "admin",
        },
    }))
    .expect("change");
    changes
        .create(&PostParams::default(), &change)
        .await
        .expect("change");

    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
    let policy: SecretRotationPolicy = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "SecretRotationPolicy",
        "metadata": {"name": "db"},
        "spec": {
            "provider": "InCluster",
            "secretId": "db",
            "rotationInterval": "1d",
            "gracePeriod": "2d",
            "target": {"name": "db"},
        },
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy");

    let checks: Api<DriftCheck> = Api::namespaced(client.clone(), &ns);
    let check: DriftCheck = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "DriftCheck",
        "metadata": {"name": "all"},
        "spec": {"interval": "1m"},
    }))
    .expect("check");
    checks
        .create(&PostParams::default(), &check)
        .await
        .expect("check");

    let entry = validated_for_generation(&entries, "payments", 1).await;
    assert_eq!(entry.status, "True", "{entry:?}");
    let change = validated_for_generation(&changes, "to-staging", 1).await;
    assert_eq!(change.reason, "EnvironmentNotFound", "{change:?}");
    assert!(
        change.message.contains("no environment \"staging\""),
        "{}",
        change.message
    );
    let policy = validated_for_generation(&policies, "db", 1).await;
    assert_eq!(policy.reason, "InvalidSchedule", "{policy:?}");
    let check = validated_for_generation(&checks, "all", 1).await;
    assert_eq!(check.status, "True", "{check:?}");
}

#[tokio::test]
async fn a_config_map_the_entry_does_not_own_is_never_taken_over() {
    let (client, ns) = fresh_namespace("not-owned").await;
    let _operator = Operator::start(&ns);
    // Somebody's ConfigMap, under the name the entry's development environment targets.
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "payments-development"},
        "data": {"owner": "somebody else"},
    }))
    .expect("config map");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    config_maps
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create a ConfigMap by hand");
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    entries
        .create(&PostParams::default(), &entry(&ns, json!({})))
        .await
        .expect("create entry");
    let message = eventually("development to say why", WAIT, || async {
        let status = entries.get("payments").await.ok()?.status?;
        let development = status
            .environments
            .iter()
            .find(|e| e.name == "development")?;
        development
            .message
            .clone()
            .filter(|m| m.contains("belongs to nobody in summit-config"))
    })
    .await;
    assert!(message.contains("payments-development"), "{message}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let degraded = eventually("a Degraded Event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Degraded"))
    })
    .await;
    assert_eq!(degraded.type_.as_deref(), Some("Warning"));
    let note = degraded.note.unwrap_or_default();
    assert!(
        note.starts_with("development: ") && note.contains("belongs to nobody in summit-config"),
        "{note}"
    );
    // Production, whose target is free, is projected as always.
    eventually("production's ConfigMap", WAIT, || async {
        config_maps.get_opt("payments-production").await.ok()?
    })
    .await;
    let untouched = config_maps
        .get("payments-development")
        .await
        .expect("their ConfigMap");
    assert_eq!(
        untouched.data.expect("data"),
        std::collections::BTreeMap::from([("owner".to_owned(), "somebody else".to_owned())])
    );
}

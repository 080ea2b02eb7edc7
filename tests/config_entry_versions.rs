//! ConfigEntry against the real apiserver, PostgreSQL and Consul: versions are
//! recorded once per content change, projected per environment, and nothing is
//! written when nothing changed or when any environment is invalid.

mod support;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_VALIDATED, ConfigEntry, DeletionPolicy, EnvironmentPhase,
};
use summit_config::core::resolve::sha256_hex;
use support::{
    Operator, Tenant, WAIT, assert_reason, column_of, condition, config_json, consul_get,
    count_rows, create, delete, deployment, environment_status, eventually, exists, finish_rollout,
    gone, merge, observed, rows_of, setup, wait_for, with_fields,
};

/// Entry `payments` with `spec`, and a config id of the test's own.
fn payments_with(s: &Tenant, spec: Value) -> ConfigEntry {
    support::entry(
        "payments",
        with_fields(json!({"configId": s.config_id()}), spec),
    )
}

/// `payments` with a schema (`pool.max` at most 100), a development and a production
/// that overrides the pool and renders YAML.
fn payments(s: &Tenant) -> ConfigEntry {
    payments_with(
        s,
        json!({
            "schema": {"type": "object", "properties": {"pool": {"properties": {"max": {"maximum": 100}}}}},
            "data": {"host": "db", "pool": {"max": 10}},
            "environments": [
                {"name": "development"},
                {"name": "production", "overrides": {"pool": {"max": 50}}, "configMap": {"format": "Yaml"}},
            ],
        }),
    )
}

/// A namespace, an operator watching it, and [`payments`] converged on its first
/// generation.
async fn setup_payments(test: &str) -> (Tenant, Operator) {
    let (s, operator) = setup(test).await;
    create(&s.entries(), &payments(&s)).await;
    converged(&s, 1).await;
    (s, operator)
}

/// Waits until `payments` reports generation `generation`, and returns it.
async fn converged(s: &Tenant, generation: i64) -> ConfigEntry {
    observed(&s.entries(), "payments", generation).await
}

/// Merge-patches `payments` with `patch`.
async fn edit(s: &Tenant, patch: Value) {
    merge(&s.entries(), "payments", patch).await;
}

/// Waits until `payments` reports `generation`, refused for `reason` with `text` in the
/// message, with nothing recorded.
async fn refused_unrecorded(s: &Tenant, generation: i64, reason: &str, text: &str) {
    let validated =
        condition(&converged(s, generation).await, CONDITION_VALIDATED).expect("Validated");
    assert_eq!(count_rows("config_versions", &s.config_id()).await, 0);
    assert_reason(&validated, reason, text);
}

/// The resource versions of both projected ConfigMaps.
async fn config_map_versions(s: &Tenant) -> Vec<Option<String>> {
    let mut versions = Vec::new();
    for name in ["payments-development", "payments-production"] {
        let config_map = s.config_maps().get(name).await.expect(name);
        versions.push(config_map.metadata.resource_version);
    }
    versions
}

#[tokio::test]
async fn versions_are_recorded_once_per_content_change_and_projected() {
    let (s, _operator) = setup_payments("versions").await;
    let config_id = s.config_id();
    let entry = converged(&s, 1).await;
    let status = entry.status.clone().expect("status");
    assert_eq!(status.latest_version, Some(1), "{status:?}");
    assert_eq!(
        status.summary.as_deref(),
        Some("development=v1 production=v1")
    );
    let ready = condition(&entry, CONDITION_READY).expect("Ready");
    assert_eq!(ready.status, "True", "{ready:?}");

    // PostgreSQL: the version and its audit rows.
    assert_eq!(count_rows("config_versions", &config_id).await, 1);
    assert_eq!(
        count_rows("config_audit", &config_id).await,
        4,
        "one row for the claim on the config id, one for the version, one per environment applied"
    );
    let applied: Vec<(String, i32)> = rows_of(
        "SELECT environment, version FROM config_applied_state WHERE config_id = $1 ORDER BY environment",
        &config_id,
    )
    .await;
    assert_eq!(
        applied,
        [("development".to_owned(), 1), ("production".to_owned(), 1)]
    );

    // Consul: latest, versions/1 and applied/{environment}.
    let prefix = format!("summit/config/{config_id}");
    let (latest, _) = consul_get(&format!("{prefix}/latest"))
        .await
        .expect("latest in Consul");
    assert_eq!(latest["version"], 1);
    assert!(consul_get(&format!("{prefix}/versions/1")).await.is_some());
    let (production, _) = consul_get(&format!("{prefix}/applied/production"))
        .await
        .expect("applied");
    assert_eq!(production["version"], 1);

    // The ConfigMaps hold each environment's resolved content.
    let config_maps = s.config_maps();
    let development = config_maps
        .get("payments-development")
        .await
        .expect("development ConfigMap");
    assert_eq!(
        config_json(&development),
        Some(json!({"host": "db", "pool": {"max": 10}}))
    );
    let production = config_maps
        .get("payments-production")
        .await
        .expect("production ConfigMap");
    assert_eq!(
        production.data.as_ref().unwrap()["config.yaml"],
        "host: db\npool:\n  max: 50\n"
    );
    let annotations = production.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["config.summit.io/version"], "1");

    // An edit to the content records version 2.
    edit(
        &s,
        json!({"spec": {"data": {"host": "db2", "pool": {"max": 10}}}}),
    )
    .await;
    let entry = converged(&s, 2).await;
    assert_eq!(entry.status.unwrap().latest_version, Some(2));
    assert_eq!(count_rows("config_versions", &config_id).await, 2);
    let development = config_maps.get("payments-development").await.unwrap();
    assert!(development.data.unwrap()["config.json"].contains("db2"));

    // An edit that changes no content (the description) writes nothing anywhere.
    let (_, consul_index) = consul_get(&format!("{prefix}/latest")).await.unwrap();
    let config_maps_before = config_map_versions(&s).await;
    let audit_before = count_rows("config_audit", &config_id).await;
    edit(&s, json!({"spec": {"description": "only words"}})).await;
    converged(&s, 3).await;
    assert_eq!(count_rows("config_versions", &config_id).await, 2);
    assert_eq!(count_rows("config_audit", &config_id).await, audit_before);
    assert_eq!(
        consul_get(&format!("{prefix}/latest")).await.unwrap().1,
        consul_index
    );
    assert_eq!(config_map_versions(&s).await, config_maps_before);
}

#[tokio::test]
async fn a_violation_in_one_environment_changes_nothing_anywhere() {
    let (s, _operator) = setup_payments("one-env-invalid").await;
    let before = config_map_versions(&s).await;

    edit(
        &s,
        json!({"spec": {"data": {"host": "db", "pool": {"max": 20}}, "environments": [
            {"name": "development"},
            {"name": "production", "overrides": {"pool": {"max": 500}}, "configMap": {"format": "Yaml"}},
        ]}}),
    )
    .await;
    let entry = converged(&s, 2).await;
    let validated = condition(&entry, CONDITION_VALIDATED).unwrap();
    assert_eq!(validated.status, "False");
    assert!(
        validated.message.contains(
            "environment \"production\": $.pool.max: 500 is greater than the maximum of 100"
        ),
        "{}",
        validated.message
    );
    let production = environment_status(&entry, "production").unwrap();
    assert_eq!(production.phase, Some(EnvironmentPhase::Invalid));
    assert_eq!(production.version, Some(1), "the live version stays");
    assert_eq!(
        environment_status(&entry, "development").unwrap().version,
        Some(1),
        "a valid environment does not move alone"
    );

    assert_eq!(count_rows("config_versions", &s.config_id()).await, 1);
    assert_eq!(
        config_map_versions(&s).await,
        before,
        "no ConfigMap was touched"
    );
}

#[tokio::test]
async fn a_projected_config_map_edited_or_deleted_by_hand_is_repaired() {
    let (s, _operator) = setup_payments("repair").await;
    // Content longer than the cache keeps verbatim, so it is cached as its digest.
    edit(&s, json!({"spec": {"data": {"notes": "n".repeat(100)}}})).await;
    converged(&s, 2).await;
    let config_maps = s.config_maps();
    let original = config_maps
        .get("payments-development")
        .await
        .unwrap()
        .data
        .unwrap();
    let repaired = |c: &ConfigMap| c.data.as_ref() == Some(&original);

    let tamper = json!({"data": {"config.json": "{\"host\": \"evil\"}", "injected": "x"}});
    merge(&config_maps, "payments-development", tamper).await;
    let what = "the edited ConfigMap to be repaired";
    wait_for(&config_maps, "payments-development", what, repaired).await;

    // The digest the cache keeps of the approved content, written in its place.
    let content = &original["config.json"];
    assert!(content.len() > 64, "long enough to be cached as a digest");
    let digest = format!("sha256:{}", sha256_hex(content.as_bytes()));
    let forged = json!({"data": {"config.json": digest}});
    merge(&config_maps, "payments-development", forged).await;
    let what = "the ConfigMap holding a forged digest to be repaired";
    wait_for(&config_maps, "payments-development", what, repaired).await;

    delete(&config_maps, "payments-development").await;
    let what = "the deleted ConfigMap to come back";
    wait_for(&config_maps, "payments-development", what, repaired).await;
}

#[tokio::test]
async fn an_environment_that_needs_approval_waits_and_keeps_nothing_live() {
    let (s, _operator) = setup("pending").await;
    let mut spec = payments(&s);
    spec.spec.environments[1].approval =
        Some(serde_json::from_value(json!({"requiredApprovals": 2})).unwrap());
    create(&s.entries(), &spec).await;
    let entry = converged(&s, 1).await;
    let production = environment_status(&entry, "production").unwrap();
    assert_eq!(production.phase, Some(EnvironmentPhase::PendingApproval));
    assert_eq!(production.pending_version, Some(1));
    assert_eq!(production.version, None);
    assert_eq!(
        entry.status.as_ref().unwrap().summary.as_deref(),
        Some("development=v1 production=none (v1 pending)")
    );
    assert!(!exists(&s.config_maps(), "payments-production").await);
    assert!(exists(&s.config_maps(), "payments-development").await);
}

#[tokio::test]
async fn hostile_content_is_refused_or_stored_verbatim() {
    let (s, _operator) = setup("hostile-content").await;
    let config_id = s.config_id();

    // Over the ConfigMap limit: refused before anything is recorded.
    let big = payments_with(
        &s,
        json!({"data": {"blob": "x".repeat(1_100_000)}, "environments": [{"name": "development"}]}),
    );
    create(&s.entries(), &big).await;
    refused_unrecorded(&s, 1, "RenderFailed", "ConfigMaps hold at most 1048576").await;

    // A schema that is not a JSON Schema: refused.
    edit(
        &s,
        json!({"spec": {"data": {"blob": null, "a": 1}, "schema": {"type": "objekt"}}}),
    )
    .await;
    refused_unrecorded(&s, 2, "InvalidSchema", "").await;

    // SQL-shaped strings are data like any other, stored exactly as written.
    let hostile = "'); DROP TABLE config_versions; --";
    edit(
        &s,
        json!({"spec": {"schema": null, "data": {"a": null, "name": hostile}}}),
    )
    .await;
    converged(&s, 3).await;
    let stored: Vec<Value> = column_of(
        "SELECT config FROM config_versions WHERE config_id = $1",
        &config_id,
    )
    .await;
    assert_eq!(stored, [json!({"name": hostile})]);
}

#[tokio::test]
async fn env_and_yaml_formats_render_as_asked() {
    let (s, _operator) = setup("formats").await;
    let spec = payments_with(
        &s,
        json!({
            "data": {"featureA": true, "pool": {"max": 10}},
            "environments": [{"name": "development", "configMap": {"name": "flags", "format": "Env"}}],
        }),
    );
    create(&s.entries(), &spec).await;
    converged(&s, 1).await;
    let flags = s.config_maps().get("flags").await.expect("flags ConfigMap");
    let data = flags.data.unwrap();
    assert_eq!(data["FEATUREA"], "true");
    assert_eq!(data["POOL_MAX"], "10");
}

#[tokio::test]
async fn a_restart_target_rolls_once_per_content_change() {
    let (s, _operator) = setup("restart").await;
    let deployments: Api<Deployment> = s.api();
    create(&deployments, &deployment("payments-api")).await;
    let spec = payments_with(
        &s,
        json!({
            "data": {"pool": {"max": 10}},
            "environments": [{"name": "production", "restartTargets": [{"kind": "Deployment", "name": "payments-api"}]}],
        }),
    );
    create(&s.entries(), &spec).await;
    let checksum_of = |deployment: &Deployment| {
        deployment
            .spec
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get("checksum.config.summit.io/payments")
            .cloned()
    };
    let first = wait_for(
        &deployments,
        "payments-api",
        "the deployment to carry the checksum",
        |d| checksum_of(d).is_some(),
    )
    .await;
    let live = converged(&s, 1).await.status.unwrap().environments[0]
        .checksum
        .clone();
    assert_eq!(
        checksum_of(&first),
        live,
        "the annotation is the live checksum"
    );
    // This environment has no controller-manager or kubelet: the test plays their part
    // and reports the rollout finished, and status follows.
    assert_eq!(consumers(&s).await, (Some(0), Some(1)), "rolling");
    rolled_out(&s, &deployments).await;

    // A content change rolls it exactly once.
    edit(&s, json!({"spec": {"data": {"pool": {"max": 20}}}})).await;
    let second = wait_for(
        &deployments,
        "payments-api",
        "the deployment to roll",
        |d| checksum_of(d).is_some_and(|sum| Some(sum) != checksum_of(&first)),
    )
    .await;
    assert_eq!(
        second.metadata.generation,
        first.metadata.generation.map(|g| g + 1),
        "one new generation per content change"
    );
    eventually("the new content's rollout to be pending", WAIT, || async {
        (consumers(&s).await == (Some(0), Some(1))).then_some(())
    })
    .await;
    rolled_out(&s, &deployments).await;

    // An edit that changes no content does not roll it.
    edit(&s, json!({"spec": {"description": "words only"}})).await;
    converged(&s, 3).await;
    let after = deployments.get("payments-api").await.unwrap();
    assert_eq!(after.metadata.generation, second.metadata.generation);
}

/// The production environment's `(consumersReady, consumersTotal)`.
async fn consumers(s: &Tenant) -> (Option<i32>, Option<i32>) {
    let entry = s.entries().get("payments").await.expect("read entry");
    let status = entry.status.unwrap_or_default();
    status
        .environments
        .first()
        .map_or((None, None), |e| (e.consumers_ready, e.consumers_total))
}

/// Reports the rollout of `payments-api` finished, and waits until status counts the
/// rolled-out consumer.
async fn rolled_out(s: &Tenant, deployments: &Api<Deployment>) {
    finish_rollout(deployments, "payments-api").await;
    eventually("status to count the rolled-out consumer", WAIT, || async {
        (consumers(s).await == (Some(1), Some(1))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_an_entry_removes_its_projections_and_its_backend_state_on_request() {
    let (s, _operator) = setup("deletion").await;
    let config_id = s.config_id();
    let mut spec = payments(&s);
    spec.spec.deletion_policy = Some(DeletionPolicy::Delete);
    create(&s.entries(), &spec).await;
    converged(&s, 1).await;
    let prefix = format!("summit/config/{config_id}");
    assert!(
        consul_get(&format!("{prefix}/applied/development"))
            .await
            .is_some()
    );

    delete(&s.entries(), "payments").await;
    gone(&s.entries(), "payments").await;
    for name in ["payments-development", "payments-production"] {
        assert!(
            !exists(&s.config_maps(), name).await,
            "{name} was left behind"
        );
    }
    assert!(consul_get(&format!("{prefix}/latest")).await.is_none());
    assert!(
        consul_get(&format!("{prefix}/applied/development"))
            .await
            .is_none()
    );
    assert_eq!(count_rows("config_applied_state", &config_id).await, 0);
    assert_eq!(
        count_rows("config_versions", &config_id).await,
        1,
        "history stays"
    );
}

#[tokio::test]
async fn a_removed_environment_takes_its_config_map_with_it() {
    let (s, _operator) = setup_payments("removed-environment").await;
    let config_maps = s.config_maps();
    assert!(exists(&config_maps, "payments-production").await);

    edit(
        &s,
        json!({"spec": {"environments": [{"name": "development"}]}}),
    )
    .await;
    gone(&config_maps, "payments-production").await;
    assert!(exists(&config_maps, "payments-development").await);
}

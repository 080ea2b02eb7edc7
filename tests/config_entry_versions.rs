//! ConfigEntry against the real apiserver, PostgreSQL and Consul: versions are
//! recorded once per content change, projected per environment, and nothing is
//! written when nothing changed or when any environment is invalid.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_VALIDATED, ConfigEntry, EnvironmentPhase, find_condition,
};
use support::{Operator, consul_get, eventually, fresh_namespace, postgres};

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    client: Client,
    ns: String,
    entries: Api<ConfigEntry>,
    config_maps: Api<ConfigMap>,
    _operator: Operator,
}

async fn setup(test: &str) -> Setup {
    let (client, ns) = fresh_namespace(test).await;
    let operator = Operator::start(&ns);
    Setup {
        entries: Api::namespaced(client.clone(), &ns),
        config_maps: Api::namespaced(client.clone(), &ns),
        client,
        ns,
        _operator: operator,
    }
}

/// An entry whose config id is unique to the test's namespace, so tests share the
/// backends without meeting.
fn entry(ns: &str, spec: Value) -> ConfigEntry {
    let mut spec = spec;
    spec["configId"] = json!(format!("tests/{ns}"));
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": spec,
    }))
    .expect("entry")
}

fn payments(ns: &str) -> ConfigEntry {
    entry(
        ns,
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

/// Waits until the entry reports its current generation with `latestVersion` set.
async fn converged(entries: &Api<ConfigEntry>, generation: i64) -> ConfigEntry {
    eventually(
        &format!("payments to converge on generation {generation}"),
        WAIT,
        || async {
            let entry = entries.get("payments").await.ok()?;
            let status = entry.status.as_ref()?;
            (status.observed_generation == Some(generation)).then_some(entry.clone())
        },
    )
    .await
}

async fn count(pool: &sqlx::PgPool, sql: &str, config_id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(config_id)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn versions_are_recorded_once_per_content_change_and_projected() {
    let s = setup("versions").await;
    let config_id = format!("tests/{}", s.ns);
    s.entries
        .create(&PostParams::default(), &payments(&s.ns))
        .await
        .expect("create");

    let entry = converged(&s.entries, 1).await;
    let status = entry.status.clone().expect("status");
    assert_eq!(status.latest_version, Some(1), "{status:?}");
    assert_eq!(
        status.summary.as_deref(),
        Some("development=v1 production=v1")
    );
    let ready = find_condition(&status.conditions, CONDITION_READY).expect("Ready");
    assert_eq!(ready.status, "True", "{ready:?}");

    // PostgreSQL: the version and its audit rows.
    let pool = postgres().await;
    let versions = count(
        &pool,
        "SELECT count(*) FROM config_versions WHERE config_id = $1",
        &config_id,
    )
    .await;
    assert_eq!(versions, 1);
    let audit = count(
        &pool,
        "SELECT count(*) FROM config_audit WHERE config_id = $1",
        &config_id,
    )
    .await;
    assert_eq!(
        audit, 4,
        "one row for the claim on the config id, one for the version, one per environment applied"
    );
    let applied: Vec<(String, i32)> = sqlx::query_as(
        "SELECT environment, version FROM config_applied_state WHERE config_id = $1 ORDER BY environment",
    )
    .bind(&config_id)
    .fetch_all(&pool)
    .await
    .expect("applied state");
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
    let development = s
        .config_maps
        .get("payments-development")
        .await
        .expect("development ConfigMap");
    let json: Value =
        serde_json::from_str(&development.data.as_ref().unwrap()["config.json"]).unwrap();
    assert_eq!(json, json!({"host": "db", "pool": {"max": 10}}));
    let production = s
        .config_maps
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
    let edit = json!({"spec": {"data": {"host": "db2", "pool": {"max": 10}}}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    let entry = converged(&s.entries, 2).await;
    assert_eq!(entry.status.unwrap().latest_version, Some(2));
    let versions = count(
        &pool,
        "SELECT count(*) FROM config_versions WHERE config_id = $1",
        &config_id,
    )
    .await;
    assert_eq!(versions, 2);
    let development = s.config_maps.get("payments-development").await.unwrap();
    assert!(development.data.unwrap()["config.json"].contains("db2"));

    // An edit that changes no content (the description) writes nothing anywhere.
    let (_, consul_index) = consul_get(&format!("{prefix}/latest")).await.unwrap();
    let config_map_version = s
        .config_maps
        .get("payments-development")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let audit_before = count(
        &pool,
        "SELECT count(*) FROM config_audit WHERE config_id = $1",
        &config_id,
    )
    .await;
    let edit = json!({"spec": {"description": "only words"}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit the description");
    converged(&s.entries, 3).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_versions WHERE config_id = $1",
            &config_id
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_audit WHERE config_id = $1",
            &config_id
        )
        .await,
        audit_before
    );
    assert_eq!(
        consul_get(&format!("{prefix}/latest")).await.unwrap().1,
        consul_index
    );
    assert_eq!(
        s.config_maps
            .get("payments-development")
            .await
            .unwrap()
            .metadata
            .resource_version,
        config_map_version
    );
}

#[tokio::test]
async fn a_violation_in_one_environment_changes_nothing_anywhere() {
    let s = setup("one-env-invalid").await;
    let config_id = format!("tests/{}", s.ns);
    s.entries
        .create(&PostParams::default(), &payments(&s.ns))
        .await
        .expect("create");
    converged(&s.entries, 1).await;
    let before: Vec<Option<String>> = futures::future::join_all(
        ["payments-development", "payments-production"].map(|name| async {
            s.config_maps
                .get(name)
                .await
                .unwrap()
                .metadata
                .resource_version
        }),
    )
    .await;

    let edit = json!({"spec": {"data": {"host": "db", "pool": {"max": 20}}, "environments": [
        {"name": "development"},
        {"name": "production", "overrides": {"pool": {"max": 500}}, "configMap": {"format": "Yaml"}},
    ]}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    let entry = converged(&s.entries, 2).await;
    let status = entry.status.unwrap();
    let validated = find_condition(&status.conditions, CONDITION_VALIDATED).unwrap();
    assert_eq!(validated.status, "False");
    assert!(
        validated.message.contains(
            "environment \"production\": $.pool.max: 500 is greater than the maximum of 100"
        ),
        "{}",
        validated.message
    );
    let production = status
        .environments
        .iter()
        .find(|e| e.name == "production")
        .unwrap();
    assert_eq!(production.phase, Some(EnvironmentPhase::Invalid));
    assert_eq!(production.version, Some(1), "the live version stays");
    let development = status
        .environments
        .iter()
        .find(|e| e.name == "development")
        .unwrap();
    assert_eq!(
        development.version,
        Some(1),
        "a valid environment does not move alone"
    );

    let pool = postgres().await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_versions WHERE config_id = $1",
            &config_id
        )
        .await,
        1
    );
    let after: Vec<Option<String>> = futures::future::join_all(
        ["payments-development", "payments-production"].map(|name| async {
            s.config_maps
                .get(name)
                .await
                .unwrap()
                .metadata
                .resource_version
        }),
    )
    .await;
    assert_eq!(before, after, "no ConfigMap was touched");
}

#[tokio::test]
async fn a_projected_config_map_edited_or_deleted_by_hand_is_repaired() {
    let s = setup("repair").await;
    s.entries
        .create(&PostParams::default(), &payments(&s.ns))
        .await
        .expect("create");
    converged(&s.entries, 1).await;
    let original = s
        .config_maps
        .get("payments-development")
        .await
        .unwrap()
        .data
        .unwrap();

    let tamper = json!({"data": {"config.json": "{\"host\": \"evil\"}", "injected": "x"}});
    s.config_maps
        .patch(
            "payments-development",
            &PatchParams::default(),
            &Patch::Merge(&tamper),
        )
        .await
        .expect("tamper");
    eventually("the edited ConfigMap to be repaired", WAIT, || async {
        let data = s.config_maps.get("payments-development").await.ok()?.data?;
        (data == original).then_some(())
    })
    .await;

    s.config_maps
        .delete("payments-development", &Default::default())
        .await
        .expect("delete");
    eventually("the deleted ConfigMap to come back", WAIT, || async {
        let data = s.config_maps.get("payments-development").await.ok()?.data?;
        (data == original).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_environment_that_needs_approval_waits_and_keeps_nothing_live() {
    let s = setup("pending").await;
    let mut spec = payments(&s.ns);
    spec.spec.environments[1].approval =
        Some(serde_json::from_value(json!({"requiredApprovals": 2})).unwrap());
    s.entries
        .create(&PostParams::default(), &spec)
        .await
        .expect("create");
    let entry = converged(&s.entries, 1).await;
    let status = entry.status.unwrap();
    let production = status
        .environments
        .iter()
        .find(|e| e.name == "production")
        .unwrap();
    assert_eq!(production.phase, Some(EnvironmentPhase::PendingApproval));
    assert_eq!(production.pending_version, Some(1));
    assert_eq!(production.version, None);
    assert_eq!(
        status.summary.as_deref(),
        Some("development=v1 production=none (v1 pending)")
    );
    assert!(
        s.config_maps
            .get_opt("payments-production")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.config_maps
            .get_opt("payments-development")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn hostile_content_is_refused_or_stored_verbatim() {
    let s = setup("hostile-content").await;
    let config_id = format!("tests/{}", s.ns);

    // Over the ConfigMap limit: refused before anything is recorded.
    let big = entry(
        &s.ns,
        json!({"data": {"blob": "x".repeat(1_100_000)}, "environments": [{"name": "development"}]}),
    );
    s.entries
        .create(&PostParams::default(), &big)
        .await
        .expect("create a large entry");
    let entry = converged(&s.entries, 1).await;
    let validated = find_condition(&entry.status.unwrap().conditions, CONDITION_VALIDATED)
        .cloned()
        .unwrap();
    assert_eq!(validated.reason, "RenderFailed", "{validated:?}");
    assert!(
        validated
            .message
            .contains("ConfigMaps hold at most 1048576"),
        "{}",
        validated.message
    );
    let pool = postgres().await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_versions WHERE config_id = $1",
            &config_id
        )
        .await,
        0
    );

    // A schema that is not a JSON Schema: refused.
    let edit = json!({"spec": {"data": {"blob": null, "a": 1}, "schema": {"type": "objekt"}}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    let entry = converged(&s.entries, 2).await;
    let validated = find_condition(&entry.status.unwrap().conditions, CONDITION_VALIDATED)
        .cloned()
        .unwrap();
    assert_eq!(validated.reason, "InvalidSchema", "{validated:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_versions WHERE config_id = $1",
            &config_id
        )
        .await,
        0
    );

    // SQL-shaped strings are data like any other, stored exactly as written.
    let hostile = "'); DROP TABLE config_versions; --";
    let edit = json!({"spec": {"schema": null, "data": {"a": null, "name": hostile}}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    converged(&s.entries, 3).await;
    let stored: Value =
        sqlx::query_scalar("SELECT config FROM config_versions WHERE config_id = $1")
            .bind(&config_id)
            .fetch_one(&pool)
            .await
            .expect("the version");
    assert_eq!(stored, json!({"name": hostile}));
}

#[tokio::test]
async fn env_and_yaml_formats_render_as_asked() {
    let s = setup("formats").await;
    let spec = entry(
        &s.ns,
        json!({
            "data": {"featureA": true, "pool": {"max": 10}},
            "environments": [{"name": "development", "configMap": {"name": "flags", "format": "Env"}}],
        }),
    );
    s.entries
        .create(&PostParams::default(), &spec)
        .await
        .expect("create");
    converged(&s.entries, 1).await;
    let flags = s.config_maps.get("flags").await.expect("flags ConfigMap");
    let data = flags.data.unwrap();
    assert_eq!(data["FEATUREA"], "true");
    assert_eq!(data["POOL_MAX"], "10");
    let _ = &s.client;
}

#[tokio::test]
async fn a_restart_target_rolls_once_per_content_change() {
    use k8s_openapi::api::apps::v1::Deployment;
    let s = setup("restart").await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "payments-api"},
        "spec": {
            "selector": {"matchLabels": {"app": "payments-api"}},
            "template": {
                "metadata": {"labels": {"app": "payments-api"}},
                "spec": {"containers": [{"name": "api", "image": "registry.invalid/payments:1"}]},
            },
        },
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");

    let spec = entry(
        &s.ns,
        json!({
            "data": {"pool": {"max": 10}},
            "environments": [{"name": "production", "restartTargets": [{"kind": "Deployment", "name": "payments-api"}]}],
        }),
    );
    s.entries
        .create(&PostParams::default(), &spec)
        .await
        .expect("create entry");
    let annotation = "checksum.config.summit.io/payments";
    let checksum_of = |deployment: &Deployment| {
        deployment
            .spec
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(annotation)
            .cloned()
    };
    let first = eventually("the deployment to carry the checksum", WAIT, || async {
        let deployment = deployments.get("payments-api").await.ok()?;
        checksum_of(&deployment).map(|sum| (sum, deployment.metadata.generation))
    })
    .await;
    let live = converged(&s.entries, 1).await.status.unwrap().environments[0]
        .checksum
        .clone();
    assert_eq!(
        Some(first.0.clone()),
        live,
        "the annotation is the live checksum"
    );
    // This environment has no controller-manager or kubelet: the test plays their part
    // and reports the rollout finished, and status follows.
    assert_eq!(consumers(&s.entries).await, (Some(0), Some(1)), "rolling");
    finish_rollout(&deployments, "payments-api").await;
    eventually("status to count the rolled-out consumer", WAIT, || async {
        (consumers(&s.entries).await == (Some(1), Some(1))).then_some(())
    })
    .await;

    // A content change rolls it exactly once.
    let edit = json!({"spec": {"data": {"pool": {"max": 20}}}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    let second = eventually("the deployment to roll", WAIT, || async {
        let deployment = deployments.get("payments-api").await.ok()?;
        let sum = checksum_of(&deployment)?;
        (sum != first.0).then_some((sum, deployment.metadata.generation))
    })
    .await;
    assert_eq!(
        second.1,
        first.1.map(|g| g + 1),
        "one new generation per content change"
    );
    eventually("the new content's rollout to be pending", WAIT, || async {
        (consumers(&s.entries).await == (Some(0), Some(1))).then_some(())
    })
    .await;
    finish_rollout(&deployments, "payments-api").await;
    eventually("status to count the rolled-out consumer", WAIT, || async {
        (consumers(&s.entries).await == (Some(1), Some(1))).then_some(())
    })
    .await;

    // An edit that changes no content does not roll it.
    let edit = json!({"spec": {"description": "words only"}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    converged(&s.entries, 3).await;
    let after = deployments.get("payments-api").await.unwrap();
    assert_eq!(after.metadata.generation, second.1);
}

/// The production environment's `(consumersReady, consumersTotal)`.
async fn consumers(entries: &Api<ConfigEntry>) -> (Option<i32>, Option<i32>) {
    let entry = entries.get("payments").await.expect("read entry");
    let status = entry.status.unwrap_or_default();
    status
        .environments
        .first()
        .map_or((None, None), |e| (e.consumers_ready, e.consumers_total))
}

/// Writes what the deployment controller and kubelet would once every replica runs
/// the newest template.
async fn finish_rollout(deployments: &Api<k8s_openapi::api::apps::v1::Deployment>, name: &str) {
    let deployment = deployments.get(name).await.expect("read deployment");
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation,
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
    }});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("report the rollout");
}

#[tokio::test]
async fn deleting_an_entry_removes_its_projections_and_its_backend_state_on_request() {
    let s = setup("deletion").await;
    let config_id = format!("tests/{}", s.ns);
    let mut spec = payments(&s.ns);
    spec.spec.deletion_policy = Some(summit_config::api::v1alpha1::DeletionPolicy::Delete);
    s.entries
        .create(&PostParams::default(), &spec)
        .await
        .expect("create");
    converged(&s.entries, 1).await;
    let prefix = format!("summit/config/{config_id}");
    assert!(
        consul_get(&format!("{prefix}/applied/development"))
            .await
            .is_some()
    );

    s.entries
        .delete("payments", &Default::default())
        .await
        .expect("delete");
    eventually("the entry to be gone", WAIT, || async {
        s.entries
            .get_opt("payments")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    for name in ["payments-development", "payments-production"] {
        assert!(
            s.config_maps.get_opt(name).await.unwrap().is_none(),
            "{name} was left behind"
        );
    }
    assert!(consul_get(&format!("{prefix}/latest")).await.is_none());
    assert!(
        consul_get(&format!("{prefix}/applied/development"))
            .await
            .is_none()
    );
    let pool = postgres().await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_applied_state WHERE config_id = $1",
            &config_id
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config_versions WHERE config_id = $1",
            &config_id
        )
        .await,
        1,
        "history stays"
    );
}

#[tokio::test]
async fn a_removed_environment_takes_its_config_map_with_it() {
    let s = setup("removed-environment").await;
    s.entries
        .create(&PostParams::default(), &payments(&s.ns))
        .await
        .expect("create");
    converged(&s.entries, 1).await;
    assert!(
        s.config_maps
            .get_opt("payments-production")
            .await
            .unwrap()
            .is_some()
    );

    let edit = json!({"spec": {"environments": [{"name": "development"}]}});
    s.entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    eventually("the production ConfigMap to go", WAIT, || async {
        s.config_maps
            .get_opt("payments-production")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        s.config_maps
            .get_opt("payments-development")
            .await
            .unwrap()
            .is_some()
    );
}

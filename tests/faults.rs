//! Faults with real parts: Consul and PostgreSQL stopped and started under a running
//! operator, and the operator itself killed mid-way. These tests stop services every
//! test shares, so they run one at a time, in a test binary of their own.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_SYNCED, ConfigEntry, find_condition,
};
use support::{Operator, consul_get, eventually, fresh_namespace, postgres};
use tokio::sync::Mutex;

/// One fault at a time: the services are shared by every test in the binary.
static SERIAL: Mutex<()> = Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(60);

fn entry(ns: &str, data: Value, environment: Value) -> ConfigEntry {
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("faults/{ns}"),
            "data": data,
            "environments": [environment],
        },
    }))
    .expect("entry")
}

async fn setup(test: &str) -> (Client, String, Api<ConfigEntry>, Api<ConfigMap>) {
    let (client, ns) = fresh_namespace(test).await;
    (
        client.clone(),
        ns.clone(),
        Api::namespaced(client.clone(), &ns),
        Api::namespaced(client, &ns),
    )
}

async fn condition(entries: &Api<ConfigEntry>, type_: &str) -> Option<(String, String, String)> {
    let entry = entries.get("payments").await.ok()?;
    let found = find_condition(&entry.status?.conditions, type_)?.clone();
    Some((found.status, found.reason, found.message))
}

async fn latest_version(entries: &Api<ConfigEntry>) -> Option<i64> {
    entries.get("payments").await.ok()?.status?.latest_version
}

async fn config_json(config_maps: &Api<ConfigMap>, name: &str) -> Option<Value> {
    let data = config_maps.get(name).await.ok()?.data?;
    serde_json::from_str(data.get("config.json")?).ok()
}

async fn versions(config_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM config_versions WHERE config_id = $1")
        .bind(config_id)
        .fetch_one(&postgres().await)
        .await
        .expect("count versions")
}

#[tokio::test]
async fn consul_down_applying_goes_on_and_consul_catches_up() {
    let _serial = SERIAL.lock().await;
    let (_, ns, entries, config_maps) = setup("consul-down").await;
    let _operator = Operator::start(&ns);
    let prefix = format!("summit/config/faults/{ns}");
    entries
        .create(
            &PostParams::default(),
            &entry(&ns, json!({"v": 1}), json!({"name": "development"})),
        )
        .await
        .expect("create");
    eventually("version 1 in Consul", WAIT, || {
        consul_get_version(&prefix, 1)
    })
    .await;

    let consul = support::stop("consul");
    let edit = json!({"spec": {"data": {"v": 2}}});
    entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    // PostgreSQL records version 2 and status says Consul is behind.
    let (_, reason, message) = eventually("version 2 with Synced=False", WAIT, || async {
        let synced = condition(&entries, CONDITION_SYNCED).await?;
        (synced.0 == "False" && latest_version(&entries).await == Some(2)).then_some(synced)
    })
    .await;
    assert_eq!(reason, "ConsulBehind", "{message}");
    assert_eq!(
        config_json(&config_maps, "payments-development").await,
        Some(json!({"v": 2})),
        "the projection goes on without Consul"
    );

    // A restarted dev agent is empty: every missed version and the applied state return.
    consul.start();
    eventually("Synced=True once Consul is back", WAIT, || async {
        condition(&entries, CONDITION_SYNCED)
            .await
            .filter(|(status, _, _)| status == "True")
    })
    .await;
    for version in [1, 2] {
        assert!(
            consul_get(&format!("{prefix}/versions/{version}"))
                .await
                .is_some(),
            "versions/{version}"
        );
    }
    let (latest, _) = consul_get(&format!("{prefix}/latest"))
        .await
        .expect("latest");
    assert_eq!(latest["version"], 2);
    let (applied, _) = consul_get(&format!("{prefix}/applied/development"))
        .await
        .expect("applied");
    assert_eq!(applied["version"], 2);
}

async fn consul_get_version(prefix: &str, version: i64) -> Option<()> {
    let (latest, _) = consul_get(&format!("{prefix}/latest")).await?;
    (latest["version"] == version).then_some(())
}

#[tokio::test]
async fn postgres_down_nothing_new_is_applied_until_it_returns() {
    let _serial = SERIAL.lock().await;
    let (_, ns, entries, config_maps) = setup("postgres-down").await;
    let _operator = Operator::start(&ns);
    entries
        .create(
            &PostParams::default(),
            &entry(&ns, json!({"v": 1}), json!({"name": "development"})),
        )
        .await
        .expect("create");
    eventually("version 1 live", WAIT, || async {
        config_json(&config_maps, "payments-development")
            .await
            .filter(|c| c == &json!({"v": 1}))
    })
    .await;

    let postgres_down = support::stop("postgres");
    let edit = json!({"spec": {"data": {"v": 2}}});
    entries
        .patch("payments", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit");
    let (_, reason, message) = eventually("Ready=False while PostgreSQL is down", WAIT, || async {
        condition(&entries, CONDITION_READY)
            .await
            .filter(|(status, _, _)| status == "False")
    })
    .await;
    assert_eq!(reason, "PostgresUnavailable", "{message}");
    assert!(message.contains("no new version is recorded"), "{message}");
    assert_eq!(latest_version(&entries).await, Some(1));
    assert_eq!(
        config_json(&config_maps, "payments-development").await,
        Some(json!({"v": 1})),
        "what is applied keeps being served"
    );

    postgres_down.start();
    eventually("version 2 live once PostgreSQL is back", WAIT, || async {
        config_json(&config_maps, "payments-development")
            .await
            .filter(|c| c == &json!({"v": 2}))
    })
    .await;
    // Status is written after the projection: wait for it rather than race it.
    eventually("status to report version 2", WAIT, || async {
        (latest_version(&entries).await == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_operator_killed_after_recording_finishes_the_projection_without_a_second_version() {
    let _serial = SERIAL.lock().await;
    let (client, ns, entries, _) = setup("killed").await;
    // The projection targets a namespace that does not exist yet, so the operator
    // records the version and then cannot project it: the window a crash can hit.
    let target = format!("{ns}-target");
    let operator = Operator::start_with(&ns, &["--allow-target-namespace", &target]);
    let environment =
        json!({"name": "development", "configMap": {"name": "payments", "namespace": target}});
    entries
        .create(
            &PostParams::default(),
            &entry(&ns, json!({"v": 1}), environment),
        )
        .await
        .expect("create");
    let config_id = format!("faults/{ns}");
    eventually("version 1 recorded", WAIT, || async {
        (latest_version(&entries).await == Some(1)).then_some(())
    })
    .await;
    assert_eq!(versions(&config_id).await, 1);
    operator.kill();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let target_namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": target}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &target_namespace)
        .await
        .expect("create target");
    let _operator = Operator::start_with(&ns, &["--allow-target-namespace", &target]);
    let projected: Api<ConfigMap> = Api::namespaced(client, &target);
    eventually(
        "the projection to complete after the restart",
        WAIT,
        || async {
            config_json(&projected, "payments")
                .await
                .filter(|c| c == &json!({"v": 1}))
        },
    )
    .await;
    assert_eq!(
        versions(&config_id).await,
        1,
        "the restart made no second version"
    );
}

#[tokio::test]
async fn consul_refusing_the_operators_token_stops_nothing_else() {
    let _serial = SERIAL.lock().await;
    let (_client, ns, entries, config_maps) = setup("consul-acl").await;
    let bad_token = std::path::PathBuf::from(support::env().var("SUMMIT_ENV_DIR"))
        .join(format!("{ns}-bad-token"));
    std::fs::write(&bad_token, "00000000-0000-0000-0000-000000000000").expect("write a token");
    let _operator = Operator::start_with(
        &ns,
        &["--consul-token-file", bad_token.to_str().expect("a path")],
    );
    entries
        .create(
            &PostParams::default(),
            &entry(&ns, json!({"pool": 1}), json!({"name": "production"})),
        )
        .await
        .expect("create entry");
    // Applied and projected all the same; Consul's refusal is in status.
    eventually("projected", WAIT, || async {
        config_json(&config_maps, "payments-production").await
    })
    .await;
    let (status, reason, message) = eventually("Consul behind", WAIT, || async {
        condition(&entries, CONDITION_SYNCED)
            .await
            .filter(|(status, ..)| status == "False")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ConsulBehind"),
        "{message}"
    );
    assert!(message.contains("403"), "{message}");
    assert!(
        consul_get(&format!("summit/config/faults/{ns}/latest"))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_version_larger_than_consuls_value_limit_is_kept_without_its_content() {
    let _serial = SERIAL.lock().await;
    let (_client, ns, entries, config_maps) = setup("consul-large").await;
    let _operator = Operator::start(&ns);
    // 600 KB of configuration: more than Consul's 512 KiB, less than a ConfigMap's 1 MiB.
    let large: serde_json::Map<String, Value> = (0..600)
        .map(|i| (format!("key-{i:04}"), json!("x".repeat(1000))))
        .collect();
    entries
        .create(
            &PostParams::default(),
            &entry(&ns, Value::Object(large), json!({"name": "production"})),
        )
        .await
        .expect("create entry");
    eventually("projected", WAIT, || async {
        config_json(&config_maps, "payments-production").await
    })
    .await;
    let (status, _, message) = eventually("synced", WAIT, || async {
        condition(&entries, CONDITION_SYNCED)
            .await
            .filter(|(_, reason, _)| reason == "ConsulContentOmitted")
    })
    .await;
    assert_eq!(status, "True", "{message}");
    assert!(
        message.contains("Consul holds its checksum but not its content"),
        "{message}"
    );
    let (version, _) = consul_get(&format!("summit/config/faults/{ns}/versions/1"))
        .await
        .expect("the version's key");
    assert!(
        version.get("snapshot").is_none(),
        "the content is in Consul"
    );
    assert_eq!(version["version"], 1);
    assert!(version["contentOmitted"].is_string());
    let (applied, _) = consul_get(&format!("summit/config/faults/{ns}/applied/production"))
        .await
        .expect("the applied key");
    assert_eq!(applied["version"], 1);
    assert_eq!(
        condition(&entries, CONDITION_READY)
            .await
            .map(|c| c.0)
            .as_deref(),
        Some("True")
    );
}

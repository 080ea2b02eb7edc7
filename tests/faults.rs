//! Faults with real parts: Consul and PostgreSQL stopped and started under a running
//! operator, and the operator itself killed mid-way. These tests stop services every
//! test shares, so they run one at a time, in a test binary of their own.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{CONDITION_READY, CONDITION_SYNCED, Condition, ConfigEntry};
use support::{
    Operator, Tenant, WAIT, assert_reason, condition, config_json, consul_get, count_rows, create,
    entry, eventually, merge, projected, setup, stop, wait_for, wait_within,
};
use tokio::sync::Mutex;

/// One fault at a time: the services are shared by every test in the binary.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long the operator may take to notice a backend went away, or to catch up once it
/// is back: its requests time out first, and it retries on a backoff that doubled with
/// each failure in between.
const THROUGH_A_FAULT: Duration = Duration::from_secs(60);

/// Entry `payments` of `data` with one `environment`, under a config id of the test's
/// own.
fn payments(s: &Tenant, data: Value, environment: Value) -> ConfigEntry {
    let spec = json!({
        "configId": config_id(s),
        "data": data,
        "environments": [environment],
    });
    entry("payments", spec)
}

fn config_id(s: &Tenant) -> String {
    format!("faults/{}", s.ns)
}

/// Waits, for at most `limit`, until `payments` has a condition `type_` for which
/// `ready` holds, and returns it.
async fn payments_condition(
    s: &Tenant,
    type_: &str,
    limit: Duration,
    ready: impl Fn(&Condition) -> bool,
) -> Condition {
    let what = format!("payments' {type_} condition");
    let entry = wait_within(limit, &s.entries(), "payments", &what, |e| {
        condition(e, type_).is_some_and(|c| ready(&c))
    })
    .await;
    condition(&entry, type_).expect(type_)
}

/// Changes `payments`' data to `{"v": 2}`, which makes version 2.
async fn edit_to_version_2(s: &Tenant) {
    merge(
        &s.entries(),
        "payments",
        json!({"spec": {"data": {"v": 2}}}),
    )
    .await;
}

async fn latest_version(s: &Tenant) -> Option<i64> {
    s.entries()
        .get("payments")
        .await
        .ok()?
        .status?
        .latest_version
}

/// Waits, for at most `limit`, until `payments` reports version `version` as its latest.
async fn recorded(s: &Tenant, version: i64, limit: Duration) {
    eventually(&format!("version {version} recorded"), limit, || async {
        (latest_version(s).await == Some(version)).then_some(())
    })
    .await;
}

/// The JSON projected into `name` right now.
async fn config_json_now(config_maps: &Api<ConfigMap>, name: &str) -> Option<Value> {
    config_json(&config_maps.get(name).await.ok()?)
}

#[tokio::test]
async fn consul_down_applying_goes_on_and_consul_catches_up() {
    let _serial = SERIAL.lock().await;
    let (s, _operator) = setup("consul-down").await;
    let prefix = format!("summit/config/{}", config_id(&s));
    let development = json!({"name": "development"});
    create(&s.entries(), &payments(&s, json!({"v": 1}), development)).await;
    eventually("version 1 in Consul", WAIT, || async {
        let (latest, _) = consul_get(&format!("{prefix}/latest")).await?;
        (latest["version"] == 1).then_some(())
    })
    .await;

    let consul = stop("consul");
    edit_to_version_2(&s).await;
    // PostgreSQL records version 2 and status says Consul is behind.
    let behind = |e: &ConfigEntry| condition(e, CONDITION_SYNCED).filter(|c| c.status == "False");
    let what = "version 2 with Synced=False";
    let entry = wait_within(THROUGH_A_FAULT, &s.entries(), "payments", what, |e| {
        e.status.as_ref().and_then(|s| s.latest_version) == Some(2) && behind(e).is_some()
    })
    .await;
    let synced = behind(&entry).expect("Synced");
    assert_eq!(synced.reason, "ConsulBehind", "{}", synced.message);
    assert_eq!(
        config_json_now(&s.config_maps(), "payments-development").await,
        Some(json!({"v": 2})),
        "the projection goes on without Consul"
    );

    // A restarted dev agent is empty: every missed version and the applied state return.
    consul.end();
    payments_condition(&s, CONDITION_SYNCED, THROUGH_A_FAULT, |c| {
        c.status == "True"
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

#[tokio::test]
async fn postgres_down_nothing_new_is_applied_until_it_returns() {
    let _serial = SERIAL.lock().await;
    let (s, _operator) = setup("postgres-down").await;
    let development = json!({"name": "development"});
    create(&s.entries(), &payments(&s, json!({"v": 1}), development)).await;
    let config_maps = s.config_maps();
    projected(&config_maps, "payments-development", |c| {
        c == &json!({"v": 1})
    })
    .await;

    let postgres_down = stop("postgres");
    edit_to_version_2(&s).await;
    let ready = payments_condition(&s, CONDITION_READY, THROUGH_A_FAULT, |c| {
        c.status == "False"
    })
    .await;
    assert_reason(&ready, "PostgresUnavailable", "no new version is recorded");
    assert_eq!(latest_version(&s).await, Some(1));
    assert_eq!(
        config_json_now(&config_maps, "payments-development").await,
        Some(json!({"v": 1})),
        "what is applied keeps being served"
    );

    postgres_down.end();
    wait_within(
        THROUGH_A_FAULT,
        &config_maps,
        "payments-development",
        "version 2 live once PostgreSQL is back",
        |c| config_json(c) == Some(json!({"v": 2})),
    )
    .await;
    // Status is written after the projection: wait for it rather than race it.
    recorded(&s, 2, WAIT).await;
}

#[tokio::test]
async fn an_operator_killed_after_recording_finishes_the_projection_without_a_second_version() {
    let _serial = SERIAL.lock().await;
    // The projection targets a namespace that does not exist yet, so the operator
    // records the version and then cannot project it: the window a crash can hit.
    let s = Tenant::new("killed", &[]).await;
    let target = format!("{}-target", s.ns);
    let allow_target = ["--allow-target-namespace", target.as_str()];
    let operator = Operator::start_with(&s.ns, &allow_target);
    let development =
        json!({"name": "development", "configMap": {"name": "payments", "namespace": target}});
    create(&s.entries(), &payments(&s, json!({"v": 1}), development)).await;
    recorded(&s, 1, WAIT).await;
    assert_eq!(count_rows("config_versions", &config_id(&s)).await, 1);
    operator.kill();

    let target_namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": target}})).expect("namespace");
    create(&Api::all(s.admin()), &target_namespace).await;
    let _operator = Operator::start_with(&s.ns, &allow_target);
    let projected_there: Api<ConfigMap> = Api::namespaced(s.admin(), &target);
    let what = "the projection to complete after the restart";
    wait_for(&projected_there, "payments", what, |c| {
        config_json(c) == Some(json!({"v": 1}))
    })
    .await;
    assert_eq!(
        count_rows("config_versions", &config_id(&s)).await,
        1,
        "the restart made no second version"
    );
}

#[tokio::test]
async fn consul_refusing_the_operators_token_stops_nothing_else() {
    let _serial = SERIAL.lock().await;
    let s = Tenant::new("consul-acl", &[]).await;
    let bad_token = support::env().dir().join(format!("{}-bad-token", s.ns));
    std::fs::write(&bad_token, "00000000-0000-0000-0000-000000000000").expect("write a token");
    let token_file = ["--consul-token-file", bad_token.to_str().expect("a path")];
    let _operator = Operator::start_with(&s.ns, &token_file);
    let production = json!({"name": "production"});
    create(&s.entries(), &payments(&s, json!({"pool": 1}), production)).await;
    // Applied and projected all the same; Consul's refusal is in status.
    projected(&s.config_maps(), "payments-production", |_| true).await;
    let synced = payments_condition(&s, CONDITION_SYNCED, WAIT, |c| c.status == "False").await;
    assert_reason(&synced, "ConsulBehind", "403");
    let latest = format!("summit/config/{}/latest", config_id(&s));
    assert!(consul_get(&latest).await.is_none());
}

#[tokio::test]
async fn a_version_larger_than_consuls_value_limit_is_kept_without_its_content() {
    let _serial = SERIAL.lock().await;
    let (s, _operator) = setup("consul-large").await;
    // 600 KB of configuration: more than Consul's 512 KiB, less than a ConfigMap's 1 MiB.
    let large: serde_json::Map<String, Value> = (0..600)
        .map(|i| (format!("key-{i:04}"), json!("x".repeat(1000))))
        .collect();
    let production = json!({"name": "production"});
    create(
        &s.entries(),
        &payments(&s, Value::Object(large), production),
    )
    .await;
    projected(&s.config_maps(), "payments-production", |_| true).await;
    let synced = payments_condition(&s, CONDITION_SYNCED, WAIT, |c| {
        c.reason == "ConsulContentOmitted"
    })
    .await;
    assert_eq!(synced.status, "True", "{}", synced.message);
    assert!(
        synced
            .message
            .contains("Consul holds its checksum but not its content"),
        "{}",
        synced.message
    );
    let prefix = format!("summit/config/{}", config_id(&s));
    let (version, _) = consul_get(&format!("{prefix}/versions/1"))
        .await
        .expect("the version's key");
    assert!(
        version.get("snapshot").is_none(),
        "the content is in Consul"
    );
    assert_eq!(version["version"], 1);
    assert!(version["contentOmitted"].is_string());
    let (applied, _) = consul_get(&format!("{prefix}/applied/production"))
        .await
        .expect("the applied key");
    assert_eq!(applied["version"], 1);
    let entry = s.entries().get("payments").await.expect("payments");
    assert_eq!(
        condition(&entry, CONDITION_READY).map(|c| c.status),
        Some("True".to_owned())
    );
}

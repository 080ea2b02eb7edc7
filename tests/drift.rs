//! DriftCheck against the real apiserver, PostgreSQL and Consul: a hand-edited
//! ConfigMap, an overwritten Consul key and a tampered applied-state row are reported
//! with where and which paths, left alone in `Report` mode, and put back and audited in
//! `Remediate` mode; a hand-edited Secret likewise, by checksum, its value nowhere; a
//! clean check writes nothing.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret},
    events::v1::Event,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    ConfigEntry, DriftCheck, DriftCheckStatus, SecretRotationPolicy,
};
use support::{Operator, consul_get, env, eventually, fresh_namespace, postgres};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(test: &str, remediation: &str, interval: &str) -> (Client, String, Operator) {
    let (client, ns) = fresh_namespace(test).await;
    let operator = Operator::start(&ns);
    let entry: ConfigEntry = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("tests/{ns}"),
            "data": {"host": "db", "pool": {"max": 10}},
            "environments": [{"name": "development"}, {"name": "production"}],
        },
    }))
    .expect("entry");
    Api::<ConfigEntry>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &entry)
        .await
        .expect("create entry");
    eventually("both environments to be live", WAIT, || async {
        let entry = Api::<ConfigEntry>::namespaced(client.clone(), &ns)
            .get("payments")
            .await
            .ok()?;
        let status = entry.status?;
        (status
            .environments
            .iter()
            .filter(|e| e.version == Some(1))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let check: DriftCheck = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "DriftCheck",
        "metadata": {"name": "payments"},
        "spec": {"entries": ["payments"], "interval": interval, "remediation": remediation},
    }))
    .expect("check");
    Api::<DriftCheck>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &check)
        .await
        .expect("create check");
    eventually("a first clean check", WAIT, || async {
        let status = Api::<DriftCheck>::namespaced(client.clone(), &ns)
            .get("payments")
            .await
            .ok()?
            .status?;
        (status.drifted == Some(false)).then_some(())
    })
    .await;
    (client, ns, operator)
}

/// Edits the production ConfigMap by hand, overwrites Consul's applied key of
/// production and tampers with development's applied-state row.
async fn tamper(client: &Client, ns: &str) {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let edit = json!({"data": {"config.json": "{\n  \"host\": \"db\",\n  \"pool\": {\n    \"max\": 99\n  }\n}"}});
    config_maps
        .patch(
            "payments-production",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .expect("edit the ConfigMap by hand");
    // The edit wakes the entry, which leaves it to the DriftCheck; let that pass before
    // the backends are tampered with (an entry's reconcile brings Consul up to
    // PostgreSQL, as it always does).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let key = format!("summit/config/tests/{ns}/applied/production");
    let forged = json!({"configId": format!("tests/{ns}"), "environment": "production", "version": 7,
                        "checksum": "forged", "appliedAt": "2026-01-01T00:00:00Z"});
    support::consul_request(
        support::consul_client().put(format!("{}/v1/kv/{key}", env().var("CONSUL_HTTP_ADDR"))),
    )
    .body(forged.to_string())
    .send()
    .await
    .expect("overwrite the Consul key");
    sqlx::query("UPDATE config_applied_state SET checksum = 'tampered' WHERE config_id = $1 AND environment = 'development'")
        .bind(format!("tests/{ns}"))
        .execute(&postgres().await)
        .await
        .expect("tamper with the applied state");
}

async fn check_now(client: &Client, ns: &str, request: &str) -> DriftCheckStatus {
    let checks: Api<DriftCheck> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"annotations": {"config.summit.io/check": request}}});
    checks
        .patch("payments", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("ask for a check");
    eventually(&format!("check {request} to report"), WAIT, || async {
        let status = checks.get("payments").await.ok()?.status?;
        (status.last_handled_request.as_deref() == Some(request)).then_some(status)
    })
    .await
}

async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("DriftCheck"))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn drift_is_reported_where_it_is_and_nothing_is_changed() {
    let (client, ns, _operator) = setup("drift-report", "Report", "10m").await;
    tamper(&client, &ns).await;
    let status = check_now(&client, &ns, "after-tampering").await;
    assert_eq!(status.drifted, Some(true));
    assert_eq!(status.drift_count, Some(3), "{:?}", status.report);
    let finding = |location: &str| {
        status
            .report
            .iter()
            .find(|f| f.location == location)
            .unwrap_or_else(|| panic!("no finding at {location}: {:?}", status.report))
            .clone()
    };
    let config_map = finding(&format!("configmap/{ns}/payments-production"));
    assert_eq!(config_map.paths, ["$.pool.max"]);
    assert_eq!(config_map.environment, "production");
    let consul = finding(&format!(
        "consul:summit/config/tests/{ns}/applied/production"
    ));
    assert_eq!(consul.paths, ["$.version", "$.checksum"]);
    assert_eq!(consul.actual_checksum.as_deref(), Some("forged"));
    let row = finding("postgres:applied_state");
    assert_eq!(row.environment, "development");
    assert_eq!(row.paths, ["$.checksum"]);
    assert!(
        event_reasons(&client, &ns)
            .await
            .contains(&"DriftDetected".to_owned())
    );
    // The command line runs the same check and prints where, never a value.
    let detected = std::process::Command::new(env!("CARGO_BIN_EXE_summit-config"))
        .args([
            "drift",
            "detect",
            "payments",
            "--namespace",
            &ns,
            "--kubeconfig",
        ])
        .arg(env().kubeconfig())
        .output()
        .expect("run summit-config");
    let printed = String::from_utf8_lossy(&detected.stdout);
    assert!(
        detected.status.success(),
        "{}",
        String::from_utf8_lossy(&detected.stderr)
    );
    assert!(
        printed.contains("$.pool.max") && printed.contains("postgres:applied_state"),
        "{printed}"
    );

    // Report mode changes nothing, and the entry controller leaves the edit alone too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("payments-production")
        .await
        .expect("ConfigMap");
    assert!(live.data.expect("data")["config.json"].contains("99"));
    let (value, _) = consul_get(&format!("summit/config/tests/{ns}/applied/production"))
        .await
        .expect("key");
    assert_eq!(value["checksum"], "forged");
    let checksum: String = sqlx::query_scalar(
        "SELECT checksum FROM config_applied_state WHERE config_id = $1 AND environment = 'development'",
    )
    .bind(format!("tests/{ns}"))
    .fetch_one(&postgres().await)
    .await
    .expect("row");
    assert_eq!(checksum, "tampered");
}

#[tokio::test]
async fn remediation_restores_every_copy_and_audits_it() {
    let (client, ns, _operator) = setup("drift-remediate", "Remediate", "10m").await;
    tamper(&client, &ns).await;
    check_now(&client, &ns, "after-tampering").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually("the ConfigMap to be restored", WAIT, || async {
        let live = config_maps.get("payments-production").await.ok()?;
        let text = live.data?.get("config.json")?.clone();
        let content: Value = serde_json::from_str(&text).ok()?;
        (content["pool"]["max"] == 10).then_some(())
    })
    .await;
    let (value, _) = consul_get(&format!("summit/config/tests/{ns}/applied/production"))
        .await
        .expect("key");
    assert_eq!(value["version"], 1);
    assert_ne!(value["checksum"], "forged");
    let pool = postgres().await;
    let checksum: String = sqlx::query_scalar(
        "SELECT checksum FROM config_applied_state WHERE config_id = $1 AND environment = 'development'",
    )
    .bind(format!("tests/{ns}"))
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_ne!(checksum, "tampered");
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM config_audit WHERE config_id = $1 AND message LIKE 'drift found by DriftCheck%'",
    )
    .bind(format!("tests/{ns}"))
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert!(
        audited
            .iter()
            .all(|m| m.contains(&format!("DriftCheck {ns}/payments")))
    );
    assert!(
        event_reasons(&client, &ns)
            .await
            .contains(&"DriftRemediated".to_owned())
    );
    let clean = check_now(&client, &ns, "after-remediation").await;
    assert_eq!(clean.drifted, Some(false));
}

#[tokio::test]
async fn a_clean_check_writes_nothing_and_says_nothing() {
    let (client, ns, _operator) = setup("drift-quiet", "Report", "10s").await;
    let checks: Api<DriftCheck> = Api::namespaced(client.clone(), &ns);
    let before = checks.get("payments").await.expect("check");
    let events = event_reasons(&client, &ns).await.len();
    // Two more checks come and go on the interval.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let after = checks.get("payments").await.expect("check");
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "a clean check writes no status"
    );
    assert_eq!(
        event_reasons(&client, &ns).await.len(),
        events,
        "and publishes no Event"
    );
}

/// Keys and values of a Secret.
async fn secret_data(client: &Client, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    Some(
        secret
            .data?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap_or_default()))
            .collect(),
    )
}

#[tokio::test]
async fn a_hand_edited_secret_is_reported_by_checksum_and_restored() {
    let (client, ns) = fresh_namespace("drift-secret").await;
    let _operator = Operator::start(&ns);
    // A value the operator generates and keeps, referenced by an entry.
    let policy: SecretRotationPolicy = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "SecretRotationPolicy",
        "metadata": {"name": "token"},
        "spec": {"provider": "InCluster", "secretId": "token", "rotationInterval": "30d",
                 "target": {"name": "token"}},
    }))
    .expect("policy");
    Api::<SecretRotationPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    let entry: ConfigEntry = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("tests/{ns}"),
            "data": {"host": "db"},
            "secrets": {"TOKEN": {"provider": "InCluster", "secretId": "token"}},
            "environments": [{"name": "production"}],
        },
    }))
    .expect("entry");
    Api::<ConfigEntry>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &entry)
        .await
        .expect("create entry");
    let value = eventually("the Secret to be projected", WAIT, || async {
        secret_data(&client, &ns, "payments-production")
            .await?
            .remove("TOKEN")
    })
    .await;
    let check: DriftCheck = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "DriftCheck",
        "metadata": {"name": "payments"},
        "spec": {"entries": ["payments"], "sources": ["Kubernetes"], "interval": "10m",
                 "remediation": "Report"},
    }))
    .expect("check");
    let checks: Api<DriftCheck> = Api::namespaced(client.clone(), &ns);
    checks
        .create(&PostParams::default(), &check)
        .await
        .expect("create check");
    assert_eq!(check_now(&client, &ns, "before").await.drifted, Some(false));

    // By hand, as `kubectl edit secret` would.
    let hand = "hand-edited-token";
    let edit = json!({"stringData": {"TOKEN": hand}});
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "payments-production",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .expect("edit the Secret by hand");
    let status = check_now(&client, &ns, "after-edit").await;
    let location = format!("secret/{ns}/payments-production");
    let finding = status
        .report
        .iter()
        .find(|f| f.location == location)
        .unwrap_or_else(|| panic!("no finding at {location}: {:?}", status.report));
    assert_eq!(finding.paths, ["$.data.TOKEN"]);
    assert_ne!(
        finding.actual_checksum.as_deref(),
        Some(finding.expected_checksum.as_str())
    );
    // Report mode: the edit stays, even with the entry controller woken by it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        secret_data(&client, &ns, "payments-production")
            .await
            .expect("Secret")["TOKEN"],
        hand
    );

    // Remediation puts the value back and audits it.
    let remediate = json!({"spec": {"remediation": "Remediate"}});
    checks
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(&remediate),
        )
        .await
        .expect("switch to Remediate");
    check_now(&client, &ns, "remediate").await;
    eventually("the Secret to be restored", WAIT, || async {
        let data = secret_data(&client, &ns, "payments-production").await?;
        (data.get("TOKEN") == Some(&value)).then_some(())
    })
    .await;
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM config_audit WHERE config_id = $1 AND message LIKE 'drift found by DriftCheck%'",
    )
    .bind(format!("tests/{ns}"))
    .fetch_all(&postgres().await)
    .await
    .expect("audit rows");
    assert!(audited.iter().any(|m| m.contains(&location)), "{audited:?}");

    // Neither value is anywhere but the Secret: not in status, Events or the log.
    let said = [
        serde_json::to_string(&checks.get("payments").await.expect("check")).expect("json"),
        serde_json::to_string(
            &Api::<ConfigEntry>::namespaced(client.clone(), &ns)
                .get("payments")
                .await
                .expect("entry"),
        )
        .expect("json"),
        serde_json::to_string(
            &Api::<Event>::namespaced(client.clone(), &ns)
                .list(&Default::default())
                .await
                .expect("events")
                .items,
        )
        .expect("json"),
        std::fs::read_to_string(
            std::path::Path::new(&env().var("SUMMIT_ENV_DIR")).join(format!("operator-{ns}.log")),
        )
        .expect("operator log"),
    ];
    for text in &said {
        assert!(!text.contains(hand) && !text.contains(&value));
    }
}

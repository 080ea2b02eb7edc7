//! DriftCheck against the real apiserver, PostgreSQL and Consul: a hand-edited
//! ConfigMap, an overwritten Consul key and a tampered applied-state row are reported
//! with where and which paths, left alone in `Report` mode, and put back and audited in
//! `Remediate` mode; a hand-edited Secret likewise, by checksum, its value nowhere; a
//! clean check writes nothing.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use summit_config::api::v1alpha1::{DriftCheck, DriftCheckStatus};
use support::{
    Operator, Tenant, annotate, column_of, consul_get, consul_put, create, drift_check, entry, env,
    event_reasons, events, merge, operator_log, policy, postgres, projected, reconciled_since,
    reconciles, run_ok, secret_data, secret_where, setup, sleep_through_window, wait_for,
};

/// A namespace, an operator watching it, an entry `payments` live in development and
/// production, and a DriftCheck `payments` of it in `remediation` mode every `interval`
/// that found it clean.
async fn setup_checked(test: &str, remediation: &str, interval: &str) -> (Tenant, Operator) {
    let (s, operator) = setup(test).await;
    let spec = json!({
        "configId": s.config_id(),
        "data": {"host": "db", "notes": notes(), "pool": {"max": 10}},
        "environments": [{"name": "development"}, {"name": "production"}],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    wait_for(
        &s.entries(),
        "payments",
        "both environments to be live",
        |e| {
            e.status.as_ref().is_some_and(|status| {
                status
                    .environments
                    .iter()
                    .filter(|e| e.version == Some(1))
                    .count()
                    == 2
            })
        },
    )
    .await;
    let spec = json!({"entries": ["payments"], "interval": interval, "remediation": remediation});
    create(&s.api(), &drift_check("payments", spec)).await;
    wait_for(
        &s.api(),
        "payments",
        "a first clean check",
        |c: &DriftCheck| c.status.as_ref().is_some_and(|s| s.drifted == Some(false)),
    )
    .await;
    (s, operator)
}

/// A value long enough that the operator's cache keeps the content as its digest.
fn notes() -> String {
    "n".repeat(100)
}

/// The key of production's applied state in Consul.
fn applied_key(s: &Tenant) -> String {
    format!("summit/config/{}/applied/production", s.config_id())
}

/// Development's applied-state checksum in PostgreSQL.
async fn development_checksum(s: &Tenant) -> String {
    let checksums = column_of(
        "SELECT checksum FROM config_applied_state WHERE config_id = $1 AND environment = 'development'",
        &s.config_id(),
    )
    .await;
    checksums.into_iter().next().expect("development's row")
}

/// The messages of the audit rows a DriftCheck wrote.
async fn drift_audit(s: &Tenant) -> Vec<String> {
    column_of(
        "SELECT message FROM config_audit WHERE config_id = $1 AND message LIKE 'drift found by DriftCheck%'",
        &s.config_id(),
    )
    .await
}

/// Edits the production ConfigMap by hand, overwrites Consul's applied key of
/// production and tampers with development's applied-state row.
async fn tamper(s: &Tenant, operator: &Operator) {
    let (entry_reconciles, _) = reconciles(operator.port(), "ConfigEntry").await;
    let edited = json!({"host": "db", "notes": notes(), "pool": {"max": 99}});
    let edit = json!({"data": {"config.json": edited.to_string()}});
    merge(&s.config_maps(), "payments-production", edit).await;
    // The edit wakes the entry, which leaves it to the DriftCheck; let that reconcile
    // finish before the backends are tampered with (an entry's reconcile brings Consul
    // up to PostgreSQL, as it always does).
    reconciled_since(operator.port(), "ConfigEntry", entry_reconciles).await;
    let forged = json!({"configId": s.config_id(), "environment": "production", "version": 7,
                        "checksum": "forged", "appliedAt": "2026-01-01T00:00:00Z"});
    consul_put(&applied_key(s), &forged).await;
    sqlx::query("UPDATE config_applied_state SET checksum = 'tampered' WHERE config_id = $1 AND environment = 'development'")
        .bind(s.config_id())
        .execute(&postgres().await)
        .await
        .expect("tamper with the applied state");
}

/// Asks DriftCheck `payments` for a check now, named `request`, and returns what it
/// reported.
async fn check_now(s: &Tenant, request: &str) -> DriftCheckStatus {
    let checks: Api<DriftCheck> = s.api();
    annotate(&checks, "payments", "config.summit.io/check", request).await;
    let what = format!("check {request} to report");
    let check = wait_for(&checks, "payments", &what, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.last_handled_request.as_deref() == Some(request))
    })
    .await;
    check.status.expect("status")
}

/// The reasons of the Events about DriftChecks.
async fn check_event_reasons(s: &Tenant) -> Vec<String> {
    event_reasons(&s.admin(), &s.ns, |r| {
        r.kind.as_deref() == Some("DriftCheck")
    })
    .await
}

#[tokio::test]
async fn drift_is_reported_where_it_is_and_nothing_is_changed() {
    let (s, operator) = setup_checked("drift-report", "Report", "10m").await;
    tamper(&s, &operator).await;
    let status = check_now(&s, "after-tampering").await;
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
    let config_map = finding(&format!("configmap/{}/payments-production", s.ns));
    assert_eq!(config_map.paths, ["$.pool.max"]);
    assert_eq!(config_map.environment, "production");
    let consul = finding(&format!("consul:{}", applied_key(&s)));
    assert_eq!(consul.paths, ["$.version", "$.checksum"]);
    assert_eq!(consul.actual_checksum.as_deref(), Some("forged"));
    let row = finding("postgres:applied_state");
    assert_eq!(row.environment, "development");
    assert_eq!(row.paths, ["$.checksum"]);
    assert!(
        check_event_reasons(&s)
            .await
            .contains(&"DriftDetected".to_owned())
    );
    // The command line runs the same check and prints where, never a value.
    let detect = ["drift", "detect", "payments"];
    let printed = run_ok(&mut support::summit(&env().kubeconfig(), &s.ns, &detect));
    assert!(
        printed.contains("$.pool.max") && printed.contains("postgres:applied_state"),
        "{printed}"
    );

    // Report mode changes nothing, and the entry controller leaves the edit alone too,
    // however long it had to change them.
    sleep_through_window().await;
    let live = s
        .config_maps()
        .get("payments-production")
        .await
        .expect("ConfigMap");
    assert!(live.data.expect("data")["config.json"].contains("99"));
    let (value, _) = consul_get(&applied_key(&s)).await.expect("key");
    assert_eq!(value["checksum"], "forged");
    assert_eq!(development_checksum(&s).await, "tampered");
}

#[tokio::test]
async fn remediation_restores_every_copy_and_audits_it() {
    let (s, operator) = setup_checked("drift-remediate", "Remediate", "10m").await;
    tamper(&s, &operator).await;
    check_now(&s, "after-tampering").await;
    projected(&s.config_maps(), "payments-production", |c| {
        c["pool"]["max"] == 10
    })
    .await;
    let (value, _) = consul_get(&applied_key(&s)).await.expect("key");
    assert_eq!(value["version"], 1);
    assert_ne!(value["checksum"], "forged");
    assert_ne!(development_checksum(&s).await, "tampered");
    let audited = drift_audit(&s).await;
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert!(
        audited
            .iter()
            .all(|m| m.contains(&format!("DriftCheck {}/payments", s.ns)))
    );
    assert!(
        check_event_reasons(&s)
            .await
            .contains(&"DriftRemediated".to_owned())
    );
    let clean = check_now(&s, "after-remediation").await;
    assert_eq!(clean.drifted, Some(false));
}

/// How long a clean check on a 10s interval is watched: two more checks come and go.
/// A window in which nothing may be written, not a wait.
const TWO_INTERVALS: std::time::Duration = std::time::Duration::from_secs(25);

#[tokio::test]
async fn a_clean_check_writes_nothing_and_says_nothing() {
    let (s, _operator) = setup_checked("drift-quiet", "Report", "10s").await;
    let checks: Api<DriftCheck> = s.api();
    let before = checks.get("payments").await.expect("check");
    let events = check_event_reasons(&s).await.len();
    tokio::time::sleep(TWO_INTERVALS).await;
    let after = checks.get("payments").await.expect("check");
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "a clean check writes no status"
    );
    assert_eq!(
        check_event_reasons(&s).await.len(),
        events,
        "and publishes no Event"
    );
}

#[tokio::test]
async fn a_hand_edited_secret_is_reported_by_checksum_and_restored() {
    let (s, _operator) = setup("drift-secret").await;
    // A value the operator generates and keeps, referenced by an entry.
    let spec = json!({"provider": "InCluster", "secretId": "token", "rotationInterval": "30d",
                      "target": {"name": "token"}});
    create(&s.api(), &policy("token", spec)).await;
    let spec = json!({
        "configId": s.config_id(),
        "data": {"host": "db"},
        "secrets": {"TOKEN": {"provider": "InCluster", "secretId": "token"}},
        "environments": [{"name": "production"}],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    let secrets: Api<Secret> = s.secrets();
    let projected = secret_where(&secrets, "payments-production", |d| d.contains_key("TOKEN"));
    let value = projected.await["TOKEN"].clone();
    let spec = json!({"entries": ["payments"], "sources": ["Kubernetes"], "interval": "10m",
                      "remediation": "Report"});
    let checks: Api<DriftCheck> = s.api();
    create(&checks, &drift_check("payments", spec)).await;
    assert_eq!(check_now(&s, "before").await.drifted, Some(false));

    // By hand, as `kubectl edit secret` would.
    let hand = "hand-edited-token";
    merge(
        &secrets,
        "payments-production",
        json!({"stringData": {"TOKEN": hand}}),
    )
    .await;
    let status = check_now(&s, "after-edit").await;
    let location = format!("secret/{}/payments-production", s.ns);
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
    // Report mode: the edit stays, even with the entry controller woken by it, however
    // long it had to put it back.
    sleep_through_window().await;
    let edited = secret_data(secrets.get("payments-production").await.expect("Secret"));
    assert_eq!(edited["TOKEN"], hand);

    // Remediation puts the value back and audits it.
    merge(
        &checks,
        "payments",
        json!({"spec": {"remediation": "Remediate"}}),
    )
    .await;
    check_now(&s, "remediate").await;
    secret_where(&secrets, "payments-production", |d| {
        d.get("TOKEN") == Some(&value)
    })
    .await;
    let audited = drift_audit(&s).await;
    assert!(audited.iter().any(|m| m.contains(&location)), "{audited:?}");

    // Neither value is anywhere but the Secret: not in status, Events or the log.
    let said = [
        serde_json::to_string(&checks.get("payments").await.expect("check")).expect("json"),
        serde_json::to_string(&s.entries().get("payments").await.expect("entry")).expect("json"),
        serde_json::to_string(&events(&s.admin(), &s.ns).await).expect("json"),
        std::fs::read_to_string(operator_log(&s.ns)).expect("operator log"),
    ];
    for text in &said {
        assert!(!text.contains(hand) && !text.contains(&value));
    }
}

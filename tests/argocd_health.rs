//! The chart's Argo CD health check (`charts/summit-config/argocd/health.lua`), run by
//! Lua 5.1, Argo CD's dialect, on objects as the operator left them in the real
//! apiserver: Healthy, Progressing and Degraded each where a user would expect them.

mod support;

use kube::Api;
use mlua::{Lua, LuaSerdeExt, Table, serde::SerializeOptions};
use serde::Serialize;
use serde_json::json;
use summit_config::api::v1alpha1::{
    ANNOTATION_CHECK, ChangePhase, ConfigChange, ConfigEntry, DriftCheck, SecretRotationPolicy,
};
use support::{
    annotate, change_in, create, drift_check, entry, live, merge, policy, policy_where,
    proposal_waiting, rotation::daily, setup_with, validation_refused, wait_for,
};

/// What the health check says of `object`: (status, message).
fn health(object: &impl Serialize) -> (String, String) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/summit-config/argocd/health.lua"
    );
    let script = std::fs::read_to_string(path).expect("the health check");
    let lua = Lua::new();
    // As Argo CD hands objects to Lua: absent fields are nil.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua
        .to_value_with(object, options)
        .expect("the object as Lua");
    lua.globals().set("obj", obj).expect("obj");
    let wrapped = format!("return (function()\n{script}\nend)()");
    let answer: Table = lua.load(wrapped).eval().expect("the health check runs");
    (
        answer.get("status").expect("status"),
        answer.get("message").expect("message"),
    )
}

fn assert_health(object: &impl Serialize, wanted: &str, text: &str) {
    let (status, message) = health(object);
    assert_eq!(status, wanted, "{message}");
    assert!(message.contains(text), "{status}: {message}");
}

#[tokio::test]
async fn each_kind_is_healthy_progressing_or_degraded_as_its_status_says() {
    let roles = [
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let (s, _operator) = setup_with("argocd-health", &roles, &[]).await;
    let entries: Api<ConfigEntry> = s.api();

    // Not yet seen by the operator: Progressing.
    let spec = json!({
        "configId": s.config_id(),
        "schema": {"type": "object", "properties": {"pool": {"type": "integer"}}},
        "data": {"pool": 10},
        "environments": [
            {"name": "development"},
            {"name": "production", "approval": {"approverGroups": ["summit:approvers"]}},
        ],
    });
    let unseen = entry("payments", spec);
    assert_health(&unseen, "Progressing", "waiting for the operator");

    // Applied where it may be, waiting for approval where it must: Healthy; the
    // proposal waiting for approvers is Progressing.
    create(&entries, &unseen).await;
    live(&entries, "payments", "development", 1).await;
    let proposal = proposal_waiting(&entries, "payments", "production", 1).await;
    let payments = entries.get("payments").await.expect("payments");
    assert_health(&payments, "Healthy", "waiting for approval in production");
    let changes: Api<ConfigChange> = s.api();
    let pending = change_in(&changes, &proposal, ChangePhase::Pending).await;
    assert_health(&pending, "Progressing", "approval");

    // Rejected: it ends there, Degraded until it leaves Git.
    let bob: Api<ConfigChange> = s.api_as("bob").await;
    let rejection = json!({"spec": {"rejection": {"rejectedBy": "bob", "reason": "not now"}}});
    merge(&bob, &proposal, rejection).await;
    let rejected = change_in(&changes, &proposal, ChangePhase::Rejected).await;
    assert_health(&rejected, "Degraded", "not now");

    // A spec that does not validate: Degraded, saying why.
    merge(
        &entries,
        "payments",
        json!({"spec": {"data": {"pool": "ten"}}}),
    )
    .await;
    validation_refused(&entries, "payments").await;
    let broken = entries.get("payments").await.expect("payments");
    assert_health(&broken, "Degraded", "pool");

    // Fixed: Healthy again once the operator has seen the fix.
    merge(
        &entries,
        "payments",
        json!({"spec": {"data": {"pool": 20}}}),
    )
    .await;
    live(&entries, "payments", "development", 2).await;
    let payments = entries.get("payments").await.expect("payments");
    assert_health(&payments, "Healthy", "");
}

#[tokio::test]
async fn a_rotation_policy_and_a_drift_check_report_their_health_too() {
    let (s, _operator) = setup_with("argocd-health-kinds", &[], &[]).await;
    let policies: Api<SecretRotationPolicy> = s.api();
    create(
        &policies,
        &policy("token", daily("InCluster", "token", "token")),
    )
    .await;
    policy_where(&policies, "token", |p| p.current_version.is_some()).await;
    let projected = policies.get("token").await.expect("policy");
    assert_health(&projected, "Healthy", "holds version");

    let spec = json!({
        "configId": s.config_id(),
        "data": {"pool": 10},
        "environments": [{"name": "development"}],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    live(&s.entries(), "payments", "development", 1).await;
    let checks: Api<DriftCheck> = s.api();
    let spec = json!({"entries": ["payments"], "interval": "1h", "remediation": "Report"});
    create(&checks, &drift_check("payments", spec)).await;
    let clean = wait_for(&checks, "payments", "a clean check", |c: &DriftCheck| {
        c.status.as_ref().is_some_and(|s| s.drifted == Some(false))
    })
    .await;
    assert_health(&clean, "Healthy", "");

    // A hand edit, found by the next check: Degraded until someone acts.
    let edit = json!({"data": {"config.json": "{\"pool\": 99}"}});
    merge(&s.config_maps(), "payments-development", edit).await;
    annotate(&checks, "payments", ANNOTATION_CHECK, "after-the-edit").await;
    let drifted = wait_for(&checks, "payments", "the drift found", |c: &DriftCheck| {
        c.status.as_ref().is_some_and(|s| s.drifted == Some(true))
    })
    .await;
    assert_health(&drifted, "Degraded", "differ");
}

#[test]
fn the_argocd_example_carries_the_charts_health_check_for_every_kind() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = std::fs::read_to_string(format!("{root}/charts/summit-config/argocd/health.lua"))
        .expect("the health check");
    let example = std::fs::read_to_string(format!("{root}/examples/argocd/argocd-cm-health.yaml"))
        .expect("the example");
    let config_map: serde_json::Value = serde_yaml_ng::from_str(&example).expect("YAML");
    for kind in [
        "ConfigEntry",
        "ConfigChange",
        "SecretRotationPolicy",
        "DriftCheck",
    ] {
        let key = format!("resource.customizations.health.config.summit.io_{kind}");
        assert_eq!(config_map["data"][&key], script.as_str(), "{key}");
    }
}

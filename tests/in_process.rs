//! Reconciles between the core's unit tests and the tests of the operator binary: the
//! controllers run in this process against the real apiserver (RBAC and the admission
//! policies on) over the in-memory ledger, and what they recorded, applied and audited
//! is read from the ledger itself.

mod support;

use serde_json::{Value, json};
use summit_config::store::{AuditRow, History};
use support::in_process::InProcess;
use support::{
    Tenant, assert_reason, create, entry, live, patch_spec, proposal_waiting, validation_refused,
};

/// Every application in `trail`, in order: (environment, version, actor).
fn applications(trail: &[AuditRow]) -> Vec<(String, i64, String)> {
    let applied = trail.iter().filter(|row| row.changes["event"] == "applied");
    let of = |row: &AuditRow| {
        let environment = row.changes["environment"].as_str().unwrap_or_default();
        (
            environment.to_owned(),
            row.version.unwrap_or(0),
            row.actor.clone(),
        )
    };
    applied.map(of).collect()
}

/// The versions `trail` records, in order.
fn recordings(trail: &[AuditRow]) -> Vec<i64> {
    let recorded = trail
        .iter()
        .filter(|r| r.changes["event"] == "versionRecorded");
    recorded.filter_map(|row| row.version).collect()
}

/// What `ledger` holds live for `config_id`: (environment, version), by environment.
async fn live_in(operator: &InProcess, config_id: &str) -> Vec<(String, i64)> {
    let applied = operator.ledger.applied(config_id).await.expect("applied");
    let mut live: Vec<_> = applied
        .into_iter()
        .map(|a| (a.environment, a.version))
        .collect();
    live.sort();
    live
}

fn pair(environment: &str, version: i64) -> (String, i64) {
    (environment.to_owned(), version)
}

/// `payments` of `config_id`: development applies as recorded, production waits for
/// summit:approvers.
fn payments(config_id: &str, data: Value) -> Value {
    json!({
        "configId": config_id,
        "data": data,
        "environments": [
            {"name": "development"},
            {"name": "production", "approval": {"approverGroups": ["summit:approvers"]}},
        ],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn each_version_is_recorded_once_and_applied_once_where_its_policy_allows() {
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
    ];
    let team = Tenant::new("in-process", &roles).await;
    let operator = InProcess::start(&team.ns).await;
    let config_id = team.config_id();
    let entries = team.entries_as("alice").await;
    create(
        &entries,
        &entry("payments", payments(&config_id, json!({"pool": 10}))),
    )
    .await;

    // Development runs version 1; production waits, and the ledger says so.
    live(&entries, "payments", "development", 1).await;
    let proposal = proposal_waiting(&entries, "payments", "production", 1).await;
    assert_eq!(
        live_in(&operator, &config_id).await,
        [pair("development", 1)]
    );

    // bob's approval applies it to production, in bob's name.
    team.approves("bob", &proposal).await;
    live(&entries, "payments", "production", 1).await;
    let both = [pair("development", 1), pair("production", 1)];
    assert_eq!(live_in(&operator, &config_id).await, both);

    // alice's edit is version 2: live in development, waiting in production.
    patch_spec(&entries, "payments", json!({"data": {"pool": 20}}))
        .await
        .expect("alice edits the spec");
    live(&entries, "payments", "development", 2).await;
    proposal_waiting(&entries, "payments", "production", 2).await;
    let moved = [pair("development", 2), pair("production", 1)];
    assert_eq!(live_in(&operator, &config_id).await, moved);

    // However often the loops ran, each version was recorded once and applied once
    // per environment.
    let versions = operator
        .ledger
        .versions(&config_id)
        .await
        .expect("versions");
    let numbers: Vec<i64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2]);
    let trail = operator.ledger.audit_trail(&config_id);
    assert_eq!(recordings(&trail), [1, 2]);
    let applied = applications(&trail);
    let places: Vec<(&str, i64)> = applied.iter().map(|(e, v, _)| (e.as_str(), *v)).collect();
    assert_eq!(
        places,
        [("development", 1), ("production", 1), ("development", 2)]
    );
    assert_eq!(applied[1].2, "bob", "production's version 1: {applied:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_refused_at_validation_records_nothing_and_stops_no_other() {
    let team = Tenant::new("in-process-refused", &[("alice", "summit-config-admin")]).await;
    let operator = InProcess::start(&team.ns).await;
    let entries = team.entries_as("alice").await;
    let refused_id = format!("{}/refused", team.config_id());
    let mut spec = payments(&refused_id, json!({"pool": "ten"}));
    spec["schema"] = json!({"type": "object", "properties": {"pool": {"type": "integer"}}});
    create(&entries, &entry("refused", spec)).await;
    let healthy_id = format!("{}/healthy", team.config_id());
    let healthy = payments(&healthy_id, json!({"pool": 10}));
    create(&entries, &entry("healthy", healthy)).await;

    let refused = validation_refused(&entries, "refused").await;
    assert_reason(&refused, "SchemaViolation", "pool");
    live(&entries, "healthy", "development", 1).await;

    let recorded = operator
        .ledger
        .versions(&refused_id)
        .await
        .expect("versions");
    assert!(recorded.is_empty(), "{recorded:?}");
    assert_eq!(operator.ledger.audit_trail(&refused_id), []);
    assert_eq!(
        live_in(&operator, &healthy_id).await,
        [pair("development", 1)]
    );
}

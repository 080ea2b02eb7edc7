//! An operator installed with no PostgreSQL and no Consul keeps its record in the
//! cluster: versions numbered by the apiserver survive a restart, the audit trail with
//! them, and a DriftCheck and a rollback work as they do over PostgreSQL. Nobody but
//! the operator writes the ledger, a cluster admin included.

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use summit_config::{
    api::v1alpha1::{ChangePhase, DriftCheck},
    store::{Audit, ClusterLedger, History, LABEL_LEDGER},
};
use support::{
    Operator, Tenant, WAIT, annotate, append_approval, change, change_in, create, drift_check,
    entry, env, eventually, merge, projected, wait_for, with_fields,
};

/// The namespace the chart installs into, where the ledger lives.
const LEDGER_NAMESPACE: &str = "summit-system";

/// Waits until the entry's newest version is `version`.
async fn latest_is(s: &Tenant, version: i64) {
    let what = format!("version {version} recorded");
    wait_for(&s.entries(), "payments", &what, |e| {
        e.status
            .as_ref()
            .is_some_and(|status| status.latest_version == Some(version))
    })
    .await;
}

/// A new pool size from alice: a spec edit, recorded as the next version.
async fn resize(s: &Tenant, max: i64) {
    let data = json!({"spec": {"data": {"host": "db", "pool": {"max": max}}}});
    merge(&s.entries_as("alice").await, "payments", data).await;
}

/// The version numbers `summit-config versions payments` lists, as alice.
fn listed_versions(s: &Tenant) -> Vec<String> {
    let (code, table, stderr) = s.summit_as("alice", &["versions", "payments"]);
    assert_eq!(code, 0, "{stderr}");
    let numbers = table.lines().skip(1);
    numbers
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The events and actors of the config id's audit trail, read from the ledger itself.
async fn trail(s: &Tenant) -> Vec<(String, String, Option<i64>)> {
    let ledger = ClusterLedger::new(s.admin(), LEDGER_NAMESPACE);
    let trail = ledger.trail(&s.config_id()).await.expect("the trail");
    let row = |e: &summit_config::store::AuditEntry| {
        let event = e.row.changes["event"].as_str().unwrap_or("").to_owned();
        (event, e.row.actor.clone(), e.row.version)
    };
    trail.iter().map(row).collect()
}

#[tokio::test]
async fn with_no_database_the_record_survives_a_restart() {
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let s = Tenant::new("ledger-restart", &roles).await;
    let operator = Operator::start_without_database(&s.ns);
    let spec = json!({
        "configId": s.config_id(),
        "data": {"host": "db", "pool": {"max": 10}},
        "environments": [
            {"name": "development"},
            {"name": "production", "approval": {"requiredApprovals": 2}},
        ],
    });
    create(&s.entries_as("alice").await, &entry("payments", spec)).await;
    latest_is(&s, 1).await;
    // Version 2: a change to production that bob and carol approve.
    let request = json!({"configEntry": "payments", "environment": "production",
                         "message": "a bigger pool", "data": {"host": "db", "pool": {"max": 40}}});
    let bigger = change("bigger-pool", "alice", with_fields(request, json!({})));
    create(&s.changes_as("alice").await, &bigger).await;
    for approver in ["bob", "carol"] {
        let approval = json!({"approver": approver, "comment": format!("{approver} checked")});
        append_approval(&s.changes_as(approver).await, "bigger-pool", approval)
            .await
            .expect("an approval");
    }
    change_in(&s.changes(), "bigger-pool", ChangePhase::Applied).await;
    resize(&s, 11).await;
    latest_is(&s, 3).await;
    let before = trail(&s).await;

    operator.kill();
    let _operator = Operator::start_without_database(&s.ns);
    resize(&s, 12).await;
    latest_is(&s, 4).await;
    projected(&s.config_maps(), "payments-development", |c| {
        c["pool"]["max"] == 12
    })
    .await;

    // All four, numbered once each, readable as alice with the CLI.
    eventually("four versions listed", WAIT, || async {
        (listed_versions(&s) == ["1", "2", "3", "4"]).then_some(())
    })
    .await;
    // The audit from before the restart is whole, and goes on after it.
    let after = trail(&s).await;
    assert_eq!(after[..before.len()], before[..]);
    let has = |event: &str, actor: &str, version: i64| {
        after
            .iter()
            .any(|(e, a, v)| e == event && a == actor && *v == Some(version))
    };
    assert!(has("requested", "alice", 1), "{after:?}");
    assert!(has("approved", "bob", 1), "{after:?}");
    assert!(has("approved", "carol", 1), "{after:?}");
    for version in 1..=4 {
        assert!(has("versionRecorded", "alice", version), "{after:?}");
    }
    let ledger = ClusterLedger::new(s.admin(), LEDGER_NAMESPACE);
    let versions = ledger.versions(&s.config_id()).await.expect("versions");
    let numbers: Vec<i64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let (code, audit, stderr) = s.summit_as("alice", &["audit", "payments", "--version", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(audit.contains("carol"), "{audit}");

    // A rollback of development to version 1: a fifth version, with version 1's content.
    let (code, _, stderr) = s.summit_as(
        "alice",
        &[
            "rollback",
            "payments",
            "1",
            "--env",
            "development",
            "-m",
            "too many connections",
            "--name",
            "back-to-one",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    change_in(&s.changes(), "back-to-one", ChangePhase::Applied).await;
    wait_for(
        &s.entries(),
        "payments",
        "version 5 live in development",
        |e| {
            e.status.as_ref().is_some_and(|status| {
                let development = status.environments.iter().find(|e| e.name == "development");
                development.is_some_and(|e| e.version == Some(5))
            })
        },
    )
    .await;
    projected(&s.config_maps(), "payments-development", |c| {
        c["pool"]["max"] == 10
    })
    .await;
}

#[tokio::test]
async fn with_no_database_a_drift_check_finds_and_remediates() {
    let s = Tenant::new("ledger-drift", &[]).await;
    let _operator = Operator::start_without_database(&s.ns);
    let spec = json!({
        "configId": s.config_id(),
        "data": {"host": "db", "notes": "n".repeat(100), "pool": {"max": 10}},
        "environments": [{"name": "development"}],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    latest_is(&s, 1).await;
    let spec = json!({"entries": ["payments"], "interval": "10m", "remediation": "Remediate"});
    create(&s.api(), &drift_check("payments", spec)).await;
    let checks: Api<DriftCheck> = s.api();
    wait_for(&checks, "payments", "a first clean check", |c| {
        c.status.as_ref().is_some_and(|s| s.drifted == Some(false))
    })
    .await;
    let edited = json!({"host": "db", "notes": "n".repeat(100), "pool": {"max": 99}});
    let edit = json!({"data": {"config.json": edited.to_string()}});
    merge(&s.config_maps(), "payments-development", edit).await;
    annotate(&checks, "payments", "config.summit.io/check", "after-edit").await;
    let check = wait_for(&checks, "payments", "the check to report", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.last_handled_request.as_deref() == Some("after-edit"))
    })
    .await;
    let status = check.status.expect("status");
    let found = status
        .report
        .iter()
        .find(|f| f.environment == "development");
    let found = found.unwrap_or_else(|| panic!("no finding in {:?}", status.report));
    assert_eq!(found.paths, ["$.pool.max"]);
    assert!(found.remediated_at.is_some(), "{found:?}");
    projected(&s.config_maps(), "payments-development", |c| {
        c["pool"]["max"] == 10
    })
    .await;
    let events: Vec<String> = trail(&s).await.into_iter().map(|(e, ..)| e).collect();
    assert!(events.iter().any(|e| e.contains("drift")), "{events:?}");
}

/// kubectl as the cluster admin, in the ledger's namespace.
fn admin_kubectl(args: &[&str]) -> std::process::Output {
    Command::new(format!("{}/kubectl", env().var("SUMMIT_TOOLS_BIN")))
        .env("KUBECONFIG", env().var("KUBECONFIG"))
        .args(["--namespace", LEDGER_NAMESPACE])
        .args(args)
        .output()
        .expect("run kubectl")
}

#[tokio::test]
async fn nobody_but_the_operator_writes_the_ledger() {
    let s = Tenant::new("ledger-guarded", &[("alice", "summit-config-admin")]).await;
    let _operator = Operator::start_without_database(&s.ns);
    let spec = json!({
        "configId": s.config_id(),
        "data": {"host": "db"},
        "environments": [{"name": "development"}],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    latest_is(&s, 1).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(s.admin(), LEDGER_NAMESPACE);
    let selector = format!("{LABEL_LEDGER}=version");
    let listed = config_maps
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list the ledger");
    let mine = listed.items.iter().find(|c| {
        c.data
            .as_ref()
            .and_then(|d| d.get("record.json"))
            .is_some_and(|r| {
                serde_json::from_str::<Value>(r).is_ok_and(|v| v["configId"] == s.config_id())
            })
    });
    let version = mine.expect("version 1 in the ledger");
    let name = version.metadata.name.clone().expect("a name");
    let book = name.trim_end_matches("-v1").to_owned();
    let before = config_maps.get(&book).await.expect("the book");

    // The cluster admin can neither forge the book, nor take its label off, nor delete
    // a version, nor plant a version ahead of the operator.
    let forged = r#"{"data":{"record.json":"{\"configId\":\"x\"}"}}"#;
    for attempt in [
        admin_kubectl(&["patch", "configmap", &book, "--type", "merge", "-p", forged]),
        admin_kubectl(&["label", "configmap", &book, &format!("{LABEL_LEDGER}-")]),
        admin_kubectl(&["delete", "configmap", &name]),
        admin_kubectl(&[
            "create",
            "configmap",
            &format!("{book}-v2"),
            "--from-literal=record.json={}",
        ]),
    ] {
        let stderr = String::from_utf8_lossy(&attempt.stderr);
        assert!(!attempt.status.success());
        assert!(
            stderr.contains("written by the operator alone") || stderr.contains("forbidden"),
            "{stderr}"
        );
    }
    let after = config_maps.get(&book).await.expect("the book");
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    assert!(
        config_maps
            .get_opt(&format!("{book}-v2"))
            .await
            .unwrap()
            .is_none()
    );
}

//! The in-memory ledger keeps what PostgreSQL keeps, under the same rules.

use serde_json::{Value, json};

use super::*;
use crate::store::Snapshot;

fn claimant(owner: &str) -> Claimant {
    let (namespace, name) = owner.split_once('/').unwrap();
    Claimant {
        namespace: namespace.into(),
        name: name.into(),
        uid: "uid".into(),
    }
}

fn new_version(checksum: &str, owner: &str) -> NewVersion {
    NewVersion {
        config_id: "payments".into(),
        claimant: claimant(owner),
        snapshot: Snapshot {
            data: json!({"checksum": checksum}),
            overrides: Default::default(),
            secrets: serde_json::Value::Null,
        },
        checksum: checksum.into(),
        source: Source::Spec,
        created_by: "alice".into(),
        authors: vec!["alice".into()],
        message: "test".into(),
        based_on: None,
    }
}

async fn claimed(owner: &str) -> MemoryStore {
    let store = MemoryStore::default();
    store
        .claim("payments", &claimant(owner), true)
        .await
        .unwrap();
    store
}

fn application(version: i64, forward_only: bool) -> Application {
    Application {
        change: None,
        forward_only,
        config_id: "payments".into(),
        claimant: claimant("ns/p"),
        environment: "production".into(),
        version,
        checksum: format!("sum-{version}"),
        actor: "bob".into(),
        message: format!("applied version {version}"),
        floor: FloorUpdate::Keep,
    }
}

#[tokio::test]
async fn recording_the_same_content_twice_makes_one_version() {
    let store = claimed("ns/p").await;
    let first = store.record(&new_version("a", "ns/p")).await.unwrap();
    let again = store.record(&new_version("a", "ns/p")).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(again.version.version, 1);
    let second = store.record(&new_version("b", "ns/p")).await.unwrap();
    assert_eq!(second.version.version, 2);
    // Going back to earlier content is a new version, never a reused number.
    let third = store.record(&new_version("a", "ns/p")).await.unwrap();
    assert_eq!(third.version.version, 3);
    assert_eq!(store.audit_trail("payments").len(), 3, "one row a version");
}

#[tokio::test]
async fn another_entry_cannot_take_over_a_config_id() {
    let store = claimed("team-a/p").await;
    let taken = store.claim("payments", &claimant("team-b/p"), true).await;
    assert!(matches!(taken, Err(Error::Claimed(_))), "{taken:?}");
    let error = store
        .record(&new_version("b", "team-b/p"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Claimed(_)), "{error}");
    let unclaimed = MemoryStore::default()
        .record(&new_version("a", "ns/p"))
        .await;
    assert!(matches!(unclaimed, Err(Error::Unclaimed { .. })));
}

#[tokio::test]
async fn applications_move_forward_once_and_are_audited() {
    let store = claimed("ns/p").await;
    assert!(store.apply(&application(2, true)).await.unwrap().is_some());
    assert!(
        store.apply(&application(2, true)).await.unwrap().is_none(),
        "already live"
    );
    let back = store.apply(&application(1, true)).await;
    assert!(matches!(back, Err(Error::Superseded { latest: 2, .. })));
    assert!(
        store.apply(&application(1, false)).await.unwrap().is_some(),
        "a rollback"
    );
    let live = store.applied("payments").await.unwrap();
    assert_eq!(live[0].version, 1);
    let rows: Vec<(String, Value)> = store
        .audit_trail("payments")
        .into_iter()
        .map(|row| (row.actor, row.changes))
        .collect();
    let applied = |version: i64, previous: Value| {
        let changes = json!({
            "event": "applied",
            "environment": "production",
            "checksum": format!("sum-{version}"),
            "previousVersion": previous,
        });
        ("bob".to_owned(), changes)
    };
    assert_eq!(rows, [applied(2, Value::Null), applied(1, json!(2))]);
    store.forget("payments", &claimant("ns/p")).await.unwrap();
    assert!(store.applied("payments").await.unwrap().is_empty());
    assert_eq!(store.audit_trail("payments").len(), 3);
}

#[tokio::test]
async fn a_binding_moves_only_from_where_it_is() {
    let store = MemoryStore::default();
    let target = Target {
        kind: crate::store::TargetKind::ConfigMap,
        namespace: "ns".into(),
        name: "payments".into(),
    };
    let projection = |environment: &str| Projection {
        config_id: "payments".into(),
        environment: environment.into(),
    };
    let bound = store
        .bind(&target, &projection("production"))
        .await
        .unwrap();
    assert_eq!(bound, projection("production"));
    let again = store.bind(&target, &projection("staging")).await.unwrap();
    assert_eq!(
        again,
        projection("production"),
        "a binding never moves by binding"
    );
    let (from, to) = (projection("staging"), projection("development"));
    store.rebind(&target, &from, &to).await.unwrap();
    assert_eq!(
        store.binding(&target).await.unwrap(),
        Some(projection("production"))
    );
    store
        .rebind(&target, &projection("production"), &to)
        .await
        .unwrap();
    assert_eq!(store.binding(&target).await.unwrap(), Some(to));
}

#[tokio::test]
async fn rotations_and_workflows_leave_an_audit_trail() {
    let store = MemoryStore::default();
    let workflow = Workflow {
        change_id: "ns/change".into(),
        config_id: "payments".into(),
        environment: "production".into(),
        proposal: json!({}),
        base_version: 1,
        requested_by: "alice".into(),
        requested_at: Timestamp::UNIX_EPOCH,
        approvals: Vec::new(),
        status: "pending".into(),
        auto_approve_for: Vec::new(),
        message: "raise the pool".into(),
        ended_by: None,
        end_reason: None,
    };
    assert!(store.sync_workflow(&workflow).await.unwrap());
    assert!(
        !store.sync_workflow(&workflow).await.unwrap(),
        "nothing new"
    );
    assert_eq!(store.audit_trail("payments").len(), 1);
}

//! A book decides what PostgreSQL's transactions decide, with no I/O.

use serde_json::json;

use super::*;
use crate::api::v1alpha1::ApprovalPolicy;
use crate::store::Snapshot;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn claimant(name: &str) -> Claimant {
    Claimant {
        namespace: "team-a".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

fn held() -> Book {
    let mut book = Book::new("team-a/payments");
    book.claim(&claimant("payments"), true, now()).unwrap();
    book
}

fn new_version(checksum: &str) -> NewVersion {
    NewVersion {
        config_id: "team-a/payments".into(),
        claimant: claimant("payments"),
        snapshot: Snapshot {
            data: json!({"pool": checksum}),
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

/// Records `new` the way the ledger does: plan, then adopt the version's object.
fn record(book: &mut Book, new: &NewVersion) -> i64 {
    match book.plan(new).unwrap() {
        Plan::Existing(number) => number,
        Plan::Number(number) => {
            book.adopt(&Version::recorded(new, number, now()));
            number
        }
    }
}

fn application(version: i64, forward_only: bool) -> Application {
    Application {
        config_id: "team-a/payments".into(),
        claimant: claimant("payments"),
        environment: "production".into(),
        version,
        checksum: format!("sum-{version}"),
        actor: "bob".into(),
        message: format!("applied version {version}"),
        change: None,
        forward_only,
        floor: FloorUpdate::Keep,
    }
}

fn events(book: &Book) -> Vec<&str> {
    let rows = book.audit.iter();
    rows.map(|row| row.changes["event"].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn versions_are_numbered_in_order_and_the_same_content_is_one_version() {
    let mut book = held();
    assert_eq!(record(&mut book, &new_version("a")), 1);
    assert_eq!(record(&mut book, &new_version("a")), 1);
    assert_eq!(record(&mut book, &new_version("b")), 2);
    assert_eq!(book.newest(), 2);
    assert_eq!(
        events(&book),
        ["claimed", "versionRecorded", "versionRecorded"]
    );
}

#[test]
fn a_version_proposed_against_an_older_one_is_superseded() {
    let mut book = held();
    record(&mut book, &new_version("a"));
    record(&mut book, &new_version("b"));
    let stale = NewVersion {
        based_on: Some(1),
        ..new_version("c")
    };
    assert!(matches!(
        book.plan(&stale),
        Err(Error::Superseded { latest: 2, .. })
    ));
}

#[test]
fn a_version_taken_twice_is_indexed_once_in_order() {
    let mut book = held();
    let second = Version::recorded(&new_version("b"), 2, now());
    let first = Version::recorded(&new_version("a"), 1, now());
    book.adopt(&second);
    book.adopt(&first);
    book.adopt(&second);
    let numbers: Vec<i64> = book.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(events(&book).len(), 3);
}

#[test]
fn nobody_but_the_holder_records_or_applies() {
    let mut book = held();
    let mallory = NewVersion {
        claimant: claimant("stolen"),
        ..new_version("a")
    };
    assert!(matches!(book.plan(&mallory), Err(Error::Claimed(_))));
    let apply = Application {
        claimant: claimant("stolen"),
        ..application(1, false)
    };
    assert!(book.apply(&apply, now()).is_err());
    assert!(book.applied.is_empty());
    let unclaimed = Book::new("team-a/other");
    assert!(matches!(
        unclaimed.held_by(&claimant("payments")),
        Err(Error::Unclaimed { .. })
    ));
}

#[test]
fn applications_move_forward_once() {
    let mut book = held();
    assert_eq!(
        book.apply(&application(2, true), now()).unwrap(),
        Some(now())
    );
    assert_eq!(book.apply(&application(2, true), now()).unwrap(), None);
    assert!(matches!(
        book.apply(&application(1, true), now()),
        Err(Error::Superseded { latest: 2, .. })
    ));
    // Remediation restores what was recorded, older or not.
    assert!(book.apply(&application(1, false), now()).unwrap().is_some());
    assert_eq!(book.applied["production"].version, 1);
    assert_eq!(events(&book), ["claimed", "applied", "applied"]);
}

#[test]
fn a_floor_is_audited_when_it_changes_only() {
    let mut book = held();
    let policy: ApprovalPolicy = serde_json::from_value(json!({"requiredApprovals": 1})).unwrap();
    let raising = Application {
        floor: FloorUpdate::Record(Some(policy)),
        ..application(1, true)
    };
    book.apply(&raising, now()).unwrap();
    book.apply(&raising, now()).unwrap();
    assert_eq!(book.floors.len(), 1);
    assert_eq!(events(&book), ["claimed", "approvalFloor", "applied"]);
}

#[test]
fn forgetting_keeps_versions_and_audit() {
    let mut book = held();
    record(&mut book, &new_version("a"));
    book.apply(&application(1, true), now()).unwrap();
    book.forget(&claimant("payments"), now()).unwrap();
    assert!(book.applied.is_empty());
    assert_eq!(book.newest(), 1);
    assert_eq!(events(&book).last(), Some(&"deleted"));
}

fn workflow(approvers: &[&str], status: &str) -> Workflow {
    Workflow {
        change_id: "team-a/raise-pool".into(),
        config_id: "team-a/payments".into(),
        environment: "production".into(),
        base_version: 1,
        proposal: json!({"patch": {"pool": 50}}),
        requested_by: "alice".into(),
        requested_at: now(),
        message: "more connections".into(),
        approvals: approvers
            .iter()
            .map(|a| WorkflowApproval {
                approver: (*a).into(),
                comment: None,
                counted: true,
            })
            .collect(),
        status: status.into(),
        ended_by: Some("carol".into()),
        end_reason: Some("not now".into()),
        auto_approve_for: Vec::new(),
    }
}

#[test]
fn a_workflow_is_audited_step_by_step() {
    let mut book = held();
    assert!(book.sync_workflow(&workflow(&[], "pending"), now()));
    assert!(!book.sync_workflow(&workflow(&[], "pending"), now()));
    assert!(book.sync_workflow(&workflow(&["bob"], "pending"), now()));
    assert!(book.sync_workflow(&workflow(&["bob"], "rejected"), now()));
    let actors: Vec<&str> = book.audit.iter().map(|r| r.actor.as_str()).collect();
    assert_eq!(
        events(&book),
        ["claimed", "requested", "approved", "rejected"]
    );
    assert_eq!(actors, ["team-a/payments", "alice", "bob", "carol"]);
}

#[test]
fn old_audit_rows_move_to_pages_and_none_is_lost() {
    let mut book = held();
    for n in 1..AUDIT_KEPT {
        book.push(rows::deleted("team-a/payments", n as i64, "x"), now());
    }
    assert!(book.full_page().is_none());
    book.push(rows::deleted("team-a/payments", 999, "x"), now());
    let page = book.full_page().unwrap().to_vec();
    assert_eq!(page.len(), PAGE);
    assert_eq!(page[0].changes["event"], "claimed");
    book.paged();
    assert_eq!((book.pages, book.audit.len()), (1, AUDIT_KEPT + 1 - PAGE));
    assert_eq!(book.audit.last().unwrap().version, Some(999));
}

#[test]
fn a_book_reads_back_as_written() {
    let mut book = held();
    record(&mut book, &new_version("a"));
    book.apply(&application(1, true), now()).unwrap();
    book.sync_workflow(&workflow(&["bob"], "pending"), now());
    let json = serde_json::to_string(&book).unwrap();
    assert_eq!(serde_json::from_str::<Book>(&json).unwrap(), book);
}

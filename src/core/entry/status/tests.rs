//! Status and Events from reports.

use super::*;

fn applied(version: i64) -> Live {
    Live::new(
        version,
        &format!("sum-{version}"),
        Timestamp::from_second(1_000).unwrap(),
    )
}

fn report() -> Report {
    Report {
        generation: Some(3),
        validated: Ok("fine".into()),
        latest: Some((2, "abc".into())),
        environments: vec![
            EnvironmentOutcome {
                name: "development".into(),
                phase: EnvironmentPhase::Applied,
                live: Some(applied(2)),
                pending_version: None,
                pending_change: None,
                secrets: None,
                consumers: None,
                message: None,
            },
            EnvironmentOutcome {
                name: "production".into(),
                phase: EnvironmentPhase::PendingApproval,
                live: Some(applied(1)),
                pending_version: Some(2),
                pending_change: None,
                secrets: None,
                consumers: None,
                message: Some("waiting for 2 approvals".into()),
            },
        ],
        sync: Some(SyncOutcome {
            synced: true,
            reason: "Recorded",
            message: "PostgreSQL and Consul hold version 2".into(),
        }),
        happened: Vec::new(),
    }
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

#[test]
fn the_summary_says_what_is_live_and_what_waits() {
    let status = build_status(None, &report(), at(10));
    assert_eq!(
        status.summary.as_deref(),
        Some("development=v2 production=v1 (v2 pending)")
    );
    assert_eq!(status.latest_version, Some(2));
    let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "PendingApproval")
    );
}

#[test]
fn the_same_report_builds_the_same_status() {
    let first = build_status(None, &report(), at(10));
    let second = build_status(Some(&first), &report(), at(20));
    assert_eq!(
        first, second,
        "a reconcile that changes nothing must write nothing"
    );
}

#[test]
fn postgres_down_is_not_ready() {
    let mut report = report();
    report.sync = Some(SyncOutcome {
        synced: false,
        reason: "PostgresUnavailable",
        message: "no new version is recorded while PostgreSQL is unavailable".into(),
    });
    let status = build_status(None, &report, at(10));
    let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PostgresUnavailable")
    );
}

#[test]
fn events_mark_transitions_only() {
    let first = build_status(None, &report(), at(10));
    let reasons = |notes: Vec<Note>| notes.iter().map(|n| n.reason).collect::<Vec<_>>();
    assert_eq!(reasons(notes(None, &first)), ["Validated"]);
    assert!(notes(Some(&first), &first).is_empty());
    let mut broken = report();
    broken.environments[1].phase = EnvironmentPhase::Degraded;
    broken.environments[1].message = Some("projection failed".into());
    let degraded = build_status(Some(&first), &broken, at(20));
    let found = notes(Some(&first), &degraded);
    assert_eq!(reasons(found.clone()), ["Degraded"]);
    assert!(found[0].warning);
    assert_eq!(found[0].message, "production: projection failed");
    assert!(notes(Some(&degraded), &degraded).is_empty());
    assert_eq!(reasons(notes(Some(&degraded), &first)), ["Recovered"]);
    let mut invalid = report();
    invalid.validated = Err(("SchemaViolation", "no".into()));
    let refused = build_status(Some(&first), &invalid, at(30));
    assert_eq!(reasons(notes(Some(&first), &refused)), ["ValidationFailed"]);
}

#[test]
fn synced_says_which_backends_hold_the_version() {
    let outcome = |backends| SyncOutcome::recorded(4, backends);
    assert_eq!(outcome(Backends::Memory).reason, "InMemoryOnly");
    assert_eq!(
        outcome(Backends::Postgres).message,
        "PostgreSQL holds version 4"
    );
    assert_eq!(
        outcome(Backends::Consul {
            ledger: "PostgreSQL",
            omitted: None
        })
        .message,
        "PostgreSQL and Consul hold version 4"
    );
    let omitted = outcome(Backends::Consul {
        ledger: "the cluster ledger",
        omitted: Some((4, "too large".into())),
    });
    assert_eq!(omitted.reason, "ConsulContentOmitted");
    let behind = outcome(Backends::ConsulBehind("refused".into()));
    assert!(!behind.synced);
    assert_eq!(behind.reason, "ConsulBehind");
}

#[test]
fn an_entry_that_stops_early_keeps_what_status_said() {
    let mut entry: ConfigEntry = serde_yaml_ng::from_str(
        "metadata: {name: e, namespace: n}\nspec: {configId: n/e, data: {}, environments: [{name: development}, {name: production}]}",
    )
    .unwrap();
    entry.status = Some(build_status(None, &report(), at(10)));
    let kept = unchanged(&entry, &BTreeSet::from(["production".to_owned()]));
    assert_eq!(kept[0].phase, EnvironmentPhase::Applied);
    assert_eq!(kept[0].live.as_ref().map(|l| l.version), Some(2));
    assert_eq!(kept[1].phase, EnvironmentPhase::Invalid);
    assert_eq!(kept[1].live.as_ref().map(|l| l.version), Some(1));
}

//! What an entry's history shows, case by case.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::core::resolve::Snapshot;
use crate::store::AuditRow;

fn entry(status: serde_json::Value) -> ConfigEntry {
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments", "namespace": "team"},
        "spec": {"configId": "team/payments", "data": {}, "environments": [{"name": "dev"}, {"name": "prod"}]},
        "status": status,
    }))
    .unwrap()
}

fn version(number: i64, source: Source) -> Version {
    Version {
        config_id: "team/payments".into(),
        version: number,
        owner: "team/payments".into(),
        snapshot: Snapshot {
            data: json!({"pool": number}),
            overrides: BTreeMap::from([("dev".into(), json!({})), ("prod".into(), json!({}))]),
            secrets: serde_json::Value::Null,
        },
        checksum: format!("sum-{number}"),
        source,
        created_by: "alice".into(),
        authors: vec!["alice".into()],
        created_at: Timestamp::from_second(number).unwrap(),
        message: format!("v{number}"),
    }
}

fn applied(environment: &str, version: i64) -> AppliedState {
    AppliedState {
        config_id: "team/payments".into(),
        environment: environment.into(),
        version,
        checksum: format!("sum-{version}"),
        applied_at: Timestamp::from_second(100).unwrap(),
    }
}

fn row(second: i64, version: i64, actor: &str, changes: serde_json::Value) -> AuditEntry {
    AuditEntry {
        at: Timestamp::from_second(second).unwrap(),
        row: AuditRow {
            config_id: "team/payments".into(),
            version: Some(version),
            actor: actor.into(),
            message: String::new(),
            changes,
        },
    }
}

#[test]
fn the_newest_versions_and_every_live_one_are_kept() {
    let versions: Vec<Version> = (1..=5).map(|n| version(n, Source::Spec)).collect();
    let applied = [applied("prod", 1), applied("dev", 5)];
    let recorded = Recorded {
        versions: &versions,
        applied: &applied,
        trail: &[],
    };
    let kept = history(&entry(json!({})), &recorded, 2);
    let names: Vec<_> = kept.iter().map(|v| v.name_any()).collect();
    assert_eq!(names, ["payments-v1", "payments-v4", "payments-v5"]);
    let live: Vec<_> = kept
        .iter()
        .map(|v| v.annotations()[ANNOTATION_LIVE_IN].clone())
        .collect();
    assert_eq!(live, ["prod", "", "dev"]);
    assert_eq!(kept[0].spec.data.value(), json!({"pool": 1}));
    assert_eq!(kept[0].metadata.namespace.as_deref(), Some("team"));
}

#[test]
fn a_version_carries_the_rows_of_the_change_that_applied_it() {
    let versions = [version(1, Source::Spec), version(2, Source::Spec)];
    let change = "team/raise";
    let trail = [
        row(1, 1, "alice", json!({"event": "versionRecorded"})),
        row(2, 2, "alice", json!({"event": "versionRecorded"})),
        // Requested and approved over version 1, then applied as version 2.
        row(
            3,
            1,
            "alice",
            json!({"event": "requested", "change": change, "environment": "prod"}),
        ),
        row(
            4,
            1,
            "bob",
            json!({"event": "approved", "change": change, "environment": "prod"}),
        ),
        row(
            5,
            1,
            "carol",
            json!({"event": "approved", "change": change, "environment": "prod"}),
        ),
        row(
            6,
            2,
            "bob,carol",
            json!({"event": "applied", "change": change, "environment": "prod"}),
        ),
        row(
            7,
            1,
            "summit-config",
            json!({"event": "applied", "change": null, "environment": "dev"}),
        ),
    ];
    let recorded = Recorded {
        versions: &versions,
        applied: &[],
        trail: &trail,
    };
    let kept = history(&entry(json!({})), &recorded, 10);
    let steps = |i: usize| -> Vec<(String, String)> {
        let audit = &kept[i].status.as_ref().unwrap().audit;
        audit
            .iter()
            .map(|s| (s.event.clone(), s.actor.clone()))
            .collect()
    };
    let pair = |e: &str, a: &str| (e.to_owned(), a.to_owned());
    assert_eq!(
        steps(0),
        [
            pair("versionRecorded", "alice"),
            pair("applied", "summit-config")
        ]
    );
    assert_eq!(
        steps(1),
        [
            pair("versionRecorded", "alice"),
            pair("requested", "alice"),
            pair("approved", "bob"),
            pair("approved", "carol"),
            pair("applied", "bob,carol"),
        ]
    );
}

#[test]
fn the_digest_follows_the_content_and_where_it_is_live() {
    let versions = [version(1, Source::Spec)];
    let digest = |applied: &[AppliedState]| {
        let recorded = Recorded {
            versions: &versions,
            applied,
            trail: &[],
        };
        history(&entry(json!({})), &recorded, 1)[0].annotations()[ANNOTATION_DIGEST].clone()
    };
    assert_eq!(digest(&[]), digest(&[]));
    assert_ne!(digest(&[]), digest(&[applied("dev", 1)]));
}

#[test]
fn the_cache_is_up_to_date_when_the_status_agrees_with_it() {
    let status = json!({"latestVersion": 3, "environments": [
        {"name": "dev", "version": 3}, {"name": "prod", "version": 2}
    ]});
    let entry = entry(status);
    let cached = |pairs: &[(i64, &str)]| -> Vec<(i64, String)> {
        pairs.iter().map(|(v, l)| (*v, (*l).to_owned())).collect()
    };
    let cases = [
        (cached(&[(1, ""), (2, "prod"), (3, "dev")]), true),
        (cached(&[(2, "prod"), (3, "dev")]), true),
        (cached(&[(2, "prod")]), false),
        (cached(&[(2, "prod,dev"), (3, "")]), false),
        (cached(&[(1, "prod"), (2, ""), (3, "dev")]), false),
        (cached(&[]), false),
    ];
    for (cached, want) in cases {
        assert_eq!(up_to_date(&entry, &cached, 3), want, "{cached:?}");
    }
    // Retention lowered to 1: version 1 is no longer kept, so the history is stale.
    let kept = cached(&[(1, ""), (2, "prod"), (3, "dev")]);
    assert!(!up_to_date(&entry, &kept, 1));
    assert!(up_to_date(&entry, &kept[1..], 1));
    assert_eq!(object_name("payments", 7), "payments-v7");
    let long = "p".repeat(253);
    assert!(object_name(&long, 7).len() <= 253);
}

#[test]
fn the_numbers_asked_for_are_the_newest_and_the_live_ones() {
    let edited = entry(json!({"latestVersion": 9, "environments": [
        {"name": "dev", "version": 9}, {"name": "prod", "version": 2}
    ]}));
    assert_eq!(wanted_numbers(&edited, 3), [2, 7, 8, 9]);
    assert_eq!(wanted_numbers(&edited, 20), (1..=9).collect::<Vec<_>>());
    assert!(wanted_numbers(&entry(serde_json::Value::Null), 3).is_empty());
}

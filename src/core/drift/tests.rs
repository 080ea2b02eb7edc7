//! Every drift finding, and what a report of findings says.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::api::v1alpha1::{ConfigFormat, DriftCheckStatus, DriftFinding, Time, find_condition};

fn spec(yaml: &str) -> DriftCheckSpec {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn want() -> Want {
    Want {
        config_id: "team-a/payments".into(),
        environment: "production".into(),
        version: 3,
        checksum: "sum-3".into(),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn paths_name_each_differing_leaf() {
    let want = map(&[("config.json", r#"{"host":"db","pool":{"max":10,"min":1}}"#)]);
    let have = map(&[(
        "config.json",
        r#"{"host":"db","pool":{"max":99},"debug":true}"#,
    )]);
    assert_eq!(
        differing_paths(&want, &have, ConfigFormat::Json),
        ["$.debug", "$.pool.max", "$.pool.min"]
    );
    let env_want = map(&[("POOL_MAX", "10")]);
    let env_have = map(&[("POOL_MAX", "11")]);
    assert_eq!(
        differing_paths(&env_want, &env_have, ConfigFormat::Env),
        ["$.POOL_MAX"]
    );
    assert_eq!(
        differing_paths(&want, &want, ConfigFormat::Json),
        ["metadata.annotations"],
        "same content, another stamp"
    );
}

#[test]
fn applied_state_differs_by_version_checksum_or_absence() {
    let want = want();
    assert_eq!(applied_paths(&want, Some((3, "sum-3"))), None);
    assert_eq!(
        applied_paths(&want, Some((2, "sum-2"))),
        Some(vec!["$.version".into(), "$.checksum".into()])
    );
    assert_eq!(applied_paths(&want, None), Some(vec!["$".into()]));
}

fn config_map(data: &[(&str, &str)], version: &str, checksum: &str) -> ConfigMap {
    let mut cm = ConfigMap {
        data: Some(map(data)),
        ..ConfigMap::default()
    };
    cm.metadata.annotations = Some(map(&[
        ("config.summit.io/version", version),
        ("config.summit.io/checksum", checksum),
    ]));
    cm
}

use k8s_openapi::api::core::v1::ConfigMap;

#[test]
fn a_config_map_matches_only_with_its_content_and_stamps() {
    let want = want();
    let rendered = map(&[("config.json", r#"{"a":1}"#)]);
    let json = ConfigFormat::Json;
    let same = config_map(&[("config.json", r#"{"a":1}"#)], "3", "sum-3");
    assert_eq!(config_map_paths(&want, &rendered, json, Some(&same)), None);
    let edited = config_map(&[("config.json", r#"{"a":2}"#)], "3", "sum-3");
    let (paths, actual) = config_map_paths(&want, &rendered, json, Some(&edited)).unwrap();
    assert_eq!(paths, ["$.a"]);
    assert!(actual.is_some());
    let restamped = config_map(&[("config.json", r#"{"a":1}"#)], "2", "sum-3");
    let (paths, _) = config_map_paths(&want, &rendered, json, Some(&restamped)).unwrap();
    assert_eq!(paths, ["metadata.annotations"]);
    assert_eq!(
        config_map_paths(&want, &rendered, json, None),
        Some((vec!["$".into()], None))
    );
}

#[test]
fn the_cache_matches_long_content_by_digest_and_nothing_else() {
    let want = want();
    let long = format!(r#"{{"notes":"{}"}}"#, "n".repeat(100));
    let rendered = map(&[("config.json", &long)]);
    let cached = |value: &str, version: &str| {
        let mut cm = config_map(&[("config.json", value)], version, "sum-3");
        crate::core::render::forget_content(&mut cm);
        cm
    };
    assert!(config_map_matches(
        &want,
        &rendered,
        Some(&cached(&long, "3"))
    ));
    let digest = crate::core::render::cached_value(&long);
    let cases = [
        ("edited", Some(cached(&long.replace('n', "m"), "3"))),
        ("restamped", Some(cached(&long, "2"))),
        ("a forged digest", Some(cached(&digest, "3"))),
        ("missing", None),
    ];
    for (case, cached) in cases {
        assert!(
            !config_map_matches(&want, &rendered, cached.as_ref()),
            "{case}"
        );
    }
    let extra = config_map(&[("config.json", &long), ("x", "1")], "3", "sum-3");
    assert!(
        !config_map_matches(&want, &rendered, Some(&extra)),
        "a key added"
    );
}

#[test]
fn a_secret_differs_by_keyed_checksum_never_by_value() {
    let expected = map(&[("password", "h1"), ("user", "h2")]);
    let stamped = map(&[("config.summit.io/secrets-checksum", "versions")]);
    let live = |keys| {
        Some(LiveSecret {
            keys,
            annotations: &stamped,
        })
    };
    let same = live(&expected);
    assert_eq!(secret_paths(&expected, same, "versions"), None);
    let changed = map(&[("password", "h9"), ("user", "h2"), ("extra", "h3")]);
    assert_eq!(
        secret_paths(&expected, live(&changed), "versions"),
        Some(vec!["$.data.extra".into(), "$.data.password".into()])
    );
    assert_eq!(
        secret_paths(&expected, same, "other versions"),
        Some(vec!["metadata.annotations".into()])
    );
    assert_eq!(
        secret_paths(&expected, None, "versions"),
        Some(vec!["$".into()])
    );
}

fn check(yaml: &str) -> DriftCheck {
    serde_yaml_ng::from_str(&format!(
        "metadata: {{name: check, namespace: team-a}}\nspec: {yaml}"
    ))
    .unwrap()
}

fn entry() -> ConfigEntry {
    serde_yaml_ng::from_str(
        r#"
metadata: {name: payments, namespace: team-a, labels: {team: payments, tier: gold}}
spec:
  configId: team-a/payments
  data: {}
  environments: [{name: development}, {name: production}, {name: staging}]
status:
  environments:
    - {name: development, version: 2, checksum: sum-2}
    - {name: production, version: 3, checksum: sum-3}
    - {name: staging}
"#,
    )
    .unwrap()
}

#[test]
fn a_check_selects_by_name_label_or_namespace_and_covers_its_sources() {
    let entry = entry();
    assert!(selects(&check("{}"), &entry));
    assert!(selects(&check("{entries: [payments]}"), &entry));
    assert!(!selects(&check("{entries: [billing]}"), &entry));
    let selector = "{selector: {matchLabels: {team: payments}, matchExpressions: [{key: tier, operator: In, values: [gold, silver]}, {key: legacy, operator: DoesNotExist}]}}";
    assert!(selects(&check(selector), &entry));
    let bronze = "{selector: {matchExpressions: [{key: tier, operator: In, values: [bronze]}]}}";
    assert!(!selects(&check(bronze), &entry));
    let mut elsewhere = check("{}");
    elsewhere.metadata.namespace = Some("team-b".into());
    assert!(!selects(&elsewhere, &entry));
    let consul_only = check("{sources: [Consul], environments: [production]}");
    assert!(covers(
        &consul_only,
        &entry,
        "production",
        DriftSource::Consul
    ));
    assert!(!covers(
        &consul_only,
        &entry,
        "production",
        DriftSource::Kubernetes
    ));
    assert!(!covers(
        &consul_only,
        &entry,
        "development",
        DriftSource::Consul
    ));
}

#[test]
fn copies_are_wanted_only_where_something_is_live() {
    let entry = entry();
    let all = wanted(&check("{}"), &entry);
    assert_eq!(all.len(), 2, "staging has nothing live");
    assert_eq!(all[1], want());
    let production = wanted(&check("{environments: [production]}"), &entry);
    assert_eq!(production, [want()]);
}

#[test]
fn intervals_default_to_five_minutes_and_stay_above_ten_seconds() {
    assert_eq!(
        check_interval(&spec("{}")).map(|(_, m)| m),
        Ok("checks every 5m".into())
    );
    let invalid = check_interval(&spec("interval: 5s")).unwrap_err();
    assert_eq!(
        invalid.message,
        "spec.interval 5s is shorter than the 10s minimum"
    );
    assert_eq!(
        check_interval(&spec("interval: soon")).unwrap_err().reason,
        "InvalidDuration"
    );
}

#[test]
fn a_finding_lists_at_most_fifty_paths() {
    let many: Vec<String> = (0..80).map(|i| format!("$.k{i}")).collect();
    let kept = bounded_paths(&many);
    assert_eq!(kept.len(), 50);
    assert_eq!(kept[49], "... and 31 more");
    assert_eq!(bounded_paths(&many[..3]), many[..3].to_vec());
}

fn finding(entry: &str, location: &str) -> Finding {
    Finding {
        entry: entry.into(),
        environment: "production".into(),
        location: location.into(),
        source: DriftSource::Kubernetes,
        paths: vec!["$.a".into()],
        expected_checksum: "0123456789abcdef".into(),
        actual_checksum: Some("other".into()),
    }
}

#[test]
fn findings_keep_when_they_were_first_seen_and_are_bounded() {
    let found = [finding("b", "configmap/x"), finding("a", "configmap/y")];
    let (first, count) = report(&[], &found, &BTreeSet::new(), &at(10));
    assert_eq!(count, 2);
    assert_eq!(first[0].entry, "a", "sorted");
    let (second, _) = report(&first, &found, &BTreeSet::new(), &at(20));
    assert_eq!(second[0].first_seen, at(10));
    let many: Vec<Finding> = (0..60)
        .map(|i| finding("a", &format!("configmap/{i:02}")))
        .collect();
    let (kept, count) = report(&[], &many, &BTreeSet::new(), &at(10));
    assert_eq!((kept.len(), count), (50, 60));
}

#[test]
fn events_mark_an_entry_starting_and_stopping_to_drift_and_each_restore() {
    let reasons = |notes: Vec<crate::core::Note>| -> Vec<&'static str> {
        notes.iter().map(|n| n.reason).collect()
    };
    let found = [finding("payments", "configmap/x")];
    let (drifting, _) = report(&[], &found, &BTreeSet::new(), &at(10));
    assert_eq!(reasons(notes(&[], &drifting)), ["DriftDetected"]);
    assert!(notes(&drifting, &drifting).is_empty());
    assert_eq!(reasons(notes(&drifting, &[])), ["DriftResolved"]);
    let restored = BTreeSet::from([found[0].place()]);
    let (remediated, _) = report(&drifting, &found, &restored, &at(20));
    assert_eq!(
        reasons(notes(&drifting, &remediated)),
        ["DriftResolved", "DriftRemediated"]
    );
}

fn run(report: Vec<DriftFinding>) -> Run {
    Run {
        generation: Some(1),
        summary: "checks every 5m".into(),
        count: report.len(),
        report,
        entries_checked: 1,
        request: None,
    }
}

#[test]
fn status_changes_only_when_the_findings_do() {
    let found = [finding("payments", "configmap/x")];
    let (drifting, _) = report(&[], &found, &BTreeSet::new(), &at(10));
    let first = status(&DriftCheckStatus::default(), run(drifting.clone()), at(10));
    assert_eq!(first.drifted, Some(true));
    let drifted = find_condition(&first.conditions, "Drifted").unwrap();
    assert_eq!(drifted.reason, "DriftFound");
    let again = status(&first, run(drifting), at(20));
    assert_eq!(first, again, "a quiet check writes nothing");
    let clean = status(&first, run(Vec::new()), at(30));
    assert_eq!(clean.drifted, Some(false));
    assert_eq!(clean.last_check_time, Some(at(30)));
}

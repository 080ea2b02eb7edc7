//! Every step of a rotation's decisions.

use k8s_openapi::jiff::Timestamp;
use secrecy::SecretString;

use super::*;
use crate::api::v1alpha1::{SecretRotationPolicySpec, find_condition};

fn spec(extra: &str) -> SecretRotationPolicySpec {
    serde_yaml_ng::from_str(&format!(
        "provider: AwsSecretsManager\nsecretId: db\ntarget: {{name: db}}\n{extra}"
    ))
    .unwrap()
}

fn policy(annotations: &str, extra: &str) -> SecretRotationPolicy {
    serde_yaml_ng::from_str(&format!(
        "metadata: {{name: db-password, namespace: team-a, annotations: {annotations}}}\nspec: {{provider: InCluster, secretId: db, target: {{name: db}}, rotationInterval: 30d {extra}}}"
    ))
    .unwrap()
}

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn schedule() -> Schedule {
    check_schedule(&spec("rotationInterval: 30d")).unwrap()
}

#[test]
fn schedules_parse_and_fit_together() {
    assert_eq!(
        check_schedule(&spec("rotationInterval: 90d")).map(|s| s.summary),
        Ok("rotates every 90d with a grace period of 7d".into())
    );
    let cases = [
        (
            "rotationInterval: 7d",
            "InvalidSchedule",
            "spec.gracePeriod 7d must be shorter",
        ),
        (
            "rotationInterval: 30m\ngracePeriod: 5m",
            "InvalidSchedule",
            "spec.minimumInterval 1h",
        ),
        (
            "rotationInterval: soon",
            "InvalidDuration",
            "spec.rotationInterval",
        ),
    ];
    for (extra, reason, says) in cases {
        let invalid = check_schedule(&spec(extra)).unwrap_err();
        assert_eq!(invalid.reason, reason, "{extra}");
        assert!(invalid.message.contains(says), "{}", invalid.message);
    }
    let in_cluster = [
        ("secretId: db, rotationFunction: fn", "InvalidRotation"),
        ("secretId: Not_A_Label", "InvalidSecretId"),
    ];
    for (fields, reason) in in_cluster {
        let spec: SecretRotationPolicySpec = crate::core::fixtures::yaml(&format!(
            "{{provider: InCluster, target: {{name: db}}, rotationInterval: 30d, {fields}}}"
        ));
        assert_eq!(
            check_schedule(&spec).unwrap_err().reason,
            reason,
            "{fields}"
        );
    }
}

fn status(yaml: &str) -> SecretRotationPolicyStatus {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn a_rotation_is_due_when_scheduled_or_asked_for_and_free_to_go() {
    let schedule = schedule();
    let idle = status(&format!("{{nextRotationTime: '{}'}}", at(100 * DAY).0));
    let quiet = policy("{}", "");
    assert_eq!(due(&quiet, &idle, &schedule, &at(DAY)), Due::No);
    assert_eq!(
        due(&quiet, &idle, &schedule, &at(100 * DAY)),
        Due::Rotate { request: None }
    );
    let suspended = policy("{}", ", suspend: true");
    assert_eq!(due(&suspended, &idle, &schedule, &at(100 * DAY)), Due::No);
    let asked = policy("{config.summit.io/rotate: now-1}", "");
    assert_eq!(
        due(&asked, &idle, &schedule, &at(DAY)),
        Due::Rotate {
            request: Some("now-1".into())
        }
    );
    let answered = status("{lastHandledRequest: now-1}");
    assert_eq!(due(&asked, &answered, &schedule, &at(DAY)), Due::No);
}

#[test]
fn a_due_rotation_waits_for_the_grace_period_and_the_minimum_interval() {
    let schedule = schedule();
    let asked = policy("{config.summit.io/rotate: again}", "");
    let in_grace = status("{previousVersion: v1}");
    let Due::Waits(why) = due(&asked, &in_grace, &schedule, &at(DAY)) else {
        panic!("waits for the previous version");
    };
    assert!(why.contains("until the previous version v1 retires"));
    let just_rotated = status(&format!("{{lastRotationTime: '{}'}}", at(DAY).0));
    let Due::Waits(why) = due(&asked, &just_rotated, &schedule, &at(DAY + 60)) else {
        panic!("waits for the minimum interval");
    };
    assert!(why.contains("minimum interval"));
    assert!(matches!(
        due(&asked, &just_rotated, &schedule, &at(DAY + HOUR)),
        Due::Rotate { .. }
    ));
}

#[test]
fn the_previous_value_retires_after_its_grace_period_and_its_consumers() {
    let grace = status(&format!(
        "{{previousVersion: v1, previousRetiresAt: '{}'}}",
        at(10 * DAY).0
    ));
    assert_eq!(retirement(&grace, (0, 2), &at(DAY)), Retirement::NotYet);
    let Retirement::Consumers(why) = retirement(&grace, (1, 2), &at(10 * DAY)) else {
        panic!("waits for its consumers");
    };
    assert!(why.contains("(1 of 2 do)"));
    assert_eq!(
        retirement(&grace, (2, 2), &at(10 * DAY)),
        Retirement::Retire("v1".into())
    );
    assert_eq!(
        retirement(&status("{}"), (0, 0), &at(10 * DAY)),
        Retirement::NotYet
    );
}

#[test]
fn each_step_leaves_status_where_the_next_one_starts() {
    let schedule = schedule();
    let mut status = SecretRotationPolicyStatus::default();
    adopted(&mut status, "v1", &schedule, &at(0));
    assert_eq!(status.rotation_count, Some(0));
    assert_eq!(status.next_rotation_time, Some(at(30 * DAY)));
    rotated(&mut status, ("v1", "v2"), 1, &schedule, &at(30 * DAY));
    assert_eq!(status.current_version.as_deref(), Some("v2"));
    assert_eq!(status.previous_version.as_deref(), Some("v1"));
    assert_eq!(status.previous_retires_at, Some(at(37 * DAY)));
    assert_eq!(status.next_rotation_time, Some(at(60 * DAY)));
    retired(&mut status);
    assert_eq!(status.previous_version, None);
    assert_eq!(token("uid", 2), "uid-2");
}

#[test]
fn looks_again_at_the_next_due_time_or_soon_while_waiting() {
    let status = status(&format!(
        "{{nextRotationTime: '{}', previousRetiresAt: '{}'}}",
        at(1000).0,
        at(400).0
    ));
    assert_eq!(requeue(&status, false, &at(100)), Duration::from_secs(300));
    assert_eq!(requeue(&status, true, &at(100)), WAITING_POLL);
    // Past times wait on something else: never a hot loop.
    assert_eq!(requeue(&status, false, &at(2000)), LONGEST_SLEEP);
}

#[test]
fn a_failure_is_reported_once_and_ready_follows_the_projection() {
    let schedule = schedule();
    let target = ("db", &schedule);
    let current = SecretRotationPolicyStatus::default();
    let next = status("{currentVersion: v1}");
    let when = (Some(1), at(10));
    let (ok, failed) = status_of(&current, next.clone(), target, None, when.clone());
    assert!(failed.is_none());
    let ready = find_condition(&ok.conditions, CONDITION_READY).unwrap();
    assert_eq!(ready.reason, "Projected");
    let refused = Some((
        "ProviderUnavailable",
        "the provider did not answer".to_owned(),
    ));
    let (broken, failed) = status_of(&ok, next.clone(), target, refused.clone(), when.clone());
    assert_eq!(failed.unwrap().note.reason, "RotationFailed");
    let (_, again) = status_of(&broken, next, target, refused, when);
    assert!(again.is_none(), "the same failure is not reported twice");
}

fn status_of(
    current: &SecretRotationPolicyStatus,
    next: SecretRotationPolicyStatus,
    (target, schedule): (&str, &Schedule),
    failure: Option<(&'static str, String)>,
    when: (Option<i64>, Time),
) -> (SecretRotationPolicyStatus, Option<Happened>) {
    status_after(
        current,
        next,
        (schedule, target),
        &Progress::default(),
        failure,
        when,
    )
}

use super::status as status_after;

#[test]
fn the_target_holds_the_current_value_and_the_previous_one_in_grace() {
    let policy = policy("{}", "");
    let (current, previous) = (SecretString::from("new"), SecretString::from("old"));
    let (data, annotations) = target_data(&policy, ("v2", &current), Some(("v1", &previous)));
    assert_eq!(data.keys().collect::<Vec<_>>(), ["previous", "value"]);
    assert_eq!(annotations["config.summit.io/previous-version"], "v1");
    assert_eq!(annotations["config.summit.io/policy"], "team-a/db-password");
    let one = target_checksums(&policy, ("v2", &current), None);
    assert_eq!(one.len(), 1);
}

#[test]
fn a_target_is_the_policy_s_only_when_labelled_and_annotated_so() {
    let policy = policy("{}", "");
    let secret =
        |meta: &str| -> Secret { serde_yaml_ng::from_str(&format!("metadata: {meta}")).unwrap() };
    let own = secret(
        "{name: db, labels: {app.kubernetes.io/managed-by: summit-config}, annotations: {config.summit.io/policy: team-a/db-password}}",
    );
    assert_eq!(holder(&own, &policy), None);
    let unlabelled =
        secret("{name: db, annotations: {config.summit.io/policy: team-a/db-password}}");
    assert!(holder(&unlabelled, &policy).is_some());
    let entry = secret("{name: db, annotations: {config.summit.io/entry: team-a/payments}}");
    assert_eq!(
        holder(&entry, &policy).as_deref(),
        Some("ConfigEntry team-a/payments")
    );
    let other = secret(
        "{name: db, labels: {app.kubernetes.io/managed-by: summit-config}, annotations: {config.summit.io/policy: team-b/x}}",
    );
    assert_eq!(
        holder(&other, &policy).as_deref(),
        Some("SecretRotationPolicy team-b/x")
    );
}

use k8s_openapi::api::core::v1::Secret;

//! Every branch of a change's decisions, from YAML fixtures.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;

use super::*;
use crate::core::fixtures::{entry_in, yaml};
use crate::{
    api::v1alpha1::{ConfigChangeStatus, ConfigFormat},
    core::{
        approval::{Excluded, Requirements},
        resolve::{CompiledSchema, Snapshot},
    },
};

fn spec(text: &str) -> ConfigChangeSpec {
    yaml(text)
}

fn entry() -> ConfigEntry {
    entry_in(
        "team",
        "{configId: payments, data: {}, environments: [{name: development}, {name: production}]}",
    )
}

const CHANGE: &str = r#"
configEntry: payments
environment: production
patch: {pool: {max: 20}}
message: more connections
requestedBy: alice
"#;

fn at(second: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
}

#[test]
fn nothing_vouches_for_a_change_made_without_the_policies_or_before_them() {
    assert!(vouched(&Vouching::NotRequired, None).is_ok());
    let missing = vouched(
        &Vouching::Missing("the binding is missing".into()),
        Some(&at(10)),
    )
    .unwrap_err();
    assert_eq!(
        (missing.reason, missing.unrecorded),
        ("GuardsMissing", true)
    );
    assert_eq!(missing.phase, Some(ChangePhase::Pending));
    for created in [5, 10] {
        let before = vouched(&Vouching::Since(Some(at(10))), Some(&at(created))).unwrap_err();
        assert_eq!(before.reason, "Unvouched", "created at {created}");
        assert_eq!(before.phase, Some(ChangePhase::Failed));
    }
    assert!(vouched(&Vouching::Since(Some(at(10))), Some(&at(11))).is_ok());
}

#[test]
fn a_change_targets_an_existing_environment_with_readable_content() {
    let missing = target(&spec(CHANGE), None).unwrap_err();
    assert_eq!(missing.reason, "EntryNotFound");
    assert!(missing.message.contains("\"payments\" does not exist"));
    let staging = target(
        &spec(&CHANGE.replace("production", "staging")),
        Some(&entry()),
    );
    assert_eq!(
        staging.unwrap_err().message,
        "spec.environment: ConfigEntry \"payments\" has no environment \"staging\" (it has development, production)"
    );
    assert!(target(&spec(CHANGE), Some(&entry())).is_ok());
    let mut deep = spec(CHANGE);
    deep.patch = Some(json!(crate::api::v1alpha1::free_form::TOO_DEEP));
    assert_eq!(
        target(&deep, Some(&entry())).unwrap_err().reason,
        "Unreadable"
    );
}

#[test]
fn the_base_is_what_the_change_names_then_what_status_remembers_then_what_runs() {
    let mut named = spec(CHANGE);
    named.base_version = Some(3);
    assert_eq!(base_version(&named, Some(4), 5), 3);
    assert_eq!(base_version(&spec(CHANGE), Some(4), 5), 4);
    let mut promotion = spec(CHANGE);
    promotion.version = Some(6);
    assert_eq!(base_version(&promotion, None, 5), 6);
    assert_eq!(base_version(&spec(CHANGE), None, 5), 5);
}

fn snapshot(data: serde_json::Value) -> Snapshot {
    Snapshot {
        data,
        overrides: BTreeMap::from([("production".to_owned(), json!({}))]),
        secrets: serde_json::Value::Null,
    }
}

struct World {
    latest: Snapshot,
    live: Snapshot,
    named: Snapshot,
}

fn world() -> World {
    World {
        latest: snapshot(json!({"pool": {"max": 30}})),
        live: snapshot(json!({"pool": {"max": 10, "min": 1}})),
        named: snapshot(json!({"pool": {"max": 5}})),
    }
}

fn known(world: &World) -> Known<'_> {
    Known {
        config_id: "payments",
        latest: Recorded {
            number: 3,
            snapshot: &world.latest,
        },
        applied: Some(2),
        spec_latest: Some(3),
        own: None,
        live: Some(&world.live),
        named: Some(Recorded {
            number: 1,
            snapshot: &world.named,
        }),
    }
}

#[test]
fn a_patch_builds_on_what_the_environment_runs() {
    let world = world();
    let proposal = propose(&spec(CHANGE), 2, &known(&world)).unwrap();
    assert_eq!(
        proposal,
        Proposal::New(snapshot(json!({"pool": {"max": 20, "min": 1}})))
    );
}

#[test]
fn new_data_against_a_base_that_moved_on_is_superseded() {
    let world = world();
    let data = spec(&CHANGE.replace("patch: {pool: {max: 20}}", "data: {pool: {max: 7}}"));
    let superseded = propose(&data, 1, &known(&world)).unwrap_err();
    assert_eq!(superseded.phase, Some(ChangePhase::Superseded));
    assert!(
        superseded
            .message
            .contains("proposed against version 1, but version 2")
    );
    assert_eq!(
        propose(&data, 2, &known(&world)).unwrap(),
        Proposal::New(snapshot(json!({"pool": {"max": 7}})))
    );
}

#[test]
fn a_retry_applies_what_the_change_recorded_unless_something_newer_went_live() {
    let world = world();
    let own = Recorded {
        number: 4,
        snapshot: &world.latest,
    };
    let retry = Known {
        own: Some(own),
        ..known(&world)
    };
    assert_eq!(
        propose(&spec(CHANGE), 2, &retry).unwrap().promoted(),
        Some(4)
    );
    let overtaken = Known {
        applied: Some(5),
        ..retry
    };
    let ended = propose(&spec(CHANGE), 2, &overtaken).unwrap_err();
    assert_eq!(
        ended.message,
        "version 5 went live after this change's version 4"
    );
}

#[test]
fn rollbacks_and_promotions_take_the_version_they_name() {
    let world = world();
    let rollback = spec(&CHANGE.replace("patch: {pool: {max: 20}}", "rollbackTo: 1"));
    assert_eq!(
        propose(&rollback, 2, &known(&world)).unwrap(),
        Proposal::New(world.named.clone())
    );
    let missing = Known {
        named: None,
        ..known(&world)
    };
    let failed = propose(&rollback, 2, &missing).unwrap_err();
    assert_eq!(failed.reason, "VersionNotFound");
    assert_eq!(
        failed.message,
        "spec.rollbackTo: payments has no version 1 (the newest is 3)"
    );
    let promote = spec(&CHANGE.replace("patch: {pool: {max: 20}}", "version: 3"));
    let named = Known {
        named: Some(Recorded {
            number: 3,
            snapshot: &world.latest,
        }),
        ..known(&world)
    };
    assert_eq!(propose(&promote, 3, &named).unwrap().promoted(), Some(3));
    let newer_spec = Known {
        spec_latest: Some(4),
        ..named
    };
    assert_eq!(
        propose(&promote, 3, &newer_spec).unwrap_err().message,
        "the ConfigEntry's spec has recorded version 4 since version 3"
    );
    let newer_live = Known {
        applied: Some(4),
        ..named
    };
    assert_eq!(
        propose(&promote, 3, &newer_live).unwrap_err().message,
        "production already runs version 4, newer than version 3"
    );
}

#[test]
fn content_must_satisfy_the_schema_and_render() {
    let schema = || {
        Ok(Some((
            CompiledSchema::compile(
                &json!({"properties": {"pool": {"properties": {"max": {"maximum": 10}}}}}),
            )
            .unwrap(),
            "spec.schema".to_owned(),
        )))
    };
    let violation = check_content(
        &json!({"pool": {"max": 20}}),
        "production",
        schema(),
        ConfigFormat::Json,
    )
    .unwrap_err();
    assert_eq!(violation.reason, "SchemaViolation");
    assert_eq!(violation.validation_errors.len(), 1);
    let nested = check_content(
        &json!(["not", "an", "object"]),
        "production",
        Ok(None),
        ConfigFormat::Env,
    );
    assert_eq!(nested.unwrap_err().reason, "RenderFailed");
    let bad_schema = check_content(
        &json!({}),
        "production",
        Err(Invalid {
            reason: "InvalidSchema",
            message: "nope".into(),
        }),
        ConfigFormat::Json,
    );
    assert_eq!(bad_schema.unwrap_err().reason, "InvalidSchema");
    assert!(
        check_content(
            &json!({"pool": {"max": 5}}),
            "production",
            schema(),
            ConfigFormat::Json
        )
        .is_ok()
    );
}

fn tally(approvals: &str, policy: &str) -> crate::core::approval::Tally {
    let policy = serde_yaml_ng::from_str(policy).unwrap();
    let approvals: Vec<crate::api::v1alpha1::Approval> =
        serde_yaml_ng::from_str(approvals).unwrap();
    Requirements::new("production", Some(&policy), None, &[])
        .count(&approvals, &Excluded::requester("alice"))
}

#[test]
fn approvals_decide_unless_someone_rejected_or_time_ran_out() {
    let one = tally("[{approver: bob}]", "{}");
    let none = tally("[]", "{}");
    let rejection: Rejection =
        serde_yaml_ng::from_str("{rejectedBy: carol, reason: not now}").unwrap();
    let Judgement::Rejected(rejected) = judge(Some(&rejection), &one, None, Duration::ZERO) else {
        panic!("a rejection ends it");
    };
    assert_eq!(rejected.message, "rejected by carol: not now");
    assert_eq!(rejected.ended_by.as_deref(), Some("carol"));
    assert_eq!(judge(None, &one, None, Duration::ZERO), Judgement::Approved);
    let expiry = Some(("1h", Duration::from_secs(3600)));
    let Judgement::Waiting(waiting) = judge(None, &none, expiry, Duration::from_secs(600)) else {
        panic!("short of approvals, it waits");
    };
    assert_eq!(waiting.requeue, Some(Duration::from_secs(3001)));
    let Judgement::Expired(expired) = judge(None, &none, expiry, Duration::from_secs(3600)) else {
        panic!("past its expiry, it expires");
    };
    assert_eq!(
        expired.message,
        "not approved within 1h (the environment's pendingExpiry)"
    );
}

#[test]
fn the_audit_names_the_approvers_or_the_requester() {
    let change = spec(CHANGE);
    assert_eq!(
        application_note("team/raise@1", &change, &[]),
        (
            "alice".to_owned(),
            "ConfigChange team/raise@1: more connections (requested by alice, auto-approved)"
                .to_owned()
        )
    );
    let (actor, message) =
        application_note("team/raise@1", &change, &["bob".into(), "carol".into()]);
    assert_eq!(actor, "bob,carol");
    assert!(message.ends_with("approved by bob, carol)"), "{message}");
}

#[test]
fn status_records_when_a_change_applied_or_ended_and_lists_a_bounded_few_errors() {
    let applied_status = status(
        &ConfigChangeStatus::default(),
        &applied(4, "production"),
        Some(1),
        at(100),
    );
    assert_eq!(applied_status.resulting_version, Some(4));
    assert_eq!(applied_status.applied_at, Some(at(100)));
    assert_eq!(applied_status.approved_at, Some(at(100)));
    assert_eq!(applied_status.finished_at, None);
    let errors: Vec<String> = (0..30).map(|i| format!("error {i}")).collect();
    let failed = Decision {
        validation_errors: errors,
        ..Decision::failed(Invalid {
            reason: "SchemaViolation",
            message: "bad".into(),
        })
    };
    let failed_status = status(&ConfigChangeStatus::default(), &failed, Some(1), at(100));
    assert_eq!(failed_status.finished_at, Some(at(100)));
    assert_eq!(failed_status.validation_errors.len(), STATUS_LIST_LIMIT);
    assert_eq!(failed_status.validation_errors[19], "... and 11 more");
}

#[test]
fn a_change_ending_while_it_bakes_leaves_its_canary_rolled_back() {
    use crate::api::v1alpha1::{ConfigChangeStatus, RolloutStatus, RolloutStep};
    let baking = RolloutStatus {
        step: RolloutStep::Canary,
        share: None,
        version: 4,
        started_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        bake_until: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        message: None,
    };
    let current = ConfigChangeStatus {
        rollout: Some(baking),
        phase: Some(ChangePhase::Approved),
        ..ConfigChangeStatus::default()
    };
    let rejected = Decision::end(
        ChangePhase::Rejected,
        "Rejected",
        "rejected by bob: no".into(),
    );
    let next = status(
        &current,
        &rejected,
        Some(1),
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    let rollout = next.rollout.expect("rollout");
    assert_eq!(rollout.step, RolloutStep::RolledBack);
    assert_eq!(rollout.message.as_deref(), Some("rejected by bob: no"));
    // Still waiting: the canary bakes on.
    let waiting = Decision::waiting_approved("WaitingForCanary", "later".into());
    let next = status(
        &current,
        &waiting,
        Some(1),
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    assert_eq!(next.rollout.expect("rollout").step, RolloutStep::Canary);
}

#[test]
fn a_split_under_way_ends_only_through_its_approved_path() {
    let waiting = || Judgement::Waiting(Decision::waiting("WaitingForApproval", "1 of 2".into()));
    let rejected = || {
        Judgement::Rejected(Decision::end(
            ChangePhase::Rejected,
            "Rejected",
            "no".into(),
        ))
    };
    // Nothing recorded yet: the approvals decide, as for any change.
    assert!(matches!(judged(waiting(), false), Judged::Decided(_)));
    assert!(matches!(judged(rejected(), false), Judged::Decided(_)));
    assert_eq!(
        judged(Judgement::Approved, false),
        Judged::Applies { unapproved: None }
    );
    // A step recorded: a rejection or lost approval goes back first, saying why.
    assert_eq!(
        judged(rejected(), true),
        Judged::Applies { unapproved: None }
    );
    assert_eq!(
        judged(waiting(), true),
        Judged::Applies {
            unapproved: Some("1 of 2".into())
        }
    );
}

//! Each approval rule.

use super::*;

fn policy(yaml: &str) -> ApprovalPolicy {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn approvals(yaml: &str) -> Vec<Approval> {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn policies_compare_by_count_then_by_who_may_approve() {
    let one_anyone = policy("{}");
    let two_anyone = policy("{requiredApprovals: 2}");
    let one_group = policy("{approverGroups: [summit:approvers]}");
    let auto = policy("{autoApprove: true}");
    assert!(at_least_as_strong(Some(&two_anyone), Some(&one_anyone)));
    assert!(!at_least_as_strong(Some(&one_anyone), Some(&two_anyone)));
    assert!(at_least_as_strong(Some(&one_group), Some(&one_anyone)));
    assert!(!at_least_as_strong(Some(&one_anyone), Some(&one_group)));
    assert!(!at_least_as_strong(None, Some(&one_anyone)));
    assert!(!at_least_as_strong(Some(&auto), Some(&one_group)));
    assert!(at_least_as_strong(None, Some(&auto)));
    assert!(at_least_as_strong(Some(&one_group), Some(&one_group)));
    let other_group = policy("{approverGroups: [others]}");
    assert!(!at_least_as_strong(Some(&other_group), Some(&one_group)));
}

#[test]
fn a_weaker_spec_answers_to_the_recorded_floor_too() {
    let floor = policy("{approverGroups: [summit:approvers]}");
    let weaker = Requirements::new("production", None, Some((3, Some(&floor))), &[]);
    assert!(!weaker.auto_approves());
    assert_eq!(
        weaker.relaxed_floor().map(|r| &r.origin),
        Some(&Origin::Recorded { version: 3 })
    );
    let same = Requirements::new("production", Some(&floor), Some((3, Some(&floor))), &[]);
    assert!(same.relaxed_floor().is_none());
    assert_eq!(same.all.len(), 1);
}

#[test]
fn platform_floors_cover_environments_by_pattern() {
    let floor: PlatformFloor = serde_json::from_value(serde_json::json!({
        "environments": "prod*", "requiredApprovals": 2
    }))
    .unwrap();
    assert!(floor.covers("production"));
    assert!(floor.covers("prod"));
    assert!(!floor.covers("preprod"));
    let floors = [floor];
    let requirements = Requirements::new("production", None, None, &floors);
    assert!(!requirements.auto_approves());
    assert_eq!(requirements.required(), 2);
    assert!(Requirements::new("staging", None, None, &floors).auto_approves());
}

#[test]
fn patterns_match_whole_names() {
    assert!(glob_matches("*", "anything"));
    assert!(glob_matches("prod-*-eu", "prod-payments-eu"));
    assert!(!glob_matches("prod-*-eu", "prod-payments-us"));
    assert!(glob_matches("production", "production"));
    assert!(!glob_matches("production", "production-2"));
    assert!(glob_matches("*-prod", "eu-prod"));
    assert!(!glob_matches("a*a", "a"));
}

#[test]
fn approvals_count_once_per_approver_and_never_the_requester() {
    let requirements = Requirements::new(
        "production",
        Some(&policy("{requiredApprovals: 2}")),
        None,
        &[],
    );
    let tally = requirements.count(
        &approvals("[{approver: bob}, {approver: bob}, {approver: alice}, {approver: carol}]"),
        &Excluded::requester("alice"),
    );
    assert!(tally.approved());
    assert_eq!(tally.counted, ["bob", "carol"]);
    let reasons: Vec<(&str, &str)> = tally
        .ignored
        .iter()
        .map(|i| (i.approver.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("bob", "counted once already"),
            ("alice", "the requester cannot approve their own change")
        ]
    );
}

#[test]
fn every_requirement_must_be_met() {
    let floor = policy("{approverGroups: [summit:approvers]}");
    let requirements = Requirements::new(
        "production",
        Some(&policy("{requiredApprovals: 2}")),
        Some((4, Some(&floor))),
        &[],
    );
    let outsider_only = requirements.count(
        &approvals("[{approver: dave}, {approver: erin}]"),
        &Excluded::requester("alice"),
    );
    assert!(!outsider_only.approved());
    assert_eq!(outsider_only.missing.len(), 1);
    assert_eq!(
        outsider_only.waiting_message(),
        "waiting for 1 more approval(s) for the policy recorded when version 4 went live (1 approval from group summit:approvers)"
    );
    let with_group = requirements.count(
        &approvals("[{approver: dave}, {approver: bob, groups: [summit:approvers]}]"),
        &Excluded::requester("alice"),
    );
    assert!(with_group.approved());
    assert_eq!(with_group.counted_toward_required(), 2);
}

#[test]
fn authors_of_what_a_change_brings_live_are_excluded() {
    let requirements = Requirements::new("production", Some(&policy("{}")), None, &[]);
    let mut excluded = Excluded::requester("bob");
    excluded.add(
        "alice",
        "alice wrote version 5, which this change also brings live".into(),
    );
    let tally = requirements.count(&approvals("[{approver: alice}]"), &excluded);
    assert!(!tally.approved());
    assert_eq!(
        tally.ignored[0].reason,
        "alice wrote version 5, which this change also brings live"
    );
}

#[test]
fn only_listed_approvers_or_their_groups_count_when_the_policy_lists_them() {
    let requirements = Requirements::new(
        "production",
        Some(&policy(
            "{approvers: [bob], approverGroups: ['summit:approvers']}",
        )),
        None,
        &[],
    );
    let tally = requirements.count(
        &approvals("[{approver: bob}, {approver: carol, groups: [summit:approvers]}, {approver: dave, groups: [other]}]"),
        &Excluded::requester("alice"),
    );
    assert_eq!(tally.counted, ["bob", "carol"]);
    assert_eq!(
        tally.ignored[0].reason,
        "not among the approvers of the environment's policy (users: bob; groups: summit:approvers)"
    );
}

#[test]
fn the_floor_follows_a_proposal_or_a_stronger_spec_and_otherwise_stays() {
    let one = policy("{}");
    let two = policy("{requiredApprovals: 2}");
    assert_eq!(floor_after(Some(Some(&two)), None, None), Some(two.clone()));
    assert_eq!(
        floor_after(Some(Some(&one)), Some(&two), None),
        Some(two.clone())
    );
    assert_eq!(
        floor_after(Some(Some(&two)), None, Some(&one)),
        Some(one.clone())
    );
    assert_eq!(floor_after(None, None, None), None);
    assert_eq!(floor_after(Some(None), Some(&one), None), Some(one.clone()));
}

#[test]
fn a_floor_is_recorded_only_when_it_changes_and_guards_something() {
    let one = policy("{}");
    assert_eq!(floor_change(None, None, None), None);
    assert_eq!(
        floor_change(None, Some(&one), None),
        Some(Some(one.clone()))
    );
    assert_eq!(floor_change(Some(Some(&one)), Some(&one), None), None);
    assert_eq!(
        floor_change(Some(Some(&one)), None, Some(&policy("{autoApprove: true}"))),
        Some(Some(policy("{autoApprove: true}")))
    );
}

#[test]
fn policies_read_as_a_sentence() {
    assert_eq!(describe(None), "no approval");
    assert_eq!(describe(Some(&policy("{}"))), "1 approval");
    assert_eq!(
        describe(Some(&policy(
            "{requiredApprovals: 2, approvers: [bob], approverGroups: [ops]}"
        ))),
        "2 approvals from bob or group ops"
    );
}

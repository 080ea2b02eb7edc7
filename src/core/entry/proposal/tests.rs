//! Every branch of how a spec version is proposed.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::*;

fn entry() -> ConfigEntry {
    serde_yaml_ng::from_str(
        r#"
metadata: {name: payments, namespace: team-a, uid: 0123456789abcdef, generation: 4, labels: {team: a}}
spec:
  configId: team-a/payments
  data: {}
  environments: [{name: production, approval: {requiredApprovals: 2}}]
"#,
    )
    .unwrap()
}

fn proposal(policy: Option<ApprovalPolicy>) -> Proposal {
    Proposal {
        version: 3,
        policy,
        requester: "alice".into(),
        co_authors: vec!["bob".into()],
    }
}

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn relaxed() -> ApprovalPolicy {
    serde_yaml_ng::from_str("{autoApprove: true}").unwrap()
}

#[test]
fn the_version_author_asks_unless_only_the_policy_relaxes() {
    let version_authors = ["alice".to_owned(), "bob".to_owned()];
    let spec_authors = ["carol".to_owned(), "bob".to_owned()];
    let recorded = Writers {
        author: "alice",
        authors: &version_authors,
    };
    let spec = Writers {
        author: "carol",
        authors: &spec_authors,
    };
    let content = Proposal::new((3, None), false, recorded, spec);
    assert_eq!(content.requester, "alice");
    assert_eq!(content.co_authors, ["alice", "bob", "carol"]);
    let relaxation = Proposal::new((3, Some(relaxed())), true, recorded, spec);
    assert_eq!(relaxation.requester, "carol");
}

#[test]
fn versions_are_held_while_their_authors_or_the_policies_cannot_be_trusted() {
    let since = Vouching::Since(Some(at(10)));
    let unproven = held(&since, false, 3, &at(100)).unwrap();
    assert!(
        unproven
            .message
            .contains("nothing proves who wrote version 3")
    );
    assert_eq!(unproven.retry, None);
    let settling = held(&since, true, 3, &at(11)).unwrap();
    assert_eq!(settling.retry, Some(Duration::from_secs(1)));
    let missing = held(
        &Vouching::Missing("the binding is gone".into()),
        true,
        3,
        &at(11),
    );
    assert!(missing.unwrap().message.ends_with("the binding is gone"));
    assert_eq!(held(&since, true, 3, &at(100)), None);
    // Without the policies required, nothing is proven and nothing is held.
    assert_eq!(held(&Vouching::NotRequired, false, 3, &at(0)), None);
}

fn existing(
    name: &str,
    owner_uid: &str,
    requester: &str,
    phase: Option<ChangePhase>,
    reason: &str,
) -> Arc<ConfigChange> {
    let phase = phase.map_or("~".to_owned(), |p| format!("{p:?}"));
    Arc::new(
        serde_yaml_ng::from_str(&format!(
            r#"
metadata:
  name: {name}
  namespace: team-a
  ownerReferences: [{{apiVersion: config.summit.io/v1alpha1, kind: ConfigEntry, name: payments, uid: {owner_uid}, controller: true}}]
spec: {{configEntry: payments, environment: production, version: 3, message: m, requestedBy: {requester}}}
status:
  phase: {phase}
  conditions: [{{type: Validated, status: "False", reason: {reason}, message: m, lastTransitionTime: "2026-01-01T00:00:00Z"}}]
"#
        ))
        .unwrap(),
    )
}

fn choose_among(changes: &[Arc<ConfigChange>], proposal: &Proposal) -> Choice {
    let entry = entry();
    let by_name: BTreeMap<String, Arc<ConfigChange>> =
        changes.iter().map(|c| (c.name_any(), c.clone())).collect();
    choose(&entry, &entry.spec.environments[0], proposal, |name| {
        by_name.get(name).cloned()
    })
}

#[test]
fn a_proposal_is_found_by_name_and_only_if_it_is_this_very_one() {
    let proposal = proposal(None);
    let base = "payments-production-v3";
    let suffixed = "payments-production-v3-01234567";
    assert_eq!(
        choose_among(&[], &proposal),
        Choice::Create(base.to_owned())
    );
    let ours = existing(base, "0123456789abcdef", "alice", None, "Valid");
    assert_eq!(
        choose_among(&[ours], &proposal),
        Choice::Waiting(base.to_owned())
    );
    // Someone else's look-alike, or one asked by another author, is passed over.
    for impostor in [
        existing(base, "another-uid", "alice", None, "Valid"),
        existing(base, "0123456789abcdef", "mallory", None, "Valid"),
    ] {
        assert_eq!(
            choose_among(&[impostor], &proposal),
            Choice::Create(suffixed.to_owned())
        );
    }
    // An ended proposal stays ended; one nothing vouched for is made again.
    let ended = [
        (
            ChangePhase::Rejected,
            "Valid",
            Choice::Ended(base.to_owned(), ChangePhase::Rejected),
        ),
        (
            ChangePhase::Failed,
            "Unvouched",
            Choice::Create(suffixed.to_owned()),
        ),
    ];
    for (phase, reason, choice) in ended {
        let change = existing(base, "0123456789abcdef", "alice", Some(phase), reason);
        assert_eq!(choose_among(&[change], &proposal), choice, "{phase:?}");
    }
}

#[test]
fn a_proposal_whose_every_name_is_taken_says_so() {
    let proposal = proposal(None);
    let entry = entry();
    let taken = names(&entry, &entry.spec.environments[0], &proposal);
    assert_eq!(taken.len(), 5);
    let impostors: Vec<_> = taken
        .iter()
        .map(|name| existing(name, "another-uid", "alice", None, "Valid"))
        .collect();
    let choice = choose_among(&impostors, &proposal);
    assert_eq!(choice, Choice::Taken);
    let requirements = Requirements::new("production", None, None, &[]);
    assert!(message(&choice, &proposal, &requirements).contains("are not this entry's"));
}

#[test]
fn proposal_names_fit_an_object_name() {
    assert_eq!(
        base_name("payments", "production", 3, None),
        "payments-production-v3"
    );
    let long = base_name(&"a".repeat(300), "production", 12, None);
    assert_eq!(long.len(), 253);
    assert!(long.ends_with("-production-v12"));
    let relaxation = base_name("payments", "production", 3, Some(&relaxed()));
    assert!(relaxation.starts_with("payments-production-v3-p"));
    let mut entry = entry();
    entry.metadata.name = Some("b".repeat(260));
    for name in names(&entry, &entry.spec.environments[0], &proposal(None)) {
        assert!(name.len() <= 253, "{name}");
    }
}

#[test]
fn the_proposal_is_owned_by_the_entry_and_carries_its_authors_and_labels() {
    let entry = entry();
    let change = change(
        &entry,
        &entry.spec.environments[0],
        &proposal(Some(relaxed())),
        "payments-production-v3",
    );
    assert_eq!(change.spec.requested_by, "alice");
    assert_eq!(change.spec.version, Some(3));
    assert_eq!(change.spec.approval_policy, Some(relaxed()));
    assert!(change.spec.message.contains("relaxes its approval policy"));
    assert_eq!(change.annotations()[ANNOTATION_CHANGE_AUTHORS], "bob");
    assert_eq!(change.labels()["team"], "a");
    assert_eq!(change.labels()[LABEL_MANAGED_BY], MANAGED_BY);
    let owner = &change.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        ("0123456789abcdef", Some(true))
    );
}

#[test]
fn waiting_says_how_many_approvals_or_which_policy_holds() {
    let policy: ApprovalPolicy = serde_yaml_ng::from_str("{requiredApprovals: 2}").unwrap();
    let requirements = Requirements::new("production", Some(&policy), None, &[]);
    let waiting = Choice::Waiting("c".into());
    assert!(message(&waiting, &proposal(None), &requirements).contains("waits for 2 approval(s)"));
    let floor = (2, Some(&policy));
    let relaxing = Requirements::new("production", None, Some(floor), &[]);
    let text = message(&waiting, &proposal(Some(relaxed())), &relaxing);
    assert!(text.contains("the spec asks for"), "{text}");
    let ended = Choice::Ended("c".into(), ChangePhase::Expired);
    assert!(message(&ended, &proposal(None), &requirements).contains("was expired"));
}

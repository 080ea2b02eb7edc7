//! Attacks on "approved and audited" (who may approve what, and what a spec edit may
//! relax or remove), run as real users with the chart's roles against
//! the real apiserver (RBAC and the chart's admission policies on), PostgreSQL and
//! Consul. Each attack is refused with a clear message, and a record of everything the
//! target config id has (ConfigMaps, Secrets, applied state, floors, audit rows, Consul
//! keys) shows that nothing changed that was not meant to.
//!
//! alice edits specs (summit-config-admin), bob and carol approve
//! (summit-config-approver, group summit:approvers), mallory is a tenant of her own.

mod support;

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, ChangePhase, ConfigEntry, ConfigEntrySpec, EnvironmentPhase,
};
use support::{
    Operator, Tenant, approval_ignored, approve, attack::Record, attack::in_shard,
    attack::operator_for, change, change_in, column_of, condition_where, config_json, create,
    delete_until_gone, env, environment, environment_status, patch_spec, payments::*, refused,
    rows_of, run_ok, try_create, try_merge, validation_refused, wait_for,
};

/// As [`TEAM`], but bob may both edit and approve: the editor who approves is the attack.
const EDITING_APPROVER: &[(&str, &str)] = &[
    ("alice", ADMIN),
    ("bob", ADMIN),
    ("bob", APPROVER),
    ("carol", APPROVER),
];

/// A team granted `roles` with an operator of its own, and its `payments` (pool 10)
/// approved everywhere at version 1; alice's view of it.
async fn team_with_payments(
    test: &str,
    roles: &[(&str, &str)],
) -> (Tenant, Operator, Api<ConfigEntry>) {
    let (team, operator) = team_with_operator(test, roles).await;
    let spec = payments_spec(&payments_id(&team), json!({"pool": 10}));
    let entries = approved_payments(&team, &team.ns, spec).await;
    (team, operator, entries)
}

/// bob writes `spec` with development's ConfigMap in kube-system, a namespace the
/// operator does not allow, and the operator refuses the write.
async fn bob_writes_a_refused_target(team: &Tenant, spec: &mut ConfigEntrySpec) {
    spec.environments[0].config_map =
        Some(serde_json::from_value(json!({"namespace": "kube-system"})).expect("a target"));
    let bob = team.entries_as("bob").await;
    patch_spec(
        &bob,
        "payments",
        serde_json::to_value(&*spec).expect("spec"),
    )
    .await
    .expect("bob writes");
    let refused = validation_refused(&team.entries(), "payments").await;
    assert_eq!(refused.reason, "TargetNotAllowed", "{}", refused.message);
}

#[tokio::test]
async fn deleting_and_recreating_an_entry_keeps_its_approvers() {
    let (team, _operator) = team_with_operator("recreate", TEAM).await;
    let shard = team.ns.clone();
    let config_maps = team.config_maps();

    for deletion_policy in ["Retain", "Delete"] {
        let config_id = format!("tests/{}/{}", team.ns, deletion_policy.to_lowercase());
        let mut spec = payments_spec(&config_id, json!({"pool": 10}));
        spec["deletionPolicy"] = json!(deletion_policy);
        let entries = approved_payments(&team, &shard, spec).await;
        let approved = config_maps
            .get("payments-production")
            .await
            .expect("production's ConfigMap")
            .data;
        let before = Record::of(&config_id, &[]).await;

        // alice deletes the entry and creates it again, production unprotected.
        delete_until_gone(&entries, "payments").await;
        let bare = unguarded_spec(&config_id, json!({"pool": 999, "policy": deletion_policy}));
        create(&entries, &payments(&shard, bare)).await;
        let pending = wait_for(&entries, "payments", "production waits", |e| {
            environment(e, "production").0 == Some(EnvironmentPhase::PendingApproval)
        })
        .await;
        let message = environment_status(&pending, "production")
            .and_then(|e| e.message.clone())
            .unwrap_or_default();
        assert!(
            message.contains("1 approval from group summit:approvers holds until it is approved"),
            "{message}"
        );

        // Nothing new went live in production, nothing was auto-approved there: what
        // it ran stays (Retain) or was forgotten with the entry (Delete).
        let after = Record::of(&config_id, &[]).await;
        let production_now = config_maps
            .get_opt("payments-production")
            .await
            .expect("read");
        match deletion_policy {
            "Retain" => {
                assert_eq!(
                    after.applied_in("production"),
                    before.applied_in("production")
                );
                // Retained: the approved version is projected again.
                assert_eq!(production_now.and_then(|c| c.data), approved);
            }
            _ => {
                assert_eq!(after.applied_in("production"), None);
                // Forgotten: nothing is live, and nothing unapproved is either.
                assert!(production_now.is_none(), "unapproved content went live");
            }
        }
        assert_eq!(after.floors, before.floors, "the floor is kept");
        let audited_since = &after.audit[before.audit.len()..];
        assert!(
            !audited_since.iter().any(|(_, changes)| {
                changes["event"] == "applied" && changes["environment"] == "production"
            }),
            "an application in production was audited: {audited_since:?}"
        );

        // alice cannot approve her own relaxation; bob can, and then it applies.
        let proposal = production_waits(&entries, after.versions).await;
        let changes = team.changes_as("alice").await;
        refused(
            approve(&changes, &proposal, "alice", &["summit:developers"]).await,
            "nobody approves their own change",
        );
        team.approves("bob", &proposal).await;
        change_in(&team.changes(), &proposal, ChangePhase::Applied).await;
        assert_eq!(
            Record::of(&config_id, &[]).await.floor("production"),
            Some(json!({"autoApprove": true})),
            "the approved change lowered the floor"
        );
        delete_until_gone(&entries, "payments").await;
    }
}

#[tokio::test]
async fn nobody_approves_their_own_edit_and_the_audit_names_the_real_author() {
    let (team, _operator, entries) = team_with_payments("self-approval", EDITING_APPROVER).await;
    let config_id = payments_id(&team);

    // bob edits the spec, claiming to be someone else through the field manager and
    // the author annotation; the apiserver stamps who he is.
    let bob_entries = team.entries_as("bob").await;
    let author = json!({"annotations": {"config.summit.io/spec-author": "carol"}});
    refused(
        try_merge(&bob_entries, "payments", json!({"metadata": author})).await,
        "changes only with the spec",
    );
    bob_entries
        .patch(
            "payments",
            &PatchParams {
                field_manager: Some("carol".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"metadata": author, "spec": {"data": {"pool": 20}}})),
        )
        .await
        .expect("bob edits the spec");
    let proposal = production_waits(&entries, 2).await;
    let changes = team.changes();
    let pending = changes.get(&proposal).await.expect("the proposal");
    assert_eq!(
        pending.spec.requested_by, "bob",
        "the proposal names the author"
    );

    // bob cannot approve it; the apiserver says why, and nothing moves.
    let bob_changes = team.changes_as("bob").await;
    refused(
        approve(&bob_changes, &proposal, "bob", &["summit:approvers"]).await,
        "nobody approves their own change",
    );

    // alice adds an edit of her own on top (version 3): its proposal is hers, and
    // bob's version 2 rides along, so neither of them counts.
    patch_spec(&entries, "payments", json!({"data": {"pool": 30}}))
        .await
        .expect("alice edits");
    let proposal = production_waits(&entries, 3).await;
    team.approves("bob", &proposal).await;
    let ignored = approval_ignored(&changes, &proposal)
        .await
        .ignored_approvals;
    assert_eq!(ignored[0].approver, "bob");
    assert_eq!(
        ignored[0].reason,
        "bob wrote version 2, which this change also brings live"
    );
    let entry = entries.get("payments").await.expect("payments");
    assert_eq!(
        environment(&entry, "production").1,
        Some(1),
        "nothing went live"
    );

    // carol approves: version 3 goes live, and the audit names who wrote what.
    team.approves("carol", &proposal).await;
    change_in(&changes, &proposal, ChangePhase::Applied).await;
    let authors: Vec<(i32, String)> = rows_of(
        "SELECT version, created_by FROM config_versions WHERE config_id = $1 ORDER BY version",
        &config_id,
    )
    .await;
    assert_eq!(
        authors,
        [
            (1, "alice".to_owned()),
            (2, "bob".to_owned()),
            (3, "alice".to_owned())
        ]
    );
    let recorded: Vec<String> = column_of(
        "SELECT actor FROM config_audit WHERE config_id = $1 AND changes ->> 'event' = 'versionRecorded' ORDER BY version",
        &config_id,
    )
    .await;
    assert_eq!(recorded, ["alice", "bob", "alice"]);

    // bob slips his content into a write the operator refuses, and alice fixes it: the
    // version holds both their writes, is proposed in alice's name, and bob still
    // cannot approve it.
    let mut sneaky = entries.get("payments").await.expect("payments").spec;
    sneaky.data = json!({"pool": 666}).into();
    bob_writes_a_refused_target(&team, &mut sneaky).await;
    patch_spec(
        &entries,
        "payments",
        json!({"environments": guarded_environments()}),
    )
    .await
    .expect("alice fixes the target");
    let proposal = production_waits(&entries, 4).await;
    let pending = changes.get(&proposal).await.expect("the proposal");
    assert_eq!(pending.spec.requested_by, "alice");
    let authors: Vec<Value> = column_of(
        "SELECT metadata -> 'authors' FROM config_versions WHERE config_id = $1 AND version = 4",
        &config_id,
    )
    .await;
    assert_eq!(authors, [json!(["bob", "alice"])]);
    team.approves("bob", &proposal).await;
    let ignored = approval_ignored(&changes, &proposal)
        .await
        .ignored_approvals;
    assert_eq!(
        ignored[0].reason,
        "bob wrote version 4, which this change also brings live"
    );

    // Nobody asks for a lower floor by hand: that is the operator's to propose.
    let forged = change(
        "lower-the-floor",
        "alice",
        json!({"configEntry": "payments", "environment": "production", "patch": {"note": "typo"},
               "approvalPolicy": {"autoApprove": true}}),
    );
    refused(
        try_create(&team.changes_as("alice").await, &in_shard(forged, &team.ns)).await,
        "proposed by the operator alone",
    );
}

#[tokio::test]
async fn a_removal_survives_client_side_kubectl_apply() {
    let (team, _operator) = team_with_operator("removal", &[("alice", ADMIN)]).await;
    let manifest = env().dir().join(format!("{}-payments.yaml", team.ns));
    let yaml = format!(
        r#"apiVersion: config.summit.io/v1alpha1
kind: ConfigEntry
metadata:
  name: payments
  namespace: {ns}
  labels: {{"{label}": "{ns}"}}
spec:
  configId: tests/{ns}/payments
  data: {{legacy: {{endpoint: old}}, pool: {{max: 10, debug: true}}}}
  environments:
    - name: development
    - name: production
      overrides: {{pool: {{max: 50}}}}
      remove: [/legacy, /pool/debug]
    - name: staging
      overrides: {{legacy: null}}
"#,
        ns = team.ns,
        label = support::attack::SHARD,
    );
    std::fs::write(&manifest, yaml).expect("write the manifest");
    run_ok(
        env()
            .kubectl()
            .env("KUBECONFIG", env().kubeconfig_as("alice"))
            .args(["apply", "-f"])
            .arg(&manifest),
    );
    wait_for(
        &team.entries(),
        "payments",
        "every environment applied",
        |e| {
            ["development", "production", "staging"]
                .iter()
                .all(|name| environment(e, name).0 == Some(EnvironmentPhase::Applied))
        },
    )
    .await;
    let config_maps = team.config_maps();
    let content = |name: &'static str| {
        let config_maps = config_maps.clone();
        async move {
            let config_map = config_maps.get(&format!("payments-{name}")).await;
            config_json(&config_map.expect("ConfigMap")).expect("JSON")
        }
    };
    assert_eq!(content("production").await, json!({"pool": {"max": 50}}));
    // The null, dropped by client-side apply on its way to the apiserver, removes
    // nothing: that is what `remove` is for.
    assert_eq!(
        content("staging").await,
        json!({"legacy": {"endpoint": "old"}, "pool": {"max": 10, "debug": true}})
    );
    let explained = run_ok(
        env()
            .kubectl()
            .args(["explain", "configentries.spec.environments.remove"]),
    );
    assert!(
        explained.contains("survives `kubectl apply`, Helm and Argo CD"),
        "{explained}"
    );
}

#[tokio::test]
async fn a_platform_floor_holds_whatever_a_spec_says() {
    let team = Tenant::new("floor", &[("alice", ADMIN), ("carol", APPROVER)]).await;
    let shard = team.ns.clone();
    let floors = r#"[{"environments": "prod*", "requiredApprovals": 1, "approverGroups": ["summit:approvers"]}]"#;
    let _operator = operator_for(&shard, &[&team], &["--approval-floors", floors]);
    let config_id = payments_id(&team);
    let mut spec = payments_spec(&config_id, json!({"pool": 10}));
    spec["environments"][1] = json!({"name": "production", "approval": {"autoApprove": true}});
    let entries = team.entries_as("alice").await;
    create(&entries, &payments(&shard, spec)).await;
    let proposal = production_waits(&entries, 1).await;
    let waiting = condition_where(&team.changes(), &proposal, CONDITION_READY, |c| {
        c.message.contains("platform")
    })
    .await;
    assert_eq!(
        waiting.message,
        "waiting for 1 more approval(s) for the platform's floor for prod* (1 approval from group summit:approvers)"
    );
    let entry = entries.get("payments").await.expect("payments");
    assert_eq!(
        environment(&entry, "development").0,
        Some(EnvironmentPhase::Applied),
        "the floor covers prod* only"
    );
    team.approves("carol", &proposal).await;
    live_everywhere(&entries, 1).await;
}

#[tokio::test]
async fn a_relaxation_is_approved_by_none_of_its_writers() {
    let (team, _operator, entries) = team_with_payments("relaxation", EDITING_APPROVER).await;
    let config_id = payments_id(&team);

    // bob (who may approve, and so may relax a policy) drops production's approval in
    // a write the operator refuses; alice's fix of the target carries it through.
    let auto_approve = || serde_json::from_value(json!({"autoApprove": true})).expect("a policy");
    let mut relaxed = entries.get("payments").await.expect("payments").spec;
    relaxed.environments[1].approval = Some(auto_approve());
    bob_writes_a_refused_target(&team, &mut relaxed).await;
    relaxed.environments[0].config_map = None;
    patch_spec(
        &entries,
        "payments",
        serde_json::to_value(&relaxed).expect("spec"),
    )
    .await
    .expect("alice fixes the target");
    let proposal = production_waits(&entries, 1).await;
    let changes = team.changes();
    let pending = changes.get(&proposal).await.expect("the relaxation");
    assert_eq!(pending.spec.requested_by, "alice");
    assert_eq!(pending.spec.approval_policy, Some(auto_approve()));

    // bob may approve changes, but not this one: he wrote it.
    team.approves("bob", &proposal).await;
    let ignored = approval_ignored(&changes, &proposal)
        .await
        .ignored_approvals;
    assert_eq!(ignored[0].approver, "bob");
    assert!(
        ignored[0].reason.contains("bob wrote the spec"),
        "{}",
        ignored[0].reason
    );
    assert_eq!(
        Record::of(&config_id, &[]).await.floor("production"),
        Some(json!({"approverGroups": ["summit:approvers"]})),
        "the floor held"
    );

    // carol, who wrote nothing of it, approves: the relaxation takes effect.
    team.approves("carol", &proposal).await;
    change_in(&changes, &proposal, ChangePhase::Applied).await;
    assert_eq!(
        Record::of(&config_id, &[]).await.floor("production"),
        Some(json!({"autoApprove": true}))
    );
}

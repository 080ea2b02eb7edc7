//! Without the admission policies that bind requesters and approvals to real users,
//! anyone could sign a ConfigChange as anyone: the operator then applies none, says
//! why in status, and never trusts a change created before the policies were back.
//!
//! A test binary of its own: it removes a cluster-wide policy binding for a while, which
//! would disturb every other test running beside it.

mod support;

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::json;
use summit_config::api::v1alpha1::{CONDITION_READY, ChangePhase, ConfigEntry, EnvironmentPhase};
use support::{
    Operator, Tenant, WAIT, assert_reason, attack::Record, attack::in_shard, change, change_in,
    condition, create, entry, env, environment, environment_where, eventually, exists, live,
    patch_spec, proposal_waiting, run_ok, says, setup_with, try_create, wait_for,
};

const BINDING: &str = "summit-config-change-identity";

/// The binding, removed until dropped: then created again as it was.
struct Removed {
    saved: std::path::PathBuf,
    restored: bool,
}

impl Removed {
    fn binding(name: &str) -> Self {
        let json = run_ok(env().kubectl().args([
            "get",
            "validatingadmissionpolicybinding",
            name,
            "-o",
            "json",
        ]));
        let mut binding: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let metadata = binding["metadata"].as_object_mut().expect("metadata");
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            metadata.remove(field);
        }
        binding.as_object_mut().expect("an object").remove("status");
        let saved = env().dir().join(format!("{name}.json"));
        std::fs::write(&saved, binding.to_string()).expect("save the binding");
        run_ok(
            env()
                .kubectl()
                .args(["delete", "validatingadmissionpolicybinding", name]),
        );
        Self {
            saved,
            restored: false,
        }
    }

    fn restore(mut self) {
        self.create();
        self.restored = true;
    }

    fn create(&self) {
        run_ok(env().kubectl().arg("create").arg("-f").arg(&self.saved));
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        if !self.restored {
            self.create();
        }
    }
}

impl Removed {
    /// Waits until the clock has left the second in which the binding was created again.
    /// Object times have a second's grain: a change made in that very second could have
    /// come before the binding, and is not trusted either.
    async fn a_second_after_its_return() {
        let restored = run_ok(
            env()
                .kubectl()
                .args(["get", "validatingadmissionpolicybinding", BINDING])
                .args(["-o", "jsonpath={.metadata.creationTimestamp}"]),
        );
        let restored: Timestamp = restored.parse().expect("a timestamp");
        eventually("a second after the binding came back", WAIT, || async {
            (Timestamp::now().as_second() > restored.as_second()).then_some(())
        })
        .await;
    }
}

/// What a ConfigChange could move in `record`: projections, applied state, floors,
/// versions and Consul keys; not Secrets, and not the audit rows that record a refusal.
fn what_a_change_moves(record: Record) -> Record {
    Record {
        secrets: Default::default(),
        audit: Vec::new(),
        ..record
    }
}

/// A team where alice and mallory edit, bob and carol approve; an operator watching it;
/// and `payments`, whose production needs an approval from summit:approvers, live at
/// version 1 after carol approved it. Returns alice's view of the team's entries.
async fn team_with_payments_approved() -> (Tenant, Operator, Api<ConfigEntry>) {
    let roles = [
        ("alice", "summit-config-admin"),
        ("mallory", "summit-config-admin"),
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let (team, operator) = setup_with("unguarded", &roles, &[]).await;
    let entries = team.entries_as("alice").await;
    let spec = json!({
        "configId": config_id(&team),
        "data": {"pool": 10},
        "environments": [{"name": "production", "approval": {"approverGroups": ["summit:approvers"]}}],
    });
    create(&entries, &in_shard(entry("payments", spec), &team.ns)).await;
    let proposal = proposal_waiting(&entries, "payments", "production", 1).await;
    team.approves("carol", &proposal).await;
    live(&entries, "payments", "production", 1).await;
    (team, operator, entries)
}

fn config_id(team: &Tenant) -> String {
    format!("tests/{}/payments", team.ns)
}

/// mallory signs a change as carol, already approved by bob; the apiserver takes it
/// once its policy cache has seen the binding go.
async fn mallory_forges_a_change(team: &Tenant) {
    let forged = change(
        "forged",
        "carol",
        json!({
            "configEntry": "payments",
            "environment": "production",
            "data": {"pool": 999},
            "approvals": [{"approver": "bob", "groups": ["summit:approvers"]}],
        }),
    );
    let forged = in_shard(forged, &team.ns);
    let mallory = team.changes_as("mallory").await;
    eventually("the apiserver takes a forged change", WAIT, || async {
        try_create(&mallory, &forged).await.ok()
    })
    .await;
}

#[tokio::test]
async fn without_its_admission_policies_the_operator_applies_no_change() {
    let (team, _operator, entries) = team_with_payments_approved().await;
    let config_id = config_id(&team);
    let before = Record::of(&config_id, &[&team]).await;

    // The binding goes; mallory forges a change, and the operator holds it.
    let removed = Removed::binding(BINDING);
    mallory_forges_a_change(&team).await;
    let changes = team.changes();
    let waiting = wait_for(&changes, "forged", "the change held", |c| {
        condition(c, CONDITION_READY).is_some_and(|ready| ready.reason == "GuardsMissing")
    })
    .await;
    assert_eq!(
        waiting.status.as_ref().and_then(|s| s.phase),
        Some(ChangePhase::Pending)
    );
    let missing = format!("ValidatingAdmissionPolicyBinding {BINDING} is missing");
    let held = condition(&waiting, CONDITION_READY).expect("Ready");
    assert!(held.message.contains(&missing), "{held:?}");
    assert_eq!(
        Record::of(&config_id, &[&team]).await,
        before,
        "the forged change did something"
    );
    // A spec edit meanwhile is not even proposed: a proposal made now could never be
    // trusted.
    patch_spec(&entries, "payments", json!({"data": {"pool": 30}}))
        .await
        .expect("alice edits the spec");
    let what = "the proposal held back";
    let held = environment_where(&entries, "payments", "production", what, |e| {
        e.pending_version == Some(2)
            && says(
                e,
                EnvironmentPhase::PendingApproval,
                "waits for the admission policies",
            )
    })
    .await;
    assert!(
        !exists(&changes, "payments-production-v2").await,
        "proposed while unguarded: {held:?}"
    );
    let before = Record::of(&config_id, &[&team]).await;

    // The binding is back: the change created without it can never be trusted.
    removed.restore();
    let failed = change_in(&changes, "forged", ChangePhase::Failed).await;
    let ready = condition(&failed, CONDITION_READY).expect("Ready");
    assert_reason(&ready, "Unvouched", "create it again");
    // Once the policies are back, the held version is proposed.
    let proposed = change_in(&changes, "payments-production-v2", ChangePhase::Pending).await;
    assert_eq!(proposed.spec.requested_by, "alice");
    let after = Record::of(&config_id, &[&team]).await;
    assert_eq!(
        what_a_change_moves(after),
        what_a_change_moves(before),
        "the forged change did something"
    );

    // A change made once the policies are back goes through as always.
    Removed::a_second_after_its_return().await;
    let honest = change(
        "honest",
        "alice",
        json!({"configEntry": "payments", "environment": "production", "data": {"pool": 20}}),
    );
    create(&team.changes_as("alice").await, &in_shard(honest, &team.ns)).await;
    change_in(&changes, "honest", ChangePhase::Pending).await;
    team.approves("bob", "honest").await;
    change_in(&changes, "honest", ChangePhase::Applied).await;
    let entry = entries.get("payments").await.expect("payments");
    // The honest change made version 3 from what production ran (version 1).
    assert_eq!(environment(&entry, "production").1, Some(3));
}

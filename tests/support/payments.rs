//! The payments team the attack tests share: alice edits, bob and carol approve, and
//! `payments`, whose production waits for an approval from summit:approvers.

use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ConfigEntry, EnvironmentPhase};

use super::{
    Operator, Tenant,
    attack::{in_shard, operator_for},
    create, entry, environment, proposal_waiting, wait_for,
};

pub const ADMIN: &str = "summit-config-admin";

pub const APPROVER: &str = "summit-config-approver";

/// alice edits, bob and carol approve.
pub const TEAM: &[(&str, &str)] = &[("alice", ADMIN), ("bob", APPROVER), ("carol", APPROVER)];

/// Production needs one approval from group summit:approvers; development none.
pub fn guarded_environments() -> Value {
    json!([
        {"name": "development"},
        {"name": "production", "approval": {"approverGroups": ["summit:approvers"]}},
    ])
}

/// `payments` with [`guarded_environments`].
pub fn payments_spec(config_id: &str, data: Value) -> Value {
    json!({"configId": config_id, "data": data, "environments": guarded_environments()})
}

/// Neither environment needs an approval.
pub fn unguarded_spec(config_id: &str, data: Value) -> Value {
    let mut spec = payments_spec(config_id, data);
    spec["environments"][1] = json!({"name": "production"});
    spec
}

/// Entry `payments` with `spec`, in front of `shard`'s operator.
pub fn payments(shard: &str, spec: Value) -> ConfigEntry {
    in_shard(entry("payments", spec), shard)
}

/// A team granted `roles` in a namespace of its own, and an operator for its shard (the
/// namespace's name).
pub async fn team_with_operator(test: &str, roles: &[(&str, &str)]) -> (Tenant, Operator) {
    let team = Tenant::new(test, roles).await;
    let operator = operator_for(&team.ns, &[&team], &[]);
    (team, operator)
}

/// The config id of a team's `payments`.
pub fn payments_id(team: &Tenant) -> String {
    format!("tests/{}/payments", team.ns)
}

/// alice creates `payments` from `spec` in front of `shard`'s operator, carol approves
/// what waits in production, and both environments run version 1. Returns alice's view
/// of the team's entries.
pub async fn approved_payments(team: &Tenant, shard: &str, spec: Value) -> Api<ConfigEntry> {
    let entries = team.entries_as("alice").await;
    create(&entries, &payments(shard, spec)).await;
    let proposal = production_waits(&entries, 1).await;
    team.approves("carol", &proposal).await;
    live_everywhere(&entries, 1).await;
    entries
}

/// Waits until both environments of `payments` run `version`.
pub async fn live_everywhere(entries: &Api<ConfigEntry>, version: i64) -> ConfigEntry {
    let live = (Some(EnvironmentPhase::Applied), Some(version));
    wait_for(
        entries,
        "payments",
        &format!("version {version} live"),
        |e| environment(e, "development") == live && environment(e, "production") == live,
    )
    .await
}

/// Waits until production waits for approval of `version`, and returns the proposal's name.
pub async fn production_waits(entries: &Api<ConfigEntry>, version: i64) -> String {
    proposal_waiting(entries, "payments", "production", version).await
}

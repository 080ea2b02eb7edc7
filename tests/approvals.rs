//! ConfigChange approvals with real users against the real apiserver (RBAC and the
//! chart's admission policy on), PostgreSQL and Consul: who asked and who approved is
//! proven by the apiserver, counted by policy, and recorded in the audit trail.

mod support;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_VALIDATED, ChangePhase, ConfigChange, EnvironmentPhase,
};
use support::{
    Operator, Tenant, WAIT, append_approval, approval_ignored, change, change_in, column_of,
    condition, consul_get, create, entry, event_reasons, eventually, grant, merge, metric,
    postgres, refused, rows_of, setup_with, try_create, try_merge, wait_for, with_fields,
};

/// A namespace where alice may request (config admin), bob and carol may approve, and
/// mallory may edit ConfigChanges but holds no `approve` verb; an operator watching it;
/// and `payments` at version 1, with a schema (`pool.max` at most 100), an
/// auto-approving development and a production with `production_approval`.
async fn setup(test: &str, production_approval: Value) -> (Tenant, Operator) {
    let roles = [
        ("alice", "summit-config-admin"),
        ("mallory", "summit-config-admin"),
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let (s, operator) = setup_with(test, &roles, &[]).await;
    let spec = json!({
        "configId": s.config_id(),
        "schema": {"type": "object", "properties": {"pool": {"properties": {"max": {"maximum": 100}}}}},
        "data": {"host": "db", "pool": {"max": 10}},
        "environments": [
            {"name": "development"},
            {"name": "production", "approval": production_approval},
        ],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    wait_for(&s.entries(), "payments", "version 1", |e| {
        e.status
            .as_ref()
            .is_some_and(|s| s.latest_version == Some(1))
    })
    .await;
    (s, operator)
}

/// alice proposes a change to `environment` as `name`; the apiserver must take it.
async fn alice_requests(s: &Tenant, name: &str, environment: &str, proposal: Value) {
    let spec = json!({
        "configEntry": "payments",
        "environment": environment,
        "message": format!("{name}: tune the pool"),
    });
    let change = change(name, "alice", with_fields(spec, proposal));
    create(&s.changes_as("alice").await, &change).await;
}

/// A proposal of new data: `payments`' content with the pool at `max`.
fn pool_data(max: i64) -> Value {
    json!({"data": {"host": "db", "pool": {"max": max}}})
}

/// A proposal to patch the pool to `max`.
fn pool_patch(max: i64) -> Value {
    json!({"patch": {"pool": {"max": max}}})
}

/// `user` approves change `name`, with a comment.
async fn approve(s: &Tenant, user: &str, name: &str) -> Result<ConfigChange, kube::Error> {
    let approval = json!({"approver": user, "comment": "checked the pool size"});
    append_approval(&s.changes_as(user).await, name, approval).await
}

/// Waits until change `name` is in phase `wanted`, and returns it.
async fn phase(s: &Tenant, name: &str, wanted: ChangePhase) -> ConfigChange {
    change_in(&s.changes(), name, wanted).await
}

/// The JSON projected for `environment`, once it satisfies `ready`.
async fn projected(s: &Tenant, environment: &str, ready: impl Fn(&Value) -> bool) -> Value {
    support::projected(&s.config_maps(), &format!("payments-{environment}"), ready).await
}

#[tokio::test]
async fn alice_requests_bob_approves_and_the_audit_trail_names_both() {
    let (s, operator) = setup("approve", json!({"requiredApprovals": 1})).await;
    alice_requests(&s, "bigger-pool", "production", pool_data(40)).await;
    let pending = phase(&s, "bigger-pool", ChangePhase::Pending).await;
    let status = pending.status.expect("status");
    assert_eq!(status.base_version, Some(1));
    assert_eq!(status.approvals_summary.as_deref(), Some("0/1"));
    // The operator's own proposal of version 1 and alice's change wait in production.
    eventually("two pending changes in the metrics", WAIT, || async {
        let pending = metric(
            operator.port(),
            "summit_config_pending_changes{environment=\"production\"}",
        )
        .await;
        (pending == 2.0).then_some(())
    })
    .await;

    approve(&s, "bob", "bigger-pool")
        .await
        .expect("bob approves");
    let applied = phase(&s, "bigger-pool", ChangePhase::Applied).await;
    let ready = condition(&applied, CONDITION_READY).expect("Ready");
    let status = applied.status.expect("status");
    assert_eq!(status.resulting_version, Some(2));
    assert!(status.applied_at.is_some());
    assert_eq!(ready.status, "True", "{ready:?}");

    // Live in Kubernetes, PostgreSQL and Consul.
    projected(&s, "production", |c| c["pool"]["max"] == 40).await;
    let applied: Vec<i32> = column_of(
        "SELECT version FROM config_applied_state WHERE config_id = $1 AND environment = 'production'",
        &s.config_id(),
    )
    .await;
    assert_eq!(applied, [2]);
    let consul = eventually("Consul to hold production's version 2", WAIT, || async {
        let (value, _) = consul_get(&format!(
            "summit/config/{}/applied/production",
            s.config_id()
        ))
        .await?;
        (value["version"] == 2).then_some(value)
    })
    .await;
    assert_eq!(consul["environment"], "production");

    audit_names_alice_and_bob(&s).await;

    // The spec's own version 1, still waiting for production, is overtaken.
    phase(&s, "payments-production-v1", ChangePhase::Superseded).await;

    // Metrics and Events follow each transition.
    let applied = metric(
        operator.port(),
        "summit_config_approval_latency_seconds_count{stage=\"applied\"}",
    )
    .await;
    assert_eq!(applied, 1.0);
    let reasons = event_reasons(&s.admin(), &s.ns, |r| {
        r.name.as_deref() == Some("bigger-pool")
    })
    .await;
    for reason in ["WaitingForApproval", "Applied"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
}

/// The audit trail of `bigger-pool` names the requester, the approver, the message and
/// the time, and its workflow row is applied with bob's approval.
async fn audit_names_alice_and_bob(s: &Tenant) {
    let pool = postgres().await;
    let rows: Vec<(String, Option<String>, Value, bool)> = sqlx::query_as(
        "SELECT actor, message, changes, timestamp IS NOT NULL FROM config_audit
         WHERE config_id = $1 AND changes ->> 'change' LIKE $2 ORDER BY timestamp, changes ->> 'event'",
    )
    .bind(s.config_id())
    .bind(format!("{}/bigger-pool@%", s.ns))
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    let events: Vec<(&str, &str)> = rows
        .iter()
        .map(|(actor, _, changes, _)| (actor.as_str(), changes["event"].as_str().unwrap_or("")))
        .collect();
    assert!(events.contains(&("alice", "requested")), "{events:?}");
    assert!(events.contains(&("bob", "approved")), "{events:?}");
    assert!(rows.iter().all(|(_, _, _, timed)| *timed));
    let requested = rows
        .iter()
        .find(|(_, _, changes, _)| changes["event"] == "requested")
        .expect("request row");
    assert_eq!(requested.1.as_deref(), Some("bigger-pool: tune the pool"));
    let applications: Vec<(String, String)> = rows_of(
        "SELECT actor, message FROM config_audit
         WHERE config_id = $1 AND version = 2 AND changes ->> 'event' = 'applied'",
        &s.config_id(),
    )
    .await;
    let (actor, message) = applications.first().expect("application row");
    assert_eq!(actor, "bob");
    assert!(message.contains("requested by alice"), "{message}");
    let workflows: Vec<(String, Vec<String>)> = rows_of(
        "SELECT status, approvers FROM approval_workflows WHERE change_id LIKE $1",
        &format!("{}/bigger-pool@%", s.ns),
    )
    .await;
    let (status, approvers) = workflows.first().expect("workflow row");
    assert_eq!(
        (status.as_str(), approvers),
        ("applied", &vec!["bob".to_owned()])
    );
}

#[tokio::test]
async fn the_apiserver_refuses_claimed_identities_and_edits() {
    let (s, _operator) = setup("identity", json!({"requiredApprovals": 1})).await;
    // requestedBy names someone else.
    let forged = json!({"configEntry": "payments", "environment": "production", "message": "m",
                        "patch": {"pool": {"max": 20}}});
    let alice = s.changes_as("alice").await;
    refused(
        try_create(&alice, &change("forged", "bob", forged.clone())).await,
        "spec.requestedBy must name the user creating the change (alice)",
    );
    let preapproved = with_fields(forged, json!({"approvals": [{"approver": "bob"}]}));
    refused(
        try_create(&alice, &change("forged", "alice", preapproved)).await,
        "a new ConfigChange carries no approvals or rejection",
    );

    alice_requests(&s, "tune", "production", pool_patch(20)).await;
    let bob = s.changes_as("bob").await;
    refused(
        approve(&s, "alice", "tune").await,
        "nobody approves their own change",
    );
    refused(
        approve(&s, "mallory", "tune").await,
        "mallory may not approve changes to ConfigEntry payments",
    );
    refused(
        append_approval(&bob, "tune", json!({"approver": "carol"})).await,
        "an approval must be signed by the user adding it (bob)",
    );
    refused(
        append_approval(
            &bob,
            "tune",
            json!({"approver": "bob", "groups": ["system:masters"]}),
        )
        .await,
        "an approval can only name groups its approver belongs to",
    );
    let edit = json!({"spec": {"patch": {"pool": {"max": 99}}}});
    refused(
        try_merge(&bob, "tune", edit).await,
        "the proposed data and patch are immutable",
    );
    refused(
        mallory_rejects_as_bob(&s).await,
        "a rejection must be signed by the user adding it (mallory)",
    );

    // bob's own approval goes through, once; then it cannot be removed or changed.
    approve(&s, "bob", "tune").await.expect("bob approves");
    refused(
        append_approval(&bob, "tune", json!({"approver": "bob"})).await,
        "bob has already approved this change",
    );
    for approvals in [
        json!([]),
        json!([{"approver": "bob", "comment": "changed my mind"}]),
    ] {
        refused(
            try_merge(&bob, "tune", json!({"spec": {"approvals": approvals}})).await,
            "approvals can only be appended",
        );
    }
    phase(&s, "tune", ChangePhase::Applied).await;
}

async fn mallory_rejects_as_bob(s: &Tenant) -> Result<ConfigChange, kube::Error> {
    let reject = json!({"spec": {"rejection": {"rejectedBy": "bob", "reason": "no"}}});
    try_merge(&s.changes_as("mallory").await, "tune", reject).await
}

#[tokio::test]
async fn two_approvals_from_the_listed_approvers_are_needed() {
    let listed = json!({"requiredApprovals": 2, "approvers": ["bob", "carol"]});
    let (s, _operator) = setup("two-approvals", listed).await;
    grant(&s.admin(), &s.ns, "mallory", "summit-config-approver").await;
    alice_requests(&s, "tune", "production", pool_patch(30)).await;

    approve(&s, "mallory", "tune")
        .await
        .expect("mallory may approve, but does not count");
    let change = approval_ignored(&s.changes(), "tune").await;
    assert_eq!(change.approvals_summary.as_deref(), Some("0/2"));
    assert_eq!(change.ignored_approvals[0].approver, "mallory");
    assert!(
        change.ignored_approvals[0]
            .reason
            .contains("not among the approvers")
    );

    approve(&s, "bob", "tune").await.expect("bob approves");
    wait_for(&s.changes(), "tune", "one approval counted", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.approvals_summary.as_deref() == Some("1/2"))
    })
    .await;
    assert_eq!(
        s.changes()
            .get("tune")
            .await
            .expect("change")
            .status
            .expect("status")
            .phase,
        Some(ChangePhase::Pending),
        "one approval is not enough"
    );
    approve(&s, "carol", "tune").await.expect("carol approves");
    let applied = phase(&s, "tune", ChangePhase::Applied).await;
    assert_eq!(
        applied.status.expect("status").approvals_summary.as_deref(),
        Some("2/2")
    );
    projected(&s, "production", |c| c["pool"]["max"] == 30).await;
}

#[tokio::test]
async fn invalid_and_concurrent_proposals() {
    let (s, _operator) = setup("concurrent", json!({"requiredApprovals": 1})).await;

    // Invalid at creation, before anyone approves.
    // The apiserver cannot know the schema: it takes the change.
    alice_requests(&s, "too-big", "production", pool_patch(500)).await;
    let failed = phase(&s, "too-big", ChangePhase::Failed).await;
    let validated = condition(&failed, CONDITION_VALIDATED).expect("Validated");
    assert_eq!(validated.status, "False");
    let status = failed.status.expect("status");
    assert!(
        status
            .validation_errors
            .iter()
            .any(|e| e.starts_with("$.pool.max")),
        "{:?}",
        status.validation_errors
    );

    // Two data changes on the same base: the first applied, the second superseded.
    for (name, max) in [("first", 41), ("second", 42)] {
        alice_requests(&s, name, "production", pool_data(max)).await;
        phase(&s, name, ChangePhase::Pending).await;
    }
    approve(&s, "bob", "first").await.expect("approve first");
    phase(&s, "first", ChangePhase::Applied).await;
    approve(&s, "bob", "second").await.expect("approve second");
    let second = phase(&s, "second", ChangePhase::Superseded).await;
    let message = condition(&second, CONDITION_READY).expect("Ready").message;
    assert!(message.contains("proposed against version 1"), "{message}");

    // A patch lands on the newest version.
    alice_requests(&s, "patch", "production", json!({"patch": {"timeout": 5}})).await;
    approve(&s, "bob", "patch").await.expect("approve patch");
    let patched = phase(&s, "patch", ChangePhase::Applied).await;
    assert_eq!(patched.status.expect("status").resulting_version, Some(3));
    projected(&s, "production", |c| {
        c["pool"]["max"] == 41 && c["timeout"] == 5
    })
    .await;
}

#[tokio::test]
async fn auto_approval_expiry_and_rollback() {
    let (s, _operator) = setup(
        "rollback",
        json!({"requiredApprovals": 1, "pendingExpiry": "3s"}),
    )
    .await;

    // Development auto-approves: each change applies without approvals.
    for (name, max) in [("v2", 20), ("v3", 30)] {
        alice_requests(&s, name, "development", pool_data(max)).await;
        let applied = phase(&s, name, ChangePhase::Applied).await;
        assert_eq!(
            applied.status.expect("status").approvals_summary.as_deref(),
            Some("0/0")
        );
    }
    projected(&s, "development", |c| c["pool"]["max"] == 30).await;

    // Rolling back to version 1 makes version 4 with version 1's content.
    alice_requests(&s, "back", "development", json!({"rollbackTo": 1})).await;
    let back = phase(&s, "back", ChangePhase::Applied).await;
    assert_eq!(back.status.expect("status").resulting_version, Some(4));
    projected(&s, "development", |c| c["pool"]["max"] == 10).await;
    let contents: Vec<(i32, Value)> = rows_of(
        "SELECT version, config FROM config_versions WHERE config_id = $1 AND version IN (1, 4) ORDER BY version",
        &s.config_id(),
    )
    .await;
    assert_eq!(contents.len(), 2);
    assert_eq!(
        contents[0].1, contents[1].1,
        "version 4 holds version 1's content"
    );

    // Production needs an approval that never comes: the change expires.
    alice_requests(&s, "stale", "production", pool_patch(15)).await;
    let expired = phase(&s, "stale", ChangePhase::Expired).await;
    assert!(expired.status.expect("status").finished_at.is_some());
}

/// Edits `payments`' pool as Argo CD would, under its own field manager.
async fn argo_cd_sets_the_pool(s: &Tenant, max: i64) {
    let edit = json!({"spec": pool_data(max)});
    s.entries()
        .patch(
            "payments",
            &PatchParams::apply("argocd-controller"),
            &Patch::Merge(&edit),
        )
        .await
        .expect("edit");
}

#[tokio::test]
async fn a_spec_edit_in_a_protected_environment_waits_for_approval() {
    let (s, _operator) = setup("gitops", json!({"requiredApprovals": 1})).await;
    projected(&s, "development", |c| c["pool"]["max"] == 10).await;

    // Version 1 waits in production on a ConfigChange the operator proposed.
    let proposed = phase(&s, "payments-production-v1", ChangePhase::Pending).await;
    assert_eq!(proposed.spec.version, Some(1));
    let entry = s.entries().get("payments").await.expect("entry");
    let production = &entry.status.expect("status").environments[1];
    assert_eq!(production.phase, Some(EnvironmentPhase::PendingApproval));
    assert_eq!(
        production.pending_change.as_deref(),
        Some("payments-production-v1")
    );
    approve(&s, "bob", "payments-production-v1")
        .await
        .expect("approve");
    phase(&s, "payments-production-v1", ChangePhase::Applied).await;
    projected(&s, "production", |c| c["pool"]["max"] == 10).await;

    // A GitOps-style spec edit: development follows at once, production waits.
    argo_cd_sets_the_pool(&s, 20).await;
    projected(&s, "development", |c| c["pool"]["max"] == 20).await;
    phase(&s, "payments-production-v2", ChangePhase::Pending).await;
    let production = projected(&s, "production", |_| true).await;
    assert_eq!(
        production["pool"]["max"], 10,
        "production waits for approval"
    );

    // Another edit before approval supersedes the waiting one.
    argo_cd_sets_the_pool(&s, 25).await;
    phase(&s, "payments-production-v2", ChangePhase::Superseded).await;
    phase(&s, "payments-production-v3", ChangePhase::Pending).await;
    approve(&s, "bob", "payments-production-v3")
        .await
        .expect("approve");
    phase(&s, "payments-production-v3", ChangePhase::Applied).await;
    projected(&s, "production", |c| c["pool"]["max"] == 25).await;
}

#[tokio::test]
async fn relaxing_an_approval_policy_needs_the_approve_verb() {
    let (s, _operator) = setup("policy-guard", json!({"requiredApprovals": 2})).await;
    let alice = s.entries_as("alice").await;
    let current = s.entries().get("payments").await.expect("entry");
    let with_production = |production: Value| {
        let mut environments = serde_json::to_value(&current.spec.environments).expect("json");
        environments[1] = production;
        json!({"spec": {"environments": environments}})
    };
    for production in [
        // auto-approval
        json!({"name": "production", "approval": {"autoApprove": true}}),
        // fewer approvals
        json!({"name": "production", "approval": {"requiredApprovals": 1}}),
        // no policy
        json!({"name": "production"}),
    ] {
        refused(
            try_merge(&alice, "payments", with_production(production)).await,
            "alice may not change or remove the approval policy of an environment of ConfigEntry payments",
        );
    }
    let remove = json!({"spec": {"environments": [current.spec.environments[0]]}});
    refused(
        try_merge(&alice, "payments", remove).await,
        "may not change or remove the approval policy",
    );
    // Content edits stay open to editors; the policy decides when they go live.
    let content = json!({"spec": pool_data(12)});
    merge(&alice, "payments", content).await;
    // Whoever holds the approve verb may change the policy.
    let relax =
        with_production(json!({"name": "production", "approval": {"requiredApprovals": 1}}));
    merge(&s.entries(), "payments", relax).await;
}

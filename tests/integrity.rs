//! Attacks on "approved and audited", run as real users with the chart's roles against
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
    CONDITION_READY, CONDITION_VALIDATED, ChangePhase, ConfigEntry, ConfigEntrySpec,
    EnvironmentPhase, SecretRotationPolicy,
};
use support::{
    Operator, Tenant, annotate, approval_ignored, approve, assert_reason, attack::Record,
    attack::in_shard, attack::operator_for, change, change_in, column_of, condition_where,
    config_json, create, delete_until_gone, entry, env, environment, environment_status,
    environment_where, exists, gone, merge, operator_log, patch_spec, policy, policy_where,
    present, proposal_waiting, refused, rows_of, run_ok, says, secret, try_create, try_merge,
    validation_refused, wait_for,
};

const ADMIN: &str = "summit-config-admin";
const APPROVER: &str = "summit-config-approver";
const SECRETS_ADMIN: &str = "summit-config-secrets-admin";

/// alice edits, bob and carol approve.
const TEAM: &[(&str, &str)] = &[("alice", ADMIN), ("bob", APPROVER), ("carol", APPROVER)];

/// As [`TEAM`], but bob may both edit and approve: the editor who approves is the attack.
const EDITING_APPROVER: &[(&str, &str)] = &[
    ("alice", ADMIN),
    ("bob", ADMIN),
    ("bob", APPROVER),
    ("carol", APPROVER),
];

/// Production needs one approval from group summit:approvers; development none.
fn guarded_environments() -> Value {
    json!([
        {"name": "development"},
        {"name": "production", "approval": {"approverGroups": ["summit:approvers"]}},
    ])
}

/// `payments` with [`guarded_environments`].
fn payments_spec(config_id: &str, data: Value) -> Value {
    json!({"configId": config_id, "data": data, "environments": guarded_environments()})
}

/// Neither environment needs an approval.
fn unguarded_spec(config_id: &str, data: Value) -> Value {
    let mut spec = payments_spec(config_id, data);
    spec["environments"][1] = json!({"name": "production"});
    spec
}

/// Entry `payments` with `spec`, in front of `shard`'s operator.
fn payments(shard: &str, spec: Value) -> ConfigEntry {
    in_shard(entry("payments", spec), shard)
}

/// A team granted `roles` in a namespace of its own, and an operator for its shard (the
/// namespace's name).
async fn team_with_operator(test: &str, roles: &[(&str, &str)]) -> (Tenant, Operator) {
    let team = Tenant::new(test, roles).await;
    let operator = operator_for(&team.ns, &[&team], &[]);
    (team, operator)
}

/// The config id of a team's `payments`.
fn payments_id(team: &Tenant) -> String {
    format!("tests/{}/payments", team.ns)
}

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

/// alice creates `payments` from `spec` in front of `shard`'s operator, carol approves
/// what waits in production, and both environments run version 1. Returns alice's view
/// of the team's entries.
async fn approved_payments(team: &Tenant, shard: &str, spec: Value) -> Api<ConfigEntry> {
    let entries = team.entries_as("alice").await;
    create(&entries, &payments(shard, spec)).await;
    let proposal = production_waits(&entries, 1).await;
    team.approves("carol", &proposal).await;
    live_everywhere(&entries, 1).await;
    entries
}

/// Waits until both environments of `payments` run `version`.
async fn live_everywhere(entries: &Api<ConfigEntry>, version: i64) -> ConfigEntry {
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
async fn production_waits(entries: &Api<ConfigEntry>, version: i64) -> String {
    proposal_waiting(entries, "payments", "production", version).await
}

/// Waits until development is Degraded with `text` in its message, and returns the
/// message.
async fn development_degraded(entries: &Api<ConfigEntry>, text: &str) -> String {
    let what = format!("development refused: {text}");
    environment_where(entries, "payments", "development", &what, |e| {
        says(e, EnvironmentPhase::Degraded, text)
    })
    .await
    .message
    .unwrap_or_default()
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
async fn another_namespace_cannot_take_over_a_config_id() {
    let team = Tenant::new("claim-team", TEAM).await;
    let rogue = Tenant::new("claim-rogue", &[("mallory", ADMIN)]).await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team, &rogue], &[]);
    // An id that names no namespace: whatever mallory learns, she learns from it.
    let config_id = format!("tests/payments-{}", uuid::Uuid::new_v4());

    // The team's payments: version 1 live everywhere, version 2 waits in production.
    let spec = payments_spec(&config_id, json!({"pool": 10}));
    let entries = approved_payments(&team, &shard, spec).await;
    patch_spec(&entries, "payments", json!({"data": {"pool": 20}}))
        .await
        .expect("alice edits");
    production_waits(&entries, 2).await;
    let before = Record::of(&config_id, &[&team]).await;

    // mallory, admin of her own namespace only, claims the same config id with an
    // unprotected production...
    let rogue_entries = rogue.entries_as("mallory").await;
    let mut spec = unguarded_spec(&config_id, json!({"pool": 999}));
    spec["deletionPolicy"] = json!("Delete");
    create(&rogue_entries, &payments(&shard, spec)).await;
    let refused = validation_refused(&rogue_entries, "payments").await;
    let claimed = "belongs to a ConfigEntry in another namespace";
    assert_reason(&refused, "ConfigIdClaimed", claimed);
    assert!(
        !refused.message.contains(&team.ns),
        "names the other tenant: {refused:?}"
    );

    // ...then asks to promote the team's pending version 2, and to roll back to 1.
    let rogue_changes = rogue.changes_as("mallory").await;
    for (name, proposal) in [
        ("promote", json!({"version": 2})),
        ("read-back", json!({"rollbackTo": 1})),
    ] {
        let spec = json!({"configEntry": "payments", "environment": "production"});
        let spec = support::with_fields(spec, proposal);
        create(
            &rogue_changes,
            &in_shard(change(name, "mallory", spec), &shard),
        )
        .await;
        let failed = change_in(&rogue_changes, name, ChangePhase::Failed).await;
        let ready = support::condition(&failed, CONDITION_READY).expect("Ready");
        assert_eq!(ready.reason, "ConfigIdClaimed", "{}", ready.message);
        let status = failed.status.expect("status");
        assert!(
            status.validation_errors.is_empty() && status.resulting_version.is_none(),
            "the refusal reveals or makes nothing: {status:?}"
        );
    }

    // Deleting her entry (deletionPolicy Delete) forgets nothing of the team's.
    delete_until_gone(&rogue_entries, "payments").await;

    let after = Record::of(&config_id, &[&team]).await;
    assert_eq!(before, after, "the team's config id changed");
    let team_entry = entries.get("payments").await.expect("the team's entry");
    assert_eq!(
        environment(&team_entry, "production"),
        (Some(EnvironmentPhase::PendingApproval), Some(1))
    );
}

#[tokio::test]
async fn config_ids_outside_the_namespace_prefix_are_refused() {
    let team = Tenant::new("prefix-team", &[("alice", ADMIN)]).await;
    let rogue = Tenant::new("prefix-rogue", &[("mallory", ADMIN)]).await;
    let shard = rogue.ns.clone();
    let _operator = operator_for(
        &shard,
        &[&team, &rogue],
        &["--config-id-prefix", "{namespace}/"],
    );

    let own = format!("{}/payments", team.ns);
    let entries = team.entries_as("alice").await;
    let spec = unguarded_spec(&own, json!({"pool": 1}));
    create(&entries, &payments(&shard, spec)).await;
    live_everywhere(&entries, 1).await;

    // mallory cannot even try the team's ids: they are outside her namespace's prefix.
    let rogue_entries = rogue.entries_as("mallory").await;
    let spec = payments_spec(&own, json!({"pool": 2}));
    create(&rogue_entries, &payments(&shard, spec)).await;
    let refused = validation_refused(&rogue_entries, "payments").await;
    let prefix = format!("must start with \"{}/\"", rogue.ns);
    assert_reason(&refused, "ConfigIdNotAllowed", &prefix);
    let record = Record::of(&own, &[&team]).await;
    assert_eq!(record.versions, 1);
}

#[tokio::test]
async fn no_environment_writes_into_another_environments_objects() {
    let (team, _operator) = team_with_operator("target-swap", TEAM).await;
    let shard = team.ns.clone();
    let config_id = payments_id(&team);
    let aws = support::secrets_manager().await;
    for (name, value) in [
        ("production-db", "production-password"),
        ("development-db", "development-password"),
    ] {
        support::create_aws_secret(&aws, &format!("tests/{}/{name}", team.ns), value).await;
    }
    let reference = |name: &str| json!({"DB_PASSWORD": {"provider": "AwsSecretsManager", "secretId": format!("tests/{}/{name}", team.ns)}});
    let mut spec = payments_spec(&config_id, json!({"pool": 10}));
    spec["environments"][0]["secrets"] = reference("development-db");
    spec["environments"][1]["secrets"] = reference("production-db");
    let entries = approved_payments(&team, &shard, spec.clone()).await;
    let config_maps = team.config_maps();
    let production = config_maps
        .get("payments-production")
        .await
        .expect("production's ConfigMap");
    let secrets = team.secrets();
    present(&secrets, "payments-production").await;
    let before = Record::of(&config_id, &[&team]).await;

    // alice, who may edit the spec but not approve, points development (no approval)
    // at production's ConfigMap and Secret with new content, and moves production
    // elsewhere.
    let mut moved = spec.clone();
    for target in ["configMap", "secret"] {
        moved["environments"][1][target] = json!({"name": "payments-elsewhere"});
    }
    let mut swapped = moved.clone();
    swapped["data"] = json!({"pool": 666});
    for target in ["configMap", "secret"] {
        swapped["environments"][0][target] = json!({"name": "payments-production"});
    }
    patch_spec(&entries, "payments", swapped.clone())
        .await
        .expect("alice swaps the targets");
    let message = development_degraded(&entries, "production").await;
    assert!(
        message.contains("ConfigMap") && message.contains("environment \"production\""),
        "{message}"
    );
    let now = config_maps
        .get("payments-production")
        .await
        .expect("production's ConfigMap stays");
    assert_eq!(
        now.data, production.data,
        "development's content reached production's ConfigMap"
    );

    // Second try: move production away first (its old objects go), then point
    // development at the names production's consumers read. The names stay
    // production's for good.
    patch_spec(&entries, "payments", moved)
        .await
        .expect("alice moves production");
    gone(&config_maps, "payments-production").await;
    let mut taken = swapped;
    taken["data"] = json!({"pool": 667});
    patch_spec(&entries, "payments", taken)
        .await
        .expect("alice points development at the free name");
    let message = development_degraded(&entries, "bound to environment").await;
    assert!(
        message.contains("whose approved content it holds"),
        "{message}"
    );
    assert!(
        !exists(&config_maps, "payments-production").await,
        "development wrote production's ConfigMap"
    );
    let secret = secrets.get_opt("payments-production").await.expect("read");
    assert!(
        secret.is_none_or(|s| support::secret_data(s).get("DB_PASSWORD")
            != Some(&"development-password".to_owned())),
        "development's secret reached production's Secret"
    );
    // Production's approved state is what it was.
    let after = Record::of(&config_id, &[]).await;
    assert_eq!(
        after.applied_in("production"),
        before.applied_in("production")
    );
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
    sneaky.data = json!({"pool": 666});
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
async fn a_rotation_policy_never_takes_over_a_secret_it_did_not_make() {
    let roles = [("alice", SECRETS_ADMIN), ("alice", ADMIN)];
    let (team, _operator) = team_with_operator("srp-takeover", &roles).await;
    let secrets = team.secrets();

    // A Secret someone else made, that a workload trusts.
    let foreign = secret(
        "payments-db",
        json!({"password": "set-by-the-dba", "user": "payments"}),
    );
    let before = create(&secrets, &foreign).await;

    let policies: Api<SecretRotationPolicy> = team.api_as("alice").await;
    let in_cluster = |name: &str, target: &str| {
        let spec = json!({
            "provider": "InCluster",
            "secretId": name,
            "rotationInterval": "30d",
            "target": {"name": target},
        });
        in_shard(policy(name, spec), &team.ns)
    };
    create(&policies, &in_cluster("takeover", "payments-db")).await;
    let refused = condition_where(&policies, "takeover", CONDITION_VALIDATED, |c| {
        c.status == "False"
    })
    .await;
    assert_reason(&refused, "TargetNotOwned", "belongs to someone else");
    let after = secrets.get("payments-db").await.expect("the Secret");
    assert_eq!(after.data, before.data, "the foreign Secret changed");
    assert_eq!(after.metadata.labels, before.metadata.labels);

    // Its own target: created, and a key someone adds stays through a rotation.
    create(&policies, &in_cluster("own", "session-key")).await;
    present(&secrets, "session-key").await;
    let note = json!({"stringData": {"NOTE": "added by the team"}});
    merge(&secrets, "session-key", note).await;
    annotate(&policies, "own", "config.summit.io/rotate", "now").await;
    policy_where(&policies, "own", |s| {
        s.rotation_count.is_some_and(|n| n >= 1)
    })
    .await;
    let data = support::secret_data(secrets.get("session-key").await.expect("the Secret"));
    assert_eq!(
        data.get("NOTE").map(String::as_str),
        Some("added by the team"),
        "the policy removed a key it did not write"
    );
    assert!(data.contains_key("value") && data.contains_key("previous"));
}

/// Creates, as mallory and as raw JSON (the ConfigEntry type itself would not read
/// it), an entry in `rogue`'s namespace whose data nests 200 levels deep.
async fn create_deep_entry(rogue: &Tenant, shard: &str) {
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!({"d": deep});
    }
    let resource = kube::discovery::ApiResource::erase::<ConfigEntry>(&());
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(env().client_as("mallory").await, &rogue.ns, &resource);
    let deep_entry: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "deep", "labels": {support::attack::SHARD: shard}},
        "spec": {"configId": format!("tests/{}/deep", rogue.ns), "data": {"d": deep}, "environments": [{"name": "production"}]},
    }))
    .expect("a raw object");
    let request = kube::core::Request::new(raw.resource_url())
        .create(
            &kube::api::PostParams::default(),
            serde_json::to_vec(&deep_entry).expect("JSON"),
        )
        .expect("a request");
    let text = env()
        .client_as("mallory")
        .await
        .request_text(request)
        .await
        .expect("the apiserver takes a 200-deep entry");
    assert!(text.contains("\"name\":\"deep\""), "created");
}

#[tokio::test]
async fn one_tenants_unreadable_object_stops_nobody_else() {
    let team = Tenant::new("deep-team", &[("alice", ADMIN)]).await;
    let rogue = Tenant::new("deep-rogue", &[("mallory", ADMIN)]).await;
    let shard = rogue.ns.clone();
    let team_entries = team.entries_as("alice").await;
    for n in 0..3 {
        let name = format!("before-{n}");
        let spec = payments_spec(&format!("tests/{}/{name}", team.ns), json!({"n": n}));
        create(&team_entries, &in_shard(entry(&name, spec), &shard)).await;
    }
    let operator = operator_for(&shard, &[&team, &rogue], &[]);

    // mallory's entry nests 200 levels deep: the apiserver takes it, the operator
    // refuses it.
    create_deep_entry(&rogue, &shard).await;
    let refused = validation_refused(&rogue.entries_as("mallory").await, "deep").await;
    assert_reason(&refused, "Unreadable", "deeper than 64 levels");

    // A restart lists everything again, the deep entry with the rest.
    operator.kill();
    let log = operator_log(&shard);
    let logged_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let _operator = operator_for(&shard, &[&team, &rogue], &[]);
    let config_id = format!("tests/{}/after", team.ns);
    let spec = payments_spec(&config_id, json!({"pool": 1}));
    create(&team_entries, &in_shard(entry("after", spec), &shard)).await;
    present(&team.config_maps(), "after-development").await;
    for n in 0..3 {
        wait_for(
            &team_entries,
            &format!("before-{n}"),
            "the team's earlier entries applied",
            |e| environment(e, "development").0 == Some(EnvironmentPhase::Applied),
        )
        .await;
    }
    let logged = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) - logged_before;
    assert!(
        logged < 1_000_000,
        "the restarted operator logged {logged} bytes"
    );
    let text = std::fs::read_to_string(&log).expect("read the log");
    assert!(
        !text.contains("bottom"),
        "the deep entry's content reached the log"
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

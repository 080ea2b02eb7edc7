//! Attacks on "approved and audited", run as real users with the chart's roles against
//! the real apiserver (RBAC and the chart's admission policies on), PostgreSQL and
//! Consul. Each attack is refused with a clear message, and a record of everything the
//! target config id has (ConfigMaps, Secrets, applied state, floors, audit rows, Consul
//! keys) shows that nothing changed that was not meant to.
//!
//! alice edits specs (summit-config-admin), bob and carol approve
//! (summit-config-approver, group summit:approvers), mallory is a tenant of her own.

mod support;

use kube::Api;
use serde_json::json;
use summit_config::api::v1alpha1::{ChangePhase, ConfigEntry, EnvironmentPhase};
use support::{
    attack::{
        Record, Tenant, WAIT, approve, change, change_in, create, entry, entry_where, environment,
        environment_where, operator_for, patch_spec, proposal_waiting, ready_reason, refusal, says,
        validated,
    },
    env, eventually, install_crds,
};

const ADMIN: &str = "summit-config-admin";
const APPROVER: &str = "summit-config-approver";
const SECRETS_ADMIN: &str = "summit-config-secrets-admin";

/// Production needs one approval from group summit:approvers; development none.
fn payments_spec(config_id: &str, data: serde_json::Value) -> serde_json::Value {
    json!({
        "configId": config_id,
        "data": data,
        "environments": [
            {"name": "development"},
            {"name": "production", "approval": {"approverGroups": ["summit:approvers"]}},
        ],
    })
}

/// Has carol approve what waits in production, and waits until both environments of
/// `payments` run `version`.
async fn approved_everywhere(team: &Tenant, version: i64) -> ConfigEntry {
    let entries = team.entries().await;
    let proposal = production_waits(&entries, version).await;
    approve(
        &team.changes_as("carol").await,
        &proposal,
        "carol",
        &["summit:approvers"],
    )
    .await
    .expect("carol approves");
    live_everywhere(&entries, version).await
}

/// Waits until both environments of `payments` run `version`.
async fn live_everywhere(entries: &Api<ConfigEntry>, version: i64) -> ConfigEntry {
    entry_where(
        entries,
        "payments",
        &format!("version {version} live"),
        |e| {
            environment(e, "development") == (Some(EnvironmentPhase::Applied), Some(version))
                && environment(e, "production") == (Some(EnvironmentPhase::Applied), Some(version))
        },
    )
    .await
}

/// Waits until production waits for approval of `version`, and returns the proposal's name.
async fn production_waits(entries: &Api<ConfigEntry>, version: i64) -> String {
    proposal_waiting(entries, "payments", "production", version).await
}

#[tokio::test]
async fn another_namespace_cannot_take_over_a_config_id() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(
        &admin,
        "claim-team",
        &[("alice", ADMIN), ("bob", APPROVER), ("carol", APPROVER)],
    )
    .await;
    let rogue = Tenant::new(&admin, "claim-rogue", &[("mallory", ADMIN)]).await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team, &rogue], &[]);
    // An id that names no namespace: whatever mallory learns, she learns from it.
    let config_id = format!("tests/payments-{}", uuid::Uuid::new_v4());

    // The team's payments: version 1 live everywhere, version 2 waits in production.
    let entries = team.entries_as("alice").await;
    create(
        &entries,
        &entry(
            "payments",
            &shard,
            payments_spec(&config_id, json!({"pool": 10})),
        ),
    )
    .await;
    approved_everywhere(&team, 1).await;
    patch_spec(&entries, "payments", json!({"data": {"pool": 20}}))
        .await
        .expect("alice edits");
    production_waits(&entries, 2).await;
    let before = Record::of(&config_id, &[&team]).await;

    // mallory, admin of her own namespace only, claims the same config id with an
    // unprotected production...
    let rogue_entries = rogue.entries_as("mallory").await;
    let mut spec = payments_spec(&config_id, json!({"pool": 999}));
    spec["environments"][1] = json!({"name": "production"});
    spec["deletionPolicy"] = json!("Delete");
    create(&rogue_entries, &entry("payments", &shard, spec)).await;
    let refused = entry_where(&rogue_entries, "payments", "the claim refused", |e| {
        validated(e).is_some_and(|(status, ..)| status == "False")
    })
    .await;
    let (_, reason, message) = validated(&refused).expect("Validated");
    assert_eq!(reason, "ConfigIdClaimed", "{message}");
    assert!(
        message.contains("belongs to a ConfigEntry in another namespace"),
        "{message}"
    );
    assert!(
        !message.contains(&team.ns),
        "names the other tenant: {message}"
    );

    // ...then asks to promote the team's pending version 2, and to roll back to 1.
    let rogue_changes = rogue.changes_as("mallory").await;
    for (name, proposal) in [
        ("promote", json!({"version": 2})),
        ("read-back", json!({"rollbackTo": 1})),
    ] {
        let mut spec = json!({"configEntry": "payments", "environment": "production"});
        for (key, value) in proposal.as_object().expect("proposal") {
            spec[key] = value.clone();
        }
        create(&rogue_changes, &change(name, &shard, "mallory", spec)).await;
        let failed = change_in(&rogue_changes, name, ChangePhase::Failed).await;
        let (reason, message) = ready_reason(&failed);
        assert_eq!(reason, "ConfigIdClaimed", "{message}");
        let status = failed.status.expect("status");
        assert!(
            status.validation_errors.is_empty() && status.resulting_version.is_none(),
            "the refusal reveals or makes nothing: {status:?}"
        );
    }

    // Deleting her entry (deletionPolicy Delete) forgets nothing of the team's.
    rogue_entries
        .delete("payments", &Default::default())
        .await
        .expect("mallory deletes her entry");
    eventually("mallory's entry gone", WAIT, || async {
        rogue
            .entries()
            .await
            .get_opt("payments")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

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
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(&admin, "prefix-team", &[("alice", ADMIN)]).await;
    let rogue = Tenant::new(&admin, "prefix-rogue", &[("mallory", ADMIN)]).await;
    let shard = rogue.ns.clone();
    let _operator = operator_for(
        &shard,
        &[&team, &rogue],
        &["--config-id-prefix", "{namespace}/"],
    );

    let own = format!("{}/payments", team.ns);
    let entries = team.entries_as("alice").await;
    let mut spec = payments_spec(&own, json!({"pool": 1}));
    spec["environments"][1] = json!({"name": "production"});
    create(&entries, &entry("payments", &shard, spec)).await;
    live_everywhere(&entries, 1).await;

    // mallory cannot even try the team's ids: they are outside her namespace's prefix.
    let rogue_entries = rogue.entries_as("mallory").await;
    create(
        &rogue_entries,
        &entry("payments", &shard, payments_spec(&own, json!({"pool": 2}))),
    )
    .await;
    let refused = entry_where(&rogue_entries, "payments", "the id refused", |e| {
        validated(e).is_some_and(|(status, ..)| status == "False")
    })
    .await;
    let (_, reason, message) = validated(&refused).expect("Validated");
    assert_eq!(reason, "ConfigIdNotAllowed");
    assert!(
        message.contains(&format!("must start with \"{}/\"", rogue.ns)),
        "{message}"
    );
    let record = Record::of(&own, &[&team]).await;
    assert_eq!(record.versions, 1);
}

#[tokio::test]
async fn no_environment_writes_into_another_environments_objects() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(
        &admin,
        "target-swap",
        &[("alice", ADMIN), ("bob", APPROVER), ("carol", APPROVER)],
    )
    .await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team], &[]);
    let config_id = format!("tests/{}/payments", team.ns);
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
    let entries = team.entries_as("alice").await;
    create(&entries, &entry("payments", &shard, spec.clone())).await;
    approved_everywhere(&team, 1).await;
    let config_maps = team.config_maps().await;
    let production = config_maps
        .get("payments-production")
        .await
        .expect("production's ConfigMap");
    let secrets = team.secrets().await;
    eventually("production's Secret", WAIT, || async {
        secrets.get_opt("payments-production").await.ok()?
    })
    .await;
    let before = Record::of(&config_id, &[&team]).await;

    // alice, who may edit the spec but not approve, points development (no approval)
    // at production's ConfigMap and Secret with new content, and moves production
    // elsewhere.
    let mut swapped = spec.clone();
    swapped["data"] = json!({"pool": 666});
    swapped["environments"][0]["configMap"] = json!({"name": "payments-production"});
    swapped["environments"][0]["secret"] = json!({"name": "payments-production"});
    swapped["environments"][1]["configMap"] = json!({"name": "payments-elsewhere"});
    swapped["environments"][1]["secret"] = json!({"name": "payments-elsewhere"});
    patch_spec(&entries, "payments", swapped.clone())
        .await
        .expect("alice swaps the targets");
    let message = environment_where(
        &entries,
        "payments",
        "development",
        "development refused",
        |e| says(e, EnvironmentPhase::Degraded, "production"),
    )
    .await
    .message
    .unwrap_or_default();
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
    let mut moved = spec.clone();
    moved["environments"][1]["configMap"] = json!({"name": "payments-elsewhere"});
    moved["environments"][1]["secret"] = json!({"name": "payments-elsewhere"});
    patch_spec(&entries, "payments", moved.clone())
        .await
        .expect("alice moves production");
    eventually("production's old ConfigMap removed", WAIT, || async {
        config_maps
            .get_opt("payments-production")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let mut taken = moved.clone();
    taken["data"] = json!({"pool": 667});
    taken["environments"][0]["configMap"] = json!({"name": "payments-production"});
    taken["environments"][0]["secret"] = json!({"name": "payments-production"});
    patch_spec(&entries, "payments", taken)
        .await
        .expect("alice points development at the free name");
    let message = environment_where(
        &entries,
        "payments",
        "development",
        "development refused again",
        |e| says(e, EnvironmentPhase::Degraded, "bound to environment"),
    )
    .await
    .message
    .unwrap_or_default();
    assert!(
        message.contains("whose approved content it holds"),
        "{message}"
    );
    assert!(
        config_maps
            .get_opt("payments-production")
            .await
            .expect("read")
            .is_none(),
        "development wrote production's ConfigMap"
    );
    let secret = secrets.get_opt("payments-production").await.expect("read");
    assert!(
        secret.is_none_or(|s| {
            s.data
                .unwrap_or_default()
                .get("DB_PASSWORD")
                .map(|v| v.0.clone())
                != Some(b"development-password".to_vec())
        }),
        "development's secret reached production's Secret"
    );
    // Production's approved state is what it was.
    let after = Record::of(&config_id, &[]).await;
    assert_eq!(
        after.applied.iter().find(|a| a.0 == "production"),
        before.applied.iter().find(|a| a.0 == "production")
    );
}

#[tokio::test]
async fn deleting_and_recreating_an_entry_keeps_its_approvers() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(
        &admin,
        "recreate",
        &[("alice", ADMIN), ("bob", APPROVER), ("carol", APPROVER)],
    )
    .await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team], &[]);
    let entries = team.entries_as("alice").await;
    let config_maps = team.config_maps().await;

    for deletion_policy in ["Retain", "Delete"] {
        let config_id = format!("tests/{}/{}", team.ns, deletion_policy.to_lowercase());
        let mut spec = payments_spec(&config_id, json!({"pool": 10}));
        spec["deletionPolicy"] = json!(deletion_policy);
        create(&entries, &entry("payments", &shard, spec)).await;
        approved_everywhere(&team, 1).await;
        let approved = config_maps
            .get("payments-production")
            .await
            .expect("production's ConfigMap")
            .data;
        let before = Record::of(&config_id, &[]).await;

        // alice deletes the entry and creates it again, production unprotected.
        entries
            .delete("payments", &Default::default())
            .await
            .expect("alice deletes payments");
        eventually("payments gone", WAIT, || async {
            entries
                .get_opt("payments")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        let mut bare = payments_spec(&config_id, json!({"pool": 999, "policy": deletion_policy}));
        bare["environments"][1] = json!({"name": "production"});
        create(&entries, &entry("payments", &shard, bare)).await;
        let pending = entry_where(&entries, "payments", "production waits", |e| {
            environment(e, "production").0 == Some(EnvironmentPhase::PendingApproval)
        })
        .await;
        let message = pending
            .status
            .and_then(|s| s.environments.into_iter().find(|e| e.name == "production"))
            .and_then(|e| e.message)
            .unwrap_or_default();
        assert!(
            message.contains("1 approval from group summit:approvers holds until it is approved"),
            "{message}"
        );

        // Nothing new went live in production, nothing was auto-approved there: what
        // it ran stays (Retain) or was forgotten with the entry (Delete).
        let after = Record::of(&config_id, &[]).await;
        let production =
            |record: &Record| record.applied.iter().find(|a| a.0 == "production").cloned();
        match deletion_policy {
            "Retain" => assert_eq!(production(&after), production(&before)),
            _ => assert_eq!(production(&after), None),
        }
        assert_eq!(after.floors, before.floors, "the floor is kept");
        let production_now = config_maps
            .get_opt("payments-production")
            .await
            .expect("read");
        match deletion_policy {
            // Retained: the approved version is projected again.
            "Retain" => assert_eq!(production_now.and_then(|c| c.data), approved),
            // Forgotten: nothing is live, and nothing unapproved is either.
            _ => assert!(production_now.is_none(), "unapproved content went live"),
        }
        assert!(
            !after.audit[before.audit.len()..]
                .iter()
                .any(|(_, changes)| {
                    changes["event"] == "applied" && changes["environment"] == "production"
                }),
            "an application in production was audited: {:?}",
            &after.audit[before.audit.len()..]
        );

        // alice cannot approve her own relaxation; bob can, and then it applies.
        let proposal = production_waits(&entries, after.versions).await;
        let changes = team.changes_as("alice").await;
        let message = refusal(approve(&changes, &proposal, "alice", &["summit:developers"]).await);
        assert!(
            message.contains("nobody approves their own change"),
            "{message}"
        );
        approve(
            &team.changes_as("bob").await,
            &proposal,
            "bob",
            &["summit:approvers"],
        )
        .await
        .expect("bob approves");
        change_in(&team.changes().await, &proposal, ChangePhase::Applied).await;
        let relaxed = Record::of(&config_id, &[]).await;
        assert_eq!(
            relaxed
                .floors
                .iter()
                .find(|f| f.0 == "production")
                .and_then(|f| f.1.clone()),
            Some(json!({"autoApprove": true})),
            "the approved change lowered the floor"
        );
        entries
            .delete("payments", &Default::default())
            .await
            .expect("clean up");
        eventually("payments gone", WAIT, || async {
            entries
                .get_opt("payments")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn nobody_approves_their_own_edit_and_the_audit_names_the_real_author() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    // bob may both edit and approve: the editor who approves is the attack.
    let team = Tenant::new(
        &admin,
        "self-approval",
        &[
            ("alice", ADMIN),
            ("bob", ADMIN),
            ("bob", APPROVER),
            ("carol", APPROVER),
        ],
    )
    .await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team], &[]);
    let config_id = format!("tests/{}/payments", team.ns);
    let entries = team.entries_as("alice").await;
    create(
        &entries,
        &entry(
            "payments",
            &shard,
            payments_spec(&config_id, json!({"pool": 10})),
        ),
    )
    .await;
    approved_everywhere(&team, 1).await;

    // bob edits the spec, claiming to be someone else through the field manager and
    // the author annotation; the apiserver stamps who he is.
    let bob_entries = team.entries_as("bob").await;
    let forged = refusal(
        bob_entries
            .patch(
                "payments",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"metadata": {"annotations": {"config.summit.io/spec-author": "carol"}}}),
                ),
            )
            .await,
    );
    assert!(forged.contains("changes only with the spec"), "{forged}");
    bob_entries
        .patch(
            "payments",
            &kube::api::PatchParams {
                field_manager: Some("carol".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(json!({
                "metadata": {"annotations": {"config.summit.io/spec-author": "carol"}},
                "spec": {"data": {"pool": 20}},
            })),
        )
        .await
        .expect("bob edits the spec");
    let proposal = production_waits(&entries, 2).await;
    let changes = team.changes().await;
    let pending = changes.get(&proposal).await.expect("the proposal");
    assert_eq!(
        pending.spec.requested_by, "bob",
        "the proposal names the author"
    );

    // bob cannot approve it; the apiserver says why, and nothing moves.
    let bob_changes = team.changes_as("bob").await;
    let message = refusal(approve(&bob_changes, &proposal, "bob", &["summit:approvers"]).await);
    assert!(
        message.contains("nobody approves their own change"),
        "{message}"
    );

    // alice adds an edit of her own on top (version 3): its proposal is hers, and
    // bob's version 2 rides along, so neither of them counts.
    patch_spec(&entries, "payments", json!({"data": {"pool": 30}}))
        .await
        .expect("alice edits");
    let proposal = production_waits(&entries, 3).await;
    approve(&bob_changes, &proposal, "bob", &["summit:approvers"])
        .await
        .expect("the apiserver lets bob approve alice's change");
    let ignored = eventually("bob's approval ignored", WAIT, || async {
        let change = changes.get(&proposal).await.ok()?;
        let status = change.status?;
        (!status.ignored_approvals.is_empty()).then_some(status.ignored_approvals)
    })
    .await;
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
    approve(
        &team.changes_as("carol").await,
        &proposal,
        "carol",
        &["summit:approvers"],
    )
    .await
    .expect("carol approves");
    change_in(&changes, &proposal, ChangePhase::Applied).await;
    let pool = support::postgres().await;
    let authors: Vec<(i32, String)> = sqlx::query_as(
        "SELECT version, created_by FROM config_versions WHERE config_id = $1 ORDER BY version",
    )
    .bind(&config_id)
    .fetch_all(&pool)
    .await
    .expect("read the versions");
    assert_eq!(
        authors,
        [
            (1, "alice".to_owned()),
            (2, "bob".to_owned()),
            (3, "alice".to_owned())
        ]
    );
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM config_audit WHERE config_id = $1 AND changes ->> 'event' = 'versionRecorded' ORDER BY version",
    )
    .bind(&config_id)
    .fetch_all(&pool)
    .await
    .expect("read the audit");
    assert_eq!(recorded, ["alice", "bob", "alice"]);

    // bob slips his content into a write the operator refuses (a target namespace it
    // does not allow), and alice fixes it: the version holds both their writes, is
    // proposed in alice's name, and bob still cannot approve it.
    let mut sneaky = entries.get("payments").await.expect("payments").spec;
    sneaky.data = json!({"pool": 666});
    sneaky.environments[0].config_map =
        Some(serde_json::from_value(json!({"namespace": "kube-system"})).expect("a target"));
    patch_spec(
        &bob_entries,
        "payments",
        serde_json::to_value(&sneaky).expect("spec"),
    )
    .await
    .expect("bob writes");
    entry_where(&entries, "payments", "bob's write refused", |e| {
        validated(e)
            .is_some_and(|(status, reason, _)| status == "False" && reason == "TargetNotAllowed")
    })
    .await;
    patch_spec(
        &entries,
        "payments",
        json!({"environments": [
            {"name": "development"},
            {"name": "production", "approval": {"approverGroups": ["summit:approvers"]}},
        ]}),
    )
    .await
    .expect("alice fixes the target");
    let proposal = production_waits(&entries, 4).await;
    let pending = changes.get(&proposal).await.expect("the proposal");
    assert_eq!(pending.spec.requested_by, "alice");
    let authors: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata -> 'authors' FROM config_versions WHERE config_id = $1 AND version = 4",
    )
    .bind(&config_id)
    .fetch_one(&pool)
    .await
    .expect("read the version");
    assert_eq!(authors, json!(["bob", "alice"]));
    approve(&bob_changes, &proposal, "bob", &["summit:approvers"])
        .await
        .expect("the apiserver lets bob approve alice's change");
    let ignored = eventually("bob's approval ignored", WAIT, || async {
        let status = changes.get(&proposal).await.ok()?.status?;
        (!status.ignored_approvals.is_empty()).then_some(status.ignored_approvals)
    })
    .await;
    assert_eq!(
        ignored[0].reason,
        "bob wrote version 4, which this change also brings live"
    );

    // Nobody asks for a lower floor by hand: that is the operator's to propose.
    let forged = change(
        "lower-the-floor",
        &shard,
        "alice",
        json!({"configEntry": "payments", "environment": "production", "patch": {"note": "typo"},
               "approvalPolicy": {"autoApprove": true}}),
    );
    let message = refusal(
        team.changes_as("alice")
            .await
            .create(&kube::api::PostParams::default(), &forged)
            .await,
    );
    assert!(
        message.contains("proposed by the operator alone"),
        "{message}"
    );
}

#[tokio::test]
async fn a_rotation_policy_never_takes_over_a_secret_it_did_not_make() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(
        &admin,
        "srp-takeover",
        &[("alice", SECRETS_ADMIN), ("alice", ADMIN)],
    )
    .await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team], &[]);
    let secrets = team.secrets().await;

    // A Secret someone else made, that a workload trusts.
    let foreign: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "payments-db"},
        "stringData": {"password": "set-by-the-dba", "user": "payments"},
    }))
    .expect("a Secret");
    create(&secrets, &foreign).await;
    let before = secrets.get("payments-db").await.expect("the Secret");

    let policies: Api<summit_config::api::v1alpha1::SecretRotationPolicy> =
        Api::namespaced(env().client_as("alice").await, &team.ns);
    let policy = |name: &str, target: &str| -> summit_config::api::v1alpha1::SecretRotationPolicy {
        serde_json::from_value(json!({
            "apiVersion": "config.summit.io/v1alpha1",
            "kind": "SecretRotationPolicy",
            "metadata": {"name": name, "labels": {support::attack::SHARD: shard}},
            "spec": {
                "provider": "InCluster",
                "secretId": name,
                "rotationInterval": "30d",
                "target": {"name": target},
            },
        }))
        .expect("a policy")
    };
    create(&policies, &policy("takeover", "payments-db")).await;
    let refused = eventually("the policy refused", WAIT, || async {
        let policy = policies.get("takeover").await.ok()?;
        let status = policy.status?;
        let validated =
            summit_config::api::v1alpha1::find_condition(&status.conditions, "Validated")?;
        (validated.status == "False").then(|| (validated.reason.clone(), validated.message.clone()))
    })
    .await;
    assert_eq!(refused.0, "TargetNotOwned", "{}", refused.1);
    assert!(
        refused.1.contains("belongs to someone else"),
        "{}",
        refused.1
    );
    let after = secrets.get("payments-db").await.expect("the Secret");
    assert_eq!(after.data, before.data, "the foreign Secret changed");
    assert_eq!(after.metadata.labels, before.metadata.labels);

    // Its own target: created, and a key someone adds stays through a rotation.
    create(&policies, &policy("own", "session-key")).await;
    eventually("the policy's Secret", WAIT, || async {
        secrets.get_opt("session-key").await.ok()?
    })
    .await;
    secrets
        .patch(
            "session-key",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"NOTE": "added by the team"}})),
        )
        .await
        .expect("add a key");
    policies
        .patch(
            "own",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"config.summit.io/rotate": "now"}}}),
            ),
        )
        .await
        .expect("ask for a rotation");
    eventually("rotated", WAIT, || async {
        let policy = policies.get("own").await.ok()?;
        (policy.status?.rotation_count? >= 1).then_some(())
    })
    .await;
    let secret = secrets
        .get("session-key")
        .await
        .expect("the policy's Secret");
    let data = secret.data.unwrap_or_default();
    assert_eq!(
        data.get("NOTE").map(|v| v.0.clone()),
        Some(b"added by the team".to_vec()),
        "the policy removed a key it did not write"
    );
    assert!(data.contains_key("value") && data.contains_key("previous"));
}

#[tokio::test]
async fn one_tenants_unreadable_object_stops_nobody_else() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(&admin, "deep-team", &[("alice", ADMIN)]).await;
    let rogue = Tenant::new(&admin, "deep-rogue", &[("mallory", ADMIN)]).await;
    let shard = rogue.ns.clone();
    let team_entries = team.entries_as("alice").await;
    for n in 0..3 {
        let config_id = format!("tests/{}/before-{n}", team.ns);
        create(
            &team_entries,
            &entry(
                &format!("before-{n}"),
                &shard,
                payments_spec(&config_id, json!({"n": n})),
            ),
        )
        .await;
    }
    let operator = operator_for(&shard, &[&team, &rogue], &[]);

    // mallory's entry nests 200 levels deep: the apiserver takes it. (Sent as raw
    // JSON: the ConfigEntry type itself would not read it.)
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
    let rogue_entries = rogue.entries_as("mallory").await;
    let refused = entry_where(&rogue_entries, "deep", "the deep entry refused", |e| {
        validated(e).is_some_and(|(status, ..)| status == "False")
    })
    .await;
    let (_, reason, message) = validated(&refused).expect("Validated");
    assert_eq!(reason, "Unreadable");
    assert!(message.contains("deeper than 64 levels"), "{message}");

    // A restart lists everything again, the deep entry with the rest.
    operator.kill();
    let log =
        std::path::PathBuf::from(env().var("SUMMIT_ENV_DIR")).join(format!("operator-{shard}.log"));
    let logged_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let _operator = operator_for(&shard, &[&team, &rogue], &[]);
    let config_id = format!("tests/{}/after", team.ns);
    create(
        &team_entries,
        &entry(
            "after",
            &shard,
            payments_spec(&config_id, json!({"pool": 1})),
        ),
    )
    .await;
    eventually("the team's new entry projected", WAIT, || async {
        team.config_maps()
            .await
            .get_opt("after-development")
            .await
            .ok()?
    })
    .await;
    for n in 0..3 {
        entry_where(
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
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(&admin, "removal", &[("alice", ADMIN)]).await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team], &[]);
    let config_id = format!("tests/{}/payments", team.ns);
    let manifest = std::path::PathBuf::from(env().var("SUMMIT_ENV_DIR"))
        .join(format!("{}-payments.yaml", team.ns));
    let yaml = format!(
        r#"apiVersion: config.summit.io/v1alpha1
kind: ConfigEntry
metadata:
  name: payments
  namespace: {ns}
  labels: {{"{label}": "{shard}"}}
spec:
  configId: {config_id}
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
    let applied = env()
        .kubectl()
        .env("KUBECONFIG", env().kubeconfig_as("alice"))
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .expect("run kubectl apply");
    assert!(
        applied.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let entries = team.entries().await;
    entry_where(&entries, "payments", "every environment applied", |e| {
        ["development", "production", "staging"]
            .iter()
            .all(|name| environment(e, name).0 == Some(EnvironmentPhase::Applied))
    })
    .await;
    let content = |name: &'static str| {
        let config_maps = &team;
        async move {
            let cm = config_maps
                .config_maps()
                .await
                .get(&format!("payments-{name}"))
                .await
                .expect("ConfigMap");
            let text = cm.data.unwrap_or_default()["config.json"].clone();
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
        }
    };
    assert_eq!(content("production").await, json!({"pool": {"max": 50}}));
    // The null, dropped by client-side apply on its way to the apiserver, removes
    // nothing: that is what `remove` is for.
    assert_eq!(
        content("staging").await,
        json!({"legacy": {"endpoint": "old"}, "pool": {"max": 10, "debug": true}})
    );
    let explained = env()
        .kubectl()
        .args(["explain", "configentries.spec.environments.remove"])
        .output()
        .expect("run kubectl explain");
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains("survives `kubectl apply`, Helm and Argo CD"),
        "{text}"
    );
}

#[tokio::test]
async fn a_platform_floor_holds_whatever_a_spec_says() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(&admin, "floor", &[("alice", ADMIN), ("carol", APPROVER)]).await;
    let shard = team.ns.clone();
    let floors = r#"[{"environments": "prod*", "requiredApprovals": 1, "approverGroups": ["summit:approvers"]}]"#;
    let _operator = operator_for(&shard, &[&team], &["--approval-floors", floors]);
    let config_id = format!("tests/{}/payments", team.ns);
    let mut spec = payments_spec(&config_id, json!({"pool": 10}));
    spec["environments"][1] = json!({"name": "production", "approval": {"autoApprove": true}});
    let entries = team.entries_as("alice").await;
    create(&entries, &entry("payments", &shard, spec)).await;
    let proposal = production_waits(&entries, 1).await;
    let changes = team.changes().await;
    let waiting = eventually("the floor named", WAIT, || async {
        let change = changes.get(&proposal).await.ok()?;
        let (_, message) = ready_reason(&change);
        message.contains("platform").then_some(message)
    })
    .await;
    assert_eq!(
        waiting,
        "waiting for 1 more approval(s) for the platform's floor for prod* (1 approval from group summit:approvers)"
    );
    let entry = entries.get("payments").await.expect("payments");
    assert_eq!(
        environment(&entry, "development").0,
        Some(EnvironmentPhase::Applied),
        "the floor covers prod* only"
    );
    approve(
        &team.changes_as("carol").await,
        &proposal,
        "carol",
        &["summit:approvers"],
    )
    .await
    .expect("carol approves");
    live_everywhere(&entries, 1).await;
}

#[tokio::test]
async fn a_relaxation_is_approved_by_none_of_its_writers() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let team = Tenant::new(
        &admin,
        "relaxation",
        &[
            ("alice", ADMIN),
            ("bob", ADMIN),
            ("bob", APPROVER),
            ("carol", APPROVER),
        ],
    )
    .await;
    let shard = team.ns.clone();
    let _operator = operator_for(&shard, &[&team], &[]);
    let config_id = format!("tests/{}/payments", team.ns);
    let entries = team.entries_as("alice").await;
    create(
        &entries,
        &entry(
            "payments",
            &shard,
            payments_spec(&config_id, json!({"pool": 10})),
        ),
    )
    .await;
    approved_everywhere(&team, 1).await;

    // bob (who may approve, and so may relax a policy) drops production's approval in
    // a write the operator refuses; alice's fix of the target carries it through.
    let mut relaxed = entries.get("payments").await.expect("payments").spec;
    relaxed.environments[1].approval =
        Some(serde_json::from_value(json!({"autoApprove": true})).expect("a policy"));
    relaxed.environments[0].config_map =
        Some(serde_json::from_value(json!({"namespace": "kube-system"})).expect("a target"));
    patch_spec(
        &team.entries_as("bob").await,
        "payments",
        serde_json::to_value(&relaxed).expect("spec"),
    )
    .await
    .expect("bob relaxes production");
    entry_where(&entries, "payments", "bob's write refused", |e| {
        validated(e)
            .is_some_and(|(status, reason, _)| status == "False" && reason == "TargetNotAllowed")
    })
    .await;
    relaxed.environments[0].config_map = None;
    patch_spec(
        &entries,
        "payments",
        serde_json::to_value(&relaxed).expect("spec"),
    )
    .await
    .expect("alice fixes the target");
    let proposal = production_waits(&entries, 1).await;
    let changes = team.changes().await;
    let pending = changes.get(&proposal).await.expect("the relaxation");
    assert_eq!(pending.spec.requested_by, "alice");
    assert_eq!(
        pending.spec.approval_policy,
        Some(serde_json::from_value(json!({"autoApprove": true})).expect("a policy"))
    );

    // bob may approve changes, but not this one: he wrote it.
    approve(
        &team.changes_as("bob").await,
        &proposal,
        "bob",
        &["summit:approvers"],
    )
    .await
    .expect("the apiserver lets bob approve alice's change");
    let ignored = eventually("bob's approval ignored", WAIT, || async {
        let status = changes.get(&proposal).await.ok()?.status?;
        (!status.ignored_approvals.is_empty()).then_some(status.ignored_approvals)
    })
    .await;
    assert_eq!(ignored[0].approver, "bob");
    assert!(
        ignored[0].reason.contains("bob wrote the spec"),
        "{}",
        ignored[0].reason
    );
    let floor = |record: Record| {
        record
            .floors
            .into_iter()
            .find(|f| f.0 == "production")
            .and_then(|f| f.1)
    };
    assert_eq!(
        floor(Record::of(&config_id, &[]).await),
        Some(json!({"approverGroups": ["summit:approvers"]})),
        "the floor held"
    );

    // carol, who wrote nothing of it, approves: the relaxation takes effect.
    approve(
        &team.changes_as("carol").await,
        &proposal,
        "carol",
        &["summit:approvers"],
    )
    .await
    .expect("carol approves");
    change_in(&changes, &proposal, ChangePhase::Applied).await;
    assert_eq!(
        floor(Record::of(&config_id, &[]).await),
        Some(json!({"autoApprove": true}))
    );
}

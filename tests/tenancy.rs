//! Attacks across tenants: config ids, projection targets, Secrets and unreadable
//! objects, run as real users with the chart's roles against
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
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_VALIDATED, ChangePhase, ConfigEntry, EnvironmentPhase,
    SecretRotationPolicy,
};
use support::{
    Tenant, annotate, assert_reason, attack::Record, attack::in_shard, attack::operator_for,
    change, change_in, condition_where, create, delete_until_gone, entry, env, environment,
    environment_where, exists, gone, merge, operator_log, patch_spec, payments::*, policy,
    policy_where, present, says, secret, validation_refused, wait_for,
};

const SECRETS_ADMIN: &str = "summit-config-secrets-admin";

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

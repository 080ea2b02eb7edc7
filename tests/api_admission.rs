//! The CRDs against the real apiserver: they install and are served, `kubectl get`
//! shows their columns, and the apiserver itself refuses invalid objects with a
//! message that says what is wrong.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ConfigChange, ConfigEntry, SecretRotationPolicy};
use support::{Tenant, create, env, invalid, run_ok, try_create, try_merge, with_fields};

/// The spec of an entry of `config_id` with a development and a production.
fn entry_spec(config_id: &str) -> Value {
    json!({
        "configId": config_id,
        "data": {"pool": {"max": 10}},
        "environments": [{"name": "development"}, {"name": "production"}],
    })
}

/// Entry `name` of `config_id`, as [`entry_spec`] has it.
fn entry(name: &str, config_id: &str) -> ConfigEntry {
    support::entry(name, entry_spec(config_id))
}

/// A change to production of `payments`, requested by `user`, with `proposal`'s fields.
fn change(name: &str, user: &str, proposal: Value) -> ConfigChange {
    let spec = json!({
        "configEntry": "payments",
        "environment": "production",
        "message": "more connections",
    });
    support::change(name, user, with_fields(spec, proposal))
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns_and_the_summit_category() {
    let s = Tenant::new("printer-columns", &[]).await;
    create(&s.entries(), &entry("payments", "payments/database")).await;

    let stdout = run_ok(env().kubectl().args(["get", "ce", "-n", &s.ns]));
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "CONFIG",
            "VERSION",
            "ENVIRONMENTS",
            "VALIDATED",
            "READY",
            "AGE"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("payments/database"), "{stdout}");

    let output = env()
        .kubectl()
        .args(["get", "summit", "-n", &s.ns, "-o", "name"])
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "configentry.config.summit.io/payments",
        "{stdout}"
    );
}

#[tokio::test]
async fn hostile_config_ids_are_refused_by_the_apiserver() {
    let s = Tenant::new("hostile-config-ids", &[]).await;
    let cases = [
        ("../etc/passwd", "should match"),
        ("a/../b", "configId must not contain '..'"),
        ("/payments", "should match"),
        ("payments/", "should match"),
        ("pay ments", "should match"),
        ("pay\u{1}ments", "should match"),
        ("Payments", "should match"),
        ("payments/latest", "reserved by the storage layout"),
        ("robert'); drop table config_versions;--", "should match"),
    ];
    for (i, (config_id, expected)) in cases.into_iter().enumerate() {
        let hostile = entry(&format!("e{i}"), config_id);
        let message = invalid(try_create(&s.entries(), &hostile).await);
        assert!(
            message.contains("spec.configId"),
            "{config_id:?}: {message}"
        );
        assert!(message.contains(expected), "{config_id:?}: {message}");
    }
}

#[tokio::test]
async fn a_config_id_cannot_change() {
    let s = Tenant::new("config-id-immutable", &[]).await;
    create(&s.entries(), &entry("payments", "payments/database")).await;
    let patch = json!({"spec": {"configId": "payments/other"}});
    let message = invalid(try_merge(&s.entries(), "payments", patch).await);
    assert!(message.contains("configId is immutable"), "{message}");
}

#[tokio::test]
async fn one_of_rules_are_enforced() {
    let s = Tenant::new("one-of", &[]).await;
    let changes = s.changes();
    for (name, proposal) in [
        ("two", json!({"data": {"a": 1}, "rollbackTo": 1})),
        ("none", json!({})),
    ] {
        let message = invalid(try_create(&changes, &change(name, "admin", proposal)).await);
        assert!(
            message.contains("set exactly one of data, patch, rollbackTo, version and split"),
            "{message}"
        );
    }

    let mut both = entry_spec("payments");
    both["schema"] = json!({"type": "object"});
    both["schemaRef"] = json!({"name": "schemas", "key": "payments.json"});
    let both = support::entry("both", both);
    let message = invalid(try_create(&s.entries(), &both).await);
    assert!(
        message.contains("set at most one of schema and schemaRef"),
        "{message}"
    );
}

#[tokio::test]
async fn a_proposal_cannot_be_edited_after_creation() {
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let s = Tenant::new("proposal-immutable", &roles).await;
    let rollback = change("rollback", "alice", json!({"rollbackTo": 1}));
    create(&s.changes_as("alice").await, &rollback).await;
    let bob = s.changes_as("bob").await;
    let approve = json!({"spec": {"approvals": [{"approver": "bob", "comment": "fine"}]}});
    try_merge(&bob, "rollback", approve)
        .await
        .expect("bob approves");

    let proposal_immutable =
        "the proposal (data, patch, rollbackTo, version, split, approvalPolicy) is immutable";
    let edits = [
        (json!({"rollbackTo": 2}), proposal_immutable),
        (
            json!({"rollbackTo": null, "patch": {"a": 1}}),
            proposal_immutable,
        ),
        (
            json!({"environment": "development"}),
            "environment is immutable",
        ),
        (json!({"message": "something else"}), "message is immutable"),
        (
            json!({"requestedBy": "mallory"}),
            "requestedBy is immutable",
        ),
        (json!({"approvals": []}), "approvals can only be appended"),
        (
            json!({"approvals": [{"approver": "carol", "comment": "fine"}]}),
            "approvals can only be appended",
        ),
    ];
    let changes = s.changes();
    for (edit, expected) in edits {
        let message = invalid(try_merge(&changes, "rollback", json!({"spec": edit})).await);
        assert!(message.contains(expected), "{edit}: {message}");
    }

    // Appending an approval is allowed.
    let append = json!({"spec": {"approvals": [
        {"approver": "bob", "comment": "fine"},
        {"approver": "carol"},
    ]}});
    try_merge(&s.changes_as("carol").await, "rollback", append)
        .await
        .expect("appending an approval is allowed");

    // A rejection, once recorded, is final.
    let reject = json!({"spec": {"rejection": {"rejectedBy": "bob", "reason": "not now"}}});
    try_merge(&bob, "rollback", reject)
        .await
        .expect("rejecting is allowed");
    let withdraw = json!({"spec": {"rejection": null}});
    let message = invalid(try_merge(&changes, "rollback", withdraw).await);
    assert!(
        message.contains("a rejection cannot be withdrawn"),
        "{message}"
    );
}

#[tokio::test]
async fn ranges_and_durations_are_enforced() {
    let s = Tenant::new("ranges", &[]).await;
    for (name, approval, expected) in [
        (
            "contradictory",
            json!({"autoApprove": true, "requiredApprovals": 2}),
            "autoApprove: true contradicts requiredApprovals > 0",
        ),
        (
            "too-many",
            json!({"requiredApprovals": 11}),
            "requiredApprovals",
        ),
    ] {
        let mut spec = entry_spec("payments");
        spec["environments"][1]["approval"] = approval;
        let message = invalid(try_create(&s.entries(), &support::entry(name, spec)).await);
        assert!(message.contains(expected), "{message}");
    }

    let policies: Api<SecretRotationPolicy> = s.api();
    let policy = support::policy(
        "db",
        json!({
            "provider": "AwsSecretsManager",
            "secretId": "db",
            "rotationInterval": "90 days",
            "generator": {"length": 4},
            "target": {"name": "db"},
        }),
    );
    let message = invalid(try_create(&policies, &policy).await);
    assert!(message.contains("spec.rotationInterval"), "{message}");
    assert!(message.contains("spec.generator.length"), "{message}");
}

#[tokio::test]
async fn rbac_is_enforced_for_users_without_rights() {
    let ns = Tenant::new("rbac", &[]).await.ns;
    let mallory = env().client_as("mallory").await;
    let entries: Api<ConfigEntry> = Api::namespaced(mallory.clone(), &ns);
    match entries.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("mallory listed ConfigEntries: {other:?}"),
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(mallory, &ns);
    assert!(config_maps.list(&Default::default()).await.is_err());
}

/// Whether the chart's operator service account may `verb` Secrets in `namespace`
/// (cluster-wide when `None`), as the apiserver's authorizer answers.
async fn operator_may(client: &Client, verb: &str, namespace: Option<&str>) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": "system:serviceaccount:summit-system:summit-config-operator",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:summit-system", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "resource": "secrets", "namespace": namespace.unwrap_or("")},
        },
    }))
    .expect("review");
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("ask the authorizer")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn the_operator_may_touch_secrets_only_in_the_namespaces_it_is_given() {
    let client = Tenant::new("secret-rbac", &[]).await.admin();
    // Listing and watching reach no further than get does in a granted namespace; the
    // operator watches only the Secrets it labelled there.
    for verb in ["get", "list", "watch", "create", "patch", "delete"] {
        assert!(
            operator_may(&client, verb, Some("summit-secrets")).await,
            "{verb} in a granted namespace"
        );
    }
    for verb in ["get", "list", "watch"] {
        assert!(
            !operator_may(&client, verb, None).await,
            "no cluster-wide {verb}"
        );
        assert!(
            !operator_may(&client, verb, Some("kube-system")).await,
            "no {verb} elsewhere"
        );
    }
}

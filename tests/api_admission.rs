//! The CRDs against the real apiserver: they install and are served, `kubectl get`
//! shows their columns, and the apiserver itself refuses invalid objects with a
//! message that says what is wrong.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ConfigChange, ConfigEntry};
use support::{env, fresh_namespace, grant};

async fn setup(test: &str) -> (Client, String) {
    let (client, ns) = fresh_namespace(test).await;
    (client, ns)
}

fn entry(name: &str, config_id: &str) -> Value {
    json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": name},
        "spec": {
            "configId": config_id,
            "data": {"pool": {"max": 10}},
            "environments": [{"name": "development"}, {"name": "production"}],
        },
    })
}

fn change(name: &str, proposal: Value) -> Value {
    let mut spec = json!({
        "configEntry": "payments",
        "environment": "production",
        "message": "more connections",
        "requestedBy": "admin",
    });
    for (key, value) in proposal.as_object().expect("proposal object") {
        spec[key] = value.clone();
    }
    json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigChange",
        "metadata": {"name": name},
        "spec": spec,
    })
}

async fn create<K>(api: &Api<K>, object: Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("object deserializes");
    api.create(&PostParams::default(), &object).await
}

/// The apiserver's refusal message, failing the test if the request was accepted or
/// refused for some other reason than validation.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("expected a 422 Invalid refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns_and_the_summit_category() {
    let (client, ns) = setup("printer-columns").await;
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    create(&entries, entry("payments", "payments/database"))
        .await
        .expect("create entry");

    let output = env()
        .kubectl()
        .args(["get", "ce", "-n", &ns])
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
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
        .args(["get", "summit", "-n", &ns, "-o", "name"])
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
    let (client, ns) = setup("hostile-config-ids").await;
    let entries: Api<ConfigEntry> = Api::namespaced(client, &ns);
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
        let message = refusal(create(&entries, entry(&format!("e{i}"), config_id)).await);
        assert!(
            message.contains("spec.configId"),
            "{config_id:?}: {message}"
        );
        assert!(message.contains(expected), "{config_id:?}: {message}");
    }
}

#[tokio::test]
async fn a_config_id_cannot_change() {
    let (client, ns) = setup("config-id-immutable").await;
    let entries: Api<ConfigEntry> = Api::namespaced(client, &ns);
    create(&entries, entry("payments", "payments/database"))
        .await
        .expect("create");
    let patch = json!({"spec": {"configId": "payments/other"}});
    let message = refusal(
        entries
            .patch("payments", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert!(message.contains("configId is immutable"), "{message}");
}

#[tokio::test]
async fn one_of_rules_are_enforced() {
    let (client, ns) = setup("one-of").await;
    let changes: Api<ConfigChange> = Api::namespaced(client.clone(), &ns);
    let two = change("two", json!({"data": {"a": 1}, "rollbackTo": 1}));
    let message = refusal(create(&changes, two).await);
    assert!(
        message.contains("set exactly one of data, patch, rollbackTo and version"),
        "{message}"
    );
    let none = change("none", json!({}));
    let message = refusal(create(&changes, none).await);
    assert!(
        message.contains("set exactly one of data, patch, rollbackTo and version"),
        "{message}"
    );

    let entries: Api<ConfigEntry> = Api::namespaced(client, &ns);
    let mut both = entry("both", "payments");
    both["spec"]["schema"] = json!({"type": "object"});
    both["spec"]["schemaRef"] = json!({"name": "schemas", "key": "payments.json"});
    let message = refusal(create(&entries, both).await);
    assert!(
        message.contains("set at most one of schema and schemaRef"),
        "{message}"
    );
}

#[tokio::test]
async fn a_proposal_cannot_be_edited_after_creation() {
    let (client, ns) = setup("proposal-immutable").await;
    grant(&client, &ns, "alice", "summit-config-admin").await;
    for approver in ["bob", "carol"] {
        grant(&client, &ns, approver, "summit-config-approver").await;
    }
    let as_user = |user: &'static str| {
        let ns = ns.clone();
        async move { Api::<ConfigChange>::namespaced(env().client_as(user).await, &ns) }
    };
    let changes: Api<ConfigChange> = Api::namespaced(client, &ns);
    let mut original = change("rollback", json!({"rollbackTo": 1}));
    original["spec"]["requestedBy"] = json!("alice");
    create(&as_user("alice").await, original)
        .await
        .expect("create change");
    let approve = json!({"spec": {"approvals": [{"approver": "bob", "comment": "fine"}]}});
    as_user("bob")
        .await
        .patch("rollback", &PatchParams::default(), &Patch::Merge(&approve))
        .await
        .expect("bob approves");

    let edits = [
        (
            json!({"spec": {"rollbackTo": 2}}),
            "the proposal (data, patch, rollbackTo, version, approvalPolicy) is immutable",
        ),
        (
            json!({"spec": {"rollbackTo": null, "patch": {"a": 1}}}),
            "the proposal (data, patch, rollbackTo, version, approvalPolicy) is immutable",
        ),
        (
            json!({"spec": {"environment": "development"}}),
            "environment is immutable",
        ),
        (
            json!({"spec": {"message": "something else"}}),
            "message is immutable",
        ),
        (
            json!({"spec": {"requestedBy": "mallory"}}),
            "requestedBy is immutable",
        ),
        (
            json!({"spec": {"approvals": []}}),
            "approvals can only be appended",
        ),
        (
            json!({"spec": {"approvals": [{"approver": "carol", "comment": "fine"}]}}),
            "approvals can only be appended",
        ),
    ];
    for (edit, expected) in edits {
        let message = refusal(
            changes
                .patch("rollback", &PatchParams::default(), &Patch::Merge(&edit))
                .await,
        );
        assert!(message.contains(expected), "{edit}: {message}");
    }

    // Appending an approval is allowed.
    let append = json!({"spec": {"approvals": [
        {"approver": "bob", "comment": "fine"},
        {"approver": "carol"},
    ]}});
    as_user("carol")
        .await
        .patch("rollback", &PatchParams::default(), &Patch::Merge(&append))
        .await
        .expect("appending an approval is allowed");

    // A rejection, once recorded, is final.
    let reject = json!({"spec": {"rejection": {"rejectedBy": "bob", "reason": "not now"}}});
    as_user("bob")
        .await
        .patch("rollback", &PatchParams::default(), &Patch::Merge(&reject))
        .await
        .expect("rejecting is allowed");
    let withdraw = json!({"spec": {"rejection": null}});
    let message = refusal(
        changes
            .patch(
                "rollback",
                &PatchParams::default(),
                &Patch::Merge(&withdraw),
            )
            .await,
    );
    assert!(
        message.contains("a rejection cannot be withdrawn"),
        "{message}"
    );
}

#[tokio::test]
async fn ranges_and_durations_are_enforced() {
    let (client, ns) = setup("ranges").await;
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    let mut contradictory = entry("contradictory", "payments");
    contradictory["spec"]["environments"][1]["approval"] =
        json!({"autoApprove": true, "requiredApprovals": 2});
    let message = refusal(create(&entries, contradictory).await);
    assert!(
        message.contains("autoApprove: true contradicts requiredApprovals > 0"),
        "{message}"
    );

    let mut too_many = entry("too-many", "payments");
    too_many["spec"]["environments"][1]["approval"] = json!({"requiredApprovals": 11});
    let message = refusal(create(&entries, too_many).await);
    assert!(message.contains("requiredApprovals"), "{message}");

    let policies: Api<summit_config::api::v1alpha1::SecretRotationPolicy> =
        Api::namespaced(client, &ns);
    let policy = json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "SecretRotationPolicy",
        "metadata": {"name": "db"},
        "spec": {
            "provider": "AwsSecretsManager",
            "secretId": "db",
            "rotationInterval": "90 days",
            "generator": {"length": 4},
            "target": {"name": "db"},
        },
    });
    let message = refusal(create(&policies, policy).await);
    assert!(message.contains("spec.rotationInterval"), "{message}");
    assert!(message.contains("spec.generator.length"), "{message}");
}

#[tokio::test]
async fn rbac_is_enforced_for_users_without_rights() {
    let (_, ns) = setup("rbac").await;
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
    let (client, _) = setup("secret-rbac").await;
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

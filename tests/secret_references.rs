//! Secret references against the real apiserver and moto's Secrets Manager through the
//! real AWS SDK: ConfigEntries project AWS and in-cluster references and record only
//! the references, a namespace reaches only its own AWS secrets, and no value reaches
//! logs, Events, status, PostgreSQL or Consul.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_ROTATION_FAILED, SecretRotationPolicy,
};
use support::{
    Operator, Tenant, WAIT, condition_where, consul, consul_get, consul_value, create,
    create_aws_secret, delete, entry, env, events, eventually, exists, gone, merge, operator_log,
    policy, policy_where, postgres, rotation::*, secret, secret_where, secrets_manager,
    with_fields,
};

#[tokio::test]
async fn no_secret_value_reaches_logs_events_status_postgres_or_consul() {
    let moto = with_moto("no-leaks", &[]).await;
    let (s, aws) = (&moto.s, &moto.aws);
    let id = moto.secret("leak-check", "fetched-value-7f3a9c").await;
    let policies: Api<SecretRotationPolicy> = s.api();
    for (name, provider, secret_id) in [
        ("aws", "AwsSecretsManager", id.as_str()),
        ("local", "InCluster", "local-token"),
    ] {
        create(&policies, &policy(name, daily(provider, secret_id, name))).await;
        adopted(&policies, name).await;
        request_rotation(&policies, name, "once").await;
        policy_where(&policies, name, |p| p.rotation_count == Some(1)).await;
    }

    // A ConfigEntry fetches a value of its own through a reference.
    let fetched = format!("tests/{}/fetched", s.ns);
    create_aws_secret(aws, &fetched, r#"{"password":"entry-fetched-value-51d2"}"#).await;
    let spec = json!({
        "configId": s.config_id(),
        "data": {"pool": {"max": 10}},
        "secrets": {
            "DB_PASSWORD": {"provider": "AwsSecretsManager", "secretId": fetched, "key": "password"},
            "LOCAL_TOKEN": {"provider": "InCluster", "secretId": "local-token"},
        },
        "environments": [{"name": "production"}],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    let secrets = s.secrets();
    let projected = secret_where(&secrets, "payments-production", |d| d.len() == 2).await;
    assert_eq!(projected["DB_PASSWORD"], "entry-fetched-value-51d2");

    // Every value the operator generated or fetched.
    let mut values = vec![
        "fetched-value-7f3a9c".to_owned(),
        r#"{"password":"entry-fetched-value-51d2"}"#.to_owned(),
    ];
    values.extend(projected.into_values());
    for name in ["aws", "local"] {
        let data = secret_where(&secrets, name, |d| d.contains_key("previous")).await;
        values.extend(data.into_values());
    }
    assert_eq!(values.len(), 8, "{} values", values.len());

    // A row per policy: in-cluster ids are per namespace, and every run of this test
    // has its own `local-token`.
    let (provider, audit_rows): (String, i64) = sqlx::query_as(
        "SELECT provider, (SELECT count(*) FROM config_audit WHERE config_id = $2)
           FROM secret_rotation_policies WHERE policy = $1 AND secret_id = 'local-token'",
    )
    .bind(format!("{}/local", s.ns))
    .bind(format!("secret:{}/local-token", s.ns))
    .fetch_one(&postgres().await)
    .await
    .expect("the in-cluster policy's row");
    assert_eq!(provider, "InCluster");
    assert!(
        audit_rows > 0,
        "rotations audited under the namespace's secret id"
    );

    for (place, haystack) in everything_the_operator_wrote_or_said(s).await {
        for value in &values {
            assert!(
                !haystack.contains(value.as_str()),
                "a secret value reached {place}"
            );
        }
    }
}

/// Everything the operator wrote or said, by where: its log, Events and policies in
/// the namespace, PostgreSQL's tables and Consul's keys.
async fn everything_the_operator_wrote_or_said(s: &Tenant) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(operator_log(&s.ns)).expect("operator log");
    assert!(log.contains("DEBUG"), "the operator logs at debug level");
    let policies = s.api::<SecretRotationPolicy>();
    let policies = policies.list(&Default::default()).await.expect("policies");
    let mut haystacks = vec![
        ("operator log".to_owned(), log),
        (
            "Events".to_owned(),
            serde_json::to_string(&events(&s.admin(), &s.ns).await).expect("json"),
        ),
        (
            "policies".to_owned(),
            serde_json::to_string(&policies.items).expect("json"),
        ),
    ];
    let pool = postgres().await;
    for table in [
        "config_versions",
        "config_audit",
        "config_applied_state",
        "approval_workflows",
        "secret_rotation_policies",
    ] {
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "SELECT string_agg(row_to_json(t)::text, E'\\n') FROM {table} t"
        ))
        .fetch_one(&pool)
        .await
        .expect("dump a table");
        haystacks.push((format!("table {table}"), rows.unwrap_or_default()));
    }
    let consul = consul("?recurse").await.text().await.expect("Consul keys");
    let keys: Vec<Value> = serde_json::from_str(&consul).unwrap_or_default();
    let values: Vec<String> = keys
        .iter()
        .map(|kv| String::from_utf8_lossy(&consul_value(kv)).into_owned())
        .collect();
    haystacks.push(("Consul".into(), format!("{consul}\n{}", values.join("\n"))));
    haystacks
}

#[tokio::test]
async fn a_config_entry_projects_aws_and_in_cluster_references_and_stores_only_references() {
    let moto = with_moto("entry-secrets", &["--secret-refresh-seconds", "2"]).await;
    let (s, aws) = (&moto.s, &moto.aws);
    let id = format!("tests/{}/db", s.ns);
    create_aws_secret(aws, &id, r#"{"user":"app","password":"first-db-password"}"#).await;

    // An in-cluster secret, generated by its policy.
    let policies: Api<SecretRotationPolicy> = s.api();
    let spec = json!({
        "provider": "InCluster",
        "secretId": "session-key",
        "rotationInterval": "30d",
        "target": {"name": "session-key"},
    });
    create(&policies, &policy("session-key", spec)).await;
    let secrets = s.secrets();
    let session = secret_where(&secrets, "session-key", |d| d.contains_key("value")).await;
    let session = session["value"].clone();
    // The policy's target, deleted or edited by hand, comes back with the same value; a
    // key someone else added is theirs, and stays.
    deleted_then_edited(
        &secrets,
        "session-key",
        |d| d.get("value") == Some(&session),
        json!({"value": "hand-edited", "INJECTED": "by hand"}),
        |d| d.get("INJECTED").map(String::as_str) == Some("by hand"),
    )
    .await;

    let spec = json!({
        "configId": s.config_id(),
        "data": {"pool": {"max": 10}},
        "secrets": {"DB_PASSWORD": {"provider": "AwsSecretsManager", "secretId": id, "key": "password"}},
        "environments": [{
            "name": "production",
            "secrets": {"SESSION_KEY": {"provider": "InCluster", "secretId": "session-key"}},
        }],
    });
    create(&s.entries(), &entry("payments", spec)).await;
    let data = secret_where(&secrets, "payments-production", |d| d.len() == 2).await;
    assert_eq!(data["DB_PASSWORD"], "first-db-password");
    assert_eq!(data["SESSION_KEY"], session);

    // The upstream value changes: the Secret follows.
    aws.put_secret_value()
        .secret_id(&id)
        .secret_string(r#"{"user":"app","password":"second-db-password"}"#)
        .send()
        .await
        .expect("change the value upstream");
    let second = |d: &BTreeMap<String, String>| {
        d.get("DB_PASSWORD").map(String::as_str) == Some("second-db-password")
    };
    secret_where(&secrets, "payments-production", second).await;

    // PostgreSQL and Consul hold the references, never the values.
    let rows: String = sqlx::query_scalar(
        "SELECT string_agg(row_to_json(v)::text, ' ') FROM config_versions v WHERE config_id = $1",
    )
    .bind(s.config_id())
    .fetch_one(&postgres().await)
    .await
    .expect("versions");
    assert!(rows.contains(&id) && rows.contains("session-key"), "{rows}");
    let version_key = format!("summit/config/{}/versions/1", s.config_id());
    let consul = eventually("Consul to hold version 1", WAIT, || {
        consul_get(&version_key)
    })
    .await
    .0
    .to_string();
    assert!(consul.contains(&id), "{consul}");
    for value in ["first-db-password", "second-db-password", session.as_str()] {
        assert!(!rows.contains(value), "a value reached PostgreSQL");
        assert!(!consul.contains(value), "a value reached Consul");
    }

    // A Secret deleted or edited by hand is put back, with no upstream change.
    deleted_then_edited(
        &secrets,
        "payments-production",
        second,
        json!({"DB_PASSWORD": "hand-edited", "INJECTED": "by hand"}),
        |d| !d.contains_key("INJECTED"),
    )
    .await;

    // An environment that no longer has secret references loses its Secret.
    let drop_secrets = json!({"spec": {"secrets": null, "environments": [{"name": "production"}]}});
    merge(&s.entries(), "payments", drop_secrets).await;
    gone(&secrets, "payments-production").await;
}

/// Deletes Secret `name` and waits until `restored` holds for it again; then edits it
/// by hand with `edit` (string data) and waits until both `restored` and `then` hold.
async fn deleted_then_edited(
    secrets: &Api<Secret>,
    name: &str,
    restored: impl Fn(&BTreeMap<String, String>) -> bool,
    edit: Value,
    then: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    delete(secrets, name).await;
    secret_where(secrets, name, &restored).await;
    merge(secrets, name, json!({"stringData": edit})).await;
    secret_where(secrets, name, |d| restored(d) && then(d)).await;
}

/// Creates entry `name`, whose production Secret holds `reference` as PASSWORD.
async fn password_entry(s: &Tenant, name: &str, reference: Value) {
    let spec = json!({
        "configId": format!("{}/{name}", s.config_id()),
        "data": {"host": "db"},
        "secrets": {"PASSWORD": reference},
        "environments": [{"name": "production"}],
    });
    create(&s.entries(), &entry(name, spec)).await;
}

/// Waits until entry `name` is not Ready, saying `why`, and returns what it says.
async fn not_ready(s: &Tenant, name: &str, why: &str) -> String {
    let ready = condition_where(&s.entries(), name, CONDITION_READY, |c| {
        c.message.contains(why)
    })
    .await;
    assert_eq!(ready.status, "False");
    ready.message
}

#[tokio::test]
async fn a_namespace_reaches_only_its_own_aws_secrets_through_the_operator() {
    let moto = with_moto("tenant", &[]).await;
    let (s, aws) = (&moto.s, &moto.aws);
    // Another tenant's secret: outside `tests/<ns>/`, the prefix this namespace gets.
    let theirs = format!("tests/other-{}/db", s.ns);
    create_aws_secret(aws, &theirs, "another-tenants-password").await;
    let reference = json!({"provider": "AwsSecretsManager", "secretId": theirs});
    password_entry(s, "borrowed", reference.clone()).await;
    let message = not_ready(s, "borrowed", "outside").await;
    assert!(message.contains(&format!("tests/{}/*", s.ns)), "{message}");
    // An ARN names an account and region the prefix cannot vouch for.
    let arn = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:tests/{}/db-AbCdEf",
        s.ns
    );
    password_entry(
        s,
        "by-arn",
        json!({"provider": "AwsSecretsManager", "secretId": arn}),
    )
    .await;
    not_ready(s, "by-arn", "by name, not ARN").await;

    // Nor may a policy rotate it.
    let policies: Api<SecretRotationPolicy> = s.api();
    let spec = json!({
        "provider": "AwsSecretsManager",
        "secretId": theirs,
        "rotationInterval": "30d",
        "target": {"name": "borrowed"},
    });
    create(&policies, &policy("borrowed", spec)).await;
    condition_where(&policies, "borrowed", CONDITION_ROTATION_FAILED, |c| {
        c.status == "True" && c.reason == "SecretNotAllowed"
    })
    .await;

    // With credentials of its own, the namespace reaches what they reach.
    let credentials = secret(
        "own-aws",
        json!({
            "AWS_ACCESS_KEY_ID": env().var("AWS_ACCESS_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY": env().var("AWS_SECRET_ACCESS_KEY"),
        }),
    );
    let secrets = s.secrets();
    create(&secrets, &credentials).await;
    let with_credentials = with_fields(reference, json!({"aws": {"credentialsSecret": "own-aws"}}));
    password_entry(s, "own", with_credentials.clone()).await;
    let data = secret_where(&secrets, "own-production", |d| d.contains_key("PASSWORD")).await;
    assert_eq!(data["PASSWORD"], "another-tenants-password");

    // A Secret that is not the entry's is never taken over.
    let squatted = secret("taken-production", json!({"PASSWORD": "someone else's"}));
    create(&secrets, &squatted).await;
    password_entry(s, "taken", with_credentials).await;
    not_ready(s, "taken", "belongs to nobody in summit-config").await;
    assert_eq!(
        secret_where(&secrets, "taken-production", |_| true).await["PASSWORD"],
        "someone else's"
    );

    // Nothing reached the borrowing entry, and the secret never rotated.
    assert!(!exists(&secrets, "borrowed-production").await);
    assert_eq!(
        aws_value(aws, &theirs, "AWSCURRENT").await.0,
        "another-tenants-password"
    );
}

/// A secret read for one namespace's entry is shared with no other namespace: mallory,
/// in a namespace of her own watched by the same operator, names the victim's secret
/// right after the victim's entry read it. She is refused before any shared read, and
/// gets no Secret; the victim's Secret keeps its value.
#[tokio::test]
async fn a_secret_read_for_one_namespace_is_not_shared_with_another() {
    let _turn = moto_turn().await;
    let victim = Tenant::new("shared-victim", &[]).await;
    let mallory = Tenant::new("shared-mallory", &[("mallory", "summit-config-admin")]).await;
    let label = format!("summit-test={}", victim.ns);
    let both = format!("{},{}", victim.ns, mallory.ns);
    let args = [
        "--watch-label-selector",
        &label,
        "--secret-namespaces",
        &both,
    ];
    let _operator = Operator::start_cluster(&victim.ns, &[&victim.ns, &mallory.ns], &args);
    let theirs = format!("tests/{}/db", victim.ns);
    create_aws_secret(&secrets_manager().await, &theirs, "victims-password").await;
    let labelled = |name: &str, spec: Value| {
        let mut entry = entry(name, spec);
        entry.metadata.labels = Some([("summit-test".into(), victim.ns.clone())].into());
        entry
    };
    let spec = |config_id: String| {
        json!({
            "configId": config_id,
            "data": {"host": "db"},
            "secrets": {"PASSWORD": {"provider": "AwsSecretsManager", "secretId": theirs}},
            "environments": [{"name": "production"}],
        })
    };
    create(&victim.entries(), &labelled("db", spec(victim.config_id()))).await;
    let read = |d: &BTreeMap<String, String>| {
        d.get("PASSWORD").map(String::as_str) == Some("victims-password")
    };
    secret_where(&victim.secrets(), "db-production", read).await;

    let entries = mallory.api_as("mallory").await;
    create(&entries, &labelled("stolen", spec(mallory.config_id()))).await;
    let ready = condition_where(&mallory.entries(), "stolen", CONDITION_READY, |c| {
        c.message.contains("outside")
    })
    .await;
    assert_eq!(ready.status, "False", "{ready:?}");
    let secrets: Api<Secret> = mallory.api();
    let stolen = secrets
        .get_opt("stolen-production")
        .await
        .expect("read Secrets");
    assert!(stolen.is_none(), "mallory got a Secret: {stolen:?}");
    secret_where(&victim.secrets(), "db-production", read).await;
}

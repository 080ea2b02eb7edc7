//! SecretRotationPolicy against the real apiserver and moto's Secrets Manager through
//! the real AWS SDK: rotation on demand and on schedule, the grace period, restart
//! targets holding the previous value, and no value anywhere it must not be.

mod support;

use std::{collections::BTreeMap, time::Duration};

use aws_sdk_secretsmanager::Client as SecretsManager;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_READY, CONDITION_ROTATING, CONDITION_ROTATION_FAILED, SecretRotationPolicy,
    find_condition,
};
use support::{
    Tenant, WAIT, annotate, assert_reason, condition, condition_where, consul, consul_get,
    consul_value, create, create_aws_secret, delete, deployment, entry, env, event_reasons, events,
    eventually, exists, finish_rollout, gone, merge, operator_log, pause, policy, policy_where,
    postgres, run_ok, secret, secret_where, secrets_manager, setup, setup_with,
    sleep_through_window, wait_within, with_fields,
};
use tokio::sync::Mutex;

/// One test at a time uses moto: one of them pauses it.
static MOTO: Mutex<()> = Mutex::const_new(());

/// How long a rotation against a hanging Secrets Manager may take to fail: the SDK's
/// timeouts and retries run out first.
const HANG: Duration = Duration::from_secs(90);

/// How long a failed rotation may take to complete once Secrets Manager answers again:
/// the operator retries on a backoff that grew while it hung.
const RECOVERY: Duration = Duration::from_secs(120);

/// The value at a stage, and its version id.
async fn aws_value(aws: &SecretsManager, id: &str, stage: &str) -> (String, String) {
    let output = aws
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await
        .unwrap_or_else(|e| panic!("read {id} at {stage}: {e:?}"));
    (
        output.secret_string().expect("a string").to_owned(),
        output.version_id().expect("a version").to_owned(),
    )
}

/// The stages of every version of a secret.
async fn aws_stages(aws: &SecretsManager, id: &str) -> Vec<(String, Vec<String>)> {
    let output = aws
        .list_secret_version_ids()
        .secret_id(id)
        .send()
        .await
        .expect("list versions");
    output
        .versions()
        .iter()
        .map(|v| {
            (
                v.version_id().unwrap_or_default().to_owned(),
                v.version_stages().to_vec(),
            )
        })
        .collect()
}

/// A policy that rotates `secret_id` of `provider` daily into Secret `target`, keeps
/// the previous value an hour, and takes a rotation asked for a second after the last.
fn daily(provider: &str, secret_id: &str, target: &str) -> Value {
    json!({
        "provider": provider,
        "secretId": secret_id,
        "rotationInterval": "1d",
        "gracePeriod": "1h",
        "minimumInterval": "1s",
        "target": {"name": target},
    })
}

/// Waits until policy `name` has adopted or created its secret, and returns its status.
async fn adopted(
    policies: &Api<SecretRotationPolicy>,
    name: &str,
) -> summit_config::api::v1alpha1::SecretRotationPolicyStatus {
    policy_where(policies, name, |s| s.current_version.is_some()).await
}

/// Asks for a rotation of policy `name`, naming the request `request`.
async fn request_rotation(policies: &Api<SecretRotationPolicy>, name: &str, request: &str) {
    annotate(policies, name, "config.summit.io/rotate", request).await;
}

#[tokio::test]
async fn aws_secrets_rotate_on_demand_and_on_schedule_and_retire_after_the_grace_period() {
    let _moto = MOTO.lock().await;
    let (s, _operator) = setup("aws-rotation").await;
    let aws = secrets_manager().await;
    let id = format!("tests/{}/database", s.ns);
    create_aws_secret(&aws, &id, "initial-password-value").await;

    let policies: Api<SecretRotationPolicy> = s.api();
    let spec = json!({
        "provider": "AwsSecretsManager",
        "secretId": id,
        "rotationInterval": "12s",
        "gracePeriod": "2s",
        "minimumInterval": "1s",
        "generator": {"length": 24, "characterClasses": ["Lowercase", "Digits"]},
        "target": {"name": "database"},
    });
    create(&policies, &policy("database", spec)).await;

    // Adopted: the current value is projected.
    secret_where(&s.secrets(), "database", |d| {
        d.get("value").map(String::as_str) == Some("initial-password-value")
    })
    .await;
    let first = adopted(&policies, "database").await;
    assert_eq!(first.rotation_count, Some(0));
    assert!(first.next_rotation_time.is_some());

    // On demand: a new AWSCURRENT, projected beside the previous value.
    request_rotation(&policies, "database", "first").await;
    let rotated = policy_where(&policies, "database", |p| p.rotation_count == Some(1)).await;
    assert_eq!(rotated.last_handled_request.as_deref(), Some("first"));
    let (current, version) = aws_value(&aws, &id, "AWSCURRENT").await;
    assert_eq!(rotated.current_version.as_deref(), Some(version.as_str()));
    assert_eq!(current.len(), 24);
    assert!(
        current
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    let data = secret_where(&s.secrets(), "database", |d| d.contains_key("previous")).await;
    assert_eq!(data["value"], current);
    assert_eq!(data["previous"], "initial-password-value");
    let previous_version = rotated
        .previous_version
        .clone()
        .expect("a previous version");

    // After the grace period the previous value leaves the Secret and its stage.
    secret_where(&s.secrets(), "database", |d| !d.contains_key("previous")).await;
    let retired = policy_where(&policies, "database", |p| p.previous_version.is_none()).await;
    assert_eq!(retired.current_version.as_deref(), Some(version.as_str()));
    let stages = aws_stages(&aws, &id).await;
    let old = stages
        .iter()
        .find(|(v, _)| *v == previous_version)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    assert!(
        !old.iter().any(|s| s == "AWSPREVIOUS" || s == "AWSCURRENT"),
        "{stages:?}"
    );

    // On schedule: the interval passes and it rotates again without being asked.
    let scheduled = policy_where(&policies, "database", |p| p.rotation_count == Some(2)).await;
    assert_ne!(scheduled.current_version, retired.current_version);
    let (current, _) = aws_value(&aws, &id, "AWSCURRENT").await;
    secret_where(&s.secrets(), "database", |d| {
        d.get("value") == Some(&current)
    })
    .await;

    // Postgres tracks the policy and each step, with versions only.
    let pool = postgres().await;
    let (interval_days, last_rotated): (i32, bool) = sqlx::query_as(
        "SELECT rotation_interval_days, last_rotated_at IS NOT NULL FROM secret_rotation_policies WHERE secret_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .expect("policy row");
    assert_eq!((interval_days, last_rotated), (1, true));
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT changes ->> 'event' FROM config_audit WHERE config_id = $1 ORDER BY timestamp",
    )
    .bind(format!("secret:{id}"))
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    assert_eq!(events[..3], ["adopted", "rotated", "retired"], "{events:?}");
}

#[tokio::test]
async fn the_previous_value_stays_while_a_restart_target_runs_it() {
    let (s, _operator) = setup("rotation-consumers").await;
    let deployments: Api<Deployment> = s.api();
    create(&deployments, &deployment("api")).await;
    let (webhook, notifications) = webhook().await;
    let policies: Api<SecretRotationPolicy> = s.api();
    let spec = json!({
        "provider": "InCluster",
        "secretId": "api-token",
        "rotationInterval": "1d",
        "gracePeriod": "1s",
        "minimumInterval": "1s",
        "target": {"name": "api-token", "key": "token", "previousKey": "token-previous"},
        "restartTargets": [{"kind": "Deployment", "name": "api"}],
        "notifications": {"webhookUrl": webhook},
    });
    create(&policies, &policy("api-token", spec)).await;
    let secrets = s.secrets();
    let created = secret_where(&secrets, "api-token", |d| d.contains_key("token")).await;
    // Asked from the command line.
    let rotate = ["secret", "rotate", "api-token"];
    run_ok(&mut support::summit(&env().kubeconfig(), &s.ns, &rotate));
    let rotated = policy_where(&policies, "api-token", |p| p.rotation_count == Some(1)).await;
    let data = secret_where(&secrets, "api-token", |d| d.contains_key("token-previous")).await;
    assert_eq!(data["token-previous"], created["token"]);
    assert_ne!(data["token"], created["token"]);

    // The grace period passes, but the Deployment has not rolled out the new value:
    // the previous value stays through a window in which it could have been retired.
    policy_where(&policies, "api-token", |p| {
        find_condition(&p.conditions, CONDITION_ROTATING).is_some_and(|c| c.status == "True")
            && p.consumers_total == Some(1)
            && p.previous_retires_at
                .as_ref()
                .is_some_and(|at| at.0 < k8s_openapi::jiff::Timestamp::now())
    })
    .await;
    sleep_through_window().await;
    let still = policy_where(&policies, "api-token", |_| true).await;
    assert_eq!(
        still.previous_version, rotated.previous_version,
        "not retired yet"
    );
    assert_eq!(still.consumers_ready, Some(0));
    assert!(
        secret_where(&secrets, "api-token", |_| true)
            .await
            .contains_key("token-previous")
    );

    // The rollout finishes (as the deployment controller would report it): retired.
    let current = deployments.get("api").await.expect("deployment");
    let annotation = current
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert_eq!(
        annotation.get("rotation.config.summit.io/api-token"),
        rotated.current_version.as_ref(),
        "the restart target carries the new version id, never a value"
    );
    finish_rollout(&deployments, "api").await;
    secret_where(&secrets, "api-token", |d| !d.contains_key("token-previous")).await;
    let retired = policy_where(&policies, "api-token", |p| p.previous_version.is_none()).await;
    assert_eq!(retired.consumers_ready, Some(1));
    assert!(
        retired
            .last_handled_request
            .as_deref()
            .is_some_and(|r| r.starts_with("cli-"))
    );

    // The webhook heard of each step, with versions and never a value.
    let heard = eventually("the webhook to hear of the retirement", WAIT, || async {
        let heard = notifications.lock().await.clone();
        heard
            .iter()
            .any(|n| n["event"] == "retired")
            .then_some(heard)
    })
    .await;
    let events: Vec<&str> = heard.iter().filter_map(|n| n["event"].as_str()).collect();
    assert!(
        events.contains(&"created") && events.contains(&"rotated"),
        "{events:?}"
    );
    let rotated_note = heard
        .iter()
        .find(|n| n["event"] == "rotated")
        .expect("rotated");
    assert_eq!(rotated_note["secretId"], "api-token");
    assert_eq!(
        rotated_note["currentVersion"].as_str(),
        rotated.current_version.as_deref()
    );
    let text = serde_json::to_string(&heard).expect("json");
    for value in [created["token"].as_str(), data["token"].as_str()] {
        assert!(!text.contains(value), "a value reached the webhook");
    }
}

/// A local webhook receiver: its URL, and the JSON bodies it received.
async fn webhook() -> (String, std::sync::Arc<Mutex<Vec<Value>>>) {
    let received = std::sync::Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                if let Ok(value) = serde_json::from_str::<Value>(&body) {
                    store.lock().await.push(value);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn a_rotation_survives_secrets_manager_hanging() {
    let _moto = MOTO.lock().await;
    let (s, _operator) = setup("moto-down").await;
    let aws = secrets_manager().await;
    let id = format!("tests/{}/cache", s.ns);
    create_aws_secret(&aws, &id, "last-good-value").await;
    let policies: Api<SecretRotationPolicy> = s.api();
    create(
        &policies,
        &policy("cache", daily("AwsSecretsManager", &id, "cache")),
    )
    .await;
    let secrets = s.secrets();
    secret_where(&secrets, "cache", |d| {
        d.get("value").map(String::as_str) == Some("last-good-value")
    })
    .await;
    adopted(&policies, "cache").await;

    // Secrets Manager hangs in the middle of things: the rotation fails and says why,
    // and the Secret keeps its last good value.
    let hanging = pause("moto");
    request_rotation(&policies, "cache", "during-outage").await;
    let failed = rotation_failed(&policies, "cache", HANG).await;
    assert_reason(&failed, "ProviderUnavailable", "keeps its last good value");
    let data = secret_where(&secrets, "cache", |_| true).await;
    assert_eq!(data["value"], "last-good-value");
    assert!(!data.contains_key("previous"));
    let reasons = event_reasons(&s.admin(), &s.ns, |_| true).await;
    assert!(reasons.iter().any(|r| r == "RotationFailed"), "{reasons:?}");

    // It answers again: the rotation completes.
    hanging.end();
    let done = wait_within(
        RECOVERY,
        &policies,
        "cache",
        "the rotation to complete",
        |p| {
            p.status
                .as_ref()
                .is_some_and(|p| p.rotation_count == Some(1))
        },
    )
    .await;
    let recovered = condition(&done, CONDITION_ROTATION_FAILED).expect("condition");
    assert_eq!(recovered.status, "False");
    let (current, _) = aws_value(&aws, &id, "AWSCURRENT").await;
    let data = secret_where(&secrets, "cache", |d| d.get("value") == Some(&current)).await;
    assert_eq!(data["previous"], "last-good-value");

    // Another secret is deleted upstream: its rotation fails and says so, and its
    // Secret keeps what it had.
    let gone_id = format!("tests/{}/gone", s.ns);
    create_aws_secret(&aws, &gone_id, "value-before-deletion").await;
    create(
        &policies,
        &policy("gone", daily("AwsSecretsManager", &gone_id, "gone")),
    )
    .await;
    adopted(&policies, "gone").await;
    aws.delete_secret()
        .secret_id(&gone_id)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete the secret upstream");
    request_rotation(&policies, "gone", "after-deletion").await;
    let gone = rotation_failed(&policies, "gone", WAIT).await;
    assert_reason(&gone, "SecretNotFound", "deleted upstream");
    let kept = secret_where(&secrets, "gone", |_| true).await;
    assert_eq!(kept["value"], "value-before-deletion");
}

/// Waits, for at most `limit`, until policy `name` says its rotation failed, and
/// returns what it says.
async fn rotation_failed(
    policies: &Api<SecretRotationPolicy>,
    name: &str,
    limit: Duration,
) -> summit_config::api::v1alpha1::Condition {
    let failed = |p: &SecretRotationPolicy| {
        condition(p, CONDITION_ROTATION_FAILED).filter(|c| c.status == "True")
    };
    let policy = wait_within(limit, policies, name, "the rotation to fail", |p| {
        failed(p).is_some()
    })
    .await;
    failed(&policy).expect("RotationFailed")
}

#[tokio::test]
async fn no_secret_value_reaches_logs_events_status_postgres_or_consul() {
    let _moto = MOTO.lock().await;
    let (s, _operator) = setup("no-leaks").await;
    let aws = secrets_manager().await;
    let id = format!("tests/{}/leak-check", s.ns);
    create_aws_secret(&aws, &id, "fetched-value-7f3a9c").await;
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
    create_aws_secret(&aws, &fetched, r#"{"password":"entry-fetched-value-51d2"}"#).await;
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

    for (place, haystack) in everything_the_operator_wrote_or_said(&s).await {
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
    let _moto = MOTO.lock().await;
    let (s, _operator) = setup_with("entry-secrets", &[], &["--secret-refresh-seconds", "2"]).await;
    let aws = secrets_manager().await;
    let id = format!("tests/{}/db", s.ns);
    create_aws_secret(
        &aws,
        &id,
        r#"{"user":"app","password":"first-db-password"}"#,
    )
    .await;

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
    let _moto = MOTO.lock().await;
    let (s, _operator) = setup("tenant").await;
    let aws = secrets_manager().await;
    // Another tenant's secret: outside `tests/<ns>/`, the prefix this namespace gets.
    let theirs = format!("tests/other-{}/db", s.ns);
    create_aws_secret(&aws, &theirs, "another-tenants-password").await;
    let reference = json!({"provider": "AwsSecretsManager", "secretId": theirs});
    password_entry(&s, "borrowed", reference.clone()).await;
    let message = not_ready(&s, "borrowed", "outside").await;
    assert!(message.contains(&format!("tests/{}/*", s.ns)), "{message}");
    // An ARN names an account and region the prefix cannot vouch for.
    let arn = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:tests/{}/db-AbCdEf",
        s.ns
    );
    password_entry(
        &s,
        "by-arn",
        json!({"provider": "AwsSecretsManager", "secretId": arn}),
    )
    .await;
    not_ready(&s, "by-arn", "by name, not ARN").await;

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
    password_entry(&s, "own", with_credentials.clone()).await;
    let data = secret_where(&secrets, "own-production", |d| d.contains_key("PASSWORD")).await;
    assert_eq!(data["PASSWORD"], "another-tenants-password");

    // A Secret that is not the entry's is never taken over.
    let squatted = secret("taken-production", json!({"PASSWORD": "someone else's"}));
    create(&secrets, &squatted).await;
    password_entry(&s, "taken", with_credentials).await;
    not_ready(&s, "taken", "belongs to nobody in summit-config").await;
    assert_eq!(
        secret_where(&secrets, "taken-production", |_| true).await["PASSWORD"],
        "someone else's"
    );

    // Nothing reached the borrowing entry, and the secret never rotated.
    assert!(!exists(&secrets, "borrowed-production").await);
    assert_eq!(
        aws_value(&aws, &theirs, "AWSCURRENT").await.0,
        "another-tenants-password"
    );
}

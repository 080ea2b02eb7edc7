//! SecretRotationPolicy against the real apiserver and moto's Secrets Manager through
//! the real AWS SDK: rotation on demand and on schedule, the grace period, restart
//! targets holding the previous value, and no value anywhere it must not be.

mod support;

use std::time::Duration;

use aws_sdk_secretsmanager::Client as SecretsManager;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{SecretRotationPolicy, find_condition};
use support::{
    Operator, create_aws_secret, env, eventually, fresh_namespace, pause, postgres, secrets_manager,
};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(40);

/// One test at a time uses moto: one of them pauses it.
static MOTO: Mutex<()> = Mutex::const_new(());

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

fn policy(name: &str, spec: Value) -> SecretRotationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "SecretRotationPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("policy")
}

/// The target Secret's keys and values, once `ready` holds.
async fn target(
    client: &Client,
    ns: &str,
    name: &str,
    ready: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Secret {name} to hold what is expected"),
        WAIT,
        || async {
            let secret = secrets.get(name).await.ok()?;
            let data: std::collections::BTreeMap<String, String> = secret
                .data?
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v.0).unwrap_or_default()))
                .collect();
            ready(&data).then_some(data)
        },
    )
    .await
}

async fn policy_status(
    policies: &Api<SecretRotationPolicy>,
    name: &str,
    ready: impl Fn(&summit_config::api::v1alpha1::SecretRotationPolicyStatus) -> bool,
) -> summit_config::api::v1alpha1::SecretRotationPolicyStatus {
    eventually(&format!("{name}'s status"), WAIT, || async {
        let status = policies.get(name).await.ok()?.status?;
        ready(&status).then_some(status)
    })
    .await
}

async fn request_rotation(policies: &Api<SecretRotationPolicy>, name: &str, request: &str) {
    let patch = json!({"metadata": {"annotations": {"config.summit.io/rotate": request}}});
    policies
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("ask for a rotation");
}

#[tokio::test]
async fn aws_secrets_rotate_on_demand_and_on_schedule_and_retire_after_the_grace_period() {
    let _moto = MOTO.lock().await;
    let (client, ns) = fresh_namespace("aws-rotation").await;
    let _operator = Operator::start(&ns);
    let aws = secrets_manager().await;
    let id = format!("tests/{ns}/database");
    create_aws_secret(&aws, &id, "initial-password-value").await;

    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "provider": "AwsSecretsManager",
        "secretId": id,
        "rotationInterval": "12s",
        "gracePeriod": "2s",
        "minimumInterval": "1s",
        "generator": {"length": 24, "characterClasses": ["Lowercase", "Digits"]},
        "target": {"name": "database"},
    });
    policies
        .create(&PostParams::default(), &policy("database", spec))
        .await
        .expect("create policy");

    // Adopted: the current value is projected.
    target(&client, &ns, "database", |d| {
        d.get("value").map(String::as_str) == Some("initial-password-value")
    })
    .await;
    let adopted = policy_status(&policies, "database", |s| s.current_version.is_some()).await;
    assert_eq!(adopted.rotation_count, Some(0));
    assert!(adopted.next_rotation_time.is_some());

    // On demand: a new AWSCURRENT, projected beside the previous value.
    request_rotation(&policies, "database", "first").await;
    let rotated = policy_status(&policies, "database", |s| s.rotation_count == Some(1)).await;
    assert_eq!(rotated.last_handled_request.as_deref(), Some("first"));
    let (current, version) = aws_value(&aws, &id, "AWSCURRENT").await;
    assert_eq!(rotated.current_version.as_deref(), Some(version.as_str()));
    assert_eq!(current.len(), 24);
    assert!(
        current
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    let data = target(&client, &ns, "database", |d| d.contains_key("previous")).await;
    assert_eq!(data["value"], current);
    assert_eq!(data["previous"], "initial-password-value");
    let previous_version = rotated
        .previous_version
        .clone()
        .expect("a previous version");

    // After the grace period the previous value leaves the Secret and its stage.
    target(&client, &ns, "database", |d| !d.contains_key("previous")).await;
    let retired = policy_status(&policies, "database", |s| s.previous_version.is_none()).await;
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
    let scheduled = policy_status(&policies, "database", |s| s.rotation_count == Some(2)).await;
    assert_ne!(scheduled.current_version, retired.current_version);
    let (current, _) = aws_value(&aws, &id, "AWSCURRENT").await;
    target(&client, &ns, "database", |d| {
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
    let (client, ns) = fresh_namespace("rotation-consumers").await;
    let _operator = Operator::start(&ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "registry.invalid/api:1"}]},
            },
        },
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");

    let (webhook, notifications) = webhook().await;
    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
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
    policies
        .create(&PostParams::default(), &policy("api-token", spec))
        .await
        .expect("create policy");
    let created = target(&client, &ns, "api-token", |d| d.contains_key("token")).await;
    // Asked from the command line.
    let asked = std::process::Command::new(env!("CARGO_BIN_EXE_summit-config"))
        .args([
            "secret",
            "rotate",
            "api-token",
            "--namespace",
            &ns,
            "--kubeconfig",
        ])
        .arg(env().kubeconfig())
        .output()
        .expect("run summit-config");
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let rotated = policy_status(&policies, "api-token", |s| s.rotation_count == Some(1)).await;
    let data = target(&client, &ns, "api-token", |d| {
        d.contains_key("token-previous")
    })
    .await;
    assert_eq!(data["token-previous"], created["token"]);
    assert_ne!(data["token"], created["token"]);

    // The grace period passes, but the Deployment has not rolled out the new value.
    let waiting = policy_status(&policies, "api-token", |s| {
        find_condition(&s.conditions, "Rotating").is_some_and(|c| c.status == "True")
            && s.consumers_total == Some(1)
            && s.previous_retires_at
                .as_ref()
                .is_some_and(|at| at.0 < k8s_openapi::jiff::Timestamp::now())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = policy_status(&policies, "api-token", |_| true).await;
    assert_eq!(
        still.previous_version, rotated.previous_version,
        "not retired yet"
    );
    assert_eq!(still.consumers_ready, Some(0));
    assert!(
        target(&client, &ns, "api-token", |_| true)
            .await
            .contains_key("token-previous")
    );
    let _ = waiting;

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
    let status = json!({"status": {
        "observedGeneration": current.metadata.generation,
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
    }});
    deployments
        .patch_status("api", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("report the rollout");
    target(&client, &ns, "api-token", |d| {
        !d.contains_key("token-previous")
    })
    .await;
    let retired = policy_status(&policies, "api-token", |s| s.previous_version.is_none()).await;
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
    let (client, ns) = fresh_namespace("moto-down").await;
    let _operator = Operator::start(&ns);
    let aws = secrets_manager().await;
    let id = format!("tests/{ns}/cache");
    create_aws_secret(&aws, &id, "last-good-value").await;
    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "provider": "AwsSecretsManager",
        "secretId": id,
        "rotationInterval": "1d",
        "gracePeriod": "1h",
        "minimumInterval": "1s",
        "target": {"name": "cache"},
    });
    policies
        .create(&PostParams::default(), &policy("cache", spec))
        .await
        .expect("create policy");
    target(&client, &ns, "cache", |d| {
        d.get("value").map(String::as_str) == Some("last-good-value")
    })
    .await;
    policy_status(&policies, "cache", |s| s.current_version.is_some()).await;

    // Secrets Manager hangs in the middle of things: the rotation fails and says why,
    // and the Secret keeps its last good value.
    let paused = pause("moto");
    request_rotation(&policies, "cache", "during-outage").await;
    let failed = eventually("the rotation to fail", Duration::from_secs(90), || async {
        let status = policies.get("cache").await.ok()?.status?;
        let failed = find_condition(&status.conditions, "RotationFailed")?.clone();
        (failed.status == "True").then_some(failed)
    })
    .await;
    assert_eq!(failed.reason, "ProviderUnavailable", "{failed:?}");
    assert!(
        failed.message.contains("keeps its last good value"),
        "{}",
        failed.message
    );
    let data = target(&client, &ns, "cache", |_| true).await;
    assert_eq!(data["value"], "last-good-value");
    assert!(!data.contains_key("previous"));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "RotationFailed"), "{reasons:?}");

    // It answers again: the rotation completes.
    paused.resume();
    let done = eventually(
        "the rotation to complete",
        Duration::from_secs(120),
        || async {
            let status = policies.get("cache").await.ok()?.status?;
            (status.rotation_count == Some(1)).then_some(status)
        },
    )
    .await;
    let recovered = find_condition(&done.conditions, "RotationFailed").expect("condition");
    assert_eq!(recovered.status, "False");
    let (current, _) = aws_value(&aws, &id, "AWSCURRENT").await;
    let data = target(&client, &ns, "cache", |d| d.get("value") == Some(&current)).await;
    assert_eq!(data["previous"], "last-good-value");

    // Another secret is deleted upstream: its rotation fails and says so, and its
    // Secret keeps what it had.
    let gone_id = format!("tests/{ns}/gone");
    create_aws_secret(&aws, &gone_id, "value-before-deletion").await;
    let spec = json!({
        "provider": "AwsSecretsManager",
        "secretId": gone_id,
        "rotationInterval": "1d",
        "gracePeriod": "1h",
        "minimumInterval": "1s",
        "target": {"name": "gone"},
    });
    policies
        .create(&PostParams::default(), &policy("gone", spec))
        .await
        .expect("create policy");
    policy_status(&policies, "gone", |s| s.current_version.is_some()).await;
    aws.delete_secret()
        .secret_id(&gone_id)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete the secret upstream");
    request_rotation(&policies, "gone", "after-deletion").await;
    let gone = eventually("the rotation to find the secret gone", WAIT, || async {
        let status = policies.get("gone").await.ok()?.status?;
        let failed = find_condition(&status.conditions, "RotationFailed")?.clone();
        (failed.status == "True").then_some(failed)
    })
    .await;
    assert_eq!(gone.reason, "SecretNotFound", "{gone:?}");
    assert!(
        gone.message.contains("deleted upstream"),
        "{}",
        gone.message
    );
    let kept = target(&client, &ns, "gone", |_| true).await;
    assert_eq!(kept["value"], "value-before-deletion");
}

#[tokio::test]
async fn no_secret_value_reaches_logs_events_status_postgres_or_consul() {
    let _moto = MOTO.lock().await;
    let (client, ns) = fresh_namespace("no-leaks").await;
    let _operator = Operator::start(&ns);
    let aws = secrets_manager().await;
    let id = format!("tests/{ns}/leak-check");
    create_aws_secret(&aws, &id, "fetched-value-7f3a9c").await;
    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
    for (name, provider, secret_id) in [
        ("aws", "AwsSecretsManager", id.as_str()),
        ("local", "InCluster", "local-token"),
    ] {
        let spec = json!({
            "provider": provider,
            "secretId": secret_id,
            "rotationInterval": "1d",
            "gracePeriod": "1h",
            "minimumInterval": "1s",
            "target": {"name": name},
        });
        policies
            .create(&PostParams::default(), &policy(name, spec))
            .await
            .expect("create policy");
        policy_status(&policies, name, |s| s.current_version.is_some()).await;
        request_rotation(&policies, name, "once").await;
        policy_status(&policies, name, |s| s.rotation_count == Some(1)).await;
    }

    // A ConfigEntry fetches a value of its own through a reference.
    let fetched = format!("tests/{ns}/fetched");
    create_aws_secret(&aws, &fetched, r#"{"password":"entry-fetched-value-51d2"}"#).await;
    let entry: summit_config::api::v1alpha1::ConfigEntry = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("tests/{ns}"),
            "data": {"pool": {"max": 10}},
            "secrets": {
                "DB_PASSWORD": {"provider": "AwsSecretsManager", "secretId": fetched, "key": "password"},
                "LOCAL_TOKEN": {"provider": "InCluster", "secretId": "local-token"},
            },
            "environments": [{"name": "production"}],
        },
    }))
    .expect("entry");
    Api::<summit_config::api::v1alpha1::ConfigEntry>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &entry)
        .await
        .expect("create entry");
    let projected = target(&client, &ns, "payments-production", |d| d.len() == 2).await;
    assert_eq!(projected["DB_PASSWORD"], "entry-fetched-value-51d2");

    // Every value the operator generated or fetched.
    let mut values = vec![
        "fetched-value-7f3a9c".to_owned(),
        r#"{"password":"entry-fetched-value-51d2"}"#.to_owned(),
    ];
    values.extend(projected.into_values());
    for name in ["aws", "local"] {
        let data = target(&client, &ns, name, |d| d.contains_key("previous")).await;
        values.extend(data.into_values());
    }
    assert_eq!(values.len(), 8, "{} values", values.len());

    // Everything the operator wrote or said.
    let mut haystacks: Vec<(String, String)> = Vec::new();
    let log =
        std::path::PathBuf::from(env().var("SUMMIT_ENV_DIR")).join(format!("operator-{ns}.log"));
    let log = std::fs::read_to_string(&log).expect("operator log");
    assert!(log.contains("DEBUG"), "the operator logs at debug level");
    haystacks.push(("operator log".into(), log));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let events = events.list(&Default::default()).await.expect("events");
    haystacks.push((
        "Events".into(),
        serde_json::to_string(&events.items).expect("json"),
    ));
    let all = policies.list(&Default::default()).await.expect("policies");
    haystacks.push((
        "policies".into(),
        serde_json::to_string(&all.items).expect("json"),
    ));
    let pool = postgres().await;
    // A row per policy: in-cluster ids are per namespace, and every run of this test
    // has its own `local-token`.
    let (provider, audit_rows): (String, i64) = sqlx::query_as(
        "SELECT provider, (SELECT count(*) FROM config_audit WHERE config_id = $2)
           FROM secret_rotation_policies WHERE policy = $1 AND secret_id = 'local-token'",
    )
    .bind(format!("{ns}/local"))
    .bind(format!("secret:{ns}/local-token"))
    .fetch_one(&pool)
    .await
    .expect("the in-cluster policy's row");
    assert_eq!(provider, "InCluster");
    assert!(
        audit_rows > 0,
        "rotations audited under the namespace's secret id"
    );
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
    let consul = support::consul_request(
        support::consul_client().get(format!("{}/v1/kv/?recurse", env().var("CONSUL_HTTP_ADDR"))),
    )
    .send()
    .await
    .expect("Consul")
    .text()
    .await
    .expect("Consul keys");
    let decoded: Vec<Value> = serde_json::from_str(&consul).unwrap_or_default();
    let consul_values: String = decoded
        .iter()
        .filter_map(|kv| kv["Value"].as_str())
        .filter_map(|v| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(v).ok()
        })
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    haystacks.push(("Consul".into(), format!("{consul}\n{consul_values}")));

    for value in &values {
        for (place, haystack) in &haystacks {
            assert!(
                !haystack.contains(value.as_str()),
                "a secret value reached {place}"
            );
        }
    }
}

#[tokio::test]
async fn a_config_entry_projects_aws_and_in_cluster_references_and_stores_only_references() {
    let _moto = MOTO.lock().await;
    let (client, ns) = fresh_namespace("entry-secrets").await;
    let _operator = Operator::start_with(&ns, &["--secret-refresh-seconds", "2"]);
    let aws = secrets_manager().await;
    let id = format!("tests/{ns}/db");
    create_aws_secret(
        &aws,
        &id,
        r#"{"user":"app","password":"first-db-password"}"#,
    )
    .await;

    // An in-cluster secret, generated by its policy.
    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "provider": "InCluster",
        "secretId": "session-key",
        "rotationInterval": "30d",
        "target": {"name": "session-key"},
    });
    policies
        .create(&PostParams::default(), &policy("session-key", spec))
        .await
        .expect("create policy");
    let session =
        target(&client, &ns, "session-key", |d| d.contains_key("value")).await["value"].clone();
    // The policy's target, deleted or edited by hand, comes back with the same value.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .delete("session-key", &Default::default())
        .await
        .expect("delete the target");
    target(&client, &ns, "session-key", |d| {
        d.get("value") == Some(&session)
    })
    .await;
    let edit = json!({"stringData": {"value": "hand-edited", "INJECTED": "by hand"}});
    secrets
        .patch("session-key", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit the target by hand");
    // Its value comes back; a key someone else added is theirs, and stays.
    target(&client, &ns, "session-key", |d| {
        d.get("value") == Some(&session) && d.get("INJECTED").map(String::as_str) == Some("by hand")
    })
    .await;

    let entry: summit_config::api::v1alpha1::ConfigEntry = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("tests/{ns}"),
            "data": {"pool": {"max": 10}},
            "secrets": {"DB_PASSWORD": {"provider": "AwsSecretsManager", "secretId": id, "key": "password"}},
            "environments": [{
                "name": "production",
                "secrets": {"SESSION_KEY": {"provider": "InCluster", "secretId": "session-key"}},
            }],
        },
    }))
    .expect("entry");
    Api::<summit_config::api::v1alpha1::ConfigEntry>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &entry)
        .await
        .expect("create entry");
    let data = target(&client, &ns, "payments-production", |d| d.len() == 2).await;
    assert_eq!(data["DB_PASSWORD"], "first-db-password");
    assert_eq!(data["SESSION_KEY"], session);

    // The upstream value changes: the Secret follows.
    aws.put_secret_value()
        .secret_id(&id)
        .secret_string(r#"{"user":"app","password":"second-db-password"}"#)
        .send()
        .await
        .expect("change the value upstream");
    target(&client, &ns, "payments-production", |d| {
        d.get("DB_PASSWORD").map(String::as_str) == Some("second-db-password")
    })
    .await;

    // PostgreSQL and Consul hold the references, never the values.
    let pool = postgres().await;
    let rows: String = sqlx::query_scalar(
        "SELECT string_agg(row_to_json(v)::text, ' ') FROM config_versions v WHERE config_id = $1",
    )
    .bind(format!("tests/{ns}"))
    .fetch_one(&pool)
    .await
    .expect("versions");
    assert!(rows.contains(&id) && rows.contains("session-key"), "{rows}");
    let consul = eventually("Consul to hold version 1", WAIT, || async {
        support::consul_get(&format!("summit/config/tests/{ns}/versions/1")).await
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
    secrets
        .delete("payments-production", &Default::default())
        .await
        .expect("delete the Secret");
    target(&client, &ns, "payments-production", |d| {
        d.get("DB_PASSWORD").map(String::as_str) == Some("second-db-password")
    })
    .await;
    let edit = json!({"stringData": {"DB_PASSWORD": "hand-edited", "INJECTED": "by hand"}});
    secrets
        .patch(
            "payments-production",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .expect("edit the Secret by hand");
    target(&client, &ns, "payments-production", |d| {
        d.get("DB_PASSWORD").map(String::as_str) == Some("second-db-password")
            && !d.contains_key("INJECTED")
    })
    .await;

    // An environment that no longer has secret references loses its Secret.
    let entries: Api<summit_config::api::v1alpha1::ConfigEntry> =
        Api::namespaced(client.clone(), &ns);
    let drop_secrets = json!({"spec": {"secrets": null, "environments": [{"name": "production"}]}});
    entries
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(&drop_secrets),
        )
        .await
        .expect("remove the references");
    eventually("the Secret to be removed", WAIT, || async {
        secrets
            .get_opt("payments-production")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_namespace_reaches_only_its_own_aws_secrets_through_the_operator() {
    let _moto = MOTO.lock().await;
    let (client, ns) = fresh_namespace("tenant").await;
    let _operator = Operator::start(&ns);
    let aws = secrets_manager().await;
    // Another tenant's secret: outside `tests/<ns>/`, the prefix this namespace gets.
    let theirs = format!("tests/other-{ns}/db");
    create_aws_secret(&aws, &theirs, "another-tenants-password").await;

    let entries: Api<summit_config::api::v1alpha1::ConfigEntry> =
        Api::namespaced(client.clone(), &ns);
    let entry = |name: &str, reference: Value| -> summit_config::api::v1alpha1::ConfigEntry {
        serde_json::from_value(json!({
            "apiVersion": "config.summit.io/v1alpha1",
            "kind": "ConfigEntry",
            "metadata": {"name": name},
            "spec": {
                "configId": format!("tests/{ns}/{name}"),
                "data": {"host": "db"},
                "secrets": {"PASSWORD": reference},
                "environments": [{"name": "production"}],
            },
        }))
        .expect("entry")
    };
    entries
        .create(
            &PostParams::default(),
            &entry(
                "borrowed",
                json!({"provider": "AwsSecretsManager", "secretId": theirs}),
            ),
        )
        .await
        .expect("create entry");
    let refused = |name: &'static str, why: &'static str| {
        let entries = entries.clone();
        async move {
            let ready = eventually(&format!("{name} to say why"), WAIT, || async {
                let status = entries.get(name).await.ok()?.status?;
                let ready = find_condition(&status.conditions, "Ready")?.clone();
                ready.message.contains(why).then_some(ready)
            })
            .await;
            assert_eq!(ready.status, "False");
            ready.message
        }
    };
    let message = refused("borrowed", "outside").await;
    assert!(message.contains(&format!("tests/{ns}/*")), "{message}");
    // An ARN names an account and region the prefix cannot vouch for.
    let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:tests/{ns}/db-AbCdEf");
    entries
        .create(
            &PostParams::default(),
            &entry(
                "by-arn",
                json!({"provider": "AwsSecretsManager", "secretId": arn}),
            ),
        )
        .await
        .expect("create entry");
    refused("by-arn", "by name, not ARN").await;

    // Nor may a policy rotate it.
    let policies: Api<SecretRotationPolicy> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "provider": "AwsSecretsManager",
        "secretId": theirs,
        "rotationInterval": "30d",
        "target": {"name": "borrowed"},
    });
    policies
        .create(&PostParams::default(), &policy("borrowed", spec))
        .await
        .expect("create policy");
    policy_status(&policies, "borrowed", |s| {
        find_condition(&s.conditions, "RotationFailed")
            .is_some_and(|c| c.status == "True" && c.reason == "SecretNotAllowed")
    })
    .await;

    // With credentials of its own, the namespace reaches what they reach.
    let credentials: Secret = serde_json::from_value(json!({
        "metadata": {"name": "own-aws"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": env().var("AWS_ACCESS_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY": env().var("AWS_SECRET_ACCESS_KEY"),
        },
    }))
    .expect("credentials");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &credentials)
        .await
        .expect("create credentials");
    entries
        .create(
            &PostParams::default(),
            &entry(
                "own",
                json!({"provider": "AwsSecretsManager", "secretId": theirs,
                       "aws": {"credentialsSecret": "own-aws"}}),
            ),
        )
        .await
        .expect("create entry");
    let data = target(&client, &ns, "own-production", |d| {
        d.contains_key("PASSWORD")
    })
    .await;
    assert_eq!(data["PASSWORD"], "another-tenants-password");

    // A Secret that is not the entry's is never taken over.
    let squatted: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken-production"},
        "stringData": {"PASSWORD": "someone else's"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &squatted)
        .await
        .expect("create a Secret by hand");
    entries
        .create(
            &PostParams::default(),
            &entry(
                "taken",
                json!({"provider": "AwsSecretsManager", "secretId": theirs,
                       "aws": {"credentialsSecret": "own-aws"}}),
            ),
        )
        .await
        .expect("create entry");
    refused("taken", "belongs to nobody in summit-config").await;
    assert_eq!(
        target(&client, &ns, "taken-production", |_| true).await["PASSWORD"],
        "someone else's"
    );

    // Nothing reached the borrowing entry, and the secret never rotated.
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt("borrowed-production")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        aws_value(&aws, &theirs, "AWSCURRENT").await.0,
        "another-tenants-password"
    );
}

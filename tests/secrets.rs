//! SecretRotationPolicy against the real apiserver and moto's Secrets Manager through
//! the real AWS SDK: rotation on demand and on schedule, the grace period, restart
//! targets holding the previous value, and a provider that hangs.

mod support;

use std::time::Duration;

use aws_sdk_secretsmanager::Client as SecretsManager;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_ROTATING, CONDITION_ROTATION_FAILED, SecretRotationPolicy, find_condition,
};
use support::{
    WAIT, assert_reason, condition, create, create_aws_secret, deployment, env, event_reasons,
    eventually, finish_rollout, pause, policy, policy_where, postgres, rotation::*, run_ok,
    secret_where, setup, sleep_through_window, template_annotations, wait_within,
};
use tokio::sync::Mutex;

/// How long a rotation against a hanging Secrets Manager may take to fail: the SDK's
/// timeouts and retries run out first.
const HANG: Duration = Duration::from_secs(90);

/// How long a failed rotation may take to complete once Secrets Manager answers again:
/// the operator retries on a backoff that grew while it hung.
const RECOVERY: Duration = Duration::from_secs(120);

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

#[tokio::test]
async fn aws_secrets_rotate_on_demand_and_on_schedule_and_retire_after_the_grace_period() {
    let moto = with_moto("aws-rotation", &[]).await;
    let (s, aws) = (&moto.s, &moto.aws);
    let id = moto.secret("database", "initial-password-value").await;

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
    let (current, version) = aws_value(aws, &id, "AWSCURRENT").await;
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
    let stages = aws_stages(aws, &id).await;
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
    let (current, _) = aws_value(aws, &id, "AWSCURRENT").await;
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
    let notify = json!({"notifications": {"webhookUrl": webhook}});
    let spec = support::with_fields(in_cluster_held_by("api-token", "api"), notify);
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
    let annotation = template_annotations(&current);
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
    let moto = with_moto("moto-down", &[]).await;
    let (s, aws) = (&moto.s, &moto.aws);
    let id = moto.secret("cache", "last-good-value").await;
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
    let (current, _) = aws_value(aws, &id, "AWSCURRENT").await;
    let data = secret_where(&secrets, "cache", |d| d.get("value") == Some(&current)).await;
    assert_eq!(data["previous"], "last-good-value");

    // Another secret is deleted upstream: its rotation fails and says so, and its
    // Secret keeps what it had.
    let gone_id = format!("tests/{}/gone", s.ns);
    create_aws_secret(aws, &gone_id, "value-before-deletion").await;
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

//! What a policy leaves behind it: its row and audit trail in PostgreSQL, and
//! notifications to its webhook. Neither ever holds a value.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use crate::{
    api::v1alpha1::{
        SecretProvider as ProviderKind, SecretRotationPolicy, SecretRotationPolicyStatus,
    },
    controller::{Context, status::now},
    core::rotation::Schedule,
    store::Rotation,
};

/// Keeps `secret_rotation_policies` and the audit trail up to date; best effort, with
/// a warning, so a database outage never holds a rotation back.
pub async fn record(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    schedule: &Schedule,
    status: &SecretRotationPolicyStatus,
    event: &str,
) {
    let rotation = Rotation {
        secret_id: policy.spec.secret_id.clone(),
        provider: match policy.spec.provider {
            ProviderKind::AwsSecretsManager => "AwsSecretsManager",
            ProviderKind::InCluster => "InCluster",
        }
        .to_owned(),
        policy: name(policy),
        interval_days: days(schedule.interval),
        grace_days: days(schedule.grace),
        rotation_function: policy.spec.rotation_function.clone(),
        notify: policy
            .spec
            .notifications
            .as_ref()
            .and_then(|n| n.webhook_url.as_deref())
            .map(webhook_origin)
            .into_iter()
            .collect(),
        last_rotated_at: status.last_rotation_time.as_ref().map(|t| t.0),
        next_rotation_at: status.next_rotation_time.as_ref().map(|t| t.0),
        event: event.to_owned(),
        current_version: status.current_version.clone(),
        previous_version: status.previous_version.clone(),
        actor: ctx.settings.identity.clone(),
    };
    if let Err(error) = ctx.stores.record_rotation(&rotation).await {
        tracing::warn!(%error, "cannot record the rotation in PostgreSQL");
    }
}

fn name(policy: &SecretRotationPolicy) -> String {
    format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )
}

fn days(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().div_ceil(86_400)).unwrap_or(i32::MAX)
}

/// Where a webhook goes, without its path or query: those often carry a token
/// (Slack's and Teams' URLs do), and the record is read by more people than the policy.
fn webhook_origin(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "<unparsable URL>".to_owned(),
        |url| url.origin().ascii_serialization(),
    )
}

/// Posts a notification to the policy's webhook, if any, in the background, retried
/// with backoff. The body holds ids and times, never a value.
pub fn notify(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    status: &SecretRotationPolicyStatus,
    event: &'static str,
) {
    let Some(url) = policy
        .spec
        .notifications
        .as_ref()
        .and_then(|n| n.webhook_url.clone())
    else {
        return;
    };
    let body = json!({
        "event": event,
        "policy": name(policy),
        "secretId": policy.spec.secret_id,
        "provider": policy.spec.provider,
        "currentVersion": status.current_version,
        "previousVersion": status.previous_version,
        "lastRotationTime": status.last_rotation_time,
        "nextRotationTime": status.next_rotation_time,
        "previousRetiresAt": status.previous_retires_at,
        "time": now(),
    });
    let http = ctx.http.clone();
    // Webhook URLs often carry a token: logs name the policy, never the URL.
    let policy_name = name(policy);
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=5 {
            match http.post(&url).json(&body).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::warn!(%policy_name, status = %response.status(), attempt, "webhook refused a notification");
                }
                Err(error) => {
                    tracing::warn!(%policy_name, error = %error.without_url(), attempt, "webhook unreachable")
                }
            }
            let jitter = Duration::from_millis(rand::random_range(0..500));
            tokio::time::sleep(delay + jitter).await;
            delay *= 2;
        }
        tracing::warn!(%policy_name, event, "gave up notifying the webhook");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_records_keep_only_the_origin() {
        assert_eq!(
            webhook_origin("https://hooks.example.com:8443/services/T000/B000/XXXX?token=y"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(webhook_origin("not a url"), "<unparsable URL>");
    }
}

//! The SecretRotationPolicy reconcile loop. This first version checks the schedule;
//! rotation itself builds on it.

use std::sync::Arc;

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    Context, Error, Result, observed, requeue_after_error,
    status::{self, Invalid},
};
use crate::api::v1alpha1::{SecretRotationPolicy, SecretRotationPolicySpec, parse_duration};

const KIND: &str = "SecretRotationPolicy";
const DEFAULT_GRACE_PERIOD: &str = "7d";
const DEFAULT_MINIMUM_INTERVAL: &str = "1h";

#[instrument(skip_all, fields(namespace = policy.namespace().unwrap_or_default(), name = policy.name_any()))]
pub async fn reconcile(policy: Arc<SecretRotationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, policy.as_ref(), &ctx, async {
        let verdict = check_schedule(&policy.spec);
        status::report_validation(
            ctx.as_ref(),
            KIND,
            policy.as_ref(),
            policy.status.as_ref(),
            &verdict,
        )
        .await?;
        Ok(Action::await_change())
    })
    .await
}

pub fn error_policy(policy: Arc<SecretRotationPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, policy.as_ref(), error, &ctx)
}

/// Checks that the durations parse and fit together: the grace period is shorter than
/// the interval, and the minimum interval no longer than it.
fn check_schedule(spec: &SecretRotationPolicySpec) -> Result<String, Invalid> {
    let parse = |field: &str, text: &str| {
        parse_duration(text).map_err(|error| Invalid {
            reason: "InvalidDuration",
            message: format!("spec.{field}: {error}"),
        })
    };
    let interval = parse("rotationInterval", &spec.rotation_interval)?;
    let grace_text = spec.grace_period.as_deref().unwrap_or(DEFAULT_GRACE_PERIOD);
    let grace = parse("gracePeriod", grace_text)?;
    let minimum_text = spec
        .minimum_interval
        .as_deref()
        .unwrap_or(DEFAULT_MINIMUM_INTERVAL);
    let minimum = parse("minimumInterval", minimum_text)?;
    if grace >= interval {
        return Err(Invalid {
            reason: "InvalidSchedule",
            message: format!(
                "spec.gracePeriod {grace_text} must be shorter than spec.rotationInterval {}: the previous value must retire before the next rotation",
                spec.rotation_interval
            ),
        });
    }
    if minimum > interval {
        return Err(Invalid {
            reason: "InvalidSchedule",
            message: format!(
                "spec.minimumInterval {minimum_text} is longer than spec.rotationInterval {}",
                spec.rotation_interval
            ),
        });
    }
    Ok(format!(
        "rotates every {} with a grace period of {grace_text}",
        spec.rotation_interval
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> SecretRotationPolicySpec {
        serde_yaml_ng::from_str(&format!(
            "provider: AwsSecretsManager\nsecretId: db\ntarget: {{name: db}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn defaults_fit_a_long_interval() {
        assert_eq!(
            check_schedule(&spec("rotationInterval: 90d")),
            Ok("rotates every 90d with a grace period of 7d".into())
        );
    }

    #[test]
    fn a_grace_period_as_long_as_the_interval_is_refused() {
        let invalid = check_schedule(&spec("rotationInterval: 7d")).unwrap_err();
        assert_eq!(invalid.reason, "InvalidSchedule");
        assert!(
            invalid
                .message
                .starts_with("spec.gracePeriod 7d must be shorter"),
            "{}",
            invalid.message
        );
    }

    #[test]
    fn a_minimum_interval_longer_than_the_interval_is_refused() {
        let invalid = check_schedule(&spec("rotationInterval: 30m\ngracePeriod: 5m")).unwrap_err();
        assert!(
            invalid.message.contains("spec.minimumInterval 1h"),
            "{}",
            invalid.message
        );
    }
}

//! A policy's schedule: its interval, grace period and minimum interval.

use std::time::Duration;

use crate::{
    api::v1alpha1::{SecretProvider, SecretRotationPolicySpec, Time, parse_duration},
    core::{Invalid, resolve::is_dns_label},
};

const DEFAULT_GRACE_PERIOD: &str = "7d";
const DEFAULT_MINIMUM_INTERVAL: &str = "1h";

/// The durations of a valid policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    pub grace: Duration,
    pub minimum: Duration,
    /// The `Validated` message.
    pub summary: String,
}

/// `at`, `by` later.
pub fn later(at: &Time, by: Duration) -> Time {
    let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX / 2);
    Time(
        k8s_openapi::jiff::Timestamp::from_second(at.0.as_second().saturating_add(seconds))
            .unwrap_or(at.0),
    )
}

/// Checks that the durations parse and fit together: the grace period is shorter than
/// the interval, and the minimum interval no longer than it; and that the provider
/// can do what the policy asks.
pub fn check_schedule(spec: &SecretRotationPolicySpec) -> Result<Schedule, Invalid> {
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
    let invalid = |reason, message| Err(Invalid { reason, message });
    if grace >= interval {
        return invalid(
            "InvalidSchedule",
            format!(
                "spec.gracePeriod {grace_text} must be shorter than spec.rotationInterval {}: the previous value must retire before the next rotation",
                spec.rotation_interval
            ),
        );
    }
    if minimum > interval {
        return invalid(
            "InvalidSchedule",
            format!(
                "spec.minimumInterval {minimum_text} is longer than spec.rotationInterval {}",
                spec.rotation_interval
            ),
        );
    }
    if spec.rotation_function.is_some() && spec.provider != SecretProvider::AwsSecretsManager {
        return invalid(
            "InvalidRotation",
            "spec.rotationFunction needs provider AwsSecretsManager; the in-cluster provider generates values itself".into(),
        );
    }
    if spec.provider == SecretProvider::InCluster && !is_dns_label(&spec.secret_id) {
        return invalid(
            "InvalidSecretId",
            format!(
                "spec.secretId {:?}: an in-cluster secret id must be a DNS label (lower-case letters, digits and '-', at most 63)",
                spec.secret_id
            ),
        );
    }
    Ok(Schedule {
        interval,
        grace,
        minimum,
        summary: format!(
            "rotates every {} with a grace period of {grace_text}",
            spec.rotation_interval
        ),
    })
}

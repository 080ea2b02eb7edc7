//! What a ConfigEntry reconcile found, turned into its status. Pure.

use crate::api::v1alpha1::{CONDITION_READY, CONDITION_SYNCED, CONDITION_VALIDATED};
use crate::{
    api::v1alpha1::{Conditions, ConfigEntryStatus, EnvironmentPhase, EnvironmentStatus, Time},
    store::AppliedState,
};

/// Where one environment ended up in this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentOutcome {
    pub name: String,
    pub phase: EnvironmentPhase,
    /// What is live: version, checksum of the environment's content, and since when.
    pub live: Option<Live>,
    /// A newer version waiting for approval.
    pub pending_version: Option<i64>,
    /// The ConfigChange that holds its approval.
    pub pending_change: Option<String>,
    /// The secret versions projected (checksums, never values).
    pub secrets: Option<SecretsOutcome>,
    /// The restart targets, and how many of them run the live content.
    pub consumers: Option<Consumers>,
    pub message: Option<String>,
}

/// What an environment's Secret holds, by checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsOutcome {
    /// Checksum of the provider versions (ids, never values).
    pub checksum: String,
}

impl SecretsOutcome {
    /// What the previous status said.
    pub fn from_status(status: &EnvironmentStatus) -> Option<Self> {
        Some(Self {
            checksum: status.secrets_checksum.clone()?,
        })
    }
}

/// How many of an environment's restart targets have rolled out its live content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumers {
    pub running: usize,
    pub total: usize,
}

impl Consumers {
    /// What the previous status said, for reconciles that learn nothing new.
    pub fn from_status(status: &EnvironmentStatus) -> Option<Self> {
        Some(Self {
            running: usize::try_from(status.consumers_ready?).ok()?,
            total: usize::try_from(status.consumers_total?).ok()?,
        })
    }
}

/// The version live in an environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub version: i64,
    pub checksum: String,
    pub applied_at: Option<Time>,
}

impl From<&AppliedState> for Live {
    fn from(applied: &AppliedState) -> Self {
        Self {
            version: applied.version,
            checksum: applied.checksum.clone(),
            applied_at: Some(Time(seconds(applied.applied_at))),
        }
    }
}

impl Live {
    /// What the previous status said was live, for reconciles that learn nothing new.
    pub fn from_status(status: &EnvironmentStatus) -> Option<Self> {
        Some(Self {
            version: status.version?,
            checksum: status.checksum.clone()?,
            applied_at: status.applied_at.clone(),
        })
    }
}

/// The backends' part of `Synced`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    pub synced: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Everything status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub generation: Option<i64>,
    pub validated: Result<String, (&'static str, String)>,
    pub latest: Option<(i64, String)>,
    pub environments: Vec<EnvironmentOutcome>,
    pub sync: Option<SyncOutcome>,
}

/// The status `report` describes, starting from the current one so that unchanged
/// conditions keep their transition times and unknown parts are kept.
pub fn build_status(
    current: Option<&ConfigEntryStatus>,
    report: &Report,
    now: Time,
) -> ConfigEntryStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = report.generation;
    if let Some((version, checksum)) = &report.latest {
        status.latest_version = Some(*version);
        status.latest_checksum = Some(checksum.clone());
    }
    if !report.environments.is_empty() {
        status.environments = report.environments.iter().map(environment_status).collect();
        status.summary = Some(summary(&status.environments));
    }
    let mut conditions = Conditions::new(&mut status.conditions, report.generation, now);
    match &report.validated {
        Ok(message) => conditions.set(CONDITION_VALIDATED, true, "Valid", message),
        Err((reason, message)) => conditions.set(CONDITION_VALIDATED, false, reason, message),
    }
    if let Some(sync) = &report.sync {
        conditions.set(CONDITION_SYNCED, sync.synced, sync.reason, &sync.message);
    }
    let (ready, reason, message) = readiness(report);
    conditions.set(CONDITION_READY, ready, reason, message);
    status
}

fn environment_status(outcome: &EnvironmentOutcome) -> EnvironmentStatus {
    EnvironmentStatus {
        name: outcome.name.clone(),
        phase: Some(outcome.phase),
        version: outcome.live.as_ref().map(|l| l.version),
        checksum: outcome.live.as_ref().map(|l| l.checksum.clone()),
        applied_at: outcome.live.as_ref().and_then(|l| l.applied_at.clone()),
        pending_version: outcome.pending_version,
        pending_change: outcome.pending_change.clone(),
        secrets_checksum: outcome.secrets.as_ref().map(|s| s.checksum.clone()),
        consumers_ready: outcome.consumers.map(|c| count(c.running)),
        consumers_total: outcome.consumers.map(|c| count(c.total)),
        message: outcome.message.clone(),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whole seconds, as the apiserver stores times, so an unchanged status compares equal.
fn seconds(at: k8s_openapi::jiff::Timestamp) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// `development=v3 production=v2 (v3 pending)`.
fn summary(environments: &[EnvironmentStatus]) -> String {
    environments
        .iter()
        .map(|e| {
            let live = e
                .version
                .map_or_else(|| "none".to_owned(), |v| format!("v{v}"));
            let mut text = format!("{}={live}", e.name);
            match e.phase {
                Some(EnvironmentPhase::PendingApproval) => {
                    if let Some(pending) = e.pending_version {
                        text.push_str(&format!(" (v{pending} pending)"));
                    }
                }
                Some(EnvironmentPhase::Invalid) => text.push_str(" (invalid)"),
                Some(EnvironmentPhase::Degraded) => text.push_str(" (degraded)"),
                _ => {}
            }
            text
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn readiness(report: &Report) -> (bool, &'static str, String) {
    if let Err((_, message)) = &report.validated {
        return (false, "Invalid", message.clone());
    }
    if let Some(sync) = report
        .sync
        .as_ref()
        .filter(|s| s.reason == "PostgresUnavailable")
    {
        return (false, sync.reason, sync.message.clone());
    }
    let degraded: Vec<&EnvironmentOutcome> = report
        .environments
        .iter()
        .filter(|e| e.phase == EnvironmentPhase::Degraded)
        .collect();
    if let Some(first) = degraded.first() {
        return (
            false,
            "Degraded",
            format!(
                "{}: {}",
                first.name,
                first.message.clone().unwrap_or_default()
            ),
        );
    }
    let pending: Vec<&str> = report
        .environments
        .iter()
        .filter(|e| e.phase == EnvironmentPhase::PendingApproval)
        .map(|e| e.name.as_str())
        .collect();
    if pending.is_empty() {
        (
            true,
            "Applied",
            "every environment runs its latest version".to_owned(),
        )
    } else {
        (
            true,
            "PendingApproval",
            format!(
                "waiting for approval in {}; the previous version stays live",
                pending.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::find_condition;
    use k8s_openapi::jiff::Timestamp;

    fn applied(environment: &str, version: i64) -> AppliedState {
        AppliedState {
            config_id: "payments".into(),
            environment: environment.into(),
            version,
            checksum: format!("sum-{version}"),
            applied_at: Timestamp::from_second(1_000).unwrap(),
        }
    }

    fn report() -> Report {
        Report {
            generation: Some(3),
            validated: Ok("fine".into()),
            latest: Some((2, "abc".into())),
            environments: vec![
                EnvironmentOutcome {
                    name: "development".into(),
                    phase: EnvironmentPhase::Applied,
                    live: Some(Live::from(&applied("development", 2))),
                    pending_version: None,
                    pending_change: None,
                    secrets: None,
                    consumers: None,
                    message: None,
                },
                EnvironmentOutcome {
                    name: "production".into(),
                    phase: EnvironmentPhase::PendingApproval,
                    live: Some(Live::from(&applied("production", 1))),
                    pending_version: Some(2),
                    pending_change: None,
                    secrets: None,
                    consumers: None,
                    message: Some("waiting for 2 approvals".into()),
                },
            ],
            sync: Some(SyncOutcome {
                synced: true,
                reason: "Recorded",
                message: "PostgreSQL and Consul hold version 2".into(),
            }),
        }
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_summary_says_what_is_live_and_what_waits() {
        let status = build_status(None, &report(), at(10));
        assert_eq!(
            status.summary.as_deref(),
            Some("development=v2 production=v1 (v2 pending)")
        );
        assert_eq!(status.latest_version, Some(2));
        let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "PendingApproval")
        );
    }

    #[test]
    fn the_same_report_builds_the_same_status() {
        let first = build_status(None, &report(), at(10));
        let second = build_status(Some(&first), &report(), at(20));
        assert_eq!(
            first, second,
            "a reconcile that changes nothing must write nothing"
        );
    }

    #[test]
    fn postgres_down_is_not_ready() {
        let mut report = report();
        report.sync = Some(SyncOutcome {
            synced: false,
            reason: "PostgresUnavailable",
            message: "no new version is recorded while PostgreSQL is unavailable".into(),
        });
        let status = build_status(None, &report, at(10));
        let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "PostgresUnavailable")
        );
    }
}

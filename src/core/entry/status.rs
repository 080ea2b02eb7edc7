//! What a ConfigEntry reconcile found, turned into its status and its Events.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;

use crate::api::v1alpha1::{
    CONDITION_READY, CONDITION_SYNCED, CONDITION_VALIDATED, Conditions, ConfigEntry,
    ConfigEntryStatus, EnvironmentPhase, EnvironmentStatus, Time, find_condition,
};
use crate::core::Note;

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

impl EnvironmentOutcome {
    /// An environment where `live` is live, and nothing else is known yet.
    pub fn live(name: &str, live: Option<Live>) -> Self {
        Self {
            name: name.to_owned(),
            phase: EnvironmentPhase::Applied,
            live,
            pending_version: None,
            pending_change: None,
            secrets: None,
            consumers: None,
            message: None,
        }
    }
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

impl Live {
    /// `version`, with its content's `checksum`, applied at `applied_at`.
    pub fn new(version: i64, checksum: &str, applied_at: Timestamp) -> Self {
        Self {
            version,
            checksum: checksum.to_owned(),
            applied_at: Some(Time(seconds(applied_at))),
        }
    }

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
    /// What the pass did that people should hear of (recorded a version, applied
    /// it, asked for approval), in order.
    pub happened: Vec<Note>,
}

impl Report {
    /// A report of generation `generation` that has found nothing yet.
    pub fn new(generation: Option<i64>) -> Self {
        Self {
            generation,
            validated: Ok(String::new()),
            latest: None,
            environments: Vec::new(),
            sync: None,
            happened: Vec::new(),
        }
    }

    /// Whether an environment is degraded.
    pub fn degraded(&self) -> bool {
        self.environments
            .iter()
            .any(|e| e.phase == EnvironmentPhase::Degraded)
    }
}

/// Where the recorded versions stand in the backends after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends {
    /// Kept in memory only.
    Memory,
    /// In PostgreSQL; Consul is not configured.
    Postgres,
    /// In the cluster ledger (ConfigMaps in the operator's namespace).
    Cluster,
    /// In the ledger (named as a person would: `PostgreSQL`, `the cluster ledger`) and
    /// Consul, which holds only the checksum of `omitted` (a version too large for it,
    /// and why).
    Consul {
        ledger: &'static str,
        omitted: Option<(i64, String)>,
    },
    /// Consul did not answer, and why.
    ConsulBehind(String),
}

impl SyncOutcome {
    /// What `Synced` says once version `latest` is recorded.
    pub fn recorded(latest: i64, backends: Backends) -> Self {
        let synced = |reason, message| Self {
            synced: true,
            reason,
            message,
        };
        match backends {
            Backends::Memory => synced(
                "InMemoryOnly",
                "versions are kept in memory only and are lost when the operator restarts".into(),
            ),
            Backends::Postgres => synced("Recorded", format!("PostgreSQL holds version {latest}")),
            Backends::Cluster => synced(
                "Recorded",
                format!("the cluster ledger holds version {latest}"),
            ),
            Backends::Consul {
                ledger,
                omitted: Some((version, why)),
            } => synced(
                "ConsulContentOmitted",
                format!(
                    "{ledger} holds version {version}; Consul holds its checksum but not its content: {why}"
                ),
            ),
            Backends::Consul {
                ledger,
                omitted: None,
            } => synced(
                "Recorded",
                format!("{ledger} and Consul hold version {latest}"),
            ),
            Backends::ConsulBehind(error) => Self {
                synced: false,
                reason: "ConsulBehind",
                message: format!(
                    "Consul is behind ({error}); applying continues and Consul catches up when it answers"
                ),
            },
        }
    }
}

/// Environments as the previous status left them, those `at_fault` marked `Invalid`:
/// for reconciles that stop before they learn anything of them.
pub fn unchanged(entry: &ConfigEntry, at_fault: &BTreeSet<String>) -> Vec<EnvironmentOutcome> {
    let previous = entry
        .status
        .as_ref()
        .map(|s| s.environments.as_slice())
        .unwrap_or_default();
    entry
        .spec
        .environments
        .iter()
        .map(|environment| {
            let before = previous.iter().find(|p| p.name == environment.name);
            let invalid = at_fault.contains(&environment.name);
            EnvironmentOutcome {
                name: environment.name.clone(),
                phase: if invalid {
                    EnvironmentPhase::Invalid
                } else {
                    before
                        .and_then(|b| b.phase)
                        .unwrap_or(EnvironmentPhase::Degraded)
                },
                live: before.and_then(Live::from_status),
                pending_version: before.and_then(|b| b.pending_version),
                pending_change: before.and_then(|b| b.pending_change.clone()),
                secrets: before.and_then(SecretsOutcome::from_status),
                consumers: before.and_then(Consumers::from_status),
                message: if invalid {
                    Some("does not validate; the live version stays".into())
                } else {
                    before.and_then(|b| b.message.clone())
                },
            }
        })
        .collect()
}

/// The Events a status change calls for: when the validation verdict changes, and
/// when an environment becomes degraded (or degraded for another reason) or recovers;
/// never twice for the same state. An environment held back by an invalid spec has no
/// reason of its own: the `ValidationFailed` Event says why.
pub fn notes(current: Option<&ConfigEntryStatus>, next: &ConfigEntryStatus) -> Vec<Note> {
    let mut notes = Vec::new();
    let verdict = |status: &ConfigEntryStatus| {
        find_condition(&status.conditions, CONDITION_VALIDATED)
            .map(|c| (c.status == "True", c.message.clone()))
    };
    let after = verdict(next);
    if let Some((valid, message)) = after.clone()
        && current.and_then(verdict) != after
    {
        notes.push(match valid {
            true => Note::normal("Validated", message),
            false => Note::warning("ValidationFailed", message),
        });
    }
    let degraded = |environments: &[EnvironmentStatus], name: &str| {
        environments
            .iter()
            .find(|e| e.name == name && e.phase == Some(EnvironmentPhase::Degraded))
            .and_then(|e| e.message.clone())
    };
    let previous = current
        .map(|s| s.environments.as_slice())
        .unwrap_or_default();
    for environment in &next.environments {
        let was = degraded(previous, &environment.name);
        match degraded(&next.environments, &environment.name) {
            Some(message) if was.as_ref() != Some(&message) => notes.push(Note::warning(
                "Degraded",
                format!("{}: {message}", environment.name),
            )),
            None if was.is_some() => {
                let phase = environment
                    .phase
                    .map_or_else(|| "unknown".to_owned(), |p| format!("{p:?}"));
                notes.push(Note::normal(
                    "Recovered",
                    format!("{} is {phase} again", environment.name),
                ));
            }
            _ => {}
        }
    }
    notes
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
    conditions.summarize(None);
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
fn seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
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
mod tests;

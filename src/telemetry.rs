//! Logging, metrics and the operator's HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Starts logging to stderr. `RUST_LOG` chooses the level (default `info`).
///
/// Whatever it says, the Kubernetes client never logs below `error`: when it cannot
/// decode a response it logs the whole body, which may be every tenant's config.
pub fn init_logging(format: LogFormat) -> Result<(), LoggingError> {
    let quiet_bodies = "kube_client::client=error".parse()?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new("info,kube=warn"))?
        .add_directive(quiet_bodies);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    Ok(result?)
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("RUST_LOG does not parse")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a logger is already installed")]
    Installed(#[from] tracing_subscriber::util::TryInitError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    pub target: &'static str,
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub reconcile_seconds: Family<KindLabels, Histogram>,
    /// Writes the operator made to the apiserver, by what it wrote; steady state adds none.
    pub apiserver_writes: Family<WriteLabels, Counter>,
    /// Versions recorded.
    pub versions_recorded: Counter,
    /// Time to move one environment to a version: the applied-state write and the projection.
    pub apply_seconds: Histogram,
    /// 1 while a backend answered its last request, 0 after it failed.
    pub backend_up: Family<BackendLabels, Gauge>,
    /// Seconds from a ConfigChange's request to its approval, and to its application.
    pub approval_seconds: Family<StageLabels, Histogram>,
    /// ConfigChanges waiting for approval, by environment.
    pub pending_changes: Family<EnvironmentLabels, Gauge>,
    /// ConfigChanges pending for longer than a day.
    pub stalled_changes: Gauge,
    /// Rotations by result (`success`, `failure`).
    pub rotations: Family<ResultLabels, Counter>,
    /// Time a successful rotation took, provider calls and projection included.
    pub rotation_seconds: Histogram,
    /// Drifted copies found, by source.
    pub drift_occurrences: Family<SourceLabels, Counter>,
    /// Drifted copies put back.
    pub remediations: Counter,
    /// How long the last drift check took.
    pub drift_check_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Requests to each backend, by backend.
    pub backend_requests: Family<BackendLabels, Counter>,
    /// Objects found invalid, by kind and reason, counted as they become so.
    pub refused_objects: Family<FailureLabels, Counter>,
    /// Staged rollouts that ended, by result (`promoted`, `rolled_back`).
    pub rollouts: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `approved` or `applied`.
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

impl Metrics {
    /// Counts one drifted copy, and its remediation.
    pub fn drift(&self, source: &'static str, remediated: bool) {
        self.drift_occurrences
            .get_or_create(&SourceLabels { source })
            .inc();
        if remediated {
            self.remediations.inc();
        }
    }

    /// Counts a rotation, and times it when it succeeded.
    pub fn rotation(&self, result: &'static str, took: std::time::Duration) {
        self.rotations.get_or_create(&ResultLabels { result }).inc();
        if result == "success" {
            self.rotation_seconds.observe(took.as_secs_f64());
        }
    }

    /// Records whether a backend answered.
    pub fn backend(&self, backend: &'static str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabels { backend })
            .set(i64::from(up));
    }
}

/// Histogram buckets, in seconds.
const RECONCILE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const APPLY_BUCKETS: [f64; 7] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const ROTATION_BUCKETS: [f64; 7] = [0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0];
const APPROVAL_BUCKETS: [f64; 7] = [
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    86400.0,
    7.0 * 86400.0,
];

/// Every metric: its name (after the `summit_config_` prefix) and its help.
const HELP: &[(&str, &str)] = &[
    (
        "drift_occurrences",
        "Drifted copies found by drift checks, by source (kubernetes, consul, postgres)",
    ),
    (
        "drift_remediations",
        "Drifted copies put back to their recorded version",
    ),
    (
        "drift_check_duration_seconds",
        "How long the last drift check took",
    ),
    (
        "secret_rotations",
        "Secret rotations, by result; the success rate is success / (success + failure)",
    ),
    (
        "secret_rotation_duration_seconds",
        "Time a successful rotation took",
    ),
    (
        "approval_latency_seconds",
        "Seconds from a ConfigChange's request to its approval (stage=approved) and to its application (stage=applied)",
    ),
    (
        "pending_changes",
        "ConfigChanges waiting for approval, by environment",
    ),
    (
        "stalled_changes",
        "ConfigChanges waiting for approval for more than a day",
    ),
    (
        "apply_duration_seconds",
        "Time to apply a version to one environment, projection included",
    ),
    (
        "backend_up",
        "Whether a backend (postgres, consul) answered its last request",
    ),
    ("versions_recorded", "Versions recorded"),
    ("reconciles", "Reconciles run, by kind"),
    (
        "reconcile_failures",
        "Reconciles that failed, by kind and reason",
    ),
    (
        "reconcile_duration_seconds",
        "Time spent in one reconcile, by kind",
    ),
    (
        "apiserver_writes",
        "Writes to the apiserver, by kind and target",
    ),
    (
        "backend_requests",
        "Requests sent, by backend: kubernetes (apiserver requests, a watch counting once), consul (HTTP requests), postgres (queries or transactions)",
    ),
    (
        "rollouts",
        "Canaries that ended, by result: promoted to every consumer, or rolled back",
    ),
    (
        "refused_objects",
        "Objects found invalid (unreadable, outside their namespace's config ids, contradictory), by kind and reason, counted as they become so",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("summit_config");
        Self {
            drift_occurrences: register(&mut registry, "drift_occurrences", Family::default()),
            remediations: register(&mut registry, "drift_remediations", Counter::default()),
            drift_check_seconds: register(
                &mut registry,
                "drift_check_duration_seconds",
                Gauge::default(),
            ),
            rotations: register(&mut registry, "secret_rotations", Family::default()),
            rotation_seconds: register(
                &mut registry,
                "secret_rotation_duration_seconds",
                Histogram::new(ROTATION_BUCKETS),
            ),
            approval_seconds: register(
                &mut registry,
                "approval_latency_seconds",
                Family::new_with_constructor(|| Histogram::new(APPROVAL_BUCKETS)),
            ),
            pending_changes: register(&mut registry, "pending_changes", Family::default()),
            stalled_changes: register(&mut registry, "stalled_changes", Gauge::default()),
            apply_seconds: register(
                &mut registry,
                "apply_duration_seconds",
                Histogram::new(APPLY_BUCKETS),
            ),
            backend_up: register(&mut registry, "backend_up", Family::default()),
            versions_recorded: register(&mut registry, "versions_recorded", Counter::default()),
            reconciles: register(&mut registry, "reconciles", Family::default()),
            failures: register(&mut registry, "reconcile_failures", Family::default()),
            reconcile_seconds: register(
                &mut registry,
                "reconcile_duration_seconds",
                Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS)),
            ),
            apiserver_writes: register(&mut registry, "apiserver_writes", Family::default()),
            backend_requests: register(&mut registry, "backend_requests", Family::default()),
            refused_objects: register(&mut registry, "refused_objects", Family::default()),
            rollouts: register(&mut registry, "rollouts", Family::default()),
            registry,
        }
    }
}

/// Registers `metric` under `name`, with its help from [`HELP`], and returns it.
fn register<M>(registry: &mut Registry, name: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    let help = HELP
        .iter()
        .find_map(|(n, help)| (*n == name).then_some(*help))
        .unwrap_or_default();
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// The counter of requests to `backend`, to be cloned into its client.
    pub fn requests_to(&self, backend: &'static str) -> Counter {
        self.backend_requests
            .get_or_create(&BackendLabels { backend })
            .clone()
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// What the HTTP endpoints report.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the CRDs are established and the controllers run.
    pub ready: AtomicBool,
}

/// Serves `/healthz`, `/readyz` and `/metrics` until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).await
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for CRDs")
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_its_help() {
        let metrics = Metrics::default();
        // Families show once they hold a series.
        metrics.drift("consul", true);
        metrics.backend("postgres", true);
        metrics.rotation("success", std::time::Duration::ZERO);
        let text = metrics.render();
        let shown: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP summit_config_"))
            .collect();
        for line in &shown {
            assert!(
                HELP.iter()
                    .any(|(name, help)| *line == format!("{name} {help}.")),
                "{line} has no entry in HELP"
            );
        }
        let names: std::collections::BTreeSet<_> = HELP.iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), HELP.len(), "a name listed twice");
        assert!(shown.len() >= 8, "{text}");
    }
}

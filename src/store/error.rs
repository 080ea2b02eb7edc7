//! What can go wrong in a store, and what it means for the next attempt.

use super::ClaimRefused;
use crate::core::Class;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PostgreSQL is unavailable: {action}")]
    Postgres {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("Consul is unavailable: {action}")]
    Consul {
        action: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Consul answered {status} to {action}")]
    ConsulStatus { action: String, status: u16 },
    #[error("Consul key {key} holds something that is not a summit-config record: {reason}")]
    ConsulValue { key: String, reason: String },
    #[error(transparent)]
    Claimed(#[from] ClaimRefused),
    #[error(
        "config id {config_id} is not held by ConfigEntry {entry}: the entry has not recorded it yet"
    )]
    Unclaimed { config_id: String, entry: String },
    #[error(
        "{config_id} version {version} differs in {backend} from the recorded version; refusing to overwrite it"
    )]
    Diverged {
        config_id: String,
        version: i64,
        backend: &'static str,
    },
    #[error(
        "{config_id} is at version {latest}, not {based_on} as this change expects: it is superseded"
    )]
    Superseded {
        config_id: String,
        based_on: i64,
        latest: i64,
    },
    #[error("the Kubernetes API is unavailable: {action}")]
    Cluster {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("ledger object {object} cannot be read: {reason}")]
    LedgerObject { object: String, reason: String },
    #[error("{config_id}: other writes kept coming first; trying again")]
    Contended { config_id: String },
    #[error("cannot encode a version as JSON")]
    Encode(#[source] serde_json::Error),
    #[error(
        "Consul is configured without a durable ledger: versions need PostgreSQL or the cluster ledger to number them"
    )]
    ConsulWithoutPostgres,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable short label for metrics, conditions and Events.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Postgres { .. } | Error::Migrate(_) => "PostgresUnavailable",
            Error::Consul { .. } | Error::ConsulStatus { .. } => "ConsulUnavailable",
            Error::ConsulValue { .. } | Error::Diverged { .. } => "BackendDiverged",
            Error::Claimed(_) => "ConfigIdClaimed",
            Error::Unclaimed { .. } => "NotRecordedYet",
            Error::Superseded { .. } => "Superseded",
            Error::Cluster { .. } => "KubernetesUnavailable",
            Error::LedgerObject { .. } => "BackendDiverged",
            Error::Contended { .. } => "Superseded",
            Error::Encode(_) => "Encode",
            Error::ConsulWithoutPostgres => "Configuration",
        }
    }

    /// What the failure means for the next attempt.
    pub fn class(&self) -> Class {
        match self {
            // Migrate: most often PostgreSQL not answering yet at start-up or after an
            // outage; a migration that is really broken keeps failing, with backoff,
            // and says so in status. Unclaimed: the entry has not recorded its config
            // id yet; it will.
            Error::Postgres { .. }
            | Error::Migrate(_)
            | Error::Consul { .. }
            | Error::ConsulStatus { .. }
            | Error::Cluster { .. }
            | Error::Unclaimed { .. } => Class::Transient,
            // Another writer moved first; the next attempt reads what it did.
            Error::Superseded { .. } | Error::Contended { .. } => Class::Conflict,
            Error::Claimed(_)
            | Error::LedgerObject { .. }
            | Error::ConsulValue { .. }
            | Error::Diverged { .. }
            | Error::Encode(_)
            | Error::ConsulWithoutPostgres => Class::Invalid,
        }
    }
}

//! The version store: PostgreSQL (history and audit, the arbiter of version numbers),
//! Consul (distribution), the in-memory store, and the composite that orders and
//! degrades them.
//!
//! A version is immutable: a snapshot of a config's base data, every environment's
//! overrides and its secret references, with the checksum of that snapshot. Which
//! version is live is recorded per environment as the applied state.

mod cluster;
mod composite;
mod consul;
mod error;
mod memory;
mod packed;
mod postgres;
pub mod rows;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::core::ownership::{ClaimRefused, Claimant, Projection, Target, TargetKind};
pub use crate::core::resolve::Snapshot;

use crate::api::v1alpha1::ApprovalPolicy;

pub use cluster::{ClusterLedger, LABEL_LEDGER};
pub use composite::{ClusterConfig, ConsulSync, Stores, StoresConfig};
pub use consul::{ConsulConfig, ConsulStore};
pub use error::{Error, Result};
pub use memory::MemoryStore;
pub(crate) use packed::Packed;
pub use postgres::PostgresStore;

/// Where a version came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "camelCase")]
pub enum Source {
    /// A ConfigEntry's spec (Git, `kubectl apply`).
    Spec,
    /// An imperative ConfigChange.
    Change { change: String },
}

/// A version about to be recorded; the store decides its number.
#[derive(Clone, Debug, PartialEq)]
pub struct NewVersion {
    pub config_id: String,
    /// The ConfigEntry that holds the config id: recording checks its claim.
    pub claimant: Claimant,
    pub snapshot: Snapshot,
    pub checksum: String,
    pub source: Source,
    /// The last writer of the content: the author the audit names.
    pub created_by: String,
    /// Everyone whose writes the content holds (`created_by` among them), as the
    /// apiserver authenticated them; empty when nothing proved who wrote it.
    pub authors: Vec<String>,
    pub message: String,
    /// Record only while this is the newest version: content proposed against an older
    /// version is superseded rather than silently overwriting what came since.
    pub based_on: Option<i64>,
}

/// One row of the audit trail: who did what to which version of a config id (a
/// secret's is `secret:<id>`), never a value.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRow {
    pub config_id: String,
    pub version: Option<i64>,
    pub actor: String,
    pub message: String,
    pub changes: serde_json::Value,
}

impl AuditRow {
    /// The row that records `version`.
    pub fn version_recorded(version: &Version) -> Self {
        Self {
            config_id: version.config_id.clone(),
            version: Some(version.version),
            actor: version.created_by.clone(),
            message: version.message.clone(),
            changes: serde_json::json!({
                "event": "versionRecorded",
                "checksum": version.checksum,
                "source": version.source,
                "owner": version.owner,
            }),
        }
    }

    /// The row that records `application`, which replaced `previous` in its environment.
    pub fn applied(application: &Application, previous: Option<i64>) -> Self {
        let mut changes = serde_json::json!({
            "event": "applied",
            "environment": application.environment,
            "checksum": application.checksum,
            "previousVersion": previous,
        });
        if let Some(change) = &application.change {
            changes["change"] = change.as_str().into();
        }
        Self {
            config_id: application.config_id.clone(),
            version: Some(application.version),
            actor: application.actor.clone(),
            message: application.message.clone(),
            changes,
        }
    }
}

/// An audit row as the ledger keeps it: with when it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub row: AuditRow,
}

/// An environment's approval floor raised outside an application (a spec that asks for
/// more than the floor held), by `actor`, for the config id `claimant` holds.
#[derive(Clone, Debug, PartialEq)]
pub struct RaisedFloor {
    pub config_id: String,
    pub claimant: Claimant,
    pub floor: Floor,
    pub actor: String,
}

/// A recorded, immutable version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub config_id: String,
    pub version: i64,
    pub owner: String,
    pub snapshot: Snapshot,
    pub checksum: String,
    #[serde(flatten)]
    pub source: Source,
    pub created_by: String,
    /// Everyone whose writes the content holds, as the apiserver authenticated them.
    /// Empty for a version recorded before authors were proven.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    pub created_at: Timestamp,
    pub message: String,
}

impl Version {
    /// `new`, recorded as version `number` at `created_at`.
    pub fn recorded(new: &NewVersion, number: i64, created_at: Timestamp) -> Self {
        Self {
            config_id: new.config_id.clone(),
            version: number,
            owner: new.claimant.entry(),
            snapshot: new.snapshot.clone(),
            checksum: new.checksum.clone(),
            source: new.source.clone(),
            created_by: new.created_by.clone(),
            authors: new.authors.clone(),
            created_at,
            message: new.message.clone(),
        }
    }

    /// Whether the apiserver proved who wrote this content.
    pub fn authors_proven(&self) -> bool {
        !self.authors.is_empty()
    }

    /// Recording `new` returns this version rather than a new one: the same content
    /// from the same source, unless `new` proves its authors and this one does not.
    pub fn records(&self, new: &NewVersion) -> bool {
        self.checksum == new.checksum
            && self.source == new.source
            && (self.authors_proven() || new.authors.is_empty())
    }
}

/// The answer to recording a version: the version, and whether this call created it
/// (false when the same content was already the latest of its source).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub version: Version,
    pub created: bool,
}

/// Which version is live in one environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedState {
    pub config_id: String,
    pub environment: String,
    pub version: i64,
    /// Checksum of the environment's resolved content.
    pub checksum: String,
    pub applied_at: Timestamp,
}

/// A move of one environment to a version, with who asked and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    pub config_id: String,
    /// The ConfigEntry that holds the config id: applying checks its claim.
    pub claimant: Claimant,
    pub environment: String,
    pub version: i64,
    pub checksum: String,
    pub actor: String,
    pub message: String,
    /// The ConfigChange (`namespace/name`) that made it, if one did: its audit rows
    /// and this one belong to the same version.
    pub change: Option<String>,
    /// Refuse (as `Superseded`) when the environment already runs a newer version: two
    /// writers racing never move an environment back. Drift remediation, which
    /// restores what was recorded, does not set it.
    pub forward_only: bool,
    /// The approval floor the environment keeps from now on, in the same transaction.
    pub floor: FloorUpdate,
}

/// What an application does to the environment's approval floor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloorUpdate {
    Keep,
    /// Record this policy (`None`: no approval needed).
    Record(Option<ApprovalPolicy>),
}

/// The approval policy an environment answered to when `version` went live there: a
/// floor that a spec asking for less cannot lower by itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Floor {
    pub environment: String,
    /// `None`: no approval needed.
    pub policy: Option<ApprovalPolicy>,
    pub version: i64,
}

/// An approval workflow (a ConfigChange) as the `approval_workflows` table mirrors it.
/// Syncing one writes an audit row for each step it has not recorded yet: the request,
/// each approval, and the end (rejected, expired, superseded, failed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    /// `namespace/name` of the ConfigChange.
    pub change_id: String,
    pub config_id: String,
    pub environment: String,
    /// The version the change was proposed against; audit rows attach to it until the
    /// change produces a version of its own.
    pub base_version: i64,
    /// What is proposed: the kind (`data`, `patch`, `rollbackTo`, `version`) and its
    /// content. Configuration only: secret values never reach a proposal.
    pub proposal: serde_json::Value,
    pub requested_by: String,
    pub requested_at: Timestamp,
    pub message: String,
    pub approvals: Vec<WorkflowApproval>,
    /// The ConfigChange's phase, lower case.
    pub status: String,
    /// Who ended it and why, for the final phases other than `applied`.
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    /// The entry's environments that auto-approve.
    pub auto_approve_for: Vec<String>,
}

/// One approval of a workflow, and whether the environment's policy counts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowApproval {
    pub approver: String,
    pub comment: Option<String>,
    pub counted: bool,
}

/// A secret's rotation policy and one step of its life (created, adopted, rotated,
/// retired), as `secret_rotation_policies` and the audit trail keep them. Version ids
/// and times only: never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub secret_id: String,
    /// The provider, as the policy names it: `AwsSecretsManager` or `InCluster`.
    pub provider: String,
    /// `namespace/name` of the SecretRotationPolicy.
    pub policy: String,
    pub interval_days: i32,
    pub grace_days: i32,
    pub rotation_function: Option<String>,
    pub notify: Vec<String>,
    pub last_rotated_at: Option<Timestamp>,
    pub next_rotation_at: Option<Timestamp>,
    pub event: String,
    pub current_version: Option<String>,
    pub previous_version: Option<String>,
    pub actor: String,
}

impl Rotation {
    /// The config id of the rotation's audit rows: `secret:<secret id>` for a provider
    /// whose ids are global, `secret:<namespace>/<secret id>` for in-cluster secrets,
    /// whose ids are per namespace.
    pub fn audit_id(&self) -> String {
        match self.policy.split_once('/') {
            Some((namespace, _)) if self.provider == "InCluster" => {
                format!("secret:{namespace}/{}", self.secret_id)
            }
            _ => format!("secret:{}", self.secret_id),
        }
    }
}

/// What a config id's holder may do, and where its projections go: claims, approval
/// floors and projection bindings.
#[async_trait]
pub trait Ownership: Send + Sync {
    /// Checks (and, with `take`, takes or renews) `claimant`'s claim on `config_id`.
    async fn claim(&self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()>;

    /// Who holds a config id, if anyone.
    async fn holder(&self, config_id: &str) -> Result<Option<Claimant>>;

    /// The approval floors recorded for a config id's environments.
    async fn floors(&self, config_id: &str) -> Result<Vec<Floor>>;

    /// Records an environment's approval floor outside an application, with an audit
    /// row.
    async fn record_floor(&self, raised: &RaisedFloor) -> Result<()>;

    /// Binds `target` to `projection` unless it is bound already; returns what it is
    /// bound to now.
    async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection>;

    /// Moves `target`'s binding to `to`, if it is still bound to `from`.
    async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()>;

    /// What `target` is bound to.
    async fn binding(&self, target: &Target) -> Result<Option<Projection>>;

    /// Removes a config id's applied state, with an audit row, if `claimant` holds it.
    /// Versions, the audit trail, the claim and the approval floors stay.
    async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()>;
}

/// Versions and what is live.
///
/// `record` decides version numbers and is idempotent: recording content whose
/// checksum equals the latest version of the same source returns that version instead
/// of making a new one, so a retry after an ambiguous failure never makes two.
#[async_trait]
pub trait History: Send + Sync {
    async fn record(&self, new: &NewVersion) -> Result<Recorded>;

    /// Moves an environment to a version, with its audit row; returns when, as the
    /// ledger recorded it, or `None` when it already was there.
    async fn apply(&self, application: &Application) -> Result<Option<Timestamp>>;

    async fn latest(&self, config_id: &str) -> Result<Option<Version>>;

    async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>>;

    /// Every version of a config id, oldest first.
    async fn versions(&self, config_id: &str) -> Result<Vec<Version>>;

    /// Many versions, by config id and number.
    async fn versions_of(&self, wanted: &[(String, i64)]) -> Result<Vec<Version>>;

    /// The newest version a ConfigChange (`change`: its id) recorded for a config id.
    async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>>;

    /// The applied state per environment.
    async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>>;

    /// Applied states of many config ids.
    async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>>;
}

/// The audit trail beyond versions and applications.
#[async_trait]
pub trait Audit: Send + Sync {
    /// Writes one audit row on its own.
    async fn audit(&self, row: &AuditRow) -> Result<()>;

    /// Keeps a secret's rotation policy row, with the audit row of one step.
    async fn record_rotation(&self, rotation: &Rotation) -> Result<()>;

    /// Mirrors an approval workflow, with an audit row for every step not seen yet.
    /// Returns whether anything was written.
    async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool>;

    /// A config id's audit trail, oldest first.
    async fn trail(&self, config_id: &str) -> Result<Vec<AuditEntry>>;
}

/// The record of every config id: PostgreSQL, the cluster itself (ConfigMaps in the
/// operator's namespace) when there is no database, or memory in unit tests.
pub trait Ledger: Ownership + History + Audit {
    /// Its name, for the backend metrics.
    fn name(&self) -> &'static str;

    /// Whether what it records survives a restart of the operator.
    fn is_durable(&self) -> bool;
}

#[cfg(test)]
mod tests;

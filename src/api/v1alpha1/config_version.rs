//! ConfigVersion: one recorded version of a config, readable through the Kubernetes API
//! with the reader's own RBAC. The operator writes them from its ledger; an admission
//! policy keeps everyone else from changing them.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{Time, preserved_object};
use super::free_form::FreeForm;

/// A recorded version: what it holds, who wrote it, where it is live, and its audit.
/// A record, written whole by the operator in one request: it has no status
/// subresource, and nobody else may write it.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_ and json_path by design"
)]
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "config.summit.io",
    version = "v1alpha1",
    kind = "ConfigVersion",
    namespaced,
    status = "ConfigVersionStatus",
    shortname = "cv",
    category = "summit",
    doc = "A recorded version of a ConfigEntry's configuration, with its audit trail.",
    printcolumn(name = "Config ID", type_ = "string", json_path = ".spec.configId"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".spec.version"),
    printcolumn(name = "Live", type_ = "string", json_path = ".status.liveIn"),
    printcolumn(name = "Author", type_ = "string", json_path = ".spec.createdBy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Message", type_ = "string", json_path = ".spec.message"),
    selectable = ".spec.configEntry",
    selectable = ".spec.configId"
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigVersionSpec {
    /// The config id the version belongs to.
    pub config_id: String,
    /// The ConfigEntry, in this namespace, that recorded it.
    pub config_entry: String,
    /// The version's number, which never repeats within its config id.
    pub version: i64,
    /// SHA-256 of the recorded content.
    pub checksum: String,
    /// The last writer of the content.
    pub created_by: String,
    /// Everyone whose writes the content holds, as the apiserver authenticated them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// When it was recorded.
    pub created_at: Time,
    /// Why: the ConfigChange's message, or the spec edit it came from.
    pub message: String,
    /// The ConfigChange (`namespace/name`) that recorded it; none for a spec edit.
    pub change: Option<String>,
    /// Base data shared by every environment.
    #[schemars(schema_with = "preserved_object")]
    pub data: FreeForm,
    /// Each environment's JSON merge patch over the data.
    #[schemars(schema_with = "preserved_object")]
    pub overrides: FreeForm,
    /// Secret references (never values), shared (`""`) and per environment.
    #[schemars(schema_with = "preserved_object")]
    #[serde(default)]
    pub secrets: Option<FreeForm>,
}

/// Where the version is live, and what happened to it.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigVersionStatus {
    /// The environments this version is live in, comma-separated.
    pub live_in: Option<String>,
    /// Who proposed, approved, rejected and applied it, and when; oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditStep>,
}

/// One step of a version's audit trail. Never a secret value.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditStep {
    /// When it happened.
    pub time: Time,
    /// `versionRecorded`, `requested`, `approved`, `rejected`, `applied`, ...
    pub event: String,
    /// Who: the user the apiserver authenticated, or the operator.
    pub actor: String,
    /// The environment the step concerns, if one.
    pub environment: Option<String>,
    /// The ConfigChange (`namespace/name`) the step belongs to.
    pub change: Option<String>,
    /// Why, in the actor's words or the operator's.
    pub message: Option<String>,
}

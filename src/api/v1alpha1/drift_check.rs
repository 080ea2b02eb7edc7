//! DriftCheck: compares what was recorded with what is actually served.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{Condition, DURATION_PATTERN, ENVIRONMENT_PATTERN, OBJECT_NAME_PATTERN, Time};

/// Periodically compares the recorded applied version of ConfigEntries (expected) with
/// every copy of it (ConfigMaps, Secrets, Consul keys, Postgres applied state), reports
/// what differs and, in `Remediate` mode, restores it.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_ and json_path by design"
)]
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "config.summit.io",
    version = "v1alpha1",
    kind = "DriftCheck",
    namespaced,
    status = "DriftCheckStatus",
    shortname = "dc",
    category = "summit",
    doc = "A periodic comparison of recorded and served configuration.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.remediation"),
    printcolumn(name = "Drifted", type_ = "boolean", json_path = ".status.drifted"),
    printcolumn(name = "Findings", type_ = "integer", json_path = ".status.driftCount"),
    printcolumn(
        name = "Last Check",
        type_ = "date",
        json_path = ".status.lastCheckTime"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.entries) && has(self.selector))").message(
    "set at most one of entries and selector"
))]
#[serde(rename_all = "camelCase")]
pub struct DriftCheckSpec {
    /// ConfigEntries to check, by name in this namespace. With neither `entries` nor
    /// `selector`, every ConfigEntry in the namespace is checked.
    #[schemars(length(min = 1, max = 10000))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub entries: Option<Vec<EntryName>>,

    /// ConfigEntries to check, by label.
    pub selector: Option<LabelSelector>,

    /// Environments to check; every environment when unset.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub environments: Option<Vec<EnvironmentName>>,

    /// Time between checks, e.g. `5m` (the default).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,

    /// Which copies to compare with the recorded version; all of them when unset.
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub sources: Option<Vec<DriftSource>>,

    /// `Report` (the default) changes nothing; `Remediate` re-applies the recorded
    /// version wherever it drifted, and audits it.
    pub remediation: Option<RemediationMode>,
}

/// A ConfigEntry name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct EntryName(
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))] pub String,
);

/// An environment name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct EnvironmentName(
    #[schemars(length(min = 1, max = 50), regex(pattern = ENVIRONMENT_PATTERN))] pub String,
);

/// A place where recorded configuration is served.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DriftSource {
    /// Projected ConfigMaps and Secrets.
    Kubernetes,
    /// Keys under the operator's Consul prefix.
    Consul,
    /// Rows of `config_applied_state`.
    Postgres,
}

/// What a DriftCheck does about drift.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RemediationMode {
    /// Report drift and change nothing.
    #[default]
    Report,
    /// Re-apply the recorded version where it drifted.
    Remediate,
}

/// Observed state of a DriftCheck.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DriftCheckStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,

    /// `Drifted` and `Ready`, in the standard Kubernetes shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// When the last check ran.
    pub last_check_time: Option<Time>,

    /// When the next check is due.
    pub next_check_time: Option<Time>,

    /// Whether any checked copy differs from its recorded version.
    pub drifted: Option<bool>,

    /// ConfigEntries compared in the last check.
    pub entries_checked: Option<i32>,

    /// Drifted copies found in the last check.
    pub drift_count: Option<i32>,

    /// The drifted copies, at most 100; `driftCount` tells when there are more.
    #[schemars(length(max = 100))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report: Vec<DriftFinding>,

    /// The last on-demand request (the `config.summit.io/check` annotation) acted on.
    pub last_handled_request: Option<String>,
}

/// One copy that differs from its recorded version.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftFinding {
    /// The ConfigEntry.
    pub entry: String,
    /// The environment.
    pub environment: String,
    /// Where: `configmap/<ns>/<name>`, `secret/<ns>/<name>`, `consul:<key>` or
    /// `postgres:applied_state`.
    pub location: String,
    /// JSON paths that differ (none for Secrets, which are compared by checksum only).
    #[schemars(length(max = 50))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Checksum of the recorded version.
    pub expected_checksum: String,
    /// Checksum of what is served, absent when the copy is missing.
    pub actual_checksum: Option<String>,
    /// When this drift was first seen.
    pub first_seen: Time,
    /// When it was restored, in `Remediate` mode.
    pub remediated_at: Option<Time>,
}

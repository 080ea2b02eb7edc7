//! ConfigEntry: one configuration, its schema, base data and per-environment overrides.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{
    Condition, ConfigMapKeyReference, ENVIRONMENT_PATTERN, OBJECT_NAME_PATTERN, RestartTarget,
    SecretProvider, Time, preserved_object,
};
use super::free_form::FreeForm;

/// Pattern of a config id: lowercase segments of letters, digits, `.`, `_` and `-`, each
/// starting and ending with a letter or digit, joined by single `/`.
pub const CONFIG_ID_PATTERN: &str =
    "^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$";

/// Path segments a config id may not contain: they name keys of the Consul layout
/// (`{configId}/latest`, `{configId}/versions/{n}`, `{configId}/applied/{environment}`).
pub const RESERVED_CONFIG_ID_SEGMENTS: [&str; 3] = ["latest", "versions", "applied"];

/// A configuration with a schema, base data and per-environment overrides. Every change
/// to its content is recorded as an immutable version and projected into ConfigMaps and
/// Secrets per environment, once the environment's approval policy allows it.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_ and json_path by design"
)]
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "config.summit.io",
    version = "v1alpha1",
    kind = "ConfigEntry",
    namespaced,
    status = "ConfigEntryStatus",
    shortname = "ce",
    category = "summit",
    doc = "A versioned, validated configuration projected per environment.",
    printcolumn(name = "Config", type_ = "string", json_path = ".spec.configId"),
    printcolumn(
        name = "Version",
        type_ = "integer",
        description = "Latest recorded version",
        json_path = ".status.latestVersion"
    ),
    printcolumn(
        name = "Environments",
        type_ = "string",
        description = "Live version per environment",
        json_path = ".status.summary"
    ),
    printcolumn(
        name = "Validated",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Validated\")].status"
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
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.schema) && has(self.schemaRef))").message(
    "set at most one of schema and schemaRef"
))]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntrySpec {
    /// Identity of this configuration in history, Postgres and Consul, e.g.
    /// `team-a/payments/database`. Lowercase segments joined by `/`; immutable. It
    /// belongs to this entry alone, and the operator may require it to start with the
    /// namespace (`--config-id-prefix`).
    #[schemars(length(min = 1, max = 200), regex(pattern = CONFIG_ID_PATTERN))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("configId is immutable: create a new ConfigEntry to use another id"),
        validation = Rule::new("!self.contains('..')").message("configId must not contain '..'"),
        validation = Rule::new("!self.split('/').exists(s, s in ['latest', 'versions', 'applied'])")
            .message("configId segments must not be 'latest', 'versions' or 'applied': they are reserved by the storage layout")
    )]
    pub config_id: String,

    /// What this configuration is for, shown by the CLI.
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Inline JSON Schema (draft 2020-12 unless `$schema` says otherwise) that the
    /// resolved content of every environment must satisfy. At most one of `schema`
    /// and `schemaRef`.
    #[schemars(schema_with = "preserved_object")]
    #[serde(default)]
    pub schema: Option<FreeForm>,

    /// A JSON Schema kept in a ConfigMap key in this namespace, for schemas shared by
    /// several entries. At most one of `schema` and `schemaRef`.
    pub schema_ref: Option<ConfigMapKeyReference>,

    /// Base configuration shared by every environment, as a JSON object.
    #[schemars(schema_with = "preserved_object")]
    pub data: FreeForm,

    /// The environments this configuration is served in, each with its overrides,
    /// approval policy and projection targets.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub environments: Vec<EnvironmentSpec>,

    /// Secret references shared by every environment, by key in the projected Secret.
    /// Only these references are recorded in versions; values are resolved just in time.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretReference>,

    /// What happens to versions in Postgres and keys in Consul when this entry is
    /// deleted: `Retain` (the default) keeps history; `Delete` removes it.
    pub deletion_policy: Option<DeletionPolicy>,
}

/// One environment of a ConfigEntry.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Environment name, e.g. `development`, `staging`, `production`.
    #[schemars(length(min = 1, max = 50), regex(pattern = ENVIRONMENT_PATTERN))]
    pub name: String,

    /// A JSON merge patch (RFC 7386) applied to `data` for this environment: objects
    /// merge, other values replace, and `null` deletes a key.
    #[schemars(schema_with = "preserved_object")]
    #[serde(default)]
    pub overrides: Option<FreeForm>,

    /// Who must approve a change before it goes live here. Without a policy, changes
    /// apply at once.
    pub approval: Option<ApprovalPolicy>,

    /// Keys removed from this environment's content after `overrides` apply, as JSON
    /// Pointers (RFC 6901), e.g. `/legacy` or `/pool/debug` (`~1` stands for `/` and `~0`
    /// for `~` inside a key). Unlike a `null` in `overrides`, which only server-side
    /// apply keeps, a removal survives `kubectl apply`, Helm and Argo CD.
    #[schemars(length(max = 256))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(p, p.startsWith('/') && size(p) > 1 && size(p) <= 1024)")
        .message("every removal is a JSON Pointer to a key, such as /legacy or /pool/debug"))]
    pub remove: Vec<String>,

    /// The ConfigMap this environment's resolved content is projected into. Without
    /// one, the content goes to a ConfigMap named `<entry>-<environment>` as `config.json`.
    pub config_map: Option<ConfigMapTarget>,

    /// The Secret this environment's secret references are resolved into. Without one,
    /// they go to a Secret named `<entry>-<environment>`.
    pub secret: Option<SecretTarget>,

    /// Secret references for this environment only; they replace shared references
    /// with the same key.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretReference>,

    /// Workloads restarted, once per content change, when what they consume changes.
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_targets: Vec<RestartTarget>,

    /// Stage every new version: it goes to canary consumers first, and to the rest only
    /// after the canary stayed healthy for the bake time. A canary that fails returns to
    /// what is live by itself, and the change ends `Failed`.
    pub rollout: Option<RolloutSpec>,
}

/// An environment's staged rollout.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The ConfigMap the canary consumers read, beside the environment's own (same
    /// namespace and format); `<entry>-<environment>-canary` when unset.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub canary_config_map: Option<String>,

    /// The canary consumers: workloads that read the canary ConfigMap. They roll onto
    /// each new version first; their pods must become ready and stay up.
    #[schemars(length(min = 1, max = 16))]
    pub canary_targets: Vec<RestartTarget>,

    /// How long the canary must stay healthy before the version goes to every
    /// consumer, e.g. `2m`.
    #[schemars(regex(pattern = super::common::DURATION_PATTERN))]
    pub bake_time: String,

    /// Container restarts of canary pods tolerated during the bake; 0 when unset.
    #[schemars(range(min = 0, max = 100))]
    pub max_restarts: Option<i32>,

    /// Prometheus queries the canary must keep within bounds through the bake: judged
    /// every few seconds once every canary pod runs the version, and at the end, where
    /// each must have answered.
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(m, self.filter(n, n.name == m.name).size() == 1)").message("metric names must be unique"))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricCheck>,
}

/// A Prometheus query whose value fails a canary when it leaves its bounds.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.failAbove) || has(self.failBelow)").message("a metric needs failAbove, failBelow or both"))]
#[serde(rename_all = "camelCase")]
pub struct MetricCheck {
    /// Names the check in status messages and Events, e.g. `error-rate`.
    #[schemars(length(min = 1, max = 63), regex(pattern = ENVIRONMENT_PATTERN))]
    pub name: String,

    /// A PromQL expression that comes to one number, e.g.
    /// `sum(rate(http_requests_total{code=~"5..",app="api-canary"}[1m])) or vector(0)`.
    /// Asked of the Prometheus the operator is installed with, about the entry's own
    /// namespace only: the operator adds that namespace's label to every selector. A
    /// query that returns nothing, or not a number, has no answer yet.
    #[schemars(length(min = 1, max = 2048))]
    pub query: String,

    /// The canary fails when the value rises above this.
    pub fail_above: Option<serde_json::Number>,

    /// The canary fails when the value falls below this.
    pub fail_below: Option<serde_json::Number>,
}

impl ConfigEntry {
    /// The environment of the spec named `name`.
    pub fn environment(&self, name: &str) -> Option<&EnvironmentSpec> {
        self.spec.environments.iter().find(|e| e.name == name)
    }

    /// The names of the spec's environments, in order: `development, production`.
    pub fn environment_names(&self) -> String {
        let names: Vec<&str> = self
            .spec
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        names.join(", ")
    }
}

impl EnvironmentSpec {
    /// Whether changes go live here without approval: no policy, `autoApprove`, or
    /// zero required approvals.
    pub fn auto_approves(&self) -> bool {
        match &self.approval {
            None => true,
            Some(policy) => {
                policy.auto_approve == Some(true) || policy.required_approvals == Some(0)
            }
        }
    }

    /// Approvals a change needs here (1 unless the policy says otherwise); 0 when the
    /// environment auto-approves.
    pub fn required_approvals(&self) -> i32 {
        if self.auto_approves() {
            return 0;
        }
        self.approval
            .as_ref()
            .and_then(|p| p.required_approvals)
            .unwrap_or(1)
    }
}

/// Approval required before a change goes live in an environment.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new(
    "!(has(self.autoApprove) && self.autoApprove && has(self.requiredApprovals) && self.requiredApprovals > 0)"
).message("autoApprove: true contradicts requiredApprovals > 0; set one of them"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicy {
    /// Apply changes without approval (the seed's `autoApproveFor`).
    pub auto_approve: Option<bool>,

    /// Distinct approvals a change needs before it applies (1 when neither this nor
    /// `autoApprove` is set).
    #[schemars(range(min = 0, max = 10))]
    pub required_approvals: Option<i32>,

    /// Users whose approvals count. Empty: anyone holding the `approve` verb on this
    /// ConfigEntry.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,

    /// Groups whose members' approvals count, in addition to `approvers`.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approver_groups: Vec<String>,

    /// How long a change may wait for approval before it expires, e.g. `72h`.
    #[schemars(regex(pattern = super::common::DURATION_PATTERN))]
    pub pending_expiry: Option<String>,
}

/// A ConfigMap that receives an environment's resolved content.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapTarget {
    /// ConfigMap name; `<entry>-<environment>` when unset.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: Option<String>,

    /// Namespace of the ConfigMap; the entry's own unless the operator allows this one.
    #[schemars(length(min = 1, max = 63), regex(pattern = ENVIRONMENT_PATTERN))]
    pub namespace: Option<String>,

    /// How the content is written: `Json` (`config.json`, the default), `Yaml`
    /// (`config.yaml`) or `Env` (one `KEY=value` entry per leaf, keys upper-cased and
    /// joined with `_`).
    pub format: Option<ConfigFormat>,
}

/// The format of a projected ConfigMap: `Json` (`config.json`), `Yaml`
/// (`config.yaml`), `Env` (one key per leaf), or `Flagd`: feature flags in flagd's
/// flag-definition format (`flags.json`, read by flagd or an in-process OpenFeature
/// flagd provider), checked before anything is recorded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigFormat {
    Json,
    Yaml,
    Env,
    Flagd,
}

/// A Secret that receives an environment's resolved secret references.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTarget {
    /// Secret name; `<entry>-<environment>` when unset.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: Option<String>,

    /// Namespace of the Secret; the entry's own unless the operator allows this one.
    #[schemars(length(min = 1, max = 63), regex(pattern = ENVIRONMENT_PATTERN))]
    pub namespace: Option<String>,
}

/// A reference to a secret value held by a provider. Versions record this reference,
/// never the value.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Which provider holds the secret.
    pub provider: SecretProvider,

    /// The provider's id of the secret: a name or ARN in AWS Secrets Manager, the
    /// name of a SecretRotationPolicy's secret for `InCluster`.
    #[schemars(length(min = 1, max = 2048))]
    pub secret_id: String,

    /// When the secret is a JSON object, the key whose value to use.
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,

    /// Version stage to read, e.g. `AWSCURRENT` (the default) or `AWSPREVIOUS`.
    #[schemars(length(min = 1, max = 256))]
    pub version_stage: Option<String>,

    /// Settings for AWS Secrets Manager. With a `credentialsSecret` (in the entry's
    /// namespace) the reference reaches what those credentials reach; without, the
    /// operator's own credentials read only secret names under the prefix it allows
    /// this namespace (`<namespace>/` unless configured otherwise).
    pub aws: Option<super::AwsSecretsManagerOptions>,
}

/// What deleting a ConfigEntry does to its history outside Kubernetes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep versions in Postgres and keys in Consul.
    #[default]
    Retain,
    /// Remove versions from Postgres and keys from Consul; the audit trail stays.
    Delete,
}

/// Observed state of a ConfigEntry.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntryStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,

    /// `Validated`, `Synced` and `Ready`, in the standard Kubernetes shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The newest version recorded for this config id.
    pub latest_version: Option<i64>,

    /// SHA-256 of the canonical JSON of the newest version's content.
    pub latest_checksum: Option<String>,

    /// One line for `kubectl get`: the live version per environment, e.g.
    /// `development=v3 production=v2 (v3 pending)`.
    pub summary: Option<String>,

    /// State per environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub environments: Vec<EnvironmentStatus>,
}

/// Observed state of one environment of a ConfigEntry.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// Environment name.
    pub name: String,

    /// `Applied`, `PendingApproval`, `Invalid` or `Degraded`.
    pub phase: Option<EnvironmentPhase>,

    /// The version live in this environment.
    pub version: Option<i64>,

    /// Checksum of the live resolved content.
    pub checksum: Option<String>,

    /// When the live version was applied here.
    pub applied_at: Option<Time>,

    /// A version waiting for approval in this environment.
    pub pending_version: Option<i64>,

    /// The ConfigChange that holds the pending approval.
    pub pending_change: Option<String>,

    /// Checksum of the provider versions projected into this environment's Secret:
    /// version ids, never values.
    pub secrets_checksum: Option<String>,

    /// Restart targets whose pods run the live checksum.
    pub consumers_ready: Option<i32>,

    /// Restart targets consuming this environment.
    pub consumers_total: Option<i32>,

    /// Why the environment is not `Applied`, when it is not.
    pub message: Option<String>,
}

/// Where an environment stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EnvironmentPhase {
    /// The newest version for this environment is live.
    Applied,
    /// A newer version waits for approval; the previous one stays live.
    PendingApproval,
    /// The environment's resolved content does not validate; nothing changed.
    Invalid,
    /// The live version could not be fully applied or synced; see the message.
    Degraded,
}

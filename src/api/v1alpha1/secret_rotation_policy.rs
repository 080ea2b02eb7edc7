//! SecretRotationPolicy: when and how one secret is rotated, and where it is projected.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{
    Condition, DURATION_PATTERN, OBJECT_NAME_PATTERN, RestartTarget, SecretProvider, Time,
};

/// Rotates one secret in a provider on a schedule or on demand: a new value is made,
/// projected beside the previous one for the grace period, and the previous one is
/// retired once the grace period has passed and every restart target runs the new value.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_ and json_path by design"
)]
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "config.summit.io",
    version = "v1alpha1",
    kind = "SecretRotationPolicy",
    namespaced,
    status = "SecretRotationPolicyStatus",
    shortname = "srp",
    category = "summit",
    doc = "A rotation schedule and projection for one secret.",
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretId"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.rotationInterval"
    ),
    printcolumn(
        name = "Last Rotation",
        type_ = "date",
        json_path = ".status.lastRotationTime"
    ),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.nextRotationTime"
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
#[x_kube(validation = Rule::new("!(has(self.generator) && has(self.rotationFunction))").message(
    "set at most one of generator and rotationFunction"
))]
#[serde(rename_all = "camelCase")]
pub struct SecretRotationPolicySpec {
    /// Which provider holds the secret.
    #[x_kube(validation = Rule::new("self == oldSelf").message("provider is immutable"))]
    pub provider: SecretProvider,

    /// The provider's id of the secret (a name or ARN in AWS Secrets Manager); immutable.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("secretId is immutable"))]
    pub secret_id: String,

    /// Settings for AWS Secrets Manager; the operator's defaults apply when unset.
    pub aws: Option<AwsSecretsManagerOptions>,

    /// Time between scheduled rotations, e.g. `90d`.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub rotation_interval: String,

    /// How long the previous value stays valid and projected after a rotation
    /// (the seed's `gracePeriod`); `7d` when unset.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub grace_period: Option<String>,

    /// Rotations never happen closer together than this, whatever asks for them;
    /// `1h` when unset.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub minimum_interval: Option<String>,

    /// ARN of the provider's rotation function (the seed's `rotationLambda`), called
    /// instead of the generator.
    #[schemars(length(min = 1, max = 2048))]
    pub rotation_function: Option<String>,

    /// How new values are generated; 32 characters of letters and digits when unset.
    pub generator: Option<GeneratorSpec>,

    /// The Secret, in this namespace, that receives the current and previous values.
    pub target: RotationTarget,

    /// Workloads restarted after a rotation; the previous value is retired only once
    /// they all run the new one.
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_targets: Vec<RestartTarget>,

    /// Who hears about rotations and failures besides Kubernetes Events.
    pub notifications: Option<Notifications>,

    /// Stop scheduled rotations; on-demand rotations still run.
    pub suspend: Option<bool>,
}

/// Settings for AWS Secrets Manager.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretsManagerOptions {
    /// AWS region, e.g. `eu-west-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,

    /// A Secret in this namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`;
    /// the default credential chain when unset.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub credentials_secret: Option<String>,
}

/// How the operator generates a new secret value.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new(
    "!has(self.characterClasses) || self.characterClasses.size() > 0"
).message("characterClasses must name at least one class"))]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSpec {
    /// Number of characters, 8 to 4096; 32 when unset.
    #[schemars(range(min = 8, max = 4096))]
    pub length: Option<i32>,

    /// Which classes of characters to draw from; every listed class appears at least once.
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub character_classes: Option<Vec<CharacterClass>>,

    /// Characters never to use, e.g. ones a consumer cannot quote.
    #[schemars(length(max = 128))]
    pub exclude: Option<String>,
}

/// A class of characters for generated secrets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CharacterClass {
    Lowercase,
    Uppercase,
    Digits,
    Symbols,
}

/// The Secret a rotated value is projected into.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationTarget {
    /// Name of the Secret, in the policy's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,

    /// Key of the current value; `value` when unset.
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,

    /// Key of the previous value during the grace period; `previous` when unset.
    #[schemars(length(min = 1, max = 253))]
    pub previous_key: Option<String>,
}

/// Notifications for one policy.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// An HTTP(S) endpoint that receives a JSON body per rotation and failure (secret
    /// id, versions and times; never a value), retried with backoff.
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^https?://"))]
    pub webhook_url: Option<String>,
}

/// Observed state of a SecretRotationPolicy.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotationPolicyStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,

    /// `Ready`, `Rotating` and `RotationFailed`, in the standard Kubernetes shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// When the secret last rotated.
    pub last_rotation_time: Option<Time>,

    /// When the next scheduled rotation is due; kept here so it survives restarts.
    pub next_rotation_time: Option<Time>,

    /// The provider's id of the current value's version.
    pub current_version: Option<String>,

    /// The provider's id of the previous value's version, while it is still valid.
    pub previous_version: Option<String>,

    /// When the previous value is retired, once every restart target runs the new one.
    pub previous_retires_at: Option<Time>,

    /// Rotations completed.
    pub rotation_count: Option<i64>,

    /// The last on-demand request (the `config.summit.io/rotate` annotation) acted on.
    pub last_handled_request: Option<String>,

    /// Restart targets running the current value.
    pub consumers_ready: Option<i32>,

    /// Restart targets in all.
    pub consumers_total: Option<i32>,
}

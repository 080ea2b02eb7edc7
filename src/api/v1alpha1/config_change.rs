//! ConfigChange: a proposed change to one ConfigEntry in one environment, and its
//! approval workflow.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

use super::common::{Condition, ENVIRONMENT_PATTERN, OBJECT_NAME_PATTERN, Time, preserved_object};
use super::free_form;

/// A proposal to move one environment of a ConfigEntry to new content: full new base
/// `data`, a JSON merge `patch` on the current version, `rollbackTo` an old version, or
/// a recorded `version` of the entry's spec (what a spec edit in an environment that
/// needs approval proposes), or a `split` that moves a feature flag's variant to a
/// growing share of targeting keys, step by step.
/// It goes `Pending → Approved → Applied`, or ends `Rejected`, `Failed`, `Superseded`
/// or `Expired`. The proposal cannot be edited after creation; approvals can only be
/// added.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_ and json_path by design"
)]
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "config.summit.io",
    version = "v1alpha1",
    kind = "ConfigChange",
    namespaced,
    status = "ConfigChangeStatus",
    shortname = "cc",
    category = "summit",
    doc = "A proposed, approvable change to one environment of a ConfigEntry.",
    printcolumn(name = "Entry", type_ = "string", json_path = ".spec.configEntry"),
    printcolumn(
        name = "Environment",
        type_ = "string",
        json_path = ".spec.environment"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Approvals",
        type_ = "string",
        description = "Approvals counted / required",
        json_path = ".status.approvalsSummary"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        description = "Version this change produced",
        json_path = ".status.resultingVersion"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        description = "Where a staged rollout stands: Canary, Split, Promoted, RolledBack",
        json_path = ".status.rollout.step"
    ),
    printcolumn(name = "Requester", type_ = "string", json_path = ".spec.requestedBy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".spec.message"
    )
)]
#[x_kube(
    validation = Rule::new("[has(self.data), has(self.patch), has(self.rollbackTo), has(self.version), has(self.split)].filter(x, x).size() == 1")
        .message("set exactly one of data, patch, rollbackTo, version and split"),
    validation = Rule::new(
        "has(self.data) == has(oldSelf.data) && has(self.patch) == has(oldSelf.patch) && has(self.rollbackTo) == has(oldSelf.rollbackTo) && (!has(self.rollbackTo) || self.rollbackTo == oldSelf.rollbackTo) && has(self.version) == has(oldSelf.version) && (!has(self.version) || self.version == oldSelf.version) && has(self.split) == has(oldSelf.split) && (!has(self.split) || self.split == oldSelf.split) && has(self.baseVersion) == has(oldSelf.baseVersion) && has(self.approvalPolicy) == has(oldSelf.approvalPolicy) && (!has(self.approvalPolicy) || self.approvalPolicy == oldSelf.approvalPolicy)"
    ).message("the proposal (data, patch, rollbackTo, version, split, approvalPolicy) is immutable: create a new ConfigChange instead"),
    validation = Rule::new("!has(oldSelf.approvals) || has(self.approvals)")
        .message("approvals cannot be removed"),
    validation = Rule::new("!has(oldSelf.rejection) || has(self.rejection)")
        .message("a rejection cannot be withdrawn"),
    validation = Rule::new("!has(oldSelf.rolloutDecision) || has(self.rolloutDecision)")
        .message("a rollout decision cannot be withdrawn")
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChangeSpec {
    /// Name of the ConfigEntry, in this namespace, that this change applies to.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("configEntry is immutable"))]
    pub config_entry: String,

    /// The environment this change moves.
    #[schemars(length(min = 1, max = 50), regex(pattern = ENVIRONMENT_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("environment is immutable"))]
    pub environment: String,

    /// Full new base data. Becomes `Superseded` if another version is recorded before
    /// this change applies.
    #[schemars(schema_with = "preserved_object")]
    #[serde(default, deserialize_with = "free_form::option")]
    pub data: Option<Value>,

    /// A JSON merge patch (RFC 7386) on the newest version's base data, re-validated
    /// against the newest version when it applies.
    #[schemars(schema_with = "preserved_object")]
    #[serde(default, deserialize_with = "free_form::option")]
    pub patch: Option<Value>,

    /// Make a new version with the content of this earlier version. History is never
    /// rewritten.
    #[schemars(range(min = 1))]
    pub rollback_to: Option<i64>,

    /// Move the environment to this version recorded from the ConfigEntry's spec, as it
    /// is. `Superseded` once the spec records a newer version.
    #[schemars(range(min = 1))]
    pub version: Option<i64>,

    /// Move a feature flag's variant to a growing share of targeting keys, one step at a
    /// time, with the environment's rollout bake time and failure rules between steps.
    /// Needs a `Flagd` environment that declares a `rollout`.
    pub split: Option<SplitSpec>,

    /// The approval policy the environment keeps once this change applies: its
    /// approval floor, which a ConfigEntry's spec cannot lower by itself. The operator
    /// proposes it when a spec (edited, or deleted and created again) asks for a weaker
    /// policy than the one recorded when the live version went live, so that relaxing a
    /// policy is approved under the policy it relaxes. Unset: the floor stays.
    pub approval_policy: Option<super::ApprovalPolicy>,

    /// The version live in the environment when the change was proposed (the CLI fills
    /// it in). A `data` change whose environment has moved on since is `Superseded`.
    /// When unset, the version live when the operator first sees the change.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("baseVersion is immutable"))]
    pub base_version: Option<i64>,

    /// Why this change is made; recorded in the audit trail.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("message is immutable"))]
    pub message: String,

    /// The user who requested the change. The admission policy requires it to be the
    /// user creating the object; the CLI fills it in.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("requestedBy is immutable"))]
    pub requested_by: String,

    /// Approvals, appended one at a time by the approvers themselves.
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new("self.size() >= oldSelf.size() && oldSelf.all(a, a in self)")
            .message("approvals can only be appended: recorded approvals cannot be removed or changed")
    )]
    pub approvals: Vec<Approval>,

    /// A rejection, which is final.
    #[x_kube(validation = Rule::new("self == oldSelf").message("a recorded rejection cannot be changed"))]
    pub rejection: Option<Rejection>,

    /// A person's decision on the version while it bakes on its environment's canary:
    /// promote it now, or abort (roll it back). Needs what approving needs; final.
    #[x_kube(validation = Rule::new("self == oldSelf").message("a recorded rollout decision cannot be changed"))]
    pub rollout_decision: Option<RolloutDecision>,
}

/// A percentage rollout of one flag: each step records a version whose flag serves
/// `variant` to `steps[i]` percent of targeting keys (a flagd `fractional` split against
/// the flag's default variant), bakes, and moves on; a step that fails puts the flag
/// back as it was before the split.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SplitSpec {
    /// The flag's key in the entry's flag definitions.
    #[schemars(length(min = 1, max = 253))]
    pub flag: String,
    /// The variant that gains the share; not the flag's default variant.
    #[schemars(length(min = 1, max = 253))]
    pub variant: String,
    /// The variant's share at each step, in percent, strictly rising: `[10, 50, 100]`
    /// rolls it out, `[50]` holds an A/B test at half.
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(
        validation = Rule::new("self.all(p, p >= 1 && p <= 100)").message("every step is a percentage from 1 to 100"),
        validation = Rule::new("self.isSorted() && self.all(p, self.filter(q, q == p).size() == 1)").message("steps must rise strictly, e.g. [10, 50, 100]")
    )]
    pub steps: Vec<i32>,
}

/// Promote or abort a version on the canary, by hand.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutDecision {
    /// `Promote` (every consumer gets the version now) or `Abort` (the canary rolls back).
    pub action: RolloutAction,
    /// The deciding user; the admission policy requires it to be the user adding it.
    #[schemars(length(min = 1, max = 253))]
    pub decided_by: String,
    /// Why, for the audit trail.
    #[schemars(length(min = 1, max = 4096))]
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutAction {
    /// Give the version to every consumer now, without waiting out the bake.
    Promote,
    /// Roll the canary back now; the change ends `Failed`.
    Abort,
}

/// One approval of a ConfigChange.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The approving user; the admission policy requires it to be the user adding it.
    #[schemars(length(min = 1, max = 253))]
    pub approver: String,

    /// When the approval was given.
    pub approved_at: Option<Time>,

    /// What the approver checked, or any remark.
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,

    /// Groups of the approver this approval counts through (an environment's
    /// `approverGroups`); the admission policy requires the approver to belong to each.
    #[schemars(length(max = 16))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The rejection of a ConfigChange.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The rejecting user; the admission policy requires it to be the user adding it.
    #[schemars(length(min = 1, max = 253))]
    pub rejected_by: String,

    /// Why the change was rejected.
    #[schemars(length(min = 1, max = 4096))]
    pub reason: String,

    /// When the change was rejected.
    pub rejected_at: Option<Time>,
}

/// Where a ConfigChange stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ChangePhase {
    /// Waiting for approvals.
    Pending,
    /// Approved, about to be applied.
    Approved,
    /// Live as `status.resultingVersion`.
    Applied,
    /// Rejected; final.
    Rejected,
    /// Cannot apply (invalid against the schema, unknown entry or version); final.
    Failed,
    /// Another version was recorded first, and this change replaces the whole data; final.
    Superseded,
    /// Not approved before the environment's `pendingExpiry`; final.
    Expired,
}

/// Observed state of a ConfigChange.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChangeStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,

    /// `Validated` and `Ready`, in the standard Kubernetes shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the change stands.
    pub phase: Option<ChangePhase>,

    /// The version the proposal was made against.
    pub base_version: Option<i64>,

    /// The version this change produced once applied.
    pub resulting_version: Option<i64>,

    /// Approvals that satisfy the environment's policy.
    pub approvals_counted: Option<i32>,

    /// Approvals the environment's policy requires.
    pub approvals_required: Option<i32>,

    /// `counted/required`, for `kubectl get`.
    pub approvals_summary: Option<String>,

    /// Approvals that do not count, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_approvals: Vec<IgnoredApproval>,

    /// Why the proposal cannot apply, one entry per problem, each naming the JSON path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,

    /// When the approvals were complete.
    pub approved_at: Option<Time>,

    /// When the change went live.
    pub applied_at: Option<Time>,

    /// When the change reached a final phase other than `Applied`.
    pub finished_at: Option<Time>,

    /// Where the change stands in its environment's staged rollout, if it has one.
    pub rollout: Option<RolloutStatus>,
}

/// A change's version on the way through its environment's canary, or the step a
/// split has reached.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub step: RolloutStep,
    /// The version on the canary, or live at this step of a split.
    pub version: i64,
    /// For a split: the share, in percent, of targeting keys the variant serves now.
    pub share: Option<i32>,
    /// When the canary consumers (or, for a split, every consumer) were given it.
    pub started_at: Time,
    /// When it moves on (promoted, or the split's next step) if the consumers stay
    /// healthy.
    pub bake_until: Time,
    /// Why it moved on, or what it waits for.
    pub message: Option<String>,
}

/// The steps of a staged rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutStep {
    /// Only the canary consumers have the version; the rest keep what is live.
    Canary,
    /// A split's variant serves `share` percent of targeting keys, and bakes there.
    Split,
    /// The canary stayed healthy through the bake time: every consumer has it (for a
    /// split: its last step baked).
    Promoted,
    /// The canary failed: it returned to what is live, and nothing else changed (for a
    /// split: the flag is back as it was before the split).
    RolledBack,
}

/// An approval that does not count toward the policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredApproval {
    /// The approver.
    pub approver: String,
    /// Why it does not count, e.g. not in the environment's approvers.
    pub reason: String,
}

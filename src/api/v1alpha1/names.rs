//! Every name summit-config writes on objects or reads from them: labels, annotations,
//! condition types, the finalizer and its field manager. Controllers, the CLI and the
//! chart's policies agree on these.

/// The operator's server-side apply field manager, and the reporting controller of
/// its Events.
pub const FIELD_MANAGER: &str = "summit-config";

/// Value of [`LABEL_MANAGED_BY`] on everything the operator projects; the operator
/// watches only objects carrying it.
pub const MANAGED_BY: &str = "summit-config";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The environment a projected ConfigMap holds (an annotation on Secrets).
pub const LABEL_ENVIRONMENT: &str = "config.summit.io/environment";
/// Label that marks a ConfigMap as holding JSON Schemas for `schemaRef`. Only labelled
/// ConfigMaps are watched, so the operator never caches unrelated ConfigMaps.
pub const LABEL_SCHEMA: &str = "config.summit.io/schema";

/// `namespace/name` of the ConfigEntry a projected object belongs to.
pub const ANNOTATION_ENTRY: &str = "config.summit.io/entry";
pub const ANNOTATION_CONFIG_ID: &str = "config.summit.io/config-id";
pub const ANNOTATION_VERSION: &str = "config.summit.io/version";
pub const ANNOTATION_CHECKSUM: &str = "config.summit.io/checksum";
/// The checksum of the provider versions a projected Secret holds: version ids, never
/// values. It also salts the Secret's key checksums.
pub const ANNOTATION_SECRETS_CHECKSUM: &str = "config.summit.io/secrets-checksum";
/// `namespace/name` of the SecretRotationPolicy whose target a Secret is.
pub const ANNOTATION_POLICY: &str = "config.summit.io/policy";
/// The version a rotation target held before the current one, during the grace period.
pub const ANNOTATION_PREVIOUS_VERSION: &str = "config.summit.io/previous-version";

/// Annotation of a ConfigEntry naming the user who last wrote its spec. The chart's
/// admission policies stamp it from the apiserver's own `request.userInfo` and refuse
/// any value a client sets: the author of the versions the spec records, and the
/// requester of the changes it proposes.
pub const ANNOTATION_SPEC_AUTHOR: &str = "config.summit.io/spec-author";

/// Annotation of a ConfigChange the operator proposes naming, one per line, everyone
/// whose writes it carries: none of them approves it. Only the operator sets it, and it
/// never changes.
pub const ANNOTATION_CHANGE_AUTHORS: &str = "config.summit.io/authors";

/// Annotation of a ConfigEntry naming, one per line, everyone who wrote its spec since
/// the operator last recorded it: stamped like [`ANNOTATION_SPEC_AUTHOR`], emptied by
/// the operator once it has recorded them with the version. None of them approves it.
pub const ANNOTATION_SPEC_AUTHORS: &str = "config.summit.io/spec-authors";

/// Annotation of a SecretRotationPolicy asking for a rotation now: a new value asks again.
pub const ANNOTATION_ROTATE: &str = "config.summit.io/rotate";
/// Annotation of a DriftCheck asking for a pass now: a new value asks again.
pub const ANNOTATION_CHECK: &str = "config.summit.io/check";

/// The finalizer that holds a ConfigEntry until its projections are removed.
pub const FINALIZER_CLEANUP: &str = "config.summit.io/cleanup";

/// Condition type: the resource is fully reconciled and serving what it should.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the spec passed every validation the operator applies.
pub const CONDITION_VALIDATED: &str = "Validated";
/// Condition type: every backend holds the recorded state.
pub const CONDITION_SYNCED: &str = "Synced";
/// Condition type of a DriftCheck: a copy differs from what was applied.
pub const CONDITION_DRIFTED: &str = "Drifted";
/// Condition type of a SecretRotationPolicy: a previous value is still valid.
pub const CONDITION_ROTATING: &str = "Rotating";
/// Condition type of a SecretRotationPolicy: the last step failed.
pub const CONDITION_ROTATION_FAILED: &str = "RotationFailed";
/// Condition type (kstatus): the operator works toward what the object asks and is not
/// there yet.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// Condition type (kstatus): the object cannot get where it asks without someone
/// changing it.
pub const CONDITION_STALLED: &str = "Stalled";

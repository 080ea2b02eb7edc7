//! Errors of the reconcile loops.

/// Everything a reconcile or the operator's start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Configuration(String),

    #[error("Kubernetes API request failed: {action}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot encode status")]
    EncodeStatus(#[source] serde_json::Error),

    #[error(transparent)]
    Store(crate::store::Error),

    #[error("cannot add or remove the finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("a watch cache closed; the operator is shutting down")]
    CacheClosed,

    #[error("Consul is behind PostgreSQL; retrying until it catches up")]
    ConsulBehind,

    #[error("a projection could not be applied; see the entry's status")]
    ProjectionFailed,

    #[error(transparent)]
    Secret(crate::secrets::Error),

    #[error("{object} exists and belongs to {holder}; name another target or remove it")]
    NotOwned { object: String, holder: String },

    #[error("{0}; name another target")]
    TargetBound(String),

    #[error(transparent)]
    Render(#[from] crate::core::render::RenderError),

    #[error("version {version} has no content for {environment}")]
    VersionMissing { version: i64, environment: String },

    #[error("ConfigEntry {entry} has no environment {environment} any more")]
    EnvironmentGone { entry: String, environment: String },

    #[error("{environment} moved on from version {version}; its entry projects it now")]
    EnvironmentMoved { environment: String, version: i64 },

    #[error(
        "{kind} namespace {namespace:?} is not allowed; the operator projects into an entry's own namespace and those it is configured to allow"
    )]
    NamespaceNotAllowed {
        kind: &'static str,
        namespace: String,
    },

    #[error(
        "the operator manages Secrets in {managed} only, not in {namespace:?}; a cluster admin adds it to the chart's operator.secretNamespaces"
    )]
    SecretsNotManaged { namespace: String, managed: String },

    #[error("secret {key}: the recorded reference does not parse: {source}")]
    SecretReference {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("secret {key}: {source}")]
    SecretValue {
        key: String,
        #[source]
        source: crate::secrets::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable short label for metrics and Events.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Configuration(_) => "Configuration",
            Error::Kube { .. } => "KubeApi",
            Error::EncodeStatus(_) => "EncodeStatus",
            Error::Store(error) => error.label(),
            Error::ConsulBehind => "ConsulBehind",
            Error::CacheClosed => "CacheClosed",
            Error::Finalizer(_) => "Finalizer",
            Error::ProjectionFailed => "ProjectionFailed",
            Error::Secret(error) => error.label(),
            Error::NotOwned { .. } => "NotOwned",
            Error::TargetBound(_) => "TargetBound",
            Error::Render(_) => "RenderFailed",
            Error::VersionMissing { .. } => "VersionMissing",
            Error::EnvironmentGone { .. } => "EnvironmentGone",
            Error::EnvironmentMoved { .. } => "EnvironmentMoved",
            Error::NamespaceNotAllowed { .. } => "TargetNotAllowed",
            Error::SecretsNotManaged { .. } => "SecretsNotManaged",
            Error::SecretReference { .. } => "InvalidSecretReference",
            Error::SecretValue { source, .. } => source.label(),
        }
    }

    /// Whether retrying later may succeed without anyone changing the object.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::EncodeStatus(_) | Error::TargetBound(_) => false,
            Error::Store(error) => error.is_transient(),
            // A secret deleted upstream or a denied request may be put right outside
            // Kubernetes: keep retrying, with backoff.
            _ => true,
        }
    }

    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

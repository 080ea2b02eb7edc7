//! Errors of the reconcile loops.

use crate::core::Class;

/// Everything a reconcile or the operator's start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    TargetBound(#[from] crate::core::ownership::Refused),

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

/// Whether the apiserver refused a write because the object changed or exists.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl Error {
    /// A stable short label for metrics and Events.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApi",
            Error::EncodeStatus(_) => "EncodeStatus",
            Error::Store(error) => error.label(),
            Error::ConsulBehind => "ConsulBehind",
            Error::CacheClosed => "CacheClosed",
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

    /// What the failure means for the next attempt.
    pub fn class(&self) -> Class {
        match self {
            Error::Kube { source, .. } if is_conflict(source) => Class::Conflict,
            Error::Kube { .. }
            | Error::CacheClosed
            | Error::ConsulBehind
            | Error::ProjectionFailed => Class::Transient,
            Error::Store(error) => error.class(),
            // A secret deleted upstream or a denied request may be put right outside
            // Kubernetes, where nobody tells the operator: retried with backoff.
            Error::Secret(error) | Error::SecretValue { source: error, .. } => {
                match error.class() {
                    Class::Invalid => Class::Conflict,
                    class => class,
                }
            }
            // Someone else's object where a projection goes: they may remove it.
            Error::NotOwned { .. } | Error::EnvironmentMoved { .. } => Class::Conflict,
            Error::EncodeStatus(_)
            | Error::TargetBound(_)
            | Error::Render(_)
            | Error::VersionMissing { .. }
            | Error::EnvironmentGone { .. }
            | Error::NamespaceNotAllowed { .. }
            | Error::SecretsNotManaged { .. }
            | Error::SecretReference { .. } => Class::Invalid,
        }
    }

    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{core::ownership::Refused, store};

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn each_error_says_what_the_next_attempt_should_do() {
        let cases = [
            (Error::kube("apply")(api(409)), Class::Conflict),
            (Error::kube("apply")(api(500)), Class::Transient),
            (
                Error::Store(store::Error::Superseded {
                    config_id: "x".into(),
                    based_on: 1,
                    latest: 2,
                }),
                Class::Conflict,
            ),
            (
                Error::Store(store::Error::Unclaimed {
                    config_id: "x".into(),
                    entry: "ns/x".into(),
                }),
                Class::Transient,
            ),
            (
                Error::TargetBound(Refused::BoundToConfiguration {
                    target: crate::core::ownership::Target {
                        kind: crate::core::ownership::TargetKind::ConfigMap,
                        namespace: "ns".into(),
                        name: "x".into(),
                    },
                    wanted: "production".into(),
                }),
                Class::Invalid,
            ),
            (
                Error::Secret(crate::secrets::Error::NotFound {
                    provider: "AWS Secrets Manager",
                    secret_id: "db".into(),
                }),
                Class::Conflict,
            ),
            (
                Error::VersionMissing {
                    version: 3,
                    environment: "production".into(),
                },
                Class::Invalid,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error}");
        }
    }
}

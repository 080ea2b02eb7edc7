//! Secret providers: where secret values live and how a rotation moves them. AWS
//! Secrets Manager and an in-cluster provider (values the operator generates and keeps
//! in Kubernetes Secrets it owns) share one trait, shaped after Secrets Manager's
//! version stages so that GCP Secret Manager or Azure Key Vault can follow it.
//!
//! Values travel as [`SecretString`]: they never print, in `Debug` or anywhere else,
//! and they reach nothing but the provider and the projected Secret.

mod aws;
mod generate;
mod in_cluster;

use std::future::Future;

use crate::core::Class;

pub use secrecy::{ExposeSecret, SecretString};

pub use aws::{AwsProvider, AwsSettings};
pub use generate::{GeneratorError, generate};
pub use in_cluster::InClusterProvider;

/// The stage of the value consumers should use.
pub const CURRENT: &str = "AWSCURRENT";
/// The stage of the value a rotation replaced, valid through the grace period.
pub const PREVIOUS: &str = "AWSPREVIOUS";
/// The stage of a value created by a rotation that has not been promoted yet.
pub const PENDING: &str = "AWSPENDING";

/// One version of a secret.
pub struct SecretValue {
    pub version_id: String,
    pub value: SecretString,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("version_id", &self.version_id)
            .finish_non_exhaustive()
    }
}

/// Which version to read.
#[derive(Clone, Copy, Debug)]
pub enum Selector<'a> {
    Stage(&'a str),
    Version(&'a str),
}

/// What can go wrong with a provider. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{provider} throttled {action}; retrying later")]
    Throttled {
        provider: &'static str,
        action: String,
    },
    #[error("{provider} is unreachable: {action} failed: {detail}")]
    Unavailable {
        provider: &'static str,
        action: String,
        detail: String,
    },
    #[error("secret {secret_id:?} does not exist in {provider} (deleted upstream?)")]
    NotFound {
        provider: &'static str,
        secret_id: String,
    },
    #[error("{provider} denied {action}: {detail}")]
    Denied {
        provider: &'static str,
        action: String,
        detail: String,
    },
    #[error("{provider} refused {action}: {detail}")]
    Refused {
        provider: &'static str,
        action: String,
        detail: String,
    },
    #[error("secret {secret_id:?} in {provider} holds {what}")]
    Unusable {
        provider: &'static str,
        secret_id: String,
        what: String,
    },
    #[error("secret {secret_id:?} is a JSON object without the key {key:?}")]
    KeyMissing { secret_id: String, key: String },
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    #[error("cannot read the credentials Secret {name}: {detail}")]
    Credentials { name: String, detail: String },
    #[error(
        "secret {secret_id:?} is outside {allowed:?}, the names the operator's own credentials may reach from this namespace; name a secret under it (by name, not ARN), or reference credentials of your own (aws.credentialsSecret)"
    )]
    NotAllowed { secret_id: String, allowed: String },
    #[error("the target Secret {secret} belongs to {holder}; it is not written")]
    TargetTaken { secret: String, holder: String },
}

impl Error {
    /// A stable short label for conditions, Events and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Throttled { .. } => "ProviderThrottled",
            Error::Unavailable { .. } => "ProviderUnavailable",
            Error::NotFound { .. } => "SecretNotFound",
            Error::Denied { .. } | Error::Credentials { .. } => "AccessDenied",
            Error::Refused { .. } => "ProviderRefused",
            Error::Unusable { .. } | Error::KeyMissing { .. } => "UnusableSecret",
            Error::Generator(_) => "InvalidGenerator",
            Error::NotAllowed { .. } => "SecretNotAllowed",
            Error::TargetTaken { .. } => "TargetNotOwned",
        }
    }

    /// What the failure means for the next attempt. Only a provider that did not
    /// answer is transient; a secret missing upstream or a denied request may be put
    /// right outside Kubernetes, where nobody tells the operator (the reconcile loops
    /// retry those too, with backoff).
    pub fn class(&self) -> Class {
        match self {
            Error::Throttled { .. } | Error::Unavailable { .. } => Class::Transient,
            Error::TargetTaken { .. } => Class::Conflict,
            Error::NotFound { .. }
            | Error::Denied { .. }
            | Error::Credentials { .. }
            | Error::Refused { .. }
            | Error::Unusable { .. }
            | Error::KeyMissing { .. }
            | Error::Generator(_)
            | Error::NotAllowed { .. } => Class::Invalid,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where secret values live, and the steps of a rotation. Every step is idempotent:
/// a step repeated after a crash changes nothing more.
pub trait SecretProvider: Send + Sync {
    /// The value at a stage or version.
    fn read(
        &self,
        secret_id: &str,
        at: Selector<'_>,
    ) -> impl Future<Output = Result<SecretValue>> + Send;

    /// Creates the secret with `value` as its current version unless it exists;
    /// returns whether it created it.
    fn create(
        &self,
        secret_id: &str,
        value: &SecretString,
        token: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Adds `value` as a new version in the pending stage and returns its id. The same
    /// `token` always names the same version, so a retry never makes a second one.
    fn stage(
        &self,
        secret_id: &str,
        value: &SecretString,
        token: &str,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Makes `version_id` current; the version it replaces becomes previous.
    fn promote(&self, secret_id: &str, version_id: &str)
    -> impl Future<Output = Result<()>> + Send;

    /// Takes the previous stage away from `version_id`, once nothing uses it.
    fn retire(&self, secret_id: &str, version_id: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The provider a policy or reference names, ready to use.
pub enum Provider {
    Aws(AwsProvider),
    InCluster(Box<InClusterProvider>),
}

impl SecretProvider for Provider {
    async fn read(&self, secret_id: &str, at: Selector<'_>) -> Result<SecretValue> {
        match self {
            Provider::Aws(p) => p.read(secret_id, at).await,
            Provider::InCluster(p) => p.read(secret_id, at).await,
        }
    }

    async fn create(&self, secret_id: &str, value: &SecretString, token: &str) -> Result<bool> {
        match self {
            Provider::Aws(p) => p.create(secret_id, value, token).await,
            Provider::InCluster(p) => p.create(secret_id, value, token).await,
        }
    }

    async fn stage(&self, secret_id: &str, value: &SecretString, token: &str) -> Result<String> {
        match self {
            Provider::Aws(p) => p.stage(secret_id, value, token).await,
            Provider::InCluster(p) => p.stage(secret_id, value, token).await,
        }
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<()> {
        match self {
            Provider::Aws(p) => p.promote(secret_id, version_id).await,
            Provider::InCluster(p) => p.promote(secret_id, version_id).await,
        }
    }

    async fn retire(&self, secret_id: &str, version_id: &str) -> Result<()> {
        match self {
            Provider::Aws(p) => p.retire(secret_id, version_id).await,
            Provider::InCluster(p) => p.retire(secret_id, version_id).await,
        }
    }
}

/// Picks `key` out of a value that holds a JSON object, or the whole value.
pub fn select_key(secret_id: &str, value: SecretString, key: Option<&str>) -> Result<SecretString> {
    let Some(key) = key else {
        return Ok(value);
    };
    let parsed: serde_json::Value =
        serde_json::from_str(value.expose_secret()).map_err(|_| Error::Unusable {
            provider: "the provider",
            secret_id: secret_id.to_owned(),
            what: format!("no JSON object, so it has no key {key:?}"),
        })?;
    match parsed.get(key) {
        Some(serde_json::Value::String(text)) => Ok(SecretString::from(text.clone())),
        Some(other) => Ok(SecretString::from(other.to_string())),
        None => Err(Error::KeyMissing {
            secret_id: secret_id.to_owned(),
            key: key.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_picked_out_of_a_json_secret() {
        let value = SecretString::from(r#"{"user":"app","password":"s3cret","port":5432}"#);
        let picked = select_key("db", value, Some("password")).unwrap();
        assert_eq!(picked.expose_secret(), "s3cret");
        let value = SecretString::from(r#"{"port":5432}"#);
        assert_eq!(
            select_key("db", value, Some("port"))
                .unwrap()
                .expose_secret(),
            "5432"
        );
        let missing = select_key("db", SecretString::from("{}"), Some("password")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "secret \"db\" is a JSON object without the key \"password\""
        );
        let plain = select_key("db", SecretString::from("plain"), Some("password")).unwrap_err();
        assert!(!plain.to_string().contains("plain"), "{plain}");
    }

    #[test]
    fn values_never_print() {
        let value = SecretValue {
            version_id: "v1".into(),
            value: SecretString::from("hunter2"),
        };
        assert!(!format!("{value:?}").contains("hunter2"));
    }
}

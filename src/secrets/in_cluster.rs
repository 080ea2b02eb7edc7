//! The in-cluster provider: values the operator generates, kept versioned in one
//! Kubernetes Secret per secret id (`summit-config-store-<id>`) in the namespace of the
//! policy that owns it. Each data key is a version; an annotation maps the stages
//! (current, previous, pending) to versions, as Secrets Manager's labels do.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use secrecy::{ExposeSecret, SecretString};

use super::{CURRENT, Error, PENDING, PREVIOUS, Result, SecretProvider, SecretValue, Selector};
use crate::api::v1alpha1::{LABEL_MANAGED_BY, MANAGED_BY};

const PROVIDER: &str = "the in-cluster store";

/// The annotation holding `{stage: version}` as JSON.
pub const STAGES_ANNOTATION: &str = "config.summit.io/stages";

/// Secrets in one namespace.
#[derive(Clone)]
pub struct InClusterProvider {
    api: Api<Secret>,
    namespace: String,
}

impl InClusterProvider {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// The Secret that keeps `secret_id`'s versions.
    pub fn store_name(secret_id: &str) -> String {
        format!("summit-config-store-{secret_id}")
    }

    fn failed(&self, action: &str, secret_id: &str) -> impl FnOnce(kube::Error) -> Error {
        let action = format!(
            "{action} {}/{}",
            self.namespace,
            Self::store_name(secret_id)
        );
        let secret_id = secret_id.to_owned();
        move |error| match error {
            kube::Error::Api(status) if status.code == 404 => Error::NotFound {
                provider: PROVIDER,
                secret_id,
            },
            kube::Error::Api(status) if status.code == 403 => Error::Denied {
                provider: PROVIDER,
                action,
                detail: status.message,
            },
            kube::Error::Api(status) if status.code == 429 => Error::Throttled {
                provider: PROVIDER,
                action,
            },
            kube::Error::Api(status) => Error::Refused {
                provider: PROVIDER,
                action,
                detail: status.message,
            },
            other => Error::Unavailable {
                provider: PROVIDER,
                action,
                detail: other.to_string(),
            },
        }
    }

    async fn load(&self, secret_id: &str) -> Result<Option<Secret>> {
        self.api
            .get_opt(&Self::store_name(secret_id))
            .await
            .map_err(self.failed("read", secret_id))
    }

    /// Changes the store under its resourceVersion, reading it again on a conflict.
    async fn update(
        &self,
        secret_id: &str,
        mut change: impl FnMut(&mut Secret) -> Result<bool>,
    ) -> Result<()> {
        for _ in 0..5 {
            let mut store = self.load(secret_id).await?.ok_or_else(|| Error::NotFound {
                provider: PROVIDER,
                secret_id: secret_id.to_owned(),
            })?;
            if !change(&mut store)? {
                return Ok(());
            }
            match self
                .api
                .replace(&Self::store_name(secret_id), &PostParams::default(), &store)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(self.failed("update", secret_id)(error)),
            }
        }
        Err(Error::Refused {
            provider: PROVIDER,
            action: format!("update {}", Self::store_name(secret_id)),
            detail: "it kept changing underneath".into(),
        })
    }
}

fn stages(store: &Secret) -> BTreeMap<String, String> {
    store
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STAGES_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

fn set_stages(store: &mut Secret, stages: &BTreeMap<String, String>) {
    let text = serde_json::to_string(stages).unwrap_or_default();
    store
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(STAGES_ANNOTATION.to_owned(), text);
}

/// A version id for a token: the token with anything a data key cannot hold replaced.
fn version_id(token: &str) -> String {
    token
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl SecretProvider for InClusterProvider {
    async fn read(&self, secret_id: &str, at: Selector<'_>) -> Result<SecretValue> {
        let store = self.load(secret_id).await?.ok_or_else(|| Error::NotFound {
            provider: PROVIDER,
            secret_id: secret_id.to_owned(),
        })?;
        let version = match at {
            Selector::Version(version) => version.to_owned(),
            Selector::Stage(stage) => {
                stages(&store)
                    .get(stage)
                    .cloned()
                    .ok_or_else(|| Error::Unusable {
                        provider: PROVIDER,
                        secret_id: secret_id.to_owned(),
                        what: format!("no version in stage {stage}"),
                    })?
            }
        };
        let bytes = store
            .data
            .as_ref()
            .and_then(|d| d.get(&version))
            .ok_or_else(|| Error::Unusable {
                provider: PROVIDER,
                secret_id: secret_id.to_owned(),
                what: format!("no version {version}"),
            })?;
        let value = String::from_utf8(bytes.0.clone()).map_err(|_| Error::Unusable {
            provider: PROVIDER,
            secret_id: secret_id.to_owned(),
            what: "a value that is not UTF-8".into(),
        })?;
        Ok(SecretValue {
            version_id: version,
            value: SecretString::from(value),
        })
    }

    async fn create(&self, secret_id: &str, value: &SecretString, token: &str) -> Result<bool> {
        if self.load(secret_id).await?.is_some() {
            return Ok(false);
        }
        let version = version_id(token);
        let mut store = Secret {
            metadata: ObjectMeta {
                name: Some(Self::store_name(secret_id)),
                labels: Some(BTreeMap::from([(
                    LABEL_MANAGED_BY.to_owned(),
                    MANAGED_BY.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                version.clone(),
                ByteString(value.expose_secret().as_bytes().to_vec()),
            )])),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        set_stages(&mut store, &BTreeMap::from([(CURRENT.to_owned(), version)]));
        match self.api.create(&PostParams::default(), &store).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(self.failed("create", secret_id)(error)),
        }
    }

    async fn stage(&self, secret_id: &str, value: &SecretString, token: &str) -> Result<String> {
        let version = version_id(token);
        self.update(secret_id, |store| {
            let data = store.data.get_or_insert_with(BTreeMap::new);
            if data.contains_key(&version) {
                return Ok(false);
            }
            data.insert(
                version.clone(),
                ByteString(value.expose_secret().as_bytes().to_vec()),
            );
            let mut stages = stages(store);
            stages.insert(PENDING.to_owned(), version.clone());
            set_stages(store, &stages);
            Ok(true)
        })
        .await?;
        Ok(version)
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<()> {
        self.update(secret_id, |store| {
            let mut stages = stages(store);
            if stages.get(CURRENT).map(String::as_str) == Some(version_id) {
                return Ok(false);
            }
            if let Some(current) = stages.remove(CURRENT) {
                stages.insert(PREVIOUS.to_owned(), current);
            }
            stages.insert(CURRENT.to_owned(), version_id.to_owned());
            stages.remove(PENDING);
            set_stages(store, &stages);
            Ok(true)
        })
        .await
    }

    async fn retire(&self, secret_id: &str, version_id: &str) -> Result<()> {
        self.update(secret_id, |store| {
            let mut stages = stages(store);
            let in_use = stages.values().any(|v| v == version_id)
                && stages.get(PREVIOUS).map(String::as_str) != Some(version_id);
            let mut changed = false;
            if stages.get(PREVIOUS).map(String::as_str) == Some(version_id) {
                stages.remove(PREVIOUS);
                set_stages(store, &stages);
                changed = true;
            }
            // A retired value is gone for good: the store keeps only what is in a stage.
            if !in_use && let Some(data) = store.data.as_mut() {
                changed |= data.remove(version_id).is_some();
            }
            Ok(changed)
        })
        .await
    }
}

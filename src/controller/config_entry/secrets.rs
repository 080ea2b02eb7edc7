//! Secret references of an environment, resolved just in time and projected into its
//! Secret. Versions, PostgreSQL and Consul hold the references only; the Secret holds
//! the values; status holds a checksum of the provider versions, so the Secret is
//! written only when a provider's version changed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Map, Value, json};

use crate::{
    api::v1alpha1::{
        ConfigEntry, EnvironmentSpec, SecretProvider as ProviderKind, SecretReference,
    },
    controller::{Context, FIELD_MANAGER},
    project::{ANNOTATION_ENTRY, ProjectedSecret, desired_secret},
    resolve::checksum,
    secrets::{self, CURRENT, InClusterProvider, Provider, SecretProvider, Selector, select_key},
};

/// Where an environment's Secret goes: its target, or `<entry>-<environment>` in the
/// entry's namespace.
pub fn secret_target(entry: &ConfigEntry, environment: &EnvironmentSpec) -> (String, String) {
    let target = environment.secret.as_ref();
    super::pipeline::placed(
        entry,
        environment,
        target.and_then(|t| t.namespace.as_deref()),
        target.and_then(|t| t.name.as_deref()),
    )
}

/// Resolves `refs` and, when the provider versions differ from `projected` (the
/// checksum status recorded), writes the environment's Secret. Returns the checksum of
/// the versions now projected, or why the references could not be resolved; the
/// Secret keeps its last good content on failure.
pub async fn project_secrets(
    ctx: &Context,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    version: i64,
    refs: &Map<String, Value>,
    projected: Option<&str>,
) -> Result<String, String> {
    let (namespace, name) = secret_target(entry, environment);
    let own = entry.namespace().unwrap_or_default();
    if namespace != own && !ctx.allowed_namespaces.contains(&namespace) {
        return Err(format!(
            "Secret namespace {namespace:?} is not allowed; the operator projects into an entry's own namespace and those it is configured to allow"
        ));
    }
    let mut values = BTreeMap::new();
    let mut versions = Vec::new();
    for (key, reference) in refs {
        let reference: SecretReference =
            serde_json::from_value(reference.clone()).map_err(|error| {
                format!("secret {key}: the recorded reference does not parse: {error}")
            })?;
        let provider = provider_for(ctx, &own, reference.provider)
            .await
            .map_err(|error| format!("secret {key}: {error}"))?;
        let stage = reference.version_stage.as_deref().unwrap_or(CURRENT);
        let found = provider
            .read(&reference.secret_id, Selector::Stage(stage))
            .await
            .map_err(|error| format!("secret {key}: {error}"))?;
        let value = select_key(&reference.secret_id, found.value, reference.key.as_deref())
            .map_err(|error| format!("secret {key}: {error}"))?;
        versions.push(json!({
            "key": key,
            "provider": reference.provider,
            "secretId": reference.secret_id,
            "field": reference.key,
            "stage": stage,
            "versionId": found.version_id,
        }));
        values.insert(key.clone(), value);
    }
    // The target is part of it: a renamed or moved Secret is written anew.
    let sum = checksum(&json!({"target": [&namespace, &name], "versions": versions}));
    if projected == Some(sum.as_str()) {
        return Ok(sum);
    }
    let secret = desired_secret(
        entry,
        &ProjectedSecret {
            namespace: namespace.clone(),
            name: name.clone(),
            data: values,
            annotations: BTreeMap::from([
                (
                    ANNOTATION_ENTRY.to_owned(),
                    format!("{own}/{}", entry.name_any()),
                ),
                (
                    "config.summit.io/config-id".to_owned(),
                    entry.spec.config_id.clone(),
                ),
                (
                    "config.summit.io/environment".to_owned(),
                    environment.name.clone(),
                ),
                ("config.summit.io/version".to_owned(), version.to_string()),
                ("config.summit.io/secrets-checksum".to_owned(), sum.clone()),
            ]),
        },
    );
    Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|error| format!("cannot apply Secret {namespace}/{name}: {error}"))?;
    ctx.count_write(super::KIND, "secret");
    tracing::info!(secret = %format!("{namespace}/{name}"), version, "secret references projected");
    Ok(sum)
}

async fn provider_for(
    ctx: &Context,
    namespace: &str,
    kind: ProviderKind,
) -> Result<Provider, secrets::Error> {
    Ok(match kind {
        ProviderKind::AwsSecretsManager => {
            Provider::Aws(ctx.aws_provider(namespace, None, None).await?)
        }
        ProviderKind::InCluster => Provider::InCluster(Box::new(InClusterProvider::new(
            ctx.client.clone(),
            namespace,
        ))),
    })
}

/// The value restart targets carry for an environment: the content's checksum, mixed
/// with the secret versions' when it has secrets.
pub fn consumed_checksum(content: &str, secrets: Option<&str>) -> String {
    match secrets {
        None => content.to_owned(),
        Some(secrets) => checksum(&json!([content, secrets])),
    }
}

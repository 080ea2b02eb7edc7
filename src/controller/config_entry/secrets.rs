//! Secret references of an environment, resolved just in time and projected into its
//! Secret. Versions, PostgreSQL and Consul hold the references only; the Secret holds
//! the values; status holds checksums of the provider versions and of each key, and the
//! Secret cache holds the same key checksums, so the Secret is written only when it
//! would change.

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
    controller::{
        Context,
        managed_secrets::{ManagedSecrets, cached_checksums},
        targets::{check_binding, foreign_holder},
    },
    core::render::{ProjectedSecret, desired_secret, foreign_keys, key_checksums},
    core::resolve::checksum,
    core::{
        approval::Requirements,
        ownership::{Claimant, Projection, Target, TargetKind},
    },
    secrets::{
        self, CURRENT, ExposeSecret, InClusterProvider, Provider, SecretProvider, Selector,
        select_key,
    },
};

use crate::api::v1alpha1::{
    ANNOTATION_CONFIG_ID, ANNOTATION_ENTRY, ANNOTATION_SECRETS_CHECKSUM, ANNOTATION_VERSION,
    FIELD_MANAGER, LABEL_ENVIRONMENT,
};
use crate::core::entry::{secret_target, status::SecretsOutcome};

/// Resolves `refs` and makes the environment's Secret hold them, comparing with the
/// Secret cache first so that unchanged values cost no write. A hand edit of the
/// Secret is put back, unless a DriftCheck covers it (then it is the check's to report,
/// or to remediate with `restoring`). An environment that needs approval (`guard`: what
/// it needs) binds the Secret to itself. Returns the checksums now projected, or why
/// the references could not be resolved; the Secret keeps its last good content on
/// failure.
pub async fn project_secrets(
    ctx: &Context,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    version: i64,
    refs: &Map<String, Value>,
    restoring: bool,
    guard: Option<&Requirements>,
) -> Result<SecretsOutcome, String> {
    let (namespace, name) = secret_target(entry, environment);
    let own = entry.namespace().unwrap_or_default();
    if namespace != own && !ctx.allowed_namespaces.contains(&namespace) {
        return Err(format!(
            "Secret namespace {namespace:?} is not allowed; the operator projects into an entry's own namespace and those it is configured to allow"
        ));
    }
    if !ctx.managed_secrets.covers(&namespace) {
        return Err(format!(
            "the operator manages Secrets in {} only, not in {namespace:?}; a cluster admin adds it to the chart's operator.secretNamespaces",
            ctx.managed_secrets.describe()
        ));
    }
    let mut values = BTreeMap::new();
    let mut versions = Vec::new();
    for (key, reference) in refs {
        let reference: SecretReference =
            serde_json::from_value(reference.clone()).map_err(|error| {
                format!("secret {key}: the recorded reference does not parse: {error}")
            })?;
        let provider = provider_for(ctx, &own, &reference)
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
    let outcome = SecretsOutcome {
        checksum: sum.clone(),
    };
    let keys = key_checksums(
        &sum,
        values
            .iter()
            .map(|(key, value)| (key.as_str(), value.expose_secret().as_bytes())),
    );
    let annotations = BTreeMap::from([
        (
            ANNOTATION_ENTRY.to_owned(),
            format!("{own}/{}", entry.name_any()),
        ),
        (
            ANNOTATION_CONFIG_ID.to_owned(),
            entry.spec.config_id.clone(),
        ),
        (LABEL_ENVIRONMENT.to_owned(), environment.name.clone()),
        (ANNOTATION_VERSION.to_owned(), version.to_string()),
        (ANNOTATION_SECRETS_CHECKSUM.to_owned(), sum.clone()),
    ]);
    let owner = &annotations[ANNOTATION_ENTRY];
    let wanted = Projection {
        config_id: entry.spec.config_id.clone(),
        environment: environment.name.clone(),
    };
    let live = match ctx.managed_secrets.get(&namespace, &name) {
        Some(live) => Some(live),
        // Not in the cache: new, deleted, or somebody else's.
        None => ManagedSecrets::fetch(&ctx.client, &namespace, &name)
            .await
            .map_err(|error| format!("cannot read Secret {namespace}/{name}: {error}"))?,
    };
    if let Some(live) = &live
        && let Some(holder) = foreign_holder(&live.metadata, owner, &wanted)
    {
        return Err(format!(
            "Secret {namespace}/{name} exists and belongs to {holder}; name another target (secret.name) or remove that Secret"
        ));
    }
    let target = Target {
        kind: TargetKind::Secret,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let guard = guard.filter(|_| !restoring);
    // A protected environment binds its Secret even when nothing is written (once:
    // bindings are cached); another checks before it writes.
    if guard.is_some() {
        check_binding(ctx, &Claimant::of(entry), &target, &wanted, guard)
            .await
            .map_err(|error| error.to_string())?;
    }
    // What the Secret should hold, for DriftChecks: whether it is written now or not.
    ctx.expect_secret(&namespace, &name, keys.clone());
    if let Some(live) = &live {
        let same_versions = live.annotations().get(ANNOTATION_SECRETS_CHECKSUM) == Some(&sum);
        let stamped = annotations
            .iter()
            .all(|(key, value)| live.annotations().get(key) == Some(value));
        if stamped && cached_checksums(live) == keys {
            return Ok(outcome);
        }
        if same_versions && !restoring && ctx.drift_checked(entry, &environment.name) {
            return Ok(outcome);
        }
    }
    if guard.is_none() {
        check_binding(ctx, &Claimant::of(entry), &target, &wanted, None)
            .await
            .map_err(|error| error.to_string())?;
    }
    let foreign = foreign_keys(
        live.iter()
            .flat_map(|l| l.data.iter().flatten().map(|(k, _)| k)),
        &values,
    );
    let secret = desired_secret(
        entry,
        &ProjectedSecret {
            namespace: namespace.clone(),
            name: name.clone(),
            data: values,
            annotations,
        },
    );
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|error| format!("cannot apply Secret {namespace}/{name}: {error}"))?;
    ctx.count_write(super::KIND, "secret");
    if let Some(removal) = foreign {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(removal))
            .await
            .map_err(|error| {
                format!("cannot remove foreign keys of Secret {namespace}/{name}: {error}")
            })?;
        ctx.count_write(super::KIND, "secret");
    }
    tracing::info!(secret = %format!("{namespace}/{name}"), version, "secret references projected");
    Ok(outcome)
}

async fn provider_for(
    ctx: &Context,
    namespace: &str,
    reference: &SecretReference,
) -> Result<Provider, secrets::Error> {
    Ok(match reference.provider {
        ProviderKind::AwsSecretsManager => Provider::Aws(
            ctx.aws_provider(namespace, &reference.secret_id, reference.aws.as_ref())
                .await?,
        ),
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

//! Secret references of an environment, resolved just in time and projected into its
//! Secret. Versions, PostgreSQL and Consul hold the references only; the Secret holds
//! the values; status holds checksums of the provider versions and of each key, and the
//! Secret cache holds the same key checksums, so the Secret is written only when it
//! would change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Map, Value, json};

use crate::{
    api::v1alpha1::{
        ConfigEntry, EnvironmentSpec, SecretProvider as ProviderKind, SecretReference,
    },
    controller::{
        Context, Error, Result,
        managed_secrets::{ManagedSecrets, cached_checksums},
        secret_reads::ReadKey,
        targets as target,
    },
    core::render::{ProjectedSecret, desired_secret, foreign_keys, key_checksums},
    core::resolve::checksum,
    core::{
        approval::Requirements,
        ownership::{Claimant, Projection, Target, TargetKind},
    },
    secrets::{
        self, CURRENT, ExposeSecret, InClusterProvider, Provider, SecretProvider, SecretString,
        Selector, select_key,
    },
    telemetry::BackendLabels,
};

use super::KIND;
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
) -> Result<SecretsOutcome> {
    let (namespace, name) = secret_target(entry, environment);
    check_namespace(ctx, entry, &namespace)?;
    let (values, versions) = resolve(ctx, entry, refs).await?;
    // The target is part of it: a renamed or moved Secret is written anew.
    let sum = checksum(&json!({"target": [&namespace, &name], "versions": versions}));
    let keys = key_checksums(
        &sum,
        values
            .iter()
            .map(|(key, value)| (key.as_str(), value.expose_secret().as_bytes())),
    );
    let target = write_target(entry, environment, (&namespace, &name), guard, restoring);
    let cached = ctx.caches.managed_secrets.get(&namespace, &name);
    let outcome = SecretsOutcome {
        checksum: sum.clone(),
    };
    let projected = ProjectedSecret {
        annotations: stamp(entry, environment, version, &sum),
        namespace,
        name,
        data: values,
    };
    let (namespace, name) = (&projected.namespace, &projected.name);
    let live = match cached {
        Some(live) => Some(live),
        // Not in the cache: new (then created here, in one request), deleted, or
        // somebody else's (then the create fails, and it is read).
        None => {
            if create(ctx, entry, &target, &projected).await? {
                ctx.caches.managed_secrets.expect(namespace, name, keys);
                return Ok(outcome);
            }
            ManagedSecrets::fetch(&ctx.client, namespace, name)
                .await
                .map_err(Error::kube(format!("read Secret {namespace}/{name}")))?
        }
    };
    target
        .admit(ctx, live.as_ref().map(|l| &l.metadata))
        .await?;
    // What the Secret should hold, for DriftChecks: whether it is written now or not.
    ctx.caches
        .managed_secrets
        .expect(namespace, name, keys.clone());
    if let Some(live) = &live {
        let same_versions = live.annotations().get(ANNOTATION_SECRETS_CHECKSUM) == Some(&sum);
        let stamped = projected
            .annotations
            .iter()
            .all(|(key, value)| live.annotations().get(key) == Some(value));
        if stamped && cached_checksums(live) == keys {
            return Ok(outcome);
        }
        if same_versions && !restoring && ctx.drift_checked(entry, &environment.name) {
            return Ok(outcome);
        }
    }
    target.prepare(ctx).await?;
    write(ctx, entry, live.as_deref(), &projected).await?;
    tracing::info!(secret = %format!("{}/{}", projected.namespace, projected.name), version, "secret references projected");
    Ok(outcome)
}

/// The write of an environment's Secret `(namespace, name)`; one that needs approval
/// (`guard`, unless `restoring` what a DriftCheck found) binds it to itself.
fn write_target<'e>(
    entry: &'e ConfigEntry,
    environment: &EnvironmentSpec,
    (namespace, name): (&str, &str),
    guard: Option<&'e Requirements>,
    restoring: bool,
) -> target::Write<'e> {
    target::Write {
        entry,
        target: Target {
            kind: TargetKind::Secret,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
        wanted: Projection {
            config_id: entry.spec.config_id.clone(),
            environment: environment.name.clone(),
        },
        guard: guard.filter(|_| !restoring),
    }
}

/// Refuses a Secret outside the namespaces the operator projects into and manages.
fn check_namespace(ctx: &Context, entry: &ConfigEntry, namespace: &str) -> Result<()> {
    let own = entry.namespace().unwrap_or_default();
    if namespace != own && !ctx.settings.allowed_namespaces.contains(namespace) {
        return Err(Error::NamespaceNotAllowed {
            kind: "Secret",
            namespace: namespace.to_owned(),
        });
    }
    if !ctx.caches.managed_secrets.covers(namespace) {
        return Err(Error::SecretsNotManaged {
            namespace: namespace.to_owned(),
            managed: ctx.caches.managed_secrets.describe(),
        });
    }
    Ok(())
}

/// Reads every reference from its provider: the values by key, and which provider
/// version each came from (ids, never values).
async fn resolve(
    ctx: &Context,
    entry: &ConfigEntry,
    refs: &Map<String, Value>,
) -> Result<(BTreeMap<String, SecretString>, Vec<Value>)> {
    let own = entry.namespace().unwrap_or_default();
    let mut values = BTreeMap::new();
    let mut versions = Vec::new();
    for (key, reference) in refs {
        let invalid = |source| Error::SecretReference {
            key: key.clone(),
            source,
        };
        let failed = |source| Error::SecretValue {
            key: key.clone(),
            source,
        };
        let reference: SecretReference =
            serde_json::from_value(reference.clone()).map_err(invalid)?;
        // Checked for this namespace on every read, shared or not.
        let provider = provider_for(ctx, &own, &reference).await.map_err(failed)?;
        let stage = reference.version_stage.as_deref().unwrap_or(CURRENT);
        let read = ReadKey {
            source: read_source(&own, &reference),
            secret_id: reference.secret_id.clone(),
            stage: stage.to_owned(),
        };
        let found = ctx
            .secret_reads
            .read(&read, || {
                if reference.provider == ProviderKind::AwsSecretsManager {
                    let labels = BackendLabels {
                        backend: "secretsmanager",
                    };
                    ctx.metrics.backend_requests.get_or_create(&labels).inc();
                }
                provider.read(&reference.secret_id, Selector::Stage(stage))
            })
            .await
            .map_err(failed)?;
        let value = found.value.clone();
        let value =
            select_key(&reference.secret_id, value, reference.key.as_deref()).map_err(failed)?;
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
    Ok((values, versions))
}

/// What the environment's Secret says of itself: whose it is, and which versions it
/// holds (checksums, never values).
fn stamp(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    version: i64,
    sum: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_ENTRY.to_owned(), Claimant::of(entry).entry()),
        (
            ANNOTATION_CONFIG_ID.to_owned(),
            entry.spec.config_id.clone(),
        ),
        (LABEL_ENVIRONMENT.to_owned(), environment.name.clone()),
        (ANNOTATION_VERSION.to_owned(), version.to_string()),
        (ANNOTATION_SECRETS_CHECKSUM.to_owned(), sum.to_owned()),
    ])
}

/// Creates the Secret `projected` unless one of its name exists; returns whether it
/// did.
async fn create(
    ctx: &Context,
    entry: &ConfigEntry,
    target: &target::Write<'_>,
    projected: &ProjectedSecret,
) -> Result<bool> {
    let (namespace, name) = (&projected.namespace, &projected.name);
    target.admit(ctx, None).await?;
    target.prepare(ctx).await?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match api.create(&params, &desired_secret(entry, projected)).await {
        Ok(_) => {
            ctx.count_write(KIND, "secret");
            tracing::info!(secret = %format!("{namespace}/{name}"), "secret references projected");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(Error::kube(format!("create Secret {namespace}/{name}"))(
            error,
        )),
    }
}

/// Applies the Secret, and removes the keys someone else added to it.
async fn write(
    ctx: &Context,
    entry: &ConfigEntry,
    live: Option<&Secret>,
    projected: &ProjectedSecret,
) -> Result<()> {
    let (namespace, name) = (&projected.namespace, &projected.name);
    let foreign = foreign_keys(
        live.iter()
            .flat_map(|l| l.data.iter().flatten().map(|(k, _)| k)),
        &projected.data,
    );
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(
        name,
        &apply,
        &Patch::Apply(&desired_secret(entry, projected)),
    )
    .await
    .map_err(Error::kube(format!("apply Secret {namespace}/{name}")))?;
    ctx.count_write(KIND, "secret");
    if let Some(removal) = foreign {
        api.patch(name, &PatchParams::default(), &Patch::Merge(removal))
            .await
            .map_err(Error::kube(format!(
                "remove foreign keys of Secret {namespace}/{name}"
            )))?;
        ctx.count_write(KIND, "secret");
    }
    Ok(())
}

/// Which provider, with which credentials, a reference reads from: references with
/// the same source may share a read.
fn read_source(namespace: &str, reference: &SecretReference) -> String {
    match reference.provider {
        ProviderKind::AwsSecretsManager => {
            let options = reference.aws.as_ref();
            let region = options
                .and_then(|o| o.region.as_deref())
                .unwrap_or_default();
            match options.and_then(|o| o.credentials_secret.as_deref()) {
                Some(credentials) => format!("aws/{region}/{namespace}/{credentials}"),
                None => format!("aws/{region}"),
            }
        }
        ProviderKind::InCluster => format!("in-cluster/{namespace}"),
    }
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

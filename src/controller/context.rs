//! What every reconcile shares, built once at start-up.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{NamespaceResourceScope, api::core::v1::ConfigMap};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use std::collections::HashMap;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Secret;

use super::{
    backoff::Backoff,
    events::{EventType, Events},
    guards::Guards,
    managed_secrets::ManagedSecrets,
    priority::Pacer,
    secret_reads::{READS_IN_FLIGHT, SharedReads},
    workloads::Workloads,
};
use crate::api::v1alpha1::FIELD_MANAGER;
use crate::{
    api::v1alpha1::{
        ApprovalPolicy, AwsSecretsManagerOptions, ConfigChange, ConfigEntry, DriftCheck,
        DriftSource, free_form::FreeForm,
    },
    core::approval::{PlatformFloor, Requirements},
    core::entry::SchemaSource,
    secrets::{self, AwsProvider, AwsSettings},
    store::{Floor, Stores},
    telemetry::Metrics,
};

/// What every reconcile shares: the client, the stores, the caches it reads, how the
/// operator was told to act, and what the platform requires.
pub struct Context {
    pub client: Client,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// Versions, applied state and the audit trail.
    pub stores: Arc<Stores>,
    /// What reconciles read instead of asking the apiserver.
    pub caches: Caches,
    /// How the operator was told to act.
    pub settings: Settings,
    /// What the platform requires of every entry: approval floors, config id prefixes,
    /// and the admission policies that prove who asked and who approved.
    pub rules: Rules,
    pub backoff: Backoff,
    /// Keeps restarts of each workload apart.
    pub restarts: super::config_entry::RestartLimiter,
    /// For webhooks.
    pub http: reqwest::Client,
    /// Provider reads, shared by the references to one secret within a refresh window.
    pub secret_reads: SharedReads,
    /// Told of every finished reconcile, to pace the listed objects behind new work.
    pub pacer: Arc<Pacer>,
    /// Asks the entry controller to reconcile an entry (after a change applied to it).
    entry_requests: UnboundedSender<ObjectRef<ConfigEntry>>,
    /// Secrets Manager clients on the default credential chain, by region.
    aws_clients: tokio::sync::Mutex<HashMap<Option<String>, AwsProvider>>,
}

/// The watch caches reconciles read.
pub struct Caches {
    /// ConfigMaps labelled as JSON Schemas: entries read their `schemaRef` here.
    pub schema_config_maps: Store<ConfigMap>,
    /// ConfigMaps the operator projected, from a label-selected watch, packed.
    pub managed_config_maps: super::packed_cache::PackedCache<ConfigMap>,
    /// Which projected ConfigMaps each entry made.
    pub config_map_owners: super::owners::Owners,
    /// Secrets the operator projected, values replaced by checksums, and what each
    /// should hold.
    pub managed_secrets: ManagedSecrets,
    /// Deployments, StatefulSets and DaemonSets: the restart targets.
    pub workloads: Workloads,
    /// The entry controller's ConfigEntries.
    pub entries: Store<ConfigEntry>,
    /// The change controller's ConfigChanges.
    pub changes: Store<ConfigChange>,
    /// The drift controller's DriftChecks.
    pub drift_checks: Store<DriftCheck>,
    /// The ConfigVersions the operator wrote, metadata only, and whose each is.
    pub history: super::history::Cache,
}

/// How the operator was told to act, at start-up.
pub struct Settings {
    /// The only namespace watched, when the operator is scoped to one.
    pub namespace: Option<String>,
    /// The user the operator acts as, from a SelfSubjectReview: the requester of the
    /// ConfigChanges it proposes.
    pub identity: String,
    /// Namespaces besides an entry's own that projections may target.
    pub allowed_namespaces: BTreeSet<String>,
    /// The shortest time between two restarts of one workload.
    pub restart_interval: std::time::Duration,
    /// How often entries with secret references look for new upstream versions.
    pub secret_refresh: std::time::Duration,
    /// How many of each entry's newest versions are kept as ConfigVersions.
    pub history_keep: usize,
    /// The operator's AWS defaults (region, endpoint).
    pub aws: AwsSettings,
    /// The names of AWS secrets the operator's own credentials may reach on behalf of a
    /// namespace: this prefix, `{namespace}` replaced. Empty allows every name.
    pub aws_secret_prefix: String,
    /// Names the Events' reporting instance.
    pub pod_name: Option<String>,
    /// The Prometheus canary metric checks ask, if any.
    pub prometheus: Option<Prometheus>,
}

/// A Prometheus, and the label of its series that names a namespace (empty: none).
pub struct Prometheus {
    /// Its address, without a trailing `/`: `http://prometheus.monitoring:9090`.
    pub url: String,
    /// The series label that names a namespace; empty asks queries as written.
    pub namespace_label: String,
}

/// What the platform requires of every entry, set at start-up.
pub struct Rules {
    /// Approval floors by environment name, whatever an entry's spec says.
    pub approval_floors: Vec<PlatformFloor>,
    /// Config ids of a namespace start with this, `{namespace}` replaced; empty: any.
    pub config_id_prefix: String,
    /// The admission policies ConfigChanges depend on.
    pub guards: Guards,
}

/// The API of kind `K` in `namespace`, or across the cluster.
pub fn watched<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

impl Context {
    pub fn new(
        client: Client,
        (metrics, stores): (Arc<Metrics>, Arc<Stores>),
        caches: Caches,
        (settings, rules): (Settings, Rules),
        (entry_requests, pacer): (UnboundedSender<ObjectRef<ConfigEntry>>, Arc<Pacer>),
    ) -> Self {
        Self {
            events: Events::new(client.clone(), FIELD_MANAGER, settings.pod_name.as_deref()),
            client,
            metrics,
            stores,
            caches,
            restarts: super::config_entry::RestartLimiter::new(settings.restart_interval),
            secret_reads: SharedReads::new(settings.secret_refresh, READS_IN_FLIGHT),
            pacer,
            settings,
            rules,
            backoff: Backoff::default(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            entry_requests,
            aws_clients: tokio::sync::Mutex::default(),
        }
    }

    /// Fills the caches reconciles read, before any reconcile runs.
    pub async fn caches_ready(&self) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.rules.guards.wait_until_ready().await?;
        self.caches.schema_config_maps.wait_until_ready().await?;
        self.caches.managed_config_maps.wait_until_ready().await;
        self.caches.history.wait_until_ready().await;
        self.caches.managed_secrets.wait_until_ready().await?;
        self.caches.workloads.wait_until_ready().await
    }

    /// Every approval requirement of an environment: its spec's policy, the floor
    /// recorded for it, and the platform's floors for its name.
    pub fn requirements(
        &self,
        environment: &str,
        spec: Option<&ApprovalPolicy>,
        floor: Option<&Floor>,
    ) -> Requirements {
        Requirements::new(
            environment,
            spec,
            floor.map(|f| (f.version, f.policy.as_ref())),
            &self.rules.approval_floors,
        )
    }

    /// The API of kind `K` across what the operator watches.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        watched(&self.client, self.settings.namespace.as_deref())
    }

    /// The API of kind `K` in one namespace.
    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// A Secrets Manager client for `secret_id`, used on behalf of `namespace`: in the
    /// region `options` name (the operator's default when unset), with the keys of their
    /// credentials Secret in `namespace`. Without one, the operator's own credentials
    /// serve, and only for names under the prefix allowed to `namespace`, so that no
    /// tenant reads another's secrets through the operator.
    pub async fn aws_provider(
        &self,
        namespace: &str,
        secret_id: &str,
        options: Option<&AwsSecretsManagerOptions>,
    ) -> Result<AwsProvider, secrets::Error> {
        let mut settings = self.settings.aws.clone();
        if let Some(region) = options.and_then(|o| o.region.as_deref()) {
            settings.region = Some(region.to_owned());
        }
        let Some(name) = options.and_then(|o| o.credentials_secret.as_deref()) else {
            let allowed = self
                .settings
                .aws_secret_prefix
                .replace("{namespace}", namespace);
            // An ARN names an account and a region the prefix cannot vouch for.
            let is_arn = secret_id.starts_with("arn:");
            if !allowed.is_empty() && (is_arn || !secret_id.starts_with(&allowed)) {
                return Err(secrets::Error::NotAllowed {
                    secret_id: secret_id.to_owned(),
                    allowed: format!("{allowed}*"),
                });
            }
            let mut clients = self.aws_clients.lock().await;
            if let Some(client) = clients.get(&settings.region) {
                return Ok(client.clone());
            }
            let client = AwsProvider::new(&settings).await;
            clients.insert(settings.region.clone(), client.clone());
            return Ok(client);
        };
        let failed = |detail: String| secrets::Error::Credentials {
            name: format!("{namespace}/{name}"),
            detail,
        };
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let key = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .ok_or_else(|| failed(format!("it has no key {key}")))
        };
        settings.credentials = Some((
            key("AWS_ACCESS_KEY_ID")?,
            secrets::SecretString::from(key("AWS_SECRET_ACCESS_KEY")?),
        ));
        Ok(AwsProvider::new(&settings).await)
    }

    /// Whether a DriftCheck covers the ConfigMap of `environment` of `entry`: then a
    /// hand edit is the check's to report, or to remediate with an audit row.
    pub fn drift_checked(&self, entry: &ConfigEntry, environment: &str) -> bool {
        self.caches.drift_checks.state().iter().any(|check| {
            crate::core::drift::covers(check, entry, environment, DriftSource::Kubernetes)
        })
    }

    /// Has the entry `namespace/name` reconciled soon.
    pub fn reconcile_entry(&self, namespace: &str, name: &str) {
        let _ = self
            .entry_requests
            .unbounded_send(ObjectRef::new(name).within(namespace));
    }

    /// A secret this operator just rotated: the references to it read it anew, now,
    /// rather than at their next refresh.
    pub fn secret_rotated(&self, provider: crate::api::v1alpha1::SecretProvider, secret_id: &str) {
        self.secret_reads.forget(secret_id);
        for entry in self.caches.entries.state() {
            if crate::core::entry::references_secret(&entry, provider, secret_id) {
                self.reconcile_entry(&entry.namespace().unwrap_or_default(), &entry.name_any());
            }
        }
    }

    /// An entry from the entry controller's cache.
    pub fn entry(&self, namespace: &str, name: &str) -> Option<Arc<ConfigEntry>> {
        self.caches
            .entries
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// Whether the operator's watches see `namespace`.
    pub fn watches(&self, namespace: &str) -> bool {
        self.settings
            .namespace
            .as_deref()
            .is_none_or(|n| n == namespace)
    }

    /// The entry's schema as the caches hold it: inline, or from the watched schema
    /// ConfigMaps.
    pub fn schema_source(&self, entry: &ConfigEntry) -> SchemaSource {
        let namespace = entry.namespace().unwrap_or_default();
        match &entry.spec.schema_ref {
            Some(reference) => SchemaSource::Referenced {
                name: reference.name.clone(),
                key: reference.key.clone(),
                text: self
                    .schema_config_map(&namespace, &reference.name)
                    .and_then(|cm| cm.data.as_ref()?.get(&reference.key).cloned()),
            },
            None => SchemaSource::Inline(entry.spec.schema.as_ref().map(FreeForm::value)),
        }
    }

    /// A schema ConfigMap from the watch cache.
    pub fn schema_config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.caches
            .schema_config_maps
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// A projected ConfigMap from the watch cache.
    pub fn managed_config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.caches.managed_config_maps.get(namespace, name)
    }

    /// Publishes an Event about `object`. Events are best effort: a failure is logged,
    /// never allowed to fail the reconcile.
    pub async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let regarding = object.object_ref(&());
        if let Err(error) = self.events.publish(&regarding, type_, reason, &note).await {
            tracing::warn!(%error, reason, "cannot publish Event");
        }
    }
}

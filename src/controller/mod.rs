//! The reconcile loops, one per kind, and what they share.

mod backoff;
mod config_change;
mod config_entry;
mod context;
mod drift_check;
mod error;
mod guards;
mod managed_secrets;
mod secret_rotation_policy;
mod status;
mod targets;
mod workloads;

use std::{
    fmt::Debug,
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{authentication::v1::SelfSubjectReview, core::v1::ConfigMap},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef},
        wait::{await_condition, conditions},
        watcher,
    },
};
use serde::de::DeserializeOwned;

pub use context::Context;
pub use drift_check::CHECK_ANNOTATION;
pub use error::{Error, Result};
use guards::Guards;
use managed_secrets::SecretScope;
pub use secret_rotation_policy::ROTATE_ANNOTATION;
use workloads::Workloads;

use reqwest::Url;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

use crate::{
    api::{
        self,
        v1alpha1::{ConfigChange, ConfigEntry, DriftCheck, WorkloadKind},
    },
    cli::OperatorArgs,
    core::approval::PlatformFloor,
    project::{LABEL_MANAGED_BY, MANAGED_BY},
    store::{ConsulConfig, Stores, StoresConfig},
    telemetry::{self, FailureLabels, Health, KindLabels, Metrics},
};

/// The name the operator writes under: its server-side apply field manager and the
/// reporting controller of its Events.
pub const FIELD_MANAGER: &str = "summit-config";

/// Runs every controller until SIGTERM or Ctrl-C.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = connect(
        args.kubeconfig.as_deref(),
        metrics.requests_to("kubernetes"),
    )
    .await?;
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
    });
    let http = tokio::spawn(telemetry::serve(args.http_addr, health.clone()));

    let stores = Arc::new(Stores::new(stores_config(&args, &metrics)?).map_err(Error::Store)?);
    if !stores.is_durable() {
        tracing::warn!(
            "no --database-url: versions are kept in memory only and are lost when the operator \
             restarts; use this for demos only"
        );
    }
    wait_for_crds(&client, Duration::from_secs(args.crd_wait_seconds)).await?;

    let identity = whoami(&client).await?;
    let scope = Scope {
        namespace: args.namespace.clone(),
        selector: args.watch_label_selector.clone(),
    };
    let rules = rules(&args, &client)?;
    let (guards, guard_changes) = (rules.guards.clone(), rules.guard_changes);
    let entry_controller: Controller<ConfigEntry> = controller_for(&client, &scope);
    let change_controller: Controller<ConfigChange> = controller_for(&client, &scope);
    let drift_controller = drift_controller_for(&client, &scope);
    let (entry_requests, requested_entries) = futures::channel::mpsc::unbounded();
    let (schema_config_maps, schema_writer) = reflector::store();
    let (managed_config_maps, managed_writer) = reflector::store();
    let (deployments, deployment_writer) = reflector::store();
    let (stateful_sets, stateful_set_writer) = reflector::store();
    let (daemon_sets, daemon_set_writer) = reflector::store();
    let secret_scope = match &args.secret_namespaces {
        Some(namespaces) => SecretScope::Namespaces(
            namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
        ),
        None => SecretScope::Watched(args.namespace.clone()),
    };
    let (managed_secrets, secret_events) = managed_secrets::watch(&client, secret_scope);
    let (secret_owners, policy_requests) = managed_secrets::owners(secret_events);
    let ctx = Arc::new(Context::new(
        context::Parts {
            client,
            metrics,
            namespace: args.namespace.clone(),
            schema_config_maps,
            managed_config_maps,
            stores,
            allowed_namespaces: args.allowed_namespaces.iter().cloned().collect(),
            restart_interval: Duration::from_secs(args.restart_interval_seconds),
            workloads: Workloads {
                deployments,
                stateful_sets,
                daemon_sets,
            },
            entries: entry_controller.store(),
            changes: change_controller.store(),
            drift_checks: drift_controller.store(),
            entry_requests,
            identity,
            aws: crate::secrets::AwsSettings {
                region: args.aws_region.clone(),
                endpoint_url: args.aws_endpoint_url.clone(),
                credentials: None,
            },
            aws_secret_prefix: checked_prefix("--aws-secret-prefix", &args.aws_secret_prefix)?,
            managed_secrets,
            secret_refresh: Duration::from_secs(args.secret_refresh_seconds.max(1)),
            rules: context::Rules {
                approval_floors: rules.approval_floors,
                config_id_prefix: rules.config_id_prefix,
                guards,
            },
        },
        std::env::var("POD_NAME").ok(),
    ));
    let schema_events = watcher(
        ctx.watched::<ConfigMap>(),
        watcher::Config::default().labels(config_entry::SCHEMA_LABEL),
    )
    .default_backoff()
    .reflect(schema_writer)
    .touched_objects();
    let projected_events = watcher(
        ctx.watched::<ConfigMap>(),
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
    )
    .default_backoff()
    .reflect(managed_writer)
    .touched_objects();
    // Restart targets: a rollout's progress shows in the status of the entries that
    // restart it.
    let workload_events = futures::stream::select(
        futures::stream::select(
            workload_watch(&ctx, deployment_writer, WorkloadKind::Deployment),
            workload_watch(&ctx, stateful_set_writer, WorkloadKind::StatefulSet),
        ),
        workload_watch(&ctx, daemon_set_writer, WorkloadKind::DaemonSet),
    );
    let triggers = futures::stream::select(
        futures::stream::select(
            config_entry::config_map_triggers(
                entry_controller.store(),
                schema_events,
                projected_events,
            ),
            config_entry::workload_triggers(entry_controller.store(), workload_events),
        ),
        futures::stream::select(requested_entries, secret_owners),
    );
    // A change waits on its entry: an entry's new version or policy reconciles the
    // changes that target it.
    let changes = change_controller.store();
    let change_controller = change_controller.watches(
        ctx.watched::<ConfigEntry>(),
        scope.watcher_config(),
        move |entry| {
            let namespace = entry.namespace();
            let name = entry.name_any();
            changes
                .state()
                .into_iter()
                .filter(|c| c.namespace() == namespace && c.spec.config_entry == name)
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    // Every change is judged again when an admission policy it depends on comes or goes.
    let change_controller = change_controller.reconcile_all_on(guard_changes);
    // Reconciles read these caches: fill them first.
    let caches = async {
        ctx.rules.guards.wait_until_ready().await?;
        ctx.schema_config_maps.wait_until_ready().await?;
        ctx.managed_config_maps.wait_until_ready().await?;
        ctx.managed_secrets.wait_until_ready().await?;
        ctx.workloads.wait_until_ready().await
    };
    caches.await.map_err(|_| Error::CacheClosed)?;
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        "controllers starting"
    );

    tokio::select! {
        _ = async {
            tokio::join!(
                run_controller(
                    entry_controller.reconcile_on(triggers),
                    ctx.clone(),
                    config_entry::reconcile,
                    config_entry::error_policy,
                ),
                run_controller(
                    change_controller,
                    ctx.clone(),
                    config_change::reconcile,
                    config_change::error_policy,
                ),
                run_controller(
                    controller_for(&ctx.client, &scope).reconcile_on(policy_requests),
                    ctx.clone(),
                    secret_rotation_policy::reconcile,
                    secret_rotation_policy::error_policy,
                ),
                run_controller(
                    drift_controller,
                    ctx.clone(),
                    drift_check::reconcile,
                    drift_check::error_policy,
                ),
            )
        } => {}
        served = http => match served {
            Ok(Err(source)) => return Err(Error::Http(source)),
            _ => return Err(Error::HttpStopped),
        },
    }
    tracing::info!("controllers stopped");
    Ok(())
}

/// A watch of one workload kind that fills its cache, as a stream of the workloads it
/// saw change.
fn workload_watch<K: Kind>(
    ctx: &Context,
    writer: reflector::store::Writer<K>,
    kind: WorkloadKind,
) -> impl futures::Stream<Item = (WorkloadKind, String, String)> + Send + 'static {
    watcher(
        ctx.watched::<K>(),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects()
    .filter_map(move |event| {
        std::future::ready(
            event
                .ok()
                .map(|w| (kind, w.namespace().unwrap_or_default(), w.name_any())),
        )
    })
}

/// A per-namespace prefix (AWS secret names, config ids), if it keeps namespaces
/// apart: after `{namespace}` must come a character no namespace name has, or `team`
/// would reach what belongs to `team-b`.
fn checked_prefix(flag: &str, prefix: &str) -> Result<String> {
    let unsafe_placeholder = prefix
        .match_indices("{namespace}")
        .any(|(at, placeholder)| {
            prefix[at + placeholder.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if unsafe_placeholder {
        return Err(Error::Configuration(format!(
            "{flag} {prefix:?}: follow {{namespace}} with a separator such as '/', or one namespace's prefix would cover another's (team/ and team-b/)"
        )));
    }
    if !prefix.is_empty() && !prefix.contains("{namespace}") {
        tracing::warn!(
            flag,
            prefix,
            "the prefix has no {{namespace}}: every namespace shares it"
        );
    }
    Ok(prefix.to_owned())
}

/// Which backends to use, from the command line.
fn stores_config(args: &OperatorArgs, metrics: &Metrics) -> Result<StoresConfig> {
    let database = args
        .database_url
        .as_deref()
        .map(|url| {
            url.parse::<PgConnectOptions>().map_err(|source| {
                Error::Configuration(format!("--database-url does not parse: {source}"))
            })
        })
        .transpose()?;
    let consul = args
        .consul_addr
        .as_deref()
        .map(|address| {
            let with_scheme = if address.contains("://") {
                address.to_owned()
            } else {
                format!("http://{address}")
            };
            let address = Url::parse(&with_scheme).map_err(|source| {
                Error::Configuration(format!(
                    "--consul-addr {address:?} does not parse: {source}"
                ))
            })?;
            let token = match (&args.consul_token_file, &args.consul_token) {
                (Some(path), _) => Some(read_file(path, "--consul-token-file")?),
                (None, token) => token.clone(),
            }
            .map(|token| token.trim().to_owned())
            .filter(|token| !token.is_empty());
            if token
                .as_deref()
                .is_some_and(|t| reqwest::header::HeaderValue::from_str(t).is_err())
            {
                return Err(Error::Configuration(
                    "the Consul ACL token holds characters an HTTP header cannot carry".into(),
                ));
            }
            let ca_pem = args
                .consul_ca_file
                .as_deref()
                .map(|path| read_file(path, "--consul-ca-file").map(String::into_bytes))
                .transpose()?;
            Ok::<_, Error>(ConsulConfig {
                address,
                prefix: args.consul_prefix.clone(),
                token: token.map(SecretString::from),
                ca_pem,
            })
        })
        .transpose()?;
    Ok(StoresConfig {
        database,
        consul,
        postgres_requests: metrics.requests_to("postgres"),
        consul_requests: metrics.requests_to("consul"),
    })
}

/// A file the operator is configured with, read once at start-up.
fn read_file(path: &std::path::Path, flag: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| {
        Error::Configuration(format!(
            "{flag} {}: cannot read it: {source}",
            path.display()
        ))
    })
}

/// A client from the given kubeconfig, or by the usual rules: `$KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account. Every request it sends is
/// counted in `requests` (a watch once, when it starts).
async fn connect(
    kubeconfig: Option<&std::path::Path>,
    requests: prometheus_client::metrics::counter::Counter,
) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => Config::infer().await.map_err(Error::InferConfig)?,
    };
    let counted =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            requests.inc();
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(Error::Connect)?
        .with_layer(&counted)
        .build())
}

/// Waits until the apiserver serves every summit-config CRD.
async fn wait_for_crds(client: &Client, limit: Duration) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(limit, established).await {
            Ok(Ok(_)) => tracing::debug!(crd = %name, "established"),
            Ok(Err(source)) => return Err(Error::CrdWait { name, source }),
            Err(_) => {
                return Err(Error::CrdMissing {
                    name,
                    waited: limit,
                });
            }
        }
    }
    Ok(())
}

/// What a kind needs to be watched and reconciled.
trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Reconciles of one kind that run at once. Unbounded, a cold start with thousands of
/// objects floods the apiserver and PostgreSQL's pool and every reconcile slows down;
/// a few more than the pool's connections keep both busy without queueing in them.
const CONCURRENCY: u16 = 12;

/// Which of its kinds' objects the operator reconciles: a namespace or all, and those
/// matching a label selector.
struct Scope {
    namespace: Option<String>,
    selector: Option<String>,
}

impl Scope {
    fn watcher_config(&self) -> watcher::Config {
        let config = watcher::Config::default().any_semantic();
        match &self.selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }
}

/// A controller for kind `K` over what the operator watches.
fn controller_for<K: Kind>(client: &Client, scope: &Scope) -> Controller<K> {
    Controller::new(
        context::watched(client, scope.namespace.as_deref()),
        scope.watcher_config(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
}

/// The DriftCheck controller. A check runs on its interval, on a spec change, or when
/// asked (the check annotation), and never because it wrote its own status: that would
/// cost every check a second pass.
fn drift_controller_for(client: &Client, scope: &Scope) -> Controller<DriftCheck> {
    use std::hash::{Hash, Hasher};
    let (reader, writer) = reflector::store();
    let asked = |check: &DriftCheck| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        check.metadata.generation.hash(&mut hasher);
        check.annotations().get(CHECK_ANNOTATION).hash(&mut hasher);
        Some(hasher.finish())
    };
    let checks = watcher(
        context::watched(client, scope.namespace.as_deref()),
        scope.watcher_config(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(asked, Default::default());
    Controller::for_stream(checks, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
}

/// The platform's rules, from the command line.
struct StartRules {
    approval_floors: Vec<PlatformFloor>,
    config_id_prefix: String,
    guards: Guards,
    guard_changes: futures::stream::BoxStream<'static, ()>,
}

fn rules(args: &OperatorArgs, client: &Client) -> Result<StartRules> {
    let approval_floors: Vec<PlatformFloor> = serde_json::from_str(&args.approval_floors)
        .map_err(|source| {
            Error::Configuration(format!(
                "--approval-floors is not a JSON list of {{\"environments\": \"prod*\", \"requiredApprovals\": 1, \"approverGroups\": [...]}}: {source}"
            ))
        })?;
    if let Some(floor) = approval_floors.iter().find(|f| f.environments.is_empty()) {
        return Err(Error::Configuration(format!(
            "--approval-floors: a floor without environments ({floor:?}); use \"*\" for every environment"
        )));
    }
    let config_id_prefix = checked_prefix("--config-id-prefix", &args.config_id_prefix)?;
    if args.allow_unguarded {
        tracing::warn!(
            "--allow-unguarded: ConfigChanges apply without the admission policies that prove who requested and approved them; for development clusters only"
        );
    }
    let (guards, guard_changes) = Guards::watch(client, !args.allow_unguarded);
    Ok(StartRules {
        approval_floors,
        config_id_prefix,
        guards,
        guard_changes: guard_changes.boxed(),
    })
}

/// The user the operator acts as, as the apiserver authenticates it.
async fn whoami(client: &Client) -> Result<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(Error::kube(
            "ask the apiserver who the operator is (SelfSubjectReview)".to_owned(),
        ))?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| Error::Configuration("the apiserver did not say who the operator is".into()))
}

/// Runs one controller with the shared context until shutdown.
async fn run_controller<K: Kind, R, F>(
    controller: Controller<K>,
    ctx: Arc<Context>,
    reconcile: R,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> Action,
) where
    R: FnMut(Arc<K>, Arc<Context>) -> F,
    F: Future<Output = Result<Action>> + Send + 'static,
{
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}

/// Wraps one reconcile with its metrics, and resets the object's backoff on success.
async fn observed<K, F>(
    kind: &'static str,
    object: &K,
    ctx: &Context,
    reconcile: F,
) -> Result<Action>
where
    K: Resource,
    F: Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let labels = KindLabels { kind };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let result = reconcile.await;
    match &result {
        Ok(action) => tracing::debug!(?action, "reconciled"),
        Err(error) => tracing::debug!(%error, "reconcile failed"),
    }
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.reset(&object_key(object));
    }
    result
}

/// Shared error policy: an invalid object waits for a change; anything else retries with
/// exponential backoff and jitter.
fn requeue_after_error<K: Resource>(
    kind: &'static str,
    object: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&FailureLabels {
            kind,
            reason: error.label(),
        })
        .inc();
    if !error.is_transient() {
        tracing::warn!(kind, name = %object.name_any(), error = %Chain(error), "reconcile failed; waiting for a change");
        return Action::await_change();
    }
    let delay = ctx.backoff.next(&object_key(object));
    tracing::warn!(kind, name = %object.name_any(), error = %Chain(error), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// An error and its causes on one line, for logs.
struct Chain<'e>(&'e Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

fn object_key<K: Resource>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::checked_prefix;

    #[test]
    fn a_prefix_keeps_namespaces_apart_or_is_refused() {
        let checked = |prefix| checked_prefix("--prefix", prefix);
        assert!(checked("{namespace}/").is_ok());
        assert!(checked("apps/{namespace}_").is_ok());
        assert!(checked("").is_ok());
        assert!(checked("apps/{namespace}").is_err());
        assert!(checked("{namespace}-").is_err());
        assert!(checked("{namespace}x/").is_err());
    }
}

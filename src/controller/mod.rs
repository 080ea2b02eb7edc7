//! The reconcile loops, one per kind, what they share, and how they are wired to the
//! watches that wake them.

mod backoff;
mod config_change;
mod config_entry;
mod context;
mod drift_check;
mod error;
mod events;
mod guards;
mod history;
mod managed_secrets;
mod owners;
mod packed_cache;
mod priority;
mod secret_reads;
mod secret_rotation_policy;
mod slim;
mod status;
mod targets;
mod wakes;
mod workloads;

use std::{fmt::Debug, future::Future, sync::Arc, time::Instant};

use futures::{
    StreamExt, TryStreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::ConfigMap,
    },
};
use kube::{
    Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde::de::DeserializeOwned;

pub use context::{Context, Prometheus, Settings};
pub use error::{Error, Result};
use guards::Guards;
use managed_secrets::SecretScope;
use priority::Pacer;
use slim::Slim;
use wakes::{Wakes, check_wakes, entry_wakes};
use workloads::Workloads;

use crate::core::Class;
use crate::{
    api::v1alpha1::{
        ConfigChange, ConfigEntry, DriftCheck, LABEL_MANAGED_BY, LABEL_SCHEMA, MANAGED_BY,
        SecretRotationPolicy, WorkloadKind,
    },
    core::approval::PlatformFloor,
    store::Stores,
    telemetry::{FailureLabels, KindLabels, Metrics},
};

/// What the controllers are told at start-up.
pub struct Launch {
    pub stores: Arc<Stores>,
    pub metrics: Arc<Metrics>,
    /// Only objects with these labels are reconciled.
    pub selector: Option<String>,
    /// Where the operator manages Secrets; `None`: wherever it watches.
    pub secret_namespaces: Option<Vec<String>>,
    pub settings: Settings,
    pub approval_floors: Vec<PlatformFloor>,
    pub config_id_prefix: String,
    /// Whether ConfigChanges wait for the chart's admission policies.
    pub require_guards: bool,
}

/// Runs every controller until SIGTERM or Ctrl-C; `ready` is called once the caches
/// they read are full.
pub async fn run(client: Client, launch: Launch, ready: impl FnOnce()) -> Result<()> {
    let scope = Scope {
        namespace: launch.settings.namespace.clone(),
        selector: launch.selector.clone(),
    };
    let (guards, guard_changes) = Guards::watch(&client, launch.require_guards);
    let pacer = Arc::new(Pacer::new(CONCURRENCY.into()));
    let (entry_tap, entries_touched) = futures::channel::mpsc::unbounded();
    let entries = controller_for(&client, &scope, entry_wakes, &pacer, Some(entry_tap));
    let changes = controller_for(&client, &scope, predicates::resource_version, &pacer, None);
    let checks = controller_for(&client, &scope, check_wakes, &pacer, None);
    let (ctx, feeds) = assemble(
        client,
        launch,
        (guards, pacer.clone()),
        (entries.store(), changes.store(), checks.store()),
    );
    let ctx = Arc::new(ctx);
    let triggers = entry_triggers(&ctx, feeds.entries, entries.store());
    let entries = entries.reconcile_on(triggers);
    // A change waits on its entry: an entry's new version or policy reconciles the
    // changes that target it; and every change is judged again when an admission
    // policy it depends on comes or goes.
    let (entries_touched, history_touched) = history::tee(entries_touched);
    let changes = changes_of_entries(changes, entries_touched).reconcile_all_on(guard_changes);
    let (started, start) = futures::channel::oneshot::channel();
    let history = history::controller(&ctx, ctx.caches.entries.clone(), history_touched, start);
    let policies = controller_for(
        &ctx.client,
        &scope,
        predicates::resource_version,
        &pacer,
        None,
    )
    .reconcile_on(feeds.policies);
    ctx.caches_ready().await.map_err(|_| Error::CacheClosed)?;
    let _ = started.send(());
    ready();
    tracing::info!(
        namespace = ctx.settings.namespace.as_deref().unwrap_or("<all>"),
        "controllers starting"
    );
    tokio::join!(
        run_controller(
            entries,
            ctx.clone(),
            config_entry::reconcile,
            config_entry::error_policy
        ),
        run_controller(
            changes,
            ctx.clone(),
            config_change::reconcile,
            config_change::error_policy
        ),
        run_controller(
            policies,
            ctx.clone(),
            secret_rotation_policy::reconcile,
            secret_rotation_policy::error_policy,
        ),
        run_controller(
            checks,
            ctx.clone(),
            drift_check::reconcile,
            drift_check::error_policy
        ),
        run_controller(
            history,
            ctx.clone(),
            history::reconcile,
            history::error_policy
        ),
    );
    tracing::info!("controllers stopped");
    Ok(())
}

/// What wakes the controllers besides their own watches.
struct Feeds {
    entries: EntryFeeds,
    policies: futures::stream::BoxStream<'static, ObjectRef<SecretRotationPolicy>>,
}

/// What wakes the entry controller: requests from the other controllers, the Secrets
/// it projected, and the caches (ConfigMaps, workloads) whose watches still have to run.
struct EntryFeeds {
    requested: UnboundedReceiver<ObjectRef<ConfigEntry>>,
    secret_owners: futures::stream::BoxStream<'static, ObjectRef<ConfigEntry>>,
    schemas: reflector::store::Writer<ConfigMap>,
    workloads: workloads::Writers,
}

/// The context every reconcile shares, with the caches it reads, and what feeds them.
fn assemble(
    client: Client,
    launch: Launch,
    (guards, pacer): (Guards, Arc<Pacer>),
    (entries, changes, checks): (
        reflector::Store<ConfigEntry>,
        reflector::Store<ConfigChange>,
        reflector::Store<DriftCheck>,
    ),
) -> (Context, Feeds) {
    let (entry_requests, requested) = futures::channel::mpsc::unbounded();
    let (schema_config_maps, schemas) = reflector::store();
    let (workloads, workload_writers) = Workloads::stores();
    let secret_scope = match &launch.secret_namespaces {
        Some(namespaces) => SecretScope::Namespaces(namespaces.clone()),
        None => SecretScope::Watched(launch.settings.namespace.clone()),
    };
    let (managed_secrets, secret_events) = managed_secrets::watch(&client, secret_scope);
    let (secret_owners, policies) = managed_secrets::owners(secret_events);
    let caches = context::Caches {
        schema_config_maps,
        managed_config_maps: packed_cache::PackedCache::new(),
        config_map_owners: owners::Owners::default(),
        managed_secrets,
        workloads,
        entries,
        changes,
        drift_checks: checks,
        history: history::Cache::new(),
    };
    let rules = context::Rules {
        approval_floors: launch.approval_floors,
        config_id_prefix: launch.config_id_prefix,
        guards,
    };
    let ctx = Context::new(
        client,
        (launch.metrics, launch.stores),
        caches,
        (launch.settings, rules),
        (entry_requests, pacer),
    );
    let feeds = Feeds {
        entries: EntryFeeds {
            requested,
            secret_owners: secret_owners.boxed(),
            schemas,
            workloads: workload_writers,
        },
        policies: policies.boxed(),
    };
    (ctx, feeds)
}

/// What wakes the entry controller besides its own watch: schema ConfigMaps, the
/// ConfigMaps and Secrets it projected, its restart targets, and other controllers'
/// requests.
fn entry_triggers(
    ctx: &Context,
    feeds: EntryFeeds,
    entries: reflector::Store<ConfigEntry>,
) -> impl futures::Stream<Item = ObjectRef<ConfigEntry>> + Send + 'static {
    let schema_events = cached_watch(
        ctx.watched::<ConfigMap>(),
        watcher::Config::default().labels(LABEL_SCHEMA),
        feeds.schemas,
    )
    .touched_objects();
    let projected = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let (cache, owners) = (
        ctx.caches.managed_config_maps.clone(),
        ctx.caches.config_map_owners.clone(),
    );
    let projected_events = watcher(ctx.watched::<ConfigMap>(), projected)
        .default_backoff()
        .modify(slim::projection)
        .inspect_ok(move |event| {
            cache.observe(event);
            owners.observe(event);
        });
    // Restart targets: a rollout's progress shows in the status of the entries that
    // restart it.
    let workload_events = futures::stream::select_all([
        workload_watch(ctx, feeds.workloads.deployments, WorkloadKind::Deployment).boxed(),
        workload_watch(
            ctx,
            feeds.workloads.stateful_sets,
            WorkloadKind::StatefulSet,
        )
        .boxed(),
        workload_watch(ctx, feeds.workloads.daemon_sets, WorkloadKind::DaemonSet).boxed(),
    ]);
    futures::stream::select_all([
        config_entry::config_map_triggers(entries.clone(), schema_events, projected_events).boxed(),
        config_entry::workload_triggers(entries, workload_events).boxed(),
        feeds.requested.boxed(),
        feeds.secret_owners,
    ])
}

/// The change controller, woken too by the entries its changes target: every write or
/// deletion of an entry the entry controller's watch sees (no second watch of them).
fn changes_of_entries(
    controller: Controller<ConfigChange>,
    entries_touched: UnboundedReceiver<ObjectRef<ConfigEntry>>,
) -> Controller<ConfigChange> {
    let changes = controller.store();
    let targeting = move |entry: ObjectRef<ConfigEntry>| {
        let targeting: Vec<_> = changes
            .state()
            .into_iter()
            .filter(|c| c.namespace() == entry.namespace && c.spec.config_entry == entry.name)
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect();
        futures::stream::iter(targeting)
    };
    controller.reconcile_on(entries_touched.flat_map(targeting))
}

/// A watch of one workload kind that fills its cache, as a stream of the workloads it
/// saw change.
fn workload_watch<K: Kind>(
    ctx: &Context,
    writer: reflector::store::Writer<K>,
    kind: WorkloadKind,
) -> impl futures::Stream<Item = (WorkloadKind, String, String)> + Send + 'static {
    cached_watch(
        ctx.watched::<K>(),
        watcher::Config::default().any_semantic(),
        writer,
    )
    .touched_objects()
    .filter_map(move |event| {
        std::future::ready(
            event
                .ok()
                .map(|w| (kind, w.namespace().unwrap_or_default(), w.name_any())),
        )
    })
}

/// A kind the operator watches and caches: namespaced, with a static type, slimmed
/// before it is cached.
trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + Slim
    + 'static
{
}

impl Kind for ConfigEntry {}
impl Kind for ConfigChange {}
impl Kind for DriftCheck {}
impl Kind for SecretRotationPolicy {}
impl Kind for Deployment {}
impl Kind for StatefulSet {}
impl Kind for DaemonSet {}
impl Kind for ConfigMap {}

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

/// A controller for kind `K` over what the operator watches, its cache slim, woken by
/// the objects whose `wakes` hash changed.
/// Objects created or edited go to it at once, listed ones a few at a time (see
/// [`priority`]).
fn controller_for<K: Kind>(
    client: &Client,
    scope: &Scope,
    wakes: Wakes<K>,
    pacer: &Arc<Pacer>,
    tap: Option<UnboundedSender<ObjectRef<K>>>,
) -> Controller<K> {
    let (reader, writer) = reflector::store();
    let events = cached_watch(
        context::watched(client, scope.namespace.as_deref()),
        scope.watcher_config(),
        writer,
    );
    let fed = priority::split(events, wakes, pacer.clone(), tap);
    Controller::for_stream(fed.live, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_on(fed.listed)
}

/// A watch that fills `writer`'s cache with slim objects (see [`slim`]), as a stream
/// of its events.
fn cached_watch<K: Kind>(
    api: kube::Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    watcher(api, config)
        .default_backoff()
        .modify(K::slim)
        .reflect(writer)
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
    ctx.pacer.finished();
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

/// Shared error policy: an invalid object waits for a change; a transient failure or a
/// conflict retries with exponential backoff and jitter.
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
    let class = error.class();
    if class == Class::Invalid {
        tracing::warn!(kind, name = %object.name_any(), error = %Chain(error), "reconcile failed; waiting for a change");
        return Action::await_change();
    }
    let delay = ctx.backoff.next(&object_key(object));
    tracing::warn!(kind, name = %object.name_any(), error = %Chain(error), ?class, retry_in = ?delay, "reconcile failed");
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

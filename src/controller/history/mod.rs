//! The history controller: every recorded version, readable through the Kubernetes API
//! as a ConfigVersion in its entry's namespace, with where it is live and its audit.
//!
//! The ledger (PostgreSQL) is the record; ConfigVersions are what people read with
//! their own RBAC. An entry's history is written when its status says something the
//! cached ConfigVersions do not (a new version, a version live somewhere new), and
//! otherwise costs no read: the cache holds metadata only, with a digest of what each
//! object says.

mod desired;

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher},
};

pub use desired::{ANNOTATION_DIGEST, ANNOTATION_LIVE_IN};

use super::{Context, Error, Result, owners::Owners, packed_cache::PackedCache};
use crate::api::v1alpha1::{
    ANNOTATION_ENTRY, ANNOTATION_VERSION, ConfigEntry, ConfigVersion, FIELD_MANAGER,
    LABEL_MANAGED_BY, MANAGED_BY,
};

const KIND: &str = "ConfigVersion";

type Meta = PartialObjectMeta<ConfigVersion>;

/// The ConfigVersions the operator wrote, metadata only, indexed by entry.
#[derive(Clone)]
pub struct Cache {
    objects: PackedCache<Meta>,
    owners: Owners,
}

impl Cache {
    pub fn new() -> Self {
        Self {
            objects: PackedCache::new(),
            owners: Owners::default(),
        }
    }

    pub async fn wait_until_ready(&self) {
        self.objects.wait_until_ready().await;
    }

    /// Keeps of a ConfigVersion only what the history compares: its place and the
    /// operator's annotations. Ten kept versions of 10,000 entries are 100,000 objects.
    fn slim(meta: &mut Meta) {
        let annotations = meta.metadata.annotations.take().unwrap_or_default();
        let kept = [
            ANNOTATION_ENTRY,
            ANNOTATION_VERSION,
            ANNOTATION_LIVE_IN,
            ANNOTATION_DIGEST,
        ];
        meta.metadata = kube::api::ObjectMeta {
            name: meta.metadata.name.take(),
            namespace: meta.metadata.namespace.take(),
            annotations: Some(
                annotations
                    .into_iter()
                    .filter(|(key, _)| kept.contains(&key.as_str()))
                    .collect(),
            ),
            ..kube::api::ObjectMeta::default()
        };
    }

    fn observe(&self, event: &watcher::Event<Meta>) {
        self.objects.observe(event);
        self.owners.observe(event);
    }

    /// The ConfigVersions of `owner` (an entry's `namespace/name`).
    fn of(&self, owner: &str) -> Vec<Arc<Meta>> {
        let places = self.owners.of(owner);
        let found = places
            .iter()
            .filter_map(|(ns, name)| self.objects.get(ns, name));
        found.collect()
    }
}

/// The history controller over the entry controller's cache: woken by every write of
/// an entry (`touched`, status writes included), by every change to a ConfigVersion it
/// wrote (someone deleting one), and once for every entry when `start` fires.
pub fn controller(
    ctx: &Context,
    entries: reflector::Store<ConfigEntry>,
    touched: impl futures::Stream<Item = reflector::ObjectRef<ConfigEntry>> + Send + 'static,
    start: futures::channel::oneshot::Receiver<()>,
) -> Controller<ConfigEntry> {
    let start = futures::stream::once(start).filter_map(|s| std::future::ready(s.ok()));
    let reader = entries.clone();
    let touched = touched.filter_map(move |entry| {
        let found = reader.get(&entry).map(|e| Ok(e.as_ref().clone()));
        std::future::ready(found)
    });
    // Its own task: the cache must fill before any controller runs. A ConfigVersion
    // deleted wakes its entry, which writes it again.
    let cache = ctx.caches.history.clone();
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let events = watcher(
        ctx.watched::<Meta>(),
        watcher::Config::default().labels(&managed),
    );
    let (deleted, versions) = futures::channel::mpsc::unbounded();
    let events = events.default_backoff().modify(Cache::slim);
    tokio::spawn(events.for_each(move |event| {
        if let Ok(event) = event {
            cache.observe(&event);
            if let watcher::Event::Delete(object) = &event {
                let owner = object.annotations().get(ANNOTATION_ENTRY);
                if let Some((namespace, name)) = owner.and_then(|o| o.split_once('/')) {
                    let entry = reflector::ObjectRef::new(name).within(namespace);
                    let _ = deleted.unbounded_send(entry);
                }
            }
        }
        std::future::ready(())
    }));
    Controller::for_stream(touched, entries)
        .with_config(kube::runtime::controller::Config::default().concurrency(2))
        .reconcile_on(versions)
        .reconcile_all_on(start)
}

/// Writes what an entry's history should show where the cache says it differs.
pub async fn reconcile(entry: Arc<ConfigEntry>, ctx: Arc<Context>) -> Result<Action> {
    if entry.metadata.deletion_timestamp.is_some() {
        // The history stays: it is the record of what was live.
        return Ok(Action::await_change());
    }
    let namespace = entry.namespace().unwrap_or_default();
    let owner = format!("{namespace}/{}", entry.name_any());
    let cached = ctx.caches.history.of(&owner);
    let summary: Vec<(i64, String)> = cached
        .iter()
        .filter_map(|meta| {
            let annotations = meta.annotations();
            let version = annotations.get(ANNOTATION_VERSION)?.parse().ok()?;
            let live_in = annotations
                .get(ANNOTATION_LIVE_IN)
                .cloned()
                .unwrap_or_default();
            Some((version, live_in))
        })
        .collect();
    if desired::up_to_date(&entry, &summary, ctx.settings.history_keep) {
        return Ok(Action::await_change());
    }
    let config_id = &entry.spec.config_id;
    let stores = &ctx.stores;
    let wanted = desired::wanted_numbers(&entry, ctx.settings.history_keep);
    let (versions, applied, trail) = tokio::try_join!(
        stores.versions_numbered(config_id, &wanted),
        stores.applied(config_id),
        stores.trail(config_id),
    )
    .map_err(Error::Store)?;
    let recorded = desired::Recorded {
        versions: &versions,
        applied: &applied,
        trail: &trail,
    };
    let wanted = desired::history(&entry, &recorded, ctx.settings.history_keep);
    write(&ctx, &namespace, &cached, &wanted).await?;
    Ok(Action::await_change())
}

/// Applies each wanted ConfigVersion whose digest the cache does not hold, and deletes
/// the cached ones no longer wanted.
async fn write(
    ctx: &Context,
    namespace: &str,
    cached: &[Arc<Meta>],
    wanted: &[ConfigVersion],
) -> Result<()> {
    let api = ctx.namespaced::<ConfigVersion>(namespace);
    let digest = |annotations: &std::collections::BTreeMap<String, String>| {
        annotations.get(ANNOTATION_DIGEST).cloned()
    };
    for object in wanted {
        let name = object.name_any();
        let held = cached.iter().find(|m| m.name_any() == name);
        if held.is_some_and(|m| digest(m.annotations()) == digest(object.annotations())) {
            continue;
        }
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(Error::kube(format!(
            "apply ConfigVersion {namespace}/{name}"
        )))?;
        ctx.count_write(KIND, "configversion");
    }
    for stale in cached {
        let name = stale.name_any();
        if wanted.iter().any(|w| w.name_any() == name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => ctx.count_write(KIND, "configversion"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                return Err(Error::kube(format!(
                    "delete ConfigVersion {namespace}/{name}"
                ))(error));
            }
        }
    }
    Ok(())
}

pub fn error_policy(entry: Arc<ConfigEntry>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, entry.as_ref(), error, &ctx)
}

/// Every entry event the entry controller's watch sees, told to two followers.
pub fn tee<T: Clone + Send + 'static>(
    mut events: futures::channel::mpsc::UnboundedReceiver<T>,
) -> (
    futures::channel::mpsc::UnboundedReceiver<T>,
    futures::channel::mpsc::UnboundedReceiver<T>,
) {
    let (first, first_out) = futures::channel::mpsc::unbounded();
    let (second, second_out) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let _ = first.unbounded_send(event.clone());
            let _ = second.unbounded_send(event);
        }
    });
    (first_out, second_out)
}

//! A watch cache that keeps each object packed (see [`Packed`]), for the projected
//! ConfigMaps: two per entry, each read by one reconcile at a time, and otherwise only
//! kept. As parsed objects they were the largest part of the operator's memory at
//! 10,000 entries (3 KB each, most of it the maps of their metadata).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use kube::{ResourceExt, runtime::watcher};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::store::Packed;

/// Objects by (namespace, name).
type Objects<K> = HashMap<(String, String), Packed<K>>;

/// The cache of one watch, filled from its events.
pub struct PackedCache<K> {
    state: Arc<Mutex<State<K>>>,
    ready: watch::Receiver<bool>,
}

struct State<K> {
    objects: Objects<K>,
    /// What a relist found so far; it replaces `objects` when the relist ends.
    relist: Option<Objects<K>>,
    ready: watch::Sender<bool>,
}

impl<K> Clone for PackedCache<K> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: ResourceExt + Serialize + DeserializeOwned> PackedCache<K> {
    pub fn new() -> Self {
        let (ready, waiting) = watch::channel(false);
        let state = State {
            objects: HashMap::new(),
            relist: None,
            ready,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            ready: waiting,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows one event of the watch this cache belongs to.
    pub fn observe(&self, event: &watcher::Event<K>) {
        let mut state = self.lock();
        match event {
            watcher::Event::Apply(object) => {
                state.objects.insert(place(object), Packed::new(object));
            }
            watcher::Event::Delete(object) => {
                state.objects.remove(&place(object));
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                let relist = state.relist.get_or_insert_default();
                relist.insert(place(object), Packed::new(object));
            }
            watcher::Event::InitDone => {
                state.objects = state.relist.take().unwrap_or_default();
                state.ready.send_replace(true);
            }
        }
    }

    /// An object, unpacked.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let state = self.lock();
        let packed = state
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))?;
        Some(Arc::new(packed.get()))
    }

    /// Waits until the watch listed everything once.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        // The sender lives as long as the cache: it cannot be dropped while waiting.
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

fn place(object: &impl ResourceExt) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event;

    use super::*;

    fn config_map(name: &str, value: &str) -> ConfigMap {
        let mut config_map = ConfigMap::default();
        config_map.metadata.name = Some(name.to_owned());
        config_map.metadata.namespace = Some("team".to_owned());
        config_map.data = Some([("config.json".to_owned(), value.to_owned())].into());
        config_map
    }

    #[tokio::test]
    async fn the_cache_follows_its_watch_and_is_ready_once_listed() {
        let cache = PackedCache::new();
        cache.observe(&Event::Init);
        cache.observe(&Event::InitApply(config_map("a", "1")));
        assert!(!*cache.ready.borrow());
        assert!(cache.get("team", "a").is_none(), "not until the list ends");
        cache.observe(&Event::InitDone);
        cache.wait_until_ready().await;
        assert_eq!(*cache.get("team", "a").unwrap(), config_map("a", "1"));

        cache.observe(&Event::Apply(config_map("a", "2")));
        cache.observe(&Event::Apply(config_map("b", "1")));
        assert_eq!(*cache.get("team", "a").unwrap(), config_map("a", "2"));
        cache.observe(&Event::Delete(config_map("b", "1")));
        assert!(cache.get("team", "b").is_none());

        // A relist replaces everything when it ends.
        cache.observe(&Event::Init);
        cache.observe(&Event::InitApply(config_map("c", "1")));
        cache.observe(&Event::InitDone);
        assert!(cache.get("team", "a").is_none());
        assert!(cache.get("team", "c").is_some());
    }
}

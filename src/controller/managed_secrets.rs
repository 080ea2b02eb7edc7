//! The Secrets the operator projected, from label-selected watches of the namespaces
//! where it manages Secrets. The cache never holds a value: as each Secret arrives, the
//! value of every key is replaced by that key's checksum (see
//! [`key_checksums`](crate::core::render::key_checksums)). That is all the entry controller
//! needs to skip an unchanged projection or notice a deleted one, and all a DriftCheck
//! needs to report a hand edit.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::WriterDropped},
        watcher,
    },
};

use super::owners::Owners;
use crate::api::v1alpha1::{
    ANNOTATION_ENTRY, ANNOTATION_POLICY, ANNOTATION_SECRETS_CHECKSUM, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::{
    api::v1alpha1::{ConfigEntry, SecretRotationPolicy},
    core::render::key_checksums,
};

/// Where the operator manages Secrets: the namespaces it is granted, or everything it
/// watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretScope {
    Namespaces(Vec<String>),
    Watched(Option<String>),
}

/// Key checksums by Secret (namespace, name).
type Expectations = HashMap<(String, String), BTreeMap<String, String>>;

/// Caches of projected Secrets, one per watched namespace (or one for all).
#[derive(Clone)]
pub struct ManagedSecrets {
    scope: SecretScope,
    stores: Vec<Store<Secret>>,
    /// Which of them each entry made, per store.
    owners: Vec<Owners>,
    /// Key checksums each Secret (namespace, name) should hold, as its writer (an
    /// entry's projection, or a rotation policy) last resolved them: what a DriftCheck,
    /// or a policy repairing its target, compares the Secret with. In memory only, like
    /// the key they are made with.
    expectations: Arc<Mutex<Expectations>>,
}

impl ManagedSecrets {
    /// Records what the Secret `namespace/name` should hold, written now or not.
    pub fn expect(&self, namespace: &str, name: &str, keys: BTreeMap<String, String>) {
        let key = (namespace.to_owned(), name.to_owned());
        self.expectations().insert(key, keys);
    }

    /// What the Secret `namespace/name` should hold, once its writer knows.
    pub fn expected(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let key = (namespace.to_owned(), name.to_owned());
        self.expectations().get(&key).cloned()
    }

    /// Forgets a Secret nothing projects any more.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        self.expectations().remove(&key);
    }

    fn expectations(&self) -> std::sync::MutexGuard<'_, Expectations> {
        self.expectations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the operator manages Secrets in `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        match &self.scope {
            SecretScope::Namespaces(namespaces) => namespaces.iter().any(|n| n == namespace),
            SecretScope::Watched(watched) => watched.as_deref().is_none_or(|w| w == namespace),
        }
    }

    /// What the operator may be told to manage, for error messages.
    pub fn describe(&self) -> String {
        match &self.scope {
            SecretScope::Namespaces(namespaces) if namespaces.is_empty() => {
                "no namespace (operator.secretNamespaces is empty)".into()
            }
            SecretScope::Namespaces(namespaces) => format!("{namespaces:?}"),
            SecretScope::Watched(Some(namespace)) => format!("{namespace:?}"),
            SecretScope::Watched(None) => "every namespace".into(),
        }
    }

    /// A projected Secret, values replaced by their checksums.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores.iter().find_map(|store| store.get(&key))
    }

    /// Every projected Secret.
    pub fn state(&self) -> Vec<Arc<Secret>> {
        self.stores.iter().flat_map(Store::state).collect()
    }

    /// The places (namespace, name) of the Secrets `owner` (an entry's
    /// `namespace/name`) projected.
    pub fn projected_by(&self, owner: &str) -> Vec<(String, String)> {
        self.owners
            .iter()
            .flat_map(|owners| owners.of(owner))
            .collect()
    }

    /// A Secret read from the apiserver rather than the cache, its values replaced by
    /// their checksums as the cache would hold it.
    pub async fn fetch(
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> kube::Result<Option<Arc<Secret>>> {
        let found = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?;
        Ok(found.map(|mut secret| {
            forget_values(&mut secret);
            Arc::new(secret)
        }))
    }

    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        for store in &self.stores {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Starts filling the caches of `scope`: the caches, and a stream of the Secrets that
/// changed (deleted ones included), which must be polled for the caches to fill.
pub fn watch(
    client: &Client,
    scope: SecretScope,
) -> (
    ManagedSecrets,
    impl Stream<Item = Arc<Secret>> + Send + 'static,
) {
    let apis: Vec<Api<Secret>> = match &scope {
        SecretScope::Namespaces(namespaces) => namespaces
            .iter()
            .map(|n| Api::namespaced(client.clone(), n))
            .collect(),
        SecretScope::Watched(Some(namespace)) => vec![Api::namespaced(client.clone(), namespace)],
        SecretScope::Watched(None) => vec![Api::all(client.clone())],
    };
    let mut stores = Vec::new();
    let mut owner_indexes = Vec::new();
    let mut streams = Vec::new();
    // A store per watch: one watch's initial list replaces its whole store.
    for api in apis {
        let (store, writer) = reflector::store();
        stores.push(store);
        let owners = Owners::default();
        owner_indexes.push(owners.clone());
        let events = watcher(
            api,
            watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
        )
        .default_backoff()
        .map_ok(|event| event.modify(forget_values))
        .reflect(writer)
        .inspect_ok(move |event| owners.observe(event))
        .touched_objects()
        .filter_map(|secret| std::future::ready(secret.ok().map(Arc::new)));
        streams.push(events.boxed());
    }
    (
        ManagedSecrets {
            scope,
            stores,
            owners: owner_indexes,
            expectations: Arc::default(),
        },
        futures::stream::select_all(streams),
    )
}

/// The owner of a projected Secret, from its annotations.
pub enum Owner {
    Entry(ObjectRef<ConfigEntry>),
    Policy(ObjectRef<SecretRotationPolicy>),
}

/// Drives the Secret watches in a task of their own, so the caches fill before any
/// reconcile needs them, and brings the owner of a Secret edited or deleted by hand
/// back to repair it: the entries' and the policies' requests, in that order.
pub fn owners(
    secrets: impl Stream<Item = Arc<Secret>> + Send + 'static,
) -> (
    impl Stream<Item = ObjectRef<ConfigEntry>> + Send + 'static,
    impl Stream<Item = ObjectRef<SecretRotationPolicy>> + Send + 'static,
) {
    let (entries, entry_requests) = futures::channel::mpsc::unbounded();
    let (policies, policy_requests) = futures::channel::mpsc::unbounded();
    tokio::spawn(secrets.for_each(move |secret| {
        match owner(&secret) {
            Some(Owner::Entry(entry)) => drop(entries.unbounded_send(entry)),
            Some(Owner::Policy(policy)) => drop(policies.unbounded_send(policy)),
            None => {}
        }
        std::future::ready(())
    }));
    (entry_requests, policy_requests)
}

fn owner(secret: &Secret) -> Option<Owner> {
    let annotations = secret.annotations();
    let split = |key: &str| annotations.get(key)?.split_once('/');
    if let Some((namespace, name)) = split(ANNOTATION_ENTRY) {
        return Some(Owner::Entry(ObjectRef::new(name).within(namespace)));
    }
    let (namespace, name) = split(ANNOTATION_POLICY)?;
    Some(Owner::Policy(ObjectRef::new(name).within(namespace)))
}

/// Replaces each value by its checksum, before the Secret reaches the cache.
fn forget_values(secret: &mut Secret) {
    let salt = secret
        .annotations()
        .get(ANNOTATION_SECRETS_CHECKSUM)
        .cloned()
        .unwrap_or_default();
    let data = secret.data.take().unwrap_or_default();
    let string_data = secret.string_data.take().unwrap_or_default();
    let values = data
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .chain(string_data.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    secret.data = Some(
        key_checksums(&salt, values)
            .into_iter()
            .map(|(key, sum)| (key, ByteString(sum.into_bytes())))
            .collect(),
    );
    secret.metadata.managed_fields = None;
}

/// The key checksums a cached Secret holds.
pub fn cached_checksums(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, sum)| (key.clone(), String::from_utf8_lossy(&sum.0).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_holds_checksums_not_values() {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "annotations": {ANNOTATION_SECRETS_CHECKSUM: "v1"}},
            "data": {"PASSWORD": "aHVudGVyMg=="},
        }))
        .unwrap();
        forget_values(&mut secret);
        let cached = cached_checksums(&secret);
        assert_eq!(
            cached,
            key_checksums("v1", [("PASSWORD", b"hunter2".as_slice())])
        );
        assert!(
            !serde_json::to_string(&secret)
                .unwrap()
                .contains("aHVudGVyMg")
        );
    }
}

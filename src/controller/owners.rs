//! Which projected objects each entry made, by their entry annotation, kept beside a
//! watch cache: a reconcile asks for its own projections instead of scanning every
//! projection in the cluster, which at 10,000 entries made a cold start quadratic.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use kube::{ResourceExt, runtime::watcher};

use crate::api::v1alpha1::ANNOTATION_ENTRY;

/// An object's place: namespace and name.
type Place = (String, String);

/// The owner index of one watch, kept as its events arrive.
#[derive(Clone, Default)]
pub struct Owners(Arc<Mutex<Index>>);

#[derive(Default)]
struct Index {
    owner_of: HashMap<Place, String>,
    /// An entry has a projection or two per environment: a list is the smallest set.
    places_of: HashMap<String, Vec<Place>>,
    /// Owners seen so far during a relist, which replaces the index when it ends.
    relist: Option<HashMap<Place, String>>,
}

impl Index {
    fn insert(&mut self, place: Place, owner: String) {
        self.remove(&place);
        let places = self.places_of.entry(owner.clone()).or_default();
        places.push(place.clone());
        self.owner_of.insert(place, owner);
    }

    fn remove(&mut self, place: &Place) {
        let Some(owner) = self.owner_of.remove(place) else {
            return;
        };
        if let Some(places) = self.places_of.get_mut(&owner) {
            places.retain(|p| p != place);
            if places.is_empty() {
                self.places_of.remove(&owner);
            }
        }
    }
}

impl Owners {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows one event of the watch this index belongs to.
    pub fn observe<K: ResourceExt>(&self, event: &watcher::Event<K>) {
        let mut index = self.lock();
        match event {
            watcher::Event::Apply(object) => match owner_and_place(object) {
                (Some(owner), place) => index.insert(place, owner),
                (None, place) => index.remove(&place),
            },
            watcher::Event::Delete(object) => index.remove(&owner_and_place(object).1),
            watcher::Event::Init => index.relist = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                if let (Some(owner), place) = owner_and_place(object) {
                    index.relist.get_or_insert_default().insert(place, owner);
                }
            }
            watcher::Event::InitDone => {
                let listed = index.relist.take().unwrap_or_default();
                *index = Index::default();
                for (place, owner) in listed {
                    index.insert(place, owner);
                }
            }
        }
    }

    /// The places of the objects `owner` (an entry's `namespace/name`) projected.
    pub fn of(&self, owner: &str) -> Vec<Place> {
        let index = self.lock();
        index
            .places_of
            .get(owner)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

fn owner_and_place<K: ResourceExt>(object: &K) -> (Option<String>, Place) {
    let owner = object.annotations().get(ANNOTATION_ENTRY).cloned();
    (
        owner,
        (object.namespace().unwrap_or_default(), object.name_any()),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event;

    use super::*;

    fn projected(name: &str, owner: Option<&str>) -> ConfigMap {
        let mut config_map = ConfigMap::default();
        config_map.metadata.name = Some(name.to_owned());
        config_map.metadata.namespace = Some("team".to_owned());
        if let Some(owner) = owner {
            config_map
                .annotations_mut()
                .insert(ANNOTATION_ENTRY.to_owned(), owner.to_owned());
        }
        config_map
    }

    fn names(owners: &Owners, owner: &str) -> Vec<String> {
        owners.of(owner).into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn an_entry_finds_what_it_projected_as_the_watch_changes() {
        let owners = Owners::default();
        owners.observe(&Event::Apply(projected("a-dev", Some("team/a"))));
        owners.observe(&Event::Apply(projected("a-prod", Some("team/a"))));
        owners.observe(&Event::Apply(projected("b-dev", Some("team/b"))));
        assert_eq!(names(&owners, "team/a"), ["a-dev", "a-prod"]);

        // Taken over by another entry, its annotation dropped, deleted.
        owners.observe(&Event::Apply(projected("a-dev", Some("team/b"))));
        owners.observe(&Event::Apply(projected("b-dev", None)));
        owners.observe(&Event::Delete(projected("a-prod", Some("team/a"))));
        assert!(owners.of("team/a").is_empty());
        assert_eq!(names(&owners, "team/b"), ["a-dev"]);
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_ends() {
        let owners = Owners::default();
        owners.observe(&Event::Apply(projected("gone", Some("team/a"))));
        owners.observe(&Event::<ConfigMap>::Init);
        owners.observe(&Event::InitApply(projected("kept", Some("team/a"))));
        assert_eq!(names(&owners, "team/a"), ["gone"], "until the relist ends");
        owners.observe(&Event::<ConfigMap>::InitDone);
        assert_eq!(names(&owners, "team/a"), ["kept"]);
    }
}

//! Publishing Events (events.k8s.io/v1). The same Event repeated within a few minutes
//! becomes a series on the first one, as kubectl and the apiserver expect.
//!
//! What is remembered of recent Events is a key, a name and a count, and it is expired
//! in the order it was written, so publishing costs the same at ten thousand objects as
//! at ten, and memory stays bounded by how many Events the last minutes saw.

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

/// How long a repeated Event joins the series of the first instead of being written
/// anew.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// The longest note the apiserver accepts, in bytes.
const NOTE_LIMIT: usize = 1024;

/// Whether an Event reports something normal or a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

/// Writes Events as the operator, and remembers the recent ones for their series.
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

/// Recent Events by key, and the order in which they expire.
#[derive(Default)]
struct Recent {
    seen: HashMap<u64, Seen>,
    expiry: VecDeque<(Instant, u64)>,
}

struct Seen {
    name: String,
    count: i32,
    last: Instant,
}

impl Recent {
    /// Forgets what was last seen more than the window ago. An entry seen again since
    /// is queued again, so each is dropped exactly when its last sighting expires.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.expiry.front() {
            if now.duration_since(at) < SERIES_WINDOW {
                break;
            }
            self.expiry.pop_front();
            if self.seen.get(&key).is_some_and(|seen| seen.last == at) {
                self.seen.remove(&key);
            }
        }
    }

    /// Notes an Event about to be written: returns the series it joins (the first
    /// Event's name and the new count), or `None` for a new Event named `name`.
    fn note(
        &mut self,
        key: u64,
        name: impl FnOnce() -> String,
        now: Instant,
    ) -> Option<(String, i32)> {
        self.expire(now);
        self.expiry.push_back((now, key));
        match self.seen.get_mut(&key) {
            Some(seen) => {
                seen.count += 1;
                seen.last = now;
                Some((seen.name.clone(), seen.count))
            }
            None => {
                let seen = Seen {
                    name: name(),
                    count: 1,
                    last: now,
                };
                self.seen.insert(key, seen);
                None
            }
        }
    }

    /// Forgets an Event whose write failed, so that the next one is written anew.
    fn forget(&mut self, key: u64) {
        self.seen.remove(&key);
    }
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: Option<&str>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or(controller).to_owned(),
            recent: Mutex::default(),
        }
    }

    /// Publishes an Event about `regarding`, or counts it on the series of the same
    /// Event published within the last minutes.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note = truncated(note, NOTE_LIMIT);
        let key = key_of(regarding, type_, reason, note);
        let now = Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        let name = format!("{object}.{:x}", now.as_nanosecond());
        let series = self.lock().note(key, || name.clone(), Instant::now());
        let written = match series {
            Some((name, count)) => {
                let patch = serde_json::json!({
                    "series": {"count": count, "lastObservedTime": MicroTime(now)},
                });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(drop)
            }
            None => {
                let event = self.event(name, regarding, (type_, reason, note), now);
                api.create(&PostParams::default(), &event).await.map(drop)
            }
        };
        if written.is_err() {
            self.lock().forget(key);
        }
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn event(
        &self,
        name: String,
        regarding: &ObjectReference,
        (type_, reason, note): (EventType, &str, &str),
        now: Timestamp,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some("Reconcile".to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note.to_owned()),
            type_: Some(format!("{type_:?}")),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// What makes two Events the same: the object, the type, the reason and the note.
fn key_of(regarding: &ObjectReference, type_: EventType, reason: &str, note: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &regarding.uid,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
    )
        .hash(&mut hasher);
    (type_, reason, note).hash(&mut hasher);
    hasher.finish()
}

/// `note` cut to at most `limit` bytes, on a character boundary.
fn truncated(note: &str, limit: usize) -> &str {
    if note.len() <= limit {
        return note;
    }
    let mut end = limit;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_event_joins_the_series_of_the_first() {
        let mut recent = Recent::default();
        let start = Instant::now();
        assert_eq!(recent.note(1, || "a.1".into(), start), None);
        let later = start + Duration::from_secs(60);
        assert_eq!(
            recent.note(1, || "a.2".into(), later),
            Some(("a.1".into(), 2))
        );
        assert_eq!(recent.note(2, || "b.1".into(), later), None);
    }

    #[test]
    fn an_event_is_forgotten_once_its_last_sighting_leaves_the_window() {
        let mut recent = Recent::default();
        let start = Instant::now();
        recent.note(1, || "a.1".into(), start);
        recent.note(2, || "b.1".into(), start);
        let renewed = start + Duration::from_secs(300);
        recent.note(1, || "a.2".into(), renewed);
        let after_first = start + SERIES_WINDOW + Duration::from_secs(1);
        recent.expire(after_first);
        assert!(recent.seen.contains_key(&1), "seen again within the window");
        assert!(!recent.seen.contains_key(&2));
        assert_eq!(recent.note(2, || "b.2".into(), after_first), None);
        recent.expire(renewed + SERIES_WINDOW);
        assert!(!recent.seen.contains_key(&1));
        assert_eq!(recent.expiry.len(), 1, "only b's new sighting is left");
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aéb", 3), "aé");
    }
}

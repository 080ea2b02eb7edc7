//! The versions the stores remember. A recorded version never changes and its number
//! is never reused, so one read serves for good; but a config id's history grows
//! without end, and a reconcile reads only a few of it: its newest version and the
//! ones live in its environments. So each config id keeps its most recently used
//! versions, up to [`PER_CONFIG_ID`], packed (see [`Packed`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use super::Packed;
use crate::store::Version;

/// The versions kept per config id: more than a config id has environments on distinct
/// versions, in practice.
const PER_CONFIG_ID: usize = 8;

/// One config id's versions by number, most recently used first.
type Kept = VecDeque<(i64, Packed<Version>)>;

/// Versions by config id.
#[derive(Default)]
pub(super) struct Remembered(Mutex<HashMap<String, Kept>>);

impl Remembered {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Kept>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers `version` as the most recently used of its config id.
    pub(super) fn insert(&self, version: &Version) {
        let mut by_id = self.lock();
        let kept = by_id.entry(version.config_id.clone()).or_default();
        kept.retain(|(number, _)| *number != version.version);
        kept.push_front((version.version, Packed::new(version)));
        kept.truncate(PER_CONFIG_ID);
    }

    /// A version, if remembered; it becomes the most recently used of its config id.
    pub(super) fn get(&self, config_id: &str, number: i64) -> Option<Version> {
        let mut by_id = self.lock();
        let kept = by_id.get_mut(config_id)?;
        let at = kept.iter().position(|(n, _)| *n == number)?;
        let used = kept.remove(at)?;
        let version = used.1.get();
        kept.push_front(used);
        Some(version)
    }

    /// Whether a version is remembered.
    pub(super) fn contains(&self, config_id: &str, number: i64) -> bool {
        let by_id = self.lock();
        by_id
            .get(config_id)
            .is_some_and(|kept| kept.iter().any(|(n, _)| *n == number))
    }

    /// Versions 1 to `newest` of a config id, oldest first, if all are remembered.
    pub(super) fn all(&self, config_id: &str, newest: i64) -> Option<Vec<Version>> {
        let by_id = self.lock();
        let kept = by_id.get(config_id)?;
        (1..=newest)
            .map(|number| {
                let found = kept.iter().find(|(n, _)| *n == number);
                found.map(|(_, packed)| packed.get())
            })
            .collect()
    }

    /// The newest remembered version of `config_id` that is `matching`.
    pub(super) fn newest(
        &self,
        config_id: &str,
        matching: impl Fn(&Version) -> bool,
    ) -> Option<Version> {
        let by_id = self.lock();
        let kept = by_id.get(config_id)?;
        let versions = kept.iter().map(|(_, packed)| packed.get());
        versions.filter(matching).max_by_key(|v| v.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Snapshot, Source};

    fn version(config_id: &str, number: i64) -> Version {
        Version {
            config_id: config_id.to_owned(),
            version: number,
            owner: "team/entry".to_owned(),
            snapshot: Snapshot {
                data: serde_json::json!({"n": number}),
                overrides: Default::default(),
                secrets: serde_json::Value::Null,
            },
            checksum: format!("sum-{number}"),
            source: Source::Spec,
            created_by: "alice".to_owned(),
            authors: Vec::new(),
            created_at: "2026-11-30T00:00:00Z".parse().expect("timestamp"),
            message: String::new(),
        }
    }

    #[test]
    fn a_long_history_keeps_its_most_recently_used_versions() {
        let remembered = Remembered::default();
        for number in 1..=3 {
            remembered.insert(&version("a", number));
        }
        assert_eq!(
            remembered.all("a", 3).map(|all| all.len()),
            Some(3),
            "all of a short history"
        );
        // Version 1 stays live in an environment while 20 more are recorded.
        for number in 4..=23 {
            remembered.insert(&version("a", number));
            assert_eq!(remembered.get("a", 1), Some(version("a", 1)));
        }
        assert!(remembered.contains("a", 23) && remembered.contains("a", 1));
        assert!(
            !remembered.contains("a", 2),
            "an unused old version is let go"
        );
        assert_eq!(remembered.all("a", 23), None);
        let kept = (1..=23).filter(|n| remembered.contains("a", *n)).count();
        assert_eq!(kept, PER_CONFIG_ID);
        assert_eq!(
            remembered
                .newest("a", |v| v.version < 23)
                .map(|v| v.version),
            Some(22)
        );
        assert_eq!(remembered.get("b", 1), None);
    }
}

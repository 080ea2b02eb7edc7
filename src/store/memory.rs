//! The in-memory store: the read cache, and the whole store when no database is
//! configured (a demo mode whose history ends with the process).

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::jiff::Timestamp;

use super::{
    Application, AppliedState, Error, NewVersion, Recorded, Result, Version, VersionStore, Workflow,
};

#[derive(Default)]
struct State {
    versions: HashMap<String, Vec<Version>>,
    applied: HashMap<(String, String), AppliedState>,
    workflows: HashMap<String, Workflow>,
}

/// Versions and applied state in process memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemoryStore {
    /// Keeps a workflow; returns whether it changed.
    pub fn sync_workflow(&self, workflow: &Workflow) -> bool {
        let mut state = self.lock();
        let known = state.workflows.get(&workflow.change_id);
        if known == Some(workflow) {
            return false;
        }
        state
            .workflows
            .insert(workflow.change_id.clone(), workflow.clone());
        true
    }

    /// The newest version a ConfigChange (`change`: its id) recorded for a config id.
    pub fn recorded_by(&self, config_id: &str, change: &str) -> Option<Version> {
        self.lock().versions.get(config_id).and_then(|versions| {
            versions
                .iter()
                .rev()
                .find(|v| matches!(&v.source, super::Source::Change { change: c } if c == change))
                .cloned()
        })
    }

    /// Removes a config id's applied state.
    pub fn forget(&self, config_id: &str) {
        self.lock().applied.retain(|(id, _), _| id != config_id);
    }
}

impl VersionStore for MemoryStore {
    async fn record_version(&self, new: &NewVersion) -> Result<Recorded> {
        let mut state = self.lock();
        let versions = state.versions.entry(new.config_id.clone()).or_default();
        if let Some(first) = versions.first()
            && first.owner != new.owner
        {
            return Err(Error::Owned {
                config_id: new.config_id.clone(),
                owner: first.owner.clone(),
                claimant: new.owner.clone(),
            });
        }
        let same_source = versions.iter().rev().find(|v| v.source == new.source);
        if let Some(latest) = same_source
            && latest.checksum == new.checksum
        {
            return Ok(Recorded {
                version: latest.clone(),
                created: false,
            });
        }
        let newest = versions.last().map_or(0, |v| v.version);
        if let Some(based_on) = new.based_on
            && based_on != newest
        {
            return Err(Error::Superseded {
                config_id: new.config_id.clone(),
                based_on,
                latest: newest,
            });
        }
        let version = Version {
            config_id: new.config_id.clone(),
            version: newest + 1,
            owner: new.owner.clone(),
            snapshot: new.snapshot.clone(),
            checksum: new.checksum.clone(),
            source: new.source.clone(),
            created_by: new.created_by.clone(),
            created_at: Timestamp::now(),
            message: new.message.clone(),
        };
        versions.push(version.clone());
        Ok(Recorded {
            version,
            created: true,
        })
    }

    async fn store_version(&self, version: &Version) -> Result<()> {
        let mut state = self.lock();
        let versions = state.versions.entry(version.config_id.clone()).or_default();
        match versions.iter().find(|v| v.version == version.version) {
            Some(existing) if existing.checksum != version.checksum => Err(Error::Diverged {
                config_id: version.config_id.clone(),
                version: version.version,
                backend: "memory",
            }),
            Some(_) => Ok(()),
            None => {
                versions.push(version.clone());
                versions.sort_by_key(|v| v.version);
                Ok(())
            }
        }
    }

    async fn apply(&self, application: &Application) -> Result<bool> {
        let mut state = self.lock();
        let key = (
            application.config_id.clone(),
            application.environment.clone(),
        );
        if state
            .applied
            .get(&key)
            .is_some_and(|a| a.version == application.version && a.checksum == application.checksum)
        {
            return Ok(false);
        }
        if let Some(newer) = state
            .applied
            .get(&key)
            .filter(|a| application.forward_only && a.version > application.version)
        {
            return Err(Error::Superseded {
                config_id: application.config_id.clone(),
                based_on: application.version,
                latest: newer.version,
            });
        }
        state.applied.insert(
            key,
            AppliedState {
                config_id: application.config_id.clone(),
                environment: application.environment.clone(),
                version: application.version,
                checksum: application.checksum.clone(),
                applied_at: Timestamp::now(),
            },
        );
        Ok(true)
    }

    async fn store_applied(&self, applied: &AppliedState) -> Result<()> {
        let key = (applied.config_id.clone(), applied.environment.clone());
        self.lock().applied.insert(key, applied.clone());
        Ok(())
    }

    async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        Ok(self
            .lock()
            .versions
            .get(config_id)
            .and_then(|v| v.last().cloned()))
    }

    async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        Ok(self
            .lock()
            .versions
            .get(config_id)
            .and_then(|versions| versions.iter().find(|v| v.version == version).cloned()))
    }

    async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        Ok(self
            .lock()
            .versions
            .get(config_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        let mut applied: Vec<AppliedState> = self
            .lock()
            .applied
            .values()
            .filter(|a| a.config_id == config_id)
            .cloned()
            .collect();
        applied.sort_by(|a, b| a.environment.cmp(&b.environment));
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Snapshot, Source};
    use serde_json::json;

    fn new_version(checksum: &str, owner: &str) -> NewVersion {
        NewVersion {
            config_id: "payments".into(),
            owner: owner.into(),
            snapshot: Snapshot {
                data: json!({"checksum": checksum}),
                overrides: Default::default(),
                secrets: serde_json::Value::Null,
            },
            checksum: checksum.into(),
            source: Source::Spec,
            created_by: "alice".into(),
            message: "test".into(),
            based_on: None,
        }
    }

    #[tokio::test]
    async fn recording_the_same_content_twice_makes_one_version() {
        let store = MemoryStore::default();
        let first = store
            .record_version(&new_version("a", "ns/p"))
            .await
            .unwrap();
        let again = store
            .record_version(&new_version("a", "ns/p"))
            .await
            .unwrap();
        assert!(first.created && !again.created);
        assert_eq!(again.version.version, 1);
        let second = store
            .record_version(&new_version("b", "ns/p"))
            .await
            .unwrap();
        assert_eq!(second.version.version, 2);
        // Going back to earlier content is a new version, never a reused number.
        let third = store
            .record_version(&new_version("a", "ns/p"))
            .await
            .unwrap();
        assert_eq!(third.version.version, 3);
    }

    #[tokio::test]
    async fn another_entry_cannot_take_over_a_config_id() {
        let store = MemoryStore::default();
        store
            .record_version(&new_version("a", "team-a/p"))
            .await
            .unwrap();
        let error = store
            .record_version(&new_version("b", "team-b/p"))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Owned { .. }), "{error}");
    }
}

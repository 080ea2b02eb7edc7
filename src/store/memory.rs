//! The in-memory store: the read cache, and the whole store when no database is
//! configured (a demo mode whose history ends with the process).

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::jiff::Timestamp;

use super::{
    Application, AppliedState, Claimant, Error, Floor, FloorUpdate, NewVersion, Projection,
    Recorded, Result, Target, Version, VersionStore, Workflow,
};
use crate::core::ownership::{self, ClaimVerdict};

#[derive(Default)]
struct State {
    versions: HashMap<String, Vec<Version>>,
    applied: HashMap<(String, String), AppliedState>,
    workflows: HashMap<String, Workflow>,
    claims: HashMap<String, Claimant>,
    floors: HashMap<String, Vec<Floor>>,
    bindings: HashMap<Target, Projection>,
}

impl State {
    /// Checks (and takes, or renews) `claimant`'s claim on `config_id`.
    fn claim(&mut self, config_id: &str, claimant: &Claimant) -> Result<()> {
        match ownership::claim(config_id, self.claims.get(config_id), claimant) {
            ClaimVerdict::Holds => Ok(()),
            ClaimVerdict::Take | ClaimVerdict::Renew => {
                self.claims.insert(config_id.to_owned(), claimant.clone());
                Ok(())
            }
            ClaimVerdict::Refuse(refused) => Err(Error::Claimed(refused)),
        }
    }

    fn record_floor(&mut self, config_id: &str, floor: Floor) {
        let floors = self.floors.entry(config_id.to_owned()).or_default();
        floors.retain(|f| f.environment != floor.environment);
        floors.push(floor);
    }
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

    /// Removes a config id's applied state. Its claim and floors stay.
    pub fn forget(&self, config_id: &str) {
        self.lock().applied.retain(|(id, _), _| id != config_id);
    }

    /// Checks (and takes, or renews) a claim on a config id.
    pub fn claim(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        self.lock().claim(config_id, claimant)
    }

    /// Who holds a config id.
    pub fn holder(&self, config_id: &str) -> Option<Claimant> {
        self.lock().claims.get(config_id).cloned()
    }

    /// Checks that `claimant` holds a config id, taking nothing.
    pub fn verify(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        match ownership::claim(config_id, self.lock().claims.get(config_id), claimant) {
            ClaimVerdict::Holds => Ok(()),
            ClaimVerdict::Refuse(refused) => Err(Error::Claimed(refused)),
            ClaimVerdict::Take | ClaimVerdict::Renew => Err(Error::Unclaimed {
                config_id: config_id.to_owned(),
                entry: claimant.entry(),
            }),
        }
    }

    /// The floors recorded for a config id's environments.
    pub fn floors(&self, config_id: &str) -> Vec<Floor> {
        self.lock()
            .floors
            .get(config_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Records an environment's floor.
    pub fn record_floor(&self, config_id: &str, claimant: &Claimant, floor: Floor) -> Result<()> {
        let mut state = self.lock();
        state.claim(config_id, claimant)?;
        state.record_floor(config_id, floor);
        Ok(())
    }

    /// Binds `target` to `projection` unless it is bound already; returns what it is
    /// bound to now.
    pub fn bind(&self, target: &Target, projection: &Projection) -> Projection {
        self.lock()
            .bindings
            .entry(target.clone())
            .or_insert_with(|| projection.clone())
            .clone()
    }

    /// Moves `target`'s binding to `to`, if it is still bound to `from`.
    pub fn rebind(&self, target: &Target, from: &Projection, to: &Projection) {
        let mut state = self.lock();
        if state.bindings.get(target) == Some(from) {
            state.bindings.insert(target.clone(), to.clone());
        }
    }

    /// What `target` is bound to.
    pub fn binding(&self, target: &Target) -> Option<Projection> {
        self.lock().bindings.get(target).cloned()
    }
}

impl VersionStore for MemoryStore {
    async fn record_version(&self, new: &NewVersion) -> Result<Recorded> {
        let mut state = self.lock();
        state.claim(&new.config_id, &new.claimant)?;
        let versions = state.versions.entry(new.config_id.clone()).or_default();
        let same_source = versions.iter().rev().find(|v| v.source == new.source);
        if let Some(latest) = same_source
            && latest.records(new)
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
            owner: new.claimant.entry(),
            snapshot: new.snapshot.clone(),
            checksum: new.checksum.clone(),
            source: new.source.clone(),
            created_by: new.created_by.clone(),
            authors: new.authors.clone(),
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
        state.claim(&application.config_id, &application.claimant)?;
        let key = (
            application.config_id.clone(),
            application.environment.clone(),
        );
        let current = state.applied.get(&key);
        let already = current.is_some_and(|a| {
            a.version == application.version && a.checksum == application.checksum
        });
        if let Some(newer) =
            current.filter(|a| application.forward_only && a.version > application.version)
        {
            return Err(Error::Superseded {
                config_id: application.config_id.clone(),
                based_on: application.version,
                latest: newer.version,
            });
        }
        if let FloorUpdate::Record(policy) = &application.floor {
            let floor = Floor {
                environment: application.environment.clone(),
                policy: policy.clone(),
                version: application.version,
            };
            state.record_floor(&application.config_id, floor);
        }
        if already {
            return Ok(false);
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
        let (namespace, name) = owner.split_once('/').unwrap();
        NewVersion {
            config_id: "payments".into(),
            claimant: Claimant {
                namespace: namespace.into(),
                name: name.into(),
                uid: "uid".into(),
            },
            snapshot: Snapshot {
                data: json!({"checksum": checksum}),
                overrides: Default::default(),
                secrets: serde_json::Value::Null,
            },
            checksum: checksum.into(),
            source: Source::Spec,
            created_by: "alice".into(),
            authors: vec!["alice".into()],
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
        assert!(matches!(error, Error::Claimed(_)), "{error}");
    }
}

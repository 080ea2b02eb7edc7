//! The in-memory ledger, for tests of the controllers in their own process: its
//! history ends with the process. It keeps everything PostgreSQL keeps, the audit
//! trail included, under the same rules.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use super::{
    Application, AppliedState, Audit, AuditEntry, AuditRow, Claimant, Error, Floor, FloorUpdate,
    History, Ledger, NewVersion, Ownership, Projection, RaisedFloor, Recorded, Result, Rotation,
    Source, Target, Version, Workflow, rows,
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
    rotations: HashMap<String, Rotation>,
    audit: Vec<AuditEntry>,
}

impl State {
    /// Checks (and, with `take`, takes or renews) `claimant`'s claim on `config_id`.
    fn claim(&mut self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()> {
        match ownership::claim(config_id, self.claims.get(config_id), claimant) {
            ClaimVerdict::Holds => Ok(()),
            ClaimVerdict::Take | ClaimVerdict::Renew if take => {
                self.claims.insert(config_id.to_owned(), claimant.clone());
                Ok(())
            }
            ClaimVerdict::Take | ClaimVerdict::Renew => Err(Error::Unclaimed {
                config_id: config_id.to_owned(),
                entry: claimant.entry(),
            }),
            ClaimVerdict::Refuse(refused) => Err(Error::Claimed(refused)),
        }
    }

    fn record_floor(&mut self, config_id: &str, floor: Floor) {
        let floors = self.floors.entry(config_id.to_owned()).or_default();
        floors.retain(|f| f.environment != floor.environment);
        floors.push(floor);
    }

    fn audit(&mut self, config_id: &str, version: Option<i64>, actor: &str, message: &str) {
        self.push(AuditRow {
            config_id: config_id.to_owned(),
            version,
            actor: actor.to_owned(),
            message: message.to_owned(),
            changes: serde_json::Value::Null,
        });
    }

    fn push(&mut self, row: AuditRow) {
        self.audit.push(AuditEntry {
            at: Timestamp::now(),
            row,
        });
    }

    fn trail(&self, config_id: &str) -> impl Iterator<Item = &AuditEntry> {
        let rows = self.audit.iter();
        rows.filter(move |entry| entry.row.config_id == config_id)
    }
}

/// Everything the ledger keeps, in process memory. Clones share one record.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The audit trail of a config id (a secret's is `secret:<id>`), oldest first.
    pub fn audit_trail(&self, config_id: &str) -> Vec<AuditRow> {
        let state = self.lock();
        state
            .trail(config_id)
            .map(|entry| entry.row.clone())
            .collect()
    }
}

#[async_trait]
impl Ownership for MemoryStore {
    async fn claim(&self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()> {
        self.lock().claim(config_id, claimant, take)
    }

    async fn holder(&self, config_id: &str) -> Result<Option<Claimant>> {
        Ok(self.lock().claims.get(config_id).cloned())
    }

    async fn floors(&self, config_id: &str) -> Result<Vec<Floor>> {
        let state = self.lock();
        Ok(state.floors.get(config_id).cloned().unwrap_or_default())
    }

    async fn record_floor(&self, raised: &RaisedFloor) -> Result<()> {
        let (id, floor) = (&raised.config_id, &raised.floor);
        let mut state = self.lock();
        state.claim(id, &raised.claimant, false)?;
        state.record_floor(id, floor.clone());
        let message = format!("approval floor of {} recorded", floor.environment);
        state.audit(id, Some(floor.version), &raised.actor, &message);
        Ok(())
    }

    async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection> {
        let mut state = self.lock();
        let bound = state.bindings.entry(target.clone());
        Ok(bound.or_insert_with(|| projection.clone()).clone())
    }

    async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()> {
        let mut state = self.lock();
        if state.bindings.get(target) == Some(from) {
            state.bindings.insert(target.clone(), to.clone());
            let message = format!(
                "{target} rebound from {} to {}",
                from.environment, to.environment
            );
            state.audit(&to.config_id, None, "summit-config", &message);
        }
        Ok(())
    }

    async fn binding(&self, target: &Target) -> Result<Option<Projection>> {
        Ok(self.lock().bindings.get(target).cloned())
    }

    async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        let mut state = self.lock();
        state.claim(config_id, claimant, false)?;
        state.applied.retain(|(id, _), _| id != config_id);
        let latest = state.versions.get(config_id).and_then(|v| v.last());
        let latest = latest.map(|v| v.version);
        let message = "ConfigEntry deleted with deletionPolicy Delete";
        state.audit(config_id, latest, &claimant.entry(), message);
        Ok(())
    }
}

#[async_trait]
impl History for MemoryStore {
    async fn record(&self, new: &NewVersion) -> Result<Recorded> {
        let mut state = self.lock();
        state.claim(&new.config_id, &new.claimant, false)?;
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
        let version = Version::recorded(new, newest + 1, Timestamp::now());
        versions.push(version.clone());
        state.push(AuditRow::version_recorded(&version));
        Ok(Recorded {
            version,
            created: true,
        })
    }

    async fn apply(&self, application: &Application) -> Result<Option<Timestamp>> {
        let mut state = self.lock();
        state.claim(&application.config_id, &application.claimant, false)?;
        let key = (
            application.config_id.clone(),
            application.environment.clone(),
        );
        let current = state.applied.get(&key);
        let previous = current.map(|a| a.version);
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
            return Ok(None);
        }
        let applied_at = Timestamp::now();
        let applied = AppliedState {
            config_id: application.config_id.clone(),
            environment: application.environment.clone(),
            version: application.version,
            checksum: application.checksum.clone(),
            applied_at,
        };
        state.applied.insert(key, applied);
        state.push(AuditRow::applied(application, previous));
        Ok(Some(applied_at))
    }

    async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        let state = self.lock();
        Ok(state
            .versions
            .get(config_id)
            .and_then(|v| v.last().cloned()))
    }

    async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        let state = self.lock();
        let versions = state.versions.get(config_id);
        Ok(versions.and_then(|versions| versions.iter().find(|v| v.version == version).cloned()))
    }

    async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        let state = self.lock();
        Ok(state.versions.get(config_id).cloned().unwrap_or_default())
    }

    async fn versions_of(&self, wanted: &[(String, i64)]) -> Result<Vec<Version>> {
        let mut found = Vec::new();
        for (config_id, version) in wanted {
            found.extend(self.version(config_id, *version).await?);
        }
        Ok(found)
    }

    async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>> {
        let state = self.lock();
        let versions = state.versions.get(config_id);
        let by = |v: &&Version| matches!(&v.source, Source::Change { change: c } if c == change);
        Ok(versions.and_then(|versions| versions.iter().rev().find(by).cloned()))
    }

    async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        self.applied_for(&[config_id.to_owned()]).await
    }

    async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>> {
        let state = self.lock();
        let mut applied: Vec<AppliedState> = state
            .applied
            .values()
            .filter(|a| config_ids.contains(&a.config_id))
            .cloned()
            .collect();
        applied.sort_by(|a, b| (&a.config_id, &a.environment).cmp(&(&b.config_id, &b.environment)));
        Ok(applied)
    }
}

#[async_trait]
impl Audit for MemoryStore {
    async fn audit(&self, row: &AuditRow) -> Result<()> {
        self.lock().push(row.clone());
        Ok(())
    }

    async fn record_rotation(&self, rotation: &Rotation) -> Result<()> {
        let mut state = self.lock();
        state.push(rows::rotation(rotation));
        state
            .rotations
            .insert(rotation.policy.clone(), rotation.clone());
        Ok(())
    }

    async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool> {
        let mut state = self.lock();
        if state.workflows.get(&workflow.change_id) == Some(workflow) {
            return Ok(false);
        }
        let known = state
            .workflows
            .get(&workflow.change_id)
            .map(|w| rows::Known {
                approvals: &w.approvals,
                status: &w.status,
            });
        let steps = rows::workflow_steps(workflow, known);
        steps.into_iter().for_each(|row| state.push(row));
        state
            .workflows
            .insert(workflow.change_id.clone(), workflow.clone());
        Ok(true)
    }

    async fn trail(&self, config_id: &str) -> Result<Vec<AuditEntry>> {
        Ok(self.lock().trail(config_id).cloned().collect())
    }
}

impl Ledger for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn is_durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;

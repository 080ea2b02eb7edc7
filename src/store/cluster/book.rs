//! One config id's book in the cluster ledger: its claim, the index of its versions,
//! where each environment stands, its approval floors, the workflows and rotations it
//! has seen, and the newest page of its audit trail. The versions' content lives in
//! objects of their own, and older audit pages too.
//!
//! Pure: the ledger reads a book, lets one of these methods change a copy, and writes
//! the copy back guarded by the book's resourceVersion, so two writers never both
//! win.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::core::ownership::{self, ClaimVerdict};
use crate::store::{
    Application, AppliedState, AuditEntry, AuditRow, Claimant, Error, Floor, FloorUpdate,
    NewVersion, RaisedFloor, Result, Rotation, Source, Version, Workflow, WorkflowApproval, rows,
};

/// Audit rows a book keeps before the oldest [`PAGE`] move to a page of their own.
pub const AUDIT_KEPT: usize = 2 * PAGE;
/// Audit rows per archived page.
pub const PAGE: usize = 100;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    pub config_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claimant>,
    /// Every version recorded, oldest first: what numbering and idempotency decide by.
    #[serde(default)]
    pub versions: Vec<Indexed>,
    /// The applied state by environment.
    #[serde(default)]
    pub applied: BTreeMap<String, AppliedState>,
    #[serde(default)]
    pub floors: Vec<Floor>,
    /// What each ConfigChange (by id) was last seen as.
    #[serde(default)]
    pub workflows: BTreeMap<String, SeenWorkflow>,
    /// Each rotation policy's last step, by `namespace/name`.
    #[serde(default)]
    pub rotations: BTreeMap<String, Rotation>,
    /// The newest audit rows, oldest first.
    #[serde(default)]
    pub audit: Vec<Row>,
    /// How many pages of older rows were moved out, oldest first.
    #[serde(default)]
    pub pages: u32,
}

/// A version as the book indexes it: enough to number the next one and to know
/// content recorded already.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Indexed {
    pub version: i64,
    pub checksum: String,
    #[serde(flatten)]
    pub source: Source,
    pub authors_proven: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenWorkflow {
    pub approvals: Vec<WorkflowApproval>,
    pub status: String,
}

/// An audit row as a book or page keeps it (the config id is the book's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    pub actor: String,
    pub message: String,
    #[serde(default)]
    pub changes: serde_json::Value,
}

impl Row {
    pub fn entry(&self, config_id: &str) -> AuditEntry {
        AuditEntry {
            at: self.at,
            row: AuditRow {
                config_id: config_id.to_owned(),
                version: self.version,
                actor: self.actor.clone(),
                message: self.message.clone(),
                changes: self.changes.clone(),
            },
        }
    }
}

/// What recording a version comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The same content from the same source is this version already.
    Existing(i64),
    /// Record it under this number.
    Number(i64),
}

impl Book {
    pub fn new(config_id: &str) -> Self {
        Self {
            config_id: config_id.to_owned(),
            ..Self::default()
        }
    }

    /// The newest version's number; 0 before the first.
    pub fn newest(&self) -> i64 {
        self.versions.last().map_or(0, |v| v.version)
    }

    /// Checks that `claimant` holds the config id.
    pub fn held_by(&self, claimant: &Claimant) -> Result<()> {
        let id = &self.config_id;
        match ownership::claim(id, self.claim.as_ref(), claimant) {
            ClaimVerdict::Holds => Ok(()),
            ClaimVerdict::Refuse(refused) => Err(Error::Claimed(refused)),
            ClaimVerdict::Take | ClaimVerdict::Renew => Err(Error::Unclaimed {
                config_id: id.clone(),
                entry: claimant.entry(),
            }),
        }
    }

    /// Checks (and, with `take`, takes or renews) `claimant`'s claim.
    pub fn claim(&mut self, claimant: &Claimant, take: bool, now: Timestamp) -> Result<()> {
        let id = &self.config_id;
        match ownership::claim(id, self.claim.as_ref(), claimant) {
            ClaimVerdict::Holds => Ok(()),
            ClaimVerdict::Refuse(refused) => Err(Error::Claimed(refused)),
            ClaimVerdict::Take | ClaimVerdict::Renew if !take => self.held_by(claimant),
            verdict @ (ClaimVerdict::Take | ClaimVerdict::Renew) => {
                let row = rows::claimed(id, claimant, verdict == ClaimVerdict::Renew);
                self.claim = Some(claimant.clone());
                self.push(row, now);
                Ok(())
            }
        }
    }

    /// Whether `new` is a version already, or which number it gets.
    pub fn plan(&self, new: &NewVersion) -> Result<Plan> {
        self.held_by(&new.claimant)?;
        let same_source = self.versions.iter().rev().find(|v| v.source == new.source);
        if let Some(latest) = same_source
            && latest.checksum == new.checksum
            && (latest.authors_proven || new.authors.is_empty())
        {
            return Ok(Plan::Existing(latest.version));
        }
        let newest = self.newest();
        match new.based_on {
            Some(based_on) if based_on != newest => Err(Error::Superseded {
                config_id: new.config_id.clone(),
                based_on,
                latest: newest,
            }),
            _ => Ok(Plan::Number(newest + 1)),
        }
    }

    /// Takes `version`, whose object exists, into the index with its audit row, unless
    /// it is there already.
    pub fn adopt(&mut self, version: &Version) {
        if self.versions.iter().any(|v| v.version == version.version) {
            return;
        }
        let at = self
            .versions
            .partition_point(|v| v.version < version.version);
        self.versions.insert(
            at,
            Indexed {
                version: version.version,
                checksum: version.checksum.clone(),
                source: version.source.clone(),
                authors_proven: version.authors_proven(),
            },
        );
        self.push(AuditRow::version_recorded(version), version.created_at);
    }

    /// The newest version `change` recorded.
    pub fn recorded_by(&self, change: &str) -> Option<i64> {
        let by = |v: &&Indexed| matches!(&v.source, Source::Change { change: c } if c == change);
        self.versions.iter().rev().find(by).map(|v| v.version)
    }

    /// Moves an environment to a version; returns when, or `None` when it already was
    /// there.
    pub fn apply(
        &mut self,
        application: &Application,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        self.held_by(&application.claimant)?;
        let current = self.applied.get(&application.environment);
        let previous = current.map(|a| a.version);
        if let Some(newer) =
            current.filter(|a| application.forward_only && a.version > application.version)
        {
            return Err(Error::Superseded {
                config_id: application.config_id.clone(),
                based_on: application.version,
                latest: newer.version,
            });
        }
        let already = current.is_some_and(|a| {
            a.version == application.version && a.checksum == application.checksum
        });
        if let FloorUpdate::Record(policy) = &application.floor {
            let floor = Floor {
                environment: application.environment.clone(),
                policy: policy.clone(),
                version: application.version,
            };
            self.record_floor(floor, &application.actor, now);
        }
        if already {
            return Ok(None);
        }
        let applied = AppliedState {
            config_id: application.config_id.clone(),
            environment: application.environment.clone(),
            version: application.version,
            checksum: application.checksum.clone(),
            applied_at: now,
        };
        self.applied
            .insert(application.environment.clone(), applied);
        self.push(AuditRow::applied(application, previous), now);
        Ok(Some(now))
    }

    /// Records a floor raised outside an application.
    pub fn raise_floor(&mut self, raised: &RaisedFloor, now: Timestamp) -> Result<()> {
        self.held_by(&raised.claimant)?;
        self.record_floor(raised.floor.clone(), &raised.actor, now);
        Ok(())
    }

    /// Keeps `floor`, with an audit row when it changed.
    fn record_floor(&mut self, floor: Floor, actor: &str, now: Timestamp) {
        let kept = self
            .floors
            .iter()
            .position(|f| f.environment == floor.environment);
        let previous = kept.map(|at| self.floors.remove(at));
        let previous = previous.map(|f| serde_json::to_value(f.policy).unwrap_or_default());
        let policy = serde_json::to_value(&floor.policy).unwrap_or_default();
        if previous.as_ref() != Some(&policy) {
            self.push(rows::floor(&self.config_id, &floor, previous, actor), now);
        }
        self.floors.push(floor);
    }

    /// Forgets where the environments stand; versions, audit, claim and floors stay.
    pub fn forget(&mut self, claimant: &Claimant, now: Timestamp) -> Result<()> {
        self.held_by(claimant)?;
        self.applied.clear();
        if let Some(latest) = self.versions.last() {
            let row = rows::deleted(&self.config_id, latest.version, &claimant.entry());
            self.push(row, now);
        }
        Ok(())
    }

    /// Mirrors a workflow, with a row for each step not seen yet; returns whether
    /// anything changed.
    pub fn sync_workflow(&mut self, workflow: &Workflow, now: Timestamp) -> bool {
        let seen = self.workflows.get(&workflow.change_id);
        if seen.is_some_and(|s| s.approvals == workflow.approvals && s.status == workflow.status) {
            return false;
        }
        let known = seen.map(|s| rows::Known {
            approvals: &s.approvals,
            status: &s.status,
        });
        for row in rows::workflow_steps(workflow, known) {
            self.push(row, now);
        }
        let seen = SeenWorkflow {
            approvals: workflow.approvals.clone(),
            status: workflow.status.clone(),
        };
        self.workflows.insert(workflow.change_id.clone(), seen);
        true
    }

    /// Keeps a rotation policy's last step, with its audit row.
    pub fn record_rotation(&mut self, rotation: &Rotation, now: Timestamp) {
        self.push(rows::rotation(rotation), now);
        self.rotations
            .insert(rotation.policy.clone(), rotation.clone());
    }

    pub fn push(&mut self, row: AuditRow, at: Timestamp) {
        self.audit.push(Row {
            at,
            version: row.version,
            actor: row.actor,
            message: row.message,
            changes: row.changes,
        });
    }

    /// The oldest page of rows, when the book holds more than it keeps: the ledger
    /// writes it as page [`Book::pages`], then drops it with [`Book::paged`].
    pub fn full_page(&self) -> Option<&[Row]> {
        (self.audit.len() > AUDIT_KEPT).then(|| &self.audit[..PAGE])
    }

    /// Drops the page [`Book::full_page`] gave, now written.
    pub fn paged(&mut self) {
        self.audit.drain(..PAGE);
        self.pages += 1;
    }
}

#[cfg(test)]
mod tests;

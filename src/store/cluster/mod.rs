//! The cluster ledger: the whole record kept in the cluster itself, for an operator
//! installed with no database. Each config id has a book (a ConfigMap in the
//! operator's namespace) and one immutable ConfigMap per version and per page of
//! older audit rows; each projection target has a binding. A book changes only by a
//! replace guarded by its resourceVersion, and a version number is taken by creating
//! its object, so the apiserver arbitrates both as PostgreSQL's row locks do.

mod book;
mod objects;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

use book::{Book, Plan, Row};
use objects::{Kind, Objects, Place, Read};

use super::{
    Application, AppliedState, Audit, AuditEntry, AuditRow, Claimant, Error, Floor, History,
    Ledger, NewVersion, Ownership, Projection, RaisedFloor, Recorded, Result, Rotation, Target,
    Version, Workflow, rows,
};

pub use objects::LABEL_LEDGER;

/// How often a write reads again after another write came first, before it gives up
/// (with a conflict: the reconcile retries).
const ATTEMPTS: usize = 16;

/// A binding as its object keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Binding {
    target: Target,
    projection: Projection,
}

/// The ledger in the ConfigMaps of one namespace (the operator's own).
#[derive(Clone)]
pub struct ClusterLedger {
    objects: Objects,
}

impl ClusterLedger {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            objects: Objects::new(client, namespace),
        }
    }

    /// A config id's book as it is now, with the resourceVersion to replace it at.
    async fn book(&self, config_id: &str) -> Result<(Book, Option<String>)> {
        let place = Place::of_config(config_id, Kind::Book, 0);
        Ok(match self.objects.read::<Book>(&place).await? {
            Some(Read {
                record,
                resource_version,
            }) => (record, Some(resource_version)),
            None => (Book::new(config_id), None),
        })
    }

    /// Changes a config id's book with `change`, writing it only when it changed;
    /// reads it again and starts over when another write came first.
    async fn update<T>(
        &self,
        config_id: &str,
        change: impl Fn(&mut Book) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        for _ in 0..ATTEMPTS {
            let (book, resource_version) = self.book(config_id).await?;
            let mut next = book.clone();
            let answer = change(&mut next)?;
            if next == book {
                return Ok(answer);
            }
            while let Some(page) = next.full_page() {
                let place = Place::of_config(config_id, Kind::Page, next.pages.into());
                // Already there: written by an attempt whose book did not land; the
                // same oldest rows, as rows are only ever appended.
                self.objects.create(&place, &page.to_vec()).await?;
                next.paged();
            }
            let place = Place::of_config(config_id, Kind::Book, 0);
            if self
                .objects
                .replace(&place, &next, resource_version)
                .await?
            {
                return Ok(answer);
            }
        }
        Err(Error::Contended {
            config_id: config_id.to_owned(),
        })
    }

    /// [`ClusterLedger::update`] with a change that cannot fail.
    async fn amend(&self, config_id: &str, change: impl Fn(&mut Book) + Send + Sync) -> Result<()> {
        self.update(config_id, |book| {
            change(book);
            Ok(())
        })
        .await
    }

    async fn read_version(&self, config_id: &str, number: i64) -> Result<Option<Version>> {
        let place = Place::of_config(config_id, Kind::Version, number);
        let read = self.objects.read::<Version>(&place).await?;
        Ok(read.map(|read| read.record))
    }

    /// A version the book indexes, whose object must exist.
    async fn indexed_version(&self, config_id: &str, number: i64) -> Result<Version> {
        self.read_version(config_id, number)
            .await?
            .ok_or_else(|| Error::LedgerObject {
                object: Place::of_config(config_id, Kind::Version, number).name,
                reason: format!("version {number} of {config_id} is indexed but missing"),
            })
    }

    async fn read_binding(&self, target: &Target) -> Result<Option<Read<Binding>>> {
        self.objects
            .read(&Place::binding(&target.to_string()))
            .await
    }
}

#[async_trait]
impl Ownership for ClusterLedger {
    async fn claim(&self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()> {
        if !take {
            return self.book(config_id).await?.0.held_by(claimant);
        }
        let now = Timestamp::now();
        self.update(config_id, |book| book.claim(claimant, true, now))
            .await
    }

    async fn holder(&self, config_id: &str) -> Result<Option<Claimant>> {
        Ok(self.book(config_id).await?.0.claim)
    }

    async fn floors(&self, config_id: &str) -> Result<Vec<Floor>> {
        Ok(self.book(config_id).await?.0.floors)
    }

    async fn record_floor(&self, raised: &RaisedFloor) -> Result<()> {
        let now = Timestamp::now();
        self.update(&raised.config_id, |book| book.raise_floor(raised, now))
            .await
    }

    async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection> {
        let place = Place::binding(&target.to_string());
        let binding = Binding {
            target: target.clone(),
            projection: projection.clone(),
        };
        if self.objects.create(&place, &binding).await? {
            return Ok(projection.clone());
        }
        match self.read_binding(target).await? {
            Some(bound) => Ok(bound.record.projection),
            None => Err(Error::Contended {
                config_id: projection.config_id.clone(),
            }),
        }
    }

    async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()> {
        let place = Place::binding(&target.to_string());
        for _ in 0..ATTEMPTS {
            let Some(bound) = self.read_binding(target).await? else {
                return Ok(());
            };
            if bound.record.projection != *from {
                return Ok(());
            }
            let moved = Binding {
                target: target.clone(),
                projection: to.clone(),
            };
            let version = Some(bound.resource_version);
            if self.objects.replace(&place, &moved, version).await? {
                let now = Timestamp::now();
                for row in rows::rebound(target, from, to) {
                    let row = &row;
                    self.amend(&row.config_id, |book| book.push(row.clone(), now))
                        .await?;
                }
                return Ok(());
            }
        }
        Err(Error::Contended {
            config_id: to.config_id.clone(),
        })
    }

    async fn binding(&self, target: &Target) -> Result<Option<Projection>> {
        let bound = self.read_binding(target).await?;
        Ok(bound.map(|bound| bound.record.projection))
    }

    async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        let now = Timestamp::now();
        self.update(config_id, |book| book.forget(claimant, now))
            .await
    }
}

#[async_trait]
impl History for ClusterLedger {
    async fn record(&self, new: &NewVersion) -> Result<Recorded> {
        let id = new.config_id.as_str();
        for _ in 0..ATTEMPTS {
            let number = match self.book(id).await?.0.plan(new)? {
                Plan::Existing(number) => {
                    let version = self.indexed_version(id, number).await?;
                    return Ok(Recorded {
                        version,
                        created: false,
                    });
                }
                Plan::Number(number) => number,
            };
            let version = Version::recorded(new, number, Timestamp::now());
            let place = Place::of_config(id, Kind::Version, number);
            let created = self.objects.create(&place, &version).await?;
            // Taken by another write, or by an attempt of ours whose book did not
            // land: the object is the version either way, and the book takes it in.
            let taken = match created {
                true => version.clone(),
                false => self.indexed_version(id, number).await?,
            };
            self.amend(id, |book| book.adopt(&taken)).await?;
            if created {
                return Ok(Recorded {
                    version,
                    created: true,
                });
            }
        }
        Err(Error::Contended {
            config_id: id.to_owned(),
        })
    }

    async fn apply(&self, application: &Application) -> Result<Option<Timestamp>> {
        let now = Timestamp::now();
        self.update(&application.config_id, |book| book.apply(application, now))
            .await
    }

    async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        match self.book(config_id).await?.0.newest() {
            0 => Ok(None),
            newest => self.indexed_version(config_id, newest).await.map(Some),
        }
    }

    async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        self.read_version(config_id, version).await
    }

    async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        let mut versions: Vec<Version> = self.objects.list(config_id, Kind::Version).await?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn versions_of(&self, wanted: &[(String, i64)]) -> Result<Vec<Version>> {
        let mut found = Vec::with_capacity(wanted.len());
        for (config_id, number) in wanted {
            found.extend(self.read_version(config_id, *number).await?);
        }
        Ok(found)
    }

    async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>> {
        match self.book(config_id).await?.0.recorded_by(change) {
            Some(number) => self.indexed_version(config_id, number).await.map(Some),
            None => Ok(None),
        }
    }

    async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        Ok(self
            .book(config_id)
            .await?
            .0
            .applied
            .into_values()
            .collect())
    }

    async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>> {
        let mut applied = Vec::new();
        for config_id in config_ids {
            applied.extend(self.applied(config_id).await?);
        }
        Ok(applied)
    }
}

#[async_trait]
impl Audit for ClusterLedger {
    async fn audit(&self, row: &AuditRow) -> Result<()> {
        let now = Timestamp::now();
        self.amend(&row.config_id, |book| book.push(row.clone(), now))
            .await
    }

    async fn record_rotation(&self, rotation: &Rotation) -> Result<()> {
        let now = Timestamp::now();
        let id = rotation.audit_id();
        self.amend(&id, |book| book.record_rotation(rotation, now))
            .await
    }

    async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool> {
        let now = Timestamp::now();
        self.update(&workflow.config_id, |book| {
            Ok(book.sync_workflow(workflow, now))
        })
        .await
    }

    async fn trail(&self, config_id: &str) -> Result<Vec<AuditEntry>> {
        let (book, _) = self.book(config_id).await?;
        let mut rows: Vec<Row> = Vec::new();
        for page in 0..i64::from(book.pages) {
            let place = Place::of_config(config_id, Kind::Page, page);
            let read = self.objects.read::<Vec<Row>>(&place).await?;
            rows.extend(read.map(|read| read.record).unwrap_or_default());
        }
        rows.extend(book.audit);
        Ok(rows.iter().map(|row| row.entry(config_id)).collect())
    }
}

impl Ledger for ClusterLedger {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn is_durable(&self) -> bool {
        true
    }
}

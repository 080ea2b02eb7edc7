//! The composite store the controllers use: PostgreSQL decides and records (or the
//! in-memory store, in a demo without a database), Consul follows, and reads fall back
//! to the last answer cached in memory while the primary is down.

use prometheus_client::metrics::counter::Counter;
use sqlx::postgres::PgConnectOptions;

use std::{collections::HashMap, sync::Mutex};

use super::{
    Application, AppliedState, Claimant, ConsulConfig, ConsulStore, Error, Floor, FloorUpdate,
    MemoryStore, NewVersion, PostgresStore, Projection, Recorded, Result, Rotation, Target,
    Version, VersionStore, Workflow,
};

/// Which backends to use, parsed once at start-up.
#[derive(Clone, Debug, Default)]
pub struct StoresConfig {
    pub database: Option<PgConnectOptions>,
    pub consul: Option<ConsulConfig>,
    /// Counts PostgreSQL queries or transactions.
    pub postgres_requests: Counter,
    /// Counts Consul HTTP requests.
    pub consul_requests: Counter,
}

enum Primary {
    Postgres(PostgresStore),
    Memory,
}

/// What bringing Consul up to date did.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConsulSync {
    pub versions_written: usize,
    pub applied_written: usize,
    /// The newest version, when Consul holds all of it but its content (larger than
    /// Consul's value limit), and why.
    pub content_omitted: Option<(i64, String)>,
}

/// PostgreSQL → Consul, with an in-memory cache (or in-memory only).
pub struct Stores {
    primary: Primary,
    consul: Option<ConsulStore>,
    cache: MemoryStore,
    /// Claims known to hold: a claim never moves to another entry, so a reconcile that
    /// finds its own here needs no query.
    held: Mutex<HashMap<String, Claimant>>,
    /// Approval floors by config id, as last read or written: only this operator
    /// writes them.
    floors: Mutex<HashMap<String, Vec<Floor>>>,
    /// Projection bindings known: a binding never moves.
    bindings: Mutex<HashMap<Target, Projection>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stores {
    pub fn new(config: StoresConfig) -> Result<Self> {
        let primary = match config.database {
            Some(options) => Primary::Postgres(PostgresStore::connect_lazy(
                options,
                config.postgres_requests,
            )),
            None if config.consul.is_some() => return Err(Error::ConsulWithoutPostgres),
            None => Primary::Memory,
        };
        let consul = config
            .consul
            .map(|consul| {
                ConsulStore::new(consul, config.consul_requests.clone()).map_err(|source| {
                    Error::Consul {
                        action: "create an HTTP client".into(),
                        source,
                    }
                })
            })
            .transpose()?;
        Ok(Self {
            primary,
            consul,
            cache: MemoryStore::default(),
            held: Mutex::default(),
            floors: Mutex::default(),
            bindings: Mutex::default(),
        })
    }

    /// Checks (and takes, or renews) `claimant`'s claim on `config_id`: what an entry's
    /// own reconcile does, once its config id passed every check. Answered from memory
    /// once it holds.
    pub async fn claim(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        self.check_claim(config_id, claimant, true).await
    }

    /// Checks that `claimant` holds `config_id`, taking nothing: every read and write of
    /// a config id's history that is not the entry's own reconcile starts here.
    pub async fn verify_claim(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        self.check_claim(config_id, claimant, false).await
    }

    async fn check_claim(&self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()> {
        if locked(&self.held).get(config_id) == Some(claimant) {
            return Ok(());
        }
        match &self.primary {
            Primary::Postgres(postgres) => {
                postgres.claim(config_id, claimant, take).await?;
                // The cache follows, so that it never refuses what PostgreSQL allowed.
                self.cache.claim(config_id, claimant)?;
            }
            Primary::Memory if take => self.cache.claim(config_id, claimant)?,
            Primary::Memory => self.cache.verify(config_id, claimant)?,
        }
        locked(&self.held).insert(config_id.to_owned(), claimant.clone());
        Ok(())
    }

    /// Who holds a config id, if anyone.
    pub async fn holder(&self, config_id: &str) -> Result<Option<Claimant>> {
        match &self.primary {
            Primary::Postgres(postgres) => postgres.holder(config_id).await,
            Primary::Memory => Ok(self.cache.holder(config_id)),
        }
    }

    /// The approval floors recorded for a config id's environments.
    pub async fn floors(&self, config_id: &str) -> Result<Vec<Floor>> {
        if let Some(known) = locked(&self.floors).get(config_id) {
            return Ok(known.clone());
        }
        let floors = match &self.primary {
            Primary::Postgres(postgres) => postgres.floors(config_id).await?,
            Primary::Memory => self.cache.floors(config_id),
        };
        locked(&self.floors).insert(config_id.to_owned(), floors.clone());
        Ok(floors)
    }

    /// Records an environment's approval floor outside an application.
    pub async fn record_floor(
        &self,
        config_id: &str,
        claimant: &Claimant,
        floor: &Floor,
        actor: &str,
    ) -> Result<()> {
        locked(&self.floors).remove(config_id);
        match &self.primary {
            Primary::Postgres(postgres) => {
                postgres
                    .record_floor(config_id, claimant, floor, actor)
                    .await
            }
            Primary::Memory => self.cache.record_floor(config_id, claimant, floor.clone()),
        }
    }

    /// Binds `target` to `projection` unless it is bound already; returns what it is
    /// bound to now.
    pub async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection> {
        if let Some(bound) = locked(&self.bindings).get(target) {
            return Ok(bound.clone());
        }
        let bound = match &self.primary {
            Primary::Postgres(postgres) => postgres.bind(target, projection).await?,
            Primary::Memory => self.cache.bind(target, projection),
        };
        locked(&self.bindings).insert(target.clone(), bound.clone());
        Ok(bound)
    }

    /// Moves `target`'s binding from one environment to another, if it is still bound
    /// to `from`.
    pub async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()> {
        locked(&self.bindings).remove(target);
        match &self.primary {
            Primary::Postgres(postgres) => postgres.rebind(target, from, to).await,
            Primary::Memory => {
                self.cache.rebind(target, from, to);
                Ok(())
            }
        }
    }

    /// What `target` is bound to, if anything.
    pub async fn binding(&self, target: &Target) -> Result<Option<Projection>> {
        if let Some(bound) = locked(&self.bindings).get(target) {
            return Ok(Some(bound.clone()));
        }
        let bound = match &self.primary {
            Primary::Postgres(postgres) => postgres.binding(target).await?,
            Primary::Memory => self.cache.binding(target),
        };
        if let Some(bound) = &bound {
            locked(&self.bindings).insert(target.clone(), bound.clone());
        }
        Ok(bound)
    }

    /// Whether versions survive a restart of the operator.
    pub fn is_durable(&self) -> bool {
        matches!(self.primary, Primary::Postgres(_))
    }

    /// The primary store's name, for the backend metrics.
    pub fn backend(&self) -> &'static str {
        match self.primary {
            Primary::Postgres(_) => "postgres",
            Primary::Memory => "memory",
        }
    }

    pub fn has_consul(&self) -> bool {
        self.consul.is_some()
    }

    /// Records a version in the primary store. Nothing is applied without this.
    pub async fn record(&self, new: &NewVersion) -> Result<Recorded> {
        let recorded = match &self.primary {
            Primary::Postgres(postgres) => postgres.record_version(new).await?,
            Primary::Memory => self.cache.record_version(new).await?,
        };
        if matches!(self.primary, Primary::Postgres(_)) {
            self.cache.store_version(&recorded.version).await?;
        }
        Ok(recorded)
    }

    /// Moves an environment to a version in the primary store (with its audit row).
    pub async fn apply(&self, application: &Application) -> Result<bool> {
        if application.floor != FloorUpdate::Keep {
            locked(&self.floors).remove(&application.config_id);
        }
        match &self.primary {
            Primary::Postgres(postgres) => {
                let changed = postgres.apply(application).await?;
                self.cache.apply(application).await?;
                Ok(changed)
            }
            Primary::Memory => self.cache.apply(application).await,
        }
    }

    /// The latest version, from the primary, or the cache while it is down.
    pub async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        match &self.primary {
            Primary::Postgres(postgres) => match postgres.latest(config_id).await {
                Ok(latest) => Ok(latest),
                Err(error) => match self.cache.latest(config_id).await? {
                    Some(cached) => Ok(Some(cached)),
                    None => Err(error),
                },
            },
            Primary::Memory => self.cache.latest(config_id).await,
        }
    }

    /// The newest version a ConfigChange recorded, from the primary, or the cache while
    /// it is down.
    pub async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>> {
        match &self.primary {
            Primary::Postgres(postgres) => match postgres.recorded_by(config_id, change).await {
                Ok(found) => Ok(found),
                Err(error) => match self.cache.recorded_by(config_id, change) {
                    Some(cached) => Ok(Some(cached)),
                    None => Err(error),
                },
            },
            Primary::Memory => Ok(self.cache.recorded_by(config_id, change)),
        }
    }

    /// Brings the versions in `wanted` into the cache: those it lacks, in one query.
    /// For callers about to read many versions one by one (a DriftCheck's pass).
    pub async fn prefetch_versions(&self, wanted: &[(String, i64)]) -> Result<()> {
        let Primary::Postgres(postgres) = &self.primary else {
            return Ok(());
        };
        let mut missing = Vec::new();
        for (config_id, version) in wanted {
            if self.cache.version(config_id, *version).await?.is_none() {
                missing.push((config_id.clone(), *version));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        for found in postgres.versions_of(&missing).await? {
            self.cache.store_version(&found).await?;
        }
        Ok(())
    }

    /// One version: from the cache (recorded versions never change), else from the
    /// primary, or the cache while it is down.
    pub async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        // A recorded version never changes, and its number is never reused (forgetting
        // a config id keeps its versions): what the cache holds needs no query.
        if let Some(cached) = self.cache.version(config_id, version).await? {
            return Ok(Some(cached));
        }
        match &self.primary {
            Primary::Postgres(postgres) => match postgres.version(config_id, version).await {
                Ok(found) => {
                    if let Some(found) = &found {
                        self.cache.store_version(found).await?;
                    }
                    Ok(found)
                }
                Err(error) => {
                    let cached = self.cache.version(config_id, version).await?;
                    if cached.is_some() {
                        Ok(cached)
                    } else {
                        Err(error)
                    }
                }
            },
            Primary::Memory => self.cache.version(config_id, version).await,
        }
    }

    /// Every version of a config id, oldest first, from the primary.
    pub async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        match &self.primary {
            Primary::Postgres(postgres) => postgres.versions(config_id).await,
            Primary::Memory => self.cache.versions(config_id).await,
        }
    }

    /// The applied state per environment, from the primary, or the cache while it is down.
    pub async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        match &self.primary {
            Primary::Postgres(postgres) => match postgres.applied(config_id).await {
                Ok(applied) => {
                    for state in &applied {
                        self.cache.store_applied(state).await?;
                    }
                    Ok(applied)
                }
                Err(error) => {
                    let cached = self.cache.applied(config_id).await?;
                    if cached.is_empty() {
                        Err(error)
                    } else {
                        Ok(cached)
                    }
                }
            },
            Primary::Memory => self.cache.applied(config_id).await,
        }
    }

    /// Applied states of many config ids from the primary, in one query.
    pub async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>> {
        match &self.primary {
            Primary::Postgres(postgres) => postgres.applied_for(config_ids).await,
            Primary::Memory => {
                let mut all = Vec::new();
                for id in config_ids {
                    all.extend(self.cache.applied(id).await?);
                }
                Ok(all)
            }
        }
    }

    /// Consul's applied states by key, in one recursive read; `None` without Consul.
    pub async fn consul_applied(
        &self,
    ) -> Option<Result<std::collections::BTreeMap<String, Option<AppliedState>>>> {
        let consul = self.consul.as_ref()?;
        Some(consul.applied_everywhere().await)
    }

    /// The Consul key of an environment's applied state.
    pub fn consul_applied_key(&self, config_id: &str, environment: &str) -> Option<String> {
        Some(self.consul.as_ref()?.applied_key(config_id, environment))
    }

    /// Puts an applied state back into Consul as recorded (drift remediation).
    pub async fn restore_consul_applied(&self, applied: &AppliedState) -> Result<()> {
        if let Some(consul) = &self.consul {
            consul.write_applied(applied).await?;
        }
        Ok(())
    }

    /// Writes one audit row (PostgreSQL only).
    pub async fn audit(
        &self,
        config_id: &str,
        version: i64,
        actor: &str,
        message: &str,
        changes: serde_json::Value,
    ) -> Result<()> {
        match &self.primary {
            Primary::Postgres(postgres) => {
                postgres
                    .audit(config_id, version, actor, message, changes)
                    .await
            }
            Primary::Memory => Ok(()),
        }
    }

    /// Records a secret rotation step in PostgreSQL, when there is one.
    pub async fn record_rotation(&self, rotation: &Rotation) -> Result<()> {
        match &self.primary {
            Primary::Postgres(postgres) => postgres.record_rotation(rotation).await,
            Primary::Memory => Ok(()),
        }
    }

    /// Mirrors an approval workflow in the primary store, with its audit rows.
    pub async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool> {
        match &self.primary {
            Primary::Postgres(postgres) => postgres.sync_workflow(workflow).await,
            Primary::Memory => Ok(self.cache.sync_workflow(workflow)),
        }
    }

    /// Removes a config id's applied state (primary and cache) and Consul keys, for a
    /// ConfigEntry deleted with `deletionPolicy: Delete`, if `claimant` holds it.
    /// Versions, audit, the claim and the approval floors stay.
    pub async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        match &self.primary {
            Primary::Postgres(postgres) => postgres.forget(config_id, claimant).await?,
            Primary::Memory => self.cache.verify(config_id, claimant)?,
        }
        self.cache.forget(config_id);
        if let Some(consul) = &self.consul {
            consul.forget(config_id).await?;
        }
        Ok(())
    }

    /// Brings Consul up to the primary's versions and applied state for one config id,
    /// writing only what is missing or behind. `None` when Consul is not configured.
    pub async fn sync_consul(&self, config_id: &str) -> Option<Result<ConsulSync>> {
        let consul = self.consul.as_ref()?;
        Some(self.sync_into(consul, config_id).await)
    }

    async fn sync_into(&self, consul: &ConsulStore, config_id: &str) -> Result<ConsulSync> {
        let mut report = ConsulSync::default();
        let recorded = match &self.primary {
            Primary::Postgres(postgres) => postgres.versions(config_id).await?,
            Primary::Memory => self.cache.versions(config_id).await?,
        };
        let mirrored = consul.headers(config_id).await?;
        for version in &recorded {
            if !mirrored.iter().any(|m| m.version == version.version) {
                consul.store_version(version).await?;
                report.versions_written += 1;
            }
        }
        if let Some(latest) = recorded.last() {
            let mut current = consul.latest_header(config_id).await?;
            if current.as_ref().is_none_or(|l| l.version < latest.version) {
                consul.store_version(latest).await?;
                current = consul.latest_header(config_id).await?;
            }
            report.content_omitted = current
                .filter(|l| l.version == latest.version)
                .and_then(|l| l.content_omitted.map(|why| (l.version, why)));
        }
        let applied = self.applied(config_id).await?;
        let mirrored = consul.applied(config_id).await?;
        for state in &applied {
            let current = mirrored.iter().find(|m| m.environment == state.environment);
            if current.is_none_or(|m| m.version != state.version || m.checksum != state.checksum) {
                consul.store_applied(state).await?;
                report.applied_written += 1;
            }
        }
        Ok(report)
    }
}

//! The composite store the controllers use: the ledger decides and records
//! (PostgreSQL, or the cluster's own objects without a database), Consul follows, and reads
//! fall back to the last answer cached in memory while the ledger is down.

use prometheus_client::metrics::counter::Counter;
use sqlx::postgres::PgConnectOptions;

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    sync::Mutex,
};

use super::{
    Application, AppliedState, AuditRow, Claimant, ClusterLedger, ConsulConfig, ConsulStore, Error,
    Floor, FloorUpdate, Ledger, MemoryStore, NewVersion, Packed, PostgresStore, Projection,
    RaisedFloor, Recorded, Result, Rotation, Source, Target, Version, Workflow,
};

/// Which backends to use, parsed once at start-up.
#[derive(Clone, Debug, Default)]
pub struct StoresConfig {
    pub database: Option<PgConnectOptions>,
    pub consul: Option<ConsulConfig>,
    /// Where the ledger lives with no database: the cluster's own objects.
    pub cluster: Option<ClusterConfig>,
    /// Counts PostgreSQL queries or transactions.
    pub postgres_requests: Counter,
    /// Counts Consul HTTP requests.
    pub consul_requests: Counter,
}

/// The namespace whose ConfigMaps keep the ledger, and the client to reach it.
#[derive(Clone)]
pub struct ClusterConfig {
    pub client: kube::Client,
    pub namespace: String,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

mod mirror;
mod remembered;

use remembered::Remembered;

/// What bringing Consul up to date did.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConsulSync {
    pub versions_written: usize,
    pub applied_written: usize,
    /// The newest version, when Consul holds all of it but its content (larger than
    /// Consul's value limit), and why.
    pub content_omitted: Option<(i64, String)>,
}

/// A map behind a lock, as the caches keep them.
struct Memo<K, V>(Mutex<HashMap<K, V>>);

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    fn new() -> Self {
        Self(Mutex::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    fn insert(&self, key: K, value: V) {
        self.lock().insert(key, value);
    }

    fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

/// The ledger, Consul, and what the operator remembers of them.
pub struct Stores {
    ledger: Box<dyn Ledger>,
    consul: Option<ConsulStore>,
    /// Recorded versions never change and their numbers are never reused: once read,
    /// a version needs no query again, and serves while the ledger is down. The most
    /// recently used few per config id (see [`remembered`]).
    versions: Remembered,
    /// The applied state last read or written per config id, for reads while the
    /// ledger is down.
    applied: Memo<String, Packed<BTreeMap<String, AppliedState>>>,
    /// Claims known to hold: a claim never moves to another entry, so a reconcile that
    /// finds its own here needs no query.
    held: Memo<String, Claimant>,
    /// Approval floors by config id, as last read or written: only this operator
    /// writes them.
    floors: Memo<String, Packed<Vec<Floor>>>,
    /// Projection bindings known, and targets known to be unbound: a binding is made
    /// and moved only by this operator, through these stores.
    bindings: Memo<Target, Option<Projection>>,
    /// The newest version number known per config id.
    newest: Memo<String, i64>,
    /// The number of the newest version recorded from each config id's spec (the
    /// version itself is in `versions`): a spec recorded already needs no query to say
    /// so (only the holder of a config id records its spec, and only through these
    /// stores).
    spec_latest: Memo<String, i64>,
    /// What Consul was last brought up to per config id, and what it lacked of it: a
    /// reconcile that knows of nothing newer sends Consul nothing.
    mirrored: Memo<String, Packed<mirror::Mirrored>>,
}

impl Stores {
    pub fn new(config: StoresConfig) -> Result<Self> {
        let ledger: Box<dyn Ledger> = match config.database {
            Some(options) => Box::new(PostgresStore::connect_lazy(
                options,
                config.postgres_requests,
            )),
            None => match config.cluster {
                Some(cluster) => Box::new(ClusterLedger::new(cluster.client, &cluster.namespace)),
                None if config.consul.is_some() => return Err(Error::ConsulWithoutPostgres),
                None => Box::new(MemoryStore::default()),
            },
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
            consul,
            ..Self::over(ledger)
        })
    }

    /// The stores over `ledger` alone, without a Consul mirror.
    pub fn over(ledger: Box<dyn Ledger>) -> Self {
        Self {
            ledger,
            consul: None,
            versions: Remembered::default(),
            applied: Memo::new(),
            held: Memo::new(),
            floors: Memo::new(),
            bindings: Memo::new(),
            newest: Memo::new(),
            spec_latest: Memo::new(),
            mirrored: Memo::new(),
        }
    }

    /// Whether versions survive a restart of the operator.
    pub fn is_durable(&self) -> bool {
        self.ledger.is_durable()
    }

    /// The ledger's name, for the backend metrics.
    pub fn backend(&self) -> &'static str {
        self.ledger.name()
    }

    pub fn has_consul(&self) -> bool {
        self.consul.is_some()
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
        let id = config_id.to_owned();
        if self.held.get(&id).as_ref() == Some(claimant) {
            return Ok(());
        }
        self.ledger.claim(config_id, claimant, take).await?;
        self.held.insert(id, claimant.clone());
        Ok(())
    }

    /// Who holds a config id, if anyone.
    pub async fn holder(&self, config_id: &str) -> Result<Option<Claimant>> {
        self.ledger.holder(config_id).await
    }

    /// The approval floors recorded for a config id's environments.
    pub async fn floors(&self, config_id: &str) -> Result<Vec<Floor>> {
        let id = config_id.to_owned();
        if let Some(known) = self.floors.get(&id) {
            return Ok(known.get());
        }
        let floors = self.ledger.floors(config_id).await?;
        self.floors.insert(id, Packed::new(&floors));
        Ok(floors)
    }

    /// Records an environment's approval floor outside an application.
    pub async fn record_floor(&self, raised: &RaisedFloor) -> Result<()> {
        self.floors.remove(&raised.config_id);
        self.ledger.record_floor(raised).await
    }

    /// Binds `target` to `projection` unless it is bound already; returns what it is
    /// bound to now.
    pub async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection> {
        if let Some(Some(bound)) = self.bindings.get(target) {
            return Ok(bound);
        }
        let bound = self.ledger.bind(target, projection).await?;
        self.bindings.insert(target.clone(), Some(bound.clone()));
        Ok(bound)
    }

    /// Moves `target`'s binding from one environment to another, if it is still bound
    /// to `from`.
    pub async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()> {
        self.bindings.remove(target);
        self.ledger.rebind(target, from, to).await
    }

    /// What `target` is bound to, if anything.
    pub async fn binding(&self, target: &Target) -> Result<Option<Projection>> {
        if let Some(known) = self.bindings.get(target) {
            return Ok(known);
        }
        let bound = self.ledger.binding(target).await?;
        self.bindings.insert(target.clone(), bound.clone());
        Ok(bound)
    }

    /// Records a version. Nothing is applied without this. A spec recorded already is
    /// answered from memory.
    pub async fn record(&self, new: &NewVersion) -> Result<Recorded> {
        let from_spec = new.source == Source::Spec;
        let id = &new.config_id;
        let known = from_spec
            .then(|| self.spec_latest.get(id))
            .flatten()
            .and_then(|number| self.versions.get(id, number));
        if let Some(latest) = known.filter(|latest| latest.records(new)) {
            return Ok(Recorded {
                version: latest,
                created: false,
            });
        }
        let recorded = self.ledger.record(new).await?;
        self.remember(&recorded.version);
        if recorded.created && recorded.version.version == 1 {
            // The config id's first version: nothing of it was applied or floored yet.
            let mut applied = self.applied.lock();
            applied
                .entry(id.clone())
                .or_insert_with(|| Packed::new(&BTreeMap::new()));
            drop(applied);
            let mut floors = self.floors.lock();
            floors
                .entry(id.clone())
                .or_insert_with(|| Packed::new(&Vec::new()));
        }
        if from_spec {
            self.spec_latest
                .insert(id.clone(), recorded.version.version);
        }
        Ok(recorded)
    }

    /// Moves an environment to a version (with its audit row). Returns the applied state
    /// it made, or `None` when the environment did not move (the version was live
    /// already, or, forward only, a newer one is).
    pub async fn apply(&self, application: &Application) -> Result<Option<AppliedState>> {
        if application.floor != FloorUpdate::Keep {
            self.floors.remove(&application.config_id);
        }
        let id = &application.config_id;
        let Some(applied_at) = self.ledger.apply(application).await? else {
            // Live already, or someone else moved it: what is live is the ledger's to
            // say, on the next read.
            self.applied.remove(id);
            return Ok(None);
        };
        let applied = AppliedState {
            config_id: id.clone(),
            environment: application.environment.clone(),
            version: application.version,
            checksum: application.checksum.clone(),
            applied_at,
        };
        // Only a config id read whole is known whole.
        if let Some(packed) = self.applied.lock().get_mut(id) {
            let mut environments = packed.get();
            environments.insert(application.environment.clone(), applied.clone());
            *packed = Packed::new(&environments);
        }
        Ok(Some(applied))
    }

    /// The latest version, from the ledger, or the cache while it is down.
    pub async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        let answer = self.ledger.latest(config_id).await;
        self.or_cached(answer, config_id, |_| true)
    }

    /// The newest version a ConfigChange recorded, from the ledger, or the cache while
    /// it is down.
    pub async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>> {
        let answer = self.ledger.recorded_by(config_id, change).await;
        self.or_cached(
            answer,
            config_id,
            |v| matches!(&v.source, Source::Change { change: c } if c == change),
        )
    }

    /// The ledger's answer, remembered; or, when it failed, the newest cached version
    /// of `config_id` `matching`.
    fn or_cached(
        &self,
        answer: Result<Option<Version>>,
        config_id: &str,
        matching: impl Fn(&Version) -> bool,
    ) -> Result<Option<Version>> {
        match answer {
            Ok(found) => {
                found.iter().for_each(|v| self.remember(v));
                Ok(found)
            }
            Err(error) => {
                let newest = self.versions.newest(config_id, matching);
                newest.map(Some).ok_or(error)
            }
        }
    }

    fn remember(&self, version: &Version) {
        self.versions.insert(version);
        self.note_newest(&version.config_id, version.version);
    }

    fn note_newest(&self, config_id: &str, version: i64) {
        let mut newest = self.newest.lock();
        let known = newest.entry(config_id.to_owned()).or_default();
        *known = (*known).max(version);
    }

    /// Brings the versions in `wanted` into the cache: those it lacks, in one query.
    /// For callers about to read many versions one by one (a DriftCheck's pass).
    pub async fn prefetch_versions(&self, wanted: &[(String, i64)]) -> Result<()> {
        let missing: Vec<(String, i64)> = wanted
            .iter()
            .filter(|(config_id, number)| !self.versions.contains(config_id, *number))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for found in self.ledger.versions_of(&missing).await? {
            self.remember(&found);
        }
        Ok(())
    }

    /// One version: from the cache (recorded versions never change), else from the
    /// ledger.
    pub async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        if let Some(cached) = self.versions.get(config_id, version) {
            return Ok(Some(cached));
        }
        let found = self.ledger.version(config_id, version).await?;
        found.iter().for_each(|v| self.remember(v));
        Ok(found)
    }

    /// Every version of a config id, oldest first, from the ledger.
    pub async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        self.ledger.versions(config_id).await
    }

    /// The versions numbered `numbers` (those that exist), from the cache when it holds
    /// every one of them, otherwise from one read of the whole history.
    pub async fn versions_numbered(
        &self,
        config_id: &str,
        numbers: &[i64],
    ) -> Result<Vec<Version>> {
        let cached: Option<Vec<Version>> = numbers
            .iter()
            .map(|n| self.versions.get(config_id, *n))
            .collect();
        if let Some(cached) = cached {
            return Ok(cached);
        }
        let all = self.ledger.versions(config_id).await?;
        Ok(all
            .into_iter()
            .filter(|v| numbers.contains(&v.version))
            .collect())
    }

    /// A config id's audit trail, oldest first, from the ledger.
    pub async fn trail(&self, config_id: &str) -> Result<Vec<super::AuditEntry>> {
        self.ledger.trail(config_id).await
    }

    /// The applied state per environment: read from the ledger once, then kept up to
    /// date by every application made through these stores (the only writer of it).
    pub async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        let id = config_id.to_owned();
        if let Some(known) = self.applied.get(&id) {
            return Ok(known.get().into_values().collect());
        }
        let applied = self.ledger.applied(config_id).await?;
        let by_environment = applied.iter().map(|a| (a.environment.clone(), a.clone()));
        let by_environment: BTreeMap<_, _> = by_environment.collect();
        self.applied.insert(id, Packed::new(&by_environment));
        Ok(applied)
    }

    /// Applied states of many config ids from the ledger, in one query.
    pub async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>> {
        self.ledger.applied_for(config_ids).await
    }

    /// Consul's applied states by key, in one recursive read; `None` without Consul.
    pub async fn consul_applied(&self) -> Option<Result<BTreeMap<String, Option<AppliedState>>>> {
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

    /// Writes one audit row.
    pub async fn audit(&self, row: &AuditRow) -> Result<()> {
        self.ledger.audit(row).await
    }

    /// Records a secret rotation step.
    pub async fn record_rotation(&self, rotation: &Rotation) -> Result<()> {
        self.ledger.record_rotation(rotation).await
    }

    /// Mirrors an approval workflow, with its audit rows.
    pub async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool> {
        self.ledger.sync_workflow(workflow).await
    }

    /// Removes a config id's applied state (ledger and cache) and Consul keys, for a
    /// ConfigEntry deleted with `deletionPolicy: Delete`, if `claimant` holds it.
    /// Versions, audit, the claim and the approval floors stay.
    pub async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        self.ledger.forget(config_id, claimant).await?;
        self.applied.remove(&config_id.to_owned());
        self.mirrored.remove(&config_id.to_owned());
        if let Some(consul) = &self.consul {
            consul.forget(config_id).await?;
        }
        Ok(())
    }
}

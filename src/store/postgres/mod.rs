//! PostgreSQL: the durable record. It numbers versions, and writes each version,
//! application and their audit rows in one transaction.

mod ownership;
mod records;

use ownership::{check_claim, write_floor};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{
    Application, AppliedState, AuditRow, Error, Floor, FloorUpdate, History, Ledger, NewVersion,
    Recorded, Result, Snapshot, Source, Version,
};

/// The longest user name, approver list or other user-written text kept in a column
/// (`VARCHAR(1024)`); longer values are cut, marked with an ellipsis.
const TEXT_COLUMN: usize = 1024;

/// A query against PostgreSQL, its values still to bind.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Versions, applied state and the audit trail in PostgreSQL.
pub struct PostgresStore {
    pool: PgPool,
    migrated: OnceCell<()>,
    /// Counts each use of the pool: a query or a transaction.
    requests: Counter,
}

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Postgres { action, source }
}

impl PostgresStore {
    /// A store that connects on first use, so that the operator starts, and says why
    /// it cannot record versions, while the database is down.
    pub fn connect_lazy(options: PgConnectOptions, requests: Counter) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Self {
            pool,
            migrated: OnceCell::new(),
            requests,
        }
    }

    /// The pool, after the migrations have been applied once. Each call is one query
    /// or one transaction, and is counted.
    async fn pool(&self) -> Result<&PgPool> {
        self.requests.inc();
        self.migrated
            .get_or_try_init(|| async { MIGRATOR.run(&self.pool).await.map_err(Error::Migrate) })
            .await?;
        Ok(&self.pool)
    }

    async fn begin_locked(&self, config_id: &str) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self
            .pool()
            .await?
            .begin()
            .await
            .map_err(failed("begin a transaction"))?;
        // Serialises writers of one config id; the unique constraint stays the arbiter.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(config_id)
            .execute(&mut *tx)
            .await
            .map_err(failed("lock the config id"))?;
        Ok(tx)
    }

    /// The versions `filter` (what follows `FROM config_versions`) selects, with the
    /// values `bind` binds.
    async fn select_versions(
        &self,
        action: &'static str,
        filter: &str,
        bind: impl for<'q> FnOnce(PgQuery<'q>) -> PgQuery<'q>,
    ) -> Result<Vec<Version>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM config_versions {filter}");
        bind(sqlx::query(&sql))
            .fetch_all(self.pool().await?)
            .await
            .map_err(failed(action))?
            .iter()
            .map(version_from_row)
            .collect()
    }
}

/// Cuts user-written text to what its column holds.
fn bounded(text: &str) -> String {
    if text.chars().count() <= TEXT_COLUMN {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(TEXT_COLUMN - 1).collect();
    cut.push('…');
    cut
}

const VERSION_COLUMNS: &str =
    "config_id, version, config, overrides, checksum, metadata, created_at, created_by";

fn timestamp(at: chrono::NaiveDateTime) -> Timestamp {
    let utc = at.and_utc();
    Timestamp::new(utc.timestamp(), utc.timestamp_subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn naive(at: Timestamp) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(at.as_second(), at.subsec_nanosecond().unsigned_abs())
        .unwrap_or_default()
        .naive_utc()
}

fn metadata(version: &Version) -> Result<Value> {
    let mut metadata = serde_json::to_value(&version.source).map_err(Error::Encode)?;
    metadata["owner"] = json!(version.owner);
    metadata["message"] = json!(version.message);
    if !version.authors.is_empty() {
        let authors: Vec<String> = version.authors.iter().map(|a| bounded(a)).collect();
        metadata["authors"] = json!(authors);
    }
    let secrets = &version.snapshot.secrets;
    if !secrets.is_null() {
        metadata["secrets"] = secrets.clone();
    }
    Ok(metadata)
}

fn version_from_row(row: &PgRow) -> Result<Version> {
    let read = |source| Error::Postgres {
        action: "read a version",
        source,
    };
    let metadata: Value = row.try_get("metadata").map_err(read)?;
    let overrides: Option<Value> = row.try_get("overrides").map_err(read)?;
    let source: Source = serde_json::from_value(metadata.clone()).map_err(Error::Encode)?;
    Ok(Version {
        config_id: row.try_get("config_id").map_err(read)?,
        version: i64::from(row.try_get::<i32, _>("version").map_err(read)?),
        owner: metadata["owner"].as_str().unwrap_or_default().to_owned(),
        snapshot: Snapshot {
            data: row.try_get("config").map_err(read)?,
            overrides: overrides
                .map(serde_json::from_value)
                .transpose()
                .map_err(Error::Encode)?
                .unwrap_or_default(),
            secrets: metadata.get("secrets").cloned().unwrap_or(Value::Null),
        },
        checksum: row.try_get("checksum").map_err(read)?,
        source,
        created_by: row.try_get("created_by").map_err(read)?,
        authors: metadata
            .get("authors")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(Error::Encode)?
            .unwrap_or_default(),
        created_at: timestamp(row.try_get("created_at").map_err(read)?),
        message: metadata["message"].as_str().unwrap_or_default().to_owned(),
    })
}

fn version_number(version: i64) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

async fn insert_version(tx: &mut Transaction<'static, Postgres>, version: &Version) -> Result<()> {
    let metadata = metadata(version)?;
    let overrides = serde_json::to_value(&version.snapshot.overrides).map_err(Error::Encode)?;
    sqlx::query(&format!(
        "INSERT INTO config_versions (id, {VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (config_id, version) DO NOTHING"
    ))
    .bind(Uuid::new_v4())
    .bind(&version.config_id)
    .bind(version_number(version.version))
    .bind(&version.snapshot.data)
    .bind(overrides)
    .bind(&version.checksum)
    .bind(metadata)
    .bind(naive(version.created_at))
    .bind(bounded(&version.created_by))
    .execute(&mut **tx)
    .await
    .map_err(failed("insert a version"))?;
    Ok(())
}

async fn insert_audit(
    tx: &mut Transaction<'static, Postgres>,
    config_id: &str,
    version: Option<i64>,
    actor: &str,
    message: &str,
    changes: Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO config_audit (id, config_id, version, actor, timestamp, message, changes)
         VALUES ($1, $2, $3, $4, clock_timestamp() AT TIME ZONE 'UTC', $5, $6)",
    )
    .bind(Uuid::new_v4())
    .bind(config_id)
    .bind(version.map(version_number))
    .bind(bounded(actor))
    .bind(message)
    .bind(changes)
    .execute(&mut **tx)
    .await
    .map_err(failed("write an audit row"))?;
    Ok(())
}

/// Inserts `row` into the audit trail.
async fn insert_row(tx: &mut Transaction<'static, Postgres>, row: &AuditRow) -> Result<()> {
    let (id, version, actor, message) = (&row.config_id, row.version, &row.actor, &row.message);
    insert_audit(tx, id, version, actor, message, row.changes.clone()).await
}

#[async_trait]
impl History for PostgresStore {
    async fn record(&self, new: &NewVersion) -> Result<Recorded> {
        let mut tx = self.begin_locked(&new.config_id).await?;
        check_claim(&mut tx, &new.config_id, &new.claimant, false).await?;

        let source = serde_json::to_value(&new.source).map_err(Error::Encode)?;
        let latest_of_source = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions
             WHERE config_id = $1 AND metadata @> $2 ORDER BY version DESC LIMIT 1"
        ))
        .bind(&new.config_id)
        .bind(&source)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed("read the latest version"))?;
        if let Some(row) = latest_of_source {
            let latest = version_from_row(&row)?;
            if latest.records(new) {
                tx.commit().await.map_err(failed("commit"))?;
                return Ok(Recorded {
                    version: latest,
                    created: false,
                });
            }
        }

        let next: i32 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM config_versions WHERE config_id = $1",
        )
        .bind(&new.config_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(failed("number a version"))?;
        if let Some(based_on) = new.based_on
            && based_on != i64::from(next) - 1
        {
            return Err(Error::Superseded {
                config_id: new.config_id.clone(),
                based_on,
                latest: i64::from(next) - 1,
            });
        }
        // Postgres keeps microseconds; keep what it will return.
        let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond());
        let created_at = now.unwrap_or(Timestamp::UNIX_EPOCH);
        let version = Version::recorded(new, i64::from(next), created_at);
        insert_version(&mut tx, &version).await?;
        insert_row(&mut tx, &AuditRow::version_recorded(&version)).await?;
        tx.commit().await.map_err(failed("commit a version"))?;
        Ok(Recorded {
            version,
            created: true,
        })
    }

    async fn apply(&self, application: &Application) -> Result<Option<Timestamp>> {
        let mut tx = self.begin_locked(&application.config_id).await?;
        check_claim(
            &mut tx,
            &application.config_id,
            &application.claimant,
            false,
        )
        .await?;
        let current: Option<(i32, String)> = sqlx::query_as(
            "SELECT version, checksum FROM config_applied_state WHERE config_id = $1 AND environment = $2",
        )
        .bind(&application.config_id)
        .bind(&application.environment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed("read the applied state"))?;
        if let Some((newer, _)) = current.as_ref().filter(|(version, _)| {
            application.forward_only && i64::from(*version) > application.version
        }) {
            return Err(Error::Superseded {
                config_id: application.config_id.clone(),
                based_on: application.version,
                latest: i64::from(*newer),
            });
        }
        if let FloorUpdate::Record(policy) = &application.floor {
            let floor = Floor {
                environment: application.environment.clone(),
                policy: policy.clone(),
                version: application.version,
            };
            write_floor(&mut tx, &application.config_id, &floor, &application.actor).await?;
        }
        if current.as_ref().is_some_and(|(version, checksum)| {
            i64::from(*version) == application.version && checksum == &application.checksum
        }) {
            tx.commit().await.map_err(failed("commit"))?;
            return Ok(None);
        }
        let applied_at: chrono::NaiveDateTime = sqlx::query_scalar(
            "INSERT INTO config_applied_state (config_id, environment, version, checksum, applied_at)
             VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC')
             ON CONFLICT (config_id, environment) DO UPDATE
             SET version = EXCLUDED.version, checksum = EXCLUDED.checksum, applied_at = EXCLUDED.applied_at
             RETURNING applied_at",
        )
        .bind(&application.config_id)
        .bind(&application.environment)
        .bind(version_number(application.version))
        .bind(&application.checksum)
        .fetch_one(&mut *tx)
        .await
        .map_err(failed("write the applied state"))?;
        let previous = current.map(|(version, _)| i64::from(version));
        insert_row(&mut tx, &AuditRow::applied(application, previous)).await?;
        tx.commit().await.map_err(failed("commit an application"))?;
        Ok(Some(timestamp(applied_at)))
    }

    async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        let filter = "WHERE config_id = $1 ORDER BY version DESC LIMIT 1";
        let id = config_id.to_owned();
        let found = self.select_versions("read the latest version", filter, |q| q.bind(id));
        Ok(found.await?.pop())
    }

    async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        let filter = "WHERE config_id = $1 AND version = $2";
        let (id, number) = (config_id.to_owned(), version_number(version));
        let found = self.select_versions("read a version", filter, |q| q.bind(id).bind(number));
        Ok(found.await?.pop())
    }

    async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        let id = config_id.to_owned();
        let filter = "WHERE config_id = $1 ORDER BY version";
        self.select_versions("read versions", filter, |q| q.bind(id))
            .await
    }

    async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        self.applied_for(&[config_id.to_owned()]).await
    }

    async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>> {
        let filter = "WHERE config_id = $1 AND metadata ->> 'source' = 'change' AND metadata ->> 'change' = $2
             ORDER BY version DESC LIMIT 1";
        let (id, change) = (config_id.to_owned(), change.to_owned());
        let found = self.select_versions("read a change's version", filter, |q| {
            q.bind(id).bind(change)
        });
        Ok(found.await?.pop())
    }

    async fn versions_of(&self, wanted: &[(String, i64)]) -> Result<Vec<Version>> {
        let ids: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
        let numbers: Vec<i32> = wanted.iter().map(|(_, n)| version_number(*n)).collect();
        let filter = "WHERE (config_id, version) IN (SELECT * FROM unnest($1::text[], $2::int[]))";
        self.select_versions("read versions", filter, |q| q.bind(ids).bind(numbers))
            .await
    }

    /// Applied states of many config ids, in one query.
    async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>> {
        let rows: Vec<(String, String, i32, String, chrono::NaiveDateTime)> = sqlx::query_as(
            "SELECT config_id, environment, version, checksum, applied_at
             FROM config_applied_state WHERE config_id = ANY($1) ORDER BY config_id, environment",
        )
        .bind(config_ids)
        .fetch_all(self.pool().await?)
        .await
        .map_err(failed("read the applied state"))?;
        Ok(rows
            .into_iter()
            .map(
                |(config_id, environment, version, checksum, applied_at)| AppliedState {
                    config_id,
                    environment,
                    version: i64::from(version),
                    checksum,
                    applied_at: timestamp(applied_at),
                },
            )
            .collect())
    }
}

impl Ledger for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn is_durable(&self) -> bool {
        true
    }
}

//! PostgreSQL: the durable record. It numbers versions, and writes each version,
//! application and their audit rows in one transaction.

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
    Application, AppliedState, Claimant, Error, Floor, FloorUpdate, NewVersion, Projection,
    Recorded, Result, Rotation, Snapshot, Source, Target, Version, VersionStore, Workflow,
    WorkflowApproval,
};
use crate::core::ownership::{self, ClaimVerdict};

/// The longest user name, approver list or other user-written text kept in a column
/// (`VARCHAR(1024)`); longer values are cut, marked with an ellipsis.
const TEXT_COLUMN: usize = 1024;

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
}

impl PostgresStore {
    /// Mirrors a workflow into `approval_workflows`, with an audit row for every step
    /// the table has not seen yet. Returns whether anything was written.
    pub async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool> {
        let mut tx = self.begin_locked(&workflow.config_id).await?;
        let row: Option<(Value, String)> = sqlx::query_as(
            "SELECT COALESCE(approvals, '[]'::jsonb), status FROM approval_workflows WHERE change_id = $1",
        )
        .bind(&workflow.change_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed("read an approval workflow"))?;
        let approvals = serde_json::to_value(&workflow.approvals).map_err(Error::Encode)?;
        let counted: Vec<&str> = workflow
            .approvals
            .iter()
            .filter(|a| a.counted)
            .map(|a| a.approver.as_str())
            .collect();
        let step = |event: &str| json!({"event": event, "change": workflow.change_id, "environment": workflow.environment});
        let (known, status) = match row {
            Some((known, status)) => {
                let known: Vec<WorkflowApproval> =
                    serde_json::from_value(known).unwrap_or_default();
                if known == workflow.approvals && status == workflow.status {
                    tx.commit().await.map_err(failed("commit"))?;
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE approval_workflows SET approvals = $2, approvers = $3, status = $4 WHERE change_id = $1",
                )
                .bind(&workflow.change_id)
                .bind(&approvals)
                .bind(&counted)
                .bind(&workflow.status)
                .execute(&mut *tx)
                .await
                .map_err(failed("update an approval workflow"))?;
                (known, Some(status))
            }
            None => {
                sqlx::query(
                    "INSERT INTO approval_workflows
                       (id, change_id, config_id, proposed_version, requested_by, requested_at, approvers, approvals, status, auto_approve_for)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(Uuid::new_v4())
                .bind(&workflow.change_id)
                .bind(&workflow.config_id)
                .bind(&workflow.proposal)
                .bind(bounded(&workflow.requested_by))
                .bind(naive(workflow.requested_at))
                .bind(&counted)
                .bind(&approvals)
                .bind(&workflow.status)
                .bind(&workflow.auto_approve_for)
                .execute(&mut *tx)
                .await
                .map_err(failed("insert an approval workflow"))?;
                let mut requested = step("requested");
                requested["proposal"] = workflow.proposal.clone();
                insert_audit(
                    &mut tx,
                    &workflow.config_id,
                    Some(workflow.base_version),
                    &workflow.requested_by,
                    &workflow.message,
                    requested,
                )
                .await?;
                (Vec::new(), None)
            }
        };
        for approval in &workflow.approvals {
            if known.iter().any(|k| k.approver == approval.approver) {
                continue;
            }
            let mut approved = step("approved");
            approved["counted"] = json!(approval.counted);
            insert_audit(
                &mut tx,
                &workflow.config_id,
                Some(workflow.base_version),
                &approval.approver,
                approval.comment.as_deref().unwrap_or(""),
                approved,
            )
            .await?;
        }
        let ended = ["rejected", "expired", "superseded", "failed"];
        if status.as_deref() != Some(workflow.status.as_str())
            && ended.contains(&workflow.status.as_str())
        {
            insert_audit(
                &mut tx,
                &workflow.config_id,
                Some(workflow.base_version),
                workflow.ended_by.as_deref().unwrap_or("summit-config"),
                workflow.end_reason.as_deref().unwrap_or(""),
                step(&workflow.status),
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(failed("commit an approval workflow"))?;
        Ok(true)
    }

    /// Checks (and takes, or renews) `claimant`'s claim on `config_id`; or, unless
    /// `take`, only checks that it holds it.
    pub async fn claim(&self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()> {
        let mut tx = self.begin_locked(config_id).await?;
        check_claim(&mut tx, config_id, claimant, take).await?;
        tx.commit().await.map_err(failed("commit a claim"))?;
        Ok(())
    }

    /// Who holds a config id.
    pub async fn holder(&self, config_id: &str) -> Result<Option<Claimant>> {
        let row: Option<(String, String, String)> =
            sqlx::query_as("SELECT namespace, name, uid FROM config_claims WHERE config_id = $1")
                .bind(config_id)
                .fetch_optional(self.pool().await?)
                .await
                .map_err(failed("read a config id's claim"))?;
        Ok(row.map(|(namespace, name, uid)| Claimant {
            namespace,
            name,
            uid,
        }))
    }

    /// The approval floors recorded for a config id's environments.
    pub async fn floors(&self, config_id: &str) -> Result<Vec<Floor>> {
        let rows: Vec<(String, Option<Value>, i32)> = sqlx::query_as(
            "SELECT environment, policy, version FROM approval_floors WHERE config_id = $1 ORDER BY environment",
        )
        .bind(config_id)
        .fetch_all(self.pool().await?)
        .await
        .map_err(failed("read the approval floors"))?;
        rows.into_iter()
            .map(|(environment, policy, version)| {
                Ok(Floor {
                    environment,
                    policy: policy
                        .filter(|p| !p.is_null())
                        .map(serde_json::from_value)
                        .transpose()
                        .map_err(Error::Encode)?,
                    version: i64::from(version),
                })
            })
            .collect()
    }

    /// Records an environment's approval floor outside an application (a spec that
    /// now asks for more than the floor), with its audit row.
    pub async fn record_floor(
        &self,
        config_id: &str,
        claimant: &Claimant,
        floor: &Floor,
        actor: &str,
    ) -> Result<()> {
        let mut tx = self.begin_locked(config_id).await?;
        check_claim(&mut tx, config_id, claimant, false).await?;
        write_floor(&mut tx, config_id, floor, actor).await?;
        tx.commit()
            .await
            .map_err(failed("commit an approval floor"))?;
        Ok(())
    }

    /// Binds `target` to `projection` unless it is bound already; returns what it is
    /// bound to now.
    pub async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection> {
        let row: (String, String) = sqlx::query_as(
            "WITH inserted AS (
               INSERT INTO projection_bindings (kind, namespace, name, config_id, environment, bound_at)
               VALUES ($1, $2, $3, $4, $5, now() AT TIME ZONE 'UTC')
               ON CONFLICT (kind, namespace, name) DO NOTHING
               RETURNING config_id, environment)
             SELECT config_id, environment FROM inserted
             UNION ALL
             SELECT config_id, environment FROM projection_bindings
             WHERE kind = $1 AND namespace = $2 AND name = $3
             LIMIT 1",
        )
        .bind(target.kind.as_str())
        .bind(&target.namespace)
        .bind(&target.name)
        .bind(&projection.config_id)
        .bind(&projection.environment)
        .fetch_one(self.pool().await?)
        .await
        .map_err(failed("bind a projection target"))?;
        Ok(Projection {
            config_id: row.0,
            environment: row.1,
        })
    }

    /// Moves `target`'s binding to `to`, if it is still bound to `from`, with an audit
    /// row under both config ids.
    pub async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()> {
        let pool = self.pool().await?;
        let mut tx = pool.begin().await.map_err(failed("begin a transaction"))?;
        let moved = sqlx::query(
            "UPDATE projection_bindings SET config_id = $4, environment = $5, bound_at = now() AT TIME ZONE 'UTC'
             WHERE kind = $1 AND namespace = $2 AND name = $3 AND config_id = $6 AND environment = $7",
        )
        .bind(target.kind.as_str())
        .bind(&target.namespace)
        .bind(&target.name)
        .bind(&to.config_id)
        .bind(&to.environment)
        .bind(&from.config_id)
        .bind(&from.environment)
        .execute(&mut *tx)
        .await
        .map_err(failed("move a projection binding"))?
        .rows_affected();
        if moved > 0 {
            let changes = json!({
                "event": "targetRebound",
                "target": target.to_string(),
                "from": {"configId": from.config_id, "environment": from.environment},
                "to": {"configId": to.config_id, "environment": to.environment},
            });
            for config_id in [&from.config_id, &to.config_id] {
                insert_audit(
                    &mut tx,
                    config_id,
                    None,
                    "summit-config",
                    &format!(
                        "{target} passes from {} of {} to {} of {}, guarded at least as well",
                        from.environment, from.config_id, to.environment, to.config_id
                    ),
                    changes.clone(),
                )
                .await?;
            }
        }
        tx.commit().await.map_err(failed("commit a binding"))?;
        Ok(())
    }

    /// What `target` is bound to.
    pub async fn binding(&self, target: &Target) -> Result<Option<Projection>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT config_id, environment FROM projection_bindings WHERE kind = $1 AND namespace = $2 AND name = $3",
        )
        .bind(target.kind.as_str())
        .bind(&target.namespace)
        .bind(&target.name)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(failed("read a projection binding"))?;
        Ok(row.map(|(config_id, environment)| Projection {
            config_id,
            environment,
        }))
    }

    /// The newest version a ConfigChange (`change`: its id) recorded for a config id.
    pub async fn recorded_by(&self, config_id: &str, change: &str) -> Result<Option<Version>> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions
             WHERE config_id = $1 AND metadata ->> 'source' = 'change' AND metadata ->> 'change' = $2
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(config_id)
        .bind(change)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(failed("read a change's version"))?
        .as_ref()
        .map(version_from_row)
        .transpose()
    }

    /// Many versions, by config id and number, in one query.
    pub async fn versions_of(&self, wanted: &[(String, i64)]) -> Result<Vec<Version>> {
        let ids: Vec<&str> = wanted.iter().map(|(id, _)| id.as_str()).collect();
        let numbers: Vec<i32> = wanted.iter().map(|(_, n)| version_number(*n)).collect();
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions
             WHERE (config_id, version) IN (SELECT * FROM unnest($1::text[], $2::int[]))"
        ))
        .bind(ids)
        .bind(numbers)
        .fetch_all(self.pool().await?)
        .await
        .map_err(failed("read versions"))?
        .iter()
        .map(version_from_row)
        .collect()
    }

    /// Applied states of many config ids, in one query.
    pub async fn applied_for(&self, config_ids: &[String]) -> Result<Vec<AppliedState>> {
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

    /// Writes one audit row on its own.
    pub async fn audit(
        &self,
        config_id: &str,
        version: i64,
        actor: &str,
        message: &str,
        changes: Value,
    ) -> Result<()> {
        let pool = self.pool().await?;
        let mut tx = pool.begin().await.map_err(failed("begin a transaction"))?;
        insert_audit(&mut tx, config_id, Some(version), actor, message, changes).await?;
        tx.commit().await.map_err(failed("commit an audit row"))?;
        Ok(())
    }

    /// Upserts a secret's rotation policy row and writes the audit row of one step, in
    /// one transaction. Audit rows of secrets carry the config id `secret:<id>` and no
    /// version.
    pub async fn record_rotation(&self, rotation: &Rotation) -> Result<()> {
        let pool = self.pool().await?;
        let mut tx = pool.begin().await.map_err(failed("begin a transaction"))?;
        sqlx::query(
            "INSERT INTO secret_rotation_policies
               (secret_id, rotation_interval_days, rotation_lambda, notify_on_rotation, grace_period_days, last_rotated_at, next_rotation_at, policy, provider)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (policy) DO UPDATE SET
               secret_id = EXCLUDED.secret_id,
               provider = EXCLUDED.provider,
               rotation_interval_days = EXCLUDED.rotation_interval_days,
               rotation_lambda = EXCLUDED.rotation_lambda,
               notify_on_rotation = EXCLUDED.notify_on_rotation,
               grace_period_days = EXCLUDED.grace_period_days,
               last_rotated_at = EXCLUDED.last_rotated_at,
               next_rotation_at = EXCLUDED.next_rotation_at",
        )
        .bind(&rotation.secret_id)
        .bind(rotation.interval_days)
        .bind(&rotation.rotation_function)
        .bind(&rotation.notify)
        .bind(rotation.grace_days)
        .bind(rotation.last_rotated_at.map(naive))
        .bind(rotation.next_rotation_at.map(naive))
        .bind(&rotation.policy)
        .bind(&rotation.provider)
        .execute(&mut *tx)
        .await
        .map_err(failed("write a rotation policy"))?;
        insert_audit(
            &mut tx,
            &rotation.audit_id(),
            None,
            &rotation.actor,
            &format!(
                "{} by SecretRotationPolicy {}",
                rotation.event, rotation.policy
            ),
            json!({
                "event": rotation.event,
                "policy": rotation.policy,
                "currentVersion": rotation.current_version,
                "previousVersion": rotation.previous_version,
            }),
        )
        .await?;
        tx.commit().await.map_err(failed("commit a rotation"))?;
        Ok(())
    }

    /// Removes a config id's applied state, with an audit row naming who and why, if
    /// `claimant` holds it. Versions, the audit trail, the claim and the approval
    /// floors stay.
    pub async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
        let actor = claimant.entry();
        let actor = actor.as_str();
        let mut tx = self.begin_locked(config_id).await?;
        check_claim(&mut tx, config_id, claimant, false).await?;
        let latest: Option<i32> =
            sqlx::query_scalar("SELECT MAX(version) FROM config_versions WHERE config_id = $1")
                .bind(config_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("read the latest version"))?;
        sqlx::query("DELETE FROM config_applied_state WHERE config_id = $1")
            .bind(config_id)
            .execute(&mut *tx)
            .await
            .map_err(failed("delete the applied state"))?;
        if let Some(latest) = latest {
            insert_audit(
                &mut tx,
                config_id,
                Some(i64::from(latest)),
                actor,
                "ConfigEntry deleted with deletionPolicy Delete",
                json!({"event": "deleted"}),
            )
            .await?;
        }
        tx.commit().await.map_err(failed("commit a deletion"))?;
        Ok(())
    }
}

/// Checks `claimant`'s claim on `config_id` inside a transaction that holds the config
/// id's lock, and refuses it to anyone else. With `take` (the entry's own reconcile,
/// after its config id passed every check) it takes the claim when nobody holds it and
/// renews it for an entry created again under the holder's name; without, only the
/// holder passes.
async fn check_claim(
    tx: &mut Transaction<'static, Postgres>,
    config_id: &str,
    claimant: &Claimant,
    take: bool,
) -> Result<()> {
    let holder: Option<(String, String, String)> =
        sqlx::query_as("SELECT namespace, name, uid FROM config_claims WHERE config_id = $1")
            .bind(config_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(failed("read a config id's claim"))?;
    let holder = holder.map(|(namespace, name, uid)| Claimant {
        namespace,
        name,
        uid,
    });
    match ownership::claim(config_id, holder.as_ref(), claimant) {
        ClaimVerdict::Holds => Ok(()),
        ClaimVerdict::Refuse(refused) => Err(Error::Claimed(refused)),
        ClaimVerdict::Take | ClaimVerdict::Renew if !take => Err(Error::Unclaimed {
            config_id: config_id.to_owned(),
            entry: claimant.entry(),
        }),
        verdict @ (ClaimVerdict::Take | ClaimVerdict::Renew) => {
            sqlx::query(
                "INSERT INTO config_claims (config_id, namespace, name, uid, claimed_at)
                 VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC')
                 ON CONFLICT (config_id) DO UPDATE SET uid = EXCLUDED.uid, claimed_at = EXCLUDED.claimed_at",
            )
            .bind(config_id)
            .bind(&claimant.namespace)
            .bind(&claimant.name)
            .bind(&claimant.uid)
            .execute(&mut **tx)
            .await
            .map_err(failed("claim a config id"))?;
            let event = if verdict == ClaimVerdict::Take {
                "claimed"
            } else {
                "claimRenewed"
            };
            insert_audit(
                tx,
                config_id,
                None,
                &claimant.entry(),
                &format!("config id {event} by ConfigEntry {claimant}"),
                json!({"event": event, "entry": claimant.entry(), "uid": claimant.uid}),
            )
            .await
        }
    }
}

/// Writes an environment's approval floor, with an audit row when it changed.
async fn write_floor(
    tx: &mut Transaction<'static, Postgres>,
    config_id: &str,
    floor: &Floor,
    actor: &str,
) -> Result<()> {
    let policy = serde_json::to_value(&floor.policy).map_err(Error::Encode)?;
    let previous: Option<Option<Value>> = sqlx::query_scalar(
        "SELECT policy FROM approval_floors WHERE config_id = $1 AND environment = $2",
    )
    .bind(config_id)
    .bind(&floor.environment)
    .fetch_optional(&mut **tx)
    .await
    .map_err(failed("read an approval floor"))?;
    let previous = previous.map(|p| p.unwrap_or(Value::Null));
    if previous.as_ref() == Some(&policy) {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO approval_floors (config_id, environment, policy, version, recorded_at)
         VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC')
         ON CONFLICT (config_id, environment) DO UPDATE
         SET policy = EXCLUDED.policy, version = EXCLUDED.version, recorded_at = EXCLUDED.recorded_at",
    )
    .bind(config_id)
    .bind(&floor.environment)
    .bind(&policy)
    .bind(version_number(floor.version))
    .execute(&mut **tx)
    .await
    .map_err(failed("write an approval floor"))?;
    insert_audit(
        tx,
        config_id,
        Some(floor.version),
        actor,
        &format!(
            "approval floor of {}: {}",
            floor.environment,
            crate::core::approval::describe(floor.policy.as_ref())
        ),
        json!({"event": "approvalFloor", "environment": floor.environment, "policy": policy, "previous": previous}),
    )
    .await
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
         VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC', $5, $6)",
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

impl VersionStore for PostgresStore {
    async fn record_version(&self, new: &NewVersion) -> Result<Recorded> {
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
        let version = Version {
            config_id: new.config_id.clone(),
            version: i64::from(next),
            owner: new.claimant.entry(),
            snapshot: new.snapshot.clone(),
            checksum: new.checksum.clone(),
            source: new.source.clone(),
            created_by: new.created_by.clone(),
            authors: new.authors.clone(),
            // Postgres keeps microseconds; keep what it will return.
            created_at: Timestamp::from_microsecond(Timestamp::now().as_microsecond())
                .unwrap_or(Timestamp::UNIX_EPOCH),
            message: new.message.clone(),
        };
        insert_version(&mut tx, &version).await?;
        insert_audit(
            &mut tx,
            &version.config_id,
            Some(version.version),
            &version.created_by,
            &version.message,
            json!({"event": "versionRecorded", "checksum": version.checksum, "source": source, "owner": version.owner}),
        )
        .await?;
        tx.commit().await.map_err(failed("commit a version"))?;
        Ok(Recorded {
            version,
            created: true,
        })
    }

    async fn store_version(&self, version: &Version) -> Result<()> {
        let mut tx = self.begin_locked(&version.config_id).await?;
        insert_version(&mut tx, version).await?;
        let checksum: String = sqlx::query_scalar(
            "SELECT checksum FROM config_versions WHERE config_id = $1 AND version = $2",
        )
        .bind(&version.config_id)
        .bind(version_number(version.version))
        .fetch_one(&mut *tx)
        .await
        .map_err(failed("read back a version"))?;
        tx.commit().await.map_err(failed("commit a version"))?;
        if checksum != version.checksum {
            return Err(Error::Diverged {
                config_id: version.config_id.clone(),
                version: version.version,
                backend: "postgres",
            });
        }
        Ok(())
    }

    async fn apply(&self, application: &Application) -> Result<bool> {
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
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO config_applied_state (config_id, environment, version, checksum, applied_at)
             VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC')
             ON CONFLICT (config_id, environment) DO UPDATE
             SET version = EXCLUDED.version, checksum = EXCLUDED.checksum, applied_at = EXCLUDED.applied_at",
        )
        .bind(&application.config_id)
        .bind(&application.environment)
        .bind(version_number(application.version))
        .bind(&application.checksum)
        .execute(&mut *tx)
        .await
        .map_err(failed("write the applied state"))?;
        insert_audit(
            &mut tx,
            &application.config_id,
            Some(application.version),
            &application.actor,
            &application.message,
            json!({
                "event": "applied",
                "environment": application.environment,
                "checksum": application.checksum,
                "previousVersion": current.map(|(version, _)| version),
            }),
        )
        .await?;
        tx.commit().await.map_err(failed("commit an application"))?;
        Ok(true)
    }

    async fn store_applied(&self, applied: &AppliedState) -> Result<()> {
        sqlx::query(
            "INSERT INTO config_applied_state (config_id, environment, version, checksum, applied_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (config_id, environment) DO UPDATE
             SET version = EXCLUDED.version, checksum = EXCLUDED.checksum, applied_at = EXCLUDED.applied_at",
        )
        .bind(&applied.config_id)
        .bind(&applied.environment)
        .bind(version_number(applied.version))
        .bind(&applied.checksum)
        .bind(naive(applied.applied_at))
        .execute(self.pool().await?)
        .await
        .map_err(failed("write the applied state"))?;
        Ok(())
    }

    async fn latest(&self, config_id: &str) -> Result<Option<Version>> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions WHERE config_id = $1 ORDER BY version DESC LIMIT 1"
        ))
        .bind(config_id)
        .fetch_optional(self.pool().await?)
        .await
        .map_err(failed("read the latest version"))?
        .as_ref()
        .map(version_from_row)
        .transpose()
    }

    async fn version(&self, config_id: &str, version: i64) -> Result<Option<Version>> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions WHERE config_id = $1 AND version = $2"
        ))
        .bind(config_id)
        .bind(version_number(version))
        .fetch_optional(self.pool().await?)
        .await
        .map_err(failed("read a version"))?
        .as_ref()
        .map(version_from_row)
        .transpose()
    }

    async fn versions(&self, config_id: &str) -> Result<Vec<Version>> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions WHERE config_id = $1 ORDER BY version"
        ))
        .bind(config_id)
        .fetch_all(self.pool().await?)
        .await
        .map_err(failed("read versions"))?
        .iter()
        .map(version_from_row)
        .collect()
    }

    async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        self.applied_for(&[config_id.to_owned()]).await
    }
}

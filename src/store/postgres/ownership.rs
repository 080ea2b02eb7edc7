//! Who holds what: claims on config ids, approval floors and projection bindings.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use super::{PostgresStore, failed, insert_row, version_number};
use crate::{
    core::ownership::{self, ClaimVerdict},
    store::{Claimant, Error, Floor, Ownership, Projection, RaisedFloor, Result, Target, rows},
};

#[async_trait]
impl Ownership for PostgresStore {
    /// Checks (and takes, or renews) `claimant`'s claim on `config_id`; or, unless
    /// `take`, only checks that it holds it.
    async fn claim(&self, config_id: &str, claimant: &Claimant, take: bool) -> Result<()> {
        let mut tx = self.begin_locked(config_id).await?;
        check_claim(&mut tx, config_id, claimant, take).await?;
        tx.commit().await.map_err(failed("commit a claim"))?;
        Ok(())
    }

    /// Who holds a config id.
    async fn holder(&self, config_id: &str) -> Result<Option<Claimant>> {
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
    async fn floors(&self, config_id: &str) -> Result<Vec<Floor>> {
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
    async fn record_floor(&self, raised: &RaisedFloor) -> Result<()> {
        let id = &raised.config_id;
        let mut tx = self.begin_locked(id).await?;
        check_claim(&mut tx, id, &raised.claimant, false).await?;
        write_floor(&mut tx, id, &raised.floor, &raised.actor).await?;
        tx.commit()
            .await
            .map_err(failed("commit an approval floor"))?;
        Ok(())
    }

    /// Binds `target` to `projection` unless it is bound already; returns what it is
    /// bound to now.
    async fn bind(&self, target: &Target, projection: &Projection) -> Result<Projection> {
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
    async fn rebind(&self, target: &Target, from: &Projection, to: &Projection) -> Result<()> {
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
            for row in rows::rebound(target, from, to) {
                insert_row(&mut tx, &row).await?;
            }
        }
        tx.commit().await.map_err(failed("commit a binding"))?;
        Ok(())
    }

    /// What `target` is bound to.
    async fn binding(&self, target: &Target) -> Result<Option<Projection>> {
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

    /// Removes a config id's applied state, with an audit row naming who and why, if
    /// `claimant` holds it. Versions, the audit trail, the claim and the approval
    /// floors stay.
    async fn forget(&self, config_id: &str, claimant: &Claimant) -> Result<()> {
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
            let row = rows::deleted(config_id, i64::from(latest), actor);
            insert_row(&mut tx, &row).await?;
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
pub(super) async fn check_claim(
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
            let renewed = verdict == ClaimVerdict::Renew;
            insert_row(tx, &rows::claimed(config_id, claimant, renewed)).await
        }
    }
}

/// Writes an environment's approval floor, with an audit row when it changed.
pub(super) async fn write_floor(
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
    insert_row(tx, &rows::floor(config_id, floor, previous, actor)).await
}

//! The audit trail beyond versions: approval workflows, lone audit rows and rotations.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{PostgresStore, bounded, failed, insert_row, naive, timestamp};
use crate::store::{
    Audit, AuditEntry, AuditRow, Error, Result, Rotation, Workflow, WorkflowApproval, rows,
};

/// An audit row as selected: when, version, actor, message, changes.
type TrailRow = (chrono::NaiveDateTime, Option<i32>, String, String, Value);

#[async_trait]
impl Audit for PostgresStore {
    /// Mirrors a workflow into `approval_workflows`, with an audit row for every step
    /// the table has not seen yet. Returns whether anything was written.
    async fn sync_workflow(&self, workflow: &Workflow) -> Result<bool> {
        let mut tx = self.begin_locked(&workflow.config_id).await?;
        let row: Option<(Value, String)> = sqlx::query_as(
            "SELECT COALESCE(approvals, '[]'::jsonb), status FROM approval_workflows WHERE change_id = $1",
        )
        .bind(&workflow.change_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed("read an approval workflow"))?;
        let known = row.map(|(known, status)| {
            let known: Vec<WorkflowApproval> = serde_json::from_value(known).unwrap_or_default();
            (known, status)
        });
        if known.as_ref().is_some_and(|(known, status)| {
            *known == workflow.approvals && *status == workflow.status
        }) {
            tx.commit().await.map_err(failed("commit"))?;
            return Ok(false);
        }
        let approvals = serde_json::to_value(&workflow.approvals).map_err(Error::Encode)?;
        let counted: Vec<&str> = workflow
            .approvals
            .iter()
            .filter(|a| a.counted)
            .map(|a| a.approver.as_str())
            .collect();
        let seen = match known {
            Some((known, status)) => {
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
                Some((known, status))
            }
            None => {
                insert_workflow(&mut tx, workflow, &approvals, &counted).await?;
                None
            }
        };
        let known = seen
            .as_ref()
            .map(|(approvals, status)| rows::Known { approvals, status });
        for row in rows::workflow_steps(workflow, known) {
            insert_row(&mut tx, &row).await?;
        }
        tx.commit()
            .await
            .map_err(failed("commit an approval workflow"))?;
        Ok(true)
    }

    /// A config id's audit rows, oldest first (each row is stamped with the clock when
    /// it is written, so the rows of one transaction keep their order).
    async fn trail(&self, config_id: &str) -> Result<Vec<AuditEntry>> {
        let pool = self.pool().await?;
        let rows: Vec<TrailRow> = sqlx::query_as(
            "SELECT timestamp, version, actor, COALESCE(message, ''), COALESCE(changes, 'null'::jsonb)
             FROM config_audit WHERE config_id = $1 ORDER BY timestamp",
        )
        .bind(config_id)
        .fetch_all(pool)
        .await
        .map_err(failed("read the audit trail"))?;
        let entries = rows
            .into_iter()
            .map(|(at, version, actor, message, changes)| AuditEntry {
                at: timestamp(at),
                row: AuditRow {
                    config_id: config_id.to_owned(),
                    version: version.map(i64::from),
                    actor,
                    message,
                    changes,
                },
            });
        Ok(entries.collect())
    }

    /// Writes one audit row on its own.
    async fn audit(&self, row: &AuditRow) -> Result<()> {
        let pool = self.pool().await?;
        let mut tx = pool.begin().await.map_err(failed("begin a transaction"))?;
        insert_row(&mut tx, row).await?;
        tx.commit().await.map_err(failed("commit an audit row"))?;
        Ok(())
    }

    /// Upserts a secret's rotation policy row and writes the audit row of one step, in
    /// one transaction. Audit rows of secrets carry the config id `secret:<id>` and no
    /// version.
    async fn record_rotation(&self, rotation: &Rotation) -> Result<()> {
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
        insert_row(&mut tx, &rows::rotation(rotation)).await?;
        tx.commit().await.map_err(failed("commit a rotation"))?;
        Ok(())
    }
}

/// Inserts a workflow first seen.
async fn insert_workflow(
    tx: &mut Transaction<'static, Postgres>,
    workflow: &Workflow,
    approvals: &Value,
    counted: &[&str],
) -> Result<()> {
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
    .bind(counted)
    .bind(approvals)
    .bind(&workflow.status)
    .bind(&workflow.auto_approve_for)
    .execute(&mut **tx)
    .await
    .map_err(failed("insert an approval workflow"))?;
    Ok(())
}

//! Reads across config ids, each in one query: what drift checks and proposals need.

use super::{PostgresStore, VERSION_COLUMNS, failed, timestamp, version_from_row, version_number};
use crate::store::{AppliedState, Result, Version};

impl PostgresStore {
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
}

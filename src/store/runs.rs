//! Maintenance action runs: one row per run, with its full audit record.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{json_col, Store, StoreError};

/// A run as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRow {
    pub id: String,
    pub contract: String,
    pub action: String,
    pub flow: String,
    pub host: String,
    pub notification_id: Option<String>,
    pub ticket: Option<String>,
    pub requested_by: serde_json::Value,
    /// `running`, `succeeded`, `not_needed`, `failed`, `refused`, `interrupted`.
    pub state: String,
    pub record: Option<serde_json::Value>,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
}

impl Store {
    /// Record a run that starts now. Fails if the same contract, host and
    /// flow already has a running row (another process runs it).
    pub async fn start_run(&self, r: &RunRow) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO action_runs (id, contract, action, flow, host, notification_id, ticket, requested_by, \
             state, record, started_ms, finished_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.contract)
        .bind(&r.action)
        .bind(&r.flow)
        .bind(&r.host)
        .bind(&r.notification_id)
        .bind(&r.ticket)
        .bind(r.requested_by.to_string())
        .bind(&r.state)
        .bind(r.record.as_ref().map(|v| v.to_string()))
        .bind(r.started_ms)
        .bind(r.finished_ms)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Store the final state and record of a run (inserting it when the
    /// run was refused before it started).
    pub async fn finish_run(&self, r: &RunRow) -> Result<(), StoreError> {
        let n = sqlx::query(
            "UPDATE action_runs SET state = $1, record = $2, finished_ms = $3 WHERE id = $4",
        )
        .bind(&r.state)
        .bind(r.record.as_ref().map(|v| v.to_string()))
        .bind(r.finished_ms)
        .bind(&r.id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            self.start_run(r).await?;
        }
        Ok(())
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM action_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Self::run_row(&r)).transpose()
    }

    /// Runs of a notification, oldest first.
    pub async fn runs_of(&self, notification_id: &str) -> Result<Vec<RunRow>, StoreError> {
        sqlx::query("SELECT * FROM action_runs WHERE notification_id = $1 ORDER BY started_ms")
            .bind(notification_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::run_row)
            .collect()
    }

    /// Runs left `running` by a process that stopped: they are not
    /// running any more, and their slot must be free again.
    pub async fn interrupt_runs(&self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE action_runs SET state = 'interrupted', finished_ms = $1 WHERE state = 'running'",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    fn run_row(r: &AnyRow) -> Result<RunRow, StoreError> {
        Ok(RunRow {
            id: r.try_get("id")?,
            contract: r.try_get("contract")?,
            action: r.try_get("action")?,
            flow: r.try_get("flow")?,
            host: r.try_get("host")?,
            notification_id: r.try_get("notification_id")?,
            ticket: r.try_get("ticket")?,
            requested_by: json_col(r, "requested_by")?.unwrap_or_default(),
            state: r.try_get("state")?,
            record: json_col(r, "record")?,
            started_ms: r.try_get("started_ms")?,
            finished_ms: r.try_get("finished_ms")?,
        })
    }
}

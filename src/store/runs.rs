//! Maintenance action runs: one row per run, with its full audit record.
//!
//! Clustered, a run asked for from a call carries its notification's
//! lease epoch (`RunRow::epoch`): its start (the slot) and its record are
//! written only while that epoch still holds the notification, checked
//! in the write's own transaction with the notification row locked, so
//! a node that lost the lease can neither take the slot nor record a run
//! on work another node now carries out (`StoreError::Fenced`).

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
    /// `host:pid` of the process running it.
    pub owner: Option<String>,
    /// When the owner last said it still runs.
    pub heartbeat_ms: Option<i64>,
    /// Clustered, from a call: the notification's lease epoch the run
    /// was started under (its fencing token).
    pub epoch: Option<i64>,
}

impl Store {
    /// Record a run that starts now. Fails if the same contract, host and
    /// flow already has a running row (another process runs it); with an
    /// epoch, `Fenced` when that epoch no longer holds the notification.
    pub async fn start_run(&self, r: &RunRow) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        fence_run(&mut tx, r).await?;
        let res = insert_run(&mut tx, r).await;
        match res {
            Ok(_) => {
                tx.commit().await?;
                Ok(true)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Store the final state and record of a run (inserting it when the
    /// run was refused before it started); with an epoch, only while it
    /// still holds the notification (else `Fenced`, nothing written).
    pub async fn finish_run(&self, r: &RunRow) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        fence_run(&mut tx, r).await?;
        let n = sqlx::query(
            "UPDATE action_runs SET state = $1, record = $2, finished_ms = $3 WHERE id = $4",
        )
        .bind(&r.state)
        .bind(r.record.as_ref().map(|v| v.to_string()))
        .bind(r.finished_ms)
        .bind(&r.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            match insert_run(&mut tx, r).await {
                Ok(_) => {}
                // Only a `running` row can collide (the slot's index),
                // and then another process runs it: nothing to record.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The lease epoch that holds notification `id` now (clustered), if
    /// it exists.
    pub async fn lease_epoch(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT epoch FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("epoch")?),
            None => None,
        })
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

    /// The run holding the (contract, host, flow) slot, if any.
    pub async fn running_run(
        &self,
        contract: &str,
        host: &str,
        flow: &str,
    ) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM action_runs WHERE contract = $1 AND host = $2 AND flow = $3 AND state = 'running'",
        )
        .bind(contract)
        .bind(host)
        .bind(flow)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Self::run_row(&r)).transpose()
    }

    /// Every run that is `running`, by the database's word.
    pub async fn running_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        sqlx::query("SELECT * FROM action_runs WHERE state = 'running' ORDER BY started_ms")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::run_row)
            .collect()
    }

    /// The owner of a running run says it still runs.
    pub async fn beat_run(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE action_runs SET heartbeat_ms = $1 WHERE id = $2 AND state = 'running'")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Mark a run whose owner is gone `interrupted`, freeing its slot.
    /// False when it had ended meanwhile.
    pub async fn interrupt_run(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE action_runs SET state = 'interrupted', finished_ms = $1 WHERE id = $2 AND state = 'running'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
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
            owner: r.try_get("owner")?,
            heartbeat_ms: r.try_get("heartbeat_ms")?,
            epoch: r.try_get("epoch")?,
        })
    }
}

/// With an epoch, check inside `tx` that it still holds the run's
/// notification (the row stays locked until the commit).
async fn fence_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &RunRow,
) -> Result<(), StoreError> {
    let (Some(epoch), Some(n)) = (r.epoch, r.notification_id.as_deref()) else {
        return Ok(());
    };
    if super::writes::lease_holds(tx, n, epoch).await? {
        Ok(())
    } else {
        Err(StoreError::Fenced(format!("notification {n}")))
    }
}

async fn insert_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &RunRow,
) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
    sqlx::query(
        "INSERT INTO action_runs (id, contract, action, flow, host, notification_id, ticket, requested_by, \
         state, record, started_ms, finished_ms, owner, heartbeat_ms, epoch) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
    .bind(&r.owner)
    .bind(r.heartbeat_ms)
    .bind(r.epoch)
    .execute(&mut **tx)
    .await
}

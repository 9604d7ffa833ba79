//! Maintenance action runs: one row per run, with its full audit record.
//!
//! Clustered, a run asked for from a call carries its notification's
//! lease epoch (`RunRow::epoch`): its start (the slot) and its record are
//! written only while that epoch still holds the notification, checked
//! in the write's own transaction with the notification row locked, so
//! a node that lost the lease can neither take the slot nor record a run
//! on work another node now carries out (`StoreError::Fenced`).
//!
//! A run it had started before it lost the lease has still acted on the
//! host: its end is kept for the audit ([`Store::finish_fenced_run`]),
//! `interrupted` with `fenced_ms` set, on its own row only.

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
    /// When the run's end was refused because its epoch no longer held
    /// the notification (another node took it over): the record then is
    /// what this run did on the host, kept for the audit, and `state` is
    /// `interrupted` whatever its result (migration 0021).
    pub fenced_ms: Option<i64>,
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

    /// Keep the audit record of run `r` (its steps, outputs, exit codes
    /// and result) whose end `finish_run` refused as `Fenced`: the host
    /// was acted on and operators must see how. Written on the run's own
    /// row only (the one this owner started under `r.epoch`), never on
    /// the notification: `interrupted` (so its slot is free and it never
    /// counts as a success), `fenced_ms` = `now_ms`. A row already marked
    /// `interrupted` without a record (the new holder found its heartbeat
    /// stale) gets it too. False when there is no such row (the run was
    /// refused before it started: nothing ran, nothing to keep).
    pub async fn finish_fenced_run(&self, r: &RunRow, now_ms: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE action_runs SET state = 'interrupted', record = $1, finished_ms = $2, fenced_ms = $3 \
             WHERE id = $4 AND epoch = $5 AND owner = $6 \
             AND (state = 'running' OR (state = 'interrupted' AND record IS NULL))",
        )
        .bind(r.record.as_ref().map(|v| v.to_string()))
        .bind(r.finished_ms)
        .bind(now_ms)
        .bind(&r.id)
        .bind(r.epoch)
        .bind(&r.owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
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
            fenced_ms: r.try_get("fenced_ms")?,
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

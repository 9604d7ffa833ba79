//! Accepted notifications stored in batches: what concurrent API requests
//! accept while one commit is on its way is stored in the next commit
//! together, so an alert storm costs a commit (an fsync on either
//! database) per batch instead of one per notification. Each caller still
//! answers only after its row is committed.
//!
//! Every statement of a batch is written so that one request's conflict
//! (its contract + ticket already active, its idempotency key taken) is a
//! result for that request, never an error that rolls back the others.

use sqlx::AnyConnection;

use super::writes::insert_notification_or_nothing_in;
use super::{NotificationRow, Store, StoreError};

/// How one accepted notification is stored.
#[derive(Debug, Clone)]
pub enum AcceptInsert {
    /// With a key seen for the first time: the notification and its
    /// idempotency record (`done`) together, or neither.
    FreshKey { key: String, hash: String },
    /// With a key this request already claimed (`in progress`), which
    /// then points at the notification; or without a key.
    Claimed { key: Option<String> },
}

/// One notification of a batch.
#[derive(Debug, Clone)]
pub struct AcceptRow {
    pub row: NotificationRow,
    pub insert: AcceptInsert,
    /// A cluster node and its lease ttl: claimed by the insert itself.
    pub owner: Option<(String, i64)>,
}

async fn accept_in(tx: &mut AnyConnection, a: &AcceptRow) -> Result<bool, StoreError> {
    let owner = a.owner.as_ref().map(|(node, ttl)| (node.as_str(), *ttl));
    if !insert_notification_or_nothing_in(tx, &a.row, owner).await? {
        // Another active notification holds the contract + ticket.
        return Ok(false);
    }
    match &a.insert {
        AcceptInsert::FreshKey { key, hash } => {
            let taken = sqlx::query(
                "INSERT INTO idempotency (key, request_hash, notification_id, state, created_ms) \
                 VALUES ($1, $2, $3, 'done', $4) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(hash)
            .bind(&a.row.id)
            .bind(a.row.created_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if taken != 1 {
                // The key came in meanwhile: this request takes it the
                // long way, and its row must not stay.
                sqlx::query("DELETE FROM notifications WHERE id = $1")
                    .bind(&a.row.id)
                    .execute(&mut *tx)
                    .await?;
                return Ok(false);
            }
        }
        AcceptInsert::Claimed { key: Some(k) } => {
            sqlx::query(
                "UPDATE idempotency SET notification_id = $1, state = 'done' WHERE key = $2",
            )
            .bind(&a.row.id)
            .bind(k)
            .execute(&mut *tx)
            .await?;
        }
        AcceptInsert::Claimed { key: None } => {}
    }
    Ok(true)
}

impl Store {
    /// Store `rows` in one commit; per row, whether it was stored
    /// (`false`: a conflict, nothing of it written). An error means
    /// nothing of the batch was written.
    pub async fn accept_batch(&self, rows: &[AcceptRow]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::with_capacity(rows.len());
        for a in rows {
            stored.push(accept_in(&mut tx, a).await?);
        }
        tx.commit().await?;
        Ok(stored)
    }
}

//! Leases and fencing for several nodes on one PostgreSQL (see
//! `crate::cluster`). Only called when `[cluster]` runs on PostgreSQL:
//! the statements use its clock (`clock_timestamp()`), so lease expiry
//! never depends on the nodes' clocks agreeing, and `FOR UPDATE SKIP
//! LOCKED`, so nodes claiming at once never wait for or take the same row.

use sqlx::Row;

use super::{NotificationRow, Store, StoreError};

/// The database's wall clock in epoch ms.
macro_rules! db_now {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// A renewed lease: id, epoch, and any stop asked for it on the database
/// (a cancel reason, an operator's acknowledgement) by another node.
pub type LeaseRenewal = (
    String,
    i64,
    Option<String>,
    Option<crate::ivr::escalation::OperatorAck>,
);

/// A notification this node just claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub row: NotificationRow,
    /// The fencing token every write of this node checks.
    pub epoch: i64,
    /// The node that held it before (a takeover), if any.
    pub previous: Option<String>,
}

/// Severity rank for claiming: critical work is taken over first.
macro_rules! severity_rank {
    () => {
        "CASE severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1 WHEN 'warning' THEN 2 WHEN 'minor' THEN 3 ELSE 4 END"
    };
}

impl Store {
    /// Free space in each page of `notifications` (PostgreSQL), so that a
    /// lease renewal's new row version fits on the old one's page: a HOT
    /// update, which touches no index (migration 0020 took the lease
    /// column out of every index). Set once, unless an operator set a
    /// fillfactor of their own; pages filled before keep no room until
    /// the table is rewritten (`VACUUM FULL notifications`).
    pub(super) async fn leave_room_for_renewals(&self) -> Result<(), StoreError> {
        let opts: String = sqlx::query(
            "SELECT COALESCE(array_to_string(reloptions, ','), '') AS o FROM pg_class \
             WHERE oid = 'notifications'::regclass",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get("o")?;
        if !opts.contains("fillfactor=") {
            sqlx::query("ALTER TABLE notifications SET (fillfactor = 70)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Record that `node` is alive (and when it started, the first time).
    pub async fn node_heartbeat(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, started_ms, heartbeat_ms) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = $2",
        )
        .bind(node)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claim a notification this node just accepted (never claimed
    /// before). `None` when another node was faster.
    pub async fn claim_new(
        &self,
        id: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE notifications SET owner = $1, epoch = epoch + 1, lease_until_ms = ",
            db_now!(),
            " + $2 WHERE id = $3 AND epoch = 0 RETURNING epoch"
        ))
        .bind(node)
        .bind(ttl_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("epoch")?),
            None => None,
        })
    }

    /// Claim up to `limit` unfinished notifications whose lease has run
    /// out (or that nobody claimed), most severe and oldest first; with
    /// `mine`, also those this node id held before a restart.
    pub async fn claim_expired(
        &self,
        node: &str,
        ttl_ms: i64,
        limit: i64,
        mine: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(concat!(
            "WITH c AS (SELECT id, owner AS prev FROM notifications WHERE state NOT IN ",
            ended!(),
            " AND (lease_until_ms < ",
            db_now!(),
            " OR ($4 AND owner = $1)) ORDER BY ",
            severity_rank!(),
            ", created_ms LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE notifications n SET owner = $1, epoch = n.epoch + 1, lease_until_ms = ",
            db_now!(),
            " + $2 FROM c WHERE n.id = c.id RETURNING n.*, c.prev AS prev_owner"
        ))
        .bind(node)
        .bind(ttl_ms)
        .bind(limit)
        .bind(mine)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    row: Self::notification(r)?,
                    epoch: r.try_get("epoch")?,
                    previous: r.try_get("prev_owner")?,
                })
            })
            .collect()
    }

    /// Extend every unfinished lease `node` owns; returns them with their
    /// epochs and any cancel request (a cancel that reached another node).
    pub async fn renew_leases(
        &self,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Vec<LeaseRenewal>, StoreError> {
        // Rows are locked in id order, as the store writer's group commit
        // locks them (`apply_writes_fenced`): a plain UPDATE locks in scan
        // order and deadlocked against it under load. `NO KEY` so event
        // inserts (a foreign key's share lock) are not held up.
        let rows = sqlx::query(concat!(
            "WITH c AS (SELECT id FROM notifications WHERE owner = $1 AND state NOT IN ",
            ended!(),
            " ORDER BY id FOR NO KEY UPDATE) UPDATE notifications n SET lease_until_ms = ",
            db_now!(),
            " + $2 FROM c WHERE n.id = c.id AND n.owner = $1 AND n.state NOT IN ",
            ended!(),
            " RETURNING n.id, n.epoch, n.cancel_reason, n.ack_request"
        ))
        .bind(node)
        .bind(ttl_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ack: Option<String> = r.try_get("ack_request")?;
                Ok((
                    r.try_get("id")?,
                    r.try_get("epoch")?,
                    r.try_get("cancel_reason")?,
                    ack.and_then(|a| serde_json::from_str(&a).ok()),
                ))
            })
            .collect()
    }

    /// Extend one lease if `epoch` still holds it; `false` when fenced.
    pub async fn confirm_lease(
        &self,
        id: &str,
        epoch: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(concat!(
            "UPDATE notifications SET lease_until_ms = ",
            db_now!(),
            " + $3 WHERE id = $1 AND epoch = $2"
        ))
        .bind(id)
        .bind(epoch)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Hand a lease back at once (the next claim takes it).
    pub async fn release_lease(&self, id: &str, epoch: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE notifications SET owner = NULL, lease_until_ms = 0 WHERE id = $1 AND epoch = $2",
        )
        .bind(id)
        .bind(epoch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Hand back every lease `node` owns (graceful shutdown) and wake the
    /// other nodes.
    pub async fn release_all_leases(&self, node: &str) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE notifications SET owner = NULL, lease_until_ms = 0 WHERE owner = $1",
        )
        .bind(node)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.wake_nodes().await?;
        Ok(n)
    }

    /// `NOTIFY` the other nodes that work is free (they poll anyway).
    pub async fn wake_nodes(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify('callout_leases', '')")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claim a webhook delivery (clustered): move its due time to
    /// `until_ms` if it is still `due_ms` and undelivered. `false` when
    /// another node was first.
    pub async fn claim_delivery(
        &self,
        id: &str,
        due_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET next_try_ms = $1 WHERE id = $2 AND next_try_ms = $3 \
             AND delivered_ms IS NULL AND gave_up = 0",
        )
        .bind(until_ms)
        .bind(id)
        .bind(due_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Per node: leases held by the database's account (for `/metrics`).
    pub async fn leases_by_node(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT owner, COUNT(*) AS n FROM notifications WHERE owner IS NOT NULL AND state NOT IN ",
            ended!(),
            " GROUP BY owner"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("owner")?, r.try_get("n")?)))
            .collect()
    }
}

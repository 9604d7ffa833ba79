//! Trunk channels, their queue and backoff on PostgreSQL, shared by every
//! node (see `crate::channels`; the decisions are `channels::core`'s).
//! One row per trunk (`trunk_state`) is locked `FOR UPDATE` by whoever
//! hands out that trunk's channels, so two nodes never grant the same
//! free channel. Channels and places in the queue carry their
//! notification's lease epoch and count only while that lease lives.

use sqlx::Row;

use super::{Store, StoreError};
use crate::channels::core::{Limits, TrunkState, Waiter};

/// The database's wall clock in epoch ms.
macro_rules! db_now {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// The rows of `table` (`trunk_channels`, `trunk_waits`) whose
/// notification has ended, moved to another epoch or lost its lease.
macro_rules! stale {
    ($table:literal) => {
        concat!(
            "DELETE FROM ",
            $table,
            " t WHERE t.trunk = $1 AND NOT EXISTS (SELECT 1 FROM notifications n \
             WHERE n.id = t.notification_id AND n.epoch = t.epoch AND n.lease_until_ms > ",
            db_now!(),
            " AND n.state NOT IN ",
            ended!(),
            ")"
        )
    };
}

/// A call asking for a channel.
#[derive(Debug, Clone)]
pub struct ChannelAsk<'a> {
    pub trunk: &'a str,
    pub id: &'a str,
    pub node: &'a str,
    pub epoch: i64,
    pub rank: u8,
    pub created_ms: i64,
}

/// What one try found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTry {
    /// The call holds a channel now.
    pub granted: bool,
    /// Try again at this database time even if nothing wakes the caller.
    pub retry_at_ms: Option<i64>,
    /// When the call started waiting (database clock).
    pub since_ms: i64,
    /// The database's clock at the try.
    pub now_ms: i64,
}

/// Channels in use and calls waiting, per trunk, across all nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkCounts {
    pub in_use: i64,
    pub queued: i64,
    pub queued_here: i64,
    pub in_use_here: i64,
    pub backoff_until_ms: i64,
    pub now_ms: i64,
}

fn state_of(r: &sqlx::any::AnyRow) -> Result<TrunkState, StoreError> {
    Ok(TrunkState {
        tokens_milli: r.try_get("tokens_milli")?,
        refilled_ms: r.try_get("refilled_ms")?,
        backoff_until_ms: r.try_get("backoff_until_ms")?,
        failures: r.try_get::<i32, _>("failures")?.max(0) as u32,
    })
}

impl Store {
    /// Lock `trunk`'s row (made on first use) and read its state and the
    /// database's clock.
    async fn lock_trunk(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        trunk: &str,
    ) -> Result<(TrunkState, i64), StoreError> {
        sqlx::query("INSERT INTO trunk_state (trunk) VALUES ($1) ON CONFLICT (trunk) DO NOTHING")
            .bind(trunk)
            .execute(&mut **tx)
            .await?;
        let r = sqlx::query(concat!(
            "SELECT tokens_milli, refilled_ms, backoff_until_ms, failures, ",
            db_now!(),
            " AS now_ms FROM trunk_state WHERE trunk = $1 FOR UPDATE"
        ))
        .bind(trunk)
        .fetch_one(&mut **tx)
        .await?;
        Ok((state_of(&r)?, r.try_get("now_ms")?))
    }

    async fn save_trunk(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        trunk: &str,
        s: &TrunkState,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE trunk_state SET tokens_milli = $2, refilled_ms = $3, backoff_until_ms = $4, \
             failures = $5 WHERE trunk = $1",
        )
        .bind(trunk)
        .bind(s.tokens_milli)
        .bind(s.refilled_ms)
        .bind(s.backoff_until_ms)
        .bind(s.failures.min(i32::MAX as u32) as i32)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Hand out `trunk`'s free channels to the head of its queue (every
    /// node's waiters), with `ask` joining the queue first unless it holds
    /// a channel already. Grants wake the other nodes (`NOTIFY
    /// callout_channels`).
    pub async fn channel_try(
        &self,
        limits: &Limits,
        ask: &ChannelAsk<'_>,
    ) -> Result<ChannelTry, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (mut state, now) = Self::lock_trunk(&mut tx, ask.trunk).await?;
        sqlx::query(stale!("trunk_channels"))
            .bind(ask.trunk)
            .execute(&mut *tx)
            .await?;
        sqlx::query(stale!("trunk_waits"))
            .bind(ask.trunk)
            .execute(&mut *tx)
            .await?;
        let held = sqlx::query(
            "SELECT since_ms FROM trunk_channels WHERE notification_id = $1 AND epoch = $2",
        )
        .bind(ask.id)
        .bind(ask.epoch)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = held {
            let since_ms = r.try_get("since_ms")?;
            tx.commit().await?;
            return Ok(ChannelTry {
                granted: true,
                retry_at_ms: None,
                since_ms,
                now_ms: now,
            });
        }
        // Only a live lease of this epoch may queue: a fenced node's ask
        // would be deleted as stale at the next try anyway.
        sqlx::query(concat!(
            "INSERT INTO trunk_waits (notification_id, trunk, node, epoch, rank, created_ms, since_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM notifications n \
             WHERE n.id = $1 AND n.epoch = $4 AND n.lease_until_ms > ",
            db_now!(),
            ") ON CONFLICT (notification_id) DO UPDATE SET trunk = EXCLUDED.trunk, \
             node = EXCLUDED.node, epoch = EXCLUDED.epoch"
        ))
        .bind(ask.id)
        .bind(ask.trunk)
        .bind(ask.node)
        .bind(ask.epoch)
        .bind(i32::from(ask.rank))
        .bind(ask.created_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let in_use: i64 = sqlx::query("SELECT COUNT(*) AS n FROM trunk_channels WHERE trunk = $1")
            .bind(ask.trunk)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let rows = sqlx::query(
            "SELECT notification_id, rank, created_ms, since_ms FROM trunk_waits WHERE trunk = $1 \
             ORDER BY rank, created_ms, notification_id LIMIT 1000",
        )
        .bind(ask.trunk)
        .fetch_all(&mut *tx)
        .await?;
        let mut waiters = Vec::with_capacity(rows.len());
        let mut since_ms = now;
        for r in &rows {
            let id: String = r.try_get("notification_id")?;
            if id == ask.id {
                since_ms = r.try_get("since_ms")?;
            }
            waiters.push(Waiter {
                rank: r.try_get::<i32, _>("rank")?.clamp(0, 255) as u8,
                created_ms: r.try_get("created_ms")?,
                id,
            });
        }
        let d = state.dispatch(limits, now, in_use.max(0) as usize, &waiters);
        for id in &d.grants {
            sqlx::query(
                "INSERT INTO trunk_channels (notification_id, trunk, node, epoch, since_ms) \
                 SELECT notification_id, trunk, node, epoch, $2 FROM trunk_waits WHERE notification_id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM trunk_waits WHERE notification_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Self::save_trunk(&mut tx, ask.trunk, &state).await?;
        if !d.grants.is_empty() {
            sqlx::query("SELECT pg_notify('callout_channels', $1)")
                .bind(ask.trunk)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ChannelTry {
            granted: d.grants.iter().any(|g| g == ask.id),
            retry_at_ms: d.retry_at_ms,
            since_ms,
            now_ms: now,
        })
    }

    /// Give back `id`'s channel or place in the queue, waking the nodes.
    pub async fn channel_release(&self, trunk: &str, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM trunk_channels WHERE notification_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM trunk_waits WHERE notification_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify('callout_channels', $1)")
            .bind(trunk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A call of `trunk` was refused: back off when the core says so.
    /// Returns the new backoff end (database clock), if any.
    pub async fn channel_refused(
        &self,
        trunk: &str,
        code: u16,
        retry_after_s: Option<u32>,
        reason: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (mut state, now) = Self::lock_trunk(&mut tx, trunk).await?;
        let until = state.refused(now, code, retry_after_s, reason);
        if until.is_some() {
            Self::save_trunk(&mut tx, trunk, &state).await?;
        }
        tx.commit().await?;
        Ok(until)
    }

    /// A call of `trunk` got through: reset the doubling backoff.
    pub async fn channel_got_through(&self, trunk: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE trunk_state SET failures = 0 WHERE trunk = $1 AND failures > 0")
            .bind(trunk)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Live channels and waiters per trunk (those of live leases only),
    /// and `node`'s share.
    pub async fn channel_counts(&self, trunk: &str, node: &str) -> Result<TrunkCounts, StoreError> {
        let count = |table: &'static str| {
            format!(
                "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN t.node = $2 THEN 1 ELSE 0 END), 0) AS here \
                 FROM {table} t JOIN notifications n ON n.id = t.notification_id AND n.epoch = t.epoch \
                 WHERE t.trunk = $1 AND n.lease_until_ms > {} AND n.state NOT IN {}",
                db_now!(),
                ended!()
            )
        };
        let c = sqlx::query(&count("trunk_channels"))
            .bind(trunk)
            .bind(node)
            .fetch_one(&self.pool)
            .await?;
        let w = sqlx::query(&count("trunk_waits"))
            .bind(trunk)
            .bind(node)
            .fetch_one(&self.pool)
            .await?;
        let s = sqlx::query(concat!(
            "SELECT COALESCE(MAX(backoff_until_ms), 0) AS b, ",
            db_now!(),
            " AS now_ms FROM trunk_state WHERE trunk = $1"
        ))
        .bind(trunk)
        .fetch_one(&self.pool)
        .await?;
        Ok(TrunkCounts {
            in_use: c.try_get("n")?,
            in_use_here: c.try_get("here")?,
            queued: w.try_get("n")?,
            queued_here: w.try_get("here")?,
            backoff_until_ms: s.try_get("b")?,
            now_ms: s.try_get("now_ms")?,
        })
    }

    /// The trunk a notification waits for and since when, if it waits.
    pub async fn channel_queued(&self, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        let r = sqlx::query("SELECT trunk, since_ms FROM trunk_waits WHERE notification_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some((r.try_get("trunk")?, r.try_get("since_ms")?)),
            None => None,
        })
    }

    /// Publish this node's keepalive verdicts and read every live one:
    /// (trunk, address, down) of the most recent change per address.
    pub async fn trunk_health_sync(
        &self,
        node: &str,
        mine: &[(String, String, bool)],
        ttl_ms: i64,
    ) -> Result<Vec<(String, String, bool)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        for (trunk, addr, down) in mine {
            sqlx::query(concat!(
                "INSERT INTO trunk_health (trunk, address, node, down, changed_ms, until_ms) \
                 VALUES ($1, $2, $3, $4, ",
                db_now!(),
                ", ",
                db_now!(),
                " + $5) ON CONFLICT (trunk, address, node) DO UPDATE SET \
                 changed_ms = CASE WHEN trunk_health.down = EXCLUDED.down THEN trunk_health.changed_ms \
                 ELSE EXCLUDED.changed_ms END, down = EXCLUDED.down, until_ms = EXCLUDED.until_ms"
            ))
            .bind(trunk)
            .bind(addr)
            .bind(node)
            .bind(i32::from(*down))
            .bind(ttl_ms)
            .execute(&mut *tx)
            .await?;
        }
        let rows = sqlx::query(concat!(
            "SELECT DISTINCT ON (trunk, address) trunk, address, down FROM trunk_health \
             WHERE until_ms > ",
            db_now!(),
            " ORDER BY trunk, address, changed_ms DESC, down DESC"
        ))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("trunk")?,
                    r.try_get("address")?,
                    r.try_get::<i32, _>("down")? != 0,
                ))
            })
            .collect()
    }
}

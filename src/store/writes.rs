//! Fewer commits on the way from a POST to its first INVITE: the store
//! writer's queued writes applied in one transaction (group commit), and a
//! keyed notification stored with its idempotency record in one commit.
//! On SQLite with `synchronous=FULL` each commit is an fsync, and the one
//! connection is shared by every writer, so commits, not statements, set
//! the latency.

use sqlx::AnyConnection;

use super::events::record_event_in;
use super::{NotificationRow, Store, StoreError};

/// One write of the store writer, borrowed from its queue.
#[derive(Debug, Clone, Copy)]
pub enum StoreWrite<'a> {
    /// A runner event (see [`Store::record_event`]).
    Event {
        id: &'a str,
        notification: &'a str,
        event: &'a str,
        payload: &'a serde_json::Value,
        at_ms: i64,
    },
    /// The escalation state (see [`Store::save_progress`]).
    Progress {
        notification: &'a str,
        state: &'a str,
        escalation: &'a str,
        at_ms: i64,
    },
    /// The final state (see [`Store::finish`]).
    Finish {
        notification: &'a str,
        state: &'a str,
        final_state: &'a serde_json::Value,
        at_ms: i64,
    },
}

macro_rules! insert_notification_sql {
    () => {
        "INSERT INTO notifications (id, contract, ticket, severity, host, summary, variables, state, final, \
         escalation, cancel_reason, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, $9, $10)"
    };
}

fn insert_notification_query<'a>(
    sql: &'a str,
    n: &'a NotificationRow,
) -> sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>> {
    sqlx::query(sql)
        .bind(&n.id)
        .bind(&n.contract)
        .bind(&n.ticket)
        .bind(&n.severity)
        .bind(&n.host)
        .bind(&n.summary)
        .bind(n.variables.to_string())
        .bind(&n.state)
        .bind(n.created_ms)
        .bind(n.updated_ms)
}

pub(super) async fn insert_notification_in(
    tx: &mut AnyConnection,
    n: &NotificationRow,
) -> Result<(), StoreError> {
    insert_notification_query(insert_notification_sql!(), n)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Insert a notification unless a unique index refuses it (another
/// active notification for its contract + ticket): `false` then, and the
/// transaction stays usable. With `owner` (a cluster node and its lease
/// ttl), the row is claimed by that node at epoch 1 in the same statement
/// (PostgreSQL's clock for the expiry, as every lease): one round trip per
/// accepted notification instead of an insert and then an update.
pub(super) async fn insert_notification_or_nothing_in(
    tx: &mut AnyConnection,
    n: &NotificationRow,
    owner: Option<(&str, i64)>,
) -> Result<bool, StoreError> {
    let inserted = match owner {
        None => {
            insert_notification_query(
                concat!(insert_notification_sql!(), " ON CONFLICT DO NOTHING"),
                n,
            )
            .execute(&mut *tx)
            .await?
        }
        Some((node, ttl_ms)) => {
            insert_notification_query(
                "INSERT INTO notifications (id, contract, ticket, severity, host, summary, variables, state, final, \
                 escalation, cancel_reason, created_ms, updated_ms, owner, epoch, lease_until_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, $9, $10, $11, 1, \
                 (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + $12) ON CONFLICT DO NOTHING",
                n,
            )
            .bind(node)
            .bind(ttl_ms)
            .execute(&mut *tx)
            .await?
        }
    }
    .rows_affected();
    Ok(inserted == 1)
}

impl StoreWrite<'_> {
    fn notification(&self) -> &str {
        match *self {
            StoreWrite::Event { notification, .. }
            | StoreWrite::Progress { notification, .. }
            | StoreWrite::Finish { notification, .. } => notification,
        }
    }
}

/// Whether lease `epoch` still holds notification `id` (clustered). The
/// no-op update locks the row, so another node's claim orders strictly
/// before or after the rest of this transaction.
pub(super) async fn lease_holds(
    tx: &mut AnyConnection,
    id: &str,
    epoch: i64,
) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "UPDATE notifications SET updated_ms = updated_ms WHERE id = $1 AND epoch = $2",
    )
    .bind(id)
    .bind(epoch)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(held == 1)
}

async fn apply_in(tx: &mut AnyConnection, w: &StoreWrite<'_>) -> Result<(), StoreError> {
    match *w {
        StoreWrite::Event {
            id,
            notification,
            event,
            payload,
            at_ms,
        } => {
            record_event_in(tx, id, notification, event, payload, at_ms).await?;
        }
        StoreWrite::Progress {
            notification,
            state,
            escalation,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE notifications SET state = $1, escalation = $2, updated_ms = $3 WHERE id = $4",
            )
            .bind(state)
            .bind(escalation)
            .bind(at_ms)
            .bind(notification)
            .execute(&mut *tx)
            .await?;
        }
        StoreWrite::Finish {
            notification,
            state,
            final_state,
            at_ms,
        } => {
            // report_folded = 0: see Store::finish.
            sqlx::query(
                "UPDATE notifications SET state = $1, final = $2, updated_ms = $3, \
                 report_folded = 0 WHERE id = $4",
            )
            .bind(state)
            .bind(final_state.to_string())
            .bind(at_ms)
            .bind(notification)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

impl Store {
    /// Apply `writes`, in order, in one transaction: all or none. Each
    /// write is idempotent, so a batch applied twice (a try that timed out
    /// after its commit) changes nothing the second time.
    pub async fn apply_writes(&self, writes: &[StoreWrite<'_>]) -> Result<(), StoreError> {
        let unfenced: Vec<(StoreWrite<'_>, Option<i64>)> =
            writes.iter().map(|w| (*w, None)).collect();
        self.apply_writes_fenced(&unfenced).await.map(|_| ())
    }

    /// As [`Store::apply_writes`], each write made under a lease epoch
    /// when it carries one (clustered, `crate::cluster`): a write whose
    /// epoch no longer holds its notification is skipped, and the rest
    /// commit. Returns, per write, whether it was applied (`false`:
    /// fenced).
    pub async fn apply_writes_fenced(
        &self,
        writes: &[(StoreWrite<'_>, Option<i64>)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The fences are checked first, in notification id order: checking
        // locks the row, and a lease renewal locks the node's rows in the
        // same order, so the two never wait on each other in a cycle (in
        // write order, a group over two notifications and a renewal over
        // both deadlocked under load).
        let mut fences: Vec<(&str, i64)> = writes
            .iter()
            .filter_map(|(w, fence)| fence.map(|e| (w.notification(), e)))
            .collect();
        fences.sort_unstable();
        fences.dedup();
        let mut holding = std::collections::HashSet::with_capacity(fences.len());
        for (id, epoch) in fences {
            if lease_holds(&mut tx, id, epoch).await? {
                holding.insert((id, epoch));
            }
        }
        let mut held = Vec::with_capacity(writes.len());
        for (w, fence) in writes {
            let ok = match fence {
                Some(epoch) => holding.contains(&(w.notification(), *epoch)),
                None => true,
            };
            if ok {
                apply_in(&mut tx, w).await?;
            }
            held.push(ok);
        }
        tx.commit().await?;
        Ok(held)
    }

    /// Insert a notification and its idempotency record (`done`, pointing
    /// at it) in one commit, for a key seen for the first time. `Ok(false)`
    /// and nothing written when the key exists already or the row loses
    /// to another active one (the unique index): the caller then takes the
    /// key the long way ([`Store::claim_key`]), which sorts those cases.
    pub async fn insert_notification_keyed(
        &self,
        n: &NotificationRow,
        key: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The notification first: a racing request for the same active
        // contract + ticket fails here, before it touches the key.
        if insert_notification_in(&mut tx, n).await.is_err() {
            return Ok(false);
        }
        let claimed = sqlx::query(
            "INSERT INTO idempotency (key, request_hash, notification_id, state, created_ms) \
             VALUES ($1, $2, $3, 'done', $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(hash)
        .bind(&n.id)
        .bind(n.created_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            // Dropping the transaction rolls the notification back.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}

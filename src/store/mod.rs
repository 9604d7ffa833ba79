//! The durable store (sqlx): SQLite by default, PostgreSQL when the URL
//! says so. One schema and one set of statements serve both (text ids,
//! epoch-ms integers, JSON as text), through sqlx's `Any` driver.

use std::time::Duration;

use rand::Rng;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod accepts;
mod events;
mod incidents;
mod mail_outbox;
pub mod migrate;
pub use incidents::{AlertRow, IncidentFilter, IncidentRow, MailRow, PipelineWrite, TimelineRow};
pub use mail_outbox::{MailEnd, OutboxMail, QueuedMail};
mod pins;
mod runs;
mod tickets;
mod writes;
pub use accepts::{AcceptInsert, AcceptRow};
pub use pins::{ContactFailures, PinFailure};
pub use runs::RunRow;
pub use tickets::TicketSyncRow;
pub use writes::StoreWrite;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database file: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}: too many concurrent writers, gave up")]
    Contended(&'static str),
    #[error("{0}: the database did not answer in time")]
    Timeout(&'static str),
    /// Another node claimed this work (`crate::cluster::role`): the
    /// write was refused and the work stops here.
    #[error("{0}: another node holds this work now (fenced)")]
    Fenced(String),
}

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotificationRow {
    pub id: String,
    pub contract: String,
    pub ticket: String,
    pub severity: String,
    pub host: String,
    pub summary: String,
    pub variables: serde_json::Value,
    /// `pending`, `running`, `acked`, `action_taken`, `exhausted`, `cancelled`.
    pub state: String,
    pub final_state: Option<serde_json::Value>,
    /// The serialised escalation engine, for resuming after a restart.
    pub escalation: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One call attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRow {
    pub id: String,
    pub notification_id: String,
    pub attempt: i64,
    pub contact: String,
    pub round: i64,
    pub started_ms: i64,
    pub answered_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub outcome: Option<serde_json::Value>,
    pub sip_code: Option<i64>,
    pub digits: String,
}

/// What one attempt's media did (migration 0016): SRTP and the far
/// end's RTCP figures; `None` fields where the call had none.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttemptMedia {
    pub attempt: i64,
    pub srtp: Option<bool>,
    pub srtp_auth_failed: Option<i64>,
    pub rtcp_reports: Option<i64>,
    pub remote_lost: Option<i64>,
    pub remote_fraction_lost_pct: Option<f64>,
    pub remote_jitter_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
}

/// A webhook delivery waiting or done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxRow {
    pub id: String,
    pub notification_id: String,
    pub seq: i64,
    pub event: String,
    pub payload: String,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
    pub tries: i64,
    pub next_try_ms: i64,
    pub last_error: Option<String>,
    pub gave_up: bool,
}

/// Result of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// New key: go ahead and create the notification.
    Claimed,
    /// Same key, same body, already done: the original notification.
    Done(String),
    /// Same key, different body.
    Mismatch,
    /// Same key, the first request is still being processed.
    InProgress,
}

/// States that end a notification.
pub const FINAL_STATES: &[&str] = &[
    "acked",
    "action_requested",
    "action_taken",
    "exhausted",
    "cancelled",
    "failed",
];

/// [`FINAL_STATES`] as an SQL list, for `state NOT IN` (the partial unique
/// index of migration 0006 lists the same).
macro_rules! ended {
    () => {
        "('acked', 'action_requested', 'action_taken', 'exhausted', 'cancelled', 'failed')"
    };
}

// After `ended!`, which it uses.
mod leases;
pub use leases::{Claimed, LeaseRenewal};
mod work_leases;
pub use work_leases::Fence;
mod channels;
pub use channels::{ChannelAsk, ChannelTry, TrunkCounts};

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    sqlite: bool,
}

/// A random id with a readable prefix.
pub fn new_id(prefix: &str) -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{prefix}_{:024x}", n & ((1u128 << 96) - 1))
}

fn json_col(row: &AnyRow, col: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let s: Option<String> = row.try_get(col)?;
    Ok(match s {
        Some(s) => Some(serde_json::from_str(&s)?),
        None => None,
    })
}

/// An exclusive lock on `DB.migrate-lock`, released when dropped (and by
/// the kernel when the process dies).
async fn migration_lock(db: &std::path::Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd;
    let mut name = db.as_os_str().to_owned();
    name.push(".migrate-lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::path::PathBuf::from(name))?;
    tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a descriptor this closure owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f)
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(StoreError::Io)
}

impl Store {
    /// Connect and migrate. `sqlite://path` (created when missing, WAL
    /// mode) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let file = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .filter(|p| !p.contains(":memory:") && !p.is_empty())
            .map(std::path::PathBuf::from);
        let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            // Create the file on first start; make its folder too.
            if let Some(dir) = file.as_deref().and_then(std::path::Path::parent) {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let mut opts = AnyPoolOptions::new().max_connections(if sqlite { 1 } else { 8 });
        if sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // WAL: readers do not block the writer; a commit is
                    // durable once it returns (synchronous=FULL).
                    conn.execute("PRAGMA journal_mode=WAL").await?;
                    conn.execute("PRAGMA synchronous=FULL").await?;
                    conn.execute("PRAGMA foreign_keys=ON").await?;
                    conn.execute("PRAGMA busy_timeout=5000").await?;
                    Ok(())
                })
            });
        }
        let pool = opts
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await?;
        let store = Store { pool, sqlite };
        // sqlx takes an advisory lock for PostgreSQL but none for SQLite:
        // a service and `callout action run` starting together would both
        // apply the same migration. A lock file beside the database
        // serialises them.
        let _guard = match &file {
            Some(f) if sqlite => Some(migration_lock(f).await?),
            _ => None,
        };
        if sqlite {
            let mut conn = store.pool.acquire().await?;
            sqlx::migrate!("./migrations")
                .run_direct(&mut *conn)
                .await?;
        } else {
            migrate::postgres(&store.pool).await?;
        }
        if !sqlite {
            // Only an optimisation: a role that may not alter the table
            // still runs.
            if let Err(e) = store.leave_room_for_renewals().await {
                tracing::warn!(error = %e, "cannot set notifications' fillfactor; lease renewals will touch every index");
            }
        }
        Ok(store)
    }

    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// The pool, for read-only report queries (`crate::reports`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Claim an idempotency key for a request body hash. A key left
    /// `processing` for over a minute (the process died) can be re-claimed.
    pub async fn claim_key(
        &self,
        key: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<KeyClaim, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency (key, request_hash, notification_id, state, created_ms) \
             VALUES ($1, $2, NULL, 'processing', $3) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(KeyClaim::Claimed);
        }
        let row = sqlx::query("SELECT request_hash, notification_id, state, created_ms FROM idempotency WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        let (h, nid, state, created): (String, Option<String>, String, i64) = (
            row.try_get("request_hash")?,
            row.try_get("notification_id")?,
            row.try_get("state")?,
            row.try_get("created_ms")?,
        );
        if h != hash {
            return Ok(KeyClaim::Mismatch);
        }
        match (state.as_str(), nid) {
            ("done", Some(id)) => Ok(KeyClaim::Done(id)),
            _ if now_ms - created > 60_000 => {
                sqlx::query("UPDATE idempotency SET created_ms = $1 WHERE key = $2")
                    .bind(now_ms)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                Ok(KeyClaim::Claimed)
            }
            _ => Ok(KeyClaim::InProgress),
        }
    }

    /// Release a claimed key whose request failed validation.
    pub async fn release_key(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency WHERE key = $1 AND state = 'processing'")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Insert a notification (and finish its idempotency key) in one
    /// transaction: once this returns, it survives a crash.
    pub async fn insert_notification(
        &self,
        n: &NotificationRow,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        writes::insert_notification_in(&mut tx, n).await?;
        if let Some(k) = key {
            sqlx::query(
                "UPDATE idempotency SET notification_id = $1, state = 'done' WHERE key = $2",
            )
            .bind(&n.id)
            .bind(k)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn notification(row: &AnyRow) -> Result<NotificationRow, StoreError> {
        Ok(NotificationRow {
            id: row.try_get("id")?,
            contract: row.try_get("contract")?,
            ticket: row.try_get("ticket")?,
            severity: row.try_get("severity")?,
            host: row.try_get("host")?,
            summary: row.try_get("summary")?,
            variables: json_col(row, "variables")?.unwrap_or_default(),
            state: row.try_get("state")?,
            final_state: json_col(row, "final")?,
            escalation: row.try_get("escalation")?,
            cancel_reason: row.try_get("cancel_reason")?,
            created_ms: row.try_get("created_ms")?,
            updated_ms: row.try_get("updated_ms")?,
        })
    }

    pub async fn get_notification(&self, id: &str) -> Result<Option<NotificationRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::notification).transpose()
    }

    /// The unfinished notification for contract + ticket, if any.
    pub async fn find_active(
        &self,
        contract: &str,
        ticket: &str,
    ) -> Result<Option<NotificationRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT * FROM notifications WHERE contract = $1 AND ticket = $2 AND state NOT IN ",
            ended!(),
            " ORDER BY created_ms LIMIT 1"
        ))
        .bind(contract)
        .bind(ticket)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::notification).transpose()
    }

    /// Notifications newest first, filtered, `limit` at most, before the
    /// `(created_ms, id)` cursor when given.
    pub async fn list_notifications(
        &self,
        contract: Option<&str>,
        state: Option<&str>,
        since_ms: Option<i64>,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let (bc, bid) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE ($1 = '' OR contract = $1) AND ($2 = '' OR state = $2) \
             AND created_ms >= $3 AND (created_ms < $4 OR (created_ms = $4 AND id < $5)) \
             ORDER BY created_ms DESC, id DESC LIMIT $6",
        )
        .bind(contract.unwrap_or(""))
        .bind(state.unwrap_or(""))
        .bind(since_ms.unwrap_or(0))
        .bind(bc)
        .bind(if bid.is_empty() { "\u{10FFFF}".to_string() } else { bid })
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::notification).collect()
    }

    /// Notifications that were accepted but not finished (for resuming).
    pub async fn unfinished(&self) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT * FROM notifications WHERE state NOT IN ",
            ended!(),
            " ORDER BY created_ms"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::notification).collect()
    }

    /// Save the escalation engine's state (and the notification state).
    pub async fn save_progress(
        &self,
        id: &str,
        state: &str,
        escalation: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notifications SET state = $1, escalation = $2, updated_ms = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(escalation)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish(
        &self,
        id: &str,
        state: &str,
        final_json: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // report_folded = 0: if it had ended before, its report facts
        // are worked out again (migration 0017).
        sqlx::query(
            "UPDATE notifications SET state = $1, final = $2, updated_ms = $3, report_folded = 0 \
             WHERE id = $4",
        )
        .bind(state)
        .bind(final_json.to_string())
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// End a notification that has not ended yet; `false` when it had.
    pub async fn finish_active(
        &self,
        id: &str,
        state: &str,
        final_json: &serde_json::Value,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(concat!(
            "UPDATE notifications SET state = $1, final = $2, updated_ms = $3 WHERE id = $4 AND state NOT IN ",
            ended!()
        ))
        .bind(state)
        .bind(final_json.to_string())
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// As [`Store::finish_active`], and with `epoch` (clustered) only
    /// while that lease epoch still holds the notification (fencing).
    pub async fn finish_active_fenced(
        &self,
        id: &str,
        state: &str,
        final_json: &serde_json::Value,
        now_ms: i64,
        epoch: Option<i64>,
    ) -> Result<bool, StoreError> {
        let Some(epoch) = epoch else {
            return self.finish_active(id, state, final_json, now_ms).await;
        };
        let n = sqlx::query(concat!(
            "UPDATE notifications SET state = $1, final = $2, updated_ms = $3 WHERE id = $4 \
             AND epoch = $5 AND state NOT IN ",
            ended!()
        ))
        .bind(state)
        .bind(final_json.to_string())
        .bind(now_ms)
        .bind(id)
        .bind(epoch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Record an operator's acknowledgement for someone on the phone;
    /// `false` when the notification had ended or a stop (cancel or
    /// acknowledgement) was already asked for.
    pub async fn request_ack(
        &self,
        id: &str,
        ack: &crate::ivr::escalation::OperatorAck,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        // With its own time: the reports count an operator's
        // acknowledgement from when it was recorded, not from when the
        // escalation (maybe hanging up a call first) got to it.
        let mut v = serde_json::to_value(ack).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("at_ms".into(), now_ms.into());
        }
        let json = v.to_string();
        let n = sqlx::query(concat!(
            "UPDATE notifications SET ack_request = $1, updated_ms = $2 WHERE id = $3 \
             AND cancel_reason IS NULL AND ack_request IS NULL AND state NOT IN ",
            ended!()
        ))
        .bind(json)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The acknowledgement an operator asked for, if any.
    pub async fn ack_request(
        &self,
        id: &str,
    ) -> Result<Option<crate::ivr::escalation::OperatorAck>, StoreError> {
        let row = sqlx::query("SELECT ack_request FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let s: Option<String> = r.try_get("ack_request")?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Record a cancel request; `false` when the notification had ended
    /// (or an operator's acknowledgement is already ending it).
    pub async fn request_cancel(
        &self,
        id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(concat!(
            "UPDATE notifications SET cancel_reason = $1, updated_ms = $2 WHERE id = $3 \
             AND ack_request IS NULL AND state NOT IN ",
            ended!()
        ))
        .bind(reason)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn start_attempt(&self, a: &AttemptRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (id, notification_id, attempt, contact, round, started_ms, answered_ms, ended_ms, \
             outcome, sip_code, digits) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, NULL, NULL, '') \
             ON CONFLICT (notification_id, attempt) DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.notification_id)
        .bind(a.attempt)
        .bind(&a.contact)
        .bind(a.round)
        .bind(a.started_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn answer_attempt(
        &self,
        notification_id: &str,
        attempt: i64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attempts SET answered_ms = $1 WHERE notification_id = $2 AND attempt = $3",
        )
        .bind(at_ms)
        .bind(notification_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn add_digit(
        &self,
        notification_id: &str,
        attempt: i64,
        digit: char,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attempts SET digits = digits || $1 WHERE notification_id = $2 AND attempt = $3",
        )
        .bind(digit.to_string())
        .bind(notification_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn end_attempt(
        &self,
        notification_id: &str,
        attempt: i64,
        outcome: &serde_json::Value,
        sip_code: Option<i64>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attempts SET ended_ms = $1, outcome = $2, sip_code = $3 WHERE notification_id = $4 AND attempt = $5 \
             AND ended_ms IS NULL",
        )
        .bind(at_ms)
        .bind(outcome.to_string())
        .bind(sip_code)
        .bind(notification_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn attempts(&self, notification_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM attempts WHERE notification_id = $1 ORDER BY attempt")
                .bind(notification_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    id: r.try_get("id")?,
                    notification_id: r.try_get("notification_id")?,
                    attempt: r.try_get("attempt")?,
                    contact: r.try_get("contact")?,
                    round: r.try_get("round")?,
                    started_ms: r.try_get("started_ms")?,
                    answered_ms: r.try_get("answered_ms")?,
                    ended_ms: r.try_get("ended_ms")?,
                    outcome: json_col(r, "outcome")?,
                    sip_code: r.try_get("sip_code")?,
                    digits: r.try_get("digits")?,
                })
            })
            .collect()
    }

    /// The media figures of a notification's attempts that had media.
    pub async fn attempt_media(
        &self,
        notification_id: &str,
    ) -> Result<Vec<AttemptMedia>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt, srtp, srtp_auth_failed, rtcp_reports, remote_lost, remote_fraction_lost_pct, \
             remote_jitter_ms, rtt_ms FROM attempts WHERE notification_id = $1 AND srtp IS NOT NULL \
             ORDER BY attempt",
        )
        .bind(notification_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptMedia {
                    attempt: r.try_get("attempt")?,
                    srtp: r.try_get::<Option<i64>, _>("srtp")?.map(|v| v != 0),
                    srtp_auth_failed: r.try_get("srtp_auth_failed")?,
                    rtcp_reports: r.try_get("rtcp_reports")?,
                    remote_lost: r.try_get("remote_lost")?,
                    remote_fraction_lost_pct: r.try_get("remote_fraction_lost_pct")?,
                    remote_jitter_ms: r.try_get("remote_jitter_ms")?,
                    rtt_ms: r.try_get("rtt_ms")?,
                })
            })
            .collect()
    }

    pub async fn attempt_by_id(&self, id: &str) -> Result<Option<AttemptRow>, StoreError> {
        let row = sqlx::query("SELECT notification_id FROM attempts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let nid: String = row.try_get("notification_id")?;
        Ok(self.attempts(&nid).await?.into_iter().find(|a| a.id == id))
    }

    /// Queue a webhook event for a notification, in order.
    pub async fn enqueue(
        &self,
        notification_id: &str,
        event: &str,
        payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM outbox WHERE notification_id = $1")
                .bind(notification_id)
                .fetch_one(&mut *tx)
                .await?;
        let seq: i64 = row.try_get::<i64, _>("m")? + 1;
        sqlx::query(
            "INSERT INTO outbox (id, notification_id, seq, event, payload, created_ms, delivered_ms, tries, next_try_ms, \
             last_error, gave_up) VALUES ($1, $2, $3, $4, $5, $6, NULL, 0, $7, NULL, 0)",
        )
        .bind(new_id("evt"))
        .bind(notification_id)
        .bind(seq)
        .bind(event)
        .bind(payload.to_string())
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    fn outbox_row(r: &AnyRow) -> Result<OutboxRow, StoreError> {
        Ok(OutboxRow {
            id: r.try_get("id")?,
            notification_id: r.try_get("notification_id")?,
            seq: r.try_get("seq")?,
            event: r.try_get("event")?,
            payload: r.try_get("payload")?,
            created_ms: r.try_get("created_ms")?,
            delivered_ms: r.try_get("delivered_ms")?,
            tries: r.try_get("tries")?,
            next_try_ms: r.try_get("next_try_ms")?,
            last_error: r.try_get("last_error")?,
            gave_up: r.try_get::<i64, _>("gave_up")? != 0,
        })
    }

    /// Deliveries due now: per notification only the oldest undelivered
    /// one, so order is kept.
    pub async fn due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.* FROM outbox o WHERE o.delivered_ms IS NULL AND o.gave_up = 0 AND o.next_try_ms <= $1 \
             AND o.seq = (SELECT MIN(p.seq) FROM outbox p WHERE p.notification_id = o.notification_id \
                          AND p.delivered_ms IS NULL AND p.gave_up = 0) \
             ORDER BY o.next_try_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::outbox_row).collect()
    }

    /// When the next delivery is due, if any.
    pub async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_try_ms) AS m FROM outbox WHERE delivered_ms IS NULL AND gave_up = 0",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("m")?)
    }

    /// Mark every pending event delivered (nowhere): for a process with
    /// no webhook target at all. One statement, where marking each event
    /// on its own was a commit (an fsync on SQLite) per event, ~800 a
    /// second at 100 notifications/s, on the store's one connection.
    pub async fn delivered_nowhere(&self, now_ms: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE outbox SET delivered_ms = $1, tries = tries + 1 \
             WHERE delivered_ms IS NULL AND gave_up = 0",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn delivered(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET delivered_ms = $1, tries = tries + 1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn failed(
        &self,
        id: &str,
        next_try_ms: i64,
        error: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET tries = tries + 1, next_try_ms = $1, last_error = $2, gave_up = $3 WHERE id = $4")
            .bind(next_try_ms)
            .bind(error)
            .bind(give_up as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn outbox(&self, notification_id: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE notification_id = $1 ORDER BY seq")
            .bind(notification_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::outbox_row).collect()
    }

    /// Deliveries that were given up, across all notifications.
    pub async fn failed_deliveries(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE gave_up = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

//! The mail outbox: customer notices queued with the incident step that
//! caused them ([`super::PipelineWrite::mails`]), taken by the sending
//! task when due, and finished (sent or given up) in one transaction with
//! the timeline line that tells it.

use sqlx::Row;

use super::{Store, StoreError, TimelineRow};
use crate::pipeline::notice_mail::Notice;

/// A notice to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMail {
    pub id: String,
    pub contract: String,
    pub notice: Notice,
}

/// A queued notice, as the sending task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMail {
    pub id: String,
    pub contract: String,
    pub notice: Notice,
    pub attempts: i64,
    pub created_ms: i64,
}

/// How a mail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailEnd {
    Sent,
    GivenUp,
}

pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    m: &OutboxMail,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO mail_outbox (id, incident_id, contract, event, notice, state, attempts, created_ms, next_ms) \
         VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&m.id)
    .bind(&m.notice.incident)
    .bind(&m.contract)
    .bind(m.notice.event.as_str())
    .bind(serde_json::to_string(&m.notice)?)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Queued mails due by `now_ms`, oldest first. A mail waits while an
    /// older one of its incident is still queued, so an incident's mails
    /// go out (and thread) in the order they were queued even when the
    /// first one's retries have pushed it later.
    pub async fn due_mails(&self, now_ms: i64, limit: i64) -> Result<Vec<QueuedMail>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contract, notice, attempts, created_ms FROM mail_outbox m \
             WHERE state = 'queued' AND next_ms <= $1 AND NOT EXISTS (SELECT 1 FROM mail_outbox e \
             WHERE e.incident_id = m.incident_id AND e.state = 'queued' \
             AND (e.created_ms < m.created_ms OR (e.created_ms = m.created_ms AND e.id < m.id))) \
             ORDER BY created_ms, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let notice: String = r.try_get("notice")?;
                Ok(QueuedMail {
                    id: r.try_get("id")?,
                    contract: r.try_get("contract")?,
                    notice: serde_json::from_str(&notice)?,
                    attempts: r.try_get("attempts")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect()
    }

    /// When the next queued mail is due (of those not waiting for an
    /// older one of their incident).
    pub async fn next_mail_due(&self) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query(
            "SELECT MIN(next_ms) AS n FROM mail_outbox m WHERE state = 'queued' AND NOT EXISTS \
             (SELECT 1 FROM mail_outbox e WHERE e.incident_id = m.incident_id AND e.state = 'queued' \
             AND (e.created_ms < m.created_ms OR (e.created_ms = m.created_ms AND e.id < m.id)))",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get::<Option<i64>, _>("n")?)
    }

    /// The Message-IDs of an incident's mails sent so far, oldest first
    /// (what a new mail replies to).
    pub async fn sent_message_ids(&self, incident: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT message_id FROM mail_outbox WHERE incident_id = $1 AND state = 'sent' \
             AND message_id IS NOT NULL ORDER BY done_ms, id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("message_id")?))
            .collect()
    }

    /// Try again at `next_ms`.
    pub async fn mail_retry(
        &self,
        id: &str,
        attempts: i64,
        next_ms: i64,
        error: &str,
        fence: Option<&super::Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        super::work_leases::check(&mut tx, fence).await?;
        sqlx::query(
            "UPDATE mail_outbox SET attempts = $1, next_ms = $2, last_error = $3 \
             WHERE id = $4 AND state = 'queued'",
        )
        .bind(attempts)
        .bind(next_ms)
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sent or given up, with its timeline line, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn mail_finish(
        &self,
        id: &str,
        incident: &str,
        end: MailEnd,
        attempts: i64,
        message_id: Option<&str>,
        error: Option<&str>,
        line: &TimelineRow,
        fence: Option<&super::Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        super::work_leases::check(&mut tx, fence).await?;
        sqlx::query(
            "UPDATE mail_outbox SET state = $1, attempts = $2, done_ms = $3, message_id = $4, \
             last_error = $5 WHERE id = $6",
        )
        .bind(match end {
            MailEnd::Sent => "sent",
            MailEnd::GivenUp => "failed",
        })
        .bind(attempts)
        .bind(line.at_ms)
        .bind(message_id)
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO incident_timeline (id, incident_id, seq, at_ms, kind, text, alert_id, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&line.id)
        .bind(incident)
        .bind(line.seq)
        .bind(line.at_ms)
        .bind(&line.kind)
        .bind(&line.text)
        .bind(&line.alert)
        .bind(line.data.as_ref().map(|d| d.to_string()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

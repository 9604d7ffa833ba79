//! A runner event as one idempotent transaction: the attempt row it
//! changes and its webhook outbox entry, keyed by the event's id. The
//! store writer may apply the same event twice (a try that timed out after
//! committing, or a journal replayed after a crash); the second time
//! changes nothing.

use sqlx::AnyConnection;

use super::{new_id, Store, StoreError};

impl Store {
    /// Record event `id` (`event` with its JSON `payload`, as the runner
    /// reports it, at `at_ms`) for a notification. `Ok(false)` when it was
    /// already recorded.
    pub async fn record_event(
        &self,
        id: &str,
        notification_id: &str,
        event: &str,
        payload: &serde_json::Value,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let new = record_event_in(&mut tx, id, notification_id, event, payload, at_ms).await?;
        if new {
            tx.commit().await?;
        }
        Ok(new)
    }
}

/// [`Store::record_event`] inside the caller's transaction (the store
/// writer's group commit puts many events in one).
pub(super) async fn record_event_in(
    tx: &mut AnyConnection,
    id: &str,
    notification_id: &str,
    event: &str,
    payload: &serde_json::Value,
    at_ms: i64,
) -> Result<bool, StoreError> {
    // The outbox entry first, in one statement with its sequence number:
    // when the event's id is there already, it was recorded, and nothing
    // else is written (one round trip where a lookup, the next sequence
    // number and the insert were three).
    let new = sqlx::query(
        "INSERT INTO outbox (id, notification_id, seq, event, payload, created_ms, delivered_ms, tries, next_try_ms, \
         last_error, gave_up) SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, NULL, 0, $6, NULL, 0 \
         FROM outbox WHERE notification_id = $2 ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(notification_id)
    .bind(event)
    .bind(payload.to_string())
    .bind(at_ms)
    // Due from `at_ms`: an event written late is due at once.
    .bind(at_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if new != 1 {
        return Ok(false);
    }
    let attempt = payload["attempt"].as_i64().unwrap_or(0);
    match event {
        "call.dialing" => {
            sqlx::query(
                    "INSERT INTO attempts (id, notification_id, attempt, contact, round, started_ms, answered_ms, \
                     ended_ms, outcome, sip_code, digits) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, NULL, NULL, '') \
                     ON CONFLICT (notification_id, attempt) DO NOTHING",
                )
                .bind(new_id("call"))
                .bind(notification_id)
                .bind(attempt)
                .bind(payload["contact"].as_str().unwrap_or(""))
                .bind(payload["round"].as_i64().unwrap_or(0))
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
        }
        "call.answered" => {
            sqlx::query(
                "UPDATE attempts SET answered_ms = $1 WHERE notification_id = $2 AND attempt = $3",
            )
            .bind(at_ms)
            .bind(notification_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
        }
        "digit" => {
            let d: String = payload["digit"]
                .as_str()
                .and_then(|s| s.chars().next())
                .unwrap_or('?')
                .to_string();
            sqlx::query(
                    "UPDATE attempts SET digits = digits || $1 WHERE notification_id = $2 AND attempt = $3",
                )
                .bind(d)
                .bind(notification_id)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
        }
        "call.ended" => {
            // An attempt whose `call.dialing` never landed (its node was
            // fenced off) is added by the node that resumed it, which
            // names the contact.
            if let Some(contact) = payload["contact"].as_str() {
                sqlx::query(
                    "INSERT INTO attempts (id, notification_id, attempt, contact, round, started_ms, answered_ms, \
                     ended_ms, outcome, sip_code, digits) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, NULL, NULL, '') \
                     ON CONFLICT (notification_id, attempt) DO NOTHING",
                )
                .bind(new_id("call"))
                .bind(notification_id)
                .bind(attempt)
                .bind(contact)
                .bind(payload["round"].as_i64().unwrap_or(0))
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                    "UPDATE attempts SET ended_ms = $1, outcome = $2, sip_code = $3 WHERE notification_id = $4 \
                     AND attempt = $5 AND ended_ms IS NULL",
                )
                .bind(at_ms)
                .bind(payload["outcome"].to_string())
                .bind(payload["outcome"]["code"].as_i64())
                .bind(notification_id)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
            let m = &payload["media"];
            if m.is_object() {
                let r = &m["rtcp"];
                let has_reports = r["reports"].as_i64().unwrap_or(0) > 0;
                sqlx::query(
                    "UPDATE attempts SET srtp = $1, srtp_auth_failed = $2, rtcp_reports = $3, remote_lost = $4, \
                     remote_fraction_lost_pct = $5, remote_jitter_ms = $6, rtt_ms = $7 \
                     WHERE notification_id = $8 AND attempt = $9",
                )
                .bind(i64::from(m["srtp"].as_bool().unwrap_or(false)))
                .bind(m["srtp_auth_failed"].as_i64())
                .bind(r["reports"].as_i64())
                .bind(r["remote_cumulative_lost"].as_i64().filter(|_| has_reports))
                .bind(r["remote_fraction_lost_pct"].as_f64().filter(|_| has_reports))
                .bind(r["remote_jitter_ms"].as_f64().filter(|_| has_reports))
                .bind(r["rtt_ms"].as_f64())
                .bind(notification_id)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
            }
        }
        _ => {}
    }
    Ok(true)
}

//! The alert pipeline's tables: accepted alerts, incidents with their
//! ticket numbers and timelines, silences, heartbeats and alert mails.
//! What one engine step decided is written in one transaction
//! ([`Store::apply_pipeline`]).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};
use crate::pipeline::alert::Alert;
use crate::pipeline::engine::{Disposition, HeartbeatState, Incident, Silence};

/// An incident as stored, with its ticket number.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    pub incident: Incident,
    pub ticket: Option<String>,
    pub updated_ms: i64,
}

/// One line of an incident's story.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimelineRow {
    pub id: String,
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub text: String,
    pub alert: Option<String>,
    pub data: Option<serde_json::Value>,
}

/// An alert as stored, with its fate once the engine decided.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub alert: Alert,
    pub incident: Option<String>,
    pub disposition: Option<serde_json::Value>,
}

/// A raw alert mail as accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct MailRow {
    pub id: String,
    pub contract: String,
    pub from: String,
    pub rcpt: String,
    pub subject: String,
    pub raw: Vec<u8>,
    pub received_ms: i64,
    pub alert_id: Option<String>,
    /// Why no rule could read it (an unparsed mail).
    pub reason: Option<String>,
}

/// Everything one engine step wants written.
#[derive(Debug, Default)]
pub struct PipelineWrite {
    pub incidents: Vec<Incident>,
    /// Incidents opened in this step, with their ticket prefix: a number
    /// is taken for each in the same transaction.
    pub new_tickets: Vec<(String, String)>,
    pub dispositions: Vec<(String, Disposition)>,
    pub timeline: Vec<(String, TimelineRow)>,
    pub heartbeats: Option<Vec<HeartbeatState>>,
    /// The timeline position of each new ticket's `ticket … opened` line
    /// (by incident), written in the same transaction as the number.
    pub ticket_lines: std::collections::HashMap<String, i64>,
    /// Customer notices this step causes (the mail outbox).
    pub mails: Vec<super::OutboxMail>,
    pub now_ms: i64,
    /// Clustered: the pipeline lease this step is written under; the step
    /// is refused (`StoreError::Fenced`) once another node claimed it.
    pub fence: Option<super::Fence>,
    /// Rows of `pipeline_inbox` this step handled (deleted with it).
    pub inbox_done: Vec<String>,
}

/// Filters of `GET /v1/incidents`.
#[derive(Debug, Default, Clone)]
pub struct IncidentFilter {
    pub contract: Option<String>,
    pub host: Option<String>,
    pub state: Option<String>,
    pub since_ms: Option<i64>,
    /// Only these contracts (a customer's token); `None`: all.
    pub contracts: Option<Vec<String>>,
    /// Page: ids before this one (newest first).
    pub before: Option<String>,
    pub limit: i64,
}

use base64::Engine as _;

fn incident_of(row: &AnyRow) -> Result<IncidentRow, StoreError> {
    let body: String = row.try_get("body")?;
    Ok(IncidentRow {
        incident: serde_json::from_str(&body)?,
        ticket: row.try_get("ticket")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn disposition_incident(d: &Disposition) -> Option<&str> {
    match d {
        Disposition::Incident { incident } | Disposition::Suppressed { incident } => Some(incident),
        _ => None,
    }
}

/// One alert row (a replayed id is left as it is).
async fn insert_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &Alert,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO alerts (id, contract, source, status, host, name, severity, body, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&a.id)
    .bind(&a.contract)
    .bind(a.source.as_str())
    .bind(match a.status {
        crate::pipeline::alert::Status::Firing => "firing",
        crate::pipeline::alert::Status::Resolved => "resolved",
    })
    .bind(&a.host)
    .bind(&a.name)
    .bind(a.severity.as_str())
    .bind(serde_json::to_string(a)?)
    .bind(a.received_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Accept alerts: once this returns they survive a crash.
    pub async fn insert_alerts(&self, alerts: &[Alert]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for a in alerts {
            insert_alert(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Accept an alert mail (and the alert read from it, if any) in one
    /// transaction, before the SMTP 250.
    pub async fn insert_mail(&self, m: &MailRow, alert: Option<&Alert>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO mails (id, contract, mail_from, rcpt, subject, raw, received_ms, alert_id, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&m.id)
        .bind(&m.contract)
        .bind(&m.from)
        .bind(&m.rcpt)
        .bind(&m.subject)
        .bind(base64::engine::general_purpose::STANDARD.encode(&m.raw))
        .bind(m.received_ms)
        .bind(&m.alert_id)
        .bind(&m.reason)
        .execute(&mut *tx)
        .await?;
        if let Some(a) = alert {
            insert_alert(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Mails of a contract, newest first (`unparsed_only`: those no rule
    /// could read).
    pub async fn list_mails(
        &self,
        contract: Option<&str>,
        unparsed_only: bool,
        limit: i64,
    ) -> Result<Vec<MailRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contract, mail_from, rcpt, subject, raw, received_ms, alert_id, reason FROM mails \
             WHERE ($1 = '' OR contract = $1) AND ($2 = 0 OR reason IS NOT NULL) ORDER BY received_ms DESC, id DESC LIMIT $3",
        )
        .bind(contract.unwrap_or(""))
        .bind(i64::from(unparsed_only))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.try_get("raw")?;
                Ok(MailRow {
                    id: r.try_get("id")?,
                    contract: r.try_get("contract")?,
                    from: r.try_get("mail_from")?,
                    rcpt: r.try_get("rcpt")?,
                    subject: r.try_get("subject")?,
                    raw: base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .unwrap_or_default(),
                    received_ms: r.try_get("received_ms")?,
                    alert_id: r.try_get("alert_id")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Alerts the engine has not handled yet, oldest first.
    pub async fn unhandled_alerts(&self, limit: i64) -> Result<Vec<Alert>, StoreError> {
        let rows =
            sqlx::query("SELECT body FROM alerts WHERE handled_ms IS NULL ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let b: String = r.try_get("body")?;
                Ok(serde_json::from_str(&b)?)
            })
            .collect()
    }

    /// Write one engine step. Returns the ticket numbers taken.
    pub async fn apply_pipeline(
        &self,
        w: &PipelineWrite,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // First, so the lease row stays locked until the commit.
        super::work_leases::check(&mut tx, w.fence.as_ref()).await?;
        for id in &w.inbox_done {
            sqlx::query("DELETE FROM pipeline_inbox WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let mut tickets = Vec::new();
        for (incident, prefix) in &w.new_tickets {
            tickets.push((incident.clone(), next_ticket(&mut tx, prefix).await?));
        }
        for inc in &w.incidents {
            let ticket = tickets
                .iter()
                .find(|(i, _)| i == &inc.id)
                .map(|(_, t)| t.clone());
            sqlx::query(
                "INSERT INTO incidents (id, contract, notify_contract, host, state, ticket, opened_ms, updated_ms, closed_ms, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET state = $5, ticket = COALESCE($6, incidents.ticket), updated_ms = $8, \
                 closed_ms = $9, body = $10, notify_contract = $3",
            )
            .bind(&inc.id)
            .bind(&inc.contract)
            .bind(&inc.notify_contract)
            .bind(&inc.host)
            .bind(inc.state.as_str())
            .bind(ticket)
            .bind(inc.opened_ms)
            .bind(w.now_ms)
            .bind(inc.closed_ms)
            .bind(serde_json::to_string(inc)?)
            .execute(&mut *tx)
            .await?;
        }
        for (alert, d) in &w.dispositions {
            sqlx::query(
                "UPDATE alerts SET disposition = $1, incident_id = $2, handled_ms = $3 WHERE id = $4",
            )
            .bind(serde_json::to_string(d)?)
            .bind(disposition_incident(d))
            .bind(w.now_ms)
            .bind(alert)
            .execute(&mut *tx)
            .await?;
        }
        for (incident, t) in &w.timeline {
            sqlx::query(
                "INSERT INTO incident_timeline (id, incident_id, seq, at_ms, kind, text, alert_id, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&t.id)
            .bind(incident)
            .bind(t.seq)
            .bind(t.at_ms)
            .bind(&t.kind)
            .bind(&t.text)
            .bind(&t.alert)
            .bind(t.data.as_ref().map(|d| d.to_string()))
            .execute(&mut *tx)
            .await?;
        }
        for (incident, ticket) in &tickets {
            let Some(seq) = w.ticket_lines.get(incident) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO incident_timeline (id, incident_id, seq, at_ms, kind, text, alert_id, data) \
                 VALUES ($1, $2, $3, $4, 'ticket', $5, NULL, NULL)",
            )
            .bind(super::new_id("tl"))
            .bind(incident)
            .bind(seq)
            .bind(w.now_ms)
            .bind(format!("ticket {ticket} opened"))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(hs) = &w.heartbeats {
            for h in hs {
                sqlx::query(
                    "INSERT INTO heartbeats (contract, name, body) VALUES ($1, $2, $3) \
                     ON CONFLICT (contract, name) DO UPDATE SET body = $3",
                )
                .bind(&h.contract)
                .bind(&h.name)
                .bind(serde_json::to_string(h)?)
                .execute(&mut *tx)
                .await?;
            }
        }
        for m in &w.mails {
            super::mail_outbox::insert(&mut tx, m, w.now_ms).await?;
        }
        tx.commit().await?;
        Ok(tickets)
    }

    /// Add a line to a timeline unless one with this id is there (a
    /// webhook delivered twice). True when added.
    pub async fn add_timeline(&self, incident: &str, t: &TimelineRow) -> Result<bool, StoreError> {
        self.add_timeline_fenced(incident, t, None).await
    }

    /// As [`Store::add_timeline`], refused (`StoreError::Fenced`) when
    /// `fence` no longer holds its lease (the ticket sync's own lines).
    pub async fn add_timeline_fenced(
        &self,
        incident: &str,
        t: &TimelineRow,
        fence: Option<&super::Fence>,
    ) -> Result<bool, StoreError> {
        let data = t.data.as_ref().map(|d| d.to_string());
        let q = sqlx::query(
            "INSERT INTO incident_timeline (id, incident_id, seq, at_ms, kind, text, alert_id, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(incident)
        .bind(t.seq)
        .bind(t.at_ms)
        .bind(&t.kind)
        .bind(&t.text)
        .bind(&t.alert)
        .bind(data);
        let n = match fence {
            // Unfenced lines (webhooks, operators) need no transaction.
            None => q.execute(&self.pool).await?.rows_affected(),
            Some(_) => {
                let mut tx = self.pool.begin().await?;
                super::work_leases::check(&mut tx, fence).await?;
                let n = q.execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                n
            }
        };
        Ok(n == 1)
    }

    pub async fn max_timeline_seq(&self) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT MAX(seq) AS m FROM incident_timeline")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get::<Option<i64>, _>("m")?.unwrap_or(0))
    }

    /// Incidents not closed, for a restart.
    pub async fn open_incidents(&self) -> Result<Vec<IncidentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT body, ticket, updated_ms FROM incidents WHERE state NOT IN ('closed', 'expired') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(incident_of).collect()
    }

    /// The newest closed incident of each (contract, host) closed since
    /// `since_ms`, for the reopen window after a restart.
    pub async fn recently_closed(&self, since_ms: i64) -> Result<Vec<IncidentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT body, ticket, updated_ms FROM incidents WHERE state IN ('closed', 'expired') AND closed_ms >= $1 ORDER BY closed_ms",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(incident_of).collect()
    }

    pub async fn get_incident(&self, id: &str) -> Result<Option<IncidentRow>, StoreError> {
        let row = sqlx::query("SELECT body, ticket, updated_ms FROM incidents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(incident_of).transpose()
    }

    /// The open incident holding this ticket of the contract called.
    pub async fn incident_by_ticket(
        &self,
        ticket: &str,
    ) -> Result<Option<IncidentRow>, StoreError> {
        let row = sqlx::query(
            "SELECT body, ticket, updated_ms FROM incidents WHERE ticket = $1 \
             OR id IN (SELECT incident_id FROM ticket_sync WHERE old_ticket = $1) ORDER BY opened_ms DESC LIMIT 1",
        )
        .bind(ticket)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(incident_of).transpose()
    }

    pub async fn list_incidents(&self, f: &IncidentFilter) -> Result<Vec<IncidentRow>, StoreError> {
        let mut sql = String::from("SELECT body, ticket, updated_ms FROM incidents WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut push = |sql: &mut String, cond: &str, v: String| {
            binds.push(v);
            sql.push_str(&cond.replace('?', &format!("${}", binds.len())));
        };
        if let Some(c) = &f.contract {
            push(&mut sql, " AND contract = ?", c.clone());
        }
        if let Some(h) = &f.host {
            push(&mut sql, " AND host = ?", h.clone());
        }
        if let Some(s) = &f.state {
            push(&mut sql, " AND state = ?", s.clone());
        }
        if let Some(b) = &f.before {
            push(&mut sql, " AND id < ?", b.clone());
        }
        if let Some(cs) = &f.contracts {
            if cs.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND (");
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                push(&mut sql, "contract = ?", c.clone());
            }
            sql.push(')');
        }
        let since_idx = binds.len() + 1;
        sql.push_str(&format!(
            " AND opened_ms >= ${since_idx} ORDER BY id DESC LIMIT ${}",
            since_idx + 1
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(f.since_ms.unwrap_or(0))
            .bind(f.limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(incident_of).collect()
    }

    pub async fn timeline(&self, incident: &str) -> Result<Vec<TimelineRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, seq, at_ms, kind, text, alert_id, data FROM incident_timeline WHERE incident_id = $1 ORDER BY seq, id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let data: Option<String> = r.try_get("data")?;
                Ok(TimelineRow {
                    id: r.try_get("id")?,
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at_ms")?,
                    kind: r.try_get("kind")?,
                    text: r.try_get("text")?,
                    alert: r.try_get("alert_id")?,
                    data: data.map(|d| serde_json::from_str(&d)).transpose()?,
                })
            })
            .collect()
    }

    /// The alerts that formed or joined an incident, oldest first.
    pub async fn incident_alerts(
        &self,
        incident: &str,
        limit: i64,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT body, incident_id, disposition FROM alerts WHERE incident_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(incident)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let b: String = r.try_get("body")?;
                let d: Option<String> = r.try_get("disposition")?;
                Ok(AlertRow {
                    alert: serde_json::from_str(&b)?,
                    incident: r.try_get("incident_id")?,
                    disposition: d.map(|d| serde_json::from_str(&d)).transpose()?,
                })
            })
            .collect()
    }

    /// Count alerts by contract (all, and not yet handled).
    pub async fn alert_counts(&self, contract: &str) -> Result<(i64, i64), StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN handled_ms IS NULL THEN 1 ELSE 0 END) AS u FROM alerts WHERE contract = $1",
        )
        .bind(contract)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            r.try_get("n")?,
            r.try_get::<Option<i64>, _>("u")?.unwrap_or(0),
        ))
    }

    pub async fn put_silence(&self, s: &Silence) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO silences (id, contract, ends_ms, deleted_ms, body) VALUES ($1, $2, $3, NULL, $4)",
        )
        .bind(&s.id)
        .bind(&s.contract)
        .bind(s.ends_ms)
        .bind(serde_json::to_string(s)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Silences not deleted and not over.
    pub async fn silences(&self, now_ms: i64) -> Result<Vec<Silence>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM silences WHERE deleted_ms IS NULL AND ends_ms > $1 ORDER BY id",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let b: String = r.try_get("body")?;
                Ok(serde_json::from_str(&b)?)
            })
            .collect()
    }

    /// True when a live silence was deleted.
    pub async fn delete_silence(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n =
            sqlx::query("UPDATE silences SET deleted_ms = $1 WHERE id = $2 AND deleted_ms IS NULL")
                .bind(now_ms)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n == 1)
    }

    pub async fn heartbeats(&self) -> Result<Vec<HeartbeatState>, StoreError> {
        let rows = sqlx::query("SELECT body FROM heartbeats")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let b: String = r.try_get("body")?;
                Ok(serde_json::from_str(&b)?)
            })
            .collect()
    }
}

/// Take the next embedded ticket number of a prefix (`ACME-000124`) inside
/// the caller's transaction, so the number commits with what it names.
pub(super) async fn next_ticket(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    prefix: &str,
) -> Result<String, StoreError> {
    sqlx::query(
        "INSERT INTO ticket_counters (prefix, last) VALUES ($1, 0) ON CONFLICT (prefix) DO NOTHING",
    )
    .bind(prefix)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE ticket_counters SET last = last + 1 WHERE prefix = $1")
        .bind(prefix)
        .execute(&mut **tx)
        .await?;
    let last: i64 = sqlx::query("SELECT last FROM ticket_counters WHERE prefix = $1")
        .bind(prefix)
        .fetch_one(&mut **tx)
        .await?
        .try_get("last")?;
    Ok(format!("{prefix}-{last:06}"))
}

//! Where each incident's external ticket stands: the issue it has and the
//! last timeline entry written to it (the per-incident outbox cursor).
//!
//! Clustered, the sync runs under the `ticket_sync` lease: each write
//! here takes its [`Fence`] and checks it in the write's own transaction,
//! so a node that lost the lease (cut off, paused) and comes back cannot
//! move a cursor, swap a ticket number or end a sync another node now
//! carries out (`StoreError::Fenced`).

use sqlx::Row;

use super::work_leases::check;
use super::{Fence, Store, StoreError};

/// One incident's ticket in an external system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSyncRow {
    pub incident: String,
    pub system: String,
    pub server: String,
    /// The issue id there, once created.
    pub issue: Option<String>,
    pub old_ticket: Option<String>,
    /// The last timeline `seq` the ticket accepted (0: none).
    pub cursor_seq: i64,
    pub done_ms: Option<i64>,
}

fn row_of(r: &sqlx::any::AnyRow) -> Result<TicketSyncRow, StoreError> {
    Ok(TicketSyncRow {
        incident: r.try_get("incident_id")?,
        system: r.try_get("system")?,
        server: r.try_get("server")?,
        issue: r.try_get("issue")?,
        old_ticket: r.try_get("old_ticket")?,
        cursor_seq: r.try_get("cursor_seq")?,
        done_ms: r.try_get("done_ms")?,
    })
}

const COLS: &str = "incident_id, system, server, issue, old_ticket, cursor_seq, done_ms";

impl Store {
    /// The sync row of an incident, if its ticket is external.
    pub async fn ticket_sync(&self, incident: &str) -> Result<Option<TicketSyncRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM ticket_sync WHERE incident_id = $1"
        ))
        .bind(incident)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(row_of).transpose()
    }

    /// Sync rows not finished, oldest incident first.
    pub async fn ticket_syncs_open(&self) -> Result<Vec<TicketSyncRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM ticket_sync WHERE done_ms IS NULL ORDER BY incident_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// Incidents (open, or closed since `since_ms`) with no sync row yet:
    /// candidates for an external ticket.
    pub async fn incidents_without_ticket_sync(
        &self,
        since_ms: i64,
    ) -> Result<Vec<super::IncidentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT body, ticket, updated_ms FROM incidents i WHERE (closed_ms IS NULL OR closed_ms >= $1) \
             AND NOT EXISTS (SELECT 1 FROM ticket_sync s WHERE s.incident_id = i.id) ORDER BY id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok(super::IncidentRow {
                    incident: serde_json::from_str(&body)?,
                    ticket: r.try_get("ticket")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    /// Start following an incident's external ticket (a replay changes
    /// nothing).
    pub async fn ticket_sync_begin(
        &self,
        incident: &str,
        system: &str,
        server: &str,
        now_ms: i64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        check(&mut tx, fence).await?;
        sqlx::query(
            "INSERT INTO ticket_sync (incident_id, system, server, issue, old_ticket, cursor_seq, done_ms, updated_ms) \
             VALUES ($1, $2, $3, NULL, NULL, 0, NULL, $4) ON CONFLICT (incident_id) DO NOTHING",
        )
        .bind(incident)
        .bind(system)
        .bind(server)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The issue exists: it becomes the incident's ticket number (the
    /// number it held until now is kept so the gateway's events naming it
    /// still find the incident).
    pub async fn ticket_sync_created(
        &self,
        incident: &str,
        issue: &str,
        ticket: &str,
        now_ms: i64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        check(&mut tx, fence).await?;
        let old: Option<String> = sqlx::query("SELECT ticket FROM incidents WHERE id = $1")
            .bind(incident)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("ticket"))
            .transpose()?
            .flatten();
        sqlx::query(
            "UPDATE ticket_sync SET issue = $1, old_ticket = COALESCE(old_ticket, $2), updated_ms = $3 WHERE incident_id = $4",
        )
        .bind(issue)
        .bind(old.filter(|o| o != ticket))
        .bind(now_ms)
        .bind(incident)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE incidents SET ticket = $1 WHERE id = $2")
            .bind(ticket)
            .bind(incident)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The ticket accepted every timeline entry up to `seq`. Only moves
    /// forward.
    pub async fn ticket_sync_advance(
        &self,
        incident: &str,
        seq: i64,
        now_ms: i64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        check(&mut tx, fence).await?;
        sqlx::query(
            "UPDATE ticket_sync SET cursor_seq = $1, updated_ms = $2 WHERE incident_id = $3 AND cursor_seq < $1",
        )
        .bind(seq)
        .bind(now_ms)
        .bind(incident)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Nothing more to write for this incident.
    pub async fn ticket_sync_done(
        &self,
        incident: &str,
        now_ms: i64,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        check(&mut tx, fence).await?;
        sqlx::query("UPDATE ticket_sync SET done_ms = $1, updated_ms = $1 WHERE incident_id = $2")
            .bind(now_ms)
            .bind(incident)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Follow again the tickets of incidents reopened after their sync
    /// ended (a reopen keeps the incident and its issue).
    pub async fn ticket_syncs_reopen(
        &self,
        now_ms: i64,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        check(&mut tx, fence).await?;
        let r = sqlx::query(
            "UPDATE ticket_sync SET done_ms = NULL, updated_ms = $1 WHERE done_ms IS NOT NULL \
             AND incident_id IN (SELECT id FROM incidents WHERE closed_ms IS NULL)",
        )
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    /// Timeline entries after `after_seq`, in order.
    pub async fn timeline_after(
        &self,
        incident: &str,
        after_seq: i64,
    ) -> Result<Vec<super::TimelineRow>, StoreError> {
        Ok(self
            .timeline(incident)
            .await?
            .into_iter()
            .filter(|t| t.seq > after_seq)
            .collect())
    }
}

impl Store {
    /// The next embedded ticket number of a prefix (`ACME-000124`).
    pub async fn take_ticket_number(&self, prefix: &str) -> Result<String, StoreError> {
        let mut tx = self.pool.begin().await?;
        let number = super::incidents::next_ticket(&mut tx, prefix).await?;
        tx.commit().await?;
        Ok(number)
    }
}

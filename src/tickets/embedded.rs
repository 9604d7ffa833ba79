//! The embedded ticket store (the default): numbers per called contract
//! (`ACME-WEB-000123`) from the store's counters. Its notes are the
//! incident's timeline itself and its status is the incident's state, so
//! appending, moving the status and closing write nothing more. A link is
//! a `link` line on the ticket's timeline naming the other ticket.

use std::sync::Arc;

use super::{Fut, NewTicket, Note, RemoteTicket, TicketAdapter, TicketError, TicketStatus};
use crate::store::{Store, TimelineRow};

/// The embedded [`TicketAdapter`].
#[derive(Clone)]
pub struct EmbeddedTickets {
    pub store: Store,
    /// The next timeline position (the pipeline's counter, so a line
    /// written here sorts where it happened and the ticket sync's cursor
    /// never passes over it).
    pub next_seq: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for EmbeddedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTickets").finish_non_exhaustive()
    }
}

/// The tickets a timeline's `link` lines name.
fn links(timeline: &[TimelineRow]) -> Vec<String> {
    timeline
        .iter()
        .filter(|t| t.kind == "link")
        .filter_map(|t| t.data.as_ref()?["ticket"].as_str().map(str::to_string))
        .collect()
}

/// The number prefix of a contract: its name in capitals, other
/// characters as `-`.
pub fn prefix(contract: &str) -> String {
    contract
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '-'
            }
        })
        .collect()
}

impl TicketAdapter for EmbeddedTickets {
    fn open<'a>(&'a self, t: &'a NewTicket) -> Fut<'a, String> {
        Box::pin(async move { Ok(self.store.take_ticket_number(&prefix(&t.contract)).await?) })
    }

    fn append<'a>(&'a self, _number: &'a str, _note: &'a Note) -> Fut<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn set_status<'a>(&'a self, _number: &'a str, _status: TicketStatus) -> Fut<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn close<'a>(&'a self, _number: &'a str, _resolution: &'a str) -> Fut<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn link<'a>(&'a self, number: &'a str, other: &'a str) -> Fut<'a, bool> {
        Box::pin(async move {
            let me = self
                .store
                .incident_by_ticket(number)
                .await?
                .ok_or_else(|| TicketError::NoTicket(number.to_string()))?;
            let them = self
                .store
                .incident_by_ticket(other)
                .await?
                .ok_or_else(|| TicketError::NoTicket(other.to_string()))?;
            let id = me.incident.id;
            if links(&self.store.timeline(&id).await?)
                .iter()
                .any(|t| t == other)
            {
                return Ok(false);
            }
            // One line per pair whoever asks twice: the id is the pair.
            let key: String = other
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let line = TimelineRow {
                id: format!("tl_link_{id}_{key}"),
                seq: (self.next_seq)(),
                at_ms: crate::runner::now_ms(),
                kind: "link".into(),
                text: format!("related to ticket {other} ({})", them.incident.id),
                alert: None,
                data: Some(serde_json::json!({"ticket": other, "incident": them.incident.id})),
            };
            Ok(self.store.add_timeline(&id, &line).await?)
        })
    }

    fn fetch<'a>(&'a self, number: &'a str) -> Fut<'a, RemoteTicket> {
        Box::pin(async move {
            let row = self.store.incident_by_ticket(number).await?;
            let links = match &row {
                Some(r) => links(&self.store.timeline(&r.incident.id).await?),
                None => Vec::new(),
            };
            let closed = row.as_ref().is_some_and(|r| !r.incident.state.is_open());
            Ok(RemoteTicket {
                closed,
                status: row
                    .map(|r| r.incident.state.as_str().to_string())
                    .unwrap_or_default(),
                closed_by: None,
                markers: Vec::new(),
                links,
            })
        })
    }
}

//! The embedded ticket store (the default): numbers per called contract
//! (`ACME-WEB-000123`) from the store's counters. Its notes are the
//! incident's timeline itself and its status is the incident's state, so
//! appending, moving the status and closing write nothing more.

use super::{Fut, NewTicket, Note, RemoteTicket, TicketAdapter, TicketStatus};
use crate::store::Store;

/// The embedded [`TicketAdapter`].
#[derive(Debug, Clone)]
pub struct EmbeddedTickets {
    pub store: Store,
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

    fn link<'a>(&'a self, _number: &'a str, _other: &'a str) -> Fut<'a, ()> {
        // The monitoring-path incident's `holds` is the link.
        Box::pin(async { Ok(()) })
    }

    fn fetch<'a>(&'a self, number: &'a str) -> Fut<'a, RemoteTicket> {
        Box::pin(async move {
            let row = self.store.incident_by_ticket(number).await?;
            let closed = row.as_ref().is_some_and(|r| !r.incident.state.is_open());
            Ok(RemoteTicket {
                closed,
                status: row
                    .map(|r| r.incident.state.as_str().to_string())
                    .unwrap_or_default(),
                closed_by: None,
                markers: Vec::new(),
            })
        })
    }
}

//! Tickets: one per incident, from the occurrence to the close, in the
//! embedded store (the default) or in an ITSM tool (Redmine).
//!
//! [`TicketAdapter`] is what the pipeline needs of a ticket system: open
//! (→ the ticket number), append a note, set a status, close with a
//! resolution, link two tickets, and read back whether a person closed it.
//! The incident's durable timeline is the outbox: [`sync`] writes each
//! entry to the ticket in order and moves a per-incident cursor in the
//! store only after the ticket system accepted it, so an outage delays
//! notes and loses none, and a marker in each note
//! (`callout:<incident>:<seq>`) makes a resend after a crash find the
//! note already there.

use std::future::Future;
use std::pin::Pin;

pub mod config;
pub mod embedded;
pub mod notes;
pub mod redmine;
pub mod sync;

/// A boxed future returned by the adapters.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, TicketError>> + Send + 'a>>;

/// Why a ticket system refused or could not be reached. Each variant
/// names the setting or field to fix where one is to blame.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The system could not be reached or did not answer in time: retry.
    #[error("{server}: unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    /// 401: the API key was refused.
    #[error("{server}: the API key was refused (401): check the key in ${env} (tickets.redmine.{server}.api_key_env)")]
    BadKey { server: String, env: String },
    /// 403: the key's user may not do this.
    #[error("{server}: forbidden (403) while {what}: the user of the API key in ${env} lacks the permission (give it a role on the project, or use another key: tickets.redmine.{server}.api_key_env; {setting})")]
    Forbidden {
        server: String,
        what: String,
        env: String,
        setting: String,
    },
    /// 404 or a name that does not exist there.
    #[error("{server}: {what} not found ({setting})")]
    NotFound {
        server: String,
        what: String,
        setting: String,
    },
    /// 422: the system refused the content.
    #[error("{server}: refused (422) while {what}: {errors} ({setting})")]
    Refused {
        server: String,
        what: String,
        errors: String,
        setting: String,
    },
    /// 422 on relating issues of two projects: Redmine's setting is off.
    #[error("{server}: refused (422) to relate issue #{from} to #{to} of another project ({errors}): allow it in Redmine under Administration → Settings → Issue tracking → \"Allow cross-project issue relations\" (Setting.cross_project_issue_relations)")]
    CrossProject {
        server: String,
        from: String,
        to: String,
        errors: String,
    },
    /// A ticket that is not there (the embedded store).
    #[error("ticket {0} not found")]
    NoTicket(String),
    /// Anything else the system answered.
    #[error("{server}: unexpected answer {status} while {what}")]
    Unexpected {
        server: String,
        what: String,
        status: u16,
    },
    /// The configuration cannot be used as written.
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl TicketError {
    /// True when trying again later may succeed (the system was down or
    /// slow), false when a person must fix something first.
    pub fn is_transient(&self) -> bool {
        match self {
            TicketError::Unreachable { .. } | TicketError::Store(_) => true,
            TicketError::Unexpected { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Where a ticket stands, in callout's words (each system maps these to
/// its own status names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

/// What a new ticket says.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub incident: String,
    pub contract: String,
    pub host: String,
    pub severity: crate::pipeline::alert::Severity,
    pub subject: String,
    pub description: String,
}

/// One note to append: its text, the status it moves the ticket to, and
/// the marker that makes it idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub marker: String,
    pub text: String,
    pub status: Option<TicketStatus>,
    /// The contact who took the incident (an acknowledgement's note):
    /// the ticket is assigned to them where the contract maps the name.
    pub assignee: Option<String>,
}

/// A ticket as its system has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTicket {
    /// Closed in the system (any closed status).
    pub closed: bool,
    pub status: String,
    /// Who last changed the status, when the system says.
    pub closed_by: Option<String>,
    /// The markers of the notes it holds.
    pub markers: Vec<String>,
    /// The tickets related to it (by [`TicketAdapter::link`] or by hand).
    pub links: Vec<String>,
}

/// What the pipeline needs of a ticket system.
pub trait TicketAdapter: Send + Sync {
    /// Open a ticket; returns its number. Opening again for the same
    /// incident returns the ticket already opened where the system can
    /// tell.
    fn open<'a>(&'a self, t: &'a NewTicket) -> Fut<'a, String>;
    /// Append a note (and move the status). After an outcome that is not
    /// known (a timeout), the caller looks for the note's marker with
    /// [`TicketAdapter::fetch`] before sending it again.
    fn append<'a>(&'a self, number: &'a str, note: &'a Note) -> Fut<'a, ()>;
    fn set_status<'a>(&'a self, number: &'a str, status: TicketStatus) -> Fut<'a, ()>;
    /// Close with a resolution note.
    fn close<'a>(&'a self, number: &'a str, resolution: &'a str) -> Fut<'a, ()>;
    /// Relate two tickets (an incident held under a monitoring-path
    /// incident and that incident's ticket). Idempotent: `Ok(false)` when
    /// they were related already, `Ok(true)` when this call related them.
    fn link<'a>(&'a self, number: &'a str, other: &'a str) -> Fut<'a, bool>;
    /// Read the ticket back (status, who closed it, the notes' markers).
    fn fetch<'a>(&'a self, number: &'a str) -> Fut<'a, RemoteTicket>;
}

/// The marker of a timeline entry's note.
pub fn marker(incident: &str, seq: i64) -> String {
    format!("callout:{incident}:{seq}")
}

//! The ticket sync task (one per node): writes each incident's timeline
//! to its external ticket, in order and once, and notices a ticket a
//! person closed.
//!
//! - At the occurrence an incident of a Redmine contract gets a sync row;
//!   the task creates the issue and its id becomes the incident's ticket
//!   number. When Redmine is down then, the incident keeps its embedded
//!   number (taken at the occurrence, so the call can still name one) and
//!   the issue is created when Redmine answers again; the ticket field
//!   then changes to the issue's id, and the gateway's events naming the
//!   old number still find the incident.
//! - The timeline is the outbox: entries after the incident's cursor are
//!   written one by one; the cursor moves in the store only after Redmine
//!   accepted the note. A note whose outcome is not known (a timeout, a
//!   crash before the cursor moved) is looked for by its marker in the
//!   issue's journals before it is sent again, so it lands once.
//! - An entry is written only once it is `settle` old: timeline positions
//!   are taken before their rows commit, and an entry numbered earlier
//!   but committed later must not be passed over by the cursor.
//! - Redmine down or slow: each incident backs off (1 s doubling to 60 s)
//!   and the incident itself goes on; nothing here blocks the pipeline.
//! - A ticket closed in Redmine while the incident is open closes the
//!   incident (cancelling a running escalation) with who closed it.
//! - Clustered, the sync runs on the node holding the `ticket_sync`
//!   lease: its lease is confirmed before each incident's Redmine calls,
//!   and every store write carries its fence, so once another node took
//!   the sync over, a late write of this one is refused and it stops.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::{RedmineContract, TicketConfig, TicketsSettings};
use super::notes::render;
use super::redmine::{Redmine, RedmineTickets};
use super::{NewTicket, TicketAdapter, TicketError};
use crate::cluster::role::{Role, Term};
use crate::ivr::dialplan::{Dialplan, Language};
use crate::pipeline::driver::Plans;
use crate::pipeline::engine::Incident;
use crate::store::{Fence, Store, StoreError, TicketSyncRow};

/// What the sync needs of the running pipeline.
pub trait Hooks: Send + Sync {
    /// Close an open incident (cancelling its escalation), saying who.
    fn close(&self, incident: String, by: String);
    /// The next timeline position.
    fn next_seq(&self) -> i64;
}

impl Hooks for crate::pipeline::driver::Pipeline {
    fn close(&self, incident: String, by: String) {
        let (reply, _) = tokio::sync::oneshot::channel();
        self.send(crate::pipeline::driver::Input::Close {
            incident,
            by,
            reply,
        });
    }

    fn next_seq(&self) -> i64 {
        crate::pipeline::driver::Pipeline::next_seq(self)
    }
}

/// Counters for the bench and `/metrics`-style checks.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    pub issues_created: std::sync::atomic::AtomicU64,
    pub notes_written: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct IncState {
    /// This process has compared the issue's journals with the cursor
    /// since its last unknown outcome.
    verified: bool,
    next_try_ms: i64,
    backoff_ms: i64,
    last_poll_ms: i64,
    close_asked: bool,
    /// The incident's `reopened` count when `close_asked` was set: a
    /// reopen makes the issue ours again.
    reopened: u32,
    /// Related to the monitoring-path incident's issue (or nothing to
    /// relate), in this process.
    linked: bool,
}

struct Contract {
    cfg: RedmineContract,
    adapter: Option<Arc<RedmineTickets>>,
    next_try_ms: i64,
}

/// The sync task's state.
pub struct TicketSync {
    store: Store,
    plans: Plans,
    servers: BTreeMap<String, Arc<Redmine>>,
    settings: TicketsSettings,
    hooks: Arc<dyn Hooks>,
    contracts: HashMap<String, Contract>,
    incidents: HashMap<String, IncState>,
    started_ms: i64,
    pub metrics: Arc<SyncMetrics>,
    /// Clustered: the `ticket_sync` lease this node works under.
    held: Option<(Arc<Role>, Term)>,
}

/// The contract whose ticket an incident has (the called contract; the
/// customer's when nobody is called).
pub fn ticket_contract(inc: &Incident) -> &str {
    inc.notify_contract.as_deref().unwrap_or(&inc.contract)
}

/// A contract's ticket system from its dialplan.
pub fn ticket_config(plan: &Dialplan) -> TicketConfig {
    plan.pipeline
        .as_ref()
        .and_then(|p| p.0.ticket.clone())
        .unwrap_or(TicketConfig::Embedded)
}

/// Build the clients of `[tickets.redmine.*]` (a missing key variable or a
/// bad URL is an error naming the setting).
pub fn servers(s: &TicketsSettings) -> Result<BTreeMap<String, Arc<Redmine>>, TicketError> {
    s.redmine
        .iter()
        .map(|(name, cfg)| Ok((name.clone(), Arc::new(Redmine::new(name, cfg)?))))
        .collect()
}

/// Check every contract's Redmine settings against its server: every
/// name is looked up. Errors are `(contract, error)`.
pub async fn check_contracts(
    plans: &[&Dialplan],
    servers: &BTreeMap<String, Arc<Redmine>>,
) -> Vec<(String, TicketError)> {
    let mut out = Vec::new();
    for p in plans {
        if let TicketConfig::Redmine(c) = ticket_config(p) {
            match servers.get(&c.server) {
                None => out.push((
                    p.contract.clone(),
                    TicketError::Config(format!(
                        "pipeline.ticket.server: no [tickets.redmine.{}] in the configuration",
                        c.server
                    )),
                )),
                Some(s) => {
                    if let Err(e) = s.resolve(&c).await {
                        out.push((p.contract.clone(), e));
                    }
                }
            }
        }
    }
    out
}

impl TicketSync {
    pub fn new(
        store: Store,
        plans: Plans,
        servers: BTreeMap<String, Arc<Redmine>>,
        settings: TicketsSettings,
        hooks: Arc<dyn Hooks>,
    ) -> TicketSync {
        TicketSync {
            store,
            plans,
            servers,
            settings,
            hooks,
            contracts: HashMap::new(),
            incidents: HashMap::new(),
            started_ms: crate::runner::now_ms(),
            metrics: Arc::default(),
            held: None,
        }
    }

    /// Run until `shutdown`: a pass every 200 ms.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.run_term(&shutdown).await;
    }

    /// Clustered: run only while this node holds the `ticket_sync` lease,
    /// confirmed on the database before each incident's Redmine calls.
    pub async fn run_held(mut self, role: Arc<Role>, shutdown: CancellationToken) {
        while let Some(term) = role.acquire().await {
            // What another node did meanwhile is only in the database.
            self.incidents.clear();
            self.held = Some((role.clone(), term.clone()));
            self.run_term(&term.token).await;
            self.held = None;
            if shutdown.is_cancelled() {
                role.release(&term).await;
                return;
            }
            role.stopped(&term, "the ticket sync stopped");
        }
    }

    async fn run_term(&mut self, shutdown: &CancellationToken) {
        loop {
            let now = crate::runner::now_ms();
            match self.pass(now).await {
                Ok(()) => {}
                Err(TicketError::Store(StoreError::Fenced(_))) => {
                    // Another node runs the sync now: nothing more here.
                    if let Some((role, term)) = &self.held {
                        role.fenced(term);
                    }
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "tickets: a sync pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The fence every write of this node's sync carries (clustered).
    fn fence(&self) -> Option<Fence> {
        self.held.as_ref().map(|(_, t)| t.fence.clone())
    }

    /// The Redmine settings of an incident's contract, if it has any.
    fn redmine_cfg(&self, inc: &Incident) -> Option<(RedmineContract, Language, chrono_tz::Tz)> {
        let plan = (self.plans)().get(ticket_contract(inc)).cloned()?;
        match ticket_config(&plan) {
            TicketConfig::Redmine(c) => {
                let tz = plan.timezone.parse().unwrap_or(chrono_tz::UTC);
                Some((*c, plan.language, tz))
            }
            TicketConfig::Embedded => None,
        }
    }

    async fn adapter(
        &mut self,
        contract: &str,
        cfg: &RedmineContract,
        now: i64,
    ) -> Result<Arc<RedmineTickets>, TicketError> {
        let c = self
            .contracts
            .entry(contract.to_string())
            .or_insert_with(|| Contract {
                cfg: cfg.clone(),
                adapter: None,
                next_try_ms: 0,
            });
        if c.cfg != *cfg {
            // Reloaded with other names: look them up again.
            *c = Contract {
                cfg: cfg.clone(),
                adapter: None,
                next_try_ms: 0,
            };
        }
        if let Some(a) = &c.adapter {
            return Ok(a.clone());
        }
        if now < c.next_try_ms {
            return Err(TicketError::Unreachable {
                server: cfg.server.clone(),
                reason: "waiting before looking the contract's names up again".into(),
            });
        }
        let server = self.servers.get(&cfg.server).cloned().ok_or_else(|| {
            TicketError::Config(format!(
                "contract {contract}: pipeline.ticket.server: no [tickets.redmine.{}] in the configuration",
                cfg.server
            ))
        })?;
        match server.resolve(cfg).await {
            Ok(resolved) => {
                let a = Arc::new(RedmineTickets { server, resolved });
                c.adapter = Some(a.clone());
                Ok(a)
            }
            Err(e) => {
                c.next_try_ms = now + if e.is_transient() { 2_000 } else { 60_000 };
                Err(e)
            }
        }
    }

    /// One pass over every incident with an unfinished external ticket.
    pub async fn pass(&mut self, now: i64) -> Result<(), TicketError> {
        let fence = self.fence();
        let fence = fence.as_ref();
        for r in self
            .store
            .incidents_without_ticket_sync(self.started_ms - 86_400_000)
            .await?
        {
            if let Some((cfg, _, _)) = self.redmine_cfg(&r.incident) {
                self.store
                    .ticket_sync_begin(&r.incident.id, "redmine", &cfg.server, now, fence)
                    .await?;
            }
        }
        // A reopened incident writes to its issue again.
        self.store.ticket_syncs_reopen(now, fence).await?;
        let rows = self.store.ticket_syncs_open().await?;
        let live: HashSet<&str> = rows.iter().map(|r| r.incident.as_str()).collect();
        self.incidents.retain(|k, _| live.contains(k.as_str()));
        for row in &rows {
            let due = self
                .incidents
                .get(&row.incident)
                .is_none_or(|s| s.next_try_ms <= now);
            if !due {
                continue;
            }
            if let Some((role, term)) = &self.held {
                if !role.confirm(term).await {
                    return Ok(());
                }
            }
            match self.sync_one(row, now).await {
                Err(e @ TicketError::Store(StoreError::Fenced(_))) => return Err(e),
                Ok(()) => {
                    let s = self.incidents.entry(row.incident.clone()).or_default();
                    s.backoff_ms = 0;
                }
                Err(e) => {
                    self.metrics
                        .failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let s = self.incidents.entry(row.incident.clone()).or_default();
                    s.verified = false;
                    s.backoff_ms = if e.is_transient() {
                        (s.backoff_ms * 2).clamp(1_000, 60_000)
                    } else {
                        60_000
                    };
                    s.next_try_ms = now + s.backoff_ms;
                    if e.is_transient() {
                        tracing::warn!(incident = %row.incident, error = %e, retry_ms = s.backoff_ms, "tickets: Redmine did not take the incident's notes yet");
                    } else {
                        tracing::error!(incident = %row.incident, error = %e, "tickets: Redmine refused; fix the setting named");
                    }
                }
            }
        }
        Ok(())
    }

    async fn sync_one(&mut self, row: &TicketSyncRow, now: i64) -> Result<(), TicketError> {
        let fence = self.fence();
        let fence = fence.as_ref();
        let Some(inc) = self.store.get_incident(&row.incident).await? else {
            self.store
                .ticket_sync_done(&row.incident, now, fence)
                .await?;
            return Ok(());
        };
        let inc = inc.incident;
        let Some((cfg, lang, tz)) = self.redmine_cfg(&inc) else {
            // The contract no longer uses Redmine: leave the issue as it is.
            tracing::warn!(incident = %inc.id, "tickets: the contract no longer names a Redmine project; not syncing");
            self.store
                .ticket_sync_done(&row.incident, now, fence)
                .await?;
            return Ok(());
        };
        let contract = ticket_contract(&inc).to_string();
        let adapter = self.adapter(&contract, &cfg, now).await?;
        let number = match &row.issue {
            Some(n) => n.clone(),
            None => {
                let t = new_ticket(&inc, lang);
                let n = adapter.open(&t).await?;
                let at = crate::runner::now_ms();
                let was = self
                    .store
                    .get_incident(&inc.id)
                    .await?
                    .and_then(|r| r.ticket);
                self.store
                    .ticket_sync_created(&inc.id, &n, &n, at, fence)
                    .await?;
                let text = match (lang, was) {
                    (Language::Ja, Some(w)) => {
                        format!("Redmine チケット #{n} を起票 ({w} から変更)")
                    }
                    (Language::Ja, None) => format!("Redmine チケット #{n} を起票"),
                    (Language::En, Some(w)) => format!("Redmine issue #{n} opened (was {w})"),
                    (Language::En, None) => format!("Redmine issue #{n} opened"),
                };
                let line = crate::store::TimelineRow {
                    id: format!("tl_redmine_{}", inc.id),
                    seq: self.hooks.next_seq(),
                    at_ms: at,
                    kind: "ticket".into(),
                    text,
                    alert: None,
                    data: None,
                };
                self.store
                    .add_timeline_fenced(&inc.id, &line, fence)
                    .await?;
                self.metrics
                    .issues_created
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(incident = %inc.id, issue = %n, server = %cfg.server, "tickets: Redmine issue opened");
                n
            }
        };
        let all = self.store.timeline_after(&inc.id, row.cursor_seq).await?;
        let settle = self.settings.settle.as_millis() as i64;
        let ready: Vec<_> = all.iter().filter(|t| t.at_ms <= now - settle).collect();
        let state = self.incidents.entry(inc.id.clone()).or_default();
        if state.reopened != inc.reopened {
            state.reopened = inc.reopened;
            state.close_asked = false;
        }
        let mut present = HashSet::new();
        if !state.verified && !ready.is_empty() {
            present = adapter.fetch(&number).await?.markers.into_iter().collect();
            state.verified = true;
        }
        let closed_by_person = state.close_asked;
        for t in &ready {
            let mut note = render(lang, &inc.id, t, tz);
            // A person closed the issue: the incident's own way to closed
            // (recovered first) must not reopen it on the way.
            if closed_by_person && note.status != Some(super::TicketStatus::Closed) {
                note.status = None;
            }
            if !present.contains(&note.marker) {
                adapter.append(&number, &note).await?;
                self.metrics
                    .notes_written
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.store
                .ticket_sync_advance(&inc.id, t.seq, crate::runner::now_ms(), fence)
                .await?;
        }
        if !self.link_held(&inc, &cfg, &adapter, &number, lang).await? {
            // The path's issue is not there yet: not done before it is.
            return Ok(());
        }
        if !inc.state.is_open() {
            // Events the gateway sends just after the close (the call's
            // cancellation) still land on the issue.
            let quiet = inc.closed_ms.is_none_or(|c| now - c > 10_000);
            if ready.len() == all.len() && quiet {
                self.store.ticket_sync_done(&inc.id, now, fence).await?;
            }
            return Ok(());
        }
        let poll = self.settings.poll.as_millis() as i64;
        let state = self.incidents.entry(inc.id.clone()).or_default();
        // Polled only once every note is written: until then the issue's
        // status may be one callout is about to change (a reopen).
        let caught_up = ready.len() == all.len();
        if !state.close_asked && caught_up && now - state.last_poll_ms >= poll {
            state.last_poll_ms = now;
            let remote = adapter.fetch(&number).await?;
            if remote.closed {
                let state = self.incidents.entry(inc.id.clone()).or_default();
                state.close_asked = true;
                let by = format!(
                    "Redmine #{number} ({}, status {})",
                    remote.closed_by.as_deref().unwrap_or("unknown user"),
                    remote.status
                );
                tracing::info!(incident = %inc.id, issue = %number, "tickets: closed in Redmine; closing the incident");
                self.hooks.close(inc.id.clone(), by);
            }
        }
        Ok(())
    }
}

impl TicketSync {
    /// An incident held under a monitoring-path incident: relate its issue
    /// to the path incident's (which lives in the monitoring centre's
    /// contract, often another project). Once per incident; the line on
    /// its timeline (one per pair, by id) becomes a note. A refusal that
    /// a person must fix (Redmine's cross-project setting) is recorded
    /// on the timeline and does not hold the notes back. `Ok(false)`: the
    /// path's issue does not exist yet.
    async fn link_held(
        &mut self,
        inc: &Incident,
        cfg: &RedmineContract,
        adapter: &RedmineTickets,
        number: &str,
        lang: Language,
    ) -> Result<bool, TicketError> {
        let Some(path) = inc.held_by.clone() else {
            return Ok(true);
        };
        if self.incidents.get(&inc.id).is_some_and(|s| s.linked) {
            return Ok(true);
        }
        let Some(path_inc) = self.store.get_incident(&path).await? else {
            return Ok(true);
        };
        let path_issue = match self.redmine_cfg(&path_inc.incident) {
            // The path's ticket is embedded: `held_by` is the relation.
            None => None,
            Some((pc, _, _)) if pc.server != cfg.server => {
                tracing::warn!(incident = %inc.id, path = %path, "tickets: the monitoring path's issue is on another Redmine server; not related");
                None
            }
            Some(_) => match self.store.ticket_sync(&path).await?.and_then(|r| r.issue) {
                Some(n) => Some(n),
                None => return Ok(false),
            },
        };
        let Some(path_issue) = path_issue else {
            self.incidents.entry(inc.id.clone()).or_default().linked = true;
            return Ok(true);
        };
        let (id, kind, text) = match adapter.link(number, &path_issue).await {
            Ok(_) => (
                format!("tl_link_{}_{path}", inc.id),
                "link",
                match lang {
                    Language::Ja => format!(
                        "監視経路障害 {path} のチケット Redmine #{path_issue} に関連付け"
                    ),
                    Language::En => format!(
                        "related to Redmine #{path_issue}, the ticket of monitoring-path incident {path}"
                    ),
                },
            ),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::error!(incident = %inc.id, path = %path, error = %e, "tickets: could not relate the issue to the monitoring path's");
                (
                    format!("tl_link_failed_{}_{path}", inc.id),
                    "ticket",
                    format!("could not relate #{number} to Redmine #{path_issue} ({path}): {e}"),
                )
            }
        };
        self.incidents.entry(inc.id.clone()).or_default().linked = true;
        let line = crate::store::TimelineRow {
            id,
            seq: self.hooks.next_seq(),
            at_ms: crate::runner::now_ms(),
            kind: kind.into(),
            text,
            alert: None,
            data: Some(serde_json::json!({"ticket": path_issue, "incident": path})),
        };
        let fence = self.fence();
        self.store
            .add_timeline_fenced(&inc.id, &line, fence.as_ref())
            .await?;
        Ok(true)
    }
}

/// What the issue says at the occurrence.
pub fn new_ticket(inc: &Incident, lang: Language) -> NewTicket {
    let host = if inc.host.is_empty() {
        "-"
    } else {
        inc.host.as_str()
    };
    let description = match lang {
        Language::Ja => format!(
            "callout インシデント {}\n契約: {}\nホスト: {}\n重要度: {}\n概要: {}",
            inc.id,
            inc.contract,
            host,
            inc.severity.as_str(),
            inc.summary
        ),
        Language::En => format!(
            "callout incident {}\nContract: {}\nHost: {}\nSeverity: {}\nSummary: {}",
            inc.id,
            inc.contract,
            host,
            inc.severity.as_str(),
            inc.summary
        ),
    };
    NewTicket {
        incident: inc.id.clone(),
        contract: inc.contract.clone(),
        host: host.to_string(),
        severity: inc.severity,
        subject: format!("[{}] {host}: {}", inc.severity.as_str(), inc.summary),
        description,
    }
}

/// Start the sync task when a contract uses Redmine. Every contract's
/// names are looked up first: a wrong name or key stops the start with an
/// error naming the setting; Redmine being down only warns (the issues
/// are created when it answers).
pub async fn start(
    svc: &crate::service::Service,
    plans: Plans,
    pipeline: Arc<crate::pipeline::driver::Pipeline>,
    role: Option<Arc<Role>>,
) -> Result<(), TicketError> {
    let snapshot = plans();
    let uses: Vec<&Dialplan> = snapshot
        .values()
        .map(|p| p.as_ref())
        .filter(|p| matches!(ticket_config(p), TicketConfig::Redmine(_)))
        .collect();
    if uses.is_empty() && svc.config.tickets.redmine.is_empty() {
        return Ok(());
    }
    let servers = servers(&svc.config.tickets)?;
    for (contract, e) in check_contracts(&uses, &servers).await {
        if e.is_transient() {
            tracing::warn!(contract = %contract, error = %e, "tickets: Redmine not reachable at start; issues will be created when it answers");
        } else {
            return Err(TicketError::Config(format!("contract {contract}: {e}")));
        }
    }
    let sync = TicketSync::new(
        svc.store.clone(),
        plans,
        servers,
        svc.config.tickets.clone(),
        pipeline,
    );
    tracing::info!(contracts = uses.len(), "tickets: Redmine sync running");
    match role {
        Some(role) => svc.tasks.spawn(sync.run_held(role, svc.shutdown.clone())),
        None => svc.tasks.spawn(sync.run(svc.shutdown.clone())),
    };
    Ok(())
}

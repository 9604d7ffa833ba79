//! The pipeline's tokio side: one task owns the [`Engine`], feeds it the
//! stored alerts, the clock and the gateway's word, writes what it
//! decided in one transaction per step, then carries out the calls and
//! cancels through the gateway's REST API.
//!
//! Order of things, so a crash loses nothing and calls nobody twice: an
//! alert is in the database before its sender hears 2xx/250; the engine
//! reads alerts from the database (never from the request); a step's
//! incidents, dispositions, tickets and timeline are committed before any
//! call is asked for; a call is asked for with an Idempotency-Key fixed
//! by the incident, and an unconfirmed one is asked again after a
//! restart (the gateway answers with the same notification).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::engine::{ActionReport, Engine, GatewayOutcome, Incident, Output, Silence};
use super::gateway::{GatewayClient, NotifyResult};
use crate::cluster::role::{Role, Term};
use crate::ivr::dialplan::Dialplan;
use crate::runner::now_ms;
use crate::store::{new_id, PipelineWrite, Store, TimelineRow};

/// The loaded dialplans, as the registry has them now (the pipeline's
/// rules live in them and change with a reload).
pub type Plans =
    Arc<dyn Fn() -> Arc<std::collections::BTreeMap<String, Arc<Dialplan>>> + Send + Sync>;

/// What reaches the engine task besides stored alerts and the clock.
pub enum Input {
    Notified {
        incident: String,
        result: NotifyResult,
    },
    Outcome {
        incident: String,
        notification: String,
        outcome: GatewayOutcome,
    },
    Close {
        incident: String,
        by: String,
        reply: oneshot::Sender<bool>,
    },
    /// A run on the incident ended (first-level or an operator's).
    ActionResult {
        incident: String,
        report: ActionReport,
    },
    /// The gateway is calling for an incident that is closed: cancel it.
    Stray {
        incident: String,
        notification: String,
    },
    SilenceAdded(Silence),
    SilenceRemoved(String),
    Reload,
}

#[derive(Default)]
pub struct Metrics {
    pub alerts_accepted: AtomicU64,
    pub alerts_handled: AtomicU64,
    pub incidents_opened: AtomicU64,
    pub notifies: AtomicU64,
    pub store_retries: AtomicU64,
}

/// The running pipeline, as the API sees it.
pub struct Pipeline {
    pub store: Store,
    pub plans: Plans,
    /// Secrets the gateway's webhooks are signed with.
    pub secrets: Vec<String>,
    pub metrics: Metrics,
    /// The intake's writes, grouped into shared commits.
    pub intake: super::group_commit::GroupCommit,
    inputs: mpsc::UnboundedSender<Input>,
    kick: Notify,
    /// Wakes the mail outbox when a step queued notices.
    pub mail_wake: Notify,
    seq: AtomicI64,
    /// Clustered: the `pipeline` lease (`crate::cluster::role`).
    pub role: Option<Arc<Role>>,
}

impl Pipeline {
    /// Alerts were stored: look at them now rather than at the next poll.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    pub fn send(&self, i: Input) {
        let _ = self.inputs.send(i);
    }

    /// The next timeline position (shared by the engine task and the
    /// webhook receiver, so lines sort in the order they happened).
    pub fn next_seq(&self) -> i64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Contract → pipeline rules, from the loaded dialplans.
    pub fn contracts(&self) -> HashMap<String, Arc<super::config::PipelineConfig>> {
        contracts(&self.plans)
    }

    pub fn plan(&self, contract: &str) -> Option<Arc<Dialplan>> {
        (self.plans)().get(contract).cloned()
    }
}

fn contracts(plans: &Plans) -> HashMap<String, Arc<super::config::PipelineConfig>> {
    plans()
        .values()
        .filter_map(|p| {
            p.pipeline
                .as_ref()
                .map(|c| (p.contract.clone(), c.0.clone()))
        })
        .collect()
}

/// The ticket number prefix of an incident: its called contract in
/// capitals (`acme-web` → `ACME-WEB-000123`).
fn ticket_prefix(inc: &Incident) -> String {
    inc.notify_contract
        .as_deref()
        .unwrap_or(&inc.contract)
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

/// Start the pipeline task. `gateway` is this process's own API or a
/// remote one. With `role` (several nodes on one PostgreSQL) the engine
/// runs only while this node holds the `pipeline` lease; otherwise what
/// reaches this node for it is left in `pipeline_inbox` for the node that
/// does (`crate::cluster::role`, `docs/deployment.md`).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    store: Store,
    plans: Plans,
    gateway: GatewayClient,
    secrets: Vec<String>,
    expire_ms: i64,
    recovered_wait_ms: i64,
    shutdown: CancellationToken,
    role: Option<Arc<Role>>,
) -> Result<Arc<Pipeline>, crate::store::StoreError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let seq = store.max_timeline_seq().await? + 1;
    let p = Arc::new(Pipeline {
        intake: super::group_commit::GroupCommit::start(store.clone()),
        store,
        plans,
        secrets,
        metrics: Metrics::default(),
        inputs: tx,
        kick: Notify::new(),
        mail_wake: Notify::new(),
        seq: AtomicI64::new(seq),
        role: role.clone(),
    });
    let times = (expire_ms, recovered_wait_ms);
    match role {
        None => {
            let task = Task::restore(p.clone(), gateway, times, None).await?;
            tokio::spawn(async move { task.run(&mut rx, shutdown).await });
        }
        Some(role) => {
            tokio::spawn(lead(p.clone(), gateway, times, rx, shutdown, role));
        }
    }
    Ok(p)
}

/// Clustered: run the engine while this node holds the `pipeline` lease,
/// forward inputs to the inbox while it does not.
async fn lead(
    p: Arc<Pipeline>,
    gateway: GatewayClient,
    times: (i64, i64),
    mut rx: mpsc::UnboundedReceiver<Input>,
    shutdown: CancellationToken,
    role: Arc<Role>,
) {
    loop {
        let term = loop {
            tokio::select! {
                t = role.acquire() => match t {
                    Some(t) => break t,
                    None => return,
                },
                Some(i) = rx.recv() => forward(&p, i).await,
            }
        };
        // Other nodes wrote timeline lines meanwhile: continue after them.
        if let Ok(s) = p.store.max_timeline_seq().await {
            p.seq.fetch_max(s + 1, Ordering::Relaxed);
        }
        let task = match Task::restore(p.clone(), gateway.clone(), times, Some(term.clone())).await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "pipeline: cannot load its state; trying again");
                tokio::select! {
                    _ = term.token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if shutdown.is_cancelled() {
                    role.release(&term).await;
                    return;
                }
                continue;
            }
        };
        tracing::info!(epoch = term.fence.epoch, "pipeline: running on this node");
        task.run(&mut rx, term.token.clone()).await;
        if shutdown.is_cancelled() {
            role.release(&term).await;
            return;
        }
        role.stopped(&term, "the pipeline stopped");
    }
}

/// An input for the engine this node does not run, as stored in
/// `pipeline_inbox`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Forwarded {
    Outcome {
        incident: String,
        notification: String,
        acked_by: Option<String>,
        state: Option<String>,
    },
    Stray {
        incident: String,
        notification: String,
    },
    Close {
        incident: String,
        by: String,
    },
    SilenceAdded {
        silence: Silence,
    },
    SilenceRemoved {
        id: String,
    },
}

impl Forwarded {
    /// `None` for what only the node that asked can use.
    fn of(i: Input) -> Option<Forwarded> {
        Some(match i {
            Input::Outcome {
                incident,
                notification,
                outcome,
            } => {
                let (acked_by, state) = match outcome {
                    GatewayOutcome::Acked { by } => (by, None),
                    GatewayOutcome::Ended { state } => (None, Some(state)),
                };
                Forwarded::Outcome {
                    incident,
                    notification,
                    acked_by,
                    state,
                }
            }
            Input::Stray {
                incident,
                notification,
            } => Forwarded::Stray {
                incident,
                notification,
            },
            Input::Close {
                incident,
                by,
                reply,
            } => {
                // The node running the engine decides; this one can only
                // say the request is stored.
                let _ = reply.send(true);
                Forwarded::Close { incident, by }
            }
            Input::SilenceAdded(silence) => Forwarded::SilenceAdded { silence },
            Input::SilenceRemoved(id) => Forwarded::SilenceRemoved { id },
            Input::Notified { .. } | Input::ActionResult { .. } | Input::Reload => return None,
        })
    }

    fn input(self) -> Input {
        match self {
            Forwarded::Outcome {
                incident,
                notification,
                acked_by,
                state,
            } => Input::Outcome {
                incident,
                notification,
                outcome: match state {
                    Some(state) => GatewayOutcome::Ended { state },
                    None => GatewayOutcome::Acked { by: acked_by },
                },
            },
            Forwarded::Stray {
                incident,
                notification,
            } => Input::Stray {
                incident,
                notification,
            },
            Forwarded::Close { incident, by } => Input::Close {
                incident,
                by,
                reply: oneshot::channel().0,
            },
            Forwarded::SilenceAdded { silence } => Input::SilenceAdded(silence),
            Forwarded::SilenceRemoved { id } => Input::SilenceRemoved(id),
        }
    }
}

/// Store an input for the node that runs the engine. Answers to this
/// node's own earlier term (a call asked for, an action's result) are
/// dropped: the engine restored from the database asks again.
async fn forward(p: &Pipeline, i: Input) {
    let Some(f) = Forwarded::of(i) else {
        tracing::debug!("pipeline: an answer for an earlier term here dropped");
        return;
    };
    let Ok(body) = serde_json::to_string(&f) else {
        return;
    };
    let id = new_id("pin");
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        match p.store.pipeline_inbox_put(&id, now_ms(), &body).await {
            Ok(()) => {
                let _ = p.store.wake_nodes().await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pipeline: cannot leave an input for the running node; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!("pipeline: an input for the running node was lost");
}

struct Task {
    p: Arc<Pipeline>,
    /// Clustered: the `pipeline` lease every step is written under.
    term: Option<Term>,
    /// Rows of `pipeline_inbox` handled, deleted by the next step.
    inbox_done: Vec<String>,
    engine: Engine,
    gateway: GatewayClient,
    tickets: HashMap<String, String>,
    /// Incidents whose call must be cancelled once the gateway names it.
    cancel_on_confirm: HashSet<String>,
    /// The incidents of the current step, for the calls it asks for.
    snapshot: HashMap<String, Incident>,
    /// Stray notifications already asked to stop (each once).
    strays: HashSet<String>,
}

enum Effect {
    Notify(Box<Incident>),
    RunAction(Box<Incident>, String),
    Cancel(String, String),
}

impl Task {
    /// The engine with everything the database holds for it.
    async fn restore(
        p: Arc<Pipeline>,
        gateway: GatewayClient,
        (expire_ms, recovered_wait_ms): (i64, i64),
        term: Option<Term>,
    ) -> Result<Task, crate::store::StoreError> {
        let mut engine = Engine::new();
        engine.set_expire_ms(expire_ms);
        engine.set_recovered_wait_ms(recovered_wait_ms);
        let now = now_ms();
        let cfgs = p.contracts();
        let max_reopen = cfgs.values().map(|c| c.reopen_ms).max().unwrap_or(0);
        engine.set_contracts(now, cfgs);
        for h in p.store.heartbeats().await? {
            engine.restore_heartbeat(now, h);
        }
        let mut tickets = HashMap::new();
        if max_reopen > 0 {
            for r in p.store.recently_closed(now - max_reopen).await? {
                engine.restore(r.incident);
            }
        }
        for r in p.store.open_incidents().await? {
            if let Some(t) = r.ticket {
                tickets.insert(r.incident.id.clone(), t);
            }
            engine.restore(r.incident);
        }
        for s in p.store.silences(now).await? {
            let _ = engine.add_silence(s);
        }
        engine.lost_first_actions(now);
        Ok(Task {
            p,
            term,
            inbox_done: Vec::new(),
            engine,
            gateway,
            tickets,
            cancel_on_confirm: HashSet::new(),
            snapshot: HashMap::new(),
            strays: HashSet::new(),
        })
    }

    async fn run(mut self, rx: &mut mpsc::UnboundedReceiver<Input>, stop: CancellationToken) {
        // Restored incidents may have asked for calls again.
        if !self.flush(&stop).await {
            return;
        }
        loop {
            if stop.is_cancelled() {
                return;
            }
            if self.term.is_some() {
                self.read_inbox().await;
            }
            // Stored alerts first, in arrival order (an alert stored
            // before a window ended, e.g. its recovery, is seen before the
            // window end), then the window ends that are due, all written
            // in one step: one commit instead of two, and a backlog of
            // alerts (a storm) no longer holds a due call back until it
            // is read to the end.
            let mut more = false;
            match self.p.store.unhandled_alerts(500).await {
                Ok(alerts) if !alerts.is_empty() => {
                    let n = alerts.len();
                    for a in alerts {
                        let now = now_ms();
                        if let Some(old) = self.engine.needs_reopen(now, &a) {
                            if let Ok(Some(r)) = self.p.store.get_incident(&old).await {
                                if let Some(t) = r.ticket {
                                    self.tickets.insert(old.clone(), t);
                                }
                                self.engine.restore_closed(r.incident);
                            }
                        }
                        self.engine.handle_alert(now, &a);
                    }
                    self.p
                        .metrics
                        .alerts_handled
                        .fetch_add(n as u64, Ordering::Relaxed);
                    more = true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline: reading alerts failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let now = now_ms();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            if !self.flush(&stop).await {
                return;
            }
            let now = now_ms();
            if more || self.engine.poll_timeout().is_some_and(|t| t <= now) {
                continue;
            }
            let wait = self
                .engine
                .poll_timeout()
                .map_or(1_000, |t| (t - now).clamp(1, 1_000)) as u64;
            tokio::select! {
                _ = self.p.kick.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                Some(i) = rx.recv() => {
                    self.input(i);
                    while let Ok(i) = rx.try_recv() {
                        self.input(i);
                    }
                    if !self.flush(&stop).await {
                        return;
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Inputs other nodes left for the engine.
    async fn read_inbox(&mut self) {
        let rows = match self.p.store.pipeline_inbox(200).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "pipeline: reading the inbox failed");
                return;
            }
        };
        for (id, body) in rows {
            if self.inbox_done.contains(&id) {
                continue;
            }
            match serde_json::from_str::<Forwarded>(&body) {
                Ok(f) => self.input(f.input()),
                Err(e) => {
                    tracing::error!(id = %id, error = %e, "pipeline: an unreadable inbox row dropped")
                }
            }
            self.inbox_done.push(id);
        }
    }

    fn input(&mut self, i: Input) {
        let now = now_ms();
        match i {
            Input::Notified { incident, result } => match result {
                NotifyResult::Accepted(n) => {
                    let asked = self.engine.handle_notified(now, &incident, &n);
                    // The engine cancels what it still holds; a closed
                    // incident it forgot is cancelled from here.
                    if self.cancel_on_confirm.remove(&incident) && !asked {
                        let g = self.gateway.clone();
                        tokio::spawn(async move { g.cancel(&n, "recovered").await });
                    }
                }
                NotifyResult::Refused(why) => {
                    self.engine.handle_notify_refused(now, &incident, &why)
                }
            },
            Input::Outcome {
                incident,
                notification,
                outcome,
            } => self
                .engine
                .handle_outcome(now, &incident, &notification, outcome),
            Input::Close {
                incident,
                by,
                reply,
            } => {
                let _ = reply.send(self.engine.handle_close(now, &incident, &by));
            }
            Input::ActionResult { incident, report } => {
                self.engine.handle_action_result(now, &incident, report)
            }
            Input::Stray {
                incident,
                notification,
            } => {
                if self.strays.len() >= 10_000 {
                    self.strays.clear();
                }
                if self.strays.insert(notification.clone()) {
                    tracing::warn!(
                        incident = %incident,
                        notification = %notification,
                        "the gateway is calling for a closed incident; cancelling it"
                    );
                    let g = self.gateway.clone();
                    tokio::spawn(
                        async move { g.cancel(&notification, "the incident is closed").await },
                    );
                }
            }
            Input::SilenceAdded(s) => {
                let _ = self.engine.add_silence(s);
            }
            Input::SilenceRemoved(id) => {
                self.engine.remove_silence(&id);
            }
            Input::Reload => self.engine.set_contracts(now, contracts(&self.p.plans)),
        }
    }

    /// Write what the engine decided, then ask the gateway. `false` when
    /// the work must stop here: `stop` was cancelled before the step was
    /// stored, or (clustered) another node holds the pipeline now and the
    /// database refused the step.
    async fn flush(&mut self, stop: &CancellationToken) -> bool {
        let now = now_ms();
        let mut w = PipelineWrite {
            now_ms: now,
            fence: self.term.as_ref().map(|t| t.fence.clone()),
            ..Default::default()
        };
        let mut outputs = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            outputs.push(o);
        }
        if outputs.is_empty() && !self.engine.has_dirty() && self.inbox_done.is_empty() {
            return true;
        }
        w.inbox_done = std::mem::take(&mut self.inbox_done);
        w.incidents = self.engine.take_dirty();
        w.heartbeats = self.engine.take_heartbeats_dirty();
        self.snapshot = w
            .incidents
            .iter()
            .map(|i| (i.id.clone(), i.clone()))
            .collect();
        let mut effects = Vec::new();
        for o in outputs {
            match o {
                Output::Alert { alert, disposition } => w.dispositions.push((alert, disposition)),
                Output::Opened { incident } => {
                    if let Some(inc) = self.snapshot.get(&incident) {
                        w.new_tickets.push((incident.clone(), ticket_prefix(inc)));
                        w.ticket_lines.insert(incident.clone(), self.p.next_seq());
                        self.p
                            .metrics
                            .incidents_opened
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Output::Timeline {
                    incident,
                    at_ms,
                    kind,
                    text,
                    alert,
                } => {
                    // Each step of an incident's story is a log line with
                    // its id (a field in JSON logs), not only a row.
                    if kind != "alert" && kind != "held" {
                        tracing::info!(incident = %incident, kind, "{text}");
                    }
                    w.timeline.push((
                        incident,
                        TimelineRow {
                            id: new_id("tl"),
                            seq: self.p.next_seq(),
                            at_ms,
                            kind: kind.to_string(),
                            text,
                            alert,
                            data: None,
                        },
                    ))
                }
                Output::Notify { incident } => {
                    let inc = self
                        .snapshot
                        .get(&incident)
                        .cloned()
                        .or_else(|| self.engine.incident(&incident).cloned());
                    if let Some(inc) = inc {
                        effects.push(Effect::Notify(Box::new(inc)));
                    }
                }
                Output::Cancel {
                    incident,
                    notification,
                    reason,
                } => match notification {
                    Some(n) => effects.push(Effect::Cancel(n, reason)),
                    None => {
                        self.cancel_on_confirm.insert(incident);
                    }
                },
                Output::RunAction { incident, action } => {
                    let inc = self
                        .snapshot
                        .get(&incident)
                        .cloned()
                        .or_else(|| self.engine.incident(&incident).cloned());
                    if let Some(inc) = inc {
                        effects.push(Effect::RunAction(Box::new(inc), action));
                    }
                }
                Output::Mail {
                    incident,
                    event,
                    detail,
                } => {
                    let inc = self
                        .snapshot
                        .get(&incident)
                        .or_else(|| self.engine.incident(&incident));
                    if let Some(inc) = inc {
                        w.mails
                            .push(super::mail_outbox::queue(&self.p, inc, event, detail));
                    }
                }
                Output::Closed { incident } => {
                    // An external ticket's number replaces the embedded one
                    // in the store (tickets::sync).
                    if let Ok(Some(t)) = self
                        .p
                        .store
                        .get_incident(&incident)
                        .await
                        .map(|r| r.and_then(|r| r.ticket))
                    {
                        self.tickets.insert(incident.clone(), t);
                    }
                    w.timeline.push((
                        incident.clone(),
                        TimelineRow {
                            id: new_id("tl"),
                            seq: self.p.next_seq(),
                            at_ms: now,
                            kind: "ticket".into(),
                            text: format!(
                                "ticket {} closed and released",
                                self.tickets.get(&incident).map_or("?", String::as_str)
                            ),
                            alert: None,
                            data: None,
                        },
                    ));
                }
            }
        }
        // One commit per step: the ticket line of each new incident is in
        // it too (a commit is an fsync on the single SQLite connection
        // the intake and the gateway share).
        let mut wait = Duration::from_millis(100);
        let taken = loop {
            if stop.is_cancelled() && self.term.is_some() {
                return false;
            }
            match self.p.store.apply_pipeline(&w).await {
                Ok(t) => break t,
                Err(crate::store::StoreError::Fenced(_)) => {
                    if let (Some(role), Some(t)) = (&self.p.role, &self.term) {
                        role.fenced(t);
                    }
                    return false;
                }
                Err(e) => {
                    self.p.metrics.store_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "pipeline: the store did not take a step; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        if !w.mails.is_empty() {
            self.p.mail_wake.notify_one();
        }
        for (incident, ticket) in taken {
            self.tickets.insert(incident, ticket);
        }
        for inc in &w.incidents {
            if !inc.state.is_open() {
                self.tickets.remove(&inc.id);
            }
        }
        for e in effects {
            match e {
                Effect::Notify(inc) => self.notify(*inc),
                Effect::RunAction(inc, action) => self.run_action(*inc, action),
                Effect::Cancel(n, reason) => {
                    let g = self.gateway.clone();
                    tokio::spawn(async move { g.cancel(&n, &reason).await });
                }
            }
        }
        true
    }

    /// A first-level action, through the gateway's action API.
    fn run_action(&self, inc: Incident, action: String) {
        let ticket = self.tickets.get(&inc.id).cloned();
        let (g, p) = (self.gateway.clone(), self.p.clone());
        tokio::spawn(async move {
            let report = match p.plan(&inc.contract) {
                Some(plan) => {
                    super::action_run::run(&g, &plan, &action, &inc, ticket.as_deref(), true).await
                }
                None => ActionReport {
                    ok: false,
                    text: format!("contract {} has no dialplan now", inc.contract),
                    steps: Vec::new(),
                    automatic: true,
                },
            };
            p.send(Input::ActionResult {
                incident: inc.id,
                report,
            });
        });
    }

    fn notify(&self, inc: Incident) {
        let Some(contract) = inc.notify_contract.clone() else {
            return;
        };
        let ticket = self
            .tickets
            .get(&inc.id)
            .cloned()
            .unwrap_or_else(|| inc.id.clone());
        let plan = self.p.plan(&contract);
        // Only the variables the called contract's dialplan declares: the
        // gateway refuses others.
        let mut variables = serde_json::Map::new();
        if let Some(plan) = &plan {
            for v in &plan.variables {
                if let Some(val) = inc.labels.get(v) {
                    variables.insert(v.clone(), Value::String(val.chars().take(256).collect()));
                }
            }
        }
        let japanese = plan
            .as_ref()
            .is_some_and(|p| p.language == crate::ivr::dialplan::Language::Ja);
        let summary = if inc.recovery_notice {
            if japanese {
                format!("復旧しました。{}", inc.summary)
            } else {
                format!("Recovered: {}", inc.summary)
            }
        } else {
            inc.summary.clone()
        };
        // What the first-level action did, before the rest of the message.
        let summary = match (&inc.first_action, &plan) {
            (Some(fa), Some(plan)) if fa.result.is_some() && !inc.recovery_notice => {
                let ok = fa.state == super::engine::FirstActionState::Succeeded;
                let said = super::action_run::spoken(
                    plan,
                    &fa.action,
                    ok,
                    fa.result.as_deref().unwrap_or(""),
                );
                format!("{said} {summary}")
            }
            _ => summary,
        };
        let body = json!({
            "contract": contract,
            "ticket": ticket,
            "severity": if inc.recovery_notice { "info" } else { inc.severity.as_str() },
            "host": if inc.host.is_empty() { "-" } else { inc.host.as_str() },
            "summary": summary.chars().take(500).collect::<String>(),
            "variables": variables,
        });
        let key = inc.idempotency_key();
        let (g, p) = (self.gateway.clone(), self.p.clone());
        p.metrics.notifies.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut body = body;
            // An external ticket (tickets::sync) may have replaced the
            // number since the occurrence.
            if let Ok(Some(r)) = p.store.get_incident(&inc.id).await {
                if let Some(t) = r.ticket {
                    body["ticket"] = Value::String(t);
                }
            }
            let result = g.notify(&body, &key, Duration::from_secs(600)).await;
            p.send(Input::Notified {
                incident: inc.id,
                result,
            });
        });
    }
}

/// Alert mails: a recipient names its contract (`[pipeline.mail] to`);
/// a mail is stored (raw, and the alert read from it, or the reason no
/// rule could) before the SMTP 250.
impl super::smtp::MailSink for Pipeline {
    fn contract_for(&self, rcpt: &str) -> Option<String> {
        let rcpt = rcpt.trim().to_ascii_lowercase();
        self.contracts()
            .into_iter()
            .find(|(_, c)| c.mail.to.contains(&rcpt))
            .map(|(name, _)| name)
    }

    fn deliver(&self, mail: super::smtp::InboundMail) -> super::smtp::DeliverFuture<'_> {
        Box::pin(async move {
            let cfgs = self.contracts();
            let mut any = false;
            // One record per contract addressed (two contracts' addresses
            // on one mail are two alerts).
            let mut seen = HashSet::new();
            for (rcpt, contract) in &mail.rcpts {
                if !seen.insert(contract.clone()) {
                    continue;
                }
                let Some(cfg) = cfgs.get(contract) else {
                    continue;
                };
                let id = super::alert::new_id(mail.received_ms);
                let read =
                    super::mail::read_mail(&mail.raw, contract, &cfg.mail, id, mail.received_ms);
                let (alert, reason, subject, from) = match read {
                    super::mail::MailRead::Alert(a) => {
                        let subject = a.labels.get("mail_subject").cloned().unwrap_or_default();
                        let from = a.labels.get("mail_from").cloned().unwrap_or_default();
                        (Some(a), None, subject, from)
                    }
                    super::mail::MailRead::Unparsed {
                        reason,
                        subject,
                        from,
                    } => (None, Some(reason), subject, from),
                };
                let row = crate::store::MailRow {
                    id: new_id("ml"),
                    contract: contract.clone(),
                    from: if from.is_empty() {
                        mail.from.clone()
                    } else {
                        from
                    },
                    rcpt: rcpt.clone(),
                    subject,
                    raw: mail.raw.clone(),
                    received_ms: mail.received_ms,
                    alert_id: alert.as_ref().map(|a| a.id.clone()),
                    reason: reason.clone(),
                };
                if let Some(r) = &reason {
                    tracing::warn!(contract = %contract, reason = %r, "alert mail kept unparsed");
                }
                self.store
                    .insert_mail(&row, alert.as_ref())
                    .await
                    .map_err(|e| format!("the database did not take the mail: {e}"))?;
                if alert.is_some() {
                    any = true;
                    self.metrics.alerts_accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            if any {
                self.kick();
            }
            Ok(())
        })
    }
}

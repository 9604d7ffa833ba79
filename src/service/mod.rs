//! The service: accepts notifications (committed before the API answers),
//! runs each escalation, persists every step, resumes after a restart, and
//! feeds the webhook outbox.

pub mod accept_batch;
mod actions;
pub mod admission;
pub use actions::{RunError, RunReply, RunRequest};
pub mod input;
pub mod journal;
mod observer;
pub mod sweeper;
pub mod trunk;
pub mod webhook;
pub mod write_queue;
pub mod writer;

use observer::StoreObserver;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::driver::Gateway;
use crate::ivr::escalation::{Escalation, Final};
use crate::ivr::registry::Registry;
use crate::runner::{now_ms, Notification, Observer, Script};
use crate::store::{new_id, AcceptInsert, AcceptRow, KeyClaim, NotificationRow, Store, StoreError};
use crate::tts::Tts;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub calls_by_outcome: Mutex<HashMap<String, u64>>,
    pub active_calls: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub webhook_gave_up: AtomicU64,
    pub api_requests: AtomicU64,
    pub api_latency_us_total: AtomicU64,
    pub tts_fallbacks: AtomicU64,
}

/// Why a notification was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("unknown contract {0:?}")]
    UnknownContract(String),
    #[error("Idempotency-Key reused with a different request body")]
    KeyMismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    KeyInProgress,
    /// Another notification for the contract + ticket was active when
    /// this one was stored and ended before it could be returned instead.
    #[error("another notification for this contract and ticket just ended; send it again")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running service.
pub struct Service {
    pub config: Config,
    pub store: Store,
    pub registry: Registry,
    pub gateway: Gateway,
    pub tts: Arc<Tts>,
    pub metrics: Metrics,
    /// Writes what escalations report, in order, without making them wait.
    pub writer: writer::Writer,
    /// Stores accepted notifications, requests arriving together in one
    /// commit.
    pub accepts: accept_batch::AcceptBatcher,
    /// Runs maintenance actions, one per contract, host and flow.
    pub actions: Arc<crate::action::Actions>,
    running: Mutex<HashMap<String, watch::Sender<Option<crate::runner::Stop>>>>,
    pub outbox_kick: Notify,
    pub shutdown: CancellationToken,
    pub tasks: tokio_util::task::TaskTracker,
    /// Bounds how many escalations dial at once (see [`admission`]).
    pub slots: admission::Slots,
    /// The alert pipeline in this process, when it runs here.
    pub pipeline: std::sync::OnceLock<Arc<crate::pipeline::driver::Pipeline>>,
    /// Where this process's pipeline takes the gateway's webhooks.
    pub pipeline_webhook: std::sync::OnceLock<String>,
    /// This node's leases, when several nodes share a PostgreSQL
    /// (`crate::cluster`).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Node>>,
    /// Console sessions and the live event feed of its board.
    pub console: crate::console::Console,
    /// What trunk keepalive found (`[trunks.X] keepalive`).
    pub trunk_health: Arc<crate::sip::keepalive::Board>,
    /// Trunk channel limits (`[trunks.X] max_channels`, `max_cps`).
    pub channels: Arc<crate::channels::Channels>,
}

/// This node as the owner stored with an accepted notification, when
/// clustered.
fn owner_of(cluster: Option<&Arc<crate::cluster::Node>>) -> Option<(String, i64)> {
    cluster.map(|c| {
        let (id, ttl) = c.owner();
        (id.to_string(), ttl)
    })
}

/// The stop a stored row already asks for (its cancel reason).
fn stop_of(row: &NotificationRow) -> Option<crate::runner::Stop> {
    row.cancel_reason.clone().map(crate::runner::Stop::Cancel)
}

/// State names stored for each ending.
pub fn final_state(f: &Final) -> &'static str {
    match f {
        Final::Acked { .. } => "acked",
        Final::Action { .. } => "action_taken",
        Final::Exhausted { .. } => "exhausted",
        Final::Cancelled { .. } => "cancelled",
    }
}

impl Service {
    pub fn new(
        config: Config,
        store: Store,
        registry: Registry,
        gateway: Gateway,
        tts: Tts,
        writer: writer::Writer,
    ) -> Arc<Service> {
        let actions = Arc::new(crate::action::Actions::with_store(store.clone()));
        let slots = admission::Slots::new(config.limits.max_dialling);
        let channels = crate::channels::Channels::new(&config.trunks);
        let accepts = accept_batch::AcceptBatcher::new(store.clone());
        Arc::new(Service {
            config,
            accepts,
            store,
            registry,
            gateway,
            tts: Arc::new(tts),
            metrics: Metrics::default(),
            writer,
            actions,
            running: Mutex::new(HashMap::new()),
            outbox_kick: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            slots,
            pipeline: std::sync::OnceLock::new(),
            pipeline_webhook: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            console: crate::console::Console::default(),
            trunk_health: Arc::default(),
            channels,
        })
    }

    /// A contract's own target, else this process's pipeline for the
    /// contracts it calls, else the default target.
    pub fn webhook_url(&self, contract: &str) -> Option<String> {
        if let Some(u) = self.config.webhooks.contracts.get(contract) {
            return Some(u.clone());
        }
        if let Some(u) = self.pipeline_webhook.get() {
            let snapshot = self.registry.snapshot();
            let called_by_pipeline = snapshot.values().any(|p| {
                p.pipeline.as_ref().is_some_and(|c| {
                    p.contract == contract || c.monitoring_contract.as_deref() == Some(contract)
                })
            });
            if called_by_pipeline {
                return Some(u.clone());
            }
        }
        self.config.webhooks.url.clone()
    }

    fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<crate::runner::Stop>>>>
    {
        // A poisoned lock only means a holder panicked; the map is intact.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accept a notification: dedupe by Idempotency-Key (same body → the
    /// original) or by an active contract + ticket, store it, start it.
    /// Returns the row and whether it is new.
    pub async fn accept(
        self: &Arc<Self>,
        n: Notification,
        key: Option<&str>,
        body_hash: &str,
    ) -> Result<(NotificationRow, bool), AcceptError> {
        let plan = self
            .registry
            .get(&n.contract)
            .ok_or_else(|| AcceptError::UnknownContract(n.contract.clone()))?;
        let now = now_ms();
        if let Some(k) = key {
            if let Some(row) = self.accept_fresh_key(&n, &plan, k, body_hash, now).await? {
                return Ok((row, true));
            }
            match self.store.claim_key(k, body_hash, now).await? {
                KeyClaim::Claimed => {}
                KeyClaim::Done(id) => {
                    if let Some(row) = self.store.get_notification(&id).await? {
                        return Ok((row, false));
                    }
                }
                KeyClaim::Mismatch => return Err(AcceptError::KeyMismatch),
                KeyClaim::InProgress => return Err(AcceptError::KeyInProgress),
            }
        }
        let result = self.accept_claimed(n, plan, key, now).await;
        if result.is_err() {
            // A claimed key must not stay "in progress" after a failure:
            // the client's retry would get 409 for a minute.
            if let Some(k) = key {
                if let Err(e) = self.store.release_key(k).await {
                    tracing::warn!(error = %e, "cannot release an idempotency key; it frees itself in a minute");
                }
            }
        }
        result
    }

    /// The common case of a key: new, and no active notification for the
    /// contract + ticket. The notification and its key are one commit
    /// (one fsync on the way to the first INVITE instead of two). `None`
    /// when that case does not hold; nothing is written then. An active
    /// notification is not looked up first: the insert finds it (the
    /// unique index), one round trip fewer in the common case.
    async fn accept_fresh_key(
        self: &Arc<Self>,
        n: &Notification,
        plan: &Arc<crate::ivr::dialplan::Dialplan>,
        key: &str,
        body_hash: &str,
        now: i64,
    ) -> Result<Option<NotificationRow>, AcceptError> {
        let row = new_row(n, now);
        let insert = AcceptInsert::FreshKey {
            key: key.to_string(),
            hash: body_hash.to_string(),
        };
        if !self.store_and_start(&row, insert, plan).await? {
            return Ok(None);
        }
        Ok(Some(row))
    }

    /// Insert `row` and start it (false: the key or the active contract +
    /// ticket was taken, nothing started); clustered, this node claims it
    /// in the insert's commit.
    async fn store_and_start(
        self: &Arc<Self>,
        row: &NotificationRow,
        insert: AcceptInsert,
        plan: &Arc<crate::ivr::dialplan::Dialplan>,
    ) -> Result<bool, crate::store::StoreError> {
        // Owned here before the insert is sent: a racing request for the
        // same contract + ticket that finds the row committed but not yet
        // started must see it owned (its duplicate), never abandoned (it
        // would fail it and start a second notification). Dropped
        // (unregistered) when the insert fails or this request goes away.
        let owned = self.own(&row.id);
        let cluster = self.cluster.get();
        let sent = cluster.map(|c| c.send_time());
        let stored = self
            .accepts
            .store(AcceptRow {
                row: row.clone(),
                insert,
                owner: owner_of(cluster),
            })
            .await?;
        if let (true, Some(c), Some(sent)) = (stored, cluster, sent) {
            c.inserted(&row.id, sent);
        }
        if stored {
            match owned {
                Some(owned) => self.run(owned, row.clone(), plan.clone(), None),
                // A new id is never running already; start it the usual way.
                None => self.start(row.clone(), plan.clone(), None),
            }
        }
        Ok(stored)
    }

    async fn accept_claimed(
        self: &Arc<Self>,
        n: Notification,
        plan: Arc<crate::ivr::dialplan::Dialplan>,
        key: Option<&str>,
        now: i64,
    ) -> Result<(NotificationRow, bool), AcceptError> {
        // The insert is tried first: in the common case (no active
        // notification for the contract + ticket) that is the only round
        // trip; the unique index tells when there is one.
        let (mut abandoned_failed, mut lost_to_ended) = (false, false);
        loop {
            let row = new_row(&n, now);
            let cluster = self.cluster.get();
            // Committed (and, clustered, claimed by this node) before the
            // caller answers 202. A racing request for the same active
            // contract + ticket loses on the unique index and gets the
            // winner's notification.
            let insert = AcceptInsert::Claimed {
                key: key.map(str::to_string),
            };
            let stored = self.store_and_start(&row, insert, &plan).await;
            if matches!(stored, Ok(true)) {
                return Ok((row, true));
            }
            let Some(active) = self.store.find_active(&n.contract, &n.ticket).await? else {
                // The active one it lost to ended meanwhile: once more
                // (the ticket is free now), then the client retries.
                if matches!(stored, Ok(false)) && !lost_to_ended {
                    lost_to_ended = true;
                    continue;
                }
                return Err(match stored {
                    Err(e) => e.into(),
                    _ => AcceptError::Conflict,
                });
            };
            // Clustered, another node may run it; a dead one's lease runs
            // out and a live node takes it over, so it is never abandoned
            // for long.
            if abandoned_failed || stored.is_err() || self.is_owned(&active.id) || cluster.is_some()
            {
                if let Some(k) = key {
                    self.store.release_key(k).await?;
                }
                return Ok((active, false));
            }
            // No task runs it: a retry must not merge into a dead row. It
            // is ended `failed` (with its event) and the retry starts anew
            // (once).
            self.fail_abandoned(
                &active.id,
                "a re-sent alert found it with no task running it",
            )
            .await;
            abandoned_failed = true;
        }
    }

    /// Check a notification's variables and spoken length against the
    /// limits and its contract (see [`input`]); drops the variables the
    /// contract ignores and returns their names.
    pub async fn check_input(
        &self,
        plan: &Arc<crate::ivr::dialplan::Dialplan>,
        n: &mut Notification,
    ) -> Result<Vec<String>, input::InputError> {
        let ignored = input::check_variables(plan, n, &self.config.limits)?;
        if input::speech_surely_short(plan, n, &self.config.limits) {
            return Ok(ignored);
        }
        let (plan, n2, tts, limits) = (
            plan.clone(),
            n.clone(),
            self.tts.clone(),
            self.config.limits.clone(),
        );
        match tokio::task::spawn_blocking(move || input::check_speech(&plan, &n2, &tts, &limits))
            .await
        {
            Ok(r) => r?,
            // A crash while measuring is no reason to lose the page.
            Err(e) => tracing::error!(error = %e, "measuring the message crashed"),
        }
        Ok(ignored)
    }

    /// Run a notification this node just claimed (`crate::cluster`).
    pub(crate) fn start_claimed(
        self: &Arc<Self>,
        row: NotificationRow,
        plan: Arc<crate::ivr::dialplan::Dialplan>,
        resume: Option<Escalation>,
    ) {
        self.start(row, plan, resume)
    }

    /// Pass a cancel stored by another node to the escalation running
    /// here (once).
    pub(crate) fn deliver_ack(&self, id: &str, ack: &crate::ivr::escalation::OperatorAck) {
        if let Some(tx) = self.running().get(id) {
            if tx.borrow().is_none() {
                let _ = tx.send(Some(crate::runner::Stop::Ack(ack.clone())));
            }
        }
    }

    /// Pass a cancel stored by another node to the escalation running
    /// here (once).
    pub(crate) fn deliver_cancel(&self, id: &str, reason: &str) {
        if let Some(tx) = self.running().get(id) {
            if tx.borrow().is_none() {
                let _ = tx.send(Some(crate::runner::Stop::Cancel(reason.to_string())));
            }
        }
    }

    /// Register `id` as run by this process (see [`Service::is_owned`]);
    /// `None` when it already is (the sweeper and a request can both find
    /// the same row: never two escalations). Dropping the guard
    /// unregisters it.
    fn own(self: &Arc<Self>, id: &str) -> Option<(Owned, StopRx)> {
        let (tx, rx) = watch::channel(None);
        let mut running = self.running();
        if running.contains_key(id) {
            return None;
        }
        running.insert(id.to_string(), tx);
        let owned = Owned {
            svc: self.clone(),
            id: id.to_string(),
        };
        Some((owned, rx))
    }

    /// Run one escalation in the background.
    fn start(
        self: &Arc<Self>,
        row: NotificationRow,
        plan: Arc<crate::ivr::dialplan::Dialplan>,
        resume: Option<Escalation>,
    ) {
        if let Some(owned) = self.own(&row.id) {
            self.run(owned, row, plan, resume);
        }
    }

    /// Run one escalation this process owns ([`Service::own`]).
    fn run(
        self: &Arc<Self>,
        (owned, mut rx): (Owned, StopRx),
        row: NotificationRow,
        plan: Arc<crate::ivr::dialplan::Dialplan>,
        resume: Option<Escalation>,
    ) {
        // Clustered, only the holder of the lease runs it; losing the
        // lease stops it as a shutdown does.
        let stop = match self.cluster.get() {
            Some(c) => match c.lease(&row.id) {
                Some((_, token)) => token,
                None => {
                    tracing::warn!(notification = %row.id, "not started: this node does not hold its lease");
                    return;
                }
            },
            None => self.shutdown.clone(),
        };
        // The row's stored cancel, unless a stop came in since it was
        // registered (a cancel during its accept).
        if let (Some(stop), Some(tx)) = (stop_of(&row), self.running().get(&row.id)) {
            tx.send_if_modified(|s| {
                let free = s.is_none();
                if free {
                    *s = Some(stop);
                }
                free
            });
        }
        // The stop there now is read when the run starts; only later ones
        // are changes (as when the channel was made holding it).
        rx.mark_unchanged();
        let svc = self.clone();
        // Every log line of this escalation carries the notification.
        let span = tracing::info_span!("notification", id = %row.id, contract = %row.contract);
        self.tasks.spawn(tracing::Instrument::instrument(async move {
            // However the task ends (returns, or panics), the row is no
            // longer owned and the sweeper can see it.
            let _owned = owned;
            let mut rx = rx;
            // An operator's acknowledgement stored before this start (a
            // restart, or another node took the work) ends it as one.
            if resume.is_some() {
                if let Ok(Some(ack)) = svc.store.ack_request(&row.id).await {
                    if let Some(tx) = svc.running().get(&row.id) {
                        tx.send_replace(Some(crate::runner::Stop::Ack(ack)));
                    }
                }
            }
            // Wait for a dialling slot before anything costly; the row
            // stays `pending` meanwhile. Held until the task ends.
            let Some(_slot) = admission::wait(&svc, &row, &mut rx).await else {
                return;
            };
            let n = Notification {
                contract: row.contract.clone(),
                ticket: row.ticket.clone(),
                severity: row.severity.clone(),
                host: row.host.clone(),
                summary: row.summary.clone(),
                variables: serde_json::from_value(row.variables.clone()).unwrap_or_default(),
            };
            let obs = StoreObserver::new(svc.clone(), &row.id);
            // Fail closed: an unusable trunk never becomes a direct dial
            // without its proxy or credentials.
            let ((first_trunk, trunk), next_trunks) = match svc.trunks_for(&plan).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(notification = %row.id, trunk = %plan.trunk, error = %e, "the contract's trunk is unusable; not dialling");
                    svc.fail(&row.id, &obs, e.code(), &e.to_string()).await;
                    return;
                }
            };
            // Synthesis runs off the async workers and never holds the
            // INVITE: the message is synthesised sentence by sentence,
            // the first first, and the fixed phrases (menu, goodbye, ...)
            // are rendered behind it, while the first call rings; a call
            // waits for a phrase only when it is due (`Script::start`).
            let (tts, prompts) = (svc.tts.clone(), svc.config.prompts.clone());
            let message = match Script::message_job(&plan, &n, &prompts) {
                Some((m, synth)) => {
                    let synth = synth.with_limit(svc.config.limits.max_message.as_millis() as u64);
                    let (tts, span) = (tts.clone(), tracing::Span::current());
                    tokio::task::spawn_blocking(move || span.in_scope(|| synth.run(&tts)));
                    let (heard, obs) = (m.clone(), StoreObserver::new(svc.clone(), &row.id));
                    let started_us = crate::speech::now_us();
                    let counted = svc.clone();
                    tokio::spawn(async move {
                        let failed = crate::speech::report(heard, &obs, started_us).await;
                        counted.metrics.tts_fallbacks.fetch_add(failed as u64, Ordering::Relaxed);
                    });
                    Some(m)
                }
                None => None,
            };
            // The fixed phrases stop rendering when the notification
            // ends (or this node stops running it): nothing is made, and
            // no `audio.ready` said, for a notification that is over.
            let script = match Script::start(&plan, &n, tts, &prompts, message, stop.child_token()).await {
                Ok(s) => {
                    // `audio.ready` once every fixed phrase is rendered,
                    // with each said with the fallback (counted); the
                    // message's sentences are counted as their synthesis
                    // ends (above).
                    let (obs, counted) = (StoreObserver::new(svc.clone(), &row.id), svc.clone());
                    s.phrases_end.set_ready_task(Script::audio_ready(s.phrases.clone(), s.phrases_end.token(), move |p| async move {
                        counted.metrics.tts_fallbacks.fetch_add(p.fallbacks.len() as u64, Ordering::Relaxed);
                        obs.event(json!({"event": "audio.ready", "fallbacks": p.fallbacks})).await;
                    }));
                    Ok(s)
                }
                Err(e) => Err(e),
            };
            let script = match script {
                Ok(mut s) => {
                    // Lets a PBX log or a test tie each INVITE to its notification.
                    s.call_headers.push(("X-Callout-Notification".into(), row.id.clone()));
                    let base_headers = s.call_headers.clone();
                    s.next_trunks = next_trunks
                        .into_iter()
                        .map(|(name, t)| {
                            let prefs = plan.call_prefs.over(&t.prefs);
                            let mut extra_headers = base_headers.clone();
                            extra_headers.extend(prefs.headers());
                            crate::driver::TrunkHop {
                                name,
                                proxies: t.proxy.iter().chain(&t.alternates).copied().collect(),
                                credentials: t.credentials,
                                from_uri: prefs.from_uri(&plan.caller_id),
                                from_display: Some(
                                    prefs.from_display.clone().unwrap_or_else(|| plan.name.clone()),
                                ),
                                extra_headers,
                                codecs: prefs.codecs.clone(),
                                advertise: t.advertise,
                                transport: t.transport,
                                symmetric_rtp: t.symmetric_rtp,
                            }
                        })
                        .collect();
                    s.actions = svc.actions.clone();
                    s.pins = Arc::new(svc.store.clone());
                    s.notification_id = Some(row.id.clone());
                    s.lease_epoch = obs.epoch();
                    s.outbound_proxy = trunk.proxy;
                    s.failover = trunk.alternates.clone();
                    // The contract's caller identity and codecs over the trunk's.
                    let prefs = plan.call_prefs.over(&trunk.prefs);
                    s.call_headers.extend(prefs.headers());
                    s.prefs = prefs;
                    s.credentials = trunk.credentials;
                    s.advertise = trunk.advertise;
                    s.transport = trunk.transport;
                    // The trunk tried first (a down one is moved last), not
                    // necessarily the contract's own.
                    s.symmetric_rtp = trunk.symmetric_rtp;
                    // Counted against the trunk tried first (not always
                    // the contract's own), then wherever a failover moves
                    // the call (`channels::Held`).
                    let limited = std::iter::once(&first_trunk)
                        .chain(s.next_trunks.iter().map(|h| &h.name))
                        .any(|t| svc.channels.gated(t));
                    if limited {
                        s.channel = Some((svc.channels.clone(), crate::channels::Ask {
                            trunk: first_trunk.clone(),
                            id: row.id.clone(),
                            rank: admission::severity_rank(&row.severity),
                            created_ms: row.created_ms,
                        }));
                    }
                    s
                }
                Err(e) => {
                    tracing::error!(notification = %row.id, error = %e, "cannot prepare the audio; not dialling");
                    svc.fail(&row.id, &obs, "audio_unavailable", &e.to_string()).await;
                    return;
                }
            };
            let mut script = script;
            script.shutdown = stop.child_token();
            let phrases_end = script.phrases_end.clone();
            let fin = crate::runner::escalate(&svc.gateway, plan, Arc::new(script), rx, &obs, resume).await;
            // Stopped here (shutdown, lease lost) as well as ended: the
            // phrases left are not rendered (`escalate` ended them before
            // the final event of an ended one).
            phrases_end.end().await;
            // None: stopped by shutdown; the stored state resumes it later.
            // The final state queues behind the events, so it can never be
            // stored without them.
            if let Some(fin) = fin {
                obs.finish(&fin);
            }
        }, span));
    }

    /// A live task in this process runs this notification, or its last
    /// writes are still on their way to the store. One service per
    /// database (as resuming at start already assumes), so a row without
    /// either here is dead.
    pub fn is_owned(&self, id: &str) -> bool {
        self.running().contains_key(id) || self.writer.owns(id)
    }

    /// The proxy address and credentials of a trunk, or why it cannot be
    /// used (then nothing is dialled through it).
    pub async fn trunk(&self, name: &str) -> Result<trunk::Trunk, trunk::TrunkError> {
        let mut t = trunk::resolve(name, &self.config.trunks).await?;
        t.order_by(name, &self.trunk_health);
        Ok(t)
    }

    /// The trunks a contract's calls go through: its `trunk` then its
    /// `failover_trunks`, a trunk whose every proxy keepalive found down
    /// moved last; an unusable one is skipped (logged) unless none is
    /// usable, then the first one's error. The first, and the rest in
    /// order, with their names.
    #[allow(clippy::type_complexity)]
    pub async fn trunks_for(
        &self,
        plan: &crate::ivr::dialplan::Dialplan,
    ) -> Result<((String, trunk::Trunk), Vec<(String, trunk::Trunk)>), trunk::TrunkError> {
        let mut usable = Vec::new();
        let mut first_error = None;
        for name in std::iter::once(&plan.trunk).chain(&plan.failover_trunks) {
            match self.trunk(name).await {
                Ok(t) => usable.push((name.clone(), t)),
                Err(e) => {
                    tracing::warn!(trunk = %name, error = %e, "trunk unusable; skipped");
                    first_error.get_or_insert(e);
                }
            }
        }
        if usable.is_empty() {
            return Err(
                first_error.unwrap_or_else(|| trunk::TrunkError::NotConfigured(plan.trunk.clone()))
            );
        }
        // Down trunks last, the order otherwise kept (a stable sort).
        usable.sort_by_key(|(name, _)| self.trunk_health.all_down(name));
        let mut it = usable.into_iter();
        let first = it.next().expect("not empty");
        Ok((first, it.collect()))
    }

    /// Contracts that cannot dial now, with the reason (their trunk is
    /// unusable), for `/readyz`.
    pub async fn undialable_contracts(&self) -> std::collections::BTreeMap<String, String> {
        let mut by_trunk: std::collections::BTreeMap<String, Option<String>> = Default::default();
        let mut out = std::collections::BTreeMap::new();
        for plan in self.registry.snapshot().values() {
            let names: Vec<&String> = std::iter::once(&plan.trunk)
                .chain(&plan.failover_trunks)
                .collect();
            for name in &names {
                if !by_trunk.contains_key(*name) {
                    let r = match self.trunk(name).await {
                        Err(e) => Some(e.to_string()),
                        Ok(_) if self.trunk_health.all_down(name) => Some(format!(
                            "trunk {name:?}: every proxy is down (OPTIONS keepalive)"
                        )),
                        Ok(_) => None,
                    };
                    by_trunk.insert((*name).clone(), r);
                }
            }
            // Undialable only when no trunk of it is usable; the reason
            // given is its own trunk's.
            let all_bad = names
                .iter()
                .all(|n| matches!(by_trunk.get(*n), Some(Some(_))));
            if let (true, Some(Some(why))) = (all_bad, by_trunk.get(&plan.trunk)) {
                out.insert(plan.contract.clone(), why.clone());
            }
        }
        out
    }

    /// End a notification no task owns (see [`Service::is_owned`]).
    pub async fn fail_abandoned(self: &Arc<Self>, id: &str, detail: &str) {
        tracing::error!(notification = %id, "{detail}; failing it");
        let obs = StoreObserver::new(self.clone(), id);
        self.fail(id, &obs, "abandoned", detail).await;
    }

    /// End a notification that cannot be dialled: `notification.failed`
    /// (stored and sent as a webhook) and the final state `failed`, so it
    /// neither stays pending nor takes a re-sent alert for its ticket.
    async fn fail(&self, id: &str, obs: &StoreObserver, reason: &str, detail: &str) {
        let fin = json!({"state": "failed", "reason": reason, "detail": detail, "at_ms": now_ms()});
        // Clustered, under the lease's epoch like every other write: a
        // node that lost the notification (or never held it) cannot end it.
        if self.cluster.get().is_some() && obs.epoch().is_none() {
            tracing::warn!(notification = %id, "not failing a notification this node holds no lease on");
            return;
        }
        match self
            .store
            .finish_active_fenced(id, "failed", &fin, now_ms(), obs.epoch())
            .await
        {
            Ok(true) => {}
            // It ended meanwhile (that ending stands), or another node
            // claimed it since.
            Ok(false) => {
                if let (Some(c), Some(_)) = (self.cluster.get(), obs.epoch()) {
                    c.metrics
                        .fencing_rejections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return;
            }
            Err(e) => {
                tracing::error!(notification = %id, error = %e, "cannot store the failed state")
            }
        }
        obs.event(
            json!({"event": "notification.failed", "reason": reason, "detail": detail, "at_ms": 0}),
        )
        .await;
        self.outbox_kick.notify_one();
    }

    /// Cancel an escalation; `Ok(false)` when it had already ended.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        let accepted = self.store.request_cancel(id, reason, now_ms()).await?;
        if accepted {
            if let Some(tx) = self.running().get(id) {
                let _ = tx.send(Some(crate::runner::Stop::Cancel(reason.to_string())));
            }
        }
        Ok(accepted)
    }

    /// An operator acknowledges for someone on the phone: stored first
    /// (a restart or another node resumes it as an acknowledgement),
    /// then handed to the running escalation. `Ok(false)` when the
    /// notification had ended or was already being stopped.
    pub async fn acknowledge(
        &self,
        id: &str,
        ack: &crate::ivr::escalation::OperatorAck,
    ) -> Result<bool, StoreError> {
        let accepted = self.store.request_ack(id, ack, now_ms()).await?;
        if accepted {
            if let Some(tx) = self.running().get(id) {
                // Replaces nothing: the store took it only if no stop was asked.
                let _ = tx.send(Some(crate::runner::Stop::Ack(ack.clone())));
            }
        }
        Ok(accepted)
    }

    /// After a start: continue every notification that was not finished.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        actions::recover(self).await;
        let mut n = 0;
        for row in self.store.unfinished().await? {
            let Some(plan) = self.registry.get(&row.contract) else {
                tracing::error!(notification = %row.id, contract = %row.contract, "cannot resume: contract no longer exists");
                continue;
            };
            let resume = row
                .escalation
                .as_deref()
                .and_then(|s| serde_json::from_str::<Escalation>(s).ok());
            tracing::info!(notification = %row.id, "resuming");
            self.start(row, plan, resume);
            n += 1;
        }
        Ok(n)
    }

    /// Render every dialplan's fixed phrases into the cache, off the
    /// async workers, so the first call of each contract does not wait for
    /// synthesis. Run at start and after each reload.
    pub fn prewarm(self: &Arc<Self>) {
        let svc = self.clone();
        self.tasks.spawn(async move {
            let plans = svc.registry.snapshot();
            let tts = svc.tts.clone();
            let r = tokio::task::spawn_blocking(move || {
                plans
                    .values()
                    .map(|p| (p.contract.clone(), tts.prewarm(p)))
                    .collect::<Vec<_>>()
            })
            .await;
            for (contract, result) in r.unwrap_or_default() {
                match result {
                    Ok(n) => tracing::info!(%contract, phrases = n, "fixed phrases ready"),
                    Err(e) => tracing::error!(%contract, error = %e, "the contract's voice does not work; calls will use the recorded fallback"),
                }
            }
        });
    }

    pub fn active_escalations(&self) -> usize {
        self.running().len()
    }
}

/// What stops a running escalation (a cancel, an operator's ack).
type StopRx = watch::Receiver<Option<crate::runner::Stop>>;

/// Removes a notification from the running map when its task ends.
struct Owned {
    svc: Arc<Service>,
    id: String,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.svc.running().remove(&self.id);
    }
}

/// A new notification's row, `pending`.
fn new_row(n: &Notification, now: i64) -> NotificationRow {
    NotificationRow {
        id: new_id("ntf"),
        contract: n.contract.clone(),
        ticket: n.ticket.clone(),
        severity: n.severity.clone(),
        host: n.host.clone(),
        summary: n.summary.clone(),
        variables: serde_json::to_value(&n.variables).unwrap_or_default(),
        state: "pending".into(),
        final_state: None,
        escalation: None,
        cancel_reason: None,
        created_ms: now,
        updated_ms: now,
    }
}

/// The SHA-256 of a request body, for idempotency.
pub fn body_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

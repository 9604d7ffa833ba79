//! Work one node at a time carries out for the whole database (a named
//! lease in `work_leases`): the pipeline engine (`pipeline`), the mail
//! outbox (`mail_outbox`), the ticket sync (`ticket_sync`). Each node
//! runs a [`Role`] per such work: it claims the lease when it is free or
//! has run out, renews it every `heartbeat`, and gives it up by its own
//! monotonic clock `lease_ttl - margin` after the last renewal that
//! succeeded (the same sans-IO [`Leases`] as the notifications), before
//! the database lets another node claim it. The holder's work runs under
//! a [`Term`]: its token is cancelled when the lease is lost, and every
//! write it makes carries the term's [`Fence`], refused by the database
//! once another node claimed the lease. At shutdown the lease is handed
//! back at once ([`Role::release`]).
//!
//! Different roles are claimed independently, so with three nodes the
//! three kinds of work usually land on different nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::lease::Leases;
use super::ClusterConfig;
use crate::store::{Fence, Store};

/// One try of a lease statement: longer counts as a failure.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// A time this node holds the lease.
#[derive(Debug, Clone)]
pub struct Term {
    pub fence: Fence,
    /// Cancelled when the lease is lost (or the service shuts down).
    pub token: CancellationToken,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RoleMetrics {
    pub claims: AtomicU64,
    pub takeovers: AtomicU64,
    pub lost: AtomicU64,
    /// Writes of this node's work the database refused by the fencing
    /// token (a term this node had already given up included).
    pub fenced: AtomicU64,
}

/// This node's side of one named lease.
pub struct Role {
    pub name: &'static str,
    node: String,
    ttl_ms: i64,
    heartbeat: Duration,
    poll: Duration,
    store: Store,
    origin: Instant,
    leases: Mutex<Leases>,
    term: watch::Sender<Option<Term>>,
    kick: Notify,
    shutdown: CancellationToken,
    pub metrics: RoleMetrics,
}

impl Role {
    /// The role `name` for this node, and its task started; `None` when
    /// not clustered (the work then runs here unconditionally).
    pub fn start(
        name: &'static str,
        cfg: &ClusterConfig,
        store: &Store,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Role>> {
        let node = cfg.node_id.clone()?;
        if store.is_sqlite() || cfg.check().is_err() {
            return None;
        }
        let ttl_ms = cfg.lease_ttl.as_millis() as i64;
        let margin = (cfg.heartbeat.as_millis() as i64).min(ttl_ms / 2);
        let role = Arc::new(Role {
            name,
            node,
            ttl_ms,
            heartbeat: cfg.heartbeat,
            poll: cfg.poll,
            store: store.clone(),
            origin: Instant::now(),
            leases: Mutex::new(Leases::new(ttl_ms, margin)),
            term: watch::channel(None).0,
            kick: Notify::new(),
            shutdown: shutdown.clone(),
            metrics: RoleMetrics::default(),
        });
        tokio::spawn(role.clone().run());
        Some(role)
    }

    fn now(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the claim loop (another node handed work back).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The current term, if this node holds the lease.
    pub fn term(&self) -> Option<Term> {
        self.term.borrow().clone()
    }

    /// Wait until this node holds the lease; `None` at shutdown.
    pub async fn acquire(&self) -> Option<Term> {
        let mut rx = self.term.subscribe();
        tokio::select! {
            r = rx.wait_for(|t| t.is_some()) => r.ok().and_then(|t| t.clone()),
            _ = self.shutdown.cancelled() => None,
        }
    }

    /// Confirm the lease on the database before a side effect the fence
    /// cannot cover (a mail, a Redmine call): `false` when it is lost.
    pub async fn confirm(&self, term: &Term) -> bool {
        if term.token.is_cancelled() {
            return false;
        }
        let sent = self.now();
        // Never wait past this node's own deadline for the answer: the
        // work must stop by then (before the database lets another node
        // claim it), not a whole try later.
        let left = self.leases().next_deadline().map_or(0, |d| d - sent);
        let wait = TRY_TIMEOUT.min(Duration::from_millis(left.max(0) as u64));
        match tokio::time::timeout(wait, self.store.renew_work_lease(&term.fence)).await {
            Ok(Ok(true)) => {
                self.leases().confirmed(self.name, term.fence.epoch, sent);
                true
            }
            Ok(Ok(false)) => {
                self.lose(term.fence.epoch, "another node claimed it");
                false
            }
            // Unknown: the deadline by this node's clock decides.
            _ => {
                let now = self.now();
                let deadline = self.leases().next_deadline();
                if deadline.is_none_or(|d| now >= d) {
                    self.lose(term.fence.epoch, "not renewed in time");
                    return false;
                }
                !term.token.is_cancelled()
            }
        }
    }

    /// The work saw its write refused: another node has it.
    pub fn fenced(&self, term: &Term) {
        self.metrics.fenced.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(role = self.name, node = %self.node, epoch = term.fence.epoch, "a write was refused by the fencing token: another node holds this work");
        self.lose(term.fence.epoch, "a write was refused by the fencing token");
    }

    /// The work of `term` stopped by itself: let it be claimed again.
    pub fn stopped(&self, term: &Term, why: &str) {
        self.lose(term.fence.epoch, why);
    }

    fn lose(&self, epoch: i64, why: &str) {
        let ended = self
            .term
            .send_if_modified(|t| match t.take_if(|t| t.fence.epoch == epoch) {
                Some(t) => {
                    t.token.cancel();
                    true
                }
                None => false,
            });
        if ended {
            self.leases().release(self.name);
            self.metrics.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(role = self.name, node = %self.node, epoch, "lost the lease: {why}; stopping this work here");
        }
    }

    /// Hand the lease back at once (graceful shutdown, after the work
    /// stopped), so another node takes it within its `poll`.
    pub async fn release(&self, term: &Term) {
        self.leases().release(self.name);
        term.token.cancel();
        self.term.send_replace(None);
        match tokio::time::timeout(TRY_TIMEOUT, self.store.release_work_lease(&term.fence)).await {
            Ok(Ok(_)) => tracing::info!(role = self.name, node = %self.node, "lease handed back"),
            _ => {
                tracing::warn!(role = self.name, node = %self.node, "cannot hand the lease back; it expires")
            }
        }
    }

    async fn run(self: Arc<Role>) {
        loop {
            let held = self.term();
            let wait = if held.is_some() {
                self.heartbeat
            } else {
                self.poll
            };
            let deadline = self.leases().next_deadline();
            let wait = match deadline {
                Some(d) => wait.min(Duration::from_millis(
                    (d - self.now()).clamp(1, 60_000) as u64
                )),
                None => wait,
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.kick.notified() => {}
            }
            if self.shutdown.is_cancelled() {
                return;
            }
            match self.term() {
                Some(t) => {
                    self.confirm(&t).await;
                }
                None => self.claim().await,
            }
            let gone = self.leases().expired(self.now());
            if let (false, Some(t)) = (gone.is_empty(), self.term()) {
                self.lose(t.fence.epoch, "not renewed in time");
            }
        }
    }

    async fn claim(&self) {
        let sent = self.now();
        let r = tokio::time::timeout(
            TRY_TIMEOUT,
            self.store
                .claim_work_lease(self.name, &self.node, self.ttl_ms),
        )
        .await;
        let Ok(Ok(Some((epoch, prev)))) = r else {
            if let Ok(Err(e)) = r {
                tracing::debug!(role = self.name, error = %e, "claiming the lease failed");
            }
            return;
        };
        let answered = self.now();
        self.leases().claimed(self.name, epoch, sent, answered);
        self.metrics.claims.fetch_add(1, Ordering::Relaxed);
        match prev.as_deref() {
            Some(p) if p != self.node => {
                self.metrics.takeovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(role = self.name, from = %p, node = %self.node, epoch, "took over work whose lease ran out");
            }
            _ => tracing::info!(role = self.name, node = %self.node, epoch, "claimed"),
        }
        let term = Term {
            fence: Fence {
                name: self.name.to_string(),
                owner: self.node.clone(),
                epoch,
                ttl_ms: self.ttl_ms,
            },
            token: self.shutdown.child_token(),
        };
        self.term.send_replace(Some(term));
    }
}

/// Run `work` whenever this node holds `role` (or always, when not
/// clustered); a lost lease cancels the term's token, and the work is
/// started again at the next claim. At shutdown the lease is handed back
/// after the work returned.
pub async fn run_while_held<F, Fut>(
    role: Option<Arc<Role>>,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut(Option<Term>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(role) = role else {
        work(None, shutdown).await;
        return;
    };
    while let Some(term) = role.acquire().await {
        work(Some(term.clone()), term.token.clone()).await;
        if shutdown.is_cancelled() {
            role.release(&term).await;
            return;
        }
        // Stopped by a lost lease: wait for the next claim.
        role.stopped(&term, "its work stopped");
    }
}

//! The thin tokio driver of this node's leases ([`super::lease`] decides):
//! renewal every `heartbeat`, claims every `poll` or when `NOTIFY` wakes
//! it, the confirmation before each dial, and the hand-back at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lease::Leases;
use super::role::Role;
use super::ClusterConfig;
use crate::ivr::escalation::Escalation;
use crate::service::Service;
use crate::store::Store;

/// One try of a lease statement: longer counts as a failure.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Notifications claimed from another node (its lease had run out).
    pub takeovers: AtomicU64,
    /// Writes rejected because another node holds the lease now.
    pub fencing_rejections: AtomicU64,
    /// Leases this node lost (fenced, or not renewed in time).
    pub leases_lost: AtomicU64,
    /// Claims of work nobody held (new, released, or taken over).
    pub claims: AtomicU64,
    pub renewal_failures: AtomicU64,
}

/// This node in the cluster.
pub struct Node {
    pub id: String,
    ttl_ms: i64,
    heartbeat: Duration,
    poll: Duration,
    batch: i64,
    store: Store,
    origin: Instant,
    leases: Mutex<Leases>,
    /// Cancelled when the lease is lost: the escalation stops at once
    /// (ringing calls cancelled, answered ones hear the end of the
    /// sentence), as at shutdown. Children of the service's shutdown.
    tokens: Mutex<HashMap<String, CancellationToken>>,
    pub metrics: ClusterMetrics,
    kick: Notify,
    /// The pipeline's named leases on this node, woken with it.
    roles: Mutex<Vec<Arc<Role>>>,
    /// Stops renewing (after the leases were handed back).
    stop: CancellationToken,
    parent: CancellationToken,
}

impl Node {
    /// The node for this configuration, when it runs clustered: a
    /// `node_id` and a PostgreSQL store.
    pub fn new(
        cfg: &ClusterConfig,
        store: &Store,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Arc<Node>>> {
        let Some(id) = cfg.node_id.clone() else {
            return Ok(None);
        };
        cfg.check().map_err(anyhow::Error::msg)?;
        if store.is_sqlite() {
            tracing::warn!(node = %id, "[cluster] needs PostgreSQL; SQLite runs a single node");
            return Ok(None);
        }
        let ttl_ms = cfg.lease_ttl.as_millis() as i64;
        // Stop a heartbeat before the database could give the work away:
        // one missed renewal is survived, two are not.
        let margin = (cfg.heartbeat.as_millis() as i64).min(ttl_ms / 2);
        Ok(Some(Arc::new(Node {
            id,
            ttl_ms,
            heartbeat: cfg.heartbeat,
            poll: cfg.poll,
            batch: cfg.claim_batch.max(1) as i64,
            store: store.clone(),
            origin: Instant::now(),
            leases: Mutex::new(Leases::new(ttl_ms, margin)),
            tokens: Mutex::new(HashMap::new()),
            metrics: ClusterMetrics::default(),
            kick: Notify::new(),
            roles: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            parent: shutdown.clone(),
        })))
    }

    /// Monotonic ms since this node started (the lease core's clock).
    fn now(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A claim sent at `sent_at` gave `id`; its answer came back now.
    fn hold(&self, id: &str, epoch: i64, sent_at: i64) {
        let answered_at = self.now();
        self.leases().claimed(id, epoch, sent_at, answered_at);
        self.tokens()
            .insert(id.to_string(), self.parent.child_token());
    }

    /// The epoch and stop token of a lease this node holds.
    pub fn lease(&self, id: &str) -> Option<(i64, CancellationToken)> {
        let epoch = self.leases().epoch(id)?;
        let token = self.tokens().get(id).cloned()?;
        Some((epoch, token))
    }

    pub fn epoch(&self, id: &str) -> Option<i64> {
        self.leases().epoch(id)
    }

    /// Cancelled when this node stops its cluster work (shutdown).
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn leases_held(&self) -> usize {
        self.leases().len()
    }

    /// Stop the work of a lease this node no longer holds.
    fn lost(&self, id: &str, why: &str) {
        self.leases().release(id);
        if let Some(t) = self.tokens().remove(id) {
            t.cancel();
            self.metrics.leases_lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!(notification = %id, node = %self.id, "lease lost ({why}); stopping this notification's work here");
        }
    }

    /// The writer was told by the database that another node holds this
    /// notification now.
    pub fn fenced(&self, id: &str) {
        self.metrics
            .fencing_rejections
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(notification = %id, node = %self.id, "write rejected by the fencing token");
        self.lost(id, "a write was fenced");
    }

    /// The owner to store with a notification this node accepts: it is
    /// claimed in the insert's own commit.
    pub fn owner(&self) -> (&str, i64) {
        (&self.id, self.ttl_ms)
    }

    /// The monotonic time to pass to [`Node::inserted`]: taken before the
    /// insert is sent, so the lease's deadline here is never later than
    /// the database's.
    pub fn send_time(&self) -> i64 {
        self.now()
    }

    /// A notification stored with [`Node::owner`] in its insert at
    /// `sent_at`, its commit answered just now: this node holds it at
    /// epoch 1. (A renewal sent before now may have run before that
    /// commit, so it cannot tell that the lease was lost.)
    pub fn inserted(&self, id: &str, sent_at: i64) {
        self.hold(id, 1, sent_at);
        self.metrics.claims.fetch_add(1, Ordering::Relaxed);
    }

    /// The store writer applied fenced writes sent at `sent_at`: the
    /// database found each `(id, epoch)` still holding its lease then.
    pub fn writes_held<'a>(&self, held: impl IntoIterator<Item = (&'a str, i64)>, sent_at: i64) {
        let mut leases = self.leases();
        for (id, epoch) in held {
            leases.seen(id, epoch, sent_at);
        }
    }

    /// Before a dial, after a checkpoint submitted at `since`
    /// ([`Node::send_time`]): when a statement sent since then already
    /// found the lease held on the database (the checkpoint's own fenced
    /// write, usually, or a renewal) and the lease is within its
    /// deadline, that answer stands for [`Node::confirm`], one round trip
    /// and one commit fewer between a POST and its INVITE; otherwise (the
    /// checkpoint went to the journal, or is not written yet) as
    /// [`Node::confirm`].
    pub async fn confirm_after(&self, id: &str, since: i64) -> bool {
        if self.leases().held_since(id, since, self.now())
            && self.tokens().get(id).is_some_and(|t| !t.is_cancelled())
        {
            return true;
        }
        self.confirm(id).await
    }

    /// Before a dial: the lease is still this node's on the database.
    /// When it is not (fenced, or the database does not answer), the work
    /// stops here and `false` comes back: nothing may be dialled.
    pub async fn confirm(&self, id: &str) -> bool {
        let Some(epoch) = self.epoch(id) else {
            return false;
        };
        let sent = self.now();
        match tokio::time::timeout(
            TRY_TIMEOUT,
            self.store.confirm_lease(id, epoch, self.ttl_ms),
        )
        .await
        {
            Ok(Ok(true)) => {
                self.leases().confirmed(id, epoch, sent);
                true
            }
            Ok(Ok(false)) => {
                self.metrics
                    .fencing_rejections
                    .fetch_add(1, Ordering::Relaxed);
                self.lost(id, "another node claimed it");
                false
            }
            Ok(Err(e)) => {
                tracing::error!(notification = %id, error = %e, "cannot confirm the lease before a dial");
                self.lost(id, "the database did not confirm it before a dial");
                false
            }
            Err(_) => {
                self.lost(id, "the database did not confirm it before a dial in time");
                false
            }
        }
    }

    /// Start the named lease `name` (`super::role`) on this node.
    pub fn role(&self, cfg: &ClusterConfig, name: &'static str) -> Option<Arc<Role>> {
        let r = Role::start(name, cfg, &self.store, &self.parent)?;
        self.roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.clone());
        Some(r)
    }

    /// `/metrics` lines of this node.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let mut roles = String::from("# TYPE callout_cluster_work_lease_held gauge\n");
        let mut fenced = String::from("# TYPE callout_cluster_work_lease_fenced_total counter\n");
        for r in self.roles.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            roles.push_str(&format!(
                "callout_cluster_work_lease_held{{node=\"{}\",name=\"{}\"}} {}\n",
                self.id,
                r.name,
                u8::from(r.term().is_some())
            ));
            fenced.push_str(&format!(
                "callout_cluster_work_lease_fenced_total{{node=\"{}\",name=\"{}\"}} {}\n",
                self.id,
                r.name,
                r.metrics.fenced.load(Ordering::Relaxed)
            ));
        }
        roles.push_str(&fenced);
        roles + &format!(
            "# TYPE callout_cluster_leases_held gauge\ncallout_cluster_leases_held{{node=\"{n}\"}} {}\n\
             # TYPE callout_cluster_takeovers_total counter\ncallout_cluster_takeovers_total{{node=\"{n}\"}} {}\n\
             # TYPE callout_cluster_fencing_rejections_total counter\ncallout_cluster_fencing_rejections_total{{node=\"{n}\"}} {}\n\
             # TYPE callout_cluster_leases_lost_total counter\ncallout_cluster_leases_lost_total{{node=\"{n}\"}} {}\n\
             # TYPE callout_cluster_claims_total counter\ncallout_cluster_claims_total{{node=\"{n}\"}} {}\n\
             # TYPE callout_cluster_renewal_failures_total counter\ncallout_cluster_renewal_failures_total{{node=\"{n}\"}} {}\n",
            self.leases_held(),
            m.takeovers.load(Ordering::Relaxed),
            m.fencing_rejections.load(Ordering::Relaxed),
            m.leases_lost.load(Ordering::Relaxed),
            m.claims.load(Ordering::Relaxed),
            m.renewal_failures.load(Ordering::Relaxed),
            n = self.id,
        )
    }

    /// One renewal: extend what the database says is ours, stop what it
    /// does not, hand back what no task here runs any more, pass on
    /// cancels that reached another node.
    async fn renew(&self, svc: &Arc<Service>) {
        let sent = self.now();
        let _ = tokio::time::timeout(
            TRY_TIMEOUT,
            self.store.node_heartbeat(&self.id, crate::runner::now_ms()),
        )
        .await;
        let rows =
            match tokio::time::timeout(TRY_TIMEOUT, self.store.renew_leases(&self.id, self.ttl_ms))
                .await
            {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    self.metrics
                        .renewal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %self.id, error = %e, "lease renewal failed");
                    return;
                }
                Err(_) => {
                    self.metrics
                        .renewal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %self.id, "lease renewal got no answer in time");
                    return;
                }
            };
        let pairs: Vec<(String, i64)> = rows.iter().map(|(i, e, _, _)| (i.clone(), *e)).collect();
        let (lost, strays) = self.leases().renewed(sent, &pairs);
        for id in lost {
            // Ended here (its final state is stored) or claimed elsewhere.
            if svc.is_owned(&id) {
                self.metrics
                    .fencing_rejections
                    .fetch_add(1, Ordering::Relaxed);
                self.lost(&id, "another node claimed it");
            } else {
                self.tokens().remove(&id);
            }
        }
        // Held, unfinished, and no task here runs it any more (it
        // panicked): hand it back so a node (this one too) restarts it
        // from its checkpoint. Not while shutting down: then all go back.
        if !svc.shutdown.is_cancelled() {
            for (id, epoch) in &pairs {
                let settled = self
                    .leases()
                    .answered_at(id)
                    .is_some_and(|at| at + 1_000 < sent);
                if settled && !svc.is_owned(id) {
                    tracing::error!(notification = %id, node = %self.id, "no task runs this leased notification; handing it back");
                    self.leases().release(id);
                    self.tokens().remove(id);
                    let _ = self.store.release_lease(id, *epoch).await;
                }
            }
        }
        for (id, epoch) in strays {
            // Ours on the database, run by no task here (it panicked, or
            // this is a restart): free for the next claim, ours included.
            if !svc.is_owned(&id) {
                let _ = self.store.release_lease(&id, epoch).await;
            }
        }
        for (id, _, reason, ack) in rows {
            if let Some(ack) = ack {
                svc.deliver_ack(&id, &ack);
            } else if let Some(reason) = reason {
                svc.deliver_cancel(&id, &reason);
            }
        }
    }

    /// Claim expired work, most severe first, and start it here.
    async fn claim(&self, svc: &Arc<Service>, mine: bool) {
        let sent = self.now();
        let claimed = match tokio::time::timeout(
            TRY_TIMEOUT,
            self.store
                .claim_expired(&self.id, self.ttl_ms, self.batch, mine),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(node = %self.id, error = %e, "claiming expired leases failed");
                return;
            }
            Err(_) => return,
        };
        for c in claimed {
            let id = c.row.id.clone();
            self.hold(&id, c.epoch, sent);
            self.metrics.claims.fetch_add(1, Ordering::Relaxed);
            match c.previous.as_deref() {
                Some(prev) if prev != self.id => {
                    self.metrics.takeovers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(notification = %id, from = %prev, node = %self.id, epoch = c.epoch,
                        "took over a notification whose lease ran out");
                }
                _ => {
                    tracing::info!(notification = %id, node = %self.id, epoch = c.epoch, "claimed")
                }
            }
            let Some(plan) = svc.registry.get(&c.row.contract) else {
                svc.fail_abandoned(&id, "its contract no longer exists")
                    .await;
                self.leases().release(&id);
                self.tokens().remove(&id);
                continue;
            };
            let resume = c
                .row
                .escalation
                .as_deref()
                .and_then(|s| serde_json::from_str::<Escalation>(s).ok());
            svc.start_claimed(c.row, plan, resume);
        }
    }

    fn expire(&self) {
        let gone = self.leases().expired(self.now());
        for id in gone {
            self.lost(&id, "not renewed in time");
        }
    }

    /// Wake early: another node handed work back.
    async fn listen(self: Arc<Node>, url: String) {
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut l) => {
                    if l.listen("callout_leases").await.is_ok() {
                        while let Ok(_n) = l.recv().await {
                            self.kick.notify_one();
                            for r in self.roles.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                                r.kick();
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "LISTEN connection failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}

/// Start this node's lease work: claim what it held before a restart and
/// what is free, then renew and claim until [`release`].
pub async fn start(svc: &Arc<Service>, node: Arc<Node>) -> usize {
    let _ = node
        .store
        .node_heartbeat(&node.id, crate::runner::now_ms())
        .await;
    node.claim(svc, true).await;
    let n = node.leases_held();
    let (l, url) = (node.clone(), svc.config.database_url.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = l.stop.cancelled() => {}
            _ = l.clone().listen(url) => {}
        }
    });
    tokio::spawn(run(svc.clone(), node));
    n
}

async fn run(svc: Arc<Service>, node: Arc<Node>) {
    let mut next_renew = node.now() + node.heartbeat.as_millis() as i64;
    let mut next_claim = node.now() + node.poll.as_millis() as i64;
    loop {
        let now = node.now();
        let wake = next_renew
            .min(next_claim)
            .min(node.leases().next_deadline().unwrap_or(i64::MAX));
        let wait = Duration::from_millis((wake - now).clamp(1, 60_000) as u64);
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = node.kick.notified() => next_claim = node.now(),
        }
        let now = node.now();
        if now >= next_renew {
            next_renew = now + node.heartbeat.as_millis() as i64;
            node.renew(&svc).await;
        }
        node.expire();
        // A node shutting down takes nothing new.
        if node.now() >= next_claim && !svc.shutdown.is_cancelled() {
            next_claim = node.now() + node.poll.as_millis() as i64;
            node.claim(&svc, false).await;
        }
    }
}

/// Graceful shutdown, after the escalations stopped and the writer
/// drained: hand every lease back at once so other nodes resume the work
/// now rather than after `lease_ttl`. Writes still journaled keep the
/// leases (they expire), since the next start here applies them first.
pub async fn release(svc: &Service, node: &Node) {
    node.stop.cancel();
    if svc.writer.status().pending > 0 {
        tracing::warn!(node = %node.id, "store writes still pending; leases left to expire");
        return;
    }
    // The pipeline's work leases (`role`) first: release_all_leases wakes
    // the other nodes.
    let _ = tokio::time::timeout(TRY_TIMEOUT, node.store.release_work_leases_of(&node.id)).await;
    match tokio::time::timeout(TRY_TIMEOUT, node.store.release_all_leases(&node.id)).await {
        Ok(Ok(n)) => tracing::info!(node = %node.id, leases = n, "leases handed back"),
        Ok(Err(e)) => {
            tracing::warn!(node = %node.id, error = %e, "cannot hand leases back; they expire")
        }
        Err(_) => tracing::warn!(node = %node.id, "handing leases back timed out; they expire"),
    }
}

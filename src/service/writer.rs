//! The store writer: one task per process that writes what escalations
//! report (events, checkpoints, final states) to the store, in the order
//! they happened, so a call never waits for the database.
//!
//! [`Writer::submit`] never awaits: the write joins a bounded memory
//! queue, or the journal file (fsync) when the store is failing, the
//! journal is not empty, or the queue is full (the decisions are
//! [`super::write_queue`]'s). [`run`] applies what is queued in memory as
//! one transaction (group commit, at most [`GROUP_MAX`] writes: one fsync
//! for every notification's writes that arrived meanwhile, instead of one
//! each), journal entries and retries one at a time; each try is bounded
//! by [`ATTEMPT_TIMEOUT`], retried with backoff; while the
//! store fails, writes are moved to the journal so a crash loses nothing,
//! and the next start applies the journal before resuming anything.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::journal::{Journal, JournalError};
use super::write_queue::{Head, Next, Queued, Route, WriteQueue};
use super::Service;
use crate::runner::now_ms;
use crate::store::{new_id, Store, StoreError, StoreWrite};

/// Writes held in memory while the journal works; beyond this they go to
/// the journal.
pub const MEMORY_CAP: usize = 1024;
/// Most writes applied in one transaction. Bounds a try's length (and
/// what one failing write holds back until the writer falls back to one
/// at a time).
pub const GROUP_MAX: usize = 64;
/// One try of one write: longer counts as a failure (the pool's own
/// acquire timeout is far longer), and the write is retried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// One store write, as queued and as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub seq: u64,
    /// Unique; an event's outbox id (and webhook id), which makes applying
    /// it twice harmless.
    pub id: String,
    pub notification: String,
    /// When it happened (epoch ms), not when it was written.
    pub at_ms: i64,
    pub write: Write,
    /// Clustered: the lease epoch it was made under; the store rejects
    /// it once another node claimed the notification (`crate::cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// What an [`Op`] writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Write {
    /// A runner event: its attempt row change and its webhook.
    Event { event: String, payload: Value },
    /// The escalation state (resumed after a restart).
    Progress { state: String, escalation: String },
    /// The final state.
    Finish { state: String, final_state: Value },
}

impl Queued for Op {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn owner(&self) -> &str {
        &self.notification
    }
}

/// The writer's state for `/readyz` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStatus {
    /// The last write failed (until one succeeds).
    pub failing: bool,
    /// Writes not yet in the store.
    pub pending: usize,
    /// Of those, how many are in the journal.
    pub in_journal: usize,
    /// Failed tries since the start.
    pub failures_total: u64,
    /// Journal appends that failed (the writes stayed in memory).
    pub journal_failures_total: u64,
}

struct Inner {
    queue: WriteQueue<Op>,
    journal: Journal,
    next_seq: u64,
    closed: bool,
}

/// The per-process store writer (see the module docs).
pub struct Writer {
    inner: Mutex<Inner>,
    wake: Notify,
    close: Notify,
    durable: watch::Sender<u64>,
    failures_total: AtomicU64,
    journal_failures_total: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Writer {
    /// Open the journal in `dir`; what a previous run left in it is
    /// applied first once [`run`] starts.
    pub fn open(dir: &Path) -> Result<Writer, JournalError> {
        let (journal, left) = Journal::open::<Op>(dir)?;
        if !left.is_empty() {
            tracing::warn!(journal = %journal.path().display(), writes = left.len(), "store writes left by the last run; applying them first");
        }
        let next_seq = left.iter().map(|o| o.seq + 1).max().unwrap_or(1);
        let metas = left.into_iter().map(|o| (o.seq, o.notification)).collect();
        let queue = WriteQueue::new(MEMORY_CAP, metas);
        let (durable, _) = watch::channel(queue.durable_upto());
        Ok(Writer {
            inner: Mutex::new(Inner {
                queue,
                journal,
                next_seq,
                closed: false,
            }),
            wake: Notify::new(),
            close: Notify::new(),
            durable,
            failures_total: AtomicU64::new(0),
            journal_failures_total: AtomicU64::new(0),
            task: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a holder panicked between two
        // consistent states of the queue.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a write for a notification; returns its seq. Never waits for
    /// the store (at most for a local fsync when it spills).
    pub fn submit(&self, notification: &str, write: Write) -> u64 {
        self.submit_fenced(notification, None, write)
    }

    /// As [`Writer::submit`], checked against lease `epoch` when given.
    pub fn submit_fenced(&self, notification: &str, epoch: Option<i64>, write: Write) -> u64 {
        let now = now_ms();
        let mut g = self.lock();
        let seq = g.next_seq;
        g.next_seq += 1;
        let op = Op {
            seq,
            id: new_id("evt"),
            notification: notification.to_string(),
            at_ms: now,
            write,
            epoch,
        };
        match g.queue.route(now) {
            Route::Memory => g.queue.push_memory(op),
            Route::Spill => {
                let old = g.queue.take_memory();
                self.spill(&mut g, old, Some(op), now);
            }
        }
        self.durable.send_replace(g.queue.durable_upto());
        drop(g);
        self.wake.notify_one();
        seq
    }

    /// Append `old` then `new` to the journal; on failure they stay in
    /// memory, in order.
    fn spill(&self, g: &mut Inner, mut old: Vec<Op>, new: Option<Op>, now: i64) {
        let has_new = new.is_some();
        old.extend(new);
        match g.journal.append(&old) {
            Ok(()) => {
                let metas: Vec<(u64, String)> = old
                    .iter()
                    .map(|o| (o.seq, o.notification.clone()))
                    .collect();
                g.queue.journaled(&metas, has_new);
            }
            Err(e) => {
                self.journal_failures_total.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, writes = old.len(), "cannot journal store writes; holding them in memory");
                let new = if has_new { old.pop() } else { None };
                g.queue.restore_memory(old, new, now);
            }
        }
    }

    /// Wait until write `seq` is in the store or the journal, at most
    /// `max`; `false` when it is not (both the store and the disk fail).
    pub async fn durable(&self, seq: u64, max: Duration) -> bool {
        let mut rx = self.durable.subscribe();
        let r = tokio::time::timeout(max, rx.wait_for(|d| *d >= seq)).await;
        matches!(r, Ok(Ok(_)))
    }

    /// Whether a notification still has writes not in the store: its task
    /// may have ended, but it is not abandoned.
    pub fn owns(&self, notification: &str) -> bool {
        self.lock().queue.owns(notification)
    }

    pub fn status(&self) -> WriterStatus {
        let g = self.lock();
        WriterStatus {
            failing: g.queue.failing(),
            pending: g.queue.pending(),
            in_journal: g.queue.in_journal(),
            failures_total: self.failures_total.load(Ordering::Relaxed),
            journal_failures_total: self.journal_failures_total.load(Ordering::Relaxed),
        }
    }

    /// Wait until the journal a previous run left is applied, at most
    /// `max`; `false` if it is not.
    pub async fn replayed(&self, max: Duration) -> bool {
        let until = tokio::time::Instant::now() + max;
        loop {
            if self.lock().queue.in_journal() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start the writer task.
    pub fn spawn(svc: &Arc<Service>) {
        let handle = tokio::spawn(run(svc.clone()));
        *svc.writer.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// At shutdown, after the escalations ended: write what is queued,
    /// for at most `within`; what the store did not take by then goes to
    /// the journal for the next start.
    pub async fn close(&self, within: Duration) {
        self.lock().closed = true;
        self.close.notify_one();
        self.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            if tokio::time::timeout(within, task).await.is_err() {
                tracing::error!("the store writer did not stop in time");
            }
        }
        let g = self.lock();
        if g.queue.pending() > 0 {
            tracing::warn!(
                pending = g.queue.pending(),
                in_journal = g.queue.in_journal(),
                "store writes not written at shutdown; the journaled ones are applied at the next start"
            );
        }
    }
}

/// Apply writes to the store, in order, in one transaction. Per write,
/// whether it was applied: `false` when the lease epoch it carries was
/// fenced (nothing written for it).
async fn apply(store: &Store, ops: &[Op]) -> Result<Vec<bool>, StoreError> {
    let writes: Vec<(StoreWrite<'_>, Option<i64>)> = ops
        .iter()
        .map(|op| {
            let w = match &op.write {
                Write::Event { event, payload } => StoreWrite::Event {
                    id: &op.id,
                    notification: &op.notification,
                    event,
                    payload,
                    at_ms: op.at_ms,
                },
                Write::Progress { state, escalation } => StoreWrite::Progress {
                    notification: &op.notification,
                    state,
                    escalation,
                    at_ms: op.at_ms,
                },
                Write::Finish { state, final_state } => StoreWrite::Finish {
                    notification: &op.notification,
                    state,
                    final_state,
                    at_ms: op.at_ms,
                },
            };
            (w, op.epoch)
        })
        .collect();
    store.apply_writes_fenced(&writes).await
}

/// Write until closed and drained (see [`Writer::close`]).
pub async fn run(svc: Arc<Service>) {
    let w = &svc.writer;
    // Once closed, the store gets this long before the rest is journaled.
    let mut close_by: Option<i64> = None;
    loop {
        let now = now_ms();
        let (next, ops) = {
            let mut g = w.lock();
            if g.queue.should_spill(now) {
                let old = g.queue.take_memory();
                w.spill(&mut g, old, None, now);
                w.durable.send_replace(g.queue.durable_upto());
            }
            if g.closed {
                if g.queue.pending() == 0 {
                    return;
                }
                let by = *close_by.get_or_insert(now + 5_000);
                if now >= by {
                    let old = g.queue.take_memory();
                    if !old.is_empty() {
                        w.spill(&mut g, old, None, now);
                    }
                    return;
                }
            }
            let next = g.queue.poll(now);
            let ops: Vec<Op> = match next {
                // After a failure, one at a time: one bad write must not
                // hold back the others' group for good.
                Next::Apply(Head::Memory) => {
                    let max = if g.queue.failing() { 1 } else { GROUP_MAX };
                    g.queue.head_memory_group(max).cloned().collect()
                }
                Next::Apply(Head::Journal) => match g.journal.peek::<Op>() {
                    Ok(Some((op, _))) => vec![op],
                    Ok(None) => {
                        // The file lost lines the queue counts (someone
                        // truncated it): nothing to apply for them.
                        tracing::error!("the journal is shorter than expected; skipping an entry");
                        if let Some(seq) = g.queue.head_journal() {
                            g.queue.applied(seq);
                        }
                        Vec::new()
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the journal");
                        g.queue.failed(now);
                        Vec::new()
                    }
                },
                _ => Vec::new(),
            };
            (next, ops)
        };
        match next {
            Next::Idle => {
                tokio::select! {
                    _ = w.wake.notified() => {}
                    _ = w.close.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            Next::Wait(at) => {
                let wait = Duration::from_millis((at - now).clamp(1, 60_000) as u64);
                tokio::select! {
                    _ = w.close.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            Next::Apply(_) => {}
        }
        if ops.is_empty() {
            continue;
        }
        // Clustered, a fenced write that commits tells this node its lease
        // held when it was sent (`Node::confirm_after`).
        let sent = svc.cluster.get().map(|c| c.send_time());
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, apply(&svc.store, &ops)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        };
        // Before `durable` moves (below): a checkpoint's waiter then finds
        // its lease seen. The node's lock is never taken under the writer's.
        if let (Ok(held), Some(c), Some(sent)) = (&result, svc.cluster.get(), sent) {
            c.writes_held(
                ops.iter()
                    .zip(held)
                    .filter(|(_, h)| **h)
                    .filter_map(|(op, _)| op.epoch.map(|e| (op.notification.as_str(), e))),
                sent,
            );
        }
        let now = now_ms();
        let mut g = w.lock();
        match result {
            Ok(held) => {
                for (op, held) in ops.iter().zip(&held) {
                    if !held {
                        // Another node holds the lease: this write is
                        // dropped and the work here stops.
                        if let Some(c) = svc.cluster.get() {
                            c.fenced(&op.notification);
                        }
                    }
                }
                let was_failing = g.queue.failing();
                for op in &ops {
                    // A memory write spilled while in flight lands from the
                    // journal: its copy there is consumed.
                    if g.queue.applied(op.seq) == Some(Head::Journal) {
                        if let Ok(Some((_, next))) = g.journal.peek::<Op>() {
                            g.journal.consumed(next);
                        }
                        if g.queue.in_journal() == 0 {
                            if let Err(e) = g.journal.reset() {
                                tracing::error!(error = %e, "cannot empty the applied journal");
                            }
                        }
                    }
                }
                if was_failing {
                    tracing::warn!(
                        pending = g.queue.pending(),
                        "store writes work again; writing what was held back, in order"
                    );
                }
                w.durable.send_replace(g.queue.durable_upto());
                drop(g);
                if ops.iter().any(|op| matches!(op.write, Write::Event { .. })) {
                    svc.outbox_kick.notify_one();
                }
            }
            Err(e) => {
                if !g.queue.failing() {
                    tracing::error!(notification = %ops[0].notification, writes = ops.len(), error = %e, pending = g.queue.pending(),
                        "store write failed; holding writes (journaled) and retrying");
                } else {
                    tracing::debug!(error = %e, "store write failed again");
                }
                g.queue.failed(now);
                w.failures_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

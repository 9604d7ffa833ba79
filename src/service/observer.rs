//! The service's [`Observer`]: hands each runner event, checkpoint and
//! final state to the store writer ([`super::writer`]) and keeps the call
//! metrics. Nothing here waits for the database: an event returns at
//! once, and a checkpoint waits only until it is durable somewhere (the
//! store, or the local journal), at most [`CHECKPOINT_WAIT`].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::writer::Write;
use super::Service;
use crate::ivr::escalation::{Escalation, Final};
use crate::runner::{Fut, Observer};

/// How long a checkpoint waits to be durable before the escalation goes
/// on. It is awaited so a crash does not make callout ring someone more
/// often than the policy says; when neither the store nor the disk takes
/// it, paging on matters more.
pub const CHECKPOINT_WAIT: Duration = Duration::from_secs(3);

/// Reports one notification's escalation to the store writer.
pub(crate) struct StoreObserver {
    svc: Arc<Service>,
    id: String,
    /// The lease epoch every write carries when clustered (fencing).
    epoch: Option<i64>,
    /// Attempts answered in this process, for the active-calls gauge.
    answered: Mutex<HashSet<i64>>,
}

impl StoreObserver {
    pub(crate) fn new(svc: Arc<Service>, id: &str) -> StoreObserver {
        let epoch = svc.cluster.get().and_then(|c| c.epoch(id));
        StoreObserver {
            svc,
            id: id.to_string(),
            epoch,
            answered: Mutex::new(HashSet::new()),
        }
    }

    /// The lease epoch its writes carry (clustered).
    pub(crate) fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// Queue an event (its attempt change and its webhook), in order.
    pub(crate) fn record(&self, v: Value) {
        let event = v["event"].as_str().unwrap_or("").to_string();
        let attempt = v["attempt"].as_i64().unwrap_or(0);
        let m = &self.svc.metrics;
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        match event.as_str() {
            "call.answered" if answered.insert(attempt) => {
                m.active_calls.fetch_add(1, Ordering::Relaxed);
            }
            "call.ended" => {
                if answered.remove(&attempt) {
                    m.active_calls.fetch_sub(1, Ordering::Relaxed);
                }
                let outcome = v["outcome"]["outcome"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string();
                *m.calls_by_outcome
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(outcome)
                    .or_default() += 1;
            }
            _ => {}
        }
        drop(answered);
        // The board hears the same events the webhooks carry.
        self.svc.console.live.publish(&self.id, &v);
        self.svc
            .writer
            .submit_fenced(&self.id, self.epoch, Write::Event { event, payload: v });
    }

    /// Queue the final state behind every event before it, so it can
    /// never overtake them.
    pub(crate) fn finish(&self, f: &Final) {
        self.svc.writer.submit_fenced(
            &self.id,
            self.epoch,
            Write::Finish {
                state: super::final_state(f).to_string(),
                final_state: serde_json::to_value(f).unwrap_or_default(),
            },
        );
    }
}

impl Drop for StoreObserver {
    fn drop(&mut self) {
        // A task that ends without `call.ended` (it panicked) leaves the
        // gauge as it found it.
        let answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        for _ in answered.iter() {
            self.svc
                .metrics
                .active_calls
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Observer for StoreObserver {
    fn event(&self, v: Value) -> Fut<'_> {
        self.record(v);
        Box::pin(async {})
    }

    fn checkpoint(&self, esc: &Escalation) -> Fut<'_> {
        let done = esc.is_done();
        let state = if done { "finishing" } else { "running" };
        let cluster = self.svc.cluster.get().filter(|_| self.epoch.is_some());
        let since = cluster.map(|c| c.send_time());
        let seq = self.svc.writer.submit_fenced(
            &self.id,
            self.epoch,
            Write::Progress {
                state: state.into(),
                escalation: serde_json::to_string(esc).unwrap_or_default(),
            },
        );
        Box::pin(async move {
            if !self.svc.writer.durable(seq, CHECKPOINT_WAIT).await {
                tracing::error!(notification = %self.id, "the escalation state is not durable yet; going on");
            }
            // Clustered, the next dial needs the lease confirmed on the
            // database after this checkpoint (by the checkpoint's own
            // fenced write when it reached the store); otherwise the work
            // stops here (the runner sees its stop token cancelled before
            // dialling).
            if let (Some(c), Some(since)) = (cluster, since) {
                if !done {
                    c.confirm_after(&self.id, since).await;
                }
            }
        })
    }
}

//! How many escalations dial at once on this node, and which waits next.
//!
//! An alert storm must not become hundreds of simultaneous escalations
//! (each with its synthesised audio in memory and its calls on the trunk),
//! nor may any page be refused. Past the limit a notification stays
//! `pending` in the store (so a crash loses nothing: it resumes at the
//! next start) and waits here, in memory only as an id and two numbers,
//! until a slot frees; the most severe waits least, then the oldest.
//!
//! [`Queue`] is the decision, sans-IO; [`Slots`] is the async wrapper the
//! service awaits.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::{Service, StoreObserver};
use crate::runner::Observer;
use crate::store::NotificationRow;

/// Lower is more urgent. Severity is free text from the monitoring
/// system; the common words of Alertmanager, Zabbix and Grafana are
/// ranked, anything else counts as a warning.
pub fn severity_rank(severity: &str) -> u8 {
    match severity.to_ascii_lowercase().as_str() {
        "critical" | "emergency" | "disaster" | "fatal" | "page" => 0,
        "major" | "high" | "error" => 1,
        "info" | "information" | "informational" | "low" | "ok" | "none" => 3,
        _ => 2,
    }
}

/// The admission decision: a fixed number of slots and an ordered queue.
#[derive(Debug)]
pub struct Queue {
    limit: usize,
    active: HashSet<String>,
    /// (rank, created_ms, id): the first is the next to go.
    waiting: BTreeSet<(u8, i64, String)>,
    keys: HashMap<String, (u8, i64)>,
}

/// What [`Queue::request`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// Waiting, with this many ahead of it.
    Queued {
        ahead: usize,
    },
}

impl Queue {
    pub fn new(limit: usize) -> Queue {
        Queue {
            limit: limit.max(1),
            active: HashSet::new(),
            waiting: BTreeSet::new(),
            keys: HashMap::new(),
        }
    }

    pub fn request(&mut self, id: &str, rank: u8, created_ms: i64) -> Admit {
        if self.active.contains(id) {
            return Admit::Now;
        }
        if self.active.len() < self.limit && self.waiting.is_empty() {
            self.active.insert(id.to_string());
            return Admit::Now;
        }
        let key = (rank, created_ms, id.to_string());
        let ahead = self.waiting.range(..&key).count();
        self.waiting.insert(key);
        self.keys.insert(id.to_string(), (rank, created_ms));
        Admit::Queued { ahead }
    }

    /// `id` is done (finished, or gave up waiting); returns the ids that
    /// now have a slot.
    pub fn release(&mut self, id: &str) -> Vec<String> {
        if !self.active.remove(id) {
            if let Some((rank, created)) = self.keys.remove(id) {
                self.waiting.remove(&(rank, created, id.to_string()));
            }
        }
        let mut admitted = Vec::new();
        while self.active.len() < self.limit {
            let Some(next) = self.waiting.pop_first() else {
                break;
            };
            self.keys.remove(&next.2);
            self.active.insert(next.2.clone());
            admitted.push(next.2);
        }
        admitted
    }

    pub fn dialling(&self) -> usize {
        self.active.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// The service's slots: await [`Slots::acquire`]; the returned guard frees
/// the slot when dropped, however the escalation ends.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    queue: Queue,
    wake: HashMap<String, oneshot::Sender<()>>,
}

/// A held slot (or a place in the queue while waiting).
pub struct Slot {
    slots: Slots,
    id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(&self.id);
    }
}

impl Slots {
    pub fn new(limit: usize) -> Slots {
        Slots {
            inner: Arc::new(Mutex::new(Inner {
                queue: Queue::new(limit),
                wake: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a slot for notification `id`. Returns at once with
    /// `Admit::Now`, or with `Admit::Queued` and a receiver that fires
    /// when the slot is granted. Dropping the returned [`Slot`] before
    /// then leaves the queue.
    pub fn request(
        &self,
        id: &str,
        severity: &str,
        created_ms: i64,
    ) -> (Slot, Admit, Option<oneshot::Receiver<()>>) {
        let mut inner = self.lock();
        let admit = inner.queue.request(id, severity_rank(severity), created_ms);
        let rx = match admit {
            Admit::Now => None,
            Admit::Queued { .. } => {
                let (tx, rx) = oneshot::channel();
                inner.wake.insert(id.to_string(), tx);
                Some(rx)
            }
        };
        let slot = Slot {
            slots: self.clone(),
            id: id.to_string(),
        };
        (slot, admit, rx)
    }

    fn release(&self, id: &str) {
        let mut inner = self.lock();
        inner.wake.remove(id);
        for next in inner.queue.release(id) {
            if let Some(tx) = inner.wake.remove(&next) {
                let _ = tx.send(());
            }
        }
    }

    /// (dialling, waiting), for metrics and `/readyz`.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.queue.dialling(), inner.queue.waiting())
    }
}

/// Wait for notification `row`'s dialling slot. `None` when the service
/// shuts down first (the row stays `pending` and resumes at the next
/// start). A cancel while waiting returns at once too: the escalation
/// then sees the cancel and ends without dialling.
pub async fn wait(
    svc: &Arc<Service>,
    row: &NotificationRow,
    cancel: &mut watch::Receiver<Option<crate::runner::Stop>>,
) -> Option<Slot> {
    let (slot, admit, granted) = svc.slots.request(&row.id, &row.severity, row.created_ms);
    let Some(granted) = granted else {
        return Some(slot);
    };
    if let Admit::Queued { ahead } = admit {
        let (dialling, waiting) = svc.slots.counts();
        tracing::info!(notification = %row.id, ahead, dialling, waiting, "every dialling slot is taken; queued");
        let obs = StoreObserver::new(svc.clone(), &row.id);
        obs.event(serde_json::json!({"event": "notification.queued", "ahead": ahead, "dialling": dialling}))
            .await;
    }
    if cancel.borrow().is_some() {
        return Some(slot);
    }
    tokio::select! {
        _ = granted => Some(slot),
        _ = cancel.changed() => Some(slot),
        _ = svc.shutdown.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_the_most_severe_then_the_oldest_goes_first() {
        let mut q = Queue::new(2);
        assert_eq!(q.request("a", 2, 1), Admit::Now);
        assert_eq!(q.request("b", 3, 2), Admit::Now);
        assert_eq!(q.request("minor", 2, 3), Admit::Queued { ahead: 0 });
        assert_eq!(q.request("info", 3, 4), Admit::Queued { ahead: 1 });
        assert_eq!(q.request("crit-late", 0, 9), Admit::Queued { ahead: 0 });
        assert_eq!(q.request("crit-early", 0, 5), Admit::Queued { ahead: 0 });
        assert_eq!(q.request("major", 1, 6), Admit::Queued { ahead: 2 });
        let mut order = Vec::new();
        for done in [
            "a",
            "b",
            "crit-early",
            "crit-late",
            "major",
            "minor",
            "info",
        ] {
            order.extend(q.release(done));
        }
        assert_eq!(order, ["crit-early", "crit-late", "major", "minor", "info"]);
        assert_eq!((q.dialling(), q.waiting()), (0, 0));
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_queue_and_frees_nothing() {
        let mut q = Queue::new(1);
        assert_eq!(q.request("a", 1, 1), Admit::Now);
        assert_eq!(q.request("b", 1, 2), Admit::Queued { ahead: 0 });
        assert_eq!(q.request("c", 1, 3), Admit::Queued { ahead: 1 });
        // b is cancelled while waiting: no slot is handed out.
        assert!(q.release("b").is_empty());
        assert_eq!(q.release("a"), ["c"]);
        // A repeated request for a running one is not a second slot.
        assert_eq!(q.request("c", 1, 3), Admit::Now);
        assert_eq!(q.dialling(), 1);
    }

    #[test]
    fn severities_rank_as_monitoring_systems_name_them() {
        assert!(severity_rank("CRITICAL") < severity_rank("major"));
        assert!(severity_rank("high") < severity_rank("warning"));
        assert!(severity_rank("something-new") < severity_rank("info"));
        assert_eq!(severity_rank("disaster"), 0);
    }

    #[tokio::test]
    async fn a_queued_slot_is_granted_when_one_frees() {
        let slots = Slots::new(1);
        let (first, admit, rx) = slots.request("a", "minor", 1);
        assert_eq!((admit, rx.is_none()), (Admit::Now, true));
        let (_second, admit, rx) = slots.request("b", "critical", 2);
        assert_eq!(admit, Admit::Queued { ahead: 0 });
        assert_eq!(slots.counts(), (1, 1));
        drop(first);
        rx.unwrap().await.unwrap();
        assert_eq!(slots.counts(), (1, 0));
    }
}

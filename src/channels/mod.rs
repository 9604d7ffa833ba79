//! Trunk channel limits (`[trunks.NAME] max_channels`, `max_cps`): every
//! call of a limited trunk takes a channel before its INVITE and gives it
//! back when the call is over; when none is free it waits in the trunk's
//! queue, most severe then oldest first ([`core`] decides, sans-IO).
//!
//! - **One node (SQLite)**: the channels, the queue and the backoff live
//!   in this process. The queue is durable the way every pending call is:
//!   a waiting notification is stored with its checkpoint and asks again
//!   after a restart.
//! - **Several nodes (PostgreSQL, `[cluster]`)**: the state is in the
//!   database (`store/channels.rs`): a trunk's row is locked while its
//!   channels are handed out, channels and places in the queue belong to
//!   a notification's lease and epoch, so a dead node's are free when its
//!   leases run out, and its queued work is claimed by another node,
//!   whose next dial asks again (in severity and age order). A grant
//!   or a release wakes the nodes (`NOTIFY callout_channels`); each waiter
//!   also asks again every second.
//!
//! A refusal saying the trunk is full (503, or 486 with a reason that
//! says so) backs off new calls of the trunk for every node.

pub mod core;
pub mod health;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use self::core::{Limits, TrunkState, Waiter};
use crate::cluster::Node;
use crate::config::TrunkConfig;
use crate::runner::{now_ms, Observer};
use crate::store::{ChannelAsk, Store};

/// A waiter on PostgreSQL asks again this often even if no `NOTIFY`
/// arrives (a lost notification, a listener reconnecting).
const POLL: Duration = Duration::from_secs(1);
/// One database try longer than this counts as failed.
const TRY_TIMEOUT: Duration = Duration::from_secs(3);

/// A call asking for a channel of `trunk`.
#[derive(Debug, Clone)]
pub struct Ask {
    pub trunk: String,
    /// The notification.
    pub id: String,
    /// `service::admission::severity_rank` of its severity.
    pub rank: u8,
    pub created_ms: i64,
}

/// How a wait for a channel ended.
pub enum Wait {
    Granted(Channel),
    /// The notification was cancelled meanwhile.
    Cancelled,
    /// Shutdown, or the lease went to another node: nothing is dialled.
    Stopped,
}

/// A held channel, given back when dropped.
pub struct Channel {
    channels: Arc<Channels>,
    trunk: String,
    id: String,
    /// Already given back by [`Channel::give_back`].
    given: bool,
}

impl Channel {
    /// Give the channel back and wait until it is (on PostgreSQL a
    /// notification holds one channel row: the next trunk's ask must not
    /// find this one still there).
    async fn give_back(mut self) {
        self.given = true;
        self.channels.leave_now(&self.trunk, &self.id).await;
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if !self.given {
            self.channels.leave(&self.trunk, &self.id);
        }
    }
}

/// One call's hold on the channel of the trunk it is on. A call that
/// fails over to another trunk moves its hold there ([`Held::enter`]):
/// it is counted against the trunk it is actually sent on, and the
/// refusal or success it ends with is the backoff of that trunk.
pub struct Held {
    channels: Arc<Channels>,
    id: String,
    rank: u8,
    created_ms: i64,
    /// The trunk the call is on, and its channel when the trunk is limited.
    on: Mutex<(String, Option<Channel>)>,
}

impl Held {
    /// A call on `ask.trunk` holding `channel` (none: not limited, or a
    /// cancel arrived while it waited).
    pub fn new(channels: Arc<Channels>, ask: &Ask, channel: Option<Channel>) -> Held {
        Held {
            channels,
            id: ask.id.clone(),
            rank: ask.rank,
            created_ms: ask.created_ms,
            on: Mutex::new((ask.trunk.clone(), channel)),
        }
    }

    fn on(&self) -> std::sync::MutexGuard<'_, (String, Option<Channel>)> {
        self.on.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trunk the call's last INVITE went through.
    pub fn trunk(&self) -> String {
        self.on().0.clone()
    }

    /// The call is over: give its channel back.
    pub fn release(&self) {
        let ch = self.on().1.take();
        drop(ch);
    }

    /// The call moves to `trunk`: the channel of the trunk it leaves is
    /// given back (that INVITE failed), then one of `trunk` taken now if
    /// it is limited. False: none free there (the call does not queue in
    /// the middle of a dial); it is skipped.
    pub async fn enter(&self, trunk: &str) -> bool {
        let old = self.on().1.take();
        if let Some(c) = old {
            c.give_back().await;
        }
        let new = if self.channels.gated(trunk) {
            let ask = Ask {
                trunk: trunk.to_string(),
                id: self.id.clone(),
                rank: self.rank,
                created_ms: self.created_ms,
            };
            match self.channels.try_now(&ask).await {
                Some(c) => Some(c),
                None => return false,
            }
        } else {
            None
        };
        *self.on() = (trunk.to_string(), new);
        true
    }
}

impl crate::driver::TrunkGate for Held {
    fn enter<'a>(
        &'a self,
        trunk: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(Held::enter(self, trunk))
    }
}

#[derive(Debug, Default)]
struct Local {
    state: TrunkState,
    in_use: HashSet<String>,
    /// id -> (its place, since when it waits).
    waiting: HashMap<String, (Waiter, i64)>,
}

struct Db {
    store: Store,
    node: Arc<Node>,
    /// One try at a time per node: many waiters of one node must not
    /// each hold a pool connection while they queue for the trunk's row.
    tries: tokio::sync::Mutex<()>,
}

/// One trunk as `/metrics` and `/readyz` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrunkView {
    pub trunk: String,
    pub max_channels: Option<u32>,
    pub max_cps: Option<u32>,
    /// Channels in use (every node).
    pub in_use: i64,
    /// Calls waiting (every node).
    pub queued: i64,
    /// This node's share of them.
    pub in_use_here: i64,
    pub queued_here: i64,
    /// Milliseconds of backoff left (0: none).
    pub backoff_ms: i64,
}

/// Result of one try.
struct Try {
    granted: bool,
    since_ms: i64,
    retry_in_ms: Option<i64>,
}

/// Every limited trunk's channels.
pub struct Channels {
    limits: BTreeMap<String, Limits>,
    local: Mutex<HashMap<String, Local>>,
    /// Something changed: waiters ask again.
    wake: Notify,
    db: OnceLock<Db>,
}

impl Channels {
    pub fn new(trunks: &BTreeMap<String, TrunkConfig>) -> Arc<Channels> {
        let limits = trunks
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    Limits {
                        max_channels: t.max_channels,
                        max_cps: t.max_cps,
                    },
                )
            })
            .filter(|(_, l)| l.gated())
            .collect();
        Arc::new(Channels {
            limits,
            local: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            db: OnceLock::new(),
        })
    }

    /// Share the limits with the other nodes on this PostgreSQL database.
    pub fn use_database(self: &Arc<Self>, store: &Store, node: Arc<Node>, url: String) {
        let stop = node.stopped();
        let _ = self.db.set(Db {
            store: store.clone(),
            node,
            tries: tokio::sync::Mutex::new(()),
        });
        if self.limits.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = me.listen(url) => {}
            }
        });
    }

    async fn listen(&self, url: String) {
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut l) => {
                    if l.listen("callout_channels").await.is_ok() {
                        while l.recv().await.is_ok() {
                            self.wake.notify_waiters();
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "LISTEN callout_channels failed"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Whether calls of `trunk` need a channel.
    pub fn gated(&self, trunk: &str) -> bool {
        self.limits.contains_key(trunk)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn try_once(&self, ask: &Ask) -> Result<Try, String> {
        let limits = self.limits.get(&ask.trunk).copied().unwrap_or_default();
        if let Some(db) = self.db.get() {
            let Some(epoch) = db.node.epoch(&ask.id) else {
                return Err("this node no longer holds the notification's lease".into());
            };
            let _one = db.tries.lock().await;
            let a = ChannelAsk {
                trunk: &ask.trunk,
                id: &ask.id,
                node: &db.node.id,
                epoch,
                rank: ask.rank,
                created_ms: ask.created_ms,
            };
            let t = tokio::time::timeout(TRY_TIMEOUT, db.store.channel_try(&limits, &a))
                .await
                .map_err(|_| "the database did not answer in time".to_string())?
                .map_err(|e| e.to_string())?;
            return Ok(Try {
                granted: t.granted,
                since_ms: t.since_ms,
                retry_in_ms: t.retry_at_ms.map(|r| r - t.now_ms),
            });
        }
        let now = now_ms();
        let mut all = self.local();
        let l = all.entry(ask.trunk.clone()).or_default();
        if l.in_use.contains(&ask.id) {
            return Ok(Try {
                granted: true,
                since_ms: now,
                retry_in_ms: None,
            });
        }
        let since_ms = l
            .waiting
            .entry(ask.id.clone())
            .or_insert_with(|| {
                (
                    Waiter {
                        rank: ask.rank,
                        created_ms: ask.created_ms,
                        id: ask.id.clone(),
                    },
                    now,
                )
            })
            .1;
        let waiters: Vec<Waiter> = l.waiting.values().map(|(w, _)| w.clone()).collect();
        let d = l.state.dispatch(&limits, now, l.in_use.len(), &waiters);
        for g in &d.grants {
            l.waiting.remove(g);
            l.in_use.insert(g.clone());
        }
        if d.grants.iter().any(|g| *g != ask.id) {
            self.wake.notify_waiters();
        }
        Ok(Try {
            granted: l.in_use.contains(&ask.id),
            since_ms,
            retry_in_ms: d.retry_at_ms.map(|r| r - now),
        })
    }

    /// Wait for a channel of `ask.trunk`. The first time it has to wait,
    /// `trunk.queued` is reported (with since when); a grant after a wait
    /// reports `trunk.granted`.
    pub async fn acquire<S>(
        self: &Arc<Self>,
        ask: &Ask,
        cancel: &mut watch::Receiver<Option<S>>,
        stop: &CancellationToken,
        obs: &dyn Observer,
        attempt: u32,
        started: i64,
    ) -> Wait {
        let mut queued_since: Option<i64> = None;
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let t = match self.try_once(ask).await {
                Ok(t) => t,
                Err(e)
                    if self
                        .db
                        .get()
                        .is_some_and(|d| d.node.epoch(&ask.id).is_none()) =>
                {
                    tracing::warn!(trunk = %ask.trunk, error = %e, "stopped waiting for a channel");
                    self.leave(&ask.trunk, &ask.id);
                    return Wait::Stopped;
                }
                Err(e) => {
                    tracing::warn!(trunk = %ask.trunk, error = %e, "cannot ask for a channel; asking again");
                    Try {
                        granted: false,
                        since_ms: queued_since.unwrap_or_else(now_ms),
                        retry_in_ms: Some(POLL.as_millis() as i64),
                    }
                }
            };
            if t.granted {
                if let Some(since) = queued_since {
                    obs.event(
                        json!({"event": "trunk.granted", "trunk": ask.trunk, "attempt": attempt,
                        "waited_ms": (now_ms() - since).max(0), "at_ms": now_ms() - started}),
                    )
                    .await;
                }
                return Wait::Granted(Channel {
                    channels: self.clone(),
                    trunk: ask.trunk.clone(),
                    id: ask.id.clone(),
                    given: false,
                });
            }
            if queued_since.is_none() {
                queued_since = Some(t.since_ms);
                tracing::info!(trunk = %ask.trunk, "every channel of the trunk is taken (or it backs off); queued");
                obs.event(
                    json!({"event": "trunk.queued", "trunk": ask.trunk, "attempt": attempt,
                    "since_ms": t.since_ms, "at_ms": now_ms() - started}),
                )
                .await;
            }
            // On one node only a release or the clock (cps, backoff) can
            // change anything; the long wait is a safety net.
            let cap = if self.db.get().is_some() {
                POLL
            } else {
                Duration::from_secs(5)
            };
            let wait = t
                .retry_in_ms
                .map(|ms| Duration::from_millis(ms.clamp(1, 60_000) as u64))
                .unwrap_or(cap)
                .min(cap);
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(wait) => {}
                r = cancel.changed() => {
                    if r.is_err() || cancel.borrow().is_some() {
                        self.leave(&ask.trunk, &ask.id);
                        return Wait::Cancelled;
                    }
                }
                _ = stop.cancelled() => {
                    self.leave(&ask.trunk, &ask.id);
                    return Wait::Stopped;
                }
            }
        }
    }

    /// A channel of `ask.trunk` now or none: a call failing over to
    /// another trunk does not queue there (it is already dialling), but
    /// it goes in strictly in queue order, so it never takes a channel
    /// from a more severe or older call waiting for the same trunk.
    pub async fn try_now(self: &Arc<Self>, ask: &Ask) -> Option<Channel> {
        match self.try_once(ask).await {
            Ok(t) if t.granted => Some(Channel {
                channels: self.clone(),
                trunk: ask.trunk.clone(),
                id: ask.id.clone(),
                given: false,
            }),
            Ok(_) | Err(_) => {
                self.leave_now(&ask.trunk, &ask.id).await;
                None
            }
        }
    }

    /// [`Channels::leave`], done when it returns.
    async fn leave_now(&self, trunk: &str, id: &str) {
        if let Some(db) = self.db.get() {
            match tokio::time::timeout(TRY_TIMEOUT, db.store.channel_release(trunk, id)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%trunk, notification = %id, error = %e, "cannot give back a channel; freed when the notification ends")
                }
                Err(_) => {
                    tracing::warn!(%trunk, notification = %id, "giving back a channel timed out")
                }
            }
        } else if let Some(l) = self.local().get_mut(trunk) {
            l.in_use.remove(id);
            l.waiting.remove(id);
        }
        self.wake.notify_waiters();
    }

    /// Give back a channel or a place in the queue.
    fn leave(self: &Arc<Self>, trunk: &str, id: &str) {
        if let Some(db) = self.db.get() {
            let (store, trunk, id, me) = (
                db.store.clone(),
                trunk.to_string(),
                id.to_string(),
                self.clone(),
            );
            tokio::spawn(async move {
                // Not given back: it is freed when the lease ends.
                if let Err(e) = store.channel_release(&trunk, &id).await {
                    tracing::warn!(%trunk, notification = %id, error = %e, "cannot give back a channel; freed when the notification ends");
                }
                me.wake.notify_waiters();
            });
            return;
        }
        let mut all = self.local();
        if let Some(l) = all.get_mut(trunk) {
            l.in_use.remove(id);
            l.waiting.remove(id);
        }
        drop(all);
        self.wake.notify_waiters();
    }

    /// A call of `trunk` ended with a final failure: back off when it
    /// says the trunk is full. Returns the end of the backoff (ms left).
    pub async fn refused(
        &self,
        trunk: &str,
        code: u16,
        retry_after_s: Option<u32>,
        reason: &str,
    ) -> Option<i64> {
        if !self.gated(trunk) || !core::trunk_full(code, retry_after_s, reason) {
            return None;
        }
        if let Some(db) = self.db.get() {
            let r = tokio::time::timeout(
                TRY_TIMEOUT,
                db.store.channel_refused(trunk, code, retry_after_s, reason),
            )
            .await;
            return match r {
                Ok(Ok(until)) => until,
                Ok(Err(e)) => {
                    tracing::warn!(%trunk, error = %e, "cannot store the trunk's backoff");
                    None
                }
                Err(_) => None,
            };
        }
        let now = now_ms();
        let until = self
            .local()
            .entry(trunk.to_string())
            .or_default()
            .state
            .refused(now, code, retry_after_s, reason);
        until.map(|u| u - now + now_ms())
    }

    /// A call of `trunk` rang or was answered.
    pub async fn got_through(&self, trunk: &str) {
        if !self.gated(trunk) {
            return;
        }
        if let Some(db) = self.db.get() {
            let _ = tokio::time::timeout(TRY_TIMEOUT, db.store.channel_got_through(trunk)).await;
            return;
        }
        if let Some(l) = self.local().get_mut(trunk) {
            l.state.got_through();
        }
    }

    /// The trunk `id` waits for and since when (epoch ms), if it waits.
    pub async fn queued(&self, id: &str) -> Option<(String, i64)> {
        if let Some(db) = self.db.get() {
            return db.store.channel_queued(id).await.ok().flatten();
        }
        self.local()
            .iter()
            .find_map(|(t, l)| l.waiting.get(id).map(|(_, since)| (t.clone(), *since)))
    }

    /// Every limited trunk's channels and queue.
    pub async fn snapshot(&self) -> Vec<TrunkView> {
        let mut out = Vec::new();
        for (trunk, l) in &self.limits {
            let mut v = TrunkView {
                trunk: trunk.clone(),
                max_channels: l.max_channels,
                max_cps: l.max_cps,
                in_use: 0,
                queued: 0,
                in_use_here: 0,
                queued_here: 0,
                backoff_ms: 0,
            };
            if let Some(db) = self.db.get() {
                if let Ok(Ok(c)) =
                    tokio::time::timeout(TRY_TIMEOUT, db.store.channel_counts(trunk, &db.node.id))
                        .await
                {
                    v.in_use = c.in_use;
                    v.queued = c.queued;
                    v.in_use_here = c.in_use_here;
                    v.queued_here = c.queued_here;
                    v.backoff_ms = (c.backoff_until_ms - c.now_ms).max(0);
                }
            } else if let Some(s) = self.local().get(trunk) {
                v.in_use = s.in_use.len() as i64;
                v.queued = s.waiting.len() as i64;
                v.in_use_here = v.in_use;
                v.queued_here = v.queued;
                v.backoff_ms = (s.state.backoff_until_ms - now_ms()).max(0);
            }
            out.push(v);
        }
        out
    }

    /// `/metrics` lines.
    pub async fn metrics_text(&self) -> String {
        let views = self.snapshot().await;
        if views.is_empty() {
            return String::new();
        }
        let label = |t: &str| t.replace(['\\', '"', '\n'], "_");
        let mut out = String::new();
        for (i, name) in [
            "callout_trunk_channels_in_use",
            "callout_trunk_queue_depth",
            "callout_trunk_channels_in_use_here",
            "callout_trunk_queue_depth_here",
            "callout_trunk_backoff_seconds",
        ]
        .iter()
        .enumerate()
        {
            out.push_str(&format!("# TYPE {name} gauge\n"));
            for v in &views {
                let value = match i {
                    0 => v.in_use.to_string(),
                    1 => v.queued.to_string(),
                    2 => v.in_use_here.to_string(),
                    3 => v.queued_here.to_string(),
                    _ => format!("{:.3}", v.backoff_ms as f64 / 1000.0),
                };
                out.push_str(&format!(
                    "{name}{{trunk=\"{}\"}} {value}\n",
                    label(&v.trunk)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Observer for Quiet {
        fn event(&self, _v: serde_json::Value) -> crate::runner::Fut<'_> {
            Box::pin(async {})
        }
        fn checkpoint(&self, _e: &crate::ivr::escalation::Escalation) -> crate::runner::Fut<'_> {
            Box::pin(async {})
        }
    }

    fn ask(id: &str, rank: u8, created_ms: i64) -> Ask {
        Ask {
            trunk: "carrier".into(),
            id: id.into(),
            rank,
            created_ms,
        }
    }

    #[tokio::test]
    async fn one_node_hands_a_released_channel_to_the_most_severe_waiter() {
        let mut trunks = BTreeMap::new();
        trunks.insert(
            "carrier".to_string(),
            TrunkConfig {
                max_channels: Some(1),
                ..Default::default()
            },
        );
        let ch = Channels::new(&trunks);
        let (_tx, rx) = watch::channel(None::<String>);
        let stop = CancellationToken::new();
        let mut r = rx.clone();
        let Wait::Granted(first) = ch
            .acquire(&ask("a", 2, 1), &mut r, &stop, &Quiet, 1, 0)
            .await
        else {
            panic!("a free channel is granted at once");
        };
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (id, rank, created) in [("minor", 2, 2), ("critical", 0, 9)] {
            let (ch, rx, stop, order) = (ch.clone(), rx.clone(), stop.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let mut rx = rx;
                if let Wait::Granted(c) = ch
                    .acquire(&ask(id, rank, created), &mut rx, &stop, &Quiet, 1, 0)
                    .await
                {
                    order.lock().unwrap().push(id);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    drop(c);
                }
            }));
        }
        // Both wait, the minor one since earlier.
        while ch.snapshot().await[0].queued < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            ch.queued("minor").await.map(|q| q.0).as_deref(),
            Some("carrier")
        );
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["critical", "minor"]);
        let v = &ch.snapshot().await[0];
        assert_eq!((v.in_use, v.queued), (0, 0));
    }

    #[tokio::test]
    async fn a_cancel_while_waiting_leaves_the_queue() {
        let mut trunks = BTreeMap::new();
        trunks.insert(
            "carrier".to_string(),
            TrunkConfig {
                max_channels: Some(1),
                ..Default::default()
            },
        );
        let ch = Channels::new(&trunks);
        let stop = CancellationToken::new();
        let (_t0, mut r0) = watch::channel(None::<String>);
        let Wait::Granted(_held) = ch
            .acquire(&ask("a", 2, 1), &mut r0, &stop, &Quiet, 1, 0)
            .await
        else {
            panic!()
        };
        let (tx, mut rx) = watch::channel(None::<String>);
        let ch2 = ch.clone();
        let stop2 = stop.clone();
        let t = tokio::spawn(async move {
            matches!(
                ch2.acquire(&ask("b", 0, 2), &mut rx, &stop2, &Quiet, 1, 0)
                    .await,
                Wait::Cancelled
            )
        });
        while ch.snapshot().await[0].queued < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx.send(Some("resolved".into())).unwrap();
        assert!(t.await.unwrap());
        assert_eq!(ch.snapshot().await[0].queued, 0);
        // A 503 with Retry-After backs the trunk off; a busy callee not.
        assert!(ch
            .refused("carrier", 486, None, "Busy Here")
            .await
            .is_none());
        assert!(ch.refused("carrier", 503, Some(2), "").await.is_some());
        assert!(ch.snapshot().await[0].backoff_ms > 1_000);
    }

    #[tokio::test]
    async fn a_call_failing_over_is_counted_against_the_trunk_it_is_sent_on() {
        let mut trunks = BTreeMap::new();
        for t in ["first", "second"] {
            trunks.insert(
                t.to_string(),
                TrunkConfig {
                    max_channels: Some(1),
                    ..Default::default()
                },
            );
        }
        let ch = Channels::new(&trunks);
        let stop = CancellationToken::new();
        let (_t, mut r) = watch::channel(None::<String>);
        let on = |a: &str, t: &str| Ask {
            trunk: t.into(),
            ..ask(a, 2, 1)
        };
        let in_use = |v: Vec<TrunkView>| v.iter().map(|v| v.in_use).collect::<Vec<_>>();
        let Wait::Granted(c) = ch
            .acquire(&on("x", "first"), &mut r, &stop, &Quiet, 1, 0)
            .await
        else {
            panic!()
        };
        let x = Held::new(ch.clone(), &on("x", "first"), Some(c));
        // Another call holds the second trunk's only channel.
        let Wait::Granted(y) = ch
            .acquire(&on("y", "second"), &mut r, &stop, &Quiet, 1, 0)
            .await
        else {
            panic!()
        };
        assert_eq!(in_use(ch.snapshot().await), [1, 1]);
        // x's first trunk failed it: it leaves that channel, finds the
        // second trunk full and is not let on (nor queued there).
        assert!(!x.enter("second").await);
        assert_eq!(x.trunk(), "first");
        assert_eq!(in_use(ch.snapshot().await), [0, 1]);
        assert_eq!(ch.snapshot().await[1].queued, 0);
        drop(y);
        assert!(x.enter("second").await);
        assert_eq!(x.trunk(), "second");
        assert_eq!(in_use(ch.snapshot().await), [0, 1]);
        // The channel it holds is the second trunk's: a new call of the
        // first trunk gets one at once, one of the second does not.
        let z = ch.try_now(&on("z", "first")).await;
        assert!(z.is_some());
        assert!(ch.try_now(&on("w", "second")).await.is_none());
        drop(z);
        // An unlimited trunk takes no channel; the one left is given back.
        assert!(x.enter("unlimited").await);
        assert_eq!(x.trunk(), "unlimited");
        assert_eq!(in_use(ch.snapshot().await), [0, 0]);
        x.release();
        assert_eq!(in_use(ch.snapshot().await), [0, 0]);
    }
}

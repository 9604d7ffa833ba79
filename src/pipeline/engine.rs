//! The pipeline's decisions, sans-IO: alerts, gateway outcomes, silences
//! and the clock go in (`handle_*`, with an explicit epoch-ms `now`);
//! what to record and what to ask of the gateway comes out
//! (`poll_output`). Nothing here reads a clock, a socket or a database,
//! so every window, flap, storm and heartbeat is tested by jumping
//! `now` (`engine_tests.rs`).
//!
//! Every incident is a serialisable value ([`Incident`]); the driver
//! stores each one the engine marks changed (`take_dirty`) and hands
//! them back through [`Engine::restore`] after a restart, so a wait
//! window resumes where it was.
//!
//! This file holds the state, its set-up and what the driver reads; the
//! handlers are child modules (they share the private state), by what
//! they handle: alerts (`engine_alerts.rs`), the monitoring path
//! (`engine_path.rs`), the clock (`engine_clock.rs`), the gateway's word
//! (`engine_gateway.rs`), first-level actions (`auto_action.rs`), and the
//! steps of an incident's life they share (`engine_lifecycle.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::alert::Severity;
use super::config::{Matcher, PipelineConfig};
use super::notice_mail::NoticeEvent;

#[path = "engine_alerts.rs"]
mod alerts;
#[path = "auto_action.rs"]
mod auto_action;
#[path = "engine_clock.rs"]
mod clock;
#[path = "engine_gateway.rs"]
mod gateway;
#[path = "engine_lifecycle.rs"]
mod lifecycle;
#[path = "engine_path.rs"]
mod path;
pub use auto_action::{ActionReport, FirstAction, FirstActionState, RecoveryCheck};

/// An incident's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In the wait window: nothing dialled yet.
    Pending,
    /// The gateway is calling.
    Notifying,
    Acknowledged,
    /// Recovered; a recovery notice may still be under way.
    Recovered,
    Closed,
    /// Held under a monitoring-path incident: the customer is not called.
    Suppressed,
    /// Closed without a recovery: nothing was heard for `expire`.
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Notifying => "notifying",
            State::Acknowledged => "acknowledged",
            State::Recovered => "recovered",
            State::Closed => "closed",
            State::Suppressed => "suppressed",
            State::Expired => "expired",
        }
    }

    pub fn is_open(self) -> bool {
        !matches!(self, State::Closed | State::Expired)
    }
}

/// What an incident is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// One host of a contract.
    Host,
    /// Many hosts at once, or the monitoring system's own health alert:
    /// the path to the customer, not the customer. `group` is the value
    /// of the contract's `path_group` label (or empty).
    MonitoringPath { group: String },
    /// A heartbeat that stopped.
    Heartbeat { name: String },
}

/// One alert key's latest word inside an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    pub name: String,
    pub firing: bool,
    pub last_alert: String,
    pub summary: String,
}

/// An incident, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `in_…`, from the alert that opened it.
    pub id: String,
    /// The customer's contract the alerts came from.
    pub contract: String,
    /// Whose contacts are called (the monitoring centre's contract for
    /// monitoring-path and heartbeat incidents; `None`: nobody).
    pub notify_contract: Option<String>,
    pub host: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub state: State,
    pub severity: Severity,
    pub summary: String,
    /// The first alert's labels (the call's variables).
    pub labels: BTreeMap<String, String>,
    pub opened_ms: i64,
    /// When the wait window ends (while `Pending`).
    pub deadline_ms: Option<i64>,
    pub last_alert_ms: i64,
    pub keys: BTreeMap<String, KeyState>,
    /// Alerts that formed or joined it, in order (capped; `alert_count`
    /// has the full number).
    pub alerts: Vec<String>,
    pub alert_count: u64,
    /// The monitoring-path incident holding this one.
    pub held_by: Option<String>,
    /// For a monitoring-path incident: the incidents it holds.
    pub holds: BTreeSet<String>,
    /// Notifications asked of the gateway so far; the n-th one's
    /// Idempotency-Key is `incident:<id>:<n>`.
    pub notifications: u32,
    /// The gateway notification now running, once the gateway said.
    pub notification: Option<String>,
    /// A notification asked for and not yet confirmed by the gateway.
    pub notify_pending: bool,
    /// The running notification is the recovery notice.
    pub recovery_notice: bool,
    /// A recovery notice waits for the cancelled escalation to end (the
    /// gateway keeps one notification per ticket at a time).
    #[serde(default)]
    pub recovery_wanted: bool,
    pub escalation_done: bool,
    /// When it became `Recovered` while a call still had to end (the
    /// cancelled escalation, or the recovery notice): if the gateway's
    /// word on it never comes, it closes after the engine's
    /// `recovered_wait`.
    #[serde(default)]
    pub recovered_ms: Option<i64>,
    pub acked_by: Option<String>,
    pub closed_ms: Option<i64>,
    pub reopened: u32,
    /// The first-level action run before anyone is called, if a rule
    /// chose one.
    #[serde(default)]
    pub first_action: Option<FirstAction>,
    /// The contract's `recovery_verify` run at the recovery, before the
    /// close.
    #[serde(default)]
    pub recovery_check: Option<RecoveryCheck>,
}

/// Alerts kept by id in an incident; beyond this only counted (a storm
/// must not grow one row without bound).
const MAX_ALERT_IDS: usize = 200;

/// Alert keys kept per incident; beyond this the recovered ones are
/// forgotten (a sender that gives every event its own key, as Zabbix's
/// event ids do, must not grow one incident without bound).
const MAX_KEYS: usize = 256;

impl Incident {
    pub fn idempotency_key(&self) -> String {
        format!("incident:{}:{}", self.id, self.notifications)
    }

    fn firing(&self) -> bool {
        self.keys.values().any(|k| k.firing)
    }
}

/// What happened to one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "disposition", rename_all = "snake_case")]
pub enum Disposition {
    /// Opened, joined, reopened or recovered this incident.
    Incident {
        incident: String,
    },
    /// Held under a monitoring-path incident (its host incident too).
    Suppressed {
        incident: String,
    },
    /// Kept on record only.
    Recorded {
        why: String,
    },
    Silenced {
        silence: String,
    },
    Heartbeat {
        name: String,
    },
}

/// A maintenance window or a silence: matching alerts are recorded and
/// do nothing else until `ends_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub contract: String,
    pub matchers: Vec<String>,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub created_by: String,
    pub comment: String,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Record the alert's fate (always exactly one per alert handled).
    Alert {
        alert: String,
        disposition: Disposition,
    },
    /// A new incident: take its ticket number.
    Opened { incident: String },
    /// One line of an incident's story.
    Timeline {
        incident: String,
        at_ms: i64,
        kind: &'static str,
        text: String,
        alert: Option<String>,
    },
    /// Ask the gateway to call (`incident.notifications` says which one;
    /// a recovery notice when `incident.recovery_notice`).
    Notify { incident: String },
    /// Ask the gateway to stop calling.
    Cancel {
        incident: String,
        notification: Option<String>,
        reason: String,
    },
    /// The ticket is closed and its number released.
    Closed { incident: String },
    /// Run the contract's action on the incident (a first-level action,
    /// before anyone is called); its end comes back through
    /// [`Engine::handle_action_result`].
    RunAction { incident: String, action: String },
    /// Queue a customer notice mail (only when the contract names
    /// recipients for the event), in the same write as this step.
    Mail {
        incident: String,
        event: NoticeEvent,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatState {
    pub contract: String,
    pub name: String,
    pub last_ms: i64,
    /// The incident raised for its silence, while open.
    pub incident: Option<String>,
    /// Not raised before this (epoch ms): after callout itself was down,
    /// the source gets one interval from the start to be heard again.
    #[serde(default)]
    pub grace_until_ms: i64,
}

/// The gateway's final word on a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayOutcome {
    /// Someone took it (`notification.acked`, `notification.action_taken`).
    Acked { by: Option<String> },
    /// Nobody took it, or it failed, or it was cancelled.
    Ended { state: String },
}

/// How long an incident with no new alert stays open after its calls
/// end before it expires (a week: a real outage is either recovered or
/// closed by a person long before).
pub const DEFAULT_EXPIRE_MS: i64 = 7 * 24 * 3_600_000;

/// How long a recovered incident waits for the gateway's last word on
/// its cancelled escalation or its recovery notice before it closes
/// anyway (a gateway that lost the notification, or a webhook that never
/// arrives, must not hold a ticket open for good).
pub const DEFAULT_RECOVERED_WAIT_MS: i64 = 30 * 60_000;

pub struct Engine {
    contracts: HashMap<String, Arc<PipelineConfig>>,
    incidents: HashMap<String, Incident>,
    /// The open incident of (contract, host).
    by_host: HashMap<(String, String), String>,
    /// The last closed incident of (contract, host), for reopening.
    last_closed: HashMap<(String, String), (String, i64)>,
    /// The open monitoring-path incident of (contract, group).
    paths: HashMap<(String, String), String>,
    heartbeats: BTreeMap<(String, String), HeartbeatState>,
    silences: BTreeMap<String, (Silence, Vec<Matcher>)>,
    out: VecDeque<Output>,
    dirty: BTreeSet<String>,
    heartbeats_dirty: bool,
    expire_ms: i64,
    recovered_wait_ms: i64,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            contracts: HashMap::new(),
            incidents: HashMap::new(),
            by_host: HashMap::new(),
            last_closed: HashMap::new(),
            paths: HashMap::new(),
            heartbeats: BTreeMap::new(),
            silences: BTreeMap::new(),
            out: VecDeque::new(),
            dirty: BTreeSet::new(),
            heartbeats_dirty: false,
            expire_ms: DEFAULT_EXPIRE_MS,
            recovered_wait_ms: DEFAULT_RECOVERED_WAIT_MS,
        }
    }

    pub fn set_expire_ms(&mut self, ms: i64) {
        self.expire_ms = ms.max(1);
    }

    pub fn set_recovered_wait_ms(&mut self, ms: i64) {
        self.recovered_wait_ms = ms.max(1);
    }

    /// Install (or replace, at a reload) the contracts' rules. A
    /// heartbeat starts its clock at `now` the first time it is seen, so
    /// a start or a reload never raises one at once.
    pub fn set_contracts(&mut self, now: i64, contracts: HashMap<String, Arc<PipelineConfig>>) {
        for (c, p) in &contracts {
            for h in &p.heartbeats {
                self.heartbeats
                    .entry((c.clone(), h.name.clone()))
                    .or_insert_with(|| {
                        self.heartbeats_dirty = true;
                        HeartbeatState {
                            contract: c.clone(),
                            name: h.name.clone(),
                            last_ms: now,
                            incident: None,
                            grace_until_ms: 0,
                        }
                    });
            }
        }
        self.contracts = contracts;
    }

    /// Put back an incident read from the store (before any event).
    pub fn restore(&mut self, inc: Incident) {
        let key = (inc.contract.clone(), inc.host.clone());
        if inc.state.is_open() {
            match &inc.kind {
                Kind::Host => {
                    self.by_host.insert(key, inc.id.clone());
                }
                Kind::MonitoringPath { group } => {
                    self.paths
                        .insert((inc.contract.clone(), group.clone()), inc.id.clone());
                }
                Kind::Heartbeat { .. } => {}
            }
        } else if let (Kind::Host, Some(at)) = (&inc.kind, inc.closed_ms) {
            let newer = self.last_closed.get(&key).is_none_or(|(_, t)| *t <= at);
            if newer {
                self.last_closed.insert(key, (inc.id.clone(), at));
            }
            return;
        }
        // An asked-for notification that the gateway never confirmed is
        // asked again; the same Idempotency-Key makes that safe.
        if inc.notify_pending {
            self.out.push_back(Output::Notify {
                incident: inc.id.clone(),
            });
        }
        self.incidents.insert(inc.id.clone(), inc);
    }

    /// A stored heartbeat, at start (after [`Engine::set_contracts`]).
    /// Its source could not reach callout while callout was down, so it
    /// is not raised before one interval after `now`.
    pub fn restore_heartbeat(&mut self, now: i64, mut h: HeartbeatState) {
        let interval = self
            .contracts
            .get(&h.contract)
            .and_then(|p| p.heartbeats.iter().find(|x| x.name == h.name))
            .map_or(0, |hb| hb.interval_ms);
        h.grace_until_ms = now.saturating_add(interval);
        self.heartbeats
            .insert((h.contract.clone(), h.name.clone()), h);
    }

    pub fn add_silence(&mut self, s: Silence) -> Result<(), String> {
        let matchers = s
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        self.silences.insert(s.id.clone(), (s, matchers));
        Ok(())
    }

    pub fn remove_silence(&mut self, id: &str) -> bool {
        self.silences.remove(id).is_some()
    }

    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    pub fn heartbeats(&self) -> impl Iterator<Item = &HeartbeatState> {
        self.heartbeats.values()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Incidents changed since the last call (closed ones included, then
    /// forgotten: the store has them).
    pub fn take_dirty(&mut self) -> Vec<Incident> {
        let ids = std::mem::take(&mut self.dirty);
        let mut v = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(inc) = self.incidents.get(&id) else {
                continue;
            };
            v.push(inc.clone());
            if !inc.state.is_open() {
                self.incidents.remove(&id);
            }
        }
        v
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.heartbeats_dirty
    }

    pub fn take_heartbeats_dirty(&mut self) -> Option<Vec<HeartbeatState>> {
        std::mem::take(&mut self.heartbeats_dirty)
            .then(|| self.heartbeats.values().cloned().collect())
    }

    /// When `handle_timeout` has something to do.
    pub fn poll_timeout(&self) -> Option<i64> {
        let windows = self.incidents.values().filter_map(|i| match i.state {
            State::Pending => i.deadline_ms,
            State::Notifying | State::Acknowledged
                if i.escalation_done || i.state == State::Acknowledged =>
            {
                Some(i.last_alert_ms.saturating_add(self.expire_ms))
            }
            State::Recovered => i
                .recovered_ms
                .map(|t| t.saturating_add(self.recovered_wait_ms)),
            _ => None,
        });
        let beats = self.heartbeats.iter().filter_map(|((c, n), h)| {
            if h.incident.is_some() {
                return None;
            }
            let p = self.contracts.get(c)?;
            let hb = p.heartbeats.iter().find(|x| &x.name == n)?;
            Some(
                h.last_ms
                    .saturating_add(hb.interval_ms)
                    .max(h.grace_until_ms),
            )
        });
        windows.chain(beats).min()
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

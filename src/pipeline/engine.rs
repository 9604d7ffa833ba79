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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::alert::{Alert, Severity, Status};
use super::config::{all_match, Decision, Matcher, PipelineConfig, RecoveryNotice};
use super::notice_mail::NoticeEvent;

#[path = "auto_action.rs"]
mod auto_action;
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

    // ---- alerts ---------------------------------------------------------------

    pub fn handle_alert(&mut self, now: i64, alert: &Alert) {
        let Some(cfg) = self.contracts.get(&alert.contract).cloned() else {
            self.record(alert, "the contract has no pipeline");
            return;
        };
        if let Some(s) = self.silence_for(now, alert) {
            self.out.push_back(Output::Alert {
                alert: alert.id.clone(),
                disposition: Disposition::Silenced { silence: s },
            });
            return;
        }
        if alert.labels.get("event_action").map(String::as_str) == Some("acknowledge") {
            // The sender's own acknowledgement: news for the ticket, not
            // a reason to open or close anything.
            match self
                .by_host
                .get(&(alert.contract.clone(), alert.host.clone()))
                .cloned()
            {
                Some(id) => {
                    self.timeline(
                        &id,
                        now,
                        "alert",
                        format!("the sender acknowledged {}: {}", alert.name, alert.summary),
                        Some(&alert.id),
                    );
                    self.out.push_back(Output::Alert {
                        alert: alert.id.clone(),
                        disposition: Disposition::Incident { incident: id },
                    });
                }
                None => self.record(
                    alert,
                    "an acknowledgement with no open incident for the host",
                ),
            }
            return;
        }
        if let Some(hb) = cfg.heartbeat_for(alert) {
            let name = hb.name.clone();
            self.heartbeat_seen(now, &alert.contract, &name, alert);
            return;
        }
        if cfg.inhibit.iter().any(|i| all_match(&i.source, alert)) {
            self.inhibit_source(now, &cfg, alert);
            return;
        }
        match alert.status {
            Status::Resolved => self.resolved(now, &cfg, alert),
            Status::Firing => match cfg.decide(alert) {
                Decision::Record { why } => self.record(alert, &why),
                Decision::Call { wait_ms, rule_line } => {
                    self.firing(now, &cfg, alert, wait_ms, rule_line)
                }
            },
        }
    }

    fn record(&mut self, alert: &Alert, why: &str) {
        self.out.push_back(Output::Alert {
            alert: alert.id.clone(),
            disposition: Disposition::Recorded { why: why.into() },
        });
    }

    fn silence_for(&self, now: i64, alert: &Alert) -> Option<String> {
        self.silences
            .values()
            .find(|(s, m)| {
                s.contract == alert.contract
                    && s.starts_ms <= now
                    && now < s.ends_ms
                    && all_match(m, alert)
            })
            .map(|(s, _)| s.id.clone())
    }

    fn timeline(
        &mut self,
        incident: &str,
        at_ms: i64,
        kind: &'static str,
        text: String,
        alert: Option<&str>,
    ) {
        self.out.push_back(Output::Timeline {
            incident: incident.to_string(),
            at_ms,
            kind,
            text,
            alert: alert.map(str::to_string),
        });
    }

    fn set_state(&mut self, now: i64, id: &str, to: State, why: &str) {
        let Some(inc) = self.incidents.get_mut(id) else {
            return;
        };
        let from = inc.state;
        if from == to {
            return;
        }
        inc.state = to;
        if to != State::Pending {
            inc.deadline_ms = None;
        }
        self.dirty.insert(id.to_string());
        self.timeline(
            id,
            now,
            "state",
            format!("{} → {}: {why}", from.as_str(), to.as_str()),
            None,
        );
    }

    fn new_incident(
        &mut self,
        now: i64,
        alert: &Alert,
        kind: Kind,
        notify: Option<String>,
        wait_ms: i64,
    ) -> String {
        let id = format!("in_{}", alert.id.trim_start_matches("al_"));
        let id = match &kind {
            Kind::Host => id,
            Kind::MonitoringPath { .. } => format!("{id}p"),
            Kind::Heartbeat { .. } => format!("{id}h"),
        };
        let host = match &kind {
            Kind::Host => alert.host.clone(),
            Kind::MonitoringPath { group } if group.is_empty() => "(monitoring path)".into(),
            Kind::MonitoringPath { group } => format!("(monitoring path: {group})"),
            Kind::Heartbeat { name } => format!("(heartbeat: {name})"),
        };
        let summary = match &kind {
            Kind::Host => alert.summary.clone(),
            Kind::MonitoringPath { .. } => format!(
                "monitoring path fault for contract {}: {}",
                alert.contract, alert.summary
            ),
            Kind::Heartbeat { name } => {
                format!("heartbeat {name} of contract {} stopped", alert.contract)
            }
        };
        let inc = Incident {
            id: id.clone(),
            contract: alert.contract.clone(),
            notify_contract: notify,
            host,
            kind,
            state: State::Pending,
            severity: alert.severity,
            summary,
            labels: alert.labels.clone(),
            opened_ms: now,
            deadline_ms: Some(now.saturating_add(wait_ms)),
            last_alert_ms: now,
            keys: BTreeMap::new(),
            alerts: Vec::new(),
            alert_count: 0,
            held_by: None,
            holds: BTreeSet::new(),
            notifications: 0,
            notification: None,
            notify_pending: false,
            recovery_notice: false,
            recovery_wanted: false,
            escalation_done: false,
            recovered_ms: None,
            acked_by: None,
            closed_ms: None,
            reopened: 0,
            first_action: None,
            recovery_check: None,
        };
        self.incidents.insert(id.clone(), inc);
        self.dirty.insert(id.clone());
        self.out.push_back(Output::Opened {
            incident: id.clone(),
        });
        id
    }

    /// Put the alert's word into the incident.
    fn join(&mut self, now: i64, id: &str, key: &str, alert: &Alert) {
        let Some(inc) = self.incidents.get_mut(id) else {
            return;
        };
        inc.alert_count += 1;
        if inc.alerts.len() < MAX_ALERT_IDS {
            inc.alerts.push(alert.id.clone());
        }
        inc.last_alert_ms = now;
        if alert.status == Status::Firing && alert.severity > inc.severity {
            inc.severity = alert.severity;
        }
        inc.keys.insert(
            key.to_string(),
            KeyState {
                name: alert.name.clone(),
                firing: alert.status == Status::Firing,
                last_alert: alert.id.clone(),
                summary: alert.summary.clone(),
            },
        );
        if inc.keys.len() > MAX_KEYS {
            inc.keys.retain(|k, v| v.firing || k == key);
        }
        self.dirty.insert(id.to_string());
    }

    fn group_of(cfg: &PipelineConfig, alert: &Alert) -> String {
        cfg.path_group
            .as_ref()
            .and_then(|l| alert.label(l))
            .unwrap_or("")
            .to_string()
    }

    fn firing(
        &mut self,
        now: i64,
        cfg: &PipelineConfig,
        alert: &Alert,
        wait_ms: i64,
        rule: Option<usize>,
    ) {
        let host_key = (alert.contract.clone(), alert.host.clone());
        let key = cfg.dedupe_key(alert);
        let why_rule = rule.map_or(String::new(), |l| format!(" (rule at line {l})"));
        let id = match self.by_host.get(&host_key).cloned() {
            Some(id) => {
                self.join(now, &id, &key, alert);
                self.timeline(
                    &id,
                    now,
                    "alert",
                    format!("joined: {} {}", alert.name, alert.summary),
                    Some(&alert.id),
                );
                // A new problem on a host whose wait window ended: a
                // rule asking for a faster call shortens nothing, but a
                // recovered key firing again is news on the ticket.
                id
            }
            None => {
                let reopen = self
                    .last_closed
                    .get(&host_key)
                    .filter(|(_, at)| cfg.reopen_ms > 0 && now - at <= cfg.reopen_ms)
                    .map(|(id, _)| id.clone());
                let id = match reopen.and_then(|old| self.reopen(now, &old, alert, wait_ms)) {
                    Some(id) => id,
                    None => {
                        let id = self.new_incident(
                            now,
                            alert,
                            Kind::Host,
                            Some(alert.contract.clone()),
                            wait_ms,
                        );
                        self.timeline(
                            &id,
                            now,
                            "alert",
                            format!(
                                "opened by {} {}: {}; wait window {} s{why_rule}",
                                alert.source.as_str(),
                                alert.name,
                                alert.summary,
                                wait_ms / 1000
                            ),
                            Some(&alert.id),
                        );
                        self.choose_first_action(&id, cfg, alert);
                        id
                    }
                };
                self.by_host.insert(host_key.clone(), id.clone());
                id
            }
        };
        if !self
            .incidents
            .get(&id)
            .is_some_and(|i| i.keys.contains_key(&key))
        {
            self.join(now, &id, &key, alert);
        }
        // A rule that wants a faster call pulls the window in.
        if let Some(inc) = self.incidents.get_mut(&id) {
            if inc.state == State::Pending {
                let d = now.saturating_add(wait_ms);
                if inc.deadline_ms.is_none_or(|x| d < x) {
                    inc.deadline_ms = Some(d);
                }
            }
        }
        let group = Self::group_of(cfg, alert);
        // Under an open monitoring-path incident, or an inhibiting alert
        // with equal labels: held.
        let path = self
            .paths
            .get(&(alert.contract.clone(), group.clone()))
            .cloned()
            .or_else(|| self.inhibiting_path(cfg, alert));
        if let Some(p) = path {
            self.hold(now, &p, &id, "the monitoring path is down");
            self.out.push_back(Output::Alert {
                alert: alert.id.clone(),
                disposition: Disposition::Suppressed { incident: p },
            });
            return;
        }
        self.out.push_back(Output::Alert {
            alert: alert.id.clone(),
            disposition: Disposition::Incident {
                incident: id.clone(),
            },
        });
        if cfg.path_threshold > 0 {
            self.check_threshold(now, cfg, alert, &group);
        }
    }

    /// The open path incident opened by an inhibiting alert whose `equal`
    /// labels this alert shares.
    fn inhibiting_path(&self, cfg: &PipelineConfig, alert: &Alert) -> Option<String> {
        let mut ids: Vec<&String> = self
            .paths
            .iter()
            .filter(|((c, _), _)| c == &alert.contract)
            .map(|(_, id)| id)
            .collect();
        ids.sort();
        ids.into_iter()
            .find(|id| {
                let Some(p) = self.incidents.get(*id) else {
                    return false;
                };
                p.firing()
                    && cfg.inhibit.iter().any(|rule| {
                        rule.equal
                            .iter()
                            .all(|l| p.labels.get(l).map(String::as_str) == alert.label(l))
                    })
            })
            .cloned()
    }

    fn reopen(&mut self, now: i64, old: &str, alert: &Alert, wait_ms: i64) -> Option<String> {
        let _ = alert;
        // Closed incidents leave memory once stored; the driver restores
        // the one to reopen (`needs_reopen`) — here it may still be held.
        let inc = self.incidents.get_mut(old)?;
        inc.state = State::Pending;
        inc.deadline_ms = Some(now.saturating_add(wait_ms));
        inc.closed_ms = None;
        inc.reopened += 1;
        inc.escalation_done = false;
        inc.acked_by = None;
        inc.notification = None;
        inc.recovery_notice = false;
        inc.keys.clear();
        self.dirty.insert(old.to_string());
        self.timeline(
            old,
            now,
            "state",
            "closed → pending: reopened by a new occurrence inside the reopen window".into(),
            Some(&alert.id),
        );
        Some(old.to_string())
    }

    /// The incident a reopen would need, if the engine no longer holds it
    /// (the driver loads it from the store and calls [`Engine::restore_closed`]).
    pub fn needs_reopen(&self, now: i64, alert: &Alert) -> Option<String> {
        let cfg = self.contracts.get(&alert.contract)?;
        if alert.status != Status::Firing || cfg.reopen_ms == 0 {
            return None;
        }
        let key = (alert.contract.clone(), alert.host.clone());
        if self.by_host.contains_key(&key) {
            return None;
        }
        let (id, at) = self.last_closed.get(&key)?;
        (now - at <= cfg.reopen_ms && !self.incidents.contains_key(id)).then(|| id.clone())
    }

    /// Hand back a closed incident so it can be reopened.
    pub fn restore_closed(&mut self, inc: Incident) {
        if !inc.state.is_open() {
            self.incidents.insert(inc.id.clone(), inc);
        }
    }

    fn hold(&mut self, now: i64, path: &str, id: &str, why: &str) {
        let state = self.incidents.get(id).map(|i| i.state);
        if state != Some(State::Pending) && state != Some(State::Suppressed) {
            // Already calling or acknowledged before the path broke: the
            // call goes on; the host's story stays its own.
            return;
        }
        if state == Some(State::Pending) {
            self.set_state(now, id, State::Suppressed, why);
        }
        let newly = self
            .incidents
            .get_mut(path)
            .map(|p| p.holds.insert(id.to_string()))
            .unwrap_or(false);
        if let Some(inc) = self.incidents.get_mut(id) {
            inc.held_by = Some(path.to_string());
        }
        if newly {
            let host = self
                .incidents
                .get(id)
                .map(|i| i.host.clone())
                .unwrap_or_default();
            if let Some(p) = self.incidents.get_mut(path) {
                p.alert_count += 1;
                p.last_alert_ms = now;
            }
            self.dirty.insert(path.to_string());
            self.timeline(path, now, "held", format!("holds {host} ({id})"), None);
        }
    }

    fn path_incident(
        &mut self,
        now: i64,
        cfg: &PipelineConfig,
        alert: &Alert,
        group: &str,
        why: String,
    ) -> String {
        let pk = (alert.contract.clone(), group.to_string());
        if let Some(id) = self.paths.get(&pk) {
            return id.clone();
        }
        let id = self.new_incident(
            now,
            alert,
            Kind::MonitoringPath {
                group: group.to_string(),
            },
            cfg.monitoring_contract.clone(),
            cfg.wait_ms,
        );
        if let Some(inc) = self.incidents.get_mut(&id) {
            inc.severity = Severity::Critical;
            if let Some(l) = &cfg.path_group {
                inc.labels = [(l.clone(), group.to_string())].into();
            }
        }
        self.timeline(&id, now, "alert", why, Some(&alert.id));
        self.paths.insert(pk, id.clone());
        id
    }

    fn check_threshold(&mut self, now: i64, cfg: &PipelineConfig, alert: &Alert, group: &str) {
        let in_group = |i: &Incident| {
            i.contract == alert.contract
                && i.kind == Kind::Host
                && i.state == State::Pending
                && cfg
                    .path_group
                    .as_ref()
                    .is_none_or(|l| i.labels.get(l).map(String::as_str).unwrap_or("") == group)
        };
        let mut pending: Vec<String> = self
            .incidents
            .values()
            .filter(|i| in_group(i))
            .map(|i| i.id.clone())
            .collect();
        if pending.len() < cfg.path_threshold {
            return;
        }
        pending.sort();
        let why = format!(
            "{} hosts of contract {} failed inside the wait window (threshold {})",
            pending.len(),
            alert.contract,
            cfg.path_threshold
        );
        let path = self.path_incident(now, cfg, alert, group, why);
        for id in pending {
            self.hold(now, &path, &id, "many hosts at once: the monitoring path");
        }
    }

    fn inhibit_source(&mut self, now: i64, cfg: &PipelineConfig, alert: &Alert) {
        let group = Self::group_of(cfg, alert);
        let pk = (alert.contract.clone(), group.clone());
        let key = format!("inhibit\u{1f}{}", cfg.dedupe_key(alert));
        match alert.status {
            Status::Firing => {
                let why = format!(
                    "the monitoring system reports its own fault: {} {}",
                    alert.name, alert.summary
                );
                let existing = self.paths.get(&pk).cloned();
                let path = self.path_incident(now, cfg, alert, &group, why);
                if existing.is_none() {
                    if let Some(inc) = self.incidents.get_mut(&path) {
                        // The inhibiting alert's labels decide what it holds.
                        inc.labels = alert.labels.clone();
                    }
                }
                self.join(now, &path, &key, alert);
                // Hold every pending host incident with equal labels.
                let held: Vec<String> = {
                    let labels = &alert.labels;
                    let mut v: Vec<String> = self
                        .incidents
                        .values()
                        .filter(|i| {
                            i.contract == alert.contract
                                && i.kind == Kind::Host
                                && i.state == State::Pending
                                && cfg.inhibit.iter().any(|r| {
                                    all_match(&r.source, alert)
                                        && r.equal.iter().all(|l| i.labels.get(l) == labels.get(l))
                                })
                        })
                        .map(|i| i.id.clone())
                        .collect();
                    v.sort();
                    v
                };
                for id in held {
                    self.hold(
                        now,
                        &path,
                        &id,
                        "inhibited: the monitoring system's own alert is firing",
                    );
                }
                self.out.push_back(Output::Alert {
                    alert: alert.id.clone(),
                    disposition: Disposition::Incident { incident: path },
                });
            }
            Status::Resolved => {
                let Some(path) = self.paths.get(&pk).cloned() else {
                    self.record(
                        alert,
                        "recovery of a monitoring alert with no open incident",
                    );
                    return;
                };
                self.join(now, &path, &key, alert);
                self.timeline(
                    &path,
                    now,
                    "recovery",
                    format!("recovered: {} {}", alert.name, alert.summary),
                    Some(&alert.id),
                );
                self.out.push_back(Output::Alert {
                    alert: alert.id.clone(),
                    disposition: Disposition::Incident {
                        incident: path.clone(),
                    },
                });
                self.maybe_recover_path(now, &path);
            }
        }
    }

    fn resolved(&mut self, now: i64, cfg: &PipelineConfig, alert: &Alert) {
        let host_key = (alert.contract.clone(), alert.host.clone());
        let key = cfg.dedupe_key(alert);
        // By host; a sender that resolves by key alone (an event with a
        // dedup_key and no source) is found by the key.
        let by_key = || {
            let mut ids: Vec<&Incident> = self
                .incidents
                .values()
                .filter(|i| {
                    i.contract == alert.contract && i.kind == Kind::Host && i.state.is_open()
                })
                .filter(|i| i.keys.get(&key).is_some_and(|k| k.firing))
                .collect();
            ids.sort_by(|a, b| a.id.cmp(&b.id));
            ids.first().map(|i| i.id.clone())
        };
        let Some(id) = self
            .by_host
            .get(&host_key)
            .filter(|id| {
                self.incidents
                    .get(*id)
                    .is_some_and(|i| i.keys.contains_key(&key))
            })
            .cloned()
            .or_else(by_key)
        else {
            self.record(alert, "a recovery with no open incident for the host");
            return;
        };
        if !self
            .incidents
            .get(&id)
            .is_some_and(|i| i.keys.contains_key(&key))
        {
            self.record(alert, "a recovery for an alert the incident does not hold");
            return;
        }
        self.join(now, &id, &key, alert);
        self.timeline(
            &id,
            now,
            "recovery",
            format!("recovered: {} {}", alert.name, alert.summary),
            Some(&alert.id),
        );
        let held_by = self.incidents.get(&id).and_then(|i| i.held_by.clone());
        self.out.push_back(Output::Alert {
            alert: alert.id.clone(),
            disposition: match &held_by {
                Some(p) => Disposition::Suppressed {
                    incident: p.clone(),
                },
                None => Disposition::Incident {
                    incident: id.clone(),
                },
            },
        });
        if self.incidents.get(&id).is_some_and(|i| i.firing()) {
            return;
        }
        self.recover(now, &id, cfg.recovery);
        if let Some(p) = held_by {
            self.maybe_recover_path(now, &p);
        }
    }

    /// Every key of the incident has recovered.
    fn recover(&mut self, now: i64, id: &str, notice: RecoveryNotice) {
        let Some(inc) = self.incidents.get(id) else {
            return;
        };
        match inc.state {
            State::Pending => {
                self.set_state(
                    now,
                    id,
                    State::Recovered,
                    "flap: recovered inside the wait window, nobody called",
                );
                self.close(now, id, "closed without a call");
            }
            State::Suppressed => {
                self.set_state(
                    now,
                    id,
                    State::Recovered,
                    "recovered while held under the monitoring path",
                );
                self.close(now, id, "closed");
            }
            State::Notifying | State::Acknowledged => {
                let (running, notification, called) = (
                    !inc.escalation_done,
                    inc.notification.clone(),
                    inc.notifications > 0,
                );
                if running {
                    self.out.push_back(Output::Cancel {
                        incident: id.to_string(),
                        notification,
                        reason: "recovered".into(),
                    });
                    self.timeline(
                        id,
                        now,
                        "cancel",
                        "the escalation is cancelled: recovered".into(),
                        None,
                    );
                }
                self.set_state(now, id, State::Recovered, "the recovery alert arrived");
                self.notice(id, NoticeEvent::Recovery, String::new());
                if notice == RecoveryNotice::Call && called {
                    // A call must still end before the close: the
                    // cancelled escalation, then the notice.
                    if let Some(inc) = self.incidents.get_mut(id) {
                        inc.recovered_ms = Some(now);
                        inc.recovery_wanted = running;
                    }
                    if !running {
                        self.notify(now, id, true);
                    }
                } else {
                    self.close_recovered(now, id, "recovered");
                }
            }
            State::Recovered | State::Closed | State::Expired => {}
        }
    }

    fn maybe_recover_path(&mut self, now: i64, path: &str) {
        let Some(p) = self.incidents.get(path) else {
            return;
        };
        let open_held = p
            .holds
            .iter()
            .any(|h| self.incidents.get(h).is_some_and(|i| i.state.is_open()));
        if p.firing() || open_held {
            return;
        }
        self.recover(now, path, RecoveryNotice::None);
    }

    fn close(&mut self, now: i64, id: &str, why: &str) {
        let Some(inc) = self.incidents.get_mut(id) else {
            return;
        };
        inc.closed_ms = Some(now);
        let (kind, contract, host, held_by) = (
            inc.kind.clone(),
            inc.contract.clone(),
            inc.host.clone(),
            inc.held_by.clone(),
        );
        let to = if inc.state == State::Recovered || inc.state == State::Suppressed {
            State::Closed
        } else {
            State::Expired
        };
        self.set_state(now, id, to, why);
        match kind {
            Kind::Host => {
                let key = (contract, host);
                if self.by_host.get(&key).map(String::as_str) == Some(id) {
                    self.by_host.remove(&key);
                }
                self.last_closed.insert(key, (id.to_string(), now));
            }
            Kind::MonitoringPath { group } => {
                self.paths.remove(&(contract, group));
            }
            Kind::Heartbeat { name } => {
                if let Some(h) = self.heartbeats.get_mut(&(contract, name)) {
                    if h.incident.as_deref() == Some(id) {
                        h.incident = None;
                        self.heartbeats_dirty = true;
                    }
                }
            }
        }
        self.out.push_back(Output::Closed {
            incident: id.to_string(),
        });
        if let Some(p) = held_by {
            self.maybe_recover_path(now, &p);
        }
    }

    fn notify(&mut self, now: i64, id: &str, recovery: bool) {
        let Some(inc) = self.incidents.get_mut(id) else {
            return;
        };
        if inc.notify_contract.is_none() {
            self.timeline(
                id,
                now,
                "notify",
                "no monitoring contract is configured: nobody is called".into(),
                None,
            );
            return;
        }
        inc.notifications += 1;
        inc.notify_pending = true;
        inc.recovery_notice = recovery;
        inc.escalation_done = false;
        inc.notification = None;
        self.dirty.insert(id.to_string());
        self.out.push_back(Output::Notify {
            incident: id.to_string(),
        });
    }

    /// A customer notice, when the incident is a customer's host and its
    /// contract names recipients for the event (monitoring-path and
    /// heartbeat incidents are the centre's own business).
    fn notice(&mut self, id: &str, event: NoticeEvent, detail: String) {
        let Some(inc) = self.incidents.get(id) else {
            return;
        };
        if inc.kind != Kind::Host {
            return;
        }
        let wanted = self
            .contracts
            .get(&inc.contract)
            .is_some_and(|c| !c.notices.recipients(event).is_empty());
        if wanted {
            self.out.push_back(Output::Mail {
                incident: id.to_string(),
                event,
                detail,
            });
        }
    }

    // ---- the clock --------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: i64) {
        let mut due: Vec<(i64, String)> = self
            .incidents
            .values()
            .filter(|i| i.state == State::Pending && i.deadline_ms.is_some_and(|d| d <= now))
            .map(|i| (i.deadline_ms.unwrap_or(now), i.id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            if self.start_first_action(now, &id) {
                continue;
            }
            let notify = self
                .incidents
                .get(&id)
                .and_then(|i| i.notify_contract.clone());
            let why = match &notify {
                Some(c) => format!("the wait window ended; calling contract {c}"),
                None => "the wait window ended; no monitoring contract, nobody is called".into(),
            };
            self.set_state(now, &id, State::Notifying, &why);
            self.notice(&id, NoticeEvent::Occurrence, String::new());
            self.notify(now, &id, false);
            if notify.is_none() {
                if let Some(inc) = self.incidents.get_mut(&id) {
                    inc.escalation_done = true;
                }
            }
        }
        let mut stuck: Vec<(String, Option<String>)> = self
            .incidents
            .values()
            .filter(|i| {
                i.state == State::Recovered
                    && i.recovered_ms
                        .is_some_and(|t| now - t >= self.recovered_wait_ms)
            })
            .map(|i| (i.id.clone(), i.notification.clone()))
            .collect();
        stuck.sort();
        for (id, notification) in stuck {
            self.recovered_too_long(now, &id, notification);
        }
        let expired: Vec<String> = self
            .incidents
            .values()
            .filter(|i| {
                (i.state == State::Acknowledged
                    || (i.state == State::Notifying && i.escalation_done))
                    && now - i.last_alert_ms >= self.expire_ms
            })
            .map(|i| i.id.clone())
            .collect();
        for id in expired {
            self.close(now, &id, "expired: no recovery and no alert heard");
        }
        let silent: Vec<(String, String, i64)> = self
            .heartbeats
            .iter()
            .filter(|(_, h)| h.incident.is_none())
            .filter_map(|((c, n), h)| {
                let p = self.contracts.get(c)?;
                let hb = p.heartbeats.iter().find(|x| &x.name == n)?;
                (now - h.last_ms >= hb.interval_ms && now >= h.grace_until_ms)
                    .then(|| (c.clone(), n.clone(), h.last_ms))
            })
            .collect();
        for (contract, name, last) in silent {
            let Some(cfg) = self.contracts.get(&contract).cloned() else {
                continue;
            };
            let pseudo = Alert {
                id: format!("al_hb{now:012x}{}", self.heartbeats.len()),
                contract: contract.clone(),
                source: super::alert::Source::Events,
                status: Status::Firing,
                key: format!("heartbeat/{name}"),
                host: String::new(),
                name: name.clone(),
                severity: Severity::Critical,
                summary: format!("no heartbeat since {} s", (now - last) / 1000),
                labels: BTreeMap::new(),
                starts_ms: Some(last),
                received_ms: now,
            };
            let id = self.new_incident(
                now,
                &pseudo,
                Kind::Heartbeat { name: name.clone() },
                cfg.monitoring_contract.clone(),
                0,
            );
            if let Some(inc) = self.incidents.get_mut(&id) {
                inc.keys.insert(
                    pseudo.key.clone(),
                    KeyState {
                        name: name.clone(),
                        firing: true,
                        last_alert: String::new(),
                        summary: pseudo.summary.clone(),
                    },
                );
            }
            self.timeline(
                &id,
                now,
                "alert",
                format!("heartbeat {name} silent for {} s", (now - last) / 1000),
                None,
            );
            if let Some(h) = self.heartbeats.get_mut(&(contract, name)) {
                h.incident = Some(id);
                self.heartbeats_dirty = true;
            }
        }
        // A heartbeat incident is called at once (its wait is 0).
        let zero: Vec<String> = self
            .incidents
            .values()
            .filter(|i| i.state == State::Pending && i.deadline_ms.is_some_and(|d| d <= now))
            .map(|i| i.id.clone())
            .collect();
        if !zero.is_empty() {
            self.handle_timeout(now);
        }
    }

    /// A recovered incident whose call never reported its end: asked to
    /// stop once more (the first cancel may have met a gateway that was
    /// down) and closed without the recovery notice.
    fn recovered_too_long(&mut self, now: i64, id: &str, notification: Option<String>) {
        let Some(inc) = self.incidents.get_mut(id) else {
            return;
        };
        let waiting = if inc
            .recovery_check
            .as_ref()
            .is_some_and(|c| c.state == FirstActionState::Running)
        {
            "the recovery verify never reported".to_string()
        } else if inc.notify_pending {
            "the gateway never confirmed the call".to_string()
        } else {
            match &notification {
                Some(n) => format!("the gateway never reported the end of notification {n}"),
                None => "the gateway never reported the end of the call".to_string(),
            }
        };
        let notice = inc.recovery_notice;
        let call_open = !inc.escalation_done || inc.notify_pending;
        let verifying = inc
            .recovery_check
            .as_ref()
            .is_some_and(|c| c.state == FirstActionState::Running);
        if let Some(c) = inc.recovery_check.as_mut() {
            c.state = FirstActionState::Failed;
        }
        inc.recovery_wanted = false;
        inc.escalation_done = true;
        inc.notify_pending = false;
        inc.recovered_ms = None;
        if let (Some(n), true) = (notification, call_open) {
            self.out.push_back(Output::Cancel {
                incident: id.to_string(),
                notification: Some(n),
                reason: "recovered".into(),
            });
        }
        let secs = self.recovered_wait_ms / 1000;
        let what = if verifying {
            "the recovery verify's result"
        } else if notice {
            "the recovery notice's end"
        } else {
            "the cancelled escalation's end"
        };
        self.timeline(
            id,
            now,
            "notify",
            format!("{waiting} within {secs} s; closed without waiting longer for {what}"),
            None,
        );
        self.close(
            now,
            id,
            &format!("recovered; {what} was not heard within {secs} s"),
        );
    }

    fn heartbeat_seen(&mut self, now: i64, contract: &str, name: &str, alert: &Alert) {
        let k = (contract.to_string(), name.to_string());
        let h = self.heartbeats.entry(k).or_insert_with(|| HeartbeatState {
            contract: contract.to_string(),
            name: name.to_string(),
            last_ms: now,
            incident: None,
            grace_until_ms: 0,
        });
        h.last_ms = now;
        let raised = h.incident.take();
        self.heartbeats_dirty = true;
        self.out.push_back(Output::Alert {
            alert: alert.id.clone(),
            disposition: Disposition::Heartbeat {
                name: name.to_string(),
            },
        });
        if let Some(id) = raised {
            if let Some(inc) = self.incidents.get_mut(&id) {
                for k in inc.keys.values_mut() {
                    k.firing = false;
                }
            }
            self.timeline(
                &id,
                now,
                "recovery",
                format!("heartbeat {name} is back"),
                Some(&alert.id),
            );
            self.recover(now, &id, RecoveryNotice::None);
        }
    }

    // ---- the gateway ------------------------------------------------------------

    /// The gateway accepted the notification (its id). True when the
    /// engine asked for it to be cancelled at once (the incident
    /// recovered or closed while the request was under way); a driver
    /// cancels on its own only what the engine no longer holds.
    pub fn handle_notified(&mut self, now: i64, incident: &str, notification: &str) -> bool {
        let Some(inc) = self.incidents.get_mut(incident) else {
            return false;
        };
        inc.notify_pending = false;
        inc.notification = Some(notification.to_string());
        let what = if inc.recovery_notice {
            "recovery notice"
        } else {
            "escalation"
        };
        // Recovered or closed before the gateway named the escalation
        // (perhaps before a restart, which forgets the driver's wish to
        // cancel on confirmation): it is cancelled now; its end brings
        // the recovery notice, if one is wanted.
        let state = inc.state;
        let stale = !inc.recovery_notice
            && matches!(state, State::Recovered | State::Closed | State::Expired);
        self.dirty.insert(incident.to_string());
        self.timeline(
            incident,
            now,
            "notify",
            format!("{what} started: notification {notification}"),
            None,
        );
        if stale {
            self.out.push_back(Output::Cancel {
                incident: incident.to_string(),
                notification: Some(notification.to_string()),
                reason: if state == State::Recovered {
                    "recovered".into()
                } else {
                    "closed".into()
                },
            });
        }
        stale
    }

    /// The gateway refused the notification for good (a 4xx): recorded,
    /// not retried.
    pub fn handle_notify_refused(&mut self, now: i64, incident: &str, why: &str) {
        let Some(inc) = self.incidents.get_mut(incident) else {
            return;
        };
        inc.notify_pending = false;
        inc.escalation_done = true;
        let recovery = inc.recovery_notice;
        let wanted = std::mem::take(&mut inc.recovery_wanted);
        let state = inc.state;
        self.dirty.insert(incident.to_string());
        self.timeline(
            incident,
            now,
            "notify",
            format!("the gateway refused the call: {why}"),
            None,
        );
        if !recovery && state == State::Notifying {
            // Nobody will be called: for the customer this is the
            // escalation ending with nobody taking it.
            self.notice(
                incident,
                NoticeEvent::Exhausted,
                format!("the gateway refused the call: {why}"),
            );
        }
        if wanted && !recovery {
            // Recovered while the refused escalation was being asked for:
            // nobody was told of the fault, so nobody is told it is over.
            self.close(
                now,
                incident,
                "recovered (the escalation was refused; no recovery notice)",
            );
            return;
        }
        if recovery {
            self.close_recovered(
                now,
                incident,
                "recovered (the recovery notice could not be sent)",
            );
        }
    }

    /// The gateway's final word on the incident's notification.
    pub fn handle_outcome(
        &mut self,
        now: i64,
        incident: &str,
        notification: &str,
        outcome: GatewayOutcome,
    ) {
        let Some(inc) = self.incidents.get_mut(incident) else {
            return;
        };
        if inc
            .notification
            .as_deref()
            .is_some_and(|n| n != notification)
        {
            // An older notification's late word.
            return;
        }
        inc.notify_pending = false;
        inc.notification = Some(notification.to_string());
        inc.escalation_done = true;
        let (state, recovery, wanted) = (inc.state, inc.recovery_notice, inc.recovery_wanted);
        inc.recovery_wanted = false;
        self.dirty.insert(incident.to_string());
        if wanted && !recovery {
            self.notify(now, incident, true);
            return;
        }
        if recovery {
            self.close_recovered(now, incident, "recovered; recovery notice done");
            return;
        }
        match outcome {
            GatewayOutcome::Acked { by } if state == State::Notifying => {
                if let Some(inc) = self.incidents.get_mut(incident) {
                    inc.acked_by = by.clone();
                }
                let who = by.map_or_else(|| "someone".into(), |b| b.to_string());
                self.set_state(
                    now,
                    incident,
                    State::Acknowledged,
                    &format!("acknowledged by {who} on the phone"),
                );
            }
            GatewayOutcome::Acked { .. } => {}
            GatewayOutcome::Ended { state: s } => {
                self.notice(incident, NoticeEvent::Exhausted, format!("escalation {s}"));
                self.timeline(
                    incident,
                    now,
                    "notify",
                    format!("the escalation ended {s}: nobody took it"),
                    None,
                );
            }
        }
    }

    /// A person closed the incident (API or ticket system).
    pub fn handle_close(&mut self, now: i64, incident: &str, by: &str) -> bool {
        let Some(inc) = self.incidents.get(incident) else {
            return false;
        };
        if !inc.state.is_open() {
            return false;
        }
        if !inc.escalation_done && inc.notifications > 0 {
            self.out.push_back(Output::Cancel {
                incident: incident.to_string(),
                notification: inc.notification.clone(),
                reason: format!("closed by {by}"),
            });
        }
        if let Some(inc) = self.incidents.get_mut(incident) {
            inc.escalation_done = true;
            for k in inc.keys.values_mut() {
                k.firing = false;
            }
        }
        self.set_state(now, incident, State::Recovered, &format!("closed by {by}"));
        self.close(now, incident, &format!("closed by {by}"));
        true
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

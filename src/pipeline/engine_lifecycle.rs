//! An incident's life, the steps every handler shares (a child module
//! of `engine`): opening, joining, state changes with their timeline,
//! the recovery, the close, and what is asked of the gateway and the
//! customer's notice mail.

use std::collections::{BTreeMap, BTreeSet};

use super::{Engine, Incident, KeyState, Kind, Output, State, MAX_ALERT_IDS, MAX_KEYS};
use crate::pipeline::alert::{Alert, Status};
use crate::pipeline::config::RecoveryNotice;
use crate::pipeline::notice_mail::NoticeEvent;

impl Engine {
    pub(super) fn timeline(
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

    pub(super) fn set_state(&mut self, now: i64, id: &str, to: State, why: &str) {
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

    pub(super) fn new_incident(
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
    pub(super) fn join(&mut self, now: i64, id: &str, key: &str, alert: &Alert) {
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

    /// Every key of the incident has recovered.
    pub(super) fn recover(&mut self, now: i64, id: &str, notice: RecoveryNotice) {
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

    pub(super) fn close(&mut self, now: i64, id: &str, why: &str) {
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

    pub(super) fn notify(&mut self, now: i64, id: &str, recovery: bool) {
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
    pub(super) fn notice(&mut self, id: &str, event: NoticeEvent, detail: String) {
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
}

//! Alerts into incidents, the engine's side (a child module of `engine`,
//! so it shares the engine's private state): silences, the sender's own
//! acknowledgements, a host's firing alerts opening, joining or
//! reopening its incident, and their recoveries. Monitoring-path
//! grouping and inhibition are in `engine_path.rs`.

use super::{Disposition, Engine, Incident, Kind, Output, State};
use crate::pipeline::alert::{Alert, Status};
use crate::pipeline::config::{all_match, Decision, PipelineConfig};

impl Engine {
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

    pub(super) fn record(&mut self, alert: &Alert, why: &str) {
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

    pub(super) fn group_of(cfg: &PipelineConfig, alert: &Alert) -> String {
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
}

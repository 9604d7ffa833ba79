//! The monitoring path, the engine's side (a child module of `engine`):
//! many hosts failing at once, or the monitoring system's own alert
//! (inhibition), open one monitoring-path incident that holds the
//! hosts' incidents, so the customer is not called for each; it recovers
//! when its alert has and nothing it holds is open.

use super::{Disposition, Engine, Incident, Kind, Output, State};
use crate::pipeline::alert::{Alert, Severity, Status};
use crate::pipeline::config::{all_match, PipelineConfig, RecoveryNotice};

impl Engine {
    /// The open path incident opened by an inhibiting alert whose `equal`
    /// labels this alert shares.
    pub(super) fn inhibiting_path(&self, cfg: &PipelineConfig, alert: &Alert) -> Option<String> {
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

    pub(super) fn hold(&mut self, now: i64, path: &str, id: &str, why: &str) {
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

    pub(super) fn check_threshold(
        &mut self,
        now: i64,
        cfg: &PipelineConfig,
        alert: &Alert,
        group: &str,
    ) {
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

    pub(super) fn inhibit_source(&mut self, now: i64, cfg: &PipelineConfig, alert: &Alert) {
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

    pub(super) fn maybe_recover_path(&mut self, now: i64, path: &str) {
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
}

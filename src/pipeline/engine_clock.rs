//! The clock, the engine's side (a child module of `engine`): wait
//! windows that end, recovered incidents whose call never reported its
//! end, incidents expiring without a word, and heartbeats that stop and
//! come back.

use std::collections::BTreeMap;

use super::{Disposition, Engine, FirstActionState, HeartbeatState, KeyState, Kind, Output, State};
use crate::pipeline::alert::{Alert, Severity, Source, Status};
use crate::pipeline::config::RecoveryNotice;
use crate::pipeline::notice_mail::NoticeEvent;

impl Engine {
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
                source: Source::Events,
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

    pub(super) fn heartbeat_seen(&mut self, now: i64, contract: &str, name: &str, alert: &Alert) {
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
}

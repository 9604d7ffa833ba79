//! The gateway's word on a notification, and a person's close, the
//! engine's side (a child module of `engine`).

use super::{Engine, GatewayOutcome, Output, State};
use crate::pipeline::notice_mail::NoticeEvent;

impl Engine {
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

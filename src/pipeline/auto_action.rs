//! First-level actions without a call, the engine's side (a child
//! module of `engine`, so it shares the engine's private state): a new
//! host incident whose first alert matches a contract's
//! `[[pipeline.auto_actions]]` rule runs that action when its wait window
//! ends ([`Output::RunAction`]); the driver runs it through the gateway's
//! action API (same checks, inventory, slot, audit as a call's run) and
//! hands the result back ([`Engine::handle_action_result`]); the contract
//! decides what follows.
//!
//! Order: `handle_alert` (rule chosen) → `handle_timeout` (RunAction) →
//! `handle_action_result` → mail only, a call to inform, or the
//! escalation with the failure in its message.

use serde::{Deserialize, Serialize};

use super::{Engine, Output, State};
use crate::pipeline::alert::Alert;
use crate::pipeline::config::{all_match, OnSuccess, PipelineConfig};
use crate::pipeline::notice_mail::NoticeEvent;

/// Where an incident's first-level action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstActionState {
    /// Chosen at the opening; runs when the wait window ends.
    Chosen,
    Running,
    Succeeded,
    Failed,
}

/// An incident's first-level action, stored with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstAction {
    pub action: String,
    pub on_success: OnSuccess,
    pub state: FirstActionState,
    /// What the run did, in words (the timeline's and the call's).
    #[serde(default)]
    pub result: Option<String>,
}

/// The contract's `recovery_verify` run on a recovered incident: the
/// ticket closes once its result is on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCheck {
    pub action: String,
    pub state: FirstActionState,
    /// Why the incident closes, once the check has ended.
    pub close_why: String,
}

/// A finished run, as the driver tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    /// Fixed and verified, or the check found nothing to fix.
    pub ok: bool,
    /// One line: what ran and how it ended.
    pub text: String,
    /// One line per step run, in order (`action_run::step_lines`): each
    /// goes on the timeline, so on the ticket, before `text`.
    pub steps: Vec<String>,
    /// Run by the pipeline itself before any call (else an operator's).
    pub automatic: bool,
}

impl Engine {
    /// At the opening: the first rule matching the alert, if any.
    pub(super) fn choose_first_action(&mut self, id: &str, cfg: &PipelineConfig, alert: &Alert) {
        let Some(rule) = cfg
            .auto_actions
            .iter()
            .find(|r| all_match(&r.matchers, alert))
        else {
            return;
        };
        if let Some(inc) = self.incidents.get_mut(id) {
            inc.first_action = Some(FirstAction {
                action: rule.action.clone(),
                on_success: rule.on_success,
                state: FirstActionState::Chosen,
                result: None,
            });
            self.dirty.insert(id.to_string());
        }
    }

    /// The wait window ended: run the chosen action instead of calling.
    /// True when it did (the caller then does not notify).
    pub(super) fn start_first_action(&mut self, now: i64, id: &str) -> bool {
        let Some(inc) = self.incidents.get_mut(id) else {
            return false;
        };
        let Some(fa) = inc.first_action.as_mut() else {
            return false;
        };
        if fa.state != FirstActionState::Chosen {
            return false;
        }
        fa.state = FirstActionState::Running;
        let action = fa.action.clone();
        self.set_state(
            now,
            id,
            State::Notifying,
            &format!(
                "the wait window ended; first-level action {action} runs before anyone is called"
            ),
        );
        self.notice(id, NoticeEvent::Occurrence, String::new());
        self.out.push_back(Output::RunAction {
            incident: id.to_string(),
            action,
        });
        true
    }

    /// A called incident recovered and is about to close: the
    /// contract's `recovery_verify` runs first, and the close waits for
    /// its result (or for the recovered wait, if the result is lost).
    pub(super) fn close_recovered(&mut self, now: i64, id: &str, why: &str) {
        let Some(inc) = self.incidents.get(id) else {
            return;
        };
        let verify = self
            .contracts
            .get(&inc.contract)
            .and_then(|c| c.recovery_verify.clone());
        let first_running = inc
            .first_action
            .as_ref()
            .is_some_and(|f| f.state == FirstActionState::Running);
        let action = match verify {
            Some(a)
                if inc.recovery_check.is_none()
                    && !first_running
                    && inc.kind == super::Kind::Host =>
            {
                a
            }
            _ => {
                self.close(now, id, why);
                return;
            }
        };
        if let Some(inc) = self.incidents.get_mut(id) {
            inc.recovery_check = Some(RecoveryCheck {
                action: action.clone(),
                state: FirstActionState::Running,
                close_why: why.to_string(),
            });
            inc.recovered_ms = Some(now);
        }
        self.dirty.insert(id.to_string());
        self.timeline(
            id,
            now,
            "action",
            format!("recovery verify: action {action} runs before the ticket closes"),
            None,
        );
        self.out.push_back(Output::RunAction {
            incident: id.to_string(),
            action,
        });
    }

    /// The recovery verify's result: on the timeline (so on the ticket),
    /// then the close. True when `r` was that result.
    fn recovery_check_result(&mut self, now: i64, incident: &str, r: &ActionReport) -> bool {
        let Some(inc) = self.incidents.get_mut(incident) else {
            return false;
        };
        let Some(check) = inc.recovery_check.as_mut() else {
            return false;
        };
        if !r.automatic || check.state != FirstActionState::Running {
            return false;
        }
        check.state = if r.ok {
            FirstActionState::Succeeded
        } else {
            FirstActionState::Failed
        };
        let why = check.close_why.clone();
        inc.recovered_ms = None;
        self.dirty.insert(incident.to_string());
        let (verdict, close) = if r.ok {
            ("recovery verified", format!("{why}; recovery verified"))
        } else {
            (
                "recovery verify failed",
                format!("{why}; the recovery verify failed"),
            )
        };
        self.step_timeline(now, incident, &r.steps);
        self.timeline(
            incident,
            now,
            "action",
            format!("{verdict}: {}", r.text),
            None,
        );
        self.notice(incident, NoticeEvent::Action, r.text.clone());
        self.close(now, incident, &close);
        true
    }

    /// A run's steps, one timeline entry each, in the order they ran.
    fn step_timeline(&mut self, now: i64, incident: &str, steps: &[String]) {
        for s in steps {
            self.timeline(incident, now, "action", s.clone(), None);
        }
    }

    /// A run on the incident ended (the pipeline's own or an operator's).
    /// Its line goes on the timeline and to the `action` notice; an
    /// automatic run's result decides who is called.
    pub fn handle_action_result(&mut self, now: i64, incident: &str, r: ActionReport) {
        if !self.incidents.contains_key(incident) {
            return;
        }
        if self.recovery_check_result(now, incident, &r) {
            return;
        }
        // An operator's run is on the timeline already (the API writes it
        // before it answers).
        if r.automatic {
            self.step_timeline(now, incident, &r.steps);
            self.timeline(incident, now, "action", r.text.clone(), None);
        }
        self.notice(incident, NoticeEvent::Action, r.text.clone());
        if !r.automatic {
            return;
        }
        let Some(inc) = self.incidents.get_mut(incident) else {
            return;
        };
        let Some(fa) = inc.first_action.as_mut() else {
            return;
        };
        if fa.state != FirstActionState::Running {
            return;
        }
        fa.state = if r.ok {
            FirstActionState::Succeeded
        } else {
            FirstActionState::Failed
        };
        fa.result = Some(r.text.clone());
        let on_success = fa.on_success;
        let state = inc.state;
        self.dirty.insert(incident.to_string());
        if state != State::Notifying {
            // Recovered or closed while it ran: nobody to call.
            return;
        }
        match (r.ok, on_success) {
            (true, OnSuccess::Mail) => {
                if let Some(inc) = self.incidents.get_mut(incident) {
                    inc.escalation_done = true;
                }
                self.timeline(
                    incident,
                    now,
                    "notify",
                    "fixed by the first-level action and verified: nobody is called".into(),
                    None,
                );
            }
            (true, OnSuccess::Call) => {
                self.timeline(
                    incident,
                    now,
                    "notify",
                    "fixed by the first-level action and verified: calling to inform".into(),
                    None,
                );
                self.notify(now, incident, false);
            }
            (false, _) => {
                self.timeline(
                    incident,
                    now,
                    "notify",
                    "the first-level action did not fix it: the escalation starts".into(),
                    None,
                );
                self.notify(now, incident, false);
            }
        }
    }

    /// After a restart, a run that was under way has no result to come:
    /// it counts as failed, so somebody is called rather than nobody.
    pub fn lost_first_actions(&mut self, now: i64) {
        let mut lost: Vec<String> = self
            .incidents
            .values()
            .filter(|i| {
                i.first_action
                    .as_ref()
                    .is_some_and(|f| f.state == FirstActionState::Running)
                    || i.recovery_check
                        .as_ref()
                        .is_some_and(|c| c.state == FirstActionState::Running)
            })
            .map(|i| i.id.clone())
            .collect();
        lost.sort();
        for id in lost {
            self.handle_action_result(
                now,
                &id,
                ActionReport {
                    ok: false,
                    text: "the action's result was lost in a restart".into(),
                    steps: Vec::new(),
                    automatic: true,
                },
            );
        }
    }
}

#[cfg(test)]
#[path = "auto_action_tests.rs"]
mod tests;

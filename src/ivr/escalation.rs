//! The escalation scheduler, sans-IO: who to call next, when, and when to
//! stop. All times are Unix epoch milliseconds, so the state can be stored
//! and resumed after a restart (it is `serde`-serialisable).
//!
//! Call order: [`Escalation::start`], then feed [`Escalation::call_ended`]
//! for each dial it asked for, [`Escalation::cancel`] when the alert is
//! resolved, and [`Escalation::handle_timeout`] at [`Escalation::poll_timeout`];
//! drain [`Escalation::poll_output`] after each.

use std::collections::VecDeque;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::dialplan::{Dialplan, OnActionFailure, Policy};
use super::outcome::{ActionEnd, Outcome};
use super::window;

/// What the scheduler asks for or reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EscalationOutput {
    /// Call this contact now (index into the dialplan's contacts).
    Dial {
        attempt: u32,
        contact: usize,
        round: u32,
    },
    /// Hang up the call of this attempt (cancelled: "resolved" is said if answered).
    Cancel {
        attempt: u32,
    },
    /// A contact was skipped (outside its time window, or left).
    Skipped {
        contact: usize,
        round: u32,
        reason: SkipReason,
    },
    Finished(Final),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    OutsideWindow,
    Left,
}

/// How the whole escalation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Final {
    Acked {
        contact: usize,
        attempt: u32,
        at_ms: i64,
        /// Recorded by an operator for someone on the phone (the console's
        /// "acknowledge for someone"), not by a key press.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        console: Option<OperatorAck>,
    },
    /// A callee's maintenance action ended it: it fixed the problem (or
    /// found none), or it failed and the contract says to stop.
    Action {
        contact: usize,
        attempt: u32,
        action: String,
        result: ActionEnd,
        at_ms: i64,
    },
    /// Every round was tried and nobody responded.
    Exhausted {
        at_ms: i64,
    },
    Cancelled {
        at_ms: i64,
        reason: String,
    },
}

/// An acknowledgement an operator records for someone who answered the
/// centre on the phone: it ends the escalation as an acknowledgement
/// (counted as one in the reports), not as a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAck {
    /// Who acknowledged (the person on the phone).
    pub by: String,
    /// The token that recorded it.
    pub operator: String,
    pub reason: String,
}

/// One attempt and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub contact: usize,
    pub round: u32,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    NotStarted,
    /// Waiting until `until` before the next dial.
    Pausing {
        until: i64,
    },
    Calling {
        attempt: u32,
    },
    /// Cancel requested while a call is up; waiting for it to end.
    Cancelling {
        attempt: u32,
        reason: String,
    },
    /// An operator acknowledged for someone while a call was up; waiting
    /// for that call to end (it is hung up as a cancel would).
    Acking {
        attempt: u32,
        ack: OperatorAck,
        at_ms: i64,
    },
    Done,
}

/// What the scheduler needs of a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactSlot {
    pub name: String,
    pub timezone: String,
    pub when: Vec<String>,
    pub left: bool,
}

/// The scheduler. Serialisable; rebuild the policy from the dialplan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalation {
    rounds: u32,
    ring_timeout_ms: i64,
    between_calls_ms: i64,
    between_rounds_ms: i64,
    stop_on_ack: bool,
    #[serde(default)]
    end_on_action_failure: bool,
    holidays: Vec<NaiveDate>,
    contacts: Vec<ContactSlot>,
    round: u32,
    /// Next contact index to consider in this round.
    cursor: usize,
    attempts: Vec<Attempt>,
    state: State,
    /// How it ended, once it has: a resume after the end was decided but
    /// before the final state was stored says it again.
    #[serde(default)]
    ended: Option<Final>,
    #[serde(skip)]
    out: VecDeque<EscalationOutput>,
}

impl Escalation {
    pub fn new(plan: &Dialplan) -> Escalation {
        Self::from_policy(
            &plan.escalation,
            plan.holidays.clone(),
            plan.contacts
                .iter()
                .map(|c| ContactSlot {
                    name: c.name.clone(),
                    timezone: c.timezone.clone(),
                    when: c.when.clone(),
                    left: false,
                })
                .collect(),
        )
    }

    pub fn from_policy(
        p: &Policy,
        holidays: Vec<NaiveDate>,
        contacts: Vec<ContactSlot>,
    ) -> Escalation {
        Escalation {
            rounds: p.rounds,
            ring_timeout_ms: p.ring_timeout.as_millis() as i64,
            between_calls_ms: p.between_calls.as_millis() as i64,
            between_rounds_ms: p.between_rounds.as_millis() as i64,
            end_on_action_failure: p.on_action_failure == OnActionFailure::End,
            stop_on_ack: p.stop_on_ack,
            holidays,
            contacts,
            round: 1,
            cursor: 0,
            attempts: Vec::new(),
            state: State::NotStarted,
            ended: None,
            out: VecDeque::new(),
        }
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    pub fn ring_timeout_ms(&self) -> i64 {
        self.ring_timeout_ms
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The attempt whose call is up or ringing, if any.
    pub fn active_attempt(&self) -> Option<u32> {
        match self.state {
            State::Calling { attempt }
            | State::Cancelling { attempt, .. }
            | State::Acking { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    pub fn start(&mut self, now_ms: i64) {
        match self.state {
            State::NotStarted => self.scan(now_ms),
            // Resumed after its end was decided (and checkpointed) but
            // before the final state was stored: without its ending
            // again it would wait for nothing, forever. A state stored
            // before `ended` existed counts as exhausted.
            State::Done if self.out.is_empty() => {
                let f = self
                    .ended
                    .clone()
                    .unwrap_or(Final::Exhausted { at_ms: now_ms });
                self.out.push_back(EscalationOutput::Finished(f));
            }
            _ => {}
        }
    }

    fn available(&self, i: usize, now_ms: i64) -> Result<(), SkipReason> {
        let c = &self.contacts[i];
        if c.left {
            return Err(SkipReason::Left);
        }
        let tz = c.timezone.parse().unwrap_or(chrono_tz::Tz::UTC);
        let windows: Vec<window::Window> = c
            .when
            .iter()
            .filter_map(|w| window::Window::parse(w).ok())
            .collect();
        if window::available(&windows, now_ms, tz, &self.holidays) {
            Ok(())
        } else {
            Err(SkipReason::OutsideWindow)
        }
    }

    /// Dial the next available contact of this round; at the end of a
    /// round, pause `between_rounds` (or finish after the last round).
    fn scan(&mut self, now_ms: i64) {
        loop {
            if self.cursor < self.contacts.len() {
                let i = self.cursor;
                self.cursor += 1;
                match self.available(i, now_ms) {
                    Ok(()) => {
                        let attempt = self.attempts.len() as u32 + 1;
                        self.attempts.push(Attempt {
                            attempt,
                            contact: i,
                            round: self.round,
                            started_ms: now_ms,
                            ended_ms: None,
                            outcome: None,
                        });
                        self.state = State::Calling { attempt };
                        self.out.push_back(EscalationOutput::Dial {
                            attempt,
                            contact: i,
                            round: self.round,
                        });
                        return;
                    }
                    Err(reason) => self.out.push_back(EscalationOutput::Skipped {
                        contact: i,
                        round: self.round,
                        reason,
                    }),
                }
                continue;
            }
            if self.round >= self.rounds {
                self.finish(Final::Exhausted { at_ms: now_ms });
                return;
            }
            self.round += 1;
            self.cursor = 0;
            if self.between_rounds_ms > 0 {
                self.state = State::Pausing {
                    until: now_ms + self.between_rounds_ms,
                };
                return;
            }
        }
    }

    fn finish(&mut self, f: Final) {
        self.state = State::Done;
        self.ended = Some(f.clone());
        self.out.push_back(EscalationOutput::Finished(f));
    }

    /// The call of `attempt` ended with `outcome`.
    pub fn call_ended(&mut self, attempt: u32, outcome: Outcome, now_ms: i64) {
        let Some(a) = self.attempts.iter_mut().find(|a| a.attempt == attempt) else {
            return;
        };
        if a.outcome.is_some() {
            return;
        }
        a.outcome = Some(outcome.clone());
        a.ended_ms = Some(now_ms);
        let contact = a.contact;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Cancelling { reason, .. } => {
                self.finish(Final::Cancelled {
                    at_ms: now_ms,
                    reason,
                });
                return;
            }
            State::Acking { ack, at_ms, .. } => {
                let f = self.operator_ack(ack, at_ms);
                self.finish(f);
                return;
            }
            State::Calling { attempt: current } if current == attempt => {}
            other => {
                // A late end of an attempt that is no longer current.
                self.state = other;
                return;
            }
        }
        match outcome {
            Outcome::Acked if self.stop_on_ack => {
                self.finish(Final::Acked {
                    contact,
                    attempt,
                    at_ms: now_ms,
                    console: None,
                });
            }
            Outcome::Action { action, result }
                if result.is_success() || self.end_on_action_failure =>
            {
                self.finish(Final::Action {
                    contact,
                    attempt,
                    action,
                    result,
                    at_ms: now_ms,
                });
            }
            // A failed action still needs an engineer: ring the next one now.
            Outcome::Action { .. } => self.scan(now_ms),
            Outcome::Cancelled => self.finish(Final::Cancelled {
                at_ms: now_ms,
                reason: "cancelled".into(),
            }),
            // Passing on rings the next person at once.
            Outcome::Passed => self.scan(now_ms),
            Outcome::Left => {
                self.contacts[contact].left = true;
                self.pause_then_scan(now_ms);
            }
            _ => self.pause_then_scan(now_ms),
        }
    }

    fn pause_then_scan(&mut self, now_ms: i64) {
        if self.cursor < self.contacts.len() && self.between_calls_ms > 0 {
            self.state = State::Pausing {
                until: now_ms + self.between_calls_ms,
            };
        } else {
            self.scan(now_ms);
        }
    }

    /// Stop the escalation (alert recovered, operator took it).
    pub fn cancel(&mut self, now_ms: i64, reason: &str) {
        match self.state.clone() {
            State::Calling { attempt } => {
                self.state = State::Cancelling {
                    attempt,
                    reason: reason.to_string(),
                };
                self.out.push_back(EscalationOutput::Cancel { attempt });
            }
            State::Done | State::Cancelling { .. } | State::Acking { .. } => {}
            State::NotStarted | State::Pausing { .. } => self.finish(Final::Cancelled {
                at_ms: now_ms,
                reason: reason.to_string(),
            }),
        }
    }

    /// An operator acknowledges for someone on the phone: the escalation
    /// ends acknowledged (a call that is up is hung up first). `false`
    /// when it had already ended or a cancel was under way.
    pub fn acknowledge(&mut self, now_ms: i64, ack: OperatorAck) -> bool {
        match self.state.clone() {
            State::Calling { attempt } => {
                self.state = State::Acking {
                    attempt,
                    ack,
                    at_ms: now_ms,
                };
                self.out.push_back(EscalationOutput::Cancel { attempt });
                true
            }
            State::Done | State::Cancelling { .. } | State::Acking { .. } => false,
            State::NotStarted | State::Pausing { .. } => {
                let f = self.operator_ack(ack, now_ms);
                self.finish(f);
                true
            }
        }
    }

    /// The final state of an operator's acknowledgement: the contact it
    /// names when `by` is one of the dialplan's contacts, otherwise the
    /// one called last (the attempt it answers for).
    fn operator_ack(&self, ack: OperatorAck, at_ms: i64) -> Final {
        let last = self.attempts.last();
        let contact = self
            .contacts
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(ack.by.trim()))
            .or(last.map(|a| a.contact))
            .unwrap_or(0);
        Final::Acked {
            contact,
            attempt: last.map_or(0, |a| a.attempt),
            at_ms,
            console: Some(ack),
        }
    }

    pub fn handle_timeout(&mut self, now_ms: i64) {
        if let State::Pausing { until } = self.state {
            if now_ms >= until {
                self.scan(now_ms);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<i64> {
        match self.state {
            State::Pausing { until } => Some(until),
            _ => None,
        }
    }

    pub fn poll_output(&mut self) -> Option<EscalationOutput> {
        self.out.pop_front()
    }
}

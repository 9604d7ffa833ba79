//! The key menu of one answered call, sans-IO: what to play, what a key
//! does, timeouts, confirmation and PIN entry, and the call's outcome.
//!
//! Call order: [`Menu::start`] once the call is answered (and not a
//! machine); then feed [`Menu::prompt_finished`], [`Menu::digit`],
//! [`Menu::handle_timeout`], [`Menu::remote_hangup`] and [`Menu::cancel`]
//! with the time in ms since the call was answered; drain
//! [`Menu::poll_output`] after each and wake at [`Menu::poll_timeout`].
//!
//! The PIN lockout is the contract's, not the call's: the driver passes the
//! stored lock and earlier failures in [`PinCheck`], persists every
//! [`MenuOutput::PinFailed`] / [`MenuOutput::PinAccepted`], and feeds the
//! stored result back with [`Menu::pin_lock_changed`] (another call of the
//! same contract may have locked it meanwhile).

use std::collections::VecDeque;

use super::dialplan::{ActionSay, KeyAction, MenuConfig};
use super::outcome::{ActionEnd, Outcome};

/// What to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Say {
    Message,
    Menu,
    InvalidKey,
    Goodbye,
    Acked,
    Passed,
    Left,
    Resolved,
    Confirm,
    EnterPin,
    WrongPin,
    Locked,
    /// "The action is starting."
    ActionRequested,
    /// Progress and result of a running action.
    Action(ActionSay),
}

/// What the menu asks its driver to do, or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuOutput {
    Play {
        id: u64,
        say: Say,
    },
    /// Barge-in: stop what is playing now.
    StopPlayback,
    Hangup,
    /// Decided once per call.
    Outcome(Outcome),
    /// A wrong PIN; `locked` when this one reached the limit.
    PinFailed {
        locked: bool,
    },
    /// The right PIN: the contract's series of failures ends.
    PinAccepted,
    /// The callee asked for an action while actions are locked; they hear
    /// "locked" instead of being asked for the PIN.
    ActionLocked {
        action: String,
    },
    /// Confirmed (and PIN checked): run this action, then report with
    /// [`Menu::action_phase`] and [`Menu::action_finished`].
    RunAction {
        action: String,
    },
}

/// PIN settings the menu needs.
#[derive(Debug, Clone)]
pub struct PinCheck {
    pub code: String,
    pub max_attempts: u32,
    /// Wrong PINs the contract already has in its current series (other
    /// calls, other notifications); this call's count starts there.
    pub failures: u32,
    /// Actions are locked for this contract right now (earlier failures).
    pub locked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Main,
    Confirm(String),
    Pin {
        action: String,
        entered: String,
    },
    /// An action runs; keys are ignored until it ends.
    Running(String),
    Closing,
    Done,
}

/// The menu state machine.
#[derive(Debug)]
pub struct Menu {
    cfg: MenuConfig,
    pin: Option<PinCheck>,
    actions_need_pin: Vec<String>,
    state: State,
    next_id: u64,
    /// The prompt whose end starts the input timer (the last queued one).
    last_prompt: Option<u64>,
    playing: bool,
    deadline: Option<u64>,
    invalid: u32,
    timeouts: u32,
    pin_failures: u32,
    outcome_sent: bool,
    hung_up: bool,
    out: VecDeque<MenuOutput>,
}

impl Menu {
    /// `actions_need_pin`: names of the actions that ask for the PIN.
    pub fn new(cfg: MenuConfig, pin: Option<PinCheck>, actions_need_pin: Vec<String>) -> Menu {
        let pin_failures = pin.as_ref().map_or(0, |p| p.failures);
        Menu {
            cfg,
            pin,
            actions_need_pin,
            state: State::Main,
            next_id: 1,
            last_prompt: None,
            playing: false,
            deadline: None,
            invalid: 0,
            timeouts: 0,
            pin_failures,
            outcome_sent: false,
            hung_up: false,
            out: VecDeque::new(),
        }
    }

    fn play(&mut self, says: &[Say]) {
        for &say in says {
            let id = self.next_id;
            self.next_id += 1;
            self.out.push_back(MenuOutput::Play { id, say });
            self.last_prompt = Some(id);
        }
        self.playing = true;
        self.deadline = None;
    }

    fn outcome(&mut self, o: Outcome) {
        if !self.outcome_sent {
            self.outcome_sent = true;
            self.out.push_back(MenuOutput::Outcome(o));
        }
    }

    fn close(&mut self, o: Outcome, say: Say) {
        self.outcome(o);
        self.state = State::Closing;
        self.play(&[say]);
    }

    pub fn start(&mut self, _now_ms: u64) {
        self.play(&[Say::Message, Say::Menu]);
    }

    pub fn prompt_finished(&mut self, id: u64, now_ms: u64) {
        if Some(id) != self.last_prompt {
            return;
        }
        self.playing = false;
        match self.state {
            State::Closing => {
                self.state = State::Done;
                self.out.push_back(MenuOutput::Hangup);
            }
            State::Pin { .. } => {
                self.deadline = Some(now_ms + self.cfg.inter_digit_timeout.as_millis() as u64)
            }
            State::Done | State::Running(_) => {}
            _ => self.deadline = Some(now_ms + self.cfg.input_timeout.as_millis() as u64),
        }
    }

    fn no_response_outcome(&self) -> Outcome {
        if self.invalid > 0 {
            Outcome::InvalidInput
        } else if self.cfg.silent_answer == super::dialplan::SilentAnswer::NoAnswer {
            Outcome::NoAnswer
        } else {
            Outcome::AnsweredNoInput
        }
    }

    fn attempts_left(&self) -> bool {
        self.invalid + self.timeouts < self.cfg.max_attempts
    }

    pub fn digit(&mut self, d: char, now_ms: u64) {
        if matches!(self.state, State::Closing | State::Done | State::Running(_)) {
            return;
        }
        if self.playing {
            self.out.push_back(MenuOutput::StopPlayback);
            self.playing = false;
        }
        self.deadline = None;
        match self.state.clone() {
            State::Main => match self.cfg.keys.get(&d).cloned() {
                Some(KeyAction::Ack) => self.close(Outcome::Acked, Say::Acked),
                Some(KeyAction::Next) => self.close(Outcome::Passed, Say::Passed),
                Some(KeyAction::Leave) => self.close(Outcome::Left, Say::Left),
                Some(KeyAction::Repeat) => self.play(&[Say::Message, Say::Menu]),
                Some(KeyAction::Action(name)) => {
                    if self.locked_for(&name) {
                        self.say_locked(name);
                    } else {
                        self.state = State::Confirm(name);
                        self.play(&[Say::Confirm]);
                    }
                }
                None => {
                    self.invalid += 1;
                    if self.attempts_left() {
                        self.play(&[Say::InvalidKey, Say::Menu]);
                    } else {
                        self.close(Outcome::InvalidInput, Say::Goodbye);
                    }
                }
            },
            State::Confirm(action) => {
                if d != '1' {
                    self.state = State::Main;
                    self.play(&[Say::Menu]);
                } else if self.locked_for(&action) {
                    // Locked by another call while this one confirmed.
                    self.say_locked(action);
                } else if self.pin.is_some() && self.actions_need_pin.contains(&action) {
                    self.state = State::Pin {
                        action,
                        entered: String::new(),
                    };
                    self.play(&[Say::EnterPin]);
                } else {
                    self.run_action(action);
                }
            }
            State::Pin {
                action,
                mut entered,
            } => {
                let code_len = self.pin.as_ref().map_or(0, |p| p.code.len());
                if d != '#' {
                    entered.push(d);
                }
                if d == '#' || entered.len() >= code_len {
                    self.check_pin(action, &entered, now_ms);
                } else {
                    self.state = State::Pin { action, entered };
                    self.deadline = Some(now_ms + self.cfg.inter_digit_timeout.as_millis() as u64);
                }
            }
            State::Closing | State::Done | State::Running(_) => {}
        }
    }

    fn locked_for(&self, action: &str) -> bool {
        self.pin.as_ref().is_some_and(|p| p.locked)
            && self.actions_need_pin.iter().any(|a| a == action)
    }

    fn say_locked(&mut self, action: String) {
        self.out.push_back(MenuOutput::ActionLocked { action });
        self.state = State::Main;
        self.play(&[Say::Locked, Say::Menu]);
    }

    /// The stored lock changed (this call's failure was recorded, or
    /// another call of the contract locked it). A callee entering the PIN
    /// or confirming a PIN action is stopped and hears "locked".
    pub fn pin_lock_changed(&mut self, locked: bool) {
        let Some(p) = &mut self.pin else { return };
        if p.locked == locked {
            return;
        }
        p.locked = locked;
        if !locked {
            return;
        }
        let action = match &self.state {
            State::Pin { action, .. } | State::Confirm(action) => action.clone(),
            _ => return,
        };
        if !self.actions_need_pin.contains(&action) {
            return;
        }
        if self.playing {
            self.out.push_back(MenuOutput::StopPlayback);
            self.playing = false;
        }
        self.deadline = None;
        self.say_locked(action);
    }

    fn run_action(&mut self, action: String) {
        self.out.push_back(MenuOutput::RunAction {
            action: action.clone(),
        });
        self.state = State::Running(action);
        self.play(&[Say::ActionRequested]);
    }

    /// The running action entered a phase: tell the caller.
    pub fn action_phase(&mut self, say: ActionSay) {
        if matches!(self.state, State::Running(_)) {
            self.play(&[Say::Action(say)]);
        }
    }

    /// The running action ended: the result is the call's outcome. The
    /// caller hears it, then the call ends.
    pub fn action_finished(&mut self, result: ActionEnd) {
        let State::Running(action) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        let say = match result {
            ActionEnd::Succeeded => ActionSay::Succeeded,
            ActionEnd::NotNeeded => ActionSay::NotNeeded,
            ActionEnd::Failed => ActionSay::Failed,
            ActionEnd::Refused => ActionSay::Refused,
        };
        if self.hung_up {
            self.outcome(Outcome::Action { action, result });
            return;
        }
        self.close(Outcome::Action { action, result }, Say::Action(say));
    }

    /// An action is running (the call must wait for its end).
    pub fn action_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    fn check_pin(&mut self, action: String, entered: &str, _now_ms: u64) {
        let Some(pin) = self.pin.clone() else {
            return;
        };
        if pin.locked {
            // Locked between the prompt and the last digit: no check at
            // all, so a lock cannot be raced with a guess.
            self.say_locked(action);
            return;
        }
        if constant_time_eq(entered.as_bytes(), pin.code.as_bytes()) {
            self.out.push_back(MenuOutput::PinAccepted);
            self.pin_failures = 0;
            self.run_action(action);
            return;
        }
        self.pin_failures += 1;
        let locked = self.pin_failures >= pin.max_attempts;
        self.out.push_back(MenuOutput::PinFailed { locked });
        if locked {
            if let Some(p) = &mut self.pin {
                p.locked = true;
            }
            self.state = State::Main;
            self.play(&[Say::Locked, Say::Menu]);
        } else {
            self.state = State::Pin {
                action,
                entered: String::new(),
            };
            self.play(&[Say::WrongPin, Say::EnterPin]);
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.deadline.is_none_or(|t| now_ms < t) {
            return;
        }
        self.deadline = None;
        match self.state.clone() {
            State::Pin { action, entered } if !entered.is_empty() => {
                self.check_pin(action, &entered, now_ms)
            }
            State::Main | State::Confirm(_) | State::Pin { .. } => {
                self.state = State::Main;
                self.timeouts += 1;
                if self.attempts_left() {
                    self.play(&[Say::Message, Say::Menu]);
                } else {
                    let o = self.no_response_outcome();
                    self.close(o, Say::Goodbye);
                }
            }
            State::Closing | State::Done | State::Running(_) => {}
        }
    }

    /// The callee hung up.
    pub fn remote_hangup(&mut self) {
        if matches!(self.state, State::Running(_)) {
            // The action goes on; its result is still the outcome.
            self.hung_up = true;
            self.deadline = None;
            return;
        }
        let o = self.no_response_outcome();
        self.outcome(o);
        self.state = State::Done;
        self.deadline = None;
    }

    /// The notification was cancelled while the callee listens.
    pub fn cancel(&mut self) {
        // A running action is not interrupted half-way; its result ends the call.
        if matches!(self.state, State::Done | State::Running(_)) {
            return;
        }
        if self.playing {
            self.out.push_back(MenuOutput::StopPlayback);
        }
        self.outcome(Outcome::Cancelled);
        self.state = State::Closing;
        self.play(&[Say::Resolved]);
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn poll_output(&mut self) -> Option<MenuOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadline
    }
}

/// Compare without an early exit, so timing does not reveal the PIN.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

//! The decisions of one flow run, sans-IO: which step runs next, retries
//! after an interval, when a phase starts, and how the run ends. The
//! driver runs the steps and feeds back their outcomes with `now_ms`.
//!
//! Check steps ask "is it healthy?": all passing means the problem is gone
//! and nothing is changed. A check step that runs and fails confirms the
//! problem and the fix starts; one that cannot run (timeout, SSH failure)
//! stops the flow, since nothing is known. Execute and verify steps must
//! all pass.

use std::collections::VecDeque;

use super::flow::Phase;

/// How one try of a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Ran and gave the expected exit status, HTTP status or connection.
    Ok,
    /// Ran and gave another answer.
    Failed,
    /// Killed at its timeout.
    Timeout,
    /// Could not run (no connection, SSH error, spawn failure).
    Error,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RunResult {
    /// Fixed and verified.
    Succeeded,
    /// The check found no problem; nothing was changed.
    NotNeeded,
    Failed {
        phase: Phase,
        step: String,
        outcome: StepOutcome,
    },
    /// Not started: validation, a run already in progress, a PIN lock.
    Refused { reason: String },
}

impl RunResult {
    pub fn name(&self) -> &'static str {
        match self {
            RunResult::Succeeded => "succeeded",
            RunResult::NotNeeded => "not_needed",
            RunResult::Failed { .. } => "failed",
            RunResult::Refused { .. } => "refused",
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, RunResult::Succeeded | RunResult::NotNeeded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineOutput {
    /// A phase begins (for the caller's progress prompt).
    Phase(Phase),
    /// Run step `index` (into the plan's steps), try `attempt` (1-based).
    Run {
        index: usize,
        attempt: u32,
    },
    Finished(RunResult),
}

#[derive(Debug, Clone)]
pub struct StepInfo {
    pub phase: Phase,
    pub name: String,
    pub retries: u32,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Running {
        index: usize,
        attempt: u32,
    },
    Waiting {
        index: usize,
        attempt: u32,
        until: u64,
    },
    Done,
}

#[derive(Debug)]
pub struct FlowEngine {
    steps: Vec<StepInfo>,
    state: State,
    phase: Option<Phase>,
    out: VecDeque<EngineOutput>,
}

impl FlowEngine {
    pub fn new(steps: Vec<StepInfo>) -> FlowEngine {
        FlowEngine {
            steps,
            state: State::Idle,
            phase: None,
            out: VecDeque::new(),
        }
    }

    pub fn start(&mut self, _now_ms: u64) {
        if self.state == State::Idle {
            self.begin(0);
        }
    }

    fn begin(&mut self, index: usize) {
        let Some(s) = self.steps.get(index) else {
            // Past the last step. Only check steps means nothing to fix.
            let r = if self.phase == Some(Phase::Check) {
                RunResult::NotNeeded
            } else {
                RunResult::Succeeded
            };
            return self.finish(r);
        };
        if self.phase != Some(s.phase) {
            self.phase = Some(s.phase);
            self.out.push_back(EngineOutput::Phase(s.phase));
        }
        self.run(index, 1);
    }

    fn run(&mut self, index: usize, attempt: u32) {
        self.state = State::Running { index, attempt };
        self.out.push_back(EngineOutput::Run { index, attempt });
    }

    fn finish(&mut self, r: RunResult) {
        self.state = State::Done;
        self.out.push_back(EngineOutput::Finished(r));
    }

    /// The running step's try ended.
    pub fn step_done(&mut self, index: usize, outcome: StepOutcome, now_ms: u64) {
        let State::Running {
            index: cur,
            attempt,
        } = self.state
        else {
            return;
        };
        if cur != index {
            return;
        }
        let s = self.steps[index].clone();
        if outcome == StepOutcome::Ok {
            let last_check = s.phase == Phase::Check
                && self
                    .steps
                    .get(index + 1)
                    .is_none_or(|n| n.phase != Phase::Check);
            if last_check {
                return self.finish(RunResult::NotNeeded);
            }
            return self.begin(index + 1);
        }
        if attempt <= s.retries {
            self.state = State::Waiting {
                index,
                attempt: attempt + 1,
                until: now_ms + s.interval_ms,
            };
            return;
        }
        if s.phase == Phase::Check && outcome == StepOutcome::Failed {
            // The problem is confirmed: go to the first execute step.
            let next = self
                .steps
                .iter()
                .position(|x| x.phase != Phase::Check)
                .unwrap_or(self.steps.len());
            return self.begin(next);
        }
        self.finish(RunResult::Failed {
            phase: s.phase,
            step: s.name,
            outcome,
        });
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let State::Waiting {
            index,
            attempt,
            until,
        } = self.state
        {
            if now_ms >= until {
                self.run(index, attempt);
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<EngineOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Waiting { until, .. } => Some(until),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EngineOutput::{Finished, Run};
    use StepOutcome::*;

    fn step(phase: Phase, name: &str, retries: u32) -> StepInfo {
        StepInfo {
            phase,
            name: name.into(),
            retries,
            interval_ms: 1000,
        }
    }

    fn flow() -> FlowEngine {
        FlowEngine::new(vec![
            step(Phase::Check, "active", 0),
            step(Phase::Execute, "restart", 0),
            step(Phase::Verify, "active", 2),
        ])
    }

    fn drain(e: &mut FlowEngine) -> Vec<EngineOutput> {
        std::iter::from_fn(|| e.poll_output()).collect()
    }

    #[test]
    fn problem_confirmed_fixed_and_verified() {
        let mut e = flow();
        e.start(0);
        assert_eq!(
            drain(&mut e),
            [
                EngineOutput::Phase(Phase::Check),
                Run {
                    index: 0,
                    attempt: 1
                }
            ]
        );
        e.step_done(0, Failed, 10);
        assert_eq!(
            drain(&mut e),
            [
                EngineOutput::Phase(Phase::Execute),
                Run {
                    index: 1,
                    attempt: 1
                }
            ]
        );
        e.step_done(1, Ok, 20);
        assert_eq!(
            drain(&mut e),
            [
                EngineOutput::Phase(Phase::Verify),
                Run {
                    index: 2,
                    attempt: 1
                }
            ]
        );
        // Not up yet: retried after the interval, not before.
        e.step_done(2, Failed, 30);
        assert!(drain(&mut e).is_empty());
        assert_eq!(e.poll_timeout(), Some(1030));
        e.handle_timeout(1029);
        assert!(drain(&mut e).is_empty());
        e.handle_timeout(1030);
        assert_eq!(
            drain(&mut e),
            [Run {
                index: 2,
                attempt: 2
            }]
        );
        e.step_done(2, Ok, 1100);
        assert_eq!(drain(&mut e), [Finished(RunResult::Succeeded)]);
        assert!(e.is_done());
    }

    #[test]
    fn healthy_at_check_changes_nothing() {
        let mut e = flow();
        e.start(0);
        drain(&mut e);
        e.step_done(0, Ok, 5);
        assert_eq!(drain(&mut e), [Finished(RunResult::NotNeeded)]);
    }

    #[test]
    fn check_that_cannot_run_stops_the_flow() {
        let mut e = flow();
        e.start(0);
        drain(&mut e);
        e.step_done(0, Timeout, 5);
        assert_eq!(
            drain(&mut e),
            [Finished(RunResult::Failed {
                phase: Phase::Check,
                step: "active".into(),
                outcome: Timeout
            })]
        );
    }

    #[test]
    fn verify_failing_after_all_retries_is_a_failure() {
        let mut e = flow();
        e.start(0);
        e.step_done(0, Failed, 0);
        e.step_done(1, Ok, 0);
        drain(&mut e);
        for (t, attempt) in [(0, 1), (1000, 2), (2000, 3)] {
            if attempt > 1 {
                e.handle_timeout(t);
                assert_eq!(drain(&mut e), [Run { index: 2, attempt }]);
            }
            e.step_done(2, Failed, t);
        }
        assert_eq!(
            drain(&mut e),
            [Finished(RunResult::Failed {
                phase: Phase::Verify,
                step: "active".into(),
                outcome: Failed
            })]
        );
    }

    #[test]
    fn execute_failure_skips_verify_and_stale_reports_are_ignored() {
        let mut e = FlowEngine::new(vec![
            step(Phase::Execute, "restart", 0),
            step(Phase::Verify, "active", 0),
        ]);
        e.start(0);
        assert_eq!(
            drain(&mut e),
            [
                EngineOutput::Phase(Phase::Execute),
                Run {
                    index: 0,
                    attempt: 1
                }
            ]
        );
        e.step_done(1, Ok, 0);
        assert!(drain(&mut e).is_empty());
        e.step_done(0, Error, 0);
        assert_eq!(
            drain(&mut e),
            [Finished(RunResult::Failed {
                phase: Phase::Execute,
                step: "restart".into(),
                outcome: Error
            })]
        );
        e.step_done(0, Ok, 0);
        assert!(drain(&mut e).is_empty());
    }
}

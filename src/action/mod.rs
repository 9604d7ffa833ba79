//! First-level maintenance actions: job flows with check, execute and
//! verify phases, run from a call (after confirmation and PIN) or by an
//! operator (API, CLI), with a dry run and an audit record of every step.
//!
//! - `flow`: the flow files; `inventory`: the hosts a contract allows;
//! - `plan`: linking at load, resolving values into exact argv/requests;
//! - `engine`: the sans-IO run decisions; `exec`: running one step.

pub mod engine;
pub mod exec;
pub mod flow;
pub mod inventory;
pub mod plan;
pub mod validate;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::runner::{now_ms, Observer};
use engine::{EngineOutput, FlowEngine, RunResult, StepInfo};
use exec::StepReport;
use flow::Phase;
use plan::{Op, RunPlan};

/// Why an action cannot run. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("contract {0:?} is not configured")]
    UnknownContract(String),
    #[error("contract {contract:?} has no action using flow {flow:?}")]
    NoActionForFlow { contract: String, flow: String },
    #[error("contract {contract:?} uses flow {flow:?} in several actions ({actions}); say which with \"action\"")]
    AmbiguousFlow {
        contract: String,
        flow: String,
        actions: String,
    },
    #[error("contract {contract:?} has no action {action:?}")]
    UnknownAction { contract: String, action: String },
    #[error("action {0:?} is not linked to a flow")]
    NotLinked(String),
    #[error("flow {flow:?} has no parameter {param:?}")]
    UnknownParam { param: String, flow: String },
    #[error("parameter {param:?} is fixed to {value:?} by the contract's action {action:?}")]
    FixedParam {
        param: String,
        action: String,
        value: String,
    },
    #[error("parameter {param:?} comes from the alert's {{{var}}}, which is missing")]
    MissingParam { param: String, var: String },
    #[error("parameter {param:?}: value {value:?} {reason}")]
    InvalidValue {
        param: String,
        value: String,
        reason: String,
    },
    #[error("parameter {param:?}: {value:?} is not one of the contract's inventory {what}")]
    NotInInventory {
        param: String,
        value: String,
        what: &'static str,
    },
    #[error("step {step:?} has no argv for host {host:?}")]
    NoArgv { step: String, host: String },
    #[error("the secret environment variable {0} is not set")]
    MissingSecret(String),
    #[error("{0}")]
    Config(String),
    #[error("flow {flow:?} is already running for contract {contract:?} on host {host:?}; wait for it to finish")]
    Busy {
        contract: String,
        host: String,
        flow: String,
    },
}

/// Who asked for a run.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Requester {
    Call {
        contact: String,
        uri: String,
        attempt: u32,
    },
    Api {
        token: String,
    },
    Cli {
        user: String,
    },
}

/// The context of a run, for its record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunMeta {
    pub run_id: String,
    pub requested_by: Requester,
    pub notification: Option<String>,
    pub ticket: Option<String>,
}

/// One try of one step, as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRecord {
    pub phase: Phase,
    pub name: String,
    pub attempt: u32,
    pub started_ms: i64,
    /// The argv or request, with secrets as `{env:NAME}`.
    pub op: Op,
    #[serde(flatten)]
    pub report: StepReport,
}

/// The audit record of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub meta: RunMeta,
    pub contract: String,
    pub action: String,
    pub flow: String,
    pub host: Option<String>,
    pub params: BTreeMap<String, String>,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub result: RunResult,
    pub steps: Vec<StepRecord>,
}

/// Runs actions; one per (contract, host, flow) at a time.
pub struct Actions {
    running: Mutex<HashSet<(String, String, String)>>,
    http: reqwest::Client,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            running: Mutex::new(HashSet::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }
}

/// Held while a run is in progress; dropping it frees the slot.
pub struct RunLock {
    actions: Arc<Actions>,
    key: (String, String, String),
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.actions.running().remove(&self.key);
    }
}

impl Actions {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String, String)>> {
        // A poisoned lock only means a holder panicked; the set is intact.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the (contract, host, flow) slot or say who holds it.
    pub fn lock(self: &Arc<Self>, p: &RunPlan) -> Result<RunLock, ActionError> {
        let key = (
            p.contract.clone(),
            p.host.clone().unwrap_or_else(|| "-".into()),
            p.flow.clone(),
        );
        if !self.running().insert(key.clone()) {
            return Err(ActionError::Busy {
                contract: key.0,
                host: key.1,
                flow: key.2,
            });
        }
        Ok(RunLock {
            actions: self.clone(),
            key,
        })
    }

    pub fn started_event(p: &RunPlan, meta: &RunMeta) -> Value {
        json!({
            "event": "action.started",
            "run": meta,
            "contract": p.contract,
            "action": p.action,
            "flow": p.flow,
            "host": p.host,
            "params": p.params,
            "steps": p.steps.iter().map(|s| json!({"phase": s.phase, "name": s.name})).collect::<Vec<_>>(),
        })
    }

    /// Run a resolved plan to its end (the caller holds its lock). Phases
    /// are sent to `progress` as they begin; every step and the end are
    /// reported to `obs` as `action.step` and `action.finished`.
    pub async fn execute(
        &self,
        p: &RunPlan,
        meta: &RunMeta,
        obs: &dyn Observer,
        progress: Option<&tokio::sync::mpsc::UnboundedSender<Phase>>,
    ) -> RunRecord {
        let started_ms = now_ms();
        obs.event(Self::started_event(p, meta)).await;
        let t0 = Instant::now();
        let ms = || t0.elapsed().as_millis() as u64;
        let mut engine = FlowEngine::new(
            p.steps
                .iter()
                .map(|s| StepInfo {
                    phase: s.phase,
                    name: s.name.clone(),
                    retries: s.retries,
                    interval_ms: s.interval_ms,
                })
                .collect(),
        );
        let mut steps = Vec::new();
        engine.start(0);
        let result = 'run: loop {
            while let Some(o) = engine.poll_output() {
                match o {
                    EngineOutput::Phase(ph) => {
                        if let Some(tx) = progress {
                            let _ = tx.send(ph);
                        }
                    }
                    EngineOutput::Run { index, attempt } => {
                        let s = &p.steps[index];
                        let at = now_ms();
                        let report = exec::run(
                            &s.op,
                            Duration::from_millis(s.timeout_ms),
                            &p.secrets,
                            &self.http,
                        )
                        .await;
                        let outcome = report.outcome.unwrap_or(engine::StepOutcome::Error);
                        tracing::info!(run = %meta.run_id, step = %s.name, attempt, ?outcome, "action step");
                        let rec = StepRecord {
                            phase: s.phase,
                            name: s.name.clone(),
                            attempt,
                            started_ms: at,
                            op: s.op.clone(),
                            report,
                        };
                        obs.event(
                            json!({"event": "action.step", "run_id": meta.run_id, "step": rec}),
                        )
                        .await;
                        steps.push(rec);
                        engine.step_done(index, outcome, ms());
                    }
                    EngineOutput::Finished(r) => break 'run r,
                }
            }
            match engine.poll_timeout() {
                Some(t) => {
                    tokio::time::sleep_until((t0 + Duration::from_millis(t)).into()).await;
                    engine.handle_timeout(ms());
                }
                None => {
                    break RunResult::Refused {
                        reason: "the flow stopped without a result".into(),
                    }
                }
            }
        };
        let rec = RunRecord {
            meta: meta.clone(),
            contract: p.contract.clone(),
            action: p.action.clone(),
            flow: p.flow.clone(),
            host: p.host.clone(),
            params: p.params.clone(),
            started_ms,
            finished_ms: now_ms(),
            duration_ms: ms(),
            result,
            steps,
        };
        obs.event(json!({"event": "action.finished", "run_id": meta.run_id, "result": rec.result.name(), "record": rec}))
            .await;
        rec
    }

    /// Record a request that was refused before anything ran.
    pub async fn refused(
        meta: &RunMeta,
        contract: &str,
        action: &str,
        flow: &str,
        reason: &str,
        obs: &dyn Observer,
    ) -> RunRecord {
        let now = now_ms();
        let rec = RunRecord {
            meta: meta.clone(),
            contract: contract.into(),
            action: action.into(),
            flow: flow.into(),
            host: None,
            params: BTreeMap::new(),
            started_ms: now,
            finished_ms: now,
            duration_ms: 0,
            result: RunResult::Refused {
                reason: reason.into(),
            },
            steps: Vec::new(),
        };
        obs.event(json!({"event": "action.finished", "run_id": meta.run_id, "result": "refused", "record": rec}))
            .await;
        rec
    }
}

/// The action of `plan` that runs `flow`: the one named, or the only one.
pub fn action_for_flow<'a>(
    plan: &'a crate::ivr::dialplan::Dialplan,
    flow: &str,
    action: Option<&str>,
) -> Result<&'a crate::ivr::dialplan::Action, ActionError> {
    if let Some(name) = action {
        return plan
            .actions
            .get(name)
            .filter(|a| a.flow == flow)
            .ok_or_else(|| ActionError::UnknownAction {
                contract: plan.contract.clone(),
                action: name.into(),
            });
    }
    let using: Vec<&crate::ivr::dialplan::Action> =
        plan.actions.values().filter(|a| a.flow == flow).collect();
    match using[..] {
        [a] => Ok(a),
        [] => Err(ActionError::NoActionForFlow {
            contract: plan.contract.clone(),
            flow: flow.into(),
        }),
        _ => Err(ActionError::AmbiguousFlow {
            contract: plan.contract.clone(),
            flow: flow.into(),
            actions: using
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The alert values an action may take parameters from.
pub fn alert_values(n: &crate::runner::Notification) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = n.variables.clone();
    m.insert("host".into(), n.host.clone());
    m.insert("severity".into(), n.severity.clone());
    m.insert("ticket".into(), n.ticket.clone());
    m.insert("contract".into(), n.contract.clone());
    m.insert("summary".into(), n.summary.clone());
    m
}

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
pub mod slot;

/// How long claiming a run's slot may wait on the database.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
pub mod validate;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::runner::{now_ms, Observer};
use crate::store::{RunRow, Store};
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
    #[error("flow {flow:?} is already running for contract {contract:?} on host {host:?} (run {run}, started by {by}); wait for it to finish")]
    BusyElsewhere {
        contract: String,
        host: String,
        flow: String,
        run: String,
        by: String,
    },
    #[error("the run cannot be recorded, so it was not started: {0}")]
    Store(String),
    #[error("this node no longer holds notification {0}'s lease (another node runs it now); the action was not started")]
    Fenced(String),
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
    /// Clustered, from a call: the notification's lease epoch the call
    /// runs under. The slot is taken and the run recorded only while it
    /// holds (`crate::store::runs`).
    #[serde(skip)]
    pub epoch: Option<i64>,
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

/// Runs actions; one per (contract, host, flow) at a time. With a store,
/// the slot holds across processes and every run is recorded there.
pub struct Actions {
    running: Mutex<HashSet<(String, String, String)>>,
    http: reqwest::Client,
    store: Option<Store>,
    owner: String,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            running: Mutex::new(HashSet::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            store: None,
            owner: slot::this_owner(),
        }
    }
}

/// Held while a run is in progress; dropping it frees the slot in this
/// process (the database row is ended by the run's record).
pub struct RunLock {
    actions: Arc<Actions>,
    key: (String, String, String),
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.actions.running().remove(&self.key);
    }
}

/// Renews a run's heartbeat until dropped.
struct Heartbeat(Option<tokio::task::JoinHandle<()>>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

impl Actions {
    /// Runs recorded in `store`, whose rows are the slots shared with
    /// every other process on the same database.
    pub fn with_store(store: Store) -> Actions {
        Actions {
            store: Some(store),
            ..Actions::default()
        }
    }

    /// The same, writing `owner` instead of this process's `host:pid`
    /// (two nodes in one test process).
    pub fn with_store_as(store: Store, owner: &str) -> Actions {
        Actions {
            owner: owner.to_string(),
            ..Actions::with_store(store)
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String, String)>> {
        // A poisoned lock only means a holder panicked; the set is intact.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the (contract, host, flow) slot for the run `meta` or say who
    /// holds it. With a store, the run's row is written here, before
    /// anything runs: a run that cannot be recorded does not start.
    pub async fn claim(
        self: &Arc<Self>,
        p: &RunPlan,
        meta: &RunMeta,
    ) -> Result<RunLock, ActionError> {
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
        let lock = RunLock {
            actions: self.clone(),
            key,
        };
        if let Some(store) = &self.store {
            // A call may be waiting on this (a fix run from the phone):
            // a database that does not answer is a refusal within seconds,
            // not silence on the line.
            tokio::time::timeout(CLAIM_WAIT, self.claim_row(store, p, meta))
                .await
                .map_err(|_| ActionError::Store("the database did not answer in time".into()))??;
        }
        Ok(lock)
    }

    async fn claim_row(
        &self,
        store: &Store,
        p: &RunPlan,
        meta: &RunMeta,
    ) -> Result<(), ActionError> {
        let db = |e: crate::store::StoreError| ActionError::Store(e.to_string());
        let row = self.row(
            meta,
            &p.contract,
            &p.action,
            &p.flow,
            p.host.as_deref(),
            now_ms(),
        );
        // Twice at most: a slot whose owner is gone is taken over once.
        for _ in 0..2 {
            match store.start_run(&row).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(crate::store::StoreError::Fenced(_)) => {
                    return Err(ActionError::Fenced(row.notification_id.unwrap_or_default()))
                }
                Err(e) => return Err(db(e)),
            }
            let Some(held) = store
                .running_run(&row.contract, &row.host, &row.flow)
                .await
                .map_err(db)?
            else {
                continue;
            };
            if self.abandoned(&held) {
                tracing::warn!(run = %held.id, owner = ?held.owner, "action run abandoned by its process; marked interrupted");
                store.interrupt_run(&held.id, now_ms()).await.map_err(db)?;
                continue;
            }
            return Err(ActionError::BusyElsewhere {
                contract: row.contract,
                host: row.host,
                flow: row.flow,
                run: held.id,
                by: describe_requester(&held.requested_by),
            });
        }
        Err(ActionError::Busy {
            contract: row.contract,
            host: row.host,
            flow: row.flow,
        })
    }

    /// A running row of `meta`'s run, owned by this process as of `now`.
    fn row(
        &self,
        meta: &RunMeta,
        contract: &str,
        action: &str,
        flow: &str,
        host: Option<&str>,
        now: i64,
    ) -> RunRow {
        RunRow {
            id: meta.run_id.clone(),
            contract: contract.into(),
            action: action.into(),
            flow: flow.into(),
            host: host.unwrap_or("-").into(),
            notification_id: meta.notification.clone(),
            ticket: meta.ticket.clone(),
            requested_by: serde_json::to_value(&meta.requested_by).unwrap_or_default(),
            state: "running".into(),
            record: None,
            started_ms: now,
            finished_ms: None,
            owner: Some(self.owner.clone()),
            heartbeat_ms: Some(now),
            epoch: meta.epoch,
            fenced_ms: None,
        }
    }

    fn abandoned(&self, r: &RunRow) -> bool {
        let beat = r.heartbeat_ms.unwrap_or(r.started_ms);
        slot::abandoned(r.owner.as_deref(), beat, now_ms(), &self.owner)
    }

    /// Free the slots of runs whose process is gone. Called at a service
    /// start, before this process runs anything of its own.
    pub async fn recover(&self) -> Result<u64, crate::store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let mut n = 0;
        for r in store.running_runs().await? {
            // Rows from before owners were recorded belong to a stopped
            // service: this start is the only one that could resume them.
            if (r.owner.is_none() || self.abandoned(&r))
                && store.interrupt_run(&r.id, now_ms()).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn heartbeat(&self, run_id: &str) -> Heartbeat {
        let Some(store) = self.store.clone() else {
            return Heartbeat(None);
        };
        let id = run_id.to_string();
        Heartbeat(Some(tokio::spawn(async move {
            let period = Duration::from_millis(slot::HEARTBEAT_MS as u64);
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = store.beat_run(&id, now_ms()).await {
                    tracing::warn!(run = %id, error = %e, "cannot renew the action run's heartbeat");
                }
            }
        })))
    }

    /// Store a run's end (inserting it when it was refused before it
    /// started). A failure is logged: the run has happened either way.
    /// Fenced (another node holds the notification now), its result does
    /// not stand, but what it did on the host must stay in the audit: its
    /// own row is ended `interrupted` with its record and `fenced_ms`
    /// (`Store::finish_fenced_run`), which also frees its slot at once,
    /// so the node that took over may run the flow again without waiting
    /// for this heartbeat to go stale. Nothing else is written: no slot
    /// taken, nothing on the notification; a refusal that never started
    /// has no row and stays unrecorded.
    async fn store_end(&self, rec: &RunRecord) {
        let Some(store) = &self.store else {
            return;
        };
        let row = RunRow {
            state: rec.result.name().into(),
            record: serde_json::to_value(rec).ok(),
            started_ms: rec.started_ms,
            finished_ms: Some(rec.finished_ms),
            ..self.row(
                &rec.meta,
                &rec.contract,
                &rec.action,
                &rec.flow,
                rec.host.as_deref(),
                rec.finished_ms,
            )
        };
        match store.finish_run(&row).await {
            Ok(()) => {}
            Err(crate::store::StoreError::Fenced(_)) => {
                match store.finish_fenced_run(&row, now_ms()).await {
                    Ok(true) => {
                        tracing::warn!(run = %rec.meta.run_id, result = rec.result.name(), steps = rec.steps.len(), "the action run ended after another node took its notification over: recorded as interrupted (fenced) with its steps, its slot freed")
                    }
                    Ok(false) => {
                        tracing::warn!(run = %rec.meta.run_id, result = rec.result.name(), "the action run ended after another node took its notification over; it has no row of its own: not recorded")
                    }
                    Err(e) => {
                        tracing::error!(run = %rec.meta.run_id, error = %e, "cannot record the fenced action run's end")
                    }
                }
            }
            Err(e) => {
                tracing::error!(run = %rec.meta.run_id, error = %e, "cannot record the action run's end")
            }
        }
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
        let _beat = self.heartbeat(&meta.run_id);
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
        self.store_end(&rec).await;
        obs.event(json!({"event": "action.finished", "run_id": meta.run_id, "result": rec.result.name(), "record": rec}))
            .await;
        rec
    }

    /// Record a request that was refused before anything ran.
    pub async fn refused(
        &self,
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
        self.store_end(&rec).await;
        obs.event(json!({"event": "action.finished", "run_id": meta.run_id, "result": "refused", "record": rec}))
            .await;
        rec
    }
}

/// "the API token ops", "Oncall by phone", for a busy slot's message.
fn describe_requester(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    match v["via"].as_str() {
        Some("call") => format!("{} by phone", s("contact")),
        Some("api") => format!("API token {}", s("token")),
        Some("cli") => format!("{} with callout action run", s("user")),
        _ => "another process".into(),
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

//! Maintenance actions in the service: operator runs (API), and the
//! record of every run (from the API or a call) in the database and the
//! ticket's webhook stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::Service;
use crate::action::plan::{resolve, RunPlan};
use crate::action::{action_for_flow, ActionError, Requester, RunMeta, RunRecord};
use crate::ivr::escalation::Escalation;
use crate::runner::{now_ms, Fut, Observer};
use crate::store::{new_id, RunRow};

/// An operator's request to run (or dry-run) a flow for a contract.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub contract: String,
    /// Which of the contract's actions, when several use the flow.
    #[serde(default)]
    pub action: Option<String>,
    /// Values for the parameters the dialplan takes from the alert.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Take alert values and the ticket from this notification.
    #[serde(default)]
    pub notification: Option<String>,
    #[serde(default)]
    pub ticket: Option<String>,
    /// Answer when the run has ended, with its record.
    #[serde(default)]
    pub wait: bool,
}

/// What the service did with a run request.
pub enum RunReply {
    DryRun(RunPlan),
    Started(String),
    Finished(Box<RunRecord>),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error("notification {0:?} does not exist")]
    UnknownNotification(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Service {
    /// Resolve (and, unless a dry run, start) an operator's run.
    pub async fn run_action(
        self: &Arc<Self>,
        flow: &str,
        req: RunRequest,
        requested_by: Requester,
    ) -> Result<RunReply, RunError> {
        let plan = self
            .registry
            .get(&req.contract)
            .ok_or_else(|| ActionError::UnknownContract(req.contract.clone()))?;
        let action = action_for_flow(&plan, flow, req.action.as_deref())?;
        let (alert, mut ticket) = match &req.notification {
            Some(id) => {
                let n = self
                    .store
                    .get_notification(id)
                    .await?
                    .filter(|n| n.contract == req.contract)
                    .ok_or_else(|| RunError::UnknownNotification(id.clone()))?;
                let mut alert: BTreeMap<String, String> =
                    serde_json::from_value(n.variables.clone()).unwrap_or_default();
                alert.insert("host".into(), n.host.clone());
                alert.insert("severity".into(), n.severity.clone());
                alert.insert("ticket".into(), n.ticket.clone());
                alert.insert("summary".into(), n.summary.clone());
                (alert, Some(n.ticket))
            }
            None => (BTreeMap::new(), None),
        };
        if req.ticket.is_some() {
            ticket = req.ticket.clone();
        }
        let rp = resolve(&plan.contract, &plan.inventory, action, &alert, &req.params)?;
        if req.dry_run {
            return Ok(RunReply::DryRun(rp));
        }
        let lock = self.actions.lock(&rp)?;
        let meta = RunMeta {
            run_id: new_id("run"),
            requested_by,
            notification: req.notification.clone(),
            ticket,
        };
        // The database row is the slot across processes.
        if !self.store.start_run(&run_row(&rp, &meta)).await? {
            return Err(ActionError::Busy {
                contract: rp.contract.clone(),
                host: rp.host.clone().unwrap_or_else(|| "-".into()),
                flow: rp.flow.clone(),
            }
            .into());
        }
        let svc = self.clone();
        let run_id = meta.run_id.clone();
        let task = self.tasks.spawn(async move {
            let obs = RunObserver {
                svc: svc.clone(),
                stream: meta
                    .notification
                    .clone()
                    .unwrap_or_else(|| meta.run_id.clone()),
            };
            let rec = svc.actions.execute(&rp, &meta, &obs, None).await;
            drop(lock);
            rec
        });
        if req.wait {
            return match task.await {
                Ok(rec) => Ok(RunReply::Finished(Box::new(rec))),
                Err(e) => Err(ActionError::Config(format!("the run stopped: {e}")).into()),
            };
        }
        Ok(RunReply::Started(run_id))
    }

    /// Store an `action.*` event's run state. Called for every event of
    /// a notification's or a run's stream.
    pub(super) async fn record_run_event(&self, v: &Value) {
        let r = match v["event"].as_str() {
            Some("action.started") => {
                let row = RunRow {
                    id: v["run"]["run_id"].as_str().unwrap_or_default().into(),
                    contract: v["contract"].as_str().unwrap_or_default().into(),
                    action: v["action"].as_str().unwrap_or_default().into(),
                    flow: v["flow"].as_str().unwrap_or_default().into(),
                    host: v["host"].as_str().unwrap_or("-").into(),
                    notification_id: v["run"]["notification"].as_str().map(Into::into),
                    ticket: v["run"]["ticket"].as_str().map(Into::into),
                    requested_by: v["run"]["requested_by"].clone(),
                    state: "running".into(),
                    record: None,
                    started_ms: now_ms(),
                    finished_ms: None,
                };
                // Already there when the API took the slot first.
                self.store.start_run(&row).await.map(|_| ())
            }
            Some("action.finished") => {
                let rec = &v["record"];
                let row = RunRow {
                    id: rec["run_id"].as_str().unwrap_or_default().into(),
                    contract: rec["contract"].as_str().unwrap_or_default().into(),
                    action: rec["action"].as_str().unwrap_or_default().into(),
                    flow: rec["flow"].as_str().unwrap_or_default().into(),
                    host: rec["host"].as_str().unwrap_or("-").into(),
                    notification_id: rec["notification"].as_str().map(Into::into),
                    ticket: rec["ticket"].as_str().map(Into::into),
                    requested_by: rec["requested_by"].clone(),
                    state: rec["result"].as_str().unwrap_or("failed").into(),
                    record: Some(rec.clone()),
                    started_ms: rec["started_ms"].as_i64().unwrap_or_else(now_ms),
                    finished_ms: Some(rec["finished_ms"].as_i64().unwrap_or_else(now_ms)),
                };
                self.store.finish_run(&row).await
            }
            _ => return,
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record the action run");
        }
    }
}

fn run_row(p: &RunPlan, meta: &RunMeta) -> RunRow {
    RunRow {
        id: meta.run_id.clone(),
        contract: p.contract.clone(),
        action: p.action.clone(),
        flow: p.flow.clone(),
        host: p.host.clone().unwrap_or_else(|| "-".into()),
        notification_id: meta.notification.clone(),
        ticket: meta.ticket.clone(),
        requested_by: serde_json::to_value(&meta.requested_by).unwrap_or_default(),
        state: "running".into(),
        record: None,
        started_ms: now_ms(),
        finished_ms: None,
    }
}

/// Records an operator's run and queues its events on the ticket's
/// webhook stream (the notification's when given, else the run's own).
struct RunObserver {
    svc: Arc<Service>,
    stream: String,
}

impl Observer for RunObserver {
    fn event(&self, v: Value) -> Fut<'_> {
        Box::pin(async move {
            self.svc.record_run_event(&v).await;
            let event = v["event"].as_str().unwrap_or("").to_string();
            if let Err(e) = self
                .svc
                .store
                .enqueue(&self.stream, &event, &v, now_ms())
                .await
            {
                tracing::error!(stream = %self.stream, error = %e, "cannot queue webhook {event}");
            }
            self.svc.outbox_kick.notify_one();
        })
    }

    fn checkpoint(&self, _esc: &Escalation) -> Fut<'_> {
        Box::pin(async {})
    }
}

/// Free slots left `running` by a process that died mid-run.
pub async fn recover(svc: &Service) {
    match svc.store.interrupt_runs(now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "action runs were cut off by a restart; marked interrupted"
        ),
        Err(e) => tracing::error!(error = %e, "cannot mark interrupted action runs"),
    }
}

//! Maintenance actions in the service: operator runs (API), and the
//! record of every run (from the API or a call) in the database and the
//! ticket's webhook stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::Service;
use crate::action::plan::{resolve, RunPlan};
use crate::action::{action_for_flow, ActionError, Requester, RunMeta, RunRecord};
use crate::ivr::escalation::Escalation;
use crate::runner::{now_ms, Fut, Observer};
use crate::store::new_id;

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
        let meta = RunMeta {
            run_id: new_id("run"),
            requested_by,
            notification: req.notification.clone(),
            ticket,
            epoch: None,
        };
        let lock = self.actions.claim(&rp, &meta).await?;
        let svc = self.clone();
        let run_id = meta.run_id.clone();
        let task = self.tasks.spawn(async move {
            let obs = RunObserver {
                svc: svc.clone(),
                contract: rp.contract.clone(),
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
}

/// Records an operator's run and queues its events on the ticket's
/// webhook stream (the notification's when given, else the run's own).
struct RunObserver {
    svc: Arc<Service>,
    contract: String,
    stream: String,
}

impl Observer for RunObserver {
    fn event(&self, v: Value) -> Fut<'_> {
        Box::pin(async move {
            // The console shows the run's steps as they happen; its feed
            // shows a customer only its contracts' events.
            let mut live = v.clone();
            live["contract"] = json!(self.contract);
            self.svc.console.live.publish(&self.stream, &live);
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
    match svc.actions.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "action runs were cut off by a process that stopped; marked interrupted"
        ),
        Err(e) => tracing::error!(error = %e, "cannot mark interrupted action runs"),
    }
}

//! `POST /v1/incidents/{id}/actions/{action}`: an operator runs one of the
//! incident's contract's actions on it, with the alert's values taken
//! from the incident. A dry run first: it answers the exact plan and a
//! `confirm` value (a digest of that plan); the run itself must send it
//! back, so what runs is what the operator saw. The run goes through the
//! same path as any other (value checks, inventory, one run at a time,
//! audit record); its line lands on the incident's timeline before the
//! answer, and the contract's `action` notice mail follows.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::{ApiPath as Path, RawBody};
use super::incidents::pipeline;
use super::{authorize, ApiError, Scope, Shared};
use crate::action::Requester;
use crate::pipeline::action_run::{describe, params_for, step_lines};
use crate::pipeline::driver::Input;
use crate::pipeline::engine::ActionReport;
use crate::runner::now_ms;
use crate::service::{RunReply, RunRequest};
use crate::store::{new_id, TimelineRow};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    dry_run: bool,
    /// The dry run's `confirm` value.
    confirm: Option<String>,
}

fn confirm_of(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) async fn run_incident_action(
    State(svc): Shared,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    authorize(&svc, &headers, Scope::Actions)
        .or_else(|_| authorize(&svc, &headers, Scope::Operate))?;
    let req: Body = if body.is_empty() {
        Body {
            dry_run: true,
            confirm: None,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Malformed request",
                format!("line {} column {}: {}", e.line(), e.column(), e),
            )
        })?
    };
    let caller = if req.dry_run {
        super::access::actor(&svc, &headers, Scope::Actions)
            .or_else(|_| super::access::actor(&svc, &headers, Scope::Operate))?
    } else {
        super::access::actor(&svc, &headers, Scope::Actions)?
    };
    let token = caller.name.clone();
    let p = pipeline(&svc)?;
    let row = p.store.get_incident(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no incident {id}"),
        )
    })?;
    caller.check(&row.incident.contract, "incident", &id)?;
    let inc = &row.incident;
    let plan = svc.registry.get(&inc.contract).ok_or_else(|| {
        ApiError::invalid(
            "contract",
            format!("contract {} has no dialplan loaded", inc.contract),
        )
    })?;
    let def = plan.actions.get(&action).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("contract {} has no action {action:?}", inc.contract),
        )
    })?;
    let request = |dry_run: bool| RunRequest {
        contract: plan.contract.clone(),
        action: Some(action.clone()),
        params: params_for(&plan, &action, inc),
        dry_run,
        notification: None,
        ticket: row.ticket.clone(),
        wait: !dry_run,
    };
    let requester = || Requester::Api {
        token: token.clone(),
    };
    // The plan as it resolves now: a dry run answers it; a run checks the
    // operator saw this very plan.
    let planned = match svc
        .run_action(&def.flow, request(true), requester())
        .await
        .map_err(super::actions::action_error)?
    {
        RunReply::DryRun(rp) => rp,
        _ => {
            return Err(ApiError::internal(std::io::Error::other(
                "a dry run did not answer a plan",
            )))
        }
    };
    let text = planned.describe();
    let confirm = confirm_of(&text);
    if req.dry_run {
        return Ok(Json(json!({
            "dry_run": true,
            "incident": id,
            "action": action,
            "plan": planned,
            "text": text,
            "confirm": confirm,
        }))
        .into_response());
    }
    if req.confirm.as_deref() != Some(confirm.as_str()) {
        return Err(ApiError::invalid(
            "confirm",
            "run the dry run first and send back its confirm value (the plan it showed is not the plan now)",
        ));
    }
    let rec = match svc
        .run_action(&def.flow, request(false), requester())
        .await
        .map_err(super::actions::action_error)?
    {
        RunReply::Finished(rec) => json!(rec),
        RunReply::Started(run) => json!({"run_id": run, "result": "running"}),
        RunReply::DryRun(_) => json!({"result": "unknown"}),
    };
    let (ok, line) = describe(&action, &rec);
    let line = format!("operator {token}: {line}");
    // Each step is an entry (a ticket note) of its own, in the order it
    // ran, then the run's result.
    let at_ms = now_ms();
    let steps = step_lines(&action, &rec);
    for (i, text) in steps.iter().enumerate() {
        let row = TimelineRow {
            id: new_id("tl"),
            seq: p.next_seq(),
            at_ms,
            kind: "action".into(),
            text: text.clone(),
            alert: None,
            data: Some(json!({"run_id": rec["run_id"], "step": i + 1})),
        };
        p.store.add_timeline(&id, &row).await?;
    }
    let row = TimelineRow {
        id: new_id("tl"),
        seq: p.next_seq(),
        at_ms,
        kind: "action".into(),
        text: line.clone(),
        alert: None,
        data: Some(json!({"run_id": rec["run_id"], "result": rec["result"]})),
    };
    p.store.add_timeline(&id, &row).await?;
    p.send(Input::ActionResult {
        incident: id,
        report: ActionReport {
            ok,
            text: line,
            // On the timeline already, written above.
            steps,
            automatic: false,
        },
    });
    Ok(Json(rec).into_response())
}

//! An operator acknowledges for someone on the phone (`POST
//! /v1/notifications/{id}/acknowledge`, `POST /v1/incidents/{id}/acknowledge`):
//! the person rang the centre back, or answered another phone. The
//! escalation ends as an acknowledgement (state `acked`, the same
//! `notification.acked` event as a key press, with `via: "console"`), not
//! as a cancel, so the reports count it as one.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiPath as Path, RawBody};
use super::{access, ApiError, Scope, Shared};
use crate::ivr::escalation::OperatorAck;
use crate::service::Service;

/// Longest `by` (a person's name).
const MAX_BY: usize = 200;

fn parse(svc: &Service, body: &[u8], operator: &str) -> Result<OperatorAck, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::invalid(
            "",
            "the body must be {\"by\": \"who acknowledged\", \"reason\": \"...\"}",
        )
    })?;
    let Some(o) = v.as_object() else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };
    if let Some(k) = o.keys().find(|k| *k != "by" && *k != "reason") {
        return Err(ApiError::invalid(k, format!("unknown field {k}")));
    }
    let by = match o.get("by") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            return Err(ApiError::invalid(
                "by",
                "by (who acknowledged on the phone) is required",
            ))
        }
    };
    if by.chars().count() > MAX_BY || by.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "by",
            format!("by must be one line of at most {MAX_BY} characters"),
        ));
    }
    let reason = match o.get("reason") {
        None | Some(Value::Null) => "acknowledged on the phone".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("reason", "reason must be a string")),
    };
    // Stored, sent in the webhook and shown to operators, as a cancel's.
    let max = svc.config.limits.max_cancel_reason;
    if reason.chars().count() > max {
        return Err(ApiError::invalid(
            "reason",
            format!("reason is longer than {max} characters"),
        ));
    }
    Ok(OperatorAck {
        by,
        operator: operator.to_string(),
        reason,
    })
}

/// Acknowledge notification `id` for `ack.by`. A repeat of the same
/// acknowledgement answers as the first did (idempotent): 202 while the
/// call is being hung up, 200 once it has ended acknowledged.
async fn acknowledge(svc: &Service, id: &str, ack: &OperatorAck) -> Result<Response, ApiError> {
    let accepted = svc.acknowledge(id, ack).await?;
    let answer = |status: StatusCode, repeated: bool| {
        (
            status,
            Json(
                json!({"id": id, "acknowledged": true, "by": ack.by, "operator": ack.operator,
                "reason": ack.reason, "repeated": repeated}),
            ),
        )
            .into_response()
    };
    if accepted {
        return Ok(answer(StatusCode::ACCEPTED, false));
    }
    // Not taken: asked before (the same person?), or it ended.
    let same = |a: &OperatorAck| a.by == ack.by;
    if svc.store.ack_request(id).await?.as_ref().is_some_and(same) {
        let n = svc.store.get_notification(id).await?;
        let ended = n.is_some_and(|n| crate::store::FINAL_STATES.contains(&n.state.as_str()));
        let status = if ended {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        return Ok(answer(status, true));
    }
    let state = svc
        .store
        .get_notification(id)
        .await?
        .map(|n| n.state)
        .unwrap_or_default();
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Already ended",
        format!(
            "notification {id} is {state}, or is already being stopped; nothing to acknowledge"
        ),
    ))
}

#[utoipa::path(post, path = "/v1/notifications/{id}/acknowledge", params(("id" = String, Path)),
    request_body = super::openapi::AcknowledgeRequest,
    responses((status = 202, description = "acknowledged; the call in progress is being hung up"),
        (status = 200, description = "already acknowledged by the same person (a repeat)"),
        (status = 409, description = "ended, or being cancelled"), (status = 404, body = super::openapi::Problem)),
    security(("bearer" = ["operate"])))]
pub(crate) async fn acknowledge_notification(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // Operators only: a customer's portal (or a notify token, which is a
    // machine) never says a person took the call.
    let caller = access::actor(&svc, &headers, Scope::Operate)?;
    let ack = parse(&svc, &body, &caller.name)?;
    match svc.store.get_notification(&id).await? {
        Some(n) => caller.check(&n.contract, "notification", &id)?,
        None => return Err(access::not_found("notification", &id)),
    }
    tracing::info!(notification = %id, by = %ack.by, operator = %ack.operator, "acknowledged in the console");
    acknowledge(&svc, &id, &ack).await
}

/// `POST /v1/incidents/{id}/acknowledge`: the incident's call in
/// progress, acknowledged as above (the pipeline hears of it through the
/// gateway's `notification.acked` webhook, as of a key press).
pub(crate) async fn acknowledge_incident(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let caller = access::actor(&svc, &headers, Scope::Operate)?;
    let ack = parse(&svc, &body, &caller.name)?;
    let p = super::incidents::pipeline(&svc)?;
    let row = p
        .store
        .get_incident(&id)
        .await?
        .ok_or_else(|| access::not_found("incident", &id))?;
    caller.check(&row.incident.contract, "incident", &id)?;
    let Some(nid) = row.incident.notification.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Nobody is being called",
            format!("incident {id} has no call in progress to acknowledge"),
        ));
    };
    if svc.store.get_notification(&nid).await?.is_none() {
        // `[pipeline] gateway_url`: the call runs at another gateway.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Call at another gateway",
            format!("notification {nid} runs at another gateway: acknowledge it there"),
        ));
    }
    tracing::info!(incident = %id, notification = %nid, by = %ack.by, operator = %ack.operator, "incident acknowledged in the console");
    let mut r = acknowledge(&svc, &nid, &ack).await?;
    r.headers_mut().insert(
        "x-callout-notification",
        axum::http::HeaderValue::from_str(&nid).unwrap_or(axum::http::HeaderValue::from_static("")),
    );
    Ok(r)
}

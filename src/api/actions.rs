//! `/v1/actions`: operators run or dry-run a contract's maintenance flow,
//! and read run records.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{ApiPath as Path, RawBody};
use super::{authorize, ApiError, Scope, Shared};
use crate::action::{ActionError, Requester};
use crate::service::{RunError, RunReply, RunRequest};

pub(super) fn action_error(e: RunError) -> ApiError {
    match e {
        RunError::Store(e) => ApiError::internal(e),
        RunError::UnknownNotification(_) => ApiError::invalid("notification", e.to_string()),
        RunError::Action(a) => {
            let detail = a.to_string();
            match &a {
                ActionError::UnknownContract(_) => ApiError::invalid("contract", detail),
                ActionError::NoActionForFlow { .. } => {
                    ApiError::new(StatusCode::NOT_FOUND, "Not found", detail)
                }
                ActionError::UnknownAction { .. } | ActionError::AmbiguousFlow { .. } => {
                    ApiError::invalid("action", detail)
                }
                ActionError::UnknownParam { param, .. }
                | ActionError::FixedParam { param, .. }
                | ActionError::MissingParam { param, .. }
                | ActionError::InvalidValue { param, .. }
                | ActionError::NotInInventory { param, .. } => {
                    ApiError::invalid(&format!("params.{param}"), detail)
                }
                ActionError::Busy { .. }
                | ActionError::BusyElsewhere { .. }
                | ActionError::Fenced(_) => {
                    ApiError::new(StatusCode::CONFLICT, "Already running", detail)
                }
                ActionError::Store(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Cannot record the run",
                    detail,
                ),
                ActionError::NoArgv { .. }
                | ActionError::MissingSecret(_)
                | ActionError::Config(_)
                | ActionError::NotLinked(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Action not runnable",
                    detail,
                ),
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/actions/{flow}/run", params(("flow" = String, Path)),
    request_body = crate::service::RunRequest,
    responses(
        (status = 200, description = "dry run: the exact steps; or, with wait, the run record"),
        (status = 202, description = "started; the record is at Location"),
        (status = 404, description = "the contract has no action using this flow", body = super::openapi::Problem),
        (status = 409, description = "this flow already runs for this contract and host", body = super::openapi::Problem),
        (status = 422, description = "a parameter is not allowed", body = super::openapi::Problem)),
    security(("bearer" = ["actions", "operate"])))]
pub(super) async fn run_flow(
    axum::extract::State(svc): Shared,
    headers: HeaderMap,
    Path(flow): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // Who may look at all, before reading the body.
    authorize(&svc, &headers, Scope::Actions)
        .or_else(|_| authorize(&svc, &headers, Scope::Operate))?;
    let req: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed request",
            format!("line {} column {}: {}", e.line(), e.column(), e),
        )
    })?;
    // A dry run changes nothing: operators may look; running needs `actions`.
    let token = if req.dry_run {
        authorize(&svc, &headers, Scope::Actions)
            .or_else(|_| authorize(&svc, &headers, Scope::Operate))?
    } else {
        authorize(&svc, &headers, Scope::Actions)?
    };
    let r = svc
        .run_action(&flow, req, Requester::Api { token })
        .await
        .map_err(action_error)?;
    Ok(match r {
        RunReply::DryRun(p) => Json(json!({
            "dry_run": true,
            "plan": p,
            "text": p.describe(),
        }))
        .into_response(),
        RunReply::Finished(rec) => Json(json!(rec)).into_response(),
        RunReply::Started(id) => {
            let mut r = (
                StatusCode::ACCEPTED,
                Json(json!({"run_id": id, "state": "running"})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/actions/runs/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    })
}

#[utoipa::path(get, path = "/v1/actions/runs/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "the run and its record"), (status = 404, body = super::openapi::Problem)),
    security(("bearer" = ["actions", "operate"])))]
pub(super) async fn get_run(
    axum::extract::State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&svc, &headers, Scope::Operate)
        .or_else(|_| authorize(&svc, &headers, Scope::Actions))?;
    let run =
        svc.store.get_run(&id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "Not found", format!("no run {id}"))
        })?;
    Ok(Json(json!(run)))
}

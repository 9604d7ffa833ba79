//! `/v1/contracts/{id}/pin-lock`: operators see a contract's PIN lockout
//! (failures by contact, until when actions are locked) and clear it, for
//! example after calling back the engineer who mistyped.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{authorize, ApiError, Scope, Shared};
use crate::runner::now_ms;
use crate::service::Service;

fn contract_plan(
    svc: &Service,
    id: &str,
) -> Result<std::sync::Arc<crate::ivr::dialplan::Dialplan>, ApiError> {
    svc.registry.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no contract {id}"),
        )
    })
}

async fn lock_json(svc: &Service, id: &str) -> Result<Value, ApiError> {
    let plan = contract_plan(svc, id)?;
    let lock = svc.store.pin_lock(id).await?;
    let now = now_ms();
    let Some(pin) = &plan.pin else {
        return Ok(
            json!({"contract": id, "pin": false, "locked": false, "failures": 0, "contacts": []}),
        );
    };
    let failures = lock.failures_at(now, pin.lockout);
    let contacts = match (failures, lock.since_ms) {
        (1.., Some(since)) => svc.store.pin_failures_by_contact(id, since).await?,
        _ => Vec::new(),
    };
    Ok(json!({
        "contract": id,
        "pin": true,
        "locked": lock.is_locked(now),
        "locked_at_ms": lock.locked_at_ms.filter(|_| lock.is_locked(now)),
        "locked_until_ms": lock.locked_until_ms.filter(|_| lock.is_locked(now)),
        "failures": failures,
        "max_attempts": pin.max_attempts,
        "lockout_ms": pin.lockout.as_millis() as u64,
        "last_failure_ms": lock.last_failure_ms.filter(|_| failures > 0),
        "contacts": contacts,
    }))
}

#[utoipa::path(get, path = "/v1/contracts/{id}/pin-lock", params(("id" = String, Path)),
    responses((status = 200, body = super::openapi::PinLockState), (status = 404, body = super::openapi::Problem)),
    security(("bearer" = ["operate"])))]
pub(super) async fn get_pin_lock(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&svc, &headers, Scope::Operate)?;
    Ok(Json(lock_json(&svc, &id).await?))
}

#[utoipa::path(delete, path = "/v1/contracts/{id}/pin-lock", params(("id" = String, Path)),
    responses((status = 200, description = "cleared: `cleared` says whether there was anything to clear, `before` the state before, `state` the state now"),
        (status = 404, body = super::openapi::Problem)),
    security(("bearer" = ["operate"])))]
pub(super) async fn clear_pin_lock(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(&svc, &headers, Scope::Operate)?;
    let plan = contract_plan(&svc, &id)?;
    let now = now_ms();
    let before = svc.store.clear_pin_lock(&id, &token, now).await?;
    let was_locked = before.is_locked(now);
    let lockout = plan.pin.as_ref().map(|p| p.lockout).unwrap_or_default();
    let had_failures = before.failures_at(now, lockout) > 0;
    tracing::warn!(contract = %id, token = %token, was_locked, "PIN lock cleared by an operator");
    Ok(Json(json!({
        "contract": id,
        "cleared": was_locked || had_failures,
        "cleared_by": token,
        "before": {"locked": was_locked, "failures": before.failures, "locked_until_ms": before.locked_until_ms},
        "state": lock_json(&svc, &id).await?,
    })))
}

//! The REST API (axum), JSON under `/v1`. Errors are RFC 9457 problem
//! documents; client errors say what is wrong, server errors say little
//! and are logged.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod access;
mod acknowledge;
mod actions;
mod error;
mod incident_actions;
mod incidents;
mod intake;
pub mod openapi;
mod pin_lock;
pub mod server;

pub use error::ApiError;
pub(crate) use error::RawBody;
use error::{ApiPath as Path, ApiQuery as Query};

use crate::runner::Notification;
use crate::service::{body_hash, AcceptError, Service};

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Notify,
    /// Post alerts to the pipeline's intake.
    Intake,
    Operate,
    /// Run maintenance actions for real.
    Actions,
    Admin,
    /// Read-only, bound to the token's `contracts` (a customer's portal).
    Customer,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Notify => "notify",
            Scope::Intake => "intake",
            Scope::Operate => "operate",
            Scope::Actions => "actions",
            Scope::Admin => "admin",
            Scope::Customer => "customer",
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is
/// case-insensitive (RFC 9110 section 11.1), so `bearer` works too.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Check the bearer token: 401 without a valid one, 403 without the scope
/// (`admin` implies every scope).
fn authorize(svc: &Service, headers: &HeaderMap, scope: Scope) -> Result<String, ApiError> {
    token_for(svc, headers, scope).map(|t| t.name.clone())
}

/// The configured token a request carries, if it has `scope`.
fn token_for<'a>(
    svc: &'a Service,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<&'a crate::config::TokenConfig, ApiError> {
    // A console session stands for the token it was opened with
    // (`console::session`; its CSRF check is a layer of the router).
    let hash: String = match bearer(headers) {
        Some(token) => Sha256::digest(token.trim().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        None => crate::console::session::of_request(
            &svc.console.sessions,
            headers,
            crate::runner::now_ms(),
        )
        .map(|(_, s)| s.token_sha256)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a bearer token is required",
            )
        })?,
    };
    let t = svc
        .config
        .tokens
        .iter()
        .find(|t| t.sha256.eq_ignore_ascii_case(&hash))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "unknown token"))?;
    if t.scopes.iter().any(|s| s == scope.name() || s == "admin") {
        Ok(t)
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("this token lacks the {} scope", scope.name()),
        ))
    }
}

type Shared = State<Arc<Service>>;

pub(crate) use access::Caller;

/// The caller of a read route (`operate`, or `customer` bound to its
/// contracts), by bearer token or console session.
pub(crate) fn reader(svc: &Service, headers: &HeaderMap) -> Result<Caller, ApiError> {
    access::reader(svc, headers, &[])
}

pub(crate) use access::not_found as access_not_found;

/// A caller with the `operate` scope (a bound token: its contracts only).
pub(crate) fn operator(svc: &Service, headers: &HeaderMap) -> Result<Caller, ApiError> {
    access::actor(svc, headers, Scope::Operate)
}

/// The router; tested with `tower::ServiceExt::oneshot` or over a socket.
pub fn router(svc: Arc<Service>) -> Router {
    let max_body = svc.config.max_body;
    let body_timeout = svc.config.http.body_timeout;
    Router::new()
        .route(
            "/v1/notifications",
            post(create_notification).get(list_notifications),
        )
        .route("/v1/notifications/{id}", get(get_notification))
        .route("/v1/notifications/{id}/cancel", post(cancel_notification))
        .route(
            "/v1/notifications/{id}/acknowledge",
            post(acknowledge::acknowledge_notification),
        )
        .route(
            "/v1/notifications/{id}/audio",
            get(crate::console::audio::notification_audio),
        )
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/contracts", get(list_contracts))
        .route("/v1/contracts/{id}", get(get_contract))
        .route(
            "/v1/contracts/{id}/phrases/{name}",
            get(crate::console::audio::contract_phrase),
        )
        .route(
            "/v1/contracts/{id}/reachable",
            get(crate::console::reach::contract_reachability),
        )
        .route(
            "/v1/contracts/{id}/pin-lock",
            get(pin_lock::get_pin_lock).delete(pin_lock::clear_pin_lock),
        )
        .route("/v1/dialplans/reload", post(reload_dialplans))
        .route("/v1/actions/{flow}/run", post(actions::run_flow))
        .route("/v1/actions/runs/{id}", get(actions::get_run))
        .route("/v1/dialplans/validate", post(validate_dialplan))
        .route("/v1/intake/alertmanager", post(intake::alertmanager))
        .route("/v1/intake/grafana", post(intake::grafana))
        .route("/v1/intake/events", post(intake::events))
        .route("/v1/pipeline/webhook", post(incidents::gateway_webhook))
        .route("/v1/incidents", get(incidents::list_incidents))
        .route("/v1/incidents/{id}", get(incidents::get_incident))
        .route("/v1/incidents/{id}/close", post(incidents::close_incident))
        .route(
            "/v1/incidents/{id}/acknowledge",
            post(acknowledge::acknowledge_incident),
        )
        .route(
            "/v1/incidents/{id}/actions/{action}",
            post(incident_actions::run_incident_action),
        )
        .route(
            "/v1/silences",
            post(incidents::create_silence).get(incidents::list_silences),
        )
        .route(
            "/v1/silences/{id}",
            axum::routing::delete(incidents::delete_silence),
        )
        .route("/v1/mails", get(incidents::list_mails))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::reports::api::routes())
        .merge(crate::console::routes())
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req, next| {
            error::read_body(max_body, body_timeout, req, next)
        }))
        .layer(middleware::from_fn_with_state(svc.clone(), timing))
        .layer(middleware::from_fn({
            let svc = svc.clone();
            move |req, next| crate::console::session::csrf_guard(svc.clone(), req, next)
        }))
        .layer(middleware::from_fn(error::problem_net))
        .with_state(svc)
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    Json(openapi::ApiDoc::openapi())
}

async fn timing(State(svc): Shared, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let r = next.run(req).await;
    svc.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    svc.metrics
        .api_latency_us_total
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    r
}

fn field_str(v: &Value, name: &str, required: bool) -> Result<Option<String>, ApiError> {
    match v.get(name) {
        None | Some(Value::Null) if required => {
            Err(ApiError::invalid(name, format!("{name} is required")))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(ApiError::invalid(name, format!("{name} must not be empty")))
        }
        Some(Value::String(s)) if s.len() > 2000 => {
            Err(ApiError::invalid(name, format!("{name} is too long")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
    }
}

/// Read and check the notification body by hand, so every problem names
/// its field.
pub(crate) fn parse_notification(body: &[u8]) -> Result<(Notification, bool), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
            format!(
                "the body is not JSON: line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !v.is_object() {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    }
    const KNOWN: &[&str] = &[
        "contract",
        "ticket",
        "severity",
        "host",
        "summary",
        "variables",
        "dry_run",
    ];
    if let Some(k) = v
        .as_object()
        .and_then(|o| o.keys().find(|k| !KNOWN.contains(&k.as_str())))
    {
        return Err(ApiError::invalid(k, format!("unknown field {k}")));
    }
    let mut variables = BTreeMap::new();
    match v.get("variables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, val) in o {
                match val {
                    Value::String(s) => {
                        variables.insert(k.clone(), s.clone());
                    }
                    Value::Number(n) => {
                        variables.insert(k.clone(), n.to_string());
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &format!("variables.{k}"),
                            "variables must be strings or numbers",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "variables",
                "variables must be an object",
            ))
        }
    }
    let dry_run = match v.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "dry_run",
                "dry_run must be true or false",
            ))
        }
    };
    let n = Notification {
        contract: field_str(&v, "contract", true)?.unwrap_or_default(),
        ticket: field_str(&v, "ticket", true)?.unwrap_or_default(),
        severity: field_str(&v, "severity", true)?.unwrap_or_default(),
        host: field_str(&v, "host", true)?.unwrap_or_default(),
        summary: field_str(&v, "summary", true)?.unwrap_or_default(),
        variables,
    };
    Ok((n, dry_run))
}

/// The request's Idempotency-Key, if it sent one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_string())),
        // Silently dropping a key the client sent would turn its retries
        // into duplicate pages.
        Some(_) => Err(ApiError::invalid(
            "Idempotency-Key",
            "the key must be 1 to 255 visible ASCII characters",
        )),
    }
}

#[utoipa::path(post, path = "/v1/notifications", request_body = openapi::NotificationRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key")),
    responses((status = 202, body = openapi::Accepted), (status = 200, description = "dry run"),
        (status = 401, body = openapi::Problem), (status = 403, body = openapi::Problem),
        (status = 409, body = openapi::Problem), (status = 422, body = openapi::Problem)),
    security(("bearer" = ["notify"])))]
async fn create_notification(
    State(svc): Shared,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    authorize(&svc, &headers, Scope::Notify)?;
    let (mut n, dry_run) = parse_notification(&body)?;
    let Some(plan) = svc.registry.get(&n.contract) else {
        return Err(ApiError::invalid(
            "contract",
            format!("unknown contract {:?}", n.contract),
        ));
    };
    let ignored = svc
        .check_input(&plan, &mut n)
        .await
        .map_err(|e| ApiError::invalid(&e.field, e.detail))?;
    for name in crate::ivr::dialplan::template_variables(&match &plan.message {
        crate::ivr::dialplan::Phrase::Text(t) => t.clone(),
        _ => String::new(),
    }) {
        if plan.variables.contains(&name) && !n.variables.contains_key(&name) {
            return Err(ApiError::invalid(
                &format!("variables.{name}"),
                format!("the contract's message needs variable {name}"),
            ));
        }
    }
    if dry_run {
        let contacts: Vec<Value> = plan
            .contacts
            .iter()
            .map(|c| json!({"name": c.name, "uri": c.uri}))
            .collect();
        return Ok((
            StatusCode::OK,
            Json(
                json!({"dry_run": true, "contract": plan.contract, "contacts": contacts,
            "rounds": plan.escalation.rounds, "ignored_variables": ignored}),
            ),
        )
            .into_response());
    }
    let key = idempotency_key(&headers)?;
    let (row, created) = match svc.accept(n, key.as_deref(), &body_hash(&body)).await {
        Ok(r) => r,
        Err(AcceptError::UnknownContract(c)) => {
            return Err(ApiError::invalid(
                "contract",
                format!("unknown contract {c:?}"),
            ))
        }
        Err(AcceptError::KeyMismatch) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key reused",
                "this Idempotency-Key was used with a different request body",
            ))
        }
        Err(AcceptError::KeyInProgress) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Request in progress",
                "a request with this Idempotency-Key is still being processed",
            ))
        }
        Err(AcceptError::Conflict) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Notification just ended",
                "another notification for this contract and ticket ended while this one was stored; send it again",
            ))
        }
        Err(AcceptError::Store(e)) => return Err(ApiError::internal(e)),
    };
    let location = format!("/v1/notifications/{}", row.id);
    let mut r = (
        StatusCode::ACCEPTED,
        Json(
            json!({"id": row.id, "state": row.state, "created": created, "location": location,
                "ignored_variables": ignored}),
        ),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn notification_json(svc: &Service, id: &str) -> Result<Value, ApiError> {
    let n = svc.store.get_notification(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no notification {id}"),
        )
    })?;
    let attempts = svc.store.attempts(id).await?;
    let media = svc.store.attempt_media(id).await?;
    let outbox = svc.store.outbox(id).await?;
    let acked_by = match &n.final_state {
        // An operator's acknowledgement names the person it was for.
        Some(f) if f["state"] == "acked" && f["console"]["by"].is_string() => {
            f["console"]["by"].as_str().map(str::to_string)
        }
        Some(f) if f["state"] == "acked" => (f["attempt"].as_u64().unwrap_or(0) as usize)
            .checked_sub(1)
            .and_then(|i| attempts.get(i))
            .map(|a| a.contact.clone()),
        _ => None,
    };
    let actions = svc.store.runs_of(id).await?;
    // Waiting for a channel of its trunk (`crate::channels`).
    let queued = svc
        .channels
        .queued(id)
        .await
        .map(|(trunk, since_ms)| json!({"trunk": trunk, "since_ms": since_ms}));
    Ok(json!({
        "queued_for_trunk": queued,
        "id": n.id, "contract": n.contract, "ticket": n.ticket, "severity": n.severity, "host": n.host,
        "summary": n.summary, "variables": n.variables, "state": n.state, "final": n.final_state,
        "acked_by": acked_by, "actions": actions, "cancel_reason": n.cancel_reason,
        "created_ms": n.created_ms, "updated_ms": n.updated_ms,
        "attempts": attempts.iter().map(|a| {
            let mut v = json!(a);
            if let Some(m) = media.iter().find(|m| m.attempt == a.attempt) {
                v["media"] = json!(m);
            }
            v
        }).collect::<Vec<_>>(),
        "webhooks": {
            "queued": outbox.iter().filter(|o| o.delivered_ms.is_none() && !o.gave_up).count(),
            "delivered": outbox.iter().filter(|o| o.delivered_ms.is_some()).count(),
            "failed": outbox.iter().filter(|o| o.gave_up).map(|o| json!({"event": o.event, "error": o.last_error})).collect::<Vec<_>>(),
        },
    }))
}

#[utoipa::path(get, path = "/v1/notifications/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "state, attempts, actions, webhooks"), (status = 404, body = openapi::Problem)),
    security(("bearer" = ["notify", "operate"])))]
async fn get_notification(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = match authorize(&svc, &headers, Scope::Notify) {
        Ok(_) => access::actor(&svc, &headers, Scope::Notify)?,
        Err(_) => access::reader(&svc, &headers, &[])?,
    };
    let v = notification_json(&svc, &id).await?;
    caller.check(v["contract"].as_str().unwrap_or(""), "notification", &id)?;
    Ok(Json(v))
}

#[derive(Deserialize)]
struct CancelBody {
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/notifications/{id}/cancel", params(("id" = String, Path)),
    request_body = openapi::CancelRequest,
    responses((status = 202, description = "cancelling"), (status = 409, description = "already ended"), (status = 404, body = openapi::Problem)),
    security(("bearer" = ["notify", "operate"])))]
async fn cancel_notification(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let caller = access::actor(&svc, &headers, Scope::Notify)
        .or_else(|_| access::actor(&svc, &headers, Scope::Operate))?;
    let reason = if body.is_empty() {
        "cancelled".to_string()
    } else {
        let b: CancelBody = serde_json::from_slice(&body)
            .map_err(|_| ApiError::invalid("reason", "body must be {\"reason\": \"...\"}"))?;
        b.reason.unwrap_or_else(|| "cancelled".into())
    };
    // The reason is stored, sent in every webhook and shown to operators.
    let max = svc.config.limits.max_cancel_reason;
    if reason.chars().count() > max {
        return Err(ApiError::invalid(
            "reason",
            format!("reason is longer than {max} characters"),
        ));
    }
    match svc.store.get_notification(&id).await? {
        Some(n) => caller.check(&n.contract, "notification", &id)?,
        None => return Err(access::not_found("notification", &id)),
    }
    let accepted = svc.cancel(&id, &reason).await?;
    let status = if accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CONFLICT
    };
    Ok((
        status,
        Json(json!({"id": id, "cancelled": accepted, "reason": reason})),
    )
        .into_response())
}

/// Numbers are read by hand so a bad one is a 422 naming its parameter.
#[derive(Deserialize)]
struct ListQuery {
    contract: Option<String>,
    state: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn query_int(
    name: &str,
    v: Option<&str>,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    match v.trim().parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid(
            name,
            format!(
                "{name} must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

#[utoipa::path(get, path = "/v1/notifications",
    params(("contract" = Option<String>, Query), ("state" = Option<String>, Query), ("since" = Option<i64>, Query),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "items and next_cursor")), security(("bearer" = ["operate"])))]
async fn list_notifications(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let caller = access::reader(&svc, &headers, &[])?;
    let limit = query_int("limit", q.limit.as_deref(), 1..=500)?.unwrap_or(50);
    let since = query_int("since", q.since.as_deref(), 0..=i64::MAX)?;
    let before = match q.cursor.as_deref() {
        Some(c) => {
            let (ms, id) = c
                .split_once('.')
                .ok_or_else(|| ApiError::invalid("cursor", "malformed cursor"))?;
            Some((
                ms.parse()
                    .map_err(|_| ApiError::invalid("cursor", "malformed cursor"))?,
                id.to_string(),
            ))
        }
        None => None,
    };
    // A bound caller without a contract filter pages through its own
    // contracts only, one query per contract merged newest first.
    let rows = match (&caller.contracts, q.contract.as_deref()) {
        (Some(_), Some(c)) if !caller.may_see(c) => Vec::new(),
        (Some(cs), None) => {
            let mut all = Vec::new();
            for c in cs {
                all.extend(
                    svc.store
                        .list_notifications(
                            Some(c),
                            q.state.as_deref(),
                            since,
                            before.clone(),
                            limit,
                        )
                        .await?,
                );
            }
            all.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
            all.truncate(limit as usize);
            all
        }
        _ => {
            svc.store
                .list_notifications(
                    q.contract.as_deref(),
                    q.state.as_deref(),
                    since,
                    before,
                    limit,
                )
                .await?
        }
    };
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| format!("{}.{}", r.created_ms, r.id)))
        .flatten();
    Ok(Json(json!({"items": rows, "next_cursor": next})))
}

#[utoipa::path(get, path = "/v1/calls/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "one attempt"), (status = 404, body = openapi::Problem)), security(("bearer" = ["operate"])))]
async fn get_call(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = access::reader(&svc, &headers, &[])?;
    let a = svc.store.attempt_by_id(&id).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "Not found", format!("no call {id}"))
    })?;
    let n = svc.store.get_notification(&a.notification_id).await?;
    caller.check(n.as_ref().map_or("", |n| n.contract.as_str()), "call", &id)?;
    Ok(Json(json!(a)))
}

#[utoipa::path(get, path = "/v1/contracts", responses((status = 200, description = "loaded contracts")), security(("bearer" = ["operate"])))]
async fn list_contracts(State(svc): Shared, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    // Dialplans name the centre's people and numbers: not for customers.
    let caller = access::actor(&svc, &headers, Scope::Operate)?;
    let items: Vec<Value> = svc
        .registry
        .snapshot()
        .values()
        .filter(|p| caller.may_see(&p.contract))
        .map(|p| json!({"contract": p.contract, "name": p.name, "language": p.language, "contacts": p.contacts.len()}))
        .collect();
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(get, path = "/v1/contracts/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "the dialplan, PIN never shown"), (status = 404, body = openapi::Problem)), security(("bearer" = ["operate"])))]
async fn get_contract(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = access::actor(&svc, &headers, Scope::Operate)?;
    caller.check(&id, "contract", &id)?;
    let p = svc.registry.get(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no contract {id}"),
        )
    })?;
    // PinConfig never serialises its code.
    Ok(Json(json!(*p)))
}

#[utoipa::path(post, path = "/v1/dialplans/reload",
    responses((status = 200, description = "reloaded"), (status = 422, description = "errors; previous dialplans kept")), security(("bearer" = ["admin"])))]
async fn reload_dialplans(State(svc): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&svc, &headers, Scope::Admin)?;
    Ok(match svc.registry.reload() {
        Ok(n) => {
            svc.prewarm();
            if let Some(p) = svc.pipeline.get() {
                p.send(crate::pipeline::driver::Input::Reload);
            }
            (StatusCode::OK, Json(json!({"reloaded": n}))).into_response()
        }
        Err(errors) => {
            let e: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"reloaded": 0, "errors": e, "kept": "the previous dialplans"})),
            )
                .into_response()
        }
    })
}

#[utoipa::path(post, path = "/v1/dialplans/validate", request_body(content = String, content_type = "application/toml"),
    responses((status = 200, description = "valid, or the errors as file:line:column")), security(("bearer" = ["operate"])))]
async fn validate_dialplan(
    State(svc): Shared,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    authorize(&svc, &headers, Scope::Operate)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("body", "the dialplan must be UTF-8 text"))?;
    // An operate token must not learn what the service's environment
    // holds: only prefixed variables are read, and errors stay vague.
    let env = crate::ivr::inputs::EnvAccess::Prefixed(svc.config.validate_env_prefix.clone());
    let r = crate::ivr::dialplan::load_str_env(
        text,
        std::path::Path::new("request.toml"),
        &svc.config.prompts,
        &svc.registry.flows(),
        &env,
    );
    Ok(Json(match r {
        Ok(p) => json!({"valid": true, "contract": p.contract}),
        Err(errors) => {
            json!({"valid": false, "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()})
        }
    }))
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "database and SIP ready"),
    (status = 503, description = "not ready: the database (`store: failing` while writes fail), or `undialable` names contracts whose trunk is unusable and why")))]
async fn readyz(State(svc): Shared) -> Response {
    // A probe must answer within its own timeout, not the pool's 10 s.
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), svc.store.ping())
        .await
        .unwrap_or(false);
    // Reads can work while writes fail (a full disk): the writer knows.
    let w = svc.writer.status();
    let store = if db && !w.failing { "ok" } else { "failing" };
    // A contract whose trunk is unusable cannot page anyone: not ready.
    let undialable = svc.undialable_contracts().await;
    let ready = store == "ok" && undialable.is_empty();
    let mut body = json!({"database": db, "store": store, "pending_writes": w.pending,
        "journaled_writes": w.in_journal, "sip": svc.gateway.sip_addr().to_string(),
        "registrations": svc.gateway.sip().registrations(), "trunks": svc.trunk_health.snapshot(),
        "undialable": undialable});
    if let Some(c) = svc.cluster.get() {
        body["node"] = json!({"id": c.id, "leases_held": c.leases_held()});
    }
    // Limited trunks: channels in use and calls waiting (all nodes, and
    // this node's share), backoff left. A full trunk is not unready.
    body["channels"] = json!(svc.channels.snapshot().await);
    if ready {
        return (StatusCode::OK, Json(body)).into_response();
    }
    // A problem document (as every rejection is), its details as
    // extension members.
    body["type"] = json!("about:blank");
    body["title"] = json!("Service Unavailable");
    body["status"] = json!(503);
    body["detail"] = json!("not ready");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, error::PROBLEM_JSON)],
        body.to_string(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
async fn metrics(State(svc): Shared) -> Response {
    let m = &svc.metrics;
    let w = svc.writer.status();
    let mut out = String::new();
    out.push_str("# TYPE callout_calls_total counter\n");
    for (outcome, n) in m
        .calls_by_outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        out.push_str(&format!(
            "callout_calls_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    // RTCP and SRTP figures of ended calls (driver/media.rs).
    out.push_str(&crate::driver::media::counters::text());
    out.push_str(&format!(
        "# TYPE callout_active_calls gauge\ncallout_active_calls {}\n\
         # TYPE callout_active_escalations gauge\ncallout_active_escalations {}\n\
         # TYPE callout_dialling_escalations gauge\ncallout_dialling_escalations {}\n\
         # TYPE callout_queued_escalations gauge\ncallout_queued_escalations {}\n\
         # TYPE callout_webhook_failures_total counter\ncallout_webhook_failures_total {}\n\
         # TYPE callout_webhook_given_up_total counter\ncallout_webhook_given_up_total {}\n\
         # TYPE callout_tts_fallbacks_total counter\ncallout_tts_fallbacks_total {}\n\
         # TYPE callout_api_requests_total counter\ncallout_api_requests_total {}\n\
         # TYPE callout_api_latency_seconds_sum counter\ncallout_api_latency_seconds_sum {:.6}\n\
         # TYPE callout_store_failing gauge\ncallout_store_failing {}\n\
         # TYPE callout_store_pending_writes gauge\ncallout_store_pending_writes {}\n\
         # TYPE callout_store_journaled_writes gauge\ncallout_store_journaled_writes {}\n\
         # TYPE callout_store_write_failures_total counter\ncallout_store_write_failures_total {}\n\
         # TYPE callout_store_journal_failures_total counter\ncallout_store_journal_failures_total {}\n",
        m.active_calls.load(Ordering::Relaxed),
        svc.active_escalations(),
        svc.slots.counts().0,
        svc.slots.counts().1,
        m.webhook_failures.load(Ordering::Relaxed),
        m.webhook_gave_up.load(Ordering::Relaxed),
        m.tts_fallbacks.load(Ordering::Relaxed),
        m.api_requests.load(Ordering::Relaxed),
        m.api_latency_us_total.load(Ordering::Relaxed) as f64 / 1e6,
        u8::from(w.failing),
        w.pending,
        w.in_journal,
        w.failures_total,
        w.journal_failures_total,
    ));
    // The SIP task answers between datagrams, so even under a flood this
    // waits for one datagram at most; a stopped task just omits the lines.
    if let Ok(s) = svc.gateway.sip().stats().await {
        out.push_str(&format!(
            "# TYPE callout_sip_received_total counter\ncallout_sip_received_total {}\n\
             # TYPE callout_sip_rejected_total counter\ncallout_sip_rejected_total {}\n\
             # TYPE callout_sip_malformed_dropped_total counter\ncallout_sip_malformed_dropped_total {}\n\
             # TYPE callout_sip_flood_dropped_total counter\ncallout_sip_flood_dropped_total {}\n\
             # TYPE callout_sip_sources_banned_total counter\ncallout_sip_sources_banned_total {}\n\
             # TYPE callout_sip_sources_banned gauge\ncallout_sip_sources_banned {}\n\
             # TYPE callout_sip_remembered_answers gauge\ncallout_sip_remembered_answers {}\n",
            s.received,
            s.rejected,
            s.dropped_malformed,
            s.flood_dropped,
            s.sources_banned,
            s.banned_now,
            s.remembered,
        ));
    }
    out.push_str(&svc.trunk_health.metrics_text());
    out.push_str(&svc.channels.metrics_text().await);
    if let Some(p) = svc.pipeline.get() {
        out.push_str(&incidents::metrics_text(p));
    }
    if let Some(c) = svc.cluster.get() {
        out.push_str(&c.metrics_text());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

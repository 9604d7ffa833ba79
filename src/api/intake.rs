//! `POST /v1/intake/{alertmanager,grafana,events}`: alerts in. Every
//! alert the answer calls accepted is in the database before the answer
//! is sent; one bad alert of a batch is named and the rest are kept.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiQuery as Query, RawBody};
use super::incidents::pipeline;
use super::{token_for, ApiError, Scope, Shared};
use crate::pipeline::alert::Alert;
use crate::pipeline::sources::{self, Batch, BodyError};
use crate::runner::now_ms;

#[derive(Deserialize)]
pub(crate) struct IntakeQuery {
    /// The contract for alerts that do not name one.
    contract: Option<String>,
}

type Parser = fn(&[u8], i64, Option<&str>) -> Result<Batch, BodyError>;

async fn intake(
    svc: &crate::service::Service,
    headers: &HeaderMap,
    default_contract: Option<String>,
    body: &[u8],
    parse: Parser,
) -> Result<Response, ApiError> {
    let token = token_for(svc, headers, Scope::Intake)?;
    let p = pipeline(svc)?;
    if let Some(c) = &default_contract {
        if c.is_empty() || c.len() > 200 {
            return Err(ApiError::invalid(
                "contract",
                "contract must be 1 to 200 characters",
            ));
        }
    }
    let now = now_ms();
    let batch = parse(
        body,
        now,
        Some(default_contract.as_deref().unwrap_or(sources::UNROUTED)),
    )
    .map_err(|e| ApiError::invalid(&e.field, e.detail))?;
    let contracts = p.contracts();
    // Alerts that name no contract go where a contract's routing rule
    // says; none matching is the sender's error, named, never a drop.
    let route = |a: Alert, index: usize| -> Result<Alert, Value> {
        if a.contract != sources::UNROUTED {
            return Ok(a);
        }
        match crate::pipeline::config::route(&contracts, &a) {
            Some((c, line)) => {
                let mut a = a;
                a.contract = c.to_string();
                a.labels
                    .insert("meta.routed".into(), format!("{c}: route at line {line}"));
                Ok(a)
            }
            None => Err(json!({
                "index": index,
                "field": "contract",
                "detail": "no contract named (label or field contract, routing_key, or ?contract=) and no contract's [[pipeline.routes]] matches",
            })),
        }
    };
    let mut rejected: Vec<Value> = Vec::new();
    let mut routed_items = Vec::with_capacity(batch.items.len());
    for (i, item) in batch.items.into_iter().enumerate() {
        match item.map(|a| route(a, i)) {
            Ok(Ok(a)) => routed_items.push((i, Ok(a), false)),
            Ok(Err(why)) => rejected.push(why),
            Err(e) => routed_items.push((i, Err(e), false)),
        }
    }
    for a in batch.acks {
        match route(a.alert, a.index) {
            Ok(al) => routed_items.push((a.index, Ok(al), true)),
            Err(why) => rejected.push(why),
        }
    }
    let mut accepted: Vec<Alert> = Vec::new();
    let mut ids: Vec<Value> = Vec::new();
    for (index, item, ack) in routed_items {
        match item {
            // A token bound to contracts posts for those only; the whole
            // request is refused, nothing of it stored.
            Ok(a) if !token.contracts.is_empty() && !token.contracts.contains(&a.contract) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "this token may not post alerts for contract {:?} (alert {index})",
                        a.contract
                    ),
                ));
            }
            Ok(a) if !contracts.contains_key(&a.contract) => {
                let why = if svc.registry.get(&a.contract).is_some() {
                    format!("contract {:?} has no [pipeline] section", a.contract)
                } else {
                    format!("unknown contract {:?}", a.contract)
                };
                rejected.push(json!({"index": index, "field": "contract", "detail": why}));
            }
            Ok(a) => {
                ids.push(json!({"index": index, "id": a.id, "key": a.key, "acknowledge": ack}));
                accepted.push(a);
            }
            Err(e) => {
                rejected.push(json!({"index": e.index, "field": e.field, "detail": e.detail}))
            }
        }
    }
    if accepted.is_empty() {
        let first = rejected.first().cloned().unwrap_or_default();
        let mut err = ApiError::invalid(
            first["field"].as_str().unwrap_or(""),
            if rejected.is_empty() {
                "the body holds no alert".to_string()
            } else {
                format!(
                    "no alert accepted; {}: {}",
                    first["field"].as_str().unwrap_or(""),
                    first["detail"].as_str().unwrap_or("")
                )
            },
        );
        err = err.with_errors(json!(rejected));
        return Err(err);
    }
    // Durable before the answer (committed, possibly together with
    // other requests' alerts, before this returns).
    let n = accepted.len() as u64;
    p.intake.insert_alerts(accepted).await?;
    p.metrics
        .alerts_accepted
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    p.kick();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": ids, "rejected": rejected})),
    )
        .into_response())
}

/// Prometheus Alertmanager's webhook (`webhook_configs`, version 4).
pub(crate) async fn alertmanager(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<IntakeQuery>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    intake(&svc, &headers, q.contract, &body, sources::alertmanager).await
}

/// Grafana-managed alerting's webhook contact point.
pub(crate) async fn grafana(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<IntakeQuery>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    intake(&svc, &headers, q.contract, &body, sources::grafana).await
}

/// Generic events (PagerDuty Events API v2 semantics).
pub(crate) async fn events(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<IntakeQuery>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    intake(&svc, &headers, q.contract, &body, sources::events).await
}

//! The live board: what runs now (`GET /console/api/board`) and the
//! runner's events as Server-Sent Events (`GET /console/events`), both
//! limited to the caller's contracts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use crate::api::ApiError;

/// Notifications not ended, each with its calls, and the open incidents.
pub(super) async fn board(State(svc): Shared, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let mut notifications = Vec::new();
    for n in svc.store.unfinished().await? {
        if !caller.may_see(&n.contract) {
            continue;
        }
        let attempts = svc.store.attempts(&n.id).await?;
        let calls: Vec<Value> = attempts
            .iter()
            .filter(|a| a.ended_ms.is_none())
            .map(|a| {
                json!({"attempt": a.attempt, "contact": a.contact, "round": a.round,
                    "started_ms": a.started_ms, "answered_ms": a.answered_ms, "digits": a.digits,
                    "state": if a.answered_ms.is_some() { "talking" } else { "calling" }})
            })
            .collect();
        notifications.push(json!({
            "id": n.id, "contract": n.contract, "ticket": n.ticket, "severity": n.severity,
            "host": n.host, "summary": n.summary, "state": n.state, "created_ms": n.created_ms,
            "attempts": attempts.len(), "calls": calls,
        }));
    }
    let mut incidents = Vec::new();
    if let Some(p) = svc.pipeline.get() {
        for r in p.store.open_incidents().await? {
            let i = &r.incident;
            if !caller.may_see(&i.contract) {
                continue;
            }
            incidents.push(json!({
                "id": i.id, "ticket": r.ticket, "state": i.state.as_str(), "contract": i.contract,
                "notify_contract": i.notify_contract, "host": i.host, "kind": i.kind,
                "severity": i.severity.as_str(), "summary": i.summary, "opened_ms": i.opened_ms,
                "held_by": i.held_by, "holds": i.holds.len(), "notification": i.notification,
                "acked_by": i.acked_by,
            }));
        }
    }
    Ok(Json(json!({
        "now_ms": crate::runner::now_ms(),
        "notifications": notifications,
        "incidents": incidents,
    })))
}

/// The event feed. Each message is one runner event with its
/// `notification` and `ts_ms`; `lagged` tells the page to reload the
/// board because it missed some.
pub(super) async fn events(
    State(svc): Shared,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let rx = svc.console.live.subscribe();
    // The contract of each notification seen, for a bound caller.
    let seen: HashMap<String, bool> = HashMap::new();
    let state = (rx, svc.clone(), caller, seen);
    let stream =
        futures_util::stream::unfold(state, |(mut rx, svc, caller, mut seen)| async move {
            loop {
                match rx.recv().await {
                    Ok(v) => {
                        let id = v["notification"].as_str().unwrap_or("").to_string();
                        let visible = match (&caller.contracts, seen.get(&id)) {
                            (None, _) => true,
                            (Some(_), Some(ok)) => *ok,
                            (Some(_), None) => {
                                // Not stored yet (its first event): decided
                                // by the event's own contract, not remembered.
                                match svc.store.get_notification(&id).await {
                                    Ok(Some(n)) => {
                                        let ok = caller.may_see(&n.contract);
                                        if seen.len() > 10_000 {
                                            seen.clear();
                                        }
                                        seen.insert(id, ok);
                                        ok
                                    }
                                    _ => v["contract"].as_str().is_some_and(|c| caller.may_see(c)),
                                }
                            }
                        };
                        if visible {
                            let ev = Event::default().event("call").data(v.to_string());
                            return Some((Ok::<_, Infallible>(ev), (rx, svc, caller, seen)));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let ev = Event::default().event("lagged").data("{}");
                        return Some((Ok(ev), (rx, svc, caller, seen)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

//! The pipeline's routes: the gateway's webhooks coming back, incidents
//! with their timelines, silences and alert mails.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiPath as Path, ApiQuery as Query, RawBody};
use super::{access, authorize, query_int, ApiError, Scope, Shared};
use crate::pipeline::driver::{Input, Pipeline};
use crate::pipeline::engine::Silence;
use crate::runner::now_ms;
use crate::store::{IncidentFilter, IncidentRow, TimelineRow};

pub(crate) fn pipeline(svc: &crate::service::Service) -> Result<Arc<Pipeline>, ApiError> {
    svc.pipeline.get().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Pipeline not running",
            "the alert pipeline does not run in this process (no dialplan has a [pipeline] section, or [pipeline] run = \"off\")",
        )
    })
}

/// `POST /v1/pipeline/webhook`: the gateway's signed events.
pub(crate) async fn gateway_webhook(
    State(svc): Shared,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let p = pipeline(&svc)?;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    if id.is_empty() || id.len() > 200 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "webhook-id is missing",
        ));
    }
    crate::pipeline::gateway::verify(
        &p.secrets,
        id,
        ts,
        sig,
        &body,
        now_ms() / 1000,
        svc.config.pipeline.webhook_tolerance.as_secs() as i64,
    )
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", e))?;
    let ev: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::invalid("", "the body is not JSON"))?;
    let Some(ticket) = ev["ticket"].as_str() else {
        return Ok((StatusCode::OK, Json(json!({"ignored": "no ticket"}))).into_response());
    };
    let Some(row) = p.store.incident_by_ticket(ticket).await? else {
        return Ok((
            StatusCode::OK,
            Json(json!({"ignored": "no incident holds this ticket"})),
        )
            .into_response());
    };
    let plan = ev["contract"].as_str().and_then(|c| p.plan(c));
    let names = |i: u64| {
        plan.as_ref()
            .and_then(|p| p.contacts.get(i as usize))
            .map(|c| c.name.clone())
    };
    let (text, outcome) = crate::pipeline::gateway::describe(&ev, &names);
    let line = TimelineRow {
        id: format!("wh_{id}"),
        seq: p.next_seq(),
        at_ms: now_ms(),
        kind: "gateway".into(),
        text,
        alert: None,
        data: Some(
            json!({"type": ev["type"], "notification": ev["notification"], "data": ev["data"]}),
        ),
    };
    let added = p.store.add_timeline(&row.incident.id, &line).await?;
    if added {
        match (outcome, ev["notification"].as_str()) {
            (Some(o), Some(n)) => p.send(Input::Outcome {
                incident: row.incident.id.clone(),
                notification: n.to_string(),
                outcome: o,
            }),
            // The gateway is still calling for an incident that is over:
            // one whose call was asked for, closed before the gateway
            // answered, and the pipeline killed before it could cancel
            // (or a gateway that resumed a call after its own restart).
            (None, Some(n)) if !row.incident.state.is_open() => p.send(Input::Stray {
                incident: row.incident.id.clone(),
                notification: n.to_string(),
            }),
            _ => {}
        }
    }
    Ok((
        StatusCode::OK,
        Json(json!({"incident": row.incident.id, "duplicate": !added})),
    )
        .into_response())
}

fn incident_json(r: &IncidentRow) -> Value {
    let i = &r.incident;
    json!({
        "id": i.id,
        "ticket": r.ticket,
        "state": i.state.as_str(),
        "contract": i.contract,
        "notify_contract": i.notify_contract,
        "host": i.host,
        "kind": i.kind,
        "severity": i.severity.as_str(),
        "summary": i.summary,
        "opened_ms": i.opened_ms,
        "closed_ms": i.closed_ms,
        "updated_ms": r.updated_ms,
        "alert_count": i.alert_count,
        "firing": i.keys.values().filter(|k| k.firing).map(|k| &k.name).collect::<Vec<_>>(),
        "held_by": i.held_by,
        "holds": i.holds,
        "notification": i.notification,
        "notifications": i.notifications,
        "first_action": i.first_action,
        "acked_by": i.acked_by,
        "reopened": i.reopened,
    })
}

#[derive(Deserialize)]
pub(crate) struct IncidentQuery {
    contract: Option<String>,
    host: Option<String>,
    state: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/incidents?contract=&host=&state=&since=&limit=&cursor=`
pub(crate) async fn list_incidents(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<Value>, ApiError> {
    let caller = access::reader(&svc, &headers, &[])?;
    let p = pipeline(&svc)?;
    let limit = query_int("limit", q.limit.as_deref(), 1..=500)?.unwrap_or(50);
    const STATES: &[&str] = &[
        "pending",
        "notifying",
        "acknowledged",
        "recovered",
        "closed",
        "suppressed",
        "expired",
    ];
    if let Some(s) = &q.state {
        if !STATES.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "state",
                format!("state must be one of {}", STATES.join(", ")),
            ));
        }
    }
    let rows = p
        .store
        .list_incidents(&IncidentFilter {
            contract: q.contract,
            host: q.host,
            state: q.state,
            since_ms: query_int("since", q.since.as_deref(), 0..=i64::MAX)?,
            contracts: caller.contracts.clone(),
            before: q.cursor,
            limit,
        })
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.incident.id.clone()))
        .flatten();
    Ok(Json(json!({
        "items": rows.iter().map(incident_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /v1/incidents/{id}`: the incident, its alerts and its whole
/// ordered timeline.
pub(crate) async fn get_incident(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = access::reader(&svc, &headers, &[])?;
    let p = pipeline(&svc)?;
    let row = p.store.get_incident(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no incident {id}"),
        )
    })?;
    caller.check(&row.incident.contract, "incident", &id)?;
    let alerts = p.store.incident_alerts(&id, 1000).await?;
    let timeline = p.store.timeline(&id).await?;
    let mut v = incident_json(&row);
    v["alerts"] = json!(alerts
        .iter()
        .map(|a| json!({
            "id": a.alert.id, "source": a.alert.source, "status": a.alert.status,
            "name": a.alert.name, "host": a.alert.host, "severity": a.alert.severity,
            "summary": a.alert.summary, "received_ms": a.alert.received_ms,
            "labels": a.alert.labels, "disposition": a.disposition,
        }))
        .collect::<Vec<_>>());
    v["timeline"] = json!(timeline);
    Ok(Json(v))
}

/// `POST /v1/incidents/{id}/close`: a person closes it (the escalation,
/// if running, is cancelled).
pub(crate) async fn close_incident(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = access::actor(&svc, &headers, Scope::Operate)?;
    let who = caller.name.clone();
    let p = pipeline(&svc)?;
    match p.store.get_incident(&id).await? {
        Some(r) => caller.check(&r.incident.contract, "incident", &id)?,
        None => return Err(access::not_found("incident", &id)),
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    p.send(Input::Close {
        incident: id.clone(),
        by: who,
        reply: tx,
    });
    let closed = rx.await.unwrap_or(false);
    if !closed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Not open",
            format!("incident {id} is not open"),
        ));
    }
    Ok(Json(json!({"id": id, "closed": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    contract: String,
    matchers: Vec<String>,
    /// RFC 3339; now when absent.
    starts_at: Option<String>,
    ends_at: Option<String>,
    /// Instead of ends_at: "2h".
    duration: Option<String>,
    comment: String,
}

fn rfc3339(field: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|d| d.timestamp_millis())
        .map_err(|_| ApiError::invalid(field, format!("{field} must be an RFC 3339 time")))
}

/// `POST /v1/silences`
pub(crate) async fn create_silence(
    State(svc): Shared,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let who = authorize(&svc, &headers, Scope::Operate)?;
    let p = pipeline(&svc)?;
    let b: SilenceBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("", format!("the body is not a silence: {e}")))?;
    if svc.registry.get(&b.contract).is_none() {
        return Err(ApiError::invalid(
            "contract",
            format!("unknown contract {:?}", b.contract),
        ));
    }
    if b.matchers.is_empty() || b.matchers.len() > 32 {
        return Err(ApiError::invalid("matchers", "give 1 to 32 matchers"));
    }
    for (i, m) in b.matchers.iter().enumerate() {
        crate::pipeline::config::Matcher::parse(m)
            .map_err(|e| ApiError::invalid(&format!("matchers[{i}]"), e))?;
    }
    if b.comment.trim().is_empty() || b.comment.chars().count() > 500 {
        return Err(ApiError::invalid(
            "comment",
            "say why, in 1 to 500 characters",
        ));
    }
    let now = now_ms();
    let starts = b
        .starts_at
        .as_deref()
        .map(|v| rfc3339("starts_at", v))
        .transpose()?
        .unwrap_or(now);
    let ends = match (&b.ends_at, &b.duration) {
        (Some(e), None) => rfc3339("ends_at", e)?,
        (None, Some(d)) => {
            let d = crate::util::parse_duration(d)
                .map_err(|e| ApiError::invalid("duration", e.to_string()))?;
            starts.saturating_add(d.as_millis() as i64)
        }
        _ => {
            return Err(ApiError::invalid(
                "ends_at",
                "give ends_at or duration, not both",
            ))
        }
    };
    if ends <= starts || ends <= now {
        return Err(ApiError::invalid(
            "ends_at",
            "the silence must end in the future, after it starts",
        ));
    }
    let s = Silence {
        id: crate::store::new_id("si"),
        contract: b.contract,
        matchers: b.matchers,
        starts_ms: starts,
        ends_ms: ends,
        created_by: who,
        comment: b.comment,
    };
    p.store.put_silence(&s).await?;
    p.send(Input::SilenceAdded(s.clone()));
    Ok((StatusCode::CREATED, Json(json!(s))).into_response())
}

/// `GET /v1/silences`: the ones not over.
pub(crate) async fn list_silences(
    State(svc): Shared,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&svc, &headers, Scope::Operate)?;
    let p = pipeline(&svc)?;
    Ok(Json(json!({"items": p.store.silences(now_ms()).await?})))
}

/// `DELETE /v1/silences/{id}`
pub(crate) async fn delete_silence(
    State(svc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&svc, &headers, Scope::Operate)?;
    let p = pipeline(&svc)?;
    if !p.store.delete_silence(&id, now_ms()).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no live silence {id}"),
        ));
    }
    p.send(Input::SilenceRemoved(id));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct MailQuery {
    contract: Option<String>,
    unparsed: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/mails?contract=&unparsed=true`: accepted alert mails; the
/// unparsed ones with the reason no rule could read them.
pub(crate) async fn list_mails(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<MailQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&svc, &headers, Scope::Operate)?;
    let p = pipeline(&svc)?;
    let limit = query_int("limit", q.limit.as_deref(), 1..=500)?.unwrap_or(50);
    let unparsed = matches!(q.unparsed.as_deref(), Some("true" | "1"));
    let rows = p
        .store
        .list_mails(q.contract.as_deref(), unparsed, limit)
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({"id": m.id, "contract": m.contract, "from": m.from, "rcpt": m.rcpt,
                "subject": m.subject, "received_ms": m.received_ms, "alert": m.alert_id,
                "unparsed": m.reason, "bytes": m.raw.len()})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// Per-contract counts for `/metrics` and readiness.
pub(crate) fn metrics_text(p: &Pipeline) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &p.metrics;
    let mut out = String::new();
    let mut line = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    line(
        "callout_pipeline_alerts_accepted_total",
        "Alerts stored by the intake.",
        m.alerts_accepted.load(Relaxed),
    );
    line(
        "callout_pipeline_alerts_handled_total",
        "Alerts the engine decided on.",
        m.alerts_handled.load(Relaxed),
    );
    line(
        "callout_pipeline_incidents_opened_total",
        "Incidents opened.",
        m.incidents_opened.load(Relaxed),
    );
    line(
        "callout_pipeline_notifies_total",
        "Calls asked of the gateway.",
        m.notifies.load(Relaxed),
    );
    line(
        "callout_pipeline_store_retries_total",
        "Engine steps the store refused at first.",
        m.store_retries.load(Relaxed),
    );
    out
}

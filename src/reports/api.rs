//! `GET /v1/reports/...`: the reports as JSON, or CSV with
//! `format=csv`. Readers are `operate` tokens and `customer` tokens, the
//! latter (and any token bound to contracts) over their own contracts
//! only, whatever `contract` asks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;

use super::calendar::Setup;
use super::{Dimension, Filter};
use crate::api::{ApiError, Caller};
use crate::service::Service;

type Shared = State<Arc<Service>>;

pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/reports/summary", get(summary))
        .route("/v1/reports/by/{dimension}", get(by))
        .route("/v1/reports/monthly", get(monthly))
        .route("/v1/reports/monthly.pdf", get(super::pdf_api::monthly_pdf))
}

fn day_ms(name: &str, s: &str, tz_min: i64) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        ApiError::invalid(
            name,
            format!("{name} must be YYYY-MM-DD or epoch milliseconds"),
        )
    })?;
    let ms = d
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0);
    Ok(ms - tz_min * 60_000)
}

/// The filter of a report request, within what the caller may see:
/// `from` and `to` (days, `to` included, or epoch ms, `to` excluded),
/// `contract` (comma-separated), `tz` (minutes east of UTC). Default:
/// the last 30 days.
pub(crate) fn filter(q: &HashMap<String, String>, caller: &Caller) -> Result<Filter, ApiError> {
    let tz = match q.get("tz") {
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|m| (-14 * 60..=14 * 60).contains(m))
            .ok_or_else(|| {
                ApiError::invalid("tz", "tz must be minutes east of UTC, -840 to 840")
            })?,
        None => 0,
    };
    let now = crate::runner::now_ms();
    let to = match q.get("to").filter(|s| !s.is_empty()) {
        Some(s) if s.parse::<i64>().is_ok() => day_ms("to", s, tz)?,
        Some(s) => day_ms("to", s, tz)? + 86_400_000,
        None => now + 1,
    };
    let from = match q.get("from").filter(|s| !s.is_empty()) {
        Some(s) => day_ms("from", s, tz)?,
        None => to - 30 * 86_400_000,
    };
    if from >= to {
        return Err(ApiError::invalid("from", "from must be before to"));
    }
    let asked: Option<Vec<String>> = q.get("contract").filter(|s| !s.is_empty()).map(|s| {
        s.split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    });
    let contracts = match (asked, &caller.contracts) {
        (Some(a), Some(_)) => Some(a.into_iter().filter(|c| caller.may_see(c)).collect()),
        (Some(a), None) => Some(a),
        (None, bound) => bound.clone(),
    };
    Ok(Filter {
        from_ms: from,
        to_ms: to,
        contracts,
        tz_offset_min: tz,
    })
}

fn csv_wanted(q: &HashMap<String, String>) -> bool {
    q.get("format").is_some_and(|f| f == "csv")
}

fn csv(body: String, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn summary(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let f = filter(&q, &caller)?;
    let s = super::summary(&svc.store, &f).await?;
    Ok(if csv_wanted(&q) {
        csv(super::csv::summary(&s), "summary")
    } else {
        Json(s).into_response()
    })
}

async fn by(
    State(svc): Shared,
    headers: HeaderMap,
    Path(dim): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let d = Dimension::parse(&dim).ok_or_else(|| {
        ApiError::invalid(
            "dimension",
            "dimension must be contract, contact, hour, weekday or period",
        )
    })?;
    let f = filter(&q, &caller)?;
    let rows = super::breakdown_in(&svc.store, &f, d, &setup(&svc, &HashMap::new())?).await?;
    Ok(if csv_wanted(&q) {
        csv(super::csv::groups(d.name(), &rows), d.name())
    } else {
        Json(serde_json::json!({"dimension": d.name(), "from_ms": f.from_ms, "to_ms": f.to_ms, "items": rows}))
            .into_response()
    })
}

/// Every contract's hours and targets (dialplans' `[reports]`) and the
/// centre's default (callout.toml `[reports]`); `target_minutes` and
/// `target_percent` in the request replace every line's target (to ask
/// "what if"), as before per-contract targets existed.
pub(crate) fn setup(svc: &Service, q: &HashMap<String, String>) -> Result<Setup, ApiError> {
    let plans = svc.registry.snapshot();
    let mut s = Setup::from_plans(
        plans.values().map(|p| p.as_ref()),
        svc.config.reports.target(),
    );
    if let Some(m) = q.get("target_minutes") {
        let ms = m
            .parse::<i64>()
            .ok()
            .filter(|m| (1..=7 * 24 * 60).contains(m))
            .ok_or_else(|| {
                ApiError::invalid("target_minutes", "target_minutes must be 1 to 10080")
            })?
            * 60_000;
        s.default_target.ack_within_ms = ms;
        for c in s.contracts.values_mut() {
            c.ack_within_ms = Some(ms);
        }
    }
    if let Some(p) = q.get("target_percent") {
        let p = p
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| {
                ApiError::invalid("target_percent", "target_percent must be 0 to 100")
            })?;
        s.default_target.percent = p;
        for c in s.contracts.values_mut() {
            c.ack_percent = Some(p);
        }
    }
    Ok(s)
}

async fn monthly(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let mut q = q;
    // A year of months unless asked otherwise.
    if !q.contains_key("from") {
        let from = crate::runner::now_ms() - 365 * 86_400_000;
        q.insert("from".into(), from.to_string());
    }
    let f = filter(&q, &caller)?;
    let setup = setup(&svc, &q)?;
    let months = super::monthly::report(&svc.store, &f, &setup).await?;
    Ok(if csv_wanted(&q) {
        let mut out = String::from(
            "month,contract,notifications,acknowledged,within_target,attainment,met,\
             target_ack_within_ms,target_percent,answer_rate,answer_rate_target,answer_rate_met\r\n",
        );
        for m in &months {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
                m.month,
                m.contract.replace([',', '"', '\r', '\n'], "_"),
                m.notifications,
                m.acknowledged,
                m.within_target,
                m.attainment.map(|a| format!("{a:.2}")).unwrap_or_default(),
                m.met,
                m.target.ack_within_ms,
                m.target.percent,
                m.answer_rate.map(|a| format!("{a:.2}")).unwrap_or_default(),
                m.target
                    .answer_rate_percent
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                m.answer_rate_met.map(|a| a.to_string()).unwrap_or_default(),
            ));
        }
        csv(out, "monthly")
    } else {
        Json(serde_json::json!({"target": setup.default_target, "months": months})).into_response()
    })
}

//! `GET /v1/reports/monthly.pdf?contract=..&month=YYYY-MM&lang=ja|en`:
//! the monthly quality report as a PDF, and the request reading it
//! shares with the console's printable page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Datelike;

use super::quality::{self, Report, Request};
use crate::api::{ApiError, Caller};
use crate::console::i18n::{self, Lang};
use crate::service::Service;

/// The language asked for (`lang`), else the browser's or cookie's.
pub(crate) fn lang(q: &HashMap<String, String>, headers: &HeaderMap) -> Lang {
    match q.get("lang").map(String::as_str) {
        Some("ja") => Lang::Ja,
        Some("en") => Lang::En,
        _ => i18n::of_request(headers),
    }
}

/// Read `contract`, `month` (default: the last whole month) and `tz`
/// (an IANA name for the whole centre's report; a contract's report is
/// cut in its dialplan's time zone), and build the report within what
/// `caller` may see: a contract it may not see answers 404, as one that
/// does not exist.
pub(crate) async fn load(
    svc: &Service,
    caller: &Caller,
    q: &HashMap<String, String>,
) -> Result<Report, ApiError> {
    let month = match q.get("month").filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None => {
            let now = chrono::DateTime::from_timestamp_millis(crate::runner::now_ms())
                .unwrap_or_default();
            let last = now.date_naive().with_day0(0).unwrap_or_default() - chrono::Days::new(1);
            last.format("%Y-%m").to_string()
        }
    };
    let req = Request::parse(q.get("contract").map(String::as_str), &month)
        .map_err(|e| ApiError::invalid("month", e.to_string()))?;
    if let Some(c) = &req.contract {
        if !caller.may_see(c) || !svc.registry.snapshot().contains_key(c) {
            return Err(crate::api::access_not_found("contract", c));
        }
    }
    let tz: chrono_tz::Tz = match q.get("tz").filter(|s| !s.is_empty()) {
        Some(s) => s.parse().map_err(|_| {
            ApiError::invalid("tz", "tz must be an IANA time zone such as Asia/Tokyo")
        })?,
        None => chrono_tz::Tz::UTC,
    };
    let setup = super::api::setup(svc, q)?;
    Ok(quality::build(&svc.store, &setup, &req, caller.contracts.clone(), tz).await?)
}

pub(crate) async fn monthly_pdf(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let report = load(&svc, &caller, &q).await?;
    let l = lang(&q, &headers);
    let text = quality::text(&report, l);
    // A few milliseconds of CPU; off the async workers all the same.
    let pdf = tokio::task::spawn_blocking(move || super::pdf::render(&text))
        .await
        .map_err(ApiError::internal)?;
    let pdf = match pdf {
        Ok(p) => p,
        Err(e @ super::pdf::PdfError::NoFont) => {
            tracing::error!(error = %e, "monthly PDF");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PDF unavailable",
                "this server has no Japanese font for PDF reports (fonts-ipafont-gothic)",
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let name = format!(
        "quality-{}-{}.pdf",
        report
            .request
            .contract
            .as_deref()
            .unwrap_or("centre")
            .replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "_"
            ),
        report.request.month_label()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
        ],
        pdf,
    )
        .into_response())
}

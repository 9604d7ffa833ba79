//! `/console/reports/monthly?contract=..&month=YYYY-MM`: the monthly
//! quality report of one contract (or the whole centre) as a printable
//! page, from the very [`Text`](crate::reports::quality::Text) the PDF
//! prints, with a link to that PDF and the attainment plotted.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use super::i18n::t;
use super::pages::{layout_pub as layout, viewer};
use super::svg::{esc, lines, Series};
use super::Shared;
use crate::api::Caller;
use crate::reports::quality;

pub(crate) async fn monthly(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return Redirect::to("/console/login").into_response();
    };
    let l = v.lang;
    let caller = Caller {
        name: v.name.clone(),
        contracts: v.contracts.clone(),
    };
    let report = match crate::reports::pdf_api::load(&svc, &caller, &q).await {
        Ok(r) => r,
        Err(_) => {
            return layout(
                &v,
                "quality",
                t(l, "quality"),
                &format!("<p class=\"error\">{}</p>", t(l, "not_found")),
            )
        }
    };
    let text = quality::text(&report, l);
    let mut body = String::new();
    let _ = write!(
        body,
        "<article class=\"monthly\" lang=\"{lang}\"><h1 id=\"report-title\">{title}</h1><p class=\"sub\">{sub}</p>",
        lang = l.code(),
        title = esc(&text.title),
        sub = esc(&text.subtitle),
    );
    let mut qs: Vec<String> = vec![
        format!("month={}", report.request.month_label()),
        format!("lang={}", l.code()),
    ];
    if let Some(c) = &report.request.contract {
        qs.push(format!("contract={}", esc(c)));
    }
    if let Some(tz) = q.get("tz").filter(|s| !s.is_empty()) {
        qs.push(format!("tz={}", esc(tz)));
    }
    let _ = write!(
        body,
        "<p class=\"csv\"><button type=\"button\" id=\"print\">{pr}</button> · \
         <a id=\"pdf\" href=\"/v1/reports/monthly.pdf?{qs}\">{pdf}</a></p>",
        pr = t(l, "print"),
        pdf = t(l, "pdf"),
        qs = qs.join("&amp;"),
    );
    body.push_str("<table class=\"figures\" id=\"monthly-figures\">");
    for (k, val) in &text.figures {
        let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(val));
    }
    let _ = write!(
        body,
        "</table><p class=\"target\" id=\"monthly-target\">{}</p>",
        esc(&text.target)
    );
    let labels: Vec<String> = report.months.iter().map(|m| m.month.clone()).collect();
    body.push_str(&lines(
        t(l, "attainment"),
        &labels,
        &[Series {
            name: "monthly_attainment",
            label: t(l, "attainment"),
            values: report.months.iter().map(|m| m.attainment).collect(),
        }],
        Some(report.target.percent),
        &|v| format!("{v:.0}%"),
    ));
    body.push_str("<table id=\"attainment\"><tr>");
    for h in &text.header {
        let _ = write!(body, "<th>{}</th>", esc(h));
    }
    body.push_str("</tr>");
    for (row, m) in text.rows.iter().zip(&report.months) {
        let _ = write!(
            body,
            "<tr class=\"{}\">",
            if m.met { "met" } else { "missed" }
        );
        for c in row {
            let _ = write!(body, "<td>{}</td>", esc(c));
        }
        body.push_str("</tr>");
    }
    body.push_str("</table></article>");
    layout(&v, "quality", &text.title, &body)
}

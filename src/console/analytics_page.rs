//! The pages rendered whole on the server: analytics with their plots,
//! the monthly quality report (printable) and the contracts as people
//! read them.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use super::i18n::{t, Lang};
use super::pages::{layout_pub as layout, viewer, Viewer};
use super::svg::{bars, esc, lines, Series};
use super::Shared;
use crate::api::Caller;
use crate::reports::{self, Dimension, Figures};

fn caller_of(v: &Viewer) -> Caller {
    Caller {
        name: v.name.clone(),
        contracts: v.contracts.clone(),
    }
}

fn mins(ms: f64) -> String {
    if ms >= 60_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else {
        format!("{:.0} s", ms / 1000.0)
    }
}

/// Counts: whole numbers, but the axis ticks of small ones keep a decimal.
fn count_label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// An instant as a person in `tz` reads it.
fn local_time(ms: i64, tz: chrono_tz::Tz) -> String {
    use chrono::TimeZone;
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%a %Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default()
}

fn pct(r: f64) -> String {
    format!("{:.0}%", r * 100.0)
}

fn error_page(v: &Viewer, page: &str, e: impl std::fmt::Display) -> Response {
    layout(
        v,
        page,
        t(v.lang, page),
        &format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
    )
}

/// The filter form (period and contract).
fn filter_form(l: Lang, action: &str, q: &HashMap<String, String>, contracts: &[String]) -> String {
    let get = |k: &str| esc(q.get(k).map_or("", |s| s.as_str()));
    let mut opts = format!("<option value=\"\">{}</option>", t(l, "all"));
    for c in contracts {
        let sel = if q.get("contract") == Some(c) {
            " selected"
        } else {
            ""
        };
        let _ = write!(opts, "<option value=\"{c}\"{sel}>{c}</option>", c = esc(c));
    }
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{action}\">\
         <label>{from} <input type=\"date\" name=\"from\" value=\"{f}\"></label>\
         <label>{to} <input type=\"date\" name=\"to\" value=\"{tv}\"></label>\
         <label>{c} <select name=\"contract\">{opts}</select></label>\
         <input type=\"hidden\" name=\"tz\" value=\"{tz}\">\
         <button type=\"submit\">{apply}</button></form>",
        from = t(l, "from"),
        f = get("from"),
        to = t(l, "to"),
        tv = get("to"),
        c = t(l, "contract"),
        tz = get("tz"),
        apply = t(l, "apply"),
    )
}

fn visible_contracts(svc: &crate::service::Service, v: &Viewer) -> Vec<String> {
    match &v.contracts {
        Some(cs) => cs.clone(),
        None => svc.registry.snapshot().keys().cloned().collect(),
    }
}

fn figures_table(l: Lang, f: &Figures, extra: &str) -> String {
    let o = |v: Option<i64>| v.map(|v| mins(v as f64)).unwrap_or_else(|| "-".into());
    format!(
        "<table class=\"figures\" id=\"summary\">\
         <tr><th>{n}</th><td data-k=\"notifications\">{nv}</td></tr>\
         <tr><th>{ar}</th><td data-k=\"answer_rate\">{arv}</td></tr>\
         <tr><th>{m}</th><td data-k=\"ack_median_ms\">{mv}</td></tr>\
         <tr><th>{p}</th><td data-k=\"ack_p90_ms\">{pv}</td></tr>\
         <tr><th>{c}</th><td data-k=\"calls\">{cv}</td></tr>\
         <tr><th>{u}</th><td data-k=\"unanswered_calls\">{uv}</td></tr>\
         <tr><th>{ab}</th><td data-k=\"abandoned_calls\">{abv}</td></tr>\
         <tr><th>{ma}</th><td data-k=\"machine_calls\">{mav}</td></tr>\
         <tr><th>{d}</th><td data-k=\"escalation_depth_mean\">{dv}</td></tr>{extra}</table>",
        n = t(l, "notif_count"),
        nv = f.notifications,
        ar = t(l, "answer_rate"),
        arv = f.answer_rate.map(pct).unwrap_or_else(|| "-".into()),
        m = t(l, "ack_median"),
        mv = o(f.ack_median_ms),
        p = t(l, "ack_p90"),
        pv = o(f.ack_p90_ms),
        c = t(l, "call_count"),
        cv = f.calls,
        u = t(l, "unanswered"),
        uv = f.unanswered_calls,
        ab = t(l, "abandoned"),
        abv = f.abandoned_calls,
        ma = t(l, "machine"),
        mav = f.machine_calls,
        d = t(l, "depth"),
        dv = f
            .escalation_depth_mean
            .map(|d| format!("{d:.2}"))
            .unwrap_or_else(|| "-".into()),
    )
}

pub(crate) async fn analytics(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return Redirect::to("/console/login").into_response();
    };
    let l = v.lang;
    let f = match reports::api::filter(&q, &caller_of(&v)) {
        Ok(f) => f,
        Err(e) => return error_page(&v, "analytics", format!("{e:?}")),
    };
    let store = &svc.store;
    let setup = match reports::api::setup(&svc, &HashMap::new()) {
        Ok(s) => s,
        Err(e) => return error_page(&v, "analytics", format!("{e:?}")),
    };
    let (s, hours, days, by_contract, by_contact, by_period) = match tokio::try_join!(
        reports::summary(store, &f),
        reports::breakdown(store, &f, Dimension::Hour),
        reports::breakdown(store, &f, Dimension::Weekday),
        reports::breakdown(store, &f, Dimension::Contract),
        reports::breakdown(store, &f, Dimension::Contact),
        reports::breakdown_in(store, &f, Dimension::Period, &setup),
    ) {
        Ok(r) => r,
        Err(e) => return error_page(&v, "analytics", e),
    };
    let mut body = filter_form(l, "/console/analytics", &q, &visible_contracts(&svc, &v));
    let extra = format!(
        "<tr><th>{}</th><td data-k=\"actions\">{} / {}</td></tr>",
        t(l, "actions_run"),
        s.actions_run,
        s.actions_succeeded
    );
    body.push_str(&figures_table(l, &s.figures, &extra));
    let mut q2 = q.clone();
    q2.insert("format".into(), "csv".into());
    let qs: String = q2
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect::<Vec<_>>()
        .join("&amp;");
    let _ = write!(
        body,
        "<p class=\"csv\"><a href=\"/v1/reports/summary?{qs}\">CSV</a> · \
         <a href=\"/v1/reports/by/hour?{qs}\">CSV ({h})</a> · <a href=\"/v1/reports/by/contact?{qs}\">CSV ({c})</a></p>",
        h = t(l, "by_hour"),
        c = t(l, "by_contact"),
    );
    let hour_labels: Vec<String> = (0..24).map(|h| format!("{h}")).collect();
    let rate = |g: &[reports::Group]| g.iter().map(|g| g.figures.answer_rate).collect::<Vec<_>>();
    let med = |g: &[reports::Group]| {
        g.iter()
            .map(|g| g.figures.ack_median_ms.map(|v| v as f64))
            .collect::<Vec<_>>()
    };
    let p90 = |g: &[reports::Group]| {
        g.iter()
            .map(|g| g.figures.ack_p90_ms.map(|v| v as f64))
            .collect::<Vec<_>>()
    };
    let count = |g: &[reports::Group], which: fn(&Figures) -> i64| {
        g.iter()
            .map(|g| Some(which(&g.figures) as f64))
            .collect::<Vec<_>>()
    };
    let plot = |title: &str, svg: String| {
        format!(
            "<figure><figcaption>{}</figcaption>{svg}</figure>",
            esc(title)
        )
    };
    body.push_str("<div class=\"plots\">");
    body.push_str(&plot(
        t(l, "by_hour"),
        bars(
            t(l, "answer_rate"),
            &hour_labels,
            &[Series {
                name: "answer_rate_by_hour",
                label: t(l, "answer_rate"),
                values: rate(&hours),
            }],
            &pct,
        ),
    ));
    body.push_str(&plot(
        t(l, "by_hour"),
        bars(
            t(l, "call_count"),
            &hour_labels,
            &[
                Series {
                    name: "calls_by_hour",
                    label: t(l, "call_count"),
                    values: count(&hours, |f| f.calls),
                },
                Series {
                    name: "unanswered_by_hour",
                    label: t(l, "unanswered"),
                    values: count(&hours, |f| f.unanswered_calls),
                },
            ],
            &count_label,
        ),
    ));
    let day_names: Vec<String> = match l {
        Lang::Ja => ["日", "月", "火", "水", "木", "金", "土"],
        Lang::En => ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"],
    }
    .iter()
    .map(|s| s.to_string())
    .collect();
    body.push_str(&plot(
        t(l, "by_weekday"),
        lines(
            t(l, "ack_median"),
            &day_names,
            &[
                Series {
                    name: "ack_median_by_weekday",
                    label: t(l, "ack_median"),
                    values: med(&days),
                },
                Series {
                    name: "ack_p90_by_weekday",
                    label: t(l, "ack_p90"),
                    values: p90(&days),
                },
            ],
            None,
            &mins,
        ),
    ));
    let contract_labels: Vec<String> = by_contract.iter().map(|g| g.key.clone()).collect();
    body.push_str(&plot(
        t(l, "by_contract"),
        bars(
            t(l, "answer_rate"),
            &contract_labels,
            &[Series {
                name: "answer_rate_by_contract",
                label: t(l, "answer_rate"),
                values: rate(&by_contract),
            }],
            &pct,
        ),
    ));
    let contact_labels: Vec<String> = by_contact.iter().map(|g| g.key.clone()).collect();
    body.push_str(&plot(
        t(l, "by_contact"),
        bars(
            t(l, "call_count"),
            &contact_labels,
            &[
                Series {
                    name: "answered_by_contact",
                    label: t(l, "talking"),
                    values: count(&by_contact, |f| f.answered_calls),
                },
                Series {
                    name: "unanswered_by_contact",
                    label: t(l, "unanswered"),
                    values: count(&by_contact, |f| f.unanswered_calls),
                },
                Series {
                    name: "acked_by_contact",
                    label: t(l, "answer_rate"),
                    values: count(&by_contact, |f| f.acknowledged),
                },
            ],
            &count_label,
        ),
    ));
    let period_labels: Vec<String> = by_period.iter().map(|g| t(l, &g.key).to_string()).collect();
    body.push_str(&plot(
        t(l, "by_period"),
        bars(
            t(l, "notif_count"),
            &period_labels,
            &[
                Series {
                    name: "notifications_by_period",
                    label: t(l, "notif_count"),
                    values: count(&by_period, |f| f.notifications),
                },
                Series {
                    name: "acked_by_period",
                    label: t(l, "acknowledged_count"),
                    values: count(&by_period, |f| f.acknowledged),
                },
            ],
            &count_label,
        ),
    ));
    if !s.sip_failures.is_empty() {
        let labels: Vec<String> = s.sip_failures.keys().map(|k| k.to_string()).collect();
        body.push_str(&plot(
            t(l, "sip_failures"),
            bars(
                t(l, "sip_failures"),
                &labels,
                &[Series {
                    name: "sip_failures",
                    label: t(l, "sip_failures"),
                    values: s.sip_failures.values().map(|v| Some(*v as f64)).collect(),
                }],
                &count_label,
            ),
        ));
    }
    body.push_str("</div>");
    layout(&v, "analytics", t(l, "analytics"), &body)
}

pub(crate) async fn quality(
    State(svc): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return Redirect::to("/console/login").into_response();
    };
    let l = v.lang;
    let mut q = q;
    if !q.contains_key("from") {
        let from = crate::runner::now_ms() - 365 * 86_400_000;
        q.insert("from".into(), from.to_string());
    }
    let (f, setup) = match (
        reports::api::filter(&q, &caller_of(&v)),
        reports::api::setup(&svc, &q),
    ) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(e), _) | (_, Err(e)) => return error_page(&v, "quality", format!("{e:?}")),
    };
    let target = setup.default_target;
    let months = match reports::monthly::report(&svc.store, &f, &setup).await {
        Ok(m) => m,
        Err(e) => return error_page(&v, "quality", e),
    };
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"target\">{tg}: {m} min / {p}% · <button type=\"button\" id=\"print\">{pr}</button></p>",
        tg = t(l, "target"),
        m = target.ack_within_ms / 60_000,
        p = target.percent,
        pr = t(l, "print"),
    );
    let mut by_contract: std::collections::BTreeMap<&str, Vec<&reports::monthly::Month>> =
        Default::default();
    for m in &months {
        by_contract.entry(m.contract.as_str()).or_default().push(m);
    }
    for (c, ms) in by_contract {
        let title = if c == "*" {
            t(l, "all").to_string()
        } else {
            c.to_string()
        };
        let target = ms.first().map_or(target, |m| m.target);
        let last = ms.last().map(|m| m.month.as_str()).unwrap_or_default();
        let link = format!(
            "/console/reports/monthly?month={}{}",
            esc(last),
            if c == "*" {
                String::new()
            } else {
                format!("&amp;contract={}", esc(c))
            }
        );
        let _ = write!(
            body,
            "<section class=\"contract\"><h2><a href=\"{link}\">{}</a></h2>",
            esc(&title)
        );
        let labels: Vec<String> = ms.iter().map(|m| m.month.clone()).collect();
        body.push_str(&lines(
            t(l, "attainment"),
            &labels,
            &[Series {
                name: &format!("attainment:{c}"),
                label: t(l, "attainment"),
                values: ms.iter().map(|m| m.attainment).collect(),
            }],
            Some(target.percent),
            &|v| format!("{v:.0}%"),
        ));
        let _ = write!(
            body,
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>",
            t(l, "month"),
            t(l, "notif_count"),
            t(l, "attainment"),
            t(l, "target"),
        );
        for m in ms {
            let _ = write!(
                body,
                "<tr class=\"{cls}\"><td>{mo}</td><td>{n}</td><td>{a}</td><td>{tp}%</td><td>{met}</td></tr>",
                cls = if m.met { "met" } else { "missed" },
                mo = esc(&m.month),
                n = m.notifications,
                a = m.attainment.map(|a| format!("{a:.1}%")).unwrap_or_else(|| "-".into()),
                tp = target.percent,
                met = if m.met { t(l, "met") } else { t(l, "missed") },
            );
        }
        body.push_str("</table></section>");
    }
    layout(&v, "quality", t(l, "quality"), &body)
}

pub(crate) async fn contracts(State(svc): Shared, headers: HeaderMap) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return Redirect::to("/console/login").into_response();
    };
    let l = v.lang;
    if !v.operator {
        return error_page(&v, "contracts", t(l, "not_found"));
    }
    let mut body = String::new();
    // Checking the folder as a reload would, without applying it.
    let (dir, prompts) = (svc.config.dialplans.clone(), svc.config.prompts.clone());
    let check = tokio::task::spawn_blocking(move || {
        crate::ivr::registry::Registry::load(&dir, &prompts).err()
    })
    .await
    .ok()
    .flatten();
    match check {
        None => {
            let _ = write!(
                body,
                "<p class=\"ok\" id=\"validation\">{}</p>",
                t(l, "valid")
            );
        }
        Some(errs) => {
            let _ = write!(
                body,
                "<section id=\"validation\"><h2>{}</h2><ul class=\"errors\">",
                t(l, "errors")
            );
            for e in errs {
                let _ = write!(body, "<li>{}</li>", esc(&e.to_string()));
            }
            body.push_str("</ul></section>");
        }
    }
    if v.admin {
        let _ = write!(body, "<p><button type=\"button\" id=\"reload\">{}</button> <span id=\"reloaded\"></span></p>", t(l, "reload"));
    }
    let now = crate::runner::now_ms();
    for p in svc.registry.snapshot().values() {
        if !v.may_see(&p.contract) {
            continue;
        }
        let _ = write!(
            body,
            "<section class=\"contract\" id=\"contract-{id}\"><h2>{name} <small>{id}</small></h2><h3>{co}</h3><ol>",
            id = esc(&p.contract),
            name = esc(&p.name),
            co = t(l, "contacts"),
        );
        let reach = super::reach::reachability(p, now);
        for (c, r) in p.contacts.iter().zip(&reach.contacts) {
            let change = match r.change_ms {
                Some(ms) => format!(
                    " <small class=\"change\" data-change-ms=\"{ms}\">{what} {at}</small>",
                    what = if r.reachable {
                        t(l, "until")
                    } else {
                        t(l, "opens")
                    },
                    at = esc(&local_time(ms, c.tz)),
                ),
                None => String::new(),
            };
            let _ = write!(
                body,
                "<li class=\"{cls}\" data-contact=\"{n}\">{n} <span class=\"badge\">{st}</span> <small>{when} ({tz})</small>{change}</li>",
                cls = if r.reachable { "up" } else { "down" },
                n = esc(&c.name),
                st = if r.reachable { t(l, "reachable") } else { t(l, "unreachable") },
                when = esc(&if c.when.is_empty() { "24/7".to_string() } else { c.when.join(", ") }),
                tz = esc(&c.timezone),
            );
        }
        let now_list = if reach.reachable_now.is_empty() {
            t(l, "nobody").to_string()
        } else {
            reach.reachable_now.join(", ")
        };
        let next = match &reach.next_opening {
            Some((who, ms)) => {
                let tz = p
                    .contacts
                    .iter()
                    .find(|c| &c.name == who)
                    .map_or(chrono_tz::Tz::UTC, |c| c.tz);
                format!(
                    "<span data-next-ms=\"{ms}\">{} · {}</span>",
                    esc(who),
                    esc(&local_time(*ms, tz))
                )
            }
            None => "-".to_string(),
        };
        let _ = write!(
            body,
            "</ol><p class=\"reach\"><b>{rn}:</b> <span class=\"reachable-now\">{nl}</span> · <b>{nw}:</b> {next}</p>",
            rn = t(l, "reachable_now"),
            nl = esc(&now_list),
            nw = t(l, "next_window"),
        );
        let e = &p.escalation;
        let fd = crate::util::format_duration;
        let _ = write!(
            body,
            "<h3>{r}</h3><p>rounds {rounds} · ring {ring} · between calls {bc} · between rounds {br}</p><h3>{m}</h3><ul>",
            r = t(l, "rounds"),
            rounds = e.rounds,
            ring = fd(e.ring_timeout),
            bc = fd(e.between_calls),
            br = fd(e.between_rounds),
            m = t(l, "menu"),
        );
        for (k, a) in &p.menu.keys {
            let what = match a {
                crate::ivr::dialplan::KeyAction::Action(n) => format!("action {n}"),
                other => serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            };
            let _ = write!(
                body,
                "<li><kbd>{}</kbd> {}</li>",
                esc(&k.to_string()),
                esc(&what)
            );
        }
        let _ = write!(body, "</ul><h3>{}</h3><ul>", t(l, "actions"));
        for (n, a) in &p.actions {
            let _ = write!(
                body,
                "<li>{} <small>({}) {}</small></li>",
                esc(n),
                esc(&a.flow),
                esc(&a.description)
            );
        }
        let _ = write!(
            body,
            "</ul><h3>{}</h3><ul class=\"phrases\">",
            t(l, "phrases")
        );
        for name in super::audio::PHRASES {
            let _ = write!(
                body,
                "<li>{n} <audio controls preload=\"none\" data-phrase=\"{n}\" \
                 src=\"/v1/contracts/{id}/phrases/{n}\"></audio></li>",
                n = esc(name),
                id = esc(&p.contract),
            );
        }
        let _ = write!(
            body,
            "</ul><p><small>{}</small></p></section>",
            esc(&p.source.display().to_string())
        );
    }
    layout(&v, "contracts", t(l, "contracts"), &body)
}

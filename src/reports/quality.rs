//! The monthly quality report of one contract (or the whole centre) for
//! one month, as data both the printable page and the PDF render: the
//! month's figures, the target, and attainment month by month over the
//! year up to it. One builder, two renderings, so they cannot differ.

use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

use super::calendar::{Setup, Target};
use super::monthly::Month;
use super::{Filter, Summary};
use crate::console::i18n::{t, Lang};
use crate::store::{Store, StoreError};

/// What a monthly report is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `None`: the whole centre (within what the caller may see).
    pub contract: Option<String>,
    pub year: i32,
    pub month: u32,
}

/// A bad `month` or `contract`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("month must be YYYY-MM")]
pub struct BadMonth;

impl Request {
    pub fn parse(contract: Option<&str>, month: &str) -> Result<Request, BadMonth> {
        let (y, m) = month.split_once('-').ok_or(BadMonth)?;
        let (year, month) = (
            y.parse::<i32>().map_err(|_| BadMonth)?,
            m.parse::<u32>().map_err(|_| BadMonth)?,
        );
        if y.len() != 4
            || m.len() != 2
            || !(1..=12).contains(&month)
            || !(1970..=9999).contains(&year)
        {
            return Err(BadMonth);
        }
        Ok(Request {
            contract: contract.filter(|c| !c.is_empty()).map(str::to_string),
            year,
            month,
        })
    }

    pub fn month_label(&self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub request: Request,
    /// The time zone months are cut in (the contract's, else the one asked).
    pub tz_name: String,
    pub summary: Summary,
    pub target: Target,
    /// This contract's (or `*`'s) months, oldest first, the asked one last.
    pub months: Vec<Month>,
}

/// Local midnight of the first of a month, in epoch ms.
fn month_start(tz: Tz, year: i32, month: u32) -> i64 {
    let d = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    let t = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&t)
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| t.and_utc().timestamp_millis())
}

fn add_months(year: i32, month: u32, n: i32) -> (i32, u32) {
    let i = year * 12 + month as i32 - 1 + n;
    (i.div_euclid(12), i.rem_euclid(12) as u32 + 1)
}

/// Build the report. `contracts`: what the caller may see (`None`: all);
/// `tz` for the centre-wide report.
pub async fn build(
    store: &Store,
    setup: &Setup,
    req: &Request,
    contracts: Option<Vec<String>>,
    tz: Tz,
) -> Result<Report, StoreError> {
    let tz = match &req.contract {
        Some(c) => setup.calendar(c).tz,
        None => tz,
    };
    let from = month_start(tz, req.year, req.month);
    let (ny, nm) = add_months(req.year, req.month, 1);
    let to = month_start(tz, ny, nm);
    let (py, pm) = add_months(req.year, req.month, -11);
    let year_from = month_start(tz, py, pm);
    let offset_min = tz
        .offset_from_utc_datetime(
            &chrono::DateTime::from_timestamp_millis(from)
                .unwrap_or_default()
                .naive_utc(),
        )
        .fix()
        .local_minus_utc() as i64
        / 60;
    let contracts = match &req.contract {
        Some(c) => Some(vec![c.clone()]),
        None => contracts,
    };
    let month_filter = Filter {
        from_ms: from,
        to_ms: to,
        contracts: contracts.clone(),
        tz_offset_min: offset_min,
    };
    let summary = super::summary(store, &month_filter).await?;
    let key = req.contract.clone().unwrap_or_else(|| "*".into());
    let months: Vec<Month> = super::monthly::report(
        store,
        &Filter {
            from_ms: year_from,
            ..month_filter
        },
        setup,
    )
    .await?
    .into_iter()
    .filter(|m| m.contract == key)
    .collect();
    let target = match &req.contract {
        Some(c) => setup.target(c),
        None => setup.default_target,
    };
    Ok(Report {
        request: req.clone(),
        tz_name: tz.name().to_string(),
        summary,
        target,
        months,
    })
}

/// `12.3 min` / `45 s`.
pub fn duration(ms: i64) -> String {
    if ms >= 60_000 {
        format!("{:.1} min", ms as f64 / 60_000.0)
    } else {
        format!("{:.0} s", ms as f64 / 1000.0)
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The report's lines as a person reads them, in `l`: the title, the
/// figures (label, value), the target sentence, and the attainment table
/// (header, rows). The page and the PDF both print exactly these.
pub struct Text {
    pub title: String,
    pub subtitle: String,
    pub figures: Vec<(String, String)>,
    pub target: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub fn text(r: &Report, l: Lang) -> Text {
    let who = r
        .request
        .contract
        .clone()
        .unwrap_or_else(|| t(l, "whole_centre").to_string());
    let f = &r.summary.figures;
    let s = &r.summary;
    let sip = if s.sip_failures.is_empty() {
        "-".to_string()
    } else {
        s.sip_failures
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let figures: Vec<(String, String)> = vec![
        (t(l, "notif_count").into(), f.notifications.to_string()),
        (
            t(l, "acknowledged_count").into(),
            f.acknowledged.to_string(),
        ),
        (
            t(l, "answer_rate").into(),
            opt(f.answer_rate, |r| format!("{:.1}%", r * 100.0)),
        ),
        (t(l, "ack_median").into(), opt(f.ack_median_ms, duration)),
        (t(l, "ack_p90").into(), opt(f.ack_p90_ms, duration)),
        (t(l, "call_count").into(), f.calls.to_string()),
        (t(l, "unanswered").into(), f.unanswered_calls.to_string()),
        (t(l, "abandoned").into(), f.abandoned_calls.to_string()),
        (t(l, "machine").into(), f.machine_calls.to_string()),
        (
            t(l, "depth").into(),
            opt(f.escalation_depth_mean, |d| format!("{d:.2}")),
        ),
        (t(l, "sip_failures").into(), sip),
        (
            t(l, "actions_run").into(),
            format!("{} / {}", s.actions_run, s.actions_succeeded),
        ),
    ];
    let tg = &r.target;
    let mut target = match l {
        Lang::En => format!(
            "Target: acknowledged within {} min in {}% of notifications",
            tg.ack_within_ms as f64 / 60_000.0,
            tg.percent
        ),
        Lang::Ja => format!(
            "目標: 通知の {}% を {} 分以内に応答",
            tg.percent,
            tg.ack_within_ms as f64 / 60_000.0
        ),
    };
    if let Some(a) = tg.answer_rate_percent {
        target.push_str(&match l {
            Lang::En => format!("; answer rate {a}%"),
            Lang::Ja => format!("、応答率 {a}%"),
        });
    }
    let header = [
        "month",
        "notif_count",
        "within_target",
        "attainment",
        "target",
        "answer_rate",
        "result",
    ]
    .iter()
    .map(|k| t(l, k).to_string())
    .collect();
    let met = |b: bool| t(l, if b { "met" } else { "missed" }).to_string();
    let rows = r
        .months
        .iter()
        .map(|m| {
            let mut result = met(m.met);
            if let Some(a) = m.answer_rate_met {
                result = format!("{result} / {}", met(a));
            }
            vec![
                m.month.clone(),
                m.notifications.to_string(),
                m.within_target.to_string(),
                opt(m.attainment, |a| format!("{a:.1}%")),
                format!("{}%", m.target.percent),
                opt(m.answer_rate, |a| format!("{a:.1}%")),
                result,
            ]
        })
        .collect();
    Text {
        title: format!("{} — {}", t(l, "quality"), who),
        subtitle: format!("{} ({})", r.request.month_label(), r.tz_name),
        figures,
        target,
        header,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_read_strictly_and_counted_across_years() {
        assert_eq!(
            Request::parse(Some("acme"), "2026-11"),
            Ok(Request {
                contract: Some("acme".into()),
                year: 2026,
                month: 11
            })
        );
        assert_eq!(Request::parse(Some(""), "2026-01").unwrap().contract, None);
        for bad in [
            "2026-13", "2026-1", "26-01", "2026/01", "", "2026-00", "x-01",
        ] {
            assert_eq!(Request::parse(None, bad), Err(BadMonth), "{bad}");
        }
        assert_eq!(add_months(2026, 11, -11), (2025, 12));
        assert_eq!(add_months(2026, 12, 1), (2027, 1));
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        // 2026-11-01 00:00 JST = 2026-10-31 15:00 UTC.
        assert_eq!(month_start(tokyo, 2026, 11), 1_793_458_800_000);
    }
}

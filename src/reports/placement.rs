//! The `period` breakdown of the folded notifications, grouped in SQL.
//!
//! A notification's period (business / off / sleep, [`calendar::period`])
//! is a function of the minute of its creation in its contract's time
//! zone under the calendar loaded now, so it cannot be stored with the
//! facts (a reload changes it). Reading one row per notification and
//! placing each here cost about a second a year on SQLite; this groups
//! the year in SQL instead, by a key that cannot put two notifications
//! of different periods together:
//!
//! - the calendar class (contracts with equal calendars share one);
//! - the local weekday;
//! - the local minute of the day, cut at every window's start and end
//!   (between two such minutes no window's answer changes);
//! - on a holiday of any calendar, or the day after one (an overnight
//!   window asks about the day before), the local date itself.
//!
//! [`Window::contains`](crate::ivr::window::Window::contains) reads
//! exactly these: the weekday and holiday status of the local date and
//! of the day before, and the time of day against its bounds. The local
//! time is the minute's start plus the zone's offset at that minute,
//! which SQL reads from the zone's offsets over the rows' span (worked
//! out here, daylight-saving changes included). Each group's period is
//! then that of one of its minutes, with the very function the raw
//! reports use; its first and last minute are both asked, and should
//! they ever differ the caller reads every row instead.

use std::collections::BTreeSet;

use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;
use sqlx::{AnyConnection, Row};

use super::calendar::{self, Calendar, Period, Setup};
use super::facts::{add_counts, list_agg, parse_list};
use super::{Acc, Filter};
use crate::store::StoreError;

/// The key's parts, as decimal digits: class, then the date (holidays
/// only), then weekday and minute of the day.
const CLASS: i64 = 10_000_000_000_000;
const DATE: i64 = 100_000;
const WEEKDAY: i64 = 10_000;

/// Spans longer than this (of the rows in range) are read row by row:
/// the zone offsets are looked up hour by hour over the span.
const MAX_SPAN_MS: i64 = 30 * 366 * 86_400_000;

/// Sampling step of a zone's offset: no zone changes its offset twice
/// within an hour.
const STEP_MS: i64 = 3_600_000;

fn offset_ms(tz: Tz, at_ms: i64) -> i64 {
    chrono::DateTime::from_timestamp_millis(at_ms).map_or(0, |t| {
        i64::from(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        ) * 1000
    })
}

/// The zone's offsets over the minutes `lo..=hi`: `(from, offset)`, the
/// first from `lo`, each change at the first minute with the new offset.
fn offsets(tz: Tz, lo: i64, hi: i64) -> Vec<(i64, i64)> {
    let mut out = vec![(lo, offset_ms(tz, lo))];
    let mut at = lo;
    while at < hi {
        let cur = out.last().map_or(0, |o| o.1);
        let next = (at + STEP_MS).min(hi);
        if offset_ms(tz, next) == cur {
            at = next;
            continue;
        }
        // The first minute in (at, next] with another offset.
        let (mut a, mut b) = (at / 60_000, next / 60_000);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if offset_ms(tz, mid * 60_000) == cur {
                a = mid;
            } else {
                b = mid;
            }
        }
        out.push((b * 60_000, offset_ms(tz, b * 60_000)));
        at = b * 60_000;
    }
    out
}

/// SQL for the offset (ms) at the minute (start, ms) that `m` computes.
fn offset_sql(offs: &[(i64, i64)], m: &str) -> String {
    match offs {
        [] => "0".into(),
        [(_, o)] => o.to_string(),
        _ => {
            let mut s = String::from("CASE");
            for w in offs.windows(2) {
                s.push_str(&format!(" WHEN {m} < {} THEN {}", w[1].0, w[0].1));
            }
            let last = offs.last().map_or(0, |o| o.1);
            s.push_str(&format!(" ELSE {last} END"));
            s
        }
    }
}

/// Days since 1970-01-01.
fn day_number(d: NaiveDate) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    (d - epoch).num_days()
}

/// A statement and what it binds after `$1` (from) and `$2` (to).
struct Plan {
    sql: String,
    binds: Vec<String>,
    classes: Vec<Calendar>,
}

fn plan(conn: &AnyConnection, f: &Filter, setup: &Setup, lo: i64, hi: i64) -> Plan {
    let mut binds: Vec<String> = Vec::new();
    fn mark(v: &str, binds: &mut Vec<String>) -> String {
        binds.push(v.to_string());
        format!("${}", binds.len() + 2)
    }
    let minute = "(n.created_ms / 60000 * 60000)";
    // Class 0: the default calendar (any contract the setup does not
    // name); then one per other distinct calendar.
    let default = Calendar::default();
    let mut classes: Vec<Calendar> = vec![default.clone()];
    let mut members: Vec<Vec<&str>> = vec![Vec::new()];
    for (c, r) in &setup.contracts {
        match classes.iter().position(|k| *k == r.calendar) {
            Some(0) => {}
            Some(i) => members[i].push(c),
            None => {
                classes.push(r.calendar.clone());
                members.push(vec![c]);
            }
        }
    }
    let mut class_sql = String::from("CASE");
    for (i, ms) in members.iter().enumerate().skip(1) {
        let marks: Vec<String> = ms.iter().map(|c| mark(c, &mut binds)).collect();
        class_sql.push_str(&format!(
            " WHEN n.contract IN ({}) THEN {i}",
            marks.join(", ")
        ));
    }
    class_sql = if classes.len() == 1 {
        "0".into()
    } else {
        class_sql + " ELSE 0 END"
    };
    // The offset, by zone (the default calendar's zone for the rest).
    let mut zones: Vec<(Tz, Vec<&str>)> = Vec::new();
    for (i, cal) in classes.iter().enumerate().skip(1) {
        if cal.tz == default.tz {
            continue;
        }
        match zones.iter_mut().find(|z| z.0 == cal.tz) {
            Some(z) => z.1.extend(members[i].iter().copied()),
            None => zones.push((cal.tz, members[i].clone())),
        }
    }
    let mut off_sql = String::from("CASE");
    for (tz, cs) in &zones {
        let marks: Vec<String> = cs.iter().map(|c| mark(c, &mut binds)).collect();
        off_sql.push_str(&format!(
            " WHEN n.contract IN ({}) THEN {}",
            marks.join(", "),
            offset_sql(&offsets(*tz, lo, hi), minute)
        ));
    }
    let default_off = offset_sql(&offsets(default.tz, lo, hi), minute);
    off_sql = if zones.is_empty() {
        default_off
    } else {
        format!("{off_sql} ELSE {default_off} END")
    };
    // Window bounds and holidays of every class.
    let mut bounds: BTreeSet<u32> = BTreeSet::new();
    let mut days: BTreeSet<i64> = BTreeSet::new();
    for cal in &classes {
        for w in cal.business.iter().chain(&cal.sleep) {
            let (a, b) = w.bounds();
            bounds.extend([a, b]);
        }
        for h in &cal.holidays {
            let d = day_number(*h);
            days.extend([d, d + 1]);
        }
    }
    let mut seg = String::from("CASE");
    for b in bounds.iter().rev().filter(|b| **b > 0 && **b < 1440) {
        seg.push_str(&format!(" WHEN (l % 86400000) / 60000 >= {b} THEN {b}"));
    }
    seg = if seg == "CASE" {
        "0".into()
    } else {
        seg + " ELSE 0 END"
    };
    let date = if days.is_empty() {
        "0".to_string()
    } else {
        let list: Vec<String> = days.iter().map(i64::to_string).collect();
        format!(
            "CASE WHEN l / 86400000 IN ({}) THEN l / 86400000 ELSE 0 END",
            list.join(", ")
        )
    };
    let cond = match &f.contracts {
        Some(cs) if cs.is_empty() => " AND 1 = 0".to_string(),
        Some(cs) => {
            let marks: Vec<String> = cs.iter().map(|c| mark(c, &mut binds)).collect();
            format!(" AND n.contract IN ({})", marks.join(", "))
        }
        None => String::new(),
    };
    // The local time is worked out once per row in a subquery the
    // planners are told not to flatten (they would copy the offset's CASE
    // into each use).
    let keep = if conn.backend_name() == "SQLite" {
        "LIMIT -1 OFFSET 0"
    } else {
        "OFFSET 0"
    };
    let acks = list_agg(conn, "t.ack_ms");
    let sql = format!(
        "SELECT cl * {CLASS} + ({date}) * {DATE} + (l / 86400000) % 7 * {WEEKDAY} + ({seg}) AS k, \
         MIN(m) AS first_m, MAX(m) AS last_m, COUNT(*) AS total, CAST(SUM(t.acked) AS BIGINT) AS acked, \
         CAST(SUM(t.calls) AS BIGINT) AS calls, CAST(SUM(t.answered) AS BIGINT) AS answered, \
         CAST(SUM(t.abandoned) AS BIGINT) AS abandoned, CAST(SUM(t.machine) AS BIGINT) AS machine, \
         CAST(SUM(t.depth) AS BIGINT) AS dsum, COUNT(t.depth) AS dn, {acks} AS acks \
         FROM (SELECT {class_sql} AS cl, n.created_ms / 60000 * 60000 AS m, \
         n.created_ms / 60000 * 60000 + ({off_sql}) AS l, n.acked AS acked, n.ack_ms AS ack_ms, \
         n.depth AS depth, n.calls AS calls, n.answered AS answered, n.abandoned AS abandoned, \
         n.machine AS machine FROM report_notifications n \
         WHERE n.created_ms >= $1 AND n.created_ms < $2{cond} {keep}) t GROUP BY k"
    );
    Plan {
        sql,
        binds,
        classes,
    }
}

/// The folded notifications in `f`, by period under `setup`'s calendars;
/// `None` when they must be read row by row instead
/// ([`super::facts::period_rows`]): rows from before 1970-01-03 (the
/// SQL's day arithmetic wants positive local times), a span of over 30
/// years, or a group whose first and last minute fall in different
/// periods (a bug: this module's key would be wrong).
pub(crate) async fn period_groups(
    conn: &mut AnyConnection,
    f: &Filter,
    setup: &Setup,
) -> Result<Option<Vec<(Period, Acc)>>, StoreError> {
    let edge = |desc: &str| {
        format!(
            "SELECT created_ms FROM report_notifications WHERE created_ms >= $1 \
             AND created_ms < $2 ORDER BY created_ms {desc} LIMIT 1"
        )
    };
    let lo: Option<i64> = sqlx::query_scalar(&edge("ASC"))
        .bind(f.from_ms)
        .bind(f.to_ms)
        .fetch_optional(&mut *conn)
        .await?;
    let hi: Option<i64> = sqlx::query_scalar(&edge("DESC"))
        .bind(f.from_ms)
        .bind(f.to_ms)
        .fetch_optional(&mut *conn)
        .await?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Some(Vec::new()));
    };
    if lo < 2 * 86_400_000 || hi - lo > MAX_SPAN_MS {
        return Ok(None);
    }
    let p = plan(conn, f, setup, lo / 60_000 * 60_000, hi / 60_000 * 60_000);
    let mut q = sqlx::query(&p.sql).bind(f.from_ms).bind(f.to_ms);
    for b in &p.binds {
        q = q.bind(b);
    }
    let mut out = Vec::new();
    for r in q.fetch_all(&mut *conn).await? {
        let k: i64 = r.try_get("k")?;
        let Some(cal) = usize::try_from(k / CLASS)
            .ok()
            .and_then(|i| p.classes.get(i))
        else {
            return Ok(None);
        };
        let period = calendar::period(cal, r.try_get("first_m")?);
        if calendar::period(cal, r.try_get("last_m")?) != period {
            tracing::warn!(
                key = k,
                "report periods: a group spans two periods; reading rows"
            );
            return Ok(None);
        }
        let mut acc = Acc::default();
        add_counts(&mut acc, &r, r.try_get("total")?)?;
        parse_list(
            r.try_get::<Option<String>, _>("acks")?.as_deref(),
            &mut acc.acks,
        )?;
        out.push((period, acc));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_daylight_saving() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 01:00 UTC: CET (+1) -> CEST (+2); 2026-10-25 01:00
        // UTC: back. From 2026-03-01 to 2026-12-01.
        let (lo, hi) = (1_772_323_200_000, 1_796_083_200_000);
        assert_eq!(
            offsets(berlin, lo, hi),
            vec![
                (lo, 3_600_000),
                (1_774_746_000_000, 7_200_000),
                (1_792_890_000_000, 3_600_000)
            ]
        );
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(offsets(tokyo, lo, hi), vec![(lo, 32_400_000)]);
        assert_eq!(
            offset_sql(&offsets(berlin, lo, hi), "m"),
            "CASE WHEN m < 1774746000000 THEN 3600000 WHEN m < 1792890000000 THEN 7200000 ELSE 3600000 END"
        );
    }
}

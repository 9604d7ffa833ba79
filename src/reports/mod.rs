//! Call analytics over the stored notifications, attempts and action runs:
//! answer rate, time to acknowledge, unanswered and abandoned calls,
//! escalation depth, machine-answered calls, SIP failure codes and action
//! results, overall and by contract, contact, hour of day and day of week.
//!
//! Counts are `GROUP BY` queries (one statement set for SQLite and
//! PostgreSQL, keys cast to text); percentiles are computed here from the
//! acknowledged notifications only, so a year of history is read as a few
//! aggregates and one column of durations.
//!
//! Definitions (docs/api.md repeats them):
//! - answer rate: acknowledged notifications / notifications;
//! - time to acknowledge: when it was acknowledged minus the
//!   notification's creation. An operator's acknowledgement (console or
//!   `POST /v1/notifications/{id}/acknowledge`) counts from the moment
//!   the operator recorded it (`ack_request.at_ms`), not from when the
//!   escalation, busy hanging up a call, got to it; a key press counts
//!   from the escalation's `at_ms`; median = middle value (mean of the two
//!   middle ones for an even count), p90 = nearest rank (the
//!   `ceil(0.9 n)`-th smallest);
//! - unanswered call: never answered; abandoned: answered, no key pressed
//!   (`answered_no_input`); machine: AMD said machine;
//! - escalation depth: the attempt number that acknowledged (1 = the
//!   first call was taken); for an operator's acknowledgement, the last
//!   call placed before it (none placed: not counted);
//! - period: business / off / sleep hours of the notification's creation
//!   in its contract's time zone, as the dialplan's `[reports]` says
//!   ([`calendar`]).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use crate::store::{Store, StoreError};

pub mod api;
pub mod calendar;
pub mod csv;
pub mod facts;
pub mod monthly;
pub mod pdf;
pub(crate) mod pdf_api;
mod placement;
pub mod quality;

/// What a report covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Notifications created in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only these contracts (a filter, or a customer's binding); `None`:
    /// all.
    pub contracts: Option<Vec<String>>,
    /// Minutes east of UTC for hours and weekdays (540 for Japan).
    pub tz_offset_min: i64,
}

/// How a report is broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Contract,
    Contact,
    Hour,
    Weekday,
    /// Business / off / sleep hours, per contract ([`calendar::period`]).
    Period,
}

impl Dimension {
    pub fn parse(s: &str) -> Option<Dimension> {
        Some(match s {
            "contract" => Dimension::Contract,
            "contact" => Dimension::Contact,
            "hour" => Dimension::Hour,
            "weekday" => Dimension::Weekday,
            "period" => Dimension::Period,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Contract => "contract",
            Dimension::Contact => "contact",
            Dimension::Hour => "hour",
            Dimension::Weekday => "weekday",
            Dimension::Period => "period",
        }
    }

    /// The SQL of the group key (text), over `n` (notifications) and `a`
    /// (attempts); `$3` is the time-zone offset in ms.
    fn key_sql(self) -> &'static str {
        match self {
            Dimension::Contract => "n.contract",
            Dimension::Contact => "a.contact",
            Dimension::Hour => "CAST(((n.created_ms + $3) / 3600000) % 24 AS TEXT)",
            // 1970-01-01 was a Thursday: day 0 + 4 = 4 (Sunday = 0).
            Dimension::Weekday => "CAST((((n.created_ms + $3) / 86400000) + 4) % 7 AS TEXT)",
            // Contract and minute: the period is worked out here per group
            // (windows are whole minutes), with each contract's calendar.
            Dimension::Period => "n.contract || ':' || CAST(n.created_ms / 60000 AS TEXT)",
        }
    }
}

/// The figures of one group (or of everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub notifications: i64,
    pub acknowledged: i64,
    /// acknowledged / notifications (`None` without notifications).
    pub answer_rate: Option<f64>,
    pub ack_median_ms: Option<i64>,
    pub ack_p90_ms: Option<i64>,
    pub calls: i64,
    pub answered_calls: i64,
    pub unanswered_calls: i64,
    pub abandoned_calls: i64,
    pub machine_calls: i64,
    /// Mean attempt number of the acknowledging call.
    pub escalation_depth_mean: Option<f64>,
}

/// One group of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub from_ms: i64,
    pub to_ms: i64,
    #[serde(flatten)]
    pub figures: Figures,
    /// Acknowledged notifications by escalation depth (attempt number).
    pub escalation_depth: BTreeMap<i64, i64>,
    /// Failed calls by SIP status.
    pub sip_failures: BTreeMap<i64, i64>,
    /// Action runs by final state (`succeeded`, `failed`, ...).
    pub actions: BTreeMap<String, i64>,
    pub actions_run: i64,
    pub actions_succeeded: i64,
}

/// The `contract IN (...)` condition from `$first` on, and its values.
fn contract_cond(f: &Filter, col: &str, first: usize) -> Option<(String, Vec<String>)> {
    let cs = f.contracts.as_ref()?;
    if cs.is_empty() {
        return Some(("1 = 0".into(), Vec::new()));
    }
    let marks: Vec<String> = (0..cs.len()).map(|i| format!("${}", first + i)).collect();
    Some((format!("{col} IN ({})", marks.join(", ")), cs.clone()))
}

fn median(sorted: &[i64]) -> Option<i64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

fn nearest_rank(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[derive(Default)]
pub(crate) struct Acc {
    f: Figures,
    /// Every time to acknowledge of the group (the facts send them all,
    /// see [`facts::list_agg`]): the median and p90 are exact.
    acks: Vec<i64>,
    depth_sum: i64,
    depth_n: i64,
}

/// When a notification was acknowledged: an operator's recorded time
/// (`ack_request.at_ms`), else the escalation's final `at_ms`, else the
/// end of the acknowledging call.
pub fn ack_at(fin: Option<&str>, ack_request: Option<&str>, ended: Option<i64>) -> Option<i64> {
    let at = |s: Option<&str>| {
        s.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| v["at_ms"].as_i64())
    };
    at(ack_request).or_else(|| at(fin)).or(ended)
}

/// The attempt number an operator's acknowledgement answered for (the
/// last call placed), from the final state.
fn final_attempt(fin: Option<&str>) -> Option<i64> {
    fin.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v["attempt"].as_i64())
        .filter(|a| *a > 0)
}

impl Acc {
    fn merge(&mut self, o: Acc) {
        let (a, b) = (&mut self.f, o.f);
        a.notifications += b.notifications;
        a.acknowledged += b.acknowledged;
        a.calls += b.calls;
        a.answered_calls += b.answered_calls;
        a.unanswered_calls += b.unanswered_calls;
        a.abandoned_calls += b.abandoned_calls;
        a.machine_calls += b.machine_calls;
        self.acks.extend(o.acks);
        self.depth_sum += o.depth_sum;
        self.depth_n += o.depth_n;
    }

    fn finish(mut self) -> Figures {
        self.acks.sort_unstable();
        let f = &mut self.f;
        f.ack_median_ms = median(&self.acks);
        f.ack_p90_ms = nearest_rank(&self.acks, 0.9);
        if f.notifications > 0 {
            f.answer_rate = Some(f.acknowledged as f64 / f.notifications as f64);
        }
        if self.depth_n > 0 {
            f.escalation_depth_mean = Some(self.depth_sum as f64 / self.depth_n as f64);
        }
        self.f
    }
}

/// Run the three queries of a breakdown over the raw rows; `None` groups
/// everything; `unfolded`: only notifications without facts yet.
async fn collect(
    conn: &mut sqlx::AnyConnection,
    f: &Filter,
    dim: Option<Dimension>,
    unfolded: bool,
) -> Result<(BTreeMap<String, Acc>, BTreeMap<i64, i64>), StoreError> {
    let key = dim.map_or("''", |d| d.key_sql());
    let group = if dim.is_some() { " GROUP BY k" } else { "" };
    let (cond, vals) = contract_cond(f, "n.contract", 4)
        .map(|(c, v)| (format!(" AND {c}"), v))
        .unwrap_or_default();
    let off = f.tz_offset_min * 60_000;
    // `$3` is named in every statement so PostgreSQL knows its type.
    let range = if unfolded {
        "n.report_folded = 0 AND n.created_ms >= $1 AND n.created_ms < $2 AND CAST($3 AS BIGINT) IS NOT NULL"
    } else {
        "n.created_ms >= $1 AND n.created_ms < $2 AND CAST($3 AS BIGINT) IS NOT NULL"
    };
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();

    // Notifications (by contact: those the contact was called for).
    let sql = if dim == Some(Dimension::Contact) {
        format!(
            "SELECT {key} AS k, COUNT(DISTINCT n.id) AS total, \
             CAST(SUM(CASE WHEN a.outcome LIKE '%\"outcome\":\"acked\"%' THEN 1 ELSE 0 END) AS BIGINT) AS acked \
             FROM attempts a JOIN notifications n ON n.id = a.notification_id WHERE {range}{cond}{group}"
        )
    } else {
        format!(
            "SELECT {key} AS k, COUNT(*) AS total, \
             CAST(SUM(CASE WHEN n.state = 'acked' THEN 1 ELSE 0 END) AS BIGINT) AS acked \
             FROM notifications n WHERE {range}{cond}{group}"
        )
    };
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms).bind(off);
    for v in &vals {
        q = q.bind(v);
    }
    for r in q.fetch_all(&mut *conn).await? {
        let g = groups.entry(r.try_get("k")?).or_default();
        g.f.notifications = r.try_get("total")?;
        g.f.acknowledged = r.try_get::<Option<i64>, _>("acked")?.unwrap_or(0);
    }

    // Calls.
    let sql = format!(
        "SELECT {key} AS k, COUNT(*) AS total, \
         CAST(SUM(CASE WHEN a.answered_ms IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS answered, \
         CAST(SUM(CASE WHEN a.outcome LIKE '%\"outcome\":\"answered_no_input\"%' THEN 1 ELSE 0 END) AS BIGINT) AS abandoned, \
         CAST(SUM(CASE WHEN a.outcome LIKE '%\"outcome\":\"machine\"%' THEN 1 ELSE 0 END) AS BIGINT) AS machine \
         FROM attempts a JOIN notifications n ON n.id = a.notification_id WHERE {range}{cond}{group}"
    );
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms).bind(off);
    for v in &vals {
        q = q.bind(v);
    }
    for r in q.fetch_all(&mut *conn).await? {
        let g = groups.entry(r.try_get("k")?).or_default();
        g.f.calls = r.try_get("total")?;
        g.f.answered_calls = r.try_get::<Option<i64>, _>("answered")?.unwrap_or(0);
        g.f.unanswered_calls = g.f.calls - g.f.answered_calls;
        g.f.abandoned_calls = r.try_get::<Option<i64>, _>("abandoned")?.unwrap_or(0);
        g.f.machine_calls = r.try_get::<Option<i64>, _>("machine")?.unwrap_or(0);
    }

    // Acknowledgements: one row per acknowledged notification, with the
    // call that took it when a key press did (an operator's has none; by
    // contact, those have no contact and are left out).
    let sql = format!(
        "SELECT {key} AS k, n.created_ms AS created, n.final AS fin, n.ack_request AS ackr, \
         a.attempt AS attempt, a.ended_ms AS ended FROM notifications n LEFT JOIN attempts a \
         ON a.notification_id = n.id AND a.outcome LIKE '%\"outcome\":\"acked\"%' \
         WHERE n.state = 'acked' AND {range}{cond}"
    );
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms).bind(off);
    for v in &vals {
        q = q.bind(v);
    }
    let mut depth: BTreeMap<i64, i64> = BTreeMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        let Some(k) = r.try_get::<Option<String>, _>("k")? else {
            continue;
        };
        let created: i64 = r.try_get("created")?;
        let fin: Option<String> = r.try_get("fin")?;
        let ackr: Option<String> = r.try_get("ackr")?;
        let ended: Option<i64> = r.try_get("ended")?;
        let attempt: Option<i64> = r.try_get("attempt")?;
        let attempt = attempt.or_else(|| final_attempt(fin.as_deref()));
        let g = groups.entry(k).or_default();
        if let Some(at) = ack_at(fin.as_deref(), ackr.as_deref(), ended) {
            g.acks.push((at - created).max(0));
        }
        if let Some(attempt) = attempt {
            *depth.entry(attempt).or_default() += 1;
            g.depth_sum += attempt;
            g.depth_n += 1;
        }
    }
    Ok((groups, depth))
}

/// Every figure over the filter (from the facts, see [`facts`]).
pub async fn summary(store: &Store, f: &Filter) -> Result<Summary, StoreError> {
    facts::fold_up_to(store, facts::REPORT_BATCHES).await?;
    let mut tx = facts::snapshot(store).await?;
    let s = summary_in(&mut tx, f, true).await?;
    tx.commit().await?;
    Ok(s)
}

/// As [`summary`], from the raw rows only, as before the facts (the
/// reference the facts are tested against).
pub async fn summary_raw(store: &Store, f: &Filter) -> Result<Summary, StoreError> {
    let mut conn = store.pool().acquire().await?;
    summary_in(&mut conn, f, false).await
}

/// The raw groups of what is not folded and, with `use_facts`, the
/// facts of the rest.
async fn groups_of(
    conn: &mut sqlx::AnyConnection,
    f: &Filter,
    dim: Option<Dimension>,
    use_facts: bool,
) -> Result<(BTreeMap<String, Acc>, BTreeMap<i64, i64>), StoreError> {
    let (mut groups, mut depth) = collect(&mut *conn, f, dim, use_facts).await?;
    if use_facts {
        facts::collect(&mut *conn, f, dim, &mut groups, &mut depth).await?;
    }
    Ok((groups, depth))
}

async fn summary_in(
    conn: &mut sqlx::AnyConnection,
    f: &Filter,
    use_facts: bool,
) -> Result<Summary, StoreError> {
    let (mut groups, escalation_depth) = groups_of(&mut *conn, f, None, use_facts).await?;
    let figures = groups.remove("").map(Acc::finish).unwrap_or_default();
    let unfolded = if use_facts {
        " AND n.report_folded = 0"
    } else {
        ""
    };
    let (cond, vals) = contract_cond(f, "n.contract", 3)
        .map(|(c, v)| (format!(" AND {c}"), v))
        .unwrap_or_default();
    let sql = format!(
        "SELECT a.sip_code AS code, COUNT(*) AS total FROM attempts a JOIN notifications n \
         ON n.id = a.notification_id WHERE n.created_ms >= $1 AND n.created_ms < $2 \
         AND a.sip_code IS NOT NULL AND a.sip_code >= 300{unfolded}{cond} GROUP BY a.sip_code"
    );
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms);
    for v in &vals {
        q = q.bind(v);
    }
    let mut sip_failures = BTreeMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        sip_failures.insert(r.try_get("code")?, r.try_get("total")?);
    }
    if use_facts {
        facts::sip_failures(&mut *conn, f, &mut sip_failures).await?;
    }
    let (cond, vals) = contract_cond(f, "contract", 3)
        .map(|(c, v)| (format!(" AND {c}"), v))
        .unwrap_or_default();
    let sql = format!(
        "SELECT state, COUNT(*) AS total FROM action_runs WHERE started_ms >= $1 \
         AND started_ms < $2{cond} GROUP BY state"
    );
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms);
    for v in &vals {
        q = q.bind(v);
    }
    let mut actions = BTreeMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        actions.insert(r.try_get::<String, _>("state")?, r.try_get("total")?);
    }
    let actions_run = actions.values().sum();
    let actions_succeeded = ["succeeded", "not_needed"]
        .iter()
        .filter_map(|s| actions.get(*s))
        .sum();
    Ok(Summary {
        from_ms: f.from_ms,
        to_ms: f.to_ms,
        figures,
        escalation_depth,
        sip_failures,
        actions,
        actions_run,
        actions_succeeded,
    })
}

/// The figures by `dim`, groups in key order (hours and weekdays
/// numerically, every hour 0-23 / weekday 0-6 present), with the
/// default calendar for every contract (see [`breakdown_in`]).
pub async fn breakdown(
    store: &Store,
    f: &Filter,
    dim: Dimension,
) -> Result<Vec<Group>, StoreError> {
    breakdown_in(store, f, dim, &calendar::Setup::default()).await
}

/// As [`breakdown`], reading each contract's hours from `setup` for the
/// `period` dimension (business, off, sleep: always all three).
pub async fn breakdown_in(
    store: &Store,
    f: &Filter,
    dim: Dimension,
    setup: &calendar::Setup,
) -> Result<Vec<Group>, StoreError> {
    facts::fold_up_to(store, facts::REPORT_BATCHES).await?;
    let mut tx = facts::snapshot(store).await?;
    let g = breakdown_of(&mut tx, f, dim, setup, true).await?;
    tx.commit().await?;
    Ok(g)
}

/// As [`breakdown_in`], from the raw rows only (the reference).
pub async fn breakdown_raw(
    store: &Store,
    f: &Filter,
    dim: Dimension,
    setup: &calendar::Setup,
) -> Result<Vec<Group>, StoreError> {
    let mut conn = store.pool().acquire().await?;
    breakdown_of(&mut conn, f, dim, setup, false).await
}

async fn breakdown_of(
    conn: &mut sqlx::AnyConnection,
    f: &Filter,
    dim: Dimension,
    setup: &calendar::Setup,
    use_facts: bool,
) -> Result<Vec<Group>, StoreError> {
    if dim == Dimension::Period {
        let (groups, _) = collect(&mut *conn, f, Some(dim), use_facts).await?;
        let mut by: BTreeMap<calendar::Period, Acc> = BTreeMap::new();
        let mut cals: BTreeMap<String, calendar::Calendar> = BTreeMap::new();
        for (k, acc) in groups {
            // "contract:minute"; a contract id has no ':' (dialplan rule),
            // but split at the last one all the same.
            let Some((contract, minute)) = k.rsplit_once(':') else {
                continue;
            };
            let Ok(minute) = minute.parse::<i64>() else {
                continue;
            };
            let cal = cals
                .entry(contract.to_string())
                .or_insert_with(|| setup.calendar(contract));
            let p = calendar::period(cal, minute.saturating_mul(60_000));
            by.entry(p).or_default().merge(acc);
        }
        if use_facts {
            match placement::period_groups(&mut *conn, f, setup).await? {
                Some(groups) => {
                    for (p, acc) in groups {
                        by.entry(p).or_default().merge(acc);
                    }
                }
                None => {
                    for r in facts::period_rows(&mut *conn, f).await? {
                        let cal = cals
                            .entry(r.contract.clone())
                            .or_insert_with(|| setup.calendar(&r.contract));
                        let p = calendar::period(cal, r.minute.saturating_mul(60_000));
                        by.entry(p).or_default().merge(r.acc);
                    }
                }
            }
        }
        return Ok(calendar::Period::ALL
            .iter()
            .map(|p| Group {
                key: p.name().to_string(),
                figures: by.remove(p).map(Acc::finish).unwrap_or_default(),
            })
            .collect());
    }
    let (mut groups, _) = groups_of(&mut *conn, f, Some(dim), use_facts).await?;
    let fixed = match dim {
        Dimension::Hour => Some(24),
        Dimension::Weekday => Some(7),
        _ => None,
    };
    Ok(match fixed {
        Some(n) => (0..n)
            .map(|i: i64| Group {
                key: i.to_string(),
                figures: groups
                    .remove(&i.to_string())
                    .map(Acc::finish)
                    .unwrap_or_default(),
            })
            .collect(),
        None => groups
            .into_iter()
            .map(|(key, a)| Group {
                key,
                figures: a.finish(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_by_hand() {
        let v = [60_000, 120_000, 180_000, 240_000, 300_000, 600_000, 900_000];
        assert_eq!(median(&v), Some(240_000));
        // ceil(0.9 * 7) = 7th.
        assert_eq!(nearest_rank(&v, 0.9), Some(900_000));
        assert_eq!(median(&[1, 3]), Some(2));
        assert_eq!(median(&[]), None);
        assert_eq!(nearest_rank(&[5], 0.9), Some(5));
    }
}

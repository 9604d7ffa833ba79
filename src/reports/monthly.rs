//! The monthly quality report: per contract and month, the share of
//! notifications acknowledged within the contract's target time, against
//! its target share ("acknowledged within 10 minutes: 95 %"), and the
//! answer rate against its answer-rate target when one is set. Each
//! contract is measured against its own `[reports]` targets; the
//! centre-wide line (`*`) against the centre's default.

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone};
use serde::Serialize;
use sqlx::Row;

use super::calendar::Setup;
pub use super::calendar::Target;
use super::Filter;
use crate::store::{Store, StoreError};

/// One contract's month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Month {
    /// `YYYY-MM` in the filter's time zone.
    pub month: String,
    pub contract: String,
    pub notifications: i64,
    pub acknowledged: i64,
    pub within_target: i64,
    /// within_target / notifications, percent.
    pub attainment: Option<f64>,
    pub met: bool,
    /// acknowledged / notifications, percent.
    pub answer_rate: Option<f64>,
    /// Against `target.answer_rate_percent`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_rate_met: Option<bool>,
    /// The target this line is measured against.
    pub target: Target,
}

/// (month, contract) -> (notifications, acknowledged, within)
type Counts = BTreeMap<(String, String), (i64, i64, i64)>;

/// Months in order, per contract (and `*` for the whole centre), each
/// against `setup`'s target for it (from the facts, see
/// [`super::facts`]).
pub async fn report(store: &Store, f: &Filter, setup: &Setup) -> Result<Vec<Month>, StoreError> {
    super::facts::fold_up_to(store, super::facts::REPORT_BATCHES).await?;
    let mut tx = super::facts::snapshot(store).await?;
    let r = report_in(&mut tx, f, setup, true).await?;
    tx.commit().await?;
    Ok(r)
}

/// As [`report`], from the raw rows only (the reference).
pub async fn report_raw(
    store: &Store,
    f: &Filter,
    setup: &Setup,
) -> Result<Vec<Month>, StoreError> {
    let mut conn = store.pool().acquire().await?;
    report_in(&mut conn, f, setup, false).await
}

fn fixed_tz(f: &Filter) -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt((f.tz_offset_min * 60).clamp(-86_399, 86_399) as i32)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"))
}

/// The facts' counts by contract and local day (the contract's target
/// and the centre's applied in SQL), added to `acc` by month.
async fn from_facts(
    conn: &mut sqlx::AnyConnection,
    f: &Filter,
    targets: &mut BTreeMap<String, Target>,
    setup: &Setup,
    acc: &mut Counts,
) -> Result<(), StoreError> {
    let off = fixed_tz(f).local_minus_utc() as i64 * 1000;
    // Targets are whole milliseconds (i64): written as literals; contract
    // ids are bound.
    let mut case = String::from("CASE");
    let mut names: Vec<&String> = Vec::new();
    for (i, c) in setup.contracts.keys().enumerate() {
        case.push_str(&format!(
            " WHEN n.contract = ${} THEN {}",
            i + 3,
            setup.target(c).ack_within_ms
        ));
        names.push(c);
    }
    let default = setup.default_target.ack_within_ms;
    case.push_str(&format!(" ELSE {default} END"));
    if names.is_empty() {
        case = default.to_string();
    }
    let mut cond = String::new();
    if let Some(cs) = &f.contracts {
        let first = names.len() + 3;
        let marks: Vec<String> = (0..cs.len()).map(|i| format!("${}", first + i)).collect();
        cond = format!(" AND n.contract IN ({})", marks.join(", "));
    }
    // Day numbers in the filter's offset (created_ms is after 1970).
    let sql = format!(
        "SELECT n.contract AS contract, (n.created_ms + {off}) / 86400000 AS d, COUNT(*) AS total, \
         CAST(SUM(n.acked) AS BIGINT) AS acked, \
         CAST(SUM(CASE WHEN n.ack_recorded_ms <= ({case}) THEN 1 ELSE 0 END) AS BIGINT) AS within, \
         CAST(SUM(CASE WHEN n.ack_recorded_ms <= {default} THEN 1 ELSE 0 END) AS BIGINT) AS within_all \
         FROM report_notifications n WHERE n.created_ms >= $1 AND n.created_ms < $2{cond} \
         GROUP BY n.contract, (n.created_ms + {off}) / 86400000"
    );
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms);
    for c in names {
        q = q.bind(c);
    }
    for c in f.contracts.iter().flatten() {
        q = q.bind(c);
    }
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    for r in q.fetch_all(&mut *conn).await? {
        let contract: String = r.try_get("contract")?;
        let d: i64 = r.try_get("d")?;
        let Some(day) = chrono::TimeDelta::try_days(d).and_then(|d| epoch.checked_add_signed(d))
        else {
            continue;
        };
        let month = format!("{:04}-{:02}", day.year(), day.month());
        let total: i64 = r.try_get("total")?;
        let get = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.unwrap_or(0));
        let (acked, within, within_all) = (get("acked")?, get("within")?, get("within_all")?);
        targets
            .entry(contract.clone())
            .or_insert_with(|| setup.target(&contract));
        for (c, w) in [(contract, within), ("*".to_string(), within_all)] {
            let e = acc.entry((month.clone(), c)).or_default();
            e.0 += total;
            e.1 += acked;
            e.2 += w;
        }
    }
    Ok(())
}

async fn report_in(
    conn: &mut sqlx::AnyConnection,
    f: &Filter,
    setup: &Setup,
    use_facts: bool,
) -> Result<Vec<Month>, StoreError> {
    let mut sql = String::from(
        "SELECT contract, created_ms, state, final, ack_request FROM notifications \
         WHERE created_ms >= $1 AND created_ms < $2",
    );
    if use_facts {
        sql.push_str(" AND report_folded = 0");
    }
    if let Some(cs) = &f.contracts {
        if cs.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..cs.len()).map(|i| format!("${}", i + 3)).collect();
        sql.push_str(&format!(" AND contract IN ({})", marks.join(", ")));
    }
    let mut q = sqlx::query(&sql).bind(f.from_ms).bind(f.to_ms);
    for c in f.contracts.iter().flatten() {
        q = q.bind(c);
    }
    let tz = fixed_tz(f);
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    targets.insert("*".into(), setup.default_target);
    let mut acc: Counts = BTreeMap::new();
    if use_facts {
        from_facts(&mut *conn, f, &mut targets, setup, &mut acc).await?;
    }
    for r in q.fetch_all(&mut *conn).await? {
        let contract: String = r.try_get("contract")?;
        let created: i64 = r.try_get("created_ms")?;
        let state: String = r.try_get("state")?;
        let fin: Option<String> = r.try_get("final")?;
        let ackr: Option<String> = r.try_get("ack_request")?;
        let Some(t) = tz.timestamp_millis_opt(created).single() else {
            continue;
        };
        let month = format!("{:04}-{:02}", t.year(), t.month());
        let acked = state == "acked";
        let at = acked
            .then(|| super::ack_at(fin.as_deref(), ackr.as_deref(), None))
            .flatten();
        for c in [contract.as_str(), "*"] {
            let target = *targets
                .entry(c.to_string())
                .or_insert_with(|| setup.target(c));
            let within = at.is_some_and(|at| at - created <= target.ack_within_ms);
            let e = acc.entry((month.clone(), c.to_string())).or_default();
            e.0 += 1;
            e.1 += i64::from(acked);
            e.2 += i64::from(within);
        }
    }
    Ok(acc
        .into_iter()
        .map(|((month, contract), (n, a, w))| {
            let target = targets.get(&contract).copied().unwrap_or_default();
            let attainment = (n > 0).then(|| w as f64 * 100.0 / n as f64);
            let answer_rate = (n > 0).then(|| a as f64 * 100.0 / n as f64);
            Month {
                month,
                contract,
                notifications: n,
                acknowledged: a,
                within_target: w,
                attainment,
                met: attainment.is_some_and(|p| p + 1e-9 >= target.percent),
                answer_rate,
                answer_rate_met: target
                    .answer_rate_percent
                    .map(|t| answer_rate.is_some_and(|r| r + 1e-9 >= t)),
                target,
            }
        })
        .collect())
}

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

/// Months in order, per contract (and `*` for the whole centre), each
/// against `setup`'s target for it.
pub async fn report(store: &Store, f: &Filter, setup: &Setup) -> Result<Vec<Month>, StoreError> {
    let mut sql = String::from(
        "SELECT contract, created_ms, state, final, ack_request FROM notifications \
         WHERE created_ms >= $1 AND created_ms < $2",
    );
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
    let tz = chrono::FixedOffset::east_opt((f.tz_offset_min * 60).clamp(-86_399, 86_399) as i32)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    targets.insert("*".into(), setup.default_target);
    // (month, contract) -> (notifications, acknowledged, within)
    let mut acc: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for r in q.fetch_all(store.pool()).await? {
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

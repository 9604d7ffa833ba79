//! Report facts: each ended notification's figures worked out once
//! (migration 0017), so a year of reports reads one narrow row per
//! notification (and per contact called, and per SIP failure code)
//! instead of joining every call and matching outcome JSON with `LIKE`.
//!
//! Why rows per notification and not sums per hour or day: the median
//! and p90 of the time to acknowledge need every acknowledged
//! notification's time, and the `period` breakdown places each
//! notification by the minute of its creation in its contract's time
//! zone under the calendar loaded *now* (a dialplan reload changes it),
//! and hours and weekdays are asked in any offset (`tz`, minutes). Rows
//! keyed by the exact `created_ms` answer all of these exactly, in any
//! zone, with SQL doing the counting; a year of a centre (about 100,000
//! notifications) is a scan of one small table.
//!
//! Folding ([`fold`]): a notification is folded once it has ended and
//! all its calls have ended (nothing about it changes after that, except
//! ending it again, which sets `report_folded` back to 0). It runs before
//! each report, so the facts are kept up to date as notifications end
//! without touching the call path, and the first reports after the
//! migration fold the history (the backfill), in batches: a report folds
//! at most [`REPORT_BATCHES`] of them, so it answers in bounded time, and
//! leaves the rest to the next; `callout serve` also folds every 30 s in
//! the background (`serve::fold_report_facts`); [`fold`] folds all. Reports add the raw figures of
//! notifications not folded yet (still running, a call not ended, or not
//! reached by the backfill yet) to the facts, reading both in one
//! snapshot so a fold in between cannot count one twice or not at all.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use super::{ack_at, final_attempt, Acc, Dimension, Filter};
use crate::store::{Store, StoreError};

const BATCH: i64 = 500;

/// The background fold takes a notification once it has not changed
/// for this long.
pub const SETTLE_MS: i64 = 60_000;

fn is_outcome(outcome: Option<&str>, name: &str) -> bool {
    // As the raw queries' `LIKE '%"outcome":"NAME"%'`.
    outcome.is_some_and(|o| o.contains(&format!("\"outcome\":\"{name}\"")))
}

#[derive(Default)]
struct Counts {
    calls: i64,
    answered: i64,
    abandoned: i64,
    machine: i64,
    acked_calls: i64,
}

struct AttemptFact {
    attempt: i64,
    contact: String,
    answered: bool,
    ended: Option<i64>,
    outcome: Option<String>,
    sip: Option<i64>,
}

/// Fold every ended, settled notification not folded yet; how many.
pub async fn fold(store: &Store) -> Result<usize, StoreError> {
    fold_up_to(store, usize::MAX).await
}

/// What a report folds before it reads: at most this many batches
/// (10,000 notifications), so a report after a large import answers in
/// bounded time; what is left is read raw (exact, slower) and folded by
/// the next reports.
pub(crate) const REPORT_BATCHES: usize = 20;

/// As [`fold`], at most `batches` batches of 500.
pub async fn fold_up_to(store: &Store, batches: usize) -> Result<usize, StoreError> {
    fold_settled(store, batches, 0).await
}

/// As [`fold_up_to`], only notifications unchanged for `settle_ms`: the
/// background fold leaves alone what just ended, so a late event of a
/// notification that just ended (its message's synthesis report) does
/// not meet a fold's row lock. Reports fold everything ended.
pub async fn fold_settled(
    store: &Store,
    batches: usize,
    settle_ms: i64,
) -> Result<usize, StoreError> {
    // A notification ended again after it was folded has report_folded
    // = 0 and old facts: drop them, so it is read raw until folded again
    // (not twice). Cheap: the unfolded rows are few (a partial index),
    // and each is looked up by key.
    for table in ["report_notifications", "report_contacts", "report_sip"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE notification_id IN \
             (SELECT id FROM notifications WHERE report_folded = 0)"
        ))
        .execute(store.pool())
        .await?;
    }
    let mut total = 0;
    for _ in 0..batches {
        let n = fold_batch(store, settle_ms).await?;
        total += n;
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(total)
}

async fn fold_batch(store: &Store, settle_ms: i64) -> Result<usize, StoreError> {
    let mut tx = store.pool().begin().await?;
    // PostgreSQL: lock the rows, so a notification ended again meanwhile
    // waits for this fold (and then sets report_folded back to 0), and
    // another node's fold takes other rows.
    // NO KEY UPDATE: the foreign-key checks of events and attempts
    // inserted meanwhile (FOR KEY SHARE) do not wait for a fold.
    let lock = if store.is_sqlite() {
        ""
    } else {
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(&mut *tx)
            .await?;
        " FOR NO KEY UPDATE OF n SKIP LOCKED"
    };
    let settled = if settle_ms > 0 {
        format!(
            " AND n.updated_ms <= {}",
            crate::runner::now_ms() - settle_ms
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT n.id AS id, n.contract AS contract, n.created_ms AS created, n.state AS state, \
         n.final AS fin, n.ack_request AS ackr FROM notifications n WHERE n.report_folded = 0 \
         AND n.state IN ('acked', 'action_requested', 'action_taken', 'exhausted', 'cancelled', 'failed') \
         AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.notification_id = n.id AND a.ended_ms IS NULL) \
        {settled} ORDER BY n.created_ms LIMIT {BATCH}{lock}"
    );
    let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    struct N {
        id: String,
        contract: String,
        created: i64,
        acked: bool,
        fin: Option<String>,
        ackr: Option<String>,
    }
    let mut ns = Vec::with_capacity(rows.len());
    for r in rows {
        ns.push(N {
            id: r.try_get("id")?,
            contract: r.try_get("contract")?,
            created: r.try_get("created")?,
            acked: r.try_get::<String, _>("state")? == "acked",
            fin: r.try_get("fin")?,
            ackr: r.try_get("ackr")?,
        });
    }
    let marks = |k: usize| {
        (1..=k)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let in_ids = marks(ns.len());
    let sql = format!(
        "SELECT notification_id AS nid, attempt, contact, answered_ms, ended_ms, outcome, sip_code \
         FROM attempts WHERE notification_id IN ({in_ids}) ORDER BY notification_id, attempt"
    );
    let mut q = sqlx::query(&sql);
    for n in &ns {
        q = q.bind(&n.id);
    }
    let mut attempts: BTreeMap<String, Vec<AttemptFact>> = BTreeMap::new();
    for r in q.fetch_all(&mut *tx).await? {
        attempts
            .entry(r.try_get("nid")?)
            .or_default()
            .push(AttemptFact {
                attempt: r.try_get("attempt")?,
                contact: r.try_get("contact")?,
                answered: r.try_get::<Option<i64>, _>("answered_ms")?.is_some(),
                ended: r.try_get("ended_ms")?,
                outcome: r.try_get("outcome")?,
                sip: r.try_get("sip_code")?,
            });
    }
    for table in ["report_notifications", "report_contacts", "report_sip"] {
        let sql = format!("DELETE FROM {table} WHERE notification_id IN ({in_ids})");
        let mut q = sqlx::query(&sql);
        for n in &ns {
            q = q.bind(&n.id);
        }
        q.execute(&mut *tx).await?;
    }
    // Numbers are written as literals (they are i64), text bound.
    let lit = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    let mut n_rows: Vec<(String, String, String)> = Vec::new(); // id, contract, rest
    let mut c_rows: Vec<(String, String, String, String)> = Vec::new(); // id, contact, contract, rest
    let mut s_rows: Vec<(String, String, String)> = Vec::new();
    let none = Vec::new();
    for n in &ns {
        let atts = attempts.get(&n.id).unwrap_or(&none);
        // The acknowledging call: the first whose outcome says so (an
        // acknowledgement ends the escalation, so there is one).
        let acking = atts
            .iter()
            .find(|a| is_outcome(a.outcome.as_deref(), "acked"));
        let (ack_ms, depth, recorded) = if n.acked {
            let at = ack_at(
                n.fin.as_deref(),
                n.ackr.as_deref(),
                acking.and_then(|a| a.ended),
            );
            let depth = acking
                .map(|a| a.attempt)
                .or_else(|| final_attempt(n.fin.as_deref()));
            let rec = ack_at(n.fin.as_deref(), n.ackr.as_deref(), None);
            (
                at.map(|at| (at - n.created).max(0)),
                depth,
                rec.map(|at| at - n.created),
            )
        } else {
            (None, None, None)
        };
        let mut all = Counts::default();
        let mut by_contact: BTreeMap<&str, Counts> = BTreeMap::new();
        let mut sip: BTreeMap<i64, i64> = BTreeMap::new();
        for a in atts {
            let o = a.outcome.as_deref();
            for c in [&mut all, by_contact.entry(&a.contact).or_default()] {
                c.calls += 1;
                c.answered += i64::from(a.answered);
                c.abandoned += i64::from(is_outcome(o, "answered_no_input"));
                c.machine += i64::from(is_outcome(o, "machine"));
                c.acked_calls += i64::from(is_outcome(o, "acked"));
            }
            if let Some(code) = a.sip.filter(|c| *c >= 300) {
                *sip.entry(code).or_default() += 1;
            }
        }
        n_rows.push((
            n.id.clone(),
            n.contract.clone(),
            format!(
                "{}, {}, {}, {}, {}, {}, {}, {}, {}",
                n.created,
                i64::from(n.acked),
                lit(ack_ms),
                lit(recorded),
                lit(depth),
                all.calls,
                all.answered,
                all.abandoned,
                all.machine
            ),
        ));
        for (contact, c) in by_contact {
            let mine = n.acked && acking.is_some_and(|a| a.contact == contact);
            c_rows.push((
                n.id.clone(),
                contact.to_string(),
                n.contract.clone(),
                format!(
                    "{}, {}, {}, {}, {}, {}, {}, {}",
                    n.created,
                    c.acked_calls,
                    lit(if mine { ack_ms } else { None }),
                    lit(if mine { depth } else { None }),
                    c.calls,
                    c.answered,
                    c.abandoned,
                    c.machine
                ),
            ));
        }
        for (code, calls) in sip {
            s_rows.push((
                n.id.clone(),
                n.contract.clone(),
                format!("{code}, {}, {calls}", n.created),
            ));
        }
    }
    for chunk in n_rows.chunks(200) {
        let values: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| format!("(${}, ${}, {})", 2 * i + 1, 2 * i + 2, r.2))
            .collect();
        let sql = format!(
            "INSERT INTO report_notifications (notification_id, contract, created_ms, acked, ack_ms, \
             ack_recorded_ms, depth, calls, answered, abandoned, machine) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q.bind(&r.0).bind(&r.1);
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in c_rows.chunks(200) {
        let values: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| format!("(${}, ${}, ${}, {})", 3 * i + 1, 3 * i + 2, 3 * i + 3, r.3))
            .collect();
        let sql = format!(
            "INSERT INTO report_contacts (notification_id, contact, contract, created_ms, acked_calls, \
             ack_ms, depth, calls, answered, abandoned, machine) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q.bind(&r.0).bind(&r.1).bind(&r.2);
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in s_rows.chunks(200) {
        // (id, sip_code, contract, created_ms, calls): the code comes
        // first in the literal part, so the columns are listed to match.
        let values: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| format!("(${}, ${}, {})", 2 * i + 1, 2 * i + 2, r.2))
            .collect();
        let sql = format!(
            "INSERT INTO report_sip (notification_id, contract, sip_code, created_ms, calls) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q.bind(&r.0).bind(&r.1);
        }
        q.execute(&mut *tx).await?;
    }
    let sql = format!("UPDATE notifications SET report_folded = 1 WHERE id IN ({in_ids})");
    let mut q = sqlx::query(&sql);
    for n in &ns {
        q = q.bind(&n.id);
    }
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ns.len())
}

/// Open the snapshot a report reads in (one for facts and raw rows).
pub(crate) async fn snapshot(
    store: &Store,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    let mut tx = store.pool().begin().await?;
    if !store.is_sqlite() {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        // The planner has no statistics on a computed group key and
        // guesses a group per row; with the default 4 MB it then sorts a
        // year's rows and their ack times on disk instead of hashing a
        // few hundred groups (measured: twice as slow).
        sqlx::query("SET LOCAL work_mem = '32MB'")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// The group key over a facts table aliased `n`: hours and weekdays as
/// numbers (as the raw queries' text once read back), since SQLite sorts
/// a year of integer keys about twice as fast as text ones.
fn key_sql(dim: Option<Dimension>) -> &'static str {
    match dim {
        None => "''",
        Some(Dimension::Contact) => "n.contact",
        Some(Dimension::Hour) => "((n.created_ms + $3) / 3600000) % 24",
        Some(Dimension::Weekday) => "(((n.created_ms + $3) / 86400000) + 4) % 7",
        Some(d) => d.key_sql(),
    }
}

/// The key [`key_sql`] selected, as text.
fn read_key(r: &sqlx::any::AnyRow, dim: Option<Dimension>) -> Result<String, StoreError> {
    Ok(match dim {
        Some(Dimension::Hour | Dimension::Weekday) => r.try_get::<i64, _>("k")?.to_string(),
        _ => r.try_get("k")?,
    })
}

fn table(dim: Option<Dimension>) -> &'static str {
    if dim == Some(Dimension::Contact) {
        "report_contacts"
    } else {
        "report_notifications"
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments<'q>>;

fn bind_all<'q>(mut q: AnyQuery<'q>, f: &'q Filter, vals: &'q [String]) -> AnyQuery<'q> {
    q = q
        .bind(f.from_ms)
        .bind(f.to_ms)
        .bind(f.tz_offset_min * 60_000);
    for v in vals {
        q = q.bind(v);
    }
    q
}

/// The aggregate that lists the values of `expr` (NULLs left out) as
/// text, comma-separated: a year's ack times come back in one row per
/// group, read in the same scan as the counts. Exact median and p90 need
/// every value; a window function (`ROW_NUMBER() OVER (ORDER BY ..)`)
/// to pick a few ranks cost more on SQLite than the scan itself (a sort
/// of every value and a row per value), and fetching a row per value
/// costs more in the driver than the text.
pub(crate) fn list_agg(conn: &AnyConnection, expr: &str) -> String {
    if conn.backend_name() == "SQLite" {
        format!("group_concat({expr})")
    } else {
        format!("string_agg(CAST({expr} AS TEXT), ',')")
    }
}

/// The numbers of a [`list_agg`] column (`None`: no values).
pub(crate) fn parse_list(s: Option<&str>, into: &mut Vec<i64>) -> Result<(), StoreError> {
    for v in s.unwrap_or("").split(',').filter(|v| !v.is_empty()) {
        into.push(
            v.trim()
                .parse()
                .map_err(|e| StoreError::Db(sqlx::Error::Decode(Box::new(e))))?,
        );
    }
    Ok(())
}

/// The facts' groups (not `period`, see [`period_groups`]) added to
/// `groups`, every ack time with them; with no dimension, the escalation
/// depths into `depth`. One scan of one facts table.
pub(crate) async fn collect(
    conn: &mut AnyConnection,
    f: &Filter,
    dim: Option<Dimension>,
    groups: &mut BTreeMap<String, Acc>,
    depth: &mut BTreeMap<i64, i64>,
) -> Result<(), StoreError> {
    let key = key_sql(dim);
    let table = table(dim);
    let group = if dim.is_some() { " GROUP BY k" } else { "" };
    let (cond, vals) = super::contract_cond(f, "n.contract", 4)
        .map(|(c, v)| (format!(" AND {c}"), v))
        .unwrap_or_default();
    let range = "n.created_ms >= $1 AND n.created_ms < $2 AND CAST($3 AS BIGINT) IS NOT NULL";
    let acked = if dim == Some(Dimension::Contact) {
        "acked_calls"
    } else {
        "acked"
    };
    let acks = list_agg(conn, "n.ack_ms");
    // The depth of each acknowledged notification, for the summary's
    // histogram (values 1, 2, 3..: short text).
    let depths = if dim.is_none() {
        list_agg(conn, "n.depth")
    } else {
        "NULL".to_string()
    };
    let sql = format!(
        "SELECT {key} AS k, COUNT(*) AS total, CAST(SUM(n.{acked}) AS BIGINT) AS acked, \
         CAST(SUM(n.calls) AS BIGINT) AS calls, CAST(SUM(n.answered) AS BIGINT) AS answered, \
         CAST(SUM(n.abandoned) AS BIGINT) AS abandoned, CAST(SUM(n.machine) AS BIGINT) AS machine, \
         CAST(SUM(n.depth) AS BIGINT) AS dsum, COUNT(n.depth) AS dn, {acks} AS acks, {depths} AS depths \
         FROM {table} n WHERE {range}{cond}{group}"
    );
    let mut ds = Vec::new();
    for r in bind_all(sqlx::query(&sql), f, &vals)
        .fetch_all(&mut *conn)
        .await?
    {
        let total: i64 = r.try_get("total")?;
        if total == 0 {
            continue; // no GROUP BY: one row even over nothing
        }
        let g = groups.entry(read_key(&r, dim)?).or_default();
        add_counts(g, &r, total)?;
        parse_list(
            r.try_get::<Option<String>, _>("acks")?.as_deref(),
            &mut g.acks,
        )?;
        ds.clear();
        parse_list(
            r.try_get::<Option<String>, _>("depths")?.as_deref(),
            &mut ds,
        )?;
        for d in &ds {
            *depth.entry(*d).or_default() += 1;
        }
    }
    Ok(())
}

/// The sums of one facts group (columns as [`collect`] names them).
pub(crate) fn add_counts(g: &mut Acc, r: &sqlx::any::AnyRow, total: i64) -> Result<(), StoreError> {
    let get = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.unwrap_or(0));
    g.f.notifications += total;
    g.f.acknowledged += get("acked")?;
    g.f.calls += get("calls")?;
    g.f.answered_calls += get("answered")?;
    g.f.unanswered_calls += get("calls")? - get("answered")?;
    g.f.abandoned_calls += get("abandoned")?;
    g.f.machine_calls += get("machine")?;
    g.depth_sum += get("dsum")?;
    g.depth_n += get("dn")?;
    Ok(())
}

/// One folded notification, for the `period` breakdown (placed here,
/// with each contract's calendar, by the minute of its creation).
pub(crate) struct PeriodRow {
    pub contract: String,
    pub minute: i64,
    pub acc: Acc,
}

pub(crate) async fn period_rows(
    conn: &mut AnyConnection,
    f: &Filter,
) -> Result<Vec<PeriodRow>, StoreError> {
    let (cond, vals) = super::contract_cond(f, "n.contract", 4)
        .map(|(c, v)| (format!(" AND {c}"), v))
        .unwrap_or_default();
    let sql = format!(
        "SELECT n.contract AS contract, n.created_ms AS created, n.acked AS acked, n.ack_ms AS ack, \
         n.depth AS depth, n.calls AS calls, n.answered AS answered, n.abandoned AS abandoned, \
         n.machine AS machine FROM report_notifications n WHERE n.created_ms >= $1 \
         AND n.created_ms < $2 AND CAST($3 AS BIGINT) IS NOT NULL{cond}"
    );
    let rows = bind_all(sqlx::query(&sql), f, &vals)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let created: i64 = r.try_get("created")?;
        let mut acc = Acc::default();
        let calls: i64 = r.try_get("calls")?;
        let answered: i64 = r.try_get("answered")?;
        acc.f.notifications = 1;
        acc.f.acknowledged = r.try_get("acked")?;
        acc.f.calls = calls;
        acc.f.answered_calls = answered;
        acc.f.unanswered_calls = calls - answered;
        acc.f.abandoned_calls = r.try_get("abandoned")?;
        acc.f.machine_calls = r.try_get("machine")?;
        if let Some(v) = r.try_get::<Option<i64>, _>("ack")? {
            acc.acks.push(v);
        }
        if let Some(d) = r.try_get::<Option<i64>, _>("depth")? {
            acc.depth_sum = d;
            acc.depth_n = 1;
        }
        out.push(PeriodRow {
            contract: r.try_get("contract")?,
            // As SQL's `created_ms / 60000` (truncating).
            minute: created / 60_000,
            acc,
        });
    }
    Ok(out)
}

/// Failed calls of folded notifications by SIP status, added to `out`.
pub(crate) async fn sip_failures(
    conn: &mut AnyConnection,
    f: &Filter,
    out: &mut BTreeMap<i64, i64>,
) -> Result<(), StoreError> {
    let (cond, vals) = super::contract_cond(f, "n.contract", 4)
        .map(|(c, v)| (format!(" AND {c}"), v))
        .unwrap_or_default();
    let sql = format!(
        "SELECT n.sip_code AS code, CAST(SUM(n.calls) AS BIGINT) AS total FROM report_sip n \
         WHERE n.created_ms >= $1 AND n.created_ms < $2 AND CAST($3 AS BIGINT) IS NOT NULL{cond} \
         GROUP BY n.sip_code"
    );
    for r in bind_all(sqlx::query(&sql), f, &vals)
        .fetch_all(&mut *conn)
        .await?
    {
        *out.entry(r.try_get("code")?).or_default() += r.try_get::<i64, _>("total")?;
    }
    Ok(())
}

//! `callout bench reports`: a year of history (by default 100,000
//! notifications and 300,000 calls over 20 contracts) written straight
//! into a fresh database, then each report timed, on SQLite and, with
//! `--postgres`, on PostgreSQL.
//!
//! The history is written as rows from before migration 0017 would be
//! (not folded), so the first step times the backfill of the report
//! facts; the reports are then timed from the facts, and the summary and
//! the `period` breakdown also from the raw rows (the queries before the
//! facts) in the same run, to compare, and checked equal.

use std::time::Instant;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::reports::calendar::{Calendar, ContractReports, Setup};
use crate::reports::{self, monthly, Dimension, Filter};
use crate::store::Store;

/// Options of `callout bench reports`.
#[derive(Debug, Clone)]
pub struct ReportsBench {
    pub notifications: usize,
    pub calls_per_notification: usize,
    /// Admin URL of a PostgreSQL server (…/postgres): a database is made
    /// there and dropped after.
    pub postgres: Option<String>,
    /// Timed runs per report (the best and the first are printed).
    pub repeat: usize,
    /// Keep the databases here (SQLite file `DIR/db`; PostgreSQL database
    /// `callout_bench_reports_keep`); a kept one that holds the history
    /// is not seeded again.
    pub keep: Option<std::path::PathBuf>,
}

const YEAR_MS: i64 = 365 * 86_400_000;
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01 UTC

/// Write the history in batches of multi-row INSERTs.
async fn seed(store: &Store, o: &ReportsBench) -> anyhow::Result<(usize, usize)> {
    let pool = store.pool();
    let mut rng = StdRng::seed_from_u64(14);
    let n = o.notifications;
    let per = o.calls_per_notification.max(1);
    let mut calls = 0usize;
    let batch = 500usize;
    let mut i = 0usize;
    while i < n {
        let end = (i + batch).min(n);
        let mut ns = String::from(
            "INSERT INTO notifications (id, contract, ticket, severity, host, summary, variables, state, final, \
             escalation, cancel_reason, created_ms, updated_ms) VALUES ",
        );
        let mut at = String::from(
            "INSERT INTO attempts (id, notification_id, attempt, contact, round, started_ms, answered_ms, \
             ended_ms, outcome, sip_code, digits) VALUES ",
        );
        let mut first_a = true;
        for k in i..end {
            let created = START_MS + (k as i64 * YEAR_MS) / n as i64;
            let contract = format!("c{:02}", k % 20);
            // 70 % acknowledged, on call 1..=per; the rest exhausted.
            let acked = rng.gen_bool(0.7);
            let ack_on = rng.gen_range(1..=per);
            let ack_after = rng.gen_range(30_000..1_800_000i64);
            let (state, fin) = if acked {
                (
                    "acked",
                    format!(
                        "{{\"state\":\"acked\",\"contact\":{},\"attempt\":{ack_on},\"at_ms\":{}}}",
                        ack_on - 1,
                        created + ack_after
                    ),
                )
            } else {
                (
                    "exhausted",
                    format!(
                        "{{\"state\":\"exhausted\",\"at_ms\":{}}}",
                        created + 1_800_000
                    ),
                )
            };
            if k > i {
                ns.push(',');
            }
            ns.push_str(&format!(
                "('n{k}', '{contract}', 'T{k}', 'critical', 'h{}', 'down', '{{}}', '{state}', '{fin}', NULL, NULL, {created}, {created})",
                k % 50
            ));
            let n_calls = if acked { ack_on } else { per };
            for a in 1..=n_calls {
                let started = created + (a as i64 - 1) * 60_000;
                let (answered, outcome, code) = if acked && a == ack_on {
                    (
                        Some(started + 5_000),
                        "{\"outcome\":\"acked\"}".to_string(),
                        None,
                    )
                } else {
                    match rng.gen_range(0..10) {
                        0 => (
                            Some(started + 5_000),
                            "{\"outcome\":\"machine\"}".into(),
                            None,
                        ),
                        1 => (
                            Some(started + 5_000),
                            "{\"outcome\":\"answered_no_input\"}".into(),
                            None,
                        ),
                        2 => (
                            None,
                            "{\"outcome\":\"failed\",\"code\":503}".into(),
                            Some(503),
                        ),
                        3 => (None, "{\"outcome\":\"busy\"}".into(), Some(486)),
                        _ => (None, "{\"outcome\":\"no_answer\"}".into(), None),
                    }
                };
                if !first_a {
                    at.push(',');
                }
                first_a = false;
                at.push_str(&format!(
                    "('a{k}_{a}', 'n{k}', {a}, 'p{}', 1, {started}, {}, {}, '{outcome}', {}, '{}')",
                    (k + a) % 5,
                    answered.map_or("NULL".to_string(), |v| v.to_string()),
                    started + 40_000,
                    code.map_or("NULL".to_string(), |v: i64| v.to_string()),
                    if acked && a == ack_on { "1" } else { "" },
                ));
                calls += 1;
            }
        }
        let mut tx = pool.begin().await?;
        sqlx::query(&ns).execute(&mut *tx).await?;
        if !first_a {
            sqlx::query(&at).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        i = end;
    }
    Ok((n, calls))
}

async fn time<T>(
    name: &str,
    repeat: usize,
    mut f: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<()> {
    let mut first = None;
    let mut best = f64::MAX;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f().await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        first.get_or_insert(ms);
        best = best.min(ms);
    }
    println!(
        "  {name:<28} first {:>8.1} ms   best {:>8.1} ms",
        first.unwrap_or(0.0),
        best
    );
    Ok(())
}

async fn run_on(store: &Store, label: &str, o: &ReportsBench) -> anyhow::Result<()> {
    let t = Instant::now();
    let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(store.pool())
        .await?;
    if have > 0 {
        println!("{label}: kept history of {have} notifications, not seeded");
    } else {
        let (n, c) = seed(store, o).await?;
        println!(
            "{label}: seeded {n} notifications and {c} calls over a year in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let all = Filter {
        from_ms: START_MS,
        to_ms: START_MS + YEAR_MS,
        contracts: None,
        tz_offset_min: 540,
    };
    let one = Filter {
        contracts: Some(vec!["c07".into()]),
        ..all.clone()
    };
    // Every contract in Tokyo with the default hours, and a target of
    // its own for half of them (as dialplans' `[reports]` would say).
    let setup = Setup {
        contracts: (0..20)
            .map(|i| {
                let c = ContractReports {
                    calendar: Calendar {
                        tz: chrono_tz::Asia::Tokyo,
                        ..Calendar::default()
                    },
                    ack_within_ms: (i % 2 == 0).then_some(5 * 60_000),
                    ..ContractReports::default()
                };
                (format!("c{i:02}"), c)
            })
            .collect(),
        default_target: monthly::Target::default(),
    };
    let t = Instant::now();
    let folded = reports::facts::fold(store).await?;
    println!(
        "  fold (backfill of {folded} notifications)   {:>8.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let r = o.repeat;
    time("raw: summary (year, all)", r, async || {
        Ok(reports::summary_raw(store, &all).await?)
    })
    .await?;
    time("raw: by period (year, all)", r, async || {
        Ok(reports::breakdown_raw(store, &all, Dimension::Period, &setup).await?)
    })
    .await?;
    anyhow::ensure!(
        reports::summary(store, &all).await? == reports::summary_raw(store, &all).await?,
        "the facts' summary differs from the raw rows'"
    );
    anyhow::ensure!(
        reports::breakdown_in(store, &all, Dimension::Period, &setup).await?
            == reports::breakdown_raw(store, &all, Dimension::Period, &setup).await?,
        "the facts' period breakdown differs from the raw rows'"
    );
    anyhow::ensure!(
        monthly::report(store, &all, &setup).await?
            == monthly::report_raw(store, &all, &setup).await?,
        "the facts' monthly report differs from the raw rows'"
    );
    println!("  facts == raw rows: summary, by period, monthly");
    time("summary (year, all)", r, async || {
        Ok(reports::summary(store, &all).await?)
    })
    .await?;
    for d in [
        Dimension::Contract,
        Dimension::Contact,
        Dimension::Hour,
        Dimension::Weekday,
    ] {
        time(&format!("by {} (year, all)", d.name()), r, async || {
            Ok(reports::breakdown(store, &all, d).await?)
        })
        .await?;
    }
    time("by period (year, all)", r, async || {
        Ok(reports::breakdown_in(store, &all, Dimension::Period, &setup).await?)
    })
    .await?;
    time("monthly (year, all)", r, async || {
        Ok(monthly::report(store, &all, &setup).await?)
    })
    .await?;
    time("summary (year, 1 contract)", r, async || {
        Ok(reports::summary(store, &one).await?)
    })
    .await?;
    time("by hour (year, 1 contract)", r, async || {
        Ok(reports::breakdown(store, &one, Dimension::Hour).await?)
    })
    .await?;
    let s = reports::summary(store, &all).await?;
    println!(
        "  (answer rate {:.3}, ack median {} ms, p90 {} ms, {} calls)",
        s.figures.answer_rate.unwrap_or(0.0),
        s.figures.ack_median_ms.unwrap_or(0),
        s.figures.ack_p90_ms.unwrap_or(0),
        s.figures.calls
    );
    Ok(())
}

pub async fn run(o: ReportsBench) -> anyhow::Result<()> {
    let dir = match &o.keep {
        Some(d) => d.clone(),
        None => {
            let d =
                std::env::temp_dir().join(format!("callout-bench-reports-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            d
        }
    };
    let store = Store::connect(&format!("sqlite://{}/db", dir.display()))
        .await
        .context("SQLite")?;
    let r = run_on(&store, "SQLite", &o).await;
    store.pool().close().await;
    if o.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r?;
    if let Some(admin) = &o.postgres {
        use sqlx::Connection;
        let db = match o.keep {
            Some(_) => "callout_bench_reports_keep".to_string(),
            None => format!("callout_bench_reports_{}", std::process::id()),
        };
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .context("PostgreSQL")?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&db)
                .fetch_optional(&mut conn)
                .await?;
        if o.keep.is_none() || exists.is_none() {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute(&mut conn)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await?;
        }
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db}"),
            None => anyhow::bail!("--postgres must end with /DATABASE"),
        };
        let r = async {
            let store = Store::connect(&url).await?;
            let r = run_on(&store, "PostgreSQL", &o).await;
            store.pool().close().await;
            r
        }
        .await;
        if o.keep.is_none() {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
        }
        r?;
    }
    Ok(())
}

//! Report figures against a data set with answers worked out by hand, on
//! SQLite and PostgreSQL (CALLOUT_TEST_POSTGRES_URL; skipped loudly
//! without it).
//!
//! Ten notifications, one an hour from Monday 2026-11-02 00:00 UTC:
//! - 0-3 (acme): acknowledged on the first call after 1, 2, 3, 4 min;
//! - 4-6 (acme): first call unanswered, acknowledged on the second after
//!   5, 10, 15 min;
//! - 7 (acme): two unanswered calls, exhausted;
//! - 8 (beta): a call failing with 503, then an answering machine;
//! - 9 (beta): answered, no key.
//!
//! So: answer rate 7/10; ack times 1,2,3,4,5,10,15 min: median 4 min, p90
//! (nearest rank, the 7th) 15 min; 15 calls, 9 answered, 6 unanswered,
//! 1 abandoned, 1 machine; depth mean 10/7; SIP 503 once; within 10 min:
//! 6 of 10.

#[path = "common/pg.rs"]
mod pg;

use callout::reports::{self, monthly, Dimension, Filter};
use callout::store::{AttemptRow, NotificationRow, Store};
use serde_json::json;

const T0: i64 = 1_793_577_600_000;
const MIN: i64 = 60_000;

struct Call {
    answered: bool,
    outcome: &'static str,
    sip: Option<i64>,
    /// Minutes after the notification's creation when it ended.
    end_min: i64,
}

fn c(answered: bool, outcome: &'static str, sip: Option<i64>, end_min: i64) -> Call {
    Call {
        answered,
        outcome,
        sip,
        end_min,
    }
}

async fn seed(store: &Store) {
    let ack_min = [1, 2, 3, 4, 5, 10, 15];
    for i in 0..10i64 {
        let created = T0 + i * 3_600_000;
        let id = format!("n_{i}");
        let contract = if i < 8 { "acme" } else { "beta" };
        store
            .insert_notification(
                &NotificationRow {
                    id: id.clone(),
                    contract: contract.into(),
                    ticket: format!("T-{i}"),
                    severity: "critical".into(),
                    host: "db-1".into(),
                    summary: "down".into(),
                    variables: json!({}),
                    state: "running".into(),
                    final_state: None,
                    escalation: None,
                    cancel_reason: None,
                    created_ms: created,
                    updated_ms: created,
                },
                None,
            )
            .await
            .unwrap();
        let calls: Vec<Call> = match i {
            0..=3 => vec![c(true, "acked", None, ack_min[i as usize])],
            4..=6 => vec![
                c(false, "no_answer", None, 1),
                c(true, "acked", None, ack_min[i as usize]),
            ],
            7 => vec![
                c(false, "no_answer", None, 1),
                c(false, "no_answer", None, 2),
            ],
            8 => vec![
                c(false, "failed", Some(503), 1),
                c(true, "machine", None, 2),
            ],
            _ => vec![c(true, "answered_no_input", None, 1)],
        };
        for (k, call) in calls.iter().enumerate() {
            let attempt = k as i64 + 1;
            store
                .start_attempt(&AttemptRow {
                    id: format!("a_{i}_{attempt}"),
                    notification_id: id.clone(),
                    attempt,
                    contact: if attempt == 1 { "Alice" } else { "Bob" }.into(),
                    round: 1,
                    started_ms: created + (attempt - 1) * 30_000,
                    answered_ms: None,
                    ended_ms: None,
                    outcome: None,
                    sip_code: None,
                    digits: String::new(),
                })
                .await
                .unwrap();
            if call.answered {
                store
                    .answer_attempt(&id, attempt, created + (attempt - 1) * 30_000 + 5_000)
                    .await
                    .unwrap();
            }
            let outcome = if call.outcome == "failed" {
                json!({"outcome": "failed", "code": 503})
            } else {
                json!({"outcome": call.outcome})
            };
            // The call ends a little after the key (the closing phrase).
            store
                .end_attempt(
                    &id,
                    attempt,
                    &outcome,
                    call.sip,
                    created + call.end_min * MIN + 4_000,
                )
                .await
                .unwrap();
        }
        if i < 7 {
            let at = created + ack_min[i as usize] * MIN;
            let attempt = calls.len();
            store
                .finish(
                    &id,
                    "acked",
                    &json!({"state": "acked", "contact": attempt - 1, "attempt": attempt, "at_ms": at}),
                    at,
                )
                .await
                .unwrap();
        } else {
            store
                .finish(
                    &id,
                    "exhausted",
                    &json!({"state": "exhausted", "at_ms": created + 3 * MIN}),
                    created + 3 * MIN,
                )
                .await
                .unwrap();
        }
    }
}

async fn check(store: &Store) {
    seed(store).await;
    let f = Filter {
        from_ms: T0,
        to_ms: T0 + 86_400_000,
        contracts: None,
        tz_offset_min: 0,
    };
    let s = reports::summary(store, &f).await.unwrap();
    let g = &s.figures;
    assert_eq!(g.notifications, 10);
    assert_eq!(g.acknowledged, 7);
    assert_eq!(g.answer_rate, Some(0.7));
    assert_eq!(g.ack_median_ms, Some(4 * MIN));
    assert_eq!(g.ack_p90_ms, Some(15 * MIN));
    assert_eq!(g.calls, 15);
    assert_eq!(g.answered_calls, 9);
    assert_eq!(g.unanswered_calls, 6);
    assert_eq!(g.abandoned_calls, 1);
    assert_eq!(g.machine_calls, 1);
    assert!((g.escalation_depth_mean.unwrap() - 10.0 / 7.0).abs() < 1e-9);
    assert_eq!(s.escalation_depth.get(&1), Some(&4));
    assert_eq!(s.escalation_depth.get(&2), Some(&3));
    assert_eq!(s.sip_failures.get(&503), Some(&1));
    assert_eq!(s.sip_failures.len(), 1);

    // Outside the period: nothing.
    let empty = reports::summary(
        store,
        &Filter {
            from_ms: T0 - 86_400_000,
            to_ms: T0,
            ..f.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(empty.figures.notifications, 0);
    assert_eq!(empty.figures.answer_rate, None);

    let by = reports::breakdown(store, &f, Dimension::Contract)
        .await
        .unwrap();
    let acme = by.iter().find(|g| g.key == "acme").unwrap();
    assert_eq!(
        (acme.figures.notifications, acme.figures.acknowledged),
        (8, 7)
    );
    assert_eq!(acme.figures.answer_rate, Some(0.875));
    let beta = by.iter().find(|g| g.key == "beta").unwrap();
    assert_eq!(
        (
            beta.figures.notifications,
            beta.figures.acknowledged,
            beta.figures.calls
        ),
        (2, 0, 3)
    );

    let hours = reports::breakdown(store, &f, Dimension::Hour)
        .await
        .unwrap();
    assert_eq!(hours.len(), 24);
    for (h, g) in hours.iter().enumerate() {
        assert_eq!(g.key, h.to_string());
        assert_eq!(g.figures.notifications, i64::from(h < 10), "hour {h}");
    }
    assert_eq!(hours[5].figures.ack_median_ms, Some(10 * MIN));
    // In Japan (UTC+9) the first one was at 09:00.
    let jst = reports::breakdown(
        store,
        &Filter {
            tz_offset_min: 540,
            ..f.clone()
        },
        Dimension::Hour,
    )
    .await
    .unwrap();
    assert_eq!(jst[9].figures.notifications, 1);
    assert_eq!(jst[0].figures.notifications, 0);

    let days = reports::breakdown(store, &f, Dimension::Weekday)
        .await
        .unwrap();
    assert_eq!(days.len(), 7);
    // 2026-11-02 is a Monday (Sunday = 0).
    assert_eq!(days[1].figures.notifications, 10);

    let contacts = reports::breakdown(store, &f, Dimension::Contact)
        .await
        .unwrap();
    let alice = contacts.iter().find(|g| g.key == "Alice").unwrap();
    let bob = contacts.iter().find(|g| g.key == "Bob").unwrap();
    // Alice: first call of all ten, acknowledged 4; Bob: 5 second calls, 3 acks.
    assert_eq!((alice.figures.calls, alice.figures.acknowledged), (10, 4));
    assert_eq!((bob.figures.calls, bob.figures.acknowledged), (5, 3));
    assert_eq!(alice.figures.ack_median_ms, Some(2 * MIN + 30_000));
    assert_eq!(bob.figures.ack_median_ms, Some(10 * MIN));

    // A customer bound to beta sees beta only.
    let bound = reports::summary(
        store,
        &Filter {
            contracts: Some(vec!["beta".into()]),
            ..f.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (bound.figures.notifications, bound.figures.acknowledged),
        (2, 0)
    );
    let none = reports::summary(
        store,
        &Filter {
            contracts: Some(vec![]),
            ..f.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(none.figures.notifications, 0);

    let m = monthly::report(store, &f, monthly::Target::default())
        .await
        .unwrap();
    let all = m.iter().find(|m| m.contract == "*").unwrap();
    assert_eq!(all.month, "2026-11");
    assert_eq!(
        (all.notifications, all.acknowledged, all.within_target),
        (10, 7, 6)
    );
    assert_eq!(all.attainment, Some(60.0));
    assert!(!all.met);
    let acme = m.iter().find(|m| m.contract == "acme").unwrap();
    assert_eq!(acme.attainment, Some(75.0));
    let easy = monthly::report(
        store,
        &f,
        monthly::Target {
            ack_within_ms: 15 * MIN,
            percent: 70.0,
        },
    )
    .await
    .unwrap();
    assert!(easy.iter().find(|m| m.contract == "*").unwrap().met);

    let csv = reports::csv::summary(&s);
    assert!(csv.starts_with("from_ms,to_ms,notifications,"), "{csv}");
    assert!(
        csv.contains(",10,7,0.7000,240000,900000,15,9,6,1,1,"),
        "{csv}"
    );
    assert!(csv.contains("sip_failure,503,1\r\n"), "{csv}");
}

#[tokio::test]
async fn known_answers_sqlite() {
    let dir = std::env::temp_dir().join(format!("callout-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::connect(&format!("sqlite://{}/db", dir.display()))
        .await
        .unwrap();
    check(&store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn known_answers_postgres() {
    let Some(db) = pg::ScratchDb::create(
        "known_answers_postgres",
        &format!("callout_reports_{}", std::process::id()),
    )
    .await
    else {
        return;
    };
    {
        let store = Store::connect(&db.url).await.unwrap();
        check(&store).await;
        store.pool().close().await;
    }
    db.drop_db().await;
}

//! The media figures of a call (SRTP, RTCP; migration 0016) as the
//! runner's `call.ended` event carries them, stored in `attempts` and
//! read back, on real SQLite and real PostgreSQL.

#[path = "common/pg.rs"]
mod pg;

use callout::store::{AttemptRow, NotificationRow, Store};
use serde_json::json;

async fn exercise(store: &Store) {
    store
        .insert_notification(
            &NotificationRow {
                id: "n_m".into(),
                contract: "acme".into(),
                ticket: "T-M".into(),
                severity: "major".into(),
                host: "h".into(),
                summary: "s".into(),
                variables: json!({}),
                state: "pending".into(),
                final_state: None,
                escalation: None,
                cancel_reason: None,
                created_ms: 1,
                updated_ms: 1,
            },
            None,
        )
        .await
        .unwrap();
    for attempt in [1, 2] {
        store
            .start_attempt(&AttemptRow {
                id: format!("a_m{attempt}"),
                notification_id: "n_m".into(),
                attempt,
                contact: "Tanaka".into(),
                round: 1,
                started_ms: 10,
                answered_ms: None,
                ended_ms: None,
                outcome: None,
                sip_code: None,
                digits: String::new(),
            })
            .await
            .unwrap();
    }
    // Attempt 1 had SRTP media and reports; attempt 2 no media at all.
    let media = json!({"srtp": true, "packets_sent": 400, "packets_received": 390,
        "srtp_auth_failed": 3, "rtcp_sent": 2, "rtcp_received": 2,
        "rtcp": {"reports": 2, "remote_fraction_lost_pct": 9.765625, "remote_cumulative_lost": 37,
                 "remote_jitter_ms": 1.25, "rtt_ms": 0.5, "local_cumulative_lost": 0, "local_jitter_ms": 0.0}});
    let ended = |a: i64, m: serde_json::Value| {
        json!({"event": "call.ended", "attempt": a, "contact": "Tanaka",
            "outcome": {"outcome": "acked"}, "media": m, "at_ms": 500})
    };
    assert!(store
        .record_event("e1", "n_m", "call.ended", &ended(1, media), 500)
        .await
        .unwrap());
    assert!(store
        .record_event("e2", "n_m", "call.ended", &ended(2, json!(null)), 600)
        .await
        .unwrap());
    let got = store.attempt_media("n_m").await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(
        (
            m.attempt,
            m.srtp,
            m.srtp_auth_failed,
            m.rtcp_reports,
            m.remote_lost
        ),
        (1, Some(true), Some(3), Some(2), Some(37))
    );
    assert_eq!(m.remote_fraction_lost_pct, Some(9.765625));
    assert_eq!((m.remote_jitter_ms, m.rtt_ms), (Some(1.25), Some(0.5)));
}

#[tokio::test]
async fn sqlite_keeps_the_media_figures() {
    let dir = std::env::temp_dir().join(format!("callout-media-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::connect(&format!("sqlite://{}/db", dir.display()))
        .await
        .unwrap();
    exercise(&store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_keeps_the_media_figures() {
    let name = format!("callout_media_{}", std::process::id());
    let Some(db) = pg::ScratchDb::create("postgres_keeps_the_media_figures", &name).await else {
        return;
    };
    {
        let store = Store::connect(&db.url).await.unwrap();
        exercise(&store).await;
    }
    db.drop_db().await;
}

//! The store's fast paths for the gateway (issue 16), on real SQLite and,
//! when CALLOUT_TEST_POSTGRES_URL is set, real PostgreSQL: the store
//! writer's group commit is all-or-none and idempotent, and a keyed
//! notification is stored with its key in one commit only in the case it
//! may be, leaving every other case to the claim path untouched.

#[path = "common/pg.rs"]
mod pg;

use callout::store::{AcceptInsert, AcceptRow, KeyClaim, NotificationRow, Store, StoreWrite};
use serde_json::json;

fn notification(id: &str, ticket: &str, created: i64) -> NotificationRow {
    NotificationRow {
        id: id.into(),
        contract: "acme-web".into(),
        ticket: ticket.into(),
        severity: "major".into(),
        host: "web-01".into(),
        summary: "down".into(),
        variables: json!({}),
        state: "pending".into(),
        final_state: None,
        escalation: None,
        cancel_reason: None,
        created_ms: created,
        updated_ms: created,
    }
}

async fn exercise(store: &Store) {
    // A new key: the notification and its key in one commit.
    let n1 = notification("ntf_1", "T1", 1000);
    assert!(store
        .insert_notification_keyed(&n1, "k1", "h1")
        .await
        .unwrap());
    assert!(store.get_notification("ntf_1").await.unwrap().is_some());
    assert_eq!(
        store.claim_key("k1", "h1", 1001).await.unwrap(),
        KeyClaim::Done("ntf_1".into()),
        "the key points at its notification"
    );
    assert_eq!(
        store.claim_key("k1", "h2", 1001).await.unwrap(),
        KeyClaim::Mismatch
    );
    // The same key again (another ticket): nothing written.
    let n2 = notification("ntf_2", "T2", 1002);
    assert!(!store
        .insert_notification_keyed(&n2, "k1", "h1")
        .await
        .unwrap());
    assert!(
        store.get_notification("ntf_2").await.unwrap().is_none(),
        "rolled back with the key"
    );
    // A key in progress (claimed the long way) is not overwritten.
    assert_eq!(
        store.claim_key("k2", "h2", 1003).await.unwrap(),
        KeyClaim::Claimed
    );
    assert!(!store
        .insert_notification_keyed(&n2, "k2", "h2")
        .await
        .unwrap());
    assert!(store.get_notification("ntf_2").await.unwrap().is_none());
    assert_eq!(
        store.claim_key("k2", "h2", 1004).await.unwrap(),
        KeyClaim::InProgress
    );
    // Another active notification for the same ticket wins: the key stays
    // free for the claim path.
    let dup = notification("ntf_3", "T1", 1005);
    assert!(!store
        .insert_notification_keyed(&dup, "k3", "h3")
        .await
        .unwrap());
    assert!(store.get_notification("ntf_3").await.unwrap().is_none());
    assert_eq!(
        store.claim_key("k3", "h3", 1006).await.unwrap(),
        KeyClaim::Claimed,
        "the losing request did not take the key"
    );

    // Group commit: three writes in one transaction.
    let started = json!({"event": "notification.started", "at_ms": 0});
    let dialing =
        json!({"event": "call.dialing", "attempt": 1, "contact": "Alice", "round": 1, "at_ms": 1});
    let fin = json!({"outcome": "exhausted"});
    let group = [
        StoreWrite::Event {
            id: "evt_1",
            notification: "ntf_1",
            event: "notification.started",
            payload: &started,
            at_ms: 2000,
        },
        StoreWrite::Progress {
            notification: "ntf_1",
            state: "running",
            escalation: "{\"x\":1}",
            at_ms: 2001,
        },
        StoreWrite::Event {
            id: "evt_2",
            notification: "ntf_1",
            event: "call.dialing",
            payload: &dialing,
            at_ms: 2002,
        },
        StoreWrite::Finish {
            notification: "ntf_1",
            state: "exhausted",
            final_state: &fin,
            at_ms: 2003,
        },
    ];
    store.apply_writes(&group).await.unwrap();
    // Applied twice (a try that timed out after its commit): no change.
    store.apply_writes(&group).await.unwrap();
    let out = store.outbox("ntf_1").await.unwrap();
    assert_eq!(
        out.iter().map(|o| o.event.as_str()).collect::<Vec<_>>(),
        vec!["notification.started", "call.dialing"]
    );
    let row = store.get_notification("ntf_1").await.unwrap().unwrap();
    assert_eq!(row.state, "exhausted");
    assert_eq!(row.escalation.as_deref(), Some("{\"x\":1}"));
    assert_eq!(store.attempts("ntf_1").await.unwrap().len(), 1);

    // One write that fails (an attempt of an unknown notification breaks
    // its foreign key) takes the whole group with it.
    let n4 = notification("ntf_4", "T4", 3000);
    store.insert_notification(&n4, None).await.unwrap();
    let bad = [
        StoreWrite::Progress {
            notification: "ntf_4",
            state: "running",
            escalation: "{\"y\":2}",
            at_ms: 3001,
        },
        StoreWrite::Event {
            id: "evt_3",
            notification: "ntf_4",
            event: "notification.started",
            payload: &started,
            at_ms: 3002,
        },
        StoreWrite::Event {
            id: "evt_4",
            notification: "ntf_missing",
            event: "call.dialing",
            payload: &dialing,
            at_ms: 3003,
        },
    ];
    assert!(store.apply_writes(&bad).await.is_err());
    let row = store.get_notification("ntf_4").await.unwrap().unwrap();
    assert_eq!(row.escalation, None, "rolled back");
    assert!(
        store.outbox("ntf_4").await.unwrap().is_empty(),
        "rolled back"
    );
}

fn accept(id: &str, ticket: &str, insert: AcceptInsert) -> AcceptRow {
    AcceptRow {
        row: notification(id, ticket, 5000),
        insert,
        owner: None,
    }
}

/// Accepted notifications stored in one commit: a conflict is one row's
/// answer, never the batch's failure.
async fn exercise_accept_batch(store: &Store) {
    store
        .insert_notification(&notification("ntf_b0", "B-ACTIVE", 4000), None)
        .await
        .unwrap();
    assert_eq!(
        store.claim_key("kb-claimed", "hc", 4000).await.unwrap(),
        KeyClaim::Claimed
    );
    store
        .accept_batch(&[accept(
            "ntf_b9",
            "B9",
            AcceptInsert::FreshKey {
                key: "kb-taken".into(),
                hash: "h9".into(),
            },
        )])
        .await
        .unwrap();
    let stored = store
        .accept_batch(&[
            accept(
                "ntf_b1",
                "B1",
                AcceptInsert::FreshKey {
                    key: "kb1".into(),
                    hash: "h1".into(),
                },
            ),
            // The contract + ticket is active already.
            accept("ntf_b2", "B-ACTIVE", AcceptInsert::Claimed { key: None }),
            // The key is taken: its row must not stay.
            accept(
                "ntf_b3",
                "B3",
                AcceptInsert::FreshKey {
                    key: "kb-taken".into(),
                    hash: "h3".into(),
                },
            ),
            accept(
                "ntf_b4",
                "B4",
                AcceptInsert::Claimed {
                    key: Some("kb-claimed".into()),
                },
            ),
            accept("ntf_b5", "B5", AcceptInsert::Claimed { key: None }),
        ])
        .await
        .unwrap();
    assert_eq!(stored, vec![true, false, false, true, true]);
    for (id, there) in [
        ("ntf_b1", true),
        ("ntf_b2", false),
        ("ntf_b3", false),
        ("ntf_b4", true),
        ("ntf_b5", true),
    ] {
        assert_eq!(
            store.get_notification(id).await.unwrap().is_some(),
            there,
            "{id}"
        );
    }
    assert_eq!(
        store.claim_key("kb1", "h1", 6000).await.unwrap(),
        KeyClaim::Done("ntf_b1".into())
    );
    assert_eq!(
        store.claim_key("kb-taken", "h9", 6000).await.unwrap(),
        KeyClaim::Done("ntf_b9".into())
    );
    assert_eq!(
        store.claim_key("kb-claimed", "hc", 6000).await.unwrap(),
        KeyClaim::Done("ntf_b4".into())
    );
}

#[tokio::test]
async fn sqlite_store_writes() {
    let dir = std::env::temp_dir().join(format!("callout-store-writes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::connect(&format!("sqlite://{}/db", dir.display()))
        .await
        .unwrap();
    exercise(&store).await;
    exercise_accept_batch(&store).await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_store_writes() {
    let Some(db) = pg::ScratchDb::create(
        "postgres_store_writes",
        &format!("callout_writes_{}", std::process::id()),
    )
    .await
    else {
        return;
    };
    {
        let store = Store::connect(&db.url).await.unwrap();
        exercise(&store).await;
        exercise_accept_batch(&store).await;
    }
    db.drop_db().await;
}

/// Lease renewals and the store writer's group commits touch the same
/// rows at once on a clustered node. Both must lock them in one order:
/// in write order, a group over notifications B then A and a renewal
/// over A then B deadlocked (PostgreSQL's `deadlock detected`), and the
/// node lost writes to retries and leases to missed renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_renewals_and_group_commits_never_deadlock() {
    let Some(db) = pg::ScratchDb::create(
        "postgres_renewals_and_group_commits_never_deadlock",
        &format!("callout_renew_{}", std::process::id()),
    )
    .await
    else {
        return;
    };
    {
        let store = Store::connect(&db.url).await.unwrap();
        let ids: Vec<String> = (0..40).map(|i| format!("ntf_{i:03}")).collect();
        for (i, id) in ids.iter().enumerate() {
            store
                .insert_notification(&notification(id, &format!("T{i}"), 1000), None)
                .await
                .unwrap();
            assert_eq!(
                store.claim_new(id, "node-a", 30_000).await.unwrap(),
                Some(1)
            );
        }
        let store = std::sync::Arc::new(store);
        let mut tasks = Vec::new();
        // Three writers, each committing groups in descending id order
        // (the reverse of the rows' physical order), interleaved with
        // two renewal loops.
        for w in 0..3u64 {
            let (store, ids) = (store.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..60i64 {
                    let esc = format!("{{\"round\":{round}}}");
                    let writes: Vec<(StoreWrite<'_>, Option<i64>)> = ids
                        .iter()
                        .rev()
                        .skip((w as usize * 7 + round as usize) % 5)
                        .step_by(2)
                        .map(|id| {
                            (
                                StoreWrite::Progress {
                                    notification: id,
                                    state: "calling",
                                    escalation: &esc,
                                    at_ms: 2000 + round,
                                },
                                Some(1),
                            )
                        })
                        .collect();
                    let held = store
                        .apply_writes_fenced(&writes)
                        .await
                        .map_err(|e| format!("group commit {w}/{round}: {e}"))?;
                    assert!(held.iter().all(|h| *h), "no write is fenced here");
                }
                Ok::<(), String>(())
            }));
        }
        for r in 0..2 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..150 {
                    let renewed = store
                        .renew_leases("node-a", 30_000)
                        .await
                        .map_err(|e| format!("renewal {r}/{round}: {e}"))?;
                    assert_eq!(renewed.len(), 40, "every lease renewed, none skipped");
                }
                Ok(())
            }));
        }
        let mut errors = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                errors.push(e);
            }
        }
        assert!(errors.is_empty(), "{errors:#?}");
    }
    db.drop_db().await;
}

//! The same store tests on real SQLite and real PostgreSQL. PostgreSQL's
//! URL comes from CALLOUT_TEST_POSTGRES_URL (an admin URL; each run makes
//! and drops its own database); without it the PostgreSQL half says so
//! loudly and is skipped. `.ci/run` sets it.

use callout::store::{AttemptRow, KeyClaim, NotificationRow, RunRow, Store, StoreError};
use serde_json::json;

fn notification(id: &str, ticket: &str, created: i64) -> NotificationRow {
    NotificationRow {
        id: id.into(),
        contract: "acme-web".into(),
        ticket: ticket.into(),
        severity: "major".into(),
        host: "web-01".into(),
        summary: "down".into(),
        variables: json!({"region": "tokyo"}),
        state: "pending".into(),
        final_state: None,
        escalation: None,
        cancel_reason: None,
        created_ms: created,
        updated_ms: created,
    }
}

async fn exercise(store: &Store) {
    // Idempotency keys.
    assert_eq!(
        store.claim_key("k1", "h1", 1000).await.unwrap(),
        KeyClaim::Claimed
    );
    assert_eq!(
        store.claim_key("k1", "h1", 1001).await.unwrap(),
        KeyClaim::InProgress
    );
    assert_eq!(
        store.claim_key("k1", "h2", 1002).await.unwrap(),
        KeyClaim::Mismatch
    );
    store
        .insert_notification(&notification("n_1", "T-1", 1000), Some("k1"))
        .await
        .unwrap();
    assert_eq!(
        store.claim_key("k1", "h1", 1003).await.unwrap(),
        KeyClaim::Done("n_1".into())
    );
    // An abandoned claim (process died) can be taken over after a minute.
    assert_eq!(
        store.claim_key("k2", "h", 1000).await.unwrap(),
        KeyClaim::Claimed
    );
    assert_eq!(
        store.claim_key("k2", "h", 70_000).await.unwrap(),
        KeyClaim::Claimed
    );
    store.release_key("k2").await.unwrap();
    assert_eq!(
        store.claim_key("k2", "other", 70_001).await.unwrap(),
        KeyClaim::Claimed
    );

    // Notifications.
    let got = store.get_notification("n_1").await.unwrap().unwrap();
    assert_eq!(got, notification("n_1", "T-1", 1000));
    assert!(store.get_notification("n_nope").await.unwrap().is_none());
    assert_eq!(
        store
            .find_active("acme-web", "T-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "n_1"
    );
    for i in 2..=5 {
        store
            .insert_notification(
                &notification(&format!("n_{i}"), &format!("T-{i}"), 1000 + i),
                None,
            )
            .await
            .unwrap();
    }
    store
        .finish("n_2", "acked", &json!({"state": "acked"}), 5000)
        .await
        .unwrap();
    assert!(store
        .find_active("acme-web", "T-2")
        .await
        .unwrap()
        .is_none());
    assert!(
        !store.request_cancel("n_2", "late", 5001).await.unwrap(),
        "finished: nothing to cancel"
    );
    assert!(store
        .request_cancel("n_3", "recovered", 5001)
        .await
        .unwrap());
    assert_eq!(
        store
            .get_notification("n_3")
            .await
            .unwrap()
            .unwrap()
            .cancel_reason
            .as_deref(),
        Some("recovered")
    );
    let page1 = store
        .list_notifications(Some("acme-web"), None, None, None, 2)
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec!["n_5", "n_4"]
    );
    let cursor = page1.last().map(|n| (n.created_ms, n.id.clone()));
    let page2 = store
        .list_notifications(Some("acme-web"), None, None, cursor, 10)
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec!["n_3", "n_2", "n_1"]
    );
    let acked = store
        .list_notifications(None, Some("acked"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(acked.len(), 1);
    let since = store
        .list_notifications(None, None, Some(1004), None, 10)
        .await
        .unwrap();
    assert_eq!(since.len(), 2);
    assert_eq!(store.unfinished().await.unwrap().len(), 4);
    store
        .save_progress("n_4", "running", "{\"engine\":1}", 6000)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_notification("n_4")
            .await
            .unwrap()
            .unwrap()
            .escalation
            .as_deref(),
        Some("{\"engine\":1}")
    );

    // Attempts.
    let a = AttemptRow {
        id: "a_1".into(),
        notification_id: "n_4".into(),
        attempt: 1,
        contact: "Tanaka".into(),
        round: 1,
        started_ms: 6000,
        answered_ms: None,
        ended_ms: None,
        outcome: None,
        sip_code: None,
        digits: String::new(),
    };
    store.start_attempt(&a).await.unwrap();
    store.start_attempt(&a).await.unwrap(); // idempotent on (notification, attempt)
    store.answer_attempt("n_4", 1, 6500).await.unwrap();
    store.add_digit("n_4", 1, '2').await.unwrap();
    store.add_digit("n_4", 1, '1').await.unwrap();
    store
        .end_attempt("n_4", 1, &json!({"outcome": "acked"}), Some(200), 9000)
        .await
        .unwrap();
    store
        .end_attempt("n_4", 1, &json!({"outcome": "interrupted"}), None, 9999)
        .await
        .unwrap();
    let at = store.attempts("n_4").await.unwrap();
    assert_eq!(at.len(), 1);
    assert_eq!(
        (at[0].digits.as_str(), at[0].answered_ms, at[0].ended_ms),
        ("21", Some(6500), Some(9000))
    );
    assert_eq!(
        at[0].outcome,
        Some(json!({"outcome": "acked"})),
        "an ended attempt is never rewritten"
    );
    assert_eq!(
        store.attempt_by_id("a_1").await.unwrap().unwrap().sip_code,
        Some(200)
    );

    // Outbox: order per notification, retries, giving up.
    for e in ["notification.started", "call.ringing", "call.answered"] {
        store
            .enqueue("n_4", e, &json!({"e": e}), 10_000)
            .await
            .unwrap();
    }
    store
        .enqueue("n_5", "notification.started", &json!({}), 10_000)
        .await
        .unwrap();
    let due = store.due(10_000, 10).await.unwrap();
    let mut firsts: Vec<(String, i64)> = due
        .iter()
        .map(|d| (d.notification_id.clone(), d.seq))
        .collect();
    firsts.sort();
    assert_eq!(
        firsts,
        vec![("n_4".to_string(), 1), ("n_5".to_string(), 1)],
        "one per notification, the oldest"
    );
    let first = due
        .iter()
        .find(|d| d.notification_id == "n_4")
        .unwrap()
        .clone();
    store
        .failed(&first.id, 12_000, "HTTP 500", false)
        .await
        .unwrap();
    assert!(
        store
            .due(11_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.notification_id != "n_4"),
        "a failed event holds back the later ones"
    );
    assert_eq!(store.next_due_ms().await.unwrap(), Some(10_000));
    let retry = store.due(12_000, 10).await.unwrap();
    assert!(retry.iter().any(|d| d.id == first.id));
    store.delivered(&first.id, 12_001).await.unwrap();
    let next = store.due(12_001, 10).await.unwrap();
    assert_eq!(
        next.iter()
            .find(|d| d.notification_id == "n_4")
            .unwrap()
            .event,
        "call.ringing"
    );
    let ringing = next
        .iter()
        .find(|d| d.notification_id == "n_4")
        .unwrap()
        .id
        .clone();
    store.failed(&ringing, 0, "gave up", true).await.unwrap();
    assert_eq!(store.failed_deliveries().await.unwrap(), 1);
    let ob = store.outbox("n_4").await.unwrap();
    assert_eq!(
        ob.iter().map(|o| o.tries).collect::<Vec<_>>(),
        vec![2, 1, 0]
    );
    assert!(store.ping().await);
    exercise_runs(store).await;
}

fn run(id: &str, owner: &str, now: i64) -> RunRow {
    RunRow {
        id: id.into(),
        contract: "acme-web".into(),
        action: "restart".into(),
        flow: "restart-service".into(),
        host: "web-01".into(),
        notification_id: Some("n_1".into()),
        ticket: Some("T-1".into()),
        requested_by: json!({"via": "api", "token": "ops"}),
        state: "running".into(),
        record: None,
        started_ms: now,
        finished_ms: None,
        owner: Some(owner.into()),
        heartbeat_ms: Some(now),
        epoch: None,
        fenced_ms: None,
    }
}

/// Action runs: the running row is the (contract, host, flow) slot.
async fn exercise_runs(store: &Store) {
    assert!(store.start_run(&run("run_1", "a:1", 1000)).await.unwrap());
    // Same slot from another process: refused by the database.
    assert!(!store.start_run(&run("run_2", "b:2", 1001)).await.unwrap());
    // Another host is another slot.
    let mut other = run("run_3", "b:2", 1002);
    other.host = "web-02".into();
    assert!(store.start_run(&other).await.unwrap());
    let held = store
        .running_run("acme-web", "web-01", "restart-service")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.id, "run_1");
    assert_eq!(held.owner.as_deref(), Some("a:1"));
    store.beat_run("run_1", 6000).await.unwrap();
    assert_eq!(
        store.get_run("run_1").await.unwrap().unwrap().heartbeat_ms,
        Some(6000)
    );
    // Its owner died: interrupted once, and the slot is free.
    assert!(store.interrupt_run("run_1", 7000).await.unwrap());
    assert!(!store.interrupt_run("run_1", 7001).await.unwrap());
    assert!(store.start_run(&run("run_2", "b:2", 7002)).await.unwrap());
    let mut done = run("run_2", "b:2", 7002);
    done.state = "succeeded".into();
    done.record = Some(json!({"steps": [{"name": "restart", "exit_code": 0}]}));
    done.finished_ms = Some(9000);
    store.finish_run(&done).await.unwrap();
    // A beat after the end changes nothing.
    store.beat_run("run_2", 9500).await.unwrap();
    let got = store.get_run("run_2").await.unwrap().unwrap();
    assert_eq!(got.state, "succeeded");
    assert_eq!(got.heartbeat_ms, Some(7002));
    assert_eq!(got.record.unwrap()["steps"][0]["exit_code"], 0);
    // A refusal is recorded without a start.
    let mut refused = run("run_4", "b:2", 9600);
    refused.state = "refused".into();
    refused.finished_ms = Some(9600);
    store.finish_run(&refused).await.unwrap();
    let states: Vec<(String, String)> = store
        .runs_of("n_1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.state))
        .collect();
    assert_eq!(
        states,
        [
            ("run_1".to_string(), "interrupted".to_string()),
            ("run_3".into(), "running".into()),
            ("run_2".into(), "succeeded".into()),
            ("run_4".into(), "refused".into()),
        ]
    );
    let running: Vec<String> = store
        .running_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(running, ["run_3"]);
    exercise_fenced_run(store).await;
}

/// The notification's (epoch, owner, updated_ms), as the fence sees it.
async fn lease_row(store: &Store, id: &str) -> (i64, Option<String>, i64) {
    use sqlx::Row;
    let r = sqlx::query("SELECT epoch, owner, updated_ms FROM notifications WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    (
        r.try_get("epoch").unwrap(),
        r.try_get("owner").unwrap(),
        r.try_get("updated_ms").unwrap(),
    )
}

/// A run started under a notification's lease epoch that ends after
/// another node took the notification over: its end is refused
/// (`Fenced`), but what it did on the host is kept, on its own row only,
/// `interrupted` with `fenced_ms`; the notification is not touched.
async fn exercise_fenced_run(store: &Store) {
    store
        .insert_notification(&notification("n_f", "T-F", 10_000), None)
        .await
        .unwrap();
    let lease = |epoch: i64, node: &'static str| {
        sqlx::query("UPDATE notifications SET epoch = $1, owner = $2 WHERE id = 'n_f'")
            .bind(epoch)
            .bind(node)
            .execute(store.pool())
    };
    lease(1, "node-a").await.unwrap();
    let mut started = run("run_f", "a:1", 10_000);
    started.notification_id = Some("n_f".into());
    started.host = "web-09".into();
    started.epoch = Some(1);
    assert!(store.start_run(&started).await.unwrap());
    // node-b takes the notification over while the step runs.
    lease(2, "node-b").await.unwrap();
    let taken = lease_row(store, "n_f").await;
    let mut end = started.clone();
    end.state = "succeeded".into();
    end.finished_ms = Some(11_000);
    end.record = Some(json!({"result": "succeeded", "steps": [
        {"name": "restart", "exit_code": 0, "stdout": "nginx restarted"}]}));
    assert!(matches!(
        store.finish_run(&end).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(store.finish_fenced_run(&end, 11_200).await.unwrap());
    let got = store.get_run("run_f").await.unwrap().unwrap();
    assert_eq!(got.state, "interrupted", "its result does not stand");
    assert_eq!(
        (got.finished_ms, got.fenced_ms, got.epoch),
        (Some(11_000), Some(11_200), Some(1))
    );
    let steps = &got.record.as_ref().unwrap()["steps"];
    assert_eq!(steps[0]["exit_code"], 0, "{got:?}");
    assert_eq!(steps[0]["stdout"], "nginx restarted");
    // As the API shows it.
    assert_eq!(json!(got)["fenced_ms"], 11_200);
    // Its slot is free for the new holder; the record is kept once.
    assert!(store
        .running_run("acme-web", "web-09", "restart-service")
        .await
        .unwrap()
        .is_none());
    assert!(!store.finish_fenced_run(&end, 12_000).await.unwrap());
    assert_eq!(
        store.get_run("run_f").await.unwrap().unwrap().fenced_ms,
        Some(11_200)
    );
    // A refusal under the lost epoch never started: nothing to keep.
    let mut refused = run("run_fr", "a:1", 11_300);
    refused.notification_id = Some("n_f".into());
    refused.epoch = Some(1);
    refused.state = "refused".into();
    refused.finished_ms = Some(11_300);
    assert!(matches!(
        store.finish_run(&refused).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(!store.finish_fenced_run(&refused, 11_300).await.unwrap());
    assert!(store.get_run("run_fr").await.unwrap().is_none());
    // The new holder found the old run's heartbeat stale and freed its
    // slot first: the record still comes to the row, once.
    let mut stale = run("run_fs", "a:1", 12_000);
    stale.notification_id = Some("n_f".into());
    stale.host = "web-10".into();
    stale.epoch = Some(2);
    assert!(store.start_run(&stale).await.unwrap());
    lease(3, "node-c").await.unwrap();
    assert!(store.interrupt_run("run_fs", 12_500).await.unwrap());
    let mut end = stale.clone();
    end.state = "failed".into();
    end.finished_ms = Some(13_000);
    end.record = Some(json!({"steps": [{"name": "restart", "exit_code": 1}]}));
    assert!(store.finish_fenced_run(&end, 13_100).await.unwrap());
    let got = store.get_run("run_fs").await.unwrap().unwrap();
    assert_eq!(
        (got.state.as_str(), got.fenced_ms),
        ("interrupted", Some(13_100))
    );
    assert_eq!(got.record.unwrap()["steps"][0]["exit_code"], 1);
    // Another owner's row (same id, other node) is never written.
    let mut other = end.clone();
    other.owner = Some("b:2".into());
    assert!(!store.finish_fenced_run(&other, 14_000).await.unwrap());
    // Nothing of it was written on the notification.
    let after = lease_row(store, "n_f").await;
    assert_eq!((after.0, after.1.as_deref()), (3, Some("node-c")));
    assert_eq!(after.2, taken.2, "the notification row was not written");
}

/// A service and `callout action run` starting together on a new SQLite
/// file: each migrates, neither fails on the other's half-done schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_starts_racing_on_one_sqlite_file_all_succeed() {
    let dir = std::env::temp_dir().join(format!("callout-store-mig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for round in 0..5 {
        // A new file per round: the last connection of a round's pools
        // closes in the background and then unlinks its `-wal` by name,
        // which would be the next round's if it reused the path.
        let url = format!("sqlite://{}/round-{round}/callout.db", dir.display());
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::connect(&url).await })
            })
            .collect();
        for t in tries {
            let store = t.await.unwrap();
            assert!(store.is_ok(), "round {round}: {:?}", store.err());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!("callout-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/data/callout.db", dir.display());
    let store = Store::connect(&url).await.unwrap();
    assert!(store.is_sqlite());
    exercise(&store).await;
    // WAL mode is on.
    assert!(dir.join("data/callout.db-wal").exists());
    // Reopening runs the migrations again harmlessly and finds the data.
    drop(store);
    let again = Store::connect(&url).await.unwrap();
    assert_eq!(
        again.get_notification("n_1").await.unwrap().unwrap().ticket,
        "T-1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_store() {
    let Ok(admin) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED postgres_store: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
        return;
    };
    use sqlx::Connection;
    let db = format!("callout_test_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("CALLOUT_TEST_POSTGRES_URL must end with /DATABASE"),
    };
    {
        let store = Store::connect(&url).await.unwrap();
        assert!(!store.is_sqlite());
        exercise(&store).await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Two racing inserts for the same active contract + ticket: the database
/// lets only one in.
#[tokio::test]
async fn one_active_notification_per_ticket() {
    let dir = std::env::temp_dir().join(format!("callout-store-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::connect(&format!("sqlite://{}/db", dir.display()))
        .await
        .unwrap();
    store
        .insert_notification(&notification("n_a", "SAME", 1), None)
        .await
        .unwrap();
    assert!(store
        .insert_notification(&notification("n_b", "SAME", 2), None)
        .await
        .is_err());
    // Once the first has ended, a new one for the same ticket is allowed.
    store.finish("n_a", "acked", &json!({}), 3).await.unwrap();
    store
        .insert_notification(&notification("n_c", "SAME", 4), None)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Migrating a PostgreSQL database on a real server (a fresh database per
//! test): a migration that needs a table lock held by a long transaction
//! gives up within `migrate::LOCK_TIMEOUT_MS` with an error that says so,
//! instead of waiting for that transaction while every other query on
//! the table queues behind it (migration 0020 drops an index of
//! `notifications`); a start while another process migrates still waits
//! for it.
//!
//! Needs `CALLOUT_TEST_POSTGRES_URL`; skipped loudly without it.

#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use callout::store::migrate::{LOCK_TIMEOUT_MS, RETRY_FIRST, RETRY_MAX};
use callout::store::Store;
use sqlx::migrate::Migrate;
use sqlx::{Connection, PgConnection};

async fn scalar(c: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(c).await.unwrap()
}

const LEASE_INDEX: &str = "SELECT count(*) FROM pg_indexes WHERE indexname = 'notifications_lease'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_behind_a_long_transaction_stalls_nobody_and_applies_once_it_ends() {
    let name = format!("callout_migrate_lock_{}", std::process::id());
    let Some(db) = pg::ScratchDb::create("store_migrate_pg", &name).await else {
        return;
    };
    // The database as the release before 0020 left it.
    let mut old = sqlx::migrate!("./migrations");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version < 20)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    old.run(&mut c).await.unwrap();
    assert_eq!(scalar(&mut c, LEASE_INDEX).await, 1);

    // A long transaction that read the table (a report left open) holds
    // its ACCESS SHARE lock until it ends.
    let mut long = PgConnection::connect(&db.url).await.unwrap();
    let mut tx = long.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM notifications")
        .execute(&mut *tx)
        .await
        .unwrap();

    // The upgraded node starts; another node reads the table meanwhile.
    let url = db.url.clone();
    let start = tokio::spawn(async move { Store::connect(&url).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each try queues its lock for LOCK_TIMEOUT_MS at most: a reader of
    // the table waits no longer than that, tries or not.
    for _ in 0..3 {
        let mut r = PgConnection::connect(&db.url).await.unwrap();
        let t = Instant::now();
        scalar(&mut r, "SELECT count(*) FROM notifications").await;
        let waited = t.elapsed();
        assert!(
            waited < Duration::from_millis(LOCK_TIMEOUT_MS + 500),
            "{waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Still trying (not failed, not migrated): nothing changed.
    assert!(
        !start.is_finished(),
        "it must wait for the long transaction"
    );
    assert_eq!(scalar(&mut c, LEASE_INDEX).await, 1);
    assert_eq!(
        scalar(&mut c, "SELECT max(version) FROM _sqlx_migrations").await,
        19
    );

    // Once the transaction ends, the next try migrates and the node
    // starts (tries are at most RETRY_MAX apart; here the third or
    // fourth, 4 s apart at most by now).
    tx.commit().await.unwrap();
    let t = Instant::now();
    let store = tokio::time::timeout(RETRY_MAX, start)
        .await
        .expect("migrated once the long transaction ended")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < RETRY_FIRST * 8, "{:?}", t.elapsed());
    assert_eq!(scalar(&mut c, LEASE_INDEX).await, 0);
    assert!(scalar(&mut c, "SELECT max(version) FROM _sqlx_migrations").await >= 21);
    // And again: applied migrations' checksums still match.
    Store::connect(&db.url).await.unwrap().pool().close().await;
    store.pool().close().await;
    drop((c, long));
    db.drop_db().await;
}

/// sqlx's lock that serialises migrators is under the timeout too: a
/// start while another process migrates waits for it, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_while_another_process_migrates_waits_for_it() {
    let name = format!("callout_migrate_wait_{}", std::process::id());
    let Some(db) = pg::ScratchDb::create("store_migrate_pg", &name).await else {
        return;
    };
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    holder.lock().await.unwrap();
    let url = db.url.clone();
    let start = tokio::spawn(async move { Store::connect(&url).await });
    tokio::time::sleep(Duration::from_millis(2 * LOCK_TIMEOUT_MS + 500)).await;
    assert!(!start.is_finished(), "it must wait for the other migrator");
    holder.unlock().await.unwrap();
    let store = tokio::time::timeout(Duration::from_secs(30), start)
        .await
        .expect("started once the other migrator was done")
        .unwrap()
        .unwrap();
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    assert!(scalar(&mut c, "SELECT max(version) FROM _sqlx_migrations").await >= 21);
    store.pool().close().await;
    drop((c, holder));
    db.drop_db().await;
}

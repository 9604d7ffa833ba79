//! Applying the migrations. On PostgreSQL each migration's statements may
//! wait for a table lock for [`LOCK_TIMEOUT_MS`] at most, and a migration
//! that could not take its lock is tried again later, in this process.
//!
//! Why: a migration that alters or drops an index of a busy table (0020
//! drops one on `notifications`) needs an ACCESS EXCLUSIVE lock. During a
//! rolling upgrade the first upgraded node migrates while the others
//! still run; one long transaction on that table (a report, a `psql`
//! session left open) makes the migration wait, and every other query on
//! the table queues behind the waiting lock, so the whole fleet stalls
//! (lease renewals included) for as long as that transaction lasts. With
//! a short timeout the others wait a moment at most per try; trying
//! again in the process, further and further apart, instead of exiting
//! keeps a service manager's restarts (systemd: every 5 s) from turning
//! it into a stall every few seconds. The node logs why at each try and
//! serves once the transaction has ended; docs/deployment.md ("Rolling
//! upgrades") says what to do.
//!
//! The migration files are shared with SQLite (no `CONCURRENTLY`,
//! no `SET lock_timeout` in them), and sqlx refuses to start on a
//! database whose applied migrations' files changed (checksums), so the
//! timeout is set here, on the connection that runs them, never in a
//! file that may already have been applied.

use sqlx::migrate::MigrateError;
use sqlx::{AnyPool, Connection};

use super::StoreError;

/// How long one migration statement may wait for a lock on PostgreSQL.
/// Everything else on the table waits behind it that long, once per try:
/// a pause nobody notices, far within a lease's slack, and ample for a
/// lock nobody holds (taken in milliseconds).
pub const LOCK_TIMEOUT_MS: u64 = 250;

/// The first pause before a migration that timed out on its lock is
/// tried again; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest pause between two tries.
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// PostgreSQL's `lock_not_available`: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn lock_timed_out(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == LOCK_NOT_AVAILABLE)
}

/// Apply the pending migrations on PostgreSQL under [`LOCK_TIMEOUT_MS`],
/// trying again (after [`RETRY_FIRST`], doubling to [`RETRY_MAX`]) while
/// a long transaction holds a migration's table.
///
/// sqlx serialises migrators with an advisory lock, which `lock_timeout`
/// bounds too: a node that finds another one migrating gets the timeout
/// there (before any migration of its own) and waits again, as sqlx
/// alone would.
pub(super) async fn postgres(pool: &AnyPool) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("./migrations");
    let mut pause = RETRY_FIRST;
    let mut waits_for_migrator = 0u32;
    loop {
        // A connection of its own, closed after: the timeout must not
        // stay on a pooled connection, and an error inside sqlx leaves
        // its advisory lock held by the session (closing frees it).
        let mut conn = pool.acquire().await?.detach();
        sqlx::query(&format!("SET lock_timeout = {LOCK_TIMEOUT_MS}"))
            .execute(&mut conn)
            .await?;
        // `run_direct`: `run` on a connection trips rustc's "Acquire is
        // not general enough" in a spawned future (sqlx's own note).
        let res = migrator.run_direct(&mut conn).await;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }
        match res {
            Ok(()) => return Ok(()),
            Err(MigrateError::ExecuteMigration(e, version)) if lock_timed_out(&e) => {
                tracing::warn!(
                    migration = version,
                    retry_in_s = pause.as_secs(),
                    "migration {version} could not lock its table within {LOCK_TIMEOUT_MS} ms: \
                     a long-running transaction holds it (see pg_stat_activity); nothing was \
                     changed and nothing waits behind it; trying again (docs/deployment.md, \
                     \"Rolling upgrades\")"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
            Err(MigrateError::Execute(e)) if lock_timed_out(&e) => {
                // Another migrator holds sqlx's lock; after a while say
                // so louder (a stuck one needs a person).
                waits_for_migrator += 1;
                if waits_for_migrator % 120 == 0 {
                    tracing::warn!(
                        "another process has been migrating the database for a while; still waiting for it"
                    );
                } else if waits_for_migrator == 1 {
                    tracing::info!("another process is migrating the database; waiting for it");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

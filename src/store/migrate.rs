//! Applying the migrations. On PostgreSQL each migration's statements may
//! wait for a table lock for [`LOCK_TIMEOUT_MS`] at most.
//!
//! Why: a migration that alters or drops an index of a busy table (0020
//! drops one on `notifications`) needs an ACCESS EXCLUSIVE lock. During a
//! rolling upgrade the first upgraded node migrates while the others
//! still run; one long transaction on that table (a report, a `psql`
//! session left open) makes the migration wait, and every other query on
//! the table queues behind the waiting lock, so the whole fleet stalls
//! (lease renewals included) for as long as that transaction lasts. With
//! the timeout the migration gives up within seconds with an error that
//! says so, the upgraded node exits (systemd retries), and the fleet goes
//! on; docs/deployment.md ("Rolling upgrades") says what to do.
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
/// Everything else on the table waits behind it that long: 3 s stays
/// well within a lease's slack at the defaults (`lease_ttl` 10 s minus
/// `heartbeat` 3 s), so no node loses its work to a blocked migration,
/// and is ample for a lock nobody holds (taken in milliseconds).
pub const LOCK_TIMEOUT_MS: u64 = 3_000;

/// PostgreSQL's `lock_not_available`: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn lock_timed_out(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == LOCK_NOT_AVAILABLE)
}

/// Apply the pending migrations on PostgreSQL under [`LOCK_TIMEOUT_MS`].
///
/// sqlx serialises migrators with an advisory lock, which `lock_timeout`
/// bounds too: a node that finds another one migrating gets the timeout
/// there (before any migration of its own) and waits again, as sqlx
/// alone would; only a migration's own statement timing out is an error.
pub(super) async fn postgres(pool: &AnyPool) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("./migrations");
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
                return Err(StoreError::MigrationLocked {
                    version,
                    ms: LOCK_TIMEOUT_MS,
                })
            }
            Err(MigrateError::Execute(e)) if lock_timed_out(&e) => {
                tracing::info!("another process is migrating the database; waiting for it");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

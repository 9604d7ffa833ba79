//! The database schema across releases: which migrations a database has,
//! against the ones this binary carries. Upgrades migrate at start (under
//! a lock, `store::Store::connect`); a database migrated by a newer
//! release is refused with a message saying so, never half-understood.

use sqlx::Row;

/// How a database's schema compares with this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration this binary knows is applied, nothing more.
    Current { version: i64 },
    /// A fresh database, or one from an older release: `callout serve`
    /// applies the missing migrations at start.
    Behind { version: Option<i64>, latest: i64 },
    /// Migrated by a newer release: this binary refuses to use it.
    Newer { version: i64, latest: i64 },
}

/// Why the schema could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{0}")]
    Db(#[from] sqlx::Error),
}

/// The newest migration this binary carries.
pub fn latest() -> i64 {
    sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The sentence for a database migrated by a newer release.
pub fn newer_message(version: i64, latest: i64) -> String {
    format!(
        "the database was migrated by a newer callout (schema version {version}; this callout {} knows up to {latest}): \
         refusing to use it, since this release would misread it. Install the newer release again, \
         or restore the database backup taken before the upgrade",
        env!("CARGO_PKG_VERSION")
    )
}

/// A store error made readable: a downgrade (sqlx's "previously applied
/// but missing") says what happened and what to do.
pub fn explain(e: crate::store::StoreError) -> anyhow::Error {
    use crate::store::StoreError;
    match e {
        StoreError::Migrate(sqlx::migrate::MigrateError::VersionMissing(v)) => {
            anyhow::anyhow!(newer_message(v, latest()))
        }
        e => e.into(),
    }
}

/// Read the schema version without migrating anything (for `callout
/// doctor`, which must not change the database it checks).
pub async fn status(url: &str) -> Result<SchemaStatus, SchemaError> {
    use sqlx::any::AnyPoolOptions;
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    // A missing SQLite file is a fresh database, not an error: the service
    // creates it. Open read-only so nothing is created here.
    let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
        let file = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .unwrap_or("");
        if !std::path::Path::new(file).exists() {
            return Ok(SchemaStatus::Behind {
                version: None,
                latest: latest(),
            });
        }
        format!("{url}{}mode=ro", if url.contains('?') { "&" } else { "?" })
    } else {
        url.to_string()
    };
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&url)
        .await?;
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(&pool)
        .await;
    pool.close().await;
    let applied: Vec<i64> = match rows {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<i64, _>(0).ok())
            .collect(),
        // No migrations table: a database callout never used.
        Err(sqlx::Error::Database(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let latest = latest();
    let known: Vec<i64> = sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .collect();
    let version = applied.iter().copied().max();
    Ok(match version {
        Some(v) if applied.iter().any(|a| !known.contains(a)) => {
            SchemaStatus::Newer { version: v, latest }
        }
        Some(v) if known.iter().all(|k| applied.contains(k)) => {
            SchemaStatus::Current { version: v }
        }
        version => SchemaStatus::Behind { version, latest },
    })
}

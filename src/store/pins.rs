//! The PIN lockout of each contract: the state the policy in
//! `ivr::pin` decides on, and every wrong PIN by contact.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, Store, StoreError};
use crate::ivr::pin::{FailureResult, PinLock};

/// One wrong PIN, as the call reports it.
#[derive(Debug, Clone)]
pub struct PinFailure<'a> {
    pub contract: &'a str,
    pub contact: &'a str,
    pub notification_id: Option<&'a str>,
    pub attempt: Option<i64>,
    pub at_ms: i64,
}

/// Wrong PINs of one contact in the contract's current series.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContactFailures {
    pub contact: String,
    pub failures: i64,
    pub last_ms: i64,
}

/// A concurrent writer bumped the row between our read and write this
/// many times in a row: give up rather than spin.
const MAX_RETRIES: usize = 50;

fn lock_of(row: &AnyRow) -> Result<(PinLock, i64), StoreError> {
    let failures: i64 = row.try_get("failures")?;
    Ok((
        PinLock {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            since_ms: row.try_get("since_ms")?,
            last_failure_ms: row.try_get("last_failure_ms")?,
            locked_until_ms: row.try_get("locked_until_ms")?,
            locked_at_ms: row.try_get("locked_at_ms")?,
        },
        row.try_get("version")?,
    ))
}

impl Store {
    /// The contract's stored PIN state (none stored: no failures).
    pub async fn pin_lock(&self, contract: &str) -> Result<PinLock, StoreError> {
        let row = sqlx::query("SELECT * FROM pin_locks WHERE contract = $1")
            .bind(contract)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => lock_of(&r)?.0,
            None => PinLock::default(),
        })
    }

    /// Apply `change` to the stored state and write it back, retrying when
    /// another call changed it meanwhile, so no failure is lost. `audit`
    /// runs in the same transaction as the successful write.
    async fn update_pin_lock<R>(
        &self,
        contract: &str,
        now_ms: i64,
        change: impl Fn(&mut PinLock) -> R,
        audit: Option<&PinFailure<'_>>,
    ) -> Result<(PinLock, R), StoreError> {
        for _ in 0..MAX_RETRIES {
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query("SELECT * FROM pin_locks WHERE contract = $1")
                .bind(contract)
                .fetch_optional(&mut *tx)
                .await?;
            let (mut lock, version) = match &row {
                Some(r) => {
                    let (l, v) = lock_of(r)?;
                    (l, Some(v))
                }
                None => (PinLock::default(), None),
            };
            let r = change(&mut lock);
            let written = match version {
                Some(v) => sqlx::query(
                    "UPDATE pin_locks SET failures = $1, since_ms = $2, last_failure_ms = $3, locked_until_ms = $4, \
                     locked_at_ms = $5, version = version + 1, updated_ms = $6 WHERE contract = $7 AND version = $8",
                )
                .bind(i64::from(lock.failures))
                .bind(lock.since_ms)
                .bind(lock.last_failure_ms)
                .bind(lock.locked_until_ms)
                .bind(lock.locked_at_ms)
                .bind(now_ms)
                .bind(contract)
                .bind(v)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "INSERT INTO pin_locks (contract, failures, since_ms, last_failure_ms, locked_until_ms, locked_at_ms, \
                     version, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (contract) DO NOTHING",
                )
                .bind(contract)
                .bind(i64::from(lock.failures))
                .bind(lock.since_ms)
                .bind(lock.last_failure_ms)
                .bind(lock.locked_until_ms)
                .bind(lock.locked_at_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if written != 1 {
                tx.rollback().await?;
                continue;
            }
            if let Some(f) = audit {
                sqlx::query(
                    "INSERT INTO pin_failures (id, contract, contact, notification_id, attempt, at_ms, cleared_ms, cleared_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)",
                )
                .bind(new_id("pinf"))
                .bind(f.contract)
                .bind(f.contact)
                .bind(f.notification_id)
                .bind(f.attempt)
                .bind(f.at_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok((lock, r));
        }
        Err(StoreError::Contended("pin_locks"))
    }

    /// Count a wrong PIN towards the contract's lock; returns the new
    /// state and whether this failure locked it.
    pub async fn record_pin_failure(
        &self,
        f: &PinFailure<'_>,
        max_attempts: u32,
        lockout: Duration,
    ) -> Result<(PinLock, FailureResult), StoreError> {
        self.update_pin_lock(
            f.contract,
            f.at_ms,
            |l| l.record_failure(f.at_ms, max_attempts, lockout),
            Some(f),
        )
        .await
    }

    /// A right PIN: the series ends (a lock, if any, stays).
    pub async fn record_pin_success(&self, contract: &str, now_ms: i64) -> Result<(), StoreError> {
        self.update_pin_lock(contract, now_ms, |l| l.record_success(now_ms), None)
            .await
            .map(|_| ())
    }

    /// An operator clears the lock and the failures; returns the state
    /// before. The failures stay on record, marked cleared and by whom.
    pub async fn clear_pin_lock(
        &self,
        contract: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<PinLock, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT * FROM pin_locks WHERE contract = $1")
            .bind(contract)
            .fetch_optional(&mut *tx)
            .await?;
        let before = match &row {
            Some(r) => lock_of(r)?.0,
            None => PinLock::default(),
        };
        sqlx::query("DELETE FROM pin_locks WHERE contract = $1")
            .bind(contract)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE pin_failures SET cleared_ms = $1, cleared_by = $2 WHERE contract = $3 AND cleared_ms IS NULL",
        )
        .bind(now_ms)
        .bind(by)
        .bind(contract)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// Wrong PINs by contact since `since_ms` that no operator cleared.
    pub async fn pin_failures_by_contact(
        &self,
        contract: &str,
        since_ms: i64,
    ) -> Result<Vec<ContactFailures>, StoreError> {
        let rows = sqlx::query(
            "SELECT contact, COUNT(*) AS n, MAX(at_ms) AS last FROM pin_failures \
             WHERE contract = $1 AND at_ms >= $2 AND cleared_ms IS NULL GROUP BY contact ORDER BY contact",
        )
        .bind(contract)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ContactFailures {
                    contact: r.try_get("contact")?,
                    failures: r.try_get("n")?,
                    last_ms: r.try_get("last")?,
                })
            })
            .collect()
    }
}

//! The PIN lockout policy of a contract, sans-IO: how wrong PINs add up
//! and when actions are locked. The state lives in the database (one row
//! per contract) so the lock holds across calls, notifications and
//! restarts; this module only decides, with an explicit `now_ms` (Unix
//! epoch milliseconds).
//!
//! Call order: read the stored [`PinLock`] (or [`PinLock::default`]);
//! ask [`PinLock::is_locked`] / [`PinLock::failures_at`] before a call
//! offers PIN entry; on a wrong PIN call [`PinLock::record_failure`] and
//! store the result; on a right one [`PinLock::record_success`].

use std::time::Duration;

/// One contract's series of wrong PINs and its lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PinLock {
    /// Wrong PINs in the current series.
    pub failures: u32,
    /// When the current series began (its first failure).
    pub since_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    /// Actions are locked until then.
    pub locked_until_ms: Option<i64>,
    /// When the lock began.
    pub locked_at_ms: Option<i64>,
}

/// What recording a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureResult {
    /// Locked after this failure.
    pub locked: bool,
    /// This failure started the lock (it was not locked before).
    pub newly_locked: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PinLock {
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|t| now_ms < t)
    }

    /// The series is over: its lock ran out, or (never locked) its last
    /// failure is older than `lockout`, so an old typo does not count
    /// towards a lock weeks later.
    fn expired(&self, now_ms: i64, lockout: Duration) -> bool {
        match (self.locked_until_ms, self.last_failure_ms) {
            (Some(until), _) => now_ms >= until,
            (None, Some(last)) => now_ms.saturating_sub(last) >= ms(lockout),
            (None, None) => true,
        }
    }

    /// Wrong PINs that still count at `now_ms`.
    pub fn failures_at(&self, now_ms: i64, lockout: Duration) -> u32 {
        if self.expired(now_ms, lockout) {
            0
        } else {
            self.failures
        }
    }

    /// A wrong PIN at `now_ms`. Reaching `max_attempts` locks actions for
    /// `lockout`; a failure while locked (a concurrent call) is counted
    /// but does not extend the lock, so the operator sees a fixed end.
    pub fn record_failure(
        &mut self,
        now_ms: i64,
        max_attempts: u32,
        lockout: Duration,
    ) -> FailureResult {
        let was_locked = self.is_locked(now_ms);
        if !was_locked && self.expired(now_ms, lockout) {
            *self = PinLock::default();
        }
        self.failures = self.failures.saturating_add(1);
        self.since_ms.get_or_insert(now_ms);
        self.last_failure_ms = Some(now_ms);
        if !was_locked && self.failures >= max_attempts.max(1) {
            self.locked_at_ms = Some(now_ms);
            self.locked_until_ms = Some(now_ms.saturating_add(ms(lockout)));
        }
        FailureResult {
            locked: self.is_locked(now_ms),
            newly_locked: !was_locked && self.is_locked(now_ms),
        }
    }

    /// A right PIN ends the series (only possible while not locked).
    pub fn record_success(&mut self, now_ms: i64) {
        if !self.is_locked(now_ms) {
            *self = PinLock::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKOUT: Duration = Duration::from_secs(15 * 60);
    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn three_failures_lock_for_the_lockout_then_it_runs_out() {
        let mut p = PinLock::default();
        assert!(!p.record_failure(T0, 3, LOCKOUT).locked);
        assert!(!p.record_failure(T0 + 1_000, 3, LOCKOUT).locked);
        let r = p.record_failure(T0 + 2_000, 3, LOCKOUT);
        assert_eq!(
            r,
            FailureResult {
                locked: true,
                newly_locked: true
            }
        );
        assert_eq!(p.locked_until_ms, Some(T0 + 2_000 + 900_000));
        assert!(p.is_locked(T0 + 2_000 + 899_999));
        assert!(!p.is_locked(T0 + 2_000 + 900_000));
        // After the lock, the count starts again from nothing.
        assert_eq!(p.failures_at(T0 + 2_000 + 900_000, LOCKOUT), 0);
        let r = p.record_failure(T0 + 2_000 + 900_000, 3, LOCKOUT);
        assert!(!r.locked);
        assert_eq!(p.failures, 1);
    }

    #[test]
    fn failures_while_locked_count_but_do_not_extend_it() {
        let mut p = PinLock::default();
        for i in 0..3 {
            p.record_failure(T0 + i, 3, LOCKOUT);
        }
        let until = p.locked_until_ms;
        let r = p.record_failure(T0 + 60_000, 3, LOCKOUT);
        assert_eq!(
            r,
            FailureResult {
                locked: true,
                newly_locked: false
            }
        );
        assert_eq!(p.failures, 4);
        assert_eq!(p.locked_until_ms, until);
    }

    #[test]
    fn failures_add_up_across_calls_until_they_are_old() {
        let mut p = PinLock::default();
        p.record_failure(T0, 3, LOCKOUT);
        p.record_failure(T0 + 600_000, 3, LOCKOUT);
        assert_eq!(p.failures_at(T0 + 600_000 + 899_999, LOCKOUT), 2);
        // A third within the window locks.
        let mut q = p;
        assert!(q.record_failure(T0 + 1_000_000, 3, LOCKOUT).locked);
        // The same third after a quiet lockout period starts afresh.
        assert_eq!(p.failures_at(T0 + 600_000 + 900_000, LOCKOUT), 0);
        assert!(!p.record_failure(T0 + 600_000 + 900_000, 3, LOCKOUT).locked);
        assert_eq!(p.failures, 1);
        assert_eq!(p.since_ms, Some(T0 + 600_000 + 900_000));
    }

    #[test]
    fn a_right_pin_ends_the_series_but_not_a_lock() {
        let mut p = PinLock::default();
        p.record_failure(T0, 3, LOCKOUT);
        p.record_success(T0 + 1);
        assert_eq!(p, PinLock::default());
        for i in 0..3 {
            p.record_failure(T0 + i, 3, LOCKOUT);
        }
        p.record_success(T0 + 10);
        assert!(p.is_locked(T0 + 10));
    }

    #[test]
    fn max_attempts_zero_is_treated_as_one() {
        let mut p = PinLock::default();
        assert!(p.record_failure(T0, 0, LOCKOUT).newly_locked);
    }
}

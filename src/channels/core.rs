//! Who gets a trunk's next free channel, and when the trunk may take a
//! new call at all: sans-IO, every time an explicit `now` in epoch ms (on
//! PostgreSQL the database's clock, so nodes whose clocks disagree still
//! share one bucket and one backoff).
//!
//! A trunk has at most `max_channels` calls up and starts at most
//! `max_cps` calls per second: new calls are spaced at least `1/max_cps`
//! apart (a token bucket holding one call), so no second, however it is
//! cut, sees more than `max_cps` starts. A bucket of a whole second's
//! worth would let a burst and the refill behind it put nearly twice as
//! many into one second. Waiting
//! calls are served strictly in (severity rank, notification age) order:
//! only the head of the queue may take a channel, so a critical call never
//! waits behind a minor one, and a minor one never overtakes a critical one
//! that is blocked by the same trunk-wide limit.
//!
//! A trunk that refuses a call because it is full (503, or 486/600 saying
//! so) backs off: no new call until its `Retry-After`, or 1 s doubling to
//! 60 s without one. A busy callee (a plain 486) is not the trunk's fault.

/// A trunk's limits (`[trunks.NAME] max_channels`, `max_cps`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_channels: Option<u32>,
    pub max_cps: Option<u32>,
}

impl Limits {
    /// Whether calls of this trunk go through the channel gate at all.
    pub fn gated(&self) -> bool {
        self.max_channels.is_some() || self.max_cps.is_some()
    }
}

/// First backoff without `Retry-After`; doubles per refusal in a row.
pub const BACKOFF_BASE_MS: i64 = 1_000;
/// Longest backoff without `Retry-After`.
pub const BACKOFF_MAX_MS: i64 = 60_000;
/// A `Retry-After` is honoured up to this long (a trunk asking for an
/// hour must not silence paging for an hour).
pub const RETRY_AFTER_MAX_MS: i64 = 300_000;

/// What a trunk remembers between calls (stored as one row per trunk on
/// PostgreSQL). All zero is a fresh trunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrunkState {
    /// The cps bucket, in thousandths of a call.
    pub tokens_milli: i64,
    /// When the bucket was last filled; 0: never used (full).
    pub refilled_ms: i64,
    /// No new call before this.
    pub backoff_until_ms: i64,
    /// Refusals in a row (for the doubling backoff).
    pub failures: u32,
}

/// A call waiting for a channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waiter {
    /// Severity rank, lower first (`service::admission::severity_rank`).
    pub rank: u8,
    /// The notification's creation time: the older goes first.
    pub created_ms: i64,
    pub id: String,
}

/// What [`TrunkState::dispatch`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// These waiters take a channel now, in order.
    pub grants: Vec<String>,
    /// Waiters are left and only time (the cps bucket or the backoff)
    /// holds them: try again at this time. `None` with waiters left: they
    /// wait for a channel to be released.
    pub retry_at_ms: Option<i64>,
}

/// Whether a final response says the trunk (not the callee) is full.
/// `reason` is the status phrase and any `Reason` header (RFC 3326).
pub fn trunk_full(code: u16, retry_after_s: Option<u32>, reason: &str) -> bool {
    match code {
        503 => true,
        486 | 600 => {
            if retry_after_s.is_some() {
                return true;
            }
            let r = reason.to_ascii_lowercase();
            // Q.850 34 no circuit/channel, 42 switching equipment
            // congestion, 47 resource unavailable.
            let q850 = ["cause=34", "cause=42", "cause=47"]
                .iter()
                .any(|c| r.replace(' ', "").contains(c));
            q850 || [
                "full", "congest", "capacity", "channel", "trunk", "limit", "overload",
            ]
            .iter()
            .any(|w| r.contains(w))
        }
        _ => false,
    }
}

impl TrunkState {
    fn refill(&mut self, limits: &Limits, now: i64) {
        let Some(cps) = limits.max_cps else { return };
        let cap = 1_000;
        if self.refilled_ms == 0 {
            self.tokens_milli = cap;
        } else if now > self.refilled_ms {
            // cps calls per 1000 ms = cps milli-calls per ms.
            let add = (now - self.refilled_ms).saturating_mul(i64::from(cps));
            self.tokens_milli = self.tokens_milli.saturating_add(add).min(cap);
        }
        self.refilled_ms = self.refilled_ms.max(now).max(1);
    }

    /// Hand free channels to the head of `waiters` (any order; sorted
    /// here), `in_use` channels being taken now.
    pub fn dispatch(
        &mut self,
        limits: &Limits,
        now: i64,
        in_use: usize,
        waiters: &[Waiter],
    ) -> Dispatch {
        let mut queue: Vec<&Waiter> = waiters.iter().collect();
        queue.sort();
        let mut out = Dispatch::default();
        if queue.is_empty() {
            return out;
        }
        if now < self.backoff_until_ms {
            out.retry_at_ms = Some(self.backoff_until_ms);
            return out;
        }
        self.refill(limits, now);
        let free = match limits.max_channels {
            Some(m) => (m as usize).saturating_sub(in_use),
            None => usize::MAX,
        };
        for w in queue.iter().take(free) {
            if limits.max_cps.is_some() && self.tokens_milli < 1_000 {
                let cps = i64::from(limits.max_cps.unwrap_or(1).max(1));
                // The time one whole call's worth of tokens takes.
                let missing = 1_000 - self.tokens_milli;
                out.retry_at_ms = Some(now + (missing + cps - 1) / cps);
                break;
            }
            if limits.max_cps.is_some() {
                self.tokens_milli -= 1_000;
            }
            out.grants.push(w.id.clone());
        }
        out
    }

    /// A call of this trunk ended with final response `code`. Returns the
    /// time new calls may start again when it is a trunk fault.
    pub fn refused(
        &mut self,
        now: i64,
        code: u16,
        retry_after_s: Option<u32>,
        reason: &str,
    ) -> Option<i64> {
        if !trunk_full(code, retry_after_s, reason) {
            return None;
        }
        let backing_off = now < self.backoff_until_ms;
        let until = match retry_after_s {
            Some(s) => now + (i64::from(s) * 1_000).clamp(1_000, RETRY_AFTER_MAX_MS),
            None => {
                // Calls that were already up when the first refusal came
                // are refused for the same reason: one step, not several.
                let step = if backing_off {
                    self.failures.max(1)
                } else {
                    self.failures + 1
                };
                let shift = (step - 1).min(16);
                now + (BACKOFF_BASE_MS << shift).min(BACKOFF_MAX_MS)
            }
        };
        if !backing_off {
            self.failures = self.failures.saturating_add(1);
        }
        self.backoff_until_ms = self.backoff_until_ms.max(until);
        Some(self.backoff_until_ms)
    }

    /// A call got through (rang or was answered): the trunk takes calls.
    pub fn got_through(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(rank: u8, created_ms: i64, id: &str) -> Waiter {
        Waiter {
            rank,
            created_ms,
            id: id.into(),
        }
    }

    const FOUR: Limits = Limits {
        max_channels: Some(4),
        max_cps: None,
    };

    #[test]
    fn free_channels_go_to_the_most_severe_then_the_oldest() {
        let mut s = TrunkState::default();
        let q = [
            w(3, 1, "minor-old"),
            w(0, 9, "crit-new"),
            w(3, 2, "minor-newer"),
            w(0, 5, "crit-old"),
            w(1, 1, "major"),
        ];
        let d = s.dispatch(&FOUR, 1_000, 1, &q);
        assert_eq!(d.grants, ["crit-old", "crit-new", "major"]);
        assert_eq!(d.retry_at_ms, None);
        // Full: nobody, not even a critical one, and no timer (a release
        // wakes them).
        let d = s.dispatch(&FOUR, 1_001, 4, &[w(0, 1, "c")]);
        assert!(d.grants.is_empty() && d.retry_at_ms.is_none());
        assert_eq!(
            s.dispatch(&FOUR, 1_002, 0, &[]),
            Dispatch::default(),
            "nobody waiting"
        );
    }

    #[test]
    fn the_cps_bucket_spaces_calls_and_holds_the_queue_in_order() {
        let l = Limits {
            max_channels: Some(100),
            max_cps: Some(2),
        };
        let mut s = TrunkState::default();
        let q: Vec<Waiter> = (0..5).map(|i| w(2, i, &format!("n{i}"))).collect();
        let d = s.dispatch(&l, 10_000, 0, &q);
        assert_eq!(d.grants, ["n0"]);
        assert_eq!(d.retry_at_ms, Some(10_500), "one call per 500 ms");
        // Too early: nothing; the retry time is unchanged.
        let d = s.dispatch(&l, 10_499, 1, &q[1..]);
        assert!(d.grants.is_empty());
        assert_eq!(d.retry_at_ms, Some(10_500));
        let d = s.dispatch(&l, 10_500, 1, &q[1..]);
        assert_eq!(d.grants, ["n1"]);
        // A long pause fills the bucket to one call, no more.
        let d = s.dispatch(&l, 60_000, 2, &q[2..]);
        assert_eq!(d.grants, ["n2"]);
        assert_eq!(d.retry_at_ms, Some(60_500));
        // The most severe newcomer is next, whatever waited longer.
        let mut rest = q[3..].to_vec();
        rest.push(w(0, 99, "late-critical"));
        let d = s.dispatch(&l, 60_500, 3, &rest);
        assert_eq!(d.grants, ["late-critical"]);
    }

    #[test]
    fn in_any_second_at_most_max_cps_calls_start() {
        let l = Limits {
            max_channels: None,
            max_cps: Some(3),
        };
        let mut s = TrunkState::default();
        let mut starts = Vec::new();
        let mut now = 5_000;
        let mut n = 0;
        // Everyone retries at exactly the time they are told to.
        while starts.len() < 30 {
            let q: Vec<Waiter> = (n..n + 10).map(|i| w(2, i, &format!("{i}"))).collect();
            let d = s.dispatch(&l, now, 0, &q);
            n += d.grants.len() as i64;
            starts.extend(d.grants.iter().map(|_| now));
            now = d.retry_at_ms.unwrap();
        }
        for (i, t) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().take_while(|u| **u < t + 1_000).count();
            assert!(in_window <= 3, "{in_window} starts within 1 s of {t}");
        }
    }

    #[test]
    fn a_full_trunk_backs_off_by_retry_after_else_doubling() {
        let mut s = TrunkState::default();
        let q = [w(0, 1, "c")];
        assert_eq!(
            s.refused(1_000, 503, Some(3), "Service Unavailable"),
            Some(4_000)
        );
        let d = s.dispatch(&FOUR, 3_999, 0, &q);
        assert!(d.grants.is_empty());
        assert_eq!(d.retry_at_ms, Some(4_000));
        assert_eq!(s.dispatch(&FOUR, 4_000, 0, &q).grants, ["c"]);
        // Without Retry-After: 1 s, 2 s, 4 s ... (the 503 above was the
        // first refusal in a row).
        assert_eq!(s.refused(10_000, 503, None, ""), Some(12_000));
        assert_eq!(s.refused(20_000, 503, None, ""), Some(24_000));
        // Calls up during the backoff refused too: the same step.
        assert_eq!(s.refused(20_500, 503, None, ""), Some(24_500));
        assert_eq!(s.failures, 3);
        for _ in 0..20 {
            let now = s.backoff_until_ms;
            s.refused(now, 503, None, "");
        }
        let now = s.backoff_until_ms;
        assert_eq!(s.refused(now, 503, None, ""), Some(now + BACKOFF_MAX_MS));
        // A call that got through resets the doubling.
        s.got_through();
        let now = s.backoff_until_ms;
        assert_eq!(s.refused(now, 503, None, ""), Some(now + 1_000));
        // An absurd Retry-After is capped.
        let mut s = TrunkState::default();
        assert_eq!(
            s.refused(0, 503, Some(86_400), ""),
            Some(RETRY_AFTER_MAX_MS)
        );
    }

    #[test]
    fn a_busy_callee_is_not_a_full_trunk() {
        let mut s = TrunkState::default();
        assert_eq!(s.refused(0, 486, None, "Busy Here"), None);
        assert_eq!(s.refused(0, 404, None, "Not Found"), None);
        assert_eq!(s.refused(0, 480, Some(10), ""), None);
        assert_eq!(s.backoff_until_ms, 0);
        assert!(trunk_full(
            486,
            None,
            "Busy Here; Q.850;cause=34;text=\"No circuit/channel available\""
        ));
        assert!(trunk_full(486, None, "Trunk Full"));
        assert!(trunk_full(486, Some(5), "Busy Here"));
        assert!(trunk_full(600, None, "Q.850 ; cause=42"));
        assert!(!trunk_full(486, None, "Busy Here; Q.850;cause=17"));
        assert!(trunk_full(503, None, ""));
    }

    #[test]
    fn a_clock_going_back_never_adds_tokens() {
        let l = Limits {
            max_channels: None,
            max_cps: Some(1),
        };
        let mut s = TrunkState::default();
        assert_eq!(s.dispatch(&l, 10_000, 0, &[w(1, 1, "a")]).grants, ["a"]);
        let d = s.dispatch(&l, 5_000, 0, &[w(1, 2, "b")]);
        assert!(d.grants.is_empty());
        assert_eq!(s.dispatch(&l, 11_000, 0, &[w(1, 2, "b")]).grants, ["b"]);
    }
}

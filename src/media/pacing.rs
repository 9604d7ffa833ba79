//! When each call's next packet goes out. Every call sends one packet per
//! 20 ms, but not all at the same instant: each call has one of
//! [`SLOTS`] sub-ticks of the interval, so with 2,000 calls a wake-up sends
//! about a hundred packets instead of all of them. A call's spacing then
//! depends on how long its own slot's burst takes, not on the whole
//! burst's length, which varies with the machine's load.
//!
//! Sans-IO: fed with the time since the clock's origin, it says which
//! slots are due; the media thread sends.

use std::time::Duration;

/// Sub-ticks per packet interval.
pub const SLOTS: usize = 20;
/// One packet interval.
pub const PTIME: Duration = Duration::from_millis(20);
/// After a stall, at most this many packets per call are sent at once: a
/// far end's jitter buffer cannot use a burst of old audio.
pub const MAX_CATCH_UP: u64 = 5;

fn sub_tick() -> Duration {
    PTIME / SLOTS as u32
}

/// The slots' occupancy and how far the clock has gone.
#[derive(Debug, Clone)]
pub struct Pacer {
    load: [usize; SLOTS],
    /// Sub-ticks handled so far (the first is number 1, at one
    /// sub-tick after the origin).
    done: u64,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            load: [0; SLOTS],
            done: 0,
        }
    }

    /// A slot for a new call, `elapsed` since the origin: the least used,
    /// so the bursts stay even. The first call after an idle spell starts
    /// the count afresh: the idle sub-ticks are not owed to it.
    pub fn assign(&mut self, elapsed: Duration) -> usize {
        if self.load.iter().all(|&n| n == 0) {
            self.done = self.done.max(Pacer::sub_ticks(elapsed));
        }
        let slot = (0..SLOTS).min_by_key(|&s| (self.load[s], s)).unwrap_or(0);
        self.load[slot] += 1;
        slot
    }

    /// A call has ended.
    pub fn release(&mut self, slot: usize) {
        if let Some(n) = self.load.get_mut(slot) {
            *n = n.saturating_sub(1);
        }
    }

    /// When the next slot with a call in it is due, as time since the
    /// origin; `None` with no call at all.
    pub fn next_due(&self) -> Option<Duration> {
        (1..=SLOTS as u64)
            .map(|k| self.done + k)
            .find(|s| self.load[(s % SLOTS as u64) as usize] > 0)
            .map(|s| Duration::from_nanos(s.saturating_mul(sub_tick().as_nanos() as u64)))
    }

    fn sub_ticks(elapsed: Duration) -> u64 {
        (elapsed.as_nanos() / sub_tick().as_nanos()) as u64
    }

    /// The slots due at `elapsed` since the origin, in order (a slot more
    /// than once after a stall of over one interval, at most
    /// [`MAX_CATCH_UP`] times). Marks them done.
    pub fn due(&mut self, elapsed: Duration) -> Vec<usize> {
        let now = Pacer::sub_ticks(elapsed);
        if now <= self.done {
            return Vec::new();
        }
        let from = (self.done + 1).max(now.saturating_sub(MAX_CATCH_UP * SLOTS as u64) + 1);
        self.done = now;
        (from..=now)
            .map(|s| (s % SLOTS as u64) as usize)
            .filter(|&slot| self.load[slot] > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn calls_are_spread_evenly_over_the_slots() {
        let mut p = Pacer::new();
        let slots: Vec<usize> = (0..2000).map(|_| p.assign(ms(0))).collect();
        for s in 0..SLOTS {
            assert_eq!(slots.iter().filter(|&&x| x == s).count(), 100);
        }
        // A freed slot is the next one used.
        p.release(7);
        assert_eq!(p.assign(ms(0)), 7);
    }

    #[test]
    fn each_slot_is_due_once_per_interval_at_its_own_millisecond() {
        let mut p = Pacer::new();
        let (a, b) = (p.assign(ms(0)), p.assign(ms(0)));
        assert_eq!((a, b), (0, 1));
        // Slot 1 at 1 ms, slot 0 at 20 ms (sub-tick 20), then 21 ms, 40 ms...
        assert_eq!(p.next_due(), Some(ms(1)));
        assert_eq!(p.due(ms(1)), vec![1]);
        assert!(p.due(ms(1)).is_empty(), "not twice");
        assert_eq!(p.next_due(), Some(ms(20)));
        assert!(p.due(ms(19)).is_empty());
        assert_eq!(p.due(ms(20)), vec![0]);
        assert_eq!(p.due(ms(21)), vec![1]);
        let mut sent = [0; 2];
        for t in 22..=221 {
            for s in p.due(ms(t)) {
                sent[s] += 1;
            }
        }
        assert_eq!(sent, [10, 10], "one packet per call per 20 ms");
    }

    #[test]
    fn a_stall_catches_up_a_little_in_order_and_never_floods() {
        let mut p = Pacer::new();
        let (a, b) = (p.assign(ms(0)), p.assign(ms(0)));
        // 45 ms late: sub-ticks 1..=45 are due, slots 1, 0 (20), 1 (21), 0 (40), 1 (41).
        assert_eq!(p.due(ms(45)), vec![b, a, b, a, b]);
        // A stall of a second: at most MAX_CATCH_UP packets per call.
        let late = p.due(ms(1045));
        assert_eq!(
            late.iter().filter(|&&s| s == a).count() as u64,
            MAX_CATCH_UP
        );
        assert_eq!(
            late.iter().filter(|&&s| s == b).count() as u64,
            MAX_CATCH_UP
        );
    }

    #[test]
    fn with_no_call_nothing_is_due_and_a_late_first_call_starts_fresh() {
        let mut p = Pacer::new();
        assert_eq!(p.next_due(), None);
        // The media thread sleeps with no call: no `due` during the idle
        // ten seconds. The call added then is owed no packet for them.
        let s = p.assign(ms(10_000));
        assert_eq!(s, 0);
        assert_eq!(p.next_due(), Some(ms(10_020)));
        assert_eq!(p.due(ms(10_003)), Vec::<usize>::new());
        assert_eq!(p.due(ms(10_020)), vec![s]);
        // A second call while the first is up keeps the count.
        let t = p.assign(ms(10_021));
        assert_eq!(t, 1);
        assert_eq!(p.due(ms(10_021)), vec![t]);
    }

    #[test]
    fn fifty_days_up_the_next_slot_is_still_in_the_future() {
        let mut p = Pacer::new();
        let fifty_days = Duration::from_secs(50 * 86_400);
        let s = p.assign(fifty_days);
        let next = p.next_due().unwrap();
        assert!(next > fifty_days && next <= fifty_days + PTIME, "{next:?}");
        assert_eq!(p.due(next), vec![s]);
    }
}

//! Deadlines by key in a binary heap with lazy deletion. Sans-IO.
//!
//! The endpoint used to find its next wake-up by scanning every call and
//! every remembered response on each loop pass, so a flood that filled the
//! response memory made each datagram cost O(entries) (issue 13, item 9).
//! Here setting, clearing and popping a deadline cost O(log n) and reading
//! the earliest one O(1), whatever the number of entries.
//!
//! Call order: [`TimerHeap::set`] / [`TimerHeap::clear`] whenever a key's
//! deadline changes; [`TimerHeap::next`] for when to wake; after waking,
//! [`TimerHeap::pop_due`] until it returns `None`.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// One pushed deadline. Stale when the key has since been set again
/// (another generation) or cleared; stale entries are skipped on the way
/// out instead of being searched for and removed.
#[derive(Debug)]
struct Entry<K> {
    at: Instant,
    generation: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.generation) == (o.at, o.generation)
    }
}
impl<K> Eq for Entry<K> {}
impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<K> Ord for Entry<K> {
    /// Reversed, so `BinaryHeap` (a max-heap) yields the earliest first;
    /// generations are unique, so keys never need comparing.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.generation).cmp(&(self.at, self.generation))
    }
}

/// At most one live deadline per key. `S` hashes the keys: SipHash by
/// default (keys a peer chooses), a faster one where callout makes the
/// keys itself (see `Endpoint`).
#[derive(Debug)]
pub struct TimerHeap<K, S = RandomState> {
    heap: BinaryHeap<Entry<K>>,
    live: HashMap<K, (Instant, u64), S>,
    generation: u64,
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Default> Default for TimerHeap<K, S> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            live: HashMap::default(),
            generation: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> TimerHeap<K> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> TimerHeap<K, S> {
    /// Set (or with `None`, clear) `key`'s deadline. Setting the same
    /// deadline again pushes nothing.
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        let Some(at) = at else {
            self.clear(&key);
            return;
        };
        if self.live.get(&key).is_some_and(|(t, _)| *t == at) {
            return;
        }
        self.generation += 1;
        self.live.insert(key.clone(), (at, self.generation));
        self.heap.push(Entry {
            at,
            generation: self.generation,
            key,
        });
        self.tidy();
    }

    pub fn clear(&mut self, key: &K) {
        if self.live.remove(key).is_some() {
            self.tidy();
        }
    }

    /// The earliest live deadline. O(1): [`Self::tidy`] keeps a live entry
    /// on top after every change.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The key whose deadline is earliest, with that deadline, if it is
    /// at or before `now`; its deadline is cleared.
    pub fn pop_due(&mut self, now: Instant) -> Option<(K, Instant)> {
        if self.next()? > now {
            return None;
        }
        self.pop_earliest()
    }

    /// The key with the earliest deadline, whenever that is (to evict
    /// the oldest entry of a full table).
    pub fn pop_earliest(&mut self) -> Option<(K, Instant)> {
        let e = self.heap.pop()?;
        self.live.remove(&e.key);
        self.tidy();
        Some((e.key, e.at))
    }

    /// Keys with a live deadline.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn deadline(&self, key: &K) -> Option<Instant> {
        self.live.get(key).map(|(t, _)| *t)
    }

    /// Drop stale entries from the top, and rebuild when stale entries
    /// outnumber live ones (keys re-armed far ahead, e.g. a call's 32 s
    /// Timer B moved on every response), so memory stays O(live).
    fn tidy(&mut self) {
        if self.heap.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.heap
                .retain(|e| live.get(&e.key).is_some_and(|(_, g)| *g == e.generation));
        }
        while let Some(top) = self.heap.peek() {
            match self.live.get(&top.key) {
                Some((_, g)) if *g == top.generation => break,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut h = TimerHeap::new();
        h.set("b", Some(ms(t0, 20)));
        h.set("a", Some(ms(t0, 10)));
        h.set("c", Some(ms(t0, 30)));
        assert_eq!(h.next(), Some(ms(t0, 10)));
        assert_eq!(h.pop_due(ms(t0, 9)), None);
        assert_eq!(h.pop_due(ms(t0, 25)), Some(("a", ms(t0, 10))));
        assert_eq!(h.pop_due(ms(t0, 25)), Some(("b", ms(t0, 20))));
        assert_eq!(h.pop_due(ms(t0, 25)), None);
        assert_eq!(h.next(), Some(ms(t0, 30)));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn moved_and_cleared_deadlines_are_skipped_lazily() {
        let t0 = Instant::now();
        let mut h = TimerHeap::new();
        h.set(1, Some(ms(t0, 10)));
        h.set(2, Some(ms(t0, 15)));
        // Moved later: the old entry must not fire.
        h.set(1, Some(ms(t0, 50)));
        assert_eq!(h.next(), Some(ms(t0, 15)));
        h.clear(&2);
        assert_eq!(h.next(), Some(ms(t0, 50)));
        assert_eq!(h.pop_due(ms(t0, 40)), None);
        assert_eq!(h.pop_due(ms(t0, 50)), Some((1, ms(t0, 50))));
        assert!(h.is_empty());
        assert_eq!(h.next(), None);
        // Moved earlier works too.
        h.set(3, Some(ms(t0, 90)));
        h.set(3, Some(ms(t0, 60)));
        assert_eq!(h.deadline(&3), Some(ms(t0, 60)));
        assert_eq!(h.pop_due(ms(t0, 60)), Some((3, ms(t0, 60))));
        assert_eq!(h.pop_due(ms(t0, 1000)), None);
    }

    #[test]
    fn stale_entries_do_not_accumulate() {
        let t0 = Instant::now();
        let mut h = TimerHeap::new();
        h.set(0u32, Some(ms(t0, 1)));
        // One key re-armed far ahead 100,000 times, never reaching the top.
        for i in 0..100_000u64 {
            h.set(1u32, Some(ms(t0, 32_000 + i)));
        }
        assert!(h.heap_len() <= 2 * h.len() + 65, "{}", h.heap_len());
        assert_eq!(h.pop_due(ms(t0, 1)), Some((0, ms(t0, 1))));
        assert_eq!(h.next(), Some(ms(t0, 32_000 + 99_999)));
    }

    #[test]
    fn earliest_pops_whatever_now_is() {
        let t0 = Instant::now();
        let mut h = TimerHeap::new();
        for i in 0..10u64 {
            h.set(i, Some(ms(t0, 100 - i)));
        }
        assert_eq!(h.pop_earliest(), Some((9, ms(t0, 91))));
        assert_eq!(h.len(), 9);
    }
}

//! The decisions of the store writer, without I/O: where a new write
//! goes (memory or the journal file), which write is applied next, when a
//! failed one is tried again, and what is durable. Time is an explicit
//! epoch-ms `now`, so the retry schedule is tested without sleeping.
//!
//! Writes form one FIFO: the journal's unapplied entries first, then the
//! memory queue. Every rule below keeps that order:
//! - a new write goes to memory only while the store is healthy, the
//!   journal holds nothing unapplied and memory has room; otherwise the
//!   whole memory queue and the new write are appended to the journal
//!   together ([`Route::Spill`]);
//! - when the store fails, what is in memory is spilled too, so it
//!   survives a crash ([`WriteQueue::should_spill`]);
//! - a journal append that fails puts everything back in memory, behind
//!   the journal, and the journal is not tried again for a while.
//!
//! Order of calls for the driver: [`WriteQueue::route`] then either
//! [`WriteQueue::push_memory`] or ([`WriteQueue::take_memory`], append,
//! [`WriteQueue::journaled`] / [`WriteQueue::restore_memory`]);
//! [`WriteQueue::poll`] for the next step, then [`WriteQueue::applied`]
//! or [`WriteQueue::failed`].

use std::collections::{HashMap, VecDeque};

/// A write the queue can order: a process-wide sequence number (strictly
/// increasing in submission order) and the notification it belongs to.
pub trait Queued {
    fn seq(&self) -> u64;
    fn owner(&self) -> &str;
}

/// Where a new write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Into memory ([`WriteQueue::push_memory`]).
    Memory,
    /// To the journal, behind everything in memory
    /// ([`WriteQueue::take_memory`]).
    Spill,
}

/// Where the next write to apply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The oldest unapplied journal entry.
    Journal,
    /// The front of the memory queue ([`WriteQueue::head_memory`]).
    Memory,
}

/// What the writer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Apply(Head),
    /// The last try failed: try again at this time (epoch ms).
    Wait(i64),
    /// Nothing to write.
    Idle,
}

/// First retry after a failed write; doubles up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: i64 = 200;
/// The longest pause between two tries: an outage that ends is noticed
/// within this long.
pub const MAX_BACKOFF_MS: i64 = 5_000;
/// After the journal file could not be written (disk full), it is not
/// tried again for this long; writes stay in memory meanwhile.
pub const JOURNAL_RETRY_MS: i64 = 1_000;

/// The ordered queue of store writes.
#[derive(Debug)]
pub struct WriteQueue<T> {
    cap: usize,
    memory: VecDeque<T>,
    /// (seq, owner) of each unapplied journal entry, oldest first.
    journal: VecDeque<(u64, String)>,
    /// Consecutive failed tries; 0 while the store is healthy.
    failures: u32,
    retry_at: i64,
    journal_broken_until: i64,
    applied_upto: u64,
    journaled_upto: u64,
    /// Unapplied writes per notification (memory and journal).
    owners: HashMap<String, usize>,
}

impl<T: Queued> WriteQueue<T> {
    /// An empty queue holding at most `cap` writes in memory while the
    /// journal works, resuming the journal's unapplied `entries` (from a
    /// previous run).
    pub fn new(cap: usize, entries: Vec<(u64, String)>) -> WriteQueue<T> {
        let mut q = WriteQueue {
            cap: cap.max(1),
            memory: VecDeque::new(),
            journal: VecDeque::new(),
            failures: 0,
            retry_at: 0,
            journal_broken_until: 0,
            applied_upto: 0,
            journaled_upto: 0,
            owners: HashMap::new(),
        };
        for (seq, owner) in entries {
            q.journaled_upto = q.journaled_upto.max(seq);
            *q.owners.entry(owner.clone()).or_default() += 1;
            q.journal.push_back((seq, owner));
        }
        q
    }

    /// Where a new write goes now.
    pub fn route(&self, now: i64) -> Route {
        let journal_usable = now >= self.journal_broken_until;
        let want_disk = self.failing() || !self.journal.is_empty() || self.memory.len() >= self.cap;
        if want_disk && journal_usable {
            Route::Spill
        } else {
            // The journal is broken: memory beyond `cap` rather than a lost
            // write. Behind the journal's entries, so order holds.
            Route::Memory
        }
    }

    /// Queue a write in memory.
    pub fn push_memory(&mut self, item: T) {
        *self.owners.entry(item.owner().to_string()).or_default() += 1;
        self.memory.push_back(item);
    }

    /// Everything in memory, oldest first, for the driver to append to the
    /// journal (followed by the new write, if any). Ownership counts are
    /// kept: the writes are still pending.
    pub fn take_memory(&mut self) -> Vec<T> {
        self.memory.drain(..).collect()
    }

    /// These writes (in order) are now in the journal. `new` says the last
    /// one was not counted yet (it came through [`WriteQueue::route`]).
    pub fn journaled(&mut self, entries: &[(u64, String)], new: bool) {
        for (i, (seq, owner)) in entries.iter().enumerate() {
            if new && i + 1 == entries.len() {
                *self.owners.entry(owner.clone()).or_default() += 1;
            }
            self.journaled_upto = self.journaled_upto.max(*seq);
            self.journal.push_back((*seq, owner.clone()));
        }
    }

    /// The journal append failed: the writes go back into memory in their
    /// order (the new one, not counted yet, last) and the journal rests.
    pub fn restore_memory(&mut self, items: Vec<T>, new: Option<T>, now: i64) {
        for item in items.into_iter().rev() {
            self.memory.push_front(item);
        }
        if let Some(item) = new {
            self.push_memory(item);
        }
        self.journal_broken_until = now + JOURNAL_RETRY_MS;
    }

    /// Whether the memory queue should be spilled to the journal now: the
    /// store is failing, so those writes would be lost by a crash.
    pub fn should_spill(&self, now: i64) -> bool {
        self.failing() && !self.memory.is_empty() && now >= self.journal_broken_until
    }

    /// The next step for the writer.
    pub fn poll(&self, now: i64) -> Next {
        if self.journal.is_empty() && self.memory.is_empty() {
            return Next::Idle;
        }
        if self.failures > 0 && now < self.retry_at {
            return Next::Wait(self.retry_at);
        }
        if self.journal.is_empty() {
            Next::Apply(Head::Memory)
        } else {
            Next::Apply(Head::Journal)
        }
    }

    /// The write at the memory front (the one [`Head::Memory`] means).
    pub fn head_memory(&self) -> Option<&T> {
        self.memory.front()
    }

    /// Up to `max` writes from the memory front, oldest first: a group
    /// the driver may apply in one transaction, then mark
    /// [`WriteQueue::applied`] one by one in this order.
    pub fn head_memory_group(&self, max: usize) -> impl Iterator<Item = &T> {
        self.memory.iter().take(max.max(1))
    }

    /// The seq of the oldest unapplied journal entry.
    pub fn head_journal(&self) -> Option<u64> {
        self.journal.front().map(|(s, _)| *s)
    }

    /// The write `seq` is in the store. Returns where it was taken from:
    /// a memory write may have been spilled while it was being applied,
    /// and then its journal copy is the one consumed.
    pub fn applied(&mut self, seq: u64) -> Option<Head> {
        let from = if self.journal.front().is_some_and(|(s, _)| *s == seq) {
            let (_, owner) = self.journal.pop_front()?;
            self.release(&owner);
            Head::Journal
        } else if self.memory.front().is_some_and(|i| i.seq() == seq) {
            let item = self.memory.pop_front()?;
            self.release(item.owner());
            Head::Memory
        } else {
            return None;
        };
        self.failures = 0;
        self.retry_at = 0;
        self.applied_upto = self.applied_upto.max(seq);
        Some(from)
    }

    /// A try failed: the same write is tried again after a backoff.
    pub fn failed(&mut self, now: i64) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = now + backoff_ms(self.failures);
    }

    fn release(&mut self, owner: &str) {
        if let Some(n) = self.owners.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// The last try failed (until one succeeds).
    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Every write with a seq up to this is in the store or the journal.
    pub fn durable_upto(&self) -> u64 {
        self.applied_upto.max(self.journaled_upto)
    }

    /// Writes not yet in the store.
    pub fn pending(&self) -> usize {
        self.memory.len() + self.journal.len()
    }

    /// Of those, how many are in the journal.
    pub fn in_journal(&self) -> usize {
        self.journal.len()
    }

    /// Whether a notification has writes not yet in the store.
    pub fn owns(&self, owner: &str) -> bool {
        self.owners.contains_key(owner)
    }
}

/// Pause before try `failures + 1`: 200 ms, doubling, at most 5 s.
pub fn backoff_ms(failures: u32) -> i64 {
    let shift = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF_MS << shift).min(MAX_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct W(u64, &'static str);

    impl Queued for W {
        fn seq(&self) -> u64 {
            self.0
        }
        fn owner(&self) -> &str {
            self.1
        }
    }

    /// A driver with an in-memory "journal" and "store", to check the
    /// order in which writes land whatever happens.
    struct Sim {
        q: WriteQueue<W>,
        journal: Vec<W>,
        journal_read: usize,
        journal_ok: bool,
        store: Vec<u64>,
        store_ok: bool,
        next: u64,
    }

    impl Sim {
        fn new(cap: usize) -> Sim {
            Sim {
                q: WriteQueue::new(cap, Vec::new()),
                journal: Vec::new(),
                journal_read: 0,
                journal_ok: true,
                store: Vec::new(),
                store_ok: true,
                next: 1,
            }
        }

        fn submit(&mut self, owner: &'static str, now: i64) {
            let w = W(self.next, owner);
            self.next += 1;
            match self.q.route(now) {
                Route::Memory => self.q.push_memory(w),
                Route::Spill => {
                    let old = self.q.take_memory();
                    self.spill(old, Some(w), now);
                }
            }
        }

        fn spill(&mut self, old: Vec<W>, new: Option<W>, now: i64) {
            if self.journal_ok {
                let mut all = old.clone();
                all.extend(new.clone());
                let metas: Vec<_> = all.iter().map(|w| (w.0, w.1.to_string())).collect();
                self.journal.extend(all);
                self.q.journaled(&metas, new.is_some());
            } else {
                self.q.restore_memory(old, new, now);
            }
        }

        /// One writer step at `now`; returns what poll said.
        fn step(&mut self, now: i64) -> Next {
            if self.q.should_spill(now) {
                let old = self.q.take_memory();
                self.spill(old, None, now);
            }
            let next = self.q.poll(now);
            if let Next::Apply(head) = next {
                let w = match head {
                    Head::Journal => self.journal[self.journal_read].clone(),
                    Head::Memory => self.q.head_memory().unwrap().clone(),
                };
                if self.store_ok {
                    if !self.store.contains(&w.0) {
                        self.store.push(w.0);
                    }
                    if self.q.applied(w.0) == Some(Head::Journal) {
                        self.journal_read += 1;
                    }
                } else {
                    self.q.failed(now);
                }
            }
            next
        }

        fn drain(&mut self, mut now: i64) -> i64 {
            for _ in 0..1000 {
                match self.step(now) {
                    Next::Idle => return now,
                    Next::Wait(t) => now = t,
                    Next::Apply(_) => {}
                }
            }
            panic!("did not drain");
        }
    }

    #[test]
    fn healthy_store_writes_from_memory_in_order() {
        let mut s = Sim::new(8);
        for _ in 0..5 {
            s.submit("n1", 0);
        }
        assert!(s.q.owns("n1"));
        assert_eq!(s.q.durable_upto(), 0, "memory is not durable");
        s.drain(0);
        assert_eq!(s.store, vec![1, 2, 3, 4, 5]);
        assert!(s.journal.is_empty(), "nothing spilled while healthy");
        assert!(!s.q.owns("n1"));
        assert_eq!(s.q.durable_upto(), 5);
    }

    #[test]
    fn retry_schedule_doubles_to_five_seconds() {
        let got: Vec<i64> = (1..=8).map(backoff_ms).collect();
        assert_eq!(got, vec![200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        let mut s = Sim::new(8);
        s.store_ok = false;
        s.submit("n1", 0);
        assert_eq!(s.step(0), Next::Apply(Head::Memory));
        assert!(s.q.failing());
        assert_eq!(s.step(100), Next::Wait(200));
        assert_eq!(
            s.step(200),
            Next::Apply(Head::Journal),
            "spilled, then retried from the journal"
        );
        assert_eq!(s.step(300), Next::Wait(600));
        s.store_ok = true;
        assert_eq!(s.step(600), Next::Apply(Head::Journal));
        assert!(!s.q.failing());
        assert_eq!(s.step(600), Next::Idle);
        assert_eq!(s.store, vec![1]);
    }

    #[test]
    fn failing_store_spills_everything_and_keeps_order() {
        let mut s = Sim::new(8);
        s.submit("n1", 0);
        s.submit("n1", 0);
        s.store_ok = false;
        s.step(0);
        assert!(s.q.failing());
        assert_eq!(s.q.durable_upto(), 0, "nothing durable before the spill");
        // The next step spills memory: a crash now loses nothing.
        s.step(10);
        assert_eq!(s.q.in_journal(), 2);
        assert_eq!(s.q.durable_upto(), 2);
        // While failing, new writes go straight to the journal.
        for t in 0..5 {
            s.submit("n2", 20 + t);
            assert_eq!(s.q.durable_upto(), 3 + t as u64);
        }
        assert_eq!(s.q.pending(), 7);
        assert!(s.q.owns("n1") && s.q.owns("n2"));
        s.store_ok = true;
        let t = s.drain(1000);
        // Healthy again, but the journal is not empty until it is drained;
        // once drained, writes go to memory again.
        assert_eq!(s.store, vec![1, 2, 3, 4, 5, 6, 7]);
        s.submit("n3", t);
        assert_eq!(s.q.in_journal(), 0);
        assert_eq!(s.q.route(t), Route::Memory);
        s.drain(t);
        assert_eq!(s.store, (1..=8).collect::<Vec<_>>());
        assert!(!s.q.owns("n1") && !s.q.owns("n2") && !s.q.owns("n3"));
    }

    #[test]
    fn full_memory_spills_with_its_elders() {
        let mut s = Sim::new(3);
        for _ in 0..3 {
            s.submit("n1", 0);
        }
        assert_eq!(s.q.route(0), Route::Spill);
        s.submit("n1", 0);
        assert_eq!(
            s.journal.iter().map(|w| w.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(s.q.durable_upto(), 4);
        s.submit("n1", 0);
        assert_eq!(s.q.in_journal(), 5, "behind the journal, never in memory");
        s.drain(0);
        assert_eq!(s.store, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn broken_journal_keeps_writes_in_memory_in_order() {
        let mut s = Sim::new(2);
        s.store_ok = false;
        s.journal_ok = false;
        s.submit("n1", 0);
        s.step(0);
        // Memory beyond its bound: nothing is dropped.
        for _ in 0..5 {
            s.submit("n1", 10);
        }
        assert_eq!(s.q.pending(), 6);
        assert_eq!(s.q.in_journal(), 0);
        assert!(!s.q.should_spill(500), "the journal rests after a failure");
        // The disk has room again before the store returns.
        s.journal_ok = true;
        s.step(2000);
        assert_eq!(s.q.in_journal(), 6);
        s.submit("n1", 2001);
        s.store_ok = true;
        s.drain(10_000);
        assert_eq!(s.store, (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn a_write_spilled_while_being_applied_is_applied_once() {
        let mut q: WriteQueue<W> = WriteQueue::new(1, Vec::new());
        q.push_memory(W(1, "n1"));
        assert_eq!(q.poll(0), Next::Apply(Head::Memory));
        // While W(1) is in flight, W(2) finds memory full: both spill.
        assert_eq!(q.route(0), Route::Spill);
        let old = q.take_memory();
        assert_eq!(old, vec![W(1, "n1")]);
        q.journaled(&[(1, "n1".into()), (2, "n1".into())], true);
        // W(1) lands: its journal copy is consumed, W(2) is next.
        assert_eq!(q.applied(1), Some(Head::Journal));
        assert_eq!(q.head_journal(), Some(2));
        assert_eq!(q.applied(2), Some(Head::Journal));
        assert!(!q.owns("n1"));
        assert_eq!(q.poll(0), Next::Idle);
    }

    #[test]
    fn a_group_is_applied_in_order_even_if_spilled_meanwhile() {
        let mut q: WriteQueue<W> = WriteQueue::new(3, Vec::new());
        for i in 1..=3 {
            q.push_memory(W(i, "n1"));
        }
        let group: Vec<u64> = q.head_memory_group(8).map(|w| w.0).collect();
        assert_eq!(group, vec![1, 2, 3]);
        assert_eq!(q.head_memory_group(2).count(), 2);
        // While the group is in flight, a fourth write finds memory full:
        // everything spills, and the group lands from the journal.
        assert_eq!(q.route(0), Route::Spill);
        let old = q.take_memory();
        let metas: Vec<_> = old
            .iter()
            .map(|w| (w.0, w.1.to_string()))
            .chain([(4, "n1".to_string())])
            .collect();
        q.journaled(&metas, true);
        for seq in group {
            assert_eq!(q.applied(seq), Some(Head::Journal));
        }
        assert_eq!(q.durable_upto(), 4);
        assert_eq!(q.pending(), 1);
        assert_eq!(q.applied(4), Some(Head::Journal));
        assert!(!q.owns("n1"));
    }

    #[test]
    fn journal_left_by_a_crash_is_applied_first() {
        let mut q: WriteQueue<W> = WriteQueue::new(8, vec![(7, "old".into()), (8, "old".into())]);
        assert!(q.owns("old"));
        assert_eq!(q.durable_upto(), 8);
        assert_eq!(
            q.route(0),
            Route::Spill,
            "new writes queue behind the journal"
        );
        assert_eq!(q.poll(0), Next::Apply(Head::Journal));
        assert_eq!(q.applied(7), Some(Head::Journal));
        assert_eq!(q.applied(8), Some(Head::Journal));
        assert!(!q.owns("old"));
        assert_eq!(q.route(0), Route::Memory);
    }
}

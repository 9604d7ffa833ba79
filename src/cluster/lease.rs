//! What this node believes about the leases it holds, without I/O: when
//! each one runs out by the node's own clock, which ones a renewal
//! confirmed, and which ones are lost. Time is an explicit monotonic
//! `now` in ms (never the wall clock: the database's clock decides when
//! another node may take a lease, this node only has to give up sooner).
//!
//! A lease is lost when
//! - a renewal sent after the claim's answer came back did not return it
//!   with the same epoch (another node claimed it, or it ended); a
//!   renewal sent before then may have run before the claim committed (a
//!   batched accept waits for its batch's commit), so it says nothing, or
//! - no renewal succeeded for `ttl - margin` after the last one that was
//!   sent and confirmed it (the database is out of reach: another node may
//!   take it once `ttl` passes on the database, so this node stops first).

use std::collections::HashMap;

/// One held lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    epoch: i64,
    /// When the answer to the claim that gave it came back: a statement
    /// sent from then on runs after the claim's commit and sees it. (The
    /// deadline counts from when the claim was sent.)
    answered_at: i64,
    /// Give up at this time unless a renewal confirms it again.
    deadline: i64,
    /// When the latest statement the database answered with this epoch
    /// still holding the lease was sent (the claim, a renewal, a
    /// confirmation, or a fenced write of the store writer).
    seen_at: i64,
}

/// The leases this node holds.
#[derive(Debug)]
pub struct Leases {
    ttl_ms: i64,
    margin_ms: i64,
    held: HashMap<String, Held>,
}

impl Leases {
    /// `ttl_ms` as stored on the database; this node stops `margin_ms`
    /// before it ends.
    pub fn new(ttl_ms: i64, margin_ms: i64) -> Leases {
        Leases {
            ttl_ms: ttl_ms.max(1),
            margin_ms: margin_ms.clamp(0, ttl_ms.max(1) - 1),
            held: HashMap::new(),
        }
    }

    fn until(&self, sent_at: i64) -> i64 {
        sent_at + self.ttl_ms - self.margin_ms
    }

    /// A claim sent at `sent_at`, answered at `answered_at`, gave lease
    /// `id` with `epoch`.
    pub fn claimed(&mut self, id: &str, epoch: i64, sent_at: i64, answered_at: i64) {
        let h = Held {
            epoch,
            answered_at: answered_at.max(sent_at),
            deadline: self.until(sent_at),
            seen_at: sent_at,
        };
        self.held.insert(id.to_string(), h);
    }

    pub fn epoch(&self, id: &str) -> Option<i64> {
        self.held.get(id).map(|h| h.epoch)
    }

    /// When the claim of a held lease was answered.
    pub fn answered_at(&self, id: &str) -> Option<i64> {
        self.held.get(id).map(|h| h.answered_at)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }

    /// A single lease was confirmed by a write sent at `sent_at`.
    pub fn confirmed(&mut self, id: &str, epoch: i64, sent_at: i64) {
        let until = self.until(sent_at);
        if let Some(h) = self.held.get_mut(id).filter(|h| h.epoch == epoch) {
            h.deadline = h.deadline.max(until);
            h.seen_at = h.seen_at.max(sent_at);
        }
    }

    /// A write sent at `sent_at` found lease `id` still held with `epoch`
    /// on the database (the store writer's fence) without extending it:
    /// the deadline stays where the claim or the last renewal put it.
    pub fn seen(&mut self, id: &str, epoch: i64, sent_at: i64) {
        if let Some(h) = self.held.get_mut(id).filter(|h| h.epoch == epoch) {
            h.seen_at = h.seen_at.max(sent_at);
        }
    }

    /// Whether lease `id` is held at `now` (before its deadline) and the
    /// database said so in answer to a statement sent at `since` or
    /// later: then a dial needs no further round trip to be sure no other
    /// node owns the work (none can claim it before the deadline).
    /// At least half the usable lease must be left: with less, a dial
    /// asks the database again (and so renews it), for slack against a
    /// stalled host or a clock step that the local deadline cannot see.
    pub fn held_since(&self, id: &str, since: i64, now: i64) -> bool {
        let half = (self.ttl_ms - self.margin_ms) / 2;
        self.held
            .get(id)
            .is_some_and(|h| h.seen_at >= since && h.deadline - now >= half)
    }

    /// Forget a lease (its work ended, or it was handed back).
    pub fn release(&mut self, id: &str) -> Option<i64> {
        self.held.remove(id).map(|h| h.epoch)
    }

    /// A renewal sent at `sent_at` came back with the rows this node owns
    /// (`id`, `epoch`). Returns the leases lost (removed) and the rows the
    /// database says are ours that this node does not hold (to hand back).
    pub fn renewed(
        &mut self,
        sent_at: i64,
        rows: &[(String, i64)],
    ) -> (Vec<String>, Vec<(String, i64)>) {
        let until = self.until(sent_at);
        let owned: HashMap<&str, i64> = rows.iter().map(|(i, e)| (i.as_str(), *e)).collect();
        let mut lost = Vec::new();
        for (id, h) in self.held.iter_mut() {
            match owned.get(id.as_str()) {
                Some(&e) if e == h.epoch => {
                    h.deadline = h.deadline.max(until);
                    h.seen_at = h.seen_at.max(sent_at);
                }
                // The claim was not yet answered when the renewal was
                // sent (or in the same millisecond: the clock cannot tell
                // them apart): the renewal may have run before its commit.
                _ if h.answered_at >= sent_at => {}
                _ => lost.push(id.clone()),
            }
        }
        for id in &lost {
            self.held.remove(id);
        }
        let strays = rows
            .iter()
            .filter(|(i, _)| !self.held.contains_key(i) && !lost.contains(i))
            .cloned()
            .collect();
        (lost, strays)
    }

    /// Leases whose deadline has passed at `now` (removed).
    pub fn expired(&mut self, now: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| now >= h.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.held.remove(id);
        }
        gone
    }

    /// The earliest deadline, for the driver's next wake-up.
    pub fn next_deadline(&self) -> Option<i64> {
        self.held.values().map(|h| h.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[(&str, i64)]) -> Vec<(String, i64)> {
        v.iter().map(|(i, e)| (i.to_string(), *e)).collect()
    }

    #[test]
    fn a_lease_runs_out_before_the_database_gives_it_away() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 0, 0);
        assert!(l.expired(7_999).is_empty());
        assert_eq!(l.expired(8_000), vec!["a".to_string()]);
        assert_eq!(l.epoch("a"), None);
    }

    #[test]
    fn a_renewal_extends_from_when_it_was_sent() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 0, 0);
        // Sent at 5 s, answered late: counts from 5 s, not from the answer.
        let (lost, strays) = l.renewed(5_000, &rows(&[("a", 1)]));
        assert!(lost.is_empty() && strays.is_empty());
        assert!(l.expired(12_999).is_empty());
        assert_eq!(l.expired(13_000).len(), 1);
    }

    #[test]
    fn a_renewal_without_the_lease_or_with_another_epoch_loses_it() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 0, 0);
        l.claimed("b", 4, 0, 0);
        let (mut lost, _) = l.renewed(1_000, &rows(&[("b", 5)]));
        lost.sort();
        assert_eq!(lost, vec!["a".to_string(), "b".to_string()]);
        assert!(l.is_empty());
    }

    #[test]
    fn a_claim_newer_than_the_renewal_is_not_judged_by_it() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 1_500, 1_500);
        let (lost, _) = l.renewed(1_000, &[]);
        assert!(lost.is_empty());
        assert_eq!(l.epoch("a"), Some(1));
    }

    /// A batched accept's insert is sent at 1 s and waits for its batch's
    /// commit; a renewal sent at 2 s runs before that commit and does not
    /// return the row; the commit's answer comes at 3 s. The renewal
    /// cannot judge the lease (it was judged lost when the claim counted
    /// from its send time); one sent after the answer can.
    #[test]
    fn a_renewal_sent_before_the_claim_was_answered_does_not_lose_it() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 1_000, 3_000);
        let (lost, _) = l.renewed(2_000, &[]);
        assert!(lost.is_empty());
        assert_eq!(l.epoch("a"), Some(1));
        // The deadline still counts from the send: 1 s + 8 s.
        assert_eq!(l.next_deadline(), Some(9_000));
        // Sent in the millisecond of the answer: it may have run before
        // the commit all the same.
        let (lost, _) = l.renewed(3_000, &[]);
        assert!(lost.is_empty());
        let (lost, _) = l.renewed(3_001, &[]);
        assert_eq!(lost, vec!["a".to_string()]);
    }

    #[test]
    fn rows_owned_but_not_held_are_handed_back() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 0, 0);
        let (lost, strays) = l.renewed(1_000, &rows(&[("a", 1), ("x", 3)]));
        assert!(lost.is_empty());
        assert_eq!(strays, rows(&[("x", 3)]));
    }

    #[test]
    fn a_failed_renewal_changes_nothing_and_the_deadline_holds() {
        let mut l = Leases::new(3_000, 1_000);
        l.claimed("a", 2, 0, 0);
        l.confirmed("a", 2, 1_000);
        assert_eq!(l.next_deadline(), Some(3_000));
        // A confirmation for an older epoch does not extend it.
        l.confirmed("a", 1, 2_000);
        assert_eq!(l.next_deadline(), Some(3_000));
        assert_eq!(l.expired(3_000), vec!["a".to_string()]);
    }

    #[test]
    fn held_since_needs_an_answer_sent_after_the_moment_and_a_live_deadline() {
        let mut l = Leases::new(10_000, 2_000);
        l.claimed("a", 1, 0, 0);
        // The claim itself was sent before the moment asked about.
        assert!(!l.held_since("a", 100, 200));
        // A fenced write sent later with another epoch says nothing.
        l.seen("a", 2, 300);
        assert!(!l.held_since("a", 100, 400));
        l.seen("a", 1, 300);
        assert!(l.held_since("a", 100, 400));
        // Seen does not extend the lease: past the claim's deadline, no;
        // nor with less than half the usable lease (8 s) left.
        assert!(l.held_since("a", 100, 4_000));
        assert!(!l.held_since("a", 100, 4_001));
        assert!(!l.held_since("a", 100, 8_000));
        // A renewal sent later does both.
        let _ = l.renewed(7_000, &rows(&[("a", 1)]));
        assert!(l.held_since("a", 6_500, 8_000));
        assert!(!l.held_since("a", 7_500, 8_000));
        assert!(!l.held_since("b", 0, 1));
    }

    #[test]
    fn a_margin_larger_than_the_ttl_is_clamped() {
        let mut l = Leases::new(1_000, 5_000);
        l.claimed("a", 1, 0, 0);
        assert_eq!(l.next_deadline(), Some(1));
    }
}

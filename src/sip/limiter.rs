//! Per-source request limiting with a temporary ban, in the manner of
//! Kamailio's `pike` module. Sans-IO: every call takes `now`.
//!
//! Each datagram from an untrusted address is counted against its source
//! IP in a sliding window (the current window's count plus the previous
//! window's, weighted by how much of it still overlaps). Over
//! `max_requests` the source is banned for `ban`: its datagrams are
//! dropped before they are parsed, so a flood costs a hash lookup each.
//! Datagrams are still counted while banned, so a source that keeps
//! flooding is banned again the moment its ban ends.
//!
//! Never limited: configured trunks and proxies ([`Limiter::trust`]) and
//! the peers of dialogs in progress ([`Limiter::add_peer`]), so an attacker
//! cannot get a real call's peer banned and a real call cannot trip it.
//!
//! Call order: [`Limiter::check`] for each datagram before parsing it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::timers::TimerHeap;

/// Limits for untrusted sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodPolicy {
    /// Off: every datagram passes (nothing is counted).
    pub enabled: bool,
    /// Length of the counting window.
    pub window: Duration,
    /// Datagrams one source IP may send per window.
    pub max_requests: u32,
    /// How long an offending source is ignored.
    pub ban: Duration,
    /// Sources tracked at once; the stalest is forgotten beyond that, so
    /// spoofed source addresses cannot grow memory without bound.
    pub max_sources: usize,
}

impl Default for FloodPolicy {
    /// 20 datagrams a second on average from one address that is neither
    /// a trunk nor in a call: far above an OPTIONS probe or a caller's
    /// retransmissions, far below a scanner.
    fn default() -> Self {
        FloodPolicy {
            enabled: true,
            window: Duration::from_secs(2),
            max_requests: 40,
            ban: Duration::from_secs(60),
            max_sources: 65_536,
        }
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The source is banned: drop without parsing.
    Drop,
    /// This datagram put its source over the limit: drop it; the source
    /// is banned from now on.
    Banned,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Datagrams dropped because their source was (or just got) banned.
    pub dropped: u64,
    /// Bans imposed (a source banned again after its ban ended counts again).
    pub bans: u64,
    /// Sources banned right now.
    pub banned_now: u64,
}

#[derive(Debug)]
struct Source {
    window_start: Instant,
    count: u32,
    previous: u32,
    banned_until: Option<Instant>,
}

/// The per-source limiter.
#[derive(Debug)]
pub struct Limiter {
    policy: FloodPolicy,
    sources: HashMap<IpAddr, Source>,
    /// When each source's state is no longer needed (window passed and
    /// ban over), so idle sources are forgotten in O(log n).
    forget: TimerHeap<IpAddr>,
    trusted: HashSet<IpAddr>,
    /// Peers of calls in progress, with the number of calls each.
    peers: HashMap<IpAddr, usize>,
    dropped: u64,
    bans: u64,
}

impl Limiter {
    pub fn new(policy: FloodPolicy) -> Limiter {
        Limiter {
            policy,
            sources: HashMap::new(),
            forget: TimerHeap::new(),
            trusted: HashSet::new(),
            peers: HashMap::new(),
            dropped: 0,
            bans: 0,
        }
    }

    pub fn policy(&self) -> &FloodPolicy {
        &self.policy
    }

    /// Replace the policy; sources already banned stay banned until
    /// their ban ends.
    pub fn set_policy(&mut self, policy: FloodPolicy) {
        self.policy = policy;
    }

    /// Never limit `ip` (a trunk, proxy or registrar).
    pub fn trust(&mut self, ip: IpAddr) {
        self.trusted.insert(ip);
        self.unban(ip);
    }

    /// `ip` is the peer of one more call in progress.
    pub fn add_peer(&mut self, ip: IpAddr) {
        *self.peers.entry(ip).or_insert(0) += 1;
        self.unban(ip);
    }

    /// One call with `ip` has ended.
    pub fn remove_peer(&mut self, ip: IpAddr) {
        if let Some(n) = self.peers.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&ip);
            }
        }
    }

    fn unban(&mut self, ip: IpAddr) {
        self.sources.remove(&ip);
        self.forget.clear(&ip);
    }

    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.trusted.contains(&ip) || self.peers.contains_key(&ip)
    }

    pub fn is_banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.sources
            .get(&ip)
            .and_then(|s| s.banned_until)
            .is_some_and(|t| t > now)
    }

    /// Count one datagram from `ip` and say whether to process it.
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        if !self.policy.enabled || self.is_exempt(ip) {
            return Verdict::Pass;
        }
        while let Some((old, _)) = self.forget.pop_due(now) {
            self.sources.remove(&old);
        }
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.policy.max_sources {
            if let Some((stalest, _)) = self.forget.pop_earliest() {
                self.sources.remove(&stalest);
            }
        }
        let window = self.policy.window.max(Duration::from_millis(1));
        let s = self.sources.entry(ip).or_insert(Source {
            window_start: now,
            count: 0,
            previous: 0,
            banned_until: None,
        });
        let elapsed = now.saturating_duration_since(s.window_start);
        if elapsed >= window {
            s.previous = if elapsed < window * 2 { s.count } else { 0 };
            s.count = 0;
            s.window_start = now;
        }
        s.count = s.count.saturating_add(1);
        let into =
            now.saturating_duration_since(s.window_start).as_secs_f64() / window.as_secs_f64();
        let estimate = f64::from(s.previous) * (1.0 - into).max(0.0) + f64::from(s.count);
        let verdict = if s.banned_until.is_some_and(|t| t > now) {
            Verdict::Drop
        } else if estimate > f64::from(self.policy.max_requests) {
            s.banned_until = Some(now + self.policy.ban);
            self.bans += 1;
            Verdict::Banned
        } else {
            Verdict::Pass
        };
        let forget_at = (s.window_start + window * 2).max(s.banned_until.unwrap_or(now));
        self.forget.set(ip, Some(forget_at));
        if verdict != Verdict::Pass {
            self.dropped += 1;
        }
        verdict
    }

    /// O(tracked sources) for the gauge; called per metrics scrape only.
    pub fn stats(&self, now: Instant) -> LimiterStats {
        LimiterStats {
            dropped: self.dropped,
            bans: self.bans,
            banned_now: self
                .sources
                .values()
                .filter(|s| s.banned_until.is_some_and(|t| t > now))
                .count() as u64,
        }
    }

    /// Sources tracked right now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 66));
    const TRUNK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn policy() -> FloodPolicy {
        FloodPolicy {
            enabled: true,
            window: Duration::from_secs(2),
            max_requests: 10,
            ban: Duration::from_secs(30),
            max_sources: 1000,
        }
    }

    /// `n` datagrams from `ip` evenly over `span` from `start`; the verdicts.
    fn send(l: &mut Limiter, start: Instant, span: Duration, n: u32, ip: IpAddr) -> Vec<Verdict> {
        (0..n)
            .map(|i| l.check(start + span * i / n.max(1), ip))
            .collect()
    }

    #[test]
    fn a_burst_over_the_limit_bans_the_source_for_the_ban_time() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy());
        let v = send(&mut l, t0, Duration::from_millis(500), 15, ATTACKER);
        assert!(v[..10].iter().all(|v| *v == Verdict::Pass), "{v:?}");
        assert_eq!(v[10], Verdict::Banned);
        assert!(v[11..].iter().all(|v| *v == Verdict::Drop));
        assert!(l.is_banned(t0 + Duration::from_secs(29), ATTACKER));
        let st = l.stats(t0 + Duration::from_secs(1));
        assert_eq!((st.dropped, st.bans, st.banned_now), (5, 1, 1));
        // Silent for the ban time: forgiven.
        let later = t0 + Duration::from_secs(31);
        assert!(!l.is_banned(later, ATTACKER));
        assert_eq!(l.check(later, ATTACKER), Verdict::Pass);
        assert_eq!(l.stats(later).banned_now, 0);
    }

    #[test]
    fn a_steady_rate_under_the_limit_is_never_banned() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy());
        // 4 per second against 10 per 2 s, for a minute.
        let v = send(&mut l, t0, Duration::from_secs(60), 240, ATTACKER);
        assert!(v.iter().all(|v| *v == Verdict::Pass));
        assert_eq!(l.stats(t0 + Duration::from_secs(60)).bans, 0);
    }

    #[test]
    fn the_window_slides_rather_than_resetting_at_its_edge() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy());
        // 9 at the end of one window and 9 at the start of the next: a
        // fixed window would let 18 through in 200 ms.
        for i in 0..9 {
            assert_eq!(
                l.check(t0 + Duration::from_millis(1900 + i), ATTACKER),
                Verdict::Pass
            );
        }
        let v: Vec<Verdict> = (0..9)
            .map(|i| l.check(t0 + Duration::from_millis(3950 + i), ATTACKER))
            .collect();
        assert!(v.contains(&Verdict::Banned), "{v:?}");
    }

    #[test]
    fn a_source_that_keeps_flooding_is_banned_again_at_once() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy());
        // 100 per second for 70 s: two bans' worth.
        let v = send(&mut l, t0, Duration::from_secs(70), 7000, ATTACKER);
        let passed = v.iter().filter(|v| **v == Verdict::Pass).count();
        assert_eq!(passed, 10, "only the first window's share gets through");
        assert_eq!(l.stats(t0 + Duration::from_secs(70)).bans, 3);
    }

    #[test]
    fn trunks_and_call_peers_are_never_limited() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy());
        l.trust(TRUNK);
        l.add_peer(PEER);
        for ip in [TRUNK, PEER] {
            let v = send(&mut l, t0, Duration::from_millis(100), 1000, ip);
            assert!(v.iter().all(|v| *v == Verdict::Pass), "{ip}");
        }
        // Two calls with the same peer; the first ends, still exempt.
        l.add_peer(PEER);
        l.remove_peer(PEER);
        assert!(l.is_exempt(PEER));
        l.remove_peer(PEER);
        assert!(!l.is_exempt(PEER));
        // A banned source that becomes a call's peer is let in at once.
        send(&mut l, t0, Duration::from_millis(100), 20, ATTACKER);
        assert!(l.is_banned(t0 + Duration::from_secs(1), ATTACKER));
        l.add_peer(ATTACKER);
        assert_eq!(
            l.check(t0 + Duration::from_secs(1), ATTACKER),
            Verdict::Pass
        );
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn spoofed_sources_cannot_grow_the_table() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy());
        for i in 0..50_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check(t0 + Duration::from_micros(u64::from(i)), ip);
        }
        assert!(l.tracked() <= 1000, "{}", l.tracked());
        // Idle sources are forgotten once their window has passed.
        l.check(t0 + Duration::from_secs(10), ATTACKER);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn disabled_counts_nothing() {
        let t0 = Instant::now();
        let mut l = Limiter::new(FloodPolicy {
            enabled: false,
            ..policy()
        });
        let v = send(&mut l, t0, Duration::from_millis(10), 500, ATTACKER);
        assert!(v.iter().all(|v| *v == Verdict::Pass));
        assert_eq!(l.tracked(), 0);
    }
}

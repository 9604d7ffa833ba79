//! OPTIONS keepalive of a trunk's addresses, sans-IO: one OPTIONS per
//! address every `interval`; an address that leaves `misses` probes in a
//! row unanswered (or answers 5xx/6xx) is down, and up again at its next
//! answer. [`Board`] holds what the probes found, for failover (the order
//! calls try a trunk's addresses in), metrics and `/readyz`.
//!
//! Each probe is a fresh OPTIONS (new branch, next CSeq) rather than a
//! retransmitted transaction: a probe not answered before the next one is
//! due counts as a miss, so a dead address is found after about
//! `interval × misses`, not after Timer F's 32 s.
//!
//! Call order: [`Probe::new`]; feed [`Probe::handle_response`] (responses
//! with its Call-ID) and [`Probe::handle_timeout`]; drain
//! [`Probe::poll_transmit`] and [`Probe::poll_change`]; sleep until
//! [`Probe::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::header::Via;
use super::message::{Method, Request, Response};
use super::transport::Transport;
use super::Transmit;

/// How often and how patiently to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub interval: Duration,
    /// Probes missed in a row before the address is down (at least 1).
    pub misses: u32,
}

/// What the probes know of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not probed, or no answer yet: tried as if up.
    Unknown,
    Up,
    Down,
}

/// The OPTIONS probe of one address.
#[derive(Debug)]
pub struct Probe {
    cfg: KeepaliveConfig,
    target: SocketAddr,
    local: SocketAddr,
    uri: String,
    call_id: String,
    tag: String,
    cseq: u32,
    /// Branch of the probe in flight, not yet answered.
    outstanding: Option<String>,
    next_send: Instant,
    missed: u32,
    health: Health,
    /// Named in Via: the trunk's own transport, so a probe tests the
    /// path its calls take (a TCP/TLS trunk may not listen on UDP).
    transport: Transport,
    transmit: VecDeque<Transmit>,
    changes: VecDeque<Health>,
}

impl Probe {
    /// Probe `target` (Request-URI `uri`) from `local`; the first OPTIONS
    /// goes at once.
    pub fn new(
        now: Instant,
        cfg: KeepaliveConfig,
        target: SocketAddr,
        local: SocketAddr,
        uri: String,
        call_id: String,
        tag: String,
    ) -> Probe {
        let mut p = Probe {
            cfg: KeepaliveConfig {
                interval: cfg.interval.max(Duration::from_millis(100)),
                misses: cfg.misses.max(1),
            },
            target,
            local,
            uri,
            call_id,
            tag,
            cseq: 0,
            outstanding: None,
            next_send: now,
            missed: 0,
            health: Health::Unknown,
            transport: Transport::Udp,
            transmit: VecDeque::new(),
            changes: VecDeque::new(),
        };
        p.handle_timeout(now);
        p
    }

    /// The same probe over `transport` (the first OPTIONS, already queued,
    /// is rebuilt for it).
    pub fn with_transport(mut self, now: Instant, transport: Transport) -> Probe {
        if self.transport != transport {
            self.transport = transport;
            self.transmit.clear();
            self.outstanding = None;
            self.cseq = self.cseq.saturating_sub(1);
            self.send(now);
        }
        self
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn health(&self) -> Health {
        self.health
    }

    fn set(&mut self, h: Health) {
        if self.health != h {
            self.health = h;
            self.changes.push_back(h);
        }
    }

    fn miss(&mut self) {
        self.missed = self.missed.saturating_add(1);
        if self.missed >= self.cfg.misses {
            self.set(Health::Down);
        }
    }

    /// A response with our Call-ID. Only the probe in flight counts: a
    /// late answer to an older one (already counted missed) is ignored.
    pub fn handle_response(&mut self, _now: Instant, resp: &Response) {
        if resp.code < 200 {
            return;
        }
        let branch = resp
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string));
        if branch.is_none() || branch != self.outstanding {
            return;
        }
        self.outstanding = None;
        // Any final answer means something is there, but a 5xx/6xx says
        // it will not take calls (RFC 3261 21.5: 503 is "overloaded").
        if resp.code >= 500 {
            self.miss();
        } else {
            self.missed = 0;
            self.set(Health::Up);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_send {
            return;
        }
        if self.outstanding.take().is_some() {
            self.miss();
        }
        self.send(now);
        // Catch up after a long sleep instead of sending a burst.
        self.next_send = (self.next_send + self.cfg.interval).max(now + self.cfg.interval / 2);
    }

    fn send(&mut self, _now: Instant) {
        self.cseq += 1;
        let branch = format!("z9hG4bK-ka{}-{}", self.tag, self.cseq);
        let mut req = Request::new(Method::Options, self.uri.clone());
        let h = &mut req.headers;
        h.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                self.transport.via_name(),
                self.local
            ),
        );
        h.push("Max-Forwards", "70");
        h.push(
            "From",
            format!("<sip:callout@{}>;tag={}", self.local, self.tag),
        );
        h.push("To", format!("<{}>", self.uri));
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} OPTIONS", self.cseq));
        h.push("Accept", "application/sdp");
        h.push("Content-Length", "0");
        self.transmit.push_back(Transmit {
            dest: self.target,
            bytes: req.to_bytes(),
        });
        self.outstanding = Some(branch);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    /// Each change of health, in order.
    pub fn poll_change(&mut self) -> Option<Health> {
        self.changes.pop_front()
    }

    pub fn poll_timeout(&self) -> Instant {
        self.next_send
    }
}

/// Health of every probed trunk address, shared by the probes' driver and
/// whoever dials, reports or exports metrics.
#[derive(Debug, Default)]
pub struct Board {
    trunks: Mutex<BTreeMap<String, BTreeMap<SocketAddr, Health>>>,
    /// What the nodes sharing a database found together (the latest
    /// change of any node wins, `channels::health`): when present it
    /// overrides this node's own probes.
    cluster: Mutex<BTreeMap<String, BTreeMap<SocketAddr, Health>>>,
}

impl Board {
    pub fn set(&self, trunk: &str, addr: SocketAddr, h: Health) {
        let mut t = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(trunk.to_string()).or_default().insert(addr, h);
    }

    /// Forget `trunk`'s addresses other than `keep` (DNS moved them).
    pub fn retain(&self, trunk: &str, keep: &[SocketAddr]) {
        let mut t = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = t.get_mut(trunk) {
            m.retain(|a, _| keep.contains(a));
        }
    }

    pub fn health(&self, trunk: &str, addr: SocketAddr) -> Health {
        let c = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = c.get(trunk).and_then(|m| m.get(&addr)) {
            return *h;
        }
        drop(c);
        let t = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        t.get(trunk)
            .and_then(|m| m.get(&addr))
            .copied()
            .unwrap_or(Health::Unknown)
    }

    /// This node's own verdicts (up or down; not yet known ones left
    /// out), for the other nodes.
    pub fn own_verdicts(&self) -> Vec<(String, SocketAddr, bool)> {
        let t = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .flat_map(|(n, m)| {
                m.iter()
                    .filter(|(_, h)| **h != Health::Unknown)
                    .map(move |(a, h)| (n.clone(), *a, *h == Health::Down))
            })
            .collect()
    }

    /// Replace the nodes' shared verdicts (trunk, address, down).
    pub fn set_cluster(&self, verdicts: &[(String, SocketAddr, bool)]) {
        let mut m: BTreeMap<String, BTreeMap<SocketAddr, Health>> = BTreeMap::new();
        for (t, a, down) in verdicts {
            let h = if *down { Health::Down } else { Health::Up };
            m.entry(t.clone()).or_default().insert(*a, h);
        }
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// `addrs` (in configured order) as calls should try them: addresses
    /// not known down first, then the down ones, still in order, as a last
    /// resort (a probe can be wrong; a call is worth the try).
    pub fn order(&self, trunk: &str, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let (mut live, down): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
            .iter()
            .copied()
            .partition(|a| self.health(trunk, *a) != Health::Down);
        live.extend(down);
        live
    }

    /// Whether every probed address of `trunk` is down (false when none
    /// is probed).
    pub fn all_down(&self, trunk: &str) -> bool {
        self.snapshot()
            .get(trunk)
            .is_some_and(|m| !m.is_empty() && m.values().all(|h| *h == Health::Down))
    }

    /// Prometheus lines: `callout_trunk_up{trunk,address}` 1 up, 0 down,
    /// -1 not known yet.
    pub fn metrics_text(&self) -> String {
        let snap = self.snapshot();
        if snap.is_empty() {
            return String::new();
        }
        let mut out = String::from("# TYPE callout_trunk_up gauge\n");
        for (trunk, addrs) in snap {
            for (addr, h) in addrs {
                let v = match h {
                    Health::Up => 1,
                    Health::Down => 0,
                    Health::Unknown => -1,
                };
                // Names come from the operator's file: keep the label
                // syntax intact whatever they hold.
                let trunk = trunk.replace(['\\', '"', '\n'], "_");
                out.push_str(&format!(
                    "callout_trunk_up{{trunk=\"{trunk}\",address=\"{addr}\"}} {v}\n"
                ));
            }
        }
        out
    }

    /// trunk -> address -> health.
    /// With the nodes' shared verdicts over this node's own.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, Health>> {
        let mut out: BTreeMap<String, BTreeMap<SocketAddr, Health>> = self
            .trunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (n, m) in self
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.entry(n.clone()).or_default().extend(m.iter());
        }
        out.into_iter()
            .map(|(n, m)| (n, m.iter().map(|(a, h)| (a.to_string(), *h)).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};

    const TARGET: &str = "127.0.0.1:5070";

    fn probe(t0: Instant) -> Probe {
        Probe::new(
            t0,
            KeepaliveConfig {
                interval: Duration::from_secs(10),
                misses: 2,
            },
            TARGET.parse().unwrap(),
            "127.0.0.1:5060".parse().unwrap(),
            "sip:127.0.0.1:5070".into(),
            "ka1@callout".into(),
            "t1".into(),
        )
    }

    fn sent(p: &mut Probe) -> Request {
        let t = p.poll_transmit().expect("an OPTIONS");
        assert_eq!(t.dest, TARGET.parse().unwrap());
        match parse(&t.bytes).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn answer(p: &mut Probe, now: Instant, req: &Request, code: u16) {
        let r = Response::for_request(req, code, Some("x"));
        p.handle_response(now, &r);
    }

    #[test]
    fn answered_probes_keep_it_up_and_misses_take_it_down_then_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = probe(t0);
        let r = sent(&mut p);
        assert_eq!(r.method, Method::Options);
        assert_eq!(p.health(), Health::Unknown);
        answer(&mut p, t0, &r, 200);
        assert_eq!(p.health(), Health::Up);
        assert_eq!(p.poll_change(), Some(Health::Up));
        assert_eq!(p.poll_timeout(), t0 + s(10));
        // Nothing before the interval.
        p.handle_timeout(t0 + s(9));
        assert!(p.poll_transmit().is_none());
        // Two unanswered probes: down when the third is due.
        p.handle_timeout(t0 + s(10));
        let _ = sent(&mut p);
        p.handle_timeout(t0 + s(20));
        let late = sent(&mut p);
        assert_eq!(p.health(), Health::Up, "one miss is not enough");
        p.handle_timeout(t0 + s(30));
        let r = sent(&mut p);
        assert_eq!(p.health(), Health::Down);
        assert_eq!(p.poll_change(), Some(Health::Down));
        // A late answer to an older probe does not count.
        answer(&mut p, t0 + s(31), &late, 200);
        assert_eq!(p.health(), Health::Down);
        // The one in flight does.
        answer(&mut p, t0 + s(31), &r, 200);
        assert_eq!(p.health(), Health::Up);
        assert_eq!(p.poll_change(), Some(Health::Up));
        assert_eq!(p.poll_change(), None);
    }

    #[test]
    fn a_5xx_answer_counts_as_a_miss_and_each_probe_is_new() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = probe(t0);
        let a = sent(&mut p);
        answer(&mut p, t0, &a, 503);
        // Repeats of that answer are ignored.
        answer(&mut p, t0, &a, 503);
        assert_eq!(p.health(), Health::Unknown);
        p.handle_timeout(t0 + s(10));
        let b = sent(&mut p);
        assert_ne!(a.headers.get("Via"), b.headers.get("Via"));
        assert_ne!(a.headers.get("CSeq"), b.headers.get("CSeq"));
        assert_eq!(a.headers.get("Call-ID"), b.headers.get("Call-ID"));
        answer(&mut p, t0 + s(10), &b, 500);
        assert_eq!(p.health(), Health::Down);
        // A 4xx (e.g. 405, 404) still says someone is there.
        p.handle_timeout(t0 + s(20));
        let c = sent(&mut p);
        answer(&mut p, t0 + s(20), &c, 405);
        assert_eq!(p.health(), Health::Up);
    }

    #[test]
    fn a_tcp_or_tls_trunk_is_probed_over_its_own_transport() {
        let t0 = Instant::now();
        for (t, via) in [
            (Transport::Tcp, "SIP/2.0/TCP "),
            (Transport::Tls, "SIP/2.0/TLS "),
        ] {
            let mut p = probe(t0).with_transport(t0, t);
            assert_eq!(p.transport(), t);
            let r = sent(&mut p);
            assert!(p.poll_transmit().is_none(), "one probe, not two");
            assert!(r.headers.get("Via").unwrap().starts_with(via), "{r:?}");
            assert_eq!(r.headers.get("CSeq"), Some("1 OPTIONS"));
            // Its answer counts.
            answer(&mut p, t0, &r, 200);
            assert_eq!(p.health(), Health::Up);
        }
    }

    #[test]
    fn after_a_long_sleep_one_probe_goes_not_a_burst() {
        let t0 = Instant::now();
        let mut p = probe(t0);
        let _ = sent(&mut p);
        p.handle_timeout(t0 + Duration::from_secs(100));
        assert!(p.poll_transmit().is_some());
        assert!(p.poll_transmit().is_none());
        assert!(p.poll_timeout() > t0 + Duration::from_secs(100));
    }

    #[test]
    fn the_board_puts_down_addresses_last() {
        let b = Board::default();
        let (x, y, z): (SocketAddr, SocketAddr, SocketAddr) = (
            "10.0.0.1:5060".parse().unwrap(),
            "10.0.0.2:5060".parse().unwrap(),
            "10.0.0.3:5060".parse().unwrap(),
        );
        assert_eq!(b.order("t", &[x, y, z]), [x, y, z]);
        b.set("t", x, Health::Down);
        b.set("t", y, Health::Up);
        assert_eq!(b.order("t", &[x, y, z]), [y, z, x]);
        // Another trunk's view of the same address is its own.
        assert_eq!(b.order("u", &[x, y]), [x, y]);
        assert_eq!(b.snapshot()["t"]["10.0.0.1:5060"], Health::Down);
        assert!(!b.all_down("t"));
        b.set("t", y, Health::Down);
        assert!(b.all_down("t"));
        assert!(!b.all_down("u"));
        b.set("q\"x", z, Health::Up);
        let m = b.metrics_text();
        assert!(
            m.contains("callout_trunk_up{trunk=\"t\",address=\"10.0.0.1:5060\"} 0"),
            "{m}"
        );
        assert!(
            m.contains("callout_trunk_up{trunk=\"q_x\",address=\"10.0.0.3:5060\"} 1"),
            "{m}"
        );
    }
}

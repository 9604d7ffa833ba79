//! The endpoint under a request flood, with virtual time (issue 13, item
//! 9): the limiter bans a flooding source before its datagrams are parsed,
//! never a call's peer, and remembered answers cost nothing per loop pass.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::call::CallConfig;
use super::endpoint::Endpoint;
use super::limiter::FloodPolicy;
use super::message::{parse, Message};
use super::sdp;
use super::transaction::Timers;

const LOCAL: &str = "127.0.0.1:5060";

fn options(from: SocketAddr, n: u64) -> Vec<u8> {
    format!(
        "OPTIONS sip:100@{LOCAL} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKflood{n}\r\n\
         From: <sip:scan@{from}>;tag=f{n}\r\nTo: <sip:100@{LOCAL}>\r\nCall-ID: flood-{n}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn answers(ep: &mut Endpoint, to: SocketAddr) -> usize {
    let mut n = 0;
    while let Some(t) = ep.poll_transmit() {
        if t.dest == to {
            assert!(matches!(parse(&t.bytes), Ok(Message::Response(_))));
            n += 1;
        }
    }
    n
}

fn dial(ep: &mut Endpoint, now: Instant, peer: SocketAddr) {
    ep.start_call(
        now,
        CallConfig {
            target: format!("sip:bob@{peer}"),
            from_uri: "sip:callout@127.0.0.1".into(),
            from_display: None,
            local: LOCAL.parse().unwrap(),
            destination: peer,
            credentials: None,
            ring_timeout: Duration::from_secs(30),
            sdp_offer: sdp::offer("127.0.0.1:20000".parse().unwrap(), 1, 1),
            timers: Timers::default(),
            user_agent: String::new(),
            extra_headers: Vec::new(),
        },
    );
}

#[test]
fn an_options_flood_bans_its_source_but_never_a_calls_peer() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(LOCAL.parse().unwrap(), 7);
    let attacker: SocketAddr = "192.0.2.66:5062".parse().unwrap();
    let peer: SocketAddr = "192.0.2.7:5070".parse().unwrap();
    dial(&mut ep, t0, peer);
    while ep.poll_transmit().is_some() {}
    // 3,000 a second for one second from each.
    let mut answered = 0;
    let mut peer_answered = 0;
    for i in 0..3000u64 {
        let now = t0 + Duration::from_micros(i * 333);
        ep.handle_datagram(now, attacker, &options(attacker, i));
        answered += answers(&mut ep, attacker);
        ep.handle_datagram(now, peer, &options(peer, 10_000 + i));
        peer_answered += answers(&mut ep, peer);
    }
    let limit = FloodPolicy::default().max_requests as usize;
    assert_eq!(answered, limit, "only the first window's share is answered");
    assert_eq!(peer_answered, 3000, "the call's peer is never limited");
    let s = ep.stats();
    assert_eq!(s.flood_dropped, 3000 - limit as u64);
    assert_eq!((s.sources_banned, s.banned_now), (1, 1));
    assert_eq!(ep.poll_ban(), Some(attacker.ip()));
    assert_eq!(ep.poll_ban(), None);
    // Another port on the banned address is the same source.
    let other: SocketAddr = "192.0.2.66:5999".parse().unwrap();
    ep.handle_datagram(t0 + Duration::from_secs(2), other, &options(other, 99_999));
    assert_eq!(answers(&mut ep, other), 0);
    // After the ban, a quiet source is answered again.
    let later = t0 + FloodPolicy::default().ban + Duration::from_secs(3);
    ep.handle_timeout(later);
    ep.handle_datagram(later, attacker, &options(attacker, 123_456));
    assert_eq!(answers(&mut ep, attacker), 1);
    assert_eq!(ep.stats().banned_now, 0);
}

#[test]
fn a_trusted_address_is_never_limited() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(LOCAL.parse().unwrap(), 7);
    let probe: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    ep.trust(probe.ip());
    for i in 0..500u64 {
        ep.handle_datagram(t0 + Duration::from_millis(i), probe, &options(probe, i));
        assert_eq!(answers(&mut ep, probe), 1);
    }
    assert_eq!(ep.stats().sources_banned, 0);
}

/// Before: every loop pass scanned every remembered answer (32 s of
/// them), so 20,000 passes over 10,000 entries took seconds; the heap
/// makes a pass O(1) when nothing is due.
#[test]
fn remembered_answers_cost_nothing_per_loop_pass() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(LOCAL.parse().unwrap(), 7);
    // Many sources (as spoofed ones would be): the limiter does not help.
    ep.set_flood_policy(FloodPolicy {
        enabled: false,
        ..FloodPolicy::default()
    });
    for i in 0..10_000u64 {
        let from = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 5060));
        ep.handle_datagram(t0 + Duration::from_micros(i * 100), from, &options(from, i));
    }
    while ep.poll_transmit().is_some() {}
    assert_eq!(ep.stats().remembered, 10_000);
    let now = t0 + Duration::from_secs(2);
    let started = Instant::now();
    for _ in 0..20_000 {
        assert!(ep.poll_timeout().is_some_and(|t| t > now));
        ep.handle_timeout(now);
    }
    let took = started.elapsed();
    eprintln!("20,000 passes over 10,000 remembered answers: {took:?}");
    assert!(
        took < Duration::from_millis(200),
        "20,000 passes took {took:?}"
    );
    // Retransmissions within 32 s get the remembered answer; then it goes.
    let first: SocketAddr = "10.0.0.0:5060".parse().unwrap();
    ep.handle_datagram(now, first, &options(first, 0));
    assert_eq!(answers(&mut ep, first), 1);
    ep.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(ep.stats().remembered, 0);
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn remembered_answers_are_bounded() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(LOCAL.parse().unwrap(), 7);
    ep.set_flood_policy(FloodPolicy {
        enabled: false,
        ..FloodPolicy::default()
    });
    let from: SocketAddr = "10.1.0.1:5060".parse().unwrap();
    for i in 0..25_000u64 {
        ep.handle_datagram(t0 + Duration::from_micros(i), from, &options(from, i));
        while ep.poll_transmit().is_some() {}
    }
    assert_eq!(ep.stats().remembered, 10_000);
}

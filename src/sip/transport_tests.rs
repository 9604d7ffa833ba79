//! Transports through the endpoint, with virtual time: a call over TCP or
//! TLS says so in Via and Contact and does not retransmit; a large request
//! of a call whose transport was not named moves to TCP (RFC 3261
//! 18.1.1); a request arriving on a stream is answered on that stream; a
//! request the transport could not deliver ends the call at once (503).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::call::{CallConfig, CallEvent, EndReason};
use super::endpoint::Endpoint;
use super::sdp;
use super::transaction::Timers;
use super::transport::{transport_error_response, Transport};

const PEER: &str = "127.0.0.1:5070";

fn cfg(extra: Vec<(String, String)>) -> CallConfig {
    CallConfig {
        target: format!("sip:bob@{PEER}"),
        from_uri: "sip:callout@127.0.0.1".into(),
        from_display: None,
        local: "127.0.0.1:5060".parse().unwrap(),
        destination: PEER.parse().unwrap(),
        credentials: None,
        ring_timeout: Duration::from_secs(60),
        sdp_offer: sdp::offer("127.0.0.1:20000".parse().unwrap(), 5, 1),
        timers: Timers::default(),
        user_agent: String::new(),
        extra_headers: extra,
    }
}

fn sends(ep: &mut Endpoint) -> Vec<(Transport, SocketAddr, String)> {
    let mut out = Vec::new();
    while let Some((tr, t)) = ep.poll_send() {
        out.push((tr, t.dest, String::from_utf8_lossy(&t.bytes).into_owned()));
    }
    out
}

#[test]
fn a_tcp_call_says_tcp_and_does_not_retransmit() {
    for (tr, via, contact) in [
        (
            Transport::Tcp,
            "SIP/2.0/TCP 127.0.0.1:5060",
            ";transport=tcp>",
        ),
        (
            Transport::Tls,
            "SIP/2.0/TLS 127.0.0.1:5060",
            ";transport=tls>",
        ),
    ] {
        let now = Instant::now();
        let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
        ep.start_call_on(now, cfg(Vec::new()), false, tr, false);
        let first = sends(&mut ep);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, tr);
        assert!(first[0].2.contains(via), "{}", first[0].2);
        assert!(first[0].2.contains(contact), "{}", first[0].2);
        // Timer A would have fired at 0.5, 1.5, 3.5 s over UDP.
        let mut t = now;
        for _ in 0..8 {
            t += Duration::from_millis(500);
            ep.handle_timeout(t);
        }
        assert!(sends(&mut ep).is_empty(), "retransmitted over {tr}");
    }
}

#[test]
fn a_large_request_moves_to_tcp_unless_the_transport_was_named() {
    let big = vec![("X-Padding".to_string(), "p".repeat(1200))];
    let now = Instant::now();
    let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
    ep.start_call_on(now, cfg(big.clone()), false, Transport::Udp, true);
    let s = sends(&mut ep);
    assert_eq!(s[0].0, Transport::Tcp);
    assert!(s[0].2.contains("SIP/2.0/TCP 127.0.0.1:5060"), "{}", s[0].2);
    // `;transport=udp` named: it stays on UDP, however large.
    let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
    ep.start_call_on(now, cfg(big), false, Transport::Udp, false);
    let s = sends(&mut ep);
    assert_eq!(s[0].0, Transport::Udp);
    // A small INVITE of an unnamed transport stays on UDP.
    let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
    ep.start_call_on(now, cfg(Vec::new()), false, Transport::Udp, true);
    assert_eq!(sends(&mut ep)[0].0, Transport::Udp);
}

#[test]
fn a_request_on_a_stream_is_answered_on_it() {
    let now = Instant::now();
    let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
    let from: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let opts = b"OPTIONS sip:callout@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:40001;branch=z9hG4bKo1\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:callout@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    ep.handle_stream_message(now, from, Transport::Tcp, opts);
    let s = sends(&mut ep);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].0, s[0].1), (Transport::Tcp, from));
    assert!(s[0].2.starts_with("SIP/2.0 200"), "{}", s[0].2);
    // The same over UDP goes back over UDP.
    ep.handle_datagram(now, from, opts);
    let s = sends(&mut ep);
    assert_eq!(s[0].0, Transport::Udp);
}

#[test]
fn an_undeliverable_invite_ends_the_call_at_once() {
    let now = Instant::now();
    let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
    let h = ep.start_call_on(now, cfg(Vec::new()), false, Transport::Tls, false);
    let s = sends(&mut ep);
    let resp = transport_error_response(s[0].2.as_bytes()).expect("a 503 for the INVITE");
    ep.handle_stream_message(now, PEER.parse().unwrap(), Transport::Tls, &resp);
    let mut ended = None;
    while let Some((hh, e)) = ep.poll_event() {
        if let (true, CallEvent::Ended(r)) = (hh == h, e) {
            ended = Some(r);
        }
    }
    assert_eq!(ended, Some(EndReason::Unreachable { code: Some(503) }));
    // No 503 stands for a response or an ACK.
    assert!(transport_error_response(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n").is_none());
}

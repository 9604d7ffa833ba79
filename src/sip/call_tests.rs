//! The UAC call driven through the endpoint with virtual time: a scripted
//! far end answers what the call sends, and every timer is reached by
//! jumping `now`, never by sleeping.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::call::{CallConfig, CallEvent, EndReason};
use super::endpoint::{CallHandle, Endpoint};
use super::message::{parse, Message, Method, Request, Response};
use super::sdp;
use super::transaction::Timers;

const PEER: &str = "127.0.0.1:5070";

struct Harness {
    ep: Endpoint,
    now: Instant,
    t0: Instant,
    /// Requests the call sent, with the time they left.
    sent: Vec<(Duration, Request)>,
    events: Vec<CallEvent>,
}

impl Harness {
    fn new() -> Harness {
        let t0 = Instant::now();
        Harness {
            ep: Endpoint::new("127.0.0.1:5060".parse().unwrap(), 42),
            now: t0,
            t0,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn dial(&mut self, ring: Duration, creds: Option<Credentials>) -> CallHandle {
        let cfg = CallConfig {
            target: format!("sip:bob@{PEER}"),
            from_uri: "sip:callout@127.0.0.1".into(),
            from_display: Some("callout".into()),
            local: "127.0.0.1:5060".parse().unwrap(),
            destination: PEER.parse().unwrap(),
            credentials: creds,
            ring_timeout: ring,
            sdp_offer: sdp::offer("127.0.0.1:20000".parse().unwrap(), 1, 1),
            timers: Timers::default(),
            user_agent: String::new(),
            extra_headers: vec![
                ("X-Test".into(), "ok".into()),
                ("X-Bad".into(), "a\r\nInjected: 1".into()),
            ],
        };
        let h = self.ep.start_call(self.now, cfg);
        self.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            assert_eq!(t.dest, PEER.parse::<SocketAddr>().unwrap());
            match parse(&t.bytes).expect("we send parseable messages") {
                Message::Request(r) => self.sent.push((self.now - self.t0, r)),
                Message::Response(_) => {}
            }
        }
        while let Some((_, e)) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    /// Jump to the next timer (or `limit`), fire it, collect output.
    fn advance_until(&mut self, limit: Duration) {
        while let Some(t) = self.ep.poll_timeout() {
            if t - self.t0 > limit {
                break;
            }
            self.now = t.max(self.now);
            self.ep.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.t0 + limit;
    }

    fn at(&mut self, ms: u64) {
        self.advance_until(Duration::from_millis(ms));
    }

    fn respond(
        &mut self,
        to: &Request,
        code: u16,
        tag: Option<&str>,
        body: &[u8],
        extra: &[(&str, &str)],
    ) {
        let mut r = Response::for_request(to, code, tag);
        for (k, v) in extra {
            r.headers.push(k, *v);
        }
        if !body.is_empty() {
            r.headers.push("Content-Type", "application/sdp");
            r.body = body.to_vec();
        }
        self.ep
            .handle_datagram(self.now, PEER.parse().unwrap(), &r.to_bytes());
        self.drain();
    }

    fn request(&mut self, bytes: &[u8]) -> Option<Response> {
        self.request_from(PEER, bytes)
    }

    fn request_from(&mut self, source: &str, bytes: &[u8]) -> Option<Response> {
        self.ep
            .handle_datagram(self.now, source.parse().unwrap(), bytes);
        let mut resp = None;
        while let Some(t) = self.ep.poll_transmit() {
            if let Ok(Message::Response(r)) = parse(&t.bytes) {
                resp = Some(r);
            }
        }
        while let Some((_, e)) = self.ep.poll_event() {
            self.events.push(e);
        }
        resp
    }

    fn sent_methods(&self) -> Vec<(u128, String)> {
        self.sent
            .iter()
            .map(|(t, r)| (t.as_millis(), r.method.to_string()))
            .collect()
    }

    fn last(&self, m: Method) -> Request {
        self.sent
            .iter()
            .rev()
            .find(|(_, r)| r.method == m)
            .expect("sent")
            .1
            .clone()
    }

    fn ended(&self) -> Option<&EndReason> {
        self.events.iter().find_map(|e| match e {
            CallEvent::Ended(r) => Some(r),
            _ => None,
        })
    }
}

fn answer_sdp() -> Vec<u8> {
    sdp::offer("127.0.0.1:30000".parse().unwrap(), 9, 9)
}

#[test]
fn invite_is_retransmitted_by_timer_a_then_timer_b_gives_unreachable() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(60), None);
    let inv = h.last(Method::Invite);
    assert_eq!(inv.headers.get("X-Test"), Some("ok"));
    assert!(
        inv.headers.get("X-Bad").is_none() && inv.headers.get("Injected").is_none(),
        "no header injection"
    );
    h.at(40_000);
    let invites: Vec<u128> = h
        .sent_methods()
        .into_iter()
        .filter(|(_, m)| m == "INVITE")
        .map(|(t, _)| t)
        .collect();
    assert_eq!(invites, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(h.ended(), Some(&EndReason::Unreachable { code: None }));
    // No CANCEL without a provisional response (RFC 3261 9.1).
    assert!(h.sent_methods().iter().all(|(_, m)| m != "CANCEL"));
}

#[test]
fn ring_timeout_cancels_and_487_is_no_answer() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(20), None);
    let inv = h.last(Method::Invite);
    h.at(100);
    h.respond(&inv, 180, Some("b1"), b"", &[]);
    h.at(19_999);
    assert!(h.sent_methods().iter().all(|(_, m)| m != "CANCEL"));
    h.at(20_000);
    let cancel = h.last(Method::Cancel);
    assert_eq!(h.sent.last().unwrap().0, Duration::from_secs(20));
    // CANCEL copies the INVITE's branch, Call-ID, From, To and CSeq number.
    assert_eq!(cancel.headers.get("Via"), inv.headers.get("Via"));
    assert_eq!(cancel.headers.get("CSeq"), Some("1 CANCEL"));
    assert_eq!(cancel.uri, inv.uri);
    h.respond(&cancel, 200, Some("b1"), b"", &[]);
    h.respond(&inv, 487, Some("b1"), b"", &[]);
    let ack = h.last(Method::Ack);
    assert_eq!(
        ack.headers.get("Via"),
        inv.headers.get("Via"),
        "ACK for 487 is in the INVITE transaction"
    );
    assert_eq!(h.ended(), Some(&EndReason::NoAnswer { code: None }));
    assert!(h.events.contains(&CallEvent::Ringing));
}

#[test]
fn cancel_waits_for_a_provisional_and_a_missing_487_still_ends_the_call() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(1), None);
    let inv = h.last(Method::Invite);
    h.at(1200);
    assert!(
        h.sent_methods().iter().all(|(_, m)| m != "CANCEL"),
        "no CANCEL before a 1xx"
    );
    h.respond(&inv, 100, None, b"", &[]);
    assert_eq!(
        h.sent.last().unwrap().1.method,
        Method::Cancel,
        "CANCEL on the first 1xx"
    );
    // The far end never sends 487: 64*T1 later the call is over anyway.
    h.at(1200 + 32_000);
    assert_eq!(h.ended(), Some(&EndReason::NoAnswer { code: None }));
}

#[test]
fn answer_is_acked_through_the_route_set_and_retransmitted_2xx_re_acked() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(30), None);
    let inv = h.last(Method::Invite);
    let contact = format!("<sip:bob@{PEER}>");
    let rr = [
        ("Record-Route", "<sip:127.0.0.1:5070;lr>"),
        ("Contact", contact.as_str()),
    ];
    h.respond(&inv, 200, Some("b2"), &answer_sdp(), &rr);
    let acks = |h: &Harness| {
        h.sent
            .iter()
            .filter(|(_, r)| r.method == Method::Ack)
            .count()
    };
    assert_eq!(acks(&h), 1);
    let ack = h.last(Method::Ack);
    assert_eq!(ack.uri, format!("sip:bob@{PEER}"));
    assert_eq!(ack.headers.get("Route"), Some("<sip:127.0.0.1:5070;lr>"));
    assert_ne!(
        ack.headers.get("Via"),
        inv.headers.get("Via"),
        "2xx ACK is a new transaction"
    );
    assert!(
        matches!(h.events.iter().find(|e| matches!(e, CallEvent::Answered(_))), Some(CallEvent::Answered(n)) if n.remote.port() == 30000)
    );
    // Lost ACK: the 200 comes again, twice; each is ACKed, no new event.
    h.at(500);
    h.respond(&inv, 200, Some("b2"), &answer_sdp(), &rr);
    h.at(1500);
    h.respond(&inv, 200, Some("b2"), &answer_sdp(), &rr);
    assert_eq!(acks(&h), 3);
    assert_eq!(
        h.events
            .iter()
            .filter(|e| matches!(e, CallEvent::Answered(_)))
            .count(),
        1
    );
    assert_eq!(
        h.sent
            .iter()
            .filter(|(_, r)| r.method == Method::Invite)
            .count(),
        1,
        "no INVITE retransmission after 200"
    );
}

#[test]
fn local_hangup_sends_bye_with_timer_e_until_answered() {
    let mut h = Harness::new();
    let call = h.dial(Duration::from_secs(30), None);
    let inv = h.last(Method::Invite);
    let contact = format!("<sip:bob@{PEER}>");
    h.respond(
        &inv,
        200,
        Some("b3"),
        &answer_sdp(),
        &[("Contact", contact.as_str())],
    );
    h.at(5000);
    h.ep.hangup(h.now, call);
    h.drain();
    h.at(5000 + 1600);
    let byes: Vec<u128> = h
        .sent_methods()
        .into_iter()
        .filter(|(_, m)| m == "BYE")
        .map(|(t, _)| t)
        .collect();
    assert_eq!(byes, vec![5000, 5500, 6500], "Timer E doubles from T1");
    let bye = h.last(Method::Bye);
    assert_eq!(bye.headers.get("CSeq"), Some("2 BYE"));
    assert!(bye.headers.get("To").unwrap().contains("tag=b3"));
    assert_eq!(h.ended(), None, "not over until the BYE is answered");
    h.respond(&bye, 200, Some("b3"), b"", &[]);
    assert_eq!(h.ended(), Some(&EndReason::LocalHangup));
}

#[test]
fn info_and_bye_need_both_tags_and_the_peer_as_source() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(30), None);
    let inv = h.last(Method::Invite);
    h.respond(&inv, 200, Some("b4"), &answer_sdp(), &[]);
    let from = inv.headers.get("From").unwrap().to_string();
    let cid = inv.headers.get("Call-ID").unwrap().to_string();
    let req = |method: &str, cseq: u32, remote_tag: &str| {
        let body = "Signal=1\r\nDuration=100\r\n";
        format!(
            "{method} sip:callout@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK{method}{cseq}\r\n\
             From: <sip:bob@{PEER}>;tag={remote_tag}\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContent-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Someone who learnt the Call-ID and both tags, from elsewhere.
    let stranger = "127.0.0.1:6666";
    let r = h
        .request_from(stranger, req("INFO", 1, "b4").as_bytes())
        .unwrap();
    assert_eq!(r.code, 481);
    let r = h
        .request_from(stranger, req("BYE", 2, "b4").as_bytes())
        .unwrap();
    assert_eq!(r.code, 481);
    // From the peer's address but with a guessed From tag.
    let r = h.request(req("INFO", 3, "guess").as_bytes()).unwrap();
    assert_eq!(r.code, 481);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::InfoDigit { .. })));
    assert_eq!(h.ended(), None);
    // The peer itself.
    let r = h.request(req("INFO", 4, "b4").as_bytes()).unwrap();
    assert_eq!(r.code, 200);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::InfoDigit { digit: '1', .. })));
}

#[test]
fn remote_bye_and_info_digits_in_the_dialog() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(30), None);
    let inv = h.last(Method::Invite);
    h.respond(&inv, 200, Some("b4"), &answer_sdp(), &[]);
    let from = inv.headers.get("From").unwrap().to_string();
    let cid = inv.headers.get("Call-ID").unwrap().to_string();
    let req = |method: &str, cseq: u32, ctype: &str, body: &str| {
        format!(
            "{method} sip:callout@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK{method}{cseq}\r\n\
             From: <sip:bob@{PEER}>;tag=b4\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let r = h
        .request(
            req(
                "INFO",
                1,
                "application/dtmf-relay",
                "Signal=*\r\nDuration=100\r\n",
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.code, 200);
    // A retransmitted INFO gets the same answer and no second digit.
    let r2 = h
        .request(
            req(
                "INFO",
                1,
                "application/dtmf-relay",
                "Signal=*\r\nDuration=100\r\n",
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r2.code, 200);
    let r = h
        .request(req("INFO", 2, "application/pidf+xml", "<x/>").as_bytes())
        .unwrap();
    assert_eq!(r.code, 415);
    let digits: Vec<&CallEvent> = h
        .events
        .iter()
        .filter(|e| matches!(e, CallEvent::InfoDigit { .. }))
        .collect();
    assert_eq!(
        digits,
        vec![&CallEvent::InfoDigit {
            digit: '*',
            duration_ms: Some(100)
        }]
    );
    // A request with an old CSeq is refused.
    assert_eq!(
        h.request(req("OPTIONS", 1, "text/plain", "").as_bytes())
            .unwrap()
            .code,
        500
    );
    let r = h
        .request(req("BYE", 3, "text/plain", "").as_bytes())
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(h.ended(), Some(&EndReason::RemoteHangup));
}

#[test]
fn digest_401_is_retried_once_with_same_call_id_and_next_cseq() {
    let mut h = Harness::new();
    let creds = Credentials {
        username: "alice".into(),
        password: "pw".into(),
        realm: None,
    };
    h.dial(Duration::from_secs(30), Some(creds));
    let inv = h.last(Method::Invite);
    let chal = [(
        "WWW-Authenticate",
        r#"Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth""#,
    )];
    h.respond(&inv, 401, Some("x"), b"", &chal);
    let retry = h.last(Method::Invite);
    assert_eq!(retry.headers.get("Call-ID"), inv.headers.get("Call-ID"));
    assert_eq!(retry.headers.get("CSeq"), Some("2 INVITE"));
    assert!(!retry.headers.get("To").unwrap().contains("tag="));
    assert!(retry
        .headers
        .get("Authorization")
        .unwrap()
        .contains("algorithm=SHA-256"));
    // The same nonce challenged again means the password is wrong.
    h.respond(&retry, 401, Some("x"), b"", &chal);
    assert_eq!(
        h.ended(),
        Some(&EndReason::Rejected {
            code: 401,
            reason: "authentication failed".into()
        })
    );
    assert_eq!(
        h.sent
            .iter()
            .filter(|(_, r)| r.method == Method::Invite)
            .count(),
        2
    );
}

#[test]
fn final_codes_map_to_outcomes() {
    for (code, want) in [
        (486, EndReason::Busy { code: 486 }),
        (600, EndReason::Busy { code: 600 }),
        (603, EndReason::Declined { code: 603 }),
        (480, EndReason::NoAnswer { code: Some(480) }),
        (404, EndReason::Unreachable { code: Some(404) }),
        (503, EndReason::Unreachable { code: Some(503) }),
        (
            302,
            EndReason::Redirected {
                code: 302,
                targets: vec![],
            },
        ),
        // The callee must not choose our proxy (RFC 3261 8.1.3.4).
        (
            305,
            EndReason::Rejected {
                code: 305,
                reason: "Unknown".into(),
            },
        ),
        (
            488,
            EndReason::Rejected {
                code: 488,
                reason: "Not Acceptable Here".into(),
            },
        ),
        (
            401,
            EndReason::Rejected {
                code: 401,
                reason: "authentication failed".into(),
            },
        ),
    ] {
        let mut h = Harness::new();
        h.dial(Duration::from_secs(30), None);
        let inv = h.last(Method::Invite);
        h.respond(&inv, code, Some("t"), b"", &[]);
        assert_eq!(h.ended(), Some(&want), "code {code}");
    }
}

#[test]
fn a_302_is_acked_and_reports_its_targets_best_first() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(30), None);
    let inv = h.last(Method::Invite);
    h.respond(
        &inv,
        302,
        Some("t"),
        b"",
        &[("Contact", "<sip:b@h>;q=0.2, <sip:a@h>;q=0.7")],
    );
    assert_eq!(
        h.ended(),
        Some(&EndReason::Redirected {
            code: 302,
            targets: vec!["sip:a@h".into(), "sip:b@h".into()],
        })
    );
    // The transaction ACKs it; no second INVITE from the call itself.
    assert_eq!(h.last(Method::Ack).uri, inv.uri);
    let invites = h
        .sent_methods()
        .iter()
        .filter(|(_, m)| m == "INVITE")
        .count();
    assert_eq!(invites, 1);
}

#[test]
fn answer_without_a_common_codec_is_acked_then_byed() {
    let mut h = Harness::new();
    h.dial(Duration::from_secs(30), None);
    let inv = h.last(Method::Invite);
    let g729 = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n";
    h.respond(&inv, 200, Some("c"), g729, &[]);
    let methods: Vec<String> = h.sent_methods().into_iter().map(|(_, m)| m).collect();
    assert_eq!(methods, vec!["INVITE", "ACK", "BYE"]);
    let bye = h.last(Method::Bye);
    h.respond(&bye, 200, Some("c"), b"", &[]);
    assert_eq!(h.ended(), Some(&EndReason::MediaMismatch));
}

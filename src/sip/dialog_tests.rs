//! The dialog side of an outgoing call, driven through the endpoint with
//! virtual time: media that follows each SDP (183 then 200, re-INVITE and
//! UPDATE offers), reliable provisionals and PRACK, 421, and forking.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::call::{CallConfig, CallEvent};
use super::endpoint::Endpoint;
use super::message::{parse, Message, Method, Request, Response};
use super::sdp::{self, Codec, Direction};
use super::transaction::Timers;

const PEER: &str = "127.0.0.1:5070";
const FORK2: &str = "127.0.0.1:5072";

struct Harness {
    ep: Endpoint,
    now: Instant,
    /// Requests the call sent, with where they went.
    sent: Vec<(SocketAddr, Request)>,
    events: Vec<CallEvent>,
}

impl Harness {
    fn dial() -> Harness {
        let mut h = Harness {
            ep: Endpoint::new("127.0.0.1:5060".parse().unwrap(), 7),
            now: Instant::now(),
            sent: Vec::new(),
            events: Vec::new(),
        };
        let cfg = CallConfig {
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
            extra_headers: Vec::new(),
        };
        h.ep.start_call(h.now, cfg);
        h.drain();
        h
    }

    fn drain(&mut self) -> Option<Response> {
        let mut resp = None;
        while let Some(t) = self.ep.poll_transmit() {
            match parse(&t.bytes).expect("we send parseable messages") {
                Message::Request(r) => self.sent.push((t.dest, r)),
                Message::Response(r) => resp = Some(r),
            }
        }
        while let Some((_, e)) = self.ep.poll_event() {
            self.events.push(e);
        }
        resp
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(t) = self.ep.poll_timeout() {
            if t > until {
                break;
            }
            self.now = t.max(self.now);
            self.ep.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    fn respond(
        &mut self,
        from: &str,
        to: &Request,
        code: u16,
        tag: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) {
        let mut r = Response::for_request(to, code, Some(tag));
        for (k, v) in extra {
            r.headers.push(k, *v);
        }
        if !body.is_empty() {
            r.headers.push("Content-Type", "application/sdp");
            r.body = body.to_vec();
        }
        self.ep
            .handle_datagram(self.now, from.parse().unwrap(), &r.to_bytes());
        self.drain();
    }

    /// An in-dialog request from the far end (tag `tag`).
    fn request(
        &mut self,
        from: &str,
        method: &str,
        cseq: u32,
        tag: &str,
        body: &str,
    ) -> Option<Response> {
        let inv = self.last(Method::Invite);
        let our = inv.headers.get("From").unwrap();
        let cid = inv.headers.get("Call-ID").unwrap();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let msg = format!(
            "{method} sip:callout@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{method}{cseq}{tag}\r\n\
             From: <sip:bob@{PEER}>;tag={tag}\r\nTo: {our}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:bob@{from}>\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.ep
            .handle_datagram(self.now, from.parse().unwrap(), msg.as_bytes());
        self.drain()
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

    fn all(&self, m: Method) -> Vec<(SocketAddr, Request)> {
        self.sent
            .iter()
            .filter(|(_, r)| r.method == m)
            .cloned()
            .collect()
    }

    fn media_events(&self) -> Vec<&CallEvent> {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    CallEvent::EarlyMedia(_) | CallEvent::Answered(_) | CallEvent::MediaUpdated(_)
                )
            })
            .collect()
    }
}

fn sdp_at(port: u16, fmts: &str, extra: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {fmts}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:96 telephone-event/8000\r\n{extra}"
    )
    .into_bytes()
}

fn remote(e: &CallEvent) -> (SocketAddr, Codec, Direction) {
    match e {
        CallEvent::EarlyMedia(n) | CallEvent::Answered(n) | CallEvent::MediaUpdated(n) => {
            (n.remote, n.codec, n.direction)
        }
        _ => unreachable!("only media events are passed"),
    }
}

#[test]
fn media_follows_the_183_then_the_200_and_the_answers_ptime_and_event_type() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    let supported: Vec<&str> = inv.headers.all("Supported").collect();
    assert_eq!(supported.join(", "), "100rel, timer");
    let allow: Vec<&str> = inv.headers.all("Allow").collect();
    assert!(allow.join(",").contains("UPDATE"), "{allow:?}");
    h.respond(PEER, &inv, 183, "b", &sdp_at(4000, "0 96", ""), &[]);
    h.respond(
        PEER,
        &inv,
        200,
        "b",
        &sdp_at(4002, "0 96", "a=ptime:40\r\n"),
        &[],
    );
    let m = h.media_events();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(remote(m[0]).0, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(remote(m[1]).0, "127.0.0.1:4002".parse().unwrap());
    let CallEvent::Answered(n) = m[1] else {
        panic!("{m:?}")
    };
    assert_eq!(
        (n.send_ptime(), n.dtmf_pt, n.local_dtmf_pt),
        (40, Some(96), Some(101))
    );
}

#[test]
fn reinvite_and_update_offers_are_answered_and_move_media() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    h.respond(PEER, &inv, 200, "b", &sdp_at(4000, "0 96", ""), &[]);
    // Hold.
    let body = String::from_utf8(sdp_at(4000, "0 96", "a=sendonly\r\n")).unwrap();
    let r = h.request(PEER, "INVITE", 2, "b", &body).unwrap();
    assert_eq!(r.code, 200);
    let ans = sdp::parse_answer(&r.body).unwrap();
    assert_eq!(
        (ans.remote.port(), ans.direction),
        (20000, Direction::RecvOnly)
    );
    assert!(String::from_utf8_lossy(&r.body).contains("o=callout 5 2 "));
    // A retransmission of it gets the same answer and no second update.
    let again = h.request(PEER, "INVITE", 2, "b", &body).unwrap();
    assert_eq!(again.body, r.body);
    // Resume on a new port with PCMA only, by UPDATE.
    let body = String::from_utf8(sdp_at(4010, "8 96", "")).unwrap();
    let r = h.request(PEER, "UPDATE", 3, "b", &body).unwrap();
    assert_eq!(r.code, 200);
    let ans = sdp::parse_answer(&r.body).unwrap();
    assert_eq!(
        (ans.codec, ans.direction),
        (Codec::Pcma, Direction::SendRecv)
    );
    // An offer we cannot take: 488, media unchanged.
    let body = String::from_utf8(sdp_at(4020, "18", "")).unwrap();
    assert_eq!(h.request(PEER, "INVITE", 4, "b", &body).unwrap().code, 488);
    let m: Vec<_> = h.media_events().into_iter().map(remote).collect();
    assert_eq!(
        m,
        vec![
            (
                "127.0.0.1:4000".parse().unwrap(),
                Codec::Pcmu,
                Direction::SendRecv
            ),
            (
                "127.0.0.1:4000".parse().unwrap(),
                Codec::Pcmu,
                Direction::SendOnly
            ),
            (
                "127.0.0.1:4010".parse().unwrap(),
                Codec::Pcma,
                Direction::SendRecv
            ),
        ]
    );
    // An offerless re-INVITE: our offer in the 200, the answer in the ACK.
    let r = h.request(PEER, "INVITE", 5, "b", "").unwrap();
    assert!(String::from_utf8_lossy(&r.body).contains("RTP/AVP 0 8 101"));
    let body = String::from_utf8(sdp_at(4030, "0 96", "")).unwrap();
    assert_eq!(h.request(PEER, "ACK", 5, "b", &body), None);
    let last = remote(h.media_events().last().unwrap());
    assert_eq!(last.0, "127.0.0.1:4030".parse().unwrap());
    // An UPDATE without SDP (a refresh) changes nothing.
    assert_eq!(h.request(PEER, "UPDATE", 6, "b", "").unwrap().code, 200);
    assert_eq!(h.media_events().len(), 4);
}

#[test]
fn a_reliable_183_is_pracked_once_per_rseq() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    let rel = [
        ("Require", "100rel"),
        ("RSeq", "1"),
        ("Contact", "<sip:bob@127.0.0.1:5070>"),
    ];
    h.respond(PEER, &inv, 183, "b", &sdp_at(4000, "0", ""), &rel);
    let pracks = h.all(Method::Prack);
    assert_eq!(pracks.len(), 1);
    let p = &pracks[0].1;
    assert_eq!(p.headers.get("RAck"), Some("1 1 INVITE"));
    assert_eq!(p.headers.get("CSeq"), Some("2 PRACK"));
    assert!(p.headers.get("To").unwrap().contains("tag=b"));
    // The 183 is retransmitted (our PRACK is on its way): absorbed.
    h.respond(PEER, &inv, 183, "b", &sdp_at(4000, "0", ""), &rel);
    assert_eq!(h.all(Method::Prack).len(), 1);
    assert_eq!(h.media_events().len(), 1);
    // The PRACK itself is retransmitted until answered, then stops.
    h.advance(Duration::from_millis(600));
    assert_eq!(h.all(Method::Prack).len(), 2, "Timer E resends the PRACK");
    h.respond(PEER, &p.clone(), 200, "b", b"", &[]);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.all(Method::Prack).len(), 2);
    // The next reliable response gets its own PRACK.
    let rel2 = [("Require", "100rel"), ("RSeq", "2")];
    h.respond(PEER, &inv, 180, "b", b"", &rel2);
    assert_eq!(
        h.last(Method::Prack).headers.get("RAck"),
        Some("2 1 INVITE")
    );
}

#[test]
fn a_421_for_100rel_is_retried_requiring_it() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    assert_eq!(inv.headers.get("Require"), None);
    h.respond(PEER, &inv, 421, "x", b"", &[("Require", "100rel")]);
    let invites = h.all(Method::Invite);
    assert_eq!(invites.len(), 2);
    let retry = &invites[1].1;
    assert_eq!(retry.headers.get("Require"), Some("100rel"));
    assert_eq!(retry.headers.get("CSeq"), Some("2 INVITE"));
    assert_eq!(retry.headers.get("Call-ID"), inv.headers.get("Call-ID"));
    assert!(!retry.headers.get("To").unwrap().contains("tag="));
    // A second 421 ends the call rather than looping.
    h.respond(PEER, retry, 421, "x", b"", &[("Require", "100rel")]);
    assert_eq!(h.all(Method::Invite).len(), 2);
    assert!(h.events.iter().any(|e| matches!(e, CallEvent::Ended(_))));
}

#[test]
fn a_second_fork_is_acked_and_byed_on_its_own_dialog() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    let c1 = [("Contact", "<sip:bob@127.0.0.1:5070>")];
    let c2 = [("Contact", "<sip:bob@127.0.0.1:5072>")];
    h.respond(PEER, &inv, 200, "one", &sdp_at(4000, "0", ""), &c1);
    h.respond(PEER, &inv, 200, "two", &sdp_at(5000, "0", ""), &c2);
    let acks = h.all(Method::Ack);
    assert_eq!(acks.len(), 2);
    assert!(acks[0].1.headers.get("To").unwrap().contains("tag=one"));
    assert!(acks[1].1.headers.get("To").unwrap().contains("tag=two"));
    assert_eq!(acks[1].0, FORK2.parse().unwrap());
    assert_eq!(acks[1].1.headers.get("CSeq"), Some("1 ACK"));
    let byes = h.all(Method::Bye);
    assert_eq!(byes.len(), 1);
    assert!(byes[0].1.headers.get("To").unwrap().contains("tag=two"));
    assert_eq!(byes[0].0, FORK2.parse().unwrap());
    // Its 2xx retransmitted: ACKed again, no second BYE.
    h.respond(PEER, &inv, 200, "two", &sdp_at(5000, "0", ""), &c2);
    assert_eq!(h.all(Method::Ack).len(), 3);
    assert_eq!(h.all(Method::Bye).len(), 1);
    let bye = byes[0].1.clone();
    h.respond(FORK2, &bye, 200, "two", b"", &[]);
    // Only one answered event; the second fork's media never used.
    assert_eq!(h.media_events().len(), 1);
    // A BYE from the second fork does not end the live call.
    let r = h.request(FORK2, "BYE", 9, "two", "").unwrap();
    assert_eq!(r.code, 481);
    assert!(!h.events.iter().any(|e| matches!(e, CallEvent::Ended(_))));
    // The kept fork's BYE does.
    assert_eq!(h.request(PEER, "BYE", 2, "one", "").unwrap().code, 200);
    assert!(h.events.iter().any(|e| matches!(e, CallEvent::Ended(_))));
}

#[test]
fn as_refresher_we_send_update_at_half_the_interval() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    let se = [
        ("Session-Expires", "90;refresher=uac"),
        ("Require", "timer"),
    ];
    h.respond(PEER, &inv, 200, "b", &sdp_at(4000, "0", ""), &se);
    h.advance(Duration::from_secs(44));
    assert!(h.all(Method::Update).is_empty());
    h.advance(Duration::from_secs(1));
    let ups = h.all(Method::Update);
    assert_eq!(ups.len(), 1);
    let up = ups[0].1.clone();
    assert_eq!(up.headers.get("Session-Expires"), Some("90;refresher=uac"));
    assert!(up.headers.get("To").unwrap().contains("tag=b"));
    assert!(up.body.is_empty());
    h.respond(
        PEER,
        &up,
        200,
        "b",
        b"",
        &[("Session-Expires", "90;refresher=uac")],
    );
    // The next refresh 45 s after that one was answered; the call lives on.
    h.advance(Duration::from_secs(44));
    assert_eq!(h.all(Method::Update).len(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.all(Method::Update).len(), 2);
    let up = h.last(Method::Update);
    h.respond(PEER, &up, 200, "b", b"", &[]);
    assert!(!h.events.iter().any(|e| matches!(e, CallEvent::Ended(_))));
    // A refresh answered 481: the dialog is gone, BYE and a clear reason.
    h.advance(Duration::from_secs(45));
    let up = h.last(Method::Update);
    h.respond(PEER, &up, 481, "b", b"", &[]);
    let bye = h.last(Method::Bye);
    h.respond(PEER, &bye, 200, "b", b"", &[]);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::Ended(super::call::EndReason::SessionExpired))));
}

#[test]
fn when_the_callee_refreshes_a_missing_refresh_ends_the_call() {
    let mut h = Harness::dial();
    let inv = h.last(Method::Invite);
    let se = [("Session-Expires", "90;refresher=uas")];
    h.respond(PEER, &inv, 200, "b", &sdp_at(4000, "0", ""), &se);
    h.advance(Duration::from_secs(40));
    // The callee's refresh is answered with the interval and keeps it
    // refresher.
    let r = h.request(PEER, "UPDATE", 2, "b", "").unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Session-Expires"), Some("90;refresher=uac"));
    h.advance(Duration::from_secs(59));
    assert!(
        h.all(Method::Bye).is_empty(),
        "60 s after the refresh, not before"
    );
    assert!(h.all(Method::Update).is_empty(), "we are not the refresher");
    h.advance(Duration::from_secs(2));
    let bye = h.last(Method::Bye);
    h.respond(PEER, &bye, 200, "b", b"", &[]);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::Ended(super::call::EndReason::SessionExpired))));
}

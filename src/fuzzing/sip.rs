//! SIP targets: one datagram into the parser and two endpoints, and a
//! whole exchange against a call and a registration in progress.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::auth::{Challenge, Credentials};
use crate::sip::call::{CallConfig, CallEvent};
use crate::sip::endpoint::Endpoint;
use crate::sip::header::{CSeq, NameAddr, SipUri, Via};
use crate::sip::message::{self, Message, MAX_MESSAGE};
use crate::sip::register::RegistrationConfig;
use crate::sip::sdp;
use crate::sip::transaction::Timers;
use crate::sip::validate::validate_request;

const LOCAL: &str = "127.0.0.1:5060";
const PEER: &str = "127.0.0.1:5070";

fn addr(s: &str) -> SocketAddr {
    // Constant literals above; they always parse.
    s.parse().expect("constant socket address")
}

/// One datagram: framing, parsing, a serialise/parse round trip, every
/// header parser on the headers it names, and the endpoint both as a
/// caller (requests it did not expect) and as a softphone that takes
/// incoming calls. Whatever the endpoint sends back must parse.
pub fn sip_message(data: &[u8]) -> bool {
    let _ = message::frame_len(data);
    let parsed = message::parse(data);
    if let Ok(m) = &parsed {
        round_trip(m);
        headers(m);
    }
    let now = Instant::now();
    for incoming in [false, true] {
        let mut ep = Endpoint::new(addr(LOCAL), 1);
        ep.set_accept_incoming(incoming);
        ep.handle_datagram(now, addr(PEER), data);
        let mut seen = Sent::default();
        seen.drain(&mut ep, now);
        // A second copy is a retransmission: it must be answered alike.
        ep.handle_datagram(now, addr(PEER), data);
        seen.drain(&mut ep, now);
    }
    parsed.is_ok()
}

/// What serialising a parsed message and parsing it again must give back:
/// the same message, but for Content-Length, which `to_bytes` rewrites.
fn round_trip(m: &Message) {
    let bytes = match m {
        Message::Request(r) => r.to_bytes(),
        Message::Response(r) => r.to_bytes(),
    };
    if bytes.len() > MAX_MESSAGE {
        return;
    }
    let back = match message::parse(&bytes) {
        Ok(b) => b,
        Err(e) => panic!("a parsed message, serialised again, does not parse: {e}"),
    };
    assert_eq!(
        without_length(back),
        without_length(m.clone()),
        "serialise/parse round trip changed the message"
    );
}

fn without_length(mut m: Message) -> Message {
    match &mut m {
        Message::Request(r) => r.headers.remove("Content-Length"),
        Message::Response(r) => r.headers.remove("Content-Length"),
    }
    m
}

/// Every header parser on the values it is meant for; an answer to a
/// digest challenge must stay one header line.
fn headers(m: &Message) {
    let h = m.headers();
    if let Message::Request(r) = m {
        let _ = SipUri::parse(&r.uri);
        let _ = validate_request(r);
    }
    for v in h.all("Via") {
        let _ = Via::parse(v);
    }
    for name in ["From", "To", "Contact", "Route", "Record-Route"] {
        for v in h.all(name) {
            if let Ok(a) = NameAddr::parse(v) {
                let _ = a.tag();
                let _ = a.to_header();
                let _ = SipUri::parse(&a.uri);
            }
        }
    }
    if let Some(v) = h.get("CSeq") {
        let _ = CSeq::parse(v);
    }
    let creds = Credentials {
        username: "callout".into(),
        password: "secret".into(),
        realm: None,
    };
    for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
        for v in h.all(name) {
            if let Ok(c) = Challenge::parse(v) {
                let answer = c.respond(&creds, "INVITE", "sip:bob@127.0.0.1", 1, "0a4f113b");
                assert!(
                    !answer.contains(['\r', '\n']),
                    "a challenge made the Authorization value span lines: {answer:?}"
                );
            }
        }
        let _ = Challenge::best(h.all(name));
    }
}

/// The last request of each kind the endpoint sent, so an input can
/// answer it with the right Call-ID, branch, tag and CSeq.
#[derive(Default)]
struct Sent {
    invite: Option<message::Request>,
    register: Option<message::Request>,
    last: Option<message::Request>,
}

impl Sent {
    /// Drain what the endpoint sends and reports; all of it must parse.
    /// Incoming calls are answered, so the UAS side runs too.
    fn drain(&mut self, ep: &mut Endpoint, now: Instant) {
        while let Some(t) = ep.poll_transmit() {
            let m = match message::parse(&t.bytes) {
                Ok(m) => m,
                Err(e) => panic!(
                    "the endpoint sent bytes that do not parse ({e}): {:?}",
                    String::from_utf8_lossy(&t.bytes)
                ),
            };
            if let Message::Request(r) = m {
                match r.method {
                    message::Method::Invite => self.invite = Some(r.clone()),
                    message::Method::Register => self.register = Some(r.clone()),
                    _ => {}
                }
                if r.method != message::Method::Ack {
                    self.last = Some(r);
                }
            }
        }
        let mut offered = Vec::new();
        while let Some((handle, event)) = ep.poll_event() {
            if let CallEvent::Offered(n) = event {
                offered.push((handle, n));
            }
        }
        for (handle, n) in offered {
            let answer = sdp::answer(addr("127.0.0.1:20002"), 3, &n);
            ep.answer(now, handle, answer);
        }
        // Answering queues a 200; send it through the same checks.
        while let Some(t) = ep.poll_transmit() {
            if let Err(e) = message::parse(&t.bytes) {
                panic!("the endpoint sent bytes that do not parse ({e})");
            }
        }
    }

    /// Fill the placeholders of a seed with what was really sent.
    fn substitute(&self, chunk: &[u8]) -> Vec<u8> {
        let mut out = chunk.to_vec();
        let fields = |r: &Option<message::Request>| {
            let r = r.as_ref();
            let h = |name: &str| {
                r.and_then(|r| r.headers.get(name))
                    .unwrap_or_default()
                    .to_string()
            };
            let branch = r
                .and_then(|r| r.headers.get("Via"))
                .and_then(|v| Via::parse(v).ok())
                .and_then(|v| v.branch().map(str::to_string))
                .unwrap_or_default();
            let tag = r
                .and_then(|r| r.headers.get("From"))
                .and_then(|v| NameAddr::parse(v).ok())
                .and_then(|a| a.tag().map(str::to_string))
                .unwrap_or_default();
            let cseq = h("CSeq").split(' ').next().unwrap_or_default().to_string();
            let method = r.map(|r| r.method.to_string()).unwrap_or_default();
            [
                h("Call-ID"),
                branch,
                tag,
                cseq,
                method,
                h("Via"),
                h("From"),
                h("To"),
            ]
        };
        // Longer names first: `$FROM` is a prefix of `$FROMTAG`.
        const NAMES: [&str; 8] = [
            "CALLID", "BRANCH", "FROMTAG", "CSEQ", "METHOD", "VIA", "FROM", "TO",
        ];
        for (prefix, req) in [
            ("$R", &self.register),
            ("$L", &self.last),
            ("$", &self.invite),
        ] {
            for (name, value) in NAMES.iter().zip(fields(req)) {
                let key = format!("{prefix}{name}");
                out = replace(&out, key.as_bytes(), value.as_bytes());
            }
        }
        out
    }
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// How long after hanging up every call must be gone: Timer F (64*T1)
/// plus lingering, with room to spare.
const WIND_DOWN: Duration = Duration::from_secs(300);

/// A call placed with credentials and a trunk registration in progress;
/// the input is the far end's side: datagrams separated by a line `%%`,
/// in which `$CALLID`, `$BRANCH`, `$FROMTAG`, `$CSEQ` (number), `$METHOD`,
/// `$VIA`, `$FROM` and `$TO` (whole header values) are replaced by what
/// the last INVITE carried, `$R...` by the last REGISTER and `$L...` by
/// the last other request (not ACK), so a seed answers what callout
/// really sent. 100 ms pass between datagrams. Then the
/// call is hung up: within five minutes of virtual time it must be gone,
/// and nothing sent may fail to parse.
pub fn sip_dialog(data: &[u8]) -> bool {
    let t0 = Instant::now();
    let mut now = t0;
    let mut ep = Endpoint::new(addr(LOCAL), 7);
    let creds = Credentials {
        username: "callout".into(),
        password: "secret".into(),
        realm: None,
    };
    ep.start_registration(
        now,
        RegistrationConfig {
            registrar_uri: "sip:carrier.example".into(),
            aor: "sip:0312345678@carrier.example".into(),
            destination: addr(PEER),
            local: addr(LOCAL),
            credentials: Some(creds.clone()),
            expires: 300,
            timers: Timers::default(),
        },
    );
    let call = ep.start_call(
        now,
        CallConfig {
            target: format!("sip:bob@{PEER}"),
            from_uri: "sip:callout@127.0.0.1".into(),
            from_display: Some("callout".into()),
            local: addr(LOCAL),
            destination: addr(PEER),
            credentials: Some(creds),
            ring_timeout: Duration::from_secs(30),
            sdp_offer: sdp::offer(addr("127.0.0.1:20000"), 1, 1),
            timers: Timers::default(),
            user_agent: "callout-fuzz".into(),
            extra_headers: Vec::new(),
        },
    );
    let mut sent = Sent::default();
    sent.drain(&mut ep, now);
    let mut parsed = false;
    for chunk in super::split(data, b"\n%%\n") {
        let bytes = sent.substitute(chunk);
        parsed |= message::parse(&bytes).is_ok();
        ep.handle_datagram(now, addr(PEER), &bytes);
        sent.drain(&mut ep, now);
        now += Duration::from_millis(100);
        run_timers(&mut ep, &mut sent, now);
    }
    ep.hangup(now, call);
    sent.drain(&mut ep, now);
    let end = now + WIND_DOWN;
    run_timers(&mut ep, &mut sent, end);
    assert_eq!(
        ep.active_calls(),
        0,
        "a call still exists {WIND_DOWN:?} after hanging up"
    );
    parsed
}

/// Fire every timer due up to `until`, in order.
fn run_timers(ep: &mut Endpoint, sent: &mut Sent, until: Instant) {
    // A timer that keeps re-arming itself at the same instant would spin
    // forever; no real schedule needs this many firings in five minutes.
    for _ in 0..100_000 {
        match ep.poll_timeout() {
            Some(t) if t <= until => {
                ep.handle_timeout(t);
                sent.drain(ep, t);
            }
            _ => return,
        }
    }
    panic!("timers keep firing without time passing");
}

//! Trunk behaviour through the endpoint with virtual time: addresses
//! learned from `received`/`rport`, the digest realm rule, challenged
//! BYEs and 423 Interval Too Brief.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::call::{CallConfig, CallEvent, EndReason};
use super::endpoint::Endpoint;
use super::message::{parse, Message, Method, Request, Response};
use super::register::{RegEvent, RegistrationConfig};
use super::sdp;
use super::transaction::Timers;

const TRUNK: &str = "198.51.100.1:5060";
const BOUND: &str = "10.0.0.5:5060";
const PUBLIC: &str = "203.0.113.9:40123";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn creds(realm: Option<&str>) -> Credentials {
    Credentials {
        username: "alice".into(),
        password: "secret".into(),
        realm: realm.map(str::to_string),
    }
}

fn call_cfg(creds: Option<Credentials>) -> CallConfig {
    CallConfig {
        target: "sip:0312345678@carrier.example".into(),
        from_uri: "sip:callout@carrier.example".into(),
        from_display: None,
        local: addr("0.0.0.0:5060"),
        destination: addr(TRUNK),
        credentials: creds,
        ring_timeout: Duration::from_secs(30),
        sdp_offer: sdp::offer(addr("10.0.0.5:20000"), 1, 1),
        timers: Timers::default(),
        user_agent: String::new(),
        extra_headers: Vec::new(),
    }
}

/// Everything the endpoint sent, parsed.
fn sent(ep: &mut Endpoint) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(parse(&t.bytes).expect("we send parseable messages"));
    }
    out
}

fn requests(msgs: Vec<Message>) -> Vec<Request> {
    msgs.into_iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// A response to `req` from the trunk, its Via marked as the NAT saw us.
fn nat_response(req: &Request, code: u16, tag: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = Response::for_request(req, code, tag);
    let via = r.headers.get("Via").unwrap().replace(";rport", "");
    r.headers.remove("Via");
    r.headers
        .push("Via", format!("{via};received=203.0.113.9;rport=40123"));
    for (k, v) in extra {
        r.headers.push(k, *v);
    }
    r.to_bytes()
}

fn challenge(realm: &str) -> String {
    format!("Digest realm=\"{realm}\", nonce=\"n{realm}\", algorithm=MD5, qop=\"auth\"")
}

#[test]
fn never_the_unspecified_address_and_contact_follows_what_the_trunk_saw() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(addr("0.0.0.0:5060"), 1);
    ep.set_advertise(Some(addr("10.0.0.5:0")));
    let reg = ep.start_registration(
        t0,
        RegistrationConfig {
            registrar_uri: "sip:carrier.example".into(),
            aor: "sip:0312345678@carrier.example".into(),
            destination: addr(TRUNK),
            local: addr("0.0.0.0:5060"),
            credentials: None,
            expires: 600,
            timers: Timers::default(),
        },
    );
    let first = requests(sent(&mut ep)).remove(0);
    let text = String::from_utf8(first.to_bytes()).unwrap();
    assert!(!text.contains("0.0.0.0"), "{text}");
    assert!(
        text.contains(&format!("Via: SIP/2.0/UDP {BOUND};")),
        "{text}"
    );
    assert!(text.contains(";rport"), "{text}");
    // The registrar saw us at the NAT's public address: register that.
    ep.handle_datagram(t0, addr(TRUNK), &nat_response(&first, 200, Some("r"), &[]));
    let again = requests(sent(&mut ep));
    assert_eq!(again.len(), 1, "a new REGISTER with the learned Contact");
    assert_eq!(
        again[0].headers.get("Contact"),
        Some(format!("<sip:callout@{PUBLIC}>").as_str())
    );
    assert_eq!(again[0].headers.get("Call-ID"), Some(reg.as_str()));
    ep.handle_datagram(
        t0,
        addr(TRUNK),
        &nat_response(&again[0], 200, Some("r"), &[]),
    );
    assert!(
        requests(sent(&mut ep)).is_empty(),
        "learned once, registered once"
    );

    // Later calls to the trunk say the same.
    ep.start_call(t0, call_cfg(None));
    let inv = requests(sent(&mut ep)).remove(0);
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(
        inv.headers.get("Contact"),
        Some(format!("<sip:callout@{PUBLIC}>").as_str())
    );
    assert!(inv.headers.get("Via").unwrap().contains(PUBLIC));

    // A configured address (pinned) wins over what was learned.
    let mut pinned = call_cfg(None);
    pinned.local = addr("192.0.2.7:0");
    ep.start_call_as(t0, pinned, true);
    let inv = requests(sent(&mut ep)).remove(0);
    assert_eq!(
        inv.headers.get("Contact"),
        Some("<sip:callout@192.0.2.7:5060>")
    );
}

#[test]
fn a_callee_cannot_steer_our_address() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(addr(BOUND), 1);
    // Not trusted: a callee reached directly.
    ep.start_call(t0, call_cfg(None));
    let inv = requests(sent(&mut ep)).remove(0);
    ep.handle_datagram(t0, addr(TRUNK), &nat_response(&inv, 180, Some("x"), &[]));
    let _ = sent(&mut ep);
    ep.start_call(t0, call_cfg(None));
    let inv = requests(sent(&mut ep)).remove(0);
    assert_eq!(
        inv.headers.get("Contact"),
        Some(format!("<sip:callout@{BOUND}>").as_str())
    );
}

fn ended(ep: &mut Endpoint) -> Option<EndReason> {
    let mut out = None;
    while let Some((_, e)) = ep.poll_event() {
        if let CallEvent::Ended(r) = e {
            out = Some(r);
        }
    }
    out
}

#[test]
fn a_challenge_for_another_realm_ends_the_call_without_a_hash() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(addr(BOUND), 1);
    ep.start_call(t0, call_cfg(Some(creds(Some("carrier.example")))));
    let inv = requests(sent(&mut ep)).remove(0);
    let r = nat_response(
        &inv,
        401,
        Some("x"),
        &[("WWW-Authenticate", &challenge("evil.example"))],
    );
    ep.handle_datagram(t0, addr(TRUNK), &r);
    let out = requests(sent(&mut ep));
    assert!(
        out.iter()
            .all(|r| r.method == Method::Ack && r.headers.get("Authorization").is_none()),
        "{out:?}"
    );
    match ended(&mut ep) {
        Some(EndReason::Rejected { code: 401, reason }) => {
            assert!(
                reason.contains("\"evil.example\"") && reason.contains("\"carrier.example\""),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The right realm is answered.
    ep.start_call(t0, call_cfg(Some(creds(Some("carrier.example")))));
    let inv = requests(sent(&mut ep)).remove(0);
    let r = nat_response(
        &inv,
        407,
        Some("x"),
        &[("Proxy-Authenticate", &challenge("carrier.example"))],
    );
    ep.handle_datagram(t0, addr(TRUNK), &r);
    let out = requests(sent(&mut ep));
    let retry = out
        .iter()
        .find(|r| r.method == Method::Invite)
        .expect("INVITE again");
    assert!(retry
        .headers
        .get("Proxy-Authorization")
        .unwrap()
        .contains("realm=\"carrier.example\""));
}

#[test]
fn a_challenged_bye_is_sent_again_with_credentials() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(addr(BOUND), 1);
    let h = ep.start_call(t0, call_cfg(Some(creds(Some("carrier.example")))));
    let inv = requests(sent(&mut ep)).remove(0);
    let mut ok = Response::for_request(&inv, 200, Some("callee"));
    ok.headers.push("Contact", "<sip:bob@198.51.100.1:5060>");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = sdp::offer(addr("198.51.100.1:30000"), 2, 1);
    ep.handle_datagram(t0, addr(TRUNK), &ok.to_bytes());
    let _ = sent(&mut ep);
    ep.hangup(t0, h);
    let bye = requests(sent(&mut ep)).remove(0);
    assert_eq!(bye.method, Method::Bye);
    assert!(bye.headers.get("Proxy-Authorization").is_none());
    let mut r = Response::for_request(&bye, 407, None);
    r.headers
        .push("Proxy-Authenticate", challenge("carrier.example"));
    ep.handle_datagram(t0, addr(TRUNK), &r.to_bytes());
    let again = requests(sent(&mut ep));
    assert_eq!(again.len(), 1, "{again:?}");
    let bye2 = &again[0];
    assert_eq!(bye2.method, Method::Bye);
    let auth = bye2
        .headers
        .get("Proxy-Authorization")
        .expect("credentials");
    assert!(
        auth.contains("realm=\"carrier.example\"")
            && auth.contains("uri=\"sip:bob@198.51.100.1:5060\""),
        "{auth}"
    );
    assert_ne!(bye.headers.get("CSeq"), bye2.headers.get("CSeq"));
    ep.handle_datagram(
        t0,
        addr(TRUNK),
        &Response::for_request(bye2, 200, None).to_bytes(),
    );
    assert_eq!(ended(&mut ep), Some(EndReason::LocalHangup));
    // A second challenge for the BYE is not answered again: the call ends.
}

/// Jump from timer to timer until the registration sends again.
fn next_register(ep: &mut Endpoint) -> (Instant, Request) {
    for _ in 0..20 {
        let next = ep.poll_timeout().expect("a timer");
        ep.handle_timeout(next);
        if let Some(r) = requests(sent(ep)).into_iter().next() {
            return (next, r);
        }
    }
    panic!("no REGISTER after 20 timers");
}

#[test]
fn interval_too_brief_raises_expires_a_bounded_number_of_times() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(addr(BOUND), 1);
    ep.start_registration(
        t0,
        RegistrationConfig {
            registrar_uri: "sip:carrier.example".into(),
            aor: "sip:0312345678@carrier.example".into(),
            destination: addr(TRUNK),
            local: addr(BOUND),
            credentials: Some(creds(Some("carrier.example"))),
            expires: 60,
            timers: Timers::default(),
        },
    );
    let mut req = requests(sent(&mut ep)).remove(0);
    assert_eq!(req.headers.get("Expires"), Some("60"));
    let mut r = Response::for_request(&req, 423, Some("r"));
    r.headers.push("Min-Expires", "3600");
    ep.handle_datagram(t0, addr(TRUNK), &r.to_bytes());
    req = requests(sent(&mut ep)).remove(0);
    assert_eq!(req.headers.get("Expires"), Some("3600"));
    let mut events = Vec::new();
    while let Some((_, e)) = ep.poll_reg_event() {
        events.push(e);
    }
    assert_eq!(events, vec![RegEvent::IntervalRaised { expires: 3600 }]);
    // A registrar that keeps saying 423 with the same Min-Expires is a
    // failure (retried later), not a loop.
    let mut r = Response::for_request(&req, 423, Some("r"));
    r.headers.push("Min-Expires", "3600");
    ep.handle_datagram(t0, addr(TRUNK), &r.to_bytes());
    assert!(requests(sent(&mut ep)).is_empty());
    let mut events = Vec::new();
    while let Some((_, e)) = ep.poll_reg_event() {
        events.push(e);
    }
    assert_eq!(events, vec![RegEvent::Failed { code: Some(423) }]);
    // Nor a Min-Expires beyond a day.
    let (next, r2) = next_register(&mut ep);
    req = r2;
    let mut r = Response::for_request(&req, 423, Some("r"));
    r.headers.push("Min-Expires", "999999");
    ep.handle_datagram(next, addr(TRUNK), &r.to_bytes());
    assert!(requests(sent(&mut ep)).is_empty());

    // A registrar challenge for another realm is refused, no hash sent.
    let (next, r2) = next_register(&mut ep);
    req = r2;
    let mut r = Response::for_request(&req, 401, Some("r"));
    r.headers
        .push("WWW-Authenticate", challenge("evil.example"));
    ep.handle_datagram(next, addr(TRUNK), &r.to_bytes());
    assert!(requests(sent(&mut ep)).is_empty());
    let mut refused = false;
    while let Some((_, e)) = ep.poll_reg_event() {
        refused |=
            matches!(e, RegEvent::RealmRefused { ref reason } if reason.contains("evil.example"));
    }
    assert!(refused);
}

#[test]
fn a_moved_registrar_gets_the_same_registration_at_its_new_address() {
    let t0 = Instant::now();
    let mut ep = Endpoint::new(addr(BOUND), 1);
    let cid = ep.start_registration(
        t0,
        RegistrationConfig {
            registrar_uri: "sip:carrier.example".into(),
            aor: "sip:0312345678@carrier.example".into(),
            destination: addr(TRUNK),
            local: addr(BOUND),
            credentials: None,
            expires: 600,
            timers: Timers::default(),
        },
    );
    let first = requests(sent(&mut ep)).remove(0);
    let ok = Response::for_request(&first, 200, Some("r"));
    ep.handle_datagram(t0, addr(TRUNK), &ok.to_bytes());
    assert!(sent(&mut ep).is_empty());
    // DNS now says elsewhere: a REGISTER goes there at once, same
    // registration (Call-ID), next CSeq.
    let moved = addr("198.51.100.2:5080");
    ep.move_registration(t0, &cid, moved);
    let t = ep.poll_transmit().expect("a REGISTER to the new address");
    assert_eq!(t.dest, moved);
    let Ok(Message::Request(again)) = parse(&t.bytes) else {
        panic!("not a request")
    };
    assert_eq!(again.method, Method::Register);
    assert_eq!(again.headers.get("Call-ID"), first.headers.get("Call-ID"));
    assert_eq!(again.headers.get("CSeq"), Some("2 REGISTER"));
    // The same address again: nothing.
    ep.move_registration(t0, &cid, moved);
    assert!(ep.poll_transmit().is_none());
}

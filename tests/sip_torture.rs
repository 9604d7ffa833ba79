//! RFC 4475 torture messages against the parser and the endpoint's
//! answering logic (sans-IO). The same files go to the live SIP port in
//! `tests/sip_live.rs`.

use callout::sip::endpoint::Endpoint;
use callout::sip::message::parse;
use std::time::Instant;

/// The 13 messages RFC 4475 section 3.1.1 lists as valid.
const VALID: &[&str] = &[
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
];

/// What callout answers to each message arriving out of dialog: a status
/// code, or `None` when it is dropped (stray responses; requests whose Via
/// cannot route a response).
pub const EXPECTED: &[(&str, Option<u16>)] = &[
    ("badaspec", Some(400)),
    ("badbranch", Some(200)),
    ("baddate", Some(403)),
    ("baddn", Some(400)),
    ("badinv01", None),
    ("badvers", Some(505)),
    ("bcast", None),
    ("bext01", Some(420)),
    ("bigcode", None),
    ("clerr", Some(400)),
    ("cparam01", Some(405)),
    ("cparam02", Some(405)),
    ("dblreq", Some(405)),
    ("esc01", Some(403)),
    ("esc02", Some(501)),
    ("escnull", Some(405)),
    ("escruri", Some(400)),
    ("insuf", Some(400)),
    ("intmeth", Some(501)),
    ("inv2543", Some(403)),
    ("invut", Some(403)),
    ("longreq", Some(403)),
    ("ltgtruri", Some(400)),
    ("lwsdisp", Some(200)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("mcl01", Some(400)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(400)),
    ("mpart01", Some(405)),
    ("multi01", Some(400)),
    ("ncl", Some(400)),
    ("noreason", None),
    ("novelsc", Some(416)),
    ("quotbal", Some(400)),
    ("regaut01", Some(405)),
    ("regbadct", Some(400)),
    ("regescrt", Some(405)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("sdp01", Some(403)),
    ("semiuri", Some(200)),
    ("test", None),
    ("transports", Some(200)),
    ("trws", Some(400)),
    ("unkscm", Some(416)),
    ("unksm2", Some(405)),
    ("unreason", None),
    ("wsinv", Some(403)),
    ("zeromf", Some(200)),
];

fn load(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/rfc4475/{name}.dat")).expect("fixture present")
}

#[test]
fn every_valid_message_parses() {
    for name in VALID {
        assert!(parse(&load(name)).is_ok(), "{name} must parse: {:?}", parse(&load(name)));
    }
}

#[test]
fn all_fifty_messages_get_the_expected_answer() {
    let files = std::fs::read_dir("tests/fixtures/rfc4475")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "dat"))
        .count();
    assert_eq!(files, EXPECTED.len(), "table covers every fixture");
    let mut failures = Vec::new();
    for (name, want) in EXPECTED {
        let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 7);
        ep.handle_datagram(Instant::now(), "127.0.0.1:9999".parse().unwrap(), &load(name));
        let got = ep.poll_transmit().map(|t| {
            let resp = parse(&t.bytes).expect("our own response parses");
            match resp {
                callout::sip::message::Message::Response(r) => {
                    // The response must echo the top Via so the sender can
                    // match it to its transaction.
                    assert!(r.headers.get("Via").is_some(), "{name}: Via echoed");
                    r.code
                }
                _ => panic!("{name}: endpoint sent a request"),
            }
        });
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
        let dropped = ep.stats().dropped_malformed + ep.stats().stray_responses;
        assert_eq!(dropped > 0, want.is_none(), "{name}: drops are counted");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

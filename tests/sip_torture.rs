//! RFC 4475 torture messages against the parser and the endpoint's
//! answering logic (sans-IO). The same files go to the live SIP port in
//! `tests/sip_live.rs`.

use callout::sip::endpoint::Endpoint;
use callout::sip::message::parse;
use std::time::Instant;

/// The 13 messages RFC 4475 section 3.1.1 lists as valid.
const VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
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
        assert!(
            parse(&load(name)).is_ok(),
            "{name} must parse: {:?}",
            parse(&load(name))
        );
    }
}

#[test]
fn all_fifty_messages_get_the_expected_answer() {
    let files = std::fs::read_dir("tests/fixtures/rfc4475")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "dat")
        })
        .count();
    assert_eq!(files, EXPECTED.len(), "table covers every fixture");
    let mut failures = Vec::new();
    for (name, want) in EXPECTED {
        let mut ep = Endpoint::new("127.0.0.1:5060".parse().unwrap(), 7);
        ep.handle_datagram(
            Instant::now(),
            "127.0.0.1:9999".parse().unwrap(),
            &load(name),
        );
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

/// The same 50 messages, sent over UDP to a running gateway's SIP port,
/// then 2,000 random and truncated datagrams: every answer matches the
/// table, nothing crashes, and an OPTIONS afterwards still gets 200. The
/// sender is trusted so the parser sees all of it; the same garbage from
/// an untrusted address gets that address banned after a few datagrams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sip_port_survives_torture_and_garbage() {
    use rand::{Rng, SeedableRng};
    use std::time::Duration;
    let gw = callout::driver::Gateway::start("127.0.0.1:0".parse().unwrap(), "40000-40999")
        .await
        .unwrap();
    let target = gw.sip_addr();
    gw.sip().trust("127.0.0.1".parse().unwrap());
    // A round trip through the task: the trust is in place before any datagram.
    gw.sip().stats().await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let mut failures = Vec::new();
    for (name, want) in EXPECTED {
        sock.send_to(&load(name), target).await.unwrap();
        let wait = if want.is_some() { 2000 } else { 150 };
        let got = match tokio::time::timeout(Duration::from_millis(wait), sock.recv_from(&mut buf))
            .await
        {
            Ok(Ok((n, _))) => match parse(&buf[..n]) {
                Ok(callout::sip::message::Message::Response(r)) => Some(r.code),
                other => panic!("{name}: not a response: {other:?}"),
            },
            _ => None,
        };
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    let mut rng = rand::rngs::StdRng::seed_from_u64(4475);
    let corpus: Vec<Vec<u8>> = EXPECTED.iter().map(|(n, _)| load(n)).collect();
    let mut garbage = Vec::new();
    for i in 0..2000 {
        let dgram: Vec<u8> = match i % 3 {
            0 => (0..rng.gen_range(0..1500)).map(|_| rng.gen()).collect(),
            1 => {
                let m = &corpus[rng.gen_range(0..corpus.len())];
                m[..rng.gen_range(0..m.len())].to_vec()
            }
            _ => {
                let mut m = corpus[rng.gen_range(0..corpus.len())].clone();
                for _ in 0..8 {
                    let at = rng.gen_range(0..m.len());
                    m[at] = rng.gen();
                }
                m
            }
        };
        sock.send_to(&dgram, target).await.unwrap();
        garbage.push(dgram);
    }
    // Drain whatever it answered, then check it is still serving.
    while tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
        .await
        .is_ok()
    {}
    let options = format!(
        "OPTIONS sip:callout@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKalive\r\n\
         From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:callout@{target}>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        local = sock.local_addr().unwrap()
    );
    sock.send_to(options.as_bytes(), target).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("still answering after the garbage")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 200 OK"), "{text}");
    assert!(
        text.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"),
        "{text}"
    );
    let stats = gw.sip().stats().await.unwrap();
    assert!(
        stats.dropped_malformed > 100,
        "drops are counted: {stats:?}"
    );
    assert_eq!(stats.sources_banned, 0, "{stats:?}");

    let untrusted = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for d in &garbage {
        untrusted.send_to(d, target).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = gw.sip().stats().await.unwrap();
    assert_eq!(after.sources_banned, 1, "{after:?}");
    assert!(after.flood_dropped > 1900, "{after:?}");
}

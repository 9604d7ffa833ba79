//! callout against sipp, an independently written SIP peer, on 127.0.0.1.
//! Each test starts its own sipp UAS with a scenario from tests/sipp.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn answered_call_collects_rfc4733_digits_from_sipp() {
    let dir = scratch("rfc4733");
    // Digits 3, 1, 4 with redundant start packets and triple end packets:
    // each press must count exactly once.
    rfc4733_pcap(
        &dir.join("digits.pcap"),
        &[('3', 300, 100), ('1', 700, 160), ('4', 1100, 80)],
        true,
    );
    let mut sipp = Sipp::uas("answer_digits.xml", &dir, &[]);
    let (status, lines, stderr) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--collect",
        "3",
        "--timeout",
        "10s",
    ]);
    assert!(status.success(), "callout failed: {stderr}\n{lines:#?}");
    let r = result(&lines);
    assert_eq!(r["digits"], "314");
    let digits = events(&lines, "digit");
    assert!(
        digits.iter().all(|d| d["source"] == "rfc4733"),
        "{digits:?}"
    );
    // Timestamps follow the pcap's spacing (400 ms apart, give or take scheduling).
    let t: Vec<i64> = digits
        .iter()
        .map(|d| d["call_ms"].as_i64().unwrap())
        .collect();
    for w in t.windows(2) {
        assert!((w[1] - w[0] - 400).abs() < 250, "digit spacing {t:?}");
    }
    assert_eq!(events(&lines, "answered")[0]["codec"], "Pcmu");
    let status = sipp.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "sipp saw a failed call:\n{}",
        sipp.messages()
    );
}

#[test]
fn answered_call_detects_inband_tones_sent_by_sipp() {
    let dir = scratch("inband");
    inband_pcap(
        &dir.join("digits.pcap"),
        &[('7', 300, 60), ('#', 500, 60)],
        1500,
        6000.0,
    );
    let mut sipp = Sipp::uas("answer_digits.xml", &dir, &[]);
    let (status, lines, stderr) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--collect",
        "2",
        "--timeout",
        "10s",
    ]);
    assert!(status.success(), "callout failed: {stderr}\n{lines:#?}");
    assert_eq!(result(&lines)["digits"], "7#");
    assert!(events(&lines, "digit")
        .iter()
        .all(|d| d["source"] == "inband"));
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "{}",
        sipp.messages()
    );
}

#[test]
fn busy_is_reported_as_busy_and_acked() {
    let dir = scratch("busy");
    let mut sipp = Sipp::uas("busy.xml", &dir, &[]);
    let (status, lines, stderr) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--timeout",
        "5s",
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("busy (486)"), "{stderr}");
    assert_eq!(
        result(&lines)["outcome"],
        serde_json::json!({"outcome": "busy", "code": 486})
    );
    // sipp's scenario only succeeds if our ACK for the 486 arrived.
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "{}",
        sipp.messages()
    );
}

#[test]
fn ring_timeout_sends_cancel_and_reports_no_answer() {
    let dir = scratch("noanswer");
    let mut sipp = Sipp::uas("ring_no_answer.xml", &dir, &[]);
    let started = std::time::Instant::now();
    let (status, lines, stderr) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--timeout",
        "2s",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(events(&lines, "ringing").len() == 1);
    assert_eq!(
        result(&lines)["outcome"],
        serde_json::json!({"outcome": "no_answer", "code": null})
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "{}",
        sipp.messages()
    );
    let msgs = sipp.messages();
    assert!(msgs.contains("CANCEL sip:bob@127.0.0.1"), "{msgs}");
}

fn auth_call(
    scenario: &str,
    algorithm: &str,
    password: &str,
) -> (
    std::process::ExitStatus,
    Vec<serde_json::Value>,
    String,
    Sipp,
) {
    let dir = scratch(&format!("auth-{algorithm}-{password}"));
    rfc4733_pcap(&dir.join("digits.pcap"), &[('9', 300, 100)], false);
    std::fs::write(
        dir.join("auth.csv"),
        format!("SEQUENTIAL\n{algorithm};secret\n"),
    )
    .unwrap();
    let sipp = Sipp::uas(scenario, &dir, &["-inf", "auth.csv"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "call",
            &sipp.uri(),
            "--prompt",
            &prompt(),
            "--timeout",
            "10s",
            "--user",
            "alice",
        ])
        .env("CALLOUT_SIP_PASSWORD", password)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status,
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        sipp,
    )
}

#[test]
fn digest_challenge_is_answered_with_md5_verified_by_sipp() {
    let (status, lines, stderr, mut sipp) = auth_call("auth_answer.xml", "MD5", "secret");
    assert!(
        status.success(),
        "{stderr}\n{lines:#?}\n{}",
        sipp.messages()
    );
    assert_eq!(result(&lines)["digits"], "9");
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "{}",
        sipp.messages()
    );
    let msgs = sipp.messages();
    // RFC 3261 22.2: same Call-ID (sipp would see a new call otherwise), next CSeq.
    assert!(msgs.contains("CSeq: 2 INVITE"), "retry uses the next CSeq");
    assert!(!stderr.contains("secret"), "password never logged");
}

/// sipp 3.6 verifies MD5 only, so the SHA-256 answer (RFC 8760) is checked
/// against Python's hashlib, an independent implementation.
#[test]
fn digest_challenge_is_answered_with_sha256_checked_by_hashlib() {
    let (status, lines, stderr, mut sipp) =
        auth_call("auth_answer_noverify.xml", "SHA-256", "secret");
    assert!(status.success(), "{stderr}\n{lines:#?}");
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "{}",
        sipp.messages()
    );
    let msgs = sipp.messages();
    let auth = msgs
        .lines()
        .find(|l| l.starts_with("Authorization:"))
        .expect("the retried INVITE carries Authorization")
        .to_string();
    assert!(
        auth.contains("algorithm=SHA-256") && auth.contains("qop=auth"),
        "{auth}"
    );
    let check = r#"
import hashlib, re, sys
h = sys.argv[1]
f = dict(re.findall(r'(\w+)="?([^",]+)"?', h.split(' ', 2)[2]))
H = lambda s: hashlib.sha256(s.encode()).hexdigest()
ha1 = H(f"{f['username']}:{f['realm']}:secret")
ha2 = H(f"INVITE:{f['uri']}")
want = H(f"{ha1}:{f['nonce']}:{f['nc']}:{f['cnonce']}:{f['qop']}:{ha2}")
print("ok" if want == f['response'] else f"mismatch {want} {f['response']}")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check, &auth])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrong_password_is_a_clear_failure() {
    let (status, lines, stderr, mut sipp) = auth_call("auth_answer.xml", "MD5", "wrong");
    assert_eq!(status.code(), Some(1));
    assert_eq!(result(&lines)["outcome"]["outcome"], "rejected");
    assert_eq!(result(&lines)["outcome"]["code"], 403);
    assert!(stderr.contains("rejected (403"), "{stderr}");
    sipp.wait(Duration::from_secs(10));
}

#[test]
fn remote_bye_ends_the_call_as_remote_hangup() {
    let dir = scratch("remotebye");
    let mut sipp = Sipp::uas("remote_bye.xml", &dir, &[]);
    let (status, lines, _) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--timeout",
        "10s",
    ]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(result(&lines)["outcome"]["outcome"], "remote_hangup");
    assert_eq!(result(&lines)["answered"], true);
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "our 200 to BYE: {}",
        sipp.messages()
    );
}

#[test]
fn retransmitted_200_is_acked_again_and_info_digits_arrive() {
    let dir = scratch("ackretx");
    let mut sipp = Sipp::uas("ack_retransmit.xml", &dir, &[]);
    let (status, lines, stderr) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--collect",
        "2",
        "--timeout",
        "10s",
    ]);
    assert!(status.success(), "{stderr}\n{lines:#?}");
    assert_eq!(result(&lines)["digits"], "42");
    assert!(events(&lines, "digit")
        .iter()
        .all(|d| d["source"] == "info"));
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "{}",
        sipp.messages()
    );
    let msgs = sipp.messages();
    let oks = msgs.matches("CSeq:  1 INVITE").count();
    let acks = msgs.matches("CSeq: 1 ACK").count();
    assert_eq!(
        (oks, acks),
        (2, 2),
        "every 200 (also the retransmitted one) gets an ACK:\n{msgs}"
    );
}

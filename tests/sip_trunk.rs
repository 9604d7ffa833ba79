//! Trunk digest rules against sipp: a challenge for a foreign realm is
//! never answered, and a challenged BYE is sent again with credentials.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn call(uri: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "call",
            uri,
            "--prompt",
            &prompt(),
            "--collect",
            "1",
            "--timeout",
            "2s",
        ])
        .args(["--user", "alice", "--realm", "callout-test"])
        .args(extra)
        .env("CALLOUT_SIP_PASSWORD", "s3cret")
        .output()
        .expect("run callout");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_challenge_for_another_realm_is_refused_without_a_hash() {
    let dir = scratch("wrong-realm");
    let mut sipp = Sipp::uas("wrong_realm.xml", &dir, &[]);
    let (ok, stdout, stderr) = call(&sipp.uri(), &[]);
    assert!(!ok);
    assert!(
        stdout.contains(r#"digest challenge for realm \"evil.example\" refused"#),
        "{stdout}\n{stderr}"
    );
    let status = sipp.wait(Duration::from_secs(10));
    let log = sipp.messages();
    assert!(status.success(), "{log}");
    assert!(!log.contains("Authorization:"), "a hash was sent:\n{log}");
    assert_eq!(log.matches("INVITE sip:").count(), 1, "{log}");
}

#[test]
fn a_challenged_bye_is_sent_again_with_credentials() {
    let dir = scratch("bye-challenge");
    let mut sipp = Sipp::uas("bye_challenge.xml", &dir, &[]);
    let (_, stdout, stderr) = call(&sipp.uri(), &[]);
    assert!(stdout.contains(r#""answered":true"#), "{stdout}\n{stderr}");
    let status = sipp.wait(Duration::from_secs(10));
    let log = sipp.messages();
    assert!(
        status.success(),
        "sipp did not get an authenticated BYE:\n{log}"
    );
    assert!(log.contains("Proxy-Authorization: Digest"), "{log}");
}

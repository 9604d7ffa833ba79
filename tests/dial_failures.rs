//! Every failure before the first dial ends in a defined state, against a
//! real `callout serve` process on SQLite with real callees:
//!
//! - a broken trunk (proxy that does not resolve, credential variables not
//!   set) is never bypassed: no INVITE reaches the contact's host; the
//!   notification ends `failed` with `notification.failed`; `/readyz` and
//!   `callout dialplan check` say why;
//! - a recorded prompt deleted at run time: the call goes out with the
//!   recorded fallback; with the fallback gone too, `failed` with its
//!   event, and a re-sent alert for the ticket starts a new notification;
//! - a notification no task owns (left `pending` in the database) is found
//!   by the sweeper and dialled, and a re-sent alert never merges into it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::serve::*;
use common::*;
use serde_json::json;

/// Item 7: a trunk whose proxy does not resolve, and one whose credential
/// variables are not set. The contact is a real sipp UAS on 127.0.0.1: the
/// old code dialled it directly.
#[test]
fn a_broken_trunk_is_never_bypassed() {
    require("espeak-ng");
    let dir = scratch("trunk-fail-closed");
    copy_prompts(&dir);
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    let contact = Sipp::uas("ring_no_answer.xml", &sdir, &[]);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let msg = "text = \"Alert on {host}.\"";
    std::fs::write(
        dir.join("dialplans/dns.toml"),
        plan("dns", &contact.uri(), Some("broken-dns"), msg),
    )
    .unwrap();
    std::fs::write(
        dir.join("dialplans/creds.toml"),
        plan("creds", &contact.uri(), Some("no-creds"), msg),
    )
    .unwrap();
    let trunks = format!(
        "[trunks.broken-dns]\nproxy = \"proxy.invalid:5060\"\n\
         [trunks.no-creds]\nproxy = \"127.0.0.1:{}\"\nusername_env = \"CALLOUT_TEST_UNSET_TRUNK_USER\"\n\
         password_env = \"CALLOUT_TEST_UNSET_TRUNK_PASS\"\n",
        contact.port
    );
    let s = Serve::start(&dir, &trunks, "37400-37499");

    // /readyz: not ready, naming each contract and why.
    let (st, ready) = s.http("GET", "/readyz", None).unwrap();
    assert_eq!(st, 503, "{ready}");
    let dns = ready["undialable"]["dns"].as_str().unwrap_or("");
    assert!(
        dns.contains("cannot resolve its proxy proxy.invalid:5060"),
        "{ready}"
    );
    let creds = ready["undialable"]["creds"].as_str().unwrap_or("");
    assert!(creds.contains("CALLOUT_TEST_UNSET_TRUNK_USER"), "{ready}");

    // The notifications: failed, with the reason and the event.
    for (contract, reason) in [
        ("dns", "trunk_proxy_unresolved"),
        ("creds", "trunk_credentials_missing"),
    ] {
        let id = s.notify(contract, "T1")["id"].as_str().unwrap().to_string();
        let n = s.wait_state(&id, &["failed"], Duration::from_secs(20));
        assert_eq!(n["final"]["reason"], reason, "{n:#}");
        assert_eq!(n["attempts"].as_array().unwrap().len(), 0, "{n:#}");
        let events = s.events(&id);
        let failed: Vec<_> = events
            .iter()
            .filter(|(e, _)| e == "notification.failed")
            .collect();
        assert_eq!(failed.len(), 1, "{events:?}");
        assert_eq!(failed[0].1["reason"], reason);
        assert!(
            !events.iter().any(|(e, _)| e == "call.dialing"),
            "{events:?}"
        );
    }
    // Nothing reached the contact's host.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !contact.messages().contains("INVITE"),
        "dialled around the trunk: {}",
        contact.messages()
    );

    // `callout dialplan check` with the service's configuration says so.
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dialplan", "check", "--no-tts", "--config"])
        .arg(&s.config)
        .arg(dir.join("dialplans"))
        .env_remove("CALLOUT_TEST_UNSET_TRUNK_USER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("dns.toml") && stdout.contains("cannot resolve its proxy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("creds.toml") && stdout.contains("CALLOUT_TEST_UNSET_TRUNK_USER"),
        "{stdout}"
    );
}

/// Item 6: audio that cannot be made, and a row nobody runs.
#[test]
fn accepted_notifications_are_always_dialled_or_failed() {
    require("espeak-ng");
    let dir = scratch("never-dialled");
    copy_prompts(&dir);
    let alert = dir.join("prompts/alert.wav");
    std::fs::copy(dir.join("prompts/press-a-key.wav"), &alert).unwrap();
    // Bob answers every call and presses 1.
    let (mut bob, bob_port) = peer::softphone(|cmd| {
        cmd.args([
            "--press",
            "1",
            "--after",
            "1s",
            "--rtp-ports",
            "37600-37699",
        ]);
    });
    let bob_uri = format!("sip:bob@127.0.0.1:{bob_port}");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/rec.toml"),
        plan("rec", &bob_uri, None, "prompt = \"alert.wav\""),
    )
    .unwrap();
    let s = Serve::start(&dir, "", "37500-37599");

    // The recorded message is deleted after the dialplan was loaded: the
    // call still goes out, saying the recorded fallback.
    std::fs::remove_file(&alert).unwrap();
    let id = s.notify("rec", "R1")["id"].as_str().unwrap().to_string();
    let n = s.wait_state(
        &id,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(n["state"], "acked", "{n:#}");
    let ready = s
        .events(&id)
        .into_iter()
        .find(|(e, _)| e == "audio.ready")
        .expect("audio.ready");
    assert!(
        ready.1["fallbacks"][0]
            .as_str()
            .unwrap_or("")
            .contains("Message"),
        "{ready:?}"
    );
    // The phrase said with the fallback is counted.
    let metrics = s.text("/metrics");
    assert!(
        metrics.contains("callout_tts_fallbacks_total 1\n"),
        "{metrics}"
    );

    // The fallback gone too: nothing to say, so `failed` with its event,
    // not `pending` forever.
    std::fs::remove_file(dir.join("prompts/fallback-en.wav")).unwrap();
    let first = s.notify("rec", "R2");
    let id = first["id"].as_str().unwrap().to_string();
    let n = s.wait_state(&id, &["failed"], Duration::from_secs(30));
    assert_eq!(n["final"]["reason"], "audio_unavailable", "{n:#}");
    assert!(s
        .events(&id)
        .iter()
        .any(|(e, v)| e == "notification.failed" && v["reason"] == "audio_unavailable"));
    // A re-sent alert for the ticket does not merge into the failed one.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/fallback-en.wav"),
        dir.join("prompts/fallback-en.wav"),
    )
    .unwrap();
    let again = s.notify("rec", "R2");
    assert_eq!(again["created"], true, "{again}");
    assert_ne!(again["id"], first["id"]);
    let n = s.wait_state(
        again["id"].as_str().unwrap(),
        &["acked", "exhausted", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(n["state"], "acked", "{n:#}");

    // A row left `pending` with no task (as a task that died leaves it):
    // the sweeper dials it.
    let orphan = "ntf_orphan_left_pending_000001";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = callout::store::Store::connect(&s.db).await.unwrap();
        let now = callout::runner::now_ms();
        store
            .insert_notification(
                &callout::store::NotificationRow {
                    id: orphan.into(),
                    contract: "rec".into(),
                    ticket: "R3".into(),
                    severity: "critical".into(),
                    host: "db-1".into(),
                    summary: "down".into(),
                    variables: json!({}),
                    state: "pending".into(),
                    final_state: None,
                    escalation: None,
                    cancel_reason: None,
                    created_ms: now,
                    updated_ms: now,
                },
                None,
            )
            .await
            .unwrap();
    });
    let n = s.wait_state(
        orphan,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(40),
    );
    assert_eq!(n["state"], "acked", "the sweeper ran it: {n:#}");

    // Another orphan; a re-sent alert for its ticket arrives before the
    // sweeper: it is not merged into the dead row.
    let orphan2 = "ntf_orphan_left_pending_000002";
    rt.block_on(async {
        let store = callout::store::Store::connect(&s.db).await.unwrap();
        let now = callout::runner::now_ms();
        let mut row = callout::store::NotificationRow {
            id: orphan2.into(),
            contract: "rec".into(),
            ticket: "R4".into(),
            severity: "critical".into(),
            host: "db-1".into(),
            summary: "down".into(),
            variables: json!({}),
            state: "running".into(),
            final_state: None,
            escalation: None,
            cancel_reason: None,
            created_ms: now,
            updated_ms: now,
        };
        row.state = "running".into();
        store.insert_notification(&row, None).await.unwrap();
    });
    let retry = s.notify("rec", "R4");
    assert_eq!(retry["created"], true, "{retry}");
    assert_ne!(retry["id"], orphan2);
    let dead = s.wait_state(orphan2, &["failed"], Duration::from_secs(5));
    assert_eq!(dead["final"]["reason"], "abandoned", "{dead:#}");
    let n = s.wait_state(
        retry["id"].as_str().unwrap(),
        &["acked", "exhausted", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(n["state"], "acked", "{n:#}");
    let _ = bob.kill();
    let _ = bob.wait();
}

//! Operator logs: `--log-format json` gives one JSON object per line, the
//! lines of an escalation carry its notification id and the call's
//! attempt; the callee's number is redacted unless
//! `CALLOUT_LOG_NUMBERS=show`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::scratch;
use common::serve::{copy_prompts, plan, pressing_callee, Serve};

/// Start serve with `args` and `env`, run one notification to a callee
/// whose user part is a phone number; return its id and the log.
fn run(name: &str, rtp: (&str, &str), args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let dir = scratch(name);
    copy_prompts(&dir);
    let (_phone, uri) = pressing_callee(rtp.0);
    let uri = uri.replace("sip:bob@", "sip:0312345678@");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/en.toml"),
        plan("en", &uri, None, "text = \"Host {host} is down.\""),
    )
    .unwrap();
    // The helper's config and port, then the same process restarted with
    // the options under test.
    let mut s = Serve::start(&dir, "", rtp.1);
    let _ = s.child.kill();
    let _ = s.child.wait();
    let log = dir.join("serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
    cmd.args(args)
        .args(["serve", "--config"])
        .arg(&s.config)
        .env("CALLOUT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    s.child = cmd.spawn().unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while s.http("GET", "/healthz", None).is_none() {
        assert!(std::time::Instant::now() < until, "serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = s.notify("en", "LOG-1")["id"].as_str().unwrap().to_string();
    s.wait_state(&id, &["acked"], Duration::from_secs(40));
    drop(s);
    (id, std::fs::read_to_string(log).unwrap())
}

#[test]
fn json_lines_with_notification_and_call_ids_and_numbers_redacted() {
    let (id, log) = run(
        "logs-json",
        ("34800-34849", "34850-34899"),
        &["--log-format", "json"],
        &[],
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["notice"] == true
            && l["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("API on http://")),
        "{log}"
    );
    let dialling = lines
        .iter()
        .find(|l| l["message"] == "dialling")
        .unwrap_or_else(|| panic!("no dialling line: {log}"));
    let spans = dialling["spans"].as_array().unwrap();
    assert!(
        spans.iter().any(|s| s["name"] == "notification"
            && s["id"] == id.as_str()
            && s["contract"] == "en"),
        "{dialling}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "call" && s["attempt"] == 1),
        "{dialling}"
    );
    assert!(
        dialling["uri"]
            .as_str()
            .unwrap()
            .starts_with("sip:…78@127.0.0.1:"),
        "{dialling}"
    );
    assert!(!log.contains("0312345678"), "the number is redacted: {log}");
}

#[test]
fn plain_lines_show_numbers_only_when_asked() {
    let (_, log) = run(
        "logs-plain",
        ("34900-34949", "34950-34999"),
        &[],
        &[
            ("CALLOUT_LOG_NUMBERS", "show"),
            ("JOURNAL_STREAM", "8:1234"),
        ],
    );
    let line = log
        .lines()
        .find(|l| l.contains("dialling"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("sip:0312345678@127.0.0.1:"), "{line}");
    // journald adds its own timestamps: the line starts with the level.
    assert!(line.trim_start().starts_with("INFO"), "{line}");
    assert!(log.contains("callout: API on http://"), "{log}");
}

//! Crash safety: `callout serve` is killed with SIGKILL while calls ring,
//! then restarted on the same database. Every accepted notification must
//! finish, the call that was up is recorded `interrupted`, and nobody is
//! rung more often than the policy allows.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "crash-test-token";

fn serve(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn http(method: &str, url: &str, body: Option<Value>) -> Option<(u16, Value)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut r = if method == "POST" {
        client.post(url)
    } else {
        client.get(url)
    };
    r = r.bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().unwrap_or(Value::Null)))
}

/// `callout.toml` in `dir` with a free API port, the given RTP range, and
/// the test token; returns its path and the API port.
fn write_config(dir: &std::path::Path, rtp_ports: &str) -> (std::path::PathBuf, u16) {
    let api_port = free_port_pair();
    let hash: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = dir.join("callout.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{rtp_ports}\"\n\
             database_url = \"sqlite://{db}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
             [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n",
            db = dir.join("data/callout.db").display(),
            dp = dir.join("dialplans").display(),
            pr = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            tc = dir.join("tts").display(),
        ),
    )
    .unwrap();
    (config, api_port)
}

fn wait_http(base: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while http("GET", &format!("{base}/healthz"), None).is_none() {
        assert!(Instant::now() < until, "callout serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_mid_escalation_then_restart_finishes_everything() {
    require("espeak-ng");
    let dir = scratch("crash");
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    // Alice rings and never answers; Bob answers and presses 1.
    let alice = Sipp::uas("ring_no_answer.xml", &sdir, &[]);
    let (mut bob, bob_port) = peer::softphone(|cmd| {
        cmd.args(["--press", "1", "--after", "1s"])
            .args(["--rtp-ports", "36500-36599"]);
    });
    std::fs::write(
        dir.join("dialplans/crash.toml"),
        format!(
            "contract = \"crash\"\nname = \"Crash\"\nlanguage = \"en\"\n[escalation]\nrounds = 2\nring_timeout = \"20s\"\n\
             between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"Alice\"\nuri = \"{}\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"sip:bob@127.0.0.1:{bob_port}\"\n[message]\ntext = \"Alert on {{host}}.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n",
            alice.uri()
        ),
    )
    .unwrap();
    let (config, api_port) = write_config(&dir, "36000-36499");
    let base = format!("http://127.0.0.1:{api_port}");
    let mut first = serve(&config, &dir.join("serve1.log"));
    wait_http(&base);
    let mut ids = Vec::new();
    for t in ["C1", "C2", "C3"] {
        let (st, v) = http(
            "POST",
            &format!("{base}/v1/notifications"),
            Some(json!({"contract": "crash", "ticket": t, "severity": "critical", "host": "db-1", "summary": "down"})),
        )
        .unwrap();
        assert_eq!(st, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Wait until all three are ringing Alice, then kill -9.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let ringing = ids
            .iter()
            .filter(|id| {
                http("GET", &format!("{base}/v1/notifications/{id}"), None)
                    .is_some_and(|(_, v)| v["attempts"].as_array().is_some_and(|a| a.len() == 1))
            })
            .count();
        if ringing == 3 {
            break;
        }
        assert!(Instant::now() < until, "calls did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = serve(&config, &dir.join("serve2.log"));
    wait_http(&base);
    let until = Instant::now() + Duration::from_secs(40);
    let mut done = Vec::new();
    for id in &ids {
        loop {
            let (_, v) = http("GET", &format!("{base}/v1/notifications/{id}"), None).unwrap();
            if v["state"] == "acked" || v["state"] == "exhausted" {
                done.push(v);
                break;
            }
            assert!(Instant::now() < until, "{id} did not finish: {v:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for v in &done {
        assert_eq!(v["state"], "acked", "{v:#}");
        let attempts = attempt_outcomes(v);
        assert_eq!(
            attempts,
            vec![
                ("Alice".to_string(), "interrupted".to_string()),
                ("Bob".to_string(), "acked".to_string())
            ],
            "{v:#}"
        );
    }
    // Alice got exactly one INVITE per notification (2 rounds allowed).
    let msgs = alice.messages();
    let distinct_calls: std::collections::HashSet<&str> = msgs
        .lines()
        .filter(|l| l.starts_with("Call-ID:"))
        .map(|l| l.trim())
        .collect();
    assert_eq!(
        distinct_calls.len(),
        3,
        "one call to Alice per notification"
    );
    let _ = second.kill();
    let _ = second.wait();
    let _ = bob.kill();
    let _ = bob.wait();
}

/// SIGTERM while a call is answered: the callee hears the end of the
/// current sentence and gets a BYE, the process exits cleanly, and the
/// next start records the call interrupted and carries on.
#[test]
fn sigterm_lets_the_answered_call_finish_its_sentence() {
    require("espeak-ng");
    let dir = scratch("sigterm");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let (phone, phone_port) = peer::softphone(|cmd| {
        cmd.args(["--calls", "1", "--rtp-ports", "36600-36699"])
            .stdout(Stdio::piped());
    });
    std::fs::write(
        dir.join("dialplans/term.toml"),
        format!(
            "contract = \"term\"\nname = \"Term\"\nlanguage = \"en\"\n[escalation]\nrounds = 1\nring_timeout = \"10s\"\n\
             between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"Phone\"\nuri = \"sip:p@127.0.0.1:{phone_port}\"\n\
             [message]\ntext = \"This is a long alert message about host {{host}}, which is not responding to any of the checks we run every minute.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n"
        ),
    )
    .unwrap();
    let (config, api_port) = write_config(&dir, "36700-36799");
    let base = format!("http://127.0.0.1:{api_port}");
    let mut first = serve(&config, &dir.join("serve1.log"));
    wait_http(&base);
    let (_, v) = http(
        "POST",
        &format!("{base}/v1/notifications"),
        Some(json!({"contract": "term", "ticket": "T", "severity": "major", "host": "db-1", "summary": "down"})),
    )
    .unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = http("GET", &format!("{base}/v1/notifications/{id}"), None).unwrap();
        if v["attempts"][0]["answered_ms"].is_i64() {
            break;
        }
        assert!(Instant::now() < until, "not answered: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let term_at = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(first.id() as i32, libc::SIGTERM);
    }
    let status = first.wait().unwrap();
    let took = term_at.elapsed();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        took < Duration::from_secs(15),
        "stopped within the sentence: {took:?}"
    );
    let out = phone.wait_with_output().unwrap();
    let phone_log = String::from_utf8_lossy(&out.stdout);
    assert!(
        phone_log.contains("\"outcome\":\"remote_hangup\""),
        "callout sent BYE: {phone_log}"
    );

    let mut second = serve(&config, &dir.join("serve2.log"));
    wait_http(&base);
    let until = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let (_, v) = http("GET", &format!("{base}/v1/notifications/{id}"), None).unwrap();
        if v["state"] == "exhausted" {
            break v;
        }
        assert!(Instant::now() < until, "{v:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        v["attempts"].as_array().unwrap().len(),
        1,
        "nobody rung again beyond the policy: {v:#}"
    );
    assert_eq!(v["attempts"][0]["outcome"]["outcome"], "interrupted");
    let _ = second.kill();
    let _ = second.wait();
}

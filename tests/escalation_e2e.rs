//! A three-contact escalation over real calls to sipp: the first does not
//! answer (callout cancels), the second presses 2 (pass on), the third
//! presses 1 (acknowledge). The recorded outcomes must say exactly that.

mod common;

use common::*;
use std::time::Duration;

fn dialplan(dir: &std::path::Path, a: &str, b: &str, c: &str) -> std::path::PathBuf {
    let text = format!(
        r#"contract = "e2e"
name = "End to end"
language = "en"

[escalation]
rounds = 1
ring_timeout = "2s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "Alice"
uri = "{a}"

[[contacts]]
name = "Bob"
uri = "{b}"

[[contacts]]
name = "Carol"
uri = "{c}"

[message]
text = "Alert on {{host}}: {{summary}}. Ticket {{ticket}}."

[menu]
prompt = "Press 1 to take it, 2 to pass it on."
input_timeout = "5s"

[menu.keys]
"1" = "ack"
"2" = "next"
"#
    );
    let path = dir.join("e2e.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn no_answer_then_pass_then_ack() {
    require("espeak-ng");
    let base = scratch("e2e");
    let (da, db, dc) = (base.join("a"), base.join("b"), base.join("c"));
    for d in [&da, &db, &dc] {
        std::fs::create_dir_all(d).unwrap();
    }
    rfc4733_pcap(&db.join("digits.pcap"), &[('2', 1500, 120)], false);
    rfc4733_pcap(&dc.join("digits.pcap"), &[('1', 1500, 120)], false);
    let mut a = Sipp::uas("ring_no_answer.xml", &da, &[]);
    let mut b = Sipp::uas("answer_digits.xml", &db, &[]);
    let mut c = Sipp::uas("answer_digits.xml", &dc, &[]);
    let plan = dialplan(&base, &a.uri(), &b.uri(), &c.uri());
    let cache = base.join("tts-cache");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "escalate",
            plan.to_str().unwrap(),
            "--ticket",
            "INC-42",
            "--host",
            "web-01.example.com",
            "--summary",
            "HTTP down",
        ])
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .current_dir(&base)
        .env("CALLOUT_TTS_CACHE", &cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended: Vec<(String, String, i64)> = events(&lines, "call.ended")
        .iter()
        .map(|e| {
            (
                e["contact"].as_str().unwrap().to_string(),
                e["outcome"]["outcome"].as_str().unwrap().to_string(),
                e["at_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    let who: Vec<(&str, &str)> = ended
        .iter()
        .map(|(c, o, _)| (c.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        who,
        vec![
            ("Alice", "no_answer"),
            ("Bob", "passed"),
            ("Carol", "acked")
        ],
        "{stdout}"
    );
    // Alice rang for the 2 s ring timeout.
    assert!(
        (1900..6000).contains(&ended[0].2),
        "Alice ended at {} ms",
        ended[0].2
    );
    assert!(ended[0].2 < ended[1].2 && ended[1].2 < ended[2].2);
    let dials = events(&lines, "call.dialing");
    // Bob is dialled one pause (1 s) after Alice's call ended.
    let bob_dial = dials[1]["at_ms"].as_i64().unwrap();
    assert!(
        (ended[0].2 + 900..ended[0].2 + 2500).contains(&bob_dial),
        "{bob_dial}"
    );
    // Carol right after Bob passed: no pause.
    let carol_dial = dials[2]["at_ms"].as_i64().unwrap();
    assert!(carol_dial - ended[1].2 < 800, "{carol_dial}");
    let digits: Vec<&str> = events(&lines, "digit")
        .iter()
        .map(|d| d["digit"].as_str().unwrap())
        .collect();
    assert_eq!(digits, vec!["2", "1"]);
    let acked = &events(&lines, "notification.acked")[0];
    assert_eq!(acked["final"]["contact"], 2);
    assert_eq!(acked["attempts"].as_array().unwrap().len(), 3);
    for s in [&mut a, &mut b, &mut c] {
        assert!(
            s.wait(Duration::from_secs(10)).success(),
            "{}",
            s.messages()
        );
    }
}

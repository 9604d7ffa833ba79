//! `[call] early_message`: against a sipp callee that sends a 183 with
//! SDP naming one RTP port and, 1.5 s later, a 200 naming another, the
//! test's own sockets on those ports tell the RTP sent before the 200
//! from the RTP sent after it. The message (a 3 s 800 Hz tone) and the
//! menu prompt (a 1 s 400 Hz tone) are told apart packet by packet.
//! With the setting on, the message starts before the 200 and goes on
//! across it, neither restarted nor cut, and the menu follows; without
//! it, nothing but silence goes out before the 200.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::early_callee::{count, EarlyCallee, Sound};
use common::*;

/// The shipped prompts plus the two tones.
fn prompts(dir: &Path) -> PathBuf {
    require("sox");
    let p = dir.join("prompts");
    std::fs::create_dir_all(&p).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    for e in std::fs::read_dir(shipped).unwrap().flatten() {
        std::fs::copy(e.path(), p.join(e.file_name())).unwrap();
    }
    for (name, secs, hz) in [
        ("message-tone.wav", "3", "800"),
        ("menu-tone.wav", "1", "400"),
    ] {
        let st = std::process::Command::new("sox")
            .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
            .arg(p.join(name))
            .args(["synth", secs, "sine", hz, "vol", "0.5"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

/// One escalation against the scenario; the packets at the 183's port
/// and at the 200's port, and callout's events.
fn run(name: &str, early_message: bool) -> (Vec<Sound>, Vec<Sound>, Vec<serde_json::Value>) {
    run_with(name, early_message, "prompt = \"message-tone.wav\"")
}

/// As [`run`], with `message` as the plan's `[message]` table body.
fn run_with(
    name: &str,
    early_message: bool,
    message: &str,
) -> (Vec<Sound>, Vec<Sound>, Vec<serde_json::Value>) {
    let dir = scratch(name);
    let prompts = prompts(&dir);
    let mut callee = EarlyCallee::start(&dir);
    let plan = dir.join("early.toml");
    std::fs::write(
        &plan,
        format!(
            r#"contract = "early"
name = "Early"
language = "en"

[call]
early_message = {early_message}

[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "P"
uri = "{uri}"

[message]
{message}

[menu]
prompt = {{ prompt = "menu-tone.wav" }}
input_timeout = "1s"
max_attempts = 1

[menu.keys]
"1" = "ack"

[phrases]
goodbye = {{ prompt = "goodbye-en.wav" }}
"#,
            uri = callee.sipp.uri()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["escalate", plan.to_str().unwrap()])
        .args(["--ticket", "1", "--host", "web-01", "--summary", "down"])
        .arg("--prompts")
        .arg(&prompts)
        .env("CALLOUT_TTS_CACHE", dir.join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let status = callee.sipp.wait(Duration::from_secs(20));
    assert!(
        status.success(),
        "{}\n{stderr}\n{lines:#?}",
        callee.sipp.messages()
    );
    assert_eq!(
        events(&lines, "call.answered").len(),
        1,
        "{lines:#?}\n{stderr}"
    );
    let (early, answer) = callee.heard();
    (early, answer, lines)
}

/// Where the menu prompt starts: the first half second of its tone (a
/// spoken message may sound like it for a packet or two, never for 25).
fn menu_start(s: &[Sound]) -> Option<usize> {
    s.windows(25)
        .position(|w| w.iter().all(|x| *x == Sound::Menu))
}

/// Packets of a spoken message: anything not silent before the menu.
fn spoken(s: &[Sound]) -> usize {
    s.iter().filter(|x| **x != Sound::Silence).count()
}

/// The message's packets at the 200's port: those before the menu's.
fn message_after_200(answer: &[Sound]) -> usize {
    let menu_at = answer
        .iter()
        .position(|s| *s == Sound::Menu)
        .expect("the menu prompt was heard after the 200");
    count(&answer[..menu_at], Sound::Message)
}

#[test]
fn with_early_message_the_alert_starts_on_the_183_and_is_heard_whole_once() {
    let (early, answer, lines) = run("early-message-on", true);
    assert_eq!(events(&lines, "call.early_message").len(), 1, "{lines:#?}");
    // 1.5 s of early media: about 75 packets of it are the message.
    let before = count(&early, Sound::Message);
    assert!(
        before >= 50,
        "message before the 200: {before} packets: {early:?}"
    );
    assert_eq!(count(&early, Sound::Menu), 0, "the menu waits for the 200");
    // The rest of it after the 200, then the menu: 150 packets in all
    // (3 s): not restarted at the 200 (about 75 more), not cut (fewer).
    let after = message_after_200(&answer);
    assert!(
        (145..=153).contains(&(before + after)),
        "message packets: {before} before the 200 + {after} after it"
    );
    assert!(
        after < 110,
        "restarted at the 200: {after} packets after it"
    );
    assert!(count(&answer, Sound::Menu) >= 45, "the whole menu prompt");
}

#[test]
fn without_early_message_only_silence_goes_out_before_the_200() {
    let (early, answer, lines) = run("early-message-off", false);
    assert!(
        events(&lines, "call.early_message").is_empty(),
        "{lines:#?}"
    );
    // Early media was sent (the session starts on the 183), all silent.
    assert!(early.len() >= 40, "early media: {} packets", early.len());
    assert_eq!(count(&early, Sound::Silence), early.len(), "{early:?}");
    let after = message_after_200(&answer);
    assert!(
        (145..=153).contains(&after),
        "message packets after the 200: {after}"
    );
}

/// Long enough (about 5 s in espeak-ng) to be heard across the 200.
const SPOKEN: &str = "text = \"Alert on {host}. The database server is not answering, and its disk is nearly full.\"";

/// The text message (synthesised sentence by sentence while it rings)
/// takes the same road: it starts on the 183 and goes on across the
/// 200 where it was, so the whole of it is heard once, as much of it as
/// without the setting, where it all comes after the 200.
#[test]
fn a_spoken_message_starts_on_the_183_and_is_heard_whole_once() {
    require("espeak-ng");
    let (early, answer, lines) = run_with("early-spoken-on", true, SPOKEN);
    assert_eq!(events(&lines, "call.early_message").len(), 1, "{lines:#?}");
    let before = spoken(&early);
    assert!(
        before >= 30,
        "speech before the 200: {before} packets: {early:?}"
    );
    let menu = menu_start(&answer).expect("the menu prompt after the 200");
    let on = before + spoken(&answer[..menu]);

    let (early_off, answer_off, _) = run_with("early-spoken-off", false, SPOKEN);
    assert_eq!(
        spoken(&early_off),
        0,
        "silence before the 200: {early_off:?}"
    );
    let menu_off = menu_start(&answer_off).expect("the menu prompt after the 200");
    let off = spoken(&answer_off[..menu_off]);
    eprintln!("spoken packets: on {on} ({before} before the 200), off {off}");
    // Neither restarted at the 200 (about 75 packets more) nor cut.
    assert!(off >= 100, "the whole message without the setting: {off}");
    assert!(
        on.abs_diff(off) <= 15,
        "spoken packets with early_message {on} ({before} before the 200), without {off}"
    );
}

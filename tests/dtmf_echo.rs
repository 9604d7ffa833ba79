//! A callee whose line echoes our own Japanese prompt back (plus a voice
//! in the room) for the whole call presses nothing: the call ends
//! `answered_no_input`, never acknowledged.
//!
//! The prompt reads a sentence on which the detector before the talk-off
//! work reported a false `*` (see tests/dtmf_talkoff.rs). First a call to
//! a real softphone (baresip) records exactly what the gateway sends; then
//! a second baresip sends that recording back, 6 dB down and 60 ms late,
//! mixed with English speech, as a hybrid or speakerphone would.

mod common;

use callout::media::audio::{read_wav_mono, resample, to_i16, write_wav};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const SENTENCE: &str = "それぞれの結果は、チケットに自動的に記録されます。誰が、いつ、どのボタンを押したのか、どのコマンドがどのような結果を返したのか、すべてが残ります。";

fn dialplan(dir: &Path, uri: &str) -> PathBuf {
    let text = format!(
        r#"contract = "echo"
name = "Echo"
language = "ja"
dtmf = "both"

[escalation]
rounds = 1
ring_timeout = "5s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "Echo"
uri = "{uri}"

[message]
text = "{{summary}}"

[menu]
prompt = "対応する場合は1を押してください。"
input_timeout = "2s"
max_attempts = 1

[menu.keys]
"1" = "ack"
"*" = "ack"
"#
    );
    let path = dir.join("echo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One escalation to `bs`; returns callout's JSON lines.
fn escalate(dir: &Path, bs: &Baresip) -> Vec<serde_json::Value> {
    let plan = dialplan(dir, &bs.uri());
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("escalate")
        .arg(&plan)
        .args([
            "--ticket",
            "INC-7",
            "--host",
            "web-01",
            "--summary",
            SENTENCE,
        ])
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        // The voice is found relative to the repository.
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CALLOUT_TTS_CACHE", dir.join("tts-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn outcomes(lines: &[serde_json::Value]) -> Vec<String> {
    events(lines, "call.ended")
        .iter()
        .map(|e| e["outcome"]["outcome"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn sox(args: &[&str]) {
    let st = Command::new("sox").args(args).status().unwrap();
    assert!(st.success(), "sox {args:?}");
}

#[test]
fn our_prompt_echoed_back_for_a_whole_call_presses_nothing() {
    require("sox");
    require("espeak-ng");
    require("open_jtalk");
    let dir = scratch("dtmf-echo");

    // 1. What the gateway sends, as the callee receives it.
    let quiet = dir.join("quiet.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        quiet.to_str().unwrap(),
        "synth",
        "40",
        "sine",
        "440",
        "vol",
        "0.002",
    ]);
    std::fs::create_dir_all(dir.join("first")).unwrap();
    std::fs::create_dir_all(dir.join("second")).unwrap();
    let listener = Baresip::start(&dir.join("first"), &quiet);
    let first = escalate(&dir, &listener);
    assert_eq!(outcomes(&first), vec!["answered_no_input"], "{first:#?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let heard = listener.heard().expect("baresip recorded the call");
    drop(listener);
    let (h, rate) = read_wav_mono(&heard).unwrap();
    let ours = to_i16(&resample(&h, rate, 8000));
    let loud = ours.iter().filter(|s| s.unsigned_abs() > 2000).count();
    assert!(
        loud > 8000 * 3,
        "the first call carried too little speech: {loud}"
    );

    // 2. That audio back at -6 dB, 60 ms late, with a voice in the room.
    let room = dir.join("room.wav");
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&room)
        .arg("Hello? Yes, this is the on-call phone. I am in the car, give me a moment. Can you hear me? The line is very bad tonight.")
        .status()
        .unwrap();
    assert!(st.success());
    let (r, rrate) = read_wav_mono(&room).unwrap();
    let voice = to_i16(&resample(&r, rrate, 8000));
    let mut echo: Vec<i16> = vec![0; 480];
    echo.extend(ours.iter().map(|&s| s / 2));
    for (i, v) in voice.iter().enumerate() {
        let at = 8000 + i;
        if at < echo.len() {
            echo[at] = echo[at].saturating_add(v / 3);
        }
    }
    let echo_wav = dir.join("echo.wav");
    write_wav(&echo_wav, &echo).unwrap();

    let echoing = Baresip::start(&dir.join("second"), &echo_wav);
    let second = escalate(&dir, &echoing);
    let digits: Vec<&serde_json::Value> = events(&second, "digit");
    assert!(digits.is_empty(), "keys from our own echo: {digits:#?}");
    assert_eq!(outcomes(&second), vec!["answered_no_input"], "{second:#?}");
    assert!(
        events(&second, "notification.acked").is_empty(),
        "acknowledged by an echo"
    );
}

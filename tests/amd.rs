//! Answering-machine detection on real speech (espeak-ng), offline and
//! over a call to baresip playing the greeting.

mod common;

use callout::media::amd::{classify, AmdCause, AmdParams, AmdResult};
use callout::media::audio::Prompt;
use common::*;
use std::path::Path;
use std::process::Command;

fn speech(dir: &Path, name: &str, text: &str, pad_s: &str) -> std::path::PathBuf {
    require("espeak-ng");
    require("sox");
    let raw = dir.join(format!("{name}-raw.wav"));
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap();
    assert!(st.success());
    // 8 kHz, a short pause before speaking, silence after.
    let out = dir.join(format!("{name}.wav"));
    let st = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-b", "16", "-c", "1"])
        .arg(&out)
        .args(["pad", "0.3", pad_s])
        .status()
        .unwrap();
    assert!(st.success());
    out
}

const GREETING: &str = "Hello, you have reached the voicemail of Taro Tanaka. I am not available to take your call right now. Please leave a message after the tone and I will call you back as soon as possible.";

#[test]
fn greeting_is_a_machine_and_hello_is_a_person() {
    let dir = scratch("amd-offline");
    let machine = Prompt::load(&speech(&dir, "greeting", GREETING, "1")).unwrap();
    let (r, cause) = classify(&machine.pcm, AmdParams::default());
    assert_eq!(r, AmdResult::Machine, "{cause:?}");
    let human = Prompt::load(&speech(&dir, "hello", "Hello?", "3")).unwrap();
    assert_eq!(
        classify(&human.pcm, AmdParams::default()),
        (AmdResult::Human, AmdCause::HumanSilence)
    );
}

fn plan(dir: &Path, uri: &str) -> std::path::PathBuf {
    let text = format!(
        r#"contract = "amd"
name = "AMD test"
language = "en"

[escalation]
rounds = 1
ring_timeout = "5s"
between_calls = "1s"
between_rounds = "1m"
on_machine = "leave_message"

[[contacts]]
name = "Taro"
uri = "{uri}"

[message]
text = "Alert on {{host}}."

[menu]
prompt = "Press 1 to take it."

[menu.keys]
"1" = "ack"

[amd]
enabled = true
"#
    );
    let p = dir.join("amd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn escalate_cmd(dir: &Path, plan: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
    cmd.args([
        "escalate",
        plan.to_str().unwrap(),
        "--ticket",
        "1",
        "--host",
        "db-1",
        "--summary",
        "down",
    ])
    .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
    .env("CALLOUT_TTS_CACHE", dir.join("cache"));
    cmd
}

fn escalate(dir: &Path, plan: &Path) -> (bool, Vec<serde_json::Value>) {
    let out = escalate_cmd(dir, plan).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.success(), lines)
}

#[test]
fn voicemail_over_a_call_is_machine_and_gets_the_message() {
    let dir = scratch("amd-machine");
    // baresip ends the call when its source file ends: pad it long.
    let greeting = speech(&dir, "greeting", GREETING, "30");
    let bs = Baresip::start(&dir, &greeting);
    let (ok, lines) = escalate(&dir, &plan(&dir, &bs.uri()));
    assert!(!ok, "a machine is not an acknowledgement");
    let amd = events(&lines, "call.amd");
    assert_eq!(amd[0]["result"], "machine", "{lines:#?}");
    assert_eq!(
        events(&lines, "call.message_left").len(),
        1,
        "on_machine = leave_message"
    );
    assert_eq!(
        events(&lines, "call.ended")[0]["outcome"]["outcome"],
        "machine"
    );
    assert_eq!(events(&lines, "notification.exhausted").len(), 1);
}

#[test]
fn a_person_saying_hello_is_human_and_can_ack() {
    let dir = scratch("amd-human");
    let hello = speech(&dir, "hello", "Hello?", "30");
    let bs = Baresip::start(&dir, &hello);
    let uri = bs.uri();
    let p = plan(&dir, &uri);
    // Press only once the verdict is out: a key before it settles the
    // call as a person without a verdict (and a loaded machine may take
    // longer than any fixed wait to get there).
    let mut child = escalate_cmd(&dir, &p)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let mut pressed = false;
    for line in std::io::BufRead::lines(stdout) {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "call.amd" && !pressed {
            pressed = true;
            assert!(bs.command("sndcode", "1").contains("\"ok\":true"));
        }
        lines.push(v);
    }
    let ok = child.wait().unwrap().success();
    let amd = events(&lines, "call.amd");
    assert_eq!(amd[0]["result"], "human", "{lines:#?}\n{}", bs.log());
    assert!(ok, "{lines:#?}");
    assert_eq!(
        events(&lines, "call.ended")[0]["outcome"]["outcome"],
        "acked"
    );
}

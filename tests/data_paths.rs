//! Shipped files (the Japanese voice, prompts, dialplans) are found
//! wherever callout runs: `callout serve` started in `/`, as a service
//! manager starts it, speaks Japanese with the shipped voice, not the
//! recorded fallback; a voice found nowhere stops the start with every
//! place looked.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::scratch;
use common::serve::{copy_prompts, pressing_callee, Serve};

fn ja_plan(uri: &str) -> String {
    format!(
        "contract = \"ja\"\nname = \"日本\"\nlanguage = \"ja\"\n[escalation]\nrounds = 1\nring_timeout = \"10s\"\n\
         between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"P\"\nuri = \"{uri}\"\n\
         [message]\ntext = \"ホスト{{host}}で障害です。\"\n[menu]\nprompt = \"対応する場合は1を押してください。\"\n\
         [menu.keys]\n\"1\" = \"ack\"\n"
    )
}

#[test]
fn serve_started_in_root_speaks_japanese_with_the_shipped_voice() {
    common::require("open_jtalk");
    let dir = scratch("paths-root");
    copy_prompts(&dir);
    let (_phone, uri) = pressing_callee("33500-33599");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(dir.join("dialplans/ja.toml"), ja_plan(&uri)).unwrap();
    let s = Serve::start_in(&dir, "", "33600-33699", Some(Path::new("/")));
    let id = s.notify("ja", "T-1")["id"].as_str().unwrap().to_string();
    let fin = s.wait_state(&id, &["acked"], Duration::from_secs(40));
    assert_eq!(fin["state"], "acked", "{fin}");
    let events = s.events(&id);
    let ready = &events
        .iter()
        .find(|(e, _)| e == "audio.ready")
        .expect("audio.ready")
        .1;
    assert_eq!(
        ready["fallbacks"],
        serde_json::json!([]),
        "spoken with the voice, not the fallback: {ready}\n{}",
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    );
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    assert!(!log.contains("voice does not work"), "{log}");
}

#[test]
fn a_voice_found_nowhere_stops_the_start_naming_every_place() {
    let dir = scratch("paths-novoice");
    copy_prompts(&dir);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/ja.toml"),
        ja_plan("sip:p@127.0.0.1:5999"),
    )
    .unwrap();
    std::fs::write(
        dir.join("callout.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nsip = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{d}/data/c.db\"\n\
             dialplans = \"{d}/dialplans\"\nprompts = \"{d}/prompts\"\ntts_cache = \"{d}/tts\"\n\
             jtalk_voice = \"voices/nowhere.htsvoice\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .current_dir("/")
        .args(["serve", "--config"])
        .arg(dir.join("callout.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for place in [
        "voices/nowhere.htsvoice,".to_string(),
        "/usr/share/callout/voices/nowhere.htsvoice".to_string(),
        format!("{}/voices/nowhere.htsvoice", env!("CARGO_MANIFEST_DIR")),
    ] {
        assert!(err.contains(&place), "{place} in: {err}");
    }
    assert!(
        err.contains("the Japanese voice not found") && err.contains("needed by contract ja"),
        "{err}"
    );
}

/// `callout say` in another folder finds the voice too.
#[test]
fn say_in_another_folder_finds_the_voice() {
    common::require("open_jtalk");
    let dir = scratch("paths-say");
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .current_dir(&dir)
        .args(["say", "--voice", "ja", "障害です", "-o", "out.wav"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("out.wav").metadata().unwrap().len() > 8000);
}

/// A dialplans folder found nowhere stops the start, naming every place.
#[test]
fn a_dialplans_folder_found_nowhere_stops_the_start() {
    let dir = scratch("paths-nodialplans");
    std::fs::write(
        dir.join("callout.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nsip = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{d}/data/c.db\"\n\
             dialplans = \"contracts-nowhere\"\ntts_cache = \"{d}/tts\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .current_dir("/")
        .args(["serve", "--config"])
        .arg(dir.join("callout.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the dialplans folder not found; looked in: contracts-nowhere, /usr/share/callout/contracts-nowhere, ")
            && err.contains(&format!("{}/contracts-nowhere", env!("CARGO_MANIFEST_DIR"))),
        "{err}"
    );
}

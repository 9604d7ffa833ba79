//! The INVITE never waits for speech synthesis: callout dials a real
//! auto-answering callee (baresip) while a 30-second Japanese message is
//! still being synthesised, part by part (the first sentence in two
//! chunks split at its comma), and the callee hears the whole message, in
//! order, the chunks joined with no more than a comma's pause, then the
//! menu.

mod common;

use callout::media::audio::{read_wav_mono, resample, to_i16};
use common::*;
use std::time::Duration;

const MESSAGE: &str =
    "こちらはACME社の監視センター、自動通報システムです。ホスト{host}で重大な障害が発生しました。\
ウェブサーバが三分前から応答していません。データベースへの接続も失敗しています。\
影響を受けているお客様は約二千名です。直ちに状況を確認してください。\
復旧手順は運用マニュアルの第五章にあります。必要であれば担当者に連絡してください。\
障害の詳細はチケットに記録されています。このメッセージは自動で送信されています。\
夜間の対応に感謝いたします。繰り返しますが、至急対応をお願いします。";

#[test]
fn the_call_rings_while_the_message_is_synthesised_and_it_is_heard_whole() {
    require("sox");
    require("open_jtalk");
    let dir = scratch("dial-early");
    let src = dir.join("callee-mic.wav");
    // The callee's microphone: a quiet tone longer than the call.
    let st = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&src)
        .args(["synth", "90", "sine", "440", "vol", "0.02"])
        .status()
        .unwrap();
    assert!(st.success());
    let bs = Baresip::start_for(&dir, &src, 90);
    let plan_path = dir.join("ja.toml");
    std::fs::write(
        &plan_path,
        format!(
            "contract = \"early\"\nname = \"早期\"\nlanguage = \"ja\"\n[escalation]\nrounds = 1\nring_timeout = \"10s\"\n\
             between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"P\"\nuri = \"{uri}\"\n\
             [message]\ntext = \"{MESSAGE}\"\n[menu]\nprompt = \"対応する場合は1を押してください。\"\n\
             input_timeout = \"2s\"\nmax_attempts = 1\n[menu.keys]\n\"1\" = \"ack\"\n",
            uri = bs.uri()
        ),
    )
    .unwrap();
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let cache = dir.join("cache");
    // As deployed: `dialplan check` renders the fixed phrases into the
    // cache. The message names the host, so it is synthesised per alert.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "dialplan",
            "check",
            plan_path.to_str().unwrap(),
            "--prompts",
            prompts,
        ])
        .env("CALLOUT_TTS_CACHE", &cache)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["escalate", plan_path.to_str().unwrap()])
        .args(["--ticket", "1", "--host", "web-01", "--summary", "down"])
        .args(["--prompts", prompts])
        .env("CALLOUT_TTS_CACHE", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pos = |name: &str| {
        lines
            .iter()
            .position(|l| l["event"] == name)
            .unwrap_or_else(|| panic!("no {name}: {lines:#?}\n{stderr}\n{}", bs.log()))
    };

    // The timeline: the callee answered before the last sentence was
    // synthesised, so the INVITE did not wait for the speech.
    let (dialing, answered, ready) = (
        pos("call.dialing"),
        pos("call.answered"),
        pos("message.ready"),
    );
    assert!(
        dialing < answered && answered < ready,
        "dialing {dialing}, answered {answered}, message ready {ready}: {lines:#?}"
    );
    let ready_ev = &lines[ready];
    let n = ready_ev["sentences"].as_u64().unwrap() as usize;
    assert!(n >= 10, "{ready_ev}");
    // The first sentence in two chunks, every other sentence whole.
    let parts = ready_ev["parts"].as_u64().unwrap() as usize;
    assert_eq!(parts, n + 1, "{ready_ev}");
    assert_eq!(ready_ev["fallbacks"], serde_json::json!([]));
    assert!(events(&lines, "message.sentence").is_empty(), "no fallback");
    let audio_ms = ready_ev["audio_ms"].as_u64().unwrap();
    assert!(audio_ms > 20_000, "a long message: {audio_ms} ms");
    // The first sentence first, the rest in order, and the first ready
    // long before the whole message.
    let at: Vec<i64> = ready_ev["sentence_ready_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(at.len(), n);
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    let first = &lines[pos("message.first")];
    // The first audio is the first clause, ready before the whole first
    // sentence.
    let part_at: Vec<i64> = ready_ev["part_ready_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(part_at.len(), parts);
    assert_eq!(first["at_ms"].as_i64(), Some(part_at[0]));
    assert_eq!(first["whole_sentence"], false, "{first}");
    assert!(
        part_at[0] <= at[0] && at[0] == part_at[1],
        "{part_at:?} {at:?}"
    );
    assert!(at[0] < at[n - 1], "{at:?}");
    assert_eq!(
        events(&lines, "call.ended")[0]["outcome"]["outcome"],
        "answered_no_input",
        "{lines:#?}"
    );

    // What baresip heard: every part, as synthesised on its own, in
    // order, none cut short, the two chunks of the first sentence joined
    // with at most a comma's pause (not the pause between sentences),
    // and the menu only after the last part.
    std::thread::sleep(Duration::from_millis(500));
    let heard = bs.heard().expect("baresip recorded the call");
    let (h, rate) = read_wav_mono(&heard).unwrap();
    let heard = to_i16(&resample(&h, rate, 8000));
    let plan =
        callout::ivr::dialplan::load_file(&plan_path, std::path::Path::new(prompts)).unwrap();
    let n_fields = callout::runner::Notification {
        contract: "early".into(),
        ticket: "1".into(),
        severity: "critical".into(),
        host: "web-01".into(),
        summary: "down".into(),
        variables: Default::default(),
    };
    let (m, _) =
        callout::runner::Script::message_job(&plan, &n_fields, std::path::Path::new(prompts))
            .unwrap();
    assert_eq!(m.parts.len(), parts);
    assert_eq!(m.sentences(), n);
    let tts = callout::tts::Tts::new(&callout::tts::TtsConfig {
        cache_dir: cache.clone(),
        ..Default::default()
    })
    .unwrap();
    let mut end_ms = 0usize;
    for (k, part) in m.parts.iter().enumerate() {
        let text = &part.text;
        let said = tts
            .render(callout::ivr::dialplan::Language::Ja, text)
            .unwrap();
        // Its voice, without the silence the engine put around it (a
        // joint trims that): where it starts and ends in the recording.
        let (lead, trail) = callout::tts::join::edges(&said.pcm);
        let voice = &said.pcm[lead..said.pcm.len() - trail];
        let (corr, at) = best_match(voice, &heard);
        assert!(
            corr > 0.9,
            "part {k} ({text}) heard with correlation {corr}"
        );
        // In order, each after the whole of the one before (50 ms
        // envelope grid, so a little slack).
        assert!(
            at + 100 >= end_ms,
            "part {k} at {at} ms, before the end of part {} ({end_ms} ms)",
            k.saturating_sub(1)
        );
        if part.continues {
            let pause = at.saturating_sub(end_ms) as u64;
            assert!(
                pause <= callout::tts::join::JOIN_PAUSE_MS + 100,
                "part {k} ({text}) {pause} ms after the chunk before it"
            );
        }
        end_ms = at + voice.len() / 8;
        // Heard whole: the recording goes on past its end.
        assert!(
            heard.len() / 8 >= end_ms,
            "sentence {k} cut at the end of the call"
        );
    }
    let menu = tts
        .render(
            callout::ivr::dialplan::Language::Ja,
            "対応する場合は1を押してください。",
        )
        .unwrap();
    let (corr, at) = best_match(&menu.pcm, &heard);
    assert!(corr > 0.9, "menu heard with correlation {corr}");
    assert!(
        at + 100 >= end_ms,
        "menu at {at} ms, before the message ended at {end_ms} ms"
    );
}

//! Speech with the real engines (Open JTalk, espeak-ng): audio shape,
//! cache behaviour, and the path from text to the wire.

mod common;

use callout::ivr::dialplan::Language;
use callout::tts::{Tts, TtsConfig};
use common::*;
use std::time::Instant;

fn tts(dir: &std::path::Path, max_bytes: u64) -> Tts {
    Tts::new(&TtsConfig {
        cache_dir: dir.join("cache"),
        cache_max_bytes: max_bytes,
        jtalk_voice: concat!(env!("CARGO_MANIFEST_DIR"), "/voices/mei_normal.htsvoice").into(),
        ..TtsConfig::default()
    })
    .unwrap()
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter()
        .map(|&s| (s as f64 / 32768.0).powi(2))
        .sum::<f64>()
        / pcm.len() as f64)
        .sqrt()
}

#[test]
fn japanese_and_english_render_to_loud_clean_8khz_speech() {
    require("open_jtalk");
    require("espeak-ng");
    let dir = scratch("tts-render");
    let t = tts(&dir, 64 << 20);
    for (lang, text, min_ms, max_ms) in [
        (
            Language::Ja,
            "ウェブサーバの障害が発生しました。対応をお願いします。",
            2000,
            8000,
        ),
        (
            Language::En,
            "The web server is down. Please take action.",
            1500,
            6000,
        ),
    ] {
        let p = t.render(lang, text).unwrap();
        let ms = p.duration_ms();
        assert!((min_ms..max_ms).contains(&ms), "{lang:?}: {ms} ms");
        // Rendered audio is 8 kHz by construction; check level and peaks.
        let peak = p.pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak < 32000, "{lang:?}: no clipping, peak {peak}");
        assert!(peak > 8000, "{lang:?}: not silence, peak {peak}");
        let level = rms(&p.pcm);
        assert!((0.03..0.2).contains(&level), "{lang:?}: rms {level}");
        // Speech has pauses and voiced parts: the energy envelope varies.
        let env = envelope(&p.pcm);
        let quiet = env.iter().filter(|e| **e < 300.0).count();
        assert!(
            quiet > 0 && quiet < env.len() / 2,
            "{lang:?}: {quiet} quiet frames of {}",
            env.len()
        );
    }
    let file = dir
        .join("cache")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let spec = hound::WavReader::open(&file).unwrap().spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (8000, 1, 16)
    );
}

#[test]
fn repeat_renders_come_from_the_cache_and_the_bound_evicts() {
    require("espeak-ng");
    let dir = scratch("tts-cache");
    let t = tts(&dir, 200_000);
    let first = Instant::now();
    let a = t.render(Language::En, "Cache test phrase one.").unwrap();
    let miss = first.elapsed();
    let again = Instant::now();
    let b = t.render(Language::En, "Cache test phrase one.").unwrap();
    let hit = again.elapsed();
    assert!(a.pcm == b.pcm, "a cache hit gives the same samples");
    assert_eq!(t.stats.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(t.stats.misses.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(hit < miss, "hit {hit:?} vs miss {miss:?}");
    // Fill past 200 kB: the least recently used file goes first.
    for i in 0..8 {
        t.render(
            Language::En,
            &format!("Another phrase number {i}, long enough to take some room in the cache."),
        )
        .unwrap();
        // Keep phrase one fresh.
        t.render(Language::En, "Cache test phrase one.").unwrap();
    }
    assert!(t.cache().size() <= 200_000, "size {}", t.cache().size());
    let key = callout::tts::cache::Cache::key(
        &callout::tts::engine::Espeak::new("en-us").id_for_test(),
        "Cache test phrase one.",
    );
    assert!(
        t.cache().path(&key).exists(),
        "the most recently used phrase survives eviction"
    );
    let oldest = callout::tts::cache::Cache::key(
        &callout::tts::engine::Espeak::new("en-us").id_for_test(),
        "Another phrase number 0, long enough to take some room in the cache.",
    );
    assert!(
        !t.cache().path(&oldest).exists(),
        "the least recently used is evicted"
    );
}

#[test]
fn say_command_and_readers() {
    require("espeak-ng");
    let dir = scratch("say");
    let out = dir.join("say.wav");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "say",
            "--voice",
            "en",
            "Host {host}, ticket {ticket}.",
            "--var",
            "host=web-01.example.jp",
            "--var",
            "ticket=INC-7",
        ])
        .arg("-o")
        .arg(&out)
        .env("CALLOUT_TTS_CACHE", dir.join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("Host web zero one dot example dot j p, ticket i n c seven."),
        "{err}"
    );
    let spec = hound::WavReader::open(&out).unwrap().spec();
    assert_eq!(spec.sample_rate, 8000);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["say", "--voice", "xx", "hello", "-o", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown voice \"xx\""));
}

/// Text to the wire: a notification's message, rendered by the engine, is
/// what a real peer (`callout softphone --record`) hears over RTP.
#[test]
fn the_callee_hears_the_rendered_message() {
    require("espeak-ng");
    let dir = scratch("tts-wire");
    let heard = dir.join("heard.wav");
    let (mut phone, port) = peer::softphone(|cmd| {
        cmd.args(["--calls", "1", "--rtp-ports", "33200-33299", "--record"])
            .arg(&heard);
    });
    let plan = dir.join("wire.toml");
    std::fs::write(
        &plan,
        format!(
            r#"contract = "wire"
name = "Wire"
language = "en"
[escalation]
rounds = 1
ring_timeout = "5s"
between_calls = "1s"
between_rounds = "1m"
[[contacts]]
name = "Phone"
uri = "sip:phone@127.0.0.1:{port}"
[message]
text = "Alert on {{host}}: {{summary}}."
[menu]
prompt = "Press 1."
input_timeout = "1s"
max_attempts = 1
[menu.keys]
"1" = "ack"
"#
        ),
    )
    .unwrap();
    let cache = dir.join("cache");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "escalate",
            plan.to_str().unwrap(),
            "--ticket",
            "7",
            "--host",
            "db-1",
            "--summary",
            "disk full",
        ])
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .env("CALLOUT_TTS_CACHE", &cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"outcome\":\"answered_no_input\""),
        "{stdout}"
    );
    assert!(phone.wait().unwrap().success());

    // The same engine and cache render the message as the call did.
    let t = Tts::new(&TtsConfig {
        cache_dir: cache,
        ..TtsConfig::default()
    })
    .unwrap();
    let spoken = format!(
        "Alert on {}: disk full.",
        callout::tts::readers::spell_host("db-1", Language::En)
    );
    let message = t.render(Language::En, &spoken).unwrap();
    assert_eq!(
        t.stats.hits.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "rendered before the call, found in the cache"
    );
    let rec = callout::media::audio::Prompt::load(&heard).unwrap();
    let (em, eh) = (envelope(&message.pcm), envelope(&rec.pcm));
    assert!(
        eh.len() >= em.len(),
        "recording {} frames, message {}",
        eh.len(),
        em.len()
    );
    let best = (0..8)
        .map(|lag| correlation(&em, &eh[lag..]))
        .fold(f64::MIN, f64::max);
    assert!(
        best > 0.9,
        "the recording follows the rendered message: correlation {best}"
    );
}

/// With the Japanese voice missing, the call still goes out with the
/// recorded fallback prompt, and the failure is reported.
#[test]
fn synthesis_failure_falls_back_to_the_recorded_prompt() {
    let dir = scratch("tts-fallback");
    let (phone, port) = peer::softphone(|cmd| {
        cmd.args(["--calls", "1", "--press", "1", "--after", "1s"])
            .args(["--rtp-ports", "33300-33399"]);
    });
    let plan = dir.join("ja.toml");
    std::fs::write(
        &plan,
        format!(
            "contract = \"ja\"\nname = \"日本\"\nlanguage = \"ja\"\n[escalation]\nrounds = 1\nring_timeout = \"5s\"\n\
             between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"P\"\nuri = \"sip:p@127.0.0.1:{port}\"\n\
             [message]\ntext = \"ホスト{{host}}で障害です。\"\n[menu]\nprompt = \"対応する場合は1を押してください。\"\n\
             [menu.keys]\n\"1\" = \"ack\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "escalate",
            plan.to_str().unwrap(),
            "--ticket",
            "1",
            "--host",
            "web-01",
            "--summary",
            "x",
        ])
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .env("CALLOUT_TTS_CACHE", dir.join("cache"))
        .env("CALLOUT_JTALK_VOICE", "/nonexistent/voice.htsvoice")
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        out.status.success(),
        "{lines:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = &events(&lines, "audio.ready")[0];
    let fallbacks = ready["fallbacks"].as_array().unwrap();
    assert!(
        !fallbacks.is_empty() && fallbacks[0].as_str().unwrap().contains("not found"),
        "{ready}"
    );
    assert_eq!(
        events(&lines, "call.ended")[0]["outcome"]["outcome"],
        "acked"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("synthesis failed"),
        "logged"
    );
    let mut phone = phone;
    let _ = phone.wait();
}

/// Site voices: a command-line engine (espeak-ng's German voice through
/// the generic argv backend) and an engine server with a VOICEVOX-style
/// API (here a local server that answers the two calls of that API with
/// espeak-ng audio, standing in for VOICEVOX, which is not packaged).
#[test]
fn command_and_http_voices() {
    require("espeak-ng");
    let dir = scratch("tts-voices");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let addr = {
        let seen = seen.clone();
        let wav_dir = dir.clone();
        rt.block_on(async move {
            use axum::extract::Query;
            use axum::routing::post;
            use std::collections::HashMap;
            let s1 = seen.clone();
            let app = axum::Router::new()
                .route(
                    "/audio_query",
                    post(move |Query(q): Query<HashMap<String, String>>| {
                        let s1 = s1.clone();
                        async move {
                            s1.lock()
                                .unwrap()
                                .push(format!("query speaker={} text={}", q["speaker"], q["text"]));
                            axum::Json(serde_json::json!({"text": q["text"], "speedScale": 1.0}))
                        }
                    }),
                )
                .route(
                    "/synthesis",
                    post(
                        move |Query(q): Query<HashMap<String, String>>, body: String| {
                            let (seen, wav_dir) = (seen.clone(), wav_dir.clone());
                            async move {
                                let query: serde_json::Value = serde_json::from_str(&body).unwrap();
                                seen.lock()
                                    .unwrap()
                                    .push(format!("synthesis speaker={}", q["speaker"]));
                                let out = wav_dir.join("server.wav");
                                std::process::Command::new("espeak-ng")
                                    .args(["-v", "en-gb", "-w"])
                                    .arg(&out)
                                    .arg(query["text"].as_str().unwrap())
                                    .status()
                                    .unwrap();
                                std::fs::read(&out).unwrap()
                            }
                        },
                    ),
                );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            addr
        })
    };
    let mut voices = std::collections::BTreeMap::new();
    voices.insert(
        "german".to_string(),
        callout::tts::VoiceConfig::Command {
            argv: ["espeak-ng", "-v", "de", "-w", "{out}", "{text}"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        },
    );
    voices.insert(
        "server".to_string(),
        callout::tts::VoiceConfig::Http {
            url: format!("http://{addr}"),
            speaker: 3,
        },
    );
    let t = Tts::new(&TtsConfig {
        cache_dir: dir.join("cache"),
        voices,
        ..TtsConfig::default()
    })
    .unwrap();
    let de = t
        .render_voice(Language::En, Some("german"), "Der Server antwortet nicht.")
        .unwrap();
    assert!(de.duration_ms() > 1000 && de.pcm.iter().any(|s| s.unsigned_abs() > 5000));
    let http = t
        .render_voice(Language::En, Some("server"), "The database is down.")
        .unwrap();
    assert!(http.duration_ms() > 1000, "{} ms", http.duration_ms());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "query speaker=3 text=The database is down.".to_string(),
            "synthesis speaker=3".to_string()
        ]
    );
    // The same text in two voices is two cache entries.
    let en = t
        .render_voice(Language::En, None, "The database is down.")
        .unwrap();
    assert!(en.pcm != http.pcm);
    let misses = t.stats.misses.load(std::sync::atomic::Ordering::Relaxed);
    t.render_voice(Language::En, Some("server"), "The database is down.")
        .unwrap();
    assert_eq!(
        t.stats.misses.load(std::sync::atomic::Ordering::Relaxed),
        misses,
        "cached per voice"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a cache hit does not call the server"
    );
    let err = t
        .render_voice(Language::En, Some("nosuch"), "x")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("unknown voice \"nosuch\""),
        "{err}"
    );
}

#[test]
fn dialplan_check_reports_an_unusable_voice() {
    let dir = scratch("tts-badvoice");
    let plan = dir.join("v.toml");
    std::fs::write(
        &plan,
        "contract = \"v\"\nname = \"V\"\nlanguage = \"en\"\nvoice = \"nosuch\"\n[escalation]\nrounds = 1\nring_timeout = \"5s\"\n\
         between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"P\"\nuri = \"sip:p@127.0.0.1\"\n\
         [message]\ntext = \"x\"\n[menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dialplan", "check"])
        .arg(&plan)
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .env("CALLOUT_TTS_CACHE", dir.join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("voice \"nosuch\" (language En) is unavailable: unknown voice \"nosuch\""),
        "{text}"
    );
}

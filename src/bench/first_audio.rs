//! `callout bench first-audio`: time to first audio for a fresh
//! 20-second Japanese message. The service runs in process (real HTTP,
//! SQLite, Open JTalk); each notification names a new host, so its
//! message is synthesised after the POST. For each, from the POST leaving
//! the client and from its 202: the INVITE arriving at a UDP callee
//! (matched by the `X-Callout-Notification` header; it answers 486), the
//! first part ready (`message.first`: the first sentence, or its first
//! clause when it has a comma) and the whole message ready
//! (`message.ready`), both as the service recorded them, and when the
//! first part's synthesis started.

use std::net::UdpSocket;
use std::time::Duration;

use anyhow::Context;

use crate::speech::now_us;

/// About 20 seconds of speech with the mei voice, in four sentences.
/// Every sentence names the host, so with a new host per notification no
/// sentence can come from the speech cache: each is synthesised after the
/// POST, the first one first.
const MESSAGE: &str = "ホスト{host}で重大な障害が発生しました。\
{host}のウェブサーバが三分前から応答していません。直ちに{host}の状況を確認してください。\
{host}の件、至急対応をお願いします。";

/// Host names with 26 different first letters. The host is spelled
/// ("ダブリュー、イー、ビー、…"), and the first sentence is said in chunks
/// split at its first comma, so the first chunk is "ホスト" and the
/// host's first letter: with one host name for all (web-1, web-2, …) the
/// first chunk would be the same every time and come from the cache after
/// the warm-up. Notification `t` uses `HOSTS[t % 26]`: up to 25 runs, no
/// first chunk is in the cache.
const HOSTS: [&str; 26] = [
    "api", "batch", "cache", "db", "edge", "files", "gw", "hub", "idp", "jobs", "kafka", "log",
    "mail", "nfs", "ops", "proxy", "queue", "redis", "search", "tsdb", "upload", "vault", "web",
    "xfer", "yum", "zk",
];

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub async fn run(runs: usize, gap: Duration, cold: bool) -> anyhow::Result<()> {
    use sha2::Digest;
    let dir =
        std::env::temp_dir().join(format!("callout-bench-first-audio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("dialplans"))?;
    let callee = UdpSocket::bind("127.0.0.1:0")?;
    let callee_addr = callee.local_addr()?;
    let arrivals = super::spawn_busy_callee(callee, now_us);
    std::fs::write(
        dir.join("dialplans/bench.toml"),
        format!(
            "contract = \"bench\"\nname = \"Bench\"\nlanguage = \"ja\"\n[escalation]\nrounds = 1\nring_timeout = \"10s\"\n\
             between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"Callee\"\nuri = \"sip:callee@{callee_addr}\"\n\
             [message]\ntext = \"{MESSAGE}\"\n[menu]\nprompt = \"対応する場合は1を押してください。\"\n[menu.keys]\n\"1\" = \"ack\"\n"
        ),
    )?;
    let token = "bench-token";
    let config = crate::config::Config {
        listen: "127.0.0.1:0".into(),
        sip: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}/data/callout.db", dir.display()),
        dialplans: dir.join("dialplans"),
        tts_cache: dir.join("tts"),
        tokens: vec![crate::config::TokenConfig {
            name: "bench".into(),
            sha256: sha2::Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            scopes: vec!["admin".into()],
            contracts: Vec::new(),
        }],
        ..Default::default()
    };
    let (svc, listener) = crate::serve::start(config).await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, crate::api::router(svc)).await });
    let store =
        crate::store::Store::connect(&format!("sqlite://{}/data/callout.db", dir.display()))
            .await
            .context("open the bench database")?;
    let client = reqwest::Client::new();
    let post = |t: usize| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body = serde_json::json!({"contract": "bench", "ticket": format!("F{t}"),
                "severity": "major", "host": format!("{}-{t}", HOSTS[t % HOSTS.len()]), "summary": "down"});
            let sent = now_us();
            let r = client
                .post(format!("{base}/v1/notifications"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            let answered = now_us();
            let v: serde_json::Value = r.json().await?;
            let id = v["id"].as_str().context("no id in the reply")?.to_string();
            anyhow::Ok((sent, answered, id))
        }
    };
    // Warm: one notification first, measured from once its INVITE has
    // arrived: the contract's fixed phrases are then in the cache, as they
    // are in service (on this fresh cache the start's prewarm takes
    // seconds: 19 phrases, 4.8 s on 2026-12-01). Cold (`--cold`): none,
    // notification 1 is posted as soon as the service is up, on the empty
    // cache, while the prewarm renders them.
    if !cold {
        let (_, _, warm) = post(0).await?;
        wait_ready(&store, &warm).await;
        for _ in 0..300 {
            if arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&warm)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let load_before = loadavg();
    let mut sent = Vec::new();
    for t in 1..=runs {
        sent.push(post(t).await?);
        tokio::time::sleep(gap).await;
    }
    let (mut invite, mut first, mut whole, mut audio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut api, mut first_202, mut first_invite) = (Vec::new(), Vec::new(), Vec::new());
    let (mut synth_start, mut synth) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for (t, (at, answered, id)) in sent.iter().enumerate() {
        let evs = wait_ready(&store, id).await;
        let get = |name: &str, field: &str| {
            evs.iter()
                .find(|(e, _)| e == name)
                .and_then(|(_, v)| v[field].as_i64())
        };
        let arrived = arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        let ms = |us: Option<i64>| us.map(|u| (u - at) as f64 / 1000.0);
        if let (Some(i), Some(f), Some(w)) = (
            ms(arrived),
            ms(get("message.first", "ready_us")),
            ms(get("message.ready", "done_us")),
        ) {
            invite.push(i);
            first.push(f);
            let to_202 = (answered - at) as f64 / 1000.0;
            api.push(to_202);
            first_202.push(f - to_202);
            first_invite.push(f - i);
            whole.push(w);
            audio.push(get("message.ready", "audio_ms").unwrap_or(0) as f64 / 1000.0);
            // Where the time to first audio goes: from the POST to the
            // engine being asked (commit, admission, spawn), then the
            // first part's synthesis (engine run, resampling, cache).
            let first_synth = evs
                .iter()
                .find(|(e, _)| e == "message.first")
                .and_then(|(_, v)| v["synth_ms"].as_f64())
                .unwrap_or(f64::NAN);
            let first_audio = get("message.first", "audio_ms").unwrap_or(0);
            synth_start.push(f - first_synth);
            synth.push(first_synth);
            rows.push(format!(
                "  #{}: 202 {to_202:.1}, INVITE {i:.1}, synthesis start {:.1}, first part ready {f:.1} \
                 ({first_synth:.1} ms for {first_audio} ms of speech), whole message {w:.1}",
                t + 1,
                f - first_synth
            ));
        }
    }
    let load_after = loadavg();
    let fmt = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        format!(
            "p50 {:.1} ms, max {:.1} ms",
            super::percentile(&s, 0.5),
            s.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!(
        "first-audio (ja, Open JTalk, SQLite{}): {}/{runs} notifications, message {:.1} s of speech, {} s apart",
        if cold { ", cold: empty speech cache" } else { "" },
        invite.len(),
        audio.iter().sum::<f64>() / audio.len().max(1) as f64,
        gap.as_secs_f64()
    );
    println!("POST -> 202: {}", fmt(&api));
    println!("POST -> INVITE at the callee: {}", fmt(&invite));
    println!(
        "POST -> first part ready (time to first audio): {}",
        fmt(&first)
    );
    println!("202 -> first part ready: {}", fmt(&first_202));
    println!(
        "INVITE -> first part ready (negative: ready before the INVITE): {}",
        fmt(&first_invite)
    );
    println!("POST -> whole message ready: {}", fmt(&whole));
    println!(
        "POST -> synthesis of the first part starts: {}",
        fmt(&synth_start)
    );
    println!("first part's synthesis: {}", fmt(&synth));
    println!("each notification, ms from its POST:");
    for r in &rows {
        println!("{r}");
    }
    println!("load average before {load_before}, after {load_after}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A notification's events once its message is ready (30 s at most).
async fn wait_ready(store: &crate::store::Store, id: &str) -> Vec<(String, serde_json::Value)> {
    for _ in 0..300 {
        if let Ok(rows) = store.outbox(id).await {
            if rows.iter().any(|r| r.event == "message.ready") {
                return rows
                    .into_iter()
                    .map(|r| {
                        (
                            r.event,
                            serde_json::from_str(&r.payload).unwrap_or_default(),
                        )
                    })
                    .collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

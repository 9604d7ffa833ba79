//! `callout softphone` and `callout demo`: a small SIP callee on the same
//! stack, for trying callout without a phone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::driver::{sip::Incoming, CallUpdate, Gateway};
use crate::media::audio::write_wav;
use crate::media::session::MediaEvent;
use crate::sip::call::CallEvent;

/// Options of `callout softphone`.
#[derive(Debug, Clone)]
pub struct SoftphoneOptions {
    pub listen: SocketAddr,
    /// Keys to press (RFC 4733) after `after`.
    pub press: String,
    pub after: Duration,
    /// Write what the caller played to this WAV (8 kHz mono).
    pub record: Option<PathBuf>,
    /// Stop after this many calls (0 = serve forever).
    pub calls: usize,
    pub rtp_ports: String,
}

/// Serve incoming calls, printing JSON lines through `emit`.
pub async fn run(
    o: SoftphoneOptions,
    emit: impl Fn(serde_json::Value) + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    let (gw, mut incoming) = Gateway::start_softphone(o.listen, &o.rtp_ports).await?;
    emit(json!({"event": "listening", "sip": gw.sip_addr().to_string()}));
    serve(gw, &mut incoming, o, &emit).await
}

async fn serve(
    gw: Gateway,
    incoming: &mut mpsc::UnboundedReceiver<Incoming>,
    o: SoftphoneOptions,
    emit: &(impl Fn(serde_json::Value) + Send + Sync + Clone + 'static),
) -> anyhow::Result<()> {
    // Calls are served at once, each on its own task, like a phone system
    // with many extensions; the first call is the one recorded.
    let mut served = 0;
    let mut calls = tokio::task::JoinSet::new();
    while let Some(inc) = incoming.recv().await {
        served += 1;
        emit(json!({"event": "incoming", "codec": inc.offer.codec, "call": served}));
        let call = gw.accept(inc).await?;
        let record = if served == 1 { o.record.clone() } else { None };
        calls.spawn(one_call(
            call,
            o.press.clone(),
            o.after,
            record,
            emit.clone(),
        ));
        if o.calls != 0 && served >= o.calls {
            break;
        }
    }
    while let Some(r) = calls.join_next().await {
        r??;
    }
    Ok(())
}

async fn one_call(
    mut call: crate::driver::ActiveCall,
    press: String,
    after: Duration,
    record: Option<PathBuf>,
    emit: impl Fn(serde_json::Value) + Send + Sync,
) -> anyhow::Result<()> {
    if record.is_some() {
        call.record();
    }
    let started = Instant::now();
    let mut press_at: Option<tokio::time::Instant> = None;
    loop {
        let wait = async {
            match press_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = call.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    CallUpdate::Sip(CallEvent::Answered(_)) => {
                        emit(json!({"event": "answered"}));
                        if !press.is_empty() {
                            press_at = Some(tokio::time::Instant::now() + after);
                        }
                    }
                    CallUpdate::Sip(CallEvent::Ended(reason)) => {
                        emit(json!({"event": "ended", "reason": reason,
                            "after_ms": started.elapsed().as_millis() as u64}));
                    }
                    CallUpdate::Media(MediaEvent::Digit(d)) => {
                        emit(json!({"event": "heard_digit", "digit": d.digit.to_string()}));
                    }
                    _ => {}
                }
            }
            _ = wait => {
                press_at = None;
                for d in press.chars() {
                    call.send_digit(d, 120);
                    emit(json!({"event": "pressed", "digit": d.to_string(),
                        "after_ms": started.elapsed().as_millis() as u64}));
                }
            }
        }
    }
    if let Some(path) = &record {
        let pcm = call.take_recording().await;
        write_wav(path, &pcm)?;
        emit(
            json!({"event": "recorded", "file": path.display().to_string(), "ms": pcm.len() as u64 / 8}),
        );
    }
    Ok(())
}

/// `callout demo`: the whole service on embedded defaults (SQLite, the
/// sample dialplans), two local softphones as the contract's on-call
/// people, a notification posted through the real HTTP API, and the
/// escalation and its webhook deliveries printed as they happen.
pub async fn demo(dialplans: PathBuf, prompts: PathBuf) -> anyhow::Result<()> {
    use anyhow::Context;
    use sha2::Digest;
    use std::sync::{Arc, Mutex};
    // The two people on call, where dialplans/demo.toml expects them.
    let mut phones = Vec::new();
    for (i, (port, key)) in [(5071u16, "2"), (5072u16, "1")].into_iter().enumerate() {
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let rtp = 41000 + i * 200;
        let (gw, mut incoming) = Gateway::start_softphone(listen, &format!("{rtp}-{}", rtp + 199))
            .await
            .with_context(|| {
                format!("starting the demo softphone on {listen} (is the port free?)")
            })?;
        let opts = SoftphoneOptions {
            listen,
            press: key.into(),
            after: Duration::from_millis(3500),
            record: None,
            calls: 0,
            rtp_ports: String::new(),
        };
        let who = if key == "2" { "first" } else { "second" };
        phones.push(tokio::spawn(async move {
            let emit =
                move |v: serde_json::Value| println!("            [{who} phone] {}", describe(&v));
            let _ = serve(gw, &mut incoming, opts, &emit).await;
        }));
    }
    // A webhook receiver standing in for the ticket system.
    let deliveries: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let hook_addr = {
        use axum::{http::HeaderMap, routing::post, Router};
        let d = deliveries.clone();
        let app = Router::new().route(
            "/ticket-events",
            post(move |headers: HeaderMap, body: String| {
                let d = d.clone();
                async move {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let signed = headers.contains_key("webhook-signature");
                    d.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                        "#{} {}{}",
                        v["seq"],
                        v["type"].as_str().unwrap_or("?"),
                        if signed { " (signed)" } else { "" }
                    ));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    };
    let token: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    let config = crate::config::Config {
        listen: "127.0.0.1:0".into(),
        sip: "127.0.0.1:0".into(),
        dialplans,
        prompts,
        tokens: vec![crate::config::TokenConfig {
            name: "demo".into(),
            sha256: sha2::Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            scopes: vec!["admin".into()],
        }],
        webhooks: crate::config::WebhookConfig {
            url: Some(format!("http://{hook_addr}/ticket-events")),
            secrets: vec!["whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9u".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let db = config.database_url.clone();
    let (svc, listener) = crate::serve::start(config).await?;
    let api = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, crate::api::router(svc)).await });
    println!("callout demo: API on {api}, database {db}, dialplans/demo.toml, webhooks to http://{hook_addr}/ticket-events");
    let client = reqwest::Client::new();
    let ticket = format!("DEMO-{}", crate::runner::now_ms() % 100_000);
    let body = serde_json::json!({"contract": "demo", "ticket": ticket, "severity": "critical",
        "host": "web-01.example.com", "summary": "HTTP checks failing"});
    println!("POST {api}/v1/notifications {body}");
    let resp = client
        .post(format!("{api}/v1/notifications"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let accepted: serde_json::Value = resp.json().await?;
    println!("  -> {} {}", status.as_u16(), accepted);
    let id = accepted["id"]
        .as_str()
        .context("no id in the answer")?
        .to_string();
    let started = Instant::now();
    let mut shown_attempts = 0;
    let mut shown_outcomes = std::collections::HashSet::new();
    let mut shown_hooks = 0;
    let mut final_seen: Option<serde_json::Value> = None;
    let mut settle = 0;
    loop {
        let v: serde_json::Value = client
            .get(format!("{api}/v1/notifications/{id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let t = format!("{:>6} ms", started.elapsed().as_millis());
        if let Some(attempts) = v["attempts"].as_array() {
            for a in attempts.iter().skip(shown_attempts) {
                println!(
                    "{t}  calling {} (attempt {}, round {})",
                    a["contact"].as_str().unwrap_or("?"),
                    a["attempt"],
                    a["round"]
                );
            }
            shown_attempts = shown_attempts.max(attempts.len());
            for a in attempts {
                if let Some(o) = a["outcome"]["outcome"].as_str() {
                    if shown_outcomes.insert(a["attempt"].to_string()) {
                        println!(
                            "{t}  {} -> {o} (keys pressed: {:?})",
                            a["contact"].as_str().unwrap_or("?"),
                            a["digits"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
        {
            let d = deliveries.lock().unwrap_or_else(|e| e.into_inner());
            for line in d.iter().skip(shown_hooks) {
                println!("{t}  webhook delivered: {line}");
            }
            shown_hooks = d.len();
        }
        let state = v["state"].as_str().unwrap_or("");
        if crate::store::FINAL_STATES.contains(&state) && final_seen.is_none() {
            println!("{t}  notification {state}: {}", v["final"]);
            if let Some(by) = v["acked_by"].as_str() {
                println!("{t}  acknowledged by {by}");
            }
            final_seen = Some(v.clone());
        }
        if final_seen.is_some() {
            settle += 1;
            // Let the last webhook deliveries arrive.
            if settle > 8 && v["webhooks"]["queued"] == 0 {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the demo escalation did not finish within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("done: GET {api}/v1/notifications/{id} has the whole history; `callout serve` runs this as a service");
    for p in phones {
        p.abort();
    }
    Ok(())
}

fn describe(v: &serde_json::Value) -> String {
    match v["event"].as_str() {
        Some("incoming") => "incoming call".into(),
        Some("answered") => "answered".into(),
        Some("pressed") => format!("presses {}", v["digit"].as_str().unwrap_or("?")),
        Some("ended") => "call ended".into(),
        Some("recorded") => format!("recorded {} ms of audio", v["ms"]),
        _ => v.to_string(),
    }
}

//! `callout softphone`: a small SIP callee on the same stack, for trying
//! callout without a phone (and the demo's people on call).

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

pub(crate) async fn serve(
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

/// What a softphone event looks like in the demo's output.
pub(crate) fn describe(v: &serde_json::Value) -> String {
    match v["event"].as_str() {
        Some("incoming") => "incoming call".into(),
        Some("answered") => "answered".into(),
        Some("pressed") => format!("presses {}", v["digit"].as_str().unwrap_or("?")),
        Some("ended") => "call ended".into(),
        Some("recorded") => format!("recorded {} ms of audio", v["ms"]),
        _ => v.to_string(),
    }
}

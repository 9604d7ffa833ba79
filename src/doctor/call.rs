//! `callout doctor --call URI`: a real test call through the `default`
//! trunk (its proxy and credentials when configured): answered, the
//! recorded "press a key" prompt played to the end at least once, and a
//! key read back.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Level, Verdict};
use crate::config::Config;
use crate::driver::{CallUpdate, DialRequest, Gateway};
use crate::media::session::MediaEvent;
use crate::sip::call::CallEvent;

/// How long the callee has to answer, then to press a key.
const RING: Duration = Duration::from_secs(30);
const KEY: Duration = Duration::from_secs(20);

pub async fn test_call(config: &Config, uri: &str) -> Vec<Verdict> {
    let fail = |check: &str, d: String| vec![Verdict::new(Level::Fail, check, d)];
    let prompt_file = config.prompts.join("press-a-key.wav");
    let prompt = match crate::media::audio::Prompt::load(&prompt_file) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                "call",
                format!("cannot load {}: {e}", prompt_file.display()),
            )
        }
    };
    let trunk = match crate::service::trunk::resolve("default", &config.trunks).await {
        Ok(t) => t,
        Err(e) => return fail("call", e.to_string()),
    };
    let ip = config
        .sip
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let gw = match Gateway::start(SocketAddr::new(ip, 0), &config.rtp_ports).await {
        Ok(g) => g,
        Err(e) => return fail("call", format!("cannot start a SIP socket on {ip}: {e}")),
    };
    let mut call = match gw
        .dial(DialRequest {
            uri: uri.to_string(),
            from_uri: trunk
                .prefs
                .from_uri(&format!("sip:callout@{}", gw.sip_addr())),
            from_display: Some("callout doctor".into()),
            credentials: trunk.credentials,
            ring_timeout: RING,
            outbound_proxy: trunk.proxy,
            failover: trunk.alternates.clone(),
            extra_headers: trunk.prefs.headers(),
            media: Default::default(),
            advertise: trunk.advertise,
            redirect: crate::sip::redirect::RedirectPolicy::default(),
            codecs: trunk.prefs.codecs.clone(),
            transport: trunk.transport,
            next_trunks: Vec::new(),
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return fail("call", format!("cannot dial {uri}: {e}")),
    };
    let mut out = Vec::new();
    let mut answered = false;
    let mut played = false;
    let mut key = None;
    let mut key_deadline = tokio::time::Instant::now() + RING + KEY;
    loop {
        let ev = tokio::select! {
            ev = call.next() => ev,
            _ = tokio::time::sleep_until(key_deadline) => { call.hangup(); None }
        };
        match ev {
            None => break,
            Some(CallUpdate::Sip(CallEvent::Answered(neg))) => {
                answered = true;
                out.push(Verdict::new(
                    Level::Ok,
                    "call: answer",
                    format!("{uri} answered ({:?}, audio to {})", neg.codec, neg.remote),
                ));
                call.play(prompt.clone());
                key_deadline = tokio::time::Instant::now() + KEY;
            }
            Some(CallUpdate::Sip(CallEvent::Ended(reason))) => {
                if !answered {
                    out.push(Verdict::new(
                        Level::Fail,
                        "call: answer",
                        format!("{uri}: {}", crate::cli::describe(&reason)),
                    ));
                }
                break;
            }
            Some(CallUpdate::Media(MediaEvent::PromptFinished { .. })) => {
                played = true;
                if key.is_none() {
                    call.play_silence(500);
                    call.play(prompt.clone());
                }
            }
            Some(CallUpdate::Media(MediaEvent::Digit(d))) if key.is_none() => {
                key = Some(format!("{} ({:?})", d.digit, d.source));
                call.hangup();
            }
            Some(_) => {}
        }
    }
    if answered {
        out.push(if played || key.is_some() {
            Verdict::new(
                Level::Ok,
                "call: audio out",
                format!("{} played", prompt_file.display()),
            )
        } else {
            Verdict::new(
                Level::Fail,
                "call: audio out",
                "the prompt never finished playing: check the RTP ports and the firewall",
            )
        });
        out.push(match key {
            Some(k) => Verdict::new(Level::Ok, "call: key", format!("{k} read back")),
            None => Verdict::new(
                Level::Fail,
                "call: key",
                format!("no key within {KEY:?}: check the dialplan's dtmf setting (rfc4733, inband) with the carrier"),
            ),
        });
    }
    out
}

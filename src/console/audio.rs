//! What a callee hears, playable in the browser (`<audio>`): a
//! notification's rendered message (`GET /v1/notifications/{id}/audio`,
//! bound to the caller's contracts as every read route) and a contract's
//! fixed phrases (`GET /v1/contracts/{id}/phrases/{name}`, operators
//! only, as the dialplan itself). Rendered through the same speech cache
//! the calls use, as 8 kHz 16-bit mono WAV. The gateway keeps no
//! recordings of calls, so there are none to play.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::ivr::dialplan::{Dialplan, Phrase};
use crate::media::audio::Prompt;
use crate::runner::Notification;
use crate::service::Service;

type Shared = State<Arc<Service>>;
type IdPath = axum::extract::Path<String>;
type PhrasePath = axum::extract::Path<(String, String)>;

/// The fixed phrases a contract page offers, by the names the dialplan
/// gives them (`[phrases]`, and `menu` for `[menu] prompt`).
pub const PHRASES: &[&str] = &[
    "menu",
    "invalid_key",
    "goodbye",
    "acked",
    "passed",
    "left",
    "resolved",
    "confirm",
    "enter_pin",
    "wrong_pin",
    "locked",
    "action_requested",
];

fn phrase<'a>(plan: &'a Dialplan, name: &str) -> Option<&'a Phrase> {
    let p = &plan.phrases;
    Some(match name {
        "menu" => &plan.menu.prompt,
        "invalid_key" => &p.invalid_key,
        "goodbye" => &p.goodbye,
        "acked" => &p.acked,
        "passed" => &p.passed,
        "left" => &p.left,
        "resolved" => &p.resolved,
        "confirm" => &p.confirm,
        "enter_pin" => &p.enter_pin,
        "wrong_pin" => &p.wrong_pin,
        "locked" => &p.locked,
        "action_requested" => &p.action_requested,
        _ => return None,
    })
}

/// A prompt as a WAV file (8 kHz, 16-bit, mono).
pub fn wav_bytes(p: &Prompt) -> Result<Vec<u8>, hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::with_capacity(44 + p.pcm.len() * 2));
    {
        let mut w = hound::WavWriter::new(&mut out, spec)?;
        for s in &p.pcm {
            w.write_sample(*s)?;
        }
        w.finalize()?;
    }
    Ok(out.into_inner())
}

fn wav_response(p: &Prompt) -> Result<Response, ApiError> {
    let bytes = wav_bytes(p).map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav"),
            // It says a customer's host and ticket: never kept by proxies.
            (header::CACHE_CONTROL, "private, no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}

/// Render `phrase` (a template filled with `vars`, or a recorded file)
/// off the async workers, as a call would.
async fn render(
    svc: &Arc<Service>,
    plan: Arc<Dialplan>,
    phrase: Phrase,
    vars: std::collections::BTreeMap<String, String>,
) -> Result<Arc<Prompt>, ApiError> {
    let svc = svc.clone();
    tokio::task::spawn_blocking(move || match &phrase {
        Phrase::Recorded(path) => Prompt::load(path).map_err(|e| e.to_string()),
        Phrase::Text(t) => {
            let text = crate::ivr::dialplan::render(t, &vars);
            svc.tts
                .render_voice(plan.language, plan.voice.as_deref(), &text)
                .map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot render audio for the console");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Speech unavailable",
            "the audio cannot be rendered now",
        )
    })
}

/// `GET /v1/notifications/{id}/audio`: the message its callees hear.
pub(crate) async fn notification_audio(
    State(svc): Shared,
    headers: HeaderMap,
    axum::extract::Path(id): IdPath,
) -> Result<Response, ApiError> {
    let caller = crate::api::reader(&svc, &headers)?;
    let n = svc
        .store
        .get_notification(&id)
        .await?
        .ok_or_else(|| crate::api::access_not_found("notification", &id))?;
    caller.check(&n.contract, "notification", &id)?;
    let plan = svc.registry.get(&n.contract).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "Contract not loaded",
            format!("contract {} is no longer loaded", n.contract),
        )
    })?;
    let notification = Notification {
        contract: n.contract.clone(),
        ticket: n.ticket.clone(),
        severity: n.severity.clone(),
        host: n.host.clone(),
        summary: n.summary.clone(),
        variables: serde_json::from_value(n.variables.clone()).unwrap_or_default(),
    };
    let vars = crate::runner::template_values(&plan, &notification);
    let message = plan.message.clone();
    let p = render(&svc, plan, message, vars).await?;
    wav_response(&p)
}

/// `GET /v1/contracts/{id}/phrases/{name}`: one fixed phrase.
pub(crate) async fn contract_phrase(
    State(svc): Shared,
    headers: HeaderMap,
    axum::extract::Path((id, name)): PhrasePath,
) -> Result<Response, ApiError> {
    let caller = crate::api::operator(&svc, &headers)?;
    caller.check(&id, "contract", &id)?;
    let plan = svc
        .registry
        .get(&id)
        .ok_or_else(|| crate::api::access_not_found("contract", &id))?;
    let ph = phrase(&plan, &name)
        .cloned()
        .ok_or_else(|| crate::api::access_not_found("phrase", &name))?;
    if let Phrase::Text(t) = &ph {
        if !crate::ivr::dialplan::template_variables(t).is_empty() {
            return Err(ApiError::invalid(
                "name",
                format!("phrase {name} depends on a notification's values"),
            ));
        }
    }
    let p = render(&svc, plan, ph, Default::default()).await?;
    wav_response(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_becomes_a_wav_that_reads_back_the_same() {
        let pcm: Vec<i16> = (0..800).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        let p = Prompt::from_pcm("t", pcm.clone());
        let bytes = wav_bytes(&p).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        let r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(r.spec().sample_rate, 8000);
        assert_eq!(r.spec().channels, 1);
        let back: Vec<i16> = r.into_samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(back, pcm);
    }
}

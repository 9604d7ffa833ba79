//! What the `callout` subcommands do, kept out of `main.rs` so tests and
//! other front ends can call them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::driver::{CallUpdate, DialRequest, Gateway};
use crate::media::audio::{read_wav_mono, resample, to_i16, Prompt, RATE};
use crate::media::inband::detect_all;
use crate::media::session::MediaEvent;
use crate::sip::auth::Credentials;
use crate::sip::call::{CallEvent, EndReason};

/// `callout dtmf detect FILE`: one "DIGIT START_MS" line per digit.
pub fn dtmf_detect(file: &Path) -> anyhow::Result<ExitCode> {
    let (samples, rate) = read_wav_mono(file)?;
    let pcm = to_i16(&resample(&samples, rate, RATE));
    for d in detect_all(&pcm) {
        println!("{} {}", d.digit, d.start_ms);
    }
    Ok(ExitCode::SUCCESS)
}

/// `callout dialplan check PATH`: exit 0 when every file is valid.
pub fn dialplan_check(
    path: &Path,
    prompts: &Path,
    with_tts: bool,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (voices, trunks, tickets) = match config {
        Some(c) => {
            let c = crate::config::Config::load(c)?;
            (c.voices, Some(c.trunks), Some(c.tickets))
        }
        None => Default::default(),
    };
    use crate::ivr::dialplan;
    let result = if path.is_dir() {
        dialplan::load_dir(path, prompts)
    } else {
        dialplan::load_file(path, prompts).map(|p| vec![p])
    };
    let result = result.and_then(|plans| check_trunks(plans, trunks.as_ref()));
    let result = result.and_then(|plans| check_tickets(plans, tickets.as_ref()));
    let result = result.and_then(|plans| {
        if !with_tts {
            return Ok(plans);
        }
        // Rendering the fixed phrases proves the voice works and fills the
        // cache, so the first call does not wait for synthesis.
        let tts = crate::tts::Tts::new(&crate::tts::TtsConfig {
            voices,
            ..crate::tts::TtsConfig::default()
        })
        .map_err(|e| {
            vec![crate::ivr::dialplan::DialplanError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot open the speech cache: {e}"),
            }]
        })?;
        let errors: Vec<_> = plans
            .iter()
            .filter_map(|p| {
                tts.prewarm(p)
                    .err()
                    .map(|e| crate::ivr::dialplan::DialplanError {
                        file: p.source.clone(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "voice {:?} (language {:?}) is unavailable: {e}",
                            p.voice.as_deref().unwrap_or("default"),
                            p.language
                        ),
                    })
            })
            .collect();
        if errors.is_empty() {
            Ok(plans)
        } else {
            Err(errors)
        }
    });
    match result {
        Ok(plans) => {
            for p in plans {
                println!(
                    "{}: ok: contract {} ({} contacts, {} rounds, {} keys)",
                    p.source.display(),
                    p.contract,
                    p.contacts.len(),
                    p.escalation.rounds,
                    p.menu.keys.len()
                );
                if let Some(c) = &p.pipeline {
                    println!(
                        "    pipeline: wait {} s, {} rule(s), {} heartbeat(s), mail to [{}]{}",
                        c.wait_ms / 1000,
                        c.rules.len(),
                        c.heartbeats.len(),
                        c.mail.to.join(", "),
                        c.monitoring_contract
                            .as_ref()
                            .map(|m| format!(", monitoring path to {m}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("callout: {} problem(s) found", errors.len());
            Ok(ExitCode::from(1))
        }
    }
}

/// Each plan's trunk must be usable as `callout serve` would use it: the
/// proxy resolves and the credential variables are set. Without a
/// configuration, a trunk other than `default` cannot be checked and is
/// reported, since serve would refuse it.
fn check_trunks(
    plans: Vec<crate::ivr::dialplan::Dialplan>,
    trunks: Option<&std::collections::BTreeMap<String, crate::config::TrunkConfig>>,
) -> Result<Vec<crate::ivr::dialplan::Dialplan>, Vec<crate::ivr::dialplan::DialplanError>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let errors: Vec<_> = plans
        .iter()
        .filter_map(|p| {
            let message = match (&rt, trunks) {
                (_, None) if p.trunk != "default" => format!(
                    "trunk {:?} cannot be checked without --config (the service's configuration)",
                    p.trunk
                ),
                (_, None) => return None,
                (Err(e), _) => format!("cannot check trunk {:?}: {e}", p.trunk),
                (Ok(rt), Some(t)) => {
                    let e = rt
                        .block_on(crate::service::trunk::resolve(&p.trunk, t))
                        .err()?;
                    format!("{e}: the contract would not dial")
                }
            };
            Some(crate::ivr::dialplan::DialplanError {
                file: p.source.clone(),
                line: 1,
                column: 1,
                message,
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}

/// Each contract's Redmine settings, looked up on its server as `callout
/// serve` would at start (the project, tracker, statuses, priorities and
/// custom fields must exist there and the key must be accepted).
fn check_tickets(
    plans: Vec<crate::ivr::dialplan::Dialplan>,
    tickets: Option<&crate::tickets::config::TicketsSettings>,
) -> Result<Vec<crate::ivr::dialplan::Dialplan>, Vec<crate::ivr::dialplan::DialplanError>> {
    use crate::tickets::config::TicketConfig;
    let uses: Vec<&crate::ivr::dialplan::Dialplan> = plans
        .iter()
        .filter(|p| {
            matches!(
                crate::tickets::sync::ticket_config(p),
                TicketConfig::Redmine(_)
            )
        })
        .collect();
    if uses.is_empty() {
        return Ok(plans);
    }
    let err =
        |p: &crate::ivr::dialplan::Dialplan, message: String| crate::ivr::dialplan::DialplanError {
            file: p.source.clone(),
            line: 1,
            column: 1,
            message,
        };
    let Some(tickets) = tickets else {
        return Err(uses
            .iter()
            .map(|p| err(p, "pipeline.ticket: a Redmine contract cannot be checked without --config (the service's configuration)".into()))
            .collect());
    };
    let servers = match crate::tickets::sync::servers(tickets) {
        Ok(s) => s,
        Err(e) => return Err(vec![err(uses[0], e.to_string())]),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Err(vec![err(uses[0], format!("cannot check Redmine: {e}"))]),
    };
    let found = rt.block_on(crate::tickets::sync::check_contracts(&uses, &servers));
    if found.is_empty() {
        return Ok(plans);
    }
    Err(found
        .into_iter()
        .filter_map(|(contract, e)| {
            let p = uses.iter().find(|p| p.contract == contract)?;
            Some(err(p, format!("pipeline.ticket: {e}")))
        })
        .collect())
}

/// `callout say`: render one phrase to a WAV file.
pub fn say(voice: &str, text: &str, out: &Path, vars: &[String]) -> anyhow::Result<ExitCode> {
    use crate::ivr::dialplan::Language;
    let lang = match voice {
        "ja" => Language::Ja,
        "en" => Language::En,
        other => anyhow::bail!("unknown voice {other:?}: use ja or en"),
    };
    let mut values = std::collections::BTreeMap::new();
    for v in vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?} must be NAME=VALUE"))?;
        values.insert(
            k.to_string(),
            crate::tts::readers::read_variable(k, val, lang),
        );
    }
    let spoken = crate::ivr::dialplan::render(text, &values);
    if lang == Language::Ja {
        // Say where the voice was looked for, not only that synthesis failed.
        crate::paths::jtalk_voice(None)?;
    }
    let mut cfg = crate::tts::TtsConfig::default();
    // Started where it cannot write (`/`, a system folder): a cache in the
    // temporary folder rather than a failure.
    if std::env::var_os("CALLOUT_TTS_CACHE").is_none()
        && std::fs::create_dir_all(&cfg.cache_dir).is_err()
    {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        cfg.cache_dir = std::env::temp_dir().join(format!("callout-tts-cache-{uid}"));
    }
    let tts = crate::tts::Tts::new(&cfg)?;
    let started = Instant::now();
    let p = crate::tts::say_to_file(&tts, lang, &spoken, out)?;
    eprintln!(
        "callout: {} ms of 8 kHz audio in {} ms -> {} (text: {spoken})",
        p.duration_ms(),
        started.elapsed().as_millis(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Options of `callout escalate`.
#[derive(Debug, Clone)]
pub struct EscalateOptions {
    pub dialplan: PathBuf,
    pub ticket: String,
    pub host: String,
    pub summary: String,
    pub severity: String,
    pub vars: Vec<String>,
    pub prompts: PathBuf,
    pub bind: String,
    pub rtp_ports: String,
}

/// `callout escalate`: exit 0 when someone acknowledged (or asked for an
/// action), 1 when the escalation was exhausted or cancelled.
pub async fn escalate(o: EscalateOptions) -> anyhow::Result<ExitCode> {
    use crate::ivr::escalation::Final;
    let plan = match crate::ivr::dialplan::load_file(&o.dialplan, &o.prompts) {
        Ok(p) => std::sync::Arc::new(p),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!("{} problem(s) in the dialplan", errors.len());
        }
    };
    let mut variables = std::collections::BTreeMap::new();
    for v in &o.vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?} must be NAME=VALUE"))?;
        variables.insert(k.to_string(), val.to_string());
    }
    let n = crate::runner::Notification {
        contract: plan.contract.clone(),
        ticket: o.ticket,
        severity: o.severity,
        host: o.host,
        summary: o.summary,
        variables,
    };
    let emit = |v: serde_json::Value| println!("{v}");
    let tts = crate::tts::Tts::new(&crate::tts::TtsConfig::default())?;
    let started = Instant::now();
    // The message is synthesised sentence by sentence while the call
    // rings (reported as `message.sentence` and `message.ready`).
    let tts = std::sync::Arc::new(tts);
    let message = match crate::runner::Script::message_job(&plan, &n, &o.prompts) {
        Some((m, synth)) => {
            let tts = tts.clone();
            tokio::task::spawn_blocking(move || synth.run(&tts));
            let heard = m.clone();
            let started_us = crate::speech::now_us();
            tokio::spawn(async move {
                crate::speech::report(heard, &crate::runner::PrintObserver, started_us).await
            });
            Some(m)
        }
        None => None,
    };
    // The fixed phrases render behind the message while the call rings
    // (`audio.ready` when they are all there, never after the end).
    let script =
        crate::runner::Script::start(&plan, &n, tts, &o.prompts, message, Default::default())
            .await?;
    script.phrases_end.set_ready_task(crate::runner::Script::audio_ready(
        script.phrases.clone(),
        script.phrases_end.token(),
        move |p| async move {
            emit(
                json!({"event": "audio.ready", "ms": started.elapsed().as_millis() as u64, "fallbacks": p.fallbacks}),
            );
        },
    ));
    let bind = o
        .bind
        .parse()
        .with_context(|| format!("--bind {:?} is not an address:port", o.bind))?;
    let gw = Gateway::start(bind, &o.rtp_ports).await?;
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(None);
    let fin = crate::runner::escalate(
        &gw,
        plan,
        std::sync::Arc::new(script),
        cancel_rx,
        &crate::runner::PrintObserver,
        None,
    )
    .await;
    Ok(match fin {
        Some(Final::Acked { .. } | Final::Action { .. }) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// Options of `callout call`.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub uri: String,
    pub prompt: PathBuf,
    pub collect: usize,
    pub timeout: Duration,
    pub bind: String,
    pub rtp_ports: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub media: crate::media::session::MediaPolicy,
    /// `--sip-advertise` / `--rtp-advertise`.
    pub advertise: crate::sip::advertise::Advertise,
    /// `--realm`: the only realm a challenge is answered for.
    pub realm: Option<String>,
    /// `--tls-ca-file` / `--tls-server-name`, for TLS URIs.
    pub tls: crate::sip::transport::TlsSettings,
    /// `--srtp`: unset, optional on TLS and off otherwise.
    pub srtp: Option<crate::media::srtp::SrtpMode>,
}

/// `callout call`: ring, play the prompt until input or timeout, print
/// JSON lines, exit 0 when the digits were collected.
pub async fn call(o: CallOptions) -> anyhow::Result<ExitCode> {
    let prompt = Prompt::load(&o.prompt)?;
    let bind = o
        .bind
        .parse()
        .with_context(|| format!("--bind {:?} is not an address:port", o.bind))?;
    let mut gw = Gateway::start(bind, &o.rtp_ports).await?;
    gw.set_advertise(o.advertise);
    let credentials = match (o.user, o.password) {
        (Some(username), Some(password)) => Some(Credentials {
            username,
            password,
            realm: o.realm.clone(),
        }),
        (Some(_), None) => anyhow::bail!("--user given but CALLOUT_SIP_PASSWORD is not set"),
        _ => None,
    };
    let started = Instant::now();
    let ms = |t: Instant| t.duration_since(started).as_millis() as u64;
    let mut call = gw
        .dial(DialRequest {
            uri: o.uri.clone(),
            from_uri: o.from.clone(),
            from_display: None,
            credentials,
            ring_timeout: o.timeout,
            outbound_proxy: None,
            failover: Vec::new(),
            extra_headers: Vec::new(),
            media: o.media,
            advertise: Default::default(),
            redirect: crate::sip::redirect::RedirectPolicy::default(),
            codecs: Vec::new(),
            transport: crate::sip::transport::TrunkTransport {
                transport: None,
                tls: Some(o.tls),
                srtp: o.srtp,
            },
            next_trunks: Vec::new(),
        })
        .await?;
    let emit = |v: serde_json::Value| println!("{v}");
    let mut digits = String::new();
    let mut input_deadline: Option<tokio::time::Instant> = None;
    let mut outcome: Option<EndReason> = None;
    let mut answered = false;
    loop {
        let wait = async {
            match input_deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            ev = call.next() => ev,
            _ = wait => {
                emit(json!({"event": "input_timeout", "at_ms": ms(Instant::now())}));
                input_deadline = None;
                call.hangup();
                continue;
            }
        };
        let Some(ev) = ev else { break };
        match ev {
            CallUpdate::Sip(CallEvent::Progress { code }) => {
                emit(json!({"event": "progress", "code": code, "at_ms": ms(Instant::now())}))
            }
            CallUpdate::Sip(CallEvent::Ringing) => {
                emit(json!({"event": "ringing", "at_ms": ms(Instant::now())}))
            }
            CallUpdate::Sip(CallEvent::EarlyMedia(_)) => {
                emit(json!({"event": "early_media", "at_ms": ms(Instant::now())}))
            }
            CallUpdate::Sip(CallEvent::Answered(neg)) => {
                answered = true;
                emit(
                    json!({"event": "answered", "codec": neg.codec, "remote_rtp": neg.remote.to_string(),
                    "telephone_event": neg.dtmf_pt, "at_ms": ms(Instant::now())}),
                );
                call.play(prompt.clone());
                input_deadline = Some(tokio::time::Instant::now() + o.timeout);
            }
            CallUpdate::Sip(CallEvent::MediaUpdated(neg)) => emit(
                json!({"event": "media_updated", "codec": neg.codec, "remote_rtp": neg.remote.to_string(),
                "direction": neg.direction, "at_ms": ms(Instant::now())}),
            ),
            CallUpdate::Sip(
                CallEvent::InfoDigit { .. } | CallEvent::Offered(_) | CallEvent::Refused(_),
            ) => {}
            CallUpdate::Sip(CallEvent::Ended(reason)) => {
                emit(json!({"event": "ended", "reason": reason, "at_ms": ms(Instant::now())}));
                outcome = Some(reason);
            }
            CallUpdate::Media(MediaEvent::Digit(d)) => {
                if digits.len() < o.collect {
                    digits.push(d.digit);
                    emit(
                        json!({"event": "digit", "digit": d.digit.to_string(), "source": d.source,
                        "at_ms": ms(Instant::now()), "call_ms": d.at_ms}),
                    );
                    if digits.len() == o.collect {
                        input_deadline = None;
                        call.hangup();
                    }
                }
            }
            CallUpdate::Media(MediaEvent::PromptFinished { .. }) => {
                // Repeat the prompt until input or timeout.
                if answered && digits.len() < o.collect && input_deadline.is_some() {
                    call.play_silence(500);
                    call.play(prompt.clone());
                }
            }
            CallUpdate::Media(_) => {}
            CallUpdate::FailedOver { code, to, trunk } => emit(
                json!({"event": "failover", "code": code, "proxy": to.map(|a| a.to_string()),
                "trunk": trunk, "at_ms": ms(Instant::now())}),
            ),
            CallUpdate::Redirected { code, target } => emit(
                json!({"event": "redirected", "code": code, "target": target, "at_ms": ms(Instant::now())}),
            ),
        }
    }
    let ok = digits.len() == o.collect && answered;
    let media = tokio::time::timeout(Duration::from_secs(1), call.media_summary())
        .await
        .ok()
        .flatten();
    emit(
        json!({"event": "result", "digits": digits, "answered": answered,
        "outcome": outcome, "media": media, "success": ok}),
    );
    if ok {
        return Ok(ExitCode::SUCCESS);
    }
    let why = match (&outcome, answered) {
        (_, true) => format!(
            "collected {} of {} digits before the timeout",
            digits.len(),
            o.collect
        ),
        (Some(r), false) => format!("call not answered: {}", describe(r)),
        (None, false) => "call not answered".to_string(),
    };
    eprintln!("callout: {why}");
    Ok(ExitCode::from(1))
}

/// A human sentence for an outcome.
pub fn describe(r: &EndReason) -> String {
    match r {
        EndReason::Busy { code } => format!("busy ({code})"),
        EndReason::Declined { code } => format!("declined ({code})"),
        EndReason::NoAnswer { code: Some(c) } => format!("no answer ({c})"),
        EndReason::NoAnswer { code: None } => "no answer (rang until the timeout)".into(),
        EndReason::Unreachable { code: Some(c) } => format!("unreachable ({c})"),
        EndReason::Unreachable { code: None } => "unreachable (no response)".into(),
        EndReason::Rejected { code, reason } => format!("rejected ({code} {reason})"),
        EndReason::Cancelled => "cancelled".into(),
        EndReason::MediaMismatch => "no common codec".into(),
        EndReason::LocalHangup => "hung up by callout".into(),
        EndReason::RemoteHangup => "hung up by the callee".into(),
        EndReason::SessionExpired => "session timer expired (no refresh)".into(),
        EndReason::Redirected { code, targets } => {
            format!("redirected ({code}) to {}", targets.join(", "))
        }
        EndReason::RedirectRefused { code, target, .. } => {
            format!("redirect ({code}) to {target} refused")
        }
    }
}

/// What `callout action run` is asked.
pub struct ActionRunOpts {
    pub flow: String,
    pub contract: String,
    pub action: Option<String>,
    pub params: Vec<String>,
    pub dry_run: bool,
    pub ticket: Option<String>,
    pub config: Option<PathBuf>,
    pub database: Option<String>,
    pub dialplans: Option<PathBuf>,
    pub prompts: Option<PathBuf>,
}

/// `callout action run FLOW --contract C --param k=v [--dry-run]`: resolve
/// the contract's action for FLOW from the dialplan folder and print what
/// would run, or run it here and print each event as a JSON line. A run
/// takes its slot in the service's database (so it cannot overlap a run
/// of the service or of another operator), is recorded there, and its
/// events wait in the webhook outbox for the service to deliver. Exit 0
/// when fixed (or nothing to fix), 1 when the run failed, 2 when the
/// request is invalid or the flow is already running.
pub async fn action_run(o: ActionRunOpts) -> anyhow::Result<ExitCode> {
    use crate::action::{action_for_flow, plan::resolve, Actions, Requester, RunMeta};
    let config = match &o.config {
        Some(c) => crate::config::Config::load(c)?,
        None => crate::config::Config::default(),
    };
    let dialplans = o.dialplans.unwrap_or(config.dialplans.clone());
    let prompts = o.prompts.unwrap_or(config.prompts.clone());
    let mut given = std::collections::BTreeMap::new();
    for p in &o.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: write NAME=VALUE"))?;
        given.insert(k.to_string(), v.to_string());
    }
    let plans = crate::ivr::dialplan::load_dir(&dialplans, &prompts).map_err(|errs| {
        anyhow::anyhow!(
            "the dialplans do not load:\n{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let plan = plans
        .iter()
        .find(|p| p.contract == o.contract)
        .with_context(|| format!("no contract {:?} in {}", o.contract, dialplans.display()))?;
    let action = action_for_flow(plan, &o.flow, o.action.as_deref())?;
    let rp = resolve(
        &plan.contract,
        &plan.inventory,
        action,
        &Default::default(),
        &given,
    )?;
    if o.dry_run {
        print!("{}", rp.describe());
        return Ok(ExitCode::SUCCESS);
    }
    let url = o.database.unwrap_or(config.database_url.clone());
    let store = crate::store::Store::connect(&url).await.with_context(|| {
        format!(
            "cannot open the database {} where runs are recorded",
            crate::config::RedactedUrl(&url)
        )
    })?;
    let actions = std::sync::Arc::new(Actions::with_store(store.clone()));
    let meta = RunMeta {
        run_id: crate::store::new_id("run"),
        requested_by: Requester::Cli {
            user: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        },
        notification: None,
        ticket: o.ticket.clone(),
        epoch: None,
    };
    let _lock = actions.claim(&rp, &meta).await?;
    let obs = OutboxObserver {
        store,
        stream: meta.run_id.clone(),
    };
    let rec = actions.execute(&rp, &meta, &obs, None).await;
    Ok(if rec.result.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints each event and queues it for the service's webhook sender.
struct OutboxObserver {
    store: crate::store::Store,
    stream: String,
}

impl crate::runner::Observer for OutboxObserver {
    fn event(&self, v: serde_json::Value) -> crate::runner::Fut<'_> {
        Box::pin(async move {
            println!("{v}");
            let event = v["event"].as_str().unwrap_or("").to_string();
            let now = crate::runner::now_ms();
            if let Err(e) = self.store.enqueue(&self.stream, &event, &v, now).await {
                tracing::error!(error = %e, "cannot queue webhook {event}");
            }
        })
    }

    fn checkpoint(&self, _esc: &crate::ivr::escalation::Escalation) -> crate::runner::Fut<'_> {
        Box::pin(async {})
    }
}

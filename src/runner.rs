//! Runs one notification's escalation over real calls: the thin async
//! glue between the sans-IO engines (escalation, menu), the speech
//! renderer and the gateway. Every step is reported to an [`Observer`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::action::engine::RunResult;
use crate::action::flow::Phase;
use crate::action::{Requester, RunLock, RunMeta, RunRecord};
use crate::driver::{CallUpdate, DialRequest, Gateway};
use crate::ivr::dialplan::{ActionSay, Dialplan};
use crate::ivr::escalation::{Escalation, EscalationOutput, Final, OperatorAck};
use crate::ivr::menu::{Menu, MenuOutput, PinCheck, Say};
use crate::ivr::outcome::ActionEnd;
use crate::ivr::outcome::Outcome;
use crate::media::session::MediaEvent;
use crate::sip::call::CallEvent;

/// What the alert pipeline sends.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub contract: String,
    pub ticket: String,
    pub severity: String,
    pub host: String,
    pub summary: String,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// Why a running escalation is told to stop (over its `watch` channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Cancelled, with the reason (alert recovered, operator).
    Cancel(String),
    /// An operator acknowledged for someone on the phone: it ends as an
    /// acknowledgement, not a cancel.
    Ack(OperatorAck),
}

impl Stop {
    /// Give the stop to the engine.
    pub fn apply(&self, esc: &mut Escalation, now_ms: i64) {
        match self {
            Stop::Cancel(reason) => esc.cancel(now_ms, reason),
            Stop::Ack(ack) => {
                esc.acknowledge(now_ms, ack.clone());
            }
        }
    }
}

/// Wall-clock time in Unix epoch ms (the engines' clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a template's `{name}` placeholders say, through the readers. The
/// built-in fields come last so a variable of the same name can never
/// change what the callee hears about host, ticket or contract.
pub fn template_values(plan: &Dialplan, n: &Notification) -> BTreeMap<String, String> {
    let lang = plan.language;
    n.variables
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain([
            ("host", &n.host),
            ("summary", &n.summary),
            ("severity", &n.severity),
            ("ticket", &n.ticket),
            ("contract", &n.contract),
            ("contract_name", &plan.name),
        ])
        .map(|(k, v)| {
            (
                k.to_string(),
                crate::tts::readers::read_variable(k, v, lang),
            )
        })
        .collect()
}

pub use crate::script::Script;

/// A boxed future, for the observer's async methods.
pub type Fut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Where the runner reports: every event, and a checkpoint of the
/// escalation state after every change (awaited before the next dial, so
/// a crash never makes callout ring someone more often than the policy).
pub trait Observer: Send + Sync {
    fn event(&self, v: Value) -> Fut<'_>;
    fn checkpoint(&self, esc: &Escalation) -> Fut<'_>;
}

/// Prints events as JSON lines (the CLI).
pub struct PrintObserver;

impl Observer for PrintObserver {
    fn event(&self, v: Value) -> Fut<'_> {
        println!("{v}");
        Box::pin(async {})
    }

    fn checkpoint(&self, _esc: &Escalation) -> Fut<'_> {
        Box::pin(async {})
    }
}

/// Stopped here (shutdown, or the lease went to another node): the fixed
/// phrases stop first, so `audio.ready` is recorded before
/// `notification.suspended` or not at all.
async fn suspend(obs: &dyn Observer, script: &Script, started: i64) {
    script.phrases_end.end().await;
    obs.event(json!({"event": "notification.suspended", "at_ms": now_ms() - started}))
        .await;
}

/// Run the escalation to its end. `cancel` flips to `Some(reason)` to
/// stop. `resume` continues a stored escalation: a call that was up when
/// the process stopped is recorded `interrupted` and the policy goes on.
pub async fn escalate(
    gw: &Gateway,
    plan: Arc<Dialplan>,
    script: Arc<Script>,
    mut cancel: watch::Receiver<Option<Stop>>,
    obs: &dyn Observer,
    resume: Option<Escalation>,
) -> Option<Final> {
    let started = now_ms();
    let mut esc = match resume {
        Some(mut esc) => {
            obs.event(json!({"event": "notification.resumed", "at_ms": 0}))
                .await;
            if let Some(attempt) = esc.active_attempt() {
                // Who was being called: the store adds the attempt from
                // this when its `call.dialing` never landed (a node cut
                // off from the database right after it dialled).
                let (contact, round) = esc
                    .attempts()
                    .iter()
                    .find(|a| a.attempt == attempt)
                    .map(|a| {
                        let name = plan.contacts.get(a.contact).map(|c| c.name.clone());
                        (name, a.round)
                    })
                    .unwrap_or((None, 0));
                obs.event(json!({"event": "call.ended", "attempt": attempt, "outcome": Outcome::Interrupted,
                    "contact": contact, "round": round, "at_ms": 0}))
                    .await;
                esc.call_ended(attempt, Outcome::Interrupted, now_ms());
            }
            esc.start(now_ms());
            esc
        }
        None => {
            obs.event(
                json!({"event": "notification.started", "contract": plan.contract, "at_ms": 0}),
            )
            .await;
            let mut esc = Escalation::new(&plan);
            esc.start(now_ms());
            esc
        }
    };
    if let Some(stop) = cancel.borrow().clone() {
        stop.apply(&mut esc, now_ms());
    }
    obs.checkpoint(&esc).await;
    loop {
        if script.shutdown.is_cancelled() {
            suspend(obs, &script, started).await;
            return None;
        }
        while let Some(out) = esc.poll_output() {
            match out {
                EscalationOutput::Dial {
                    attempt,
                    contact,
                    round,
                } => {
                    let c = &plan.contacts[contact];
                    if script.shutdown.is_cancelled() {
                        // Stopped (shutdown, or the lease went to another
                        // node) between the checkpoint and this dial.
                        suspend(obs, &script, started).await;
                        return None;
                    }
                    // A limited trunk: wait for one of its channels (a
                    // cancel meanwhile dials nothing: run_call sees it).
                    // The hold moves with the call when it fails over to
                    // another trunk (counted where it is actually sent).
                    let held = match &script.channel {
                        None => None,
                        Some((ch, ask)) if !ch.gated(&ask.trunk) => {
                            Some(Arc::new(crate::channels::Held::new(ch.clone(), ask, None)))
                        }
                        Some((ch, ask)) => match ch
                            .acquire(ask, &mut cancel, &script.shutdown, obs, attempt, started)
                            .await
                        {
                            crate::channels::Wait::Granted(c) => Some(Arc::new(
                                crate::channels::Held::new(ch.clone(), ask, Some(c)),
                            )),
                            crate::channels::Wait::Cancelled => None,
                            crate::channels::Wait::Stopped => {
                                suspend(obs, &script, started).await;
                                return None;
                            }
                        },
                    };
                    obs.event(
                        json!({"event": "call.dialing", "attempt": attempt, "contact": c.name,
                        "round": round, "at_ms": now_ms() - started}),
                    )
                    .await;
                    let mut media = None;
                    let mut report = TrunkReport::default();
                    let outcome = tracing::Instrument::instrument(
                        run_call(
                            gw,
                            &plan,
                            &script,
                            attempt,
                            contact,
                            &mut cancel,
                            started,
                            obs,
                            &mut media,
                            &mut report,
                            held.clone(),
                        ),
                        tracing::info_span!("call", attempt),
                    )
                    .await;
                    if let (Some((ch, _)), Some(h)) = (&script.channel, &held) {
                        // The trunk the call ended on, after any failover.
                        let trunk = h.trunk();
                        if let Some(r) = &report.refusal {
                            if let Some(until) =
                                ch.refused(&trunk, r.code, r.retry_after_s, &r.reason).await
                            {
                                tracing::warn!(trunk = %trunk, code = r.code, "the trunk is full; new calls back off");
                                obs.event(json!({"event": "trunk.backoff", "trunk": trunk, "attempt": attempt,
                                    "code": r.code, "retry_after_s": r.retry_after_s, "until_ms": until,
                                    "at_ms": now_ms() - started}))
                                    .await;
                            }
                        } else if report.got_through {
                            ch.got_through(&trunk).await;
                        }
                    }
                    // The channel is free once the call is over (and
                    // before the next call of this escalation asks).
                    if let Some(h) = held {
                        h.release();
                    }
                    // A cancel that arrived during the call carries its reason.
                    let stop = cancel.borrow().clone();
                    if let Some(stop) = stop {
                        stop.apply(&mut esc, now_ms());
                    }
                    obs.event(
                        json!({"event": "call.ended", "attempt": attempt, "contact": c.name,
                        "outcome": outcome, "media": media, "at_ms": now_ms() - started}),
                    )
                    .await;
                    if outcome == Outcome::Interrupted && script.shutdown.is_cancelled() {
                        // The stored state still says this attempt is up;
                        // the next start records it interrupted and goes on.
                        suspend(obs, &script, started).await;
                        return None;
                    }
                    esc.call_ended(attempt, outcome, now_ms());
                    obs.checkpoint(&esc).await;
                }
                EscalationOutput::Skipped {
                    contact,
                    round,
                    reason,
                } => {
                    obs.event(
                        json!({"event": "contact.skipped", "contact": plan.contacts[contact].name,
                        "round": round, "reason": reason, "at_ms": now_ms() - started}),
                    )
                    .await;
                }
                EscalationOutput::Cancel { .. } => {}
                EscalationOutput::Finished(f) => {
                    let name = match &f {
                        Final::Acked { .. } => "notification.acked",
                        Final::Action { .. } => "notification.action_taken",
                        Final::Exhausted { .. } => "notification.exhausted",
                        Final::Cancelled { .. } => "notification.cancelled",
                    };
                    obs.checkpoint(&esc).await;
                    // The fixed phrases stop with it, and `audio.ready`
                    // is recorded by now or never: never after this.
                    script.phrases_end.end().await;
                    let mut ev = json!({"event": name, "final": f, "attempts": esc.attempts(), "at_ms": now_ms() - started});
                    // The same event as a key press, saying how it came.
                    if let Final::Acked {
                        console: Some(a), ..
                    } = &f
                    {
                        ev["via"] = json!("console");
                        ev["by"] = json!(a.by);
                        ev["operator"] = json!(a.operator);
                        ev["reason"] = json!(a.reason);
                    }
                    obs.event(ev).await;
                    return Some(f);
                }
            }
        }
        let Some(wake) = esc.poll_timeout() else {
            // Nothing to wait for and not finished: cannot happen, but do
            // not spin if it ever does.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let wait = Duration::from_millis((wake - now_ms()).max(0) as u64);
        tokio::select! {
            _ = script.shutdown.cancelled() => continue,
            _ = tokio::time::sleep(wait) => esc.handle_timeout(now_ms()),
            r = cancel.changed() => {
                let stop = if r.is_ok() { cancel.borrow().clone() } else { None };
                stop.unwrap_or_else(|| Stop::Cancel("cancelled".into())).apply(&mut esc, now_ms());
            }
        }
        obs.checkpoint(&esc).await;
    }
}

/// Who asked for the message the player is saying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageFor {
    /// Early media, before the 200 (`[call] early_message`).
    Early,
    /// The menu, with its prompt id (the menu's next prompts wait).
    Menu(u64),
    /// An answering machine: hang up once it is left.
    Machine,
}

/// Silence between the last phrase and the BYE.
const HANGUP_TAIL: Duration = Duration::from_millis(400);

/// An action running inside a call, with its (contract, host, flow) slot.
struct ActionRun<'a> {
    fut: std::pin::Pin<Box<dyn std::future::Future<Output = RunRecord> + Send + 'a>>,
    _lock: RunLock,
}

/// Resolve the action for this alert, take its slot and start it.
async fn start_action<'a>(
    plan: &'a Dialplan,
    script: &'a Script,
    action: &str,
    meta: RunMeta,
    obs: &'a dyn Observer,
    progress: tokio::sync::mpsc::UnboundedSender<Phase>,
) -> Result<ActionRun<'a>, crate::action::ActionError> {
    let a = plan
        .actions
        .get(action)
        .ok_or_else(|| crate::action::ActionError::UnknownAction {
            contract: plan.contract.clone(),
            action: action.to_string(),
        })?;
    let rp = crate::action::plan::resolve(
        &plan.contract,
        &plan.inventory,
        a,
        &script.alert,
        &BTreeMap::new(),
    )?;
    let lock = script.actions.claim(&rp, &meta).await?;
    let actions = script.actions.clone();
    Ok(ActionRun {
        fut: Box::pin(async move { actions.execute(&rp, &meta, obs, Some(&progress)).await }),
        _lock: lock,
    })
}

/// The contract's PIN state for the menu of the next call. A store that
/// cannot be read keeps actions locked: no PIN can be guessed while
/// failures cannot be counted.
async fn pin_check(plan: &Dialplan, script: &Script) -> Option<PinCheck> {
    let p = plan.pin.as_ref()?;
    let now = now_ms();
    let (locked, failures) = match script.pins.state(&plan.contract).await {
        Ok(l) => (l.is_locked(now), l.failures_at(now, p.lockout)),
        Err(e) => {
            tracing::error!(contract = %plan.contract, error = %e, "cannot read the PIN lock; actions stay locked for this call");
            (true, 0)
        }
    };
    Some(PinCheck {
        code: p.code.clone(),
        max_attempts: p.max_attempts,
        failures,
        locked,
    })
}

/// Count a wrong PIN for the contract and report it (`pin.failed`, and
/// `pin.locked` when this one locked it). Returns whether actions are now
/// locked: the store's word, which counts other calls' failures too; the
/// menu's own count (`menu_locked`) if the store cannot be written, and
/// then locked, since failures that cannot be counted must not go on.
async fn pin_failed(
    plan: &Dialplan,
    script: &Script,
    attempt: u32,
    contact: &str,
    menu_locked: bool,
    started: i64,
    obs: &dyn Observer,
) -> bool {
    let Some(p) = &plan.pin else {
        return menu_locked;
    };
    let now = now_ms();
    let f = crate::store::PinFailure {
        contract: &plan.contract,
        contact,
        notification_id: script.notification_id.as_deref(),
        attempt: Some(i64::from(attempt)),
        at_ms: now,
    };
    let (locked, newly, lock) = match script.pins.failed(f, p.max_attempts, p.lockout).await {
        Ok((lock, r)) => (r.locked, r.newly_locked, Some(lock)),
        Err(e) => {
            tracing::error!(contract = %plan.contract, error = %e, "cannot record a wrong PIN; actions locked for this call");
            (true, menu_locked, None)
        }
    };
    let failures = lock.map(|l| l.failures);
    obs.event(
        json!({"event": "pin.failed", "attempt": attempt, "contact": contact, "locked": locked,
        "failures": failures, "at_ms": now - started}),
    )
    .await;
    if newly {
        obs.event(json!({"event": "pin.locked", "attempt": attempt, "contact": contact, "contract": plan.contract,
            "failures": failures, "locked_until_ms": lock.and_then(|l| l.locked_until_ms), "at_ms": now - started}))
        .await;
    }
    locked
}

/// What a call told about its trunk, for the channel limits' backoff.
#[derive(Debug, Default)]
struct TrunkReport {
    /// The final failure response, if the call ended with one.
    refusal: Option<crate::sip::call::Refusal>,
    /// It rang or was answered.
    got_through: bool,
}

#[allow(clippy::too_many_arguments)]
async fn run_call(
    gw: &Gateway,
    plan: &Dialplan,
    script: &Script,
    attempt: u32,
    contact: usize,
    cancel: &mut watch::Receiver<Option<Stop>>,
    started: i64,
    obs: &dyn Observer,
    media: &mut Option<crate::driver::media::MediaSummary>,
    report: &mut TrunkReport,
    held: Option<Arc<crate::channels::Held>>,
) -> Outcome {
    let c = &plan.contacts[contact];
    let at = || now_ms() - started;
    if cancel.borrow().is_some() {
        return Outcome::Cancelled;
    }
    tracing::info!(contact = %c.name, uri = %crate::logging::Redacted(&c.uri), "dialling");
    // Read before dialling, so the answered call never waits for it.
    let pin = pin_check(plan, script).await;
    // The lease can go while the PIN state is read (a fenced write stops
    // this node's work): nothing may be dialled then.
    if script.shutdown.is_cancelled() {
        return Outcome::Interrupted;
    }
    let mut call = match gw
        .dial(DialRequest {
            uri: c.uri.clone(),
            from_uri: script.prefs.from_uri(&plan.caller_id),
            from_display: Some(
                script
                    .prefs
                    .from_display
                    .clone()
                    .unwrap_or_else(|| plan.name.clone()),
            ),
            codecs: script.prefs.codecs.clone(),
            credentials: script.credentials.clone(),
            ring_timeout: plan.escalation.ring_timeout,
            outbound_proxy: script.outbound_proxy,
            failover: script.failover.clone(),
            extra_headers: script.call_headers.clone(),
            media: crate::media::session::MediaPolicy {
                dtmf: plan.dtmf,
                symmetric_rtp: script.symmetric_rtp,
            },
            advertise: script.advertise,
            redirect: crate::sip::redirect::RedirectPolicy::new(
                plan.contacts.iter().map(|c| c.uri.as_str()),
                crate::sip::redirect::DEFAULT_MAX_HOPS,
            ),
            transport: script.transport.clone(),
            next_trunks: script.next_trunks.clone(),
        })
        .await
    {
        Ok(mut call) => {
            if let Some(h) = held {
                call.set_trunk_gate(h);
            }
            call
        }
        Err(e) => {
            obs.event(json!({"event": "call.failed", "attempt": attempt, "error": e.to_string(), "at_ms": at()})).await;
            return Outcome::Failed { code: 0 };
        }
    };
    let need_pin: Vec<String> = plan
        .actions
        .values()
        .filter(|a| a.pin)
        .map(|a| a.name.clone())
        .collect();
    let mut menu = Menu::new(plan.menu.clone(), pin, need_pin);
    let mut answered_at: Option<tokio::time::Instant> = None;
    let mut outcome: Option<Outcome> = None;
    // media prompt id -> menu prompt id
    let mut ids: HashMap<u64, u64> = HashMap::new();
    let mut cancelled = false;
    let mut stopping = false;
    let mut amd_pending = false;
    let mut machine_message: Option<u64> = None;
    // A text message comes sentence by sentence (maybe still being
    // synthesised): its player says it, and what the menu queues after it
    // waits in `held` until the last sentence has been heard.
    let mut msg = script.message.as_ref().map(crate::speech::CallMessage::new);
    let mut msg_for: Option<MessageFor> = None;
    let mut held: Vec<(u64, Say)> = Vec::new();
    // The menu's prompts waiting for their phrase (still being rendered
    // in the background: the INVITE did not wait for them).
    let mut due = crate::script::DuePhrases::new(script);
    // `[call] early_message`: the message started on early media and is
    // still playing (a recorded one: its media id), to be taken over by
    // the menu at the 200 rather than started again; `Some(None)` once
    // it ended before the 200 (then the menu says it again, whole).
    let mut early: Option<Option<u64>> = None;
    let mut early_playing = false;
    let a = &plan.amd;
    let amd_params = crate::media::amd::AmdParams {
        initial_silence: a.initial_silence,
        greeting: a.greeting,
        after_greeting_silence: a.after_greeting_silence,
        total_analysis: a.total_analysis,
        min_word_length: a.min_word_length,
        between_words_silence: a.between_words_silence,
        maximum_words: a.maximum_words,
        ..Default::default()
    };
    let mut call_gone = false;
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut running_action: Option<String> = None;
    let mut action_run: Option<ActionRun<'_>> = None;
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<Phase>();
    loop {
        if call_gone && action_run.is_none() {
            break;
        }
        let menu_wake = match (menu.poll_timeout(), answered_at) {
            (Some(ms), Some(t0)) => Some(t0 + Duration::from_millis(ms)),
            _ => None,
        };
        let timer = async {
            match menu_wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let since =
            |t0: Option<tokio::time::Instant>| t0.map_or(0, |t| t.elapsed().as_millis() as u64);
        tokio::select! {
            ev = call.next(), if !call_gone => {
                let Some(ev) = ev else {
                    // The call is gone; a running action still ends first.
                    call_gone = true;
                    menu.remote_hangup();
                    continue;
                };
                match ev {
                    CallUpdate::Sip(CallEvent::Refused(r)) => report.refusal = Some(r),
                    CallUpdate::Sip(CallEvent::Ringing) => {
                        report.got_through = true;
                        obs.event(json!({"event": "call.ringing", "attempt": attempt, "at_ms": at()})).await;
                    }
                    CallUpdate::FailedOver { code, to, trunk } => {
                        // That refusal was the proxy's left behind: the
                        // backoff is for what the call ends with.
                        report.refusal = None;
                        obs.event(json!({"event": "call.failover", "attempt": attempt, "code": code,
                            "proxy": to.map(|a| a.to_string()), "trunk": trunk, "at_ms": at()})).await;
                    }
                    CallUpdate::Redirected { code, target } => {
                        obs.event(json!({"event": "call.redirected", "attempt": attempt, "code": code,
                            "target": target, "at_ms": at()})).await;
                    }
                    CallUpdate::Sip(CallEvent::EarlyMedia(_))
                        if plan.early_message && early.is_none() && answered_at.is_none() && !cancelled =>
                    {
                        obs.event(json!({"event": "call.early_message", "attempt": attempt, "at_ms": at()})).await;
                        early_playing = true;
                        match msg.as_mut() {
                            Some(m) => {
                                m.play();
                                msg_for = Some(MessageFor::Early);
                                early = Some(None);
                            }
                            None => {
                                // Recorded: loaded first, a file read.
                                let p = script.wait_phrase(Say::Message).await;
                                early = Some(p.map(|p| call.play(p)));
                                early_playing = early.flatten().is_some();
                            }
                        }
                    }
                    CallUpdate::Sip(CallEvent::Answered(_)) => {
                        report.got_through = true;
                        obs.event(json!({"event": "call.answered", "attempt": attempt, "at_ms": at()})).await;
                        answered_at = Some(tokio::time::Instant::now());
                        if cancelled {
                            menu.cancel();
                        } else if plan.amd.enabled {
                            // Listen first: a person says "hello" and waits.
                            amd_pending = true;
                            call.start_amd(amd_params);
                        } else {
                            menu.start(0);
                        }
                    }
                    CallUpdate::Sip(CallEvent::Ended(reason)) => {
                        if answered_at.is_none() {
                            outcome.get_or_insert(if cancelled { Outcome::Cancelled } else { Outcome::from_unanswered(&reason) });
                        } else if outcome.is_none() {
                            menu.remote_hangup();
                        }
                    }
                    CallUpdate::Media(MediaEvent::Digit(d)) => {
                        obs.event(json!({"event": "digit", "attempt": attempt, "digit": d.digit.to_string(),
                            "source": d.source, "at_ms": at()})).await;
                        if plan.early_message && answered_at.is_none() {
                            // Heard on early media: nobody has answered, so
                            // nothing may be acknowledged yet.
                            continue;
                        }
                        if amd_pending {
                            // A key press settles it: a person is there.
                            amd_pending = false;
                            menu.start(since(answered_at));
                        }
                        if machine_message.is_none() && msg_for != Some(MessageFor::Machine) {
                            menu.digit(d.digit, since(answered_at));
                        }
                    }
                    CallUpdate::Media(MediaEvent::Amd { result, cause }) if amd_pending => {
                        amd_pending = false;
                        obs.event(json!({"event": "call.amd", "attempt": attempt, "result": result,
                            "cause": cause, "at_ms": at()})).await;
                        if result == crate::media::amd::AmdResult::Machine {
                            outcome.get_or_insert(Outcome::Machine);
                            let leave = plan.escalation.on_machine == crate::ivr::dialplan::OnMachine::LeaveMessage;
                            let recorded = match (leave, &msg) {
                                (true, None) => script.wait_phrase(Say::Message).await,
                                _ => None,
                            };
                            match (leave, msg.as_mut(), recorded) {
                                (true, Some(m), _) => {
                                    m.play();
                                    msg_for = Some(MessageFor::Machine);
                                }
                                (true, None, Some(p)) => {
                                    machine_message = Some(call.play(p));
                                }
                                _ => call.hangup(),
                            }
                        } else {
                            menu.start(since(answered_at));
                        }
                    }
                    CallUpdate::Media(MediaEvent::PromptFinished { id }) if Some(id) == machine_message => {
                        obs.event(json!({"event": "call.message_left", "attempt": attempt, "at_ms": at()})).await;
                        call.hangup();
                    }
                    CallUpdate::Media(MediaEvent::PromptFinished { .. }) if stopping => call.hangup(),
                    CallUpdate::Media(MediaEvent::PromptFinished { id })
                        if answered_at.is_none() && early == Some(Some(id)) =>
                    {
                        // The recorded message ended before the 200.
                        early = Some(None);
                        early_playing = false;
                    }
                    CallUpdate::Media(MediaEvent::PromptFinished { id }) => {
                        if msg.as_mut().is_some_and(|m| m.prompt_finished(id)) {
                            // The player goes on (below).
                        } else if let Some(mid) = ids.remove(&id) {
                            menu.prompt_finished(mid, since(answered_at));
                        }
                    }
                    _ => {}
                }
            }
            Some(ph) = progress_rx.recv(), if running_action.is_some() => {
                menu.action_phase(match ph {
                    Phase::Check => ActionSay::Checking,
                    Phase::Execute => ActionSay::Executing,
                    Phase::Verify => ActionSay::Verifying,
                });
            }
            rec = async {
                match action_run.as_mut() {
                    Some(r) => (&mut r.fut).await,
                    None => std::future::pending().await,
                }
            }, if action_run.is_some() => {
                action_run = None;
                running_action = None;
                // Phases reported before the end are not worth saying now.
                while progress_rx.try_recv().is_ok() {}
                let end = match rec.result {
                    RunResult::Succeeded => ActionEnd::Succeeded,
                    RunResult::NotNeeded => ActionEnd::NotNeeded,
                    RunResult::Failed { .. } => ActionEnd::Failed,
                    RunResult::Refused { .. } => ActionEnd::Refused,
                };
                menu.action_finished(end);
                if stopping {
                    outcome = Some(Outcome::Action { action: rec.action.clone(), result: end });
                    call.hangup();
                }
            }
            _ = async {
                match hangup_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            }, if hangup_at.is_some() => {
                hangup_at = None;
                call.hangup();
            }
            _ = async {
                match msg.as_mut() {
                    Some(m) => m.wait().await,
                    None => std::future::pending().await,
                }
            }, if msg.is_some() => {}
            _ = due.changed(), if due.is_waiting() && !stopping => {
                let now = since(answered_at);
                play_due(due.ready(), &mut call, &mut ids, &mut menu, now);
            }
            _ = timer, if !stopping => menu.handle_timeout(since(answered_at)),
            _ = script.shutdown.cancelled(), if !stopping => {
                stopping = true;
                outcome = Some(Outcome::Interrupted);
                if action_run.is_some() {
                    // A fix half-done is worse than a late stop: let it end.
                } else if answered_at.is_some()
                    && (!ids.is_empty() || msg.as_ref().is_some_and(|m| m.is_sounding()))
                {
                    // Finish the sentence being spoken, then hang up.
                    if let Some(m) = msg.as_mut() {
                        m.stop();
                    }
                    call.clear_queue();
                } else {
                    call.hangup();
                }
            }
            r = cancel.changed(), if !cancelled => {
                if r.is_ok() && cancel.borrow().is_some() {
                    cancelled = true;
                    if answered_at.is_some() {
                        menu.cancel();
                    } else {
                        call.hangup();
                    }
                }
            }
        }
        while let Some(o) = menu.poll_output() {
            if stopping {
                continue;
            }
            match o {
                // The message started on early media goes on: the menu's
                // first prompt is that one (taken over once).
                MenuOutput::Play { id, say }
                    if say == Say::Message && std::mem::take(&mut early_playing) =>
                {
                    match early.take().flatten() {
                        Some(media_id) => {
                            ids.insert(media_id, id);
                        }
                        None => {
                            msg_for = Some(MessageFor::Menu(id));
                            held.clear();
                        }
                    }
                }
                MenuOutput::Play { id, say } => match msg.as_mut() {
                    Some(m) if say == Say::Message => {
                        m.play();
                        msg_for = Some(MessageFor::Menu(id));
                        held.clear();
                    }
                    _ if msg_for.is_some() => held.push((id, say)),
                    _ => {
                        let d = due.push(id, running_action.as_deref(), say);
                        play_due(d, &mut call, &mut ids, &mut menu, since(answered_at));
                    }
                },
                MenuOutput::StopPlayback => {
                    call.stop_audio();
                    ids.clear();
                    due.clear();
                    if let Some(m) = msg.as_mut() {
                        m.stop();
                    }
                    msg_for = None;
                    held.clear();
                }
                MenuOutput::Hangup => {
                    // Let the far end's jitter buffer play out the last
                    // word before the BYE makes it drop what it holds.
                    call.play_silence(HANGUP_TAIL.as_millis() as u64);
                    hangup_at = Some(tokio::time::Instant::now() + HANGUP_TAIL);
                }
                MenuOutput::Outcome(o) => {
                    outcome.get_or_insert(o);
                }
                MenuOutput::PinFailed { locked } => {
                    let locked =
                        pin_failed(plan, script, attempt, &c.name, locked, started, obs).await;
                    menu.pin_lock_changed(locked);
                }
                MenuOutput::PinAccepted => {
                    if let Err(e) = script.pins.accepted(&plan.contract, now_ms()).await {
                        tracing::error!(contract = %plan.contract, error = %e, "cannot record the right PIN");
                    }
                }
                MenuOutput::ActionLocked { action } => {
                    obs.event(
                        json!({"event": "action.locked", "attempt": attempt, "contact": c.name,
                        "action": action, "at_ms": at()}),
                    )
                    .await;
                }
                MenuOutput::RunAction { action } => {
                    let meta = RunMeta {
                        run_id: crate::store::new_id("run"),
                        requested_by: Requester::Call {
                            contact: c.name.clone(),
                            uri: c.uri.clone(),
                            attempt,
                        },
                        notification: script.notification_id.clone(),
                        ticket: Some(script.ticket.clone()),
                        epoch: script.lease_epoch,
                    };
                    obs.event(
                        json!({"event": "action.requested", "attempt": attempt, "action": action,
                        "run_id": meta.run_id, "at_ms": at()}),
                    )
                    .await;
                    running_action = Some(action.clone());
                    match start_action(
                        plan,
                        script,
                        &action,
                        meta.clone(),
                        obs,
                        progress_tx.clone(),
                    )
                    .await
                    {
                        Ok(run) => action_run = Some(run),
                        Err(e) => {
                            tracing::warn!(action = %action, error = %e, "action refused");
                            let flow = plan.actions.get(&action).map_or("", |a| a.flow.as_str());
                            script
                                .actions
                                .refused(&meta, &plan.contract, &action, flow, &e.to_string(), obs)
                                .await;
                            running_action = None;
                            menu.action_finished(ActionEnd::Refused);
                        }
                    }
                }
            }
        }
        let notes = match msg.as_mut() {
            Some(m) if !stopping => m.drain(&mut call),
            _ => Vec::new(),
        };
        for note in notes {
            match note {
                crate::speech::PlayerNote::Fallback {
                    sentence,
                    part,
                    why,
                } => {
                    obs.event(json!({"event": "message.fallback", "attempt": attempt, "sentence": sentence,
                        "part": part, "why": why, "at_ms": at()}))
                    .await;
                }
                // The message was heard whole: the menu's prompts may follow
                // (the message is never the menu's last prompt, so the menu
                // needs no word of it).
                crate::speech::PlayerNote::Finished => match msg_for.take() {
                    Some(MessageFor::Early | MessageFor::Menu(_)) => {
                        early_playing = false;
                        for (id, say) in held.drain(..) {
                            let d = due.push(id, running_action.as_deref(), say);
                            play_due(d, &mut call, &mut ids, &mut menu, since(answered_at));
                        }
                    }
                    Some(MessageFor::Machine) => {
                        obs.event(json!({"event": "call.message_left", "attempt": attempt, "at_ms": at()}))
                            .await;
                        call.hangup();
                    }
                    None => {}
                },
            }
        }
    }
    // The media's last figures (SRTP, RTCP) for the call record.
    *media = tokio::time::timeout(Duration::from_secs(1), call.media_summary())
        .await
        .ok()
        .flatten();
    outcome.unwrap_or(if cancelled {
        Outcome::Cancelled
    } else if answered_at.is_none() {
        // Its events ended with no word of why: nobody answered it.
        tracing::warn!("the call ended without an answer or a reason");
        Outcome::Failed { code: 0 }
    } else {
        Outcome::AnsweredNoInput
    })
}

/// Queue on the call the menu's prompts whose phrase is ready (`ids`:
/// media id -> menu prompt id); one that will never come is over at once
/// for the menu.
fn play_due(
    due: Vec<crate::script::Due>,
    call: &mut crate::driver::ActiveCall,
    ids: &mut HashMap<u64, u64>,
    menu: &mut Menu,
    now_ms: u64,
) {
    for d in due {
        match d {
            crate::script::Due::Play(id, p) => {
                ids.insert(call.play(p), id);
            }
            crate::script::Due::Skip(id) => menu.prompt_finished(id, now_ms),
        }
    }
}

//! The audio of one notification's calls ([`Script`]): the fixed
//! phrases rendered before the first INVITE, and the message as
//! `crate::speech` synthesises it while the call rings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::action::Actions;
use crate::ivr::dialplan::{ActionSay, Dialplan, Language, Phrase};
use crate::ivr::menu::Say;
use crate::media::audio::Prompt;
use crate::runner::{template_values, Notification};
use crate::tts::Tts;

/// The audio of one notification: every phrase rendered before the first
/// INVITE (cache hits once the dialplan is prewarmed), and the message
/// synthesised sentence by sentence while the call rings.
pub struct Script {
    prompts: HashMap<Say, Arc<Prompt>>,
    /// A text message, sentence by sentence as it is synthesised (a
    /// recorded one is in `prompts`).
    pub message: Option<crate::speech::MessageAudio>,
    /// Per-action phrases that replace the defaults.
    action_prompts: HashMap<(String, ActionSay), Arc<Prompt>>,
    /// Runs maintenance actions (shared by the whole service, so one run
    /// per contract, host and flow holds across notifications).
    pub actions: Arc<Actions>,
    /// The alert's fields and variables, for action parameters.
    pub alert: BTreeMap<String, String>,
    pub ticket: String,
    pub notification_id: Option<String>,
    /// Clustered: the notification's lease epoch, the fencing token of
    /// the actions its calls start.
    pub lease_epoch: Option<i64>,
    /// Phrases that fell back to the recorded prompt (synthesis failed).
    pub fallbacks: Vec<String>,
    /// Headers every call of this notification carries (tracing).
    pub call_headers: Vec<(String, String)>,
    /// The trunk's outbound proxy, when the dialplan's trunk has one.
    pub outbound_proxy: Option<std::net::SocketAddr>,
    /// Proxies to fail over to, in order, when `outbound_proxy` times out
    /// or answers 5xx.
    pub failover: Vec<std::net::SocketAddr>,
    /// The contract's next trunks (`failover_trunks`), in the order to try.
    pub next_trunks: Vec<crate::driver::TrunkHop>,
    /// The trunk's caller identity and codec order.
    pub prefs: crate::sip::trunk_prefs::CallPrefs,
    /// The trunk's digest credentials.
    pub credentials: Option<crate::sip::auth::Credentials>,
    /// The trunk's peers sit behind NAT: latch onto their RTP source.
    pub symmetric_rtp: bool,
    /// The trunk's `sip_advertise` / `rtp_advertise`.
    pub advertise: crate::sip::advertise::Advertise,
    /// The trunk's transport (UDP, TCP, TLS) and TLS settings.
    pub transport: crate::sip::transport::TrunkTransport,
    /// Cancelled when the process shuts down: a ringing call is cancelled,
    /// an answered one hears the end of its current prompt, and the
    /// escalation stops where it is (it resumes at the next start).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The contract's PIN lockout (the database in the service).
    pub pins: Arc<dyn crate::pin_store::PinStore>,
    /// The trunk's channel limits, when it has any: each call takes a
    /// channel before its INVITE (`crate::channels`).
    pub channel: Option<(Arc<crate::channels::Channels>, crate::channels::Ask)>,
}

impl Script {
    /// Render every phrase, the message too (blocking until all of it is
    /// synthesised). A phrase whose synthesis fails uses the recorded
    /// fallback prompt for the language, so the call still goes out.
    pub fn prepare(
        plan: &Dialplan,
        n: &Notification,
        tts: &Tts,
        prompts_dir: &std::path::Path,
    ) -> anyhow::Result<Script> {
        let job = Script::message_job(plan, n, prompts_dir);
        let (message, synth) = match job {
            Some((m, s)) => (Some(m), Some(s)),
            None => (None, None),
        };
        if let Some(synth) = synth {
            synth.run(tts);
        }
        let mut script = Script::prepare_with(plan, n, tts, prompts_dir, message)?;
        if let Some(m) = &script.message {
            let failed: Vec<String> =
                m.rx.borrow()
                    .parts
                    .iter()
                    .filter_map(|s| match s {
                        crate::speech::PartState::Failed { why, .. } => Some(why.clone()),
                        _ => None,
                    })
                    .collect();
            script.fallbacks.extend(failed);
        }
        Ok(script)
    }

    /// The message's synthesis job, when the message is text: split into
    /// parts (sentences, the first in chunks), to run (blocking, [`crate::speech::MessageSynth::run`])
    /// while the call rings. A recorded message has none.
    pub fn message_job(
        plan: &Dialplan,
        n: &Notification,
        prompts_dir: &std::path::Path,
    ) -> Option<(crate::speech::MessageAudio, crate::speech::MessageSynth)> {
        let Phrase::Text(t) = &plan.message else {
            return None;
        };
        let text = crate::ivr::dialplan::render(t, &template_values(plan, n));
        // Loaded now (a small file), so a failed sentence has it at hand;
        // a missing one only matters if a sentence fails.
        let fallback = Prompt::load_cached(&Script::fallback_file(plan, prompts_dir))
            .inspect_err(|e| tracing::warn!(error = %e, "the recorded fallback is unusable"))
            .ok();
        Some(crate::speech::message(
            &text,
            plan.language,
            plan.voice.as_deref(),
            fallback,
        ))
    }

    fn fallback_file(plan: &Dialplan, prompts_dir: &std::path::Path) -> std::path::PathBuf {
        prompts_dir.join(match plan.language {
            Language::Ja => "fallback-ja.wav",
            Language::En => "fallback-en.wav",
        })
    }

    /// Render every phrase but a text message, which `message` (from
    /// [`Script::message_job`]) brings as it is synthesised.
    pub fn prepare_with(
        plan: &Dialplan,
        n: &Notification,
        tts: &Tts,
        prompts_dir: &std::path::Path,
        message: Option<crate::speech::MessageAudio>,
    ) -> anyhow::Result<Script> {
        let lang = plan.language;
        let vars = template_values(plan, n);
        let fallback_file = Script::fallback_file(plan, prompts_dir);
        let p = &plan.phrases;
        let mut all: Vec<(Say, &Phrase)> = vec![
            (Say::Menu, &plan.menu.prompt),
            (Say::InvalidKey, &p.invalid_key),
            (Say::Goodbye, &p.goodbye),
            (Say::Acked, &p.acked),
            (Say::Passed, &p.passed),
            (Say::Left, &p.left),
            (Say::Resolved, &p.resolved),
            (Say::Confirm, &p.confirm),
            (Say::EnterPin, &p.enter_pin),
            (Say::WrongPin, &p.wrong_pin),
            (Say::Locked, &p.locked),
            (Say::ActionRequested, &p.action_requested),
        ];
        if message.is_none() {
            all.insert(0, (Say::Message, &plan.message));
        }
        for s in crate::ivr::dialplan::ACTION_SAYS {
            all.push((Say::Action(s), p.action(s)));
        }
        let mut prompts = HashMap::new();
        let mut fallbacks = Vec::new();
        // Whatever cannot be made (synthesis fails, a recorded prompt was
        // deleted or broken since the dialplan was loaded) says the recorded
        // fallback instead, so the call still goes out. Only a missing
        // fallback stops the notification.
        let mut render = |say: &dyn std::fmt::Debug,
                          phrase: &Phrase|
         -> anyhow::Result<Arc<Prompt>> {
            let why = match phrase {
                Phrase::Recorded(path) => match Prompt::load_cached(path) {
                    Ok(p) => return Ok(p),
                    Err(e) => {
                        tracing::error!(error = %e, phrase = ?say, "recorded prompt unusable; using the recorded fallback");
                        format!("{say:?}: {e}")
                    }
                },
                Phrase::Text(t) => {
                    let text = crate::ivr::dialplan::render(t, &vars);
                    match tts.render_voice(lang, plan.voice.as_deref(), &text) {
                        Ok(p) => return Ok(p),
                        Err(e) => {
                            tracing::error!(error = %e, phrase = ?say, "synthesis failed; using the recorded fallback");
                            format!("{say:?}: {e}")
                        }
                    }
                }
            };
            fallbacks.push(why);
            Prompt::load_cached(&fallback_file).map_err(|e| {
                anyhow::anyhow!(
                    "the recorded fallback {} is unusable: {e}",
                    fallback_file.display()
                )
            })
        };
        for (say, phrase) in all {
            prompts.insert(say, render(&say, phrase)?);
        }
        let mut action_prompts = HashMap::new();
        for a in plan.actions.values() {
            for (say, phrase) in &a.phrases {
                action_prompts.insert((a.name.clone(), *say), render(&(&a.name, say), phrase)?);
            }
        }
        Ok(Script {
            prompts,
            action_prompts,
            message,
            actions: Arc::new(Actions::default()),
            alert: crate::action::alert_values(n),
            ticket: n.ticket.clone(),
            notification_id: None,
            lease_epoch: None,
            fallbacks,
            call_headers: Vec::new(),
            outbound_proxy: None,
            failover: Vec::new(),
            next_trunks: Vec::new(),
            prefs: Default::default(),
            credentials: None,
            symmetric_rtp: false,
            advertise: Default::default(),
            transport: Default::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            pins: Arc::new(crate::pin_store::MemoryPins::default()),
            channel: None,
        })
    }

    pub(crate) fn get(&self, say: Say) -> Option<Arc<Prompt>> {
        self.prompts.get(&say).cloned()
    }

    /// A prompt, with the running action's own phrase where it has one.
    pub(crate) fn get_for(&self, action: Option<&str>, say: Say) -> Option<Arc<Prompt>> {
        if let (Some(a), Say::Action(s)) = (action, say) {
            if let Some(p) = self.action_prompts.get(&(a.to_string(), s)) {
                return Some(p.clone());
            }
        }
        self.get(say)
    }
}

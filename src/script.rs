//! The audio of one notification's calls ([`Script`]): the fixed
//! phrases (menu, goodbye, PIN prompts, ...) and the message as
//! `crate::speech` synthesises it. Neither holds the INVITE: the fixed
//! phrases are rendered in the background ([`PhrasesJob`]) while the call
//! rings, and a call waits for one only when it is due (the runner queues
//! the menu's prompts behind a phrase not ready yet).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

use crate::action::Actions;
use crate::ivr::dialplan::{ActionSay, Dialplan, Language, Phrase};
use crate::ivr::menu::Say;
use crate::media::audio::Prompt;
use crate::runner::{template_values, Notification};
use crate::tts::Tts;

/// The longest the fixed phrases wait for the message's first part
/// before they are rendered beside it (an engine that hangs on the
/// message must not leave the menu unrendered).
pub const PHRASES_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops a notification's fixed phrases when it ends: the job renders
/// nothing more, and `audio.ready` (its task registered with
/// [`PhrasesEnd::set_ready_task`]) is recorded before the end or never.
#[derive(Debug, Default)]
pub struct PhrasesEnd {
    cancel: tokio_util::sync::CancellationToken,
    ready: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PhrasesEnd {
    pub fn new(cancel: tokio_util::sync::CancellationToken) -> PhrasesEnd {
        PhrasesEnd {
            cancel,
            ready: Default::default(),
        }
    }

    /// The token the job and the `audio.ready` task stop on.
    pub fn token(&self) -> tokio_util::sync::CancellationToken {
        self.cancel.clone()
    }

    /// The task that says `audio.ready` ([`Script::audio_ready`]).
    pub fn set_ready_task(&self, t: tokio::task::JoinHandle<()>) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// The notification ends: stop the job and wait for the `audio.ready`
    /// task, so that event is recorded by now or never. Idempotent.
    pub async fn end(&self) {
        self.cancel.cancel();
        let t = self.ready.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.await;
        }
    }
}

/// Which fixed phrase: one of the menu's, or an action's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PhraseKey {
    Say(Say),
    /// An action's phrase that replaces the default for it.
    Action(String, ActionSay),
}

/// The fixed phrases as far as they are rendered.
#[derive(Debug, Clone, Default)]
pub struct Phrases {
    ready: HashMap<PhraseKey, Arc<Prompt>>,
    /// Phrases said with the recorded fallback (why, for each).
    pub fallbacks: Vec<String>,
    /// Every phrase is rendered (or the job gave up: see `failed`).
    pub done: bool,
    /// The job stopped: a phrase could not be made and there was no
    /// fallback to say instead. Phrases not ready stay missing.
    pub failed: Option<String>,
    /// Keys the dialplan has (an action's own phrases); known before
    /// they are rendered, so a lookup waits for the action's own phrase
    /// rather than say the default.
    own: std::collections::HashSet<PhraseKey>,
}

/// A phrase at the moment asked.
#[derive(Debug, Clone)]
pub enum PhraseNow {
    Ready(Arc<Prompt>),
    /// Still being rendered.
    Pending,
    /// It will never come (the job stopped, or no such phrase).
    Missing,
}

impl Phrases {
    fn lookup(&self, action: Option<&str>, say: Say) -> PhraseNow {
        let mut key = PhraseKey::Say(say);
        if let (Some(a), Say::Action(s)) = (action, say) {
            let own = PhraseKey::Action(a.to_string(), s);
            if self.own.contains(&own) {
                key = own;
            }
        }
        match self.ready.get(&key) {
            Some(p) => PhraseNow::Ready(p.clone()),
            None if self.done => PhraseNow::Missing,
            None => PhraseNow::Pending,
        }
    }
}

/// Renders a notification's fixed phrases, one at a time in the order a
/// call needs them, publishing each as it is ready. Blocking: run it on a
/// blocking thread ([`PhrasesJob::run`]). Stops between two phrases once
/// `cancel` is cancelled (its notification ended): then it is never
/// `done`, so nothing says `audio.ready` for it.
pub struct PhrasesJob {
    list: Vec<(PhraseKey, Phrase)>,
    lang: Language,
    voice: Option<String>,
    vars: BTreeMap<String, String>,
    /// Loaded up front: then a phrase that cannot be made says it.
    fallback: Option<Arc<Prompt>>,
    fallback_file: std::path::PathBuf,
    tx: watch::Sender<Phrases>,
    /// Cancelled when the notification ends (acknowledged, cancelled,
    /// every call made) or this node stops running it: the ~20 engine
    /// runs left would be CPU taken from live calls, for nobody.
    cancel: tokio_util::sync::CancellationToken,
}

impl PhrasesJob {
    /// Render every phrase. Whatever cannot be made (synthesis fails, a
    /// recorded prompt was deleted or broken since the dialplan was
    /// loaded) says the recorded fallback instead. Only a missing
    /// fallback is an error: then the job stops there (the phrases not
    /// made stay missing) and returns why. Cancelled, it stops before the
    /// next phrase (the one being made is finished: an engine run cannot
    /// be taken back) and returns; the phrases are then never `done`.
    pub fn run(self, tts: &Tts) -> anyhow::Result<()> {
        let own = self
            .list
            .iter()
            .filter(|(k, _)| matches!(k, PhraseKey::Action(..)))
            .map(|(k, _)| k.clone())
            .collect();
        self.tx.send_modify(|p| p.own = own);
        let mut fallback = self.fallback.clone();
        let t0 = std::time::Instant::now();
        for (key, phrase) in &self.list {
            if self.cancel.is_cancelled() {
                tracing::debug!(phrase = ?key, "the notification ended: the fixed phrases left are not rendered");
                return Ok(());
            }
            let why = match phrase {
                Phrase::Recorded(path) => match Prompt::load_cached(path) {
                    Ok(p) => {
                        self.tx.send_modify(|s| {
                            s.ready.insert(key.clone(), p);
                        });
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, phrase = ?key, "recorded prompt unusable; using the recorded fallback");
                        format!("{}: {e}", key.name())
                    }
                },
                Phrase::Text(t) => {
                    let text = crate::ivr::dialplan::render(t, &self.vars);
                    match tts.render_voice(self.lang, self.voice.as_deref(), &text) {
                        Ok(p) => {
                            self.tx.send_modify(|s| {
                                s.ready.insert(key.clone(), p);
                            });
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, phrase = ?key, "synthesis failed; using the recorded fallback");
                            format!("{}: {e}", key.name())
                        }
                    }
                }
            };
            if fallback.is_none() {
                fallback = Some(Prompt::load_cached(&self.fallback_file).map_err(|e| {
                    let why = format!(
                        "the recorded fallback {} is unusable: {e}",
                        self.fallback_file.display()
                    );
                    self.tx.send_modify(|s| {
                        s.done = true;
                        s.failed = Some(why.clone());
                    });
                    anyhow::anyhow!(why)
                })?);
            }
            let fb = fallback.clone();
            self.tx.send_modify(|s| {
                s.fallbacks.push(why);
                if let Some(fb) = fb {
                    s.ready.insert(key.clone(), fb);
                }
            });
        }
        self.tx.send_modify(|s| s.done = true);
        tracing::debug!(
            phrases = self.list.len(),
            ms = t0.elapsed().as_millis() as u64,
            "fixed phrases ready"
        );
        Ok(())
    }
}

impl PhraseKey {
    /// As the fallback list names it (`Menu`, `("restart", Executing)`).
    fn name(&self) -> String {
        match self {
            PhraseKey::Say(s) => format!("{s:?}"),
            PhraseKey::Action(a, s) => format!("{:?}", (a, s)),
        }
    }
}

/// The audio of one notification: the fixed phrases as they are rendered
/// (in the background: the INVITE never waits for them), and the message
/// synthesised sentence by sentence while the call rings.
pub struct Script {
    /// The fixed phrases (and a recorded message) as they are rendered.
    pub phrases: watch::Receiver<Phrases>,
    /// A text message, sentence by sentence as it is synthesised (a
    /// recorded one is in `phrases`).
    pub message: Option<crate::speech::MessageAudio>,
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
    /// The recorded fallback, said in place of a phrase a call has waited
    /// for too long ([`PHRASE_WAIT`]): an engine that hangs must not
    /// leave the callee in silence until it times out.
    pub late_fallback: Option<Arc<Prompt>>,
    /// Ends the fixed phrases' background work with the notification
    /// (`crate::runner::escalate` calls [`PhrasesEnd::end`] before the
    /// notification's final event).
    pub phrases_end: Arc<PhrasesEnd>,
    /// Phrases that fell back to the recorded prompt (synthesis failed),
    /// when they were rendered before the script was made
    /// ([`Script::prepare_with`]); else see `phrases`.
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
    /// [`Script::message_job`]) brings as it is synthesised. Blocking:
    /// the phrases are all there when it returns (the CLI's `--wait`-less
    /// callers and tests; the service renders them in the background with
    /// [`Script::phrases_job`]).
    pub fn prepare_with(
        plan: &Dialplan,
        n: &Notification,
        tts: &Tts,
        prompts_dir: &std::path::Path,
        message: Option<crate::speech::MessageAudio>,
    ) -> anyhow::Result<Script> {
        let (rx, job) = Script::phrases_job(
            plan,
            n,
            prompts_dir,
            message.is_none(),
            None,
            Default::default(),
        );
        job.run(tts)?;
        let mut script = Script::with_phrases(n, message, rx);
        script.fallbacks = script.phrases.borrow().fallbacks.clone();
        Ok(script)
    }

    /// The job that renders the fixed phrases (the message too when it is
    /// recorded: `with_message`), in the order a call needs them, and
    /// publishes each as it is ready. With `fallback` loaded up front a
    /// phrase that cannot be made says it; without, the job fails (see
    /// [`PhrasesJob::run`]). It stops once `cancel` is cancelled.
    pub fn phrases_job(
        plan: &Dialplan,
        n: &Notification,
        prompts_dir: &std::path::Path,
        with_message: bool,
        fallback: Option<Arc<Prompt>>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> (watch::Receiver<Phrases>, PhrasesJob) {
        let p = &plan.phrases;
        let mut list: Vec<(PhraseKey, Phrase)> = Vec::new();
        if with_message {
            list.push((PhraseKey::Say(Say::Message), plan.message.clone()));
        }
        // The menu first: it is what an answered call needs after the
        // message; goodbye next (said when nobody presses a key).
        for (say, phrase) in [
            (Say::Menu, &plan.menu.prompt),
            (Say::Goodbye, &p.goodbye),
            (Say::InvalidKey, &p.invalid_key),
            (Say::Acked, &p.acked),
            (Say::Passed, &p.passed),
            (Say::Left, &p.left),
            (Say::Resolved, &p.resolved),
            (Say::Confirm, &p.confirm),
            (Say::EnterPin, &p.enter_pin),
            (Say::WrongPin, &p.wrong_pin),
            (Say::Locked, &p.locked),
            (Say::ActionRequested, &p.action_requested),
        ] {
            list.push((PhraseKey::Say(say), phrase.clone()));
        }
        for s in crate::ivr::dialplan::ACTION_SAYS {
            list.push((PhraseKey::Say(Say::Action(s)), p.action(s).clone()));
        }
        for a in plan.actions.values() {
            for (say, phrase) in &a.phrases {
                list.push((PhraseKey::Action(a.name.clone(), *say), phrase.clone()));
            }
        }
        let (tx, rx) = watch::channel(Phrases::default());
        (
            rx,
            PhrasesJob {
                list,
                lang: plan.language,
                voice: plan.voice.clone(),
                vars: template_values(plan, n),
                fallback,
                fallback_file: Script::fallback_file(plan, prompts_dir),
                tx,
                cancel,
            },
        )
    }

    /// The script of one notification, its fixed phrases started. With
    /// the recorded fallback at hand (loaded here: a small file) they are
    /// rendered in the background, after the message's first part (or
    /// [`PHRASES_AFTER`] at most) so they do not compete with it for the
    /// CPU, and this returns at once: the INVITE never waits for them.
    /// Without a fallback a phrase that cannot be made would leave the
    /// call with nothing to say, so they are rendered first, as before,
    /// and one that cannot be made fails the notification cleanly.
    /// `cancel` (cancelled when the notification ends) stops the
    /// rendering between two phrases.
    pub async fn start(
        plan: &Dialplan,
        n: &Notification,
        tts: Arc<Tts>,
        prompts_dir: &std::path::Path,
        message: Option<crate::speech::MessageAudio>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Script> {
        let span = tracing::Span::current();
        let end = cancel.clone();
        match Script::load_fallback(plan, prompts_dir) {
            Ok(fb) => {
                let (rx, job) = Script::phrases_job(
                    plan,
                    n,
                    prompts_dir,
                    message.is_none(),
                    Some(fb.clone()),
                    cancel,
                );
                let first = message.clone();
                tokio::spawn(async move {
                    if let Some(m) = first {
                        m.first_settled(PHRASES_AFTER).await;
                    }
                    // With a fallback at hand the job cannot fail.
                    let _ =
                        tokio::task::spawn_blocking(move || span.in_scope(|| job.run(&tts))).await;
                });
                let mut script = Script::with_phrases(n, message, rx);
                script.late_fallback = Some(fb);
                script.phrases_end = Arc::new(PhrasesEnd::new(end));
                Ok(script)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no recorded fallback: the fixed phrases are rendered before dialling");
                let (rx, job) =
                    Script::phrases_job(plan, n, prompts_dir, message.is_none(), None, cancel);
                tokio::task::spawn_blocking(move || span.in_scope(|| job.run(&tts)))
                    .await
                    .map_err(|e| anyhow::anyhow!("audio preparation crashed: {e}"))??;
                let mut script = Script::with_phrases(n, message, rx);
                script.fallbacks = script.phrases.borrow().fallbacks.clone();
                script.phrases_end = Arc::new(PhrasesEnd::new(end));
                Ok(script)
            }
        }
    }

    /// The fixed phrases once all are rendered (or the job gave up:
    /// `failed`); `None` when the job stopped before (cancelled with its
    /// notification, or it died): then they never will be.
    pub async fn phrases_done(mut rx: watch::Receiver<Phrases>) -> Option<Phrases> {
        let p = rx.wait_for(|p| p.done).await.ok()?.clone();
        Some(p)
    }

    /// `audio.ready` for `obs`, once every fixed phrase is rendered, from
    /// a task the caller awaits (after cancelling `cancel`) before it
    /// records the notification's end: the event then comes before the
    /// end or never, not after it. `counted` gets the phrases said with
    /// the fallback.
    pub fn audio_ready<F, Fut>(
        phrases: watch::Receiver<Phrases>,
        cancel: tokio_util::sync::CancellationToken,
        emit: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnOnce(Phrases) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        tokio::spawn(async move {
            let p = tokio::select! {
                p = Script::phrases_done(phrases) => p,
                _ = cancel.cancelled() => None,
            };
            // Both may be ready at once: the end wins. Past this check
            // the caller, which awaits this task after its cancel, waits
            // for the event too, so it is recorded before the end.
            if let Some(p) = p.filter(|_| !cancel.is_cancelled()) {
                emit(p).await;
            }
        })
    }

    /// The recorded fallback prompt of the dialplan's language, loaded
    /// (a small file, kept in memory once read).
    pub fn load_fallback(
        plan: &Dialplan,
        prompts_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<Prompt>> {
        let f = Script::fallback_file(plan, prompts_dir);
        Prompt::load_cached(&f)
            .map_err(|e| anyhow::anyhow!("the recorded fallback {} is unusable: {e}", f.display()))
    }

    /// A script whose fixed phrases come through `phrases` (maybe still
    /// being rendered: a call waits for one only when it is due).
    pub fn with_phrases(
        n: &Notification,
        message: Option<crate::speech::MessageAudio>,
        phrases: watch::Receiver<Phrases>,
    ) -> Script {
        Script {
            phrases,
            message,
            actions: Arc::new(Actions::default()),
            alert: crate::action::alert_values(n),
            ticket: n.ticket.clone(),
            notification_id: None,
            lease_epoch: None,
            late_fallback: None,
            phrases_end: Default::default(),
            fallbacks: Vec::new(),
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
        }
    }

    /// Wait until a phrase is rendered (or cannot be). For the recorded
    /// message only, which the job loads first (a file read, not a
    /// synthesis): waiting for it in place holds a call's loop for a
    /// moment at most.
    pub(crate) async fn wait_phrase(&self, say: Say) -> Option<Arc<Prompt>> {
        let mut rx = self.phrases.clone();
        loop {
            match rx.borrow_and_update().lookup(None, say) {
                PhraseNow::Ready(p) => return Some(p),
                PhraseNow::Missing => return None,
                PhraseNow::Pending => {}
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// What to do with a prompt the menu asked for.
#[derive(Debug)]
pub(crate) enum Due {
    /// Play it (the menu's prompt id, its audio).
    Play(u64, Arc<Prompt>),
    /// It will never come: tell the menu it is over.
    Skip(u64),
}

/// One call's menu prompts on their way to its media, in the order the
/// menu asked for them: each is played when its phrase is rendered, and
/// those behind one still being rendered wait with it, so a prompt is
/// never played before the one the menu asked for first. The tokio side
/// of the call loop (the menu engine stays pure).
pub(crate) struct DuePhrases {
    rx: watch::Receiver<Phrases>,
    waiting: std::collections::VecDeque<(u64, Option<String>, Say)>,
    closed: bool,
    fallback: Option<Arc<Prompt>>,
    /// Since when the prompt at the head has waited.
    head_since: Option<tokio::time::Instant>,
    /// The head has waited `wait` ([`PHRASE_WAIT`]): say the fallback for it.
    expired: bool,
    wait: std::time::Duration,
}

/// How long an answered call waits for a phrase still being rendered
/// before it says the recorded fallback instead (as long as a message
/// waits for a late sentence).
pub const PHRASE_WAIT: std::time::Duration =
    std::time::Duration::from_millis(crate::ivr::player::STALL_MS);

impl DuePhrases {
    pub(crate) fn new(script: &Script) -> DuePhrases {
        DuePhrases {
            rx: script.phrases.clone(),
            waiting: Default::default(),
            closed: false,
            fallback: script.late_fallback.clone(),
            head_since: None,
            expired: false,
            wait: PHRASE_WAIT,
        }
    }

    /// The menu asked for `say` (with the running action's own phrase
    /// where it has one); returns what can be played now, in order.
    pub(crate) fn push(&mut self, id: u64, action: Option<&str>, say: Say) -> Vec<Due> {
        if self.waiting.is_empty() {
            self.head_since = Some(tokio::time::Instant::now());
            self.expired = false;
        }
        self.waiting
            .push_back((id, action.map(str::to_string), say));
        self.ready()
    }

    /// The audio was stopped: nothing waiting is wanted any more.
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
        self.head_since = None;
        self.expired = false;
    }

    /// A prompt waits for its phrase.
    pub(crate) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Wait for more phrases to be rendered, or for the head's wait to
    /// run out. Cancel safe.
    pub(crate) async fn changed(&mut self) {
        let deadline = self
            .head_since
            .filter(|_| !self.expired && self.fallback.is_some())
            .map(|t| t + self.wait);
        tokio::select! {
            r = self.rx.changed(), if !self.closed => {
                if r.is_err() {
                    // The job is over: what it made is in the channel.
                    self.closed = true;
                }
            }
            _ = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            }, if deadline.is_some() => self.expired = true,
            else => std::future::pending().await,
        }
    }

    /// The prompts at the head that can be played (or skipped) now.
    pub(crate) fn ready(&mut self) -> Vec<Due> {
        let phrases = self.rx.borrow_and_update().clone();
        let mut out = Vec::new();
        while let Some((id, action, say)) = self.waiting.front() {
            match phrases.lookup(action.as_deref(), *say) {
                PhraseNow::Ready(p) => out.push(Due::Play(*id, p)),
                PhraseNow::Pending if self.expired && self.fallback.is_some() => {
                    tracing::warn!(phrase = ?say, wait_ms = self.wait.as_millis() as u64, "the phrase is still being rendered; saying the recorded fallback");
                    if let Some(fb) = &self.fallback {
                        out.push(Due::Play(*id, fb.clone()));
                    }
                }
                PhraseNow::Pending if !self.closed => break,
                PhraseNow::Pending | PhraseNow::Missing => {
                    tracing::error!(phrase = ?say, "no audio for the phrase; skipped");
                    out.push(Due::Skip(*id));
                }
            }
            self.waiting.pop_front();
            // The next prompt's wait starts now.
            self.head_since = Some(tokio::time::Instant::now());
            self.expired = false;
        }
        if self.waiting.is_empty() {
            self.head_since = None;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(fallback: Option<Arc<Prompt>>) -> (watch::Sender<Phrases>, Script) {
        let n = Notification {
            contract: "c".into(),
            ticket: "T1".into(),
            severity: "critical".into(),
            host: "h".into(),
            summary: "s".into(),
            variables: Default::default(),
        };
        let (tx, rx) = watch::channel(Phrases::default());
        let mut s = Script::with_phrases(&n, None, rx);
        s.late_fallback = fallback;
        (tx, s)
    }

    const WAIT: std::time::Duration = std::time::Duration::from_millis(60);

    #[tokio::test]
    async fn a_phrase_still_rendering_after_the_wait_is_said_with_the_fallback() {
        let fb = Prompt::from_pcm("fallback", vec![0; 800]);
        let (_tx, s) = script(Some(fb.clone()));
        let mut due = DuePhrases::new(&s);
        due.wait = WAIT;
        assert!(
            due.push(1, None, Say::Menu).is_empty(),
            "the menu is not rendered yet"
        );
        let t0 = tokio::time::Instant::now();
        due.changed().await;
        assert!(t0.elapsed() >= WAIT, "{:?}", t0.elapsed());
        match due.ready().as_slice() {
            [Due::Play(1, p)] => assert!(Arc::ptr_eq(p, &fb)),
            other => panic!("{other:?}"),
        }
        assert!(!due.is_waiting());
    }

    #[tokio::test]
    async fn without_a_fallback_a_pending_phrase_is_waited_for() {
        let (_tx, s) = script(None);
        let mut due = DuePhrases::new(&s);
        due.wait = WAIT;
        assert!(due.push(1, None, Say::Menu).is_empty());
        let waited = tokio::time::timeout(WAIT * 4, due.changed()).await;
        assert!(waited.is_err(), "no deadline without a fallback to say");
        assert!(due.is_waiting());
    }

    /// A job on a site voice (a shell script, a real process per phrase)
    /// whose phrase "slow menu" waits for `gate`; every phrase asked for
    /// is logged. Returns the job, its receiver, the token, the dir.
    fn slow_job(
        name: &str,
    ) -> (
        PhrasesJob,
        watch::Receiver<Phrases>,
        tokio_util::sync::CancellationToken,
        Arc<Tts>,
        std::path::PathBuf,
    ) {
        let dir = std::env::temp_dir().join(format!("callout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tone: Vec<i16> = (0..1600).map(|i| ((i % 20) as i16 - 10) * 800).collect();
        crate::media::audio::write_wav(&dir.join("tone.wav"), &tone).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("engine.sh"),
            format!(
                "echo \"$1\" >> {d}/asked\n\
                 case \"$1\" in *slow*) while [ ! -e {d}/gate ]; do sleep 0.01; done;; esac\n\
                 cp {d}/tone.wav \"$2\"\n"
            ),
        )
        .unwrap();
        let cfg = crate::tts::TtsConfig {
            cache_dir: dir.join("cache"),
            voices: [(
                "fake".to_string(),
                crate::tts::VoiceConfig::Command {
                    argv: vec![
                        "/bin/sh".into(),
                        format!("{d}/engine.sh"),
                        "{text}".into(),
                        "{out}".into(),
                    ],
                },
            )]
            .into(),
            ..Default::default()
        };
        let tts = Arc::new(Tts::new(&cfg).unwrap());
        let (tx, rx) = watch::channel(Phrases::default());
        let cancel = tokio_util::sync::CancellationToken::new();
        let text = |t: &str| Phrase::Text(t.into());
        let job = PhrasesJob {
            list: vec![
                (PhraseKey::Say(Say::Menu), text("slow menu")),
                (PhraseKey::Say(Say::Goodbye), text("goodbye")),
                (PhraseKey::Say(Say::InvalidKey), text("invalid key")),
            ],
            lang: Language::En,
            voice: Some("fake".into()),
            vars: BTreeMap::new(),
            fallback: None,
            fallback_file: dir.join("missing.wav"),
            tx,
            cancel: cancel.clone(),
        };
        (job, rx, cancel, tts, dir)
    }

    fn asked(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("asked"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_asked(dir: &std::path::Path, n: usize) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while asked(dir).len() < n {
            assert!(std::time::Instant::now() < until, "{:?}", asked(dir));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The notification ends while a phrase is being made: that one is
    /// finished, no other is started, the phrases are never `done`, and
    /// `audio.ready` is not said, not even once the job is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_phrases_job_renders_nothing_more_and_never_says_ready() {
        let (job, rx, cancel, tts, dir) = slow_job("phrases-cancel");
        let said = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = said.clone();
        let ready = Script::audio_ready(rx.clone(), cancel.clone(), move |_| async move {
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let run = tokio::task::spawn_blocking(move || job.run(&tts));
        tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || wait_asked(&dir, 1)
        })
        .await
        .unwrap();
        // Ended (as `escalate` does before the final event): once this
        // returns, audio.ready was said or never will be.
        let end = PhrasesEnd::new(cancel);
        end.set_ready_task(ready);
        tokio::time::timeout(std::time::Duration::from_secs(2), end.end())
            .await
            .expect("the audio.ready task ends with the notification, not with the engine");
        std::fs::write(dir.join("gate"), "").unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(asked(&dir), ["slow menu"], "nothing rendered after the end");
        let p = rx.borrow().clone();
        assert!(!p.done);
        assert!(p.ready.contains_key(&PhraseKey::Say(Say::Menu)));
        assert!(Script::phrases_done(rx).await.is_none());
        assert!(!said.load(std::sync::atomic::Ordering::SeqCst));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Not cancelled, the same job renders every phrase and says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_phrases_job_not_cancelled_renders_all_and_says_ready() {
        let (job, rx, cancel, tts, dir) = slow_job("phrases-all");
        std::fs::write(dir.join("gate"), "").unwrap();
        let (said_tx, said_rx) = tokio::sync::oneshot::channel();
        let ready = Script::audio_ready(rx.clone(), cancel, move |p| async move {
            let _ = said_tx.send(p.ready.len());
        });
        tokio::task::spawn_blocking(move || job.run(&tts))
            .await
            .unwrap()
            .unwrap();
        ready.await.unwrap();
        assert_eq!(said_rx.await.unwrap(), 3);
        assert_eq!(asked(&dir), ["slow menu", "goodbye", "invalid key"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

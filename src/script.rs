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
/// blocking thread ([`PhrasesJob::run`]).
pub struct PhrasesJob {
    list: Vec<(PhraseKey, Phrase)>,
    lang: Language,
    voice: Option<String>,
    vars: BTreeMap<String, String>,
    /// Loaded up front: then a phrase that cannot be made says it.
    fallback: Option<Arc<Prompt>>,
    fallback_file: std::path::PathBuf,
    tx: watch::Sender<Phrases>,
}

impl PhrasesJob {
    /// Render every phrase. Whatever cannot be made (synthesis fails, a
    /// recorded prompt was deleted or broken since the dialplan was
    /// loaded) says the recorded fallback instead. Only a missing
    /// fallback is an error: then the job stops there (the phrases not
    /// made stay missing) and returns why.
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
        let (rx, job) = Script::phrases_job(plan, n, prompts_dir, message.is_none(), None);
        job.run(tts)?;
        let mut script = Script::with_phrases(n, message, rx);
        script.fallbacks = script.phrases.borrow().fallbacks.clone();
        Ok(script)
    }

    /// The job that renders the fixed phrases (the message too when it is
    /// recorded: `with_message`), in the order a call needs them, and
    /// publishes each as it is ready. With `fallback` loaded up front a
    /// phrase that cannot be made says it; without, the job fails (see
    /// [`PhrasesJob::run`]).
    pub fn phrases_job(
        plan: &Dialplan,
        n: &Notification,
        prompts_dir: &std::path::Path,
        with_message: bool,
        fallback: Option<Arc<Prompt>>,
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
    pub async fn start(
        plan: &Dialplan,
        n: &Notification,
        tts: Arc<Tts>,
        prompts_dir: &std::path::Path,
        message: Option<crate::speech::MessageAudio>,
    ) -> anyhow::Result<Script> {
        let span = tracing::Span::current();
        match Script::load_fallback(plan, prompts_dir) {
            Ok(fb) => {
                let (rx, job) =
                    Script::phrases_job(plan, n, prompts_dir, message.is_none(), Some(fb.clone()));
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
                Ok(script)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no recorded fallback: the fixed phrases are rendered before dialling");
                let (rx, job) = Script::phrases_job(plan, n, prompts_dir, message.is_none(), None);
                tokio::task::spawn_blocking(move || span.in_scope(|| job.run(&tts)))
                    .await
                    .map_err(|e| anyhow::anyhow!("audio preparation crashed: {e}"))??;
                let mut script = Script::with_phrases(n, message, rx);
                script.fallbacks = script.phrases.borrow().fallbacks.clone();
                Ok(script)
            }
        }
    }

    /// The fixed phrases once all are rendered (or the job stopped).
    pub async fn phrases_done(mut rx: watch::Receiver<Phrases>) -> Phrases {
        let _ = rx.wait_for(|p| p.done).await;
        let p = rx.borrow().clone();
        p
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
}

//! A notification's message, synthesised sentence by sentence, the first
//! sentence first, while its first call is already ringing: the INVITE
//! never waits for speech. The synthesis runs on a blocking thread and
//! publishes each sentence on a `watch` channel; every call of the
//! notification feeds what it sees to its [`crate::ivr::player`].

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::watch;

use crate::ivr::dialplan::Language;
use crate::media::audio::Prompt;
use crate::runner::Observer;
use crate::tts::Tts;

/// One sentence's state.
#[derive(Debug, Clone)]
pub enum Sentence {
    Pending,
    Ready {
        audio: Arc<Prompt>,
        /// Wall clock when it was ready, Unix epoch microseconds.
        ready_us: i64,
        /// How long its synthesis (or cache hit) took.
        synth_ms: f64,
    },
    /// Synthesis failed: the recorded fallback is said for it.
    Failed {
        why: String,
        ready_us: i64,
    },
    /// Not said: with it the message would pass the spoken-length limit
    /// (`limits.max_message`), so the message ends before it.
    Cut,
}

/// The message as far as it is synthesised.
#[derive(Debug, Clone)]
pub struct MessageState {
    pub sentences: Vec<Sentence>,
    /// When the last sentence was done (epoch µs).
    pub done_us: Option<i64>,
}

impl MessageState {
    pub fn is_done(&self) -> bool {
        self.done_us.is_some()
    }
}

/// Wall-clock time in Unix epoch microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What a call needs of the message: its texts, the sentences as they
/// come, and the fallback said for one that cannot be synthesised.
#[derive(Debug, Clone)]
pub struct MessageAudio {
    pub texts: Arc<Vec<String>>,
    pub rx: watch::Receiver<MessageState>,
    /// The recorded fallback prompt; `None` when it cannot be loaded
    /// (then a failed sentence is skipped, and says so in the log).
    pub fallback: Option<Arc<Prompt>>,
}

/// The synthesis job of one message. [`MessageSynth::run`] blocks.
pub struct MessageSynth {
    texts: Arc<Vec<String>>,
    lang: Language,
    voice: Option<String>,
    tx: watch::Sender<MessageState>,
    /// The longest the message may be said (ms); `None`: no limit.
    max_ms: Option<u64>,
}

/// Split `text` into sentences and make the job and the receiving side.
pub fn message(
    text: &str,
    lang: Language,
    voice: Option<&str>,
    fallback: Option<Arc<Prompt>>,
) -> (MessageAudio, MessageSynth) {
    let texts = Arc::new(crate::tts::sentences::split(text, lang));
    let (tx, rx) = watch::channel(MessageState {
        sentences: vec![Sentence::Pending; texts.len()],
        done_us: None,
    });
    (
        MessageAudio {
            texts: texts.clone(),
            rx,
            fallback,
        },
        MessageSynth {
            texts,
            lang,
            voice: voice.map(str::to_string),
            tx,
            max_ms: None,
        },
    )
}

impl MessageSynth {
    /// Say at most `max_ms` of the message: the API accepts a message by
    /// an estimate of its length ([`crate::service::input::estimate`]),
    /// and this is what holds the limit when the estimate was short. The
    /// message ends at the last whole sentence within it; a first
    /// sentence longer than the limit is said with the fallback.
    pub fn with_limit(mut self, max_ms: u64) -> MessageSynth {
        self.max_ms = Some(max_ms);
        self
    }

    /// Synthesise every sentence in order, publishing each as it is done.
    /// Stops early when nobody listens any more (the notification ended).
    pub fn run(self, tts: &Tts) {
        if self.texts.is_empty() {
            self.tx.send_modify(|s| s.done_us = Some(now_us()));
        }
        let mut said_ms = 0u64;
        for (k, text) in self.texts.iter().enumerate() {
            if self.tx.is_closed() {
                return;
            }
            let started = Instant::now();
            let s = match tts.render_voice(self.lang, self.voice.as_deref(), text) {
                Ok(audio)
                    if self
                        .max_ms
                        .is_some_and(|max| said_ms + audio.duration_ms() > max) =>
                {
                    let max = self.max_ms.unwrap_or_default();
                    if k > 0 {
                        tracing::warn!(sentence = k, said_ms, max_ms = max,
                            "the message would pass the spoken-length limit: it ends before this sentence");
                        self.tx.send_modify(|st| {
                            for s in st.sentences.iter_mut().skip(k) {
                                *s = Sentence::Cut;
                            }
                            st.done_us = Some(now_us());
                        });
                        return;
                    }
                    Sentence::Failed {
                        why: format!(
                            "Message sentence 0: lasts {} s, longer than the limit of {} s",
                            audio.duration_ms().div_ceil(1000),
                            max / 1000
                        ),
                        ready_us: now_us(),
                    }
                }
                Ok(audio) => {
                    said_ms += audio.duration_ms();
                    Sentence::Ready {
                        audio,
                        ready_us: now_us(),
                        synth_ms: started.elapsed().as_secs_f64() * 1000.0,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, sentence = k, "synthesis failed; using the recorded fallback");
                    Sentence::Failed {
                        why: format!("Message sentence {k}: {e}"),
                        ready_us: now_us(),
                    }
                }
            };
            let last = k + 1 == self.texts.len();
            self.tx.send_modify(|st| {
                st.sentences[k] = s;
                if last {
                    st.done_us = Some(now_us());
                }
            });
        }
    }
}

/// Report the synthesis as it goes: `message.first` when the first
/// sentence is ready (the time to first audio), `message.sentence` with
/// `fallback` for each sentence whose synthesis failed, then
/// `message.ready` with when each sentence was ready. `started_us` is the
/// instant `at_ms` counts from (epoch µs). Returns how many sentences
/// are said with the fallback (0 when the job ended unfinished).
pub async fn report(
    mut rx: watch::Receiver<MessageState>,
    obs: &dyn Observer,
    started_us: i64,
) -> usize {
    let mut told = 0usize;
    let at = |us: i64| (us - started_us) / 1000;
    loop {
        let st = rx.borrow_and_update().clone();
        while let Some(s) = st.sentences.get(told) {
            match s {
                Sentence::Pending => break,
                Sentence::Ready {
                    audio,
                    ready_us,
                    synth_ms,
                } if told == 0 => {
                    obs.event(json!({"event": "message.first", "ready_us": ready_us,
                        "synth_ms": (synth_ms * 10.0).round() / 10.0, "audio_ms": audio.duration_ms(),
                        "at_ms": at(*ready_us)}))
                        .await;
                }
                Sentence::Ready { .. } => {}
                Sentence::Failed { why, ready_us } => {
                    obs.event(json!({"event": "message.sentence", "index": told,
                        "fallback": why, "at_ms": at(*ready_us)}))
                        .await;
                }
                Sentence::Cut => {
                    if told == 0 || !matches!(st.sentences[told - 1], Sentence::Cut) {
                        obs.event(json!({"event": "message.cut", "index": told,
                            "sentences": st.sentences.len(), "at_ms": at(now_us())}))
                            .await;
                    }
                }
            }
            told += 1;
        }
        if let Some(done) = st.done_us {
            let fallbacks: Vec<&str> = st
                .sentences
                .iter()
                .filter_map(|s| match s {
                    Sentence::Failed { why, .. } => Some(why.as_str()),
                    _ => None,
                })
                .collect();
            let (mut audio_ms, mut ready_ms) = (0u64, Vec::new());
            for s in &st.sentences {
                match s {
                    Sentence::Ready {
                        audio, ready_us, ..
                    } => {
                        audio_ms += audio.duration_ms();
                        ready_ms.push(at(*ready_us));
                    }
                    Sentence::Failed { ready_us, .. } => ready_ms.push(at(*ready_us)),
                    Sentence::Pending | Sentence::Cut => {}
                }
            }
            obs.event(
                json!({"event": "message.ready", "sentences": st.sentences.len(),
                "audio_ms": audio_ms, "sentence_ready_ms": ready_ms, "fallbacks": fallbacks,
                "done_us": done, "at_ms": at(done)}),
            )
            .await;
            return fallbacks.len();
        }
        if rx.changed().await.is_err() {
            // The job ended without finishing (nobody listened).
            return 0;
        }
    }
}

/// What a call's message player did that the runner reports or acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayerNote {
    /// A sentence was said with the recorded fallback.
    Fallback {
        sentence: usize,
        why: crate::ivr::player::FallbackWhy,
    },
    /// The whole message has been heard.
    Finished,
}

/// One call's side of the message: its [`MessagePlayer`] fed from the
/// synthesis channel, and the media ids of what it queued.
///
/// [`MessagePlayer`]: crate::ivr::player::MessagePlayer
pub struct CallMessage {
    player: crate::ivr::player::MessagePlayer<Arc<Prompt>>,
    rx: watch::Receiver<MessageState>,
    fed: Vec<bool>,
    queued: std::collections::HashSet<u64>,
    t0: tokio::time::Instant,
    closed: bool,
}

impl CallMessage {
    pub fn new(m: &MessageAudio) -> CallMessage {
        let mut rx = m.rx.clone();
        rx.mark_changed();
        let n = m.texts.len();
        CallMessage {
            player: crate::ivr::player::MessagePlayer::new(
                n,
                m.fallback.clone(),
                crate::ivr::player::STALL_MS,
            ),
            rx,
            fed: vec![false; n],
            queued: Default::default(),
            t0: tokio::time::Instant::now(),
            closed: false,
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Give the player the sentences that came since the last look.
    fn feed(&mut self) {
        let now = self.now();
        let st = self.rx.borrow_and_update().clone();
        for (k, s) in st.sentences.iter().enumerate() {
            if self.fed.get(k).copied().unwrap_or(true) {
                continue;
            }
            match s {
                Sentence::Pending => continue,
                Sentence::Ready { audio, .. } => self.player.sentence_ready(k, audio.clone(), now),
                Sentence::Failed { .. } => self.player.sentence_failed(k, now),
                Sentence::Cut => self.player.cut_from(k, now),
            }
            self.fed[k] = true;
        }
    }

    /// Wait for a sentence or the player's tick and handle it. Cancel
    /// safe: nothing is lost if another branch of a `select!` wins.
    pub async fn wait(&mut self) {
        let wake = self
            .player
            .poll_timeout()
            .map(|ms| self.t0 + std::time::Duration::from_millis(ms));
        tokio::select! {
            r = self.rx.changed(), if !self.closed => match r {
                Ok(()) => self.feed(),
                // The job is over: everything it made is in the channel.
                Err(_) => {
                    self.closed = true;
                    self.feed();
                }
            },
            _ = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            }, if wake.is_some() => {
                let now = self.now();
                self.player.handle_timeout(now);
            }
            else => std::future::pending().await,
        }
    }

    /// Play the message from its first sentence.
    pub fn play(&mut self) {
        self.feed();
        self.queued.clear();
        let now = self.now();
        self.player.play(now);
    }

    /// The call's audio was stopped.
    pub fn stop(&mut self) {
        self.player.stop();
        self.queued.clear();
    }

    /// Some of the message is queued on the media (a stop lets the
    /// sentence being said end: its `PromptFinished` will come).
    pub fn is_sounding(&self) -> bool {
        !self.queued.is_empty()
    }

    /// A media prompt finished: true if it was one of the message's.
    pub fn prompt_finished(&mut self, media_id: u64) -> bool {
        if !self.queued.remove(&media_id) {
            return false;
        }
        let now = self.now();
        self.player.segment_finished(now);
        true
    }

    /// Queue on the call what the player asks for; returns what to report.
    pub fn drain(&mut self, call: &mut crate::driver::ActiveCall) -> Vec<PlayerNote> {
        use crate::ivr::player::PlayerOutput;
        let mut notes = Vec::new();
        while let Some(o) = self.player.poll_output() {
            match o {
                PlayerOutput::Play { audio, .. } => {
                    self.queued.insert(call.play(audio));
                }
                PlayerOutput::Fallback {
                    sentence,
                    audio,
                    why,
                } => {
                    if let Some(a) = audio {
                        self.queued.insert(call.play(a));
                    }
                    notes.push(PlayerNote::Fallback { sentence, why });
                }
                PlayerOutput::Finished => notes.push(PlayerNote::Finished),
            }
        }
        notes
    }
}

//! A notification's message, synthesised part by part, the first part
//! first, while its first call is already ringing: the INVITE never waits
//! for speech. A part is a sentence, or a chunk of the first sentence:
//! that one is split at its clauses (`tts::sentences::chunks`) so the
//! first audio is a short clause, ready in about a third of the time of
//! the whole sentence, and its chunks are trimmed to join with a comma's
//! pause (`tts::join`). The synthesis runs on a blocking thread and
//! publishes each part on a `watch` channel; every call of the
//! notification feeds what it sees to its [`crate::ivr::player`].

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::watch;

use crate::ivr::dialplan::Language;
use crate::media::audio::Prompt;
use crate::runner::Observer;
use crate::tts::Tts;

/// One piece of the message synthesised on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub text: String,
    /// The sentence it is (a chunk of).
    pub sentence: usize,
    /// It goes on with the sentence of the part before it: said straight
    /// after it, with no pause between sentences.
    pub continues: bool,
}

/// One part's state.
#[derive(Debug, Clone)]
pub enum PartState {
    Pending,
    Ready {
        /// As it is played (trimmed at a joint inside a sentence).
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
    /// (`limits.max_message`), so the message ends before its sentence.
    Cut,
}

/// The message as far as it is synthesised.
#[derive(Debug, Clone)]
pub struct MessageState {
    pub parts: Vec<PartState>,
    /// When a pending part is expected to be ready (epoch µs): set as its
    /// synthesis starts, from how fast the part before was made; `None`
    /// when that is not known (it came from the cache).
    pub etas: Vec<Option<i64>>,
    /// When the last part was done (epoch µs).
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

/// What a call needs of the message: its parts, their audio as it comes,
/// and the fallback said for one that cannot be synthesised.
#[derive(Debug, Clone)]
pub struct MessageAudio {
    pub parts: Arc<Vec<Part>>,
    pub rx: watch::Receiver<MessageState>,
    /// The recorded fallback prompt; `None` when it cannot be loaded
    /// (then a failed part is skipped, and says so in the log).
    pub fallback: Option<Arc<Prompt>>,
}

impl MessageAudio {
    /// Wait until the first part is ready or failed (or the message is
    /// done, or `limit` has passed).
    pub async fn first_settled(&self, limit: std::time::Duration) {
        let mut rx = self.rx.clone();
        let settled = rx.wait_for(|s| {
            s.is_done()
                || s.parts
                    .first()
                    .is_some_and(|p| !matches!(p, PartState::Pending))
        });
        let _ = tokio::time::timeout(limit, settled).await;
    }

    /// How many sentences the message has.
    pub fn sentences(&self) -> usize {
        self.parts.last().map_or(0, |p| p.sentence + 1)
    }
}

/// The synthesis job of one message. [`MessageSynth::run`] blocks.
pub struct MessageSynth {
    parts: Arc<Vec<Part>>,
    lang: Language,
    voice: Option<String>,
    tx: watch::Sender<MessageState>,
    /// The longest the message may be said (ms); `None`: no limit.
    max_ms: Option<u64>,
}

/// The parts of `text`: its sentences, the first one in chunks. Only the
/// first is split: the first audio waits for it alone, and every later
/// sentence is synthesised while the ones before it are heard, so
/// splitting it would only change its intonation.
pub fn parts(text: &str, lang: Language) -> Vec<Part> {
    let mut parts = Vec::new();
    for (s, sentence) in crate::tts::sentences::split(text, lang)
        .into_iter()
        .enumerate()
    {
        let chunks = if s == 0 {
            crate::tts::sentences::chunks(&sentence, lang)
        } else {
            vec![sentence]
        };
        for (c, text) in chunks.into_iter().enumerate() {
            parts.push(Part {
                text,
                sentence: s,
                continues: c > 0,
            });
        }
    }
    parts
}

/// Split `text` into parts and make the job and the receiving side.
pub fn message(
    text: &str,
    lang: Language,
    voice: Option<&str>,
    fallback: Option<Arc<Prompt>>,
) -> (MessageAudio, MessageSynth) {
    let parts = Arc::new(parts(text, lang));
    let (tx, rx) = watch::channel(MessageState {
        parts: vec![PartState::Pending; parts.len()],
        etas: vec![None; parts.len()],
        done_us: None,
    });
    (
        MessageAudio {
            parts: parts.clone(),
            rx,
            fallback,
        },
        MessageSynth {
            parts,
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
    /// message ends at the last whole sentence within it; a part of the
    /// first sentence that would pass the limit is said with the
    /// fallback (the chunks before it may have been heard already).
    pub fn with_limit(mut self, max_ms: u64) -> MessageSynth {
        self.max_ms = Some(max_ms);
        self
    }

    /// Synthesise every part in order, publishing each as it is done.
    /// Stops early when nobody listens any more (the notification ended).
    pub fn run(self, tts: &Tts) {
        if self.parts.is_empty() {
            self.tx.send_modify(|s| s.done_us = Some(now_us()));
        }
        let mut said_ms = 0u64;
        // The silence (samples) the part before ended with, when it was
        // said and the next part goes on with its sentence.
        let mut after: Option<usize> = None;
        // A sentence one of whose chunks passed the limit: its later
        // chunks are not said either (one fallback for the whole run).
        let mut over: Option<usize> = None;
        // Engine time per character of the last part synthesised (not
        // from the cache): what the next part's expected time is made of.
        let mut ms_per_char: Option<f64> = None;
        for (k, part) in self.parts.iter().enumerate() {
            if self.tx.is_closed() {
                return;
            }
            if over == Some(part.sentence) {
                let st = PartState::Failed {
                    why: format!(
                        "Message sentence {}: an earlier part of it passed the spoken-length limit",
                        part.sentence
                    ),
                    ready_us: now_us(),
                };
                let last = k + 1 == self.parts.len();
                self.tx.send_modify(|m| {
                    m.parts[k] = st;
                    if last {
                        m.done_us = Some(now_us());
                    }
                });
                continue;
            }
            let started = Instant::now();
            let joins_next = self.parts.get(k + 1).is_some_and(|p| p.continues);
            let rendered = tts
                .render_voice(self.lang, self.voice.as_deref(), &part.text)
                .map(|audio| {
                    if !part.continues && !joins_next {
                        after = None;
                        return audio;
                    }
                    let before = if part.continues { after } else { None };
                    let (pcm, trail) = crate::tts::join::for_joint(&audio.pcm, before, joins_next);
                    after = Some(trail);
                    if pcm.len() == audio.pcm.len() {
                        audio
                    } else {
                        Prompt::from_pcm(audio.name.clone(), pcm)
                    }
                });
            let s = match rendered {
                Ok(audio)
                    if self
                        .max_ms
                        .is_some_and(|max| said_ms + audio.duration_ms() > max) =>
                {
                    let max = self.max_ms.unwrap_or_default();
                    if k > 0 && !part.continues {
                        tracing::warn!(sentence = part.sentence, said_ms, max_ms = max,
                            "the message would pass the spoken-length limit: it ends before this sentence");
                        self.tx.send_modify(|st| {
                            for s in st.parts.iter_mut().skip(k) {
                                *s = PartState::Cut;
                            }
                            st.done_us = Some(now_us());
                        });
                        return;
                    }
                    after = None;
                    over = Some(part.sentence);
                    PartState::Failed {
                        why: format!(
                            "Message sentence {}: lasts over {} s, longer than the limit of {} s",
                            part.sentence,
                            (said_ms + audio.duration_ms()).div_ceil(1000),
                            max / 1000
                        ),
                        ready_us: now_us(),
                    }
                }
                Ok(audio) => {
                    said_ms += audio.duration_ms();
                    PartState::Ready {
                        audio,
                        ready_us: now_us(),
                        synth_ms: started.elapsed().as_secs_f64() * 1000.0,
                    }
                }
                Err(e) => {
                    after = None;
                    tracing::error!(error = %e, sentence = part.sentence, part = k,
                        "synthesis failed; using the recorded fallback");
                    PartState::Failed {
                        why: format!("Message sentence {}: {e}", part.sentence),
                        ready_us: now_us(),
                    }
                }
            };
            if let PartState::Ready { synth_ms, .. } = &s {
                // A cache hit says nothing of the engine's speed.
                if *synth_ms >= ENGINE_MIN_MS {
                    ms_per_char = Some(synth_ms / part.text.chars().count().max(1) as f64);
                }
            }
            let last = k + 1 == self.parts.len();
            // The next part's synthesis starts now: when it should end.
            let eta = match (ms_per_char, self.parts.get(k + 1)) {
                (Some(r), Some(next)) => {
                    let ms = r * next.text.chars().count() as f64 * ETA_MARGIN + ETA_SLACK_MS;
                    Some(now_us() + (ms * 1000.0) as i64)
                }
                _ => None,
            };
            self.tx.send_modify(|st| {
                st.parts[k] = s;
                if let Some(e) = st.etas.get_mut(k + 1) {
                    *e = eta;
                }
                if last {
                    st.done_us = Some(now_us());
                }
            });
        }
    }
}

/// A part made faster than this came from the cache.
const ENGINE_MIN_MS: f64 = 5.0;
/// A part's expected synthesis time, from the part before's time per
/// character: that one's engine start-up counted per character already
/// overstates a longer part, and this covers a busier machine.
const ETA_MARGIN: f64 = 1.25;
const ETA_SLACK_MS: f64 = 30.0;

impl crate::ivr::player::Timed for Arc<Prompt> {
    fn duration_ms(&self) -> u64 {
        Prompt::duration_ms(self)
    }
}

/// Report the synthesis as it goes: `message.first` when the first part
/// is ready (the time to first audio), `message.sentence` with `fallback`
/// for each part whose synthesis failed, then `message.ready` with when
/// each sentence (its last part) was ready. `started_us` is the instant
/// `at_ms` counts from (epoch µs). Returns how many parts are said with
/// the fallback (0 when the job ended unfinished).
pub async fn report(m: MessageAudio, obs: &dyn Observer, started_us: i64) -> usize {
    let MessageAudio { parts, mut rx, .. } = m;
    let mut told = 0usize;
    let at = |us: i64| (us - started_us) / 1000;
    loop {
        let st = rx.borrow_and_update().clone();
        while let Some(s) = st.parts.get(told) {
            let sentence = parts.get(told).map_or(told, |p| p.sentence);
            match s {
                PartState::Pending => break,
                PartState::Ready {
                    audio,
                    ready_us,
                    synth_ms,
                } if told == 0 => {
                    let whole = parts.get(1).is_none_or(|p| !p.continues);
                    obs.event(json!({"event": "message.first", "ready_us": ready_us,
                        "synth_ms": (synth_ms * 10.0).round() / 10.0, "audio_ms": audio.duration_ms(),
                        "whole_sentence": whole, "at_ms": at(*ready_us)}))
                        .await;
                }
                PartState::Ready { .. } => {}
                PartState::Failed { why, ready_us } => {
                    obs.event(
                        json!({"event": "message.sentence", "index": sentence, "part": told,
                        "fallback": why, "at_ms": at(*ready_us)}),
                    )
                    .await;
                }
                PartState::Cut => {
                    if told == 0 || !matches!(st.parts[told - 1], PartState::Cut) {
                        obs.event(json!({"event": "message.cut", "index": sentence,
                            "sentences": parts.last().map_or(0, |p| p.sentence + 1),
                            "at_ms": at(now_us())}))
                            .await;
                    }
                }
            }
            told += 1;
        }
        if let Some(done) = st.done_us {
            let fallbacks: Vec<&str> = st
                .parts
                .iter()
                .filter_map(|s| match s {
                    PartState::Failed { why, .. } => Some(why.as_str()),
                    _ => None,
                })
                .collect();
            let sentences = parts.last().map_or(0, |p| p.sentence + 1);
            let mut audio_ms = 0u64;
            // When each sentence was ready: its last part's time; none
            // for a sentence cut off.
            let mut ready: Vec<Option<i64>> = vec![None; sentences];
            let mut part_ms = Vec::new();
            for (k, s) in st.parts.iter().enumerate() {
                let sentence = parts.get(k).map_or(k, |p| p.sentence);
                let t = match s {
                    PartState::Ready {
                        audio, ready_us, ..
                    } => {
                        audio_ms += audio.duration_ms();
                        Some(*ready_us)
                    }
                    PartState::Failed { ready_us, .. } => Some(*ready_us),
                    PartState::Pending | PartState::Cut => None,
                };
                if let Some(t) = t {
                    part_ms.push(at(t));
                }
                if let Some(r) = ready.get_mut(sentence) {
                    *r = t;
                }
            }
            let ready_ms: Vec<i64> = ready.into_iter().flatten().map(at).collect();
            obs.event(json!({"event": "message.ready", "sentences": sentences,
                "parts": st.parts.len(), "audio_ms": audio_ms, "sentence_ready_ms": ready_ms,
                "part_ready_ms": part_ms, "fallbacks": fallbacks, "done_us": done, "at_ms": at(done)}))
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
    /// A part was said with the recorded fallback.
    Fallback {
        sentence: usize,
        part: usize,
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
    parts: Arc<Vec<Part>>,
    rx: watch::Receiver<MessageState>,
    fed: Vec<bool>,
    /// Expected times already given to the player.
    fed_eta: Vec<Option<i64>>,
    queued: std::collections::HashSet<u64>,
    t0: tokio::time::Instant,
    closed: bool,
}

impl CallMessage {
    pub fn new(m: &MessageAudio) -> CallMessage {
        let mut rx = m.rx.clone();
        rx.mark_changed();
        let n = m.parts.len();
        CallMessage {
            player: crate::ivr::player::MessagePlayer::new(
                n,
                m.fallback.clone(),
                crate::ivr::player::STALL_MS,
            )
            .joined(&m.parts.iter().map(|p| p.continues).collect::<Vec<_>>()),
            parts: m.parts.clone(),
            rx,
            fed: vec![false; n],
            fed_eta: vec![None; n],
            queued: Default::default(),
            t0: tokio::time::Instant::now(),
            closed: false,
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Give the player the parts that came since the last look.
    fn feed(&mut self) {
        let now = self.now();
        let st = self.rx.borrow_and_update().clone();
        let wall = now_us();
        for (k, eta) in st.etas.iter().enumerate() {
            if let (Some(e), Some(fed)) = (eta, self.fed_eta.get_mut(k)) {
                if *fed != Some(*e) {
                    *fed = Some(*e);
                    let at = now + (e - wall).max(0) as u64 / 1000;
                    self.player.part_eta(k, at, now);
                }
            }
        }
        for (k, s) in st.parts.iter().enumerate() {
            if self.fed.get(k).copied().unwrap_or(true) {
                continue;
            }
            match s {
                PartState::Pending => continue,
                PartState::Ready { audio, .. } => self.player.part_ready(k, audio.clone(), now),
                PartState::Failed { .. } => self.player.part_failed(k, now),
                PartState::Cut => self.player.cut_from(k, now),
            }
            self.fed[k] = true;
        }
    }

    /// Wait for a part or the player's tick and handle it. Cancel
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

    /// Play the message from its first part.
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
    /// part being said end: its `PromptFinished` will come).
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
                PlayerOutput::Fallback { part, audio, why } => {
                    if let Some(a) = audio {
                        self.queued.insert(call.play(a));
                    }
                    let sentence = self.parts.get(part).map_or(part, |p| p.sentence);
                    notes.push(PlayerNote::Fallback {
                        sentence,
                        part,
                        why,
                    });
                }
                PlayerOutput::Finished => notes.push(PlayerNote::Finished),
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_sentence_is_split_and_its_chunks_go_on_with_it() {
        let p = parts(
            "ホストダブリュー、イー、ビー、イチで重大な障害が発生しました。\
             ダブリュー、イー、ビー、イチのウェブサーバが、三分前から応答していません。\
             至急対応をお願いします。",
            Language::Ja,
        );
        let got: Vec<(&str, usize, bool)> = p
            .iter()
            .map(|p| (p.text.as_str(), p.sentence, p.continues))
            .collect();
        assert_eq!(
            got,
            [
                ("ホストダブリュー、", 0, false),
                ("イー、ビー、イチで重大な障害が発生しました。", 0, true),
                (
                    "ダブリュー、イー、ビー、イチのウェブサーバが、三分前から応答していません。",
                    1,
                    false
                ),
                ("至急対応をお願いします。", 2, false),
            ]
        );
        let (m, _) = message("一文だけ。", Language::Ja, None, None);
        assert_eq!(m.sentences(), 1);
        assert_eq!(m.parts.len(), 1);
        let (m, _) = message("", Language::En, None, None);
        assert_eq!((m.sentences(), m.parts.len()), (0, 0));
    }
}

//! Answering-machine detection on the first seconds of received audio,
//! after the method of Asterisk's AMD: a person answers with a short word
//! ("hello") and waits; a machine talks for long, in many words, or says
//! nothing at all at first. Sans-IO: feed 8 kHz frames with their time.

use std::time::Duration;

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmdResult {
    Human,
    Machine,
    /// No decision within the analysis time; treated as a person.
    NotSure,
}

/// Why the verdict was reached (Asterisk's AMDCAUSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmdCause {
    InitialSilence,
    LongGreeting,
    MaxWords,
    HumanSilence,
    TooLong,
}

/// Thresholds, in the dialplan's `[amd]` terms.
#[derive(Debug, Clone, Copy)]
pub struct AmdParams {
    pub initial_silence: Duration,
    pub greeting: Duration,
    pub after_greeting_silence: Duration,
    pub total_analysis: Duration,
    pub min_word_length: Duration,
    pub between_words_silence: Duration,
    pub maximum_words: u32,
    /// Mean absolute amplitude (16-bit) below which a frame is silence.
    pub silence_threshold: f32,
}

impl Default for AmdParams {
    fn default() -> Self {
        AmdParams {
            initial_silence: Duration::from_millis(2500),
            greeting: Duration::from_millis(1500),
            after_greeting_silence: Duration::from_millis(800),
            total_analysis: Duration::from_millis(5000),
            min_word_length: Duration::from_millis(100),
            between_words_silence: Duration::from_millis(50),
            maximum_words: 3,
            silence_threshold: 256.0,
        }
    }
}

/// The detector.
#[derive(Debug)]
pub struct Amd {
    p: AmdParams,
    elapsed_ms: u64,
    voice_ms: u64,
    silence_ms: u64,
    in_word: bool,
    words: u32,
    /// Total voiced time since the first word (the greeting so far).
    greeting_ms: u64,
    heard_voice: bool,
    result: Option<(AmdResult, AmdCause)>,
}

impl Amd {
    pub fn new(p: AmdParams) -> Amd {
        Amd {
            p,
            elapsed_ms: 0,
            voice_ms: 0,
            silence_ms: 0,
            in_word: false,
            words: 0,
            greeting_ms: 0,
            heard_voice: false,
            result: None,
        }
    }

    pub fn result(&self) -> Option<(AmdResult, AmdCause)> {
        self.result
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// Feed a frame; returns the verdict once it is reached.
    pub fn feed(&mut self, frame: &[i16]) -> Option<(AmdResult, AmdCause)> {
        if self.result.is_some() || frame.is_empty() {
            return self.result;
        }
        let frame_ms = (frame.len() as u64 * 1000) / 8000;
        self.elapsed_ms += frame_ms;
        let level = frame.iter().map(|&s| (s as f32).abs()).sum::<f32>() / frame.len() as f32;
        if level < self.p.silence_threshold {
            self.silence_ms += frame_ms;
            self.voice_ms = 0;
            if self.in_word && self.silence_ms >= Self::ms(self.p.between_words_silence) {
                self.in_word = false;
            }
            if !self.heard_voice && self.silence_ms >= Self::ms(self.p.initial_silence) {
                return self.decide(AmdResult::Machine, AmdCause::InitialSilence);
            }
            if self.heard_voice && self.silence_ms >= Self::ms(self.p.after_greeting_silence) {
                return self.decide(AmdResult::Human, AmdCause::HumanSilence);
            }
        } else {
            self.voice_ms += frame_ms;
            self.silence_ms = 0;
            if self.heard_voice {
                self.greeting_ms += frame_ms;
            }
            if !self.in_word && self.voice_ms >= Self::ms(self.p.min_word_length) {
                self.in_word = true;
                self.words += 1;
                if !self.heard_voice {
                    self.heard_voice = true;
                    self.greeting_ms = self.voice_ms;
                }
                if self.words >= self.p.maximum_words {
                    return self.decide(AmdResult::Machine, AmdCause::MaxWords);
                }
            }
            if self.heard_voice && self.greeting_ms >= Self::ms(self.p.greeting) {
                return self.decide(AmdResult::Machine, AmdCause::LongGreeting);
            }
        }
        if self.elapsed_ms >= Self::ms(self.p.total_analysis) {
            return self.decide(AmdResult::NotSure, AmdCause::TooLong);
        }
        None
    }

    fn decide(&mut self, r: AmdResult, c: AmdCause) -> Option<(AmdResult, AmdCause)> {
        self.result = Some((r, c));
        self.result
    }
}

/// Run the detector over a whole 8 kHz buffer in 20 ms frames.
pub fn classify(pcm: &[i16], p: AmdParams) -> (AmdResult, AmdCause) {
    let mut amd = Amd::new(p);
    for f in pcm.chunks(160) {
        if let Some(r) = amd.feed(f) {
            return r;
        }
    }
    // Audio ended before a decision: whatever was heard decides.
    if amd.heard_voice {
        (AmdResult::Human, AmdCause::HumanSilence)
    } else {
        (AmdResult::Machine, AmdCause::InitialSilence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(ms: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| ((i as f32 * 0.3).sin() * 4000.0) as i16)
            .collect()
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    #[test]
    fn short_hello_then_silence_is_human() {
        let mut a = [silence(300), voice(500), silence(1500)].concat();
        a.extend(silence(2000));
        assert_eq!(
            classify(&a, AmdParams::default()),
            (AmdResult::Human, AmdCause::HumanSilence)
        );
    }

    #[test]
    fn long_greeting_many_words_or_silence_is_machine() {
        let long = [silence(200), voice(2000)].concat();
        assert_eq!(
            classify(&long, AmdParams::default()).1,
            AmdCause::LongGreeting
        );
        let words = [
            voice(200),
            silence(100),
            voice(200),
            silence(100),
            voice(200),
        ]
        .concat();
        assert_eq!(
            classify(&words, AmdParams::default()),
            (AmdResult::Machine, AmdCause::MaxWords)
        );
        assert_eq!(
            classify(&silence(3000), AmdParams::default()),
            (AmdResult::Machine, AmdCause::InitialSilence)
        );
    }
}

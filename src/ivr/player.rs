//! The message player, sans-IO: says a notification's message part by
//! part while the parts are still being synthesised (the call is dialled
//! before the speech is ready). A part is a sentence or a chunk of one
//! (`crate::speech::Part`); the chunks of a sentence come trimmed to join
//! with a comma's pause, so the player only has to queue each the moment
//! it can, behind the one before.
//!
//! It is fed what happens (a part is ready or failed, "play the message"
//! when someone answers or asks for it again, a queued segment finished
//! playing, the clock) and yields what to queue on the call's media:
//! whole parts, in order. The media plays queued segments back to back,
//! sample after sample, paces them into 20 ms frames and sends silence
//! whenever its queue is empty. A part ready while the one before it is
//! still heard is queued at once, so it follows with no gap; one that is
//! not ready yet is heard as a pause after the whole part before it: a
//! part is never cut, never skipped, never played out of order, and
//! [`PlayerOutput::Finished`] (after which the menu speaks) comes only
//! once the last part has been heard.
//!
//! A chunk of a sentence (a part that the next part goes on with, see
//! [`MessagePlayer::joined`]) is held while the rest of its sentence is
//! still being synthesised, until the next chunk is ready or expected
//! ([`MessagePlayer::part_eta`]) by the time this one has been heard,
//! give or take [`LATE_JOINT_MS`]: a late chunk would otherwise be heard
//! as silence in the middle of the sentence. Held is silence before the
//! sentence, where a pause sounds natural; a chunk that never comes
//! ([`STALL_MS`]) has the whole sentence said with the fallback, never
//! half of it.
//!
//! Order of calls: `new` (then `joined`); any number of `part_ready` /
//! `part_eta` / `part_failed` / `cut_from` (before or after `play`);
//! `play` to start (again); after every input drain `poll_output`, then
//! sleep until `poll_timeout` and call `handle_timeout` (the tick).

use std::collections::VecDeque;

/// How long the player waits, with nothing left to play, for a part
/// still being synthesised before it says the recorded fallback for it
/// instead (an engine that hangs must not hold the callee in silence).
pub const STALL_MS: u64 = 5_000;

/// How much later than the chunk before it ends the next chunk of a
/// sentence may be expected and that chunk still start: the joint's own
/// pause (`tts::join::JOIN_PAUSE_MS`, 520 ms with Open JTalk) grows by at
/// most this, staying under the 0.64 s pause between two sentences.
pub const LATE_JOINT_MS: u64 = 100;

/// Audio whose length the player knows (to hold a chunk only as long as
/// the next one needs).
pub trait Timed {
    fn duration_ms(&self) -> u64;
}

#[derive(Debug, Clone)]
enum Slot<A> {
    Pending,
    Ready(A),
    Failed,
    /// Past the spoken-length limit: the message ends before it.
    Cut,
}

/// Why a part was said with the recorded fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackWhy {
    /// Its synthesis failed.
    Failed,
    /// It was not ready within [`STALL_MS`] of the audio running out.
    Late,
}

/// What to do with the call's audio.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayerOutput<A> {
    /// Queue this part's audio, whole, behind what is queued.
    Play { part: usize, audio: A },
    /// The part is said with the recorded fallback: queue `audio`
    /// when there is one (a run of failed parts says it once; `None`
    /// then, and when no fallback could be loaded).
    Fallback {
        part: usize,
        audio: Option<A>,
        why: FallbackWhy,
    },
    /// The whole message has been played: what follows (the menu) may
    /// be queued now.
    Finished,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Idle,
    Playing {
        /// The next part to queue.
        next: usize,
        /// Segments queued on the media and not finished yet.
        queued: usize,
        /// Since when the media has had nothing to play while `next`
        /// is pending.
        waiting_since: Option<u64>,
        /// The fallback was queued for the part before `next`.
        in_fallback: bool,
        /// `next` is ready but held for the chunk after it: look again
        /// then (it would be in time if started then).
        hold_until: Option<u64>,
        /// When what is queued will have been heard (estimated).
        sounding_until: u64,
    },
}

/// Whether a ready part may be queued now.
enum Hold {
    Go,
    /// Until the next chunk comes, or this time.
    Until(Option<u64>),
}

/// Plays one message of `n` parts; see the module docs.
#[derive(Debug)]
pub struct MessagePlayer<A> {
    slots: Vec<Slot<A>>,
    /// Part k goes on with the sentence of part k - 1.
    joins: Vec<bool>,
    /// When a pending part is expected to be ready.
    etas: Vec<Option<u64>>,
    fallback: Option<A>,
    stall_ms: u64,
    state: State,
    out: VecDeque<PlayerOutput<A>>,
}

impl<A: Clone + Timed> MessagePlayer<A> {
    /// A message of `parts` parts, none ready yet; `fallback` is said
    /// for parts that cannot be synthesised.
    pub fn new(parts: usize, fallback: Option<A>, stall_ms: u64) -> Self {
        MessagePlayer {
            slots: vec![Slot::Pending; parts],
            joins: vec![false; parts],
            etas: vec![None; parts],
            fallback,
            stall_ms,
            state: State::Idle,
            out: VecDeque::new(),
        }
    }

    /// Which parts go on with the sentence of the part before them
    /// (`continues[k]`; missing ones do not).
    pub fn joined(mut self, continues: &[bool]) -> Self {
        for (j, c) in self.joins.iter_mut().zip(continues) {
            *j = *c;
        }
        self
    }

    /// Part `k` is expected to be ready at `at_ms`.
    pub fn part_eta(&mut self, k: usize, at_ms: u64, now_ms: u64) {
        if let Some(e) = self.etas.get_mut(k) {
            *e = Some(at_ms);
            self.pump(now_ms);
        }
    }

    /// Part `k` is synthesised.
    pub fn part_ready(&mut self, k: usize, audio: A, now_ms: u64) {
        if let Some(s) = self.slots.get_mut(k) {
            *s = Slot::Ready(audio);
            self.pump(now_ms);
        }
    }

    /// Part `k` cannot be synthesised.
    pub fn part_failed(&mut self, k: usize, now_ms: u64) {
        if let Some(s) = self.slots.get_mut(k) {
            if matches!(s, Slot::Pending) {
                *s = Slot::Failed;
            }
            self.pump(now_ms);
        }
    }

    /// The message ends before part `k` (the parts from `k` on
    /// would take it past the spoken-length limit).
    pub fn cut_from(&mut self, k: usize, now_ms: u64) {
        for s in self.slots.iter_mut().skip(k) {
            *s = Slot::Cut;
        }
        self.pump(now_ms);
    }

    /// Play the message from its first part (answered, or asked for
    /// again). The caller has stopped whatever was playing before.
    pub fn play(&mut self, now_ms: u64) {
        self.state = State::Playing {
            next: 0,
            queued: 0,
            waiting_since: None,
            in_fallback: false,
            hold_until: None,
            sounding_until: now_ms,
        };
        self.pump(now_ms);
    }

    /// The caller stopped the audio (a key was pressed): nothing queued
    /// is left, and nothing more is queued until the next `play`.
    pub fn stop(&mut self) {
        self.state = State::Idle;
        self.out.clear();
    }

    /// One segment this player queued has been played out.
    pub fn segment_finished(&mut self, now_ms: u64) {
        if let State::Playing { queued, .. } = &mut self.state {
            *queued = queued.saturating_sub(1);
        }
        self.pump(now_ms);
    }

    /// The tick: a part that kept the callee waiting too long is said
    /// with the fallback.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let State::Playing {
            next,
            waiting_since,
            ..
        } = self.state
        else {
            return;
        };
        if waiting_since.is_some_and(|since| now_ms >= since + self.stall_ms) {
            self.fallback_for(next, FallbackWhy::Late);
        }
        // A held chunk may be in time now.
        self.pump(now_ms);
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Playing {
                waiting_since,
                hold_until,
                ..
            } => match (waiting_since.map(|t| t + self.stall_ms), hold_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            _ => None,
        }
    }

    pub fn poll_output(&mut self) -> Option<PlayerOutput<A>> {
        self.out.pop_front()
    }

    /// The message is being played (started and not finished or stopped).
    pub fn is_playing(&self) -> bool {
        self.state != State::Idle
    }

    /// Every part is ready or failed.
    pub fn all_resolved(&self) -> bool {
        self.slots.iter().all(|s| !matches!(s, Slot::Pending))
    }

    /// Say the fallback for part `k` (once per run of such parts)
    /// and move past it.
    fn fallback_for(&mut self, k: usize, why: FallbackWhy) {
        let State::Playing {
            next,
            queued,
            waiting_since,
            in_fallback,
            hold_until,
            ..
        } = &mut self.state
        else {
            return;
        };
        *hold_until = None;
        let audio = if *in_fallback {
            None
        } else {
            self.fallback.clone()
        };
        if audio.is_some() {
            *queued += 1;
        }
        *in_fallback = true;
        *next = k + 1;
        *waiting_since = None;
        self.out.push_back(PlayerOutput::Fallback {
            part: k,
            audio,
            why,
        });
    }

    /// Queue every part that can be queued now, in order.
    fn pump(&mut self, now_ms: u64) {
        loop {
            let hold = match &self.state {
                State::Playing { next, .. } => self.hold(*next, now_ms),
                State::Idle => return,
            };
            let State::Playing {
                next,
                queued,
                waiting_since,
                in_fallback,
                hold_until,
                sounding_until,
            } = &mut self.state
            else {
                return;
            };
            let k = *next;
            *hold_until = None;
            // The rest of a sentence whose start was said with the
            // fallback: never half a sentence.
            if *in_fallback && self.joins.get(k).copied().unwrap_or(false) {
                let why = match self.slots.get(k) {
                    Some(Slot::Failed) => FallbackWhy::Failed,
                    _ => FallbackWhy::Late,
                };
                self.fallback_for(k, why);
                continue;
            }
            match self.slots.get(k) {
                None | Some(Slot::Cut) => {
                    if *queued == 0 {
                        self.state = State::Idle;
                        self.out.push_back(PlayerOutput::Finished);
                    }
                    return;
                }
                Some(Slot::Ready(_)) if matches!(hold, Hold::Until(_)) => {
                    if let Hold::Until(t) = hold {
                        *hold_until = t;
                    }
                    if *queued == 0 && waiting_since.is_none() {
                        *waiting_since = Some(now_ms);
                    }
                    return;
                }
                Some(Slot::Ready(a)) => {
                    *sounding_until = (*sounding_until).max(now_ms) + a.duration_ms();
                    self.out.push_back(PlayerOutput::Play {
                        part: k,
                        audio: a.clone(),
                    });
                    *queued += 1;
                    *next += 1;
                    *waiting_since = None;
                    *in_fallback = false;
                }
                Some(Slot::Failed) => self.fallback_for(k, FallbackWhy::Failed),
                Some(Slot::Pending) => {
                    // The wait for it counts once the callee has nothing
                    // left to hear.
                    if *queued == 0 && waiting_since.is_none() {
                        *waiting_since = Some(now_ms);
                    }
                    return;
                }
            }
        }
    }

    /// May part `k` (ready) be queued now, or is it held for the chunk
    /// after it?
    fn hold(&self, k: usize, now_ms: u64) -> Hold {
        let State::Playing { sounding_until, .. } = self.state else {
            return Hold::Go;
        };
        let (Some(Slot::Ready(a)), Some(true), Some(Slot::Pending)) = (
            self.slots.get(k),
            self.joins.get(k + 1),
            self.slots.get(k + 1),
        ) else {
            return Hold::Go;
        };
        // When it would end if queued now.
        let ends = sounding_until.max(now_ms) + a.duration_ms() + LATE_JOINT_MS;
        match self.etas.get(k + 1).copied().flatten() {
            Some(eta) if eta <= ends => Hold::Go,
            // In time if started then (nothing else queued by then).
            Some(eta) => Hold::Until(Some(now_ms + (eta - ends))),
            None => Hold::Until(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = MessagePlayer<&'static str>;

    /// Every test part lasts a second (as heard).
    impl Timed for &'static str {
        fn duration_ms(&self) -> u64 {
            1_000
        }
    }
    const FB: &str = "fallback";

    fn drain(p: &mut P) -> Vec<PlayerOutput<&'static str>> {
        std::iter::from_fn(|| p.poll_output()).collect()
    }

    fn play(k: usize, a: &'static str) -> PlayerOutput<&'static str> {
        PlayerOutput::Play { part: k, audio: a }
    }

    /// Plays the queued segments out one by one, as the media would,
    /// and returns everything heard until `Finished` (or nothing left).
    fn play_out(p: &mut P, mut queued: usize, now: u64) -> Vec<PlayerOutput<&'static str>> {
        let mut heard = Vec::new();
        while queued > 0 {
            p.segment_finished(now);
            queued -= 1;
            for o in drain(p) {
                if matches!(
                    o,
                    PlayerOutput::Play { .. } | PlayerOutput::Fallback { audio: Some(_), .. }
                ) {
                    queued += 1;
                }
                heard.push(o);
            }
        }
        heard
    }

    #[test]
    fn all_ready_at_answer_plays_in_order_then_finishes() {
        let mut p = P::new(3, Some(FB), STALL_MS);
        p.part_ready(0, "s0", 0);
        p.part_ready(2, "s2", 0);
        p.part_ready(1, "s1", 0);
        assert!(drain(&mut p).is_empty(), "nothing before the answer");
        p.play(100);
        assert_eq!(drain(&mut p), [play(0, "s0"), play(1, "s1"), play(2, "s2")]);
        // Not finished while anything is still being heard.
        p.segment_finished(1000);
        p.segment_finished(2000);
        assert!(drain(&mut p).is_empty());
        assert!(p.is_playing());
        p.segment_finished(3000);
        assert_eq!(drain(&mut p), [PlayerOutput::Finished]);
        assert!(!p.is_playing());
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn answered_before_the_first_sentence_waits_then_plays_whole_sentences() {
        let mut p = P::new(3, Some(FB), STALL_MS);
        p.play(0);
        assert!(drain(&mut p).is_empty(), "silence: nothing is ready");
        // Sentence 1 first: it must wait for sentence 0.
        p.part_ready(1, "s1", 50);
        assert!(drain(&mut p).is_empty(), "never out of order");
        p.part_ready(0, "s0", 120);
        assert_eq!(drain(&mut p), [play(0, "s0"), play(1, "s1")]);
        // Both play out while sentence 2 is still being made: the media
        // sends silence, and nothing (no menu) is queued meanwhile.
        p.segment_finished(900);
        p.segment_finished(1800);
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.poll_timeout(), Some(1800 + STALL_MS));
        p.handle_timeout(1900);
        assert!(drain(&mut p).is_empty(), "the tick before the stall");
        p.part_ready(2, "s2", 2000);
        assert_eq!(drain(&mut p), [play(2, "s2")]);
        assert_eq!(p.poll_timeout(), None);
        p.segment_finished(2600);
        assert_eq!(drain(&mut p), [PlayerOutput::Finished]);
    }

    #[test]
    fn a_failed_sentence_says_the_fallback_once_per_run() {
        let mut p = P::new(5, Some(FB), STALL_MS);
        p.part_ready(0, "s0", 0);
        p.part_failed(1, 0);
        p.part_failed(2, 0);
        p.part_ready(3, "s3", 0);
        p.part_failed(4, 0);
        // A failure reported for a ready sentence changes nothing.
        p.part_failed(0, 0);
        p.play(0);
        let fb = |k, audio| PlayerOutput::Fallback {
            part: k,
            audio,
            why: FallbackWhy::Failed,
        };
        assert_eq!(
            drain(&mut p),
            [
                play(0, "s0"),
                fb(1, Some(FB)),
                fb(2, None),
                play(3, "s3"),
                fb(4, Some(FB))
            ]
        );
        assert_eq!(play_out(&mut p, 4, 10), [PlayerOutput::Finished]);
    }

    #[test]
    fn a_sentence_that_never_comes_is_said_with_the_fallback_after_the_stall() {
        let mut p = P::new(2, Some(FB), 3_000);
        p.part_ready(0, "s0", 0);
        p.play(0);
        assert_eq!(drain(&mut p), [play(0, "s0")]);
        p.segment_finished(1_000);
        assert_eq!(p.poll_timeout(), Some(4_000));
        p.handle_timeout(4_000);
        assert_eq!(
            drain(&mut p),
            [PlayerOutput::Fallback {
                part: 1,
                audio: Some(FB),
                why: FallbackWhy::Late
            }]
        );
        // Ready too late for this time round: not played twice.
        p.part_ready(1, "s1", 4_100);
        assert!(drain(&mut p).is_empty());
        p.segment_finished(6_000);
        assert_eq!(drain(&mut p), [PlayerOutput::Finished]);
        // A repeat says it properly.
        p.play(7_000);
        assert_eq!(drain(&mut p), [play(0, "s0"), play(1, "s1")]);
    }

    #[test]
    fn no_fallback_audio_still_finishes() {
        let mut p = P::new(2, None, STALL_MS);
        p.part_failed(0, 0);
        p.part_ready(1, "s1", 0);
        p.play(0);
        assert_eq!(
            drain(&mut p),
            [
                PlayerOutput::Fallback {
                    part: 0,
                    audio: None,
                    why: FallbackWhy::Failed
                },
                play(1, "s1")
            ]
        );
        assert_eq!(play_out(&mut p, 1, 5), [PlayerOutput::Finished]);
    }

    #[test]
    fn repeat_replays_the_whole_message() {
        let mut p = P::new(3, Some(FB), STALL_MS);
        for (k, a) in ["s0", "s1", "s2"].into_iter().enumerate() {
            p.part_ready(k, a, 0);
        }
        p.play(0);
        let first = drain(&mut p);
        // The repeat key in the middle of sentence 1: the caller stops
        // the audio, then asks again.
        p.segment_finished(500);
        p.stop();
        assert!(!p.is_playing());
        // Late "finished" reports of stopped audio change nothing.
        p.segment_finished(600);
        assert!(drain(&mut p).is_empty());
        p.play(700);
        assert_eq!(drain(&mut p), first);
        assert_eq!(play_out(&mut p, 3, 800), [PlayerOutput::Finished]);
        // And once more after it finished.
        p.play(5_000);
        assert_eq!(drain(&mut p), first);
    }

    #[test]
    fn an_empty_message_finishes_at_once_and_bad_indexes_are_ignored() {
        let mut p = P::new(0, Some(FB), STALL_MS);
        p.part_ready(7, "x", 0);
        p.part_failed(9, 0);
        p.play(0);
        assert_eq!(drain(&mut p), [PlayerOutput::Finished]);
    }

    #[test]
    fn a_message_cut_at_the_limit_ends_after_the_last_sentence_kept() {
        let mut p = P::new(4, Some(FB), STALL_MS);
        p.play(0);
        p.part_ready(0, "s0", 10);
        assert_eq!(drain(&mut p), [play(0, "s0")]);
        p.part_ready(1, "s1", 20);
        // Sentence 2 would pass the limit: 2 and 3 are never said.
        p.cut_from(2, 30);
        assert_eq!(drain(&mut p), [play(1, "s1")]);
        assert!(p.all_resolved());
        let heard = play_out(&mut p, 2, 40);
        assert_eq!(heard, [PlayerOutput::Finished]);
        // Asked again: the same two sentences, then the menu.
        p.play(50);
        assert_eq!(drain(&mut p), [play(0, "s0"), play(1, "s1")]);
        assert_eq!(play_out(&mut p, 2, 60), [PlayerOutput::Finished]);
    }

    /// The first sentence in two chunks (parts 0 and 1), then sentence 2
    /// (part 2): the second chunk, ready while the first is heard, is
    /// queued behind it at once, so the media plays them back to back.
    #[test]
    fn a_chunk_ready_while_the_one_before_is_heard_follows_it_with_no_gap() {
        let mut p = P::new(3, Some(FB), STALL_MS);
        // Answered before anything is ready: silence.
        p.play(0);
        assert!(drain(&mut p).is_empty());
        p.part_ready(0, "s0a", 120);
        assert_eq!(drain(&mut p), [play(0, "s0a")]);
        // While the first chunk is heard (1.4 s of it), the rest of the
        // sentence comes: queued at once, behind it, no tick pending.
        p.part_ready(1, "s0b", 400);
        assert_eq!(drain(&mut p), [play(1, "s0b")]);
        assert_eq!(p.poll_timeout(), None, "nothing ran dry");
        // The first chunk ends: the second is already on the media.
        p.segment_finished(1_520);
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.poll_timeout(), None);
        p.part_ready(2, "s1", 1_800);
        assert_eq!(drain(&mut p), [play(2, "s1")]);
        assert_eq!(play_out(&mut p, 2, 6_000), [PlayerOutput::Finished]);
    }

    #[test]
    fn a_failed_chunk_is_said_with_the_fallback_like_a_sentence() {
        // The first chunk heard, the second failed: the fallback in its
        // place, then the next sentence; never the menu before it.
        let mut p = P::new(3, Some(FB), STALL_MS);
        p.part_ready(0, "s0a", 0);
        p.play(10);
        assert_eq!(drain(&mut p), [play(0, "s0a")]);
        p.part_failed(1, 300);
        assert_eq!(
            drain(&mut p),
            [PlayerOutput::Fallback {
                part: 1,
                audio: Some(FB),
                why: FallbackWhy::Failed
            }]
        );
        p.part_ready(2, "s1", 400);
        assert_eq!(drain(&mut p), [play(2, "s1")]);
        assert_eq!(play_out(&mut p, 3, 5_000), [PlayerOutput::Finished]);
        // Both chunks failed: one fallback for the run, as for sentences.
        let mut p = P::new(3, Some(FB), STALL_MS);
        p.part_failed(0, 0);
        p.part_failed(1, 0);
        p.part_ready(2, "s1", 0);
        p.play(0);
        let fb = |k, audio| PlayerOutput::Fallback {
            part: k,
            audio,
            why: FallbackWhy::Failed,
        };
        assert_eq!(drain(&mut p), [fb(0, Some(FB)), fb(1, None), play(2, "s1")]);
    }

    #[test]
    fn a_late_chunk_waits_after_the_whole_chunk_before_then_the_stall_holds() {
        let mut p = P::new(2, Some(FB), 3_000);
        p.part_ready(0, "s0a", 0);
        p.play(0);
        assert_eq!(drain(&mut p), [play(0, "s0a")]);
        // The first chunk is heard whole before anything else happens.
        p.segment_finished(1_400);
        assert!(drain(&mut p).is_empty(), "no menu, no fallback yet");
        assert_eq!(p.poll_timeout(), Some(4_400));
        p.part_ready(1, "s0b", 1_500);
        assert_eq!(drain(&mut p), [play(1, "s0b")]);
        assert_eq!(play_out(&mut p, 1, 4_000), [PlayerOutput::Finished]);
    }

    /// A part with its length, for the tests of held chunks.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Timed2(&'static str, u64);

    impl Timed for Timed2 {
        fn duration_ms(&self) -> u64 {
            self.1
        }
    }

    type J = MessagePlayer<Timed2>;
    const FB2: Timed2 = Timed2("fallback", 2_000);

    fn jdrain(p: &mut J) -> Vec<PlayerOutput<Timed2>> {
        std::iter::from_fn(|| p.poll_output()).collect()
    }

    /// The first sentence in two chunks (parts 0 and 1), then a
    /// sentence (part 2).
    fn chunked() -> J {
        J::new(3, Some(FB2), 3_000).joined(&[false, true, false])
    }

    #[test]
    fn a_first_chunk_waits_until_the_next_is_expected_by_its_end() {
        let mut p = chunked();
        let a = Timed2("s0a", 1_000);
        p.play(0);
        p.part_ready(0, a, 100);
        // The rest of the sentence is expected at 1,900: started now the
        // chunk would end at 1,100, leaving 800 ms of silence mid-sentence.
        p.part_eta(1, 1_900, 100);
        assert!(jdrain(&mut p).is_empty(), "held");
        // Started at 800 it ends at 1,800, the next due by 1,900: at
        // most LATE_JOINT_MS more than the comma's own pause.
        assert_eq!(p.poll_timeout(), Some(800));
        p.handle_timeout(700);
        assert!(jdrain(&mut p).is_empty());
        p.handle_timeout(800);
        assert_eq!(jdrain(&mut p), [PlayerOutput::Play { part: 0, audio: a }]);
        // It comes while the first is heard: straight behind it.
        let b = Timed2("s0b", 3_000);
        p.part_ready(1, b, 1_700);
        assert_eq!(jdrain(&mut p), [PlayerOutput::Play { part: 1, audio: b }]);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_chunk_expected_in_time_plays_at_once_and_one_not_known_waits() {
        // Expected before the first chunk ends: no wait (the first audio
        // is as early as before).
        let mut p = chunked();
        p.part_eta(1, 600, 0);
        p.part_ready(0, Timed2("s0a", 1_000), 0);
        p.play(10);
        assert_eq!(jdrain(&mut p).len(), 1);
        // Not known when it comes (the chunk before came from the
        // cache): held until it is there, then both go, back to back.
        let mut p = chunked();
        p.part_ready(0, Timed2("s0a", 1_000), 0);
        p.play(10);
        assert!(jdrain(&mut p).is_empty());
        assert_eq!(p.poll_timeout(), Some(3_010), "only the stall");
        p.part_ready(1, Timed2("s0b", 2_000), 400);
        assert_eq!(
            jdrain(&mut p),
            [
                PlayerOutput::Play {
                    part: 0,
                    audio: Timed2("s0a", 1_000)
                },
                PlayerOutput::Play {
                    part: 1,
                    audio: Timed2("s0b", 2_000)
                }
            ]
        );
        // A repeat has it all: nothing held.
        p.part_ready(2, Timed2("s1", 1_000), 500);
        p.stop();
        p.play(600);
        assert_eq!(jdrain(&mut p).len(), 3);
    }

    #[test]
    fn a_held_chunk_whose_rest_never_comes_says_the_fallback_for_the_whole_sentence() {
        let mut p = chunked();
        p.part_ready(0, Timed2("s0a", 1_000), 0);
        p.part_ready(2, Timed2("s1", 1_000), 0);
        p.play(0);
        assert!(jdrain(&mut p).is_empty());
        p.handle_timeout(3_000);
        // Never half a sentence: the fallback in place of both chunks.
        assert_eq!(
            jdrain(&mut p),
            [
                PlayerOutput::Fallback {
                    part: 0,
                    audio: Some(FB2),
                    why: FallbackWhy::Late
                },
                PlayerOutput::Fallback {
                    part: 1,
                    audio: None,
                    why: FallbackWhy::Late
                },
                PlayerOutput::Play {
                    part: 2,
                    audio: Timed2("s1", 1_000)
                }
            ]
        );
        // Ready too late: not heard after the fallback.
        p.part_ready(1, Timed2("s0b", 2_000), 3_100);
        assert!(jdrain(&mut p).is_empty());
    }
}

//! Joining the chunks of one sentence (see [`super::sentences::chunks`])
//! so they sound like the sentence said whole. Pure: samples in, samples
//! out.
//!
//! An engine pads every phrase with silence: Open JTalk (mei) puts about
//! 0.3 s before and 0.33 s after it, so two chunks played back to back
//! would have about 0.64 s of silence between them, the pause between two
//! sentences, where the sentence said whole pauses about 0.52 s at its
//! comma (measured: 511-528 ms at 、, espeak-ng 207 ms at ","). The media
//! plays queued prompts back to back with no gap of its own, so the
//! joint's silence is what the two chunks bring: this trims it to at most
//! [`JOIN_PAUSE_MS`], cutting only silence, never speech.

use crate::media::audio::RATE;

/// The most silence at a joint inside a sentence: Open JTalk's own pause
/// at a comma. An engine that pauses less (espeak-ng) keeps its own.
pub const JOIN_PAUSE_MS: u64 = 520;

/// Samples below this fraction of the chunk's peak (-40 dB) are silence.
const SILENCE_OF_PEAK: i32 = 100;

fn threshold(pcm: &[i16]) -> i32 {
    let peak = pcm.iter().map(|&s| i32::from(s).abs()).max().unwrap_or(0);
    (peak / SILENCE_OF_PEAK).max(1)
}

/// Silent samples at the start and at the end of `pcm` (all of it at the
/// start, none at the end, when it is silent throughout).
pub fn edges(pcm: &[i16]) -> (usize, usize) {
    let th = threshold(pcm);
    let loud = |s: &i16| i32::from(*s).abs() > th;
    match pcm.iter().position(loud) {
        None => (pcm.len(), 0),
        Some(first) => {
            let last = pcm.iter().rposition(loud).unwrap_or(first);
            (first, pcm.len() - 1 - last)
        }
    }
}

fn samples(ms: u64) -> usize {
    (ms * u64::from(RATE) / 1000) as usize
}

/// A chunk's audio as it is played: `after` is the silence (samples) the
/// chunk before it in the same sentence ended with, `None` when it starts
/// a sentence (or follows a fallback); `joins_next` when a chunk of the
/// same sentence follows it. Returns the samples to play and the silence
/// they end with (the next chunk's `after`).
pub fn for_joint(pcm: &[i16], after: Option<usize>, joins_next: bool) -> (Vec<i16>, usize) {
    let pause = samples(JOIN_PAUSE_MS);
    let (lead, trail) = edges(pcm);
    if lead == pcm.len() {
        // Nothing but silence: nothing to join, keep it as it is.
        return (pcm.to_vec(), trail);
    }
    // The leading silence goes first: the chunk before ended with its
    // natural decay.
    let cut_lead = match after {
        Some(before) => lead.saturating_sub(pause.saturating_sub(before)),
        None => 0,
    };
    let cut_trail = if joins_next {
        trail.saturating_sub(pause)
    } else {
        0
    };
    (
        pcm[cut_lead..pcm.len() - cut_trail].to_vec(),
        trail - cut_trail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lead_ms` of silence, `voice_ms` of a tone, `trail_ms` of silence.
    fn chunk(lead_ms: u64, voice_ms: u64, trail_ms: u64) -> Vec<i16> {
        let mut v = vec![0i16; samples(lead_ms)];
        v.extend((0..samples(voice_ms)).map(|i| {
            // Starts and ends at zero, as speech does; never silent inside.
            let x = (i as f64 * 0.3).sin();
            (8000.0 * x.signum() * x.abs().max(0.05)) as i16
        }));
        v.extend(std::iter::repeat_n(0i16, samples(trail_ms)));
        v
    }

    fn ms(n: usize) -> u64 {
        n as u64 * 1000 / u64::from(RATE)
    }

    #[test]
    fn edges_are_the_silence_before_and_after_the_voice() {
        let c = chunk(300, 1000, 330);
        let (lead, trail) = edges(&c);
        assert!((299..=301).contains(&ms(lead)), "{}", ms(lead));
        assert!((329..=331).contains(&ms(trail)), "{}", ms(trail));
        // Low noise under -40 dB of the peak is silence; above is not.
        let mut n = c.clone();
        n[10] = 70;
        assert_eq!(edges(&n).0, lead);
        n[10] = 90;
        assert_eq!(edges(&n).0, 10);
        assert_eq!(edges(&[0; 80]), (80, 0));
        assert_eq!(edges(&[]), (0, 0));
    }

    #[test]
    fn an_open_jtalk_joint_keeps_a_comma_pause_and_all_the_voice() {
        // As Open JTalk pads: 0.3 s before, 0.33 s after each chunk.
        let (a, b) = (chunk(300, 1200, 330), chunk(310, 4000, 333));
        let (pa, after) = for_joint(&a, None, true);
        // The first chunk starts as it was made, and ends with its own
        // decay (shorter than the pause).
        assert_eq!(pa, a);
        assert_eq!(ms(after), 330);
        let (pb, end) = for_joint(&b, Some(after), false);
        // Only leading silence went, and the sentence ends as made.
        assert_eq!(&b[b.len() - pb.len()..], &pb[..]);
        assert_eq!(ms(end), 333);
        // What is heard: the voice of both, a comma's pause between.
        let heard: Vec<i16> = pa.iter().chain(&pb).copied().collect();
        let gap = edges(&heard[..pa.len()]).1 + edges(&pb).0;
        assert!(
            (JOIN_PAUSE_MS - 2..=JOIN_PAUSE_MS + 1).contains(&ms(gap)),
            "{} ms",
            ms(gap)
        );
        let voiced = |x: &[i16]| {
            let (l, t) = edges(x);
            x.len() - l - t
        };
        assert_eq!(voiced(&heard[..pa.len()]), voiced(&a));
        assert_eq!(voiced(&pb), voiced(&b));
    }

    #[test]
    fn a_short_joint_is_kept_and_a_long_trail_is_cut() {
        // espeak-ng: 0.2 s after a comma, 12 ms before the next words.
        let (a, b) = (chunk(13, 1500, 194), chunk(12, 2000, 390));
        let (pa, after) = for_joint(&a, None, true);
        let (pb, _) = for_joint(&b, Some(after), false);
        assert_eq!((pa, pb), (a, b), "already shorter than the pause");
        // A chunk ending in a second of silence keeps at most the pause,
        // and then the next keeps none of its own.
        let c = chunk(300, 1000, 1000);
        let (pc, after) = for_joint(&c, None, true);
        assert_eq!(ms(after), JOIN_PAUSE_MS);
        assert_eq!(pc.len(), c.len() - samples(1000 - JOIN_PAUSE_MS));
        let d = chunk(300, 1000, 300);
        let (pd, _) = for_joint(&d, Some(after), false);
        assert_eq!(edges(&pd).0, 0);
        // Silence throughout is left alone.
        assert_eq!(for_joint(&[0; 160], Some(0), true).0, vec![0; 160]);
    }
}

//! In-band DTMF detection (ITU-T Q.23 tones, Q.24-style acceptance) with
//! Goertzel filters in 10 ms steps.
//!
//! Each 80-sample block yields one complex Goertzel value per DTMF
//! frequency. Two consecutive blocks are combined into a 20 ms analysis
//! window (coherently, by rotating the second block's value), and the
//! phase advance between the two blocks measures each tone's frequency
//! offset directly. That gives Q.24's fine frequency rule (accept within
//! 1.5 %, reject beyond 3.5 %) at the cost of eight filters per sample.
//!
//! A window qualifies when each group's strongest tone beats the other
//! three by 6 dB, both tones are within 2 % of nominal, above −38 dBm0,
//! within the twist limits, and together hold 85 % of the window's
//! energy. A digit needs two consecutive qualifying windows of one key
//! (at least 30 ms of tone; Q.24's minimum is 40 ms) and ends after two
//! windows without it.
//!
//! The energy share and the 2 % limit are what keep speech out: on a
//! generated hour and a half of Japanese speech (Open JTalk, three speeds,
//! five pitches, through G.711), a share of 70 % and a 2.5 % limit gave
//! 17 false digits an hour, these give none, and acceptance of 40 ms
//! tones at every alignment down to −30 dBm0, the ±1.5 % / ±3.5 % rules
//! and the twist limits is unchanged (`tests/dtmf_talkoff.rs`,
//! `docs/benchmarks.md`).

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Samples per block (10 ms at 8 kHz).
pub const BLOCK: usize = 80;
const WINDOW: f32 = (2 * BLOCK) as f32;
const RATE: f32 = 8000.0;
/// The filters run over a block in this many interleaved parts.
const PARTS: usize = 4;
const PART: usize = BLOCK / PARTS;
/// The share of a window's energy a key already held needs to continue.
const HOLD_PURITY: f32 = 0.5;
/// Consecutive qualifying windows a digit needs.
const MIN_WINDOWS: u32 = 2;

/// Detection thresholds. The defaults follow common Q.24 practice.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Minimum power of each tone, as mean square of a 16-bit signal.
    /// 41,000 is about −38 dBm0 per tone (a full-scale sine is +3.14
    /// dBm0): Q.24 asks for keys down to −25 dBm0, and quieter audio is
    /// more often our own prompt's echo than a key.
    pub min_tone_power: f32,
    /// Row louder than column by at most this (dB), "normal twist".
    pub max_twist_db: f32,
    /// Column louder than row by at most this (dB), "reverse twist".
    pub max_reverse_twist_db: f32,
    /// Share of the window's energy the two tones must hold.
    pub min_purity: f32,
    /// Largest accepted frequency offset (fraction), between Q.24's
    /// must-accept 1.5 % and must-reject 3.5 %.
    pub max_freq_offset: f32,
    /// Each tone must be this many times stronger than every other tone
    /// of its group (power ratio).
    pub min_peak_ratio: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_tone_power: 41000.0,
            max_twist_db: 8.0,
            max_reverse_twist_db: 4.0,
            min_purity: 0.85,
            max_freq_offset: 0.02,
            min_peak_ratio: 4.0,
        }
    }
}

/// A detected digit: key and start time in ms from the first sample fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub digit: char,
    pub start_ms: u64,
}

/// Streaming in-band DTMF detector. Feed 8 kHz samples in any chunk size.
#[derive(Debug, Clone)]
pub struct Detector {
    th: Thresholds,
    coef: [f32; 8],
    /// e^{-jωN}: rotation of block 2's value into block 1's time frame.
    rot: [(f32, f32); 8],
    /// e^{jω·PART·(PARTS-1-p)}: part p's value into the block's frame.
    part_rot: [[(f32, f32); 8]; PARTS],
    /// Below this a block's filters are skipped (see [`Detector::block`]).
    quiet_energy: f32,
    /// Below this a window cannot hold two tones at the minimum level.
    min_window_energy: f32,
    pending: [i16; BLOCK],
    fill: usize,
    prev: Option<([(f32, f32); 8], f32)>,
    blocks: u64,
    run: Option<Run>,
    misses: u32,
    current: Option<char>,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(Thresholds::default())
    }
}

impl Detector {
    pub fn new(th: Thresholds) -> Detector {
        let freqs = all_freqs();
        let mut coef = [0.0; 8];
        let mut rot = [(0.0, 0.0); 8];
        let mut part_rot = [[(0.0, 0.0); 8]; PARTS];
        for (i, f) in freqs.iter().enumerate() {
            let w = 2.0 * std::f32::consts::PI * f / RATE;
            coef[i] = 2.0 * w.cos();
            let a = -w * BLOCK as f32;
            rot[i] = (a.cos(), a.sin());
            for (p, r) in part_rot.iter_mut().enumerate() {
                let a = w * (PART * (PARTS - 1 - p)) as f32;
                r[i] = (a.cos(), a.sin());
            }
        }
        Detector {
            th,
            coef,
            rot,
            part_rot,
            // Two tones at the minimum power over a whole window; a window
            // with less energy cannot pass the level test.
            min_window_energy: 2.0 * th.min_tone_power * WINDOW,
            quiet_energy: 2.0 * th.min_tone_power * WINDOW / 64.0,
            pending: [0; BLOCK],
            fill: 0,
            prev: None,
            blocks: 0,
            run: None,
            misses: 0,
            current: None,
        }
    }

    /// Feed samples; digits are pushed to `out` as they are recognised.
    pub fn process(&mut self, samples: &[i16], out: &mut Vec<Detected>) {
        self.feed(samples, |det, w| {
            let mut key = det.classify(&w, det.th.min_purity);
            // Hysteresis: a key already held continues through windows
            // where speech or noise under it lowers the tones' share, so
            // one press is not split in two.
            if key.is_none() && det.current.is_some() {
                key = det
                    .classify(&w, HOLD_PURITY)
                    .filter(|k| Some(*k) == det.current);
            }
            det.track(key, w.start_ms, out)
        });
    }

    /// Feed samples and report every 20 ms window (10 ms apart) that
    /// passes the per-window tests, without the duration rule: what a
    /// key would look like if this audio came back as echo.
    pub fn windows(&mut self, samples: &[i16], mut out: impl FnMut(char, u64)) {
        self.feed(samples, |det, w| {
            if let Some(k) = det.classify(&w, det.th.min_purity) {
                out(k, w.start_ms)
            }
        });
    }

    fn feed(&mut self, samples: &[i16], mut sink: impl FnMut(&mut Self, WindowValues)) {
        let mut rest = samples;
        while !rest.is_empty() {
            // Whole blocks straight from the input; a block split across
            // calls is gathered first.
            let block: &[i16] = if self.fill == 0 && rest.len() >= BLOCK {
                let (block, tail) = rest.split_at(BLOCK);
                rest = tail;
                block
            } else {
                let take = (BLOCK - self.fill).min(rest.len());
                self.pending[self.fill..self.fill + take].copy_from_slice(&rest[..take]);
                self.fill += take;
                rest = &rest[take..];
                if self.fill < BLOCK {
                    return;
                }
                self.fill = 0;
                &self.pending.clone()
            };
            if let Some(w) = self.block(block) {
                sink(self, w);
            }
        }
    }

    /// Analyse one 10 ms block; once two are in, return the window they
    /// form.
    fn block(&mut self, block: &[i16]) -> Option<WindowValues> {
        // Integer sum: exact, and it vectorises where a float sum cannot.
        let energy = block
            .iter()
            .map(|&x| (x as i32 * x as i32) as i64)
            .sum::<i64>() as f32;
        // A block this quiet cannot lift any window it is part of over the
        // thresholds by more than about 1 dB, so its tone values count as
        // zero and the filters are skipped: most of a call is silence.
        let values = if energy < self.quiet_energy {
            [(0.0, 0.0); 8]
        } else {
            self.goertzel(block)
        };
        let block_start = self.blocks;
        self.blocks += 1;
        let (prev, prev_energy) = self.prev.replace((values, energy))?;
        Some(WindowValues {
            a: prev,
            b: values,
            energy: prev_energy + energy,
            // The window began one block before this one.
            start_ms: block_start.saturating_sub(1) * 10,
        })
    }

    /// One complex value per DTMF frequency for a 10 ms block.
    ///
    /// The Goertzel recurrence is a chain of dependent multiply-adds, so
    /// one filter per frequency over 80 samples waits on latency. The block
    /// runs as four 20-sample parts side by side (32 independent chains)
    /// and the parts are rotated into one value: same result, about twice
    /// as fast.
    fn goertzel(&self, block: &[i16]) -> [(f32, f32); 8] {
        let coef = self.coef;
        let mut s1 = [[0.0f32; 8]; PARTS];
        let mut s2 = [[0.0f32; 8]; PARTS];
        for n in 0..PART {
            for p in 0..PARTS {
                let x = block[p * PART + n] as f32;
                for i in 0..8 {
                    // (x - s2) first: only the multiply-add waits on s1.
                    let s0 = (x - s2[p][i]) + coef[i] * s1[p][i];
                    s2[p][i] = s1[p][i];
                    s1[p][i] = s0;
                }
            }
        }
        let mut values = [(0.0f32, 0.0f32); 8];
        for (i, v) in values.iter_mut().enumerate() {
            let w_half = coef[i] / 2.0;
            let sin_w = (1.0 - w_half * w_half).max(0.0).sqrt();
            for p in 0..PARTS {
                // y = s1 - e^{-jω} s2 is the part's DFT times e^{jω(len-1)},
                // a phase constant; rotating part p by e^{jω·PART·(last-p)}
                // gives every part the whole block's constant, which is the
                // same for every block and so cancels in all uses below.
                let y = (s1[p][i] - w_half * s2[p][i], sin_w * s2[p][i]);
                let (rc, rs) = self.part_rot[p][i];
                v.0 += y.0 * rc - y.1 * rs;
                v.1 += y.0 * rs + y.1 * rc;
            }
        }
        values
    }

    /// The key a window holds, if it passes every test with the two
    /// tones holding at least `min_purity` of its energy.
    fn classify(&self, w: &WindowValues, min_purity: f32) -> Option<char> {
        let (a, b, energy) = (&w.a, &w.b, w.energy);
        if energy < self.min_window_energy || energy <= 0.0 {
            return None;
        }
        let mut power = [0.0f32; 8];
        for i in 0..8 {
            let (rc, rs) = self.rot[i];
            let re = a[i].0 + b[i].0 * rc - b[i].1 * rs;
            let im = a[i].1 + b[i].0 * rs + b[i].1 * rc;
            power[i] = re * re + im * im;
        }
        let best = |range: std::ops::Range<usize>| {
            range
                .clone()
                .max_by(|&x, &y| power[x].total_cmp(&power[y]))
                .unwrap_or(range.start)
        };
        let (r, c) = (best(0..4), best(4..8));
        // Other tones of each group must be well below the peak.
        for (group, peak) in [(0..4, r), (4..8, c)] {
            if group
                .into_iter()
                .any(|i| i != peak && power[i] * self.th.min_peak_ratio > power[peak])
            {
                return None;
            }
        }
        let freqs = all_freqs();
        let mut tone = [0.0f32; 2];
        for (slot, i) in [r, c].into_iter().enumerate() {
            // Phase advance of block b over block a, beyond what the
            // nominal frequency explains, gives the tone's offset.
            let (rc, rs) = self.rot[i];
            let (br, bi) = (b[i].0 * rc - b[i].1 * rs, b[i].0 * rs + b[i].1 * rc);
            let re = br * a[i].0 + bi * a[i].1;
            let im = bi * a[i].0 - br * a[i].1;
            let offset_hz = im.atan2(re) * RATE / (2.0 * std::f32::consts::PI * BLOCK as f32);
            if (offset_hz / freqs[i]).abs() > self.th.max_freq_offset {
                return None;
            }
            // Mean power of the tone from its DFT magnitude (2|X|^2/M^2),
            // corrected for the window's roll-off at the measured offset
            // so that an in-tolerance tone still counts fully.
            let x = std::f32::consts::PI * offset_hz * WINDOW / RATE;
            let rolloff = if x.abs() < 1e-3 {
                1.0
            } else {
                (x.sin() / x).powi(2)
            };
            tone[slot] = 2.0 * power[i] / (WINDOW * WINDOW) / rolloff.max(0.05);
        }
        let [pr, pc] = tone;
        if pr < self.th.min_tone_power || pc < self.th.min_tone_power {
            return None;
        }
        let twist_db = 10.0 * (pr / pc).log10();
        if twist_db > self.th.max_twist_db || -twist_db > self.th.max_reverse_twist_db {
            return None;
        }
        let mean_power = energy / WINDOW;
        if (pr + pc) < min_purity * mean_power {
            return None;
        }
        Some(KEYS[r][c - 4])
    }

    fn track(&mut self, key: Option<char>, window_start_ms: u64, out: &mut Vec<Detected>) {
        match key {
            Some(key) => {
                self.misses = 0;
                self.run = Some(match self.run {
                    Some(run) if run.key == key => Run {
                        windows: run.windows + 1,
                        ..run
                    },
                    _ => Run {
                        key,
                        start_ms: window_start_ms,
                        windows: 1,
                    },
                });
                if let Some(run) = self.run {
                    if run.windows >= MIN_WINDOWS && self.current != Some(key) {
                        self.current = Some(key);
                        out.push(Detected {
                            digit: key,
                            start_ms: run.start_ms,
                        });
                    }
                }
            }
            None => {
                self.misses += 1;
                self.run = None;
                if self.misses >= 2 {
                    self.current = None;
                }
            }
        }
    }
}

/// Two consecutive blocks' filter values: one 20 ms window.
struct WindowValues {
    a: [(f32, f32); 8],
    b: [(f32, f32); 8],
    energy: f32,
    start_ms: u64,
}

/// Consecutive qualifying windows of one key.
#[derive(Debug, Clone, Copy)]
struct Run {
    key: char,
    start_ms: u64,
    windows: u32,
}

fn all_freqs() -> [f32; 8] {
    [
        ROWS[0], ROWS[1], ROWS[2], ROWS[3], COLS[0], COLS[1], COLS[2], COLS[3],
    ]
}

/// The (row, column) frequencies of a key.
pub fn key_freqs(digit: char) -> Option<(f32, f32)> {
    for (r, row) in KEYS.iter().enumerate() {
        for (c, k) in row.iter().enumerate() {
            if *k == digit.to_ascii_uppercase() {
                return Some((ROWS[r], COLS[c]));
            }
        }
    }
    None
}

/// Detect every digit in a whole buffer (for files and tests).
pub fn detect_all(samples: &[i16]) -> Vec<Detected> {
    let mut d = Detector::default();
    let mut out = Vec::new();
    d.process(samples, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generate a key press: each tone at `level` (peak, 16-bit) with
    /// frequencies scaled by `(1 + err)`.
    pub fn press(digit: char, err: f32, tone_ms: usize, gap_ms: usize, level: f32) -> Vec<i16> {
        let (r, c) = key_freqs(digit).unwrap();
        let n = tone_ms * 8;
        let mut v: Vec<i16> = (0..n)
            .map(|i| {
                let t = i as f32 / RATE;
                let s = level * (2.0 * std::f32::consts::PI * r * (1.0 + err) * t).sin()
                    + level * (2.0 * std::f32::consts::PI * c * (1.0 + err) * t).sin();
                s as i16
            })
            .collect();
        v.extend(std::iter::repeat_n(0, gap_ms * 8));
        v
    }

    #[test]
    fn every_key_at_40ms_tone_40ms_gap() {
        let keys = "0123456789*#ABCD";
        let mut audio = vec![0i16; 400];
        for k in keys.chars() {
            audio.extend(press(k, 0.0, 40, 40, 8000.0));
        }
        let got: String = detect_all(&audio).iter().map(|d| d.digit).collect();
        assert_eq!(got, keys);
    }

    #[test]
    fn frequency_tolerance_accepts_1_5_and_rejects_3_5_percent() {
        for k in "0123456789*#ABCD".chars() {
            for err in [-0.015, 0.015] {
                let got = detect_all(&press(k, err, 60, 60, 8000.0));
                assert_eq!(got.len(), 1, "{k} at {err} must detect");
            }
            for err in [-0.035, 0.035] {
                let got = detect_all(&press(k, err, 60, 60, 8000.0));
                assert!(got.is_empty(), "{k} at {err} must not detect: {got:?}");
            }
        }
    }

    #[test]
    fn start_time_is_reported_within_10ms() {
        let mut audio = vec![0i16; 8 * 1234];
        audio.extend(press('5', 0.0, 80, 40, 8000.0));
        let got = detect_all(&audio);
        assert_eq!(got.len(), 1);
        assert!((got[0].start_ms as i64 - 1234).abs() <= 10, "{got:?}");
    }

    /// A full-scale sine in µ-law, G.711's reference (not π).
    #[allow(clippy::approx_constant)] // 3.14 dB, not π
    const FULL_SCALE_DBM0: f32 = 3.14;

    /// dBm0 per tone to a 16-bit peak (a full-scale sine is +3.14 dBm0).
    fn amplitude(dbm0: f32) -> f32 {
        32767.0 * 10f32.powf((dbm0 - FULL_SCALE_DBM0) / 20.0)
    }

    fn tones(digit: char, ms: usize, row_dbm0: f32, col_dbm0: f32) -> Vec<i16> {
        let (r, c) = key_freqs(digit).unwrap();
        let (ar, ac) = (amplitude(row_dbm0), amplitude(col_dbm0));
        (0..ms * 8)
            .map(|i| {
                let w = 2.0 * std::f32::consts::PI * i as f32 / RATE;
                let v = ar * (w * r).sin() + ac * (w * c + 0.7).sin();
                // Through µ-law, as a call carries it.
                crate::media::g711::ulaw_to_linear(crate::media::g711::linear_to_ulaw(v as i16))
            })
            .collect()
    }

    #[test]
    fn four_interleaved_parts_give_the_blocks_dft() {
        let d = Detector::default();
        let block: Vec<i16> = (0..BLOCK as i32)
            .map(|n| ((n * 7919 + 13) % 20011 - 10005) as i16)
            .collect();
        let values = d.goertzel(&block);
        for (i, f) in all_freqs().iter().enumerate() {
            let w = 2.0 * std::f64::consts::PI * *f as f64 / RATE as f64;
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (n, &x) in block.iter().enumerate() {
                re += x as f64 * (w * n as f64).cos();
                im -= x as f64 * (w * n as f64).sin();
            }
            // The value is the DFT times e^{jω(N-1)}.
            let (c, s) = (
                (w * (BLOCK - 1) as f64).cos(),
                (w * (BLOCK - 1) as f64).sin(),
            );
            let want = (re * c - im * s, re * s + im * c);
            let got = (values[i].0 as f64, values[i].1 as f64);
            let scale = (want.0.hypot(want.1)).max(1.0);
            assert!(
                (got.0 - want.0).abs() / scale < 1e-3 && (got.1 - want.1).abs() / scale < 1e-3,
                "{f} Hz: {got:?} != {want:?}"
            );
        }
    }

    #[test]
    fn forty_ms_keys_at_every_alignment_down_to_minus_30_dbm0() {
        let keys = "0123456789*#ABCD";
        for dbm0 in [0.0, -10.0, -20.0, -25.0, -30.0] {
            for offset in [0, 13, 27, 40, 53, 66] {
                let mut audio = vec![0i16; 320 + offset];
                for k in keys.chars() {
                    audio.extend(tones(k, 40, dbm0, dbm0));
                    audio.extend(std::iter::repeat_n(0, 320));
                }
                let got: String = detect_all(&audio).iter().map(|d| d.digit).collect();
                assert_eq!(got, keys, "{dbm0} dBm0, offset {offset} samples");
            }
        }
    }

    #[test]
    fn twist_within_limits_is_accepted_and_beyond_is_rejected() {
        // (row dB above column, accepted): 8 dB normal, 4 dB reverse.
        for (twist, ok) in [(6.0, true), (-3.0, true), (10.0, false), (-6.0, false)] {
            for k in "0123456789*#ABCD".chars() {
                let audio = tones(k, 60, -10.0 + twist / 2.0, -10.0 - twist / 2.0);
                let got = detect_all(&audio);
                assert_eq!(got.len(), ok as usize, "{k} with twist {twist} dB: {got:?}");
            }
        }
    }

    #[test]
    fn too_quiet_or_too_short_is_no_key() {
        assert!(detect_all(&tones('5', 100, -42.0, -42.0)).is_empty());
        assert_eq!(detect_all(&tones('5', 100, -34.0, -34.0)).len(), 1);
        // Q.24: tones shorter than 20 ms must not register.
        assert!(detect_all(&tones('5', 18, -10.0, -10.0)).is_empty());
    }

    #[test]
    fn every_window_is_reported_for_the_echo_guard() {
        let mut d = Detector::default();
        let mut seen = Vec::new();
        let mut audio = vec![0i16; 160];
        audio.extend(tones('8', 60, -10.0, -10.0));
        d.windows(&audio, |k, at| seen.push((k, at)));
        assert!(
            seen.len() >= 4 && seen.iter().all(|&(k, _)| k == '8'),
            "{seen:?}"
        );
        assert!(seen[0].1 >= 10 && seen[0].1 <= 20, "{seen:?}");
    }

    #[test]
    fn one_key_twice_with_a_40ms_gap_is_two_digits() {
        let mut audio = tones('5', 60, -10.0, -10.0);
        audio.extend(std::iter::repeat_n(0, 320));
        audio.extend(tones('5', 60, -10.0, -10.0));
        let got: String = detect_all(&audio).iter().map(|d| d.digit).collect();
        assert_eq!(got, "55");
    }
}

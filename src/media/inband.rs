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
//! A digit needs two consecutive qualifying windows (at least 30 ms of
//! tone; Q.24's minimum is 40 ms) and ends after two windows without it.

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

/// Detection thresholds. The defaults follow common Q.24 practice.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Minimum power of each tone, as mean square of a 16-bit signal.
    /// 8,000 is about −39 dBm0 per tone.
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
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_tone_power: 8000.0,
            max_twist_db: 8.0,
            max_reverse_twist_db: 4.0,
            min_purity: 0.7,
            max_freq_offset: 0.025,
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
    s1: [f32; 8],
    s2: [f32; 8],
    energy: f32,
    fill: usize,
    prev: Option<([(f32, f32); 8], f32)>,
    blocks: u64,
    /// Candidate key of the previous window and when it started.
    candidate: Option<(char, u64)>,
    hits: u32,
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
        for (i, f) in freqs.iter().enumerate() {
            let w = 2.0 * std::f32::consts::PI * f / RATE;
            coef[i] = 2.0 * w.cos();
            let a = -w * BLOCK as f32;
            rot[i] = (a.cos(), a.sin());
        }
        Detector {
            th,
            coef,
            rot,
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            fill: 0,
            prev: None,
            blocks: 0,
            candidate: None,
            hits: 0,
            misses: 0,
            current: None,
        }
    }

    /// Feed samples; digits are pushed to `out` as they are recognised.
    pub fn process(&mut self, samples: &[i16], out: &mut Vec<Detected>) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (BLOCK - self.fill).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            self.feed_block_part(chunk);
            self.fill += take;
            rest = tail;
            if self.fill == BLOCK {
                self.finish_block(out);
            }
        }
    }

    #[inline]
    fn feed_block_part(&mut self, chunk: &[i16]) {
        let (mut s1, mut s2, coef) = (self.s1, self.s2, self.coef);
        let mut energy = self.energy;
        for &x in chunk {
            let x = x as f32;
            energy += x * x;
            for i in 0..8 {
                let s0 = x + coef[i] * s1[i] - s2[i];
                s2[i] = s1[i];
                s1[i] = s0;
            }
        }
        self.s1 = s1;
        self.s2 = s2;
        self.energy = energy;
    }

    fn finish_block(&mut self, out: &mut Vec<Detected>) {
        let mut values = [(0.0f32, 0.0f32); 8];
        for (i, v) in values.iter_mut().enumerate() {
            // X = s1 - e^{-jω} s2, up to a phase constant that is the same
            // for every block and so cancels in all uses below.
            let w_half = self.coef[i] / 2.0;
            let sin_w = (1.0 - w_half * w_half).max(0.0).sqrt();
            *v = (self.s1[i] - w_half * self.s2[i], sin_w * self.s2[i]);
        }
        let energy = self.energy;
        self.s1 = [0.0; 8];
        self.s2 = [0.0; 8];
        self.energy = 0.0;
        self.fill = 0;
        let block_start = self.blocks;
        self.blocks += 1;
        let Some((prev, prev_energy)) = self.prev.replace((values, energy)) else {
            return;
        };
        let key = self.classify(&prev, &values, prev_energy + energy);
        // The window began one block before this one.
        let window_start_ms = (block_start.saturating_sub(1)) * 10;
        self.track(key, window_start_ms, out);
    }

    fn classify(&self, a: &[(f32, f32); 8], b: &[(f32, f32); 8], energy: f32) -> Option<char> {
        if energy <= 0.0 {
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
        // Other tones of each group must be well below the peak (6 dB).
        for (group, peak) in [(0..4, r), (4..8, c)] {
            if group
                .into_iter()
                .any(|i| i != peak && power[i] * 4.0 > power[peak])
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
        if (pr + pc) < self.th.min_purity * mean_power {
            return None;
        }
        Some(KEYS[r][c - 4])
    }

    fn track(&mut self, key: Option<char>, window_start_ms: u64, out: &mut Vec<Detected>) {
        match key {
            Some(k) => {
                self.misses = 0;
                match self.candidate {
                    Some((c, _)) if c == k => self.hits += 1,
                    _ => {
                        self.candidate = Some((k, window_start_ms));
                        self.hits = 1;
                    }
                }
                if self.hits >= 2 && self.current != Some(k) {
                    self.current = Some(k);
                    let start_ms = self.candidate.map_or(window_start_ms, |(_, s)| s);
                    out.push(Detected { digit: k, start_ms });
                }
            }
            None => {
                self.misses += 1;
                if self.misses >= 2 {
                    self.current = None;
                    self.candidate = None;
                    self.hits = 0;
                }
            }
        }
    }
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
}

//! Talk-off: false in-band digits on speech and music, callout's detector
//! beside spandsp's `dtmf_rx` on the same audio in the same run.
//!
//! The corpus is made here from the texts in `tests/fixtures/talkoff/`:
//! Open JTalk with the shipped `mei` voice at three speeds and two
//! pitches, espeak-ng in English (five voices) and Japanese at three
//! speeds and pitches, and music-like tones from sox; every sentence is
//! brought to prompt loudness and passed through G.711 µ-law, as a call
//! (or the echo of our own prompt) carries it. Key acceptance on the same
//! footing: keys over speech, which both detectors must find.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use callout::media::audio::{read_wav_mono, resample, to_i16};
use callout::media::g711::{linear_to_ulaw, ulaw_to_linear};
use callout::media::inband::{key_freqs, Detector};
use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/talkoff");
const VOICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/voices/mei_normal.htsvoice");
const DICT: &str = "/var/lib/mecab/dic/open-jtalk/naist-jdic";

/// One piece of test audio: 8 kHz, after G.711.
struct Clip {
    what: String,
    pcm: Vec<i16>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WAV from a speech engine, as a call plays it: 8 kHz, prompt
/// loudness, through µ-law.
fn as_call_audio(wav: &Path) -> Vec<i16> {
    let (x, rate) = read_wav_mono(wav).unwrap_or_else(|e| panic!("{}: {e}", wav.display()));
    let x = callout::tts::normalise(&resample(&x, rate, 8000));
    through_ulaw(&to_i16(&x))
}

fn through_ulaw(pcm: &[i16]) -> Vec<i16> {
    pcm.iter()
        .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
        .collect()
}

fn lines(file: &str) -> Vec<String> {
    std::fs::read_to_string(Path::new(FIXTURES).join(file))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Run `jobs` on both cores.
fn parallel<T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send + '_>>) -> Vec<T> {
    let jobs = Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some((i, job)) = jobs.lock().unwrap().pop() else {
                    break;
                };
                let r = job();
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort_by_key(|(i, _)| *i);
    r.into_iter().map(|(_, r)| r).collect()
}

/// Open JTalk renders one sentence per call (it stops at a line end), so
/// the talk is rendered sentence by sentence, as prompts are.
fn open_jtalk(dir: &Path, speed: f32, halftones: f32) -> Clip {
    let mut pcm = Vec::new();
    for (i, line) in lines("ja.txt").iter().enumerate() {
        let txt = dir.join(format!("ja-{speed}-{halftones}-{i}.txt"));
        let wav = txt.with_extension("wav");
        std::fs::write(&txt, line).unwrap();
        run(Command::new("open_jtalk")
            .args(["-x", DICT, "-m", VOICE, "-r", &speed.to_string()])
            .args(["-fm", &halftones.to_string(), "-ow"])
            .arg(&wav)
            .arg(&txt));
        pcm.extend(as_call_audio(&wav));
        pcm.extend(std::iter::repeat_n(0, 2400));
    }
    Clip {
        what: format!("Open JTalk mei, speed {speed}, {halftones:+} half-tones"),
        pcm,
    }
}

fn espeak(dir: &Path, voice: &str, text: &str, speed: u32, pitch: u32) -> Clip {
    let wav = dir.join(format!("es-{voice}-{speed}-{pitch}.wav"));
    run(Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &speed.to_string(),
            "-p",
            &pitch.to_string(),
        ])
        .arg("-w")
        .arg(&wav)
        .arg("-f")
        .arg(Path::new(FIXTURES).join(text)));
    Clip {
        what: format!("espeak-ng {voice}, {speed} wpm, pitch {pitch}"),
        pcm: as_call_audio(&wav),
    }
}

fn sox_synth(dir: &Path, name: &str, synth: &[&str]) -> Clip {
    let wav = dir.join(format!("{name}.wav"));
    run(Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&wav)
        .arg("synth")
        .args(synth));
    Clip {
        what: format!("sox {name}"),
        pcm: as_call_audio(&wav),
    }
}

fn callout_digits(pcm: &[i16]) -> String {
    let mut d = Detector::default();
    let mut out = Vec::new();
    // 20 ms packets, as a call feeds it.
    for chunk in pcm.chunks(160) {
        d.process(chunk, &mut out);
    }
    out.iter().map(|d| d.digit).collect()
}

/// spandsp's reference detector, built here from `benches/spandsp_dtmf.c`.
struct Spandsp {
    bin: PathBuf,
    dir: PathBuf,
}

impl Spandsp {
    fn build(dir: &Path) -> Spandsp {
        require("gcc");
        let bin = dir.join("spandsp_dtmf");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/spandsp_dtmf.c");
        run(Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&bin)
            .arg(src)
            .arg("-lspandsp"));
        Spandsp {
            bin,
            dir: dir.to_path_buf(),
        }
    }

    fn digits(&self, name: &str, pcm: &[i16]) -> String {
        let raw = self.dir.join(format!("{name}.raw"));
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&raw, bytes).unwrap();
        let out = Command::new(&self.bin)
            .arg("--list")
            .arg(&raw)
            .output()
            .unwrap();
        assert!(out.status.success());
        let _ = std::fs::remove_file(&raw);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.chars().next())
            .collect()
    }
}

fn minutes(clips: &[Clip]) -> f64 {
    clips.iter().map(|c| c.pcm.len()).sum::<usize>() as f64 / 8000.0 / 60.0
}

/// Count false digits of both detectors over `clips`, print a table, and
/// return (callout, spandsp) totals.
fn compare(label: &str, clips: &[Clip], spandsp: &Spandsp) -> (usize, usize) {
    let (mut ours, mut theirs) = (0, 0);
    for (i, c) in clips.iter().enumerate() {
        let a = callout_digits(&c.pcm);
        let b = spandsp.digits(&format!("{label}-{i}"), &c.pcm);
        if !a.is_empty() || !b.is_empty() {
            eprintln!("  {}: callout {a:?}, spandsp {b:?}", c.what);
        }
        ours += a.len();
        theirs += b.len();
    }
    let min = minutes(clips);
    eprintln!(
        "{label}: {min:.1} min of audio; false digits: callout {ours} ({:.1}/h), spandsp {theirs} ({:.1}/h)",
        ours as f64 / min * 60.0,
        theirs as f64 / min * 60.0
    );
    (ours, theirs)
}

#[test]
fn no_false_digits_on_japanese_and_english_speech_or_music() {
    require("open_jtalk");
    require("espeak-ng");
    require("sox");
    assert!(
        Path::new(DICT).is_dir(),
        "{DICT} missing: apt-get install open-jtalk-mecab-naist-jdic"
    );
    let dir = scratch("talkoff-corpus");
    let spandsp = Spandsp::build(&dir);

    let d = &dir;
    let mut jobs: Vec<Box<dyn FnOnce() -> Clip + Send>> = Vec::new();
    // CALLOUT_TALKOFF_FULL=1: five pitches instead of two (the corpus in
    // docs/benchmarks.md, about 80 minutes of Japanese).
    let pitches: &[f32] = if std::env::var_os("CALLOUT_TALKOFF_FULL").is_some() {
        &[-4.0, -2.0, 0.0, 2.0, 4.0]
    } else {
        &[-4.0, 4.0]
    };
    for speed in [0.8f32, 1.0, 1.25] {
        for &halftones in pitches {
            jobs.push(Box::new(move || open_jtalk(d, speed, halftones)));
        }
    }
    let japanese = parallel(jobs);

    let mut jobs: Vec<Box<dyn FnOnce() -> Clip + Send>> = Vec::new();
    for voice in ["en", "en-us", "en-gb-x-rp", "en+f3", "en-us+m3"] {
        for (speed, pitch) in [(140, 20), (175, 50), (220, 80)] {
            jobs.push(Box::new(move || espeak(d, voice, "en.txt", speed, pitch)));
        }
    }
    for (speed, pitch) in [(140, 20), (175, 50), (220, 80)] {
        jobs.push(Box::new(move || espeak(d, "ja", "ja.txt", speed, pitch)));
    }
    let other_speech = parallel(jobs);

    let music = vec![
        sox_synth(
            d,
            "plucked-chords",
            &[
                "20", "pluck", "C4", "pluck", "E4", "pluck", "G4", "pluck", "C5",
            ],
        ),
        sox_synth(
            d,
            "sine-chord",
            &["20", "sine", "523.25", "sine", "659.25", "sine", "783.99"],
        ),
        sox_synth(
            d,
            "square-chord",
            &[
                "20", "square", "261.63", "square", "329.63", "square", "392",
            ],
        ),
        sox_synth(
            d,
            "triangle-chord",
            &[
                "20", "triangle", "220", "triangle", "277.18", "triangle", "329.63",
            ],
        ),
        sox_synth(
            d,
            "sawtooth-fifth",
            &["20", "sawtooth", "110", "sawtooth", "164.8"],
        ),
        sox_synth(d, "sweep", &["20", "sine", "300-3400"]),
        sox_synth(d, "pink-noise", &["20", "pinknoise"]),
    ];
    // Two tones sweeping across the key grid at 400 and 600 Hz/s pass
    // through real key pairs; spandsp reports many. Measured, not zero.
    let sweeps: Vec<Clip> = (0..10)
        .map(|i| {
            sox_synth(
                d,
                &format!("two-tone-sweep-{i}"),
                &["1", "sine", "600-1000", "sine", "1100-1700"],
            )
        })
        .collect();

    let (ja_ours, ja_theirs) = compare("Japanese speech (Open JTalk)", &japanese, &spandsp);
    let (sp_ours, sp_theirs) = compare(
        "English and Japanese speech (espeak-ng)",
        &other_speech,
        &spandsp,
    );
    let (mu_ours, _) = compare("music-like tones", &music, &spandsp);
    let (sw_ours, sw_theirs) = compare("two-tone sweeps", &sweeps, &spandsp);

    assert!(
        minutes(&japanese) > 30.0,
        "the Japanese corpus is too short"
    );
    assert_eq!(
        ja_ours, 0,
        "false digits on Japanese speech (spandsp: {ja_theirs})"
    );
    assert_eq!(
        sp_ours, 0,
        "false digits on espeak-ng speech (spandsp: {sp_theirs})"
    );
    assert_eq!(mu_ours, 0, "false digits on music-like tones");
    assert!(
        sw_ours <= sw_theirs,
        "two-tone sweeps: callout {sw_ours} > spandsp {sw_theirs}"
    );
}

/// A full-scale sine in µ-law, G.711's reference (not π).
#[allow(clippy::approx_constant)] // 3.14 dB, not π
const FULL_SCALE_DBM0: f32 = 3.14;

/// dBm0 per tone to a 16-bit peak (a full-scale sine is +3.14 dBm0).
fn amplitude(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - FULL_SCALE_DBM0) / 20.0)
}

/// `keys` pressed for `tone_ms` each at `dbm0` per tone, `gap_ms` apart,
/// over `speech` scaled by `speech_gain`, through µ-law.
fn keys_over_speech(
    speech: &[i16],
    keys: &str,
    tone_ms: usize,
    gap_ms: usize,
    dbm0: f32,
    speech_gain: f32,
) -> Vec<i16> {
    let mut tones: Vec<f32> = vec![0.0; 4000];
    for k in keys.chars() {
        let (r, c) = key_freqs(k).unwrap();
        let a = amplitude(dbm0);
        for n in 0..tone_ms * 8 {
            let t = n as f32 / 8000.0;
            let w = 2.0 * std::f32::consts::PI * t;
            tones.push(a * (w * r).sin() + a * (w * c + 1.0).sin());
        }
        tones.extend(std::iter::repeat_n(0.0, gap_ms * 8));
    }
    let mixed: Vec<i16> = tones
        .iter()
        .zip(speech.iter().cycle())
        .map(|(t, &s)| (t + s as f32 * speech_gain).clamp(-32768.0, 32767.0) as i16)
        .collect();
    through_ulaw(&mixed)
}

/// Longest common subsequence: keys found in order, ignoring extras.
fn found_in_order(got: &str, want: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (got.chars().collect(), want.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            d[i][j] = if a[i - 1] == b[j - 1] {
                d[i - 1][j - 1] + 1
            } else {
                d[i - 1][j].max(d[i][j - 1])
            };
        }
    }
    d[a.len()][b.len()]
}

#[test]
fn keys_pressed_over_speech_are_found_as_well_as_spandsp_finds_them() {
    require("open_jtalk");
    let dir = scratch("talkoff-keys");
    let spandsp = Spandsp::build(&dir);
    let speech = open_jtalk(&dir, 1.0, 0.0).pcm;
    let keys = "1234567890*#".repeat(4);
    // (tone ms, key level dBm0 per tone, speech gain): a press during our
    // prompt's echo at 6 dB return loss, at the prompt's own level, and
    // quiet or short presses.
    for (tone_ms, dbm0, gain, must_find_all) in [
        (100, -10.0, 0.5, true),
        (50, -10.0, 0.5, false),
        (100, -10.0, 1.0, false),
        (60, -15.0, 0.5, false),
        (100, -20.0, 0.5, false),
    ] {
        let audio = keys_over_speech(&speech, &keys, tone_ms, 700, dbm0, gain);
        let ours = callout_digits(&audio);
        let theirs = spandsp.digits("keys", &audio);
        let (a, b) = (found_in_order(&ours, &keys), found_in_order(&theirs, &keys));
        eprintln!(
            "{tone_ms} ms at {dbm0} dBm0 over speech x{gain}: callout {a}/{} (+{} extra), spandsp {b}/{} (+{} extra)",
            keys.len(),
            ours.len() - a,
            keys.len(),
            theirs.len() - b
        );
        if must_find_all {
            assert_eq!(a, keys.len(), "{tone_ms} ms at {dbm0} dBm0: {ours}");
        }
        // On the hard cases (keys as loud as the speech under them), within
        // a tenth of what the reference finds.
        assert!(
            a * 10 >= b * 9,
            "{tone_ms} ms at {dbm0} dBm0: callout {a}, spandsp {b}"
        );
        assert!(ours.len() - a <= 2, "extra digits: {ours}");
    }
}

//! `callout dtmf detect` on audio made by independent tools: sox for
//! tones, espeak-ng for speech (talk-off).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const KEYS: &str = "0123456789*#ABCD";

fn sox(args: &[&str]) {
    require("sox");
    let st = Command::new("sox").args(args).status().unwrap();
    assert!(st.success(), "sox {args:?}");
}

fn detect(file: &Path) -> Vec<(char, u64)> {
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dtmf", "detect"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (d, t) = l.split_once(' ').expect("DIGIT SPACE MS");
            (d.chars().next().unwrap(), t.parse().unwrap())
        })
        .collect()
}

fn freqs(k: char) -> (u32, u32) {
    let (r, c) = callout::media::inband::key_freqs(k).unwrap();
    (r as u32, c as u32)
}

/// All 16 keys, 40 ms tone and 40 ms gap (the ITU minimum), made by sox,
/// at `vol` of full scale per tone.
fn sixteen_keys(dir: &Path, vol: &str, scale: f64) -> std::path::PathBuf {
    let gap = dir.join("gap.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        gap.to_str().unwrap(),
        "trim",
        "0",
        "0.04",
    ]);
    let mut parts = vec![gap.to_str().unwrap().to_string()];
    for (i, k) in KEYS.chars().enumerate() {
        let (r, c) = freqs(k);
        let f = dir.join(format!("k{i}.wav"));
        sox(&[
            "-n",
            "-r",
            "8000",
            "-b",
            "16",
            "-c",
            "1",
            f.to_str().unwrap(),
            "synth",
            "0.04",
            "sine",
            &format!("{}", r as f64 * scale),
            "sine",
            &format!("{}", c as f64 * scale),
            "vol",
            vol,
        ]);
        parts.push(f.to_str().unwrap().to_string());
        parts.push(gap.to_str().unwrap().to_string());
    }
    let all = dir.join(format!("all-{vol}-{scale}.wav"));
    let mut args: Vec<&str> = parts.iter().map(String::as_str).collect();
    args.push(all.to_str().unwrap());
    sox(&args);
    all
}

#[test]
fn all_sixteen_keys_at_itu_minimum_timing() {
    let dir = scratch("dtmf16");
    for vol in ["0.5", "0.05"] {
        let got = detect(&sixteen_keys(&dir, vol, 1.0));
        let keys: String = got.iter().map(|d| d.0).collect();
        assert_eq!(keys, KEYS, "at vol {vol}");
        // Key i starts at 40 + 80*i ms.
        for (i, (_, t)) in got.iter().enumerate() {
            let want = 40 + 80 * i as i64;
            assert!(
                (*t as i64 - want).abs() <= 10,
                "key {i} at {t} ms, want {want}"
            );
        }
    }
}

#[test]
fn frequency_tolerance_with_sox_tones() {
    let dir = scratch("dtmftol");
    for scale in [0.985, 1.015] {
        let got: String = detect(&sixteen_keys(&dir, "0.3", scale))
            .iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(got, KEYS, "{scale} must be accepted");
    }
    for scale in [0.965, 1.035] {
        let got = detect(&sixteen_keys(&dir, "0.3", scale));
        assert!(got.is_empty(), "{scale} must be rejected: {got:?}");
    }
}

#[test]
fn speech_and_music_give_no_digits() {
    require("espeak-ng");
    let dir = scratch("talkoff");
    let mut files = Vec::new();
    for (i, (voice, text)) in [
        ("en", "This is an alert from the monitoring centre. The web server in Tokyo is not responding. Press one to acknowledge, two to pass it on, nine to hear this again. Zero one two three four five six seven eight nine."),
        ("en-us", "She sells sea shells by the sea shore. Peter Piper picked a peck of pickled peppers. How much wood would a woodchuck chuck."),
        ("de", "Achtung, der Server antwortet nicht. Bitte drücken Sie die Eins, um den Alarm zu bestätigen."),
        ("fr", "Alerte: le serveur ne répond plus. Appuyez sur un pour confirmer."),
    ]
    .iter()
    .enumerate()
    {
        for pitch in ["20", "50", "80"] {
            let f = dir.join(format!("speech{i}-{pitch}.wav"));
            let st = Command::new("espeak-ng").args(["-v", voice, "-p", pitch, "-w"]).arg(&f).arg(text).status().unwrap();
            assert!(st.success());
            files.push((f, format!("{voice} pitch {pitch}")));
        }
    }
    let music = dir.join("music.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        music.to_str().unwrap(),
        "synth",
        "8",
        "pluck",
        "C4",
        "pluck",
        "E4",
        "pluck",
        "G4",
        "pluck",
        "C5",
    ]);
    files.push((music, "plucked chords".into()));
    let chirp = dir.join("chirp.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        chirp.to_str().unwrap(),
        "synth",
        "5",
        "sine",
        "300-3400",
    ]);
    files.push((chirp, "sweep".into()));
    for (f, what) in files {
        let got = detect(&f);
        assert!(got.is_empty(), "{what}: false digits {got:?}");
    }
}

#[test]
fn a_missing_or_broken_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dtmf", "detect", "/no/such.wav"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read WAV file /no/such.wav"), "{err}");
    let dir = scratch("badwav");
    std::fs::write(dir.join("bad.wav"), b"RIFF\x10\0\0\0WAVEjunk").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dtmf", "detect"])
        .arg(dir.join("bad.wav"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

//! The fuzz targets of `src/fuzzing` on stable Rust, as CI runs them: each
//! target replays its committed corpus (`fuzz/corpus/<target>/`), then
//! mutates it with a fixed-seed mutator for `CALLOUT_FUZZ_SECS` seconds
//! (default 15). No coverage feedback: `cargo +nightly fuzz run` in
//! `fuzz/` is the deeper search; this keeps every target exercised on
//! every change and every crash the fuzzer ever found fixed.
//!
//! On a panic (a crash in the code under test or a broken invariant) the
//! input is shrunk, written under the test's tmp dir, hex-dumped, and the
//! test fails with the command that replays it:
//! `CALLOUT_FUZZ_REPRO=FILE cargo test --release --test fuzz_corpus TARGET`.
//! An input that runs longer than `CALLOUT_FUZZ_HANG_SECS` (default 20) is
//! saved the same way and the process aborts.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use callout::fuzzing::{self, Target};

macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            run(stringify!($name));
        }
    )*};
}

fuzz_tests!(
    sip_message,
    sip_dialog,
    sdp,
    rtp_session,
    rtcp,
    wav,
    dialplan,
    flow,
    api,
    intake,
    mail
);

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let tested = [
        "sip_message",
        "sip_dialog",
        "sdp",
        "rtp_session",
        "rtcp",
        "wav",
        "dialplan",
        "flow",
        "api",
        "intake",
        "mail",
    ];
    for (name, _) in fuzzing::TARGETS {
        assert!(tested.contains(name), "no test runs target {name}");
        assert!(!corpus(name).is_empty(), "fuzz/corpus/{name}/ is empty");
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs"));
        assert!(bin.exists(), "no cargo-fuzz target {}", bin.display());
    }
}

/// A target's share of `CALLOUT_FUZZ_SECS`. The JSON intake parsers are
/// small and fast (a few hundred thousand inputs a second), so a fifth of
/// the budget covers them and keeps CI time for the SIP and media targets.
fn share(name: &str) -> f64 {
    match name {
        "intake" | "rtcp" => 0.2,
        "mail" => 1.0 / 3.0,
        _ => 1.0,
    }
}

fn env_secs(name: &str, default: f64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
        .collect()
}

thread_local! {
    /// Set while shrinking, so the panics it provokes stay quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

fn panics(t: Target, data: &[u8]) -> Option<String> {
    match panic::catch_unwind(AssertUnwindSafe(|| t(data))) {
        Ok(_) => None,
        Err(e) => Some(
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into()),
        ),
    }
}

/// Run one target: the corpus, then mutations until the time is up.
fn run(name: &str) {
    let t = fuzzing::target(name).expect("target listed in src/fuzzing");
    if let Ok(file) = std::env::var("CALLOUT_FUZZ_REPRO") {
        // Replay without catching, so the panic and its backtrace show.
        let data = std::fs::read(&file).expect("CALLOUT_FUZZ_REPRO names a readable file");
        t(&data);
        return;
    }
    install_quiet_hook();
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ is empty");
    let watch = Watchdog::start(name);
    for (path, data) in &seeds {
        watch.feed(data);
        if let Some(msg) = panics(t, data) {
            fail(
                name,
                t,
                data,
                &format!("corpus file {}: {msg}", path.display()),
            );
        }
    }
    let budget = env_secs("CALLOUT_FUZZ_SECS", 15.0).mul_f64(share(name));
    let seed = std::env::var("CALLOUT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0ca1_1007u64)
        ^ fnv(name.as_bytes());
    let mut rng = Rng(seed | 1);
    let dict = dictionary(name);
    let mut pool: Vec<Vec<u8>> = seeds.iter().map(|(_, d)| d.clone()).collect();
    let originals = pool.len();
    let started = Instant::now();
    let (mut execs, mut accepted) = (0u64, 0u64);
    while started.elapsed() < budget {
        for _ in 0..16 {
            let base = &pool[rng.below(pool.len())];
            let other = &pool[rng.below(pool.len())];
            let input = mutate(&mut rng, base, other, dict);
            watch.feed(&input);
            execs += 1;
            match panic::catch_unwind(AssertUnwindSafe(|| t(&input))) {
                Ok(true) => {
                    accepted += 1;
                    // Keep some inputs that parsed: mutating them reaches
                    // deeper than mutating the seeds alone.
                    if rng.below(16) == 0 {
                        if pool.len() < 2048 {
                            pool.push(input);
                        } else {
                            let i = originals + rng.below(pool.len() - originals);
                            pool[i] = input;
                        }
                    }
                }
                Ok(false) => {}
                Err(_) => fail(name, t, &input, "mutated input"),
            }
        }
    }
    watch.stop();
    eprintln!(
        "fuzz {name}: {} corpus files, {execs} mutated inputs in {:.1} s ({accepted} parsed), seed {seed:#x}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Shrink, save, dump and fail.
fn fail(name: &str, t: Target, data: &[u8], what: &str) -> ! {
    let first = {
        QUIET.with(|q| q.set(true));
        let m = panics(t, data);
        QUIET.with(|q| q.set(false));
        m.unwrap_or_else(|| "panicked once, not on replay".into())
    };
    let small = shrink(t, data);
    let path = save(name, &small, "crash");
    panic!(
        "fuzz target {name} panicked on a {what}: {first}\n\
         input ({} bytes, shrunk from {}) saved to {}\n{}\n\
         replay: CALLOUT_FUZZ_REPRO={} cargo test --release --test fuzz_corpus {name}\n\
         after the fix, copy it to fuzz/corpus/{name}/ as a regression seed",
        small.len(),
        data.len(),
        path.display(),
        hexdump(&small),
        path.display()
    );
}

/// Drop chunks while the target still panics.
fn shrink(t: Target, data: &[u8]) -> Vec<u8> {
    QUIET.with(|q| q.set(true));
    let mut cur = data.to_vec();
    let mut tries = 0;
    let mut chunk = cur.len().next_power_of_two() / 2;
    while chunk >= 1 && tries < 4000 {
        let mut i = 0;
        while i < cur.len() && tries < 4000 {
            let end = (i + chunk).min(cur.len());
            let mut cand = cur[..i].to_vec();
            cand.extend_from_slice(&cur[end..]);
            tries += 1;
            if panics(t, &cand).is_some() {
                cur = cand;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    QUIET.with(|q| q.set(false));
    cur
}

fn save(name: &str, data: &[u8], kind: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}-{kind}-{:016x}", fnv(data)));
    std::fs::write(&path, data).expect("write the failing input");
    path
}

fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, row) in data.chunks(16).take(256).enumerate() {
        out.push_str(&format!("{:08x} ", i * 16));
        for b in row {
            out.push_str(&format!(" {b:02x}"));
        }
        out.push_str(&"   ".repeat(16 - row.len()));
        out.push_str("  |");
        out.extend(row.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    if data.len() > 4096 {
        out.push_str("...\n");
    }
    out
}

/// Saves the input and aborts when one runs too long: a hang never
/// returns to `catch_unwind`.
struct Watchdog {
    current: Arc<Mutex<(Instant, Vec<u8>)>>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: &str) -> Watchdog {
        let current = Arc::new(Mutex::new((Instant::now(), Vec::new())));
        let done = Arc::new(AtomicBool::new(false));
        let limit = env_secs("CALLOUT_FUZZ_HANG_SECS", 20.0);
        let (c, d, name) = (current.clone(), done.clone(), name.to_string());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let cur = c.lock().unwrap_or_else(|e| e.into_inner());
                if cur.0.elapsed() > limit && !d.load(Ordering::Relaxed) {
                    let path = save(&name, &cur.1, "hang");
                    eprintln!(
                        "fuzz target {name}: one input ran over {limit:?}; saved to {}\n{}\nreplay: CALLOUT_FUZZ_REPRO={} cargo test --release --test fuzz_corpus {name}",
                        path.display(),
                        hexdump(&cur.1),
                        path.display()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { current, done }
    }

    fn feed(&self, data: &[u8]) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.0 = Instant::now();
        cur.1.clear();
        cur.1.extend_from_slice(data);
    }

    fn stop(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: fixed seed, same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Larger than any target accepts (SIP's 64 KiB), so size limits are hit.
const MAX_INPUT: usize = 70 * 1024;

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b' ', b'\t', b':', b';', b',', b'"', b'=', b'/', b'0',
    b'9', b'%',
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "4294967296",
    "99999999999999999999",
    "1e999",
    "0x10",
    "00000000001",
];

/// Stack one to eight mutations: bit flips, special bytes, inserts,
/// deletes, duplicated ranges, splices with another input, truncation,
/// dictionary words and odd numbers.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut v = base.to_vec();
    let rounds = 1 << rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    v.insert(i, rng.next() as u8);
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(16)).min(len - i);
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(64)).min(len - i);
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                let most = if rng.below(8) == 0 { 512 } else { 2 };
                let times = 1 + rng.below(most);
                for _ in 0..times {
                    v.splice(at..at, chunk.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => v.truncate(rng.below(len)),
            7 | 8 if !dict.is_empty() => {
                let word = dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                if rng.below(2) == 0 || i + word.len() > len {
                    v.splice(i..i, word.iter().copied());
                } else {
                    v[i..i + word.len()].copy_from_slice(word);
                }
            }
            9 => {
                // Replace a run of digits with an awkward number.
                let from = rng.below(len + 1);
                if let Some(start) = (from..len).find(|&k| v[k].is_ascii_digit()) {
                    let end = (start..len)
                        .find(|&k| !v[k].is_ascii_digit())
                        .unwrap_or(len);
                    let n = NUMBERS[rng.below(NUMBERS.len())];
                    v.splice(start..end, n.bytes());
                }
            }
            _ if len > 1 => {
                // Swap two bytes.
                let (a, b) = (rng.below(len), rng.below(len));
                v.swap(a, b);
            }
            _ => v.push(rng.next() as u8),
        }
        v.truncate(MAX_INPUT);
    }
    v
}

fn dictionary(name: &str) -> &'static [&'static [u8]] {
    match name {
        "sip_message" | "sip_dialog" => &[
            b"\r\n",
            b"\r\n\r\n",
            b"\n%%\n",
            b": ",
            b";",
            b",",
            b"<",
            b">",
            b"\"",
            b"\\",
            b" SIP/2.0",
            b"SIP/2.0 ",
            b"Content-Length: ",
            b"l: ",
            b"Via: SIP/2.0/UDP ",
            b";branch=z9hG4bK",
            b";tag=",
            b";received=",
            b";rport",
            b"CSeq: ",
            b"Call-ID: ",
            b"From: ",
            b"To: ",
            b"Contact: ",
            b"Record-Route: ",
            b"Route: ",
            b"INVITE",
            b"ACK",
            b"BYE",
            b"CANCEL",
            b"OPTIONS",
            b"INFO",
            b"REGISTER",
            b"WWW-Authenticate: Digest ",
            b"Proxy-Authenticate: Digest ",
            b"realm=\"",
            b"nonce=\"",
            b"qop=\"auth\"",
            b"qop=\"auth-int\"",
            b"algorithm=SHA-256",
            b"algorithm=MD5-sess",
            b"stale=true",
            b"sip:",
            b"sips:",
            b"tel:",
            b"Content-Type: application/sdp\r\n",
            b"application/dtmf-relay",
            b"Signal=",
            b"Duration=",
            b"Expires: ",
            b";expires=",
            b"$CALLID",
            b"$BRANCH",
            b"$FROMTAG",
            b"$CSEQ",
            b"$VIA",
            b"$FROM",
            b"$TO",
            b"$METHOD",
            b"$RCALLID",
            b"$RBRANCH",
            b"$RVIA",
            b"$RCSEQ",
            b"$LVIA",
            b"$LCSEQ",
            b"$LMETHOD",
            b"SIP/2.0 200 OK\r\n",
            b"SIP/2.0 401 Unauthorized\r\n",
            b"SIP/2.0 180 Ringing\r\n",
        ],
        "sdp" => &[
            b"v=0\r\n",
            b"o=- 1 1 IN IP4 127.0.0.1\r\n",
            b"c=IN IP4 ",
            b"c=IN IP6 ",
            b"c=IN IP4 224.2.1.1/127\r\n",
            b"m=audio ",
            b"m=video ",
            b" RTP/AVP ",
            b"a=rtpmap:",
            b"telephone-event/8000",
            b"PCMU/8000",
            b"PCMA/8000",
            b"a=fmtp:",
            b"0-15",
            b"a=sendonly\r\n",
            b"a=inactive\r\n",
            b" RTP/SAVP ",
            b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:",
            b"a=rtcp-mux\r\n",
            b"|2^31",
            b"|1:4",
            b"\r\n",
            b" 0",
            b" 8",
            b" 101",
            b"/2",
            b"::1",
            b"127.0.0.1",
        ],
        "rtp_session" => &[
            &[0x80, 0x00],
            &[0x80, 0x65],
            &[0x80, 0xe5],
            &[0x80, 0x08],
            &[0x80, 0x0d],
            &[0x90],
            &[0xa0],
            &[0x12, 0x34, 0x56, 0x78],
            &[0x05, 0x8a, 0x03, 0x20],
            &[0x01, 0x0a, 0x00, 0xa0],
            &[0xff; 4],
            &[0; 4],
            &[0x14, 0xac],
            &[0x15, 0xac],
        ],
        "rtcp" => &[
            &[0x80, 200],
            &[0x81, 201],
            &[0x81, 202],
            &[0x80, 203],
            &[0x9f],
            &[0x00, 0x06],
            &[0x00, 0xff],
            &[0xff; 4],
            &[0; 4],
            b"|RTCP|",
        ],
        "wav" => &[
            b"RIFF",
            b"WAVE",
            b"fmt ",
            b"data",
            b"LIST",
            b"fact",
            &[0xfe, 0xff],
            &[1, 0],
            &[3, 0],
            &[0xff; 4],
            &[0; 4],
            &[0x40, 0x1f, 0, 0],
            &[0x44, 0xac, 0, 0],
            &[1, 0, 0, 0],
            &[16, 0],
            &[8, 0],
            &[24, 0],
            &[32, 0],
        ],
        "dialplan" | "flow" => &[
            b"\n[",
            b"]\n",
            b"[[",
            b"]]",
            b" = ",
            b"\"",
            b"'''",
            b"\"\"\"",
            b"{",
            b"}",
            b"[]",
            b"\\u0000",
            b"contract",
            b"contacts",
            b"escalation",
            b"rounds",
            b"menu",
            b"keys",
            b"pin",
            b"action",
            b"actions",
            b"flow",
            b"steps",
            b"params",
            b"check",
            b"execute",
            b"verify",
            b"ssh",
            b"http",
            b"command",
            b"argv",
            b"{host}",
            b"{",
            b"window",
            b"timezone",
            b"\"1m\"",
            b"\"0s\"",
            b"1e9",
            b"-1",
            b"9223372036854775808",
            b"dtmf",
            b"trunk",
            b"voice",
            b"\"ack\"",
            b"\"pass\"",
        ],
        "api" => &[
            b"Bearer ",
            b"bearer\t",
            b"\n",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"contract\":",
            b"\"ticket\":",
            b"\"variables\":",
            b"\"params\":",
            b"\"host\":",
            b"\"summary\":",
            b"\"dry_run\":",
            b"\"globex-db\"",
            b"\"contact_name\"",
            b"\"host\"",
            b"null",
            b"true",
            b"1e999",
            b"-0",
            b"\\u0000",
            b"\\ud800",
            b"\\\"",
            b"'",
            b"\\n",
            b"\xff",
            b"\xe3\x81\x82",
        ],
        "intake" => &[
            b"{",
            b"}",
            b"[",
            b"]",
            b"null",
            b"\"\"",
            b"\"version\":\"4\",",
            b"\"version\":\"1\",",
            b"\"alerts\":[",
            b"\"events\":[",
            b"\"labels\":{",
            b"\"annotations\":{",
            b"\"commonLabels\":{",
            b"\"contract\":",
            b"\"instance\":\"[::1]:9100\"",
            b"\"instance\":\"https://u@h:1/p\"",
            b"\"status\":\"resolved\"",
            b"\"status\":\"firing\"",
            b"\"startsAt\":\"0001-01-01T00:00:00Z\"",
            b"\"2024-05-01T19:00:00.5+09:00\"",
            b"\"2015-07-17T08:42:58.315+0000\"",
            b"\"fingerprint\":",
            b"\"values\":{\"B\":1e308}",
            b"\"event_action\":\"trigger\"",
            b"\"event_action\":\"acknowledge\"",
            b"\"event_action\":\"resolve\"",
            b"\"dedup_key\":",
            b"\"routing_key\":",
            b"\"payload\":{",
            b"\"summary\":",
            b"\"custom_details\":{",
            b"\\u0000",
            b"\\ud800",
            b"\xe3\x81\x82",
            b"\xff",
        ],
        "mail" => &[
            b"\r\n",
            b"\r\n\r\n",
            b"\r\n.\r\n",
            b"\n.",
            b"Content-Type: multipart/mixed; boundary=b\r\n",
            b"Content-Type: text/plain; charset=",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"--b\r\n",
            b"--b--\r\n",
            b"iso-2022-jp",
            b"shift_jis",
            b"euc-jp",
            b"=?iso-2022-jp?B?",
            b"=?utf-8?q?",
            b"?=",
            b"\x1b$B",
            b"\x1b(B",
            b"=\r\n",
            b"=E3=81",
            b"Subject: [PROBLEM] ",
            b"Subject: [RECOVERY] ",
            b"<br>",
            b"&amp;",
            b"&#x",
            b"<script>",
            b"EHLO x\r\n",
            b"MAIL FROM:<a@b> SIZE=99999999999\r\n",
            b"RCPT TO:<alerts@acme.example>\r\n",
            b"DATA\r\n",
            b"STARTTLS\r\n",
            b"RSET\r\n",
        ],
        _ => &[],
    }
}

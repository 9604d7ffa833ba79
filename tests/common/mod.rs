//! Helpers for tests that start real peers (sipp, baresip) on 127.0.0.1.
#![allow(dead_code)]

pub mod early_callee;
pub mod node;
pub mod peer;
pub mod serve;
pub mod sshd;

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use callout::media::g711::linear_to_ulaw;
use callout::media::inband::key_freqs;

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A UDP port pair (even, and the next odd one) free right now on 127.0.0.1.
pub fn free_port_pair() -> u16 {
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        // Spread test processes apart so parallel test binaries rarely
        // meet, below the kernel's ephemeral range (32768-60999 by
        // default): a port the OS hands out to an outgoing connection or
        // a `:0` bind meanwhile cannot be taken between the pick and the
        // peer's bind.
        let base = 10000 + (std::process::id() % 220) as u16 * 100;
        let _ = NEXT_PORT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        // sipp uses the media port and the three above it (RTCP, video).
        let p = NEXT_PORT.fetch_add(4, Ordering::Relaxed);
        // Free for TCP too: the port often becomes a service's API, and
        // outgoing connections take local ports from the same range.
        if UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
}

pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run .ci/run or `apt-get install sip-tester baresip sox espeak-ng`");
}

/// A running sipp process.
pub struct Sipp {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Sipp {
    /// Start sipp as a UAS with `scenario` (a file under tests/sipp) in
    /// `dir` (where pcaps it plays live), for one call.
    pub fn uas(scenario: &str, dir: &Path, extra: &[&str]) -> Sipp {
        require("sipp");
        let port = free_port_pair();
        let media = free_port_pair();
        let scen = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir)
            .args(["-sf", scen.to_str().unwrap()])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args([
                "-m",
                "1",
                "-timeout",
                "30s",
                "-timeout_error",
                "-trace_msg",
                "-trace_err",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start sipp");
        // sipp binds its socket within a few ms; wait until the port is taken.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Sipp {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn uri(&self) -> String {
        format!("sip:bob@127.0.0.1:{}", self.port)
    }

    /// Wait for sipp to finish; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "sipp did not finish within {limit:?}; messages:\n{}",
                    self.messages()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// sipp's message trace (all it sent and received).
    pub fn messages(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("_messages.log") || name.ends_with("_errors.log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, failed or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `callout` with arguments; return exit status, JSON lines, stderr.
pub fn callout(args: &[&str]) -> (ExitStatus, Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(args)
        .output()
        .expect("run callout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    (
        out.status,
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn prompt() -> String {
    format!("{}/prompts/press-a-key.wav", env!("CARGO_MANIFEST_DIR"))
}

/// Events of a given name from callout's JSON lines.
pub fn events<'a>(lines: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["event"] == name).collect()
}

pub fn result(lines: &[serde_json::Value]) -> &serde_json::Value {
    lines.last().expect("a result line")
}

/// A minimal pcap writer: Ethernet + IPv4 + UDP frames, which is what
/// sipp's play_pcap_audio reads. sipp rewrites the addresses and ports.
pub struct Pcap {
    buf: Vec<u8>,
}

impl Pcap {
    pub fn new() -> Pcap {
        let mut buf = Vec::new();
        buf.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&65535u32.to_le_bytes());
        buf.extend_from_slice(&1u32.to_le_bytes());
        Pcap { buf }
    }

    pub fn udp(&mut self, at_us: u64, payload: &[u8]) {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        let sum = ip_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(payload);
        self.buf
            .extend_from_slice(&((at_us / 1_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&((at_us % 1_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&frame);
    }

    pub fn write(&self, path: &Path) {
        std::fs::File::create(path)
            .unwrap()
            .write_all(&self.buf)
            .unwrap();
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, ((marker as u8) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// RFC 4733 presses: each `(digit, start_ms, duration_ms)` as a start
/// packet (marker), updates every 20 ms, and three end packets.
/// `redundant_starts` repeats each start packet, as some gateways do.
pub fn rfc4733_pcap(path: &Path, presses: &[(char, u64, u64)], redundant_starts: bool) {
    let mut pcap = Pcap::new();
    let mut seq: u16 = 1000;
    for &(digit, start_ms, dur_ms) in presses {
        let ev = "0123456789*#ABCD".find(digit).unwrap() as u8;
        let ts = (start_ms * 8) as u32;
        let steps = (dur_ms / 20).max(1);
        let mut send = |pcap: &mut Pcap, at_ms: u64, marker: bool, end: bool, d: u64| {
            let d = (d * 8) as u16;
            let payload = [
                ev,
                if end { 0x80 | 10 } else { 10 },
                (d >> 8) as u8,
                d as u8,
            ];
            pcap.udp(at_ms * 1000, &rtp(101, marker, seq, ts, &payload));
            seq = seq.wrapping_add(1);
        };
        for i in 0..steps {
            send(&mut pcap, start_ms + i * 20, i == 0, false, (i + 1) * 20);
            if i == 0 && redundant_starts {
                send(&mut pcap, start_ms + 1, true, false, 20);
            }
        }
        // RFC 4733 2.5.1.4: the end packet three times.
        for k in 0..3 {
            send(&mut pcap, start_ms + steps * 20 + k, false, true, dur_ms);
        }
    }
    pcap.write(path);
}

/// In-band presses as PCMU audio, 20 ms packets, silence between, from 0
/// to `total_ms`. Tone level is per tone, as a 16-bit peak.
pub fn inband_pcap(path: &Path, presses: &[(char, u64, u64)], total_ms: u64, level: f32) {
    let mut pcap = Pcap::new();
    for (i, t) in (0..total_ms).step_by(20).enumerate() {
        let mut payload = [0xFFu8; 160];
        for (n, b) in payload.iter_mut().enumerate() {
            let ms = t as f32 + n as f32 / 8.0;
            for &(digit, start, dur) in presses {
                if ms >= start as f32 && ms < (start + dur) as f32 {
                    let (r, c) = key_freqs(digit).unwrap();
                    let s = (ms / 1000.0) * 2.0 * std::f32::consts::PI;
                    let v = level * ((r * s).sin() + (c * s).sin());
                    *b = linear_to_ulaw(v as i16);
                }
            }
        }
        pcap.udp(
            t * 1000,
            &rtp(0, i == 0, i as u16, (t * 8) as u32, &payload),
        );
    }
    pcap.write(path);
}

/// A headless baresip that auto-answers, sends `source_wav`, records what
/// it hears (sndfile), and takes commands on ctrl_tcp.
pub struct Baresip {
    pub child: Child,
    pub sip_port: u16,
    pub ctrl_port: u16,
    pub dir: PathBuf,
}

impl Baresip {
    pub fn start(dir: &Path, source_wav: &Path) -> Baresip {
        Baresip::start_for(dir, source_wav, 60)
    }

    /// The same, quitting after `secs` seconds instead of 60 (tests that
    /// take several calls).
    pub fn start_for(dir: &Path, source_wav: &Path, secs: u32) -> Baresip {
        Baresip::start_account(
            dir,
            source_wav,
            secs,
            "<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA",
        )
    }

    /// The same with its own `accounts` line (e.g. one that registers).
    pub fn start_account(dir: &Path, source_wav: &Path, secs: u32, account: &str) -> Baresip {
        require("baresip");
        // free_port_pair checks UDP only; baresip also binds SIP over TCP
        // and TLS (sip_port + 1) and exits when one is taken, so ports are
        // checked for TCP too and a start that dies is retried.
        let tcp_free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        for _ in 0..5 {
            let sip_port = free_port_pair();
            let ctrl_port = free_port_pair();
            if ![sip_port, sip_port + 1, ctrl_port]
                .into_iter()
                .all(tcp_free)
            {
                continue;
            }
            if let Some(b) = Self::try_start(dir, source_wav, secs, sip_port, ctrl_port, account) {
                return b;
            }
        }
        panic!(
            "baresip would not start: {}",
            std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
        );
    }

    fn try_start(
        dir: &Path,
        source_wav: &Path,
        secs: u32,
        sip_port: u16,
        ctrl_port: u16,
        account: &str,
    ) -> Option<Baresip> {
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\n\
             audio_player aubridge,nil\naudio_source aufile,{src}\naudio_alert aubridge,nil\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n\
             module sndfile.so\nmodule_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\nsnd_path {dir}\n",
            src = source_wav.display(),
            dir = dir.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let mut child = Command::new("baresip")
            .args(["-f", dir.to_str().unwrap(), "-t", &secs.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start baresip");
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", ctrl_port)).is_ok() {
                break;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Up, but a transport that failed to bind stops it a moment later.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        Some(Baresip {
            child,
            sip_port,
            ctrl_port,
            dir: dir.to_path_buf(),
        })
    }

    pub fn uri(&self) -> String {
        format!("sip:bob@127.0.0.1:{}", self.sip_port)
    }

    /// Send a ctrl_tcp command (netstring-framed JSON); returns the reply.
    pub fn command(&self, command: &str, params: &str) -> String {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("ctrl_tcp");
        let body = serde_json::json!({"command": command, "params": params}).to_string();
        s.write_all(format!("{}:{},", body.len(), body).as_bytes())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The WAV baresip recorded of what it received.
    pub fn heard(&self) -> Option<PathBuf> {
        std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("baresip.log")).unwrap_or_default())
            .into_owned()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Energy envelope in 50 ms frames (RMS), for comparing audio shapes.
pub fn envelope(pcm: &[i16]) -> Vec<f64> {
    pcm.chunks(400)
        .map(|c| (c.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
        .collect()
}

/// Where `said` best matches inside `heard`: (correlation of the 50 ms
/// envelopes, offset in ms). The envelopes of `heard` are taken at five
/// phases 10 ms apart, since a recording that starts half a window off
/// the prompt's grid scores well below its true match.
#[allow(dead_code)]
pub fn best_match(said: &[i16], heard: &[i16]) -> (f64, usize) {
    let mut es = envelope(said);
    // The prompt's trailing silence may be cut by the hangup.
    while es.last().is_some_and(|&e| e < 50.0) {
        es.pop();
    }
    let mut best = (f64::MIN, 0);
    for phase in (0..400).step_by(80) {
        let eh = envelope(heard.get(phase..).unwrap_or_default());
        for lag in 0..eh.len().saturating_sub(es.len()) {
            let c = correlation(&es, &eh[lag..lag + es.len()]);
            if c > best.0 {
                best = (c, lag * 50 + phase / 8);
            }
        }
    }
    best
}

/// (contact, outcome) of each attempt of a notification, as the API shows it.
#[allow(dead_code)]
pub fn attempt_outcomes(n: &serde_json::Value) -> Vec<(String, String)> {
    n["attempts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["contact"].as_str().unwrap_or("?").into(),
                a["outcome"]["outcome"].as_str().unwrap_or("none").into(),
            )
        })
        .collect()
}

/// Pearson correlation of two sequences over their common length.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

/// RTP packets of one RFC 4733 press of event `event` (0-9: the digit)
/// with payload type `pt`, 100 ms, starting at sequence `seq0` and
/// timestamp `ts`: three updates (the first with the marker), then the
/// end three times.
pub fn rfc4733_packets(event: u8, pt: u8, seq0: u16, ts: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let steps = [
        (160u16, false),
        (480, false),
        (800, false),
        (800, true),
        (800, true),
        (800, true),
    ];
    for (i, (dur, end)) in steps.into_iter().enumerate() {
        let mut p = vec![0x80, if i == 0 { 0x80 | pt } else { pt }];
        p.extend_from_slice(&seq0.wrapping_add(i as u16).to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.push(event);
        p.push(if end { 0x80 | 10 } else { 10 });
        p.extend_from_slice(&dur.to_be_bytes());
        out.push(p);
    }
    out
}

/// A dial to `uri` with every setting at its default (no trunk, no
/// proxy, 10 s ring): tests set what they are about.
pub fn plain_dial(uri: String) -> callout::driver::DialRequest {
    callout::driver::DialRequest {
        uri,
        from_uri: "sip:callout@127.0.0.1".into(),
        from_display: None,
        credentials: None,
        ring_timeout: Duration::from_secs(10),
        outbound_proxy: None,
        failover: Vec::new(),
        extra_headers: Vec::new(),
        media: Default::default(),
        advertise: Default::default(),
        redirect: Default::default(),
        codecs: Vec::new(),
        transport: Default::default(),
        next_trunks: Vec::new(),
    }
}

//! `callout bench`: measured figures, printed, never asserted. See
//! docs/benchmarks.md for how they are run and what they were.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::driver::{CallUpdate, DialRequest, Gateway};
use crate::media::audio::{read_wav_mono, resample, to_i16, Prompt, RATE};
use crate::media::inband::Detector;
use crate::sip::call::CallEvent;

pub mod first_audio;
pub mod pipeline;
pub mod reports;
mod rtp_sink;
mod sipp_media;
pub mod tickets;

/// Options of `callout bench calls`.
#[derive(Debug, Clone)]
pub struct CallsBench {
    /// Calls placed in the setup-rate phase.
    pub setup_calls: usize,
    /// Calls in flight at once during the setup-rate phase.
    pub setup_window: usize,
    /// Calls held up at once while streaming in the jitter phase.
    pub concurrent: usize,
    /// How long the concurrent calls stream.
    pub hold: Duration,
    pub prompt: PathBuf,
    /// Signal over TCP instead of UDP (both callout and sipp's UAC).
    pub tcp: bool,
    /// Signal over TLS: callout's TLS connection ends at `socat` in front
    /// of sipp's TCP UAS (sipp here is built without TLS); sipp's own UAC
    /// runs over TCP.
    pub tls: bool,
    /// Also run sipp's UAC streaming the prompt from a pcap, as many calls
    /// at once, for its CPU per stream beside callout's.
    pub peer_media: bool,
    /// Setup-rate rounds, each callout's then sipp's UAC's: on a noisy
    /// machine one 0.2 s round says little; the median ratio more.
    pub rounds: usize,
}

/// A test CA and a certificate for `localhost` signed by it, made with
/// `openssl` in `dir`: (CA file, certificate, key). rustls refuses a
/// self-signed certificate that is its own anchor, so two steps.
fn bench_ca(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, csr) = (
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
        dir.join("leaf.csr"),
    );
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )?;
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<String>>();
    let mut ca_req = words(&format!("req -x509 {ec} -days 2 -subj"));
    ca_req.extend(["/CN=callout bench CA".into(), "-keyout".into(), p(&ca_key)]);
    ca_req.extend(["-out".into(), p(&ca)]);
    let mut leaf_req = words(&format!("req {ec} -subj /CN=localhost -keyout"));
    leaf_req.extend([p(&key), "-out".into(), p(&csr)]);
    let mut sign = words("x509 -req -days 2 -CAcreateserial -in");
    sign.extend([p(&csr), "-CA".into(), p(&ca), "-CAkey".into(), p(&ca_key)]);
    sign.extend(["-out".into(), p(&cert), "-extfile".into(), p(&ext)]);
    let steps = [ca_req, leaf_req, sign];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.first().map(String::as_str).unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok((ca, cert, key))
}

/// `socat` terminating TLS on `port` (127.0.0.1) and relaying each
/// connection to sipp's TCP UAS on `to`.
fn start_tls_front(port: u16, to: u16, cert: &Path, key: &Path) -> anyhow::Result<Child> {
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            cert.display(),
            key.display()
        ))
        .arg(format!("TCP:127.0.0.1:{to}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting socat (apt-get install socat)")?;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// A sipp UAS answering every call, whose SDP sends our RTP to `sink`.
/// `tls_front`: the port of the TLS front in front of it, which its
/// Contact then names (in-dialog requests go there, over TLS).
pub(crate) fn start_sipp_uas(
    dir: &Path,
    port: u16,
    sink: u16,
    tcp: bool,
    tls_front: Option<u16>,
) -> anyhow::Result<Child> {
    let mut scenario =
        include_str!("../tests/sipp/bench_uas.xml").replace("RTP_SINK_PORT", &sink.to_string());
    if let Some(front) = tls_front {
        scenario = scenario.replace(
            "[local_port];transport=[transport]",
            &format!("{front};transport=tls"),
        );
    }
    let path = dir.join("bench_uas.xml");
    std::fs::write(&path, scenario)?;
    let child = Command::new("sipp")
        .current_dir(dir)
        .args([
            "-sf",
            path.to_str().unwrap_or_default(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-max_socket", "4096", "-buff_size", "8388608"])
        .args(if tcp { &["-t", "t1"][..] } else { &[][..] })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sipp (apt-get install sip-tester)")?;
    let until = Instant::now() + Duration::from_secs(5);
    let free = |p: u16| {
        if tcp {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        } else {
            UdpSocket::bind(("127.0.0.1", p)).is_ok()
        }
    };
    while Instant::now() < until && free(port) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// A UDP callee that answers every INVITE 486 and records when the first
/// INVITE of each notification arrived (by its `X-Callout-Notification`
/// header), by `clock`.
pub(crate) fn spawn_busy_callee<T: Send + 'static>(
    callee: UdpSocket,
    clock: impl Fn() -> T + Send + 'static,
) -> Arc<std::sync::Mutex<std::collections::HashMap<String, T>>> {
    let arrivals: Arc<std::sync::Mutex<std::collections::HashMap<String, T>>> = Arc::default();
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = callee.recv_from(&mut buf) {
            let now = clock();
            let Ok(crate::sip::message::Message::Request(req)) =
                crate::sip::message::parse(&buf[..n])
            else {
                continue;
            };
            if req.method != crate::sip::message::Method::Invite {
                continue;
            }
            if let Some(id) = req.headers.get("X-Callout-Notification") {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(id.to_string())
                    .or_insert(now);
            }
            let busy = crate::sip::message::Response::for_request(&req, 486, Some("bench"));
            let _ = callee.send_to(&busy.to_bytes(), from);
        }
    });
    arrivals
}

/// A port free on UDP and on TCP.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    loop {
        let p = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

/// Whether this process may use SCHED_FIFO (tested on a throwaway thread).
fn probe_realtime() -> bool {
    std::thread::spawn(|| crate::driver::net::try_realtime(1))
        .join()
        .unwrap_or(false)
}

/// Place calls against a sipp UAS; print setup rate, concurrency, jitter,
/// CPU and memory per call; then sipp's own UAC rate for comparison.
pub async fn calls(o: CallsBench) -> anyhow::Result<()> {
    let prompt = Prompt::load(&o.prompt)?;
    let dir = std::env::temp_dir().join(format!("callout-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sink = crate::driver::net::roomy_udp("127.0.0.1:0".parse()?)?;
    let sink_port = sink.local_addr()?.port();
    let uas_port = free_port()?;
    let stream = o.tcp || o.tls;
    let front = if o.tls { Some(free_port()?) } else { None };
    let mut uas = start_sipp_uas(&dir, uas_port, sink_port, stream, front)?;
    let mut tls_front = None;
    let mut transport = crate::sip::transport::TrunkTransport::default();
    let target = if let Some(front) = front {
        let (ca, cert, key) = bench_ca(&dir)?;
        tls_front = Some(start_tls_front(front, uas_port, &cert, &key)?);
        transport.transport = Some(crate::sip::transport::Transport::Tls);
        transport.tls = Some(crate::sip::transport::TlsSettings {
            server_name: "localhost".into(),
            ca_file: Some(ca),
            client_cert: None,
            client_key: None,
        });
        // SDES is offered (optional, the TLS default); sipp's answer has
        // no key, so media is plain RTP as on the other transports.
        format!("sip:bench@127.0.0.1:{front};transport=tls")
    } else if o.tcp {
        format!("sip:bench@127.0.0.1:{uas_port};transport=tcp")
    } else {
        format!("sip:bench@127.0.0.1:{uas_port}")
    };
    let sink = rtp_sink::Sink::start(sink);
    let gw = Gateway::start("127.0.0.1:0".parse()?, "20000-29999").await?;
    println!(
        "transport: {}",
        if o.tls {
            "tls (socat in front of sipp's tcp uas)"
        } else if o.tcp {
            "tcp"
        } else {
            "udp"
        }
    );
    let req = DialRequest {
        uri: target.clone(),
        from_uri: "sip:bench@127.0.0.1".into(),
        from_display: None,
        credentials: None,
        ring_timeout: Duration::from_secs(10),
        outbound_proxy: None,
        failover: Vec::new(),
        extra_headers: Vec::new(),
        media: Default::default(),
        advertise: Default::default(),
        redirect: crate::sip::redirect::RedirectPolicy::default(),
        codecs: Vec::new(),
        transport,
        next_trunks: Vec::new(),
    };
    let rss_idle = rss_kib();

    // Phase 1: setup rate, in rounds: callout's, then sipp's own UAC
    // against a fresh sipp UAS (same scenario and machine, signalling
    // only, over TCP for --tls).
    let mut ratios = Vec::new();
    for round in 1..=o.rounds.max(1) {
        if o.rounds > 1 {
            println!("## round {round} of {}", o.rounds);
        }
        let (n_ok, setup_secs) = setup_round(&gw, &req, o.setup_calls, o.setup_window).await?;
        println!(
            "setup: {n_ok}/{} calls answered and hung up in {setup_secs:.2} s = {:.0} calls/s (window {})",
            o.setup_calls,
            n_ok as f64 / setup_secs,
            o.setup_window
        );
        let sipp_rate = sipp_uac_round(&dir, sink_port, stream, &o)?;
        let ratio = (n_ok as f64 / setup_secs) / sipp_rate;
        println!("ratio: callout / sipp setup rate = {ratio:.2}");
        ratios.push(ratio);
    }
    if ratios.len() > 1 {
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        let median = if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] + ratios[mid]) / 2.0
        };
        println!(
            "ratio: median of {} rounds = {median:.2} (lowest {:.2}, highest {:.2})",
            ratios.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }

    // Phase 2: hold `concurrent` calls up at once, all streaming.
    let up = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..o.concurrent {
        let (gw, req, up, peak, release, prompt) = (
            gw.clone(),
            req.clone(),
            up.clone(),
            peak.clone(),
            release.clone(),
            prompt.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(mut call) = gw.dial(req).await else {
                return;
            };
            let released = release.notified();
            tokio::pin!(released);
            let mut hung_up = false;
            loop {
                tokio::select! {
                    ev = call.next() => match ev {
                        Some(CallUpdate::Sip(CallEvent::Answered(_))) => {
                            let n = up.fetch_add(1, Ordering::Relaxed) + 1;
                            peak.fetch_max(n, Ordering::Relaxed);
                            call.play(prompt.clone());
                        }
                        Some(CallUpdate::Sip(CallEvent::Ended(_))) | None => break,
                        Some(_) => {}
                    },
                    // A completed Notified stays ready; poll it only once.
                    _ = &mut released, if !hung_up => {
                        hung_up = true;
                        call.hangup();
                    }
                }
            }
        }));
        // Pace the ramp a little so the UAS is not flooded.
        if tasks.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ramp_until = Instant::now() + Duration::from_secs(30);
    while up.load(Ordering::Relaxed) < o.concurrent && Instant::now() < ramp_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the streams settle, then measure over the hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_up = rss_kib();
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    sink.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.hold).await;
    sink.recording.store(false, Ordering::Relaxed);
    let (cpu_all, held) = (
        (cpu_time() - cpu0).as_secs_f64(),
        t0.elapsed().as_secs_f64(),
    );
    release.notify_waiters();
    for t in tasks {
        let _ = t.await;
    }
    let sink = sink.finish();
    // The receiver runs in this process but is not the sender's work.
    let cpu = (cpu_all - sink.cpu.as_secs_f64()).max(0.0) / held;
    let n_up = peak.load(Ordering::Relaxed);
    println!(
        "concurrent: {n_up}/{} calls answered and streaming at once",
        o.concurrent
    );
    let rt = probe_realtime();
    println!(
        "scheduling: media clock and receiver {}",
        if rt {
            "real-time (SCHED_FIFO)"
        } else {
            "normal (no CAP_SYS_NICE)"
        }
    );
    println!("jitter: {}", sink.jitter_line());
    println!(
        "cpu: {:.1} % of one core for {n_up} streams = {:.3} % per call (the receiver thread's time left out)",
        cpu * 100.0,
        cpu * 100.0 / n_up.max(1) as f64
    );
    println!(
        "memory: RSS {rss_idle} KiB idle, {rss_up} KiB with {n_up} calls up = {:.1} KiB per call",
        (rss_up.saturating_sub(rss_idle)) as f64 / n_up.max(1) as f64
    );
    let _ = uas.kill();
    let _ = uas.wait();
    if let Some(mut f) = tls_front.take() {
        let _ = f.kill();
        let _ = f.wait();
    }

    // The peer's streams: sipp's UAC playing the same prompt from a pcap,
    // as many at once, for its CPU per stream and its jitter.
    if o.peer_media && n_up > 0 {
        match sipp_media::run(&dir, &prompt, n_up, o.hold) {
            Ok(peer) => {
                // Streams by what arrived: a stream sipp could not keep
                // at 50 packets a second counts for the part it sent.
                let flowing = peer.sink.packets as f64 / (50.0 * o.hold.as_secs_f64());
                println!(
                    "sipp uac pcap: {n_up} calls, {} sources, {flowing:.0} streams' worth of packets{}; jitter: {}",
                    peer.sink.streams,
                    if peer.all_up { "" } else { " (not all flowing)" },
                    peer.sink.jitter_line()
                );
                let per = peer.cpu * 100.0 / flowing.max(1.0);
                println!(
                    "sipp uac pcap cpu: {:.1} % of one core = {per:.3} % per stream",
                    peer.cpu * 100.0,
                );
                println!(
                    "ratio: callout / sipp cpu per stream = {:.2}",
                    (cpu * 100.0 / n_up as f64) / per.max(f64::EPSILON)
                );
            }
            Err(e) => println!("sipp uac pcap: not run: {e:#}"),
        }
    }

    let _ = std::fs::remove_dir_all(&dir);

    Ok(())
}

/// Place `n` calls, `window` at a time, each hung up as soon as it is
/// answered: (calls answered, seconds).
async fn setup_round(
    gw: &Gateway,
    req: &DialRequest,
    n: usize,
    window: usize,
) -> anyhow::Result<(usize, f64)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(window));
    let answered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let (gw, req, answered) = (gw.clone(), req.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let Ok(mut call) = gw.dial(req).await else {
                return;
            };
            while let Some(ev) = call.next().await {
                match ev {
                    CallUpdate::Sip(CallEvent::Answered(_)) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        call.hangup();
                    }
                    CallUpdate::Sip(CallEvent::Ended(_)) => break,
                    _ => {}
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok((
        answered.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    ))
}

/// sipp's own UAC against a fresh sipp UAS, as many calls as callout's
/// round: its rate in calls per second.
fn sipp_uac_round(dir: &Path, sink_port: u16, stream: bool, o: &CallsBench) -> anyhow::Result<f64> {
    let uas_port = free_port()?;
    let mut uas = start_sipp_uas(dir, uas_port, sink_port, stream, None)?;
    let started = Instant::now();
    let status = Command::new("sipp")
        .current_dir(dir)
        .args([
            "-sn",
            "uac",
            &format!("127.0.0.1:{uas_port}"),
            "-i",
            "127.0.0.1",
            "-p",
            &free_port()?.to_string(),
        ])
        .args([
            "-m",
            &o.setup_calls.to_string(),
            "-l",
            &o.setup_window.to_string(),
            "-r",
            "100000",
            "-rp",
            "1000",
        ])
        .args([
            "-timeout",
            "120s",
            "-max_socket",
            "4096",
            "-buff_size",
            "8388608",
        ])
        .args(if stream { &["-t", "t1"][..] } else { &[][..] })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let sipp_secs = started.elapsed().as_secs_f64();
    let _ = uas.kill();
    let _ = uas.wait();
    let sipp_rate = o.setup_calls as f64 / sipp_secs;
    println!(
        "sipp uac{}: {} calls in {sipp_secs:.2} s = {sipp_rate:.0} calls/s (exit {})",
        if o.tls {
            " (tcp: this sipp has no tls)"
        } else {
            ""
        },
        o.setup_calls,
        status.code().unwrap_or(-1)
    );
    Ok(sipp_rate)
}

/// `callout bench dtmf FILE`: in-band detector throughput on one core.
pub fn dtmf(file: &Path, repeat: usize) -> anyhow::Result<()> {
    let (samples, rate) = read_wav_mono(file)?;
    let pcm = to_i16(&resample(&samples, rate, RATE));
    if pcm.is_empty() {
        bail!("{} has no audio", file.display());
    }
    let mut digits = 0;
    let started = Instant::now();
    for _ in 0..repeat {
        let mut d = Detector::default();
        let mut out = Vec::new();
        // Feed in 20 ms packets, as a call would.
        for chunk in pcm.chunks(160) {
            d.process(chunk, &mut out);
        }
        digits = out.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let audio_secs = pcm.len() as f64 / RATE as f64 * repeat as f64;
    println!(
        "callout detector: {audio_secs:.0} s of audio in {secs:.3} s = {:.0}x real time ({digits} digits per pass)",
        audio_secs / secs
    );
    Ok(())
}

/// `callout bench tts`: synthesis time per second of audio for each
/// engine (cold, unique sentences), and the time of a cache hit.
pub fn tts(repeat: usize) -> anyhow::Result<()> {
    use crate::ivr::dialplan::Language;
    use crate::tts::{Tts, TtsConfig};
    let dir = std::env::temp_dir().join(format!("callout-bench-tts-{}", std::process::id()));
    let t = Tts::new(&TtsConfig {
        cache_dir: dir.clone(),
        ..TtsConfig::default()
    })?;
    for (lang, name, text) in [
        (
            Language::Ja,
            "open_jtalk (mei)",
            "ACME社の障害通知です。ウェブサーバが応答していません。対応をお願いします。番号",
        ),
        (
            Language::En,
            "espeak-ng (en-us)",
            "This is an alert for the ACME web platform. The web server is not responding. Number",
        ),
    ] {
        let mut synth = Duration::ZERO;
        let mut audio_ms = 0u64;
        for i in 0..repeat {
            let started = Instant::now();
            let p = t.render(lang, &format!("{text} {i}."))?;
            synth += started.elapsed();
            audio_ms += p.duration_ms();
        }
        let started = Instant::now();
        for _ in 0..repeat {
            t.render(lang, &format!("{text} 0."))?;
        }
        let hit = started.elapsed() / repeat as u32;
        println!(
            "{name}: {repeat} phrases, {:.1} s of audio in {:.2} s = {:.0} ms per second of audio ({:.0}x real time); cache hit {:.2} ms",
            audio_ms as f64 / 1000.0,
            synth.as_secs_f64(),
            synth.as_secs_f64() * 1000.0 / (audio_ms as f64 / 1000.0),
            (audio_ms as f64 / 1000.0) / synth.as_secs_f64(),
            hit.as_secs_f64() * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `callout bench api`: POST notifications at a fixed rate to the service
/// (in process, real HTTP, SQLite) and time each one from the POST leaving
/// the client to its INVITE arriving at a UDP callee (matched by the
/// `X-Callout-Notification` header). The callee answers 486, so every
/// escalation ends at once.
///
/// With `fresh`, every notification names a new host, so its message is
/// synthesised after the POST: POST -> INVITE then includes "audio ready".
/// With `postgres` (an admin URL), the service runs on a fresh database
/// there as a `[cluster]` node (leases, fencing), dropped at the end.
pub async fn api(
    rate: u32,
    seconds: u32,
    language: &str,
    fresh: bool,
    postgres: Option<&str>,
) -> anyhow::Result<()> {
    let Some(admin) = postgres else {
        return api_on(rate, seconds, language, fresh, None).await;
    };
    use sqlx::Connection;
    let db = format!("callout_bench_api_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await?;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => anyhow::bail!("--postgres must end with /DATABASE"),
    };
    let r = api_on(rate, seconds, language, fresh, Some(url)).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    r
}

async fn api_on(
    rate: u32,
    seconds: u32,
    language: &str,
    fresh: bool,
    postgres: Option<String>,
) -> anyhow::Result<()> {
    let (lang, message, menu) = match language {
        "ja" => (
            "ja",
            "ホスト{host}で{summary}。",
            "対応する場合は1を押してください。",
        ),
        "en" => ("en", "Alert on {host}: {summary}.", "Press 1."),
        other => bail!("unknown language {other:?}: use en or ja"),
    };
    use sha2::Digest;
    let dir = std::env::temp_dir().join(format!("callout-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("dialplans"))?;
    // The callee: records when each INVITE arrives, answers 486.
    let callee = UdpSocket::bind("127.0.0.1:0")?;
    let callee_addr = callee.local_addr()?;
    let arrivals = spawn_busy_callee(callee, Instant::now);
    std::fs::write(
        dir.join("dialplans/bench.toml"),
        format!(
            "contract = \"bench\"\nname = \"Bench\"\nlanguage = \"{lang}\"\n[escalation]\nrounds = 1\nring_timeout = \"10s\"\n\
             between_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"Callee\"\nuri = \"sip:callee@{callee_addr}\"\n\
             [message]\ntext = \"{message}\"\n[menu]\nprompt = \"{menu}\"\n[menu.keys]\n\"1\" = \"ack\"\n"
        ),
    )?;
    let token = "bench-token";
    let store_name = if postgres.is_some() {
        "PostgreSQL, one [cluster] node"
    } else {
        "SQLite"
    };
    let mut cluster = crate::cluster::ClusterConfig::default();
    if postgres.is_some() {
        cluster.node_id = Some("bench-1".into());
    }
    let config = crate::config::Config {
        listen: "127.0.0.1:0".into(),
        sip: "127.0.0.1:0".into(),
        database_url: postgres
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/data/callout.db", dir.display())),
        cluster,
        dialplans: dir.join("dialplans"),
        tts_cache: dir.join("tts"),
        tokens: vec![crate::config::TokenConfig {
            name: "bench".into(),
            sha256: sha2::Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            scopes: vec!["admin".into()],
            contracts: Vec::new(),
        }],
        ..Default::default()
    };
    let (svc, listener) = crate::serve::start(config).await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, crate::api::router(svc)).await });
    let client = reqwest::Client::new();
    // Warm the speech cache: every notification then says the same text.
    let body = move |t: u64| {
        let host = if fresh {
            format!("web-{t}")
        } else {
            "web-01".into()
        };
        serde_json::json!({"contract": "bench", "ticket": format!("B{t}"), "severity": "major", "host": host, "summary": "down"})
    };
    let warm: serde_json::Value = client
        .post(format!("{base}/v1/notifications"))
        .bearer_auth(token)
        .json(&body(0))
        .send()
        .await?
        .json()
        .await?;
    // Measured once the warm-up notification has ended: its script needs
    // every fixed phrase, so the start's prewarm is done by then (the
    // first seconds after a start are not what this measures).
    let warm_id = warm["id"].as_str().unwrap_or_default().to_string();
    for _ in 0..300 {
        let st: serde_json::Value = client
            .get(format!("{base}/v1/notifications/{warm_id}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        if !matches!(
            st["state"].as_str(),
            Some("pending" | "running" | "finishing") | None
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (rate * seconds) as u64;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut posts = Vec::new();
    let started = Instant::now();
    for t in 1..=total {
        interval.tick().await;
        let (client, base, b) = (client.clone(), base.clone(), body(t));
        posts.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = client
                .post(format!("{base}/v1/notifications"))
                .bearer_auth(token)
                .json(&b)
                .send()
                .await;
            let answered = Instant::now();
            let id = match r {
                Ok(r) if r.status().as_u16() == 202 => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string)),
                _ => None,
            };
            (sent, answered, id)
        }));
    }
    let mut results = Vec::new();
    for p in posts {
        results.push(p.await?);
    }
    let posting = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut api_ms: Vec<f64> = results
        .iter()
        .map(|(s, a, _)| (*a - *s).as_secs_f64() * 1000.0)
        .collect();
    let mut invite_ms: Vec<f64> = results
        .iter()
        .filter_map(|(s, _, id)| {
            id.as_ref()
                .and_then(|id| arrivals.get(id))
                .map(|t| (*t - *s).as_secs_f64() * 1000.0)
        })
        .collect();
    api_ms.sort_by(f64::total_cmp);
    invite_ms.sort_by(f64::total_cmp);
    let accepted = results.iter().filter(|r| r.2.is_some()).count();
    println!(
        "api ({language}, {}, {store_name}): {accepted}/{total} notifications accepted in {:.2} s ({:.0}/s offered, {:.0}/s accepted)",
        if fresh { "a new message each" } else { "cached message" },
        posting.as_secs_f64(),
        rate,
        accepted as f64 / posting.as_secs_f64()
    );
    println!(
        "POST -> 202: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&api_ms, 0.5),
        percentile(&api_ms, 0.99),
        api_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "POST -> INVITE at the callee ({} matched): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        invite_ms.len(),
        percentile(&invite_ms, 0.5),
        percentile(&invite_ms, 0.99),
        invite_ms.last().copied().unwrap_or(f64::NAN)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Observes nothing: the benchmark times the run, not the printing.
struct Quiet;

impl crate::runner::Observer for Quiet {
    fn event(&self, _v: serde_json::Value) -> crate::runner::Fut<'_> {
        Box::pin(async {})
    }

    fn checkpoint(&self, _esc: &crate::ivr::escalation::Escalation) -> crate::runner::Fut<'_> {
        Box::pin(async {})
    }
}

/// `callout bench actions`: what running a flow costs beyond the commands
/// it runs. The peer is the same commands spawned directly (tokio, no
/// shell, output piped), in the same run; then the same work as a flow
/// of `steps` command steps without a store, and with a SQLite store (the
/// slot row written before, the record after, as `callout serve` does).
pub async fn actions(runs: usize, steps: usize) -> anyhow::Result<()> {
    use crate::action::engine::StepOutcome;
    use crate::action::flow::Phase;
    use crate::action::plan::{Op, PlannedStep, RunPlan};
    use crate::action::{Actions, Requester, RunMeta};
    let argv = vec!["true".to_string()];
    let plan = RunPlan {
        contract: "bench".into(),
        action: "noop".into(),
        flow: "noop".into(),
        host: Some("web-01".into()),
        params: Default::default(),
        skip_check: true,
        steps: (0..steps)
            .map(|i| PlannedStep {
                phase: Phase::Execute,
                name: format!("step-{i}"),
                timeout_ms: 10_000,
                retries: 0,
                interval_ms: 0,
                overridden: false,
                op: Op::Command {
                    argv: argv.clone(),
                    expect_exit: vec![0],
                },
            })
            .collect(),
        secrets: Vec::new(),
    };
    let meta = |i: usize| RunMeta {
        run_id: format!("run_bench_{}_{i}", std::process::id()),
        requested_by: Requester::Cli {
            user: "bench".into(),
        },
        notification: None,
        ticket: None,
        epoch: None,
    };
    let total = runs * steps;

    // The peer: the same processes, spawned and reaped directly.
    let started = Instant::now();
    for _ in 0..total {
        let out = tokio::process::Command::new(&argv[0])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "true failed");
    }
    let direct = started.elapsed();

    let no_store = Arc::new(Actions::default());
    let started = Instant::now();
    for i in 0..runs {
        let m = meta(i);
        let _lock = no_store.claim(&plan, &m).await?;
        let rec = no_store.execute(&plan, &m, &Quiet, None).await;
        anyhow::ensure!(rec.result.is_success(), "run failed: {:?}", rec.result);
        anyhow::ensure!(rec
            .steps
            .iter()
            .all(|s| s.report.outcome == Some(StepOutcome::Ok)));
    }
    let bare = started.elapsed();

    let dir = std::env::temp_dir().join(format!("callout-bench-actions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store =
        crate::store::Store::connect(&format!("sqlite://{}/callout.db", dir.display())).await?;
    let stored = Arc::new(Actions::with_store(store));
    let started = Instant::now();
    for i in 0..runs {
        let m = meta(i);
        let _lock = stored.claim(&plan, &m).await?;
        let rec = stored.execute(&plan, &m, &Quiet, None).await;
        anyhow::ensure!(rec.result.is_success(), "run failed: {:?}", rec.result);
    }
    let with_store = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);

    let per_step = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    let per_run = |d: Duration| d.as_secs_f64() * 1e3 / runs as f64;
    println!("{runs} runs x {steps} command steps ({total} processes of `true`)");
    println!(
        "direct spawn (peer): {:.0} us per process",
        per_step(direct)
    );
    println!(
        "flow, no store:      {:.0} us per step ({:.2}x the peer), {:.2} ms per run",
        per_step(bare),
        bare.as_secs_f64() / direct.as_secs_f64(),
        per_run(bare)
    );
    println!(
        "flow, SQLite store:  {:.0} us per step ({:.2}x the peer), {:.2} ms per run; recording adds {:.2} ms per run",
        per_step(with_store),
        with_store.as_secs_f64() / direct.as_secs_f64(),
        per_run(with_store),
        per_run(with_store) - per_run(bare)
    );
    Ok(())
}

//! SRTP (SDES) over TLS and RTCP against a real peer: baresip with its
//! `srtp` module, listening on TLS with a certificate from a test CA.
//! baresip's SRTCP reports are authenticated and read on the SRTP call
//! (its view of our stream, the round trip), and our jitter of its
//! stream stays under 20 ms on loopback on both calls.
//!
//! The media of each call runs through a small relay of this test on
//! 127.0.0.2: callout advertises that address (`--rtp-advertise`) with a
//! one-pair port range, so baresip sends RTP and RTCP there; the relay
//! passes them to callout from the same port, and callout's symmetric
//! RTP (latched on the first packet that authenticates) sends back
//! through it. So the relay sees every packet both ways, and can drop or
//! tamper with them, while SIP and the keys stay inside TLS.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callout::media::audio::{read_wav_mono, resample, to_i16, Prompt};
use common::*;

/// A CA and a certificate for `localhost` signed by it: (ca, cert, key).
fn test_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// baresip answering on UDP (`sip_port`) and TLS (`sip_port + 1`), with
/// SRTP mandatory or not.
struct Peer {
    child: Child,
    sip_port: u16,
    ctrl_port: u16,
    dir: std::path::PathBuf,
}

impl Peer {
    fn start(dir: &Path, srtp: bool) -> Peer {
        require("baresip");
        require("sox");
        let src = dir.join("callee-mic.wav");
        let st = Command::new("sox")
            .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
            .arg(&src)
            .args(["synth", "30", "sine", "440", "vol", "0.05"])
            .status()
            .unwrap();
        assert!(st.success());
        let (_, cert, key) = test_ca_cached(dir);
        std::fs::write(dir.join("cert.pem"), format!("{cert}{key}")).unwrap();
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
            let config = format!(
                "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_certificate {d}/cert.pem\n\
                 net_interface 127.0.0.1\n\
                 audio_player aubridge,nil\naudio_source aufile,{src}\naudio_alert aubridge,nil\n\
                 module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n\
                 module sndfile.so\nmodule srtp.so\nmodule_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n\
                 ctrl_tcp_listen 127.0.0.1:{ctrl_port}\nsnd_path {d}\n",
                src = src.display(),
                d = dir.display()
            );
            std::fs::write(dir.join("config"), config).unwrap();
            let enc = if srtp { ";mediaenc=srtp-mand" } else { "" };
            std::fs::write(
                dir.join("accounts"),
                format!(
                    "<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA{enc}\n"
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
            let mut child = Command::new("baresip")
                .args(["-f", dir.to_str().unwrap(), "-t", "60"])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start baresip");
            let until = Instant::now() + Duration::from_secs(5);
            let mut up = false;
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", ctrl_port)).is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", sip_port + 1)).is_ok()
                {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                return Peer {
                    child,
                    sip_port,
                    ctrl_port,
                    dir: dir.to_path_buf(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "baresip would not start: {}",
            std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
        );
    }

    fn command(&self, command: &str, params: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("ctrl_tcp");
        let body = serde_json::json!({"command": command, "params": params}).to_string();
        s.write_all(format!("{}:{},", body.len(), body).as_bytes())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn heard(&self) -> Option<std::path::PathBuf> {
        std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("baresip.log")).unwrap_or_default())
            .into_owned()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn test_ca_cached(dir: &Path) -> (String, String, String) {
    let (ca, cert, key) = test_ca();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    (ca, cert, key)
}

/// What the relay did.
#[derive(Default)]
struct RelayCounts {
    to_peer: AtomicU64,
    dropped: AtomicU64,
    to_callout: AtomicU64,
    tampered: AtomicU64,
    rtcp_to_callout: AtomicU64,
    rtcp_to_peer: AtomicU64,
}

/// The media relay on 127.0.0.2:`port` (RTP) and `port + 1` (RTCP).
struct Relay {
    stop: Arc<AtomicBool>,
    counts: Arc<RelayCounts>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// `drop_every`: drop every Nth RTP packet callout sends; `tamper`:
    /// flip a payload bit in these (1-based) RTP packets baresip sends.
    fn start(port: u16, drop_every: Option<u64>, tamper: &'static [u64]) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(RelayCounts::default());
        let mut threads = Vec::new();
        // Where baresip sends RTP from: its RTCP is expected on port + 1
        // until it has sent some (so our first report is not lost).
        let rtp_peer: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        for rtcp in [false, true] {
            let rtp_peer = rtp_peer.clone();
            let p = port + u16::from(rtcp);
            let sock = UdpSocket::bind(("127.0.0.2", p)).expect("relay port");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let callout: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
            let (stop, counts) = (stop.clone(), counts.clone());
            threads.push(std::thread::spawn(move || {
                let mut peer: Option<SocketAddr> = None;
                let mut buf = [0u8; 2048];
                let (mut from_callout, mut from_peer) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let pkt = &mut buf[..n];
                    if from == callout {
                        from_callout += 1;
                        let learnt = *rtp_peer.lock().unwrap();
                        let fallback =
                            learnt.map(|a| SocketAddr::new(a.ip(), a.port() + u16::from(rtcp)));
                        let Some(to) = peer.or(fallback) else {
                            continue;
                        };
                        if !rtcp && drop_every.is_some_and(|d| from_callout % d == 0) {
                            counts.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let _ = sock.send_to(pkt, to);
                        let c = if rtcp {
                            &counts.rtcp_to_peer
                        } else {
                            &counts.to_peer
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                    } else {
                        peer = Some(from);
                        if !rtcp {
                            *rtp_peer.lock().unwrap() = Some(from);
                        }
                        from_peer += 1;
                        if !rtcp && tamper.contains(&from_peer) && n > 20 {
                            pkt[20] ^= 0x10;
                            counts.tampered.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = sock.send_to(pkt, callout);
                        let c = if rtcp {
                            &counts.rtcp_to_callout
                        } else {
                            &counts.to_callout
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Relay {
            stop,
            counts,
            threads,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An even port whose pair is free on 127.0.0.1 and 127.0.0.2.
fn media_port() -> u16 {
    loop {
        let p = free_port_pair();
        if UdpSocket::bind(("127.0.0.2", p)).is_ok()
            && UdpSocket::bind(("127.0.0.2", p + 1)).is_ok()
        {
            return p + (p % 2);
        }
    }
}

/// Dial `uri` through the relay, press 4 and 2 on baresip after `wait`,
/// and return callout's JSON lines.
fn call_through_relay(
    peer: &Peer,
    uri: &str,
    port: u16,
    extra: &[&str],
    wait: Duration,
) -> (bool, Vec<serde_json::Value>, String) {
    let range = format!("{port}-{}", port + 1);
    let prompt = prompt();
    let fixed: [&str; 13] = [
        "call",
        uri,
        "--prompt",
        prompt.as_str(),
        "--collect",
        "2",
        "--timeout",
        "25s",
        "--rtp-ports",
        range.as_str(),
        "--rtp-advertise",
        "127.0.0.2",
        "--symmetric-rtp",
    ];
    let mut args: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let caller = std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        callout(&a)
    });
    std::thread::sleep(wait);
    let reply = peer.command("sndcode", "42");
    assert!(reply.contains("\"ok\":true"), "baresip: {reply}");
    let (status, lines, stderr) = caller.join().unwrap();
    (status.success(), lines, stderr)
}

#[test]
fn srtp_over_tls_with_baresip_is_heard_and_drops_tampered_packets() {
    let dir = scratch("srtp-baresip");
    let peer = Peer::start(&dir, true);
    let ca = dir.join("ca.pem").display().to_string();
    let port = media_port();
    // Three of baresip's packets are tampered with on the way.
    let relay = Relay::start(port, None, &[150, 151, 152]);
    let uri = format!("sip:bob@127.0.0.1:{};transport=tls", peer.sip_port + 1);
    let (ok, lines, stderr) = call_through_relay(
        &peer,
        &uri,
        port,
        &[
            "--tls-ca-file",
            &ca,
            "--tls-server-name",
            "localhost",
            "--srtp",
            "required",
        ],
        Duration::from_millis(9500),
    );
    let log = peer.log();
    assert!(ok, "{stderr}\n{lines:#?}\n{log}");
    assert_eq!(result(&lines)["digits"], "42", "{lines:#?}");
    assert!(
        log.contains("SRTP is Enabled"),
        "baresip did not take SRTP: {log}"
    );
    let m = &result(&lines)["media"];
    eprintln!("srtp call media: {m}");
    assert_eq!(m["srtp"], true, "{m}");
    // The tampered packets failed authentication and were dropped: the
    // stream callout took is missing exactly those three; the keys still
    // reached callout as RFC 4733 events.
    assert_eq!(relay.counts.tampered.load(Ordering::Relaxed), 3);
    let r = &m["rtcp"];
    assert_eq!(r["local_cumulative_lost"], 3, "{m}");
    // The tampered ones, and at most one more: at hang-up baresip may
    // send a 16-byte RTCP packet (too short to carry an SRTCP index and
    // tag) that arrives before callout's media is gone. Its reports do
    // authenticate (below).
    let failed = m["srtp_auth_failed"].as_u64().unwrap_or(0);
    assert!((3..=4).contains(&failed), "{m}\n{stderr}");
    assert!(m["rtcp_sent"].as_u64().unwrap_or(0) >= 1, "{m}");
    assert!(relay.counts.rtcp_to_peer.load(Ordering::Relaxed) >= 1);
    // baresip's SRTCP reports authenticated and were read: its view of
    // our stream (nothing of ours lost on the way) and the round trip.
    assert!(relay.counts.rtcp_to_callout.load(Ordering::Relaxed) >= 1);
    assert!(r["reports"].as_u64().unwrap_or(0) >= 1, "{m}\n{stderr}");
    assert_eq!(r["remote_cumulative_lost"], 0, "{m}");
    assert!(r["rtt_ms"].as_f64().is_some_and(|t| t < 50.0), "{m}");
    // Our jitter of baresip's stream on loopback (its key presses do not
    // count: an RFC 4733 event repeats its timestamp).
    let j = r["local_jitter_ms"].as_f64().unwrap();
    assert!(j < 20.0, "jitter {j} ms: {m}");
    // No RTP from callout was readable as clear G.711: baresip decrypted
    // it, and what it heard is our prompt.
    std::thread::sleep(Duration::from_millis(300));
    let heard = peer.heard().expect("baresip recorded the call");
    let (h, rate) = read_wav_mono(&heard).unwrap();
    let heard = to_i16(&resample(&h, rate, 8000));
    let sent = Prompt::load(Path::new(&prompt())).unwrap();
    let (score, _) = best_match(&sent.pcm, &heard);
    assert!(score > 0.8, "envelope correlation {score}");
    drop(relay);

    // Asked for SRTP over UDP: refused before anything is sent.
    let (ok, lines, stderr) = {
        let (status, lines, stderr) = callout(&[
            "call",
            &format!("sip:bob@127.0.0.1:{}", peer.sip_port),
            "--prompt",
            &prompt(),
            "--srtp",
            "required",
            "--timeout",
            "2s",
        ]);
        (status.success(), lines, stderr)
    };
    assert!(!ok);
    assert!(
        stderr.contains("needs a TLS transport"),
        "{stderr}\n{lines:#?}"
    );
}

#[test]
fn rtcp_from_baresip_shows_the_loss_a_relay_causes() {
    let dir = scratch("rtcp-loss");
    let peer = Peer::start(&dir, false);
    let port = media_port();
    // Every 10th RTP packet callout sends is lost.
    let relay = Relay::start(port, Some(10), &[]);
    let uri = format!("sip:bob@127.0.0.1:{}", peer.sip_port);
    // baresip reports every ~5 s (randomised 0.5-1.5x): its first report
    // may come before our first sender report, and so carry no round
    // trip; 13 s makes sure a later one does.
    let (ok, lines, stderr) =
        call_through_relay(&peer, &uri, port, &[], Duration::from_millis(13000));
    assert!(ok, "{stderr}\n{lines:#?}\n{}", peer.log());
    let m = &result(&lines)["media"];
    eprintln!("lossy call media: {m}");
    assert_eq!(m["srtp"], false, "{m}");
    let r = &m["rtcp"];
    assert!(
        r["reports"].as_u64().unwrap_or(0) >= 1,
        "{m}\n{}",
        peer.log()
    );
    let frac = r["remote_fraction_lost_pct"].as_f64().unwrap();
    assert!((7.0..=13.0).contains(&frac), "fraction lost {frac} %: {m}");
    let lost = r["remote_cumulative_lost"].as_i64().unwrap();
    let dropped = relay.counts.dropped.load(Ordering::Relaxed) as i64;
    // Reported up to its last report, so at most what the relay dropped.
    assert!(
        lost >= 5 && lost <= dropped,
        "lost {lost}, dropped {dropped}: {m}"
    );
    assert!(r["rtt_ms"].as_f64().is_some_and(|t| t < 50.0), "{m}");
    let j = r["local_jitter_ms"].as_f64().unwrap();
    assert!(j < 20.0, "jitter {j} ms: {m}");
}

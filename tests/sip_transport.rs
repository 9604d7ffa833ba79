//! SIP over TCP and TLS against real peers: sipp as a TCP callee
//! (`-t t1`), Kamailio as a proxy reached over TCP and over TLS (a test CA
//! made with rcgen, the certificate checked against its name) with sipp
//! behind it on UDP, and hostile input on our TCP listener and from a
//! "TLS server" that answers the handshake with junk.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// sipp as a UAS on a transport (`-t t1` for TCP), playing `digits.pcap`.
fn sipp_uas(dir: &Path, transport: &[&str]) -> Sipp {
    sipp_uas_with(dir, "answer_digits.xml", transport)
}

fn sipp_uas_with(dir: &Path, scenario: &str, transport: &[&str]) -> Sipp {
    require("sipp");
    let port = free_port_pair();
    let media = free_port_pair();
    let scen = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(scenario);
    let child = Command::new("sipp")
        .current_dir(dir)
        .args(["-sf", scen.to_str().unwrap()])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(transport)
        .args(["-m", "1", "-timeout", "30s", "-timeout_error"])
        .args(["-trace_msg", "-trace_err"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    let until = Instant::now() + Duration::from_secs(5);
    let tcp = transport.contains(&"t1");
    while Instant::now() < until {
        let taken = if tcp {
            TcpListener::bind(("127.0.0.1", port)).is_err()
        } else {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
        };
        if taken {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Sipp {
        child,
        port,
        dir: dir.to_path_buf(),
    }
}

fn digits_pcap(dir: &Path) {
    rfc4733_pcap(
        &dir.join("digits.pcap"),
        &[('4', 300, 100), ('2', 700, 100)],
        false,
    );
}

fn call_collecting(uri: &str, extra: &[&str]) -> (bool, Vec<serde_json::Value>, String) {
    let mut args = vec![
        "call",
        uri,
        "--prompt",
        &prompt_path(),
        "--collect",
        "2",
        "--timeout",
        "10s",
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (st, lines, stderr) = callout(&refs);
    (st.success(), lines, stderr)
}

fn prompt_path() -> String {
    prompt()
}

#[test]
fn a_call_over_tcp_to_sipp_collects_digits_and_hangs_up_on_the_same_connection() {
    let dir = scratch("tcp-sipp");
    digits_pcap(&dir);
    let mut sipp = sipp_uas(&dir, &["-t", "t1"]);
    let uri = format!("sip:bob@127.0.0.1:{};transport=tcp", sipp.port);
    let (ok, lines, stderr) = call_collecting(&uri, &[]);
    assert!(ok, "{stderr}\n{lines:#?}");
    assert_eq!(result(&lines)["digits"], "42", "{lines:#?}");
    let status = sipp.wait(Duration::from_secs(15));
    let msgs = sipp.messages();
    assert!(status.success(), "{msgs}");
    // sipp logs what it received: INVITE, ACK and BYE all said TCP in Via
    // and Contact, and nothing came over UDP (sipp -t t1 has no UDP).
    for method in ["INVITE sip:", "ACK sip:", "BYE sip:"] {
        let at = msgs
            .find(method)
            .unwrap_or_else(|| panic!("{method}: {msgs}"));
        let msg = &msgs[at..];
        let msg = &msg[..msg.find("\n\n").unwrap_or(msg.len())];
        assert!(msg.contains("Via: SIP/2.0/TCP "), "{msg}");
    }
    assert!(msgs.contains(";transport=tcp>"), "{msgs}");
}

/// Kamailio as a proxy on UDP, TCP and TLS, relaying each request to
/// `127.0.0.1:<user part>` over UDP, with Record-Route (double, across
/// transports). Killed with its process group when dropped.
struct Kamailio {
    child: Child,
    udp: u16,
    tls: u16,
    log: std::path::PathBuf,
}

impl Kamailio {
    fn start(dir: &Path, cert: &str, key: &str) -> Kamailio {
        require("kamailio");
        let udp = free_port_pair();
        let tls = udp + 1;
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("tls.cfg"),
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
                 private_key = {d}/key.pem\ncertificate = {d}/cert.pem\n\n\
                 [client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            ),
        )
        .unwrap();
        let cfg = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:{udp}
listen=tcp:127.0.0.1:{udp}
listen=tls:127.0.0.1:{tls}
enable_tls=yes
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
modparam("tls", "config", "{d}/tls.cfg")
request_route {{
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not here");
    exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
  record_route();
  $du = "sip:127.0.0.1:" + $rU;
  t_relay();
}}
"#
        );
        std::fs::write(dir.join("kamailio.cfg"), cfg).unwrap();
        let log = dir.join("kamailio.log");
        let mut cmd = Command::new("kamailio");
        cmd.args(["-f", &format!("{d}/kamailio.cfg"), "-DD", "-E", "-n", "1"])
            .args(["-P", &format!("{d}/kamailio.pid")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            // Its own group, so dropping it stops its children too.
            .process_group(0);
        let child = cmd.spawn().expect("start kamailio");
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", tls)).is_err() {
            assert!(
                Instant::now() < until,
                "kamailio did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Kamailio {
            child,
            udp,
            tls,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SAFETY: signals our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

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

#[test]
fn calls_through_kamailio_over_tcp_and_tls_keep_its_route_and_check_its_name() {
    let dir = scratch("kamailio-tls");
    let (ca, cert, key) = test_ca();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    let kam = Kamailio::start(&dir, &cert, &key);
    let ca_file = dir.join("ca.pem").display().to_string();
    for (name, uri_of) in [
        (
            "tcp",
            Box::new(|sipp: u16| format!("sip:{sipp}@127.0.0.1:{};transport=tcp", kam.udp))
                as Box<dyn Fn(u16) -> String>,
        ),
        (
            "tls",
            Box::new(|sipp: u16| format!("sip:{sipp}@127.0.0.1:{};transport=tls", kam.tls)),
        ),
    ] {
        let sdir = dir.join(name);
        std::fs::create_dir_all(&sdir).unwrap();
        digits_pcap(&sdir);
        let mut sipp = sipp_uas_with(&sdir, "answer_digits_rr.xml", &[]);
        let uri = uri_of(sipp.port);
        let (ok, lines, stderr) = call_collecting(
            &uri,
            &["--tls-ca-file", &ca_file, "--tls-server-name", "localhost"],
        );
        assert!(ok, "{name}: {stderr}\n{lines:#?}\n{}", kam.log());
        assert_eq!(result(&lines)["digits"], "42", "{name}: {lines:#?}");
        let status = sipp.wait(Duration::from_secs(15));
        let msgs = sipp.messages();
        assert!(status.success(), "{name}: {msgs}");
        // The BYE came through Kamailio (its Via on top of ours, which
        // names our transport), as the Record-Route asked.
        let at = msgs.find("BYE sip:").unwrap_or_else(|| panic!("{msgs}"));
        let bye = &msgs[at..];
        let bye = &bye[..bye.find("\n\n").unwrap_or(bye.len())];
        assert!(
            bye.contains(&format!("Via: SIP/2.0/UDP 127.0.0.1:{}", kam.udp)),
            "{name}: {bye}"
        );
        assert!(
            bye.contains(&format!("SIP/2.0/{} ", name.to_uppercase())),
            "{name}: {bye}"
        );
        assert!(msgs.contains("Record-Route:"), "{name}: {msgs}");
    }
    // The certificate names localhost: asked for another name, the
    // handshake fails and the call ends at once (503), never in clear.
    let started = Instant::now();
    let uri = format!("sip:1@127.0.0.1:{};transport=tls", kam.tls);
    let (ok, lines, stderr) = call_collecting(
        &uri,
        &[
            "--tls-ca-file",
            &ca_file,
            "--tls-server-name",
            "pbx.example.org",
        ],
    );
    assert!(!ok, "{lines:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let r = result(&lines);
    assert!(r.to_string().contains("503"), "{r}\n{stderr}");
    // Without the test CA (public roots only) it fails the same way.
    let (ok, _, _) = call_collecting(&uri, &["--tls-server-name", "localhost"]);
    assert!(!ok);
}

/// Our SIP task on an ephemeral port, with its TCP listener.
fn sip_task() -> (tokio::runtime::Runtime, callout::driver::sip::SipHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let h = rt
        .block_on(callout::driver::sip::spawn(
            "127.0.0.1:0".parse().unwrap(),
            None,
        ))
        .unwrap();
    (rt, h)
}

/// Reads until the peer closes; `None` when it stays open past `limit`.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
            Err(_) => return None,
        }
    }
}

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:callout@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{branch}\r\n\
         From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:callout@127.0.0.1>\r\nCall-ID: {branch}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// One OPTIONS answered 200 on the connection it came on.
fn answers_options(port: u16, branch: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(options(branch).as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("a response on the same connection");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    assert!(text.contains(&format!("branch=z9hG4bK{branch}")), "{text}");
}

#[test]
fn hostile_tcp_input_closes_that_connection_and_nothing_else() {
    let (_rt, h) = sip_task();
    let port = h.local_addr().port();
    answers_options(port, "first");
    // Garbage without a header end, past the header limit: closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let junk: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let _ = s.write_all(&junk);
    assert!(
        read_to_close(&mut s, Duration::from_secs(5)).is_some(),
        "garbage kept the connection open"
    );
    // A huge Content-Length: closed before any body is awaited.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 999999999\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // No Content-Length: closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\r\n")
        .unwrap();
    assert!(read_to_close(&mut s, Duration::from_secs(5)).is_some());
    // Half a message, then the client goes away.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&options("half").as_bytes()[..60]).unwrap();
    drop(s);
    // Framed but not SIP: the endpoint drops it, the connection stays.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"\x00\x01\x02 not sip\r\nContent-Length: 2\r\n\r\nab")
        .unwrap();
    s.write_all(options("after").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Two messages in one write, answered in order.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("{}{}", options("two1"), options("two2")).as_bytes())
        .unwrap();
    let mut got = String::new();
    let until = Instant::now() + Duration::from_secs(5);
    while !(got.contains("z9hG4bKtwo1") && got.contains("z9hG4bKtwo2")) && Instant::now() < until {
        let n = s.read(&mut buf).unwrap_or(0);
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.find("z9hG4bKtwo1") < got.find("z9hG4bKtwo2"), "{got}");
    // Still serving, over TCP and UDP.
    answers_options(port, "last");
    let stats = _rt.block_on(h.stats()).unwrap();
    assert!(stats.received >= 5, "{stats:?}");
}

#[test]
fn a_tls_peer_answering_junk_fails_the_call_at_once() {
    let dir = scratch("tls-junk");
    std::fs::write(dir.join("ca.pem"), test_ca().0).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut seen = 0;
        listener.set_nonblocking(false).unwrap();
        // The INVITE's connection (and the ACK's for the 503).
        while seen < 1 {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            seen += 1;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"\x16\x03\x03\x00\x05junk!SIP/2.0 200 OK\r\n\r\n");
            let _ = s.write_all(&[0xffu8; 3000]);
        }
        seen
    });
    let started = Instant::now();
    let uri = format!("sip:bob@127.0.0.1:{port};transport=tls");
    let ca = dir.join("ca.pem").display().to_string();
    let (ok, lines, stderr) = call_collecting(&uri, &["--tls-ca-file", &ca]);
    assert!(!ok, "{lines:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        result(&lines).to_string().contains("503"),
        "{lines:#?}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(server.join().unwrap(), 1);
}

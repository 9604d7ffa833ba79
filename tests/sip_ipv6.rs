//! A call over IPv6 (::1) to a sipp callee: callout bound to [::1], and
//! bound to [::] (every address) with `--sip-advertise ::1`. The INVITE
//! sipp received carries IPv6 in Via, Contact and the SDP (`c=IN IP6`),
//! never an unspecified address; RTP flows both ways: callout's packets
//! reach the test's socket on ::1, and a key press the test sends back
//! as RFC 4733 reaches callout.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A UDP port free on ::1 (and the next one), from the shared range.
fn free_v6_pair() -> u16 {
    loop {
        let p = free_port_pair();
        if UdpSocket::bind(("::1", p)).is_ok() && UdpSocket::bind(("::1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// sipp as a UAS on ::1.
fn sipp_v6(dir: &Path, rtp_port: u16) -> (KillOnDrop, u16) {
    require("sipp");
    let port = free_v6_pair();
    let media = free_v6_pair();
    let scen = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/ipv6_answer.xml");
    let child = Command::new("sipp")
        .current_dir(dir)
        .args(["-sf", scen.to_str().unwrap()])
        .args(["-i", "::1", "-mi", "::1"])
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(["-set", "rtp_port", &rtp_port.to_string()])
        .args([
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
            "-trace_msg",
            "-trace_err",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && UdpSocket::bind(("::1", port)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (KillOnDrop(child), port)
}

fn call_over_v6(name: &str, bind: &str, advertise: Option<&str>) {
    let dir = scratch(name);
    let rtp_port = free_v6_pair();
    let rtp = UdpSocket::bind(("::1", rtp_port)).unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut sipp, port) = sipp_v6(&dir, rtp_port);
    let uri = format!("sip:bob@[::1]:{port}");
    // The callee: once callout's RTP flows (the call is answered),
    // press 5 back to where it comes from.
    let callee = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let until = Instant::now() + Duration::from_secs(15);
        let mut got = 0usize;
        let mut from: Option<SocketAddr> = None;
        while Instant::now() < until {
            if let Ok((n, src)) = rtp.recv_from(&mut buf) {
                if n >= 12 {
                    got += 1;
                    from = Some(src);
                    // Half a second in: callout hangs up once it has the key.
                    if got == 25 {
                        for (i, p) in rfc4733_packets(5, 101, 1000, 16_000)
                            .into_iter()
                            .enumerate()
                        {
                            rtp.send_to(&p, src).unwrap();
                            if i < 3 {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
            } else if got > 25 {
                break;
            }
        }
        (got, from)
    });
    let p = prompt();
    let mut args = vec![
        "call",
        uri.as_str(),
        "--prompt",
        p.as_str(),
        "--collect",
        "1",
        "--timeout",
        "10s",
        "--bind",
        bind,
    ];
    if let Some(a) = advertise {
        args.extend(["--sip-advertise", a]);
    }
    let (st, lines, stderr) = callout(&args);
    let (got, from) = callee.join().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && sipp.0.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let trace: String = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(st.success(), "{stderr}\n{lines:#?}\n{trace}");
    let status = sipp.0.wait().unwrap();
    assert!(status.success(), "sipp: {trace}");
    // The key press came back over IPv6 RTP.
    assert_eq!(result(&lines)["digits"], "5", "{lines:#?}");
    let answered = events(&lines, "answered");
    assert_eq!(answered[0]["remote_rtp"], format!("[::1]:{rtp_port}"));
    // callout's RTP reached the callee, from ::1.
    assert!(got > 20, "{got} RTP packets reached the callee");
    assert_eq!(from.unwrap().ip().to_string(), "::1");
    // The INVITE as sipp received it.
    let start = trace.find("INVITE sip:").expect("an INVITE in the trace");
    let invite = &trace[start..];
    let invite = &invite[..invite.find("\n---").unwrap_or(invite.len())];
    let via = invite.lines().find(|l| l.starts_with("Via:")).unwrap();
    assert!(via.starts_with("Via: SIP/2.0/UDP [::1]:"), "{invite}");
    let contact = invite.lines().find(|l| l.starts_with("Contact:")).unwrap();
    assert!(contact.contains("@[::1]:"), "{invite}");
    assert!(invite.contains("\nc=IN IP6 ::1"), "{invite}");
    assert!(invite.contains(" IN IP6 ::1"), "o= line: {invite}");
    assert!(
        !invite.contains("0.0.0.0") && !invite.contains("[::]"),
        "{invite}"
    );
    assert!(!invite.contains("IN IP4"), "{invite}");
}

#[test]
fn a_call_bound_to_ipv6_loopback_works() {
    call_over_v6("ipv6-bound", "[::1]:0", None);
}

#[test]
fn a_call_bound_to_every_ipv6_address_advertises_the_configured_one() {
    call_over_v6("ipv6-advertised", "[::]:0", Some("::1"));
}

//! Addresses on the wire, across two network namespaces joined by a veth
//! pair (issue 12): callout in one, bound to `0.0.0.0`, sipp as the callee
//! in the other. A raw packet socket on the callee's side reads every
//! datagram that arrives there: no SIP or SDP may carry `0.0.0.0`,
//! loopback or any address but the advertised one, RTP must arrive from
//! callout, and the digits sipp sends must reach callout (RTP both ways).
//!
//! Needs root (`ip netns add`); skips loudly when not permitted.

mod common;

use common::*;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two namespaces and the veth pair between them; removed on drop, also
/// when the test fails.
struct Netns {
    a: String,
    b: String,
    /// 10.N.M.0/24: A is .1 (and .5), B is .2.
    net: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Netns {
    /// `tag` tells apart the tests of one process running side by side.
    fn create(tag: u8) -> Result<Netns, String> {
        let id = std::process::id();
        let n = Netns {
            a: format!("coA{id}-{tag}"),
            b: format!("coB{id}-{tag}"),
            net: format!("10.{}.{tag}", 100 + (id % 100)),
        };
        ip(&["netns", "add", &n.a])?;
        ip(&["netns", "add", &n.b])?;
        let (va, vb) = (
            format!("va{}-{tag}", id % 100000),
            format!("vb{}-{tag}", id % 100000),
        );
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &n.a])?;
        ip(&["link", "set", &vb, "netns", &n.b])?;
        let net = n.net.clone();
        for (ns, dev, addrs) in [
            (
                &n.a,
                &va,
                vec![format!("{net}.1/24"), format!("{net}.5/24")],
            ),
            (&n.b, &vb, vec![format!("{net}.2/24")]),
        ] {
            for a in addrs {
                ip(&["-n", ns, "addr", "add", &a, "dev", dev])?;
            }
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(n)
    }

    fn exec(&self, ns: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, and so the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// One UDP datagram seen on the callee's interface.
#[derive(Debug, Clone)]
struct Seen {
    src: std::net::Ipv4Addr,
    dport: u16,
    payload: Vec<u8>,
}

/// Read every IPv4/UDP frame arriving in namespace `ns` (a thread moved
/// into it with setns) until `stop`.
fn capture(
    ns: &str,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Seen>>>,
) -> std::thread::JoinHandle<()> {
    let path = format!("/var/run/netns/{ns}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let f = File::open(&path).expect("namespace file");
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket creation; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: tv outlives the call; size matches.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are valid for the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            // Only what arrives (not what this namespace sends) and not
            // loopback traffic inside the namespace.
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_hatype != 1 {
                continue;
            }
            let f = &buf[..n as usize];
            if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
                continue;
            }
            let ihl = ((f[14] & 0x0f) as usize) * 4;
            let ip = &f[14..];
            let udp = &ip[ihl..];
            if udp.len() < 8 {
                continue;
            }
            out.lock().unwrap().push(Seen {
                src: std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                dport: u16::from_be_bytes([udp[2], udp[3]]),
                payload: udp[8..].to_vec(),
            });
        }
        // SAFETY: fd was opened above.
        unsafe { libc::close(fd) };
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("capture thread started");
    h
}

fn run_call(advertise: bool) {
    require("sipp");
    let net = match Netns::create(1 + advertise as u8) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED nat_netns: cannot create network namespaces (needs root and iproute2): {e}");
            return;
        }
    };
    let dir = scratch(&format!("nat-netns-{advertise}"));
    // .5 is on callout's side but is not the route's source (.1): only
    // the setting can put it on the wire.
    let advertise = advertise.then(|| format!("{}.5", net.net));
    let advertise = advertise.as_deref();
    rfc4733_pcap(
        &dir.join("digits.pcap"),
        &[('4', 300, 100), ('2', 700, 100)],
        true,
    );
    let callee_ip = format!("{}.2", net.net);
    let (sip_port, media_port) = (5070u16, 6000u16);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let cap = capture(&net.b, stop.clone(), seen.clone());
    let scen =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/answer_digits.xml");
    let sipp = net
        .exec(&net.b, "sipp")
        .current_dir(&dir)
        .args(["-sf", scen.to_str().unwrap()])
        .args(["-i", &callee_ip, "-mi", &callee_ip])
        .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
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
    let mut sipp = KillOnDrop(sipp);
    std::thread::sleep(Duration::from_millis(300));
    let uri = format!("sip:bob@{callee_ip}:{sip_port}");
    let mut args = vec![
        "call".to_string(),
        uri,
        "--prompt".into(),
        prompt(),
        "--collect".into(),
        "2".into(),
        "--timeout".into(),
        "10s".into(),
        "--bind".into(),
        "0.0.0.0:5060".into(),
        "--rtp-ports".into(),
        "21000-21099".into(),
    ];
    if let Some(a) = advertise {
        args.extend(["--sip-advertise".to_string(), a.to_string()]);
    }
    let out = net
        .exec(&net.a, env!("CARGO_BIN_EXE_callout"))
        .args(&args)
        .output()
        .expect("run callout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // sipp ends after the BYE.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && sipp.0.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    cap.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(out.status.success(), "callout failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#""digits":"42""#),
        "digits (RTP callee to callout) did not arrive:\n{stdout}"
    );

    let expect = advertise.unwrap_or(&format!("{}.1", net.net)).to_string();
    let sip: Vec<String> = seen
        .iter()
        .filter(|s| s.dport == sip_port)
        .map(|s| String::from_utf8_lossy(&s.payload).into_owned())
        .collect();
    assert!(
        sip.iter().any(|m| m.starts_with("INVITE ")),
        "no INVITE seen: {sip:#?}"
    );
    assert!(
        sip.iter().any(|m| m.starts_with("BYE ")),
        "no BYE seen: {sip:#?}"
    );
    for m in &sip {
        for bad in ["0.0.0.0", "127.0.0.1", "[::]"] {
            assert!(!m.contains(bad), "{bad} on the wire:\n{m}");
        }
        if m.starts_with("INVITE ") || m.starts_with("ACK ") || m.starts_with("BYE ") {
            let via = m.lines().find(|l| l.starts_with("Via:")).unwrap();
            assert!(via.contains(&format!("UDP {expect}:5060;")), "Via: {via}");
        }
        if m.starts_with("INVITE ") {
            let contact = m.lines().find(|l| l.starts_with("Contact:")).unwrap();
            assert!(contact.contains(&format!("@{expect}:5060>")), "{contact}");
            assert!(
                m.contains(&format!("c=IN IP4 {expect}\r\n")),
                "SDP c=:\n{m}"
            );
            assert!(
                m.contains(&format!("IN IP4 {expect}\r\ns=")),
                "SDP o=:\n{m}"
            );
        }
        // Every address-looking token is the advertised one or the callee's.
        for tok in m.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
            if tok.split('.').count() == 4 && tok.split('.').all(|p| p.parse::<u8>().is_ok()) {
                assert!(
                    tok == expect || tok == callee_ip,
                    "unexpected address {tok} in:\n{m}"
                );
            }
        }
    }
    // RTP from callout arrived at the callee's media port.
    let rtp_in = seen
        .iter()
        .filter(|s| s.dport == media_port && s.payload.len() >= 12 && s.payload[0] >> 6 == 2)
        .count();
    assert!(rtp_in >= 10, "only {rtp_in} RTP packets reached the callee");
    assert!(seen.iter().all(|s| s.src.to_string().starts_with(&net.net)));
    if advertise.is_none() {
        assert!(
            stderr.contains("route's source address"),
            "no warning:\n{stderr}"
        );
    }
    drop(net);
    let _ = sipp.0.kill();
}

#[test]
fn bound_to_any_with_an_advertised_address_puts_only_that_on_the_wire() {
    run_call(true);
}

#[test]
fn bound_to_any_without_a_setting_uses_the_route_source_and_warns() {
    run_call(false);
}

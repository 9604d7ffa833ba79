//! Kamailio 5.6 as the operator's proxy, started once for this binary
//! (UDP, TCP and TLS with an rcgen test CA):
//!
//! - outbound proxy with digest authentication (the `auth` module, a fixed
//!   password, realm = the Request-URI's domain): `callout serve`'s trunks
//!   over UDP, TCP and TLS are challenged 407, answer for their realm and
//!   reach a sipp callee; a challenge for another realm is refused without
//!   a hash and the attempt says `auth_refused` with that realm;
//! - the same trunks' OPTIONS keepalive arrives over each trunk's own
//!   transport;
//! - registrar forking to two devices of one AOR (baresip and a sipp that
//!   registers through the test), both answering: each 2xx is ACKed on its
//!   own dialog, the second is sent a BYE, and the first call stays up
//!   (its digits arrive after that BYE and are collected).

mod common;

use std::net::{TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::serve::*;
use common::*;

const PASSWORD: &str = "s3cret";

struct Kamailio {
    /// Kept (never dropped: the static lives to the end); stopped at exit.
    _child: Child,
    /// UDP and TCP.
    port: u16,
    tls: u16,
    log: PathBuf,
    /// The test CA's certificate (PEM file).
    ca: PathBuf,
}

static KAMAILIO_PGID: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_kamailio_at_exit() {
    let pgid = KAMAILIO_PGID.load(Ordering::SeqCst);
    if pgid != 0 {
        // SAFETY: signals the process group of the Kamailio we started.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGTERM);
        }
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

/// The proxy's routing script. Initial INVITEs must carry credentials for
/// the realm named by their Request-URI's domain (user `alice`); a user
/// part `fork` is looked up in the location table (every registered
/// contact rings at once), any other user part is the UDP port of a
/// callee on 127.0.0.1. Each step is logged so the tests can see what
/// arrived, and over which transport.
///
/// The reply route holds back the first 2xx from a device other than sipp
/// (whose tags say `SIPpTag`) for 1 s, in Kamailio's only worker:
/// Kamailio cancels the other branches at the first 2xx it relays, so
/// without the hold two real devices cannot both answer one forked INVITE
/// on loopback; with it, sipp's 200 (sent 800 ms in) is already on its way
/// when the cancel comes, and is relayed too (RFC 3261 16.7.10: every 2xx
/// goes upstream).
fn routing(port: u16, tls: u16, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=4
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
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
loadmodule "maxfwd.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "cfgutils.so"
modparam("tls", "config", "{d}/tls.cfg")
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("OPTIONS") && $rU == $null) {{
    xlog("L_NOTICE", "KEEPALIVE OPTIONS over $pr\n");
    sl_send_reply("200", "Keepalive");
    exit;
  }}
  if (has_totag()) {{
    xlog("L_NOTICE", "INDIALOG $rm over $pr to-tag=$tt\n");
    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not here");
    exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
  if (is_method("REGISTER")) {{
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  if (is_method("INVITE")) {{
    if (!pv_proxy_authenticate("$rd", "{PASSWORD}", "0")) {{
      xlog("L_NOTICE", "CHALLENGE realm=$rd over $pr\n");
      proxy_challenge("$rd", "1");
      exit;
    }}
    if ($au != "alice") {{ sl_send_reply("403", "Forbidden"); exit; }}
    xlog("L_NOTICE", "AUTHENTICATED realm=$rd user=$rU over $pr\n");
    consume_credentials();
  }}
  record_route();
  if ($rU == "fork") {{
    if (!lookup("location")) {{ sl_send_reply("404", "Not registered"); exit; }}
  }} else {{
    $du = "sip:127.0.0.1:" + $rU;
  }}
  t_relay();
}}
reply_route {{
  if ($rs == 200 && $rm == "INVITE" && !($tt =~ "SIPpTag") && $shv(held) != 1) {{
    $shv(held) = 1;
    xlog("L_NOTICE", "HOLDING 200 to-tag=$tt\n");
    usleep(1000000);
  }}
}}
"#
    )
}

fn kamailio() -> &'static Kamailio {
    static K: OnceLock<Kamailio> = OnceLock::new();
    K.get_or_init(|| {
        require("kamailio");
        let dir = scratch("kamailio-proxy");
        let (ca, cert, key) = test_ca();
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
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
        // UDP and TCP on one port, TLS on the next: all three free.
        let port = loop {
            let p = free_port_pair();
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            {
                break p;
            }
        };
        let tls = port + 1;
        std::fs::write(dir.join("kamailio.cfg"), routing(port, tls, &dir)).unwrap();
        let log = dir.join("kamailio.log");
        let child = Command::new("kamailio")
            // One worker: the reply route's hold (below) then delays
            // every later message too, so the held 200 is relayed first.
            .args(["-f", &format!("{d}/kamailio.cfg"), "-DD", "-E", "-n", "1"])
            .args(["-P", &format!("{d}/kamailio.pid")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            // Its own group, so stopping it stops its children too.
            .process_group(0)
            .spawn()
            .expect("start kamailio");
        KAMAILIO_PGID.store(child.id(), Ordering::SeqCst);
        // SAFETY: registers a plain extern "C" function.
        unsafe {
            libc::atexit(stop_kamailio_at_exit);
        }
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
            _child: child,
            port,
            tls,
            log,
            ca: dir.join("ca.pem"),
        }
    })
}

impl Kamailio {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A pcap pressing `1` twice (the menu's ack key; the second in case the
/// first falls into the message), for sipp to play once answered.
fn press_one(dir: &Path) {
    rfc4733_pcap(
        &dir.join("digits.pcap"),
        &[('1', 1500, 120), ('1', 4000, 120)],
        false,
    );
}

fn plan_for(contract: &str, uri: &str, trunk: &str) -> String {
    plan(contract, uri, Some(trunk), "text = \"Alert on {host}.\"")
}

#[test]
fn trunks_authenticate_through_kamailio_over_udp_tcp_and_tls_for_their_realm_only() {
    require("espeak-ng");
    let kam = kamailio();
    let dir = scratch("kamailio-auth");
    copy_prompts(&dir);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let mut callees = Vec::new();
    let mut trunks = String::new();
    for t in ["udp", "tcp", "tls"] {
        let sdir = dir.join(format!("sipp-{t}"));
        std::fs::create_dir_all(&sdir).unwrap();
        press_one(&sdir);
        let sipp = Sipp::uas("answer_digits_rr.xml", &sdir, &[]);
        // The contact's domain is the realm Kamailio challenges for; the
        // user part tells it where the callee listens.
        std::fs::write(
            dir.join(format!("dialplans/c{t}.toml")),
            plan_for(
                &format!("c{t}"),
                &format!("sip:{}@carrier.test", sipp.port),
                &format!("k{t}"),
            ),
        )
        .unwrap();
        let proxy_port = if t == "tls" { kam.tls } else { kam.port };
        trunks.push_str(&format!(
            "[trunks.k{t}]\nproxy = \"127.0.0.1:{proxy_port}\"\ntransport = \"{t}\"\n\
             username_env = \"KAM_TEST_USER\"\npassword_env = \"KAM_TEST_PASSWORD\"\n\
             realm = \"carrier.test\"\nkeepalive = \"1s\"\nkeepalive_misses = 2\n"
        ));
        if t == "tls" {
            trunks.push_str(&format!(
                "[trunks.k{t}.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
                kam.ca.display()
            ));
        }
        callees.push((t, sipp));
    }
    // A contact in another domain, through the UDP trunk: Kamailio asks
    // for that domain's realm, which is not the trunk's.
    std::fs::write(
        dir.join("dialplans/cother.toml"),
        plan_for("cother", "sip:5999@other.test", "kudp"),
    )
    .unwrap();
    std::env::set_var("KAM_TEST_USER", "alice");
    std::env::set_var("KAM_TEST_PASSWORD", PASSWORD);
    let s = Serve::start(&dir, &trunks, "39100-39199");

    let ids: Vec<(&str, String)> = callees
        .iter()
        .map(|(t, _)| {
            let id = s.notify(&format!("c{t}"), &format!("T-{t}"))["id"]
                .as_str()
                .unwrap()
                .to_string();
            (*t, id)
        })
        .collect();
    let other = s.notify("cother", "T-other")["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (t, id) in &ids {
        let n = s.wait_state(
            id,
            &["acked", "exhausted", "failed"],
            Duration::from_secs(45),
        );
        assert_eq!(n["state"], "acked", "{t}: {n:#}\n{}", kam.log());
    }
    for (t, sipp) in &mut callees {
        let status = sipp.wait(Duration::from_secs(20));
        assert!(status.success(), "{t}: {}", sipp.messages());
        // The callee's INVITE came without the credentials (Kamailio
        // consumed them: the hash stays at the proxy; the ACK for the 2xx
        // carries them end to end, RFC 3261 22.1), through Kamailio's
        // Record-Route.
        let msgs = sipp.messages();
        let at = msgs.find("INVITE sip:").unwrap_or_else(|| panic!("{msgs}"));
        let invite = &msgs[at..];
        let invite = &invite[..invite.find("\n\n").unwrap_or(invite.len())];
        assert!(!invite.contains("Proxy-Authorization"), "{t}: {invite}");
        assert!(msgs.contains("Record-Route:"), "{t}: {msgs}");
    }
    let log = kam.log();
    for t in ["udp", "tcp", "tls"] {
        assert!(
            log.contains(&format!("CHALLENGE realm=carrier.test over {t}")),
            "{t}: {log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("AUTHENTICATED realm=carrier.test user=")
                    && l.ends_with(&format!("over {t}"))),
            "{t}: {log}"
        );
    }

    // The foreign realm: challenged, never answered, and the record says so.
    let n = s.wait_state(
        &other,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(n["state"], "exhausted", "{n:#}");
    let outcome = &n["attempts"][0]["outcome"];
    assert_eq!(outcome["outcome"], "auth_refused", "{n:#}");
    assert_eq!(outcome["realm"], "other.test", "{n:#}");
    assert_eq!(outcome["code"], 407, "{n:#}");
    let log = kam.log();
    assert!(log.contains("CHALLENGE realm=other.test over udp"), "{log}");
    assert!(!log.contains("AUTHENTICATED realm=other.test"), "{log}");

    // Keepalive: every trunk is probed over its own transport and is up.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = s.http("GET", "/readyz", None).unwrap();
        let up = |t: &str, port: u16| r["trunks"][t][format!("127.0.0.1:{port}")] == "up";
        if up("kudp", kam.port) && up("ktcp", kam.port) && up("ktls", kam.tls) {
            break;
        }
        assert!(Instant::now() < until, "{r:#}\n{}", kam.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = kam.log();
    for t in ["udp", "tcp", "tls"] {
        assert!(
            log.contains(&format!("KEEPALIVE OPTIONS over {t}")),
            "no OPTIONS over {t}:\n{log}"
        );
    }
}

/// Registers `contact` for `aor_user` at Kamailio over UDP, as a device
/// would; waits for the 200.
fn register(kam: &Kamailio, aor_user: &str, contact: &str) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let req = format!(
        "REGISTER sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{aor_user}@127.0.0.1>;tag=r{n}\r\nTo: <sip:{aor_user}@127.0.0.1>\r\n\
         Call-ID: reg{n}@test\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\nExpires: 300\r\n\
         Content-Length: 0\r\n\r\n",
        p = kam.port,
        n = me.port(),
    );
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        s.send_to(req.as_bytes(), ("127.0.0.1", kam.port)).unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("SIP/2.0 200"), "{text}");
            return;
        }
    }
    panic!("no answer to REGISTER: {}", kam.log());
}

#[test]
fn a_forked_call_keeps_the_first_device_and_byes_the_second() {
    require("sipp");
    let kam = kamailio();
    let dir = scratch("kamailio-fork");
    // Device 1: baresip, registering itself, auto-answering at once
    // (Kamailio holds its 200 back 1 s, see `routing`).
    let bdir = dir.join("baresip");
    std::fs::create_dir_all(&bdir).unwrap();
    // baresip's aufile takes 8 kHz only.
    require("sox");
    let wav = bdir.join("tone.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&wav)
        .args(["synth", "30", "sine", "440", "vol", "0.02"])
        .status()
        .unwrap();
    assert!(st.success());
    let account = format!(
        "<sip:fork@127.0.0.1:{}>;regint=300;answermode=auto;audio_codecs=PCMU",
        kam.port
    );
    let baresip = Baresip::start_account(&bdir, &wav, 40, &account);
    // Device 2: sipp, registered by the test, answering after 800 ms and
    // sending digits of its own once ACKed (they must not count).
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    rfc4733_pcap(
        &sdir.join("digits.pcap"),
        &[('4', 300, 100), ('2', 700, 100)],
        false,
    );
    let mut sipp = Sipp::uas("fork_late_digits.xml", &sdir, &[]);
    register(kam, "fork", &format!("sip:sipp@127.0.0.1:{}", sipp.port));
    let until = Instant::now() + Duration::from_secs(10);
    while !baresip.log().contains("200 OK") {
        assert!(
            Instant::now() < until,
            "baresip did not register:\n{}",
            baresip.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    std::env::set_var("CALLOUT_SIP_PASSWORD", PASSWORD);
    let uri = format!("sip:fork@127.0.0.1:{}", kam.port);
    let call = std::thread::spawn(move || {
        callout(&[
            "call",
            &uri,
            "--prompt",
            &prompt(),
            "--collect",
            "2",
            "--timeout",
            "15s",
            "--user",
            "alice",
            "--realm",
            "127.0.0.1",
        ])
    });
    // baresip's 200 went up first (the live call); sipp's second, and
    // callout ACKs and BYEs it on its own dialog (sipp checks its tag on
    // both). Only then does baresip press keys, on the call that stayed.
    let status = sipp.wait(Duration::from_secs(20));
    assert!(status.success(), "{}\n{}", sipp.messages(), kam.log());
    std::thread::sleep(Duration::from_millis(300));
    for key in ["7", "9"] {
        baresip.command("sndcode", key);
        std::thread::sleep(Duration::from_millis(400));
    }
    let (st, lines, stderr) = call.join().unwrap();
    let log = kam.log();
    assert!(
        st.success(),
        "{stderr}\n{lines:#?}\n{log}\n{}",
        baresip.log()
    );
    // Digits from the live call (not sipp's 4 and 2, whose RTP is not
    // the live call's and stops with its BYE).
    assert_eq!(result(&lines)["digits"], "79", "{lines:#?}");
    let held: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("HOLDING 200 to-tag=").nth(1))
        .collect();
    assert_eq!(held.len(), 1, "{log}");
    let btag = held[0].trim();
    // sipp's dialog: ACK then BYE through Kamailio, with sipp's tag.
    let sipp_bye = log
        .lines()
        .position(|l| l.contains("INDIALOG BYE") && l.contains("SIPpTag"))
        .unwrap_or_else(|| panic!("no BYE to sipp:\n{log}"));
    // baresip's dialog: ACKed on its own tag, and its BYE (the end of
    // the live call) only after sipp's.
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("INDIALOG ACK over udp to-tag={btag}"))),
        "{log}"
    );
    let baresip_bye = log
        .lines()
        .position(|l| l.contains(&format!("INDIALOG BYE over udp to-tag={btag}")))
        .unwrap_or_else(|| panic!("no BYE to baresip:\n{log}"));
    assert!(sipp_bye < baresip_bye, "{log}");
}

//! SIPVicious (Debian `sipvicious`: svmap, svwar, svcrack) against the
//! live SIP port of a real `callout serve` (issue 13): no extension is
//! told apart from another, no credential is accepted, the flood limiter
//! bans the cracker, and notifications placed meanwhile are answered and
//! acknowledged.
//!
//! svwar and svcrack 0.3.3 parse `-b` but never bind to it, so they send
//! from 127.0.0.1; the callees (sipp) therefore listen on 127.0.0.9, since
//! the peer of a call in progress is never limited. svmap honours `-b`.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "sipvicious-token";
const CALLEE_IP: &str = "127.0.0.9";

/// sipp answering one call on CALLEE_IP, pressing 1 after 1.5 s.
struct Callee {
    child: Child,
    dir: PathBuf,
    uri: String,
}

impl Callee {
    fn start(dir: &Path) -> Callee {
        require("sipp");
        std::fs::create_dir_all(dir).unwrap();
        rfc4733_pcap(&dir.join("digits.pcap"), &[('1', 1500, 120)], false);
        let (port, media) = (free_port_pair(), free_port_pair());
        let child = Command::new("sipp")
            .current_dir(dir)
            .arg("-sf")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/answer_digits.xml"))
            .args(["-i", CALLEE_IP, "-mi", CALLEE_IP])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args([
                "-m",
                "1",
                "-timeout",
                "150s",
                "-timeout_error",
                "-trace_msg",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && UdpSocket::bind((CALLEE_IP, port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Callee {
            child,
            dir: dir.to_path_buf(),
            uri: format!("sip:bob@{CALLEE_IP}:{port}"),
        }
    }

    /// True when sipp saw its call through.
    fn finished_ok(&mut self) -> bool {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn messages(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Serve {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Serve {
    fn start(dir: &Path, sip_port: u16, contacts: &[(&str, String)]) -> Serve {
        let api_port = free_port_pair();
        let hash: String = Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let plans = dir.join("dialplans");
        std::fs::create_dir_all(&plans).unwrap();
        for (contract, uri) in contacts {
            std::fs::write(
                plans.join(format!("{contract}.toml")),
                format!(
                    "contract = \"{contract}\"\nname = \"{contract}\"\nlanguage = \"en\"\n\
                     [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\n\
                     between_rounds = \"1m\"\n[[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n\
                     [message]\ntext = \"Alert on {{host}}.\"\n[menu]\nprompt = \"Press 1.\"\n\
                     [menu.keys]\n\"1\" = \"ack\"\n"
                ),
            )
            .unwrap();
        }
        let config = dir.join("callout.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:{sip_port}\"\n\
                 rtp_ports = \"{lo}-{hi}\"\ndatabase_url = \"sqlite://{db}\"\ndialplans = \"{dp}\"\n\
                 prompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
                 [sip_flood]\nwindow = \"1s\"\nmax_requests = 30\nban = \"20s\"\n\
                 [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n",
                lo = 36000 + (std::process::id() % 10) * 100,
                hi = 36099 + (std::process::id() % 10) * 100,
                db = dir.join("data/callout.db").display(),
                dp = plans.display(),
                pr = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
                tc = dir.join("tts").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_callout"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("CALLOUT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Serve {
            child,
            base: format!("http://127.0.0.1:{api_port}"),
            dir: dir.to_path_buf(),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while s.get_text("/healthz").is_none() {
            assert!(Instant::now() < until, "callout serve did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
    }

    fn get_text(&self, path: &str) -> Option<String> {
        let r = Self::client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .ok()?;
        r.status()
            .is_success()
            .then(|| r.text().unwrap_or_default())
    }

    fn notify(&self, contract: &str) -> String {
        let r = Self::client()
            .post(format!("{}/v1/notifications", self.base))
            .bearer_auth(TOKEN)
            .json(
                &json!({"contract": contract, "ticket": "SV-1", "severity": "critical",
                "host": "db-1", "summary": "down"}),
            )
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn state(&self, id: &str) -> Value {
        let text = self
            .get_text(&format!("/v1/notifications/{id}"))
            .unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn wait_acked(&self, id: &str, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let v = self.state(id);
            if v["state"] == "acked" {
                return;
            }
            assert!(
                Instant::now() < until,
                "{id} was not acknowledged: {v:#}\n{}",
                std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let text = self.get_text("/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a SIPVicious tool with a hard time limit; its whole output.
fn run(tool: &str, args: &[&str]) -> String {
    require(tool);
    let mut child = Command::new(tool)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The status line and header names (not values: tags and Call-IDs
/// differ) of the answer to `method` for `user`.
fn answer_shape(sock: &UdpSocket, target: &str, method: &str, user: &str, n: u32) -> String {
    let local = sock.local_addr().unwrap();
    let msg = format!(
        "{method} sip:{user}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKsv{n}\r\n\
         From: <sip:{user}@{target}>;tag=sv{n}\r\nTo: <sip:{user}@{target}>\r\nCall-ID: sv-{n}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:{user}@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), target).unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = sock.recv_from(&mut buf).expect("an answer");
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let mut names: Vec<&str> = lines
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect();
    names.sort();
    format!("{status} {names:?}")
}

#[test]
fn sipvicious_learns_nothing_is_banned_and_real_calls_go_on() {
    require("espeak-ng");
    let dir = scratch("sipvicious");
    let mut callee1 = Callee::start(&dir.join("callee1"));
    let mut callee2 = Callee::start(&dir.join("callee2"));
    let sip_port = free_port_pair();
    let s = Serve::start(
        &dir,
        sip_port,
        &[
            ("first", callee1.uri.clone()),
            ("second", callee2.uri.clone()),
        ],
    );
    let port = sip_port.to_string();
    let target = format!("127.0.0.1:{sip_port}");

    // A real call goes out as the scans start.
    let first = s.notify("first");

    // svmap finds a SIP device (it is one), nothing more.
    let map = run("svmap", &["-b", "127.0.0.2", "-p", &port, "127.0.0.1"]);
    assert!(map.contains(&target), "{map}");

    // svwar with each method, slowly enough that the limiter does not
    // hide the answers: nothing found.
    for method in ["REGISTER", "OPTIONS", "INVITE"] {
        let war = run(
            "svwar",
            &[
                "--force",
                "-m",
                method,
                "-p",
                &port,
                "-e",
                "100-120,1000,9999",
                "127.0.0.1",
            ],
        );
        assert!(war.contains("found nothing"), "svwar {method}: {war}");
        assert!(!war.contains("| Extension"), "svwar {method}: {war}");
    }
    assert_eq!(
        s.metric("callout_sip_sources_banned_total"),
        0,
        "svwar saw real answers, not a ban"
    );

    // The same answer for every user, known-looking or not.
    let probe = UdpSocket::bind("127.0.0.7:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut n = 0;
    for method in ["REGISTER", "OPTIONS", "INVITE"] {
        let shapes: Vec<String> = ["100", "1000", "admin", "x8q3zz"]
            .iter()
            .map(|user| {
                n += 1;
                answer_shape(&probe, &target, method, user, n)
            })
            .collect();
        assert!(
            shapes.windows(2).all(|w| w[0] == w[1]),
            "{method}: {shapes:#?}"
        );
    }

    // svcrack: no password accepted, by REGISTER or by INVITE; the
    // INVITE run sends as fast as it can and gets banned.
    let crack = run(
        "svcrack",
        &[
            "-p",
            &port,
            "-u",
            "100",
            "-r",
            "1000-1100",
            "--maximumtime",
            "3",
            "127.0.0.1",
        ],
    );
    assert!(crack.contains("found nothing"), "{crack}");
    let crack = run(
        "svcrack",
        &[
            "-m",
            "INVITE",
            "-p",
            &port,
            "-u",
            "100",
            "-r",
            "1000-2999",
            "--maximumtime",
            "3",
            "127.0.0.1",
        ],
    );
    assert!(crack.contains("found nothing"), "{crack}");
    assert!(!crack.contains("| Extension"), "{crack}");
    assert!(s.metric("callout_sip_sources_banned_total") >= 1);
    assert!(s.metric("callout_sip_flood_dropped_total") > 100);
    assert!(s.metric("callout_sip_sources_banned") >= 1);
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(log.contains("source banned"), "{log}");

    // Both real calls: the one up during the scans, and one placed while
    // the cracker is still banned.
    s.wait_acked(&first, Duration::from_secs(30));
    let second = s.notify("second");
    s.wait_acked(&second, Duration::from_secs(30));
    for c in [&mut callee1, &mut callee2] {
        assert!(c.finished_ok(), "{}", c.messages());
    }
}

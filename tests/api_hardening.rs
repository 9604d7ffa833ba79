//! Attacks on a real `callout serve` process over 127.0.0.1 (issue 13):
//! variables that try to change what the callee hears, oversized input,
//! environment probing through the dialplan validator, the error format
//! of every rejection, a database password in the output, and slow or
//! silent HTTP clients.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hardening-admin-token";

/// A `callout serve` child on its own scratch folder.
struct Serve {
    child: Child,
    base: String,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plan(contract: &str, extra: &str) -> String {
    format!(
        r#"contract = "{contract}"
name = "Hardening {contract}"
language = "en"
variables = ["region"]
{extra}
[escalation]
rounds = 1
ring_timeout = "5s"
between_calls = "1s"
between_rounds = "1m"
[[contacts]]
name = "Oncall"
uri = "sip:oncall@127.0.0.1:9"
[message]
text = "Alert for {{contract_name}} on {{host}} in {{region}}: {{summary}}."
[menu]
prompt = "Press 1."
[menu.keys]
"1" = "ack"
"#
    )
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let hash: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dialplans = dir.join("dialplans");
    std::fs::create_dir_all(&dialplans).unwrap();
    std::fs::write(dialplans.join("strict.toml"), plan("strict", "")).unwrap();
    std::fs::write(
        dialplans.join("lenient.toml"),
        plan("lenient", "undeclared_variables = \"ignore\""),
    )
    .unwrap();
    let config = dir.join("callout.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{lo}-{hi}\"\n\
             database_url = \"sqlite://{db}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
             max_body = 65536\n{extra}\n\
             [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n",
            lo = 38000 + (std::process::id() % 10) * 100,
            hi = 38099 + (std::process::id() % 10) * 100,
            db = dir.join("data/callout.db").display(),
            dp = dialplans.display(),
            pr = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            tc = dir.join("tts").display(),
        ),
    )
    .unwrap();
    config
}

/// Start `callout serve` and wait for its banner.
fn serve_with(cmd: &mut Command) -> Serve {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            {
                let mut s = s2.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            // After the line is kept, so a test reading it finds it.
            if let Some(rest) = line.split("API on http://").nth(1) {
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != ',')
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a,
        Err(_) => panic!("callout serve did not start: {}", stderr.lock().unwrap()),
    };
    Serve {
        child,
        base: format!("http://{addr}"),
        addr,
        stderr,
    }
}

fn serve(dir: &Path, extra: &str) -> Serve {
    let config = write_config(dir, extra);
    serve_with(
        Command::new(env!("CARGO_BIN_EXE_callout"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CALLOUT_HARDENING_PIN", "2468")
            .env("CALLOUT_HARDENING_WORD", "hello"),
    )
}

struct Reply {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

impl Serve {
    fn send(&self, r: reqwest::blocking::RequestBuilder) -> Reply {
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        }
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            client()
                .post(format!("{}{path}", self.base))
                .bearer_auth(TOKEN)
                .json(&body),
        )
    }

    fn get(&self, path: &str) -> Reply {
        self.send(
            client()
                .get(format!("{}{path}", self.base))
                .bearer_auth(TOKEN),
        )
    }
}

fn alert(contract: &str, ticket: &str, variables: Value) -> Value {
    json!({"contract": contract, "ticket": ticket, "severity": "major", "host": "db-01",
        "summary": "replication stopped", "variables": variables})
}

/// A 422 problem document naming `field`.
fn assert_invalid(r: &Reply, field: &str) {
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["field"], field, "{}", r.body);
}

#[test]
fn variables_cannot_replace_built_in_fields_or_sneak_in() {
    require("espeak-ng");
    let dir = scratch("hardening-builtins");
    let s = serve(&dir, "");
    // What the callee hears about host and company comes from the alert.
    for name in [
        "host",
        "contract_name",
        "ticket",
        "severity",
        "summary",
        "contract",
    ] {
        let r = s.post(
            "/v1/notifications",
            alert("strict", "B1", json!({"region": "London", name: "evil"})),
        );
        assert_invalid(&r, &format!("variables.{name}"));
    }
    // A variable the contract does not declare: refused by default...
    let r = s.post(
        "/v1/notifications",
        alert("strict", "B2", json!({"region": "London", "other": "x"})),
    );
    assert_invalid(&r, "variables.other");
    // ...dropped where the dialplan says `undeclared_variables = "ignore"`,
    // and never stored.
    let r = s.post(
        "/v1/notifications",
        alert("lenient", "B3", json!({"region": "London", "other": "x"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["ignored_variables"], json!(["other"]));
    let id = r.body["id"].as_str().unwrap();
    let stored = s.get(&format!("/v1/notifications/{id}"));
    assert_eq!(stored.body["variables"], json!({"region": "London"}));
    // Ignoring undeclared names never lets a built-in through.
    let r = s.post(
        "/v1/notifications",
        alert("lenient", "B4", json!({"host": "evil"})),
    );
    assert_invalid(&r, "variables.host");
    // The setting is checked at load, with the file and line.
    let bad = plan("x", "undeclared_variables = \"sometimes\"");
    let r = s.send(
        client()
            .post(format!("{}/v1/dialplans/validate", s.base))
            .bearer_auth(TOKEN)
            .body(bad),
    );
    assert_eq!(r.body["valid"], false, "{}", r.body);
    let e = r.body["errors"][0].as_str().unwrap();
    assert!(e.starts_with("request.toml:5:"), "{e}");
}

#[test]
fn oversized_variables_and_endless_messages_are_refused() {
    require("espeak-ng");
    let dir = scratch("hardening-limits");
    // Defaults for the variables; a short message limit keeps synthesis
    // quick.
    let s = serve(&dir, "[limits]\nmax_message = \"12s\"");
    let mut many: serde_json::Map<String, Value> =
        (0..32).map(|i| (format!("v{i}"), json!("x"))).collect();
    many.insert("region".into(), json!("London"));
    let r = s.post(
        "/v1/notifications",
        alert("lenient", "L1", Value::Object(many)),
    );
    assert_invalid(&r, "variables");
    let r = s.post(
        "/v1/notifications",
        alert("strict", "L2", json!({"region": "x".repeat(257)})),
    );
    assert_invalid(&r, "variables.region");
    let key = "k".repeat(65);
    let r = s.post(
        "/v1/notifications",
        alert("lenient", "L3", json!({ key.clone(): "x" })),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["field"]
        .as_str()
        .unwrap()
        .starts_with("variables.kkkk"));
    // The issue's 60 KB value, which used to become an hour of speech.
    let r = s.post(
        "/v1/notifications",
        alert("strict", "L4", json!({"region": "London ".repeat(8500)})),
    );
    assert_invalid(&r, "variables.region");
    // Within every size limit, yet too long to say: the field to shorten
    // is named.
    let mut long = alert("strict", "L5", json!({"region": "London"}));
    long["summary"] = json!("the primary database stopped replicating to the standby ".repeat(6));
    let r = s.post("/v1/notifications", long);
    assert_invalid(&r, "summary");
    assert!(
        r.body["detail"].as_str().unwrap().contains("at most 12 s"),
        "{}",
        r.body
    );
    let r = s.post(
        "/v1/notifications",
        alert(
            "strict",
            "L6",
            json!({"region": "London and the south east ".repeat(9)}),
        ),
    );
    assert_invalid(&r, "variables.region");
    // A normal alert still goes through.
    let r = s.post(
        "/v1/notifications",
        alert("strict", "L7", json!({"region": "London"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn the_validator_reveals_nothing_about_the_environment() {
    let dir = scratch("hardening-env");
    let s = serve(&dir, "");
    // The errors about the PIN's source (the plan has no action asking
    // for the PIN, which is reported too and set aside here).
    let validate = |env: &str| -> Vec<String> {
        // Only the PIN block is probed; the rest of the plan is valid.
        let text = format!("{}\n[pin]\ncode_env = \"{env}\"\n", plan("probe", ""));
        s.send(
            client()
                .post(format!("{}/v1/dialplans/validate", s.base))
                .bearer_auth(TOKEN)
                .body(text),
        )
        .body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .filter(|e| !e.contains("no action asks for it"))
            .collect()
    };
    // A prefixed variable holding a PIN is read.
    let ok = validate("CALLOUT_HARDENING_PIN");
    assert!(ok.is_empty(), "{ok:?}");
    // Set but not a PIN, unset, outside the prefix (HOME is set, and
    // PATH is not digits): one and the same answer.
    let answers: Vec<String> = [
        "CALLOUT_HARDENING_WORD",
        "CALLOUT_HARDENING_UNSET",
        "HOME",
        "PATH",
        "NO_SUCH_VARIABLE_ANYWHERE",
    ]
    .iter()
    .map(|name| {
        let errors = validate(name);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].replace(name, "NAME")
    })
    .collect();
    assert!(
        answers[0].contains("not set or not valid"),
        "{}",
        answers[0]
    );
    for a in &answers {
        assert_eq!(a, &answers[0]);
    }
}

#[test]
fn every_rejection_is_a_problem_document() {
    require("espeak-ng");
    let dir = scratch("hardening-problems");
    let s = serve(&dir, "[limits]\nmax_cancel_reason = 100");
    // The scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = s.send(
            client()
                .get(format!("{}/v1/contracts", s.base))
                .header("Authorization", format!("{scheme} {TOKEN}")),
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let problem = |r: &Reply, status: u16| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{status}: {}",
            r.body
        );
        assert_eq!(r.body["status"], status, "{}", r.body);
    };
    // Over max_body.
    let r = s.send(
        client()
            .post(format!("{}/v1/notifications", s.base))
            .bearer_auth(TOKEN)
            .body("x".repeat(70_000)),
    );
    problem(&r, 413);
    // The same through the actions route, which reads its body elsewhere.
    let r = s.send(
        client()
            .post(format!("{}/v1/actions/restart/run", s.base))
            .bearer_auth(TOKEN)
            .body("x".repeat(70_000)),
    );
    problem(&r, 413);
    for q in ["limit=abc", "limit=0", "limit=9999", "since=yesterday"] {
        let r = s.get(&format!("/v1/notifications?{q}"));
        problem(&r, 422);
        assert_eq!(r.body["field"], q.split('=').next().unwrap());
    }
    let r = s.get("/v1/notifications?limit=2");
    assert_eq!(r.status, 200, "{}", r.body);
    problem(&s.get("/v1/no-such-thing"), 404);
    let r = s.send(
        client()
            .delete(format!("{}/v1/notifications", s.base))
            .bearer_auth(TOKEN),
    );
    problem(&r, 405);
    assert!(r.headers.contains_key("allow"));
    // The cancel reason is bounded.
    let r = s.post(
        "/v1/notifications",
        alert("strict", "P1", json!({"region": "London"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = s.post(
        &format!("/v1/notifications/{id}/cancel"),
        json!({"reason": "r".repeat(101)}),
    );
    problem(&r, 422);
    assert_eq!(r.body["field"], "reason");
    let r = s.post(
        &format!("/v1/notifications/{id}/cancel"),
        json!({"reason": "recovered"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn a_database_password_is_never_printed() {
    let dir = scratch("hardening-dburl");
    let config = write_config(&dir, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &format!("sqlite://{}", dir.join("data/callout.db").display()),
        "postgres://callout:Sup3rSecretPw@127.0.0.1:1/callout",
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("CALLOUT_LOG", "debug")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("postgres://callout:***@127.0.0.1:1/callout"),
        "{all}"
    );
    assert!(!all.contains("Sup3rSecretPw"), "{all}");
}

/// Whether the server ended this connection (EOF, reset, or an answer).
fn ended(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match c.read(&mut buf) {
        // 0: closed; more: an answer, after which it closes too.
        Ok(_n) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// `n` connections that send request headers one byte every 100 ms and
/// never finish them. Returns, per connection, how long after its start
/// the server closed it (None: still open after `for_at_most`).
fn slowloris(addr: &str, n: usize, for_at_most: Duration) -> Vec<Option<Duration>> {
    let header = b"GET /healthz HTTP/1.1\r\nHost: callout\r\nX-Slow: ";
    let started = Instant::now();
    let mut conns: Vec<(TcpStream, usize, Option<Duration>)> = (0..n)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_nonblocking(true).unwrap();
            (c, 0, None)
        })
        .collect();
    while started.elapsed() < for_at_most && conns.iter().any(|c| c.2.is_none()) {
        for (c, sent, closed) in conns.iter_mut().filter(|c| c.2.is_none()) {
            if ended(c) {
                *closed = Some(started.elapsed());
                continue;
            }
            let byte = header.get(*sent).copied().unwrap_or(b'a');
            match c.write(&[byte]) {
                Ok(_) => *sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(started.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    conns.into_iter().map(|c| c.2).collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn slow_and_silent_clients_are_cut_off_and_the_api_keeps_answering() {
    require("espeak-ng");
    let dir = scratch("hardening-slowloris");
    let config = write_config(
        &dir,
        "[http]\nheader_timeout = \"2s\"\nbody_timeout = \"1s\"\nidle_timeout = \"1s\"\nmax_connections = 64",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
    cmd.args(["serve", "--config"]).arg(&config);
    // Start with a low soft descriptor limit: the service raises it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            r.rlim_cur = r.rlim_max.min(256);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            Ok(())
        });
    }
    let s = serve_with(&mut cmd);
    let pid = s.child.id();
    let hard = {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        r.rlim_max.min(1 << 20)
    };
    assert_eq!(soft_nofile(pid), hard, "the soft limit was raised");
    let banner = s.stderr.lock().unwrap().clone();
    assert!(banner.contains("at most 64 connections"), "{banner}");

    // 40 slow clients, below the connection limit: the API answers at
    // once while they drip, and each is cut off at the header timeout.
    let addr = s.addr.clone();
    let attack = std::thread::spawn(move || slowloris(&addr, 40, Duration::from_secs(6)));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = s.send(client().get(format!("{}/healthz", s.base)));
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "healthz took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = s.post(
        "/v1/notifications",
        alert("strict", "S1", json!({"region": "London"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "notification took {:?}",
        t.elapsed()
    );
    for (i, closed) in attack.join().unwrap().into_iter().enumerate() {
        let closed = closed.unwrap_or_else(|| panic!("slow connection {i} was never closed"));
        assert!(
            closed >= Duration::from_millis(1500) && closed < Duration::from_millis(3500),
            "slow connection {i} closed after {closed:?}, not at the 2 s header timeout"
        );
    }

    // 100 slow clients, over the limit: the service holds at most 64 of
    // them, closes them all, and still answers.
    let baseline = open_fds(pid);
    let addr = s.addr.clone();
    let attack = std::thread::spawn(move || slowloris(&addr, 100, Duration::from_secs(10)));
    let mut most = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        most = most.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most <= baseline + 64 + 4,
        "{most} descriptors open with a limit of 64 connections (baseline {baseline})"
    );
    let t = Instant::now();
    let r = s.send(client().get(format!("{}/healthz", s.base)));
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "healthz took {:?}",
        t.elapsed()
    );
    let closed = attack.join().unwrap();
    assert!(
        closed.iter().all(Option::is_some),
        "some slow connections stayed open"
    );

    // A silent connection is closed by the idle timeout (1 s), before the
    // header timeout (2 s).
    let mut silent = TcpStream::connect(&s.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        t.elapsed() >= Duration::from_millis(800) && t.elapsed() < Duration::from_millis(1800),
        "silent connection closed after {:?}",
        t.elapsed()
    );
    // A kept-alive connection that goes quiet after its answer: the same.
    let mut kept = TcpStream::connect(&s.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: callout\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let mut answer = Vec::new();
    let _ = kept.read_to_end(&mut answer);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        t.elapsed() < Duration::from_millis(1800),
        "kept alive {:?}",
        t.elapsed()
    );
    // A body that stops half-way: 408 as a problem document, then closed.
    let mut slow_body = TcpStream::connect(&s.addr).unwrap();
    slow_body
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/notifications HTTP/1.1\r\nHost: callout\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"contract\":"
            )
            .as_bytes(),
        )
        .unwrap();
    let t = Instant::now();
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    // Still healthy afterwards.
    assert_eq!(
        s.send(client().get(format!("{}/healthz", s.base))).status,
        200
    );
}

/// A raw HTTP/1.1 request, for header bytes a client library refuses.
fn raw_post(addr: &str, path: &str, extra_header: &[u8], body: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(extra_header);
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body.as_bytes());
    c.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn an_idempotency_key_is_never_dropped_or_left_stuck() {
    require("espeak-ng");
    require("python3");
    let dir = scratch("hardening-idempotency");
    let s = serve(&dir, "");
    let body = alert("strict", "K1", json!({"region": "London"})).to_string();
    // A key with bytes outside visible ASCII is refused, not ignored (an
    // ignored key turns the client's retries into duplicate pages).
    let (status, text) = raw_post(
        &s.addr,
        "/v1/notifications",
        b"Idempotency-Key: caf\xc3\xa9-4711",
        &body,
    );
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("Idempotency-Key"), "{text}");

    // The store refuses the insert once (as on a full disk), then works.
    let db = dir.join("data/callout.db");
    let sql = |q: &str| {
        let st = Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); c.execute(sys.argv[2]); c.commit()",
            ])
            .arg(&db)
            .arg(q)
            .status()
            .unwrap();
        assert!(st.success(), "{q}");
    };
    sql("CREATE TRIGGER refuse BEFORE INSERT ON notifications BEGIN SELECT RAISE(ABORT, 'disk full'); END");
    let keyed = |s: &Serve| {
        s.send(
            client()
                .post(format!("{}/v1/notifications", s.base))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", "alert-K1")
                .header("Content-Type", "application/json")
                .body(body.clone()),
        )
    };
    let r = keyed(&s);
    assert_eq!(r.status, 500, "{}", r.body);
    sql("DROP TRIGGER refuse");
    // The client's retry, at once: accepted, not "still in progress".
    let r = keyed(&s);
    assert_eq!(r.status, 202, "{}", r.body);
    let again = keyed(&s);
    assert_eq!(
        again.body["id"], r.body["id"],
        "the same key is the same page"
    );
}

//! The PIN lockout holds across calls, notifications and restarts: a real
//! `callout serve` process on SQLite (and PostgreSQL when
//! CALLOUT_TEST_POSTGRES_URL is set), baresip as the callee pressing keys
//! over ctrl_tcp, a webhook receiver standing in for the ticket system.
//!
//! Three wrong PINs on one call lock the contract; the next
//! notification's call hears "locked" when it asks for the action (the
//! right PIN is never even asked for); after a restart it is still locked;
//! an operator sees the lock in the API and clears it; the next call's
//! right PIN runs the action.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOTIFY: &str = "pin-test-notify";
const OPERATE: &str = "pin-test-operate";

fn sha(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Hooks {
    _rt: tokio::runtime::Runtime,
    seen: Arc<Mutex<Vec<Value>>>,
    url: String,
}

impl Hooks {
    fn start() -> Hooks {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s = seen.clone();
        let addr = rt.block_on(async move {
            use axum::{routing::post, Router};
            let app = Router::new().route(
                "/hook",
                post(move |body: String| {
                    let s = s.clone();
                    async move {
                        if let Ok(v) = serde_json::from_str(&body) {
                            s.lock().unwrap().push(v);
                        }
                        axum::http::StatusCode::OK
                    }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            addr
        });
        Hooks {
            _rt: rt,
            seen,
            url: format!("http://{addr}/hook"),
        }
    }

    fn of(&self, notification: &str, event: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["notification"] == notification && h["type"] == event)
            .cloned()
            .collect()
    }

    fn types(&self, notification: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["notification"] == notification)
            .map(|h| h["type"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

struct Serve {
    child: Child,
    base: String,
    config: std::path::PathBuf,
    dir: std::path::PathBuf,
    runs: usize,
}

impl Serve {
    fn start(dir: &std::path::Path, database_url: &str, hook: &str, rtp: &str) -> Serve {
        let api_port = free_port_pair();
        let config = dir.join("callout.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{rtp}\"\n\
                 database_url = \"{database_url}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
                 [webhooks]\nurl = \"{hook}\"\n\
                 [[tokens]]\nname = \"pipeline\"\nsha256 = \"{n}\"\nscopes = [\"notify\"]\n\
                 [[tokens]]\nname = \"operator-jane\"\nsha256 = \"{o}\"\nscopes = [\"operate\"]\n",
                dp = dir.join("dialplans").display(),
                pr = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
                tc = dir.join("tts").display(),
                n = sha(NOTIFY),
                o = sha(OPERATE),
            ),
        )
        .unwrap();
        let mut s = Serve {
            child: Command::new("true").spawn().unwrap(),
            base: format!("http://127.0.0.1:{api_port}"),
            config,
            dir: dir.to_path_buf(),
            runs: 0,
        };
        s.restart();
        s
    }

    /// Stop (SIGTERM, a clean stop) and start again on the same database.
    fn restart(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        self.runs += 1;
        let log = std::fs::File::create(self.dir.join(format!("serve{}.log", self.runs))).unwrap();
        self.child = Command::new(env!("CARGO_BIN_EXE_callout"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CALLOUT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while self.http("GET", "/healthz", NOTIFY, None).is_none() {
            assert!(Instant::now() < until, "callout serve did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn http(
        &self,
        method: &str,
        path: &str,
        tok: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "POST" => c.post(url),
            "DELETE" => c.delete(url),
            _ => c.get(url),
        }
        .bearer_auth(tok);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().unwrap_or(Value::Null)))
    }

    fn get(&self, path: &str) -> Value {
        let (st, v) = self.http("GET", path, OPERATE, None).unwrap();
        assert_eq!(st, 200, "{path}: {v}");
        v
    }

    fn notify(&self, ticket: &str) -> String {
        let (st, v) = self
            .http(
                "POST",
                "/v1/notifications",
                NOTIFY,
                Some(
                    json!({"contract": "pin", "ticket": ticket, "severity": "critical",
                    "host": "web01", "summary": "app down"}),
                ),
            )
            .unwrap();
        assert_eq!(st, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn wait_answered(&self, id: &str, bs: &Baresip) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self.get(&format!("/v1/notifications/{id}"));
            if n["attempts"][0]["answered_ms"].is_i64() {
                break;
            }
            assert!(Instant::now() < until, "not answered: {n:#}\n{}", bs.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        // Into the message: the first key barges in.
        std::thread::sleep(Duration::from_millis(1500));
    }

    fn wait_final(&self, id: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(40);
        loop {
            let n = self.get(&format!("/v1/notifications/{id}"));
            if ["acked", "action_taken", "exhausted", "cancelled", "failed"]
                .contains(&n["state"].as_str().unwrap_or(""))
            {
                return n;
            }
            assert!(Instant::now() < until, "{id} did not end: {n:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keys(bs: &Baresip, steps: &[(&str, u64)]) {
    for (k, pause) in steps {
        let reply = bs.command("sndcode", k);
        assert!(reply.contains("\"ok\":true"), "baresip: {reply}");
        std::thread::sleep(Duration::from_millis(*pause));
    }
}

fn wait_hook(h: &Hooks, id: &str, event: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = h.of(id, event).pop() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "no {event} for {id}: {:?}",
            h.types(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_plan(dir: &std::path::Path, uri: &str, marker: &std::path::Path) {
    let d = dir.join("dialplans");
    std::fs::create_dir_all(d.join("flows")).unwrap();
    std::fs::write(
        d.join("flows/touch.toml"),
        format!(
            "description = \"Touch a marker\"\nskip_check = true\n\n[params]\nhost = {{ kind = \"host\" }}\n\n\
             [[execute]]\nname = \"touch\"\ntimeout = \"5s\"\ncommand = {{ argv = [\"touch\", \"{}\"] }}\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("pin.toml"),
        format!(
            r#"contract = "pin"
name = "Pin"
language = "en"

[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "Oncall"
uri = "{uri}"

[message]
text = "Alert on {{host}}."

[menu]
prompt = "Press 1 to acknowledge, or 5 to fix it."
input_timeout = "10s"
inter_digit_timeout = "5s"

[menu.keys]
"1" = "ack"
"5" = {{ action = "fix" }}

[actions.fix]
flow = "touch"
params = {{ host = "{{host}}" }}

[pin]
code = "2468"
max_attempts = 3
lockout = "15m"

[inventory.hosts.web01]
address = "127.0.0.1"
"#
        ),
    )
    .unwrap();
}

fn lockout_holds(name: &str, database_url: Option<String>, rtp: &str) {
    require("espeak-ng");
    let dir = scratch(name);
    // Its microphone: a faint tone, longer than any call (baresip hangs up
    // when its source ends).
    let mic = dir.join("callee-mic.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&mic)
        .args(["synth", "120", "sine", "440", "vol", "0.02"])
        .status()
        .unwrap();
    assert!(st.success());
    let phone = dir.join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    let bs = Baresip::start_for(&phone, &mic, 400);
    let marker = dir.join("fixed");
    write_plan(&dir, &bs.uri(), &marker);
    let hooks = Hooks::start();
    let db = database_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("data/callout.db").display()));
    let mut s = Serve::start(&dir, &db, &hooks.url, rtp);
    // 1. Three wrong PINs on one call: locked, pin.locked sent.
    let first = s.notify(&format!("{name}-1"));
    s.wait_answered(&first, &bs);
    keys(
        &bs,
        &[
            ("5", 1200),
            ("1", 1200),
            ("1111", 1200),
            ("1111", 1200),
            ("1111", 2500),
            ("1", 0),
        ],
    );
    let locked = wait_hook(&hooks, &first, "pin.locked");
    assert_eq!(locked["data"]["contact"], "Oncall", "{locked}");
    assert_eq!(locked["data"]["failures"], 3, "{locked}");
    assert!(locked["data"]["locked_until_ms"].is_i64(), "{locked}");
    let n = s.wait_final(&first);
    assert_eq!(n["state"], "acked", "{n:#}");
    assert_eq!(hooks.of(&first, "pin.failed").len(), 3);
    let lock = s.get("/v1/contracts/pin/pin-lock");
    assert_eq!(lock["locked"], true, "{lock}");
    assert_eq!(lock["failures"], 3, "{lock}");
    assert_eq!(lock["contacts"][0]["contact"], "Oncall", "{lock}");
    assert_eq!(lock["contacts"][0]["failures"], 3, "{lock}");

    // 2. A new notification's call: the action key says "locked"; the
    // right PIN is not even asked for, so nothing runs.
    let second = s.notify(&format!("{name}-2"));
    s.wait_answered(&second, &bs);
    keys(&bs, &[("5", 1500), ("1", 1200), ("2468", 2000), ("1", 0)]);
    wait_hook(&hooks, &second, "action.locked");
    let n = s.wait_final(&second);
    std::thread::sleep(Duration::from_millis(500));
    let types = hooks.types(&second);
    assert!(
        !types
            .iter()
            .any(|t| t == "action.requested" || t == "pin.failed"),
        "{types:?}"
    );
    assert!(!marker.exists(), "the action did not run");
    let _ = n;

    // 3. A restart keeps the lock.
    s.restart();
    assert_eq!(s.get("/v1/contracts/pin/pin-lock")["locked"], true);
    let third = s.notify(&format!("{name}-3"));
    s.wait_answered(&third, &bs);
    keys(&bs, &[("5", 1500), ("1", 0)]);
    wait_hook(&hooks, &third, "action.locked");
    s.wait_final(&third);
    assert!(!hooks.types(&third).iter().any(|t| t == "action.requested"));

    // 4. The operator clears it; a notify token may not.
    let (st, _) = s
        .http("DELETE", "/v1/contracts/pin/pin-lock", NOTIFY, None)
        .unwrap();
    assert_eq!(st, 403);
    let (st, cleared) = s
        .http("DELETE", "/v1/contracts/pin/pin-lock", OPERATE, None)
        .unwrap();
    assert_eq!(st, 200, "{cleared}");
    assert_eq!(cleared["cleared"], true, "{cleared}");
    assert_eq!(cleared["cleared_by"], "operator-jane", "{cleared}");
    assert_eq!(cleared["state"]["locked"], false, "{cleared}");

    // 5. The next call's right PIN runs the action.
    let fourth = s.notify(&format!("{name}-4"));
    s.wait_answered(&fourth, &bs);
    keys(&bs, &[("5", 1200), ("1", 1200), ("2468", 0)]);
    wait_hook(&hooks, &fourth, "action.requested");
    let n = s.wait_final(&fourth);
    assert_eq!(n["state"], "action_taken", "{n:#}");
    assert!(marker.exists(), "the action ran");
}

#[test]
fn pin_lockout_holds_across_calls_notifications_and_restarts_sqlite() {
    lockout_holds("pin-lock-sqlite", None, "37200-37299");
}

/// The same on PostgreSQL, in a database this test makes and drops.
#[test]
fn pin_lockout_holds_across_calls_notifications_and_restarts_postgres() {
    let Ok(admin) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
        return;
    };
    let db = format!("callout_pin_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sql = |q: String| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL reachable");
            sqlx::query(&q).execute(&mut c).await.unwrap();
        })
    };
    sql(format!("DROP DATABASE IF EXISTS {db}"));
    sql(format!("CREATE DATABASE {db}"));
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("CALLOUT_TEST_POSTGRES_URL must end with /DATABASE"),
    };
    lockout_holds("pin-lock-pg", Some(url), "37300-37399");
    sql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

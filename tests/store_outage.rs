//! The store fails under a live call: a real `callout serve` process,
//! baresip as the callee pressing 1 over ctrl_tcp, a webhook receiver.
//!
//! (a) PostgreSQL (a cluster this test creates on its own port, never the
//! machine's shared server) is stopped while the call is up, and started
//! again afterwards. (b) SQLite on a small tmpfs that is filled while the
//! call is up, and freed afterwards (the journal sits on the same full
//! disk, so the writes wait in memory).
//!
//! Either way: the key is answered at once (the closing phrase and BYE
//! come within seconds, not after the database's timeouts), `/readyz`
//! says `store: failing` and the metrics count what is held back, and
//! once the store is back the notification is `acked` with the digit and
//! the attempt's outcome stored, and the webhook got every event in order.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "store-outage-token";

/// How soon after the key the call must be over: the closing phrase
/// ("Thanks.") and the hang-up tail take about 1.5 s. The old code waited
/// 2 × 10 s for the pool before it even looked at the key.
const KEY_TO_BYE: Duration = Duration::from_secs(6);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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

    fn of(&self, notification: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["notification"] == notification)
            .cloned()
            .collect()
    }
}

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(dir: &Path, database_url: &str, journal: &Path, hook: &str, rtp: &str) -> Serve {
        let api_port = free_port_pair();
        let hash: String = Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = dir.join("callout.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{rtp}\"\n\
                 database_url = \"{database_url}\"\njournal_dir = \"{jd}\"\ndialplans = \"{dp}\"\n\
                 prompts = \"{pr}\"\ntts_cache = \"{tc}\"\n[webhooks]\nurl = \"{hook}\"\n\
                 [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n",
                jd = journal.display(),
                dp = dir.join("dialplans").display(),
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
        };
        let until = Instant::now() + Duration::from_secs(30);
        while s.http("GET", "/healthz", None).is_none() {
            assert!(Instant::now() < until, "callout serve did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn http(&self, method: &str, path: &str, body: Option<Value>) -> Option<(u16, String)> {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "POST" => c.post(url),
            _ => c.get(url),
        }
        .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().unwrap_or_default()))
    }

    fn json(&self, path: &str) -> Option<(u16, Value)> {
        self.http("GET", path, None)
            .map(|(s, b)| (s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    fn notify(&self, ticket: &str) -> String {
        let (st, body) = self
            .http(
                "POST",
                "/v1/notifications",
                Some(
                    json!({"contract": "outage", "ticket": ticket, "severity": "critical",
                    "host": "db01", "summary": "disk"}),
                ),
            )
            .unwrap();
        assert_eq!(st, 202, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn wait_answered(&self, id: &str, bs: &Baresip) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, n)) = self.json(&format!("/v1/notifications/{id}")) {
                if n["attempts"][0]["answered_ms"].is_i64() {
                    return;
                }
            }
            assert!(Instant::now() < until, "not answered:\n{}", bs.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll `/readyz` until `pred` holds; returns (status, body).
    fn wait_ready(&self, what: &str, pred: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.json("/readyz");
            if let Some((st, v)) = &r {
                if pred(*st, v) {
                    return (*st, v.clone());
                }
            }
            assert!(Instant::now() < until, "/readyz never {what}: {r:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.http("GET", "/metrics", None).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_plan(dir: &Path, uri: &str) {
    let d = dir.join("dialplans");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("outage.toml"),
        format!(
            "contract = \"outage\"\nname = \"Outage\"\nlanguage = \"en\"\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Oncall\"\nuri = \"{uri}\"\n\
             [message]\ntext = \"Alert on {{host}}. The disk is full on the database server, please look at it now.\"\n\
             [menu]\nprompt = \"Press 1 to acknowledge.\"\ninput_timeout = \"15s\"\n\
             [menu.keys]\n\"1\" = \"ack\"\n[phrases]\nacked = \"Thanks.\"\n"
        ),
    )
    .unwrap();
}

/// The callee's microphone: a faint tone longer than the call (baresip
/// hangs up when its source ends).
fn mic(dir: &Path) -> PathBuf {
    let mic = dir.join("callee-mic.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&mic)
        .args(["synth", "120", "sine", "440", "vol", "0.02"])
        .status()
        .unwrap();
    assert!(st.success());
    mic
}

/// What the store does during the call.
trait Outage {
    fn start(&mut self);
    fn end(&mut self);
    /// Whether held-back writes must be in the journal file meanwhile.
    fn journal_works(&self) -> bool;
    /// Whether every write fails until the outage ends. SQLite on a full
    /// disk fails some writes and then gets others through in space it
    /// already holds, so there only the failures are checked.
    fn failure_lasts(&self) -> bool;
}

/// One notification, one answered call; the store fails before the key
/// and comes back after the call. Every assertion of the module docs.
fn key_during_outage(
    name: &str,
    database_url: &str,
    journal: &Path,
    dir: &Path,
    outage: &mut dyn Outage,
    rtp: &str,
) {
    require("espeak-ng");
    let phone = dir.join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    let bs = Baresip::start_for(&phone, &mic(dir), 120);
    write_plan(dir, &bs.uri());
    let hooks = Hooks::start();
    let s = Serve::start(dir, database_url, journal, &hooks.url, rtp);
    let id = s.notify(&format!("{name}-1"));
    s.wait_answered(&id, &bs);
    // Into the message: the key barges in.
    std::thread::sleep(Duration::from_millis(1000));

    outage.start();
    let ended = |log: &str| log.matches("terminated (duration").count();
    let before = ended(&bs.log());
    let pressed = Instant::now();
    let reply = bs.command("sndcode", "1");
    assert!(reply.contains("\"ok\":true"), "baresip: {reply}");
    while ended(&bs.log()) == before {
        assert!(
            pressed.elapsed() < Duration::from_secs(40),
            "the call never ended:\n{}",
            bs.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let key_to_bye = pressed.elapsed();
    eprintln!("{name}: key to BYE with the store down: {key_to_bye:?}");
    assert!(
        key_to_bye < KEY_TO_BYE,
        "the call stalled on the store: {key_to_bye:?} from the key to the hang-up"
    );

    // The outage is visible while it lasts.
    let until = Instant::now() + Duration::from_secs(20);
    while s.metric("callout_store_write_failures_total") < 1.0 {
        assert!(
            Instant::now() < until,
            "no store write failed: no outage was made"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if outage.failure_lasts() {
        let (st, ready) = s.wait_ready("said the store is failing", |_, v| v["store"] == "failing");
        assert_eq!(st, 503, "{ready}");
        assert_eq!(s.metric("callout_store_failing"), 1.0);
        assert!(
            s.metric("callout_store_pending_writes") >= 2.0,
            "digit, call.ended, ..."
        );
    }
    if outage.journal_works() {
        // Durable already: a crash now would lose nothing.
        let len = std::fs::metadata(journal.join("serve.jsonl")).map_or(0, |m| m.len());
        assert!(len > 0, "the held-back writes are not in the journal");
        assert!(s.metric("callout_store_journaled_writes") >= 2.0);
    }
    // No webhook can report what the store does not have yet.
    std::thread::sleep(Duration::from_millis(1500));

    outage.end();
    let until = Instant::now() + Duration::from_secs(40);
    let n = loop {
        if let Some((200, n)) = s.json(&format!("/v1/notifications/{id}")) {
            if n["state"] == "acked" && n["webhooks"]["queued"] == 0 {
                break n;
            }
        }
        assert!(
            Instant::now() < until,
            "{id} not acked and delivered after the outage"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let a = &n["attempts"][0];
    assert_eq!(a["digits"], "1", "{n:#}");
    assert_eq!(a["outcome"]["outcome"], "acked", "{n:#}");
    assert!(a["ended_ms"].is_i64(), "{n:#}");
    assert_eq!(n["acked_by"], "Oncall", "{n:#}");
    // Stored with the time it happened, not the time it was written.
    let ended_ms = a["ended_ms"].as_i64().unwrap();
    assert!(
        ended_ms - a["answered_ms"].as_i64().unwrap() < 20_000,
        "{n:#}"
    );

    // Every event, each once, in order, with consecutive seqs.
    let got = hooks.of(&id);
    let seqs: Vec<i64> = got.iter().map(|h| h["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=got.len() as i64).collect::<Vec<_>>(), "{got:#?}");
    assert_eq!(
        got.len() as u64,
        n["webhooks"]["delivered"].as_u64().unwrap(),
        "{got:#?}"
    );
    let types: Vec<&str> = got.iter().map(|h| h["type"].as_str().unwrap()).collect();
    let want = [
        "notification.started",
        "call.dialing",
        "call.answered",
        "digit",
        "call.ended",
        "notification.acked",
    ];
    let mut at = 0;
    for w in want {
        at += types[at..]
            .iter()
            .position(|t| *t == w)
            .unwrap_or_else(|| panic!("{w} missing or out of order in {types:?}"));
    }
    assert_eq!(types.last(), Some(&"notification.acked"), "{types:?}");
    let digit = got.iter().find(|h| h["type"] == "digit").unwrap();
    assert_eq!(digit["data"]["digit"], "1", "{digit}");
    let ended = got.iter().find(|h| h["type"] == "call.ended").unwrap();
    assert_eq!(ended["data"]["outcome"]["outcome"], "acked", "{ended}");

    // Healthy again; the journal is emptied.
    s.wait_ready("said the store is ok", |st, v| {
        st == 200 && v["store"] == "ok"
    });
    assert_eq!(s.metric("callout_store_pending_writes"), 0.0);
    let len = std::fs::metadata(journal.join("serve.jsonl")).map_or(0, |m| m.len());
    assert_eq!(len, 0, "the journal is emptied once applied");
}

/// A PostgreSQL cluster of this test's own, in /tmp, on a free port.
struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PgCluster {
    fn bin() -> Option<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        v.sort();
        v.pop()
    }

    /// As root, PostgreSQL must run as `postgres`.
    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn create(name: &str) -> Option<PgCluster> {
        let bin = Self::bin()?;
        let dir = PathBuf::from(format!("/tmp/callout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pg = PgCluster {
            dir,
            bin,
            port: free_port_pair(),
        };
        let mut mk = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "mkdir", "-p"]);
            c
        } else {
            let mut c = Command::new("mkdir");
            c.arg("-p");
            c
        };
        assert!(mk.arg(&pg.dir).status().unwrap().success());
        let out = pg
            .cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        Some(pg)
    }

    fn start(&self) {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.display()
            ))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Outage for &PgCluster {
    fn start(&mut self) {
        self.stop();
    }
    fn end(&mut self) {
        PgCluster::start(self);
    }
    fn journal_works(&self) -> bool {
        true
    }
    fn failure_lasts(&self) -> bool {
        true
    }
}

#[test]
fn postgres_stopped_under_a_live_call_loses_nothing_and_stalls_nothing() {
    let Some(pg) = PgCluster::create("pg-outage") else {
        eprintln!("\n*** SKIPPED: no PostgreSQL server binaries under /usr/lib/postgresql ***\n");
        return;
    };
    let dir = scratch("store-outage-pg");
    let journal = dir.join("journal");
    key_during_outage("pg", &pg.url(), &journal, &dir, &mut &pg, "37600-37699");
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the disk and keeps it full, as a runaway log would: SQLite gives
/// back a little space when a write fails, and a single fill would let
/// the next write through. Frees it all at the end.
struct DiskFull {
    filler: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DiskFull {
    fn new(filler: PathBuf) -> DiskFull {
        DiskFull {
            filler,
            stop: Arc::default(),
            thread: None,
        }
    }
}

impl Outage for DiskFull {
    fn start(&mut self) {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let mut f = std::fs::File::create(&self.filler).unwrap();
        let fill = move |f: &mut std::fs::File| {
            let chunk = vec![0u8; 64 * 1024];
            while f.write_all(&chunk).is_ok() {}
            // Down to the last byte.
            while f.write_all(&[0]).is_ok() {}
        };
        fill(&mut f);
        let stop = self.stop.clone();
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                fill(&mut f);
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
    }
    fn end(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::fs::remove_file(&self.filler).unwrap();
    }
    fn journal_works(&self) -> bool {
        false
    }
    fn failure_lasts(&self) -> bool {
        false
    }
}

#[test]
fn sqlite_disk_full_under_a_live_call_loses_nothing_and_stalls_nothing() {
    if !is_root() {
        eprintln!("\n*** SKIPPED: mounting a tmpfs needs root ***\n");
        return;
    }
    let dir = scratch("store-outage-sqlite");
    let fs = Tmpfs::mount(&dir.join("disk"), "8m");
    // The database and the journal (its default place) on the small disk.
    let db = fs.dir.join("callout.db");
    let journal = fs.dir.join("journal");
    let mut outage = DiskFull::new(fs.dir.join("filler"));
    key_during_outage(
        "sqlite",
        &format!("sqlite://{}", db.display()),
        &journal,
        &dir,
        &mut outage,
        "37700-37799",
    );
}

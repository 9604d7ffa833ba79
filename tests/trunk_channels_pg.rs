//! Trunk channel limits across three `callout serve` nodes on one
//! PostgreSQL (`[trunks.NAME] max_channels`, `src/channels`):
//!
//! 1. A trunk that answers 503 with `Retry-After: 3`: the refusal one node
//!    got holds back the next call of another node for 3 s, and the
//!    waiting notification shows `queued_for_trunk`.
//! 2. A trunk limited to 4 channels, 40 notifications (28 minor, then 12
//!    critical) spread over the three nodes, a sipp UAS that answers and
//!    hangs up 1.5 s later: never more than 4 calls up at once, counted
//!    from sipp's own message trace (INVITE received to BYE sent), and
//!    the critical ones dialled before the minor ones queued earlier.
//!
//! 3. `max_cps` holds across nodes: 12 notifications posted at once over
//!    three nodes to a trunk allowing 4 new calls a second reach the UAS
//!    at least about 250 ms apart.
//! 4. Keepalive verdicts are shared: a proxy that stops answering one
//!    node's OPTIONS (and still answers the other's) is down for both,
//!    and up for both again once it answers that node again.
//!
//! Needs `CALLOUT_TEST_POSTGRES_URL`; skipped loudly without it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::node::{Node, NodeConfig};
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "channels-test-token";

/// A database of its own on the test server, dropped at the end.
struct Db {
    admin: String,
    name: String,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl Db {
    fn create(admin: &str, name: &str) -> Db {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("CALLOUT_TEST_POSTGRES_URL must end with /DATABASE"),
        };
        let db = Db {
            admin: admin.to_string(),
            name: name.to_string(),
            url,
            rt,
        };
        db.admin_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        db.admin_sql(&format!("CREATE DATABASE {name}"));
        db
    }

    fn admin_sql(&self, q: &str) {
        self.rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&self.admin)
                .await
                .expect("PostgreSQL reachable");
            sqlx::query(q).execute(&mut c).await.unwrap();
        })
    }

    /// The first column of the first row of `q`, as text.
    fn one(&self, q: &str) -> String {
        self.rt.block_on(async {
            use sqlx::{Connection, Row};
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let r = sqlx::query(q).fetch_one(&mut c).await.unwrap();
            r.try_get::<Option<String>, _>(0)
                .unwrap()
                .unwrap_or_default()
        })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let q = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.admin_sql(&q)));
    }
}

fn start_node(dir: &Path, name: &str, db: &str, rtp: &str) -> Node {
    start_node_with(dir, name, db, rtp, "")
}

/// As [`start_node`], with `extra` appended to its configuration.
fn start_node_with(dir: &Path, name: &str, db: &str, rtp: &str, extra: &str) -> Node {
    let config = NodeConfig {
        token: TOKEN,
        db,
        rtp,
        cluster: "lease_ttl = \"3s\"\nheartbeat = \"1s\"\npoll = \"500ms\"",
        extra: &format!(
            "[trunks.carrier]\nmax_channels = 4\n[trunks.full]\nmax_channels = 10\n{extra}"
        ),
    };
    Node::start(dir, name, &config)
}

fn http(base: &str, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = format!("{base}{path}");
    let mut r = if method == "POST" {
        c.post(url)
    } else {
        c.get(url)
    }
    .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().unwrap_or(Value::Null)))
}

/// A metric line's value (`name{labels}` exactly), 0 when absent.
fn metric(base: &str, series: &str) -> f64 {
    let text = reqwest::blocking::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the UAS saw of one call: its notification, when the INVITE
/// arrived and when the UAS sent its BYE (epoch ms, sipp's clock).
#[derive(Debug, Clone)]
struct SeenCall {
    notification: String,
    invite_ms: f64,
    bye_ms: Option<f64>,
}

/// A sipp UAS for any number of calls, tracing every message with its
/// time (sipp runs in UTC so the stamps read as epoch times).
struct Uas {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Uas {
    fn start(scenario: &str, dir: &Path) -> Uas {
        require("sipp");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port_pair();
        let media = free_port_pair();
        let scen = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let child = Command::new("sipp")
            .current_dir(dir)
            .env("TZ", "UTC")
            .args(["-sf", scen.to_str().unwrap()])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(["-trace_msg", "-buff_size", "8388608", "-l", "5000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Uas {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn uri(&self) -> String {
        format!("sip:bob@127.0.0.1:{}", self.port)
    }

    /// Every call by Call-ID: the first INVITE received and the first BYE
    /// sent (retransmissions ignored).
    fn calls(&self) -> Vec<SeenCall> {
        let mut by_id: HashMap<String, SeenCall> = HashMap::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if !e.file_name().to_string_lossy().ends_with("_messages.log") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let mut stamp: Option<f64> = None;
            let mut block: Vec<&str> = Vec::new();
            let mut flush = |stamp: Option<f64>, block: &mut Vec<&str>| {
                let hdr = |name: &str| {
                    block
                        .iter()
                        .find(|l| l.to_ascii_lowercase().starts_with(name))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                };
                let (Some(at), Some(call_id)) = (stamp, hdr("call-id:")) else {
                    block.clear();
                    return;
                };
                let received = block.iter().any(|l| l.contains("message received"));
                if received && block.iter().any(|l| l.starts_with("INVITE sip:")) {
                    let n = hdr("x-callout-notification:").unwrap_or_default();
                    by_id.entry(call_id).or_insert(SeenCall {
                        notification: n,
                        invite_ms: at,
                        bye_ms: None,
                    });
                } else if !received && block.iter().any(|l| l.starts_with("BYE sip:")) {
                    if let Some(c) = by_id.get_mut(&call_id) {
                        c.bye_ms.get_or_insert(at);
                    }
                }
                block.clear();
            };
            for line in text.lines() {
                if let Some(rest) =
                    line.strip_prefix("-----------------------------------------------")
                {
                    flush(stamp, &mut block);
                    stamp =
                        chrono::NaiveDateTime::parse_from_str(rest.trim(), "%Y-%m-%d %H:%M:%S%.f")
                            .ok()
                            .map(|t| t.and_utc().timestamp_micros() as f64 / 1000.0);
                } else {
                    block.push(line);
                }
            }
            flush(stamp, &mut block);
        }
        let mut v: Vec<SeenCall> = by_id.into_values().collect();
        v.sort_by(|a, b| a.invite_ms.total_cmp(&b.invite_ms));
        v
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Most calls up at once: each call from its INVITE to its BYE (a call
/// without a BYE counts as up to the end). At equal times the end
/// counts first: the next INVITE can only follow the BYE.
fn most_at_once(calls: &[SeenCall]) -> usize {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for c in calls {
        edges.push((c.invite_ms, 1));
        edges.push((c.bye_ms.unwrap_or(f64::MAX), -1));
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut up, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        up += d;
        most = most.max(up);
    }
    most as usize
}

fn dialplan(dir: &Path, contract: &str, trunk: &str, uri: &str) {
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join(format!("dialplans/{contract}.toml")),
        format!(
            "contract = \"{contract}\"\nname = \"{contract}\"\nlanguage = \"en\"\ntrunk = \"{trunk}\"\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"500ms\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n\
             [message]\nprompt = \"press-a-key.wav\"\n[menu]\nprompt = \"press-a-key.wav\"\n[menu.keys]\n\"1\" = \"ack\"\n"
        ),
    )
    .unwrap();
}

fn post(node: &Node, contract: &str, ticket: &str, severity: &str) -> String {
    let body = json!({"contract": contract, "ticket": ticket, "severity": severity,
        "host": "db-1", "summary": "down"});
    let (st, v) = http(&node.base, "POST", "/v1/notifications", Some(body)).unwrap();
    assert_eq!(st, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

fn get(node: &Node, id: &str) -> Value {
    http(&node.base, "GET", &format!("/v1/notifications/{id}"), None)
        .unwrap()
        .1
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn trunk_limits_hold_across_three_nodes() {
    let Ok(admin) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED trunk_limits_hold_across_three_nodes: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
        return;
    };
    require("espeak-ng");
    let dir = scratch("trunk-channels-pg");
    let db = Db::create(&admin, &format!("callout_channels_{}", std::process::id()));
    let answerer = Uas::start("remote_bye.xml", &dir.join("sipp-answerer"));
    let refuser = Uas::start("unavailable_retry_after.xml", &dir.join("sipp-refuser"));
    dialplan(&dir, "storm", "carrier", &answerer.uri());
    dialplan(&dir, "refused", "full", &refuser.uri());
    let nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .zip(["41000-41999", "42000-42999", "43000-43999"])
        .map(|(n, rtp)| start_node(&dir, n, &db.url, rtp))
        .collect();

    // 1. A 503 with Retry-After on node-a holds back node-b's call.
    let first = post(&nodes[0], "refused", "R1", "critical");
    wait_for("the first call's 503", Duration::from_secs(20), || {
        get(&nodes[0], &first)["state"] == "exhausted"
    });
    let second = post(&nodes[1], "refused", "R2", "critical");
    wait_for(
        "the second notification to queue",
        Duration::from_secs(10),
        || {
            let q = &get(&nodes[1], &second)["queued_for_trunk"];
            q["trunk"] == "full" && q["since_ms"].as_i64().is_some()
        },
    );
    let backoff = metric(
        &nodes[2].base,
        "callout_trunk_backoff_seconds{trunk=\"full\"}",
    );
    assert!(backoff > 0.5, "node-c sees the backoff: {backoff}");
    wait_for("the second call", Duration::from_secs(20), || {
        get(&nodes[1], &second)["state"] == "exhausted"
    });
    std::thread::sleep(Duration::from_millis(300));
    let refused = refuser.calls();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let gap = refused[1].invite_ms - refused[0].invite_ms;
    eprintln!("503 Retry-After: 3 -> next INVITE (another node) after {gap:.0} ms");
    assert!(
        gap >= 2_900.0,
        "Retry-After honoured across nodes: {gap} ms"
    );
    assert!(gap < 8_000.0, "and not much longer: {gap} ms");
    assert_eq!(refused[1].notification, second);

    // 2. 28 minor, then 12 critical, on 4 channels.
    let started = Instant::now();
    let mut severity: HashMap<String, &str> = HashMap::new();
    for i in 0..28 {
        let id = post(&nodes[i % 3], "storm", &format!("M{i}"), "minor");
        severity.insert(id, "minor");
    }
    wait_for("minor ones queued", Duration::from_secs(20), || {
        metric(
            &nodes[1].base,
            "callout_trunk_queue_depth{trunk=\"carrier\"}",
        ) >= 16.0
    });
    let mut criticals = Vec::new();
    for i in 0..12 {
        let id = post(&nodes[(i + 1) % 3], "storm", &format!("C{i}"), "critical");
        severity.insert(id.clone(), "critical");
        criticals.push(id);
    }
    // Each critical one is waiting, holds a channel, or is done.
    let list = criticals
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(",");
    wait_for("critical ones queued", Duration::from_secs(20), || {
        let n: usize = db
            .one(&format!(
                "SELECT COUNT(*)::TEXT FROM notifications n WHERE n.id IN ({list}) AND (n.state IN \
                 ('exhausted', 'acked') OR EXISTS (SELECT 1 FROM trunk_waits w WHERE w.notification_id = n.id) \
                 OR EXISTS (SELECT 1 FROM trunk_channels c WHERE c.notification_id = n.id))"
            ))
            .parse()
            .unwrap();
        n == criticals.len()
    });
    let all_queued_ms = now_ms() as f64;
    let ready = http(&nodes[2].base, "GET", "/readyz", None).unwrap().1;
    let carrier = ready["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["trunk"] == "carrier"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(carrier["max_channels"], 4, "{ready}");
    assert!(carrier["in_use"].as_i64().unwrap_or(99) <= 4, "{carrier}");
    assert!(carrier["queued"].as_i64().unwrap_or(0) >= 12, "{carrier}");
    wait_for("every call", Duration::from_secs(75), || {
        db.one(
            "SELECT COUNT(*)::TEXT FROM notifications WHERE contract = 'storm' AND state = 'exhausted'",
        ) == "40"
    });
    eprintln!("40 calls on 4 channels in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    let calls = answerer.calls();
    assert_eq!(calls.len(), 40, "one call per notification at the UAS");
    let most = most_at_once(&calls);
    eprintln!("most calls up at once at the UAS: {most}");
    assert_eq!(most, 4, "never more than 4 channels, and all 4 used");

    // Critical before minor: once every critical one waited, no minor
    // one was dialled until the last critical one was (100 ms for a
    // grant given just before to reach the wire).
    let sev = |c: &SeenCall| severity.get(&c.notification).copied().unwrap_or("?");
    let last_critical = calls
        .iter()
        .filter(|c| sev(c) == "critical")
        .map(|c| c.invite_ms)
        .fold(0.0, f64::max);
    let overtaking: Vec<&SeenCall> = calls
        .iter()
        .filter(|c| {
            sev(c) == "minor" && c.invite_ms > all_queued_ms + 100.0 && c.invite_ms < last_critical
        })
        .collect();
    let minor_after = calls
        .iter()
        .filter(|c| sev(c) == "minor" && c.invite_ms > last_critical)
        .count();
    let order: Vec<&str> = calls.iter().map(sev).collect();
    eprintln!("INVITE order at the UAS: {order:?}");
    assert!(
        overtaking.is_empty(),
        "minor ones dialled before waiting critical ones: {overtaking:?}"
    );
    assert!(
        minor_after >= 8,
        "the critical ones went ahead of minor ones queued earlier: {minor_after} minor after the last critical"
    );
    let per_node: BTreeMap<String, String> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                db.one(&format!(
                    "SELECT COUNT(*)::TEXT FROM notifications WHERE contract = 'storm' AND owner = '{n}'"
                )),
            )
        })
        .collect();
    eprintln!("notifications per node: {per_node:?}");
    assert!(per_node.values().all(|n| n != "0"), "{per_node:?}");
    drop(nodes);
}

/// A proxy that answers OPTIONS with 200, except from the source ports
/// it is told to ignore; it counts the answers it sent to each port.
struct OptionsProxy {
    port: u16,
    ignore: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u16>>>,
    answered: std::sync::Arc<std::sync::Mutex<HashMap<u16, usize>>>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
}

impl OptionsProxy {
    fn start() -> OptionsProxy {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let ignore = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let answered = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ig, an, se) = (ignore.clone(), answered.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                {
                    let mut se = se.lock().unwrap();
                    if text.starts_with("OPTIONS ") && !se.contains(&from.port()) {
                        se.push(from.port());
                    }
                }
                if !text.starts_with("OPTIONS ") || ig.lock().unwrap().contains(&from.port()) {
                    continue;
                }
                let mut resp = String::from("SIP/2.0 200 OK\r\n");
                for line in text.split("\r\n") {
                    let name = line
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    match name.as_str() {
                        "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                            resp.push_str(line);
                            resp.push_str("\r\n");
                        }
                        "to" | "t" => {
                            resp.push_str(line);
                            if !line.contains(";tag=") {
                                resp.push_str(";tag=proxy");
                            }
                            resp.push_str("\r\n");
                        }
                        _ => {}
                    }
                }
                resp.push_str("Content-Length: 0\r\n\r\n");
                let _ = sock.send_to(resp.as_bytes(), from);
                *an.lock().unwrap().entry(from.port()).or_insert(0) += 1;
            }
        });
        OptionsProxy {
            port,
            ignore,
            answered,
            seen,
        }
    }

    /// The source ports that sent OPTIONS, in the order first seen.
    fn ports(&self) -> Vec<u16> {
        self.seen.lock().unwrap().clone()
    }

    fn answered(&self, port: u16) -> usize {
        self.answered
            .lock()
            .unwrap()
            .get(&port)
            .copied()
            .unwrap_or(0)
    }
}

/// What `node`'s /readyz says of the trunk `watched` at `addr`.
fn health(node: &Node, addr: &str) -> String {
    let (_, r) = http(&node.base, "GET", "/readyz", None).unwrap_or_default();
    r["trunks"]["watched"][addr]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_proxy_one_node_finds_down_is_down_for_all() {
    let Ok(admin) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED a_proxy_one_node_finds_down_is_down_for_all: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
        return;
    };
    let dir = scratch("trunk-health-pg");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let db = Db::create(&admin, &format!("callout_health_{}", std::process::id()));
    let proxy = OptionsProxy::start();
    let addr = format!("127.0.0.1:{}", proxy.port);
    let extra =
        format!("[trunks.watched]\nproxy = \"{addr}\"\nkeepalive = \"1s\"\nkeepalive_misses = 2\n");
    // Each node probes from a socket of its own: the first port seen
    // after a node starts is that node's.
    let a = start_node_with(&dir, "node-a", &db.url, "44000-44099", &extra);
    wait_for("node-a's first probe", Duration::from_secs(20), || {
        proxy.ports().len() == 1
    });
    let b = start_node_with(&dir, "node-b", &db.url, "44100-44199", &extra);
    wait_for("node-b's first probe", Duration::from_secs(20), || {
        proxy.ports().len() == 2
    });
    let (pa, pb) = (proxy.ports()[0], proxy.ports()[1]);
    wait_for(
        "both nodes to find the proxy up",
        Duration::from_secs(20),
        || health(&a, &addr) == "up" && health(&b, &addr) == "up",
    );

    // The proxy stops answering node-b only: node-a, whose own probes are
    // still answered, takes node-b's word for it.
    proxy.ignore.lock().unwrap().insert(pb);
    let cut = Instant::now();
    wait_for(
        "node-b to find the proxy down",
        Duration::from_secs(20),
        || health(&b, &addr) == "down",
    );
    wait_for(
        "node-a to take node-b's verdict",
        Duration::from_secs(20),
        || health(&a, &addr) == "down",
    );
    let seen = cut.elapsed();
    let answered_a = proxy.answered(pa);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        proxy.answered(pa) > answered_a,
        "node-a's probes were still answered while it held the proxy down"
    );
    assert_eq!(
        health(&a, &addr),
        "down",
        "node-a's own answers must not undo node-b's verdict"
    );
    eprintln!(
        "node-a saw node-b's verdict {} ms after the cut",
        seen.as_millis()
    );

    // Answered again: up for both.
    proxy.ignore.lock().unwrap().clear();
    wait_for(
        "both nodes to find the proxy up again",
        Duration::from_secs(20),
        || health(&a, &addr) == "up" && health(&b, &addr) == "up",
    );
}

#[test]
fn new_calls_per_second_hold_across_three_nodes() {
    let Ok(admin) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED new_calls_per_second_hold_across_three_nodes: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
        return;
    };
    require("espeak-ng");
    let dir = scratch("trunk-cps-pg");
    let db = Db::create(&admin, &format!("callout_cps_{}", std::process::id()));
    let answerer = Uas::start("remote_bye.xml", &dir.join("sipp-answerer"));
    dialplan(&dir, "paced", "paced", &answerer.uri());
    let extra = "[trunks.paced]\nmax_cps = 4\n";
    let nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .zip(["44200-44299", "44300-44399", "44400-44499"])
        .map(|(n, rtp)| start_node_with(&dir, n, &db.url, rtp, extra))
        .collect();
    let ids: Vec<String> = (0..12)
        .map(|i| post(&nodes[i % 3], "paced", &format!("P{i}"), "major"))
        .collect();
    wait_for("every call made", Duration::from_secs(40), || {
        ids.iter().all(|id| {
            get(&nodes[0], id)["state"] == "exhausted" || get(&nodes[0], id)["state"] == "acked"
        })
    });
    let calls = answerer.calls();
    assert_eq!(calls.len(), 12, "{calls:?}");
    let gaps: Vec<f64> = calls
        .windows(2)
        .map(|w| w[1].invite_ms - w[0].invite_ms)
        .collect();
    let span = calls[11].invite_ms - calls[0].invite_ms;
    eprintln!("max_cps 4 over 3 nodes: INVITE gaps {gaps:.0?} ms, 12 INVITEs in {span:.0} ms");
    // Turns are 250 ms apart; a loaded node may send its INVITE a little
    // after its turn, so two can reach the wire closer than that (a gap
    // alone is not the limit: the rate per second is). Never two at once,
    // and no five within 900 ms.
    assert!(gaps.iter().all(|g| *g >= 1.0), "INVITEs at once: {gaps:?}");
    let tightest = calls
        .windows(5)
        .map(|w| w[4].invite_ms - w[0].invite_ms)
        .fold(f64::MAX, f64::min);
    assert!(
        tightest >= 900.0,
        "five INVITEs within {tightest} ms: {gaps:?}"
    );
    assert!(span >= 11.0 * 250.0 * 0.9, "12 INVITEs in {span} ms");
}

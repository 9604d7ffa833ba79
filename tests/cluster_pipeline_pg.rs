//! The alert pipeline on several nodes sharing one PostgreSQL: the engine,
//! the mail outbox and the ticket sync each run on the one node holding
//! their lease (`cluster::role`), every step fenced by its epoch.
//!
//! - `kill_9_in_the_wait_window`: an alert reaches the node running the
//!   pipeline, which is killed (SIGKILL) inside the incident's wait
//!   window; the other node takes the pipeline over and finishes the
//!   incident: one call (INVITEs counted at sipp), one ticket, each
//!   customer notice mailed once (a real SMTP server, aiosmtpd); the dead
//!   node restarted under its own id, a close sent to it (it no longer
//!   runs the pipeline) reaches the engine through `pipeline_inbox`.
//! - `a_partitioned_pipeline_node_is_fenced`: the node running the
//!   pipeline loses PostgreSQL (a proxy the test stalls, holding every
//!   byte) the moment its step at an incident's window end opens its
//!   transaction, so the step is in flight; the other
//!   node takes the pipeline over and calls once; when the partition
//!   heals, the old node's step meets the fencing token (refused, counted
//!   in its `/metrics`) and it opens and calls nothing (INVITEs counted
//!   at sipp).
//! - `a_stale_holder_is_fenced`: the store refuses a pipeline step, a
//!   mail record and a `failed` ending written under an epoch another
//!   node has since claimed.
//!
//! Needs `CALLOUT_TEST_POSTGRES_URL`; skipped loudly without it.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/pg_proxy.rs"]
mod pg_proxy;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::{Node, NodeConfig};
use common::{free_port_pair, require, scratch, KillOnDrop};
use pg::ScratchDb;
use serde_json::{json, Value};

const TOKEN: &str = "cluster-pipeline-token";

/// The SMTP server: each message's envelope and subject as `NNN.json`.
const SMTPD: &str = r#"
import json, os, sys, signal
from aiosmtpd.controller import Controller
port, out = int(sys.argv[1]), sys.argv[2]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        import email
        msg = email.message_from_bytes(envelope.content)
        n = len([f for f in os.listdir(out) if f.endswith('.json')])
        tmp = os.path.join(out, 'tmp')
        with open(tmp, 'w') as f:
            json.dump({'rcpt_tos': envelope.rcpt_tos, 'subject': str(msg['subject']),
                       'message_id': msg['message-id']}, f)
        os.rename(tmp, os.path.join(out, '%03d.json' % n))
        return '250 2.0.0 accepted'
c = Controller(Handler(), hostname='127.0.0.1', port=port)
c.start()
signal.sigwait([signal.SIGTERM, signal.SIGINT])
c.stop()
"#;

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn start_smtp(dir: &Path, port: u16) -> KillOnDrop {
    let script = dir.join("smtpd.py");
    std::fs::write(&script, SMTPD).unwrap();
    std::fs::create_dir_all(dir.join("mails")).unwrap();
    let child = Command::new(python())
        .arg(&script)
        .arg(port.to_string())
        .arg(dir.join("mails"))
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
    wait_for("aiosmtpd", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    KillOnDrop(child)
}

fn mails(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("mails"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node `name` on `db`, its notice mails to the SMTP server on
/// `smtp_port`.
fn start_node(dir: &Path, name: &str, db: &str, rtp: &str, smtp_port: u16) -> Node {
    start_node_with(dir, name, db, rtp, smtp_port, "3s")
}

/// As [`start_node`], with leases of `ttl` (renewed every second).
fn start_node_with(dir: &Path, name: &str, db: &str, rtp: &str, smtp_port: u16, ttl: &str) -> Node {
    let cluster = format!("lease_ttl = \"{ttl}\"\nheartbeat = \"1s\"\npoll = \"300ms\"");
    let extra = format!(
        "[pipeline.mail_out]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
         from = \"callout <callout@noc.example>\"\ntimeout = \"5s\"\nretry_min = \"1s\"\nretry_max = \"2s\"\n"
    );
    let config = NodeConfig {
        token: TOKEN,
        db,
        rtp,
        cluster: &cluster,
        extra: &extra,
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

/// Rows of `q`, each column as text.
async fn rows(url: &str, q: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::{Connection, Row};
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(q).fetch_all(&mut c).await.unwrap();
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                .collect()
        })
        .collect()
}

/// The INVITEs sipp received: distinct Call-IDs (a retransmission is the
/// same call).
fn invites(dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if !e.file_name().to_string_lossy().ends_with("_messages.log") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for block in text.split("----------") {
            if !block.lines().any(|l| l.starts_with("INVITE sip:")) {
                continue;
            }
            if let Some(c) = block
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("call-id:"))
            {
                out.insert(c[8..].trim().to_string());
            }
        }
    }
    out
}

#[test]
fn kill_9_in_the_wait_window() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = format!("callout_clpipe_{}", std::process::id());
    let Some(db) = rt.block_on(ScratchDb::create("cluster_pipeline_pg", &name)) else {
        return;
    };
    require("sipp");
    let q = |s: &str| rt.block_on(rows(&db.url, s));
    let count = |s: &str| -> usize { q(s)[0][0].as_deref().unwrap_or("0").parse().unwrap() };
    let dir = scratch("cluster-pipeline");
    let dir = dir.as_path();
    let smtp_port = free_port_pair();
    let _smtp = start_smtp(dir, smtp_port);
    let sipp_dir = dir.join("sipp");
    let (_sipp, sip_port) = answering_uas(&sipp_dir);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        format!(
            "contract = \"acme\"\nname = \"ACME\"\nlanguage = \"en\"\n[escalation]\nrounds = 1\n\
             ring_timeout = \"10s\"\nbetween_calls = \"500ms\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"sip:bob@127.0.0.1:{sip_port}\"\n\
             [message]\nprompt = \"press-a-key.wav\"\n[menu]\nprompt = \"press-a-key.wav\"\n[menu.keys]\n\"1\" = \"ack\"\n\
             [pipeline]\nwait = \"8s\"\n\
             [pipeline.notices.occurrence]\nto = [\"ops@acme.example\"]\n\
             [pipeline.notices.exhausted]\nto = [\"ops@acme.example\"]\n"
        ),
    )
    .unwrap();
    let mut nodes = vec![
        start_node(dir, "node-a", &db.url, "48000-48499", smtp_port),
        start_node(dir, "node-b", &db.url, "48500-48999", smtp_port),
    ];
    // Which node runs the pipeline: the alert goes to that one.
    let victim_name = wait_for("a pipeline lease", Duration::from_secs(15), || {
        q("SELECT owner FROM work_leases WHERE name = 'pipeline' AND owner IS NOT NULL")
            .first()
            .and_then(|r| r[0].clone())
    });
    let mut victim = nodes.remove(if victim_name == "node-a" { 0 } else { 1 });
    let survivor = nodes.remove(0);
    let (st, v) = http(
        &victim.base,
        "POST",
        "/v1/intake/events",
        Some(
            json!({"event_action": "trigger", "dedup_key": "disk-db-01", "routing_key": "acme",
            "payload": {"summary": "disk full", "source": "db-01", "severity": "critical"}}),
        ),
    )
    .unwrap();
    assert_eq!(st, 202, "{v}");
    // The incident is open and waiting (its ticket taken) on the leader.
    let incident = wait_for("the incident", Duration::from_secs(10), || {
        q("SELECT id, state, ticket FROM incidents")
            .first()
            .filter(|r| r[2].is_some())
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    });
    assert_eq!(incident.1, "pending", "still in its wait window");
    let incident = incident.0;
    victim.child.kill().unwrap(); // SIGKILL, inside the 8 s window
    let killed = Instant::now();
    victim.child.wait().unwrap();
    assert_eq!(invites(&sipp_dir).len(), 0, "nobody called before the kill");

    // The survivor takes the pipeline over and calls at the window's end.
    let took = wait_for("pipeline takeover", Duration::from_secs(15), || {
        q("SELECT owner FROM work_leases WHERE name = 'pipeline'")
            .first()
            .and_then(|r| r[0].clone())
            .filter(|o| o != &victim_name)
            .map(|_| killed.elapsed())
    });
    eprintln!("pipeline taken over {took:?} after the kill -9");
    let ended = wait_for("the escalation's end", Duration::from_secs(40), || {
        let r = q(&format!(
            "SELECT n.state FROM notifications n WHERE n.ticket = (SELECT ticket FROM incidents WHERE id = '{incident}') \
             AND n.state IN ('acked', 'exhausted', 'cancelled', 'failed')"
        ));
        r.first().and_then(|r| r[0].clone())
    });
    assert_eq!(ended, "exhausted");
    // Both notices out, then nothing more for a moment.
    wait_for("two notice mails", Duration::from_secs(20), || {
        (mails(dir).len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let m = mails(dir);
    let subjects: Vec<String> = m
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(m.len(), 2, "each notice mailed once: {subjects:?}");
    let calls = invites(&sipp_dir);
    assert_eq!(calls.len(), 1, "exactly one call: {calls:?}");
    assert_eq!(count("SELECT COUNT(*)::TEXT FROM notifications"), 1);
    assert_eq!(count("SELECT COUNT(*)::TEXT FROM incidents"), 1);
    assert_eq!(
        count("SELECT COALESCE(SUM(last), 0)::TEXT FROM ticket_counters"),
        1,
        "one ticket number taken"
    );
    let lines = |kind: &str| {
        count(&format!(
            "SELECT COUNT(*)::TEXT FROM incident_timeline WHERE incident_id = '{incident}' AND kind = '{kind}'"
        ))
    };
    assert_eq!(lines("mail"), 2, "one timeline line per mail");
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*)::TEXT FROM incident_timeline WHERE incident_id = '{incident}' AND text LIKE '%opened%' AND kind = 'ticket'"
        )),
        1,
        "one ticket opened"
    );

    // The dead node comes back under its id; it does not run the
    // pipeline now, so an operator's close sent to it goes through the
    // inbox to the survivor's engine.
    let back = start_node(dir, &victim_name, &db.url, "49000-49499", smtp_port);
    let owner = q("SELECT owner FROM work_leases WHERE name = 'pipeline'")[0][0].clone();
    assert_ne!(owner.as_deref(), Some(victim_name.as_str()));
    let (st, v) = http(
        &back.base,
        "POST",
        &format!("/v1/incidents/{incident}/close"),
        Some(json!({})),
    )
    .unwrap();
    assert!(st < 300, "{st} {v}");
    wait_for(
        "the close through the inbox",
        Duration::from_secs(15),
        || {
            (q(&format!(
                "SELECT state FROM incidents WHERE id = '{incident}'"
            ))[0][0]
                .as_deref()
                == Some("closed"))
            .then_some(())
        },
    );
    assert_eq!(count("SELECT COUNT(*)::TEXT FROM pipeline_inbox"), 0);
    assert_eq!(invites(&sipp_dir).len(), 1, "still one call");
    let _ = std::fs::read_to_string(&survivor.log);
    drop(back);
    drop(survivor);
    rt.block_on(db.drop_db());
}

/// The sipp UAS of these tests: answers, hangs up 1.5 s later (nobody
/// acknowledges, so a one-round escalation ends after one call).
fn answering_uas(dir: &Path) -> (KillOnDrop, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let sip_port = free_port_pair();
    let media = free_port_pair();
    let uas = KillOnDrop(
        Command::new("sipp")
            .current_dir(dir)
            .args([
                "-sf",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/remote_bye.xml"),
            ])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &sip_port.to_string(), "-mp", &media.to_string()])
            .args(["-trace_msg", "-l", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp"),
    );
    (uas, sip_port)
}

/// A counter of a node's `/metrics`, by its full name and labels.
fn metric(base: &str, series: &str) -> (u64, String) {
    let text = reqwest::blocking::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (value, text)
}

/// When the first line of `log` with all of `words` was written (its
/// RFC 3339 time, colours removed).
fn log_time(log: &Path, words: &[&str]) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .map(|l| {
            let mut out = String::new();
            let mut esc = false;
            for c in l.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        })
        .find(|l| words.iter().all(|w| l.contains(w)))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
}

#[test]
fn a_partitioned_pipeline_node_is_fenced() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = format!("callout_clpart_{}", std::process::id());
    let Some(db) = rt.block_on(ScratchDb::create("cluster_pipeline_pg", &name)) else {
        return;
    };
    require("sipp");
    let admin = std::env::var("CALLOUT_TEST_POSTGRES_URL").unwrap();
    let q = |s: &str| rt.block_on(rows(&db.url, s));
    let count = |s: &str| -> usize { q(s)[0][0].as_deref().unwrap_or("0").parse().unwrap() };
    let dir = scratch("cluster-pipeline-partition");
    let dir = dir.as_path();
    let sipp_dir = dir.join("sipp");
    let (_sipp, sip_port) = answering_uas(&sipp_dir);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        format!(
            "contract = \"acme\"\nname = \"ACME\"\nlanguage = \"en\"\n[escalation]\nrounds = 1\n\
             ring_timeout = \"10s\"\nbetween_calls = \"500ms\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"sip:bob@127.0.0.1:{sip_port}\"\n\
             [message]\nprompt = \"press-a-key.wav\"\n[menu]\nprompt = \"press-a-key.wav\"\n[menu.keys]\n\"1\" = \"ack\"\n\
             [pipeline]\nwait = \"8s\"\n"
        ),
    )
    .unwrap();
    // node-a reaches PostgreSQL through the proxy and starts first, so it
    // runs the pipeline. Leases of 6 s: node-a gives the pipeline up by
    // its own clock 5 s after its last renewal, and PostgreSQL lets
    // node-b take it 6 s after.
    let proxy = pg_proxy::Proxy::start(&rt, pg_proxy::upstream(&admin));
    let via_proxy = pg_proxy::through(&admin, proxy.port, &name);
    let smtp_port = free_port_pair(); // no notices: nothing is mailed
    let a = start_node_with(dir, "node-a", &via_proxy, "47000-47499", smtp_port, "6s");
    let owner = || {
        q("SELECT owner, epoch::TEXT FROM work_leases WHERE name = 'pipeline'")
            .first()
            .map(|r| (r[0].clone(), r[1].clone().unwrap_or_default()))
    };
    wait_for(
        "node-a running the pipeline",
        Duration::from_secs(15),
        || owner().filter(|o| o.0.as_deref() == Some("node-a")),
    );
    let b = start_node_with(dir, "node-b", &db.url, "47500-47999", smtp_port, "6s");
    let (st, v) = http(
        &a.base,
        "POST",
        "/v1/intake/events",
        Some(
            json!({"event_action": "trigger", "dedup_key": "disk-db-02", "routing_key": "acme",
            "payload": {"summary": "disk full", "source": "db-02", "severity": "critical"}}),
        ),
    )
    .unwrap();
    assert_eq!(st, 202, "{v}");
    let (incident, deadline) = wait_for("the incident", Duration::from_secs(10), || {
        q("SELECT id, state, (body::json->>'deadline_ms') FROM incidents")
            .first()
            .filter(|r| r[1].as_deref() == Some("pending"))
            .and_then(|r| Some((r[0].clone()?, r[2].clone()?.parse::<u64>().ok()?)))
    });
    // The partition starts as node-a's step at the window's end opens
    // its transaction (its `BEGIN`, the first since the incident opened):
    // the step is in flight, held in the proxy, while node-a still holds
    // the pipeline by its own clock.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let arm_at = deadline.saturating_sub(1_000);
    assert!(now_ms() < arm_at, "the incident opened too late to test");
    std::thread::sleep(Duration::from_millis(arm_at - now_ms()));
    proxy.stall_at(b"BEGIN\0");
    wait_for(
        "node-a's step at the window's end",
        Duration::from_secs(10),
        || proxy.is_stalled().then_some(()),
    );
    let stalled = Instant::now();
    eprintln!(
        "partition at node-a's step, {} ms after the window's end",
        now_ms() as i64 - deadline as i64
    );
    assert_eq!(
        invites(&sipp_dir).len(),
        0,
        "nobody called before the partition"
    );
    let epoch_b = wait_for(
        "node-b taking the pipeline",
        Duration::from_secs(20),
        || {
            owner()
                .filter(|o| o.0.as_deref() == Some("node-b"))
                .map(|o| o.1)
        },
    );
    eprintln!(
        "pipeline taken over {:?} after the partition (epoch {epoch_b})",
        stalled.elapsed()
    );
    // Healed once node-b holds it: node-a's step reaches the database.
    proxy.set_stalled(false);
    let series = "callout_cluster_work_lease_fenced_total{node=\"node-a\",name=\"pipeline\"}";
    let fenced = wait_for("node-a's step refused", Duration::from_secs(20), || {
        let (n, _) = metric(&a.base, series);
        (n > 0).then_some(n)
    });
    eprintln!("node-a: {fenced} pipeline step(s) refused by the fencing token after the heal");
    let ended = wait_for("the escalation's end", Duration::from_secs(40), || {
        q("SELECT state FROM notifications WHERE state IN ('acked', 'exhausted', 'cancelled', 'failed')")
            .first()
            .and_then(|r| r[0].clone())
    });
    assert_eq!(ended, "exhausted");
    std::thread::sleep(Duration::from_secs(3));
    // node-b called once; node-a opened and called nothing.
    let calls = invites(&sipp_dir);
    assert_eq!(calls.len(), 1, "exactly one call: {calls:?}");
    assert_eq!(count("SELECT COUNT(*)::TEXT FROM notifications"), 1);
    assert_eq!(count("SELECT COUNT(*)::TEXT FROM incidents"), 1);
    assert_eq!(
        count("SELECT COALESCE(SUM(last), 0)::TEXT FROM ticket_counters"),
        1,
        "one ticket number taken"
    );
    assert_eq!(owner().and_then(|o| o.0).as_deref(), Some("node-b"));
    let (held, text) = metric(
        &a.base,
        "callout_cluster_work_lease_held{node=\"node-a\",name=\"pipeline\"}",
    );
    assert_eq!(held, 0, "{text}");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        log.contains("a write was refused by the fencing token"),
        "node-a's log says why it stopped:\n{log}"
    );
    // node-a stopped the pipeline by its own clock before node-b could
    // take it (one machine: the two logs' clocks are the same).
    let lost = log_time(
        &a.log,
        &["lost the lease: not renewed in time", "role=\"pipeline\""],
    );
    let took = log_time(
        &b.log,
        &["took over work whose lease ran out", "role=\"pipeline\""],
    );
    match (lost, took) {
        (Some(lost), Some(took)) => assert!(
            lost < took,
            "node-a stopped at {lost}, node-b took over at {took}"
        ),
        other => panic!("both logs say when: {other:?}"),
    }
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*)::TEXT FROM notifications WHERE ticket = (SELECT ticket FROM incidents WHERE id = '{incident}')"
        )),
        1,
        "the call is the incident's"
    );
    drop((a, b));
    rt.block_on(db.drop_db());
}

#[test]
fn a_stale_holder_is_fenced() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = format!("callout_clfence_{}", std::process::id());
        let Some(db) = ScratchDb::create("cluster_pipeline_pg", &name).await else {
            return;
        };
        let store = callout::store::Store::connect(&db.url).await.unwrap();
        // node-a claims, its lease runs out, node-b claims.
        let (ea, _) = store
            .claim_work_lease("pipeline", "node-a", 1)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (eb, prev) = store
            .claim_work_lease("pipeline", "node-b", 60_000)
            .await
            .unwrap()
            .expect("an expired lease is claimed");
        assert_eq!(prev.as_deref(), Some("node-a"));
        assert!(eb > ea);
        // node-b holds it now: node-a cannot claim it back.
        assert!(store
            .claim_work_lease("pipeline", "node-a", 60_000)
            .await
            .unwrap()
            .is_none());
        let fence = |owner: &str, epoch| callout::store::Fence {
            name: "pipeline".into(),
            owner: owner.into(),
            epoch,
            ttl_ms: 60_000,
        };
        let step = |f| callout::store::PipelineWrite {
            now_ms: 1,
            fence: Some(f),
            timeline: vec![(
                "inc_x".to_string(),
                callout::store::TimelineRow {
                    id: format!("tl_{}", rand_suffix()),
                    seq: 1,
                    at_ms: 1,
                    kind: "note".into(),
                    text: "x".into(),
                    alert: None,
                    data: None,
                },
            )],
            ..Default::default()
        };
        let stale = store.apply_pipeline(&step(fence("node-a", ea))).await;
        assert!(
            matches!(stale, Err(callout::store::StoreError::Fenced(_))),
            "{stale:?}"
        );
        store
            .apply_pipeline(&step(fence("node-b", eb)))
            .await
            .expect("the holder's step is stored");
        assert!(!store.renew_work_lease(&fence("node-a", ea)).await.unwrap());
        // A mail record from the stale holder is refused too.
        let r = store
            .mail_retry("ml_none", 1, 0, "x", Some(&fence("node-a", ea)))
            .await;
        assert!(matches!(r, Err(callout::store::StoreError::Fenced(_))));
        // Handed back: anyone claims it at once, with a higher epoch.
        assert!(store
            .release_work_lease(&fence("node-b", eb))
            .await
            .unwrap());
        let (ec, _) = store
            .claim_work_lease("pipeline", "node-a", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert!(ec > eb);
        store.pool().close().await;
        db.drop_db().await;
    });
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

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
//! - `a_stale_holder_is_fenced`: the store refuses a pipeline step, a
//!   mail record and a `failed` ending written under an epoch another
//!   node has since claimed.
//!
//! Needs `CALLOUT_TEST_POSTGRES_URL`; skipped loudly without it.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port_pair, require, scratch, KillOnDrop};
use pg::ScratchDb;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

struct NodeProc {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, name: &str, db: &str, rtp: &str, smtp_port: u16) -> NodeProc {
    let ndir = dir.join(name);
    std::fs::create_dir_all(&ndir).unwrap();
    let api_port = free_port_pair();
    let hash: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = ndir.join("callout.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{rtp}\"\n\
             database_url = \"{db}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
             journal_dir = \"{jd}\"\n\
             [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n\
             [cluster]\nnode_id = \"{name}\"\nlease_ttl = \"3s\"\nheartbeat = \"1s\"\npoll = \"300ms\"\n\
             [pipeline.mail_out]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
             from = \"callout <callout@noc.example>\"\ntimeout = \"5s\"\nretry_min = \"1s\"\nretry_max = \"2s\"\n",
            dp = dir.join("dialplans").display(),
            pr = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            tc = ndir.join("tts").display(),
            jd = ndir.join("journal").display(),
        ),
    )
    .unwrap();
    let log = ndir.join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
    let child = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("CALLOUT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let node = NodeProc {
        child,
        base: format!("http://127.0.0.1:{api_port}"),
        log,
    };
    wait_for(&format!("{name} up"), Duration::from_secs(60), || {
        http(&node.base, "GET", "/healthz", None)
    });
    node
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
    // sipp answers, and hangs up 1.5 s later: nobody acknowledges, so the
    // one-round escalation ends exhausted after this one call.
    let sipp_dir = dir.join("sipp");
    std::fs::create_dir_all(&sipp_dir).unwrap();
    let sip_port = free_port_pair();
    let media = free_port_pair();
    let _sipp = KillOnDrop(
        Command::new("sipp")
            .current_dir(&sipp_dir)
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

//! The pipeline and the gateway as two `callout serve` processes that
//! talk only through the gateway's REST API (`[pipeline] gateway_url`)
//! and its signed webhooks back:
//! - alert → call → acknowledgement → recovery → recovery notice call →
//!   closed; and a recovery while the escalation is still running: the
//!   escalation is cancelled, and the recovery notice is called only
//!   after the gateway reports the cancelled escalation's end;
//! - `kill -9` of the pipeline while an incident is closed but the
//!   gateway has not yet confirmed its call: after the restart the
//!   gateway's call is cancelled (nobody is rung for a closed ticket);
//! - a recovered incident whose cancelled escalation never reports its
//!   end (the gateway was killed) closes after `recovered_wait`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve::{copy_prompts, Serve};
use common::{free_port_pair, peer, scratch, KillOnDrop};
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The gateway's token for the pipeline: `notify` and `actions` only.
const GATEWAY_TOKEN: &str = "remote-pipeline-notify-token";
const TOKEN_ENV: &str = "CALLOUT_TEST_REMOTE_GATEWAY_TOKEN";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn plan(uri: &str, pipeline: &str) -> String {
    format!(
        "contract = \"acme\"\nname = \"ACME\"\nlanguage = \"en\"\n\
         [escalation]\nrounds = 1\nring_timeout = \"20s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n[message]\ntext = \"Alert on {{host}}: {{summary}}.\"\n\
         [menu]\nprompt = \"Press 1.\"\ninput_timeout = \"20s\"\n[menu.keys]\n\"1\" = \"ack\"\n\
         [pipeline]\nwait = \"1s\"\n{pipeline}"
    )
}

/// A softphone callee; `press`: the key and how long after answering.
fn callee(rtp: &str, press: Option<&str>) -> (KillOnDrop, String) {
    let (child, port) = peer::softphone(|cmd| {
        cmd.args(["--rtp-ports", rtp]);
        if let Some(after) = press {
            cmd.args(["--press", "1", "--after", after]);
        }
    });
    (KillOnDrop(child), format!("sip:bob@127.0.0.1:{port}"))
}

/// The gateway half: no pipeline; its webhooks go to the pipeline's
/// receiver, signed with the shared secret.
fn gateway(dir: &std::path::Path, port: u16, pipeline_port: u16, rtp: &str) -> Serve {
    Serve::start_on(
        dir,
        port,
        &format!(
            "[[tokens]]\nname = \"pipeline\"\nsha256 = \"{}\"\nscopes = [\"notify\", \"actions\"]\n\
             [pipeline]\nrun = \"off\"\n\
             [webhooks]\nurl = \"http://127.0.0.1:{pipeline_port}/v1/pipeline/webhook\"\nsecrets = [\"{SECRET}\"]\n",
            sha256_hex(GATEWAY_TOKEN)
        ),
        rtp,
        None,
    )
}

/// The pipeline half: it calls the gateway at `gateway_url` with the
/// gateway's token (read from the environment, as configured).
fn pipeline(dir: &std::path::Path, port: u16, gateway_url: &str, rtp: &str, extra: &str) -> Serve {
    // Every test of this binary sets the same value.
    std::env::set_var(TOKEN_ENV, GATEWAY_TOKEN);
    Serve::start_on(
        dir,
        port,
        &format!(
            "[pipeline]\nrun = \"on\"\ngateway_url = \"{gateway_url}\"\ngateway_token_env = \"{TOKEN_ENV}\"\n{extra}\
             [webhooks]\nsecrets = [\"{SECRET}\"]\n"
        ),
        rtp,
        None,
    )
}

fn two_dirs(name: &str, plan_text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = scratch(name);
    let (g, p) = (root.join("gateway"), root.join("pipeline"));
    for d in [&g, &p] {
        std::fs::create_dir_all(d.join("dialplans")).unwrap();
        copy_prompts(d);
        std::fs::write(d.join("dialplans/acme.toml"), plan_text).unwrap();
    }
    (g, p)
}

fn event(action: &str, key: &str, host: &str) -> Value {
    json!({"event_action": action, "dedup_key": key, "routing_key": "acme",
           "payload": {"summary": format!("{host} is down"), "source": host, "severity": "critical"}})
}

fn post_event(p: &Serve, ev: Value) {
    let (st, v) = p.http("POST", "/v1/intake/events", Some(ev)).unwrap();
    assert_eq!(st, 202, "{v}");
}

fn incident(p: &Serve, host: &str) -> Option<Value> {
    let (_, v) = p
        .http("GET", &format!("/v1/incidents?host={host}"), None)
        .unwrap();
    let id = v["items"].get(0)?["id"].as_str()?.to_string();
    Some(p.http("GET", &format!("/v1/incidents/{id}"), None)?.1)
}

fn texts(inc: &Value) -> Vec<String> {
    inc["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|l| l["text"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_incident(p: &Serve, host: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(i) = incident(p, host) {
            if ok(&i) {
                return i;
            }
            assert!(
                Instant::now() < until,
                "{host}: never {what}: {:#?}",
                texts(&i)
            );
        } else {
            assert!(Instant::now() < until, "{host}: no incident ({what})");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// The gateway's notifications for a ticket, oldest first, in full.
fn notifications(g: &Serve, ticket: &str) -> Vec<Value> {
    let (_, v) = g
        .http("GET", "/v1/notifications?contract=acme", None)
        .unwrap();
    let mut out: Vec<Value> = v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|n| n["ticket"] == ticket)
        .filter_map(|n| {
            g.http(
                "GET",
                &format!("/v1/notifications/{}", n["id"].as_str()?),
                None,
            )
            .map(|x| x.1)
        })
        .collect();
    out.sort_by_key(|n| n["created_ms"].as_i64().unwrap_or(0));
    out
}

/// Each needle found in `lines`, in this order.
fn in_order(lines: &[String], needles: &[&str]) {
    let mut at = 0;
    for n in needles {
        match lines[at..].iter().position(|l| l.contains(n)) {
            Some(i) => at += i + 1,
            None => panic!("{n:?} not found in order after line {at}: {lines:#?}"),
        }
    }
}

#[test]
fn two_processes_alert_call_ack_recovery_notice_and_a_cancelled_escalation() {
    let (_phone, uri) = callee("48000-48099", Some("4s"));
    let (gdir, pdir) = two_dirs("pipeline-remote", &plan(&uri, "recovery = \"call\"\n"));
    let (gport, pport) = (free_port_pair(), free_port_pair());
    let g = gateway(&gdir, gport, pport, "48100-48199");
    let p = pipeline(
        &pdir,
        pport,
        &format!("http://127.0.0.1:{gport}"),
        "48200-48299",
        "",
    );

    // One: acknowledged on the phone, then recovered; the recovery
    // notice is a second call; then the ticket closes.
    post_event(&p, event("trigger", "k-web-01", "web-01"));
    wait_incident(&p, "web-01", "acknowledged", |i| {
        i["state"] == "acknowledged"
    });
    post_event(&p, event("resolve", "k-web-01", "web-01"));
    let inc = wait_incident(&p, "web-01", "closed", |i| i["state"] == "closed");
    let lines = texts(&inc);
    in_order(
        &lines,
        &[
            "opened by events",
            "pending → notifying",
            "escalation started: notification",
            "calling Bob",
            "answered",
            "key 1 pressed",
            "acknowledged by Bob",
            "notifying → acknowledged",
            "recovered: ",
            "acknowledged → recovered",
            "recovery notice started: notification",
            "answered",
            "recovered → closed: recovered; recovery notice done",
            "closed and released",
        ],
    );
    let ticket = inc["ticket"].as_str().unwrap().to_string();
    let ns = notifications(&g, &ticket);
    assert_eq!(ns.len(), 2, "{ns:#?}");
    assert_eq!(ns[0]["state"], "acked", "{:#}", ns[0]);
    assert!(
        ns[1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Recovered: "),
        "{:#}",
        ns[1]
    );
    assert_eq!(ns[1]["severity"], "info");
    // Each gateway event is on the timeline once: the webhooks were
    // signed by the gateway and checked by the pipeline. (Read again
    // once the last call's trailing events are in.)
    std::thread::sleep(Duration::from_millis(1500));
    let inc = incident(&p, "web-01").unwrap();
    let ns = notifications(&g, &ticket);
    let gateway_lines = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "gateway")
        .count();
    let delivered: u64 = ns
        .iter()
        .map(|n| n["webhooks"]["delivered"].as_u64().unwrap())
        .sum();
    assert_eq!(gateway_lines as u64, delivered, "{lines:#?}");

    // Two: the recovery arrives while the call is up and nobody has
    // pressed yet: the escalation is cancelled through the gateway, and
    // only when the gateway says it ended is the recovery notice called.
    post_event(&p, event("trigger", "k-web-02", "web-02"));
    wait_incident(&p, "web-02", "answered", |i| {
        texts(i).iter().any(|l| l.starts_with("answered"))
    });
    post_event(&p, event("resolve", "k-web-02", "web-02"));
    let inc = wait_incident(&p, "web-02", "closed", |i| i["state"] == "closed");
    let lines = texts(&inc);
    in_order(
        &lines,
        &[
            "escalation started: notification",
            "answered",
            "the escalation is cancelled: recovered",
            "notifying → recovered",
            "the escalation was cancelled: recovered",
            "recovery notice started: notification",
            "recovered → closed: recovered; recovery notice done",
        ],
    );
    assert!(
        !lines.iter().any(|l| l.contains("notifying → acknowledged")),
        "{lines:#?}"
    );
    let ns = notifications(&g, inc["ticket"].as_str().unwrap());
    assert_eq!(ns.len(), 2, "{ns:#?}");
    assert_eq!(ns[0]["state"], "cancelled", "{:#}", ns[0]);
    assert!(ns[1]["summary"]
        .as_str()
        .unwrap()
        .starts_with("Recovered: "));

    // The pipeline's own gateway half called nobody.
    let (_, own) = p.http("GET", "/v1/notifications", None).unwrap();
    assert_eq!(own["items"].as_array().map(Vec::len), Some(0), "{own:#}");
}

/// A TCP relay from the pipeline to the gateway. While `hold` is set, a
/// new connection's request stays here (the gateway has not seen it),
/// even past the pipeline's death; once released it goes on to the
/// gateway, which takes it and starts calling.
fn relay(to: u16, hold: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { continue };
            let hold = hold.clone();
            std::thread::spawn(move || pipe(client, to, &hold));
        }
    });
    port
}

fn pipe(mut client: TcpStream, to: u16, hold: &AtomicBool) {
    let mut buf = Vec::new();
    if hold.load(Ordering::SeqCst) {
        let _ = client.set_read_timeout(Some(Duration::from_millis(50)));
        let mut chunk = [0u8; 8192];
        let mut open = true;
        while hold.load(Ordering::SeqCst) {
            if !open {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match client.read(&mut chunk) {
                Ok(0) => open = false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => open = false,
            }
        }
        let _ = client.set_read_timeout(None);
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)) else {
        return;
    };
    if server.write_all(&buf).is_err() {
        return;
    }
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // No shutdown toward the gateway when the pipeline is gone: a
    // half-closed connection could drop the request being handled.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
    });
    let _ = std::io::copy(&mut server, &mut client);
}

#[test]
fn kill_9_while_closed_with_its_call_unconfirmed_cancels_the_call_after_restart() {
    // Answers and never presses: the escalation runs until cancelled.
    let (_phone, uri) = callee("49000-49099", None);
    let (gdir, pdir) = two_dirs("pipeline-remote-stray", &plan(&uri, ""));
    let (gport, pport) = (free_port_pair(), free_port_pair());
    let g = gateway(&gdir, gport, pport, "49100-49199");
    let hold = Arc::new(AtomicBool::new(true));
    let via = relay(gport, hold.clone());
    let gateway_url = format!("http://127.0.0.1:{via}");
    let mut p = pipeline(&pdir, pport, &gateway_url, "49200-49299", "");

    post_event(&p, event("trigger", "k-db-01", "db-01"));
    let inc = wait_incident(&p, "db-01", "notifying", |i| i["state"] == "notifying");
    let ticket = inc["ticket"].as_str().unwrap().to_string();
    // The call is asked for and on its way: the gateway has not seen it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(notifications(&g, &ticket).is_empty());
    let inc = incident(&p, "db-01").unwrap();
    assert!(inc["notification"].is_null(), "{inc:#}");
    // A person closes the incident, and the pipeline dies before the
    // gateway could name the call to cancel.
    let iid = inc["id"].as_str().unwrap().to_string();
    let (st, v) = p
        .http(
            "POST",
            &format!("/v1/incidents/{iid}/close"),
            Some(json!({})),
        )
        .unwrap();
    assert_eq!(st, 200, "{v}");
    wait_incident(&p, "db-01", "closed", |i| i["state"] == "closed");
    unsafe { libc::kill(p.child.id() as i32, libc::SIGKILL) };
    let _ = p.child.wait();
    drop(p);
    let p = pipeline(&pdir, pport, &gateway_url, "49200-49299", "");
    // Now the request reaches the gateway, which starts calling for a
    // ticket that is closed.
    hold.store(false, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(20);
    let nid = loop {
        if let Some(n) = notifications(&g, &ticket).first() {
            break n["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < until, "the gateway never got the call");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Its events reach the restarted pipeline, which finds the incident
    // closed and stops the call.
    let n = g.wait_state(&nid, &["cancelled"], Duration::from_secs(45));
    assert_eq!(n["cancel_reason"], "the incident is closed", "{n:#}");
    assert_eq!(notifications(&g, &ticket).len(), 1, "called once");
    let inc = wait_incident(&p, "db-01", "told of the cancel", |i| {
        texts(i)
            .iter()
            .any(|l| l.contains("the escalation was cancelled: the incident is closed"))
    });
    assert_eq!(inc["state"], "closed");
}

#[test]
fn a_recovered_incident_whose_cancel_is_never_confirmed_closes_after_recovered_wait() {
    let (_phone, uri) = callee("50000-50099", None);
    let (gdir, pdir) = two_dirs("pipeline-remote-wait", &plan(&uri, "recovery = \"call\"\n"));
    let (gport, pport) = (free_port_pair(), free_port_pair());
    let mut g = gateway(&gdir, gport, pport, "50100-50199");
    let p = pipeline(
        &pdir,
        pport,
        &format!("http://127.0.0.1:{gport}"),
        "50200-50299",
        "recovered_wait = \"4s\"\n",
    );
    post_event(&p, event("trigger", "k-app-01", "app-01"));
    wait_incident(&p, "app-01", "answered", |i| {
        texts(i).iter().any(|l| l.starts_with("answered"))
    });
    // The gateway dies: the cancel cannot reach it, and no webhook will
    // ever say the escalation ended.
    unsafe { libc::kill(g.child.id() as i32, libc::SIGKILL) };
    let _ = g.child.wait();
    let recovered_at = Instant::now();
    post_event(&p, event("resolve", "k-app-01", "app-01"));
    wait_incident(&p, "app-01", "recovered", |i| i["state"] == "recovered");
    let inc = wait_incident(&p, "app-01", "closed", |i| i["state"] == "closed");
    assert!(
        recovered_at.elapsed() >= Duration::from_secs(4),
        "closed before recovered_wait"
    );
    let lines = texts(&inc);
    in_order(
        &lines,
        &[
            "the escalation is cancelled: recovered",
            "notifying → recovered",
            "never reported the end of notification",
            "recovered → closed: recovered; the cancelled escalation's end was not heard within 4 s",
            "closed and released",
        ],
    );
    assert!(
        !lines.iter().any(|l| l.contains("recovery notice started")),
        "{lines:#?}"
    );
    drop(g);
}

//! The alert pipeline end to end with a real Prometheus Alertmanager:
//! alerts pushed to Alertmanager's own API are grouped and delivered to
//! callout's intake, wait out the window, become one incident with a
//! ticket number, a softphone is called and presses 1, the resolved
//! alert comes back through Alertmanager, and the incident closes with
//! every step on its timeline.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{copy_prompts, pressing_callee, Serve, TOKEN};
use common::{free_port_pair, scratch, KillOnDrop};
use serde_json::{json, Value};

fn alertmanager_bin() -> Option<&'static str> {
    ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

fn start_alertmanager(dir: &Path, callout: &str) -> (KillOnDrop, String) {
    let port = free_port_pair();
    let cfg = dir.join("am.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: callout\n  group_by: ['alertname', 'host']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n- name: callout\n  webhook_configs:\n  - url: {callout}/v1/intake/alertmanager\n    send_resolved: true\n\
             \x20   http_config:\n      authorization:\n        credentials: {TOKEN}\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("am-data")).unwrap();
    let log = std::fs::File::create(dir.join("am.log")).unwrap();
    let child = Command::new(alertmanager_bin().unwrap())
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("{base}/-/ready"))
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < until,
            "alertmanager did not come up: {}",
            std::fs::read_to_string(dir.join("am.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (KillOnDrop(child), base)
}

fn push(am: &str, alerts: Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{am}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .unwrap();
    assert!(
        r.status().is_success(),
        "alertmanager refused: {}",
        r.status()
    );
}

fn wait_incident(s: &Serve, pred: &dyn Fn(&Value) -> bool, what: &str, limit: Duration) -> Value {
    let until = Instant::now() + limit;
    loop {
        let (_, v) = s.http("GET", "/v1/incidents?contract=acme", None).unwrap();
        if let Some(i) = v["items"]
            .as_array()
            .and_then(|a| a.iter().find(|i| pred(i)))
        {
            return i.clone();
        }
        assert!(Instant::now() < until, "{what}: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn alerts_through_alertmanager_become_one_ticketed_incident_called_acked_recovered_and_closed() {
    assert!(
        alertmanager_bin().is_some(),
        "prometheus-alertmanager is not installed: run .ci/install or apt-get install prometheus-alertmanager"
    );
    let tmp = scratch("pipeline-am");
    let dir = tmp.as_path();
    copy_prompts(dir);
    let (_callee, uri) = pressing_callee("43000-43099");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        format!(
            "contract = \"acme\"\nname = \"ACME\"\nlanguage = \"en\"\nvariables = [\"alertname\"]\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n[message]\ntext = \"Alert {{alertname}} on {{host}}. Ticket {{ticket}}.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n\
             [pipeline]\nwait = \"2s\"\n"
        ),
    )
    .unwrap();
    let s = Serve::start(dir, "", "42000-42099");
    let (_am, am) = start_alertmanager(dir, &s.base);
    let now = chrono::Utc::now();
    let alerts = |ends: Option<chrono::DateTime<chrono::Utc>>| {
        let mut v = json!([
            {"labels": {"alertname": "HostDown", "host": "web-01", "contract": "acme", "severity": "critical"},
             "annotations": {"summary": "web-01 does not answer ping"}, "startsAt": now.to_rfc3339()},
            {"labels": {"alertname": "HTTPDown", "host": "web-01", "contract": "acme", "severity": "major"},
             "annotations": {"summary": "HTTP checks failing"}, "startsAt": now.to_rfc3339()}
        ]);
        if let Some(e) = ends {
            for a in v.as_array_mut().unwrap() {
                a["endsAt"] = json!(e.to_rfc3339());
            }
        }
        v
    };
    push(&am, alerts(None));
    // Alertmanager groups by alertname: two deliveries, one host, one
    // incident.
    let inc = wait_incident(
        &s,
        &|i| i["state"] == "acknowledged",
        "acknowledged by the callee",
        Duration::from_secs(40),
    );
    let id = inc["id"].as_str().unwrap().to_string();
    let ticket = inc["ticket"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("ACME-"), "{ticket}");
    assert_eq!(inc["host"], "web-01");
    let (_, all) = s.http("GET", "/v1/incidents?contract=acme", None).unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        1,
        "one host, one incident: {all:#}"
    );
    // Resolved through Alertmanager.
    push(
        &am,
        alerts(Some(chrono::Utc::now() - chrono::Duration::seconds(1))),
    );
    wait_incident(
        &s,
        &|i| i["id"] == id.as_str() && i["state"] == "closed",
        "closed after the recovery",
        Duration::from_secs(30),
    );
    let (st, full) = s.http("GET", &format!("/v1/incidents/{id}"), None).unwrap();
    assert_eq!(st, 200);
    let tl: Vec<String> = full["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}: {}",
                t["kind"].as_str().unwrap(),
                t["text"].as_str().unwrap()
            )
        })
        .collect();
    let text = tl.join("\n");
    for want in [
        "alert: opened by alertmanager",
        &format!("ticket: ticket {ticket} opened"),
        "state: pending → notifying",
        "gateway: calling Bob",
        "gateway: answered",
        "gateway: key 1 pressed",
        "gateway: acknowledged by Bob",
        "state: notifying → acknowledged",
        "recovery: recovered: HostDown",
        "recovery: recovered: HTTPDown",
        "state: recovered → closed",
        &format!("ticket: ticket {ticket} closed and released"),
    ] {
        assert!(text.contains(want), "timeline lacks {want:?}:\n{text}");
    }
    // In order: opened before called before acknowledged before closed.
    let pos = |w: &str| tl.iter().position(|l| l.contains(w)).unwrap();
    assert!(pos("opened by") < pos("calling Bob"));
    assert!(pos("calling Bob") < pos("notifying → acknowledged"));
    assert!(pos("notifying → acknowledged") < pos("recovered → closed"));
    // Both alerts and both recoveries are linked to it.
    let alerts = full["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    // Exactly one call was asked for.
    let (_, ns) = s
        .http("GET", "/v1/notifications?contract=acme", None)
        .unwrap();
    assert_eq!(ns["items"].as_array().unwrap().len(), 1, "{ns:#}");
    assert_eq!(ns["items"][0]["ticket"], ticket.as_str());
}

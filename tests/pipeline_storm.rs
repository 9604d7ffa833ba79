//! The pipeline against a running `callout serve`: an alert storm (a
//! network outage: 500 hosts × 10 alerts in under a minute) is one
//! monitoring-path incident for the centre and no call to the customer;
//! `kill -9` after an alert's 202 and during a wait window loses nothing
//! and calls nobody twice.

mod common;

use std::time::{Duration, Instant};

use common::scratch;
use common::serve::{copy_prompts, pressing_callee, Serve};
use serde_json::{json, Value};

fn plan(contract: &str, uri: &str, pipeline: &str) -> String {
    format!(
        "contract = \"{contract}\"\nname = \"{contract}\"\nlanguage = \"en\"\n\
         [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n[message]\ntext = \"Alert on {{host}}: {{summary}}.\"\n\
         [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n{pipeline}"
    )
}

fn am_batch(contract: &str, alerts: &[(String, String)], status: &str) -> Value {
    json!({
        "version": "4", "status": status, "receiver": "callout", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {"contract": contract}, "commonAnnotations": {},
        "externalURL": "http://am", "truncatedAlerts": 0,
        "alerts": alerts.iter().map(|(host, name)| json!({
            "status": status,
            "labels": {"alertname": name, "host": host, "severity": "critical"},
            "annotations": {"summary": format!("{name} on {host}")},
            "startsAt": "2026-11-30T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom", "fingerprint": format!("{host}-{name}"),
        })).collect::<Vec<_>>(),
    })
}

fn incidents(s: &Serve, contract: &str) -> Vec<Value> {
    let (_, v) = s
        .http(
            "GET",
            &format!("/v1/incidents?contract={contract}&limit=500"),
            None,
        )
        .unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn notifications(s: &Serve, contract: &str) -> Vec<Value> {
    let (_, v) = s
        .http(
            "GET",
            &format!("/v1/notifications?contract={contract}"),
            None,
        )
        .unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn counts(s: &Serve, contract: &str) -> (i64, i64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = callout::store::Store::connect(&s.db).await.unwrap();
        store.alert_counts(contract).await.unwrap()
    })
}

#[test]
fn an_alert_storm_is_one_monitoring_path_incident_and_no_customer_call() {
    let dir = scratch("pipeline-storm");
    copy_prompts(&dir);
    let (_noc_phone, noc_uri) = pressing_callee("44000-44099");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        plan(
            "acme",
            "sip:nobody@127.0.0.1:9",
            "[pipeline]\nwait = \"8s\"\npath_threshold = 5\nmonitoring_contract = \"noc\"\n",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("dialplans/noc.toml"), plan("noc", &noc_uri, "")).unwrap();
    let s = Serve::start(&dir, "", "45000-45099");
    let started = Instant::now();
    let mut accepted = 0;
    for round in 0..10 {
        for chunk in 0..10 {
            let alerts: Vec<(String, String)> = (chunk * 50..chunk * 50 + 50)
                .map(|h| (format!("host-{h:03}"), format!("Check{round}")))
                .collect();
            let (st, v) = s
                .http(
                    "POST",
                    "/v1/intake/alertmanager",
                    Some(am_batch("acme", &alerts, "firing")),
                )
                .unwrap();
            assert_eq!(st, 202, "{v}");
            accepted += v["accepted"].as_array().unwrap().len();
        }
    }
    let took = started.elapsed();
    assert_eq!(accepted, 5000);
    assert!(
        took < Duration::from_secs(60),
        "the storm took {took:?} to post"
    );
    // Every alert handled; one path incident called at the centre.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, unhandled) = counts(&s, "acme");
        let noc = notifications(&s, "noc");
        if n == 5000 && unhandled == 0 && !noc.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "alerts {n}, unhandled {unhandled}, noc calls {}",
            noc.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let incs = incidents(&s, "acme");
    let paths: Vec<&Value> = incs
        .iter()
        .filter(|i| i["kind"]["kind"] == "monitoring_path" || i["kind"] == "monitoring_path")
        .collect();
    assert_eq!(
        paths.len(),
        1,
        "{:#?}",
        incs.iter().take(3).collect::<Vec<_>>()
    );
    let path = paths[0];
    assert_eq!(path["notify_contract"], "noc");
    assert_eq!(path["holds"].as_array().unwrap().len(), 500);
    let called_hosts = incs
        .iter()
        .filter(|i| i["state"] == "notifying" || i["state"] == "acknowledged")
        .filter(|i| i["notify_contract"] == "acme")
        .count();
    assert_eq!(called_hosts, 0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        notifications(&s, "acme").is_empty(),
        "the customer was called"
    );
    assert_eq!(notifications(&s, "noc").len(), 1, "the centre once");
}

#[test]
fn kill_9_after_a_202_and_during_the_window_loses_nothing_and_calls_once() {
    let dir = scratch("pipeline-crash");
    copy_prompts(&dir);
    let (_phone, uri) = pressing_callee("46000-46099");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        plan("acme", &uri, "[pipeline]\nwait = \"6s\"\n"),
    )
    .unwrap();
    let mut s = Serve::start(&dir, "", "47000-47099");
    // Killed right after the answer: the alert must already be stored.
    let (st, v) = s
        .http(
            "POST",
            "/v1/intake/alertmanager",
            Some(am_batch(
                "acme",
                &[("web-01".into(), "HostDown".into())],
                "firing",
            )),
        )
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let posted = Instant::now();
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let _ = s.child.wait();
    drop(s);
    let mut s = Serve::start(&dir, "", "47000-47099");
    let until = Instant::now() + Duration::from_secs(20);
    while incidents(&s, "acme").is_empty() {
        assert!(Instant::now() < until, "the accepted alert was lost");
        std::thread::sleep(Duration::from_millis(100));
    }
    let inc = incidents(&s, "acme")[0].clone();
    assert_eq!(inc["state"], "pending");
    // Killed again inside the wait window.
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let _ = s.child.wait();
    drop(s);
    let s = Serve::start(&dir, "", "47000-47099");
    let until = Instant::now() + Duration::from_secs(40);
    let called = loop {
        let i = incidents(&s, "acme");
        if i[0]["state"] == "acknowledged" {
            break posted.elapsed();
        }
        assert!(Instant::now() < until, "{:#}", i[0]);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        called >= Duration::from_secs(6),
        "called before the window ended ({called:?})"
    );
    assert_eq!(incidents(&s, "acme").len(), 1, "one incident");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(notifications(&s, "acme").len(), 1, "one call");
    let (n, unhandled) = counts(&s, "acme");
    assert_eq!((n, unhandled), (1, 0));
}

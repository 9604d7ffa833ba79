//! First-level actions without a call, end to end: a real `callout serve`
//! takes an Alertmanager alert, its contract's `[[pipeline.auto_actions]]`
//! rule restarts a "process" on a real sshd (skip_check flow) before
//! anyone is called:
//!
//! - the restart works and its verify passes: nobody is called, the run
//!   and the decision are on the incident's timeline;
//! - the service never stays up (verify fails): the escalation starts,
//!   the callee (`callout softphone`) is rung and acknowledges, and the
//!   message it was given says what was tried and how it failed;
//! - an operator runs the action on the incident through
//!   `POST /v1/incidents/{id}/actions/{action}`: dry run first, the run
//!   refused without its confirm value, then run; its line on the timeline.

mod common;

use std::time::{Duration, Instant};

use common::scratch;
use common::serve::{copy_prompts, Serve};
use common::sshd::Sshd;
use common::{best_match, peer, KillOnDrop};
use serde_json::{json, Value};

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

fn skip_check_flow(sshd: &Sshd) -> String {
    let svc = sshd.fakesvc.display();
    format!(
        r#"description = "Restart a fake service over SSH at once"
skip_check = true

[params]
host = {{ kind = "host" }}
service = {{ kind = "service" }}

[[execute]]
name = "restart"
timeout = "10s"
ssh = {{ argv = ["{svc}", "restart", "{{service}}"] }}

[[verify]]
name = "running-again"
timeout = "10s"
retries = 2
interval = "300ms"
ssh = {{ argv = ["{svc}", "status", "{{service}}"] }}
"#
    )
}

/// Checks the service and restarts it only if it is down (the recovery
/// verify: a running service is "found nothing to fix").
fn check_flow(sshd: &Sshd) -> String {
    let svc = sshd.fakesvc.display();
    format!(
        r#"description = "Check the service over SSH"

[params]
host = {{ kind = "host" }}
service = {{ kind = "service" }}

[[check]]
name = "status"
timeout = "10s"
ssh = {{ argv = ["{svc}", "status", "{{service}}"] }}

[[execute]]
name = "restart"
timeout = "10s"
ssh = {{ argv = ["{svc}", "restart", "{{service}}"] }}
"#
    )
}

/// One host per service: alerts for one host join one incident, and each
/// case here needs its own.
fn host_of(service: &str) -> &'static str {
    if service.starts_with("app") {
        "web01"
    } else if service == "inform" {
        "web03"
    } else {
        "web02"
    }
}

fn alert(s: &Serve, service: &str) {
    alert_named(s, "process_down", service)
}

fn alert_named(s: &Serve, name: &str, service: &str) {
    let body = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": name, "host": host_of(service),
         "contract": "ops", "service": service, "severity": "critical"},
         "annotations": {"summary": format!("{service} is down")}}
    ]});
    let (st, v) = s
        .http("POST", "/v1/intake/alertmanager", Some(body))
        .unwrap();
    assert_eq!(st, 202, "{v}");
}

fn incident_of(s: &Serve, service: &str) -> Option<Value> {
    let (_, v) = s
        .http(
            "GET",
            &format!("/v1/incidents?contract=ops&host={}", host_of(service)),
            None,
        )
        .unwrap();
    let items = v["items"].as_array()?.clone();
    for i in items {
        let id = i["id"].as_str()?;
        let (_, full) = s.http("GET", &format!("/v1/incidents/{id}"), None)?;
        let mine = full["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["labels"]["service"] == service));
        if mine {
            return Some(full);
        }
    }
    None
}

fn lines(inc: &Value) -> Vec<(String, String)> {
    inc["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|l| {
                    (
                        l["kind"].as_str().unwrap_or("").to_string(),
                        l["text"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has(inc: &Value, kind: &str, text: &str) -> bool {
    lines(inc)
        .iter()
        .any(|(k, t)| k == kind && t.contains(text))
}

#[test]
fn a_first_level_restart_calls_nobody_when_it_works_and_says_why_when_it_fails() {
    let tmp = scratch("auto-action");
    let dir = tmp.as_path();
    copy_prompts(dir);
    let sshd = Sshd::start(&dir.join("host"));
    // The callee records what it hears and presses 1 only once the
    // message is over (a key would cut it short).
    let heard_wav = dir.join("heard.wav");
    let (callee, port) = peer::softphone(|cmd| {
        cmd.args(["--press", "1", "--after", "14s"])
            .args(["--rtp-ports", "44300-44349", "--record"])
            .arg(&heard_wav);
    });
    let _callee = KillOnDrop(callee);
    let uri = format!("sip:oncall@127.0.0.1:{port}");
    let dialplans = dir.join("dialplans");
    std::fs::create_dir_all(dialplans.join("flows")).unwrap();
    std::fs::write(
        dialplans.join("flows/auto-restart.toml"),
        skip_check_flow(&sshd),
    )
    .unwrap();
    std::fs::write(
        dialplans.join("flows/check-service.toml"),
        check_flow(&sshd),
    )
    .unwrap();
    let inventory = format!(
        "{}\n[inventory.hosts.web02]\naddress = \"127.0.0.1\"\nport = {p}\nos = \"debian-12\"\n\
         [inventory.hosts.web03]\naddress = \"127.0.0.1\"\nport = {p}\nos = \"debian-12\"\n",
        sshd.inventory(&["app", "broken", "inform"]),
        p = sshd.port
    );
    std::fs::write(
        dialplans.join("ops.toml"),
        format!(
            r#"contract = "ops"
name = "Ops"
language = "en"
variables = ["service"]

[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "Oncall"
uri = "{uri}"

[message]
text = "Alert on {{host}}: {{summary}}"

[menu]
prompt = "Press 1 to acknowledge."
input_timeout = "15s"

[menu.keys]
"1" = "ack"

[actions.restart]
flow = "auto-restart"
description = "restart of the service"
pin = false
params = {{ host = "{{host}}", service = "{{service}}" }}

[actions.check]
flow = "check-service"
description = "check of the service"
pin = false
params = {{ host = "{{host}}", service = "{{service}}" }}

[pipeline]
wait = "0s"
recovery_verify = "check"

[[pipeline.auto_actions]]
match = ['alertname="process_down"']
action = "restart"
on_success = "mail"

[[pipeline.auto_actions]]
match = ['alertname="process_down_inform"']
action = "restart"
on_success = "call"

{inv}"#,
            inv = inventory
        ),
    )
    .unwrap();
    let s = Serve::start(dir, "", "44350-44399");

    // 1. The restart works and verifies: nobody is called.
    assert!(!sshd.running("app"));
    alert(&s, "app");
    let inc = wait_for(
        "the automatic run's decision",
        Duration::from_secs(30),
        || incident_of(&s, "app").filter(|i| has(i, "notify", "nobody is called")),
    );
    assert!(sshd.running("app"), "the restart did not happen");
    assert!(
        has(
            &inc,
            "action",
            "action restart (flow auto-restart) on web01 succeeded and verified"
        ),
        "{:#?}",
        lines(&inc)
    );
    assert_eq!(
        sshd.calls()
            .iter()
            .find(|c| c.ends_with(" app"))
            .map(String::as_str),
        Some("restart app"),
        "skip_check: no status before the restart: {:?}",
        sshd.calls()
    );
    assert_eq!(inc["notifications"], 0, "somebody was called: {inc:#}");
    std::thread::sleep(Duration::from_secs(2));
    let inc = incident_of(&s, "app").unwrap();
    assert!(
        !lines(&inc)
            .iter()
            .any(|(_, t)| t.contains("escalation started")),
        "{:#?}",
        lines(&inc)
    );

    // 2. The service never stays up: the verify fails, the escalation
    // starts and the message says what was tried and how it failed.
    alert(&s, "broken");
    let until = Instant::now() + Duration::from_secs(40);
    let inc = loop {
        let inc = incident_of(&s, "broken");
        if let Some(i) = inc
            .as_ref()
            .filter(|i| has(i, "notify", "escalation started"))
        {
            break i.clone();
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for the escalation after the failed run: {:#?}",
            inc.as_ref().map(lines)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        has(&inc, "action", "failed at the verify step running-again"),
        "{:#?}",
        lines(&inc)
    );
    assert!(has(&inc, "notify", "did not fix it: the escalation starts"));
    let nid = lines(&inc)
        .iter()
        .find_map(|(_, t)| {
            t.strip_prefix("escalation started: notification ")
                .map(String::from)
        })
        .unwrap();
    let n = s.wait_state(&nid, &["acked", "exhausted"], Duration::from_secs(60));
    let summary = n["summary"].as_str().unwrap();
    let phrase = "An automatic restart of the service was tried and failed: failed at the verify step running-again";
    assert!(summary.starts_with(phrase), "{n:#}");
    let spoken = callout::ivr::dialplan::render(
        "Alert on {host}: {summary}",
        &[
            ("host".to_string(), "web02".to_string()),
            ("summary".to_string(), summary.to_string()),
        ]
        .into(),
    );
    assert!(spoken.contains(phrase), "{spoken}");
    // And the callee heard it: the phrase's first clause, rendered by
    // the service's own engine, is in what the softphone recorded.
    let recorded = wait_for("the recording", Duration::from_secs(20), || {
        callout::media::audio::Prompt::load(&heard_wav).ok()
    });
    let tts = callout::tts::Tts::new(&callout::tts::TtsConfig {
        cache_dir: dir.join("tts"),
        ..Default::default()
    })
    .unwrap();
    let say = |text: &str| {
        tts.render(callout::ivr::dialplan::Language::En, text)
            .unwrap()
            .pcm
            .clone()
    };
    let tried = best_match(
        &say("An automatic restart of the service was tried and failed:"),
        &recorded.pcm,
    );
    assert!(tried.0 > 0.9, "the failure phrase was not heard: {tried:?}");
    // A negative control: a sentence never said scores well below.
    let unsaid = best_match(
        &say("The database backup finished without any errors last night."),
        &recorded.pcm,
    );
    assert!(unsaid.0 < 0.7, "an unsaid phrase matched: {unsaid:?}");

    // 3. An operator runs it on the incident: dry run, confirm, run.
    let path = format!(
        "/v1/incidents/{}/actions/restart",
        inc["id"].as_str().unwrap()
    );
    let (st, dry) = s
        .http("POST", &path, Some(json!({"dry_run": true})))
        .unwrap();
    assert_eq!(st, 200, "{dry:#}");
    assert!(dry["text"].as_str().unwrap().contains("restart"), "{dry:#}");
    let confirm = dry["confirm"].as_str().unwrap().to_string();
    let (st, v) = s.http("POST", &path, Some(json!({}))).unwrap();
    assert_eq!(st, 422, "{v:#}");
    assert!(v.to_string().contains("confirm"), "{v:#}");
    let (st, rec) = s
        .http("POST", &path, Some(json!({"confirm": confirm})))
        .unwrap();
    assert_eq!(st, 200, "{rec:#}");
    assert_eq!(rec["result"], "failed", "{rec:#}");
    let inc = incident_of(&s, "broken").unwrap();
    assert!(
        has(
            &inc,
            "action",
            "operator t: action restart (flow auto-restart) on web02 failed"
        ),
        "{:#?}",
        lines(&inc)
    );
    // Unknown action: 404 naming it.
    let bad = format!(
        "/v1/incidents/{}/actions/nosuch",
        inc["id"].as_str().unwrap()
    );
    let (st, v) = s
        .http("POST", &bad, Some(json!({"dry_run": true})))
        .unwrap();
    assert_eq!(st, 404, "{v:#}");
    assert!(v.to_string().contains("nosuch"), "{v:#}");

    // 4. The fixed incident recovers: the recovery verify checks the
    // service on the host, and its result is on the ticket before the
    // close.
    let checks_before = sshd.calls().iter().filter(|c| *c == "status app").count();
    let body = json!({"version": "4", "status": "resolved", "alerts": [
        {"status": "resolved", "labels": {"alertname": "process_down", "host": "web01",
         "contract": "ops", "service": "app", "severity": "critical"},
         "annotations": {"summary": "app is down"}}
    ]});
    let (st, v) = s
        .http("POST", "/v1/intake/alertmanager", Some(body))
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let inc = wait_for("the verified close", Duration::from_secs(30), || {
        incident_of(&s, "app").filter(|i| i["state"] == "closed")
    });
    let l: Vec<String> = lines(&inc).into_iter().map(|(_, t)| t).collect();
    let verdict = l
        .iter()
        .position(|t| {
            t.starts_with("recovery verified: action check (flow check-service) on web01 found nothing to fix")
        })
        .unwrap_or_else(|| panic!("{l:#?}"));
    let close = l
        .iter()
        .position(|t| t.starts_with("recovered → closed: recovered; recovery verified"))
        .unwrap_or_else(|| panic!("{l:#?}"));
    assert!(verdict < close, "{l:#?}");
    assert!(
        l.iter()
            .position(|t| t.starts_with("recovery verify: action check runs"))
            .is_some_and(|i| i < verdict),
        "{l:#?}"
    );
    assert_eq!(
        sshd.calls().iter().filter(|c| *c == "status app").count(),
        checks_before + 1,
        "the verify did not check the host: {:?}",
        sshd.calls()
    );
    assert_eq!(inc["notifications"], 0, "somebody was called: {inc:#}");

    // 5. A hostile alert field never reaches the host: the service label
    // is not a service of the inventory (nor a plain word), so the run
    // is refused by the same checks as a call's, nothing runs, and the
    // escalation starts with the refusal in front.
    let hostile = "app;touch${IFS}/tmp/pwned\nrm";
    alert(&s, hostile);
    let inc = wait_for(
        "the escalation after the refused run",
        Duration::from_secs(30),
        || incident_of(&s, hostile).filter(|i| has(i, "notify", "escalation started")),
    );
    assert!(
        has(&inc, "notify", "did not fix it: the escalation starts"),
        "{:#?}",
        lines(&inc)
    );
    assert!(
        lines(&inc).iter().any(|(k, t)| k == "action"
            && t.starts_with("action restart (flow auto-restart)")
            && (t.contains("did not run") || t.contains("refused"))),
        "{:#?}",
        lines(&inc)
    );
    assert!(
        !sshd
            .calls()
            .iter()
            .any(|c| c.contains("touch") || c.contains("pwned")),
        "{:?}",
        sshd.calls()
    );

    // 6. The contract says "call to inform": the fix works and verifies,
    // and the escalation still starts, to tell.
    alert_named(&s, "process_down_inform", "inform");
    let inc = wait_for("the call to inform", Duration::from_secs(30), || {
        incident_of(&s, "inform").filter(|i| has(i, "notify", "escalation started"))
    });
    assert!(sshd.running("inform"), "the restart did not happen");
    assert!(
        has(
            &inc,
            "notify",
            "fixed by the first-level action and verified: calling to inform"
        ),
        "{:#?}",
        lines(&inc)
    );
    assert!(
        has(
            &inc,
            "action",
            "action restart (flow auto-restart) on web03 succeeded and verified"
        ),
        "{:#?}",
        lines(&inc)
    );
    assert_eq!(inc["notifications"], 1, "{inc:#}");
}

//! Maintenance flows against a real OpenSSH server on loopback: state
//! really changes on the "host", failures and timeouts are reported, bad
//! values never reach it, and the dry run says exactly what would run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::sshd::Sshd;
use common::*;
use serde_json::Value;

const PLAN: &str = r#"contract = "ops"
name = "Ops test"
language = "en"
variables = ["service"]

[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "Oncall"
uri = "sip:oncall@127.0.0.1:5999"

[message]
text = "Alert on {host}."

[menu]
prompt = "Press 1 to acknowledge, 5 to restart."
input_timeout = "5s"

[menu.keys]
"1" = "ack"
"5" = { action = "restart" }

[actions.restart]
flow = "fake-restart"
params = { host = "{host}", service = "{service}" }

[pin]
code = "2468"
"#;

/// A dialplan folder for contract `ops` using sshd as host `web01`.
fn dialplans(dir: &Path, sshd: &Sshd, execute_timeout: &str) -> PathBuf {
    let d = dir.join("dialplans");
    std::fs::create_dir_all(d.join("flows")).unwrap();
    std::fs::write(
        d.join("ops.toml"),
        format!("{PLAN}\n{}", sshd.inventory(&["app", "broken", "slow"])),
    )
    .unwrap();
    std::fs::write(
        d.join("flows/fake-restart.toml"),
        sshd.flow(execute_timeout),
    )
    .unwrap();
    d
}

/// `callout action run fake-restart` on the test's own database.
fn cli(d: &Path, args: &[&str]) -> Command {
    cli_flow(d, "fake-restart", args)
}

fn cli_flow(d: &Path, flow: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callout"));
    c.args(["action", "run", flow, "--contract", "ops"])
        .args(["--dialplans", d.to_str().unwrap()])
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .args(["--database", &database(d)])
        .args(args)
        .env_remove("CALLOUT_CONFIG")
        .current_dir(d.parent().unwrap());
    c
}

fn database(d: &Path) -> String {
    format!("sqlite://{}/data/callout.db", d.parent().unwrap().display())
}

fn run(d: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = cli(d, args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.into())))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn steps(lines: &[Value]) -> Vec<(String, String, u64)> {
    events(lines, "action.step")
        .iter()
        .map(|e| {
            let s = &e["step"];
            (
                s["name"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
                s["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn finished(lines: &[Value]) -> &Value {
    let f = events(lines, "action.finished");
    assert_eq!(f.len(), 1, "{lines:#?}");
    &f[0]["record"]
}

#[test]
fn check_execute_verify_changes_real_state_over_ssh() {
    let dir = scratch("action-ssh");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    assert!(!sshd.running("app"));

    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=app"]);
    assert_eq!(code, 0, "{err}\n{lines:#?}\n{}", sshd.log());
    assert_eq!(
        steps(&lines),
        [
            ("running".into(), "failed".into(), 1),
            ("restart".into(), "ok".into(), 1),
            ("running-again".into(), "ok".into(), 1),
        ]
    );
    // The fix really happened on the host, through sshd, as this user.
    assert!(sshd.running("app"), "the service process runs");
    assert_eq!(sshd.calls(), ["status app", "restart app", "status app"]);
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    let rec = finished(&lines);
    assert_eq!(rec["result"], "succeeded");
    assert_eq!(rec["requested_by"]["via"], "cli");
    let check = &rec["steps"][0];
    assert_eq!(check["exit_code"], 3);
    assert_eq!(check["stdout"], "app is stopped\n");
    assert_eq!(check["op"]["kind"], "ssh");
    assert_eq!(check["op"]["argv"][0], "ssh");
    assert_eq!(
        check["op"]["remote"],
        serde_json::json!([sshd.fakesvc.to_str().unwrap(), "status", "app"])
    );
    assert_eq!(rec["steps"][1]["stdout"], "restarted app\n");
    assert!(rec["steps"][1]["duration_ms"].as_u64().is_some());

    // Healthy now: the check says so and nothing is changed.
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=app"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(steps(&lines), [("running".into(), "ok".into(), 1)]);
    assert_eq!(finished(&lines)["result"], "not_needed");
    assert_eq!(sshd.calls().len(), 4, "only one more status call");
}

#[test]
fn a_verify_that_keeps_failing_is_a_failed_run() {
    let dir = scratch("action-verify");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=broken"]);
    assert_eq!(code, 1, "{err}\n{lines:#?}");
    assert_eq!(
        steps(&lines),
        [
            ("running".into(), "failed".into(), 1),
            ("restart".into(), "ok".into(), 1),
            ("running-again".into(), "failed".into(), 1),
            ("running-again".into(), "failed".into(), 2),
            ("running-again".into(), "failed".into(), 3),
        ]
    );
    let rec = finished(&lines);
    assert_eq!(rec["result"], "failed");
    assert_eq!(rec["phase"], "verify");
    assert_eq!(rec["step"], "running-again");
    assert!(!sshd.running("broken"));
}

#[test]
fn a_hung_step_is_killed_at_its_timeout() {
    let dir = scratch("action-timeout");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "2s");
    let t = std::time::Instant::now();
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=slow"]);
    assert_eq!(code, 1, "{err}\n{lines:#?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t.elapsed()
    );
    let rec = finished(&lines);
    assert_eq!(rec["result"], "failed");
    assert_eq!(rec["phase"], "execute");
    assert_eq!(rec["outcome"], "timeout");
    let step = &rec["steps"][1];
    assert_eq!(step["outcome"], "timeout");
    assert!(
        step["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s; killed"),
        "{step}"
    );
    let ms = step["duration_ms"].as_u64().unwrap();
    assert!((1900..6000).contains(&ms), "{ms} ms");
    // Verify did not run after a failed fix.
    assert_eq!(rec["steps"].as_array().unwrap().len(), 2);
}

/// The same slot and record as the service's, through the database: a
/// second run is refused while one is running in another process, and a
/// slot whose process was killed is taken over at once, the dead run
/// marked interrupted.
#[test]
fn runs_share_one_slot_across_processes_and_are_recorded() {
    use callout::store::Store;
    let dir = scratch("action-slot");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "30s");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut first = cli(
        &d,
        &[
            "--param",
            "host=web01",
            "--param",
            "service=slow",
            "--ticket",
            "INC-1",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let store = rt.block_on(Store::connect(&database(&d))).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let held = loop {
        let r = rt.block_on(store.running_runs()).unwrap();
        if let Some(r) = r.into_iter().next() {
            break r;
        }
        assert!(
            std::time::Instant::now() < until,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        held.owner.as_deref().unwrap().rsplit_once(':').unwrap().1,
        first.id().to_string()
    );
    assert_eq!(held.ticket.as_deref(), Some("INC-1"));
    // Wait for the hung restart, so the slot is held mid-run.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sshd.calls().contains(&"restart slow".to_string()) {
        assert!(std::time::Instant::now() < until, "{:?}", sshd.calls());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Another process, other values, same contract, host and flow.
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=app"]);
    assert_eq!(code, 2, "{lines:#?}");
    assert!(
        err.contains(&format!(
            "flow \"fake-restart\" is already running for contract \"ops\" on host \"web01\" (run {}, started by ",
            held.id
        )) && err.contains("with callout action run); wait for it to finish"),
        "{err}"
    );
    assert!(lines.is_empty());
    assert!(!sshd.calls().contains(&"status app".to_string()));

    // The first process dies mid-run: its slot is taken over at once.
    first.kill().unwrap();
    first.wait().unwrap();
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=app"]);
    assert_eq!(code, 0, "{err}\n{lines:#?}");
    assert!(sshd.running("app"));
    let dead = rt.block_on(store.get_run(&held.id)).unwrap().unwrap();
    assert_eq!(dead.state, "interrupted");
    assert!(dead.finished_ms.is_some());
    // The new run's full record is in the database, and its events wait
    // in the outbox for the service's webhook sender.
    let run_id = finished(&lines)["run_id"].as_str().unwrap().to_string();
    let row = rt.block_on(store.get_run(&run_id)).unwrap().unwrap();
    assert_eq!(row.state, "succeeded");
    assert_eq!(row.requested_by["via"], "cli");
    let rec = row.record.unwrap();
    assert_eq!(rec["steps"].as_array().unwrap().len(), 3);
    assert_eq!(rec["steps"][1]["op"]["remote"][2], "app");
    let events: Vec<String> = rt
        .block_on(store.outbox(&run_id))
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            "action.started",
            "action.step",
            "action.step",
            "action.step",
            "action.finished"
        ]
    );
    assert!(rt.block_on(store.running_runs()).unwrap().is_empty());
}

#[test]
fn injection_attempts_are_refused_before_anything_runs() {
    let dir = scratch("action-inject");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    let pwned = dir.join("pwned");
    let bad = [
        "web01; rm -rf /".to_string(),
        "web01' || true '".to_string(),
        "\"web01\"".to_string(),
        "web01\nrm -rf /".to_string(),
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        "web01 && id".to_string(),
        "-oProxyCommand=touch /tmp/x".to_string(),
        "../../etc/passwd".to_string(),
    ];
    for v in &bad {
        for (param, other) in [("host", "service=app"), ("service", "host=web01")] {
            let p = format!("{param}={v}");
            let (code, lines, err) = run(&d, &["--param", &p, "--param", other]);
            assert_eq!(code, 2, "{param}={v:?} must be refused: {lines:#?}");
            assert!(
                err.contains(&format!("parameter \"{param}\"")),
                "the error names the parameter: {err}"
            );
            assert!(lines.is_empty(), "nothing ran: {lines:#?}");
        }
    }
    // Names that pass the pattern but are not in the inventory.
    for p in ["host=web02", "host=localhost"] {
        let (code, _, err) = run(&d, &["--param", p, "--param", "service=app"]);
        assert_eq!(code, 2);
        assert!(
            err.contains("not one of the contract's inventory hosts"),
            "{err}"
        );
    }
    let (code, _, err) = run(&d, &["--param", "host=web01", "--param", "service=sshd"]);
    assert_eq!(code, 2);
    assert!(err.contains("inventory services"), "{err}");
    assert!(
        sshd.calls().is_empty(),
        "the host saw nothing: {:?}",
        sshd.calls()
    );
    assert!(!sshd.log().contains("Accepted"), "no SSH login happened");
    assert!(!pwned.exists());
}

#[test]
fn dry_run_prints_exactly_what_would_run() {
    let dir = scratch("action-dry");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "action",
            "run",
            "fake-restart",
            "--contract",
            "ops",
            "--dry-run",
        ])
        .args(["--param", "host=web01", "--param", "service=app"])
        .args(["--dialplans", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ssh = |remote: &str| {
        serde_json::to_string(&[
            "ssh",
            "-F",
            "/dev/null",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", sshd.known_hosts.display()),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            &format!("IdentityFile={}", sshd.key.display()),
            "-o",
            "ConnectTimeout=3",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=2",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &sshd.port.to_string(),
            "-l",
            &sshd.user,
            "--",
            "127.0.0.1",
            &format!("{} {remote} app", sshd.fakesvc.display()),
        ])
        .unwrap()
    };
    let svc = sshd.fakesvc.display();
    let target = format!("{}@127.0.0.1:{}", sshd.user, sshd.port);
    let want = format!(
        "flow fake-restart for contract ops (action restart)\n\
         params: host=web01 service=app\n\
         1. check running: ssh, timeout 10s\n   \
            host: web01 ({target}, os debian-12)\n   \
            remote argv: [\"{svc}\",\"status\",\"app\"]\n   \
            argv: {}\n\
         2. execute restart: ssh, timeout 20s\n   \
            host: web01 ({target}, os debian-12)\n   \
            remote argv: [\"{svc}\",\"restart\",\"app\"]\n   \
            argv: {}\n\
         3. verify running-again: ssh, timeout 10s, 2 retries every 300ms\n   \
            host: web01 ({target}, os debian-12)\n   \
            remote argv: [\"{svc}\",\"status\",\"app\"]\n   \
            argv: {}\n\
         dry run: nothing was executed\n",
        ssh("status"),
        ssh("restart"),
        ssh("status")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    assert!(sshd.calls().is_empty(), "a dry run runs nothing");
    // The same validation as a real run.
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args([
            "action",
            "run",
            "fake-restart",
            "--contract",
            "ops",
            "--dry-run",
        ])
        .args(["--param", "host=web01;id", "--param", "service=app"])
        .args(["--dialplans", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "callout: parameter \"host\": value \"web01;id\" contains ';': only letters, digits and . _ : @ + - are allowed\n"
    );
}

#[test]
fn flows_naming_hosts_outside_the_inventory_do_not_load() {
    let dir = scratch("action-load");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    // A step that probes a host the contract does not list.
    std::fs::write(
        d.join("flows/probe-db.toml"),
        "[params]\nhost = { kind = \"host\" }\n\n[[execute]]\nname = \"db-port\"\ntcp_check = { host = \"db-9\", port = 5432 }\n",
    )
    .unwrap();
    let plan = std::fs::read_to_string(d.join("ops.toml")).unwrap();
    let plan = plan
        .replace(
            "\"5\" = { action = \"restart\" }",
            "\"5\" = { action = \"restart\" }\n\"6\" = { action = \"probe\" }\n\"7\" = { action = \"fixed\" }",
        )
        .replace(
            "[pin]",
            "[actions.probe]\nflow = \"probe-db\"\nparams = { host = \"web01\" }\n\n\
             [actions.fixed]\nflow = \"fake-restart\"\nparams = { host = \"mail-1\", service = \"app\" }\n\
             [actions.fixed.override.reboot]\nssh = { argv = [\"reboot\"] }\n\n[pin]",
        );
    std::fs::write(d.join("ops.toml"), &plan).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dialplan", "check", "--no-tts", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line_of = |needle: &str| plan.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let file = d.join("ops.toml");
    for (line, msg) in [
        (
            line_of("[actions.fixed]"),
            "action \"fixed\": parameter \"host\": \"mail-1\" is not one of the contract's inventory hosts",
        ),
        (
            line_of("[actions.fixed]"),
            "action \"fixed\": override of step \"reboot\", which flow \"fake-restart\" does not have (steps: running, restart, running-again)",
        ),
        (
            line_of("[actions.probe]"),
            "names host \"db-9\", which is not in the contract's inventory",
        ),
    ] {
        let prefix = format!("{}:{line}:", file.display());
        assert!(
            text.lines().any(|l| l.starts_with(&prefix) && l.contains(msg)),
            "want {prefix} ... {msg}\n{text}"
        );
    }
    // The service keeps its plans when a reload meets these errors: the
    // registry rejects the folder as a whole.
    assert!(callout::ivr::registry::Registry::load(&d, Path::new("prompts")).is_err());
}

/// A local stand-in for an automation tool's API (the AWX job-launch
/// shape): records each launch; `/healthz` says "healthy" once a job has
/// been launched; template 13 fails with 500.
struct Runbook {
    _rt: tokio::runtime::Runtime,
    port: u16,
    launches: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Runbook {
    fn start() -> Runbook {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::{get, post};
        type Launches = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let launches: Launches = Default::default();
        let app = axum::Router::new()
            .route(
                "/api/v2/job_templates/{id}/launch/",
                post(
                    |State(l): State<Launches>,
                     UrlPath(id): UrlPath<String>,
                     h: HeaderMap,
                     body: String| async move {
                        let auth = h
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        l.lock().unwrap().push(serde_json::json!({
                            "template": id, "authorization": auth,
                            "content_type": h.get("content-type").and_then(|v| v.to_str().ok()),
                            "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
                        }));
                        if id == "13" {
                            (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "template 13 is broken".to_string(),
                            )
                        } else {
                            // Echoes the credential, as careless tools do.
                            (
                                StatusCode::CREATED,
                                format!("{{\"job\": 99, \"auth\": \"{auth}\"}}"),
                            )
                        }
                    },
                ),
            )
            .route(
                "/healthz",
                get(|State(l): State<Launches>| async move {
                    if l.lock().unwrap().iter().any(|x| x["template"] != "13") {
                        (StatusCode::OK, "all healthy")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "down")
                    }
                }),
            )
            .with_state(launches.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move { axum::serve(listener, app).await });
        Runbook {
            _rt: rt,
            port,
            launches,
        }
    }
}

/// The non-SSH step kinds against real sockets: an `http` launch with a
/// secret header and a JSON body, `http_check` and `tcp_check` probes, and
/// a contract that overrides the launch with a local `command` while
/// keeping the rest of the shared flow.
#[test]
fn runbook_api_probes_and_a_contract_override_run_for_real() {
    let dir = scratch("action-http");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    let api = Runbook::start();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let port = api.port;
    std::fs::write(
        d.join("flows/launch-job.toml"),
        format!(
            r#"description = "Launch a job, then probe"

[params]
host = {{ kind = "host" }}
template = {{ kind = "value", pattern = "[0-9]{{1,6}}" }}

[[check]]
name = "healthy"
timeout = "5s"
http_check = {{ url = "http://{{address}}:{port}/healthz", contains = "healthy" }}

[[execute]]
name = "launch"
timeout = "5s"
http = {{ url = "http://{{address}}:{port}/api/v2/job_templates/{{template}}/launch/", headers = {{ Authorization = "Bearer {{env:CALLOUT_TEST_RUNBOOK_TOKEN}}" }}, body = {{ limit = "{{host}}", extra_vars = {{ template = "{{template}}", force = true }} }}, expect_status = [201] }}

[[verify]]
name = "port-open"
timeout = "2s"
tcp_check = {{ port = {port} }}

[[verify]]
name = "healthy-again"
timeout = "5s"
http_check = {{ url = "http://{{address}}:{port}/healthz", contains = "healthy" }}
"#
        ),
    )
    .unwrap();
    let marker = dir.join("launched-locally");
    let plan = std::fs::read_to_string(d.join("ops.toml"))
        .unwrap()
        .replace(
            "variables = [\"service\"]",
            "variables = [\"service\", \"template\"]",
        )
        .replace(
            "\"5\" = { action = \"restart\" }",
            "\"5\" = { action = \"restart\" }\n\"6\" = { action = \"launch\" }\n\"7\" = { action = \"local\" }",
        )
        .replace(
            "[pin]",
            &format!(
                "[actions.launch]\nflow = \"launch-job\"\nparams = {{ host = \"{{host}}\", template = \"{{template}}\" }}\n\n\
                 [actions.local]\nflow = \"launch-job\"\nparams = {{ host = \"{{host}}\", template = \"7\" }}\n\
                 [actions.local.override.launch]\ncommand = {{ argv = [\"touch\", \"{}\"] }}\n\
                 [actions.local.override.port-open]\ntcp_check = {{ port = {closed} }}\n\n[pin]",
                marker.display()
            ),
        );
    std::fs::write(d.join("ops.toml"), &plan).unwrap();
    let secret = "sekr3t-runbook-token";
    let run_flow = |args: &[&str]| {
        let mut a = vec!["--param", "host=web01"];
        a.extend_from_slice(args);
        let out = cli_flow(&d, "launch-job", &a)
            .env("CALLOUT_TEST_RUNBOOK_TOKEN", secret)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            out.status.code().unwrap(),
            lines,
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Without the secret in the environment the run does not start.
    let out = cli_flow(
        &d,
        "launch-job",
        &[
            "--action",
            "launch",
            "--param",
            "host=web01",
            "--param",
            "template=42",
        ],
    )
    .env_remove("CALLOUT_TEST_RUNBOOK_TOKEN")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "callout: the secret environment variable CALLOUT_TEST_RUNBOOK_TOKEN is not set\n"
    );
    assert!(api.launches.lock().unwrap().is_empty());

    // A failing launch: the check confirms the problem, the API says 500.
    let (code, lines, _, err) = run_flow(&["--action", "launch", "--param", "template=13"]);
    assert_eq!(code, 1, "{err}\n{lines:#?}");
    let rec = finished(&lines);
    assert_eq!(rec["result"], "failed", "{rec:#}");
    assert_eq!(rec["phase"], "execute");
    assert_eq!(rec["steps"][0]["http_status"], 503);
    assert_eq!(rec["steps"][1]["http_status"], 500);
    assert_eq!(rec["steps"][1]["stdout"], "template 13 is broken");

    // The contract's override: a local command instead of the API call and
    // a probe of a closed port; the rest of the shared flow unchanged.
    let (code, lines, _, err) = run_flow(&["--action", "local"]);
    assert_eq!(code, 1, "{err}\n{lines:#?}");
    assert!(marker.exists(), "the overriding command ran");
    assert_eq!(api.launches.lock().unwrap().len(), 1, "no API call");
    assert_eq!(
        steps(&lines),
        [
            ("healthy".into(), "failed".into(), 1),
            ("launch".into(), "ok".into(), 1),
            ("port-open".into(), "failed".into(), 1),
        ]
    );
    let rec = finished(&lines);
    assert_eq!(rec["phase"], "verify");
    assert_eq!(rec["steps"][1]["op"]["kind"], "command");
    assert_eq!(rec["steps"][1]["exit_code"], 0);
    assert!(
        rec["steps"][2]["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("connect 127.0.0.1:{closed}: ")),
        "{rec:#}"
    );
    let out = cli_flow(
        &d,
        "launch-job",
        &["--action", "local", "--param", "host=web01", "--dry-run"],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "2. execute launch: command, timeout 5s (contract override)\n   argv: [\"touch\",\"{}\"]\n",
            marker.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "3. verify port-open: tcp_check, timeout 2s (contract override)\n   connect: web01 (127.0.0.1:{closed})\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("4. verify healthy-again: http_check, timeout 5s\n"),
        "{text}"
    );

    // The launch that works: the right request, the secret only on the wire.
    let (code, lines, stdout, err) = run_flow(&["--action", "launch", "--param", "template=42"]);
    assert_eq!(code, 0, "{err}\n{lines:#?}");
    let got = api.launches.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        got,
        serde_json::json!({
            "template": "42",
            "authorization": format!("Bearer {secret}"),
            "content_type": "application/json",
            "body": {"limit": "web01", "extra_vars": {"template": "42", "force": true}},
        })
    );
    assert_eq!(
        steps(&lines),
        [
            ("healthy".into(), "failed".into(), 1),
            ("launch".into(), "ok".into(), 1),
            ("port-open".into(), "ok".into(), 1),
            ("healthy-again".into(), "ok".into(), 1),
        ]
    );
    let rec = finished(&lines);
    assert_eq!(rec["result"], "succeeded");
    let launch = &rec["steps"][1];
    assert_eq!(launch["http_status"], 201);
    assert_eq!(launch["op"]["kind"], "http");
    assert_eq!(
        launch["op"]["url"],
        format!("http://127.0.0.1:{port}/api/v2/job_templates/42/launch/")
    );
    assert_eq!(
        launch["op"]["headers"]["Authorization"],
        "Bearer {env:CALLOUT_TEST_RUNBOOK_TOKEN}"
    );
    assert_eq!(
        launch["stdout"],
        "{\"job\": 99, \"auth\": \"Bearer [redacted]\"}"
    );
    assert_eq!(rec["steps"][2]["op"]["address"], "127.0.0.1");
    assert!(!stdout.contains(secret), "the secret leaked: {stdout}");
    // Healthy now: the next request finds nothing to fix.
    let (code, lines, _, _) = run_flow(&["--action", "launch", "--param", "template=42"]);
    assert_eq!(code, 0);
    assert_eq!(finished(&lines)["result"], "not_needed");
    assert_eq!(api.launches.lock().unwrap().len(), 2);
    drop(api);
}

/// At a service start, runs left `running` by processes that are gone are
/// marked interrupted; a run of a live process elsewhere keeps its slot.
#[test]
fn a_start_frees_only_the_slots_of_dead_processes() {
    use callout::action::slot::{this_owner, STALE_MS};
    use callout::action::Actions;
    use callout::store::{RunRow, Store};
    let dir = scratch("action-recover");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(Store::connect(&format!(
            "sqlite://{}/callout.db",
            dir.display()
        )))
        .unwrap();
    let me = this_owner();
    let host = me.rsplit_once(':').unwrap().0.to_string();
    let now = callout::runner::now_ms();
    let row = |id: &str, flow: &str, owner: Option<String>, beat: i64| RunRow {
        id: id.into(),
        contract: "ops".into(),
        action: "restart".into(),
        flow: flow.into(),
        host: "web01".into(),
        notification_id: None,
        ticket: None,
        requested_by: serde_json::json!({"via": "cli", "user": "op"}),
        state: "running".into(),
        record: None,
        started_ms: beat,
        finished_ms: None,
        owner,
        heartbeat_ms: Some(beat),
        epoch: None,
        fenced_ms: None,
    };
    // A process that exited: spawn one and reap it, so its pid is free.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let rows = [
        row("run_dead", "a", Some(format!("{host}:{gone_pid}")), now),
        row(
            "run_silent",
            "b",
            Some("elsewhere:42".into()),
            now - STALE_MS - 5_000,
        ),
        row("run_old", "c", None, now),
        row("run_live", "d", Some("elsewhere:42".into()), now),
    ];
    for r in &rows {
        assert!(rt.block_on(store.start_run(r)).unwrap());
    }
    let actions = Actions::with_store(store.clone());
    assert_eq!(rt.block_on(actions.recover()).unwrap(), 3);
    for (id, state) in [
        ("run_dead", "interrupted"),
        ("run_silent", "interrupted"),
        ("run_old", "interrupted"),
        ("run_live", "running"),
    ] {
        assert_eq!(
            rt.block_on(store.get_run(id)).unwrap().unwrap().state,
            state,
            "{id}"
        );
    }
}

/// Strict host key checking: a host whose key is not the one in
/// known_hosts (a man in the middle, a reinstalled box) gets no command,
/// and the run says why. A host that does not answer fails fast.
#[test]
fn a_host_with_the_wrong_key_or_no_sshd_gets_nothing() {
    let dir = scratch("action-hostkey");
    let sshd = Sshd::start(&dir.join("host"));
    let d = dialplans(&dir, &sshd, "20s");
    let good = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let other = dir.join("other_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let other_pub = std::fs::read_to_string(dir.join("other_key.pub")).unwrap();
    let mut words = other_pub.split_whitespace();
    std::fs::write(
        &sshd.known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            words.next().unwrap(),
            words.next().unwrap()
        ),
    )
    .unwrap();
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=app"]);
    assert_eq!(code, 1, "{err}\n{lines:#?}");
    let rec = finished(&lines);
    assert_eq!(rec["result"], "failed");
    assert_eq!(rec["phase"], "check");
    assert_eq!(rec["outcome"], "error");
    let step = &rec["steps"][0];
    assert_eq!(step["exit_code"], 255);
    let why = step["error"].as_str().unwrap();
    assert!(
        why.starts_with("ssh could not run the command: ")
            && why.contains("Host key verification failed"),
        "{why}"
    );
    assert!(sshd.calls().is_empty(), "{:?}", sshd.calls());
    assert!(!sshd.log().contains("Accepted"), "{}", sshd.log());

    // The right key again, but nothing listens on the port.
    std::fs::write(&sshd.known_hosts, good).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plan = std::fs::read_to_string(d.join("ops.toml"))
        .unwrap()
        .replace(
            &format!("port = {}", sshd.port),
            &format!("port = {closed}"),
        );
    std::fs::write(d.join("ops.toml"), plan).unwrap();
    let t = std::time::Instant::now();
    let (code, lines, err) = run(&d, &["--param", "host=web01", "--param", "service=app"]);
    assert_eq!(code, 1, "{err}\n{lines:#?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let rec = finished(&lines);
    assert_eq!(rec["outcome"], "error");
    let why = rec["steps"][0]["error"].as_str().unwrap();
    assert!(why.contains("Connection refused"), "{why}");
    assert!(sshd.calls().is_empty());
}

//! End to end: a notification rings baresip, the callee presses the action
//! key, confirms and enters the PIN; the flow restarts a service on a real
//! sshd; the callee hears the result; the ticket's webhook gets the run
//! record. And the operator side of the API: dry run, scopes, validation,
//! one run at a time.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callout::config::{Config, TokenConfig, WebhookConfig};
use callout::media::audio::{read_wav_mono, resample, to_i16};
use common::sshd::Sshd;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOTIFY: &str = "notify-token-for-action-tests";
const OPERATE: &str = "operate-token-for-action-tests";
const ACTIONS: &str = "actions-token-for-action-tests";

fn token(name: &str, secret: &str, scope: &str) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        scopes: vec![scope.into()],
        contracts: Vec::new(),
    }
}

fn plan(uri: &str, sshd: &Sshd) -> String {
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
text = "Alert on {{host}}."

[menu]
prompt = "Press 1 to acknowledge, or 5 to restart the service."
input_timeout = "10s"
inter_digit_timeout = "5s"

[menu.keys]
"1" = "ack"
"5" = {{ action = "restart" }}

[actions.restart]
flow = "fake-restart"
params = {{ host = "{{host}}", service = "{{service}}" }}

[pin]
code = "2468"

{}"#,
        sshd.inventory(&["app", "slow", "sluggish", "broken"])
    )
}

struct Server {
    base: String,
    rt: tokio::runtime::Runtime,
    hooks: Arc<Mutex<Vec<Value>>>,
    tts_cache: std::path::PathBuf,
}

fn start(dir: &Path, plan: &str, sshd: &Sshd, execute_timeout: &str) -> Server {
    let dialplans = dir.join("dialplans");
    std::fs::create_dir_all(dialplans.join("flows")).unwrap();
    std::fs::write(dialplans.join("ops.toml"), plan).unwrap();
    std::fs::write(
        dialplans.join("flows/fake-restart.toml"),
        sshd.flow(execute_timeout),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hooks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let hook_addr = {
        let hooks = hooks.clone();
        rt.block_on(async move {
            use axum::{routing::post, Router};
            let app = Router::new().route(
                "/hook",
                post(move |body: String| {
                    let hooks = hooks.clone();
                    async move {
                        hooks
                            .lock()
                            .unwrap()
                            .push(serde_json::from_str(&body).unwrap());
                        axum::http::StatusCode::OK
                    }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            addr
        })
    };
    let rtp = 36000 + (std::process::id() % 8) * 100;
    let config = Config {
        listen: "127.0.0.1:0".into(),
        sip: "127.0.0.1:0".into(),
        rtp_ports: format!("{rtp}-{}", rtp + 99),
        database_url: format!("sqlite://{}/data/callout.db", dir.display()),
        dialplans,
        prompts: concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").into(),
        tts_cache: dir.join("tts"),
        tokens: vec![
            token("pipeline", NOTIFY, "notify"),
            token("ops", OPERATE, "operate"),
            token("runbook", ACTIONS, "actions"),
        ],
        webhooks: WebhookConfig {
            url: Some(format!("http://{hook_addr}/hook")),
            ..WebhookConfig::default()
        },
        max_body: 16 * 1024,
        voices: Default::default(),
        trunks: Default::default(),
        ..Config::default()
    };
    let base = rt.block_on(async {
        let (svc, listener) = callout::serve::start(config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, callout::api::router(svc)).await });
        format!("http://{addr}")
    });
    Server {
        base,
        rt,
        hooks,
        tts_cache: dir.join("tts"),
    }
}

impl Server {
    fn call(&self, method: &str, path: &str, tok: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let tok = tok.to_string();
        self.rt.block_on(async move {
            let c = reqwest::Client::new();
            let mut r = if method == "POST" {
                c.post(&url)
            } else {
                c.get(&url)
            };
            r = r.bearer_auth(tok);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// A critical alert for web01 whose action works on `service`.
    fn notify(&self, ticket: &str, service: &str) -> String {
        let (st, v) = self.call(
            "POST",
            "/v1/notifications",
            NOTIFY,
            Some(
                json!({"contract": "ops", "ticket": ticket, "severity": "critical",
                "host": "web01", "summary": "app down", "variables": {"service": service}}),
            ),
        );
        assert_eq!(st, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Once baresip has answered: the action key (barging into the
    /// message), confirmation, PIN.
    fn press_action_keys(&self, id: &str, bs: &Baresip) {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, n) = self.call("GET", &format!("/v1/notifications/{id}"), OPERATE, None);
            if n["attempts"][0]["answered_ms"].is_i64() {
                break;
            }
            assert!(Instant::now() < until, "not answered: {n:#}\n{}", bs.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
        for (keys, pause) in [("5", 1200), ("1", 1200), ("2468", 0)] {
            let reply = bs.command("sndcode", keys);
            assert!(reply.contains("\"ok\":true"), "baresip: {reply}");
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    /// An English phrase as the service renders it (from its cache).
    fn phrase(&self, text: &str) -> Vec<i16> {
        let tts = callout::tts::Tts::new(&callout::tts::TtsConfig {
            cache_dir: self.tts_cache.clone(),
            ..Default::default()
        })
        .unwrap();
        tts.render(callout::ivr::dialplan::Language::En, text)
            .unwrap()
            .pcm
            .clone()
    }

    fn hooks_of(&self, event: &str) -> Vec<Value> {
        self.hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["type"] == event)
            .cloned()
            .collect()
    }

    fn wait_hook(&self, event: &str, limit: Duration) -> Value {
        let until = Instant::now() + limit;
        loop {
            if let Some(h) = self.hooks_of(event).pop() {
                return h;
            }
            assert!(
                Instant::now() < until,
                "no {event} webhook: {:#?}",
                self.hooks.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// baresip answering every call, its microphone a faint tone.
fn callee(dir: &Path) -> Baresip {
    let src = dir.join("callee-mic.wav");
    let st = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&src)
        .args(["synth", "60", "sine", "440", "vol", "0.02"])
        .status()
        .unwrap();
    assert!(st.success());
    let phone_dir = dir.join("phone");
    std::fs::create_dir_all(&phone_dir).unwrap();
    Baresip::start(&phone_dir, &src)
}

/// What baresip recorded of its call, at 8 kHz.
fn heard(bs: &Baresip) -> Vec<i16> {
    let until = Instant::now() + Duration::from_secs(10);
    let file = loop {
        if let Some(h) = bs.heard() {
            break h;
        }
        assert!(Instant::now() < until, "baresip recorded nothing");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let baresip finish writing the end of the call.
    std::thread::sleep(Duration::from_millis(500));
    let (h, rate) = read_wav_mono(&file).unwrap();
    to_i16(&resample(&h, rate, 8000))
}

#[test]
fn a_callee_runs_the_restart_from_the_phone_and_hears_the_result() {
    require("espeak-ng");
    require("sox");
    let dir = scratch("action-call");
    let sshd = Sshd::start(&dir.join("host"));
    let bs = callee(&dir);
    let s = start(&dir, &plan(&bs.uri(), &sshd), &sshd, "20s");
    assert!(!sshd.running("sluggish"));

    let id = s.notify("INC-7", "sluggish");
    s.press_action_keys(&id, &bs);

    let fin = s.wait_hook("action.finished", Duration::from_secs(30));
    let rec = &fin["data"]["record"];
    assert_eq!(rec["result"], "succeeded", "{fin:#}");
    assert!(
        sshd.running("sluggish"),
        "the service runs again on the host"
    );
    assert_eq!(
        sshd.calls(),
        ["status sluggish", "restart sluggish", "status sluggish"]
    );
    // The record names who asked, the notification and ticket, each step.
    assert_eq!(fin["ticket"], "INC-7");
    assert_eq!(fin["notification"], id.as_str());
    assert_eq!(rec["requested_by"]["via"], "call");
    assert_eq!(rec["requested_by"]["contact"], "Oncall");
    assert_eq!(rec["requested_by"]["uri"], bs.uri().as_str());
    assert_eq!(rec["notification"], id.as_str());
    assert_eq!(rec["ticket"], "INC-7");
    let names: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["running", "restart", "running-again"]);
    assert_eq!(rec["steps"][1]["op"]["remote"][1], "restart");
    assert_eq!(rec["steps"][1]["exit_code"], 0);
    assert_eq!(s.hooks_of("action.step").len(), 3);
    assert_eq!(s.hooks_of("action.started").len(), 1);
    // The PIN never appears in what was sent.
    assert!(!serde_json::to_string(&*s.hooks.lock().unwrap())
        .unwrap()
        .contains("2468"));

    // The escalation ended with the action, and the run is in the API.
    let until = Instant::now() + Duration::from_secs(15);
    let n = loop {
        let (_, n) = s.call("GET", &format!("/v1/notifications/{id}"), OPERATE, None);
        if n["state"] == "action_taken" {
            break n;
        }
        assert!(Instant::now() < until, "{n:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(n["final"]["result"], "succeeded");
    assert_eq!(n["actions"][0]["state"], "succeeded");
    let run_id = rec["run_id"].as_str().unwrap();
    let (st, run) = s.call("GET", &format!("/v1/actions/runs/{run_id}"), OPERATE, None);
    assert_eq!(st, 200);
    assert_eq!(run["record"]["result"], "succeeded");

    // The callee heard the result phrase: find it in baresip's recording.
    let said = |text: &str| s.phrase(text);
    let result = said("The action succeeded and the check now passes. Goodbye.");
    let fixing = said("Running the fix.");
    let heard = heard(&bs);
    // While the 4 s restart ran, the callee heard that the fix was running;
    // then the result, at the end of the call, after the keys.
    let progress = best_match(&fixing, &heard);
    assert!(progress.0 > 0.9, "progress phrase correlation {progress:?}");
    let best = best_match(&result, &heard);
    assert!(best.0 > 0.9, "result phrase correlation {best:?}");
    assert!(best.1 > 4000, "heard at {} ms", best.1);
    // The matcher tells phrases apart: the failure phrase was not said.
    let failed = said("The action failed. An engineer will be contacted.");
    let not_said = best_match(&failed, &heard);
    assert!(not_said.0 < 0.7, "failure phrase matched {not_said:?}");
    assert!(
        progress.1 + 1000 < best.1,
        "progress at {} ms, result at {} ms",
        progress.1,
        best.1
    );
}

#[test]
fn operators_dry_run_and_run_through_the_api_one_at_a_time() {
    let dir = scratch("action-api");
    let sshd = Sshd::start(&dir.join("host"));
    let s = start(&dir, &plan("sip:nobody@127.0.0.1:9", &sshd), &sshd, "3s");
    let path = "/v1/actions/fake-restart/run";
    let body = |extra: Value| {
        let mut b = json!({"contract": "ops", "params": {"host": "web01", "service": "slow"}});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    // Dry run: operate may look, gets the exact steps, nothing runs.
    let (st, v) = s.call("POST", path, OPERATE, Some(body(json!({"dry_run": true}))));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["plan"]["steps"][1]["remote"][2], "slow");
    assert!(v["text"]
        .as_str()
        .unwrap()
        .ends_with("dry run: nothing was executed\n"));
    // Running needs the actions scope.
    let (st, v) = s.call("POST", path, OPERATE, Some(body(json!({}))));
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["detail"], "this token lacks the actions scope");
    // Validation names the field.
    let (st, v) = s.call(
        "POST",
        path,
        ACTIONS,
        Some(json!({"contract": "ops", "params": {"host": "web01\nid", "service": "app"}})),
    );
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["field"], "params.host");
    let (st, _) = s.call(
        "POST",
        "/v1/actions/no-such-flow/run",
        ACTIONS,
        Some(body(json!({}))),
    );
    assert_eq!(st, 404);
    // One run per contract, host and flow: the second is refused while
    // the first hangs in its 3 s step.
    let (st, v) = s.call(
        "POST",
        path,
        ACTIONS,
        Some(body(json!({"ticket": "INC-9"}))),
    );
    assert_eq!(st, 202, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let (st, v) = s.call("POST", path, ACTIONS, Some(body(json!({}))));
    assert_eq!(st, 409, "{v}");
    assert_eq!(
        v["detail"],
        "flow \"fake-restart\" is already running for contract \"ops\" on host \"web01\"; wait for it to finish"
    );
    // An operator's `callout action run` on the service's database sees
    // the same slot, and who holds it.
    let (code, err) = cli_run(&dir, &["--param", "service=app"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("(run {run_id}, started by API token runbook)")),
        "{err}"
    );
    // The first ends (killed at its timeout) and is recorded as failed.
    let fin = s.wait_hook("action.finished", Duration::from_secs(20));
    assert_eq!(fin["data"]["record"]["outcome"], "timeout");
    assert_eq!(fin["ticket"], "INC-9");
    assert_eq!(fin["contract"], "ops");
    assert_eq!(fin["data"]["record"]["requested_by"]["via"], "api");
    assert_eq!(fin["data"]["record"]["requested_by"]["token"], "runbook");
    let (_, run) = s.call("GET", &format!("/v1/actions/runs/{run_id}"), OPERATE, None);
    assert_eq!(run["state"], "failed");
    // Free again: the next run (with wait) gets its record in the answer.
    let (st, v) = s.call(
        "POST",
        path,
        ACTIONS,
        Some(
            json!({"contract": "ops", "params": {"host": "web01", "service": "app"}, "wait": true}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"], "succeeded");
    assert!(sshd.running("app"));

    // A run from the command line is recorded in the service's database
    // and reaches the ticket's webhook through the service.
    let (code, err) = cli_run(&dir, &["--param", "service=app", "--ticket", "INC-10"]);
    assert_eq!(code, 0, "{err}");
    let until = Instant::now() + Duration::from_secs(10);
    let hook = loop {
        let cli = s
            .hooks_of("action.finished")
            .into_iter()
            .find(|h| h["data"]["record"]["requested_by"]["via"] == "cli");
        if let Some(h) = cli {
            break h;
        }
        assert!(Instant::now() < until, "{:#?}", s.hooks.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(hook["ticket"], "INC-10");
    assert_eq!(hook["data"]["result"], "not_needed");
    let cli_run_id = hook["data"]["run_id"].as_str().unwrap();
    let (st, run) = s.call(
        "GET",
        &format!("/v1/actions/runs/{cli_run_id}"),
        OPERATE,
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(run["state"], "not_needed");
}

/// `callout action run fake-restart --contract ops --param host=web01` on
/// the service's dialplans and database: (exit code, stderr).
fn cli_run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["action", "run", "fake-restart", "--contract", "ops"])
        .args(["--param", "host=web01"])
        .arg("--dialplans")
        .arg(dir.join("dialplans"))
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .arg("--database")
        .arg(format!("sqlite://{}/data/callout.db", dir.display()))
        .args(args)
        .env_remove("CALLOUT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fix that fails from the phone: the callee hears that it failed, the
/// ticket gets the failed run, and the escalation goes on to the next
/// person (`on_action_failure = "continue"`, the default).
#[test]
fn a_failed_fix_is_said_and_the_next_person_is_called() {
    require("espeak-ng");
    require("sox");
    let dir = scratch("action-call-fail");
    let sshd = Sshd::start(&dir.join("host"));
    let bs = callee(&dir);
    let sipp_dir = dir.join("sipp");
    std::fs::create_dir_all(&sipp_dir).unwrap();
    let mut backup = Sipp::uas("busy.xml", &sipp_dir, &[]);
    let plan = plan(&bs.uri(), &sshd).replace(
        "[message]",
        &format!(
            "[[contacts]]\nname = \"Backup\"\nuri = \"{}\"\n\n[message]",
            backup.uri()
        ),
    );
    let s = start(&dir, &plan, &sshd, "20s");

    let id = s.notify("INC-8", "broken");
    s.press_action_keys(&id, &bs);

    let fin = s.wait_hook("action.finished", Duration::from_secs(30));
    let rec = &fin["data"]["record"];
    assert_eq!(rec["result"], "failed", "{fin:#}");
    assert_eq!(rec["phase"], "verify");
    assert_eq!(rec["step"], "running-again");
    assert_eq!(fin["ticket"], "INC-8");
    assert!(!sshd.running("broken"));

    // The escalation went on: the backup was rung (and was busy).
    let status = backup.wait(Duration::from_secs(30));
    assert!(status.success(), "{}", backup.messages());
    let until = Instant::now() + Duration::from_secs(20);
    let n = loop {
        let (_, n) = s.call("GET", &format!("/v1/notifications/{id}"), OPERATE, None);
        if n["state"] == "exhausted" {
            break n;
        }
        assert!(Instant::now() < until, "{n:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let attempts = attempt_outcomes(&n);
    assert_eq!(
        attempts,
        [
            ("Oncall".to_string(), "action".to_string()),
            ("Backup".into(), "busy".into())
        ],
        "{n:#}"
    );
    assert_eq!(n["attempts"][0]["outcome"]["result"], "failed", "{n:#}");
    assert_eq!(n["actions"][0]["state"], "failed");

    // The first callee heard that it failed, not that it worked.
    let said = |text: &str| s.phrase(text);
    let heard = heard(&bs);
    let failed = best_match(
        &said("The action failed. An engineer will be contacted."),
        &heard,
    );
    assert!(failed.0 > 0.9, "failure phrase {failed:?}");
    let fixed = best_match(
        &said("The action succeeded and the check now passes. Goodbye."),
        &heard,
    );
    assert!(fixed.0 < 0.7, "success phrase matched {fixed:?}");
}

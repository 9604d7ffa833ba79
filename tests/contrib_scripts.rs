//! The shipped integrations under `contrib/` against a real `callout serve`:
//! the Zabbix webhook media type (its script run in Duktape, the engine
//! Zabbix embeds, and in Node for the HTTP round trip) and the
//! Nagios/Icinga notification command (Python 3).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::scratch;
use common::serve::{copy_prompts, Serve};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// An intake token bound to contract `acme`.
const INTAKE: &str = "acme-intake-token";

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// Duktape's `duk` exits on `--version` with an error; any run of it means
/// it is there.
fn have_duk() -> bool {
    Command::new("duk").arg("-e").arg("1").output().is_ok()
}

fn incidents(s: &Serve, host: &str) -> Vec<Value> {
    let (st, v) = s
        .http(
            "GET",
            &format!("/v1/incidents?contract=acme&host={host}"),
            None,
        )
        .unwrap();
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(dir: &Path) -> Serve {
    copy_prompts(dir);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    // A wait of one hour: the incidents stay pending, nobody is called.
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        "contract = \"acme\"\nname = \"ACME\"\nlanguage = \"en\"\n\
         [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"sip:bob@127.0.0.1:9\"\n[message]\ntext = \"Alert on {host}.\"\n\
         [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n[pipeline]\nwait = \"1h\"\n",
    )
    .unwrap();
    Serve::start(
        dir,
        &format!(
            "[[tokens]]\nname = \"acme-monitoring\"\nsha256 = \"{}\"\nscopes = [\"intake\"]\ncontracts = [\"acme\"]\n",
            hex(INTAKE)
        ),
        "44600-44699",
    )
}

/// Zabbix's parameters for one event, as its macros would expand.
fn zabbix_params(url: &str, token: &str, event: &str, value: &str, update: &str) -> Value {
    json!({
        "url": url, "token": token, "contract": "acme", "http_proxy": "",
        "zabbix_url": "https://zabbix.example/", "event_id": event, "event_value": value,
        "event_source": "0", "event_update_status": if update.is_empty() { "0" } else { "1" },
        "event_update_action": update, "event_nseverity": "5",
        "event_name": "Nginx is down on web-01",
        "event_tags": "[{\"tag\":\"service\",\"value\":\"nginx\"},{\"tag\":\"host\",\"value\":\"spoofed\"}]",
        "trigger_id": "24001", "host": "web-01", "host_name": "Web 01", "host_ip": "{HOST.IP}"
    })
}

/// One file for `duk` or `node`: the shim, then the media type's script
/// as the function body Zabbix makes of it, called with `params`.
fn program(shim: &str, params: &Value) -> String {
    let script = std::fs::read_to_string(contrib("zabbix/callout.js")).unwrap();
    format!(
        "{shim}\nvar run = function (value) {{\n{script}\n}};\n\
         var out;\ntry {{ out = run({v}); }} catch (e) {{ print('ERROR: ' + e); out = null; }}\n\
         if (out !== null) {{ print('RESULT: ' + out); }}\nprint('SENT: ' + JSON.stringify(sent));\n",
        v = serde_json::to_string(&params.to_string()).unwrap()
    )
}

/// Duktape has no network: this shim records each request and answers 202.
const DUK_SHIM: &str = r#"
var sent = [];
var Zabbix = { log: function (level, msg) {} };
function HttpRequest() { this.headers = []; }
HttpRequest.prototype.addHeader = function (h) { this.headers.push(h); };
HttpRequest.prototype.setProxy = function (p) { this.proxy = p; };
HttpRequest.prototype.post = function (url, body) {
    sent.push({ url: url, headers: this.headers, body: JSON.parse(body) });
    return '{"accepted":[]}';
};
HttpRequest.prototype.getStatus = function () { return 202; };
"#;

/// Node: the same interface over a real HTTP request (curl, synchronous
/// like Zabbix's own HttpRequest).
const NODE_SHIM: &str = r#"
var cp = require('child_process');
var print = function (s) { console.log(s); };
var sent = [];
var Zabbix = { log: function (level, msg) {} };
function HttpRequest() { this.headers = []; this.status = 0; }
HttpRequest.prototype.addHeader = function (h) { this.headers.push(h); };
HttpRequest.prototype.setProxy = function (p) { this.proxy = p; };
HttpRequest.prototype.post = function (url, body) {
    sent.push({ url: url, body: JSON.parse(body) });
    var args = ['-sS', '-o', '-', '-w', '\n%{http_code}', '-X', 'POST', '--max-time', '10',
                '--data-binary', '@-'];
    this.headers.forEach(function (h) { args.push('-H', h); });
    args.push(url);
    try {
        var out = cp.execFileSync('curl', args, { input: body }).toString();
        var i = out.lastIndexOf('\n');
        this.status = parseInt(out.slice(i + 1), 10);
        return out.slice(0, i);
    } catch (e) {
        this.status = 0;
        return String(e.stderr || e);
    }
};
HttpRequest.prototype.getStatus = function () { return this.status; };
"#;

fn run_js(tool: &str, dir: &Path, name: &str, shim: &str, params: &Value) -> (String, Value) {
    let file = dir.join(format!("{name}.js"));
    std::fs::write(&file, program(shim, params)).unwrap();
    let out = Command::new(tool).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let sent = text
        .lines()
        .find_map(|l| l.strip_prefix("SENT: "))
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or_else(|| panic!("{tool} printed no SENT line: {text} {:?}", out.stderr));
    let verdict = text
        .lines()
        .find(|l| l.starts_with("RESULT: ") || l.starts_with("ERROR: "))
        .unwrap_or("")
        .to_string();
    (verdict, sent)
}

#[test]
fn zabbix_media_type_runs_in_duktape_and_the_export_embeds_the_same_script() {
    // The XML export that operators import holds exactly contrib/zabbix/callout.js.
    let xml = std::fs::read_to_string(contrib("zabbix/media_callout.xml")).unwrap();
    let start = xml.find("<script>").unwrap() + "<script>".len();
    let end = xml.find("</script>").unwrap();
    let embedded = xml[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    assert_eq!(
        embedded,
        std::fs::read_to_string(contrib("zabbix/callout.js")).unwrap(),
        "media_callout.xml's <script> differs from callout.js: regenerate the export"
    );
    for p in [
        "event_id",
        "event_value",
        "event_update_status",
        "host",
        "token",
    ] {
        assert!(
            xml.contains(&format!("<name>{p}</name>")),
            "parameter {p} missing"
        );
    }

    if !have_duk() {
        eprintln!(
            "SKIPPED: duk (Debian package duktape) is not installed; .ci/install installs it"
        );
        return;
    }
    let tmp = scratch("contrib-duk");
    let url = "http://127.0.0.1:9/v1/intake/events";

    // A problem: one trigger with the event id as dedup key, severity
    // from NSEVERITY, tags as details (a tag cannot replace the host),
    // an unresolved macro ({HOST.IP}) left out.
    let (v, sent) = run_js(
        "duk",
        &tmp,
        "problem",
        DUK_SHIM,
        &zabbix_params(url, "tok", "1001", "1", ""),
    );
    assert_eq!(v, "RESULT: OK", "{sent}");
    let body = &sent[0]["body"];
    assert_eq!(sent[0]["url"], url);
    assert!(
        sent[0]["headers"]
            .as_array()
            .unwrap()
            .contains(&json!("Authorization: Bearer tok")),
        "{sent}"
    );
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], "zabbix-1001");
    assert_eq!(body["routing_key"], "acme");
    assert_eq!(body["payload"]["severity"], "critical");
    assert_eq!(body["payload"]["source"], "web-01");
    assert_eq!(body["payload"]["custom_details"]["host"], "web-01");
    assert_eq!(body["payload"]["custom_details"]["service"], "nginx");
    assert!(body["payload"]["custom_details"]
        .get("zabbix_host_ip")
        .is_none());
    assert_eq!(
        body["client_url"],
        "https://zabbix.example/tr_events.php?triggerid=24001&eventid=1001"
    );

    // Recovery and acknowledgement; a comment-only update sends nothing.
    let (v, sent) = run_js(
        "duk",
        &tmp,
        "resolve",
        DUK_SHIM,
        &zabbix_params(url, "tok", "1001", "0", ""),
    );
    assert_eq!(v, "RESULT: OK");
    assert_eq!(sent[0]["body"]["event_action"], "resolve");
    assert!(sent[0]["body"].get("payload").is_none(), "{sent}");
    let (v, sent) = run_js(
        "duk",
        &tmp,
        "ack",
        DUK_SHIM,
        &zabbix_params(url, "tok", "1001", "1", "acknowledged, commented"),
    );
    assert_eq!(v, "RESULT: OK");
    assert_eq!(sent[0]["body"]["event_action"], "acknowledge");
    let (v, sent) = run_js(
        "duk",
        &tmp,
        "comment",
        DUK_SHIM,
        &zabbix_params(url, "tok", "1001", "1", "commented"),
    );
    assert_eq!((v.as_str(), sent), ("RESULT: OK", json!([])));

    // Bad parameters: a clear error, nothing sent.
    let (v, sent) = run_js(
        "duk",
        &tmp,
        "bad",
        DUK_SHIM,
        &zabbix_params(url, "tok", "{EVENT.ID}", "1", ""),
    );
    assert!(v.contains("parameter \"event_id\" is empty"), "{v}");
    assert_eq!(sent, json!([]));
}

#[test]
fn zabbix_and_nagios_events_open_and_close_incidents_in_a_real_serve() {
    let tmp = scratch("contrib-serve");
    let s = start(&tmp);
    let url = format!("{}/v1/intake/events", s.base);

    // --- Zabbix, in Node (real HTTP) ---
    if have("node") && have("curl") {
        let (v, _) = run_js(
            "node",
            &tmp,
            "z-problem",
            NODE_SHIM,
            &zabbix_params(&url, INTAKE, "7001", "1", ""),
        );
        assert_eq!(v, "RESULT: OK");
        wait_for("the Zabbix problem is an incident", || {
            incidents(&s, "web-01").len() == 1
        });
        let inc = &incidents(&s, "web-01")[0];
        assert_eq!(inc["state"], "pending", "{inc}");
        assert_eq!(inc["severity"], "critical", "{inc}");
        let (st, full) = s
            .http(
                "GET",
                &format!("/v1/incidents/{}", inc["id"].as_str().unwrap()),
                None,
            )
            .unwrap();
        assert_eq!(st, 200);
        assert_eq!(full["alerts"][0]["labels"]["service"], "nginx", "{full}");

        let (v, _) = run_js(
            "node",
            &tmp,
            "z-ack",
            NODE_SHIM,
            &zabbix_params(&url, INTAKE, "7001", "1", "acknowledged"),
        );
        assert_eq!(v, "RESULT: OK");
        let (v, _) = run_js(
            "node",
            &tmp,
            "z-resolve",
            NODE_SHIM,
            &zabbix_params(&url, INTAKE, "7001", "0", ""),
        );
        assert_eq!(v, "RESULT: OK");
        wait_for("the Zabbix recovery closes the incident", || {
            incidents(&s, "web-01")[0]["state"] == "closed"
        });

        // A wrong token: Zabbix shows the error on the event's actions.
        let (v, _) = run_js(
            "node",
            &tmp,
            "z-bad-token",
            NODE_SHIM,
            &zabbix_params(&url, "not-a-token", "7002", "1", ""),
        );
        assert!(v.starts_with("ERROR: callout: callout answered 401"), "{v}");
    } else {
        eprintln!("SKIPPED: node or curl missing; the Zabbix round trip did not run");
    }

    // --- Nagios / Icinga command ---
    let token_file = tmp.join("nagios.token");
    std::fs::write(&token_file, format!("{INTAKE}\n")).unwrap();
    let notify = |args: &[&str], token_file: &Path| -> Output {
        Command::new("python3")
            .arg(contrib("nagios/callout-notify"))
            .args(["--url", &url, "--contract", "acme", "--retries", "1"])
            .arg("--token-file")
            .arg(token_file)
            .args(args)
            .output()
            .unwrap()
    };
    let service = [
        "--host",
        "db-01",
        "--service",
        "HTTP",
        "--state",
        "CRITICAL",
        "--output",
        "connect refused",
    ];
    let out = notify(
        &[&["--type", "PROBLEM"], &service[..]].concat(),
        &token_file,
    );
    assert!(out.status.success(), "{:?}", out);
    wait_for("the Nagios problem is an incident", || {
        incidents(&s, "db-01").len() == 1
    });
    let inc = &incidents(&s, "db-01")[0];
    assert_eq!(inc["state"], "pending", "{inc}");
    assert_eq!(inc["severity"], "critical", "{inc}");
    assert!(
        inc["summary"].as_str().unwrap().contains("connect refused"),
        "{inc}"
    );

    // Flapping is not an alert: skipped, exit 0, nothing opened.
    let out = notify(
        &[&["--type", "FLAPPINGSTART"], &service[..]].concat(),
        &token_file,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to send"));

    let out = notify(
        &[
            &["--type", "RECOVERY"],
            &["--host", "db-01", "--service", "HTTP", "--state", "OK"][..],
        ]
        .concat(),
        &token_file,
    );
    assert!(out.status.success(), "{:?}", out);
    wait_for("the Nagios recovery closes the incident", || {
        incidents(&s, "db-01")[0]["state"] == "closed"
    });
    assert_eq!(incidents(&s, "db-01").len(), 1);

    // A wrong token: exit 1 and the reason on stderr for Nagios' log.
    let bad = tmp.join("bad.token");
    std::fs::write(&bad, "wrong").unwrap();
    let out = notify(&[&["--type", "PROBLEM"], &service[..]].concat(), &bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("callout answered 401"), "{err}");

    // No token at all: a usage error, not a request.
    let out = Command::new("python3")
        .arg(contrib("nagios/callout-notify"))
        .args(["--url", &url, "--type", "PROBLEM", "--host", "x"])
        .env_remove("CALLOUT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // callout unreachable: exit 1, named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1/intake/events", closed.local_addr().unwrap());
    drop(closed);
    let out = Command::new("python3")
        .arg(contrib("nagios/callout-notify"))
        .args([
            "--url",
            &dead,
            "--retries",
            "1",
            "--type",
            "PROBLEM",
            "--host",
            "x",
        ])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no answer from"),
        "{:?}",
        out
    );
}

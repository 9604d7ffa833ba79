//! Alert mail end to end through a real `callout serve` with its SMTP
//! intake: real `swaks` and Python `smtplib` send Japanese mails
//! (ISO-2022-JP, Shift_JIS) that become incidents for the right hosts; a
//! recovery mail inside the wait window closes its incident without a
//! call; unknown recipients are refused at RCPT and nothing is stored; a
//! mail no rule reads is kept and listed as unparsed; an oversize mail
//! is 552.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::serve::{copy_prompts, Serve};
use common::{free_port_pair, scratch};
use serde_json::Value;

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed: run .ci/install");
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/mail")
        .join(name)
}

fn swaks(port: u16, to: &str, data: &Path) -> Output {
    require("swaks");
    Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "nms@example.co.jp", "--to", to])
        .args(["--helo", "nms.example.co.jp", "--timeout", "10"])
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

fn smtplib(port: u16, to: &str, data: &Path) -> String {
    require("python3");
    let script = r#"
import smtplib, sys
port, to, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail("nms@example.co.jp", [to], data)
    print("ok")
except smtplib.SMTPRecipientsRefused as e:
    code, msg = list(e.recipients.values())[0]
    print("SMTPRecipientsRefused", code, msg.decode())
except smtplib.SMTPResponseException as e:
    print(type(e).__name__, e.smtp_code, e.smtp_error.decode())
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(to)
        .arg(data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn incidents(s: &Serve) -> Vec<Value> {
    let (_, v) = s.http("GET", "/v1/incidents?contract=acme", None).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn mails(s: &Serve, q: &str) -> Vec<Value> {
    let (st, v) = s.http("GET", &format!("/v1/mails?{q}"), None).unwrap();
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn wait_incident(s: &Serve, host: &str, state: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(i) = incidents(s)
            .into_iter()
            .find(|i| i["host"] == host && i["state"] == state)
        {
            return i;
        }
        assert!(
            Instant::now() < until,
            "no {state} incident for {host}: {:#?}",
            incidents(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PLAN: &str = r#"contract = "acme"
name = "ACME"
language = "ja"
[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"
[[contacts]]
name = "Bob"
uri = "sip:bob@127.0.0.1:9"
[message]
text = "{host} で障害です。"
[menu]
prompt = "1 を押してください。"
[menu.keys]
"1" = "ack"

[pipeline]
wait = "40s"

[pipeline.mail]
to = ["alerts@acme.example"]

[[pipeline.mail.rules]]
subject = '^\[(?P<state>PROBLEM|RECOVERY)\]\s+(?P<host>\S+)\s+(?P<service>.+?)\s*$'
recovery = "RECOVERY"
severity = "major"

[[pipeline.mail.rules]]
subject = '^【(?P<state>障害|復旧)】'
body = '(?m)^ホスト:\s*(?P<host>\S+)'
recovery = "復旧"
severity = "critical"
"#;

#[test]
fn japanese_alert_mails_through_serve_become_incidents_and_bad_mail_is_refused_or_kept() {
    require("swaks");
    require("python3");
    let tmp = scratch("pipeline-mail");
    let dir = tmp.as_path();
    copy_prompts(dir);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(dir.join("dialplans/acme.toml"), PLAN).unwrap();
    let smtp = free_port_pair();
    let s = Serve::start(
        dir,
        &format!("[intake.smtp]\nlisten = \"127.0.0.1:{smtp}\"\nmax_size = 4096\n"),
        "44200-44299",
    );
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", smtp)).is_err() {
        assert!(Instant::now() < until, "the SMTP intake did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }

    // ISO-2022-JP over swaks, Shift_JIS over smtplib.
    let o = swaks(
        smtp,
        "alerts@acme.example",
        &sample("iso2022jp-problem.eml"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        smtplib(smtp, "Alerts@Acme.Example", &sample("sjis-base64.eml")),
        "ok"
    );
    let web = wait_incident(&s, "web-01", "pending");
    let db = wait_incident(&s, "db-02", "pending");
    assert_eq!(db["severity"], "critical", "{db}");
    assert!(
        web["ticket"].as_str().unwrap().starts_with("ACME-"),
        "{web}"
    );
    let (_, full) = s
        .http(
            "GET",
            &format!("/v1/incidents/{}", db["id"].as_str().unwrap()),
            None,
        )
        .unwrap();
    let a = &full["alerts"][0];
    assert_eq!(a["source"], "mail", "{a}");
    assert!(
        a["summary"].as_str().unwrap().contains("レプリケーション"),
        "{a}"
    );

    // The recovery mail inside the window: a flap, closed, nobody called.
    assert_eq!(
        smtplib(
            smtp,
            "alerts@acme.example",
            &sample("iso2022jp-recovery.eml")
        ),
        "ok"
    );
    let closed = wait_incident(&s, "web-01", "closed");
    assert_eq!(closed["id"], web["id"]);
    let (_, full) = s
        .http(
            "GET",
            &format!("/v1/incidents/{}", web["id"].as_str().unwrap()),
            None,
        )
        .unwrap();
    let tl = full["timeline"].to_string();
    assert!(tl.contains("flap"), "{tl}");
    assert_eq!(full["alerts"].as_array().unwrap().len(), 2);
    let (_, ns) = s
        .http("GET", "/v1/notifications?contract=acme", None)
        .unwrap();
    assert!(
        ns["items"].as_array().unwrap().is_empty(),
        "nobody called: {ns}"
    );
    assert_eq!(mails(&s, "contract=acme").len(), 3);

    // Unknown recipients: 550 at RCPT, nothing stored.
    let o = swaks(smtp, "root@acme.example", &sample("iso2022jp-problem.eml"));
    assert!(text(&o).contains("550"), "{}", text(&o));
    let r = smtplib(smtp, "alerts@other.example", &sample("sjis-qp.eml"));
    assert!(r.starts_with("SMTPRecipientsRefused 550"), "{r}");
    assert_eq!(mails(&s, "").len(), 3);
    assert_eq!(incidents(&s).len(), 2);

    // A mail no rule reads: kept, listed with its reason.
    let odd = dir.join("odd.eml");
    std::fs::write(
        &odd,
        "From: nms@example.co.jp\r\nTo: alerts@acme.example\r\nSubject: weekly report\r\n\r\nall quiet\r\n",
    )
    .unwrap();
    let o = swaks(smtp, "alerts@acme.example", &odd);
    assert!(o.status.success(), "{}", text(&o));
    let un = mails(&s, "unparsed=true");
    assert_eq!(un.len(), 1, "{un:#?}");
    assert_eq!(un[0]["subject"], "weekly report");
    assert!(
        !un[0]["unparsed"].as_str().unwrap_or("").is_empty(),
        "{un:#?}"
    );
    assert!(un[0]["alert"].is_null());
    assert_eq!(incidents(&s).len(), 2);

    // Oversize: 552 from both clients, nothing stored.
    let big = dir.join("big.eml");
    std::fs::write(
        &big,
        format!(
            "From: nms@example.co.jp\r\nTo: alerts@acme.example\r\nSubject: [PROBLEM] big-01 HTTP\r\n\r\n{}\r\n",
            "x".repeat(76).repeat(100).chars().collect::<Vec<_>>().chunks(76)
                .map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("\r\n")
        ),
    )
    .unwrap();
    let o = swaks(smtp, "alerts@acme.example", &big);
    assert!(text(&o).contains("552"), "{}", text(&o));
    let r = smtplib(smtp, "alerts@acme.example", &big);
    assert!(r.contains("552"), "{r}");
    assert_eq!(mails(&s, "").len(), 4);
    assert!(incidents(&s).iter().all(|i| i["host"] != "big-01"));
}

//! Customer notice mails from a real `callout serve` to a real SMTP server
//! on loopback (Python's `aiosmtpd`, Debian's `python3-aiosmtpd`), read
//! back with Python's own mail parser:
//!
//! - the relay is down when the incident opens: the occurrence notice is
//!   retried and delivered once the relay is up;
//! - recipients, the ticket number in the subject, Japanese text decoded
//!   back intact (UTF-8 and ISO-2022-JP), a hostile summary with CR/LF
//!   never adding a header;
//! - occurrence → exhausted → recovery threaded by Message-ID,
//!   In-Reply-To and References;
//! - a 4xx is retried, a 5xx is given up with the relay's reason; every
//!   mail sent or given up is a line on the incident's timeline;
//! - an action run on the incident (the first-level one, then an
//!   operator's through the API) mails its result to the contract's
//!   `action` recipients, threaded under the occurrence notice.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{copy_prompts, Serve};
use common::sshd::Sshd;
use common::{free_port_pair, scratch, KillOnDrop};
use serde_json::{json, Value};

/// The SMTP server: `550` for `reject@…`, `451` the first time it sees
/// `flaky@…`, otherwise each message parsed by Python's `email` package
/// and written as `NNN.json`.
const SERVER: &str = r#"
import asyncio, email, email.policy, json, os, sys, signal
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
seen = {}

def log(rec):
    n = len([f for f in os.listdir(out) if f.endswith('.json')])
    tmp = os.path.join(out, 'tmp')
    with open(tmp, 'w') as f:
        json.dump(rec, f, ensure_ascii=False)
    os.rename(tmp, os.path.join(out, '%03d.json' % n))

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('reject@'):
            return '550 5.1.1 <%s>: mailbox unavailable' % address
        if address.startswith('flaky@'):
            n = seen.get(address, 0)
            seen[address] = n + 1
            if n == 0:
                log({'tempfail': address})
                return '451 4.3.0 try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=('plain',))
        log({
            'mail_from': envelope.mail_from,
            'rcpt_tos': envelope.rcpt_tos,
            'subject': str(msg['subject']),
            'raw_subject': str(email.message_from_bytes(raw).get('subject')),
            'message_id': msg['message-id'],
            'in_reply_to': msg['in-reply-to'],
            'references': msg['references'],
            'content_type': body.get_content_type(),
            'charset': body.get_content_charset(),
            'text': body.get_content(),
            'header_names': [k.lower() for k in msg.keys()],
        })
        return '250 2.0.0 accepted'

c = Controller(Handler(), hostname='127.0.0.1', port=port)
c.start()
print('ready', flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
c.stop()
"#;

fn python() -> &'static str {
    // Debian's interpreter, where python3-aiosmtpd lives (a pyenv shim on
    // PATH would not see it).
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn start_smtp(dir: &Path, port: u16) -> KillOnDrop {
    let script = dir.join("smtpd.py");
    std::fs::write(&script, SERVER).unwrap();
    let out = dir.join("mails");
    std::fs::create_dir_all(&out).unwrap();
    let child = Command::new(python())
        .arg(&script)
        .arg(port.to_string())
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "aiosmtpd did not start: is python3-aiosmtpd installed?"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    KillOnDrop(child)
}

fn mails(dir: &Path) -> Vec<Value> {
    let out = dir.join("mails");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
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

/// A SIP callee that answers every INVITE `486 Busy Here`: nobody takes
/// the call, so the escalation ends at once.
fn busy_callee() -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uri = format!("sip:bob@{}", sock.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            if !req.starts_with("INVITE ") {
                continue;
            }
            let mut resp = String::from("SIP/2.0 486 Busy Here\r\n");
            for line in req.split("\r\n") {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("via:")
                    || lower.starts_with("from:")
                    || lower.starts_with("call-id:")
                    || lower.starts_with("cseq:")
                {
                    resp.push_str(line);
                    resp.push_str("\r\n");
                } else if lower.starts_with("to:") {
                    resp.push_str(line);
                    resp.push_str(";tag=busy1\r\n");
                }
            }
            resp.push_str("Content-Length: 0\r\n\r\n");
            let _ = sock.send_to(resp.as_bytes(), from);
        }
    });
    uri
}

fn timeline(s: &Serve, id: &str) -> Vec<Value> {
    let (st, v) = s.http("GET", &format!("/v1/incidents/{id}"), None).unwrap();
    assert_eq!(st, 200, "{v}");
    v["timeline"].as_array().cloned().unwrap_or_default()
}

fn incident(s: &Serve, contract: &str) -> Option<Value> {
    let (_, v) = s
        .http("GET", &format!("/v1/incidents?contract={contract}"), None)
        .unwrap();
    v["items"].as_array().and_then(|a| a.first().cloned())
}

fn mail_lines(s: &Serve, id: &str) -> Vec<String> {
    timeline(s, id)
        .iter()
        .filter(|l| l["kind"] == "mail")
        .map(|l| l["text"].as_str().unwrap_or("").to_string())
        .collect()
}

fn dialplan(contract: &str, name: &str, uri: &str, notices: &str) -> String {
    format!(
        "contract = \"{contract}\"\nname = \"{name}\"\nlanguage = \"ja\"\n\
         [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n[message]\ntext = \"{{host}}で障害です。\"\n\
         [menu]\nprompt = \"1を押してください。\"\n[menu.keys]\n\"1\" = \"ack\"\n\
         [pipeline]\nwait = \"0s\"\n{notices}"
    )
}

#[test]
fn notices_are_threaded_retried_and_given_up_against_a_real_relay() {
    let tmp = scratch("notice-mail");
    let dir = tmp.as_path();
    copy_prompts(dir);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/fallback-ja.wav"),
        dir.join("prompts/fallback-ja.wav"),
    )
    .unwrap();
    let callee = busy_callee();
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        dialplan(
            "acme",
            "ACME株式会社",
            &callee,
            "[pipeline.notices.occurrence]\nto = [\"ops@acme.example\", \"Boss <boss@acme.example>\"]\n\
             [pipeline.notices.exhausted]\nto = [\"ops@acme.example\"]\n\
             [pipeline.notices.recovery]\nto = [\"ops@acme.example\"]\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("dialplans/globex.toml"),
        dialplan(
            "globex",
            "グロベックス",
            &callee,
            "[pipeline.notices]\ncharset = \"iso-2022-jp\"\n\
             [pipeline.notices.occurrence]\nto = [\"ops@globex.example\", \"flaky@globex.example\"]\n\
             [pipeline.notices.exhausted]\nto = [\"reject@globex.example\"]\n",
        ),
    )
    .unwrap();
    let smtp_port = free_port_pair();
    // The relay is down when the first incident opens.
    let s = Serve::start(
        dir,
        &format!(
            "[pipeline.mail_out]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
             from = \"callout <callout@noc.example>\"\ntimeout = \"5s\"\nretry_min = \"1s\"\nretry_max = \"2s\"\n"
        ),
        "44200-44299",
    );
    let summary = "ディスク使用率が95%です\r\nBcc: evil@attacker.example\r\n\r\n本文";
    let (st, v) = s
        .http(
            "POST",
            "/v1/intake/events",
            Some(
                json!({"event_action": "trigger", "dedup_key": "disk-db-01", "routing_key": "acme",
                    "payload": {"summary": summary, "source": "db-01", "severity": "critical"}}),
            ),
        )
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let inc = wait_for("the acme incident", Duration::from_secs(15), || {
        incident(&s, "acme")
    });
    let id = inc["id"].as_str().unwrap().to_string();
    // The escalation ends (the callee is busy) while the relay is down:
    // both notices wait, and the log says the relay was retried.
    wait_for("the relay retried", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
        (log.matches("did not take the").count() >= 2).then_some(())
    });
    assert!(mail_lines(&s, &id).is_empty(), "{:?}", mail_lines(&s, &id));

    let _smtp = start_smtp(dir, smtp_port);
    let got = wait_for("two acme mails", Duration::from_secs(30), || {
        let m: Vec<Value> = mails(dir)
            .into_iter()
            .filter(|m| m["rcpt_tos"].to_string().contains("acme.example"))
            .collect();
        (m.len() >= 2).then_some(m)
    });
    let ticket = wait_for("the ticket number", Duration::from_secs(5), || {
        incident(&s, "acme").and_then(|i| i["ticket"].as_str().map(String::from))
    });
    let occ = &got[0];
    assert_eq!(
        occ["rcpt_tos"],
        json!(["ops@acme.example", "boss@acme.example"]),
        "{occ:#}"
    );
    assert_eq!(occ["mail_from"], "callout@noc.example");
    let subject = occ["subject"].as_str().unwrap();
    assert!(subject.contains(&format!("[{ticket}]")), "{subject}");
    assert!(subject.contains("障害発生"), "{subject}");
    assert!(subject.contains("ディスク使用率が95%です"), "{subject}");
    // The hostile summary is flattened into the subject: no Bcc header,
    // no recipient added, the body is the body.
    let names = occ["header_names"].as_array().unwrap();
    assert!(!names.iter().any(|h| h == "bcc"), "{occ:#}");
    assert_eq!(occ["charset"], "utf-8", "{occ:#}");
    let text = occ["text"].as_str().unwrap();
    assert!(text.contains("ACME株式会社 ご担当者様"), "{text}");
    assert!(text.contains("ホスト: db-01"), "{text}");
    assert!(text.contains(&format!("チケット番号: {ticket}")), "{text}");
    let occ_id = occ["message_id"].as_str().unwrap().to_string();
    assert!(occ_id.contains(&id), "{occ_id}");
    assert!(occ["in_reply_to"].is_null(), "{occ:#}");

    let ex = &got[1];
    assert_eq!(ex["rcpt_tos"], json!(["ops@acme.example"]));
    assert!(
        ex["subject"]
            .as_str()
            .unwrap()
            .contains("担当者が未対応です"),
        "{ex:#}"
    );
    let ex_id = ex["message_id"].as_str().unwrap().to_string();
    assert_eq!(ex["in_reply_to"].as_str(), Some(occ_id.as_str()), "{ex:#}");
    assert_eq!(ex["references"].as_str(), Some(occ_id.as_str()), "{ex:#}");

    // Recovery: threaded under both.
    let (st, v) = s
        .http(
            "POST",
            "/v1/intake/events",
            Some(
                json!({"event_action": "resolve", "dedup_key": "disk-db-01", "routing_key": "acme",
                    "payload": {"summary": "ok", "source": "db-01", "severity": "critical"}}),
            ),
        )
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let rec = wait_for("the recovery mail", Duration::from_secs(20), || {
        mails(dir)
            .into_iter()
            .find(|m| m["subject"].as_str().is_some_and(|s| s.contains("復旧")))
    });
    assert!(
        rec["subject"]
            .as_str()
            .unwrap()
            .contains(&format!("[{ticket}]")),
        "{rec:#}"
    );
    assert_eq!(rec["in_reply_to"].as_str(), Some(ex_id.as_str()), "{rec:#}");
    assert_eq!(
        rec["references"].as_str(),
        Some(format!("{occ_id} {ex_id}").as_str()),
        "{rec:#}"
    );
    let lines = wait_for("three mail lines", Duration::from_secs(10), || {
        let l = mail_lines(&s, &id);
        (l.len() == 3).then_some(l)
    });
    assert!(
        lines[0].starts_with("occurrence notice mailed to ops@acme.example, boss@acme.example"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("exhausted notice mailed"), "{lines:?}");
    assert!(lines[2].starts_with("recovery notice mailed"), "{lines:?}");
    assert!(lines[0].contains(&occ_id), "{lines:?}");

    // ISO-2022-JP, a 4xx retried, a 5xx given up.
    let (st, v) = s
        .http(
            "POST",
            "/v1/intake/events",
            Some(json!({"event_action": "trigger", "dedup_key": "web", "routing_key": "globex",
                    "payload": {"summary": "ウェブサーバ応答なし", "source": "web-02", "severity": "critical"}})),
        )
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let g = wait_for("the globex mail", Duration::from_secs(30), || {
        mails(dir)
            .into_iter()
            .find(|m| m["rcpt_tos"].to_string().contains("globex.example"))
    });
    assert_eq!(g["charset"], "iso-2022-jp", "{g:#}");
    // The subject too: ISO-2022-JP encoded words, decoded back intact.
    let raw_subject = g["raw_subject"].as_str().unwrap();
    assert!(
        raw_subject
            .to_ascii_uppercase()
            .contains("=?ISO-2022-JP?B?"),
        "{raw_subject}"
    );
    assert!(
        !raw_subject.to_ascii_lowercase().contains("utf-8"),
        "{raw_subject}"
    );
    let subject = g["subject"].as_str().unwrap();
    assert!(
        subject.contains("障害発生: web-02 ウェブサーバ応答なし"),
        "{subject}"
    );
    assert!(subject.starts_with("[GLOBEX-"), "{subject}");
    let text = g["text"].as_str().unwrap();
    assert!(text.contains("グロベックス ご担当者様"), "{text}");
    assert!(text.contains("内容: ウェブサーバ応答なし"), "{text}");
    assert_eq!(
        g["rcpt_tos"],
        json!(["ops@globex.example", "flaky@globex.example"])
    );
    assert!(
        mails(dir)
            .iter()
            .any(|m| m["tempfail"] == "flaky@globex.example"),
        "the 451 was never answered"
    );
    let gid = incident(&s, "globex").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lines = wait_for("the given-up line", Duration::from_secs(20), || {
        let l = mail_lines(&s, &gid);
        (l.len() == 2).then_some(l)
    });
    // The two end in either order (the 451 delays the first).
    assert!(
        lines.iter().any(|l| l
            .starts_with("occurrence notice mailed to ops@globex.example, flaky@globex.example")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(
            |l| l.starts_with("exhausted notice to reject@globex.example given up")
                && l.contains("550")
        ),
        "{lines:?}"
    );
    // Given up is final: no retry reaches the relay again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mail_lines(&s, &gid).len(), 2);
    assert!(!mails(dir)
        .iter()
        .any(|m| m["rcpt_tos"].to_string().contains("reject@")));
}

/// The escalation ends with nobody reached, end to end: a real sipp UAS
/// answers `486 Busy Here` to every call of two rounds, and a contract
/// whose trunk cannot be used has its notification failed by the
/// gateway. Each customer gets the exhausted notice from the real relay,
/// with the ticket number in the subject, threaded under the occurrence
/// notice, and a line on the incident's timeline.
#[test]
fn an_escalation_nobody_takes_mails_the_exhausted_notice() {
    let tmp = scratch("notice-exhausted");
    let dir = tmp.as_path();
    copy_prompts(dir);
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    // Two rounds of one contact: two INVITEs, both refused.
    let mut sipp = common::Sipp::uas("busy.xml", &sdir, &["-m", "2"]);
    let plan = |contract: &str, uri: &str, trunk: &str| {
        format!(
            "contract = \"{contract}\"\nname = \"{contract} Ltd\"\nlanguage = \"en\"\n{trunk}\
             [escalation]\nrounds = 2\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1s\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n[message]\ntext = \"Alert on {{host}}.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n\
             [pipeline]\nwait = \"0s\"\n\
             [pipeline.notices.occurrence]\nto = [\"ops@{contract}.example\"]\n\
             [pipeline.notices.exhausted]\nto = [\"ops@{contract}.example\", \"boss@{contract}.example\"]\n"
        )
    };
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/busy.toml"),
        plan("busy", &sipp.uri(), ""),
    )
    .unwrap();
    std::fs::write(
        dir.join("dialplans/nogw.toml"),
        plan("nogw", &sipp.uri(), "trunk = \"broken-dns\"\n"),
    )
    .unwrap();
    let smtp_port = free_port_pair();
    let _smtp = start_smtp(dir, smtp_port);
    let s = Serve::start(
        dir,
        &format!(
            "[trunks.broken-dns]\nproxy = \"proxy.invalid:5060\"\n\
             [pipeline.mail_out]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
             from = \"callout <callout@noc.example>\"\ntimeout = \"5s\"\nretry_min = \"1s\"\nretry_max = \"2s\"\n"
        ),
        "44300-44399",
    );
    for contract in ["busy", "nogw"] {
        let (st, v) = s
            .http(
                "POST",
                "/v1/intake/events",
                Some(json!({"event_action": "trigger", "dedup_key": "web", "routing_key": contract,
                    "payload": {"summary": "web does not answer", "source": "web-01", "severity": "critical"}})),
            )
            .unwrap();
        assert_eq!(st, 202, "{v}");
    }
    for contract in ["busy", "nogw"] {
        let got = wait_for(
            &format!("{contract}: the occurrence and exhausted mails"),
            Duration::from_secs(60),
            || {
                let m: Vec<Value> = mails(dir)
                    .into_iter()
                    .filter(|m| {
                        m["rcpt_tos"]
                            .to_string()
                            .contains(&format!("@{contract}.example"))
                    })
                    .collect();
                (m.len() >= 2).then_some(m)
            },
        );
        let inc = incident(&s, contract).unwrap();
        let (id, ticket) = (
            inc["id"].as_str().unwrap().to_string(),
            inc["ticket"].as_str().unwrap().to_string(),
        );
        let (occ, ex) = (&got[0], &got[1]);
        assert!(
            occ["subject"].as_str().unwrap().contains("Alert"),
            "{occ:#}"
        );
        let subject = ex["subject"].as_str().unwrap();
        assert!(subject.contains(&format!("[{ticket}]")), "{subject}");
        assert!(
            subject.contains("Nobody has taken the alert yet: web-01 web does not answer"),
            "{subject}"
        );
        assert_eq!(
            ex["rcpt_tos"],
            json!([
                format!("ops@{contract}.example"),
                format!("boss@{contract}.example")
            ])
        );
        let text = ex["text"].as_str().unwrap();
        assert!(text.contains(&format!("Ticket: {ticket}")), "{text}");
        assert!(text.contains(&format!("{contract} Ltd")), "{text}");
        let occ_id = occ["message_id"].as_str().unwrap();
        assert!(ex["message_id"].as_str().unwrap().contains(&id), "{ex:#}");
        assert_eq!(ex["in_reply_to"].as_str(), Some(occ_id), "{ex:#}");
        assert_eq!(ex["references"].as_str(), Some(occ_id), "{ex:#}");
        let lines = wait_for("the mail lines", Duration::from_secs(10), || {
            let l = mail_lines(&s, &id);
            (l.len() == 2).then_some(l)
        });
        assert!(
            lines[1].starts_with(&format!(
                "exhausted notice mailed to ops@{contract}.example, boss@{contract}.example"
            )),
            "{lines:?}"
        );
        let story: Vec<String> = timeline(&s, &id)
            .iter()
            .map(|l| l["text"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            story
                .iter()
                .any(|l| l.contains("nobody took it") || l.contains("the gateway refused the call")),
            "{story:#?}"
        );
    }
    // The busy callee was really called twice (two rounds), and refused
    // both; the broken trunk's contract never reached it.
    let status = sipp.wait(Duration::from_secs(30));
    assert!(status.success(), "sipp: {}", sipp.messages());
    let trace = sipp.messages();
    assert!(
        trace.matches("SIP/2.0 486 Busy Here").count() >= 2,
        "{trace}"
    );
    let nogw = incident(&s, "nogw").unwrap();
    let (_, n) = s
        .http(
            "GET",
            &format!(
                "/v1/notifications/{}",
                nogw["notification"].as_str().unwrap_or("")
            ),
            None,
        )
        .unwrap();
    assert_eq!(n["state"], "failed", "{n:#}");
}

/// Action results by mail, end to end: a Japanese contract's first-level
/// rule restarts a "process" on a real sshd when the incident opens (the
/// check finds it down, the restart runs, the verify passes), then an
/// operator runs the same action through the API (its check finds
/// nothing to fix). Each run mails the contract's `action` recipients
/// through the real relay: the ticket number in the subject, the
/// Japanese body decoded back intact, threaded under the occurrence
/// notice and each other; each mail is a line on the incident's timeline
/// (its ticket), as are the runs' steps.
#[test]
fn action_results_are_mailed_threaded_under_the_occurrence() {
    let tmp = scratch("notice-action");
    let dir = tmp.as_path();
    copy_prompts(dir);
    let sshd = Sshd::start(&dir.join("host"));
    std::fs::create_dir_all(dir.join("dialplans/flows")).unwrap();
    std::fs::write(
        dir.join("dialplans/flows/restart-service.toml"),
        sshd.flow("10s"),
    )
    .unwrap();
    // Nobody is called (the fix verifies, the contract says mail only):
    // the contact's address is never dialled.
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        format!(
            "variables = [\"service\"]\n{}\n{}",
            dialplan(
                "acme",
                "ACME株式会社",
                "sip:bob@127.0.0.1:9",
                "[[pipeline.auto_actions]]\nmatch = ['alertname=\"process_down\"']\naction = \"restart\"\non_success = \"mail\"\n\
                 [pipeline.notices.occurrence]\nto = [\"ops@acme.example\"]\n\
                 [pipeline.notices.action]\nto = [\"ops@acme.example\", \"作業担当 <works@acme.example>\"]\n\
                 [actions.restart]\nflow = \"restart-service\"\ndescription = \"サービスの再起動\"\npin = false\n\
                 params = { host = \"{host}\", service = \"{service}\" }\n",
            ),
            sshd.inventory(&["app"])
        ),
    )
    .unwrap();
    let smtp_port = free_port_pair();
    let _smtp = start_smtp(dir, smtp_port);
    let s = Serve::start(
        dir,
        &format!(
            "[pipeline.mail_out]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
             from = \"callout <callout@noc.example>\"\ntimeout = \"5s\"\nretry_min = \"1s\"\nretry_max = \"2s\"\n"
        ),
        "44500-44599",
    );
    let body = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "process_down", "host": "web01",
         "contract": "acme", "service": "app", "severity": "critical"},
         "annotations": {"summary": "appプロセス停止"}}
    ]});
    let (st, v) = s
        .http("POST", "/v1/intake/alertmanager", Some(body))
        .unwrap();
    assert_eq!(st, 202, "{v}");

    // The first-level run: occurrence, then the action's result.
    let got = wait_for(
        "the occurrence and action mails",
        Duration::from_secs(40),
        || {
            let m = mails(dir);
            (m.len() >= 2).then_some(m)
        },
    );
    assert!(sshd.running("app"), "the restart did not happen");
    let inc = incident(&s, "acme").unwrap();
    let (id, ticket) = (
        inc["id"].as_str().unwrap().to_string(),
        inc["ticket"].as_str().unwrap().to_string(),
    );
    let (occ, act) = (&got[0], &got[1]);
    assert!(
        occ["subject"].as_str().unwrap().contains("障害発生"),
        "{occ:#}"
    );
    let occ_id = occ["message_id"].as_str().unwrap().to_string();
    assert_eq!(
        act["rcpt_tos"],
        json!(["ops@acme.example", "works@acme.example"]),
        "{act:#}"
    );
    let subject = act["subject"].as_str().unwrap();
    assert!(
        subject.starts_with(&format!(
            "[{ticket}] 復旧操作: web01 action restart (flow restart-service) on web01 succeeded and verified"
        )),
        "{subject}"
    );
    assert_eq!(act["charset"], "utf-8", "{act:#}");
    let text = act["text"].as_str().unwrap();
    for want in [
        "ACME株式会社 ご担当者様",
        "障害に対して復旧操作を実行しました。",
        "結果: action restart (flow restart-service) on web01 succeeded and verified",
        "内容: appプロセス停止",
        &format!("チケット番号: {ticket}"),
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    let act_id = act["message_id"].as_str().unwrap().to_string();
    assert!(act_id.contains(&id), "{act_id}");
    assert_eq!(
        act["in_reply_to"].as_str(),
        Some(occ_id.as_str()),
        "{act:#}"
    );
    assert_eq!(act["references"].as_str(), Some(occ_id.as_str()), "{act:#}");

    wait_for("the first two mail lines", Duration::from_secs(10), || {
        (mail_lines(&s, &id).len() == 2).then_some(())
    });

    // The operator's run: dry run, then the run; its mail threads under
    // both.
    let path = format!("/v1/incidents/{id}/actions/restart");
    let (st, dry) = s
        .http("POST", &path, Some(json!({"dry_run": true})))
        .unwrap();
    assert_eq!(st, 200, "{dry:#}");
    let (st, rec) = s
        .http("POST", &path, Some(json!({"confirm": dry["confirm"]})))
        .unwrap();
    assert_eq!(st, 200, "{rec:#}");
    assert_eq!(rec["result"], "not_needed", "{rec:#}");
    let op = wait_for(
        "the operator's action mail",
        Duration::from_secs(20),
        || mails(dir).into_iter().nth(2),
    );
    let subject = op["subject"].as_str().unwrap();
    assert!(
        subject.starts_with(&format!(
            "[{ticket}] 復旧操作: web01 operator t: action restart (flow restart-service) on web01 found nothing to fix"
        )),
        "{subject}"
    );
    assert!(
        op["text"]
            .as_str()
            .unwrap()
            .contains("結果: operator t: action restart"),
        "{op:#}"
    );
    assert_eq!(op["in_reply_to"].as_str(), Some(act_id.as_str()), "{op:#}");
    assert_eq!(
        op["references"].as_str(),
        Some(format!("{occ_id} {act_id}").as_str()),
        "{op:#}"
    );

    // Each mail is a line on the timeline (the embedded ticket), after
    // the run it tells of; the steps are there too.
    let lines = wait_for("three mail lines", Duration::from_secs(10), || {
        let l = mail_lines(&s, &id);
        (l.len() == 3).then_some(l)
    });
    assert!(
        lines[0].starts_with("occurrence notice mailed"),
        "{lines:?}"
    );
    for l in &lines[1..] {
        assert!(
            l.starts_with("action notice mailed to ops@acme.example, works@acme.example"),
            "{lines:?}"
        );
    }
    assert!(lines[1].contains(&act_id), "{lines:?}");
    let story: Vec<(String, String)> = timeline(&s, &id)
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or("").to_string(),
                l["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let at = |want: &str| {
        story
            .iter()
            .position(|(_, t)| t.starts_with(want))
            .unwrap_or_else(|| panic!("{want:?} not in {story:#?}"))
    };
    let auto_step = at("action restart step 2/3: execute restart: ssh web01:");
    let auto_result = at("action restart (flow restart-service) on web01 succeeded and verified");
    let auto_mail = at("action notice mailed");
    let op_step = at("action restart step 1/1: check running: ssh web01:");
    let op_result = at("operator t: action restart");
    assert!(
        auto_step < auto_result
            && auto_result < auto_mail
            && auto_mail < op_step
            && op_step < op_result,
        "{story:#?}"
    );
    let (_, full) = s.http("GET", &format!("/v1/incidents/{id}"), None).unwrap();
    assert_eq!(full["notifications"], 0, "somebody was called: {full:#}");
}

/// A relay that wants TLS and a login: STARTTLS on one port (AUTH refused
/// before it), SMTPS on another, both with a certificate from a test CA
/// callout is given as `ca_file`, both taking only user `callout` with
/// the password from the environment. Each accepted mail is written with
/// who logged in and the TLS cipher of its session.
const TLS_SERVER: &str = r#"
import email, email.policy, json, os, ssl, sys, signal
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

starttls_port, smtps_port, out, cert, key, password = sys.argv[1:7]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b'callout' \
        and data.password == password.encode()
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

class Handler:
    def __init__(self, name):
        self.name = name
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        rec = {'relay': self.name, 'rcpt_tos': envelope.rcpt_tos,
               'login': session.auth_data.login.decode() if session.auth_data else None,
               'authenticated': session.authenticated,
               'cipher': str(server.transport.get_extra_info('cipher')),
               'subject': str(msg['subject'])}
        n = len([f for f in os.listdir(out) if f.endswith('.json')])
        tmp = os.path.join(out, 'tmp')
        with open(tmp, 'w') as f:
            json.dump(rec, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(out, '%03d.json' % n))
        return '250 2.0.0 accepted'

a = Controller(Handler('starttls'), hostname='127.0.0.1', port=int(starttls_port),
               tls_context=ctx, require_starttls=True, authenticator=auth, auth_required=True)
# aiosmtpd counts only STARTTLS as TLS for AUTH; this port speaks
# nothing but TLS.
b = Controller(Handler('smtps'), hostname='127.0.0.1', port=int(smtps_port),
               ssl_context=ctx, authenticator=auth, auth_required=True, auth_require_tls=False)
a.start()
b.start()
signal.sigwait([signal.SIGTERM, signal.SIGINT])
a.stop()
b.stop()
"#;

/// A test CA and a server certificate for 127.0.0.1 signed by it (a
/// self-signed CA certificate is not a server certificate to rustls):
/// (CA, certificate, key).
fn test_ca_and_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    common::require("openssl");
    let script = "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=callout-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
  -extfile leaf.ext -out cert.pem 2>/dev/null
";
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// `[pipeline.mail_out]` with `security = "starttls"` and `"tls"`,
/// credentials from environment variables and the relay's CA from
/// `ca_file`, against real TLS relays that refuse anything less: the
/// occurrence notice of each of two callout instances is delivered
/// encrypted and logged in.
#[test]
fn notices_go_out_over_starttls_and_smtps_with_a_login() {
    let tmp = scratch("notice-tls");
    let dir = tmp.as_path();
    let (ca, cert, key) = test_ca_and_certificate(dir);
    let (starttls, smtps) = (free_port_pair(), free_port_pair());
    let out = dir.join("mails");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(dir.join("tls_smtpd.py"), TLS_SERVER).unwrap();
    let password = "pässwörd-1234";
    let _relay = KillOnDrop(
        Command::new(python())
            .arg(dir.join("tls_smtpd.py"))
            .args([starttls.to_string(), smtps.to_string()])
            .arg(&out)
            .arg(&cert)
            .arg(&key)
            .arg(password)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd"),
    );
    for port in [starttls, smtps] {
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "the TLS relay did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The credentials reach callout only through the variables named.
    std::env::set_var("CALLOUT_TEST_SMTP_USER", "callout");
    std::env::set_var("CALLOUT_TEST_SMTP_PASS", password);
    let mut serves = Vec::new();
    for (security, port, rtp) in [
        ("starttls", starttls, "44600-44649"),
        ("tls", smtps, "44650-44699"),
    ] {
        let d = dir.join(security);
        copy_prompts(&d);
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/fallback-ja.wav"),
            d.join("prompts/fallback-ja.wav"),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("dialplans")).unwrap();
        std::fs::write(
            d.join("dialplans/acme.toml"),
            dialplan(
                "acme",
                "ACME",
                "sip:bob@127.0.0.1:9",
                &format!("[pipeline.notices.occurrence]\nto = [\"{security}@acme.example\"]\n"),
            ),
        )
        .unwrap();
        let s = Serve::start(
            &d,
            &format!(
                "[pipeline.mail_out]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"{security}\"\n\
                 ca_file = \"{ca}\"\nusername_env = \"CALLOUT_TEST_SMTP_USER\"\npassword_env = \"CALLOUT_TEST_SMTP_PASS\"\n\
                 from = \"callout <callout@noc.example>\"\ntimeout = \"5s\"\nretry_min = \"1s\"\nretry_max = \"2s\"\n",
                ca = ca.display()
            ),
            rtp,
        );
        let (st, v) = s
            .http(
                "POST",
                "/v1/intake/events",
                Some(json!({"event_action": "trigger", "dedup_key": "web", "routing_key": "acme",
                    "payload": {"summary": "web does not answer", "source": "web-01", "severity": "critical"}})),
            )
            .unwrap();
        assert_eq!(st, 202, "{v}");
        serves.push((security, s));
    }
    let got = wait_for("both mails", Duration::from_secs(40), || {
        let m = mails(dir);
        (m.len() >= 2).then_some(m)
    });
    for (security, s) in &serves {
        let relay = if *security == "tls" {
            "smtps"
        } else {
            "starttls"
        };
        let m = got
            .iter()
            .find(|m| m["relay"] == relay)
            .unwrap_or_else(|| panic!("nothing through {relay}: {got:#?}"));
        assert_eq!(
            m["rcpt_tos"],
            json!([format!("{security}@acme.example")]),
            "{m:#}"
        );
        assert_eq!(m["authenticated"], true, "{m:#}");
        assert_eq!(m["login"], "callout", "{m:#}");
        assert!(m["cipher"].as_str().unwrap().contains("TLS"), "{m:#}");
        let inc = incident(s, "acme").unwrap();
        let ticket = inc["ticket"].as_str().unwrap();
        assert!(
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with(&format!("[{ticket}] 障害発生")),
            "{m:#}"
        );
        let lines = wait_for("the mail line", Duration::from_secs(10), || {
            let l = mail_lines(s, inc["id"].as_str().unwrap());
            (!l.is_empty()).then_some(l)
        });
        assert!(
            lines[0].starts_with(&format!(
                "occurrence notice mailed to {security}@acme.example"
            )),
            "{lines:?}"
        );
    }
}

//! Alert mail over SMTP with real clients (`swaks`, Python's `smtplib`)
//! into the listener (`pipeline::smtp::serve`) on a free loopback port,
//! with an in-memory sink that can be told to fail; what it keeps is read
//! with `pipeline::mail::read_mail` and the rules of a Japanese sample
//! contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callout::pipeline::alert::Status;
use callout::pipeline::config::{self, MailConfig};
use callout::pipeline::mail::{read_mail, MailRead};
use callout::pipeline::smtp::{serve, DeliverFuture, InboundMail, MailSink, SmtpConfig};
use tokio_util::sync::CancellationToken;

const RULES: &str = r#"
contract = "acme"
[pipeline.mail]
to = ["alerts@acme.example"]

[[pipeline.mail.rules]]
subject = '^\[(?P<state>PROBLEM|RECOVERY)\]\s+(?P<host>\S+)\s+(?P<service>.+?)\s*$'
recovery = "RECOVERY"

[[pipeline.mail.rules]]
subject = '^【(?P<state>障害|復旧)】'
body = '(?m)^ホスト:\s*(?P<host>\S+)'
recovery = "復旧"
"#;

fn rules() -> MailConfig {
    config::load(RULES, Path::new("acme.toml"))
        .unwrap()
        .unwrap()
        .mail
}

#[derive(Default)]
struct TestSink {
    mails: Mutex<Vec<InboundMail>>,
    fail: AtomicBool,
}

impl MailSink for TestSink {
    fn contract_for(&self, rcpt: &str) -> Option<String> {
        rules().to.iter().any(|t| t == rcpt).then(|| "acme".into())
    }

    fn deliver(&self, mail: InboundMail) -> DeliverFuture<'_> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err("store unavailable".into());
            }
            self.mails.lock().unwrap().push(mail);
            Ok(())
        })
    }
}

struct Server {
    port: u16,
    sink: Arc<TestSink>,
    stop: CancellationToken,
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(max_size: usize) -> Server {
        Server::start_with(SmtpConfig {
            max_size,
            ..SmtpConfig::default()
        })
    }

    /// The listener with `cfg` (its `listen` and `hostname` are set here).
    fn start_with(cfg: SmtpConfig) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sink = Arc::new(TestSink::default());
        let stop = CancellationToken::new();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let cfg = SmtpConfig {
            listen: format!("127.0.0.1:{port}"),
            hostname: "mx.callout.test".into(),
            ..cfg
        };
        rt.spawn(serve(listener, cfg, sink.clone(), stop.clone()));
        Server {
            port,
            sink,
            stop,
            rt,
        }
    }

    fn mails(&self) -> Vec<InboundMail> {
        self.sink.mails.lock().unwrap().clone()
    }

    fn read(&self, i: usize) -> MailRead {
        let m = &self.mails()[i];
        read_mail(
            &m.raw,
            &m.rcpts[0].1,
            &rules(),
            format!("al_{i}"),
            m.received_ms,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) && Arc::strong_count(&self.sink) > 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = &self.rt;
    }
}

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

/// `smtplib.SMTP.sendmail` of the file's bytes; prints `ok` or the
/// exception class and SMTP code.
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

fn alert(r: MailRead) -> callout::pipeline::alert::Alert {
    match r {
        MailRead::Alert(a) => a,
        other => panic!("not an alert: {other:?}"),
    }
}

#[test]
fn japanese_mails_from_swaks_and_smtplib_become_alerts() {
    let s = Server::start(1 << 20);
    let o = swaks(
        s.port,
        "alerts@acme.example",
        &sample("iso2022jp-problem.eml"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("250 2.0.0"), "{}", text(&o));
    assert_eq!(
        smtplib(s.port, "Alerts@Acme.Example", &sample("sjis-base64.eml")),
        "ok"
    );
    assert_eq!(
        smtplib(
            s.port,
            "alerts@acme.example",
            &sample("iso2022jp-recovery.eml")
        ),
        "ok"
    );
    let mails = s.mails();
    assert_eq!(mails.len(), 3);
    assert_eq!(mails[0].from, "nms@example.co.jp");
    assert_eq!(
        mails[1].rcpts,
        [("alerts@acme.example".to_string(), "acme".to_string())]
    );
    let a = alert(s.read(0));
    assert_eq!((a.host.as_str(), a.status), ("web-01", Status::Firing));
    assert_eq!(a.name, "HTTP 応答");
    let b = alert(s.read(1));
    assert_eq!((b.host.as_str(), b.status), ("db-02", Status::Firing));
    assert_eq!(b.labels["mail_subject"], "【障害】db-02 レプリケーション");
    let c = alert(s.read(2));
    assert_eq!((c.status, &c.key), (Status::Resolved, &a.key));
}

#[test]
fn unknown_recipients_are_refused_at_rcpt() {
    let s = Server::start(1 << 20);
    let o = swaks(
        s.port,
        "someone@elsewhere.example",
        &sample("iso2022jp-problem.eml"),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("550 5.1.1"), "{}", text(&o));
    let r = smtplib(s.port, "root@acme.example", &sample("sjis-qp.eml"));
    assert!(r.starts_with("SMTPRecipientsRefused 550"), "{r}");
    assert!(s.mails().is_empty());
}

#[test]
fn oversize_mail_is_552() {
    let s = Server::start(300);
    // swaks sends no SIZE: the whole message comes, then 552.
    let o = swaks(s.port, "alerts@acme.example", &sample("alternative.eml"));
    assert!(!o.status.success());
    assert!(text(&o).contains("552 5.3.4"), "{}", text(&o));
    // smtplib declares SIZE= and is refused at MAIL.
    let r = smtplib(s.port, "alerts@acme.example", &sample("alternative.eml"));
    assert!(r.starts_with("SMTPSenderRefused 552"), "{r}");
    assert!(s.mails().is_empty());
}

#[test]
fn a_failing_store_is_a_temporary_451() {
    let s = Server::start(1 << 20);
    s.sink.fail.store(true, Ordering::SeqCst);
    let o = swaks(s.port, "alerts@acme.example", &sample("sjis-qp.eml"));
    assert!(!o.status.success());
    assert!(text(&o).contains("451 4.3.0"), "{}", text(&o));
    let r = smtplib(s.port, "alerts@acme.example", &sample("sjis-qp.eml"));
    assert!(r.starts_with("SMTPDataError 451"), "{r}");
    assert!(s.mails().is_empty());
    // The client retries once the store is back.
    s.sink.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        smtplib(s.port, "alerts@acme.example", &sample("sjis-qp.eml")),
        "ok"
    );
    assert_eq!(s.mails().len(), 1);
}

#[test]
fn broken_mime_is_kept_as_unparsed() {
    let s = Server::start(1 << 20);
    let o = swaks(
        s.port,
        "alerts@acme.example",
        &sample("broken-multipart.eml"),
    );
    assert!(o.status.success(), "{}", text(&o));
    match s.read(0) {
        MailRead::Unparsed {
            reason, subject, ..
        } => {
            assert!(reason.contains("boundary"), "{reason}");
            assert_eq!(subject, "[PROBLEM] web-09 HTTP");
        }
        other => panic!("{other:?}"),
    }
}

/// A self-signed certificate for 127.0.0.1 made by `openssl` in `dir`:
/// (certificate, key).
fn test_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    require("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=mx.callout.test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:mx.callout.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    (cert, key)
}

/// STARTTLS with real clients: swaks `-tls` (which refuses to go on
/// without it) and smtplib's `starttls()` verifying the server against
/// the test certificate, so the session is encrypted with the configured
/// certificate; the mail after it is accepted and read. Without a
/// certificate STARTTLS is not offered and swaks `-tls` gives up.
#[test]
fn starttls_with_swaks_and_smtplib() {
    let dir = std::env::temp_dir().join(format!("callout-smtp-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = test_certificate(&dir);
    let s = Server::start_with(SmtpConfig {
        max_size: 1 << 20,
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..SmtpConfig::default()
    });
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", s.port)])
        .args(["--from", "nms@example.co.jp", "--to", "alerts@acme.example"])
        .args(["--helo", "nms.example.co.jp", "--timeout", "10", "-tls"])
        .arg("--data")
        .arg(sample("iso2022jp-problem.eml"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("STARTTLS"), "{t}");
    assert!(t.contains("TLS started"), "{t}");
    assert!(t.contains("250 2.0.0"), "{t}");

    let script = r#"
import smtplib, ssl, sys
port, cafile, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.ehlo("nms.example.co.jp")
    assert s.has_extn("starttls"), "no STARTTLS in EHLO"
    s.starttls(context=ctx)
    s.ehlo("nms.example.co.jp")
    assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
    s.sendmail("nms@example.co.jp", ["alerts@acme.example"], open(path, "rb").read())
    print("ok", s.sock.version())
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(s.port.to_string())
        .arg(&cert)
        .arg(sample("sjis-base64.eml"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.starts_with("ok TLSv1."), "{t}");

    let mails = s.mails();
    assert_eq!(mails.len(), 2);
    let a = alert(s.read(0));
    assert_eq!((a.host.as_str(), a.status), ("web-01", Status::Firing));
    let b = alert(s.read(1));
    assert_eq!((b.host.as_str(), b.status), ("db-02", Status::Firing));
    drop(s);

    // No certificate: not offered, and a client that insists gives up
    // before sending anything.
    let plain = Server::start(1 << 20);
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", plain.port)])
        .args(["--from", "nms@example.co.jp", "--to", "alerts@acme.example"])
        .args(["--timeout", "10", "-tls"])
        .arg("--data")
        .arg(sample("iso2022jp-problem.eml"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("STARTTLS"), "{}", text(&o));
    assert!(plain.mails().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

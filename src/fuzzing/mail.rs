//! The alert mail intake: MIME decoding and the mail rules
//! (`pipeline::mail`), and the SMTP server session
//! (`pipeline::smtp_session`) fed the same bytes as a client's commands
//! and as a message body.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::pipeline::config::{self, MailConfig};
use crate::pipeline::mail::{self, MailRead, MAX_TEXT};
use crate::pipeline::smtp_session::{Output, Session, SessionConfig, MAX_LINE};

const RULES: &str = r#"
contract = "fuzz"
[pipeline.mail]
to = ["alerts@acme.example"]
[[pipeline.mail.rules]]
subject = '^\[(?P<state>PROBLEM|RECOVERY)\]\s+(?P<host>\S+)\s+(?P<service>.+?)\s*$'
body = '(?m)^重要度:\s*(?P<severity>\S+)'
recovery = "RECOVERY"
[[pipeline.mail.rules]]
subject = '^【(?P<state>障害|復旧)】'
body = '(?m)^ホスト:\s*(?P<host>\S+)'
recovery = "復旧"
[[pipeline.mail.rules]]
from = '@example\.com$'
body = '(?m)^Host:\s*(?P<host>\S+)\s*$(?s:.*?)^State:\s*(?P<state>\S+)'
recovery = "OK"
"#;

fn rules() -> &'static MailConfig {
    static R: OnceLock<MailConfig> = OnceLock::new();
    R.get_or_init(|| {
        config::load(RULES, Path::new("fuzz.toml"))
            .ok()
            .flatten()
            .map(|p| p.mail)
            .unwrap_or_default()
    })
}

const MAX_SIZE: usize = 64 << 10;

fn session() -> Session {
    Session::new(SessionConfig {
        hostname: "mx.fuzz".into(),
        max_size: MAX_SIZE,
        max_recipients: 3,
        max_errors: 20,
        tls_available: true,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
    })
}

fn resolve(rcpt: &str) -> Option<String> {
    (rcpt == "alerts@acme.example").then(|| "fuzz".to_string())
}

/// Feed `input` in pieces of `step` bytes; returns the deliveries.
/// Asserts every reply is one bounded CRLF-terminated reply and every
/// delivery within `max_size`.
fn drive(input: &[u8], step: usize, ok: bool) -> Vec<Vec<u8>> {
    let mut s = session();
    let mut got = Vec::new();
    let mut pump = |s: &mut Session| {
        while let Some(o) = s.poll_output(&resolve) {
            match o {
                Output::Reply(r) => {
                    assert!(r.ends_with(b"\r\n") && r.len() < 512, "bad reply {r:?}");
                    assert!(r[..3].iter().all(u8::is_ascii_digit), "bad reply {r:?}");
                }
                Output::Deliver(e) => {
                    assert!(e.data.len() <= MAX_SIZE, "delivery over max_size");
                    assert!(!e.rcpts.is_empty(), "delivery without recipients");
                    got.push(e.data);
                    s.delivered(if ok { Ok(()) } else { Err("no".into()) });
                }
                Output::StartTls => s.tls_started(),
                Output::Close => {}
            }
        }
    };
    pump(&mut s);
    for piece in input.chunks(step.max(1)) {
        s.handle_bytes(piece);
        pump(&mut s);
    }
    got
}

/// A raw mail for `read_mail`, then the same bytes as an SMTP
/// conversation and as a dot-stuffed message after a fixed envelope.
pub fn mail(data: &[u8]) -> bool {
    let read = mail::read_mail(data, "fuzz", rules(), "al_fuzz".into(), 0);
    let parsed = match &read {
        MailRead::Alert(a) => {
            assert!(!a.host.is_empty() && !a.name.is_empty(), "{a:?}");
            assert_eq!(a.key, format!("{}/{}", a.host, a.name));
            assert!(a.labels.values().all(|v| v.len() <= 4 * MAX_TEXT));
            true
        }
        MailRead::Unparsed { reason, .. } => {
            assert!(!reason.is_empty());
            mail::decode(data).is_ok()
        }
    };

    // As commands, whole and byte-odd pieces: the same deliveries.
    let whole = drive(data, data.len(), true);
    assert_eq!(
        whole,
        drive(data, 7, true),
        "chunking changed what was delivered"
    );

    // As a message: dot-stuffed in, the same bytes out.
    let mut msg = data.to_vec();
    if !msg.is_empty() && !msg.ends_with(b"\n") {
        msg.extend_from_slice(b"\r\n");
    }
    let mut wire =
        b"EHLO fuzz\r\nMAIL FROM:<nms@example.jp>\r\nRCPT TO:<alerts@acme.example>\r\nDATA\r\n"
            .to_vec();
    let mut at_start = true;
    for &b in &msg {
        if at_start && b == b'.' {
            wire.push(b'.');
        }
        wire.push(b);
        at_start = b == b'\n';
    }
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    // Lines over MAX_LINE go in by pieces, but only the first is at a
    // line start: the message comes out the same however it is cut.
    for step in [wire.len(), 13, MAX_LINE + 1] {
        let got = drive(&wire, step, true);
        if msg.len() <= MAX_SIZE {
            assert_eq!(got, vec![msg.clone()], "dot-stuffing did not round-trip");
        } else {
            assert!(got.is_empty(), "an oversize message was delivered");
        }
    }
    drive(&wire, 13, false);
    parsed
}

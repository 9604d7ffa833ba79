//! Byte-exact sample mails (the files in `fuzz/corpus/mail/`, made with
//! Python's `email` package as a Japanese monitor would send them) read
//! with the rules of a Japanese sample contract.

use std::path::Path;

use super::*;
use crate::pipeline::config;

macro_rules! sample {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/mail/",
            $name
        ))
        .as_slice()
    };
}

/// The rules `dialplans/README.md` shows: a subject with a state tag,
/// and a body with `ホスト:` / `Host:` lines.
pub(crate) const RULES: &str = r#"
contract = "acme"
[pipeline.mail]
to = ["alerts@acme.example"]

[[pipeline.mail.rules]]
subject = '^\[(?P<state>PROBLEM|RECOVERY)\]\s+(?P<host>\S+)\s+(?P<service>.+?)\s*$'
body = '(?m)^重要度:\s*(?P<severity>\S+)'
recovery = "RECOVERY"
severity = "major"

[[pipeline.mail.rules]]
subject = '^【(?P<state>障害|復旧)】'
body = '(?m)^ホスト:\s*(?P<host>\S+)'
recovery = "復旧"
severity = "critical"

[[pipeline.mail.rules]]
from = '@example\.com$'
body = '(?m)^Host:\s*(?P<host>\S+)\s*$(?s:.*?)^State:\s*(?P<state>\S+)'
recovery = "OK"
"#;

pub(crate) fn rules() -> MailConfig {
    config::load(RULES, Path::new("acme.toml"))
        .expect("sample rules load")
        .expect("has a pipeline")
        .mail
}

fn read(raw: &[u8]) -> MailRead {
    read_mail(raw, "acme", &rules(), "al_1".into(), 1_000)
}

fn alert(raw: &[u8]) -> Alert {
    match read(raw) {
        MailRead::Alert(a) => a,
        other => panic!("not an alert: {other:?}"),
    }
}

fn reason(raw: &[u8]) -> String {
    match read(raw) {
        MailRead::Unparsed { reason, .. } => reason,
        other => panic!("not unparsed: {other:?}"),
    }
}

#[test]
fn iso_2022_jp_subject_and_body() {
    let raw = sample!("iso2022jp-problem.eml");
    let t = decode(raw).unwrap();
    assert_eq!(t.subject, "[PROBLEM] web-01 HTTP 応答");
    assert_eq!(t.from, "monitor@nms.example.jp");
    assert!(t.body.contains("サービス: HTTP 応答"), "{}", t.body);
    let a = alert(raw);
    assert_eq!((a.host.as_str(), a.status), ("web-01", Status::Firing));
    assert_eq!(a.name, "HTTP 応答");
    assert_eq!(a.key, "web-01/HTTP 応答");
    // 重大 is no severity word: the capture says Warning, not the
    // rule's default.
    assert_eq!(a.severity, Severity::Warning);
    assert_eq!(a.source, Source::Mail);
    assert_eq!(a.contract, "acme");
    assert_eq!(a.summary, "[PROBLEM] web-01 HTTP 応答");
    assert_eq!(a.received_ms, 1_000);
    assert_eq!(a.starts_ms, Some(1_796_036_220_000)); // 2026-11-30 19:57 +0900
    assert_eq!(a.labels["mail_from"], "monitor@nms.example.jp");
    assert_eq!(a.labels["mail_rule"], "6");
    assert_eq!(a.labels["state"], "PROBLEM");
}

#[test]
fn a_recovery_links_to_the_same_key() {
    let p = alert(sample!("iso2022jp-problem.eml"));
    let r = alert(sample!("iso2022jp-recovery.eml"));
    assert_eq!(r.status, Status::Resolved);
    assert_eq!(r.key, p.key);
    let p = alert(sample!("sjis-base64.eml"));
    let r = alert(sample!("sjis-qp.eml"));
    assert_eq!((p.status, r.status), (Status::Firing, Status::Resolved));
    assert_eq!(p.key, r.key);
}

#[test]
fn shift_jis_base64_and_quoted_printable() {
    let t = decode(sample!("sjis-base64.eml")).unwrap();
    assert_eq!(t.subject, "【障害】db-02 レプリケーション");
    assert!(t.body.contains("詳細: レプリケーション停止"), "{}", t.body);
    let a = alert(sample!("sjis-base64.eml"));
    assert_eq!(a.host, "db-02");
    assert_eq!(a.severity, Severity::Critical, "the rule's default");
    // No service captured: the subject without tag and host.
    assert_eq!(a.name, "レプリケーション");
    assert_eq!(a.labels["mail_rule"], "12");
    let t = decode(sample!("sjis-qp.eml")).unwrap();
    assert!(t.body.contains("状態: 復旧"), "{}", t.body);
    assert_eq!(alert(sample!("sjis-qp.eml")).host, "db-02");
}

#[test]
fn euc_jp_8bit_with_a_utf8_q_subject() {
    let t = decode(sample!("eucjp-8bit.eml")).unwrap();
    assert_eq!(t.subject, "【障害】mail-03 SMTP");
    let a = alert(sample!("eucjp-8bit.eml"));
    assert_eq!((a.host.as_str(), a.status), ("mail-03", Status::Firing));
    assert_eq!(a.name, "SMTP");
}

#[test]
fn multipart_alternative_reads_the_plain_text() {
    let a = alert(sample!("alternative.eml"));
    assert_eq!(a.host, "app-04", "not the HTML part's WRONG-HOST");
    assert_eq!(a.status, Status::Firing);
    assert_eq!(a.name, "Problem disk full on app-04".replace(" app-04", ""));
}

#[test]
fn html_only_is_read_without_tags() {
    let t = decode(sample!("html-only.eml")).unwrap();
    assert!(!t.body.contains('<'), "{}", t.body);
    let a = alert(sample!("html-only.eml"));
    assert_eq!((a.host.as_str(), a.status), ("app-05", Status::Resolved));
}

#[test]
fn broken_mime_is_unparsed_with_a_reason() {
    let r = reason(sample!("broken-multipart.eml"));
    assert!(r.contains("boundary"), "{r}");
    match read(sample!("broken-multipart.eml")) {
        MailRead::Unparsed { subject, from, .. } => {
            assert_eq!(subject, "[PROBLEM] web-09 HTTP");
            assert_eq!(from, "nms@example.co.jp");
        }
        other => panic!("{other:?}"),
    }
    let r = reason(b"\x00\x01\x02 not a mail at all");
    assert!(r.contains("not a mail"), "{r}");
    let r = reason(b"");
    assert!(r.contains("not a mail"), "{r}");
    let bad64 = b"From: a@b.example\r\nSubject: [PROBLEM] h s\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!****\r\n";
    let r = reason(bad64);
    assert!(r.contains("does not decode"), "{r}");
}

#[test]
fn unknown_charsets_are_unparsed() {
    let r = reason(sample!("unknown-charset.eml"));
    assert!(r.contains("x-klingon-7"), "{r}");
    let subj =
        b"From: a@b.example\r\nSubject: =?x-unknown?B?W1BST0JMRU1dIGggcw==?=\r\n\r\nbody\r\n";
    let r = reason(subj);
    assert!(r.contains("x-unknown"), "{r}");
}

#[test]
fn no_rule_or_no_host_is_unparsed() {
    let r = reason(b"From: a@b.example\r\nSubject: hello\r\n\r\nlunch?\r\n");
    assert!(r.contains("no mail rule matched"), "{r}");
    let mut cfg = rules();
    cfg.rules[0].subject = Some(regex::Regex::new(r"^\[(?P<state>PROBLEM)\]").unwrap());
    match read_mail(
        sample!("iso2022jp-problem.eml"),
        "acme",
        &cfg,
        "al_2".into(),
        0,
    ) {
        MailRead::Unparsed { reason, .. } => assert!(reason.contains("no host"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let empty = MailConfig::default();
    match read_mail(sample!("sjis-qp.eml"), "acme", &empty, "al_3".into(), 0) {
        MailRead::Unparsed { reason, .. } => assert!(reason.contains("no mail rules"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mail_bombs_are_refused() {
    // 200 parts side by side.
    let mut wide = b"From: a@b.example\r\nSubject: [PROBLEM] h s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    for _ in 0..200 {
        wide.extend_from_slice(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n");
    }
    wide.extend_from_slice(b"--b--\r\n");
    assert!(reason(&wide).contains("MIME parts"), "{}", reason(&wide));
    // 50 multiparts nested.
    let mut deep = b"From: a@b.example\r\nSubject: [PROBLEM] h s\r\nMIME-Version: 1.0\r\n".to_vec();
    for i in 0..50 {
        deep.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    deep.extend_from_slice(b"Content-Type: text/plain\r\n\r\nx\r\n");
    for i in (0..50).rev() {
        deep.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    let r = reason(&deep);
    assert!(r.contains("nested") || r.contains("MIME parts"), "{r}");
    // A huge body: the rules see only the first MAX_TEXT bytes.
    let mut big = b"From: a@b.example\r\nSubject: [PROBLEM] web-01 disk\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 4 * MAX_TEXT));
    big.extend_from_slice(b"\r\n");
    let t = decode(&big).unwrap();
    assert_eq!(t.body.len(), MAX_TEXT);
}

#[test]
fn the_service_fallback_is_stable() {
    assert_eq!(
        service_from_subject("[PROBLEM] web-01 HTTP down", "web-01", Some("PROBLEM")),
        "HTTP down"
    );
    assert_eq!(
        service_from_subject("【復旧】web-01: ディスク", "web-01", Some("復旧")),
        "ディスク"
    );
    assert_eq!(service_from_subject("web-01", "web-01", None), "mail");
}

//! E-mail notices to a contract's customers: who gets which notice
//! (`[pipeline.notices]` in the contract's dialplan) and how one notice
//! becomes a MIME message (language, charset, threading headers).
//!
//! Pure: no socket, no clock. The outbox (`mail_outbox.rs`) queues a
//! [`Notice`] in the same commit as the incident step that caused it and
//! renders it here when it sends, so the ticket number is known by then.
//!
//! Alert fields are hostile input: every value that lands in a header is
//! flattened to one line of printable characters and cut short before
//! lettre encodes it, so CR/LF in a summary can never add a header.

use std::collections::BTreeMap;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message, SinglePart};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::ivr::dialplan::{render, Language};

/// The moments a customer is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    /// The wait window ended and the escalation starts.
    Occurrence,
    /// The escalation ended and nobody took it.
    Exhausted,
    /// A maintenance action ran on the incident (automatic or operator).
    Action,
    /// Every alert of the incident recovered.
    Recovery,
}

impl NoticeEvent {
    pub const ALL: [NoticeEvent; 4] = [
        NoticeEvent::Occurrence,
        NoticeEvent::Exhausted,
        NoticeEvent::Action,
        NoticeEvent::Recovery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Occurrence => "occurrence",
            NoticeEvent::Exhausted => "exhausted",
            NoticeEvent::Action => "action",
            NoticeEvent::Recovery => "recovery",
        }
    }

    pub fn parse(s: &str) -> Option<NoticeEvent> {
        NoticeEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// The body's character set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Charset {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// For Japanese mail readers that want the traditional 7-bit charset.
    #[serde(rename = "iso-2022-jp")]
    Iso2022Jp,
}

/// One event's recipients and optional templates (the language's
/// defaults when absent).
#[derive(Debug, Clone, Default)]
pub struct NoticeRule {
    pub to: Vec<Mailbox>,
    pub subject: Option<String>,
    pub body: Option<String>,
}

/// A contract's `[pipeline.notices]`, checked.
#[derive(Debug, Clone, Default)]
pub struct NoticeConfig {
    pub charset: Charset,
    pub rules: BTreeMap<NoticeEvent, NoticeRule>,
}

impl NoticeConfig {
    /// The recipients of an event (empty: no mail).
    pub fn recipients(&self, e: NoticeEvent) -> &[Mailbox] {
        self.rules.get(&e).map_or(&[], |r| r.to.as_slice())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotices {
    charset: Option<Spanned<String>>,
    occurrence: Option<RawRule>,
    exhausted: Option<RawRule>,
    action: Option<RawRule>,
    recovery: Option<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    subject: Option<String>,
    body: Option<String>,
}

/// Check `[pipeline.notices]`; errors carry the span of what is wrong.
pub(crate) fn check(
    raw: &RawNotices,
) -> Result<NoticeConfig, Vec<(std::ops::Range<usize>, String)>> {
    let mut errors = Vec::new();
    let charset = match &raw.charset {
        None => Charset::Utf8,
        Some(c) => match c.get_ref().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Charset::Utf8,
            "iso-2022-jp" => Charset::Iso2022Jp,
            other => {
                errors.push((
                    c.span(),
                    format!(
                        "pipeline.notices.charset: {other:?} is not \"utf-8\" or \"iso-2022-jp\""
                    ),
                ));
                Charset::Utf8
            }
        },
    };
    let mut rules = BTreeMap::new();
    for (event, r) in [
        (NoticeEvent::Occurrence, &raw.occurrence),
        (NoticeEvent::Exhausted, &raw.exhausted),
        (NoticeEvent::Action, &raw.action),
        (NoticeEvent::Recovery, &raw.recovery),
    ] {
        let Some(r) = r else { continue };
        let mut to = Vec::new();
        for a in &r.to {
            match a.get_ref().trim().parse::<Mailbox>() {
                Ok(m) => to.push(m),
                Err(e) => errors.push((
                    a.span(),
                    format!(
                        "pipeline.notices.{}.to: {:?} is not a mail address ({e})",
                        event.as_str(),
                        a.get_ref()
                    ),
                )),
            }
        }
        rules.insert(
            event,
            NoticeRule {
                to,
                subject: r.subject.clone(),
                body: r.body.clone(),
            },
        );
    }
    if errors.is_empty() {
        Ok(NoticeConfig { charset, rules })
    } else {
        Err(errors)
    }
}

/// What is known of the incident when the notice is queued; stored with
/// the outbox row as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: NoticeEvent,
    pub incident: String,
    pub host: String,
    pub severity: String,
    pub summary: String,
    /// The alert's labels the dialplan declares as variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// What happened: the action's result, why the escalation ended.
    #[serde(default)]
    pub detail: String,
}

/// The sending side's settings that shape a message.
#[derive(Debug, Clone)]
pub struct Sender {
    pub from: Mailbox,
    /// The right-hand side of every Message-ID.
    pub domain: String,
}

/// A value bound for a header: one line of printable characters, at most
/// `max` characters (cut with an ellipsis).
pub fn header_safe(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = flat.split_whitespace().collect();
    let one = words.join(" ");
    if one.chars().count() <= max {
        one
    } else {
        let mut cut: String = one.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// An id safe inside `<…@…>`: letters, digits, `.`, `_`, `-` only.
fn id_part(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(120)
        .collect()
}

/// The Message-ID of one outbox mail.
pub fn message_id(outbox_id: &str, incident: &str, domain: &str) -> String {
    format!(
        "<{}.{}@{}>",
        id_part(outbox_id),
        id_part(incident),
        id_part(domain)
    )
}

fn default_subject(lang: Language, e: NoticeEvent) -> &'static str {
    match (lang, e) {
        (Language::En, NoticeEvent::Occurrence) => "Alert: {host} {summary}",
        (Language::En, NoticeEvent::Exhausted) => {
            "Nobody has taken the alert yet: {host} {summary}"
        }
        // Automatic or an operator's: the detail says which.
        (Language::En, NoticeEvent::Action) => "Maintenance action on {host}: {detail}",
        (Language::En, NoticeEvent::Recovery) => "Recovered: {host} {summary}",
        (Language::Ja, NoticeEvent::Occurrence) => "障害発生: {host} {summary}",
        (Language::Ja, NoticeEvent::Exhausted) => "担当者が未対応です: {host} {summary}",
        (Language::Ja, NoticeEvent::Action) => "復旧操作: {host} {detail}",
        (Language::Ja, NoticeEvent::Recovery) => "復旧: {host} {summary}",
    }
}

fn default_body(lang: Language, e: NoticeEvent) -> &'static str {
    match (lang, e) {
        (Language::En, NoticeEvent::Occurrence) => "{contract_name}\n\nAn alert was raised and the on-call engineers are being called.\n\nHost: {host}\nSeverity: {severity}\nSummary: {summary}\nTicket: {ticket}\n",
        (Language::En, NoticeEvent::Exhausted) => "{contract_name}\n\nEvery on-call engineer was called and nobody has taken the alert yet. The monitoring centre follows it up.\n\nHost: {host}\nSeverity: {severity}\nSummary: {summary}\nTicket: {ticket}\n{detail}\n",
        (Language::En, NoticeEvent::Action) => "{contract_name}\n\nA maintenance action ran on the incident.\n\nResult: {detail}\n\nHost: {host}\nSummary: {summary}\nTicket: {ticket}\n",
        (Language::En, NoticeEvent::Recovery) => "{contract_name}\n\nThe alert has recovered.\n\nHost: {host}\nSummary: {summary}\nTicket: {ticket}\n",
        (Language::Ja, NoticeEvent::Occurrence) => "{contract_name} ご担当者様\n\n障害を検知しました。担当エンジニアに電話で連絡しています。\n\nホスト: {host}\n重要度: {severity}\n内容: {summary}\nチケット番号: {ticket}\n",
        (Language::Ja, NoticeEvent::Exhausted) => "{contract_name} ご担当者様\n\n担当エンジニア全員に電話しましたが、まだ対応の受付がありません。監視センターで引き続き対応します。\n\nホスト: {host}\n重要度: {severity}\n内容: {summary}\nチケット番号: {ticket}\n{detail}\n",
        (Language::Ja, NoticeEvent::Action) => "{contract_name} ご担当者様\n\n障害に対して復旧操作を実行しました。\n\n結果: {detail}\n\nホスト: {host}\n内容: {summary}\nチケット番号: {ticket}\n",
        (Language::Ja, NoticeEvent::Recovery) => "{contract_name} ご担当者様\n\n障害は復旧しました。\n\nホスト: {host}\n内容: {summary}\nチケット番号: {ticket}\n",
    }
}

/// Everything a message needs besides the notice.
pub struct Context<'a> {
    pub language: Language,
    pub contract: &'a str,
    pub contract_name: &'a str,
    pub ticket: &'a str,
    pub config: &'a NoticeConfig,
    pub sender: &'a Sender,
    /// This mail's outbox id (its Message-ID).
    pub outbox_id: &'a str,
    /// The Message-IDs of the incident's mails sent before, oldest first.
    pub earlier: &'a [String],
}

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("no recipients for the {0} notice")]
    NoRecipients(&'static str),
    #[error("the mail could not be built: {0}")]
    Build(#[from] lettre::error::Error),
}

/// The variables a notice's templates see: those of spoken messages.
pub fn variables(n: &Notice, ctx: &Context<'_>) -> BTreeMap<String, String> {
    // A value is at most this long in a body (a storm of labels must not
    // make a mail of megabytes).
    const MAX: usize = 2_000;
    let cut = |s: &str| s.chars().take(MAX).collect::<String>();
    let mut v: BTreeMap<String, String> = n
        .variables
        .iter()
        .map(|(k, val)| (k.clone(), cut(val)))
        .collect();
    for (k, val) in [
        ("host", n.host.as_str()),
        ("summary", &n.summary),
        ("severity", &n.severity),
        ("ticket", ctx.ticket),
        ("contract", ctx.contract),
        ("contract_name", ctx.contract_name),
        ("detail", &n.detail),
    ] {
        v.insert(k.to_string(), cut(val));
    }
    v
}

/// Build the MIME message of one notice.
pub fn build(n: &Notice, ctx: &Context<'_>) -> Result<Message, NoticeError> {
    let rule = ctx.config.rules.get(&n.event);
    let to = rule.map_or(&[][..], |r| r.to.as_slice());
    if to.is_empty() {
        return Err(NoticeError::NoRecipients(n.event.as_str()));
    }
    let vars = variables(n, ctx);
    let subject_t = rule
        .and_then(|r| r.subject.as_deref())
        .unwrap_or(default_subject(ctx.language, n.event));
    let body_t = rule
        .and_then(|r| r.body.as_deref())
        .unwrap_or(default_body(ctx.language, n.event));
    let subject = format!(
        "[{}] {}",
        header_safe(ctx.ticket, 40),
        header_safe(&render(subject_t, &vars), 160)
    );
    let text = render(body_t, &vars);
    let b = Message::builder().from(ctx.sender.from.clone());
    let b = match jis_subject(&subject, ctx.config.charset) {
        Some(h) => b.header(h),
        None => b.subject(subject),
    };
    let mut b = b
        .message_id(Some(message_id(
            ctx.outbox_id,
            &n.incident,
            &ctx.sender.domain,
        )))
        .date_now();
    for m in to {
        b = b.to(m.clone());
    }
    if let Some(last) = ctx.earlier.last() {
        b = b.in_reply_to(last.clone());
        // The first and the latest few: a long story keeps its root and
        // stays a short header.
        let mut refs: Vec<&String> = ctx.earlier.iter().take(1).collect();
        let tail = ctx.earlier.len().saturating_sub(9).max(1);
        refs.extend(ctx.earlier.iter().skip(tail));
        b = b.references(
            refs.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    Ok(b.singlepart(text_part(&text, ctx.config.charset))?)
}

/// A `Subject` already encoded as ISO-2022-JP encoded words (RFC 2047
/// and RFC 1468): lettre encodes a subject as UTF-8 only, and the
/// Japanese mail readers that ask for ISO-2022-JP bodies want the same
/// in the subject.
#[derive(Clone)]
struct JisSubject {
    raw: String,
    encoded: String,
}

impl lettre::message::header::Header for JisSubject {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Subject")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(JisSubject {
            raw: s.to_string(),
            encoded: s.to_string(),
        })
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        // Pre-encoded is safe here: the value is base64 encoded words
        // joined by CRLF + space, nothing of the alert's text verbatim.
        lettre::message::header::HeaderValue::dangerous_new_pre_encoded(
            Self::name(),
            self.raw.clone(),
            self.encoded.clone(),
        )
    }
}

/// The subject as ISO-2022-JP encoded words, when the contract asks, the
/// subject is not plain ASCII, and every character has a place in
/// ISO-2022-JP (otherwise lettre's UTF-8 encoding is used).
fn jis_subject(subject: &str, charset: Charset) -> Option<JisSubject> {
    use base64::Engine as _;
    if charset != Charset::Iso2022Jp || subject.is_ascii() {
        return None;
    }
    if encoding_rs::ISO_2022_JP.encode(subject).2 {
        return None;
    }
    // Each word is encoded on its own so it ends back in ASCII, and holds
    // at most 42 bytes: 56 base64 characters, a 74-character word.
    const MAX_BYTES: usize = 42;
    let b64 = |bytes: &[u8]| {
        format!(
            "=?ISO-2022-JP?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in subject.chars() {
        let mut next = chunk.clone();
        next.push(ch);
        let (bytes, _, _) = encoding_rs::ISO_2022_JP.encode(&next);
        if bytes.len() > MAX_BYTES && !chunk.is_empty() {
            words.push(b64(&encoding_rs::ISO_2022_JP.encode(&chunk).0));
            chunk.clear();
            chunk.push(ch);
        } else {
            chunk = next;
        }
    }
    if !chunk.is_empty() {
        words.push(b64(&encoding_rs::ISO_2022_JP.encode(&chunk).0));
    }
    Some(JisSubject {
        raw: subject.to_string(),
        encoded: words.join("\r\n "),
    })
}

/// The plain-text part. ISO-2022-JP when asked and every character has a
/// place in it; UTF-8 otherwise (an emoji in a summary must not be lost).
fn text_part(text: &str, charset: Charset) -> SinglePart {
    if charset == Charset::Iso2022Jp {
        let (bytes, _, unmappable) = encoding_rs::ISO_2022_JP.encode(text);
        if !unmappable {
            let long_line = bytes.split(|&b| b == b'\n').any(|l| l.len() > 900);
            let encoding = if long_line {
                ContentTransferEncoding::Base64
            } else {
                ContentTransferEncoding::SevenBit
            };
            // ISO-2022-JP is 7-bit ASCII by construction, so it is a String.
            let s = String::from_utf8_lossy(&bytes).into_owned();
            if let Ok(body) = Body::new_with_encoding(s, encoding) {
                return SinglePart::builder()
                    .header(
                        ContentType::parse("text/plain; charset=ISO-2022-JP").unwrap_or(
                            // A fixed, valid content type: the parse cannot fail.
                            ContentType::TEXT_PLAIN,
                        ),
                    )
                    .body(body);
            }
        }
    }
    SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(Body::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(charset: Charset) -> NoticeConfig {
        let mut rules = BTreeMap::new();
        rules.insert(
            NoticeEvent::Occurrence,
            NoticeRule {
                to: vec!["ops@example.com".parse().unwrap()],
                subject: None,
                body: None,
            },
        );
        NoticeConfig { charset, rules }
    }

    fn notice(summary: &str) -> Notice {
        Notice {
            event: NoticeEvent::Occurrence,
            incident: "in_abc".into(),
            host: "web-01".into(),
            severity: "critical".into(),
            summary: summary.into(),
            variables: BTreeMap::new(),
            detail: String::new(),
        }
    }

    fn build_with(n: &Notice, c: &NoticeConfig, earlier: &[String]) -> String {
        let sender = Sender {
            from: "callout@example.net".parse().unwrap(),
            domain: "example.net".into(),
        };
        let ctx = Context {
            language: Language::Ja,
            contract: "acme",
            contract_name: "ACME",
            ticket: "ACME-000001",
            config: c,
            sender: &sender,
            outbox_id: "mo_1",
            earlier,
        };
        String::from_utf8(build(n, &ctx).unwrap().formatted()).unwrap()
    }

    #[test]
    fn hostile_summary_never_adds_a_header() {
        let raw = build_with(
            &notice("down\r\nBcc: evil@example.org\r\n\r\nX"),
            &cfg(Charset::Utf8),
            &[],
        );
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(
            !head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc")),
            "{head}"
        );
        assert!(header_safe(&"x".repeat(500), 10).chars().count() == 10);
    }

    #[test]
    fn threading_names_the_earlier_mails() {
        let earlier = vec!["<a@x>".to_string(), "<b@x>".to_string()];
        let raw = build_with(&notice("s"), &cfg(Charset::Utf8), &earlier);
        assert!(raw.contains("In-Reply-To: <b@x>"), "{raw}");
        assert!(raw.contains("References: <a@x> <b@x>"), "{raw}");
        assert!(
            raw.contains("Message-ID: <mo_1.in_abc@example.net>"),
            "{raw}"
        );
    }

    #[test]
    fn iso_2022_jp_when_asked_utf8_when_it_cannot() {
        let raw = build_with(&notice("ディスク"), &cfg(Charset::Iso2022Jp), &[]);
        assert!(
            raw.to_ascii_lowercase().contains("charset=iso-2022-jp"),
            "{raw}"
        );
        // 7-bit: the JIS escape sequence is in the body as it is.
        assert!(raw.contains("\x1b$B"), "{raw}");
        let raw = build_with(&notice("emoji 🔥"), &cfg(Charset::Iso2022Jp), &[]);
        assert!(raw.to_ascii_lowercase().contains("charset=utf-8"), "{raw}");
        let subject = raw.lines().find(|l| l.starts_with("Subject: ")).unwrap();
        assert!(subject.contains("=?utf-8?b?"), "{raw}");
        assert!(!raw.contains("ISO-2022-JP?B?"), "{raw}");
    }

    #[test]
    fn iso_2022_jp_subject_is_encoded_words_that_decode_back() {
        use base64::Engine as _;
        let long = "ディスク使用率が95%です。".repeat(6);
        let raw = build_with(&notice(&long), &cfg(Charset::Iso2022Jp), &[]);
        let head = raw.split("\r\n\r\n").next().unwrap();
        let start = head.find("Subject: ").unwrap() + "Subject: ".len();
        // The header runs to the next line that is not a continuation.
        let mut value = String::new();
        for (i, line) in head[start..].split("\r\n").enumerate() {
            if i > 0 && !line.starts_with(' ') {
                break;
            }
            value.push_str(line.trim_start());
            value.push(' ');
        }
        let mut decoded = String::new();
        for w in value.split_whitespace() {
            assert!(w.len() <= 75, "{w}");
            let b = w
                .strip_prefix("=?ISO-2022-JP?B?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap_or_else(|| panic!("not an ISO-2022-JP word: {w}"));
            let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
            // Every word returns to ASCII at its end (RFC 1468).
            let last_escape = bytes.iter().rposition(|&b| b == 0x1b);
            assert!(
                last_escape.is_none_or(|i| bytes[i + 1..].starts_with(b"(B")),
                "{bytes:?}"
            );
            decoded.push_str(&encoding_rs::ISO_2022_JP.decode(&bytes).0);
        }
        assert_eq!(decoded, format!("[ACME-000001] 障害発生: web-01 {long}"));
    }
}

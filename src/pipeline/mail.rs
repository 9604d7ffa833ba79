//! Alert mails into [`Alert`]s: MIME decoding (mail-parser, with the
//! Japanese charsets through encoding_rs) and the contract's mail rules
//! (`[pipeline.mail]`, see `config.rs`).
//!
//! Pure: bytes, the contract and its rules in, one [`MailRead`] out. A
//! mail no rule understands, or one that cannot be decoded, comes back
//! as [`MailRead::Unparsed`] with the reason, for the caller to keep and
//! show; nothing is dropped here. Work is bounded whatever the bytes:
//! mails over [`MAX_RAW`], with more than [`MAX_PARTS`] MIME parts or
//! nested deeper than [`MAX_DEPTH`] are refused, and the regular
//! expressions see at most [`MAX_TEXT`] bytes of body.

use std::collections::BTreeMap;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use regex::Captures;

use super::alert::{Alert, Severity, Source, Status};
use super::config::{MailConfig, MailRule};

/// Larger mails are not parsed (the SMTP listener's `max_size` is
/// usually far below).
pub const MAX_RAW: usize = 32 << 20;
/// More MIME parts than this (all levels together) is a mail bomb.
pub const MAX_PARTS: usize = 100;
/// Multiparts and attached messages nested deeper than this are refused.
pub const MAX_DEPTH: usize = 10;
/// The body text the rules look at, in bytes (the rest is ignored).
pub const MAX_TEXT: usize = 64 << 10;
/// Subject and From are cut to this many bytes.
const MAX_HEADER: usize = 2048;
/// A captured value kept as a label is cut to this many bytes.
const MAX_LABEL: usize = 512;

/// What became of one mail.
#[derive(Debug, Clone, PartialEq)]
pub enum MailRead {
    Alert(Alert),
    /// Kept and shown to an operator, never dropped: `reason` says why
    /// no alert came out of it; `subject` and `from` as far as they could
    /// be decoded (empty when not).
    Unparsed {
        reason: String,
        subject: String,
        from: String,
    },
}

/// The parts of a mail the rules look at, decoded to UTF-8.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MailText {
    /// The From address (`user@host`), or the header as written when it
    /// has no address.
    pub from: String,
    pub subject: String,
    /// text/plain when there is one, else text/html with the tags
    /// removed; at most [`MAX_TEXT`] bytes.
    pub body: String,
    /// The Date header, epoch ms.
    pub date_ms: Option<i64>,
}

/// Decode a mail for the rules, or say why it cannot be. The error comes
/// with whatever subject and From could be read.
pub fn decode(raw: &[u8]) -> Result<MailText, (String, MailText)> {
    if raw.len() > MAX_RAW {
        return Err((
            format!(
                "mail of {} bytes is over the {MAX_RAW}-byte limit",
                raw.len()
            ),
            MailText::default(),
        ));
    }
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Err((
            "not a mail: no header could be read".into(),
            MailText::default(),
        ));
    };
    let mut text = MailText {
        from: from_of(&msg),
        subject: cut(msg.subject().unwrap_or("").trim(), MAX_HEADER).to_string(),
        body: String::new(),
        date_ms: msg.date().map(|d| d.to_timestamp().saturating_mul(1000)),
    };
    if msg.headers().is_empty() || !raw_has_header_block(raw) {
        return Err(("not a mail: no header could be read".into(), text));
    }
    if let Err(reason) = check_shape(&msg) {
        return Err((reason, text));
    }
    if let Some(cs) = unknown_encoded_word_charset(msg.header_raw("Subject").unwrap_or("")) {
        return Err((format!("the subject is in an unknown charset {cs:?}"), text));
    }
    if let Some(&id) = msg.text_body.first() {
        // The part mail-parser picked: text/plain, else text/html.
        let Some(part) = msg.parts.get(id as usize) else {
            return Err(("the mail's body part is missing".into(), text));
        };
        if let Some(cs) = part.content_type().and_then(|ct| ct.attribute("charset")) {
            if !known_charset(cs) {
                return Err((format!("the body is in an unknown charset {cs:?}"), text));
            }
        }
        if part.is_encoding_problem {
            return Err((
                "the body's transfer encoding (base64 or quoted-printable) does not decode".into(),
                text,
            ));
        }
        let body = match &part.body {
            PartType::Text(t) => cut(t, MAX_TEXT).to_string(),
            PartType::Html(h) => {
                let h = cut(h, 4 * MAX_TEXT);
                cut(&html_to_text(h), MAX_TEXT).to_string()
            }
            _ => String::new(),
        };
        text.body = body;
    }
    Ok(text)
}

/// Read one mail for `contract` with its mail rules. `id` becomes the
/// alert's id, `now_ms` its `received_ms`.
pub fn read_mail(
    raw: &[u8],
    contract: &str,
    cfg: &MailConfig,
    id: String,
    now_ms: i64,
) -> MailRead {
    let text = match decode(raw) {
        Ok(t) => t,
        Err((reason, t)) => {
            return MailRead::Unparsed {
                reason,
                subject: t.subject,
                from: t.from,
            }
        }
    };
    let unparsed = |reason: String| MailRead::Unparsed {
        reason,
        subject: text.subject.clone(),
        from: text.from.clone(),
    };
    if cfg.rules.is_empty() {
        return unparsed(format!("contract {contract} has no mail rules"));
    }
    let Some((rule, caps)) = cfg
        .rules
        .iter()
        .find_map(|r| apply(r, &text).map(|c| (r, c)))
    else {
        return unparsed(format!(
            "no mail rule matched ({} rules tried on From, Subject and the first {} bytes of body)",
            cfg.rules.len(),
            MAX_TEXT
        ));
    };
    let get = |name: &str| caps.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let Some(host) = get("host") else {
        return unparsed(format!(
            "the mail rule at line {} matched but captured no host",
            rule.line
        ));
    };
    let host = host.to_string();
    let state = get("state").map(str::to_string);
    let status = match &state {
        Some(s) if rule.recovery.is_match(s) => Status::Resolved,
        _ => Status::Firing,
    };
    let severity = get("severity").map_or(rule.severity, Severity::parse_or_warning);
    let service = match get("service") {
        Some(s) => s.to_string(),
        None => service_from_subject(&text.subject, &host, state.as_deref()),
    };
    let summary = get("summary").unwrap_or(&text.subject).to_string();
    let mut labels: BTreeMap<String, String> =
        caps.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert("host".into(), host.clone());
    labels.insert("service".into(), service.clone());
    labels.insert("mail_from".into(), text.from.clone());
    labels.insert("mail_subject".into(), text.subject.clone());
    labels.insert("mail_rule".into(), rule.line.to_string());
    MailRead::Alert(Alert {
        id,
        contract: contract.to_string(),
        source: Source::Mail,
        status,
        key: format!("{host}/{service}"),
        host,
        name: service,
        severity,
        summary,
        labels,
        starts_ms: text.date_ms,
        received_ms: now_ms,
    })
}

/// The named captures of a rule whose present expressions all match:
/// the first non-empty value of each name, looking at From, Subject,
/// then body.
fn apply(rule: &MailRule, text: &MailText) -> Option<BTreeMap<String, String>> {
    let mut caps = BTreeMap::new();
    for (re, hay) in [
        (&rule.from, &text.from),
        (&rule.subject, &text.subject),
        (&rule.body, &text.body),
    ] {
        let Some(re) = re else { continue };
        let c = re.captures(hay)?;
        collect(re, &c, &mut caps);
    }
    Some(caps)
}

fn collect(re: &regex::Regex, c: &Captures<'_>, into: &mut BTreeMap<String, String>) {
    for name in re.capture_names().flatten() {
        let Some(m) = c.name(name) else { continue };
        let v = cut(m.as_str().trim(), MAX_LABEL);
        if !v.is_empty() && !into.contains_key(name) {
            into.insert(name.to_string(), v.to_string());
        }
    }
}

/// The service when the rule captures none: the subject without the
/// host, the state word and bracketed tags, spaces collapsed, so a
/// problem mail and its recovery name the same service. `mail` when
/// nothing is left.
fn service_from_subject(subject: &str, host: &str, state: Option<&str>) -> String {
    let mut s = subject.to_string();
    for word in [Some(host), state].into_iter().flatten() {
        if !word.is_empty() {
            s = s.replacen(word, " ", 1);
        }
    }
    // Bracketed tags: [PROBLEM], 【障害】, (RECOVERY), ….
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for ch in s.chars() {
        match ch {
            '[' | '【' | '(' | '（' | '<' => depth += 1,
            ']' | '】' | ')' | '）' | '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    let words: Vec<&str> = out
        .split(|c: char| c.is_whitespace() || c == ':' || c == '：')
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_punctuation()))
        .collect();
    if words.is_empty() {
        "mail".to_string()
    } else {
        words.join(" ")
    }
}

fn from_of(msg: &Message<'_>) -> String {
    let first = msg.from().and_then(|a| a.first());
    let v = match first {
        Some(a) => match (&a.address, &a.name) {
            (Some(addr), _) => addr.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => String::new(),
        },
        None => msg.header_raw("From").unwrap_or("").trim().to_string(),
    };
    cut(&v, MAX_HEADER).to_string()
}

/// mail-parser reads a body without headers as a message too; a mail
/// needs at least one `Name:` line before the first empty line.
fn raw_has_header_block(raw: &[u8]) -> bool {
    let first = raw.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let name_end = first.iter().position(|&b| b == b':');
    name_end.is_some_and(|i| {
        i > 0
            && first[..i]
                .iter()
                .all(|b| b.is_ascii_graphic() && *b != b':')
    }) || first.starts_with(b"From ")
}

/// Refuse mail bombs and multiparts without a boundary: walks every part
/// of the mail and of attached messages without recursion.
fn check_shape(msg: &Message<'_>) -> Result<(), String> {
    let mut total = 0usize;
    // (message, part index, depth)
    let mut stack: Vec<(&Message<'_>, u32, usize)> = vec![(msg, 0, 0)];
    while let Some((m, id, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(format!("MIME parts nested deeper than {MAX_DEPTH} levels"));
        }
        let Some(part) = m.parts.get(id as usize) else {
            continue;
        };
        total += 1;
        if total > MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} MIME parts"));
        }
        let ct = part.content_type();
        if ct.is_some_and(|c| c.ctype().eq_ignore_ascii_case("multipart"))
            && ct.and_then(|c| c.attribute("boundary")).is_none()
        {
            return Err("a multipart part has no boundary".into());
        }
        match &part.body {
            PartType::Multipart(children) => {
                if children.len() > MAX_PARTS {
                    return Err(format!("more than {MAX_PARTS} MIME parts"));
                }
                for &c in children {
                    if c != id {
                        stack.push((m, c, depth + 1));
                    }
                }
            }
            PartType::Message(inner) => stack.push((inner, 0, depth + 1)),
            _ => {}
        }
    }
    Ok(())
}

/// A charset name mail-parser decodes (UTF-8 and its aliases are read
/// as UTF-8 without a decoder).
fn known_charset(cs: &str) -> bool {
    let l = cs.trim().trim_matches('"').to_ascii_lowercase();
    matches!(
        l.as_str(),
        "utf8"
            | "utf-8"
            | "unicode-1-1-utf-8"
            | "unicode11utf8"
            | "unicode20utf8"
            | "x-unicode20utf8"
    ) || charset_decoder(l.as_bytes()).is_some()
}

/// The first charset named by an RFC 2047 encoded word (`=?cs?B?…?=`)
/// in `raw` that is not known.
fn unknown_encoded_word_charset(raw: &str) -> Option<String> {
    let mut rest = raw;
    while let Some(i) = rest.find("=?") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find('?') else { break };
        let cs = &rest[..end];
        // RFC 2231 language suffix: `iso-2022-jp*ja`.
        let cs = cs.split('*').next().unwrap_or(cs);
        let looks_encoded = rest[end..].len() > 2
            && matches!(rest.as_bytes()[end + 1], b'B' | b'b' | b'Q' | b'q')
            && rest.as_bytes()[end + 2] == b'?';
        if looks_encoded && !cs.is_empty() && cs.len() < 64 && !known_charset(cs) {
            return Some(cut(cs, 64).to_string());
        }
        rest = &rest[end..];
    }
    None
}

/// HTML as the rules see it: tags removed, block ends and `<br>` as
/// line ends, table cells apart, `script` and `style` dropped, the
/// common entities decoded.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(MAX_TEXT));
    let mut rest = html;
    let mut skip_until: Option<&str> = None;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if skip_until.is_none() {
                push_text(&mut out, rest);
            }
            break;
        };
        if skip_until.is_none() {
            push_text(&mut out, &rest[..lt]);
        }
        rest = &rest[lt + 1..];
        let gt = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..gt];
        rest = rest.get(gt + 1..).unwrap_or("");
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let closing = tag.starts_with('/');
        if let Some(end) = skip_until {
            if closing && name == end {
                skip_until = None;
            }
            continue;
        }
        match name.as_str() {
            "script" | "style" | "head" if !closing => {
                skip_until = Some(match name.as_str() {
                    "script" => "script",
                    "style" => "style",
                    _ => "head",
                })
            }
            "br" | "p" | "div" | "tr" | "li" | "table" | "h1" | "h2" | "h3" | "h4" | "h5"
            | "h6" | "pre" | "blockquote" | "hr"
                if !out.ends_with('\n') && !out.is_empty() =>
            {
                out.push('\n')
            }
            "td" | "th" if !closing => out.push(' '),
            _ => {}
        }
    }
    out
}

fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = cut(rest, 12).find(';');
        let decoded = end.and_then(|e| {
            let ent = &rest[1..e];
            let ch = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => ent
                    .strip_prefix("#x")
                    .or_else(|| ent.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

#[cfg(test)]
#[path = "mail_tests.rs"]
mod tests;

//! SIP message framing, parsing and serialisation (RFC 3261 section 7).
//!
//! The parser is written for callout rather than taken from `rsip`: see
//! `docs/sip-parser.md` for the measurements behind that choice. It is
//! deliberately tolerant where RFC 3261 asks for tolerance (header folding,
//! LWS around separators, compact header names, comma-joined list headers)
//! and strict where a wrong guess would be dangerous (Content-Length,
//! start line, protocol version).
//!
//! Parsing never panics on any input; every failure is a [`ParseError`].

use std::borrow::Cow;
use std::fmt;

/// Largest datagram or stream message callout accepts. RFC 3261 allows
/// bigger over TCP, but nothing callout talks to needs it.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no blank line ends the header section")]
    Incomplete,
    #[error("message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("headers are not valid UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version {0:?}")]
    BadVersion(String),
    #[error("status code out of range")]
    BadStatus,
    #[error("malformed header line {0}")]
    BadHeader(usize),
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("more than one Content-Length")]
    MultipleContentLength,
    #[error("Content-Length says {declared} bytes but only {actual} follow")]
    BodyTooShort { declared: usize, actual: usize },
}

/// A SIP request method. Unknown extension methods are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Prack,
    Update,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Headers whose comma-separated values are separate entries (RFC 3261
/// section 7.3.1). Splitting them at parse time means the second value of
/// a joined Via is never lost.
const LIST_HEADERS: &[&str] = &[
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Accept",
];

/// The canonical spelling of a header name callout knows, compact forms
/// (RFC 3261 section 7.3.3) mapped onto theirs; compared without
/// allocating. It runs for every header parsed and every lookup, so it
/// goes by length first (at most five names share one).
fn canonical(name: &str) -> Option<&'static str> {
    let table: &[(&str, &str)] = match name.len() {
        2 => &[("to", "To")],
        3 => &[("via", "Via")],
        4 => &[("from", "From"), ("cseq", "CSeq")],
        5 => &[("event", "Event"), ("route", "Route"), ("allow", "Allow")],
        6 => &[
            ("accept", "Accept"),
            ("server", "Server"),
            ("reason", "Reason"),
        ],
        7 => &[
            ("call-id", "Call-ID"),
            ("contact", "Contact"),
            ("subject", "Subject"),
            ("require", "Require"),
            ("expires", "Expires"),
        ],
        8 => &[("refer-to", "Refer-To")],
        9 => &[("supported", "Supported")],
        10 => &[("user-agent", "User-Agent")],
        11 => &[
            ("referred-by", "Referred-By"),
            ("unsupported", "Unsupported"),
        ],
        12 => &[
            ("content-type", "Content-Type"),
            ("allow-events", "Allow-Events"),
            ("max-forwards", "Max-Forwards"),
            ("record-route", "Record-Route"),
        ],
        13 => &[
            ("authorization", "Authorization"),
            ("proxy-require", "Proxy-Require"),
        ],
        14 => &[("content-length", "Content-Length")],
        16 => &[
            ("content-encoding", "Content-Encoding"),
            ("www-authenticate", "WWW-Authenticate"),
        ],
        18 => &[("proxy-authenticate", "Proxy-Authenticate")],
        19 => &[("proxy-authorization", "Proxy-Authorization")],
        1 => {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'v' => Some("Via"),
                b'f' => Some("From"),
                b't' => Some("To"),
                b'i' => Some("Call-ID"),
                b'm' => Some("Contact"),
                b'l' => Some("Content-Length"),
                b'c' => Some("Content-Type"),
                b'e' => Some("Content-Encoding"),
                b'k' => Some("Supported"),
                b's' => Some("Subject"),
                b'o' => Some("Event"),
                b'r' => Some("Refer-To"),
                b'u' => Some("Allow-Events"),
                b'b' => Some("Referred-By"),
                _ => None,
            }
        }
        _ => return None,
    };
    // The canonical spelling itself is the usual case (our own requests,
    // most peers): an exact compare first, the case-blind one after.
    table
        .iter()
        .find(|(_, v)| *v == name)
        .or_else(|| table.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| *v)
}

/// `name` canonical, borrowed when it is a known one (the usual case).
fn canonical_cow(name: &str) -> Cow<'static, str> {
    match canonical(name) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(name.to_string()),
    }
}

/// A header's name: a known one is the table's own spelling, anything
/// else is kept (as received) in the values buffer.
#[derive(Debug, Clone, Copy)]
enum Name {
    Known(&'static str),
    Other(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    name: Name,
    value: (usize, usize),
}

/// Ordered header fields. Lookup is case-insensitive on canonical names.
///
/// Every name and value lives in one buffer: a message's headers cost
/// two allocations, not two per header (that was a quarter of a call
/// setup's instructions, in malloc and free).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    buf: String,
    list: Vec<Entry>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.list.len() == other.list.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    pub(crate) fn with_capacity(entries: usize, bytes: usize) -> Self {
        Headers {
            buf: String::with_capacity(bytes),
            list: Vec::with_capacity(entries),
        }
    }

    fn name_of(&self, e: &Entry) -> &str {
        match e.name {
            Name::Known(n) => n,
            Name::Other(a, b) => &self.buf[a..b],
        }
    }

    fn value_of(&self, e: &Entry) -> &str {
        &self.buf[e.value.0..e.value.1]
    }

    fn name_entry(&mut self, name: &str) -> Name {
        match canonical(name) {
            Some(c) => Name::Known(c),
            None => self.other_name(name),
        }
    }

    fn other_name(&mut self, name: &str) -> Name {
        let a = self.buf.len();
        self.buf.push_str(name);
        Name::Other(a, self.buf.len())
    }

    fn push_entry(&mut self, name: Name, value: &str) {
        let a = self.buf.len();
        self.buf.push_str(value);
        let value = (a, self.buf.len());
        self.list.push(Entry { name, value });
    }

    pub fn push(&mut self, name: &str, value: impl AsRef<str>) {
        let name = self.name_entry(name);
        self.push_entry(name, value.as_ref());
    }

    /// As [`Headers::push`], the value the concatenation of `parts`,
    /// written straight into the buffer: the requests a call sends are
    /// built from its fixed pieces without the `fmt` machinery.
    pub fn push_parts(&mut self, name: &str, parts: &[&str]) {
        let name = self.name_entry(name);
        let a = self.buf.len();
        for p in parts {
            self.buf.push_str(p);
        }
        let value = (a, self.buf.len());
        self.list.push(Entry { name, value });
    }

    /// As [`Headers::push`], the value formatted straight into the
    /// buffer (no `String` per header built with `format!`).
    pub fn push_fmt(&mut self, name: &str, value: fmt::Arguments<'_>) {
        let name = self.name_entry(name);
        let a = self.buf.len();
        let _ = fmt::Write::write_fmt(&mut self.buf, value);
        let value = (a, self.buf.len());
        self.list.push(Entry { name, value });
    }

    fn matches(&self, e: &Entry, canon: &str, known: bool) -> bool {
        match e.name {
            // Canonical spellings compare exactly; an unknown name never
            // equals a known one.
            Name::Known(n) => known && n == canon,
            Name::Other(a, b) => !known && self.buf[a..b].eq_ignore_ascii_case(canon),
        }
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        let known = canonical(name);
        let canon = known.unwrap_or(name);
        self.list
            .iter()
            .find(|e| self.matches(e, canon, known.is_some()))
            .map(|e| self.value_of(e))
    }

    /// Every value of `name`, in message order.
    pub fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let known = canonical(name).is_some();
        let canon = canonical_cow(name);
        self.list
            .iter()
            .filter(move |e| self.matches(e, &canon, known))
            .map(move |e| self.value_of(e))
    }

    pub fn count(&self, name: &str) -> usize {
        self.all(name).count()
    }

    /// Drop every `name` (its bytes stay in the buffer, unreferenced).
    pub fn remove(&mut self, name: &str) {
        let known = canonical(name);
        let canon = known.unwrap_or(name);
        let keep: Vec<bool> = self
            .list
            .iter()
            .map(|e| !self.matches(e, canon, known.is_some()))
            .collect();
        let mut it = keep.into_iter();
        self.list.retain(|_| it.next().unwrap_or(true));
    }

    /// (name, value) of every field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list
            .iter()
            .map(move |e| (self.name_of(e), self.value_of(e)))
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

fn write_common(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Written in place: no String (nor `fmt`) per message for the figure.
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// `n` in decimal, in the tail of `digits`: what `write!` gives,
/// without `fmt` (every message carries a Content-Length and a CSeq).
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &str {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only: never the default.
    std::str::from_utf8(&digits[i..]).unwrap_or_default()
}

/// `n` in decimal, appended.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0; 20]).as_bytes());
}

/// `n` in decimal, appended to a `String`.
pub(crate) fn push_decimal_str(out: &mut String, n: u64) {
    out.push_str(decimal(n, &mut [0; 20]));
}

impl Headers {
    /// Bytes the fields take serialised, near enough to size a buffer.
    fn size_hint(&self) -> usize {
        self.buf.len() + self.list.len() * 20 + 32
    }
}

impl Request {
    fn size_hint(&self) -> usize {
        32 + self.uri.len() + self.headers.size_hint() + self.body.len()
    }

    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Serialise with a Content-Length that always matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_common(&mut out, &self.headers, &self.body);
        out
    }
}

impl Response {
    /// A response to `req` (RFC 3261 8.2.6.2): Via, From, Call-ID and CSeq
    /// copied, To copied with `to_tag` added when it has none.
    pub fn for_request(req: &Request, code: u16, to_tag: Option<&str>) -> Response {
        Response::for_headers(&req.headers, code, to_tag)
    }

    /// As [`Response::for_request`], from the request's headers alone.
    pub fn for_headers(h: &Headers, code: u16, to_tag: Option<&str>) -> Response {
        let mut headers = Headers::new();
        for v in h.all("Via") {
            headers.push("Via", v);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = h.get(name) {
                let mut v = v.to_string();
                if name == "To" && code > 100 {
                    if let Some(tag) = to_tag {
                        let has_tag = super::header::NameAddr::parse(&v)
                            .map(|a| a.tag().is_some())
                            .unwrap_or(true);
                        if !has_tag {
                            v.push_str(";tag=");
                            v.push_str(tag);
                        }
                    }
                }
                headers.push(name, v);
            }
        }
        Response {
            code,
            reason: reason_phrase(code).to_string(),
            headers,
            body: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(64 + self.reason.len() + self.headers.size_hint() + self.body.len());
        out.extend_from_slice(b"SIP/2.0 ");
        push_decimal(&mut out, u64::from(self.code));
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_common(&mut out, &self.headers, &self.body);
        out
    }
}

/// Standard reason phrase for the codes callout sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// Where the header section ends: (offset of the first body byte).
fn header_end(buf: &[u8]) -> Option<usize> {
    // CRLFCRLF is the rule; bare LF LF is tolerated (RFC 3261 7.5 asks
    // implementations to accept LF-only line ends).
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Strip leading CRLFs: RFC 3261 7.5 says to ignore them before a start
/// line (keep-alives on streams).
fn skip_leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// Stream framing, phase one: is a whole message at the front of `buf`?
/// Returns its length in bytes (including leading CRLFs), or
/// `Err(Incomplete)` when more bytes are needed. A stream message must
/// carry Content-Length (RFC 3261 18.3); without one the body is empty.
pub fn frame_len(buf: &[u8]) -> Result<usize, ParseError> {
    let skip = skip_leading_crlf(buf);
    let rest = &buf[skip..];
    let Some(end) = header_end(rest) else {
        if rest.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        return Err(ParseError::Incomplete);
    };
    let head = std::str::from_utf8(&rest[..end]).map_err(|_| ParseError::NotUtf8)?;
    let lines = head_lines(head)?;
    let (_, headers) = split_head(&lines)?;
    let cl = content_length(&headers)?.unwrap_or(0);
    let total = skip + end + cl;
    if total > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < total {
        return Err(ParseError::Incomplete);
    }
    Ok(total)
}

/// Unfold the header section into logical lines: the start line, then
/// the headers. Continuation lines (starting with SP or HT) are joined to
/// the previous line with one space. Lines are borrowed from the message
/// unless a continuation line had to be joined (rare), so a
/// message costs one allocation here rather than one per line.
fn head_lines(head: &str) -> Result<Vec<Cow<'_, str>>, ParseError> {
    let mut lines: Vec<Cow<'_, str>> = Vec::with_capacity(16);
    for raw in head.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        if raw.contains('\r') {
            return Err(if lines.is_empty() {
                ParseError::BadStartLine
            } else {
                ParseError::BadHeader(lines.len() + 1)
            });
        }
        if raw.starts_with(' ') || raw.starts_with('\t') {
            if lines.len() < 2 {
                return Err(ParseError::BadStartLine);
            }
            if let Some(prev) = lines.last_mut() {
                let prev = prev.to_mut();
                prev.push(' ');
                prev.push_str(raw.trim_start());
            }
        } else {
            lines.push(Cow::Borrowed(raw));
        }
    }
    Ok(lines)
}

/// The start line and each header's (name, value), borrowed from `lines`.
fn split_head<'a>(lines: &'a [Cow<'_, str>]) -> Result<HeadParts<'a>, ParseError> {
    let (start, rest) = lines.split_first().ok_or(ParseError::BadStartLine)?;
    let mut headers = Vec::with_capacity(rest.len());
    for (idx, line) in rest.iter().enumerate() {
        let line: &str = line;
        let colon = line.find(':').ok_or(ParseError::BadHeader(idx + 2))?;
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ParseError::BadHeader(idx + 2));
        }
        let value = line[colon + 1..].trim_matches([' ', '\t']);
        headers.push((name, value));
    }
    Ok((&**start, headers))
}

/// A start line and its headers' (name, value) pairs.
type HeadParts<'a> = (&'a str, Vec<(&'a str, &'a str)>);

pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn content_length(headers: &[(&str, &str)]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for &(name, value) in headers {
        if canonical(name) == Some("Content-Length") {
            note_content_length(&mut found, value)?;
        }
    }
    Ok(found)
}

/// One Content-Length `value`: the first, and digits only.
fn note_content_length(found: &mut Option<usize>, value: &str) -> Result<(), ParseError> {
    if found.is_some() {
        return Err(ParseError::MultipleContentLength);
    }
    if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    *found = Some(value.parse().map_err(|_| ParseError::BadContentLength)?);
    Ok(())
}

/// Split a header value on commas that are outside quotes and `<...>`.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            continue;
        }
        match b {
            b'"' => in_quote = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// Parse one whole message (a UDP datagram, or a frame cut by
/// [`frame_len`]). On a datagram, bytes beyond Content-Length are
/// discarded (RFC 3261 18.3); without Content-Length the body is the rest.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    if buf.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let skip = skip_leading_crlf(buf);
    let buf = &buf[skip..];
    let end = header_end(buf).ok_or(ParseError::Incomplete)?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::NotUtf8)?;
    let lines = head_lines(head)?;
    let (start, raw_headers) = split_head(&lines)?;
    // One pass: each name is looked up once, for the table and for
    // Content-Length.
    let mut headers = Headers::with_capacity(raw_headers.len() + 4, head.len());
    let mut cl = None;
    for (name, value) in raw_headers {
        let canon = canonical(name);
        let entry = match canon {
            Some(c) => Name::Known(c),
            None => headers.other_name(name),
        };
        if canon == Some("Content-Length") {
            note_content_length(&mut cl, value)?;
        }
        if canon.is_some_and(|c| LIST_HEADERS.contains(&c)) {
            if !value.contains(',') {
                // What split_list gives for a single value, without its Vec.
                let v = value.trim();
                if !v.is_empty() {
                    headers.push_entry(entry, v);
                }
                continue;
            }
            for part in split_list(value) {
                headers.push_entry(entry, part);
            }
        } else {
            headers.push_entry(entry, value);
        }
    }
    let available = &buf[end..];
    let body = match cl {
        Some(cl) if cl > available.len() => {
            return Err(ParseError::BodyTooShort {
                declared: cl,
                actual: available.len(),
            })
        }
        Some(cl) => available[..cl].to_vec(),
        None => available.to_vec(),
    };
    parse_start(start, headers, body)
}

fn parse_start(start: &str, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    if let Some(rest) = start.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = rest.splitn(3, ' ');
        let version = parts.next().ok_or(ParseError::BadStartLine)?;
        if version != "2.0" {
            return Err(ParseError::BadVersion(format!("SIP/{version}")));
        }
        let code = parts.next().ok_or(ParseError::BadStartLine)?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStatus);
        }
        let code: u16 = code.parse().map_err(|_| ParseError::BadStatus)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatus);
        }
        let reason = parts.next().unwrap_or("").to_string();
        return Ok(Message::Response(Response {
            code,
            reason,
            headers,
            body,
        }));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP
    // between elements (RFC 4475 3.1.2.8-10).
    let mut parts = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ParseError::BadStartLine);
    }
    if uri.is_empty() || uri.starts_with('<') || !uri.contains(':') {
        return Err(ParseError::BadStartLine);
    }
    if !version.starts_with("SIP/") {
        return Err(ParseError::BadStartLine);
    }
    if version != "SIP/2.0" {
        return Err(ParseError::BadVersion(version.to_string()));
    }
    Ok(Message::Request(Request {
        method: Method::parse(method),
        uri: uri.to_string(),
        headers,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_and_compact_names() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1 ,\r\n SIP/2.0/UDP g;branch=z9hG4bK2\r\ni: abc\r\nl: 0\r\n\r\n";
        let Message::Request(r) = parse(msg).unwrap() else {
            panic!("request expected")
        };
        assert_eq!(r.headers.count("Via"), 2);
        assert_eq!(r.headers.get("call-id"), Some("abc"));
    }

    #[test]
    fn content_length_rules() {
        let short = b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(parse(short), Err(ParseError::BodyTooShort { .. })));
        let extra = b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nabc";
        let Message::Response(r) = parse(extra).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"ab");
        let neg = b"SIP/2.0 200 OK\r\nContent-Length: -2\r\n\r\n";
        assert_eq!(parse(neg), Err(ParseError::BadContentLength));
    }

    #[test]
    fn stream_framing() {
        let msg = b"\r\nSIP/2.0 200 OK\r\nl: 3\r\n\r\nabcSIP/2.0";
        assert_eq!(frame_len(msg), Ok(29));
        assert_eq!(frame_len(&msg[..10]), Err(ParseError::Incomplete));
    }

    #[test]
    fn a_bare_cr_in_a_header_is_refused() {
        let msg = b"SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a\rInjected: 1\", nonce=\"n\"\r\n\r\n";
        assert_eq!(parse(msg), Err(ParseError::BadHeader(2)));
    }

    #[test]
    fn list_split_respects_quotes() {
        let v = r#""a, b" <sip:x@y>;q=1, <sip:z@w,>"#;
        assert_eq!(split_list(v).len(), 2);
    }

    #[test]
    fn serialise_round_trip() {
        let mut r = Request::new(Method::Invite, "sip:bob@127.0.0.1");
        r.headers
            .push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx");
        r.headers.push("Call-ID", "c1");
        r.body = b"v=0\r\n".to_vec();
        let bytes = r.to_bytes();
        let Message::Request(back) = parse(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(back.body, r.body);
        assert_eq!(back.headers.get("Content-Length"), Some("5"));
    }

    #[test]
    fn decimals_and_start_lines_as_fmt_wrote_them() {
        for n in [0u64, 7, 10, 487, 65_535, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
            let mut s = String::from("x");
            push_decimal_str(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        let mut r = Response::for_headers(&Headers::new(), 487, None);
        r.body = b"abc".to_vec();
        assert_eq!(
            r.to_bytes(),
            b"SIP/2.0 487 Request Terminated\r\nContent-Length: 3\r\n\r\nabc"
        );
        let mut h = Headers::new();
        h.push_parts("cseq", &["12", " ", "BYE"]);
        assert_eq!(h.get("CSeq"), Some("12 BYE"));
    }

    #[test]
    fn headers_share_one_buffer_and_still_compare_by_content() {
        let mut h = Headers::new();
        h.push("x-trace", "1");
        h.push_fmt("CSeq", format_args!("{} {}", 7, "INVITE"));
        h.push("v", "SIP/2.0/UDP a");
        h.push("X-Trace", "2");
        assert_eq!(h.get("X-TRACE"), Some("1"));
        assert_eq!(h.all("x-Trace").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.get("cseq"), Some("7 INVITE"));
        assert_eq!(h.get("Via"), h.get("v"));
        // An unknown name never matches a known one of another spelling.
        assert_eq!(h.get("trace"), None);
        h.remove("x-trace");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("CSeq", "7 INVITE"), ("Via", "SIP/2.0/UDP a")]
        );
        // Same fields, another buffer (the removed bytes are still in h's).
        let mut g = Headers::new();
        g.push("cseq", "7 INVITE");
        g.push("Via", "SIP/2.0/UDP a");
        assert_eq!(h, g);
        g.push("Via", "SIP/2.0/UDP b");
        assert_ne!(h, g);
    }
}

//! Checks a parsed inbound request must pass before any handler sees it
//! (RFC 3261 8.2 and the RFC 4475 cases), and the salvage path that lets
//! callout answer 400 to a request too broken to parse.

use super::header::{CSeq, NameAddr, Via};
use super::message::{Headers, Method, ParseError, Request};

/// A request callout refuses, with the response code to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
}

impl Rejection {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

/// SIP extensions callout implements (none beyond RFC 3261 yet).
pub const SUPPORTED_EXTENSIONS: &[&str] = &[];

/// Validate the headers every request needs. `Ok` carries the parsed top
/// Via and CSeq so callers do not parse them twice.
pub fn validate_request(req: &Request) -> Result<(Via, CSeq), Rejection> {
    let h = &req.headers;
    let via = h
        .get("Via")
        .ok_or_else(|| Rejection::new(400, "Missing Via"))
        .and_then(|v| Via::parse(v).map_err(|_| Rejection::new(400, "Malformed Via")))?;
    if via.version != "2.0" {
        return Err(Rejection::new(505, "Version Not Supported"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        match h.count(name) {
            0 => return Err(Rejection::new(400, format!("Missing {name}"))),
            1 => {}
            _ => return Err(Rejection::new(400, format!("Multiple {name}"))),
        }
    }
    // The count checks above guarantee one value of each.
    for name in ["From", "To"] {
        if NameAddr::parse(h.get(name).unwrap_or_default()).is_err() {
            return Err(Rejection::new(400, format!("Malformed {name}")));
        }
    }
    for c in h.all("Contact") {
        if c != "*" && NameAddr::parse(c).is_err() {
            return Err(Rejection::new(400, "Malformed Contact"));
        }
    }
    for name in ["Via", "Route", "Record-Route"] {
        if name == "Via" {
            if h.all("Via").any(|v| Via::parse(v).is_err()) {
                return Err(Rejection::new(400, "Malformed Via"));
            }
        } else if h.all(name).any(|v| NameAddr::parse(v).is_err()) {
            return Err(Rejection::new(400, format!("Malformed {name}")));
        }
    }
    let cseq = CSeq::parse(h.get("CSeq").unwrap_or_default())
        .map_err(|_| Rejection::new(400, "Malformed CSeq"))?;
    if cseq.method != req.method {
        return Err(Rejection::new(400, "CSeq method does not match"));
    }
    if let Some(mf) = h.get("Max-Forwards") {
        match mf.parse::<u32>() {
            Ok(n) if n <= 255 => {}
            _ => return Err(Rejection::new(400, "Malformed Max-Forwards")),
        }
    }
    if h.get("Call-ID")
        .is_some_and(|c| c.is_empty() || c.contains(char::is_whitespace))
    {
        return Err(Rejection::new(400, "Malformed Call-ID"));
    }
    let scheme = req
        .uri
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel") {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }
    // RFC 3261 19.1.5: header components are not allowed in a
    // Request-URI (RFC 4475 escruri).
    // The user part may contain '?', so only look after the '@'.
    let hostpart = req
        .uri
        .rsplit_once('@')
        .map_or(req.uri.as_str(), |(_, h)| h);
    if req.uri.contains(char::is_whitespace) || (scheme != "tel" && hostpart.contains('?')) {
        return Err(Rejection::new(400, "Malformed Request-URI"));
    }
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<&str> = h
            .all("Require")
            .filter(|e| !SUPPORTED_EXTENSIONS.contains(e))
            .collect();
        if !unsupported.is_empty() {
            return Err(Rejection::new(420, unsupported.join(", ")));
        }
    }
    Ok((via, cseq))
}

/// The headers needed to answer a request that failed to parse.
#[derive(Debug, Clone)]
pub struct Salvaged {
    pub method: Method,
    pub headers: Headers,
    pub error: ParseError,
}

/// Best-effort read of a broken request's routing headers, so a 400 can be
/// sent where RFC 3261 8.2 says one should be. Returns `None` for
/// responses and for anything without a usable Via, Call-ID, From, To and
/// CSeq: those are dropped and counted by the caller.
pub fn salvage(buf: &[u8], error: ParseError) -> Option<Salvaged> {
    let text = String::from_utf8_lossy(buf);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim_start_matches(['\r', '\n']);
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let raw = raw.trim_end_matches('\r');
        // Never echo a bare CR back in our 400 (see `message::parse`).
        if raw.contains('\r') {
            if lines.is_empty() {
                return None;
            }
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(prev) = lines.last_mut() {
                prev.push(' ');
                prev.push_str(raw.trim());
            }
        } else {
            lines.push(raw.to_string());
        }
    }
    let start = lines.first()?;
    if start.starts_with("SIP/") {
        return None;
    }
    let method = Method::parse(start.split_whitespace().next()?);
    let mut headers = Headers::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if let Some(canon) = ["Via", "From", "To", "Call-ID", "CSeq"]
            .into_iter()
            .find(|c| {
                let mut probe = Headers::new();
                probe.push(name, "");
                probe.get(c).is_some()
            })
        {
            if canon == "Via" {
                // Only the top Via matters for the response.
                if headers.get("Via").is_none() {
                    let first = super::message::split_list(value).first().copied()?;
                    Via::parse(first).ok()?;
                    headers.push("Via", first);
                }
            } else if headers.get(canon).is_none() {
                headers.push(canon, value);
            }
        }
    }
    for needed in ["Via", "From", "To", "Call-ID", "CSeq"] {
        headers.get(needed)?;
    }
    Some(Salvaged {
        method,
        headers,
        error,
    })
}

//! SIP transports (RFC 3261 18): which one a request takes, and the
//! framing of messages on a stream (TCP, TLS), where only Content-Length
//! says where a message ends. Sans-IO: the driver owns the sockets and
//! connections (`src/driver/stream.rs`).

use std::path::PathBuf;

use super::header::{param, SipUri};

/// The transport of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }

    /// The transport in a Via's sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// `;transport=` for our Contact: empty for UDP, the default.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a URI asks for: `sips:` means TLS, `;transport=tcp|tls|udp` names
/// one; `None` when it says nothing (or names one we do not have, which
/// [`choose`] refuses).
pub fn from_uri(uri: &SipUri) -> Result<Option<Transport>, TransportError> {
    named(uri.scheme == "sips", param(&uri.params, "transport"))
}

/// [`from_uri`] from the scheme and the `transport` parameter.
fn named(sips: bool, transport: Option<&str>) -> Result<Option<Transport>, TransportError> {
    let named = match transport {
        None => None,
        Some(t) if t.eq_ignore_ascii_case("udp") => Some(Transport::Udp),
        Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
        Some(t) if t.eq_ignore_ascii_case("tls") => Some(Transport::Tls),
        Some(t) => return Err(TransportError::Unsupported(t.to_ascii_lowercase())),
    };
    if sips {
        // RFC 3261 26.2.2: a SIPS URI is TLS end to end, whatever the
        // transport parameter; `transport=udp` contradicts it.
        return match named {
            Some(Transport::Udp) => Err(TransportError::Conflict {
                uri: "sips",
                trunk: Transport::Udp,
            }),
            _ => Ok(Some(Transport::Tls)),
        };
    }
    Ok(named)
}

/// Why a call cannot be sent as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("transport {0:?} is not supported (udp, tcp, tls)")]
    Unsupported(String),
    #[error("the URI asks for {uri} but the trunk's transport is {trunk}: not sending it over a weaker transport")]
    Conflict { uri: &'static str, trunk: Transport },
}

/// The transport of a call: the trunk's when it names one, else the URI's,
/// else UDP. A URI asking for TLS (or TCP) is never sent over something
/// weaker because the trunk said so.
pub fn choose(trunk: Option<Transport>, uri: &SipUri) -> Result<(Transport, bool), TransportError> {
    let asked = from_uri(uri)?;
    let t = match (trunk, asked) {
        (Some(t), None) => t,
        (None, Some(a)) => a,
        (None, None) => Transport::Udp,
        (Some(t), Some(a)) if rank(t) >= rank(a) => t,
        (Some(t), Some(a)) => {
            return Err(TransportError::Conflict {
                uri: a.name(),
                trunk: t,
            })
        }
    };
    // RFC 3261 18.1.1: a large request may move to TCP unless the
    // transport was named.
    let may_upgrade = t == Transport::Udp && trunk.is_none() && asked.is_none();
    Ok((t, may_upgrade))
}

fn rank(t: Transport) -> u8 {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

/// RFC 3261 18.1.1: requests within 200 bytes of a 1500-byte path MTU
/// (1300 bytes) go over TCP when the transport was not named.
pub const UDP_MTU_LIMIT: usize = 1300;

/// A request over the limit, moved to TCP: its top Via now says TCP.
/// `None` when `bytes` is not such a request (a response, or small).
pub fn upgrade_large_request(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() <= UDP_MTU_LIMIT || bytes.starts_with(b"SIP/2.0") {
        return None;
    }
    rewrite_via(bytes, Transport::Udp, Transport::Tcp)
}

/// The request with its first Via's transport changed from `from` to `to`.
pub fn rewrite_via(bytes: &[u8], from: Transport, to: Transport) -> Option<Vec<u8>> {
    let needle = format!("SIP/2.0/{} ", from.via_name());
    let head_end = find(bytes, b"\r\n\r\n")?;
    let at = find(&bytes[..head_end], needle.as_bytes())?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(format!("SIP/2.0/{} ", to.via_name()).as_bytes());
    out.extend_from_slice(&bytes[at + needle.len()..]);
    Some(out)
}

/// The transport the next hop of an in-dialog request we send names: its
/// first Route's URI, else its Request-URI (`;transport=`, `sips:`) when
/// that is not `initial`, the target the call was placed to (whose
/// transport was chosen with the trunk's). `None` for responses and URIs
/// that name none (the call's own transport applies).
///
/// It runs for every request sent: the head is read line by line (a
/// `memchr` per line) and the URI in place, without allocating.
pub fn next_hop(bytes: &[u8], initial: &str) -> Option<Transport> {
    hop_uri(bytes, initial).and_then(uri_transport)
}

/// The URI [`next_hop`] reads the transport from: the first Route's, or
/// the Request-URI when that is not `initial`; `None` when neither
/// applies (or the request is not one).
fn hop_uri<'a>(bytes: &'a [u8], initial: &str) -> Option<&'a str> {
    if bytes.starts_with(b"SIP/2.0") {
        return None;
    }
    // The head is ours and ASCII; a body that is not UTF-8 ends the text
    // where it starts, after the head. Only the head is checked: the
    // lines read stop at its blank line, and the SDP body was half of
    // the bytes checked.
    let head = find(bytes, b"\r\n\r\n").map_or(bytes, |end| &bytes[..end + 4]);
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let (req_uri, route) = request_route(text)?;
    match route {
        Some(r) => super::header::NameAddrRef::parse(r).ok().map(|a| a.uri),
        None if req_uri == initial => None,
        None => Some(req_uri),
    }
}

/// What a next hop's URI names (`;transport=`, `sips:`), if anything.
fn uri_transport(uri: &str) -> Option<Transport> {
    let uri = super::header::SipUriRef::parse(uri).ok()?;
    named(uri.is_sips(), uri.params.get("transport").as_deref()).ok()?
}

/// A call's last next-hop URI and the transport it names: its ACK and BYE
/// go to the same remote target, read once rather than for each.
pub type HopMemo = Option<(Box<str>, Option<Transport>)>;

/// The Request-URI and first Route entry of a request callout serialised
/// (one line per header, no folding), read off its lines up to the blank
/// one that ends the head.
fn request_route(text: &str) -> Option<(&str, Option<&str>)> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut start = lines.next()?.split(' ');
    let (Some(_), Some(uri), Some(_), None) =
        (start.next(), start.next(), start.next(), start.next())
    else {
        return None;
    };
    let route = lines.take_while(|l| !l.is_empty()).find_map(|line| {
        // Most lines are not a Route: one byte tells (the name is
        // `Route`, any case, then optional blanks and the colon).
        if line.len() < 6 || !line.as_bytes()[0].eq_ignore_ascii_case(&b'r') {
            return None;
        }
        let (name, value) = line.split_once(':')?;
        name.trim_end()
            .eq_ignore_ascii_case("Route")
            .then(|| super::message::split_list(value.trim()).into_iter().next())
            .flatten()
    });
    Some((uri, route))
}

/// The transport of a request of a call over `leg` placed to `initial`:
/// what the next hop names, except that a TLS call never leaves TLS (a
/// SIPS dialog stays SIPS, RFC 3261 26.2.2), with the Via rewritten to
/// match.
pub fn for_request(leg: Transport, initial: &str, bytes: Vec<u8>) -> (Transport, Vec<u8>) {
    for_request_memo(leg, initial, bytes, &mut None)
}

/// As [`for_request`], the URI's transport looked up in `memo` (the
/// call's last one) before it is parsed, and kept there.
pub fn for_request_memo(
    leg: Transport,
    initial: &str,
    bytes: Vec<u8>,
    memo: &mut HopMemo,
) -> (Transport, Vec<u8>) {
    if leg == Transport::Tls {
        return (leg, bytes);
    }
    let hop = match hop_uri(&bytes, initial) {
        None => None,
        Some(uri) => match memo.as_ref() {
            Some((seen, hop)) if **seen == *uri => *hop,
            _ => {
                let hop = uri_transport(uri);
                *memo = Some((uri.into(), hop));
                hop
            }
        },
    };
    match hop {
        Some(hop) if hop != leg => match rewrite_via(&bytes, leg, hop) {
            Some(b) => (hop, b),
            None => (leg, bytes),
        },
        _ => (leg, bytes),
    }
}

/// First position of `needle` in `hay`. Runs over every message sent:
/// it jumps between occurrences of the needle's first byte rather than
/// comparing a window at each position (a `memcmp` call per byte).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        at += hay[at..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        if hay[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// RFC 3261 8.1.3.1: a request the transport could not deliver (no
/// connection, TLS handshake refused) is treated as if a 503 came back,
/// so the call ends now rather than at Timer B. `None` for responses, ACK
/// and what does not parse.
pub fn transport_error_response(bytes: &[u8]) -> Option<Vec<u8>> {
    match super::message::parse(bytes).ok()? {
        super::message::Message::Request(req) if req.method != super::message::Method::Ack => {
            let mut r = super::message::Response::for_request(&req, 503, None);
            r.reason = "Service Unavailable (transport error)".into();
            Some(r.to_bytes())
        }
        _ => None,
    }
}

/// TLS settings of a trunk: whom the certificate must name, and the trust
/// anchors (the public roots unless `ca_file`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// The name the peer's certificate must carry (the trunk's host).
    pub server_name: String,
    /// PEM CA certificates to trust instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, when the trunk asks for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A trunk's transport with its TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkTransport {
    /// `None`: not configured (the URI decides, else UDP).
    pub transport: Option<Transport>,
    pub tls: Option<TlsSettings>,
    /// SRTP (SDES) for the calls; `None`: required on TLS, off otherwise.
    pub srtp: Option<crate::media::srtp::SrtpMode>,
}

/// Largest header block accepted on a stream.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest body accepted on a stream.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a stream's framing is broken; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header block longer than {MAX_HEADER_BYTES} bytes")]
    HeadersTooLong,
    #[error("no Content-Length (required on a stream)")]
    NoContentLength,
    #[error("malformed or conflicting Content-Length")]
    BadContentLength,
    #[error("Content-Length {0} over the limit of {MAX_BODY_BYTES}")]
    BodyTooLarge(usize),
}

/// Splits a byte stream into SIP messages by Content-Length, in two
/// phases: first check that a whole message is buffered (headers end,
/// then the body's length), then hand it on to be parsed.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    /// After an error the stream cannot be resynchronised: close it.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        // RFC 5626 keep-alives (CRLF) between messages are skipped.
        let lead = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.buf.drain(..lead);
        let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEADER_BYTES {
                return Err(FramingError::HeadersTooLong);
            }
            return Ok(None);
        };
        if head_end > MAX_HEADER_BYTES {
            return Err(FramingError::HeadersTooLong);
        }
        let body_len = content_length(&self.buf[..head_end])?;
        if body_len > MAX_BODY_BYTES {
            return Err(FramingError::BodyTooLarge(body_len));
        }
        let total = head_end + 4 + body_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

/// The Content-Length (or `l`) of a header block; several must agree.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let text = std::str::from_utf8(head).map_err(|_| FramingError::BadContentLength)?;
    let mut found: Option<usize> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !(name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let value = value.trim();
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingError::BadContentLength);
        }
        let n: usize = value.parse().map_err(|_| FramingError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(n);
    }
    found.ok_or(FramingError::NoContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn framer_splits_joined_and_split_messages() {
        let mut f = Framer::new();
        let mut two = OPTIONS.to_vec();
        two.extend_from_slice(b"\r\n\r\n");
        let with_body = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nhello";
        two.extend_from_slice(with_body);
        // Byte by byte: nothing comes out before a message is whole.
        let mut out = Vec::new();
        for b in &two {
            f.push(std::slice::from_ref(b));
            while let Some(m) = f.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![OPTIONS.to_vec(), with_body.to_vec()]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn framer_refuses_bad_framing() {
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::NoContentLength));
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::BadContentLength));
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1000000\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::BodyTooLarge(1_000_000)));
        let mut f = Framer::new();
        f.push(b"X\r\nContent-Length: 1\r\nl: 2\r\n\r\nab");
        assert_eq!(f.next_message(), Err(FramingError::BadContentLength));
        let mut f = Framer::new();
        f.push(b"X\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::BadContentLength));
        let mut f = Framer::new();
        f.push(&vec![b'a'; MAX_HEADER_BYTES + 1]);
        assert_eq!(f.next_message(), Err(FramingError::HeadersTooLong));
    }

    #[test]
    fn framer_survives_random_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let mut f = Framer::new();
            let n = rng.gen_range(0..300);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            f.push(&bytes);
            f.push(b"\r\nContent-Length: 3\r\n\r\nabc");
            for _ in 0..4 {
                if !matches!(f.next_message(), Ok(Some(_))) {
                    break;
                }
            }
        }
    }

    #[test]
    fn choice_follows_trunk_then_uri_and_never_weakens() {
        let uri = |s: &str| SipUri::parse(s).unwrap();
        assert_eq!(
            choose(None, &uri("sip:a@h")).unwrap(),
            (Transport::Udp, true)
        );
        assert_eq!(
            choose(None, &uri("sip:a@h;transport=TCP")).unwrap(),
            (Transport::Tcp, false)
        );
        assert_eq!(
            choose(None, &uri("sips:a@h")).unwrap(),
            (Transport::Tls, false)
        );
        assert_eq!(
            choose(None, &uri("sip:a@h;transport=udp")).unwrap(),
            (Transport::Udp, false)
        );
        assert_eq!(
            choose(Some(Transport::Tls), &uri("sip:a@h;transport=tcp")).unwrap(),
            (Transport::Tls, false)
        );
        assert!(choose(Some(Transport::Udp), &uri("sips:a@h")).is_err());
        assert!(choose(Some(Transport::Tcp), &uri("sip:a@h;transport=tls")).is_err());
        assert!(choose(None, &uri("sip:a@h;transport=sctp")).is_err());
        assert!(choose(None, &uri("sips:a@h;transport=udp")).is_err());
    }

    #[test]
    fn request_route_reads_only_route_and_its_first_entry() {
        let head = "BYE sip:b@10.0.0.9;transport=udp SIP/2.0\r\n\
                    Record-Route: <sip:10.0.0.7;transport=tls;lr>\r\n\
                    route : <sip:10.0.0.2;transport=tcp;lr>, <sip:10.0.0.3;lr>\r\n\
                    Route: <sip:10.0.0.4;lr>";
        assert_eq!(
            request_route(head),
            Some((
                "sip:b@10.0.0.9;transport=udp",
                Some("<sip:10.0.0.2;transport=tcp;lr>")
            ))
        );
        assert_eq!(
            request_route("BYE sip:b@h SIP/2.0\r\nCSeq: 2 BYE"),
            Some(("sip:b@h", None))
        );
        assert_eq!(request_route("BYE sip:b@h\r\n"), None);
    }

    #[test]
    fn in_dialog_requests_follow_the_next_hop() {
        let req = |uri: &str, route: Option<&str>| {
            let mut s =
                format!("BYE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKx\r\n");
            if let Some(r) = route {
                s.push_str(&format!("Route: {r}\r\n"));
            }
            s.push_str("Call-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
            s.into_bytes()
        };
        let first = "sip:bob@10.0.0.9;transport=tcp";
        // A Contact naming UDP: UDP, with the Via saying so.
        let (t, b) = for_request(
            Transport::Tcp,
            first,
            req("sip:bob@10.0.0.9:5070;transport=UDP", None),
        );
        assert_eq!(t, Transport::Udp);
        assert!(String::from_utf8(b)
            .unwrap()
            .contains("Via: SIP/2.0/UDP 10.0.0.1"));
        // The first route decides.
        let (t, _) = for_request(
            Transport::Udp,
            first,
            String::from_utf8(req(
                "sip:bob@10.0.0.9:5070",
                Some("<sip:10.0.0.2;transport=tcp;lr>"),
            ))
            .unwrap()
            .replace("SIP/2.0/TCP", "SIP/2.0/UDP")
            .into_bytes(),
        );
        assert_eq!(t, Transport::Tcp);
        // The initial target keeps the transport chosen with the trunk.
        let (t, _) = for_request(Transport::Tcp, first, req(first, None));
        assert_eq!(t, Transport::Tcp);
        // Nothing named: the call's transport.
        let (t, _) = for_request(Transport::Tcp, first, req("sip:bob@10.0.0.9:5070", None));
        assert_eq!(t, Transport::Tcp);
        // TLS never leaves TLS.
        let (t, _) = for_request(
            Transport::Tls,
            first,
            req("sip:bob@10.0.0.9:5070;transport=udp", None),
        );
        assert_eq!(t, Transport::Tls);
    }

    #[test]
    fn large_requests_move_to_tcp() {
        let mut big = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nContent-Length: 1400\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 1400));
        let up = upgrade_large_request(&big).unwrap();
        assert!(up.windows(12).any(|w| w == b"SIP/2.0/TCP "));
        assert_eq!(up.len(), big.len());
        assert!(upgrade_large_request(OPTIONS).is_none());
        let mut resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n".to_vec();
        resp.extend(std::iter::repeat_n(b'x', 1400));
        assert!(upgrade_large_request(&resp).is_none());
    }
}

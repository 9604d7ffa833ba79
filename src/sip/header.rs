//! Typed views of the header values callout acts on: Via, name-addr
//! (From/To/Contact/Route/Record-Route), CSeq and SIP URIs.

use super::message::{is_token_byte, Method};

/// Why a header value could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("malformed Via")]
    Via,
    #[error("malformed address (name-addr / addr-spec)")]
    Address,
    #[error("malformed CSeq")]
    CSeq,
    #[error("malformed URI")]
    Uri,
    #[error("malformed parameter")]
    Param,
}

/// `;name=value` parameters, names lower-cased, values unquoted.
pub type Params = Vec<(String, Option<String>)>;

pub fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_deref())
}

pub fn has_param(params: &Params, name: &str) -> bool {
    params.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// Split `s` on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quote, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Parse a parameter list that starts right after the first `;`.
fn parse_params(s: &str) -> Result<Params, HeaderError> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for part in split_unquoted(s, ';') {
        let part = part.trim();
        if part.is_empty() {
            return Err(HeaderError::Param);
        }
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (part, None),
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(HeaderError::Param);
        }
        let value = match value {
            None => None,
            Some(v) if v.starts_with('"') => Some(unquote(v).ok_or(HeaderError::Param)?),
            Some(v)
                if !v.is_empty() && v.bytes().all(|b| is_token_byte(b) || b"[]:".contains(&b)) =>
            {
                Some(v.to_string())
            }
            Some(_) => return Err(HeaderError::Param),
        };
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// Remove the quotes of a `quoted-string`, resolving `\` escapes.
pub fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// One Via entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol version; only "2.0" is valid, but a message with another
    /// one is parsed far enough to answer 505.
    pub version: String,
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        // sent-protocol = "SIP" / "2.0" / transport, with LWS allowed
        // around each slash (RFC 4475 wsinv).
        let mut rest = value;
        let mut proto = Vec::new();
        for _ in 0..2 {
            let (p, r) = rest.split_once('/').ok_or(HeaderError::Via)?;
            proto.push(p.trim());
            rest = r.trim_start();
        }
        if !proto[0].eq_ignore_ascii_case("SIP") || proto[1].is_empty() {
            return Err(HeaderError::Via);
        }
        let version = proto[1].to_string();
        let tlen = rest.bytes().take_while(|b| is_token_byte(*b)).count();
        if tlen == 0 {
            return Err(HeaderError::Via);
        }
        let transport = rest[..tlen].to_ascii_uppercase();
        let rest = rest[tlen..].trim_start();
        let (sent_by, params) = match rest.split_once(';') {
            Some((s, p)) => (s.trim(), parse_params(p)?),
            None => (rest.trim(), Vec::new()),
        };
        let (host, port) = split_host_port(sent_by).ok_or(HeaderError::Via)?;
        Ok(Via {
            version,
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch")
    }
}

/// The `branch` of a Via value callout wrote itself (well-formed by
/// construction), read without parsing the rest: matching a response to
/// its transaction did a full [`Via::parse`] of each transaction's own
/// Via per response. Values from the network go through [`Via::parse`].
pub fn own_via_branch(value: &str) -> Option<&str> {
    value.split(';').skip(1).find_map(|p| {
        let (name, v) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("branch").then(|| v.trim())
    })
}

/// Split `host[:port]`, IPv6 references in brackets.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return None;
    }
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return None,
        };
        (format!("[{h}]"), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// A SIP or SIPS URI, enough of it to route and compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl SipUri {
    pub fn parse(s: &str) -> Result<SipUri, HeaderError> {
        let (scheme, rest) = s.split_once(':').ok_or(HeaderError::Uri)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(HeaderError::Uri);
        }
        if rest.contains(char::is_whitespace) {
            return Err(HeaderError::Uri);
        }
        // Headers (`?`) are not needed for routing; drop them.
        let rest = rest.split_once('?').map_or(rest, |(a, _)| a);
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((hp, p)) => (hp, parse_params(p).map_err(|_| HeaderError::Uri)?),
            None => (hostpart, Vec::new()),
        };
        let (host, port) = split_host_port(hostport).ok_or(HeaderError::Uri)?;
        let user = match userinfo {
            Some("") => return Err(HeaderError::Uri),
            Some(u) => Some(u.split(':').next().unwrap_or(u).to_string()),
            None => None,
        };
        Ok(SipUri {
            scheme,
            user,
            host,
            port,
            params,
        })
    }

    /// Where a request to this URI goes when no route set applies: the
    /// `maddr` parameter if present, else host, and port 5060/5061.
    pub fn target(&self) -> (String, u16) {
        let host = param(&self.params, "maddr")
            .unwrap_or(&self.host)
            .to_string();
        let default = if self.scheme == "sips" { 5061 } else { 5060 };
        (host, self.port.unwrap_or(default))
    }
}

/// `[display-name] <URI> *(;param)` or `addr-spec *(;param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let v = value.trim();
        if let Some(lt) = find_unquoted(v, '<') {
            let display = v[..lt].trim();
            let display = if display.is_empty() {
                None
            } else if display.starts_with('"') {
                Some(unquote(display).ok_or(HeaderError::Address)?)
            } else {
                // An unquoted display name is a sequence of tokens (RFC
                // 4475 baddn: a comma is not allowed).
                if !display
                    .split_whitespace()
                    .all(|w| w.bytes().all(is_token_byte))
                {
                    return Err(HeaderError::Address);
                }
                Some(display.to_string())
            };
            let after = &v[lt + 1..];
            let gt = after.find('>').ok_or(HeaderError::Address)?;
            let uri = &after[..gt];
            // `<<>` or `<x>` would otherwise become a remote target that
            // makes our own ACK and BYE unparseable.
            if !uri.contains(':') || uri.contains(['<', '"']) || uri.contains(char::is_whitespace) {
                return Err(HeaderError::Address);
            }
            let tail = after[gt + 1..].trim();
            let params = match tail.strip_prefix(';') {
                Some(p) => parse_params(p).map_err(|_| HeaderError::Address)?,
                None if tail.is_empty() => Vec::new(),
                None => return Err(HeaderError::Address),
            };
            return Ok(NameAddr {
                display,
                uri: uri.to_string(),
                params,
            });
        }
        if v.starts_with('"') {
            return Err(HeaderError::Address);
        }
        // addr-spec: the URI runs to the first `;`, and may not carry
        // `?`, `,` or spaces (RFC 4475 regbadct).
        let (uri, params) = match v.split_once(';') {
            Some((u, p)) => (u.trim(), parse_params(p).map_err(|_| HeaderError::Address)?),
            None => (v, Vec::new()),
        };
        if uri.is_empty() || !uri.contains(':') || uri.contains(['?', ',', ' ', '\t', '"']) {
            return Err(HeaderError::Address);
        }
        Ok(NameAddr {
            display: None,
            uri: uri.to_string(),
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag")
    }

    /// Render as `<uri>;params` (display names are not echoed back).
    pub fn to_header(&self) -> String {
        let mut s = format!("<{}>", self.uri);
        for (k, v) in &self.params {
            s.push(';');
            s.push_str(k);
            if let Some(v) = v {
                s.push('=');
                s.push_str(v);
            }
        }
        s
    }
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let (mut in_quote, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == needle {
            return Some(i);
        }
    }
    None
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let mut it = value.split_whitespace();
        let seq = it.next().ok_or(HeaderError::CSeq)?;
        let method = it.next().ok_or(HeaderError::CSeq)?;
        if it.next().is_some() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeaderError::CSeq);
        }
        // RFC 3261 8.1.1.5: the sequence number is a 32-bit unsigned value
        // below 2^31.
        let seq: u32 = seq.parse().map_err(|_| HeaderError::CSeq)?;
        if seq >= 1 << 31 || !method.bytes().all(is_token_byte) {
            return Err(HeaderError::CSeq);
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws() {
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_err());
        let v6 = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:5070;rport").unwrap();
        assert_eq!(v6.port, Some(5070));
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        let b = NameAddr::parse("sip:caller@example.net;tag=134").unwrap();
        assert_eq!(b.uri, "sip:caller@example.net");
        assert!(NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#).is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse("< sip:t.watson@example.org >").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    }

    #[test]
    fn uri_target() {
        let u = SipUri::parse("sip:alice@127.0.0.1:5070;transport=udp").unwrap();
        assert_eq!(u.target(), ("127.0.0.1".to_string(), 5070));
        let m = SipUri::parse("sip:UserB@example.com;maddr=ss1.example.com").unwrap();
        assert_eq!(m.target().0, "ss1.example.com");
        assert!(SipUri::parse("nobodyKnowsThisScheme:x").is_err());
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(CSeq::parse("0009 INVITE").unwrap().seq, 9);
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("1").is_err());
    }
}

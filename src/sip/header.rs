//! Typed views of the header values callout acts on: Via, name-addr
//! (From/To/Contact/Route/Record-Route), CSeq and SIP URIs.

use std::borrow::Cow;

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

/// Split `s` on `sep` outside double quotes. A separator is only found
/// outside a quoted string, so each piece's scan starts unquoted.
fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_unquoted(r, sep) {
            Some(i) => {
                rest = Some(&r[i + sep.len_utf8()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// One `name[=value]` of a parameter list, checked: the name a token,
/// the value a token (or `[]:`) or a well-formed quoted string, kept
/// quoted.
fn param_entry(part: &str) -> Result<(&str, Option<&str>), HeaderError> {
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
    let value_ok = match value {
        None => true,
        Some(v) if v.starts_with('"') => quoted_ok(v),
        Some(v) => !v.is_empty() && v.bytes().all(|b| is_token_byte(b) || b"[]:".contains(&b)),
    };
    if !value_ok {
        return Err(HeaderError::Param);
    }
    Ok((name, value))
}

/// A parameter value as [`Params`] keeps it: unquoted.
fn param_value(raw: &str) -> Cow<'_, str> {
    if raw.starts_with('"') {
        Cow::Owned(unquote(raw).unwrap_or_default())
    } else {
        Cow::Borrowed(raw)
    }
}

/// A parameter list (the text after the first `;`), checked, kept as
/// text: reading one parameter of a header the network sent costs no
/// allocation; [`RawParams::to_params`] gives the owned [`Params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawParams<'a>(&'a str);

impl<'a> RawParams<'a> {
    pub fn parse(s: &'a str) -> Result<RawParams<'a>, HeaderError> {
        if s.trim().is_empty() {
            return Ok(RawParams(""));
        }
        for part in split_unquoted(s, ';') {
            param_entry(part)?;
        }
        Ok(RawParams(s))
    }

    /// (name as written, raw value) of each parameter. [`RawParams::parse`]
    /// checked every entry already, so each is only split here (checking
    /// them again on every lookup was most of a branch or tag read).
    fn entries(self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        let s = self.0;
        split_unquoted(s, ';').filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                // Only the empty list (`RawParams("")`) has one.
                return None;
            }
            Some(match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p, None),
            })
        })
    }

    /// The value of `name` (unquoted), `None` when absent or valueless.
    pub fn get(self, name: &str) -> Option<Cow<'a, str>> {
        self.entries()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.map(param_value))
    }

    pub fn has(self, name: &str) -> bool {
        self.entries().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The owned form: names lower-cased, values unquoted.
    pub fn to_params(self) -> Params {
        self.entries()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.map(|v| param_value(v).into_owned()),
                )
            })
            .collect()
    }
}

/// Is `s` one well-formed `quoted-string` (what [`unquote`] accepts)?
/// Quoted values are rare on the paths that count, so the check may
/// allocate.
fn quoted_ok(s: &str) -> bool {
    unquote(s).is_some()
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
        let v = ViaRef::parse(value)?;
        Ok(Via {
            version: v.version.to_string(),
            transport: v.transport.to_ascii_uppercase(),
            host: v.host.to_string(),
            port: v.port,
            params: v.params.to_params(),
        })
    }

    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch")
    }
}

/// A Via entry checked as [`Via::parse`] checks it, borrowed from the
/// header: what matching a response to its transaction reads, without
/// the allocations of the owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaRef<'a> {
    pub version: &'a str,
    /// As written (the owned form upper-cases it).
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: RawParams<'a>,
}

impl<'a> ViaRef<'a> {
    pub fn parse(value: &'a str) -> Result<ViaRef<'a>, HeaderError> {
        // sent-protocol = "SIP" / "2.0" / transport, with LWS allowed
        // around each slash (RFC 4475 wsinv).
        let mut rest = value;
        let mut proto = ["", ""];
        for p in &mut proto {
            let (part, r) = rest.split_once('/').ok_or(HeaderError::Via)?;
            *p = part.trim();
            rest = r.trim_start();
        }
        if !proto[0].eq_ignore_ascii_case("SIP") || proto[1].is_empty() {
            return Err(HeaderError::Via);
        }
        let tlen = rest.bytes().take_while(|b| is_token_byte(*b)).count();
        if tlen == 0 {
            return Err(HeaderError::Via);
        }
        let transport = &rest[..tlen];
        let rest = rest[tlen..].trim_start();
        let (sent_by, params) = match rest.split_once(';') {
            Some((s, p)) => (s.trim(), RawParams::parse(p)?),
            None => (rest.trim(), RawParams::default()),
        };
        let (host, port) = split_host_port_ref(sent_by).ok_or(HeaderError::Via)?;
        Ok(ViaRef {
            version: proto[1],
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<Cow<'a, str>> {
        self.params.get("branch")
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
    split_host_port_ref(s).map(|(h, p)| (h.to_string(), p))
}

/// As [`split_host_port`], the host borrowed (an IPv6 reference keeps
/// its brackets).
pub fn split_host_port_ref(s: &str) -> Option<(&str, Option<u16>)> {
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
        (&s[..h.len() + 2], port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
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
        let u = SipUriRef::parse(s)?;
        Ok(SipUri {
            scheme: u.scheme.to_ascii_lowercase(),
            user: u.user.map(str::to_string),
            host: u.host.to_string(),
            port: u.port,
            params: u.params.to_params(),
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

/// A SIP URI checked as [`SipUri::parse`] checks it, borrowed: where an
/// in-dialog request goes is read from it once per request sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUriRef<'a> {
    /// As written: `sip` or `sips` in any case.
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: RawParams<'a>,
}

impl<'a> SipUriRef<'a> {
    pub fn parse(s: &'a str) -> Result<SipUriRef<'a>, HeaderError> {
        let (scheme, rest) = s.split_once(':').ok_or(HeaderError::Uri)?;
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
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
            Some((hp, p)) => (hp, RawParams::parse(p).map_err(|_| HeaderError::Uri)?),
            None => (hostpart, RawParams::default()),
        };
        let (host, port) = split_host_port_ref(hostport).ok_or(HeaderError::Uri)?;
        let user = match userinfo {
            Some("") => return Err(HeaderError::Uri),
            Some(u) => Some(u.split(':').next().unwrap_or(u)),
            None => None,
        };
        Ok(SipUriRef {
            scheme,
            user,
            host,
            port,
            params,
        })
    }

    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }

    /// As [`SipUri::target`].
    pub fn target(&self) -> (Cow<'a, str>, u16) {
        let host = self.params.get("maddr").unwrap_or(Cow::Borrowed(self.host));
        let default = if self.is_sips() { 5061 } else { 5060 };
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
        let a = NameAddrRef::parse(value)?;
        Ok(NameAddr {
            display: a.display.map(|d| param_value(d).into_owned()),
            uri: a.uri.to_string(),
            params: a.params.to_params(),
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

/// A name-addr or addr-spec checked as [`NameAddr::parse`] checks it,
/// borrowed: a response's To tag and Contact are read from it without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddrRef<'a> {
    /// As written: quoted or a run of tokens.
    pub display: Option<&'a str>,
    pub uri: &'a str,
    pub params: RawParams<'a>,
}

impl<'a> NameAddrRef<'a> {
    pub fn parse(value: &'a str) -> Result<NameAddrRef<'a>, HeaderError> {
        let v = value.trim();
        if let Some(lt) = find_unquoted(v, '<') {
            let display = v[..lt].trim();
            let display = if display.is_empty() {
                None
            } else if display.starts_with('"') {
                if !quoted_ok(display) {
                    return Err(HeaderError::Address);
                }
                Some(display)
            } else {
                // An unquoted display name is a sequence of tokens (RFC
                // 4475 baddn: a comma is not allowed).
                if !display
                    .split_whitespace()
                    .all(|w| w.bytes().all(is_token_byte))
                {
                    return Err(HeaderError::Address);
                }
                Some(display)
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
                Some(p) => RawParams::parse(p).map_err(|_| HeaderError::Address)?,
                None if tail.is_empty() => RawParams::default(),
                None => return Err(HeaderError::Address),
            };
            return Ok(NameAddrRef {
                display,
                uri,
                params,
            });
        }
        if v.starts_with('"') {
            return Err(HeaderError::Address);
        }
        // addr-spec: the URI runs to the first `;`, and may not carry
        // `?`, `,` or spaces (RFC 4475 regbadct).
        let (uri, params) = match v.split_once(';') {
            Some((u, p)) => (
                u.trim(),
                RawParams::parse(p).map_err(|_| HeaderError::Address)?,
            ),
            None => (v, RawParams::default()),
        };
        if uri.is_empty() || !uri.contains(':') || uri.contains(['?', ',', ' ', '\t', '"']) {
            return Err(HeaderError::Address);
        }
        Ok(NameAddrRef {
            display: None,
            uri,
            params,
        })
    }

    pub fn tag(&self) -> Option<Cow<'a, str>> {
        self.params.get("tag")
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

    #[test]
    fn borrowed_views_read_what_the_owned_forms_do() {
        assert_eq!(RawParams::parse("a;;b"), Err(HeaderError::Param));
        assert_eq!(RawParams::parse("a;"), Err(HeaderError::Param));
        assert_eq!(RawParams::parse("x=\"open"), Err(HeaderError::Param));
        assert_eq!(RawParams::parse("x=a b"), Err(HeaderError::Param));
        let p = RawParams::parse(" x = \"a\\\"b\" ; LR ").unwrap();
        assert_eq!(p.get("X").as_deref(), Some("a\"b"));
        assert!(p.has("lr") && p.get("lr").is_none());
        assert_eq!(
            p.to_params(),
            vec![("x".into(), Some("a\"b".into())), ("lr".into(), None)]
        );

        let v = ViaRef::parse("SIP/2.0/udp [2001:db8::1]:5070;branch=z9hG4bKx;rport").unwrap();
        assert_eq!((v.host, v.port), ("[2001:db8::1]", Some(5070)));
        assert_eq!(v.branch().as_deref(), Some("z9hG4bKx"));
        let owned = Via::parse("SIP/2.0/udp [2001:db8::1]:5070;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(
            (owned.transport.as_str(), owned.host.as_str()),
            ("UDP", "[2001:db8::1]")
        );
        assert_eq!(ViaRef::parse("SIP/2.0/UDP h;;"), Err(HeaderError::Param));
        assert_eq!(ViaRef::parse("SIP/2.0/UDP h:x"), Err(HeaderError::Via));

        let a = NameAddrRef::parse(r#""A \"B\"" <sip:x@y>;tag="t 1""#).unwrap();
        assert_eq!(a.display, Some(r#""A \"B\"""#));
        assert_eq!((a.uri, a.tag().as_deref()), ("sip:x@y", Some("t 1")));
        let owned = NameAddr::parse(r#""A \"B\"" <sip:x@y>;tag="t 1""#).unwrap();
        assert_eq!(owned.display.as_deref(), Some(r#"A "B""#));
        assert_eq!(
            NameAddrRef::parse(r#""open <sip:x@y>"#),
            Err(HeaderError::Address)
        );
        assert_eq!(
            NameAddrRef::parse("sip:x@y;tag=1").map(|a| a.uri),
            Ok("sip:x@y")
        );

        let u = SipUriRef::parse("SIPS:bob:pw@example.com;MADDR=10.0.0.1?h=v").unwrap();
        assert!(u.is_sips());
        assert_eq!(u.user, Some("bob"));
        assert_eq!(u.target(), (Cow::Borrowed("10.0.0.1"), 5061));
        assert_eq!(SipUriRef::parse("sip:@h"), Err(HeaderError::Uri));
        assert_eq!(SipUriRef::parse("tel:123"), Err(HeaderError::Uri));
    }
}

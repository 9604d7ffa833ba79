//! What a trunk wants of each call besides where it goes: the caller
//! identity (RFC 3325 `P-Asserted-Identity` / `P-Preferred-Identity`, the
//! From user and display name) and the codec order of the offer. Sans-IO:
//! validated once, applied to each INVITE.
//!
//! Identities come from the operator's configuration but end up as header
//! values, so they are held to a strict shape: a SIP/SIPS/tel URI (in
//! `<>` with an optional quoted display name), no CR, LF or other control
//! characters, no header injection through `?` headers in the URI.

use super::header::NameAddr;
use super::sdp::Codec;

/// Longest identity or display name taken.
const MAX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefsError {
    #[error("{field}: control characters (CR, LF, ...) are not allowed")]
    Control { field: &'static str },
    #[error("{field}: longer than 256 characters")]
    TooLong { field: &'static str },
    #[error("{field}: {value:?} is not a sip:, sips: or tel: URI (optionally \"Name\" <uri>)")]
    NotAnIdentity { field: &'static str, value: String },
    #[error(
        "from_user: {0:?} may hold only letters, digits and -_.!~*'()&=+$,;?/ (RFC 3261 user)"
    )]
    BadUser(String),
    #[error("codecs: {0:?} is not PCMU or PCMA")]
    UnknownCodec(String),
    #[error("codecs: {0} is listed twice")]
    DuplicateCodec(String),
}

/// A trunk's caller identity and codec choice, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallPrefs {
    /// `P-Asserted-Identity` value, as `"Name" <uri>` or `<uri>`.
    pub asserted: Option<String>,
    /// `P-Preferred-Identity` value.
    pub preferred: Option<String>,
    /// Replaces the user part of the From URI (a carrier's DID).
    pub from_user: Option<String>,
    /// Replaces the From display name.
    pub from_display: Option<String>,
    /// Codecs to offer, in order; empty: callout's default (PCMU, PCMA).
    pub codecs: Vec<Codec>,
}

/// The raw settings, as a trunk's section names them.
#[derive(Debug, Clone, Default)]
pub struct RawPrefs<'a> {
    pub asserted_identity: Option<&'a str>,
    pub preferred_identity: Option<&'a str>,
    pub from_user: Option<&'a str>,
    pub from_display: Option<&'a str>,
    pub codecs: &'a [String],
}

fn plain(field: &'static str, v: &str) -> Result<(), PrefsError> {
    if v.chars().any(char::is_control) {
        return Err(PrefsError::Control { field });
    }
    if v.chars().count() > MAX_LEN {
        return Err(PrefsError::TooLong { field });
    }
    Ok(())
}

/// `"Name" <uri>` / `<uri>` / `uri` → a safe header value.
fn identity(field: &'static str, v: &str) -> Result<String, PrefsError> {
    plain(field, v)?;
    let bad = || PrefsError::NotAnIdentity {
        field,
        value: v.to_string(),
    };
    let na = NameAddr::parse(v).map_err(|_| bad())?;
    let scheme = na.uri.split(':').next().unwrap_or("").to_ascii_lowercase();
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel")
        || na.uri.contains(['?', '<', '>', '"', ','])
        || !na.params.is_empty()
    {
        return Err(bad());
    }
    Ok(match na.display {
        Some(d) => format!("{} <{}>", quote(&d), na.uri),
        None => format!("<{}>", na.uri),
    })
}

/// A quoted-string (RFC 3261 25.1) of `d`: `"` and `\` escaped.
fn quote(d: &str) -> String {
    let mut s = String::from("\"");
    for c in d.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

impl CallPrefs {
    pub fn parse(raw: &RawPrefs<'_>) -> Result<CallPrefs, PrefsError> {
        let asserted = raw
            .asserted_identity
            .map(|v| identity("asserted_identity", v))
            .transpose()?;
        let preferred = raw
            .preferred_identity
            .map(|v| identity("preferred_identity", v))
            .transpose()?;
        if let Some(u) = raw.from_user {
            plain("from_user", u)?;
            let ok = !u.is_empty()
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b));
            if !ok {
                return Err(PrefsError::BadUser(u.to_string()));
            }
        }
        if let Some(d) = raw.from_display {
            plain("from_display", d)?;
        }
        let mut codecs = Vec::new();
        for c in raw.codecs {
            let codec = match c.to_ascii_uppercase().as_str() {
                "PCMU" => Codec::Pcmu,
                "PCMA" => Codec::Pcma,
                _ => return Err(PrefsError::UnknownCodec(c.clone())),
            };
            if codecs.contains(&codec) {
                return Err(PrefsError::DuplicateCodec(c.clone()));
            }
            codecs.push(codec);
        }
        Ok(CallPrefs {
            asserted,
            preferred,
            from_user: raw.from_user.map(str::to_string),
            from_display: raw.from_display.map(str::to_string),
            codecs,
        })
    }

    /// These settings (a contract's) over `base` (its trunk's): each one
    /// set here wins; a codec list given here replaces the trunk's.
    pub fn over(&self, base: &CallPrefs) -> CallPrefs {
        CallPrefs {
            asserted: self.asserted.clone().or_else(|| base.asserted.clone()),
            preferred: self.preferred.clone().or_else(|| base.preferred.clone()),
            from_user: self.from_user.clone().or_else(|| base.from_user.clone()),
            from_display: self
                .from_display
                .clone()
                .or_else(|| base.from_display.clone()),
            codecs: if self.codecs.is_empty() {
                base.codecs.clone()
            } else {
                self.codecs.clone()
            },
        }
    }

    /// The identity headers for the INVITE.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut h = Vec::new();
        if let Some(a) = &self.asserted {
            h.push(("P-Asserted-Identity".to_string(), a.clone()));
        }
        if let Some(p) = &self.preferred {
            h.push(("P-Preferred-Identity".to_string(), p.clone()));
        }
        h
    }

    /// `from` (a dialplan's caller_id) with the trunk's user, if any.
    pub fn from_uri(&self, from: &str) -> String {
        let Some(user) = &self.from_user else {
            return from.to_string();
        };
        let Some((scheme, rest)) = from.split_once(':') else {
            return from.to_string();
        };
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}:{user}@{host}")
    }
}

/// Our SDP offer with its audio codecs cut down to and ordered as
/// `order` (others such as telephone-event keep their place after them).
/// An empty `order`, or one naming no codec the offer has, leaves it as is.
pub fn order_offer(sdp: &[u8], order: &[Codec]) -> Vec<u8> {
    // The usual case (no trunk preference), once per call: no rebuild.
    if order.is_empty() {
        return sdp.to_vec();
    }
    let Ok(text) = std::str::from_utf8(sdp) else {
        return sdp.to_vec();
    };
    let codec_pts = [Codec::Pcmu.payload_type(), Codec::Pcma.payload_type()];
    let wanted: Vec<u8> = order.iter().map(|c| c.payload_type()).collect();
    let mut out = String::with_capacity(text.len());
    let mut dropped: Vec<u8> = Vec::new();
    for line in text.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        if let Some(rest) = body.strip_prefix("m=audio ") {
            let mut parts: Vec<&str> = rest.split(' ').collect();
            if parts.len() < 3 {
                return sdp.to_vec();
            }
            let fmts: Vec<u8> = parts
                .split_off(2)
                .iter()
                .filter_map(|f| f.parse().ok())
                .collect();
            let mut kept: Vec<u8> = wanted
                .iter()
                .copied()
                .filter(|p| fmts.contains(p))
                .collect();
            if kept.is_empty() {
                return sdp.to_vec();
            }
            for f in &fmts {
                if !codec_pts.contains(f) {
                    kept.push(*f);
                } else if !kept.contains(f) {
                    dropped.push(*f);
                }
            }
            let list: Vec<String> = kept.iter().map(u8::to_string).collect();
            out.push_str(&format!(
                "m=audio {} {}\r\n",
                parts.join(" "),
                list.join(" ")
            ));
            continue;
        }
        let names_dropped = ["a=rtpmap:", "a=fmtp:"].iter().any(|p| {
            body.strip_prefix(p)
                .and_then(|r| r.split(' ').next())
                .and_then(|pt| pt.parse::<u8>().ok())
                .is_some_and(|pt| dropped.contains(&pt))
        });
        if !names_dropped {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(pai: Option<&'a str>, user: Option<&'a str>, codecs: &'a [String]) -> RawPrefs<'a> {
        RawPrefs {
            asserted_identity: pai,
            preferred_identity: None,
            from_user: user,
            from_display: None,
            codecs,
        }
    }

    #[test]
    fn identities_are_normalised_and_injection_is_refused() {
        let p = CallPrefs::parse(&raw(
            Some("\"Ops \\\"NOC\\\"\" <sip:+4712345678@carrier.example>"),
            None,
            &[],
        ))
        .unwrap();
        assert_eq!(
            p.headers(),
            [(
                "P-Asserted-Identity".to_string(),
                "\"Ops \\\"NOC\\\"\" <sip:+4712345678@carrier.example>".to_string()
            )]
        );
        let p = CallPrefs::parse(&raw(Some("tel:+4712345678"), None, &[])).unwrap();
        assert_eq!(p.asserted.as_deref(), Some("<tel:+4712345678>"));
        for bad in [
            "sip:a@b\r\nX-Evil: 1",
            "<sip:a@b>\nVia: x",
            "<sip:a@b?Route=%3Csip:evil%3E>",
            "<sip:a@b>;tag=1",
            "http://example.com",
            "<sip:a@b>, <sip:c@d>",
            "\"x\" <mailto:a@b>",
            "",
        ] {
            assert!(
                CallPrefs::parse(&raw(Some(bad), None, &[])).is_err(),
                "{bad:?} was taken"
            );
        }
        let long = format!("<sip:{}@b>", "a".repeat(300));
        assert_eq!(
            CallPrefs::parse(&raw(Some(long.as_str()), None, &[])),
            Err(PrefsError::TooLong {
                field: "asserted_identity"
            })
        );
    }

    #[test]
    fn from_user_replaces_the_user_and_nothing_else() {
        let p = CallPrefs::parse(&raw(None, Some("+4712345678"), &[])).unwrap();
        assert_eq!(
            p.from_uri("sip:callout@gw.example"),
            "sip:+4712345678@gw.example"
        );
        assert_eq!(p.from_uri("sip:gw.example"), "sip:+4712345678@gw.example");
        assert_eq!(CallPrefs::default().from_uri("sip:a@b"), "sip:a@b");
        for bad in ["a b", "a@b", "a\r\nb", "", "a<b"] {
            assert!(
                CallPrefs::parse(&raw(None, Some(bad), &[])).is_err(),
                "{bad:?}"
            );
        }
        let d = RawPrefs {
            from_display: Some("Ops\r\nX: y"),
            ..Default::default()
        };
        assert!(CallPrefs::parse(&d).is_err());
    }

    #[test]
    fn the_offer_follows_the_trunk_codec_order() {
        let offer = super::super::sdp::offer("192.0.2.1:4000".parse().unwrap(), 1, 1);
        let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
        let pcma_first = s(order_offer(&offer, &[Codec::Pcma, Codec::Pcmu]));
        assert!(
            pcma_first.contains("m=audio 4000 RTP/AVP 8 0 101\r\n"),
            "{pcma_first}"
        );
        assert!(pcma_first.contains("a=rtpmap:0 PCMU/8000"));
        let only_pcma = s(order_offer(&offer, &[Codec::Pcma]));
        assert!(
            only_pcma.contains("m=audio 4000 RTP/AVP 8 101\r\n"),
            "{only_pcma}"
        );
        assert!(!only_pcma.contains("PCMU"), "{only_pcma}");
        assert!(only_pcma.contains("a=rtpmap:101 telephone-event/8000"));
        // What callout itself parses still finds the codec.
        let parsed = super::super::sdp::parse_answer(only_pcma.as_bytes()).unwrap();
        assert_eq!(parsed.codec, Codec::Pcma);
        assert_eq!(order_offer(&offer, &[]), offer);
        let codecs = ["pcma".to_string(), "PCMA".to_string()];
        assert_eq!(
            CallPrefs::parse(&raw(None, None, &codecs)),
            Err(PrefsError::DuplicateCodec("PCMA".into()))
        );
        let codecs = ["G729".to_string()];
        assert!(CallPrefs::parse(&raw(None, None, &codecs)).is_err());
    }

    #[test]
    fn a_contracts_settings_win_over_its_trunks() {
        let trunk = CallPrefs::parse(&RawPrefs {
            asserted_identity: Some("sip:+4711@carrier.example"),
            from_user: Some("+4711"),
            codecs: &["PCMU".into()],
            ..Default::default()
        })
        .unwrap();
        let contract = CallPrefs::parse(&RawPrefs {
            asserted_identity: Some("\"Acme NOC\" <sip:+4722@carrier.example>"),
            codecs: &["PCMA".into(), "PCMU".into()],
            ..Default::default()
        })
        .unwrap();
        let m = contract.over(&trunk);
        assert_eq!(
            m.asserted.as_deref(),
            Some("\"Acme NOC\" <sip:+4722@carrier.example>")
        );
        assert_eq!(m.from_user.as_deref(), Some("+4711"), "kept from the trunk");
        assert_eq!(m.codecs, [Codec::Pcma, Codec::Pcmu]);
        assert_eq!(CallPrefs::default().over(&trunk), trunk);
    }
}

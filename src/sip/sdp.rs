//! SDP offer/answer for one audio stream (RFC 4566, RFC 3264): callout
//! offers PCMU, PCMA and telephone-event (RFC 4733, events 0-15) at 20 ms.

use std::net::{IpAddr, SocketAddr};

/// The G.711 law used on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
}

/// Payload type callout offers for telephone-event.
pub const OFFER_DTMF_PT: u8 = 101;

/// Packet times callout can send: whole multiples of its 20 ms clock.
pub const SUPPORTED_PTIMES: [u16; 3] = [20, 40, 60];

/// Which way media flows, as one side's SDP states it (RFC 3264 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answer states for an offer stating `self`
    /// (RFC 3264 6.1): sendonly is answered recvonly and so on.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Does the side that wrote this direction want to receive media?
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(attr: &str) -> Option<Direction> {
        Some(match attr {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// Why an SDP answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("no audio stream")]
    NoAudio,
    #[error("audio stream rejected (port 0)")]
    Rejected,
    #[error("no connection address")]
    NoConnection,
    #[error("no common codec (need PCMU or PCMA)")]
    NoCommonCodec,
    #[error("malformed line {0}")]
    Malformed(usize),
    #[error("no usable SRTP key (a=crypto) where SRTP is required")]
    NoCrypto,
}

/// Build callout's offer. It offers rtcp-mux (RFC 5761 5.1.1): used when
/// the answer states it back, else RTCP stays on port + 1.
pub fn offer(addr: SocketAddr, session_id: u64, version: u64) -> Vec<u8> {
    // Once per call: written piece by piece, the address formatted once
    // (a `format!` of it all, twice the address, was measurable).
    use crate::sip::message::push_decimal;
    let ip = addr.ip();
    let family: &[u8] = if ip.is_ipv4() { b"IP4" } else { b"IP6" };
    let ip = ip.to_string();
    let dtmf = u64::from(OFFER_DTMF_PT);
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(b"v=0\r\no=callout ");
    push_decimal(&mut out, session_id);
    out.push(b' ');
    push_decimal(&mut out, version);
    for p in [
        &b" IN "[..],
        family,
        b" ",
        ip.as_bytes(),
        b"\r\ns=callout\r\nc=IN ",
        family,
        b" ",
    ] {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(ip.as_bytes());
    out.extend_from_slice(b"\r\nt=0 0\r\nm=audio ");
    push_decimal(&mut out, u64::from(addr.port()));
    out.extend_from_slice(b" RTP/AVP 0 8 ");
    push_decimal(&mut out, dtmf);
    out.extend_from_slice(b"\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:");
    push_decimal(&mut out, dtmf);
    out.extend_from_slice(b" telephone-event/8000\r\na=fmtp:");
    push_decimal(&mut out, dtmf);
    out.extend_from_slice(b" 0-15\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n");
    out
}

/// Build an answer to an offer: the chosen codec, and telephone-event
/// with the offerer's payload type when it offered one (RFC 3264 6.1).
pub fn answer(addr: SocketAddr, session_id: u64, chosen: &Negotiated) -> Vec<u8> {
    answer_versioned(addr, session_id, 1, chosen)
}

/// [`answer`] with the `o=` version of this SDP (RFC 3264 8: each new SDP
/// in a session carries the previous version plus one). Direction is the
/// answer to the offer's; ptime is the offer's when callout can send it.
pub fn answer_versioned(
    addr: SocketAddr,
    session_id: u64,
    version: u64,
    chosen: &Negotiated,
) -> Vec<u8> {
    let ip = addr.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let (pt, name) = match chosen.codec {
        Codec::Pcmu => (0, "PCMU"),
        Codec::Pcma => (8, "PCMA"),
    };
    let mut s = format!(
        "v=0\r\no=callout {session_id} {version} IN {family} {ip}\r\ns=callout\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    match chosen.dtmf_pt {
        Some(d) => s.push_str(&format!(
            "m=audio {port} RTP/AVP {pt} {d}\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-15\r\n",
            port = addr.port()
        )),
        None => s.push_str(&format!(
            "m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\n",
            port = addr.port()
        )),
    }
    s.push_str(&format!(
        "a=ptime:{}\r\na={}\r\n",
        chosen.send_ptime(),
        chosen.direction.answer().attribute()
    ));
    // RFC 5761 5.1.1: accepted by stating it back; the session then
    // sends and takes RTCP on the RTP port (`Negotiated::rtcp_mux`).
    if chosen.rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    s.into_bytes()
}

/// What the far end accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP (until symmetric RTP latches on the real source).
    pub remote: SocketAddr,
    pub codec: Codec,
    /// The far end's telephone-event payload type, when it accepted one:
    /// the type we send events with.
    pub dtmf_pt: Option<u8>,
    /// The telephone-event type our own SDP told the far end to use: an
    /// answer may map the event to another number than our offer did
    /// (RFC 3264 6.1 lets it), and the far end may send with either.
    pub local_dtmf_pt: Option<u8>,
    /// The direction the far end's SDP states (`c=0.0.0.0` hold folded in).
    pub direction: Direction,
    /// The far end's `a=ptime`, if it gave one.
    pub ptime: Option<u16>,
    /// The far end's SRTP key: its first `a=crypto` line with the one
    /// suite we take (RFC 4568). `None` without one.
    pub crypto: Option<crate::media::srtp::SdesKey>,
    /// The audio stream's profile is `RTP/SAVP`.
    pub savp: bool,
    /// The far end's SDP has `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
}

impl Negotiated {
    /// The packet time callout sends with: the far end's ptime when it is
    /// one callout's 20 ms clock can make (20, 40, 60), else 20 ms.
    pub fn send_ptime(&self) -> u16 {
        self.ptime
            .filter(|p| SUPPORTED_PTIMES.contains(p))
            .unwrap_or(20)
    }

    /// Should we send RTP? Not when the far end holds (sendonly, inactive).
    pub fn we_send(&self) -> bool {
        self.direction.receives()
    }
}

/// Parse an answer to callout's own offer and pick the codec: the first of
/// the answer's formats that is PCMU or PCMA. The far end may send events
/// with our offered type too.
pub fn parse_answer(body: &[u8]) -> Result<Negotiated, SdpError> {
    let mut n = parse(body)?;
    n.local_dtmf_pt = n.dtmf_pt.map(|_| OFFER_DTMF_PT);
    Ok(n)
}

/// Parse an offer from a peer: our answer echoes its payload types, so the
/// type we receive events with is the offer's own.
pub fn parse_offer(body: &[u8]) -> Result<Negotiated, SdpError> {
    let mut n = parse(body)?;
    n.local_dtmf_pt = n.dtmf_pt;
    Ok(n)
}

fn parse(body: &[u8]) -> Result<Negotiated, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_conn: Option<IpAddr> = None;
    let mut media_conn: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut rtpmap: Vec<(u8, String)> = Vec::new();
    let mut session_dir: Option<Direction> = None;
    let mut media_dir: Option<Direction> = None;
    let mut ptime: Option<u16> = None;
    let mut crypto: Option<crate::media::srtp::SdesKey> = None;
    let mut savp = false;
    let mut rtcp_mux = false;
    let mut session_level = true;
    for (idx, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line.split_once('=').ok_or(SdpError::Malformed(idx + 1))?;
        match kind {
            "c" => {
                let mut parts = value.split_whitespace();
                let (_net, _fam, addr) = (parts.next(), parts.next(), parts.next());
                let addr = addr.ok_or(SdpError::Malformed(idx + 1))?;
                // Multicast TTL suffix ("/127") is not used for unicast.
                let addr = addr.split('/').next().unwrap_or(addr);
                let ip: IpAddr = addr.parse().map_err(|_| SdpError::Malformed(idx + 1))?;
                if !seen_audio && audio.is_none() && !in_audio {
                    session_conn = Some(ip);
                } else if in_audio {
                    media_conn = Some(ip);
                }
            }
            "m" => {
                in_audio = false;
                session_level = false;
                let mut parts = value.split_whitespace();
                let media = parts.next().ok_or(SdpError::Malformed(idx + 1))?;
                if media == "audio" && !seen_audio {
                    seen_audio = true;
                    in_audio = true;
                    let port = parts.next().ok_or(SdpError::Malformed(idx + 1))?;
                    let port: u16 = port
                        .split('/')
                        .next()
                        .unwrap_or(port)
                        .parse()
                        .map_err(|_| SdpError::Malformed(idx + 1))?;
                    savp = parts.next() == Some("RTP/SAVP");
                    let fmts = parts.filter_map(|p| p.parse::<u8>().ok()).collect();
                    audio = Some((port, fmts));
                } else {
                    // Any further media section ends the audio one.
                    seen_audio |= media == "audio";
                }
            }
            "a" if session_level => session_dir = Direction::parse(value.trim()).or(session_dir),
            "a" if in_audio => {
                if let Some(d) = Direction::parse(value.trim()) {
                    media_dir = Some(d);
                } else if let Some(p) = value.strip_prefix("ptime:") {
                    // Fractional ptimes ("20.0") are in the wild.
                    let whole = p.trim().split('.').next().unwrap_or_default();
                    ptime = whole.parse().ok().filter(|&p| p > 0);
                } else if let Some(c) = value.strip_prefix("crypto:") {
                    // Lines with other suites are skipped (RFC 4568 6.1:
                    // the answerer picks one it supports).
                    if crypto.is_none() {
                        crypto = crate::media::srtp::SdesKey::parse(c).ok();
                    }
                } else if value.trim() == "rtcp-mux" {
                    rtcp_mux = true;
                } else if let Some(map) = value.strip_prefix("rtpmap:") {
                    if let Some((pt, enc)) = map.split_once(' ') {
                        if let Ok(pt) = pt.trim().parse::<u8>() {
                            rtpmap.push((pt, enc.trim().to_ascii_lowercase()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let (port, fmts) = audio.ok_or(SdpError::NoAudio)?;
    if port == 0 {
        return Err(SdpError::Rejected);
    }
    let ip = media_conn.or(session_conn).ok_or(SdpError::NoConnection)?;
    let name_of = |pt: u8| -> Option<&str> {
        rtpmap
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, e)| e.as_str())
    };
    let codec = fmts
        .iter()
        .find_map(|&pt| match (pt, name_of(pt)) {
            (_, Some(n)) if n.starts_with("pcmu/8000") => Some(Codec::Pcmu),
            (_, Some(n)) if n.starts_with("pcma/8000") => Some(Codec::Pcma),
            (0, None) => Some(Codec::Pcmu),
            (8, None) => Some(Codec::Pcma),
            _ => None,
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf_pt = fmts
        .iter()
        .copied()
        .find(|&pt| name_of(pt).is_some_and(|n| n.starts_with("telephone-event/8000")));
    let mut direction = media_dir.or(session_dir).unwrap_or_default();
    // RFC 2543 hold, still sent by some PBXes: an unspecified address
    // means "do not send to me".
    if ip.is_unspecified() {
        direction = match direction {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            _ => Direction::Inactive,
        };
    }
    Ok(Negotiated {
        remote: SocketAddr::new(ip, port),
        codec,
        dtmf_pt,
        local_dtmf_pt: None,
        direction,
        ptime,
        crypto,
        savp,
        rtcp_mux,
    })
}

/// Make an SDP of ours secure: the audio stream's profile becomes
/// `RTP/SAVP` when `savp` (else stays `RTP/AVP`, the best-effort SDES
/// offer many PBXes understand) and `key` is stated in an `a=crypto`
/// line at the end of the (only) audio section.
pub fn secure(body: &[u8], key: &crate::media::srtp::SdesKey, savp: bool) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return body.to_vec();
    };
    let mut out = String::with_capacity(text.len() + 80);
    for line in text.split_inclusive("\r\n") {
        match line.strip_prefix("m=audio ") {
            Some(rest) if savp => {
                out.push_str("m=audio ");
                out.push_str(&rest.replacen(" RTP/AVP ", " RTP/SAVP ", 1));
            }
            _ => out.push_str(line),
        }
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(&format!("a=crypto:{}\r\n", key.attribute()));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_is_what_the_format_gave() {
        for (addr, id, version) in [("127.0.0.1:40000", 7u64, 1u64), ("[2001:db8::1]:5", 0, 42)] {
            let addr: SocketAddr = addr.parse().unwrap();
            let ip = addr.ip();
            let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
            let want = format!(
                "v=0\r\no=callout {id} {version} IN {family} {ip}\r\ns=callout\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0 8 {dtmf}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-15\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n",
                port = addr.port(),
                dtmf = OFFER_DTMF_PT,
            );
            assert_eq!(String::from_utf8(offer(addr, id, version)).unwrap(), want);
        }
    }

    #[test]
    fn offer_answer() {
        let o = offer("127.0.0.1:40000".parse().unwrap(), 1, 1);
        let n = parse_answer(&o).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.remote.port(), 40000);
        let pcma = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let n = parse_answer(pcma).unwrap();
        assert_eq!((n.codec, n.dtmf_pt), (Codec::Pcma, Some(96)));
        let rejected = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(parse_answer(rejected), Err(SdpError::Rejected));
        let g729 = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5 RTP/AVP 18\r\n";
        assert_eq!(parse_answer(g729), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn srtp_offers_carry_a_key_and_answers_are_read() {
        use crate::media::srtp::SdesKey;
        let k = SdesKey::generate(1);
        let plain = offer("127.0.0.1:40000".parse().unwrap(), 1, 1);
        let o = secure(&plain, &k, true);
        let t = String::from_utf8(o.clone()).unwrap();
        assert!(t.contains("m=audio 40000 RTP/SAVP 0 8 101\r\n"), "{t}");
        assert!(
            t.ends_with(&format!("a=crypto:{}\r\n", k.attribute())),
            "{t}"
        );
        let n = parse_answer(&o).unwrap();
        assert_eq!((n.crypto.as_ref(), n.savp), (Some(&k), true));
        // Best effort: AVP with the key.
        let n = parse_answer(&secure(&plain, &k, false)).unwrap();
        assert_eq!((n.crypto.as_ref(), n.savp), (Some(&k), false));
        assert_eq!(parse_answer(&plain).unwrap().crypto, None);
        // A peer listing an unknown suite first: the one we take is used;
        // a malformed key is no key.
        let b = format!(
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/SAVP 0\r\na=rtcp-mux\r\n\
             a=crypto:1 AEAD_AES_256_GCM inline:AAAA\r\na=crypto:{}\r\n",
            k.with_tag(2).attribute()
        );
        let n = parse_answer(b.as_bytes()).unwrap();
        assert_eq!(n.crypto.map(|c| c.tag), Some(2));
        assert!(n.rtcp_mux);
        let bad = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!\r\n";
        assert_eq!(parse_answer(bad.as_bytes()).unwrap().crypto, None);
    }

    /// RFC 5761: we offer rtcp-mux; an answer that states it back turns
    /// it on, one without it leaves RTCP on port + 1; as the answerer we
    /// state it back only when the offer had it.
    #[test]
    fn rtcp_mux_is_offered_and_followed_only_when_answered() {
        let o = String::from_utf8(offer("127.0.0.1:40000".parse().unwrap(), 1, 1)).unwrap();
        assert!(o.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"), "{o}");
        assert!(o.ends_with("a=sendrecv\r\na=rtcp-mux\r\n"), "{o}");
        let without = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\n";
        let n = parse_answer(without).unwrap();
        assert!(!n.rtcp_mux);
        let with = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\n";
        assert!(parse_answer(with).unwrap().rtcp_mux);
        // Stated for another media section only: not ours.
        let video = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\nm=video 5002 RTP/AVP 96\r\na=rtcp-mux\r\n";
        assert!(!parse_answer(video).unwrap().rtcp_mux);
        let addr: SocketAddr = "127.0.0.1:30000".parse().unwrap();
        let ans = |b: &[u8]| String::from_utf8(answer(addr, 1, &parse_offer(b).unwrap())).unwrap();
        assert!(ans(with).contains("a=rtcp-mux\r\n"));
        assert!(!ans(without).contains("rtcp-mux"));
    }

    #[test]
    fn telephone_event_is_mapped_both_ways() {
        let a = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let n = parse_answer(a).unwrap();
        assert_eq!((n.dtmf_pt, n.local_dtmf_pt), (Some(96), Some(101)));
        let o = parse_offer(a).unwrap();
        assert_eq!((o.dtmf_pt, o.local_dtmf_pt), (Some(96), Some(96)));
        let none = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\n";
        assert_eq!(parse_answer(none).unwrap().local_dtmf_pt, None);
    }

    #[test]
    fn direction_and_ptime() {
        let base = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
        let n = parse_answer(base.as_bytes()).unwrap();
        assert_eq!(
            (n.direction, n.ptime, n.send_ptime()),
            (Direction::SendRecv, None, 20)
        );
        assert!(n.we_send());
        let held = format!("{base}a=sendonly\r\na=ptime:40\r\n");
        let n = parse_offer(held.as_bytes()).unwrap();
        assert_eq!((n.direction, n.send_ptime()), (Direction::SendOnly, 40));
        assert!(!n.we_send());
        let ans = String::from_utf8(answer_versioned(
            "127.0.0.1:4000".parse().unwrap(),
            7,
            3,
            &n,
        ))
        .unwrap();
        assert!(
            ans.contains("a=recvonly\r\n") && ans.contains("a=ptime:40\r\n"),
            "{ans}"
        );
        assert!(ans.contains("o=callout 7 3 IN IP4"), "{ans}");
        // Session-level direction applies when the media has none.
        let s = "v=0\r\nc=IN IP4 10.0.0.1\r\na=inactive\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\na=ptime:30\r\n";
        let n = parse_offer(s.as_bytes()).unwrap();
        assert_eq!(
            (n.direction, n.codec, n.send_ptime()),
            (Direction::Inactive, Codec::Pcma, 20)
        );
        // RFC 2543 hold.
        let old = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5000 RTP/AVP 0\r\n";
        assert_eq!(
            parse_offer(old.as_bytes()).unwrap().direction,
            Direction::SendOnly
        );
    }
}

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
}

/// Build callout's offer.
pub fn offer(addr: SocketAddr, session_id: u64, version: u64) -> Vec<u8> {
    let ip = addr.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=callout {session_id} {version} IN {family} {ip}\r\ns=callout\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0 8 {dtmf}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
        port = addr.port(),
        dtmf = OFFER_DTMF_PT,
    )
    .into_bytes()
}

/// Build an answer to an offer: the chosen codec, and telephone-event
/// with the offerer's payload type when it offered one (RFC 3264 6.1).
pub fn answer(addr: SocketAddr, session_id: u64, chosen: &Negotiated) -> Vec<u8> {
    let ip = addr.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let (pt, name) = match chosen.codec {
        Codec::Pcmu => (0, "PCMU"),
        Codec::Pcma => (8, "PCMA"),
    };
    let mut s = format!(
        "v=0\r\no=callout {session_id} 1 IN {family} {ip}\r\ns=callout\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
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
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

/// What the far end accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP (until symmetric RTP latches on the real source).
    pub remote: SocketAddr,
    pub codec: Codec,
    /// The far end's telephone-event payload type, when it accepted one.
    pub dtmf_pt: Option<u8>,
}

/// Parse an answer (or an offer from a peer) and pick the codec: the first
/// of the answer's formats that is PCMU or PCMA.
pub fn parse_answer(body: &[u8]) -> Result<Negotiated, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_conn: Option<IpAddr> = None;
    let mut media_conn: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut rtpmap: Vec<(u8, String)> = Vec::new();
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
                    let _proto = parts.next();
                    let fmts = parts.filter_map(|p| p.parse::<u8>().ok()).collect();
                    audio = Some((port, fmts));
                } else {
                    // Any further media section ends the audio one.
                    seen_audio |= media == "audio";
                }
            }
            "a" if in_audio => {
                if let Some(map) = value.strip_prefix("rtpmap:") {
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
    Ok(Negotiated {
        remote: SocketAddr::new(ip, port),
        codec,
        dtmf_pt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Our side of one call's SDP offer/answer (RFC 3264, RFC 6337) after the
//! first exchange: answers to the far end's new offers (re-INVITE, UPDATE),
//! the offer an offerless re-INVITE asks for, and the `o=` version that
//! must grow by one with every SDP we send (RFC 3264 8). Sans-IO, no
//! state but numbers: the call feeds it bodies and sends what it returns.

use std::net::SocketAddr;

use super::sdp::{self, Negotiated, SdpError};
use crate::media::srtp::SdesKey;

/// What we said in SDP so far, so the next SDP we send fits the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSdp {
    /// Our RTP address, as our first offer stated it.
    addr: SocketAddr,
    session_id: u64,
    /// The `o=` version of the last SDP we sent.
    version: u64,
    /// Our SRTP key and whether we offered `RTP/SAVP` (SRTP required):
    /// every later SDP of ours states the same key.
    security: Option<(SdesKey, bool)>,
}

impl LocalSdp {
    /// Learn address and origin from our own first offer. `None` when the
    /// offer is not ours to parse (a test's dummy body): then no new offer
    /// can be answered and re-INVITEs get 488.
    pub fn from_offer(offer: &[u8]) -> Option<LocalSdp> {
        let ours = sdp::parse_offer(offer).ok()?;
        let text = std::str::from_utf8(offer).ok()?;
        let origin = text.lines().find_map(|l| l.trim_end().strip_prefix("o="))?;
        let mut f = origin.split_whitespace().skip(1);
        let session_id = f.next()?.parse().ok()?;
        let version = f.next()?.parse().ok()?;
        Some(LocalSdp {
            addr: ours.remote,
            session_id,
            version,
            security: ours.crypto.map(|k| (k, ours.savp)),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answer a new offer from the far end: the media to use and the SDP
    /// to send. An offer we cannot take (no audio, port 0, no PCMU/PCMA,
    /// malformed) is an error: the request gets 488 and the session stays
    /// as it was (RFC 3261 14.2).
    pub fn answer_offer(&mut self, offer: &[u8]) -> Result<(Vec<u8>, Negotiated), SdpError> {
        let media = sdp::parse_offer(offer)?;
        // SRTP once required stays required: a new offer without a key
        // would move the call to clear RTP.
        if matches!(self.security, Some((_, true))) && media.crypto.is_none() {
            return Err(SdpError::NoCrypto);
        }
        self.version += 1;
        let mut body = sdp::answer_versioned(self.addr, self.session_id, self.version, &media);
        if let (Some((key, _)), Some(theirs)) = (&self.security, &media.crypto) {
            // The answer's line carries the tag of the offer's line it
            // accepts (RFC 4568 5.1.2), with our own key.
            body = sdp::secure(&body, &key.with_tag(theirs.tag), media.savp);
        }
        Ok((body, media))
    }

    /// An offer for a re-INVITE that came without one (RFC 3261 14.2: the
    /// 2xx carries our offer, the ACK the answer). It is our full first
    /// offer again, with the next version.
    pub fn reoffer(&mut self) -> Vec<u8> {
        self.version += 1;
        let offer = sdp::offer(self.addr, self.session_id, self.version);
        match &self.security {
            Some((key, savp)) => sdp::secure(&offer, key, *savp),
            None => offer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::sdp::{Codec, Direction};

    fn offer(extra: &str, port: u16, fmts: &str) -> Vec<u8> {
        format!(
            "v=0\r\no=pbx 5 6 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {fmts}\r\na=rtpmap:96 telephone-event/8000\r\n{extra}"
        )
        .into_bytes()
    }

    fn local() -> LocalSdp {
        LocalSdp::from_offer(&sdp::offer("127.0.0.1:20000".parse().unwrap(), 77, 1)).unwrap()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn hold_resume_move_and_codec_change_are_answered() {
        let mut l = local();
        assert_eq!(l.version(), 1);
        // Hold: sendonly is answered recvonly, and we stop sending.
        let (ans, m) = l
            .answer_offer(&offer("a=sendonly\r\n", 4000, "0 96"))
            .unwrap();
        assert!(!m.we_send());
        let a = text(&ans);
        assert!(a.contains("a=recvonly\r\n"), "{a}");
        assert!(a.contains("o=callout 77 2 IN IP4 127.0.0.1"), "{a}");
        assert!(a.contains("m=audio 20000 RTP/AVP 0 96\r\n"), "{a}");
        // Inactive is answered inactive.
        let (ans, m) = l
            .answer_offer(&offer("a=inactive\r\n", 4000, "0 96"))
            .unwrap();
        assert!(!m.we_send() && text(&ans).contains("a=inactive\r\n"));
        // Resume on a new port with PCMA only: media moves, codec changes.
        let (ans, m) = l.answer_offer(&offer("", 4002, "8 96")).unwrap();
        assert_eq!(
            (m.remote, m.codec, m.direction, m.dtmf_pt, m.local_dtmf_pt),
            (
                "10.0.0.9:4002".parse().unwrap(),
                Codec::Pcma,
                Direction::SendRecv,
                Some(96),
                Some(96)
            )
        );
        let a = text(&ans);
        assert!(
            a.contains("m=audio 20000 RTP/AVP 8 96\r\n") && a.contains("a=sendrecv"),
            "{a}"
        );
        assert!(a.contains("o=callout 77 4 "), "{a}");
    }

    #[test]
    fn unusable_offers_are_refused_and_do_not_bump_the_version() {
        let mut l = local();
        for bad in [
            offer("", 4000, "18"),
            offer("", 0, "0"),
            b"v=0\r\nc=IN IP4 10.0.0.9\r\n".to_vec(),
            vec![0xff, 0xfe],
        ] {
            assert!(l.answer_offer(&bad).is_err());
        }
        assert_eq!(l.version(), 1);
    }

    #[test]
    fn srtp_keys_stay_in_every_later_sdp_and_cannot_be_dropped() {
        let key = SdesKey::generate(1);
        let first = sdp::secure(
            &sdp::offer("127.0.0.1:20000".parse().unwrap(), 77, 1),
            &key,
            true,
        );
        let mut l = LocalSdp::from_offer(&first).unwrap();
        let o = text(&l.reoffer());
        assert!(
            o.contains("RTP/SAVP") && o.contains(&key.attribute()),
            "{o}"
        );
        // A re-offer without a key is refused; with one it is answered
        // with our key under the offer's tag.
        assert_eq!(
            l.answer_offer(&offer("", 4000, "0 96")),
            Err(SdpError::NoCrypto)
        );
        let theirs = SdesKey::generate(5);
        let secured = sdp::secure(&offer("", 4000, "0 96"), &theirs, true);
        let (ans, m) = l.answer_offer(&secured).unwrap();
        assert_eq!(m.crypto, Some(theirs));
        let a = text(&ans);
        assert!(
            a.contains(&key.with_tag(5).attribute()) && a.contains("RTP/SAVP"),
            "{a}"
        );
    }

    #[test]
    fn an_offerless_reinvite_gets_our_offer_with_the_next_version() {
        let mut l = local();
        let o = text(&l.reoffer());
        assert!(
            o.contains("o=callout 77 2 ") && o.contains("RTP/AVP 0 8 101"),
            "{o}"
        );
        assert_eq!(LocalSdp::from_offer(b"not sdp"), None);
    }
}

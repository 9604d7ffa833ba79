//! SRTP keyed by SDES (RFC 3711, RFC 4568), sans-IO: the `a=crypto`
//! attribute we offer and read back, and one call's pair of contexts
//! (ours to protect, the peer's to unprotect). The transforms themselves
//! (AES-CM, HMAC-SHA1-80, key derivation, the replay window) are
//! `webrtc-srtp`'s: a maintained implementation, not ours to get wrong.
//!
//! SDES puts the keys in the SDP, so they are only as secret as the
//! signalling: the driver refuses to offer them on anything but TLS.

use base64::Engine as _;
use rand::RngCore as _;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

/// The one suite offered and accepted (RFC 4568 6.2.1; what every SDES
/// peer implements).
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
/// Packets behind the newest one still accepted once (RFC 3711 3.3.2
/// asks for at least 64).
const REPLAY_WINDOW: usize = 128;

/// Whether a trunk's calls use SRTP (`srtp` per trunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Offer `RTP/SAVP` with a key; an answer without one ends the call.
    Required,
    /// Offer `RTP/AVP` with a key (best effort): SRTP when the answer
    /// carries a key, plain RTP otherwise.
    Optional,
    /// Plain RTP.
    Off,
}

impl std::str::FromStr for SrtpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(SrtpMode::Required),
            "optional" => Ok(SrtpMode::Optional),
            "off" => Ok(SrtpMode::Off),
            _ => Err(format!("{s:?}: use required, optional or off")),
        }
    }
}

/// One side's master key and salt with the tag of its `a=crypto` line.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    pub tag: u32,
    material: [u8; KEY_LEN + SALT_LEN],
}

impl std::fmt::Debug for SdesKey {
    // Keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SdesKey {{ tag: {}, material: <redacted> }}", self.tag)
    }
}

/// Why an `a=crypto` value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("malformed a=crypto attribute")]
    Malformed,
    #[error("crypto suite {0:?} not supported (only {SUITE})")]
    Suite(String),
    #[error("key parameters not supported (lifetime/MKI or session parameters)")]
    Params,
}

impl SdesKey {
    /// A fresh key and salt from the operating system's CSPRNG.
    pub fn generate(tag: u32) -> SdesKey {
        let mut material = [0u8; KEY_LEN + SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut material);
        SdesKey { tag, material }
    }

    /// The same key under another tag (an answer echoes the offer's tag).
    pub fn with_tag(&self, tag: u32) -> SdesKey {
        SdesKey {
            tag,
            material: self.material,
        }
    }

    /// The value of `a=crypto:` (after the colon).
    pub fn attribute(&self) -> String {
        format!(
            "{} {SUITE} inline:{}",
            self.tag,
            base64::engine::general_purpose::STANDARD.encode(self.material)
        )
    }

    /// Parse the value of one `a=crypto:` line (RFC 4568 9.1). Only our
    /// suite with a single inline key; a lifetime is accepted (it only
    /// bounds how long the key may be used), an MKI or session
    /// parameters are not (neither side here would apply them).
    pub fn parse(value: &str) -> Result<SdesKey, CryptoError> {
        let mut f = value.split_whitespace();
        let tag: u32 = f
            .next()
            .and_then(|t| t.parse().ok())
            .filter(|&t| t < 1_000_000_000)
            .ok_or(CryptoError::Malformed)?;
        let suite = f.next().ok_or(CryptoError::Malformed)?;
        if suite != SUITE {
            return Err(CryptoError::Suite(suite.chars().take(40).collect()));
        }
        let key = f
            .next()
            .and_then(|k| k.strip_prefix("inline:"))
            .ok_or(CryptoError::Malformed)?;
        if f.next().is_some() || key.contains(';') {
            return Err(CryptoError::Params);
        }
        let mut parts = key.split('|');
        let b64 = parts.next().unwrap_or_default();
        for p in parts {
            // `2^31` or a plain number is a lifetime; `1:4` is an MKI.
            if p.contains(':') {
                return Err(CryptoError::Params);
            }
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| CryptoError::Malformed)?;
        let material: [u8; KEY_LEN + SALT_LEN] =
            bytes.try_into().map_err(|_| CryptoError::Malformed)?;
        Ok(SdesKey { tag, material })
    }

    fn key(&self) -> &[u8] {
        &self.material[..KEY_LEN]
    }

    fn salt(&self) -> &[u8] {
        &self.material[KEY_LEN..]
    }
}

/// Why a packet could not be protected or unprotected.
#[derive(Debug, thiserror::Error)]
#[error("srtp: {0}")]
pub struct SrtpError(String);

/// One call's SRTP: our key protects what we send, the peer's unprotects
/// what it sends (RFC 4568 6.1: each side sends with its own key).
pub struct Srtp {
    tx: Context,
    rx: Context,
    remote: SdesKey,
}

impl Srtp {
    pub fn new(local: &SdesKey, remote: &SdesKey) -> Result<Srtp, SrtpError> {
        let ctx = |k: &SdesKey, replay: bool| {
            let (rtp, rtcp) = if replay {
                (
                    Some(srtp_replay_protection(REPLAY_WINDOW)),
                    Some(srtcp_replay_protection(REPLAY_WINDOW)),
                )
            } else {
                (None, None)
            };
            Context::new(
                k.key(),
                k.salt(),
                ProtectionProfile::Aes128CmHmacSha1_80,
                rtp,
                rtcp,
            )
            .map_err(|e| SrtpError(e.to_string()))
        };
        Ok(Srtp {
            tx: ctx(local, false)?,
            rx: ctx(remote, true)?,
            remote: remote.clone(),
        })
    }

    /// The peer's key this context was made with.
    pub fn remote_key(&self) -> &SdesKey {
        &self.remote
    }

    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        self.tx
            .encrypt_rtp(packet)
            .map(|b| b.to_vec())
            .map_err(|e| SrtpError(e.to_string()))
    }

    /// Authenticate (tag and replay window) and decrypt. A failure leaves
    /// the window as it was: a forged packet cannot push real ones out.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        // webrtc-srtp 0.17 slices `len - tag` without checking: a packet
        // shorter than a header and its tag panics inside the crate.
        if packet.len() < MIN_SRTP {
            return Err(SrtpError(format!(
                "{} bytes: too short for SRTP",
                packet.len()
            )));
        }
        let rx = &mut self.rx;
        guarded(|| rx.decrypt_rtp(packet).map(|b| b.to_vec()))
    }

    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        self.tx
            .encrypt_rtcp(packet)
            .map(|b| b.to_vec())
            .map_err(|e| SrtpError(e.to_string()))
    }

    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if packet.len() < MIN_SRTCP {
            return Err(SrtpError(format!(
                "{} bytes: too short for SRTCP",
                packet.len()
            )));
        }
        let rx = &mut self.rx;
        guarded(|| rx.decrypt_rtcp(packet).map(|b| b.to_vec()))
    }
}

/// RTP header and the 80-bit tag.
const MIN_SRTP: usize = 12 + 10;
/// RTCP header, sender SSRC, the SRTCP index and the tag.
const MIN_SRTCP: usize = 8 + 4 + 10;

/// Bytes from the network go through a third-party crate: whatever else
/// in them it does not check must not take the media thread down.
fn guarded(f: impl FnOnce() -> Result<Vec<u8>, webrtc_srtp::Error>) -> Result<Vec<u8>, SrtpError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| SrtpError(e.to_string())),
        Err(_) => Err(SrtpError("malformed packet refused".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0x55; 160]);
        p
    }

    #[test]
    fn attribute_round_trip_and_refusals() {
        let k = SdesKey::generate(1);
        let a = k.attribute();
        assert!(a.starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"), "{a}");
        assert_eq!(SdesKey::parse(&a).unwrap(), k);
        assert!(!format!("{k:?}").contains(&a[33..]), "key in Debug");
        // Two keys are never the same (CSPRNG).
        assert_ne!(SdesKey::generate(1), k);
        // A lifetime is fine; MKI, session parameters, other suites not.
        let b64 = &a["1 AES_CM_128_HMAC_SHA1_80 inline:".len()..];
        assert!(SdesKey::parse(&format!("2 {SUITE} inline:{b64}|2^31")).is_ok());
        assert_eq!(
            SdesKey::parse(&format!("2 {SUITE} inline:{b64}|2^20|1:4")),
            Err(CryptoError::Params)
        );
        assert_eq!(
            SdesKey::parse(&format!("2 {SUITE} inline:{b64} UNENCRYPTED_SRTP")),
            Err(CryptoError::Params)
        );
        assert!(matches!(
            SdesKey::parse(&format!("1 AES_CM_128_HMAC_SHA1_32 inline:{b64}")),
            Err(CryptoError::Suite(_))
        ));
        for bad in [
            "",
            "x",
            "1",
            "1 AES_CM_128_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 inline:",
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            "1 AES_CM_128_HMAC_SHA1_80 key:abc",
            "99999999999 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        ] {
            assert!(SdesKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn protected_packets_round_trip_and_tampering_or_replay_is_refused() {
        let (a, b) = (SdesKey::generate(1), SdesKey::generate(1));
        let mut alice = Srtp::new(&a, &b).unwrap();
        let mut bob = Srtp::new(&b, &a).unwrap();
        let p = rtp(1);
        let s = alice.protect_rtp(&p).unwrap();
        assert_eq!(s.len(), p.len() + 10, "80-bit tag");
        assert_ne!(&s[12..p.len()], &p[12..], "payload encrypted");
        assert_eq!(&s[..12], &p[..12], "header in clear");
        // Tampered: any flipped bit fails the tag.
        for at in [1, 12, 100, s.len() - 1] {
            let mut t = s.clone();
            t[at] ^= 0x01;
            assert!(bob.unprotect_rtp(&t).is_err(), "flip at {at}");
        }
        // The genuine one still passes after the forgeries.
        assert_eq!(bob.unprotect_rtp(&s).unwrap(), p);
        // Replayed: refused.
        assert!(bob.unprotect_rtp(&s).is_err());
        // Later packets, and one slightly out of order, pass.
        let s3 = alice.protect_rtp(&rtp(3)).unwrap();
        let s2 = alice.protect_rtp(&rtp(2)).unwrap();
        assert_eq!(bob.unprotect_rtp(&s3).unwrap(), rtp(3));
        assert_eq!(bob.unprotect_rtp(&s2).unwrap(), rtp(2));
        // Someone else's key: refused.
        let mut eve = Srtp::new(&SdesKey::generate(1), &a).unwrap();
        let forged = eve.protect_rtp(&rtp(4)).unwrap();
        assert!(bob.unprotect_rtp(&forged).is_err());
        // Junk of any length never panics.
        for n in 0..40 {
            let _ = bob.unprotect_rtp(&vec![0x80; n]);
            let _ = bob.unprotect_rtcp(&vec![0x81; n]);
        }
        // RTCP too.
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 7];
        let s = alice.protect_rtcp(&rr).unwrap();
        assert_eq!(bob.unprotect_rtcp(&s).unwrap(), rr);
        let mut t = s.clone();
        t[5] ^= 1;
        assert!(bob.unprotect_rtcp(&t).is_err());
    }

    /// Known answer: the RFC 3711 Appendix B.3 master key and salt, and
    /// the packet libsrtp's own driver protects with them (SSRC
    /// 0xcafebabe, sequence 0x1234, ROC 0), byte for byte. A round trip
    /// through one library cannot catch a wrong key derivation; this can.
    #[test]
    fn known_answer_from_libsrtp() {
        let material: [u8; 30] = [
            0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde,
            0x41, 0x39, 0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a,
            0xab, 0xe6,
        ];
        let k = SdesKey { tag: 1, material };
        let mut plain = vec![
            0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe,
        ];
        plain.extend_from_slice(&[0xab; 16]);
        let expected: [u8; 38] = [
            0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0x4e, 0x55,
            0xdc, 0x4c, 0xe7, 0x99, 0x78, 0xd8, 0x8c, 0xa4, 0xd2, 0x15, 0x94, 0x9d, 0x24, 0x02,
            0xb7, 0x8d, 0x6a, 0xcc, 0x99, 0xea, 0x17, 0x9b, 0x8d, 0xbb,
        ];
        let mut x = Srtp::new(&k, &k).unwrap();
        assert_eq!(x.protect_rtp(&plain).unwrap(), expected);
        assert_eq!(x.unprotect_rtp(&expected).unwrap(), plain);
    }
}

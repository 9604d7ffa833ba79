//! Media targets: SDP answers, RTP datagrams into a live session, and WAV
//! files as `callout dtmf detect` and prompt loading read them.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::media::audio::{Prompt, FRAME};
use crate::media::inband::detect_all;
use crate::media::session::{DtmfMode, MediaEvent, MediaPolicy, MediaSession};
use crate::sip::sdp::{self, Codec, Negotiated};

/// An SDP answer: parse it; if callout would use it, the answer callout
/// builds from the result must parse back to the same choice.
pub fn sdp(data: &[u8]) -> bool {
    let Ok(n) = sdp::parse_answer(data) else {
        return false;
    };
    let again = sdp::answer(n.remote, 1, &n);
    match sdp::parse_answer(&again) {
        Ok(back) => {
            // Direction is answered (sendonly becomes recvonly) and the
            // ptime is the one callout sends, so compare the choice itself.
            assert_eq!(
                (back.remote, back.codec, back.dtmf_pt, back.ptime),
                (n.remote, n.codec, n.dtmf_pt, Some(n.send_ptime())),
                "our answer to this SDP means something else"
            );
            // With an SRTP key, the secured answer keeps the choice and
            // states exactly that key.
            if let Some(k) = &n.crypto {
                let sec = sdp::secure(&again, k, n.savp);
                let s = sdp::parse_answer(&sec).expect("a secured answer parses");
                assert_eq!((s.crypto.as_ref(), s.savp), (Some(k), n.savp));
                assert_eq!((s.remote, s.codec), (n.remote, n.codec));
            }
        }
        Err(e) => panic!("our answer to this SDP does not parse: {e}"),
    }
    true
}

/// RTCP datagrams (split on `|RTCP|`): the compound parser, the
/// session's RTCP state, and a live session fed them on its RTCP port and
/// (rtcp-mux) its RTP port. A sender report that parses must read back
/// the same from the report we build with its fields.
pub fn rtcp(data: &[u8]) -> bool {
    use crate::media::rtcp::{self, Packet};
    let peer: SocketAddr = PEER.parse().expect("constant address");
    let peer_rtcp: SocketAddr = "127.0.0.1:4001".parse().expect("constant address");
    let mut n = Negotiated {
        remote: peer,
        codec: Codec::Pcmu,
        dtmf_pt: Some(101),
        local_dtmf_pt: Some(101),
        direction: Default::default(),
        ptime: None,
        crypto: None,
        savp: false,
        rtcp_mux: false,
    };
    let mut plain = MediaSession::new(&n, SSRC, 1, 1);
    n.rtcp_mux = true;
    let mut muxed = MediaSession::new(&n, SSRC, 1, 1);
    let mut any = false;
    for (i, d) in super::split(data, b"|RTCP|").enumerate() {
        let now = i as u64 * 700;
        plain.tick();
        plain.handle_rtcp(now, peer_rtcp, d);
        muxed.handle_packet(now, peer, d);
        let _ = plain.poll_rtcp(now);
        let _ = muxed.poll_rtcp(now);
        let Ok(pkts) = rtcp::parse(d) else { continue };
        any = true;
        if let Some(Packet::Sr {
            ssrc,
            ntp,
            rtp_ts,
            packets,
            octets,
            reports,
        }) = pkts.first()
        {
            let built = rtcp::build_sr(
                *ssrc,
                *ntp,
                *rtp_ts,
                *packets,
                *octets,
                reports.first().copied(),
                "fuzz",
            );
            let back = rtcp::parse(&built).expect("our own report parses");
            let want = Packet::Sr {
                ssrc: *ssrc,
                ntp: *ntp,
                rtp_ts: *rtp_ts,
                packets: *packets,
                octets: *octets,
                reports: reports.iter().take(1).copied().collect(),
            };
            assert_eq!(
                back.first(),
                Some(&want),
                "our report reads back differently"
            );
        }
    }
    let f = plain.rtcp_figures();
    assert!(f.remote_fraction_lost_pct <= 100.0, "fraction over 100 %");
    any
}

const PEER: &str = "127.0.0.1:4000";
const STRANGER: &str = "127.0.0.1:4001";
const SSRC: u32 = 0x1234_5678;

/// A short DTMF "1" as our own prompt, so the echo guard has work to do.
fn prompt() -> Arc<Prompt> {
    static P: OnceLock<Arc<Prompt>> = OnceLock::new();
    P.get_or_init(|| {
        let pcm = (0..1600)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let s = (2.0 * std::f32::consts::PI * 697.0 * t).sin()
                    + (2.0 * std::f32::consts::PI * 1209.0 * t).sin();
                (s * 8000.0) as i16
            })
            .collect();
        Prompt::from_pcm("fuzz", pcm)
    })
    .clone()
}

/// Datagrams into one call's media session while it plays a prompt and
/// sends a key. Byte 0 picks the setup: bits 0-1 the DTMF mode, bit 2
/// symmetric RTP, bit 3 PCMA, bit 4 no telephone-event. Then records of
/// `[step, len, len bytes]`: bit 0 of `step` sends from a stranger's
/// address, the rest is the time since the previous datagram in 2 ms
/// units; the session ticks every 20 ms in between.
///
/// Invariants: what the session sends is RTP with our SSRC and
/// consecutive sequence numbers; every datagram is counted exactly once
/// (taken or dropped for one reason); without symmetric RTP a stranger's
/// datagram never yields a key or moves the peer.
pub fn rtp_session(data: &[u8]) -> bool {
    let Some((&setup, mut rest)) = data.split_first() else {
        return false;
    };
    let dtmf = match setup & 3 {
        1 => DtmfMode::Rfc4733,
        2 => DtmfMode::Inband,
        _ => DtmfMode::Both,
    };
    let symmetric = setup & 4 != 0;
    let peer: SocketAddr = PEER.parse().expect("constant address");
    let stranger: SocketAddr = STRANGER.parse().expect("constant address");
    let negotiated = Negotiated {
        remote: peer,
        codec: if setup & 8 != 0 {
            Codec::Pcma
        } else {
            Codec::Pcmu
        },
        dtmf_pt: (setup & 16 == 0).then_some(101),
        local_dtmf_pt: (setup & 16 == 0).then_some(101),
        direction: Default::default(),
        ptime: None,
        crypto: None,
        savp: false,
        rtcp_mux: false,
    };
    let mut s = MediaSession::new(&negotiated, SSRC, 100, 1000);
    s.set_policy(MediaPolicy {
        dtmf,
        symmetric_rtp: symmetric,
    });
    s.start_amd(Default::default());
    s.play(1, prompt());
    s.send_digit('5', 100);
    let (mut now_ms, mut ticked_ms, mut fed) = (0u64, 0u64, 0u64);
    let mut next_seq: u16 = 100;
    let mut took_any = false;
    while rest.len() >= 2 {
        let (step, len) = (rest[0], rest[1] as usize);
        let end = (2 + len).min(rest.len());
        let packet = &rest[2..end];
        rest = &rest[end..];
        now_ms += u64::from(step >> 1) * 2;
        while ticked_ms + 20 <= now_ms {
            ticked_ms += 20;
            let out = s.tick();
            let rtp = rtp_rs::RtpReader::new(out).expect("we send valid RTP");
            assert_eq!(rtp.ssrc(), SSRC);
            assert_eq!(u16::from(rtp.sequence_number()), next_seq);
            next_seq = next_seq.wrapping_add(1);
            assert!(out.len() <= 12 + FRAME);
            while s.poll_event().is_some() {}
        }
        let from_stranger = step & 1 != 0;
        let before = s.remote();
        let received = s.stats().received;
        s.handle_packet(now_ms, if from_stranger { stranger } else { peer }, packet);
        fed += 1;
        took_any |= s.stats().received > received;
        while let Some(e) = s.poll_event() {
            if from_stranger && !symmetric {
                panic!("a datagram from a stranger produced {e:?}");
            }
            if let MediaEvent::Digit(d) = e {
                assert!("0123456789*#ABCD".contains(d.digit), "digit {d:?}");
            }
        }
        if from_stranger && !symmetric {
            assert_eq!(s.remote(), before, "a stranger moved the peer");
        }
        let st = s.stats();
        assert_eq!(
            st.received + st.malformed + st.wrong_source + st.wrong_ssrc + st.wrong_payload_type,
            fed,
            "a datagram was not counted exactly once: {st:?}"
        );
    }
    took_any
}

/// A WAV file, read as `callout dtmf detect` does (mono, resampled to
/// 8 kHz, in-band detector) and as a recorded prompt is loaded. The
/// audio must not grow out of proportion to the file.
pub fn wav(data: &[u8]) -> bool {
    // hound reads from a path here as in production; a file per thread
    // keeps parallel runs apart.
    thread_local! {
        static PATH: std::path::PathBuf = std::env::temp_dir().join(format!(
            "callout-fuzz-{}-{:?}.wav",
            std::process::id(),
            std::thread::current().id()
        ).replace(['(', ')'], ""));
    }
    PATH.with(|path| {
        if std::fs::write(path, data).is_err() {
            return false;
        }
        match Prompt::load(path) {
            Ok(p) => {
                // At most 8 kHz out per 1 kHz in, and a sample takes at
                // least a byte: more means the resampler ran away.
                assert!(
                    p.pcm.len() <= 8 * data.len() + 64,
                    "{} samples from a {}-byte file",
                    p.pcm.len(),
                    data.len()
                );
                let _ = detect_all(&p.pcm);
                assert_eq!(p.pcm.len(), p.ulaw.len());
                true
            }
            Err(_) => false,
        }
    })
}

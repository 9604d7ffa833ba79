//! SRTP and RTCP in the media session: two sessions, ours and a peer's,
//! wired back to back with explicit time.

use std::net::SocketAddr;

use super::*;
use crate::media::srtp::SdesKey;

const OURS: &str = "127.0.0.1:30000";
const PEER: &str = "127.0.0.1:40000";

fn neg(remote: &str) -> Negotiated {
    Negotiated {
        remote: remote.parse().unwrap(),
        codec: Codec::Pcmu,
        dtmf_pt: Some(101),
        local_dtmf_pt: Some(101),
        direction: Default::default(),
        ptime: None,
        crypto: None,
        savp: true,
        rtcp_mux: false,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rtcp_addr(s: &str) -> SocketAddr {
    let a = addr(s);
    SocketAddr::new(a.ip(), a.port() + 1)
}

/// Our session and the peer's, each with its own key.
fn pair() -> (MediaSession, MediaSession) {
    let (k_ours, k_peer) = (SdesKey::generate(1), SdesKey::generate(1));
    let mut ours = MediaSession::new(&neg(PEER), 7, 100, 1000);
    let mut peer = MediaSession::new(&neg(OURS), 9, 500, 9000);
    ours.set_srtp(k_ours.clone(), &k_peer).unwrap();
    peer.set_srtp(k_peer, &k_ours).unwrap();
    (ours, peer)
}

fn digits(s: &mut MediaSession) -> String {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Digit(d) => Some(d.digit),
            _ => None,
        })
        .collect()
}

#[test]
fn srtp_media_flows_and_tampered_or_replayed_packets_are_dropped_and_counted() {
    let (mut ours, mut peer) = pair();
    assert!(ours.is_secure());
    ours.play(1, Prompt::from_pcm("p", vec![3000; 1600]));
    let mut sent = Vec::new();
    for t in 0..10u64 {
        let p = ours.tick().to_vec();
        // 12 header + 160 payload + 10 tag, payload not in clear.
        assert_eq!(p.len(), 12 + 160 + 10);
        sent.push(p.clone());
        peer.handle_packet(t * 20, addr(OURS), &p);
    }
    assert_eq!((peer.stats().received, peer.stats().auth_failed), (10, 0));
    // Replayed and tampered copies: dropped, counted, nothing else moves.
    peer.handle_packet(300, addr(OURS), &sent[3]);
    let mut t = ours.tick().to_vec();
    t[20] ^= 0x40;
    peer.handle_packet(320, addr(OURS), &t);
    assert_eq!((peer.stats().received, peer.stats().auth_failed), (10, 2));
    // A clear RTP packet (someone without the key) is refused too.
    let clear = rtp_rs::RtpPacketBuilder::new()
        .payload_type(0)
        .sequence(rtp_rs::Seq::from(9000))
        .timestamp(0)
        .ssrc(7)
        .payload(&[0u8; 160])
        .build()
        .unwrap();
    peer.handle_packet(340, addr(OURS), &clear);
    assert_eq!(peer.stats().auth_failed, 3);

    // A key press whose event packets were tampered with is never read;
    // the same press intact is.
    ours.stop();
    assert!(ours.send_digit('5', 100));
    for i in 0..10u64 {
        let mut p = ours.tick().to_vec();
        p[14] ^= 0x01;
        peer.handle_packet(400 + i * 20, addr(OURS), &p);
    }
    assert_eq!(digits(&mut peer), "");
    assert!(ours.send_digit('7', 100));
    for i in 0..10u64 {
        let p = ours.tick().to_vec();
        peer.handle_packet(800 + i * 20, addr(OURS), &p);
    }
    assert_eq!(digits(&mut peer), "7");
}

#[test]
fn sender_reports_carry_loss_jitter_and_round_trip_both_ways() {
    let (mut ours, mut peer) = pair();
    ours.set_wallclock(1_700_000_000_000);
    peer.set_wallclock(1_700_000_000_000);
    let mut sent = 0;
    // 10 s of media from us, every 10th packet lost on the way; the peer
    // sends its own media back so both have a stream to report on.
    for t in 0..500u64 {
        let now = t * 20;
        let p = ours.tick().to_vec();
        sent += 1;
        if t % 10 != 5 {
            peer.handle_packet(now + 2, addr(OURS), &p);
        }
        let q = peer.tick().to_vec();
        ours.handle_packet(now + 2, addr(PEER), &q);
        if let Some(sr) = ours.poll_rtcp(now) {
            peer.handle_rtcp(now + 1, rtcp_addr(OURS), &sr);
        }
        if let Some(sr) = peer.poll_rtcp(now) {
            // The peer holds our SR a while (DLSR); the wire takes 1 ms.
            ours.handle_rtcp(now + 1, rtcp_addr(PEER), &sr);
        }
    }
    assert_eq!(sent, 500);
    let st = ours.stats();
    assert!(st.rtcp_sent >= 2 && st.rtcp_received >= 2, "{st:?}");
    let f = ours.rtcp_figures();
    assert!(f.reports >= 1, "{f:?}");
    assert!(
        (f.remote_fraction_lost_pct - 10.0).abs() < 1.5,
        "fraction {f:?}"
    );
    // Up to the last report, about one in ten of what we sent.
    assert!((33..=40).contains(&f.remote_cumulative_lost), "{f:?}");
    let rtt = f.rtt_ms.expect("round trip");
    assert!((0.0..=5.0).contains(&rtt), "rtt {rtt}");
    assert_eq!(f.local_cumulative_lost, 0);
    // SRTCP from another address, or tampered, is not read.
    let before = ours.stats();
    let sr = peer.poll_rtcp(20_000).unwrap();
    ours.handle_rtcp(20_000, addr("127.0.0.1:9"), &sr);
    let mut bad = sr.clone();
    bad[10] ^= 1;
    ours.handle_rtcp(20_000, rtcp_addr(PEER), &bad);
    let after = ours.stats();
    assert_eq!(after.rtcp_rejected, before.rtcp_rejected + 1);
    assert_eq!(after.auth_failed, before.auth_failed + 1);
    assert_eq!(after.rtcp_received, before.rtcp_received);
}

#[test]
fn plain_sessions_report_too_and_hostile_rtcp_never_panics() {
    let mut ours = MediaSession::new(&neg(PEER), 7, 0, 0);
    let mut peer = MediaSession::new(&neg(OURS), 9, 0, 0);
    for t in 0..200u64 {
        let p = ours.tick().to_vec();
        assert_eq!(p.len(), 172, "no tag without SRTP");
        peer.handle_packet(t * 20, addr(OURS), &p);
        if let Some(sr) = peer.poll_rtcp(t * 20) {
            ours.handle_rtcp(t * 20, rtcp_addr(PEER), &sr);
        }
    }
    // The peer heard our stream, so its reports carry a block about it;
    // it never had an SR of ours, so there is no round trip.
    let f = ours.rtcp_figures();
    assert!(f.reports >= 1 && f.remote_cumulative_lost == 0, "{f:?}");
    assert_eq!(f.rtt_ms, None);
    for n in 0..64 {
        ours.handle_rtcp(0, rtcp_addr(PEER), &vec![0x80; n]);
        ours.handle_packet(0, addr(PEER), &vec![0x80; n]);
    }
}

/// rtcp-mux (RFC 5761) on an SRTP call: each side's SRTCP goes to the
/// other's RTP port, is told apart from SRTP there, authenticates and is
/// read; without mux the same report on the RTP port would be taken for
/// RTP and refused.
#[test]
fn rtcp_mux_shares_the_rtp_port_both_ways() {
    let (k_ours, k_peer) = (SdesKey::generate(1), SdesKey::generate(1));
    let mux = |remote: &str| Negotiated {
        rtcp_mux: true,
        ..neg(remote)
    };
    let mut ours = MediaSession::new(&mux(PEER), 7, 100, 1000);
    let mut peer = MediaSession::new(&mux(OURS), 9, 500, 9000);
    ours.set_srtp(k_ours.clone(), &k_peer).unwrap();
    peer.set_srtp(k_peer, &k_ours).unwrap();
    assert_eq!(ours.rtcp_remote(), addr(PEER));
    ours.play(1, Prompt::from_pcm("p", vec![3000; 8000 * 12]));
    peer.play(1, Prompt::from_pcm("p", vec![3000; 8000 * 12]));
    for t in 0..400u64 {
        let now = t * 20;
        let p = ours.tick().to_vec();
        peer.handle_packet(now, addr(OURS), &p);
        let p = peer.tick().to_vec();
        ours.handle_packet(now, addr(PEER), &p);
        // Both reports arrive on the RTP port.
        if let Some(sr) = peer.poll_rtcp(now) {
            ours.handle_packet(now + 1, addr(PEER), &sr);
        }
        if let Some(sr) = ours.poll_rtcp(now) {
            peer.handle_packet(now + 1, addr(OURS), &sr);
        }
    }
    let (so, sp) = (ours.stats(), peer.stats());
    assert_eq!((so.auth_failed, sp.auth_failed), (0, 0), "{so:?} {sp:?}");
    assert!(
        so.rtcp_received >= 2 && sp.rtcp_received >= 2,
        "{so:?} {sp:?}"
    );
    assert_eq!(so.received, 400, "every RTP packet still taken as RTP");
    let f = ours.rtcp_figures();
    assert!(f.reports >= 2, "{f:?}");
    assert_eq!(f.remote_cumulative_lost, 0);
    assert!(f.rtt_ms.is_some(), "{f:?}");
    assert_eq!(f.local_jitter_ms, 0.0, "even spacing, no jitter: {f:?}");

    // Not negotiated: the same report on the RTP port is not RTCP.
    let mut plain_ours = MediaSession::new(&neg(PEER), 7, 100, 1000);
    let mut plain_peer = MediaSession::new(&neg(OURS), 9, 500, 9000);
    let k = SdesKey::generate(1);
    plain_ours.set_srtp(k_ours.clone(), &k).unwrap();
    plain_peer.set_srtp(k, &k_ours).unwrap();
    let sr = (0..200u64)
        .find_map(|t| {
            plain_peer.tick();
            plain_peer.poll_rtcp(t * 20)
        })
        .unwrap();
    plain_ours.handle_packet(3000, addr(PEER), &sr);
    assert_eq!(plain_ours.stats().rtcp_received, 0);
    // On its own port it is read.
    plain_ours.handle_rtcp(3000, rtcp_addr(PEER), &sr);
    assert_eq!(plain_ours.stats().rtcp_received, 1);
}

#![no_main]
//! Any datagram into a media session (RTP, RFC 4733, G.711, detectors).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let media = callout::sip::sdp::Negotiated {
        remote: "127.0.0.1:4000".parse().unwrap(),
        codec: callout::sip::sdp::Codec::Pcmu,
        dtmf_pt: Some(101),
    };
    let mut s = callout::media::session::MediaSession::new(&media, 1, 0, 0);
    s.start_amd(Default::default());
    s.handle_packet(0, "127.0.0.1:4001".parse().unwrap(), data);
    let _ = s.tick();
    while s.poll_event().is_some() {}
});

#![no_main]
//! Any datagram into the parser and the endpoint: no panic, ever.
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let _ = callout::sip::message::parse(data);
    let _ = callout::sip::message::frame_len(data);
    let mut ep = callout::sip::endpoint::Endpoint::new("127.0.0.1:5060".parse().unwrap(), 1);
    ep.handle_datagram(Instant::now(), "127.0.0.1:9".parse().unwrap(), data);
    while ep.poll_transmit().is_some() {}
});

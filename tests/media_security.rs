//! Nobody but the callee speaks into a call: a stranger on the network
//! sprays RFC 4733 key presses and RTP at the gateway's whole RTP port
//! range from before the answer to well into the call. The call to a real
//! softphone (baresip) must take only the callee's key, send its audio
//! only to the callee, and the callee must hear the prompt.

mod common;

use callout::media::audio::{read_wav_mono, resample, to_i16, Prompt};
use common::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An RFC 4733 packet for key `event` from the attacker.
fn event_packet(seq: u16, ssrc: u32, event: u8, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, 101];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[event, 10, (duration >> 8) as u8, duration as u8]);
    p
}

/// A PCMU frame of silence, to be latched onto.
fn audio_packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xFFu8, 160));
    p
}

#[test]
fn a_stranger_can_neither_press_keys_nor_take_the_audio() {
    require("sox");
    let dir = scratch("media-security");
    let src = dir.join("callee-mic.wav");
    let st = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&src)
        .args(["synth", "30", "sine", "440", "vol", "0.05"])
        .status()
        .unwrap();
    assert!(st.success());
    let bs = Baresip::start(&dir, &src);
    // A small RTP range, all of which the attacker covers.
    let first = free_port_pair();
    let range = format!("{first}-{}", first + 15);

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let spray = {
        let (stop, received) = (stop.clone(), received.clone());
        let attacker = attacker.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut seq: u16 = 0;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                for port in (first..=first + 15).step_by(2) {
                    let to = ("127.0.0.1", port);
                    // Key 1 (acknowledge) under several SSRCs, and audio
                    // to be latched onto.
                    for ssrc in [0x1234_5678, 0xdead_beef, rand_ssrc(seq)] {
                        let _ = attacker.send_to(&event_packet(seq, ssrc, 1, 160), to);
                    }
                    let _ = attacker.send_to(&audio_packet(seq, 0x1234_5678), to);
                }
                seq = seq.wrapping_add(1);
                while let Ok((n, _)) = attacker.recv_from(&mut buf) {
                    if n >= 12 {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let uri = bs.uri();
    let caller = std::thread::spawn(move || {
        callout(&[
            "call",
            &uri,
            "--prompt",
            &prompt(),
            "--collect",
            "1",
            "--timeout",
            "10s",
            "--rtp-ports",
            &range,
        ])
    });
    // The spray covers ringing, the answer and 3 s of the call.
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);
    spray.join().unwrap();
    let reply = bs.command("sndcode", "5");
    assert!(reply.contains("\"ok\":true"), "baresip: {reply}");
    let (status, lines, stderr) = caller.join().unwrap();
    assert!(status.success(), "{stderr}\n{lines:#?}\n{}", bs.log());
    let digits: Vec<&str> = events(&lines, "digit")
        .iter()
        .map(|d| d["digit"].as_str().unwrap())
        .collect();
    assert_eq!(digits, vec!["5"], "only the callee's key: {lines:#?}");
    assert_eq!(
        received.load(Ordering::Relaxed),
        0,
        "the gateway sent RTP to the attacker"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The callee heard the prompt: the same energy envelope, within
    // 300 ms of alignment.
    std::thread::sleep(Duration::from_millis(300));
    let heard = bs.heard().expect("baresip recorded the call");
    let (h, rate) = read_wav_mono(&heard).unwrap();
    let heard = to_i16(&resample(&h, rate, 8000));
    let sent = Prompt::load(std::path::Path::new(&prompt())).unwrap();
    let (es, eh) = (envelope(&sent.pcm), envelope(&heard));
    let best = (0..6)
        .filter(|&lag| eh.len() > lag + es.len() / 2)
        .map(|lag| correlation(&es, &eh[lag..]))
        .fold(f64::MIN, f64::max);
    assert!(
        best > 0.9,
        "the callee did not hear the prompt: correlation {best}"
    );
}

fn rand_ssrc(seq: u16) -> u32 {
    (seq as u32).wrapping_mul(2_654_435_761)
}

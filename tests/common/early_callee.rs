//! A sipp callee with early media (`tests/sipp/early_message.xml`: a 183
//! with SDP naming one RTP port and, 1.5 s later, a 200 naming another)
//! and the test's own sockets on those two ports, so the RTP sent before
//! the 200 is told from the RTP sent after it. The prompts of these tests
//! are tones (the message 800 Hz, the menu 400 Hz), told apart packet by
//! packet.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use callout::media::g711::ulaw_to_linear;

use super::{free_port_pair, Sipp};

/// What a 20 ms PCMU packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    Silence,
    /// The message's 800 Hz tone (32 zero crossings in 20 ms).
    Message,
    /// The menu's 400 Hz tone (16).
    Menu,
    /// Any other phrase (e.g. 1200 Hz, 48).
    Other,
}

pub fn classify(payload: &[u8]) -> Sound {
    let pcm: Vec<i16> = payload.iter().map(|b| ulaw_to_linear(*b)).collect();
    let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    if peak < 500 {
        return Sound::Silence;
    }
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    match crossings {
        28..=36 => Sound::Message,
        13..=19 => Sound::Menu,
        _ => Sound::Other,
    }
}

/// How many packets carry `k`.
pub fn count(s: &[Sound], k: Sound) -> usize {
    s.iter().filter(|x| **x == k).count()
}

/// Every PCMU packet arriving on one port, classified, in order.
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sound>>>,
}

impl Sink {
    pub fn bind(port: u16) -> Sink {
        let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind RTP sink");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if n > 12 && buf[1] & 0x7f == 0 {
                        got.push(classify(&buf[12..n]));
                    }
                }
            }
            got
        });
        Sink {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<Sound> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The sipp callee (for one call) and what arrives at its two ports.
pub struct EarlyCallee {
    pub sipp: Sipp,
    early: Sink,
    answer: Sink,
}

impl EarlyCallee {
    /// sipp in `dir`, with sinks on the ports its 183 and its 200 name.
    pub fn start(dir: &Path) -> EarlyCallee {
        let (a, b) = (free_port_pair(), free_port_pair());
        let (early, answer) = (Sink::bind(a), Sink::bind(b));
        let sipp = Sipp::uas(
            "early_message.xml",
            dir,
            &[
                "-set",
                "early_port",
                &a.to_string(),
                "-set",
                "answer_port",
                &b.to_string(),
            ],
        );
        EarlyCallee {
            sipp,
            early,
            answer,
        }
    }

    /// Stop listening: the packets that arrived at the 183's port and at
    /// the 200's port.
    pub fn heard(self) -> (Vec<Sound>, Vec<Sound>) {
        (self.early.finish(), self.answer.finish())
    }
}

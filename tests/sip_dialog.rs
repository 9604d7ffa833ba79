//! The dialog side of a call against sipp: media follows each SDP (early
//! media on one port, the 200 on another; a re-INVITE to hold and back on
//! a new port with PCMA), a reliable 183 is PRACKed once, and a trunk that
//! answers 421 gets an INVITE requiring 100rel; keys pressed with the
//! answer's telephone-event type (96) and with ours (101) both arrive.
//! RTP is caught by the test's own UDP sockets at the ports the
//! scenarios' SDP names.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// Every RTP packet arriving on one port: when, and its payload type.
struct RtpSink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(Instant, u8)>>>,
}

impl RtpSink {
    fn bind(port: u16) -> RtpSink {
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
                    if n >= 12 {
                        got.push((Instant::now(), buf[1] & 0x7f));
                    }
                }
            }
            got
        });
        RtpSink {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, u8)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn call(uri: &str) -> (Vec<serde_json::Value>, String) {
    let (st, lines, stderr) = callout(&["call", uri, "--prompt", &prompt(), "--timeout", "10s"]);
    assert!(st.success() || !lines.is_empty(), "{stderr}");
    (lines, stderr)
}

#[test]
fn rtp_moves_from_the_183_port_to_the_200_port() {
    let dir = scratch("early-then-answer");
    let (a, b) = (free_port_pair(), free_port_pair());
    let (early, answer) = (RtpSink::bind(a), RtpSink::bind(b));
    let mut sipp = Sipp::uas(
        "early_then_answer.xml",
        &dir,
        &[
            "-set",
            "early_port",
            &a.to_string(),
            "-set",
            "answer_port",
            &b.to_string(),
        ],
    );
    let (lines, stderr) = call(&sipp.uri());
    let status = sipp.wait(Duration::from_secs(20));
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    let answered = events(&lines, "answered");
    assert_eq!(answered.len(), 1, "{lines:#?}");
    assert_eq!(answered[0]["remote_rtp"], format!("127.0.0.1:{b}"));
    assert_eq!(answered[0]["telephone_event"], 96);
    assert_eq!(events(&lines, "early_media").len(), 1, "{lines:#?}");
    let (early, answer) = (early.finish(), answer.finish());
    // 1.5 s of early media at 50 packets a second, then the rest at the
    // 200's port; nothing to the early port once the 200 is in.
    assert!(early.len() >= 40, "early media: {} packets", early.len());
    assert!(
        answer.len() >= 40,
        "after the 200: {} packets",
        answer.len()
    );
    let first_answer = answer[0].0;
    let late = early
        .iter()
        .filter(|(t, _)| *t > first_answer + Duration::from_millis(60))
        .count();
    assert_eq!(late, 0, "RTP still went to the 183's port after the 200");
}

#[test]
fn reinvite_holds_then_moves_media_to_a_new_port_in_pcma() {
    let dir = scratch("reinvite-hold");
    let (a, b) = (free_port_pair(), free_port_pair());
    let (first, second) = (RtpSink::bind(a), RtpSink::bind(b));
    let mut sipp = Sipp::uas(
        "reinvite_hold_move.xml",
        &dir,
        &[
            "-set",
            "first_port",
            &a.to_string(),
            "-set",
            "second_port",
            &b.to_string(),
        ],
    );
    let (lines, stderr) = call(&sipp.uri());
    let status = sipp.wait(Duration::from_secs(20));
    // The scenario checks the answers: recvonly to the hold, PCMA and
    // sendrecv to the resume.
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    let updates = events(&lines, "media_updated");
    assert_eq!(updates.len(), 2, "{lines:#?}");
    assert_eq!(updates[0]["direction"], "sendonly");
    assert_eq!(updates[1]["direction"], "sendrecv");
    assert_eq!(updates[1]["remote_rtp"], format!("127.0.0.1:{b}"));
    assert_eq!(updates[1]["codec"], "Pcma");
    let (first, second) = (first.finish(), second.finish());
    assert!(
        first.len() >= 30,
        "before the hold: {} packets",
        first.len()
    );
    assert!(
        second.len() >= 30,
        "after the resume: {} packets",
        second.len()
    );
    assert!(first.iter().all(|(_, pt)| *pt == 0), "PCMU before");
    assert!(second.iter().all(|(_, pt)| *pt == 8), "PCMA after");
    // On hold (1.5 s in the scenario) nothing was sent anywhere.
    let held = second[0].0.duration_since(first.last().unwrap().0);
    assert!(
        held >= Duration::from_millis(1200),
        "silence on hold {held:?}"
    );
}

#[test]
fn a_reliable_183_is_pracked_once() {
    let dir = scratch("reliable-183");
    let mut sipp = Sipp::uas("reliable_183.xml", &dir, &[]);
    let (lines, stderr) = call(&sipp.uri());
    let status = sipp.wait(Duration::from_secs(20));
    // An unexpected second PRACK or a wrong RAck fails the scenario.
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    assert_eq!(events(&lines, "answered").len(), 1, "{lines:#?}");
    let pracks = sipp.messages().matches("PRACK sip:").count();
    assert_eq!(pracks, 1, "{}", sipp.messages());
}

#[test]
fn a_421_is_retried_requiring_100rel() {
    let dir = scratch("require-100rel");
    let mut sipp = Sipp::uas("require_100rel.xml", &dir, &[]);
    let (lines, stderr) = call(&sipp.uri());
    let status = sipp.wait(Duration::from_secs(20));
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    assert_eq!(events(&lines, "answered").len(), 1, "{lines:#?}");
}

#[test]
fn a_session_refresh_from_the_callee_is_answered() {
    let dir = scratch("session-refresh");
    let mut sipp = Sipp::uas("session_refresh.xml", &dir, &[]);
    let (lines, stderr) = call(&sipp.uri());
    let status = sipp.wait(Duration::from_secs(20));
    // The scenario checks Supported: timer and the 200's Session-Expires.
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    let ended = events(&lines, "ended");
    assert_eq!(ended[0]["reason"]["outcome"], "remote_hangup", "{lines:#?}");
}

#[test]
fn a_second_fork_answer_is_acked_and_byed_and_its_bye_ignored() {
    let dir = scratch("fork-two-answers");
    let mut sipp = Sipp::uas("fork_two_answers.xml", &dir, &[]);
    let (lines, stderr) = call(&sipp.uri());
    let status = sipp.wait(Duration::from_secs(20));
    // The scenario checks both ACKs' tags, the BYE to the second fork and
    // the 481 to that fork's own BYE.
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    assert_eq!(events(&lines, "answered").len(), 1, "{lines:#?}");
    let ended = events(&lines, "ended");
    assert_eq!(ended.len(), 1, "{lines:#?}");
    // Ended by the kept fork's BYE, 1.1 s after the other one's was refused.
    assert_eq!(ended[0]["reason"]["outcome"], "remote_hangup");
}

#[test]
fn keys_sent_with_the_answers_telephone_event_96_and_with_ours_both_arrive() {
    let dir = scratch("answer-te96");
    let port = free_port_pair();
    let rtp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut sipp = Sipp::uas(
        "answer_te96.xml",
        &dir,
        &["-set", "rtp_port", &port.to_string()],
    );
    // Half a second into callout's RTP: 4 with the answer's type (96),
    // then 7 with the type callout offered (101).
    let callee = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let until = Instant::now() + Duration::from_secs(15);
        let mut got = 0usize;
        while Instant::now() < until {
            if let Ok((n, src)) = rtp.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                got += 1;
                if got == 25 {
                    for (digit, pt, seq, ts) in
                        [(4u8, 96u8, 1000u16, 16_000u32), (7, 101, 1006, 24_000)]
                    {
                        for (i, p) in rfc4733_packets(digit, pt, seq, ts).into_iter().enumerate() {
                            rtp.send_to(&p, src).unwrap();
                            if i < 3 {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(150));
                    }
                }
            } else if got > 25 {
                break;
            }
        }
    });
    let (st, lines, stderr) = callout(&[
        "call",
        &sipp.uri(),
        "--prompt",
        &prompt(),
        "--collect",
        "2",
        "--timeout",
        "10s",
    ]);
    callee.join().unwrap();
    let status = sipp.wait(Duration::from_secs(20));
    assert!(status.success(), "{}\n{stderr}", sipp.messages());
    assert!(st.success(), "{stderr}\n{lines:#?}");
    assert_eq!(events(&lines, "answered")[0]["telephone_event"], 96);
    assert_eq!(result(&lines)["digits"], "47", "{lines:#?}");
    let sources: Vec<_> = events(&lines, "digit")
        .iter()
        .map(|d| d["source"].clone())
        .collect();
    assert_eq!(sources.len(), 2, "{lines:#?}");
    assert!(sources.iter().all(|s| s == "rfc4733"), "{sources:?}");
}

//! One slow webhook receiver holds up only its own stream: a contract
//! whose ticket system takes 8 s per event does not delay another
//! contract's events. Against a real `callout serve`, a real callee
//! (`callout softphone`, pressing 1) and two HTTP receivers.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::serve::*;
use common::*;

/// Event types a receiver got, with when.
type Received = Arc<Mutex<Vec<(String, Instant)>>>;

/// An HTTP receiver answering 200 after `delay`; returns its port and
/// what it received.
fn receiver(delay: Duration) -> (u16, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                loop {
                    let Ok(n) = c.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body: serde_json::Value =
                                serde_json::from_slice(&buf[end + 4..end + 4 + len])
                                    .unwrap_or_default();
                            g.lock().unwrap().push((
                                body["type"].as_str().unwrap_or("?").to_string(),
                                Instant::now(),
                            ));
                            break;
                        }
                    }
                }
                std::thread::sleep(delay);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (port, got)
}

#[test]
fn a_slow_ticket_system_delays_only_its_own_events() {
    require("espeak-ng");
    let dir = scratch("webhook-isolation");
    copy_prompts(&dir);
    let (_bob, bob_uri) = pressing_callee("38900-38999");
    let (slow_port, slow) = receiver(Duration::from_secs(8));
    let (fast_port, fast) = receiver(Duration::ZERO);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    for c in ["slow", "fast"] {
        std::fs::write(
            dir.join(format!("dialplans/{c}.toml")),
            plan(c, &bob_uri, None, "text = \"Alert.\""),
        )
        .unwrap();
    }
    let s = Serve::start(
        &dir,
        &format!(
            "[webhooks.contracts]\nslow = \"http://127.0.0.1:{slow_port}/hook\"\n\
             fast = \"http://127.0.0.1:{fast_port}/hook\"\n"
        ),
        "38800-38899",
    );
    let slow_id = s.notify("slow", "S1")["id"].as_str().unwrap().to_string();
    s.wait_state(&slow_id, &["acked"], Duration::from_secs(30));
    // The slow system is now busy with the first of many events.
    let posted = Instant::now();
    let fast_id = s.notify("fast", "F1")["id"].as_str().unwrap().to_string();
    s.wait_state(&fast_id, &["acked"], Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got = fast.lock().unwrap().clone();
        if got.iter().any(|(t, _)| t == "notification.acked") {
            let first = got[0].1.duration_since(posted);
            assert!(
                first < Duration::from_secs(3),
                "first fast event after {first:?}"
            );
            break;
        }
        assert!(Instant::now() < until, "fast events: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The slow stream is still going, in order, one at a time.
    let slow_got = slow.lock().unwrap().clone();
    assert!(
        !slow_got.iter().any(|(t, _)| t == "notification.acked"),
        "the slow receiver cannot have had them all yet: {slow_got:?}"
    );
}

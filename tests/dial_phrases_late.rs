//! The INVITE never waits for the contract's fixed phrases: `callout
//! serve` with a site voice (a shell script around sox) whose menu phrase
//! is blocked until the test releases it. The call must go out and be
//! answered (a sipp callee, 200 after 1.5 s) while the menu cannot be
//! rendered; the callee hears the message (a 3 s 800 Hz tone) whole, then
//! silence while the menu is still being made, then the menu (a 1 s
//! 400 Hz tone) whole, then goodbye: no prompt cut, none out of order, no
//! gap inside one. Before this change the INVITE waited for every fixed
//! phrase, so no call was answered before the release.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use callout::media::g711::ulaw_to_linear;
use common::serve::{copy_prompts, Serve};
use common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sound {
    Silence,
    /// The message's 800 Hz tone (32 zero crossings in 20 ms).
    Message,
    /// The menu's 400 Hz tone (16).
    Menu,
    /// Any other phrase (1200 Hz, 48).
    Other,
}

fn classify(payload: &[u8]) -> Sound {
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

/// Every PCMU packet arriving on one port, classified, in order.
fn sink(port: u16, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Sound>> {
    let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind RTP sink");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n > 12 && buf[1] & 0x7f == 0 {
                    got.push(classify(&buf[12..n]));
                }
            }
        }
        got
    })
}

/// Where `k` is heard: from its first packet to its last, and how many.
fn span(s: &[Sound], k: Sound) -> (usize, usize, usize) {
    let first = s.iter().position(|x| *x == k).expect("heard");
    let last = s.iter().rposition(|x| *x == k).unwrap();
    (first, last, s.iter().filter(|x| **x == k).count())
}

/// The site voice: a shell script around sox whose menu phrase waits
/// for `release`; it logs every phrase asked for to `asked`.
fn engine(dir: &std::path::Path, release: &std::path::Path) -> std::path::PathBuf {
    let engine = dir.join("engine.sh");
    std::fs::write(
        &engine,
        format!(
            "#!/bin/sh\n\
             echo \"$1\" >> '{asked}'\n\
             tone() {{ exec sox -n -r 8000 -b 16 -c 1 \"$2\" synth \"$1\" sine \"$3\" vol 0.5; }}\n\
             case \"$1\" in\n\
             *Menu*) while [ ! -e '{release}' ]; do sleep 0.02; done; tone 1 \"$2\" 400 ;;\n\
             *Alert*) tone 3 \"$2\" 800 ;;\n\
             *) tone 0.3 \"$2\" 1200 ;;\n\
             esac\n",
            asked = dir.join("asked").display(),
            release = release.display()
        ),
    )
    .unwrap();
    engine
}

fn write_plan(dir: &std::path::Path, uri: &str) {
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/late.toml"),
        format!(
            r#"contract = "late"
name = "Late"
language = "en"
voice = "slow"

[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"

[[contacts]]
name = "P"
uri = "{uri}"

[message]
text = "Alert on {{host}}."

[menu]
prompt = "Menu press 1"
input_timeout = "1s"
max_attempts = 1

[menu.keys]
"1" = "ack"
"#
        ),
    )
    .unwrap();
}

fn serve(dir: &std::path::Path, engine: &std::path::Path, rtp: &str) -> Serve {
    Serve::start(
        dir,
        &format!(
            "[voices.slow]\nkind = \"command\"\nargv = [\"/bin/sh\", \"{}\", \"{{text}}\", \"{{out}}\"]\n",
            engine.display()
        ),
        rtp,
    )
}

/// Wait until a call of `id` is answered; its events then.
fn wait_answered(s: &Serve, id: &str, dir: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let evs = s.events(id);
        if evs.iter().any(|(e, _)| e == "call.answered") {
            return evs;
        }
        assert!(
            Instant::now() < until,
            "no call answered while the menu phrase was blocked: {evs:#?}\n{}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_invite_goes_out_before_the_menu_is_rendered_and_the_call_hears_it_whole() {
    require("sox");
    require("sipp");
    let dir = scratch("dial-phrases-late");
    copy_prompts(&dir);
    let release = dir.join("release");
    let engine = engine(&dir, &release);
    let (early_port, answer_port) = (free_port_pair(), free_port_pair());
    let stop = Arc::new(AtomicBool::new(false));
    let (early, answer) = (
        sink(early_port, stop.clone()),
        sink(answer_port, stop.clone()),
    );
    let mut sipp = Sipp::uas(
        "early_message.xml",
        &dir,
        &[
            "-set",
            "early_port",
            &early_port.to_string(),
            "-set",
            "answer_port",
            &answer_port.to_string(),
        ],
    );
    write_plan(&dir, &sipp.uri());
    let s = serve(&dir, &engine, "41200-41299");
    let id = s.notify("late", "L1")["id"].as_str().unwrap().to_string();

    // Answered while the menu cannot be rendered: the INVITE did not
    // wait for it (and the fixed phrases are not ready yet).
    let answered = wait_answered(&s, &id, &dir);
    assert!(
        !answered.iter().any(|(e, _)| e == "audio.ready"),
        "{answered:#?}"
    );
    // The message (3 s) is heard, then the call waits for the menu.
    std::thread::sleep(Duration::from_millis(4_500));
    std::fs::write(&release, "").unwrap();

    let fin = s.wait_state(
        &id,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(30),
    );
    let status = sipp.wait(Duration::from_secs(20));
    assert!(status.success(), "{}\n{fin:#}", sipp.messages());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (early, heard) = (early.join().unwrap(), answer.join().unwrap());
    assert!(early.iter().all(|x| *x == Sound::Silence), "{early:?}");

    let evs = s.events(&id);
    let ready = evs
        .iter()
        .position(|(e, _)| e == "audio.ready")
        .expect("audio.ready");
    let at = evs.iter().position(|(e, _)| e == "call.answered").unwrap();
    assert!(at < ready, "{evs:#?}");
    // Waited for, not replaced by the fallback.
    assert_eq!(evs[ready].1["fallbacks"], serde_json::json!([]));

    // The message whole (150 packets), with no gap inside it.
    let (m0, m1, m) = span(&heard, Sound::Message);
    assert!((145..=153).contains(&m), "message packets: {m}: {heard:?}");
    assert_eq!(m1 - m0 + 1, m, "a gap inside the message: {heard:?}");
    // Then silence while the menu was being made (the release came
    // 1.5 s after the message ended): not the menu cut short, not
    // another prompt in its place.
    let (n0, n1, n) = span(&heard, Sound::Menu);
    assert!(n0 > m1 + 40, "the menu {n0} right after the message {m1}");
    assert!(
        heard[m1 + 1..n0].iter().all(|x| *x == Sound::Silence),
        "{heard:?}"
    );
    // The menu whole (50 packets), with no gap inside it, then goodbye.
    assert!((48..=52).contains(&n), "menu packets: {n}: {heard:?}");
    assert_eq!(n1 - n0 + 1, n, "a gap inside the menu: {heard:?}");
    let (g0, _, g) = span(&heard, Sound::Other);
    assert!(g0 > n1 && g >= 12, "goodbye after the menu: {heard:?}");
}

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

use std::time::{Duration, Instant};

use common::early_callee::{EarlyCallee, Sound};
use common::serve::{copy_prompts, Serve};
use common::*;

/// Where `k` is heard: from its first packet to its last, and how many.
fn span(s: &[Sound], k: Sound) -> (usize, usize, usize) {
    let first = s.iter().position(|x| *x == k).expect("heard");
    let last = s.iter().rposition(|x| *x == k).unwrap();
    (first, last, s.iter().filter(|x| **x == k).count())
}

#[test]
fn the_invite_goes_out_before_the_menu_is_rendered_and_the_call_hears_it_whole() {
    require("sox");
    require("sipp");
    let dir = scratch("dial-phrases-late");
    copy_prompts(&dir);
    let release = dir.join("release");
    let engine = dir.join("engine.sh");
    std::fs::write(
        &engine,
        format!(
            "#!/bin/sh\n\
             tone() {{ exec sox -n -r 8000 -b 16 -c 1 \"$2\" synth \"$1\" sine \"$3\" vol 0.5; }}\n\
             case \"$1\" in\n\
             *Menu*) while [ ! -e '{release}' ]; do sleep 0.02; done; tone 1 \"$2\" 400 ;;\n\
             *Alert*) tone 3 \"$2\" 800 ;;\n\
             *) tone 0.3 \"$2\" 1200 ;;\n\
             esac\n",
            release = release.display()
        ),
    )
    .unwrap();
    let mut callee = EarlyCallee::start(&dir);
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
"#,
            uri = callee.sipp.uri()
        ),
    )
    .unwrap();
    let s = Serve::start(
        &dir,
        &format!(
            "[voices.slow]\nkind = \"command\"\nargv = [\"/bin/sh\", \"{}\", \"{{text}}\", \"{{out}}\"]\n",
            engine.display()
        ),
        "41200-41299",
    );
    let id = s.notify("late", "L1")["id"].as_str().unwrap().to_string();

    // Answered while the menu cannot be rendered: the INVITE did not
    // wait for it (and the fixed phrases are not ready yet).
    let until = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let evs = s.events(&id);
        if evs.iter().any(|(e, _)| e == "call.answered") {
            break evs;
        }
        assert!(
            Instant::now() < until,
            "no call answered while the menu phrase was blocked: {evs:#?}\n{}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
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
    let status = callee.sipp.wait(Duration::from_secs(20));
    assert!(status.success(), "{}\n{fin:#}", callee.sipp.messages());
    std::thread::sleep(Duration::from_millis(200));
    let (early, heard) = callee.heard();
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

//! callout calling baresip, a real auto-answering softphone.

mod common;

use callout::media::audio::{read_wav_mono, resample, to_i16, Prompt};
use common::*;
use std::time::Duration;

#[test]
fn baresip_answers_hears_the_prompt_and_presses_keys() {
    require("sox");
    let dir = scratch("baresip");
    let src = dir.join("callee-mic.wav");
    // What the callee "says": quiet noise-free tone, long enough that
    // baresip's aufile source does not end the call.
    let st = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-b", "16", "-c", "1"])
        .arg(&src)
        .args(["synth", "30", "sine", "440", "vol", "0.05"])
        .status()
        .unwrap();
    assert!(st.success());
    let bs = Baresip::start(&dir, &src);
    let uri = bs.uri();
    let caller = std::thread::spawn(move || {
        callout(&[
            "call",
            &uri,
            "--prompt",
            &prompt(),
            "--collect",
            "2",
            "--timeout",
            "10s",
        ])
    });
    // Let the prompt play for 2.5 s (it is 2.36 s long), then press keys.
    std::thread::sleep(Duration::from_millis(2800));
    let reply = bs.command("sndcode", "42");
    assert!(
        reply.contains("\"ok\":true"),
        "baresip refused the key press: {reply}"
    );
    let (status, lines, stderr) = caller.join().unwrap();
    assert!(status.success(), "{stderr}\n{lines:#?}\n{}", bs.log());
    assert_eq!(result(&lines)["digits"], "42");
    assert!(events(&lines, "digit")
        .iter()
        .all(|d| d["source"] == "rfc4733"));

    // What baresip heard must be our prompt: same energy envelope.
    std::thread::sleep(Duration::from_millis(300));
    let heard = bs.heard().expect("baresip recorded the call");
    let (h, rate) = read_wav_mono(&heard).unwrap();
    let heard = to_i16(&resample(&h, rate, 8000));
    let sent = Prompt::load(std::path::Path::new(&prompt())).unwrap();
    assert!(
        heard.len() >= sent.pcm.len(),
        "heard {} samples",
        heard.len()
    );
    // Align: find the lag (within 300 ms) that best matches the envelopes.
    let (es, eh) = (envelope(&sent.pcm), envelope(&heard));
    let best = (0..6)
        .map(|lag| correlation(&es, &eh[lag..]))
        .fold(f64::MIN, f64::max);
    assert!(best > 0.9, "envelope correlation {best}");
}

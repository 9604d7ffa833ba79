//! `callout softphone` (the UAS side) against sipp's built-in UAC, and
//! `callout call` against `callout softphone`, and the demo.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn softphone(port: u16, extra: &[&str]) -> std::process::Child {
    let mut args = vec![
        "softphone".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until
        && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn lines(child: std::process::Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sipp_uac_calls_the_softphone_and_hangs_up() {
    require("sipp");
    let port = free_port_pair();
    let phone = softphone(port, &["--calls", "3", "--rtp-ports", "33000-33099"]);
    let dir = scratch("sipp-uac");
    let sipp_port = free_port_pair();
    let st = Command::new("sipp")
        .current_dir(&dir)
        .args([
            "-sn",
            "uac",
            &format!("127.0.0.1:{port}"),
            "-i",
            "127.0.0.1",
            "-p",
            &sipp_port.to_string(),
        ])
        .args([
            "-m",
            "3",
            "-l",
            "1",
            "-d",
            "500",
            "-timeout",
            "20s",
            "-timeout_error",
            "-trace_err",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "sipp's UAC scenario failed against the softphone"
    );
    let l = lines(phone);
    assert_eq!(events(&l, "answered").len(), 3);
    let ended = events(&l, "ended");
    assert_eq!(ended.len(), 3);
    assert!(
        ended
            .iter()
            .all(|e| e["reason"]["outcome"] == "remote_hangup"),
        "{ended:?}"
    );
}

#[test]
fn callout_calls_the_softphone_which_presses_and_records() {
    let dir = scratch("softphone");
    let heard = dir.join("heard.wav");
    let port = free_port_pair();
    let phone = softphone(
        port,
        &[
            "--press",
            "7",
            "--after",
            "1500ms",
            "--record",
            heard.to_str().unwrap(),
            "--calls",
            "1",
            "--rtp-ports",
            "33100-33199",
        ],
    );
    let (status, l, stderr) = callout(&[
        "call",
        &format!("sip:oncall@127.0.0.1:{port}"),
        "--prompt",
        &prompt(),
        "--collect",
        "1",
        "--timeout",
        "10s",
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(result(&l)["digits"], "7");
    let d = &events(&l, "digit")[0];
    assert_eq!(d["source"], "rfc4733");
    let at = d["call_ms"].as_i64().unwrap();
    assert!(
        (1400..2600).contains(&at),
        "pressed 1.5 s after answer, seen at {at} ms"
    );
    let pl = lines(phone);
    assert_eq!(events(&pl, "pressed").len(), 1);
    let rec = callout::media::audio::Prompt::load(&heard).unwrap();
    let sent = callout::media::audio::Prompt::load(std::path::Path::new(&prompt())).unwrap();
    let (es, eh) = (envelope(&sent.pcm), envelope(&rec.pcm));
    let best = (0..6)
        .map(|lag| correlation(&es[..30], &eh[lag..]))
        .fold(f64::MIN, f64::max);
    assert!(
        best > 0.9,
        "recorded audio follows the prompt: correlation {best}"
    );
}

/// The README's run command: the service on embedded defaults, an
/// Alertmanager webhook and a Japanese alert mail through the pipeline,
/// two softphones, incidents opened, called, acknowledged and closed.
#[test]
fn demo_runs_end_to_end() {
    require("espeak-ng");
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .arg("demo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("POST /v1/intake/alertmanager -> 202 "),
        "{text}"
    );
    for (contract, ticket) in [("demo", "DEMO-0"), ("demo-ja", "DEMO-JA-0")] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!("[{ticket}")))
            .collect();
        let story = lines.join("\n");
        for want in [
            "ticket opened",
            "pending → notifying: the wait window ended",
            "key 2 pressed (attempt 1)",
            "call ended: passed (attempt 1)",
            "key 1 pressed (attempt 2)",
            "notifying → acknowledged",
            "recovered → closed",
            "closed and released",
        ] {
            let want = want.replace("ticket opened", "opened");
            assert!(
                story.contains(&want),
                "{contract}: no {want:?} in\n{story}\n\n{text}"
            );
        }
    }
    assert!(text.contains("opened by mail HTTP応答なし"), "{text}");
    assert!(text.contains("SMTP  <- 250 2.0.0"), "{text}");
    assert!(text.contains("acknowledged by 二次担当"), "{text}");
    assert!(text.contains("acknowledged by Second on call"), "{text}");
}

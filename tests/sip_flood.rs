//! A SIP OPTIONS flood against a running gateway (issue 13, item 9): a
//! separate process sends about 3,000 requests a second from 127.0.0.2
//! while the gateway places a real call to sipp on 127.0.0.1. The call is
//! answered within 50 ms and the flooding address is banned.
//!
//! `CALLOUT_FLOOD_SECS` (default 4) sets how long the flood runs before
//! the call is placed. The old endpoint remembered every answer for 32 s
//! and scanned them all on each loop pass, so it only fell behind after
//! about 20 s of this flood: docs/benchmarks.md has the run with 25 s,
//! where the old code lost the call and this one answers in milliseconds.
//! The cost per pass is tested directly, with virtual time, in
//! `src/sip/flood_tests.rs`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callout::driver::{CallUpdate, Gateway};
use callout::sip::call::CallEvent;
use common::*;

const RATE: &str = "3000";

/// Start the flood script; it prints how many requests it sent.
fn flood(target: std::net::SocketAddr, source: &str, secs: f64) -> std::process::Child {
    require("python3");
    Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flood/options_flood.py"))
        .args([&target.to_string(), source, RATE, &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the flood")
}

/// Dial `uri` and return the time from the dial to the 200's arrival.
async fn answer_time(gw: &Gateway, uri: String) -> Duration {
    let started = Instant::now();
    let mut call = gw.dial(plain_dial(uri)).await.expect("dial");
    let answered = loop {
        match call.next().await {
            Some(CallUpdate::Sip(CallEvent::Answered(_))) => break started.elapsed(),
            Some(CallUpdate::Sip(CallEvent::Ended(r))) => panic!("call ended unanswered: {r:?}"),
            None => panic!("call vanished"),
            Some(_) => {}
        }
    };
    // sipp hangs up after 1.5 s; the BYE must still be answered.
    while let Some(ev) = call.next().await {
        if let CallUpdate::Sip(CallEvent::Ended(r)) = ev {
            assert_eq!(format!("{r:?}"), "RemoteHangup");
            break;
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_call_is_answered_within_50ms_under_an_options_flood() {
    let secs: f64 = std::env::var("CALLOUT_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let lo = 41000 + (std::process::id() % 20) * 40;
    let gw = Gateway::start("127.0.0.1:0".parse().unwrap(), &format!("{lo}-{}", lo + 39))
        .await
        .unwrap();
    let dir = scratch("sip-flood");
    for sub in ["quiet", "flood"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let mut quiet = Sipp::uas("remote_bye.xml", &dir.join("quiet"), &[]);
    let baseline = answer_time(&gw, quiet.uri()).await;

    // The flood runs on after the call is placed.
    let flooder = flood(gw.sip_addr(), "127.0.0.2", secs + 2.0);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let mut sipp = Sipp::uas("remote_bye.xml", &dir.join("flood"), &[]);
    let under_flood = answer_time(&gw, sipp.uri()).await;
    let out = tokio::task::spawn_blocking(move || flooder.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let sent: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the flood's count");
    let stats = gw.sip().stats().await.unwrap();
    eprintln!(
        "flood: {sent} OPTIONS in {:.1} s; answer {baseline:?} quiet, {under_flood:?} under flood; {stats:?}",
        secs + 2.0
    );
    tokio::task::block_in_place(|| {
        assert!(quiet.wait(Duration::from_secs(10)).success());
        assert!(sipp.wait(Duration::from_secs(10)).success());
    });
    assert!(sent as f64 > 3000.0 * secs, "the flood ran: {sent}");
    assert!(
        under_flood < Duration::from_millis(50),
        "answered in {under_flood:?} under the flood (quiet: {baseline:?})"
    );
    assert_eq!(
        stats.sources_banned, 1,
        "the flooding address is banned: {stats:?}"
    );
    assert!(
        stats.flood_dropped as f64 > sent as f64 * 0.95,
        "its requests are dropped unparsed: {stats:?}"
    );
    assert!(stats.remembered < 100, "{stats:?}");
}

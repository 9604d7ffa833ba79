//! An alert storm past the node's dialling limit: nothing is refused,
//! the waiting notifications are stored `pending` and dialled most severe
//! first, then oldest; each says it was queued. Against a real `callout
//! serve` on SQLite and a real callee (`callout softphone`, pressing 1).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::serve::*;
use common::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn a_storm_is_queued_by_severity_never_refused() {
    require("espeak-ng");
    let dir = scratch("escalation-queue");
    copy_prompts(&dir);
    let (_bob, bob_uri) = pressing_callee("37800-37899");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/storm.toml"),
        plan("storm", &bob_uri, None, "text = \"Alert.\""),
    )
    .unwrap();
    let s = Serve::start(&dir, "[limits]\nmax_dialling = 1\n", "37700-37799");

    // The first takes the only slot; then, while it rings and talks, a
    // storm of three more arrives, least severe first.
    let mut ids = Vec::new();
    for (ticket, severity) in [
        ("T1", "minor"),
        ("T2", "info"),
        ("T3", "critical"),
        ("T4", "major"),
    ] {
        let n = s.notify_with("storm", ticket, severity);
        assert_eq!(n["state"], "pending", "{n}");
        ids.push((ticket, n["id"].as_str().unwrap().to_string()));
    }
    let m = s.text("/metrics");
    assert_eq!(metric(&m, "callout_dialling_escalations"), 1, "{m}");
    assert_eq!(metric(&m, "callout_queued_escalations"), 3, "{m}");

    // When each one left `pending` (it dials only with a slot).
    let mut started: HashMap<&str, Instant> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(90);
    while started.len() < ids.len() {
        assert!(Instant::now() < until, "not all were dialled: {started:?}");
        for (ticket, id) in &ids {
            if started.contains_key(ticket) {
                continue;
            }
            let (_, v) = s
                .http("GET", &format!("/v1/notifications/{id}"), None)
                .unwrap();
            if v["state"] != "pending" {
                started.insert(ticket, Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut order: Vec<&str> = started.keys().copied().collect();
    order.sort_by_key(|t| started[t]);
    assert_eq!(order, ["T1", "T3", "T4", "T2"]);
    for (ticket, id) in &ids {
        let n = s.wait_state(
            id,
            &["acked", "exhausted", "failed"],
            Duration::from_secs(60),
        );
        assert_eq!(n["state"], "acked", "{ticket}: {n:#}");
        let queued = s.events(id).iter().any(|(e, _)| e == "notification.queued");
        assert_eq!(queued, *ticket != "T1", "{ticket}");
    }

    // What a waiting notification costs: 200 more wait behind a callee
    // that is busy with the first of them.
    let before = rss_kib(s.child.id());
    for i in 0..200 {
        let n = s.notify_with("storm", &format!("W{i}"), "warning");
        assert_eq!(n["state"], "pending");
    }
    let after = rss_kib(s.child.id());
    let per = (after.saturating_sub(before)) as f64 / 200.0;
    eprintln!("memory per waiting notification: {per:.1} KiB (RSS {before} -> {after} KiB)");
    let m = s.text("/metrics");
    assert!(metric(&m, "callout_queued_escalations") >= 190, "{m}");
    assert!(per < 64.0, "{per:.1} KiB per waiting notification");
}

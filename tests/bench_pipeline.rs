//! `callout bench pipeline --quick` still runs end to end (HTTP, the
//! Alertmanager peer when installed, SMTP, window end -> INVITE, storm)
//! and prints its figures; the figures themselves are in
//! docs/benchmarks.md, never asserted here.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_pipeline_quick_runs() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
    cmd.args(["bench", "pipeline", "--quick"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CALLOUT_BENCH_POSTGRES_URL");
    let peer = Command::new("prometheus-alertmanager")
        .arg("--version")
        .output()
        .is_ok();
    if !peer {
        eprintln!("\n*** prometheus-alertmanager not installed: the quick bench runs without its peer ***\n");
        cmd.arg("--no-peer");
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "callout SQLite, single events",
        "callout SQLite, Alertmanager batches",
        "callout SMTP, ISO-2022-JP mails",
        "window end -> INVITE",
        "storm RSS of callout serve",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    if peer {
        assert!(text.contains("ratio callout/Alertmanager"), "{text}");
    }
    // Every phase did something: no "0 alerts/s", no NaN percentile.
    assert!(
        !text.contains(" 0 alerts/s") && !text.contains("NaN"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(40),
        "the quick bench took {took:?}"
    );
}

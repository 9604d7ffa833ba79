//! Starting a peer process on a port picked for it, without waiting
//! forever for it to come up.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port_pair;

/// Starts that exit before coming up, each on another port, before the
/// test fails.
const ATTEMPTS: usize = 5;

/// Start a peer on a port picked now and wait until `up(child, port)`.
///
/// The port was free when picked, but another test may take it before
/// the peer binds it; the peer then exits, so a start that exits is
/// retried on a freshly picked port, a few times. Each wait is bounded
/// by `limit`: a peer that neither comes up nor exits fails the test.
/// `command(port)` builds the peer's command; its stderr goes to
/// `log(port)`, whose tail the panic shows, naming `what`.
pub fn start_on_free_port(
    what: &str,
    limit: Duration,
    mut command: impl FnMut(u16) -> Command,
    log: impl Fn(u16) -> PathBuf,
    up: impl Fn(&Child, u16) -> bool,
) -> (Child, u16) {
    let mut last_log = PathBuf::new();
    for _ in 0..ATTEMPTS {
        let port = free_port_pair();
        last_log = log(port);
        if let Some(child) = start_on(what, limit, port, command(port), &last_log, &up) {
            return (child, port);
        }
        eprintln!(
            "{what} exited before it came up on port {port}; another port. Its log:\n{}",
            tail(&last_log)
        );
    }
    panic!(
        "{what} exited before it came up, {ATTEMPTS} times; the last log ({}):\n{}",
        last_log.display(),
        tail(&last_log)
    );
}

/// Run `command` (its stderr to `log`) and wait until `up(child, port)`:
/// the child, or `None` when it exited first. Panics after `limit`,
/// naming `what`, with the log's tail.
pub fn start_on(
    what: &str,
    limit: Duration,
    port: u16,
    mut command: Command,
    log: &Path,
    up: impl Fn(&Child, u16) -> bool,
) -> Option<Child> {
    let stderr = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut child = command
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {what}: {e}"));
    let until = Instant::now() + limit;
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if up(&child, port) {
            return Some(child);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not come up on port {port} within {limit:?}; its log ({}):\n{}",
                log.display(),
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `callout softphone` listening on 127.0.0.1 on a port picked for it
/// (see [`start_on_free_port`]); `options` adds its options (`--press`,
/// `--rtp-ports`, ...) and may set its stdout (discarded otherwise).
/// Its stderr goes to `softphone-<test process>-<port>.log` in the
/// target's scratch directory. Returns it and its port.
pub fn softphone(options: impl Fn(&mut Command)) -> (Child, u16) {
    start_on_free_port(
        "the softphone",
        Duration::from_secs(20),
        |port| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
            cmd.args(["softphone", "--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null());
            options(&mut cmd);
            cmd
        },
        |port| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("softphone-{}-{port}.log", std::process::id()))
        },
        |child, port| holds_udp(child.id(), port),
    )
}

/// Whether process `pid` holds a UDP socket bound to 127.0.0.1:`port`.
/// Seeing the port taken is not enough: whoever took it between the pick
/// and the peer's bind holds it too, while the peer is on its way out.
/// (Linux: the socket inodes bound to the address, in /proc/net/udp,
/// against the process's open files.)
pub fn holds_udp(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    if sockets.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| sockets.iter().any(|s| Path::new(s) == target))
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

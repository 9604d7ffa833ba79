//! Runs one planned step: a process (the OpenSSH client or a local argv)
//! without a shell, an HTTP request, or a built-in probe. Every step is
//! bounded by its timeout; a process is killed with its whole process
//! group when the timeout passes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::engine::StepOutcome;
use super::plan::Op;

/// Output kept per stream: the start and the end of it.
pub const EXCERPT_BYTES: usize = 2048;

/// What one try of a step did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepReport {
    pub outcome: Option<StepOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub stdout: String,
    pub stderr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl StepReport {
    fn done(mut self, outcome: StepOutcome, started: Instant) -> StepReport {
        self.outcome = Some(outcome);
        self.duration_ms = started.elapsed().as_millis() as u64;
        self
    }
}

/// The start and the end of a stream, and how long it was.
#[derive(Debug, Default)]
struct Captured {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: usize,
}

impl Captured {
    fn push(&mut self, bytes: &[u8]) {
        let half = EXCERPT_BYTES / 2;
        self.total += bytes.len();
        for &b in bytes {
            if self.head.len() < half {
                self.head.push(b);
            } else {
                self.tail.push_back(b);
                if self.tail.len() > half {
                    self.tail.pop_front();
                }
            }
        }
    }

    fn text(&self, secrets: &[String]) -> String {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let cut = self.total - self.head.len() - tail.len();
        let text = if cut > 0 {
            format!(
                "{}\n[... {cut} bytes cut ...]\n{}",
                String::from_utf8_lossy(&self.head),
                String::from_utf8_lossy(&tail)
            )
        } else {
            let mut all = self.head.clone();
            all.extend(tail);
            String::from_utf8_lossy(&all).into_owned()
        };
        redact(&text, secrets)
    }
}

/// Keep the head and the tail of `bytes`, replace secrets.
pub fn excerpt(bytes: &[u8], secrets: &[String]) -> String {
    let mut c = Captured::default();
    c.push(bytes);
    c.text(secrets)
}

pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets {
        if s.len() >= 3 {
            t = t.replace(s.as_str(), "[redacted]");
        }
    }
    t
}

/// Run one step try.
pub async fn run(
    op: &Op,
    timeout: Duration,
    secrets: &[String],
    http: &reqwest::Client,
) -> StepReport {
    let started = Instant::now();
    let r = StepReport::default();
    match op {
        Op::Ssh {
            argv, expect_exit, ..
        } => {
            let mut r = run_process(argv, timeout, secrets, expect_exit, started).await;
            // The OpenSSH client exits 255 for its own errors (connection,
            // host key, authentication): the command never ran.
            if r.exit_code == Some(255) {
                r.outcome = Some(StepOutcome::Error);
                r.error = Some(format!(
                    "ssh could not run the command: {}",
                    r.stderr.trim()
                ));
            }
            r
        }
        Op::Command { argv, expect_exit } => {
            run_process(argv, timeout, secrets, expect_exit, started).await
        }
        Op::Http {
            method,
            url,
            expect_status,
            send_headers,
            send_body,
            ..
        } => {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
            let mut req = http.request(m, url).timeout(timeout);
            for (k, v) in send_headers {
                req = req.header(k, v);
            }
            if let Some(b) = send_body {
                req = req.json(b);
            }
            http_result(
                req.send().await,
                expect_status,
                None,
                secrets,
                r,
                started,
                false,
            )
            .await
        }
        Op::HttpCheck {
            url,
            expect_status,
            contains,
        } => {
            let req = http.get(url).timeout(timeout);
            http_result(
                req.send().await,
                expect_status,
                contains.as_deref(),
                secrets,
                r,
                started,
                true,
            )
            .await
        }
        Op::TcpCheck { address, port, .. } => {
            let target = if address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            };
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await {
                Ok(Ok(_)) => r.done(StepOutcome::Ok, started),
                Ok(Err(e)) => StepReport {
                    error: Some(format!("connect {target}: {e}")),
                    ..r
                }
                .done(StepOutcome::Failed, started),
                Err(_) => StepReport {
                    error: Some(format!("connect {target}: no answer within {timeout:?}")),
                    ..r
                }
                .done(StepOutcome::Timeout, started),
            }
        }
    }
}

async fn http_result(
    res: reqwest::Result<reqwest::Response>,
    expect: &[u16],
    contains: Option<&str>,
    secrets: &[String],
    mut r: StepReport,
    started: Instant,
    probe: bool,
) -> StepReport {
    match res {
        Ok(resp) => {
            let status = resp.status().as_u16();
            r.http_status = Some(status);
            let body = read_limited(resp).await;
            let text = String::from_utf8_lossy(&body).into_owned();
            r.stdout = excerpt(&body, secrets);
            let ok = expect.contains(&status) && contains.is_none_or(|c| text.contains(c));
            r.done(
                if ok {
                    StepOutcome::Ok
                } else {
                    StepOutcome::Failed
                },
                started,
            )
        }
        Err(e) => {
            let outcome = if e.is_timeout() {
                StepOutcome::Timeout
            } else if probe {
                // A probe that cannot connect has its answer: not healthy.
                StepOutcome::Failed
            } else {
                StepOutcome::Error
            };
            r.error = Some(redact(&describe_reqwest(&e), secrets));
            r.done(outcome, started)
        }
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the step's timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(x) = src {
            s.push_str(": ");
            s.push_str(&x.to_string());
            src = x.source();
        }
        s
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 * 1024 {
            break;
        }
    }
    body
}

/// Read a stream to its end, keeping the head and the tail.
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(mut r: R) -> Captured {
    let mut c = Captured::default();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        c.push(&buf[..n]);
    }
    c
}

async fn run_process(
    argv: &[String],
    timeout: Duration,
    secrets: &[String],
    expect_exit: &[i32],
    started: Instant,
) -> StepReport {
    let mut r = StepReport::default();
    let Some((prog, args)) = argv.split_first() else {
        r.error = Some("empty argv".into());
        return r.done(StepOutcome::Error, started);
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The service's environment (tokens, PINs from code_env) is not
        // passed on.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(format!("cannot start {prog}: {e}"));
            return r.done(StepOutcome::Error, started);
        }
    };
    let pid = child.id();
    let out = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let err = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let outcome = match status {
        Ok(Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            r.exit_code = st.code();
            r.signal = st.signal();
            match st.code() {
                Some(c) if expect_exit.contains(&c) => StepOutcome::Ok,
                _ => StepOutcome::Failed,
            }
        }
        Ok(Err(e)) => {
            r.error = Some(format!("waiting for {prog}: {e}"));
            StepOutcome::Error
        }
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on our own child's process group.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            r.error = Some(format!(
                "timed out after {}; killed",
                crate::util::format_duration(timeout)
            ));
            StepOutcome::Timeout
        }
    };
    // A grandchild that left the process group could hold the pipes open.
    let collect = |h: Option<tokio::task::JoinHandle<Captured>>| async move {
        match h {
            Some(h) => tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default(),
            None => Captured::default(),
        }
    };
    r.stdout = collect(out).await.text(secrets);
    r.stderr = collect(err).await.text(secrets);
    r.done(outcome, started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_redacted() {
        let long = format!("token=s3cr3t {}", "x".repeat(10_000));
        let e = excerpt(long.as_bytes(), &["s3cr3t".into()]);
        assert!(e.len() < EXCERPT_BYTES + 100, "{}", e.len());
        assert!(e.contains("[redacted]") && !e.contains("s3cr3t"));
        assert!(e.contains("bytes cut"));
    }

    #[tokio::test]
    async fn a_process_runs_without_a_shell_and_is_killed_at_its_timeout() {
        let http = reqwest::Client::new();
        let op = Op::Command {
            argv: vec!["echo".into(), "a; rm -rf /".into(), "$(id)".into()],
            expect_exit: vec![0],
        };
        let r = run(&op, Duration::from_secs(5), &[], &http).await;
        assert_eq!(r.outcome, Some(StepOutcome::Ok));
        assert_eq!(r.stdout, "a; rm -rf / $(id)\n");
        let op = Op::Command {
            argv: vec!["sleep".into(), "30".into()],
            expect_exit: vec![0],
        };
        let t = Instant::now();
        let r = run(&op, Duration::from_millis(300), &[], &http).await;
        assert_eq!(r.outcome, Some(StepOutcome::Timeout));
        assert_eq!(r.signal, None);
        assert!(t.elapsed() < Duration::from_secs(5));
        let op = Op::Command {
            argv: vec!["false".into()],
            expect_exit: vec![0],
        };
        let r = run(&op, Duration::from_secs(5), &[], &http).await;
        assert_eq!(r.outcome, Some(StepOutcome::Failed));
        assert_eq!(r.exit_code, Some(1));
    }
}

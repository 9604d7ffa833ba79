//! `callout bench pipeline`: the alert pipeline's figures in one run.
//!
//! `callout serve` runs as a child process (so its memory is its own) on
//! a generated configuration; the bench is the client. Printed, never
//! asserted:
//! 1. alerts accepted per second over HTTP, durable before the 202:
//!    single events and Alertmanager batches, N keep-alive clients, on
//!    SQLite and (with `--postgres`) PostgreSQL; beside it a real Prometheus
//!    Alertmanager taking the same alerts on `POST /api/v2/alerts` with the
//!    same client and concurrency (it keeps them in memory only);
//! 2. alert mails per second over SMTP (ISO-2022-JP, stored before 250);
//! 3. the wait window's end to the INVITE arriving at a UDP callee;
//! 4. the service's RSS during a sustained storm.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::percentile;

/// When each notification's INVITE reached the callee (wall clock, ms).
type Arrivals = Arc<Mutex<HashMap<String, f64>>>;

const TOKEN: &str = "bench-pipeline-token";
/// Distinct hosts the load cycles through (each alert name repeats
/// every `HOSTS` alerts), as a real estate of monitored hosts does.
const HOSTS: u64 = 500;

/// Options of `callout bench pipeline`.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    /// Concurrent HTTP clients (keep-alive).
    pub clients: usize,
    /// Seconds per HTTP phase.
    pub seconds: f64,
    /// Alerts per Alertmanager body.
    pub batch: usize,
    /// Concurrent SMTP sessions.
    pub smtp_sessions: usize,
    /// Incidents timed from window end to INVITE.
    pub incidents: usize,
    /// How long the storm lasts, and its rate in alerts per second.
    pub storm_secs: f64,
    pub storm_rate: u64,
    /// An admin URL of a PostgreSQL server (…/postgres): the HTTP phases
    /// run again on a database made and dropped there.
    pub postgres: Option<String>,
    /// Skip the Alertmanager peer.
    pub no_peer: bool,
    /// Only the window end -> INVITE phase (on SQLite).
    pub latency_only: bool,
}

impl PipelineBench {
    /// A tiny run that finishes in seconds (the smoke test's).
    pub fn quick() -> PipelineBench {
        PipelineBench {
            clients: 4,
            seconds: 0.5,
            batch: 10,
            smtp_sessions: 2,
            incidents: 10,
            storm_secs: 2.0,
            storm_rate: 200,
            postgres: None,
            no_peer: false,
            latency_only: false,
        }
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The dialplans: `bench` takes the load (a wait of an hour: nobody is
/// called during the bench) and the mails; `lat` waits 1 s and calls the
/// callee.
fn write_dialplans(dir: &Path, callee: std::net::SocketAddr) -> anyhow::Result<()> {
    let d = dir.join("dialplans");
    std::fs::create_dir_all(&d)?;
    let plan = |contract: &str, uri: &str, pipeline: &str| {
        format!(
            "contract = \"{contract}\"\nname = \"{contract}\"\nlanguage = \"en\"\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Callee\"\nuri = \"{uri}\"\n[message]\ntext = \"An alert on the bench platform.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n{pipeline}"
        )
    };
    std::fs::write(
        d.join("bench.toml"),
        plan(
            "bench",
            "sip:nobody@127.0.0.1:9",
            "[pipeline]\nwait = \"1h\"\n[pipeline.mail]\nto = [\"alerts@acme.example\"]\n\
             [[pipeline.mail.rules]]\n\
             subject = '^\\[(?P<state>PROBLEM|RECOVERY)\\]\\s+(?P<host>\\S+)\\s+(?P<service>.+?)\\s*$'\n\
             recovery = \"RECOVERY\"\n",
        ),
    )?;
    std::fs::write(
        d.join("lat.toml"),
        plan(
            "lat",
            &format!("sip:callee@{callee}"),
            "[pipeline]\nwait = \"1s\"\n",
        ),
    )?;
    Ok(())
}

/// `callout serve` on `database_url`, with the SMTP intake.
struct Service {
    proc: Proc,
    base: String,
    smtp: std::net::SocketAddr,
}

async fn start_service(dir: &Path, database_url: &str) -> anyhow::Result<Service> {
    use sha2::Digest;
    let api = free_tcp_port()?;
    let smtp = free_tcp_port()?;
    let hash: String = sha2::Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prompts = std::fs::canonicalize("prompts").unwrap_or_else(|_| dir.join("prompts"));
    let config = dir.join("callout.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{api}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"31000-31999\"\n\
             database_url = \"{database_url}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
             [[tokens]]\nname = \"bench\"\nsha256 = \"{hash}\"\nscopes = [\"admin\", \"intake\"]\n\
             [intake.smtp]\nlisten = \"127.0.0.1:{smtp}\"\nmax_connections = 256\n",
            dp = dir.join("dialplans").display(),
            pr = prompts.display(),
            tc = dir.join("tts").display(),
        ),
    )?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(&config)
        .env("CALLOUT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting callout serve")?;
    let s = Service {
        proc: Proc(child),
        base: format!("http://127.0.0.1:{api}"),
        smtp: format!("127.0.0.1:{smtp}").parse()?,
    };
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/healthz", s.base)).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > until {
            bail!(
                "callout serve did not come up; see {}",
                dir.join("serve.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(s)
}

/// A real Prometheus Alertmanager on a free port (no cluster port).
async fn start_alertmanager(dir: &Path) -> anyhow::Result<(Proc, String)> {
    let port = free_tcp_port()?;
    let cfg = dir.join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: none\n  group_by: ['alertname']\nreceivers:\n  - name: none\n",
    )?;
    std::fs::create_dir_all(dir.join("am-data"))?;
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting prometheus-alertmanager (apt-get install prometheus-alertmanager)")?;
    let p = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/-/ready")).send().await {
            if r.status().is_success() {
                return Ok((p, base));
            }
        }
        if Instant::now() > until {
            bail!("Alertmanager did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Host and alert name of the n-th alert of the load.
fn host_name(n: u64) -> (String, String) {
    (
        format!("host-{:03}", n % HOSTS),
        format!("Check{}", (n / HOSTS) % 10),
    )
}

/// The bodies each target takes.
#[derive(Clone, Copy)]
enum Shape {
    /// callout `/v1/intake/events`: one PagerDuty-style event.
    Event,
    /// callout `/v1/intake/alertmanager`: a version-4 webhook of n alerts.
    Webhook(usize),
    /// Alertmanager `/api/v2/alerts`: an array of n alerts.
    AmApi(usize),
}

impl Shape {
    fn alerts(self) -> usize {
        match self {
            Shape::Event => 1,
            Shape::Webhook(n) | Shape::AmApi(n) => n,
        }
    }

    fn body(self, seq: u64) -> Vec<u8> {
        let first = seq * self.alerts() as u64;
        let v = match self {
            Shape::Event => {
                let (host, name) = host_name(first);
                json!({
                    "routing_key": "bench", "dedup_key": format!("{host}/{name}"),
                    "event_action": "trigger",
                    "payload": {"summary": format!("{name} on {host}"), "source": host, "severity": "critical"},
                })
            }
            Shape::Webhook(n) => json!({
                "version": "4", "status": "firing", "receiver": "callout", "groupKey": "{}:{}",
                "groupLabels": {}, "commonLabels": {"contract": "bench"}, "commonAnnotations": {},
                "externalURL": "http://am", "truncatedAlerts": 0,
                "alerts": (first..first + n as u64).map(|i| {
                    let (host, name) = host_name(i);
                    json!({
                        "status": "firing",
                        "labels": {"alertname": name, "host": host, "severity": "critical", "contract": "bench"},
                        "annotations": {"summary": format!("{name} on {host}")},
                        "startsAt": "2026-11-30T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prom", "fingerprint": format!("{host}-{name}"),
                    })
                }).collect::<Vec<_>>(),
            }),
            Shape::AmApi(n) => Value::Array(
                (first..first + n as u64)
                    .map(|i| {
                        let (host, name) = host_name(i);
                        json!({
                            "labels": {"alertname": name, "host": host, "severity": "critical", "contract": "bench"},
                            "annotations": {"summary": format!("{name} on {host}")},
                            "generatorURL": "http://prom",
                        })
                    })
                    .collect(),
            ),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// What one HTTP phase measured.
struct Load {
    requests: u64,
    alerts: u64,
    errors: u64,
    secs: f64,
    lat_ms: Vec<f64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.alerts as f64 / self.secs
    }

    fn line(&self, what: &str) -> String {
        let mut l = self.lat_ms.clone();
        l.sort_by(f64::total_cmp);
        format!(
            "{what}: {:.0} alerts/s ({} alerts in {} requests, {} errors, {:.1} s); answer p50 {:.1} ms, p99 {:.1} ms",
            self.rate(),
            self.alerts,
            self.requests,
            self.errors,
            self.secs,
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        )
    }
}

/// `clients` keep-alive clients posting `shape` bodies to `url` for
/// `secs` (or at `rate` requests per second in total, when given).
async fn http_load(
    url: &str,
    shape: Shape,
    clients: usize,
    secs: f64,
    rate: Option<f64>,
) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, seq, url) = (client.clone(), seq.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            loop {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if let Some(rate) = rate {
                    let at = started + Duration::from_secs_f64(n as f64 / rate);
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                } else if Instant::now() >= end {
                    break;
                }
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(shape.body(n))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        lat.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut load = Load {
        requests: 0,
        alerts: 0,
        errors: 0,
        secs: 0.0,
        lat_ms: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await?;
        load.requests += ok;
        load.errors += errors;
        load.lat_ms.extend(lat);
    }
    load.secs = started.elapsed().as_secs_f64();
    load.alerts = load.requests * shape.alerts() as u64;
    Ok(load)
}

/// The HTTP phases against one callout (single events, then batches).
async fn http_phases(o: &PipelineBench, base: &str, label: &str) -> anyhow::Result<(Load, Load)> {
    let single = http_load(
        &format!("{base}/v1/intake/events"),
        Shape::Event,
        o.clients,
        o.seconds,
        None,
    )
    .await?;
    println!(
        "{}",
        single.line(&format!(
            "callout {label}, single events, {} clients",
            o.clients
        ))
    );
    let batch = http_load(
        &format!("{base}/v1/intake/alertmanager?contract=bench"),
        Shape::Webhook(o.batch),
        o.clients,
        o.seconds,
        None,
    )
    .await?;
    println!(
        "{}",
        batch.line(&format!(
            "callout {label}, Alertmanager batches of {}, {} clients",
            o.batch, o.clients
        ))
    );
    Ok((single, batch))
}

/// An ISO-2022-JP alert mail ("[PROBLEM] host HTTP 応答" and a Japanese
/// body) made from the fuzz corpus' sample, naming `host`.
fn mail(host: &str, n: u64) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sample = include_str!("../../fuzz/corpus/mail/iso2022jp-problem.eml");
    let mut out = String::new();
    for line in sample.lines() {
        let line = if let Some(enc) = line
            .strip_prefix("Subject: =?iso-2022-jp?b?")
            .and_then(|r| r.strip_suffix("?="))
        {
            let raw = b64.decode(enc).unwrap_or_default();
            let raw = String::from_utf8_lossy(&raw).replace("web-01", host);
            format!("Subject: =?iso-2022-jp?b?{}?=", b64.encode(raw.as_bytes()))
        } else if line.starts_with("Message-ID:") {
            format!("Message-ID: <bench-{n}@nms.example.jp>")
        } else {
            line.replace("web-01", host)
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// Reads one SMTP reply (all its lines); returns its code.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("SMTP connection closed");
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

/// One SMTP session sending mails until `end`; returns (stored, failed,
/// DATA-end -> 250 latencies in ms).
async fn smtp_session(
    addr: std::net::SocketAddr,
    end: Instant,
    seq: Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64, Vec<f64>)> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let expect = |got: u16, want: u16, what: &str| -> anyhow::Result<()> {
        if got != want {
            bail!("SMTP {what}: {got}, wanted {want}");
        }
        Ok(())
    };
    expect(reply(&mut r).await?, 220, "greeting")?;
    w.write_all(b"EHLO bench.example.jp\r\n").await?;
    expect(reply(&mut r).await?, 250, "EHLO")?;
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    while Instant::now() < end {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let (host, _) = host_name(n);
        w.write_all(b"MAIL FROM:<monitor@nms.example.jp>\r\n")
            .await?;
        expect(reply(&mut r).await?, 250, "MAIL")?;
        w.write_all(b"RCPT TO:<alerts@acme.example>\r\n").await?;
        expect(reply(&mut r).await?, 250, "RCPT")?;
        w.write_all(b"DATA\r\n").await?;
        expect(reply(&mut r).await?, 354, "DATA")?;
        w.write_all(&mail(&host, n)).await?;
        let sent = Instant::now();
        w.write_all(b".\r\n").await?;
        if reply(&mut r).await? == 250 {
            ok += 1;
            lat.push(sent.elapsed().as_secs_f64() * 1000.0);
        } else {
            failed += 1;
        }
    }
    w.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut r).await;
    Ok((ok, failed, lat))
}

async fn smtp_phase(o: &PipelineBench, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for _ in 0..o.smtp_sessions {
        tasks.push(tokio::spawn(smtp_session(addr, end, seq.clone())));
    }
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    for t in tasks {
        let (a, b, l) = t.await??;
        ok += a;
        failed += b;
        lat.extend(l);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "callout SMTP, ISO-2022-JP mails, {} sessions: {:.0} mails/s ({ok} stored, {failed} refused, {secs:.1} s); \
         end of DATA -> 250 p50 {:.1} ms, p99 {:.1} ms",
        o.smtp_sessions,
        ok as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    Ok(())
}

/// A UDP callee recording when each INVITE arrives (wall clock, ms, by
/// `X-Callout-Notification`), answering 486 so each escalation ends.
fn start_callee() -> anyhow::Result<(std::net::SocketAddr, Arrivals)> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    Ok((addr, super::spawn_busy_callee(sock, wall_ms)))
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Waits until the engine has decided on every accepted alert (so a
/// phase does not pay for the last one's backlog).
async fn drain(client: &reqwest::Client, base: &str, limit: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .text()
            .await?;
        let counter = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let accepted = counter("callout_pipeline_alerts_accepted_total ");
        let handled = counter("callout_pipeline_alerts_handled_total ");
        if handled >= accepted || started.elapsed() > limit {
            return Ok(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Window end -> INVITE: single alerts to `lat` (wait 1 s), new hosts,
/// spaced 20 ms; each incident's deadline is its `opened_ms` + 1 s.
async fn latency_phase(o: &PipelineBench, base: &str, arrivals: &Arrivals) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let post = |host: String| {
        let body = json!({
            "routing_key": "lat", "dedup_key": format!("{host}/Down"), "event_action": "trigger",
            "payload": {"summary": "Down", "source": host, "severity": "critical"},
        });
        client
            .post(format!("{base}/v1/intake/events"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    // One incident first, so the message's speech is in the cache.
    post("warm-up".into()).await?.error_for_status()?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..o.incidents {
        tick.tick().await;
        post(format!("lat-{i:04}")).await?.error_for_status()?;
    }
    let until = Instant::now() + Duration::from_secs(15);
    let mut rows;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = get_json(
            &client,
            &format!("{base}/v1/incidents?contract=lat&limit=500"),
        )
        .await?;
        rows = v["items"].as_array().cloned().unwrap_or_default();
        rows.retain(|i| i["host"].as_str().is_some_and(|h| h.starts_with("lat-")));
        let got = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let seen = rows
            .iter()
            .filter(|i| {
                i["notification"]
                    .as_str()
                    .is_some_and(|n| got.contains_key(n))
            })
            .count();
        if seen >= o.incidents || Instant::now() > until {
            break;
        }
    }
    let got = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut ms: Vec<f64> = rows
        .iter()
        .filter_map(|i| {
            let at = got.get(i["notification"].as_str()?)?;
            let deadline = i["opened_ms"].as_f64()? + 1000.0;
            Some(at - deadline)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "window end -> INVITE at the callee ({} of {} incidents, wait 1 s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        o.incidents,
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
    breakdown(&client, base, &rows, &got).await
}

/// Where the time between window end and INVITE went, per stage: the
/// engine's step (its timeline line `pending → notifying`), the gateway taking the
/// request (the notification's `created_ms`, read before its commits),
/// the INVITE at the callee.
async fn breakdown(
    client: &reqwest::Client,
    base: &str,
    rows: &[Value],
    got: &HashMap<String, f64>,
) -> anyhow::Result<()> {
    let (mut timer, mut handoff, mut gateway) = (Vec::new(), Vec::new(), Vec::new());
    for i in rows {
        let (Some(id), Some(n), Some(opened)) = (
            i["id"].as_str(),
            i["notification"].as_str(),
            i["opened_ms"].as_f64(),
        ) else {
            continue;
        };
        let Some(at) = got.get(n) else { continue };
        let inc = get_json(client, &format!("{base}/v1/incidents/{id}")).await?;
        let step = inc["timeline"].as_array().and_then(|t| {
            t.iter()
                .find(|l| {
                    l["kind"] == "state"
                        && l["text"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("pending → notifying"))
                })
                .and_then(|l| l["at_ms"].as_f64())
        });
        let ntf = get_json(client, &format!("{base}/v1/notifications/{n}")).await?;
        let (Some(step), Some(created)) = (step, ntf["created_ms"].as_f64()) else {
            continue;
        };
        timer.push(step - (opened + 1000.0));
        handoff.push(created - step);
        gateway.push(at - created);
    }
    for v in [&mut timer, &mut handoff, &mut gateway] {
        v.sort_by(f64::total_cmp);
    }
    let p = |v: &[f64]| {
        format!(
            "p50 {:.1}, p99 {:.1}",
            percentile(v, 0.5),
            percentile(v, 0.99)
        )
    };
    println!(
        "  stages (ms): window end -> engine step {}; step -> gateway takes the request {}; gateway -> INVITE {}",
        p(&timer),
        p(&handoff),
        p(&gateway)
    );
    Ok(())
}

/// A storm at `storm_rate` alerts/s (Alertmanager batches) for
/// `storm_secs`, the service's RSS sampled every second.
async fn storm_phase(o: &PipelineBench, base: &str, pid: u32) -> anyhow::Result<()> {
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((started.elapsed().as_secs_f64(), rss_kib(pid)));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };
    let per_req = o.batch.max(1);
    let load = http_load(
        &format!("{base}/v1/intake/alertmanager?contract=bench"),
        Shape::Webhook(per_req),
        o.clients,
        o.storm_secs,
        Some(o.storm_rate as f64 / per_req as f64),
    )
    .await?;
    stop.cancel();
    let _ = sampler.await;
    let s = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let at = |i: usize| s.get(i).map_or(0, |x| x.1) / 1024;
    let max = s.iter().map(|x| x.1).max().unwrap_or(0) / 1024;
    println!(
        "{}",
        load.line(&format!(
            "storm, {} alerts/s offered for {:.0} s",
            o.storm_rate, o.storm_secs
        ))
    );
    println!(
        "storm RSS of callout serve ({} samples): start {} MiB, mid {} MiB, end {} MiB, max {} MiB",
        s.len(),
        at(0),
        at(s.len() / 2),
        at(s.len().saturating_sub(1)),
        max
    );
    Ok(())
}

/// A database of our own on the PostgreSQL server, dropped after.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create(admin: &str) -> anyhow::Result<PgDb> {
        use sqlx::Connection;
        let name = format!("callout_bench_{}", std::process::id());
        let mut c = sqlx::PgConnection::connect(admin)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut c)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await?;
        let url = match admin.rsplit_once('/') {
            Some((b, _)) => format!("{b}/{name}"),
            None => bail!("the PostgreSQL URL must end with /DATABASE"),
        };
        Ok(PgDb {
            admin: admin.into(),
            name,
            url,
        })
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut c)
        .await?;
        Ok(())
    }
}

pub async fn run(o: PipelineBench) -> anyhow::Result<()> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("callout-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sqlite"))?;
    let (callee, arrivals) = start_callee()?;
    write_dialplans(&dir, callee)?;
    println!(
        "pipeline bench: {} clients, {:.1} s per phase, batches of {}, {} SMTP sessions, {} cores",
        o.clients,
        o.seconds,
        o.batch,
        o.smtp_sessions,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let client = reqwest::Client::new();
    if o.latency_only {
        let db = format!("sqlite://{}/sqlite/callout.db", dir.display());
        let svc = start_service(&dir, &db).await?;
        latency_phase(&o, &svc.base, &arrivals).await?;
        drop(svc);
        println!("  (the service's log: {})", dir.join("serve.log").display());
        return Ok(());
    }
    {
        let db = format!("sqlite://{}/sqlite/callout.db", dir.display());
        let svc = start_service(&dir, &db).await?;
        let (single, batch) = http_phases(&o, &svc.base, "SQLite").await?;
        let took = drain(&client, &svc.base, Duration::from_secs(120)).await?;
        println!("  (engine caught up {took:.1} s after the last answer)");
        if !o.no_peer {
            let (_am, am) = start_alertmanager(&dir).await?;
            let url = format!("{am}/api/v2/alerts");
            let s = http_load(&url, Shape::AmApi(1), o.clients, o.seconds, None).await?;
            println!(
                "{}",
                s.line(&format!(
                    "Alertmanager, single alerts, {} clients (in memory)",
                    o.clients
                ))
            );
            let b = http_load(&url, Shape::AmApi(o.batch), o.clients, o.seconds, None).await?;
            println!(
                "{}",
                b.line(&format!(
                    "Alertmanager, batches of {}, {} clients (in memory)",
                    o.batch, o.clients
                ))
            );
            println!(
                "  ratio callout/Alertmanager: single {:.2}, batches {:.2}",
                single.rate() / s.rate(),
                batch.rate() / b.rate()
            );
        }
        smtp_phase(&o, svc.smtp).await?;
        drain(&client, &svc.base, Duration::from_secs(120)).await?;
        latency_phase(&o, &svc.base, &arrivals).await?;
        storm_phase(&o, &svc.base, svc.proc.0.id()).await?;
        let took = drain(&client, &svc.base, Duration::from_secs(300)).await?;
        println!("  (engine caught up {took:.1} s after the storm)");
    }
    if let Some(admin) = &o.postgres {
        let pg = PgDb::create(admin).await?;
        let r = async {
            let svc = start_service(&dir, &pg.url).await?;
            http_phases(&o, &svc.base, "PostgreSQL").await?;
            smtp_phase(&o, svc.smtp).await?;
            let took = drain(&client, &svc.base, Duration::from_secs(120)).await?;
            println!("  (engine caught up {took:.1} s after the last answer)");
            anyhow::Ok(())
        }
        .await;
        pg.drop_db().await?;
        r?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! `callout demo`: the whole flow on embedded defaults (SQLite, the sample
//! dialplans), two local softphones as the people on call. An
//! Alertmanager webhook (English contract `demo`) and a Japanese alert
//! mail over SMTP (contract `demo-ja`) each wait out their window, become
//! an incident with a ticket number, are called until someone presses 1,
//! recover, and close; every step is printed from the incident's
//! timeline as it happens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::driver::Gateway;
use crate::softphone::{describe, serve, SoftphoneOptions};

const SMTP_TO: &str = "demo-ja@alerts.callout.localhost";

pub async fn run(dialplans: PathBuf, prompts: PathBuf) -> anyhow::Result<()> {
    use sha2::Digest;
    // The two people on call, where dialplans/demo*.toml expect them.
    let mut phones = Vec::new();
    for (i, (port, key)) in [(5071u16, "2"), (5072u16, "1")].into_iter().enumerate() {
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let rtp = 41000 + i * 200;
        let (gw, mut incoming) = Gateway::start_softphone(listen, &format!("{rtp}-{}", rtp + 199))
            .await
            .with_context(|| {
                format!("starting the demo softphone on {listen} (is the port free?)")
            })?;
        let opts = SoftphoneOptions {
            listen,
            press: key.into(),
            after: Duration::from_millis(3500),
            record: None,
            calls: 0,
            rtp_ports: String::new(),
        };
        let who = if key == "2" { "first" } else { "second" };
        phones.push(tokio::spawn(async move {
            let emit =
                move |v: serde_json::Value| println!("            [{who} phone] {}", describe(&v));
            let _ = serve(gw, &mut incoming, opts, &emit).await;
        }));
    }
    let smtp_port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port();
    let token: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    let config = crate::config::Config {
        listen: "127.0.0.1:0".into(),
        sip: "127.0.0.1:0".into(),
        dialplans,
        prompts,
        tokens: vec![crate::config::TokenConfig {
            name: "demo".into(),
            sha256: sha2::Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            scopes: vec!["admin".into()],
            contracts: Vec::new(),
        }],
        intake: crate::config::IntakeConfig {
            smtp: Some(crate::pipeline::smtp::SmtpConfig {
                listen: format!("127.0.0.1:{smtp_port}"),
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    let db = config.database_url.clone();
    let (svc, listener) = crate::serve::start(config).await?;
    let api = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, crate::api::router(svc)).await });
    println!("callout demo: API on {api}, SMTP intake on 127.0.0.1:{smtp_port}, database {db}");
    let client = reqwest::Client::new();
    let started = Instant::now();

    println!("\n== 1. Prometheus Alertmanager posts a firing alert for contract demo");
    let alert = |status: &str| {
        json!({"version": "4", "status": status, "receiver": "callout", "groupKey": "{}:{alertname=\"HTTPDown\"}",
            "groupLabels": {"alertname": "HTTPDown"}, "commonLabels": {"contract": "demo"}, "commonAnnotations": {},
            "externalURL": "http://alertmanager.example:9093", "truncatedAlerts": 0,
            "alerts": [{"status": status, "labels": {"alertname": "HTTPDown", "host": "web-01.example.com",
                "severity": "critical", "contract": "demo"},
                "annotations": {"summary": "HTTP checks failing"},
                "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example:9090/graph", "fingerprint": "demo-web-01-http"}]})
    };
    post(
        &client,
        &api,
        &token,
        "/v1/intake/alertmanager",
        &alert("firing"),
    )
    .await?;
    let mut f = Follow::new(&client, &api, &token, "demo", started);
    f.until(&["acknowledged"]).await?;
    println!("\n== 2. Alertmanager posts the recovery");
    post(
        &client,
        &api,
        &token,
        "/v1/intake/alertmanager",
        &alert("resolved"),
    )
    .await?;
    let en = f.until(&["closed"]).await?;

    println!("\n== 3. A customer's monitor mails a Japanese alert to {SMTP_TO}");
    let problem = mail(
        "【障害】web-02 HTTP応答なし",
        "重要度: critical\r\n監視項目: HTTP\r\n",
    );
    send_mail(smtp_port, &problem).await?;
    let mut f = Follow::new(&client, &api, &token, "demo-ja", started);
    f.until(&["acknowledged"]).await?;
    println!("\n== 4. The recovery mail");
    send_mail(
        smtp_port,
        &mail("【復旧】web-02 HTTP応答なし", "重要度: critical\r\n"),
    )
    .await?;
    let ja = f.until(&["closed"]).await?;

    for (name, inc) in [("demo", en), ("demo-ja", ja)] {
        println!(
            "\nincident {} of {name}: ticket {}, {} alerts, {} timeline lines, state {}",
            inc["id"].as_str().unwrap_or("?"),
            inc["ticket"].as_str().unwrap_or("?"),
            inc["alerts"].as_array().map_or(0, Vec::len),
            inc["timeline"].as_array().map_or(0, Vec::len),
            inc["state"].as_str().unwrap_or("?"),
        );
    }
    println!(
        "done: GET {api}/v1/incidents/<id> (or `callout incidents show <ticket>`) has the whole story; `callout serve` runs this as a service"
    );
    for p in phones {
        p.abort();
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let r = client
        .post(format!("{api}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or_default();
    println!("POST {path} -> {} {}", status.as_u16(), v);
    anyhow::ensure!(status.is_success(), "the intake refused the alert");
    Ok(())
}

/// Prints an incident's timeline as it grows.
struct Follow<'a> {
    client: &'a reqwest::Client,
    api: &'a str,
    token: &'a str,
    contract: &'a str,
    started: Instant,
    id: Option<String>,
    shown: usize,
}

impl<'a> Follow<'a> {
    fn new(
        client: &'a reqwest::Client,
        api: &'a str,
        token: &'a str,
        contract: &'a str,
        started: Instant,
    ) -> Self {
        Follow {
            client,
            api,
            token,
            contract,
            started,
            id: None,
            shown: 0,
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(format!("{}{path}", self.api))
            .bearer_auth(self.token)
            .send()
            .await?
            .json()
            .await?)
    }

    async fn until(&mut self, states: &[&str]) -> anyhow::Result<Value> {
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            anyhow::ensure!(
                Instant::now() < limit,
                "the demo incident did not reach {states:?} within two minutes"
            );
            if self.id.is_none() {
                let list = self
                    .get(&format!("/v1/incidents?contract={}&limit=1", self.contract))
                    .await?;
                // The newest incident opened by this run.
                self.id = list["items"][0]["id"]
                    .as_str()
                    .filter(|_| list["items"][0]["state"] != "closed")
                    .map(str::to_string);
            }
            if let Some(id) = self.id.clone() {
                let v = self.get(&format!("/v1/incidents/{id}")).await?;
                let ticket = v["ticket"].as_str().unwrap_or("-");
                if let Some(tl) = v["timeline"].as_array() {
                    for t in tl.iter().skip(self.shown) {
                        println!(
                            "{:>6} ms  [{ticket}] {:<8} {}",
                            self.started.elapsed().as_millis(),
                            t["kind"].as_str().unwrap_or(""),
                            t["text"].as_str().unwrap_or("")
                        );
                    }
                    self.shown = tl.len();
                }
                if states.contains(&v["state"].as_str().unwrap_or("")) {
                    return Ok(v);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An alert mail as a Japanese monitor sends it: UTF-8, the subject as an
/// RFC 2047 encoded word.
fn mail(subject: &str, body: &str) -> String {
    use base64::Engine as _;
    format!(
        "From: monitor@customer.example\r\nTo: {SMTP_TO}\r\nSubject: =?UTF-8?B?{}?=\r\n\
         Date: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}",
        base64::engine::general_purpose::STANDARD.encode(subject),
        chrono::Utc::now().to_rfc2822()
    )
}

/// A plain SMTP client: enough to show the conversation.
async fn send_mail(port: u16, message: &str) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<String> {
        loop {
            let mut line = String::new();
            anyhow::ensure!(r.read_line(&mut line).await? > 0, "the SMTP server closed");
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.trim_end().to_string());
            }
        }
    }
    let greeting = reply(&mut r).await?;
    println!("SMTP  <- {greeting}");
    let data = format!(
        "{}\r\n.\r\n",
        message
            .split("\r\n")
            .map(|l| if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    );
    for cmd in [
        "EHLO monitor.customer.example".to_string(),
        "MAIL FROM:<monitor@customer.example>".into(),
        format!("RCPT TO:<{SMTP_TO}>"),
        "DATA".into(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).await?;
        let rep = reply(&mut r).await?;
        println!("SMTP  -> {cmd}\nSMTP  <- {rep}");
        anyhow::ensure!(
            rep.starts_with('2') || rep.starts_with('3'),
            "SMTP refused: {rep}"
        );
    }
    w.write_all(data.as_bytes()).await?;
    let rep = reply(&mut r).await?;
    println!(
        "SMTP  -> (the message, {} bytes)\nSMTP  <- {rep}",
        data.len()
    );
    anyhow::ensure!(rep.starts_with("250"), "SMTP refused the message: {rep}");
    w.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut r).await;
    Ok(())
}

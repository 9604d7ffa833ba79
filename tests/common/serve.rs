//! A real `callout serve` on SQLite for tests that drive it over HTTP and
//! read what it stored.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::peer::{start_on, start_on_free_port, tail};

pub const TOKEN: &str = "dial-failures-token";

pub struct Serve {
    pub child: Child,
    pub base: String,
    pub config: PathBuf,
    pub db: String,
}

impl Serve {
    pub fn start(dir: &Path, extra: &str, rtp: &str) -> Serve {
        Self::start_in(dir, extra, rtp, None)
    }

    /// As [`Serve::start`], started in `cwd` (as a service manager starts
    /// it in `/`).
    pub fn start_in(dir: &Path, extra: &str, rtp: &str, cwd: Option<&Path>) -> Serve {
        Self::start_full(dir, None, extra, rtp, cwd, None)
    }

    /// As [`Serve::start_in`], with the API on `api_port` (two processes
    /// that must know each other's address before either starts).
    pub fn start_on(
        dir: &Path,
        api_port: u16,
        extra: &str,
        rtp: &str,
        cwd: Option<&Path>,
    ) -> Serve {
        Self::start_full(dir, Some(api_port), extra, rtp, cwd, None)
    }

    /// As [`Serve::start`], on the database `db` (e.g. PostgreSQL)
    /// instead of `data/callout.db`.
    pub fn start_with_db(dir: &Path, db: &str, extra: &str, rtp: &str) -> Serve {
        Self::start_full(dir, None, extra, rtp, None, Some(db))
    }

    /// With no `api_port`, one is picked (and another one if the service
    /// exits at the start: see [`start_on_free_port`]).
    fn start_full(
        dir: &Path,
        api_port: Option<u16>,
        extra: &str,
        rtp: &str,
        cwd: Option<&Path>,
        db: Option<&str>,
    ) -> Serve {
        let hash: String = Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let db = db.map_or_else(
            || format!("sqlite://{}", dir.join("data/callout.db").display()),
            str::to_string,
        );
        let config = dir.join("callout.toml");
        // Top-level keys in `extra` (before its first table) go before
        // the tokens table, where TOML can still take them.
        let split = if extra.starts_with('[') {
            0
        } else {
            extra.find("\n[").map_or(extra.len(), |i| i + 1)
        };
        let (top, extra) = extra.split_at(split);
        let command = |api_port: u16| {
            std::fs::write(
                &config,
                format!(
                    "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{rtp}\"\n\
                     database_url = \"{db}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n{top}\
                     [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n{extra}",
                    dp = dir.join("dialplans").display(),
                    pr = dir.join("prompts").display(),
                    tc = dir.join("tts").display(),
                ),
            )
            .unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            cmd.args(["serve", "--config"])
                .arg(&config)
                .env("CALLOUT_LOG", "info")
                .stdout(Stdio::null());
            cmd
        };
        let log = dir.join("serve.log");
        let up = |_: &Child, api_port: u16| healthy(&format!("http://127.0.0.1:{api_port}"));
        let limit = Duration::from_secs(30);
        let (child, api_port) = match api_port {
            None => start_on_free_port("callout serve", limit, command, |_| log.clone(), up),
            Some(port) => {
                let child = start_on("callout serve", limit, port, command(port), &log, up)
                    .unwrap_or_else(|| {
                        panic!(
                            "callout serve exited at the start (its API on {port}); its log:\n{}",
                            tail(&log)
                        )
                    });
                (child, port)
            }
        };
        Serve {
            child,
            base: format!("http://127.0.0.1:{api_port}"),
            config,
            db,
        }
    }

    pub fn http(&self, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let url = format!("{}{path}", self.base);
        let mut r = if method == "POST" {
            c.post(url)
        } else {
            c.get(url)
        }
        .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().unwrap_or(Value::Null)))
    }

    /// A text resource (e.g. `/metrics`).
    pub fn text(&self, path: &str) -> String {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    pub fn notify(&self, contract: &str, ticket: &str) -> Value {
        self.notify_with(contract, ticket, "critical")
    }

    pub fn notify_with(&self, contract: &str, ticket: &str, severity: &str) -> Value {
        let (st, v) = self
            .http(
                "POST",
                "/v1/notifications",
                Some(
                    json!({"contract": contract, "ticket": ticket, "severity": severity,
                    "host": "db-1", "summary": "down"}),
                ),
            )
            .unwrap();
        assert_eq!(st, 202, "{v}");
        v
    }

    pub fn wait_state(&self, id: &str, states: &[&str], limit: Duration) -> Value {
        let until = Instant::now() + limit;
        loop {
            let (_, v) = self
                .http("GET", &format!("/v1/notifications/{id}"), None)
                .unwrap();
            if states.contains(&v["state"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                Instant::now() < until,
                "{id} never reached {states:?}: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The events stored for a notification (its webhook outbox).
    pub fn events(&self, id: &str) -> Vec<(String, Value)> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = callout::store::Store::connect(&self.db).await.unwrap();
            store
                .outbox(id)
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.event, serde_json::from_str(&o.payload).unwrap()))
                .collect()
        })
    }
}

/// Whether the service at `base` answers (any status).
fn healthy(base: &str) -> bool {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
        .get(format!("{base}/healthz"))
        .bearer_auth(TOKEN)
        .send()
        .is_ok()
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn plan(contract: &str, uri: &str, trunk: Option<&str>, message: &str) -> String {
    format!(
        "contract = \"{contract}\"\nname = \"{contract}\"\nlanguage = \"en\"\n{trunk}\
         [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"{uri}\"\n[message]\n{message}\n\
         [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n",
        trunk = trunk.map_or(String::new(), |t| format!("trunk = \"{t}\"\n")),
    )
}

pub fn copy_prompts(dir: &Path) {
    let p = dir.join("prompts");
    std::fs::create_dir_all(&p).unwrap();
    for f in ["fallback-en.wav", "press-a-key.wav"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("prompts")
                .join(f),
            p.join(f),
        )
        .unwrap();
    }
}

/// A `callout softphone` that answers every call and presses 1 after a
/// second; killed when dropped. Returns it and its SIP URI.
pub fn pressing_callee(rtp_ports: &str) -> (super::KillOnDrop, String) {
    let (child, port) = super::peer::softphone(|cmd| {
        cmd.args(["--press", "1", "--after", "1s", "--rtp-ports", rtp_ports]);
    });
    (
        super::KillOnDrop(child),
        format!("sip:bob@127.0.0.1:{port}"),
    )
}

//! `callout serve` as one node of a cluster sharing a database (the
//! PostgreSQL tests): killed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::peer::start_on_free_port;

pub struct Node {
    pub name: String,
    pub child: Child,
    /// `http://127.0.0.1:PORT` of its API.
    pub base: String,
    /// Its log (each start of a node has its own).
    pub log: PathBuf,
}

/// What differs between the nodes of a test and between tests.
pub struct NodeConfig<'a> {
    /// The admin token the test's requests carry.
    pub token: &'a str,
    pub db: &'a str,
    pub rtp: &'a str,
    /// The `[cluster]` table but `node_id`, e.g. `lease_ttl = "3s"`.
    pub cluster: &'a str,
    /// Tables after it.
    pub extra: &'a str,
}

impl Node {
    /// Node `name` in `dir/name` (configuration, log, TTS cache and
    /// journal), with the dialplans of `dir/dialplans` and the shipped
    /// prompts; up once its API answers. Its API port is picked here
    /// (and another one picked if it exits at the start: see
    /// [`start_on_free_port`]); the wait is bounded by 60 s.
    pub fn start(dir: &Path, name: &str, c: &NodeConfig) -> Node {
        let ndir = dir.join(name);
        std::fs::create_dir_all(&ndir).unwrap();
        let hash: String = Sha256::digest(c.token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = ndir.join("callout.toml");
        let (child, api_port) = start_on_free_port(
            &format!("node {name}"),
            Duration::from_secs(60),
            |api_port| {
                std::fs::write(
                    &config,
                    format!(
                        "listen = \"127.0.0.1:{api_port}\"\nsip = \"127.0.0.1:0\"\nrtp_ports = \"{rtp}\"\n\
                         database_url = \"{db}\"\ndialplans = \"{dp}\"\nprompts = \"{pr}\"\ntts_cache = \"{tc}\"\n\
                         journal_dir = \"{jd}\"\n\
                         [[tokens]]\nname = \"t\"\nsha256 = \"{hash}\"\nscopes = [\"admin\"]\n\
                         [cluster]\nnode_id = \"{name}\"\n{cluster}\n{extra}",
                        rtp = c.rtp,
                        db = c.db,
                        dp = dir.join("dialplans").display(),
                        pr = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
                        tc = ndir.join("tts").display(),
                        jd = ndir.join("journal").display(),
                        cluster = c.cluster,
                        extra = c.extra,
                    ),
                )
                .unwrap();
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
                cmd.args(["serve", "--config"])
                    .arg(&config)
                    .env("CALLOUT_LOG", "info")
                    .stdout(Stdio::null());
                cmd
            },
            |api_port| ndir.join(format!("serve-{api_port}.log")),
            |_, api_port| {
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap()
                    .get(format!("http://127.0.0.1:{api_port}/healthz"))
                    .bearer_auth(c.token)
                    .send()
                    .is_ok()
            },
        );
        Node {
            name: name.to_string(),
            child,
            base: format!("http://127.0.0.1:{api_port}"),
            log: ndir.join(format!("serve-{api_port}.log")),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `callout.toml`: every setting has a default, so `callout serve` runs
//! with no file at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An API token, stored as the SHA-256 of the secret (hex).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub sha256: String,
    /// `notify`, `operate`, `actions` (run maintenance actions), `admin`.
    pub scopes: Vec<String>,
}

/// A SIP trunk: where calls of the dialplans naming it are sent, and the
/// digest credentials, read from environment variables named here (never
/// written in the file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Outbound proxy `host:port`; without it calls go to the URI's host.
    pub proxy: Option<String>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// Registrar `host:port`: callout registers `aor` there and keeps the
    /// registration refreshed.
    pub registrar: Option<String>,
    pub aor: Option<String>,
    /// Requested registration time, seconds (default 600).
    pub register_expires: Option<u32>,
    /// The trunk's media comes from behind NAT, from another address than
    /// its SDP names: take the first valid RTP packet's source as the peer
    /// (once per call). Off by default: media is accepted only from the
    /// address the answer names.
    #[serde(default)]
    pub symmetric_rtp: bool,
}

/// Where ticket events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Default target for contracts without their own.
    pub url: Option<String>,
    /// Per-contract targets.
    #[serde(default)]
    pub contracts: BTreeMap<String, String>,
    /// Signing secrets, `whsec_<base64>`; several while rotating.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Give up on a delivery this long after the event (e.g. "24h").
    #[serde(default = "day")]
    pub give_up_after: String,
    /// Extra CA certificate (PEM) to trust for HTTPS targets, for ticket
    /// systems behind a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn day() -> String {
    "24h".into()
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            contracts: BTreeMap::new(),
            secrets: Vec::new(),
            give_up_after: day(),
            ca_file: None,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API address.
    pub listen: String,
    /// SIP socket address.
    pub sip: String,
    pub rtp_ports: String,
    /// `sqlite://data/callout.db` or `postgres://…`.
    pub database_url: String,
    pub dialplans: PathBuf,
    pub prompts: PathBuf,
    pub tts_cache: PathBuf,
    /// API tokens. With none configured, a development token is printed at
    /// start-up (see `serve`).
    pub tokens: Vec<TokenConfig>,
    pub webhooks: WebhookConfig,
    /// Largest accepted request body, bytes.
    pub max_body: usize,
    /// Site-defined voices, selected by a dialplan's `voice`.
    pub voices: BTreeMap<String, crate::tts::VoiceConfig>,
    /// SIP trunks by name, selected by a dialplan's `trunk`.
    pub trunks: BTreeMap<String, TrunkConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            sip: "127.0.0.1:5060".into(),
            rtp_ports: "20000-29999".into(),
            database_url: "sqlite://data/callout.db".into(),
            dialplans: "dialplans".into(),
            prompts: "prompts".into(),
            tts_cache: "data/tts-cache".into(),
            tokens: Vec::new(),
            webhooks: WebhookConfig::default(),
            max_body: 64 * 1024,
            voices: BTreeMap::new(),
            trunks: BTreeMap::new(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Parse {
                path: path.display().to_string(),
                message: format!("line {line}: {}", e.message()),
            }
        })
    }
}

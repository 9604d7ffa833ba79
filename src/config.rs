//! `callout.toml`: every setting has a default, so `callout serve` runs
//! with no file at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// An API token, stored as the SHA-256 of the secret (hex).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub sha256: String,
    /// `notify`, `operate`, `actions` (run maintenance actions),
    /// `intake` (post alerts), `admin`.
    pub scopes: Vec<String>,
    /// With `intake`: the only contracts this token may post alerts for
    /// (a customer's monitoring system); empty: any contract.
    #[serde(default)]
    pub contracts: Vec<String>,
}

/// A SIP trunk: where calls of the dialplans naming it are sent, and the
/// digest credentials, read from environment variables named here (never
/// written in the file).
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Address for Via sent-by and Contact of this trunk's calls and
    /// registration (`IP`, `IP:port`, `[IPv6]:port`); overrides the
    /// global `sip_advertise`.
    pub sip_advertise: Option<String>,
    /// Address for the SDP `o=`/`c=` lines of this trunk's calls;
    /// overrides the global `rtp_advertise`.
    pub rtp_advertise: Option<String>,
    /// The digest realm the credentials belong to: challenges for any
    /// other realm are refused (the call ends, no hash is sent). Unset:
    /// calls answer challenges only when they go through `proxy`, and the
    /// registrar's challenges are answered (see docs/security.md).
    pub realm: Option<String>,
    /// Failover: more proxies (`host:port`), tried in order after
    /// `proxy` when it is down or a call to it times out or gets 5xx.
    #[serde(default)]
    pub proxies: Vec<String>,
    /// Send OPTIONS to each proxy this often (e.g. "30s"); unset: no
    /// keepalive (see docs/sip-dialog.md, Trunks).
    pub keepalive: Option<String>,
    /// Unanswered (or 5xx) OPTIONS in a row before a proxy is down
    /// (default 3).
    pub keepalive_misses: Option<u32>,
    /// Caller identity of this trunk's calls (RFC 3325): sent as
    /// `P-Asserted-Identity` / `P-Preferred-Identity`; `"Name" <uri>` or a
    /// sip:, sips: or tel: URI.
    pub asserted_identity: Option<String>,
    pub preferred_identity: Option<String>,
    /// From user part (e.g. the carrier's DID) and display name, over the
    /// dialplan's `caller_id` user and name.
    pub from_user: Option<String>,
    pub from_display: Option<String>,
    /// Codecs to offer, in order: `["PCMA", "PCMU"]`, or one of them only
    /// (default PCMU then PCMA).
    #[serde(default)]
    pub codecs: Vec<String>,
    /// `udp`, `tcp` or `tls`; unset: the URI's `sips:`/`;transport=`,
    /// else UDP. See docs/configuration.md.
    #[serde(default)]
    pub transport: Option<crate::sip::transport::Transport>,
    /// TLS settings of a `transport = "tls"` trunk.
    #[serde(default)]
    pub tls: Option<TrunkTls>,
    /// SRTP with SDES keys: `required`, `optional` or `off`; default
    /// `required` on TLS calls, `off` otherwise. Keys are never offered
    /// on anything but TLS (docs/security.md).
    #[serde(default)]
    pub srtp: Option<crate::media::srtp::SrtpMode>,
    /// Calls up at once on this trunk, across all nodes (the carrier's
    /// channels); more wait in its queue, most severe first. Unset: no
    /// limit. See `crate::channels`.
    #[serde(default, deserialize_with = "positive")]
    pub max_channels: Option<u32>,
    /// New calls per second on this trunk, across all nodes. Unset: no
    /// limit.
    #[serde(default, deserialize_with = "positive")]
    pub max_cps: Option<u32>,
}

/// A count that must be at least 1 (the file's line is in the error).
fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=100_000).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "must be a whole number from 1 to 100000, not {v}"
        )));
    }
    Ok(Some(v as u32))
}

/// `[trunks.NAME.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkTls {
    /// The name the proxy's certificate must carry; default: the host of
    /// `proxy`, else the URI's host.
    pub server_name: Option<String>,
    /// PEM CA certificates trusted instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for trunks that ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TrunkConfig {
    /// The transport and TLS settings calls through this trunk use.
    pub fn trunk_transport(&self) -> crate::sip::transport::TrunkTransport {
        let tls = self.tls.clone().unwrap_or_default();
        let proxy_host = self.proxy.as_deref().map(|p| {
            // host:port, [v6]:port or a bare host.
            match p.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => {
                    h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => p.trim_start_matches('[').trim_end_matches(']').to_string(),
            }
        });
        crate::sip::transport::TrunkTransport {
            srtp: self.srtp,
            transport: self.transport,
            tls: Some(crate::sip::transport::TlsSettings {
                server_name: tls.server_name.or(proxy_host).unwrap_or_default(),
                ca_file: tls.ca_file,
                client_cert: tls.cert_file,
                client_key: tls.key_file,
            }),
        }
    }

    /// The caller identity and codec settings, validated.
    pub fn call_prefs(
        &self,
    ) -> Result<crate::sip::trunk_prefs::CallPrefs, crate::sip::trunk_prefs::PrefsError> {
        crate::sip::trunk_prefs::CallPrefs::parse(&crate::sip::trunk_prefs::RawPrefs {
            asserted_identity: self.asserted_identity.as_deref(),
            preferred_identity: self.preferred_identity.as_deref(),
            from_user: self.from_user.as_deref(),
            from_display: self.from_display.as_deref(),
            codecs: &self.codecs,
        })
    }

    /// `proxy` then `proxies`, in the order calls try them.
    pub fn all_proxies(&self) -> impl Iterator<Item = &String> {
        self.proxy.iter().chain(self.proxies.iter())
    }
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

/// How long the HTTP API waits for a client, and how many clients it
/// holds at once. Without these, slow or silent connections stay open
/// until the process runs out of file descriptors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// From a connection's start (or the end of its previous response) to
    /// the end of the request headers.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// From the end of the headers to the end of the request body.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// A connection with no request being handled and no byte moving in
    /// either direction for this long is closed (a client that stopped
    /// reading its response, or one that went silent).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the listen queue.
    /// Default: a quarter of the open-file limit, at most 1024. Always
    /// kept below the limit so the rest of the service can open files
    /// and sockets.
    pub max_connections: Option<usize>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
        }
    }
}

/// Bounds on what one notification may carry, so a request cannot turn
/// into an hour of speech or megabytes of memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Entries in `variables`.
    pub max_variables: usize,
    /// Characters in a variable's name.
    pub max_variable_name: usize,
    /// Characters in a variable's value.
    pub max_variable_value: usize,
    /// Longest rendered phrase (the message, or any phrase with
    /// variables in it).
    #[serde(deserialize_with = "duration")]
    pub max_message: Duration,
    /// Characters in a cancel `reason`.
    pub max_cancel_reason: usize,
    /// Escalations that prepare audio and dial at once on this node; the
    /// rest wait `pending`, most severe first (none is refused).
    pub max_dialling: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_variables: 32,
            max_variable_name: 64,
            max_variable_value: 256,
            max_message: Duration::from_secs(60),
            max_cancel_reason: 500,
            max_dialling: 64,
        }
    }
}

/// Per-source limits on what reaches the SIP port from addresses that are
/// neither a configured trunk nor the peer of a call in progress
/// (`[sip_flood]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipFloodConfig {
    pub enabled: bool,
    /// Counting window.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Datagrams one source IP may send per window before it is banned.
    pub max_requests: u32,
    /// How long a banned source is ignored (again at once if it is still
    /// flooding when the ban ends).
    #[serde(deserialize_with = "duration")]
    pub ban: Duration,
    /// More addresses never limited, besides trunks' proxies and
    /// registrars (e.g. a monitoring probe).
    pub trusted: Vec<std::net::IpAddr>,
}

impl Default for SipFloodConfig {
    fn default() -> Self {
        let p = crate::sip::limiter::FloodPolicy::default();
        SipFloodConfig {
            enabled: p.enabled,
            window: p.window,
            max_requests: p.max_requests,
            ban: p.ban,
            trusted: Vec::new(),
        }
    }
}

impl SipFloodConfig {
    pub fn policy(&self) -> crate::sip::limiter::FloodPolicy {
        crate::sip::limiter::FloodPolicy {
            enabled: self.enabled,
            window: self.window,
            max_requests: self.max_requests,
            ban: self.ban,
            ..Default::default()
        }
    }
}

/// The alert pipeline's service settings (`[pipeline]` in callout.toml;
/// each contract's rules are in its dialplan).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Run the pipeline in this process: `auto` (when a dialplan has a
    /// `[pipeline]` section), `on` or `off`.
    pub run: String,
    /// A remote gateway's base URL (`http://gw:8080`); this process's own
    /// API when absent.
    pub gateway_url: Option<String>,
    /// The environment variable holding the remote gateway's `notify`
    /// token.
    pub gateway_token_env: Option<String>,
    /// An incident whose calls ended and that hears nothing for this long
    /// closes as expired.
    #[serde(deserialize_with = "duration")]
    pub expire: Duration,
    /// A recovered incident still waiting for the gateway's word on its
    /// cancelled escalation or its recovery notice closes after this.
    #[serde(deserialize_with = "duration")]
    pub recovered_wait: Duration,
    /// How far a webhook's timestamp may be from now.
    #[serde(deserialize_with = "duration")]
    pub webhook_tolerance: Duration,
    /// The relay customer notices are mailed through
    /// (`[pipeline.mail_out]`; no notice is sent without it).
    pub mail_out: Option<crate::pipeline::mail_outbox::MailOutConfig>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            run: "auto".into(),
            gateway_url: None,
            gateway_token_env: None,
            expire: Duration::from_secs(7 * 86_400),
            recovered_wait: Duration::from_secs(30 * 60),
            webhook_tolerance: Duration::from_secs(300),
            mail_out: None,
        }
    }
}

pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let v = crate::util::parse_duration(&s).map_err(serde::de::Error::custom)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("the duration must be more than 0"));
    }
    Ok(v)
}

/// The whole configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API address.
    pub listen: String,
    /// SIP socket address.
    pub sip: String,
    /// Address written in Via sent-by and Contact (`IP`, `IP:port`,
    /// `[IPv6]:port`) instead of the bound one; for a host behind NAT or
    /// bound to `0.0.0.0`.
    pub sip_advertise: Option<String>,
    /// Address written in the SDP `o=`/`c=` lines; default: the
    /// `sip_advertise` address, else the bound one.
    pub rtp_advertise: Option<String>,
    pub rtp_ports: String,
    /// `sqlite://data/callout.db` or `postgres://…`.
    pub database_url: String,
    pub dialplans: PathBuf,
    pub prompts: PathBuf,
    pub tts_cache: PathBuf,
    /// The Open JTalk voice (`.htsvoice`); default: the shipped Mei voice,
    /// looked for as `crate::paths` says.
    pub jtalk_voice: Option<PathBuf>,
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
    /// DNS servers (`IP:port`) for trunk names (SRV, A/AAAA); empty: the
    /// system's resolver.
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// HTTP timeouts and the connection limit.
    pub http: HttpConfig,
    /// Bounds on a notification's variables and message.
    pub limits: LimitsConfig,
    /// Rate limiting and bans on the SIP port.
    pub sip_flood: SipFloodConfig,
    /// The only environment variables `POST /v1/dialplans/validate` reads
    /// (a dialplan's `code_env`): names starting with this prefix.
    pub validate_env_prefix: String,
    /// Where store writes wait while the database cannot take them
    /// (default: `journal/` beside an SQLite file, else `data/journal`).
    pub journal_dir: Option<PathBuf>,
    /// The alert pipeline in front of the gateway.
    pub pipeline: PipelineSettings,
    /// Alert intake besides HTTP (`[intake.smtp]`).
    pub intake: IntakeConfig,
    /// External ticket systems (`[tickets.redmine.NAME]`).
    pub tickets: crate::tickets::config::TicketsSettings,
    /// Several nodes on one PostgreSQL (`[cluster]`).
    pub cluster: crate::cluster::ClusterConfig,
    /// The centre's default quality target (`[reports]`).
    pub reports: ReportsSettings,
}

/// `[reports]`: the centre-wide quality target, used for the whole
/// centre's line of the monthly report and for every contract whose
/// dialplan does not set its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsSettings {
    #[serde(deserialize_with = "duration")]
    pub ack_within: Duration,
    #[serde(deserialize_with = "percent")]
    pub ack_target_percent: f64,
    #[serde(deserialize_with = "opt_percent")]
    pub answer_rate_percent: Option<f64>,
}

impl Default for ReportsSettings {
    fn default() -> Self {
        let t = crate::reports::calendar::Target::default();
        ReportsSettings {
            ack_within: Duration::from_millis(t.ack_within_ms as u64),
            ack_target_percent: t.percent,
            answer_rate_percent: t.answer_rate_percent,
        }
    }
}

impl ReportsSettings {
    pub fn target(&self) -> crate::reports::calendar::Target {
        crate::reports::calendar::Target {
            ack_within_ms: i64::try_from(self.ack_within.as_millis()).unwrap_or(i64::MAX),
            percent: self.ack_target_percent,
            answer_rate_percent: self.answer_rate_percent,
        }
    }
}

fn percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=100.0).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "{v} is not a percentage (0 to 100)"
        )));
    }
    Ok(v)
}

fn opt_percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    percent(d).map(Some)
}

/// `[intake]`: the SMTP listener for alert mails (off unless configured).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    pub smtp: Option<crate::pipeline::smtp::SmtpConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            sip: "127.0.0.1:5060".into(),
            sip_advertise: None,
            rtp_advertise: None,
            rtp_ports: "20000-29999".into(),
            database_url: "sqlite://data/callout.db".into(),
            dialplans: "dialplans".into(),
            prompts: "prompts".into(),
            tts_cache: "data/tts-cache".into(),
            jtalk_voice: None,
            tokens: Vec::new(),
            webhooks: WebhookConfig::default(),
            max_body: 64 * 1024,
            voices: BTreeMap::new(),
            trunks: BTreeMap::new(),
            dns_servers: Vec::new(),
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
            sip_flood: SipFloodConfig::default(),
            validate_env_prefix: "CALLOUT_".into(),
            journal_dir: None,
            pipeline: PipelineSettings::default(),
            intake: IntakeConfig::default(),
            tickets: Default::default(),
            cluster: Default::default(),
            reports: Default::default(),
        }
    }
}

/// By hand, so a logged configuration never shows the database password
/// or the webhook signing secrets.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("sip", &self.sip)
            .field("sip_advertise", &self.sip_advertise)
            .field("rtp_advertise", &self.rtp_advertise)
            .field("rtp_ports", &self.rtp_ports)
            .field("database_url", &RedactedUrl(&self.database_url))
            .field("dialplans", &self.dialplans)
            .field("prompts", &self.prompts)
            .field("tts_cache", &self.tts_cache)
            .field("jtalk_voice", &self.jtalk_voice)
            .field("tokens", &self.tokens.len())
            .field("webhook_url", &self.webhooks.url)
            .field("webhook_contracts", &self.webhooks.contracts)
            .field("max_body", &self.max_body)
            .field("voices", &self.voices.keys().collect::<Vec<_>>())
            .field("trunks", &self.trunks)
            .field("dns_servers", &self.dns_servers)
            .field("http", &self.http)
            .field("limits", &self.limits)
            .field("sip_flood", &self.sip_flood)
            .field("validate_env_prefix", &self.validate_env_prefix)
            .field("journal_dir", &self.journal_dir)
            .field("pipeline", &self.pipeline)
            .field("intake", &self.intake)
            .field("tickets", &self.tickets)
            .field("reports", &self.reports)
            .finish_non_exhaustive()
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
    /// The global `sip_advertise` / `rtp_advertise`, checked.
    pub fn advertise(
        &self,
    ) -> Result<crate::sip::advertise::Advertise, crate::sip::advertise::AdvertiseError> {
        crate::sip::advertise::Advertise::parse(
            "",
            self.sip_advertise.as_deref(),
            self.rtp_advertise.as_deref(),
        )
    }

    /// The store writer's journal folder (see `journal_dir`).
    pub fn journal_dir(&self) -> PathBuf {
        if let Some(d) = &self.journal_dir {
            return d.clone();
        }
        let url = &self.database_url;
        url.strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .filter(|p| !p.contains(":memory:") && !p.is_empty())
            .and_then(|p| Path::new(p).parent().map(|d| d.join("journal")))
            .unwrap_or_else(|| PathBuf::from("data/journal"))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Parse {
                path: path.display().to_string(),
                message: format!("line {line}: {}", e.message()),
            }
        })?;
        config
            .check_srtp(&text)
            .map_err(|message| ConfigError::Parse {
                path: path.display().to_string(),
                message,
            })?;
        Ok(config)
    }

    /// SDES keys travel in the SDP: a trunk that would send them over UDP
    /// or TCP is refused at load, with the line of its `srtp` setting.
    fn check_srtp(&self, text: &str) -> Result<(), String> {
        use crate::media::srtp::SrtpMode;
        use crate::sip::transport::Transport;
        for (name, t) in &self.trunks {
            let clear = matches!(t.transport, Some(Transport::Udp | Transport::Tcp));
            if clear && matches!(t.srtp, Some(SrtpMode::Required | SrtpMode::Optional)) {
                let line = srtp_line(text, name).unwrap_or(0);
                return Err(format!(
                    "line {line}: trunks.{name}.srtp: SRTP keys (SDES) are sent in the SDP and \
                     must not travel in clear; use transport = \"tls\" or srtp = \"off\""
                ));
            }
        }
        Ok(())
    }
}

/// The line of `srtp =` in `[trunks.NAME]`, for error messages.
fn srtp_line(text: &str, name: &str) -> Option<usize> {
    let header = format!("[trunks.{name}]");
    let quoted = format!("[trunks.\"{name}\"]");
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l == header || l == quoted;
        } else if inside && l.starts_with("srtp") {
            return Some(i + 1);
        }
    }
    None
}

/// A database URL fit for printing: the password (in the authority or as
/// a `password=` parameter) is replaced by `***`. Everything that shows a
/// URL (start-up banner, error context, logs) goes through this.
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(pub &'a str);

impl std::fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.0;
        let (head, query) = match url.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (url, None),
        };
        // The authority runs from "://" to the next '/'; its userinfo ends
        // at the last '@' (a password may itself contain '@').
        match head.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find('/').unwrap_or(rest.len());
                let (authority, path) = rest.split_at(end);
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split(':').next().unwrap_or("");
                        if userinfo.contains(':') {
                            write!(f, "{scheme}://{user}:***@{host}{path}")?;
                        } else {
                            write!(f, "{scheme}://{user}@{host}{path}")?;
                        }
                    }
                    None => write!(f, "{head}")?,
                }
            }
            None => write!(f, "{head}")?,
        }
        if let Some(q) = query {
            let params: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtp_keys_in_clear_are_refused_at_load_with_the_line() {
        let dir = std::env::temp_dir().join(format!("callout-srtp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("callout.toml");
        std::fs::write(
            &p,
            "[trunks.a]\ntransport = \"tls\"\nsrtp = \"required\"\n\n[trunks.b]\ntransport = \"udp\"\n\nsrtp = \"optional\"\n",
        )
        .unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 8") && e.contains("trunks.b.srtp"), "{e}");
        std::fs::write(&p, "[trunks.b]\ntransport = \"udp\"\nsrtp = \"off\"\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.trunks["b"].trunk_transport().srtp,
            Some(crate::media::srtp::SrtpMode::Off)
        );
        assert!(toml::from_str::<Config>("[trunks.x]\nsrtp = \"maybe\"\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn trunk_transport_and_tls_settings() {
        let c: Config = toml::from_str(
            "[trunks.c]\nproxy = \"sip.example.net:5061\"\ntransport = \"tls\"\n\
             [trunks.c.tls]\nca_file = \"/etc/ca.pem\"\n\
             [trunks.u]\nproxy = \"[2001:db8::1]:5060\"\n",
        )
        .unwrap();
        let t = c.trunks["c"].trunk_transport();
        assert_eq!(t.transport, Some(crate::sip::transport::Transport::Tls));
        let tls = t.tls.unwrap();
        assert_eq!(tls.server_name, "sip.example.net");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let u = c.trunks["u"].trunk_transport();
        assert_eq!(u.transport, None);
        assert_eq!(u.tls.unwrap().server_name, "2001:db8::1");
        assert!(toml::from_str::<Config>("[trunks.x]\ntransport = \"sctp\"\n").is_err());
        assert!(toml::from_str::<Config>("[trunks.x.tls]\nverify = false\n").is_err());
    }

    #[test]
    fn trunk_channel_limits_are_checked_with_their_line() {
        let c: Config =
            toml::from_str("[trunks.c]\nproxy = \"p:5060\"\nmax_channels = 4\nmax_cps = 2\n")
                .unwrap();
        assert_eq!(
            (c.trunks["c"].max_channels, c.trunks["c"].max_cps),
            (Some(4), Some(2))
        );
        assert_eq!(Config::default().trunks.len(), 0);
        let dir = std::env::temp_dir().join(format!("callout-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (bad, line) in [
            (
                "[trunks.c]\nproxy = \"p:5060\"\n\nmax_channels = 0\n",
                "line 4",
            ),
            ("[trunks.c]\nmax_cps = -3\n", "line 2"),
            ("[trunks.c]\nmax_channels = \"four\"\n", "line 2"),
        ] {
            let f = dir.join("callout.toml");
            std::fs::write(&f, bad).unwrap();
            let e = Config::load(&f).unwrap_err().to_string();
            assert!(e.contains(line) && e.contains("callout.toml"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sip_flood_section_parses_into_a_policy() {
        let c: Config = toml::from_str(
            "[sip_flood]\nwindow = \"1s\"\nmax_requests = 5\nban = \"10m\"\ntrusted = [\"192.0.2.1\"]\n",
        )
        .unwrap();
        let p = c.sip_flood.policy();
        assert_eq!(
            (p.window, p.max_requests, p.ban),
            (Duration::from_secs(1), 5, Duration::from_secs(600))
        );
        assert!(p.enabled);
        assert_eq!(
            c.sip_flood.trusted,
            vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            Config::default().sip_flood.policy(),
            crate::sip::limiter::FloodPolicy::default()
        );
        assert!(toml::from_str::<Config>("[sip_flood]\nmax_request = 5\n").is_err());
        assert!(toml::from_str::<Config>("[sip_flood]\nban = \"0s\"\n").is_err());
    }

    #[test]
    fn passwords_never_print() {
        let r = |u: &str| RedactedUrl(u).to_string();
        assert_eq!(
            r("postgres://callout:s3cr@t@db.example:5432/callout"),
            "postgres://callout:***@db.example:5432/callout"
        );
        assert_eq!(
            r("postgres://db.example/callout?user=c&password=s3cret&sslmode=require"),
            "postgres://db.example/callout?user=c&password=***&sslmode=require"
        );
        assert_eq!(r("postgres://callout@db/x"), "postgres://callout@db/x");
        assert_eq!(r("sqlite://data/callout.db"), "sqlite://data/callout.db");
        assert_eq!(r("sqlite:data/x.db?mode=rwc"), "sqlite:data/x.db?mode=rwc");
        assert!(!format!("{:?}", RedactedUrl("postgres://u:pw@h/d")).contains("pw"));
        let c = Config {
            database_url: "postgres://u:hunter22@h/d".into(),
            webhooks: WebhookConfig {
                secrets: vec!["whsec_c2VjcmV0c2VjcmV0".into()],
                ..WebhookConfig::default()
            },
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter22") && !shown.contains("whsec_"),
            "{shown}"
        );
    }

    #[test]
    fn limits_and_timeouts_from_the_file() {
        let c: Config = toml::from_str(
            "[http]\nheader_timeout = \"1s\"\nmax_connections = 50\n[limits]\nmax_variables = 4\nmax_message = \"20s\"\n",
        )
        .unwrap();
        assert_eq!(c.http.header_timeout, Duration::from_secs(1));
        assert_eq!(c.http.body_timeout, Duration::from_secs(30));
        assert_eq!(c.http.max_connections, Some(50));
        assert_eq!(c.limits.max_variables, 4);
        assert_eq!(c.limits.max_message, Duration::from_secs(20));
        assert!(toml::from_str::<Config>("[http]\nidle_timeout = \"soon\"\n").is_err());
        assert!(toml::from_str::<Config>("[http]\nidle_timeout = \"0s\"\n").is_err());
    }
}

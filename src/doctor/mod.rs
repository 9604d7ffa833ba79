//! `callout doctor`: everything a real alert depends on, checked before
//! the first one. Each check prints one line, `ok`, `warn` or `fail`, with
//! what was found and what to do; the exit status is 1 when any check
//! failed. Nothing is changed: the database is read, not migrated; speech
//! renders into a scratch cache; a test registration is removed again.

pub mod call;
pub mod sip;
pub mod system;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, RedactedUrl};
use crate::ivr::dialplan::{Dialplan, Language};
use crate::schema::SchemaStatus;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: Level,
    /// What was checked, e.g. `trunk carrier: register`.
    pub check: String,
    /// What was found and, when not ok, what to do.
    pub detail: String,
}

impl Verdict {
    pub fn new(level: Level, check: impl Into<String>, detail: impl Into<String>) -> Verdict {
        Verdict {
            level,
            check: check.into(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        write!(f, "{l:<4}  {}: {}", self.check, self.detail)
    }
}

/// What `callout doctor` is asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    /// Place a test call to this URI.
    pub call: Option<String>,
}

/// How long one network probe may take.
const PROBE: Duration = Duration::from_secs(5);

/// Run every check, handing each verdict to `report` as it is made.
pub async fn run(o: &Options, report: &mut dyn FnMut(&Verdict)) -> Vec<Verdict> {
    let mut all = Vec::new();
    let mut say = |v: Verdict, all: &mut Vec<Verdict>| {
        report(&v);
        all.push(v);
    };
    let mut config = match &o.config {
        Some(p) => match Config::load(p) {
            Ok(c) => {
                say(
                    Verdict::new(Level::Ok, "configuration", format!("{} loads", p.display())),
                    &mut all,
                );
                crate::driver::resolve::configure(&c.dns_servers);
                c
            }
            Err(e) => {
                say(
                    Verdict::new(
                        Level::Fail,
                        "configuration",
                        format!("{e}: fix the file; nothing else can be checked"),
                    ),
                    &mut all,
                );
                return all;
            }
        },
        None => {
            say(
                Verdict::new(
                    Level::Warn,
                    "configuration",
                    "none given (--config or CALLOUT_CONFIG): checking the built-in defaults",
                ),
                &mut all,
            );
            Config::default()
        }
    };
    // Shipped files, as the service finds them.
    let mut folders_ok = true;
    for (check, found) in [
        ("prompts", crate::paths::prompts(&config.prompts)),
        (
            "dialplans folder",
            crate::paths::dialplans(&config.dialplans),
        ),
    ] {
        match found {
            Ok(p) => {
                let p = crate::paths::absolute(p);
                say(
                    Verdict::new(Level::Ok, check, p.display().to_string()),
                    &mut all,
                );
                if check == "prompts" {
                    config.prompts = p;
                } else {
                    config.dialplans = p;
                }
            }
            Err(e) => {
                folders_ok = false;
                say(Verdict::new(Level::Fail, check, e.to_string()), &mut all);
            }
        }
    }
    let plans = if folders_ok {
        match crate::ivr::dialplan::load_dir(&config.dialplans, &config.prompts) {
            Ok(plans) if plans.is_empty() => {
                say(
                    Verdict::new(
                        Level::Warn,
                        "dialplans",
                        format!(
                            "none in {}: nobody would be called; copy and edit a sample (/usr/share/doc/callout/examples/dialplans in the package, dialplans/ in the source)",
                            config.dialplans.display()
                        ),
                    ),
                    &mut all,
                );
                plans
            }
            Ok(plans) => {
                say(
                    Verdict::new(
                        Level::Ok,
                        "dialplans",
                        format!(
                            "{} contract(s) load: {}",
                            plans.len(),
                            plans
                                .iter()
                                .map(|p| p.contract.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    &mut all,
                );
                plans
            }
            Err(errors) => {
                say(
                    Verdict::new(
                        Level::Fail,
                        "dialplans",
                        format!(
                            "{} problem(s), first: {} (see `callout dialplan check {}`)",
                            errors.len(),
                            errors[0],
                            config.dialplans.display()
                        ),
                    ),
                    &mut all,
                );
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if config.tokens.is_empty() {
        say(
            Verdict::new(
                Level::Warn,
                "api tokens",
                "none configured: each start prints a random admin token; add [[tokens]] (configuration.md)",
            ),
            &mut all,
        );
    }
    say(database(&config.database_url).await, &mut all);
    for v in trunks(&config, &plans).await {
        say(v, &mut all);
    }
    for v in webhooks(&config).await {
        say(v, &mut all);
    }
    let remote = remote_peers(&config, &plans).await;
    say(system::sip_address(&config.sip, &remote), &mut all);
    let ip = config
        .sip
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    say(system::rtp_ports(ip, &config.rtp_ports), &mut all);
    for v in voices(&config, &plans).await {
        say(v, &mut all);
    }
    say(system::clock(), &mut all);
    say(system::nofile(), &mut all);
    if let Some(uri) = &o.call {
        for v in call::test_call(&config, uri).await {
            say(v, &mut all);
        }
    }
    all
}

/// Reachable, migrated, and not from a newer release.
async fn database(url: &str) -> Verdict {
    let shown = RedactedUrl(url);
    match tokio::time::timeout(PROBE * 2, crate::schema::status(url)).await {
        Err(_) => Verdict::new(
            Level::Fail,
            "database",
            format!("{shown} did not answer within {:?}: is the server running and reachable? check database_url", PROBE * 2),
        ),
        Ok(Err(e)) => Verdict::new(
            Level::Fail,
            "database",
            format!("{shown} is unreachable ({e}): is the server running, and database_url right?"),
        ),
        Ok(Ok(SchemaStatus::Current { version })) => Verdict::new(
            Level::Ok,
            "database",
            format!("{shown} reachable, schema at version {version} (this release's)"),
        ),
        Ok(Ok(SchemaStatus::Behind { version: None, latest })) => Verdict::new(
            Level::Ok,
            "database",
            format!("{shown} reachable and empty: `callout serve` creates the schema (version {latest}) at start"),
        ),
        Ok(Ok(SchemaStatus::Behind { version: Some(v), latest })) => Verdict::new(
            Level::Warn,
            "database",
            format!("{shown} reachable, schema at version {v}: `callout serve` migrates it to {latest} at start (back it up first)"),
        ),
        Ok(Ok(SchemaStatus::Newer { version, latest })) => Verdict::new(
            Level::Fail,
            "database",
            format!("{shown}: {}", crate::schema::newer_message(version, latest)),
        ),
    }
}

async fn lookup(hostport: &str) -> Option<SocketAddr> {
    let with_port = if hostport.parse::<SocketAddr>().is_ok()
        || hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:5060")
    };
    tokio::time::timeout(PROBE, tokio::net::lookup_host(with_port))
        .await
        .ok()?
        .ok()?
        .next()
}

/// Each configured trunk: resolves, answers OPTIONS, registers.
async fn trunks(config: &Config, plans: &[Dialplan]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for plan in plans {
        if plan.trunk != "default" && !config.trunks.contains_key(&plan.trunk) {
            out.push(Verdict::new(
                Level::Fail,
                format!("trunk {}", plan.trunk),
                format!(
                    "used by contract {} but not configured: add [trunks.{}]",
                    plan.contract, plan.trunk
                ),
            ));
        }
    }
    let local_ip = config
        .sip
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    for (name, t) in &config.trunks {
        let check = format!("trunk {name}");
        let trunk = match crate::service::trunk::resolve(name, &config.trunks).await {
            Ok(tr) => tr,
            Err(e) => {
                out.push(Verdict::new(
                    Level::Fail,
                    check,
                    format!("{e}: calls through it would fail"),
                ));
                continue;
            }
        };
        if t.proxy.is_none() && t.registrar.is_none() {
            out.push(Verdict::new(
                Level::Ok,
                check.clone(),
                "no proxy or registrar: calls go to each contact's host",
            ));
        }
        if let (Some(shown), Some(proxy)) = (&t.proxy, trunk.proxy) {
            out.push(match sip::options(local_ip, proxy, PROBE).await {
                Ok((r, took)) => Verdict::new(
                    Level::Ok,
                    format!("{check}: options"),
                    format!("proxy {shown} ({proxy}) answered {} {} in {} ms", r.code, r.reason, took.as_millis()),
                ),
                Err(e) => Verdict::new(
                    Level::Fail,
                    format!("{check}: options"),
                    format!("proxy {shown} ({proxy}): {e}; check the address, the firewall, and that the carrier expects this host"),
                ),
            });
        }
        if let Some(registrar) = &t.registrar {
            let check = format!("{check}: register");
            let Some(addr) = lookup(registrar).await else {
                out.push(Verdict::new(
                    Level::Fail,
                    check,
                    format!("cannot resolve registrar {registrar}: check the name and DNS"),
                ));
                continue;
            };
            let Some(aor) = t.aor.clone() else {
                out.push(Verdict::new(
                    Level::Fail,
                    check,
                    "a registrar needs aor = \"sip:user@domain\"",
                ));
                continue;
            };
            let r = sip::register(
                local_ip,
                addr,
                format!("sip:{registrar}"),
                aor.clone(),
                trunk.registrar_credentials.clone(),
                PROBE,
            )
            .await;
            let creds = match (&t.username_env, &t.password_env) {
                (Some(u), Some(p)) => format!("the credentials in {u} and {p}"),
                _ => "the credentials (username_env, password_env: none set)".into(),
            };
            out.push(match r {
                Ok(sip::RegisterOutcome::Registered { expires }) => Verdict::new(
                    Level::Ok,
                    check,
                    format!("{aor} registered at {registrar} ({addr}) for {expires} s, then removed"),
                ),
                Ok(sip::RegisterOutcome::Refused { code: code @ (401 | 403 | 407) }) => Verdict::new(
                    Level::Fail,
                    check,
                    format!("{registrar} refused {aor} ({code} {}): wrong credentials? check {creds}", crate::sip::message::reason_phrase(code)),
                ),
                Ok(sip::RegisterOutcome::Refused { code }) => Verdict::new(
                    Level::Fail,
                    check,
                    format!("{registrar} refused {aor} ({code} {}): check aor and the carrier's settings", crate::sip::message::reason_phrase(code)),
                ),
                Err(e) => Verdict::new(
                    Level::Fail,
                    check,
                    format!("registrar {registrar} ({addr}): {e}; check the address and the firewall"),
                ),
            });
        }
    }
    out
}

/// Each webhook target (the ticket system's intake) accepts a connection.
/// Nothing is posted: a test event would open a ticket.
async fn webhooks(config: &Config) -> Vec<Verdict> {
    let mut urls: Vec<&String> = config.webhooks.url.iter().collect();
    urls.extend(config.webhooks.contracts.values());
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for u in urls {
        match reqwest::Url::parse(u) {
            Ok(url) => {
                let hostport = format!(
                    "{}:{}",
                    url.host_str().unwrap_or(""),
                    url.port_or_known_default().unwrap_or(443)
                );
                if !targets.iter().any(|(h, _)| *h == hostport) {
                    targets.push((hostport, format!("{}://{}", url.scheme(), url.authority())));
                }
            }
            Err(e) => out.push(Verdict::new(
                Level::Fail,
                "webhooks",
                format!("{u:?} is not a URL ({e}): fix [webhooks]"),
            )),
        }
    }
    for (hostport, shown) in targets {
        let check = format!("webhooks {shown}");
        let connect =
            tokio::time::timeout(PROBE, tokio::net::TcpStream::connect(hostport.as_str())).await;
        out.push(match connect {
            Ok(Ok(_)) => Verdict::new(Level::Ok, check, "accepts connections (nothing posted)"),
            Ok(Err(e)) => Verdict::new(
                Level::Fail,
                check,
                format!("{e}: ticket events would wait and retry; check the URL and that the ticket system is up"),
            ),
            Err(_) => Verdict::new(
                Level::Fail,
                check,
                format!("no connection within {PROBE:?}: check the URL and the firewall"),
            ),
        });
    }
    out
}

/// The peers calls go to that are not on this host: trunks' proxies and
/// registrars, and the contacts dialled directly.
async fn remote_peers(config: &Config, plans: &[Dialplan]) -> Vec<String> {
    let mut hosts: Vec<String> = config
        .trunks
        .values()
        .flat_map(|t| [t.proxy.clone(), t.registrar.clone()])
        .flatten()
        .collect();
    for p in plans.iter().filter(|p| {
        p.trunk == "default"
            || config
                .trunks
                .get(&p.trunk)
                .is_some_and(|t| t.proxy.is_none())
    }) {
        for c in &p.contacts {
            hosts.push(uri_hostport(&c.uri).to_string());
        }
    }
    hosts.sort();
    hosts.dedup();
    let mut remote = Vec::new();
    for h in hosts {
        match lookup(&h).await {
            Some(a) if a.ip().is_loopback() => {}
            _ => remote.push(h),
        }
    }
    remote
}

/// `host[:port]` of a SIP URI (`sip:user@host:port;params`).
fn uri_hostport(uri: &str) -> &str {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([';', '?', '>']).next().unwrap_or(rest)
}

/// Each voice the contracts use renders a phrase.
async fn voices(config: &Config, plans: &[Dialplan]) -> Vec<Verdict> {
    let mut by_voice: BTreeMap<(String, Option<String>), Vec<String>> = BTreeMap::new();
    for p in plans {
        let lang = match p.language {
            Language::Ja => "ja",
            Language::En => "en",
        };
        by_voice
            .entry((lang.to_string(), p.voice.clone()))
            .or_default()
            .push(p.contract.clone());
    }
    let mut out = Vec::new();
    let needs_jtalk = plans.iter().any(crate::paths::uses_jtalk);
    let jtalk = crate::paths::jtalk_voice(config.jtalk_voice.as_deref());
    out.push(match &jtalk {
        Ok(p) => Verdict::new(
            Level::Ok,
            "voice file",
            crate::paths::absolute(p.clone()).display().to_string(),
        ),
        Err(e) if needs_jtalk => Verdict::new(Level::Fail, "voice file", e.to_string()),
        Err(e) => Verdict::new(
            Level::Warn,
            "voice file",
            format!("{e} (no contract speaks Japanese yet)"),
        ),
    });
    if by_voice.is_empty() {
        return out;
    }
    let scratch = std::env::temp_dir().join(format!("callout-doctor-{}", std::process::id()));
    let cfg = crate::tts::TtsConfig {
        cache_dir: scratch.clone(),
        voices: config.voices.clone(),
        jtalk_voice: jtalk.unwrap_or_else(|e| e.tried.into_iter().next().unwrap_or_default()),
        ..Default::default()
    };
    let results = tokio::task::spawn_blocking(move || {
        let tts = match crate::tts::Tts::new(&cfg) {
            Ok(t) => t,
            Err(e) => return vec![Verdict::new(Level::Fail, "voices", format!("cannot open a scratch speech cache: {e}"))],
        };
        let mut out = Vec::new();
        for ((lang, voice), contracts) in by_voice {
            let (language, phrase) = if lang == "ja" {
                (Language::Ja, "これは callout の試験です。")
            } else {
                (Language::En, "This is a callout test.")
            };
            let name = voice.clone().unwrap_or_else(|| lang.clone());
            let check = format!("voice {name}");
            let started = std::time::Instant::now();
            out.push(match tts.render_voice(language, voice.as_deref(), phrase) {
                Ok(p) => Verdict::new(
                    Level::Ok,
                    check,
                    format!("{} ms of speech in {} ms (contracts {})", p.duration_ms(), started.elapsed().as_millis(), contracts.join(", ")),
                ),
                Err(e) => Verdict::new(
                    Level::Fail,
                    check,
                    format!("{e}: calls of {} would play the recorded fallback; see `callout say --voice {lang}`", contracts.join(", ")),
                ),
            });
        }
        out
    })
    .await
    .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    out.extend(results);
    out
}

/// `callout doctor`: print the report; exit 1 when anything failed.
pub async fn main(o: Options) -> std::process::ExitCode {
    let all = run(&o, &mut |v| println!("{v}")).await;
    let count = |l| all.iter().filter(|v| v.level == l).count();
    let (fails, warns) = (count(Level::Fail), count(Level::Warn));
    println!(
        "{} ok, {warns} warning(s), {fails} failure(s)",
        count(Level::Ok)
    );
    if fails > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_a_contact_uri() {
        assert_eq!(uri_hostport("sip:bob@127.0.0.1:5070"), "127.0.0.1:5070");
        assert_eq!(
            uri_hostport("sip:bob@pbx.example;transport=udp"),
            "pbx.example"
        );
        assert_eq!(uri_hostport("sip:pbx.example"), "pbx.example");
    }
}

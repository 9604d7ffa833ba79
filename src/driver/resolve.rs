//! DNS for trunk proxies (RFC 3263): SRV `_sip._udp` for a bare name,
//! A/AAAA for `host:port`, through hickory-resolver, which caches each
//! answer for its TTL. Every notification resolves its trunk afresh, and
//! keepalive re-resolves when the shortest TTL runs out, so a changed
//! record is followed without a restart.
//!
//! With `dns_servers` configured every name goes to those servers;
//! without, `host:port` keeps the system's resolver (`/etc/hosts`
//! included) and bare names use hickory with the system's configuration.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::TokioAsyncResolver;

use crate::sip::resolve::{order_srv, Lookup, Srv};

/// Re-resolve at least this often, whatever the TTL (and names the system
/// resolver answered, which give none).
const MAX_TTL: Duration = Duration::from_secs(300);
/// ... and not more often than this, whatever a zero TTL says.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Where one proxy string leads, in the order to try, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addrs: Vec<SocketAddr>,
    pub valid_until: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Target(#[from] crate::sip::resolve::BadTarget),
    #[error("{0}: no address")]
    NoAddress(String),
    #[error("{name}: {error}")]
    Dns { name: String, error: String },
}

struct Dns {
    resolver: TokioAsyncResolver,
    custom: bool,
}

static DNS: OnceLock<Dns> = OnceLock::new();

/// Use these DNS servers (`IP:port`) for every trunk name. Call once, at
/// start; later calls are ignored.
pub fn configure(servers: &[SocketAddr]) {
    if servers.is_empty() {
        return;
    }
    let mut cfg = ResolverConfig::new();
    for s in servers {
        cfg.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
    }
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    let _ = DNS.set(Dns {
        resolver: TokioAsyncResolver::tokio(cfg, opts),
        custom: true,
    });
}

fn dns() -> Result<&'static Dns, ResolveError> {
    if let Some(d) = DNS.get() {
        return Ok(d);
    }
    let resolver = TokioAsyncResolver::tokio_from_system_conf().map_err(|e| ResolveError::Dns {
        name: "system configuration".into(),
        error: e.to_string(),
    })?;
    Ok(DNS.get_or_init(|| Dns {
        resolver,
        custom: false,
    }))
}

fn clamp(until: Instant, now: Instant) -> Instant {
    until.clamp(now + MIN_TTL, now + MAX_TTL)
}

async fn host(d: &Dns, name: &str, port: u16) -> Result<Resolved, ResolveError> {
    let now = Instant::now();
    if !d.custom {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| ResolveError::Dns {
                name: name.to_string(),
                error: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::NoAddress(name.to_string()));
        }
        return Ok(Resolved {
            addrs,
            valid_until: now + MAX_TTL,
        });
    }
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let ips = d
        .resolver
        .lookup_ip(fqdn.as_str())
        .await
        .map_err(|e| ResolveError::Dns {
            name: name.to_string(),
            error: e.to_string(),
        })?;
    let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addrs.is_empty() {
        return Err(ResolveError::NoAddress(name.to_string()));
    }
    Ok(Resolved {
        addrs,
        valid_until: clamp(ips.valid_until(), now),
    })
}

/// Resolve one configured proxy string.
pub async fn resolve(target: &str) -> Result<Resolved, ResolveError> {
    let now = Instant::now();
    match Lookup::parse(target)? {
        Lookup::Literal(a) => Ok(Resolved {
            addrs: vec![a],
            valid_until: now + MAX_TTL,
        }),
        Lookup::Host { host: h, port } => {
            let d = dns()?;
            host(d, &h, port).await
        }
        Lookup::Srv { name } => {
            let d = dns()?;
            let owner = Lookup::srv_name(&name);
            let srv = match d.resolver.srv_lookup(owner.as_str()).await {
                Ok(s) => s,
                // No SRV: the name itself on 5060 (RFC 3263 4.2).
                Err(e) => {
                    tracing::debug!(%name, error = %e, "no SRV record; trying A/AAAA");
                    let mut r = host(
                        &Dns {
                            resolver: d.resolver.clone(),
                            custom: true,
                        },
                        &name,
                        5060,
                    )
                    .await?;
                    r.valid_until = clamp(r.valid_until, now);
                    return Ok(r);
                }
            };
            let mut valid_until = clamp(srv.as_lookup().valid_until(), now);
            let records: Vec<Srv> = srv
                .iter()
                .map(|r| Srv {
                    priority: r.priority(),
                    weight: r.weight(),
                    port: r.port(),
                    target: r.target().to_utf8(),
                })
                .collect();
            let mut addrs = Vec::new();
            for r in order_srv(&records, |n| rand::random::<u32>() % (n + 1)) {
                // Additional-section addresses are cached by hickory; a
                // target that does not resolve is skipped, not fatal.
                match host(
                    &Dns {
                        resolver: d.resolver.clone(),
                        custom: true,
                    },
                    &r.target,
                    r.port,
                )
                .await
                {
                    Ok(h) => {
                        valid_until = valid_until.min(h.valid_until);
                        for a in h.addrs {
                            if !addrs.contains(&a) {
                                addrs.push(a);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target = %r.target, error = %e, "SRV target does not resolve")
                    }
                }
            }
            if addrs.is_empty() {
                return Err(ResolveError::NoAddress(name));
            }
            Ok(Resolved { addrs, valid_until })
        }
    }
}

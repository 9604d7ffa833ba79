//! DNS for trunk proxies (RFC 3263): NAPTR then SRV for a bare name (the
//! NAPTR records choose the transport when the trunk names none; without
//! them, SRV for the trunk's transport, `_sip._udp` by default), A/AAAA
//! for `host:port`, through hickory-resolver, which caches each
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

use crate::sip::resolve::{order_srv, pick_naptr, Lookup, Naptr, Srv};
use crate::sip::transport::Transport;

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
    /// The transport NAPTR (or the SRV name used) stands for; `None` for
    /// an address or `host:port`.
    pub transport: Option<Transport>,
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
            transport: None,
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
        transport: None,
    })
}

/// Resolve one configured proxy string for a trunk using UDP or naming
/// no transport.
pub async fn resolve(target: &str) -> Result<Resolved, ResolveError> {
    resolve_for(target, None).await
}

/// Resolve one configured proxy string; `transport` is the trunk's
/// (`None`: NAPTR may choose any, else UDP).
pub async fn resolve_for(
    target: &str,
    transport: Option<Transport>,
) -> Result<Resolved, ResolveError> {
    let now = Instant::now();
    match Lookup::parse(target)? {
        Lookup::Literal(a) => Ok(Resolved {
            addrs: vec![a],
            valid_until: now + MAX_TTL,
            transport: None,
        }),
        Lookup::Host { host: h, port } => {
            let d = dns()?;
            host(d, &h, port).await
        }
        Lookup::Srv { name } => {
            let d = dns()?;
            let d = Dns {
                resolver: d.resolver.clone(),
                custom: true,
            };
            // RFC 3263 4.1: NAPTR first; each usable record names an SRV
            // owner, tried in order until one leads to an address.
            let allowed: Vec<Transport> = match transport {
                Some(t) => vec![t],
                None => vec![Transport::Udp, Transport::Tcp, Transport::Tls],
            };
            let (naptr, naptr_until) = naptr(&d, &name).await;
            for (t, owner) in pick_naptr(&naptr, &allowed) {
                match srv(&d, &owner).await {
                    Ok(Some(mut r)) => {
                        r.valid_until = r.valid_until.min(clamp(naptr_until, now));
                        r.transport = Some(t);
                        return Ok(r);
                    }
                    Ok(None) => {
                        tracing::debug!(%owner, "NAPTR target has no SRV record")
                    }
                    Err(e) => tracing::warn!(%owner, error = %e, "NAPTR target does not resolve"),
                }
            }
            let t = transport.unwrap_or(Transport::Udp);
            let owner = Lookup::srv_name_for(t, &name);
            match srv(&d, &owner).await? {
                // Only NAPTR chooses a transport; this one is the trunk's.
                Some(mut r) => {
                    r.transport = transport;
                    Ok(r)
                }
                // No SRV: the name itself on 5060 (RFC 3263 4.2).
                None => {
                    let mut r = host(&d, &name, 5060).await?;
                    r.valid_until = clamp(r.valid_until, now);
                    Ok(r)
                }
            }
        }
    }
}

/// The NAPTR records of `name` (none when the lookup fails) and until
/// when they hold.
async fn naptr(d: &Dns, name: &str) -> (Vec<Naptr>, Instant) {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    match d
        .resolver
        .lookup(
            fqdn.as_str(),
            hickory_resolver::proto::rr::RecordType::NAPTR,
        )
        .await
    {
        Ok(l) => {
            let records = l
                .iter()
                .filter_map(|r| match r {
                    hickory_resolver::proto::rr::RData::NAPTR(n) => Some(Naptr {
                        order: n.order(),
                        preference: n.preference(),
                        flags: String::from_utf8_lossy(n.flags()).into_owned(),
                        services: String::from_utf8_lossy(n.services()).into_owned(),
                        replacement: n.replacement().to_utf8(),
                    }),
                    _ => None,
                })
                .collect();
            (records, l.valid_until())
        }
        Err(e) => {
            tracing::debug!(%name, error = %e, "no NAPTR record");
            (Vec::new(), Instant::now() + MAX_TTL)
        }
    }
}

/// The addresses an SRV owner name leads to, in RFC 2782 order; `None`
/// when it has no SRV record.
async fn srv(d: &Dns, owner: &str) -> Result<Option<Resolved>, ResolveError> {
    let now = Instant::now();
    let srv = match d.resolver.srv_lookup(owner).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%owner, error = %e, "no SRV record");
            return Ok(None);
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
        // Additional-section addresses are cached by hickory; a target
        // that does not resolve is skipped, not fatal.
        match host(d, &r.target, r.port).await {
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
        return Err(ResolveError::NoAddress(owner.to_string()));
    }
    Ok(Some(Resolved {
        addrs,
        valid_until,
        transport: None,
    }))
}

//! Locating a trunk's proxies (RFC 3263 4), sans-IO: what to look up for a
//! configured `host[:port]`, which NAPTR records lead where (RFC 3263
//! 4.1), and the order SRV records are tried in (RFC 2782: lowest
//! priority first, weighted random within a priority). The lookups
//! themselves are `driver::resolve`'s.

use std::net::{IpAddr, SocketAddr};

use super::transport::Transport;

/// What a configured proxy string asks to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// An IP address (with port or 5060): nothing to resolve.
    Literal(SocketAddr),
    /// A name with an explicit port: A/AAAA only (RFC 3263 4.2).
    Host { host: String, port: u16 },
    /// A bare name: SRV `_sip._udp.<name>`, else A/AAAA on 5060.
    Srv { name: String },
}

/// Why a proxy string cannot be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not host, host:port, IP or IP:port")]
pub struct BadTarget(pub String);

impl Lookup {
    pub fn parse(s: &str) -> Result<Lookup, BadTarget> {
        let bad = || BadTarget(s.to_string());
        let t = s.trim();
        if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(bad());
        }
        if let Ok(a) = t.parse::<SocketAddr>() {
            return Ok(Lookup::Literal(a));
        }
        let bare = t.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Lookup::Literal(SocketAddr::new(ip, 5060)));
        }
        match t.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse::<u16>().map_err(|_| bad())?;
                if host.is_empty() || host.contains(':') {
                    return Err(bad());
                }
                Ok(Lookup::Host {
                    host: host.to_string(),
                    port,
                })
            }
            None => Ok(Lookup::Srv {
                name: t.trim_end_matches('.').to_string(),
            }),
        }
    }

    /// The SRV owner name for UDP (RFC 3263 4.2), with the root dot so no
    /// search domain is appended.
    pub fn srv_name(name: &str) -> String {
        Lookup::srv_name_for(Transport::Udp, name)
    }

    /// The SRV owner name for `transport` (RFC 3263 4.1, without NAPTR:
    /// `_sip._udp`, `_sip._tcp`, `_sips._tcp`).
    pub fn srv_name_for(transport: Transport, name: &str) -> String {
        let name = name.trim_end_matches('.');
        match transport {
            Transport::Udp => format!("_sip._udp.{name}."),
            Transport::Tcp => format!("_sip._tcp.{name}."),
            Transport::Tls => format!("_sips._tcp.{name}."),
        }
    }
}

/// One NAPTR record (RFC 3403), as far as SIP uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    pub replacement: String,
}

/// The SRV owner names NAPTR `records` lead to, best first, with the
/// transport each stands for (RFC 3263 4.1): only `S` records for
/// `SIP+D2U`, `SIP+D2T` or `SIPS+D2T` whose transport is in `allowed`
/// (the trunk's own when it names one: a URI or a trunk asking for TLS is
/// never downgraded by DNS), by order then preference. Records with a
/// regexp rather than a replacement are not used (SIP never needs them).
pub fn pick_naptr(records: &[Naptr], allowed: &[Transport]) -> Vec<(Transport, String)> {
    let mut usable: Vec<&Naptr> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter(|r| !r.replacement.is_empty() && r.replacement != ".")
        .collect();
    usable.sort_by_key(|r| (r.order, r.preference));
    let mut out: Vec<(Transport, String)> = Vec::new();
    for r in usable {
        let t = match r.services.to_ascii_uppercase().as_str() {
            "SIP+D2U" => Transport::Udp,
            "SIP+D2T" => Transport::Tcp,
            "SIPS+D2T" => Transport::Tls,
            _ => continue,
        };
        if allowed.contains(&t) && !out.iter().any(|(_, n)| *n == r.replacement) {
            out.push((t, r.replacement.clone()));
        }
    }
    out
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// `records` in the order to try them (RFC 2782): by priority, and
/// within one priority by weighted random selection, `pick(n)` returning
/// a number in `0..=n` (the caller's random source; tests fix it). A
/// target of `.` (service not offered) is dropped.
pub fn order_srv(records: &[Srv], mut pick: impl FnMut(u32) -> u32) -> Vec<Srv> {
    let mut rest: Vec<Srv> = records
        .iter()
        .filter(|r| r.target != "." && !r.target.is_empty())
        .cloned()
        .collect();
    rest.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let prio = rest[0].priority;
        let mut group: Vec<Srv> = Vec::new();
        rest.retain(|r| {
            if r.priority == prio {
                group.push(r.clone());
                false
            } else {
                true
            }
        });
        // Zero weights first, as RFC 2782 asks, so they get a small chance.
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let n = pick(total).min(total);
            let mut running = 0;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= n {
                    chosen = i;
                    break;
                }
            }
            out.push(group.remove(chosen));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    #[test]
    fn what_each_form_asks_for() {
        assert_eq!(
            Lookup::parse("192.0.2.1").unwrap(),
            Lookup::Literal("192.0.2.1:5060".parse().unwrap())
        );
        assert_eq!(
            Lookup::parse("[2001:db8::1]:5070").unwrap(),
            Lookup::Literal("[2001:db8::1]:5070".parse().unwrap())
        );
        assert_eq!(
            Lookup::parse("2001:db8::1").unwrap(),
            Lookup::Literal("[2001:db8::1]:5060".parse().unwrap())
        );
        assert_eq!(
            Lookup::parse("sip.carrier.example:5080").unwrap(),
            Lookup::Host {
                host: "sip.carrier.example".into(),
                port: 5080
            }
        );
        assert_eq!(
            Lookup::parse("carrier.example.").unwrap(),
            Lookup::Srv {
                name: "carrier.example".into()
            }
        );
        for bad in [
            "",
            "a b",
            "host:port",
            "host:99999",
            ":5060",
            "a\r\nb",
            "x/y",
        ] {
            assert!(Lookup::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Lookup::srv_name("carrier.example"),
            "_sip._udp.carrier.example."
        );
    }

    fn naptr(order: u16, pref: u16, flags: &str, services: &str, repl: &str) -> Naptr {
        Naptr {
            order,
            preference: pref,
            flags: flags.into(),
            services: services.into(),
            replacement: repl.into(),
        }
    }

    #[test]
    fn naptr_records_lead_to_srv_names_by_order_and_transport() {
        let recs = [
            naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com"),
            naptr(10, 20, "s", "SIP+D2T", "_sip._tcp.example.com"),
            naptr(10, 10, "S", "SIPS+D2T", "_sips._tcp.example.com"),
            naptr(5, 10, "u", "SIP+D2T", "x"),
            naptr(5, 10, "s", "SIP+D2S", "_sip._sctp.example.com"),
            naptr(5, 10, "s", "E2U+sip", "_e164.example.com"),
        ];
        let all = [Transport::Udp, Transport::Tcp, Transport::Tls];
        assert_eq!(
            pick_naptr(&recs, &all),
            [
                (Transport::Tls, "_sips._tcp.example.com".to_string()),
                (Transport::Tcp, "_sip._tcp.example.com".to_string()),
                (Transport::Udp, "_sip._udp.example.com".to_string()),
            ]
        );
        // A trunk that says TCP takes only the TCP record.
        assert_eq!(
            pick_naptr(&recs, &[Transport::Tcp]),
            [(Transport::Tcp, "_sip._tcp.example.com".to_string())]
        );
        assert!(pick_naptr(&recs[3..], &all).is_empty());
        assert_eq!(
            Lookup::srv_name_for(Transport::Tls, "example.com."),
            "_sips._tcp.example.com."
        );
    }

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let recs = [
            srv(20, 0, "backup"),
            srv(10, 10, "a"),
            srv(10, 90, "b"),
            srv(30, 0, "."),
        ];
        // pick(n) = 0: the first record with running weight >= 0.
        let low: Vec<_> = order_srv(&recs, |_| 0)
            .into_iter()
            .map(|r| r.target)
            .collect();
        assert_eq!(low, ["a", "b", "backup"]);
        // pick(n) = n: the last.
        let high: Vec<_> = order_srv(&recs, |n| n)
            .into_iter()
            .map(|r| r.target)
            .collect();
        assert_eq!(high, ["b", "a", "backup"]);
        // Over many draws, weight 90 comes first about 9 times in 10.
        let mut seed = 7u32;
        let mut b_first = 0;
        for _ in 0..1000 {
            let order = order_srv(&recs, |n| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 8) % (n + 1)
            });
            if order[0].target == "b" {
                b_first += 1;
            }
        }
        assert!((850..=950).contains(&b_first), "{b_first}");
        assert!(order_srv(&[srv(1, 0, ".")], |_| 0).is_empty());
    }
}

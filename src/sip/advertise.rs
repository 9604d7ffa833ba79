//! Which address our Via sent-by, Contact and SDP name (sans-IO).
//!
//! A socket bound to `0.0.0.0` (or `::`) must never put that address on
//! the wire: a peer cannot answer it. In order of precedence, a request
//! names: the configured `sip_advertise` (per trunk, else global); else
//! what the trunk's own responses said they saw (`received`/`rport` of
//! our Via, RFC 3581), learned only from trusted peers (trunk proxies and
//! registrars) so a callee cannot steer where our dialogs point; else the
//! address the driver found toward the peer (the OS route's source); else
//! the bound address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::header::{param, Via};

/// A setting that could not be read as an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} = {value:?}: {why}")]
pub struct AdvertiseError {
    pub setting: String,
    pub value: String,
    pub why: &'static str,
}

/// Parse a `sip_advertise`-style setting: `203.0.113.5`,
/// `203.0.113.5:5070`, `2001:db8::5` or `[2001:db8::5]:5070`; without a
/// port, port 0, which the driver replaces with the bound port. The
/// unspecified address is refused: it is what the setting exists to avoid.
pub fn parse_sip(setting: &str, value: &str) -> Result<SocketAddr, AdvertiseError> {
    let err = |why| AdvertiseError {
        setting: setting.to_string(),
        value: value.to_string(),
        why,
    };
    let v = value.trim();
    let addr = if let Ok(ip) = v.parse::<IpAddr>() {
        SocketAddr::new(ip, 0)
    } else if let Ok(sa) = v.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(err(
                "port 0 cannot be advertised (leave the port out for the bound one)",
            ));
        }
        sa
    } else {
        return Err(err("not an IP address or IP:port (IPv6 as [addr]:port)"));
    };
    if addr.ip().is_unspecified() {
        return Err(err("the unspecified address cannot be advertised"));
    }
    Ok(addr)
}

/// Parse an `rtp_advertise`-style setting: an IP address only (RTP ports
/// are per call).
pub fn parse_ip(setting: &str, value: &str) -> Result<IpAddr, AdvertiseError> {
    let err = |why| AdvertiseError {
        setting: setting.to_string(),
        value: value.to_string(),
        why,
    };
    let v = value.trim().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = v.parse().map_err(|_| err("not an IP address"))?;
    if ip.is_unspecified() {
        return Err(err("the unspecified address cannot be advertised"));
    }
    Ok(ip)
}

/// True when `addr` can be written into a message a peer acts on.
pub fn usable(addr: SocketAddr) -> bool {
    !addr.ip().is_unspecified() && addr.port() != 0
}

/// Addresses learned from trusted peers' responses, by peer IP. Bounded
/// by the number of trusted peers (trunks), since nothing else is learned.
#[derive(Debug, Default)]
pub struct Learned {
    by_peer: HashMap<IpAddr, SocketAddr>,
}

impl Learned {
    /// Read `received`/`rport` from the top Via of a response from `peer`;
    /// `sent` is what our Via said. Returns the address when it is new
    /// for this peer (so registrations can refresh their Contact).
    pub fn learn(&mut self, peer: IpAddr, via: &Via, sent: SocketAddr) -> Option<SocketAddr> {
        let received = param(&via.params, "received").and_then(|r| {
            r.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        let rport = param(&via.params, "rport").and_then(|p| p.parse::<u16>().ok());
        if received.is_none() && rport.is_none() {
            return None;
        }
        let seen = SocketAddr::new(received.unwrap_or(sent.ip()), rport.unwrap_or(sent.port()));
        if !usable(seen) || self.by_peer.get(&peer) == Some(&seen) {
            return None;
        }
        self.by_peer.insert(peer, seen);
        Some(seen)
    }

    /// What `peer` last said it sees us as.
    pub fn get(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.by_peer.get(&peer).copied()
    }
}

/// The sent-by in a Via header value we sent, as an address (host names
/// give `None`).
pub fn via_sent_by(via: &Via) -> Option<SocketAddr> {
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, via.port.unwrap_or(5060)))
}

/// Per call (from the trunk) or process-wide: the configured addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advertise {
    /// Via sent-by and Contact; port 0 means the bound port.
    pub sip: Option<SocketAddr>,
    /// SDP `o=`/`c=`; defaults to `sip`'s address when only that is set.
    pub rtp: Option<IpAddr>,
}

impl Advertise {
    /// Read both settings; `prefix` names them in errors (`trunks.x.`).
    pub fn parse(
        prefix: &str,
        sip: Option<&str>,
        rtp: Option<&str>,
    ) -> Result<Advertise, AdvertiseError> {
        Ok(Advertise {
            sip: sip
                .map(|v| parse_sip(&format!("{prefix}sip_advertise"), v))
                .transpose()?,
            rtp: rtp
                .map(|v| parse_ip(&format!("{prefix}rtp_advertise"), v))
                .transpose()?,
        })
    }

    /// This one's settings, each falling back to `other`'s.
    pub fn or(self, other: Advertise) -> Advertise {
        Advertise {
            sip: self.sip.or(other.sip),
            rtp: self.rtp.or(other.rtp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_the_unspecified_address() {
        assert_eq!(
            parse_sip("sip_advertise", "203.0.113.5").unwrap(),
            "203.0.113.5:0".parse().unwrap()
        );
        assert_eq!(
            parse_sip("sip_advertise", "[2001:db8::5]:5070").unwrap(),
            "[2001:db8::5]:5070".parse().unwrap()
        );
        assert_eq!(
            parse_sip("sip_advertise", "2001:db8::5").unwrap(),
            "[2001:db8::5]:0".parse().unwrap()
        );
        let e = parse_sip("trunks.x.sip_advertise", "0.0.0.0").unwrap_err();
        assert!(e.to_string().contains("trunks.x.sip_advertise"), "{e}");
        assert!(parse_sip("s", "::").is_err());
        assert!(parse_sip("s", "carrier.example").is_err());
        assert!(parse_sip("s", "192.0.2.1:0").is_err());
        assert_eq!(
            parse_ip("r", "[2001:db8::7]").unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        assert!(parse_ip("r", "0.0.0.0").is_err());
    }

    #[test]
    fn learns_received_and_rport_once_per_change() {
        let mut l = Learned::default();
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        let sent: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        let via = Via::parse(
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=40123;received=203.0.113.9",
        )
        .unwrap();
        assert_eq!(
            l.learn(peer, &via, sent),
            Some("203.0.113.9:40123".parse().unwrap())
        );
        assert_eq!(l.learn(peer, &via, sent), None, "unchanged: nothing new");
        assert_eq!(l.get(peer), Some("203.0.113.9:40123".parse().unwrap()));
        // rport alone keeps our IP.
        let via = Via::parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=1").unwrap();
        assert_eq!(
            l.learn(peer, &via, sent),
            Some("10.0.0.5:1".parse().unwrap())
        );
        // A bare `;rport` (no value) and no received teaches nothing.
        let mut l = Learned::default();
        let via = Via::parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(l.learn(peer, &via, sent), None);
        // A peer claiming we are 0.0.0.0 is ignored.
        let via = Via::parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;received=0.0.0.0").unwrap();
        assert_eq!(l.learn(peer, &via, sent), None);
        let v6 = Via::parse(
            "SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bKx;received=2001:db8::9;rport=7",
        )
        .unwrap();
        assert_eq!(
            l.learn(peer, &v6, "[2001:db8::5]:5060".parse().unwrap()),
            Some("[2001:db8::9]:7".parse().unwrap())
        );
        assert_eq!(
            via_sent_by(&v6),
            Some("[2001:db8::5]:5060".parse().unwrap())
        );
    }
}

//! A dialplan's trunk made usable: its outbound proxy resolved and its
//! credentials read from the environment. Fail closed: a trunk that
//! cannot be made usable is an error, never a reason to dial the contact's
//! host directly without the proxy or the credentials.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::TrunkConfig;
use crate::sip::auth::Credentials;

/// A DNS server that does not answer must not hold up a notification or
/// `/readyz` for long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a trunk cannot be used. Never carries a credential's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrunkError {
    #[error("trunk {0:?} is not configured")]
    NotConfigured(String),
    #[error("trunk {trunk:?}: cannot resolve its proxy {proxy}")]
    ProxyUnresolved { trunk: String, proxy: String },
    #[error("trunk {trunk:?}: credential environment variable {var} is not set")]
    MissingCredential { trunk: String, var: String },
    #[error("trunk {0:?}: username_env and password_env must be set together")]
    IncompleteCredentials(String),
    #[error("trunk {trunk:?}: {error}")]
    BadPrefs {
        trunk: String,
        error: crate::sip::trunk_prefs::PrefsError,
    },
    #[error("trunk {trunk:?}: {error}")]
    BadAddress {
        trunk: String,
        error: crate::sip::advertise::AdvertiseError,
    },
}

impl TrunkError {
    /// A short machine-readable reason for events and final states.
    pub fn code(&self) -> &'static str {
        match self {
            TrunkError::NotConfigured(_) => "trunk_not_configured",
            TrunkError::ProxyUnresolved { .. } => "trunk_proxy_unresolved",
            TrunkError::MissingCredential { .. } | TrunkError::IncompleteCredentials(_) => {
                "trunk_credentials_missing"
            }
            TrunkError::BadAddress { .. } => "trunk_bad_address",
            TrunkError::BadPrefs { .. } => "trunk_bad_identity",
        }
    }
}

/// What the calls of a contract go out through.
#[derive(Debug, Clone, Default)]
pub struct Trunk {
    pub proxy: Option<SocketAddr>,
    /// More proxies to fail over to, in order (after `proxy`).
    pub alternates: Vec<SocketAddr>,
    /// For calls: `None` when a challenge must not be answered (no
    /// `realm` and no proxy: the INVITE goes straight to the callee).
    pub credentials: Option<Credentials>,
    /// For the registrar, whose address is configured: always answered,
    /// in `realm` when set.
    pub registrar_credentials: Option<Credentials>,
    pub advertise: crate::sip::advertise::Advertise,
    /// Caller identity and codec order of its calls.
    pub prefs: crate::sip::trunk_prefs::CallPrefs,
    /// `transport` and the TLS settings.
    pub transport: crate::sip::transport::TrunkTransport,
    /// Latch onto the RTP source of its peers (they sit behind NAT).
    pub symmetric_rtp: bool,
}

impl Trunk {
    /// Put the proxies keepalive found down last (see
    /// [`crate::sip::keepalive::Board::order`]).
    pub fn order_by(&mut self, name: &str, board: &crate::sip::keepalive::Board) {
        let all: Vec<SocketAddr> = self.proxy.iter().chain(&self.alternates).copied().collect();
        let mut ordered = board.order(name, &all).into_iter();
        self.proxy = ordered.next();
        self.alternates = ordered.collect();
    }
}

fn env_value(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// Resolve trunk `name`. `default` without a section dials each URI's
/// host directly: that is its configuration, not a fallback.
pub async fn resolve(
    name: &str,
    trunks: &BTreeMap<String, TrunkConfig>,
) -> Result<Trunk, TrunkError> {
    let Some(t) = trunks.get(name) else {
        return if name == "default" {
            Ok(Trunk::default())
        } else {
            Err(TrunkError::NotConfigured(name.to_string()))
        };
    };
    let mut proxies = Vec::new();
    // What NAPTR chose for the first name, when the trunk names no
    // transport (RFC 3263 4.1).
    let mut dns_transport = None;
    for p in t.all_proxies() {
        let unresolved = || TrunkError::ProxyUnresolved {
            trunk: name.to_string(),
            proxy: p.clone(),
        };
        // SRV or A/AAAA (RFC 3263), each address in the order to try.
        let found = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            crate::driver::resolve::resolve_for(p, t.transport),
        )
        .await
        .map_err(|_| unresolved())?
        .map_err(|e| {
            tracing::debug!(trunk = %name, proxy = %p, error = %e, "proxy does not resolve");
            unresolved()
        })?;
        if proxies.is_empty() && t.transport.is_none() {
            dns_transport = found.transport;
        }
        for a in found.addrs {
            if !proxies.contains(&a) {
                proxies.push(a);
            }
        }
    }
    let proxy = proxies.first().copied();
    let alternates = proxies.iter().skip(1).copied().collect();
    let credentials = match (&t.username_env, &t.password_env) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            let missing = |var: &str| TrunkError::MissingCredential {
                trunk: name.to_string(),
                var: var.to_string(),
            };
            Some(Credentials {
                username: env_value(u).ok_or_else(|| missing(u))?,
                password: env_value(p).ok_or_else(|| missing(p))?,
                realm: t.realm.clone(),
            })
        }
        _ => return Err(TrunkError::IncompleteCredentials(name.to_string())),
    };
    let advertise = crate::sip::advertise::Advertise::parse(
        &format!("trunks.{name}."),
        t.sip_advertise.as_deref(),
        t.rtp_advertise.as_deref(),
    )
    .map_err(|error| TrunkError::BadAddress {
        trunk: name.to_string(),
        error,
    })?;
    let prefs = t.call_prefs().map_err(|error| TrunkError::BadPrefs {
        trunk: name.to_string(),
        error,
    })?;
    // Without a realm, whoever answers the INVITE could ask for a hash of
    // the password; only the trunk's own proxy is asked to be trusted.
    let call_credentials = credentials
        .clone()
        .filter(|c| c.realm.is_some() || proxy.is_some());
    Ok(Trunk {
        proxy,
        alternates,
        credentials: call_credentials,
        registrar_credentials: credentials,
        advertise,
        prefs,
        transport: {
            let mut tt = t.trunk_transport();
            tt.transport = tt.transport.or(dns_transport);
            tt
        },
        symmetric_rtp: t.symmetric_rtp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(proxy: Option<&str>, user: Option<&str>, pass: Option<&str>) -> TrunkConfig {
        TrunkConfig {
            proxy: proxy.map(str::to_string),
            username_env: user.map(str::to_string),
            password_env: pass.map(str::to_string),
            registrar: None,
            aor: None,
            register_expires: None,
            symmetric_rtp: false,
            sip_advertise: None,
            rtp_advertise: None,
            realm: None,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_unusable_trunk_is_an_error_never_a_direct_dial() {
        let mut trunks = BTreeMap::new();
        trunks.insert(
            "bad-dns".into(),
            trunk(Some("proxy.invalid:5060"), None, None),
        );
        trunks.insert(
            "no-env".into(),
            trunk(
                Some("127.0.0.1:5060"),
                Some("CALLOUT_UNIT_TRUNK_USER_UNSET"),
                Some("CALLOUT_UNIT_TRUNK_PASS_UNSET"),
            ),
        );
        trunks.insert("half".into(), trunk(None, Some("X"), None));
        trunks.insert("ok".into(), trunk(Some("127.0.0.1:5060"), None, None));
        assert_eq!(
            resolve("bad-dns", &trunks).await.unwrap_err().code(),
            "trunk_proxy_unresolved"
        );
        let e = resolve("no-env", &trunks).await.unwrap_err();
        assert_eq!(e.code(), "trunk_credentials_missing");
        assert!(
            e.to_string().contains("CALLOUT_UNIT_TRUNK_USER_UNSET"),
            "{e}"
        );
        assert!(matches!(
            resolve("half", &trunks).await,
            Err(TrunkError::IncompleteCredentials(_))
        ));
        assert!(matches!(
            resolve("missing", &trunks).await,
            Err(TrunkError::NotConfigured(_))
        ));
        let ok = resolve("ok", &trunks).await.unwrap();
        assert_eq!(ok.proxy, Some("127.0.0.1:5060".parse().unwrap()));
        assert!(resolve("default", &trunks).await.unwrap().proxy.is_none());
    }
}

//! HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616 / RFC 8760):
//! MD5 and SHA-256 (and their `-sess` variants), `qop=auth` with nc and
//! cnonce. Credentials never appear in `Debug` output or logs.

use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fmt;

use super::header::unquote;

/// A username and password for one realm (or any realm when `realm` is
/// `None`).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub realm: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a challenge could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("challenge is not a Digest challenge")]
    NotDigest,
    #[error("challenge lacks realm or nonce")]
    MissingField,
    #[error("no supported algorithm offered")]
    UnsupportedAlgorithm,
    #[error("challenge requires qop we do not support")]
    UnsupportedQop,
}

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `Some` when the server offered qop; callout always answers `auth`.
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    pub fn parse(value: &str) -> Result<Challenge, AuthError> {
        let v = value.trim();
        let rest = v
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case("digest"))
            .map(|_| &v[6..])
            .ok_or(AuthError::NotDigest)?;
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Some(Algorithm::Md5);
        let mut qop = None;
        let mut stale = false;
        for (k, val) in parse_auth_params(rest) {
            match k.as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "opaque" => opaque = Some(val),
                "algorithm" => algorithm = Algorithm::parse(&val),
                "qop" => qop = Some(val),
                "stale" => stale = val.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        let algorithm = algorithm.ok_or(AuthError::UnsupportedAlgorithm)?;
        let qop_auth = match qop {
            None => false,
            Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
            Some(_) => return Err(AuthError::UnsupportedQop),
        };
        Ok(Challenge {
            realm: realm.ok_or(AuthError::MissingField)?,
            nonce: nonce.ok_or(AuthError::MissingField)?,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// Pick the strongest challenge we can answer from several header
    /// values (RFC 8760 section 2.4: servers list their preference; a UAC
    /// uses the first it supports, and we prefer SHA-256 over MD5).
    pub fn best<'a>(values: impl Iterator<Item = &'a str>) -> Result<Challenge, AuthError> {
        let mut best: Option<Challenge> = None;
        let mut last_err = AuthError::NotDigest;
        for v in values {
            match Challenge::parse(v) {
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
                    {
                        best = Some(c);
                    }
                }
                Err(e) => last_err = e,
            }
        }
        best.ok_or(last_err)
    }

    /// Build the `Authorization` / `Proxy-Authorization` value.
    pub fn respond(
        &self,
        creds: &Credentials,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&format!(
            "{}:{}:{}",
            creds.username, self.realm, creds.password
        ));
        if matches!(alg, Algorithm::Md5Sess | Algorithm::Sha256Sess) {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc_s = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&format!("{ha1}:{}:{nc_s}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            creds.username,
            self.realm,
            self.nonce,
            uri,
            response,
            alg.name()
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc_s}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque=\"{o}\""));
        }
        out
    }
}

/// Why a challenge for another realm than the configured one was refused
/// (a call's end reason and the log; never the hash).
pub fn realm_refusal(asked: &str, ours: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect::<String>()
    };
    format!(
        "digest challenge for realm {:?} refused: the trunk's realm is {:?}",
        clean(asked),
        clean(ours)
    )
}

/// The realm a [`realm_refusal`] reason names, so the call record can
/// say which realm was refused without re-deriving it.
pub fn refused_realm(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("digest challenge for realm ")?;
    let (quoted, _) = rest.rsplit_once(" refused: the trunk's realm is ")?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

/// `k=v, k="v", ...` into lower-cased keys and unquoted values.
fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    super::message::split_list(s)
        .into_iter()
        .filter_map(|item| {
            let (k, v) = item.split_once('=')?;
            let v = v.trim();
            let v = if v.starts_with('"') {
                unquote(v)?
            } else {
                v.to_string()
            };
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realm_refusal_names_the_realm_it_refused() {
        let r = realm_refusal("evil \"x\" refused: the trunk's", "carrier.test");
        assert_eq!(
            refused_realm(&r).as_deref(),
            Some("evil \"x\" refused: the trunk's")
        );
        assert_eq!(refused_realm("authentication failed"), None);
    }

    fn creds() -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: "Circle of Life".into(),
            realm: None,
        }
    }

    // RFC 7616 section 3.9.1 test vectors, with SIP's method/uri.
    #[test]
    fn rfc7616_vectors() {
        let md5 = Challenge::parse(r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#).unwrap();
        let r = md5.respond(
            &creds(),
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            r.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#),
            "{r}"
        );
        let sha = Challenge::parse(r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#).unwrap();
        let r = sha.respond(
            &creds(),
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            r.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{r}"
        );
    }

    #[test]
    fn prefers_sha256_and_redacts() {
        let vals = [
            r#"Digest realm="r", nonce="n1", algorithm=MD5"#,
            r#"Digest realm="r", nonce="n2", algorithm=SHA-256"#,
        ];
        assert_eq!(
            Challenge::best(vals.into_iter()).unwrap().algorithm,
            Algorithm::Sha256
        );
        assert!(!format!("{:?}", creds()).contains("Circle"));
        assert_eq!(Challenge::parse("Basic realm=x"), Err(AuthError::NotDigest));
    }
}

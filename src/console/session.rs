//! Console sessions: an API token exchanged for a random session id in an
//! HttpOnly, SameSite=Strict cookie, kept in memory with an absolute
//! expiry, and a CSRF token every state-changing request made with the
//! cookie must carry in `X-CSRF-Token`. The session holds the token's
//! SHA-256, not the token, and the token is looked up again on every
//! request, so removing it from the configuration ends its sessions.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "callout_session";
/// A session lasts this long from sign-in, whatever happens.
pub const LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// Sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub token_sha256: String,
    pub csrf: String,
    pub expires_ms: i64,
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Byte-wise comparison whose time does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// A new session; its id and CSRF token.
    pub fn create(&self, token_sha256: &str, now_ms: i64) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            token_sha256: token_sha256.to_string(),
            csrf: random_hex(),
            expires_ms: now_ms + LIFETIME_MS,
        };
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, s| s.expires_ms > now_ms);
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(id.clone(), s.clone());
        (id, s)
    }

    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id).filter(|s| s.expires_ms > now_ms).cloned()
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The session a request's cookie names, if it is live.
pub fn of_request(
    sessions: &Sessions,
    headers: &HeaderMap,
    now_ms: i64,
) -> Option<(String, Session)> {
    let id = cookie(headers, COOKIE)?;
    // Ids are 64 hex digits; anything else is not looked up.
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    sessions.get(id, now_ms).map(|s| (id.to_string(), s))
}

/// `Set-Cookie` for a session (an empty id with `Max-Age=0` ends it).
pub fn set_cookie(id: &str, max_age_s: i64) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}")
}

fn forbidden(detail: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({"type": "about:blank", "title": "Forbidden", "status": 403, "detail": detail})
            .to_string(),
    )
        .into_response()
}

/// The CSRF guard in front of every route: a state-changing request
/// authenticated by the session cookie (not by a bearer token) must carry
/// the session's CSRF token in `X-CSRF-Token`, and, when the browser says
/// where it comes from, come from this same origin.
pub async fn csrf_guard(
    sessions: std::sync::Arc<crate::service::Service>,
    req: Request,
    next: Next,
) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let h = req.headers();
    if safe || crate::api::bearer(h).is_some() || cookie(h, COOKIE).is_none() {
        return next.run(req).await;
    }
    // Signing in replaces whatever session the cookie named.
    if req.uri().path() == "/console/session" && req.method() == Method::POST {
        return next.run(req).await;
    }
    let now = crate::runner::now_ms();
    let Some((_, s)) = of_request(&sessions.console.sessions, h, now) else {
        return forbidden("the session has ended; sign in again");
    };
    let sent = h
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !same(sent, &s.csrf) {
        return forbidden("a state-changing request needs the session's X-CSRF-Token");
    }
    if let (Some(origin), Some(host)) = (
        h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let o = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        if o != host {
            return forbidden("cross-origin request");
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_cookies_parse() {
        let s = Sessions::default();
        let (id, sess) = s.create("abc", 1000);
        assert_eq!(id.len(), 64);
        assert!(s.get(&id, 1000 + LIFETIME_MS - 1).is_some());
        assert!(s.get(&id, 1000 + LIFETIME_MS).is_none());
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={id}; c=d").parse().unwrap(),
        );
        assert_eq!(of_request(&s, &h, 2000).unwrap().1.csrf, sess.csrf);
        h.insert(
            header::COOKIE,
            format!("{COOKIE}=zz{}", &id[2..]).parse().unwrap(),
        );
        assert!(of_request(&s, &h, 2000).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}

//! The HTTP API's own parsing of what a client sends: the bearer token,
//! the Idempotency-Key, a notification body (down to the words the callee
//! would hear), and an action run request's parameters (down to the shell
//! quoting of an SSH command line).

use std::path::Path;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;

use crate::action::plan::sh_quote;
use crate::action::validate::check_value;
use crate::config::LimitsConfig;
use crate::ivr::dialplan::{self, Dialplan, Phrase};
use crate::service::input::check_variables;
use crate::service::RunRequest;

/// The shipped globex-db dialplan: declared variables, readers for host
/// names and numbers.
fn plan() -> Option<&'static Dialplan> {
    static P: OnceLock<Option<Dialplan>> = OnceLock::new();
    P.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = root.join("dialplans/globex-db.toml");
        let text = std::fs::read_to_string(&file).ok()?;
        dialplan::load_str(&text, &file, &root.join("prompts"), &Default::default()).ok()
    })
    .as_ref()
}

/// Line 1 is the Authorization value, line 2 the Idempotency-Key, the
/// rest the request body, read both as a notification and as an action
/// run request. Every refusal must be a 4xx problem+json.
pub fn api(data: &[u8]) -> bool {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let auth = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(auth) {
        headers.insert(header::AUTHORIZATION, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(key) {
        headers.insert("idempotency-key", v);
    }
    if let Some(token) = crate::api::bearer(&headers) {
        assert!(
            !token.is_empty() && token.trim() == token,
            "token {token:?}"
        );
    }
    let _ = crate::api::idempotency_key(&headers);

    let mut parsed = false;
    match crate::api::parse_notification(body) {
        Ok((mut n, _dry_run)) => {
            parsed = true;
            if let Some(plan) = plan() {
                if check_variables(plan, &mut n, &LimitsConfig::default()).is_ok() {
                    let values = crate::runner::template_values(plan, &n);
                    if let Phrase::Text(t) = &plan.message {
                        let _ = dialplan::render(t, &values);
                    }
                }
            }
        }
        Err(e) => {
            let r = e.into_response();
            assert!(r.status().is_client_error(), "status {}", r.status());
            assert_eq!(
                r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                Some(&b"application/problem+json"[..])
            );
            assert_ne!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    if let Ok(req) = serde_json::from_slice::<RunRequest>(body) {
        parsed = true;
        for v in req.params.values() {
            if check_value(v).is_ok() {
                assert_eq!(sh_quote(v), *v, "a checked value needs no quoting");
            }
            assert_eq!(
                shell_word(&sh_quote(v)).as_deref(),
                Some(v.as_str()),
                "sh_quote does not give back one word equal to the value"
            );
        }
    }
    parsed
}

/// How a POSIX shell reads one word made of plain characters, '...'
/// strings and backslash escapes; `None` if anything else (a space, a
/// metacharacter outside quotes, an open quote) would change its meaning.
fn shell_word(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_ascii_alphanumeric() || "._-/:@%+=,".contains(c) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

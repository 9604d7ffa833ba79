//! The console's pages. Each is a server-rendered shell (navigation,
//! language, the session's CSRF token in a `<meta>`); the live parts are
//! filled by `assets/console.js` from the JSON API, and the analytics
//! and quality pages are rendered whole here, plots included.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::json;

use super::i18n::{t, Lang};
use super::session::{self, Session};
use super::svg::esc;
use super::Shared;
use crate::api::ApiError;
use crate::config::TokenConfig;
use crate::service::Service;

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Only this origin's own script and style: the pages show text that
/// came from alerts and mails.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Who is looking at a page.
pub(super) struct Viewer {
    pub name: String,
    pub csrf: String,
    pub lang: Lang,
    pub operator: bool,
    pub actions: bool,
    pub admin: bool,
    /// `None`: every contract.
    pub contracts: Option<Vec<String>>,
}

impl Viewer {
    pub fn may_see(&self, contract: &str) -> bool {
        self.contracts
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == contract))
    }
}

fn token_by_hash<'a>(svc: &'a Service, hash: &str) -> Option<&'a TokenConfig> {
    svc.config
        .tokens
        .iter()
        .find(|t| t.sha256.eq_ignore_ascii_case(hash))
}

fn has(t: &TokenConfig, scope: &str) -> bool {
    t.scopes.iter().any(|s| s == scope || s == "admin")
}

/// May this token use the console at all?
fn console_token(t: &TokenConfig) -> bool {
    has(t, "operate") || has(t, "customer")
}

pub(super) fn viewer(svc: &Service, headers: &HeaderMap) -> Option<Viewer> {
    let (_, s): (String, Session) =
        session::of_request(&svc.console.sessions, headers, crate::runner::now_ms())?;
    let tok = token_by_hash(svc, &s.token_sha256).filter(|t| console_token(t))?;
    let operator = has(tok, "operate");
    let bound = !tok.contracts.is_empty() || !operator;
    Some(Viewer {
        name: tok.name.clone(),
        csrf: s.csrf,
        lang: super::i18n::of_request(headers),
        operator,
        actions: has(tok, "actions"),
        admin: tok.scopes.iter().any(|s| s == "admin"),
        contracts: bound.then(|| tok.contracts.clone()),
    })
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The page around `body`.
fn layout(v: &Viewer, page: &str, title: &str, body: &str) -> Response {
    layout_with(v, page, title, body, false)
}

/// The page around `body`; `wall`: for a wall display (larger type, no
/// controls: nobody clicks on a wall).
fn layout_with(v: &Viewer, page: &str, title: &str, body: &str, wall: bool) -> Response {
    let l = v.lang;
    let mut nav = String::new();
    let mut link = |href: &str, key: &str, id: &str| {
        let cur = if id == page { " class=\"current\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\"{cur}>{}</a>", t(l, key));
    };
    link("/console", "board", "board");
    if v.operator {
        link("/console/contracts", "contracts", "contracts");
    }
    link("/console/analytics", "analytics", "analytics");
    link("/console/quality", "quality", "quality");
    let role = if v.contracts.is_some() && !v.operator {
        format!(" <span class=\"badge\">{}</span>", t(l, "read_only"))
    } else {
        String::new()
    };
    let controls = if wall {
        format!(
            "<span class=\"clock\" id=\"clock\"></span><span class=\"who\">{}</span>",
            esc(&v.name)
        )
    } else {
        format!(
            "<nav>{nav}</nav><span class=\"who\">{who}{role}</span>\
             <button type=\"button\" id=\"lang\" data-lang=\"{other}\">{switch}</button>\
             <button type=\"button\" id=\"signout\">{signout}</button>",
            who = esc(&v.name),
            other = if l == Lang::Ja { "en" } else { "ja" },
            switch = t(l, "language"),
            signout = t(l, "sign_out"),
        )
    };
    let html = format!(
        "<!DOCTYPE html><html lang=\"{code}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf\" content=\"{csrf}\"><meta name=\"page\" content=\"{page}\">\
         <title>{title} - callout</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head><body{body_class}>\
         <header><span class=\"brand\">callout</span>{controls}</header>\
         <script type=\"application/json\" id=\"phrases\">{phrases}</script>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        code = l.code(),
        csrf = esc(&v.csrf),
        page = esc(page),
        title = esc(title),
        body_class = if wall { " class=\"wall\"" } else { "" },
        // `</` cannot end this block: JSON escapes it.
        phrases = super::i18n::script_phrases(l).replace("</", "<\\/"),
    );
    secure(Html(html).into_response())
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

pub(super) async fn login(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let l = super::i18n::of_request(&headers);
    let err = if uri.query().is_some_and(|q| q.contains("error")) {
        format!("<p class=\"error\">{}</p>", t(l, "bad_token"))
    } else {
        String::new()
    };
    let html = format!(
        "<!DOCTYPE html><html lang=\"{code}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
         <body class=\"login\"><main><h1>{title}</h1>{err}\
         <form method=\"post\" action=\"/console/session\"><label>{tok} \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required></label>\
         <button type=\"submit\" id=\"signin\">{sign}</button></form></main></body></html>",
        code = l.code(),
        title = t(l, "title"),
        tok = t(l, "token"),
        sign = t(l, "sign_in"),
    );
    secure(Html(html).into_response())
}

/// `application/x-www-form-urlencoded` value of `name`.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    s.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /console/session`: a token (JSON `{"token"}` or a form field)
/// for a session cookie. JSON callers get the CSRF token in the answer;
/// the form is sent on to the board.
pub(super) async fn sign_in(
    State(svc): Shared,
    headers: HeaderMap,
    crate::api::RawBody(body): crate::api::RawBody,
) -> Response {
    let json_req = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let token = if json_req {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
    } else {
        form_value(&body, "token")
    };
    let tok = token
        .filter(|t| !t.trim().is_empty() && t.len() <= 1024)
        .and_then(|t| token_by_hash(&svc, &session::sha256_hex(t.trim())))
        .filter(|t| console_token(t));
    let Some(tok) = tok else {
        tracing::warn!("console sign-in refused");
        if json_req {
            return ApiError::unauthorized("unknown token, or one that may not use the console")
                .into_response();
        }
        return Redirect::to("/console/login?error=1").into_response();
    };
    // A session cookie the browser still holds is replaced, not kept.
    if let Some((old, _)) =
        session::of_request(&svc.console.sessions, &headers, crate::runner::now_ms())
    {
        svc.console.sessions.remove(&old);
    }
    let (id, s) = svc
        .console
        .sessions
        .create(&tok.sha256.to_ascii_lowercase(), crate::runner::now_ms());
    tracing::info!(token = %tok.name, "console sign-in");
    let cookie = session::set_cookie(&id, session::LIFETIME_MS / 1000);
    let mut r = if json_req {
        let roles: Vec<&str> = ["operate", "actions", "admin", "customer"]
            .into_iter()
            .filter(|r| has(tok, r))
            .collect();
        Json(json!({"name": tok.name, "csrf": s.csrf, "roles": roles,
            "contracts": tok.contracts, "expires_ms": s.expires_ms}))
        .into_response()
    } else {
        Redirect::to("/console").into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/logout` / `DELETE /console/session` (CSRF-checked).
pub(super) async fn sign_out(State(svc): Shared, headers: HeaderMap) -> Response {
    if let Some((id, _)) =
        session::of_request(&svc.console.sessions, &headers, crate::runner::now_ms())
    {
        svc.console.sessions.remove(&id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie("", 0)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

pub(super) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

/// `GET /console` (`?wall=1`: the wall display's board).
pub(super) async fn board(
    State(svc): Shared,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return to_login();
    };
    let l = v.lang;
    let wall = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "wall=1" || kv == "wall=true"));
    // Two columns side by side on a wide screen (console.css), one under
    // the other on a laptop.
    let body = format!(
        "<div class=\"board\"><section class=\"col\"><h2>{n}</h2><div id=\"notifications\" class=\"cards\"></div></section>\
         <section class=\"col\"><h2>{i}</h2><div id=\"incidents\" class=\"cards\"></div></section></div>\
         <p class=\"status\" id=\"live\"></p>",
        n = t(l, "notifications"),
        i = t(l, "incidents"),
    );
    layout_with(&v, "board", t(l, "board"), &body, wall)
}

pub(super) async fn incident(
    State(svc): Shared,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return to_login();
    };
    let l = v.lang;
    let ops = if v.operator {
        format!(
            "<section id=\"ops\" data-run=\"{run}\"><button type=\"button\" id=\"close\">{c}</button> \
             <button type=\"button\" id=\"cancel\">{x}</button> \
             <input type=\"text\" id=\"ackby\" maxlength=\"200\" placeholder=\"{aw}\"> <button type=\"button\" id=\"ackfor\">{a}</button>\
             <div id=\"actions\"></div><pre id=\"plan\"></pre>\
             <section id=\"progress-box\" hidden><h3>{pg}</h3><ol id=\"progress\"></ol></section>\
             <div id=\"result\"></div></section>",
            pg = t(l, "progress"),
            run = v.actions,
            c = t(l, "close"),
            x = t(l, "cancel"),
            a = t(l, "ack_for"),
            aw = t(l, "ack_who"),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<div id=\"incident\" data-id=\"{id}\"><dl id=\"facts\"></dl></div>{ops}\
         <section id=\"audio-box\" hidden><h2>{au}</h2><audio controls preload=\"none\" id=\"message-audio\"></audio></section>\
         <section><h2>{calls}</h2><table id=\"calls\"></table></section>\
         <section><h2>{tl}</h2><ol id=\"timeline\"></ol></section>",
        id = esc(&id),
        au = t(l, "message_audio"),
        calls = t(l, "calls"),
        tl = t(l, "timeline"),
    );
    layout(
        &v,
        "incident",
        &format!("{} {}", t(l, "incidents"), id),
        &body,
    )
}

pub(super) async fn notification(
    State(svc): Shared,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(v) = viewer(&svc, &headers) else {
        return to_login();
    };
    let l = v.lang;
    let ops = if v.operator {
        format!(
            "<section id=\"ops\"><button type=\"button\" id=\"cancel\">{x}</button> \
             <input type=\"text\" id=\"ackby\" maxlength=\"200\" placeholder=\"{aw}\"> <button type=\"button\" id=\"ackfor\">{a}</button><div id=\"result\"></div></section>",
            x = t(l, "cancel"),
            a = t(l, "ack_for"),
            aw = t(l, "ack_who"),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<div id=\"notification\" data-id=\"{id}\"><dl id=\"facts\"></dl></div>{ops}\
         <section><h2>{au}</h2><audio controls preload=\"none\" id=\"message-audio\" \
         src=\"/v1/notifications/{id}/audio\"></audio></section>\
         <section><h2>{calls}</h2><table id=\"calls\"></table></section>\
         <section><h2>{ev}</h2><ol id=\"timeline\"></ol></section>",
        id = esc(&id),
        au = t(l, "message_audio"),
        calls = t(l, "calls"),
        ev = t(l, "events"),
    );
    layout(&v, "notification", &id, &body)
}

pub(super) use super::analytics_page::{analytics, contracts, quality};

pub(super) fn layout_pub(v: &Viewer, page: &str, title: &str, body: &str) -> Response {
    layout(v, page, title, body)
}

//! The REST API over real HTTP against a running service (SQLite store,
//! real calls to callout softphones and sipp, a real webhook receiver).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callout::config::{Config, TokenConfig, WebhookConfig};
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOTIFY: &str = "notify-token-for-tests";
const OPERATE: &str = "operate-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";
const CUSTOMER: &str = "customer-token-for-tests";

fn token(name: &str, secret: &str, scope: &str) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        scopes: vec![scope.into()],
        contracts: Vec::new(),
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    _rt: tokio::runtime::Runtime,
}

fn plan_text(contract: &str, uri: &str, ring: &str) -> String {
    format!(
        r#"contract = "{contract}"
name = "API test"
language = "en"
[escalation]
rounds = 1
ring_timeout = "{ring}"
between_calls = "1s"
between_rounds = "1m"
[[contacts]]
name = "Oncall"
uri = "{uri}"
[message]
text = "Alert on {{host}}."
[menu]
prompt = "Press 1."
input_timeout = "5s"
[menu.keys]
"1" = "ack"
"#
    )
}

fn start(dir: &std::path::Path, plans: &[(&str, String)], webhook: Option<String>) -> Server {
    start_with_ca(dir, plans, webhook, None)
}

fn start_with_ca(
    dir: &std::path::Path,
    plans: &[(&str, String)],
    webhook: Option<String>,
    ca: Option<std::path::PathBuf>,
) -> Server {
    start_full(dir, plans, webhook, ca, Default::default())
}

fn start_full(
    dir: &std::path::Path,
    plans: &[(&str, String)],
    webhook: Option<String>,
    ca: Option<std::path::PathBuf>,
    trunks: std::collections::BTreeMap<String, callout::config::TrunkConfig>,
) -> Server {
    let dialplans = dir.join("dialplans");
    std::fs::create_dir_all(&dialplans).unwrap();
    for (name, text) in plans {
        std::fs::write(dialplans.join(format!("{name}.toml")), text).unwrap();
    }
    let config = Config {
        listen: "127.0.0.1:0".into(),
        sip: "127.0.0.1:0".into(),
        rtp_ports: format!(
            "{}-{}",
            34000 + (std::process::id() % 20) * 100,
            34099 + (std::process::id() % 20) * 100
        ),
        database_url: format!("sqlite://{}/data/callout.db", dir.display()),
        dialplans,
        prompts: concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").into(),
        tts_cache: dir.join("tts"),
        tokens: vec![
            token("pipeline", NOTIFY, "notify"),
            token("ops", OPERATE, "operate"),
            token("root", ADMIN, "admin"),
            TokenConfig {
                contracts: vec!["ring".into()],
                ..token("portal", CUSTOMER, "customer")
            },
        ],
        webhooks: WebhookConfig {
            url: webhook,
            secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
            ca_file: ca,
            ..WebhookConfig::default()
        },
        max_body: 16 * 1024,
        voices: Default::default(),
        trunks,
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(async {
        let (svc, listener) = callout::serve::start(config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, callout::api::router(svc)).await });
        format!("http://{addr}")
    });
    Server {
        base,
        client: reqwest::Client::new(),
        _rt: rt,
    }
}

impl Server {
    fn call(
        &self,
        method: &str,
        path: &str,
        tok: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = format!("{}{path}", self.base);
        let c = self.client.clone();
        let (method, tok, key) = (
            method.to_string(),
            tok.map(str::to_string),
            key.map(str::to_string),
        );
        self._rt.block_on(async move {
            let mut r = match method.as_str() {
                "POST" => c.post(&url),
                "DELETE" => c.delete(&url),
                _ => c.get(&url),
            };
            if let Some(t) = tok {
                r = r.bearer_auth(t);
            }
            if let Some(k) = key {
                r = r.header("Idempotency-Key", k);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
                headers,
            )
        })
    }

    /// POST a notification that must be accepted; its id.
    fn notify(&self, contract: &str, ticket: &str) -> String {
        let (st, v, _) = self.call(
            "POST",
            "/v1/notifications",
            Some(NOTIFY),
            Some(body(contract, ticket)),
            None,
        );
        assert_eq!(st, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn wait_state(&self, id: &str, states: &[&str], limit: Duration) -> Value {
        let until = std::time::Instant::now() + limit;
        loop {
            let (_, v, _) = self.call(
                "GET",
                &format!("/v1/notifications/{id}"),
                Some(OPERATE),
                None,
                None,
            );
            if states.contains(&v["state"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                std::time::Instant::now() < until,
                "state stayed {}: {v:#}",
                v["state"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn body(contract: &str, ticket: &str) -> Value {
    json!({"contract": contract, "ticket": ticket, "severity": "major", "host": "web-01", "summary": "HTTP down"})
}

/// A softphone that answers every call and presses 1 after a second;
/// returns it and its port.
fn softphone(rtp: &str) -> (std::process::Child, u16) {
    peer::softphone(|cmd| {
        cmd.args(["--press", "1", "--after", "1s", "--rtp-ports", rtp]);
    })
}

#[test]
fn auth_validation_idempotency_and_the_happy_path() {
    require("espeak-ng");
    let dir = scratch("api-happy");
    let (mut phone, port) = softphone("35000-35099");
    let s = start(
        &dir,
        &[(
            "web",
            plan_text("web", &format!("sip:oncall@127.0.0.1:{port}"), "10s"),
        )],
        None,
    );

    // 401 without or with an unknown token, 403 without the scope.
    assert_eq!(
        s.call(
            "POST",
            "/v1/notifications",
            None,
            Some(body("web", "T1")),
            None
        )
        .0,
        401
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/notifications",
            Some("wrong"),
            Some(body("web", "T1")),
            None
        )
        .0,
        401
    );
    let (st, v, h) = s.call("POST", "/v1/dialplans/reload", Some(NOTIFY), None, None);
    assert_eq!(st, 403, "{v}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(
        s.call("POST", "/v1/dialplans/reload", Some(ADMIN), None, None)
            .0,
        200
    );

    // 422 naming the field.
    let mut missing = body("web", "T1");
    missing.as_object_mut().unwrap().remove("host");
    let (st, v, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(missing),
        None,
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("host")), "{v}");
    let mut bad = body("web", "T1");
    bad["severity"] = json!(5);
    let (st, v, _) = s.call("POST", "/v1/notifications", Some(NOTIFY), Some(bad), None);
    assert_eq!((st, v["field"].as_str()), (422, Some("severity")), "{v}");
    let (st, v, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("nope", "T1")),
        None,
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("contract")), "{v}");
    assert!(!v.to_string().contains("sqlx"), "no internal error text");
    // Bodies over the limit are refused before they are read.
    let mut huge = body("web", "T1");
    huge["summary"] = json!("x".repeat(20 * 1024));
    assert_eq!(
        s.call("POST", "/v1/notifications", Some(NOTIFY), Some(huge), None)
            .0,
        413
    );
    let (st, v, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(json!(["not", "an", "object"])),
        None,
    );
    assert_eq!(st, 422, "{v}");

    // Accepted, with a Location; the same key and body return the same id.
    let (st, v, h) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("web", "T1")),
        Some("key-1"),
    );
    assert_eq!(st, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(h["location"], format!("/v1/notifications/{id}").as_str());
    let (st, v2, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("web", "T1")),
        Some("key-1"),
    );
    assert_eq!(
        (st, v2["id"].as_str(), v2["created"].as_bool()),
        (202, Some(id.as_str()), Some(false))
    );
    let (st, _, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("web", "T2")),
        Some("key-1"),
    );
    assert_eq!(st, 422, "same key, different body");
    // Without a key, the same contract + ticket while active: the same one.
    let (_, v3, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("web", "T1")),
        None,
    );
    assert_eq!(v3["id"].as_str(), Some(id.as_str()));

    let done = s.wait_state(&id, &["acked", "exhausted"], Duration::from_secs(30));
    assert_eq!(done["state"], "acked", "{done:#}");
    assert_eq!(done["acked_by"], "Oncall");
    let a = &done["attempts"][0];
    assert_eq!(
        (a["outcome"]["outcome"].as_str(), a["digits"].as_str()),
        (Some("acked"), Some("1"))
    );
    assert!(a["answered_ms"].as_i64().unwrap() >= a["started_ms"].as_i64().unwrap());
    let (st, call, _) = s.call(
        "GET",
        &format!("/v1/calls/{}", a["id"].as_str().unwrap()),
        Some(OPERATE),
        None,
        None,
    );
    assert_eq!((st, call["attempt"].as_i64()), (200, Some(1)));
    let (_, list, _) = s.call(
        "GET",
        "/v1/notifications?contract=web&state=acked",
        Some(OPERATE),
        None,
        None,
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, contracts, _) = s.call("GET", "/v1/contracts", Some(OPERATE), None, None);
    assert_eq!(contracts["items"][0]["contract"], "web");
    let (_, m, _) = s.call("GET", "/metrics", None, None, None);
    assert!(
        m.as_str()
            .unwrap()
            .contains("callout_calls_total{outcome=\"acked\"} 1"),
        "{m}"
    );
    let (st, ready, _) = s.call("GET", "/readyz", None, None, None);
    assert_eq!((st, ready["database"].as_bool()), (200, Some(true)));
    let _ = phone.kill();
    let _ = phone.wait();
}

#[test]
fn cancel_while_ringing_sends_cancel_and_ends_cancelled() {
    let dir = scratch("api-cancel");
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut sipp = Sipp::uas("ring_no_answer.xml", &sdir, &[]);
    let s = start(
        &dir,
        &[("ring", plan_text("ring", &sipp.uri(), "30s"))],
        None,
    );
    let (st, v, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("ring", "R1")),
        None,
    );
    assert_eq!(st, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v, _) = s.call(
            "GET",
            &format!("/v1/notifications/{id}"),
            Some(OPERATE),
            None,
            None,
        );
        if v["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < until);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (st, v, _) = s.call(
        "POST",
        &format!("/v1/notifications/{id}/cancel"),
        Some(NOTIFY),
        Some(json!({"reason": "recovered"})),
        None,
    );
    assert_eq!(st, 202, "{v}");
    let done = s.wait_state(&id, &["cancelled"], Duration::from_secs(10));
    assert_eq!(done["final"]["reason"], "recovered");
    assert_eq!(done["attempts"][0]["outcome"]["outcome"], "cancelled");
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "sipp got a CANCEL: {}",
        sipp.messages()
    );
    let (st, _, _) = s.call(
        "POST",
        &format!("/v1/notifications/{id}/cancel"),
        Some(NOTIFY),
        None,
        None,
    );
    assert_eq!(st, 409, "already ended");
}

/// An operator acknowledges for someone on the phone while the call
/// rings at sipp: the ringing call is cancelled (sipp sees the CANCEL),
/// the notification ends `acked` (not `cancelled`) with who and by which
/// token, the event is `notification.acked` with `via: "console"`, and a
/// repeat is answered as the first.
#[test]
fn acknowledge_for_someone_while_ringing_ends_acked_not_cancelled() {
    let dir = scratch("api-ack");
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut sipp = Sipp::uas("ring_no_answer.xml", &sdir, &[]);
    let s = start(
        &dir,
        &[("ring", plan_text("ring", &sipp.uri(), "30s"))],
        None,
    );
    let id = s.notify("ring", "ACK1");
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v, _) = s.call(
            "GET",
            &format!("/v1/notifications/{id}"),
            Some(OPERATE),
            None,
            None,
        );
        if v["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < until, "never dialled: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let path = format!("/v1/notifications/{id}/acknowledge");
    let ack = json!({"by": "Oncall", "reason": "called back on the desk phone"});
    // Refusals first: nothing changes.
    let (st, v, _) = s.call(
        "POST",
        &path,
        Some(OPERATE),
        Some(json!({"reason": "x"})),
        None,
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("by")), "{v}");
    let (st, v, _) = s.call(
        "POST",
        &path,
        Some(OPERATE),
        Some(json!({"by": "a\nb"})),
        None,
    );
    assert_eq!(st, 422, "{v}");
    let (st, v, _) = s.call(
        "POST",
        &path,
        Some(OPERATE),
        Some(json!({"by": "x", "extra": 1})),
        None,
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("extra")), "{v}");
    for (tok, want) in [(None, 401), (Some(NOTIFY), 403), (Some(CUSTOMER), 403)] {
        let (st, v, _) = s.call("POST", &path, tok, Some(ack.clone()), None);
        assert_eq!(st, want, "{tok:?}: {v}");
    }
    let (st, _, _) = s.call(
        "POST",
        "/v1/notifications/ntf_nope/acknowledge",
        Some(OPERATE),
        Some(ack.clone()),
        None,
    );
    assert_eq!(st, 404);
    let (_, v, _) = s.call(
        "GET",
        &format!("/v1/notifications/{id}"),
        Some(OPERATE),
        None,
        None,
    );
    assert!(
        v["final"].is_null() && v["attempts"][0]["ended_ms"].is_null(),
        "a refused acknowledgement changed it: {v:#}"
    );

    let (st, v, _) = s.call("POST", &path, Some(OPERATE), Some(ack.clone()), None);
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        (v["by"].as_str(), v["operator"].as_str()),
        (Some("Oncall"), Some("ops"))
    );
    let (st, v, _) = s.call("POST", &path, Some(OPERATE), Some(ack.clone()), None);
    assert!(st == 202 || st == 200, "a repeat: {st} {v}");
    assert_eq!(v["repeated"], true, "{v}");
    let done = s.wait_state(&id, &["acked", "cancelled"], Duration::from_secs(10));
    assert_eq!(done["state"], "acked", "{done:#}");
    assert_eq!(done["final"]["console"]["by"], "Oncall", "{done:#}");
    assert_eq!(done["final"]["console"]["operator"], "ops", "{done:#}");
    assert_eq!(done["acked_by"], "Oncall", "{done:#}");
    assert!(done["cancel_reason"].is_null(), "{done:#}");
    // The ringing call itself was hung up.
    assert_eq!(
        done["attempts"][0]["outcome"]["outcome"], "cancelled",
        "{done:#}"
    );
    assert!(
        sipp.wait(Duration::from_secs(10)).success(),
        "sipp got a CANCEL: {}",
        sipp.messages()
    );
    // Repeats after the end: the same person is answered as before,
    // anyone else (or a cancel) finds it ended.
    let (st, v, _) = s.call("POST", &path, Some(OPERATE), Some(ack.clone()), None);
    assert_eq!((st, &v["repeated"]), (200, &json!(true)), "{v}");
    let (st, _, _) = s.call(
        "POST",
        &path,
        Some(OPERATE),
        Some(json!({"by": "Someone else"})),
        None,
    );
    assert_eq!(st, 409);
    let (st, _, _) = s.call(
        "POST",
        &format!("/v1/notifications/{id}/cancel"),
        Some(NOTIFY),
        None,
        None,
    );
    assert_eq!(st, 409);
    // The same event a key press gives, saying it came from the console.
    let db = format!("sqlite://{}/data/callout.db", dir.display());
    let events: Vec<(String, Value)> = s._rt.block_on(async {
        let store = callout::store::Store::connect(&db).await.unwrap();
        store
            .outbox(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.event, serde_json::from_str(&o.payload).unwrap()))
            .collect()
    });
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert!(!names.contains(&"notification.cancelled"), "{names:?}");
    let acked = events
        .iter()
        .find(|(e, _)| e == "notification.acked")
        .unwrap_or_else(|| panic!("no notification.acked in {names:?}"));
    assert_eq!(acked.1["via"], "console", "{}", acked.1);
    assert_eq!(acked.1["by"], "Oncall", "{}", acked.1);
    assert_eq!(acked.1["operator"], "ops", "{}", acked.1);
    assert_eq!(acked.1["final"]["state"], "acked", "{}", acked.1);
}

/// A receiver that verifies signatures and fails the first two deliveries.
#[test]
fn webhooks_are_signed_retried_and_arrive_once_in_order() {
    require("espeak-ng");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = {
        let (got, hits) = (got.clone(), hits.clone());
        rt.block_on(async move {
            use axum::{http::HeaderMap, routing::post, Router};
            let app = Router::new().route(
                "/hook",
                post(move |headers: HeaderMap, body: String| {
                    let (got, hits) = (got.clone(), hits.clone());
                    async move {
                        let n = hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let id = headers["webhook-id"].to_str().unwrap().to_string();
                        let ts: i64 = headers["webhook-timestamp"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let want = callout::service::webhook::sign(
                            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
                            &id,
                            ts,
                            &body,
                        );
                        assert_eq!(
                            headers["webhook-signature"].to_str().unwrap(),
                            want,
                            "signature verifies"
                        );
                        assert!(
                            (ts - chrono::Utc::now().timestamp()).abs() < 300,
                            "timestamp within tolerance"
                        );
                        if n < 2 {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        let mut g = got.lock().unwrap();
                        if !g.iter().any(|(i, _)| *i == id) {
                            g.push((id, serde_json::from_str(&body).unwrap()));
                        }
                        axum::http::StatusCode::OK
                    }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            addr
        })
    };
    let dir = scratch("api-webhook");
    let (mut phone, port) = softphone("35100-35199");
    let s = start(
        &dir,
        &[(
            "hook",
            plan_text("hook", &format!("sip:oncall@127.0.0.1:{port}"), "10s"),
        )],
        Some(format!("http://{addr}/hook")),
    );
    let id = s.notify("hook", "W1");
    s.wait_state(&id, &["acked"], Duration::from_secs(30));
    // Retries back off 1-2 s each; wait for the queue to drain.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v, _) = s.call(
            "GET",
            &format!("/v1/notifications/{id}"),
            Some(OPERATE),
            None,
            None,
        );
        if v["webhooks"]["queued"] == 0 && v["webhooks"]["delivered"].as_i64().unwrap_or(0) > 5 {
            break;
        }
        assert!(std::time::Instant::now() < until, "{v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = got.lock().unwrap();
    let types: Vec<&str> = got
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap())
        .collect();
    let seqs: Vec<i64> = got
        .iter()
        .map(|(_, b)| b["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "every event once, in order: {types:?}"
    );
    for want in [
        "notification.started",
        "call.ringing",
        "call.answered",
        "digit",
        "call.ended",
        "notification.acked",
    ] {
        assert!(types.contains(&want), "{want} delivered: {types:?}");
    }
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) >= seqs.len() + 2,
        "the failed tries were retried"
    );
    let _ = phone.kill();
    let _ = phone.wait();
}

/// Webhooks over HTTPS: a real TLS connection (rustls with one crypto
/// provider, ring) to a receiver whose certificate comes from a private CA
/// given in `webhooks.ca_file`.
#[test]
fn webhooks_over_https_with_a_private_ca() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    require("espeak-ng");
    let dir = scratch("api-https");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let port = {
        let got = got.clone();
        rt.block_on(async move {
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = l.accept().await else { return };
                    let (acceptor, got) = (acceptor.clone(), got.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        loop {
                            let Ok(n) = tls.read(&mut chunk).await else { return };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            let text = String::from_utf8_lossy(&buf).to_string();
                            if let Some(h) = text.find("\r\n\r\n") {
                                let len: usize = text[..h]
                                    .lines()
                                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                                    .unwrap_or(0);
                                if buf.len() >= h + 4 + len {
                                    let body: Value = serde_json::from_slice(&buf[h + 4..h + 4 + len]).unwrap_or_default();
                                    got.lock().unwrap().push(body["type"].as_str().unwrap_or("?").to_string());
                                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                                    let _ = tls.shutdown().await;
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            port
        })
    };
    let (mut phone, phone_port) = softphone("35200-35299");
    let s = start_with_ca(
        &dir,
        &[(
            "tls",
            plan_text("tls", &format!("sip:oncall@127.0.0.1:{phone_port}"), "10s"),
        )],
        Some(format!("https://localhost:{port}/hook")),
        Some(ca),
    );
    let id = s.notify("tls", "S1");
    s.wait_state(&id, &["acked"], Duration::from_secs(30));
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !got
        .lock()
        .unwrap()
        .iter()
        .any(|t| t == "notification.acked")
    {
        assert!(
            std::time::Instant::now() < until,
            "over HTTPS: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got.lock().unwrap().contains(&"call.answered".to_string()));
    let _ = phone.kill();
    let _ = phone.wait();
}

/// The OpenAPI document is generated from the handlers: every route the
/// router serves is in it, and every documented path and method is served.
#[test]
fn openapi_document_matches_the_router() {
    let dir = scratch("api-openapi");
    let s = start(
        &dir,
        &[("doc", plan_text("doc", "sip:x@127.0.0.1:5999", "10s"))],
        None,
    );
    let (st, doc, _) = s.call("GET", "/openapi.json", None, None, None);
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: std::collections::BTreeSet<String> =
        doc["paths"].as_object().unwrap().keys().cloned().collect();
    let want: std::collections::BTreeSet<String> = [
        "/v1/notifications",
        "/v1/notifications/{id}",
        "/v1/notifications/{id}/cancel",
        "/v1/notifications/{id}/acknowledge",
        "/v1/calls/{id}",
        "/v1/contracts",
        "/v1/contracts/{id}",
        "/v1/contracts/{id}/pin-lock",
        "/v1/dialplans/reload",
        "/v1/dialplans/validate",
        "/v1/actions/{flow}/run",
        "/v1/actions/runs/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(paths, want);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "nope").replace("{flow}", "nope");
            let (st, _, _) = s.call(&method.to_uppercase(), &concrete, None, None, None);
            assert!(st != 404 && st != 405, "{method} {path} is served: {st}");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("NotificationRequest") && schemas.contains_key("Problem"));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// A dialplan's trunk: calls go to the trunk's outbound proxy (sipp here,
/// the contact's own host does not even resolve) and answer its digest
/// challenge with credentials taken from environment variables.
#[test]
fn calls_go_through_the_trunk_proxy_with_its_credentials() {
    require("espeak-ng");
    let dir = scratch("api-trunk");
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    rfc4733_pcap(&sdir.join("digits.pcap"), &[('9', 1500, 120)], false);
    std::fs::write(sdir.join("auth.csv"), "SEQUENTIAL\nMD5;trunk-secret\n").unwrap();
    let mut proxy = Sipp::uas("auth_answer.xml", &sdir, &["-inf", "auth.csv"]);
    // Unique names: the test process shares its environment.
    std::env::set_var("CALLOUT_TEST_TRUNK_USER", "alice");
    std::env::set_var("CALLOUT_TEST_TRUNK_PASS", "trunk-secret");
    let mut trunks = std::collections::BTreeMap::new();
    trunks.insert(
        "carrier".to_string(),
        callout::config::TrunkConfig {
            proxy: Some(format!("127.0.0.1:{}", proxy.port)),
            username_env: Some("CALLOUT_TEST_TRUNK_USER".into()),
            password_env: Some("CALLOUT_TEST_TRUNK_PASS".into()),
            registrar: None,
            aor: None,
            register_expires: None,
            symmetric_rtp: false,
            sip_advertise: None,
            rtp_advertise: None,
            realm: None,
            ..Default::default()
        },
    );
    let plan = plan_text("carrier", "sip:+81312345678@pbx.invalid", "10s")
        .replace(
            "language = \"en\"",
            "language = \"en\"\ntrunk = \"carrier\"",
        )
        .replace("\"1\" = \"ack\"", "\"9\" = \"ack\"");
    let s = start_full(&dir, &[("carrier", plan)], None, None, trunks);
    let (st, v, _) = s.call(
        "POST",
        "/v1/notifications",
        Some(NOTIFY),
        Some(body("carrier", "K1")),
        None,
    );
    assert_eq!(st, 202, "{v}");
    let done = s.wait_state(
        v["id"].as_str().unwrap(),
        &["acked", "exhausted"],
        Duration::from_secs(30),
    );
    assert_eq!(done["state"], "acked", "{done:#}\n{}", proxy.messages());
    assert!(
        proxy.wait(Duration::from_secs(10)).success(),
        "{}",
        proxy.messages()
    );
    let msgs = proxy.messages();
    assert!(
        msgs.contains("INVITE sip:+81312345678@pbx.invalid SIP/2.0"),
        "sent to the proxy with the contact's URI"
    );
    assert!(
        !msgs.contains("trunk-secret"),
        "the password never goes on the wire"
    );
}

/// A trunk with a registrar: callout registers (answering the digest
/// challenge with the trunk's credentials) and refreshes before the
/// granted 2 s run out; sipp plays the registrar.
#[test]
fn trunk_registration_is_made_and_refreshed() {
    let dir = scratch("api-register");
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::write(sdir.join("auth.csv"), "SEQUENTIAL\nMD5;reg-secret\n").unwrap();
    let mut registrar = Sipp::uas("registrar.xml", &sdir, &["-inf", "auth.csv"]);
    std::env::set_var("CALLOUT_TEST_REG_USER", "alice");
    std::env::set_var("CALLOUT_TEST_REG_PASS", "reg-secret");
    let mut trunks = std::collections::BTreeMap::new();
    trunks.insert(
        "carrier".to_string(),
        callout::config::TrunkConfig {
            proxy: None,
            username_env: Some("CALLOUT_TEST_REG_USER".into()),
            password_env: Some("CALLOUT_TEST_REG_PASS".into()),
            registrar: Some(format!("127.0.0.1:{}", registrar.port)),
            aor: Some("sip:alice@127.0.0.1".into()),
            register_expires: Some(60),
            symmetric_rtp: false,
            sip_advertise: None,
            rtp_advertise: None,
            realm: None,
            ..Default::default()
        },
    );
    let s = start_full(
        &dir,
        &[("reg", plan_text("reg", "sip:x@127.0.0.1:5999", "10s"))],
        None,
        None,
        trunks,
    );
    assert!(
        registrar.wait(Duration::from_secs(15)).success(),
        "registered and refreshed: {}",
        registrar.messages()
    );
    let (_, ready, _) = s.call("GET", "/readyz", None, None, None);
    assert!(
        ready["registrations"]["sip:alice@127.0.0.1"]
            .as_str()
            .unwrap_or("")
            .starts_with("registered for 2 s"),
        "{ready}"
    );
    let msgs = registrar.messages();
    assert_eq!(
        msgs.matches("REGISTER sip:127.0.0.1:").count(),
        3,
        "first, challenged retry, refresh"
    );
    assert!(!msgs.contains("reg-secret"));
}

/// Several requests for one contract + ticket at once, alone on SQLite
/// (no cluster): exactly one creates the notification, every other gets
/// it as its duplicate, and none is failed as `abandoned`. A request that
/// lost on the unique index used to find the winner's row committed but
/// not yet registered as running (the winner registered it only after its
/// commit came back), fail it as abandoned and start a second one.
#[test]
fn concurrent_posts_for_one_ticket_make_one_notification() {
    let dir = scratch("api-dup-race");
    // Takes the INVITEs and never answers: every notification rings.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uri = format!("sip:nobody@{}", silent.local_addr().unwrap());
    let s = start(&dir, &[("ring", plan_text("ring", &uri, "30s"))], None);
    let (tickets, racers) = (40usize, 4usize);
    let url = format!("{}/v1/notifications", s.base);
    let c = s.client.clone();
    let answers: Vec<(usize, u16, Value)> = s._rt.block_on(async move {
        let mut tasks = Vec::new();
        for t in 0..tickets {
            for _ in 0..racers {
                let (c, url) = (c.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let r = c
                        .post(&url)
                        .bearer_auth(NOTIFY)
                        .json(&body("ring", &format!("DUP-{t}")))
                        .send()
                        .await
                        .unwrap();
                    let st = r.status().as_u16();
                    (t, st, r.json::<Value>().await.unwrap_or(Value::Null))
                }));
            }
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    });
    for t in 0..tickets {
        let mine: Vec<&Value> = answers
            .iter()
            .filter(|(k, _, _)| *k == t)
            .map(|(_, st, v)| {
                assert_eq!(*st, 202, "{v}");
                v
            })
            .collect();
        let created = mine.iter().filter(|v| v["created"] == true).count();
        assert_eq!(created, 1, "ticket DUP-{t}: {mine:?}");
        let id = &mine[0]["id"];
        assert!(
            mine.iter().all(|v| &v["id"] == id),
            "ticket DUP-{t}: {mine:?}"
        );
        let (_, v, _) = s.call(
            "GET",
            &format!("/v1/notifications/{}", id.as_str().unwrap()),
            Some(OPERATE),
            None,
            None,
        );
        assert_ne!(v["state"], "failed", "{v:#}");
    }
}

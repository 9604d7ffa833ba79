//! The console and the customer binding against a real `callout serve`
//! (SQLite) and a real callee (`callout softphone` answering and pressing
//! 1 after 3 s), driven over HTTP as a browser would: sign-in, the
//! session cookie, CSRF, the live board and its Server-Sent Events, the
//! pages in both languages, analytics from the test's own calls, and a
//! customer token that must not see another contract's data anywhere.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::serve::*;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const OPERATOR: &str = "console-operator-token";
const CUSTOMER: &str = "console-customer-acme-token";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn req(s: &Serve, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Resp {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = client().request(m, format!("{}{path}", s.base));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Resp {
        status,
        headers,
        text: resp.text().unwrap_or_default(),
    }
}

/// A signed-in browser: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn sign_in(s: &Serve, token: &str) -> Session {
        let r = req(
            s,
            "POST",
            "/console/session",
            &[],
            Some(json!({"token": token})),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let set = r.headers[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        Session {
            cookie: set.split(';').next().unwrap().to_string(),
            csrf: r.json()["csrf"].as_str().unwrap().to_string(),
        }
    }

    fn get(&self, s: &Serve, path: &str) -> Resp {
        req(s, "GET", path, &[("cookie", &self.cookie)], None)
    }

    fn get_lang(&self, s: &Serve, path: &str, accept: &str, lang_cookie: Option<&str>) -> Resp {
        let cookie = match lang_cookie {
            Some(l) => format!("{}; callout_lang={l}", self.cookie),
            None => self.cookie.clone(),
        };
        req(
            s,
            "GET",
            path,
            &[("cookie", &cookie), ("accept-language", accept)],
            None,
        )
    }

    fn post(&self, s: &Serve, path: &str, body: Value) -> Resp {
        req(
            s,
            "POST",
            path,
            &[("cookie", &self.cookie), ("x-csrf-token", &self.csrf)],
            Some(body),
        )
    }
}

/// Read Server-Sent Events on a thread: (event name, data, received ms).
fn sse(s: &Serve, cookie: &str) -> mpsc::Receiver<(String, Value, i64)> {
    let resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{}/console/events", s.base))
        .header("cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                if tx.send((name.clone(), v, now_ms())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn console_sessions_board_pages_and_customer_binding() {
    require("espeak-ng");
    let dir = scratch("console");
    copy_prompts(&dir);
    let (callee, port) = peer::softphone(|cmd| {
        cmd.args([
            "--press",
            "1",
            "--after",
            "3s",
            "--rtp-ports",
            "47700-47749",
        ]);
    });
    let _callee = KillOnDrop(callee);
    let uri = format!("sip:bob@127.0.0.1:{port}");
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    for c in ["acme", "beta"] {
        std::fs::write(
            dir.join(format!("dialplans/{c}.toml")),
            format!(
                "{}[pipeline]\nwait = \"1h\"\n",
                plan(c, &uri, None, "text = \"Alert on {host}.\"")
            ),
        )
        .unwrap();
    }
    let s = Serve::start(
        &dir,
        &format!(
            "[[tokens]]\nname = \"operator\"\nsha256 = \"{}\"\nscopes = [\"operate\", \"actions\"]\n\
             [[tokens]]\nname = \"acme-portal\"\nsha256 = \"{}\"\nscopes = [\"customer\"]\ncontracts = [\"acme\"]\n\
             [webhooks]\nsecrets = [\"{SECRET}\"]\n",
            hex(OPERATOR),
            hex(CUSTOMER)
        ),
        "47600-47699",
    );

    // ---- Hostile input: no cookie, forged cookie, bad tokens ----
    let r = req(&s, "GET", "/console", &[], None);
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/console/login");
    assert_eq!(req(&s, "GET", "/console/api/board", &[], None).status, 401);
    assert_eq!(req(&s, "GET", "/console/events", &[], None).status, 401);
    let forged = format!("callout_session={}", "ab".repeat(32));
    assert_eq!(
        req(
            &s,
            "GET",
            "/console/api/board",
            &[("cookie", &forged)],
            None
        )
        .status,
        401
    );
    assert_eq!(
        req(&s, "GET", "/v1/notifications", &[("cookie", &forged)], None).status,
        401
    );
    assert_eq!(
        req(&s, "GET", "/console", &[("cookie", &forged)], None).status,
        303
    );
    let r = req(
        &s,
        "POST",
        "/console/session",
        &[],
        Some(json!({"token": "wrong"})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.headers.get("set-cookie").is_none());
    let r = client()
        .post(format!("{}/console/session", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console/login?error=1");
    // A form sign-in that works goes to the board.
    let r = client()
        .post(format!("{}/console/session", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={OPERATOR}"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console");

    let op = Session::sign_in(&s, OPERATOR);
    let cu = Session::sign_in(&s, CUSTOMER);

    // ---- Live board: a call appears, talks, presses 1, disappears ----
    let events = sse(&s, &op.cookie);
    let customer_events = sse(&s, &cu.cookie);
    let n_acme = s.notify("acme", "T-ACME-1")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen: Vec<(String, Value, i64)> = Vec::new();
    let mut on_board = false;
    let until = Instant::now() + Duration::from_secs(40);
    while !seen.iter().any(|(_, v, _)| v["event"] == "call.ended") {
        assert!(Instant::now() < until, "no call.ended: {seen:?}");
        if let Ok(e) = events.recv_timeout(Duration::from_millis(200)) {
            if e.1["event"] == "call.answered" {
                // The board shows it talking, with who.
                wait_for("the call on the board", Duration::from_secs(5), || {
                    let b = op.get(&s, "/console/api/board").json();
                    b["notifications"].as_array().is_some_and(|ns| {
                        ns.iter().any(|n| {
                            n["id"] == n_acme.as_str()
                                && n["calls"].as_array().is_some_and(|cs| {
                                    cs.iter()
                                        .any(|c| c["contact"] == "Bob" && c["state"] == "talking")
                                })
                        })
                    })
                });
                on_board = true;
            }
            seen.push(e);
        }
    }
    assert!(on_board, "{seen:?}");
    let names: Vec<&str> = seen
        .iter()
        .filter_map(|(_, v, _)| v["event"].as_str())
        .collect();
    for want in ["call.dialing", "call.answered", "digit", "call.ended"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(seen
        .iter()
        .all(|(_, v, _)| v["notification"] == n_acme.as_str()));
    let digit = seen.iter().find(|(_, v, _)| v["event"] == "digit").unwrap();
    assert_eq!(digit.1["digit"], "1");
    let mut delays: Vec<i64> = seen
        .iter()
        .map(|(_, v, at)| at - v["ts_ms"].as_i64().unwrap())
        .collect();
    delays.sort_unstable();
    println!(
        "event -> browser delay over {} events: max {} ms, median {} ms",
        delays.len(),
        delays[delays.len() - 1],
        delays[delays.len() / 2]
    );
    s.wait_state(&n_acme, &["acked"], Duration::from_secs(20));
    wait_for("the board empty", Duration::from_secs(5), || {
        op.get(&s, "/console/api/board").json()["notifications"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });

    // The customer of acme heard acme's events too; beta's are not for it.
    let n_beta = s.notify("beta", "T-BETA-1")["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_state(&n_beta, &["acked"], Duration::from_secs(40));
    std::thread::sleep(Duration::from_millis(300));
    let cust: Vec<(String, Value, i64)> = customer_events.try_iter().collect();
    assert!(
        cust.iter()
            .any(|(_, v, _)| v["notification"] == n_acme.as_str()),
        "{cust:?}"
    );
    assert!(
        !cust
            .iter()
            .any(|(_, v, _)| v["notification"] == n_beta.as_str()),
        "{cust:?}"
    );

    // ---- CSRF ----
    let cancel = format!("/v1/notifications/{n_acme}/cancel");
    let r = req(
        &s,
        "POST",
        &cancel,
        &[("cookie", &op.cookie)],
        Some(json!({})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = req(
        &s,
        "POST",
        &cancel,
        &[("cookie", &op.cookie), ("x-csrf-token", "0000")],
        Some(json!({})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = req(
        &s,
        "POST",
        &cancel,
        &[("cookie", &op.cookie), ("x-csrf-token", &cu.csrf)],
        Some(json!({})),
    );
    assert_eq!(r.status, 403, "another session's token: {}", r.text);
    let r = req(
        &s,
        "POST",
        &cancel,
        &[
            ("cookie", &op.cookie),
            ("x-csrf-token", &op.csrf),
            ("origin", "http://evil.example"),
        ],
        Some(json!({})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    // With its token the request goes through (and finds it ended).
    let r = op.post(&s, &cancel, json!({}));
    assert_eq!(r.status, 409, "{}", r.text);

    // ---- Customer binding, through the API ----
    let cust_bearer = format!("Bearer {CUSTOMER}");
    for auth in [
        ("cookie", cu.cookie.as_str()),
        ("authorization", cust_bearer.as_str()),
    ] {
        let get = |p: &str| req(&s, "GET", p, &[auth], None);
        assert_eq!(get(&format!("/v1/notifications/{n_acme}")).status, 200);
        assert_eq!(get(&format!("/v1/notifications/{n_beta}")).status, 404);
        let list = get("/v1/notifications").json();
        let ids: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["id"].as_str())
            .collect();
        assert_eq!(ids, vec![n_acme.as_str()], "{list}");
        assert!(get("/v1/notifications?contract=beta").json()["items"]
            .as_array()
            .unwrap()
            .is_empty());
        let beta = s
            .http("GET", &format!("/v1/notifications/{n_beta}"), None)
            .unwrap()
            .1;
        let beta_call = beta["attempts"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(get(&format!("/v1/calls/{beta_call}")).status, 404);
        let acme = s
            .http("GET", &format!("/v1/notifications/{n_acme}"), None)
            .unwrap()
            .1;
        assert_eq!(
            get(&format!(
                "/v1/calls/{}",
                acme["attempts"][0]["id"].as_str().unwrap()
            ))
            .status,
            200
        );
        assert_eq!(get("/v1/contracts").status, 403);
        assert_eq!(get("/v1/contracts/beta").status, 403);
        let rep = get("/v1/reports/summary").json();
        assert_eq!(rep["notifications"], 1, "{rep}");
        let rep = get("/v1/reports/summary?contract=beta").json();
        assert_eq!(rep["notifications"], 0, "{rep}");
    }
    // Read-only: a customer changes nothing, CSRF token or not.
    let r = cu.post(&s, &format!("/v1/notifications/{n_acme}/cancel"), json!({}));
    assert_eq!(r.status, 403, "{}", r.text);
    let r = req(
        &s,
        "POST",
        "/v1/notifications",
        &[("authorization", &cust_bearer)],
        Some(
            json!({"contract": "acme", "ticket": "X", "severity": "critical", "host": "h", "summary": "s"}),
        ),
    );
    assert_eq!(r.status, 403, "{}", r.text);

    // Incidents: one per contract, pending in their wait window.
    for c in ["acme", "beta"] {
        let (st, v) = s
            .http("POST", "/v1/intake/alertmanager", Some(json!({"version": "4", "status": "firing", "alerts": [
                {"status": "firing", "labels": {"alertname": "HostDown", "host": "web-01", "contract": c}}]})))
            .unwrap();
        assert_eq!(st, 202, "{v}");
    }
    let mut incidents = Value::Null;
    wait_for("two incidents", Duration::from_secs(15), || {
        incidents = s.http("GET", "/v1/incidents", None).unwrap().1;
        incidents["items"].as_array().is_some_and(|a| a.len() == 2)
    });
    let inc_of = |c: &str| {
        incidents["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["contract"] == c)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (inc_acme, inc_beta) = (inc_of("acme"), inc_of("beta"));
    for auth in [
        ("cookie", cu.cookie.as_str()),
        ("authorization", cust_bearer.as_str()),
    ] {
        let get = |p: &str| req(&s, "GET", p, &[auth], None);
        let list = get("/v1/incidents").json();
        let ids: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["id"].as_str())
            .collect();
        assert_eq!(ids, vec![inc_acme.as_str()], "{list}");
        assert_eq!(get(&format!("/v1/incidents/{inc_acme}")).status, 200);
        assert_eq!(get(&format!("/v1/incidents/{inc_beta}")).status, 404);
        assert_eq!(
            get("/v1/incidents?contract=beta").json()["items"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
    }
    let r = cu.post(&s, &format!("/v1/incidents/{inc_acme}/close"), json!({}));
    assert_eq!(r.status, 403, "{}", r.text);
    // On the customer's board: acme's incident, not beta's.
    let b = cu.get(&s, "/console/api/board").json();
    let ids: Vec<&str> = b["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, vec![inc_acme.as_str()], "{b}");
    let b = op.get(&s, "/console/api/board").json();
    assert_eq!(b["incidents"].as_array().unwrap().len(), 2, "{b}");

    // ---- Pages, both languages ----
    let ja = op.get_lang(&s, "/console", "ja,en;q=0.5", None);
    assert_eq!(ja.status, 200);
    assert!(
        ja.text.contains("ライブボード") && ja.text.contains("lang=\"ja\""),
        "{}",
        ja.text
    );
    assert!(ja.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let en = op.get_lang(&s, "/console", "ja,en;q=0.5", Some("en"));
    assert!(
        en.text.contains("Live board") && en.text.contains("lang=\"en\""),
        "{}",
        en.text
    );
    assert!(op
        .get(&s, "/console/assets/console.js")
        .text
        .contains("EventSource"));
    let page = op.get(&s, &format!("/console/incidents/{inc_beta}"));
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("id=\"close\""),
        "operators get the buttons"
    );
    let page = cu.get(&s, &format!("/console/incidents/{inc_acme}"));
    assert!(
        !page.text.contains("id=\"close\""),
        "customers are read-only"
    );
    let contracts = op.get(&s, "/console/contracts");
    assert!(
        contracts.text.contains("contract-acme") && contracts.text.contains("Bob"),
        "{}",
        contracts.text
    );
    assert!(!cu
        .get(&s, "/console/contracts")
        .text
        .contains("contract-acme"));

    // Analytics from the calls above: two notifications, both acknowledged.
    let a = op.get(&s, "/console/analytics");
    assert_eq!(a.status, 200, "{}", a.text);
    for series in [
        "answer_rate_by_hour",
        "calls_by_hour",
        "ack_median_by_weekday",
        "answer_rate_by_contract",
        "answered_by_contact",
    ] {
        assert!(
            a.text.contains(&format!("data-series=\"{series}\"")),
            "{series} missing"
        );
    }
    assert!(a.text.contains("data-k=\"notifications\">2<"), "{}", a.text);
    assert!(
        a.text.contains("data-k=\"answer_rate\">100%<"),
        "{}",
        a.text
    );
    let a = cu.get(&s, "/console/analytics");
    assert!(a.text.contains("data-k=\"notifications\">1<"), "{}", a.text);
    let q = op.get(&s, "/console/quality");
    assert!(
        q.text.contains("data-series=\"attainment:acme\"")
            && q.text.contains("data-series=\"attainment:beta\"")
    );
    assert!(!cu
        .get(&s, "/console/quality")
        .text
        .contains("attainment:beta"));
    let csv = op.get(&s, "/v1/reports/by/contract?format=csv");
    assert!(
        csv.text.starts_with("contract,notifications,acknowledged,"),
        "{}",
        csv.text
    );
    assert!(csv.text.contains("\r\nacme,1,1,1.0000,"), "{}", csv.text);

    // ---- What callees hear, playable: scoped like the data ----
    let wav = |r: &Resp| {
        r.status == 200
            && r.headers["content-type"] == "audio/wav"
            && r.text.as_bytes().starts_with(b"RIFF")
            && r.text.len() > 2000
    };
    let r = op.get(&s, &format!("/v1/notifications/{n_acme}/audio"));
    assert!(wav(&r), "{} {:?}", r.status, r.headers);
    assert!(wav(
        &cu.get(&s, &format!("/v1/notifications/{n_acme}/audio"))
    ));
    assert_eq!(
        cu.get(&s, &format!("/v1/notifications/{n_beta}/audio"))
            .status,
        404,
        "another contract's message"
    );
    assert_eq!(
        req(
            &s,
            "GET",
            &format!("/v1/notifications/{n_acme}/audio"),
            &[],
            None
        )
        .status,
        401
    );
    assert!(wav(&op.get(&s, "/v1/contracts/acme/phrases/goodbye")));
    assert_eq!(op.get(&s, "/v1/contracts/acme/phrases/nosuch").status, 404);
    assert_eq!(cu.get(&s, "/v1/contracts/acme/phrases/goodbye").status, 403);
    let page = op.get(&s, &format!("/console/notifications/{n_acme}"));
    assert!(
        page.text
            .contains(&format!("src=\"/v1/notifications/{n_acme}/audio\"")),
        "{}",
        page.text
    );
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("media-src 'self'"));

    // ---- Contracts: who is reachable now ----
    let r = op.get(&s, "/v1/contracts/acme/reachable");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["reachable_now"], json!(["Bob"]), "{}", r.text);
    assert!(r.json()["contacts"][0]["change_ms"].is_null(), "24/7");
    assert_eq!(cu.get(&s, "/v1/contracts/acme/reachable").status, 403);
    let c = op.get(&s, "/console/contracts");
    assert!(
        c.text.contains("class=\"reach\"")
            && c.text.contains("class=\"reachable-now\">Bob<")
            && c.text.contains("data-phrase=\"goodbye\""),
        "{}",
        c.text
    );

    // ---- Acknowledge for someone: operators only, on a call ----
    let ack = format!("/v1/incidents/{inc_acme}/acknowledge");
    let r = cu.post(&s, &ack, json!({"by": "Bob"}));
    assert_eq!(r.status, 403, "{}", r.text);
    let r = op.post(&s, &ack, json!({"by": "Bob"}));
    assert_eq!(r.status, 409, "pending: nobody is called yet: {}", r.text);
    let r = op.post(
        &s,
        &format!("/v1/notifications/{n_acme}/acknowledge"),
        json!({"by": "Bob"}),
    );
    assert_eq!(r.status, 409, "ended: {}", r.text);
    let r = req(
        &s,
        "POST",
        &format!("/v1/notifications/{n_acme}/acknowledge"),
        &[("cookie", &op.cookie)],
        Some(json!({"by": "Bob"})),
    );
    assert_eq!(r.status, 403, "no CSRF token: {}", r.text);

    // ---- The wall display: no controls ----
    let w = op.get(&s, "/console?wall=1");
    assert!(
        w.text.contains("<body class=\"wall\">") && !w.text.contains("id=\"signout\""),
        "{}",
        w.text
    );
    assert!(op.get(&s, "/console").text.contains("id=\"signout\""));

    // ---- Sign-out ends the session ----
    let r = req(
        &s,
        "POST",
        "/console/logout",
        &[("cookie", &op.cookie)],
        Some(json!({})),
    );
    assert_eq!(r.status, 403, "sign-out needs the CSRF token too");
    assert_eq!(op.post(&s, "/console/logout", json!({})).status, 204);
    assert_eq!(op.get(&s, "/console/api/board").status, 401);
}

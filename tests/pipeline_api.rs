//! Bad input to the pipeline's HTTP side of a real `callout serve`:
//! malformed JSON, a batch with one bad alert, unknown contracts, token
//! scopes, forged and replayed gateway webhooks, silences, incident
//! filters and a person closing an incident while it calls.

mod common;

use std::time::{Duration, Instant};

use common::scratch;
use common::serve::{copy_prompts, Serve, TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOTIFY_ONLY: &str = "notify-only-token";
/// An intake token bound to contract `acme` (a customer's monitoring).
const ACME_INTAKE: &str = "acme-intake-token";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Any request: method, path, token, raw body, extra headers.
fn req(
    s: &Serve,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, Value) {
    let c = reqwest::blocking::Client::new();
    let url = format!("{}{path}", s.base);
    let mut r = match method {
        "POST" => c.post(url),
        "DELETE" => c.delete(url),
        _ => c.get(url),
    };
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if !body.is_empty() {
        r = r
            .header("content-type", "application/json")
            .body(body.to_vec());
    }
    let resp = r.send().unwrap();
    let st = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v: Value = resp.json().unwrap_or(Value::Null);
    if st >= 400 {
        assert!(ct.contains("problem+json"), "{st} {ct} {v}");
    }
    (st, v)
}

fn event(contract: &str, host: &str, key: &str, action: &str) -> Value {
    json!({"event_action": action, "dedup_key": key, "routing_key": contract,
           "payload": {"summary": format!("{host} down"), "source": host, "severity": "critical"}})
}

fn incidents(s: &Serve, query: &str) -> Vec<Value> {
    let (st, v) = s
        .http("GET", &format!("/v1/incidents?{query}"), None)
        .unwrap();
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sign(id: &str, ts: i64, body: &str) -> String {
    callout::service::webhook::sign(&[SECRET.to_string()], id, ts, body)
}

#[test]
fn bad_input_over_http_is_refused_clearly_and_nothing_is_lost_or_doubled() {
    let tmp = scratch("pipeline-api");
    let dir = tmp.as_path();
    copy_prompts(dir);
    // A callee that never answers: the INVITE is swallowed, so the
    // escalation runs until a person closes the incident.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_uri = format!("sip:bob@{}", silent.local_addr().unwrap());
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/acme.toml"),
        "contract = \"acme\"\nname = \"ACME\"\nlanguage = \"en\"\n\
         [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"sip:bob@127.0.0.1:9\"\n[message]\ntext = \"Alert on {host}.\"\n\
         [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n[pipeline]\nwait = \"1h\"\n\
         [[pipeline.routes]]\nmatch = ['host=~\"acme-[a-z]+-[0-9]+\"']\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("dialplans/fast.toml"),
        format!(
            "contract = \"fast\"\nname = \"Fast\"\nlanguage = \"en\"\n\
             [escalation]\nrounds = 1\nring_timeout = \"60s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"Bob\"\nuri = \"{silent_uri}\"\n[message]\ntext = \"Alert on {{host}}.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n[pipeline]\nwait = \"0s\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("dialplans/plain.toml"),
        common::serve::plan("plain", "sip:bob@127.0.0.1:9", None, "text = \"x\""),
    )
    .unwrap();
    let s = Serve::start(
        dir,
        &format!(
            "[[tokens]]\nname = \"n\"\nsha256 = \"{}\"\nscopes = [\"notify\"]\n\
             [[tokens]]\nname = \"acme-monitoring\"\nsha256 = \"{}\"\nscopes = [\"intake\"]\ncontracts = [\"acme\"]\n\
             [webhooks]\nsecrets = [\"{SECRET}\"]\n",
            hex(NOTIFY_ONLY),
            hex(ACME_INTAKE)
        ),
        "44100-44199",
    );
    let am = "/v1/intake/alertmanager";

    // Malformed JSON: 4xx naming line and column.
    let (st, v) = req(
        &s,
        "POST",
        am,
        Some(TOKEN),
        b"{\n  \"alerts\": [\n    {,}\n",
        &[],
    );
    assert!((400..500).contains(&st), "{st} {v}");
    let detail = v["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("line 3") && detail.contains("column"),
        "{v}"
    );

    // One bad alert of three: 202, two accepted, the bad one named.
    let batch = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "HostDown", "host": "web-01", "contract": "acme"}},
        {"status": "firing", "labels": "not an object"},
        {"status": "firing", "labels": {"alertname": "HostDown", "host": "web-02", "contract": "acme"}}
    ]});
    let (st, v) = req(
        &s,
        "POST",
        am,
        Some(TOKEN),
        batch.to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["accepted"].as_array().unwrap().len(), 2, "{v}");
    let rej = v["rejected"].as_array().unwrap();
    assert_eq!(rej.len(), 1, "{v}");
    assert_eq!(rej[0]["index"], 1, "{v}");
    assert!(
        rej[0]["field"].as_str().unwrap().starts_with("alerts[1]"),
        "{v}"
    );
    wait_for("two incidents", Duration::from_secs(10), || {
        incidents(&s, "contract=acme").len() == 2
    });

    // Unknown contract; a contract without [pipeline].
    let (st, v) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(TOKEN),
        event("nosuch", "h", "k1", "trigger").to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("nosuch"), "{v}");
    let (st, v) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(TOKEN),
        event("plain", "h", "k1", "trigger").to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("no [pipeline] section"), "{v}");

    // Scopes: a notify-only token may not post alerts; no token at all.
    let body = event("acme", "web-03", "k3", "trigger").to_string();
    let (st, _) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(NOTIFY_ONLY),
        body.as_bytes(),
        &[],
    );
    assert_eq!(st, 403);
    let (st, _) = req(&s, "POST", "/v1/intake/events", None, body.as_bytes(), &[]);
    assert_eq!(st, 401);
    assert_eq!(incidents(&s, "host=web-03").len(), 0);

    // Incident filters.
    let (st, v) = s.http("GET", "/v1/incidents?state=bogus", None).unwrap();
    assert_eq!(st, 422, "{v}");
    assert_eq!(incidents(&s, "state=pending&contract=acme").len(), 2);
    assert_eq!(incidents(&s, "state=closed").len(), 0);
    assert_eq!(incidents(&s, "host=web-02").len(), 1);
    assert_eq!(
        incidents(
            &s,
            "contract=acme&host=web-02&state=pending&since=0&limit=1"
        )
        .len(),
        1
    );
    assert_eq!(incidents(&s, "host=web-02' OR '1'='1").len(), 0);
    let page1 = incidents(&s, "contract=acme&limit=1");
    let (_, v) = s
        .http("GET", "/v1/incidents?contract=acme&limit=1", None)
        .unwrap();
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let page2 = incidents(&s, &format!("contract=acme&limit=1&cursor={cursor}"));
    assert_eq!(page2.len(), 1);
    assert_ne!(page1[0]["id"], page2[0]["id"]);

    // Gateway webhooks: forged, unsigned and stale are 401 and leave no
    // line; a genuine one replayed is recorded once.
    let inc = &incidents(&s, "host=web-01")[0];
    let (id, ticket) = (inc["id"].as_str().unwrap(), inc["ticket"].as_str().unwrap());
    let ev = json!({"type": "call.ringing", "ticket": ticket, "contract": "acme",
                    "notification": "n_test", "data": {"attempt": 7}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let wh = "/v1/pipeline/webhook";
    let hdrs = |id: &str, ts: i64, sig: String| {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ]
    };
    let forged =
        callout::service::webhook::sign(&["whsec_c2VjcmV0c2VjcmV0".to_string()], "ev_f", now, &ev);
    for (h, what) in [
        (hdrs("ev_f", now, forged), "forged"),
        (hdrs("ev_f", now, String::new()), "unsigned"),
        (
            hdrs("ev_f", now - 3600, sign("ev_f", now - 3600, &ev)),
            "stale",
        ),
        (
            hdrs("ev_f", now, sign("ev_other", now, &ev)),
            "signed for another id",
        ),
        (vec![], "no headers"),
    ] {
        let (st, v) = req(&s, "POST", wh, None, ev.as_bytes(), &h);
        assert_eq!(st, 401, "{what}: {v}");
    }
    let count_ringing = || {
        let (_, full) = s.http("GET", &format!("/v1/incidents/{id}"), None).unwrap();
        full["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["text"] == "ringing (attempt 7)")
            .count()
    };
    assert_eq!(count_ringing(), 0);
    let (st, v) = req(
        &s,
        "POST",
        wh,
        None,
        ev.as_bytes(),
        &hdrs("ev_g", now, sign("ev_g", now, &ev)),
    );
    assert_eq!((st, v["duplicate"].clone()), (200, json!(false)), "{v}");
    let (st, v) = req(
        &s,
        "POST",
        wh,
        None,
        ev.as_bytes(),
        &hdrs("ev_g", now + 1, sign("ev_g", now + 1, &ev)),
    );
    assert_eq!((st, v["duplicate"].clone()), (200, json!(true)), "{v}");
    assert_eq!(count_ringing(), 1);

    // Silences: validation names what is wrong.
    let ends = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for (body, field) in [
        (
            json!({"contract": "acme", "matchers": ["host=\"a\"", "bad matcher"], "ends_at": ends, "comment": "x"}),
            "matchers[1]",
        ),
        (
            json!({"contract": "acme", "matchers": ["host=\"a\""], "starts_at": ends, "ends_at": past, "comment": "x"}),
            "ends_at",
        ),
        (
            json!({"contract": "acme", "matchers": ["host=\"a\""], "ends_at": ends, "comment": "  "}),
            "comment",
        ),
        (
            json!({"contract": "acme", "matchers": ["host=\"a\""], "ends_at": ends}),
            "comment",
        ),
        (
            json!({"contract": "nosuch", "matchers": ["host=\"a\""], "ends_at": ends, "comment": "x"}),
            "contract",
        ),
        (
            json!({"contract": "acme", "matchers": [], "ends_at": ends, "comment": "x"}),
            "matchers",
        ),
    ] {
        let (st, v) = req(
            &s,
            "POST",
            "/v1/silences",
            Some(TOKEN),
            body.to_string().as_bytes(),
            &[],
        );
        assert_eq!(st, 422, "{body}: {v}");
        assert!(
            v.to_string().contains(field),
            "{body} should name {field}: {v}"
        );
    }
    let (st, v) = req(
        &s,
        "POST",
        "/v1/silences",
        Some(TOKEN),
        json!({"contract": "acme", "matchers": ["host=\"web-09\""], "duration": "1h",
               "comment": "maintenance"})
        .to_string()
        .as_bytes(),
        &[],
    );
    assert_eq!(st, 201, "{v}");
    let sid = v["id"].as_str().unwrap().to_string();
    let (_, v) = s.http("GET", "/v1/silences", None).unwrap();
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == sid.as_str()));
    let silenced = event("acme", "web-09", "k9", "trigger").to_string();
    let (st, _) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(TOKEN),
        silenced.as_bytes(),
        &[],
    );
    assert_eq!(st, 202);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(incidents(&s, "host=web-09").len(), 0, "silenced");
    let (st, _) = req(
        &s,
        "DELETE",
        &format!("/v1/silences/{sid}"),
        Some(TOKEN),
        b"",
        &[],
    );
    assert_eq!(st, 204);
    let (st, _) = req(
        &s,
        "DELETE",
        &format!("/v1/silences/{sid}"),
        Some(TOKEN),
        b"",
        &[],
    );
    assert_eq!(st, 404);
    let (st, _) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(TOKEN),
        silenced.as_bytes(),
        &[],
    );
    assert_eq!(st, 202);
    wait_for(
        "the same alert opens an incident once unsilenced",
        Duration::from_secs(10),
        || incidents(&s, "host=web-09").len() == 1,
    );

    // A person closes an incident whose escalation is running: the call
    // is cancelled, the incident closed; a second close is 409.
    let (st, _) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(TOKEN),
        event("fast", "db-01", "kd", "trigger")
            .to_string()
            .as_bytes(),
        &[],
    );
    assert_eq!(st, 202);
    let mut inc = Value::Null;
    wait_for("the escalation runs", Duration::from_secs(15), || {
        inc = incidents(&s, "contract=fast")
            .first()
            .cloned()
            .unwrap_or_default();
        inc["state"] == "notifying" && inc["notification"].is_string()
    });
    let iid = inc["id"].as_str().unwrap().to_string();
    let nid = inc["notification"].as_str().unwrap().to_string();
    let (st, v) = s
        .http(
            "POST",
            &format!("/v1/incidents/{iid}/close"),
            Some(json!({})),
        )
        .unwrap();
    assert_eq!(st, 200, "{v}");
    let (st, _) = s
        .http(
            "POST",
            &format!("/v1/incidents/{iid}/close"),
            Some(json!({})),
        )
        .unwrap();
    assert_eq!(st, 409);
    let (st, _) = s
        .http("POST", "/v1/incidents/in_nosuch/close", Some(json!({})))
        .unwrap();
    assert_eq!(st, 404);
    assert_eq!(incidents(&s, "contract=fast")[0]["state"], "closed");
    let (_, n) = s
        .http("GET", &format!("/v1/notifications/{nid}"), None)
        .unwrap();
    assert_eq!(n["cancel_reason"], "closed by t", "{n}");
    // The INVITE has had no answer at all, so the call can only end
    // when its transaction times out (Timer B, 32 s).
    s.wait_state(&nid, &["cancelled"], Duration::from_secs(60));

    // An intake token bound to `acme` posts for acme, and for no other
    // contract: 403 naming it, and nothing of the request is stored (not
    // even its acme alert).
    let (st, v) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(ACME_INTAKE),
        event("acme", "web-10", "k10", "trigger")
            .to_string()
            .as_bytes(),
        &[],
    );
    assert_eq!(st, 202, "{v}");
    wait_for(
        "the bound token's acme alert",
        Duration::from_secs(10),
        || incidents(&s, "contract=acme&host=web-10").len() == 1,
    );
    let mixed = json!({"version": "4", "status": "firing", "receiver": "callout", "groupKey": "g",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "Down", "instance": "web-11", "contract": "acme"},
             "annotations": {}, "startsAt": "2026-11-30T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"},
            {"status": "firing", "labels": {"alertname": "Down", "instance": "web-12", "contract": "fast"},
             "annotations": {}, "startsAt": "2026-11-30T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]});
    let (st, v) = req(
        &s,
        "POST",
        am,
        Some(ACME_INTAKE),
        mixed.to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("\"fast\""),
        "{v}"
    );
    let (st, v) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(ACME_INTAKE),
        event("fast", "web-13", "k13", "trigger")
            .to_string()
            .as_bytes(),
        &[],
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("\"fast\""),
        "{v}"
    );
    // The refused requests left nothing behind: the acme alert that came
    // with them is not stored either.
    std::thread::sleep(Duration::from_millis(300));
    for host in ["web-11", "web-12", "web-13"] {
        assert_eq!(incidents(&s, &format!("host={host}")).len(), 0, "{host}");
    }
    // Routing rules: alerts naming no contract go where a contract's
    // regular expression says; one no route matches is named, not
    // dropped, and a body of only those is a 422.
    let unrouted =
        |host: &str| json!({"status": "firing", "labels": {"alertname": "Down", "host": host}});
    let batch = json!({"version": "4", "status": "firing",
        "alerts": [unrouted("acme-db-7"), unrouted("globex-db-1")]});
    let (st, v) = req(
        &s,
        "POST",
        am,
        Some(TOKEN),
        batch.to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["accepted"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["rejected"][0]["index"], 1, "{v}");
    assert_eq!(v["rejected"][0]["field"], "contract", "{v}");
    assert!(
        v["rejected"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("[[pipeline.routes]]"),
        "{v}"
    );
    wait_for("the routed incident", Duration::from_secs(10), || {
        incidents(&s, "contract=acme&host=acme-db-7").len() == 1
    });
    // Anchored: a host that only contains the pattern is not routed.
    let batch = json!({"version": "4", "status": "firing",
        "alerts": [unrouted("x-acme-db-7-y")]});
    let (st, v) = req(
        &s,
        "POST",
        am,
        Some(TOKEN),
        batch.to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("no contract named"), "{v}");
    // Events too, and a token bound to acme may post what routes to acme.
    let ev = json!({"event_action": "trigger", "dedup_key": "r1",
        "payload": {"summary": "down", "source": "acme-web-3", "severity": "critical"}});
    let (st, v) = req(
        &s,
        "POST",
        "/v1/intake/events",
        Some(ACME_INTAKE),
        ev.to_string().as_bytes(),
        &[],
    );
    assert_eq!(st, 202, "{v}");
    wait_for("the routed event", Duration::from_secs(10), || {
        incidents(&s, "contract=acme&host=acme-web-3").len() == 1
    });
    drop(silent);
}

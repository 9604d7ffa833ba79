use super::*;

const NOW: i64 = 1_700_000_000_000;

/// What Alertmanager 0.25 posts for a group with one firing and one
/// resolved alert (`send_resolved: true`).
const AM_FIRING_RESOLVED: &str = r#"{
  "receiver": "callout",
  "status": "firing",
  "alerts": [
    {
      "status": "firing",
      "labels": {
        "alertname": "NodeDown",
        "contract": "acme",
        "instance": "db-01.acme.example:9100",
        "job": "node",
        "severity": "critical"
      },
      "annotations": {
        "description": "db-01 has not answered a scrape for 2 minutes.",
        "summary": "db-01 is down"
      },
      "startsAt": "2024-05-01T10:00:00.123Z",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
      "fingerprint": "8f2a0c6e1d3b4a59"
    },
    {
      "status": "resolved",
      "labels": {
        "alertname": "DiskFull",
        "contract": "acme",
        "instance": "10.0.0.7:9100",
        "job": "node",
        "mountpoint": "/var",
        "severity": "warning"
      },
      "annotations": {
        "summary": "/var on 10.0.0.7 is 95% full"
      },
      "startsAt": "2024-05-01T09:40:00+09:00",
      "endsAt": "2024-05-01T09:55:00+09:00",
      "generatorURL": "http://prometheus:9090/graph?g0.expr=disk",
      "fingerprint": "0a1b2c3d4e5f6071"
    }
  ],
  "groupLabels": {"job": "node"},
  "commonLabels": {"contract": "acme", "job": "node"},
  "commonAnnotations": {},
  "externalURL": "http://alertmanager:9093",
  "version": "4",
  "groupKey": "{}/{contract=\"acme\"}:{job=\"node\"}",
  "truncatedAlerts": 0
}"#;

fn am(body: &str) -> Batch {
    alertmanager(body.as_bytes(), NOW, None).expect("body accepted")
}

fn ok(b: &Batch, i: usize) -> &Alert {
    b.items[i].as_ref().expect("item parsed")
}

fn err(b: &Batch, i: usize) -> &ItemError {
    b.items[i].as_ref().expect_err("item refused")
}

#[test]
fn alertmanager_firing_and_resolved() {
    let b = am(AM_FIRING_RESOLVED);
    assert_eq!(b.items.len(), 2);
    assert!(b.acks.is_empty());

    let a = ok(&b, 0);
    assert_eq!(a.contract, "acme");
    assert_eq!(a.source, Source::Alertmanager);
    assert_eq!(a.status, Status::Firing);
    assert_eq!(a.key, "8f2a0c6e1d3b4a59");
    assert_eq!(a.host, "db-01.acme.example");
    assert_eq!(a.name, "NodeDown");
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.summary, "db-01 is down");
    assert_eq!(a.starts_ms, Some(1_714_557_600_123));
    assert_eq!(a.received_ms, NOW);
    assert!(a.id.starts_with("al_"));
    assert_eq!(a.labels["job"], "node");
    assert_eq!(a.labels["instance"], "db-01.acme.example:9100");
    assert_eq!(
        a.labels["annotation.description"],
        "db-01 has not answered a scrape for 2 minutes."
    );
    assert!(a.labels["meta.generatorURL"].starts_with("http://prometheus:9090/"));
    assert_eq!(a.labels["meta.receiver"], "callout");
    // The zero endsAt of a firing alert is no end.
    assert!(!a.labels.contains_key("meta.endsAt"));

    let r = ok(&b, 1);
    assert_eq!(r.status, Status::Resolved);
    assert_eq!(r.host, "10.0.0.7");
    assert_eq!(r.severity, Severity::Warning);
    assert_eq!(r.starts_ms, Some(1_714_524_000_000));
    assert_eq!(r.labels["meta.endsAt"], "2024-05-01T00:55:00.000Z");
    assert_eq!(r.labels["mountpoint"], "/var");
    assert_ne!(a.id, r.id);
}

#[test]
fn zero_starts_at_is_none_and_missing_status_uses_the_group() {
    let body = r#"{"version":"4","status":"resolved","alerts":[{"labels":{"alertname":"X","contract":"c"},
        "startsAt":"0001-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z"}]}"#;
    let b = am(body);
    let a = ok(&b, 0);
    assert_eq!(a.starts_ms, None);
    assert_eq!(a.status, Status::Resolved);
    // No fingerprint: a stable hash of the labels.
    assert!(a.key.starts_with("lh-") && a.key.len() == 3 + 32);
    assert_eq!(a.key, ok(&am(body), 0).key);
    let other = am(&body.replace("\"X\"", "\"Y\""));
    assert_ne!(a.key, ok(&other, 0).key);
    // No annotations: the alertname is the summary; no host.
    assert_eq!(a.summary, "X");
    assert_eq!(a.host, "");
}

#[test]
fn instance_ports_schemes_and_ipv6() {
    assert_eq!(instance_host("db-01:9100"), "db-01");
    assert_eq!(instance_host("10.0.0.5:9100"), "10.0.0.5");
    assert_eq!(instance_host("[2001:db8::1]:9100"), "2001:db8::1");
    assert_eq!(instance_host("2001:db8::1"), "2001:db8::1");
    assert_eq!(
        instance_host("https://probe@shop.example:443/health?x=1"),
        "shop.example"
    );
    assert_eq!(instance_host("db-01"), "db-01");
    assert_eq!(instance_host("db-01:http"), "db-01:http");
    assert_eq!(instance_host("[::1"), "[::1");
    assert_eq!(instance_host(""), "");
}

#[test]
fn host_label_order() {
    let one = |labels: &str| {
        let body = format!(
            r#"{{"version":"4","status":"firing","alerts":[{{"labels":{{"contract":"c",{labels}}}}}]}}"#
        );
        ok(&am(&body), 0).host.clone()
    };
    assert_eq!(one(r#""host":"h1","instance":"i:1","nodename":"n""#), "h1");
    assert_eq!(one(r#""instance":"i:1","hostname":"hn""#), "i");
    assert_eq!(one(r#""instance":":9100","hostname":"hn""#), "hn");
    assert_eq!(one(r#""node":"worker-3""#), "worker-3");
    assert_eq!(one(r#""nodename":"n""#), "n");
}

#[test]
fn one_alert_of_three_without_a_contract() {
    let body = r#"{"version":"4","status":"firing","commonLabels":{},"alerts":[
        {"status":"firing","labels":{"alertname":"A","contract":"acme","host":"a"}},
        {"status":"firing","labels":{"alertname":"B","host":"b"}},
        {"status":"firing","labels":{"alertname":"C","contract":"globex","host":"c"}}]}"#;
    let b = am(body);
    assert_eq!(b.items.len(), 3);
    assert_eq!(ok(&b, 0).contract, "acme");
    let e = err(&b, 1);
    assert_eq!(e.index, 1);
    assert_eq!(e.field, "alerts[1].labels.contract");
    assert!(e.detail.starts_with("missing"), "{}", e.detail);
    assert_eq!(ok(&b, 2).contract, "globex");
    assert_eq!(b.alerts().count(), 2);
    assert_eq!(b.errors().count(), 1);

    // The route's default contract fills the gap; a label still wins.
    let b = alertmanager(body.as_bytes(), NOW, Some("monitoring")).unwrap();
    assert_eq!(ok(&b, 0).contract, "acme");
    assert_eq!(ok(&b, 1).contract, "monitoring");
}

#[test]
fn common_labels_give_the_contract() {
    let body = r#"{"version":"4","status":"firing","commonLabels":{"contract":"acme"},
        "alerts":[{"labels":{"alertname":"A","contract":"  "}}]}"#;
    assert_eq!(ok(&am(body), 0).contract, "acme");
}

#[test]
fn wrong_types_name_the_field() {
    let body = r#"{"version":"4","status":"firing","alerts":[
        {"labels":{"alertname":"A","contract":"c","severity":3}},
        {"labels":["contract","c"]},
        "not an alert",
        {"labels":{"contract":"c"},"status":"burning"},
        {"labels":{"contract":"c"},"startsAt":"yesterday"},
        {"labels":{"contract":"c"},"fingerprint":12},
        {"labels":{"contract":"c","app.kubernetes.io/name":7}},
        {"labels":{"contract":"c"},"annotations":{"summary":null}}]}"#;
    let b = am(body);
    let fields: Vec<(&str, &str)> = b
        .errors()
        .map(|e| (e.field.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "alerts[0].labels.severity",
                "expected a string, got a number"
            ),
            (
                "alerts[1].labels",
                "expected an object of strings, got an array"
            ),
            ("alerts[2]", "expected an object, got a string"),
            (
                "alerts[3].status",
                "\"burning\" is neither \"firing\" nor \"resolved\""
            ),
            (
                "alerts[4].startsAt",
                "\"yesterday\" is not an RFC 3339 time"
            ),
            ("alerts[5].fingerprint", "expected a string, got a number"),
            (
                "alerts[6].labels[\"app.kubernetes.io/name\"]",
                "expected a string, got a number"
            ),
            (
                "alerts[7].annotations.summary",
                "expected a string, got null"
            ),
        ]
    );
    assert_eq!(
        b.errors().map(|e| e.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
}

#[test]
fn unusable_bodies() {
    let e = alertmanager(b"{\"version\": \"4\",\n  \"alerts\": [,]}", NOW, None).unwrap_err();
    assert_eq!(e.field, BODY);
    assert!(e.detail.starts_with("not JSON: "), "{}", e.detail);
    assert!(e.detail.ends_with("(line 2, column 14)"), "{}", e.detail);

    let e = alertmanager(b"", NOW, None).unwrap_err();
    assert!(e.detail.contains("line 1, column 0"), "{}", e.detail);
    let e = alertmanager(b"\xff\xfe{}", NOW, None).unwrap_err();
    assert!(e.detail.starts_with("not JSON"), "{}", e.detail);
    let e = alertmanager(b"[1,2]", NOW, None).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.detail.as_str()),
        (BODY, "expected a JSON object, got an array")
    );
    let e = alertmanager(br#"{"version":"3","alerts":[]}"#, NOW, None).unwrap_err();
    assert_eq!(e.field, "version");
    let e = alertmanager(br#"{"version":4,"alerts":[]}"#, NOW, None).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.detail.as_str()),
        ("version", "expected a string, got a number")
    );
    let e = alertmanager(br#"{"version":"4","status":"firing"}"#, NOW, None).unwrap_err();
    assert_eq!((e.field.as_str(), e.detail.as_str()), ("alerts", "missing"));
    let e = alertmanager(br#"{"alerts":{}}"#, NOW, None).unwrap_err();
    assert_eq!(e.field, "alerts");
    let e = alertmanager(br#"{"alerts":[],"commonLabels":{"a":1}}"#, NOW, None).unwrap_err();
    assert_eq!(e.field, "commonLabels.a");
    let e = alertmanager(br#"{"alerts":[],"status":"maybe"}"#, NOW, None).unwrap_err();
    assert_eq!(e.field, "status");
    // Deep nesting is refused by serde_json's depth limit, not the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(alertmanager(deep.as_bytes(), NOW, None).is_err());
    // Grafana's legacy alerting gets a hint.
    let e = grafana(br#"{"ruleName":"x","evalMatches":[]}"#, NOW, None).unwrap_err();
    assert!(e.detail.contains("legacy"), "{}", e.detail);
    // Empty batches are fine.
    assert!(am(r#"{"version":"4","alerts":[]}"#).items.is_empty());
}

#[test]
fn japanese_text_survives() {
    let body = r#"{"version":"4","status":"firing","alerts":[{"status":"firing",
        "labels":{"alertname":"ディスク容量","contract":"yamato","host":"web-01.例え.jp","severity":"重大"},
        "annotations":{"summary":"web-01 のディスク使用率が 95% を超えました","description":"至急確認してください"},
        "startsAt":"2024-05-01T19:00:00+09:00","fingerprint":"f00d"}]}"#;
    let a = ok(&am(body), 0).clone();
    assert_eq!(a.summary, "web-01 のディスク使用率が 95% を超えました");
    assert_eq!(a.name, "ディスク容量");
    assert_eq!(a.host, "web-01.例え.jp");
    // An unknown word is a warning, never silence.
    assert_eq!(a.severity, Severity::Warning);
    assert_eq!(a.labels["annotation.description"], "至急確認してください");
    assert_eq!(a.starts_ms, Some(1_714_557_600_000));
}

#[test]
fn label_bounds() {
    let labels: Vec<String> = (0..MAX_LABELS).map(|i| format!("\"l{i}\":\"v\"")).collect();
    let body = |labels: &str| {
        format!(
            r#"{{"version":"4","status":"firing","alerts":[{{"labels":{{"contract":"c",{labels}}}}},{{"labels":{{"contract":"c"}}}}]}}"#
        )
    };
    // 64 of its own plus the contract: refused; the other alert passes.
    let b = am(&body(&labels.join(",")));
    let e = err(&b, 0);
    assert_eq!(e.field, "alerts[0].labels");
    assert!(e.detail.contains("more than 64"), "{}", e.detail);
    assert!(b.items[1].is_ok());
    // 63 + contract = 64: fine.
    assert!(am(&body(&labels[..63].join(","))).items[0].is_ok());
    // Labels and annotations count together.
    let annotated = format!(
        r#"{{"version":"4","status":"firing","alerts":[{{"labels":{{"contract":"c",{}}},"annotations":{{"summary":"s","description":"d"}}}}]}}"#,
        labels[..62].join(",")
    );
    assert_eq!(err(&am(&annotated), 0).field, "alerts[0].labels");

    let long = "x".repeat(MAX_VALUE + 1);
    let e = err(&am(&body(&format!("\"job\":\"{long}\""))), 0).clone();
    assert_eq!(e.field, "alerts[0].labels.job");
    assert_eq!(e.detail, "1025 bytes, more than 1024");
    // An annotation may be longer, up to MAX_TEXT.
    let ann = format!(
        r#"{{"version":"4","status":"firing","alerts":[{{"labels":{{"contract":"c"}},"annotations":{{"description":"{long}"}}}}]}}"#
    );
    assert!(am(&ann).items[0].is_ok());
    let name = "n".repeat(MAX_NAME + 1);
    let e = err(&am(&body(&format!("\"{name}\":\"v\""))), 0).clone();
    assert!(e.field.ends_with('…') && e.field.len() < 100, "{}", e.field);
    assert!(e.detail.contains("label name of 129 bytes"), "{}", e.detail);
    let e = err(&am(&body("\"\":\"v\"")), 0).clone();
    assert_eq!(e.field, "alerts[0].labels[\"\"]");
}

#[test]
fn priority_is_a_severity_too() {
    let body = r#"{"version":"4","status":"firing","alerts":[{"labels":{"contract":"c","priority":"P1"}}]}"#;
    assert_eq!(ok(&am(body), 0).severity, Severity::Critical);
}

/// The body Grafana 10/11 documents for its webhook contact point.
const GRAFANA: &str = r#"{
  "receiver": "callout",
  "status": "firing",
  "orgId": 1,
  "alerts": [
    {
      "status": "firing",
      "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1", "contract": "acme", "host": "app-01"},
      "annotations": {"description": "The system has high memory usage", "runbook_url": "https://myrunbook.com/runbook/1234", "summary": "This alert was triggered for zone us-1"},
      "startsAt": "2021-10-12T09:51:03.157076+02:00",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
      "fingerprint": "c6eadffa33fcdf37",
      "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
      "dashboardURL": "",
      "panelURL": "",
      "values": {"B": 44.23943737541908, "C": 1}
    },
    {
      "status": "firing",
      "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1", "contract": "acme", "instance": "app-02:9100"},
      "annotations": {"description": "The system has high CPU usage", "runbook_url": "https://myrunbook.com/runbook/1234", "summary": "This alert was triggered for zone eu-1"},
      "startsAt": "2021-10-12T09:56:03.157076+02:00",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
      "fingerprint": "bc97ff14869b13e3",
      "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1",
      "dashboardURL": "",
      "panelURL": "",
      "values": null,
      "valueString": "[ metric='' labels={} value=14151.331895396988 ]"
    }
  ],
  "groupLabels": {},
  "commonLabels": {"team": "blue", "contract": "acme"},
  "commonAnnotations": {},
  "externalURL": "https://play.grafana.org/",
  "version": "1",
  "groupKey": "{}:{}",
  "truncatedAlerts": 0,
  "title": "[FIRING:2]  (blue)",
  "state": "alerting",
  "message": "**Firing**\n\nLabels:\n - alertname = T2\n"
}"#;

#[test]
fn grafana_documented_body() {
    let b = grafana(GRAFANA.as_bytes(), NOW, None).unwrap();
    assert_eq!(b.items.len(), 2);
    let a = ok(&b, 0);
    assert_eq!(a.source, Source::Grafana);
    assert_eq!(a.key, "c6eadffa33fcdf37");
    assert_eq!(a.host, "app-01");
    assert_eq!(a.name, "High memory usage");
    assert_eq!(a.summary, "This alert was triggered for zone us-1");
    assert_eq!(a.starts_ms, Some(1_634_025_063_157));
    assert_eq!(a.labels["meta.values"], r#"{"B":44.23943737541908,"C":1}"#);
    assert!(a.labels["meta.silenceURL"].contains("matchers="));
    assert!(!a.labels.contains_key("meta.dashboardURL"));
    let c = ok(&b, 1);
    assert_eq!(c.host, "app-02");
    assert_eq!(
        c.labels["meta.valueString"],
        "[ metric='' labels={} value=14151.331895396988 ]"
    );
    assert!(!c.labels.contains_key("meta.values"));
    // Grafana's version is "1"; Alertmanager's parser refuses it.
    assert_eq!(
        alertmanager(GRAFANA.as_bytes(), NOW, None)
            .unwrap_err()
            .field,
        "version"
    );
}

// ---- events ------------------------------------------------------------

fn ev(body: &str) -> Batch {
    events(body.as_bytes(), NOW, None).expect("body accepted")
}

/// PagerDuty's own example trigger, with callout's contract as routing key.
const PD_TRIGGER: &str = r#"{
  "payload": {
    "summary": "DISK at 99% on machine prod-datapipe03.example.com",
    "timestamp": "2015-07-17T08:42:58.315+0000",
    "severity": "critical",
    "source": "prod-datapipe03.example.com",
    "component": "mysql",
    "group": "prod-datapipe",
    "class": "disk",
    "custom_details": {"free space": "1%", "ping time": "1500ms", "load avg": 0.75}
  },
  "routing_key": "acme",
  "dedup_key": "srv01/mysql",
  "event_action": "trigger",
  "client": "Sample Monitoring Service",
  "client_url": "https://monitoring.service.com",
  "links": [{"href": "http://acme.pagerduty.com/example", "text": "An example link."}],
  "images": []
}"#;

#[test]
fn pagerduty_trigger_then_resolve() {
    let b = ev(PD_TRIGGER);
    assert_eq!(b.items.len(), 1);
    let a = ok(&b, 0);
    assert_eq!(a.source, Source::Events);
    assert_eq!(a.contract, "acme");
    assert_eq!(a.status, Status::Firing);
    assert_eq!(a.key, "srv01/mysql");
    assert_eq!(a.host, "prod-datapipe03.example.com");
    assert_eq!(a.name, "disk");
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(
        a.summary,
        "DISK at 99% on machine prod-datapipe03.example.com"
    );
    assert_eq!(a.starts_ms, Some(1_437_122_578_315));
    assert_eq!(a.labels["component"], "mysql");
    assert_eq!(a.labels["service"], "mysql");
    assert_eq!(a.labels["group"], "prod-datapipe");
    assert_eq!(a.labels["event_source"], "prod-datapipe03.example.com");
    assert_eq!(a.labels["event_action"], "trigger");
    assert_eq!(a.labels["free space"], "1%");
    assert_eq!(a.labels["load avg"], "0.75");

    // PagerDuty's resolve carries only the key; ours also the source.
    let b = ev(r#"{"routing_key":"acme","dedup_key":"srv01/mysql","event_action":"resolve"}"#);
    let r = ok(&b, 0);
    assert_eq!(r.status, Status::Resolved);
    assert_eq!(r.key, "srv01/mysql");
    assert_eq!(r.summary, "resolved");
    assert_eq!(r.host, "");
    let b = ev(
        r#"{"routing_key":"acme","dedup_key":"srv01/mysql","event_action":"resolve",
            "payload":{"summary":"DISK ok","source":"prod-datapipe03.example.com","severity":"info"}}"#,
    );
    assert_eq!(ok(&b, 0).host, "prod-datapipe03.example.com");
}

#[test]
fn events_without_dedup_key() {
    let t = r#"{"routing_key":"acme","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"error"}}"#;
    let a = ok(&ev(t), 0).clone();
    assert!(a.key.starts_with("ev-"), "{}", a.key);
    assert_eq!(a.key, ok(&ev(t), 0).key, "stable");
    assert_eq!(a.severity, Severity::Major);
    assert_eq!(a.name, "s");
    let e = ev(r#"{"routing_key":"acme","event_action":"resolve"}"#);
    let e = err(&e, 0);
    assert_eq!(e.field, "dedup_key");
    assert!(e.detail.contains("resolve needs"), "{}", e.detail);
    let e = ev(r#"{"routing_key":"acme","event_action":"acknowledge","dedup_key":" "}"#);
    assert_eq!(err(&e, 0).field, "dedup_key");
}

#[test]
fn acknowledge_is_not_an_alert() {
    let b = ev(r#"{"events":[
          {"routing_key":"acme","event_action":"trigger","dedup_key":"k1","payload":{"summary":"s","source":"h","severity":"warning"}},
          {"routing_key":"acme","event_action":"acknowledge","dedup_key":"k1"},
          {"routing_key":"acme","event_action":"resolve","dedup_key":"k1"}]}"#);
    assert_eq!(b.items.len(), 2);
    assert_eq!(ok(&b, 0).status, Status::Firing);
    assert_eq!(ok(&b, 1).status, Status::Resolved);
    assert_eq!(b.acks.len(), 1);
    let ack = &b.acks[0];
    assert_eq!(ack.index, 1);
    assert_eq!(ack.alert.key, "k1");
    assert_eq!(ack.alert.contract, "acme");
    assert_eq!(ack.alert.summary, "acknowledged");
    assert_eq!(ack.alert.labels["event_action"], "acknowledge");
}

#[test]
fn event_contracts_and_errors() {
    // custom_details.contract beats routing_key; default fills in.
    let b = ev(
        r#"{"routing_key":"rk","event_action":"trigger","payload":{"summary":"s","custom_details":{"contract":"globex","instance":"db:5432"}}}"#,
    );
    assert_eq!(ok(&b, 0).contract, "globex");
    assert_eq!(ok(&b, 0).host, "db");
    let body = r#"{"event_action":"trigger","payload":{"summary":"s","source":"h"}}"#;
    let e = ev(body);
    assert_eq!(err(&e, 0).field, "routing_key");
    let b = events(body.as_bytes(), NOW, Some("acme")).unwrap();
    assert_eq!(ok(&b, 0).contract, "acme");

    let b = ev(r#"{"events":[
          {"routing_key":"acme","event_action":"trigger"},
          {"routing_key":"acme","event_action":"trigger","payload":{"source":"h"}},
          {"routing_key":"acme","event_action":"page","payload":{"summary":"s"}},
          {"routing_key":5,"event_action":"trigger","payload":{"summary":"s"}},
          {"routing_key":"acme","event_action":"trigger","payload":{"summary":"s","timestamp":"17 July"}},
          {"routing_key":"acme","event_action":"trigger","payload":"down"},
          7,
          {"routing_key":"acme","event_action":"trigger","payload":{"summary":"fine"}}]}"#);
    let got: Vec<(usize, &str)> = b.errors().map(|e| (e.index, e.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (0, "events[0].payload"),
            (1, "events[1].payload.summary"),
            (2, "events[2].event_action"),
            (3, "events[3].routing_key"),
            (4, "events[4].payload.timestamp"),
            (5, "events[5].payload"),
            (6, "events[6]"),
        ]
    );
    assert_eq!(ok(&b, 7).summary, "fine");

    let e = events(br#"{"events":{}}"#, NOW, None).unwrap_err();
    assert_eq!(e.field, "events");
    let e = events(br#"{"hello":1}"#, NOW, None).unwrap_err();
    assert_eq!(e.field, "event_action");
    let e = events(b"{\"event_action\": trigger}", NOW, None).unwrap_err();
    assert!(e.detail.contains("line 1, column 20"), "{}", e.detail);
}

#[test]
fn event_details_bounds_and_unicode() {
    let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("\"d{i}\":1")).collect();
    let body = format!(
        r#"{{"routing_key":"acme","event_action":"trigger","payload":{{"summary":"s","custom_details":{{{}}}}}}}"#,
        many.join(",")
    );
    let e = ev(&body);
    assert_eq!(err(&e, 0).field, "payload.custom_details");
    let long = "あ".repeat(MAX_TEXT / 3 + 1);
    let body = format!(
        r#"{{"routing_key":"acme","event_action":"trigger","payload":{{"summary":"{long}"}}}}"#
    );
    let e = ev(&body);
    assert_eq!(err(&e, 0).field, "payload.summary");

    let b = ev(
        r#"{"routing_key":"yamato","event_action":"trigger","dedup_key":"zbx-4711",
            "payload":{"summary":"【障害】web-01 の HTTP 応答がありません","source":"web-01","severity":"critical",
            "component":"nginx","custom_details":{"担当":"運用チーム","nested":{"a":[1,2]}}}}"#,
    );
    let a = ok(&b, 0);
    assert_eq!(a.summary, "【障害】web-01 の HTTP 応答がありません");
    assert_eq!(a.labels["担当"], "運用チーム");
    assert_eq!(a.labels["nested"], r#"{"a":[1,2]}"#);
    assert_eq!(a.name, "nginx");
}

#[test]
fn shipped_fuzz_seeds_parse() {
    // The corpus files double as fixtures: each must be accepted whole.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/intake");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/intake exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let body = &data[1..];
        let batch = match data[0] {
            b'a' => alertmanager(body, NOW, None),
            b'g' => grafana(body, NOW, None),
            b'e' => events(body, NOW, None),
            _ => continue,
        };
        if name.starts_with("bad-") || name.starts_with("regress-") {
            continue;
        }
        let batch = batch.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            batch.errors().next().is_none(),
            "{name}: {:?}",
            batch.errors().collect::<Vec<_>>()
        );
        n += 1;
    }
    assert!(n >= 4, "{n} seeds");
}

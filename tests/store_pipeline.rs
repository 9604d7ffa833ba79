//! The pipeline's tables through `Store` on real SQLite and real
//! PostgreSQL (CALLOUT_TEST_POSTGRES_URL, an admin URL: each run makes
//! and drops its own database; without it the PostgreSQL half says so
//! loudly and is skipped, as in tests/store.rs).

use std::collections::HashMap;
use std::path::Path;

use callout::pipeline::alert::{Alert, Severity, Source, Status};
use callout::pipeline::config;
use callout::pipeline::engine::{Disposition, Engine, HeartbeatState, Incident, Output, Silence};
use callout::store::{IncidentFilter, MailRow, PipelineWrite, Store, TimelineRow};

fn alert(n: u64, host: &str, status: Status, received: i64) -> Alert {
    Alert {
        id: format!("al_{received:012x}{n:016x}"),
        contract: "acme".into(),
        source: Source::Alertmanager,
        status,
        key: format!("{host}/HostDown"),
        host: host.into(),
        name: "HostDown".into(),
        severity: Severity::Critical,
        summary: format!("{host} down"),
        labels: [("site".to_string(), "tokyo".to_string())].into(),
        starts_ms: None,
        received_ms: received,
    }
}

/// Real incidents, as the engine makes them.
fn incidents_for(hosts: &[&str]) -> Vec<Incident> {
    let cfg = config::load(
        "contract = \"acme\"\n[pipeline]\nwait = \"60s\"\n",
        Path::new("acme.toml"),
    )
    .unwrap()
    .unwrap();
    let mut e = Engine::new();
    e.set_contracts(
        0,
        HashMap::from([("acme".to_string(), std::sync::Arc::new(cfg))]),
    );
    for (i, h) in hosts.iter().enumerate() {
        e.handle_alert(1000, &alert(i as u64, h, Status::Firing, 1000 + i as i64));
    }
    while e.poll_output().is_some() {}
    e.take_dirty()
}

fn line(id: &str, seq: i64, text: &str) -> TimelineRow {
    TimelineRow {
        id: id.into(),
        seq,
        at_ms: 5000,
        kind: "alert".into(),
        text: text.into(),
        alert: None,
        data: None,
    }
}

fn filter() -> IncidentFilter {
    IncidentFilter {
        limit: 50,
        ..Default::default()
    }
}

async fn exercise(store: &Store, second: &Store) {
    // Alerts: durable, replay-safe, unhandled oldest first.
    let a: Vec<Alert> = (0..5)
        .rev()
        .map(|i| alert(i, &format!("h{i}"), Status::Firing, 1000 + i as i64))
        .collect();
    store.insert_alerts(&a).await.unwrap();
    store.insert_alerts(&a[..2]).await.unwrap();
    let un = store.unhandled_alerts(10).await.unwrap();
    assert_eq!(un.len(), 5);
    let ids: Vec<&str> = un.iter().map(|a| a.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    assert_eq!(un[0], alert(0, "h0", Status::Firing, 1000));
    assert_eq!(store.unhandled_alerts(2).await.unwrap().len(), 2);

    // One engine step: two incidents of one prefix numbered in order,
    // alert dispositions, timeline lines, heartbeats.
    let incs = incidents_for(&["web-01", "web-02"]);
    assert_eq!(incs.len(), 2);
    let w = PipelineWrite {
        mails: Vec::new(),
        fence: None,
        inbox_done: Vec::new(),
        incidents: incs.clone(),
        new_tickets: incs
            .iter()
            .map(|i| (i.id.clone(), "ACME".to_string()))
            .collect(),
        dispositions: vec![(
            un[0].id.clone(),
            Disposition::Incident {
                incident: incs[0].id.clone(),
            },
        )],
        timeline: vec![
            (incs[0].id.clone(), line("tl_b", 2, "second")),
            (incs[0].id.clone(), line("tl_a", 1, "first")),
        ],
        heartbeats: Some(vec![HeartbeatState {
            contract: "acme".into(),
            name: "watchdog".into(),
            last_ms: 4000,
            incident: None,
            grace_until_ms: 0,
        }]),
        // The ticket line of incs[1] only, written with its number.
        ticket_lines: [(incs[1].id.clone(), 0)].into_iter().collect(),
        now_ms: 5000,
    };
    let t = store.apply_pipeline(&w).await.unwrap();
    assert_eq!(
        t,
        vec![
            (incs[0].id.clone(), "ACME-000001".to_string()),
            (incs[1].id.clone(), "ACME-000002".to_string())
        ]
    );
    assert_eq!(store.unhandled_alerts(10).await.unwrap().len(), 4);
    let linked = store.incident_alerts(&incs[0].id, 10).await.unwrap();
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].alert.id, un[0].id);
    // Timeline: ordered by seq; a line with a known id is not added again.
    assert!(!store
        .add_timeline(&incs[0].id, &line("tl_a", 9, "again"))
        .await
        .unwrap());
    assert!(store
        .add_timeline(&incs[0].id, &line("tl_c", 3, "third"))
        .await
        .unwrap());
    let tl: Vec<String> = store
        .timeline(&incs[0].id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(tl, ["first", "second", "third"]);
    assert_eq!(store.max_timeline_seq().await.unwrap(), 3);
    let tl = store.timeline(&incs[1].id).await.unwrap();
    assert_eq!(tl.len(), 1);
    assert_eq!(
        (tl[0].kind.as_str(), tl[0].text.as_str(), tl[0].at_ms),
        ("ticket", "ticket ACME-000002 opened", 5000)
    );
    // Heartbeats come back.
    let hb = store.heartbeats().await.unwrap();
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0].last_ms, 4000);
    // The store gives back what was stored; an update keeps the ticket.
    let got = store.get_incident(&incs[0].id).await.unwrap().unwrap();
    assert_eq!(got.incident, incs[0]);
    assert_eq!(got.ticket.as_deref(), Some("ACME-000001"));
    let mut closed = incs[1].clone();
    closed.state = callout::pipeline::engine::State::Closed;
    closed.closed_ms = Some(6000);
    store
        .apply_pipeline(&PipelineWrite {
            incidents: vec![closed.clone()],
            now_ms: 6000,
            ..Default::default()
        })
        .await
        .unwrap();
    let got = store.get_incident(&incs[1].id).await.unwrap().unwrap();
    assert_eq!(got.ticket.as_deref(), Some("ACME-000002"));
    assert_eq!(got.updated_ms, 6000);
    assert_eq!(
        store
            .incident_by_ticket("ACME-000002")
            .await
            .unwrap()
            .unwrap()
            .incident
            .id,
        incs[1].id
    );
    let open: Vec<String> = store
        .open_incidents()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.incident.id)
        .collect();
    assert_eq!(open, vec![incs[0].id.clone()]);
    assert_eq!(store.recently_closed(5500).await.unwrap().len(), 1);
    assert_eq!(store.recently_closed(7000).await.unwrap().len(), 0);

    // list_incidents: every filter, alone and together, and paging.
    let n = |f: IncidentFilter| {
        let store = store.clone();
        async move { store.list_incidents(&f).await.unwrap().len() }
    };
    assert_eq!(n(filter()).await, 2);
    for (f, want) in [
        (
            IncidentFilter {
                contract: Some("acme".into()),
                ..filter()
            },
            2,
        ),
        (
            IncidentFilter {
                contract: Some("other".into()),
                ..filter()
            },
            0,
        ),
        (
            IncidentFilter {
                host: Some("web-02".into()),
                ..filter()
            },
            1,
        ),
        (
            IncidentFilter {
                state: Some("closed".into()),
                ..filter()
            },
            1,
        ),
        (
            IncidentFilter {
                state: Some("pending".into()),
                host: Some("web-01".into()),
                contract: Some("acme".into()),
                ..filter()
            },
            1,
        ),
        (
            IncidentFilter {
                state: Some("pending".into()),
                host: Some("web-02".into()),
                ..filter()
            },
            0,
        ),
        (
            IncidentFilter {
                since_ms: Some(999_999),
                ..filter()
            },
            0,
        ),
        (
            IncidentFilter {
                since_ms: Some(0),
                state: Some("closed".into()),
                ..filter()
            },
            1,
        ),
        (
            IncidentFilter {
                contracts: Some(vec![]),
                ..filter()
            },
            0,
        ),
        (
            IncidentFilter {
                contracts: Some(vec!["x".into(), "acme".into()]),
                state: Some("pending".into()),
                ..filter()
            },
            1,
        ),
        (
            IncidentFilter {
                host: Some("web-01' OR '1'='1".into()),
                ..filter()
            },
            0,
        ),
        (
            IncidentFilter {
                limit: 1,
                ..filter()
            },
            1,
        ),
    ] {
        assert_eq!(n(f.clone()).await, want, "{f:?}");
    }
    let newest = store
        .list_incidents(&IncidentFilter {
            limit: 1,
            ..filter()
        })
        .await
        .unwrap();
    let next = store
        .list_incidents(&IncidentFilter {
            before: Some(newest[0].incident.id.clone()),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].incident.id < newest[0].incident.id);

    // Silences: live ones only, deleted once.
    let si = |id: &str, ends: i64| Silence {
        id: id.into(),
        contract: "acme".into(),
        matchers: vec!["host=\"web-09\"".into()],
        starts_ms: 0,
        ends_ms: ends,
        created_by: "t".into(),
        comment: "maintenance".into(),
    };
    store.put_silence(&si("si_a", 10_000)).await.unwrap();
    store.put_silence(&si("si_b", 20_000)).await.unwrap();
    assert_eq!(
        store.silences(5_000).await.unwrap(),
        vec![si("si_a", 10_000), si("si_b", 20_000)]
    );
    assert_eq!(
        store.silences(15_000).await.unwrap(),
        vec![si("si_b", 20_000)]
    );
    assert!(store.delete_silence("si_b", 6_000).await.unwrap());
    assert!(!store.delete_silence("si_b", 6_001).await.unwrap());
    assert!(!store.delete_silence("si_none", 6_001).await.unwrap());
    assert_eq!(
        store.silences(5_000).await.unwrap(),
        vec![si("si_a", 10_000)]
    );

    // Mails: raw bytes (not UTF-8) round-trip; the unparsed filter.
    let m = |id: &str, at: i64, alert: Option<&Alert>| MailRow {
        id: id.into(),
        contract: "acme".into(),
        from: "nms@example.jp".into(),
        rcpt: "alerts@acme.example".into(),
        subject: "【障害】".into(),
        raw: vec![0x1b, b'$', b'B', 0xff, 0x00, b'\n'],
        received_ms: at,
        alert_id: alert.map(|a| a.id.clone()),
        reason: alert.is_none().then(|| "no rule matched".to_string()),
    };
    let ma = alert(99, "mail-01", Status::Firing, 7000);
    store
        .insert_mail(&m("ml_1", 7000, Some(&ma)), Some(&ma))
        .await
        .unwrap();
    store
        .insert_mail(&m("ml_2", 7001, None), None)
        .await
        .unwrap();
    let all = store.list_mails(Some("acme"), false, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["ml_2", "ml_1"]
    );
    assert_eq!(all[1], m("ml_1", 7000, Some(&ma)));
    let un = store.list_mails(None, true, 10).await.unwrap();
    assert_eq!(un.len(), 1);
    assert_eq!(un[0].reason.as_deref(), Some("no rule matched"));
    assert!(store
        .list_mails(Some("other"), false, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .unhandled_alerts(100)
        .await
        .unwrap()
        .iter()
        .any(|a| a.id == ma.id));
    assert_eq!(store.alert_counts("acme").await.unwrap(), (6, 5));

    // Two handles taking numbers of one prefix at once never get the
    // same one.
    let take = |s: Store, k: usize| async move {
        let mut got = Vec::new();
        for i in 0..20 {
            let w = PipelineWrite {
                new_tickets: vec![(format!("in_race{k}_{i}"), "RACE".to_string())],
                now_ms: 1,
                ..Default::default()
            };
            got.extend(
                s.apply_pipeline(&w)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(_, t)| t),
            );
        }
        got
    };
    let (x, y) = tokio::join!(
        tokio::spawn(take(store.clone(), 0)),
        tokio::spawn(take(second.clone(), 1))
    );
    let mut all: Vec<String> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a ticket number was given twice");
    assert_eq!(all.first().map(String::as_str), Some("RACE-000001"));
    assert_eq!(all.last().map(String::as_str), Some("RACE-000040"));
    let _ = Output::Closed {
        incident: String::new(),
    };
}

#[tokio::test]
async fn pipeline_tables_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("callout-store-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/data/callout.db", dir.display());
    let store = Store::connect(&url).await.unwrap();
    let second = Store::connect(&url).await.unwrap();
    exercise(&store, &second).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pipeline_tables_on_postgres() {
    let Ok(admin) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED pipeline_tables_on_postgres: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
        return;
    };
    use sqlx::Connection;
    let db = format!("callout_test_pipeline_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("CALLOUT_TEST_POSTGRES_URL must end with /DATABASE"),
    };
    {
        let store = Store::connect(&url).await.unwrap();
        let second = Store::connect(&url).await.unwrap();
        assert!(!store.is_sqlite());
        exercise(&store, &second).await;
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

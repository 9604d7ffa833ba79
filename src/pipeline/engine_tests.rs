//! The engine driven by explicit time: no sleeping, no sockets.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::pipeline::alert::{Alert, Severity, Source, Status};
use crate::pipeline::config::{self, PipelineConfig};

const S: i64 = 1_000;

fn cfg(extra: &str) -> Arc<PipelineConfig> {
    let text = format!("contract = \"acme\"\n[pipeline]\nwait = \"60s\"\n{extra}");
    Arc::new(
        config::load(&text, Path::new("acme.toml"))
            .unwrap()
            .unwrap(),
    )
}

fn engine(extra: &str) -> Engine {
    let mut e = Engine::new();
    e.set_contracts(0, HashMap::from([("acme".to_string(), cfg(extra))]));
    e
}

struct Feed {
    n: u64,
}

impl Feed {
    fn alert(&mut self, now: i64, host: &str, name: &str, status: Status) -> Alert {
        self.n += 1;
        Alert {
            id: format!("al_{now:012x}{:016x}", self.n),
            contract: "acme".into(),
            source: Source::Alertmanager,
            status,
            key: format!("{host}/{name}"),
            host: host.into(),
            name: name.into(),
            severity: Severity::Critical,
            summary: format!("{name} on {host}"),
            labels: [("site".to_string(), "tokyo".to_string())].into(),
            starts_ms: None,
            received_ms: now,
        }
    }
}

fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn notifies(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Notify { incident } => Some(incident.clone()),
            _ => None,
        })
        .collect()
}

fn opened(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Opened { incident } => Some(incident.clone()),
            _ => None,
        })
        .collect()
}

fn state(e: &Engine, id: &str) -> State {
    e.incident(id).map(|i| i.state).unwrap_or(State::Closed)
}

/// Run the clock to `now` the way the driver does.
fn run_to(e: &mut Engine, now: i64) -> Vec<Output> {
    while e.poll_timeout().is_some_and(|t| t <= now) {
        e.handle_timeout(now);
    }
    drain(e)
}

#[test]
fn nothing_is_called_before_the_window_ends_and_one_host_is_one_incident() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let out = drain(&mut e);
    let ids = opened(&out);
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();
    assert!(notifies(&out).is_empty());
    assert_eq!(e.poll_timeout(), Some(60 * S));
    e.handle_alert(
        30 * S,
        &f.alert(30 * S, "web-01", "HighLatency", Status::Firing),
    );
    let out = drain(&mut e);
    assert!(opened(&out).is_empty(), "same host joins: {out:?}");
    assert_eq!(e.incident(&id).unwrap().keys.len(), 2);
    assert!(run_to(&mut e, 59 * S).is_empty());
    let out = run_to(&mut e, 60 * S);
    assert_eq!(notifies(&out), vec![id.clone()]);
    assert_eq!(state(&e, &id), State::Notifying);
    assert_eq!(
        e.incident(&id).unwrap().idempotency_key(),
        format!("incident:{id}:1")
    );
    // Another host is another incident.
    e.handle_alert(
        61 * S,
        &f.alert(61 * S, "db-01", "HostDown", Status::Firing),
    );
    assert_eq!(opened(&drain(&mut e)).len(), 1);
}

#[test]
fn a_recovery_inside_the_window_is_a_flap_and_nobody_is_called() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    e.handle_alert(
        20 * S,
        &f.alert(20 * S, "web-01", "HostDown", Status::Resolved),
    );
    let out = drain(&mut e);
    assert!(
        out.contains(&Output::Closed {
            incident: id.clone()
        }),
        "{out:?}"
    );
    let dirty = e.take_dirty();
    let inc = dirty.iter().find(|i| i.id == id).unwrap();
    assert_eq!(inc.state, State::Closed);
    assert_eq!(inc.notifications, 0);
    assert!(run_to(&mut e, 120 * S).is_empty());
}

#[test]
fn a_recovery_needs_every_key_and_cancels_a_running_escalation() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    e.handle_alert(S, &f.alert(S, "web-01", "DiskFull", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(61 * S, &id, "n_1");
    e.handle_alert(
        70 * S,
        &f.alert(70 * S, "web-01", "HostDown", Status::Resolved),
    );
    let out = drain(&mut e);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Cancel { .. })),
        "DiskFull still fires"
    );
    e.handle_alert(
        80 * S,
        &f.alert(80 * S, "web-01", "DiskFull", Status::Resolved),
    );
    let out = drain(&mut e);
    assert!(out.contains(&Output::Cancel {
        incident: id.clone(),
        notification: Some("n_1".into()),
        reason: "recovered".into()
    }));
    assert!(out.contains(&Output::Closed {
        incident: id.clone()
    }));
    // A recovery nobody asked about is only recorded.
    e.handle_alert(
        90 * S,
        &f.alert(90 * S, "web-01", "DiskFull", Status::Resolved),
    );
    assert!(matches!(
        drain(&mut e)[..],
        [Output::Alert {
            disposition: Disposition::Recorded { .. },
            ..
        }]
    ));
}

#[test]
fn acknowledgement_then_recovery_sends_a_recovery_notice_when_asked() {
    let mut e = engine("recovery = \"call\"\n");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    e.handle_outcome(
        90 * S,
        &id,
        "n_1",
        GatewayOutcome::Acked {
            by: Some("Tanaka".into()),
        },
    );
    assert_eq!(state(&e, &id), State::Acknowledged);
    e.handle_alert(
        300 * S,
        &f.alert(300 * S, "web-01", "HostDown", Status::Resolved),
    );
    let out = drain(&mut e);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Cancel { .. })),
        "the escalation had ended"
    );
    assert_eq!(notifies(&out), vec![id.clone()], "recovery notice");
    let inc = e.incident(&id).unwrap();
    assert!(inc.recovery_notice && inc.notifications == 2);
    assert_eq!(state(&e, &id), State::Recovered);
    e.handle_notified(301 * S, &id, "n_2");
    // A late word from the first notification changes nothing.
    e.handle_outcome(
        302 * S,
        &id,
        "n_1",
        GatewayOutcome::Ended {
            state: "cancelled".into(),
        },
    );
    assert_eq!(state(&e, &id), State::Recovered);
    e.handle_outcome(
        320 * S,
        &id,
        "n_2",
        GatewayOutcome::Ended {
            state: "exhausted".into(),
        },
    );
    assert!(drain(&mut e).contains(&Output::Closed {
        incident: id.clone()
    }));
}

#[test]
fn many_hosts_in_one_window_are_one_monitoring_path_incident_for_the_centre() {
    let mut e = engine("path_threshold = 3\nmonitoring_contract = \"noc\"\n");
    let mut f = Feed { n: 0 };
    for h in ["a", "b"] {
        e.handle_alert(0, &f.alert(0, h, "HostDown", Status::Firing));
    }
    assert_eq!(opened(&drain(&mut e)).len(), 2);
    e.handle_alert(5 * S, &f.alert(5 * S, "c", "HostDown", Status::Firing));
    let out = drain(&mut e);
    let ids = opened(&out);
    assert_eq!(ids.len(), 2, "host c and the path incident: {out:?}");
    let path = e
        .incidents()
        .find(|i| matches!(i.kind, Kind::MonitoringPath { .. }))
        .unwrap()
        .id
        .clone();
    assert_eq!(e.incident(&path).unwrap().holds.len(), 3);
    assert_eq!(
        e.incident(&path).unwrap().notify_contract.as_deref(),
        Some("noc")
    );
    // Later hosts join it directly.
    e.handle_alert(10 * S, &f.alert(10 * S, "d", "HostDown", Status::Firing));
    assert!(drain(&mut e).iter().any(|o| matches!(
        o,
        Output::Alert {
            disposition: Disposition::Suppressed { .. },
            ..
        }
    )));
    let out = run_to(&mut e, 120 * S);
    assert_eq!(
        notifies(&out),
        vec![path.clone()],
        "only the centre is called"
    );
    // Every host recovers: the path incident closes too.
    for h in ["a", "b", "c", "d"] {
        e.handle_alert(200 * S, &f.alert(200 * S, h, "HostDown", Status::Resolved));
    }
    let out = drain(&mut e);
    let closed = out
        .iter()
        .filter(|o| matches!(o, Output::Closed { .. }))
        .count();
    assert_eq!(closed, 5, "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Cancel { incident, .. } if incident == &path)));
}

#[test]
fn an_alert_storm_calls_nobody_at_the_customer_and_records_every_alert() {
    let mut e = engine("path_threshold = 5\nmonitoring_contract = \"noc\"\n");
    let mut f = Feed { n: 0 };
    let mut alerts = 0;
    let mut dispositions = 0;
    let mut customer_calls = 0;
    for round in 0..10 {
        for h in 0..500 {
            let now = (round * 500 + h) as i64 * 10; // 50 s in all
            e.handle_alert(
                now,
                &f.alert(
                    now,
                    &format!("host-{h:03}"),
                    &format!("Alert{round}"),
                    Status::Firing,
                ),
            );
            alerts += 1;
            for o in run_to(&mut e, now) {
                match o {
                    Output::Alert { .. } => dispositions += 1,
                    Output::Notify { incident } => {
                        let c = e
                            .incident(&incident)
                            .and_then(|i| i.notify_contract.clone());
                        if c.as_deref() == Some("acme") {
                            customer_calls += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let out = run_to(&mut e, 200 * S);
    assert_eq!(dispositions, alerts, "every alert has a fate");
    assert_eq!(customer_calls, 0);
    assert_eq!(notifies(&out).len(), 1, "one call, to the centre");
    let paths = e
        .incidents()
        .filter(|i| matches!(i.kind, Kind::MonitoringPath { .. }))
        .count();
    assert_eq!(paths, 1);
}

#[test]
fn the_monitoring_systems_own_alert_inhibits_hosts_with_equal_labels() {
    let mut e = engine(
        "monitoring_contract = \"noc\"\npath_group = \"site\"\n[[pipeline.inhibit]]\nsource = ['alertname=\"ProbeDown\"']\nequal = [\"site\"]\n",
    );
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let host = opened(&drain(&mut e))[0].clone();
    let probe = f.alert(S, "probe-1", "ProbeDown", Status::Firing);
    e.handle_alert(S, &probe);
    drain(&mut e);
    assert_eq!(state(&e, &host), State::Suppressed);
    // Another site is not held.
    let mut other = f.alert(2 * S, "web-09", "HostDown", Status::Firing);
    other.labels.insert("site".into(), "osaka".into());
    e.handle_alert(2 * S, &other);
    let osaka = opened(&drain(&mut e))[0].clone();
    // Same site, later: held at once.
    e.handle_alert(3 * S, &f.alert(3 * S, "web-02", "HostDown", Status::Firing));
    let web02 = opened(&drain(&mut e))[0].clone();
    assert_eq!(state(&e, &web02), State::Suppressed);
    let out = run_to(&mut e, 120 * S);
    let called: Vec<Option<String>> = notifies(&out)
        .iter()
        .map(|i| e.incident(i).unwrap().notify_contract.clone())
        .collect();
    assert_eq!(called.len(), 2, "{out:?}");
    assert!(called.contains(&Some("noc".into())) && called.contains(&Some("acme".into())));
    assert_eq!(state(&e, &osaka), State::Notifying);
}

#[test]
fn a_silent_heartbeat_raises_an_incident_for_the_centre_and_its_return_closes_it() {
    let mut e = engine(
        "monitoring_contract = \"noc\"\n[[pipeline.heartbeats]]\nname = \"watchdog\"\nmatch = ['alertname=\"Watchdog\"']\ninterval = \"5m\"\n",
    );
    let mut f = Feed { n: 0 };
    for t in [60, 120, 180] {
        e.handle_alert(t * S, &f.alert(t * S, "", "Watchdog", Status::Firing));
        assert!(matches!(
            drain(&mut e)[..],
            [Output::Alert {
                disposition: Disposition::Heartbeat { .. },
                ..
            }]
        ));
    }
    assert_eq!(e.poll_timeout(), Some(480 * S));
    assert!(run_to(&mut e, 479 * S).is_empty());
    let out = run_to(&mut e, 480 * S);
    let id = opened(&out)[0].clone();
    assert_eq!(notifies(&out), vec![id.clone()], "called at once");
    assert_eq!(
        e.incident(&id).unwrap().notify_contract.as_deref(),
        Some("noc")
    );
    assert!(run_to(&mut e, 900 * S).is_empty(), "raised once");
    e.handle_notified(481 * S, &id, "n_1");
    e.handle_alert(1000 * S, &f.alert(1000 * S, "", "Watchdog", Status::Firing));
    let out = drain(&mut e);
    assert!(
        out.contains(&Output::Closed {
            incident: id.clone()
        }),
        "{out:?}"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Cancel { .. })));
    assert_eq!(e.poll_timeout(), Some(1300 * S));
}

#[test]
fn a_heartbeat_is_not_raised_at_once_after_callout_itself_was_down() {
    let hb = "monitoring_contract = \"noc\"\n[[pipeline.heartbeats]]\nname = \"watchdog\"\nmatch = ['alertname=\"Watchdog\"']\ninterval = \"5m\"\n";
    let stored = HeartbeatState {
        contract: "acme".into(),
        name: "watchdog".into(),
        last_ms: 60 * S,
        incident: None,
        grace_until_ms: 0,
    };
    // callout comes back an hour after the last beat: a full interval
    // of grace from the start, not an incident at once.
    let start = 3_600 * S;
    let mut e = engine(hb);
    e.restore_heartbeat(start, stored.clone());
    assert_eq!(e.poll_timeout(), Some(start + 300 * S));
    assert!(run_to(&mut e, start + 299 * S).is_empty());
    // The source was only waiting for us: a beat inside the grace.
    let mut f = Feed { n: 0 };
    let t = start + 30 * S;
    e.handle_alert(t, &f.alert(t, "", "Watchdog", Status::Firing));
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(t + 300 * S));
    assert!(run_to(&mut e, t + 299 * S).is_empty());
    // Without a beat after the start, it is raised when the grace ends.
    let mut e = engine(hb);
    e.restore_heartbeat(start, stored);
    let out = run_to(&mut e, start + 300 * S);
    assert_eq!(opened(&out).len(), 1, "{out:?}");
    assert_eq!(notifies(&out).len(), 1);
}

#[test]
fn a_new_occurrence_inside_the_reopen_window_reopens_the_ticket() {
    let mut e = engine("reopen = \"10m\"\n");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    e.handle_alert(
        100 * S,
        &f.alert(100 * S, "web-01", "HostDown", Status::Resolved),
    );
    drain(&mut e);
    let stored = e.take_dirty();
    assert!(e.incident(&id).is_none(), "closed incidents leave memory");
    let closed = stored.into_iter().find(|i| i.id == id).unwrap();
    let again = f.alert(200 * S, "web-01", "HostDown", Status::Firing);
    assert_eq!(e.needs_reopen(200 * S, &again), Some(id.clone()));
    e.restore_closed(closed);
    e.handle_alert(200 * S, &again);
    let out = drain(&mut e);
    assert!(opened(&out).is_empty(), "same ticket: {out:?}");
    assert_eq!(state(&e, &id), State::Pending);
    assert_eq!(e.incident(&id).unwrap().reopened, 1);
    let out = run_to(&mut e, 260 * S);
    assert_eq!(notifies(&out), vec![id.clone()]);
    assert_eq!(
        e.incident(&id).unwrap().idempotency_key(),
        format!("incident:{id}:2")
    );
    // Past the window: a new incident.
    e.handle_alert(
        300 * S,
        &f.alert(300 * S, "web-01", "HostDown", Status::Resolved),
    );
    drain(&mut e);
    e.take_dirty();
    let late = f.alert(2000 * S, "web-01", "HostDown", Status::Firing);
    assert_eq!(e.needs_reopen(2000 * S, &late), None);
    e.handle_alert(2000 * S, &late);
    assert_eq!(opened(&drain(&mut e)).len(), 1);
}

#[test]
fn silences_record_and_expire() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.add_silence(Silence {
        id: "si_1".into(),
        contract: "acme".into(),
        matchers: vec![r#"host=~"web-.*""#.into()],
        starts_ms: 0,
        ends_ms: 600 * S,
        created_by: "ops".into(),
        comment: "maintenance".into(),
    })
    .unwrap();
    e.handle_alert(
        10 * S,
        &f.alert(10 * S, "web-01", "HostDown", Status::Firing),
    );
    assert!(matches!(
        drain(&mut e)[..],
        [Output::Alert {
            disposition: Disposition::Silenced { .. },
            ..
        }]
    ));
    e.handle_alert(
        10 * S,
        &f.alert(10 * S, "db-01", "HostDown", Status::Firing),
    );
    assert_eq!(opened(&drain(&mut e)).len(), 1);
    e.handle_alert(
        700 * S,
        &f.alert(700 * S, "web-01", "HostDown", Status::Firing),
    );
    assert_eq!(opened(&drain(&mut e)).len(), 1, "the silence ended");
    assert!(e.remove_silence("si_1") && !e.remove_silence("si_1"));
    assert!(e
        .add_silence(Silence {
            id: "si_2".into(),
            contract: "acme".into(),
            matchers: vec!["host".into()],
            starts_ms: 0,
            ends_ms: 1,
            created_by: "ops".into(),
            comment: String::new(),
        })
        .is_err());
}

#[test]
fn rules_that_record_open_nothing_and_a_zero_wait_calls_at_once() {
    let mut e = engine(
        "[[pipeline.rules]]\nmatch = ['alertname=\"Info\"']\naction = \"record\"\n[[pipeline.rules]]\nmatch = ['alertname=\"Fire\"']\naction = \"call\"\nwait = \"0s\"\n[[pipeline.rules]]\naction = \"call\"\n",
    );
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "h", "Info", Status::Firing));
    assert!(opened(&drain(&mut e)).is_empty());
    e.handle_alert(0, &f.alert(0, "h", "Disk", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    assert_eq!(e.poll_timeout(), Some(60 * S));
    // A call-now alert on the same host pulls the window in.
    e.handle_alert(5 * S, &f.alert(5 * S, "h", "Fire", Status::Firing));
    assert_eq!(e.poll_timeout(), Some(5 * S));
    assert_eq!(notifies(&run_to(&mut e, 5 * S)), vec![id]);
}

#[test]
fn a_restart_resumes_the_window_and_asks_again_for_an_unconfirmed_call() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "a", "HostDown", Status::Firing));
    e.handle_alert(0, &f.alert(0, "b", "HostDown", Status::Firing));
    drain(&mut e);
    let stored = e.take_dirty();
    // Crash at 30 s; restart at 40 s.
    let mut e2 = engine("");
    for i in stored.clone() {
        e2.restore(i);
    }
    assert!(drain(&mut e2).is_empty());
    assert_eq!(e2.poll_timeout(), Some(60 * S));
    let out = run_to(&mut e2, 60 * S);
    assert_eq!(notifies(&out).len(), 2);
    let stored = e2.take_dirty();
    // Crash before the gateway confirmed one of them.
    let mut e3 = engine("");
    e3.handle_notified(0, "nobody", "n_0");
    for mut i in stored {
        if i.host == "a" {
            i.notify_pending = false;
            i.notification = Some("n_a".into());
        }
        e3.restore(i);
    }
    let out = drain(&mut e3);
    assert_eq!(notifies(&out).len(), 1, "only the unconfirmed one: {out:?}");
    let inc = e3.incident(&notifies(&out)[0]).unwrap();
    assert_eq!(inc.host, "b");
    assert_eq!(inc.notifications, 1, "same Idempotency-Key");
    // Incidents round-trip through JSON.
    let json = serde_json::to_string(inc).unwrap();
    assert_eq!(&serde_json::from_str::<Incident>(&json).unwrap(), inc);
}

#[test]
fn an_incident_with_no_news_after_its_calls_expires() {
    let mut e = engine("");
    e.set_expire_ms(3_600 * S);
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "a", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    e.handle_outcome(
        200 * S,
        &id,
        "n_1",
        GatewayOutcome::Ended {
            state: "exhausted".into(),
        },
    );
    assert_eq!(state(&e, &id), State::Notifying);
    let out = run_to(&mut e, 3_600 * S);
    assert!(out.contains(&Output::Closed {
        incident: id.clone()
    }));
    let inc = e.take_dirty().into_iter().find(|i| i.id == id).unwrap();
    assert_eq!(inc.state, State::Expired);
}

#[test]
fn a_person_closing_it_cancels_the_calls() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "a", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    assert!(e.handle_close(70 * S, &id, "operator"));
    let out = drain(&mut e);
    assert!(out.iter().any(|o| matches!(o, Output::Cancel { .. })));
    assert!(out.contains(&Output::Closed {
        incident: id.clone()
    }));
    assert!(!e.handle_close(71 * S, &id, "operator"));
}

#[test]
fn a_recovery_notice_waits_for_the_cancelled_escalation_to_end() {
    let mut e = engine("recovery = \"call\"\n");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    e.handle_alert(
        90 * S,
        &f.alert(90 * S, "web-01", "HostDown", Status::Resolved),
    );
    let out = drain(&mut e);
    assert!(out.iter().any(|o| matches!(o, Output::Cancel { .. })));
    assert!(notifies(&out).is_empty(), "not while the escalation runs");
    e.handle_outcome(
        91 * S,
        &id,
        "n_1",
        GatewayOutcome::Ended {
            state: "cancelled".into(),
        },
    );
    assert_eq!(notifies(&drain(&mut e)), vec![id.clone()]);
    assert!(e.incident(&id).unwrap().recovery_notice);
    e.handle_notified(92 * S, &id, "n_2");
    e.handle_outcome(99 * S, &id, "n_2", GatewayOutcome::Acked { by: None });
    assert!(drain(&mut e).contains(&Output::Closed { incident: id }));
}

#[test]
fn a_recovery_by_key_alone_finds_its_incident() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    let mut r = f.alert(10 * S, "", "HostDown", Status::Resolved);
    r.key = "web-01/HostDown".into();
    e.handle_alert(10 * S, &r);
    assert!(drain(&mut e).contains(&Output::Closed { incident: id }));
}

#[test]
fn a_recovery_before_the_gateway_confirmed_the_call_cancels_it_even_after_a_restart() {
    let mut e = engine("recovery = \"call\"\n");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    // The call is asked for; the recovery arrives before the gateway
    // named the notification: the cancel waits for its id.
    e.handle_alert(
        61 * S,
        &f.alert(61 * S, "web-01", "HostDown", Status::Resolved),
    );
    let out = drain(&mut e);
    assert!(out.contains(&Output::Cancel {
        incident: id.clone(),
        notification: None,
        reason: "recovered".into(),
    }));
    let stored = e.take_dirty();
    // Crash here (the driver's wish to cancel on confirmation is lost);
    // the restart asks again with the same key and the gateway names the
    // running notification: it must be cancelled, not left calling.
    let mut e2 = engine("recovery = \"call\"\n");
    for i in stored {
        e2.restore(i);
    }
    assert_eq!(notifies(&drain(&mut e2)), vec![id.clone()]);
    e2.handle_notified(70 * S, &id, "n_1");
    let out = drain(&mut e2);
    assert!(
        out.contains(&Output::Cancel {
            incident: id.clone(),
            notification: Some("n_1".into()),
            reason: "recovered".into(),
        }),
        "{out:?}"
    );
    // Its end brings the recovery notice, then the close.
    e2.handle_outcome(
        71 * S,
        &id,
        "n_1",
        GatewayOutcome::Ended {
            state: "cancelled".into(),
        },
    );
    assert_eq!(notifies(&drain(&mut e2)), vec![id.clone()]);
    e2.handle_notified(72 * S, &id, "n_2");
    assert!(
        !drain(&mut e2)
            .iter()
            .any(|o| matches!(o, Output::Cancel { .. })),
        "the recovery notice itself is not cancelled"
    );
}

#[test]
fn an_incident_forgets_recovered_keys_beyond_its_cap() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "Stays", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    // A sender giving every event its own key: each fires and recovers.
    for i in 0..2_000 {
        let t = S + i;
        e.handle_alert(t, &f.alert(t, "web-01", &format!("ev{i}"), Status::Firing));
        e.handle_alert(
            t,
            &f.alert(t, "web-01", &format!("ev{i}"), Status::Resolved),
        );
    }
    drain(&mut e);
    let inc = e.incident(&id).unwrap();
    assert!(inc.keys.len() <= MAX_KEYS + 1, "{} keys", inc.keys.len());
    assert!(
        inc.keys["web-01/Stays"].firing,
        "a firing key is never forgotten"
    );
    assert_eq!(inc.alerts.len(), MAX_ALERT_IDS);
    assert_eq!(inc.alert_count, 4_001);
    assert_eq!(inc.state, State::Pending);
}

#[test]
fn a_close_before_the_gateway_confirmed_the_call_cancels_it() {
    let mut e = engine("");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    assert!(e.handle_close(61 * S, &id, "alice"));
    drain(&mut e);
    // The gateway's answer arrives before the closed incident was
    // written and forgotten: the engine still holds it and cancels.
    assert!(e.handle_notified(62 * S, &id, "n_1"));
    assert!(drain(&mut e).iter().any(|o| matches!(
        o,
        Output::Cancel { notification: Some(n), .. } if n == "n_1"
    )));
    // Once forgotten, the engine does not (the driver does).
    e.take_dirty();
    assert!(!e.handle_notified(63 * S, &id, "n_1"));
}

#[test]
fn a_recovered_incident_whose_cancel_is_never_confirmed_closes_after_the_wait() {
    let mut e = engine("recovery = \"call\"\n");
    e.set_recovered_wait_ms(600 * S);
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    e.handle_alert(
        90 * S,
        &f.alert(90 * S, "web-01", "HostDown", Status::Resolved),
    );
    drain(&mut e);
    assert_eq!(state(&e, &id), State::Recovered);
    // The cancelled escalation's last webhook never arrives.
    assert_eq!(e.poll_timeout(), Some(690 * S));
    assert!(run_to(&mut e, 689 * S).is_empty());
    assert_eq!(state(&e, &id), State::Recovered);
    let out = run_to(&mut e, 690 * S);
    assert!(out.contains(&Output::Closed {
        incident: id.clone()
    }));
    // Asked to stop once more, and no recovery notice after all.
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Cancel { notification: Some(n), .. } if n == "n_1"
    )));
    assert!(notifies(&out).is_empty());
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Timeline { text, .. } if text.contains("never reported the end of notification n_1")
    )));
    assert_eq!(e.incident(&id).unwrap().state, State::Closed);
    // A late word after that changes nothing.
    e.take_dirty();
    e.handle_outcome(
        700 * S,
        &id,
        "n_1",
        GatewayOutcome::Ended {
            state: "cancelled".into(),
        },
    );
    assert!(drain(&mut e).is_empty());
}

#[test]
fn a_recovery_notice_that_never_ends_closes_after_the_wait_too() {
    let mut e = engine("recovery = \"call\"\n");
    e.set_recovered_wait_ms(300 * S);
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notified(60 * S, &id, "n_1");
    e.handle_outcome(70 * S, &id, "n_1", GatewayOutcome::Acked { by: None });
    e.handle_alert(
        100 * S,
        &f.alert(100 * S, "web-01", "HostDown", Status::Resolved),
    );
    assert_eq!(notifies(&drain(&mut e)), vec![id.clone()]);
    e.handle_notified(101 * S, &id, "n_2");
    drain(&mut e);
    // Survives a restart with its clock.
    let stored = e.take_dirty().pop().unwrap();
    let mut e2 = engine("recovery = \"call\"\n");
    e2.set_recovered_wait_ms(300 * S);
    e2.restore(stored);
    assert_eq!(e2.poll_timeout(), Some(400 * S));
    let out = run_to(&mut e2, 400 * S);
    assert!(out.contains(&Output::Closed {
        incident: id.clone()
    }));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Timeline { text, .. } if text.contains("the recovery notice's end")
    )));
}

#[test]
fn a_call_the_gateway_refuses_is_the_exhausted_notice() {
    let mut e = engine("[pipeline.notices.exhausted]\nto = [\"ops@acme.example\"]\n");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_notify_refused(61 * S, &id, "HTTP 422: no contact can be called now");
    let out = drain(&mut e);
    let mails: Vec<(&NoticeEvent, &String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Mail { event, detail, .. } => Some((event, detail)),
            _ => None,
        })
        .collect();
    assert_eq!(mails.len(), 1, "{out:?}");
    assert_eq!(*mails[0].0, NoticeEvent::Exhausted);
    assert!(mails[0].1.contains("HTTP 422"), "{}", mails[0].1);
}

#[test]
fn a_recovery_while_the_refused_call_was_asked_for_closes() {
    let mut e = engine("recovery = \"call\"\n");
    let mut f = Feed { n: 0 };
    e.handle_alert(0, &f.alert(0, "web-01", "HostDown", Status::Firing));
    let id = opened(&drain(&mut e))[0].clone();
    run_to(&mut e, 60 * S);
    e.handle_alert(
        61 * S,
        &f.alert(61 * S, "web-01", "HostDown", Status::Resolved),
    );
    drain(&mut e);
    assert_eq!(state(&e, &id), State::Recovered);
    e.handle_notify_refused(62 * S, &id, "HTTP 422: refused");
    let out = drain(&mut e);
    assert!(out.contains(&Output::Closed { incident: id }));
    assert!(notifies(&out).is_empty());
}

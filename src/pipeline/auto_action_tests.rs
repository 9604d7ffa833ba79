//! Notices and first-level actions in the engine, by explicit time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::super::*;
use crate::pipeline::alert::{Alert, Severity, Source, Status};
use crate::pipeline::config;

const S: i64 = 1_000;

fn engine(extra: &str) -> Engine {
    let text = format!(
        "contract = \"acme\"\n[pipeline]\nwait = \"60s\"\n\
         [pipeline.notices.occurrence]\nto = [\"ops@acme.example\"]\n\
         [pipeline.notices.action]\nto = [\"ops@acme.example\"]\n\
         [pipeline.notices.exhausted]\nto = [\"ops@acme.example\"]\n\
         [pipeline.notices.recovery]\nto = [\"ops@acme.example\"]\n{extra}"
    );
    let cfg = Arc::new(
        config::load(&text, Path::new("acme.toml"))
            .unwrap()
            .unwrap(),
    );
    let mut e = Engine::new();
    e.set_contracts(0, HashMap::from([("acme".to_string(), cfg)]));
    e
}

fn alert(now: i64, name: &str, status: Status) -> Alert {
    Alert {
        id: format!("al_{now:012x}{:016x}", name.len()),
        contract: "acme".into(),
        source: Source::Alertmanager,
        status,
        key: format!("web-01/{name}"),
        host: "web-01".into(),
        name: name.into(),
        severity: Severity::Critical,
        summary: format!("{name} on web-01"),
        labels: [("service".to_string(), "nginx".to_string())].into(),
        starts_ms: None,
        received_ms: now,
    }
}

fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn mails(out: &[Output]) -> Vec<NoticeEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Mail { event, .. } => Some(*event),
            _ => None,
        })
        .collect()
}

fn notified(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Notify { .. }))
}

fn runs(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::RunAction { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect()
}

const RULE: &str = "[[pipeline.auto_actions]]\nmatch = ['alertname=\"process_down\"', 'service=\"nginx\"']\naction = \"restart-web\"\n";

fn open(e: &mut Engine) -> (String, Vec<Output>) {
    e.handle_alert(0, &alert(0, "process_down", Status::Firing));
    let out = drain(e);
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::Opened { incident } => Some(incident.clone()),
            _ => None,
        })
        .unwrap();
    assert!(mails(&out).is_empty(), "nothing mailed inside the window");
    e.handle_timeout(60 * S);
    (id, drain(e))
}

#[test]
fn a_flap_mails_nobody_and_a_real_incident_mails_each_moment_once() {
    let mut e = engine("");
    e.handle_alert(0, &alert(0, "HostDown", Status::Firing));
    e.handle_alert(10 * S, &alert(10 * S, "HostDown", Status::Resolved));
    e.handle_timeout(60 * S);
    assert!(mails(&drain(&mut e)).is_empty());

    let mut e = engine("");
    let (id, out) = open(&mut e);
    assert_eq!(mails(&out), vec![NoticeEvent::Occurrence]);
    assert!(notified(&out));
    e.handle_notified(61 * S, &id, "nt_1");
    e.handle_outcome(
        90 * S,
        &id,
        "nt_1",
        GatewayOutcome::Ended {
            state: "exhausted".into(),
        },
    );
    assert_eq!(mails(&drain(&mut e)), vec![NoticeEvent::Exhausted]);
    e.handle_alert(100 * S, &alert(100 * S, "process_down", Status::Resolved));
    assert_eq!(mails(&drain(&mut e)), vec![NoticeEvent::Recovery]);
}

#[test]
fn without_recipients_no_mail_is_asked_for() {
    let text = "contract = \"acme\"\n[pipeline]\nwait = \"0s\"\n";
    let cfg = Arc::new(config::load(text, Path::new("a.toml")).unwrap().unwrap());
    let mut e = Engine::new();
    e.set_contracts(0, HashMap::from([("acme".to_string(), cfg)]));
    e.handle_alert(0, &alert(0, "HostDown", Status::Firing));
    e.handle_timeout(0);
    let out = drain(&mut e);
    assert!(notified(&out));
    assert!(mails(&out).is_empty());
}

#[test]
fn a_verified_fix_calls_nobody_when_the_contract_says_mail() {
    let mut e = engine(RULE);
    let (id, out) = open(&mut e);
    assert_eq!(runs(&out), vec!["restart-web".to_string()]);
    assert!(!notified(&out), "nobody is called while the action runs");
    assert_eq!(mails(&out), vec![NoticeEvent::Occurrence]);
    assert_eq!(e.incident(&id).unwrap().state, State::Notifying);
    e.handle_action_result(
        65 * S,
        &id,
        ActionReport {
            ok: true,
            text: "action restart-web succeeded and verified".into(),
            steps: vec!["step one".into(), "step two".into()],
            automatic: true,
        },
    );
    let out = drain(&mut e);
    assert!(!notified(&out));
    assert_eq!(mails(&out), vec![NoticeEvent::Action]);
    // Each step is a timeline entry of its own, in order, then the result.
    let l = lines(&out);
    assert_eq!(
        l[..3],
        [
            "step one".to_string(),
            "step two".into(),
            "action restart-web succeeded and verified".into()
        ],
        "{l:#?}"
    );
    let inc = e.incident(&id).unwrap();
    assert!(inc.escalation_done);
    assert_eq!(
        inc.first_action.as_ref().unwrap().state,
        FirstActionState::Succeeded
    );
    // The recovery then closes it without a call.
    e.handle_alert(70 * S, &alert(70 * S, "process_down", Status::Resolved));
    let out = drain(&mut e);
    assert!(!notified(&out));
    assert!(!e.incident(&id).unwrap().state.is_open());
    // A late second result changes nothing.
    e.handle_action_result(
        80 * S,
        &id,
        ActionReport {
            ok: false,
            text: "late".into(),
            steps: Vec::new(),
            automatic: true,
        },
    );
    assert!(!notified(&drain(&mut e)));
}

#[test]
fn a_verified_fix_calls_to_inform_when_the_contract_says_call() {
    let mut e = engine(&format!("{RULE}on_success = \"call\"\n"));
    let (id, _) = open(&mut e);
    e.handle_action_result(
        65 * S,
        &id,
        ActionReport {
            ok: true,
            text: "ok".into(),
            steps: Vec::new(),
            automatic: true,
        },
    );
    assert!(notified(&drain(&mut e)));
}

#[test]
fn a_failed_fix_starts_the_escalation_and_a_lost_one_counts_as_failed() {
    let mut e = engine(RULE);
    let (id, _) = open(&mut e);
    e.handle_action_result(
        65 * S,
        &id,
        ActionReport {
            ok: false,
            text: "failed at the verify step running-again (failed)".into(),
            steps: Vec::new(),
            automatic: true,
        },
    );
    let out = drain(&mut e);
    assert!(notified(&out));
    let fa = e.incident(&id).unwrap().first_action.clone().unwrap();
    assert_eq!(fa.state, FirstActionState::Failed);
    assert!(fa.result.unwrap().contains("verify"));

    // A restart while the action ran: the restored incident calls.
    let mut e2 = engine(RULE);
    let (id2, _) = open(&mut e2);
    let inc = e2.incident(&id2).unwrap().clone();
    let mut e3 = engine(RULE);
    e3.restore(inc);
    e3.lost_first_actions(70 * S);
    let out = drain(&mut e3);
    assert!(notified(&out));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Timeline { text, .. } if text.contains("lost in a restart"))));
}

#[test]
fn an_alert_no_rule_matches_is_called_as_before() {
    let mut e = engine(RULE);
    e.handle_alert(0, &alert(0, "HostDown", Status::Firing));
    drain(&mut e);
    e.handle_timeout(60 * S);
    let out = drain(&mut e);
    assert!(runs(&out).is_empty());
    assert!(notified(&out));
}

fn verifying_engine(extra: &str) -> Engine {
    let text = format!(
        "contract = \"acme\"\n[pipeline]\nwait = \"60s\"\nrecovery_verify = \"check-web\"\n{extra}"
    );
    let cfg = Arc::new(
        config::load(&text, Path::new("acme.toml"))
            .unwrap()
            .unwrap(),
    );
    let mut e = Engine::new();
    e.set_contracts(0, HashMap::from([("acme".to_string(), cfg)]));
    e.set_recovered_wait_ms(600 * S);
    e
}

fn closed(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Closed { .. }))
}

fn lines(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Timeline { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_recovery_verify_runs_and_its_result_is_written_before_the_close() {
    for ok in [true, false] {
        let mut e = verifying_engine("");
        let (id, out) = open(&mut e);
        assert!(runs(&out).is_empty());
        e.handle_notified(61 * S, &id, "nt_1");
        e.handle_outcome(70 * S, &id, "nt_1", GatewayOutcome::Acked { by: None });
        drain(&mut e);
        e.handle_alert(100 * S, &alert(100 * S, "process_down", Status::Resolved));
        let out = drain(&mut e);
        assert_eq!(runs(&out), vec!["check-web".to_string()]);
        assert!(!closed(&out), "closed before the verify ended");
        assert_eq!(e.incident(&id).unwrap().state, State::Recovered);
        e.handle_action_result(
            105 * S,
            &id,
            ActionReport {
                ok,
                text: "action check-web (flow check) on web-01 found nothing to fix".into(),
                steps: vec!["action check-web step 1/1: check status".into()],
                automatic: true,
            },
        );
        let out = drain(&mut e);
        let l = lines(&out);
        let verdict = if ok {
            "recovery verified: action check-web"
        } else {
            "recovery verify failed: action check-web"
        };
        let at_verdict = l.iter().position(|t| t.starts_with(verdict));
        let at_close = l.iter().position(|t| t.starts_with("recovered → closed"));
        assert!(
            at_verdict.is_some() && at_close.is_some() && at_verdict < at_close,
            "{l:#?}"
        );
        let at_step = l
            .iter()
            .position(|t| t.starts_with("action check-web step 1/1"));
        assert!(at_step.is_some() && at_step < at_verdict, "{l:#?}");
        assert!(closed(&out));
    }
}

#[test]
fn a_recovery_verify_lost_in_a_restart_closes_the_incident_anyway() {
    let mut e = verifying_engine("");
    let (id, _) = open(&mut e);
    e.handle_notified(61 * S, &id, "nt_1");
    e.handle_outcome(70 * S, &id, "nt_1", GatewayOutcome::Acked { by: None });
    e.handle_alert(100 * S, &alert(100 * S, "process_down", Status::Resolved));
    drain(&mut e);
    let stored = e.take_dirty().pop().unwrap();
    let mut e = verifying_engine("");
    e.restore(stored);
    e.lost_first_actions(200 * S);
    let out = drain(&mut e);
    assert!(closed(&out), "{:#?}", lines(&out));
    assert!(lines(&out)
        .iter()
        .any(|t| t.starts_with("recovery verify failed: the action's result was lost")));
}

#[test]
fn a_recovery_verify_that_never_answers_closes_after_the_recovered_wait() {
    let mut e = verifying_engine("");
    let (id, _) = open(&mut e);
    e.handle_notified(61 * S, &id, "nt_1");
    e.handle_outcome(70 * S, &id, "nt_1", GatewayOutcome::Acked { by: None });
    e.handle_alert(100 * S, &alert(100 * S, "process_down", Status::Resolved));
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(700 * S));
    e.handle_timeout(700 * S);
    let out = drain(&mut e);
    assert!(closed(&out));
    // The ended escalation is not cancelled again.
    assert!(!out.iter().any(|o| matches!(o, Output::Cancel { .. })));
    assert!(lines(&out)
        .iter()
        .any(|t| t.contains("the recovery verify's result was not heard")));
}

//! Engine tests with explicit time: no sleeping anywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use super::dialplan::{ActionSay, KeyAction, MenuConfig, OnMachine, Phrase, Policy};
use super::escalation::{ContactSlot, Escalation, EscalationOutput, Final, SkipReason};
use super::menu::{Menu, MenuOutput, PinCheck, Say};
use super::outcome::{ActionEnd, Outcome};

fn policy(rounds: u32) -> Policy {
    Policy {
        rounds,
        ring_timeout: Duration::from_secs(30),
        between_calls: Duration::from_secs(5),
        between_rounds: Duration::from_secs(120),
        stop_on_ack: true,
        on_machine: OnMachine::Continue,
        on_action_failure: crate::ivr::dialplan::OnActionFailure::Continue,
    }
}

fn contact(name: &str, when: &[&str]) -> ContactSlot {
    ContactSlot {
        name: name.into(),
        timezone: "Asia/Tokyo".into(),
        when: when.iter().map(|s| s.to_string()).collect(),
        left: false,
    }
}

/// Drive an escalation: `script` gives each dialled attempt's outcome and
/// how long the call lasted; returns (time, what happened) lines.
fn run(
    esc: &mut Escalation,
    start: i64,
    mut script: impl FnMut(usize) -> (Outcome, i64),
) -> Vec<(i64, String)> {
    let mut log = Vec::new();
    let mut now = start;
    esc.start(now);
    for _ in 0..100 {
        while let Some(out) = esc.poll_output() {
            match out {
                EscalationOutput::Dial {
                    attempt,
                    contact,
                    round,
                } => {
                    log.push((now - start, format!("dial {contact} r{round}")));
                    let (outcome, lasted) = script(contact);
                    now += lasted;
                    log.push((now - start, format!("{contact}: {outcome:?}")));
                    esc.call_ended(attempt, outcome, now);
                }
                EscalationOutput::Skipped {
                    contact, reason, ..
                } => log.push((now - start, format!("skip {contact} {reason:?}"))),
                EscalationOutput::Finished(f) => {
                    log.push((now - start, format!("finished {f:?}")));
                    return log;
                }
                EscalationOutput::Cancel { attempt } => {
                    log.push((now - start, format!("cancel {attempt}")))
                }
            }
        }
        match esc.poll_timeout() {
            Some(t) => {
                now = t;
                esc.handle_timeout(now);
            }
            None => break,
        }
    }
    log
}

// 2026-11-25 10:00 JST (a Wednesday) in epoch ms.
const WED_10_JST: i64 = 1_795_568_400_000;

#[test]
fn rounds_and_pauses_when_nobody_answers() {
    let mut esc = Escalation::from_policy(
        &policy(2),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    let log = run(&mut esc, WED_10_JST, |_| (Outcome::NoAnswer, 30_000));
    let want: Vec<(i64, String)> = vec![
        (0, "dial 0 r1".into()),
        (30_000, "0: NoAnswer".into()),
        (35_000, "dial 1 r1".into()),
        (65_000, "1: NoAnswer".into()),
        (185_000, "dial 0 r2".into()),
        (215_000, "0: NoAnswer".into()),
        (220_000, "dial 1 r2".into()),
        (250_000, "1: NoAnswer".into()),
    ];
    assert_eq!(log[..8], want[..]);
    assert!(log[8].1.starts_with("finished Exhausted"), "{log:?}");
    assert_eq!(esc.attempts().len(), 4);
}

#[test]
fn next_leave_and_ack() {
    // a passes (next), b leaves, c does not answer; round 2 skips b, a acks.
    let mut esc = Escalation::from_policy(
        &policy(3),
        vec![],
        vec![contact("a", &[]), contact("b", &[]), contact("c", &[])],
    );
    let mut calls = 0;
    let log = run(&mut esc, WED_10_JST, |c| {
        calls += 1;
        match (calls, c) {
            (1, 0) => (Outcome::Passed, 20_000),
            (2, 1) => (Outcome::Left, 15_000),
            (3, 2) => (Outcome::Busy, 2_000),
            (4, 0) => (Outcome::Acked, 25_000),
            other => panic!("unexpected call {other:?}"),
        }
    });
    let lines: Vec<String> = log.iter().map(|(t, l)| format!("{t} {l}")).collect();
    assert_eq!(
        lines,
        vec![
            "0 dial 0 r1",
            "20000 0: Passed",
            // Passed: the next contact is called at once, no pause.
            "20000 dial 1 r1",
            "35000 1: Left",
            "40000 dial 2 r1",
            "42000 2: Busy",
            "162000 dial 0 r2",
            "187000 0: Acked",
            "187000 finished Acked { contact: 0, attempt: 4, at_ms: 1795568587000, console: None }",
        ]
    );
    // b was skipped in round 2? It comes after a, so the ack stopped first.
    assert!(esc.is_done());
}

#[test]
fn left_contact_is_skipped_in_later_rounds() {
    let mut esc = Escalation::from_policy(
        &policy(2),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    let log = run(&mut esc, WED_10_JST, |c| {
        if c == 0 {
            (Outcome::Left, 1000)
        } else {
            (Outcome::NoAnswer, 1000)
        }
    });
    let lines: Vec<&str> = log.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        &lines[..6],
        &[
            "dial 0 r1",
            "0: Left",
            "dial 1 r1",
            "1: NoAnswer",
            "skip 0 Left",
            "dial 1 r2"
        ]
    );
}

#[test]
fn time_windows_across_the_time_zone_boundary() {
    // Night-shift contact in Tokyo: 18:00-09:00 JST on weekdays.
    let night = contact("night", &["mon-fri 18:00-09:00"]);
    let day = contact("day", &["mon-fri 09:00-18:00"]);
    // 08:59:50 JST Wednesday: night is on, day is not.
    let t = WED_10_JST - 3_600_000 - 10_000;
    let mut esc = Escalation::from_policy(&policy(1), vec![], vec![day.clone(), night.clone()]);
    let log = run(&mut esc, t, |_| (Outcome::NoAnswer, 30_000));
    let lines: Vec<&str> = log.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        &lines[..3],
        &["skip 0 OutsideWindow", "dial 1 r1", "1: NoAnswer"]
    );
    // At 10:00 JST it is the other way round.
    let mut esc = Escalation::from_policy(&policy(1), vec![], vec![day, night]);
    let log = run(&mut esc, WED_10_JST, |_| (Outcome::NoAnswer, 30_000));
    let lines: Vec<&str> = log.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        &lines[..4],
        &[
            "dial 0 r1",
            "0: NoAnswer",
            "skip 1 OutsideWindow",
            "finished Exhausted { at_ms: 1795568435000 }"
        ]
    );
    let _ = SkipReason::Left;
}

#[test]
fn cancel_while_ringing_and_while_pausing() {
    let mut esc = Escalation::from_policy(
        &policy(3),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    esc.start(0);
    let Some(EscalationOutput::Dial { attempt, .. }) = esc.poll_output() else {
        panic!()
    };
    esc.cancel(1000, "recovered");
    assert_eq!(
        esc.poll_output(),
        Some(EscalationOutput::Cancel { attempt })
    );
    assert!(!esc.is_done(), "waits for the call to end");
    esc.call_ended(attempt, Outcome::Cancelled, 1200);
    assert_eq!(
        esc.poll_output(),
        Some(EscalationOutput::Finished(Final::Cancelled {
            at_ms: 1200,
            reason: "recovered".into()
        }))
    );
    assert_eq!(esc.poll_output(), None, "nothing more is dialled");

    let mut esc = Escalation::from_policy(
        &policy(3),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    esc.start(0);
    let Some(EscalationOutput::Dial { attempt, .. }) = esc.poll_output() else {
        panic!()
    };
    esc.call_ended(attempt, Outcome::NoAnswer, 30_000);
    assert_eq!(esc.poll_timeout(), Some(35_000));
    esc.cancel(31_000, "operator");
    assert!(matches!(
        esc.poll_output(),
        Some(EscalationOutput::Finished(Final::Cancelled { .. }))
    ));
    esc.handle_timeout(35_000);
    assert_eq!(esc.poll_output(), None);
}

#[test]
fn an_operator_acknowledges_for_someone_while_ringing_and_while_pausing() {
    use super::escalation::OperatorAck;
    let ack = |by: &str| OperatorAck {
        by: by.into(),
        operator: "ops".into(),
        reason: "called the centre back".into(),
    };
    let mut esc = Escalation::from_policy(
        &policy(3),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    esc.start(0);
    let Some(EscalationOutput::Dial { attempt, .. }) = esc.poll_output() else {
        panic!()
    };
    assert!(esc.acknowledge(1_000, ack("B")));
    // The ringing call is hung up first, as a cancel would.
    assert_eq!(
        esc.poll_output(),
        Some(EscalationOutput::Cancel { attempt })
    );
    assert!(!esc.is_done());
    assert!(!esc.acknowledge(1_100, ack("a")), "one acknowledgement");
    esc.cancel(1_150, "too late");
    // Survives a checkpoint while the call is being hung up.
    let mut esc: Escalation = serde_json::from_str(&serde_json::to_string(&esc).unwrap()).unwrap();
    esc.call_ended(attempt, Outcome::Cancelled, 1_300);
    assert_eq!(
        esc.poll_output(),
        Some(EscalationOutput::Finished(Final::Acked {
            contact: 1,
            attempt,
            at_ms: 1_000,
            console: Some(ack("B")),
        })),
        "an acknowledgement at the time it was given, by the contact it names"
    );
    assert_eq!(esc.poll_output(), None, "nothing more is dialled");
    assert!(!esc.acknowledge(2_000, ack("a")));

    // Between calls: it ends at once, for the contact called last when
    // `by` is nobody in the dialplan.
    let mut esc = Escalation::from_policy(
        &policy(3),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    esc.start(0);
    let Some(EscalationOutput::Dial { attempt, .. }) = esc.poll_output() else {
        panic!()
    };
    esc.call_ended(attempt, Outcome::NoAnswer, 30_000);
    assert!(esc.acknowledge(31_000, ack("the night guard")));
    assert!(matches!(
        esc.poll_output(),
        Some(EscalationOutput::Finished(Final::Acked {
            contact: 0,
            attempt: 1,
            at_ms: 31_000,
            console: Some(_)
        }))
    ));
    esc.handle_timeout(35_000);
    assert_eq!(esc.poll_output(), None);
}

#[test]
fn state_survives_serialisation_mid_pause() {
    let mut esc = Escalation::from_policy(
        &policy(2),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    esc.start(0);
    let Some(EscalationOutput::Dial { attempt, .. }) = esc.poll_output() else {
        panic!()
    };
    esc.call_ended(attempt, Outcome::Busy, 3_000);
    let json = serde_json::to_string(&esc).unwrap();
    let mut back: Escalation = serde_json::from_str(&json).unwrap();
    assert_eq!(back.poll_timeout(), Some(8_000));
    back.handle_timeout(8_000);
    assert_eq!(
        back.poll_output(),
        Some(EscalationOutput::Dial {
            attempt: 2,
            contact: 1,
            round: 1
        })
    );
}

#[test]
fn an_ended_escalation_resumed_before_its_final_state_was_stored_ends_again() {
    let mut esc = Escalation::from_policy(&policy(1), vec![], vec![contact("a", &[])]);
    esc.start(0);
    let Some(EscalationOutput::Dial { attempt, .. }) = esc.poll_output() else {
        panic!()
    };
    esc.call_ended(attempt, Outcome::NoAnswer, 30_000);
    assert_eq!(
        esc.poll_output(),
        Some(EscalationOutput::Finished(Final::Exhausted {
            at_ms: 30_000
        }))
    );
    // The process died after this checkpoint, before the final state.
    let json = serde_json::to_string(&esc).unwrap();
    let mut back: Escalation = serde_json::from_str(&json).unwrap();
    back.start(40_000);
    assert_eq!(
        back.poll_output(),
        Some(EscalationOutput::Finished(Final::Exhausted {
            at_ms: 30_000
        }))
    );
    assert_eq!(back.poll_output(), None);
    // Nothing is dialled again.
    assert_eq!(back.poll_timeout(), None);
}

// ---- menu ----------------------------------------------------------------

pub(super) fn menu_cfg() -> MenuConfig {
    let mut keys = BTreeMap::new();
    keys.insert('1', KeyAction::Ack);
    keys.insert('2', KeyAction::Next);
    keys.insert('3', KeyAction::Leave);
    keys.insert('9', KeyAction::Repeat);
    keys.insert('5', KeyAction::Action("restart-web".into()));
    MenuConfig {
        prompt: Phrase::Text("menu".into()),
        keys,
        input_timeout: Duration::from_secs(10),
        inter_digit_timeout: Duration::from_secs(3),
        max_attempts: 3,
        silent_answer: super::dialplan::SilentAnswer::AnsweredNoInput,
    }
}

pub(super) fn pin(locked: bool) -> Option<PinCheck> {
    Some(PinCheck {
        code: "2468".into(),
        max_attempts: 3,
        failures: 0,
        locked,
    })
}

/// Play every queued prompt to its end at `now`; return what was said.
pub(super) fn finish_prompts(m: &mut Menu, now: u64, log: &mut Vec<String>) -> Vec<Say> {
    let mut said = Vec::new();
    let mut last = None;
    while let Some(o) = m.poll_output() {
        match o {
            MenuOutput::Play { id, say } => {
                said.push(say);
                last = Some(id);
            }
            other => log.push(format!("{other:?}")),
        }
    }
    if let Some(id) = last {
        m.prompt_finished(id, now);
        while let Some(o) = m.poll_output() {
            log.push(format!("{o:?}"));
        }
    }
    said
}

#[test]
fn ack_during_the_message_barges_in() {
    let mut m = Menu::new(menu_cfg(), pin(false), vec!["restart-web".into()]);
    m.start(0);
    let mut log = Vec::new();
    let first: Vec<MenuOutput> = std::iter::from_fn(|| m.poll_output()).collect();
    assert_eq!(first.len(), 2, "message then menu");
    m.digit('1', 1500);
    assert_eq!(m.poll_output(), Some(MenuOutput::StopPlayback));
    assert_eq!(m.poll_output(), Some(MenuOutput::Outcome(Outcome::Acked)));
    let said = finish_prompts(&mut m, 3000, &mut log);
    assert_eq!(said, vec![Say::Acked]);
    assert_eq!(log, vec!["Hangup"]);
}

#[test]
fn repeated_invalid_input_ends_as_invalid_input() {
    let mut m = Menu::new(menu_cfg(), None, vec![]);
    m.start(0);
    let mut log = Vec::new();
    finish_prompts(&mut m, 5000, &mut log);
    m.digit('7', 6000);
    assert_eq!(
        finish_prompts(&mut m, 8000, &mut log),
        vec![Say::InvalidKey, Say::Menu]
    );
    // Silence until the input timeout: counts too.
    assert_eq!(m.poll_timeout(), Some(18_000));
    m.handle_timeout(18_000);
    assert_eq!(
        finish_prompts(&mut m, 25_000, &mut log),
        vec![Say::Message, Say::Menu]
    );
    m.digit('8', 26_000);
    let said = finish_prompts(&mut m, 27_000, &mut log);
    assert_eq!(said, vec![Say::Goodbye]);
    assert!(
        log.contains(&"Outcome(InvalidInput)".to_string()),
        "{log:?}"
    );
    assert_eq!(log.last().unwrap(), "Hangup");
}

#[test]
fn silence_is_answered_no_input_and_hangup_mid_menu_too() {
    let mut m = Menu::new(menu_cfg(), None, vec![]);
    m.start(0);
    let mut log = Vec::new();
    let mut now = 5000;
    for _ in 0..3 {
        finish_prompts(&mut m, now, &mut log);
        now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
    }
    finish_prompts(&mut m, now + 1000, &mut log);
    assert!(
        log.contains(&"Outcome(AnsweredNoInput)".to_string()),
        "{log:?}"
    );

    let mut m = Menu::new(menu_cfg(), None, vec![]);
    m.start(0);
    m.remote_hangup();
    let outs: Vec<MenuOutput> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(outs.contains(&MenuOutput::Outcome(Outcome::AnsweredNoInput)));

    // Per contract, silence can count as no answer instead.
    let mut cfg = menu_cfg();
    cfg.silent_answer = super::dialplan::SilentAnswer::NoAnswer;
    let mut m = Menu::new(cfg, None, vec![]);
    m.start(0);
    m.remote_hangup();
    let outs: Vec<MenuOutput> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(outs.contains(&MenuOutput::Outcome(Outcome::NoAnswer)));
}

#[test]
fn action_needs_confirmation_and_pin_and_locks_out() {
    let mut m = Menu::new(menu_cfg(), pin(false), vec!["restart-web".into()]);
    m.start(0);
    let mut log = Vec::new();
    finish_prompts(&mut m, 5000, &mut log);
    m.digit('5', 6000);
    assert_eq!(finish_prompts(&mut m, 7000, &mut log), vec![Say::Confirm]);
    m.digit('1', 8000);
    assert_eq!(finish_prompts(&mut m, 9000, &mut log), vec![Say::EnterPin]);
    for (i, d) in "1111".chars().enumerate() {
        m.digit(d, 10_000 + i as u64 * 300);
    }
    assert_eq!(
        finish_prompts(&mut m, 12_000, &mut log),
        vec![Say::WrongPin, Say::EnterPin]
    );
    // Inter-digit timeout with a partial PIN counts as a wrong entry.
    m.digit('2', 12_500);
    assert_eq!(m.poll_timeout(), Some(15_500));
    m.handle_timeout(15_500);
    assert_eq!(
        finish_prompts(&mut m, 16_000, &mut log),
        vec![Say::WrongPin, Say::EnterPin]
    );
    for d in "9999".chars() {
        m.digit(d, 17_000);
    }
    assert_eq!(
        finish_prompts(&mut m, 18_000, &mut log),
        vec![Say::Locked, Say::Menu]
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("PinFailed"))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            "PinFailed { locked: false }",
            "PinFailed { locked: false }",
            "PinFailed { locked: true }"
        ]
    );
    // Locked: the action key now only says so.
    m.digit('5', 19_000);
    assert_eq!(
        finish_prompts(&mut m, 20_000, &mut log),
        vec![Say::Locked, Say::Menu]
    );
    // Acknowledging still works.
    m.digit('1', 21_000);
    finish_prompts(&mut m, 22_000, &mut log);
    assert!(log.contains(&"Outcome(Acked)".to_string()));
}

#[test]
fn correct_pin_requests_the_action_and_cancel_says_resolved() {
    let mut m = Menu::new(menu_cfg(), pin(false), vec!["restart-web".into()]);
    m.start(0);
    let mut log = Vec::new();
    finish_prompts(&mut m, 5000, &mut log);
    m.digit('5', 6000);
    finish_prompts(&mut m, 7000, &mut log);
    m.digit('1', 8000);
    finish_prompts(&mut m, 9000, &mut log);
    for d in "2468".chars() {
        m.digit(d, 10_000);
    }
    let said = finish_prompts(&mut m, 11_000, &mut log);
    assert_eq!(said, vec![Say::ActionRequested]);
    assert!(
        log.contains(&"RunAction { action: \"restart-web\" }".to_string()),
        "{log:?}"
    );
    // While it runs: keys do nothing, no timeout ends the call, and the
    // caller hears each phase.
    assert!(m.action_running());
    m.digit('1', 12_000);
    m.handle_timeout(100_000);
    m.action_phase(ActionSay::Executing);
    assert_eq!(
        finish_prompts(&mut m, 101_000, &mut log),
        vec![Say::Action(ActionSay::Executing)]
    );
    assert!(!log.iter().any(|l| l.starts_with("Outcome")), "{log:?}");
    m.action_finished(ActionEnd::Failed);
    assert_eq!(
        finish_prompts(&mut m, 102_000, &mut log),
        vec![Say::Action(ActionSay::Failed)]
    );
    assert!(
        log.contains(&"Outcome(Action { action: \"restart-web\", result: Failed })".to_string()),
        "{log:?}"
    );
    assert_eq!(log.last().map(String::as_str), Some("Hangup"));

    // The callee hangs up while it runs: the result is still the outcome.
    let mut m = Menu::new(menu_cfg(), None, vec![]);
    m.start(0);
    finish_prompts(&mut m, 1000, &mut log);
    m.digit('5', 2000);
    finish_prompts(&mut m, 3000, &mut log);
    m.digit('1', 4000);
    finish_prompts(&mut m, 5000, &mut log);
    m.remote_hangup();
    assert!(std::iter::from_fn(|| m.poll_output()).next().is_none());
    m.action_finished(ActionEnd::Succeeded);
    let outs: Vec<MenuOutput> = std::iter::from_fn(|| m.poll_output()).collect();
    assert_eq!(
        outs,
        vec![MenuOutput::Outcome(Outcome::Action {
            action: "restart-web".into(),
            result: ActionEnd::Succeeded
        })]
    );

    let mut m = Menu::new(menu_cfg(), None, vec![]);
    m.start(0);
    let _: Vec<_> = std::iter::from_fn(|| m.poll_output()).collect();
    m.cancel();
    let outs: Vec<MenuOutput> = std::iter::from_fn(|| m.poll_output()).collect();
    assert_eq!(outs[0], MenuOutput::StopPlayback);
    assert_eq!(outs[1], MenuOutput::Outcome(Outcome::Cancelled));
    assert!(matches!(
        outs[2],
        MenuOutput::Play {
            say: Say::Resolved,
            ..
        }
    ));
}

#[test]
fn action_results_end_or_continue_the_escalation_by_policy() {
    let act = |result| Outcome::Action {
        action: "restart-web".into(),
        result,
    };
    // Fixed: the escalation is over.
    let mut esc = Escalation::from_policy(
        &policy(1),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    let log = run(&mut esc, WED_10_JST, |_| {
        (act(ActionEnd::Succeeded), 40_000)
    });
    assert!(log[2].1.starts_with("finished Action"), "{log:?}");
    // Failed, policy continue: the next contact is rung at once.
    let mut esc = Escalation::from_policy(
        &policy(1),
        vec![],
        vec![contact("a", &[]), contact("b", &[])],
    );
    let log = run(&mut esc, WED_10_JST, |c| match c {
        0 => (act(ActionEnd::Failed), 40_000),
        _ => (Outcome::Acked, 10_000),
    });
    assert_eq!(log[2], (40_000, "dial 1 r1".to_string()), "{log:?}");
    assert!(log[4].1.starts_with("finished Acked"), "{log:?}");
    // Failed, policy end: over, with the failure as the final state.
    let mut p = policy(1);
    p.on_action_failure = crate::ivr::dialplan::OnActionFailure::End;
    let mut esc = Escalation::from_policy(&p, vec![], vec![contact("a", &[]), contact("b", &[])]);
    let log = run(&mut esc, WED_10_JST, |_| (act(ActionEnd::Refused), 40_000));
    assert!(
        log[2].1.starts_with("finished Action") && log[2].1.contains("Refused"),
        "{log:?}"
    );
}

//! The menu's side of the contract-wide PIN lockout: earlier failures and
//! the stored lock come in, "pin failed" / "pin accepted" / "action
//! locked" go out; times are explicit.

use super::menu::{Menu, MenuOutput, PinCheck, Say};
use super::tests::{finish_prompts, menu_cfg, pin};

const ACTION: &str = "restart-web";

fn menu(pin: Option<PinCheck>) -> (Menu, Vec<String>) {
    let mut m = Menu::new(menu_cfg(), pin, vec![ACTION.into()]);
    m.start(0);
    let mut log = Vec::new();
    finish_prompts(&mut m, 5000, &mut log);
    (m, log)
}

fn to_pin_entry(m: &mut Menu, log: &mut Vec<String>) {
    m.digit('5', 6000);
    assert_eq!(finish_prompts(m, 7000, log), vec![Say::Confirm]);
    m.digit('1', 8000);
    assert_eq!(finish_prompts(m, 9000, log), vec![Say::EnterPin]);
}

fn pin_outputs(log: &[String]) -> Vec<&str> {
    log.iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("Pin") || l.starts_with("ActionLocked"))
        .collect()
}

#[test]
fn a_locked_contract_says_locked_instead_of_asking_for_the_pin() {
    let (mut m, mut log) = menu(pin(true));
    m.digit('5', 6000);
    assert_eq!(
        finish_prompts(&mut m, 7000, &mut log),
        vec![Say::Locked, Say::Menu]
    );
    assert_eq!(
        pin_outputs(&log),
        vec!["ActionLocked { action: \"restart-web\" }"]
    );
    // Acknowledging still works.
    m.digit('1', 8000);
    finish_prompts(&mut m, 9000, &mut log);
    assert!(log.contains(&"Outcome(Acked)".to_string()), "{log:?}");
}

#[test]
fn failures_from_earlier_calls_count_towards_the_lock() {
    let mut p = pin(false);
    if let Some(p) = &mut p {
        p.failures = 2;
    }
    let (mut m, mut log) = menu(p);
    to_pin_entry(&mut m, &mut log);
    for d in "1111".chars() {
        m.digit(d, 10_000);
    }
    // One more wrong PIN on this call reaches the contract's limit of 3.
    assert_eq!(
        finish_prompts(&mut m, 11_000, &mut log),
        vec![Say::Locked, Say::Menu]
    );
    assert_eq!(pin_outputs(&log), vec!["PinFailed { locked: true }"]);
    m.digit('5', 12_000);
    assert_eq!(
        finish_prompts(&mut m, 13_000, &mut log),
        vec![Say::Locked, Say::Menu]
    );
}

#[test]
fn the_right_pin_is_reported_so_the_series_ends() {
    let (mut m, mut log) = menu(pin(false));
    to_pin_entry(&mut m, &mut log);
    for d in "1111".chars() {
        m.digit(d, 10_000);
    }
    finish_prompts(&mut m, 11_000, &mut log);
    for d in "2468".chars() {
        m.digit(d, 12_000);
    }
    assert_eq!(
        finish_prompts(&mut m, 13_000, &mut log),
        vec![Say::ActionRequested]
    );
    assert_eq!(
        pin_outputs(&log),
        vec!["PinFailed { locked: false }", "PinAccepted"]
    );
}

#[test]
fn a_lock_from_another_call_stops_pin_entry_at_once() {
    let (mut m, mut log) = menu(pin(false));
    to_pin_entry(&mut m, &mut log);
    m.digit('2', 10_000);
    m.digit('4', 10_200);
    // The driver learns from the store that another call locked it.
    m.pin_lock_changed(true);
    let outs: Vec<MenuOutput> = std::iter::from_fn(|| m.poll_output()).collect();
    assert_eq!(
        outs[0],
        MenuOutput::ActionLocked {
            action: ACTION.into()
        }
    );
    assert!(matches!(
        outs[1],
        MenuOutput::Play {
            say: Say::Locked,
            ..
        }
    ));
    // The rest of the right PIN is no longer a PIN: '6' is an invalid key
    // in the main menu, nothing runs.
    m.digit('6', 10_400);
    m.digit('8', 10_600);
    let mut log = Vec::new();
    finish_prompts(&mut m, 11_000, &mut log);
    assert!(
        !log.iter()
            .any(|l| l.starts_with("RunAction") || l == "PinAccepted"),
        "{log:?}"
    );
}

#[test]
fn a_lock_arriving_during_confirmation_is_said_at_once() {
    let (mut m, mut log) = menu(pin(false));
    m.digit('5', 6000);
    finish_prompts(&mut m, 7000, &mut log);
    m.pin_lock_changed(true);
    let said = finish_prompts(&mut m, 7500, &mut log);
    assert_eq!(said, vec![Say::Locked, Say::Menu]);
    assert_eq!(
        pin_outputs(&log),
        vec!["ActionLocked { action: \"restart-web\" }"]
    );
}

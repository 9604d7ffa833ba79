//! Business, off and sleep hours, and the quality targets, per contract
//! (the dialplan's `[reports]` section): a notification falls in the
//! period of its creation time in the contract's time zone, and the
//! monthly report measures each contract against its own targets.
//!
//! Pure: [`period`] is a function of the instant and the calendar, so it
//! is tested without a clock or a database.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;

use crate::ivr::window::{Window, WindowError};

/// Where in the centre's week a notification fell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Business,
    Off,
    Sleep,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Business, Period::Off, Period::Sleep];

    pub fn name(self) -> &'static str {
        match self {
            Period::Business => "business",
            Period::Off => "off",
            Period::Sleep => "sleep",
        }
    }
}

/// Default business hours (`[reports] business`).
pub const DEFAULT_BUSINESS: &str = "mon-fri 09:00-18:00";
/// Default sleep hours (`[reports] sleep`).
pub const DEFAULT_SLEEP: &str = "daily 00:00-07:00";

/// Read one window as `[reports]` writes it: the dialplan's window
/// syntax, where a bare `HH:MM-HH:MM` means every day.
pub fn parse_window(s: &str) -> Result<Window, WindowError> {
    if s.split_whitespace().count() == 1 {
        Window::parse(&format!("daily {}", s.trim()))
    } else {
        Window::parse(s)
    }
}

/// A contract's hours, in its time zone, with its holidays (on which a
/// `mon-fri` window does not apply, as for contacts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub tz: Tz,
    pub holidays: Vec<NaiveDate>,
    pub business: Vec<Window>,
    pub sleep: Vec<Window>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            tz: Tz::UTC,
            holidays: Vec::new(),
            business: vec![parse_window(DEFAULT_BUSINESS).expect("the default parses")],
            sleep: vec![parse_window(DEFAULT_SLEEP).expect("the default parses")],
        }
    }
}

/// The period of `at_ms`: sleep hours win over business hours (a centre
/// that writes both over the same minute means "we are asleep then"),
/// and what is in neither is off hours.
pub fn period(cal: &Calendar, at_ms: i64) -> Period {
    let within = |ws: &[Window]| ws.iter().any(|w| w.contains(at_ms, cal.tz, &cal.holidays));
    if within(&cal.sleep) {
        Period::Sleep
    } else if within(&cal.business) {
        Period::Business
    } else {
        Period::Off
    }
}

/// A quality target: the share of notifications acknowledged within a
/// time, and optionally an answer rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    pub ack_within_ms: i64,
    /// 0-100.
    pub percent: f64,
    /// Answer-rate target, 0-100, when the centre sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_rate_percent: Option<f64>,
}

// Percentages are checked finite at load, so equality is total.
impl Eq for Target {}

impl Default for Target {
    fn default() -> Self {
        Target {
            ack_within_ms: 10 * 60_000,
            percent: 95.0,
            answer_rate_percent: None,
        }
    }
}

/// A contract's `[reports]` settings, as validated. A target value it
/// does not set is the centre's default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContractReports {
    pub calendar: Calendar,
    pub ack_within_ms: Option<i64>,
    pub ack_percent: Option<f64>,
    pub answer_rate_percent: Option<f64>,
}

impl Eq for ContractReports {}

/// Every contract's settings and the centre's defaults: what the
/// `period` breakdown and the monthly report read.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub contracts: BTreeMap<String, ContractReports>,
    /// The centre-wide target (`[reports]` of callout.toml), also used
    /// by contracts without their own.
    pub default_target: Target,
}

impl Setup {
    pub fn calendar(&self, contract: &str) -> Calendar {
        self.contracts
            .get(contract)
            .map(|c| c.calendar.clone())
            .unwrap_or_default()
    }

    pub fn target(&self, contract: &str) -> Target {
        let d = self.default_target;
        match self.contracts.get(contract) {
            None => d,
            Some(c) => Target {
                ack_within_ms: c.ack_within_ms.unwrap_or(d.ack_within_ms),
                percent: c.ack_percent.unwrap_or(d.percent),
                answer_rate_percent: c.answer_rate_percent.or(d.answer_rate_percent),
            },
        }
    }

    /// Every loaded contract's settings, with the centre's target.
    pub fn from_plans<'a>(
        plans: impl IntoIterator<Item = &'a crate::ivr::dialplan::Dialplan>,
        default_target: Target,
    ) -> Setup {
        Setup {
            contracts: plans
                .into_iter()
                .map(|p| (p.contract.clone(), p.reports.clone()))
                .collect(),
            default_target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn periods_in_the_contracts_time_zone() {
        let tokyo = Calendar {
            tz: "Asia/Tokyo".parse().unwrap(),
            ..Calendar::default()
        };
        // Monday 2026-11-02 00:00 UTC = 09:00 JST: business in Tokyo, sleep in UTC.
        let t = at("2026-11-02T00:00:00Z");
        assert_eq!(period(&tokyo, t), Period::Business);
        assert_eq!(period(&Calendar::default(), t), Period::Sleep);
        // 08:59 JST: off (after 07:00, before 09:00).
        assert_eq!(period(&tokyo, t - 60_000), Period::Off);
        // 06:59 JST: sleep; 07:00 JST: off.
        assert_eq!(period(&tokyo, at("2026-11-01T21:59:00Z")), Period::Sleep);
        assert_eq!(period(&tokyo, at("2026-11-01T22:00:00Z")), Period::Off);
        // 18:00 JST Monday: off; Saturday noon JST: off.
        assert_eq!(period(&tokyo, at("2026-11-02T09:00:00Z")), Period::Off);
        assert_eq!(period(&tokyo, at("2026-11-07T03:00:00Z")), Period::Off);
        // A holiday Monday: not business.
        let hol = Calendar {
            holidays: vec![NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()],
            ..tokyo.clone()
        };
        assert_eq!(period(&hol, t), Period::Off);
    }

    #[test]
    fn sleep_wins_and_windows_wrap_midnight() {
        let cal = Calendar {
            tz: Tz::UTC,
            holidays: vec![],
            business: vec![parse_window("Mon-Fri 09:00-18:00").unwrap()],
            sleep: vec![parse_window("22:00-07:00").unwrap()],
        };
        assert_eq!(period(&cal, at("2026-11-02T23:30:00Z")), Period::Sleep);
        assert_eq!(period(&cal, at("2026-11-03T06:59:00Z")), Period::Sleep);
        assert_eq!(period(&cal, at("2026-11-03T07:00:00Z")), Period::Off);
        assert_eq!(period(&cal, at("2026-11-03T12:00:00Z")), Period::Business);
        let overlap = Calendar {
            sleep: vec![parse_window("12:00-13:00").unwrap()],
            ..cal
        };
        assert_eq!(period(&overlap, at("2026-11-03T12:30:00Z")), Period::Sleep);
    }

    #[test]
    fn windows_as_reports_writes_them() {
        assert!(parse_window("00:00-07:00").is_ok());
        assert!(parse_window("sat,sun 10:00-12:00").is_ok());
        for bad in ["", "25:00-07:00", "07:00", "mon-fri", "mon-fri 9-18 x"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contracts_without_a_target_use_the_centres() {
        let mut s = Setup {
            default_target: Target {
                ack_within_ms: 5 * 60_000,
                percent: 90.0,
                answer_rate_percent: None,
            },
            ..Setup::default()
        };
        s.contracts.insert(
            "acme".into(),
            ContractReports {
                ack_within_ms: Some(60_000),
                answer_rate_percent: Some(98.0),
                ..ContractReports::default()
            },
        );
        s.contracts
            .insert("beta".into(), ContractReports::default());
        assert_eq!(
            s.target("acme"),
            Target {
                ack_within_ms: 60_000,
                percent: 90.0,
                answer_rate_percent: Some(98.0),
            }
        );
        assert_eq!(s.target("beta").percent, 90.0);
        assert_eq!(s.target("gone").ack_within_ms, 5 * 60_000);
    }

    fn plan(reports: &str) -> Result<crate::ivr::dialplan::Dialplan, String> {
        let text = format!(
            "contract = \"c\"\nname = \"C\"\nlanguage = \"en\"\ntimezone = \"Asia/Tokyo\"\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"a\"\nuri = \"sip:a@127.0.0.1\"\n\
             [message]\ntext = \"Alert on {{host}}.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n{reports}"
        );
        crate::ivr::dialplan::load_str(
            &text,
            std::path::Path::new("c.toml"),
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")),
            &Default::default(),
        )
        .map_err(|e| {
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn the_dialplan_section_is_read_and_checked_with_its_line() {
        let p = plan("").unwrap();
        assert_eq!(p.reports.calendar.tz, "Asia/Tokyo".parse::<Tz>().unwrap());
        assert_eq!(
            p.reports.calendar,
            Calendar {
                tz: p.reports.calendar.tz,
                ..Calendar::default()
            }
        );
        assert_eq!(p.reports.ack_within_ms, None);
        let p = plan(
            "[reports]\nbusiness = [\"Mon-Fri 08:30-17:30\", \"sat 09:00-12:00\"]\nsleep = \"23:00-06:00\"\n\
             ack_within = \"5m\"\nack_target_percent = 90\nanswer_rate_percent = 99.5\n",
        )
        .unwrap();
        let r = &p.reports;
        assert_eq!(r.calendar.business.len(), 2);
        assert_eq!(
            (r.ack_within_ms, r.ack_percent, r.answer_rate_percent),
            (Some(300_000), Some(90.0), Some(99.5))
        );
        // 2026-11-02 (Monday) 08:45 JST: business under these hours.
        assert_eq!(
            period(&r.calendar, at("2026-11-01T23:45:00Z")),
            Period::Business
        );
        // Errors name the file and the line of the bad value.
        let e = plan("[reports]\nbusiness = \"Mon-Fri 9-18\"\n").unwrap_err();
        assert!(
            e.starts_with("c.toml:20:") && e.contains("reports.business"),
            "{e}"
        );
        let e =
            plan("[reports]\nsleep = \"00:00\"\nack_target_percent = 120\nack_within = \"soon\"\n")
                .unwrap_err();
        assert!(
            e.contains("c.toml:20:") && e.contains("reports.sleep"),
            "{e}"
        );
        assert!(
            e.contains("c.toml:21:") && e.contains("reports.ack_target_percent"),
            "{e}"
        );
        assert!(
            e.contains("c.toml:22:") && e.contains("reports.ack_within"),
            "{e}"
        );
        assert!(plan("[reports]\nwhatever = 1\n").is_err());
    }
}

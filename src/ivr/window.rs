//! Per-contact time windows: "mon-fri 09:00-18:00", "daily 18:00-09:00",
//! "holidays 00:00-24:00", evaluated in a contact's time zone.

use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;

/// A window that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time window {0:?}: use DAYS HH:MM-HH:MM, DAYS like mon-fri, sat,sun, daily, weekdays, weekends or holidays")]
pub struct WindowError(pub String);

/// One window: a set of days and a time range (which may wrap midnight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Days of the week, Monday = bit 0.
    days: u8,
    /// Whether the window applies on the dialplan's holidays.
    holidays: bool,
    start_min: u32,
    end_min: u32,
}

fn weekday(s: &str) -> Option<u32> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| *d == s)
        .map(|i| i as u32)
}

fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && (h < 24 || m == 0)).then_some(h * 60 + m)
}

impl Window {
    pub fn parse(s: &str) -> Result<Window, WindowError> {
        let err = || WindowError(s.to_string());
        let mut parts = s.split_whitespace();
        let (days_s, range) = (parts.next().ok_or_else(err)?, parts.next().ok_or_else(err)?);
        if parts.next().is_some() {
            return Err(err());
        }
        let (mut days, mut holidays) = (0u8, false);
        for item in days_s.to_ascii_lowercase().split(',') {
            match item {
                "daily" => days |= 0x7F,
                "weekdays" => days |= 0x1F,
                "weekends" => days |= 0x60,
                "holidays" => holidays = true,
                _ => match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (weekday(a).ok_or_else(err)?, weekday(b).ok_or_else(err)?);
                        let mut d = a;
                        loop {
                            days |= 1 << d;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days |= 1 << weekday(item).ok_or_else(err)?,
                },
            }
        }
        let (a, b) = range.split_once('-').ok_or_else(err)?;
        let (start_min, end_min) = (minutes(a).ok_or_else(err)?, minutes(b).ok_or_else(err)?);
        if start_min == end_min {
            return Err(err());
        }
        Ok(Window {
            days,
            holidays,
            start_min,
            end_min,
        })
    }

    /// The minutes of the day it starts and ends at (local time): what
    /// [`Window::contains`] compares the time of day with, so between two
    /// consecutive such minutes its answer depends on the date only.
    pub fn bounds(&self) -> (u32, u32) {
        (self.start_min, self.end_min)
    }

    fn day_matches(&self, date: NaiveDate, holidays: &[NaiveDate]) -> bool {
        if holidays.contains(&date) {
            return self.holidays;
        }
        self.days & (1 << date.weekday().num_days_from_monday()) != 0
    }

    /// Is `at_ms` (Unix epoch milliseconds) inside this window in `tz`?
    /// A window that wraps midnight belongs to the day it starts on.
    pub fn contains(&self, at_ms: i64, tz: Tz, holidays: &[NaiveDate]) -> bool {
        let Some(local) = tz.timestamp_millis_opt(at_ms).single() else {
            return false;
        };
        let date = local.date_naive();
        let t = local.time();
        let m = t.hour() * 60 + t.minute();
        if self.start_min < self.end_min {
            self.day_matches(date, holidays) && (self.start_min..self.end_min).contains(&m)
        } else {
            (m >= self.start_min && self.day_matches(date, holidays))
                || (m < self.end_min
                    && date
                        .pred_opt()
                        .is_some_and(|d| self.day_matches(d, holidays)))
        }
    }
}

/// A contact is available when it has no windows, or one contains `at`.
pub fn available(windows: &[Window], at_ms: i64, tz: Tz, holidays: &[NaiveDate]) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(at_ms, tz, holidays))
}

/// The first instant after `from_ms`, within `horizon_ms`, at which
/// [`available`] gives another answer than at `from_ms`: when a reachable
/// contact's window closes, or an unreachable one's opens. `None` when it
/// does not change within the horizon (no windows: always reachable).
///
/// Windows are whole minutes in whole-minute time zones, so the answer
/// can only change on a minute boundary: each one is asked in turn with
/// the very function the escalation uses, holidays and overnight
/// windows included (a week is about 10 000 questions).
pub fn next_change(
    windows: &[Window],
    from_ms: i64,
    tz: Tz,
    holidays: &[NaiveDate],
    horizon_ms: i64,
) -> Option<i64> {
    if windows.is_empty() {
        return None;
    }
    let now = available(windows, from_ms, tz, holidays);
    let mut t = from_ms.div_euclid(60_000) * 60_000 + 60_000;
    let end = from_ms.saturating_add(horizon_ms.max(0));
    while t <= end {
        if available(windows, t, tz, holidays) != now {
            return Some(t);
        }
        t += 60_000;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const WEEK: i64 = 7 * 86_400_000;

    #[test]
    fn the_next_change_is_where_the_window_opens_or_closes() {
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let biz = [Window::parse("mon-fri 09:00-18:00").unwrap()];
        // Friday 2026-11-27 17:30 JST: reachable until 18:00 JST.
        let t = at("2026-11-27T08:30:00Z");
        assert!(available(&biz, t, tokyo, &[]));
        assert_eq!(
            next_change(&biz, t, tokyo, &[], WEEK),
            Some(at("2026-11-27T09:00:00Z"))
        );
        // Friday 18:00 JST: out, and next in on Monday 09:00 JST (past the
        // weekend), which is Monday 00:00 UTC.
        let t = at("2026-11-27T09:00:00Z");
        assert!(!available(&biz, t, tokyo, &[]));
        assert_eq!(
            next_change(&biz, t, tokyo, &[], WEEK),
            Some(at("2026-11-30T00:00:00Z"))
        );
        // Mid-minute: the change is still on the boundary.
        assert_eq!(
            next_change(&biz, t + 12_345, tokyo, &[], WEEK),
            Some(at("2026-11-30T00:00:00Z"))
        );
        // A holiday on Monday pushes it to Tuesday.
        let hol = [NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()];
        assert_eq!(
            next_change(&biz, t, tokyo, &hol, WEEK),
            Some(at("2026-12-01T00:00:00Z"))
        );
        // Not within the horizon, and never for a 24/7 contact.
        assert_eq!(next_change(&biz, t, tokyo, &[], 3_600_000), None);
        assert_eq!(next_change(&[], t, tokyo, &[], WEEK), None);
        // An overnight window started Friday ends Saturday 09:00 JST.
        let night = [Window::parse("mon-fri 18:00-09:00").unwrap()];
        let t = at("2026-11-27T14:00:00Z");
        assert_eq!(
            next_change(&night, t, tokyo, &[], WEEK),
            Some(at("2026-11-28T00:00:00Z"))
        );
    }

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
            .timestamp_millis()
    }

    #[test]
    fn business_hours_across_a_time_zone_boundary() {
        let w = Window::parse("mon-fri 09:00-18:00").unwrap();
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        // 2026-11-27 is a Friday. 08:59 JST = 23:59 UTC Thursday.
        assert!(!w.contains(at("2026-11-26T23:59:00Z"), tokyo, &[]));
        assert!(w.contains(at("2026-11-27T00:00:00Z"), tokyo, &[]));
        assert!(
            !w.contains(at("2026-11-27T09:00:00Z"), tokyo, &[]),
            "18:00 JST is outside"
        );
        // Saturday in Tokyo while it is still Friday in UTC.
        assert!(!w.contains(at("2026-11-27T15:30:00Z"), tokyo, &[]));
        // The same instant is Friday 16:30 in London... 15:30 UTC.
        let london: Tz = "Europe/London".parse().unwrap();
        assert!(w.contains(at("2026-11-27T15:30:00Z"), london, &[]));
    }

    #[test]
    fn overnight_windows_and_holidays() {
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let night = Window::parse("mon-fri 18:00-09:00").unwrap();
        // Friday 23:00 JST and Saturday 03:00 JST (started Friday) are in.
        assert!(night.contains(at("2026-11-27T14:00:00Z"), tokyo, &[]));
        assert!(night.contains(at("2026-11-27T18:00:00Z"), tokyo, &[]));
        // Sunday 03:00 JST started Saturday: out.
        assert!(!night.contains(at("2026-11-28T18:00:00Z"), tokyo, &[]));
        let hol = [NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()];
        assert!(!Window::parse("weekdays 09:00-18:00").unwrap().contains(
            at("2026-11-27T03:00:00Z"),
            tokyo,
            &hol
        ));
        assert!(Window::parse("holidays 00:00-24:00").unwrap().contains(
            at("2026-11-27T03:00:00Z"),
            tokyo,
            &hol
        ));
    }

    #[test]
    fn bad_windows_are_errors() {
        for bad in [
            "mon-fri",
            "funday 09:00-10:00",
            "daily 25:00-26:00",
            "daily 09:00-09:00",
            "daily 9-10",
            "daily 09:00-10:00 extra",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert!(Window::parse("sat,sun 00:00-24:00").is_ok());
        assert!(Window::parse("fri-mon 20:00-06:00").is_ok());
    }
}

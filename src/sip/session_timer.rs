//! Session timers (RFC 4028) on an outgoing call: who refreshes, when the
//! next refresh is due, and when a session whose refresh never came is
//! over. Sans-IO: the call feeds it the 2xx and each refresh, asks
//! [`SessionTimer::poll_timeout`] and acts on [`SessionTimer::handle_timeout`].

use std::time::{Duration, Instant};

use super::message::Headers;

/// RFC 4028 4: the smallest interval anyone may ask for.
pub const MIN_SE: Duration = Duration::from_secs(90);

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Us,
    Them,
}

/// What is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// We are the refresher: send a refresh (UPDATE) now.
    Refresh,
    /// The far end was to refresh and did not: end the call.
    Expired,
}

/// A parsed `Session-Expires` (or `x`): the interval and the `refresher`
/// parameter as written (`uac`/`uas`), if any.
pub fn parse_session_expires(headers: &Headers) -> Option<(Duration, Option<String>)> {
    let v = headers
        .get("Session-Expires")
        .or_else(|| headers.get("x"))?;
    let mut parts = v.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((Duration::from_secs(secs), refresher))
}

/// One call's session timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    interval: Duration,
    refresher: Refresher,
    /// When the session was last refreshed (or set up).
    since: Instant,
    /// A refresh of ours is out: do not send another.
    refreshing: bool,
}

impl SessionTimer {
    /// From the 2xx to our INVITE: `refresher=uac` (or none: RFC 4028 7.2
    /// leaves it to the UAC, and we take it) makes us the refresher. No
    /// Session-Expires, or less than [`MIN_SE`]: no timer.
    pub fn from_answer(now: Instant, headers: &Headers) -> Option<SessionTimer> {
        let (interval, refresher) = parse_session_expires(headers)?;
        if interval < MIN_SE {
            return None;
        }
        let refresher = match refresher.as_deref() {
            Some("uas") => Refresher::Them,
            _ => Refresher::Us,
        };
        Some(SessionTimer {
            interval,
            refresher,
            since: now,
            refreshing: false,
        })
    }

    pub fn refresher(&self) -> Refresher {
        self.refresher
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A refresh request from the far end (re-INVITE or UPDATE) that we
    /// answer 2xx. Its Session-Expires may change the interval and who
    /// refreshes (`uac` there is the far end, the sender). Returns the
    /// Session-Expires value for our 2xx.
    pub fn refreshed_by_them(&mut self, now: Instant, headers: &Headers) -> String {
        if let Some((interval, refresher)) = parse_session_expires(headers) {
            if interval >= MIN_SE {
                self.interval = interval;
            }
            self.refresher = match refresher.as_deref() {
                Some("uas") => Refresher::Us,
                _ => Refresher::Them,
            };
        }
        self.since = now;
        let r = match self.refresher {
            Refresher::Them => "uac",
            Refresher::Us => "uas",
        };
        format!("{};refresher={r}", self.interval.as_secs())
    }

    /// Our refresh was answered 2xx (its Session-Expires may adjust).
    pub fn refreshed_by_us(&mut self, now: Instant, headers: &Headers) {
        if let Some((interval, refresher)) = parse_session_expires(headers) {
            if interval >= MIN_SE {
                self.interval = interval;
            }
            if refresher.as_deref() == Some("uas") {
                self.refresher = Refresher::Them;
            }
        }
        self.since = now;
        self.refreshing = false;
    }

    /// Our refresh failed without ending the dialog: try again at the
    /// next due time, the expiry still ends the call.
    pub fn refresh_failed(&mut self) {
        self.refreshing = false;
    }

    /// The Session-Expires header for our own refresh.
    pub fn our_refresh_header(&self) -> String {
        format!("{};refresher=uac", self.interval.as_secs())
    }

    /// When the session expires: RFC 4028 10 ends it a little before the
    /// interval runs out (a third of it, at most 32 s).
    fn expiry(&self) -> Instant {
        let margin = (self.interval / 3).min(Duration::from_secs(32));
        self.since + self.interval - margin
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.refresher, self.refreshing) {
            (Refresher::Us, false) => Some(self.since + self.interval / 2),
            _ => Some(self.expiry()),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if now >= self.expiry() {
            return Some(TimerAction::Expired);
        }
        if self.refresher == Refresher::Us
            && !self.refreshing
            && now >= self.since + self.interval / 2
        {
            self.refreshing = true;
            return Some(TimerAction::Refresh);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> Headers {
        let mut h = Headers::new();
        h.push("Session-Expires", v);
        h
    }

    #[test]
    fn we_refresh_at_half_the_interval_and_expiry_follows_the_last_refresh() {
        let t0 = Instant::now();
        let mut t = SessionTimer::from_answer(t0, &h("1800;refresher=uac")).unwrap();
        assert_eq!(t.refresher(), Refresher::Us);
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(900)));
        assert_eq!(t.handle_timeout(t0 + Duration::from_secs(899)), None);
        let t1 = t0 + Duration::from_secs(900);
        assert_eq!(t.handle_timeout(t1), Some(TimerAction::Refresh));
        // One refresh out at a time; while it is, the expiry is what waits.
        assert_eq!(t.handle_timeout(t1), None);
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(1768)));
        t.refreshed_by_us(t1 + Duration::from_millis(30), &Headers::new());
        assert_eq!(
            t.poll_timeout(),
            Some(t1 + Duration::from_millis(30) + Duration::from_secs(900))
        );
        assert_eq!(t.our_refresh_header(), "1800;refresher=uac");
    }

    #[test]
    fn a_refresh_that_never_comes_expires_the_session() {
        let t0 = Instant::now();
        let mut t = SessionTimer::from_answer(t0, &h("90;refresher=uas")).unwrap();
        assert_eq!(t.refresher(), Refresher::Them);
        // 90 s minus a third (30 s).
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        // Their refresh at 45 s restarts the clock and keeps them refresher.
        let t1 = t0 + Duration::from_secs(45);
        assert_eq!(t.handle_timeout(t1), None);
        assert_eq!(
            t.refreshed_by_them(t1, &h("120;refresher=uac")),
            "120;refresher=uac"
        );
        // 120 s minus 32 s (a third would be more).
        assert_eq!(t.poll_timeout(), Some(t1 + Duration::from_secs(88)));
        assert_eq!(t.handle_timeout(t1 + Duration::from_secs(87)), None);
        assert_eq!(
            t.handle_timeout(t1 + Duration::from_secs(88)),
            Some(TimerAction::Expired)
        );
    }

    #[test]
    fn no_or_too_small_session_expires_is_no_timer() {
        let t0 = Instant::now();
        assert_eq!(SessionTimer::from_answer(t0, &Headers::new()), None);
        assert_eq!(SessionTimer::from_answer(t0, &h("30")), None);
        assert_eq!(SessionTimer::from_answer(t0, &h("junk")), None);
        let t = SessionTimer::from_answer(t0, &h("600")).unwrap();
        assert_eq!(
            t.refresher(),
            Refresher::Us,
            "no refresher parameter: the UAC"
        );
    }
}

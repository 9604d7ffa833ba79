//! RFC 4733 telephone-event reception: one digit per key press, whatever
//! the sender's redundancy, retransmissions or losses.
//!
//! An event is identified by its RTP timestamp (the event start). The digit
//! is reported on the first packet seen for a new timestamp, so a lost
//! start packet costs nothing; repeated start and end packets carry the
//! same timestamp and are absorbed. Equality (not ordering) of timestamps
//! is used, so wrap-around at 2^32 needs no special case. An event whose
//! end never arrives is closed after [`STALE_MS`] without packets.

use std::collections::VecDeque;

/// Close an event that has had no packet for this long.
pub const STALE_MS: u64 = 1000;

/// A decoded telephone-event payload (one 4-byte block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

/// Parse the first event block of a payload; `None` if it is too short.
pub fn parse_payload(p: &[u8]) -> Option<EventPayload> {
    if p.len() < 4 {
        return None;
    }
    Some(EventPayload {
        event: p[0],
        end: p[1] & 0x80 != 0,
        volume: p[1] & 0x3F,
        duration: u16::from_be_bytes([p[2], p[3]]),
    })
}

/// Build an event payload.
pub fn build_payload(e: EventPayload) -> [u8; 4] {
    let d = e.duration.to_be_bytes();
    [
        e.event,
        (if e.end { 0x80 } else { 0 }) | (e.volume & 0x3F),
        d[0],
        d[1],
    ]
}

/// The DTMF character for an event code 0-15.
pub fn event_to_digit(event: u8) -> Option<char> {
    const DIGITS: &[u8; 16] = b"0123456789*#ABCD";
    DIGITS.get(event as usize).map(|&b| b as char)
}

pub fn digit_to_event(d: char) -> Option<u8> {
    "0123456789*#ABCD"
        .find(d.to_ascii_uppercase())
        .map(|i| i as u8)
}

/// A digit the receiver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDigit {
    pub digit: char,
    /// Milliseconds (caller's clock) when the first packet arrived.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    ts: u32,
    event: u8,
    ended: bool,
    last_ms: u64,
}

/// Receiver state for one RTP stream's telephone-events.
#[derive(Debug, Default)]
pub struct EventReceiver {
    active: Option<Active>,
    /// Recently finished events, to absorb late duplicates.
    recent: VecDeque<(u32, u8)>,
}

impl EventReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one packet (RTP timestamp and payload) received at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, ts: u32, payload: &[u8]) -> Option<EventDigit> {
        let ev = parse_payload(payload)?;
        let digit = event_to_digit(ev.event)?;
        self.expire(now_ms);
        if let Some(a) = &mut self.active {
            if a.ts == ts && a.event == ev.event {
                a.ended |= ev.end;
                a.last_ms = now_ms;
                return None;
            }
            // RFC 4733 2.5.1.3: a long event continues in a new segment with
            // a new timestamp; same code, not ended, packets still flowing.
            if a.event == ev.event
                && !a.ended
                && now_ms.saturating_sub(a.last_ms) < 100
                && ts != a.ts
            {
                let elapsed = ts.wrapping_sub(a.ts);
                if elapsed > 0 && elapsed <= 0x1_0000 + 8000 {
                    a.ts = ts;
                    a.last_ms = now_ms;
                    a.ended |= ev.end;
                    return None;
                }
            }
        }
        if self.recent.iter().any(|&(t, e)| t == ts && e == ev.event) {
            return None;
        }
        if let Some(old) = self.active.take() {
            self.remember(old);
        }
        self.active = Some(Active {
            ts,
            event: ev.event,
            ended: ev.end,
            last_ms: now_ms,
        });
        Some(EventDigit {
            digit,
            at_ms: now_ms,
        })
    }

    fn remember(&mut self, a: Active) {
        self.recent.push_back((a.ts, a.event));
        if self.recent.len() > 8 {
            self.recent.pop_front();
        }
    }

    /// Close an event whose packets stopped without an end bit.
    pub fn expire(&mut self, now_ms: u64) {
        if let Some(a) = self.active {
            if now_ms.saturating_sub(a.last_ms) >= STALE_MS {
                self.remember(a);
                self.active = None;
            }
        }
    }

    /// Is a key being held right now (an event without its end)?
    pub fn is_active(&self) -> bool {
        self.active.is_some_and(|a| !a.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        build_payload(EventPayload {
            event,
            end,
            volume: 10,
            duration,
        })
    }

    #[test]
    fn one_digit_per_event_with_redundant_ends_and_repeated_starts() {
        let mut r = EventReceiver::new();
        let mut got = Vec::new();
        let seq = [
            (0, 1000, pkt(5, false, 0)),
            (0, 1000, pkt(5, false, 0)), // retransmitted start
            (20, 1000, pkt(5, false, 160)),
            (40, 1000, pkt(5, true, 320)),
            (40, 1000, pkt(5, true, 320)), // redundant end x3
            (40, 1000, pkt(5, true, 320)),
            (200, 2600, pkt(5, false, 0)), // the same key again
            (260, 2600, pkt(5, true, 480)),
        ];
        for (t, ts, p) in seq {
            got.extend(r.handle(t, ts, &p));
        }
        assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), "55");
        assert_eq!(got[1].at_ms, 200);
    }

    #[test]
    fn lost_start_wrap_and_late_duplicates() {
        let mut r = EventReceiver::new();
        // Start lost: first packet seen is a continuation.
        assert_eq!(
            r.handle(0, u32::MAX - 100, &pkt(1, false, 320))
                .map(|d| d.digit),
            Some('1')
        );
        assert_eq!(r.handle(20, u32::MAX - 100, &pkt(1, true, 480)), None);
        // Timestamp wrapped for the next event.
        assert_eq!(
            r.handle(300, 500, &pkt(2, false, 0)).map(|d| d.digit),
            Some('2')
        );
        // A late end packet of event '1' is not a new digit.
        assert_eq!(r.handle(320, u32::MAX - 100, &pkt(1, true, 480)), None);
    }

    #[test]
    fn event_that_never_ends_is_closed_and_next_press_counts() {
        let mut r = EventReceiver::new();
        assert!(r.handle(0, 100, &pkt(9, false, 0)).is_some());
        assert!(r.is_active());
        r.expire(1500);
        assert!(!r.is_active());
        assert!(r.handle(1600, 9000, &pkt(9, false, 0)).is_some());
        // Garbage payloads are ignored.
        assert_eq!(r.handle(1700, 1, &[1, 2]), None);
        assert_eq!(r.handle(1700, 1, &pkt(200, false, 0)), None);
    }
}

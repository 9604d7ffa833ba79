//! Client transactions over an unreliable transport (RFC 3261 17.1, with
//! the RFC 6026 "Accepted" state for INVITE). Pure state machines: they
//! take `now`, return bytes to send through [`poll_transmit`], and say when
//! to call them again through [`poll_timeout`].
//!
//! Call order for both kinds: construct (the first transmission is queued),
//! then feed `handle_response` / `handle_timeout`, then drain
//! `poll_transmit` and `poll_output`, then sleep until `poll_timeout`.
//!
//! [`poll_transmit`]: InviteClient::poll_transmit
//! [`poll_timeout`]: InviteClient::poll_timeout

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::message::{Method, Request, Response};

/// RFC 3261 timer base values (section 17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// The transport is reliable (TCP, TLS): requests are not
    /// retransmitted (Timers A and E are not started, RFC 3261 17.1.1.2,
    /// 17.1.2.2); Timers B and F still bound the wait.
    pub reliable: bool,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            reliable: false,
        }
    }
}

/// What a transaction hands to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// A response the transaction user must see (first of each kind, and
    /// every 2xx to INVITE, because the TU re-ACKs those).
    Response(Response),
    /// Timer B or F fired: no final response arrived.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// INVITE client transaction.
#[derive(Debug)]
pub struct InviteClient {
    request: Request,
    bytes: Vec<u8>,
    timers: Timers,
    state: IcState,
    /// Timer A: next retransmission and its current interval.
    timer_a: Option<(Instant, Duration)>,
    timer_b: Option<Instant>,
    /// Timer D (Completed) or Timer M (Accepted): when to terminate.
    timer_end: Option<Instant>,
    ack: Option<Vec<u8>>,
    transmit: VecDeque<Vec<u8>>,
    output: VecDeque<TxOutput>,
}

impl InviteClient {
    pub fn new(now: Instant, request: Request, timers: Timers) -> Self {
        let bytes = request.to_bytes();
        let mut tx = InviteClient {
            request,
            bytes: bytes.clone(),
            timers,
            state: IcState::Calling,
            timer_a: (!timers.reliable).then_some((now + timers.t1, timers.t1)),
            timer_b: Some(now + timers.t1 * 64),
            timer_end: None,
            ack: None,
            transmit: VecDeque::new(),
            output: VecDeque::new(),
        };
        tx.transmit.push_back(bytes);
        tx
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// True once a provisional or final response arrived.
    pub fn has_response(&self) -> bool {
        self.state != IcState::Calling
    }

    pub fn is_terminated(&self) -> bool {
        self.state == IcState::Terminated
    }

    /// Is the INVITE still waiting for a final response?
    pub fn is_pending(&self) -> bool {
        matches!(self.state, IcState::Calling | IcState::Proceeding)
    }

    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        let code = resp.code;
        match (self.state, code) {
            (IcState::Calling | IcState::Proceeding, 100..=199) => {
                self.state = IcState::Proceeding;
                self.timer_a = None;
                self.timer_b = None;
                self.output.push_back(TxOutput::Response(resp));
            }
            (IcState::Calling | IcState::Proceeding, 200..=299) => {
                self.state = IcState::Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_end = Some(now + self.timers.t1 * 64);
                self.output.push_back(TxOutput::Response(resp));
            }
            (IcState::Accepted, 200..=299) => {
                self.output.push_back(TxOutput::Response(resp));
            }
            (IcState::Calling | IcState::Proceeding, 300..=699) => {
                self.state = IcState::Completed;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_end = Some(now + Duration::from_secs(32).max(self.timers.t1 * 64));
                let ack = build_error_ack(&self.request, &resp).to_bytes();
                self.transmit.push_back(ack.clone());
                self.ack = Some(ack);
                self.output.push_back(TxOutput::Response(resp));
            }
            (IcState::Completed, 300..=699) => {
                // A retransmitted final response: the ACK was lost.
                if let Some(ack) = &self.ack {
                    self.transmit.push_back(ack.clone());
                }
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(b) = self.timer_b {
            if now >= b {
                self.state = IcState::Terminated;
                self.timer_a = None;
                self.timer_b = None;
                self.output.push_back(TxOutput::Timeout);
                return;
            }
        }
        if let Some((at, interval)) = self.timer_a {
            if now >= at {
                self.transmit.push_back(self.bytes.clone());
                let next = interval * 2;
                self.timer_a = Some((now + next, next));
            }
        }
        if let Some(end) = self.timer_end {
            if now >= end {
                self.state = IcState::Terminated;
                self.timer_end = None;
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.output.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timer_a.map(|(t, _)| t), self.timer_b, self.timer_end]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The ACK a client transaction sends for a non-2xx final response
/// (RFC 3261 17.1.1.3): same branch, To from the response.
fn build_error_ack(invite: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get("Via") {
        ack.headers.push("Via", via);
    }
    for r in invite.headers.all("Route") {
        ack.headers.push("Route", r);
    }
    ack.headers.push("Max-Forwards", "70");
    if let Some(from) = invite.headers.get("From") {
        ack.headers.push("From", from);
    }
    if let Some(to) = resp.headers.get("To").or(invite.headers.get("To")) {
        ack.headers.push("To", to);
    }
    if let Some(cid) = invite.headers.get("Call-ID") {
        ack.headers.push("Call-ID", cid);
    }
    let seq = invite
        .headers
        .get("CSeq")
        .and_then(|c| super::header::CSeq::parse(c).ok())
        .map_or(1, |c| c.seq);
    ack.headers.push("CSeq", format!("{seq} ACK"));
    ack
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NicState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Non-INVITE client transaction (BYE, CANCEL, ...).
#[derive(Debug)]
pub struct NonInviteClient {
    method: Method,
    bytes: Vec<u8>,
    timers: Timers,
    state: NicState,
    /// Timer E: next retransmission and its current interval.
    timer_e: Option<(Instant, Duration)>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
    transmit: VecDeque<Vec<u8>>,
    output: VecDeque<TxOutput>,
}

impl NonInviteClient {
    pub fn new(now: Instant, request: &Request, timers: Timers) -> Self {
        let bytes = request.to_bytes();
        let mut tx = NonInviteClient {
            method: request.method.clone(),
            bytes: bytes.clone(),
            timers,
            state: NicState::Trying,
            timer_e: (!timers.reliable).then_some((now + timers.t1, timers.t1)),
            timer_f: Some(now + timers.t1 * 64),
            timer_k: None,
            transmit: VecDeque::new(),
            output: VecDeque::new(),
        };
        tx.transmit.push_back(bytes);
        tx
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn is_terminated(&self) -> bool {
        self.state == NicState::Terminated
    }

    /// Has a final response (or a timeout) ended the exchange?
    pub fn is_done(&self) -> bool {
        matches!(self.state, NicState::Completed | NicState::Terminated)
    }

    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        match (self.state, resp.code) {
            (NicState::Trying | NicState::Proceeding, 100..=199) => {
                self.state = NicState::Proceeding;
                self.output.push_back(TxOutput::Response(resp));
            }
            (NicState::Trying | NicState::Proceeding, 200..=699) => {
                self.state = NicState::Completed;
                self.timer_e = None;
                self.timer_f = None;
                self.timer_k = Some(now + self.timers.t4);
                self.output.push_back(TxOutput::Response(resp));
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(f) = self.timer_f {
            if now >= f {
                self.state = NicState::Terminated;
                self.timer_e = None;
                self.timer_f = None;
                self.output.push_back(TxOutput::Timeout);
                return;
            }
        }
        if let Some((at, interval)) = self.timer_e {
            if now >= at {
                self.transmit.push_back(self.bytes.clone());
                // In Proceeding the interval is pinned to T2 (17.1.2.2).
                let next = if self.state == NicState::Proceeding {
                    self.timers.t2
                } else {
                    (interval * 2).min(self.timers.t2)
                };
                self.timer_e = Some((now + next, next));
            }
        }
        if let Some(k) = self.timer_k {
            if now >= k {
                self.state = NicState::Terminated;
                self.timer_k = None;
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.output.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timer_e.map(|(t, _)| t), self.timer_f, self.timer_k]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Headers;

    fn invite() -> Request {
        let mut r = Request::new(Method::Invite, "sip:bob@127.0.0.1:5070");
        r.headers
            .push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc");
        r.headers.push("From", "<sip:callout@127.0.0.1>;tag=1");
        r.headers.push("To", "<sip:bob@127.0.0.1:5070>");
        r.headers.push("Call-ID", "c1");
        r.headers.push("CSeq", "1 INVITE");
        r
    }

    fn resp(code: u16) -> Response {
        let mut h = Headers::new();
        h.push("To", "<sip:bob@127.0.0.1:5070>;tag=x");
        Response {
            code,
            reason: String::new(),
            headers: h,
            body: vec![],
        }
    }

    /// Drive with virtual time, recording when each (re)transmission goes.
    fn run_until<F>(now0: Instant, end: Duration, mut step: F) -> Vec<Duration>
    where
        F: FnMut(Instant) -> (Option<Instant>, usize),
    {
        let mut sent = Vec::new();
        let mut now = now0;
        loop {
            let (next, n) = step(now);
            for _ in 0..n {
                sent.push(now - now0);
            }
            match next {
                Some(t) if t - now0 <= end => now = t,
                _ => return sent,
            }
        }
    }

    #[test]
    fn timer_a_doubles_and_timer_b_fires_at_64_t1() {
        let t0 = Instant::now();
        let mut tx = InviteClient::new(t0, invite(), Timers::default());
        let sent = run_until(t0, Duration::from_secs(40), |now| {
            tx.handle_timeout(now);
            let mut n = 0;
            while tx.poll_transmit().is_some() {
                n += 1;
            }
            (tx.poll_timeout(), n)
        });
        let ms: Vec<u128> = sent.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(tx.poll_output(), Some(TxOutput::Timeout));
        assert!(tx.is_terminated());
    }

    #[test]
    fn provisional_stops_retransmission_and_error_is_acked_during_timer_d() {
        let t0 = Instant::now();
        let mut tx = InviteClient::new(t0, invite(), Timers::default());
        tx.poll_transmit();
        tx.handle_response(t0 + Duration::from_millis(100), resp(180));
        assert_eq!(tx.poll_timeout(), None, "Proceeding has no timer");
        tx.handle_response(t0 + Duration::from_secs(2), resp(486));
        let ack = String::from_utf8(tx.poll_transmit().unwrap()).unwrap();
        assert!(ack.starts_with("ACK sip:bob@127.0.0.1:5070 SIP/2.0"));
        assert!(
            ack.contains("branch=z9hG4bKabc") && ack.contains("tag=x") && ack.contains("1 ACK")
        );
        // Retransmitted 486 is re-ACKed and not passed up twice.
        tx.handle_response(t0 + Duration::from_secs(3), resp(486));
        assert!(tx.poll_transmit().is_some());
        assert!(matches!(tx.poll_output(), Some(TxOutput::Response(r)) if r.code == 180));
        assert!(matches!(tx.poll_output(), Some(TxOutput::Response(r)) if r.code == 486));
        assert_eq!(tx.poll_output(), None);
        // Timer D: 32 s after the final response.
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(34)));
        tx.handle_timeout(t0 + Duration::from_secs(34));
        assert!(tx.is_terminated());
    }

    #[test]
    fn accepted_state_passes_every_2xx_up_until_timer_m() {
        let t0 = Instant::now();
        let mut tx = InviteClient::new(t0, invite(), Timers::default());
        tx.handle_response(t0, resp(200));
        tx.handle_response(t0 + Duration::from_millis(500), resp(200));
        assert_eq!(
            tx.poll_output().map(|o| matches!(o, TxOutput::Response(_))),
            Some(true)
        );
        assert_eq!(
            tx.poll_output().map(|o| matches!(o, TxOutput::Response(_))),
            Some(true)
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    }

    #[test]
    fn timer_e_caps_at_t2_f_at_64_t1_and_k_at_t4() {
        let t0 = Instant::now();
        let bye = {
            let mut r = invite();
            r.method = Method::Bye;
            r
        };
        let mut tx = NonInviteClient::new(t0, &bye, Timers::default());
        let sent = run_until(t0, Duration::from_secs(40), |now| {
            tx.handle_timeout(now);
            let mut n = 0;
            while tx.poll_transmit().is_some() {
                n += 1;
            }
            (tx.poll_timeout(), n)
        });
        let ms: Vec<u128> = sent.iter().map(|d| d.as_millis()).collect();
        assert_eq!(
            ms,
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(tx.poll_output(), Some(TxOutput::Timeout));

        let mut tx = NonInviteClient::new(t0, &bye, Timers::default());
        tx.handle_response(t0 + Duration::from_millis(10), resp(200));
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_millis(5010)));
        tx.handle_timeout(t0 + Duration::from_millis(5010));
        assert!(tx.is_terminated());
    }
}

//! One incoming call: the UAS side of an INVITE dialog (RFC 3261 13.3,
//! 12.1.1), used by `callout softphone` and the demo. Sans-IO.
//!
//! Call order: the endpoint creates it from an INVITE (100 and 180 are
//! queued, and a [`CallEvent::Offered`] event asks the owner for an
//! answer); the owner calls [`IncomingCall::answer`] with its SDP (or
//! [`IncomingCall::hangup`] to decline); ACK, BYE, CANCEL, INFO and
//! retransmitted INVITEs arrive through [`IncomingCall::handle_request`];
//! drain `poll_transmit` / `poll_event`, and sleep until `poll_timeout`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::call::{parse_info_dtmf, CallEvent, EndReason, ALLOW};
use super::header::{CSeq, NameAddr, Via};
use super::message::{Method, Request, Response};
use super::sdp::{self, Negotiated};
use super::transaction::{NonInviteClient, Timers, TxOutput};
use super::Transmit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offered,
    /// 200 sent, waiting for ACK (Timer G-style retransmission).
    Answering,
    Confirmed,
    Terminating,
    Ended,
}

/// The UAS call state machine.
#[derive(Debug)]
pub struct IncomingCall {
    invite: Request,
    invite_branch: String,
    peer: SocketAddr,
    local: SocketAddr,
    local_tag: String,
    branch_seed: String,
    timers: Timers,
    offer: Negotiated,
    phase: Phase,
    last_response: Response,
    /// 2xx retransmission: next send and current interval.
    retransmit: Option<(Instant, Duration)>,
    ack_deadline: Option<Instant>,
    remote_target: String,
    route_set: Vec<String>,
    cseq: u32,
    remote_cseq: u32,
    bye_tx: Option<NonInviteClient>,
    linger_until: Option<Instant>,
    transmit: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
}

impl IncomingCall {
    /// Take an out-of-dialog INVITE. `Err` carries the response to send
    /// when the offer is unusable (488).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        invite: Request,
        peer: SocketAddr,
        local: SocketAddr,
        local_tag: String,
        branch_seed: String,
        timers: Timers,
    ) -> Result<IncomingCall, Response> {
        let offer = match sdp::parse_offer(&invite.body) {
            Ok(o) => o,
            Err(_) => return Err(Response::for_request(&invite, 488, Some(&local_tag))),
        };
        let invite_branch = invite
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let remote_target = invite
            .headers
            .get("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|a| a.uri)
            .unwrap_or_else(|| format!("sip:{peer}"));
        let route_set = invite
            .headers
            .all("Record-Route")
            .map(str::to_string)
            .collect();
        let remote_cseq = invite
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .map_or(0, |c| c.seq);
        let ringing = Response::for_request(&invite, 180, Some(&local_tag));
        let mut call = IncomingCall {
            invite,
            invite_branch,
            peer,
            local,
            local_tag,
            branch_seed,
            timers,
            offer: offer.clone(),
            phase: Phase::Offered,
            last_response: ringing.clone(),
            retransmit: None,
            ack_deadline: None,
            remote_target,
            route_set,
            cseq: 0,
            remote_cseq,
            bye_tx: None,
            linger_until: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        let _ = now;
        call.send(ringing);
        call.events.push_back(CallEvent::Offered(offer));
        Ok(call)
    }

    pub fn call_id(&self) -> &str {
        self.invite.headers.get("Call-ID").unwrap_or_default()
    }

    /// The address the INVITE came from.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Who is calling (the From URI).
    pub fn caller(&self) -> String {
        self.invite
            .headers
            .get("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .map(|a| a.uri)
            .unwrap_or_default()
    }

    fn send(&mut self, mut resp: Response) {
        if resp.code >= 200 || resp.code == 180 {
            resp.headers
                .push("Contact", format!("<sip:callout@{}>", self.local));
        }
        self.transmit.push_back(Transmit {
            dest: self.peer,
            bytes: resp.to_bytes(),
        });
        self.last_response = resp;
    }

    /// Accept the call with `answer_sdp`.
    pub fn answer(&mut self, now: Instant, answer_sdp: Vec<u8>) {
        if self.phase != Phase::Offered {
            return;
        }
        let mut ok = Response::for_request(&self.invite, 200, Some(&self.local_tag));
        for r in &self.route_set {
            ok.headers.push("Record-Route", r.clone());
        }
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = answer_sdp;
        self.send(ok);
        self.phase = Phase::Answering;
        self.retransmit = Some((now + self.timers.t1, self.timers.t1));
        self.ack_deadline = Some(now + self.timers.t1 * 64);
    }

    /// Decline (603) before answering, or BYE once answered.
    pub fn hangup(&mut self, now: Instant) {
        match self.phase {
            Phase::Offered => {
                let resp = Response::for_request(&self.invite, 603, Some(&self.local_tag));
                self.send(resp);
                self.end(now, EndReason::Declined { code: 603 });
            }
            Phase::Answering | Phase::Confirmed => self.send_bye(now),
            Phase::Terminating | Phase::Ended => {}
        }
    }

    fn send_bye(&mut self, now: Instant) {
        self.cseq += 1;
        self.retransmit = None;
        self.ack_deadline = None;
        let mut req = Request::new(Method::Bye, self.remote_target.clone());
        let branch = format!("z9hG4bK{}b{}", self.branch_seed, self.cseq);
        req.headers.push(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch};rport", self.local),
        );
        req.headers.push("Max-Forwards", "70");
        for r in &self.route_set {
            req.headers.push("Route", r.clone());
        }
        // Our From is the INVITE's To (with our tag); our To its From.
        let from = self.invite.headers.get("To").unwrap_or_default();
        req.headers
            .push("From", format!("{from};tag={}", self.local_tag));
        req.headers
            .push("To", self.invite.headers.get("From").unwrap_or_default());
        req.headers.push("Call-ID", self.call_id());
        req.headers.push("CSeq", format!("{} BYE", self.cseq));
        self.bye_tx = Some(NonInviteClient::new(now, &req, self.timers));
        self.phase = Phase::Terminating;
        self.drain_bye(now);
    }

    fn drain_bye(&mut self, now: Instant) {
        let mut done = false;
        if let Some(tx) = &mut self.bye_tx {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmit.push_back(Transmit {
                    dest: self.peer,
                    bytes,
                });
            }
            while let Some(out) = tx.poll_output() {
                done |= matches!(out, TxOutput::Timeout)
                    || matches!(out, TxOutput::Response(r) if r.code >= 200);
            }
        }
        if done {
            self.end(now, EndReason::LocalHangup);
        }
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.retransmit = None;
        self.ack_deadline = None;
        self.linger_until = Some(now + self.timers.t1 * 64);
        self.events.push_back(CallEvent::Ended(reason));
    }

    pub fn is_finished(&self, now: Instant) -> bool {
        self.phase == Phase::Ended && self.linger_until.is_none_or(|t| now >= t)
    }

    /// A request with this call's Call-ID from `source`. Returns the
    /// response to send. Only the caller (the INVITE's source) speaks in
    /// this dialog.
    pub fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        req: &Request,
        cseq: &CSeq,
    ) -> Option<Response> {
        if source != self.peer {
            return (req.method != Method::Ack)
                .then(|| Response::for_request(req, 481, Some(&self.local_tag)));
        }
        let branch = req
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        match req.method {
            Method::Invite if branch == self.invite_branch => {
                // A retransmitted INVITE gets the last response again.
                return Some(self.last_response.clone());
            }
            Method::Ack => {
                if self.phase == Phase::Answering {
                    self.phase = Phase::Confirmed;
                    self.retransmit = None;
                    self.ack_deadline = None;
                    self.events
                        .push_back(CallEvent::Answered(self.offer.clone()));
                }
                return None;
            }
            Method::Cancel if branch == self.invite_branch => {
                let ok = Response::for_request(req, 200, Some(&self.local_tag));
                if self.phase == Phase::Offered {
                    let terminated =
                        Response::for_request(&self.invite, 487, Some(&self.local_tag));
                    self.send(terminated);
                    self.end(now, EndReason::Cancelled);
                }
                return Some(ok);
            }
            _ => {}
        }
        if cseq.seq <= self.remote_cseq && req.method != Method::Ack {
            return Some(Response::for_request(req, 500, None));
        }
        self.remote_cseq = cseq.seq;
        Some(match req.method {
            Method::Bye => {
                self.end(now, EndReason::RemoteHangup);
                Response::for_request(req, 200, None)
            }
            Method::Info => match parse_info_dtmf(req) {
                Some(Ok((digit, duration_ms))) => {
                    self.events
                        .push_back(CallEvent::InfoDigit { digit, duration_ms });
                    Response::for_request(req, 200, None)
                }
                Some(Err(())) => Response::for_request(req, 400, None),
                None => Response::for_request(req, 415, None),
            },
            Method::Options => Response::for_request(req, 200, None),
            _ => {
                let mut r = Response::for_request(req, 405, None);
                r.headers.push("Allow", ALLOW);
                r
            }
        })
    }

    /// Responses to our BYE.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        if let Some(tx) = &mut self.bye_tx {
            tx.handle_response(now, resp);
        }
        self.drain_bye(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ack_deadline.is_some_and(|t| now >= t) {
            // RFC 3261 13.3.1.4: no ACK within 64*T1 ends the dialog.
            self.send_bye(now);
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                let resp = self.last_response.clone();
                self.transmit.push_back(Transmit {
                    dest: self.peer,
                    bytes: resp.to_bytes(),
                });
                let next = (interval * 2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
            }
        }
        if let Some(tx) = &mut self.bye_tx {
            tx.handle_timeout(now);
        }
        self.drain_bye(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.retransmit.map(|(t, _)| t),
            self.ack_deadline,
            self.linger_until,
            self.bye_tx.as_ref().and_then(|t| t.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

//! One outbound call: the UAC side of an INVITE dialog (RFC 3261 12-15)
//! on top of the client transactions. Sans-IO.
//!
//! Call order: [`Call::new`] queues the INVITE; feed responses and in-dialog
//! requests routed to this call by Call-ID ([`Call::handle_response`],
//! [`Call::handle_request`]), local commands ([`Call::hangup`]) and timer
//! expiry ([`Call::handle_timeout`]); after each, drain
//! [`Call::poll_transmit`] and [`Call::poll_event`], and sleep until
//! [`Call::poll_timeout`]. Once [`Call::is_finished`] the owner drops it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{Challenge, Credentials};
use super::fork::ForkedDialog;
use super::header::{own_via_branch, CSeq, NameAddrRef, ViaRef};
use super::leg::{self, Leg};
use super::message::{decimal, push_decimal_str, Headers, Method, Request, Response};
use super::offer_answer::LocalSdp;
use super::prack::{self, Prack, Provisional};
use super::sdp::{self, Negotiated};
use super::session_timer::{SessionTimer, TimerAction};
use super::transaction::{InviteClient, NonInviteClient, Timers, TxOutput};
use super::transport::Transport;
use super::Transmit;

#[path = "call_dialog.rs"]
mod dialog;

pub(crate) use super::info_dtmf::parse_info_dtmf;

/// Everything needed to place one call.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Request-URI of the INVITE, e.g. `sip:bob@127.0.0.1:5070`.
    pub target: String,
    /// Our address-of-record for From, e.g. `sip:callout@127.0.0.1`.
    pub from_uri: String,
    pub from_display: Option<String>,
    /// Local SIP socket address, for Via and Contact.
    pub local: SocketAddr,
    /// Where the INVITE is sent: the resolved target or an outbound proxy.
    pub destination: SocketAddr,
    pub credentials: Option<Credentials>,
    /// How long to let it ring before sending CANCEL.
    pub ring_timeout: Duration,
    pub sdp_offer: Vec<u8>,
    pub timers: Timers,
    pub user_agent: String,
    /// Extra INVITE headers (e.g. `X-Callout-Notification` for tracing).
    /// Values with CR or LF are dropped: they could inject headers.
    pub extra_headers: Vec<(String, String)>,
}

/// How a call ended, mapped from SIP to terms an escalation engine uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EndReason {
    /// 486 Busy Here, 600 Busy Everywhere.
    Busy { code: u16 },
    /// 603 Decline.
    Declined { code: u16 },
    /// Rang until our ring timeout (we cancelled), or 480/408 from the far end.
    NoAnswer { code: Option<u16> },
    /// No response at all (Timer B), or 404/410/484/604 and 503.
    Unreachable { code: Option<u16> },
    /// Any other final failure, including unanswerable authentication.
    Rejected { code: u16, reason: String },
    /// We cancelled before an answer on request of the owner.
    Cancelled,
    /// The answer had no usable media (no common codec).
    MediaMismatch,
    /// Answered, then we hung up.
    LocalHangup,
    /// Answered, then the far end hung up.
    RemoteHangup,
    /// Answered, then the session timer ran out (RFC 4028): the refresh
    /// never came, or ours was refused with 408/481. We sent BYE.
    SessionExpired,
    /// 300/301/302 with these Contact targets, highest q first; the
    /// dialling side decides whether to follow (`sip::redirect`).
    Redirected { code: u16, targets: Vec<String> },
    /// A redirect callout would not follow: the target is not one the
    /// dialplan names, or too many hops.
    RedirectRefused {
        code: u16,
        target: String,
        why: super::redirect::Refusal,
    },
}

/// What the call reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A provisional response (100, 180, 183, ...).
    Progress {
        code: u16,
    },
    /// 180 (or 183 without SDP): the phone rings.
    Ringing,
    /// 1xx with SDP: the far end plays early media.
    EarlyMedia(Negotiated),
    /// 2xx: the call is up and ACKed.
    Answered(Negotiated),
    /// A later offer/answer exchange changed the media (re-INVITE or
    /// UPDATE from the far end: hold, resume, a new address or codec).
    MediaUpdated(Negotiated),
    /// An incoming call (softphone side) offers this media; the owner
    /// answers or declines.
    Offered(Negotiated),
    /// A digit carried by SIP INFO.
    InfoDigit {
        digit: char,
        duration_ms: Option<u32>,
    },
    /// The final failure response, just before `Ended`: what a trunk's
    /// backoff needs (`crate::channels`).
    Refused(Refusal),
    Ended(EndReason),
}

/// A final failure response as the caller's trunk policy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    /// `Retry-After` seconds (RFC 3261 20.33), when given.
    pub retry_after_s: Option<u32>,
    /// The status phrase and any `Reason` header (RFC 3326).
    pub reason: String,
}

impl Refusal {
    fn of(resp: &Response) -> Refusal {
        let retry_after_s = resp.headers.get("Retry-After").and_then(|v| {
            let digits: String = v
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .take(9)
                .collect();
            digits.parse().ok()
        });
        let mut reason: String = resp.reason.chars().take(200).collect();
        if let Some(r) = resp.headers.get("Reason") {
            reason.push_str("; ");
            reason.extend(r.chars().take(200));
        }
        Refusal {
            code: resp.code,
            retry_after_s,
            reason,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Inviting,
    Confirmed,
    Terminating,
    Ended,
}

/// Why we want an unanswered INVITE gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelCause {
    RingTimeout,
    Owner,
}

/// The UAC call state machine.
#[derive(Debug)]
pub struct Call {
    cfg: CallConfig,
    transport: Transport,
    call_id: String,
    local_tag: String,
    branch_seed: String,
    branch_counter: u32,
    /// The fixed pieces of the requests this call sends, formatted once:
    /// `SIP/2.0/UDP <local>;branch=`, the From value and the Contact
    /// value (the local address, From URI and tag never change).
    via_head: String,
    from_value: String,
    contact_value: String,
    cseq: u32,
    phase: Phase,
    invites: Vec<InviteClient>,
    cancel_tx: Option<NonInviteClient>,
    bye_tx: Option<NonInviteClient>,
    ring_deadline: Option<Instant>,
    cancel: Option<CancelCause>,
    cancel_sent: bool,
    cancel_guard: Option<Instant>,
    remote_tag: Option<String>,
    remote_target: Option<String>,
    /// In-dialog requests refused: wrong tags or not from the peer.
    stats_foreign_requests: u64,
    route_set: Vec<String>,
    /// ACK for the 2xx, resent on each retransmitted 2xx until `ack_until`.
    ack: Option<(Vec<u8>, SocketAddr)>,
    ack_until: Option<Instant>,
    auth_header: Option<(String, String)>,
    /// Credentials for a challenged BYE (RFC 3261 22.2: re-sent once).
    bye_auth: Option<(String, String)>,
    auth_attempts: u8,
    last_nonce: Option<String>,
    remote_cseq: Option<u32>,
    last_served: Option<(u32, Method, Response)>,
    end_reason: Option<EndReason>,
    /// Why we sent BYE, when it was not the owner's hang-up.
    bye_reason: Option<EndReason>,
    linger_until: Option<Instant>,
    /// Our SDP so far, to answer the far end's new offers: learnt from
    /// our own offer at the first of them (`None` inside: the offer is not
    /// ours to parse), not at every call's start, which few need.
    local_sdp: Option<Option<LocalSdp>>,
    /// We offered in a 2xx to an offerless re-INVITE: the ACK answers.
    awaiting_ack_answer: bool,
    prack: Prack,
    /// PRACK transactions: where they go and their Via branch.
    prack_txs: Vec<(NonInviteClient, SocketAddr, String)>,
    /// The far end answered 421: the INVITE now requires 100rel.
    require_100rel: bool,
    forks: Vec<ForkedDialog>,
    session_timer: Option<SessionTimer>,
    /// Our session refresh (UPDATE): where it goes and its branch.
    refresh_tx: Option<(NonInviteClient, SocketAddr, String)>,
    transmit: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
}

impl Call {
    /// Create the call and queue its INVITE.
    pub fn new(
        now: Instant,
        cfg: CallConfig,
        call_id: String,
        local_tag: String,
        branch_seed: String,
    ) -> Call {
        Call::new_on(now, cfg, Transport::Udp, call_id, local_tag, branch_seed)
    }

    /// As [`Call::new`], over `transport` (Via, Contact and, when
    /// reliable, no request retransmissions).
    pub fn new_on(
        now: Instant,
        mut cfg: CallConfig,
        transport: Transport,
        call_id: String,
        local_tag: String,
        branch_seed: String,
    ) -> Call {
        cfg.timers.reliable = transport.is_reliable();
        let ring_deadline = Some(now + cfg.ring_timeout);
        // The address formatted once for both (`fmt` of a socket address
        // was measurable per request).
        let local = cfg.local.to_string();
        let mut via_head = String::with_capacity(20 + local.len());
        for p in ["SIP/2.0/", transport.via_name(), " ", &local, ";branch="] {
            via_head.push_str(p);
        }
        let from_value = match &cfg.from_display {
            // A display name from a file must not end the header early.
            Some(d) => format!(
                "\"{}\" <{}>;tag={}",
                d.replace(['"', '\\'], "").replace(char::is_control, ""),
                cfg.from_uri,
                local_tag
            ),
            None => format!("<{}>;tag={}", cfg.from_uri, local_tag),
        };
        let mut contact_value = String::with_capacity(32 + local.len());
        for p in ["<sip:callout@", &local, transport.uri_param(), ">"] {
            contact_value.push_str(p);
        }
        let mut call = Call {
            cfg,
            transport,
            call_id,
            local_tag,
            branch_seed,
            branch_counter: 0,
            via_head,
            from_value,
            contact_value,
            cseq: 0,
            phase: Phase::Inviting,
            invites: Vec::new(),
            cancel_tx: None,
            bye_tx: None,
            ring_deadline,
            cancel: None,
            cancel_sent: false,
            cancel_guard: None,
            remote_tag: None,
            remote_target: None,
            stats_foreign_requests: 0,
            route_set: Vec::new(),
            ack: None,
            ack_until: None,
            auth_header: None,
            bye_auth: None,
            auth_attempts: 0,
            last_nonce: None,
            remote_cseq: None,
            last_served: None,
            end_reason: None,
            bye_reason: None,
            linger_until: None,
            local_sdp: None,
            awaiting_ack_answer: false,
            prack: Prack::default(),
            prack_txs: Vec::new(),
            require_100rel: false,
            forks: Vec::new(),
            session_timer: None,
            refresh_tx: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        call.send_invite(now);
        call
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }

    pub fn end_reason(&self) -> Option<&EndReason> {
        self.end_reason.as_ref()
    }

    pub fn is_answered(&self) -> bool {
        matches!(self.phase, Phase::Confirmed | Phase::Terminating)
    }

    /// Where the INVITE went (the proxy, or the callee itself).
    pub fn destination(&self) -> SocketAddr {
        self.cfg.destination
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The Request-URI the call was placed to.
    pub fn target(&self) -> &str {
        &self.cfg.target
    }

    /// True when the call has ended and no retransmission can still need
    /// an answer from it.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.phase == Phase::Ended && self.linger_until.is_none_or(|t| now >= t)
    }

    fn next_branch(&mut self) -> String {
        self.branch_counter += 1;
        let mut b = String::with_capacity(7 + self.branch_seed.len() + 10);
        b.push_str("z9hG4bK");
        b.push_str(&self.branch_seed);
        push_decimal_str(&mut b, u64::from(self.branch_counter));
        b
    }

    /// Headers sized for a request of this call: growing the buffer by
    /// doubling was measurable.
    fn request_headers(&self) -> Headers {
        Headers::with_capacity(
            16,
            384 + self.cfg.target.len() * 2 + self.cfg.user_agent.len(),
        )
    }

    // The header builders below write straight into the request's
    // header buffer from the call's fixed pieces: a `String` each, per
    // request, and then `fmt` of the socket address, were measurable.
    fn push_via(&self, h: &mut Headers, branch: &str) {
        h.push_parts("Via", &[&self.via_head, branch, ";rport"]);
    }

    fn push_from(&self, h: &mut Headers) {
        h.push("From", &self.from_value);
    }

    fn push_to(&self, h: &mut Headers) {
        match &self.remote_tag {
            Some(t) => h.push_parts("To", &["<", &self.cfg.target, ">;tag=", t]),
            None => h.push_parts("To", &["<", &self.cfg.target, ">"]),
        }
    }

    fn push_contact(&self, h: &mut Headers) {
        h.push("Contact", &self.contact_value);
    }

    /// `CSeq: <seq> <method>`.
    fn push_cseq(h: &mut Headers, seq: u32, method: &str) {
        let mut digits = [0; 20];
        h.push_parts("CSeq", &[decimal(u64::from(seq), &mut digits), " ", method]);
    }

    fn send_invite(&mut self, now: Instant) {
        self.cseq += 1;
        let branch = self.next_branch();
        let mut req = Request::new(Method::Invite, self.cfg.target.clone());
        req.headers = self.request_headers();
        self.push_via(&mut req.headers, &branch);
        req.headers.push("Max-Forwards", "70");
        self.push_from(&mut req.headers);
        req.headers.push_parts("To", &["<", &self.cfg.target, ">"]);
        req.headers.push("Call-ID", &self.call_id);
        Call::push_cseq(&mut req.headers, self.cseq, "INVITE");
        self.push_contact(&mut req.headers);
        if let Some((name, value)) = &self.auth_header {
            req.headers.push(name, value);
        }
        req.headers.push("Allow", ALLOW);
        req.headers.push("Supported", SUPPORTED);
        if self.require_100rel {
            req.headers.push("Require", "100rel");
        }
        req.headers.push("User-Agent", &self.cfg.user_agent);
        for (name, value) in &self.cfg.extra_headers {
            let safe_name = !name.is_empty() && name.bytes().all(super::message::is_token_byte);
            if safe_name && !value.contains(['\r', '\n']) {
                req.headers.push(name, value);
            }
        }
        req.headers.push("Content-Type", "application/sdp");
        req.body = self.cfg.sdp_offer.clone();
        let tx = InviteClient::new(now, req, self.cfg.timers);
        self.invites.push(tx);
        self.drain_invites(now);
    }

    /// The INVITE transaction whose final response decides the call.
    fn current_invite(&self) -> Option<&InviteClient> {
        self.invites.last()
    }

    /// Ask for the call to end: CANCEL while unanswered, BYE once up.
    pub fn hangup(&mut self, now: Instant) {
        match self.phase {
            Phase::Inviting => self.request_cancel(now, CancelCause::Owner),
            Phase::Confirmed => self.send_bye(now),
            Phase::Terminating | Phase::Ended => {}
        }
    }

    fn request_cancel(&mut self, now: Instant, cause: CancelCause) {
        if self.cancel.is_some() {
            return;
        }
        self.cancel = Some(cause);
        self.ring_deadline = None;
        // RFC 3261 9.1: no CANCEL before a provisional response.
        if self.current_invite().is_some_and(|t| t.has_response()) {
            self.send_cancel(now);
        }
    }

    fn send_cancel(&mut self, now: Instant) {
        let Some(invite) = self.current_invite().map(|t| t.request().clone()) else {
            return;
        };
        self.cancel_sent = true;
        let mut req = Request::new(Method::Cancel, invite.uri.clone());
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                req.headers.push(name, v);
            }
        }
        for r in invite.headers.all("Route") {
            req.headers.push("Route", r);
        }
        Call::push_cseq(&mut req.headers, self.cseq, "CANCEL");
        let tx = NonInviteClient::new(now, &req, self.cfg.timers);
        self.cancel_tx = Some(tx);
        self.cancel_guard = Some(now + self.cfg.timers.t1 * 64);
        self.drain_nict(now);
    }

    fn send_bye(&mut self, now: Instant) {
        self.cseq += 1;
        let branch = self.next_branch();
        let target = self
            .remote_target
            .clone()
            .unwrap_or_else(|| self.cfg.target.clone());
        let mut req = Request::new(Method::Bye, target);
        req.headers = self.request_headers();
        self.push_via(&mut req.headers, &branch);
        req.headers.push("Max-Forwards", "70");
        for r in &self.route_set {
            req.headers.push("Route", r);
        }
        self.push_from(&mut req.headers);
        self.push_to(&mut req.headers);
        req.headers.push("Call-ID", &self.call_id);
        Call::push_cseq(&mut req.headers, self.cseq, "BYE");
        if let Some((name, value)) = &self.bye_auth {
            req.headers.push(name, value);
        }
        req.headers.push("User-Agent", &self.cfg.user_agent);
        self.phase = Phase::Terminating;
        self.bye_tx = Some(NonInviteClient::new(now, &req, self.cfg.timers));
        self.drain_nict(now);
    }

    /// Where in-dialog requests go: the first loose route, else the remote
    /// target; a host name we cannot resolve here falls back to the
    /// address the INVITE went to (the driver resolved that one).
    fn dialog_destination(&self) -> SocketAddr {
        leg::destination(
            &self.route_set,
            self.remote_target.as_deref(),
            self.cfg.destination,
        )
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.ring_deadline = None;
        self.cancel_guard = None;
        self.linger_until = Some(now + self.cfg.timers.t1 * 64);
        self.end_reason = Some(reason.clone());
        self.events.push_back(CallEvent::Ended(reason));
    }

    /// A response whose Call-ID is ours.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        let Some(cseq) = resp.headers.get("CSeq").and_then(|c| CSeq::parse(c).ok()) else {
            return;
        };
        // Read in place: the response is handed on below, the branch is
        // only compared.
        let branch: Option<String> = resp
            .headers
            .get("Via")
            .and_then(|v| ViaRef::parse(v).ok())
            .and_then(|v| v.branch().map(Cow::into_owned));
        match cseq.method {
            Method::Invite => {
                let Some(tx) = self.invites.iter_mut().find(|t| {
                    t.request().headers.get("Via").and_then(own_via_branch) == branch.as_deref()
                }) else {
                    return;
                };
                tx.handle_response(now, resp);
                self.drain_invites(now);
            }
            Method::Cancel => {
                if let Some(tx) = &mut self.cancel_tx {
                    tx.handle_response(now, resp);
                }
                self.drain_nict(now);
            }
            Method::Bye => {
                if let Some(f) = self
                    .forks
                    .iter_mut()
                    .find(|f| branch.as_deref() == Some(f.bye_branch.as_str()))
                {
                    f.bye.handle_response(now, resp);
                } else if let Some(tx) = &mut self.bye_tx {
                    tx.handle_response(now, resp);
                }
                self.drain_nict(now);
            }
            Method::Update => {
                if let Some((tx, _, b)) = &mut self.refresh_tx {
                    if branch.as_deref() == Some(b.as_str()) {
                        tx.handle_response(now, resp);
                    }
                }
                self.drain_nict(now);
            }
            Method::Prack => {
                if let Some((tx, _, _)) = self
                    .prack_txs
                    .iter_mut()
                    .find(|(_, _, b)| branch.as_deref() == Some(b.as_str()))
                {
                    tx.handle_response(now, resp);
                }
                self.drain_nict(now);
            }
            _ => {}
        }
    }

    fn drain_invites(&mut self, now: Instant) {
        let dest = self.cfg.destination;
        let mut outputs = Vec::new();
        let last = self.invites.len().saturating_sub(1);
        for (i, tx) in self.invites.iter_mut().enumerate() {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmit.push_back(Transmit { dest, bytes });
            }
            while let Some(out) = tx.poll_output() {
                // Responses to superseded (challenged) INVITEs only needed
                // their ACK, which the transaction sent.
                if i == last {
                    outputs.push(out);
                }
            }
        }
        self.invites
            .retain(|t| !t.is_terminated() || t.is_pending());
        for out in outputs {
            match out {
                TxOutput::Response(r) => self.on_invite_response(now, r),
                TxOutput::Timeout => {
                    let reason = match self.cancel {
                        Some(CancelCause::Owner) => EndReason::Cancelled,
                        _ => EndReason::Unreachable { code: None },
                    };
                    self.end(now, reason);
                }
            }
        }
    }

    fn drain_nict(&mut self, now: Instant) {
        // CANCEL follows the INVITE's path; BYE follows the dialog's.
        if let Some(tx) = &mut self.cancel_tx {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmit.push_back(Transmit {
                    dest: self.cfg.destination,
                    bytes,
                });
            }
        }
        // The dialog's destination (two URI parses) only when a BYE goes.
        let mut byes = Vec::new();
        if let Some(tx) = &mut self.bye_tx {
            while let Some(bytes) = tx.poll_transmit() {
                byes.push(bytes);
            }
        }
        if !byes.is_empty() {
            let dest = self.dialog_destination();
            self.transmit
                .extend(byes.into_iter().map(|bytes| Transmit { dest, bytes }));
        }
        let may_answer = self.bye_auth.is_none() && self.cfg.credentials.is_some();
        let mut bye_challenge = None;
        let mut bye_done = self.bye_tx.as_mut().is_some_and(|tx| {
            let mut done = false;
            while let Some(out) = tx.poll_output() {
                if let TxOutput::Response(r) = &out {
                    if may_answer && matches!(r.code, 401 | 407) {
                        bye_challenge = Some(r.clone());
                        continue;
                    }
                }
                done |= matches!(out, TxOutput::Timeout)
                    || matches!(out, TxOutput::Response(r) if r.code >= 200);
            }
            done
        });
        if let Some(r) = bye_challenge {
            // A challenged BYE is re-sent once with credentials; refused
            // (no credentials for that realm) the dialog is over for us.
            let target = self
                .remote_target
                .clone()
                .unwrap_or_else(|| self.cfg.target.clone());
            self.last_nonce = None;
            match self.answer_challenge(&r, "BYE", &target) {
                Ok(h) => {
                    self.bye_auth = Some(h);
                    self.send_bye(now);
                    return;
                }
                Err(_) => bye_done = true,
            }
        }
        if let Some(tx) = &mut self.cancel_tx {
            while tx.poll_output().is_some() {}
        }
        for (tx, dest, _) in &mut self.prack_txs {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmit.push_back(Transmit { dest: *dest, bytes });
            }
            while tx.poll_output().is_some() {}
        }
        self.prack_txs.retain(|(tx, _, _)| !tx.is_terminated());
        let mut refresh_result = None;
        if let Some((tx, dest, _)) = &mut self.refresh_tx {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmit.push_back(Transmit { dest: *dest, bytes });
            }
            while let Some(out) = tx.poll_output() {
                match out {
                    TxOutput::Response(r) if r.code >= 200 => refresh_result = Some(Some(r)),
                    TxOutput::Response(_) => {}
                    TxOutput::Timeout => refresh_result = Some(None),
                }
            }
        }
        if let Some(result) = refresh_result {
            self.refresh_tx = None;
            self.on_refresh_result(now, result);
        }
        for f in &mut self.forks {
            f.drain(&mut self.transmit);
        }
        if bye_done && self.phase == Phase::Terminating {
            let reason = self.bye_reason.take().unwrap_or(EndReason::LocalHangup);
            self.end(now, reason);
        }
    }

    fn on_invite_response(&mut self, now: Instant, resp: Response) {
        let to_tag = leg::to_tag(&resp);
        match resp.code {
            100..=199 => {
                if self.phase != Phase::Inviting {
                    return;
                }
                let rack = match self.prack.classify(&resp) {
                    Provisional::Repeat => return,
                    Provisional::Acknowledge { rack } => Some(rack),
                    Provisional::Unreliable => None,
                };
                if resp.code > 100 && self.remote_tag.is_none() {
                    self.remote_tag = to_tag;
                    // The early dialog's target and routes (RFC 3261
                    // 12.1.2), for PRACK and UPDATE; the 2xx replaces them.
                    if let Some(l) = Leg::from_response(&resp) {
                        self.remote_target = l.target;
                        self.route_set = l.route_set;
                    }
                }
                if let Some(rack) = rack {
                    self.send_prack(now, &resp, rack);
                }
                self.events
                    .push_back(CallEvent::Progress { code: resp.code });
                match sdp::parse_answer(&resp.body) {
                    Ok(media) if resp.code > 100 && !resp.body.is_empty() => {
                        self.events.push_back(CallEvent::EarlyMedia(media))
                    }
                    _ if resp.code == 180 || resp.code == 183 => {
                        self.events.push_back(CallEvent::Ringing)
                    }
                    _ => {}
                }
                // RFC 3261 9.1: a CANCEL held back waits for any 1xx.
                if self.cancel.is_some() && !self.cancel_sent {
                    self.send_cancel(now);
                }
            }
            200..=299 => self.on_2xx(now, resp, to_tag),
            // RFC 3262 4: the far end insists on reliable provisionals.
            421 if self.phase == Phase::Inviting
                && !self.require_100rel
                && prack::lists(&resp.headers, "Require", "100rel") =>
            {
                self.require_100rel = true;
                self.remote_tag = None;
                self.send_invite(now);
            }
            401 | 407 if self.phase == Phase::Inviting => {
                if let Err(reason) = self.retry_with_auth(now, &resp) {
                    self.end(
                        now,
                        EndReason::Rejected {
                            code: resp.code,
                            reason,
                        },
                    );
                }
            }
            code => {
                if self.phase != Phase::Inviting {
                    return;
                }
                let reason = match (self.cancel, code) {
                    (Some(CancelCause::RingTimeout), 487) => EndReason::NoAnswer { code: None },
                    (Some(CancelCause::Owner), 487) => EndReason::Cancelled,
                    // 305 (use proxy) and 380 are never followed: a
                    // callee must not choose our route.
                    (None, 300..=302) => EndReason::Redirected {
                        code,
                        targets: super::redirect::targets(&resp),
                    },
                    _ => map_failure(code, &resp.reason),
                };
                if code >= 400 {
                    self.events
                        .push_back(CallEvent::Refused(Refusal::of(&resp)));
                }
                self.end(now, reason);
            }
        }
    }

    fn on_2xx(&mut self, now: Instant, resp: Response, to_tag: Option<String>) {
        if self.phase != Phase::Inviting {
            if let Some(tag) = to_tag.filter(|t| Some(t) != self.remote_tag.as_ref()) {
                self.on_other_fork_2xx(now, &resp, tag);
                return;
            }
            // A retransmitted 2xx: our ACK was lost.
            if let Some((bytes, dest)) = &self.ack {
                if self.ack_until.is_some_and(|t| now < t) {
                    self.transmit.push_back(Transmit {
                        dest: *dest,
                        bytes: bytes.clone(),
                    });
                }
            }
            return;
        }
        self.remote_tag = to_tag.or(self.remote_tag.take());
        self.remote_target = resp
            .headers
            .get("Contact")
            .and_then(|c| NameAddrRef::parse(c).ok())
            .map(|a| a.uri.to_string());
        self.route_set = resp
            .headers
            .all("Record-Route")
            .map(str::to_string)
            .collect();
        self.route_set.reverse();
        self.phase = Phase::Confirmed;
        self.ring_deadline = None;
        self.cancel_guard = None;
        self.session_timer = SessionTimer::from_answer(now, &resp.headers);
        self.send_ack(now);
        match sdp::parse_answer(&resp.body) {
            Ok(media) => self.events.push_back(CallEvent::Answered(media)),
            Err(_) => {
                self.bye_reason = Some(EndReason::MediaMismatch);
                self.send_bye(now);
            }
        }
    }

    fn send_ack(&mut self, now: Instant) {
        // Only the INVITE's CSeq is needed: no copy of the whole request.
        let Some(invite_seq) = self.current_invite().map(|t| {
            t.request()
                .headers
                .get("CSeq")
                .and_then(|c| CSeq::parse(c).ok())
                .map(|c| c.seq)
        }) else {
            return;
        };
        let branch = self.next_branch();
        let target = self
            .remote_target
            .clone()
            .unwrap_or_else(|| self.cfg.target.clone());
        let mut ack = Request::new(Method::Ack, target);
        ack.headers = self.request_headers();
        self.push_via(&mut ack.headers, &branch);
        ack.headers.push("Max-Forwards", "70");
        for r in &self.route_set {
            ack.headers.push("Route", r);
        }
        self.push_from(&mut ack.headers);
        self.push_to(&mut ack.headers);
        ack.headers.push("Call-ID", &self.call_id);
        let seq = invite_seq.unwrap_or(self.cseq);
        Call::push_cseq(&mut ack.headers, seq, "ACK");
        if let Some((name, value)) = &self.auth_header {
            ack.headers.push(name, value);
        }
        let dest = self.dialog_destination();
        let bytes = ack.to_bytes();
        self.transmit.push_back(Transmit {
            dest,
            bytes: bytes.clone(),
        });
        self.ack = Some((bytes, dest));
        self.ack_until = Some(now + self.cfg.timers.t1 * 64);
    }

    /// The credentials header answering `resp`'s challenge, or why not.
    /// A challenge for a realm other than the credentials' is never
    /// answered: the hash would go to whoever asked.
    fn answer_challenge(
        &mut self,
        resp: &Response,
        method: &str,
        uri: &str,
    ) -> Result<(String, String), String> {
        let failed = || "authentication failed".to_string();
        let creds = self.cfg.credentials.clone().ok_or_else(failed)?;
        let (hdr, out) = if resp.code == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenge = Challenge::best(resp.headers.all(hdr)).map_err(|_| failed())?;
        if let Some(ours) = creds.realm.as_ref().filter(|r| **r != challenge.realm) {
            return Err(super::auth::realm_refusal(&challenge.realm, ours));
        }
        // A second challenge for the same nonce means the password is
        // wrong, unless the server says the nonce merely went stale.
        let same_nonce = self.last_nonce.as_deref() == Some(challenge.nonce.as_str());
        if self.auth_attempts >= 3 || (same_nonce && !challenge.stale) {
            return Err(failed());
        }
        self.auth_attempts += 1;
        self.last_nonce = Some(challenge.nonce.clone());
        let cnonce = format!("{}{}", self.branch_seed, self.auth_attempts);
        Ok((
            out.to_string(),
            challenge.respond(&creds, method, uri, 1, &cnonce),
        ))
    }

    fn retry_with_auth(&mut self, now: Instant, resp: &Response) -> Result<(), String> {
        let target = self.cfg.target.clone();
        self.auth_header = Some(self.answer_challenge(resp, "INVITE", &target)?);
        // RFC 3261 22.2: same Call-ID and From tag, next CSeq, no To tag.
        self.remote_tag = None;
        self.send_invite(now);
        Ok(())
    }

    /// In-dialog requests refused because of their tags or source.
    pub fn foreign_requests(&self) -> u64 {
        self.stats_foreign_requests
    }

    /// An in-dialog request (Call-ID is ours) from `source`. Returns the
    /// response to send back to the request's source; `None` for ACK.
    ///
    /// A request belongs to the dialog only when both tags match and it
    /// comes from where the dialog's requests go (the proxy or the remote
    /// target): knowing a Call-ID is not enough to press keys (INFO) or
    /// hang up (BYE) someone else's call.
    pub fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        req: &Request,
        cseq: &CSeq,
    ) -> Option<Response> {
        let tag = |name: &str| {
            req.headers
                .get(name)
                .and_then(|t| NameAddrRef::parse(t).ok())
                .and_then(|a| a.tag())
        };
        let tags_ok = tag("To").as_deref() == Some(self.local_tag.as_str())
            && self.remote_tag.is_some()
            && tag("From").as_deref() == self.remote_tag.as_deref();
        let source_ok = source == self.cfg.destination || source == self.dialog_destination();
        if req.method == Method::Ack {
            // The answer to the offer we put in a re-INVITE's 2xx.
            if tags_ok && source_ok && std::mem::take(&mut self.awaiting_ack_answer) {
                if let Ok(media) = sdp::parse_answer(&req.body) {
                    self.events.push_back(CallEvent::MediaUpdated(media));
                }
            }
            return None;
        }
        if !tags_ok || !source_ok {
            self.stats_foreign_requests += 1;
            return Some(Response::for_request(req, 481, None));
        }
        if let Some((seq, method, resp)) = &self.last_served {
            if *seq == cseq.seq && *method == req.method {
                return Some(resp.clone());
            }
        }
        if self.remote_cseq.is_some_and(|last| cseq.seq <= last) {
            return Some(Response::for_request(req, 500, None));
        }
        self.remote_cseq = Some(cseq.seq);
        let resp = match req.method {
            Method::Bye => {
                let r = Response::for_request(req, 200, None);
                if self.phase != Phase::Ended {
                    self.end(now, EndReason::RemoteHangup);
                }
                r
            }
            Method::Info => match parse_info_dtmf(req) {
                Some(Ok((digit, duration_ms))) => {
                    self.events
                        .push_back(CallEvent::InfoDigit { digit, duration_ms });
                    Response::for_request(req, 200, None)
                }
                Some(Err(())) => Response::for_request(req, 400, None),
                None => {
                    let mut r = Response::for_request(req, 415, None);
                    r.headers
                        .push("Accept", "application/dtmf-relay, application/dtmf");
                    r
                }
            },
            Method::Options => {
                let mut r = Response::for_request(req, 200, None);
                r.headers.push("Allow", ALLOW);
                r
            }
            Method::Invite | Method::Update => self.on_session_request(now, req),
            _ => {
                let mut r = Response::for_request(req, 405, None);
                r.headers.push("Allow", ALLOW);
                r
            }
        };
        self.last_served = Some((cseq.seq, req.method.clone(), resp.clone()));
        Some(resp)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Confirmed {
            match self
                .session_timer
                .as_mut()
                .and_then(|t| t.handle_timeout(now))
            {
                Some(TimerAction::Refresh) => self.send_refresh(now),
                Some(TimerAction::Expired) => self.expire(now),
                None => {}
            }
        }
        if self.ring_deadline.is_some_and(|t| now >= t) {
            self.ring_deadline = None;
            self.request_cancel(now, CancelCause::RingTimeout);
        }
        if self.cancel_guard.is_some_and(|t| now >= t) {
            self.cancel_guard = None;
            // RFC 3261 9.1: no final response 64*T1 after CANCEL.
            let reason = match self.cancel {
                Some(CancelCause::Owner) => EndReason::Cancelled,
                _ => EndReason::NoAnswer { code: None },
            };
            self.end(now, reason);
        }
        if self.ack_until.is_some_and(|t| now >= t) {
            self.ack_until = None;
        }
        for tx in &mut self.invites {
            tx.handle_timeout(now);
        }
        self.drain_invites(now);
        for tx in [&mut self.cancel_tx, &mut self.bye_tx]
            .into_iter()
            .flatten()
        {
            tx.handle_timeout(now);
        }
        for (tx, _, _) in &mut self.prack_txs {
            tx.handle_timeout(now);
        }
        for f in &mut self.forks {
            f.bye.handle_timeout(now);
        }
        if let Some((tx, _, _)) = &mut self.refresh_tx {
            tx.handle_timeout(now);
        }
        self.drain_nict(now);
        if self.cancel_tx.as_ref().is_some_and(|t| t.is_terminated()) {
            self.cancel_tx = None;
        }
        if self.linger_until.is_some_and(|t| now >= t) && self.phase == Phase::Ended {
            self.invites.clear();
            self.cancel_tx = None;
            self.bye_tx = None;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline, without collecting them: asked after every
    /// input the call takes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let fixed = [
            self.ring_deadline,
            self.cancel_guard,
            self.ack_until,
            self.linger_until,
        ]
        .into_iter()
        .flatten();
        let invites = self.invites.iter().filter_map(|x| x.poll_timeout());
        let nict = [&self.cancel_tx, &self.bye_tx]
            .into_iter()
            .flatten()
            .filter_map(|x| x.poll_timeout());
        let pracks = self
            .prack_txs
            .iter()
            .filter_map(|(x, _, _)| x.poll_timeout());
        let forks = self.forks.iter().filter_map(|f| f.poll_timeout());
        let session = match self.phase {
            Phase::Confirmed => self.session_timer.as_ref().and_then(|s| s.poll_timeout()),
            _ => None,
        };
        let refresh = self
            .refresh_tx
            .as_ref()
            .and_then(|(x, _, _)| x.poll_timeout());
        fixed
            .chain(invites)
            .chain(nict)
            .chain(pracks)
            .chain(forks)
            .chain(session)
            .chain(refresh)
            .min()
    }
}

/// Methods callout answers, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK";

/// Extensions callout's calls support: RFC 3262 reliable provisionals and
/// RFC 4028 session timers.
pub const SUPPORTED: &str = "100rel, timer";

/// Map a final failure code to an outcome (RFC 3261 21.4-21.6).
pub fn map_failure(code: u16, reason: &str) -> EndReason {
    match code {
        486 | 600 => EndReason::Busy { code },
        603 => EndReason::Declined { code },
        408 | 480 => EndReason::NoAnswer { code: Some(code) },
        404 | 410 | 484 | 503 | 604 => EndReason::Unreachable { code: Some(code) },
        _ => EndReason::Rejected {
            code,
            reason: reason.to_string(),
        },
    }
}

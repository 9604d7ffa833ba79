//! The SIP endpoint: owns every call by handle, routes inbound datagrams
//! to them, and answers requests no call serves (OPTIONS, stray INVITEs,
//! unknown methods, broken messages). Sans-IO.
//!
//! Call order: [`Endpoint::handle_datagram`], [`Endpoint::start_call`],
//! [`Endpoint::hangup`] and [`Endpoint::handle_timeout`] feed it; drain
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`] after each, and
//! sleep until [`Endpoint::poll_timeout`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::advertise::{self, Learned};
use super::call::{Call, CallConfig, CallEvent, ALLOW};
use super::header::Via;
use super::limiter::{FloodPolicy, Limiter, Verdict};
use super::message::{self, Message, Method, Request, Response};
use super::register::{RegEvent, Registration, RegistrationConfig};
use super::timers::TimerHeap;
use super::transaction::Timers;
use super::transport::{self, Transport};
use super::uas::IncomingCall;
use super::validate::{salvage, validate_request};
use super::Transmit;

/// Opaque handle of a call owned by the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// Counters of what the endpoint saw, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    /// Could not be parsed and could not be answered.
    pub dropped_malformed: u64,
    /// Responses nobody was waiting for.
    pub stray_responses: u64,
    /// Requests answered with an error code.
    pub rejected: u64,
    /// Datagrams dropped unparsed because their source was banned.
    pub flood_dropped: u64,
    /// Bans imposed on flooding sources since start.
    pub sources_banned: u64,
    /// Sources banned as of the last input.
    pub banned_now: u64,
    /// Out-of-dialog responses remembered for retransmissions.
    pub remembered: u64,
}

/// A call either way: placed by callout, or received (softphone).
enum Leg {
    Out(Box<Call>),
    In(Box<IncomingCall>),
}

impl Leg {
    fn call_id(&self) -> &str {
        match self {
            Leg::Out(c) => c.call_id(),
            Leg::In(c) => c.call_id(),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Leg::Out(c) => c.poll_timeout(),
            Leg::In(c) => c.poll_timeout(),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Leg::Out(c) => c.handle_timeout(now),
            Leg::In(c) => c.handle_timeout(now),
        }
    }
    fn handle_response(&mut self, now: Instant, r: Response) {
        match self {
            Leg::Out(c) => c.handle_response(now, r),
            Leg::In(c) => c.handle_response(now, r),
        }
    }
    fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        req: &Request,
        cseq: &super::header::CSeq,
    ) -> Option<Response> {
        match self {
            Leg::Out(c) => c.handle_request(now, source, req, cseq),
            Leg::In(c) => c.handle_request(now, source, req, cseq),
        }
    }
    fn hangup(&mut self, now: Instant) {
        match self {
            Leg::Out(c) => c.hangup(now),
            Leg::In(c) => c.hangup(now),
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Leg::Out(c) => c.poll_transmit(),
            Leg::In(c) => c.poll_transmit(),
        }
    }
    fn poll_event(&mut self) -> Option<CallEvent> {
        match self {
            Leg::Out(c) => c.poll_event(),
            Leg::In(c) => c.poll_event(),
        }
    }
    fn is_finished(&self, now: Instant) -> bool {
        match self {
            Leg::Out(c) => c.is_finished(now),
            Leg::In(c) => c.is_finished(now),
        }
    }
    /// The address the dialog's requests and responses come from: the
    /// callee or proxy we sent the INVITE to, or the caller.
    fn peer_ip(&self) -> IpAddr {
        match self {
            Leg::Out(c) => c.destination().ip(),
            Leg::In(c) => c.peer().ip(),
        }
    }
}

/// What the endpoint must wake up for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Wake {
    Call(CallHandle),
    Registration(String),
}

/// Key of a remembered out-of-dialog response: (branch, sent-by, method).
type AnsweredKey = (String, String, String);

/// How long answered out-of-dialog requests are remembered so that a
/// retransmission gets the same response (Timer J, 64*T1).
const SERVER_MEMORY: Duration = Duration::from_secs(32);

/// Remembered out-of-dialog responses at most; beyond that the oldest is
/// forgotten (its retransmission gets a fresh, equal answer), so sources
/// the limiter does not catch (spoofed, many) cannot grow memory.
const MAX_ANSWERED: usize = 10_000;

/// Maps keyed by what callout itself makes (call handles, wake-ups):
/// foldhash rather than SipHash, which was 4 % of a call setup. Maps
/// keyed by what a peer sends (Call-IDs, branches, source addresses)
/// keep std's SipHash: their keys can be chosen to collide.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The SIP endpoint state machine.
pub struct Endpoint {
    local: SocketAddr,
    rng: StdRng,
    next_handle: u64,
    calls: FastMap<CallHandle, Leg>,
    /// Take incoming INVITEs (softphone) instead of refusing them.
    accept_incoming: bool,
    /// Registrations with trunks, by Call-ID.
    registrations: HashMap<String, Registration>,
    reg_events: VecDeque<(String, RegEvent)>,
    by_call_id: HashMap<String, CallHandle>,
    /// Responses already sent to out-of-dialog requests, by
    /// (branch, sent-by, method).
    answered: HashMap<AnsweredKey, Response>,
    answered_expiry: TimerHeap<AnsweredKey>,
    /// Next wake-up of every call and registration.
    wakes: TimerHeap<Wake, foldhash::fast::RandomState>,
    limiter: Limiter,
    bans: VecDeque<IpAddr>,
    last_now: Option<Instant>,
    transmit: VecDeque<(Transport, Transmit)>,
    /// Each call's transport, and whether its large requests may move to
    /// TCP (RFC 3261 18.1.1: the transport was not named).
    leg_transport: FastMap<CallHandle, (Transport, bool, transport::HopMemo)>,
    /// The transport of the message being handled: responses and new
    /// incoming calls go back on it (a stream's own connection).
    input_transport: Transport,
    events: VecDeque<(CallHandle, CallEvent)>,
    stats: Stats,
    user_agent: String,
    /// Process-wide `sip_advertise`: Contact of answered incoming calls
    /// and the fallback when a call or registration names none.
    advertise: Option<SocketAddr>,
    /// Trunk proxies and registrars: the only peers we learn our public
    /// address from.
    trusted: HashSet<IpAddr>,
    learned: Learned,
    /// Registrations whose Contact follows what their registrar sees.
    learning_regs: HashSet<String>,
}

impl Endpoint {
    /// `local` is the bound SIP socket address; `seed` feeds the generator
    /// of Call-IDs, tags and branches (tests pass a fixed one).
    pub fn new(local: SocketAddr, seed: u64) -> Endpoint {
        Endpoint {
            local,
            rng: StdRng::seed_from_u64(seed),
            next_handle: 1,
            calls: FastMap::default(),
            accept_incoming: false,
            registrations: HashMap::new(),
            reg_events: VecDeque::new(),
            by_call_id: HashMap::new(),
            answered: HashMap::new(),
            answered_expiry: TimerHeap::new(),
            wakes: TimerHeap::default(),
            limiter: Limiter::new(FloodPolicy::default()),
            bans: VecDeque::new(),
            last_now: None,
            transmit: VecDeque::new(),
            leg_transport: FastMap::default(),
            input_transport: Transport::Udp,
            events: VecDeque::new(),
            stats: Stats::default(),
            user_agent: format!("callout/{}", env!("CARGO_PKG_VERSION")),
            advertise: None,
            trusted: HashSet::new(),
            learned: Learned::default(),
            learning_regs: HashSet::new(),
        }
    }

    /// Answer incoming INVITEs (as `callout softphone` does) instead of
    /// refusing them with 403.
    pub fn set_accept_incoming(&mut self, on: bool) {
        self.accept_incoming = on;
    }

    /// Limits on requests from untrusted sources.
    pub fn set_flood_policy(&mut self, policy: FloodPolicy) {
        self.limiter.set_policy(policy);
    }

    /// Never limit `ip`: a configured trunk, proxy or registrar. Its
    /// responses' `received`/`rport` also teach us our public address.
    pub fn trust(&mut self, ip: IpAddr) {
        self.limiter.trust(ip);
        self.trusted.insert(ip);
    }

    /// The process-wide `sip_advertise` (never the unspecified address;
    /// port 0 means the bound port).
    pub fn set_advertise(&mut self, addr: Option<SocketAddr>) {
        self.advertise = addr
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| self.with_port(a));
    }

    fn with_port(&self, a: SocketAddr) -> SocketAddr {
        if a.port() == 0 {
            SocketAddr::new(a.ip(), self.local.port())
        } else {
            a
        }
    }

    /// What a call or registration toward `dest` says it is at: `chosen`
    /// (the caller's pick) when usable, else the process-wide setting or
    /// the bound address; unless `pinned`, what `dest` itself said it saw
    /// wins over both.
    fn sent_by(&self, chosen: SocketAddr, dest: SocketAddr, pinned: bool) -> SocketAddr {
        let base = if chosen.ip().is_unspecified() {
            self.advertise.unwrap_or(self.local)
        } else {
            self.with_port(chosen)
        };
        if pinned {
            return base;
        }
        self.learned.get(dest.ip()).unwrap_or(base)
    }

    /// Sources banned since the last call, for the log.
    pub fn poll_ban(&mut self) -> Option<IpAddr> {
        self.bans.pop_front()
    }

    /// Register with a trunk's registrar and keep the registration
    /// refreshed. Returns its Call-ID, which names it in events.
    pub fn start_registration(&mut self, now: Instant, cfg: RegistrationConfig) -> String {
        self.start_registration_as(now, cfg, false)
    }

    /// As [`Endpoint::start_registration`]; `pinned` when `cfg.local` is a
    /// configured `sip_advertise`, which what the registrar reports never
    /// replaces. Otherwise the Contact follows the registrar's
    /// `received`/`rport` (re-registering when it changes).
    pub fn start_registration_as(
        &mut self,
        now: Instant,
        cfg: RegistrationConfig,
        pinned: bool,
    ) -> String {
        self.start_registration_on(now, cfg, pinned, Transport::Udp)
    }

    /// As [`Endpoint::start_registration_as`], over `transport`.
    pub fn start_registration_on(
        &mut self,
        now: Instant,
        mut cfg: RegistrationConfig,
        pinned: bool,
        transport: Transport,
    ) -> String {
        cfg.local = self.sent_by(cfg.local, cfg.destination, pinned);
        let call_id = format!("{}@callout", self.token(20));
        let (tag, seed) = (self.token(12), self.token(10));
        self.trust(cfg.destination.ip());
        if !pinned {
            self.learning_regs.insert(call_id.clone());
        }
        let r = Registration::new_on(now, cfg, transport, call_id.clone(), tag, seed);
        self.registrations.insert(call_id.clone(), r);
        self.drain_registration(&call_id);
        call_id
    }

    /// Send registration `call_id` to its registrar's new address.
    pub fn move_registration(&mut self, now: Instant, call_id: &str, destination: SocketAddr) {
        if !self.registrations.contains_key(call_id) {
            return;
        }
        self.trust(destination.ip());
        if let Some(r) = self.registrations.get_mut(call_id) {
            r.set_destination(now, destination);
        }
        self.drain_registration(call_id);
    }

    fn drain_registration(&mut self, call_id: &str) {
        if let Some(r) = self.registrations.get_mut(call_id) {
            while let Some(t) = r.poll_transmit() {
                self.transmit.push_back((r.transport(), t));
            }
            while let Some(e) = r.poll_event() {
                self.reg_events.push_back((call_id.to_string(), e));
            }
            self.wakes
                .set(Wake::Registration(call_id.to_string()), r.poll_timeout());
        }
    }

    /// Registration outcomes: (Call-ID, event).
    pub fn poll_reg_event(&mut self) -> Option<(String, RegEvent)> {
        self.reg_events.pop_front()
    }

    /// Accept an incoming call with our SDP answer.
    pub fn answer(&mut self, now: Instant, handle: CallHandle, sdp: Vec<u8>) {
        if let Some(Leg::In(c)) = self.calls.get_mut(&handle) {
            c.answer(now, sdp);
        }
        self.drain(handle, now);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stats(&self) -> Stats {
        let flood = self
            .last_now
            .map(|now| self.limiter.stats(now))
            .unwrap_or_default();
        Stats {
            flood_dropped: flood.dropped,
            sources_banned: flood.bans,
            banned_now: flood.banned_now,
            remembered: self.answered.len() as u64,
            ..self.stats
        }
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    }

    /// Place a call; its INVITE is queued at once. `cfg.local` names the
    /// address for Via and Contact when usable (else the process-wide
    /// `sip_advertise` or the bound address); what the destination, if a
    /// trusted trunk, said it sees replaces it.
    pub fn start_call(&mut self, now: Instant, cfg: CallConfig) -> CallHandle {
        self.start_call_as(now, cfg, false)
    }

    /// As [`Endpoint::start_call`]; `pinned` when `cfg.local` is a
    /// configured `sip_advertise` that nothing learned may replace.
    pub fn start_call_as(&mut self, now: Instant, cfg: CallConfig, pinned: bool) -> CallHandle {
        self.start_call_on(now, cfg, pinned, Transport::Udp, true)
    }

    /// As [`Endpoint::start_call_as`], over `transport`; `may_upgrade`
    /// when the transport was not named, so a request over the UDP size
    /// limit goes over TCP instead (RFC 3261 18.1.1).
    pub fn start_call_on(
        &mut self,
        now: Instant,
        mut cfg: CallConfig,
        pinned: bool,
        transport: Transport,
        may_upgrade: bool,
    ) -> CallHandle {
        cfg.local = self.sent_by(cfg.local, cfg.destination, pinned);
        if cfg.user_agent.is_empty() {
            cfg.user_agent = self.user_agent.clone();
        }
        let call_id = format!("{}@callout", self.token(20));
        let tag = self.token(12);
        let seed = self.token(10);
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let call = Call::new_on(now, cfg, transport, call_id.clone(), tag, seed);
        self.leg_transport.insert(
            handle,
            (transport, may_upgrade && transport == Transport::Udp, None),
        );
        self.limiter.add_peer(call.destination().ip());
        self.by_call_id.insert(call_id, handle);
        self.calls.insert(handle, Leg::Out(Box::new(call)));
        self.drain(handle, now);
        handle
    }

    pub fn hangup(&mut self, now: Instant, handle: CallHandle) {
        if let Some(call) = self.calls.get_mut(&handle) {
            call.hangup(now);
            self.drain(handle, now);
        }
    }

    pub fn call(&self, handle: CallHandle) -> Option<&Call> {
        match self.calls.get(&handle) {
            Some(Leg::Out(c)) => Some(c),
            _ => None,
        }
    }

    /// Feed one message received on a stream (TCP or TLS), already
    /// framed (see [`transport::Framer`]): answers go back on `transport`
    /// to `from`, that is on the same connection.
    pub fn handle_stream_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        self.input_transport = transport;
        self.handle_datagram(now, from, bytes);
        self.input_transport = Transport::Udp;
    }

    /// Feed one received datagram. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.received += 1;
        self.last_now = Some(now);
        // Before parsing: a banned source's flood costs one lookup each.
        match self.limiter.check(now, from.ip()) {
            Verdict::Pass => {}
            Verdict::Drop => return,
            Verdict::Banned => {
                self.bans.push_back(from.ip());
                return;
            }
        }
        // Keep-alives (RFC 5626 CRLF) are not messages.
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        match message::parse(bytes) {
            Ok(Message::Response(resp)) => {
                self.learn_address(now, from, &resp);
                self.on_response(now, resp)
            }
            Ok(Message::Request(req)) => self.on_request(now, from, req),
            Err(message::ParseError::BadVersion(_)) => self.answer_salvaged(from, bytes, 505),
            Err(e) => match salvage(bytes, e) {
                Some(_) => self.answer_salvaged(from, bytes, 400),
                None => self.stats.dropped_malformed += 1,
            },
        }
    }

    fn answer_salvaged(&mut self, from: SocketAddr, bytes: &[u8], code: u16) {
        let Some(s) = salvage(bytes, message::ParseError::BadStartLine) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if s.method == Method::Ack {
            self.stats.dropped_malformed += 1;
            return;
        }
        self.stats.rejected += 1;
        let tag = self.token(8);
        let resp = Response::for_headers(&s.headers, code, Some(&tag));
        self.transmit.push_back((
            self.input_transport,
            Transmit {
                dest: from,
                bytes: resp.to_bytes(),
            },
        ));
    }

    /// RFC 3581: a trusted peer's `received`/`rport` is where it sees us;
    /// later calls to it, and registrations with it, say so.
    fn learn_address(&mut self, now: Instant, from: SocketAddr, resp: &Response) {
        if !self.trusted.contains(&from.ip()) {
            return;
        }
        let Some(via) = resp.headers.get("Via").and_then(|v| Via::parse(v).ok()) else {
            return;
        };
        let Some(sent) = advertise::via_sent_by(&via) else {
            return;
        };
        let Some(seen) = self.learned.learn(from.ip(), &via, sent) else {
            return;
        };
        let follow: Vec<String> = self
            .registrations
            .iter()
            .filter(|(cid, r)| {
                self.learning_regs.contains(*cid) && r.destination().ip() == from.ip()
            })
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in follow {
            if let Some(r) = self.registrations.get_mut(&cid) {
                r.set_local(now, seen);
            }
            self.drain_registration(&cid);
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        let cid = resp.headers.get("Call-ID").unwrap_or_default();
        // Copied only for a registration's response (rare beside calls').
        if self.registrations.contains_key(cid) {
            let cid = cid.to_string();
            if let Some(r) = self.registrations.get_mut(&cid) {
                r.handle_response(now, resp);
            }
            self.drain_registration(&cid);
            return;
        }
        let handle = resp
            .headers
            .get("Call-ID")
            .and_then(|c| self.by_call_id.get(c))
            .copied();
        let Some(handle) = handle else {
            self.stats.stray_responses += 1;
            return;
        };
        if let Some(call) = self.calls.get_mut(&handle) {
            call.handle_response(now, resp);
        }
        self.drain(handle, now);
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, req: Request) {
        let (via, cseq) = match validate_request(&req) {
            Ok(v) => v,
            Err(rej) => {
                if req.method == Method::Ack {
                    return;
                }
                // Without a parseable Via the far end could not match a
                // response; drop it.
                if req
                    .headers
                    .get("Via")
                    .and_then(|v| Via::parse(v).ok())
                    .is_none()
                {
                    self.stats.dropped_malformed += 1;
                    return;
                }
                self.stats.rejected += 1;
                let tag = self.token(8);
                let mut resp = Response::for_request(&req, rej.code, Some(&tag));
                if rej.code == 420 {
                    resp.headers.push("Unsupported", rej.reason.clone());
                } else {
                    resp.reason = format!("{} ({})", message::reason_phrase(rej.code), rej.reason);
                }
                self.send(from, resp);
                return;
            }
        };
        let call_id = req.headers.get("Call-ID").unwrap_or_default().to_string();
        if let Some(&handle) = self.by_call_id.get(&call_id) {
            if let Some(call) = self.calls.get_mut(&handle) {
                if let Some(resp) = call.handle_request(now, from, &req, &cseq) {
                    self.send(from, resp);
                }
            }
            self.drain(handle, now);
            return;
        }
        // Out of dialog: answer retransmissions identically.
        let key = (
            via.branch().unwrap_or_default().to_string(),
            format!("{}:{:?}", via.host, via.port),
            req.method.to_string(),
        );
        if let Some(resp) = self.answered.get(&key) {
            let resp = resp.clone();
            self.send(from, resp);
            return;
        }
        let tag = self.token(8);
        let resp = match req.method {
            Method::Ack => return,
            Method::Options => {
                let mut r = Response::for_request(&req, 200, Some(&tag));
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", "application/sdp");
                r
            }
            Method::Invite if self.accept_incoming => {
                let seed = self.token(10);
                let local = self.advertise.unwrap_or(self.local);
                match IncomingCall::new(now, req, from, local, tag, seed, Timers::default()) {
                    Ok(call) => {
                        self.limiter.add_peer(from.ip());
                        let handle = CallHandle(self.next_handle);
                        self.next_handle += 1;
                        self.by_call_id.insert(call_id, handle);
                        self.leg_transport
                            .insert(handle, (self.input_transport, false, None));
                        self.calls.insert(handle, Leg::In(Box::new(call)));
                        self.drain(handle, now);
                        return;
                    }
                    Err(resp) => resp,
                }
            }
            // callout only calls out.
            Method::Invite => Response::for_request(&req, 403, Some(&tag)),
            Method::Bye | Method::Cancel | Method::Info => {
                Response::for_request(&req, 481, Some(&tag))
            }
            Method::Other(_) => Response::for_request(&req, 501, Some(&tag)),
            _ => {
                let mut r = Response::for_request(&req, 405, Some(&tag));
                r.headers.push("Allow", ALLOW);
                r
            }
        };
        if resp.code >= 300 {
            self.stats.rejected += 1;
        }
        if self.answered.len() >= MAX_ANSWERED && !self.answered.contains_key(&key) {
            if let Some((oldest, _)) = self.answered_expiry.pop_earliest() {
                self.answered.remove(&oldest);
            }
        }
        self.answered_expiry
            .set(key.clone(), Some(now + SERVER_MEMORY));
        self.answered.insert(key, resp.clone());
        self.send(from, resp);
    }

    fn send(&mut self, dest: SocketAddr, mut resp: Response) {
        if !resp.headers.iter().any(|(name, _)| name == "Server") {
            resp.headers.push("Server", self.user_agent.clone());
        }
        self.transmit.push_back((
            self.input_transport,
            Transmit {
                dest,
                bytes: resp.to_bytes(),
            },
        ));
    }

    fn drain(&mut self, handle: CallHandle, now: Instant) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let mut no_memo = None;
        let (via, may_upgrade, memo) = match self.leg_transport.get_mut(&handle) {
            Some((via, up, memo)) => (*via, *up, memo),
            None => (Transport::default(), false, &mut no_memo),
        };
        while let Some(mut t) = call.poll_transmit() {
            let initial = match call {
                Leg::Out(c) => c.target(),
                Leg::In(_) => "",
            };
            let (mut tr, bytes) =
                transport::for_request_memo(via, initial, std::mem::take(&mut t.bytes), memo);
            t.bytes = bytes;
            if may_upgrade && tr == Transport::Udp {
                if let Some(up) = transport::upgrade_large_request(&t.bytes) {
                    t.bytes = up;
                    tr = Transport::Tcp;
                }
            }
            self.transmit.push_back((tr, t));
        }
        while let Some(e) = call.poll_event() {
            self.events.push_back((handle, e));
        }
        if call.is_finished(now) {
            let cid = call.call_id().to_string();
            self.limiter.remove_peer(call.peer_ip());
            self.calls.remove(&handle);
            self.leg_transport.remove(&handle);
            self.by_call_id.remove(&cid);
            self.wakes.clear(&Wake::Call(handle));
        } else {
            self.wakes.set(Wake::Call(handle), call.poll_timeout());
        }
    }

    /// Runs only what is due: O(due × log n), whatever is pending.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        // Collected first: draining re-arms a woken key, possibly already
        // due again at `now`, which must wait for the next pass.
        let mut due = Vec::new();
        while let Some((w, _)) = self.wakes.pop_due(now) {
            due.push(w);
        }
        for w in due {
            match w {
                Wake::Call(h) => {
                    if let Some(call) = self.calls.get_mut(&h) {
                        call.handle_timeout(now);
                    }
                    self.drain(h, now);
                }
                Wake::Registration(cid) => {
                    if let Some(r) = self.registrations.get_mut(&cid) {
                        r.handle_timeout(now);
                    }
                    self.drain_registration(&cid);
                }
            }
        }
        while let Some((key, _)) = self.answered_expiry.pop_due(now) {
            self.answered.remove(&key);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front().map(|(_, t)| t)
    }

    /// As [`Endpoint::poll_transmit`], with the transport to send it on.
    pub fn poll_send(&mut self) -> Option<(Transport, Transmit)> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<(CallHandle, CallEvent)> {
        self.events.pop_front()
    }

    /// O(1): the earliest of two heaps' tops.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.wakes.next(), self.answered_expiry.next()]
            .into_iter()
            .flatten()
            .min()
    }
}

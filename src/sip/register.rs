//! Registration with a trunk's registrar (RFC 3261 10), sans-IO: REGISTER,
//! digest challenge, refresh at half the granted expiry, retry after a
//! failure.
//!
//! Call order: [`Registration::new`] queues the first REGISTER; feed
//! responses with its Call-ID to [`Registration::handle_response`] and
//! expiry to [`Registration::handle_timeout`]; drain `poll_transmit`,
//! `poll_event` and sleep until `poll_timeout`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{Challenge, Credentials};
use super::header::NameAddr;
use super::message::{Method, Request, Response};
use super::transaction::{NonInviteClient, Timers, TxOutput};
use super::Transmit;

/// What to register.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Request-URI, e.g. `sip:carrier.example`.
    pub registrar_uri: String,
    /// Address of record, e.g. `sip:0312345678@carrier.example`.
    pub aor: String,
    pub destination: SocketAddr,
    pub local: SocketAddr,
    pub credentials: Option<Credentials>,
    /// Requested expiry, seconds.
    pub expires: u32,
    pub timers: Timers,
}

/// What the registration reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegEvent {
    Registered {
        expires: u32,
    },
    Failed {
        code: Option<u16>,
    },
    /// A challenge for another realm than the configured one: not
    /// answered (no hash sent); retried later like any failure.
    RealmRefused {
        reason: String,
    },
    /// 423 Interval Too Brief: the next REGISTER asks for this many
    /// seconds (the registrar's Min-Expires).
    IntervalRaised {
        expires: u32,
    },
}

/// Wait before trying again after a failure.
const RETRY: Duration = Duration::from_secs(30);

/// The longest Min-Expires a 423 may ask us to take, and how many 423s in
/// a row are followed before giving up until the next retry.
const MAX_MIN_EXPIRES: u32 = 86_400;
const MAX_423: u8 = 3;

/// One registration, kept alive by refreshes.
#[derive(Debug)]
pub struct Registration {
    cfg: RegistrationConfig,
    transport: super::transport::Transport,
    call_id: String,
    tag: String,
    seed: String,
    cseq: u32,
    tx: Option<NonInviteClient>,
    challenge: Option<(String, Challenge)>,
    nc: u32,
    auth_failures: u8,
    /// 423s in a row.
    too_brief: u8,
    /// Our address changed since the REGISTER in flight was built.
    contact_changed: bool,
    next_at: Option<Instant>,
    transmit: VecDeque<Transmit>,
    events: VecDeque<RegEvent>,
}

impl Registration {
    pub fn new(
        now: Instant,
        cfg: RegistrationConfig,
        call_id: String,
        tag: String,
        seed: String,
    ) -> Registration {
        let mut r = Registration {
            cfg,
            transport: super::transport::Transport::Udp,
            call_id,
            tag,
            seed,
            cseq: 0,
            tx: None,
            challenge: None,
            nc: 0,
            auth_failures: 0,
            too_brief: 0,
            contact_changed: false,
            next_at: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        r.send(now);
        r
    }

    /// As [`Registration::new`], over `transport` (Via, Contact, and no
    /// retransmissions when reliable).
    pub fn new_on(
        now: Instant,
        mut cfg: RegistrationConfig,
        transport: super::transport::Transport,
        call_id: String,
        tag: String,
        seed: String,
    ) -> Registration {
        if transport == super::transport::Transport::Udp {
            return Registration::new(now, cfg, call_id, tag, seed);
        }
        cfg.timers.reliable = true;
        let mut r = Registration::new_unsent(cfg, call_id, tag, seed);
        r.transport = transport;
        r.send(now);
        r
    }

    fn new_unsent(cfg: RegistrationConfig, call_id: String, tag: String, seed: String) -> Self {
        Registration {
            cfg,
            transport: super::transport::Transport::Udp,
            call_id,
            tag,
            seed,
            cseq: 0,
            tx: None,
            challenge: None,
            nc: 0,
            auth_failures: 0,
            too_brief: 0,
            contact_changed: false,
            next_at: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn transport(&self) -> super::transport::Transport {
        self.transport
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    fn contact_uri(&self) -> String {
        format!(
            "sip:callout@{}{}",
            self.cfg.local,
            self.transport.uri_param()
        )
    }

    pub fn destination(&self) -> SocketAddr {
        self.cfg.destination
    }

    /// The address our Via and Contact name changed (the registrar saw us
    /// elsewhere, RFC 3581): register the new Contact at once, after the
    /// transaction in progress if any.
    pub fn set_local(&mut self, now: Instant, local: SocketAddr) {
        if self.cfg.local == local {
            return;
        }
        self.cfg.local = local;
        self.contact_changed = true;
        if self.tx.as_ref().is_none_or(|t| t.is_done()) {
            self.send(now);
        }
    }

    /// The registrar's address changed (DNS said so): register there at
    /// once, after the transaction in progress if any. Same Call-ID and
    /// next CSeq: one registration, moved.
    pub fn set_destination(&mut self, now: Instant, destination: SocketAddr) {
        if self.cfg.destination == destination {
            return;
        }
        self.cfg.destination = destination;
        self.contact_changed = true;
        if self.tx.as_ref().is_none_or(|t| t.is_done()) {
            self.send(now);
        }
    }

    fn send(&mut self, now: Instant) {
        self.cseq += 1;
        self.contact_changed = false;
        self.next_at = None;
        let mut req = Request::new(Method::Register, self.cfg.registrar_uri.clone());
        req.headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK{}r{};rport",
                self.transport.via_name(),
                self.cfg.local,
                self.seed,
                self.cseq
            ),
        );
        req.headers.push("Max-Forwards", "70");
        req.headers
            .push("From", format!("<{}>;tag={}", self.cfg.aor, self.tag));
        req.headers.push("To", format!("<{}>", self.cfg.aor));
        req.headers.push("Call-ID", self.call_id.clone());
        req.headers.push("CSeq", format!("{} REGISTER", self.cseq));
        req.headers
            .push("Contact", format!("<{}>", self.contact_uri()));
        req.headers.push("Expires", self.cfg.expires.to_string());
        if let (Some((header, ch)), Some(creds)) = (&self.challenge, &self.cfg.credentials) {
            self.nc += 1;
            let cnonce = format!("{}{}", self.seed, self.nc);
            req.headers.push(
                header,
                ch.respond(creds, "REGISTER", &self.cfg.registrar_uri, self.nc, &cnonce),
            );
        }
        self.tx = Some(NonInviteClient::new(now, &req, self.cfg.timers));
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        let mut outputs = Vec::new();
        if let Some(tx) = &mut self.tx {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmit.push_back(Transmit {
                    dest: self.cfg.destination,
                    bytes,
                });
            }
            while let Some(o) = tx.poll_output() {
                outputs.push(o);
            }
        }
        for o in outputs {
            match o {
                TxOutput::Response(r) => self.on_response(now, r),
                TxOutput::Timeout => self.fail(now, None),
            }
        }
    }

    fn fail(&mut self, now: Instant, code: Option<u16>) {
        self.events.push_back(RegEvent::Failed { code });
        self.next_at = Some(now + RETRY);
    }

    fn on_response(&mut self, now: Instant, r: Response) {
        match r.code {
            100..=199 => {}
            200..=299 if self.contact_changed => {
                // Registered under the address we no longer are at.
                self.send(now);
            }
            423 => {
                // RFC 3261 10.2.8: ask again for at least Min-Expires, a
                // bounded number of times, never the same interval forever.
                let min = r
                    .headers
                    .get("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(m)
                        if m > self.cfg.expires
                            && m <= MAX_MIN_EXPIRES
                            && self.too_brief < MAX_423 =>
                    {
                        self.too_brief += 1;
                        self.cfg.expires = m;
                        self.events
                            .push_back(RegEvent::IntervalRaised { expires: m });
                        self.send(now);
                    }
                    _ => self.fail(now, Some(423)),
                }
            }
            200..=299 => {
                self.auth_failures = 0;
                self.too_brief = 0;
                let ours = self.contact_uri();
                let granted = r
                    .headers
                    .all("Contact")
                    .filter_map(|c| NameAddr::parse(c).ok())
                    .find(|a| a.uri == ours)
                    .and_then(|a| {
                        super::header::param(&a.params, "expires").and_then(|e| e.parse().ok())
                    })
                    .or_else(|| r.headers.get("Expires").and_then(|e| e.trim().parse().ok()))
                    .unwrap_or(self.cfg.expires);
                self.events
                    .push_back(RegEvent::Registered { expires: granted });
                // Refresh at half the granted time, never more often than 1 s.
                self.next_at = Some(now + Duration::from_millis((granted as u64 * 500).max(1000)));
            }
            401 | 407 => {
                let (hdr, out) = if r.code == 407 {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                } else {
                    ("WWW-Authenticate", "Authorization")
                };
                let fresh = Challenge::best(r.headers.all(hdr)).ok();
                let ours = self.cfg.credentials.as_ref().and_then(|c| c.realm.clone());
                if let (Some(c), Some(ours)) = (&fresh, ours) {
                    if c.realm != ours {
                        let reason = super::auth::realm_refusal(&c.realm, &ours);
                        self.events.push_back(RegEvent::RealmRefused { reason });
                        self.fail(now, Some(r.code));
                        return;
                    }
                }
                let stale_or_new = fresh.as_ref().is_some_and(|c| {
                    c.stale
                        || self
                            .challenge
                            .as_ref()
                            .is_none_or(|(_, old)| old.nonce != c.nonce)
                });
                match fresh {
                    Some(c)
                        if self.cfg.credentials.is_some()
                            && (stale_or_new || self.auth_failures == 0)
                            && self.auth_failures < 2 =>
                    {
                        self.auth_failures += 1;
                        self.nc = 0;
                        self.challenge = Some((out.to_string(), c));
                        self.send(now);
                    }
                    _ => self.fail(now, Some(r.code)),
                }
            }
            code => self.fail(now, Some(code)),
        }
    }

    /// Remove the binding: REGISTER with `Expires: 0` on the same Call-ID
    /// (answering a challenge as usual). Used by `callout doctor`, whose
    /// test registration must not leave calls routed to its probe socket.
    pub fn unregister(&mut self, now: Instant) {
        self.cfg.expires = 0;
        self.send(now);
    }

    pub fn handle_response(&mut self, now: Instant, r: Response) {
        if let Some(tx) = &mut self.tx {
            tx.handle_response(now, r);
        }
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = &mut self.tx {
            tx.handle_timeout(now);
        }
        self.drain(now);
        if self.next_at.is_some_and(|t| now >= t) {
            self.send(now);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RegEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_at,
            self.tx.as_ref().and_then(|t| t.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

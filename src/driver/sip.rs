//! The SIP socket task: owns the UDP socket and the [`Endpoint`], feeds it
//! datagrams, commands and timeouts, and sends what it asks to send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::sip::call::{CallConfig, CallEvent};
use crate::sip::endpoint::{CallHandle, Endpoint, Stats};
use crate::sip::transport::{TlsSettings, Transport};

use super::stream::{StreamEvent, Streams};

/// Datagrams taken off the socket in one pass beyond the first.
const RECV_BATCH: usize = 32;

/// Commands to the SIP task.
pub enum SipCommand {
    Dial {
        cfg: Box<CallConfig>,
        /// `cfg.local` is a configured `sip_advertise`: keep it.
        pinned: bool,
        events: mpsc::UnboundedSender<CallEvent>,
        reply: oneshot::Sender<CallHandle>,
        /// The call's transport, whether a large request may move to TCP,
        /// and the TLS settings toward its destination.
        transport: Transport,
        may_upgrade: bool,
        tls: Option<TlsSettings>,
    },
    Hangup(CallHandle),
    Answer(CallHandle, Vec<u8>),
    Register(
        Box<crate::sip::register::RegistrationConfig>,
        bool,
        Transport,
        Option<TlsSettings>,
    ),
    Advertise(Option<SocketAddr>),
    /// The registrar of `aor` moved to this address (re-resolved).
    MoveRegistration {
        aor: String,
        destination: SocketAddr,
        tls: Option<TlsSettings>,
    },
    Stats(oneshot::Sender<Stats>),
    Flood(crate::sip::limiter::FloodPolicy),
    Trust(std::net::IpAddr),
}

/// Cloneable handle to the SIP task.
#[derive(Clone)]
pub struct SipHandle {
    tx: mpsc::UnboundedSender<SipCommand>,
    local: SocketAddr,
    registered: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

/// The SIP task has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the SIP task has stopped")]
pub struct SipGone;

impl SipHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub async fn dial(
        &self,
        cfg: CallConfig,
        events: mpsc::UnboundedSender<CallEvent>,
    ) -> Result<CallHandle, SipGone> {
        self.dial_as(cfg, false, events).await
    }

    /// As [`SipHandle::dial`]; `pinned` when `cfg.local` is a configured
    /// advertised address (see [`Endpoint::start_call_as`]).
    pub async fn dial_as(
        &self,
        cfg: CallConfig,
        pinned: bool,
        events: mpsc::UnboundedSender<CallEvent>,
    ) -> Result<CallHandle, SipGone> {
        self.dial_on(cfg, pinned, Transport::Udp, true, None, events)
            .await
    }

    /// As [`SipHandle::dial_as`], over `transport` (see
    /// [`Endpoint::start_call_on`]); `tls` names the certificate and
    /// trust anchors for a TLS destination.
    pub async fn dial_on(
        &self,
        cfg: CallConfig,
        pinned: bool,
        transport: Transport,
        may_upgrade: bool,
        tls: Option<TlsSettings>,
        events: mpsc::UnboundedSender<CallEvent>,
    ) -> Result<CallHandle, SipGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SipCommand::Dial {
                pinned,
                cfg: Box::new(cfg),
                events,
                reply,
                transport,
                may_upgrade,
                tls,
            })
            .map_err(|_| SipGone)?;
        rx.await.map_err(|_| SipGone)
    }

    /// Register with a registrar; progress is logged and kept in
    /// [`SipHandle::registrations`].
    pub fn register(&self, cfg: crate::sip::register::RegistrationConfig) {
        self.register_as(cfg, false);
    }

    /// As [`SipHandle::register`]; `pinned` when `cfg.local` is a
    /// configured advertised address.
    pub fn register_as(&self, cfg: crate::sip::register::RegistrationConfig, pinned: bool) {
        self.register_on(cfg, pinned, Transport::Udp, None);
    }

    /// As [`SipHandle::register_as`], over `transport` (`tls`: the
    /// registrar's name and trust anchors).
    pub fn register_on(
        &self,
        cfg: crate::sip::register::RegistrationConfig,
        pinned: bool,
        transport: Transport,
        tls: Option<TlsSettings>,
    ) {
        let _ = self
            .tx
            .send(SipCommand::Register(Box::new(cfg), pinned, transport, tls));
    }

    /// Send `aor`'s registration to `destination` from now on (its
    /// registrar's name resolves elsewhere).
    pub fn move_registration(&self, aor: &str, destination: SocketAddr, tls: Option<TlsSettings>) {
        let _ = self.tx.send(SipCommand::MoveRegistration {
            aor: aor.to_string(),
            destination,
            tls,
        });
    }

    /// The process-wide `sip_advertise` (see [`Endpoint::set_advertise`]).
    pub fn set_advertise(&self, addr: Option<SocketAddr>) {
        let _ = self.tx.send(SipCommand::Advertise(addr));
    }

    /// The last event of each registration, by address of record.
    pub fn registrations(&self) -> std::collections::BTreeMap<String, String> {
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Accept an incoming call with our SDP answer.
    pub fn answer(&self, h: CallHandle, sdp: Vec<u8>) {
        let _ = self.tx.send(SipCommand::Answer(h, sdp));
    }

    pub fn hangup(&self, h: CallHandle) {
        let _ = self.tx.send(SipCommand::Hangup(h));
    }

    /// Limits on requests from untrusted sources (default:
    /// [`crate::sip::limiter::FloodPolicy::default`]).
    pub fn set_flood_policy(&self, policy: crate::sip::limiter::FloodPolicy) {
        let _ = self.tx.send(SipCommand::Flood(policy));
    }

    /// Never rate-limit or ban `ip` (a trunk, proxy or registrar).
    pub fn trust(&self, ip: std::net::IpAddr) {
        let _ = self.tx.send(SipCommand::Trust(ip));
    }

    pub async fn stats(&self) -> Result<Stats, SipGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SipCommand::Stats(reply))
            .map_err(|_| SipGone)?;
        rx.await.map_err(|_| SipGone)
    }
}

/// A call arriving at a softphone endpoint.
pub struct Incoming {
    pub handle: CallHandle,
    pub offer: crate::sip::sdp::Negotiated,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
}

/// Bind the SIP socket and spawn its task. With `incoming`, INVITEs are
/// accepted (softphone) and announced there; without, they get 403.
pub async fn spawn(
    bind: SocketAddr,
    incoming: Option<mpsc::UnboundedSender<Incoming>>,
) -> std::io::Result<SipHandle> {
    // A large receive buffer absorbs bursts of responses under load.
    let std_socket = super::net::roomy_udp(bind)?;
    std_socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_socket)?;
    let local = socket.local_addr()?;
    // TCP on the same port as UDP, so a Contact or Via with
    // `;transport=tcp` reaches us; without it, TCP is outbound only.
    let (stream_tx, stream_rx) = mpsc::unbounded_channel();
    let streams = Streams::new(stream_tx);
    match tokio::net::TcpListener::bind(local).await {
        Ok(l) => streams.listen_tcp(l),
        Err(e) => {
            tracing::warn!(%local, error = %e, "sip: cannot listen on TCP; TCP is outbound only")
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let seed = rand::random();
    let mut ep = Endpoint::new(local, seed);
    ep.set_accept_incoming(incoming.is_some());
    let registered = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    tokio::spawn(run(
        socket,
        (streams, stream_rx),
        ep,
        rx,
        incoming,
        registered.clone(),
    ));
    Ok(SipHandle {
        tx,
        local,
        registered,
    })
}

async fn run(
    socket: UdpSocket,
    (mut streams, mut stream_rx): (Streams, mpsc::UnboundedReceiver<StreamEvent>),
    mut ep: Endpoint,
    mut rx: mpsc::UnboundedReceiver<SipCommand>,
    incoming: Option<mpsc::UnboundedSender<Incoming>>,
    registered: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
) {
    let mut aors: HashMap<String, String> = HashMap::new();
    // Keyed by our own handles: foldhash, not SipHash (per event).
    let mut subscribers: HashMap<CallHandle, mpsc::UnboundedSender<CallEvent>, _> =
        HashMap::with_hasher(foldhash::fast::RandomState::default());
    let mut buf = vec![0u8; 65536];
    // One timer for the task's life, moved only when the endpoint's next
    // wake-up changes: a new `Sleep` each pass registers and removes a
    // timer entry per message.
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let wake = ep.poll_timeout();
        if wake != armed {
            if let Some(t) = wake {
                sleep.as_mut().reset(t.into());
            }
            armed = wake;
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let now = Instant::now();
                    ep.handle_datagram(now, from, &buf[..n]);
                    // Take what else is already queued before sending and
                    // dispatching: one pass of this loop for a burst.
                    for _ in 0..RECV_BATCH {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => ep.handle_datagram(Instant::now(), from, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                // ICMP port unreachable from an earlier send surfaces here
                // on Linux; it is not fatal for the socket.
                Err(e) => tracing::debug!(error = %e, "sip recv"),
            },
            Some(ev) = stream_rx.recv() => {
                for (from, transport, bytes) in streams.on_event(ev) {
                    ep.handle_stream_message(Instant::now(), from, transport, &bytes);
                }
            }
            cmd = rx.recv() => match cmd {
                Some(SipCommand::Dial { cfg, pinned, events, reply, transport, may_upgrade, tls }) => {
                    if let Some(tls) = tls {
                        streams.set_tls(cfg.destination, tls);
                    }
                    let h = ep.start_call_on(Instant::now(), *cfg, pinned, transport, may_upgrade);
                    subscribers.insert(h, events);
                    if reply.send(h).is_err() {
                        // Whoever dialled is gone (its call dropped while
                        // a redial was under way): nobody would ever
                        // hang this leg up.
                        ep.hangup(Instant::now(), h);
                    }
                }
                Some(SipCommand::Hangup(h)) => ep.hangup(Instant::now(), h),
                Some(SipCommand::Answer(h, sdp)) => ep.answer(Instant::now(), h, sdp),
                Some(SipCommand::Advertise(a)) => ep.set_advertise(a),
                Some(SipCommand::Register(cfg, pinned, transport, tls)) => {
                    let aor = cfg.aor.clone();
                    if let Some(tls) = tls {
                        streams.set_tls(cfg.destination, tls);
                    }
                    let cid = ep.start_registration_on(Instant::now(), *cfg, pinned, transport);
                    aors.insert(cid, aor);
                }
                Some(SipCommand::MoveRegistration { aor, destination, tls }) => {
                    if let Some(tls) = tls {
                        streams.set_tls(destination, tls);
                    }
                    let cids: Vec<String> = aors
                        .iter()
                        .filter(|(_, a)| **a == aor)
                        .map(|(c, _)| c.clone())
                        .collect();
                    for cid in cids {
                        ep.move_registration(Instant::now(), &cid, destination);
                    }
                }
                Some(SipCommand::Stats(reply)) => { let _ = reply.send(ep.stats()); }
                Some(SipCommand::Flood(policy)) => ep.set_flood_policy(policy),
                Some(SipCommand::Trust(ip)) => ep.trust(ip),
                None => return,
            },
            _ = &mut sleep, if armed.is_some() => {
                armed = None;
                ep.handle_timeout(Instant::now());
            }
        }
        while let Some((transport, t)) = ep.poll_send() {
            if transport.is_reliable() {
                streams.send(transport, t.dest, t.bytes);
            } else {
                // Straight to the socket when it has room (almost always);
                // wait for it only when full.
                let sent = match socket.try_send_to(&t.bytes, t.dest) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        socket.send_to(&t.bytes, t.dest).await.map(|_| ())
                    }
                    r => r.map(|_| ()),
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, dest = %t.dest, "sip send failed");
                }
            }
        }
        while let Some(ip) = ep.poll_ban() {
            tracing::warn!(source = %ip, "SIP flood: source banned");
        }
        while let Some((cid, ev)) = ep.poll_reg_event() {
            let aor = aors.get(&cid).cloned().unwrap_or_default();
            let state = match ev {
                crate::sip::register::RegEvent::Registered { expires } => {
                    tracing::info!(aor = %crate::logging::Redacted(&aor), expires, "registered");
                    format!("registered for {expires} s")
                }
                crate::sip::register::RegEvent::RealmRefused { reason } => {
                    tracing::warn!(aor = %crate::logging::Redacted(&aor), %reason, "registration challenge not answered");
                    format!("failed ({reason})")
                }
                crate::sip::register::RegEvent::IntervalRaised { expires } => {
                    tracing::info!(aor = %crate::logging::Redacted(&aor), expires, "registrar asked for a longer interval (423); registering again");
                    format!("registering for {expires} s (423 Min-Expires)")
                }
                crate::sip::register::RegEvent::Failed { code } => {
                    tracing::error!(aor = %crate::logging::Redacted(&aor), ?code, "registration failed; retrying in 30 s");
                    format!(
                        "failed ({})",
                        code.map_or("no response".to_string(), |c| c.to_string())
                    )
                }
            };
            registered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(aor, state);
        }
        while let Some((h, ev)) = ep.poll_event() {
            if let (CallEvent::Offered(offer), Some(inc)) = (&ev, &incoming) {
                let (tx, events) = mpsc::unbounded_channel();
                subscribers.insert(h, tx);
                let offer = offer.clone();
                if inc
                    .send(Incoming {
                        handle: h,
                        offer,
                        events,
                    })
                    .is_err()
                {
                    ep.hangup(Instant::now(), h);
                }
                continue;
            }
            if let CallEvent::Ended(crate::sip::call::EndReason::Rejected { reason, .. }) = &ev {
                if reason.starts_with("digest challenge for realm") {
                    tracing::warn!(%reason, "call ended: a challenge for a foreign realm was not answered");
                }
            }
            let ended = matches!(ev, CallEvent::Ended(_));
            if let Some(sub) = subscribers.get(&h) {
                if sub.send(ev).is_err() && !ended {
                    // Nobody listens to this leg any more: end it rather
                    // than leave it ringing (or answered, in dead air).
                    subscribers.remove(&h);
                    ep.hangup(Instant::now(), h);
                    continue;
                }
            }
            if ended {
                subscribers.remove(&h);
            }
        }
    }
}

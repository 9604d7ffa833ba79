//! tokio drivers around the sans-IO cores: the SIP socket task, the media
//! clock task, and [`Gateway`], which places calls and hands each caller an
//! [`ActiveCall`] that merges SIP and media events.

pub mod keepalive;
pub mod media;
pub mod net;
pub mod resolve;
pub mod rtp_socket;
pub mod sip;
pub mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use crate::media::audio::Prompt;
use crate::media::session::{MediaEvent, MediaPolicy, MediaSession};
use crate::media::srtp::{SdesKey, SrtpMode};
use crate::sip::advertise::Advertise;
use crate::sip::auth::Credentials;
use crate::sip::call::{CallConfig, CallEvent, EndReason};
use crate::sip::endpoint::CallHandle;
use crate::sip::header::SipUri;
use crate::sip::redirect::{self, Decision, RedirectPolicy};
use crate::sip::sdp;
use crate::sip::transaction::Timers;
use crate::sip::transport::{TlsSettings, Transport};
use media::{MediaCommand, MediaHandle, MediaSummary, PortPool};
use sip::SipHandle;

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("not a SIP URI: {0}")]
    BadUri(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no RTP port available: {0}")]
    NoPort(#[source] std::io::Error),
    #[error(transparent)]
    SipGone(#[from] sip::SipGone),
    #[error(transparent)]
    Transport(#[from] crate::sip::transport::TransportError),
    #[error("srtp = {0:?} needs a TLS transport: SDES keys travel in the SDP and are never sent in clear (use a sips: URI or transport = \"tls\", or srtp = \"off\")")]
    SrtpWithoutTls(SrtpMode),
}

/// The SRTP mode a call uses on `transport`: the setting, else optional
/// on TLS (offered, and a peer without SRTP still gets its call: most
/// carriers' TLS trunks do not do SDES) and off otherwise; keys on a
/// clear transport are refused.
pub fn srtp_mode(setting: Option<SrtpMode>, transport: Transport) -> Result<SrtpMode, DialError> {
    match (setting, transport) {
        (None, Transport::Tls) => Ok(SrtpMode::Optional),
        (None, _) => Ok(SrtpMode::Off),
        (Some(SrtpMode::Off), _) => Ok(SrtpMode::Off),
        (Some(m), Transport::Tls) => Ok(m),
        (Some(m), _) => Err(DialError::SrtpWithoutTls(m)),
    }
}

/// What to dial.
#[derive(Debug, Clone)]
pub struct DialRequest {
    pub uri: String,
    pub from_uri: String,
    pub from_display: Option<String>,
    pub credentials: Option<Credentials>,
    pub ring_timeout: Duration,
    /// Send the INVITE here instead of the URI's host (a trunk's proxy).
    pub outbound_proxy: Option<SocketAddr>,
    /// Proxies to try next, in order, when the INVITE times out or gets
    /// a 5xx before any answer (a new Call-ID each).
    pub failover: Vec<SocketAddr>,
    /// Extra INVITE headers.
    pub extra_headers: Vec<(String, String)>,
    /// DTMF paths and whom media is accepted from.
    pub media: MediaPolicy,
    /// The trunk's advertised addresses (each falls back to the
    /// gateway's, see [`Gateway::set_advertise`]).
    pub advertise: Advertise,
    /// Which 3xx targets may be dialled (the default: none).
    pub redirect: RedirectPolicy,
    /// Codecs to offer, in order (empty: PCMU, PCMA).
    pub codecs: Vec<sdp::Codec>,
    /// The trunk's transport and TLS settings; the URI's `sips:` or
    /// `;transport=` apply when the trunk names none.
    pub transport: crate::sip::transport::TrunkTransport,
    /// Whole trunks to try next, in order, once every proxy of this one
    /// (`outbound_proxy`, then `failover`) timed out or answered 5xx.
    pub next_trunks: Vec<TrunkHop>,
}

/// Another trunk a call may move to: everything of a [`DialRequest`] that
/// is the trunk's rather than the callee's.
#[derive(Debug, Clone)]
pub struct TrunkHop {
    pub name: String,
    /// Its proxies in the order to try; the first becomes the outbound
    /// proxy (none: the URI's host).
    pub proxies: Vec<SocketAddr>,
    pub credentials: Option<Credentials>,
    pub from_uri: String,
    pub from_display: Option<String>,
    /// Every extra header of the INVITE (identity headers are per trunk).
    pub extra_headers: Vec<(String, String)>,
    pub codecs: Vec<sdp::Codec>,
    pub advertise: Advertise,
    pub transport: crate::sip::transport::TrunkTransport,
    /// The trunk's `symmetric_rtp`: media settings are the trunk's that
    /// carries the call, not the first one tried.
    pub symmetric_rtp: bool,
}

/// Admits a call onto the trunk it fails over to (the trunk channel
/// limits, `crate::channels::Held`): the call is counted against the
/// trunk it is actually sent on, not the one it was first meant for.
pub trait TrunkGate: Send + Sync {
    /// The call is about to go through `trunk`: whether it may now
    /// (false: that trunk is skipped, the next one is tried).
    fn enter<'a>(
        &'a self,
        trunk: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

impl TrunkHop {
    /// Make `req` go through this trunk.
    fn apply(self, req: &mut DialRequest) {
        let mut proxies = self.proxies.into_iter();
        req.outbound_proxy = proxies.next();
        req.failover = proxies.collect();
        req.credentials = self.credentials;
        req.from_uri = self.from_uri;
        req.from_display = self.from_display;
        req.extra_headers = self.extra_headers;
        req.codecs = self.codecs;
        req.advertise = self.advertise;
        req.transport = self.transport;
        req.media.symmetric_rtp = self.symmetric_rtp;
    }
}

/// The running gateway: one SIP socket, one media clock, an RTP port pool.
#[derive(Clone)]
pub struct Gateway {
    sip: SipHandle,
    media: MediaHandle,
    ports: Arc<Mutex<PortPool>>,
    rtp_ip: IpAddr,
    advertise: Advertise,
    next_id: Arc<AtomicU64>,
}

impl Gateway {
    /// Bind the SIP socket on `sip_bind` and take RTP ports from `rtp_range`
    /// on the same address.
    pub async fn start(sip_bind: SocketAddr, rtp_range: &str) -> anyhow::Result<Gateway> {
        Self::start_inner(sip_bind, rtp_range, None).await
    }

    /// A gateway that also answers calls (softphone); incoming calls are
    /// announced on the returned channel, to be taken with
    /// [`Gateway::accept`].
    pub async fn start_softphone(
        sip_bind: SocketAddr,
        rtp_range: &str,
    ) -> anyhow::Result<(Gateway, mpsc::UnboundedReceiver<sip::Incoming>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let gw = Self::start_inner(sip_bind, rtp_range, Some(tx)).await?;
        Ok((gw, rx))
    }

    async fn start_inner(
        sip_bind: SocketAddr,
        rtp_range: &str,
        incoming: Option<mpsc::UnboundedSender<sip::Incoming>>,
    ) -> anyhow::Result<Gateway> {
        let sip = sip::spawn(sip_bind, incoming).await?;
        let rtp_ip = sip.local_addr().ip();
        let ports = PortPool::parse(rtp_ip, rtp_range)?;
        Ok(Gateway {
            sip,
            media: media::spawn(),
            ports: Arc::new(Mutex::new(ports)),
            rtp_ip,
            advertise: Advertise::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The process-wide `sip_advertise` / `rtp_advertise`.
    pub fn set_advertise(&mut self, advertise: Advertise) {
        self.advertise = advertise;
        self.sip.set_advertise(advertise.sip);
    }

    /// Via/Contact address and RTP address for a call toward `dest`, and
    /// whether the former is configured (pinned). Never the unspecified
    /// address: bound to it with nothing configured, the OS route's
    /// source toward `dest` is used (and a warning logged).
    pub fn addresses_toward(
        &self,
        dest: SocketAddr,
        trunk: Advertise,
    ) -> (SocketAddr, bool, IpAddr) {
        let a = trunk.or(self.advertise);
        let bound = self.sip.local_addr();
        let route = || match net::route_source(dest) {
            Ok(ip) => {
                tracing::warn!(%bound, %dest, chosen = %ip, "bound to the unspecified address with no sip_advertise/rtp_advertise: advertising the route's source address");
                ip
            }
            Err(e) => {
                tracing::warn!(%bound, %dest, error = %e, "no route source toward the peer; advertising loopback");
                if dest.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                }
            }
        };
        let (sip, pinned) = match a.sip {
            Some(s) if s.port() == 0 => (SocketAddr::new(s.ip(), bound.port()), true),
            Some(s) => (s, true),
            None if bound.ip().is_unspecified() => (SocketAddr::new(route(), bound.port()), false),
            None => (bound, false),
        };
        let rtp = match a.rtp.or(a.sip.map(|s| s.ip())) {
            Some(ip) => ip,
            None if self.rtp_ip.is_unspecified() => sip.ip(),
            None => self.rtp_ip,
        };
        (sip, pinned, rtp)
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr()
    }

    pub fn sip(&self) -> &SipHandle {
        &self.sip
    }

    /// Answer an incoming call; media starts when its ACK arrives.
    pub async fn accept(&self, inc: sip::Incoming) -> Result<ActiveCall, DialError> {
        let (socket, rtcp) = self
            .ports
            .lock()
            .await
            .bind_pair()
            .await
            .map_err(DialError::NoPort)?;
        let rtp_addr = socket.local_addr().map_err(DialError::NoPort)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rtp_ip = match self.advertise.rtp.or(self.advertise.sip.map(|s| s.ip())) {
            Some(ip) => ip,
            None if self.rtp_ip.is_unspecified() => {
                net::route_source(inc.offer.remote).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
            }
            None => self.rtp_ip,
        };
        let answer = sdp::answer(SocketAddr::new(rtp_ip, rtp_addr.port()), id, &inc.offer);
        self.sip.answer(inc.handle, answer);
        let mut call = self.active_call(id, inc.handle, Arc::new(socket), inc.events);
        call.rtcp = Some(Arc::new(rtcp));
        Ok(call)
    }

    /// Place a call. Returns once the INVITE is queued.
    pub async fn dial(&self, req: DialRequest) -> Result<ActiveCall, DialError> {
        let (socket, rtcp) = self
            .ports
            .lock()
            .await
            .bind_pair()
            .await
            .map_err(DialError::NoPort)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let socket = Arc::new(socket);
        // One key per call, from the CSPRNG; used only if the transport
        // turns out to be TLS.
        let key = SdesKey::generate(1);
        let (handle, sip_rx, mode) = self.invite(id, &req, &socket, &key).await?;
        let mut call = self.active_call(id, handle, socket, sip_rx);
        call.rtcp = Some(Arc::new(rtcp));
        call.srtp = (mode != SrtpMode::Off).then_some((key, mode));
        call.policy = req.media;
        call.dialled.push(req.uri.clone());
        call.redial = Some(Box::new((self.clone(), req)));
        Ok(call)
    }

    /// Send the INVITE of `req` for call `id` with media on `socket`.
    async fn invite(
        &self,
        id: u64,
        req: &DialRequest,
        socket: &rtp_socket::RtpSocket,
        key: &SdesKey,
    ) -> Result<(CallHandle, mpsc::UnboundedReceiver<CallEvent>, SrtpMode), DialError> {
        let uri = SipUri::parse(&req.uri).map_err(|_| DialError::BadUri(req.uri.clone()))?;
        let (transport, may_upgrade) =
            crate::sip::transport::choose(req.transport.transport, &uri)?;
        let mode = srtp_mode(req.transport.srtp, transport)?;
        let destination = match req.outbound_proxy {
            Some(p) => p,
            None => {
                let (host, port) = uri.target();
                let h = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let found = tokio::net::lookup_host((h.as_str(), port)).await;
                let mut addrs = found.map_err(|source| DialError::Resolve {
                    host: host.clone(),
                    source,
                })?;
                addrs.next().ok_or_else(|| DialError::Resolve {
                    host: host.clone(),
                    source: std::io::Error::other("no address"),
                })?
            }
        };
        let rtp_addr = socket.local_addr().map_err(DialError::NoPort)?;
        let (local, pinned, rtp_ip) = self.addresses_toward(destination, req.advertise);
        let mut offer = crate::sip::trunk_prefs::order_offer(
            &sdp::offer(SocketAddr::new(rtp_ip, rtp_addr.port()), id, 1),
            &req.codecs,
        );
        if mode != SrtpMode::Off {
            offer = sdp::secure(&offer, key, mode == SrtpMode::Required);
        }
        let cfg = CallConfig {
            target: req.uri.clone(),
            from_uri: req.from_uri.clone(),
            from_display: req.from_display.clone(),
            local,
            destination,
            credentials: req.credentials.clone(),
            ring_timeout: req.ring_timeout,
            sdp_offer: offer,
            timers: Timers::default(),
            user_agent: String::new(),
            extra_headers: req.extra_headers.clone(),
        };
        let (sip_tx, sip_rx) = mpsc::unbounded_channel();
        let tls = match transport {
            Transport::Tls => {
                let mut t = req.transport.tls.clone().unwrap_or(TlsSettings {
                    server_name: String::new(),
                    ca_file: None,
                    client_cert: None,
                    client_key: None,
                });
                if t.server_name.is_empty() {
                    t.server_name = uri
                        .host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string();
                }
                Some(t)
            }
            _ => None,
        };
        let handle = self
            .sip
            .dial_on(cfg, pinned, transport, may_upgrade, tls, sip_tx)
            .await?;
        Ok((handle, sip_rx, mode))
    }

    fn active_call(
        &self,
        id: u64,
        handle: CallHandle,
        socket: Arc<rtp_socket::RtpSocket>,
        sip_rx: mpsc::UnboundedReceiver<CallEvent>,
    ) -> ActiveCall {
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        ActiveCall {
            id,
            handle,
            sip: self.sip.clone(),
            media: self.media.clone(),
            socket: Some(socket),
            rtcp: None,
            recv_task: None,
            srtp: None,
            summary: None,
            sip_rx,
            media_rx,
            media_tx,
            media_added: false,
            sip_done: false,
            next_prompt: 1,
            record: false,
            policy: MediaPolicy::default(),
            redial: None,
            dialled: Vec::new(),
            trunk_gate: None,
            pending: std::sync::Mutex::new(None),
            hangup_asked: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Whether an unanswered call's end means "try the next proxy": no
/// response at all, or a 5xx (503 most often: the proxy is overloaded or
/// has no way on). Carries the code for the record.
fn failover_code(r: &EndReason) -> Option<Option<u16>> {
    match r {
        EndReason::Unreachable { code: None } => Some(None),
        EndReason::Unreachable { code: Some(c) } | EndReason::Rejected { code: c, .. }
            if (500..600).contains(c) =>
        {
            Some(Some(*c))
        }
        _ => None,
    }
}

/// One event of a call, SIP or media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallUpdate {
    Sip(CallEvent),
    Media(MediaEvent),
    /// A 3xx was followed: a new INVITE went to `target`.
    Redirected {
        code: u16,
        target: String,
    },
    /// The proxy timed out (`code` None) or answered 5xx: a new INVITE
    /// went to the next proxy `to` (`None`: the URI's host), of the next
    /// trunk `trunk` when it moved to another trunk.
    FailedOver {
        code: Option<u16>,
        to: Option<SocketAddr>,
        trunk: Option<String>,
    },
}

/// A placed call: read its events with [`ActiveCall::next`], drive its
/// audio with `play`, end it with `hangup`. Dropping it hangs up.
pub struct ActiveCall {
    id: u64,
    handle: CallHandle,
    sip: SipHandle,
    media: MediaHandle,
    socket: Option<Arc<rtp_socket::RtpSocket>>,
    rtcp: Option<Arc<rtp_socket::RtpSocket>>,
    /// Reads the call's RTP (and RTCP) socket while media is up.
    /// Aborted when replaced or dropped: `receive` ends only so.
    recv_task: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// Our SRTP key and mode when the call offered one.
    srtp: Option<(SdesKey, SrtpMode)>,
    /// The media figures, asked for as the session is removed.
    summary: Option<tokio::sync::oneshot::Receiver<MediaSummary>>,
    sip_rx: mpsc::UnboundedReceiver<CallEvent>,
    media_rx: mpsc::UnboundedReceiver<MediaEvent>,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    media_added: bool,
    sip_done: bool,
    next_prompt: u64,
    record: bool,
    policy: MediaPolicy,
    /// How to dial again when a 3xx is followed (dialled calls only).
    redial: Option<Box<(Gateway, DialRequest)>>,
    /// Every URI this call has sent an INVITE to, in order.
    dialled: Vec<String>,
    /// Asked before the call moves to another trunk.
    trunk_gate: Option<Arc<dyn TrunkGate>>,
    /// A redial under way (see [`ActiveCall::next`]); only ever reached
    /// through `&mut self` (`get_mut`, never locked): the mutex is there
    /// so the call stays `Sync` with a `Send`-only future in it.
    pending: std::sync::Mutex<Option<PendingRedial>>,
    /// `hangup` was called: a leg a pending redial makes is hung up too.
    hangup_asked: Arc<AtomicBool>,
}

/// A 3xx being followed or a failover being made: the new INVITE's leg,
/// or the reason the call ends with. It owns the redial state while it
/// runs and gives it back with the result.
type PendingRedial = std::pin::Pin<Box<dyn std::future::Future<Output = Redialled> + Send>>;

struct Redialled {
    redial: Box<(Gateway, DialRequest)>,
    result: Result<NewLeg, EndReason>,
}

/// What a redial made: the new INVITE's handle and events.
struct NewLeg {
    handle: CallHandle,
    sip_rx: mpsc::UnboundedReceiver<CallEvent>,
    srtp: Option<(SdesKey, SrtpMode)>,
    /// The media policy of the trunk the call moved to.
    policy: Option<MediaPolicy>,
    /// The redirect target, for the list of URIs this call has dialled.
    dialled: Option<String>,
    update: CallUpdate,
}

impl ActiveCall {
    /// Ask `gate` before failing over to another trunk.
    pub fn set_trunk_gate(&mut self, gate: Arc<dyn TrunkGate>) {
        self.trunk_gate = Some(gate);
    }

    /// Keep the audio the far end sends (see [`ActiveCall::take_recording`]).
    pub fn record(&mut self) {
        self.record = true;
    }

    /// The next event; `None` once the call has ended and all is drained.
    ///
    /// Cancel-safe: a redial (a 3xx followed, a failover) is kept in the
    /// call while it is under way, so a caller whose `select!` took
    /// another branch finds it where it was at the next call.
    pub async fn next(&mut self) -> Option<CallUpdate> {
        loop {
            if self.sip_done {
                // After the end, hand out what media already queued.
                return self.media_rx.try_recv().ok().map(CallUpdate::Media);
            }
            let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
            if let Some(pending) = pending.as_mut() {
                tokio::select! {
                    done = pending => {
                        *self.pending_mut() = None;
                        match self.redialled(done) {
                            Ok(update) => return Some(update),
                            Err(reason) => {
                                self.finish();
                                return Some(CallUpdate::Sip(CallEvent::Ended(reason)));
                            }
                        }
                    }
                    Some(ev) = self.media_rx.recv() => return Some(CallUpdate::Media(ev)),
                }
            }
            tokio::select! {
                ev = self.sip_rx.recv() => {
                    let Some(ev) = ev else {
                        self.finish();
                        continue;
                    };
                    let hung_up = self.hangup_asked.load(Ordering::Relaxed);
                    let ev = match ev {
                        // Hung up (cancelled, shut down, lease lost): the
                        // call ends here; no new INVITE goes anywhere.
                        CallEvent::Ended(EndReason::Redirected { .. }) if hung_up => {
                            CallEvent::Ended(EndReason::Cancelled)
                        }
                        CallEvent::Ended(reason) if hung_up => CallEvent::Ended(reason),
                        CallEvent::Ended(EndReason::Redirected { code, targets }) => {
                            match self.follow(code, &targets) {
                                Ok(pending) => {
                                    *self.pending_mut() = Some(pending);
                                    continue;
                                }
                                Err(reason) => CallEvent::Ended(reason),
                            }
                        }
                        CallEvent::Ended(reason) => match failover_code(&reason) {
                            Some(code) => match self.fail_over(code, reason) {
                                Ok(pending) => {
                                    *self.pending_mut() = Some(pending);
                                    continue;
                                }
                                Err(reason) => CallEvent::Ended(reason),
                            },
                            None => CallEvent::Ended(reason),
                        },
                        ev => ev,
                    };
                    match &ev {
                        CallEvent::Answered(neg)
                        | CallEvent::EarlyMedia(neg)
                        | CallEvent::MediaUpdated(neg) => self.start_media(neg),
                        CallEvent::InfoDigit { digit, .. } => {
                            self.media.send(MediaCommand::InfoDigit(self.id, *digit));
                        }
                        CallEvent::Ended(_) => self.finish(),
                        _ => {}
                    }
                    return Some(CallUpdate::Sip(ev));
                }
                Some(ev) = self.media_rx.recv() => return Some(CallUpdate::Media(ev)),
            }
        }
    }

    fn pending_mut(&mut self) -> &mut Option<PendingRedial> {
        self.pending.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Take over the leg a finished redial made (or give the reason the
    /// call ends with).
    fn redialled(&mut self, done: Redialled) -> Result<CallUpdate, EndReason> {
        self.redial = Some(done.redial);
        let leg = done.result?;
        self.handle = leg.handle;
        self.sip_rx = leg.sip_rx;
        self.srtp = leg.srtp;
        if let Some(policy) = leg.policy {
            // The session is made at the answer with this policy.
            self.policy = policy;
        }
        if let Some(target) = leg.dialled {
            self.dialled.push(target);
        }
        if self.hangup_asked.load(Ordering::Relaxed) {
            // Hung up while the new INVITE was being prepared.
            self.sip.hangup(self.handle);
        }
        Ok(leg.update)
    }

    /// Follow a 3xx if the dial's redirect rule allows it: a new INVITE
    /// (new Call-ID) to the allowed target, media on the same port.
    /// Otherwise the reason the call ends with.
    fn follow(&mut self, code: u16, targets: &[String]) -> Result<PendingRedial, EndReason> {
        let refused = |target, why| EndReason::RedirectRefused { code, target, why };
        let key = self.offer_key();
        let Some(redial) = self.redial.as_mut() else {
            let target = targets.first().cloned().unwrap_or_default();
            return Err(refused(target, redirect::Refusal::NotInDialplan));
        };
        let target = match redial.1.redirect.decide(targets, &self.dialled) {
            Decision::Follow(t) => t,
            Decision::Refuse { target, why } => {
                tracing::warn!(code, target = %crate::logging::Redacted(&target), ?why, "redirect refused");
                return Err(refused(target, why));
            }
        };
        let Some(socket) = self.socket.clone() else {
            return Err(refused(target, redirect::Refusal::NoTarget));
        };
        redial.1.uri = target.clone();
        let Some(redial) = self.redial.take() else {
            return Err(refused(target, redirect::Refusal::NoTarget));
        };
        let id = self.id;
        let hung_up = self.hangup_asked.clone();
        Ok(Box::pin(async move {
            if hung_up.load(Ordering::Relaxed) {
                let result = Err(EndReason::Cancelled);
                return Redialled { redial, result };
            }
            let result = match redial.0.invite(id, &redial.1, &socket, &key).await {
                Ok((handle, sip_rx, mode)) => {
                    tracing::info!(code, target = %crate::logging::Redacted(&target), "following a redirect");
                    Ok(NewLeg {
                        handle,
                        sip_rx,
                        srtp: (mode != SrtpMode::Off).then_some((key, mode)),
                        policy: None,
                        dialled: Some(target.clone()),
                        update: CallUpdate::Redirected { code, target },
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow a redirect");
                    Err(EndReason::Unreachable { code: None })
                }
            };
            Redialled { redial, result }
        }))
    }

    /// Send the INVITE again through the next failover proxy, if any,
    /// else through the next trunk; the update says where it went (and
    /// the trunk's name when it moved to another trunk). With nowhere
    /// left to go, the call ends with `reason`.
    fn fail_over(
        &mut self,
        code: Option<u16>,
        reason: EndReason,
    ) -> Result<PendingRedial, EndReason> {
        let Some(socket) = self.socket.clone() else {
            return Err(reason);
        };
        let Some(mut redial) = self.redial.take() else {
            return Err(reason);
        };
        let key = self.offer_key();
        let gate = self.trunk_gate.clone();
        let id = self.id;
        let hung_up = self.hangup_asked.clone();
        Ok(Box::pin(async move {
            let mut reason = reason;
            let result = loop {
                if hung_up.load(Ordering::Relaxed) {
                    break Err(std::mem::replace(&mut reason, EndReason::Cancelled));
                }
                let (to, trunk, policy) = if !redial.1.failover.is_empty() {
                    let to = redial.1.failover.remove(0);
                    redial.1.outbound_proxy = Some(to);
                    (Some(to), None, None)
                } else if !redial.1.next_trunks.is_empty() {
                    let hop = redial.1.next_trunks.remove(0);
                    let name = hop.name.clone();
                    if let Some(gate) = &gate {
                        if !gate.enter(&name).await {
                            tracing::warn!(trunk = %name, "no free channel on the trunk to fail over to; skipped");
                            continue;
                        }
                    }
                    if hung_up.load(Ordering::Relaxed) {
                        // Hung up while it waited for the trunk's channel.
                        continue;
                    }
                    hop.apply(&mut redial.1);
                    (redial.1.outbound_proxy, Some(name), Some(redial.1.media))
                } else {
                    break Err(std::mem::replace(&mut reason, EndReason::Cancelled));
                };
                match redial.0.invite(id, &redial.1, &socket, &key).await {
                    Ok((handle, sip_rx, mode)) => {
                        match &trunk {
                            Some(t) => {
                                tracing::warn!(trunk = %t, proxy = ?to, "failing over to the next trunk")
                            }
                            None => tracing::warn!(proxy = ?to, "failing over to the next proxy"),
                        }
                        break Ok(NewLeg {
                            handle,
                            sip_rx,
                            srtp: (mode != SrtpMode::Off).then_some((key, mode)),
                            policy,
                            dialled: None,
                            update: CallUpdate::FailedOver { code, to, trunk },
                        });
                    }
                    Err(e) => {
                        tracing::warn!(proxy = ?to, trunk = ?trunk, error = %e, "cannot fail over")
                    }
                }
            };
            Redialled { redial, result }
        }))
    }

    /// The key a new INVITE of this call offers (the same all along).
    fn offer_key(&self) -> SdesKey {
        self.srtp
            .as_ref()
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| SdesKey::generate(1))
    }

    /// Start media on the first SDP; every later one (the 200 after a
    /// 183, a re-INVITE) moves the running session. With SRTP required,
    /// an SDP without a usable key gets no media at all and the call is
    /// hung up: nothing is ever sent or taken in clear.
    fn start_media(&mut self, neg: &sdp::Negotiated) {
        if let Some((_, SrtpMode::Required)) = &self.srtp {
            if neg.crypto.is_none() {
                tracing::error!(
                    "the answer has no usable SRTP key (a=crypto {}) but SRTP is required: hanging up",
                    crate::media::srtp::SUITE
                );
                self.hangup();
                return;
            }
        }
        if self.media_added {
            self.media.send(MediaCommand::Update(self.id, neg.clone()));
            return;
        }
        let Some(socket) = self.socket.clone() else {
            return;
        };
        let mut session = MediaSession::new(neg, rand::random(), rand::random(), rand::random());
        if let (Some((key, _)), Some(remote)) = (&self.srtp, &neg.crypto) {
            if let Err(e) = session.set_srtp(key.clone(), remote) {
                tracing::error!(error = %e, "cannot set up SRTP: hanging up");
                self.hangup();
                return;
            }
        }
        session.set_policy(self.policy);
        if self.record {
            session.record();
        }
        self.media.send(MediaCommand::Add {
            id: self.id,
            session: Box::new(session),
            socket: socket.clone(),
            rtcp: self.rtcp.clone(),
            events: self.media_tx.clone(),
        });
        // After the Add: what it reads is then never ahead of the session.
        self.recv_task = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            media::receive(self.id, socket, self.rtcp.clone(), self.media.clone()),
        )));
        self.media_added = true;
    }

    fn finish(&mut self) {
        self.sip_done = true;
        // Stop sending RTP at once; a recording call keeps its session
        // until dropped so the recording can still be taken.
        if self.media_added && !self.record {
            self.remove_media();
        }
    }

    /// Ask for the final figures, then remove the session (the media
    /// thread takes commands in order, so the figures are the last).
    fn remove_media(&mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.media.send(MediaCommand::Summary(self.id, tx));
        self.summary = Some(rx);
        self.media.send(MediaCommand::Remove(self.id));
        self.stop_receiving();
        self.media_added = false;
    }

    fn stop_receiving(&mut self) {
        self.recv_task = None;
    }

    /// What the media session counted and RTCP reported: the final
    /// figures once the call has ended, else the figures so far. `None`
    /// when the call never had media.
    pub async fn media_summary(&mut self) -> Option<MediaSummary> {
        if let Some(rx) = self.summary.take() {
            return rx.await.ok();
        }
        if !self.media_added {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.media.send(MediaCommand::Summary(self.id, tx));
        rx.await.ok()
    }

    /// Queue a prompt; returns the id reported in prompt events.
    pub fn play(&mut self, prompt: Arc<Prompt>) -> u64 {
        let pid = self.next_prompt;
        self.next_prompt += 1;
        self.media.send(MediaCommand::Play(self.id, pid, prompt));
        pid
    }

    pub fn play_silence(&self, ms: u64) {
        self.media.send(MediaCommand::Silence(self.id, ms));
    }

    /// Start answering-machine detection (after `Answered`).
    pub fn start_amd(&self, p: crate::media::amd::AmdParams) {
        self.media.send(MediaCommand::StartAmd(self.id, p));
    }

    /// Let the current prompt finish, drop the queued ones.
    pub fn clear_queue(&self) {
        self.media.send(MediaCommand::ClearQueue(self.id));
    }

    pub fn stop_audio(&self) {
        self.media.send(MediaCommand::Stop(self.id));
    }

    pub fn send_digit(&self, digit: char, ms: u16) {
        self.media.send(MediaCommand::SendDigit(self.id, digit, ms));
    }

    /// The decoded audio received so far (needs [`ActiveCall::record`]).
    pub async fn take_recording(&self) -> Vec<i16> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.media.send(MediaCommand::TakeRecording(self.id, tx));
        rx.await.unwrap_or_default()
    }

    /// CANCEL if ringing, BYE if answered.
    pub fn hangup(&self) {
        self.hangup_asked.store(true, Ordering::Relaxed);
        self.sip.hangup(self.handle);
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        if !self.sip_done {
            self.sip.hangup(self.handle);
        }
        if self.media_added {
            self.media.send(MediaCommand::Remove(self.id));
        }
        self.stop_receiving();
        self.socket = None;
        self.rtcp = None;
    }
}

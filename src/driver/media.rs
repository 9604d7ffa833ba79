//! The media thread: one shared 20 ms clock drives every call's
//! [`MediaSession`], so pacing costs one timer for all calls and never
//! drifts. Each call's RTP socket has a small receive task that hands
//! datagrams to this thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rtp_socket::RtpSocket;
use tokio::sync::mpsc;

use crate::media::audio::Prompt;
use crate::media::rtcp::RtcpFigures;
use crate::media::session::{MediaEvent, MediaSession, MediaStats};

/// Packet interval.
pub use crate::media::pacing::PTIME;

pub enum MediaCommand {
    Add {
        id: u64,
        session: Box<MediaSession>,
        socket: Arc<RtpSocket>,
        /// The RTCP socket (RTP port + 1).
        rtcp: Option<Arc<RtpSocket>>,
        events: mpsc::UnboundedSender<MediaEvent>,
    },
    Remove(u64),
    /// RTCP from the network, with when it was read off the socket.
    InboundRtcp(u64, SocketAddr, Vec<u8>, Instant),
    /// What the session counted and RTCP reported, for the call record.
    Summary(u64, tokio::sync::oneshot::Sender<MediaSummary>),
    /// A new offer/answer exchange: media follows it.
    Update(u64, crate::sip::sdp::Negotiated),
    Play(u64, u64, Arc<Prompt>),
    Silence(u64, u64),
    Stop(u64),
    ClearQueue(u64),
    SendDigit(u64, char, u16),
    StartAmd(u64, crate::media::amd::AmdParams),
    InfoDigit(u64, char),
    /// RTP from the network, with when it was read off the socket: the
    /// arrival time of jitter (RFC 3550 A.8) is the socket's, not when
    /// the media thread got round to it between ticks.
    Inbound(u64, SocketAddr, Vec<u8>, Instant),
    /// Stop and hand back what the session recorded.
    TakeRecording(u64, tokio::sync::oneshot::Sender<Vec<i16>>),
}

/// A call's media figures at one moment (the end, for the call record).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MediaSummary {
    /// The call's media was SRTP.
    pub srtp: bool,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// SRTP/SRTCP packets dropped for a failed authentication or replay.
    pub srtp_auth_failed: u64,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    pub rtcp: RtcpFigures,
}

impl MediaSummary {
    fn of(s: &MediaSession) -> MediaSummary {
        let st: MediaStats = s.stats();
        MediaSummary {
            srtp: s.is_secure(),
            packets_sent: st.sent,
            packets_received: st.received,
            srtp_auth_failed: st.auth_failed,
            rtcp_sent: st.rtcp_sent,
            rtcp_received: st.rtcp_received,
            rtcp: s.rtcp_figures(),
        }
    }
}

/// Process-wide counters for `/metrics` (`callout_rtcp_*`,
/// `callout_srtp_*`), added when a call's media ends.
pub mod counters {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static RTCP_SENT: AtomicU64 = AtomicU64::new(0);
    pub static RTCP_RECEIVED: AtomicU64 = AtomicU64::new(0);
    pub static RTCP_REMOTE_LOST: AtomicU64 = AtomicU64::new(0);
    pub static SRTP_CALLS: AtomicU64 = AtomicU64::new(0);
    pub static SRTP_AUTH_FAILED: AtomicU64 = AtomicU64::new(0);
    /// The last ended call's far-end jitter and round trip, in µs.
    pub static RTCP_LAST_JITTER_US: AtomicU64 = AtomicU64::new(0);
    pub static RTCP_LAST_RTT_US: AtomicU64 = AtomicU64::new(0);

    pub(super) fn add(s: &super::MediaSummary) {
        let r = Ordering::Relaxed;
        RTCP_SENT.fetch_add(s.rtcp_sent, r);
        RTCP_RECEIVED.fetch_add(s.rtcp_received, r);
        RTCP_REMOTE_LOST.fetch_add(s.rtcp.remote_cumulative_lost.max(0) as u64, r);
        SRTP_CALLS.fetch_add(u64::from(s.srtp), r);
        SRTP_AUTH_FAILED.fetch_add(s.srtp_auth_failed, r);
        if s.rtcp.reports > 0 {
            RTCP_LAST_JITTER_US.store((s.rtcp.remote_jitter_ms * 1000.0) as u64, r);
        }
        if let Some(rtt) = s.rtcp.rtt_ms {
            RTCP_LAST_RTT_US.store((rtt * 1000.0) as u64, r);
        }
    }

    /// Prometheus text for these counters.
    pub fn text() -> String {
        let r = Ordering::Relaxed;
        let mut out = String::new();
        for (name, kind, help, v) in [
            ("callout_rtcp_sent_total", "counter", "RTCP sender reports sent", RTCP_SENT.load(r)),
            ("callout_rtcp_received_total", "counter", "RTCP packets accepted from call peers", RTCP_RECEIVED.load(r)),
            ("callout_rtcp_remote_lost_total", "counter", "Our RTP packets the far ends reported lost (RTCP cumulative lost at each call's end)", RTCP_REMOTE_LOST.load(r)),
            ("callout_rtcp_last_jitter_microseconds", "gauge", "Far-end interarrival jitter of the last ended call with RTCP", RTCP_LAST_JITTER_US.load(r)),
            ("callout_rtcp_last_rtt_microseconds", "gauge", "Round trip (LSR/DLSR) of the last ended call that had one", RTCP_LAST_RTT_US.load(r)),
            ("callout_srtp_calls_total", "counter", "Calls whose media was SRTP", SRTP_CALLS.load(r)),
            ("callout_srtp_auth_failed_total", "counter", "SRTP/SRTCP packets dropped for failed authentication or replay", SRTP_AUTH_FAILED.load(r)),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        }
        out
    }
}

struct Entry {
    session: Box<MediaSession>,
    socket: Arc<RtpSocket>,
    rtcp: Option<Arc<RtpSocket>>,
    events: mpsc::UnboundedSender<MediaEvent>,
    start: Instant,
    /// The call's sub-tick of the interval (`crate::media::pacing`).
    slot: usize,
}

/// The calls, and which are sent at each sub-tick.
struct Calls {
    /// Keyed by our own call ids: foldhash, not SipHash (per packet).
    by_id: HashMap<u64, Entry, foldhash::fast::RandomState>,
    slots: Vec<Vec<u64>>,
    pacer: crate::media::pacing::Pacer,
    /// The clock's origin: the pacer counts sub-ticks from it.
    origin: Instant,
}

impl Calls {
    fn get(&self, id: &u64) -> Option<&Entry> {
        self.by_id.get(id)
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut Entry> {
        self.by_id.get_mut(id)
    }

    fn insert(&mut self, id: u64, mut e: Entry) {
        self.remove(&id);
        e.slot = self.pacer.assign(self.origin.elapsed());
        if self.slots.len() < crate::media::pacing::SLOTS {
            self.slots
                .resize_with(crate::media::pacing::SLOTS, Vec::new);
        }
        self.slots[e.slot].push(id);
        self.by_id.insert(id, e);
    }

    fn remove(&mut self, id: &u64) -> Option<Entry> {
        let e = self.by_id.remove(id)?;
        self.pacer.release(e.slot);
        if let Some(ids) = self.slots.get_mut(e.slot) {
            ids.retain(|x| x != id);
        }
        Some(e)
    }

    /// Send each call of `slot` its next packet (and RTCP when due).
    fn send_slot(&mut self, slot: usize) {
        let Some(ids) = self.slots.get(slot) else {
            return;
        };
        for id in ids {
            let Some(e) = self.by_id.get_mut(id) else {
                continue;
            };
            let remote = e.session.remote();
            let pkt = e.session.tick();
            if !pkt.is_empty() {
                let _ = e.socket.try_send_to(pkt, remote);
            }
            let now_ms = e.start.elapsed().as_millis() as u64;
            if let Some(report) = e.session.poll_rtcp(now_ms) {
                let to = e.session.rtcp_remote();
                // rtcp-mux (to == remote) shares the RTP socket.
                let sock = match &e.rtcp {
                    Some(r) if to != remote => r,
                    _ => &e.socket,
                };
                let _ = sock.try_send_to(&report, to);
            }
            drain(e);
        }
    }
}

/// Cloneable handle to the media thread.
#[derive(Clone)]
pub struct MediaHandle {
    tx: std::sync::mpsc::Sender<MediaCommand>,
}

impl MediaHandle {
    pub fn send(&self, cmd: MediaCommand) {
        let _ = self.tx.send(cmd);
    }
}

/// Start the media clock on its own OS thread. A thread rather than a
/// tokio task because the tokio timer has 1 ms granularity and shares its
/// workers with signalling; a dedicated thread sleeping to each 1 ms
/// sub-tick keeps every stream's 20 ms spacing within a fraction of a
/// millisecond.
pub fn spawn() -> MediaHandle {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = MediaHandle { tx };
    let spawned = std::thread::Builder::new()
        .name("callout-media".into())
        .spawn(move || run(rx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the media thread");
    }
    handle
}

fn run(rx: std::sync::mpsc::Receiver<MediaCommand>) {
    use std::sync::mpsc::TryRecvError;
    if super::net::try_realtime(10) {
        tracing::info!("media clock runs with real-time priority");
    } else {
        tracing::info!("media clock runs with normal priority (no CAP_SYS_NICE)");
    }
    let origin = Instant::now();
    let mut calls = Calls {
        by_id: HashMap::default(),
        slots: Vec::new(),
        pacer: Default::default(),
        origin,
    };
    let sub_tick = crate::media::pacing::PTIME / crate::media::pacing::SLOTS as u32;
    loop {
        for slot in calls.pacer.due(Instant::now().duration_since(origin)) {
            calls.send_slot(slot);
        }
        let Some(at) = calls.pacer.next_due() else {
            // With no call, only a command can bring work.
            match rx.recv() {
                Ok(cmd) => handle(&mut calls, cmd),
                Err(_) => return,
            }
            continue;
        };
        // With calls, this thread is never woken by a command: it takes
        // what was queued while it slept, right after the slot it woke
        // for is sent (so no command delays a packet), until the queue is
        // empty or the next slot is due; then it sleeps to that slot, or
        // one sub-tick at most, so a command waits a millisecond at most
        // (inbound packets carry their arrival time). Woken per command,
        // it was three wake-ups per call set up (add, summary, remove),
        // at 10,000 setups a second.
        let deadline = origin + at;
        let mut handled = 0usize;
        loop {
            match rx.try_recv() {
                Ok(cmd) => handle(&mut calls, cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
            handled += 1;
            if handled % CHECK_CLOCK_EVERY == 0 && Instant::now() >= deadline {
                break;
            }
        }
        // The commands may have moved the next slot (an added call).
        let wait = calls
            .pacer
            .next_due()
            .map_or(Duration::ZERO, |at| {
                (origin + at).saturating_duration_since(Instant::now())
            })
            .min(sub_tick);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// Commands handled between two looks at the clock while draining.
const CHECK_CLOCK_EVERY: usize = 32;

fn handle(calls: &mut Calls, cmd: MediaCommand) {
    match cmd {
        MediaCommand::Add {
            id,
            session,
            socket,
            rtcp,
            events,
        } => {
            let mut session = session;
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            session.set_wallclock(wall);
            calls.insert(
                id,
                Entry {
                    session,
                    socket,
                    rtcp,
                    events,
                    start: Instant::now(),
                    slot: 0,
                },
            );
        }
        MediaCommand::Remove(id) => {
            if let Some(e) = calls.remove(&id) {
                counters::add(&MediaSummary::of(&e.session));
            }
        }
        MediaCommand::InboundRtcp(id, from, bytes, at) => {
            if let Some(e) = calls.get_mut(&id) {
                let now_ms = at.saturating_duration_since(e.start).as_millis() as u64;
                e.session.handle_rtcp(now_ms, from, &bytes);
            }
        }
        MediaCommand::Summary(id, reply) => {
            if let Some(e) = calls.get(&id) {
                let _ = reply.send(MediaSummary::of(&e.session));
            }
        }
        MediaCommand::Inbound(id, from, bytes, at) => {
            if let Some(e) = calls.get_mut(&id) {
                let now_ms = at.saturating_duration_since(e.start).as_millis() as u64;
                e.session.handle_packet(now_ms, from, &bytes);
                drain(e);
            }
        }
        MediaCommand::Update(id, n) => with(calls, id, |s| s.update(&n)),
        MediaCommand::Play(id, pid, p) => with(calls, id, |s| s.play(pid, p)),
        MediaCommand::Silence(id, ms) => with(calls, id, |s| s.play_silence(ms)),
        MediaCommand::Stop(id) => with(calls, id, |s| s.stop()),
        MediaCommand::ClearQueue(id) => with(calls, id, |s| s.clear_queue()),
        MediaCommand::StartAmd(id, p) => with(calls, id, |s| s.start_amd(p)),
        MediaCommand::SendDigit(id, d, ms) => with(calls, id, |s| {
            s.send_digit(d, ms);
        }),
        MediaCommand::InfoDigit(id, d) => {
            if let Some(e) = calls.get_mut(&id) {
                let now_ms = e.start.elapsed().as_millis() as u64;
                e.session.handle_info_digit(now_ms, d);
                drain(e);
            }
        }
        MediaCommand::TakeRecording(id, reply) => {
            let rec = calls
                .get_mut(&id)
                .map(|e| e.session.take_recording())
                .unwrap_or_default();
            let _ = reply.send(rec);
        }
    }
    fn with(calls: &mut Calls, id: u64, f: impl FnOnce(&mut MediaSession)) {
        if let Some(e) = calls.get_mut(&id) {
            f(&mut e.session);
            drain(e);
        }
    }
}

fn drain(e: &mut Entry) {
    while let Some(ev) = e.session.poll_event() {
        let _ = e.events.send(ev);
    }
}

/// One task per call reads both its RTP socket and, when RTCP has its
/// own, the RTCP socket: a task each was two spawns and two aborts per
/// answered call. The call's own task spawns it (and aborts it) on its
/// worker: spawned from the media thread, each was a wake-up of a parked
/// worker from outside the runtime.
pub(super) async fn receive(
    id: u64,
    socket: Arc<RtpSocket>,
    rtcp: Option<Arc<RtpSocket>>,
    tx: MediaHandle,
) {
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; if rtcp.is_some() { 2048 } else { 0 }];
    loop {
        let got = tokio::select! {
            r = socket.recv_from(&mut buf) => r.map(|(n, from)| (n, from, false)),
            r = async {
                match &rtcp {
                    Some(s) => s.recv_from(&mut rtcp_buf).await,
                    None => std::future::pending().await,
                }
            } => r.map(|(n, from)| (n, from, true)),
        };
        match got {
            Ok((n, from, is_rtcp)) => {
                let at = Instant::now();
                let cmd = if is_rtcp {
                    MediaCommand::InboundRtcp(id, from, rtcp_buf[..n].to_vec(), at)
                } else {
                    MediaCommand::Inbound(id, from, buf[..n].to_vec(), at)
                };
                if tx.tx.send(cmd).is_err() {
                    return;
                }
            }
            // An ICMP error surfaced on the socket: the next read is fine.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(error = %e, "rtp recv")
            }
            // Anything else would fail again at once: do not spin on it,
            // and do not give up the call's inbound media (its digits).
            Err(e) => {
                tracing::warn!(error = %e, call = id, "rtp recv failed; retrying in 10 ms");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Even RTP ports from a configured range (RFC 3550 11: RTP on even, RTCP
/// on the next odd port).
#[derive(Debug)]
pub struct PortPool {
    ip: std::net::IpAddr,
    start: u16,
    end: u16,
    next: u16,
}

/// A malformed port range.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid RTP port range {0:?}: use START-END with START < END, e.g. 20000-29999")]
pub struct PortRangeError(pub String);

impl PortPool {
    pub fn parse(ip: std::net::IpAddr, range: &str) -> Result<PortPool, PortRangeError> {
        let err = || PortRangeError(range.to_string());
        let (a, b) = range.split_once('-').ok_or_else(err)?;
        let start: u16 = a.trim().parse().map_err(|_| err())?;
        let end: u16 = b.trim().parse().map_err(|_| err())?;
        let start = start + (start % 2);
        if start == 0 || start >= end {
            return Err(err());
        }
        Ok(PortPool {
            ip,
            start,
            end,
            next: start,
        })
    }

    /// Bind a free even port for RTP and the odd one above it for RTCP
    /// (RFC 3550 11), trying each pair at most once from a random place.
    pub async fn bind_pair(&mut self) -> std::io::Result<(RtpSocket, RtpSocket)> {
        let slots = (self.end - self.start) / 2 + 1;
        for _ in 0..slots {
            let rtp = self.bind().await?;
            let port = rtp.local_addr()?.port();
            if let Ok(rtcp) = RtpSocket::bind(SocketAddr::new(self.ip, port + 1)) {
                return Ok((rtp, rtcp));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free RTP/RTCP port pair in range",
        ))
    }

    /// Bind a free even port, trying each at most once from a random
    /// place in the range: ports handed out in order let anyone who saw
    /// one call's port aim at the next call's.
    pub async fn bind(&mut self) -> std::io::Result<RtpSocket> {
        let slots = (self.end - self.start) / 2 + 1;
        self.next = self.start + 2 * rand::Rng::gen_range(&mut rand::thread_rng(), 0..slots);
        for _ in 0..slots {
            let port = self.next;
            self.next = if self.next + 2 > self.end {
                self.start
            } else {
                self.next + 2
            };
            if let Ok(s) = RtpSocket::bind(SocketAddr::new(self.ip, port)) {
                return Ok(s);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free RTP port in range",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_are_drawn_at_random_and_never_twice_while_bound() {
        let mut pool = PortPool::parse("127.0.0.1".parse().unwrap(), "45000-45199").unwrap();
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(pool.bind().await.unwrap());
        }
        let ports: Vec<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert!(
            ports
                .iter()
                .all(|p| p % 2 == 0 && (45000..=45199).contains(p)),
            "{ports:?}"
        );
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        // Handed out in order, most would be the last one plus two.
        let in_order = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(in_order < 6, "ports follow each other: {ports:?}");
    }
}

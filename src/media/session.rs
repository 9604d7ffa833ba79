//! One call's RTP session, sans-IO: paced prompt playback out, G.711
//! decoding and DTMF detection in.
//!
//! Call order: create with the negotiated media; the shared media clock
//! calls [`MediaSession::tick`] once per 20 ms and sends what it returns to
//! [`MediaSession::remote`]; received datagrams go to
//! [`MediaSession::handle_packet`]; drain [`MediaSession::poll_event`].
//! Time is passed in as milliseconds since the session started, so no
//! clock is read here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::amd::{Amd, AmdCause, AmdParams, AmdResult};
use super::audio::{Prompt, FRAME};

/// Milliseconds per packet.
const FRAME_MS: u64 = 20;
use super::g711;
use super::inband;
use super::rfc4733::{self, EventPayload, EventReceiver};
use super::rtcp::{self, RtcpFigures, RtcpState};
use super::srtp::{SdesKey, Srtp, SrtpError};
use crate::sip::sdp::{Codec, Negotiated};

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigitSource {
    Rfc4733,
    Inband,
    Info,
}

/// A key press, once, whichever way it was signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Digit {
    pub digit: char,
    pub source: DigitSource,
    /// Milliseconds since the session started.
    pub at_ms: u64,
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    Digit(Digit),
    PromptStarted {
        id: u64,
    },
    PromptFinished {
        id: u64,
    },
    /// Symmetric RTP: the far end's real source address.
    Latched(SocketAddr),
    /// Answering-machine detection reached a verdict.
    Amd {
        result: AmdResult,
        cause: AmdCause,
    },
}

/// Which DTMF paths a call listens to (a dialplan's `dtmf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 events and in-band tones; once the far end has sent an
    /// event, in-band detections on that call are dropped: a carrier that
    /// relays keys as events is never exposed to talk-off.
    #[default]
    Both,
    /// Events only (and SIP INFO): in-band audio is never analysed.
    Rfc4733,
    /// In-band tones only (and SIP INFO), for carriers whose events are
    /// unreliable.
    Inband,
}

impl std::str::FromStr for DtmfMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(DtmfMode::Both),
            "rfc4733" => Ok(DtmfMode::Rfc4733),
            "inband" => Ok(DtmfMode::Inband),
            _ => Err(format!("{s:?}: use both, rfc4733 or inband")),
        }
    }
}

/// What a session accepts from the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaPolicy {
    pub dtmf: DtmfMode,
    /// Symmetric RTP for peers behind NAT: the source of the first valid
    /// packet becomes the peer, once, instead of the address the SDP
    /// names. Off unless a trunk asks for it.
    pub symmetric_rtp: bool,
}

/// Merges the three DTMF paths into one stream: the same key reported by
/// two different paths within [`MERGE_WINDOW_MS`] is one press.
#[derive(Debug, Default)]
pub struct DigitMerger {
    last: Option<Digit>,
}

/// Two reports of one key by different paths arrive within this time.
pub const MERGE_WINDOW_MS: u64 = 300;

impl DigitMerger {
    pub fn accept(&mut self, d: Digit) -> bool {
        if let Some(last) = self.last {
            if last.digit == d.digit
                && last.source != d.source
                && d.at_ms.abs_diff(last.at_ms) < MERGE_WINDOW_MS
            {
                return false;
            }
        }
        self.last = Some(d);
        true
    }
}

enum Item {
    Prompt(u64, Arc<Prompt>),
    Silence(usize),
}

struct OutEvent {
    event: u8,
    total: u16,
    sent: u16,
    ts: u32,
    end_repeats: u8,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub sent: u64,
    pub received: u64,
    pub malformed: u64,
    /// Dropped: not from the negotiated (or latched) peer address.
    pub wrong_source: u64,
    /// Dropped: from the peer's address but another SSRC.
    pub wrong_ssrc: u64,
    /// Dropped: a payload type the answer did not negotiate.
    pub wrong_payload_type: u64,
    /// In-band digits dropped as the echo of our own prompt.
    pub echo_digits: u64,
    /// In-band digits dropped because the far end sends RFC 4733 events.
    pub inband_ignored: u64,
    /// Dropped: SRTP/SRTCP authentication or replay check failed. Such a
    /// packet is never decoded, played or read for keys.
    pub auth_failed: u64,
    /// RTCP packets sent and accepted from the peer.
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// RTCP dropped: from elsewhere, malformed.
    pub rtcp_rejected: u64,
}

/// How long after we sent audio its echo may come back: round trip plus
/// the far end's hybrid or speakerphone.
const ECHO_SPAN_MS: u64 = 800;

/// One call's RTP session.
pub struct MediaSession {
    ssrc: u32,
    seq: u16,
    ts: u32,
    codec: Codec,
    remote_dtmf_pt: Option<u8>,
    /// The event type our own SDP named; the far end may use it.
    local_dtmf_pt: Option<u8>,
    remote: SocketAddr,
    /// Where the latest SDP says to send; `remote` may differ once latched.
    sdp_remote: SocketAddr,
    /// The far end wants media (not holding us).
    sending: bool,
    /// 20 ms frames per audio packet (the far end's ptime).
    frames_per_packet: usize,
    /// Audio frames gathered for the next packet when ptime > 20 ms.
    pending_audio: Vec<u8>,
    pending_ts: u32,
    pending_marker: bool,
    policy: MediaPolicy,
    /// The peer's address is settled (SDP-named, or latched once).
    latched: bool,
    /// The peer's SSRC, from its first accepted packet.
    peer_ssrc: Option<u32>,
    /// The far end has sent an RFC 4733 event on this call.
    events_seen: bool,
    /// Looks at what we send: which keys our own audio resembles, and when.
    echo: EchoGuard,
    queue: VecDeque<Item>,
    current: Option<(u64, Arc<Prompt>, usize)>,
    silence_left: usize,
    /// Next audio packet starts a talkspurt (RFC 3551 4.1 marker bit).
    marker: bool,
    after_prompt: bool,
    out_event: Option<OutEvent>,
    pending_digits: VecDeque<(char, u16)>,
    events_rx: EventReceiver,
    inband: Option<inband::Detector>,
    inband_fed_ms: u64,
    merger: DigitMerger,
    record: Option<Vec<i16>>,
    events: VecDeque<MediaEvent>,
    stats: MediaStats,
    buf: Vec<u8>,
    frame: [u8; FRAME],
    decoded: Vec<i16>,
    found: Vec<inband::Detected>,
    /// Session time of the next packet we send (20 ms per tick).
    ticks_ms: u64,
    amd: Option<Amd>,
    /// A received frame reached the detector since the last tick.
    amd_fed: bool,
    /// SRTP: our key (when we offered one) and the contexts once the
    /// peer's key is known.
    local_key: Option<SdesKey>,
    srtp: Option<Srtp>,
    /// Payload octets sent (for the sender report).
    octets: u32,
    rtcp: RtcpState,
    /// RTCP on the RTP port (RFC 5761) instead of port + 1.
    rtcp_mux: bool,
    /// Unix epoch ms at session time 0: the NTP clock of our reports.
    wallclock_ms: u64,
}

impl MediaSession {
    pub fn new(media: &Negotiated, ssrc: u32, initial_seq: u16, initial_ts: u32) -> MediaSession {
        MediaSession {
            ssrc,
            seq: initial_seq,
            ts: initial_ts,
            codec: media.codec,
            remote_dtmf_pt: media.dtmf_pt,
            local_dtmf_pt: media.local_dtmf_pt,
            remote: media.remote,
            sdp_remote: media.remote,
            sending: media.we_send(),
            frames_per_packet: usize::from(media.send_ptime() / FRAME_MS as u16).max(1),
            pending_audio: Vec::with_capacity(3 * FRAME),
            pending_ts: 0,
            pending_marker: false,
            policy: MediaPolicy::default(),
            latched: false,
            peer_ssrc: None,
            events_seen: false,
            echo: EchoGuard::default(),
            queue: VecDeque::new(),
            current: None,
            silence_left: 0,
            marker: true,
            after_prompt: false,
            out_event: None,
            pending_digits: VecDeque::new(),
            events_rx: EventReceiver::new(),
            inband: Some(inband::Detector::default()),
            inband_fed_ms: 0,
            merger: DigitMerger::default(),
            record: None,
            events: VecDeque::new(),
            stats: MediaStats::default(),
            buf: Vec::with_capacity(12 + FRAME),
            frame: [0; FRAME],
            decoded: Vec::with_capacity(FRAME),
            found: Vec::new(),
            ticks_ms: 0,
            amd: None,
            amd_fed: false,
            local_key: None,
            srtp: None,
            octets: 0,
            rtcp: RtcpState::default(),
            rtcp_mux: media.rtcp_mux,
            wallclock_ms: 0,
        }
    }

    /// Protect this session with SRTP: `local` is the key we offered,
    /// `remote` the one the peer's SDP gave. From now on nothing leaves
    /// in clear and nothing is taken that fails authentication.
    pub fn set_srtp(&mut self, local: SdesKey, remote: &SdesKey) -> Result<(), SrtpError> {
        self.srtp = Some(Srtp::new(&local, remote)?);
        self.local_key = Some(local);
        Ok(())
    }

    pub fn is_secure(&self) -> bool {
        self.srtp.is_some()
    }

    /// The Unix time (ms) at session time 0, for the NTP timestamps of
    /// our sender reports; the driver reads the clock, not the session.
    pub fn set_wallclock(&mut self, epoch_ms: u64) {
        self.wallclock_ms = epoch_ms;
    }

    /// Where our RTCP goes: the RTP peer's port + 1 (RFC 3550 11), or
    /// the RTP port itself with rtcp-mux.
    pub fn rtcp_remote(&self) -> SocketAddr {
        if self.rtcp_mux {
            self.remote
        } else {
            SocketAddr::new(self.remote.ip(), self.remote.port().wrapping_add(1))
        }
    }

    /// What RTCP told us so far (for the call record and metrics).
    pub fn rtcp_figures(&self) -> RtcpFigures {
        self.rtcp.figures()
    }

    /// Our sender report when one is due (every ~5 s), protected when the
    /// call is SRTP; send it to [`MediaSession::rtcp_remote`].
    pub fn poll_rtcp(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if !self.rtcp.due(now_ms) {
            return None;
        }
        let ntp = rtcp::ntp_from_unix_ms(self.wallclock_ms.saturating_add(now_ms));
        let block = self.rtcp.block(self.peer_ssrc, now_ms);
        let sr = rtcp::build_sr(
            self.ssrc,
            ntp,
            self.ts,
            self.stats.sent as u32,
            self.octets,
            block,
            "callout",
        );
        let out = match &mut self.srtp {
            Some(s) => s.protect_rtcp(&sr).ok()?,
            None => sr,
        };
        self.stats.rtcp_sent += 1;
        Some(out)
    }

    /// An RTCP datagram (on the RTCP port, or demultiplexed from the RTP
    /// port with rtcp-mux). Taken only from the peer's RTCP address and,
    /// on an SRTP call, only when SRTCP authenticates it.
    pub fn handle_rtcp(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) {
        if from != self.rtcp_remote() {
            self.stats.rtcp_rejected += 1;
            return;
        }
        let plain;
        let data = match &mut self.srtp {
            Some(s) => match s.unprotect_rtcp(bytes) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(e) => {
                    tracing::debug!(error = %e, len = bytes.len(), "SRTCP packet refused");
                    self.stats.auth_failed += 1;
                    return;
                }
            },
            None => bytes,
        };
        let ntp = rtcp::ntp_from_unix_ms(self.wallclock_ms.saturating_add(now_ms));
        if self.rtcp.handle(data, self.ssrc, now_ms, ntp) {
            self.stats.rtcp_received += 1;
        } else {
            self.stats.rtcp_rejected += 1;
        }
    }

    /// Start answering-machine detection on what the far end sends. A tick
    /// without received audio counts as 20 ms of silence, so a far end
    /// that sends nothing is judged too.
    pub fn start_amd(&mut self, p: AmdParams) {
        self.amd = Some(Amd::new(p));
    }

    fn amd_feed(&mut self, frame: &[i16]) {
        if let Some(amd) = &mut self.amd {
            if let Some((result, cause)) = amd.feed(frame) {
                self.events.push_back(MediaEvent::Amd { result, cause });
                self.amd = None;
            }
        }
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Is the far end taking media (not on hold)?
    pub fn is_sending(&self) -> bool {
        self.sending
    }

    /// Apply a new offer/answer exchange (RFC 3264 8): the 200 after early
    /// media, or a re-INVITE/UPDATE. Media follows the new address (the
    /// peer is learnt afresh: a new address usually brings a new SSRC),
    /// codec, event types, direction (hold stops our RTP) and ptime.
    /// Sequence numbers and timestamps carry on (RFC 3550 5.1).
    pub fn update(&mut self, media: &Negotiated) {
        if media.remote != self.sdp_remote {
            self.sdp_remote = media.remote;
            self.remote = media.remote;
            self.latched = false;
            self.peer_ssrc = None;
        }
        if media.codec != self.codec {
            self.codec = media.codec;
            self.marker = true;
        }
        self.remote_dtmf_pt = media.dtmf_pt;
        self.local_dtmf_pt = media.local_dtmf_pt;
        if self.sending != media.we_send() {
            self.sending = media.we_send();
            self.marker = true;
        }
        self.frames_per_packet = usize::from(media.send_ptime() / FRAME_MS as u16).max(1);
        self.pending_audio.clear();
        self.rtcp_mux = media.rtcp_mux;
        // A new key from the peer (RFC 4568 7.1.4: a re-offer may rekey).
        // Without one the SRTP context stays: whether a call may go back
        // to clear RTP is decided with the SDP (required never does).
        if let (Some(local), Some(remote)) = (&self.local_key, &media.crypto) {
            let same = self.srtp.as_ref().is_some_and(|s| s.remote_key() == remote);
            if !same {
                match Srtp::new(local, remote) {
                    Ok(s) => self.srtp = Some(s),
                    Err(e) => tracing::warn!(error = %e, "cannot rekey SRTP; keeping the old key"),
                }
            }
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn stats(&self) -> MediaStats {
        self.stats
    }

    /// Switch in-band detection on or off (on by default).
    pub fn set_inband(&mut self, on: bool) {
        self.inband = on.then(inband::Detector::default);
    }

    /// Apply a contract's and trunk's policy (before the first packet).
    pub fn set_policy(&mut self, policy: MediaPolicy) {
        self.policy = policy;
        self.set_inband(policy.dtmf != DtmfMode::Rfc4733);
    }

    /// Keep every decoded received sample (for `softphone --record`).
    pub fn record(&mut self) {
        self.record = Some(Vec::new());
    }

    pub fn take_recording(&mut self) -> Vec<i16> {
        self.record.take().unwrap_or_default()
    }

    /// Queue a prompt; `id` comes back in the started/finished events.
    pub fn play(&mut self, id: u64, prompt: Arc<Prompt>) {
        self.queue.push_back(Item::Prompt(id, prompt));
    }

    pub fn play_silence(&mut self, ms: u64) {
        self.queue.push_back(Item::Silence((ms as usize) * 8));
    }

    /// Stop the current prompt and drop everything queued.
    pub fn stop(&mut self) {
        if let Some((id, _, _)) = self.current.take() {
            self.events.push_back(MediaEvent::PromptFinished { id });
        }
        self.queue.clear();
        self.silence_left = 0;
    }

    /// Drop what is queued but let the current prompt finish.
    pub fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// Is anything playing or queued?
    pub fn is_playing(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty() || self.silence_left > 0
    }

    /// Send a key press as RFC 4733 events (if the far end accepted
    /// telephone-event; otherwise it is ignored and `false` returned).
    pub fn send_digit(&mut self, digit: char, duration_ms: u16) -> bool {
        if self.remote_dtmf_pt.is_none() || rfc4733::digit_to_event(digit).is_none() {
            return false;
        }
        self.pending_digits.push_back((digit, duration_ms));
        true
    }

    /// Advance the clock by 20 ms and return the packet to send, if any:
    /// audio, event or silence while the far end takes media, so sequence
    /// numbers and timestamps advance continuously. Empty while the far
    /// end holds the call, or while a 40/60 ms packet is still gathering
    /// its frames.
    pub fn tick(&mut self) -> &[u8] {
        let n = self.tick_plain().len();
        if n == 0 {
            return &self.buf;
        }
        self.octets = self.octets.wrapping_add(n.saturating_sub(12) as u32);
        if let Some(s) = &mut self.srtp {
            match s.protect_rtp(&self.buf) {
                Ok(p) => {
                    self.buf.clear();
                    self.buf.extend_from_slice(&p);
                }
                // Never send in clear what should have been protected.
                Err(_) => self.buf.clear(),
            }
        }
        &self.buf
    }

    fn tick_plain(&mut self) -> &[u8] {
        if self.amd.is_some() && !std::mem::take(&mut self.amd_fed) {
            self.amd_feed(&[0; FRAME]);
        }
        let ts = self.ts;
        self.ts = self.ts.wrapping_add(FRAME as u32);
        // A digit waits for a gathering audio packet to go out first.
        if self.out_event.is_none() && self.pending_audio.is_empty() {
            if let Some((d, dur)) = self.pending_digits.pop_front() {
                // Digit lookup checked in send_digit.
                let event = rfc4733::digit_to_event(d).unwrap_or(0);
                self.out_event = Some(OutEvent {
                    event,
                    total: dur.saturating_mul(8),
                    sent: 0,
                    ts,
                    end_repeats: 0,
                });
            }
        }
        if let Some(ev) = &mut self.out_event {
            let first = ev.sent == 0;
            ev.sent = ev.sent.saturating_add(FRAME as u16).min(ev.total);
            let end = ev.sent >= ev.total;
            let payload = rfc4733::build_payload(EventPayload {
                event: ev.event,
                end,
                volume: 10,
                duration: ev.sent,
            });
            let (ev_ts, pt) = (ev.ts, self.remote_dtmf_pt.unwrap_or(101));
            if end {
                ev.end_repeats += 1;
                // RFC 4733 2.5.1.4: the end packet is sent three times.
                if ev.end_repeats >= 3 {
                    self.out_event = None;
                    self.marker = true;
                }
            }
            self.ticks_ms += FRAME_MS;
            if !self.sending {
                self.buf.clear();
                return &self.buf;
            }
            return self.build(pt, first, ev_ts, payload.as_ref());
        }
        let playing = self.fill_frame();
        if self.inband.is_some() {
            self.echo
                .sent(self.ticks_ms, playing, &self.frame, self.codec);
        }
        self.ticks_ms += FRAME_MS;
        if !self.sending {
            // Held: the prompt runs on (its time passes) but nothing is
            // sent; resuming starts a talkspurt.
            self.marker = true;
            self.buf.clear();
            return &self.buf;
        }
        let marker = std::mem::take(&mut self.marker);
        let frame = self.frame;
        if self.frames_per_packet <= 1 {
            return self.build(self.codec.payload_type(), marker, ts, &frame);
        }
        if self.pending_audio.is_empty() {
            self.pending_ts = ts;
            self.pending_marker = marker;
        } else {
            self.pending_marker |= marker;
        }
        self.pending_audio.extend_from_slice(&frame);
        if self.pending_audio.len() < self.frames_per_packet * FRAME {
            self.buf.clear();
            return &self.buf;
        }
        let payload = std::mem::take(&mut self.pending_audio);
        let (pt, m, pts) = (
            self.codec.payload_type(),
            self.pending_marker,
            self.pending_ts,
        );
        self.write_packet(pt, m, pts, &payload);
        self.pending_audio = payload;
        self.pending_audio.clear();
        &self.buf
    }

    /// Fill the next frame; `true` when any of it is prompt audio.
    fn fill_frame(&mut self) -> bool {
        let mut playing = false;
        let silence = match self.codec {
            Codec::Pcmu => g711::ULAW_SILENCE,
            Codec::Pcma => g711::ALAW_SILENCE,
        };
        let mut filled = 0;
        while filled < FRAME {
            if self.silence_left > 0 {
                self.after_prompt = false;
                let n = self.silence_left.min(FRAME - filled);
                self.frame[filled..filled + n].fill(silence);
                self.silence_left -= n;
                filled += n;
                continue;
            }
            if let Some((id, prompt, pos)) = &mut self.current {
                let data = prompt.encoded(self.codec);
                let n = (data.len() - *pos).min(FRAME - filled);
                self.frame[filled..filled + n].copy_from_slice(&data[*pos..*pos + n]);
                playing = true;
                *pos += n;
                filled += n;
                if *pos >= data.len() {
                    self.events
                        .push_back(MediaEvent::PromptFinished { id: *id });
                    self.current = None;
                    self.after_prompt = true;
                }
                continue;
            }
            match self.queue.pop_front() {
                Some(Item::Prompt(id, p)) => {
                    self.events.push_back(MediaEvent::PromptStarted { id });
                    // A prompt after silence starts a talkspurt; one that
                    // directly follows another continues it.
                    if !self.after_prompt {
                        self.marker = true;
                    }
                    self.current = Some((id, p, 0));
                }
                Some(Item::Silence(n)) => self.silence_left = n,
                None => {
                    self.after_prompt = false;
                    self.frame[filled..].fill(silence);
                    filled = FRAME;
                }
            }
        }
        playing
    }

    fn build(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) -> &[u8] {
        self.write_packet(pt, marker, ts, payload);
        &self.buf
    }

    fn write_packet(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        self.buf.clear();
        self.buf.push(0x80);
        self.buf.push(((marker as u8) << 7) | (pt & 0x7F));
        self.buf.extend_from_slice(&self.seq.to_be_bytes());
        self.buf.extend_from_slice(&ts.to_be_bytes());
        self.buf.extend_from_slice(&self.ssrc.to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.stats.sent += 1;
    }

    /// Feed a received datagram at `now_ms` (ms since session start).
    ///
    /// Media is accepted only from the peer: the address the answer's SDP
    /// names (or, with symmetric RTP, the source of the first valid
    /// packet, settled once), with the SSRC of its first packet, in a
    /// negotiated payload type. Everything else is dropped and counted, so
    /// nobody else can inject keys or take the audio.
    pub fn handle_packet(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) {
        // RFC 5761 4: with rtcp-mux, RTCP types 192-223 share the port.
        if self.rtcp_mux && rtcp::demux(bytes) == rtcp::Muxed::Rtcp {
            self.handle_rtcp(now_ms, from, bytes);
            return;
        }
        if self.srtp.is_none() {
            self.handle_plain(now_ms, from, bytes);
            return;
        }
        // Cheap checks first: a stranger's or another stream's packet is
        // not worth a decryption (nor a replay-window entry).
        let Ok(pkt) = rtp_rs::RtpReader::new(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if from != self.remote && (self.latched || !self.policy.symmetric_rtp) {
            self.stats.wrong_source += 1;
            return;
        }
        if self.peer_ssrc.is_some_and(|s| s != pkt.ssrc()) {
            self.stats.wrong_ssrc += 1;
            return;
        }
        let plain = match self.srtp.as_mut().map(|s| s.unprotect_rtp(bytes)) {
            Some(Ok(p)) => p,
            _ => {
                self.stats.auth_failed += 1;
                return;
            }
        };
        self.handle_plain(now_ms, from, &plain);
    }

    fn handle_plain(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) {
        let Ok(pkt) = rtp_rs::RtpReader::new(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if pkt.version() != 2 {
            self.stats.malformed += 1;
            return;
        }
        if from != self.remote && (self.latched || !self.policy.symmetric_rtp) {
            self.stats.wrong_source += 1;
            return;
        }
        let pt = pkt.payload_type();
        let is_event = Some(pt) == self.remote_dtmf_pt || Some(pt) == self.local_dtmf_pt;
        if !is_event && pt != self.codec.payload_type() {
            // Comfort noise and the like: not ours to decode, and an
            // unknown type must not settle who the peer is.
            self.stats.wrong_payload_type += 1;
            return;
        }
        match self.peer_ssrc {
            Some(ssrc) if ssrc != pkt.ssrc() => {
                self.stats.wrong_ssrc += 1;
                return;
            }
            Some(_) => {}
            None => self.peer_ssrc = Some(pkt.ssrc()),
        }
        self.stats.received += 1;
        let seq = u16::from(pkt.sequence_number());
        if is_event {
            self.rtcp.recv.on_untimed(seq);
        } else {
            self.rtcp
                .recv
                .on_packet(seq, pkt.timestamp(), rtcp::rtp_units(now_ms));
        }
        if !self.latched {
            self.latched = true;
            self.remote = from;
            self.events.push_back(MediaEvent::Latched(from));
        }
        let payload = pkt.payload();
        if is_event {
            if self.policy.dtmf == DtmfMode::Inband {
                return;
            }
            if let Some(d) = self.events_rx.handle(now_ms, pkt.timestamp(), payload) {
                self.events_seen = true;
                self.push_digit(d.digit, DigitSource::Rfc4733, d.at_ms);
            }
            return;
        }
        let decode: fn(u8) -> i16 = match self.codec {
            Codec::Pcmu => g711::ulaw_to_linear,
            Codec::Pcma => g711::alaw_to_linear,
        };
        self.decoded.clear();
        self.decoded.extend(payload.iter().map(|&b| decode(b)));
        if let Some(rec) = &mut self.record {
            rec.extend_from_slice(&self.decoded);
        }
        if self.amd.is_some() {
            self.amd_fed = true;
            let frame = std::mem::take(&mut self.decoded);
            self.amd_feed(&frame);
            self.decoded = frame;
        }
        if let Some(det) = &mut self.inband {
            // The detector counts time in samples fed; map its times onto
            // the session clock at the moment this packet's audio began.
            let base = now_ms.saturating_sub(self.inband_fed_ms);
            self.found.clear();
            det.process(&self.decoded, &mut self.found);
            self.inband_fed_ms += (self.decoded.len() / 8) as u64;
            let found = std::mem::take(&mut self.found);
            for d in &found {
                let at_ms = base + d.start_ms;
                if self.events_seen && self.policy.dtmf == DtmfMode::Both {
                    self.stats.inband_ignored += 1;
                } else if self.echo.explains(d.digit, at_ms) {
                    self.stats.echo_digits += 1;
                } else {
                    self.push_digit(d.digit, DigitSource::Inband, at_ms);
                }
            }
            self.found = found;
        }
    }

    /// A digit from SIP INFO, merged into the same stream.
    pub fn handle_info_digit(&mut self, now_ms: u64, digit: char) {
        self.push_digit(digit, DigitSource::Info, now_ms);
    }

    fn push_digit(&mut self, digit: char, source: DigitSource, at_ms: u64) {
        let d = Digit {
            digit,
            source,
            at_ms,
        };
        if self.merger.accept(d) {
            self.events.push_back(MediaEvent::Digit(d));
        }
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

/// Remembers which keys our own outgoing audio resembled, and when, so a
/// key that the far end only "presses" by echoing our prompt back is not
/// taken. Checked with thresholds far looser than the receiving
/// detector's (half the energy in the pair, any twist within 15 dB, down
/// to −51 dBm0): an echo path filters and attenuates, and a near miss in
/// what we sent can come back looking cleaner. On generated speech this
/// marks a given key for about 0.6 % of the time, so a real press is
/// almost never mistaken for echo.
struct EchoGuard {
    detector: inband::Detector,
    /// Session time of the detector's first sample.
    base_ms: u64,
    /// Samples fed since `base_ms`.
    fed: u64,
    /// When our audio last resembled each key (index in `KEYS`).
    last_seen: [Option<u64>; 16],
    decoded: [i16; FRAME],
}

const EVENT_KEYS: &str = "0123456789*#ABCD";

impl Default for EchoGuard {
    fn default() -> Self {
        EchoGuard {
            detector: inband::Detector::new(Self::thresholds()),
            base_ms: 0,
            fed: 0,
            last_seen: [None; 16],
            decoded: [0; FRAME],
        }
    }
}

impl EchoGuard {
    fn thresholds() -> inband::Thresholds {
        inband::Thresholds {
            min_tone_power: 2000.0,
            max_twist_db: 15.0,
            max_reverse_twist_db: 15.0,
            min_purity: 0.5,
            max_freq_offset: 0.03,
            ..inband::Thresholds::default()
        }
    }

    /// One frame we are about to send at session time `at_ms`. Only
    /// prompt audio is analysed; after a silent stretch the analysis
    /// restarts at the new frame's time.
    fn sent(&mut self, at_ms: u64, playing: bool, frame: &[u8; FRAME], codec: Codec) {
        if !playing {
            self.fed = 0;
            return;
        }
        if self.fed == 0 {
            self.detector = inband::Detector::new(Self::thresholds());
            self.base_ms = at_ms;
        }
        let decode: fn(u8) -> i16 = match codec {
            Codec::Pcmu => g711::ulaw_to_linear,
            Codec::Pcma => g711::alaw_to_linear,
        };
        for (o, &b) in self.decoded.iter_mut().zip(frame) {
            *o = decode(b);
        }
        let (base, last_seen) = (self.base_ms, &mut self.last_seen);
        self.detector.windows(&self.decoded, |key, start_ms| {
            if let Some(i) = EVENT_KEYS.find(key) {
                // The window's end: its echo can start no earlier.
                last_seen[i] = Some(base + start_ms + 20);
            }
        });
        self.fed += FRAME as u64;
    }

    /// Is a `digit` heard starting at `at_ms` explained by our own audio?
    fn explains(&self, digit: char, at_ms: u64) -> bool {
        let Some(i) = EVENT_KEYS.find(digit) else {
            return false;
        };
        self.last_seen[i].is_some_and(|sent| {
            // Sent before the digit began (allowing for the two clocks'
            // 20 ms granularity), and recently enough to be its echo.
            sent <= at_ms + 40 && at_ms <= sent + ECHO_SPAN_MS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::inband::key_freqs;

    fn media() -> Negotiated {
        Negotiated {
            remote: "127.0.0.1:40000".parse().unwrap(),
            codec: Codec::Pcmu,
            dtmf_pt: Some(101),
            local_dtmf_pt: Some(101),
            direction: Default::default(),
            ptime: None,
            crypto: None,
            savp: false,
            rtcp_mux: false,
        }
    }

    #[test]
    fn prompts_play_in_sequence_with_continuous_headers_and_markers() {
        let mut s = MediaSession::new(&media(), 7, 65534, u32::MAX - 160);
        s.play(1, Prompt::from_pcm("a", vec![1000; 400]));
        s.play_silence(40);
        s.play(2, Prompt::from_pcm("b", vec![-1000; 160]));
        let mut pkts = Vec::new();
        for _ in 0..8 {
            pkts.push(s.tick().to_vec());
        }
        let hdr: Vec<(bool, u16, u32)> = pkts
            .iter()
            .map(|p| {
                let r = rtp_rs::RtpReader::new(p).unwrap();
                (r.mark(), u16::from(r.sequence_number()), r.timestamp())
            })
            .collect();
        // Sequence numbers and timestamps wrap and stay continuous.
        for w in hdr.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1));
            assert_eq!(w[1].2, w[0].2.wrapping_add(160));
        }
        let marks: Vec<bool> = hdr.iter().map(|h| h.0).collect();
        // Prompt 1 starts packet 0; 400 samples + 320 of silence end
        // half-way into packet 4, where prompt 2 starts a new talkspurt.
        assert_eq!(
            marks,
            vec![true, false, false, false, true, false, false, false]
        );
        let evs: Vec<MediaEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            evs,
            vec![
                MediaEvent::PromptStarted { id: 1 },
                MediaEvent::PromptFinished { id: 1 },
                MediaEvent::PromptStarted { id: 2 },
                MediaEvent::PromptFinished { id: 2 },
            ]
        );
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(pt)
            .sequence(rtp_rs::Seq::from(seq))
            .timestamp(ts)
            .ssrc(99)
            .payload(payload)
            .build()
            .unwrap()
    }

    #[test]
    fn rfc4733_and_inband_for_one_press_give_one_digit_and_latching_works() {
        let mut s = MediaSession::new(&media(), 7, 0, 0);
        s.set_policy(MediaPolicy {
            symmetric_rtp: true,
            ..MediaPolicy::default()
        });
        let src: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        let (r, c) = key_freqs('7').unwrap();
        let mut seq = 0;
        for i in 0..10u64 {
            // 4733 start and the tone itself for 100 ms.
            let ev = rfc4733::build_payload(EventPayload {
                event: 7,
                end: i == 9,
                volume: 10,
                duration: (i as u16 + 1) * 160,
            });
            s.handle_packet(i * 20, src, &rtp(101, seq, 8000, &ev));
            seq += 1;
            let tone: Vec<u8> = (0..160)
                .map(|n| {
                    let t = (i as f32 * 160.0 + n as f32) / 8000.0;
                    let v = 8000.0
                        * ((2.0 * std::f32::consts::PI * r * t).sin()
                            + (2.0 * std::f32::consts::PI * c * t).sin());
                    g711::linear_to_ulaw(v as i16)
                })
                .collect();
            s.handle_packet(i * 20, src, &rtp(0, seq, 8000 + i as u32 * 160, &tone));
            seq += 1;
        }
        s.handle_packet(300, src, b"\x00garbage");
        let evs: Vec<MediaEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(evs[0], MediaEvent::Latched(src));
        let digits: Vec<&Digit> = evs
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Digit(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(digits.len(), 1, "{evs:?}");
        assert_eq!(
            (digits[0].digit, digits[0].source),
            ('7', DigitSource::Rfc4733)
        );
        assert_eq!(s.remote(), src);
        assert_eq!(s.stats().malformed, 1);
    }

    fn press(s: &mut MediaSession, from: SocketAddr, pt: u8, event: u8, ts: u32) -> Vec<char> {
        for i in 0..4u16 {
            let ev = rfc4733::build_payload(EventPayload {
                event,
                end: i == 3,
                volume: 10,
                duration: (i + 1) * 160,
            });
            s.handle_packet(
                u64::from(ts / 8) + u64::from(i) * 20,
                from,
                &rtp(pt, ts as u16 + i, ts, &ev),
            );
        }
        std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                MediaEvent::Digit(d) => Some(d.digit),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_answer_mapping_telephone_event_to_96_is_used_both_ways() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let answer = Negotiated {
            dtmf_pt: Some(96),
            local_dtmf_pt: Some(101),
            ..media()
        };
        let mut s = MediaSession::new(&answer, 7, 0, 0);
        // Received with the answer's type and with the type we offered.
        assert_eq!(press(&mut s, peer, 96, 1, 8000), vec!['1']);
        assert_eq!(press(&mut s, peer, 101, 2, 16000), vec!['2']);
        assert_eq!(s.stats().wrong_payload_type, 0);
        // Sent with the answer's type.
        assert!(s.send_digit('5', 60));
        assert_eq!(s.tick()[1] & 0x7f, 96);
    }

    #[test]
    fn media_follows_a_new_sdp_hold_and_ptime() {
        let mut s = MediaSession::new(&media(), 7, 0, 0);
        let first: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        s.handle_packet(0, first, &rtp(0, 1, 160, &[0xff; 160]));
        assert_eq!(s.stats().received, 1);
        // Hold: nothing sent, time still passes.
        let held = Negotiated {
            direction: crate::sip::sdp::Direction::SendOnly,
            ..media()
        };
        s.update(&held);
        assert!(!s.is_sending());
        assert!((0..5).all(|_| s.tick().is_empty()));
        // Resume on a new address in PCMA at 40 ms: one 320-byte packet
        // every other tick, marker set, and the new peer's packets taken.
        let moved: SocketAddr = "127.0.0.1:40010".parse().unwrap();
        s.update(&Negotiated {
            remote: moved,
            codec: Codec::Pcma,
            ptime: Some(40),
            ..media()
        });
        assert_eq!(s.remote(), moved);
        assert!(s.tick().is_empty());
        let p = s.tick().to_vec();
        assert_eq!((p.len(), p[1]), (12 + 320, 0x80 | 8), "marker and PCMA");
        assert!(s.tick().is_empty());
        assert_eq!(s.tick().len(), 12 + 320);
        s.handle_packet(100, first, &rtp(8, 2, 320, &[0xd5; 160]));
        assert_eq!(
            s.stats().wrong_source,
            1,
            "the old address is no longer the peer"
        );
        let other_ssrc = rtp_from(1234, 8, 3, 480, &[0xd5; 160]);
        s.handle_packet(120, moved, &other_ssrc);
        assert_eq!(
            s.stats().received,
            2,
            "a new SSRC is learnt at the new address"
        );
        // An unsupported ptime falls back to 20 ms.
        s.update(&Negotiated {
            remote: moved,
            codec: Codec::Pcma,
            ptime: Some(30),
            ..media()
        });
        assert_eq!(s.tick().len(), 12 + 160);
    }

    #[test]
    fn sending_a_digit_emits_events_with_three_end_packets() {
        let mut s = MediaSession::new(&media(), 7, 0, 0);
        assert!(s.send_digit('#', 100));
        let mut evs = Vec::new();
        for _ in 0..10 {
            let p = s.tick().to_vec();
            let r = rtp_rs::RtpReader::new(&p).unwrap();
            if r.payload_type() == 101 {
                evs.push((
                    r.mark(),
                    r.timestamp(),
                    rfc4733::parse_payload(r.payload()).unwrap(),
                ));
            }
        }
        assert_eq!(evs.len(), 4 + 3, "{evs:?}");
        assert!(evs[0].0, "marker on the first event packet");
        assert!(evs.iter().all(|e| e.1 == evs[0].1 && e.2.event == 11));
        assert_eq!(evs.iter().filter(|e| e.2.end).count(), 3);
        assert_eq!(evs.last().unwrap().2.duration, 800);
    }

    const PEER: &str = "127.0.0.1:40000";

    fn event(key: u8, n: u16, end: bool) -> Vec<u8> {
        rfc4733::build_payload(EventPayload {
            event: key,
            end,
            volume: 10,
            duration: n * 160,
        })
        .as_ref()
        .to_vec()
    }

    fn rtp_from(ssrc: u32, pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(pt)
            .sequence(rtp_rs::Seq::from(seq))
            .timestamp(ts)
            .ssrc(ssrc)
            .payload(payload)
            .build()
            .unwrap()
    }

    /// A press of `key` as RFC 4733 packets from `from` with `ssrc`.
    fn press_events(s: &mut MediaSession, from: &str, ssrc: u32, key: u8, t0: u64) {
        for i in 0..6u16 {
            let p = rtp_from(
                ssrc,
                101,
                t0 as u16 + i,
                t0 as u32 * 8,
                &event(key, i + 1, i == 5),
            );
            s.handle_packet(t0 + i as u64 * 20, from.parse().unwrap(), &p);
        }
    }

    fn digits(s: &mut MediaSession) -> String {
        std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                MediaEvent::Digit(d) => Some(d.digit),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn media_from_another_address_or_ssrc_is_dropped_and_counted() {
        let mut s = MediaSession::new(&media(), 7, 0, 0);
        // An attacker sprays events before and during the call.
        press_events(&mut s, "127.0.0.1:41000", 5, 1, 0);
        press_events(&mut s, "127.0.0.1:40000", 99, 5, 200);
        press_events(&mut s, "127.0.0.1:41000", 99, 1, 400);
        // Right address, another SSRC: spoofed source or a second stream.
        press_events(&mut s, "127.0.0.1:40000", 77, 3, 600);
        assert_eq!(digits(&mut s), "5");
        assert_eq!(s.remote(), PEER.parse().unwrap());
        let st = s.stats();
        assert_eq!((st.wrong_source, st.wrong_ssrc, st.received), (12, 6, 6));
        // Audio from elsewhere is not heard either.
        let p = rtp_from(99, 0, 1, 0, &[0u8; 160]);
        s.handle_packet(900, "127.0.0.1:41000".parse().unwrap(), &p);
        assert_eq!(s.stats().wrong_source, 13);
        // A payload type nobody negotiated is dropped without a decode.
        let p = rtp_from(99, 13, 2, 0, &[0u8; 1]);
        s.handle_packet(920, PEER.parse().unwrap(), &p);
        assert_eq!(s.stats().wrong_payload_type, 1);
    }

    #[test]
    fn symmetric_rtp_latches_once_and_never_moves() {
        let mut s = MediaSession::new(&media(), 7, 0, 0);
        s.set_policy(MediaPolicy {
            symmetric_rtp: true,
            ..MediaPolicy::default()
        });
        // An unknown payload type must not choose the peer.
        let p = rtp_from(1, 13, 0, 0, &[0u8; 1]);
        s.handle_packet(0, "127.0.0.1:45000".parse().unwrap(), &p);
        press_events(&mut s, "10.0.0.7:41000", 99, 2, 100);
        press_events(&mut s, "127.0.0.1:42000", 99, 1, 300);
        assert_eq!(digits(&mut s), "2");
        assert_eq!(s.remote(), "10.0.0.7:41000".parse().unwrap());
        assert_eq!(s.stats().wrong_source, 6);
    }

    fn tone_frames(key: char, ms: u64, codec: Codec) -> Vec<[u8; FRAME]> {
        let (r, c) = key_freqs(key).unwrap();
        (0..ms / 20)
            .map(|f| {
                let mut out = [0u8; FRAME];
                for (n, o) in out.iter_mut().enumerate() {
                    let t = (f as f32 * 160.0 + n as f32) / 8000.0;
                    let w = 2.0 * std::f32::consts::PI * t;
                    let v = (6000.0 * ((w * r).sin() + (w * c).sin())) as i16;
                    *o = match codec {
                        Codec::Pcmu => g711::linear_to_ulaw(v),
                        Codec::Pcma => g711::linear_to_alaw(v),
                    };
                }
                out
            })
            .collect()
    }

    #[test]
    fn dtmf_mode_selects_the_paths() {
        let inband = |s: &mut MediaSession, key: char, t0: u64, seq: u16| {
            for (i, f) in tone_frames(key, 100, Codec::Pcmu).iter().enumerate() {
                let p = rtp_from(99, 0, seq + i as u16, 0, f);
                s.handle_packet(t0 + i as u64 * 20, PEER.parse().unwrap(), &p);
            }
        };
        let mut only_events = MediaSession::new(&media(), 7, 0, 0);
        only_events.set_policy(MediaPolicy {
            dtmf: DtmfMode::Rfc4733,
            ..MediaPolicy::default()
        });
        inband(&mut only_events, '4', 0, 0);
        press_events(&mut only_events, PEER, 99, 1, 500);
        assert_eq!(digits(&mut only_events), "1");

        let mut only_tones = MediaSession::new(&media(), 7, 0, 0);
        only_tones.set_policy(MediaPolicy {
            dtmf: DtmfMode::Inband,
            ..MediaPolicy::default()
        });
        press_events(&mut only_tones, PEER, 99, 1, 0);
        inband(&mut only_tones, '4', 500, 10);
        assert_eq!(digits(&mut only_tones), "4");

        // Both: tones count until the far end shows it sends events.
        let mut both = MediaSession::new(&media(), 7, 0, 0);
        inband(&mut both, '4', 0, 0);
        press_events(&mut both, PEER, 99, 1, 500);
        inband(&mut both, '7', 1000, 10);
        assert_eq!(digits(&mut both), "41");
        assert_eq!(both.stats().inband_ignored, 1);
    }

    /// Our prompt comes back as echo `delay` packets later, at half
    /// amplitude; `press` is sent by the callee from `press_at` packets on.
    fn echo_call(
        prompt: Vec<i16>,
        delay: usize,
        press: Option<(char, usize)>,
    ) -> (String, MediaStats) {
        let mut s = MediaSession::new(&media(), 7, 0, 0);
        s.set_policy(MediaPolicy {
            dtmf: DtmfMode::Inband,
            ..MediaPolicy::default()
        });
        s.play(1, Prompt::from_pcm("alert", prompt));
        let press_frames = press.map(|(k, _)| tone_frames(k, 120, Codec::Pcmu));
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for tick in 0..150usize {
            let pkt = s.tick().to_vec();
            sent.push(pkt[12..].to_vec());
            let mut heard = [0i16; FRAME];
            if tick >= delay {
                for (h, &b) in heard.iter_mut().zip(&sent[tick - delay]) {
                    *h = g711::ulaw_to_linear(b) / 2;
                }
            }
            if let (Some((_, at)), Some(frames)) = (press, &press_frames) {
                if tick >= at && tick - at < frames.len() {
                    for (h, &b) in heard.iter_mut().zip(&frames[tick - at]) {
                        *h = h.saturating_add(g711::ulaw_to_linear(b));
                    }
                }
            }
            let payload: Vec<u8> = heard.iter().map(|&x| g711::linear_to_ulaw(x)).collect();
            let p = rtp_from(99, 0, tick as u16, tick as u32 * 160, &payload);
            s.handle_packet(tick as u64 * 20, PEER.parse().unwrap(), &p);
        }
        (digits(&mut s), s.stats())
    }

    fn key_prompt(key: char) -> Vec<i16> {
        // A prompt that itself holds a key's two tones for 200 ms, amid
        // silence: the worst case of talk-off in our own audio.
        let mut pcm = vec![0i16; 8000];
        for f in tone_frames(key, 200, Codec::Pcmu) {
            pcm.extend(f.iter().map(|&b| g711::ulaw_to_linear(b)));
        }
        pcm.extend(std::iter::repeat_n(0, 8000));
        pcm
    }

    #[test]
    fn a_key_heard_only_as_the_echo_of_our_prompt_is_not_a_press() {
        for delay in [1, 5, 15, 30] {
            let (got, st) = echo_call(key_prompt('4'), delay, None);
            assert_eq!(got, "", "echo delay {} ms", delay * 20);
            assert_eq!(st.echo_digits, 1, "echo delay {} ms", delay * 20);
        }
    }

    #[test]
    fn a_real_press_during_or_after_the_prompt_is_heard() {
        // Another key right after the echo of '4' (a press on top of a
        // louder echo of another key is not a clean pair for anyone).
        let (got, _) = echo_call(key_prompt('4'), 5, Some(('8', 66)));
        assert_eq!(got, "8");
        // The same key, long after its echo could have come back.
        let (got, _) = echo_call(key_prompt('4'), 5, Some(('4', 120)));
        assert_eq!(got, "4");
    }
}

#[cfg(test)]
#[path = "session_secure_tests.rs"]
mod secure_tests;

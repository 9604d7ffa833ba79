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
use super::g711;
use super::inband;
use super::rfc4733::{self, EventPayload, EventReceiver};
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
}

/// One call's RTP session.
pub struct MediaSession {
    ssrc: u32,
    seq: u16,
    ts: u32,
    codec: Codec,
    remote_dtmf_pt: Option<u8>,
    remote: SocketAddr,
    latched: bool,
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
    amd: Option<Amd>,
    /// A received frame reached the detector since the last tick.
    amd_fed: bool,
}

impl MediaSession {
    pub fn new(media: &Negotiated, ssrc: u32, initial_seq: u16, initial_ts: u32) -> MediaSession {
        MediaSession {
            ssrc,
            seq: initial_seq,
            ts: initial_ts,
            codec: media.codec,
            remote_dtmf_pt: media.dtmf_pt,
            remote: media.remote,
            latched: false,
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
            amd: None,
            amd_fed: false,
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

    /// Produce the next 20 ms packet. Always returns one: audio, event or
    /// silence, so sequence numbers and timestamps advance continuously.
    pub fn tick(&mut self) -> &[u8] {
        if self.amd.is_some() && !std::mem::take(&mut self.amd_fed) {
            self.amd_feed(&[0; FRAME]);
        }
        let ts = self.ts;
        self.ts = self.ts.wrapping_add(FRAME as u32);
        if self.out_event.is_none() {
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
            return self.build(pt, first, ev_ts, payload.as_ref());
        }
        self.fill_frame();
        let marker = std::mem::take(&mut self.marker);
        let frame = self.frame;
        self.build(self.codec.payload_type(), marker, ts, &frame)
    }

    fn fill_frame(&mut self) {
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
    }

    fn build(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) -> &[u8] {
        self.buf.clear();
        self.buf.push(0x80);
        self.buf.push(((marker as u8) << 7) | (pt & 0x7F));
        self.buf.extend_from_slice(&self.seq.to_be_bytes());
        self.buf.extend_from_slice(&ts.to_be_bytes());
        self.buf.extend_from_slice(&self.ssrc.to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.stats.sent += 1;
        &self.buf
    }

    /// Feed a received datagram at `now_ms` (ms since session start).
    pub fn handle_packet(&mut self, now_ms: u64, from: SocketAddr, bytes: &[u8]) {
        let Ok(pkt) = rtp_rs::RtpReader::new(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if pkt.version() != 2 {
            self.stats.malformed += 1;
            return;
        }
        self.stats.received += 1;
        if !self.latched {
            self.latched = true;
            if from != self.remote {
                self.remote = from;
            }
            self.events.push_back(MediaEvent::Latched(from));
        }
        let pt = pkt.payload_type();
        let payload = pkt.payload();
        if Some(pt) == self.remote_dtmf_pt {
            if let Some(d) = self.events_rx.handle(now_ms, pkt.timestamp(), payload) {
                self.push_digit(d.digit, DigitSource::Rfc4733, d.at_ms);
            }
            return;
        }
        let decode: fn(u8) -> i16 = match pt {
            0 => g711::ulaw_to_linear,
            8 => g711::alaw_to_linear,
            _ => return,
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
                self.push_digit(d.digit, DigitSource::Inband, base + d.start_ms);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::inband::key_freqs;

    fn media() -> Negotiated {
        Negotiated {
            remote: "127.0.0.1:40000".parse().unwrap(),
            codec: Codec::Pcmu,
            dtmf_pt: Some(101),
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
}

//! Basic RTCP (RFC 3550), sans-IO: the statistics of what we receive
//! (sequence tracking per A.1, interarrival jitter per A.8), the sender
//! report we send every few seconds, and the reports the peer sends back,
//! read into the figures a call record keeps: the far end's loss
//! (fraction and cumulative), its jitter and the round trip (LSR/DLSR,
//! 6.4.1). Parsing takes any bytes without panicking.

/// Seconds between two sender reports (RFC 3550 6.2 minimum for a
/// two-party session, rounded).
pub const REPORT_INTERVAL_MS: u64 = 5000;

/// Packet types (RFC 3550 12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;

/// One report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Lost since the start (24-bit signed: duplicates can make it < 0).
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    /// In RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// What a compound packet held that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Sr {
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
        reports: Vec<ReportBlock>,
    },
    Rr {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    /// SDES, BYE, APP, feedback: read over.
    Other(u8),
}

/// Why a datagram is not RTCP we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("RTCP packet too short")]
    Short,
    #[error("not RTCP version 2")]
    Version,
    #[error("RTCP length field runs past the datagram")]
    Length,
    #[error("a compound packet must start with SR or RR")]
    NotReportFirst,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn blocks(body: &[u8], count: usize) -> Result<Vec<ReportBlock>, RtcpError> {
    let mut out = Vec::with_capacity(count.min(31));
    for i in 0..count {
        let b = body.get(i * 24..i * 24 + 24).ok_or(RtcpError::Length)?;
        let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        out.push(ReportBlock {
            ssrc: u32_at(b, 0).unwrap_or(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: u32_at(b, 8).unwrap_or(0),
            jitter: u32_at(b, 12).unwrap_or(0),
            lsr: u32_at(b, 16).unwrap_or(0),
            dlsr: u32_at(b, 20).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Parse a compound RTCP packet (RFC 3550 6.1): a run of packets each
/// with version 2 and a length in 32-bit words that fits the datagram.
pub fn parse(data: &[u8]) -> Result<Vec<Packet>, RtcpError> {
    let mut out = Vec::new();
    let mut rest = data;
    if rest.len() < 8 {
        return Err(RtcpError::Short);
    }
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtcpError::Short);
        }
        if rest[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        let count = usize::from(rest[0] & 0x1f);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let pkt = rest.get(..len).ok_or(RtcpError::Length)?;
        rest = &rest[len..];
        if out.is_empty() && pt != PT_SR && pt != PT_RR {
            return Err(RtcpError::NotReportFirst);
        }
        out.push(match pt {
            PT_SR => {
                if pkt.len() < 28 {
                    return Err(RtcpError::Short);
                }
                Packet::Sr {
                    ssrc: u32_at(pkt, 4).unwrap_or(0),
                    ntp: (u64::from(u32_at(pkt, 8).unwrap_or(0)) << 32)
                        | u64::from(u32_at(pkt, 12).unwrap_or(0)),
                    rtp_ts: u32_at(pkt, 16).unwrap_or(0),
                    packets: u32_at(pkt, 20).unwrap_or(0),
                    octets: u32_at(pkt, 24).unwrap_or(0),
                    reports: blocks(&pkt[28..], count)?,
                }
            }
            PT_RR => {
                if pkt.len() < 8 {
                    return Err(RtcpError::Short);
                }
                Packet::Rr {
                    ssrc: u32_at(pkt, 4).unwrap_or(0),
                    reports: blocks(&pkt[8..], count)?,
                }
            }
            other => Packet::Other(other),
        });
    }
    Ok(out)
}

/// What a datagram on an RTP port shared with RTCP is (rtcp-mux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Muxed {
    Rtp,
    Rtcp,
}

/// Tell RTCP from RTP on one port (RFC 5761 4): the second octet of an
/// RTCP packet is its type, 192-223 for every type in use (SR 200, RR
/// 201, SDES, BYE, APP, feedback, XR); in RTP that octet is the marker
/// bit and the payload type, so those values are RTP types 64-95 with
/// the marker set, which RFC 5761 takes out of use on a muxed port.
/// Anything too short to tell is RTP (and refused there as malformed).
pub fn demux(datagram: &[u8]) -> Muxed {
    match datagram.get(1) {
        Some(192..=223) => Muxed::Rtcp,
        _ => Muxed::Rtp,
    }
}

/// Milliseconds since the Unix epoch as a 64-bit NTP timestamp.
pub fn ntp_from_unix_ms(ms: u64) -> u64 {
    const UNIX_TO_NTP_S: u64 = 2_208_988_800;
    let secs = ms / 1000 + UNIX_TO_NTP_S;
    let frac = ((ms % 1000) << 32) / 1000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (LSR, RFC 3550 6.4.1).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Our sender report (and receiver report block when we have heard the
/// peer) with an SDES CNAME, as one compound packet (RFC 3550 6.1).
pub fn build_sr(
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    report: Option<ReportBlock>,
    cname: &str,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(80);
    let rc = u8::from(report.is_some());
    b.push(0x80 | rc);
    b.push(PT_SR);
    let words = 6 + 6 * u16::from(rc);
    b.extend_from_slice(&words.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(&ntp.to_be_bytes());
    b.extend_from_slice(&rtp_ts.to_be_bytes());
    b.extend_from_slice(&packets.to_be_bytes());
    b.extend_from_slice(&octets.to_be_bytes());
    if let Some(r) = report {
        b.extend_from_slice(&r.ssrc.to_be_bytes());
        let lost = (r.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0xff_ffff;
        b.extend_from_slice(&((u32::from(r.fraction_lost) << 24) | lost).to_be_bytes());
        b.extend_from_slice(&r.highest_seq.to_be_bytes());
        b.extend_from_slice(&r.jitter.to_be_bytes());
        b.extend_from_slice(&r.lsr.to_be_bytes());
        b.extend_from_slice(&r.dlsr.to_be_bytes());
    }
    // SDES: one chunk, CNAME, then the null item and padding to 32 bits.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let mut chunk = Vec::with_capacity(8 + name.len());
    chunk.extend_from_slice(&ssrc.to_be_bytes());
    chunk.push(1);
    chunk.push(name.len() as u8);
    chunk.extend_from_slice(name);
    chunk.push(0);
    while chunk.len() % 4 != 0 {
        chunk.push(0);
    }
    b.push(0x81);
    b.push(PT_SDES);
    b.extend_from_slice(&((chunk.len() / 4) as u16).to_be_bytes());
    b.extend_from_slice(&chunk);
    b
}

/// Statistics of one received RTP stream (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Jitter estimate, in RTP units scaled by 16 (A.8).
    jitter_q4: u32,
    transit: Option<i64>,
}

impl ReceiverStats {
    /// An audio packet with sequence `seq` and timestamp `rtp_ts` arrived
    /// at `arrival` (in RTP units of the same 8 kHz clock): counted, and
    /// its transit time moves the jitter estimate (A.8).
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival: u32) {
        self.on_untimed(seq);
        let transit = i64::from(arrival) - i64::from(rtp_ts);
        if let Some(prev) = self.transit {
            // Both clocks wrap at 2^32: take the difference modulo that.
            let d = ((transit - prev) as i32).unsigned_abs();
            // J += (|D| - J) / 16, with J kept scaled by 16 (A.8).
            let j = self.jitter_q4 as i64;
            self.jitter_q4 = (j + i64::from(d) - ((j + 8) >> 4)).clamp(0, u32::MAX as i64) as u32;
        }
        self.transit = Some(transit);
    }

    /// A packet counted for loss but not for jitter: an RFC 4733 event
    /// repeats its start timestamp in every packet while it lasts (2.5.1),
    /// so its transit time grows 20 ms a packet and would read as jitter
    /// (a held key read as 90 ms of jitter on a clean loopback).
    pub fn on_untimed(&mut self, seq: u16) {
        if !self.started {
            self.started = true;
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received = self.received.wrapping_add(1);
    }

    pub fn received(&self) -> u32 {
        self.received
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Lost so far: expected minus received (A.3).
    pub fn cumulative_lost(&self) -> i64 {
        if !self.started {
            return 0;
        }
        let expected = i64::from(self.extended_max()) - i64::from(self.base_seq) + 1;
        expected - i64::from(self.received)
    }

    /// Interarrival jitter in RTP timestamp units (what a report carries).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The same in milliseconds of the 8 kHz clock, unrounded.
    pub fn jitter_ms(&self) -> f64 {
        f64::from(self.jitter_q4) / 16.0 / 8.0
    }

    /// The report block for this stream, moving the interval on.
    pub fn report(&mut self, ssrc: u32, lsr: u32, dlsr: u32) -> Option<ReportBlock> {
        if !self.started {
            return None;
        }
        let expected = self
            .extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: self.extended_max(),
            jitter: self.jitter(),
            lsr,
            dlsr,
        })
    }
}

/// What the peer's reports say about the media we send, and our view of
/// what it sends: the figures a call record keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RtcpFigures {
    /// Reports (SR or RR with a block about our stream) read from the peer.
    pub reports: u32,
    /// The far end's latest fraction lost, in percent.
    pub remote_fraction_lost_pct: f64,
    /// The far end's cumulative count of our packets lost.
    pub remote_cumulative_lost: i64,
    /// The far end's latest interarrival jitter, in milliseconds.
    pub remote_jitter_ms: f64,
    /// Round trip from the latest report that named one of our SRs.
    pub rtt_ms: Option<f64>,
    /// Loss of the peer's packets as we see it.
    pub local_cumulative_lost: i64,
    /// Interarrival jitter of the peer's packets as we see it.
    pub local_jitter_ms: f64,
}

/// One session's RTCP state: when to report, what the peer reported.
#[derive(Debug, Clone)]
pub struct RtcpState {
    pub recv: ReceiverStats,
    next_report_ms: u64,
    /// The peer's last SR: its NTP middle bits and when we got it.
    last_sr: Option<(u32, u64)>,
    figures: RtcpFigures,
    /// Dropped: malformed, from elsewhere, or failing SRTCP.
    pub rejected: u64,
}

impl Default for RtcpState {
    fn default() -> Self {
        RtcpState {
            recv: ReceiverStats::default(),
            // The first report goes out a little after media starts.
            next_report_ms: REPORT_INTERVAL_MS / 2,
            last_sr: None,
            figures: RtcpFigures::default(),
            rejected: 0,
        }
    }
}

/// The session clock in 8 kHz units (for jitter).
pub fn rtp_units(now_ms: u64) -> u32 {
    (now_ms.wrapping_mul(8)) as u32
}

impl RtcpState {
    pub fn figures(&self) -> RtcpFigures {
        let mut f = self.figures;
        f.local_cumulative_lost = self.recv.cumulative_lost();
        f.local_jitter_ms = self.recv.jitter_ms();
        f
    }

    /// Is a report due at `now_ms`? Moves the schedule on when it is.
    pub fn due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_report_ms {
            return false;
        }
        self.next_report_ms = now_ms + REPORT_INTERVAL_MS;
        true
    }

    /// The receiver report block about the peer's stream, if we heard it.
    pub fn block(&mut self, peer_ssrc: Option<u32>, now_ms: u64) -> Option<ReportBlock> {
        let ssrc = peer_ssrc?;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let delay = now_ms.saturating_sub(at);
                (lsr, ((delay << 16) / 1000).min(u64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        self.recv.report(ssrc, lsr, dlsr)
    }

    /// A compound packet from the peer, already authenticated if SRTCP.
    /// `our_ssrc` picks the block about us; `now_ntp` is our NTP clock
    /// now (for the round trip).
    pub fn handle(&mut self, data: &[u8], our_ssrc: u32, now_ms: u64, now_ntp: u64) -> bool {
        let Ok(pkts) = parse(data) else {
            self.rejected += 1;
            return false;
        };
        for p in pkts {
            let reports = match p {
                Packet::Sr { ntp, reports, .. } => {
                    self.last_sr = Some((ntp_middle(ntp), now_ms));
                    reports
                }
                Packet::Rr { reports, .. } => reports,
                Packet::Other(_) => continue,
            };
            let Some(b) = reports.iter().find(|b| b.ssrc == our_ssrc) else {
                continue;
            };
            let f = &mut self.figures;
            f.reports = f.reports.saturating_add(1);
            f.remote_fraction_lost_pct = f64::from(b.fraction_lost) * 100.0 / 256.0;
            f.remote_cumulative_lost = i64::from(b.cumulative_lost);
            f.remote_jitter_ms = f64::from(b.jitter) / 8.0;
            if b.lsr != 0 {
                // RFC 3550 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                let a = ntp_middle(now_ntp);
                let rtt = a.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                // A negative result (clock step, forged block) wraps huge.
                if rtt < 65536 * 60 {
                    f.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65536.0);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_report_round_trips_with_its_block_and_sdes() {
        let block = ReportBlock {
            ssrc: 9,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 12,
            lsr: 0xdead_beef,
            dlsr: 65536,
        };
        let p = build_sr(
            7,
            0x0102_0304_0506_0708,
            160,
            50,
            8000,
            Some(block),
            "callout@x",
        );
        assert_eq!(p.len() % 4, 0);
        let got = parse(&p).unwrap();
        assert_eq!(
            got,
            vec![
                Packet::Sr {
                    ssrc: 7,
                    ntp: 0x0102_0304_0506_0708,
                    rtp_ts: 160,
                    packets: 50,
                    octets: 8000,
                    reports: vec![block],
                },
                Packet::Other(PT_SDES)
            ]
        );
        let bare = build_sr(7, 1, 2, 3, 4, None, "");
        assert!(
            matches!(&parse(&bare).unwrap()[0], Packet::Sr { reports, .. } if reports.is_empty())
        );
    }

    #[test]
    fn hostile_input_is_refused_without_panic() {
        let good = build_sr(7, 1, 2, 3, 4, None, "c");
        assert_eq!(parse(&[]), Err(RtcpError::Short));
        assert_eq!(parse(&good[..7]), Err(RtcpError::Short));
        let mut v1 = good.clone();
        v1[0] = 0x40;
        assert_eq!(parse(&v1), Err(RtcpError::Version));
        let mut long = good.clone();
        long[3] = 0xff;
        assert_eq!(parse(&long), Err(RtcpError::Length));
        // A count of 31 blocks with none there.
        let mut many = good.clone();
        many[0] = 0x80 | 31;
        assert_eq!(parse(&many), Err(RtcpError::Length));
        // SDES alone is not a valid compound start.
        assert_eq!(parse(&good[28..]), Err(RtcpError::NotReportFirst));
        // Every truncation and single-byte change of a real packet.
        let real = build_sr(
            7,
            1,
            2,
            3,
            4,
            Some(ReportBlock {
                ssrc: 1,
                ..Default::default()
            }),
            "cname",
        );
        for n in 0..real.len() {
            let _ = parse(&real[..n]);
            for v in [0u8, 0x1f, 0x80, 0xff] {
                let mut m = real.clone();
                m[n] = v;
                let _ = parse(&m);
                let mut st = RtcpState::default();
                st.handle(&m, 1, 1000, ntp_from_unix_ms(1000));
            }
        }
        // Pseudo-random junk.
        let mut x: u32 = 1;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 3) as u8 | 0x80
                })
                .collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn rtcp_and_rtp_are_told_apart_on_one_port() {
        let rtcp = |pt: u8| [0x80, pt, 0, 1, 0, 0, 0, 7];
        for pt in [200, 201, 202, 203, 204, 205, 206, 207] {
            assert_eq!(demux(&rtcp(pt)), Muxed::Rtcp, "type {pt}");
        }
        assert_eq!(demux(&build_sr(7, 1, 2, 3, 4, None, "c")), Muxed::Rtcp);
        // RTP: PCMU, PCMA and our telephone-event, with and without the
        // marker bit; the edges of the range are RTP too.
        for second in [
            0u8,
            0x80,
            8,
            0x88,
            101,
            0x80 | 101,
            63 | 0x80,
            96 | 0x80,
            0xff,
        ] {
            let rtp = [0x80, second, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
            assert_eq!(demux(&rtp), Muxed::Rtp, "second octet {second}");
        }
        assert_eq!(demux(&[0x80, 191]), Muxed::Rtp);
        assert_eq!(demux(&[0x80, 192]), Muxed::Rtcp);
        assert_eq!(demux(&[0x80, 223]), Muxed::Rtcp);
        assert_eq!(demux(&[0x80, 224]), Muxed::Rtp);
        // Too short to tell: RTP, which refuses it.
        assert_eq!(demux(&[]), Muxed::Rtp);
        assert_eq!(demux(&[0x80]), Muxed::Rtp);
    }

    #[test]
    fn receiver_statistics_count_loss_wrap_and_jitter() {
        let mut r = ReceiverStats::default();
        // 100 packets from 65500 across the wrap, every 10th lost, even
        // spacing: no jitter.
        let mut sent = 0u32;
        for i in 0..100u32 {
            let seq = 65500u16.wrapping_add(i as u16);
            sent += 1;
            if i % 10 == 4 {
                continue;
            }
            r.on_packet(seq, i * 160, 1000 + i * 160);
        }
        assert_eq!(sent, 100);
        assert_eq!(r.cumulative_lost(), 10);
        assert_eq!(r.jitter(), 0);
        let b = r.report(5, 0, 0).unwrap();
        assert_eq!(b.highest_seq, 65536 + 63);
        assert_eq!(b.cumulative_lost, 10);
        // 10 % of 256.
        assert_eq!(b.fraction_lost, 25);
        // The next interval without loss reports 0 lost in it.
        for i in 100..110u32 {
            r.on_packet(65500u16.wrapping_add(i as u16), i * 160, 1000 + i * 160);
        }
        assert_eq!(r.report(5, 0, 0).unwrap().fraction_lost, 0);
        // Arrival alternating 0 and 80 units late converges toward 80.
        let mut j = ReceiverStats::default();
        for i in 0..400u32 {
            j.on_packet(i as u16, i * 160, i * 160 + (i % 2) * 80);
        }
        assert!((70..=80).contains(&j.jitter()), "{}", j.jitter());
        // Duplicates make the count negative, not a panic.
        let mut d = ReceiverStats::default();
        for _ in 0..5 {
            d.on_packet(1, 0, 0);
        }
        assert_eq!(d.cumulative_lost(), -4);
    }

    /// RFC 3550 A.8 by hand: packets 20 ms (160 units) apart, arriving
    /// 0, 8, 0, 24, 16 units late. Transit differences |D| are 8, 8, 24,
    /// 8; with J16 the estimate scaled by 16 and J16 += |D| -
    /// ((J16 + 8) >> 4): 8, 15, 38, 44. 44 / 16 = 2.75 units, reported
    /// as 2; 2.75 / 8 = 0.34375 ms.
    #[test]
    fn jitter_follows_rfc3550_a8_on_a_hand_computed_sequence() {
        let mut r = ReceiverStats::default();
        for (i, late) in [0u32, 8, 0, 24, 16].into_iter().enumerate() {
            let i = i as u32;
            r.on_packet(i as u16, 5000 + i * 160, 90_000 + i * 160 + late);
        }
        assert_eq!(r.jitter_q4, 44);
        assert_eq!(r.jitter(), 2);
        assert_eq!(r.jitter_ms(), 0.34375);
        // The session's clock: 20 ms apart in ms is 160 units apart.
        assert_eq!(rtp_units(20) - rtp_units(0), 160);
        assert_eq!(rtp_units(1), 8);
    }

    /// An RFC 4733 event repeats its start timestamp while the key is
    /// held; those packets count for loss but not for jitter, so audio
    /// around a held key on a perfect network still has no jitter.
    #[test]
    fn event_packets_count_for_loss_but_not_for_jitter() {
        let mut r = ReceiverStats::default();
        let mut seq = 0u16;
        // 50 audio packets, then 9 event packets (each stamped with the
        // event's start, 20 ms apart in arrival), then 50 audio again:
        // the audio clock ran on during the event.
        for i in 0..50u32 {
            r.on_packet(seq, i * 160, 1000 + i * 160);
            seq += 1;
        }
        for _ in 0..9 {
            r.on_untimed(seq);
            seq += 1;
        }
        for i in 59..109u32 {
            r.on_packet(seq, i * 160, 1000 + i * 160);
            seq += 1;
        }
        assert_eq!(r.jitter(), 0);
        assert_eq!(r.received(), 109);
        assert_eq!(r.cumulative_lost(), 0);
        // Fed through the timed path, the same event packets read as
        // jitter of many milliseconds: what the untimed path avoids.
        let mut naive = ReceiverStats::default();
        for i in 0..50u32 {
            naive.on_packet(i as u16, i * 160, 1000 + i * 160);
        }
        for k in 0..9u32 {
            naive.on_packet(50 + k as u16, 50 * 160, 1000 + (50 + k) * 160);
        }
        assert!(naive.jitter_ms() > 5.0, "{}", naive.jitter_ms());
    }

    #[test]
    fn the_peers_report_gives_loss_jitter_and_round_trip() {
        let mut st = RtcpState::default();
        // We sent an SR at NTP t0; the peer answers 100 ms later having
        // held it 30 ms (DLSR), so the round trip is 70 ms.
        let t0 = ntp_from_unix_ms(1_700_000_000_000);
        let t1 = ntp_from_unix_ms(1_700_000_000_100);
        let rr = {
            let mut b = vec![0x81, PT_RR, 0, 7, 0, 0, 0, 99];
            b.extend_from_slice(&7u32.to_be_bytes());
            b.extend_from_slice(&((26u32 << 24) | 12).to_be_bytes());
            b.extend_from_slice(&1000u32.to_be_bytes());
            b.extend_from_slice(&80u32.to_be_bytes());
            b.extend_from_slice(&ntp_middle(t0).to_be_bytes());
            b.extend_from_slice(&((30u32 << 16) / 1000).to_be_bytes());
            b
        };
        assert!(st.handle(&rr, 7, 100, t1));
        let f = st.figures();
        assert_eq!(f.reports, 1);
        assert_eq!(f.remote_cumulative_lost, 12);
        assert!((f.remote_fraction_lost_pct - 10.16).abs() < 0.01);
        assert_eq!(f.remote_jitter_ms, 10.0);
        let rtt = f.rtt_ms.unwrap();
        assert!((rtt - 70.0).abs() < 1.0, "{rtt}");
        // A block about another SSRC is not about us.
        assert!(st.handle(&rr, 8, 200, t1));
        assert_eq!(st.figures().reports, 1);
        // Junk counts as rejected.
        assert!(!st.handle(b"\x80", 7, 0, t1));
        assert_eq!(st.rejected, 1);
        // Reports are due every 5 s.
        assert!(!st.due(0));
        assert!(st.due(2500));
        assert!(!st.due(7000));
        assert!(st.due(7500));
    }
}

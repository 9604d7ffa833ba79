//! The peer's figure for streaming: sipp's own UAC playing RTP from a
//! pcap (`play_pcap_audio`, as its built-in `uac_pcap` scenario does),
//! with the same prompt packetised as callout sends it (PCMU, 20 ms),
//! to the same kind of receiver, as many calls at once as callout held.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::rtp_sink::{Sink, SinkResult};
use crate::media::audio::Prompt;

/// What sipp's streams cost and how they arrived.
pub(crate) struct PeerMedia {
    /// sipp's CPU (user + system) over the hold, in cores.
    pub cpu: f64,
    pub sink: SinkResult,
    /// Whether every stream was flowing when the hold began.
    pub all_up: bool,
}

/// A pcap of `secs` seconds of `prompt` (looped) as PCMU in 20 ms RTP
/// packets over Ethernet/IPv4/UDP: the layers sipp's replay expects. The
/// addresses and ports are sipp's to replace.
pub(crate) fn pcap(prompt: &Prompt, secs: u32) -> Vec<u8> {
    let frames = secs as usize * 50;
    let mut out = Vec::with_capacity(24 + frames * 230);
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let audio = if prompt.ulaw.is_empty() {
        vec![0xffu8; 160]
    } else {
        prompt.ulaw.clone()
    };
    for i in 0..frames {
        let payload: Vec<u8> = (0..160)
            .map(|k| audio[(i * 160 + k) % audio.len()])
            .collect();
        let rtp_len = 12 + payload.len();
        let udp_len = 8 + rtp_len;
        let ip_len = 20 + udp_len;
        let frame_len = 14 + ip_len;
        let usec = i as u64 * 20_000;
        out.extend_from_slice(&((usec / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((usec % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame_len as u32).to_le_bytes());
        out.extend_from_slice(&(frame_len as u32).to_le_bytes());
        // Ethernet: no addresses, IPv4.
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&[0x08, 0x00]);
        // IPv4, no options, UDP, 127.0.0.1 to 127.0.0.1.
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&6000u16.to_be_bytes());
        out.extend_from_slice(&6000u16.to_be_bytes());
        out.extend_from_slice(&(udp_len as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        // RTP: version 2, PCMU, sequence, timestamp, SSRC.
        out.extend_from_slice(&[0x80, 0x00]);
        out.extend_from_slice(&(i as u16).to_be_bytes());
        out.extend_from_slice(&((i as u32) * 160).to_be_bytes());
        out.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The scenario: INVITE offering PCMU, ACK the 200, play the pcap, BYE
/// after `pause_ms`.
fn scenario(pcap: &Path, pause_ms: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac streaming a pcap">
  <send retrans="500"><![CDATA[
INVITE sip:bench@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:bench@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[local_ip_type] [local_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:bench@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:bench@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <nop><action><exec play_pcap_audio="{}"/></action></nop>
  <pause milliseconds="{pause_ms}"/>
  <send retrans="500"><![CDATA[
BYE sip:bench@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:bench@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"#,
        pcap.display()
    )
}

/// Run `streams` sipp calls at once, each streaming `prompt`, against a
/// sipp UAS whose SDP sends their RTP to a fresh receiver; measure sipp's
/// CPU and the receiver's jitter over `hold` once every stream flows.
pub(crate) fn run(
    dir: &Path,
    prompt: &Prompt,
    streams: usize,
    hold: Duration,
) -> anyhow::Result<PeerMedia> {
    let sock = crate::driver::net::roomy_udp("127.0.0.1:0".parse()?)?;
    let sink_port = sock.local_addr()?.port();
    let sink = Sink::start(sock);
    let uas_port = super::free_port()?;
    let mut uas = super::start_sipp_uas(dir, uas_port, sink_port, false, None)?;
    // Long enough for the ramp, the settling and the hold.
    let secs = hold.as_secs() as u32 + 20;
    let pcap = dir.join("stream.pcap");
    std::fs::write(&pcap, self::pcap(prompt, secs))
        .with_context(|| format!("writing {}", pcap.display()))?;
    let xml = dir.join("uac_stream.xml");
    std::fs::write(&xml, scenario(&pcap, u64::from(secs) * 1000))?;
    let mut uac = Command::new("sipp")
        .current_dir(dir)
        .args(["-sf", xml.to_str().unwrap_or_default()])
        .arg(format!("127.0.0.1:{uas_port}"))
        .args(["-i", "127.0.0.1", "-p", &super::free_port()?.to_string()])
        .args(["-mi", "127.0.0.1"])
        .args(["-m", &streams.to_string(), "-l", &streams.to_string()])
        .args(["-r", "500", "-rp", "1000"])
        .args(["-max_socket", "8192", "-buff_size", "8388608"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sipp's UAC (apt-get install sip-tester)")?;
    let started = Instant::now();
    let all_up = sink.wait_for_rate(streams as f64 * 50.0 * 0.97, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let cpu0 = cpu_of(uac.id());
    let t0 = Instant::now();
    sink.recording
        .store(true, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(hold);
    sink.recording
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let cpu = (cpu_of(uac.id()) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let _ = uac.kill();
    let _ = uac.wait();
    let _ = uas.kill();
    let _ = uas.wait();
    let sink = sink.finish();
    tracing::debug!(
        ramp_s = started.elapsed().as_secs_f64(),
        "sipp media phase done"
    );
    Ok(PeerMedia { cpu, sink, all_up })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pcap_holds_20_ms_pcmu_packets_with_valid_ip_headers() {
        let p = Prompt::from_pcm("t", (0..800).map(|i| (i * 37 % 2000) as i16).collect());
        let b = pcap(&p, 2);
        assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes());
        let rec = 16 + 14 + 20 + 8 + 12 + 160;
        assert_eq!(b.len(), 24 + 100 * rec);
        // The second packet: 20 ms after the first, sequence 1, timestamp 160.
        let second = &b[24 + rec..];
        assert_eq!(u32::from_le_bytes(second[4..8].try_into().unwrap()), 20_000);
        let ip = &second[16 + 14..16 + 34];
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff, "IPv4 header checksum");
        let rtp = &second[16 + 42..];
        assert_eq!(u16::from_be_bytes([rtp[2], rtp[3]]), 1);
        assert_eq!(u32::from_be_bytes(rtp[4..8].try_into().unwrap()), 160);
        // The payload loops the prompt's PCMU (800 samples = 5 frames).
        assert_eq!(&rtp[12..172], &p.ulaw[160..320]);
    }
}

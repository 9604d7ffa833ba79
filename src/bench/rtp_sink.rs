//! The benchmark's RTP receiver: one thread takes every stream's packets
//! (callout's or sipp's) and measures each packet's arrival against the
//! stream's previous one.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the receiver saw while recording.
#[derive(Default)]
pub(crate) struct SinkResult {
    /// |arrival gap - 20 ms x sequence step| per packet, in ms.
    pub deviations: Vec<f64>,
    pub packets: u64,
    pub lost: u64,
    /// Streams (source address and SSRC) seen while recording.
    pub streams: usize,
    /// The receiver thread's own CPU time while recording: it runs in the
    /// benchmark's process, and is not the sender's work.
    pub cpu: Duration,
    /// Arrival times are the kernel's (SO_TIMESTAMPNS), not the thread's.
    pub kernel_stamps: bool,
}

/// How often a receiver with kernel stamps drains its socket (its buffer
/// holds far more than a millisecond of 2,000 streams).
const DRAIN_EVERY: Duration = Duration::from_millis(1);

/// A running receiver.
pub(crate) struct Sink {
    pub recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Packets received so far (recording or not), to see when every
    /// stream is flowing.
    pub received: Arc<AtomicU64>,
    thread: JoinHandle<SinkResult>,
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Ask the kernel to stamp each datagram as it reaches the socket, so the
/// receiver's own scheduling delays are not counted as the sender's
/// jitter.
fn stamp_on_arrival(sock: &UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a c_int option value that
    // outlives the call.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// One datagram with its kernel arrival stamp (ns of CLOCK_REALTIME),
/// when the socket gives one.
fn recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
    flags: libc::c_int,
) -> std::io::Result<(usize, SocketAddr, Option<i128>)> {
    use std::os::fd::AsRawFd;
    // SAFETY: zeroed sockaddr_storage and msghdr are valid initial values.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live buffer of the
    // length given beside it.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let from = match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in for AF_INET.
            let a: &libc::sockaddr_in =
                unsafe { &*(&addr as *const _ as *const libc::sockaddr_in) };
            SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            ))
        }
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, from, stamp))
}

impl Sink {
    /// Receive on `sock`. Streams are told apart by source address and
    /// SSRC (sipp's pcap replay sends every call with the pcap's SSRC).
    /// Gaps in sequence numbers count as loss, not jitter.
    pub(crate) fn start(sock: UdpSocket) -> Sink {
        let recording = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (rec, st, count) = (recording.clone(), stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            // The receiver must not be what is measured: give it the same
            // priority as the media clock when the system allows.
            crate::driver::net::try_realtime(10);
            let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
            let stamped = stamp_on_arrival(&sock);
            let origin = Instant::now();
            let mut last: HashMap<(SocketAddr, u32), (i128, u16)> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            let mut r = SinkResult::default();
            let mut cpu_from: Option<Duration> = None;
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let recording = rec.load(Ordering::Relaxed);
                match (recording, cpu_from) {
                    (true, None) => cpu_from = Some(thread_cpu()),
                    (false, Some(from)) => {
                        r.cpu += thread_cpu().saturating_sub(from);
                        cpu_from = None;
                    }
                    _ => {}
                }
                // With kernel stamps the arrival time does not depend on
                // when this thread reads: it drains the queue once a
                // millisecond instead of waking for every packet. On one
                // machine a receiver woken per packet preempts the sender
                // (the wake-up is the sender's cost on loopback), which a
                // far end on its own machine never does.
                let got = if stamped {
                    match recv_stamped(&sock, &mut buf, libc::MSG_DONTWAIT) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(DRAIN_EVERY);
                            continue;
                        }
                        got => got,
                    }
                } else {
                    recv_stamped(&sock, &mut buf, 0)
                };
                let Ok((n, from, stamp)) = got else {
                    continue;
                };
                // The kernel's arrival time, else when this thread got it.
                let now = match (stamped, stamp) {
                    (true, Some(ns)) => ns,
                    (true, None) => continue,
                    (false, _) => origin.elapsed().as_nanos() as i128,
                };
                count.fetch_add(1, Ordering::Relaxed);
                if n < 12 {
                    continue;
                }
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                let Some((prev, prev_seq)) = last.insert((from, ssrc), (now, seq)) else {
                    continue;
                };
                if !recording {
                    continue;
                }
                seen.insert((from, ssrc));
                let step = seq.wrapping_sub(prev_seq);
                r.packets += 1;
                if step == 0 || step > 1000 {
                    continue;
                }
                r.lost += u64::from(step - 1);
                let gap = (now - prev) as f64 / 1e6;
                r.deviations.push((gap - 20.0 * f64::from(step)).abs());
            }
            if let Some(from) = cpu_from {
                r.cpu += thread_cpu().saturating_sub(from);
            }
            r.streams = seen.len();
            r.kernel_stamps = stamped;
            r
        });
        Sink {
            recording,
            stop,
            received,
            thread,
        }
    }

    /// Wait until packets arrive at `per_sec` or more (measured over
    /// 500 ms), or `limit` passes. True when the rate was reached.
    pub(crate) fn wait_for_rate(&self, per_sec: f64, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            let (n0, t0) = (self.received.load(Ordering::Relaxed), Instant::now());
            std::thread::sleep(Duration::from_millis(500));
            let n = self.received.load(Ordering::Relaxed) - n0;
            if n as f64 / t0.elapsed().as_secs_f64() >= per_sec {
                return true;
            }
        }
        false
    }

    pub(crate) fn finish(self) -> SinkResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl SinkResult {
    /// One line: packets, loss and the deviation's percentiles.
    pub(crate) fn jitter_line(&self) -> String {
        let mut dev = self.deviations.clone();
        dev.sort_by(f64::total_cmp);
        format!(
            "|gap - 20 ms| by {} over {} packets ({} lost): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            if self.kernel_stamps {
                "kernel arrival stamps"
            } else {
                "receiver clock"
            },
            self.packets,
            self.lost,
            super::percentile(&dev, 0.5),
            super::percentile(&dev, 0.99),
            dev.last().copied().unwrap_or(f64::NAN)
        )
    }
}

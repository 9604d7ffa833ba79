//! Socket set-up shared by the drivers.

use std::net::{SocketAddr, UdpSocket};

/// A UDP socket with large buffers, so that a burst is queued rather than
/// dropped while the reader is descheduled. The kernel caps the sizes at
/// net.core.rmem_max / wmem_max.
pub fn roomy_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Ask for real-time (SCHED_FIFO) scheduling for the calling thread, as
/// media servers do for their packet clocks. Needs root or CAP_SYS_NICE;
/// without them this returns `false` and the thread keeps normal
/// scheduling. The media thread sleeps between ticks, so it cannot starve
/// the machine.
pub fn try_realtime(priority: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler with pid 0 affects only the calling
    // thread and reads `param`, which outlives the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// The source address the OS would use toward `peer`: a UDP socket
/// connected to it (nothing is sent) reports its local address. For a
/// socket bound to the unspecified address, this is what the peer sees
/// when no NAT is in between.
pub fn route_source(peer: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any)?;
    s.connect(peer)?;
    let ip = s.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(std::io::Error::other("no route source"));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_source_toward_loopback_is_loopback() {
        let ip = super::route_source("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(ip, std::net::IpAddr::from([127, 0, 0, 1]));
    }
}

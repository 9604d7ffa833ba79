//! A call's RTP or RTCP socket. The media thread sends on it directly; a
//! tokio task reads it. It is registered with the reactor for reading
//! only: a tokio `UdpSocket` also asks for write readiness, and then every
//! datagram sent wakes the reactor when the kernel frees its buffer (on
//! loopback at once), which at 2,000 streams was 100,000 wake-ups a second,
//! a fifth of a core on a tokio worker and the wake-up itself on the media
//! thread, between two sends of one burst.

use std::io;
use std::net::SocketAddr;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

#[derive(Debug)]
pub struct RtpSocket {
    fd: AsyncFd<std::net::UdpSocket>,
}

impl RtpSocket {
    /// Bind `addr` (non-blocking, read interest only). Must be called
    /// inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<RtpSocket> {
        RtpSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    pub fn from_std(s: std::net::UdpSocket) -> io::Result<RtpSocket> {
        s.set_nonblocking(true)?;
        // SAFETY: a `std::net::UdpSocket` owns its descriptor and closes it
        // only when dropped, which the `AsyncFd` does last; nothing here
        // replaces the descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE)? };
        Ok(RtpSocket { fd })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Send without waiting: a full buffer drops the datagram
    /// (`WouldBlock`), as late audio is no use to anyone.
    pub fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(buf, to)
    }

    /// Wait for a datagram. Through tokio's I/O budget: a socket kept full
    /// by a flood still lets the worker run other tasks (and this one's
    /// abort land) every so many reads.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.fd
            .async_io(Interest::READABLE, |s| s.recv_from(buf))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sends_and_receives_without_write_interest() {
        let a = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        for i in 0..50u8 {
            assert_eq!(a.try_send_to(&[i; 172], to).unwrap(), 172);
        }
        let mut buf = [0u8; 2048];
        for i in 0..50u8 {
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), b.recv_from(&mut buf))
                .await
                .expect("datagram within 5 s")
                .unwrap();
            assert_eq!((n, from, buf[0]), (172, a.local_addr().unwrap(), i));
        }
        // Nothing more: the reader waits instead of spinning or failing.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.recv_from(&mut buf))
                .await
                .is_err()
        );
    }
}

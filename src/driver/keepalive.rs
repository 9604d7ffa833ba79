//! The tokio side of trunk keepalive: one task per trunk, with its own UDP
//! socket (or, for a TCP/TLS trunk, its own connections, one per address,
//! kept and reused like the calls'), runs a [`Probe`] per resolved address
//! (re-resolving as the DNS TTLs say) and writes what they find to the
//! shared [`Board`]. Its own socket keeps the probes out of the call
//! endpoint (and its flood limits); the addresses it reports are those the
//! calls are sent to, over the transport the calls use.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::sip::keepalive::{Board, Health, KeepaliveConfig, Probe};
use crate::sip::message::{parse, Message};
use crate::sip::transport::{Transport, TrunkTransport};

use super::stream::{StreamEvent, Streams};

/// Probe the proxies of trunk `name` (configured strings, resolved here
/// and again when their DNS answers expire) from a socket on `bind_ip`,
/// until `stop`. `advertise` (when set) is the address written in
/// Via/From. A trunk whose `transport` is TCP or TLS is probed over it
/// (TLS with its name and CA checked); otherwise over UDP.
#[allow(clippy::too_many_arguments)]
pub async fn spawn(
    name: String,
    proxies: Vec<String>,
    bind_ip: IpAddr,
    advertise: Option<IpAddr>,
    transport: TrunkTransport,
    cfg: KeepaliveConfig,
    board: Arc<Board>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let k = Keepalive {
        name,
        proxies,
        advertise,
        transport: transport.transport.unwrap_or(Transport::Udp),
        tls: transport.tls,
        streams: Streams::new(tx),
        cfg,
        board,
        bound: socket.local_addr()?,
        probes: HashMap::new(),
        resolve_at: Instant::now(),
    };
    Ok(tokio::spawn(k.run(socket, rx, stop)))
}

struct Keepalive {
    name: String,
    proxies: Vec<String>,
    advertise: Option<IpAddr>,
    transport: Transport,
    tls: Option<crate::sip::transport::TlsSettings>,
    /// The probes' connections when `transport` is TCP or TLS.
    streams: Streams,
    cfg: KeepaliveConfig,
    board: Arc<Board>,
    bound: SocketAddr,
    probes: HashMap<String, Probe>,
    resolve_at: Instant,
}

impl Keepalive {
    /// Resolve the proxies again; probe new addresses, drop gone ones.
    /// A failed lookup keeps what was there and tries again in 2 s.
    async fn refresh(&mut self) {
        let mut addrs = Vec::new();
        let mut until = Instant::now() + Duration::from_secs(300);
        for p in &self.proxies {
            match super::resolve::resolve_for(p, Some(self.transport)).await {
                Ok(r) => {
                    until = until.min(r.valid_until);
                    addrs.extend(r.addrs);
                }
                Err(e) => {
                    tracing::warn!(trunk = %self.name, proxy = %p, error = %e, "keepalive: cannot resolve");
                    self.resolve_at = Instant::now() + Duration::from_secs(2);
                    return;
                }
            }
        }
        self.resolve_at = until;
        let now = Instant::now();
        self.probes.retain(|_, p| addrs.contains(&p.target()));
        self.board.retain(&self.name, &addrs);
        for (i, t) in addrs.iter().enumerate() {
            if self.probes.values().any(|p| p.target() == *t) {
                continue;
            }
            let local_ip = match self.advertise {
                Some(ip) => ip,
                None if self.bound.ip().is_unspecified() => {
                    super::net::route_source(*t).unwrap_or(self.bound.ip())
                }
                None => self.bound.ip(),
            };
            let local = SocketAddr::new(local_ip, self.bound.port());
            let tag: u64 = rand::random();
            let call_id = format!("ka-{tag:016x}-{i}@callout");
            self.board.set(&self.name, *t, Health::Unknown);
            let p = Probe::new(
                now,
                self.cfg,
                *t,
                local,
                format!("sip:{t}"),
                call_id.clone(),
                format!("{tag:x}"),
            )
            .with_transport(now, self.transport);
            if self.transport == Transport::Tls {
                if let Some(tls) = &self.tls {
                    self.streams.set_tls(*t, tls.clone());
                }
            }
            self.probes.insert(call_id, p);
        }
    }

    /// A response for one of our probes (matched by Call-ID).
    fn on_response(&mut self, bytes: &[u8]) {
        if let Ok(Message::Response(resp)) = parse(bytes) {
            let cid = resp.headers.get("Call-ID").unwrap_or_default().to_string();
            if let Some(p) = self.probes.get_mut(&cid) {
                p.handle_response(Instant::now(), &resp);
            }
        }
    }

    async fn run(
        mut self,
        socket: UdpSocket,
        mut streams: tokio::sync::mpsc::UnboundedReceiver<StreamEvent>,
        stop: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65536];
        loop {
            if Instant::now() >= self.resolve_at {
                self.refresh().await;
            }
            for p in self.probes.values_mut() {
                while let Some(t) = p.poll_transmit() {
                    if p.transport().is_reliable() {
                        // A connection that cannot be made answers with a
                        // local 503 (below): a miss, as a silent UDP peer.
                        self.streams.send(p.transport(), t.dest, t.bytes);
                    } else if let Err(e) = socket.send_to(&t.bytes, t.dest).await {
                        tracing::debug!(trunk = %self.name, dest = %t.dest, error = %e, "keepalive send failed");
                    }
                }
                while let Some(h) = p.poll_change() {
                    match h {
                        Health::Down => {
                            tracing::warn!(trunk = %self.name, address = %p.target(), "trunk address down (OPTIONS not answered)")
                        }
                        _ => {
                            tracing::info!(trunk = %self.name, address = %p.target(), "trunk address up")
                        }
                    }
                    self.board.set(&self.name, p.target(), h);
                }
            }
            let wake = self
                .probes
                .values()
                .map(Probe::poll_timeout)
                .chain(std::iter::once(self.resolve_at))
                .min();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                r = socket.recv_from(&mut buf) => {
                    // ICMP port unreachable from a dead address surfaces here.
                    let Ok((n, _)) = r else { continue };
                    self.on_response(&buf[..n]);
                }
                Some(ev) = streams.recv() => {
                    for (_, _, bytes) in self.streams.on_event(ev) {
                        self.on_response(&bytes);
                    }
                }
                _ = sleep => {
                    let now = Instant::now();
                    for p in self.probes.values_mut() {
                        p.handle_timeout(now);
                    }
                }
            }
        }
    }
}

//! The tokio side of trunk keepalive: one task per trunk, with its own UDP
//! socket, runs a [`Probe`] per address and writes what they find to the
//! shared [`Board`]. Its own socket keeps the probes out of the call
//! endpoint (and its flood limits); the addresses it reports are those the
//! calls are sent to.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::sip::keepalive::{Board, Health, KeepaliveConfig, Probe};
use crate::sip::message::{parse, Message};

/// Probe `targets` of trunk `name` from a socket on `bind_ip`, until
/// `stop`. `advertise` (when set) is the address written in Via/From.
pub async fn spawn(
    name: String,
    targets: Vec<SocketAddr>,
    bind_ip: IpAddr,
    advertise: Option<IpAddr>,
    cfg: KeepaliveConfig,
    board: Arc<Board>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let bound = socket.local_addr()?;
    let now = Instant::now();
    let mut probes: HashMap<String, Probe> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        let local_ip = match advertise {
            Some(ip) => ip,
            None if bound.ip().is_unspecified() => {
                super::net::route_source(*t).unwrap_or(bound.ip())
            }
            None => bound.ip(),
        };
        let local = SocketAddr::new(local_ip, bound.port());
        let tag: u64 = rand::random();
        let call_id = format!("ka-{tag:016x}-{i}@callout");
        board.set(&name, *t, Health::Unknown);
        let p = Probe::new(
            now,
            cfg,
            *t,
            local,
            format!("sip:{t}"),
            call_id.clone(),
            format!("{tag:x}"),
        );
        probes.insert(call_id, p);
    }
    Ok(tokio::spawn(run(name, socket, probes, board, stop)))
}

async fn run(
    name: String,
    socket: UdpSocket,
    mut probes: HashMap<String, Probe>,
    board: Arc<Board>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        for p in probes.values_mut() {
            while let Some(t) = p.poll_transmit() {
                if let Err(e) = socket.send_to(&t.bytes, t.dest).await {
                    tracing::debug!(trunk = %name, dest = %t.dest, error = %e, "keepalive send failed");
                }
            }
            while let Some(h) = p.poll_change() {
                match h {
                    Health::Down => {
                        tracing::warn!(trunk = %name, address = %p.target(), "trunk address down (OPTIONS not answered)")
                    }
                    _ => tracing::info!(trunk = %name, address = %p.target(), "trunk address up"),
                }
                board.set(&name, p.target(), h);
            }
        }
        let wake = probes.values().map(Probe::poll_timeout).min();
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
                if let Ok(Message::Response(resp)) = parse(&buf[..n]) {
                    let cid = resp.headers.get("Call-ID").unwrap_or_default().to_string();
                    if let Some(p) = probes.get_mut(&cid) {
                        p.handle_response(Instant::now(), &resp);
                    }
                }
            }
            _ = sleep => {
                let now = Instant::now();
                for p in probes.values_mut() {
                    p.handle_timeout(now);
                }
            }
        }
    }
}

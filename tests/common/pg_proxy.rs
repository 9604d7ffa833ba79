//! A TCP proxy between one node and PostgreSQL that the test partitions:
//! `cut` drops every connection and refuses new ones (the node sees
//! errors at once); `stalled` holds every byte in both directions, new
//! connections included, until it is lifted (the node's queries hang, as
//! across a partition that drops packets), then delivers them in order.
//! `stall_at` arms the stall for the moment the node sends a given
//! message (a transaction's `BEGIN`), so a write is caught in flight.
#![allow(dead_code)]

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Open,
    /// Open until the node sends these bytes, then stalled.
    Armed(Vec<u8>),
    Stalled,
    Cut,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
}

impl Proxy {
    /// Listen on a loopback port, forwarding to `upstream` (`host:port`).
    pub fn start(rt: &tokio::runtime::Runtime, upstream: String) -> Proxy {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(watch::channel(Mode::Open).0);
        let m = mode.clone();
        rt.spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                if *m.borrow() == Mode::Cut {
                    continue; // dropped: refused
                }
                let upstream = upstream.clone();
                let m = m.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (down_r, down_w) = down.into_split();
                    let (up_r, up_w) = up.into_split();
                    let mut cut = m.subscribe();
                    tokio::select! {
                        _ = pump(down_r, up_w, m.clone(), true) => {}
                        _ = pump(up_r, down_w, m.clone(), false) => {}
                        _ = cut.wait_for(|m| *m == Mode::Cut) => {}
                    }
                });
            }
        });
        Proxy { port, mode }
    }

    /// Cut (every connection dropped, new ones refused) or heal.
    pub fn set_cut(&self, cut: bool) {
        self.mode
            .send_replace(if cut { Mode::Cut } else { Mode::Open });
    }

    /// Hold every byte (or deliver what was held and go on).
    pub fn set_stalled(&self, stalled: bool) {
        self.mode
            .send_replace(if stalled { Mode::Stalled } else { Mode::Open });
    }

    /// Stall everything as soon as the node sends `bytes` (held too).
    pub fn stall_at(&self, bytes: &[u8]) {
        self.mode.send_replace(Mode::Armed(bytes.to_vec()));
    }

    pub fn is_stalled(&self) -> bool {
        *self.mode.borrow() == Mode::Stalled
    }
}

/// Copy one direction, holding each chunk while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<watch::Sender<Mode>>,
    from_node: bool,
) {
    let mut rx = mode.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // Even the close waits for the partition to heal.
                let _ = rx.wait_for(|m| *m != Mode::Stalled).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if from_node {
            mode.send_if_modified(|m| match m {
                Mode::Armed(p) if buf[..n].windows(p.len()).any(|w| w == &p[..]) => {
                    *m = Mode::Stalled;
                    true
                }
                _ => false,
            });
        }
        if rx.wait_for(|m| *m != Mode::Stalled).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
pub fn upstream(url: &str) -> String {
    url.split_once('@')
        .map_or(url, |(_, r)| r)
        .trim_start_matches("postgres://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// `url` (on database `db`) through a proxy listening on `port`.
pub fn through(url: &str, port: u16, db: &str) -> String {
    format!(
        "{}@127.0.0.1:{port}/{db}",
        url.split_once('@')
            .map_or("postgres://postgres", |(l, _)| l)
    )
}

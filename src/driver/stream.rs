//! SIP over TCP and TLS: one connection per peer and transport, opened on
//! the first message to it and kept for the next ones; connections peers
//! open to our listener are kept the same way, so what we send back to
//! them goes on the connection their request came on. Each connection is
//! a task framing its input (`sip::transport::Framer`) and handing whole
//! messages to the SIP task; bad framing closes it with a log line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

use crate::sip::transport::{Framer, TlsSettings, Transport};

/// Connections open at once from peers to our listener, at most.
const MAX_INBOUND: usize = 1024;
/// An inbound connection that sends no whole message for this long is
/// closed (a stalled or hostile client holds nothing for long).
const INBOUND_IDLE: Duration = Duration::from_secs(120);
/// Time to connect and finish the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What connections report to the SIP task.
pub enum StreamEvent {
    /// A whole message, framed.
    Message {
        from: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    },
    /// A peer connected to our listener: send to it through `writer`.
    Opened {
        peer: SocketAddr,
        transport: Transport,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    /// The connection ended; `unsent` were queued for it and never
    /// written (the connection could not be made, or broke).
    Closed {
        peer: SocketAddr,
        transport: Transport,
        unsent: Vec<Vec<u8>>,
    },
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<Vec<u8>> {
    rx.close();
    let mut out = Vec::new();
    while let Ok(b) = rx.try_recv() {
        out.push(b);
    }
    out
}

/// Why a TLS client configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
}

/// The rustls client configuration of a trunk: its CA file or the public
/// roots, and its client certificate when set.
pub fn client_config(s: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).map_err(|source| TlsConfigError::Read {
            path: p.clone(),
            source,
        })
    };
    let mut roots = rustls::RootCertStore::empty();
    match &s.ca_file {
        Some(path) => {
            for c in CertificateDer::pem_slice_iter(&read(path)?) {
                let c = c.map_err(|e| TlsConfigError::Tls(format!("{}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| TlsConfigError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(TlsConfigError::Tls(format!(
                    "{}: no certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsConfigError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    let config = match (&s.client_cert, &s.client_key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| TlsConfigError::Tls(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| TlsConfigError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsConfigError::Tls(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsConfigError::Tls(
                "tls_cert_file and tls_key_file go together".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}

/// The connections of the SIP task. Lives in that task (no locking).
pub struct Streams {
    conns: HashMap<(Transport, SocketAddr), mpsc::UnboundedSender<Vec<u8>>>,
    /// TLS client settings by peer, set by each call's trunk.
    tls: HashMap<SocketAddr, TlsSettings>,
    configs: HashMap<TlsSettings, Arc<rustls::ClientConfig>>,
    events: mpsc::UnboundedSender<StreamEvent>,
    inbound: Arc<tokio::sync::Semaphore>,
}

impl Streams {
    pub fn new(events: mpsc::UnboundedSender<StreamEvent>) -> Streams {
        Streams {
            conns: HashMap::new(),
            tls: HashMap::new(),
            configs: HashMap::new(),
            events,
            inbound: Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND)),
        }
    }

    /// TLS connections to `peer` use `settings` (name checked, CA).
    pub fn set_tls(&mut self, peer: SocketAddr, settings: TlsSettings) {
        self.tls.insert(peer, settings);
    }

    /// Connections open now (both directions), for tests and metrics.
    pub fn open(&self) -> usize {
        self.conns.values().filter(|c| !c.is_closed()).count()
    }

    /// Send `bytes` to `dest` on `transport` (not UDP): on the open
    /// connection, else on a new one (queued until it is up).
    pub fn send(&mut self, transport: Transport, dest: SocketAddr, bytes: Vec<u8>) {
        let key = (transport, dest);
        let bytes = match self.conns.get(&key) {
            Some(tx) => match tx.send(bytes) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => bytes,
        };
        let tls = if transport == Transport::Tls {
            let Some(settings) = self.tls.get(&dest).cloned() else {
                tracing::warn!(%dest, "sip tls: no TLS settings for this peer; not sending");
                return;
            };
            let config = match self.configs.get(&settings) {
                Some(c) => c.clone(),
                None => match client_config(&settings) {
                    Ok(c) => {
                        self.configs.insert(settings.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::error!(%dest, error = %e, "sip tls: cannot configure; not sending");
                        return;
                    }
                },
            };
            Some((settings.server_name, config))
        } else {
            None
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _ = tx.send(bytes);
        self.conns.insert(key, tx);
        let events = self.events.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(CONNECT_TIMEOUT, connect(dest, tls)).await;
            match r {
                Ok(Ok(Conn::Tcp(s))) => serve(s, dest, transport, rx, events, None).await,
                Ok(Ok(Conn::Tls(s))) => serve(*s, dest, transport, rx, events, None).await,
                Ok(Err(e)) => {
                    tracing::warn!(%dest, %transport, error = %e, "sip connection failed");
                    let unsent = drain(&mut rx);
                    let _ = events.send(StreamEvent::Closed {
                        peer: dest,
                        transport,
                        unsent,
                    });
                }
                Err(_) => {
                    tracing::warn!(%dest, %transport, "sip connection timed out");
                    let unsent = drain(&mut rx);
                    let _ = events.send(StreamEvent::Closed {
                        peer: dest,
                        transport,
                        unsent,
                    });
                }
            }
        });
    }

    /// Feed a connection event; returns the messages to hand to the
    /// endpoint: one received, or the 503s standing for requests that
    /// could not be sent.
    pub fn on_event(&mut self, ev: StreamEvent) -> Vec<(SocketAddr, Transport, Vec<u8>)> {
        match ev {
            StreamEvent::Message {
                from,
                transport,
                bytes,
            } => vec![(from, transport, bytes)],
            StreamEvent::Opened {
                peer,
                transport,
                writer,
            } => {
                self.conns.insert((transport, peer), writer);
                Vec::new()
            }
            StreamEvent::Closed {
                peer,
                transport,
                unsent,
            } => {
                if self
                    .conns
                    .get(&(transport, peer))
                    .is_some_and(|c| c.is_closed())
                {
                    self.conns.remove(&(transport, peer));
                }
                unsent
                    .iter()
                    .filter_map(|b| crate::sip::transport::transport_error_response(b))
                    .map(|r| (peer, transport, r))
                    .collect()
            }
        }
    }

    /// Accept TCP connections on `listener` for as long as the SIP task
    /// lives.
    pub fn listen_tcp(&self, listener: TcpListener) {
        let events = self.events.clone();
        let inbound = self.inbound.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "sip tcp accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if events.is_closed() {
                    return;
                }
                let Ok(permit) = inbound.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "sip tcp: too many connections; refused");
                    continue;
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = events.send(StreamEvent::Opened {
                    peer,
                    transport: Transport::Tcp,
                    writer: tx,
                });
                let ev = events.clone();
                tokio::spawn(async move {
                    serve(stream, peer, Transport::Tcp, rx, ev, Some(INBOUND_IDLE)).await;
                    drop(permit);
                });
            }
        });
    }
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(
    dest: SocketAddr,
    tls: Option<(String, Arc<rustls::ClientConfig>)>,
) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(dest).await?;
    let _ = tcp.set_nodelay(true);
    let Some((name, config)) = tls else {
        return Ok(Conn::Tcp(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Conn::Tls(Box::new(s)))
}

/// Run one connection: write what the SIP task queues, read and frame
/// what arrives. Ends on close, error, bad framing, or `idle` without a
/// whole message.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<StreamEvent>,
    idle: Option<Duration>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut deadline = idle.map(|d| tokio::time::Instant::now() + d);
    loop {
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = rx.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        tracing::warn!(%peer, %transport, error = %e, "sip stream write failed; closing");
                        break;
                    }
                }
                None => break,
            },
            r = rd.read(&mut buf) => match r {
                Ok(0) => {
                    if framer.pending() > 0 {
                        tracing::info!(%peer, %transport, pending = framer.pending(), "sip stream closed inside a message");
                    }
                    break;
                }
                Ok(n) => {
                    framer.push(&buf[..n]);
                    let mut bad = false;
                    loop {
                        match framer.next_message() {
                            Ok(Some(bytes)) => {
                                deadline = idle.map(|d| tokio::time::Instant::now() + d);
                                let _ = events.send(StreamEvent::Message { from: peer, transport, bytes });
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(%peer, %transport, error = %e, "sip stream framing broken; closing the connection");
                                bad = true;
                                break;
                            }
                        }
                    }
                    if bad {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!(%peer, %transport, error = %e, "sip stream read failed; closing");
                    break;
                }
            },
            _ = sleep => {
                tracing::info!(%peer, %transport, "sip stream idle; closing");
                break;
            }
        }
    }
    let unsent = drain(&mut rx);
    let _ = wr.shutdown().await;
    let _ = events.send(StreamEvent::Closed {
        peer,
        transport,
        unsent,
    });
}

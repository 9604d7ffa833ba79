//! The SMTP listener (`[intake.smtp]`): a thin tokio driver around
//! [`Session`](super::smtp_session::Session), one task per connection.
//! Mail is accepted only for recipients the [`MailSink`] knows (others
//! get 550 at RCPT: never a relay), and the 250 after DATA is sent only
//! once the sink has stored the message durably; a failed store is a 451
//! and the client retries. STARTTLS is offered when a certificate and
//! key are configured.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::smtp_session::{Output, Session, SessionConfig};

/// `[intake.smtp]` in callout.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Where to listen, e.g. `127.0.0.1:2525`.
    pub listen: String,
    /// Our name in the greeting and EHLO answer.
    pub hostname: String,
    /// Largest message in bytes (advertised as SIZE; more is 552).
    pub max_size: usize,
    pub max_recipients: usize,
    /// Connections served at once; more get 421 and are closed.
    pub max_connections: usize,
    /// Failed commands before a connection is closed.
    pub max_errors: usize,
    /// Waiting for a command (RFC 5321 says at least 5 min).
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Waiting for the next bytes of a message (RFC 5321: 3 min).
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
    /// PEM certificate chain and key: both set offers STARTTLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: "127.0.0.1:2525".into(),
            hostname: "localhost".into(),
            max_size: 10 << 20,
            max_recipients: 100,
            max_connections: 100,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let v = crate::util::parse_duration(&s).map_err(serde::de::Error::custom)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("the duration must be more than 0"));
    }
    Ok(v)
}

/// One accepted message, handed to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMail {
    /// The envelope sender (empty for `<>`).
    pub from: String,
    /// Each recipient (lower case) with its contract.
    pub rcpts: Vec<(String, String)>,
    /// The message as received (dot-unstuffed).
    pub raw: Vec<u8>,
    /// When the final dot arrived (epoch ms).
    pub received_ms: i64,
}

/// What [`MailSink::deliver`] returns.
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where accepted mail goes (the pipeline's store).
pub trait MailSink: Send + Sync {
    /// The contract a recipient address (lower case) belongs to; `None`
    /// refuses it at RCPT.
    fn contract_for(&self, rcpt: &str) -> Option<String>;
    /// Store the mail durably; `Ok` only once it is (the client gets
    /// its 250 then). An `Err` is logged and answered 451.
    fn deliver(&self, mail: InboundMail) -> DeliverFuture<'_>;
}

/// Why [`tls_acceptor`] could not load the certificate.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("smtp tls: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("smtp tls: {0}")]
    Tls(String),
    #[error("smtp: tls_cert and tls_key go together")]
    HalfTls,
}

/// The STARTTLS acceptor from `tls_cert` / `tls_key`, `None` without
/// them.
pub fn tls_acceptor(cfg: &SmtpConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, SmtpError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(SmtpError::HalfTls),
    };
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| SmtpError::Read {
            path: p.clone(),
            source,
        })
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| SmtpError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| SmtpError::Tls(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SmtpError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| SmtpError::Tls(e.to_string()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Serve SMTP on `listener` until `shutdown`; then stop accepting and
/// wait for the open connections (each bounded by its timeouts). A
/// certificate that does not load is logged and STARTTLS not offered.
pub async fn serve(
    listener: TcpListener,
    cfg: SmtpConfig,
    sink: Arc<dyn MailSink>,
    shutdown: CancellationToken,
) {
    let tls = match tls_acceptor(&cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}; STARTTLS not offered");
            None
        }
    };
    let session_cfg = SessionConfig {
        hostname: cfg.hostname.clone(),
        max_size: cfg.max_size,
        max_recipients: cfg.max_recipients.max(1),
        max_errors: cfg.max_errors.max(1),
        tls_available: tls.is_some(),
        command_timeout: cfg.command_timeout,
        data_timeout: cfg.data_timeout,
    };
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::warn!("smtp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracker.spawn(async move {
                let mut tcp = tcp;
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    tcp.write_all(b"421 4.3.2 Too many connections, try again later\r\n"),
                )
                .await;
            });
            continue;
        };
        let (sink, tls, cfg, shutdown) = (
            sink.clone(),
            tls.clone(),
            session_cfg.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            let _permit = permit;
            tracing::debug!(%peer, "smtp connection");
            connection(tcp, Session::new(cfg), &*sink, tls, shutdown).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    mut tcp: TcpStream,
    mut session: Session,
    sink: &dyn MailSink,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    if !matches!(
        drive(&mut tcp, &mut session, sink, &shutdown).await,
        Step::StartTls
    ) {
        return;
    }
    let Some(acceptor) = tls else { return };
    let timeout = session.timeout();
    let mut tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!("smtp tls handshake: {e}");
            return;
        }
        Err(_) => return,
    };
    session.tls_started();
    drive(&mut tls, &mut session, sink, &shutdown).await;
    let _ = tls.shutdown().await;
}

enum Step {
    Closed,
    StartTls,
}

/// Run the session over `io` until it closes, the client goes away, or
/// it asks for TLS.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    session: &mut Session,
    sink: &dyn MailSink,
    shutdown: &CancellationToken,
) -> Step {
    let mut buf = vec![0u8; 16 << 10];
    let resolve = |rcpt: &str| sink.contract_for(rcpt);
    loop {
        while let Some(out) = session.poll_output(&resolve) {
            match out {
                Output::Reply(bytes) => {
                    let w = tokio::time::timeout(session.timeout(), io.write_all(&bytes)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        return Step::Closed;
                    }
                }
                Output::Deliver(env) => {
                    let mail = InboundMail {
                        from: env.from,
                        rcpts: env.rcpts,
                        raw: env.data,
                        received_ms: chrono::Utc::now().timestamp_millis(),
                    };
                    let r = sink.deliver(mail).await;
                    if let Err(e) = &r {
                        tracing::warn!("smtp: storing a mail failed (451 sent): {e}");
                    }
                    session.delivered(r);
                }
                Output::StartTls => {
                    let _ = io.flush().await;
                    return Step::StartTls;
                }
                Output::Close => {
                    let _ = io.flush().await;
                    return Step::Closed;
                }
            }
        }
        let _ = io.flush().await;
        let read = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = io.write_all(b"421 4.3.2 Service shutting down\r\n").await;
                return Step::Closed;
            }
            r = tokio::time::timeout(session.timeout(), io.read(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Step::Closed,
            Ok(Ok(n)) => session.handle_bytes(&buf[..n]),
            Err(_) => session.handle_timeout(),
        }
    }
}

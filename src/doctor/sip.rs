//! SIP probes for `callout doctor`: an OPTIONS ping and a test
//! registration, each on its own connected UDP socket, driving the same
//! sans-IO transaction and registration code the service uses.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::net::UdpSocket;

use crate::sip::auth::Credentials;
use crate::sip::message::{parse, Message, Method, Request, Response};
use crate::sip::register::{RegEvent, Registration, RegistrationConfig};
use crate::sip::transaction::{NonInviteClient, Timers, TxOutput};

/// Why a probe got no final answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("nothing listens there (ICMP port unreachable)")]
    Refused,
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Retransmit quickly: a probe should answer in seconds, not Timer F's 32.
fn timers() -> Timers {
    Timers {
        t1: Duration::from_millis(250),
        t2: Duration::from_secs(1),
        t4: Duration::from_secs(1),
        reliable: false,
    }
}

fn token() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// A socket on `local_ip` (unspecified: any) connected to `target`, so an
/// ICMP "port unreachable" comes back as an error at once.
async fn socket(local_ip: IpAddr, target: SocketAddr) -> Result<UdpSocket, ProbeError> {
    let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    sock.connect(target).await?;
    Ok(sock)
}

async fn recv_response(sock: &UdpSocket, buf: &mut [u8]) -> Result<Option<Response>, ProbeError> {
    match sock.recv(buf).await {
        Ok(n) => Ok(match parse(&buf[..n]) {
            Ok(Message::Response(r)) => Some(r),
            _ => None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(ProbeError::Refused),
        Err(e) => Err(e.into()),
    }
}

fn io(e: std::io::Error) -> ProbeError {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        ProbeError::Refused
    } else {
        ProbeError::Io(e)
    }
}

/// Send OPTIONS to `target`; the final response (any code: a 404 or 405
/// still proves a SIP server answers) and how long it took.
pub async fn options(
    local_ip: IpAddr,
    target: SocketAddr,
    limit: Duration,
) -> Result<(Response, Duration), ProbeError> {
    let sock = socket(local_ip, target).await?;
    let local = sock.local_addr()?;
    let mut req = Request::new(Method::Options, format!("sip:{target}"));
    req.headers.push(
        "Via",
        format!("SIP/2.0/UDP {local};branch=z9hG4bK{};rport", token()),
    );
    req.headers.push("Max-Forwards", "70");
    req.headers
        .push("From", format!("<sip:callout@{local}>;tag={}", token()));
    req.headers.push("To", format!("<sip:{target}>"));
    req.headers
        .push("Call-ID", format!("{}@callout-doctor", token()));
    req.headers.push("CSeq", "1 OPTIONS");
    req.headers.push("Accept", "application/sdp");
    let started = Instant::now();
    let mut tx = NonInviteClient::new(started, &req, timers());
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        while let Some(bytes) = tx.poll_transmit() {
            sock.send(&bytes).await.map_err(io)?;
        }
        while let Some(out) = tx.poll_output() {
            match out {
                TxOutput::Response(r) if r.code >= 200 => return Ok((r, started.elapsed())),
                TxOutput::Response(_) => {}
                TxOutput::Timeout => return Err(ProbeError::NoAnswer(started.elapsed())),
            }
        }
        let wake = tx
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(t).min(deadline))
            .unwrap_or(deadline);
        tokio::select! {
            r = recv_response(&sock, &mut buf) => {
                if let Some(r) = r? {
                    tx.handle_response(Instant::now(), r);
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ProbeError::NoAnswer(limit));
                }
                tx.handle_timeout(Instant::now());
            }
        }
    }
}

/// What a test registration ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Granted for this many seconds (and removed again).
    Registered { expires: u32 },
    /// Refused with this code (403 or a second 401: the credentials).
    Refused { code: u16 },
}

/// Register `aor` at `registrar`, then remove the binding again.
pub async fn register(
    local_ip: IpAddr,
    registrar: SocketAddr,
    registrar_uri: String,
    aor: String,
    credentials: Option<Credentials>,
    limit: Duration,
) -> Result<RegisterOutcome, ProbeError> {
    let sock = socket(local_ip, registrar).await?;
    let local = sock.local_addr()?;
    let cfg = RegistrationConfig {
        registrar_uri,
        aor,
        destination: registrar,
        local,
        credentials,
        expires: 60,
        timers: timers(),
    };
    let mut reg = Registration::new(
        Instant::now(),
        cfg,
        format!("{}@callout-doctor", token()),
        token(),
        token(),
    );
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + limit;
    let mut outcome = None;
    loop {
        while let Some(t) = reg.poll_transmit() {
            sock.send(&t.bytes).await.map_err(io)?;
        }
        while let Some(ev) = reg.poll_event() {
            match (ev, &outcome) {
                (RegEvent::Registered { expires }, None) => {
                    outcome = Some(RegisterOutcome::Registered { expires });
                    reg.unregister(Instant::now());
                }
                // The binding is gone (or the registrar did not say): done.
                (_, Some(o)) => return Ok(o.clone()),
                (RegEvent::Failed { code: Some(code) }, None) => {
                    return Ok(RegisterOutcome::Refused { code })
                }
                (RegEvent::Failed { code: None }, None) => return Err(ProbeError::NoAnswer(limit)),
                // Followed by a new REGISTER, or by `Failed`.
                (RegEvent::IntervalRaised { .. } | RegEvent::RealmRefused { .. }, None) => {}
            }
        }
        while let Some(t) = reg.poll_transmit() {
            sock.send(&t.bytes).await.map_err(io)?;
        }
        let wake = reg
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(t).min(deadline))
            .unwrap_or(deadline);
        tokio::select! {
            r = recv_response(&sock, &mut buf) => {
                match r {
                    Ok(Some(r)) => reg.handle_response(Instant::now(), r),
                    Ok(None) => {}
                    Err(e) => return match outcome { Some(o) => Ok(o), None => Err(e) },
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    return match outcome {
                        Some(o) => Ok(o),
                        None => Err(ProbeError::NoAnswer(limit)),
                    };
                }
                reg.handle_timeout(Instant::now());
            }
        }
    }
}

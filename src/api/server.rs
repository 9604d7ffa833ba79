//! The HTTP listener: hyper's HTTP/1.1 connections with a header timeout,
//! an idle timeout and a bound on how many are held at once (the body
//! timeout is a layer of the router, see `error::read_body`). Without
//! them, slow or silent clients keep connections open until the process
//! runs out of file descriptors and the probes and alerts time out.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Raise the soft open-file limit to the hard one where the system allows,
/// and return the soft limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct
    // passed by reference.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    // Linux refuses more than fs.nr_open (1,048,576 by default) and
    // RLIM_INFINITY for this resource.
    let want = r.rlim_max.min(1 << 20);
    if r.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: r.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r.rlim_cur = want;
        }
    }
    Some(r.rlim_cur)
}

/// How many connections to hold at once with `nofile` descriptors: the
/// configured number or a quarter of them (at most 1024), never more than
/// half, so calls, the database, speech and webhooks keep theirs.
pub fn connection_limit(configured: Option<usize>, nofile: u64) -> usize {
    let ceiling = (nofile / 2).max(1) as usize;
    match configured {
        Some(n) if n > ceiling => {
            tracing::warn!(
                configured = n,
                limit = ceiling,
                open_files = nofile,
                "http.max_connections lowered to half the open-file limit"
            );
            ceiling
        }
        Some(n) => n.max(1),
        None => ((nofile / 4) as usize).clamp(1, 1024),
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// being handled.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that records when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serve `app` on `listener` until `shutdown` is cancelled, then let the
/// open requests finish (at most `drain`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    http: HttpConfig,
    max_connections: usize,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // Take a slot before accepting: at the limit, new clients wait in
        // the kernel's listen queue instead of costing a descriptor here.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        });
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let a2 = activity.clone();
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InFlight::new(a2.clone());
            let app = app.clone();
            async move {
                let r = app.oneshot(req.map(axum::body::Body::new)).await;
                drop(guard);
                r
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(http.header_timeout)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        let idle = http.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            loop {
                let deadline = activity.last() + idle;
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        if activity.in_flight.load(Ordering::Relaxed) == 0
                            && activity.last() + idle <= Instant::now()
                        {
                            tracing::debug!(%peer, "closing an idle connection");
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still open at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_stays_below_the_descriptors() {
        assert_eq!(connection_limit(None, 1024), 256);
        assert_eq!(connection_limit(None, 1 << 20), 1024);
        assert_eq!(connection_limit(Some(5000), 1024), 512);
        assert_eq!(connection_limit(Some(100), 1024), 100);
        assert!(raise_nofile_limit().is_some_and(|n| n > 0));
    }
}

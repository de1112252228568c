//! What one web connection may cost in time: the deadlines hyper does not keep by itself.
//!
//! Threat: a client (or many) that opens connections and sends nothing, or keeps an HTTP/2
//! connection alive with pings and no requests, or stops reading a download: each holds one of
//! the gateway's connection slots, and 128 of them shut everyone else out. hyper's own header
//! timeout covers only an HTTP/1.1 connection once it is known to be one; the version sniffing
//! before that, HTTP/2, and a response nobody reads have no deadline at all.
//!
//! Answer: every connection is watched ([`Watch`]) for three states, each with a deadline:
//! - no request yet: the first request's head must have arrived within
//!   [`super::WebConfig::header_timeout`] of the connection's start (after TLS);
//! - between requests (keep-alive): closed after [`super::WebConfig::idle_timeout`] with no
//!   request running (HTTP/1.1 also has hyper's header timeout between requests);
//! - a response being sent and no handler running: closed when no byte has moved either way for
//!   [`super::WebConfig::stall_timeout`] (plus a little, so that an upload's own `408` wins).
//!
//! While a handler runs, the handler's own limits apply (an upload's stall and minimum rate).
//! Not here: the number of connections (`super::run`, with [`crate::server`]'s per-address
//! count), the handlers' limits.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::WebConfig;

/// What a stalled response gets beyond the stall timeout, so that a handler's own timeout (and
/// its `408`) comes first.
const STALL_GRACE: Duration = Duration::from_secs(5);

/// The activity of one connection, shared by its stream, its service and its watchdog.
#[derive(Debug)]
pub(super) struct Watch {
    start: Instant,
    /// Milliseconds from `start` to the last time a byte moved or a request began or ended.
    last: AtomicU64,
    /// Requests begun on this connection.
    requests: AtomicU64,
    /// Handlers running (from the request's arrival to its response's head).
    handlers: AtomicUsize,
    /// Response bodies not yet sent (or dropped).
    bodies: AtomicUsize,
}

/// What the watchdog decides at a deadline.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Something happened since: wait until this instant.
    WaitUntil(Instant),
    /// Nothing running and quiet for too long: close politely.
    Idle,
    /// A response nobody takes: close at once.
    Stalled,
}

impl Watch {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            handlers: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// A request arrived: its handler runs until the guard's [`Running::responded`].
    pub(super) fn begin(self: &Arc<Self>) -> Running {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.handlers.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Running {
            watch: Arc::clone(self),
            body: false,
        }
    }

    /// What to do at `now` under `config`'s deadlines.
    pub(super) fn verdict(&self, now: Instant, config: &WebConfig) -> Verdict {
        if self.handlers.load(Ordering::Relaxed) > 0 {
            // The handler keeps its own deadlines; look again later.
            return Verdict::WaitUntil(now + config.stall_timeout);
        }
        let last = self.last();
        if self.bodies.load(Ordering::Relaxed) > 0 {
            let end = last + config.stall_timeout + STALL_GRACE;
            return if now >= end {
                Verdict::Stalled
            } else {
                Verdict::WaitUntil(end)
            };
        }
        let limit = if self.requests.load(Ordering::Relaxed) == 0 {
            config.header_timeout
        } else {
            config.idle_timeout
        };
        if now >= last + limit {
            Verdict::Idle
        } else {
            Verdict::WaitUntil(last + limit)
        }
    }
}

/// One request on a watched connection: a running handler, then a response body being sent.
#[derive(Debug)]
pub(super) struct Running {
    watch: Arc<Watch>,
    body: bool,
}

impl Running {
    /// The handler answered: from now on the guard stands for the response body, and goes with
    /// it.
    pub(super) fn responded(mut self) -> Self {
        self.watch.bodies.fetch_add(1, Ordering::Relaxed);
        self.watch.handlers.fetch_sub(1, Ordering::Relaxed);
        self.watch.touch();
        self.body = true;
        self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let counter = if self.body {
            &self.watch.bodies
        } else {
            &self.watch.handlers
        };
        counter.fetch_sub(1, Ordering::Relaxed);
        self.watch.touch();
    }
}

/// A response body that holds its request's [`Running`] until it is sent or dropped.
pub(super) struct Guarded {
    pub(super) body: axum::body::Body,
    pub(super) _running: Running,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream that tells its [`Watch`] whenever a byte moves.
pub(super) struct Watched<S> {
    pub(super) inner: S,
    pub(super) watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebConfig {
        WebConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            ..WebConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_state_has_its_deadline() {
        let c = config();
        let w = Watch::new();
        let t0 = Instant::now();
        // No request yet: the header deadline.
        assert_eq!(w.verdict(t0, &c), Verdict::WaitUntil(t0 + c.header_timeout));
        assert_eq!(w.verdict(t0 + c.header_timeout, &c), Verdict::Idle);
        // A handler runs: never idle, however long.
        let running = w.begin();
        let far = t0 + Duration::from_secs(3600);
        assert!(matches!(w.verdict(far, &c), Verdict::WaitUntil(_)));
        // Its body is being sent: stalled only after the stall timeout and its grace.
        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        let body = running.responded();
        assert_eq!(
            w.verdict(t1 + c.stall_timeout, &c),
            Verdict::WaitUntil(t1 + c.stall_timeout + STALL_GRACE)
        );
        assert_eq!(
            w.verdict(t1 + c.stall_timeout + STALL_GRACE, &c),
            Verdict::Stalled
        );
        // Sent: the keep-alive deadline.
        drop(body);
        assert_eq!(w.verdict(t1, &c), Verdict::WaitUntil(t1 + c.idle_timeout));
        assert_eq!(w.verdict(t1 + c.idle_timeout, &c), Verdict::Idle);
    }
}

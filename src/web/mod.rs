//! The web gateway (`barge serve --web PORT`): the shared store, with the same rules, for any
//! browser and for `curl`.
//!
//! It owns the HTTP side only: the accept loop (TLS with the server's own identity, or plain
//! with `--plain`), connection limits and timeouts, the routes ([`api`]) and the embedded page
//! ([`page`]). Every rule about files (names, conflicts, limits, free space, atomic commits)
//! stays in [`crate::store::Store`], exactly as for the TCP protocol, and every byte of a body
//! moves through [`crate::transfer`]'s pipeline.
//!
//! What a connection may cost, and what stops it:
//! - at most [`WebConfig::max_connections`] connections at once, and
//!   [`WebConfig::max_connections_per_ip`] from one address (more are closed at accept);
//! - the TLS handshake within [`WebConfig::handshake_timeout`];
//! - the first request's head within [`WebConfig::header_timeout`] (and at most hyper's
//!   limits: 100 headers, ~400 KiB in all), then at most [`WebConfig::idle_timeout`] between
//!   requests, and a response nobody reads is cut after the stall timeout ([`conn`]);
//! - an upload body must move at least [`WebConfig::min_rate`] bytes per second over each
//!   [`WebConfig::stall_timeout`] window, or it is abandoned (the staged file is removed); a
//!   download buffers at most `DEPTH + 1` chunks of `CHUNK` bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::security::users::{Permissions, Scope};
use crate::store::Store;

mod api;
mod audit;
mod auth;
mod conn;
mod guard;
mod page;
#[cfg(test)]
mod tests;

/// Limits of the web gateway.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections served at once from one IP address; more are closed as they arrive.
    pub max_connections_per_ip: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a connection may take to send its first request's head.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request running (keep-alive).
    pub idle_timeout: Duration,
    /// How long an upload body may stay silent before it is abandoned, and the window over
    /// which [`WebConfig::min_rate`] is judged.
    pub stall_timeout: Duration,
    /// The slowest an upload body may move, in bytes per second over each stall-timeout window
    /// (the TCP protocol's `--min-rate`); 0 turns the check off.
    pub min_rate: u64,
    /// Where actions are counted: the TCP server's, so `/metrics` shows both.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            max_connections: 128,
            max_connections_per_ip: 16,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            min_rate: 1024,
            metrics: Arc::default(),
        }
    }
}

/// What a web request may do, and which part of the share it sees.
#[derive(Clone, Debug)]
pub struct Access {
    /// Who this is, as shown on the page (`anonymous`, a user name, `token:<id>`).
    pub principal: String,
    /// What it may do.
    pub perms: Permissions,
    /// The part of the share it sees as its whole share.
    pub scope: Scope,
}

/// Everything the routes share.
#[derive(Debug)]
pub struct Gateway {
    store: Arc<Store>,
    policy: Arc<crate::server::Access>,
    sessions: auth::Sessions,
    config: WebConfig,
    fingerprint: Option<String>,
}

impl Gateway {
    /// A gateway over `store`, with the server's access `policy` (the same users, tokens,
    /// anonymous rule and login throttle as the TCP side). `fingerprint` (the server key's, when
    /// serving TLS) is shown on the page so a visitor can compare it; it also marks the session
    /// cookie `Secure`.
    #[must_use]
    pub fn new(
        store: Arc<Store>,
        policy: Arc<crate::server::Access>,
        config: WebConfig,
        fingerprint: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            policy,
            sessions: auth::Sessions::default(),
            config,
            fingerprint,
        })
    }
}

/// The ALPN names the web gateway offers, in its order of preference: HTTP/1.1, then HTTP/2.
///
/// The server's order decides (rustls picks the first of these the client offers), so every
/// client that offers HTTP/1.1 gets it, and HTTP/2 serves clients that speak nothing else.
/// Large bodies are what this gateway moves, and HTTP/2 costs the client more per byte than
/// one HTTP/1.1 connection per transfer: measured on 1 GiB over loopback, `curl -T` used 3.3-3.8
/// CPU s over HTTP/2 against 0.9 s over HTTP/1.1 (3.8 s wall against 2.4 s, the server the
/// same); downloads cost about the same either way. The page's few small requests gain little
/// from multiplexing, and a browser opens up to six HTTP/1.1 connections per host, within
/// `--web-max-connections-per-ip`.
pub const ALPN: [&[u8]; 2] = [b"http/1.1", b"h2"];

/// Serves `gateway` on `listener` until `shutdown` is cancelled; then lets requests in flight
/// finish (each connection is asked to close after its current request).
///
/// `tls`: the server's TLS configuration (its ALPN is replaced by [`ALPN`]); `None` serves
/// plain HTTP.
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let slots = Arc::new(Semaphore::new(gateway.config.max_connections));
    let per_address = crate::server::PerAddress::new(gateway.config.max_connections_per_ip);
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let router = api::router(Arc::clone(&gateway), guard::Guard { loopback });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!("web: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set stays as small as what is open.
        while connections.try_join_next().is_some() {}
        let taken = Arc::clone(&slots)
            .try_acquire_owned()
            .ok()
            .zip(per_address.try_take(peer.ip()));
        let Some(slot) = taken else {
            tracing::warn!(%peer, "web: connection limit reached (in all or from this address); closed");
            gateway.config.metrics.connection_refused();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, shutdown, acceptor) = (router.clone(), shutdown.clone(), acceptor.clone());
        let handshake = gateway.config.handshake_timeout;
        let open = gateway.config.metrics.connection("web");
        let config = gateway.config.clone();
        connections.spawn(async move {
            let _slot = (slot, open);
            match acceptor {
                None => serve(stream, peer, router, &config, &shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve(tls, peer, router, &config, &shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "web: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Requests an HTTP/2 connection may have running at once (`SETTINGS_MAX_CONCURRENT_STREAMS`):
/// one, as an HTTP/1.1 connection.
pub(super) const H2_STREAMS: u32 = 1;

/// Serves HTTP/1.1 or HTTP/2 on one connection, within the deadlines of [`conn`].
async fn serve<S>(
    io: S,
    peer: SocketAddr,
    router: axum::Router,
    config: &WebConfig,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = conn::Watch::new();
    let watching = Arc::clone(&watch);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let mut router = router.clone();
        let running = watching.begin();
        async move {
            let res = tower_service::Service::call(&mut router, req).await?;
            let running = running.responded();
            Ok::<_, std::convert::Infallible>(res.map(|body| {
                axum::body::Body::new(conn::Guarded {
                    body,
                    _running: running,
                })
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    // One request at a time per connection, as HTTP/1.1: the connection limits (in all and per
    // address) are then limits on requests, their files, buffers and staged uploads too. hyper's
    // default of 200 streams let one connection hold 200 downloads or uploads at once.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS);
    let io = conn::Watched {
        inner: io,
        watch: Arc::clone(&watch),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut check = tokio::time::Instant::now();
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, "web: connection ended: {e}");
                }
                return;
            }
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            () = tokio::time::sleep_until(check) => {
                match watch.verdict(tokio::time::Instant::now(), config) {
                    conn::Verdict::WaitUntil(at) => check = at,
                    conn::Verdict::Idle => {
                        tracing::debug!(%peer, "web: idle connection closed");
                        conn.as_mut().graceful_shutdown();
                        // A polite close (HTTP/2's GOAWAY) gets a moment; then it is dropped.
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                        return;
                    }
                    conn::Verdict::Stalled => {
                        tracing::debug!(%peer, "web: a response nobody reads; connection closed");
                        return;
                    }
                }
            }
        }
    }
}

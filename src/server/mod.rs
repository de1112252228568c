//! The server: accepts connections, enforces the connection limit, and shuts down gracefully.
//!
//! [`run`] is the seam tests use: it takes a bound listener, an accept step ([`Accept`]: plain
//! TCP, or a handshake), an open [`Store`] and a [`CancellationToken`], and returns once every
//! connection has finished after the token is cancelled. The dialogue of one connection lives
//! in `session`; what a store error means on the wire is decided in one place, [`reply_for`].

mod accept;
mod access;
pub mod audit;
mod limits;
pub mod log_out;
pub(crate) use limits::PerAddress;
mod session;
pub(crate) use session::confine::seen_reply;

pub use accept::{Accept, Peer, PlainTcp, Tls};
pub use access::{Access, AccessOptions, CHECKS_AT_ONCE, Grant};

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::protocol::{Code, Reply, capitalise};
use crate::store::{Store, StoreError};
use crate::transport::Connection;

/// How the server treats its connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once; one more gets `503 Server busy` and is closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address; one more gets `503` and is closed.
    pub max_connections_per_ip: usize,
    /// How long a connection may stay silent between commands.
    pub idle_timeout: Duration,
    /// How long a transfer may go without a single byte moving.
    pub stall_timeout: Duration,
    /// The slowest a body may move, in bytes per second, judged over each stall timeout (so
    /// at least `min_rate` × `stall_timeout` bytes per window); 0 turns the check off.
    pub min_rate: u64,
    /// How long running transfers may go on after shutdown starts.
    pub shutdown_grace: Duration,
    /// How long the accept step (a TLS handshake, say) may take before the session starts.
    pub handshake_timeout: Duration,
    /// Who may do what: anonymous access, users and tokens, pairing codes.
    pub access: Arc<Access>,
    /// Where connections and actions are counted (`barge serve --metrics`).
    pub metrics: Arc<Metrics>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_connections_per_ip: 64,
            idle_timeout: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(60),
            min_rate: 1024,
            shutdown_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            access: Arc::new(Access::default()),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// Cores per thread of the server's async runtime.
///
/// The runtime's threads only move bytes between sockets and the blocking pool, decrypt TLS
/// and run the dialogue: hashing and file I/O, the CPU of a transfer, run on the pool
/// ([`crate::transfer`]), which may use every core. Each extra runtime thread costs a transfer
/// wake-ups: when a socket becomes readable, tokio hands the task to the thread that polled the
/// driver and wakes an idle sibling to look for work, which finds none. Measured on this
/// project's 2-core VM, a 1 GiB upload in clear text made 1,421 futex calls in the server with
/// two runtime threads and 20 with one (`strace -c`); its server CPU went from 2.60 to 2.41 s
/// and from 2.54 to 2.49 s in two sittings of alternated runs (medians of 6 and 8; the kernel's
/// part 0.71 to 0.56 s and 0.69 to 0.60 s). TLS costs the server 0.3 to 0.6 CPU s per GiB more
/// than clear text (`bench/run`), a sixth to a third of the MD5 the pool does for the same bytes
/// (1.8 s per GiB): one runtime thread decrypts at least as fast as 3 cores hash, so one per 4
/// cores keeps up with every core hashing.
pub const CORES_PER_RUNTIME_THREAD: usize = 4;

/// Threads of the server's runtime on a machine with `cores` cores: one per
/// [`CORES_PER_RUNTIME_THREAD`], at least one.
#[must_use]
pub const fn runtime_threads(cores: usize) -> usize {
    let n = cores.div_ceil(CORES_PER_RUNTIME_THREAD);
    if n == 0 { 1 } else { n }
}

/// Threads of the server's blocking pool, at most: the transfers' jobs (hashing, file I/O) are
/// gated far below this by [`crate::transfer`]'s permits, but the store's short operations
/// (open, stat, rename, commit) and the login checks run on the pool beside them, one per
/// connection at a time; past this many at once they queue (tokio's default is 512 threads).
pub const MAX_BLOCKING_THREADS: usize = 64;

/// The server's async runtime: [`runtime_threads`] threads for this machine's cores, unless
/// `TOKIO_WORKER_THREADS` sets the number (tokio reads it; for measuring).
///
/// # Errors
/// The runtime could not start (no threads, no `epoll`).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS);
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        builder.worker_threads(runtime_threads(cores));
    }
    builder.build()
}

/// Refusals in flight at once; past this, connections over the limit get their busy line with
/// one non-blocking write and are closed at once, rather than letting a flood pile up tasks.
const MAX_REFUSALS: usize = 256;

/// Serves `listener` until `shutdown` is cancelled, then stops accepting, lets connections
/// finish (transfers get [`ServerConfig::shutdown_grace`]), and returns. Each accepted socket
/// goes through `acceptor` (bounded by [`ServerConfig::handshake_timeout`]) before its session
/// starts.
///
/// # Errors
/// Never for a client's fault; only if the listener itself fails in a way that cannot be
/// retried.
pub async fn run<A: Accept>(
    listener: TcpListener,
    acceptor: A,
    store: Arc<Store>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let acceptor = Arc::new(acceptor);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_address = limits::PerAddress::new(config.max_connections_per_ip);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(v) => v,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Replies are small and the client often waits for each: do not let Nagle hold them.
        let _ = tcp.set_nodelay(true);
        let handshake = config.handshake_timeout;
        let taken = Arc::clone(&slots)
            .try_acquire_owned()
            .ok()
            .zip(per_address.try_take(addr.ip()));
        match taken {
            Some(permit) => {
                let (acceptor, store, config, shutdown) = (
                    Arc::clone(&acceptor),
                    Arc::clone(&store),
                    config.clone(),
                    shutdown.clone(),
                );
                // Every line about this connection is logged inside its span, so each shows the
                // peer (and the user, once logged in) without repeating them by hand.
                let span = tracing::info_span!(
                    "conn",
                    peer = %addr,
                    user = tracing::field::Empty
                );
                tracker.spawn(
                    async move {
                        let Some((stream, peer)) =
                            handshake_with(&*acceptor, tcp, addr, handshake).await
                        else {
                            return;
                        };
                        let open = config.metrics.connection("tcp");
                        let mut connected = audit::Action::start("connect");
                        connected.status(220, None);
                        connected.finish(&config.metrics);
                        let started = audit::Action::start("disconnect");
                        session::serve(stream, peer, store, &config, &shutdown).await;
                        let mut ended = started;
                        ended.status(221, None);
                        ended.finish(&config.metrics);
                        drop((open, permit));
                    }
                    .instrument(span),
                );
            }
            None => {
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    let acceptor = Arc::clone(&acceptor);
                    tracker.spawn(async move {
                        if let Some((stream, _)) =
                            handshake_with(&*acceptor, tcp, addr, handshake).await
                        {
                            refuse_busy(stream).await;
                        }
                        drop(permit);
                    });
                } else {
                    // Too many refusals in flight to spend a task on this one.
                    acceptor.refuse_now(&tcp, BUSY_LINE.as_bytes());
                }
                config.metrics.connection_refused();
                let _in = tracing::info_span!("conn", peer = %addr).entered();
                let mut refused = audit::Action::start("connect");
                refused.status(
                    503,
                    Some(&format!(
                        "busy: {} connections already, or {} from this address",
                        config.max_connections, config.max_connections_per_ip
                    )),
                );
                refused.finish(&config.metrics);
            }
        }
    }
    tracker.close();
    let limit = config.shutdown_grace + config.stall_timeout.min(Duration::from_secs(5));
    if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not finish in time");
    }
    Ok(())
}

/// Runs the accept step within its deadline; `None` (logged) when it fails or times out.
async fn handshake_with<A: Accept>(
    acceptor: &A,
    tcp: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    limit: Duration,
) -> Option<(A::Stream, Peer)> {
    match tokio::time::timeout(limit, acceptor.accept(tcp, addr)).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(%addr, "handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, "handshake timed out after {limit:?}");
            None
        }
    }
}

/// The busy reply as a wire line, for the path that cannot wait.
const BUSY_LINE: &str = "503 Server busy: too many connections, try again later\n";

async fn refuse_busy<S: crate::transport::Stream>(stream: S) {
    let mut conn = Connection::new(stream);
    let t = Some(Duration::from_secs(5));
    if conn.send_reply(&Reply::busy(), t).await.is_ok() {
        conn.close(t).await;
    }
}

/// The wire reply for a store error: the one place that decides it.
#[must_use]
pub fn reply_for(err: &StoreError) -> Reply {
    let code = match err {
        StoreError::NotFound(_) => Code::NOT_FOUND,
        StoreError::Exists(_)
        | StoreError::FolderExists(_)
        | StoreError::UploadInProgress { .. }
        | StoreError::Equivalent { .. }
        | StoreError::Ambiguous { .. }
        | StoreError::BeingWritten(_)
        | StoreError::NotAFolder(_) => Code::CONFLICT,
        StoreError::ReadOnly => Code::FORBIDDEN,
        StoreError::TooLarge { .. } => Code::TOO_LARGE,
        StoreError::InsufficientStorage { .. }
        | StoreError::InsufficientInodes { .. }
        | StoreError::TooManyFiles { .. }
        | StoreError::DiskFull => Code::INSUFFICIENT_STORAGE,
        StoreError::Incomplete { .. } => Code::BAD_REQUEST,
        StoreError::ChecksumMismatch { .. } => Code::CHECKSUM_MISMATCH,
        StoreError::BeyondEnd { .. } => Code::BEYOND_END,
        StoreError::ListingIncomplete { .. } => Code::LISTING_INCOMPLETE,
        StoreError::Locked | StoreError::Io { .. } | StoreError::Backend(_) => Code::INTERNAL,
    };
    let text = match err {
        // The details of a server-side failure belong in the server's log, not on the wire.
        StoreError::Io { .. } | StoreError::Backend(_) | StoreError::Locked => {
            "Internal server error; the operation was not done".to_owned()
        }
        StoreError::DiskFull => "Not enough disk space on the server".to_owned(),
        // The first word is the id of what the server held (PROTOCOL.md section 5.11).
        StoreError::BeyondEnd { size, .. } => format!("{size} {}", capitalise(&err.to_string())),
        StoreError::ChecksumMismatch { actual, .. } => {
            format!("{actual} {}", capitalise(&err.to_string()))
        }
        other => capitalise(&other.to_string()),
    };
    Reply::new(code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_line_is_the_busy_reply() {
        let mut out = Vec::new();
        Reply::busy().encode_into(&mut out);
        assert_eq!(out, BUSY_LINE.as_bytes());
    }

    #[test]
    fn the_blocking_pool_runs_at_most_its_bound_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let rt = runtime().unwrap_or_else(|e| panic!("{e}"));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        rt.block_on(async {
            let jobs: Vec<_> = (0..MAX_BLOCKING_THREADS * 2)
                .map(|_| {
                    let (now, most) = (Arc::clone(&now), Arc::clone(&most));
                    tokio::task::spawn_blocking(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for job in jobs {
                job.await.unwrap_or_else(|e| panic!("{e}"));
            }
        });
        let most = most.load(Ordering::SeqCst);
        assert!(most <= MAX_BLOCKING_THREADS, "{most} at once");
        assert!(most > MAX_BLOCKING_THREADS / 2, "only {most} at once");
    }

    #[test]
    fn the_runtime_has_one_thread_per_four_cores_and_at_least_one() {
        let threads: Vec<usize> = [0, 1, 2, 4, 5, 8, 9, 16, 64]
            .into_iter()
            .map(runtime_threads)
            .collect();
        assert_eq!(threads, [1, 1, 1, 1, 2, 2, 3, 4, 16]);
    }
}

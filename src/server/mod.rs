//! The server: accepts connections, enforces the connection limit, and shuts down gracefully.
//!
//! [`run`] is the seam tests use: it takes a bound listener, an open [`Store`] and a
//! [`CancellationToken`], and returns once every connection has finished after the token is
//! cancelled. The dialogue of one connection lives in [`session`]; what a store error means on
//! the wire is decided in one place, [`reply_for`].

mod session;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{Code, Reply};
use crate::store::{Store, StoreError};
use crate::transport::Connection;

/// How the server treats its connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once; one more gets `503 Server busy` and is closed.
    pub max_connections: usize,
    /// How long a connection may stay silent between commands.
    pub idle_timeout: Duration,
    /// How long a transfer may go without a single byte moving.
    pub stall_timeout: Duration,
    /// How long running transfers may go on after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 512,
            idle_timeout: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Refusals in flight at once; past this, connections over the limit get their busy line with
/// one non-blocking write and are closed at once, rather than letting a flood pile up tasks.
const MAX_REFUSALS: usize = 256;

/// Serves `listener` until `shutdown` is cancelled, then stops accepting, lets connections
/// finish (transfers get [`ServerConfig::shutdown_grace`]), and returns.
///
/// # Errors
/// Never for a client's fault; only if the listener itself fails in a way that cannot be
/// retried.
pub async fn run(
    listener: TcpListener,
    store: Arc<Store>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(v) => v,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Replies are small and the client often waits for each: do not let Nagle hold them.
        let _ = stream.set_nodelay(true);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let (store, config, shutdown) =
                    (Arc::clone(&store), config.clone(), shutdown.clone());
                tracker.spawn(async move {
                    tracing::debug!(%peer, "connected");
                    session::serve(stream, peer, store, &config, &shutdown).await;
                    tracing::debug!(%peer, "disconnected");
                    drop(permit);
                });
            }
            Err(_) => {
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    tracker.spawn(async move {
                        refuse_busy(stream).await;
                        drop(permit);
                    });
                } else {
                    // Too many refusals in flight to spend a task on this one; a fresh
                    // socket's send buffer is empty, so the line goes out without waiting.
                    let _ = stream.try_write(BUSY_LINE.as_bytes());
                }
                tracing::info!(%peer, "refused: {} connections already", config.max_connections);
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

/// The text of the busy reply.
const BUSY: &str = "Server busy: too many connections, try again later";
/// The busy reply as a wire line, for the path that cannot wait.
const BUSY_LINE: &str = "503 Server busy: too many connections, try again later\n";

async fn refuse_busy(stream: TcpStream) {
    let mut conn = Connection::new(stream);
    let reply = Reply::new(Code::UNAVAILABLE, BUSY);
    let t = Some(Duration::from_secs(5));
    if conn.send_reply(&reply, t).await.is_ok() {
        conn.shutdown(t).await;
    }
}

/// The wire reply for a store error: the one place that decides it.
#[must_use]
pub fn reply_for(err: &StoreError) -> Reply {
    let code = match err {
        StoreError::NotFound(_) => Code::NOT_FOUND,
        StoreError::Exists(_)
        | StoreError::UploadInProgress { .. }
        | StoreError::Equivalent { .. }
        | StoreError::Ambiguous { .. }
        | StoreError::NotAFolder(_) => Code::CONFLICT,
        StoreError::ReadOnly => Code::FORBIDDEN,
        StoreError::TooLarge { .. } => Code::TOO_LARGE,
        StoreError::InsufficientStorage { .. } | StoreError::DiskFull => Code::INSUFFICIENT_STORAGE,
        StoreError::Incomplete { .. } => Code::BAD_REQUEST,
        StoreError::Locked | StoreError::Io { .. } | StoreError::Backend(_) => Code::INTERNAL,
    };
    let text = match err {
        // The details of a server-side failure belong in the server's log, not on the wire.
        StoreError::Io { .. } | StoreError::Backend(_) | StoreError::Locked => {
            "Internal server error; the operation was not done".to_owned()
        }
        StoreError::DiskFull => "Not enough disk space on the server".to_owned(),
        other => capitalise(&other.to_string()),
    };
    Reply::new(code, text)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

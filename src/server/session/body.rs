//! Body streaming between the connection and the store: an upload's bytes are hashed and written
//! on a blocking thread while the next chunk is read from the socket, and a download's are sent
//! straight from the page cache (`sendfile`) or read from disk on a blocking thread while the
//! previous chunk is sent.

use std::io::Read;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::INLINE_BODY;
use crate::protocol::FileId;
use crate::store::{Download, StoreError, Upload};
use crate::transport::{Connection, Stream, TransportError};

/// Size of one body chunk. Small enough that a hundred transfers stay within a few tens of MiB,
/// large enough that per-chunk overhead is lost in the hashing time.
const CHUNK: usize = 128 * 1024;
/// Chunks in flight between the socket and the disk thread, per transfer.
const DEPTH: usize = 3;

/// Resolves when shutdown has started and the grace period has passed.
pub(super) async fn after_grace(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Moves `size` bytes from the connection into `upload`, hashing and writing on a blocking
/// thread while the next chunk is read. The outer error is a broken connection; the inner one
/// a refused or failed upload, after which the body has still been read in full so the
/// connection stays in step.
pub(super) async fn receive_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    mut upload: Upload,
    size: u64,
    stall: Duration,
) -> Result<Result<FileId, StoreError>, TransportError> {
    let stall = Some(stall);
    if size <= INLINE_BODY {
        // Small files: one read, one thread hop.
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
        let mut got = 0;
        while got < buf.len() {
            got += conn.read_body(&mut buf[got..], stall).await?;
        }
        return Ok(blocking(move || {
            upload.write(&buf)?;
            upload.finish()
        })
        .await);
    }
    let (full_tx, mut full_rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(DEPTH + 1);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(buf) = full_rx.blocking_recv() {
            upload.write(&buf)?;
            let _ = empty_tx.try_send(buf);
        }
        upload.finish()
    });
    let mut remaining = size;
    let mut allocated = 0;
    let mut failed = false;
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(CHUNK);
        let mut buf = match empty_rx.try_recv() {
            Ok(b) => b,
            Err(_) if allocated < DEPTH => {
                allocated += 1;
                vec![0u8; CHUNK]
            }
            Err(_) => match empty_rx.recv().await {
                Some(b) => b,
                None => vec![0u8; CHUNK], // The writer stopped; it no longer needs buffers.
            },
        };
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            filled += conn.read_body(&mut buf[filled..], stall).await?;
        }
        remaining -= want as u64;
        if !failed && full_tx.send(buf).await.is_err() {
            // The writer failed (disk full...): keep reading so the connection stays in step.
            failed = true;
        }
    }
    drop(full_tx);
    Ok(writer.await.unwrap_or_else(|e| Err(join_error(&e))))
}

/// Sends the download's bytes: straight from the page cache where the stream allows it
/// (`sendfile`: no copy through user space, and the id is known, so nothing to hash), otherwise
/// reading the next chunk from disk on a blocking thread while the previous one is sent.
/// Returns false if the file ended early (it shrank on disk).
pub(super) async fn send_body<S: Stream>(
    conn: &mut Connection<S>,
    d: Download,
    stall: Option<Duration>,
) -> Result<bool, TransportError> {
    let _ = rustix::fs::fadvise(&d.file, 0, None, rustix::fs::Advice::Sequential);
    if let Some(sent) = conn.send_file(&d.file, 0, d.size, stall).await? {
        return Ok(sent == d.size);
    }
    let (full_tx, mut full_rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(DEPTH);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(DEPTH + 1);
    let size = d.size;
    let reader = tokio::task::spawn_blocking(move || {
        let mut file = d.file.take(size);
        let mut spare = Some(vec![0u8; CHUNK]);
        loop {
            let mut buf = spare
                .take()
                .or_else(|| empty_rx.blocking_recv())
                .unwrap_or_else(|| vec![0u8; CHUNK]);
            buf.resize(CHUNK, 0);
            match read_full(&mut file, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if full_tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = full_tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let mut sent = 0u64;
    while let Some(chunk) = full_rx.recv().await {
        let Ok(chunk) = chunk else { break };
        conn.write_body(&chunk, stall).await?;
        sent += chunk.len() as u64;
        let _ = empty_tx.try_send(chunk);
    }
    drop(full_rx);
    let _ = reader.await;
    Ok(sent == size)
}

/// Reads until `buf` is full or the reader ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Runs store work on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(join_error(&e)))
}

pub(super) fn join_error(e: &tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        context: "a worker thread failed".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Reads a small download whole (at most `INLINE_BODY` bytes), so it goes out with its header.
pub(super) fn read_inline(d: &mut Download) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::with_capacity(usize::try_from(d.size).unwrap_or(0));
    (&mut d.file)
        .take(d.size)
        .read_to_end(&mut buf)
        .map_err(|e| StoreError::Io {
            context: format!("reading {}", d.name),
            source: e,
        })?;
    Ok(buf)
}

//! Body streaming between the connection and the store, through the one transfer pipeline
//! ([`crate::transfer`]): an upload's chunks are written (and hashed, by the store) on the
//! shared blocking pool while the next chunk is read from the socket; a download goes straight
//! from the page cache (`sendfile`) where the stream allows it, and otherwise is read on the
//! pool while the previous chunk is sent.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::id::FileId;
use crate::store::{Body, Download, StoreError, Upload};
use crate::transfer::{self, CHUNK, SMALL, Sink, SinkError, Source};
use crate::transport::{Connection, Stream, TransportError};

/// Resolves when shutdown has started and the grace period has passed.
pub(super) async fn after_grace(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Moves `size` bytes from the connection into `upload`. The outer error is a broken
/// connection; the inner one a refused or failed upload, after which the body has still been
/// read in full so the connection stays in step.
pub(super) async fn receive_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    upload: Upload,
    size: u64,
    stall: Duration,
) -> Result<Result<FileId, StoreError>, TransportError> {
    Ok(match receive_into(conn, upload, size, stall).await? {
        Ok(upload) => blocking(move || upload.finish()).await,
        Err(e) => Err(e),
    })
}

/// Moves `size` bytes from the connection into `upload` and hands it back unfinished (a
/// resumed upload is committed only once the client's MD5 has arrived). Errors as
/// [`receive_body`].
pub(super) async fn receive_into<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    mut upload: Upload,
    size: u64,
    stall: Duration,
) -> Result<Result<Upload, StoreError>, TransportError> {
    let stall = Some(stall);
    if size <= SMALL {
        // Small files: one read, one hop to the pool.
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
        let mut got = 0;
        while got < buf.len() {
            match conn.read_body(&mut buf[got..], stall).await {
                Ok(n) => got += n,
                Err(e) => {
                    // What did arrive is kept for a resumed upload (a plain one drops it).
                    buf.truncate(got);
                    let _ = blocking(move || upload.write(&buf)).await;
                    return Err(e);
                }
            }
        }
        return Ok(blocking(move || {
            upload.write(&buf)?;
            Ok(upload)
        })
        .await);
    }
    // The store hashes what it stores, so the pipeline does not hash again.
    let sink = Sink::new(upload, false, |u: &mut Upload, data: &[u8]| u.write(data));
    let mut sink = match sink.map(|s| s.large_within_budget(size)) {
        Ok(sink) => sink,
        Err(e) => {
            conn.discard_body(size, stall).await?;
            return Ok(Err(pool_error(&e)));
        }
    };
    let mut remaining = size;
    while remaining > 0 {
        let want = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(sink.chunk());
        let mut buf = sink.buffer().await;
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            filled += conn.read_body(&mut buf[filled..], stall).await?;
        }
        remaining -= want as u64;
        // After a failed write (disk full...) the sink drops what it is given: the body is
        // still read to its end.
        sink.push(buf);
    }
    Ok(match sink.finish().await {
        Ok((upload, _)) => Ok(upload),
        Err(SinkError::Write(e)) => Err(e),
        Err(e) => Err(pool_error(&std::io::Error::other(e.to_string()))),
    })
}

/// Sends the download's bytes: straight from the page cache where the stream allows it
/// (`sendfile`: no copy through user space, and the id is known, so nothing to hash), otherwise
/// read on the pool while the previous chunk is sent. Returns false if the body ended early
/// (the file shrank on disk).
pub(super) async fn send_body<S: Stream>(
    conn: &mut Connection<S>,
    d: Download,
    offset: u64,
    stall: Option<Duration>,
) -> Result<bool, TransportError> {
    // The bytes from `offset` on (`DOWNLOAD_FROM`); the caller checked it is within the file.
    let size = d.size.saturating_sub(offset);
    let mut file = match d.body {
        Body::File(file) => file,
        Body::Bytes(bytes) => {
            let rest = bytes.get(usize::try_from(offset).unwrap_or(usize::MAX)..);
            let rest = rest.unwrap_or_default();
            conn.write_body(rest, stall).await?;
            return Ok(rest.len() as u64 == size);
        }
        Body::Reader(mut reader) => {
            // A reader cannot seek: the bytes before the offset are read and dropped.
            let mut head = (&mut reader).take(offset);
            let mut sink = tokio::io::sink();
            match tokio::io::copy(&mut head, &mut sink).await {
                Ok(n) if n == offset => {}
                _ => return Ok(false),
            }
            return send_reader(conn, reader, size, stall).await;
        }
    };
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    if let Some(sent) = conn.send_file(&file, offset, size, stall).await? {
        return Ok(sent == size);
    }
    if std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).is_err() {
        return Ok(false);
    }
    let Ok(mut source) = Source::new(file, size, false) else {
        return Ok(false);
    };
    let mut sent = 0u64;
    while let Some(chunk) = source.next().await {
        let Ok(chunk) = chunk else { break };
        conn.write_body(&chunk, stall).await?;
        sent += chunk.len() as u64;
    }
    let _ = source.finish().await;
    Ok(sent == size)
}

/// Sends `size` bytes from an async reader (a backend's stream), chunk by chunk. Returns false
/// if it ended early.
async fn send_reader<S: Stream>(
    conn: &mut Connection<S>,
    mut reader: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    size: u64,
    stall: Option<Duration>,
) -> Result<bool, TransportError> {
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < size {
        let want = usize::try_from(size - sent)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        // A backend that stops yielding bytes is a stall like a client that stops reading.
        let read = reader.read(&mut buf[..want]);
        let read = match stall {
            Some(t) => tokio::time::timeout(t, read).await.unwrap_or(Ok(0)),
            None => read.await,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        conn.write_body(&buf[..n], stall).await?;
        sent += n as u64;
    }
    Ok(sent == size)
}

/// Runs store work on the shared blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    transfer::blocking(f)
        .await
        .unwrap_or_else(|e| Err(pool_error(&e)))
}

/// A failure of the pool itself (a job panicked, the runtime is going down).
fn pool_error(e: &std::io::Error) -> StoreError {
    StoreError::Io {
        action: "running a worker thread",
        name: None,
        source: std::io::Error::other(e.to_string()),
    }
}

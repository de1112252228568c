//! Lines and bodies over any byte stream, with hard limits and timeouts.
//!
//! [`Connection`] is generic over `AsyncRead + AsyncWrite`, so the same code runs over plain TCP
//! today, TLS tomorrow, and an in-memory duplex pipe in tests. It knows the framing of
//! `PROTOCOL.md` section 1 (lines of bounded length, raw bodies of announced length) but nothing
//! about what the lines mean: that is [`crate::protocol`]'s job.
//!
//! Replies are queued and written out only when the connection would otherwise wait for the
//! peer, so a pipelining client gets many replies in one segment instead of one per command.

use std::io;
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
    Interest,
};
use tokio::net::TcpStream;

use crate::protocol::{MAX_LINE_LEN, Reply};
use pace::{Pace, next_wait, record};

/// Queued replies beyond this many bytes are written before the next line is read.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Why reading or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A line was longer than the limit; framing is lost, so the connection must be closed.
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    /// The peer closed the connection in the middle of a line or a body.
    #[error("connection closed by the peer in the middle of a transfer")]
    Closed,
    /// Nothing arrived (or nothing could be sent) within the time allowed.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The operating system reported an error.
    #[error("network error: {0}")]
    Io(#[from] io::Error),
}

/// A stream a [`Connection`] can run over: any async byte stream. Plain TCP can also take file
/// bytes straight from the page cache (`sendfile`), which a TLS stream, say, cannot.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath, when file bytes may be sent to it directly.
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Stream for TcpStream {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Stream for DuplexStream {}

/// TLS encrypts in user space, so file bytes cannot go from the page cache to the socket.
impl Stream for tokio_rustls::server::TlsStream<TcpStream> {}

impl Stream for tokio_rustls::client::TlsStream<TcpStream> {}

/// A byte stream with line framing, a bounded read buffer and a reply queue.
#[derive(Debug)]
pub struct Connection<S> {
    inner: BufReader<S>,
    /// Replies queued but not yet written.
    out: Vec<u8>,
    /// Where each queued piece of `out` ends, and whether it is text lines (which may be cut
    /// after any line) rather than bytes that must go out whole; see
    /// [`drop_unsent`](Self::drop_unsent).
    pieces: Vec<(usize, bool)>,
    /// How much of `out` is already written.
    written: usize,
    /// The line being assembled when it spans several reads.
    line: Vec<u8>,
    /// True once `line` holds a whole line that was handed out.
    line_complete: bool,
    /// How long the replies that [`read_line`](Self::read_line) flushes may wait for the peer.
    write_timeout: Option<Duration>,
    /// When the line being read must be complete: set when reading a line starts, so that a
    /// peer trickling a byte at a time cannot stretch one line past its timeout.
    line_deadline: Option<tokio::time::Instant>,
    /// The minimum rate bodies must keep, once [`begin_body`](Self::begin_body) set one.
    pace: Option<Pace>,
    max_line: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps `stream`, with the protocol's line limit.
    pub fn new(stream: S) -> Self {
        Self::with_line_limit(stream, MAX_LINE_LEN)
    }

    /// Wraps `stream`, allowing lines of up to `max_line` bytes (line ending included).
    pub fn with_line_limit(stream: S, max_line: usize) -> Self {
        Self {
            // Small on purpose: an idle connection should cost little. Bodies bypass it.
            inner: BufReader::with_capacity(16 * 1024, stream),
            out: Vec::new(),
            pieces: Vec::new(),
            written: 0,
            line: Vec::new(),
            line_complete: false,
            write_timeout: None,
            line_deadline: None,
            pace: None,
            max_line,
        }
    }

    /// Sets how long queued replies written out by [`read_line`](Self::read_line) may wait for
    /// the peer to take them (no limit by default).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Starts a body: from now on each body read or write must also keep `min_rate` bytes per
    /// second, judged over windows of `window` (0 turns the check off). Every body should start
    /// with this, since the count of the previous one is reset here.
    pub fn begin_body(&mut self, min_rate: u64, window: Duration) {
        self.pace = (min_rate > 0 && !window.is_zero()).then(|| Pace {
            need: min_rate.saturating_mul(window.as_secs().max(1)),
            window,
            window_end: tokio::time::Instant::now() + window,
            moved: 0,
        });
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The underlying stream, mutably. Bytes already buffered for reading stay buffered.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// How many queued bytes are not written yet.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.written
    }

    /// How many received bytes are buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.inner.buffer().len()
    }

    /// The whole lines received and not yet read, each with its `\n` (a partial last line is
    /// left out): what may be looked at ahead without waiting. Empty while a line is half read.
    pub fn buffered_lines(&self) -> &[u8] {
        if !self.line.is_empty() && !self.line_complete {
            return &[];
        }
        let buf = self.inner.buffer();
        buf.iter()
            .rposition(|&b| b == b'\n')
            .map_or(&[], |end| &buf[..=end])
    }

    /// Reads one line, without its `\n` (a `\r` before it is kept; the decoder drops it).
    ///
    /// Returns `Ok(None)` when the peer closed the connection cleanly between lines. Queued
    /// replies are written out before waiting for the peer.
    ///
    /// # Errors
    /// [`TransportError::LineTooLong`] past the limit, [`TransportError::Closed`] on a close in
    /// the middle of a line, [`TransportError::TimedOut`] when nothing completes a line within
    /// `timeout`, or an I/O error.
    pub async fn read_line(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<&[u8]>, TransportError> {
        // A client that pipelines without reading its replies must not make them pile up
        // here without bound: past a threshold, they go out before another line is read (and
        // if the client never reads them, the write times out and the connection ends).
        if self.out.len() >= FLUSH_THRESHOLD {
            self.flush(self.write_timeout).await?;
        }
        // A call cancelled while waiting keeps the part of the line it had; the next call
        // goes on from there. Only a completed line is cleared.
        if self.line_complete {
            self.line.clear();
            self.line_complete = false;
            self.line_deadline = None;
        }
        // The deadline carries over only for a line already begun (a call cancelled after some
        // of its bytes came): waiting for a line that has not started starts the clock afresh.
        let deadline = match (timeout, self.line_deadline) {
            (_, Some(d)) if !self.line.is_empty() => Some(d),
            (Some(t), _) => Some(tokio::time::Instant::now() + t),
            (None, _) => None,
        };
        self.line_deadline = deadline;
        loop {
            let buf = self.inner.buffer();
            if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                if self.line.len() + pos + 1 > self.max_line {
                    return Err(TransportError::LineTooLong(self.max_line));
                }
                self.line.extend_from_slice(&buf[..pos]);
                self.inner.consume(pos + 1);
                self.line_complete = true;
                self.line_deadline = None;
                return Ok(Some(&self.line));
            }
            let n = buf.len();
            if self.line.len() + n >= self.max_line {
                return Err(TransportError::LineTooLong(self.max_line));
            }
            self.line.extend_from_slice(buf);
            self.inner.consume(n);
            // About to wait for the peer: make sure it has every reply it is waiting for.
            self.flush(self.write_timeout).await?;
            let fill = self.inner.fill_buf();
            let filled = match (deadline, timeout) {
                (Some(d), Some(t)) => tokio::time::timeout_at(d, fill)
                    .await
                    .map_err(|_| TransportError::TimedOut(t))??,
                _ => fill.await?,
            }
            .len();
            if filled == 0 {
                return if self.line.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Closed)
                };
            }
        }
    }

    /// Queues a reply; it is written out at the next [`flush`](Self::flush) or read.
    pub fn queue_reply(&mut self, reply: &Reply) {
        reply.encode_into(&mut self.out);
        self.pieces.push((self.out.len(), true));
    }

    /// Queues raw bytes that must go out whole (a request line, a small body).
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.pieces.push((self.out.len(), false));
    }

    /// Queues text lines, each ended by `\n` (listing or help lines).
    pub fn queue_lines(&mut self, lines: &[u8]) {
        self.out.extend_from_slice(lines);
        self.pieces.push((self.out.len(), true));
    }

    /// Queues a body (a small download sent with its header).
    pub fn queue_body(&mut self, body: &[u8]) {
        self.queue_bytes(body);
    }

    /// Forgets the queued bytes that the peer has not started to receive, keeping the rest of
    /// the line (or of the body) in progress so that what was sent stays well-formed. Used
    /// when the peer stopped reading: the replies it never took are dropped so that a last
    /// status line can follow at once.
    pub fn drop_unsent(&mut self) {
        let written = self.written;
        let mut start = 0;
        let mut keep = written;
        for &(end, lines) in &self.pieces {
            if end > written {
                if start < written {
                    // Started but not finished: finish its line, or all of it.
                    keep = if lines {
                        self.out[written..end]
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(end, |p| written + p + 1)
                    } else {
                        end
                    };
                }
                break;
            }
            start = end;
        }
        self.out.truncate(keep);
        self.pieces.retain(|&(end, _)| end < keep);
        if keep > self.pieces.last().map_or(0, |p| p.0) {
            self.pieces.push((keep, false));
        }
    }

    /// Queues a reply and writes everything queued.
    ///
    /// # Errors
    /// An I/O error or a timeout.
    pub async fn send_reply(
        &mut self,
        reply: &Reply,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        self.queue_reply(reply);
        self.flush(timeout).await
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// An I/O error, or [`TransportError::TimedOut`] if the peer does not take the bytes in time.
    pub async fn flush(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Progress is kept in `self.written`, so a flush cancelled half-way never sends the
        // same bytes twice.
        while self.written < self.out.len() {
            let stream = self.inner.get_mut();
            let n = with_timeout(timeout, stream.write(&self.out[self.written..])).await?;
            if n == 0 {
                return Err(TransportError::Io(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        with_timeout(timeout, self.inner.get_mut().flush()).await?;
        self.out.clear();
        self.pieces.clear();
        self.written = 0;
        // Do not keep a large buffer around after a big listing.
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Reads up to `buf.len()` body bytes: buffered bytes first, then straight from the stream.
    ///
    /// # Errors
    /// [`TransportError::Closed`] if the peer closed the connection, a timeout if no byte
    /// arrived within `timeout`, or an I/O error.
    pub async fn read_body(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize, TransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let wait = next_wait(&mut self.pace, timeout)?;
            let n = match wait.run(self.inner.read(buf)).await {
                Some(r) => r?,
                None => continue,
            };
            record(&mut self.pace, n);
            return if n == 0 {
                Err(TransportError::Closed)
            } else {
                Ok(n)
            };
        }
    }

    /// Reads and throws away exactly `len` body bytes (a refused or failed upload's body).
    ///
    /// # Errors
    /// As [`read_body`](Self::read_body).
    pub async fn discard_body(
        &mut self,
        mut len: u64,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let mut scratch = vec![0u8; 64 * 1024];
        while len > 0 {
            let want = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            let n = self.read_body(&mut scratch[..want], timeout).await?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Writes body bytes, after anything queued.
    ///
    /// # Errors
    /// An I/O error, or a timeout if the peer stops taking bytes.
    pub async fn write_body(
        &mut self,
        data: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        self.flush(timeout).await?;
        // The timeout is for each write: a slow reader that keeps taking bytes is not cut off,
        // one that takes nothing for `timeout` is (and one below the minimum rate, if set).
        let mut rest = data;
        while !rest.is_empty() {
            let wait = next_wait(&mut self.pace, timeout)?;
            let n = match wait.run(self.inner.get_mut().write(rest)).await {
                Some(r) => r?,
                None => continue,
            };
            if n == 0 {
                return Err(TransportError::Io(io::ErrorKind::WriteZero.into()));
            }
            record(&mut self.pace, n);
            rest = &rest[n..];
        }
        // A TLS stream takes bytes into its own buffer and may not have written them all to
        // the socket yet (it was full): without this, the end of a body could wait there while
        // this side waits for the peer's reply, and the peer for the rest of the body. On TCP
        // it costs nothing.
        with_timeout(timeout, self.inner.get_mut().flush()).await?;
        Ok(())
    }

    /// Shuts the write side down after writing everything queued (best effort).
    pub async fn shutdown(&mut self, timeout: Option<Duration>) {
        if self.flush(timeout).await.is_ok() {
            let _ = with_timeout(timeout, self.inner.get_mut().shutdown()).await;
        }
    }

    /// Ends the connection from this side: writes everything queued and shuts the write side
    /// down (as [`shutdown`](Self::shutdown)), then reads and discards what the peer still
    /// sends, for a bounded time and amount, before the caller drops the stream. Closing a
    /// socket with unread input makes the kernel send a reset, which can destroy the last
    /// replies before the peer reads them; draining first lets them arrive.
    pub async fn close(&mut self, timeout: Option<Duration>) {
        self.shutdown(timeout).await;
        let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
        // On the heap: a buffer on the stack would make every session's future (and so every
        // idle connection) this much bigger, though only a closing one uses it.
        let mut scratch = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained < CLOSE_DRAIN_BYTES {
            match tokio::time::timeout_at(deadline, self.inner.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// How long [`Connection::close`] waits for the peer to finish sending.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How much [`Connection::close`] reads and discards at most.
const CLOSE_DRAIN_BYTES: usize = 1 << 20;

impl<S: Stream> Connection<S> {
    /// Sends `len` bytes of `file` from `offset` straight from the page cache to the socket,
    /// after anything queued. Returns `Ok(None)` when the stream or the file does not allow it
    /// (the caller then copies), otherwise the bytes sent, which are fewer than `len` only if the
    /// file shrank meanwhile.
    ///
    /// # Errors
    /// An I/O error, or a timeout if the peer stops taking bytes.
    pub async fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        timeout: Option<Duration>,
    ) -> Result<Option<u64>, TransportError> {
        if self.inner.get_ref().as_tcp().is_none() {
            return Ok(None);
        }
        self.flush(timeout).await?;
        let Some(sock) = self.inner.get_ref().as_tcp() else {
            return Ok(None);
        };
        let mut pos = offset;
        let end = offset.saturating_add(len);
        while pos < end {
            // At most 1 GiB per call: Linux caps a single sendfile a little below 2 GiB anyway.
            let count = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let wait = next_wait(&mut self.pace, timeout)?;
            match wait.run(sock.writable()).await {
                Some(r) => r?,
                None => continue,
            }
            match sock.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(sock, file, Some(&mut pos), count).map_err(io::Error::from)
            }) {
                Ok(0) => break, // The file is shorter than it was.
                Ok(n) => record(&mut self.pace, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e)
                    if pos == offset
                        && matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::INVAL.raw_os_error() || c == rustix::io::Errno::NOSYS.raw_os_error()) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(pos - offset))
    }
}

/// Runs `fut`, failing with [`TransportError::TimedOut`] after `timeout` if one is given.
async fn with_timeout<T>(
    timeout: Option<Duration>,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, TransportError> {
    match timeout {
        None => Ok(fut.await?),
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(TransportError::TimedOut(t)),
        },
    }
}

mod pace;
#[cfg(test)]
mod tests;

//! [`ReadAhead`]: large reads from a socket for a reader that asks for small pieces.
//!
//! rustls reads its socket at most 4 KiB at a time (its deframer's fixed read size), so a TLS
//! body costs one `recvmsg` (and one wake-up of the TLS state machine) per 4 KiB: 262,144
//! system calls per GiB received. Under TLS the socket is wrapped in a [`ReadAhead`], which
//! reads up to 64 KiB at once and serves rustls's small reads from memory; copying
//! 4 KiB that are still in the cache costs far less than a system call.
//!
//! Memory: only a connection that is streaming holds the buffer. A connection starts reading
//! straight into the caller's buffer; once a read fills what was asked for (more is probably
//! waiting), it switches to reading ahead, and it frees the buffer again as soon as a read
//! ahead brings in less than a small read would have asked for (the peer has paused), so an
//! idle connection, waiting for its next command, holds none (issue 9: 1,000 idle TLS
//! connections under 64 MiB).
//!
//! Writes pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read ahead at most per system call.
const CAPACITY: usize = 64 * 1024;

/// Below this many bytes, a read ahead means the peer has paused: the buffer is freed.
const SMALL_READ: usize = 4 * 1024;

/// A stream whose reads are made in pieces of up to 64 KiB while data streams in
/// (see the module documentation).
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Empty when not reading ahead.
    buf: Vec<u8>,
    /// The unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            pos: 0,
            end: 0,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether a read-ahead buffer is held now.
    #[cfg(test)]
    pub(crate) fn holds_buffer(&self) -> bool {
        !self.buf.is_empty()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.end {
            if this.buf.is_empty() || out.remaining() >= CAPACITY {
                // Not reading ahead (or the caller asks for as much): read straight into the
                // caller's buffer, and read ahead from now on if that read came back full.
                let asked = out.remaining();
                let before = out.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                let got = out.filled().len() - before;
                if got == asked && asked > 0 && asked < CAPACITY && this.buf.is_empty() {
                    this.buf = vec![0; CAPACITY];
                }
                return Poll::Ready(Ok(()));
            }
            let mut ahead = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
            this.pos = 0;
            this.end = ahead.filled().len();
        }
        let n = out.remaining().min(this.end - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.end && this.end < SMALL_READ {
            // The peer paused (or closed): stop reading ahead until data streams again.
            this.buf = Vec::new();
            this.pos = 0;
            this.end = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Counts the reads made on the stream underneath.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    /// Reads `len` bytes in pieces of `piece`, the way rustls does.
    async fn read_in_pieces<S: AsyncRead + Unpin>(
        r: &mut ReadAhead<S>,
        len: usize,
        piece: usize,
    ) -> io::Result<Vec<u8>> {
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; piece];
        while got.len() < len {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(got)
    }

    #[tokio::test]
    async fn a_stream_read_in_small_pieces_arrives_whole_in_few_large_reads() -> io::Result<()> {
        let body = pattern(4 << 20);
        let (a, mut b) = tokio::io::duplex(CAPACITY);
        let sent = body.clone();
        let writer = tokio::spawn(async move { b.write_all(&sent).await });
        let mut r = ReadAhead::new(Counted { inner: a, reads: 0 });
        let got = read_in_pieces(&mut r, body.len(), 4096).await?;
        writer.await.map_err(io::Error::other)??;
        assert!(got == body, "the bytes differ");
        // 1,024 reads of 4 KiB straight from the stream; reading ahead needs about 64 (and a
        // few more when the writer is behind).
        let reads = r.get_ref().reads;
        assert!(reads < 200, "{reads} reads for 4 MiB");
        Ok(())
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() -> io::Result<()> {
        let (a, mut b) = tokio::io::duplex(CAPACITY);
        let mut r = ReadAhead::new(a);
        b.write_all(b"LIST_FILES\n").await?;
        let got = read_in_pieces(&mut r, 11, 4096).await?;
        assert_eq!(got, b"LIST_FILES\n");
        assert!(!r.holds_buffer());
        // A body streams: the buffer comes; the stream pauses: it goes.
        let body = pattern(256 << 10);
        let sent = body.clone();
        let writer = tokio::spawn(async move { b.write_all(&sent).await.map(|()| b) });
        let got = read_in_pieces(&mut r, 8192, 4096).await?;
        assert_eq!(got, body[..8192]);
        assert!(r.holds_buffer());
        let rest = read_in_pieces(&mut r, body.len() - 8192, 4096).await?;
        assert!(rest == body[8192..], "the bytes differ");
        let mut b = writer.await.map_err(io::Error::other)??;
        b.write_all(b"BYE\n").await?;
        assert_eq!(read_in_pieces(&mut r, 4, 4096).await?, b"BYE\n");
        assert!(!r.holds_buffer());
        drop(b);
        assert_eq!(r.read(&mut [0u8; 16]).await?, 0);
        Ok(())
    }

    #[tokio::test]
    async fn writes_pass_through() -> io::Result<()> {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = ReadAhead::new(a);
        w.write_all(b"226 ok\n").await?;
        w.flush().await?;
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await?;
        assert_eq!(&got, b"226 ok\n");
        Ok(())
    }
}

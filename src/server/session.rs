//! One connection's dialogue (`PROTOCOL.md` sections 3 and 5).
//!
//! A session reads a line, decodes it into a [`Request`], runs it against the store on a
//! blocking thread, and queues the reply. Bodies are streamed in bounded chunks: an upload's
//! bytes are hashed and written on a blocking thread while the next chunk is read from the
//! socket, and a download's are read from disk on one while the previous chunk is sent.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ServerConfig, reply_for};
use crate::name::{FileName, escape};
use crate::protocol::{
    Code, DecodeError, DownloadHeader, FileRef, ListingEntry, PROTOCOL_VERSION, RenameArgs, Reply,
    Request, UploadSpec, ValueError,
};
use crate::store::{Body, Download, FileEntry, Store, StoreError, Target, Upload};
use crate::transport::{Connection, Stream, TransportError};

/// Size of one body chunk. Small enough that a hundred transfers stay within a few tens of MiB,
/// large enough that per-chunk overhead is lost in the hashing time.
const CHUNK: usize = 128 * 1024;
/// Chunks in flight between the socket and the disk thread, per transfer.
const DEPTH: usize = 3;
/// Files up to this size are read in one go with the open, saving a thread hop per chunk.
const INLINE_BODY: u64 = 64 * 1024;

/// Whether the connection goes on after a command.
enum Flow {
    Continue,
    Close,
}

/// What waiting for a line produced.
enum Next {
    Line(Vec<u8>),
    /// The peer closed the connection, or it broke; nothing more can be said.
    Gone,
    /// The session ends with this reply (timeout, over-long line, shutdown).
    End(Reply),
}

struct Session<'a, S> {
    conn: Connection<S>,
    peer: SocketAddr,
    store: Arc<Store>,
    config: &'a ServerConfig,
    shutdown: &'a CancellationToken,
    /// Set when a prompt's answer never came (timeout, shutdown, close): the session is over.
    ended: bool,
    /// Small pipelined uploads received whole, waiting for one group commit.
    batch: Vec<(FileName, Vec<u8>)>,
    batch_bytes: usize,
}

/// A group commit happens at the latest after this many files or bytes.
const BATCH_FILES: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// Runs the dialogue of one connection until it ends. Never fails: every error is either
/// answered on the wire or ends this connection only.
pub(super) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    store: Arc<Store>,
    config: &ServerConfig,
    shutdown: &CancellationToken,
) where
    S: Stream,
{
    let mut conn = Connection::new(stream);
    conn.set_write_timeout(Some(config.stall_timeout));
    let mut s = Session {
        conn,
        peer,
        store,
        config,
        shutdown,
        ended: false,
        batch: Vec::new(),
        batch_bytes: 0,
    };
    s.reply(Reply::new(
        Code::GREETING,
        format!("{PROTOCOL_VERSION} ready"),
    ));
    loop {
        let next = if s.batch.is_empty() {
            s.next_line().await
        } else if let Some(next) = s.next_line_now() {
            next
        } else {
            // The client has sent nothing more: it may be waiting for these replies.
            s.commit_batch().await;
            s.next_line().await
        };
        let line = match next {
            Next::Line(line) => line,
            Next::Gone => {
                // Bodies that arrived whole are stored even if their sender left (a body cut
                // short never made it into the batch).
                s.commit_batch().await;
                return;
            }
            Next::End(reply) => {
                s.commit_batch().await;
                s.reply(reply);
                break;
            }
        };
        tracing::debug!(peer = %s.peer, "> {}", escape(&String::from_utf8_lossy(&line)));
        let flow = match Request::decode(&line) {
            Ok(Request::Put(spec))
                if spec.size <= INLINE_BODY && spec.size <= s.store.config().max_file_size =>
            {
                s.stage_put(spec).await
            }
            Ok(req) => {
                s.commit_batch().await;
                s.handle(req).await
            }
            Err(e) => {
                s.commit_batch().await;
                s.refuse_request(&e).await
            }
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => break,
            Err(e) => {
                tracing::debug!(peer = %s.peer, "connection dropped: {e}");
                // Bodies staged before the one that broke off arrived whole: store them.
                s.commit_batch().await;
                return;
            }
        }
    }
    s.conn.shutdown(Some(s.config.stall_timeout)).await;
}

impl<S: Stream> Session<'_, S> {
    fn reply(&mut self, reply: Reply) {
        tracing::debug!(peer = %self.peer, "< {reply}");
        self.conn.queue_reply(&reply);
    }

    /// Waits for the next line, ending the session on silence, shutdown or broken framing.
    async fn next_line(&mut self) -> Next {
        let idle = self.config.idle_timeout;
        let read = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Next::End(Reply::new(Code::UNAVAILABLE, "Server shutting down")),
            read = self.conn.read_line(Some(idle)) => read.map(|l| l.map(<[u8]>::to_vec)),
        };
        match read {
            Ok(Some(line)) => Next::Line(line),
            Ok(None) | Err(TransportError::Closed | TransportError::Io(_)) => Next::Gone,
            // Either the client sent nothing (the idle timeout) or it stopped reading its
            // replies (the stall timeout on the flush that comes before each read).
            Err(TransportError::TimedOut(t)) => Next::End(Reply::new(
                Code::IDLE_TIMEOUT,
                if t == idle {
                    format!("Idle for {}s; closing the connection", t.as_secs())
                } else {
                    format!(
                        "Replies not read for {}s; closing the connection",
                        t.as_secs()
                    )
                },
            )),
            Err(TransportError::LineTooLong(n)) => Next::End(Reply::new(
                Code::LINE_TOO_LONG,
                format!("Line longer than {n} bytes; closing the connection"),
            )),
        }
    }

    /// The next line if it can be had without waiting for the peer.
    fn next_line_now(&mut self) -> Option<Next> {
        let mut fut = std::pin::pin!(self.next_line());
        // Reading is cancel-safe (a partial line is kept), so polling once and dropping the
        // future loses nothing.
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(next) => Some(next),
            Poll::Pending => None,
        }
    }

    /// Reads a small `PUT` body and adds it to the batch, committing when the batch is full.
    async fn stage_put(&mut self, spec: UploadSpec) -> Result<Flow, TransportError> {
        let mut body = vec![0u8; usize::try_from(spec.size).unwrap_or(0)];
        let mut got = 0;
        while got < body.len() {
            got += self
                .conn
                .read_body(&mut body[got..], Some(self.config.stall_timeout))
                .await?;
        }
        self.batch_bytes += body.len();
        self.batch.push((spec.name, body));
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.commit_batch().await;
        }
        Ok(Flow::Continue)
    }

    /// Stores the batched uploads with one group commit and queues their replies, in order.
    async fn commit_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let names: Vec<String> = items.iter().map(|(n, _)| n.to_string()).collect();
        let results = self.store.put_batch(items).await;
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(id) => {
                    tracing::info!(peer = %self.peer, "stored {name} ({id})");
                    self.reply(Reply::new(Code::STORED, format!("{id} Upload complete")));
                }
                Err(e) => self.refuse(&e),
            }
        }
    }

    /// Asks for one more line (a prompt's answer); `Err(flow)` when the session must stop.
    async fn prompt(&mut self, reply: Reply) -> Result<Vec<u8>, Result<Flow, TransportError>> {
        self.reply(reply);
        match self.next_line().await {
            Next::Line(l) => {
                tracing::debug!(peer = %self.peer, "> {}", escape(&String::from_utf8_lossy(&l)));
                Ok(l)
            }
            Next::Gone => Err(Ok(Flow::Close)),
            Next::End(r) => {
                self.reply(r);
                Err(Ok(Flow::Close))
            }
        }
    }

    async fn refuse_request(&mut self, e: &DecodeError) -> Result<Flow, TransportError> {
        if let Some(size) = e.pending_body() {
            let max = self.store.config().max_file_size;
            if size > max {
                // As for any PUT over the limit: the body is not read, so the connection ends.
                self.refuse(&StoreError::TooLarge { size, max });
                return Ok(Flow::Close);
            }
            self.conn
                .discard_body(size, Some(self.config.stall_timeout))
                .await?;
        }
        let code = match e {
            DecodeError::Name(_) | DecodeError::PutName { .. } => Code::INVALID_NAME,
            _ => Code::BAD_REQUEST,
        };
        self.reply(Reply::new(code, capitalised(e)));
        Ok(if matches!(e, DecodeError::PutUnframed(_)) {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    async fn handle(&mut self, req: Request) -> Result<Flow, TransportError> {
        match req {
            Request::ListFiles => self.list().await,
            Request::Help => {
                self.help();
                Ok(Flow::Continue)
            }
            Request::Disconnect => {
                self.reply(Reply::new(Code::BYE, "Bye"));
                Ok(Flow::Close)
            }
            Request::Upload(Some(spec)) => self.upload(spec, false).await,
            Request::Upload(None) => {
                let line = match self
                    .prompt(Reply::new(Code::SEND_SPEC, "Send file name;file size"))
                    .await
                {
                    Ok(l) => l,
                    Err(flow) => return flow,
                };
                match decode_text(&line)
                    .and_then(|t| UploadSpec::decode(t).map_err(DecodeError::from))
                {
                    Ok(spec) => self.upload(spec, false).await,
                    Err(e) => self.refuse_request(&e).await,
                }
            }
            Request::Put(spec) => self.upload(spec, true).await,
            Request::Download(target) => {
                let Some(target) = (match target {
                    Some(t) => Some(t),
                    None => {
                        self.ask_ref(Reply::new(Code::SEND_ID, "Please send a file ID"))
                            .await?
                    }
                }) else {
                    return Ok(self.flow_after_prompt());
                };
                self.download(target).await
            }
            Request::Delete(target) => {
                let Some(target) = (match target {
                    Some(t) => Some(t),
                    None => {
                        self.ask_ref(Reply::new(
                            Code::SEND_ID,
                            "Please send the file ID or name to delete",
                        ))
                        .await?
                    }
                }) else {
                    return Ok(self.flow_after_prompt());
                };
                match self.store.delete(&target_of(target)).await {
                    Ok(name) => {
                        self.reply(Reply::new(Code::DONE, format!("Deleted {}", name.as_str())))
                    }
                    Err(e) => self.refuse(&e),
                }
                Ok(Flow::Continue)
            }
            Request::Rename(args) => self.rename(args).await,
        }
    }

    /// After a prompt whose answer was refused (or the session ended), go on unless it ended.
    fn flow_after_prompt(&self) -> Flow {
        if self.ended {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Asks for an id-or-name. `Ok(None)` when the answer was refused (already replied) or the
    /// session ended (then `self.ended` is set).
    async fn ask_ref(&mut self, reply: Reply) -> Result<Option<FileRef>, TransportError> {
        let line = match self.prompt(reply).await {
            Ok(l) => l,
            Err(_) => {
                self.ended = true;
                return Ok(None);
            }
        };
        match decode_text(&line).and_then(|t| FileRef::parse(t).map_err(DecodeError::from)) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.refuse_request(&e).await?;
                Ok(None)
            }
        }
    }

    fn refuse(&mut self, e: &StoreError) {
        if e.is_internal() {
            tracing::error!(peer = %self.peer, "{e}");
        }
        self.reply(reply_for(e));
    }

    fn help(&mut self) {
        const LINES: [&str; 8] = [
            "LIST_FILES             list the files, one id;name;size per line (also LIST)",
            "UPLOAD [name;size]     upload a file: send its bytes after 350 (also PUT name;size, body at once)",
            "DOWNLOAD [id-or-name]  download a file: 213 size id name, then its bytes",
            "RENAME [old<TAB>new]   rename a file (also CHANGE, MV)",
            "DELETE [id-or-name]    delete a file (also RM)",
            "HELP                   this list",
            "DISCONNECT             end the session (also BYE, QUIT, EXIT)",
            "See PROTOCOL.md for the exact dialogue of each command",
        ];
        self.reply(Reply::new(Code::HELP, format!("{} lines", LINES.len())));
        for line in LINES {
            self.conn.queue_bytes(line.as_bytes());
            self.conn.queue_bytes(b"\n");
        }
    }

    async fn list(&mut self) -> Result<Flow, TransportError> {
        let listing = match self.store.list().await {
            Ok(l) => l,
            Err(e) => {
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        let n = listing.entries.len();
        let mut text = match n {
            0 => "0 No files available at the moment".to_owned(),
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        };
        if listing.pending > 0 {
            text.push_str(&format!(" ({} more being indexed)", listing.pending));
        }
        self.reply(Reply::new(Code::LISTING, text));
        let mut out = String::with_capacity(n * 64);
        for entry in listing.entries {
            let FileEntry { id, name, size } = entry;
            ListingEntry { id, name, size }.encode_into(&mut out);
            out.push('\n');
        }
        self.conn.queue_bytes(out.as_bytes());
        Ok(Flow::Continue)
    }

    async fn rename(&mut self, args: RenameArgs) -> Result<Flow, TransportError> {
        let (from, to) = match args {
            RenameArgs::Both(from, to) => (from, to),
            RenameArgs::Prompt | RenameArgs::From(_) => {
                let from = match args {
                    RenameArgs::From(f) => f,
                    _ => match self
                        .ask_ref(Reply::new(
                            Code::SEND_CURRENT_NAME,
                            "Send the current name or ID",
                        ))
                        .await?
                    {
                        Some(f) => f,
                        None => return Ok(self.flow_after_prompt()),
                    },
                };
                let line = match self
                    .prompt(Reply::new(Code::SEND_NEW_NAME, "Send the new name"))
                    .await
                {
                    Ok(l) => l,
                    Err(flow) => return flow,
                };
                match decode_text(&line).and_then(|t| FileName::parse(t).map_err(DecodeError::from))
                {
                    Ok(to) => (from, to),
                    Err(e) => return self.refuse_request(&e).await,
                }
            }
        };
        match self.store.rename(&target_of(from), &to).await {
            Ok(old) => self.reply(Reply::new(
                Code::DONE,
                format!("Renamed {} to {}", old.as_str(), to.as_str()),
            )),
            Err(e) => self.refuse(&e),
        }
        Ok(Flow::Continue)
    }

    async fn upload(&mut self, spec: UploadSpec, pipelined: bool) -> Result<Flow, TransportError> {
        let stall = Some(self.config.stall_timeout);
        let UploadSpec { name, size } = spec;
        let shown = name.to_string();
        let upload = match self.store.begin_upload(name, size).await {
            Ok(u) => u,
            Err(e) => {
                if pipelined {
                    if matches!(e, StoreError::TooLarge { .. }) {
                        // Not reading that many bytes; the body's end cannot be found otherwise.
                        self.refuse(&e);
                        return Ok(Flow::Close);
                    }
                    self.conn.discard_body(size, stall).await?;
                }
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        if !pipelined {
            self.reply(Reply::new(
                Code::READY,
                format!("Ready to receive {size} bytes"),
            ));
            self.conn.flush(stall).await?;
        }
        let shutdown = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        let outcome = tokio::select! {
            r = receive_body(&mut self.conn, upload, size, self.config.stall_timeout) => r?,
            () = after_grace(&shutdown, grace) => return Ok(Flow::Close),
        };
        match outcome {
            Ok(id) => {
                tracing::info!(peer = %self.peer, "stored {shown} ({size} bytes, {id})");
                self.reply(Reply::new(Code::STORED, format!("{id} Upload complete")));
            }
            Err(e) => self.refuse(&e),
        }
        Ok(Flow::Continue)
    }

    async fn download(&mut self, target: FileRef) -> Result<Flow, TransportError> {
        let d = match self.store.download(&target_of(target)).await {
            Ok(d) => d,
            Err(e) => {
                self.refuse(&e);
                return Ok(Flow::Continue);
            }
        };
        let header = DownloadHeader {
            size: d.size,
            id: d.id,
            name: d.name.clone(),
        };
        self.reply(Reply::new(Code::FILE_FOLLOWS, header.encode()));
        let stall = Some(self.config.stall_timeout);
        if let Body::Bytes(body) = &d.body {
            if body.len() as u64 != d.size {
                // The file shrank after it was opened; the promised length cannot be kept.
                tracing::warn!(peer = %self.peer, "{} changed while being sent", d.name);
                return Ok(Flow::Close);
            }
            self.conn.queue_bytes(body);
            return Ok(Flow::Continue);
        }
        let shutdown = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        let name = d.name.clone();
        let sent = tokio::select! {
            r = send_body(&mut self.conn, d, stall) => r?,
            () = after_grace(&shutdown, grace) => return Ok(Flow::Close),
        };
        if !sent {
            tracing::warn!(peer = %self.peer, "{name} shrank while being sent; closing the connection");
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }
}

/// Resolves when shutdown has started and the grace period has passed.
async fn after_grace(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Moves `size` bytes from the connection into `upload`, hashing and writing on a blocking
/// thread while the next chunk is read. The outer error is a broken connection; the inner one
/// a refused or failed upload, after which the body has still been read in full so the
/// connection stays in step.
async fn receive_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    mut upload: Upload,
    size: u64,
    stall: Duration,
) -> Result<Result<crate::protocol::FileId, StoreError>, TransportError> {
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
async fn send_body<S: Stream>(
    conn: &mut Connection<S>,
    d: Download,
    stall: Option<Duration>,
) -> Result<bool, TransportError> {
    let file = match d.body {
        Body::File(file) => file,
        Body::Bytes(bytes) => {
            conn.write_body(&bytes, stall).await?;
            return Ok(bytes.len() as u64 == d.size);
        }
        Body::Reader(reader) => return send_reader(conn, reader, d.size, stall).await,
    };
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    if let Some(sent) = conn.send_file(&file, 0, d.size, stall).await? {
        return Ok(sent == d.size);
    }
    let (full_tx, mut full_rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(DEPTH);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(DEPTH + 1);
    let size = d.size;
    let reader = tokio::task::spawn_blocking(move || {
        let mut file = file.take(size);
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

/// Sends `size` bytes from an async reader (a backend's stream), chunk by chunk. Returns false
/// if it ended early.
async fn send_reader<S: Stream>(
    conn: &mut Connection<S>,
    mut reader: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    size: u64,
    stall: Option<Duration>,
) -> Result<bool, TransportError> {
    use tokio::io::AsyncReadExt;
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
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(join_error(&e)))
}

fn join_error(e: &tokio::task::JoinError) -> StoreError {
    StoreError::worker(e)
}

/// What a request's file reference means to the store: the same id and name.
fn target_of(r: FileRef) -> Target {
    Target {
        id: r.id,
        name: r.name,
    }
}

fn decode_text(line: &[u8]) -> Result<&str, DecodeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| DecodeError::NotUtf8)?;
    if text.is_empty() {
        Err(DecodeError::Value(ValueError::MissingField("an answer")))
    } else {
        Ok(text)
    }
}

fn capitalised(e: &DecodeError) -> String {
    let s = e.to_string();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

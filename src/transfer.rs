//! The one pipeline that moves a file body between blocking I/O and an async connection.
//!
//! Hashing costs more than anything else in a transfer (MD5 runs at about the speed of the
//! network on loopback), and file I/O blocks, so neither may run on the runtime's threads. This
//! module owns how that work is done, for the client, the server and any later front end:
//! - [`Source`]: a blocking reader (a file) feeding an async consumer (a socket) chunk by chunk,
//!   optionally hashing what it reads;
//! - [`Sink`]: an async producer (a socket) pushing chunks to a blocking consumer (a file, a
//!   staged upload), optionally hashing what passes;
//! - [`blocking`]: one short blocking job (an open, a stat, a rename, a small body in one hop).
//!
//! All of that work runs as short jobs on tokio's blocking pool, gated by one process-wide
//! semaphore of [`pool_size`] permits: no transfer owns a thread, and a stalled peer holds no
//! permit while it stalls (a job only runs over chunks that are already there, then returns).
//! Buffers are recycled: a transfer holds at most `DEPTH + 1` chunks of `CHUNK` bytes.
//!
//! It does not know about the protocol, the connection or the store: callers move the bytes
//! between the chunks and their socket, and decide what an error means.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use md5::{Digest, Md5};
use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::protocol::FileId;

/// Bytes per chunk.
///
/// One value for both sides and both directions. The per-chunk cost (a queue hand-off and, at
/// worst, a wake-up of a pool thread: a few microseconds) is about 1% of the ~200 µs MD5 takes
/// over 128 KiB, so larger chunks buy almost nothing in speed, while memory grows with them: a
/// server at its 512-connection limit holds at most 512 × (`DEPTH` + 1) × 128 KiB = 256 MiB of
/// chunks (the client used 256 KiB, the server 128 KiB; the server's number wins on memory).
pub const CHUNK: usize = 128 * 1024;

/// Chunks queued between the async side and the blocking side of one transfer, beyond the one
/// being filled. Three is enough to absorb the jitter of the pool and the network: past it,
/// one side simply sets the pace.
pub const DEPTH: usize = 3;

/// Bodies up to this size are best read or written in one blocking hop, with whatever opens
/// or commits the file ([`blocking`]): for small files that hop is most of the cost.
pub const SMALL: u64 = 64 * 1024;

/// Buffers one transfer may allocate.
const MAX_BUFFERS: usize = DEPTH + 1;

/// How many blocking jobs run at once, process-wide: twice the cores (at least 4), since some
/// jobs wait on the disk rather than use a core, and a job is short (at most `DEPTH` chunks)
/// so a queue for a permit is short too.
#[must_use]
pub fn pool_size() -> usize {
    (std::thread::available_parallelism().map_or(2, std::num::NonZero::get) * 2).max(4)
}

fn permits() -> &'static Arc<Semaphore> {
    static POOL: OnceLock<Arc<Semaphore>> = OnceLock::new();
    POOL.get_or_init(|| Arc::new(Semaphore::new(pool_size())))
}

/// Runs `f` on the blocking pool once a permit is free, without waiting for it. `f` is dropped
/// unrun if the runtime shuts down first (the jobs below clean up on drop).
fn spawn_job(handle: &Handle, f: impl FnOnce() + Send + 'static) {
    let run = |permit: OwnedSemaphorePermit, handle: &Handle| {
        handle.spawn_blocking(move || {
            let _permit = permit;
            f();
        })
    };
    match Arc::clone(permits()).try_acquire_owned() {
        Ok(permit) => drop(run(permit, handle)),
        Err(_) => {
            let h = handle.clone();
            drop(handle.spawn(async move {
                if let Ok(permit) = Arc::clone(permits()).acquire_owned().await {
                    let _ = run(permit, &h).await;
                }
            }));
        }
    }
}

/// Runs a short blocking job (open, stat, rename, a small body) on the shared pool.
///
/// # Errors
/// An [`io::Error`] if the job panicked or the runtime is shutting down.
pub async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let permit = Arc::clone(permits())
        .acquire_owned()
        .await
        .map_err(io::Error::other)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| io::Error::other(format!("a blocking job failed: {e}")))
}

/// The MD5 of `body`, for a small body already in memory (call it inside [`blocking`]).
#[must_use]
pub fn md5(body: &[u8]) -> FileId {
    FileId(Md5::digest(body).into())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job that panicked left plain data behind, still consistent enough to be dropped.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn runtime() -> io::Result<Handle> {
    Handle::try_current().map_err(io::Error::other)
}

/// Reads until `buf` is full or the reader ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Source

/// A blocking reader feeding chunks to async code: reads exactly `size` bytes (fewer if the
/// reader ends early), optionally hashing them, at most `DEPTH + 1` chunks ahead.
///
/// Chunks come from [`next`](Self::next) in order; dropping a [`Chunk`] hands its buffer back
/// for the next read, so hold at most one at a time.
pub struct Source {
    shared: Arc<SourceShared>,
    chunks: mpsc::UnboundedReceiver<io::Result<Chunk>>,
    size: u64,
    received: u64,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("size", &self.size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

struct SourceShared {
    handle: Handle,
    /// The reader, between jobs (a running job holds it).
    reading: Mutex<Option<Reading>>,
    buffers: Mutex<Buffers>,
    /// Signalled when a job stops.
    idle: Notify,
}

struct Reading {
    reader: io::Take<Box<dyn Read + Send>>,
    hasher: Option<Md5>,
    /// Dropped once the reader is done: the consumer then sees the end.
    chunks: Option<mpsc::UnboundedSender<io::Result<Chunk>>>,
}

#[derive(Default)]
struct Buffers {
    spare: Vec<Vec<u8>>,
    made: usize,
    running: bool,
    done: bool,
}

/// One chunk of a [`Source`]; its buffer goes back to the source when dropped.
pub struct Chunk {
    buf: Vec<u8>,
    home: Option<Arc<SourceShared>>,
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            let buf = std::mem::take(&mut self.buf);
            let start = {
                let mut b = lock(&home.buffers);
                b.spare.push(buf);
                let start = !b.running && !b.done;
                b.running |= start;
                start
            };
            if start {
                let job = Arc::clone(&home);
                spawn_job(&home.handle, move || read_job(&job));
            }
        }
    }
}

impl Source {
    /// Starts reading `size` bytes of `reader` on the blocking pool, hashing them if `hash`.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn new(reader: impl Read + Send + 'static, size: u64, hash: bool) -> io::Result<Self> {
        let (tx, chunks) = mpsc::unbounded_channel();
        let reader: Box<dyn Read + Send> = Box::new(reader);
        let shared = Arc::new(SourceShared {
            handle: runtime()?,
            reading: Mutex::new(Some(Reading {
                reader: reader.take(size),
                hasher: hash.then(Md5::new),
                chunks: Some(tx),
            })),
            buffers: Mutex::new(Buffers {
                running: true,
                ..Buffers::default()
            }),
            idle: Notify::new(),
        });
        let job = Arc::clone(&shared);
        spawn_job(&shared.handle, move || read_job(&job));
        Ok(Self {
            shared,
            chunks,
            size,
            received: 0,
        })
    }

    /// The next chunk, `None` once the reader is done (at `size` bytes, or earlier if it ended
    /// early: see [`finish`](Self::finish)).
    pub async fn next(&mut self) -> Option<io::Result<Chunk>> {
        let item = self.chunks.recv().await;
        if let Some(Ok(chunk)) = &item {
            self.received += chunk.len() as u64;
        }
        item
    }

    /// Waits for the reader to stop and returns the MD5 of what was read (when hashing).
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if fewer than `size` bytes were taken with
    /// [`next`](Self::next) (the file shrank, or the consumer stopped early), or an error if a
    /// job panicked.
    pub async fn finish(mut self) -> io::Result<Option<FileId>> {
        // Nothing more will be taken: no new job, and unread chunks go.
        lock(&self.shared.buffers).done = true;
        self.chunks.close();
        while self.chunks.try_recv().is_ok() {}
        loop {
            let idle = self.shared.idle.notified();
            if !lock(&self.shared.buffers).running {
                break;
            }
            idle.await;
        }
        let reading = lock(&self.shared.reading)
            .take()
            .ok_or_else(|| io::Error::other("a transfer job failed"))?;
        if self.received < self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("ended after {} of {} bytes", self.received, self.size),
            ));
        }
        Ok(reading.hasher.map(|h| FileId(h.finalize().into())))
    }
}

/// Marks the job stopped, also when it panics.
struct Stopped<'a>(&'a SourceShared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        lock(&self.0.buffers).running = false;
        self.0.idle.notify_one();
    }
}

/// Fills spare buffers until none is left or the reader is done.
fn read_job(shared: &Arc<SourceShared>) {
    let stopped = Stopped(shared);
    let Some(mut r) = lock(&shared.reading).take() else {
        return;
    };
    loop {
        if r.reader.limit() == 0 {
            r.chunks = None;
        }
        if r.chunks.is_none() {
            break;
        }
        let buf = {
            let mut b = lock(&shared.buffers);
            match b.spare.pop() {
                Some(buf) => Some(buf),
                None if b.made < MAX_BUFFERS => {
                    b.made += 1;
                    Some(Vec::new())
                }
                None => None,
            }
        };
        let Some(mut buf) = buf else {
            // Out of buffers: park the reader, and stop unless one came back meanwhile (the
            // consumer starts no job while this one runs).
            *lock(&shared.reading) = Some(r);
            let mut b = lock(&shared.buffers);
            if b.spare.is_empty() {
                b.running = false;
                drop(b);
                shared.idle.notify_one();
                std::mem::forget(stopped);
                return;
            }
            drop(b);
            match lock(&shared.reading).take() {
                Some(again) => r = again,
                None => return,
            }
            continue;
        };
        let Some(tx) = r.chunks.clone() else {
            break;
        };
        buf.resize(CHUNK, 0);
        let read = fill(&mut r.reader, &mut buf);
        let item = match read {
            Ok(0) => {
                lock(&shared.buffers).spare.push(buf);
                r.chunks = None;
                break;
            }
            Ok(n) => {
                buf.truncate(n);
                if let Some(h) = r.hasher.as_mut() {
                    h.update(&buf);
                }
                Ok(Chunk {
                    buf,
                    home: Some(Arc::clone(shared)),
                })
            }
            Err(e) => {
                lock(&shared.buffers).spare.push(buf);
                r.chunks = None;
                Err(e)
            }
        };
        let failed = item.is_err();
        if tx.send(item).is_err() {
            // The consumer is gone.
            r.chunks = None;
        }
        if failed {
            r.chunks = None;
        }
    }
    lock(&shared.buffers).done = true;
    *lock(&shared.reading) = Some(r);
    drop(stopped);
}

// ---------------------------------------------------------------------------------------------
// Sink

/// Why a [`Sink`] failed.
#[derive(Debug)]
pub enum SinkError<E> {
    /// The write function failed; the chunks after it were dropped.
    Write(E),
    /// A job panicked or the runtime shut down; the target is lost.
    Worker,
}

impl<E: std::fmt::Display> std::fmt::Display for SinkError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Write(e) => e.fmt(f),
            Self::Worker => f.write_str("a transfer job failed"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SinkError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Write(e) => e.source(),
            Self::Worker => None,
        }
    }
}

type WriteFn<T, E> = Box<dyn FnMut(&mut T, &[u8]) -> Result<(), E> + Send>;

/// Async code pushing chunks to a blocking writer: each chunk is hashed (if asked) and handed
/// to a write function on the blocking pool while the next one is received.
///
/// Take a buffer with [`buffer`](Self::buffer), fill it, [`push`](Self::push) it. After a write
/// error the sink keeps taking chunks and drops them, so the producer can read the rest of a
/// body and keep its connection in step; [`failed`](Self::failed) tells when it may stop early.
pub struct Sink<T, E> {
    shared: Arc<SinkShared<T, E>>,
}

impl<T, E> std::fmt::Debug for Sink<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

struct SinkShared<T, E> {
    handle: Handle,
    queue: Mutex<Queue>,
    /// The target, between jobs (a running job holds it).
    writing: Mutex<Option<Writing<T, E>>>,
    /// Signalled when a buffer comes back or a job stops.
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    made: usize,
    running: bool,
    failed: bool,
}

struct Writing<T, E> {
    target: T,
    write: WriteFn<T, E>,
    hasher: Option<Md5>,
    error: Option<E>,
}

impl<T: Send + 'static, E: Send + 'static> Sink<T, E> {
    /// A sink writing into `target` with `write`, hashing what passes if `hash`.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn new(
        target: T,
        hash: bool,
        write: impl FnMut(&mut T, &[u8]) -> Result<(), E> + Send + 'static,
    ) -> io::Result<Self> {
        Ok(Self {
            shared: Arc::new(SinkShared {
                handle: runtime()?,
                queue: Mutex::new(Queue::default()),
                writing: Mutex::new(Some(Writing {
                    target,
                    write: Box::new(write),
                    hasher: hash.then(Md5::new),
                    error: None,
                })),
                ready: Notify::new(),
            }),
        })
    }

    /// A buffer of `CHUNK` bytes to receive the next chunk into: a recycled one, or a new one
    /// while fewer than `DEPTH + 1` exist; otherwise waits for the writer to free one.
    pub async fn buffer(&mut self) -> Vec<u8> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let mut q = lock(&self.shared.queue);
                if let Some(mut buf) = q.spare.pop() {
                    buf.resize(CHUNK, 0);
                    return buf;
                }
                if q.made < MAX_BUFFERS || (!q.running && q.chunks.is_empty()) {
                    // (The second case only if a job was lost with its buffers.)
                    q.made += 1;
                    return vec![0; CHUNK];
                }
            }
            ready.await;
        }
    }

    /// Queues a filled chunk (truncated to its length) for hashing and writing; after a write
    /// error it is dropped instead.
    pub fn push(&mut self, chunk: Vec<u8>) {
        let start = {
            let mut q = lock(&self.shared.queue);
            if q.failed {
                q.spare.push(chunk);
                false
            } else {
                q.chunks.push_back(chunk);
                let start = !q.running;
                q.running = true;
                start
            }
        };
        if start {
            let job = Arc::clone(&self.shared);
            spawn_job(&self.shared.handle, move || write_job(&job));
        }
    }

    /// Whether the writer has failed (the rest of the chunks will be dropped).
    #[must_use]
    pub fn failed(&self) -> bool {
        lock(&self.shared.queue).failed
    }

    /// Waits for the last chunk to be written; returns the target and the MD5 of everything
    /// pushed (when hashing).
    ///
    /// # Errors
    /// The write function's first error, or [`SinkError::Worker`] if a job was lost.
    pub async fn finish(self) -> Result<(T, Option<FileId>), SinkError<E>> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let q = lock(&self.shared.queue);
                if !q.running {
                    break;
                }
            }
            ready.await;
        }
        let w = lock(&self.shared.writing).take().ok_or(SinkError::Worker)?;
        if let Some(e) = w.error {
            return Err(SinkError::Write(e));
        }
        if !lock(&self.shared.queue).chunks.is_empty() {
            return Err(SinkError::Worker);
        }
        Ok((w.target, w.hasher.map(|h| FileId(h.finalize().into()))))
    }
}

/// Marks the job stopped, also when it panics.
struct Parked<'a, T, E>(&'a SinkShared<T, E>);

impl<T, E> Drop for Parked<'_, T, E> {
    fn drop(&mut self) {
        lock(&self.0.queue).running = false;
        self.0.ready.notify_one();
    }
}

/// Hashes and writes queued chunks until the queue is empty.
fn write_job<T, E>(shared: &Arc<SinkShared<T, E>>) {
    let parked = Parked(shared);
    let Some(mut w) = lock(&shared.writing).take() else {
        return;
    };
    loop {
        let next = lock(&shared.queue).chunks.pop_front();
        let Some(chunk) = next else {
            // Park the target, then stop unless a chunk came in meanwhile (the producer starts
            // no job while this one runs).
            *lock(&shared.writing) = Some(w);
            let mut q = lock(&shared.queue);
            if q.chunks.is_empty() {
                q.running = false;
                drop(q);
                shared.ready.notify_one();
                std::mem::forget(parked);
                return;
            }
            drop(q);
            match lock(&shared.writing).take() {
                Some(again) => w = again,
                None => return,
            }
            continue;
        };
        if w.error.is_none() {
            if let Some(h) = w.hasher.as_mut() {
                h.update(&chunk);
            }
            if let Err(e) = (w.write)(&mut w.target, &chunk) {
                w.error = Some(e);
                let mut q = lock(&shared.queue);
                q.failed = true;
                // What is queued will not be written: hand the buffers back at once.
                let dropped: Vec<_> = q.chunks.drain(..).collect();
                q.spare.extend(dropped);
            }
        }
        lock(&shared.queue).spare.push(chunk);
        shared.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    const SIZES: [usize; 7] = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7, 3 << 20];

    #[tokio::test]
    async fn source_round_trips() -> TestResult {
        for size in SIZES {
            let body = data(size);
            let mut source = Source::new(io::Cursor::new(body.clone()), size as u64, true)?;
            let mut got = Vec::new();
            while let Some(chunk) = source.next().await {
                let chunk = chunk?;
                assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
                got.extend_from_slice(&chunk);
            }
            assert_eq!(got, body, "size {size}");
            assert_eq!(source.finish().await?, Some(md5(&body)), "size {size}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn source_without_hash_stops_at_size() -> TestResult {
        // The reader has more than announced (the file grew): only `size` bytes are taken.
        let body = data(3 * CHUNK);
        let mut source = Source::new(io::Cursor::new(body.clone()), 2 * CHUNK as u64 + 5, false)?;
        let mut got = Vec::new();
        while let Some(chunk) = source.next().await {
            got.extend_from_slice(&chunk?);
        }
        assert_eq!(got, body[..2 * CHUNK + 5]);
        assert_eq!(source.finish().await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn a_short_read_is_reported() -> TestResult {
        // The file shrank: 100 bytes announced, 60 there.
        let mut source = Source::new(io::Cursor::new(data(60)), 100, true)?;
        let mut got = 0;
        while let Some(chunk) = source.next().await {
            got += chunk?.len();
        }
        assert_eq!(got, 60);
        let e = source.finish().await.err().ok_or("no error")?;
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        Ok(())
    }

    /// A reader that fails after `ok` bytes.
    struct Failing {
        ok: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.ok);
            buf[..n].fill(7);
            self.ok -= n;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_read_error_comes_in_order() -> TestResult {
        let mut source = Source::new(Failing { ok: CHUNK + 10 }, 4 * CHUNK as u64, true)?;
        let mut got = 0;
        let mut error = None;
        while let Some(chunk) = source.next().await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(e) => error = Some(e),
            }
        }
        // The first full chunk, then an error (the partial second chunk is not passed on).
        assert_eq!(got, CHUNK);
        assert_eq!(error.ok_or("no error")?.to_string(), "disk on fire");
        assert!(source.finish().await.is_err());
        Ok(())
    }

    /// Counts the buffers a source allocates while the consumer is slow.
    #[tokio::test]
    async fn source_buffers_are_bounded() -> TestResult {
        let size = 40 * CHUNK;
        let mut source = Source::new(io::Cursor::new(data(size)), size as u64, false)?;
        let mut seen = std::collections::HashSet::new();
        while let Some(chunk) = source.next().await {
            let chunk = chunk?;
            seen.insert(chunk.as_ptr() as usize);
            // Let the reader run ahead as far as it can.
            tokio::task::yield_now().await;
        }
        assert!(seen.len() <= MAX_BUFFERS, "{} buffers", seen.len());
        assert_eq!(lock(&source.shared.buffers).made, seen.len());
        source.finish().await?;
        Ok(())
    }

    async fn sink_all<T: Send + 'static, E: Send + 'static>(
        sink: &mut Sink<T, E>,
        body: &[u8],
    ) -> usize {
        let mut buffers = std::collections::HashSet::new();
        for piece in body.chunks(CHUNK) {
            let mut buf = sink.buffer().await;
            buffers.insert(buf.as_ptr() as usize);
            buf[..piece.len()].copy_from_slice(piece);
            buf.truncate(piece.len());
            sink.push(buf);
        }
        buffers.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sink_round_trips() -> TestResult {
        for size in SIZES {
            let body = data(size);
            let mut sink = Sink::new(Vec::new(), true, |out: &mut Vec<u8>, b: &[u8]| {
                out.extend_from_slice(b);
                Ok::<_, io::Error>(())
            })?;
            let buffers = sink_all(&mut sink, &body).await;
            assert!(buffers <= MAX_BUFFERS, "{buffers} buffers");
            let (out, id) = sink.finish().await.map_err(|e| e.to_string())?;
            assert_eq!(out, body, "size {size}");
            assert_eq!(id, Some(md5(&body)));
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sink_buffers_are_bounded_with_a_slow_writer() -> TestResult {
        let mut sink = Sink::new(0usize, false, |n: &mut usize, b: &[u8]| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            *n += b.len();
            Ok::<_, io::Error>(())
        })?;
        let body = data(30 * CHUNK);
        let buffers = sink_all(&mut sink, &body).await;
        assert!(buffers <= MAX_BUFFERS, "{buffers} buffers");
        assert_eq!(lock(&sink.shared.queue).made, buffers);
        let (n, id) = sink.finish().await.map_err(|e| e.to_string())?;
        assert_eq!((n, id), (body.len(), None));
        Ok(())
    }

    #[tokio::test]
    async fn a_write_error_lets_the_producer_drain() -> TestResult {
        let mut sink = Sink::new(0usize, true, |n: &mut usize, b: &[u8]| {
            if *n >= 2 * CHUNK {
                return Err(io::Error::other("disk full"));
            }
            *n += b.len();
            Ok(())
        })?;
        // Far more than the writer accepts: every push must still be taken.
        let body = data(20 * CHUNK);
        let buffers = sink_all(&mut sink, &body).await;
        assert!(buffers <= MAX_BUFFERS);
        // Give the job time to see the error, then keep pushing: nothing blocks.
        for _ in 0..50 {
            if sink.failed() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(sink.failed());
        sink_all(&mut sink, &body).await;
        match sink.finish().await {
            Err(SinkError::Write(e)) => assert_eq!(e.to_string(), "disk full"),
            other => return Err(format!("{other:?}").into()),
        }
        Ok(())
    }

    #[tokio::test]
    async fn blocking_runs_jobs() -> TestResult {
        assert_eq!(blocking(|| 6 * 7).await?, 42);
        assert!(pool_size() >= 2);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_transfers_share_the_pool() -> TestResult {
        // More transfers than permits: each still completes, since no job waits for its peer.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..(pool_size() * 3) {
            tasks.spawn(async move {
                let body = data(2 * CHUNK + i);
                let mut source =
                    Source::new(io::Cursor::new(body.clone()), body.len() as u64, true)?;
                let mut sink = Sink::new(Vec::new(), true, |o: &mut Vec<u8>, b: &[u8]| {
                    o.extend_from_slice(b);
                    Ok::<_, io::Error>(())
                })?;
                while let Some(chunk) = source.next().await {
                    let chunk = chunk?;
                    let mut buf = sink.buffer().await;
                    buf.truncate(chunk.len());
                    buf.copy_from_slice(&chunk);
                    sink.push(buf);
                }
                let sent = source.finish().await?;
                let (out, got) = sink
                    .finish()
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))?;
                assert_eq!(out, body);
                assert_eq!(sent, got);
                Ok::<_, io::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

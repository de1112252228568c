//! [`Source`]: a blocking reader feeding chunks to async code.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc};

use super::{
    BASE_BUFFERS, CHUNK, CheckpointFn, LARGE_CHUNK, MAX_BUFFERS, give_back_extra, lock, park,
    read_full, runtime, spawn_job, take_extra,
};
use crate::md5_state::ResumableMd5;
use crate::protocol::FileId;
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
    /// Bytes per chunk.
    chunk: usize,
}

struct Reading {
    reader: io::Take<Box<dyn Read + Send>>,
    hasher: Option<ResumableMd5>,
    /// With [`Source::checkpointed`]: the spacing of the states handed out, and where to.
    checkpoints: Option<(u64, CheckpointFn)>,
    /// Dropped once the reader is done: the consumer then sees the end.
    chunks: Option<mpsc::UnboundedSender<io::Result<Chunk>>>,
}

#[derive(Default)]
struct Buffers {
    spare: Vec<Vec<u8>>,
    made: usize,
    /// The most buffers this source may make ([`MAX_BUFFERS`], or fewer for a lean one).
    max: usize,
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

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
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

impl Drop for SourceShared {
    /// Gives back the read-ahead buffers' share of the budget.
    fn drop(&mut self) {
        let made = lock(&self.buffers).made;
        give_back_extra(made.saturating_sub(BASE_BUFFERS) * self.chunk);
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
        Self::with_buffers(reader, size, hash, MAX_BUFFERS, CHUNK, None)
    }

    /// As [`large`](Self::large), hashing, and handing `save` the hash state of the first bytes
    /// each time one more multiple of `every` bytes has been read (not at the end): the states a
    /// resumed upload of the same file can start hashing from.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn checkpointed(
        reader: impl Read + Send + 'static,
        size: u64,
        every: u64,
        save: impl FnMut(&ResumableMd5) + Send + 'static,
    ) -> io::Result<Self> {
        let save: CheckpointFn = Box::new(save);
        let checkpoints = Some((every.max(1), save));
        Self::with_buffers(reader, size, true, MAX_BUFFERS, LARGE_CHUNK, checkpoints)
    }

    /// As [`new`](Self::new), with chunks of [`LARGE_CHUNK`] bytes: fewer hand-offs for a
    /// process that runs one transfer at a time.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn large(reader: impl Read + Send + 'static, size: u64, hash: bool) -> io::Result<Self> {
        Self::with_buffers(reader, size, hash, MAX_BUFFERS, LARGE_CHUNK, None)
    }

    /// As [`new`](Self::new), reading at most one chunk ahead of the one being sent (two
    /// buffers in all): for transfers that run by the hundred, such as web downloads, where
    /// memory per transfer counts more than a deeper read-ahead.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn lean(reader: impl Read + Send + 'static, size: u64) -> io::Result<Self> {
        Self::with_buffers(reader, size, false, 2, CHUNK, None)
    }

    fn with_buffers(
        reader: impl Read + Send + 'static,
        size: u64,
        hash: bool,
        max: usize,
        chunk: usize,
        checkpoints: Option<(u64, CheckpointFn)>,
    ) -> io::Result<Self> {
        let (tx, chunks) = mpsc::unbounded_channel();
        let reader: Box<dyn Read + Send> = Box::new(reader);
        let shared = Arc::new(SourceShared {
            handle: runtime()?,
            reading: Mutex::new(Some(Reading {
                reader: reader.take(size),
                hasher: hash.then(ResumableMd5::new),
                checkpoints,
                chunks: Some(tx),
            })),
            buffers: Mutex::new(Buffers {
                running: true,
                max,
                ..Buffers::default()
            }),
            idle: Notify::new(),
            chunk,
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

    /// How many buffers this transfer has allocated.
    #[cfg(test)]
    pub(super) fn buffers_made(&self) -> usize {
        lock(&self.shared.buffers).made
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
        Ok(reading.hasher.map(ResumableMd5::finalize))
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // Dropped halfway (a cancelled transfer): read no further.
        lock(&self.shared.buffers).done = true;
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
                None if b.made < b.max && (b.made < BASE_BUFFERS || take_extra(shared.chunk)) => {
                    b.made += 1;
                    Some(Vec::new())
                }
                None => None,
            }
        };
        let Some(mut buf) = buf else {
            // Out of buffers: stop, unless one came back meanwhile.
            let more = |b: &Buffers| !b.spare.is_empty();
            let stop = |b: &mut Buffers| b.running = false;
            match park(
                &shared.reading,
                r,
                &shared.buffers,
                more,
                stop,
                &shared.idle,
            ) {
                Some(again) => r = again,
                None => {
                    std::mem::forget(stopped);
                    return;
                }
            }
            continue;
        };
        let Some(tx) = r.chunks.clone() else {
            break;
        };
        buf.resize(shared.chunk, 0);
        let read = read_full(&mut r.reader, &mut buf);
        let item = match read {
            Ok(0) => {
                lock(&shared.buffers).spare.push(buf);
                r.chunks = None;
                break;
            }
            Ok(n) => {
                buf.truncate(n);
                if let Some(h) = r.hasher.as_mut() {
                    let before = h.len();
                    h.update(&buf);
                    if let Some((every, save)) = r.checkpoints.as_mut()
                        && h.len() / *every > before / *every
                        && r.reader.limit() > 0
                    {
                        save(h);
                    }
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

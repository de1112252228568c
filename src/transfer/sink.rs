//! [`Sink`]: async code pushing chunks to a blocking writer.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::{CHUNK, MAX_BUFFERS, lock, park, runtime, spawn_job};
use crate::protocol::FileId;
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

    /// How many buffers this transfer has allocated.
    #[cfg(test)]
    pub(super) fn buffers_made(&self) -> usize {
        lock(&self.shared.queue).made
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
            // Out of chunks: stop, unless one came in meanwhile.
            let more = |q: &Queue| !q.chunks.is_empty();
            let stop = |q: &mut Queue| q.running = false;
            match park(&shared.writing, w, &shared.queue, more, stop, &shared.ready) {
                Some(again) => w = again,
                None => {
                    std::mem::forget(parked);
                    return;
                }
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

//! [`Sink`]: async code pushing chunks to a blocking writer, and optionally to a hasher that
//! runs beside it.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::{
    BASE_BUFFERS, Budget, CHUNK, CheckpointFn, EXTRA, LARGE_CHUNK, LARGE_UPLOAD, MAX_BUFFERS, lock,
    park, runtime, spawn_job,
};
use crate::md5_state::ResumableMd5;
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

/// Async code pushing chunks to a blocking writer: each chunk is handed to a write function on
/// the blocking pool while the next one is received, and, if asked, to an MD5 hasher on a
/// second lane at the same time.
///
/// Take a buffer with [`buffer`](Self::buffer), fill it, [`push`](Self::push) it. After a write
/// error the sink keeps taking chunks and drops them, so the producer can read the rest of a
/// body and keep its connection in step; [`failed`](Self::failed) tells when it may stop early.
///
/// Why two lanes: hashing costs about as much as receiving, and writing a chunk to a file (a
/// page-cache copy) a good part of that again; run one after the other in one job they set
/// the pace of a single transfer, run side by side they overlap. The two lanes share each
/// buffer (no copy): a buffer goes back to the spares when the last lane is done with it.
pub struct Sink<T, E> {
    shared: Arc<SinkShared<T, E>>,
}

impl<T, E> std::fmt::Debug for Sink<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

/// Lane numbers in [`Queue::lanes`].
const WRITE: usize = 0;
const HASH: usize = 1;

struct SinkShared<T, E> {
    handle: Handle,
    queue: Mutex<Queue>,
    /// The target, between jobs (a running write job holds it).
    writing: Mutex<Option<Writing<T, E>>>,
    /// The hasher, between jobs (a running hash job holds it); `None` for ever when not hashing,
    /// and once [`Sink::finish`] took it.
    hashing: Mutex<Option<ResumableMd5>>,
    hash: bool,
    /// Where the target's bytes are written up to (counted from where the hash starts).
    written: AtomicU64,
    checkpoints: Option<Mutex<Checkpoints>>,
    /// Bytes per chunk.
    chunk: usize,
    /// Where the read-ahead buffers (and the larger base buffers of
    /// [`Sink::large_within_budget`]) come from: the process's budget but in tests.
    budget: &'static Budget,
    /// Bytes of the budget taken by [`Sink::large_within_budget`] for the larger base buffers,
    /// given back on drop.
    base_extra: usize,
    /// Signalled when a buffer comes back or a job stops.
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    lanes: [Lane; 2],
    spare: Vec<Vec<u8>>,
    made: usize,
    /// Of those, how many came out of the read-ahead budget.
    extra: usize,
    failed: bool,
}

#[derive(Default)]
struct Lane {
    chunks: VecDeque<Arc<Vec<u8>>>,
    running: bool,
}

impl Queue {
    fn idle(&self) -> bool {
        self.lanes.iter().all(|l| !l.running)
    }

    /// Takes back a chunk a lane is done with, if no other lane still holds it.
    fn recycle(&mut self, chunk: Arc<Vec<u8>>) {
        // `into_inner` (not `try_unwrap`): when both lanes let go at once, exactly one of them
        // gets the buffer back, so none is lost to the count of buffers made.
        if let Some(buf) = Arc::into_inner(chunk) {
            self.spare.push(buf);
        }
    }
}

/// The saved states of a resumable sink: one every `every` bytes, handed to `save` once the
/// write lane has written what it covers (the hash lane may run ahead of it).
struct Checkpoints {
    every: u64,
    /// The length at which the hash lane takes the next state.
    next: u64,
    /// A state taken, waiting for the writes to catch up.
    pending: Option<ResumableMd5>,
    /// The length of the last state saved.
    saved: u64,
    save: CheckpointFn,
}

impl<T, E> SinkShared<T, E> {
    /// Saves the pending state if every byte it covers is written.
    fn checkpoint(&self) {
        let Some(c) = &self.checkpoints else { return };
        let mut c = lock(c);
        let written = self.written.load(Ordering::Acquire);
        if c.pending.as_ref().is_some_and(|p| p.len() <= written)
            && let Some(state) = c.pending.take()
        {
            (c.save)(&state);
            c.saved = state.len();
        }
    }
}

impl<T, E> Drop for SinkShared<T, E> {
    /// Gives back the read-ahead buffers' share of the budget. A sink dropped unfinished (its
    /// transfer broke off or was cancelled) saves the state of everything it both hashed and
    /// wrote, so a resumed transfer starts hashing there.
    fn drop(&mut self) {
        self.budget
            .give_back(lock(&self.queue).extra * self.chunk + self.base_extra);
        let Some(c) = &self.checkpoints else { return };
        let Some(state) = lock(&self.hashing).take() else {
            return;
        };
        let mut c = lock(c);
        let written = self.written.load(Ordering::Acquire);
        if state.len() <= written && state.len() > c.saved {
            (c.save)(&state);
        } else if let Some(p) = c.pending.take().filter(|p| p.len() <= written) {
            (c.save)(&p);
        }
    }
}

struct Writing<T, E> {
    target: T,
    write: WriteFn<T, E>,
    error: Option<E>,
}

impl<T: Send + 'static, E: Send + 'static> Sink<T, E> {
    /// A sink writing into `target` with `write`, hashing what passes (on a lane of its own) if
    /// `hash`.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn new(
        target: T,
        hash: bool,
        write: impl FnMut(&mut T, &[u8]) -> Result<(), E> + Send + 'static,
    ) -> io::Result<Self> {
        Self::build(target, hash.then(ResumableMd5::new), write, None)
    }

    /// A sink appending to a target that already holds the `from.len()` bytes `from` is the
    /// hash of: hashes from there on, and hands `save` the state of the target's first bytes
    /// every `every` bytes (once written), and when the sink is dropped unfinished, so that a
    /// transfer broken off can be resumed without hashing those bytes again.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    pub fn resuming(
        target: T,
        from: ResumableMd5,
        write: impl FnMut(&mut T, &[u8]) -> Result<(), E> + Send + 'static,
        every: u64,
        save: impl FnMut(&ResumableMd5) + Send + 'static,
    ) -> io::Result<Self> {
        let every = every.max(1);
        let checkpoints = Checkpoints {
            every,
            next: (from.len() / every + 1).saturating_mul(every),
            pending: None,
            saved: from.len(),
            save: Box::new(save),
        };
        Self::build(target, Some(from), write, Some(checkpoints))
    }

    fn build(
        target: T,
        hasher: Option<ResumableMd5>,
        write: impl FnMut(&mut T, &[u8]) -> Result<(), E> + Send + 'static,
        checkpoints: Option<Checkpoints>,
    ) -> io::Result<Self> {
        let written = hasher.as_ref().map_or(0, ResumableMd5::len);
        Ok(Self {
            shared: Arc::new(SinkShared {
                handle: runtime()?,
                queue: Mutex::new(Queue::default()),
                writing: Mutex::new(Some(Writing {
                    target,
                    write: Box::new(write),
                    error: None,
                })),
                hash: hasher.is_some(),
                hashing: Mutex::new(hasher),
                written: AtomicU64::new(written),
                checkpoints: checkpoints.map(Mutex::new),
                chunk: CHUNK,
                budget: &EXTRA,
                base_extra: 0,
                ready: Notify::new(),
            }),
        })
    }

    /// With chunks of [`LARGE_CHUNK`] bytes: fewer hand-offs for a process that runs one
    /// transfer at a time. (Before the first [`buffer`](Self::buffer); no effect after.)
    #[must_use]
    pub fn large(mut self) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.chunk = LARGE_CHUNK;
        }
        self
    }

    /// For a body of `size` bytes, [`LARGE_UPLOAD`] or more: with chunks of [`LARGE_CHUNK`]
    /// bytes if the process's read-ahead budget can pay for what its base buffers take beyond
    /// [`CHUNK`] (its read-ahead buffers then come out of the budget at that size too);
    /// unchanged otherwise. For a server: a large upload while few others run gets the
    /// client's fewer hand-offs (1 GiB plain, medians of 7 by hand: 2.80 s and 2.93 server CPU
    /// s, against 3.28 s and 3.10 with 128 KiB chunks), while many at once stay at [`CHUNK`]
    /// and the memory bound stays 2 chunks per transfer plus the budget. (Before the first
    /// [`buffer`](Self::buffer); no effect after.)
    #[must_use]
    pub fn large_within_budget(mut self, size: u64) -> Self {
        if size < LARGE_UPLOAD {
            return self;
        }
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            let more = BASE_BUFFERS * (LARGE_CHUNK - CHUNK);
            if shared.chunk == CHUNK && shared.base_extra == 0 && shared.budget.take(more) {
                shared.chunk = LARGE_CHUNK;
                shared.base_extra = more;
            }
        }
        self
    }

    /// With its buffers' bytes past its base ones taken from `budget` instead of the
    /// process's. (Before the first [`buffer`](Self::buffer); no effect after.)
    #[cfg(test)]
    #[must_use]
    pub(super) fn with_budget(mut self, budget: &'static Budget) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.budget = budget;
        }
        self
    }

    /// Bytes per chunk: what [`buffer`](Self::buffer) hands out.
    #[must_use]
    pub fn chunk(&self) -> usize {
        self.shared.chunk
    }

    /// A buffer of `CHUNK` bytes (or `LARGE_CHUNK`) to receive the next chunk into: a recycled one, or a new one
    /// while fewer than `DEPTH + 1` exist; otherwise waits for the lanes to free one.
    pub async fn buffer(&mut self) -> Vec<u8> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let mut q = lock(&self.shared.queue);
                if let Some(mut buf) = q.spare.pop() {
                    buf.resize(self.shared.chunk, 0);
                    return buf;
                }
                let drained = q.lanes.iter().all(|l| l.chunks.is_empty());
                let chunk = self.shared.chunk;
                let allowed = q.made < BASE_BUFFERS
                    || (q.made < MAX_BUFFERS && self.shared.budget.take(chunk) && {
                        q.extra += 1;
                        true
                    });
                if allowed || (q.idle() && drained) {
                    // (The second case only if a job was lost with its buffers.)
                    q.made += 1;
                    return vec![0; self.shared.chunk];
                }
            }
            ready.await;
        }
    }

    /// Queues a filled chunk (truncated to its length) for writing and hashing; after a write
    /// error it is dropped instead.
    pub fn push(&mut self, chunk: Vec<u8>) {
        let lanes = if self.shared.hash { 2 } else { 1 };
        let mut start = [false; 2];
        {
            let mut q = lock(&self.shared.queue);
            if q.failed {
                q.spare.push(chunk);
                return;
            }
            let chunk = Arc::new(chunk);
            for (lane, start) in q.lanes.iter_mut().zip(&mut start).take(lanes) {
                lane.chunks.push_back(Arc::clone(&chunk));
                *start = !lane.running;
                lane.running = true;
            }
        }
        if start[WRITE] {
            let job = Arc::clone(&self.shared);
            spawn_job(&self.shared.handle, move || write_job(&job));
        }
        if start[HASH] {
            let job = Arc::clone(&self.shared);
            spawn_job(&self.shared.handle, move || hash_job(&job));
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

    /// Waits for the last chunk to be written and hashed; returns the target and the MD5 of
    /// everything pushed (when hashing).
    ///
    /// # Errors
    /// The write function's first error, or [`SinkError::Worker`] if a job was lost.
    pub async fn finish(self) -> Result<(T, Option<FileId>), SinkError<E>> {
        let (target, hash) = self.finish_hash().await?;
        Ok((target, hash.map(ResumableMd5::finalize)))
    }

    /// [`finish`](Self::finish), giving the hash state rather than the MD5 (a resumable hash
    /// also counts the bytes hashed before the sink was made).
    ///
    /// # Errors
    /// As [`finish`](Self::finish).
    pub async fn finish_hash(self) -> Result<(T, Option<ResumableMd5>), SinkError<E>> {
        loop {
            let ready = self.shared.ready.notified();
            if lock(&self.shared.queue).idle() {
                break;
            }
            ready.await;
        }
        let w = lock(&self.shared.writing).take().ok_or(SinkError::Worker)?;
        if let Some(e) = w.error {
            return Err(SinkError::Write(e));
        }
        if lock(&self.shared.queue)
            .lanes
            .iter()
            .any(|l| !l.chunks.is_empty())
        {
            return Err(SinkError::Worker);
        }
        let hasher = lock(&self.shared.hashing).take();
        if self.shared.hash && hasher.is_none() {
            return Err(SinkError::Worker);
        }
        Ok((w.target, hasher))
    }
}

/// Marks a lane's job stopped, also when it panics.
struct Parked<'a, T, E>(&'a SinkShared<T, E>, usize);

impl<T, E> Drop for Parked<'_, T, E> {
    fn drop(&mut self) {
        lock(&self.0.queue).lanes[self.1].running = false;
        self.0.ready.notify_one();
    }
}

/// Runs `each` over the chunks queued on `lane` until it is empty, with the lane's state taken
/// from `slot` (and handed back between runs).
fn run_lane<T, E, S>(
    shared: &Arc<SinkShared<T, E>>,
    lane: usize,
    slot: &Mutex<Option<S>>,
    mut each: impl FnMut(&mut S, &[u8]),
) {
    let parked = Parked(shared, lane);
    let Some(mut state) = lock(slot).take() else {
        return;
    };
    loop {
        let next = lock(&shared.queue).lanes[lane].chunks.pop_front();
        let Some(chunk) = next else {
            // Out of chunks: stop, unless one came in meanwhile.
            let more = |q: &Queue| !q.lanes[lane].chunks.is_empty();
            let stop = |q: &mut Queue| q.lanes[lane].running = false;
            match park(slot, state, &shared.queue, more, stop, &shared.ready) {
                Some(again) => state = again,
                None => {
                    std::mem::forget(parked);
                    return;
                }
            }
            continue;
        };
        each(&mut state, &chunk);
        lock(&shared.queue).recycle(chunk);
        shared.ready.notify_one();
    }
}

/// Writes queued chunks until the write lane is empty.
fn write_job<T, E>(shared: &Arc<SinkShared<T, E>>) {
    run_lane(shared, WRITE, &shared.writing, |w, chunk| {
        if w.error.is_some() {
            return;
        }
        if let Err(e) = (w.write)(&mut w.target, chunk) {
            w.error = Some(e);
            let mut q = lock(&shared.queue);
            q.failed = true;
            // What is queued will not be written: hand the buffers back at once.
            let dropped: Vec<_> = q.lanes[WRITE].chunks.drain(..).collect();
            for chunk in dropped {
                q.recycle(chunk);
            }
            return;
        }
        shared
            .written
            .fetch_add(chunk.len() as u64, Ordering::AcqRel);
        shared.checkpoint();
    });
}

/// Hashes queued chunks until the hash lane is empty.
fn hash_job<T, E>(shared: &Arc<SinkShared<T, E>>) {
    run_lane(shared, HASH, &shared.hashing, |h, chunk| {
        h.update(chunk);
        if let Some(c) = &shared.checkpoints {
            let mut c = lock(c);
            if h.len() >= c.next {
                c.pending = Some(h.clone());
                c.next = (h.len() / c.every + 1).saturating_mul(c.every);
            }
            drop(c);
            shared.checkpoint();
        }
    });
}

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

use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::protocol::FileId;

mod sink;
mod source;
#[cfg(test)]
mod tests;

pub use sink::{Sink, SinkError};
pub use source::{Chunk, Source};

/// Bytes per chunk.
///
/// One value for both sides and both directions. The per-chunk cost (a queue hand-off and, at
/// worst, a wake-up of a pool thread: a few microseconds) is about 1% of the ~200 µs MD5 takes
/// over 128 KiB, so larger chunks buy almost nothing in speed, while memory grows with them: a
/// server at its 512-connection limit holds at most 512 × (`DEPTH` + 1) × 128 KiB = 256 MiB of
/// chunks (the client used 256 KiB, the server 128 KiB; the server's number wins on memory).
pub const CHUNK: usize = 128 * 1024;

/// Bytes per chunk of a transfer made with `large` ([`Source::large`], [`Sink::large`]): for
/// a process that runs one large transfer at a time (the client), where memory per transfer
/// hardly counts (4 MiB) and each hand-off between the socket and the pool saved counts: one
/// per MiB instead of eight cuts the client's CPU for a 1 GiB download by some 8 % (its
/// wake-ups and queue hand-offs; measured in the session that made it, see README's Speed).
pub const LARGE_CHUNK: usize = 1024 * 1024;

/// Uploads from this size on ask for [`LARGE_CHUNK`] chunks on a server
/// ([`Sink::large_within_budget`]): 16 of them at least, so that the larger buffers go to the
/// transfers where the hand-offs they save add up.
pub const LARGE_UPLOAD: u64 = 16 * LARGE_CHUNK as u64;

/// Chunks queued between the async side and the blocking side of one transfer, beyond the one
/// being filled. Three is enough to absorb the jitter of the pool and the network: past it,
/// one side simply sets the pace.
pub const DEPTH: usize = 3;

/// Called with the hash state of a file's first bytes, a state a resumed transfer of it can
/// start hashing from ([`Source::checkpointed`], [`Sink::resuming`]).
type CheckpointFn = Box<dyn FnMut(&crate::md5_state::ResumableMd5) + Send>;

/// Bodies up to this size are best read or written in one blocking hop, with whatever opens
/// or commits the file ([`blocking`]): for small files that hop is most of the cost.
pub const SMALL: u64 = 64 * 1024;

/// Buffers one transfer may allocate.
const MAX_BUFFERS: usize = DEPTH + 1;

/// Buffers every transfer may allocate: one being filled, one being sent or written. Those
/// past them (the read-ahead, up to [`MAX_BUFFERS`]) come out of [`EXTRA_BUDGET`].
const BASE_BUFFERS: usize = 2;

/// Bytes of read-ahead buffers, process-wide: 64 transfers at full depth with 128 KiB chunks.
/// Past it a transfer runs with its two buffers until others give theirs back, so that many
/// transfers at once cost 2 chunks each plus this, not [`MAX_BUFFERS`] chunks each: 100
/// uploads at once held 4 x 128 KiB each (50 MiB) before, 2 x 128 KiB + 16 MiB at most now.
const EXTRA_BUDGET: usize = 16 << 20;

/// A process-wide allowance of buffer bytes, taken and given back without locks.
pub(crate) struct Budget {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) const fn new(limit: usize) -> Self {
        Self {
            used: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `bytes`, if that much is left.
    fn take(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .is_ok()
    }

    /// Gives back what [`take`](Self::take) took.
    fn give_back(&self, bytes: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The read-ahead budget of every transfer of the process.
static EXTRA: Budget = Budget::new(EXTRA_BUDGET);

/// Takes `bytes` of the read-ahead budget, if that much is left.
fn take_extra(bytes: usize) -> bool {
    EXTRA.take(bytes)
}

/// Gives back what [`take_extra`] took.
fn give_back_extra(bytes: usize) {
    EXTRA.give_back(bytes);
}

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
    crate::md5_state::md5_of(body)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job that panicked left plain data behind, still consistent enough to be dropped.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called by a job that ran out of work: hands its `state` back to `slot` and stops (clearing
/// the running flag with `stop`, under `queue`'s lock), unless `more` finds that work came in
/// meanwhile, in which case it takes the state back to go on. The other side starts no job while
/// one runs, so this check under the lock is what keeps work from being left without a job.
///
/// `None`: the job has stopped (and `wake` was signalled); it must not clear the flag again,
/// since another job may already be running.
fn park<S, Q>(
    slot: &Mutex<Option<S>>,
    state: S,
    queue: &Mutex<Q>,
    more: impl Fn(&Q) -> bool,
    stop: impl Fn(&mut Q),
    wake: &tokio::sync::Notify,
) -> Option<S> {
    *lock(slot) = Some(state);
    {
        let mut q = lock(queue);
        if !more(&q) {
            stop(&mut q);
            drop(q);
            wake.notify_one();
            return None;
        }
    }
    let state = lock(slot).take();
    if state.is_none() {
        // Cannot happen (only the running job takes the state); stop rather than spin.
        stop(&mut lock(queue));
        wake.notify_one();
    }
    state
}

fn runtime() -> io::Result<Handle> {
    Handle::try_current().map_err(io::Error::other)
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read (fewer than
/// `buf.len()` only at the end of the reader).
///
/// # Errors
/// The reader's error (an interrupted read is retried).
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

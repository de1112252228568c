//! Pipelined downloads with `DOWNLOAD` (`PROTOCOL.md` section 5.4 and "Pipelining").
//!
//! The mirror of [`put_many`](super::put_many): two halves run concurrently in the same task.
//! The writer checks what it can before asking (an existing target known from the request
//! alone is refused without asking, as [`Client::download`](super::Client::download) does) and
//! sends `DOWNLOAD` lines ahead; the reader takes the replies in order and saves each body as
//! `download` would. Since every file is saved (or refused) in request order, a target written
//! by an earlier item is seen by a later one exactly as in a run of single downloads.
//!
//! Two bounds keep the writer from running too far ahead: a channel caps the items in flight,
//! and a byte budget caps the unanswered request lines, so that they always fit in the socket
//! buffers and the writer never waits on a server busy sending a large body. The writer always
//! writes out what it queued before it waits on either, so neither side can wait for the other
//! forever.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, TryAcquireError, mpsc};

use super::download::{body_window, check_header, save_body, target_or_skip};
use super::exchange::{recv_reply, refusal, trace_body, trace_sent};
use super::local::{exists_now, known_target, persist_now, temp_file_for};
use super::{ClientError, Destination, Downloaded};
use crate::protocol::{Code, FileId, FileRef};
use crate::transfer;
use crate::transport::Connection;

/// At most this many downloads are asked for ahead of their replies.
const IN_FLIGHT: usize = 1024;

/// At most this many bytes of request lines are sent ahead of their replies: well within the
/// socket buffers of both sides, so writing them never waits for the server to finish a body.
const LINE_BUDGET: usize = 32 * 1024;

/// Items whose targets are checked in one trip to the blocking pool; the lines of a group go
/// out together.
const GROUP: usize = 128;

/// Bodies up to this size are received whole into memory and saved several at a time in one
/// trip to the blocking pool ([`Held`]); for small files that trip is most of the cost. Larger
/// ones are streamed.
const SMALL: u64 = transfer::CHUNK as u64;

/// What the writer tells the reader about each item, in order.
enum Sent {
    /// Asked for; `cost` is the length of the request line, returned to the budget once its
    /// reply has been read.
    Asked {
        index: usize,
        file: FileRef,
        dest: Destination,
        cost: usize,
    },
    /// Not asked for: refused on our side before asking.
    Skipped { index: usize, error: ClientError },
}

impl<S: AsyncRead + AsyncWrite + Unpin> super::Client<S> {
    /// Downloads many files on one connection without waiting for each reply (`DOWNLOAD`).
    ///
    /// Each file is saved as [`download`](Self::download) saves it: verified in a temporary
    /// file next to its target, moved into place only if its MD5 equals its id, and an existing
    /// file is never replaced unless `overwrite` is set. With a [`Destination::Dir`], two files
    /// with the same last name component land on the same target, the first one winning unless
    /// `overwrite` is set, exactly as with one `download` after another.
    ///
    /// `on_result` is called once per item, in the order given, with the item's index and its
    /// outcome: [`Downloaded`], a refusal (no such file...), [`ClientError::AlreadyExists`],
    /// [`ClientError::ChecksumMismatch`] (nothing is kept), or a local I/O error.
    ///
    /// # Errors
    /// An error that ends the whole batch: the connection was lost or timed out, or the server
    /// broke the protocol (a malformed or hostile `213` header, a reply after which it closes
    /// the connection). That error is the outcome of the first item without an `on_result` call;
    /// the items after it were not downloaded.
    pub async fn get_many<I>(
        &mut self,
        files: I,
        dest: &Destination,
        overwrite: bool,
        on_result: impl FnMut(usize, Result<Downloaded, ClientError>),
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = FileRef>,
    {
        let items = files.into_iter().map(|file| (file, dest.clone()));
        self.get_each(items, overwrite, on_result).await
    }

    /// [`get_many`](Self::get_many) with a destination of its own for each file (a folder
    /// download saves each file at its own place in the tree).
    ///
    /// # Errors
    /// As [`get_many`](Self::get_many).
    pub async fn get_each<I>(
        &mut self,
        items: I,
        overwrite: bool,
        mut on_result: impl FnMut(usize, Result<Downloaded, ClientError>),
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = (FileRef, Destination)>,
    {
        self.usable()?;
        self.in_exchange = true;
        let (to_reader, from_writer) = mpsc::channel(IN_FLIGHT);
        let budget = Semaphore::new(LINE_BUDGET);
        let writer = write_downloads(
            &mut self.tx,
            items,
            overwrite,
            to_reader,
            &budget,
            self.timeout,
        );
        let reader = read_downloads(
            &mut self.rx,
            from_writer,
            &budget,
            overwrite,
            (self.timeout, self.min_rate),
            &mut on_result,
        );
        let result = tokio::try_join!(writer, reader).map(drop);
        if result.is_ok() {
            self.in_exchange = false;
        }
        self.settle(result)
    }
}

async fn write_downloads<W, I>(
    tx: &mut Connection<W>,
    files: I,
    overwrite: bool,
    to_reader: mpsc::Sender<Sent>,
    budget: &Semaphore,
    timeout: Option<Duration>,
) -> Result<(), ClientError>
where
    W: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator<Item = (FileRef, Destination)>,
{
    let mut files = files.into_iter().enumerate();
    let mut line = String::new();
    loop {
        let group: Vec<(usize, (FileRef, Destination))> = files.by_ref().take(GROUP).collect();
        if group.is_empty() {
            break;
        }
        for (index, (file, dest), checked) in check_targets(group, overwrite).await {
            let sent = match checked {
                Err(error) => Sent::Skipped { index, error },
                Ok(()) => {
                    line.clear();
                    let _ = writeln!(line, "DOWNLOAD {}", file.as_str());
                    let cost = line.len();
                    // A line is at most a few KiB, far below the budget: it always fits.
                    let permits = u32::try_from(cost).unwrap_or(u32::MAX);
                    match budget.try_acquire_many(permits) {
                        Ok(permit) => permit.forget(),
                        Err(TryAcquireError::NoPermits) => {
                            // The reader frees the budget as replies come: send what we have.
                            tx.flush(timeout).await?;
                            match budget.acquire_many(permits).await {
                                Ok(permit) => permit.forget(),
                                Err(_) => return Ok(()),
                            }
                        }
                        Err(TryAcquireError::Closed) => return Ok(()),
                    }
                    trace_sent(&line);
                    tx.queue_bytes(line.as_bytes());
                    Sent::Asked {
                        index,
                        file,
                        dest,
                        cost,
                    }
                }
            };
            match to_reader.try_send(sent) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(sent)) => {
                    // The reader is waiting for replies to what we queued: send it before waiting.
                    tx.flush(timeout).await?;
                    if to_reader.send(sent).await.is_err() {
                        return Ok(()); // The reader stopped; its error is the one to report.
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
        // Get the server going on this group while the next one is checked.
        tx.flush(timeout).await?;
    }
    Ok(())
}

/// Checks the targets known before asking, in one trip to the blocking pool: an existing one
/// refuses its item (as [`Client::download`](super::Client::download) does), unless
/// `overwrite`. The reader checks every target again once it is known for sure.
async fn check_targets(
    group: Vec<(usize, (FileRef, Destination))>,
    overwrite: bool,
) -> Vec<(usize, (FileRef, Destination), Result<(), ClientError>)> {
    let mut checked = Vec::with_capacity(group.len());
    let mut paths = Vec::new();
    for (index, (file, dest)) in group {
        let known = known_target(&file, &dest);
        let result = match known {
            Ok(Some(path)) if !overwrite => {
                paths.push((checked.len(), path));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        checked.push((index, (file, dest), result));
    }
    if paths.is_empty() {
        return checked;
    }
    let found = transfer::blocking(move || {
        paths.retain(|(_, path)| exists_now(path));
        paths
    })
    .await;
    // Should the check have panicked, the reader still checks before writing anything.
    if let Ok(found) = found {
        for (at, path) in found {
            if let Some(item) = checked.get_mut(at) {
                item.2 = Err(ClientError::AlreadyExists { path });
            }
        }
    }
    checked
}

async fn read_downloads<R>(
    rx: &mut Connection<R>,
    mut from_writer: mpsc::Receiver<Sent>,
    budget: &Semaphore,
    overwrite: bool,
    (timeout, min_rate): (Option<Duration>, u64),
    on_result: &mut impl FnMut(usize, Result<Downloaded, ClientError>),
) -> Result<(), ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    let mut held = Held::default();
    while let Some(sent) = from_writer.recv().await {
        let (index, outcome) = match sent {
            Sent::Skipped { index, error } => (index, Err(error)),
            Sent::Asked {
                index,
                file,
                dest,
                cost,
            } => {
                let to = Target {
                    dest: &dest,
                    overwrite,
                    timeout,
                    min_rate,
                };
                let outcome = receive(rx, &mut held, on_result, &file, to).await;
                budget.add_permits(cost);
                match outcome {
                    Ok(Received::Small(small)) => {
                        held.push(index, small);
                        // Saved together once enough are held, or before waiting on the
                        // network (the next reply is not here yet).
                        if held.full() || rx.buffered() == 0 {
                            held.save(overwrite, on_result).await;
                        }
                        continue;
                    }
                    Ok(Received::Saved(done)) => (index, Ok(done)),
                    Err(e) => (index, Err(e)),
                }
            }
        };
        // Outcomes are told in order: the small files held before this one first.
        held.save(overwrite, on_result).await;
        match outcome {
            // The connection is out of step or closing: nothing after this can be trusted.
            Err(e) if e.is_connection_lost() => return Err(e),
            outcome => on_result(index, outcome),
        }
    }
    held.save(overwrite, on_result).await;
    Ok(())
}

/// Small files received whole and not saved yet: saved together, in order, in one trip to the
/// blocking pool (for small files that trip is most of the cost).
#[derive(Default)]
struct Held {
    files: Vec<(usize, Small)>,
    bytes: usize,
}

/// A small file received whole: where it goes and its bytes.
struct Small {
    done: Downloaded,
    body: Vec<u8>,
}

/// Held small files are saved once there are this many, or this many bytes.
const HELD_FILES: usize = 64;
const HELD_BYTES: usize = 1 << 20;

impl Held {
    fn push(&mut self, index: usize, small: Small) {
        self.bytes += small.body.len();
        self.files.push((index, small));
    }

    fn full(&self) -> bool {
        self.files.len() >= HELD_FILES || self.bytes >= HELD_BYTES
    }

    /// Saves the held files in order (each as [`save_body`] would) and tells their outcomes.
    async fn save(
        &mut self,
        overwrite: bool,
        on_result: &mut impl FnMut(usize, Result<Downloaded, ClientError>),
    ) {
        if self.files.is_empty() {
            return;
        }
        let files = std::mem::take(&mut self.files);
        self.bytes = 0;
        let paths: Vec<(usize, PathBuf)> = files
            .iter()
            .map(|(index, small)| (*index, small.done.path.clone()))
            .collect();
        let job = transfer::blocking(move || {
            files
                .into_iter()
                .map(|(index, Small { done, body })| {
                    let saved = save_now(&body, done.id, &done.path, overwrite);
                    (index, saved.map(|()| done))
                })
                .collect::<Vec<_>>()
        });
        match job.await {
            Ok(outcomes) => {
                for (index, outcome) in outcomes {
                    on_result(index, outcome);
                }
            }
            Err(e) => {
                // The job panicked or was cancelled: none of them is known to be saved.
                for (index, path) in paths {
                    let e = std::io::Error::new(e.kind(), e.to_string());
                    on_result(index, Err(ClientError::io(path)(e)));
                }
            }
        }
    }
}

/// Where and how the reader saves one file.
#[derive(Clone, Copy)]
struct Target<'a> {
    dest: &'a Destination,
    overwrite: bool,
    timeout: Option<Duration>,
    min_rate: u64,
}

/// What [`receive`] got.
enum Received {
    /// A small body received whole, to be saved with others.
    Small(Small),
    /// A larger body, streamed to its target and saved.
    Saved(Downloaded),
}

/// Reads the reply to one `DOWNLOAD` and its body: a small body whole into memory, a larger
/// one streamed to its target (after the `held` small files before it are saved). Unless the
/// error is one that loses the connection, the reply has been read in full on return.
async fn receive<R>(
    rx: &mut Connection<R>,
    held: &mut Held,
    on_result: &mut impl FnMut(usize, Result<Downloaded, ClientError>),
    file: &FileRef,
    to: Target<'_>,
) -> Result<Received, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = to.timeout;
    let reply = recv_reply(rx, timeout).await?;
    if reply.code != Code::FILE_FOLLOWS {
        return Err(refusal(reply));
    }
    let header = check_header(file, &reply)?;
    trace_body(header.size);
    rx.begin_body(to.min_rate, body_window(timeout));
    let path = target_or_skip(rx, timeout, file, to.dest, &header).await?;
    let done = Downloaded {
        name: header.name.clone(),
        id: header.id,
        size: header.size,
        path,
    };
    if header.size <= SMALL {
        let size = usize::try_from(header.size).unwrap_or(usize::MAX);
        let mut body = vec![0; size];
        let mut filled = 0;
        while filled < size {
            filled += rx.read_body(&mut body[filled..], timeout).await?;
        }
        return Ok(Received::Small(Small { done, body }));
    }
    held.save(to.overwrite, on_result).await;
    save_body(rx, timeout, &header, &done.path, to.overwrite, &mut |_| {}).await?;
    Ok(Received::Saved(done))
}

/// Saves one small body, with the same checks, in the same order, as [`save_body`].
fn save_now(body: &[u8], id: FileId, path: &Path, overwrite: bool) -> Result<(), ClientError> {
    if !overwrite && exists_now(path) {
        return Err(ClientError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let mut temp = temp_file_for(path)?;
    temp.write_all(body).map_err(ClientError::io(temp.path()))?;
    let actual = transfer::md5(body);
    if actual != id {
        // Dropping `temp` deletes it: nothing unverified is kept.
        return Err(ClientError::ChecksumMismatch {
            expected: id,
            actual,
        });
    }
    persist_now(temp, path, overwrite)
}

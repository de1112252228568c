//! Pipelined uploads with `PUT` (`PROTOCOL.md` section 5.3 and "Pipelining").
//!
//! A `PUT` body follows its request line at once, so many uploads can be in flight on one
//! connection. Two halves run concurrently in the same task: the writer reads the files, hashes
//! them and queues `PUT` lines and bodies, writing them out in large batches; the reader matches
//! each reply with what was sent, in order. A bounded channel between them caps how many uploads
//! are in flight, and the writer always writes out what it queued before it waits on that channel,
//! so neither side can wait for the other forever.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::exchange::{recv_reply, trace_sent};
use super::local::{Follow, open_regular_now};
use super::upload::verify_stored;
use super::{ClientError, Verified};
use crate::name::FileName;
use crate::protocol::{Code, FileId};
use crate::transfer;

/// At most this many uploads are sent ahead of their replies.
const IN_FLIGHT: usize = 1024;

/// Queued bytes are written out once they reach this much; bodies larger than this bypass the
/// queue. Big enough to fill many segments per write, small enough to start the server early.
const BATCH: usize = 256 * 1024;

/// Files opened together in one trip to the blocking pool.
const GROUP: usize = 64;

/// At most this many bytes of a group's small files are read ahead of being sent.
const GROUP_BYTES: usize = 1 << 20;

/// One file for [`Client::put_many`](super::Client::put_many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutItem {
    /// The local file.
    pub path: PathBuf,
    /// The name to store it under.
    pub name: FileName,
}

/// What the writer tells the reader about each item, in order.
enum Sent {
    /// Sent; the reply will say whether it was stored.
    Put {
        index: usize,
        name: FileName,
        size: u64,
        id: FileId,
    },
    /// Not sent: the local file could not be opened.
    Skipped { index: usize, error: ClientError },
}

impl<S: AsyncRead + AsyncWrite + Unpin> super::Client<S> {
    /// Uploads many files on one connection without waiting for each reply (`PUT`).
    ///
    /// `on_result` is called once per item, in the order given, with the item's index and its
    /// outcome: [`Verified`], a refusal, a local error (the item was skipped), or
    /// [`ClientError::ChecksumMismatch`] (the bad copy is deleted afterwards if possible).
    ///
    /// Best for many small files: a refused `PUT` still carries its body over the network. For
    /// large files [`upload`](Self::upload) learns of a refusal before it sends anything.
    ///
    /// # Errors
    /// An error that ends the whole batch: the connection was lost, or a file got shorter while
    /// it was being sent. Items without an `on_result` call by then have an unknown outcome.
    pub async fn put_many<I>(
        &mut self,
        items: I,
        on_result: impl FnMut(usize, Result<Verified, ClientError>),
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = PutItem>,
    {
        self.put_batch(items, Follow::Yes, on_result).await
    }

    /// [`put_many`](Self::put_many) for files found by walking a folder
    /// ([`tree::walk`](super::tree::walk)): a file that became a symlink since the walk is refused rather
    /// than followed, so nothing outside the folder is read.
    ///
    /// # Errors
    /// As [`put_many`](Self::put_many).
    pub async fn put_many_within<I>(
        &mut self,
        items: I,
        on_result: impl FnMut(usize, Result<Verified, ClientError>),
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = PutItem>,
    {
        self.put_batch(items, Follow::No, on_result).await
    }

    async fn put_batch<I>(
        &mut self,
        items: I,
        follow: Follow,
        mut on_result: impl FnMut(usize, Result<Verified, ClientError>),
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = PutItem>,
    {
        self.usable()?;
        // No minimum rate for the pipelined stream (its writer also waits on replies, which
        // have their own timeout); an earlier upload's must not carry over.
        self.tx.begin_body(0, std::time::Duration::ZERO);
        self.in_exchange = true;
        let mut mismatched = Vec::new();
        let (to_reader, from_writer) = mpsc::channel(IN_FLIGHT);
        let writer = write_puts(&mut self.tx, items, follow, to_reader, self.timeout);
        let reader = read_replies(
            &mut self.rx,
            from_writer,
            self.timeout,
            &mut on_result,
            &mut mismatched,
        );
        let result = tokio::try_join!(writer, reader).map(drop);
        if result.is_ok() {
            self.in_exchange = false;
        }
        let result = self.settle(result);
        for name in mismatched {
            if !self.is_usable() {
                break;
            }
            self.delete_bad_copy(&name).await;
        }
        result
    }
}

async fn write_puts<W, I>(
    tx: &mut crate::transport::Connection<W>,
    items: I,
    follow: Follow,
    to_reader: mpsc::Sender<Sent>,
    timeout: Option<std::time::Duration>,
) -> Result<(), ClientError>
where
    W: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator<Item = PutItem>,
{
    let mut queued = 0usize;
    let mut line = String::new();
    let mut items = items.into_iter().enumerate().peekable();
    let mut ready = VecDeque::new();
    loop {
        if ready.is_empty() {
            if items.peek().is_none() {
                break;
            }
            // The next files are opened (and the small ones read and hashed) in one trip to
            // the blocking pool: for small files that trip is most of the cost.
            let group: Vec<_> = items.by_ref().take(GROUP).collect();
            ready = open_group(group, follow).await;
        }
        let Some((index, name, path, opened)) = ready.pop_front() else {
            continue;
        };
        let sent = match opened {
            Err(error) => Sent::Skipped { index, error },
            Ok(opened) => {
                let size = opened.size();
                // The canonical `PUT name;size` line, built in a reused buffer.
                line.clear();
                let _ = writeln!(line, "PUT {};{size}", name.as_str());
                trace_sent(&line);
                tx.queue_bytes(line.as_bytes());
                queued += line.len();
                let id = match opened {
                    Opened::Whole { id, body } => {
                        send_piece(tx, &body, &mut queued, timeout).await?;
                        id
                    }
                    Opened::Large { file, size } => {
                        let mut source = transfer::Source::new(file, size, true)
                            .map_err(ClientError::io(&path))?;
                        while let Some(piece) = source.next().await {
                            let piece = piece.map_err(ClientError::io(&path))?;
                            send_piece(tx, &piece, &mut queued, timeout).await?;
                        }
                        match source.finish().await {
                            Ok(Some(id)) => id,
                            // The size was announced already; the body can no longer be
                            // completed, and the connection is out of step.
                            Ok(None) | Err(_) => {
                                return Err(ClientError::FileChanged { path });
                            }
                        }
                    }
                };
                Sent::Put {
                    index,
                    name,
                    size,
                    id,
                }
            }
        };
        if queued >= BATCH {
            tx.flush(timeout).await?;
            queued = 0;
        }
        match to_reader.try_send(sent) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(sent)) => {
                // The reader is waiting for replies to what we queued: send it before waiting.
                tx.flush(timeout).await?;
                queued = 0;
                if to_reader.send(sent).await.is_err() {
                    return Ok(()); // The reader stopped; its error is the one to report.
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
    tx.flush(timeout).await?;
    Ok(())
}

/// Queues a piece of a body, or writes the queue and the piece out once they would pass `BATCH`.
async fn send_piece<W>(
    tx: &mut crate::transport::Connection<W>,
    piece: &[u8],
    queued: &mut usize,
    timeout: Option<std::time::Duration>,
) -> Result<(), ClientError>
where
    W: AsyncRead + AsyncWrite + Unpin,
{
    if *queued + piece.len() <= BATCH {
        tx.queue_bytes(piece);
        *queued += piece.len();
    } else {
        // Writes out the queue, then the piece straight from its buffer.
        tx.write_body(piece, timeout).await?;
        *queued = 0;
    }
    Ok(())
}

/// A local file ready to be sent.
enum Opened {
    /// Small enough to be read and hashed with the open: its bytes.
    Whole { id: FileId, body: Vec<u8> },
    /// Streamed through a [`transfer::Source`].
    Large { file: std::fs::File, size: u64 },
}

impl Opened {
    fn size(&self) -> u64 {
        match self {
            Self::Whole { body, .. } => body.len() as u64,
            Self::Large { size, .. } => *size,
        }
    }
}

/// One item of a group opened together: its index, name, path and what opening it gave.
type Ready = (usize, FileName, PathBuf, Result<Opened, ClientError>);

/// Opens a group of local files and checks them, in one trip to the blocking pool: for small
/// files that trip is most of the cost, so one per group instead of four per file (open, stat,
/// read, hash). A file of up to [`transfer::CHUNK`] bytes is also read and hashed, while the
/// group's bytes read stay within [`GROUP_BYTES`]; the others are streamed when their turn comes.
async fn open_group(group: Vec<(usize, PutItem)>, follow: Follow) -> VecDeque<Ready> {
    let kept: Vec<(usize, FileName, PathBuf)> = group
        .iter()
        .map(|(index, item)| (*index, item.name.clone(), item.path.clone()))
        .collect();
    let job = transfer::blocking(move || {
        let mut budget = GROUP_BYTES;
        group
            .into_iter()
            .map(|(index, PutItem { path, name })| {
                let opened = open_now(&path, follow, &mut budget);
                (index, name, path, opened)
            })
            .collect::<VecDeque<_>>()
    });
    match job.await {
        Ok(ready) => ready,
        // The job panicked or was cancelled: every file of the group fails with that error.
        Err(e) => kept
            .into_iter()
            .map(|(index, name, path)| {
                let error = ClientError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                };
                (index, name, path, Err(error))
            })
            .collect(),
    }
}

/// The blocking part of [`open_group`] for one file; `budget` is what the group may still read.
fn open_now(path: &Path, follow: Follow, budget: &mut usize) -> Result<Opened, ClientError> {
    let (mut file, size) = open_regular_now(path, follow)?;
    let want = usize::try_from(size).unwrap_or(usize::MAX);
    if want > transfer::CHUNK || want > *budget {
        return Ok(Opened::Large { file, size });
    }
    let mut body = vec![0; want];
    let read = transfer::read_full(&mut file, &mut body).map_err(ClientError::io(path))?;
    if read < want {
        return Err(ClientError::FileChanged {
            path: path.to_owned(),
        });
    }
    *budget -= want;
    Ok(Opened::Whole {
        id: transfer::md5(&body),
        body,
    })
}

async fn read_replies<R>(
    rx: &mut crate::transport::Connection<R>,
    mut from_writer: mpsc::Receiver<Sent>,
    timeout: Option<std::time::Duration>,
    on_result: &mut impl FnMut(usize, Result<Verified, ClientError>),
    mismatched: &mut Vec<FileName>,
) -> Result<(), ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(sent) = from_writer.recv().await {
        let (index, name, size, id) = match sent {
            Sent::Skipped { index, error } => {
                on_result(index, Err(error));
                continue;
            }
            Sent::Put {
                index,
                name,
                size,
                id,
            } => (index, name, size, id),
        };
        let reply = recv_reply(rx, timeout).await?;
        let outcome = match reply.code {
            // Read by its first digit (PROTOCOL.md section 6): any 2xx carries the id.
            code if code.is_success() => verify_stored(&reply, id, &name, size),
            code if code.is_error() => Err(ClientError::Refused {
                code,
                text: reply.text,
            }),
            _ => {
                return Err(ClientError::Protocol(format!(
                    "unexpected reply to PUT: {reply}"
                )));
            }
        };
        let lost = matches!(&outcome, Err(e) if e.is_connection_lost())
            // 400 and 413 to a PUT close the connection too (PROTOCOL.md section 5.3).
            || matches!(&outcome, Err(ClientError::Refused { code, .. }) if matches!(*code, Code::BAD_REQUEST | Code::TOO_LARGE));
        if let Err(ClientError::ChecksumMismatch { .. }) = &outcome {
            mismatched.push(name.clone());
        }
        on_result(index, outcome);
        if lost {
            // This is the outcome of the files after this one: it says why they failed
            // without quoting this file's reply, which is not theirs.
            return Err(ClientError::Disconnected(format!(
                "the connection ended at the reply for {name}"
            )));
        }
    }
    Ok(())
}

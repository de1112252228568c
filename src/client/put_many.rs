//! Pipelined uploads with `PUT` (`PROTOCOL.md` section 5.3 and "Pipelining").
//!
//! A `PUT` body follows its request line at once, so many uploads can be in flight on one
//! connection. Two halves run concurrently in the same task: the writer reads the files, hashes
//! them and queues `PUT` lines and bodies, writing them out in large batches; the reader matches
//! each reply with what was sent, in order. A bounded channel between them caps how many uploads
//! are in flight, and the writer always writes out what it queued before it waits on that channel,
//! so neither side can wait for the other forever.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{ClientError, Verified, read_chunk, recv_reply, trace_sent, verify_stored};
use crate::name::FileName;
use crate::protocol::{Code, FileId};

/// At most this many uploads are sent ahead of their replies.
const IN_FLIGHT: usize = 1024;

/// Queued bytes are written out once they reach this much; bodies larger than this bypass the
/// queue. Big enough to fill many segments per write, small enough to start the server early.
const BATCH: usize = 256 * 1024;

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
        mut on_result: impl FnMut(usize, Result<Verified, ClientError>),
    ) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = PutItem>,
    {
        self.usable()?;
        self.in_exchange = true;
        let mut mismatched = Vec::new();
        let (to_reader, from_writer) = mpsc::channel(IN_FLIGHT);
        let writer = write_puts(
            &mut self.tx,
            &mut self.chunk,
            items,
            to_reader,
            self.timeout,
        );
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
    chunk: &mut Vec<u8>,
    items: I,
    to_reader: mpsc::Sender<Sent>,
    timeout: Option<std::time::Duration>,
) -> Result<(), ClientError>
where
    W: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator<Item = PutItem>,
{
    let mut queued = 0usize;
    let mut line = String::new();
    for (index, item) in items.into_iter().enumerate() {
        let PutItem { path, name } = item;
        let (path, opened) = open_and_fill(path, chunk).await;
        let sent = match opened {
            Err(error) => Sent::Skipped { index, error },
            Ok((file, size, filled)) => {
                // The canonical `PUT name;size` line, built in a reused buffer.
                line.clear();
                let _ = writeln!(line, "PUT {};{size}", name.as_str());
                trace_sent(&line);
                tx.queue_bytes(line.as_bytes());
                queued += line.len();
                let mut hasher = Md5::new();
                let mut file = ((filled as u64) < size).then(|| tokio::fs::File::from_std(file));
                let mut n = filled;
                let mut done = 0;
                loop {
                    hasher.update(&chunk[..n]);
                    if queued + n <= BATCH {
                        tx.queue_bytes(&chunk[..n]);
                        queued += n;
                    } else {
                        // Writes out the queue, then the chunk straight from our buffer.
                        tx.write_body(&chunk[..n], timeout).await?;
                        queued = 0;
                    }
                    done += n as u64;
                    match file.as_mut() {
                        Some(file) if done < size => {
                            n = read_chunk(file, &path, chunk, size - done).await?
                        }
                        _ => break,
                    }
                }
                Sent::Put {
                    index,
                    name,
                    size,
                    id: FileId(hasher.finalize().into()),
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

/// Opens a local file, checks it, and reads its first chunk into `chunk`, all in one trip to
/// the blocking pool: for small files that trip is most of the cost, so one instead of three
/// (open, stat, read) matters. Returns the path back, and the file, its size and how many bytes
/// of it are in `chunk`.
async fn open_and_fill(
    path: PathBuf,
    chunk: &mut Vec<u8>,
) -> (PathBuf, Result<(std::fs::File, u64, usize), ClientError>) {
    let mut buf = std::mem::take(chunk);
    let joined = tokio::task::spawn_blocking(move || {
        let result = fill(&path, &mut buf);
        (path, buf, result)
    })
    .await;
    match joined {
        Ok((path, buf, result)) => {
            *chunk = buf;
            (path, result)
        }
        Err(e) => {
            // The task panicked or was cancelled; its buffer and path went with it.
            *chunk = vec![0; super::CHUNK];
            let error = ClientError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            };
            (PathBuf::new(), Err(error))
        }
    }
}

/// The blocking part of [`open_and_fill`].
fn fill(path: &Path, buf: &mut [u8]) -> Result<(std::fs::File, u64, usize), ClientError> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(ClientError::io(path))?;
    let meta = file.metadata().map_err(ClientError::io(path))?;
    if !meta.is_file() {
        return Err(ClientError::NotAFile {
            path: path.to_owned(),
        });
    }
    let size = meta.len();
    let want = super::chunk_len(size, buf.len());
    let mut filled = 0;
    while filled < want {
        match file.read(&mut buf[filled..want]) {
            Ok(0) => {
                return Err(ClientError::FileChanged {
                    path: path.to_owned(),
                });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ClientError::io(path)(e)),
        }
    }
    Ok((file, size, filled))
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

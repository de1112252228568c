//! Moving a body between a file and the connection with the MD5 computed on another thread.
//!
//! Hashing costs more than anything else in a transfer (MD5 runs at about the speed of the
//! network on loopback), so the file side, reading and hashing on upload, hashing and writing on
//! download, runs on a blocking thread while the async side moves the previous chunk over the
//! socket. Buffers go back and forth and are reused: a transfer holds at most `DEPTH + 1` chunks.

use std::fs::File;
use std::io::{self, Read, Write};

use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protocol::FileId;

/// Bytes per chunk.
pub(super) const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two sides.
const DEPTH: usize = 4;

/// The file side of an upload: reads exactly `size` bytes of `file` (fewer if it shrank) and
/// hashes them.
pub(super) struct Source {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
    hashing: JoinHandle<FileId>,
}

impl Source {
    pub(super) fn spawn(file: File, size: u64) -> Self {
        let (tx, chunks) = mpsc::channel(DEPTH);
        let (spare, spares) = std::sync::mpsc::channel::<Vec<u8>>();
        let hashing = tokio::task::spawn_blocking(move || {
            let mut hasher = Md5::new();
            let mut file = file.take(size);
            let mut made = 0;
            loop {
                let mut buf = match spares.try_recv() {
                    Ok(b) => b,
                    Err(_) if made <= DEPTH => {
                        made += 1;
                        Vec::with_capacity(CHUNK)
                    }
                    Err(_) => match spares.recv() {
                        Ok(b) => b,
                        Err(_) => break, // The sender gave up.
                    },
                };
                buf.resize(CHUNK, 0);
                match fill(&mut file, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        hasher.update(&buf);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
            FileId(hasher.finalize().into())
        });
        Self {
            chunks,
            spare,
            hashing,
        }
    }

    /// The next chunk; `None` once the file has no more bytes.
    pub(super) async fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        self.chunks.recv().await
    }

    /// Hands a sent chunk back for reuse.
    pub(super) fn recycle(&self, chunk: Vec<u8>) {
        let _ = self.spare.send(chunk);
    }

    /// The MD5 of everything read.
    pub(super) async fn finish(self) -> io::Result<FileId> {
        drop(self.chunks);
        drop(self.spare);
        self.hashing.await.map_err(io::Error::other)
    }
}

/// The file side of a download: hashes and writes chunks as they arrive.
pub(super) struct Sink {
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    spares: mpsc::UnboundedReceiver<Vec<u8>>,
    made: usize,
    writing: JoinHandle<(FileId, io::Result<()>)>,
}

impl Sink {
    /// Starts two threads, one hashing and one writing, so that on a machine with a core to
    /// spare the MD5 alone sets the pace (the server side of a download costs almost nothing).
    pub(super) fn spawn(mut file: File) -> Self {
        let (chunks, mut rx) = mpsc::channel::<Vec<u8>>(DEPTH);
        let (to_writer, from_hasher) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH);
        let (spare, spares) = mpsc::unbounded_channel();
        let writer = std::thread::Builder::new()
            .name("barge-write".into())
            .spawn(move || {
                let mut result = Ok(());
                for buf in from_hasher {
                    // After a write error the rest is still taken (and dropped), so the caller can
                    // finish reading the body and keep the connection in step.
                    if result.is_ok() {
                        result = file.write_all(&buf);
                    }
                    let _ = spare.send(buf);
                }
                result.and_then(|()| file.flush())
            });
        let writing = tokio::task::spawn_blocking(move || {
            let mut hasher = Md5::new();
            let writer = match writer {
                Ok(w) => w,
                Err(e) => return (FileId([0; 16]), Err(e)),
            };
            while let Some(buf) = rx.blocking_recv() {
                hasher.update(&buf);
                if to_writer.send(buf).is_err() {
                    break;
                }
            }
            drop(to_writer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writer thread failed")));
            (FileId(hasher.finalize().into()), written)
        });
        Self {
            chunks: Some(chunks),
            spares,
            made: 0,
            writing,
        }
    }

    /// A buffer to receive the next chunk into (reused when one is free).
    pub(super) async fn buffer(&mut self) -> Vec<u8> {
        let mut buf = match self.spares.try_recv() {
            Ok(b) => b,
            Err(_) if self.made <= 2 * DEPTH => {
                self.made += 1;
                Vec::with_capacity(CHUNK)
            }
            Err(_) => self.spares.recv().await.unwrap_or_default(),
        };
        buf.resize(CHUNK, 0);
        buf
    }

    /// Passes a received chunk on to be hashed and written.
    pub(super) async fn push(&mut self, chunk: Vec<u8>) {
        if let Some(tx) = &self.chunks {
            if tx.send(chunk).await.is_err() {
                self.chunks = None;
            }
        }
    }

    /// Waits for the last write; returns the MD5 of everything pushed and the first write
    /// error, if any.
    pub(super) async fn finish(mut self) -> (FileId, io::Result<()>) {
        self.chunks = None;
        match self.writing.await {
            Ok(r) => r,
            Err(e) => (FileId([0; 16]), Err(io::Error::other(e))),
        }
    }
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

//! One download (`DOWNLOAD`, `PROTOCOL.md` section 5.4): the `213` header is checked against
//! what was asked, the body streams from the connection through a [`transfer::Sink`] (hashed
//! and written on the blocking pool) into a temporary file, which takes the target's name only
//! once its MD5 equals the file's id.
//!
//! The helpers here also serve [`get_many`](super::get_many), so a pipelined download saves
//! exactly as a single one does.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{protocol, trace_body};
use super::local::{chunk_len, exists, known_target, persist, target, temp_file_for};
use super::{Client, ClientError, Destination, Downloaded, Progress};
use crate::md5_state::ResumableMd5;
use crate::name::escape;
use crate::protocol::{Code, DownloadHeader, FileId, FileRef, Reply, Request};
use crate::transfer::{self, SinkError};
use crate::transport::Connection;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Downloads a file by id or name (`DOWNLOAD`), writing it to a temporary file next to its
    /// target while hashing it, and moving it into place only if its MD5 equals its id.
    ///
    /// An existing file is never replaced unless `overwrite` is set. `progress` is called as
    /// bytes arrive.
    ///
    /// # Errors
    /// A refusal (no such file...), [`ClientError::AlreadyExists`],
    /// [`ClientError::ChecksumMismatch`] (nothing is kept), [`ClientError::Protocol`] for a
    /// malformed or hostile `213` header, a local I/O error, or a transport error.
    pub async fn download(
        &mut self,
        file: &FileRef,
        dest: &Destination,
        overwrite: bool,
        mut progress: impl FnMut(Progress),
    ) -> Result<Downloaded, ClientError> {
        self.usable()?;
        let result = self
            .download_inner(file, dest, overwrite, &mut progress)
            .await;
        self.settle(result)
    }

    /// Downloads a file by id or name into `out` (standard output, say) as its bytes arrive,
    /// hashing them on the way. Unlike [`download`](Self::download), the bytes are out before
    /// they can be checked: a [`ClientError::ChecksumMismatch`] then says that what was written
    /// is not the file, and the reader must discard it.
    ///
    /// # Errors
    /// A refusal, [`ClientError::ChecksumMismatch`] (after the bytes were written),
    /// [`ClientError::Protocol`] for a malformed or hostile `213` header, a write error on `out`
    /// (the rest of the body is then read and dropped), or a transport error.
    pub async fn download_to(
        &mut self,
        file: &FileRef,
        out: std::fs::File,
        mut progress: impl FnMut(Progress),
    ) -> Result<Downloaded, ClientError> {
        self.usable()?;
        let result = self.download_to_inner(file, &out, &mut progress).await;
        self.settle(result)
    }

    async fn download_to_inner<P: FnMut(Progress)>(
        &mut self,
        file: &FileRef,
        out: &std::fs::File,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
        let reply = self.request(&Request::Download(Some(file.clone()))).await?;
        if reply.code != Code::FILE_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = check_header(file, &reply)?;
        trace_body(header.size);
        let path = Path::new("-");
        self.rx.begin_body(self.min_rate, body_window(self.timeout));
        let actual =
            receive_body(&mut self.rx, self.timeout, out, path, header.size, progress).await;
        if !matches!(&actual, Err(e) if e.is_connection_lost()) {
            self.in_exchange = false;
        }
        let actual = actual?;
        if actual != header.id {
            return Err(ClientError::ChecksumMismatch {
                expected: header.id,
                actual,
            });
        }
        Ok(Downloaded {
            name: header.name,
            id: header.id,
            size: header.size,
            path: path.to_owned(),
        })
    }

    async fn download_inner<P: FnMut(Progress)>(
        &mut self,
        file: &FileRef,
        dest: &Destination,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
        // Asked for by id into a folder: the target is named by the server's answer, and a
        // part kept by an earlier try is found by the id.
        if let (true, Destination::Dir(dir), Some(id)) = (self.resume, dest, file.id) {
            return self
                .download_by_id_into(file, dir, id, overwrite, progress)
                .await;
        }
        // Refuse before asking when the target is already known.
        if let Some(path) = known_target(file, dest)? {
            if self.resume {
                return self
                    .download_resumable(file, &path, overwrite, progress)
                    .await;
            }
            if !overwrite && exists(&path).await {
                return Err(ClientError::AlreadyExists { path });
            }
        }

        let reply = self.request(&Request::Download(Some(file.clone()))).await?;
        if reply.code != Code::FILE_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = check_header(file, &reply)?;
        trace_body(header.size);
        let (rx, timeout) = (&mut self.rx, self.timeout);
        rx.begin_body(self.min_rate, body_window(timeout));
        let saved = async {
            let path = target_or_skip(rx, timeout, file, dest, &header).await?;
            save_body(rx, timeout, &header, &path, overwrite, progress).await?;
            Ok::<_, ClientError>(path)
        }
        .await;
        if !matches!(&saved, Err(e) if e.is_connection_lost()) {
            // The body was read in full: the connection is in step whatever happened locally.
            self.in_exchange = false;
        }
        let path = saved?;
        Ok(Downloaded {
            name: header.name,
            id: header.id,
            size: header.size,
            path,
        })
    }
}

/// The room a download must leave free on its disk: 64 MiB, or 5% of a smaller disk.
const FREE_MARGIN: u64 = 64 << 20;

/// The window a body's minimum rate is judged over: the stall timeout, as on the server.
pub(super) fn body_window(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(super::DEFAULT_TIMEOUT)
}

/// [`target`], reading and dropping the body when the file is refused, so the connection
/// stays in step (unless the refusal is one that loses the connection anyway).
pub(super) async fn target_or_skip<R>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    file: &FileRef,
    dest: &Destination,
    header: &DownloadHeader,
) -> Result<std::path::PathBuf, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
{
    match target(file, dest, &header.name) {
        Err(e) if !e.is_connection_lost() => {
            rx.discard_body(header.size, timeout).await?;
            Err(e)
        }
        result => result,
    }
}

/// Decodes a `213` header and checks that it answers what was asked: a hostile or confused
/// server must not be able to slip another file (under another name) into our folder.
pub(super) fn check_header(file: &FileRef, reply: &Reply) -> Result<DownloadHeader, ClientError> {
    let header =
        DownloadHeader::decode(&reply.text).map_err(|e| protocol("download header", &e))?;
    // Text that reads as an id is taken as an id: the bytes must hash to it. (Otherwise a
    // server could answer with a file *named* like the id, verified against another id.)
    let answers = match file.id {
        Some(id) => header.id == id,
        None => file.name.as_ref() == Some(&header.name),
    };
    if !answers {
        return Err(ClientError::Protocol(format!(
            "asked for {} but the server sent {} ({})",
            escape(&file.as_str()),
            header.name,
            header.id
        )));
    }
    Ok(header)
}

/// Receives the body `header` announced into a temporary file next to `path`, and moves it
/// into place if its MD5 is the header's id (never replacing a file unless `overwrite`).
///
/// The body is always read in full, whatever happens on our side, unless the error is one that
/// loses the connection ([`ClientError::is_connection_lost`]): then the connection is out of step.
pub(super) async fn save_body<R, P>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    header: &DownloadHeader,
    path: &Path,
    overwrite: bool,
    progress: &mut P,
) -> Result<(), ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    P: FnMut(Progress),
{
    if !overwrite && exists(path).await {
        rx.discard_body(header.size, timeout).await?;
        return Err(ClientError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let temp = match temp_file_for(path) {
        Ok(temp) => temp,
        Err(e) => {
            rx.discard_body(header.size, timeout).await?;
            return Err(e);
        }
    };
    if let Ok(st) = rustix::fs::fstatvfs(temp.as_file()) {
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        // Keep a margin: a download that would leave the disk all but full (and the system
        // and other programs with no room) is refused too.
        let margin = FREE_MARGIN.min(st.f_blocks.saturating_mul(st.f_frsize) / 20);
        if header.size.saturating_add(margin) > available {
            return Err(ClientError::InsufficientSpace {
                path: path.to_owned(),
                needed: header.size,
                available,
            });
        }
    }
    let actual = receive_body(
        rx,
        timeout,
        temp.as_file(),
        temp.path(),
        header.size,
        progress,
    )
    .await?;
    if actual != header.id {
        // Dropping `temp` deletes it: nothing unverified is kept.
        return Err(ClientError::ChecksumMismatch {
            expected: header.id,
            actual,
        });
    }
    persist(temp, path, overwrite).await
}

/// Reads a `size`-byte body into `file`, hashing it on the way. A local error stops the
/// writing but the rest of the body is still read, so the connection stays in step.
async fn receive_body<R, P>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    file: &std::fs::File,
    path: &Path,
    size: u64,
    progress: &mut P,
) -> Result<FileId, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    P: FnMut(Progress),
{
    // Hashing and writing run side by side on two lanes of the pool (see `transfer::Sink`).
    let sink = file
        .try_clone()
        .and_then(|file| transfer::Sink::new(file, true, write_file))
        .map(transfer::Sink::large);
    let hash = receive_at(rx, timeout, sink, path, 0, size, progress).await?;
    Ok(hash.finalize())
}

/// The write function of a download's sink.
pub(super) fn write_file(f: &mut std::fs::File, b: &[u8]) -> std::io::Result<()> {
    f.write_all(b)
}

/// [`receive_body`] of the bytes of a `size`-byte file from `offset` on, through `sink` (a
/// resumed download's, whose hash already counts the first `offset` bytes): progress counts
/// from `offset`. Returns the sink's hash state once every byte is written.
pub(super) async fn receive_at<R, P>(
    rx: &mut Connection<R>,
    timeout: Option<Duration>,
    sink: std::io::Result<transfer::Sink<std::fs::File, std::io::Error>>,
    path: &Path,
    offset: u64,
    size: u64,
    progress: &mut P,
) -> Result<ResumableMd5, ClientError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    P: FnMut(Progress),
{
    let mut sink = match sink {
        Ok(sink) => sink,
        Err(e) => {
            rx.discard_body(size - offset, timeout).await?;
            return Err(ClientError::io(path)(e));
        }
    };
    let mut done = offset;
    progress(Progress { done, total: size });
    while done < size {
        if sink.failed() {
            // Nothing more will be written: just keep the connection in step.
            rx.discard_body(size - done, timeout).await?;
            break;
        }
        let mut buf = sink.buffer().await;
        let want = chunk_len(size - done, buf.len());
        let mut filled = 0;
        // Fill whole chunks: fewer, larger hand-offs to the blocking pool.
        while filled < want {
            filled += rx.read_body(&mut buf[filled..want], timeout).await?;
        }
        buf.truncate(filled);
        done += filled as u64;
        sink.push(buf);
        super::resume::test_kill_at(done);
        progress(Progress { done, total: size });
    }
    // Waits for the last write to reach the file; the data is not forced to disk, which is the
    // usual trade-off for a downloaded copy (a crash means downloading it again).
    match sink.finish_hash().await {
        Ok((_, Some(hash))) => Ok(hash),
        Ok((_, None)) | Err(SinkError::Worker) => Err(ClientError::io(path)(
            std::io::Error::other("the transfer job failed"),
        )),
        Err(SinkError::Write(e)) => Err(ClientError::io(path)(e)),
    }
}

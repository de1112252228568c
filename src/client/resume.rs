//! Resumed transfers (`PROTOCOL.md` sections 5.11 and 5.12).
//!
//! Upload: `RESUME name;size`, the server answers `352 <offset>` (what it kept of an earlier
//! try by the same principal, 0 when nothing), the client sends the rest and then its MD5 of the
//! whole local file, hashed on the side while the rest goes out. The server stores the file only
//! if that MD5 is the one of what it holds; otherwise it drops everything (`460`) and the next
//! try starts over.
//!
//! Download (of a file of at least [`RESUME_MIN`] bytes): the bytes go to a `.part` file next
//! to the target named after the target and the
//! file's id (`.NAME.ID.barge-part`), kept when the transfer breaks off. The next `get` of the
//! same target finds it, asks `DOWNLOAD_FROM <its length>`, appends, hashes the whole part from
//! disk and moves it into place only if it hashes to the id. A part whose id is no longer the
//! file's, or that does not verify, is deleted.

use std::io::{Read as _, Seek as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};
use tokio::io::{AsyncRead, AsyncWrite};

use super::download::{body_window, check_header, save_body};
use super::exchange::{protocol, recv_reply, trace_body};
use super::local::{exists, persist};
use super::upload::verify_stored;
use super::{Client, ClientError, Downloaded, Progress, Verified};
use crate::name::FileName;
use crate::protocol::{
    Code, DownloadHeader, FileId, FileRef, Reply, Request, RestHeader, UploadSpec, parse_size,
};
use crate::transfer;

/// Files smaller than this are uploaded with a plain `UPLOAD`: resuming them saves nothing.
pub const RESUME_MIN: u64 = 1 << 20;

/// The environment variable that makes the client kill itself (`SIGKILL`) once a body has
/// reached this many bytes of its file: how the tests interrupt a transfer at a set point.
const KILL_AT: &str = "BARGE_TEST_KILL_AT";

/// The environment variable that makes the client stop moving bytes (it sleeps, holding the
/// connection) once a body has reached this many bytes of its file: how the tests kill the
/// server at a set point of a transfer.
const STALL_AT: &str = "BARGE_TEST_STALL_AT";

/// Test hooks ([`KILL_AT`], [`STALL_AT`]): kills this process, or stalls it for a minute, once
/// `pos` bytes of the file are done. Without those variables, nothing.
pub(super) fn test_kill_at(pos: u64) {
    type At = std::sync::OnceLock<(Option<u64>, Option<u64>)>;
    static AT: At = std::sync::OnceLock::new();
    let read = |var| std::env::var(var).ok().and_then(|v| v.parse().ok());
    let (kill, stall) = AT.get_or_init(|| (read(KILL_AT), read(STALL_AT)));
    if kill.is_some_and(|at| pos >= at) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    if stall.is_some_and(|at| pos >= at) {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// The MD5 of the first `len` bytes of `file`, read with positioned reads (the handle's own
/// position is left alone).
fn md5_of(file: &std::fs::File, len: u64) -> std::io::Result<FileId> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; transfer::CHUNK];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from(len - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(FileId(hasher.finalize().into()))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Uploads with `RESUME`: continues what the server kept of an earlier try, if anything.
    /// Falls back to a plain upload on a server that does not know `RESUME`.
    pub(super) async fn upload_resumable<P: FnMut(Progress)>(
        &mut self,
        mut file: std::fs::File,
        size: u64,
        path: &Path,
        name: &FileName,
        progress: &mut P,
    ) -> Result<Verified, ClientError> {
        let hashed = file.try_clone().map_err(ClientError::io(path))?;
        let reply = self
            .request(&Request::Resume(UploadSpec {
                name: name.clone(),
                size,
            }))
            .await?;
        if reply.code == Code::BAD_REQUEST && reply.text.to_ascii_lowercase().contains("unknown") {
            // A server from before RESUME.
            self.in_exchange = false;
            return self.upload_opened(file, size, path, name, progress).await;
        }
        if reply.code != Code::RESUMING {
            return Err(self.unexpected(reply));
        }
        let offset = parse_size(reply.first_word())
            .ok()
            .filter(|o| *o <= size)
            .ok_or_else(|| ClientError::Protocol(format!("bad resume offset in {reply}")))?;
        trace_body(size - offset);
        // Our MD5 of the whole file. From the start, the bytes are hashed as they are read to
        // be sent (reading the file a second time for the hash cost a copy per byte); after a
        // kept part, the whole file is hashed on the side while the rest is sent.
        let side =
            (offset > 0).then(|| tokio::spawn(transfer::blocking(move || md5_of(&hashed, size))));
        self.tx.begin_body(self.min_rate, body_window(self.timeout));
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(ClientError::io(path))?;
        let mut source = transfer::Source::new(file, size - offset, side.is_none())
            .map_err(ClientError::io(path))?;
        self.send_source(&mut source, path, offset, size, progress)
            .await?;
        let streamed = source.finish().await;
        let ours = match side {
            Some(side) => side
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|job| job)
                .and_then(|hashed| hashed),
            None => streamed.and_then(|id| id.ok_or_else(|| std::io::Error::other("no MD5"))),
        };
        let ours = match ours {
            Ok(id) => id,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ClientError::FileChanged {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(ClientError::io(path)(e)),
        };
        let line = format!("{ours}\n");
        self.tx.queue_bytes(line.as_bytes());
        self.tx.flush(self.timeout).await?;
        let reply = recv_reply(&mut self.rx, self.timeout).await?;
        if reply.code == Code::CHECKSUM_MISMATCH {
            self.in_exchange = false;
            let actual = FileId::parse(reply.first_word())
                .map_err(|e| protocol("checksum mismatch reply", &e.into()))?;
            return Err(ClientError::ChecksumMismatch {
                expected: ours,
                actual,
            });
        }
        if !reply.code.is_success() {
            return Err(self.unexpected(reply));
        }
        self.in_exchange = false;
        verify_stored(&reply, ours, name, size)
    }

    /// Downloads to `path` through a kept `.part` file, continuing one left by an earlier try.
    pub(super) async fn download_resumable<P: FnMut(Progress)>(
        &mut self,
        file: &FileRef,
        path: &Path,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
        if !overwrite && exists(path).await {
            return Err(ClientError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        let found = find_part(path, file.id);
        if let Some((part, id, len)) = found {
            if len > 0 {
                if let Some(done) = self
                    .continue_part(file, path, &part, id, len, overwrite, progress)
                    .await?
                {
                    return Ok(done);
                }
            }
            let _ = std::fs::remove_file(&part);
        }
        let reply = self.request(&Request::Download(Some(file.clone()))).await?;
        if reply.code != Code::FILE_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = check_header(file, &reply)?;
        if header.size < RESUME_MIN {
            // Small files gain nothing from a kept part: the usual temporary file, removed
            // whatever happens.
            trace_body(header.size);
            self.rx.begin_body(self.min_rate, body_window(self.timeout));
            let saved = save_body(
                &mut self.rx,
                self.timeout,
                &header,
                path,
                overwrite,
                progress,
            )
            .await;
            if !matches!(&saved, Err(e) if e.is_connection_lost()) {
                self.in_exchange = false;
            }
            saved?;
            return Ok(Downloaded {
                name: header.name,
                id: header.id,
                size: header.size,
                path: path.to_owned(),
            });
        }
        let rest = RestHeader {
            count: header.size,
            offset: 0,
            id: header.id,
            name: header.name,
        };
        let part = part_path(path, header.id);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part);
        let opened = match opened {
            Ok(f) => f,
            Err(e) => {
                self.rx.discard_body(rest.count, self.timeout).await?;
                self.in_exchange = false;
                return Err(ClientError::io(&part)(e));
            }
        };
        self.finish_part(opened, &part, path, &rest, overwrite, progress)
            .await
    }

    /// Asks for the rest of a kept part. `Ok(None)` when the part cannot be continued (the
    /// file changed on the server, or the server does not know `DOWNLOAD_FROM`): the caller
    /// starts over.
    #[allow(clippy::too_many_arguments)]
    async fn continue_part<P: FnMut(Progress)>(
        &mut self,
        file: &FileRef,
        path: &Path,
        part: &Path,
        id: FileId,
        len: u64,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Option<Downloaded>, ClientError> {
        let reply = self
            .request(&Request::DownloadFrom {
                offset: len,
                target: file.clone(),
            })
            .await?;
        if reply.code == Code::BAD_REQUEST || reply.code == Code::BEYOND_END {
            self.in_exchange = false;
            return Ok(None);
        }
        if reply.code != Code::REST_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = RestHeader::decode(&reply.text).map_err(|e| protocol("214 header", &e))?;
        // The same checks as a whole download's header: it must answer what was asked.
        check_header(
            file,
            &Reply::new(
                Code::FILE_FOLLOWS,
                DownloadHeader {
                    size: header.count,
                    id: header.id,
                    name: header.name.clone(),
                }
                .encode(),
            ),
        )?;
        if header.offset != len || header.id != id {
            // Another file now has that name: what was kept belongs to the old one.
            self.rx.discard_body(header.count, self.timeout).await?;
            self.in_exchange = false;
            return Ok(None);
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(part);
        let opened = match opened {
            Ok(f) => f,
            Err(e) => {
                self.rx.discard_body(header.count, self.timeout).await?;
                self.in_exchange = false;
                return Err(ClientError::io(part)(e));
            }
        };
        self.finish_part(opened, part, path, &header, overwrite, progress)
            .await
            .map(Some)
    }

    /// Receives `header.count` bytes onto the end of `part`, hashes the whole part and moves it
    /// to `path` if it hashes to the id; deletes it if not; keeps it if the connection broke.
    async fn finish_part<P: FnMut(Progress)>(
        &mut self,
        opened: std::fs::File,
        part: &Path,
        path: &Path,
        header: &RestHeader,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
        let size = header.offset + header.count;
        trace_body(header.count);
        self.rx.begin_body(self.min_rate, body_window(self.timeout));
        let offset = header.offset;
        let received = super::download::receive_at(
            &mut self.rx,
            self.timeout,
            &opened,
            part,
            offset,
            size,
            progress,
        )
        .await;
        if !matches!(&received, Err(e) if e.is_connection_lost()) {
            self.in_exchange = false;
        }
        let streamed = received?;
        let whole = opened;
        let actual = transfer::blocking(move || {
            let _ = whole.sync_data();
            if offset == 0 {
                // The part was empty: the MD5 taken as the bytes were written is the whole
                // file's (hashing it again from disk doubled the CPU of every large download).
                return Ok(streamed);
            }
            // Continued: what was kept is hashed again from disk, never trusted.
            let mut f = whole;
            f.rewind()?;
            let mut hasher = Md5::new();
            let mut buf = vec![0u8; transfer::CHUNK];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(FileId(hasher.finalize().into()))
        })
        .await
        .map_err(ClientError::io(part))?
        .map_err(ClientError::io(part))?;
        if actual != header.id {
            let _ = std::fs::remove_file(part);
            return Err(ClientError::ChecksumMismatch {
                expected: header.id,
                actual,
            });
        }
        let reopened = std::fs::File::open(part).map_err(ClientError::io(part))?;
        let temp_path =
            tempfile::TempPath::try_from_path(part.to_owned()).map_err(ClientError::io(part))?;
        let temp = tempfile::NamedTempFile::from_parts(reopened, temp_path);
        persist(temp, path, overwrite).await?;
        Ok(Downloaded {
            name: header.name.clone(),
            id: header.id,
            size,
            path: path.to_owned(),
        })
    }
}

/// Where the part of a download of the file `id` to `target` is kept: next to it, hidden,
/// named after both (`.NAME.ID.barge-part`), so the next `get` of the same target finds it.
pub(super) fn part_path(target: &Path, id: FileId) -> PathBuf {
    let leaf = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{leaf}.{id}.barge-part"))
}

/// A kept part for `target` (of the file `id`, when the id is known): its path, its id and its
/// length. With several, the longest.
fn find_part(target: &Path, id: Option<FileId>) -> Option<(PathBuf, FileId, u64)> {
    let leaf = target.file_name()?.to_string_lossy().into_owned();
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = format!(".{leaf}.");
    let mut best: Option<(PathBuf, FileId, u64)> = None;
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(hex) = rest.strip_suffix(".barge-part") else {
            continue;
        };
        let Ok(found) = FileId::parse(hex) else {
            continue;
        };
        if id.is_some_and(|id| id != found) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if best.as_ref().is_none_or(|(_, _, len)| meta.len() > *len) {
            best = Some((entry.path(), found, meta.len()));
        }
    }
    best
}

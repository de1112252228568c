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
//! same target finds it, asks `DOWNLOAD_FROM <its length>`, appends, and moves it into place
//! only if the whole part hashes to the id. A part whose id is no longer the file's, or that
//! does not verify, is deleted.
//!
//! (A little over 500 lines: the upload and the download halves share the offset, part and
//! fallback handling that makes a resume safe; the hashing of prefixes lives apart, in
//! [`hash_cache`] and [`part_hash`].)
//!
//! Neither side hashes a prefix again when it need not: an upload's MD5 starts from the state
//! cached for the local file nearest below the offset ([`hash_cache`]), a download's from the
//! state saved beside its part ([`part_hash`]).

use std::io::Seek as _;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};

use super::download::{body_window, check_header, save_body};
use super::exchange::{protocol, recv_reply, trace_body};
use super::hash_cache::{self, PrefixCache};
use super::local::{exists, persist};
use super::part_hash;
use super::upload::verify_stored;
use super::{Client, ClientError, Downloaded, Progress, Verified};
use crate::md5_state::ResumableMd5;
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

/// The environment variable that sets the spacing of saved MD5 states (bytes), in place of
/// the usual tens of MiB: how the tests get states within their small files.
const MD5_EVERY: &str = "BARGE_TEST_MD5_EVERY";

/// The spacing of saved MD5 states set by [`MD5_EVERY`], if any.
pub(super) fn test_md5_every() -> Option<u64> {
    static EVERY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var(MD5_EVERY)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
    })
}

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

/// The MD5 of the first `size` bytes of `file` (opened from `path`), read with positioned
/// reads (the handle's own position is left alone). When the prefix-hash cache holds a state of
/// this file at or before `from` (the byte the server resumes at), hashing starts there;
/// states met on the way are added to the cache.
fn md5_of(file: &std::fs::File, path: &Path, size: u64, from: u64) -> std::io::Result<FileId> {
    let mut cache = PrefixCache::open(path, file);
    let mut hasher = cache
        .as_ref()
        .and_then(|c| c.best(from))
        .unwrap_or_default();
    tracing::debug!(
        "hashing {} from byte {} (resuming at {from})",
        path.display(),
        hasher.len()
    );
    let every = hash_cache::interval(size);
    loop {
        let next = (hasher.len() / every + 1).saturating_mul(every).min(size);
        hasher.hash_file_to(file, next)?;
        if next >= size {
            break;
        }
        if let Some(cache) = cache.as_mut() {
            cache.record(&hasher);
        }
    }
    Ok(hasher.finalize())
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
        self.tx.begin_body(self.min_rate, body_window(self.timeout));
        let ours = if offset == 0 {
            // Sent from the start: the reader hashes what it sends, and hands the prefix-hash
            // cache a state every so often for a later resume (see `hash_cache`).
            tracing::debug!("hashing {} from byte 0 (resuming at 0)", path.display());
            let mut cache = PrefixCache::open(path, &file);
            let record = move |state: &ResumableMd5| {
                if let Some(cache) = cache.as_mut() {
                    cache.record(state);
                }
            };
            let every = hash_cache::interval(size);
            let mut source = transfer::Source::checkpointed(file, size, every, record)
                .map_err(ClientError::io(path))?;
            self.send_source(&mut source, path, offset, size, progress)
                .await?;
            source
                .finish()
                .await
                .and_then(|id| id.ok_or_else(|| std::io::Error::other("no hash")))
        } else {
            // Our MD5 of the whole file, computed on the side while the rest is sent: from the
            // cached state nearest below `offset` when there is one (see `hash_cache`).
            let hashed = file.try_clone().map_err(ClientError::io(path))?;
            let hashed_path = path.to_owned();
            let ours = transfer::blocking(move || md5_of(&hashed, &hashed_path, size, offset));
            let ours = tokio::spawn(ours);
            file.seek(std::io::SeekFrom::Start(offset))
                .map_err(ClientError::io(path))?;
            let mut source = transfer::Source::large(file, size - offset, false)
                .map_err(ClientError::io(path))?;
            self.send_source(&mut source, path, offset, size, progress)
                .await?;
            let _ = source.finish().await;
            match ours.await {
                Ok(Ok(hashed)) => hashed,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
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
            if len > 0
                && let Some(done) = self
                    .continue_part(file, path, &part, id, len, overwrite, progress)
                    .await?
            {
                return Ok(done);
            }
            let _ = std::fs::remove_file(&part);
            part_hash::remove(&part);
        }
        let reply = self.request(&Request::Download(Some(file.clone()))).await?;
        if reply.code != Code::FILE_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = check_header(file, &reply)?;
        self.save_resumable(header, path, overwrite, progress).await
    }

    /// Downloads the file `id` (asked for by id alone) into the folder `dir`, under the name
    /// the server gives it, through a kept `.part` file: the target is not known before the
    /// server answers, so a kept part is found by its id (`.NAME.ID.barge-part` in `dir`) and
    /// continued under the name it was started with.
    pub(super) async fn download_by_id_into<P: FnMut(Progress)>(
        &mut self,
        file: &FileRef,
        dir: &Path,
        id: FileId,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
        if let Some(path) = part_target_in(dir, id) {
            return self
                .download_resumable(file, &path, overwrite, progress)
                .await;
        }
        let reply = self.request(&Request::Download(Some(file.clone()))).await?;
        if reply.code != Code::FILE_FOLLOWS {
            return Err(self.unexpected(reply));
        }
        let header = check_header(file, &reply)?;
        let dest = super::Destination::Dir(dir.to_owned());
        let path =
            super::download::target_or_skip(&mut self.rx, self.timeout, file, &dest, &header).await;
        let path = match path {
            Ok(path) => path,
            Err(e) => {
                if !e.is_connection_lost() {
                    self.in_exchange = false;
                }
                return Err(e);
            }
        };
        if !overwrite && exists(&path).await {
            self.rx.discard_body(header.size, self.timeout).await?;
            self.in_exchange = false;
            return Err(ClientError::AlreadyExists { path });
        }
        self.save_resumable(header, &path, overwrite, progress)
            .await
    }

    /// Saves the body announced by `header` to `path`: a small one through the usual
    /// temporary file, a larger one through a `.part` file kept if the transfer breaks off.
    async fn save_resumable<P: FnMut(Progress)>(
        &mut self,
        header: DownloadHeader,
        path: &Path,
        overwrite: bool,
        progress: &mut P,
    ) -> Result<Downloaded, ClientError> {
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

    /// Receives `header.count` bytes onto the end of `part`, hashing them from the saved state
    /// of its first `offset` bytes (see [`part_hash`]; from 0 without one), and moves it to
    /// `path` if the whole hashes to the id; deletes it if not; keeps it (and the state of
    /// its hash) if the connection broke.
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
        let offset = header.offset;
        let state = if offset > 0 {
            part_hash::load(part, &opened, offset)
        } else {
            part_hash::remove(part);
            None
        };
        let mut from = state.unwrap_or_default();
        let state_len = from.len();
        tracing::debug!("hashing {} from byte {}", part.display(), from.len());
        // The part's bytes after the saved state (all of them without one) are hashed first.
        let caught_up = match opened.try_clone() {
            Ok(file) => {
                transfer::blocking(move || from.hash_file_to(&file, offset).map(|()| from)).await
            }
            Err(e) => Err(e),
        };
        let caught_up = caught_up.and_then(|r| r);
        let from = match caught_up {
            Ok(from) => {
                if state_len < from.len() {
                    part_hash::save(part, &opened, &from);
                }
                from
            }
            Err(e) => {
                self.rx.discard_body(header.count, self.timeout).await?;
                self.in_exchange = false;
                return Err(ClientError::io(part)(e));
            }
        };
        let sink = opened.try_clone().and_then(|file| {
            let (part, saved_of) = (part.to_owned(), file.try_clone()?);
            transfer::Sink::resuming(
                file,
                from,
                super::download::write_file,
                part_hash::every(),
                move |state| part_hash::save(&part, &saved_of, state),
            )
            .map(transfer::Sink::large)
        });
        trace_body(header.count);
        self.rx.begin_body(self.min_rate, body_window(self.timeout));
        let received = super::download::receive_at(
            &mut self.rx,
            self.timeout,
            sink,
            part,
            offset,
            size,
            progress,
        )
        .await;
        if !matches!(&received, Err(e) if e.is_connection_lost()) {
            self.in_exchange = false;
        }
        let actual = received?;
        if actual.len() != size {
            return Err(ClientError::io(part)(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        let actual = actual.finalize();
        if actual != header.id {
            let _ = std::fs::remove_file(part);
            part_hash::remove(part);
            return Err(ClientError::ChecksumMismatch {
                expected: header.id,
                actual,
            });
        }
        let _ = transfer::blocking(move || opened.sync_data()).await;
        part_hash::remove(part);
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

/// The target a kept part of the file `id` in `dir` was started for (`dir/NAME` for a part
/// `.NAME.ID.barge-part`), if there is one; with several, the longest part's.
fn part_target_in(dir: &Path, id: FileId) -> Option<PathBuf> {
    let suffix = format!(".{id}.barge-part");
    let mut best: Option<(PathBuf, u64)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(leaf) = name
            .strip_suffix(&suffix)
            .and_then(|n| n.strip_prefix('.'))
            .filter(|leaf| !leaf.is_empty() && !leaf.starts_with('.') && !leaf.contains('/'))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && best.as_ref().is_none_or(|(_, len)| meta.len() > *len) {
            best = Some((dir.join(leaf), meta.len()));
        }
    }
    best.map(|(path, _)| path)
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

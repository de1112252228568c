//! Uploads into the folder: written to `.barge/tmp/`, hashed as they are written, flushed, then
//! moved into place with a rename that never replaces a file, one by one or as a group commit.
//!
//! It does not check reservations or limits (the policy layer does) and keeps no state beyond
//! one upload's temp file.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::fsops::{self, Meta};
use super::index::Entry;
use super::{Inner, lock, partial};
use crate::id::FileId;
use crate::md5_state::ResumableMd5;
use crate::name::FileName;
use crate::store::{PartialKey, Staged, StoreError};

/// An upload being written to the temp area. Dropped before it is in place, it removes its temp
/// file: nothing of a failed upload is ever visible.
#[derive(Debug)]
pub(super) struct FolderUpload {
    inner: Arc<Inner>,
    name: FileName,
    size: u64,
    /// The temp area this upload's file is in (the store's may be replaced meanwhile).
    tmp: Arc<OwnedFd>,
    tmp_leaf: String,
    file: Option<File>,
    /// The temp file's metadata, kept when its handle was closed early (see `close_file`).
    closed: Option<Meta>,
    hasher: ResumableMd5,
    /// Whether this is a resumable upload (its partial lives in `.barge/partial/`, with its
    /// MD5 state beside it).
    resumable: bool,
    written: u64,
    /// Bytes up to here have had their write-back started (see [`WRITE_BACK`]).
    started: u64,
    linked: bool,
    /// A resumable upload: its file is a partial in `.barge/partial/`, kept when the upload
    /// is dropped unfinished (a broken connection), removed by [`Staged::discard`].
    keep: bool,
}

/// This process's id, for the temp names: asked once (each `getpid` is a system call, one
/// per small file of a group commit otherwise).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// When flushing, write-back of an upload is started every this many bytes while it is being
/// received, so the disk works while the rest arrives and the final flush has little left.
const WRITE_BACK: u64 = 8 << 20;

impl FolderUpload {
    /// Creates the temp file for an upload of `size` bytes to `name`.
    pub(super) fn create(
        inner: &Arc<Inner>,
        name: FileName,
        size: u64,
    ) -> Result<Self, StoreError> {
        let tmp_leaf = format!(
            "{}-{}.part",
            pid(),
            inner.tmp_counter.fetch_add(1, Ordering::Relaxed)
        );
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let create = |tmp: &OwnedFd| {
            rustix::fs::openat(tmp, tmp_leaf.as_str(), flags, Mode::from_raw_mode(0o644))
        };
        let mut tmp = inner.tmp_dir();
        let fd = match create(&tmp) {
            // Creating in a deleted folder: the temp area was removed under us.
            Err(Errno::NOENT) => {
                tmp = inner.renew_tmp(&tmp)?;
                create(&tmp)
            }
            other => other,
        }
        .map_err(StoreError::io_on("creating a temp file for", Some(&name)))?;
        Ok(Self {
            inner: Arc::clone(inner),
            name,
            size,
            tmp,
            tmp_leaf,
            file: Some(File::from(fd)),
            closed: None,
            hasher: ResumableMd5::new(),
            resumable: false,
            written: 0,
            started: 0,
            linked: false,
            keep: false,
        })
    }

    /// Continues (or starts) the partial upload kept for `key`: from its saved MD5 state when
    /// it has a valid one (hashing only the bytes after it), else hashing its kept bytes again
    /// from disk. Returns the upload and how many bytes it holds.
    pub(super) fn resume(inner: &Arc<Inner>, key: &PartialKey) -> Result<(Self, u64), StoreError> {
        let dir = Arc::clone(&inner.partial);
        let leaf = partial::leaf(key);
        let cfg = &inner.config;
        let (mut file, len) = {
            // Never two uploads on one partial: the store refuses a second upload of a name
            // while one is in progress (`UploadInProgress`), and a partial's key has its name.
            let mut open = lock(&inner.partials_open);
            let opened = partial::open(
                &dir,
                &leaf,
                key.size,
                cfg.partial_ttl,
                cfg.max_partials,
                &open,
            )?;
            open.insert(leaf.clone());
            opened
        };
        // From here on `Self` (or this guard, until it exists) gives the partial back.
        let mut guard = PartialOpen {
            inner: Arc::clone(inner),
            leaf: Some(leaf.clone()),
        };
        let saved = partial::load_state(&dir, &leaf, &file, len);
        let from = saved.as_ref().map_or(0, ResumableMd5::len);
        let mut hasher = saved.unwrap_or_default();
        let hashed = match hasher.hash_file_to(&file, len) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            other => other,
        };
        hashed.map_err(StoreError::io_on(
            "reading the partial upload of",
            Some(&key.name),
        ))?;
        tracing::debug!(
            "resuming {} at {}: {} bytes hashed again",
            key.name,
            hasher.len(),
            hasher.len() - from
        );
        // A partial that ended early (it cannot, but the disk decides) is continued from what
        // was read.
        let held = hasher.len();
        if held != len {
            file.set_len(held).map_err(StoreError::io_on(
                "reading the partial upload of",
                Some(&key.name),
            ))?;
        }
        let len = held;
        file.seek(io::SeekFrom::Start(len))
            .map_err(StoreError::io_on(
                "reading the partial upload of",
                Some(&key.name),
            ))?;
        guard.leaf = None;
        Ok((
            Self {
                inner: Arc::clone(inner),
                name: key.name.clone(),
                size: key.size,
                tmp: dir,
                tmp_leaf: leaf,
                file: Some(file),
                closed: None,
                hasher,
                resumable: true,
                written: len,
                started: len,
                linked: false,
                keep: true,
            },
            len,
        ))
    }

    /// Closes the temp file's handle, keeping what [`complete`](Self::complete) needs, so that
    /// a batch of hundreds of staged uploads does not hold hundreds of descriptors.
    fn close_file(&mut self) -> Result<(), StoreError> {
        if let Some(file) = self.file.take() {
            let st =
                rustix::fs::fstat(&file).map_err(StoreError::io_on("reading", Some(&self.name)))?;
            self.closed = Some(Meta::of(&st));
        }
        Ok(())
    }

    /// Checks every byte arrived, flushes the file when `sync` (a group commit flushes the
    /// whole batch at once instead), and moves it into place under its name.
    fn complete(mut self, sync: bool) -> Result<FileId, StoreError> {
        let (id, meta) = self.seal(sync)?;
        let inner = Arc::clone(&self.inner);
        let dir = self.link_into_place(&inner)?;
        self.linked();
        if sync {
            fsops::sync_dir(&dir).map_err(StoreError::io_on(
                "flushing the folder of",
                Some(&self.name),
            ))?;
        }
        // Moving changes the ctime only: size, mtime and inode are what was just written.
        inner.note_name(&self.name);
        inner.record(self.name.clone(), Entry { meta, id });
        Ok(id)
    }

    /// What comes before the move into place: checks every byte arrived, flushes the file when `sync`,
    /// and gives its id and what identifies this version of it on disk.
    fn seal(&mut self, sync: bool) -> Result<(FileId, Meta), StoreError> {
        if self.written != self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received: self.written,
            });
        }
        let name = &self.name;
        let meta = match self.file.take() {
            Some(file) => {
                if sync {
                    file.sync_data()
                        .map_err(StoreError::io_on("flushing to disk", Some(name)))?;
                }
                let st =
                    rustix::fs::fstat(&file).map_err(StoreError::io_on("reading", Some(name)))?;
                Meta::of(&st)
            }
            None => self.closed.ok_or_else(|| {
                StoreError::io(
                    "finishing",
                    Some(name),
                    io::Error::other("the temp file is gone"),
                )
            })?,
        };
        Ok((self.hasher.clone().finalize(), meta))
    }

    /// What comes after the move into place: a resumable upload's saved MD5 state goes, and
    /// the folder counts one more file.
    fn linked(&mut self) {
        self.linked = true;
        self.inner.files.fetch_add(1, Ordering::Relaxed);
        if self.keep {
            partial::remove_state(&self.tmp, &self.tmp_leaf);
        }
    }
}

impl FolderUpload {
    /// Moves the temp file to its name, creating its folders; returns the folder it is in.
    /// A folder that a delete elsewhere pruned between our open and our move (it was empty
    /// then) is created again; a failure leaves no folder it created behind.
    fn link_into_place(&self, inner: &Inner) -> Result<OwnedFd, StoreError> {
        let name = &self.name;
        let mut tries = 0;
        let result = loop {
            let attempt = inner.open_parent_for_write(name).and_then(|(dir, leaf)| {
                place_no_replace(&self.tmp, &self.tmp_leaf, &dir, leaf, name).map(|()| dir)
            });
            match attempt {
                Err(StoreError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && tries < 3 =>
                {
                    tries += 1;
                }
                other => break other,
            }
        };
        if result.is_err() {
            fsops::prune_empty_folders(&inner.root, name);
        }
        result
    }
}

impl Staged for FolderUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let received = self.written + data.len() as u64;
        if received > self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received,
            });
        }
        self.hasher.update(data);
        let file = self.file.as_mut().ok_or_else(|| {
            StoreError::io(
                "writing",
                Some(&self.name),
                io::Error::other("file already closed"),
            )
        })?;
        file.write_all(data)
            .map_err(StoreError::io_on("writing", Some(&self.name)))?;
        let checkpoint = |at: u64| at / partial::CHECKPOINT;
        let save = self.keep && checkpoint(received) > checkpoint(self.written);
        self.written = received;
        if self.inner.config.sync && received - self.started >= WRITE_BACK {
            // Starts write-back of what was just written without waiting for it (on Linux,
            // `POSIX_FADV_DONTNEED` writes dirty pages back asynchronously, as
            // `sync_file_range(SYNC_FILE_RANGE_WRITE)` does, and drops only clean ones: these
            // are all dirty). A no-op on tmpfs. Only a hint: the final flush is what counts.
            let len = std::num::NonZeroU64::new(received - self.started);
            let _ = rustix::fs::fadvise(&*file, self.started, len, rustix::fs::Advice::DontNeed);
            self.started = received;
        }
        if save {
            self.save_state();
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<FileId, StoreError> {
        let sync = self.inner.config.sync;
        self.complete(sync)
    }

    fn digest(&self) -> Option<FileId> {
        Some(self.hasher.clone().finalize())
    }

    fn discard(mut self: Box<Self>) {
        self.keep = false;
    }
}

impl FolderUpload {
    /// Saves the MD5 state of a resumable upload beside its partial, when the state covers
    /// exactly what was written to it. With `sync`, the bytes are flushed first, so that a
    /// state on disk never describes bytes that a power cut could take back.
    fn save_state(&self) {
        if !self.resumable {
            return;
        }
        let (h, Some(file)) = (&self.hasher, &self.file) else {
            return;
        };
        // `write` hashes before it writes: a failed write leaves the hash ahead of the file.
        if h.len() != file.metadata().map_or(u64::MAX, |m| m.len()) {
            return;
        }
        if self.inner.config.sync && file.sync_data().is_err() {
            return;
        }
        partial::save_state(&self.tmp, &self.tmp_leaf, file, h);
    }
}

impl Drop for FolderUpload {
    fn drop(&mut self) {
        if !self.linked {
            if self.keep {
                // A broken-off resumable upload: what it holds is kept, with its MD5 state.
                self.save_state();
            } else {
                let _ = rustix::fs::unlinkat(&self.tmp, self.tmp_leaf.as_str(), AtFlags::empty());
                if self.resumable {
                    partial::remove_state(&self.tmp, &self.tmp_leaf);
                }
            }
        }
        self.file = None;
        if self.keep || self.resumable {
            lock(&self.inner.partials_open).remove(&self.tmp_leaf);
        }
    }
}

/// A partial marked open in [`Inner::partials_open`] before its upload exists: unmarked when
/// dropped, unless `leaf` was taken (the upload then unmarks it when it ends).
struct PartialOpen {
    inner: Arc<Inner>,
    leaf: Option<String>,
}

impl Drop for PartialOpen {
    fn drop(&mut self) {
        if let Some(leaf) = self.leaf.take() {
            lock(&self.inner.partials_open).remove(&leaf);
        }
    }
}

/// Stores several small files with one group commit: each is written to the temp area, all are
/// flushed with one `syncfs`, moved into place, and the new folder entries flushed with one
/// more. Each file still appears only once it is complete and on disk, and each gets its own
/// result, in order; a batch of hundreds costs two disk flushes instead of two per file, and
/// one update of the index.
///
/// A name that is taken is found by the move (which never replaces anything), not looked up
/// beforehand: the lookup would cost every file of the batch a `stat` for the rare one refused.
pub(super) fn group_commit(
    inner: &Arc<Inner>,
    items: Vec<(FileName, Vec<u8>)>,
) -> Vec<Result<FileId, StoreError>> {
    let staged: Vec<Result<FolderUpload, StoreError>> = items
        .into_iter()
        .map(|(name, data)| {
            let mut upload = FolderUpload::create(inner, name, data.len() as u64)?;
            upload.write(&data)?;
            upload.close_file()?;
            Ok(upload)
        })
        .collect();
    let sync = inner.config.sync && staged.iter().any(Result::is_ok);
    if sync && let Err(e) = rustix::fs::syncfs(&inner.root) {
        return staged
            .into_iter()
            .map(|r| {
                r.and_then(|u| {
                    Err(StoreError::io(
                        "flushing to disk",
                        Some(&u.name),
                        io::Error::from(e),
                    ))
                })
            })
            .collect();
    }
    let mut folder = LastFolder::default();
    let mut entries = Vec::with_capacity(staged.len());
    let mut results: Vec<Result<FileId, StoreError>> = staged
        .into_iter()
        .map(|r| {
            let mut upload = r?;
            let (id, meta) = upload.seal(false)?;
            folder.link(inner, &upload)?;
            upload.linked();
            inner.note_name(&upload.name);
            entries.push((upload.name.clone(), Entry { meta, id }));
            Ok(id)
        })
        .collect();
    if sync
        && results.iter().any(Result::is_ok)
        && let Err(e) = rustix::fs::syncfs(&inner.root).inspect(|_| {
            inner.group_flushes.fetch_add(1, Ordering::SeqCst);
        })
    {
        // The files are in place but their folder entries may not be on disk yet.
        tracing::error!("flushing folder entries to disk failed: {e}");
        for r in &mut results {
            if r.is_ok() {
                *r = Err(StoreError::io(
                    "flushing the folder to disk",
                    None,
                    io::Error::from(e),
                ));
            }
        }
    }
    inner.record_all(entries);
    results
}

/// The folder the last file of a group commit was moved into, kept open for the next file in
/// the same folder (a batch is usually one folder's files): a top-level name moves straight
/// into the shared folder's handle, and a folder is walked to once, not once per file.
#[derive(Default)]
struct LastFolder {
    open: Option<(String, OwnedFd)>,
}

impl LastFolder {
    /// Moves `upload` to its name, through the folder kept open when it is the same one.
    fn link(&mut self, inner: &Inner, upload: &FolderUpload) -> Result<(), StoreError> {
        let name = &upload.name;
        let (parent, leaf) = name.split_parent();
        let kept = match (parent, &self.open) {
            (None, _) => Some(&inner.root),
            (Some(p), Some((open, dir))) if open == p => Some(dir),
            _ => None,
        };
        if let Some(dir) = kept {
            match place_no_replace(&upload.tmp, &upload.tmp_leaf, dir, leaf, name) {
                // The folder kept open was removed meanwhile (a delete pruned it): the full
                // walk below creates it again.
                Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        let dir = upload.link_into_place(inner)?;
        self.open = parent.map(|p| (p.to_owned(), dir));
        Ok(())
    }
}

/// Moves the temp file `from` to `to`, failing with [`StoreError::Exists`] if `to` exists: the
/// no-replace commit of the folder backend. One rename where the filesystem has
/// `RENAME_NOREPLACE`, instead of a link and an unlink ([`fsops::move_no_replace`]).
pub(super) fn place_no_replace(
    from_dir: &OwnedFd,
    from: &str,
    to_dir: &OwnedFd,
    to: &str,
    name: &FileName,
) -> Result<(), StoreError> {
    match fsops::move_no_replace(from_dir, from, to_dir, to) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(fsops::taken(to_dir, to, name)),
        Err(e) => Err(StoreError::io("storing", Some(name), e.into())),
    }
}

//! The shared folder: the only code that reads or writes it.
//!
//! The folder is plain: files already in it (and in its subfolders) are shared under their own
//! names, and uploads appear as plain files. barge keeps its own state in one hidden folder at
//! the top, [`STATE_DIR`](crate::name::STATE_DIR): the id index (`index.redb`) and the temp area
//! (`tmp/`) where uploads are written until they are complete, on disk, and then linked into
//! place atomically.
//!
//! What the store guarantees:
//! - A name is only ever opened beneath the folder, one component at a time, never through a
//!   symlink ([`fsops`]).
//! - An id is never stale: an indexed id is trusted only while the file's size, mtime and inode
//!   match what was hashed; otherwise the file is hashed again before it is listed or served.
//! - An upload is visible only once every byte is on disk; two uploads of one name cannot both win.
//!
//! It does not know about sockets or the protocol's dialogue; the server drives it. Its methods
//! block (disk I/O, hashing): async callers run them on a blocking thread.

mod fsops;
mod index;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc};

use md5::{Digest, Md5};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use self::fsops::Meta;
use self::index::{Change, Entry, Index, Persist};
use crate::name::{FileName, STATE_DIR};
use crate::protocol::{FileId, FileRef, ListingEntry};

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Refuse uploads, renames and deletes.
    pub read_only: bool,
    /// The largest upload accepted, in bytes.
    pub max_file_size: u64,
    /// Free space to leave on the disk after an upload, in bytes.
    pub min_free_space: u64,
    /// How many bytes of not-yet-hashed files a listing hashes before it answers; larger files
    /// are hashed in the background and listed once their id is known.
    pub inline_hash_budget: u64,
    /// How long a listing may spend hashing before it answers; what is left is hashed in the
    /// background. Keeps the first listing of a folder of many small new files quick.
    pub inline_hash_time: std::time::Duration,
    /// Flush each upload to stable storage before it becomes visible (fsync).
    pub sync: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            read_only: false,
            max_file_size: 1 << 40,
            min_free_space: 64 << 20,
            inline_hash_budget: 64 << 20,
            inline_hash_time: std::time::Duration::from_millis(500),
            sync: true,
        }
    }
}

/// Why a store operation failed. Each variant maps to one wire reply (see the server).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No file matches the name or id.
    #[error("no such file: {0}")]
    NotFound(String),
    /// A file (or folder) of that name exists, or an upload of it is in progress.
    #[error("{0}")]
    AlreadyExists(String),
    /// An id matches several files, so it cannot say which one to change.
    #[error("the id {id} matches {count} files; use the file name instead")]
    Ambiguous {
        /// The id given.
        id: FileId,
        /// How many files have it.
        count: usize,
    },
    /// A folder in the name is a file (or a symlink) on disk.
    #[error("'{0}' is in the way: it is not a folder")]
    NotAFolder(String),
    /// The server is read-only.
    #[error("the server is read-only")]
    ReadOnly,
    /// The declared size is over the configured maximum.
    #[error("{size} bytes is over the server's limit of {max} bytes per file")]
    TooLarge {
        /// The size asked for.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not enough free disk space.
    #[error("not enough disk space: {needed} bytes needed, {available} available")]
    InsufficientStorage {
        /// Bytes needed (including the reserve kept free).
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// An upload ended before all declared bytes arrived, or more were offered.
    #[error("upload incomplete: {received} of {expected} bytes")]
    Incomplete {
        /// The declared size.
        expected: u64,
        /// What arrived.
        received: u64,
    },
    /// Another barge server already uses this folder.
    #[error("another barge server is already using this folder")]
    Locked,
    /// A disk operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The index database failed.
    #[error("index database: {0}")]
    Index(#[source] Box<redb::Error>),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| {
        if matches!(source.raw_os_error(), Some(e) if e == Errno::NOSPC.raw_os_error() || e == Errno::DQUOT.raw_os_error())
        {
            StoreError::InsufficientStorage {
                needed: 0,
                available: 0,
            }
        } else {
            StoreError::Io { context, source }
        }
    }
}

/// A listing: the files whose id is known, and how many more are still being hashed.
#[derive(Debug, Default)]
pub struct Listing {
    /// Files with a known id, sorted by name.
    pub entries: Vec<ListingEntry>,
    /// Files found but not hashed yet (they are being hashed in the background).
    pub pending: usize,
}

/// A file opened for download; its bytes hashed to `id` when it was opened.
#[derive(Debug)]
pub struct Download {
    /// The open file, positioned at its start. Serving from this handle means a rename or
    /// replacement on disk meanwhile cannot change what is sent.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// Its id.
    pub id: FileId,
    /// Its name.
    pub name: FileName,
}

/// The shared folder.
#[derive(Debug)]
pub struct Store {
    root_path: PathBuf,
    root: OwnedFd,
    tmp: OwnedFd,
    config: StoreConfig,
    index: Mutex<Index>,
    persist: Mutex<Persist>,
    /// Uploads in progress: name → declared size.
    reserved: Mutex<HashMap<FileName, u64>>,
    /// Files waiting for the background hasher.
    queued: Mutex<HashSet<FileName>>,
    hasher_tx: Mutex<Option<mpsc::Sender<FileName>>>,
    tmp_counter: AtomicU64,
}

const TMP_DIR: &str = "tmp";
const INDEX_FILE: &str = "index.redb";
const CHUNK: usize = 256 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a way
    // that matters more than stopping service, so recover the guard.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens the shared folder at `root` (created if missing), clears leftovers of interrupted
    /// uploads, loads the index and starts hashing unknown files in the background.
    ///
    /// # Errors
    /// If the folder cannot be created or opened, or another server uses it.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        let root_fd =
            fsops::open_root(root).map_err(io_err(format!("opening {}", root.display())))?;
        let state = ensure_dir(&root_fd, STATE_DIR, 0o700)?;
        let tmp = ensure_dir(&state, TMP_DIR, 0o700)?;
        clear_dir(&tmp)?;
        let (persist, index) =
            Persist::open(&root.join(STATE_DIR).join(INDEX_FILE)).map_err(|e| match e {
                redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
                e => StoreError::Index(Box::new(e)),
            })?;
        let (tx, rx) = mpsc::channel();
        let store = Arc::new(Self {
            root_path: root.to_path_buf(),
            root: root_fd,
            tmp,
            config,
            index: Mutex::new(index),
            persist: Mutex::new(persist),
            reserved: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            hasher_tx: Mutex::new(Some(tx)),
            tmp_counter: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("barge-hasher".into())
            .spawn(move || background_hasher(&weak, &rx))
            .map_err(io_err("starting the hasher thread"))?;
        // The first scan finds what changed while the server was down; it hashes nothing
        // inline, so the server answers at once.
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("barge-scan".into())
            .spawn(move || {
                if let Some(store) = weak.upgrade() {
                    if let Err(e) = store.scan(0) {
                        tracing::warn!("initial scan failed: {e}");
                    }
                }
            })
            .map_err(io_err("starting the scan thread"))?;
        Ok(store)
    }

    /// The folder being shared.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Saves the index and stops the background threads' work. Called at shutdown; the store
    /// stays readable afterwards.
    pub fn close(&self) {
        *lock(&self.hasher_tx) = None;
        lock(&self.persist).close();
    }

    /// Lists the shared files. Files not hashed yet are hashed now up to the inline budget;
    /// the rest are left to the background hasher and counted in [`Listing::pending`].
    ///
    /// # Errors
    /// If the folder cannot be read.
    pub fn list(&self) -> Result<Listing, StoreError> {
        self.scan(self.config.inline_hash_budget)
    }

    fn scan(&self, mut budget: u64) -> Result<Listing, StoreError> {
        let started = std::time::Instant::now();
        let mut skipped = 0;
        let found =
            fsops::walk(&self.root, &mut skipped).map_err(io_err("reading the shared folder"))?;
        if skipped > 0 {
            tracing::debug!("{skipped} entries could not be read while listing");
        }
        let mut entries = Vec::with_capacity(found.len());
        let mut unknown = Vec::new();
        {
            let mut ix = lock(&self.index);
            // Forget files that are gone: both sequences are sorted by name.
            let mut gone = Vec::new();
            let mut on_disk = found.iter().map(|f| &f.name).peekable();
            for name in ix.names() {
                while on_disk.next_if(|n| *n < name).is_some() {}
                if on_disk.peek() != Some(&name) {
                    gone.push(name.clone());
                }
            }
            for name in gone {
                // The walk is not atomic: a file uploaded or renamed into place while it ran is
                // on disk and in the index, but was not seen. Only forget what is really gone.
                if matches!(fsops::stat_name(&self.root, &name), Ok(Some(st)) if fsops::is_regular(&st))
                {
                    continue;
                }
                ix.remove(&name);
                self.persist(Change::Remove(name));
            }
            for f in found {
                match ix.get(&f.name) {
                    Some(e) if e.meta == f.meta => {
                        entries.push(ListingEntry {
                            id: e.id,
                            name: f.name,
                            size: f.meta.size,
                        });
                    }
                    _ => unknown.push(f),
                }
            }
        }
        let mut pending = 0;
        let mut added = false;
        for f in unknown {
            if f.meta.size <= budget && started.elapsed() < self.config.inline_hash_time {
                budget -= f.meta.size;
                if let Ok(Some((_, e))) = self.open_hashed(&f.name) {
                    entries.push(ListingEntry {
                        id: e.id,
                        name: f.name,
                        size: e.meta.size,
                    });
                    added = true;
                    continue;
                }
            } else {
                self.queue_hash(f.name);
            }
            pending += 1;
        }
        if added {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(Listing { entries, pending })
    }

    fn persist(&self, change: Change) {
        lock(&self.persist).send(change);
    }

    fn queue_hash(&self, name: FileName) {
        if lock(&self.queued).insert(name.clone()) {
            if let Some(tx) = lock(&self.hasher_tx).as_ref() {
                let _ = tx.send(name);
            }
        }
    }

    /// Opens `name` and makes sure its id is known and current, hashing it if needed.
    /// `Ok(None)` when there is no regular file of that name (symlinks count as none) or it is
    /// changing while being hashed.
    fn open_hashed(&self, name: &FileName) -> Result<Option<(File, Entry)>, StoreError> {
        let (mut file, st) = match fsops::open_file(&self.root, name) {
            Ok(v) => v,
            Err(e)
                if fsops::is_absent(&e) || e.raw_os_error() == Some(Errno::NXIO.raw_os_error()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(io_err(format!("opening {name}"))(e)),
        };
        let meta = Meta::of(&st);
        if let Some(e) = lock(&self.index).get(name) {
            if e.meta == meta {
                return Ok(Some((file, *e)));
            }
        }
        let id = md5_of(&mut file).map_err(io_err(format!("reading {name}")))?;
        let after =
            rustix::fs::fstat(&file).map_err(|e| io_err(format!("reading {name}"))(e.into()))?;
        if Meta::of(&after) != meta {
            return Ok(None); // Being written to right now; its id is not settled.
        }
        file.rewind().map_err(io_err(format!("reading {name}")))?;
        let entry = Entry { meta, id };
        self.record(name.clone(), entry);
        Ok(Some((file, entry)))
    }

    fn record(&self, name: FileName, entry: Entry) {
        if lock(&self.index).insert(name.clone(), entry) {
            self.persist(Change::Put(name, entry));
        }
    }

    fn forget(&self, name: &FileName) {
        if lock(&self.index).remove(name).is_some() {
            self.persist(Change::Remove(name.clone()));
        }
    }

    /// Opens a file for download by id or name (ids win). The id returned is the hash of the
    /// bytes the handle will read, unless the file is modified in place while it is being sent,
    /// which the client's MD5 check catches.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or an I/O error.
    pub fn open_download(&self, target: &FileRef) -> Result<Download, StoreError> {
        if let Some(id) = target.id {
            let names = lock(&self.index).names_of(&id);
            for name in names {
                if let Some((file, e)) = self.open_hashed(&name)? {
                    if e.id == id {
                        return Ok(Download {
                            file,
                            size: e.meta.size,
                            id,
                            name,
                        });
                    }
                }
            }
        }
        if let Some(name) = &target.name {
            if let Some((file, e)) = self.open_hashed(name)? {
                return Ok(Download {
                    file,
                    size: e.meta.size,
                    id: e.id,
                    name: name.clone(),
                });
            }
        }
        Err(StoreError::NotFound(target.as_str()))
    }

    /// Finds the one file `target` names, for rename and delete (ids win; an id shared by
    /// several files is refused).
    fn resolve(&self, target: &FileRef) -> Result<FileName, StoreError> {
        if let Some(id) = target.id {
            let names = lock(&self.index).names_of(&id);
            let mut live = Vec::new();
            for name in names {
                if let Some((_, e)) = self.open_hashed(&name)? {
                    if e.id == id {
                        live.push(name);
                    }
                }
            }
            match live.len() {
                0 => {}
                1 => return Ok(live.remove(0)),
                count => return Err(StoreError::Ambiguous { id, count }),
            }
        }
        if let Some(name) = &target.name {
            match fsops::stat_name(&self.root, name) {
                Ok(Some(st)) if fsops::is_regular(&st) => return Ok(name.clone()),
                Ok(_) => {}
                Err(e) if fsops::is_absent(&e) => {}
                Err(e) => return Err(io_err(format!("looking up {name}"))(e)),
            }
        }
        Err(StoreError::NotFound(target.as_str()))
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.config.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Fails unless nothing exists at `name` and no upload of it is in progress.
    ///
    /// A name that differs from an existing one only by Unicode normalisation (`é` as one code
    /// point or as `e` plus a combining accent) counts as taken: the two would look the same in
    /// every listing, and some filesystems (macOS) treat them as one file.
    fn check_free_name(
        &self,
        name: &FileName,
        reserved: &HashMap<FileName, u64>,
    ) -> Result<(), StoreError> {
        for variant in normalisation_variants(name) {
            if reserved.contains_key(&variant) {
                return Err(StoreError::AlreadyExists(format!(
                    "an upload of {variant} is already in progress"
                )));
            }
            if variant != *name {
                if let Ok(Some(_)) = fsops::stat_name(&self.root, &variant) {
                    return Err(StoreError::AlreadyExists(format!(
                        "a file named {variant} already exists (the names differ only in Unicode normalisation)"
                    )));
                }
            }
        }
        match fsops::stat_name(&self.root, name) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(StoreError::AlreadyExists(format!(
                "a file named {name} already exists"
            ))),
            Err(e)
                if e.kind() == io::ErrorKind::NotADirectory
                    || e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) =>
            {
                Err(StoreError::NotAFolder(
                    name.split_parent().0.unwrap_or_default().to_owned(),
                ))
            }
            Err(e) => Err(io_err(format!("looking up {name}"))(e)),
        }
    }

    /// Deletes one file.
    ///
    /// # Errors
    /// Read-only, not found, ambiguous id, or an I/O error.
    pub fn delete(&self, target: &FileRef) -> Result<FileName, StoreError> {
        self.check_writable()?;
        let name = self.resolve(target)?;
        let (dir, leaf) = fsops::open_parent(&self.root, &name, false)
            .map_err(|_| StoreError::NotFound(name.to_string()))?;
        match rustix::fs::unlinkat(&dir, leaf, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Err(StoreError::NotFound(name.to_string())),
            Err(e) => return Err(io_err(format!("deleting {name}"))(e.into())),
        }
        let _ = fsops::sync_dir(&dir);
        self.forget(&name);
        Ok(name)
    }

    /// Renames one file; folders in the new name are created as needed. Never replaces a file.
    ///
    /// # Errors
    /// Read-only, not found, ambiguous id, the new name exists, or an I/O error.
    pub fn rename(&self, from: &FileRef, to: &FileName) -> Result<FileName, StoreError> {
        self.check_writable()?;
        let from = self.resolve(from)?;
        {
            let reserved = lock(&self.reserved);
            self.check_free_name(to, &reserved)?;
        }
        let (from_dir, from_leaf) = fsops::open_parent(&self.root, &from, false)
            .map_err(|_| StoreError::NotFound(from.to_string()))?;
        let (to_dir, to_leaf) = self.open_parent_for_write(to)?;
        match rustix::fs::renameat_with(
            &from_dir,
            from_leaf,
            &to_dir,
            to_leaf,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST | Errno::NOTEMPTY) => {
                return Err(StoreError::AlreadyExists(format!(
                    "a file named {to} already exists"
                )));
            }
            Err(Errno::NOENT) => return Err(StoreError::NotFound(from.to_string())),
            // Filesystems without RENAME_NOREPLACE: a hard link refuses to replace, too.
            Err(Errno::INVAL | Errno::NOSYS) => {
                link_no_replace(&from_dir, from_leaf, &to_dir, to_leaf, to)?;
                rustix::fs::unlinkat(&from_dir, from_leaf, AtFlags::empty())
                    .map_err(|e| io_err(format!("renaming {from}"))(e.into()))?;
            }
            Err(e) => return Err(io_err(format!("renaming {from}"))(e.into())),
        }
        let _ = fsops::sync_dir(&to_dir);
        let _ = fsops::sync_dir(&from_dir);
        let entry = lock(&self.index).get(&from).copied();
        self.forget(&from);
        if let Some(entry) = entry {
            self.record(to.clone(), entry);
        }
        Ok(from)
    }

    fn open_parent_for_write<'n>(
        &self,
        name: &'n FileName,
    ) -> Result<(OwnedFd, &'n str), StoreError> {
        fsops::open_parent(&self.root, name, true).map_err(|e| {
            if e.kind() == io::ErrorKind::NotADirectory
                || e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
            {
                StoreError::NotAFolder(name.split_parent().0.unwrap_or_default().to_owned())
            } else {
                io_err(format!("creating the folders of {name}"))(e)
            }
        })
    }

    /// Starts an upload of `size` bytes to `name`: checks the name is free, the size is within
    /// limits and the disk has room, reserves the name, and opens a temp file.
    ///
    /// # Errors
    /// Read-only, the name exists or is being uploaded, too large, not enough space, I/O.
    pub fn begin_upload(self: &Arc<Self>, name: FileName, size: u64) -> Result<Upload, StoreError> {
        self.check_writable()?;
        if size > self.config.max_file_size {
            return Err(StoreError::TooLarge {
                size,
                max: self.config.max_file_size,
            });
        }
        {
            let mut reserved = lock(&self.reserved);
            self.check_free_name(&name, &reserved)?;
            let available = fsops::free_space(&self.root).map_err(io_err("checking free space"))?;
            let in_flight: u64 = reserved.values().sum();
            let needed = size
                .saturating_add(in_flight)
                .saturating_add(self.config.min_free_space);
            if needed > available {
                return Err(StoreError::InsufficientStorage { needed, available });
            }
            reserved.insert(name.clone(), size);
        }
        let tmp_leaf = format!(
            "{}-{}.part",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        );
        // From here on, dropping the guard releases the reservation (and removes the temp file).
        let mut upload = Upload {
            store: Arc::clone(self),
            name,
            size,
            tmp_leaf,
            file: None,
            closed: None,
            hasher: Md5::new(),
            written: 0,
            linked: false,
        };
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &self.tmp,
            upload.tmp_leaf.as_str(),
            flags,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io_err("creating a temp file")(e.into()))?;
        upload.file = Some(File::from(fd));
        Ok(upload)
    }
}

impl Store {
    /// Stores several small files with one group commit: each is checked and written as
    /// [`begin_upload`](Self::begin_upload) would, then all are flushed to disk with one
    /// `syncfs`, linked into place, and the new folder entries flushed with one more. Each file
    /// still appears only once it is complete and on disk, and each gets its own result, in
    /// order; but a batch of hundreds costs two disk flushes instead of two per file.
    pub fn put_batch(
        self: &Arc<Self>,
        items: Vec<(FileName, Vec<u8>)>,
    ) -> Vec<Result<FileId, StoreError>> {
        let staged: Vec<Result<Upload, StoreError>> = items
            .into_iter()
            .map(|(name, data)| {
                let mut upload = self.begin_upload(name, data.len() as u64)?;
                upload.write(&data)?;
                upload.close_file()?;
                Ok(upload)
            })
            .collect();
        let sync = self.config.sync && staged.iter().any(Result::is_ok);
        if sync {
            if let Err(e) = rustix::fs::syncfs(&self.tmp) {
                let e: io::Error = e.into();
                return staged
                    .into_iter()
                    .map(|r| {
                        r.and_then(|_| {
                            Err(io_err("flushing uploads to disk")(io::Error::from(
                                e.kind(),
                            )))
                        })
                    })
                    .collect();
            }
        }
        let mut results: Vec<Result<FileId, StoreError>> = staged
            .into_iter()
            .map(|r| r.and_then(|u| u.complete(false)))
            .collect();
        if sync && results.iter().any(Result::is_ok) {
            if let Err(e) = rustix::fs::syncfs(&self.tmp) {
                // The files are in place but their folder entries may not be on disk yet.
                tracing::error!("flushing folder entries to disk failed: {e}");
                for r in &mut results {
                    if r.is_ok() {
                        *r = Err(io_err("flushing the folder to disk")(e.into()));
                    }
                }
            }
        }
        results
    }
}

/// An upload in progress. Dropping it before [`finish`](Self::finish) succeeds removes the temp
/// file and frees the name: nothing of a failed upload is ever visible.
#[derive(Debug)]
pub struct Upload {
    store: Arc<Store>,
    name: FileName,
    size: u64,
    tmp_leaf: String,
    file: Option<File>,
    /// The temp file's metadata, kept when its handle was closed early (see `close_file`).
    closed: Option<Meta>,
    hasher: Md5,
    written: u64,
    linked: bool,
}

impl Upload {
    /// The name being uploaded.
    #[must_use]
    pub fn name(&self) -> &FileName {
        &self.name
    }

    /// Appends body bytes, hashing them.
    ///
    /// # Errors
    /// More bytes than declared, a full disk, or another I/O error.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let received = self.written + data.len() as u64;
        if received > self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received,
            });
        }
        self.hasher.update(data);
        let file = self.file.as_mut().ok_or_else(|| StoreError::Io {
            context: "writing the upload".into(),
            source: io::Error::other("file already closed"),
        })?;
        file.write_all(data).map_err(io_err("writing the upload"))?;
        self.written = received;
        Ok(())
    }

    /// Closes the temp file's handle, keeping what [`finish`](Self::finish) needs, so that a
    /// batch of hundreds of staged uploads does not hold hundreds of descriptors.
    fn close_file(&mut self) -> Result<(), StoreError> {
        if let Some(file) = self.file.take() {
            let st =
                rustix::fs::fstat(&file).map_err(|e| io_err("reading the upload")(e.into()))?;
            self.closed = Some(Meta::of(&st));
        }
        Ok(())
    }

    /// Completes the upload: checks every byte arrived, flushes it to disk, and links it into
    /// place under its name. Returns its id.
    ///
    /// # Errors
    /// Incomplete, the name was taken meanwhile (by a file dropped in by hand), or I/O.
    pub fn finish(self) -> Result<FileId, StoreError> {
        let sync = self.store.config.sync;
        self.complete(sync)
    }

    /// [`finish`](Self::finish), flushing to disk only when `sync` (a group commit flushes the
    /// whole batch at once instead).
    fn complete(mut self, sync: bool) -> Result<FileId, StoreError> {
        if self.written != self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received: self.written,
            });
        }
        let meta = match self.file.take() {
            Some(file) => {
                if sync {
                    file.sync_data()
                        .map_err(io_err("flushing the upload to disk"))?;
                }
                let st =
                    rustix::fs::fstat(&file).map_err(|e| io_err("reading the upload")(e.into()))?;
                Meta::of(&st)
            }
            None => self.closed.ok_or_else(|| StoreError::Io {
                context: "finishing the upload".into(),
                source: io::Error::other("the temp file is gone"),
            })?,
        };
        let id = FileId(std::mem::take(&mut self.hasher).finalize().into());
        let store = Arc::clone(&self.store);
        let (dir, leaf) = store.open_parent_for_write(&self.name)?;
        link_no_replace(&store.tmp, &self.tmp_leaf, &dir, leaf, &self.name)?;
        self.linked = true;
        let _ = rustix::fs::unlinkat(&store.tmp, self.tmp_leaf.as_str(), AtFlags::empty());
        if sync {
            fsops::sync_dir(&dir).map_err(io_err("flushing the folder to disk"))?;
        }
        // Linking changes the ctime only: size, mtime and inode are what was just written.
        store.record(self.name.clone(), Entry { meta, id });
        Ok(id)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.file = None;
        if !self.linked {
            let _ = rustix::fs::unlinkat(&self.store.tmp, self.tmp_leaf.as_str(), AtFlags::empty());
        }
        lock(&self.store.reserved).remove(&self.name);
    }
}

/// `name` itself, then its NFC and NFD forms where they differ from it and are valid names.
fn normalisation_variants(name: &FileName) -> Vec<FileName> {
    use unicode_normalization::UnicodeNormalization;
    let mut out = vec![name.clone()];
    if name.as_str().is_ascii() {
        return out; // ASCII text is the same in every normal form.
    }
    for form in [
        name.as_str().nfc().collect::<String>(),
        name.as_str().nfd().collect(),
    ] {
        if let Ok(n) = FileName::parse(&form) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn link_no_replace(
    from_dir: &OwnedFd,
    from: &str,
    to_dir: &OwnedFd,
    to: &str,
    name: &FileName,
) -> Result<(), StoreError> {
    match rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(StoreError::AlreadyExists(format!(
            "a file named {name} already exists"
        ))),
        Err(e) => Err(io_err(format!("storing {name}"))(e.into())),
    }
}

fn ensure_dir(parent: &OwnedFd, name: &str, mode: u32) -> Result<OwnedFd, StoreError> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_err(format!("creating {name}"))(e.into())),
    }
    fsops::open_dir_at(parent, name).map_err(io_err(format!(
        "opening {name} (it must be a folder, not a symlink)"
    )))
}

/// Removes everything in the temp area: uploads that a crash or kill interrupted.
fn clear_dir(dir: &OwnedFd) -> Result<(), StoreError> {
    let entries =
        rustix::fs::Dir::read_from(dir).map_err(|e| io_err("reading the temp area")(e.into()))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!("removed {removed} unfinished upload(s) left by an earlier run");
    }
    Ok(())
}

/// The MD5 of everything `r` yields.
pub(crate) fn md5_of(r: &mut impl Read) -> io::Result<FileId> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(FileId(hasher.finalize().into()))
}

fn background_hasher(store: &Weak<Store>, rx: &mpsc::Receiver<FileName>) {
    while let Ok(name) = rx.recv() {
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.open_hashed(&name) {
            tracing::warn!("could not hash {name}: {e}");
        }
        lock(&store.queued).remove(&name);
    }
}

#[cfg(test)]
mod tests;

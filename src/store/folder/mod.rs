//! The folder backend: files are plain files in the shared folder.
//!
//! barge keeps its own state in one hidden folder at the top, [`STATE_DIR`]: the id index
//! (`index.redb`) and the temp area (`tmp/`) where uploads are written until they are complete,
//! on disk, and then moved into place atomically.
//!
//! What it guarantees (README, "Guarantees"):
//! - A name is only ever opened beneath the folder, one component at a time, never through a
//!   symlink ([`fsops`]).
//! - An id is never stale: an indexed id is trusted only while the file's size, mtime and inode
//!   match what was hashed; otherwise the file is hashed again before it is listed or served
//!   ([`hashing`], [`index`]).
//! - An upload is visible only once every byte is flushed to disk, and is moved into place
//!   without ever replacing a file; a group of small ones costs two `syncfs` ([`upload`]).
//!
//! It knows nothing of the protocol's rules (read-only, limits, reservations): the policy layer
//! ([`crate::store::Store`]) holds them. Disk work runs on blocking threads.

mod files;
mod fsops;
mod hashing;
mod index;
mod partial;
mod refresh;
mod upload;
mod walks;
mod watch;

#[cfg(test)]
mod by_hand;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use rustix::fs::{AtFlags, Mode};
use rustix::io::Errno;

pub(crate) use self::index::{Entry as Known, Files};
use self::index::{Index, Persist};
use super::{
    Backend, Body, Download, Listing, PartialKey, Staged, StoreConfig, StoreError, Target,
};
use crate::id::FileId;
use crate::name::{FileName, STATE_DIR};

const TMP_DIR: &str = "tmp";

/// The shared folder as a [`Backend`].
#[derive(Debug)]
pub struct FolderBackend {
    inner: Arc<Inner>,
    lists: walks::Walks,
}

/// What the backend, its uploads and its background threads share.
#[derive(Debug)]
struct Inner {
    root_path: PathBuf,
    root: OwnedFd,
    /// The temp area. Replaced when it is found deleted (someone removed `.barge/tmp` while
    /// the server ran): uploads then recreate it instead of failing until a restart.
    tmp: Mutex<Arc<OwnedFd>>,
    /// Partial uploads kept for `RESUME` ([`partial`]): not wiped at start.
    partial: Arc<OwnedFd>,
    config: StoreConfig,
    index: Mutex<Index>,
    persist: Mutex<Persist>,
    /// Canonical form → the non-ASCII names seen with it (by the last walk, or stored since):
    /// how an equivalent name is found without reading every folder. A cache: candidates are
    /// checked on disk before they count.
    canonical: Mutex<HashMap<String, Vec<FileName>>>,
    /// Files waiting for the background hasher.
    queued: Mutex<HashSet<FileName>>,
    hasher_tx: Mutex<Option<mpsc::Sender<FileName>>>,
    tmp_counter: AtomicU64,
    /// Hashes in progress by inode, each with the result of the last one: how concurrent
    /// requests for a file share one hash.
    hashes: Mutex<HashMap<u64, Arc<Mutex<Option<index::Entry>>>>>,
    /// How many times a file was read to be hashed (for the log and tests: each content should
    /// be read once).
    hashed: AtomicU64,
    /// Inodes seen changing while they were hashed, with what they became.
    changing: Mutex<HashMap<u64, fsops::Meta>>,
    /// Files in the folder: set by each walk, followed by uploads and deletes in between.
    files: AtomicU64,
    /// What changed in the folder since the last listing ([`watch`]); `None` where the system
    /// cannot say, and then every listing walks the folder.
    watcher: Option<watch::Watcher>,
    /// Files found on disk whose id is not known yet (being hashed): the listing's pending
    /// count, and what it queues again for the hasher.
    unhashed: Mutex<BTreeSet<FileName>>,
    /// Walks of the whole folder (for the log and tests: with a watcher, only the first and
    /// those it asks for).
    full_walks: AtomicU64,
    /// Set when the start-up scan has ended (for tests: a scan that ends late takes up
    /// changes made after it started, and queues their files for the hasher).
    first_scan_done: std::sync::atomic::AtomicBool,
    /// Group commits whose files are durable ([`Backend::group_flushes`]).
    group_flushes: AtomicU64,
    /// The partials (their leaves in `.barge/partial`) that a resumable upload is writing:
    /// never dropped to make room, and never written by two uploads at once.
    partials_open: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a way
    // that matters more than stopping service, so recover the guard.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs disk work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::worker(&e)))
}

impl FolderBackend {
    /// Opens the shared folder at `root` (created if missing), clears leftovers of interrupted
    /// uploads, loads the index and starts hashing unknown files in the background.
    ///
    /// # Errors
    /// If the folder cannot be created or opened, or another server uses it.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)
            .map_err(StoreError::io_on("creating the shared folder", None))?;
        let root_fd =
            fsops::open_root(root).map_err(StoreError::io_on("opening the shared folder", None))?;
        let state = ensure_dir(&root_fd, STATE_DIR)?;
        let tmp = ensure_dir(&state, TMP_DIR)?;
        clear_dir(&tmp)?;
        let partial = ensure_dir(&state, partial::PARTIAL_DIR)?;
        partial::sweep(&partial, config.partial_ttl, &HashSet::new());
        let (persist, index) = Persist::open(&state).map_err(|e| match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
            e => StoreError::Backend(Box::new(e)),
        })?;
        // Loading read the whole database once (redb's pages, a name each): given back.
        crate::heap::give_back();
        let (tx, rx) = mpsc::channel();
        let files = AtomicU64::new(index.len() as u64);
        let inner = Arc::new(Inner {
            root_path: root.to_path_buf(),
            root: root_fd,
            tmp: Mutex::new(Arc::new(tmp)),
            partial: Arc::new(partial),
            config,
            index: Mutex::new(index),
            persist: Mutex::new(persist),
            canonical: Mutex::default(),
            queued: Mutex::default(),
            hasher_tx: Mutex::new(Some(tx)),
            tmp_counter: AtomicU64::new(0),
            files,
            group_flushes: AtomicU64::new(0),
            partials_open: Mutex::new(HashSet::new()),
            hashes: Mutex::default(),
            hashed: AtomicU64::new(0),
            changing: Mutex::default(),
            watcher: watch::Watcher::new(),
            unhashed: Mutex::default(),
            full_walks: AtomicU64::new(0),
            first_scan_done: std::sync::atomic::AtomicBool::new(false),
        });
        hashing::start(&inner, rx)?;
        watch::start_draining(&inner)?;
        Ok(Self {
            inner,
            lists: walks::Walks::default(),
        })
    }

    /// The folder being shared.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.inner.root_path
    }
}

impl Inner {
    fn tmp_dir(&self) -> Arc<OwnedFd> {
        Arc::clone(&lock(&self.tmp))
    }

    /// Recreates the temp area (and the state folder) after `stale` was found deleted, unless
    /// another upload already did; returns the one to use.
    fn renew_tmp(&self, stale: &Arc<OwnedFd>) -> Result<Arc<OwnedFd>, StoreError> {
        let mut tmp = lock(&self.tmp);
        if Arc::ptr_eq(&tmp, stale) {
            let state = ensure_dir(&self.root, STATE_DIR)?;
            *tmp = Arc::new(ensure_dir(&state, TMP_DIR)?);
            tracing::warn!("the temp area was deleted while running; recreated it");
        }
        Ok(Arc::clone(&tmp))
    }

    fn open_parent_for_write<'n>(
        &self,
        name: &'n FileName,
    ) -> Result<(OwnedFd, &'n str), StoreError> {
        fsops::open_parent(&self.root, name, true).map_err(|e| {
            if is_blocked(&e) {
                not_a_folder(name)
            } else {
                StoreError::io("creating the folders of", Some(name), e)
            }
        })
    }

    /// Fails if anything is at `name` (a file, a folder) or a folder of it is not one.
    fn check_free(&self, name: &FileName) -> Result<(), StoreError> {
        match fsops::stat_name(&self.root, name) {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(fsops::taken_by(&st, name)),
            Err(e) if is_blocked(&e) => Err(not_a_folder(name)),
            Err(e) => Err(StoreError::io("looking up", Some(name), e)),
        }
    }

    /// Fails with `NotFound` unless `name` is a regular file (symlinks and folders are not).
    fn check_file(&self, name: &FileName) -> Result<(), StoreError> {
        match fsops::stat_name(&self.root, name) {
            Ok(Some(st)) if fsops::is_regular(&st) => Ok(()),
            Ok(_) => Err(StoreError::NotFound(Target::name(name.clone()))),
            Err(e) if fsops::is_absent(&e) => Err(StoreError::NotFound(Target::name(name.clone()))),
            Err(e) => Err(StoreError::io("looking up", Some(name), e)),
        }
    }

    fn note_name(&self, name: &FileName) {
        if !name.as_str().is_ascii() {
            let mut map = lock(&self.canonical);
            let same = map.entry(name.canonical().into_owned()).or_default();
            if !same.contains(name) {
                same.push(name.clone());
            }
        }
    }

    fn forget_name(&self, name: &FileName) {
        if !name.as_str().is_ascii() {
            let canonical = name.canonical();
            let mut map = lock(&self.canonical);
            if let Some(same) = map.get_mut(canonical.as_ref()) {
                same.retain(|n| n != name);
                if same.is_empty() {
                    map.remove(canonical.as_ref());
                }
            }
        }
    }
}

/// A file or symlink where a folder should be.
fn is_blocked(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotADirectory || e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
}

fn not_a_folder(name: &FileName) -> StoreError {
    StoreError::NotAFolder(name.split_parent().0.unwrap_or_default().to_owned())
}

#[async_trait::async_trait]
impl Backend for FolderBackend {
    async fn list(&self) -> Result<Listing, StoreError> {
        self.lists.list(&self.inner).await
    }

    async fn names_of(&self, id: FileId) -> Result<Vec<FileName>, StoreError> {
        // In memory: the caller confirms by opening, which rehashes a file changed on disk.
        Ok(lock(&self.inner.index).names_of(&id))
    }

    async fn equivalents(&self, name: &FileName) -> Result<Vec<FileName>, StoreError> {
        use unicode_normalization::UnicodeNormalization;
        let canonical = name.canonical();
        let mut candidates: Vec<FileName> = lock(&self.inner.canonical)
            .get(canonical.as_ref())
            .map(|same| same.iter().filter(|n| *n != name).cloned().collect())
            .unwrap_or_default();
        if !name.as_str().is_ascii() {
            // Files dropped in by hand and not walked yet: their whole-name forms, on disk.
            for form in [canonical.into_owned(), name.as_str().nfd().collect()] {
                if let Ok(n) = FileName::parse(&form)
                    && n != *name
                    && !candidates.contains(&n)
                {
                    candidates.push(n);
                }
            }
        }
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            Ok(candidates
                .into_iter()
                .filter(|n| matches!(fsops::stat_name(&inner.root, n), Ok(Some(st)) if fsops::is_regular(&st)))
                .collect())
        })
        .await
    }

    async fn open(&self, name: &FileName) -> Result<Option<Download>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let name = name.clone();
        blocking(move || inner.open_download(name)).await
    }

    async fn open_ahead(
        &self,
        names: &[FileName],
        budget: u64,
    ) -> Vec<Result<Option<Download>, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let names = names.to_vec();
        let job = blocking(move || {
            let mut left = budget;
            let mut out = Vec::with_capacity(names.len());
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    // Read ahead only what the index knows as small (nothing to hash), while
                    // the budget lasts.
                    let size = lock(&inner.index).get(&name).map(|e| e.meta.size);
                    match size {
                        Some(size) if size <= super::INLINE_BODY && size <= left => left -= size,
                        _ => break,
                    }
                }
                let opened = inner.open_download(name);
                let inline = matches!(
                    &opened,
                    Ok(None)
                        | Err(_)
                        | Ok(Some(Download {
                            body: Body::Bytes(_),
                            ..
                        }))
                );
                if i > 0 && !inline {
                    break;
                }
                out.push(opened);
            }
            Ok(out)
        });
        job.await.unwrap_or_else(|e| vec![Err(e)])
    }

    async fn begin(&self, name: &FileName, size: u64) -> Result<Box<dyn Staged>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let name = name.clone();
        blocking(move || {
            inner.check_free(&name)?;
            let staged: Box<dyn Staged> =
                Box::new(upload::FolderUpload::create(&inner, name, size)?);
            Ok(staged)
        })
        .await
    }

    async fn resume(&self, key: &PartialKey) -> Result<(Box<dyn Staged>, u64), StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        blocking(move || {
            inner.check_free(&key.name)?;
            let (upload, offset) = upload::FolderUpload::resume(&inner, &key)?;
            let staged: Box<dyn Staged> = Box::new(upload);
            Ok((staged, offset))
        })
        .await
    }

    /// One group commit ([`upload::group_commit`]); a folder does not record uploaders.
    async fn put_batch_by(
        &self,
        items: Vec<(FileName, Vec<u8>)>,
        _uploader: &str,
    ) -> Vec<Result<FileId, StoreError>> {
        let inner = Arc::clone(&self.inner);
        let count = items.len();
        tokio::task::spawn_blocking(move || upload::group_commit(&inner, items))
            .await
            .unwrap_or_else(|e| (0..count).map(|_| Err(StoreError::worker(&e))).collect())
    }

    async fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let (from, to) = (from.clone(), to.clone());
        blocking(move || inner.rename(&from, &to)).await
    }

    async fn delete(&self, name: &FileName) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let name = name.clone();
        blocking(move || inner.delete(&name)).await
    }

    fn free_space(&self) -> Result<super::Space, StoreError> {
        fsops::free_space(&self.inner.root).map_err(StoreError::io_on("checking free space", None))
    }

    fn file_count(&self) -> u64 {
        self.inner.files.load(Ordering::Relaxed)
    }

    fn group_flushes(&self) -> u64 {
        self.inner.group_flushes.load(Ordering::SeqCst)
    }

    fn close(&self) {
        *lock(&self.inner.hasher_tx) = None;
        lock(&self.inner.persist).close();
    }
}

impl Inner {
    /// Opens `name` for download; a small file is read in the same step (one thread hop per
    /// small download).
    fn open_download(&self, name: FileName) -> Result<Option<Download>, StoreError> {
        let Some((file, entry)) = self.open_hashed(&name)? else {
            return Ok(None);
        };
        let size = entry.meta.size;
        let body = if size <= super::INLINE_BODY {
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.take(size)
                .read_to_end(&mut buf)
                .map_err(StoreError::io_on("reading", Some(&name)))?;
            Body::Bytes(buf)
        } else {
            Body::File(file)
        };
        Ok(Some(Download {
            size,
            id: entry.id,
            name,
            body,
        }))
    }

    fn delete(&self, name: &FileName) -> Result<(), StoreError> {
        self.check_file(name)?;
        let gone = || StoreError::NotFound(Target::name(name.clone()));
        let (dir, leaf) = fsops::open_parent(&self.root, name, false).map_err(|_| gone())?;
        match rustix::fs::unlinkat(&dir, leaf, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Err(gone()),
            Err(e) => return Err(StoreError::io("deleting", Some(name), e.into())),
        }
        let _ = fsops::sync_dir(&dir);
        drop(dir);
        let _ = self
            .files
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.forget(name);
        fsops::prune_empty_folders(&self.root, name);
        Ok(())
    }

    fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError> {
        self.check_file(from)?;
        let gone = || StoreError::NotFound(Target::name(from.clone()));
        let (from_dir, from_leaf) =
            fsops::open_parent(&self.root, from, false).map_err(|_| gone())?;
        let (to_dir, to_leaf) = match self.open_parent_for_write(to) {
            Ok(v) => v,
            Err(e) => {
                // Folders it created before failing are not left behind.
                fsops::prune_empty_folders(&self.root, to);
                return Err(e);
            }
        };
        let renamed = fsops::move_no_replace(&from_dir, from_leaf, &to_dir, to_leaf);
        if renamed.is_err() {
            fsops::prune_empty_folders(&self.root, to);
        }
        match renamed {
            Ok(()) => {}
            Err(Errno::EXIST | Errno::NOTEMPTY) => return Err(fsops::taken(&to_dir, to_leaf, to)),
            Err(Errno::NOENT) => return Err(gone()),
            Err(e) => return Err(StoreError::io("renaming", Some(from), e.into())),
        }
        let _ = fsops::sync_dir(&to_dir);
        let _ = fsops::sync_dir(&from_dir);
        let entry = lock(&self.index).get(from).copied();
        self.forget(from);
        self.note_name(to);
        if let Some(entry) = entry {
            self.record(to.clone(), entry);
        }
        drop(from_dir);
        fsops::prune_empty_folders(&self.root, from);
        Ok(())
    }
}

fn ensure_dir(parent: &OwnedFd, name: &'static str) -> Result<OwnedFd, StoreError> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(StoreError::io("creating the state folder", None, e.into())),
    }
    // It must be a folder, not a symlink.
    fsops::open_dir_at(parent, name).map_err(StoreError::io_on("opening the state folder", None))
}

/// Removes everything in the temp area: uploads that a crash or kill interrupted.
fn clear_dir(dir: &OwnedFd) -> Result<(), StoreError> {
    let entries = rustix::fs::Dir::read_from(dir)
        .map_err(StoreError::io_on("reading the temp area", None))?;
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

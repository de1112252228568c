//! Where shared files live: the storage trait, its backends, and the rules every backend obeys.
//!
//! Three layers, in the style of OpenDAL's services and layers:
//! - [`Backend`] is the seam: one job per method, no policy. It is written so that an object
//!   store can implement it (no inodes, no hard links, no `sendfile` required; a conditional
//!   commit instead of "link, do not replace").
//! - [`FolderBackend`] keeps the files in a plain folder (the shared folder),
//!   `ObjectBackend` keeps them in an S3 bucket with their names in a [`catalog`] (SQLite or
//!   PostgreSQL), and [`MemoryBackend`] keeps them in memory, for tests.
//! - [`Store`] wraps any backend with the rules of `PROTOCOL.md`: read-only, the size limit and
//!   the free-space reserve, names with an upload in progress, Unicode-equivalent names, and
//!   "ids win over names" with the ambiguous-id rule.
//!
//! The store takes names ([`FileName`]) and ids ([`FileId`]); it knows nothing of the wire
//! (the server turns a request's file reference into a [`Target`]) nor of sockets.

#[cfg(feature = "s3")]
pub mod catalog;
mod error;
mod folder;
mod memory;
#[cfg(feature = "s3")]
pub mod object;
mod policy;
mod reserve;

use std::fmt;
use std::fs::File;
use std::pin::Pin;

use tokio::io::AsyncRead;

pub use error::StoreError;
pub use folder::FolderBackend;
pub use memory::MemoryBackend;
#[cfg(feature = "s3")]
pub use object::ObjectBackend;
pub use policy::{Store, Upload};

use crate::id::FileId;
use crate::name::FileName;

/// Files up to this size are handed back whole ([`Body::Bytes`]) by the backends that can read
/// them in the same step as the open: it saves a thread hop per small download.
pub const INLINE_BODY: u64 = 64 * 1024;

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Refuse uploads, renames and deletes.
    pub read_only: bool,
    /// The largest upload accepted, in bytes.
    pub max_file_size: u64,
    /// Free space to leave on the disk after an upload, in bytes.
    pub min_free_space: u64,
    /// Free inodes (file slots) to leave on the disk after an upload, where the backend counts
    /// them: a disk can run out of inodes with most of its bytes free.
    pub min_free_inodes: u64,
    /// The most files the store may hold: an upload that would pass it is refused. Listings
    /// (and the clients reading them) stay bounded.
    pub max_files: u64,
    /// How many bytes of not-yet-hashed files a listing hashes before it answers; larger files
    /// are hashed in the background and listed once their id is known.
    pub inline_hash_budget: u64,
    /// How long a listing may spend hashing before it answers; what is left is hashed in the
    /// background. Keeps the first listing of a folder of many small new files quick.
    pub inline_hash_time: std::time::Duration,
    /// Flush each upload to stable storage before it becomes visible (fsync).
    pub sync: bool,
    /// How long a partial upload (`RESUME`) is kept after its last byte arrived.
    pub partial_ttl: std::time::Duration,
    /// The most partial uploads kept at once; starting one more drops the oldest.
    pub max_partials: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            read_only: false,
            max_file_size: 1 << 40,
            min_free_space: 64 << 20,
            min_free_inodes: 4096,
            max_files: 1_000_000,
            inline_hash_budget: 64 << 20,
            inline_hash_time: std::time::Duration::from_millis(500),
            sync: true,
            partial_ttl: std::time::Duration::from_secs(24 * 3600),
            max_partials: 64,
        }
    }
}

/// What a backend can still store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes.
    pub bytes: u64,
    /// Files and folders (inodes), when the backend has such a limit and can tell it.
    pub inodes: Option<u64>,
}

/// One stored file with a known id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// The MD5 of its content.
    pub id: FileId,
    /// Its name.
    pub name: FileName,
    /// Its size in bytes.
    pub size: u64,
}

/// A listing: a consistent snapshot of the files whose id is known, sorted by name (byte
/// order), and how many more are still being hashed.
///
/// It is a persistent map shared with the store's index, not a copy: taking it, cloning it and
/// holding it cost a few pointers, plus whatever the index changes afterwards (only the changed
/// chunks of 256 files are copied, and the list of chunks). So every connection sending a listing, however slowly it is read, holds
/// the same nodes, and its length, known up front, is exactly what iterating it yields.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    files: folder::Files,
    /// Files found but not hashed yet (they are being hashed in the background).
    pub pending: usize,
}

impl Listing {
    pub(crate) fn new(files: folder::Files, pending: usize) -> Self {
        Self { files, pending }
    }

    /// A listing of `entries` (in any order; a name given twice keeps its last entry).
    #[must_use]
    pub fn from_entries(entries: impl IntoIterator<Item = FileEntry>, pending: usize) -> Self {
        let files = entries
            .into_iter()
            .map(|e| (e.name, folder::Known::listed(e.id, e.size)))
            .collect();
        Self { files, pending }
    }

    /// How many files it lists.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it lists no file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every file, in name order, without copying names.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&FileName, FileId, u64)> + '_ {
        self.files.iter().map(|(n, e)| (n, e.id, e.meta.size))
    }

    /// The files after `name` (all of them for `None`), in name order: where a listing sent in
    /// pieces goes on.
    pub fn after(
        &self,
        name: Option<&FileName>,
    ) -> impl Iterator<Item = (&FileName, FileId, u64)> + '_ {
        use std::ops::Bound;
        let from = name.map_or(Bound::Unbounded, |n| Bound::Excluded(n.as_str()));
        self.files
            .range_from(from)
            .map(|(n, e)| (n, e.id, e.meta.size))
    }

    /// The files whose name starts with `folder/` (every file for `None`), in name order.
    pub fn under(
        &self,
        folder: Option<&FileName>,
    ) -> impl Iterator<Item = (&FileName, FileId, u64)> + use<'_> {
        self.under_after(folder, None)
    }

    /// The files of [`under`](Self::under) that come after `name` (all of them for `None`), in
    /// name order: where a listing of a folder sent in pieces goes on.
    pub fn under_after(
        &self,
        folder: Option<&FileName>,
        name: Option<&FileName>,
    ) -> impl Iterator<Item = (&FileName, FileId, u64)> + use<'_> {
        use std::ops::Bound;
        // Every name beneath `folder` sorts from `folder/` on; the first that does not start
        // with it ends them (names are compared byte by byte).
        let prefix = folder.map(|f| format!("{}/", f.as_str()));
        let from = match name {
            Some(n) => Bound::Excluded(n.as_str()),
            None => prefix.as_deref().map_or(Bound::Unbounded, Bound::Included),
        };
        // The iterator keeps no borrow of its bounds.
        let files = self.files.range_from(from);
        files
            .take_while(move |(n, _)| prefix.as_deref().is_none_or(|p| n.as_str().starts_with(p)))
            .map(|(n, e)| (n, e.id, e.meta.size))
    }

    /// Every file as an owned entry, in name order: for small listings and tests (a large one is
    /// better walked with [`iter`](Self::iter)).
    #[must_use]
    pub fn entries(&self) -> Vec<FileEntry> {
        self.iter()
            .map(|(name, id, size)| FileEntry {
                id,
                name: name.clone(),
                size,
            })
            .collect()
    }
}

/// Chunks of files (256 each) a dropped [`Listing`] must be the last holder of for the memory
/// it frees to be given back to the system at once: 0.9 MiB of entries or more, beside their
/// names.
const GIVE_BACK_CHUNKS: usize = 64;

impl Drop for Listing {
    /// A listing that outlived the index it was taken from (the index rebuilt itself after a
    /// burst, or most of it changed) frees most of what it shares no more; that memory, in the
    /// middle of the heap, is given back to the system rather than kept by malloc
    /// ([`heap`](crate::heap)): the index's own call, a second after the burst, misses a
    /// listing read slowly for longer than that.
    fn drop(&mut self) {
        if self.files.unshared_chunks() >= GIVE_BACK_CHUNKS {
            crate::heap::give_back();
        }
    }
}

/// The bytes of a download.
pub enum Body {
    /// A local file positioned at its start: the transport may `sendfile` it. Serving from this
    /// handle means a rename or replacement meanwhile cannot change what is sent.
    File(File),
    /// The whole content, already read (small files, memory).
    Bytes(Vec<u8>),
    /// Any other source (an object store's response body).
    Reader(Pin<Box<dyn AsyncRead + Send>>),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(file) => f.debug_tuple("File").field(file).finish(),
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// A file opened for download; `body` yields `size` bytes that hashed to `id` when it was
/// opened (a file modified in place while it is sent is caught by the client's check).
#[derive(Debug)]
pub struct Download {
    /// Its size in bytes.
    pub size: u64,
    /// Its id.
    pub id: FileId,
    /// Its name.
    pub name: FileName,
    /// Its bytes.
    pub body: Body,
}

/// Which file a download, rename or delete means: an id, a name, or text that is both (then the
/// id wins, `PROTOCOL.md` section 5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Set when the text is a valid id.
    pub id: Option<FileId>,
    /// Set when the text is a valid name.
    pub name: Option<FileName>,
}

impl Target {
    /// A target by name only.
    #[must_use]
    pub fn name(name: FileName) -> Self {
        Self {
            id: None,
            name: Some(name),
        }
    }
}

impl fmt::Display for Target {
    /// The text as it was given: the name (escaped) if it is one, else the id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.id) {
            (Some(n), _) => n.fmt(f),
            (None, Some(id)) => id.fmt(f),
            (None, None) => Ok(()),
        }
    }
}

/// Which partial upload a `RESUME` may continue (`PROTOCOL.md` section 5.11): one kept for the
/// same principal, name and size. A different size is a different upload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartialKey {
    /// Who uploads: a user name, `token:<id>`, or empty for anonymous sessions.
    pub owner: String,
    /// The name it will be stored under (the real name, inside any confining folder).
    pub name: FileName,
    /// Its declared size.
    pub size: u64,
}

/// An upload being written where it cannot be seen yet. [`write`](Self::write) is called on a
/// blocking thread, chunk after chunk; the backend hashes what it stores (the id it returns is
/// the MD5 of the bytes it keeps). Dropping it without a successful
/// [`commit`](Self::commit) removes the staged bytes.
pub trait Staged: Send + fmt::Debug {
    /// Appends body bytes.
    ///
    /// # Errors
    /// More bytes than declared ([`StoreError::Incomplete`]), a full disk, or another failure.
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;

    /// Makes the upload visible under its name, unless that name was taken meanwhile (a
    /// conditional commit: never replaces). Blocking, like [`write`](Self::write).
    ///
    /// # Errors
    /// Fewer bytes than declared, [`StoreError::Exists`] / [`StoreError::NotAFolder`] if the
    /// name is taken or blocked, or a storage failure.
    fn commit(self: Box<Self>) -> Result<FileId, StoreError>;

    /// The MD5 of every byte written so far (a resumed upload's kept prefix included), when
    /// the backend can tell before committing; `None` otherwise. Blocking.
    fn digest(&self) -> Option<FileId> {
        None
    }

    /// Drops the upload and whatever it kept for a later resume: the next try starts over.
    /// Blocking. The default is a plain drop, which is all a backend without resume needs.
    fn discard(self: Box<Self>) {}
}

/// A place that keeps named files: the storage seam. Backends are thin: the rules of the
/// protocol live in [`Store`]. Every method may be called concurrently.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Every file whose id is known, sorted by name, and how many more are still being hashed.
    async fn list(&self) -> Result<Listing, StoreError>;

    /// The names whose current content has `id`, in name order.
    async fn names_of(&self, id: FileId) -> Result<Vec<FileName>, StoreError>;

    /// Names of existing files canonically equivalent to `name` (same NFC, see
    /// [`FileName::canonical`]) whose bytes differ from it.
    async fn equivalents(&self, name: &FileName) -> Result<Vec<FileName>, StoreError>;

    /// Opens a file for reading; `Ok(None)` when there is no file of that name.
    async fn open(&self, name: &FileName) -> Result<Option<Download>, StoreError>;

    /// Opens the first of `names` as [`open`](Self::open) does, and reads ahead those after it
    /// that are cheap to have at once (small, whole in memory, within `budget` bytes); stops at
    /// the first that is not. Returns one result per name opened, in order (at least one).
    /// Backends with a cheaper way (one trip to a blocking thread for all) override it.
    async fn open_ahead(
        &self,
        names: &[FileName],
        budget: u64,
    ) -> Vec<Result<Option<Download>, StoreError>> {
        let _ = budget;
        match names.first() {
            Some(name) => vec![self.open(name).await],
            None => Vec::new(),
        }
    }

    /// Starts a staged upload of `size` bytes to `name`. Fails early (before any byte is sent)
    /// if the name is visibly taken or blocked; the commit checks again.
    async fn begin(&self, name: &FileName, size: u64) -> Result<Box<dyn Staged>, StoreError>;

    /// As [`begin`](Self::begin), for `uploader` (a user name, `token:<id>`, or empty when
    /// the server does not know), which backends that record it (an object store's catalog)
    /// keep with the file. The default ignores it.
    async fn begin_by(
        &self,
        name: &FileName,
        size: u64,
        uploader: &str,
    ) -> Result<Box<dyn Staged>, StoreError> {
        let _ = uploader;
        self.begin(name, size).await
    }

    /// Stores several small files, each all or nothing, each with its own result in order,
    /// recording `uploader` as [`begin_by`](Self::begin_by) does. Backends with a cheaper way
    /// to make many files durable at once (one `syncfs`) override it.
    async fn put_batch_by(
        &self,
        items: Vec<(FileName, Vec<u8>)>,
        uploader: &str,
    ) -> Vec<Result<FileId, StoreError>> {
        let mut out = Vec::with_capacity(items.len());
        for (name, data) in items {
            let staged = match self.begin_by(&name, data.len() as u64, uploader).await {
                Ok(s) => s,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            out.push(
                tokio::task::spawn_blocking(move || {
                    let mut staged = staged;
                    staged.write(&data)?;
                    staged.commit()
                })
                .await
                .unwrap_or_else(|e| Err(StoreError::worker(&e))),
            );
        }
        out
    }

    /// Starts a resumable upload (`RESUME`): continues the partial upload kept for `key`, if
    /// there is one, or starts one that is kept if it is interrupted. Returns the staged upload
    /// (its kept bytes already counted and hashed) and how many bytes it already holds.
    ///
    /// The default is "no resume": a plain [`begin`](Self::begin) at offset 0, dropped if it
    /// is interrupted, which is always correct (a client then sends the whole file).
    async fn resume(&self, key: &PartialKey) -> Result<(Box<dyn Staged>, u64), StoreError> {
        Ok((self.begin(&key.name, key.size).await?, 0))
    }

    /// Renames a file, never replacing one; folders in `to` are created as needed.
    async fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError>;

    /// Deletes a file.
    async fn delete(&self, name: &FileName) -> Result<(), StoreError>;

    /// Bytes (and files) that can still be stored. Called on the runtime thread before each upload, so it
    /// must be cheap (one `statvfs`, or a configured quota).
    ///
    /// # Errors
    /// If the backend cannot tell.
    fn free_space(&self) -> Result<Space, StoreError>;

    /// How many files it holds, as last counted (the folder counts on each walk and follows
    /// its own uploads and deletes between walks). Cheap: called before each upload.
    fn file_count(&self) -> u64;

    /// How many group commits have made their files durable so far (both flushes done): what
    /// a test watches to see that no reply to a batched upload comes before its flush. 0 for a
    /// backend with no group commit of its own.
    fn group_flushes(&self) -> u64 {
        0
    }

    /// Saves what must be saved and stops background work; reads still work afterwards.
    fn close(&self);
}

#[cfg(test)]
mod tests;

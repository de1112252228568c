//! Why a store operation failed: one enum for every backend and the policy layer.
//!
//! Variants carry data (names, sizes, ids); the words a client sees are chosen at the edge
//! (`server::reply_for`), which maps each variant to one reply.

use std::io;

use rustix::io::Errno;

use crate::id::FileId;
use crate::name::FileName;

use super::Target;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No file matches the name or id.
    #[error("no such file: {0}")]
    NotFound(Target),
    /// A file of that name exists.
    #[error("a file named {0} already exists")]
    Exists(FileName),
    /// A folder of that name exists (it holds files, or an upload into it is under way).
    #[error("a folder named {0} already exists")]
    FolderExists(FileName),
    /// The name conflicts with an upload in progress: the same name, a folder of it, or a name
    /// under it.
    #[error("the name {name} conflicts with an upload in progress: {uploading}")]
    UploadInProgress {
        /// The name asked for.
        name: FileName,
        /// The upload in progress it conflicts with.
        uploading: FileName,
    },
    /// The name differs from an existing file's (or an upload's) only by Unicode normalisation.
    #[error("the name {name} differs from {existing} only by Unicode normalisation")]
    Equivalent {
        /// The name asked for.
        name: FileName,
        /// The name that is already taken.
        existing: FileName,
    },
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
    /// Not enough free space for an upload of the declared size.
    #[error("not enough disk space: {needed} bytes needed, {available} available")]
    InsufficientStorage {
        /// Bytes needed (including the reserve kept free and uploads in progress).
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// Not enough free inodes (file slots) on the disk for an upload.
    #[error(
        "not enough free file slots (inodes) on the disk: {needed} needed, {available} available"
    )]
    InsufficientInodes {
        /// Inodes needed (the file, its folders, uploads in progress and the reserve).
        needed: u64,
        /// Inodes available.
        available: u64,
    },
    /// The store holds as many files as it may.
    #[error("the server holds its limit of {max} files")]
    TooManyFiles {
        /// The limit.
        max: u64,
    },
    /// The file is being modified (it changed while it was hashed): its id is not settled.
    #[error("the file {0} is being written; try again once it is complete")]
    BeingWritten(FileName),
    /// A folder could not be read while listing (too many open files, no permission, an I/O
    /// error): the listing would be incomplete, so none is given.
    #[error("the listing is incomplete: the folder '{}' could not be read ({source}); try again", if .folder.is_empty() { "." } else { .folder })]
    ListingIncomplete {
        /// The folder, relative to the shared folder (empty for the shared folder itself).
        folder: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The disk filled up while an upload was being written.
    #[error("the disk is full")]
    DiskFull,
    /// An upload ended before all declared bytes arrived, or more were offered.
    #[error("upload incomplete: {received} of {expected} bytes")]
    Incomplete {
        /// The declared size.
        expected: u64,
        /// What arrived.
        received: u64,
    },
    /// A resumed upload's bytes do not hash to the id the client declared: nothing was kept.
    #[error(
        "checksum mismatch: the stored bytes hash to {actual}, not {expected}; nothing was kept, the next try starts over"
    )]
    ChecksumMismatch {
        /// The client's MD5 of its whole file.
        expected: FileId,
        /// The MD5 of what the server held.
        actual: FileId,
    },
    /// A download was asked to start past the end of the file.
    #[error("offset {offset} is beyond the end of the file ({size} bytes)")]
    BeyondEnd {
        /// The offset asked for.
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// Another barge server already uses this folder.
    #[error("another barge server is already using this folder")]
    Locked,
    /// A storage operation failed.
    #[error("{action}{}: {source}", on(.name.as_ref()))]
    Io {
        /// What was being done (`"opening"`, `"renaming"`...).
        action: &'static str,
        /// The file it was done to, if one.
        name: Option<FileName>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The backend's own bookkeeping failed (the folder's id index database).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn on(name: Option<&FileName>) -> String {
    name.map(|n| format!(" {n}")).unwrap_or_default()
}

impl StoreError {
    /// An I/O failure while doing `action` to `name` (a full disk becomes [`Self::DiskFull`]).
    pub(crate) fn io(action: &'static str, name: Option<&FileName>, source: io::Error) -> Self {
        if matches!(source.raw_os_error(), Some(e) if e == Errno::NOSPC.raw_os_error() || e == Errno::DQUOT.raw_os_error())
        {
            Self::DiskFull
        } else {
            Self::Io {
                action,
                name: name.cloned(),
                source,
            }
        }
    }

    /// A closure for `map_err` on I/O results.
    pub(crate) fn io_on<'a, E: Into<io::Error>>(
        action: &'static str,
        name: Option<&'a FileName>,
    ) -> impl FnOnce(E) -> Self + 'a {
        move |e| Self::io(action, name, e.into())
    }

    /// A worker thread panicked or was cancelled.
    #[must_use]
    pub fn worker(e: &tokio::task::JoinError) -> Self {
        Self::Io {
            action: "running a worker thread",
            name: None,
            source: io::Error::other(e.to_string()),
        }
    }

    /// True for failures of the server itself (to be logged), not refusals.
    #[must_use]
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Io { .. } | Self::Backend(_) | Self::Locked | Self::ListingIncomplete { .. }
        )
    }
}

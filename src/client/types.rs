//! The plain values the client hands back: progress, listings, and what a transfer achieved.

use std::path::PathBuf;

use crate::name::FileName;
use crate::protocol::{FileId, ListingEntry};

/// How far a transfer has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent or received so far.
    pub done: u64,
    /// Bytes in the whole transfer.
    pub total: u64,
}

/// The server's list of files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The files, in the server's order (by name).
    pub entries: Vec<ListingEntry>,
    /// How many more files the server is still hashing, when its reply said so.
    pub pending: Option<u64>,
}

/// An upload the server stored and whose MD5 matches ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The name it is stored under.
    pub name: FileName,
    /// Its id (the MD5 both sides computed).
    pub id: FileId,
    /// Its size in bytes.
    pub size: u64,
}

/// A download that was verified and moved into place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// The file's name on the server.
    pub name: FileName,
    /// Its id, which the received bytes hash to.
    pub id: FileId,
    /// Its size in bytes.
    pub size: u64,
    /// Where it was saved.
    pub path: PathBuf,
}

/// Where a download goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Into this folder, under the last component of the server's name for the file.
    Dir(PathBuf),
    /// Exactly this path.
    File(PathBuf),
}

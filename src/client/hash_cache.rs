//! The client's cache of MD5 states of local files it uploads with `RESUME`, so that resuming an
//! upload at byte N hashes the file only from the last checkpoint at or before N, not from 0.
//!
//! One small file per local file in `$XDG_CACHE_HOME/barge/md5/` (else `~/.cache/barge/md5/`),
//! named by the SHA-256 of the file's identity: its absolute path, device, inode, size,
//! modification time and **change time**. The change time is what makes a stale entry
//! impossible to reach by ordinary means: writing to a file in place and putting its mtime back
//! (`touch -d`) still moves its ctime, which no user can set, so the key changes and the entry
//! is simply not found. Two more guards: an entry is written only for a file whose ctime was
//! already [`SETTLED`] in the past when hashing began (a change within the same clock tick
//! could otherwise leave the ctime as it was), and only while the file still has the identity
//! it had when hashing began.
//!
//! The cache is a shortcut, not a trust anchor: the upload still ends with the server checking
//! the whole file's MD5, and an entry with a wrong state (damaged, forged) makes that check fail
//! (`460`, nothing kept), never a wrong file pass.
//!
//! Bounds: a state every [`interval`] bytes (at most about [`MAX_STATES`] per file); at most
//! [`MAX_ENTRIES`] files, the least recently written dropped first, and none older than
//! [`MAX_AGE`].

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::md5_state::{self, ResumableMd5};

/// How long ago a file's last change must be, when hashing begins, for its states to be cached
/// (many clock ticks: file times advance by ticks of up to 10 ms).
const SETTLED: Duration = Duration::from_millis(200);

/// The most states kept for one file.
const MAX_STATES: usize = 1024;

/// The most files the cache describes.
const MAX_ENTRIES: usize = 256;

/// Entries not written for this long are dropped.
const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The spacing of the states kept for a file of `size` bytes: 64 MiB, more for a file so large
/// that it would need more than [`MAX_STATES`].
#[must_use]
pub(super) fn interval(size: u64) -> u64 {
    let every = super::resume::test_md5_every().unwrap_or(64 << 20);
    every.max(size.div_ceil(MAX_STATES as u64 - 1))
}

/// The cache folder, when the environment names one.
fn folder() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| Path::new(v).is_absolute())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("barge").join("md5"))
}

/// The identity of an open local file, as it is when read.
fn identity(path: &Path, meta: &std::fs::Metadata) -> Vec<u8> {
    let mut tag = path.as_os_str().as_encoded_bytes().to_vec();
    tag.push(0);
    for n in [meta.dev(), meta.ino(), meta.size()] {
        tag.extend_from_slice(&n.to_le_bytes());
    }
    for n in [
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ] {
        tag.extend_from_slice(&n.to_le_bytes());
    }
    tag
}

/// The states cached for one local file, and the right to add to them.
pub(super) struct PrefixCache {
    folder: PathBuf,
    /// The file's absolute path, part of its identity.
    path: PathBuf,
    entry: PathBuf,
    tag: Vec<u8>,
    states: Vec<ResumableMd5>,
    /// Whether new states may be written (the file had settled when hashing began).
    writable: bool,
    file: std::fs::File,
}

impl PrefixCache {
    /// The cache entry of `file` (opened from `path`), read if there is one. `None` when there
    /// is no cache folder or the file cannot be described.
    pub(super) fn open(path: &Path, file: &std::fs::File) -> Option<Self> {
        let folder = folder()?;
        let started = SystemTime::now();
        let meta = file.metadata().ok()?;
        let path = std::path::absolute(path).ok()?;
        let tag = identity(&path, &meta);
        let entry = folder.join(hex::encode(Sha256::digest(&tag)));
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        let writable = started
            .duration_since(changed)
            .is_ok_and(|ago| ago >= SETTLED);
        let states = std::fs::read(&entry)
            .ok()
            .and_then(|bytes| md5_state::decode(&tag, &bytes, MAX_STATES))
            .unwrap_or_default();
        Some(Self {
            folder,
            path,
            entry,
            tag,
            states,
            writable,
            file: file.try_clone().ok()?,
        })
    }

    /// The cached state covering the most bytes, but no more than `at_most`.
    pub(super) fn best(&self, at_most: u64) -> Option<ResumableMd5> {
        self.states
            .iter()
            .filter(|s| s.len() <= at_most)
            .max_by_key(|s| s.len())
            .cloned()
    }

    /// Adds `state` to the entry (written to a temporary file and renamed into place), if the
    /// file still has the identity it had when it was opened. Best effort.
    pub(super) fn record(&mut self, state: &ResumableMd5) {
        if !self.writable
            || self.states.len() >= MAX_STATES
            || self.states.iter().any(|s| s.len() == state.len())
        {
            return;
        }
        let still = self
            .file
            .metadata()
            .is_ok_and(|meta| identity(&self.path, &meta) == self.tag);
        if !still {
            // The file changed while it was read: what was hashed may not be its content.
            self.writable = false;
            return;
        }
        self.states.push(state.clone());
        self.states.sort_by_key(ResumableMd5::len);
        if self.write().is_err() {
            self.writable = false;
        }
    }

    fn write(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.folder)?;
        prune(&self.folder, &self.entry);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.folder)?;
        std::io::Write::write_all(&mut tmp, &md5_state::encode(&self.tag, &self.states))?;
        tmp.persist(&self.entry).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Drops entries older than [`MAX_AGE`], and the oldest beyond [`MAX_ENTRIES`] - 1 (room for
/// `keep`, which is about to be written).
fn prune(folder: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let now = SystemTime::now();
    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if now.duration_since(when).is_ok_and(|age| age > MAX_AGE) {
            let _ = std::fs::remove_file(&path);
        } else {
            found.push((when, path));
        }
    }
    if found.len() >= MAX_ENTRIES {
        found.sort();
        for (_, path) in &found[..=found.len() - MAX_ENTRIES] {
            let _ = std::fs::remove_file(path);
        }
    }
}

//! Partial uploads kept for `RESUME` (`PROTOCOL.md` section 5.11): one file per (principal,
//! name, size) in `.barge/partial/`, named by a hash of that key so that the key needs no
//! escaping and another principal's partial can never be named, let alone continued.
//!
//! Unlike `.barge/tmp/` (wiped at start: plain uploads that were cut off), this folder survives
//! a restart. What bounds it (README, resource model): a partial expires `partial_ttl` after its
//! last byte arrived; at most `max_partials` are kept (starting one more drops the oldest); and
//! its bytes are on the disk, so the free-space check of every upload already counts them.
//!
//! The bytes of a partial are never trusted: a resume hashes them again from disk, and the
//! upload is committed only if the whole file's MD5 is the one the client declared.

use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::store::{PartialKey, StoreError};

/// The folder of partial uploads, inside the state folder.
pub(super) const PARTIAL_DIR: &str = "partial";

const SUFFIX: &str = ".part";

/// The file name of the partial upload for `key`: the SHA-256 of the key's parts, each
/// length-prefixed (so no two keys share an encoding), in hex.
pub(crate) fn leaf(key: &PartialKey) -> String {
    let mut h = Sha256::new();
    for part in [key.owner.as_bytes(), key.name.as_str().as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(key.size.to_le_bytes());
    format!("{}{SUFFIX}", hex::encode(h.finalize()))
}

/// Opens (creating if needed) the partial for `leaf`, after dropping expired partials and, if
/// this one is new and the folder is full, the oldest others. Returns the file, positioned at
/// its end, and its length.
pub(super) fn open(
    dir: &OwnedFd,
    leaf: &str,
    size: u64,
    ttl: Duration,
    max: usize,
) -> Result<(std::fs::File, u64), StoreError> {
    let kept = sweep(dir, ttl);
    let exists = kept.iter().any(|(l, _)| l == leaf);
    if !exists && max > 0 && kept.len() >= max {
        // Oldest first; drop enough to make room for this one.
        let mut by_age = kept;
        by_age.sort_by_key(|(_, t)| *t);
        for (old, _) in by_age.iter().take(by_age.len() + 1 - max) {
            let _ = rustix::fs::unlinkat(dir, old.as_str(), AtFlags::empty());
        }
    }
    let fd = rustix::fs::openat(
        dir,
        leaf,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(StoreError::io_on("opening a partial upload", None))?;
    let file = std::fs::File::from(fd);
    let len = file
        .metadata()
        .map_err(StoreError::io_on("reading a partial upload", None))?
        .len();
    if len > size {
        // Cannot happen for a file made by this code (the size is part of its key); start over.
        file.set_len(0)
            .map_err(StoreError::io_on("truncating a partial upload", None))?;
        return Ok((file, 0));
    }
    Ok((file, len))
}

/// Removes expired partials and anything in the folder that is not a partial; returns the
/// partials kept, with their last change time.
pub(super) fn sweep(dir: &OwnedFd, ttl: Duration) -> Vec<(String, SystemTime)> {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut kept = Vec::new();
    let mut expired = 0;
    for entry in entries.flatten() {
        let raw = entry.file_name();
        if raw.to_bytes() == b"." || raw.to_bytes() == b".." {
            continue;
        }
        let Ok(name) = raw.to_str() else {
            let _ = rustix::fs::unlinkat(dir, raw, AtFlags::empty());
            continue;
        };
        let modified = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .filter(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file())
            .map(|st| {
                SystemTime::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(st.st_mtime).unwrap_or(0),
                        u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                    )
            });
        let wellformed = name.len() == 64 + SUFFIX.len() && name.ends_with(SUFFIX);
        match modified {
            Some(t) if wellformed => {
                if now.duration_since(t).unwrap_or_default() > ttl {
                    let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
                    expired += 1;
                } else {
                    kept.push((name.to_owned(), t));
                }
            }
            _ => {
                let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
            }
        }
    }
    if expired > 0 {
        tracing::info!("dropped {expired} expired partial upload(s)");
    }
    kept
}

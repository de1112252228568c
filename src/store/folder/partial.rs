//! Partial uploads kept for `RESUME` (`PROTOCOL.md` section 5.11): one file per (principal,
//! name, size) in `.barge/partial/`, named by a hash of that key so that the key needs no
//! escaping and another principal's partial can never be named, let alone continued.
//!
//! Unlike `.barge/tmp/` (wiped at start: plain uploads that were cut off), this folder survives
//! a restart. What bounds it (README, resource model): a partial expires `partial_ttl` after its
//! last byte arrived; at most `max_partials` are kept besides those being written (starting one
//! more drops the oldest that no upload is writing); and
//! its bytes are on the disk, so the free-space check of every upload already counts them.
//!
//! Beside each partial, `HASH.md5` may hold the MD5 state of its first bytes (saved when the
//! upload breaks off, and every [`CHECKPOINT`] bytes while it runs), so that a resume hashes
//! only what the state does not cover. The state names the partial it belongs to (device,
//! inode, leaf) and is used only if it covers no more than the partial holds; a partial only
//! ever grows (it is truncated only here, when it is dropped or restarted, and its state with
//! it), so such a state is still the state of its first bytes. A missing, damaged or foreign
//! state means hashing the partial again from disk. Either way the upload is committed only if
//! the whole file's MD5 is the one the client declared.

use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::md5_state::{self, ResumableMd5};
use crate::store::{PartialKey, StoreError};

/// The folder of partial uploads, inside the state folder.
pub(super) const PARTIAL_DIR: &str = "partial";

const SUFFIX: &str = ".part";

/// The suffix of a partial's saved MD5 state (in place of [`SUFFIX`]).
const STATE_SUFFIX: &str = ".md5";

/// The suffix of a state being written, renamed over the state when complete.
const STATE_NEW: &str = ".md5-new";

/// A running resumable upload saves its MD5 state every this many bytes, so that even a server
/// killed mid-upload seldom has more than this much to hash again.
pub(super) const CHECKPOINT: u64 = 128 << 20;

/// A state file is one record of one state: anything longer is not ours.
const STATE_MAX_BYTES: u64 = 1024;

/// Hex digits of a partial's file name that tell its owner apart (a hash of the owner).
const OWNER_HEX: usize = 16;

/// Hex digits of a partial's file name before its suffix: the owner's, then the key's.
const LEAF_HEX: usize = OWNER_HEX + 64;

/// The file name of the partial upload for `key`: a hash of its owner (the first
/// [`OWNER_HEX`] hex digits of the SHA-256 of the owner), then the SHA-256 of the key's parts,
/// each length-prefixed (so no two keys share an encoding), in hex. The owner's part lets the
/// cap on partials take from the owner who holds the most, never from another one's few.
pub(crate) fn leaf(key: &PartialKey) -> String {
    let owner = Sha256::digest(key.owner.as_bytes());
    let mut h = Sha256::new();
    for part in [key.owner.as_bytes(), key.name.as_str().as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(key.size.to_le_bytes());
    let owner = hex::encode(owner);
    format!(
        "{}{}{SUFFIX}",
        &owner[..OWNER_HEX],
        hex::encode(h.finalize())
    )
}

/// Opens (creating if needed) the partial for `leaf`, after dropping expired partials and, if
/// this one is new and the folder is full, others that no upload is writing (`busy`: those are
/// bounded by the number of connections, not by `max`): each time the oldest of the owner who
/// holds the most (this one counted), so that one principal starting many uploads drops its
/// own, not the few of others. Returns the file, positioned at its end, and its length.
pub(super) fn open(
    dir: &OwnedFd,
    leaf: &str,
    size: u64,
    ttl: Duration,
    max: usize,
    busy: &std::collections::HashSet<String>,
) -> Result<(std::fs::File, u64), StoreError> {
    let kept: Vec<_> = sweep(dir, ttl, busy)
        .into_iter()
        .filter(|(l, _)| !busy.contains(l))
        .collect();
    let exists = kept.iter().any(|(l, _)| l == leaf);
    if !exists && max > 0 && kept.len() >= max {
        for old in to_drop(kept, leaf, max) {
            let _ = rustix::fs::unlinkat(dir, old.as_str(), AtFlags::empty());
            remove_state(dir, &old);
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
    if len > size || len == 0 {
        // A new partial: no state may describe it. (Longer than its size cannot happen for a
        // file made by this code, the size being part of its key; start over.)
        remove_state(dir, leaf);
        if len > 0 {
            file.set_len(0)
                .map_err(StoreError::io_on("truncating a partial upload", None))?;
        }
        return Ok((file, 0));
    }
    Ok((file, len))
}

/// Which of `kept` to drop so that `leaf`, a new partial, makes no more than `max`: each time
/// the oldest of the owner with the most partials, `leaf`'s owner counted with its new one (a
/// tie goes to the owner whose oldest is oldest).
fn to_drop(kept: Vec<(String, SystemTime)>, leaf: &str, max: usize) -> Vec<String> {
    let owner = |l: &str| l.get(..OWNER_HEX).unwrap_or_default().to_owned();
    let mut by_owner: std::collections::HashMap<String, Vec<(String, SystemTime)>> =
        std::collections::HashMap::new();
    let mut total = kept.len();
    for (l, t) in kept {
        by_owner.entry(owner(&l)).or_default().push((l, t));
    }
    for list in by_owner.values_mut() {
        // Newest first: the oldest is popped from the end.
        list.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    }
    let newcomer = owner(leaf);
    let mut dropped = Vec::new();
    while total + 1 > max {
        let count =
            |o: &String, list: &Vec<(String, SystemTime)>| list.len() + usize::from(*o == newcomer);
        let Some(list) = by_owner
            .iter_mut()
            .filter(|(_, list)| !list.is_empty())
            .max_by(|(a, la), (b, lb)| {
                let oldest = |l: &Vec<(String, SystemTime)>| l.last().map(|(_, t)| *t);
                count(a, la)
                    .cmp(&count(b, lb))
                    .then_with(|| oldest(lb).cmp(&oldest(la)))
            })
            .map(|(_, list)| list)
        else {
            break;
        };
        if let Some((old, _)) = list.pop() {
            dropped.push(old);
        }
        total -= 1;
    }
    dropped
}

/// The leaf of the saved state of the partial `leaf`.
fn state_leaf(leaf: &str) -> String {
    format!(
        "{}{STATE_SUFFIX}",
        leaf.strip_suffix(SUFFIX).unwrap_or(leaf)
    )
}

/// What a state of the partial `leaf`, open as `file`, is tied to: its leaf, device and inode.
fn identity(leaf: &str, file: &std::fs::File) -> Option<Vec<u8>> {
    let st = rustix::fs::fstat(file).ok()?;
    let mut tag = leaf.as_bytes().to_vec();
    tag.extend_from_slice(&st.st_dev.to_le_bytes());
    tag.extend_from_slice(&st.st_ino.to_le_bytes());
    Some(tag)
}

/// Saves `hasher` as the state of the first `hasher.len()` bytes of the partial `leaf`, open
/// as `file`: written to a new file and renamed over the old state, so a reader sees the old
/// state or the new one, never a torn one. Best effort: a failure only costs a re-hash later.
pub(super) fn save_state(dir: &OwnedFd, leaf: &str, file: &std::fs::File, hasher: &ResumableMd5) {
    let Some(tag) = identity(leaf, file) else {
        return;
    };
    let record = md5_state::encode(&tag, std::slice::from_ref(hasher));
    let new = format!("{}{STATE_NEW}", leaf.strip_suffix(SUFFIX).unwrap_or(leaf));
    let written = rustix::fs::openat(
        dir,
        new.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(std::io::Error::from)
    .and_then(|fd| std::io::Write::write_all(&mut std::fs::File::from(fd), &record));
    let renamed = written.is_ok()
        && rustix::fs::renameat(dir, new.as_str(), dir, state_leaf(leaf).as_str()).is_ok();
    if !renamed {
        let _ = rustix::fs::unlinkat(dir, new.as_str(), AtFlags::empty());
    }
}

/// The saved state of the partial `leaf`, open as `file` and `len` bytes long, if there is one
/// that belongs to it and covers no more than it holds.
pub(super) fn load_state(
    dir: &OwnedFd,
    leaf: &str,
    file: &std::fs::File,
    len: u64,
) -> Option<ResumableMd5> {
    let tag = identity(leaf, file)?;
    let fd = rustix::fs::openat(
        dir,
        state_leaf(leaf).as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), STATE_MAX_BYTES),
        &mut bytes,
    )
    .ok()?;
    let mut states = md5_state::decode(&tag, &bytes, 1)?;
    let state = states.pop()?;
    (state.len() <= len).then_some(state)
}

/// Removes the saved state of the partial `leaf`, if any.
pub(super) fn remove_state(dir: &OwnedFd, leaf: &str) {
    let _ = rustix::fs::unlinkat(dir, state_leaf(leaf).as_str(), AtFlags::empty());
}

/// Removes expired partials (never one in `busy`, being written), the states of partials that
/// are gone, and anything in the folder
/// that is neither; returns the partials kept, with their last change time.
pub(super) fn sweep(
    dir: &OwnedFd,
    ttl: Duration,
    busy: &std::collections::HashSet<String>,
) -> Vec<(String, SystemTime)> {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut kept = Vec::new();
    let mut states = Vec::new();
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
        // (Partials named by an older build, 64 hex digits without an owner's, are dropped.)
        let wellformed = name.len() == LEAF_HEX + SUFFIX.len() && name.ends_with(SUFFIX);
        if modified.is_some()
            && ((name.len() == LEAF_HEX + STATE_SUFFIX.len() && name.ends_with(STATE_SUFFIX))
                || (name.len() == LEAF_HEX + STATE_NEW.len() && name.ends_with(STATE_NEW)))
        {
            // Judged once the partials are known (below).
            states.push(name.to_owned());
            continue;
        }
        match modified {
            Some(t) if wellformed => {
                if now.duration_since(t).unwrap_or_default() > ttl && !busy.contains(name) {
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
    for state in states {
        // A state whose partial is kept stays; a `-new` one is being written (or was cut off:
        // it is overwritten by the next save, and removed with its partial).
        let partial = format!("{}{SUFFIX}", &state[..LEAF_HEX]);
        if !kept.iter().any(|(l, _)| *l == partial) {
            let _ = rustix::fs::unlinkat(dir, state.as_str(), AtFlags::empty());
        }
    }
    if expired > 0 {
        tracing::info!("dropped {expired} expired partial upload(s)");
    }
    kept
}

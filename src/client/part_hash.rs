//! The MD5 of a download's kept `.part` file (`PROTOCOL.md` section 5.12), computed by a worker
//! that follows the file as it grows and saves its state beside it, so that a resumed download
//! hashes only the bytes after the last saved state instead of the whole part again.
//!
//! The state lives in `PART.md5` (next to `.NAME.ID.barge-part`), tied to the part's absolute
//! path, device and inode and used only if it covers no more than the part holds. A part only
//! grows while it is kept (a new download of the same target truncates it, and removes the
//! state first), so such a state is the state of its first bytes. Damaged, foreign or missing:
//! the part is hashed from 0. Whatever the state, the whole file's MD5 is compared with the
//! server's id before the part becomes the target, so a wrong state costs a download, never a
//! wrong file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::md5_state::{self, ResumableMd5};

/// The spacing of saved states while a part is written.
fn every() -> u64 {
    super::resume::test_md5_every().unwrap_or(64 << 20)
}

/// A state file is one record of one state: anything longer is not ours.
const STATE_MAX_BYTES: u64 = 1024;

/// Where the saved state of `part` lives.
pub(super) fn state_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".md5");
    PathBuf::from(name)
}

/// What a state of `part`, open as `file`, is tied to.
fn identity(part: &Path, file: &std::fs::File) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().ok()?;
    let mut tag = std::path::absolute(part)
        .ok()?
        .into_os_string()
        .into_encoded_bytes();
    tag.push(0);
    tag.extend_from_slice(&meta.dev().to_le_bytes());
    tag.extend_from_slice(&meta.ino().to_le_bytes());
    Some(tag)
}

/// The saved state of `part` (open as `file`, `len` bytes long), if it is valid for it.
pub(super) fn load(part: &Path, file: &std::fs::File, len: u64) -> Option<ResumableMd5> {
    use std::io::Read as _;
    let tag = identity(part, file)?;
    let mut bytes = Vec::new();
    std::fs::File::open(state_path(part))
        .ok()?
        .take(STATE_MAX_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let state = md5_state::decode(&tag, &bytes, 1)?.pop()?;
    (state.len() <= len).then_some(state)
}

/// Saves `state` as the state of `part`: a new file renamed over the old. Best effort.
fn save(part: &Path, file: &std::fs::File, state: &ResumableMd5) {
    let Some(tag) = identity(part, file) else {
        return;
    };
    let target = state_path(part);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(mut tmp) = tempfile::Builder::new()
        .prefix(".barge-md5-")
        .tempfile_in(dir)
    else {
        return;
    };
    if std::io::Write::write_all(
        &mut tmp,
        &md5_state::encode(&tag, std::slice::from_ref(state)),
    )
    .is_ok()
    {
        let _ = tmp.persist(&target);
    }
}

/// Removes the saved state of `part`, if any.
pub(super) fn remove(part: &Path) {
    let _ = std::fs::remove_file(state_path(part));
}

/// A worker hashing a part as it grows to `size` bytes.
pub(super) struct Follower {
    stop: StopOnDrop,
    job: tokio::task::JoinHandle<std::io::Result<ResumableMd5>>,
}

impl Follower {
    /// Starts hashing `file` (the part at `part`) from `state` on, following it until it holds
    /// `size` bytes or [`finish`](Self::finish) says no more will come.
    pub(super) fn start(file: std::fs::File, part: &Path, state: ResumableMd5, size: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let part = part.to_owned();
        let stopped = Arc::clone(&stop);
        let job = tokio::task::spawn_blocking(move || follow(&file, &part, state, size, &stopped));
        Self {
            stop: StopOnDrop(stop),
            job,
        }
    }

    /// Waits for the hash of everything written. `complete` says whether all `size` bytes were
    /// received; when not, the worker hashes what is there, saves the state and stops.
    ///
    /// # Errors
    /// A failed read of the part.
    pub(super) async fn finish(self, complete: bool) -> std::io::Result<ResumableMd5> {
        if !complete {
            self.stop.0.store(true, Ordering::Release);
        }
        self.job
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Tells the worker to stop when its [`Follower`] is dropped: an abandoned worker (its task was
/// cancelled) saves its state and stops rather than waits for bytes that will not come.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn follow(
    file: &std::fs::File,
    part: &Path,
    mut state: ResumableMd5,
    size: u64,
    stop: &AtomicBool,
) -> std::io::Result<ResumableMd5> {
    let every = every();
    let mut saved = state.len();
    tracing::debug!("hashing {} from byte {}", part.display(), state.len());
    loop {
        // Read the flag before the length: once told to stop, one last look takes everything
        // that was written before.
        let stopping = stop.load(Ordering::Acquire);
        let len = file.metadata()?.len().min(size);
        if state.len() < len {
            let to = len.min((state.len() / every + 1).saturating_mul(every));
            state.hash_file_to(file, to)?;
            if state.len() - saved >= every && state.len() < size {
                save(part, file, &state);
                saved = state.len();
            }
            continue;
        }
        if state.len() >= size {
            return Ok(state);
        }
        if stopping {
            if state.len() > saved {
                save(part, file, &state);
            }
            return Ok(state);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

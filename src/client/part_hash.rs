//! The saved MD5 state of a download's kept `.part` file (`PROTOCOL.md` section 5.12): the
//! download hashes what it writes (`transfer::Sink::resuming`) and saves the state of the
//! part's first bytes beside it as it grows and when it breaks off, so that a resumed download
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

use crate::md5_state::{self, ResumableMd5};

/// The spacing of saved states while a part is written.
pub(super) fn every() -> u64 {
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
pub(super) fn save(part: &Path, file: &std::fs::File, state: &ResumableMd5) {
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

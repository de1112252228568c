//! The client's side of the disk: where a download lands, the checks on a name before it
//! touches our folder, temporary files, and moving a verified file into place.
//!
//! Everything here trusts nothing from the server: a name becomes at most one path component,
//! and nothing unverified ever takes a target's name. It does no network I/O.

use std::path::{Component, Path, PathBuf};

use super::{ClientError, Destination};
use crate::name::FileName;
use crate::protocol::FileRef;
use crate::transfer;

/// The last component of a server name, as a path that cannot leave the folder it is joined to.
pub(super) fn leaf(name: &FileName) -> Result<&Path, ClientError> {
    let leaf = Path::new(name.split_parent().1);
    // `FileName` already rules out `..`, separators and prefixes; check again against the
    // platform's own idea of a path, since this is the line between the server and our disk.
    let mut parts = leaf.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Ok(leaf),
        _ => Err(ClientError::Protocol(format!("unsafe file name {name}"))),
    }
}

pub(super) async fn exists(path: &Path) -> bool {
    // `symlink_metadata`: a dangling symlink is still something we must not replace.
    tokio::fs::symlink_metadata(path).await.is_ok()
}

/// [`exists`], for code already on a blocking thread.
pub(super) fn exists_now(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Where a download of `file` goes, when that is known before asking: an exact path, or a
/// folder and a name (an id only tells the name once the server answers).
pub(super) fn known_target(
    file: &FileRef,
    dest: &Destination,
) -> Result<Option<PathBuf>, ClientError> {
    match (dest, &file.name, &file.id) {
        (Destination::File(path), _, _) => Ok(Some(path.clone())),
        (Destination::Dir(dir), Some(name), None) => Ok(Some(dir.join(leaf(name)?))),
        (Destination::Dir(_), _, _) => Ok(None),
    }
}

/// Where a download of `file` goes, once the server has said which file it is (`name`).
pub(super) fn target(
    file: &FileRef,
    dest: &Destination,
    name: &FileName,
) -> Result<PathBuf, ClientError> {
    match dest {
        Destination::Dir(dir) => {
            let leaf = leaf(name)?;
            // A name the server chose (the user gave an id) must not quietly create a
            // dot-file such as `.bashrc` or `.profile` in the user's folder.
            let chosen_by_server = file.name.as_ref() != Some(name);
            if chosen_by_server && leaf.as_os_str().as_encoded_bytes().starts_with(b".") {
                return Err(ClientError::HiddenName {
                    name: name.to_string(),
                });
            }
            Ok(dir.join(leaf))
        }
        Destination::File(path) => Ok(path.clone()),
    }
}

/// Opens a local file for upload, checks that it is a regular file, and gives its size: one
/// trip to the blocking pool.
pub(super) async fn open_regular(
    path: &Path,
    follow: Follow,
) -> Result<(std::fs::File, u64), ClientError> {
    let owned = path.to_owned();
    transfer::blocking(move || open_regular_now(&owned, follow))
        .await
        .map_err(ClientError::io(path))?
}

/// Whether opening a local file may follow a symlink in its last component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Follow {
    /// A path the user named: a symlink is followed, as every tool does.
    Yes,
    /// A path found by walking a folder: a symlink swapped in after the walk is not followed,
    /// so nothing outside the folder is read.
    No,
}

/// [`open_regular`], for code already on a blocking thread.
///
/// A FIFO, socket or device is refused before it is opened (opening a FIFO for reading waits
/// for a writer, forever if none comes), and opened without blocking in case one was swapped
/// in after the check; the open file is checked again, so only a regular file is ever read.
pub(super) fn open_regular_now(
    path: &Path,
    follow: Follow,
) -> Result<(std::fs::File, u64), ClientError> {
    let meta = match follow {
        Follow::Yes => std::fs::metadata(path),
        Follow::No => std::fs::symlink_metadata(path),
    }
    .map_err(ClientError::io(path))?;
    check_regular(path, &meta)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut flags = rustix::fs::OFlags::NONBLOCK;
        if follow == Follow::No {
            flags |= rustix::fs::OFlags::NOFOLLOW;
        }
        options.custom_flags(i32::try_from(flags.bits()).unwrap_or_default());
    }
    let file = options.open(path).map_err(ClientError::io(path))?;
    let meta = file.metadata().map_err(ClientError::io(path))?;
    check_regular(path, &meta)?;
    Ok((file, meta.len()))
}

fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), ClientError> {
    if meta.is_dir() {
        return Err(ClientError::IsAFolder {
            path: path.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(ClientError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// How much of a chunk of `max` bytes the `left` bytes of a body fill.
pub(super) fn chunk_len(left: u64, max: usize) -> usize {
    usize::try_from(left).map_or(max, |left| left.min(max))
}

/// A temporary file in the target's folder, so the final rename never crosses filesystems.
pub(super) fn temp_file_for(target: &Path) -> Result<tempfile::NamedTempFile, ClientError> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".barge-").suffix(".part");
    #[cfg(unix)]
    {
        // The default (0600) would stick to the downloaded file; let the umask decide instead,
        // as for any other new file.
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(ClientError::io(dir))
}

/// Moves a verified temporary file to its target.
pub(super) async fn persist(
    temp: tempfile::NamedTempFile,
    target: &Path,
    overwrite: bool,
) -> Result<(), ClientError> {
    let to = target.to_owned();
    transfer::blocking(move || persist_now(temp, &to, overwrite))
        .await
        .map_err(ClientError::io(target))?
}

/// [`persist`], for code already on a blocking thread.
pub(super) fn persist_now(
    temp: tempfile::NamedTempFile,
    target: &Path,
    overwrite: bool,
) -> Result<(), ClientError> {
    let result = if overwrite {
        temp.persist(target)
    } else {
        temp.persist_noclobber(target)
    };
    // On failure the temporary file comes back inside the error and is deleted with it.
    match result.map(drop).map_err(|e| e.error) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(ClientError::AlreadyExists {
                path: target.to_owned(),
            })
        }
        Err(e) => Err(ClientError::io(target)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_stay_inside() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(leaf(&FileName::parse("a/b/c.txt")?)?, Path::new("c.txt"));
        assert_eq!(leaf(&FileName::parse("x")?)?, Path::new("x"));
        Ok(())
    }

    #[test]
    fn chunk_lengths() {
        assert_eq!(chunk_len(10, 4), 4);
        assert_eq!(chunk_len(3, 4), 3);
        assert_eq!(chunk_len(u64::MAX, 4), 4);
    }
}

//! Private files on disk: created 0600, replaced atomically, refused when others can read them.
//!
//! Threats: a secret (private key, password hashes, token hashes, pins) readable by another local
//! user, even for the instant between `create` and `chmod`; a half-written file after a crash or
//! a full disk; two processes rewriting the same file and losing each other's change; a symlink
//! planted at the file's place. Nothing here knows what the files contain.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

/// Why a private file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file can be read or written by its group or by others.
    #[error(
        "`{path}` has mode {mode:03o}: it must not be accessible by group or others \
         (run `chmod 600 {path}`)",
        path = path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a regular file (a folder, a device, or a symlink, which is never followed).
    #[error("`{}` is not a regular file", .0.display())]
    NotRegular(PathBuf),
    /// The file is larger than any valid file of its kind.
    #[error("`{}` is {size} bytes long; the limit is {limit}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit for its kind.
        limit: u64,
    },
    /// An I/O error.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What identifies one version of a file cheaply: a changed file has a different stamp (an
/// atomic replacement changes the inode and the ctime, a chmod the mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    // ctime and mode catch a chmod (which must make a now-open file refused at once).
    ctime: i64,
    ctime_nsec: i64,
    mode: u32,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            mode: meta.mode(),
        }
    }
}

/// The stamp of the file at `path`, or `None` when there is none.
pub(crate) fn stamp(path: &Path) -> Result<Option<Stamp>, FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(Stamp::of(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::io(path, e)),
    }
}

/// Reads a private file of at most `limit` bytes; `None` when it does not exist.
///
/// The checks are made on the opened file (not on the path), so the file cannot be swapped
/// between the check and the read; a symlink is refused rather than followed.
pub(crate) fn read_private(path: &Path, limit: u64) -> Result<Option<(Vec<u8>, Stamp)>, FileError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(FileError::NotRegular(path.to_owned()));
        }
        Err(e) => return Err(FileError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| FileError::io(path, e))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(path.to_owned()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.size() > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: meta.size(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.size()).unwrap_or(0));
    // `take` keeps the limit even if the file grows while it is read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(Some((bytes, Stamp::of(&meta))))
}

/// A temporary file beside `path`, mode 0600 from its creation, holding `bytes`, flushed to disk.
fn staged(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, FileError> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".barge-tmp-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| FileError::io(dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| FileError::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FileError::io(tmp.path(), e))?;
    Ok(tmp)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename durable; a failure only weakens durability, never correctness, so it is ignored.
fn sync_dir(path: &Path) {
    if let Ok(dir) = File::open(parent(path)) {
        let _ = dir.sync_all();
    }
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new file, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = staged(path, bytes)?;
    tmp.persist(path)
        .map_err(|e| FileError::io(path, e.error))?;
    sync_dir(path);
    Ok(())
}

/// Creates `path` with `bytes` unless it exists; `Ok(false)` when it already existed (another
/// process won the race, and its file is kept).
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, FileError> {
    let tmp = staged(path, bytes)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(path);
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FileError::io(path, e.error)),
    }
}

/// Creates `dir` (and its parents) if needed; a folder it creates is private (0700).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FileError::io(dir, e))
}

/// An exclusive lock held on `<path>.lock` while a read-modify-write of `path` runs, so that two
/// processes (two `barge user add` at once) cannot lose each other's change. Released on drop.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    pub(crate) fn acquire(path: &Path) -> Result<Self, FileError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&lock_path)
            .map_err(|e| FileError::io(&lock_path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| FileError::io(&lock_path, e.into()))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn written_files_are_private_and_readable_back() -> Result<(), FileError> {
        let dir = tempfile::tempdir().map_err(|e| FileError::io(Path::new("tmp"), e))?;
        let path = dir.path().join("secret");
        assert!(write_new(&path, b"one")?);
        assert_eq!(mode_of(&path), 0o600);
        assert!(!write_new(&path, b"two")?, "write_new must not replace");
        let (bytes, first) =
            read_private(&path, 100)?.ok_or_else(|| FileError::NotRegular(path.clone()))?;
        assert_eq!(bytes, b"one");
        write_atomic(&path, b"three")?;
        assert_eq!(mode_of(&path), 0o600);
        let (bytes, second) =
            read_private(&path, 100)?.ok_or_else(|| FileError::NotRegular(path.clone()))?;
        assert_eq!(bytes, b"three");
        assert_ne!(first, second, "a replaced file has a new stamp");
        assert_eq!(stamp(&path)?, Some(second));
        Ok(())
    }

    #[test]
    fn open_modes_symlinks_and_big_files_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secret");
        std::fs::write(&path, b"x")?;
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, Permissions::from_mode(mode))?;
            assert!(
                matches!(read_private(&path, 100), Err(FileError::TooOpen { mode: m, .. }) if m == mode)
            );
        }
        std::fs::set_permissions(&path, Permissions::from_mode(0o600))?;
        assert!(read_private(&path, 100)?.is_some());
        assert!(matches!(
            read_private(&path, 0),
            Err(FileError::TooLarge { .. })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link)?;
        assert!(matches!(
            read_private(&link, 100),
            Err(FileError::NotRegular(_))
        ));
        assert!(read_private(&dir.path().join("missing"), 100)?.is_none());
        assert!(matches!(
            read_private(dir.path(), 100),
            Err(FileError::NotRegular(_))
        ));
        Ok(())
    }
}

//! Opening paths beneath the shared folder without ever following a symlink.
//!
//! Every path is walked one component at a time from an open handle on the shared folder, with
//! `O_NOFOLLOW` at each step. So a symlink anywhere in a path, including one swapped in for a
//! folder after a name was checked, makes the open fail instead of leading out of the folder.
//! `Path::join` is never used on a name from the network.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::name::FileName;

/// What identifies one version of a file on disk: if any of these changed, its id may have too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ino: u64,
}

impl Meta {
    pub(crate) fn of(st: &Stat) -> Self {
        #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
        // Field types vary by platform.
        let (secs, nanos) = (
            i64::try_from(st.st_mtime).unwrap_or(0),
            i64::try_from(st.st_mtime_nsec).unwrap_or(0),
        );
        Self {
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: secs.saturating_mul(1_000_000_000).saturating_add(nanos),
            #[allow(clippy::useless_conversion)]
            ino: u64::from(st.st_ino),
        }
    }
}

/// True when `st` describes a regular file (not a folder, symlink, FIFO or device).
pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens a folder directly inside `dir`, refusing symlinks.
pub(crate) fn open_dir_at(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Opens the shared folder itself (which may be reached through symlinks: the operator chose it).
pub(crate) fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the folder that holds `name` (walking its parent components), optionally creating
/// missing folders. Returns the folder and the last component.
pub(crate) fn open_parent<'n>(
    root: &OwnedFd,
    name: &'n FileName,
    create: bool,
) -> io::Result<(OwnedFd, &'n str)> {
    let (parent, leaf) = name.split_parent();
    let mut dir = rustix::io::dup(root)?;
    if let Some(parent) = parent {
        for comp in parent.split('/') {
            dir = match open_dir_at(&dir, comp) {
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    match rustix::fs::mkdirat(&dir, comp, Mode::from_raw_mode(0o755)) {
                        // The new folder's entry must be on disk before anything in it is
                        // acknowledged; a flush of the file's own folder does not cover it.
                        Ok(()) => sync_dir(&dir)?,
                        // Another upload created it meanwhile: fine.
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_dir_at(&dir, comp)?
                }
                other => other?,
            };
        }
    }
    Ok((dir, leaf))
}

/// Opens the regular file `name` for reading, refusing symlinks anywhere in the path, and
/// returns it with its metadata.
pub(crate) fn open_file(root: &OwnedFd, name: &FileName) -> io::Result<(File, Stat)> {
    let (dir, leaf) = open_parent(root, name, false)?;
    // NONBLOCK: opening a FIFO someone left in the folder must not hang the server.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(&dir, leaf, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if !is_regular(&st) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    Ok((File::from(fd), st))
}

/// Stats `name` without following symlinks; `Ok(None)` if nothing is there. A file or symlink
/// where one of its folders should be is an error (`NotADirectory` or `ELOOP`), not "nothing".
pub(crate) fn stat_name(root: &OwnedFd, name: &FileName) -> io::Result<Option<Stat>> {
    let (dir, leaf) = match open_parent(root, name, false) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The refusal for `name`, found taken at `leaf` of `dir` (a create or a rename that met
/// `EEXIST`): a folder's own, or a file's.
pub(crate) fn taken(dir: impl AsFd, leaf: &str, name: &FileName) -> crate::store::StoreError {
    match rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => taken_by(&st, name),
        Err(_) => crate::store::StoreError::Exists(name.clone()),
    }
}

/// The refusal for `name`, taken by what `st` describes.
pub(crate) fn taken_by(st: &Stat, name: &FileName) -> crate::store::StoreError {
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        crate::store::StoreError::FolderExists(name.clone())
    } else {
        crate::store::StoreError::Exists(name.clone())
    }
}

/// True for errors that mean "nothing usable at that path": missing, or a symlink or a file
/// where a folder was expected.
pub(crate) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Removes the folders of `name` that are empty, deepest first, stopping at the first that is
/// not (or is gone, or is not a folder): a file's folders go with their last file, so that
/// renames and deletes do not leave empty folders without end (issue 10, item 5). barge shares
/// files, not folders, so an empty folder has nothing to show. An upload linking into a folder
/// removed meanwhile finds it gone and creates it again ([`open_parent`] with `create`).
pub(crate) fn prune_empty_folders(root: &OwnedFd, name: &FileName) {
    let Some(mut folder) = name.split_parent().0 else {
        return;
    };
    loop {
        let (parent, leaf) = match folder.rsplit_once('/') {
            Some((p, l)) => (Some(p), l),
            None => (None, folder),
        };
        let dir = match parent {
            Some(p) => match FileName::parse(p)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
                .and_then(|p| open_folder(root, &p))
            {
                Ok(d) => d,
                Err(_) => return,
            },
            None => match rustix::io::dup(root) {
                Ok(d) => d,
                Err(_) => return,
            },
        };
        // `rmdir` removes only an empty folder, atomically: never a file someone just put in.
        if rustix::fs::unlinkat(&dir, leaf, AtFlags::REMOVEDIR).is_err() {
            return;
        }
        let _ = sync_dir(&dir);
        match parent {
            Some(p) => folder = p,
            None => return,
        }
    }
}

/// Opens the folder `name` itself, one component at a time, refusing symlinks.
fn open_folder(root: &OwnedFd, name: &FileName) -> io::Result<OwnedFd> {
    open_components(root, name.as_str())
}

/// Opens the folder at the `/`-separated `path` beneath `root` (`root` itself for `""`), one
/// component at a time, refusing symlinks.
fn open_components(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let mut dir = rustix::io::dup(root)?;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        dir = open_dir_at(&dir, comp)?;
    }
    Ok(dir)
}

/// Moves `from` (in `from_dir`) to `to` (in `to_dir`), never replacing anything: `EXIST` when
/// `to` exists. One `renameat2(RENAME_NOREPLACE)`; on a filesystem without it, a hard link
/// (which refuses to replace, too) and an unlink of `from`. Once the link is made the file is
/// at `to`, so a failed unlink is logged, not returned (`from` is left as a second name).
pub(crate) fn move_no_replace(
    from_dir: impl AsFd,
    from: &str,
    to_dir: impl AsFd,
    to: &str,
) -> rustix::io::Result<()> {
    use rustix::fs::RenameFlags;
    use rustix::io::Errno;
    match rustix::fs::renameat_with(&from_dir, from, &to_dir, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS) => {
            rustix::fs::linkat(&from_dir, from, &to_dir, to, AtFlags::empty())?;
            if let Err(e) = rustix::fs::unlinkat(&from_dir, from, AtFlags::empty()) {
                tracing::warn!("moved to {to}, but {from} could not be removed: {e}");
            }
            Ok(())
        }
        other => other,
    }
}

/// Makes a folder's entries durable (after a link, rename or unlink in it).
pub(crate) fn sync_dir(dir: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(dir)?)
}

/// Bytes and inodes available to unprivileged users on the filesystem holding `fd`. Inodes
/// are `None` on filesystems that report none at all (btrfs allocates them as needed).
pub(crate) fn free_space(fd: impl AsFd) -> io::Result<crate::store::Space> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok(crate::store::Space {
        bytes: st.f_bavail.saturating_mul(st.f_frsize),
        inodes: (st.f_files > 0).then_some(st.f_favail),
    })
}

/// One regular file found by [`walk`].
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) name: FileName,
    pub(crate) meta: Meta,
}

/// Why a walk could not see the whole folder: the listing it would give is incomplete, so it
/// gives none (issue 10, item 2).
#[derive(Debug)]
pub(crate) struct WalkError {
    /// The folder that could not be read (`""` for the shared folder itself).
    pub(crate) folder: String,
    pub(crate) source: io::Error,
}

/// The folders nearest the top whose descriptors a walk keeps open. Deeper ones are read whole,
/// closed while their subfolders are walked and reopened (from the deepest kept one, one
/// component at a time, never through a symlink) when the walk comes back to them: a walk holds
/// at most this many descriptors plus two, whatever the depth.
const KEPT_OPEN: usize = 8;

/// One folder on the walk's path: its entries, read in one go, and its descriptor if kept.
struct Level {
    fd: Option<OwnedFd>,
    entries: std::vec::IntoIter<String>,
    prefix: String,
}

/// The entries of a folder, except `.`, `..` and names that are not UTF-8 (never valid names).
fn read_names(fd: &OwnedFd) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        if let Ok(leaf) = std::str::from_utf8(bytes) {
            out.push(leaf.to_owned());
        }
    }
    Ok(out)
}

/// True for errors that mean the entry went away or was swapped for something that is not a
/// folder while the walk ran: not a failure of the walk (the listing is of what is there).
fn vanished(e: &rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    matches!(*e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
}

/// Lists every regular file beneath `root` whose name is valid, skipping symlinks, special
/// files, the state folder and names that break the naming rules (including names deeper
/// than the limit: such folders are not entered). Entries that vanish while it runs are
/// skipped; any other failure (too many open files, a folder that cannot be read, an I/O
/// error) fails the whole walk, so a listing is never silently short.
#[cfg(test)]
pub(crate) fn walk(root: &OwnedFd) -> Result<Vec<Found>, WalkError> {
    walk_under(root, "", &mut |_, _| {})
}

/// [`walk`] of the folder `folder` beneath `root` (`""` for all of it), calling `on_folder` with
/// each folder it enters (and its name) before reading its entries: how the watcher learns of
/// every folder without missing a file added while it is read. A `folder` that is not there
/// (gone, or not a folder, or reached through a symlink) holds nothing.
pub(crate) fn walk_under(
    root: &OwnedFd,
    folder: &str,
    on_folder: &mut dyn FnMut(&OwnedFd, &str),
) -> Result<Vec<Found>, WalkError> {
    let fail = |folder: &str, e: io::Error| WalkError {
        folder: folder.to_owned(),
        source: e,
    };
    let top = match open_components(root, folder) {
        Ok(fd) => fd,
        Err(e) if !folder.is_empty() && is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(fail(folder, e)),
    };
    on_folder(&top, folder);
    let entries = read_names(&top).map_err(|e| fail(folder, e))?;
    let mut out = Vec::new();
    let mut stack = vec![Level {
        fd: Some(top),
        entries: entries.into_iter(),
        prefix: folder.to_owned(),
    }];
    while let Some(depth) = stack.len().checked_sub(1) {
        let Some(leaf) = stack[depth].entries.next() else {
            stack.pop();
            continue;
        };
        if stack[depth].fd.is_none() {
            match reopen(&stack, depth) {
                Ok(fd) => stack[depth].fd = Some(fd),
                // Removed or swapped while its subfolders were walked: its rest is gone.
                Err(e) if is_absent(&e) => {
                    stack.pop();
                    continue;
                }
                Err(e) => return Err(fail(&stack[depth].prefix, e)),
            }
        }
        let level = &stack[depth];
        let Some(fd) = level.fd.as_ref() else {
            continue; // Set just above.
        };
        let rel = if level.prefix.is_empty() {
            leaf.clone()
        } else {
            format!("{}/{leaf}", level.prefix)
        };
        let Ok(name) = FileName::parse(&rel) else {
            // Covers the state folder at the top, and names a client could not use.
            continue;
        };
        let st = match rustix::fs::statat(fd, leaf.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(fail(&level.prefix, e.into())),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => out.push(Found {
                name,
                meta: Meta::of(&st),
            }),
            FileType::Directory => {
                let child = match open_dir_at(fd, &leaf) {
                    Ok(child) => child,
                    Err(e) if is_absent(&e) => continue,
                    Err(e) => return Err(fail(&rel, e)),
                };
                on_folder(&child, &rel);
                let entries = read_names(&child).map_err(|e| fail(&rel, e))?;
                if depth >= KEPT_OPEN {
                    stack[depth].fd = None;
                }
                stack.push(Level {
                    fd: Some(child),
                    entries: entries.into_iter(),
                    prefix: rel,
                });
            }
            _ => {} // Symlinks, FIFOs, sockets, devices: never shared.
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Opens the folder of `stack[depth]` again, from the deepest level above it that kept its
/// descriptor, one component at a time without following symlinks.
fn reopen(stack: &[Level], depth: usize) -> io::Result<OwnedFd> {
    let (anchor, from) = stack[..depth]
        .iter()
        .rev()
        .find_map(|l| l.fd.as_ref().map(|fd| (fd, l.prefix.as_str())))
        .ok_or_else(|| io::Error::other("no open folder to start from"))?;
    let rest = &stack[depth].prefix[from.len()..];
    let mut dir = rustix::io::dup(anchor)?;
    for comp in rest.split('/').filter(|c| !c.is_empty()) {
        dir = open_dir_at(&dir, comp)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Open descriptors of this process.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// A 31-level chain with files before and after the subfolder at every level, so the walk
    /// comes back to levels whose descriptor it closed and must reopen them; and every file is
    /// found, sorted, whatever the depth.
    #[test]
    fn deep_walks_find_everything_and_reopen_closed_levels() {
        let dir = tempfile::tempdir().unwrap();
        let mut want = Vec::new();
        let mut rel = String::new();
        for level in 0..31 {
            let here = dir.path().join(&rel);
            std::fs::create_dir_all(&here).unwrap();
            for leaf in ["a", "m", "z"] {
                std::fs::write(here.join(leaf), leaf).unwrap();
                want.push(if rel.is_empty() {
                    leaf.to_owned()
                } else {
                    format!("{rel}/{leaf}")
                });
            }
            rel = if rel.is_empty() {
                format!("d{level}")
            } else {
                format!("{rel}/d{level}")
            };
        }
        // At the deepest level a name may have (32 components): listed.
        std::fs::create_dir_all(dir.path().join(&rel)).unwrap();
        std::fs::write(dir.path().join(&rel).join("deepest"), b"x").unwrap();
        want.push(format!("{rel}/deepest"));
        // One level deeper: not a name, so not entered and not listed.
        std::fs::create_dir_all(dir.path().join(&rel).join("d31")).unwrap();
        std::fs::write(dir.path().join(&rel).join("d31/too-deep"), b"x").unwrap();
        want.sort();
        let root = open_root(dir.path()).unwrap();
        let found: Vec<String> = walk(&root)
            .unwrap()
            .into_iter()
            .map(|f| f.name.as_str().to_owned())
            .collect();
        assert_eq!(found, want);
    }

    /// A walk gives back every descriptor it opened (how few it holds at once is checked
    /// against a server with a capped limit, in `tests/it/budgets2.rs`).
    #[test]
    fn the_walk_keeps_few_descriptors_open() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join(vec!["d"; 31].join("/"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"x").unwrap();
        let root = open_root(dir.path()).unwrap();
        let before = open_fds();
        let found = walk(&root).unwrap();
        assert_eq!(found.len(), 1);
        // Other tests in this process open files meanwhile: allow for a few.
        assert!(open_fds() <= before + 4, "descriptors leaked");
    }
}

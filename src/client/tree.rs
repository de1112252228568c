//! Folders on the client's side: walking a local folder into uploads (`put -r`), and placing a
//! server folder's files inside a local one (`get -r`), plus the local MD5 that
//! `--skip-existing` compares.
//!
//! The line drawn here is the folder the user chose. A walk reads nothing outside it: symlinks
//! are skipped unless the caller asks to follow them, FIFOs and devices are skipped, and the
//! files are later opened without following a symlink swapped in since
//! ([`Client::put_many_within`](super::Client::put_many_within)). A download writes nothing
//! outside it: every server name is rebuilt from checked components below the folder, and the
//! folders on the way are created one by one, refusing any that is a symlink.
//!
//! Only files travel: the server has no empty folders to list, so an empty local folder is not
//! sent, and a folder download creates the folders its files need and no others.
//!
//! It does no network I/O; the pipelined transfers themselves are in `put_many`/`get_many`.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use crate::md5_state::ResumableMd5;

use super::local::leaf;
use super::{ClientError, PutItem};
use crate::name::{FileName, escape};
use crate::protocol::{FileId, ListingEntry};
use crate::transfer;

/// A local folder, walked: the files to upload and what was left out.
#[derive(Debug, Default)]
pub struct Walk {
    /// The regular files, with the names they go under and their sizes as the walk saw them,
    /// in name order.
    pub files: Vec<(PutItem, u64)>,
    /// Their total size in bytes, as the walk saw it.
    pub bytes: u64,
    /// What was left out, and why.
    pub skipped: Vec<Skipped>,
}

/// A local path a walk left out.
#[derive(Debug)]
pub struct Skipped {
    /// The local path.
    pub path: PathBuf,
    /// Why it was left out.
    pub why: SkipReason,
}

/// Why a walk left a path out.
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    /// A symlink, not followed (only files travel, and a link may point outside the folder).
    #[error("a symlink (not followed; -L follows symlinks)")]
    Symlink,
    /// A FIFO, socket or device: never read.
    #[error("not a regular file")]
    Special,
    /// Its path cannot be a server name (not UTF-8, a forbidden character, too long).
    #[error("cannot be stored under that name: {0}")]
    BadName(String),
    /// It could not be read (permissions, a symlink loop, gone during the walk).
    #[error("{0}")]
    Unreadable(String),
}

impl SkipReason {
    /// Whether it is only a note (symlinks are skipped on purpose, not failures).
    #[must_use]
    pub fn is_note(&self) -> bool {
        matches!(self, Self::Symlink)
    }
}

/// Walks the local folder `root`, giving each regular file under it the name
/// `prefix/<path below root>`. Symlinks are followed only with `follow_symlinks` (then a link
/// loop is skipped, not followed forever).
///
/// Runs on the blocking pool.
///
/// # Errors
/// [`ClientError::Io`] when `root` itself cannot be read, [`ClientError::NotAFile`] when it is
/// not a folder.
pub async fn walk(
    root: &Path,
    prefix: &FileName,
    follow_symlinks: bool,
) -> Result<Walk, ClientError> {
    let (root, prefix) = (root.to_owned(), prefix.clone());
    let at = root.clone();
    transfer::blocking(move || walk_now(&root, &prefix, follow_symlinks))
        .await
        .map_err(ClientError::io(at))?
}

fn walk_now(root: &Path, prefix: &FileName, follow: bool) -> Result<Walk, ClientError> {
    let meta = std::fs::metadata(root).map_err(ClientError::io(root))?;
    if !meta.is_dir() {
        return Err(ClientError::NotAFile {
            path: root.to_owned(),
        });
    }
    let mut walk = Walk::default();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(follow)
        .sort_by_file_name()
        .min_depth(1);
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().map_or_else(|| root.to_owned(), Path::to_owned);
                walk.skipped.push(Skipped {
                    path,
                    why: SkipReason::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        let path = entry.path().to_owned();
        let why = if kind.is_symlink() {
            Some(SkipReason::Symlink)
        } else if !kind.is_file() {
            Some(SkipReason::Special)
        } else {
            None
        };
        if let Some(why) = why {
            walk.skipped.push(Skipped { path, why });
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = match name_below(prefix, rel) {
            Ok(name) => name,
            Err(why) => {
                walk.skipped.push(Skipped { path, why });
                continue;
            }
        };
        let size = match entry.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => {
                walk.skipped.push(Skipped {
                    path,
                    why: SkipReason::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        walk.bytes = walk.bytes.saturating_add(size);
        walk.files.push((PutItem { path, name }, size));
    }
    Ok(walk)
}

/// `prefix/rel` as a server name, `/` between the components.
fn name_below(prefix: &FileName, rel: &Path) -> Result<FileName, SkipReason> {
    let mut name = prefix.as_str().to_owned();
    for part in rel.components() {
        let Component::Normal(part) = part else {
            return Err(SkipReason::BadName(escape(&rel.to_string_lossy())));
        };
        let Some(part) = part.to_str() else {
            return Err(SkipReason::BadName(format!(
                "{} is not valid UTF-8",
                escape(&part.to_string_lossy())
            )));
        };
        name.push('/');
        name.push_str(part);
    }
    FileName::parse(&name).map_err(|e| SkipReason::BadName(e.to_string()))
}

/// The entries of `listing` under the server folder `folder` (names starting `folder/`).
pub fn under<'a>(
    listing: &'a [ListingEntry],
    folder: &'a FileName,
) -> impl Iterator<Item = &'a ListingEntry> + 'a {
    listing.iter().filter(move |e| {
        e.name
            .as_str()
            .strip_prefix(folder.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Where the file `name` from the server folder `folder` goes below the local folder `into`:
/// `into/<last component of folder>/<path below folder>`, like `cp -r`. Every component is
/// checked to be a plain one, so the result is always inside `into`.
///
/// # Errors
/// [`ClientError::Protocol`] when `name` is not under `folder`, or a component is not a plain
/// one (a hostile name; the name check should have refused it already).
pub fn target_in(into: &Path, folder: &FileName, name: &FileName) -> Result<PathBuf, ClientError> {
    let unsafe_name = || ClientError::Protocol(format!("unsafe file name {name}"));
    let rest = name
        .as_str()
        .strip_prefix(folder.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(unsafe_name)?;
    let mut path = into.join(leaf(folder)?);
    for part in rest.split('/') {
        let mut parts = Path::new(part).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(p)), None) if p == part => path.push(p),
            _ => return Err(unsafe_name()),
        }
    }
    Ok(path)
}

/// Creates the folders between `into` (which must exist) and each path's parent, one
/// component at a time, refusing to go through anything that is not a real folder (a symlink
/// could lead outside `into`). Returns, per path in order, whether its folder is ready.
///
/// Runs on the blocking pool.
pub async fn make_parents(into: &Path, paths: Vec<PathBuf>) -> Vec<Result<(), ClientError>> {
    let into = into.to_owned();
    let count = paths.len();
    let at = into.clone();
    match transfer::blocking(move || make_parents_now(&into, &paths)).await {
        Ok(results) => results,
        Err(e) => {
            let e = e.to_string();
            (0..count)
                .map(|_| Err(ClientError::io(&at)(std::io::Error::other(e.clone()))))
                .collect()
        }
    }
}

fn make_parents_now(into: &Path, paths: &[PathBuf]) -> Vec<Result<(), ClientError>> {
    let mut ready: BTreeSet<PathBuf> = BTreeSet::new();
    paths
        .iter()
        .map(|path| {
            let parent = path.parent().unwrap_or(into);
            let below = parent.strip_prefix(into).map_err(|_| {
                ClientError::Protocol(format!("{} is outside the target", path.display()))
            })?;
            let mut at = into.to_owned();
            for part in below.components() {
                at.push(part);
                if ready.contains(&at) {
                    continue;
                }
                match std::fs::symlink_metadata(&at) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(ClientError::NotAFolder { path: at });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        match std::fs::create_dir(&at) {
                            Ok(()) => {}
                            // Made meanwhile: check what it is.
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                                    return Err(ClientError::NotAFolder { path: at });
                                }
                            }
                            Err(e) => return Err(ClientError::io(&at)(e)),
                        }
                    }
                    Err(e) => return Err(ClientError::io(&at)(e)),
                }
                ready.insert(at.clone());
            }
            Ok(())
        })
        .collect()
}

/// The MD5 of a local file, `None` if there is no regular file at `path` (what
/// `--skip-existing` compares with the server's id). Runs on the blocking pool.
///
/// # Errors
/// [`ClientError::Io`] when the file exists but cannot be read.
pub async fn local_id(path: &Path) -> Result<Option<FileId>, ClientError> {
    let owned = path.to_owned();
    transfer::blocking(move || local_id_now(&owned))
        .await
        .map_err(ClientError::io(path))?
}

fn local_id_now(path: &Path) -> Result<Option<FileId>, ClientError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {}
        _ => return Ok(None),
    }
    let (mut file, _) = super::local::open_regular_now(path, super::local::Follow::No)?;
    let mut hasher = ResumableMd5::new();
    let mut buf = vec![0u8; transfer::CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(ClientError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn name(s: &str) -> Result<FileName, crate::name::NameError> {
        FileName::parse(s)
    }

    #[test]
    fn targets_stay_inside_the_folder() -> TestResult {
        let into = Path::new("/dl");
        let folder = name("photos/2024")?;
        assert_eq!(
            target_in(into, &folder, &name("photos/2024/a b/é.jpg")?)?,
            Path::new("/dl/2024/a b/é.jpg")
        );
        // Not under the folder (a prefix of a component is not a folder).
        for other in ["photos/2024x/a", "photos/a", "photos/2024"] {
            assert!(target_in(into, &folder, &name(other)?).is_err(), "{other}");
        }
        Ok(())
    }

    #[test]
    fn under_means_below_a_whole_component() -> TestResult {
        let id = FileId([0; 16]);
        let entry = |n: &str| -> Result<ListingEntry, crate::name::NameError> {
            Ok(ListingEntry {
                id,
                name: name(n)?,
                size: 0,
            })
        };
        let listing = vec![entry("a/x")?, entry("ab/y")?, entry("a")?, entry("a/b/c")?];
        let folder = name("a")?;
        let got: Vec<&str> = under(&listing, &folder).map(|e| e.name.as_str()).collect();
        assert_eq!(got, ["a/x", "a/b/c"]);
        Ok(())
    }

    #[tokio::test]
    async fn walks_skip_symlinks_and_fifos_and_name_by_prefix() -> TestResult {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub/deeper"))?;
        std::fs::create_dir_all(root.join("empty"))?;
        std::fs::write(root.join("a.txt"), b"a")?;
        std::fs::write(root.join("sub/deeper/b c.txt"), b"bc")?;
        std::fs::write(dir.path().join("outside"), b"secret")?;
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link"))?;
            rustix::fs::mkfifoat(rustix::fs::CWD, root.join("fifo"), 0o600.into())?;
        }
        let walk = walk(&root, &name("up")?, false).await?;
        let names: Vec<&str> = walk.files.iter().map(|(i, _)| i.name.as_str()).collect();
        assert_eq!(names, ["up/a.txt", "up/sub/deeper/b c.txt"]);
        assert_eq!(walk.bytes, 3);
        #[cfg(unix)]
        {
            assert_eq!(walk.skipped.len(), 2, "{:?}", walk.skipped);
            assert!(
                walk.skipped
                    .iter()
                    .any(|s| matches!(s.why, SkipReason::Symlink))
            );
            assert!(
                walk.skipped
                    .iter()
                    .any(|s| matches!(s.why, SkipReason::Special))
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn parents_are_made_but_never_through_a_symlink() -> TestResult {
        let dir = tempfile::tempdir()?;
        let into = dir.path().join("into");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&into)?;
        std::fs::create_dir_all(&elsewhere)?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(&elsewhere, into.join("sneaky"))?;
        let paths = vec![into.join("a/b/c.txt"), into.join("sneaky/x/d.txt")];
        let results = make_parents(&into, paths).await;
        assert!(results[0].is_ok(), "{results:?}");
        assert!(into.join("a/b").is_dir());
        #[cfg(unix)]
        {
            assert!(results[1].is_err(), "{results:?}");
            assert_eq!(std::fs::read_dir(&elsewhere)?.count(), 0);
        }
        Ok(())
    }
}

//! Noticing what changes in the shared folder, so that a listing need not walk all of it
//! (issue 11): an inotify watch on every folder, and the names its events point at.
//!
//! The rule (README, "What a listing shows"): a listing checks on disk every name that an event
//! says changed since the last listing (added, replaced, removed, renamed, written to, its
//! times or mode changed), and walks again every folder that was created, removed or moved;
//! everything else is as the index knows it. Events are queued by the kernel as part of the
//! change itself, so a change finished before a `LIST` arrived is in the queue when the listing
//! drains it: the listing is as current as a walk would have made it.
//!
//! When the events cannot be trusted, the next listing walks the whole folder, as without a
//! watcher: at start, after the kernel's queue overflowed, when a watch could not be added
//! (the per-user watch limit, `fs.inotify.max_user_watches`; then every listing walks), when the
//! shared folder itself was moved, when more than [`MAX_CHANGED`] names are waiting, and at
//! least every [`FULL_WALK_EVERY`] (changes that make no event: writes through a shared
//! memory map, through a hard link from outside the folder, or by another machine on a network
//! filesystem).
//!
//! It decides nothing about ids: it only says which names and folders to look at again
//! ([`Inner::refresh`](super::Inner)).

use std::collections::{BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use super::lock;
use crate::name::FileName;
use crate::store::StoreError;

/// The most changed names (and folders) kept between two listings: past it, the next listing
/// walks the whole folder instead, so what the watcher holds stays bounded (a name is at most
/// 1 KiB: this is at most a few MiB, and far less for real names).
pub(super) const MAX_CHANGED: usize = 50_000;
/// The most folders watched: past it, the watcher gives up and every listing walks the folder.
/// A watch costs the kernel about 1 KiB, and the map below a name.
pub(super) const MAX_WATCHES: usize = 100_000;
/// A listing walks the whole folder at least this often, for changes that make no event.
pub(super) const FULL_WALK_EVERY: Duration = Duration::from_secs(600);

/// What a watched folder reports.
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// The inotify instance and what its events said so far.
#[derive(Debug)]
pub(super) struct Watcher {
    fd: OwnedFd,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Watch descriptor → the folder it watches (`""` for the shared folder).
    folders: HashMap<i32, String>,
    /// A whole walk ended since the events last stopped being trustworthy.
    synced: bool,
    /// Counts the times they stopped being trustworthy: a walk that began before one does not
    /// make them trustworthy again.
    breaks: u64,
    /// Watches cannot be added (a limit): every listing walks the whole folder.
    given_up: bool,
    /// When the last whole walk began.
    walked_at: Instant,
    /// Names to look at again.
    files: BTreeSet<FileName>,
    /// Folders to walk again.
    dirs: BTreeSet<String>,
}

/// What a listing must look at.
#[derive(Debug)]
pub(super) enum Changes {
    /// Everything: walk the whole folder, then report with [`Watcher::walked`].
    All { ticket: u64 },
    /// Only these names and folders (folders not nested in one another).
    Some {
        files: BTreeSet<FileName>,
        dirs: Vec<String>,
    },
}

impl Watcher {
    /// A watcher with no watch yet (the first walk adds them), or `None` where inotify or
    /// `/proc/self/fd` (how a watch is put on a folder already open) is not available.
    pub(super) fn new() -> Option<Self> {
        if !std::path::Path::new("/proc/self/fd").is_dir() {
            return None;
        }
        let fd = match inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!("cannot watch the shared folder ({e}); every listing walks it");
                return None;
            }
        };
        Some(Self {
            fd,
            state: Mutex::new(State {
                folders: HashMap::new(),
                synced: false,
                breaks: 0,
                given_up: false,
                walked_at: Instant::now(),
                files: BTreeSet::new(),
                dirs: BTreeSet::new(),
            }),
        })
    }

    /// Watches the open folder `dir`, named `name`. Called by walks before they read a folder,
    /// so a file added while it is read makes an event.
    pub(super) fn watch(&self, dir: &OwnedFd, name: &str) {
        let mut st = lock(&self.state);
        if st.given_up {
            return;
        }
        // The folder exactly as opened (no path is resolved again, so no symlink swapped in
        // meanwhile is followed).
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let full = st.folders.len() >= MAX_WATCHES;
        match inotify::add_watch(&self.fd, path.as_str(), EVENTS) {
            Ok(wd) if !full || st.folders.contains_key(&wd) => {
                st.folders.insert(wd, name.to_owned());
            }
            result => {
                let why = result.err().map_or_else(
                    || format!("more than {MAX_WATCHES} folders"),
                    |e| e.to_string(),
                );
                tracing::warn!(
                    "cannot watch every folder of the shared folder ({why}); every listing \
                     walks it (raise fs.inotify.max_user_watches)"
                );
                st.given_up = true;
                st.breaks += 1;
                st.synced = false;
                st.folders.clear();
                st.files.clear();
                st.dirs.clear();
            }
        }
    }

    /// Reads the events queued so far into the sets of what changed. Also called in the
    /// background, so that the kernel's queue does not overflow between listings.
    pub(super) fn drain(&self) {
        let mut st = lock(&self.state);
        self.drain_into(&mut st);
    }

    fn drain_into(&self, st: &mut State) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::INTR) => continue,
                // Nothing more queued (or a failure: then nothing can be trusted).
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    st.lost();
                    return;
                }
            };
            if st.given_up {
                continue;
            }
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) || flags.contains(ReadFlags::UNMOUNT) {
                st.lost();
                continue;
            }
            let Some(folder) = st.folders.get(&event.wd()) else {
                // A watch removed since (its events are stale), or not ours.
                continue;
            };
            let leaf = event
                .file_name()
                .and_then(|n| n.to_str().ok())
                .filter(|n| !n.is_empty());
            let Some(leaf) = leaf else {
                // About the watched folder itself: removed, moved, or its watch gone.
                if flags
                    .intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED)
                {
                    let folder = folder.clone();
                    if flags.contains(ReadFlags::IGNORED) {
                        st.folders.remove(&event.wd());
                    }
                    st.folder_changed(folder);
                }
                continue;
            };
            let name = if folder.is_empty() {
                leaf.to_owned()
            } else {
                format!("{folder}/{leaf}")
            };
            if flags.contains(ReadFlags::ISDIR) {
                // A folder's own times or mode changing changes nothing listed.
                // Nor does a folder that is no name (the state folder): it is never listed.
                if flags.intersects(
                    ReadFlags::CREATE
                        | ReadFlags::DELETE
                        | ReadFlags::MOVED_FROM
                        | ReadFlags::MOVED_TO,
                ) && FileName::parse(&name).is_ok()
                {
                    st.folder_changed(name);
                }
            } else if let Ok(name) = FileName::parse(&name) {
                // Not a name (the state folder, a name breaking the rules): never listed.
                st.files.insert(name);
                st.bound();
            }
        }
    }

    /// What the next listing must look at; forgets it (the caller looks at it now).
    pub(super) fn take(&self) -> Changes {
        let mut st = lock(&self.state);
        self.drain_into(&mut st);
        if st.given_up || !st.synced || st.walked_at.elapsed() >= FULL_WALK_EVERY {
            st.files.clear();
            st.dirs.clear();
            st.walked_at = Instant::now();
            return Changes::All { ticket: st.breaks };
        }
        let files = std::mem::take(&mut st.files);
        // Only the outermost: a walk of a folder covers the folders inside it.
        let all = std::mem::take(&mut st.dirs);
        let dirs: Vec<String> = all
            .iter()
            .filter(|d| !d.match_indices('/').any(|(at, _)| all.contains(&d[..at])))
            .cloned()
            .collect();
        // Their watches are set again by the walks of them: forget the old ones (a folder
        // moved elsewhere in the tree is watched under its new name).
        if !dirs.is_empty() {
            let stale: Vec<i32> = st
                .folders
                .iter()
                .filter(|(_, f)| dirs.iter().any(|d| within(f, d)))
                .map(|(wd, _)| *wd)
                .collect();
            for wd in stale {
                st.folders.remove(&wd);
                let _ = inotify::remove_watch(&self.fd, wd);
            }
        }
        Changes::Some { files, dirs }
    }

    /// A whole walk that [`take`](Self::take) asked for with `ticket` ended (`ok`: it saw the
    /// whole folder): the events can be trusted from its start on, unless they stopped being
    /// trustworthy meanwhile.
    pub(super) fn walked(&self, ticket: u64, ok: bool) {
        let mut st = lock(&self.state);
        if ok && st.breaks == ticket && !st.given_up {
            st.synced = true;
        }
    }

    /// True once the events can be trusted (a whole walk ended since they last could not).
    #[cfg(test)]
    pub(super) fn synced(&self) -> bool {
        lock(&self.state).synced
    }

    /// Asks for a whole walk at the next listing (tests; and a subtree walk that failed).
    pub(super) fn lose(&self) {
        lock(&self.state).lost();
    }
}

impl State {
    /// The events missed something: only a whole walk makes them trustworthy again.
    fn lost(&mut self) {
        self.breaks += 1;
        self.synced = false;
        self.files.clear();
        self.dirs.clear();
    }

    fn folder_changed(&mut self, folder: String) {
        if folder.is_empty() {
            // The shared folder itself.
            self.lost();
            return;
        }
        self.dirs.insert(folder);
        self.bound();
    }

    fn bound(&mut self) {
        if self.files.len() + self.dirs.len() > MAX_CHANGED {
            self.lost();
        }
    }
}

/// True when `name` is the folder `folder` or inside it.
pub(super) fn within(name: &str, folder: &str) -> bool {
    name == folder || inside(name, folder)
}

/// True when `name` is inside the folder `folder`.
pub(super) fn inside(name: &str, folder: &str) -> bool {
    name.strip_prefix(folder)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// How often the events are read between listings: often enough that the kernel's queue
/// (`fs.inotify.max_queued_events`, 16,384 by default) rarely fills.
const DRAIN_EVERY: Duration = Duration::from_millis(500);

/// Starts the thread that reads the events between listings; it ends with the backend.
pub(super) fn start_draining(inner: &std::sync::Arc<super::Inner>) -> Result<(), StoreError> {
    if inner.watcher.is_none() {
        return Ok(());
    }
    let weak = std::sync::Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("barge-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(DRAIN_EVERY);
                let Some(inner) = weak.upgrade() else { return };
                if let Some(w) = &inner.watcher {
                    w.drain();
                }
            }
        })
        .map_err(StoreError::io_on("starting the watch thread", None))?;
    Ok(())
}

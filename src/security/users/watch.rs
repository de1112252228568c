//! Whether the state folder may have changed: what lets [`Users::generation`](super::Users::generation)
//! skip the `stat` of the database before every command.
//!
//! A `stat` of `~/.config/barge/users.json` walks every component of the path, about 2 µs: for
//! a run of small pipelined uploads it was 6 % of the server's CPU (issue 11). An inotify watch
//! on the state folder answers the same question with one non-blocking `read` that finds
//! nothing: a change made through the folder (`barge user`, `barge token`, an editor's save, a
//! `chmod`) queues an event before the call that made it returns, so the next command sees it,
//! as with a `stat`. What the watch cannot see (the state folder itself renamed or replaced
//! with one of its parents, the file written through a hard link elsewhere) is caught by the
//! `stat` that is still made at least every [`RESTAT_EVERY`].
//!
//! Where inotify is not available, or the watch is lost (the folder removed or moved), every
//! call makes the `stat`, as before, and a new watch is tried a second later.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// The longest a change the watch cannot see goes unnoticed.
pub(super) const RESTAT_EVERY: Duration = Duration::from_secs(1);

/// Every change to an entry of the folder, and the folder's own end. A state folder that is a
/// symlink (dotfile managers make them) is followed: a retargeted symlink makes no event, and is
/// caught by the `stat` a second.
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

/// An inotify watch on one entry of a folder (through a watch on the folder).
#[derive(Debug)]
pub(super) struct DirWatch {
    fd: OwnedFd,
    /// The entry watched (the database's file name): events about the folder's other entries
    /// are read and dropped.
    name: String,
    /// The watch ended (the folder was removed or moved, or the queue overflowed and reading it
    /// failed): from then on it never vouches for anything.
    lost: bool,
}

impl DirWatch {
    /// A watch on the entry `name` of `dir`; `None` when `dir` does not exist or inotify is not
    /// available.
    pub(super) fn new(dir: &Path, name: &str) -> Option<Self> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
        inotify::add_watch(&fd, dir, EVENTS).ok()?;
        Some(Self {
            fd,
            name: name.to_owned(),
            lost: false,
        })
    }

    /// True once the watch has ended: it will never vouch for anything again.
    pub(super) fn lost(&self) -> bool {
        self.lost
    }

    /// True when nothing happened to the watched entry (or to the folder itself) since the last
    /// call (the events are read and dropped); false when something did, or the watch can no
    /// longer tell.
    pub(super) fn quiet(&mut self) -> bool {
        if self.lost {
            return false;
        }
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut quiet = true;
        loop {
            match reader.next() {
                Ok(event) => {
                    let end = ReadFlags::DELETE_SELF
                        | ReadFlags::MOVE_SELF
                        | ReadFlags::IGNORED
                        | ReadFlags::UNMOUNT
                        | ReadFlags::QUEUE_OVERFLOW;
                    if event.events().intersects(end) {
                        self.lost = true;
                    }
                    // Another entry of the folder (the index beside the database, temp
                    // files of an atomic write) says nothing about this one; an event
                    // without a name is about the folder itself.
                    let other = event
                        .file_name()
                        .is_some_and(|n| !n.is_empty() && n.to_bytes() != self.name.as_bytes());
                    if !other || self.lost {
                        quiet = false;
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return quiet,
                Err(_) => {
                    self.lost = true;
                    return false;
                }
            }
        }
    }
}

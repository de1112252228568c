//! The id index: which MD5 belongs to which file, in memory and persisted.
//!
//! The index is a cache of facts that can be recomputed from the folder: an entry is trusted only
//! while the file's size, mtime and inode still match what was hashed ([`Meta`]). So losing the
//! database costs a rehash, never a wrong id. It is kept in `redb` (crash-safe, embedded) by one
//! writer thread that commits changes in batches, so uploads never wait for a database commit.

// redb's error type is large, and these functions run once per batch: boxing buys nothing.
#![allow(clippy::result_large_err)]

use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hashbrown::HashTable;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::fsops::{self, Meta};
use crate::id::FileId;
use crate::name::FileName;

/// The database's file in the state folder.
pub(crate) const INDEX_FILE: &str = "index.redb";
/// Where an unreadable database is moved, for whoever wants to look at it.
const CORRUPT_FILE: &str = "index.redb.corrupt";

/// redb's page cache. Its default (1 GiB) kept every page read at start in memory: the whole
/// database, read once into the in-memory index and not read again. Writes go through it, and
/// it stays full once a large folder is indexed: 4 MiB were a tenth of the server's memory
/// with 100,000 files (issue 11). Only the writer thread reads pages again (the leaves a commit
/// changes), from the system's page cache.
const CACHE_BYTES: usize = 256 << 10;

/// name → (size, mtime in ns, inode, md5).
const FILES: TableDefinition<&str, (u64, i64, u64, [u8; 16])> = TableDefinition::new("files");

/// A hashed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) meta: Meta,
    pub(crate) id: FileId,
}

pub(crate) use super::files::Files;

impl Entry {
    /// The entry of a file listed by a backend with no disk versions to tell apart (memory).
    pub(crate) fn listed(id: FileId, size: u64) -> Self {
        Self {
            meta: Meta {
                size,
                mtime_ns: 0,
                ino: 0,
            },
            id,
        }
    }
}

/// The in-memory index. Both maps always describe the same set of files.
#[derive(Debug, Default)]
pub(crate) struct Index {
    files: Files,
    /// Every name of `files` once, placed by its entry's id: what finds the names of an id. It
    /// holds only the names (shared with `files`, 16 bytes each), not the ids: an id is looked
    /// up in `files` when the table needs it (to tell names apart, or to grow). An id → names
    /// map cost twice that per file, most of the index's memory after the names (issue 11).
    by_id: HashTable<FileName>,
    /// Files added, changed or removed since the index was loaded or last rebuilt
    /// ([`settle`](Self::settle)).
    changed: usize,
}

/// Changes after which [`Index::settle`] rebuilds the index in fresh memory (and at least a
/// quarter of its files, so a rebuild costs at most four entries copied per change): a burst
/// of hashing, not the trickle of uploads.
const REBUILD_AFTER: usize = 1000;

/// Where an id goes in `by_id`: an id is an MD5, so any 8 of its bytes are a good hash.
fn id_hash(id: &FileId) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = id.0;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

impl Index {
    pub(crate) fn get(&self, name: &FileName) -> Option<&Entry> {
        self.files.get(name.as_str())
    }

    /// The names that currently carry `id`, in name order.
    pub(crate) fn names_of(&self, id: &FileId) -> Vec<FileName> {
        let mut names: Vec<FileName> = self
            .by_id
            .iter_hash(id_hash(id))
            .filter(|n| self.files.get(n.as_str()).is_some_and(|e| e.id == *id))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// How many files it holds.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// Records `entry` for `name`; returns true if anything changed.
    pub(crate) fn insert(&mut self, name: FileName, entry: Entry) -> bool {
        if let Some(old) = self.files.get(name.as_str()) {
            if *old == entry {
                return false;
            }
            self.changed += 1;
            if old.id == entry.id {
                // Placed by the same id in `by_id` already.
                self.files.insert(name, entry);
                return true;
            }
            let old_id = old.id;
            self.unlink_id(&old_id, &name);
        }
        if self.files.insert(name.clone(), entry).is_none() {
            self.changed += 1;
        }
        let files = &self.files;
        // Every name in the table is in `files` (the invariant), so its id is found.
        self.by_id.insert_unique(id_hash(&entry.id), name, |n| {
            files.get(n.as_str()).map_or(0, |e| id_hash(&e.id))
        });
        true
    }

    /// Forgets `name`; returns the entry it had.
    pub(crate) fn remove(&mut self, name: &FileName) -> Option<Entry> {
        let old = self.files.remove(name.as_str())?;
        self.changed += 1;
        self.unlink_id(&old.id, name);
        Some(old)
    }

    fn unlink_id(&mut self, id: &FileId, name: &FileName) {
        if let Ok(found) = self.by_id.find_entry(id_hash(id), |n| n == name) {
            found.remove();
        }
    }

    /// Called once a burst of changes is over (a folder first indexed): if [`REBUILD_AFTER`]
    /// files or more changed since the index was loaded or last rebuilt, and a quarter of them
    /// at least, rebuilds it in fresh memory, as loading it at start does; otherwise packs its
    /// chunks ([`Files::compact`]).
    ///
    /// Why rebuild: the names a burst adds are allocated between the short-lived allocations
    /// of hashing and listing them (paths, buffers, chunks copied while a listing shares
    /// them), which are freed afterwards but leave the heap's pages partly used, so
    /// `malloc_trim` cannot give them back. Measured on 100,000 files (`bench/run --only
    /// list`): 21.7 to 22.6 MiB of anonymous memory after the first indexing against 15.1
    /// after a restart, for the same 13.9 MB in use. Rebuilding frees the old names and
    /// chunks first and hands their space back to malloc as whole blocks, so the new ones
    /// are packed into it; the caller then gives back the rest ([`heap`](crate::heap)). It
    /// takes a copy of every name and entry meanwhile (about 70 bytes a file for 22-byte
    /// names) and holds the index for 35 to 64 ms per 100,000 files (measured), once per
    /// burst.
    pub(crate) fn settle(&mut self) {
        if self.changed < REBUILD_AFTER.max(self.len() / 4) {
            self.files.compact();
            return;
        }
        let started = std::time::Instant::now();
        let mut names = String::new();
        let mut slots = Vec::with_capacity(self.files.len());
        for (name, entry) in self.files.iter() {
            names.push_str(name.as_str());
            slots.push((names.len(), *entry));
        }
        *self = Self::default();
        // What the old names and chunks took, merged with the free space around it into
        // whole free blocks (malloc otherwise keeps each freed name in a list of blocks its
        // size, and hands the same places out again for the new ones).
        crate::heap::give_back();
        // Room for every name up front, so the table never grows (and never needs the ids of
        // the names it holds to place them again).
        let mut by_id = HashTable::with_capacity(slots.len());
        let mut files = Vec::with_capacity(slots.len());
        let mut start = 0;
        for (end, entry) in slots {
            let name = FileName::from_parsed(&names[start..end]);
            by_id.insert_unique(id_hash(&entry.id), name.clone(), |_| 0);
            files.push((name, entry));
            start = end;
        }
        drop(names);
        self.by_id = by_id;
        // In name order already: made into full chunks.
        self.files = files.into_iter().collect();
        tracing::debug!(
            files = self.len(),
            ms = started.elapsed().as_millis(),
            "index rebuilt in fresh memory"
        );
    }

    /// Every name in the index, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &FileName> {
        self.files.keys()
    }

    /// The names inside the folder `folder`, in order.
    pub(crate) fn names_under<'a>(
        &'a self,
        folder: &str,
    ) -> impl Iterator<Item = &'a FileName> + 'a {
        use std::ops::Bound;
        let prefix = format!("{folder}/");
        let names = self.files.range_from(Bound::Included(prefix.as_str()));
        names
            .take_while(move |(n, _)| n.as_str().starts_with(prefix.as_str()))
            .map(|(n, _)| n)
    }

    /// A snapshot of every entry: constant time, and it never changes afterwards.
    pub(crate) fn snapshot(&self) -> Files {
        self.files.clone()
    }
}

/// A change to persist.
#[derive(Debug)]
pub(crate) enum Change {
    Put(FileName, Entry),
    Remove(FileName),
}

/// Handle on the writer thread; dropping the sender (in [`Persist::close`]) makes it commit what
/// is left and stop.
#[derive(Debug)]
pub(crate) struct Persist {
    /// Changes go over in groups: a group commit of hundreds of uploads wakes the writer once.
    tx: Option<mpsc::Sender<Vec<Change>>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// How long the writer waits to gather more changes into one commit.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const BATCH_MAX: usize = 4096;

impl Persist {
    /// Opens (or creates) the database `index.redb` in the state folder `state` and loads it.
    /// A database that cannot be read (corrupt, truncated, a symlink, not a file, or one that
    /// makes redb panic) is set aside as `index.redb.corrupt` and replaced with an empty one: it
    /// is only a cache, and losing it costs a rehash.
    ///
    /// # Errors
    /// If the database is locked by another process (another server on the same folder), or
    /// cannot be created.
    pub(crate) fn open(state: &OwnedFd) -> Result<(Self, Index), redb::Error> {
        let (db, index) = match attempt(state) {
            Ok(v) => v,
            Err(Unusable::Locked) => return Err(redb::Error::DatabaseAlreadyOpen),
            Err(Unusable::Broken(why)) => {
                tracing::warn!(
                    "index database unreadable ({why}); set aside as {CORRUPT_FILE}, rebuilding it"
                );
                set_aside(state)?;
                match attempt(state) {
                    Ok(v) => v,
                    Err(Unusable::Locked) => return Err(redb::Error::DatabaseAlreadyOpen),
                    Err(Unusable::Broken(why)) => {
                        return Err(redb::Error::Io(std::io::Error::other(why)));
                    }
                }
            }
        };
        let (tx, rx) = mpsc::channel();
        let state = state.try_clone().map_err(redb::Error::Io)?;
        let thread = thread::Builder::new()
            .name("barge-index".into())
            .spawn(move || writer(db, &rx, || open_db(&state)))
            .map_err(redb::Error::Io)?;
        Ok((
            Self {
                tx: Some(tx),
                thread: Some(thread),
            },
            index,
        ))
    }

    pub(crate) fn send(&self, change: Change) {
        self.send_all(vec![change]);
    }

    /// Sends several changes with one wake-up of the writer.
    pub(crate) fn send_all(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            // If the writer died, the index just is not persisted; ids stay correct.
            let _ = tx.send(changes);
        }
    }

    /// Commits everything sent so far and stops the writer.
    pub(crate) fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Persist {
    fn drop(&mut self) {
        self.close();
    }
}

/// Why the database file could not be used.
enum Unusable {
    /// Another process holds it: never set aside, that would break the other server.
    Locked,
    /// Anything else: unreadable, so rebuilt.
    Broken(String),
}

/// Runs `f`, turning a panic into an error. redb trusts its file: a truncated one has been seen
/// to panic inside it rather than return an error, and a dependency's panic must not stop the
/// server. Nothing `f` touches outlives it when it unwinds (the database is dropped with it), so
/// no half-updated state is observed afterwards.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, redb::Error>) -> Result<T, Unusable> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(redb::Error::DatabaseAlreadyOpen)) => Err(Unusable::Locked),
        Ok(Err(e)) => Err(Unusable::Broken(format!("{what}: {e}"))),
        Err(_) => Err(Unusable::Broken(format!(
            "{what}: the database library panicked"
        ))),
    }
}

/// Opens the database file without following a symlink (one planted at `.barge/index.redb`
/// must not be written through) and loads every entry.
fn attempt(state: &OwnedFd) -> Result<(Database, Index), Unusable> {
    let db = open_db(state)?;
    let index = guarded("loading", || load(&db))?;
    Ok((db, index))
}

/// Opens the database file of [`attempt`], without loading it.
fn open_db(state: &OwnedFd) -> Result<Database, Unusable> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(state, INDEX_FILE, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(Unusable::Broken("it is a symlink".into())),
        Err(e) => return Err(Unusable::Broken(format!("opening it: {e}"))),
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) if fsops::is_regular(&st) => {}
        Ok(_) => return Err(Unusable::Broken("it is not a regular file".into())),
        Err(e) => return Err(Unusable::Broken(format!("reading it: {e}"))),
    }
    let file = std::fs::File::from(fd);
    guarded("opening", || {
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_file(file)
            .map_err(Into::into)
    })
}

/// Moves an unusable database out of the way (replacing an older one set aside), or removes it
/// when it cannot be moved, so the next attempt starts from an empty file.
fn set_aside(state: &OwnedFd) -> Result<(), redb::Error> {
    if rustix::fs::renameat(state, INDEX_FILE, state, CORRUPT_FILE).is_ok() {
        return Ok(());
    }
    match rustix::fs::unlinkat(state, INDEX_FILE, AtFlags::empty())
        .or_else(|_| rustix::fs::unlinkat(state, INDEX_FILE, AtFlags::REMOVEDIR))
    {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(redb::Error::Io(e.into())),
    }
}

fn load(db: &Database) -> Result<Index, redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(FILES)?; // Creates it on first use.
    txn.commit()?;
    let mut index = Index::default();
    let txn = db.begin_read()?;
    let table = txn.open_table(FILES)?;
    // Room for every name up front: growing the table places each name again, and that looks
    // up its id (measured: the first listing after a restart on 100,000 files took longer).
    let rows = usize::try_from(table.len()?).unwrap_or(0);
    index.by_id.reserve(rows, |_| 0); // Empty: nothing to place again.
    for row in table.iter()? {
        let (k, v) = row?;
        let (size, mtime_ns, ino, md5) = v.value();
        // Entries whose name no longer passes the rules are dropped, not trusted.
        if let Ok(name) = FileName::parse(k.value()) {
            index.insert(
                name,
                Entry {
                    meta: Meta {
                        size,
                        mtime_ns,
                        ino,
                    },
                    id: FileId(md5),
                },
            );
        }
    }
    // Loaded in order into fresh memory: nothing to rebuild.
    index.changed = 0;
    Ok(index)
}

/// Saves the batches of changes that come over `rx` until it closes. After a failed save (a
/// full disk...), redb refuses every later write of that handle ("Previous I/O error
/// occurred"), so the database is closed and opened again with `reopen`, and the batch tried
/// once more: saving goes on once the cause is gone, instead of never until a restart. A batch
/// that cannot be saved is dropped: the index is a cache, and what it misses is hashed again at
/// the next start (a removal it misses is found stale then, its file being gone).
fn writer(
    db: Database,
    rx: &mpsc::Receiver<Vec<Change>>,
    mut reopen: impl FnMut() -> Result<Database, Unusable>,
) {
    let mut db = Some(db);
    while let Ok(mut batch) = rx.recv() {
        while batch.len() < BATCH_MAX {
            match rx.recv_timeout(BATCH_WINDOW) {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        for _ in 0..2 {
            if db.is_none() {
                match reopen() {
                    Ok(again) => db = Some(again),
                    Err(Unusable::Broken(why)) => {
                        tracing::warn!("could not open the id index again ({why})");
                        break;
                    }
                    Err(Unusable::Locked) => break,
                }
            }
            let Some(open) = &db else { break };
            match guarded("saving", || commit(open, &batch)) {
                Ok(()) => break,
                Err(Unusable::Broken(why)) => {
                    tracing::warn!("could not save the id index ({why})");
                    close(db.take());
                }
                Err(Unusable::Locked) => {
                    tracing::warn!("could not save the id index (locked)");
                    break;
                }
            }
        }
    }
    close(db);
}

/// Closes a database; redb flushes on drop, and a panic there must not take the process down.
fn close(db: Option<Database>) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
}

fn commit(db: &Database, batch: &[Change]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(FILES)?;
        for change in batch {
            match change {
                Change::Put(name, e) => {
                    table.insert(
                        name.as_str(),
                        (e.meta.size, e.meta.mtime_ns, e.meta.ino, e.id.0),
                    )?;
                }
                Change::Remove(name) => {
                    table.remove(name.as_str())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(n: u8, size: u64) -> Entry {
        Entry {
            meta: Meta {
                size,
                mtime_ns: 1,
                ino: 2,
            },
            id: FileId([n; 16]),
        }
    }

    /// A database in memory whose writes fail while `full` is set, as on a full disk.
    #[derive(Debug)]
    struct Flaky {
        bytes: Arc<redb::backends::InMemoryBackend>,
        full: Arc<std::sync::atomic::AtomicBool>,
        failed: Arc<std::sync::atomic::AtomicUsize>,
        /// Syncs that went through: one per commit.
        synced: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Flaky {
        fn refuse(&self) -> Result<(), std::io::Error> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                self.failed
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for Flaky {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.bytes.len()
        }
        fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
            self.bytes.read(offset, len)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.refuse()?;
            self.bytes.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
            self.refuse()?;
            self.synced
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.bytes.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.refuse()?;
            self.bytes.write(offset, data)
        }
    }

    #[test]
    fn saving_goes_on_after_a_full_disk_is_freed() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let bytes = Arc::new(redb::backends::InMemoryBackend::new());
        let full = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let synced = Arc::new(AtomicUsize::new(0));
        let db_over = || {
            let backend = Flaky {
                bytes: Arc::clone(&bytes),
                full: Arc::clone(&full),
                failed: Arc::clone(&failed),
                synced: Arc::clone(&synced),
            };
            redb::Builder::new()
                .create_with_backend(backend)
                .map_err(|e| Unusable::Broken(e.to_string()))
        };
        let db = db_over().unwrap_or_else(|_| panic!("an empty database"));
        let (tx, rx) = mpsc::channel();
        let put = |n: &str, i: u8| {
            let name = FileName::parse(n).unwrap_or_else(|e| panic!("{e}"));
            vec![Change::Put(name, entry(i, 1))]
        };
        std::thread::scope(|s| {
            let saver = s.spawn(move || writer(db, &rx, db_over));
            let send = |batch| tx.send(batch).unwrap_or_else(|e| panic!("{e}"));
            let wait = |what: &str, done: &dyn Fn() -> bool| {
                let until = std::time::Instant::now() + Duration::from_secs(10);
                while !done() {
                    assert!(std::time::Instant::now() < until, "{what}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            let before = synced.load(Ordering::SeqCst);
            send(put("a", 1));
            wait("the first save never came", &|| {
                synced.load(Ordering::SeqCst) > before
            });
            full.store(true, Ordering::SeqCst);
            send(put("b", 2));
            wait("the full disk was never met", &|| {
                failed.load(Ordering::SeqCst) > 0
            });
            // Let the writer give up on that batch before the disk is freed.
            std::thread::sleep(BATCH_WINDOW * 4);
            full.store(false, Ordering::SeqCst);
            send(put("c", 3));
            drop(tx);
            saver
                .join()
                .unwrap_or_else(|_| panic!("the writer panicked"));
        });
        let db = db_over().unwrap_or_else(|_| panic!("reopening"));
        let read = db.begin_read().unwrap_or_else(|e| panic!("{e}"));
        let table = read.open_table(FILES).unwrap_or_else(|e| panic!("{e}"));
        let has = |n: &str| table.get(n).ok().flatten().is_some();
        assert!(has("a"), "saved before the disk was full");
        assert!(has("c"), "not saved once the disk was freed");
    }

    #[test]
    fn maps_stay_in_step() -> Result<(), Box<dyn std::error::Error>> {
        let mut ix = Index::default();
        let a = FileName::parse("a")?;
        let b = FileName::parse("b")?;
        assert!(ix.insert(a.clone(), entry(1, 1)));
        assert!(!ix.insert(a.clone(), entry(1, 1)));
        assert!(ix.insert(b.clone(), entry(1, 1)));
        assert_eq!(ix.names_of(&FileId([1; 16])), vec![a.clone(), b.clone()]);
        assert!(ix.insert(a.clone(), entry(2, 5)));
        assert_eq!(ix.names_of(&FileId([1; 16])), vec![b.clone()]);
        assert_eq!(ix.names_of(&FileId([2; 16])), vec![a.clone()]);
        ix.remove(&b);
        assert!(ix.names_of(&FileId([1; 16])).is_empty());
        assert_eq!(ix.len(), 1);
        Ok(())
    }

    /// Ids that share the 8 bytes `by_id` places them by keep their own names, and a name
    /// that changes id moves with it.
    #[test]
    fn ids_placed_alike_keep_their_own_names() -> Result<(), Box<dyn std::error::Error>> {
        let mut ix = Index::default();
        let (one, two) = (
            FileId([1; 16]),
            FileId([1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]),
        );
        assert_eq!(id_hash(&one), id_hash(&two));
        let with = |id| Entry { id, ..entry(0, 1) };
        let names: Vec<FileName> = (0..300)
            .map(|i| FileName::parse(&format!("n{i:03}")))
            .collect::<Result<_, _>>()?;
        for (i, n) in names.iter().enumerate() {
            ix.insert(n.clone(), with(if i % 3 == 0 { one } else { two }));
        }
        assert_eq!(ix.names_of(&one).len(), 100);
        assert_eq!(ix.names_of(&two).len(), 200);
        assert!(ix.names_of(&one).windows(2).all(|w| w[0] < w[1]));
        ix.insert(names[1].clone(), with(one));
        ix.remove(&names[0]);
        assert_eq!(ix.names_of(&one).first(), Some(&names[1]));
        assert_eq!(ix.names_of(&two).len(), 199);
        assert!(ix.names_of(&FileId([9; 16])).is_empty());
        Ok(())
    }

    /// After a burst, `settle` rebuilds the index in fresh memory: the same files and ids,
    /// names no longer shared with a listing taken before; after a trickle, it leaves the
    /// names where they are.
    #[test]
    fn settle_rebuilds_after_a_burst_only() -> Result<(), Box<dyn std::error::Error>> {
        let mut ix = Index::default();
        let n = u32::try_from(REBUILD_AFTER)? + 10;
        // Out of order, with ids shared by several names, and some removed and changed.
        for i in (0..n).rev() {
            let name = FileName::parse(&format!("d{}/f{i:05}", i % 7))?;
            ix.insert(name, entry(u8::try_from(i % 5)?, u64::from(i)));
        }
        for i in (0..n).step_by(9) {
            ix.remove(&FileName::parse(&format!("d{}/f{i:05}", i % 7))?);
        }
        let changed = FileName::parse("d1/f00001")?;
        ix.insert(changed.clone(), entry(9, 1));
        let listing = ix.snapshot();
        let before: Vec<(FileName, Entry)> = listing.iter().map(|(n, e)| (n.clone(), *e)).collect();
        let ids_before: Vec<Vec<FileName>> =
            (0..10).map(|k| ix.names_of(&FileId([k; 16]))).collect();

        ix.settle();
        let after: Vec<(FileName, Entry)> =
            ix.snapshot().iter().map(|(n, e)| (n.clone(), *e)).collect();
        assert_eq!(after, before);
        let ids_after: Vec<Vec<FileName>> =
            (0..10).map(|k| ix.names_of(&FileId([k; 16]))).collect();
        assert_eq!(ids_after, ids_before);
        assert_eq!(ix.names_of(&FileId([9; 16])), vec![changed.clone()]);
        let fresh = |ix: &Index| {
            ix.snapshot()
                .iter()
                .zip(listing.iter())
                .all(|((a, _), (b, _))| !std::ptr::eq(a.as_str(), b.as_str()))
        };
        assert!(fresh(&ix), "every name is a new allocation");
        // The listing taken before is untouched.
        assert_eq!(listing.iter().count(), before.len());

        // A trickle of changes since: the names stay where they are.
        let kept = ix.snapshot();
        ix.insert(FileName::parse("zz")?, entry(3, 3));
        ix.settle();
        let shared = ix
            .snapshot()
            .iter()
            .filter(|(n, _)| {
                kept.iter()
                    .any(|(k, _)| std::ptr::eq(k.as_str(), n.as_str()))
            })
            .count();
        assert_eq!(shared, before.len());
        assert_eq!(ix.len(), before.len() + 1);
        Ok(())
    }

    fn state_dir(dir: &tempfile::TempDir) -> std::io::Result<OwnedFd> {
        fsops::open_root(dir.path())
    }

    /// A database with `n` entries, closed.
    fn filled(state: &OwnedFd, n: u32) -> Result<(), Box<dyn std::error::Error>> {
        let (mut p, _) = Persist::open(state)?;
        for i in 0..n {
            p.send(Change::Put(
                FileName::parse(&format!("f{i}"))?,
                entry(1, u64::from(i)),
            ));
        }
        p.close();
        Ok(())
    }

    #[test]
    fn persists_across_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let state = state_dir(&dir)?;
        let (mut p, ix) = Persist::open(&state)?;
        assert_eq!(ix.len(), 0);
        p.send(Change::Put(FileName::parse("x/y")?, entry(7, 9)));
        p.send(Change::Put(FileName::parse("gone")?, entry(8, 9)));
        p.send(Change::Remove(FileName::parse("gone")?));
        p.close();
        drop(p);
        let (_p, ix) = Persist::open(&state)?;
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.get(&FileName::parse("x/y")?), Some(&entry(7, 9)));
        Ok(())
    }

    #[test]
    fn corrupt_database_is_rebuilt() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(INDEX_FILE);
        std::fs::write(&path, b"this is not a redb file at all, not even close")?;
        let (_p, ix) = Persist::open(&state_dir(&dir)?)?;
        assert_eq!(ix.len(), 0);
        assert!(dir.path().join(CORRUPT_FILE).exists(), "not set aside");
        Ok(())
    }

    /// Issue 10 item 1: a database cut short anywhere (redb panicked on some cuts) is set aside
    /// and rebuilt, never a panic; a second open finds a good database.
    #[test]
    fn truncated_database_is_rebuilt_whatever_the_cut() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let state = state_dir(&dir)?;
        filled(&state, 300)?;
        let path = dir.path().join(INDEX_FILE);
        let good = std::fs::read(&path)?;
        let len = good.len();
        assert!(len > 4096, "{len}");
        // Both ends of the range the issue found, and cuts spread between them.
        let mut cuts: Vec<usize> = vec![511, 512, 4095, 4096, len - 4096, len - 2, len - 1];
        cuts.extend((1..12).map(|k| 511 + (len - 512) * k / 12));
        for cut in cuts {
            std::fs::write(&path, &good[..cut])?;
            let (p, ix) =
                Persist::open(&state).map_err(|e| format!("cut at {cut} of {len}: {e}"))?;
            // Either redb read what was left, or the file was rebuilt empty; never a panic.
            assert!(ix.len() == 300 || ix.len() == 0, "cut {cut}: {}", ix.len());
            drop(p);
            let (_p, again) = Persist::open(&state)?;
            assert_eq!(again.len(), ix.len(), "cut {cut}: not usable after rebuild");
        }
        Ok(())
    }

    /// Issue 10 item 11: `index.redb` as a symlink to a file elsewhere is never written through.
    #[test]
    fn symlinked_database_is_not_followed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let victim = outside.path().join("precious");
        std::fs::write(&victim, b"not yours")?;
        std::os::unix::fs::symlink(&victim, dir.path().join(INDEX_FILE))?;
        filled(&state_dir(&dir)?, 3)?;
        assert_eq!(std::fs::read(&victim)?, b"not yours");
        let meta = std::fs::symlink_metadata(dir.path().join(INDEX_FILE))?;
        assert!(meta.file_type().is_file(), "a new database took its place");
        let (_p, ix) = Persist::open(&state_dir(&dir)?)?;
        assert_eq!(ix.len(), 3);
        Ok(())
    }

    #[test]
    fn folder_in_place_of_the_database_is_set_aside() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join(INDEX_FILE))?;
        let (_p, ix) = Persist::open(&state_dir(&dir)?)?;
        assert_eq!(ix.len(), 0);
        assert!(std::fs::symlink_metadata(dir.path().join(INDEX_FILE))?.is_file());
        Ok(())
    }
}

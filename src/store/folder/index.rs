//! The id index: which MD5 belongs to which file, in memory and persisted.
//!
//! The index is a cache of facts that can be recomputed from the folder: an entry is trusted only
//! while the file's size, mtime and inode still match what was hashed ([`Meta`]). So losing the
//! database costs a rehash, never a wrong id. It is kept in `redb` (crash-safe, embedded) by one
//! writer thread that commits changes in batches, so uploads never wait for a database commit.

// redb's error type is large, and these functions run once per batch: boxing buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};

use super::fsops::Meta;
use crate::id::FileId;
use crate::name::FileName;

/// name → (size, mtime in ns, inode, md5).
const FILES: TableDefinition<&str, (u64, i64, u64, [u8; 16])> = TableDefinition::new("files");

/// A hashed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) meta: Meta,
    pub(crate) id: FileId,
}

/// The in-memory index. Both maps always describe the same set of files.
#[derive(Debug, Default)]
pub(crate) struct Index {
    files: BTreeMap<FileName, Entry>,
    /// Names by id, each list sorted. Almost every id has one name, and a one-element `Vec`
    /// costs a tenth of a one-element `BTreeSet` (which allocates a whole node): this map is
    /// most of the index's memory on a large folder.
    by_id: HashMap<FileId, Vec<FileName>>,
}

impl Index {
    pub(crate) fn get(&self, name: &FileName) -> Option<&Entry> {
        self.files.get(name)
    }

    /// The names that currently carry `id`, in name order.
    pub(crate) fn names_of(&self, id: &FileId) -> Vec<FileName> {
        self.by_id.get(id).cloned().unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// Records `entry` for `name`; returns true if anything changed.
    pub(crate) fn insert(&mut self, name: FileName, entry: Entry) -> bool {
        if let Some(old) = self.files.get(&name) {
            if *old == entry {
                return false;
            }
            let old_id = old.id;
            self.unlink_id(&old_id, &name);
        }
        let names = self.by_id.entry(entry.id).or_default();
        if let Err(at) = names.binary_search(&name) {
            names.insert(at, name.clone());
        }
        self.files.insert(name, entry);
        true
    }

    /// Forgets `name`; returns the entry it had.
    pub(crate) fn remove(&mut self, name: &FileName) -> Option<Entry> {
        let old = self.files.remove(name)?;
        self.unlink_id(&old.id, name);
        Some(old)
    }

    fn unlink_id(&mut self, id: &FileId, name: &FileName) {
        if let Some(names) = self.by_id.get_mut(id) {
            if let Ok(at) = names.binary_search(name) {
                names.remove(at);
            }
            if names.is_empty() {
                self.by_id.remove(id);
            }
        }
    }

    /// Every name in the index, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &FileName> {
        self.files.keys()
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
    tx: Option<mpsc::Sender<Change>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// How long the writer waits to gather more changes into one commit.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const BATCH_MAX: usize = 4096;

impl Persist {
    /// Opens (or creates) the database at `path` and loads it. A database that cannot be read is
    /// set aside and replaced with an empty one: it is only a cache.
    ///
    /// # Errors
    /// If the database is locked by another process (another server on the same folder), or
    /// cannot be created.
    pub(crate) fn open(path: &Path) -> Result<(Self, Index), redb::Error> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(redb::Error::DatabaseAlreadyOpen);
            }
            Err(e) => {
                tracing::warn!("index database unreadable ({e}); rebuilding it");
                let _ = std::fs::rename(path, path.with_extension("redb.corrupt"));
                Database::create(path)?
            }
        };
        let index = load(&db)?;
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("barge-index".into())
            .spawn(move || writer(db, rx))
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
        if let Some(tx) = &self.tx {
            // If the writer died, the index just is not persisted; ids stay correct.
            let _ = tx.send(change);
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

fn load(db: &Database) -> Result<Index, redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(FILES)?; // Creates it on first use.
    txn.commit()?;
    let mut index = Index::default();
    let txn = db.begin_read()?;
    let table = txn.open_table(FILES)?;
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
    Ok(index)
}

fn writer(db: Database, rx: mpsc::Receiver<Change>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.recv_timeout(BATCH_WINDOW) {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if let Err(e) = commit(&db, &batch) {
            tracing::warn!("could not save the id index: {e}");
        }
    }
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

    #[test]
    fn persists_across_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("index.redb");
        let (mut p, ix) = Persist::open(&path)?;
        assert_eq!(ix.len(), 0);
        p.send(Change::Put(FileName::parse("x/y")?, entry(7, 9)));
        p.send(Change::Put(FileName::parse("gone")?, entry(8, 9)));
        p.send(Change::Remove(FileName::parse("gone")?));
        p.close();
        drop(p);
        let (_p, ix) = Persist::open(&path)?;
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.get(&FileName::parse("x/y")?), Some(&entry(7, 9)));
        Ok(())
    }

    #[test]
    fn corrupt_database_is_rebuilt() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("index.redb");
        std::fs::write(&path, b"this is not a redb file at all, not even close")?;
        let (_p, ix) = Persist::open(&path)?;
        assert_eq!(ix.len(), 0);
        Ok(())
    }
}

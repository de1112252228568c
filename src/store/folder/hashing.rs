//! Knowing each file's id: walking the folder, hashing what the index does not vouch for
//! (inline within a listing's budget, the rest on a background thread), and recording it.
//!
//! It does not decide what a listing shows beyond "known id or pending", and never writes files.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::sync::{Arc, Weak, mpsc};

use md5::{Digest, Md5};
use rustix::io::Errno;

use super::fsops::{self, Meta};
use super::index::{Change, Entry};
use super::{Inner, lock};
use crate::id::FileId;
use crate::name::FileName;
use crate::store::{FileEntry, Listing, StoreError};

const CHUNK: usize = 256 * 1024;

/// Starts the background hasher and the first scan, which finds what changed while the server
/// was down; it hashes nothing inline, so the server answers at once.
pub(super) fn start(inner: &Arc<Inner>, rx: mpsc::Receiver<FileName>) -> Result<(), StoreError> {
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("barge-hasher".into())
        .spawn(move || background_hasher(&weak, &rx))
        .map_err(StoreError::io_on("starting the hasher thread", None))?;
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("barge-scan".into())
        .spawn(move || {
            if let Some(inner) = weak.upgrade() {
                if let Err(e) = inner.scan(0) {
                    tracing::warn!("initial scan failed: {e}");
                }
            }
        })
        .map_err(StoreError::io_on("starting the scan thread", None))?;
    Ok(())
}

impl Inner {
    /// Walks the folder: files whose indexed id is current are listed; others are hashed now
    /// while `budget` bytes and the listing's time last, and queued for the background hasher
    /// after that (counted as pending).
    pub(super) fn scan(&self, mut budget: u64) -> Result<Listing, StoreError> {
        let started = std::time::Instant::now();
        let found = fsops::walk(&self.root).map_err(|e| StoreError::ListingIncomplete {
            folder: e.folder,
            source: e.source,
        })?;
        self.files
            .store(found.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut entries = Vec::with_capacity(found.len());
        let mut unknown = Vec::new();
        let mut canonical: std::collections::HashMap<String, Vec<FileName>> =
            std::collections::HashMap::new();
        {
            let mut ix = lock(&self.index);
            // Forget files that are gone: both sequences are sorted by name.
            let mut gone = Vec::new();
            let mut on_disk = found.iter().map(|f| &f.name).peekable();
            for name in ix.names() {
                while on_disk.next_if(|n| *n < name).is_some() {}
                if on_disk.peek() != Some(&name) {
                    gone.push(name.clone());
                }
            }
            for name in gone {
                // The walk is not atomic: a file uploaded or renamed into place while it ran is
                // on disk and in the index, but was not seen. Only forget what is really gone.
                if matches!(fsops::stat_name(&self.root, &name), Ok(Some(st)) if fsops::is_regular(&st))
                {
                    continue;
                }
                ix.remove(&name);
                self.persist(Change::Remove(name));
            }
            // Equivalent names: what the walk saw, plus what was stored while it ran (in the
            // index, not necessarily seen).
            for name in found.iter().map(|f| &f.name).chain(ix.names()) {
                if !name.as_str().is_ascii() {
                    let same = canonical.entry(name.canonical().into_owned()).or_default();
                    if !same.contains(name) {
                        same.push(name.clone());
                    }
                }
            }
            for f in found {
                match ix.get(&f.name) {
                    Some(e) if e.meta == f.meta => {
                        entries.push(FileEntry {
                            id: e.id,
                            name: f.name,
                            size: f.meta.size,
                        });
                    }
                    _ => unknown.push(f),
                }
            }
        }
        *lock(&self.canonical) = canonical;
        let mut pending = 0;
        let mut added = false;
        for f in unknown {
            if f.meta.size <= budget && started.elapsed() < self.config.inline_hash_time {
                budget -= f.meta.size;
                if let Ok(Some((_, e))) = self.open_hashed(&f.name) {
                    entries.push(FileEntry {
                        id: e.id,
                        name: f.name,
                        size: e.meta.size,
                    });
                    added = true;
                    continue;
                }
            } else {
                self.queue_hash(f.name);
            }
            pending += 1;
        }
        if added {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(Listing { entries, pending })
    }

    fn persist(&self, change: Change) {
        lock(&self.persist).send(change);
    }

    fn queue_hash(&self, name: FileName) {
        if lock(&self.queued).insert(name.clone()) {
            if let Some(tx) = lock(&self.hasher_tx).as_ref() {
                let _ = tx.send(name);
            }
        }
    }

    /// Opens `name` and makes sure its id is known and current, hashing it if needed.
    /// `Ok(None)` when there is no regular file of that name (symlinks count as none) or it is
    /// changing while being hashed.
    pub(super) fn open_hashed(&self, name: &FileName) -> Result<Option<(File, Entry)>, StoreError> {
        let (mut file, st) = match fsops::open_file(&self.root, name) {
            Ok(v) => v,
            Err(e)
                if fsops::is_absent(&e) || e.raw_os_error() == Some(Errno::NXIO.raw_os_error()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io("opening", Some(name), e)),
        };
        let meta = Meta::of(&st);
        if let Some(e) = lock(&self.index).get(name) {
            if e.meta == meta {
                return Ok(Some((file, *e)));
            }
        }
        let id = md5_of(&mut file).map_err(StoreError::io_on("reading", Some(name)))?;
        let after = rustix::fs::fstat(&file).map_err(StoreError::io_on("reading", Some(name)))?;
        if Meta::of(&after) != meta {
            return Ok(None); // Being written to right now; its id is not settled.
        }
        file.rewind()
            .map_err(StoreError::io_on("reading", Some(name)))?;
        let entry = Entry { meta, id };
        self.record(name.clone(), entry);
        Ok(Some((file, entry)))
    }

    pub(super) fn record(&self, name: FileName, entry: Entry) {
        if lock(&self.index).insert(name.clone(), entry) {
            self.persist(Change::Put(name, entry));
        }
    }

    pub(super) fn forget(&self, name: &FileName) {
        self.forget_name(name);
        if lock(&self.index).remove(name).is_some() {
            self.persist(Change::Remove(name.clone()));
        }
    }
}

/// The MD5 of everything `r` yields.
fn md5_of(r: &mut impl Read) -> io::Result<FileId> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(FileId(hasher.finalize().into()))
}

fn background_hasher(inner: &Weak<Inner>, rx: &mpsc::Receiver<FileName>) {
    while let Ok(name) = rx.recv() {
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.open_hashed(&name) {
            tracing::warn!("could not hash {name}: {e}");
        }
        lock(&inner.queued).remove(&name);
    }
}

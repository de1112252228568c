//! Knowing each file's id: hashing what the index does not vouch for (inline within a
//! listing's budget, the rest on a background thread), and recording it. Which files to look
//! at is [`refresh`](super::refresh)'s job.
//!
//! It does not decide what a listing shows beyond "known id or pending", and never writes files.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::sync::{Arc, Mutex, Weak, mpsc};

use crate::md5_state::ResumableMd5;
use rustix::io::Errno;

use super::fsops::{self, Meta};
use super::index::{Change, Entry};
use super::{Inner, lock};
use crate::id::FileId;
use crate::name::FileName;
use crate::store::StoreError;

const CHUNK: usize = 256 * 1024;

/// How long a file seen changing while it was hashed must stay unmodified before it is hashed
/// again.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

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
                let started = std::time::Instant::now();
                match inner.refresh(0) {
                    Ok(l) => tracing::debug!(
                        files = l.len() + l.pending,
                        pending = l.pending,
                        ms = started.elapsed().as_millis(),
                        "initial scan done"
                    ),
                    Err(e) => tracing::warn!("initial scan failed: {e}"),
                }
                inner
                    .first_scan_done
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        })
        .map_err(StoreError::io_on("starting the scan thread", None))?;
    Ok(())
}

impl Inner {
    pub(super) fn persist(&self, change: Change) {
        lock(&self.persist).send(change);
    }

    pub(super) fn queue_hash(&self, name: FileName) {
        if lock(&self.queued).insert(name.clone())
            && let Some(tx) = lock(&self.hasher_tx).as_ref()
        {
            let _ = tx.send(name);
        }
    }

    /// Opens `name` and makes sure its id is known and current, hashing it if needed.
    /// `Ok(None)` when there is no regular file of that name (symlinks count as none).
    ///
    /// One hash per file at a time (issue 10, item 9): requests for a file being hashed wait
    /// for that hash and take its result instead of reading the file again; files are told
    /// apart by inode, so hard links share too. A file that changed while it was hashed, and
    /// is still being modified, is [`StoreError::BeingWritten`] without being read again.
    ///
    /// # Errors
    /// [`StoreError::BeingWritten`], or a failure to read it.
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
        if let Some(e) = lock(&self.index).get(name)
            && e.meta == meta
        {
            return Ok(Some((file, *e)));
        }
        if self.still_changing(&meta) {
            return Err(StoreError::BeingWritten(name.clone()));
        }
        let slot = Arc::clone(lock(&self.hashes).entry(meta.ino).or_default());
        let result = self.hash_in(&slot, name, &mut file, meta);
        // The last one out removes the slot; a new one is only cloned under the map's lock.
        let mut hashes = lock(&self.hashes);
        if Arc::strong_count(&slot) == 2 {
            hashes.remove(&meta.ino);
        }
        drop(hashes);
        let entry = result?;
        file.rewind()
            .map_err(StoreError::io_on("reading", Some(name)))?;
        Ok(Some((file, entry)))
    }

    /// Hashes `file` (`name`, as `meta` says it is) while holding its inode's `slot`, unless the
    /// hash that held it before found the same version, and records the id.
    fn hash_in(
        &self,
        slot: &Mutex<Option<Entry>>,
        name: &FileName,
        file: &mut File,
        meta: Meta,
    ) -> Result<Entry, StoreError> {
        let mut done = lock(slot);
        if let Some(entry) = *done
            && entry.meta == meta
        {
            self.record(name.clone(), entry);
            return Ok(entry);
        }
        // A hash that ended between our look at the index and our taking the slot.
        if let Some(entry) = lock(&self.index).get(name).copied()
            && entry.meta == meta
        {
            return Ok(entry);
        }
        self.hashed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = md5_of(file).map_err(StoreError::io_on("reading", Some(name)))?;
        let after = rustix::fs::fstat(&*file).map_err(StoreError::io_on("reading", Some(name)))?;
        let after = Meta::of(&after);
        if after != meta {
            // Being written to right now: its id is not settled, and hashing it again at once
            // would only find the same.
            lock(&self.changing).insert(meta.ino, after);
            return Err(StoreError::BeingWritten(name.clone()));
        }
        lock(&self.changing).remove(&meta.ino);
        let entry = Entry { meta, id };
        *done = Some(entry);
        self.record(name.clone(), entry);
        Ok(entry)
    }

    /// True when the file of `meta` was seen changing while it was hashed and has been modified
    /// within [`SETTLE`]: hashing it now would be wasted.
    fn still_changing(&self, meta: &Meta) -> bool {
        let mut changing = lock(&self.changing);
        if !changing.contains_key(&meta.ino) {
            return false;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let settle = i64::try_from(SETTLE.as_nanos()).unwrap_or(i64::MAX);
        if now.saturating_sub(meta.mtime_ns) < settle {
            return true;
        }
        // Quiet for long enough: worth one more try.
        changing.remove(&meta.ino);
        false
    }

    pub(super) fn record(&self, name: FileName, entry: Entry) {
        self.record_all(vec![(name, entry)]);
    }

    /// Records several entries under one lock of the index and hands them to its writer in
    /// one piece (a group commit's files: one wake-up of the writer instead of one per file).
    pub(super) fn record_all(&self, entries: Vec<(FileName, Entry)>) {
        let mut changes = Vec::with_capacity(entries.len());
        {
            let mut index = lock(&self.index);
            for (name, entry) in entries {
                if index.insert(name.clone(), entry) {
                    changes.push(Change::Put(name, entry));
                }
            }
        }
        lock(&self.persist).send_all(changes);
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
    let mut hasher = ResumableMd5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize())
}

impl Inner {
    /// The end of a burst (a folder first indexed): the index packed, and what the burst freed
    /// given back to the system ([`heap`](crate::heap)).
    pub(super) fn settle(&self) {
        lock(&self.index).settle();
        crate::heap::give_back_after_burst();
    }
}

fn background_hasher(inner: &Weak<Inner>, rx: &mpsc::Receiver<FileName>) {
    while let Ok(name) = rx.recv() {
        let Some(inner) = inner.upgrade() else { return };
        match inner.open_hashed(&name) {
            // Hashed when it is listed again, once it has settled.
            Ok(_) | Err(StoreError::BeingWritten(_)) => {}
            Err(e) => tracing::warn!("could not hash {name}: {e}"),
        }
        let mut queued = lock(&inner.queued);
        queued.remove(&name);
        if queued.is_empty() {
            // Its room for 100,000 names would otherwise be kept (2 MiB).
            queued.shrink_to_fit();
            drop(queued);
            inner.settle();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::{FolderBackend, StoreConfig};

    fn hashed(backend: &FolderBackend) -> u64 {
        backend.inner.hashed.load(Ordering::Relaxed)
    }

    /// A backend on `dir` whose start-up scan is over: on a busy machine one that starts late
    /// finds the files a test writes and queues them for the background hasher, which then
    /// counts in [`hashed`].
    fn opened(dir: &std::path::Path) -> FolderBackend {
        let backend = FolderBackend::open(dir, StoreConfig::default()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !backend.inner.first_scan_done.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the start-up scan never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        backend
    }

    /// Issue 10 item 9: eight requests at once for a file not hashed yet read it once.
    #[test]
    fn concurrent_requests_share_one_hash() {
        let dir = tempfile::tempdir().unwrap();
        let backend = opened(dir.path());
        let before = hashed(&backend);
        std::fs::write(dir.path().join("big"), vec![5u8; 48 << 20]).unwrap();
        let name = FileName::parse("big").unwrap();
        let ids: Vec<FileId> = std::thread::scope(|s| {
            let tasks: Vec<_> = (0..8)
                .map(|_| s.spawn(|| backend.inner.open_hashed(&name).unwrap().unwrap().1.id))
                .collect();
            tasks.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]));
        assert_eq!(
            hashed(&backend) - before,
            1,
            "the file was read more than once"
        );
        assert!(
            lock(&backend.inner.hashes).is_empty(),
            "a slot was left behind"
        );
    }

    /// Issue 10 item 9: a file appended to while it is hashed is "being written", and is not
    /// hashed again while it keeps changing; once quiet, it is hashed.
    #[test]
    fn a_file_being_written_is_not_hashed_again_and_again() {
        let dir = tempfile::tempdir().unwrap();
        let backend = opened(dir.path());
        let path = dir.path().join("growing");
        std::fs::write(&path, vec![1u8; 32 << 20]).unwrap();
        let name = FileName::parse("growing").unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(b"more").unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            let first = backend.inner.open_hashed(&name);
            let after_first = hashed(&backend);
            let again: Vec<_> = (0..5).map(|_| backend.inner.open_hashed(&name)).collect();
            stop.store(true, Ordering::Relaxed);
            assert!(
                matches!(first, Err(StoreError::BeingWritten(_))),
                "{first:?}"
            );
            for r in again {
                assert!(matches!(r, Err(StoreError::BeingWritten(_))), "{r:?}");
            }
            assert_eq!(hashed(&backend), after_first, "hashed again while changing");
        });
        // Quiet since long enough (its mtime set back): hashed once more, and known.
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        f.set_modified(past).unwrap();
        let (_, entry) = backend.inner.open_hashed(&name).unwrap().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(entry.id, md5_of(&mut data.as_slice()).unwrap());
    }

    /// Issue 10 item 9: `DELETE <id>` of an id many files share stops at the second one it
    /// confirms, instead of opening (and here rehashing) every one.
    #[tokio::test]
    async fn an_id_shared_by_many_files_is_refused_without_opening_them_all() {
        use crate::store::{Store, Target};
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(opened(dir.path()));
        for i in 0..50 {
            std::fs::write(dir.path().join(format!("f{i:02}")), b"same").unwrap();
        }
        let store = Store::new(
            Arc::clone(&backend) as Arc<dyn crate::store::Backend>,
            StoreConfig::default(),
        );
        let listed = store.list().await.unwrap();
        assert_eq!(listed.entries().len(), 50);
        let id = listed.entries()[0].id;
        // The listing queued them all for the background hasher: let it finish, or on a busy
        // machine it meets the changes below and hashes them (not what is measured). The
        // start-up scan is over too (`opened`): once in a CI run one that started late took
        // up the changes below, and 27 files were hashed before the delete ended.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !lock(&backend.inner.queued).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the hasher never finished"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Changed behind its back, same size: opening any of these would hash it again.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for i in 2..50 {
            let path = dir.path().join(format!("f{i:02}"));
            std::fs::write(&path, b"diff").unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(past).unwrap();
        }
        let before = hashed(&backend);
        let target = Target {
            id: Some(id),
            name: None,
        };
        // Refused as ambiguous. The count is what the index knows: 50, or fewer if something
        // (under load, once in a CI run) had already noticed files that changed; the result
        // is printed so that such a run says which.
        let got = store.delete(&target).await;
        assert!(
            matches!(got, Err(StoreError::Ambiguous { count, .. }) if (2..=50).contains(&count)),
            "{got:?}"
        );
        assert_eq!(hashed(&backend), before, "opened more files than needed");
    }

    /// Issue 10 items 2 and 9: sixteen listings at once share walks instead of walking the
    /// folder sixteen times, each gets the whole listing, and no listing is kept once they are
    /// answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_listings_share_walks_and_keep_nothing() {
        use crate::store::Backend;
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2000 {
            std::fs::write(dir.path().join(format!("f{i:04}")), b"x").unwrap();
        }
        let backend = Arc::new(FolderBackend::open(dir.path(), StoreConfig::default()).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let b = Arc::clone(&backend);
                tokio::spawn(async move {
                    let l = b.list().await.unwrap();
                    l.entries().len() + l.pending
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 2000);
        }
        let walks = backend.lists.walks.load(Ordering::Relaxed);
        assert!(walks < 8, "{walks} walks for 16 listings");
        assert!(
            backend.lists.last.try_lock().unwrap().is_none(),
            "a listing was kept"
        );
    }
}

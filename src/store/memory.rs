//! The memory backend: files in a map, for tests of the policy layer and of code built on the
//! store. It holds the same promises as the folder at the level a client can see (no-replace
//! commits, all-or-nothing uploads, a file where a folder should be is in the way) but keeps
//! nothing across restarts and has no hashing delay (nothing is ever pending).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::md5_state::ResumableMd5;

use super::{Backend, Body, Download, FileEntry, Listing, Space, Staged, StoreError, Target};
use crate::id::FileId;
use crate::name::FileName;

/// A file kept in memory.
#[derive(Debug)]
struct Stored {
    id: FileId,
    data: Arc<Vec<u8>>,
}

type Files = Arc<Mutex<BTreeMap<FileName, Stored>>>;

/// Files kept in memory.
#[derive(Debug)]
pub struct MemoryBackend {
    files: Files,
    capacity: u64,
    /// How many files it may hold, if limited: stands for a disk's inodes in tests.
    file_slots: Option<u64>,
}

fn lock(files: &Files) -> MutexGuard<'_, BTreeMap<FileName, Stored>> {
    files
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryBackend {
    /// An empty store that reports `capacity` bytes of free space, minus what it holds.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self {
            files: Arc::default(),
            capacity,
            file_slots: None,
        }
    }

    /// The same, holding at most `slots` files (reported as free inodes, as a disk would).
    #[must_use]
    pub fn with_file_slots(mut self, slots: u64) -> Self {
        self.file_slots = Some(slots);
        self
    }
}

/// Fails unless `name` can be created: nothing of that name, no file where one of its folders
/// should be, and no file under it (it would be a folder).
fn check_free(files: &BTreeMap<FileName, Stored>, name: &FileName) -> Result<(), StoreError> {
    if files.contains_key(name) {
        return Err(StoreError::Exists(name.clone()));
    }
    let text = name.as_str();
    for (at, _) in text.match_indices('/') {
        if files.contains_key(&text[..at]) {
            return Err(StoreError::NotAFolder(text[..at].to_owned()));
        }
    }
    // Names under `name/` sort right after `name/`.
    let folder = format!("{text}/");
    if files
        .range::<str, _>((
            std::ops::Bound::Included(folder.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .is_some_and(|(n, _)| n.as_str().starts_with(&folder))
    {
        return Err(StoreError::FolderExists(name.clone()));
    }
    Ok(())
}

fn not_found(name: &FileName) -> StoreError {
    StoreError::NotFound(Target::name(name.clone()))
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn list(&self) -> Result<Listing, StoreError> {
        let entries: Vec<FileEntry> = lock(&self.files)
            .iter()
            .map(|(name, f)| FileEntry {
                id: f.id,
                name: name.clone(),
                size: f.data.len() as u64,
            })
            .collect();
        Ok(Listing::from_entries(entries, 0))
    }

    async fn names_of(&self, id: FileId) -> Result<Vec<FileName>, StoreError> {
        Ok(lock(&self.files)
            .iter()
            .filter(|(_, f)| f.id == id)
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn equivalents(&self, name: &FileName) -> Result<Vec<FileName>, StoreError> {
        let canonical = name.canonical();
        Ok(lock(&self.files)
            .keys()
            .filter(|n| *n != name && n.canonical() == canonical)
            .cloned()
            .collect())
    }

    async fn open(&self, name: &FileName) -> Result<Option<Download>, StoreError> {
        let files = lock(&self.files);
        let Some(f) = files.get(name) else {
            return Ok(None);
        };
        let size = f.data.len() as u64;
        // Large files come as a reader, so both body forms a backend may give are exercised.
        let body = if size <= super::INLINE_BODY {
            Body::Bytes(f.data.to_vec())
        } else {
            Body::Reader(Box::pin(std::io::Cursor::new(ArcBytes(Arc::clone(
                &f.data,
            )))))
        };
        Ok(Some(Download {
            size,
            id: f.id,
            name: name.clone(),
            body,
        }))
    }

    async fn begin(&self, name: &FileName, size: u64) -> Result<Box<dyn Staged>, StoreError> {
        check_free(&lock(&self.files), name)?;
        Ok(Box::new(MemoryUpload {
            files: Arc::clone(&self.files),
            name: name.clone(),
            size,
            data: Vec::new(),
            hasher: ResumableMd5::new(),
        }))
    }

    async fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError> {
        let mut files = lock(&self.files);
        if !files.contains_key(from) {
            return Err(not_found(from));
        }
        check_free(&files, to)?;
        let f = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.clone(), f);
        Ok(())
    }

    async fn delete(&self, name: &FileName) -> Result<(), StoreError> {
        lock(&self.files)
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found(name))
    }

    fn free_space(&self) -> Result<Space, StoreError> {
        let files = lock(&self.files);
        let used: u64 = files.values().map(|f| f.data.len() as u64).sum();
        Ok(Space {
            bytes: self.capacity.saturating_sub(used),
            inodes: self
                .file_slots
                .map(|slots| slots.saturating_sub(files.len() as u64)),
        })
    }

    fn file_count(&self) -> u64 {
        lock(&self.files).len() as u64
    }

    fn close(&self) {}
}

/// Shared bytes as a cursor's buffer.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// An upload held in memory until its commit.
#[derive(Debug)]
struct MemoryUpload {
    files: Files,
    name: FileName,
    size: u64,
    data: Vec<u8>,
    hasher: ResumableMd5,
}

impl Staged for MemoryUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let received = self.data.len() as u64 + data.len() as u64;
        if received > self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received,
            });
        }
        self.hasher.update(data);
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<FileId, StoreError> {
        let this = *self;
        if this.data.len() as u64 != this.size {
            return Err(StoreError::Incomplete {
                expected: this.size,
                received: this.data.len() as u64,
            });
        }
        let id = this.hasher.finalize();
        let mut files = lock(&this.files);
        check_free(&files, &this.name)?;
        files.insert(
            this.name,
            Stored {
                id,
                data: Arc::new(this.data),
            },
        );
        Ok(id)
    }
}

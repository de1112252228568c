//! The rules every backend is held to, in one layer over any [`Backend`].
//!
//! Read-only, the size limit, the free-space reserve, names with an upload in progress,
//! Unicode-equivalent names, and which file an id-or-name means ("ids win", and an id shared by
//! several files cannot be renamed or deleted): `PROTOCOL.md` sections 4 and 5. Backends stay
//! thin and never see these rules; this layer never touches storage itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, Download, FolderBackend, Listing, Staged, StoreConfig, StoreError, Target};
use crate::id::FileId;
use crate::name::FileName;

/// The store the server uses: a backend with the protocol's rules around it.
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    config: StoreConfig,
    uploads: Arc<Mutex<Uploads>>,
}

/// Names being written (uploads in progress, renames under way), with what makes their
/// conflicts cheap to find: every folder of them, and the canonical forms of non-ASCII ones.
#[derive(Debug, Default)]
struct Uploads {
    /// Name → declared size.
    names: HashMap<FileName, u64>,
    /// Folder (as text) → how many reserved names are under it.
    folders: HashMap<String, usize>,
    /// Canonical form → the non-ASCII reserved names with it.
    canonical: HashMap<String, Vec<FileName>>,
    /// Sum of the declared sizes.
    bytes: u64,
}

impl Uploads {
    /// The reserved name `name` conflicts with, if any: itself, a folder of it, a name under
    /// it, or an equivalent name.
    fn conflict(&self, name: &FileName) -> Option<StoreError> {
        let busy = |uploading: &FileName| StoreError::UploadInProgress {
            name: name.clone(),
            uploading: uploading.clone(),
        };
        if self.names.contains_key(name) {
            return Some(busy(name));
        }
        let text = name.as_str();
        for (at, _) in text.match_indices('/') {
            if let Some((folder, _)) = self.names.get_key_value(&text[..at]) {
                return Some(busy(folder));
            }
        }
        if self.folders.contains_key(text) {
            let under = self.names.keys().find(|n| name.is_folder_of(n))?;
            return Some(busy(under));
        }
        // An equivalent ASCII name can only be the canonical form itself; non-ASCII ones are
        // found through their canonical forms.
        let canonical = name.canonical();
        let ascii = self
            .names
            .get_key_value(canonical.as_ref())
            .map(|(n, _)| n)
            .filter(|n| *n != name);
        let other = ascii.or_else(|| {
            self.canonical
                .get(canonical.as_ref())
                .and_then(|same| same.iter().find(|n| *n != name))
        })?;
        Some(StoreError::Equivalent {
            name: name.clone(),
            existing: other.clone(),
        })
    }

    fn insert(&mut self, name: &FileName, size: u64) {
        self.names.insert(name.clone(), size);
        self.bytes = self.bytes.saturating_add(size);
        let text = name.as_str();
        for (at, _) in text.match_indices('/') {
            *self.folders.entry(text[..at].to_owned()).or_default() += 1;
        }
        if !text.is_ascii() {
            self.canonical
                .entry(name.canonical().into_owned())
                .or_default()
                .push(name.clone());
        }
    }

    fn remove(&mut self, name: &FileName) {
        let Some(size) = self.names.remove(name) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(size);
        let text = name.as_str();
        for (at, _) in text.match_indices('/') {
            if let Some(n) = self.folders.get_mut(&text[..at]) {
                *n -= 1;
                if *n == 0 {
                    self.folders.remove(&text[..at]);
                }
            }
        }
        let canonical = name.canonical();
        if let Some(same) = self.canonical.get_mut(canonical.as_ref()) {
            same.retain(|n| n != name);
            if same.is_empty() {
                self.canonical.remove(canonical.as_ref());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps are updated in single steps that cannot be left half done by a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A name held while it is being written; dropping it frees the name.
#[derive(Debug)]
struct Reservation {
    uploads: Arc<Mutex<Uploads>>,
    name: FileName,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.uploads).remove(&self.name);
    }
}

/// An upload in progress. Dropping it before [`finish`](Self::finish) succeeds removes what was
/// staged and frees the name: nothing of a failed upload is ever visible.
#[derive(Debug)]
pub struct Upload {
    staged: Box<dyn Staged>,
    reservation: Reservation,
}

impl Upload {
    /// The name being uploaded.
    #[must_use]
    pub fn name(&self) -> &FileName {
        &self.reservation.name
    }

    /// Appends body bytes (blocking: call it on a blocking thread).
    ///
    /// # Errors
    /// More bytes than declared, a full disk, or another storage failure.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.staged.write(data)
    }

    /// Completes the upload: checks every byte arrived and makes it visible under its name,
    /// never replacing a file. Returns its id. Blocking.
    ///
    /// # Errors
    /// Incomplete, the name was taken meanwhile (by a file dropped in by hand), or a failure.
    pub fn finish(self) -> Result<FileId, StoreError> {
        let id = self.staged.commit()?;
        drop(self.reservation);
        Ok(id)
    }
}

impl Store {
    /// Opens the shared folder at `root` with the [`FolderBackend`].
    ///
    /// # Errors
    /// If the folder cannot be created or opened, or another server uses it.
    pub fn open(root: &Path, config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let backend = FolderBackend::open(root, config.clone())?;
        Ok(Self::new(Arc::new(backend), config))
    }

    /// Puts the rules of `config` around `backend`.
    #[must_use]
    pub fn new(backend: Arc<dyn Backend>, config: StoreConfig) -> Arc<Self> {
        Arc::new(Self {
            backend,
            config,
            uploads: Arc::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Saves what the backend must save and stops its background work. Called at shutdown; the
    /// store stays readable afterwards.
    pub fn close(&self) {
        self.backend.close();
    }

    /// Lists the files whose id is known, and counts those still being hashed.
    ///
    /// # Errors
    /// If the backend cannot be read.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        self.backend.list().await
    }

    /// Opens a file for download by id or name: a valid id of a stored file wins, otherwise the
    /// text is taken as a name. The id returned is the hash of the bytes the body yields.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or a failure.
    pub async fn download(&self, target: &Target) -> Result<Download, StoreError> {
        if let Some(id) = target.id {
            for name in self.backend.names_of(id).await? {
                if let Some(d) = self.backend.open(&name).await? {
                    if d.id == id {
                        return Ok(d);
                    }
                }
            }
        }
        if let Some(name) = &target.name {
            if let Some(d) = self.backend.open(name).await? {
                return Ok(d);
            }
        }
        Err(StoreError::NotFound(target.clone()))
    }

    /// Finds the one file `target` means, for rename and delete: ids win, and an id several
    /// files share is refused. A name is returned as is; the backend finds whether it exists.
    async fn resolve(&self, target: &Target) -> Result<FileName, StoreError> {
        if let Some(id) = target.id {
            let mut live = Vec::new();
            for name in self.backend.names_of(id).await? {
                if matches!(self.backend.open(&name).await?, Some(d) if d.id == id) {
                    live.push(name);
                }
            }
            match live.len() {
                0 => {}
                1 => return Ok(live.remove(0)),
                count => return Err(StoreError::Ambiguous { id, count }),
            }
        }
        target
            .name
            .clone()
            .ok_or_else(|| StoreError::NotFound(target.clone()))
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.config.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let max = self.config.max_file_size;
        if size > max {
            Err(StoreError::TooLarge { size, max })
        } else {
            Ok(())
        }
    }

    /// Reserves `name` unless it conflicts with a name being written; returns the bytes the
    /// other writes in progress have declared.
    fn reserve(&self, name: &FileName, size: u64) -> Result<(Reservation, u64), StoreError> {
        let mut uploads = lock(&self.uploads);
        if let Some(e) = uploads.conflict(name) {
            return Err(e);
        }
        let others = uploads.bytes;
        uploads.insert(name, size);
        Ok((
            Reservation {
                uploads: Arc::clone(&self.uploads),
                name: name.clone(),
            },
            others,
        ))
    }

    /// Fails if an existing file's name is equivalent to `name` without being it.
    async fn check_equivalents(&self, name: &FileName) -> Result<(), StoreError> {
        match self.backend.equivalents(name).await?.into_iter().next() {
            Some(existing) => Err(StoreError::Equivalent {
                name: name.clone(),
                existing,
            }),
            None => Ok(()),
        }
    }

    fn check_space(&self, size: u64, others: u64) -> Result<(), StoreError> {
        let available = self.backend.free_space()?;
        let needed = size
            .saturating_add(others)
            .saturating_add(self.config.min_free_space);
        if needed > available {
            Err(StoreError::InsufficientStorage { needed, available })
        } else {
            Ok(())
        }
    }

    /// Starts an upload of `size` bytes to `name`, checking in the order of `PROTOCOL.md` 5.2:
    /// read-only, size, conflicts (the name exists, is being uploaded or is equivalent to one
    /// that is, or a folder in it is a file), then free space.
    ///
    /// # Errors
    /// The first check that fails, or a storage failure.
    pub async fn begin_upload(&self, name: FileName, size: u64) -> Result<Upload, StoreError> {
        self.check_writable()?;
        self.check_size(size)?;
        let (reservation, others) = self.reserve(&name, size)?;
        self.check_equivalents(&name).await?;
        let staged = self.backend.begin(&name, size).await?;
        self.check_space(size, others)?;
        Ok(Upload {
            staged,
            reservation,
        })
    }

    /// Stores several small files with one group commit where the backend has one: each file
    /// is checked as [`begin_upload`](Self::begin_upload) would, appears only once complete and
    /// durable, and gets its own result, in order.
    pub async fn put_batch(
        &self,
        items: Vec<(FileName, Vec<u8>)>,
    ) -> Vec<Result<FileId, StoreError>> {
        let mut results: Vec<Option<Result<FileId, StoreError>>> = Vec::with_capacity(items.len());
        let mut accepted = Vec::with_capacity(items.len());
        let mut reservations = Vec::with_capacity(items.len());
        let mut space: Option<u64> = None;
        for (name, data) in items {
            let size = data.len() as u64;
            let checked = async {
                self.check_writable()?;
                self.check_size(size)?;
                let (reservation, others) = self.reserve(&name, size)?;
                self.check_equivalents(&name).await?;
                let available = match space {
                    Some(a) => a,
                    None => *space.insert(self.backend.free_space()?),
                };
                let needed = size
                    .saturating_add(others)
                    .saturating_add(self.config.min_free_space);
                if needed > available {
                    return Err(StoreError::InsufficientStorage { needed, available });
                }
                Ok(reservation)
            }
            .await;
            match checked {
                Ok(reservation) => {
                    reservations.push(reservation);
                    accepted.push((name, data));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut stored = if accepted.is_empty() {
            Vec::new()
        } else {
            self.backend.put_batch(accepted).await
        }
        .into_iter();
        let out = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    stored.next().unwrap_or_else(|| {
                        Err(StoreError::Io {
                            action: "storing a batch",
                            name: None,
                            source: std::io::Error::other("the backend lost a result"),
                        })
                    })
                })
            })
            .collect();
        drop(reservations);
        out
    }

    /// Renames one file; folders in the new name are created as needed. Never replaces a file.
    /// Returns the old name.
    ///
    /// # Errors
    /// Read-only, not found, ambiguous id, the new name is taken (or being written, or
    /// equivalent to a name that is), or a failure.
    pub async fn rename(&self, from: &Target, to: &FileName) -> Result<FileName, StoreError> {
        self.check_writable()?;
        let from = self.resolve(from).await?;
        // Held while the rename runs, so an upload cannot claim the new name meanwhile.
        let (_reservation, _) = self.reserve(to, 0)?;
        self.check_equivalents(to).await?;
        self.backend.rename(&from, to).await?;
        Ok(from)
    }

    /// Deletes one file. Returns its name.
    ///
    /// # Errors
    /// Read-only, not found, ambiguous id, or a failure.
    pub async fn delete(&self, target: &Target) -> Result<FileName, StoreError> {
        self.check_writable()?;
        let name = self.resolve(target).await?;
        self.backend.delete(&name).await?;
        Ok(name)
    }
}

//! The rules every backend is held to, in one layer over any [`Backend`].
//!
//! Read-only, the size limit, the free-space reserve, names with an upload in progress,
//! Unicode-equivalent names, and which file an id-or-name means ("ids win", and an id shared by
//! several files cannot be renamed or deleted): `PROTOCOL.md` sections 4 and 5. Backends stay
//! thin and never see these rules; this layer never touches storage itself.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::reserve::{Held, Others, Reservation, Uploads, lock};
use super::{
    Backend, Download, FolderBackend, Listing, PartialKey, Space, Staged, StoreConfig, StoreError,
    Target,
};
use crate::id::FileId;
use crate::name::FileName;

/// How long a `RESUME` waits for an upload of the same name to end before it is refused.
const RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The store the server uses: a backend with the protocol's rules around it.
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    config: StoreConfig,
    uploads: Arc<Mutex<Uploads>>,
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
        self.staged.write(data)?;
        lock(&self.reservation.uploads).progress(&self.reservation.name, data.len() as u64);
        Ok(())
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

    /// Completes a resumed upload only if every byte (the kept prefix included) hashes to
    /// `expected`, the client's MD5 of its whole file; otherwise drops it and what was kept, so
    /// the next try starts over (`PROTOCOL.md` section 5.11). Blocking.
    ///
    /// # Errors
    /// [`StoreError::ChecksumMismatch`], or as [`finish`](Self::finish).
    pub fn finish_verified(self, expected: FileId) -> Result<FileId, StoreError> {
        match self.staged.digest() {
            Some(actual) if actual != expected => {
                self.staged.discard();
                Err(StoreError::ChecksumMismatch { expected, actual })
            }
            // A backend that cannot tell before committing never resumes (offset 0, nothing
            // kept); its id is checked by the caller after the commit.
            _ => self.finish(),
        }
    }

    /// Drops the upload and whatever it kept for a resume.
    pub fn discard(self) {
        self.staged.discard();
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

    /// How many group commits of small uploads are durable so far ([`Backend::group_flushes`]).
    #[must_use]
    pub fn group_flushes(&self) -> u64 {
        self.backend.group_flushes()
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
                match self.backend.open(&name).await {
                    Ok(Some(d)) if d.id == id => return Ok(d),
                    // Whatever it becomes, it no longer has this id.
                    Ok(_) | Err(StoreError::BeingWritten(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(name) = &target.name
            && let Some(d) = self.backend.open(name).await?
        {
            return Ok(d);
        }
        Err(StoreError::NotFound(target.clone()))
    }

    /// Opens the first of `names` for download, and reads ahead the small files among those
    /// after it, within `budget` bytes ([`Backend::open_ahead`]): one result per name opened,
    /// in order; `Ok(None)` for no such file.
    pub async fn open_ahead(
        &self,
        names: &[FileName],
        budget: u64,
    ) -> Vec<Result<Option<Download>, StoreError>> {
        self.backend.open_ahead(names, budget).await
    }

    /// Finds the one file `target` means, for rename and delete: ids win, and an id several
    /// files share is refused. A name is returned as is; the backend finds whether it exists.
    async fn resolve(&self, target: &Target) -> Result<FileName, StoreError> {
        if let Some(id) = target.id {
            let names = self.backend.names_of(id).await?;
            let known = names.len();
            let mut live = Vec::new();
            for name in names {
                match self.backend.open(&name).await {
                    Ok(Some(d)) if d.id == id => live.push(name),
                    Ok(_) | Err(StoreError::BeingWritten(_)) => {}
                    Err(e) => return Err(e),
                }
                // Two are enough to refuse: an id shared by 100,000 files must not open them
                // all (issue 10, item 9). The count said is what the index knows.
                if live.len() == 2 {
                    return Err(StoreError::Ambiguous { id, count: known });
                }
            }
            if let Some(one) = live.pop() {
                return Ok(one);
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

    /// Reserves `name` unless it conflicts with a name being written; returns what the other
    /// writes in progress hold.
    fn reserve(&self, name: &FileName, size: u64) -> Result<(Reservation, Others), StoreError> {
        let mut uploads = lock(&self.uploads);
        if let Some(e) = uploads.conflict(name) {
            return Err(e);
        }
        let others = Others {
            bytes: uploads.bytes,
            uploads: uploads.names.len() as u64,
        };
        let held = Held {
            declared: size,
            written: 0,
        };
        uploads.insert(name, held);
        Ok((
            Reservation {
                uploads: Arc::clone(&self.uploads),
                name: name.clone(),
            },
            others,
        ))
    }

    /// [`reserve`](Self::reserve), waiting up to [`RESUME_WAIT`] while an upload of this very
    /// name is still in progress: a resumed try usually follows a connection that broke a
    /// moment ago, whose upload is still letting go of its name.
    async fn reserve_soon(
        &self,
        name: &FileName,
        size: u64,
    ) -> Result<(Reservation, Others), StoreError> {
        let deadline = tokio::time::Instant::now() + RESUME_WAIT;
        loop {
            match self.reserve(name, size) {
                Err(StoreError::UploadInProgress { uploading, .. })
                    if &uploading == name && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
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

    /// Fails unless an upload of `size` bytes to `name` fits beside what the others hold and
    /// the reserves.
    fn check_space(
        &self,
        space: Space,
        name: &FileName,
        size: u64,
        others: Others,
    ) -> Result<(), StoreError> {
        let reserve_and_others = others.bytes.saturating_add(self.config.min_free_space);
        let needed = size.saturating_add(reserve_and_others);
        if needed > space.bytes {
            return Err(StoreError::InsufficientStorage {
                needed,
                available: space.bytes,
            });
        }
        let max = self.config.max_files;
        if self.backend.file_count().saturating_add(others.uploads) >= max {
            return Err(StoreError::TooManyFiles { max });
        }
        if let Some(inodes) = space.inodes {
            // One for the file and at most one per folder of it; one for each upload in
            // progress; and the reserve.
            let needed = (name.components().count() as u64)
                .saturating_add(others.uploads)
                .saturating_add(self.config.min_free_inodes);
            if needed > inodes {
                return Err(StoreError::InsufficientInodes {
                    needed,
                    available: inodes,
                });
            }
        }
        Ok(())
    }

    /// Starts an upload of `size` bytes to `name`, checking in the order of `PROTOCOL.md` 5.2:
    /// read-only, size, conflicts (the name exists, is being uploaded or is equivalent to one
    /// that is, or a folder in it is a file), then free space.
    ///
    /// # Errors
    /// The first check that fails, or a storage failure.
    pub async fn begin_upload(&self, name: FileName, size: u64) -> Result<Upload, StoreError> {
        self.begin_upload_by(name, size, "").await
    }

    /// As [`begin_upload`](Self::begin_upload), recording `uploader` (the session's principal:
    /// a user name, `token:<id>`, or empty) where the backend keeps it.
    ///
    /// # Errors
    /// As [`begin_upload`](Self::begin_upload).
    pub async fn begin_upload_by(
        &self,
        name: FileName,
        size: u64,
        uploader: &str,
    ) -> Result<Upload, StoreError> {
        self.check_writable()?;
        self.check_size(size)?;
        let (reservation, others) = self.reserve(&name, size)?;
        self.check_equivalents(&name).await?;
        let staged = self.backend.begin_by(&name, size, uploader).await?;
        self.check_space(self.backend.free_space()?, &name, size, others)?;
        Ok(Upload {
            staged,
            reservation,
        })
    }

    /// Starts a resumable upload (`RESUME`, `PROTOCOL.md` section 5.11): the checks of
    /// [`begin_upload`](Self::begin_upload), in the same order, then the partial upload kept for
    /// `key` (if any) is continued. Returns the upload and how many bytes it already holds;
    /// the free-space check counts only the bytes still to come (the kept ones are on disk).
    ///
    /// # Errors
    /// As [`begin_upload`](Self::begin_upload).
    pub async fn resume_upload(&self, key: PartialKey) -> Result<(Upload, u64), StoreError> {
        self.check_writable()?;
        self.check_size(key.size)?;
        let (reservation, others) = self.reserve_soon(&key.name, key.size).await?;
        self.check_equivalents(&key.name).await?;
        let (staged, offset) = self.backend.resume(&key).await?;
        let rest = key.size.saturating_sub(offset);
        self.check_space(self.backend.free_space()?, &key.name, rest, others)?;
        lock(&self.uploads).progress(&key.name, offset);
        Ok((
            Upload {
                staged,
                reservation,
            },
            offset,
        ))
    }

    /// Stores several small files with one group commit where the backend has one: each file
    /// is checked as [`begin_upload`](Self::begin_upload) would, appears only once complete and
    /// durable, and gets its own result, in order.
    pub async fn put_batch(
        &self,
        items: Vec<(FileName, Vec<u8>)>,
    ) -> Vec<Result<FileId, StoreError>> {
        self.put_batch_by(items, "").await
    }

    /// As [`put_batch`](Self::put_batch), recording `uploader` as
    /// [`begin_upload_by`](Self::begin_upload_by) does.
    pub async fn put_batch_by(
        &self,
        items: Vec<(FileName, Vec<u8>)>,
        uploader: &str,
    ) -> Vec<Result<FileId, StoreError>> {
        let mut results: Vec<Option<Result<FileId, StoreError>>> = Vec::with_capacity(items.len());
        let mut accepted = Vec::with_capacity(items.len());
        let mut reservations = Vec::with_capacity(items.len());
        let mut space: Option<Space> = None;
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
                self.check_space(available, &name, size, others)?;
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
            self.backend.put_batch_by(accepted, uploader).await
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

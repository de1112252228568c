//! The object-store backend: bytes in an S3 bucket (through OpenDAL), names in a [`Catalog`].
//!
//! Each upload streams into a new immutable object (a *blob*) under a random key
//! (`blobs/<32 hex digits>` below the store's prefix): never a name and never the MD5, so no
//! user controls a key and an MD5 collision made on purpose cannot make two files share bytes.
//! The MD5 id is computed while the bytes pass, as on the folder. An upload becomes visible only
//! when its catalog row is committed, in one transaction that never replaces a name; renames
//! and deletes touch the catalog only. Several servers may share one bucket and one catalog.
//!
//! Blobs no row points to (an upload that failed, a server killed mid-upload, a deleted file)
//! are removed by a background sweep once they are older than a grace period, so a download in
//! progress on another server of a file just deleted still finishes. The sweep never deletes a
//! blob that a row points to or that an upload still writes ([`Catalog::claim_orphan`]).
//!
//! Memory: an upload gathers 1 MiB at a time and queues at most [`QUEUE`] such chunks for the
//! task that feeds OpenDAL's writer, which buffers at most [`PART`] × ([`PARTS`] + 1) bytes (a
//! part being filled and the parts being sent); a download reads ahead at most [`PART`] × 2
//! bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::md5_state::ResumableMd5;
use futures_util::TryStreamExt;
use opendal::{ErrorKind, Operator};
use tokio::runtime::Handle;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::catalog::{Catalog, CatalogEntry, now_ms};
use super::{Backend, Body, Download, Listing, PartialKey, Space, Staged, StoreError};
use crate::id::FileId;
use crate::name::FileName;

/// The size of each part of a multipart upload (S3 asks for at least 5 MiB but the last).
pub const PART: usize = 8 << 20;
/// How many parts of one upload are sent at once.
pub const PARTS: usize = 2;
/// Bytes an upload gathers before it hands them to the writer: one wait on the runtime per
/// MiB rather than per network chunk.
const GATHER: usize = 1 << 20;
/// Gathered chunks queued for the task that feeds the writer: the hashing runs this far ahead
/// of a writer waiting for a free part slot.
const QUEUE: usize = 4;
/// Where blobs live below the store's prefix.
const BLOBS: &str = "blobs/";

/// When the orphan sweep runs and what it spares.
#[derive(Clone, Copy, Debug)]
pub struct SweepConfig {
    /// Time between two sweeps; `None`: no background sweep (tests call
    /// [`ObjectBackend::sweep`]).
    pub every: Option<Duration>,
    /// A blob no row points to is removed once it is this old (downloads of a file deleted
    /// meanwhile get this long to finish).
    pub grace: Duration,
    /// An upload still writing after this long is given up: its blob may be swept and its
    /// commit fails.
    pub upload_grace: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            every: Some(Duration::from_secs(10 * 60)),
            grace: Duration::from_secs(60 * 60),
            upload_grace: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

/// Where the bucket is and how to sign in.
#[derive(Clone, Default)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// The endpoint URL (`http://127.0.0.1:3900`); empty for AWS.
    pub endpoint: String,
    /// The region.
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, if the credentials are temporary.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Location {
    /// Parses `s3://BUCKET/PREFIX` (the prefix is optional).
    ///
    /// # Errors
    /// If it is not of that form.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("expected s3://BUCKET/PREFIX, got {url}"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("no bucket in {url}"));
        }
        Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
    }

    /// An OpenDAL operator for this bucket and prefix.
    ///
    /// # Errors
    /// If the settings are refused.
    pub fn operator(&self) -> Result<Operator, StoreError> {
        // reqwest's TLS uses the process's rustls provider: the server's own (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
        let mut b = opendal::services::S3::default()
            .bucket(&self.bucket)
            .root(&format!("/{}", self.prefix))
            .region(&self.region)
            .access_key_id(&self.access_key_id)
            .secret_access_key(&self.secret_access_key)
            // Only the credentials given: no profile files, no instance metadata lookups.
            .disable_config_load()
            .disable_ec2_metadata();
        if !self.endpoint.is_empty() {
            b = b.endpoint(&self.endpoint);
        }
        if let Some(token) = &self.session_token {
            b = b.session_token(token);
        }
        Ok(Operator::new(b)
            .map_err(dal)?
            .layer(opendal::layers::RetryLayer::new().with_max_times(4)))
    }
}

fn dal(e: opendal::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// A fresh random blob key.
fn blob_key() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Backend(e.to_string().into()))?;
    Ok(format!("{BLOBS}{}", hex::encode(bytes)))
}

/// Files in an object store, named by a catalog.
#[derive(Debug)]
pub struct ObjectBackend {
    op: Operator,
    catalog: Arc<dyn Catalog>,
    files: Arc<AtomicU64>,
    /// Bytes the files hold, as last counted (followed between listings).
    used: Arc<AtomicU64>,
    quota: u64,
    sweep: SweepConfig,
    stop: CancellationToken,
}

impl ObjectBackend {
    /// A backend over `op` (a bucket and prefix) and `catalog` that holds at most `quota`
    /// bytes of files; starts the background sweep if `sweep.every` is set. Call from inside a
    /// Tokio runtime.
    ///
    /// # Errors
    /// If the catalog cannot be read.
    pub async fn open(
        op: Operator,
        catalog: Arc<dyn Catalog>,
        quota: u64,
        sweep: SweepConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let (files, used) = catalog.usage().await?;
        let this = Arc::new(Self {
            op,
            catalog,
            files: Arc::new(AtomicU64::new(files)),
            used: Arc::new(AtomicU64::new(used)),
            quota,
            sweep,
            stop: CancellationToken::new(),
        });
        if let Some(every) = sweep.every {
            let weak = Arc::downgrade(&this);
            let stop = this.stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(every) => {}
                    }
                    let Some(this) = weak.upgrade() else { break };
                    match this.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "swept orphan blobs"),
                        Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
                    }
                }
            });
        }
        Ok(this)
    }

    /// Removes the blobs no row points to that are older than the grace period; returns how
    /// many. Never removes a blob a row points to or an upload in progress writes (unless it
    /// is older than the upload grace).
    ///
    /// # Errors
    /// If the bucket or the catalog cannot be read.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let old = now
            .checked_sub(self.sweep.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let stale_upload = now_ms()
            .saturating_sub(i64::try_from(self.sweep.upload_grace.as_millis()).unwrap_or(i64::MAX));
        let mut lister = self
            .op
            .lister_with(BLOBS)
            .recursive(true)
            .await
            .map_err(dal)?;
        let mut removed = 0;
        while let Some(entry) = lister.try_next().await.map_err(dal)? {
            if entry.metadata().is_dir() {
                continue;
            }
            let modified = match entry.metadata().last_modified() {
                Some(t) => t,
                None => match self.op.stat(entry.path()).await {
                    Ok(m) => match m.last_modified() {
                        Some(t) => t,
                        None => continue,
                    },
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(dal(e)),
                },
            };
            if SystemTime::from(modified) > old {
                continue;
            }
            if self
                .catalog
                .claim_orphan(entry.path(), stale_upload)
                .await?
            {
                self.op.delete(entry.path()).await.map_err(dal)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The operator (tests look at the bucket through it).
    #[must_use]
    pub fn operator(&self) -> &Operator {
        &self.op
    }
}

#[async_trait::async_trait]
impl Backend for ObjectBackend {
    async fn list(&self) -> Result<Listing, StoreError> {
        let entries = self.catalog.listing().await?;
        self.files.store(entries.len() as u64, Ordering::Relaxed);
        self.used
            .store(entries.iter().map(|r| r.size).sum(), Ordering::Relaxed);
        Ok(Listing::from_entries(entries, 0))
    }

    async fn names_of(&self, id: FileId) -> Result<Vec<FileName>, StoreError> {
        self.catalog.names_of(id).await
    }

    async fn equivalents(&self, name: &FileName) -> Result<Vec<FileName>, StoreError> {
        self.catalog.equivalents(name).await
    }

    async fn open(&self, name: &FileName) -> Result<Option<Download>, StoreError> {
        let Some(row) = self.catalog.get(name).await? else {
            return Ok(None);
        };
        let body = if row.size <= super::INLINE_BODY {
            match self.op.read(&row.blob).await {
                Ok(b) => Body::Bytes(b.to_vec()),
                // Deleted and swept meanwhile: it is gone.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(dal(e)),
            }
        } else {
            let reader = self
                .op
                .reader_with(&row.blob)
                .chunk(PART)
                .concurrent(2)
                .await
                .map_err(dal)?;
            let read = match reader.into_futures_async_read(0..row.size).await {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(dal(e)),
            };
            Body::Reader(Box::pin(read.compat()))
        };
        Ok(Some(Download {
            size: row.size,
            id: row.id,
            name: row.name,
            body,
        }))
    }

    async fn begin(&self, name: &FileName, size: u64) -> Result<Box<dyn Staged>, StoreError> {
        self.begin_by(name, size, "").await
    }

    async fn begin_by(
        &self,
        name: &FileName,
        size: u64,
        uploader: &str,
    ) -> Result<Box<dyn Staged>, StoreError> {
        self.catalog.check_free(name).await?;
        let blob = blob_key()?;
        self.catalog.stage(&blob).await?;
        let writer = self
            .op
            .writer_with(&blob)
            .chunk(PART)
            .concurrent(PARTS)
            .await;
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                let _ = self.catalog.unstage(&blob).await;
                return Err(dal(e));
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        Ok(Box::new(ObjectUpload {
            rt: Handle::current(),
            tx: Some(tx),
            task: Some(tokio::spawn(feed(writer, rx))),
            op: self.op.clone(),
            catalog: Arc::clone(&self.catalog),
            files: Arc::clone(&self.files),
            used: Arc::clone(&self.used),
            blob,
            name: name.clone(),
            uploader: uploader.to_owned(),
            size,
            received: 0,
            hasher: ResumableMd5::new(),
            gathered: Vec::new(),
        }))
    }

    async fn resume(&self, key: &PartialKey) -> Result<(Box<dyn Staged>, u64), StoreError> {
        // No partial upload is kept (README, "Running on several machines": why): a resume
        // starts over, recorded as its principal's.
        Ok((self.begin_by(&key.name, key.size, &key.owner).await?, 0))
    }

    async fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError> {
        self.catalog.rename(from, to).await
    }

    async fn delete(&self, name: &FileName) -> Result<(), StoreError> {
        // The blob stays until the sweep: a download of it may be running on another server.
        let gone = self.catalog.delete(name).await?;
        let _ = self
            .files
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(gone.size))
            });
        Ok(())
    }

    fn free_space(&self) -> Result<Space, StoreError> {
        // An object store has no free-space figure: the space is the configured quota less
        // what the files hold (blobs waiting for the sweep are not counted).
        Ok(Space {
            bytes: self.quota.saturating_sub(self.used.load(Ordering::Relaxed)),
            inodes: None,
        })
    }

    fn file_count(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.stop.cancel();
    }
}

/// What the hashing side hands to the task that feeds OpenDAL's writer.
enum Feed {
    /// Bytes to append.
    Bytes(Vec<u8>),
    /// Every byte was handed over: complete the object.
    Close,
}

/// Feeds `writer` what arrives on `rx`, so the MD5 of the next bytes is computed while OpenDAL
/// waits for a free part slot (hashing and sending parts overlap instead of taking turns).
/// Completes the object on [`Feed::Close`]; aborts the multipart upload on a failure or when
/// the sender goes away without closing (the upload was given up).
async fn feed(
    mut writer: opendal::Writer,
    mut rx: tokio::sync::mpsc::Receiver<Feed>,
) -> Result<(), opendal::Error> {
    loop {
        let done = match rx.recv().await {
            Some(Feed::Bytes(b)) => match writer.write(b).await {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            Some(Feed::Close) => writer.close().await.map(drop),
            None => Err(opendal::Error::new(
                ErrorKind::Unexpected,
                "the upload was given up",
            )),
        };
        if done.is_err() {
            let _ = writer.abort().await;
        }
        return done;
    }
}

/// An upload streaming into a new blob; visible once its catalog row commits.
struct ObjectUpload {
    rt: Handle,
    /// To the task that feeds the writer; `None` once closed (committed) or given up.
    tx: Option<tokio::sync::mpsc::Sender<Feed>>,
    /// That task: its result says whether the object is complete.
    task: Option<tokio::task::JoinHandle<Result<(), opendal::Error>>>,
    op: Operator,
    catalog: Arc<dyn Catalog>,
    files: Arc<AtomicU64>,
    used: Arc<AtomicU64>,
    blob: String,
    name: FileName,
    /// Who uploads it (recorded in its catalog row).
    uploader: String,
    size: u64,
    received: u64,
    hasher: ResumableMd5,
    /// Bytes not yet handed to the writer (less than [`GATHER`]).
    gathered: Vec<u8>,
}

impl std::fmt::Debug for ObjectUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectUpload")
            .field("blob", &self.blob)
            .field("name", &self.name)
            .field("size", &self.size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl ObjectUpload {
    /// Why the feeding task stopped early (it only stops early on a failure).
    fn failure(&mut self) -> StoreError {
        self.tx = None;
        let Some(task) = self.task.take() else {
            return StoreError::Backend("the upload ended".into());
        };
        match self.rt.block_on(task) {
            Ok(Err(e)) => dal(e),
            Ok(Ok(())) => StoreError::Backend("the upload ended early".into()),
            Err(e) => StoreError::worker(&e),
        }
    }

    /// Hands `chunk` to the feeding task; waits (on this blocking thread) while its queue is
    /// full.
    fn hand(&mut self, chunk: Feed) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else {
            return Err(StoreError::Backend("write after the upload ended".into()));
        };
        if tx.blocking_send(chunk).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }
}

impl Staged for ObjectUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let received = self.received + data.len() as u64;
        if received > self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received,
            });
        }
        if self.tx.is_none() {
            return Err(StoreError::Backend("write after the upload ended".into()));
        }
        self.hasher.update(data);
        self.gathered.extend_from_slice(data);
        self.received = received;
        if self.gathered.len() >= GATHER {
            let chunk = std::mem::replace(&mut self.gathered, Vec::with_capacity(GATHER));
            // Called on a blocking thread (the trait's contract), so waiting is fine.
            self.hand(Feed::Bytes(chunk))?;
        }
        Ok(())
    }

    fn digest(&self) -> Option<FileId> {
        // Every byte written so far passed through the hasher: a resumed upload's mismatch is
        // caught before anything becomes visible.
        Some(self.hasher.clone().finalize())
    }

    fn commit(mut self: Box<Self>) -> Result<FileId, StoreError> {
        if self.received != self.size {
            return Err(StoreError::Incomplete {
                expected: self.size,
                received: self.received,
            });
        }
        let id = std::mem::take(&mut self.hasher).finalize();
        let last = std::mem::take(&mut self.gathered);
        if !last.is_empty() {
            self.hand(Feed::Bytes(last))?;
        }
        self.hand(Feed::Close)?;
        self.tx = None;
        let task = self
            .task
            .take()
            .ok_or_else(|| StoreError::Backend("commit after the upload ended".into()))?;
        let now = now_ms();
        let entry = CatalogEntry {
            name: self.name.clone(),
            blob: self.blob.clone(),
            size: self.size,
            id,
            created_ms: now,
            modified_ms: now,
            uploader: std::mem::take(&mut self.uploader),
        };
        let catalog = Arc::clone(&self.catalog);
        let op = self.op.clone();
        let rt = self.rt.clone();
        let done = rt.block_on(async {
            let written = match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(dal(e)),
                Err(e) => Err(StoreError::worker(&e)),
            };
            if let Err(e) = written {
                // The multipart upload was aborted: no object, and nothing for the sweep.
                let _ = catalog.unstage(&entry.blob).await;
                return Err(e);
            }
            match catalog.commit(&entry).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Not visible: the blob goes now rather than waiting for the sweep.
                    let _ = catalog.unstage(&entry.blob).await;
                    let _ = op.delete(&entry.blob).await;
                    Err(e)
                }
            }
        });
        // Whatever happened, the drop below has nothing left to clean.
        self.blob.clear();
        done?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.used.fetch_add(self.size, Ordering::Relaxed);
        Ok(id)
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        if self.blob.is_empty() {
            return;
        }
        // Given up: closing the queue makes the feeding task abort the multipart upload; then
        // the blob is forgotten, in the background (a drop must not wait). If this never runs
        // (the server is killed), the sweep removes it.
        self.tx = None;
        let task = self.task.take();
        let blob = std::mem::take(&mut self.blob);
        let catalog = Arc::clone(&self.catalog);
        let op = self.op.clone();
        self.rt.spawn(async move {
            if let Some(task) = task {
                let _ = task.await;
            }
            let _ = op.delete(&blob).await;
            let _ = catalog.unstage(&blob).await;
        });
    }
}

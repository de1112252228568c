//! The store test suite: every rule of the policy layer and every promise a backend makes
//! ([`suite`]), run against every backend (the folder on a temp folder, memory, and the object
//! backend on an in-process S3 server with a SQLite catalog, [`object`]); and the
//! tests of what only a folder has ([`folder_only`]: symlinks, the index, the temp area,
//! hashing in the background). The helpers shared by both live here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::*;

mod budgets;
#[cfg(feature = "s3")]
mod catalog;
mod folder_only;
#[cfg(feature = "s3")]
mod object;
mod suite;
use crate::name::FileName;

/// A backend under test, with ways to look at what it holds without going through the store.
trait Fixture {
    /// A store over this fixture's backend, with `config`. Opening again after `close` sees
    /// the same files where the backend keeps them (the folder).
    fn open(&self, config: StoreConfig) -> Arc<Store>;
    /// The bytes stored under `name`, read directly (for the folder, from the disk).
    fn raw(&self, name: &str) -> Option<Vec<u8>>;
    /// Staged uploads not cleaned up (the folder's temp area).
    fn leftovers(&self) -> usize;
}

struct Folder(tempfile::TempDir);

impl Folder {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
}

impl Fixture for Folder {
    fn open(&self, config: StoreConfig) -> Arc<Store> {
        Store::open(self.0.path(), config).unwrap()
    }
    fn raw(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.0.path().join(name)).ok()
    }
    fn leftovers(&self) -> usize {
        std::fs::read_dir(self.0.path().join(".barge/tmp"))
            .unwrap()
            .count()
    }
}

struct Memory(std::sync::Mutex<Option<Arc<MemoryBackend>>>);

impl Memory {
    fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl Fixture for Memory {
    fn open(&self, config: StoreConfig) -> Arc<Store> {
        let backend = Arc::new(MemoryBackend::new(1 << 40));
        *self.0.lock().unwrap() = Some(Arc::clone(&backend));
        Store::new(backend, config)
    }
    fn raw(&self, name: &str) -> Option<Vec<u8>> {
        let backend = self.0.lock().unwrap().clone()?;
        let name = FileName::parse(name).ok()?;
        let d = now(backend.open(&name))?.unwrap()?;
        Some(now(body(d)).expect("a memory body is always ready"))
    }
    fn leftovers(&self) -> usize {
        0
    }
}

/// Runs a future that never waits (the memory backend's) to its end, or `None` if it would wait.
fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let f = std::pin::pin!(f);
    match f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn n(s: &str) -> FileName {
    FileName::parse(s).unwrap()
}

/// A target from text, as the server makes one from a request.
fn r(s: &str) -> Target {
    Target {
        id: crate::id::FileId::parse(s).ok(),
        name: FileName::parse(s).ok(),
    }
}

async fn put(store: &Store, name: &str, data: &[u8]) -> Result<FileId, StoreError> {
    let mut up = store.begin_upload(n(name), data.len() as u64).await?;
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || {
        up.write(&data)?;
        up.finish()
    })
    .await
    .unwrap()
}

/// The whole body of a download, whatever its form.
async fn body(d: Download) -> Vec<u8> {
    let mut got = Vec::new();
    match d.body {
        Body::Bytes(b) => got = b,
        Body::File(mut f) => {
            f.read_to_end(&mut got).unwrap();
        }
        Body::Reader(mut r) => {
            r.read_to_end(&mut got).await.unwrap();
        }
    }
    got
}

async fn names(store: &Store) -> Vec<String> {
    let l = store.list().await.unwrap();
    l.entries()
        .into_iter()
        .map(|e| e.name.as_str().to_owned())
        .collect()
}

/// Runs each listed test against both backends.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod folder {
            $(
                #[tokio::test]
                async fn $test() {
                    super::suite::$test(&super::Folder::new()).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::suite::$test(&super::Memory::new()).await;
                }
            )*
        }
        #[cfg(feature = "s3")]
        mod s3 {
            $(
                #[tokio::test]
                async fn $test() {
                    super::suite::$test(&super::object::S3::new()).await;
                }
            )*
        }
    };
}

suite!(
    upload_list_download_round_trip,
    existing_names_and_reservations_conflict,
    uploads_in_progress_hold_their_folders_and_what_is_under_them,
    incomplete_and_overlong_uploads_leave_nothing,
    limits_and_read_only,
    rename_and_delete,
    ids_win_over_names,
    names_differing_only_by_normalisation_conflict,
    batch_gives_each_file_its_own_result_in_order,
    the_file_count_is_limited,
    a_listing_is_a_snapshot_read_in_pieces,
);

//! Files and folders changed by hand between listings (issue 11): each kind of change is listed
//! right by the very next listing, and, where the system lets barge watch the folder, without
//! walking the whole folder again.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::store::Backend;

/// A backend on `dir` whose start-up scan and first whole walk are over, so that every later whole walk is one
/// the watcher asked for.
async fn opened(dir: &Path) -> FolderBackend {
    let backend = FolderBackend::open(dir, StoreConfig::default()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let l = backend.list().await.unwrap();
        // The start-up scan too: one that ends late takes up the test's changes with no time
        // to hash them, and the next listing would count them pending.
        if l.pending == 0
            && backend.inner.first_scan_done.load(Ordering::Acquire)
            && backend
                .inner
                .watcher
                .as_ref()
                .is_none_or(watch::Watcher::synced)
        {
            return backend;
        }
        assert!(std::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn id_of(data: &[u8]) -> FileId {
    crate::md5_state::md5_of(data)
}

/// The backend's listing must be exactly `want` (name → content), with nothing pending; and
/// with a watcher, it took no whole walk.
async fn lists(backend: &FolderBackend, want: &[(&str, &[u8])]) {
    let walks = backend.inner.full_walks.load(Ordering::Relaxed);
    let l = backend.list().await.unwrap();
    let got: Vec<(String, FileId, u64)> = l
        .iter()
        .map(|(n, id, size)| (n.as_str().to_owned(), id, size))
        .collect();
    let mut expected: Vec<(String, FileId, u64)> = want
        .iter()
        .map(|(n, d)| ((*n).to_owned(), id_of(d), d.len() as u64))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(l.pending, 0);
    if backend.inner.watcher.is_some() {
        assert_eq!(
            backend.inner.full_walks.load(Ordering::Relaxed),
            walks,
            "the whole folder was walked"
        );
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

#[tokio::test]
async fn added_removed_and_renamed_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", b"a");
    write(dir.path(), "sub/b", b"b");
    let backend = opened(dir.path()).await;
    lists(&backend, &[("a", b"a"), ("sub/b", b"b")]).await;
    write(dir.path(), "sub/c", b"new");
    lists(&backend, &[("a", b"a"), ("sub/b", b"b"), ("sub/c", b"new")]).await;
    fs::remove_file(dir.path().join("a")).unwrap();
    lists(&backend, &[("sub/b", b"b"), ("sub/c", b"new")]).await;
    fs::rename(dir.path().join("sub/b"), dir.path().join("b2")).unwrap();
    lists(&backend, &[("b2", b"b"), ("sub/c", b"new")]).await;
    // Known by its old name's id only once rehashed, never under the old name.
    assert!(backend.names_of(id_of(b"b")).await.unwrap() == [FileName::parse("b2").unwrap()]);
}

#[tokio::test]
async fn replaced_and_modified_in_place() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "r", b"before");
    write(dir.path(), "m", b"0123456789");
    write(dir.path(), "t", b"same size");
    let backend = opened(dir.path()).await;
    lists(
        &backend,
        &[("m", b"0123456789"), ("r", b"before"), ("t", b"same size")],
    )
    .await;
    // Replaced by a rename over it.
    write(dir.path(), "r.new", b"after, longer");
    fs::rename(dir.path().join("r.new"), dir.path().join("r")).unwrap();
    // Written in place, same size, through a handle left open.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("m"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"ABCDE").unwrap();
    lists(
        &backend,
        &[
            ("m", b"ABCDE56789"),
            ("r", b"after, longer"),
            ("t", b"same size"),
        ],
    )
    .await;
    drop(f);
    // Same size, and its mtime set back in time: only its times say it changed.
    fs::write(dir.path().join("t"), b"SAME SIZE").unwrap();
    let f = fs::File::options()
        .write(true)
        .open(dir.path().join("t"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    drop(f);
    lists(
        &backend,
        &[
            ("m", b"ABCDE56789"),
            ("r", b"after, longer"),
            ("t", b"SAME SIZE"),
        ],
    )
    .await;
}

#[tokio::test]
async fn folders_created_renamed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(dir.path(), "keep", b"k");
    let backend = opened(dir.path()).await;
    // A tree made elsewhere and moved in, and one made in place.
    write(outside.path(), "tree/x/1", b"1");
    write(outside.path(), "tree/x/y/2", b"2");
    fs::rename(outside.path().join("tree"), dir.path().join("tree")).unwrap();
    write(dir.path(), "made/here/3", b"3");
    lists(
        &backend,
        &[
            ("keep", b"k"),
            ("made/here/3", b"3"),
            ("tree/x/1", b"1"),
            ("tree/x/y/2", b"2"),
        ],
    )
    .await;
    // Renamed within the folder; a file added in it afterwards is seen under the new name.
    fs::rename(dir.path().join("tree/x"), dir.path().join("moved")).unwrap();
    write(dir.path(), "moved/y/4", b"4");
    lists(
        &backend,
        &[
            ("keep", b"k"),
            ("made/here/3", b"3"),
            ("moved/1", b"1"),
            ("moved/y/2", b"2"),
            ("moved/y/4", b"4"),
        ],
    )
    .await;
    // Removed, and moved out: a change made in it afterwards is not listed.
    fs::remove_dir_all(dir.path().join("made")).unwrap();
    fs::rename(dir.path().join("moved"), outside.path().join("gone")).unwrap();
    lists(&backend, &[("keep", b"k")]).await;
    write(outside.path(), "gone/5", b"5");
    lists(&backend, &[("keep", b"k")]).await;
    // A folder replaced by a file of the same name.
    fs::create_dir(dir.path().join("swap")).unwrap();
    write(dir.path(), "swap/in", b"in");
    lists(&backend, &[("keep", b"k"), ("swap/in", b"in")]).await;
    fs::remove_dir_all(dir.path().join("swap")).unwrap();
    write(dir.path(), "swap", b"file");
    lists(&backend, &[("keep", b"k"), ("swap", b"file")]).await;
}

/// Symlinks made by hand are never listed, even when only events (no walk) report them.
#[tokio::test]
async fn symlinks_made_by_hand_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret/s", b"s");
    let backend = opened(dir.path()).await;
    std::os::unix::fs::symlink(outside.path().join("secret/s"), dir.path().join("l")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("d")).unwrap();
    write(dir.path(), "real", b"r");
    lists(&backend, &[("real", b"r")]).await;
}

/// When the events cannot be trusted (the kernel's queue overflowed), the next listing walks
/// the whole folder, and it is right.
#[tokio::test]
async fn lost_events_mean_a_whole_walk() {
    let dir = tempfile::tempdir().unwrap();
    let backend = opened(dir.path()).await;
    let Some(watcher) = backend.inner.watcher.as_ref() else {
        return; // No watcher here: every listing walks.
    };
    write(dir.path(), "a", b"a");
    watcher.lose();
    let walks = backend.inner.full_walks.load(Ordering::Relaxed);
    let l = backend.list().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(backend.inner.full_walks.load(Ordering::Relaxed), walks + 1);
    assert!(watcher.synced());
}

//! What only the folder backend has: symlinks, its index, its temp area, files dropped in by
//! hand, hashing in the background.

use super::*;

fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open(dir, StoreConfig::default()).unwrap()
}

#[tokio::test]
async fn files_changed_behind_our_back_are_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::fs::write(dir.path().join("dropped.txt"), b"by hand").unwrap();
    let l = store.list().await.unwrap();
    assert_eq!(l.entries().len(), 1);
    let old = l.entries()[0].id;
    std::fs::write(dir.path().join("dropped.txt"), b"changed, longer").unwrap();
    // Listed with its new id; if the background hasher was reading the old bytes as they
    // changed, the file is pending until it has been quiet for 2 s (README: a file changed
    // while it was hashed), so a listing may first count it as pending.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let l = loop {
        let l = store.list().await.unwrap();
        if !l.entries().is_empty() || std::time::Instant::now() > deadline {
            break l;
        }
        assert_eq!(l.pending, 1, "neither listed nor pending");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(l.entries().len(), 1, "still pending after 10 s");
    assert_ne!(l.entries()[0].id, old);
    assert!(matches!(
        store.download(&r(&old.to_hex())).await,
        Err(StoreError::NotFound(_))
    ));
    std::fs::remove_file(dir.path().join("dropped.txt")).unwrap();
    assert!(store.list().await.unwrap().entries().is_empty());
}

#[tokio::test]
async fn equivalent_names_dropped_in_by_hand_conflict_before_any_listing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::fs::create_dir(dir.path().join("m\u{e9}")).unwrap();
    std::fs::write(dir.path().join("m\u{e9}/n\u{e9}"), b"by hand").unwrap();
    // Not walked yet, but its whole-name forms are looked up on disk.
    assert!(matches!(
        put(&store, "me\u{301}/ne\u{301}", b"x").await,
        Err(StoreError::Equivalent { .. })
    ));
    // After a listing, mixed forms are known too.
    store.list().await.unwrap();
    assert!(matches!(
        put(&store, "m\u{e9}/ne\u{301}", b"x").await,
        Err(StoreError::Equivalent { .. })
    ));
}

#[tokio::test]
async fn symlinks_and_state_are_never_shared() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let store = open(dir.path());
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
    let l = store.list().await.unwrap();
    assert!(l.entries().is_empty(), "{:?}", l.entries());
    assert!(matches!(
        store.download(&r("link")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.download(&r("dirlink/secret")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        put(&store, "dirlink/new", b"x").await,
        Err(StoreError::NotAFolder(_))
    ));
    assert!(matches!(
        store.delete(&r("link")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.rename(&r("link"), &n("moved")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!outside.path().join("new").exists());
    assert!(outside.path().join("secret").exists());
    assert!(dir.path().join("link").is_symlink());
}

#[tokio::test]
async fn restart_keeps_ids_and_clears_temp() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = put(&store, "kept", b"kept").await.unwrap();
    store.close();
    drop(store);
    std::fs::write(dir.path().join(".barge/tmp/999-1.part"), b"leftover").unwrap();
    let backend = FolderBackend::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join(".barge/tmp"))
            .unwrap()
            .count(),
        0
    );
    // Known from the saved index, before any listing or hashing.
    assert_eq!(backend.names_of(id).await.unwrap(), [n("kept")]);
    let store = Store::new(Arc::new(backend), StoreConfig::default());
    assert_eq!(store.list().await.unwrap().entries()[0].id, id);
}

#[tokio::test]
async fn large_unknown_files_are_hashed_in_background() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), vec![7u8; 3000]).unwrap();
    let cfg = StoreConfig {
        inline_hash_budget: 1000,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    // Eventually listed, without the listing ever blocking on it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let l = store.list().await.unwrap();
        if l.entries().len() == 1 {
            assert_eq!(l.pending, 0);
            break;
        }
        assert_eq!(l.pending, 1);
        assert!(std::time::Instant::now() < deadline, "never hashed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn listing_hashes_only_for_its_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let cfg = StoreConfig {
        inline_hash_time: std::time::Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    let first = store.list().await.unwrap();
    assert_eq!(first.entries().len() + first.pending, 50);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.list().await.unwrap().entries().len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "background hashing never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Issue 10 item 11: `.barge/tmp` (or all of `.barge`) deleted while running is recreated by the
/// next upload instead of breaking every upload until a restart.
#[tokio::test]
async fn deleted_temp_area_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "before", b"1").await.unwrap();
    std::fs::remove_dir(dir.path().join(".barge/tmp")).unwrap();
    put(&store, "after-tmp", b"2").await.unwrap();
    assert!(dir.path().join(".barge/tmp").is_dir());
    std::fs::remove_dir_all(dir.path().join(".barge")).unwrap();
    put(&store, "after-state", b"3").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("after-state")).unwrap(), b"3");
    assert_eq!(names(&store).await, ["after-state", "after-tmp", "before"]);
}

/// Issue 10 item 1: an index cut short (redb panicked on it) is set aside and rebuilt when
/// the store opens, and the files are listed with their true ids.
#[tokio::test]
async fn truncated_index_is_rebuilt_at_open() {
    use md5::Digest;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..50 {
        put(&store, &format!("f{i}"), format!("body {i}").as_bytes())
            .await
            .unwrap();
    }
    store.close();
    drop(store);
    let index = dir.path().join(".barge/index.redb");
    let len = std::fs::metadata(&index).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap();
    file.set_len(len - 1).unwrap();
    drop(file);
    let store = open(dir.path());
    let listed = store.list().await.unwrap();
    assert_eq!(listed.entries().len() + listed.pending, 50);
    for e in &listed.entries() {
        let i = &e.name.as_str()[1..];
        let want: [u8; 16] = md5::Md5::digest(format!("body {i}").as_bytes()).into();
        assert_eq!(e.id, FileId(want));
    }
}

/// Every folder on disk under `root`, outside the state folder, as relative paths.
/// Writes `body` into `up` and stores it, on the blocking pool as the server does.
async fn write_and_finish(mut up: Upload, body: &'static [u8]) -> Result<FileId, StoreError> {
    tokio::task::spawn_blocking(move || {
        up.write(body)?;
        up.finish()
    })
    .await
    .unwrap()
}

fn folders(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() && e.file_name() != ".barge" {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push(rel);
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Issue 10 item 5: a file's folders go with its last file, on delete and on rename; folders
/// that still hold something stay; a rename that fails creates none.
#[tokio::test]
async fn empty_folders_go_with_their_last_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let deep = (0..31)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    put(&store, &format!("{deep}/f"), b"1").await.unwrap();
    put(&store, "keep/a/one", b"2").await.unwrap();
    put(&store, "keep/two", b"3").await.unwrap();
    store.delete(&r(&format!("{deep}/f"))).await.unwrap();
    store
        .rename(&r("keep/a/one"), &n("moved/x/one"))
        .await
        .unwrap();
    assert_eq!(folders(dir.path()), ["keep", "moved", "moved/x"]);
    // A rename onto a taken name through new folders creates none for good.
    put(&store, "blocker", b"4").await.unwrap();
    assert!(
        store
            .rename(&r("keep/two"), &n("blocker/y/z"))
            .await
            .is_err()
    );
    std::fs::create_dir_all(dir.path().join("new/deeper")).unwrap();
    std::fs::write(dir.path().join("new/deeper/taken"), b"by hand").unwrap();
    assert!(matches!(
        store.rename(&r("keep/two"), &n("new/deeper/taken")).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        folders(dir.path()),
        ["keep", "moved", "moved/x", "new", "new/deeper"]
    );
    // An upload whose name is taken by hand while it runs fails, and removes no folder that
    // still holds something.
    let up = store.begin_upload(n("late/sub/f"), 1).await.unwrap();
    std::fs::create_dir_all(dir.path().join("late/sub")).unwrap();
    std::fs::write(dir.path().join("late/sub/f"), b"first").unwrap();
    let done = write_and_finish(up, b"z").await;
    assert!(matches!(done, Err(StoreError::Exists(_))));
    std::fs::remove_file(dir.path().join("late/sub/f")).unwrap();
    // A folder made by hand where the upload was to land is said to be one.
    let up = store.begin_upload(n("late/sub/g"), 1).await.unwrap();
    std::fs::create_dir_all(dir.path().join("late/sub/g/h")).unwrap();
    let done = write_and_finish(up, b"z").await;
    assert!(matches!(done, Err(StoreError::FolderExists(f)) if f == n("late/sub/g")));
    std::fs::remove_dir_all(dir.path().join("late/sub/g")).unwrap();
    store.delete(&r("moved/x/one")).await.unwrap();
    assert_eq!(
        folders(dir.path()),
        ["keep", "late", "late/sub", "new", "new/deeper"]
    );
}

#[tokio::test]
async fn downloads_are_read_ahead_only_while_small_and_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "a", b"first").await.unwrap();
    put(&store, "b", b"second").await.unwrap();
    put(&store, "big", &vec![7u8; 100 * 1024]).await.unwrap();
    put(&store, "c", b"third").await.unwrap();
    let names = [n("a"), n("b"), n("big"), n("c")];
    let got = store.open_ahead(&names, 1024).await;
    // The first is always opened; small ones after it are read whole; the read-ahead stops
    // at the first too large to hold, or unknown to the index (opened when its turn comes).
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[1], Ok(Some(d)) if matches!(&d.body, Body::Bytes(b) if b == b"second")));
    let unknown = [n("a"), n("gone"), n("c")];
    assert_eq!(store.open_ahead(&unknown, 1024).await.len(), 1);
    // Past the budget: only the first.
    assert_eq!(store.open_ahead(&names, 3).await.len(), 1);
}

/// The saved MD5 state of partial uploads (`RESUME`): a resume takes it up instead of hashing
/// the kept bytes again, and falls back to hashing them when the state is missing, damaged,
/// another partial's, or covers more than the partial holds.
mod partial_state {
    use super::*;
    use crate::id::FileId;
    use md5::Digest as _;

    const SIZE: u64 = 10_000;

    fn key() -> PartialKey {
        PartialKey {
            owner: String::new(),
            name: FileName::parse("big.bin").unwrap(),
            size: SIZE,
        }
    }

    fn body() -> Vec<u8> {
        (0..SIZE).map(|i| (i * 13 % 251) as u8).collect()
    }

    fn md5(data: &[u8]) -> FileId {
        FileId(md5::Md5::digest(data).into())
    }

    fn files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join(".barge/partial"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect()
    }

    /// Sends the first `cut` bytes of `body()` with `RESUME`, then breaks off.
    async fn interrupted(store: &Store, cut: usize) {
        let (mut up, offset) = store.resume_upload(key()).await.unwrap();
        assert_eq!(offset, 0);
        up.write(&body()[..cut]).unwrap();
        drop(up);
    }

    /// Resumes, sends the rest, and returns what the server's MD5 says and whether it stored.
    async fn resumed(store: &Store) -> (u64, Result<FileId, StoreError>) {
        let (mut up, offset) = store.resume_upload(key()).await.unwrap();
        up.write(&body()[usize::try_from(offset).unwrap()..])
            .unwrap();
        (offset, up.finish_verified(md5(&body())))
    }

    /// Overwrites the kept bytes in place (same file, same length) with zeros: only a resume
    /// that takes up the saved state, rather than hashing them, still gets the right MD5.
    fn scribble_over_partial(dir: &std::path::Path) {
        use std::io::Write as _;
        let part = &files(dir, "part")[0];
        let len = std::fs::metadata(part).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(part).unwrap();
        f.write_all(&vec![0u8; usize::try_from(len).unwrap()])
            .unwrap();
    }

    /// The cap on kept partials drops only partials no upload is writing: more resumable
    /// uploads at once than the cap all land (each began as the newest, and before the fix each
    /// new one dropped the oldest running one under it: 100 clients uploading at once with the
    /// cap of 64 saw 36 of them fail).
    #[tokio::test]
    async fn partials_being_written_are_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            max_partials: 2,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), config).unwrap();
        let data = body();
        let key_of = |i: usize| PartialKey {
            owner: String::new(),
            name: FileName::parse(&format!("f{i}.bin")).unwrap(),
            size: SIZE,
        };
        let mut running = Vec::new();
        for i in 0..5 {
            let (mut up, offset) = store.resume_upload(key_of(i)).await.unwrap();
            assert_eq!(offset, 0);
            up.write(&data[..4_000]).unwrap();
            running.push(up);
        }
        for mut up in running {
            up.write(&data[4_000..]).unwrap();
            assert_eq!(up.finish_verified(md5(&data)).unwrap(), md5(&data));
        }
        for i in 0..5 {
            let got = std::fs::read(dir.path().join(format!("f{i}.bin"))).unwrap();
            assert!(got == data, "f{i}.bin differs");
        }
        assert!(files(dir.path(), "part").is_empty());
    }

    /// The cap takes from whoever holds the most: a principal starting many resumable uploads
    /// drops its own partials, never another one's few (before, the oldest went, whoever's).
    #[tokio::test]
    async fn the_cap_on_partials_takes_from_the_owner_who_holds_the_most() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            max_partials: 4,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), config).unwrap();
        let data = body();
        let key = |owner: &str, i: usize| PartialKey {
            owner: owner.to_owned(),
            name: FileName::parse(&format!("{owner}{i}.bin")).unwrap(),
            size: SIZE,
        };
        let broken_off = |k: PartialKey| {
            let store = &store;
            let data = &data;
            async move {
                let (mut up, offset) = store.resume_upload(k).await.unwrap();
                up.write(&data[..1_000]).unwrap();
                drop(up);
                offset
            }
        };
        // Alice's partial first (the oldest of all), then mallory's many.
        assert_eq!(broken_off(key("alice", 0)).await, 0);
        for i in 0..10 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            broken_off(key("mallory", i)).await;
        }
        assert_eq!(files(dir.path(), "part").len(), 4);
        let (up, offset) = store.resume_upload(key("alice", 0)).await.unwrap();
        assert_eq!(offset, 1_000, "alice's partial was dropped for mallory's");
        drop(up);
        // Mallory kept his newest: 3 of them, the oldest gone.
        let (up, offset) = store.resume_upload(key("mallory", 9)).await.unwrap();
        assert_eq!(offset, 1_000);
        drop(up);
        let (up, offset) = store.resume_upload(key("mallory", 0)).await.unwrap();
        assert_eq!(offset, 0);
        drop(up);
    }

    #[tokio::test]
    async fn a_saved_state_is_taken_up_instead_of_hashing_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        interrupted(&store, 4_099).await;
        assert_eq!(
            files(dir.path(), "md5").len(),
            1,
            "a state beside the partial"
        );
        scribble_over_partial(dir.path());
        let (offset, stored) = resumed(&store).await;
        assert_eq!(offset, 4_099);
        // The bytes on disk were not hashed: the state was.
        assert_eq!(stored.unwrap(), md5(&body()));
        assert!(
            files(dir.path(), "md5").is_empty(),
            "the state goes with its partial"
        );
        assert!(files(dir.path(), "part").is_empty());
    }

    #[tokio::test]
    async fn a_missing_damaged_or_foreign_state_means_hashing_again() {
        for how in ["missing", "damaged", "foreign", "longer"] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            interrupted(&store, 4_099).await;
            let state = files(dir.path(), "md5").remove(0);
            match how {
                "missing" => std::fs::remove_file(&state).unwrap(),
                "damaged" => {
                    let mut bytes = std::fs::read(&state).unwrap();
                    bytes[40] ^= 1;
                    std::fs::write(&state, bytes).unwrap();
                }
                "foreign" => {
                    // The state of another partial (another inode), under this one's name.
                    let part = files(dir.path(), "part").remove(0);
                    let copy = part.with_extension("copy");
                    std::fs::copy(&part, &copy).unwrap();
                    std::fs::rename(&copy, &part).unwrap();
                }
                _ => {
                    // The partial lost bytes the state covers.
                    let part = files(dir.path(), "part").remove(0);
                    let f = std::fs::OpenOptions::new().write(true).open(part).unwrap();
                    f.set_len(100).unwrap();
                }
            }
            scribble_over_partial(dir.path());
            let (offset, stored) = resumed(&store).await;
            assert!(offset > 0, "{how}");
            // Hashed again from disk: the zeros are seen and the check fails, nothing kept.
            assert!(
                matches!(stored, Err(StoreError::ChecksumMismatch { .. })),
                "{how}: {stored:?}"
            );
            assert!(files(dir.path(), "part").is_empty(), "{how}");
            assert!(files(dir.path(), "md5").is_empty(), "{how}");
            // The next try starts over and succeeds.
            let (offset, stored) = resumed(&store).await;
            assert_eq!((offset, stored.unwrap()), (0, md5(&body())), "{how}");
        }
    }

    #[tokio::test]
    async fn states_of_partials_that_are_gone_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        interrupted(&store, 100).await;
        drop(store);
        for p in files(dir.path(), "part") {
            std::fs::remove_file(p).unwrap();
        }
        let _store = open(dir.path());
        assert!(files(dir.path(), "md5").is_empty());
    }
}

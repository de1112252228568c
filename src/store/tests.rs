//! Store tests on a temp folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::FileRef;

fn open(dir: &Path) -> Arc<Store> {
    Store::open(dir, StoreConfig::default()).unwrap()
}

fn put(store: &Arc<Store>, name: &str, data: &[u8]) -> Result<FileId, StoreError> {
    let mut up = store.begin_upload(FileName::parse(name).unwrap(), data.len() as u64)?;
    up.write(data)?;
    up.finish()
}

fn r(s: &str) -> FileRef {
    FileRef::parse(s).unwrap()
}

#[test]
fn upload_list_download_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.list().unwrap().entries.is_empty());
    let id = put(&store, "sub dir/a;b.txt", b"hello\n").unwrap();
    assert_eq!(id.to_hex(), "b1946ac92492d2347c6235b4d2611184");
    assert_eq!(
        std::fs::read(dir.path().join("sub dir/a;b.txt")).unwrap(),
        b"hello\n"
    );
    let l = store.list().unwrap();
    assert_eq!(l.entries.len(), 1);
    assert_eq!(l.entries[0].name.as_str(), "sub dir/a;b.txt");
    let mut d = store.open_download(&r(&id.to_hex())).unwrap();
    let mut got = Vec::new();
    d.file.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello\n");
    let d = store.open_download(&r("sub dir/a;b.txt")).unwrap();
    assert_eq!(d.id, id);
    // Nothing left in the temp area.
    assert_eq!(
        std::fs::read_dir(dir.path().join(".barge/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn existing_names_and_reservations_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "a", b"1").unwrap();
    assert!(matches!(
        put(&store, "a", b"2"),
        Err(StoreError::AlreadyExists(_))
    ));
    let first = store
        .begin_upload(FileName::parse("b").unwrap(), 1)
        .unwrap();
    assert!(matches!(
        store.begin_upload(FileName::parse("b").unwrap(), 1),
        Err(StoreError::AlreadyExists(_))
    ));
    drop(first);
    // Dropped: the reservation is gone, nothing visible.
    assert!(!dir.path().join("b").exists());
    put(&store, "b", b"x").unwrap();
    // A file in the way of a folder.
    assert!(matches!(
        put(&store, "a/c", b"x"),
        Err(StoreError::NotAFolder(_))
    ));
}

#[test]
fn incomplete_and_overlong_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut up = store
        .begin_upload(FileName::parse("part").unwrap(), 10)
        .unwrap();
    up.write(b"12345").unwrap();
    assert!(matches!(
        up.finish(),
        Err(StoreError::Incomplete {
            expected: 10,
            received: 5
        })
    ));
    let mut up = store
        .begin_upload(FileName::parse("part").unwrap(), 2)
        .unwrap();
    assert!(matches!(
        up.write(b"123"),
        Err(StoreError::Incomplete { .. })
    ));
    drop(up);
    assert!(!dir.path().join("part").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join(".barge/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn limits_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_file_size: 10,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    assert!(matches!(
        put(&store, "big", &[0; 11]),
        Err(StoreError::TooLarge { size: 11, max: 10 })
    ));
    let huge = store.begin_upload(FileName::parse("x").unwrap(), 0);
    assert!(huge.is_ok());
    drop(huge);
    store.close();
    let cfg = StoreConfig {
        min_free_space: u64::MAX / 2,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    assert!(matches!(
        put(&store, "y", b"1"),
        Err(StoreError::InsufficientStorage { .. })
    ));
    store.close();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            read_only: true,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    assert!(matches!(put(&store, "z", b"1"), Err(StoreError::ReadOnly)));
    assert!(matches!(store.delete(&r("z")), Err(StoreError::ReadOnly)));
}

#[test]
fn rename_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = put(&store, "old", b"content").unwrap();
    put(&store, "other", b"other").unwrap();
    assert!(matches!(
        store.rename(&r("old"), &FileName::parse("other").unwrap()),
        Err(StoreError::AlreadyExists(_))
    ));
    store
        .rename(&r(&id.to_hex()), &FileName::parse("new/place").unwrap())
        .unwrap();
    assert!(!dir.path().join("old").exists());
    let l = store.list().unwrap();
    let names: Vec<_> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["new/place", "other"]);
    assert!(matches!(
        store.delete(&r("old")),
        Err(StoreError::NotFound(_))
    ));
    store.delete(&r("new/place")).unwrap();
    assert!(!dir.path().join("new/place").exists());
    // Same content twice: the id is ambiguous for delete, fine for download.
    let id = put(&store, "twin1", b"same").unwrap();
    put(&store, "twin2", b"same").unwrap();
    assert!(matches!(
        store.delete(&r(&id.to_hex())),
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert_eq!(store.open_download(&r(&id.to_hex())).unwrap().id, id);
}

#[test]
fn files_changed_behind_our_back_are_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::fs::write(dir.path().join("dropped.txt"), b"by hand").unwrap();
    let l = store.list().unwrap();
    assert_eq!(l.entries.len(), 1);
    let old = l.entries[0].id;
    std::fs::write(dir.path().join("dropped.txt"), b"changed, longer").unwrap();
    let l = store.list().unwrap();
    assert_ne!(l.entries[0].id, old);
    assert!(matches!(
        store.open_download(&r(&old.to_hex())),
        Err(StoreError::NotFound(_))
    ));
    std::fs::remove_file(dir.path().join("dropped.txt")).unwrap();
    assert!(store.list().unwrap().entries.is_empty());
}

#[test]
fn symlinks_and_state_are_never_shared() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let store = open(dir.path());
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
    let l = store.list().unwrap();
    assert!(l.entries.is_empty(), "{:?}", l.entries);
    assert!(matches!(
        store.open_download(&r("link")),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.open_download(&r("dirlink/secret")),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        put(&store, "dirlink/new", b"x"),
        Err(StoreError::NotAFolder(_))
    ));
    assert!(matches!(
        store.delete(&r("link")),
        Err(StoreError::NotFound(_))
    ));
    assert!(!outside.path().join("new").exists());
    assert!(outside.path().join("secret").exists());
}

#[test]
fn restart_keeps_ids_and_clears_temp() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = put(&store, "kept", b"kept").unwrap();
    store.close();
    drop(store);
    std::fs::write(dir.path().join(".barge/tmp/999-1.part"), b"leftover").unwrap();
    let store = open(dir.path());
    assert_eq!(
        std::fs::read_dir(dir.path().join(".barge/tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        lock(&store.index)
            .get(&FileName::parse("kept").unwrap())
            .map(|e| e.id),
        Some(id)
    );
    assert_eq!(store.list().unwrap().entries[0].id, id);
}

#[test]
fn large_unknown_files_are_hashed_in_background() {
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
        let l = store.list().unwrap();
        if l.entries.len() == 1 {
            assert_eq!(l.pending, 0);
            break;
        }
        assert_eq!(l.pending, 1);
        assert!(std::time::Instant::now() < deadline, "never hashed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn names_differing_only_by_normalisation_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let composed = "caf\u{e9}.txt";
    let decomposed = "cafe\u{301}.txt";
    put(&store, composed, b"1").unwrap();
    assert!(matches!(
        put(&store, decomposed, b"2"),
        Err(StoreError::AlreadyExists(_))
    ));
    put(&store, "other", b"3").unwrap();
    assert!(matches!(
        store.rename(&r("other"), &FileName::parse(decomposed).unwrap()),
        Err(StoreError::AlreadyExists(_))
    ));
    // An exact re-upload is still the plain conflict, and unrelated accents are fine.
    assert!(matches!(
        put(&store, composed, b"1"),
        Err(StoreError::AlreadyExists(_))
    ));
    put(&store, "caf\u{e8}.txt", b"4").unwrap();
    // While one form is being uploaded, the other is refused too.
    let up = store
        .begin_upload(FileName::parse("na\u{ef}ve").unwrap(), 1)
        .unwrap();
    assert!(matches!(
        store.begin_upload(FileName::parse("nai\u{308}ve").unwrap(), 1),
        Err(StoreError::AlreadyExists(_))
    ));
    drop(up);
}

#[test]
fn batch_gives_each_file_its_own_result_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "taken", b"t").unwrap();
    let n = |s: &str| FileName::parse(s).unwrap();
    let results = store.put_batch(vec![
        (n("one"), b"1".to_vec()),
        (n("taken"), b"2".to_vec()),
        (n("dir/two"), b"22".to_vec()),
        (n("one"), b"dup".to_vec()),
        (n("empty"), Vec::new()),
    ]);
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[0].as_ref().unwrap().to_hex(),
        "c4ca4238a0b923820dcc509a6f75849b"
    );
    assert!(matches!(results[1], Err(StoreError::AlreadyExists(_))));
    assert!(results[2].is_ok());
    assert!(matches!(results[3], Err(StoreError::AlreadyExists(_))));
    assert_eq!(
        results[4].as_ref().unwrap().to_hex(),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(std::fs::read(dir.path().join("one")).unwrap(), b"1");
    assert_eq!(std::fs::read(dir.path().join("dir/two")).unwrap(), b"22");
    assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"t");
    assert_eq!(
        std::fs::read_dir(dir.path().join(".barge/tmp"))
            .unwrap()
            .count(),
        0
    );
    let names: Vec<_> = store
        .list()
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["dir/two", "empty", "one", "taken"]);
}

#[test]
fn listing_hashes_only_for_its_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let cfg = StoreConfig {
        inline_hash_time: std::time::Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).unwrap();
    let first = store.list().unwrap();
    assert_eq!(first.entries.len() + first.pending, 50);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.list().unwrap().entries.len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "background hashing never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

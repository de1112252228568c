//! The tests every backend must pass; `suite!` in the parent runs each against both.

use super::*;

pub(super) async fn upload_list_download_round_trip(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    assert!(store.list().await.unwrap().entries().is_empty());
    let id = put(&store, "sub dir/a;b.txt", b"hello\n").await.unwrap();
    assert_eq!(id.to_hex(), "b1946ac92492d2347c6235b4d2611184");
    assert_eq!(fx.raw("sub dir/a;b.txt").unwrap(), b"hello\n");
    let l = store.list().await.unwrap();
    assert_eq!(l.entries().len(), 1);
    assert_eq!(l.entries()[0].name.as_str(), "sub dir/a;b.txt");
    let d = store.download(&r(&id.to_hex())).await.unwrap();
    assert_eq!(body(d).await, b"hello\n");
    let d = store.download(&r("sub dir/a;b.txt")).await.unwrap();
    assert_eq!(d.id, id);
    // A large file comes back whole too (as a file or a stream, not in one piece).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let big_id = put(&store, "big", &big).await.unwrap();
    let d = store.download(&r("big")).await.unwrap();
    assert!(!matches!(d.body, Body::Bytes(_)));
    assert_eq!((d.size, d.id), (big.len() as u64, big_id));
    assert_eq!(body(d).await, big);
    assert_eq!(fx.raw("big").unwrap(), big);
    // Nothing left in the temp area.
    assert_eq!(fx.leftovers(), 0);
}

pub(super) async fn existing_names_and_reservations_conflict(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    put(&store, "a", b"1").await.unwrap();
    assert!(matches!(
        put(&store, "a", b"2").await,
        Err(StoreError::Exists(_))
    ));
    let first = store.begin_upload(n("b"), 1).await.unwrap();
    assert!(matches!(
        store.begin_upload(n("b"), 1).await,
        Err(StoreError::UploadInProgress { .. })
    ));
    drop(first);
    // Dropped: the reservation is gone, nothing visible.
    assert!(fx.raw("b").is_none());
    put(&store, "b", b"x").await.unwrap();
    // A file in the way of a folder.
    assert!(matches!(
        put(&store, "a/c", b"x").await,
        Err(StoreError::NotAFolder(_))
    ));
    // A folder in the way of a file.
    put(&store, "dir/file", b"x").await.unwrap();
    assert!(matches!(
        put(&store, "dir", b"x").await,
        Err(StoreError::FolderExists(f)) if f == n("dir")
    ));
    assert!(matches!(
        store.rename(&r("a"), &n("dir")).await,
        Err(StoreError::FolderExists(f)) if f == n("dir")
    ));
}

pub(super) async fn uploads_in_progress_hold_their_folders_and_what_is_under_them(
    fx: &dyn Fixture,
) {
    let store = fx.open(StoreConfig::default());
    put(&store, "p", b"p").await.unwrap();
    let r1 = store.begin_upload(n("r1"), 1).await.unwrap();
    let df = store.begin_upload(n("d/f"), 1).await.unwrap();
    for name in ["r1/sub", "r1/a/b", "d", "r1"] {
        assert!(
            matches!(
                store.begin_upload(n(name), 1).await,
                Err(StoreError::UploadInProgress { .. })
            ),
            "{name}"
        );
    }
    for to in ["r1/x", "d", "r1"] {
        assert!(
            matches!(
                store.rename(&r("p"), &n(to)).await,
                Err(StoreError::UploadInProgress { .. })
            ),
            "{to}"
        );
    }
    let batch = store
        .put_batch(vec![(n("r1/y"), b"y".to_vec()), (n("d"), b"d".to_vec())])
        .await;
    assert!(
        batch
            .iter()
            .all(|b| matches!(b, Err(StoreError::UploadInProgress { .. })))
    );
    // Names that only share a prefix of text are not folders of each other.
    put(&store, "r10", b"x").await.unwrap();
    put(&store, "d2/f", b"x").await.unwrap();
    drop((r1, df));
    put(&store, "r1/sub", b"now fine").await.unwrap();
    assert_eq!(names(&store).await, ["d2/f", "p", "r1/sub", "r10"]);
}

pub(super) async fn incomplete_and_overlong_uploads_leave_nothing(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    let mut up = store.begin_upload(n("part"), 10).await.unwrap();
    up.write(b"12345").unwrap();
    assert!(matches!(
        up.finish(),
        Err(StoreError::Incomplete {
            expected: 10,
            received: 5
        })
    ));
    let mut up = store.begin_upload(n("part"), 2).await.unwrap();
    assert!(matches!(
        up.write(b"123"),
        Err(StoreError::Incomplete { .. })
    ));
    drop(up);
    assert!(fx.raw("part").is_none());
    assert_eq!(fx.leftovers(), 0);
    assert!(names(&store).await.is_empty());
}

pub(super) async fn limits_and_read_only(fx: &dyn Fixture) {
    let cfg = StoreConfig {
        max_file_size: 10,
        ..StoreConfig::default()
    };
    let store = fx.open(cfg);
    assert!(matches!(
        put(&store, "big", &[0; 11]).await,
        Err(StoreError::TooLarge { size: 11, max: 10 })
    ));
    let huge = store.begin_upload(n("x"), 0).await;
    assert!(huge.is_ok());
    drop(huge);
    store.close();
    let cfg = StoreConfig {
        min_free_space: u64::MAX / 2,
        ..StoreConfig::default()
    };
    let store = fx.open(cfg);
    assert!(matches!(
        put(&store, "y", b"1").await,
        Err(StoreError::InsufficientStorage { .. })
    ));
    assert!(matches!(
        store.put_batch(vec![(n("y"), b"1".to_vec())]).await[..],
        [Err(StoreError::InsufficientStorage { .. })]
    ));
    assert!(fx.raw("y").is_none());
    assert_eq!(fx.leftovers(), 0);
    store.close();
    let store = fx.open(StoreConfig {
        read_only: true,
        ..StoreConfig::default()
    });
    assert!(matches!(
        put(&store, "z", b"1").await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.delete(&r("z")).await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.rename(&r("z"), &n("w")).await,
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(
        store.put_batch(vec![(n("z"), b"1".to_vec())]).await[..],
        [Err(StoreError::ReadOnly)]
    ));
}

pub(super) async fn rename_and_delete(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    let id = put(&store, "old", b"content").await.unwrap();
    put(&store, "other", b"other").await.unwrap();
    assert!(matches!(
        store.rename(&r("old"), &n("other")).await,
        Err(StoreError::Exists(_))
    ));
    assert!(matches!(
        store.rename(&r("missing"), &n("x")).await,
        Err(StoreError::NotFound(_))
    ));
    let old = store
        .rename(&r(&id.to_hex()), &n("new/place"))
        .await
        .unwrap();
    assert_eq!(old.as_str(), "old");
    assert!(fx.raw("old").is_none());
    assert_eq!(fx.raw("new/place").unwrap(), b"content");
    assert_eq!(names(&store).await, ["new/place", "other"]);
    assert_eq!(
        store
            .download(&r(&id.to_hex()))
            .await
            .unwrap()
            .name
            .as_str(),
        "new/place"
    );
    assert!(matches!(
        store.delete(&r("old")).await,
        Err(StoreError::NotFound(_))
    ));
    store.delete(&r("new/place")).await.unwrap();
    assert!(fx.raw("new/place").is_none());
    assert!(matches!(
        store.download(&r(&id.to_hex())).await,
        Err(StoreError::NotFound(_))
    ));
    // Same content twice: the id is ambiguous for delete and rename, fine for download.
    let id = put(&store, "twin1", b"same").await.unwrap();
    put(&store, "twin2", b"same").await.unwrap();
    assert!(matches!(
        store.delete(&r(&id.to_hex())).await,
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(
        store.rename(&r(&id.to_hex()), &n("x")).await,
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert_eq!(store.download(&r(&id.to_hex())).await.unwrap().id, id);
}

pub(super) async fn ids_win_over_names(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    let id = put(&store, "content", b"by id").await.unwrap();
    // A file whose name is the other file's id.
    put(&store, &id.to_hex(), b"by name").await.unwrap();
    let d = store.download(&r(&id.to_hex())).await.unwrap();
    assert_eq!(d.name.as_str(), "content");
    assert_eq!(body(d).await, b"by id");
    // An id nothing has falls back to the name.
    let hex = "0123456789abcdef0123456789abcdef";
    put(&store, hex, b"x").await.unwrap();
    assert_eq!(store.download(&r(hex)).await.unwrap().name.as_str(), hex);
    assert_eq!(
        store.delete(&r(&id.to_hex())).await.unwrap().as_str(),
        "content"
    );
}

pub(super) async fn names_differing_only_by_normalisation_conflict(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    let composed = "caf\u{e9}.txt";
    let decomposed = "cafe\u{301}.txt";
    put(&store, composed, b"1").await.unwrap();
    assert!(matches!(
        put(&store, decomposed, b"2").await,
        Err(StoreError::Equivalent { .. })
    ));
    put(&store, "other", b"3").await.unwrap();
    assert!(matches!(
        store.rename(&r("other"), &n(decomposed)).await,
        Err(StoreError::Equivalent { .. })
    ));
    // An exact re-upload is still the plain conflict, and unrelated accents are fine.
    assert!(matches!(
        put(&store, composed, b"1").await,
        Err(StoreError::Exists(_))
    ));
    put(&store, "caf\u{e8}.txt", b"4").await.unwrap();
    // While one form is being uploaded, the other is refused too.
    let up = store.begin_upload(n("na\u{ef}ve"), 1).await.unwrap();
    assert!(matches!(
        store.begin_upload(n("nai\u{308}ve"), 1).await,
        Err(StoreError::Equivalent { .. })
    ));
    drop(up);
    // Mixed forms, in both orders, and a singleton that normalises to ASCII.
    put(&store, "m\u{e9}/ne\u{301}", b"5").await.unwrap();
    assert!(matches!(
        put(&store, "m\u{e9}/n\u{e9}", b"6").await,
        Err(StoreError::Equivalent { .. })
    ));
    put(&store, "x\u{e9}/y\u{e9}", b"7").await.unwrap();
    assert!(matches!(
        put(&store, "x\u{e9}/ye\u{301}", b"8").await,
        Err(StoreError::Equivalent { .. })
    ));
    assert!(matches!(
        put(&store, "xe\u{301}/y\u{e9}", b"8").await,
        Err(StoreError::Equivalent { .. })
    ));
    put(&store, "\u{212a}elvin", b"9").await.unwrap();
    assert!(matches!(
        put(&store, "Kelvin", b"10").await,
        Err(StoreError::Equivalent { .. })
    ));
    let up = store.begin_upload(n("Ohm"), 1).await.unwrap();
    let batch = store.put_batch(vec![(n("\u{212a}"), b"k".to_vec())]).await;
    assert!(batch[0].is_ok(), "{batch:?}"); // Not equivalent to `Ohm`: a plain name.
    assert!(matches!(
        store.begin_upload(n("K"), 1).await,
        Err(StoreError::Equivalent { .. })
    ));
    drop(up);
    assert_eq!(
        names(&store).await,
        [
            "caf\u{e8}.txt",
            composed,
            "m\u{e9}/ne\u{301}",
            "other",
            "x\u{e9}/y\u{e9}",
            "\u{212a}",
            "\u{212a}elvin",
        ]
    );
}

pub(super) async fn batch_gives_each_file_its_own_result_in_order(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    put(&store, "taken", b"t").await.unwrap();
    let results = store
        .put_batch(vec![
            (n("one"), b"1".to_vec()),
            (n("taken"), b"2".to_vec()),
            (n("dir/two"), b"22".to_vec()),
            (n("one"), b"dup".to_vec()),
            (n("empty"), Vec::new()),
        ])
        .await;
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[0].as_ref().unwrap().to_hex(),
        "c4ca4238a0b923820dcc509a6f75849b"
    );
    assert!(matches!(results[1], Err(StoreError::Exists(_))));
    assert!(results[2].is_ok());
    assert!(matches!(
        results[3],
        Err(StoreError::UploadInProgress { .. })
    ));
    assert_eq!(
        results[4].as_ref().unwrap().to_hex(),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(fx.raw("one").unwrap(), b"1");
    assert_eq!(fx.raw("dir/two").unwrap(), b"22");
    assert_eq!(fx.raw("taken").unwrap(), b"t");
    assert_eq!(fx.leftovers(), 0);
    assert_eq!(names(&store).await, ["dir/two", "empty", "one", "taken"]);
    // The batch's names are free again once it is stored.
    assert!(matches!(
        put(&store, "one", b"again").await,
        Err(StoreError::Exists(_))
    ));
}

/// Issue 10 item 6: the store refuses uploads past `max_files` with a clear error, single and
/// batched, and a delete makes room again.
pub(super) async fn the_file_count_is_limited(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig {
        max_files: 3,
        ..StoreConfig::default()
    });
    for name in ["a", "b/c"] {
        put(&store, name, b"x").await.unwrap();
    }
    // An upload in progress counts too.
    let third = store.begin_upload(n("c"), 1).await.unwrap();
    assert!(matches!(
        put(&store, "d", b"x").await,
        Err(StoreError::TooManyFiles { max: 3 })
    ));
    drop(third);
    put(&store, "c", b"x").await.unwrap();
    assert!(matches!(
        store.put_batch(vec![(n("d"), b"1".to_vec())]).await[..],
        [Err(StoreError::TooManyFiles { max: 3 })]
    ));
    store.delete(&r("a")).await.unwrap();
    put(&store, "d", b"x").await.unwrap();
    assert_eq!(names(&store).await, ["b/c", "c", "d"]);
    assert!(fx.raw("e").is_none());
}

/// Issue 10 item 4: a listing is a snapshot. Changes after it was taken do not show in it (its
/// count stays what its lines are), and read in pieces from where the last piece ended
/// ([`Listing::after`]) it gives every file once; [`Listing::under`] gives exactly a folder's
/// files, whatever sorts around them.
pub(super) async fn a_listing_is_a_snapshot_read_in_pieces(fx: &dyn Fixture) {
    let store = fx.open(StoreConfig::default());
    // In byte order: `-` and `.` sort before `/`, and `0` after it.
    let names = ["a-b/x", "a.txt", "a/x", "a/y/z", "a0", "b/c", "z"];
    for name in names {
        put(&store, name, name.as_bytes()).await.unwrap();
    }
    let before = store.list().await.unwrap();
    put(&store, "a/new", b"new").await.unwrap();
    store.delete(&r("z")).await.unwrap();
    let listed =
        |l: &Listing| -> Vec<String> { l.iter().map(|(n, ..)| n.as_str().to_owned()).collect() };
    assert_eq!(before.len(), names.len());
    assert_eq!(listed(&before), names);
    let now = store.list().await.unwrap();
    assert_eq!(now.len(), names.len());
    assert!(listed(&now).contains(&"a/new".to_owned()));
    // In pieces of 2: each piece starts after the last name of the one before.
    let mut pieces = Vec::new();
    let mut last: Option<FileName> = None;
    loop {
        let piece: Vec<FileName> = before
            .after(last.as_ref())
            .take(2)
            .map(|(n, ..)| n.clone())
            .collect();
        let Some(end) = piece.last().cloned() else {
            break;
        };
        pieces.extend(piece.iter().map(|n| n.as_str().to_owned()));
        last = Some(end);
    }
    assert_eq!(pieces, names);
    let under: Vec<&str> = before
        .under(Some(&n("a")))
        .map(|(n, ..)| n.as_str())
        .collect();
    assert_eq!(under, ["a/x", "a/y/z"]);
    assert_eq!(before.under(Some(&n("b"))).count(), 1);
    assert_eq!(before.under(Some(&n("q"))).count(), 0);
    assert_eq!(before.under(None).count(), names.len());
}

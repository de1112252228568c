//! The policy layer's budgets (issue 10): what one upload may hold of the free space, and the
//! inodes a disk has left. Run on the memory backend, whose free space and file slots are set
//! exactly.

use super::*;

const MIB: u64 = 1 << 20;

fn store(capacity: u64, config: StoreConfig) -> Arc<Store> {
    Store::new(Arc::new(MemoryBackend::new(capacity)), config)
}

/// Writes `n` bytes into `up` on a blocking thread, as the server does.
async fn feed(up: Upload, n: usize) -> Upload {
    tokio::task::spawn_blocking(move || {
        let mut up = up;
        up.write(&vec![7; n]).unwrap();
        up
    })
    .await
    .unwrap()
}

/// Issue 10 item 3: an upload that declares nearly all the free space and sends one byte does
/// not make every other upload `507`: it holds space only as far as it sends.
#[tokio::test]
async fn a_trickling_upload_does_not_hold_its_declared_size() {
    let cfg = StoreConfig {
        min_free_space: 8 * MIB,
        ..StoreConfig::default()
    };
    let store = store(200 * MIB, cfg);
    let hog = store.begin_upload(n("hog"), 180 * MIB).await.unwrap();
    let hog = feed(hog, 1).await;
    // 150 + 16 (the hog's floor) + 8 (reserve) fits in 200; the declared 180 would not.
    let other = store.begin_upload(n("other"), 150 * MIB).await;
    assert!(other.is_ok(), "{other:?}");
    drop(other);
    drop(hog);
}

/// What an upload holds grows with what it sends, so a fast upload keeps its space.
#[tokio::test]
async fn the_hold_follows_the_bytes_received() {
    let cfg = StoreConfig {
        min_free_space: 8 * MIB,
        ..StoreConfig::default()
    };
    let store = store(200 * MIB, cfg);
    let up = store.begin_upload(n("fast"), 180 * MIB).await.unwrap();
    // Holding its floor: 160 + 16 + 8 = 184 fits.
    assert!(store.begin_upload(n("a"), 160 * MIB).await.is_ok());
    let up = feed(up, 40 * MIB as usize).await;
    // Now it holds as much again as it sent: 160 + 40 + 8 = 208 does not fit.
    assert!(matches!(
        store.begin_upload(n("a"), 160 * MIB).await,
        Err(StoreError::InsufficientStorage { .. })
    ));
    // Smaller still fits: 140 + 40 + 8 = 188.
    assert!(store.begin_upload(n("a"), 140 * MIB).await.is_ok());
    drop(up);
    // Gone with the upload.
    assert!(store.begin_upload(n("a"), 190 * MIB).await.is_ok());
}

/// No upload holds more than half of its declared size (above the floor), whatever it sends.
#[tokio::test]
async fn one_upload_holds_at_most_half_its_size() {
    let cfg = StoreConfig {
        min_free_space: 0,
        ..StoreConfig::default()
    };
    let store = store(100 * MIB, cfg);
    let up = store.begin_upload(n("big"), 99 * MIB).await.unwrap();
    let up = feed(up, 45 * MIB as usize).await;
    // It holds min(54 left, 45 sent) = 45: 55 more fit, 56 do not.
    assert!(store.begin_upload(n("a"), 55 * MIB).await.is_ok());
    assert!(store.begin_upload(n("a"), 56 * MIB).await.is_err());
    let up = feed(up, 15 * MIB as usize).await;
    // min(39 left, 60 sent) = 39.
    assert!(store.begin_upload(n("a"), 61 * MIB).await.is_ok());
    assert!(store.begin_upload(n("a"), 62 * MIB).await.is_err());
    drop(up);
}

/// Issue 10 item 5: a disk out of inodes with its bytes free refuses uploads with a clear
/// error (`507`), and counts the folders a name would create.
#[tokio::test]
async fn free_inodes_are_checked() {
    let cfg = StoreConfig {
        min_free_inodes: 10,
        ..StoreConfig::default()
    };
    let backend = MemoryBackend::new(1 << 40).with_file_slots(20);
    let store = Store::new(Arc::new(backend), cfg);
    // 1 + 10 ≤ 20 - k while k ≤ 9.
    for i in 0..9 {
        put(&store, &format!("f{i}"), b"x").await.unwrap();
    }
    // 11 slots left: a name three deep needs 3 + 10.
    assert!(matches!(
        put(&store, "a/b/c", b"x").await,
        Err(StoreError::InsufficientInodes {
            needed: 13,
            available: 11
        })
    ));
    // An upload in progress takes one too.
    let held = store.begin_upload(n("g"), 1).await.unwrap();
    assert!(matches!(
        put(&store, "h", b"x").await,
        Err(StoreError::InsufficientInodes { needed: 12, .. })
    ));
    drop(held);
    put(&store, "h", b"x").await.unwrap();
    assert!(matches!(
        store.put_batch(vec![(n("i"), b"1".to_vec())]).await[..],
        [Err(StoreError::InsufficientInodes { .. })]
    ));
}

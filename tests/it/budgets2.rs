//! Resource budgets of the store (issue 10, server side): free space held by trickling uploads,
//! the index and the temp area broken behind the server's back, folders and files without end,
//! descriptors and hashing. Each test is one repro of the issue.

use barge::server::ServerConfig;
use barge::store::StoreConfig;

use crate::common::{TestResult, TestServer};
use crate::support::assert_code;

const MIB: u64 = 1 << 20;

/// Bytes free for unprivileged users where `path` is.
fn free_bytes(path: &std::path::Path) -> TestResult<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail * st.f_frsize)
}

/// Issue 10 item 3: `UPLOAD hog;<nearly all the headroom>` and one byte used to make every
/// other upload over the rest `507` for as long as it trickled. Now it holds only what it sends
/// (at least 16 MiB): another client's upload still starts.
#[tokio::test]
async fn a_trickling_upload_does_not_hoard_the_free_space() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Leave 1 GiB of headroom above the reserve, whatever the disk: room for other tests
    // writing meanwhile, and no need to send more than a byte.
    let free = free_bytes(dir.path())?;
    if free < 2 << 30 {
        return Err(format!("the test needs 2 GiB free in the temp folder, has {free}").into());
    }
    let store = StoreConfig {
        min_free_space: free - (1 << 30),
        ..StoreConfig::default()
    };
    let server = TestServer::start_with(dir, store, ServerConfig::default()).await?;
    let mut hog = server.raw().await?;
    assert_code(&hog.cmd(&format!("UPLOAD hog;{}", 900 * MIB)).await?, 350);
    hog.send(b"x").await?;
    let mut other = server.raw().await?;
    // 600 MiB + the 900 declared would be over the headroom; 600 + 16 is not.
    assert_code(
        &other.cmd(&format!("UPLOAD other;{}", 600 * MIB)).await?,
        350,
    );
    Ok(())
}

/// Issue 10 item 5: one `PUT` of a 511-level name used to create 511 folders, and deletes and
/// renames left them all behind. Now names are at most 32 levels deep, and a file's folders go
/// with its last file.
#[tokio::test]
async fn deep_names_are_refused_and_folders_do_not_pile_up() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    let deep = vec!["d"; 511].join("/");
    c.send(format!("PUT {deep};1\nx").as_bytes()).await?;
    assert_code(&c.line().await?, 422);
    let ok = vec!["d"; 31].join("/");
    for i in 0..5 {
        c.upload(&format!("{ok}/f{i}"), b"x").await?;
        assert_code(&c.cmd(&format!("RENAME {ok}/f{i}\tr{i}/a/b")).await?, 250);
        assert_code(&c.cmd(&format!("DELETE r{i}/a/b")).await?, 250);
    }
    let left: Vec<_> = std::fs::read_dir(server.root())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(left, [".barge"], "folders left behind");
    Ok(())
}

/// Issue 10 item 6: the server has its own file-count limit; an upload past it gets a clear
/// `507`, and a delete makes room.
#[tokio::test]
async fn the_server_limits_the_number_of_files() -> TestResult {
    let store = StoreConfig {
        max_files: 5,
        ..StoreConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, store, ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    for i in 0..5 {
        c.upload(&format!("f{i}"), b"").await?;
    }
    let refused = c.cmd("UPLOAD f5;0").await?;
    assert_eq!(refused, "507 The server holds its limit of 5 files");
    assert_code(&c.cmd("DELETE f0").await?, 250);
    c.upload("f5", b"").await?;
    assert_eq!(c.list().await?.len(), 5);
    Ok(())
}

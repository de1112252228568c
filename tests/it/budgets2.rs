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

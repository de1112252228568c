//! Resource budgets of the store (issue 10, server side): free space held by trickling uploads,
//! the index and the temp area broken behind the server's back, folders and files without end,
//! descriptors and hashing. Each test is one repro of the issue.

use barge::server::ServerConfig;
use barge::store::StoreConfig;

use crate::common::{Raw, TestResult, TestServer};
use crate::support::{BinServer, assert_code};

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

/// Sets the running server's soft open-file limit to `soft`, keeping its hard limit.
/// Sets the server's descriptor limit so that exactly `free` more descriptors can be opened.
/// The limit is on descriptor numbers and a new descriptor takes the lowest free number, so it
/// is one past the `free`-th number not in use: the count of open descriptors plus `free`
/// gives more room when one of them has a high number (one opened while a walk held many,
/// such as the user database's watch, made this flaky in CI).
fn leave_free(server: &BinServer, free: usize) -> TestResult {
    let open: std::collections::BTreeSet<u64> =
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    let last = (0u64..)
        .filter(|n| !open.contains(n))
        .nth(free - 1)
        .ok_or("no free descriptor numbers")?;
    set_open_files(server, last + 1)
}

fn set_open_files(server: &BinServer, soft: u64) -> TestResult {
    let pid = i32::try_from(server.pid())?;
    let (mut old_soft, mut hard) = (0, 0);
    rlimit::prlimit(
        pid,
        rlimit::Resource::NOFILE,
        None,
        Some((&mut old_soft, &mut hard)),
    )?;
    rlimit::prlimit(pid, rlimit::Resource::NOFILE, Some((soft, hard)), None)?;
    Ok(())
}

/// A shared folder with three files at the top and one 31 levels down (dropped in by hand).
fn deep_tree() -> TestResult<tempfile::TempDir> {
    let root = tempfile::tempdir()?;
    for name in ["a", "b", "c"] {
        std::fs::write(root.path().join(name), name)?;
    }
    let deep = root.path().join(vec!["d"; 31].join("/"));
    std::fs::create_dir_all(&deep)?;
    std::fs::write(deep.join("f"), b"deep")?;
    Ok(root)
}

/// Reads one reply to `LIST`: `Ok(Some(count))` for a `210` with its lines read, `Ok(None)`
/// for a `451`.
async fn read_listing(c: &mut Raw) -> TestResult<Option<usize>> {
    let head = c.line().await?;
    if head.starts_with("451 ") {
        return Ok(None);
    }
    assert!(head.starts_with("210 "), "{head}");
    let n: usize = head[4..].split(' ').next().unwrap_or_default().parse()?;
    for _ in 0..n {
        c.line().await?;
    }
    Ok(Some(n))
}

/// Issue 10 item 2: a deep tree plus connections looping `LIST` used to exhaust the
/// descriptors (one or two per level per walk), and listings came back silently short. Now a
/// walk holds a bounded number whatever the depth, and concurrent listings share one walk: with
/// few descriptors to spare, every listing is whole.
#[tokio::test]
async fn deep_trees_and_many_listings_need_few_descriptors() -> TestResult {
    let root = deep_tree()?;
    let server = BinServer::start(root.path(), &[])?;
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut c = Raw::connect(server.addr).await?;
        c.line().await?;
        conns.push(c);
    }
    assert_eq!(conns[0].list().await?.len(), 4);
    // Room for about one walk of the old kind's top half, no more.
    leave_free(&server, 24)?;
    let mut tasks = Vec::new();
    for mut c in conns {
        tasks.push(tokio::spawn(async move {
            c.send("LIST\n".repeat(20)).await?;
            for _ in 0..20 {
                assert_eq!(read_listing(&mut c).await?, Some(4));
            }
            TestResult::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    server.kill()
}

/// Issue 10 item 2: when the server runs out of descriptors while walking, the reply says the
/// listing is incomplete (`451`) instead of a short list; with descriptors back, it is whole.
#[tokio::test]
async fn a_listing_is_whole_or_says_it_is_not() -> TestResult {
    let root = deep_tree()?;
    let server = BinServer::start(root.path(), &[])?;
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    assert_eq!(c.list().await?.len(), 4);
    // The walk gets its first folder, and runs out on the way down.
    leave_free(&server, 2)?;
    // A new tree of folders, so the listing must walk it (a new file alone is only looked
    // up, which needs no more descriptors than a download).
    let fresh = root.path().join("e/e/e/e");
    std::fs::create_dir_all(&fresh)?;
    std::fs::write(fresh.join("e"), b"e")?;
    c.send(b"LIST\n").await?;
    let head = c.line().await?;
    assert!(
        head.starts_with("451 The listing is incomplete") && head.contains("try again"),
        "{head}"
    );
    set_open_files(&server, 1024)?;
    assert_eq!(c.list().await?.len(), 5);
    server.kill()
}

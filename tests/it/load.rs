//! Load: a thousand connections at once, a pipelining client that never reads, and slow
//! clients next to fast ones. The memory and descriptor checks run the real `barge` binary so
//! they can read its `/proc/<pid>` entries.

use std::time::{Duration, Instant};

use barge::server::ServerConfig;
use barge::store::StoreConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::common::{Raw, TestResult, TestServer, WAIT, md5_hex};
use crate::support::{BinServer, assert_code, wait_until};

const CONNECTIONS: usize = 1000;

/// Raises the soft limit on open files so this process (the clients) and the server it starts
/// (which inherits it) can hold a thousand sockets each. `None` if the hard limit is too low.
fn raise_fd_limit(want: u64) -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft >= want {
        return Some(soft);
    }
    if hard < want {
        return None;
    }
    rlimit::Resource::NOFILE.set(want, hard).ok()?;
    Some(want)
}

/// 1,000 connections at once against a server that serves 600: each gets the greeting or the
/// busy reply; those served that fall silent are timed out; afterwards the server's descriptors
/// and memory are back near where they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections() -> TestResult {
    if raise_fd_limit(4 * CONNECTIONS as u64).is_none() {
        println!(
            "note: skipped: the hard limit on open files is below {}",
            4 * CONNECTIONS
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("hello.txt"), b"hello")?;
    let server = BinServer::start(
        dir.path(),
        &[
            "--max-connections",
            "600",
            "--max-connections-per-ip",
            "1000",
            "--idle-timeout",
            "1",
        ],
    )?;
    // Warm up (the runtime's threads, the index) before taking the baseline.
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    assert_eq!(c.list().await?.len(), 1);
    assert_eq!(c.cmd("BYE").await?, "221 Bye");
    drop(c);
    wait_until(|| server.fds() > 0)?;
    let (fds0, rss0) = (server.fds(), server.rss_kib());

    let start = Instant::now();
    let addr = server.addr;
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let first = c.line().await.map_err(|e| format!("first line: {e}"))?;
            if first.starts_with("503 ") {
                assert!(first.starts_with("503 Server busy"), "{first}");
                assert!(c.closed().await?);
                return TestResult::Ok(false);
            }
            assert_eq!(first, "220 barge/1 ready");
            if i % 2 == 0 {
                assert_eq!(c.list().await?.len(), 1);
            }
            // Then silence: the idle timeout must end it.
            let last = c.line().await.map_err(|e| format!("idle: {e}"))?;
            assert_code(&last, 408);
            assert!(c.closed().await?);
            Ok(true)
        }));
    }
    let (mut served, mut busy, mut failed) = (0, 0, Vec::new());
    for t in tasks {
        match t.await? {
            Ok(true) => served += 1,
            Ok(false) => busy += 1,
            Err(e) => failed.push(e.to_string()),
        }
    }
    assert!(
        failed.is_empty(),
        "{} connections failed ({served} served, {busy} busy), e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    println!(
        "{served} served, {busy} busy, in {:?}; server fds {fds0} before",
        start.elapsed()
    );
    assert_eq!(served + busy, CONNECTIONS);
    assert!(served >= 600, "{served} served");
    // Everything is released once the connections are gone.
    wait_until(|| server.fds() <= fds0 + 2)
        .map_err(|_| format!("fds: {} after, {fds0} before", server.fds()))?;
    let rss1 = server.rss_kib();
    println!("server rss {rss0} KiB before, {rss1} KiB after");
    assert!(
        rss1 < rss0 + 48 * 1024,
        "memory did not come back: {rss0} KiB before, {rss1} KiB after"
    );
    // And it still serves.
    let mut c = Raw::connect(server.addr).await?;
    assert_eq!(c.line().await?, "220 barge/1 ready");
    assert_eq!(c.list().await?.len(), 1);
    Ok(())
}

/// A client pipelines LIST requests on a folder with a large listing and reads nothing. The
/// server may answer only as fast as the client reads: what it holds meanwhile must stay
/// bounded (socket buffers and one batch), not grow with every request it has read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_server_memory() -> TestResult {
    let dir = tempfile::tempdir()?;
    for i in 0..2000 {
        std::fs::write(
            dir.path()
                .join(format!("a-file-with-a-longish-name-{i:05}.txt")),
            i.to_string(),
        )?;
    }
    let server = BinServer::start(dir.path(), &[])?;
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    // Until everything is hashed the listing is shorter; wait for the full one.
    let deadline = Instant::now() + WAIT;
    while c.list().await?.len() < 2000 {
        assert!(Instant::now() < deadline, "never indexed");
    }
    let listing_bytes = 2000 * 250;
    let rss0 = server.rss_kib();
    // 64 KiB of requests, each answered by ~500 KB: 6 GB if all were held at once.
    let flood = b"LIST\n".repeat(64 * 1024 / 5);
    let mut f = Raw::connect(server.addr).await?;
    f.line().await?;
    tokio::time::timeout(Duration::from_secs(2), f.writer.write_all(&flood))
        .await
        .ok();
    // Watch the server for two seconds while nobody reads.
    let mut peak = rss0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "rss {rss0} KiB before, peak {peak} KiB while a client did not read ({} requests of {} KB each)",
        flood.len() / 5,
        listing_bytes / 1000
    );
    assert!(
        peak < rss0 + 24 * 1024,
        "server memory grew from {rss0} KiB to {peak} KiB for a client that does not read"
    );
    // The reader side still works: it is answered in order.
    let mut line = String::new();
    tokio::time::timeout(WAIT, f.reader.read_line(&mut line)).await??;
    assert_eq!(line, "210 2000 files\n");
    drop(f);
    // Other clients were not affected.
    assert_eq!(c.list().await?.len(), 2000);
    Ok(())
}

/// Clients that send (and read) one byte at a time do not slow down the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_up_fast_ones() -> TestResult {
    const TICK: Duration = Duration::from_millis(25);
    let server = TestServer::start_with(
        tempfile::tempdir()?,
        StoreConfig::default(),
        ServerConfig::default(),
    )
    .await?;
    let mut seed = server.raw().await?;
    seed.upload("shared.bin", &vec![5u8; 100_000]).await?;
    let slow_done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut slow = Vec::new();
    for i in 0..8 {
        let addr = server.addr;
        let slow_done = slow_done.clone();
        slow.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            c.line().await?;
            // A command, one byte per tick.
            for b in b"HELP\n" {
                c.send([*b]).await?;
                tokio::time::sleep(TICK).await;
            }
            let n = barge::protocol::HELP_LINES.len();
            assert!(c.line().await?.starts_with(&format!("211 {n} ")));
            for _ in 0..n {
                c.line().await?;
            }
            // An upload body, one byte per tick.
            let body: Vec<u8> = format!("slow {i} ").repeat(4).into_bytes();
            assert_code(
                &c.cmd(&format!("UPLOAD slow{i};{}", body.len())).await?,
                350,
            );
            for b in &body {
                c.send([*b]).await?;
                tokio::time::sleep(TICK).await;
            }
            assert_eq!(
                c.line().await?,
                format!("226 {} Upload complete", md5_hex(&body))
            );
            // A download, read one byte per tick for a while, then the rest.
            let head = c.cmd("DOWNLOAD shared.bin").await?;
            assert!(head.starts_with("213 100000 "), "{head}");
            for _ in 0..10 {
                c.bytes(1).await?;
                tokio::time::sleep(TICK).await;
            }
            c.bytes(100_000 - 10).await?;
            slow_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            TestResult::Ok(())
        }));
    }
    // Give the slow ones a head start so they are mid-command when the fast ones run.
    tokio::time::sleep(TICK * 2).await;
    let start = Instant::now();
    let mut fast = Vec::new();
    for i in 0..8 {
        let addr = server.addr;
        fast.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            c.line().await?;
            for j in 0..10 {
                let data = vec![(i * 10 + j) as u8; 50_000];
                let id = c.upload(&format!("fast-{i}-{j}"), &data).await?;
                assert_eq!(c.download(&id).await?.1, data);
            }
            TestResult::Ok(())
        }));
    }
    for t in fast {
        t.await??;
    }
    let fast_time = start.elapsed();
    // The slow clients need at least (5 + 32 + 10) ticks; the fast ones finished while all of
    // them were still trickling.
    let still_slow = 8 - slow_done.load(std::sync::atomic::Ordering::SeqCst);
    println!("fast clients done in {fast_time:?} with {still_slow} slow clients still going");
    assert_eq!(still_slow, 8, "fast clients took {fast_time:?}");
    for t in slow {
        t.await??;
    }
    Ok(())
}

/// Caps the running server's open-file limit, as a small `ulimit -n` would.
fn cap_open_files(server: &BinServer, limit: u64) -> TestResult {
    let pid = i32::try_from(server.pid())?;
    rlimit::prlimit(pid, rlimit::Resource::NOFILE, Some((limit, limit)), None)?;
    Ok(())
}

#[tokio::test]
async fn listing_many_folders_needs_few_descriptors() -> TestResult {
    let root = tempfile::tempdir()?;
    for i in 0..400 {
        let dir = root.path().join(format!("d{i:03}"));
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("x"), format!("{i}"))?;
    }
    let server = BinServer::start(root.path(), &[])?;
    // Far fewer descriptors than folders: the walk must not hold one per folder.
    cap_open_files(&server, 64)?;
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    let listed = c.list().await?;
    assert_eq!(listed.len(), 400);
    server.kill()
}

#[tokio::test]
async fn group_commits_need_few_descriptors() -> TestResult {
    let root = tempfile::tempdir()?;
    let server = BinServer::start(root.path(), &[])?;
    cap_open_files(&server, 64)?;
    let mut tasks = Vec::new();
    for client in 0..4 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            c.line().await?;
            let mut batch = Vec::new();
            for i in 0..256 {
                batch.extend_from_slice(format!("PUT c{client}/f{i};3\n{i:03}").as_bytes());
            }
            c.send(&batch).await?;
            for i in 0..256 {
                let reply = c.line().await?;
                assert_eq!(
                    reply,
                    format!(
                        "226 {} Upload complete",
                        md5_hex(format!("{i:03}").as_bytes())
                    )
                );
            }
            TestResult::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    server.kill()
}

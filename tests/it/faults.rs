//! Faults: the server killed mid-upload and restarted, clients killed or gone silent
//! mid-transfer, a full disk, and files changed behind the server's back.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use barge::server::ServerConfig;
use barge::store::StoreConfig;
use md5::{Digest, Md5};

use crate::common::{Raw, TestResult, TestServer, eventually, md5_hex, temp_files};
use crate::support::{BinServer, Noise, assert_code, temp_bytes, wait_until};

/// The real binary is SIGKILLed with an upload half done: after a restart nothing partial is
/// visible, the temp area is empty, every finished file is listed with its true id, and the
/// same upload then succeeds.
#[tokio::test]
async fn server_killed_mid_upload_and_restarted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let server = BinServer::start(root, &[])?;
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    let kept = c.upload("kept.txt", b"finished before the kill").await?;
    let big_kept = Noise::new(1).bytes(300_000);
    c.upload("sub/big-kept.bin", &big_kept).await?;
    let body = Noise::new(2).bytes(8 << 20);
    assert_code(
        &c.cmd(&format!("UPLOAD big.bin;{}", body.len())).await?,
        350,
    );
    c.send(&body[..3 << 20]).await?;
    // Wait until part of it is really on disk, in the temp area.
    wait_until(|| temp_bytes(root) >= 1 << 20)?;
    server.kill()?;
    drop(c);
    assert!(!root.join("big.bin").exists());
    assert!(
        temp_files(root) >= 1,
        "the kill left no partial upload to clean"
    );

    let server = BinServer::start(root, &[])?;
    assert_eq!(temp_files(root), 0, "leftovers not cleaned at start");
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    assert_eq!(
        c.list().await?,
        vec![
            (kept.clone(), "kept.txt".into(), 24),
            (md5_hex(&big_kept), "sub/big-kept.bin".into(), 300_000),
        ]
    );
    assert_eq!(c.download(&kept).await?.1, b"finished before the kill");
    assert_code(&c.cmd("DOWNLOAD big.bin").await?, 404);
    // The same upload now succeeds.
    let id = c.upload("big.bin", &body).await?;
    assert_eq!(id, md5_hex(&body));
    assert_eq!(c.download("big.bin").await?.1, body);

    // Killed right after a `226`: the file and its id survive (the index may lag behind, but
    // an entry is trusted only while size, mtime and inode match, so it is rehashed).
    let last = c.upload("last.txt", b"stored just before the kill").await?;
    server.kill()?;
    // Meanwhile someone edits a file by hand, keeping its size.
    std::fs::write(root.join("kept.txt"), b"FINISHED BEFORE THE KILL")?;
    let server = BinServer::start(root, &[])?;
    let mut c = Raw::connect(server.addr).await?;
    c.line().await?;
    let listed = c.list().await?;
    assert!(
        listed.contains(&(last, "last.txt".into(), 27)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(md5_hex(b"FINISHED BEFORE THE KILL"), "kept.txt".into(), 24)),
        "{listed:?}"
    );
    assert_code(&c.cmd(&format!("DOWNLOAD {kept}")).await?, 404);
    Ok(())
}

/// A shell client (bash's `/dev/tcp`) that is SIGKILLed in the middle of a transfer.
fn bash_client(port: u16, script: &str) -> TestResult<(std::process::Child, String)> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1\nread -r greeting <&3\n{script}\necho ready\nsleep 60"
        ))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut lines = String::new();
    loop {
        let mut l = String::new();
        if out.read_line(&mut l)? == 0 {
            return Err(format!("client script failed: {lines}").into());
        }
        if l == "ready\n" {
            break;
        }
        lines.push_str(&l);
    }
    Ok((child, lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_killed_mid_upload_and_mid_download() -> TestResult {
    if Command::new("bash").arg("-c").arg("true").status().is_err() {
        println!("note: skipped: no bash to run a killable client");
        return Ok(());
    }
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let root = server.root().to_path_buf();
    std::fs::write(root.join("big.bin"), Noise::new(3).bytes(16 << 20))?;
    let port = server.addr.port();

    // Mid-upload: 3 MB of 10 MB sent, then SIGKILL.
    let (mut child, said) = tokio::task::spawn_blocking(move || {
        bash_client(
            port,
            "printf 'UPLOAD killed.bin;10000000\\n' >&3\nread -r reply <&3\necho \"$reply\"\nhead -c 3000000 /dev/zero >&3",
        )
    })
    .await??;
    assert!(said.starts_with("350 "), "{said}");
    child.kill()?;
    child.wait()?;
    eventually(|| temp_files(&root) == 0).await?;
    assert!(!root.join("killed.bin").exists());

    // Mid-download: 1 MB of 16 MB read, then SIGKILL.
    let (mut child, said) = tokio::task::spawn_blocking(move || {
        bash_client(
            port,
            "printf 'DOWNLOAD big.bin\\n' >&3\nread -r head <&3\necho \"$head\"\nhead -c 1000000 <&3 >/dev/null",
        )
    })
    .await??;
    assert!(said.starts_with("213 16777216 "), "{said}");
    child.kill()?;
    child.wait()?;

    // The only slot is free again once each session has ended, and the name is free too.
    let mut c = greeted(server.addr).await?;
    c.upload("killed.bin", b"now whole").await?;
    assert_eq!(c.list().await?.len(), 2);
    Ok(())
}

/// Connects until greeted with 220 (a slot may take a moment to free up).
async fn greeted(addr: std::net::SocketAddr) -> TestResult<Raw> {
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    loop {
        let mut c = Raw::connect(addr).await?;
        let first = c.line().await?;
        if first == "220 barge/1 ready" {
            return Ok(c);
        }
        assert!(first.starts_with("503 "), "{first}");
        if tokio::time::Instant::now() > deadline {
            return Err("no slot ever freed".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client asks for a large file and stops reading. Other clients go on as if nothing
/// happened, and the stall timeout frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_during_a_download() -> TestResult {
    let config = ServerConfig {
        max_connections: 2,
        stall_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let data = Noise::new(4).bytes(32 << 20);
    std::fs::write(server.root().join("big.bin"), &data)?;
    let mut stuck = server.raw().await?;
    let head = stuck.cmd("DOWNLOAD big.bin").await?;
    assert!(head.starts_with("213 33554432 "), "{head}");
    // Reads nothing more. Meanwhile another client works normally.
    let mut other = server.raw().await?;
    other.upload("small", b"small").await?;
    assert_eq!(other.download("big.bin").await?.1, data);
    // Both slots are taken; the stuck one is freed by the stall timeout, while `other` stays.
    let mut c = greeted(server.addr).await?;
    assert_eq!(c.list().await?.len(), 2);
    assert_code(&other.cmd("LIST").await?, 210);
    // What the stuck client can still read ends early: never more than the promised size.
    let mut got = Vec::new();
    tokio::time::timeout(
        crate::common::WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stuck.reader, &mut got),
    )
    .await??;
    assert!(got.len() < data.len(), "{}", got.len());
    assert_eq!(got[..], data[..got.len()]);
    Ok(())
}

/// Unmounts on drop, so a failing test does not leave a mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a small tmpfs, where the disk really fills up. `None` (with a note) where that is
/// not allowed: not root, no `mount`, or a container that forbids it.
fn small_tmpfs(dir: &std::path::Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(Mount(dir.to_path_buf()))
    } else {
        println!("note: skipped: cannot mount a small tmpfs here (needs root)");
        None
    }
}

fn free_bytes(p: &std::path::Path) -> u64 {
    let st = rustix::fs::statvfs(p).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// The disk fills up during an upload (someone else takes the space after the server checked
/// it): `507`, the temp file is removed, nothing partial is visible, and the server goes on.
#[tokio::test]
async fn disk_full_during_an_upload() -> TestResult {
    let mnt = tempfile::tempdir()?;
    let Some(_mount) = small_tmpfs(mnt.path(), "8m") else {
        return Ok(());
    };
    let root = mnt.path().join("share");
    std::fs::create_dir(&root)?;
    let store = StoreConfig {
        min_free_space: 0,
        ..StoreConfig::default()
    };
    let dir = tempfile::Builder::new().tempdir_in(&root)?;
    let server = TestServer::start_with(dir, store, ServerConfig::default()).await?;
    let root = server.root().to_path_buf();
    let mut c = server.raw().await?;
    c.upload("before.bin", &vec![1u8; 100_000]).await?;
    let filler = mnt.path().join("filler");
    for (form, size) in [
        ("UPLOAD", 3_000_000usize),
        ("PUT", 3_000_000),
        ("PUT", 60_000),
    ] {
        let body = Noise::new(size as u64).bytes(size);
        if form == "UPLOAD" {
            assert_code(&c.cmd(&format!("UPLOAD full.bin;{size}")).await?, 350);
        } else {
            c.send(format!("PUT full.bin;{size}\n")).await?;
        }
        // Now someone else fills the disk, leaving less than the body needs.
        let take = free_bytes(&root).saturating_sub(size as u64 / 2);
        std::fs::write(&filler, vec![0u8; usize::try_from(take)?]).ok();
        // Body, then a pipelined command: the connection must stay in step.
        c.send(&body).await?;
        c.send(b"LIST\n").await?;
        assert_code(&c.line().await?, 507);
        assert_eq!(c.line().await?, "210 1 file");
        c.line().await?;
        eventually(|| temp_files(&root) == 0).await?;
        assert!(!root.join("full.bin").exists());
        // Space again: the same upload succeeds.
        std::fs::remove_file(&filler)?;
        let id = c.upload("full.bin", &body).await?;
        assert_eq!(id, md5_hex(&body));
        assert_eq!(c.cmd("DELETE full.bin").await?, "250 Deleted full.bin");
    }
    drop(c);
    server.stop().await?;
    Ok(())
}

/// A file changed or deleted on disk between LIST and DOWNLOAD: the client gets `404` or the
/// file's current bytes under their true id, never bytes that do not match the id sent.
#[tokio::test]
async fn files_changed_behind_the_servers_back() -> TestResult {
    let server = TestServer::start().await?;
    let root = server.root().to_path_buf();
    std::fs::write(root.join("deleted.txt"), b"soon gone")?;
    std::fs::write(root.join("same-size.txt"), b"version 1")?;
    std::fs::write(root.join("grown.txt"), b"short")?;
    let mut c = server.raw().await?;
    let listed = c.list().await?;
    assert_eq!(listed.len(), 3);
    let id = |name: &str| {
        listed
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(i, _, _)| i.clone())
            .unwrap()
    };

    std::fs::remove_file(root.join("deleted.txt"))?;
    assert_code(
        &c.cmd(&format!("DOWNLOAD {}", id("deleted.txt"))).await?,
        404,
    );
    assert_code(&c.cmd("DOWNLOAD deleted.txt").await?, 404);

    // Rewritten (new mtime) with the same size, and grown.
    std::thread::sleep(Duration::from_millis(10)); // a distinct mtime on coarse clocks
    std::fs::write(root.join("same-size.txt"), b"version 2")?;
    std::fs::write(root.join("grown.txt"), b"much longer now")?;
    for name in ["same-size.txt", "grown.txt"] {
        assert_code(&c.cmd(&format!("DOWNLOAD {}", id(name))).await?, 404);
        let (got_id, body) = c.download(name).await?;
        assert_eq!(got_id, md5_hex(&body), "{name}");
        assert_eq!(body, std::fs::read(root.join(name))?);
    }
    Ok(())
}

/// Files replaced or truncated while they are being sent: a replacement (rename over it) does
/// not affect the bytes sent, which come from the file opened; a truncation ends the
/// connection early instead of padding or mixing bytes.
#[tokio::test]
async fn files_replaced_or_truncated_during_a_download() -> TestResult {
    let server = TestServer::start().await?;
    let root = server.root().to_path_buf();
    let data = Noise::new(5).bytes(32 << 20);
    std::fs::write(root.join("replaced.bin"), &data)?;
    std::fs::write(root.join("truncated.bin"), &data)?;
    let id = md5_hex(&data);
    let mut c = server.raw().await?;
    assert_eq!(c.list().await?.len(), 2);

    let head = c.cmd("DOWNLOAD replaced.bin").await?;
    assert_eq!(head, format!("213 {} {id} replaced.bin", data.len()));
    let first = c.bytes(1 << 20).await?;
    std::fs::write(root.join("new.tmp"), b"a completely different file")?;
    std::fs::rename(root.join("new.tmp"), root.join("replaced.bin"))?;
    let rest = c.bytes(data.len() - (1 << 20)).await?;
    let mut h = Md5::new();
    h.update(&first);
    h.update(&rest);
    assert_eq!(hex::encode(h.finalize()), id);

    let head = c.cmd("DOWNLOAD truncated.bin").await?;
    assert!(head.starts_with("213 "), "{head}");
    let first = c.bytes(1 << 20).await?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("truncated.bin"))?
        .set_len(2 << 20)?;
    let mut rest = Vec::new();
    tokio::time::timeout(
        crate::common::WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut c.reader, &mut rest),
    )
    .await??;
    let total = first.len() + rest.len();
    // Either everything had already left (then it is the original, whole), or the connection
    // ended short: a client's size and MD5 checks both fail, and nothing wrong is accepted.
    if total == data.len() {
        assert_eq!([first, rest].concat(), data);
    } else {
        assert!(total < data.len());
        assert_eq!(first[..], data[..first.len()]);
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

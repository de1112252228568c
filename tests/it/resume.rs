//! Resumed transfers (`PROTOCOL.md` sections 5.11 and 5.12): the dialogue on a raw socket, the
//! binary killed (and the server killed) partway through a large upload and download and run
//! again, a local file changed between tries, partials of another user, and expiry.
//!
//! Where a transfer stops is set by the client's test hooks (`BARGE_TEST_KILL_AT`: SIGKILL
//! itself once that many bytes of the file are done; `BARGE_TEST_STALL_AT`: stop moving bytes
//! there), so "30 %" does not depend on timing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;

use barge::security::throttle::Policy;
use barge::security::users::{Permissions, Scope, Users};
use barge::server::{Access, AccessOptions, ServerConfig};
use barge::store::StoreConfig;

use crate::common::{TestResult, TestServer, md5_hex};
use crate::support::{BinServer, Noise, wait_until};

const SIZE: usize = 24 << 20;
const KILL_AT: usize = SIZE * 3 / 10;
/// The hooks fire at the end of the chunk that crosses `KILL_AT` (the client's chunks are
/// `transfer::LARGE_CHUNK`, 1 MiB).
const KILL_BY: u64 = (KILL_AT + 1024 * 1024) as u64;
const VERIFICATION: i32 = 4;

/// The binary, pointed at `port`, run in `dir`.
fn barge(port: u16, dir: &Path) -> Command {
    // Larger files than the CLI tests move: a longer time limit.
    let mut cmd = crate::cli::barge(port, dir);
    cmd.timeout(Duration::from_secs(60));
    cmd
}

/// The partial uploads in the server's state folder (not their saved MD5 states).
fn partials(root: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(root.join(".barge/partial"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
                .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default()
}

/// The offset a run said it resumed at (`Resuming at byte N of ...`), if it did.
fn resumed_at(stderr: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stderr);
    let at = text.split("Resuming at byte ").nth(1)?;
    at.split(' ').next()?.parse().ok()
}

/// Waits until the partials stop growing: the interrupted upload has ended on the server.
fn settled(root: &Path) -> TestResult {
    let mut last = u64::MAX;
    wait_until(|| {
        let now: u64 = partials(root).iter().map(|(_, l)| *l).sum();
        let still = now == last && now > 0;
        last = now;
        std::thread::sleep(Duration::from_millis(300));
        still
    })?;
    Ok(())
}

fn big_file(dir: &Path, name: &str, seed: u64) -> TestResult<Vec<u8>> {
    let data = Noise::new(seed).bytes(SIZE);
    std::fs::write(dir.join(name), &data)?;
    Ok(data)
}

fn listed(port: u16, dir: &Path) -> TestResult<String> {
    let out = barge(port, dir).arg("ls").output()?;
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn a_client_killed_mid_upload_continues_from_the_servers_partial() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    let data = big_file(work.path(), "big.bin", 1)?;

    let first = barge(port, work.path())
        .args(["put", "big.bin"])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success(), "the first try was not interrupted");
    // The server keeps what arrived.
    wait_until(|| partials(root.path()).iter().any(|(_, len)| *len > 0))?;
    let kept = partials(root.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        !listed(port, work.path())?.contains("big.bin"),
        "a partial is never listed"
    );

    let second = barge(port, work.path()).args(["put", "big.bin"]).output()?;
    assert!(second.status.success(), "{second:?}");
    let offset = resumed_at(&second.stderr).ok_or("the second try did not resume")?;
    // Fewer bytes were sent the second time: only those after the offset.
    assert!(offset > 0 && offset <= KILL_BY, "offset {offset}");
    assert!(listed(port, work.path())?.contains(&md5_hex(&data)));
    assert_eq!(std::fs::read(root.path().join("big.bin"))?, data);
    assert!(
        partials(root.path()).is_empty(),
        "the partial became the file"
    );
    Ok(())
}

#[test]
fn a_client_killed_mid_download_continues_from_its_part_file() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let data = big_file(root.path(), "big.bin", 2)?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();

    let first = barge(port, work.path())
        .args(["get", "big.bin"])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success());
    let part = work
        .path()
        .join(format!(".big.bin.{}.barge-part", md5_hex(&data)));
    let kept = std::fs::metadata(&part)?.len();
    assert!(kept > 0 && kept < SIZE as u64, "part of {kept} bytes");
    assert!(!work.path().join("big.bin").exists());

    let second = barge(port, work.path()).args(["get", "big.bin"]).output()?;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(resumed_at(&second.stderr), Some(kept));
    assert_eq!(std::fs::read(work.path().join("big.bin"))?, data);
    assert!(!part.exists(), "the part became the file");

    // A corrupted part fails the check and is removed; the next try starts over.
    std::fs::remove_file(work.path().join("big.bin"))?;
    std::fs::write(&part, vec![0u8; 1000])?;
    let bad = barge(port, work.path()).args(["get", "big.bin"]).output()?;
    assert_eq!(bad.status.code(), Some(VERIFICATION), "{bad:?}");
    assert!(!part.exists() && !work.path().join("big.bin").exists());
    let again = barge(port, work.path()).args(["get", "big.bin"]).output()?;
    assert!(again.status.success());
    assert_eq!(resumed_at(&again.stderr), None);
    assert_eq!(std::fs::read(work.path().join("big.bin"))?, data);
    Ok(())
}

/// Runs `args` with the stall hook at 30 %, kills the server once the transfer has stopped
/// there, then the stalled client; returns the server's port.
fn stall_then_kill_server(
    server: BinServer,
    work: &Path,
    args: &[&str],
    progress: impl Fn() -> u64,
) -> TestResult<u16> {
    let port = server.addr.port();
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
        .current_dir(work)
        .env("BARGE_HOST", "127.0.0.1")
        .env("BARGE_PORT", port.to_string())
        .env("BARGE_PLAIN", "true")
        .env("BARGE_TEST_STALL_AT", KILL_AT.to_string())
        .env("XDG_CACHE_HOME", crate::cli::test_cache())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Wait until the bytes stop growing near 30 %.
    let mut last = u64::MAX;
    wait_until(|| {
        let now = progress();
        let still = now == last && now > 0;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        still
    })?;
    server.kill()?;
    client.kill()?;
    client.wait()?;
    Ok(port)
}

#[test]
fn a_server_killed_mid_upload_keeps_the_partial_across_a_restart() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let data = big_file(work.path(), "big.bin", 3)?;
    let server = BinServer::start(root.path(), &[])?;
    let r = root.path().to_owned();
    let port = stall_then_kill_server(server, work.path(), &["put", "big.bin"], || {
        partials(&r).iter().map(|(_, l)| *l).sum()
    })?;
    let kept: u64 = partials(root.path()).iter().map(|(_, l)| *l).sum();
    assert!(kept > 0 && kept <= KILL_BY, "kept {kept}");

    let _server = BinServer::start_on(root.path(), port, &["--plain"])?;
    assert_eq!(partials(root.path()).len(), 1, "a restart keeps partials");
    let second = barge(port, work.path()).args(["put", "big.bin"]).output()?;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(resumed_at(&second.stderr), Some(kept));
    assert_eq!(std::fs::read(root.path().join("big.bin"))?, data);
    Ok(())
}

#[test]
fn a_server_killed_mid_download_is_continued_after_a_restart() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let data = big_file(root.path(), "big.bin", 4)?;
    let part = work
        .path()
        .join(format!(".big.bin.{}.barge-part", md5_hex(&data)));
    let server = BinServer::start(root.path(), &[])?;
    let p = part.clone();
    let port = stall_then_kill_server(server, work.path(), &["get", "big.bin"], || {
        std::fs::metadata(&p).map_or(0, |m| m.len())
    })?;
    let kept = std::fs::metadata(&part)?.len();
    assert!(kept > 0 && kept < SIZE as u64);

    let _server = BinServer::start_on(root.path(), port, &["--plain"])?;
    let second = barge(port, work.path()).args(["get", "big.bin"]).output()?;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(resumed_at(&second.stderr), Some(kept));
    assert_eq!(std::fs::read(work.path().join("big.bin"))?, data);
    Ok(())
}

#[test]
fn a_local_file_changed_between_tries_fails_the_check_and_nothing_is_kept() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    let mut data = big_file(work.path(), "big.bin", 5)?;
    let first = barge(port, work.path())
        .args(["put", "big.bin"])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success());
    wait_until(|| partials(root.path()).iter().any(|(_, len)| *len > 0))?;

    // Same size, different first bytes: the kept prefix no longer matches.
    data[..100].fill(0);
    std::fs::write(work.path().join("big.bin"), &data)?;
    let second = barge(port, work.path()).args(["put", "big.bin"]).output()?;
    assert_eq!(second.status.code(), Some(VERIFICATION), "{second:?}");
    assert!(resumed_at(&second.stderr).is_some());
    assert!(
        !root.path().join("big.bin").exists(),
        "nothing wrong is stored"
    );
    assert!(partials(root.path()).is_empty(), "nothing wrong is kept");

    let third = barge(port, work.path()).args(["put", "big.bin"]).output()?;
    assert!(third.status.success(), "{third:?}");
    assert_eq!(resumed_at(&third.stderr), None, "the next try starts over");
    assert_eq!(std::fs::read(root.path().join("big.bin"))?, data);

    // --no-resume sends everything even when the server kept a partial.
    let fourth = barge(port, work.path())
        .args(["put", "big.bin", "--as", "again.bin"])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!fourth.status.success());
    settled(root.path())?;
    let fifth = barge(port, work.path())
        .args(["put", "big.bin", "--as", "again.bin", "--no-resume"])
        .output()?;
    assert!(fifth.status.success(), "{fifth:?}");
    assert_eq!(resumed_at(&fifth.stderr), None);
    Ok(())
}

/// An in-process server with users alice and bob, both allowed everything.
async fn two_users(store: StoreConfig) -> TestResult<(TestServer, tempfile::TempDir)> {
    let state = tempfile::tempdir()?;
    let db = Users::open(state.path())?;
    for name in ["alice", "bob"] {
        db.add_user(name, "pw-pw-pw-pw", Permissions::ALL, &Scope::whole_share())?;
    }
    let access = Arc::new(Access::with_policy(
        db,
        AccessOptions {
            public: false,
            read_only: false,
            loopback: true,
            tls: false,
        },
        Policy::default(),
    ));
    let config = ServerConfig {
        access,
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(tempfile::tempdir()?, store, config).await?;
    Ok((server, state))
}

/// Waits (without blocking the test's runtime, which runs the server too) for `cond`.
async fn wait_for(mut cond: impl FnMut() -> bool) -> TestResult {
    for _ in 0..2000 {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("condition never became true".into())
}

async fn login(server: &TestServer, user: &str) -> TestResult<crate::common::Raw> {
    let mut raw = server.raw().await?;
    raw.cmd(&format!("USER {user}")).await?;
    let reply = raw.cmd("PASS pw-pw-pw-pw").await?;
    assert!(reply.starts_with("230 "), "{reply}");
    Ok(raw)
}

#[tokio::test]
async fn the_resume_dialogue_on_the_wire() -> TestResult {
    let server = TestServer::start().await?;
    let data = b"0123456789";
    let id = md5_hex(data);

    let mut raw = server.raw().await?;
    let reply = raw.cmd("RESUME a.txt;10").await?;
    assert!(reply.starts_with("352 0 "), "{reply}");
    raw.send(&data[..4]).await?;
    drop(raw);
    wait_for(|| partials(server.root()).iter().any(|(_, l)| *l == 4)).await?;

    let mut raw = server.raw().await?;
    // A partial is neither listed nor served.
    assert!(raw.list().await?.is_empty());
    assert!(raw.cmd("DOWNLOAD a.txt").await?.starts_with("404 "));
    let reply = raw.cmd("RESUME a.txt;10").await?;
    assert!(reply.starts_with("352 4 "), "{reply}");
    raw.send(&data[4..]).await?;
    assert_eq!(raw.cmd(&id).await?, format!("226 {id} Upload complete"));

    // From an offset: 214 <count> <offset> <id> <name>, then the rest.
    let reply = raw.cmd("DOWNLOAD_FROM 3 a.txt").await?;
    assert_eq!(reply, format!("214 7 3 {id} a.txt"));
    assert_eq!(raw.bytes(7).await?, &data[3..]);
    let reply = raw.cmd(&format!("DOWNLOAD_FROM 10 {id}")).await?;
    assert_eq!(reply, format!("214 0 10 {id} a.txt"));
    assert!(
        raw.cmd("DOWNLOAD_FROM 11 a.txt")
            .await?
            .starts_with("416 10 ")
    );

    // A wrong MD5 after the body: nothing stored, nothing kept.
    let reply = raw.cmd("RESUME b.txt;10").await?;
    assert!(reply.starts_with("352 0 "), "{reply}");
    raw.send(data).await?;
    let wrong = md5_hex(b"something else");
    let reply = raw.cmd(&wrong).await?;
    assert!(reply.starts_with(&format!("460 {id} ")), "{reply}");
    assert!(raw.cmd("DOWNLOAD b.txt").await?.starts_with("404 "));
    assert!(partials(server.root()).is_empty());
    // The connection goes on.
    assert_eq!(raw.list().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn another_user_can_neither_continue_nor_read_a_partial() -> TestResult {
    let (server, _state) = two_users(StoreConfig::default()).await?;
    let data = b"0123456789";
    let mut alice = login(&server, "alice").await?;
    assert!(alice.cmd("RESUME f;10").await?.starts_with("352 0 "));
    alice.send(&data[..6]).await?;
    drop(alice);
    wait_for(|| partials(server.root()).iter().any(|(_, l)| *l == 6)).await?;

    let mut bob = login(&server, "bob").await?;
    let reply = bob.cmd("RESUME f;10").await?;
    assert!(
        reply.starts_with("352 0 "),
        "bob was offered alice's bytes: {reply}"
    );
    drop(bob);
    let mut bob = login(&server, "bob").await?;
    assert!(bob.cmd("DOWNLOAD f").await?.starts_with("404 "));
    assert!(bob.list().await?.is_empty());
    drop(bob);

    let mut alice = login(&server, "alice").await?;
    let reply = alice.cmd("RESUME f;10").await?;
    assert!(reply.starts_with("352 6 "), "{reply}");
    alice.send(&data[6..]).await?;
    let id = md5_hex(data);
    assert_eq!(alice.cmd(&id).await?, format!("226 {id} Upload complete"));
    Ok(())
}

#[tokio::test]
async fn old_partials_expire_and_their_number_is_bounded() -> TestResult {
    let store = StoreConfig {
        max_partials: 2,
        ..StoreConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, store, ServerConfig::default()).await?;
    let mut raw = server.raw().await?;
    assert!(raw.cmd("RESUME old;10").await?.starts_with("352 0 "));
    raw.send(b"0123").await?;
    drop(raw);
    wait_for(|| partials(server.root()).iter().any(|(_, l)| *l == 4)).await?;
    // Two days old: past the default age of one day.
    let (old, _) = partials(server.root()).remove(0);
    let two_days_ago = rustix::fs::Timespec {
        tv_sec: i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )? - 2 * 86_400,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &old,
        &rustix::fs::Timestamps {
            last_access: two_days_ago,
            last_modification: two_days_ago,
        },
        rustix::fs::AtFlags::empty(),
    )?;
    let mut raw = server.raw().await?;
    let reply = raw.cmd("RESUME old;10").await?;
    assert!(
        reply.starts_with("352 0 "),
        "an expired partial was offered: {reply}"
    );
    drop(raw);

    // At most two kept: a third drops the oldest.
    for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let mut raw = server.raw().await?;
        assert!(
            raw.cmd(&format!("RESUME {name};10"))
                .await?
                .starts_with("352 0 ")
        );
        raw.send(b"ab").await?;
        drop(raw);
        wait_for(|| {
            partials(server.root())
                .iter()
                .filter(|(_, l)| *l == 2)
                .count()
                >= (i + 1).min(2)
        })
        .await?;
    }
    wait_for(|| partials(server.root()).len() <= 2).await?;
    Ok(())
}

// -- saved MD5 states: a resume hashes only what no saved state covers ------------------------

/// Saved states every MiB (instead of tens of MiB) in these small files.
const EVERY: &str = "1048576";

/// Where a run said it started hashing (`hashing PATH from byte N`, a debug line), if it did.
fn hashed_from(stderr: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains("hashing ") && l.contains(" from byte "))?;
    line.split(" from byte ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A fresh file's states are cached only once its change time is a little in the past (see
/// `client::hash_cache`): these tests wait that long after writing one.
fn let_settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_resumed_upload_hashes_from_the_cached_state_not_from_zero() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    let data = big_file(work.path(), "big.bin", 6)?;
    let_settle();
    // Stalled at 30 % (its hashing goes on), killed once states are cached: a killed
    // client's hashing may lag its sending by more than the spacing of the states.
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
        .current_dir(work.path())
        .env("BARGE_HOST", "127.0.0.1")
        .env("BARGE_PORT", port.to_string())
        .env("BARGE_PLAIN", "true")
        .env("XDG_CACHE_HOME", cache.path())
        .env("BARGE_TEST_MD5_EVERY", EVERY)
        .env("BARGE_TEST_STALL_AT", KILL_AT.to_string())
        .args(["put", "big.bin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let entries = || {
        std::fs::read_dir(cache.path().join("barge/md5")).map_or(0, |d| {
            // Not counting a temporary file the kill may have left.
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    };
    // Killed once states are cached and the server holds more than the first state covers.
    let waited = wait_until(|| {
        entries() > 0 && partials(root.path()).iter().map(|(_, l)| *l).sum::<u64>() > 2 << 20
    });
    first.kill()?;
    first.wait()?;
    waited?;
    settled(root.path())?;
    assert_eq!(entries(), 1, "one cache entry for the file");
    let second = barge(port, work.path())
        .args(["put", "big.bin"])
        .env("XDG_CACHE_HOME", cache.path())
        .env("BARGE_TEST_MD5_EVERY", EVERY)
        .env("BARGE_LOG", "barge=debug")
        .arg("--debug")
        .output()?;
    assert!(second.status.success(), "{second:?}");
    let offset = resumed_at(&second.stderr).ok_or("did not resume")?;
    let from = hashed_from(&second.stderr).ok_or("no hashing line")?;
    // From a state the killed try saved (its hashing may lag its sending), not from 0.
    assert!(from > 0 && from <= offset, "{from} for {offset}");
    assert_eq!(std::fs::read(root.path().join("big.bin"))?, data);
    Ok(())
}

#[test]
fn a_file_changed_in_place_with_its_mtime_put_back_is_not_taken_from_the_cache() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    let mut data = big_file(work.path(), "big.bin", 7)?;
    let path = work.path().join("big.bin");
    let_settle();
    let first = barge(port, work.path())
        .args(["put", "big.bin"])
        .env("XDG_CACHE_HOME", cache.path())
        .env("BARGE_TEST_MD5_EVERY", EVERY)
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success());
    settled(root.path())?;

    // Same size, same inode, different first bytes, and the modification time put back: only
    // the change time tells. Had the cached state been used, the client's MD5 would be that of
    // the old prefix and the rest, the very bytes the server holds, and a file that is neither
    // the old nor the new one would be stored.
    let mtime = std::fs::metadata(&path)?.modified()?;
    data[..100].fill(0);
    {
        use std::io::{Seek as _, Write as _};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.write_all(&data[..100])?;
        f.set_modified(mtime)?;
    }
    assert_eq!(std::fs::metadata(&path)?.modified()?, mtime);
    let second = barge(port, work.path())
        .args(["put", "big.bin"])
        .env("XDG_CACHE_HOME", cache.path())
        .env("BARGE_TEST_MD5_EVERY", EVERY)
        .env("BARGE_LOG", "barge=debug")
        .arg("--debug")
        .output()?;
    assert_eq!(second.status.code(), Some(VERIFICATION), "{second:?}");
    assert!(resumed_at(&second.stderr).is_some());
    assert_eq!(
        hashed_from(&second.stderr),
        Some(0),
        "the cache was not used"
    );
    assert!(
        !root.path().join("big.bin").exists(),
        "nothing wrong is stored"
    );
    assert!(partials(root.path()).is_empty(), "nothing wrong is kept");
    Ok(())
}

#[test]
fn a_resumed_download_hashes_from_the_state_beside_its_part() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let data = big_file(root.path(), "big.bin", 8)?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    let part = work
        .path()
        .join(format!(".big.bin.{}.barge-part", md5_hex(&data)));
    let state = work
        .path()
        .join(format!(".big.bin.{}.barge-part.md5", md5_hex(&data)));
    for damaged in [false, true] {
        // Stalled at 30 % (its hashing goes on), killed once a state is saved: a killed
        // client's hashing may lag its writing by more than the spacing of the states.
        let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
            .current_dir(work.path())
            .env("BARGE_HOST", "127.0.0.1")
            .env("BARGE_PORT", port.to_string())
            .env("BARGE_PLAIN", "true")
            .env("XDG_CACHE_HOME", crate::cli::test_cache())
            .env("BARGE_TEST_MD5_EVERY", EVERY)
            .env("BARGE_TEST_STALL_AT", KILL_AT.to_string())
            .args(["get", "big.bin"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let waited = wait_until(|| state.exists());
        first.kill()?;
        first.wait()?;
        waited?;
        let kept = std::fs::metadata(&part)?.len();
        if damaged {
            let mut bytes = std::fs::read(&state)?;
            bytes[50] ^= 1;
            std::fs::write(&state, bytes)?;
        }
        let second = barge(port, work.path())
            .args(["get", "big.bin"])
            .env("BARGE_TEST_MD5_EVERY", EVERY)
            .env("BARGE_LOG", "barge=debug")
            .arg("--debug")
            .output()?;
        assert!(second.status.success(), "{second:?}");
        assert_eq!(resumed_at(&second.stderr), Some(kept));
        let from = hashed_from(&second.stderr).ok_or("no hashing line")?;
        if damaged {
            assert_eq!(from, 0, "a damaged state is not used");
        } else {
            // A state the killed try saved (its hashing may lag its writing), not 0.
            assert!(from > 0 && from <= kept, "{from} for {kept}");
        }
        assert_eq!(std::fs::read(work.path().join("big.bin"))?, data);
        assert!(!part.exists() && !state.exists(), "part and state are gone");
        std::fs::remove_file(work.path().join("big.bin"))?;
    }
    Ok(())
}

// -- folders and downloads by id resume too ---------------------------------------------------

#[test]
fn put_r_and_get_r_resume_their_large_files() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    std::fs::create_dir_all(work.path().join("tree/sub"))?;
    std::fs::write(work.path().join("tree/small.txt"), b"small")?;
    let data = big_file(&work.path().join("tree/sub"), "big.bin", 9)?;

    let first = barge(port, work.path())
        .args(["put", "-r", "tree"])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success());
    settled(root.path())?;
    let second = barge(port, work.path())
        .args(["put", "-r", "tree", "--skip-existing"])
        .output()?;
    assert!(second.status.success(), "{second:?}");
    let text = String::from_utf8_lossy(&second.stderr);
    let at: u64 = text
        .split("Resuming tree/sub/big.bin at byte ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("did not resume: {text}"))?;
    // Fewer bytes the second time: only those after the offset.
    assert!(at > 0 && at <= KILL_BY, "at {at}");
    assert_eq!(std::fs::read(root.path().join("tree/sub/big.bin"))?, data);
    assert!(listed(port, work.path())?.contains(&md5_hex(&data)));

    let down = tempfile::tempdir()?;
    let first = barge(port, down.path())
        .args(["get", "-r", "tree"])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success());
    let part = down
        .path()
        .join(format!("tree/sub/.big.bin.{}.barge-part", md5_hex(&data)));
    let kept = std::fs::metadata(&part)?.len();
    assert!(kept > 0 && kept < SIZE as u64);
    let second = barge(port, down.path())
        .args(["get", "-r", "tree", "--skip-existing"])
        .output()?;
    assert!(second.status.success(), "{second:?}");
    let text = String::from_utf8_lossy(&second.stderr);
    assert!(
        text.contains(&format!("Resuming tree/sub/big.bin at byte {kept} ")),
        "{text}"
    );
    assert_eq!(std::fs::read(down.path().join("tree/sub/big.bin"))?, data);
    assert_eq!(std::fs::read(down.path().join("tree/small.txt"))?, b"small");
    assert!(!part.exists());
    Ok(())
}

#[test]
fn get_by_id_without_o_finds_its_part_again() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let data = big_file(root.path(), "big.bin", 10)?;
    let server = BinServer::start(root.path(), &[])?;
    let port = server.addr.port();
    let id = md5_hex(&data);
    // A file put in the folder by hand is found by id once the server has hashed it.
    wait_until(|| listed(port, work.path()).is_ok_and(|l| l.contains(&id)))?;
    let first = barge(port, work.path())
        .args(["get", &id])
        .env("BARGE_TEST_KILL_AT", KILL_AT.to_string())
        .output()?;
    assert!(!first.status.success());
    let part = work.path().join(format!(".big.bin.{id}.barge-part"));
    let kept = std::fs::metadata(&part)
        .map_err(|e| {
            let here: Vec<_> = std::fs::read_dir(work.path())
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            format!("{e}: {here:?}, {first:?}")
        })?
        .len();
    assert!(kept > 0 && kept < SIZE as u64, "part of {kept} bytes");
    let second = barge(port, work.path()).args(["get", &id]).output()?;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(resumed_at(&second.stderr), Some(kept));
    assert_eq!(std::fs::read(work.path().join("big.bin"))?, data);
    assert!(!part.exists());
    Ok(())
}

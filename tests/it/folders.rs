//! Folders (`put -r`, `get -r`), `-o` like `cp`, pipes (`put -`, `-o -`), wildcards over the
//! server's names, and the client's own deadlines against a server that trickles: the binary
//! against an in-process server, and the library and binary against the fake one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

use barge::client::{Client, ClientError, Destination};
use barge::protocol::FileRef;

use crate::common::{BlockingServer, md5_hex};
use crate::fake::{self, FakeServer, Quirks};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const FAILURE: i32 = 1;
const VERIFICATION: i32 = 4;

/// The binary, pointed at `port`, run in `dir`, with a time limit and no stray settings.
fn barge(port: u16, dir: &Path) -> Command {
    // Larger files than the CLI tests move: a longer time limit.
    let mut cmd = crate::cli::barge(port, dir);
    cmd.timeout(Duration::from_secs(60));
    cmd
}

fn server() -> Result<BlockingServer, Box<dyn std::error::Error>> {
    BlockingServer::start().map_err(|e| e.to_string().into())
}

/// A fake server kept running on its own runtime.
struct Fake {
    server: FakeServer,
    _runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start(quirks: Quirks) -> Result<Self, Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let server = runtime.block_on(fake::start(quirks))?;
        Ok(Self {
            server,
            _runtime: runtime,
        })
    }

    fn port(&self) -> u16 {
        self.server.addr.port()
    }
}

/// Every regular file below `root` (symlinks not followed), by path relative to it.
fn tree(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>, Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root)?.to_owned();
            out.insert(rel, std::fs::read(entry.path())?);
        }
    }
    Ok(out)
}

/// A tree with nested folders, spaces, Unicode, empty files, 2,000 small files and (on Unix)
/// a symlink to a file outside it.
fn make_tree(root: &Path, outside: &Path) -> TestResult {
    std::fs::create_dir_all(root.join("nested/deeper/deepest"))?;
    std::fs::create_dir_all(root.join("with spaces/and more"))?;
    std::fs::create_dir_all(root.join("unicodé/日本語"))?;
    std::fs::create_dir_all(root.join("empty folder"))?;
    std::fs::write(root.join("top.txt"), b"top\n")?;
    std::fs::write(
        root.join("nested/deeper/deepest/bottom.bin"),
        vec![7u8; 300_000],
    )?;
    std::fs::write(root.join("with spaces/and more/a file.txt"), b"spaces")?;
    std::fs::write(
        root.join("unicodé/日本語/ファイル.txt"),
        "こんにちは".as_bytes(),
    )?;
    std::fs::write(root.join("empty.txt"), b"")?;
    std::fs::write(root.join("nested/empty too"), b"")?;
    for i in 0..2000u32 {
        let dir = root.join(format!("many/d{:02}", i % 20));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n"))?;
    }
    std::fs::write(outside, b"secret outside the folder")?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside, root.join("link to outside"))?;
    Ok(())
}

#[test]
fn a_tree_round_trips_byte_for_byte() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    let src = work.path().join("src tree");
    make_tree(&src, &work.path().join("outside.txt"))?;

    barge(port, work.path())
        .args(["put", "-r", "src tree", "--as", "up"])
        .assert()
        .success()
        .stdout(contains("Uploaded 2006 files"))
        .stderr(contains("Skipped: src tree/link to outside: a symlink"));
    // Only files travel, and nothing the symlink points to.
    assert!(server.root.join("up/many/d07/f1907.txt").is_file());
    assert!(!server.root.join("up/link to outside").exists());
    assert!(!server.root.join("up/empty folder").exists());

    let out = work.path().join("out");
    barge(port, work.path())
        .args(["get", "-r", "up", "-o", "out/"])
        .assert()
        .success()
        .stdout(contains("Downloaded 2006 files"));
    let mut want = tree(&src)?;
    assert_eq!(want.len(), 2006);
    let got = tree(&out.join("up"))?;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the trees differ");

    // With -L the symlink is followed and its target travels under the link's name.
    std::fs::remove_dir_all(src.join("many"))?;
    barge(port, work.path())
        .args(["put", "-r", "-L", "src tree", "--as", "followed"])
        .assert()
        .success();
    #[cfg(unix)]
    assert_eq!(
        std::fs::read(server.root.join("followed/link to outside"))?,
        b"secret outside the folder"
    );
    want.retain(|p, _| !p.starts_with("many"));
    let got = tree(&server.root.join("followed"))?;
    assert_eq!(got.len(), want.len() + usize::from(cfg!(unix)));
    Ok(())
}

#[test]
fn existing_files_are_refused_per_file_and_skip_existing_compares_md5() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    std::fs::create_dir_all(work.path().join("docs/sub"))?;
    std::fs::write(work.path().join("docs/a.txt"), b"a")?;
    std::fs::write(work.path().join("docs/sub/b.txt"), b"b")?;
    barge(port, work.path())
        .args(["put", "-r", "docs"])
        .assert()
        .success();
    // Again: each file is refused by the server (409), and the summary lists them.
    barge(port, work.path())
        .args(["put", "-r", "docs"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: docs/a.txt").and(contains("Fail: docs/sub/b.txt")))
        .stdout(contains("2 failed: docs/a.txt, docs/sub/b.txt"));
    // Same content: skipped; a changed file is sent, and refused since the name is taken.
    std::fs::write(work.path().join("docs/sub/b.txt"), b"changed")?;
    barge(port, work.path())
        .args(["put", "-r", "docs", "--skip-existing"])
        .assert()
        .code(FAILURE)
        .stderr(
            contains("Skipped: docs/a.txt (already there)").and(contains("Fail: docs/sub/b.txt")),
        );

    let out = work.path().join("out");
    std::fs::create_dir(&out)?;
    barge(port, &out)
        .args(["get", "-r", "docs"])
        .assert()
        .success();
    std::fs::write(out.join("docs/a.txt"), b"mine")?;
    // Existing local files: refused one by one, the rest go on.
    std::fs::remove_file(out.join("docs/sub/b.txt"))?;
    barge(port, &out)
        .args(["get", "-r", "docs"])
        .assert()
        .code(FAILURE)
        .stderr(contains("docs/a.txt").and(contains("already exists")));
    assert_eq!(std::fs::read(out.join("docs/sub/b.txt"))?, b"b");
    assert_eq!(std::fs::read(out.join("docs/a.txt"))?, b"mine");
    // --skip-existing skips the identical one only; --force replaces.
    barge(port, &out)
        .args(["get", "-r", "docs", "--skip-existing"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Skipped: docs/sub/b.txt (already there)"));
    barge(port, &out)
        .args(["get", "-r", "docs", "--force"])
        .assert()
        .success();
    assert_eq!(std::fs::read(out.join("docs/a.txt"))?, b"a");
    // A name that is not a folder on the server.
    barge(port, &out)
        .args(["get", "-r", "docs/a.txt", "nothing"])
        .assert()
        .code(FAILURE)
        .stderr(contains("is a file, not a folder").and(contains("no such folder")));
    Ok(())
}

#[test]
fn folders_without_r_and_fifos_are_refused_without_blocking() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    std::fs::create_dir(work.path().join("dir"))?;
    std::fs::write(work.path().join("a.txt"), b"a")?;
    barge(port, work.path())
        .args(["put", "dir", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("dir: is a folder; use -r"))
        .stdout(contains("Success: a.txt"));
    #[cfg(unix)]
    {
        rustix::fs::mkfifoat(rustix::fs::CWD, work.path().join("fifo"), 0o600.into())?;
        std::fs::write(work.path().join("b.txt"), b"b")?;
        // The FIFO has no writer: opening it for reading would wait forever.
        barge(port, work.path())
            .args(["put", "b.txt", "fifo"])
            .timeout(Duration::from_secs(20))
            .assert()
            .code(FAILURE)
            .stderr(contains("fifo: not a regular file"))
            .stdout(contains("Success: b.txt"));
        barge(port, work.path())
            .args(["put", "fifo"])
            .timeout(Duration::from_secs(20))
            .assert()
            .code(FAILURE)
            .stderr(contains("not a regular file"));
    }
    Ok(())
}

#[test]
fn output_paths_behave_like_cp() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a.txt"), b"aaa")?;
    barge(port, work.path())
        .args(["put", "a.txt"])
        .assert()
        .success();

    // An existing folder receives the file.
    std::fs::create_dir(work.path().join("there"))?;
    barge(port, work.path())
        .args(["get", "a.txt", "-o", "there"])
        .assert()
        .success();
    assert_eq!(std::fs::read(work.path().join("there/a.txt"))?, b"aaa");
    // A missing folder with a trailing slash is created.
    barge(port, work.path())
        .args(["get", "a.txt", "-o", "new/deeper/"])
        .assert()
        .success();
    assert_eq!(std::fs::read(work.path().join("new/deeper/a.txt"))?, b"aaa");
    // Without the slash it is the file's own path.
    barge(port, work.path())
        .args(["get", "a.txt", "-o", "renamed.txt"])
        .assert()
        .success();
    assert_eq!(std::fs::read(work.path().join("renamed.txt"))?, b"aaa");
    // An existing file is kept unless --force.
    std::fs::write(work.path().join("kept.txt"), b"mine")?;
    barge(port, work.path())
        .args(["get", "a.txt", "-o", "kept.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("already exists"));
    assert_eq!(std::fs::read(work.path().join("kept.txt"))?, b"mine");
    barge(port, work.path())
        .args(["get", "a.txt", "-o", "kept.txt", "--force"])
        .assert()
        .success();
    assert_eq!(std::fs::read(work.path().join("kept.txt"))?, b"aaa");
    // Several files need a folder.
    barge(port, work.path())
        .args(["get", "a.txt", "a.txt", "-o", "nofolder"])
        .assert()
        .code(FAILURE)
        .stderr(contains("not a folder (end it with / to create it)"));
    assert!(!work.path().join("nofolder").exists());
    Ok(())
}

#[test]
fn standard_input_and_output() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    let data: Vec<u8> = (0..3_500_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let id = md5_hex(&data);
    barge(port, work.path())
        .args(["put", "-", "--as", "piped/in.bin"])
        .write_stdin(data.clone())
        .assert()
        .success()
        .stdout(contains(format!("Success: piped/in.bin {id}")));
    assert_eq!(std::fs::read(server.root.join("piped/in.bin"))?, data);
    barge(port, work.path())
        .args(["put", "-", "--as", "empty.bin"])
        .write_stdin(Vec::new())
        .assert()
        .success();
    assert_eq!(std::fs::read(server.root.join("empty.bin"))?.len(), 0);
    // `-` needs a name.
    barge(port, work.path())
        .args(["put", "-"])
        .write_stdin(b"x".to_vec())
        .assert()
        .code(2);

    // Standard output carries exactly the bytes, and their MD5 is the id.
    let out = barge(port, work.path())
        .args(["get", &id, "-o", "-"])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(md5_hex(&out.stdout), id);
    assert_eq!(out.stdout, data);
    let out = barge(port, work.path())
        .args(["get", "empty.bin", "-o", "-"])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    // Nothing was written to the folder.
    assert_eq!(std::fs::read_dir(work.path())?.count(), 0);
    Ok(())
}

#[test]
fn a_corrupt_body_on_standard_output_exits_4_after_the_bytes() -> TestResult {
    let fake = Fake::start(Quirks {
        corrupt_download: true,
        ..Quirks::default()
    })?;
    fake.server.insert("f.txt", b"hello world");
    let work = tempfile::tempdir()?;
    let out = barge(fake.port(), work.path())
        .args(["get", "f.txt", "-o", "-"])
        .output()?;
    assert_eq!(out.status.code(), Some(VERIFICATION), "{out:?}");
    // The bytes went out before the check could fail; the message says to drop them.
    assert_eq!(out.stdout.len(), 11);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verification failed"), "{stderr}");
    assert!(stderr.contains("discard them"), "{stderr}");
    Ok(())
}

#[test]
fn a_hostile_listing_cannot_escape_the_target() -> TestResult {
    for evil in ["photos/../x", "photos/../../x", "/photos/x", "photos//x"] {
        let fake = Fake::start(Quirks {
            listing_name: Some(evil.to_owned()),
            ..Quirks::default()
        })?;
        fake.server.insert("photos/ok.txt", b"ok");
        let work = tempfile::tempdir()?;
        let out = work.path().join("a/b");
        std::fs::create_dir_all(&out)?;
        barge(fake.port(), &out)
            .args(["get", "-r", "photos", "-o", "into/"])
            .assert()
            .code(FAILURE);
        // Nothing anywhere but (at most) the folder asked for.
        let written = tree(work.path())?;
        assert!(
            written.keys().all(|p| p.starts_with("a/b/into")),
            "{evil}: {written:?}"
        );
        assert!(!work.path().join("a/x").exists() && !work.path().join("x").exists());
    }
    Ok(())
}

#[test]
fn wildcards_match_server_names() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    for f in ["a.pdf", "b.pdf", "c.txt"] {
        std::fs::write(work.path().join(f), f.as_bytes())?;
    }
    barge(port, work.path())
        .args(["put", "a.pdf", "b.pdf", "c.txt"])
        .assert()
        .success();
    for f in ["a.pdf", "c.txt"] {
        barge(port, work.path())
            .args(["put", f, "--as", &format!("old/{f}")])
            .assert()
            .success();
    }
    let out = work.path().join("out");
    barge(port, work.path())
        .args(["get", "*.pdf", "-o", "out/"])
        .assert()
        .success();
    let mut got: Vec<String> = std::fs::read_dir(&out)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    got.sort();
    assert_eq!(got, ["a.pdf", "b.pdf"]);
    barge(port, work.path())
        .args(["get", "*.zip"])
        .assert()
        .code(FAILURE)
        .stderr(contains("no file on the server matches"));

    // `old/*` stays within old/; rm takes several.
    barge(port, work.path())
        .args(["rm", "old/*"])
        .assert()
        .success()
        .stdout(contains("Deleted old/a.pdf").and(contains("Deleted old/c.txt")));
    assert!(!server.root.join("old/a.pdf").exists());
    assert!(server.root.join("a.pdf").exists());
    barge(port, work.path())
        .args(["mv", "a.pdf", "b.pdf", "docs/"])
        .assert()
        .success()
        .stdout(
            contains("Renamed a.pdf to docs/a.pdf").and(contains("Renamed b.pdf to docs/b.pdf")),
        );
    assert!(server.root.join("docs/b.pdf").is_file());
    barge(port, work.path())
        .args(["rm", "c.txt", "nothing", "docs/a.pdf"])
        .assert()
        .code(FAILURE)
        .stdout(contains("Deleted c.txt").and(contains("Deleted docs/a.pdf")))
        .stderr(contains("nothing"));
    Ok(())
}

/// The virtual time a future took, with the clock paused (sleeps and timeouts jump ahead).
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = tokio::time::Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_server_trickling_its_greeting_is_cut_in_bounded_time() -> TestResult {
    let fake = fake::start(Quirks {
        greeting_trickle: Some(Duration::from_secs(8)),
        ..Quirks::default()
    })
    .await?;
    let (result, took) = timed(Client::connect(&fake.addr(), Duration::from_secs(60))).await;
    assert!(result.is_err(), "{result:?}");
    // 18 bytes at 8 s each would be 144 s; the greeting has one deadline in total.
    assert!(took <= Duration::from_secs(61), "{took:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_server_trickling_a_listing_is_cut_in_bounded_time() -> TestResult {
    let fake = fake::start(Quirks {
        line_delay: Some(Duration::from_secs(50)),
        ..Quirks::default()
    })
    .await?;
    for i in 0..1000 {
        fake.insert(&format!("f{i}"), b"x");
    }
    let mut client = Client::connect(&fake.addr(), Duration::from_secs(60)).await?;
    // Each line comes within the per-line timeout, but 1,000 of them would take 14 hours.
    let (result, took) = timed(client.list()).await;
    assert!(
        matches!(result, Err(ClientError::Transport(_))),
        "{result:?}"
    );
    assert!(took <= Duration::from_secs(200), "{took:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_server_trickling_a_body_is_cut_by_the_minimum_rate() -> TestResult {
    let fake = fake::start(Quirks {
        body_trickle: Some(Duration::from_secs(8)),
        ..Quirks::default()
    })
    .await?;
    fake.insert("big.bin", &vec![1u8; 1 << 20]);
    let dir = tempfile::tempdir()?;
    let mut client = Client::connect(&fake.addr(), Duration::from_secs(60)).await?;
    let file = FileRef::parse("big.bin")?;
    let dest = Destination::Dir(dir.path().to_owned());
    // A byte every 8 s never trips the 60 s stall timeout; the minimum rate ends it.
    let (result, took) = timed(client.download(&file, &dest, false, |_| {})).await;
    assert!(result.is_err(), "{result:?}");
    assert!(took <= Duration::from_secs(130), "{took:?}");
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "a .part was left"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_server_reading_an_upload_slowly_is_cut_by_the_minimum_rate() -> TestResult {
    let fake = fake::start(Quirks {
        read_trickle: Some((64 << 10, Duration::from_secs(1))),
        ..Quirks::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("big.bin");
    // More than the socket buffers of both sides hold, so the client must wait on the server.
    std::fs::write(&path, vec![3u8; 32 << 20])?;
    let mut client = Client::connect(&fake.addr(), Duration::from_secs(60)).await?;
    // Bytes move every second, so the stall timeout never fires; on loopback a write wakes
    // only once 64 KiB are free, so the rate is raised to tell the two apart: 64 KiB/s is
    // below it, and the socket buffers are far below a window's 60 MiB.
    client.set_min_rate(1 << 20);
    let name = barge::name::FileName::parse("big.bin")?;
    let (result, took) = timed(client.upload(&path, &name, |_| {})).await;
    assert!(
        matches!(result, Err(ClientError::Transport(_))),
        "{result:?}"
    );
    assert!(took <= Duration::from_secs(70), "{took:?}");
    Ok(())
}

#[cfg(unix)]
#[test]
fn sigterm_removes_the_part_file() -> TestResult {
    let fake = Fake::start(Quirks {
        body_trickle: Some(Duration::from_millis(50)),
        ..Quirks::default()
    })?;
    fake.server.insert("slow.bin", &vec![2u8; 100_000]);
    let work = tempfile::tempdir()?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
        .current_dir(work.path())
        .env("BARGE_HOST", "127.0.0.1")
        .env("BARGE_PORT", fake.port().to_string())
        .env("BARGE_PLAIN", "true")
        .args(["get", "slow.bin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let part_exists = || {
        std::fs::read_dir(work.path()).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !part_exists() {
        assert!(std::time::Instant::now() < deadline, "no .part appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id())?).ok_or("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            return Err("barge did not stop on SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    assert!(!part_exists(), "the .part file was left behind");
    Ok(())
}

#[test]
fn the_shell_matches_put_locally_and_get_on_the_server() -> TestResult {
    let server = server()?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    for f in ["a.pdf", "b.pdf", "c.txt"] {
        std::fs::write(work.path().join(f), f.as_bytes())?;
    }
    barge(port, work.path())
        .arg("shell")
        .write_stdin("put *.pdf\nput - --as x\nget *.pdf -o out/\nbye\n")
        .assert()
        // `put -` is refused in the shell (its input is the script), a usage error.
        .code(2)
        .stdout(contains("Success: a.pdf").and(contains("Success: b.pdf")))
        .stderr(contains("put - reads standard input"));
    assert!(server.root.join("a.pdf").is_file() && server.root.join("b.pdf").is_file());
    assert!(!server.root.join("c.txt").exists() && !server.root.join("x").exists());
    assert_eq!(std::fs::read(work.path().join("out/b.pdf"))?, b"b.pdf");
    Ok(())
}

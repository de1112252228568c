//! Black-box tests of the `barge` binary against an in-process server and fake servers.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

use crate::common::BlockingServer;
use crate::fake::{self, FakeServer, Quirks};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The documented exit statuses.
const FAILURE: i32 = 1;
const USAGE: i32 = 2;
const CANNOT_CONNECT: i32 = 3;
const VERIFICATION: i32 = 4;

/// A fake server kept running on its own runtime.
pub(crate) struct Fake {
    pub(crate) server: FakeServer,
    _runtime: tokio::runtime::Runtime,
}

impl Fake {
    pub(crate) fn start(quirks: Quirks) -> Result<Self, Box<dyn std::error::Error>> {
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

    pub(crate) fn port(&self) -> u16 {
        self.server.addr.port()
    }
}

/// The binary, pointed at `port`, run in `dir`, with a time limit and no stray settings.
pub(crate) fn barge(port: u16, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
    cmd.current_dir(dir)
        .env("BARGE_HOST", "127.0.0.1")
        .env("BARGE_PORT", port.to_string())
        .env("BARGE_HISTORY", "")
        // The servers here are in-process plain ones (tests/it/tls.rs and pinning.rs cover TLS).
        .env("BARGE_PLAIN", "true")
        .env_remove("BARGE_LOG")
        // The client's MD5 cache (resumed uploads) goes to a folder of the test run's own,
        // never the user's.
        .env("XDG_CACHE_HOME", test_cache())
        .timeout(Duration::from_secs(30));
    cmd
}

/// The cache folder of every client this test run starts.
pub(crate) fn test_cache() -> &'static Path {
    static CACHE: std::sync::OnceLock<Option<tempfile::TempDir>> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| tempfile::tempdir().ok())
        .as_ref()
        .map_or(Path::new("/nonexistent"), tempfile::TempDir::path)
}

pub(crate) fn stdout_of(cmd: &mut Command) -> Result<String, Box<dyn std::error::Error>> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn put_ls_get_round_trip() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(work.path().join("big.bin"), &big)?;
    std::fs::write(work.path().join("my notes.txt"), b"hello\n")?;
    std::fs::write(work.path().join("small.txt"), b"small")?;

    barge(server.addr.port(), work.path())
        .args(["put", "big.bin", "my notes.txt", "small.txt"])
        .assert()
        .success()
        .stdout(contains("Success: big.bin ").and(contains(
            "Success: my notes.txt b1946ac92492d2347c6235b4d2611184",
        )));
    barge(server.addr.port(), work.path())
        .args(["put", "small.txt", "--as", "sub dir/renamed;1.txt"])
        .assert()
        .success()
        .stdout(contains("Success: sub dir/renamed;1.txt"));
    assert_eq!(std::fs::read(server.root.join("big.bin"))?, big);

    let human = stdout_of(barge(server.addr.port(), work.path()).arg("ls"))?;
    assert_eq!(human.lines().count(), 4, "{human}");
    assert!(human.lines().any(
        |l| l.starts_with("b1946ac92492d2347c6235b4d2611184") && l.ends_with("  my notes.txt")
    ));

    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        barge(server.addr.port(), work.path()).args(["ls", "--json"]),
    )?)?;
    let entries = json.as_array().ok_or("not an array")?;
    assert_eq!(entries.len(), 4);
    let notes = entries
        .iter()
        .find(|e| e["name"] == "my notes.txt")
        .ok_or("missing")?;
    assert_eq!(notes["id"], "b1946ac92492d2347c6235b4d2611184");
    assert_eq!(notes["size"], 6);
    let big_id = entries
        .iter()
        .find(|e| e["name"] == "big.bin")
        .ok_or("missing")?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();

    // By id and by name, into a folder; the names come from the server.
    let out = tempfile::tempdir()?;
    let out_dir = out.path().to_str().ok_or("path")?;
    barge(server.addr.port(), work.path())
        .args(["get", &big_id, "sub dir/renamed;1.txt", "-o", out_dir])
        .assert()
        .success()
        .stdout(contains("Success: big.bin"));
    assert_eq!(std::fs::read(out.path().join("big.bin"))?, big);
    assert_eq!(std::fs::read(out.path().join("renamed;1.txt"))?, b"small");

    // To an exact path; an existing file is kept unless --force.
    let target = out.path().join("copy.txt");
    let target_s = target.to_str().ok_or("path")?;
    barge(server.addr.port(), work.path())
        .args(["get", "my notes.txt", "-o", target_s])
        .assert()
        .success();
    assert_eq!(std::fs::read(&target)?, b"hello\n");
    std::fs::write(&target, b"mine")?;
    barge(server.addr.port(), work.path())
        .args(["get", "my notes.txt", "-o", target_s])
        .assert()
        .code(FAILURE)
        .stderr(contains("already exists"));
    assert_eq!(std::fs::read(&target)?, b"mine");
    barge(server.addr.port(), work.path())
        .args(["get", "my notes.txt", "-o", target_s, "--force"])
        .assert()
        .success();
    assert_eq!(std::fs::read(&target)?, b"hello\n");

    // Default target: the current folder.
    barge(server.addr.port(), out.path())
        .args(["get", "small.txt"])
        .assert()
        .success();
    assert_eq!(std::fs::read(out.path().join("small.txt"))?, b"small");
    assert!(
        !std::fs::read_dir(out.path())?
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".barge-")))
    );

    barge(server.addr.port(), work.path())
        .args(["mv", "small.txt", "folder/moved.txt"])
        .assert()
        .success()
        .stdout(contains("Renamed"));
    barge(server.addr.port(), work.path())
        .args(["rm", "folder/moved.txt"])
        .assert()
        .success()
        .stdout(contains("Deleted"));
    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        barge(server.addr.port(), work.path()).args(["ls", "--json"]),
    )?)?;
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    Ok(())
}

#[test]
fn refusals_have_their_exit_statuses() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a.txt"), b"a")?;
    std::fs::write(work.path().join("b.txt"), b"b")?;
    barge(server.addr.port(), work.path())
        .args(["put", "a.txt", "b.txt"])
        .assert()
        .success();

    // The name is taken: Fail, the other file still goes.
    std::fs::write(work.path().join("c.txt"), b"c")?;
    barge(server.addr.port(), work.path())
        .args(["put", "a.txt", "c.txt"])
        .assert()
        .code(FAILURE)
        .stdout(contains("Success: c.txt"))
        .stderr(
            contains(
                "Fail: a.txt: a file named a.txt already exists (use --as NEWNAME, or rm it first)",
            )
            .and(contains("409").not()),
        );
    // The protocol's codes are for --debug.
    barge(server.addr.port(), work.path())
        .args(["--debug", "put", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("already exists (409) (use --as NEWNAME"));
    // A name a folder has: removing it is no way out (a folder goes with its last file).
    std::fs::write(work.path().join("box"), b"b")?;
    barge(server.addr.port(), work.path())
        .args(["put", "c.txt", "--as", "box/c.txt"])
        .assert()
        .success();
    barge(server.addr.port(), work.path())
        .args(["put", "box"])
        .assert()
        .code(FAILURE)
        .stderr(contains(
            "Fail: box: a folder named box already exists (use --as NEWNAME)\n",
        ));
    barge(server.addr.port(), work.path())
        .args(["mv", "a.txt", "box"])
        .assert()
        .code(FAILURE)
        .stderr(contains(
            "Fail: renaming a.txt: a folder named box already exists (choose another name)",
        ));
    barge(server.addr.port(), work.path())
        .args(["put", "missing.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: missing.txt: no such file or directory"));
    barge(server.addr.port(), work.path())
        .args(["get", "nothing"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: nothing: no such file on the server").and(contains("404").not()));
    barge(server.addr.port(), work.path())
        .args(["rm", "nothing"])
        .assert()
        .code(FAILURE)
        .stderr(contains(
            "Fail: deleting nothing: no such file on the server",
        ));
    barge(server.addr.port(), work.path())
        .args(["mv", "a.txt", "b.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains(
            "Fail: renaming a.txt: a file named b.txt already exists (rm it first, or choose another name)",
        ));

    // Usage errors.
    barge(server.addr.port(), work.path())
        .args(["rm", "../etc/passwd"])
        .assert()
        .code(USAGE);
    barge(server.addr.port(), work.path())
        .args(["put", "a.txt", "b.txt", "--as", "x"])
        .assert()
        .code(USAGE);
    barge(server.addr.port(), work.path())
        .args(["frobnicate"])
        .assert()
        .code(USAGE);
    barge(server.addr.port(), work.path())
        .assert()
        .code(USAGE)
        .stderr(contains("Usage"));

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    barge(port, work.path())
        .arg("ls")
        .assert()
        .code(CANNOT_CONNECT)
        .stderr(
            contains(format!(
                "cannot connect to 127.0.0.1:{port}: connection refused"
            ))
            .and(contains("barge serve")),
        );
    let busy = Fake::start(Quirks {
        busy: true,
        ..Quirks::default()
    })?;
    barge(busy.port(), work.path())
        .arg("ls")
        .assert()
        .code(CANNOT_CONNECT)
        .stderr(contains("busy"));
    Ok(())
}

#[test]
fn server_limits_are_refusals() -> TestResult {
    use barge::store::StoreConfig;
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a.txt"), b"some bytes")?;
    std::fs::write(work.path().join("b.txt"), b"more bytes")?;

    let read_only = StoreConfig {
        read_only: true,
        ..StoreConfig::default()
    };
    let server =
        BlockingServer::start_with(read_only, Default::default()).map_err(|e| e.to_string())?;
    let port = server.addr.port();
    barge(port, work.path())
        .args(["put", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: a.txt: the server is read-only"));
    barge(port, work.path())
        .args(["put", "a.txt", "b.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: b.txt: the server is read-only"));
    barge(port, work.path())
        .args(["rm", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: deleting a.txt: the server is read-only"));

    let tiny = StoreConfig {
        max_file_size: 4,
        ..StoreConfig::default()
    };
    let server = BlockingServer::start_with(tiny, Default::default()).map_err(|e| e.to_string())?;
    barge(server.addr.port(), work.path())
        .args(["put", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains(
            "Fail: a.txt: 10 bytes is over the server's limit of 4 bytes per file",
        ));
    // Pipelined, a 413 ends the connection: the files after it are reported too.
    std::fs::write(work.path().join("c.txt"), b"ok")?;
    let out = barge(server.addr.port(), work.path())
        .args(["put", "a.txt", "c.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: a.txt").and(contains("Fail: c.txt: no reply")));
    // c.txt's line gives the reason it failed, not a.txt's reply.
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let c_line = stderr
        .lines()
        .find(|l| l.contains("Fail: c.txt"))
        .ok_or("no line for c.txt")?;
    assert!(!c_line.contains("limit"), "{c_line}");
    Ok(())
}

#[test]
fn empty_listings_and_bad_targets() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    barge(server.addr.port(), work.path())
        .arg("ls")
        .assert()
        .success()
        .stdout("")
        .stderr(contains("No files available"));
    barge(server.addr.port(), work.path())
        .args(["ls", "--json"])
        .assert()
        .success()
        .stdout("[]\n");
    barge(server.addr.port(), work.path())
        .args(["get", "a", "b", "-o", "no/such/folder"])
        .assert()
        .code(FAILURE)
        .stderr(contains("not a folder"));
    Ok(())
}

#[test]
fn quiet_and_debug() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a.txt"), b"a")?;
    barge(server.addr.port(), work.path())
        .args(["--quiet", "put", "a.txt"])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    barge(server.addr.port(), work.path())
        .args(["ls", "--debug"])
        .assert()
        .success()
        .stderr(contains("> LIST_FILES").and(contains("< 210 1")));
    Ok(())
}

#[test]
fn wrong_md5_on_upload_fails_verification() -> TestResult {
    let fake = Fake::start(Quirks {
        upload_md5: Some("0".repeat(32)),
        ..Quirks::default()
    })?;
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a.txt"), b"hello")?;
    barge(fake.port(), work.path())
        .args(["put", "a.txt"])
        .assert()
        .code(VERIFICATION)
        .stdout(contains("Success").not())
        .stderr(contains("Fail: a.txt: verification failed"));
    assert_eq!(fake.server.file("a.txt"), None, "the bad copy was deleted");
    Ok(())
}

#[test]
fn corrupt_download_keeps_no_file() -> TestResult {
    let fake = Fake::start(Quirks {
        corrupt_download: true,
        ..Quirks::default()
    })?;
    fake.server.insert("a.txt", b"hello");
    let work = tempfile::tempdir()?;
    barge(fake.port(), work.path())
        .args(["get", "a.txt"])
        .assert()
        .code(VERIFICATION)
        .stderr(contains("Fail: a.txt: verification failed"));
    assert_eq!(
        std::fs::read_dir(work.path())?.count(),
        0,
        "no file and no temporary file"
    );
    Ok(())
}

#[test]
fn hostile_names_write_nothing() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = root.path().join("a/b");
    std::fs::create_dir_all(&work)?;
    let fake = Fake::start(Quirks {
        download_name: Some("../../evil".to_owned()),
        ..Quirks::default()
    })?;
    fake.server.insert("good.txt", b"evil content");
    barge(fake.port(), &work)
        .args(["get", "good.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("protocol error"));

    let fake = Fake::start(Quirks {
        listing_name: Some("../../evil".to_owned()),
        ..Quirks::default()
    })?;
    barge(fake.port(), &work)
        .arg("ls")
        .assert()
        .code(FAILURE)
        .stderr(contains("protocol error"));
    barge(fake.port(), &work)
        .args(["ls", "--json"])
        .assert()
        .code(FAILURE)
        .stdout("");
    assert!(
        walk(root.path())?.is_empty(),
        "nothing written: {:?}",
        walk(root.path())?
    );
    Ok(())
}

#[test]
fn shell_from_a_pipe() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a b.txt"), b"from the shell")?;
    std::fs::create_dir(work.path().join("out"))?;
    let script = "help\n\
        LIST_FILES\n\
        put \"a b.txt\"\n\
        UPLOAD\n\
        a b.txt\n\
        y\n\
        mv 'a b.txt' c.txt\n\
        DOWNLOAD\n\
        c.txt\n\
        get c.txt -o out/d.txt\n\
        ls --json\n\
        bye\n";
    let out = barge(server.addr.port(), work.path())
        .arg("shell")
        .write_stdin(script)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    // The second upload of the same name is refused: the session goes on, the status says so.
    assert_eq!(out.status.code(), Some(FAILURE), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1. LIST_FILES - List files on server."),
        "{stdout}"
    );
    assert!(stdout.contains("Success: a b.txt"), "{stdout}");
    assert!(
        stderr.contains("a b.txt already exists on the server (use put FILE --as NEWNAME")
            && !stderr.contains("unknown command"),
        "{stderr}"
    );
    assert!(stdout.contains("Renamed a b.txt to c.txt"), "{stdout}");
    assert!(stdout.contains(r#""name":"c.txt""#), "{stdout}");
    assert_eq!(std::fs::read(work.path().join("c.txt"))?, b"from the shell");
    assert_eq!(
        std::fs::read(work.path().join("out/d.txt"))?,
        b"from the shell"
    );

    // A clean session exits 0; `barge` with no command on a pipe is a usage error.
    barge(server.addr.port(), work.path())
        .arg("shell")
        .write_stdin("ls\nrm c.txt\nquit\n")
        .assert()
        .success();
    barge(server.addr.port(), work.path())
        .arg("shell")
        .write_stdin("frob\n")
        .assert()
        .code(USAGE)
        .stderr(contains("unknown command"));
    Ok(())
}

#[test]
fn shell_reconnects_after_the_server_goes_away() -> TestResult {
    // The server answers one command per connection, then hangs up on the next.
    let work = tempfile::tempdir()?;
    let fake = Fake::start(Quirks {
        close_after: Some(1),
        ..Quirks::default()
    })?;
    let out = barge(fake.port(), work.path())
        .arg("shell")
        .write_stdin("ls\nls\nls\n")
        .output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("connection to the server was lost"),
        "{stderr}"
    );
    assert!(stderr.contains("Reconnected"), "{stderr}");
    assert_eq!(out.status.code(), Some(FAILURE));
    Ok(())
}

#[test]
fn a_lost_connection_reports_every_file() -> TestResult {
    let work = tempfile::tempdir()?;
    let fake = Fake::start(Quirks {
        close_after: Some(1),
        ..Quirks::default()
    })?;
    for name in ["a.txt", "b.txt", "c.txt"] {
        fake.server.insert(name, name.as_bytes());
    }
    barge(fake.port(), work.path())
        .args(["get", "a.txt", "b.txt", "c.txt"])
        .assert()
        .code(FAILURE)
        .stdout(contains("Success: a.txt"))
        .stderr(
            contains("Fail: b.txt: connection lost").and(contains("Fail: c.txt: not attempted")),
        );
    assert_eq!(std::fs::read(work.path().join("a.txt"))?, b"a.txt");
    assert!(!work.path().join("b.txt").exists());
    Ok(())
}

#[test]
fn get_of_many_files_pipelines() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    std::fs::create_dir(&src)?;
    let mut names = Vec::new();
    for i in 0..300 {
        let name = format!("f{i:03}.bin");
        let data: Vec<u8> = (0..1024u32).map(|b| (b * 31 + i) as u8).collect();
        std::fs::write(src.join(&name), data)?;
        names.push(name);
    }
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::write(src.join("big.bin"), &big)?;
    barge(server.addr.port(), &src)
        .arg("put")
        .arg("big.bin")
        .args(&names)
        .assert()
        .success();

    // A missing file in the middle: its Fail line, the others saved, status 1.
    let out = work.path().join("out");
    std::fs::create_dir(&out)?;
    let mut asked = names.clone();
    asked.insert(150, "big.bin".to_owned());
    asked.insert(100, "missing.bin".to_owned());
    let run = barge(server.addr.port(), work.path())
        .arg("get")
        .args(&asked)
        .args(["-o", "out"])
        .output()?;
    let stdout = String::from_utf8(run.stdout)?;
    let stderr = String::from_utf8(run.stderr)?;
    assert_eq!(run.status.code(), Some(FAILURE), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "Fail: missing.bin: no such file on the server"
    );
    let (files, summary) = stdout.trim_end().rsplit_once('\n').ok_or(stdout.clone())?;
    assert!(
        summary.starts_with("Downloaded 301 files, ")
            && summary.ends_with("; 1 failed: missing.bin"),
        "{summary}"
    );
    let saved: Vec<&str> = files
        .lines()
        .map(|l| {
            l.strip_prefix("Success: ")
                .and_then(|l| l.split(' ').next())
        })
        .collect::<Option<_>>()
        .ok_or(stdout.clone())?;
    let expected: Vec<&str> = asked
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "missing.bin")
        .collect();
    assert_eq!(saved, expected, "one line per file, in order");
    for name in &names {
        assert_eq!(
            std::fs::read(out.join(name))?,
            std::fs::read(src.join(name))?
        );
    }
    assert_eq!(std::fs::read(out.join("big.bin"))?, big);
    assert_eq!(walk(&out)?.len(), 301, "no temporary files left");

    // Existing targets are kept without --force, and replaced with it.
    std::fs::write(out.join("f007.bin"), b"mine")?;
    std::fs::remove_file(out.join("f008.bin"))?;
    barge(server.addr.port(), work.path())
        .args(["get", "f007.bin", "f008.bin", "big.bin", "-o", "out"])
        .assert()
        .code(FAILURE)
        .stdout(contains("Success: f008.bin"))
        .stderr(
            contains("Fail: f007.bin")
                .and(contains("already exists"))
                .and(contains("--force"))
                .and(contains("Fail: big.bin")),
        );
    assert_eq!(std::fs::read(out.join("f007.bin"))?, b"mine");
    barge(server.addr.port(), work.path())
        .args(["get", "f007.bin", "f008.bin", "-o", "out", "--force"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(out.join("f007.bin"))?,
        std::fs::read(src.join("f007.bin"))?
    );
    Ok(())
}

#[test]
fn get_of_many_files_with_the_same_leaf() -> TestResult {
    let fake = Fake::start(Quirks::default())?;
    fake.server.insert("a/same.txt", b"first");
    fake.server.insert("b/same.txt", b"second");
    let work = tempfile::tempdir()?;
    barge(fake.port(), work.path())
        .args(["get", "a/same.txt", "b/same.txt"])
        .assert()
        .code(FAILURE)
        .stdout(contains("Success: a/same.txt"))
        .stderr(contains("Fail: b/same.txt").and(contains("already exists")));
    assert_eq!(std::fs::read(work.path().join("same.txt"))?, b"first");
    barge(fake.port(), work.path())
        .args(["get", "a/same.txt", "b/same.txt", "--force"])
        .assert()
        .success();
    assert_eq!(std::fs::read(work.path().join("same.txt"))?, b"second");
    Ok(())
}

#[test]
fn a_corrupt_file_in_a_pipelined_get_is_not_kept() -> TestResult {
    let fake = Fake::start(Quirks {
        corrupt_only: Some("f10".to_owned()),
        ..Quirks::default()
    })?;
    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    for name in &names {
        fake.server.insert(name, name.as_bytes());
    }
    let work = tempfile::tempdir()?;
    barge(fake.port(), work.path())
        .arg("get")
        .args(&names)
        .assert()
        .code(VERIFICATION)
        .stdout(contains("Success: f09").and(contains("Success: f11")))
        .stderr(contains("Fail: f10: verification failed"));
    let kept = walk(work.path())?;
    assert_eq!(kept.len(), 19, "{kept:?}");
    assert!(!work.path().join("f10").exists());
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(walk(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[test]
fn serve_help_gives_the_servers_meaning_of_the_shared_options() -> TestResult {
    let dir = tempfile::tempdir()?;
    let serve = stdout_of(barge(1, dir.path()).args(["serve", "--help"]))?;
    for text in [
        "Address to listen on",
        "Port to listen on (0 picks a free one)",
        "Serve clear text instead of TLS",
    ] {
        assert!(
            serve.contains(text),
            "serve --help lacks {text:?}:\n{serve}"
        );
    }
    for client_only in [
        "Server to connect to",
        "Port of the server",
        "--trust-new",
        "--fingerprint",
        "--password-file",
        "--token-file",
    ] {
        assert!(
            !serve.contains(client_only),
            "serve --help shows {client_only:?}:\n{serve}"
        );
    }
    // The client commands keep the client's meaning.
    let ls = stdout_of(barge(1, dir.path()).args(["ls", "--help"]))?;
    assert!(ls.contains("Server to connect to"), "{ls}");
    assert!(!ls.contains("listen"), "{ls}");
    Ok(())
}

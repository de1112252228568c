//! The shell and the client's words as a person meets them (issue 13): the working folder on
//! the server, the local commands, approvals from a pipe, `ls` for people, summaries, messages
//! without protocol codes, and a session in a real terminal (tmux).

use std::path::Path;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use predicates::str::contains;

use crate::cli::{Fake, barge, stdout_of};
use crate::common::BlockingServer;
use crate::fake::Quirks;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const FAILURE: i32 = 1;
const USAGE: i32 = 2;

/// Puts `files` (name, bytes) on the server through the binary.
fn seed(port: u16, work: &Path, files: &[(&str, &[u8])]) -> TestResult {
    let src = tempfile::tempdir()?;
    for (name, bytes) in files {
        let local = src.path().join(name.replace('/', "_"));
        std::fs::write(&local, bytes)?;
        barge(port, work)
            .arg("put")
            .arg(&local)
            .args(["--as", name, "-q"])
            .assert()
            .success();
    }
    Ok(())
}

#[test]
fn the_shell_has_a_working_folder_and_local_commands() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    seed(
        port,
        work.path(),
        &[
            ("top.txt", b"top"),
            ("docs/y.txt", b"yy"),
            ("docs/sub/z.txt", b"z"),
        ],
    )?;
    std::fs::write(work.path().join("x.txt"), b"new in docs")?;
    std::fs::create_dir(work.path().join("here"))?;
    std::fs::write(work.path().join("here/f10"), b"")?;
    std::fs::write(work.path().join("here/f2"), b"")?;
    let script = "pwd\n\
        cd docs\n\
        pwd\n\
        ls\n\
        put x.txt\n\
        get y.txt -o got/\n\
        cd sub\n\
        get ../y.txt -o got2/\n\
        mv z.txt ../../moved.txt\n\
        cd /\n\
        cd nope\n\
        cd top.txt\n\
        mkdir new\n\
        rm ../x\n\
        lcd here\n\
        lpwd\n\
        lls\n\
        !echo from-bang > bang.txt\n\
        !exit 3\n\
        bye\n";
    let out = barge(port, work.path())
        .arg("shell")
        .write_stdin(script)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    let lines: Vec<&str> = stdout.lines().collect();
    // pwd, then the listing of docs with names relative to it, in the long form of a pipe.
    assert_eq!(lines.first(), Some(&"/"), "{stdout}");
    assert_eq!(lines.get(1), Some(&"/docs"), "{stdout}");
    assert!(
        lines.get(2).is_some_and(|l| l.ends_with("  1  sub/z.txt")),
        "{stdout}"
    );
    assert!(
        lines.get(3).is_some_and(|l| l.ends_with("  2  y.txt")),
        "{stdout}"
    );
    assert!(stdout.contains("Success: docs/x.txt"), "{stdout}");
    assert_eq!(
        std::fs::read(server.root.join("docs/x.txt"))?,
        b"new in docs"
    );
    assert_eq!(std::fs::read(work.path().join("got/y.txt"))?, b"yy");
    assert_eq!(std::fs::read(work.path().join("got2/y.txt"))?, b"yy");
    assert_eq!(std::fs::read(server.root.join("moved.txt"))?, b"z");
    assert!(
        stderr.contains("cd: no folder nope on the server"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cd: top.txt: a file, not a folder"),
        "{stderr}"
    );
    assert!(
        stderr.contains("mkdir: the server keeps no empty folders"),
        "{stderr}"
    );
    assert!(stderr.contains("../x: above the top"), "{stderr}");
    let here = std::fs::canonicalize(work.path().join("here"))?;
    assert!(
        stdout.contains(&format!("{}\nf2\nf10\n", here.display())),
        "{stdout}"
    );
    assert_eq!(std::fs::read(here.join("bang.txt"))?, b"from-bang\n");
    assert!(stderr.contains("!exit 3: exit status: 3"), "{stderr}");
    assert!(!stderr.contains("unknown command"), "{stderr}");
    assert_eq!(out.status.code(), Some(USAGE), "{stdout}\n{stderr}");
    Ok(())
}

#[test]
fn a_piped_upload_takes_its_approval_from_the_next_line() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    seed(port, work.path(), &[("taken.txt", b"old")])?;
    for f in ["yes.txt", "no.txt", "taken.txt"] {
        std::fs::write(work.path().join(f), f)?;
    }
    let script = "UPLOAD\nyes.txt\ny\n\
        UPLOAD\nno.txt\nn\n\
        UPLOAD\ntaken.txt\ny\n\
        upload\nmissing.txt\ny\n\
        get\n\
        ls --json\n";
    let out = barge(port, work.path())
        .arg("shell")
        .write_stdin(script)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stdout.contains("Success: yes.txt"), "{stdout}");
    assert!(stderr.contains("Upload cancelled."), "{stderr}");
    assert!(!server.root.join("no.txt").exists());
    // The name is checked before the question; the approval line is still this UPLOAD's.
    assert!(
        stderr.contains(
            "taken.txt already exists on the server (use put FILE --as NEWNAME, or rm it first)"
        ),
        "{stderr}"
    );
    assert_eq!(std::fs::read(server.root.join("taken.txt"))?, b"old");
    assert!(
        stderr.contains("missing.txt: no such file or directory"),
        "{stderr}"
    );
    // `get` alone is a usage error, not a prompt that would eat `ls --json`.
    assert!(stderr.contains("required arguments"), "{stderr}");
    assert!(!stderr.contains("unknown command"), "{stderr}");
    let listing: serde_json::Value =
        serde_json::from_str(stdout.lines().last().ok_or("no listing")?)?;
    let names: Vec<&str> = listing
        .as_array()
        .ok_or("not an array")?
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["taken.txt", "yes.txt"]);
    assert_eq!(out.status.code(), Some(USAGE));
    Ok(())
}

#[test]
fn the_shell_takes_host_and_port_as_words() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let work = tempfile::tempdir()?;
    let nothing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    // BARGE_PORT points at nothing: the words win. (BARGE_PLAIN=1 reads as true.)
    barge(nothing, work.path())
        .env("BARGE_PLAIN", "1")
        .args(["shell", "127.0.0.1", &server.addr.port().to_string()])
        .write_stdin("pwd\n")
        .assert()
        .success()
        .stdout("/\n");
    barge(nothing, work.path())
        .arg("shell")
        .write_stdin("pwd\n")
        .assert()
        .code(3);
    Ok(())
}

#[test]
fn ls_sorts_naturally_filters_and_transfers_end_with_a_summary() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    for f in ["f10", "f2", "f1"] {
        std::fs::write(work.path().join(f), f)?;
    }
    barge(port, work.path())
        .args(["put", "f10", "f2", "f1"])
        .assert()
        .success()
        .stdout(contains("Uploaded 3 files, 7 B in "));
    seed(
        port,
        work.path(),
        &[("docs/a.pdf", b"pdf"), ("docs/b.txt", b"t")],
    )?;
    let names = |args: &[&str]| -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let out = stdout_of(barge(port, work.path()).arg("ls").args(args))?;
        Ok(out
            .lines()
            .filter_map(|l| l.rsplit("  ").next())
            .map(str::to_owned)
            .collect())
    };
    assert_eq!(names(&[])?, ["docs/a.pdf", "docs/b.txt", "f1", "f2", "f10"]);
    assert_eq!(names(&["f?"])?, ["f1", "f2"]);
    assert_eq!(names(&["docs"])?, ["docs/a.pdf", "docs/b.txt"]);
    assert_eq!(names(&["docs/*.pdf"])?, ["docs/a.pdf"]);
    let long = stdout_of(barge(port, work.path()).args(["ls", "-l", "f10"]))?;
    assert_eq!(long, "82b5f6802b727b0d948d38cbccd48904  3  f10\n");
    barge(port, work.path())
        .args(["ls", "nothing*"])
        .assert()
        .success()
        .stderr(contains("No files match nothing*"));

    let out = tempfile::tempdir()?;
    barge(port, out.path())
        .args(["get", "f1", "f2"])
        .assert()
        .success()
        .stdout(contains("Downloaded 2 files, 4 B in "));
    barge(port, out.path())
        .args(["get", "f10"])
        .assert()
        .success()
        .stdout(contains("Downloaded 1 file, 3 B in "));
    barge(port, out.path())
        .args(["get", "-q", "docs/a.pdf"])
        .assert()
        .success()
        .stdout("");
    Ok(())
}

#[test]
fn a_connection_lost_during_an_upload_says_nothing_was_stored() -> TestResult {
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("a.txt"), b"a")?;
    let fake = Fake::start(Quirks {
        close_after: Some(0),
        ..Quirks::default()
    })?;
    barge(fake.port(), work.path())
        .args(["put", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr(contains("Fail: a.txt: ").and(contains(
            "(the connection ended during the upload; nothing was stored)",
        )));
    Ok(())
}

/// A `barge shell` in a tmux terminal of its own (a private socket), torn down when dropped.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn start(port: u16, dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let socket = format!("barge-test-{}-{port}", std::process::id());
        let command = format!(
            "cd '{}' && BARGE_HOST=127.0.0.1 BARGE_PORT={port} BARGE_PLAIN=true \
             BARGE_HISTORY='{}' exec '{}' shell",
            dir.display(),
            dir.join("history").display(),
            env!("CARGO_BIN_EXE_barge"),
        );
        let status = std::process::Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "150",
                "-y",
                "40",
            ])
            .arg(command)
            .status()?;
        if !status.success() {
            return Err(format!("tmux could not start: {status}").into());
        }
        Ok(Self { socket })
    }

    fn keys(&self, keys: &[&str]) -> TestResult {
        let status = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("send-keys failed: {status}").into())
        }
    }

    fn screen(&self) -> Result<String, Box<dyn std::error::Error>> {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Waits until the shell waits for a command again (typed-ahead keys may be lost while a
    /// command runs, so each line is typed at a fresh prompt).
    fn wait_prompt(&self) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen()?;
            if screen.trim_end().ends_with("barge>") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no prompt; the screen:\n{screen}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 15 s) until the screen shows `text`.
    fn wait_for(&self, text: &str) -> Result<String, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen()?;
            if screen.contains(text) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                return Err(format!("never saw {text:?}; the screen:\n{screen}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn a_terminal_session_completes_in_prompts_follows_cd_and_keeps_history() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    seed(
        port,
        work.path(),
        &[("docs/report 2024.pdf", b"report"), ("top.txt", b"t")],
    )?;
    std::fs::write(work.path().join("local-upload.txt"), b"from the terminal")?;
    let term = Terminal::start(port, work.path())?;
    term.wait_for("barge>")?;

    // Tab inside the DOWNLOAD prompt completes a server name, spaces and all.
    term.keys(&["DOWNLOAD", "Enter"])?;
    term.wait_for("file id or name:")?;
    term.keys(&["docs/rep", "Tab"])?;
    term.wait_for("file id or name: docs/report 2024.pdf")?;
    term.keys(&["Enter"])?;
    term.wait_for("saved as report 2024.pdf")?;
    term.wait_prompt()?;
    assert_eq!(
        std::fs::read(work.path().join("report 2024.pdf"))?,
        b"report"
    );

    // Tab inside the UPLOAD prompt completes a local path; the approval follows.
    term.keys(&["UPLOAD", "Enter"])?;
    term.wait_for("file name:")?;
    term.keys(&["local-up", "Tab"])?;
    term.wait_for("file name: local-upload.txt")?;
    term.keys(&["Enter"])?;
    term.wait_for("Upload local-upload.txt as local-upload.txt (17 B)? [y/N]")?;
    term.keys(&["y", "Enter"])?;
    term.wait_for("Success: local-upload.txt")?;
    term.wait_prompt()?;
    assert_eq!(
        std::fs::read(server.root.join("local-upload.txt"))?,
        b"from the terminal"
    );

    // cd completes folders, and names then complete relative to it.
    term.keys(&["cd d", "Tab"])?;
    term.wait_for("barge> cd docs/")?;
    term.keys(&["Enter"])?;
    term.wait_prompt()?;
    term.keys(&["pwd", "Enter"])?;
    term.wait_for("/docs\n")?;
    term.wait_prompt()?;
    term.keys(&["ls rep", "Tab"])?;
    term.wait_for("barge> ls report\\ 2024.pdf")?;
    term.keys(&["Enter"])?;
    term.wait_for("report 2024.pdf\n")?;
    term.wait_prompt()?;

    // History: Up brings the last line back.
    term.keys(&["Up"])?;
    let screen = term.wait_for("barge> ls report\\ 2024.pdf\n")?;
    assert!(screen.matches("ls report").count() >= 2, "{screen}");
    term.keys(&["C-u", "bye", "Enter"])?;
    // The history is saved when the session ends.
    let deadline = Instant::now() + Duration::from_secs(15);
    let history = work.path().join("history");
    while !std::fs::read_to_string(&history).is_ok_and(|h| h.contains("pwd")) {
        if Instant::now() > deadline {
            return Err("the history was not saved".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn a_folder_that_cannot_be_written_is_named_as_such() -> TestResult {
    let server = BlockingServer::start().map_err(|e| e.to_string())?;
    let port = server.addr.port();
    let work = tempfile::tempdir()?;
    seed(port, work.path(), &[("a.txt", b"a")])?;
    // sysfs refuses new files even to root, so this holds whoever runs the tests.
    barge(port, Path::new("/sys"))
        .args(["get", "a.txt"])
        .assert()
        .code(FAILURE)
        .stderr("Fail: a.txt: cannot write to ./: permission denied\n");
    barge(port, work.path())
        .args(["get", "a.txt", "-o", "/sys/"])
        .assert()
        .code(FAILURE)
        .stderr("Fail: a.txt: cannot write to /sys/: permission denied\n");
    Ok(())
}

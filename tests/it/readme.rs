//! The README's examples, run as written so they cannot drift: the Quick start's first block and
//! the first two blocks of "A short tour", each line through `sh` with the real binary on the
//! `PATH`, against a real `barge serve` started by the block's own `barge serve` line, in a
//! temporary home with the files the examples name. Every line must succeed. What is not run:
//! `cargo` lines, and the blocks that need a second machine (pairing across a LAN).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{TestResult, WAIT};

/// The `sh` code blocks of the section that starts with `heading`, at most `blocks` of them.
fn blocks_under(readme: &str, heading: &str, blocks: usize) -> Vec<Vec<String>> {
    let Some(start) = readme.find(heading) else {
        return Vec::new();
    };
    let section = &readme[start + heading.len()..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    let mut found = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => found.extend(current.take()),
            (Some(lines), text) => {
                // A comment starts at two spaces and a `#`, as the README writes them.
                let code = text.split("  #").next().unwrap_or("").trim();
                if !code.is_empty() && !code.starts_with('#') {
                    lines.push(code.to_owned());
                }
            }
            (None, _) => {}
        }
    }
    found.truncate(blocks);
    found
}

/// A `barge serve` started by a README line; killed on drop.
struct Served {
    child: Child,
    port: u16,
    fingerprint: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shell(line: &str, home: &Path, work: &Path, bin: &Path, port: u16) -> Command {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(line)
        .current_dir(work)
        .env("PATH", path)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("BARGE_PORT", port.to_string())
        .env("BARGE_HISTORY", "")
        .env("BARGE_NO_ANNOUNCE", "true")
        .env_remove("BARGE_HOST")
        .env_remove("BARGE_PLAIN")
        .env_remove("BARGE_TOKEN")
        .env_remove("BARGE_LOG")
        .stdin(Stdio::null());
    cmd
}

fn serve(line: &str, home: &Path, work: &Path, bin: &Path) -> TestResult<Served> {
    let line = line.trim_end_matches('&').trim();
    // Port 0 (a free one) instead of the default, which a test machine may be using.
    let mut child = shell(&format!("exec {line}"), home, work, bin, 0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut port, mut fingerprint) = (None, None);
    let deadline = Instant::now() + WAIT;
    while port.is_none() || fingerprint.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let banner = rx
            .recv_timeout(left)
            .map_err(|_| format!("`{line}` printed no banner"))?;
        if let Some(at) = banner
            .strip_prefix("barge ")
            .and_then(|l| l.rsplit(':').next())
        {
            port = at.trim().parse().ok();
        }
        if let Some(key) = banner.split("the server's key is ").nth(1) {
            fingerprint = Some(key.trim().to_owned());
        }
    }
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Ok(Served {
        child,
        port: port.ok_or("no port")?,
        fingerprint: fingerprint.ok_or("no fingerprint")?,
    })
}

/// The files the examples name, in the home and working folders.
fn fixtures(home: &Path, work: &Path) -> TestResult {
    std::fs::create_dir_all(home.join("photos/day1"))?;
    std::fs::create_dir_all(home.join("Downloads"))?;
    std::fs::write(home.join("photos/a.jpg"), b"photo a")?;
    std::fs::write(home.join("photos/day1/b.jpg"), b"photo b")?;
    // holiday.jpg's MD5 is the id the tour deletes: 79d8e340812f9db0bbfa508beb319dea.
    std::fs::write(work.join("holiday.jpg"), b"holiday")?;
    std::fs::write(work.join("notes 2024.txt"), b"notes of 2024")?;
    std::fs::write(work.join("notes.txt"), b"a note")?;
    std::fs::write(work.join("report.pdf"), b"%PDF- a report")?;
    std::fs::create_dir_all(work.join("notes"))?;
    std::fs::write(work.join("notes/one.txt"), b"one")?;
    Ok(())
}

/// Runs every line of `blocks`; `pin`: first pin the server's key as the Quick start did (the
/// tour assumes it).
fn run_blocks(blocks: &[Vec<String>], pin: bool) -> TestResult {
    let bin = Path::new(env!("CARGO_BIN_EXE_barge"))
        .parent()
        .ok_or("no folder")?
        .to_owned();
    let (home, work) = (tempfile::tempdir()?, tempfile::tempdir()?);
    fixtures(home.path(), work.path())?;
    let mut served: Option<Served> = None;
    let mut ran = 0;
    for line in blocks.iter().flatten() {
        if line.starts_with("cargo ") {
            continue;
        }
        if line.starts_with("barge serve") {
            let server = serve(line, home.path(), work.path(), &bin)?;
            if pin {
                let line = format!("barge --fingerprint {} ls", server.fingerprint);
                let out = shell(&line, home.path(), work.path(), &bin, server.port).output()?;
                assert!(out.status.success(), "{out:?}");
            }
            served = Some(server);
            continue;
        }
        let server = served
            .as_ref()
            .ok_or("a client line before any barge serve")?;
        // The Quick start pastes the fingerprint its banner printed.
        let line = line.replace("SHA256:...", &server.fingerprint);
        let out = shell(&line, home.path(), work.path(), &bin, server.port)
            .output()
            .map_err(|e| format!("running `{line}`: {e}"))?;
        assert!(
            out.status.success(),
            "README line `{line}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 2, "too few README lines found: {blocks:?}");
    drop(served);
    // Let the killed server's folder lock go before the temp folders are removed.
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

#[test]
fn the_quick_start_runs_as_written() -> TestResult {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let blocks = blocks_under(&readme, "\n## Quick start\n", 1);
    assert_eq!(blocks.len(), 1, "no Quick start block");
    run_blocks(&blocks, false)
}

#[test]
fn the_short_tour_runs_as_written() -> TestResult {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let blocks = blocks_under(&readme, "\n## A short tour\n", 2);
    assert_eq!(blocks.len(), 2, "the tour's blocks are missing");
    run_blocks(&blocks, true)
}

/// The text of the README's first code block that starts with `opening` (its first line
/// included), without the fences.
fn block_starting(readme: &str, fence: &str, opening: &str) -> Option<String> {
    let start = readme.find(&format!("```{fence}\n{opening}"))? + fence.len() + 4;
    let body = &readme[start..];
    Some(body[..body.find("```")?].to_owned())
}

/// The sample `/etc/barge.toml` and systemd unit of "Running a server": the unit passes
/// `systemd-analyze verify` without a single warning (systemd only warns about an unknown key
/// or section, so any output fails), with its `ExecStart` on the binary under test; and the
/// sample configuration starts a server (its folders moved to a temporary place, its addresses
/// to loopback and free ports, as a test may not listen on the network).
#[test]
fn the_sample_config_and_systemd_unit_are_valid() -> TestResult {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let bin = env!("CARGO_BIN_EXE_barge");
    let tmp = tempfile::tempdir()?;

    let config = block_starting(&readme, "toml", "# /etc/barge.toml").ok_or("no sample config")?;
    let config = config
        .replace("\"0.0.0.0\"", "\"127.0.0.1\"")
        .replace("\"/srv/barge\"", &format!("{:?}", tmp.path().join("share")))
        .replace(
            "\"/var/lib/barge\"",
            &format!("{:?}", tmp.path().join("state")),
        )
        .replace("web = 8443", "web = \"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9265\"", "\"127.0.0.1:0\"");
    assert!(
        !config.contains("/srv/") && !config.contains("/var/"),
        "{config}"
    );
    let file = tmp.path().join("barge.toml");
    std::fs::write(&file, format!("{config}port = 0\n"))?;
    std::fs::create_dir(tmp.path().join("share"))?;
    let mut child = Command::new(bin)
        .args(["serve", "--no-announce", "--config"])
        .arg(&file)
        .env("HOME", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let started = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.starts_with("Web page:") => break true,
            Ok(line) => seen.push(line),
            Err(_) if Instant::now() > deadline => break false,
            Err(_) if child.try_wait()?.is_some() => break false,
            Err(_) => {}
        }
    };
    let _ = child.kill();
    let output = child.wait_with_output()?;
    assert!(
        started,
        "the sample config did not start a server with its web page: {seen:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd unit not checked: systemd-analyze is not installed");
        return Ok(());
    }
    let unit = block_starting(&readme, "ini", "[Unit]").ok_or("no systemd unit")?;
    assert!(unit.contains("ExecStart=/usr/local/bin/barge serve --config /etc/barge.toml"));
    let path = tmp.path().join("barge.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/barge", bin))?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()?;
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

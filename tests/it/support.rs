//! Helpers of the reliability suite (`hostile`, `faults`, `load`): a shared folder with an
//! "outside" next to it, snapshots of whole trees, reply checks, and the real `barge` binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use barge::server::ServerConfig;
use barge::store::StoreConfig;
use tempfile::TempDir;

use crate::common::{TestResult, TestServer, WAIT};

/// What one path in a tree is, with enough detail to see any change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    Dir,
    Symlink(PathBuf),
    Other,
}

/// Every path beneath `dir` (symlinks not followed), except the index database, whose bytes
/// change as the server saves what it already knows.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
            if rel.ends_with(".barge/index.redb") {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let node = if meta.file_type().is_symlink() {
                Node::Symlink(std::fs::read_link(&path).unwrap_or_default())
            } else if meta.is_dir() {
                walk(base, &path, out);
                Node::Dir
            } else if meta.is_file() {
                Node::File(std::fs::read(&path).unwrap_or_default())
            } else {
                Node::Other
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the paths that differ.
pub fn assert_same_tree(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) {
    let mut diffs = Vec::new();
    for (p, n) in before {
        match after.get(p) {
            None => diffs.push(format!("removed {}", p.display())),
            Some(m) if m != n => diffs.push(format!("changed {}", p.display())),
            Some(_) => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            diffs.push(format!("added {}", p.display()));
        }
    }
    assert!(diffs.is_empty(), "the tree changed: {diffs:#?}");
}

/// A temp folder holding the shared folder (`root`) and, beside it, files a hostile client
/// would like to reach (`outside/secret.txt`, `outside/dir/inner.txt`). `../x` from the shared
/// folder lands in `base`, so a snapshot of `base` sees any escape.
pub struct Sandbox {
    pub base: TempDir,
    pub outside: PathBuf,
}

pub const SECRET: &[u8] = b"outside the shared folder: must never be served";

impl Sandbox {
    pub fn new() -> TestResult<Self> {
        let base = tempfile::tempdir()?;
        let outside = base.path().join("outside");
        std::fs::create_dir_all(outside.join("dir"))?;
        std::fs::write(outside.join("secret.txt"), SECRET)?;
        std::fs::write(outside.join("dir/inner.txt"), SECRET)?;
        Ok(Self { base, outside })
    }

    /// A shared folder inside the sandbox.
    pub fn root_dir(&self) -> TestResult<TempDir> {
        Ok(tempfile::Builder::new()
            .prefix("root")
            .tempdir_in(self.base.path())?)
    }

    /// A server on a fresh shared folder inside the sandbox.
    pub async fn server(&self, store: StoreConfig, config: ServerConfig) -> TestResult<TestServer> {
        TestServer::start_with(self.root_dir()?, store, config).await
    }

    pub fn snapshot(&self) -> BTreeMap<PathBuf, Node> {
        snapshot(self.base.path())
    }
}

/// Asserts `reply` has the status code `code`, and that it carries no raw control character
/// (every name the server repeats must be escaped).
#[track_caller]
pub fn assert_code(reply: &str, code: u16) {
    assert!(
        reply.starts_with(&format!("{code} ")) || reply == code.to_string(),
        "want {code}, got {reply:?}"
    );
    assert_clean(reply);
}

/// Asserts `reply` is a refusal (4xx) and printable.
#[track_caller]
pub fn assert_refused(reply: &str) {
    assert!(reply.starts_with('4'), "want a 4xx refusal, got {reply:?}");
    assert_clean(reply);
}

#[track_caller]
pub fn assert_clean(reply: &str) {
    assert!(
        !reply
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}')),
        "raw control character in a reply: {reply:?}"
    );
}

/// `barge serve` run as a separate process, for tests that kill it or read its `/proc` entry.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Kept open so the server never gets a broken pipe on its own stdout.
    _stdout: BufReader<ChildStdout>,
}

impl BinServer {
    /// Starts `barge --plain serve --root ROOT --port 0 EXTRA...` (plain text, for raw-socket
    /// tests) and waits for its `barge X sharing DIR on 127.0.0.1:PORT` line.
    pub fn start(root: &Path, extra: &[&str]) -> TestResult<Self> {
        let mut args = vec!["--plain"];
        args.extend_from_slice(extra);
        Self::start_tls(root, &args)
    }

    /// Starts `barge serve --root ROOT --port 0 EXTRA...`: TLS unless EXTRA says `--plain`.
    pub fn start_tls(root: &Path, extra: &[&str]) -> TestResult<Self> {
        Self::start_on(root, 0, extra)
    }

    /// Starts `barge serve --root ROOT --port PORT EXTRA...`.
    pub fn start_on(root: &Path, port: u16, extra: &[&str]) -> TestResult<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_barge"))
            .args(["serve", "--root"])
            .arg(root)
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .args(extra)
            .env("BARGE_LOG", "barge=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Read the first line on a thread, so a server that never prints cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let r = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((r, reader));
        });
        let (line, reader) = match rx.recv_timeout(WAIT) {
            Ok((Ok(line), reader)) => (line, reader),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("barge serve did not start: {other:?}").into());
            }
        };
        let addr = line
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr.filter(|_| line.starts_with("barge ")) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected first line {line:?}").into());
        };
        Ok(Self {
            child,
            addr,
            _stdout: reader,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(mut self) -> TestResult {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `cond` on a plain thread (no runtime needed) for at most [`WAIT`].
pub fn wait_until(mut cond: impl FnMut() -> bool) -> TestResult {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            return Err("condition never became true".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A small deterministic pseudo-random byte source (xorshift), so garbage is reproducible.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Total size of the files in the temp area.
pub fn temp_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root.join(".barge/tmp"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// One line from `r`, without its `\n`; fails on EOF or after [`WAIT`].
pub async fn read_line(
    r: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> TestResult<String> {
    use tokio::io::AsyncBufReadExt;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, r.read_until(b'\n', &mut buf)).await??;
    if n == 0 || buf.pop() != Some(b'\n') {
        return Err("connection closed".into());
    }
    Ok(String::from_utf8(buf)?)
}

/// Exactly `n` bytes from `r`.
pub async fn read_bytes(
    r: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    n: usize,
) -> TestResult<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, r.read_exact(&mut buf)).await??;
    Ok(buf)
}

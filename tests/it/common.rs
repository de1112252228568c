//! Helpers shared by the integration tests: an in-process server on `127.0.0.1:0` with a temp
//! folder, and a raw-bytes client that speaks the protocol the way a third party would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use barge::server::{self, ServerConfig};
use barge::store::{Store, StoreConfig};
use md5::{Digest, Md5};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub store: Arc<Store>,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> TestResult<Self> {
        Self::start_with(
            tempfile::tempdir()?,
            StoreConfig::default(),
            ServerConfig::default(),
        )
        .await
    }

    pub async fn start_with(
        dir: TempDir,
        store_config: StoreConfig,
        config: ServerConfig,
    ) -> TestResult<Self> {
        Self::start_accepting(dir, store_config, config, server::PlainTcp).await
    }

    /// A server whose connections go through `acceptor` (TLS, say).
    pub async fn start_accepting<A: server::Accept>(
        dir: TempDir,
        store_config: StoreConfig,
        config: ServerConfig,
        acceptor: A,
    ) -> TestResult<Self> {
        let store = Store::open(dir.path(), store_config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(server::run(
            listener,
            acceptor,
            Arc::clone(&store),
            config,
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            dir,
            store,
            shutdown,
            handle,
        })
    }

    /// The shared folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Starts shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops the server, waits for it, saves the index, and hands back the folder.
    pub async fn stop(self) -> TestResult<TempDir> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle).await???;
        self.store.close();
        Ok(self.dir)
    }

    /// A raw client, greeting already read and checked.
    pub async fn raw(&self) -> TestResult<Raw> {
        let mut raw = Raw::connect(self.addr).await?;
        let greeting = raw.line().await?;
        assert_eq!(greeting, "220 barge/1 ready");
        Ok(raw)
    }
}

/// A server on its own runtime thread, for tests that block (running the binary).
pub struct BlockingServer {
    pub addr: SocketAddr,
    pub root: std::path::PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<TestServer>,
}

impl BlockingServer {
    pub fn start() -> TestResult<Self> {
        Self::start_with(StoreConfig::default(), ServerConfig::default())
    }

    pub fn start_with(store_config: StoreConfig, config: ServerConfig) -> TestResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let server = runtime.block_on(TestServer::start_with(
            tempfile::tempdir()?,
            store_config,
            config,
        ))?;
        Ok(Self {
            addr: server.addr,
            root: server.root().to_path_buf(),
            runtime: Some(runtime),
            server: Some(server),
        })
    }
}

impl Drop for BlockingServer {
    fn drop(&mut self) {
        if let (Some(rt), Some(server)) = (self.runtime.take(), self.server.take()) {
            let _ = rt.block_on(server.stop());
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A client that speaks raw bytes and reads raw lines.
pub struct Raw {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> TestResult<Self> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> TestResult {
        tokio::time::timeout(WAIT, self.writer.write_all(bytes.as_ref())).await??;
        Ok(())
    }

    /// One line from the server, without its `\n`. Fails on EOF.
    pub async fn line(&mut self) -> TestResult<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut buf)).await??;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(format!(
                "connection closed; partial line {:?}",
                String::from_utf8_lossy(&buf)
            )
            .into());
        }
        buf.pop();
        Ok(String::from_utf8(buf)?)
    }

    /// Sends a command line and returns the reply line.
    pub async fn cmd(&mut self, line: &str) -> TestResult<String> {
        self.send(format!("{line}\n")).await?;
        self.line().await
    }

    pub async fn bytes(&mut self, n: usize) -> TestResult<Vec<u8>> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(WAIT, self.reader.read_exact(&mut buf)).await??;
        Ok(buf)
    }

    /// True once the server has closed the connection (reads EOF).
    pub async fn closed(&mut self) -> TestResult<bool> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_to_end(&mut buf)).await??;
        Ok(n == 0)
    }

    /// Lists the files: `(id, name, size)` per line, checking the header's count.
    pub async fn list(&mut self) -> TestResult<Vec<(String, String, u64)>> {
        let head = self.cmd("LIST_FILES").await?;
        assert!(head.starts_with("210 "), "{head}");
        let count: usize = head[4..].split(' ').next().unwrap_or_default().parse()?;
        let mut out = Vec::new();
        for _ in 0..count {
            let l = self.line().await?;
            let (id, rest) = l.split_once(';').ok_or("no ;")?;
            let (name, size) = rest.rsplit_once(';').ok_or("no ;")?;
            out.push((id.to_owned(), name.to_owned(), size.parse()?));
        }
        Ok(out)
    }

    /// One-line upload; returns the `226` line's id.
    pub async fn upload(&mut self, name: &str, data: &[u8]) -> TestResult<String> {
        let ready = self.cmd(&format!("UPLOAD {name};{}", data.len())).await?;
        assert_eq!(ready, format!("350 Ready to receive {} bytes", data.len()));
        self.send(data).await?;
        let done = self.line().await?;
        assert!(done.starts_with("226 "), "{done}");
        Ok(done[4..36].to_owned())
    }

    /// One-line download; returns the header fields and the body.
    pub async fn download(&mut self, what: &str) -> TestResult<(String, Vec<u8>)> {
        let head = self.cmd(&format!("DOWNLOAD {what}")).await?;
        let mut parts = head.splitn(4, ' ');
        assert_eq!(parts.next(), Some("213"), "{head}");
        let size: usize = parts.next().ok_or("size")?.parse()?;
        let id = parts.next().ok_or("id")?.to_owned();
        let body = self.bytes(size).await?;
        Ok((id, body))
    }
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Waits until `cond` holds, polling, for at most [`WAIT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            return Err("condition never became true".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Number of entries in the server's temp area.
pub fn temp_files(root: &Path) -> usize {
    std::fs::read_dir(root.join(".barge/tmp"))
        .map(Iterator::count)
        .unwrap_or(0)
}

//! Several `barge serve` processes on one S3 bucket and one catalog (issue 15): an in-process
//! S3 server (s3s over a temp folder, real SigV4) on loopback, and a SQLite catalog file both
//! nodes open. What one node commits the other lists and serves at once; a race for one name
//! has one winner; a node killed mid-upload leaves nothing listed; orphan blobs are swept;
//! names never become keys.
#![cfg(feature = "s3")]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Raw, TestResult, md5_hex};
use crate::support::{BinServer, Noise, assert_code, wait_until};

const KEY: &str = "barge-it-key";
const SECRET: &str = "barge-it-secret-0123456789";
const BUCKET: &str = "barge";

/// An S3 server on loopback, on its own runtime (the test's thread blocks while a node starts,
/// and the node reaches the bucket before it prints its first line).
struct S3Server {
    rt: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl S3Server {
    fn start() -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join(BUCKET))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        // Bound here (not on `rt`: the test's own runtime is running), served on `rt`.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let fs = s3s_fs::FileSystem::new(dir.path()).map_err(|e| format!("s3s-fs: {e:?}"))?;
        rt.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
            let service = b.build();
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(conn);
            }
        });
        Ok(Self {
            rt: Some(rt),
            addr,
            dir,
        })
    }

    /// The blob files in the bucket under `prefix`.
    fn blobs(&self, prefix: &str) -> Vec<PathBuf> {
        let dir = self.dir.path().join(BUCKET).join(prefix).join("blobs");
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every object key in the bucket (files, relative to the bucket's folder).
    fn keys(&self) -> Vec<String> {
        let base = self.dir.path().join(BUCKET);
        walkdir::WalkDir::new(&base)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                e.path()
                    .strip_prefix(&base)
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The shared settings of the nodes: bucket, catalog, a credentials file.
struct Cluster {
    s3: S3Server,
    shared: tempfile::TempDir,
}

impl Cluster {
    fn new() -> TestResult<Self> {
        let s3 = S3Server::start()?;
        let shared = tempfile::tempdir()?;
        let creds = shared.path().join("credentials");
        std::fs::write(
            &creds,
            format!("[default]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"),
        )?;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self { s3, shared })
    }

    /// Starts node `i` (its own state folder; the shared bucket and catalog).
    fn node(&self, i: usize, extra: &[&str]) -> TestResult<BinServer> {
        let state = self.shared.path().join(format!("node{i}"));
        let root = self.shared.path().join("unused-root");
        let endpoint = format!("http://{}", self.s3.addr);
        let catalog = format!(
            "sqlite://{}",
            self.shared.path().join("catalog.db").display()
        );
        let creds = self.shared.path().join("credentials");
        let mut args = vec![
            "--storage",
            "s3://barge/share",
            "--s3-endpoint",
            &endpoint,
            "--catalog",
            &catalog,
            "--s3-credentials",
            path(&creds)?,
            "--state-dir",
            path(&state)?,
        ];
        args.extend_from_slice(extra);
        let server = BinServer::start(&root, &args)?;
        assert!(!root.exists(), "no shared folder is made with --storage");
        Ok(server)
    }
}

fn path(p: &Path) -> TestResult<&str> {
    Ok(p.to_str().ok_or("non-UTF-8 temp path")?)
}

async fn connect(node: &BinServer) -> TestResult<Raw> {
    let mut c = Raw::connect(node.addr).await?;
    c.line().await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_share() -> TestResult {
    let cluster = Cluster::new()?;
    let one = cluster.node(1, &[])?;
    let two = cluster.node(2, &[])?;
    let (mut a, mut b) = (connect(&one).await?, connect(&two).await?);
    let big = Noise::new(7).bytes(20 << 20);
    let small_id = a.upload("docs/hello.txt", b"hello from one\n").await?;
    let big_id = a.upload("big.bin", &big).await?;
    assert_eq!(big_id, md5_hex(&big));
    // Listed and served by the other node at once.
    assert_eq!(
        b.list().await?,
        [
            (big_id.clone(), "big.bin".to_owned(), big.len() as u64),
            (small_id.clone(), "docs/hello.txt".to_owned(), 15),
        ]
    );
    assert_eq!(b.download(&big_id).await?.1, big);
    assert_eq!(b.download("docs/hello.txt").await?.1, b"hello from one\n");
    // Rename on two, delete on one: both see it.
    assert_code(&b.cmd("RENAME docs/hello.txt\tdocs/hi.txt").await?, 250);
    assert_code(&a.cmd("DOWNLOAD docs/hello.txt").await?, 404);
    assert_code(&a.cmd("DELETE docs/hi.txt").await?, 250);
    assert_eq!(b.list().await?.len(), 1);

    // A race for one name: both nodes say 350 (each reserves only its own uploads), exactly
    // one commit wins, the other gets 409, and the winner's bytes are what is served.
    for round in 0..3 {
        let name = format!("race{round}.bin");
        let (da, db) = (
            Noise::new(10 + round).bytes(3 << 20),
            Noise::new(20 + round).bytes(3 << 20),
        );
        assert_code(&a.cmd(&format!("UPLOAD {name};{}", da.len())).await?, 350);
        assert_code(&b.cmd(&format!("UPLOAD {name};{}", db.len())).await?, 350);
        let (ra, rb) = tokio::join!(
            async {
                a.send(&da).await?;
                a.line().await
            },
            async {
                b.send(&db).await?;
                b.line().await
            }
        );
        let (ra, rb) = (ra?, rb?);
        let codes = [&ra[..3], &rb[..3]];
        assert!(
            codes == ["226", "409"] || codes == ["409", "226"],
            "{ra} / {rb}"
        );
        let want = if ra.starts_with("226") { &da } else { &db };
        assert_eq!(&a.download(&name).await?.1, want);
        assert_eq!(&b.download(&name).await?.1, want);
    }
    Ok(())
}

/// A node SIGKILLed mid-upload: nothing partial is listed anywhere, the name is free for the
/// other node, and blobs nothing points to are swept by the other node after the grace, while
/// every committed file stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_nothing_listed_and_orphans_are_swept() -> TestResult {
    let cluster = Cluster::new()?;
    let one = cluster.node(1, &[])?;
    let two = cluster.node(2, &["--sweep-grace", "1", "--sweep-every", "1"])?;
    let (mut a, mut b) = (connect(&one).await?, connect(&two).await?);
    let kept = a.upload("kept.txt", b"kept").await?;
    let body = Noise::new(3).bytes(24 << 20);
    assert_code(
        &a.cmd(&format!("UPLOAD big.bin;{}", body.len())).await?,
        350,
    );
    a.send(&body[..12 << 20]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    one.kill()?;
    drop(a);
    assert_eq!(b.list().await?, [(kept.clone(), "kept.txt".to_owned(), 4)]);
    // A blob left as a node killed between writing it and committing its row leaves it.
    let orphan = cluster
        .s3
        .dir
        .path()
        .join(BUCKET)
        .join("share/blobs/00killed00");
    std::fs::write(&orphan, b"orphan")?;
    wait_until(|| !orphan.exists())?;
    assert_eq!(
        cluster.s3.blobs("share").len(),
        1,
        "only the kept file's blob is left"
    );
    assert_eq!(b.download("kept.txt").await?.1, b"kept");
    // The name the dead node was writing is free.
    let id = b.upload("big.bin", &body).await?;
    assert_eq!(id, md5_hex(&body));
    Ok(())
}

/// Hostile names are refused as on the folder, and no name ever becomes a key: the bucket
/// holds only `blobs/<random hex>` under the prefix, whatever the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_never_become_keys() -> TestResult {
    let cluster = Cluster::new()?;
    let node = cluster.node(1, &[])?;
    let mut c = connect(&node).await?;
    for bad in [
        "../x",
        "a/../../b",
        "/etc/passwd",
        ".barge/identity",
        "x\u{202e}txt",
        "a//b",
    ] {
        assert_code(&c.cmd(&format!("UPLOAD {bad};1")).await?, 422);
    }
    let names = [
        "blobs/00killed00",
        "share/blobs/x",
        "..a",
        "caf\u{e9}",
        "%2e%2e/x",
    ];
    for name in names {
        c.upload(name, name.as_bytes()).await?;
    }
    assert_code(&c.cmd("UPLOAD cafe\u{301};1").await?, 409);
    assert_code(&c.cmd("UPLOAD blobs/00killed00/x;1").await?, 409);
    let keys = cluster.s3.keys();
    let blobs: Vec<&String> = keys.iter().filter(|k| !k.starts_with('.')).collect();
    assert_eq!(blobs.len(), names.len(), "{keys:?}");
    for k in blobs {
        let hexpart = k.strip_prefix("share/blobs/").ok_or(format!("key {k}"))?;
        assert!(
            hexpart.len() == 32 && hexpart.bytes().all(|b| b.is_ascii_hexdigit()),
            "{k}"
        );
    }
    for name in names {
        assert_eq!(c.download(name).await?.1, name.as_bytes());
    }
    Ok(())
}

/// `--storage` needs `--state-dir`, and a credentials file others can read is refused.
#[test]
fn storage_flags_are_checked() -> TestResult {
    let cluster = Cluster::new()?;
    let creds = cluster.shared.path().join("credentials");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
        .args([
            "--plain",
            "serve",
            "--port",
            "0",
            "--storage",
            "s3://barge/x",
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state-dir"));
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644))?;
    let state = cluster.shared.path().join("s");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
        .args([
            "--plain",
            "serve",
            "--port",
            "0",
            "--storage",
            "s3://barge/x",
        ])
        .arg("--s3-credentials")
        .arg(&creds)
        .arg("--state-dir")
        .arg(&state)
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("readable by everyone"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The catalog records who uploaded each file: the logged-in user's name, empty for an
/// anonymous session; through either node, and for a plain upload, a batched `PUT` and a
/// `RESUME` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_records_the_uploader() -> TestResult {
    let cluster = Cluster::new()?;
    let state = cluster.shared.path().join("node1");
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["user", "add", "alice", "--state-dir"])
        .arg(&state)
        .env("BARGE_PASSWORD", "correct horse battery")
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(added.status.success(), "{added:?}");
    let one = cluster.node(1, &[])?;
    let two = cluster.node(2, &[])?;
    let mut a = connect(&one).await?;
    assert_code(&a.cmd("USER alice").await?, 334);
    assert_code(&a.cmd("PASS correct horse battery").await?, 230);
    a.upload("by-alice.txt", b"alice").await?;
    a.send("PUT put-alice.txt;3\nabc").await?;
    assert_code(&a.line().await?, 226);
    assert_code(&a.cmd("RESUME resumed-alice.txt;2").await?, 352);
    a.send("hi").await?;
    a.send(&format!("{}\n", md5_hex(b"hi"))).await?;
    assert_code(&a.line().await?, 226);
    let mut b = connect(&two).await?;
    b.upload("anonymous.txt", b"anyone").await?;
    let url = format!(
        "sqlite://{}",
        cluster.shared.path().join("catalog.db").display()
    );
    let catalog = barge::store::catalog::SqlCatalog::connect(&url).await?;
    let rows: Vec<(String, String)> = barge::store::catalog::Catalog::list(&catalog)
        .await?
        .into_iter()
        .map(|e| (e.name.as_str().to_owned(), e.uploader))
        .collect();
    let want = [
        ("anonymous.txt", ""),
        ("by-alice.txt", "alice"),
        ("put-alice.txt", "alice"),
        ("resumed-alice.txt", "alice"),
    ];
    assert_eq!(
        rows,
        want.map(|(n, u)| (n.to_owned(), u.to_owned())),
        "name, uploader"
    );
    Ok(())
}

//! The S3 fixture: an in-process S3 server (s3s over a temp folder, real SigV4 on loopback)
//! and a SQLite catalog, so the store suite runs against the object backend on every test run;
//! and the tests of what only the object backend has (the orphan sweep, the catalog's races).

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::store::catalog::{Catalog, SqlCatalog};
use crate::store::object::{ObjectBackend, S3Location, SweepConfig};

const KEY: &str = "barge-test-key";
const SECRET: &str = "barge-test-secret-0123456789";
const BUCKET: &str = "barge";

/// An S3 server on loopback, running on its own runtime until dropped.
pub(super) struct S3Server {
    rt: Option<tokio::runtime::Runtime>,
    pub(super) addr: SocketAddr,
    pub(super) dir: tempfile::TempDir,
}

impl S3Server {
    pub(super) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let root = dir.path().to_owned();
        // Bound here (not on `rt`: this may run inside the test's runtime), served on `rt`.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let fs = s3s_fs::FileSystem::new(root).unwrap();
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
        Self {
            rt: Some(rt),
            addr,
            dir,
        }
    }

    pub(super) fn location(&self, prefix: &str) -> S3Location {
        S3Location {
            bucket: BUCKET.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: format!("http://{}", self.addr),
            region: "us-east-1".to_owned(),
            access_key_id: KEY.to_owned(),
            secret_access_key: SECRET.to_owned(),
            session_token: None,
        }
    }

    /// Runs `f` to its end on the server's runtime, from a thread outside any runtime (the
    /// suite's fixtures are synchronous but called from async tests).
    fn run<T: Send, F: std::future::Future<Output = T> + Send>(&self, f: F) -> T {
        let rt = self.rt.as_ref().unwrap();
        std::thread::scope(|s| s.spawn(|| rt.block_on(f)).join().unwrap())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The object backend on an S3 server and a SQLite catalog.
pub(super) struct S3 {
    server: S3Server,
    state: tempfile::TempDir,
    open: std::sync::Mutex<Option<(Arc<ObjectBackend>, Arc<SqlCatalog>)>>,
}

impl S3 {
    pub(super) fn new() -> Self {
        Self {
            server: S3Server::start(),
            state: tempfile::tempdir().unwrap(),
            open: std::sync::Mutex::new(None),
        }
    }

    fn catalog_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.state.path().join("catalog.db").display()
        )
    }

    fn opened(&self) -> (Arc<ObjectBackend>, Arc<SqlCatalog>) {
        self.open.lock().unwrap().clone().expect("opened")
    }

    /// Blobs in the bucket (keys below the prefix).
    fn blobs(&self) -> Vec<String> {
        let dir = self.server.dir.path().join(BUCKET).join("p/blobs");
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // s3s-fs keeps its own metadata beside the objects.
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Fixture for S3 {
    fn open(&self, config: StoreConfig) -> Arc<Store> {
        let op = self.server.location("p").operator().unwrap();
        let url = self.catalog_url();
        let (backend, catalog) = self.server.run(async move {
            let catalog = Arc::new(SqlCatalog::connect(&url).await.unwrap());
            let sweep = SweepConfig {
                every: None,
                ..SweepConfig::default()
            };
            let backend = ObjectBackend::open(op, catalog.clone(), 1 << 50, sweep)
                .await
                .unwrap();
            (backend, catalog)
        });
        *self.open.lock().unwrap() = Some((Arc::clone(&backend), catalog));
        Store::new(backend, config)
    }

    fn raw(&self, name: &str) -> Option<Vec<u8>> {
        let (_, catalog) = self.opened();
        let name = FileName::parse(name).ok()?;
        let row = self
            .server
            .run(async move { catalog.get(&name).await.unwrap() })?;
        std::fs::read(self.server.dir.path().join(BUCKET).join("p").join(row.blob)).ok()
    }

    /// Blobs no row points to and uploads still staged, once the background clean-up of
    /// dropped uploads has had up to 5 s to run.
    fn leftovers(&self) -> usize {
        let (_, catalog) = self.opened();
        let mut count = 0;
        for _ in 0..50 {
            let catalog = Arc::clone(&catalog);
            let used: Vec<String> = self.server.run(async move {
                catalog
                    .list()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.blob)
                    .collect()
            });
            count = self
                .blobs()
                .into_iter()
                .filter(|b| !used.contains(&format!("blobs/{b}")))
                .count();
            if count == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        count
    }
}

/// A blob nothing points to is swept once past its grace, a blob a row points to never is,
/// and a staged upload's blob is spared until its upload grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_orphans_only() {
    let fx = S3::new();
    let store = fx.open(StoreConfig::default());
    let (backend, catalog) = fx.opened();
    put(&store, "kept", b"kept").await.unwrap();
    put(&store, "gone", b"gone").await.unwrap();
    store.delete(&r("gone")).await.unwrap();
    // An orphan as a killed server leaves it: written, never committed, never cleaned.
    backend.operator().write("blobs/0rphan", "x").await.unwrap();
    // An upload in progress whose blob exists already.
    catalog.stage("blobs/staged").await.unwrap();
    backend.operator().write("blobs/staged", "s").await.unwrap();
    assert_eq!(fx.blobs().len(), 4);
    // Within the grace nothing goes.
    assert_eq!(backend.sweep().await.unwrap(), 0);
    let (op, catalog2) = (backend.operator().clone(), Arc::clone(&catalog));
    let eager = ObjectBackend::open(
        op,
        catalog2,
        1 << 50,
        SweepConfig {
            every: None,
            grace: Duration::ZERO,
            upload_grace: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(eager.sweep().await.unwrap(), 2);
    let mut left = fx.blobs();
    left.sort();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&"staged".to_owned()), "{left:?}");
    assert_eq!(
        body(store.download(&r("kept")).await.unwrap()).await,
        b"kept"
    );
}

/// Two stores (two servers) on one bucket and catalog: what one commits the other lists at
/// once, and a race for one name has exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_namespace() {
    let fx = S3::new();
    let one = fx.open(StoreConfig::default());
    let two = fx.open(StoreConfig::default());
    put(&one, "shared/a", b"from one").await.unwrap();
    assert_eq!(names(&two).await, ["shared/a"]);
    assert_eq!(
        body(two.download(&r("shared/a")).await.unwrap()).await,
        b"from one"
    );
    // Both begin (neither sees the other: their reservations are per server), one commits.
    for round in 0..5 {
        let name = format!("race{round}");
        let a = one.begin_upload(n(&name), 1).await.unwrap();
        let b = two.begin_upload(n(&name), 1).await.unwrap();
        let (ra, rb) = tokio::join!(
            tokio::task::spawn_blocking(move || {
                let mut a = a;
                a.write(b"a")?;
                a.finish()
            }),
            tokio::task::spawn_blocking(move || {
                let mut b = b;
                b.write(b"b")?;
                b.finish()
            }),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
        let lost = if ra.is_err() { ra } else { rb };
        assert!(matches!(lost, Err(StoreError::Exists(_))), "{lost:?}");
    }
    // A file on one and a folder of the same name on the other: one of them.
    let a = one.begin_upload(n("x"), 1).await.unwrap();
    let b = two.begin_upload(n("x/y"), 1).await.unwrap();
    let ra = tokio::task::spawn_blocking(move || {
        let mut a = a;
        a.write(b"a")?;
        a.finish()
    })
    .await
    .unwrap();
    assert!(ra.is_ok());
    let rb = tokio::task::spawn_blocking(move || {
        let mut b = b;
        b.write(b"b")?;
        b.finish()
    })
    .await
    .unwrap();
    assert!(matches!(rb, Err(StoreError::NotAFolder(_))), "{rb:?}");
    // Equivalent names from two servers: one of them.
    let a = one.begin_upload(n("caf\u{e9}"), 1).await.unwrap();
    let b = two.begin_upload(n("cafe\u{301}"), 1).await.unwrap();
    let ra = tokio::task::spawn_blocking(move || {
        let mut a = a;
        a.write(b"a")?;
        a.finish()
    })
    .await
    .unwrap();
    assert!(ra.is_ok());
    let rb = tokio::task::spawn_blocking(move || {
        let mut b = b;
        b.write(b"b")?;
        b.finish()
    })
    .await
    .unwrap();
    assert!(matches!(rb, Err(StoreError::Equivalent { .. })), "{rb:?}");
    assert_eq!(fx.leftovers(), 0);
}

/// Speed, by hand (`cargo test --lib store_vs_raw -- --ignored --nocapture`): an upload and a
/// download of 128 MiB through the store as a ratio of OpenDAL's own PUT and GET of the same
/// bytes to the same S3 server (issue 15 asks for at least 0.8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn store_vs_raw_opendal() {
    use std::time::Instant;
    use tokio::io::AsyncReadExt as _;
    let fx = S3::new();
    let store = fx.open(StoreConfig::default());
    let (backend, _) = fx.opened();
    let op = backend.operator().clone();
    let data: Vec<u8> = (0..128u32 << 20).map(|i| (i % 251) as u8).collect();
    let mib = data.len() as f64 / f64::from(1 << 20);
    let mut rows = Vec::new();
    for round in 0..3 {
        let t = Instant::now();
        let mut w = op
            .writer_with(&format!("raw{round}"))
            .chunk(crate::store::object::PART)
            .concurrent(crate::store::object::PARTS)
            .await
            .unwrap();
        for c in data.chunks(256 << 10) {
            w.write(c.to_vec()).await.unwrap();
        }
        w.close().await.unwrap();
        let raw_put = t.elapsed();
        let t = Instant::now();
        let mut up = store
            .begin_upload(n(&format!("f{round}")), data.len() as u64)
            .await
            .unwrap();
        let d = data.clone();
        tokio::task::spawn_blocking(move || {
            for c in d.chunks(256 << 10) {
                up.write(c).unwrap();
            }
            up.finish().unwrap()
        })
        .await
        .unwrap();
        let put = t.elapsed();
        let t = Instant::now();
        let reader = op
            .reader_with(&format!("raw{round}"))
            .chunk(crate::store::object::PART)
            .concurrent(2)
            .await
            .unwrap();
        let mut rd = tokio_util::compat::FuturesAsyncReadCompatExt::compat(
            reader
                .into_futures_async_read(0..data.len() as u64)
                .await
                .unwrap(),
        );
        let mut sink = vec![0u8; 256 << 10];
        while rd.read(&mut sink).await.unwrap() > 0 {}
        let raw_get = t.elapsed();
        let t = Instant::now();
        let dl = store.download(&r(&format!("f{round}"))).await.unwrap();
        let Body::Reader(mut rd) = dl.body else {
            panic!("a large body is a stream")
        };
        while rd.read(&mut sink).await.unwrap() > 0 {}
        let get = t.elapsed();
        rows.push((raw_put, put, raw_get, get));
    }
    for (raw_put, put, raw_get, get) in &rows {
        eprintln!(
            "128 MiB: raw PUT {:.0} MiB/s, store upload {:.0} MiB/s ({:.2}x); raw GET {:.0} MiB/s, store download {:.0} MiB/s ({:.2}x)",
            mib / raw_put.as_secs_f64(),
            mib / put.as_secs_f64(),
            raw_put.as_secs_f64() / put.as_secs_f64(),
            mib / raw_get.as_secs_f64(),
            mib / get.as_secs_f64(),
            raw_get.as_secs_f64() / get.as_secs_f64(),
        );
    }
}

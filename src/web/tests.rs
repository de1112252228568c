//! Tests of the web gateway over real HTTP on loopback: each route, each refusal with the
//! status the TCP protocol uses for the same outcome, ranges and validators, confinement,
//! a body cut short, and TLS with the server's own identity.
//!
//! Longer than the ~500 lines a source file keeps to, on purpose: every test here drives the
//! same harness (a gateway on loopback and a raw HTTP client, defined at the top), and they read
//! best as one catalogue of the gateway's behaviour.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Gateway, WebConfig};
use crate::security::users::Users;
use crate::security::users::{Permissions, Scope};
use crate::server::AccessOptions;
use crate::store::MemoryBackend;
use crate::store::{Store, StoreConfig};
use crate::transfer::md5;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A running gateway over a memory store; stops when dropped.
struct Web {
    addr: SocketAddr,
    store: Arc<Store>,
    stop: CancellationToken,
    /// Sent as a bearer token with every request that does not send its own authorization.
    token: Option<String>,
    _state: Option<tempfile::TempDir>,
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Who the requests of a test are.
enum As {
    /// Anyone: the server's default policy (no database: anonymous with every permission).
    Anyone,
    /// A token with these permissions and folder, on a server where anonymous access is off.
    Token(Permissions, Scope),
}

fn anyone() -> Arc<crate::server::Access> {
    Arc::new(crate::server::Access::default())
}

async fn start(
    who: As,
    config: StoreConfig,
) -> Result<Web, Box<dyn std::error::Error + Send + Sync>> {
    let (policy, token, state) = match who {
        As::Anyone => (anyone(), None, None),
        As::Token(perms, scope) => {
            let dir = tempfile::tempdir()?;
            let users = Users::open(dir.path())?;
            let token = users.create_token("test", perms, &scope)?;
            let options = AccessOptions {
                public: false,
                read_only: false,
                loopback: true,
                tls: false,
            };
            let policy = Arc::new(crate::server::Access::new(users, options));
            (policy, Some(token.secret().to_owned()), Some(dir))
        }
    };
    let store = Store::new(Arc::new(MemoryBackend::new(1 << 30)), config);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let gw = Gateway::new(Arc::clone(&store), policy, WebConfig::default(), None);
    tokio::spawn(super::run(listener, None, gw, stop.clone()));
    Ok(Web {
        addr,
        store,
        stop,
        token,
        _state: state,
    })
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request on a new connection.
async fn call_on<S>(
    io: S,
    req: Request<Full<Bytes>>,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let res = send.send_request(req).await?;
    let (parts, body) = res.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn call(
    web: &Web,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", web.addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(token) = web
        .token
        .as_ref()
        .filter(|_| !headers.iter().any(|(k, _)| *k == "authorization"))
    {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body)))?;
    call_on(TcpStream::connect(web.addr).await?, req).await
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn the_page_and_its_assets_come_with_a_strict_policy() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    let page = call(&web, "GET", "/", &[], b"").await?;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("/assets/app.js"));
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    for asset in ["app.js", "style.css", "md5.js"] {
        let a = call(&web, "GET", &format!("/assets/{asset}"), &[], b"").await?;
        assert_eq!(a.status, StatusCode::OK, "{asset}");
        assert!(!a.body.is_empty());
    }
    let missing = call(&web, "GET", "/assets/../Cargo.toml", &[], b"").await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn upload_list_download_round_trip_with_the_servers_md5() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    for size in [0, 1, 70_000, 3 * crate::transfer::CHUNK + 5] {
        let body = data(size);
        let path = format!("/files/d%C3%A9j%C3%A0/a%20b{size}.bin");
        let up = call(&web, "PUT", &path, &[], &body).await?;
        assert_eq!(up.status, StatusCode::CREATED, "{:?}", up.body);
        let id = md5(&body).to_hex();
        assert_eq!(up.json()["id"], id.as_str());
        assert_eq!(up.json()["name"], format!("déjà/a b{size}.bin").as_str());

        let down = call(&web, "GET", &path, &[], b"").await?;
        assert_eq!(down.status, StatusCode::OK);
        assert!(down.body == body, "size {size}: the bytes differ");
        assert_eq!(down.header("etag"), format!("\"{id}\""));
        assert_eq!(down.header("content-length"), size.to_string());
        assert_eq!(
            down.header("content-disposition"),
            format!("attachment; filename=\"a b{size}.bin\"; filename*=UTF-8''a%20b{size}.bin")
        );
        let by_id = call(&web, "GET", &format!("/files/{id}"), &[], b"").await?;
        if size > 0 {
            assert!(by_id.body == body);
        }
    }
    let list = call(&web, "GET", "/api/files", &[], b"").await?;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.header("barge-pending"), "0");
    let files = list.json().as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 4);
    assert_eq!(files[0]["name"], "déjà/a b0.bin");
    Ok(())
}

#[tokio::test]
async fn ranges_and_validators_let_browsers_and_curl_resume() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    let body = data(300_000);
    let id = md5(&body).to_hex();
    call(&web, "PUT", "/files/big", &[], &body).await?;
    let etag = format!("\"{id}\"");

    let part = call(
        &web,
        "GET",
        "/files/big",
        &[("range", "bytes=100-199")],
        b"",
    )
    .await?;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-range"), "bytes 100-199/300000");
    assert!(part.body[..] == body[100..200]);

    let tail = call(
        &web,
        "GET",
        "/files/big",
        &[("range", "bytes=299990-")],
        b"",
    )
    .await?;
    assert!(tail.body[..] == body[299_990..]);
    let suffix = call(&web, "GET", "/files/big", &[("range", "bytes=-10")], b"").await?;
    assert!(suffix.body[..] == body[299_990..]);

    let outside = call(
        &web,
        "GET",
        "/files/big",
        &[("range", "bytes=300000-")],
        b"",
    )
    .await?;
    assert_eq!(outside.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.header("content-range"), "bytes */300000");

    let same = call(&web, "GET", "/files/big", &[("if-none-match", &etag)], b"").await?;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert!(same.body.is_empty());

    // If-Range with another file's tag: the file changed, so all of it comes back.
    let changed = [
        ("range", "bytes=0-9"),
        ("if-range", "\"00000000000000000000000000000000\""),
    ];
    let whole = call(&web, "GET", "/files/big", &changed, b"").await?;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.len(), body.len());
    let kept = [("range", "bytes=0-9"), ("if-range", etag.as_str())];
    let ten = call(&web, "GET", "/files/big", &kept, b"").await?;
    assert_eq!(
        (ten.status, ten.body.len()),
        (StatusCode::PARTIAL_CONTENT, 10)
    );
    Ok(())
}

#[tokio::test]
async fn refusals_carry_the_tcp_protocols_status() -> TestResult {
    let config = StoreConfig {
        max_file_size: 1000,
        ..StoreConfig::default()
    };
    let web = start(As::Anyone, config).await?;
    assert_eq!(
        call(&web, "PUT", "/files/a", &[], b"one").await?.status,
        StatusCode::CREATED
    );
    let again = call(&web, "PUT", "/files/a", &[], b"two").await?;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("already exists")
    );
    let big = call(&web, "PUT", "/files/big", &[], &[0; 1001]).await?;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    for bad in [
        "/files/..%2Fx",
        "/files/.barge/x",
        "/files/a%00b",
        "/files/x/",
    ] {
        let r = call(&web, "PUT", bad, &[], b"x").await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    assert_eq!(
        call(&web, "GET", "/files/nope", &[], b"").await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&web, "DELETE", "/files/nope", &[], b"").await?.status,
        StatusCode::NOT_FOUND
    );
    // Nothing of the refused uploads was kept.
    let names: Vec<_> = web
        .store
        .list()
        .await?
        .entries()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(names, ["a"]);
    Ok(())
}

#[tokio::test]
async fn an_upload_without_a_length_is_refused_before_it_is_stored() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    let mut s = TcpStream::connect(web.addr).await?;
    s.write_all(b"PUT /files/c HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await?;
    assert!(out.starts_with("HTTP/1.1 411"), "{out}");
    assert!(web.store.list().await?.entries().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_body_cut_short_keeps_nothing() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    for announced in [1000, 500_000] {
        let mut s = TcpStream::connect(web.addr).await?;
        let head = format!(
            "PUT /files/cut HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {announced}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(&data(300)).await?;
        drop(s);
        // The name is free again once the server has seen the connection go.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = call(&web, "PUT", "/files/cut", &[], b"whole").await?;
            if r.status == StatusCode::CREATED {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{:?}", r.body);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let got = call(&web, "GET", "/files/cut", &[], b"").await?;
        assert_eq!(&got.body[..], b"whole");
        assert_eq!(
            call(&web, "DELETE", "/files/cut", &[], b"").await?.status,
            StatusCode::OK
        );
    }
    Ok(())
}

#[tokio::test]
async fn rename_and_delete() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    call(&web, "PUT", "/files/old", &[], b"content").await?;
    let r = call(
        &web,
        "POST",
        "/api/rename",
        &[("content-type", "application/json")],
        br#"{"from":"old","to":"sub/new"}"#,
    )
    .await?;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["name"], "sub/new");
    assert_eq!(
        call(&web, "GET", "/files/old", &[], b"").await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        &call(&web, "GET", "/files/sub/new", &[], b"").await?.body[..],
        b"content"
    );
    let d = call(&web, "DELETE", "/files/sub/new", &[], b"").await?;
    assert_eq!(
        (d.status, d.json()["name"].as_str()),
        (StatusCode::OK, Some("sub/new"))
    );
    assert!(web.store.list().await?.entries().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_read_only_share_refuses_every_change() -> TestResult {
    let web = start(
        As::Anyone,
        StoreConfig {
            read_only: true,
            ..StoreConfig::default()
        },
    )
    .await?;
    let me = call(&web, "GET", "/api/me", &[], b"").await?.json();
    assert_eq!(
        (me["put"].as_bool(), me["modify"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        call(&web, "PUT", "/files/a", &[], b"x").await?.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&web, "DELETE", "/files/a", &[], b"").await?.status,
        StatusCode::FORBIDDEN
    );
    let body = br#"{"from":"a","to":"b"}"#;
    let rename = call(
        &web,
        "POST",
        "/api/rename",
        &[("content-type", "application/json")],
        body,
    )
    .await?;
    assert_eq!(rename.status, StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn a_drop_box_may_only_upload() -> TestResult {
    let drop_box = As::Token(Permissions::DROP_BOX, Scope::whole_share());
    let web = start(drop_box, StoreConfig::default()).await?;
    assert_eq!(
        call(&web, "PUT", "/files/in", &[], b"x").await?.status,
        StatusCode::CREATED
    );
    for (method, path) in [
        ("GET", "/api/files"),
        ("GET", "/files/in"),
        ("DELETE", "/files/in"),
    ] {
        let r = call(&web, method, path, &[], b"").await?;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    Ok(())
}

/// Stores `body` under `name` directly, without the gateway.
async fn put_direct(web: &Web, name: &str, body: &[u8]) -> TestResult {
    let mut up = web
        .store
        .begin_upload(crate::name::FileName::parse(name)?, body.len() as u64)
        .await?;
    up.write(body)?;
    up.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_long_listing_is_sent_in_pages_and_parses_whole_for_every_scope() -> TestResult {
    let folder = As::Token(Permissions::ALL, Scope::parse("alice")?);
    let web = start(folder, StoreConfig::default()).await?;
    let empty = call(&web, "GET", "/api/files", &[], b"").await?;
    assert_eq!(&empty.body[..], b"[]");
    assert_eq!(empty.header("content-type"), "application/json");
    // 300 entries of ~250 bytes of JSON: several pages. Names just outside the folder sort
    // before (`al`) and after (`alice0`, as '0' > '/') its names.
    let long = |i: usize| format!("{i:05}-\"quoted\"-{}", "x".repeat(200));
    for i in 0..300 {
        put_direct(&web, &format!("alice/{}", long(i)), b"in").await?;
    }
    for outside in ["al", "alice0", "bob/x"] {
        put_direct(&web, outside, b"out").await?;
    }
    let list = call(&web, "GET", "/api/files", &[], b"").await?;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.len() > 2 * super::api::LIST_PAGE_BYTES);
    assert_eq!(
        list.header("content-length"),
        "",
        "streamed, not built whole"
    );
    let files = list.json();
    let names: Vec<&str> = files
        .as_array()
        .ok_or("not a JSON array")?
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    let expected: Vec<String> = (0..300).map(long).collect();
    assert_eq!(names, expected);
    assert_eq!(files[0]["size"], 2);
    assert_eq!(files[0]["id"], md5(b"in").to_hex());
    Ok(())
}

#[tokio::test]
async fn a_web_listings_pages_are_counted_until_hyper_drops_them() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    for i in 0..300 {
        put_direct(&web, &format!("{i:05}-{}", "y".repeat(200)), b"z").await?;
    }
    let metrics = Arc::new(crate::metrics::Metrics::new());
    async fn page(
        body: &mut axum::body::Body,
    ) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
        let frame = body.frame().await.ok_or("no page")??;
        Ok(frame.into_data().map_err(|_| "not a data frame")?)
    }
    let in_flight = || metrics.listings_in_flight();
    let listing = web.store.list().await?;
    let mut body = super::api::listing_body(listing, Scope::whole_share(), &metrics);
    assert_eq!(in_flight(), (1, 0), "sending, nothing made yet");
    let first: Bytes = page(&mut body).await?;
    let second: Bytes = page(&mut body).await?;
    assert!(first.len() >= super::api::LIST_PAGE_BYTES);
    let both = (first.len() + second.len()) as u64;
    assert_eq!(in_flight(), (1, both), "two pages made and held");
    drop(first);
    assert_eq!(
        in_flight(),
        (1, second.len() as u64),
        "the first one written"
    );
    // The reader goes away: the listing stops, its last page goes when hyper drops it.
    drop(body);
    assert_eq!(in_flight(), (0, second.len() as u64));
    drop(second);
    assert_eq!(in_flight(), (0, 0));
    // Read to the end, every page dropped as it is written: nothing is left counted.
    let listing = web.store.list().await?;
    let mut body = super::api::listing_body(listing, Scope::whole_share(), &metrics);
    let mut pages = 0;
    while let Some(frame) = body.frame().await {
        assert!(frame?.is_data());
        pages += 1;
    }
    assert!(pages > 2);
    drop(body);
    assert_eq!(in_flight(), (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_confined_access_sees_its_folder_as_the_whole_share() -> TestResult {
    let alice = As::Token(Permissions::ALL, Scope::parse("alice")?);
    let web = start(alice, StoreConfig::default()).await?;
    let secret = b"outside the folder";
    for (name, body) in [("bob/secret", &secret[..]), ("alice/mine", b"inside")] {
        put_direct(&web, name, body).await?;
    }
    let files = call(&web, "GET", "/api/files", &[], b"").await?.json();
    assert_eq!(files.as_array().map(Vec::len), Some(1));
    assert_eq!(files[0]["name"], "mine");
    assert_eq!(
        &call(&web, "GET", "/files/mine", &[], b"").await?.body[..],
        b"inside"
    );
    // The id of a file outside is unknown, for every verb, rather than "not allowed".
    let outside = md5(secret).to_hex();
    for method in ["GET", "DELETE"] {
        let r = call(&web, method, &format!("/files/{outside}"), &[], b"").await?;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
    }
    let body = format!(r#"{{"from":"{outside}","to":"stolen"}}"#);
    let r = call(
        &web,
        "POST",
        "/api/rename",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&web, "GET", "/files/..%2Fbob%2Fsecret", &[], b"")
            .await?
            .status,
        StatusCode::BAD_REQUEST
    );
    // An upload lands inside the folder.
    assert_eq!(
        call(&web, "PUT", "/files/new", &[], b"n").await?.json()["name"],
        "new"
    );
    let all: Vec<_> = web
        .store
        .list()
        .await?
        .entries()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(all, ["alice/mine", "alice/new", "bob/secret"]);
    Ok(())
}

#[tokio::test]
async fn tls_uses_the_servers_identity() -> TestResult {
    use crate::security::identity::Identity;
    use crate::security::tls::{Expectation, client_config, server_config};
    let identity = Identity::generate()?;
    let fingerprint = identity.fingerprint();
    let store = Store::new(
        Arc::new(MemoryBackend::new(1 << 20)),
        StoreConfig::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let gw = Gateway::new(
        store,
        anyone(),
        WebConfig::default(),
        Some(fingerprint.to_string()),
    );
    tokio::spawn(super::run(
        listener,
        Some(server_config(&identity)?),
        gw,
        stop.clone(),
    ));

    let (config, _) = client_config(Expectation::Pinned(fingerprint))?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector
        .connect(rustls::pki_types::ServerName::try_from("barge")?, tcp)
        .await?;
    let req = Request::get("/api/me")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))?;
    let me = call_on(tls, req).await?;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["fingerprint"], fingerprint.to_string().as_str());

    // Another identity on the same address is refused by the pinned client.
    let (other, _) = client_config(Expectation::Pinned(Identity::generate()?.fingerprint()))?;
    let mut other = (*other).clone();
    other.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let refused = tokio_rustls::TlsConnector::from(Arc::new(other))
        .connect(rustls::pki_types::ServerName::try_from("barge")?, tcp)
        .await;
    assert!(refused.is_err());

    // HTTP/1.1 is chosen whenever the client offers it, in whatever order (browsers and curl
    // put `h2` first); a client that speaks only HTTP/2 still gets it, and is served.
    for (offered, chosen) in [
        (&[&b"h2"[..], b"http/1.1"][..], &b"http/1.1"[..]),
        (&[&b"http/1.1"[..], b"h2"][..], b"http/1.1"),
        (&[&b"h2"[..]][..], b"h2"),
    ] {
        let (config, _) = client_config(Expectation::Pinned(fingerprint))?;
        let mut config = (*config).clone();
        config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("barge")?, tcp)
            .await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(chosen));
        if chosen == b"h2" {
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await?;
            tokio::spawn(conn);
            let req =
                Request::get(format!("https://{addr}/api/me")).body(Full::new(Bytes::new()))?;
            assert_eq!(send.send_request(req).await?.status(), StatusCode::OK);
        }
    }
    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn every_error_is_json_with_its_status() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    let json = [("content-type", "application/json")];
    /// Method, path, headers, body; the status and a word of the error.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [u8],
        StatusCode,
        &'a str,
    );
    let cases: [Case; 6] = [
        (
            "POST",
            "/api/rename",
            &json,
            b"notjson",
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            "POST",
            "/api/rename",
            &json,
            br#"{"from":"a"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "to",
        ),
        (
            "POST",
            "/api/rename",
            &[],
            br#"{"from":"a","to":"b"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            "GET",
            "/files/%FF",
            &[],
            b"",
            StatusCode::BAD_REQUEST,
            "UTF-8",
        ),
        (
            "GET",
            "/no/such/route",
            &[],
            b"",
            StatusCode::NOT_FOUND,
            "Not Found",
        ),
        (
            "PATCH",
            "/files/a",
            &[],
            b"",
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        ),
    ];
    for (method, path, headers, body, status, says) in cases {
        let r = call(&web, method, path, headers, body).await?;
        assert_eq!(r.status, status, "{method} {path}");
        assert_eq!(
            r.header("content-type"),
            "application/json",
            "{method} {path}"
        );
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{method} {path}: {error}");
    }
    // A 405 still says which methods the route takes.
    let r = call(&web, "PATCH", "/files/a", &[], b"").await?;
    assert!(r.header("allow").contains("GET"), "{:?}", r.headers);
    Ok(())
}

#[tokio::test]
async fn an_http2_connection_runs_one_request_at_a_time() -> TestResult {
    use std::time::Duration;
    let web = start(As::Anyone, StoreConfig::default()).await?;
    put_direct(&web, "big", &data(8 << 20)).await?;
    let tcp = TcpStream::connect(web.addr).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", web.addr)).body(Full::new(Bytes::new()))
    };
    // A download whose body is not read holds the connection's one stream...
    let first = send.send_request(get("/files/big")?).await?;
    assert_eq!(first.status(), StatusCode::OK);
    let second = tokio::time::timeout(Duration::from_secs(1), send.send_request(get("/api/me")?));
    assert!(
        second.await.is_err(),
        "a second request ran beside the first"
    );
    // ... until it is given up.
    drop(first);
    let third =
        tokio::time::timeout(Duration::from_secs(10), send.send_request(get("/api/me")?)).await??;
    assert_eq!(third.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn the_page_lists_a_folder_without_script_and_escapes_every_name() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    let hostile = "<img src=x onerror=alert(1)>&\"'.txt";
    let path = format!(
        "/files/docs/{}",
        percent_encoding::utf8_percent_encode(hostile, percent_encoding::NON_ALPHANUMERIC)
    );
    assert_eq!(
        call(&web, "PUT", &path, &[], b"x").await?.status,
        StatusCode::CREATED
    );
    call(&web, "PUT", "/files/top.txt", &[], b"top").await?;

    let top = call(&web, "GET", "/", &[], b"").await?;
    let html = String::from_utf8_lossy(&top.body);
    assert!(
        html.contains(r#"href="/?folder=docs%2F">docs</a>"#),
        "{html}"
    );
    assert!(html.contains(r#"<a href="/files/top%2Etxt" download="top.txt">top.txt</a>"#));

    let docs = call(&web, "GET", "/?folder=docs/", &[], b"").await?;
    let html = String::from_utf8_lossy(&docs.body);
    assert!(!html.contains("<img"), "a name became markup: {html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;&amp;"),
        "{html}"
    );
    assert!(
        !html.contains("top.txt"),
        "a file of another folder is shown"
    );
    assert!(html.contains(r#"/ <a href="/?folder=docs%2F">docs</a>"#));
    Ok(())
}

#[tokio::test]
async fn the_rendered_page_holds_a_bounded_share_of_a_large_folder_and_says_so() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    // Rows of about 2.8 KiB (names of 200 `&`, escaped in three places): 1,200 of them are
    // far past the page's budget. Three sub-folders sort first ('/' < '0' in no name here:
    // `a/`, `b/`, `c/` begin with letters) and are summed whole.
    let long = |i: usize| format!("{i:04}{}", "&".repeat(200));
    for i in 0..1200 {
        put_direct(&web, &format!("z{}", long(i)), b"f").await?;
    }
    for (folder, n) in [("a", 3), ("b", 1), ("c", 2)] {
        for i in 0..n {
            put_direct(&web, &format!("{folder}/{i}"), b"in").await?;
        }
    }
    let top = call(&web, "GET", "/", &[], b"").await?;
    assert_eq!(top.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&top.body);
    let rows = html.matches("<tr>").count();
    let shown = rows - 3 - 1; // the folders and the table's head
    assert!(
        html.contains(">3 files<") && html.contains(">1 file<"),
        "{html}"
    );
    assert!(shown > 50 && shown < 1200, "{shown} files rendered");
    let note = format!(
        "This page shows 3 of 3 folders and {shown} of 1200 files here; with JavaScript on, \
         it lists them all."
    );
    assert!(
        html.contains(&note),
        "no note of what is left out: {}",
        &html[html.len() - 2000..]
    );
    assert!(top.body.len() < super::page::ROWS_BYTES + 32 * 1024);
    // The first files in name order, the folders before them.
    let at = |what: &str| html.find(what).unwrap_or(usize::MAX);
    assert!(at(">c</a>") < at(&format!(">z0000{}<", "&amp;".repeat(200))));
    assert!(!html.contains("z1199"));
    // A folder that fits is shown whole, without a note.
    let a = call(&web, "GET", "/?folder=a/", &[], b"").await?;
    let html = String::from_utf8_lossy(&a.body);
    assert_eq!(html.matches("<tr>").count(), 3 + 1);
    assert!(!html.contains("This page shows"));
    Ok(())
}

#[tokio::test]
async fn other_sites_and_rebound_names_are_refused() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    let own = format!("http://{}", web.addr);
    let evil = [("origin", "https://evil.example")];
    assert_eq!(
        call(&web, "PUT", "/files/x", &evil, b"x").await?.status,
        StatusCode::FORBIDDEN
    );
    let cross = [("sec-fetch-site", "cross-site")];
    assert_eq!(
        call(&web, "PUT", "/files/x", &cross, b"x").await?.status,
        StatusCode::FORBIDDEN
    );
    assert!(web.store.list().await?.entries().is_empty());
    let same = [("origin", own.as_str()), ("sec-fetch-site", "same-origin")];
    assert_eq!(
        call(&web, "PUT", "/files/x", &same, b"x").await?.status,
        StatusCode::CREATED
    );
    for (method, path) in [("DELETE", "/files/x"), ("POST", "/api/rename")] {
        let r = call(&web, method, path, &evil, br#"{"from":"x","to":"y"}"#).await?;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}");
    }
    // A name made to resolve to loopback (DNS rebinding) gets nothing, not even a listing.
    let mut s = TcpStream::connect(web.addr).await?;
    s.write_all(b"GET /api/files HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await?;
    assert!(out.starts_with("HTTP/1.1 421"), "{out}");
    assert!(!out.contains("\"x\""));
    Ok(())
}

#[tokio::test]
async fn hostile_paths_lengths_and_headers_change_nothing() -> TestResult {
    let web = start(As::Anyone, StoreConfig::default()).await?;
    for path in [
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/files/%2e%2e/x",
        "/files/a/%2E%2E/%2E%2E/x",
        "/files/a%5C..%5Cb",
        "/files/.barge%2Findex.redb",
        "/files/.BARGE/x",
        "/files/a//b",
        "/files/%00",
    ] {
        for method in ["PUT", "GET", "DELETE"] {
            let r = call(&web, method, path, &[], b"x").await?;
            assert!(
                matches!(r.status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND),
                "{method} {path}: {}",
                r.status
            );
        }
        let body = format!(
            r#"{{"from":"{0}","to":"{0}"}}"#,
            path.trim_start_matches("/files/")
        );
        let r = call(
            &web,
            "POST",
            "/api/rename",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await?;
        assert!(r.status.is_client_error(), "rename {path}");
    }
    // A length that lies low: exactly the announced bytes are stored; the rest is a bad request.
    let mut s = TcpStream::connect(web.addr).await?;
    s.write_all(b"PUT /files/short HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 3\r\n\r\nabcdef")
        .await?;
    let mut out = vec![0; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut s, &mut out).await?;
    assert!(String::from_utf8_lossy(&out[..n]).starts_with("HTTP/1.1 201"));
    drop(s);
    assert_eq!(
        &call(&web, "GET", "/files/short", &[], b"").await?.body[..],
        b"abc"
    );
    // Headers over hyper's limit are refused before any route runs.
    let huge = "a".repeat(1 << 20);
    let mut s = TcpStream::connect(web.addr).await?;
    let head = format!(
        "PUT /files/huge HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {huge}\r\ncontent-length: 1\r\n\r\nx"
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let names: Vec<_> = web
        .store
        .list()
        .await?
        .entries()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(names, ["short"]);
    Ok(())
}

#[tokio::test]
async fn a_stalled_upload_is_abandoned_and_kept_nowhere() -> TestResult {
    let store = Store::new(
        Arc::new(MemoryBackend::new(1 << 30)),
        StoreConfig::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let config = WebConfig {
        stall_timeout: std::time::Duration::from_millis(300),
        ..WebConfig::default()
    };
    let gw = Gateway::new(Arc::clone(&store), anyone(), config, None);
    tokio::spawn(super::run(listener, None, gw, stop.clone()));
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"PUT /files/slow HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 500000\r\n\r\n")
        .await?;
    s.write_all(&data(200_000)).await?;
    let mut out = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out);
    tokio::time::timeout(std::time::Duration::from_secs(10), read).await??;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(store.list().await?.entries().is_empty());
    stop.cancel();
    Ok(())
}

/// A gateway whose server has the user alice (password "correct horse") and no anonymous access.
async fn start_with_alice() -> Result<Web, Box<dyn std::error::Error + Send + Sync>> {
    let mut web = start(
        As::Token(Permissions::READ_ONLY, Scope::whole_share()),
        StoreConfig::default(),
    )
    .await?;
    let dir = web._state.as_ref().ok_or("no state folder")?;
    Users::open(dir.path())?.add_user(
        "alice",
        "correct horse",
        Permissions::ALL,
        &Scope::whole_share(),
    )?;
    web.token = None;
    Ok(web)
}

fn cookie_of(a: &Answer) -> String {
    a.header("set-cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_browser_logs_in_with_a_cookie_and_proves_its_page_with_the_csrf_token() -> TestResult {
    let web = start_with_alice().await?;
    let json = [("content-type", "application/json")];
    assert_eq!(
        call(&web, "GET", "/api/files", &[], b"").await?.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&web, "PUT", "/files/x", &[], b"x").await?.status,
        StatusCode::UNAUTHORIZED
    );
    let me = call(&web, "GET", "/api/me", &[], b"").await?.json();
    assert_eq!(
        (me["principal"].is_null(), me["logins"].as_bool()),
        (true, Some(true))
    );
    let page = call(&web, "GET", "/", &[], b"").await?;
    assert!(String::from_utf8_lossy(&page.body).contains("Log in to see the files."));

    let wrong = call(
        &web,
        "POST",
        "/api/login",
        &json,
        br#"{"user":"alice","password":"wrong"}"#,
    )
    .await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("set-cookie").is_empty());

    let ok = call(
        &web,
        "POST",
        "/api/login",
        &json,
        br#"{"user":"alice","password":"correct horse"}"#,
    )
    .await?;
    assert_eq!(ok.status, StatusCode::OK);
    let set = ok.header("set-cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = cookie_of(&ok);
    let with = [("cookie", cookie.as_str())];
    let me = call(&web, "GET", "/api/me", &with, b"").await?.json();
    assert_eq!(me["principal"], "alice");
    let csrf = me["csrf"].as_str().ok_or("no csrf token")?.to_owned();
    assert_eq!(
        call(&web, "GET", "/api/files", &with, b"").await?.status,
        StatusCode::OK
    );

    // A change with the cookie alone (what a forged request would carry) is refused.
    assert_eq!(
        call(&web, "PUT", "/files/x", &with, b"x").await?.status,
        StatusCode::FORBIDDEN
    );
    let bad = [("cookie", cookie.as_str()), ("x-barge-csrf", "not-it")];
    assert_eq!(
        call(&web, "PUT", "/files/x", &bad, b"x").await?.status,
        StatusCode::FORBIDDEN
    );
    let good = [("cookie", cookie.as_str()), ("x-barge-csrf", csrf.as_str())];
    assert_eq!(
        call(&web, "PUT", "/files/x", &good, b"x").await?.status,
        StatusCode::CREATED
    );

    // After logging out the cookie is worth nothing.
    let out = call(&web, "POST", "/api/logout", &with, b"").await?;
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(
        call(&web, "GET", "/api/files", &with, b"").await?.status,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}

#[tokio::test]
async fn a_link_with_a_token_opens_the_page_logged_in() -> TestResult {
    let mut web = start(
        As::Token(Permissions::READ_ONLY, Scope::whole_share()),
        StoreConfig::default(),
    )
    .await?;
    let token = web.token.take().ok_or("no token")?;
    let link = call(&web, "GET", &format!("/login?token={token}"), &[], b"").await?;
    assert_eq!(link.status, StatusCode::SEE_OTHER);
    assert_eq!(link.header("location"), "/");
    let cookie = cookie_of(&link);
    let me = call(&web, "GET", "/api/me", &[("cookie", cookie.as_str())], b"")
        .await?
        .json();
    assert_eq!(
        (me["get"].as_bool(), me["put"].as_bool()),
        (Some(true), Some(false))
    );
    let wrong = call(&web, "GET", "/login?token=barge_wrong", &[], b"").await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("set-cookie").is_empty());
    // A wrong bearer token is refused, not taken as anonymous.
    let r = call(
        &web,
        "GET",
        "/api/files",
        &[("authorization", "Bearer barge_nope")],
        b"",
    )
    .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn fixes_from_the_attack_session() -> TestResult {
    // Any Authorization that is not a usable bearer token is refused, never anonymous.
    let web = start(As::Anyone, StoreConfig::default()).await?;
    for bad in ["bearer barge_wrong", "Basic YWxpY2U6eA==", "Bearer"] {
        let r = call(&web, "PUT", "/files/x", &[("authorization", bad)], b"x").await?;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    // A file name holding a template key is shown as it is, never expanded.
    let name = "%7B%7Bfingerprint%7D%7D%7B%7Brows%7D%7D.txt";
    assert_eq!(
        call(&web, "PUT", &format!("/files/{name}"), &[], b"x")
            .await?
            .status,
        StatusCode::CREATED
    );
    let page = call(&web, "GET", "/?folder=%7B%7Brows%7D%7D", &[], b"").await?;
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("{{rows}}"), "{html}");
    let top = String::from_utf8_lossy(&call(&web, "GET", "/", &[], b"").await?.body).into_owned();
    assert!(top.contains("{{fingerprint}}{{rows}}.txt</a>"), "{top}");

    // A confined token: refusals name files as it sees them, and no link from another site logs in.
    let mut bob = start(
        As::Token(Permissions::ALL, Scope::parse("team/bob")?),
        StoreConfig::default(),
    )
    .await?;
    assert_eq!(
        call(&bob, "PUT", "/files/b.txt", &[], b"1").await?.status,
        StatusCode::CREATED
    );
    let again = call(&bob, "PUT", "/files/b.txt", &[], b"2").await?;
    let text = again.json()["error"].as_str().unwrap_or("").to_owned();
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(text.contains("b.txt") && !text.contains("team/"), "{text}");
    let gone = call(&bob, "DELETE", "/files/nothere.txt", &[], b"").await?;
    assert!(
        !gone.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("team/")
    );
    let token = bob.token.take().ok_or("no token")?;
    let cross = [("sec-fetch-site", "cross-site")];
    let r = call(&bob, "GET", &format!("/login?token={token}"), &cross, b"").await?;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("set-cookie").is_empty());
    Ok(())
}

/// An anonymous gateway over a memory store with `config`.
async fn start_with(config: WebConfig) -> Result<Web, Box<dyn std::error::Error + Send + Sync>> {
    let store = Store::new(
        Arc::new(MemoryBackend::new(1 << 30)),
        StoreConfig::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let gw = Gateway::new(Arc::clone(&store), anyone(), config, None);
    tokio::spawn(super::run(listener, None, gw, stop.clone()));
    Ok(Web {
        addr,
        store,
        stop,
        token: None,
        _state: None,
    })
}

/// A connection to `to` from the loopback address `from` (all of 127/8 is loopback on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Whether the server closes `s` within `limit` (reads until the end, dropping what comes).
async fn closed_within(s: &mut TcpStream, limit: std::time::Duration) -> bool {
    let mut sink = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(s, &mut sink);
    matches!(tokio::time::timeout(limit, read).await, Ok(Ok(_) | Err(_)))
}

#[tokio::test]
async fn idle_connections_are_closed_and_cannot_shut_others_out() -> TestResult {
    use std::time::Duration;
    let web = start_with(WebConfig {
        max_connections: 6,
        max_connections_per_ip: 3,
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        ..WebConfig::default()
    })
    .await?;
    // One host opens its three connections and sends nothing; a fourth is closed at once.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from([127, 0, 0, 2], web.addr).await?);
    }
    let mut fourth = connect_from([127, 0, 0, 2], web.addr).await?;
    assert!(
        closed_within(&mut fourth, Duration::from_millis(300)).await,
        "one address may hold only its share of the slots"
    );
    // Another client is still served meanwhile.
    let other = connect_from([127, 0, 0, 3], web.addr).await?;
    let req = Request::get("/api/files")
        .header("host", web.addr.to_string())
        .body(Full::new(Bytes::new()))?;
    assert_eq!(call_on(other, req).await?.status, StatusCode::OK);
    // A keep-alive connection after one request, and an HTTP/2 one that only said hello, go
    // idle too.
    let mut kept = connect_from([127, 0, 0, 4], web.addr).await?;
    kept.write_all(b"GET /api/files HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut h2 = connect_from([127, 0, 0, 4], web.addr).await?;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await?;
    idle.push(kept);
    idle.push(h2);
    // The global limit is now full (3 + 2 + the one served, closed or not)...
    // ...and every idle connection is closed by its deadline, well before hyper's 30 s.
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "an idle connection was left open"
        );
    }
    // Their slots are back: the same host is served again.
    let again = connect_from([127, 0, 0, 2], web.addr).await?;
    let req = Request::get("/api/files")
        .header("host", web.addr.to_string())
        .body(Full::new(Bytes::new()))?;
    assert_eq!(call_on(again, req).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn a_trickled_upload_is_cut_by_the_minimum_rate() -> TestResult {
    use std::time::Duration;
    let web = start_with(WebConfig {
        stall_timeout: Duration::from_secs(1),
        min_rate: 10_000,
        ..WebConfig::default()
    })
    .await?;
    let mut s = TcpStream::connect(web.addr).await?;
    s.write_all(
        b"PUT /files/trickle HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000000\r\n\r\n",
    )
    .await?;
    let (mut rx, mut tx) = s.into_split();
    // 100 bytes every 100 ms: never silent for long, but 1 KB/s against a minimum of 10 KB/s.
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if tx.write_all(&[b'x'; 100]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut out = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut out);
    // A reset after the answer is fine: what matters is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(4), read).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("minimum of 10000 bytes per second"), "{text}");
    assert!(web.store.list().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn removing_a_user_ends_its_web_sessions_and_new_rights_apply_at_once() -> TestResult {
    let web = start_with_alice().await?;
    let dir = web
        ._state
        .as_ref()
        .ok_or("no state folder")?
        .path()
        .to_owned();
    let admin = Users::open(&dir)?;
    admin.add_user("bob", "bob's pw", Permissions::ALL, &Scope::whole_share())?;
    let json = [("content-type", "application/json")];
    let mut cookies = Vec::new();
    for body in [
        &br#"{"user":"alice","password":"correct horse"}"#[..],
        br#"{"user":"bob","password":"bob's pw"}"#,
    ] {
        let ok = call(&web, "POST", "/api/login", &json, body).await?;
        assert_eq!(ok.status, StatusCode::OK);
        cookies.push(cookie_of(&ok));
    }
    let get = async |cookie: &str| -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
        Ok(call(&web, "GET", "/api/files", &[("cookie", cookie)], b"")
            .await?
            .status)
    };
    assert_eq!(get(&cookies[0]).await?, StatusCode::OK);
    assert_eq!(get(&cookies[1]).await?, StatusCode::OK);
    // `barge user remove alice` (another handle on the same file, as the CLI is another
    // process): her session ends with the next request; bob's goes on.
    assert!(admin.remove_user("alice")?);
    assert_eq!(get(&cookies[0]).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&cookies[1]).await?, StatusCode::OK);
    // Added again with the same name: the old cookie stays dead (a new credential).
    admin.add_user(
        "alice",
        "correct horse",
        Permissions::ALL,
        &Scope::whole_share(),
    )?;
    assert_eq!(get(&cookies[0]).await?, StatusCode::UNAUTHORIZED);
    // A new password for bob ends his session too.
    admin.set_password("bob", "another pw")?;
    assert_eq!(get(&cookies[1]).await?, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn a_download_cut_mid_body_is_logged_as_aborted_with_the_bytes_sent() -> TestResult {
    use tokio::io::AsyncReadExt as _;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let web = start_with(WebConfig {
        metrics: Arc::clone(&metrics),
        ..WebConfig::default()
    })
    .await?;
    let big = data(8 << 20);
    let put = call(&web, "PUT", "/files/big", &[], &big).await?;
    assert_eq!(put.status, StatusCode::CREATED);
    // One whole download, then one the client walks away from after a little.
    let whole = call(&web, "GET", "/files/big", &[], b"").await?;
    assert_eq!(whole.body.len(), big.len());
    let mut s = TcpStream::connect(web.addr).await?;
    s.write_all(b"GET /files/big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut some = vec![0u8; 64 * 1024];
    s.read_exact(&mut some).await?;
    drop(s);
    let want = r#"barge_transfers_total{direction="download",outcome="aborted"} 1"#;
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics.encode();
        if text.contains(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(text.contains(want), "{text}");
    assert!(
        text.contains(r#"barge_transfers_total{direction="download",outcome="ok"} 1"#),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_reported_mismatch_is_counted() -> TestResult {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let web = start_with(WebConfig {
        metrics: Arc::clone(&metrics),
        ..WebConfig::default()
    })
    .await?;
    let json = [("content-type", "application/json")];
    let noted = call(&web, "POST", "/api/mismatch", &json, br#"{"name":"a.txt"}"#).await?;
    assert_eq!(noted.status, StatusCode::NO_CONTENT);
    let bad = call(&web, "POST", "/api/mismatch", &json, br#"{"name":"../x"}"#).await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let text = metrics.encode();
    assert!(text.contains("barge_md5_mismatches_total 1"), "{text}");
    Ok(())
}

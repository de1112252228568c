//! The web gateway and the TCP protocol on one store: a file uploaded on one side is listed
//! with the same id on the other, the `ETag` is the id `LIST_FILES` shows, and a download
//! interrupted and resumed by `curl -C -` ends with the right MD5.

use std::process::Command;
use std::sync::Arc;

use barge::web::{self, Gateway, WebConfig};
use tokio_util::sync::CancellationToken;

use crate::common::{TestResult, TestServer, md5_hex};
use crate::support::Noise;

/// Starts the web gateway (plain HTTP) on `server`'s store; returns its base URL.
async fn web_on(server: &TestServer, stop: &CancellationToken) -> TestResult<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let policy = Arc::new(barge::server::Access::default());
    let gateway = Gateway::new(
        Arc::clone(&server.store),
        policy,
        WebConfig::default(),
        None,
    );
    tokio::spawn(web::run(listener, None, gateway, stop.clone()));
    Ok(format!("http://{addr}"))
}

/// Runs curl with `args` (off the runtime's threads); returns its stdout.
async fn curl(args: Vec<String>) -> TestResult<Vec<u8>> {
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--max-time", "20"])
            .args(&args)
            .output()
    })
    .await??;
    if !out.status.success() {
        return Err(format!("curl {shown}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_see_the_same_files_with_the_same_ids() -> TestResult {
    let server = TestServer::start().await?;
    let stop = CancellationToken::new();
    let base = web_on(&server, &stop).await?;
    let work = tempfile::tempdir()?;

    // TCP up, web down.
    let tcp_body = Noise::new(7).bytes(700_000);
    let mut raw = server.raw().await?;
    raw.upload("from tcp.bin", &tcp_body).await?;
    let listed = raw.list().await?;
    let (tcp_id, _, _) = listed.first().cloned().ok_or("nothing listed")?;
    assert_eq!(tcp_id, md5_hex(&tcp_body));
    let head = curl(vec!["-I".into(), format!("{base}/files/from%20tcp.bin")]).await?;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.contains(&format!("etag: \"{tcp_id}\"")), "{head}");
    let got = curl(vec![format!("{base}/files/from%20tcp.bin")]).await?;
    assert!(got == tcp_body, "the web download differs");

    // Web up, TCP down: the id the gateway answers is the one LIST_FILES shows.
    let web_body = Noise::new(8).bytes(300_001);
    let path = work.path().join("up.bin");
    std::fs::write(&path, &web_body)?;
    let answer = curl(vec![
        "-T".into(),
        path.display().to_string(),
        format!("{base}/files/web/up.bin"),
    ])
    .await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    assert_eq!(answer["id"], md5_hex(&web_body).as_str());
    let listed = raw.list().await?;
    assert!(
        listed.iter().any(|(id, name, size)| name == "web/up.bin"
            && *id == md5_hex(&web_body)
            && *size == 300_001),
        "{listed:?}"
    );
    let (_, bytes) = raw.download("web/up.bin").await?;
    assert!(bytes == web_body);

    // The JSON listing has the shape of `barge ls --json` and the same ids.
    let json = curl(vec![format!("{base}/api/files")]).await?;
    let json: Vec<serde_json::Value> = serde_json::from_slice(&json)?;
    let ids: Vec<_> = json
        .iter()
        .map(|f| f["id"].as_str().unwrap_or(""))
        .collect();
    let tcp_ids: Vec<_> = listed.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, tcp_ids);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_resumes_an_interrupted_download_to_the_right_md5() -> TestResult {
    let server = TestServer::start().await?;
    let stop = CancellationToken::new();
    let base = web_on(&server, &stop).await?;
    let body = Noise::new(9).bytes(3_000_000);
    let id = server.raw().await?.upload("big.bin", &body).await?;
    assert_eq!(id, md5_hex(&body));

    // What an interrupted download leaves: the first part of the file.
    let work = tempfile::tempdir()?;
    let out = work.path().join("big.bin");
    std::fs::write(&out, &body[..1_234_567])?;
    curl(vec![
        "-C".into(),
        "-".into(),
        "-o".into(),
        out.display().to_string(),
        format!("{base}/files/big.bin"),
    ])
    .await?;
    assert_eq!(md5_hex(&std::fs::read(&out)?), id);
    stop.cancel();
    Ok(())
}

//! The TLS accept step: the whole dialogue inside TLS 1.3 with the server's pinned identity, a
//! man in the middle refused before a byte of the protocol moves, and each wrong mode named.

use std::time::Duration;

use barge::security::identity::{Fingerprint, Identity};
use barge::security::tls::{self, Expectation};
use barge::server::{ServerConfig, Tls};
use barge::store::StoreConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::{TestResult, TestServer, WAIT, md5_hex};

async fn tls_server() -> TestResult<(TestServer, Fingerprint)> {
    let identity = Identity::generate()?;
    let fingerprint = identity.fingerprint();
    let acceptor = Tls::new(tls::server_config(&identity)?);
    let server = TestServer::start_accepting(
        tempfile::tempdir()?,
        StoreConfig::default(),
        ServerConfig::default(),
        acceptor,
    )
    .await?;
    Ok((server, fingerprint))
}

async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> TestResult<String> {
    let mut s = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut s)).await??;
    Ok(s.trim_end_matches('\n').to_owned())
}

#[tokio::test]
async fn the_whole_dialogue_runs_inside_tls_with_the_pinned_identity() -> TestResult {
    let (server, fingerprint) = tls_server().await?;
    let (config, presented) = tls::client_config(Expectation::Pinned(fingerprint))?;
    let tcp = TcpStream::connect(server.addr).await?;
    let stream = tokio::time::timeout(WAIT, tls::connect(config, tcp)).await??;
    assert_eq!(presented.get(), Some(fingerprint));
    let mut c = BufReader::new(stream);
    assert_eq!(line(&mut c).await?, "220 barge/1 ready");
    let body = vec![42u8; 300 * 1024];
    c.get_mut()
        .write_all(format!("UPLOAD big.bin;{}\n", body.len()).as_bytes())
        .await?;
    assert!(line(&mut c).await?.starts_with("350 "));
    c.get_mut().write_all(&body).await?;
    let stored = line(&mut c).await?;
    assert_eq!(stored, format!("226 {} Upload complete", md5_hex(&body)));
    c.get_mut().write_all(b"DOWNLOAD big.bin\n").await?;
    let header = line(&mut c).await?;
    assert!(
        header.starts_with(&format!("213 {} ", body.len())),
        "{header}"
    );
    let mut got = vec![0u8; body.len()];
    tokio::time::timeout(WAIT, c.read_exact(&mut got)).await??;
    assert_eq!(got, body);
    c.get_mut().write_all(b"BYE\n").await?;
    assert_eq!(line(&mut c).await?, "221 Bye");
    Ok(())
}

#[tokio::test]
async fn a_man_in_the_middle_with_another_identity_is_refused_before_any_command() -> TestResult {
    let (server, _) = tls_server().await?;
    // The client pinned some other server's key: this one is an impostor to it.
    let pinned = Identity::generate()?.fingerprint();
    let (config, presented) = tls::client_config(Expectation::Pinned(pinned))?;
    let tcp = TcpStream::connect(server.addr).await?;
    let refused = tokio::time::timeout(WAIT, tls::connect(config, tcp)).await?;
    assert!(refused.is_err(), "the handshake went through");
    assert_ne!(presented.get(), Some(pinned));
    assert!(presented.get().is_some(), "the key it saw is reported");
    // Nothing was uploaded or changed.
    assert_eq!(std::fs::read_dir(server.root())?.count(), 1, "only .barge");
    Ok(())
}

#[tokio::test]
async fn a_plain_client_is_told_the_server_expects_tls() -> TestResult {
    let (server, _) = tls_server().await?;
    let mut tcp = TcpStream::connect(server.addr).await?;
    tcp.write_all(b"LIST_FILES\n").await?;
    let mut r = BufReader::new(tcp);
    let reply = line(&mut r).await?;
    assert!(reply.starts_with("400 This server expects TLS"), "{reply}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut rest)).await??;
    assert_eq!(n, 0, "closed after the refusal");
    Ok(())
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() -> TestResult {
    let identity = Identity::generate()?;
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = TestServer::start_accepting(
        tempfile::tempdir()?,
        StoreConfig::default(),
        config,
        Tls::new(tls::server_config(&identity)?),
    )
    .await?;
    let mut tcp = TcpStream::connect(server.addr).await?;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await??;
    assert_eq!(n, 0);
    Ok(())
}

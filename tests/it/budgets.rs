//! Resource budgets (issue 10): one client, or one address, cannot take the server from the
//! others by holding connections, trickling a line, or trickling a body.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use barge::server::ServerConfig;
use barge::store::StoreConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{TestResult, TestServer, WAIT};
use crate::support::assert_code;

/// Connects from a chosen loopback source address and returns the first line.
async fn connect_from(
    source: &str,
    server: SocketAddr,
) -> TestResult<(BufReader<TcpStream>, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let stream = tokio::time::timeout(WAIT, socket.connect(server)).await??;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line)).await??;
    Ok((r, line.trim_end().to_owned()))
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() -> TestResult {
    let config = ServerConfig {
        max_connections_per_ip: 3,
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, first) = connect_from("127.0.0.1", server.addr).await?;
        assert_eq!(first, "220 barge/1 ready");
        held.push(c);
    }
    let (_, fourth) = connect_from("127.0.0.1", server.addr).await?;
    assert_code(&fourth, 503);
    // Another address (still loopback) is served as usual.
    let (_, other) = connect_from("127.0.0.2", server.addr).await?;
    assert_eq!(other, "220 barge/1 ready");
    // A connection that ends gives its slot back.
    let mut first = held.remove(0);
    first.get_mut().write_all(b"BYE\n").await?;
    let mut bye = String::new();
    first.read_line(&mut bye).await?;
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, line) = connect_from("127.0.0.1", server.addr).await?;
        if line == "220 barge/1 ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot never came back: {line}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A partial line trickled a byte at a time does not outlive the idle timeout.
#[tokio::test]
async fn a_trickled_line_still_hits_the_idle_timeout() -> TestResult {
    let config = ServerConfig {
        idle_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut c = server.raw().await?;
    let started = Instant::now();
    let trickle = async {
        for b in b"LIST_FILES_AND_MORE_AND_MORE".iter().cycle() {
            if c.writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), trickle).await;
    let reply = c.line().await?;
    assert_code(&reply, 408);
    assert!(c.closed().await?);
    assert!(started.elapsed() < Duration::from_secs(6));
    Ok(())
}

/// An upload body trickled just fast enough to dodge the stall timeout is cut off by the
/// minimum rate, and the name (and the space reserved for it) is free again.
#[tokio::test]
async fn a_trickled_upload_is_cut_by_the_minimum_rate() -> TestResult {
    let server = rate_limited_server().await?;
    let mut c = server.raw().await?;
    assert_code(&c.cmd("UPLOAD hog.bin;100000000").await?, 350);
    let started = Instant::now();
    let trickle = async {
        // One byte every 300 ms: never silent for the 1 s stall timeout.
        loop {
            if c.writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), trickle).await;
    assert!(c.closed().await?, "the connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The name is free again for someone else.
    let mut other = server.raw().await?;
    other.upload("hog.bin", b"real").await?;
    Ok(())
}

/// A client that keeps a steady, fast enough pace is never cut, whatever the window.
#[tokio::test]
async fn a_steady_upload_above_the_minimum_rate_goes_through() -> TestResult {
    let server = rate_limited_server().await?;
    let mut c = server.raw().await?;
    let body = vec![7u8; 40 * 1024];
    assert_code(
        &c.cmd(&format!("UPLOAD steady.bin;{}", body.len())).await?,
        350,
    );
    // 4 KiB every 200 ms = 20 KiB/s for 2 s: several windows, each well above 1 KiB/s.
    for piece in body.chunks(4096) {
        c.writer.write_all(piece).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_code(&c.line().await?, 226);
    Ok(())
}

/// A server with a 1 s stall timeout and a minimum body rate of 1 KiB/s.
async fn rate_limited_server() -> TestResult<TestServer> {
    let config = ServerConfig {
        stall_timeout: Duration::from_secs(1),
        min_rate: 1024,
        ..ServerConfig::default()
    };
    TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await
}

//! Deviations from PROTOCOL.md that an independent implementation of the spec found (issue 8);
//! each test failed on the server before its fix.

use std::time::Duration;

use barge::server::ServerConfig;
use barge::store::StoreConfig;

use crate::common::{Raw, TestResult, TestServer};
use crate::support::assert_code;

/// `PUT name;SIZE` over `--max-file-size` is answered `413` and closed at once, even on a
/// read-only server (which used to wait for the body, then time out without a reply).
#[tokio::test]
async fn put_over_the_limit_on_a_read_only_server_gets_413_and_a_close() -> TestResult {
    let store = StoreConfig {
        read_only: true,
        max_file_size: 100,
        ..StoreConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, store, ServerConfig::default()).await?;
    for line in ["PUT big.bin;1000\n", "PUT ../bad;1000\n"] {
        let mut c = server.raw().await?;
        c.send(line).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), c.line()).await??;
        assert_code(&reply, 413);
        assert!(c.closed().await?, "{line}");
    }
    // Within the limit, a read-only server reads the body and goes on.
    let mut c = server.raw().await?;
    c.send("PUT small.bin;3\nabc").await?;
    assert_code(&c.line().await?, 403);
    assert_code(&c.cmd("LIST").await?, 210);
    Ok(())
}

/// An empty answer at a name prompt is an invalid name (`422`), as the one-line forms with an
/// empty argument are, and the connection goes on.
#[tokio::test]
async fn an_empty_answer_to_a_prompt_is_refused_as_the_one_line_form_is() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    c.upload("a.txt", b"abc").await?;
    for (prompt, code) in [("DOWNLOAD", 331), ("DELETE", 331), ("RENAME", 332)] {
        assert_code(&c.cmd(prompt).await?, code);
        assert_code(&c.cmd("").await?, 422);
        assert_code(&c.cmd(&format!("{prompt} ")).await?, 422);
    }
    // The new-name prompt of a rename.
    assert_code(&c.cmd("RENAME a.txt").await?, 333);
    assert_code(&c.cmd("").await?, 422);
    // The upload prompt answers as `UPLOAD ` with nothing after the space does.
    let one_line = c.cmd("UPLOAD ").await?;
    assert_code(&c.cmd("UPLOAD").await?, 330);
    let prompted = c.cmd("").await?;
    assert_eq!(
        prompted.get(..3),
        one_line.get(..3),
        "{prompted} vs {one_line}"
    );
    assert!(prompted.starts_with('4'), "{prompted}");
    assert_eq!(c.list().await?.len(), 1);
    Ok(())
}

/// `HELP` names the aliases the spec lists for each command, `LIST FILES` and `GET` included.
#[tokio::test]
async fn help_names_every_alias_of_the_spec() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    let head = c.cmd("HELP").await?;
    assert_code(&head, 211);
    let n: usize = head[4..].split(' ').next().unwrap_or_default().parse()?;
    let mut lines = Vec::new();
    for _ in 0..n {
        lines.push(c.line().await?);
    }
    let all = lines.join("\n");
    for alias in [
        "LIST_FILES",
        "LIST FILES",
        "GET",
        "PUT",
        "CHANGE",
        "MV",
        "RM",
        "BYE",
        "QUIT",
        "EXIT",
    ] {
        assert!(all.contains(alias), "{alias} missing from:\n{all}");
    }
    // And the aliases work as documented.
    assert_code(&c.cmd("LIST FILES").await?, 210);
    assert_code(&c.cmd("GET nothing.txt").await?, 404);
    Ok(())
}

/// A client that pipelines thousands of `LIST`s without reading gets the `408` of the stall
/// timeout, right after the reply in progress, and then a clean end of stream (no reset that
/// would destroy the replies before it reads them).
#[tokio::test]
async fn a_client_that_floods_list_without_reading_gets_its_408() -> TestResult {
    let config = ServerConfig {
        stall_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut c = server.raw().await?;
    // Listings of ~40 KiB each, so that a few hundred unread ones fill the socket buffers.
    let mut puts = String::new();
    for i in 0..400 {
        puts.push_str(&format!("PUT file-with-a-long-name-{i:04}.txt;1\nx"));
    }
    c.send(puts).await?;
    for _ in 0..400 {
        assert_code(&c.line().await?, 226);
    }
    let Raw { mut reader, writer } = c;
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut writer = writer;
        let lines = b"LIST\n".repeat(2_000);
        // The server stops reading once it stops being read; this write may never finish.
        let _ = tokio::time::timeout(Duration::from_secs(8), writer.write_all(&lines)).await;
        writer
    });
    // Past the stall timeout (the socket buffers fill within a few hundred listings), within
    // the few seconds the server gives its 408 to be read.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let started = std::time::Instant::now();
    let mut last = String::new();
    let mut replies = 0;
    loop {
        use tokio::io::AsyncBufReadExt;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut buf))
            .await??;
        if n == 0 {
            break;
        }
        assert_eq!(buf.last(), Some(&b'\n'), "a cut line: {buf:?}");
        let line = String::from_utf8(buf)?;
        if line.starts_with("210 ") {
            replies += 1;
        } else if !line.starts_with("408 ") {
            assert!(line.contains(";file-with-a-long-name-"), "{line}");
        }
        last = line;
    }
    assert!(
        last.starts_with("408 Replies not read"),
        "last line {last:?}"
    );
    assert!(replies > 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(flood.await?);
    Ok(())
}

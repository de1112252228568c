//! The server driven with raw bytes on a socket, as a third-party client would.

use std::time::Duration;

use barge::server::ServerConfig;
use barge::store::StoreConfig;
use md5::{Digest, Md5};

use crate::common::{Raw, TestResult, TestServer, eventually, md5_hex, temp_files};

#[tokio::test]
async fn seed_sequence() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    assert_eq!(
        c.cmd("LIST_FILES").await?,
        "210 0 No files available at the moment"
    );
    assert_eq!(c.cmd("UPLOAD").await?, "330 Send file name;file size");
    let data = b"The quick brown fox jumps over the lazy dog";
    assert_eq!(
        c.cmd(&format!("my_file.jpg;{}", data.len())).await?,
        "350 Ready to receive 43 bytes"
    );
    c.send(data).await?;
    let stored = c.line().await?;
    let id = md5_hex(data);
    assert_eq!(stored, format!("226 {id} Upload complete"));
    assert_eq!(id, "9e107d9d372bb6826bd81d3542a419d6");
    assert_eq!(
        c.list().await?,
        vec![(id.clone(), "my_file.jpg".to_owned(), 43)]
    );
    assert_eq!(c.cmd("DOWNLOAD").await?, "331 Please send a file ID");
    assert_eq!(c.cmd(&id).await?, format!("213 43 {id} my_file.jpg"));
    let body = c.bytes(43).await?;
    assert_eq!(md5_hex(&body), id);
    assert_eq!(c.cmd("DISCONNECT").await?, "221 Bye");
    assert!(c.closed().await?);
    assert_eq!(std::fs::read(server.root().join("my_file.jpg"))?, data);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn one_line_forms_case_and_crlf() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    assert_eq!(
        c.cmd("upload a.txt;3\r").await?,
        "350 Ready to receive 3 bytes"
    );
    c.send("abc").await?;
    let id = md5_hex(b"abc");
    assert_eq!(c.line().await?, format!("226 {id} Upload complete"));
    assert_eq!(c.cmd("list\r").await?, "210 1 file");
    assert_eq!(c.line().await?, format!("{id};a.txt;3"));
    // Download by name and by upper-case id.
    assert_eq!(c.download("a.txt").await?, (id.clone(), b"abc".to_vec()));
    assert_eq!(
        c.download(&id.to_uppercase()).await?,
        (id.clone(), b"abc".to_vec())
    );
    assert!(c.cmd("HELP").await?.starts_with("211 "));
    Ok(())
}

#[tokio::test]
async fn names_with_spaces_semicolons_unicode_and_folders() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    let names = [
        "with space.txt",
        "semi;colon;.txt",
        "ünïcødé 日本語 🚀.bin",
        "deep/er/folder/file",
        ".dotfile",
        "%2e%2e/x",
    ];
    for (i, name) in names.iter().enumerate() {
        let data = format!("content {i}");
        let id = c.upload(name, data.as_bytes()).await?;
        assert_eq!(c.download(name).await?.1, data.as_bytes());
        assert_eq!(id, md5_hex(data.as_bytes()));
    }
    let listed: Vec<String> = c.list().await?.into_iter().map(|(_, n, _)| n).collect();
    let mut want: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want);
    assert!(server.root().join("deep/er/folder/file").is_file());
    assert!(server.root().join("%2e%2e/x").is_file());
    Ok(())
}

#[tokio::test]
async fn empty_file() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    assert_eq!(
        c.cmd("UPLOAD empty;0").await?,
        "350 Ready to receive 0 bytes"
    );
    assert_eq!(
        c.line().await?,
        "226 d41d8cd98f00b204e9800998ecf8427e Upload complete"
    );
    assert_eq!(
        c.download("empty").await?,
        ("d41d8cd98f00b204e9800998ecf8427e".to_owned(), vec![])
    );
    assert_eq!(std::fs::metadata(server.root().join("empty"))?.len(), 0);
    Ok(())
}

#[tokio::test]
async fn error_replies_keep_the_connection_usable() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    c.upload("exists", b"x").await?;
    c.upload("dir/inside", b"y").await?;
    let cases = [
        ("FROB", "400 Unknown command 'FROB'"),
        ("", "400 Empty command"),
        ("HELP me", "400 HELP takes no argument"),
        ("UPLOAD nosize", "400 Expected name;size"),
        ("UPLOAD a;-1", "400 Invalid size \"-1\""),
        ("UPLOAD a;1e9", "400 Invalid size"),
        ("UPLOAD a;18446744073709551616", "400 Invalid size"),
        ("UPLOAD a;+5", "400 Invalid size"),
        ("UPLOAD a; 5", "400 Invalid size"),
        ("UPLOAD a;", "400 Invalid size"),
        ("UPLOAD ../x;1", "422 Invalid name"),
        ("UPLOAD /etc/x;1", "422 Invalid name"),
        ("UPLOAD .barge/index.redb;1", "422 Invalid name"),
        ("UPLOAD C:\\x;1", "422 Invalid name"),
        ("UPLOAD exists;1", "409 A file named exists already exists"),
        ("DOWNLOAD missing", "404 No such file: missing"),
        ("DOWNLOAD ../../etc/passwd", "422 Invalid name"),
        (
            "DOWNLOAD 00000000000000000000000000000000",
            "404 No such file",
        ),
        ("DELETE missing", "404 No such file"),
        ("RENAME missing\tother", "404 No such file"),
        (
            "RENAME exists\texists",
            "409 A file named exists already exists",
        ),
        ("RENAME exists\t../up", "422 Invalid name"),
        ("RENAME exists/sub\tx", "404 No such file"),
        ("UPLOAD exists/sub;1", "409 'exists' is in the way"),
        // A folder is not "a file" (attack session of round 2, finding 5).
        ("UPLOAD dir;1", "409 A folder named dir already exists"),
        (
            "RENAME exists\tdir",
            "409 A folder named dir already exists",
        ),
    ];
    for (line, want) in cases {
        let got = c.cmd(line).await?;
        assert!(
            got.starts_with(want),
            "{line:?}: got {got:?}, want {want:?}"
        );
    }
    // Still fine afterwards, and nothing was created.
    assert_eq!(c.list().await?.len(), 2);
    assert_eq!(std::fs::read_dir(server.root())?.count(), 3); // exists, dir, .barge
    // Invalid UTF-8 is refused, the connection goes on.
    c.send(b"LIST\xff\xfe\n").await?;
    assert!(
        c.line()
            .await?
            .starts_with("400 The line is not valid UTF-8")
    );
    assert_eq!(c.cmd("BYE").await?, "221 Bye");
    Ok(())
}

#[tokio::test]
async fn prompt_forms_refuse_bad_answers() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    assert_eq!(c.cmd("UPLOAD").await?, "330 Send file name;file size");
    assert!(c.cmd("../evil;3").await?.starts_with("422 "));
    assert_eq!(c.cmd("DOWNLOAD").await?, "331 Please send a file ID");
    assert!(c.cmd("nothing-here").await?.starts_with("404 "));
    c.upload("r", b"r").await?;
    assert_eq!(c.cmd("RENAME").await?, "332 Send the current name or ID");
    assert_eq!(c.cmd("r").await?, "333 Send the new name");
    assert_eq!(c.cmd("sub/s").await?, "250 Renamed r to sub/s");
    assert_eq!(c.cmd("RENAME sub/s").await?, "333 Send the new name");
    assert!(c.cmd("/abs").await?.starts_with("422 "));
    assert_eq!(
        c.cmd("DELETE").await?,
        "331 Please send the file ID or name to delete"
    );
    assert_eq!(c.cmd("sub/s").await?, "250 Deleted sub/s");
    assert_eq!(
        c.cmd("LIST").await?,
        "210 0 No files available at the moment"
    );
    Ok(())
}

#[tokio::test]
async fn put_pipelines_many_uploads_and_downloads() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(format!("PUT f{i:03};4\n").as_bytes());
        batch.extend_from_slice(format!("{i:04}").as_bytes());
    }
    // A refused PUT in the middle: its body is skipped, the rest go on.
    batch.extend_from_slice(b"PUT ../bad;3\nxyzPUT f000;2\nzzLIST\n");
    c.send(&batch).await?;
    for i in 0..200 {
        assert_eq!(
            c.line().await?,
            format!(
                "226 {} Upload complete",
                md5_hex(format!("{i:04}").as_bytes())
            )
        );
    }
    assert!(c.line().await?.starts_with("422 "));
    assert!(c.line().await?.starts_with("409 "));
    assert_eq!(c.line().await?, "210 200 files");
    for _ in 0..200 {
        c.line().await?;
    }
    let mut gets = String::new();
    for i in 0..200 {
        gets.push_str(&format!("DOWNLOAD f{i:03}\n"));
    }
    c.send(gets).await?;
    for i in 0..200 {
        let head = c.line().await?;
        assert!(head.starts_with("213 4 "), "{head}");
        assert_eq!(c.bytes(4).await?, format!("{i:04}").as_bytes());
    }
    // A PUT whose length is unknown cannot be skipped: the connection closes.
    assert!(c.cmd("PUT nosize").await?.starts_with("400 "));
    assert!(c.closed().await?);
    Ok(())
}

/// Small pipelined uploads are group-committed, a full batch in the background while the next
/// is read: every reply still comes after its file's batch was flushed (the store's count of
/// durable group commits has moved on, and the file is in place), in order, and a file refused
/// in the middle answers alone.
#[tokio::test]
async fn batched_puts_are_answered_only_once_flushed() -> TestResult {
    let server = TestServer::start().await?;
    std::fs::write(server.root().join("taken"), b"old")?;
    let mut c = server.raw().await?;
    let flushed_before = server.store.group_flushes();
    // Over two full batches (256 files each), with a taken name in the second.
    let names: Vec<String> = (0..700)
        .map(|i| {
            if i == 300 {
                "taken".to_owned()
            } else {
                format!("b{i:03}")
            }
        })
        .collect();
    let mut stream = Vec::new();
    for (i, name) in names.iter().enumerate() {
        stream.extend_from_slice(format!("PUT {name};5\n{i:05}").as_bytes());
    }
    c.send(&stream).await?;
    let mut last_flushes = flushed_before;
    for (i, name) in names.iter().enumerate() {
        let reply = c.line().await?;
        let flushes = server.store.group_flushes();
        assert!(
            flushes > flushed_before,
            "reply {i} ({reply}) came before any batch was flushed"
        );
        assert!(flushes >= last_flushes);
        last_flushes = flushes;
        if i == 300 {
            assert!(reply.starts_with("409 "), "{reply}");
            assert_eq!(std::fs::read(server.root().join(name))?, b"old");
            continue;
        }
        let body = format!("{i:05}");
        assert_eq!(
            reply,
            format!("226 {} Upload complete", md5_hex(body.as_bytes())),
            "{name}"
        );
        assert_eq!(std::fs::read(server.root().join(name))?, body.as_bytes());
    }
    // At least one group commit per full batch, plus the rest.
    assert!(last_flushes - flushed_before >= 3, "{last_flushes}");
    assert_eq!(c.cmd("LIST").await?, "210 700 files");
    Ok(())
}

#[tokio::test]
async fn over_long_line_closes_only_that_connection() -> TestResult {
    let server = TestServer::start().await?;
    let mut bad = server.raw().await?;
    let mut good = server.raw().await?;
    bad.send(vec![b'A'; 10_000]).await?;
    bad.send(b"\n").await?;
    assert!(bad.line().await?.starts_with("414 "));
    assert!(bad.closed().await?);
    assert_eq!(
        good.cmd("LIST").await?,
        "210 0 No files available at the moment"
    );
    Ok(())
}

#[tokio::test]
async fn limits_read_only_and_disk_space() -> TestResult {
    let cfg = StoreConfig {
        max_file_size: 1000,
        ..StoreConfig::default()
    };
    let server = TestServer::start_with(tempfile::tempdir()?, cfg, ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    assert!(
        c.cmd("UPLOAD big;1001")
            .await?
            .starts_with("413 1001 bytes is over the server's limit")
    );
    // A pipelined upload over the limit is not read: the connection closes.
    assert!(c.cmd("PUT big;1001").await?.starts_with("413 "));
    assert!(c.closed().await?);
    server.stop().await?;

    let cfg = StoreConfig {
        min_free_space: u64::MAX / 4,
        ..StoreConfig::default()
    };
    let server = TestServer::start_with(tempfile::tempdir()?, cfg, ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    assert!(
        c.cmd("UPLOAD a;1")
            .await?
            .starts_with("507 Not enough disk space")
    );
    server.stop().await?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("keep"), b"keep")?;
    let cfg = StoreConfig {
        read_only: true,
        ..StoreConfig::default()
    };
    let server = TestServer::start_with(dir, cfg, ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    assert!(c.cmd("UPLOAD a;1").await?.starts_with("403 "));
    assert!(c.cmd("DELETE keep").await?.starts_with("403 "));
    assert!(c.cmd("RENAME keep\tk2").await?.starts_with("403 "));
    assert_eq!(c.download("keep").await?.1, b"keep");
    Ok(())
}

#[tokio::test]
async fn truncated_upload_leaves_nothing() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    assert!(
        c.cmd("UPLOAD partial.bin;1000000")
            .await?
            .starts_with("350 ")
    );
    c.send(vec![1u8; 300_000]).await?;
    drop(c);
    let root = server.root().to_path_buf();
    eventually(|| temp_files(&root) == 0).await?;
    assert!(!root.join("partial.bin").exists());
    // The name is free again.
    let mut c = server.raw().await?;
    c.upload("partial.bin", b"whole").await?;
    Ok(())
}

#[tokio::test]
async fn large_file_streams_both_ways() -> TestResult {
    const SIZE: usize = 300 << 20;
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    assert!(
        c.cmd(&format!("UPLOAD big.bin;{SIZE}"))
            .await?
            .starts_with("350 ")
    );
    let mut hasher = Md5::new();
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..(SIZE >> 20) {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
        hasher.update(&chunk);
        c.send(&chunk).await?;
    }
    let id = hex::encode(hasher.finalize());
    assert_eq!(c.line().await?, format!("226 {id} Upload complete"));
    let head = c.cmd("DOWNLOAD big.bin").await?;
    assert_eq!(head, format!("213 {SIZE} {id} big.bin"));
    let mut hasher = Md5::new();
    let mut left = SIZE;
    while left > 0 {
        let n = left.min(1 << 20);
        hasher.update(c.bytes(n).await?);
        left -= n;
    }
    assert_eq!(hex::encode(hasher.finalize()), id);
    assert_eq!(c.cmd("LIST").await?, "210 1 file");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once() -> TestResult {
    let server = TestServer::start().await?;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            assert_eq!(c.line().await?, "220 barge/1 ready");
            let data = vec![i as u8; 100_000 + i * 1000];
            let id = c.upload(&format!("client-{i}.bin"), &data).await?;
            assert_eq!(id, md5_hex(&data));
            let (got_id, body) = c.download(&id).await?;
            assert_eq!(got_id, id);
            assert_eq!(body, data);
            assert_eq!(c.cmd("BYE").await?, "221 Bye");
            TestResult::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut c = server.raw().await?;
    assert_eq!(c.list().await?.len(), 64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_race_has_one_winner() -> TestResult {
    let server = TestServer::start().await?;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await?;
            c.line().await?;
            let reply = c.cmd("UPLOAD contested;1000").await?;
            if reply.starts_with("350 ") {
                c.send(vec![i; 1000]).await?;
                let done = c.line().await?;
                assert!(done.starts_with("226 "), "{done}");
                return TestResult::Ok(Some(i));
            }
            assert!(reply.starts_with("409 "), "{reply}");
            Ok(None)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(i) = t.await?? {
            winners.push(i);
        }
    }
    // Every loser was refused while the winner was still uploading or after it finished.
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        std::fs::read(server.root().join("contested"))?,
        vec![winners[0]; 1000]
    );
    Ok(())
}

#[tokio::test]
async fn restart_keeps_everything() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    let a = c.upload("a", b"alpha").await?;
    let b = c.upload("dir/b", b"beta").await?;
    drop(c);
    let dir = server.stop().await?;
    let server =
        TestServer::start_with(dir, StoreConfig::default(), ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    let listed = c.list().await?;
    assert_eq!(
        listed,
        vec![(a.clone(), "a".into(), 5), (b.clone(), "dir/b".into(), 4)]
    );
    assert_eq!(c.download(&b).await?.1, b"beta");
    Ok(())
}

#[tokio::test]
async fn files_dropped_in_by_hand_are_listed_with_true_ids() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("sub"))?;
    std::fs::write(dir.path().join("sub/hand.txt"), b"by hand")?;
    let server =
        TestServer::start_with(dir, StoreConfig::default(), ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    assert_eq!(
        c.list().await?,
        vec![(md5_hex(b"by hand"), "sub/hand.txt".into(), 7)]
    );
    // Changed behind the server's back: the listing and the download follow.
    std::fs::write(server.root().join("sub/hand.txt"), b"changed by hand")?;
    assert_eq!(
        c.list().await?,
        vec![(md5_hex(b"changed by hand"), "sub/hand.txt".into(), 15)]
    );
    assert!(
        c.cmd(&format!("DOWNLOAD {}", md5_hex(b"by hand")))
            .await?
            .starts_with("404 ")
    );
    Ok(())
}

#[tokio::test]
async fn busy_reply_over_the_connection_limit() -> TestResult {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let _a = server.raw().await?;
    let mut b = server.raw().await?;
    let mut c = Raw::connect(server.addr).await?;
    assert!(c.line().await?.starts_with("503 Server busy"));
    assert!(c.closed().await?);
    // Once a slot frees up, new clients are served again.
    assert_eq!(b.cmd("BYE").await?, "221 Bye");
    drop(b);
    let mut retries = 0;
    loop {
        let mut d = Raw::connect(server.addr).await?;
        let greeting = d.line().await?;
        if greeting == "220 barge/1 ready" {
            break;
        }
        retries += 1;
        assert!(retries < 100, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn idle_connections_time_out() -> TestResult {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut c = server.raw().await?;
    assert!(c.line().await?.starts_with("408 "));
    assert!(c.closed().await?);
    Ok(())
}

#[tokio::test]
async fn shutdown_says_goodbye_and_lets_transfers_finish() -> TestResult {
    let config = ServerConfig {
        shutdown_grace: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut idle = server.raw().await?;
    let mut busy = server.raw().await?;
    assert!(busy.cmd("UPLOAD late.bin;6").await?.starts_with("350 "));
    busy.send(b"abc").await?;
    server.begin_shutdown();
    assert_eq!(idle.line().await?, "503 Server shutting down");
    assert!(idle.closed().await?);
    // The upload in progress may still finish within the grace period.
    busy.send(b"def").await?;
    assert!(busy.line().await?.starts_with("226 "));
    assert_eq!(busy.line().await?, "503 Server shutting down");
    let dir = server.stop().await?;
    assert_eq!(std::fs::read(dir.path().join("late.bin"))?, b"abcdef");
    Ok(())
}

#[tokio::test]
async fn a_flood_of_unread_replies_does_not_pile_up() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = ServerConfig {
        stall_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let Raw {
        mut reader,
        mut writer,
    } = server.raw().await?;
    // 20 MB of bad commands, never reading a reply. Were the server to keep answering into
    // memory, it would read all of it at once; instead it stops reading once its replies back
    // up, so this write cannot complete (the socket buffers hold a few MB at most).
    let flood = "X\n".repeat(10_000_000);
    let write =
        tokio::time::timeout(Duration::from_secs(4), writer.write_all(flood.as_bytes())).await;
    assert!(
        write.is_err(),
        "the server kept reading a client that reads nothing"
    );
    // It then gives up on that client once its replies have not moved for the stall timeout,
    // and keeps serving everyone else.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while reader.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "the server never closed the flooding connection"
    );
    let mut c = server.raw().await?;
    assert!(c.cmd("LIST").await?.starts_with("210 "));
    Ok(())
}

#[tokio::test]
async fn put_with_a_bad_name_and_an_oversized_body_is_not_read() -> TestResult {
    let cfg = StoreConfig {
        max_file_size: 1000,
        ..StoreConfig::default()
    };
    let server = TestServer::start_with(tempfile::tempdir()?, cfg, ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    assert!(
        c.cmd("PUT ../x;18446744073709551615")
            .await?
            .starts_with("413 ")
    );
    assert!(c.closed().await?);
    let mut c = server.raw().await?;
    // Within the limit, the body of a badly named PUT is skipped and the connection goes on.
    c.send(b"PUT ../x;3\nabcLIST\n").await?;
    assert!(c.line().await?.starts_with("422 "));
    assert_eq!(c.line().await?, "210 0 No files available at the moment");
    Ok(())
}

#[tokio::test]
async fn an_upload_in_progress_reserves_its_folders_and_what_is_under_it() -> TestResult {
    let server = TestServer::start().await?;
    let mut first = server.raw().await?;
    let mut second = server.raw().await?;
    let mut other = server.raw().await?;
    other.upload("p", b"p").await?;
    // `r1` is being uploaded: its body has started but not finished.
    assert_eq!(
        first.cmd("UPLOAD r1;10").await?,
        "350 Ready to receive 10 bytes"
    );
    first.send(b"12345").await?;
    // `d/f` too: `d` is then a folder in an upload in progress.
    assert_eq!(
        second.cmd("UPLOAD d/f;4").await?,
        "350 Ready to receive 4 bytes"
    );
    second.send(b"ab").await?;
    for (cmd, what) in [
        ("UPLOAD r1/sub;1", "a name under the upload"),
        ("UPLOAD r1;1", "the name itself"),
        ("UPLOAD d;1", "a folder of the upload"),
        ("RENAME p\tr1/x", "a rename under the upload"),
        ("RENAME p\td", "a rename onto a folder of the upload"),
        ("RENAME p\tr1", "a rename onto the upload"),
    ] {
        let reply = other.cmd(cmd).await?;
        assert!(reply.starts_with("409 "), "{what}: {cmd:?} got {reply:?}");
    }
    // PUT is refused the same way, its body read and discarded.
    other.send("PUT r1/y;2\nzz").await?;
    let reply = other.line().await?;
    assert!(reply.starts_with("409 "), "{reply}");
    // The uploads in progress were not disturbed by any of it.
    first.send(b"67890").await?;
    assert_eq!(
        first.line().await?,
        format!("226 {} Upload complete", md5_hex(b"1234567890"))
    );
    second.send(b"cd").await?;
    assert_eq!(
        second.line().await?,
        format!("226 {} Upload complete", md5_hex(b"abcd"))
    );
    let names: Vec<String> = other.list().await?.into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["d/f", "p", "r1"]);
    Ok(())
}

#[tokio::test]
async fn unicode_equivalent_names_conflict_whatever_the_order() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    // Mixed forms first, then the composed one.
    c.upload("m\u{e9}/ne\u{301}", b"1").await?;
    let reply = c.cmd("UPLOAD m\u{e9}/n\u{e9};1").await?;
    assert!(reply.starts_with("409 "), "{reply}");
    // Composed first, then mixed forms.
    c.upload("x\u{e9}/y\u{e9}", b"2").await?;
    let reply = c.cmd("UPLOAD x\u{e9}/ye\u{301};1").await?;
    assert!(reply.starts_with("409 "), "{reply}");
    // Fully decomposed, as an upload and as a rename target, against both.
    let reply = c.cmd("UPLOAD me\u{301}/ne\u{301};1").await?;
    assert!(reply.starts_with("409 "), "{reply}");
    c.upload("q", b"q").await?;
    for target in ["m\u{e9}/n\u{e9}", "xe\u{301}/ye\u{301}"] {
        let reply = c.cmd(&format!("RENAME q\t{target}")).await?;
        assert!(reply.starts_with("409 "), "{target:?}: {reply}");
    }
    // A name that only looks alike in a folder is a different name: not equivalent as a whole.
    c.upload("m\u{e9}/other", b"3").await?;
    let names: Vec<String> = c.list().await?.into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(
        names,
        ["m\u{e9}/ne\u{301}", "m\u{e9}/other", "q", "x\u{e9}/y\u{e9}"]
    );
    Ok(())
}

/// The server over the in-memory backend: the storage seam carries a whole session, including
/// a body that comes as a stream rather than a file.
#[tokio::test]
async fn the_server_runs_on_the_memory_backend() -> TestResult {
    use std::sync::Arc;

    use barge::store::{MemoryBackend, Store};

    let store = Store::new(
        Arc::new(MemoryBackend::new(1 << 30)),
        StoreConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(barge::server::run(
        listener,
        barge::server::PlainTcp,
        Arc::clone(&store),
        ServerConfig::default(),
        shutdown.clone(),
    ));
    let mut c = Raw::connect(addr).await?;
    assert_eq!(c.line().await?, "220 barge/1 ready");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(c.upload("big/file.bin", &big).await?, md5_hex(&big));
    c.send("PUT a;1\nxPUT b;1\ny").await?;
    assert_eq!(
        c.line().await?,
        format!("226 {} Upload complete", md5_hex(b"x"))
    );
    assert_eq!(
        c.line().await?,
        format!("226 {} Upload complete", md5_hex(b"y"))
    );
    let listed = c.list().await?;
    assert_eq!(
        listed
            .iter()
            .map(|(_, n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "big/file.bin"]
    );
    let (id, body) = c.download(&md5_hex(&big)).await?;
    assert_eq!(id, md5_hex(&big));
    assert!(body == big, "the streamed body differs");
    assert!(c.cmd("UPLOAD a;1").await?.starts_with("409 "));
    assert!(c.cmd("RENAME a\tbig/file.bin/x").await?.starts_with("409 "));
    assert_eq!(c.cmd("RENAME a\tc").await?, "250 Renamed a to c");
    assert_eq!(c.cmd("DELETE b").await?, "250 Deleted b");
    assert_eq!(c.download("c").await?.1, b"x");
    assert_eq!(c.cmd("DISCONNECT").await?, "221 Bye");
    shutdown.cancel();
    tokio::time::timeout(crate::common::WAIT, handle).await???;
    Ok(())
}

//! Hostile input: names that try to leave the folder or disguise themselves, malformed sizes,
//! broken framing and symlinks. Each gets a clear refusal, changes nothing on disk (the whole
//! sandbox, including what lies next to the shared folder, is compared before and after), and
//! the connection, or for broken framing every other connection, keeps working.

use std::os::unix::fs::symlink;
use std::time::Duration;

use barge::server::ServerConfig;
use barge::store::StoreConfig;

use crate::common::{Raw, TestResult, TestServer, WAIT, eventually, md5_hex, temp_files};
use crate::support::{
    Noise, SECRET, Sandbox, assert_code, assert_refused, assert_same_tree, read_bytes, read_line,
    snapshot,
};

/// The names of the issue, each with why it is hostile.
fn hostile_names() -> Vec<(String, &'static str)> {
    vec![
        ("../x".into(), "parent"),
        ("a/../../x".into(), "parent in the middle"),
        ("../outside/secret.txt".into(), "a real file next door"),
        ("/etc/x".into(), "absolute"),
        ("/etc/passwd".into(), "absolute, existing"),
        ("C:\\x".into(), "drive and backslash"),
        ("C:x".into(), "drive"),
        ("\\\\host\\share\\x".into(), "UNC"),
        ("a\\..\\b".into(), "backslash parent"),
        ("..".into(), "dotdot"),
        (".".into(), "dot"),
        ("a/./b".into(), "dot in the middle"),
        (String::new(), "empty"),
        ("a//b".into(), "empty component"),
        ("a/".into(), "trailing slash"),
        ("nul\0byte".into(), "NUL"),
        ("car\rriage".into(), "CR"),
        ("esc\u{1b}[2J\u{1b}[31mred".into(), "ESC sequence"),
        ("bell\u{7}".into(), "BEL"),
        ("c1\u{9b}31m".into(), "C1 CSI"),
        ("evil\u{202E}gpj.exe".into(), "U+202E"),
        ("zero\u{200B}width".into(), "zero width"),
        ("bom\u{FEFF}".into(), "BOM"),
        // Issue 10 item 10: one of each class the audit found accepted.
        ("alm\u{061C}x".into(), "U+061C bidi mark"),
        ("a\u{2060}b".into(), "U+2060 word joiner"),
        ("soft\u{AD}hyphen".into(), "U+00AD soft hyphen"),
        ("line\u{2028}sep".into(), "U+2028 line separator"),
        ("para\u{2029}sep".into(), "U+2029 paragraph separator"),
        ("mongol\u{180E}".into(), "U+180E"),
        ("dep\u{206A}".into(), "U+206A deprecated format"),
        ("emoji\u{FE0F}".into(), "U+FE0F variation selector"),
        ("anno\u{FFF9}".into(), "U+FFF9 interlinear annotation"),
        ("\u{3164}".into(), "U+3164 Hangul filler"),
        ("\u{115F}x".into(), "U+115F Hangul choseong filler"),
        ("beam\u{1D173}".into(), "U+1D173 musical format"),
        ("tag\u{E0041}".into(), "tag character"),
        (".BARGE".into(), "state folder in capitals"),
        (".Barge/index.redb".into(), "the index, mixed case"),
        ("x".repeat(300), "300-byte component"),
        (["abcd"; 1000].join("/"), "5,000-byte path"),
        (".barge".into(), "state folder"),
        (".barge/index.redb".into(), "the index"),
        (".barge/tmp/x".into(), "the temp area"),
    ]
}

/// Sends `line` (which may hold several lines) and reads one reply per line sent.
async fn replies(c: &mut Raw, bytes: &[u8]) -> TestResult<Vec<String>> {
    c.send(bytes).await?;
    let n = bytes.iter().filter(|&&b| b == b'\n').count();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.line().await?);
    }
    Ok(out)
}

#[tokio::test]
async fn hostile_names_are_refused_everywhere_and_change_nothing() -> TestResult {
    let sandbox = Sandbox::new()?;
    let server = sandbox
        .server(StoreConfig::default(), ServerConfig::default())
        .await?;
    let mut c = server.raw().await?;
    c.upload("victim", b"victim").await?;
    c.upload("a/b", b"in a folder").await?;
    let before = sandbox.snapshot();
    for (name, why) in hostile_names() {
        let one_line_forms = [
            format!("UPLOAD {name};1\n"),
            format!("DOWNLOAD {name}\n"),
            format!("RENAME {name}\tstolen\n"),
            format!("RENAME victim\t{name}\n"),
            format!("DELETE {name}\n"),
            format!("MV victim\t{name}\n"),
            format!("RM {name}\n"),
        ];
        for cmd in &one_line_forms {
            let got = replies(&mut c, cmd.as_bytes()).await?;
            assert_eq!(got.len(), 1, "{why}: {got:?}");
            assert_code(&got[0], 422);
        }
        // PUT: the body that follows a refused name is read and thrown away, not run.
        let got = replies(&mut c, format!("PUT {name};13\nDELETE victim").as_bytes()).await?;
        assert_code(&got[0], 422);
        // Prompt forms: the prompt, then the refusal of the answer (an empty answer to a name
        // prompt is an invalid name, as the one-line form's empty argument is: 422).
        let want = 422;
        for (cmd, prompt) in [
            ("UPLOAD", 330),
            ("DOWNLOAD", 331),
            ("DELETE", 331),
            ("RENAME", 332),
            ("RENAME victim", 333),
        ] {
            let answer = if cmd == "UPLOAD" {
                format!("{name};1")
            } else {
                name.clone()
            };
            let got = replies(&mut c, format!("{cmd}\n{answer}\n").as_bytes()).await?;
            assert_code(&got[0], prompt);
            if cmd == "UPLOAD" {
                assert_code(&got[1], 422);
            } else {
                assert_code(&got[1], want);
            }
        }
        // The same connection still works.
        assert_eq!(c.list().await?.len(), 2, "{why}");
    }
    assert_same_tree(&before, &sandbox.snapshot());
    assert!(!std::path::Path::new("/etc/x").exists());
    // The one allowed look-alike: a literal folder named `%2e%2e`, inside the shared folder.
    c.upload("%2e%2e/x", b"literal").await?;
    assert_eq!(std::fs::read(server.root().join("%2e%2e/x"))?, b"literal");
    assert!(!sandbox.base.path().join("x").exists());
    Ok(())
}

#[tokio::test]
async fn line_breaks_inside_names_split_the_command_and_change_nothing() -> TestResult {
    let sandbox = Sandbox::new()?;
    let server = sandbox
        .server(StoreConfig::default(), ServerConfig::default())
        .await?;
    let mut c = server.raw().await?;
    c.upload("victim", b"victim").await?;
    let before = sandbox.snapshot();
    // A name cannot carry a line feed: the line ends there, and both halves are refused.
    for cmd in [
        "UPLOAD a\nb;1\n",
        "DOWNLOAD ../\nx\n",
        "RENAME victim\t../\ny\n",
        "DELETE victim\r\n\n",
    ] {
        let got = replies(&mut c, cmd.as_bytes()).await?;
        for r in &got {
            if r.starts_with("250 Deleted") {
                // `DELETE victim\r\n` is a CRLF line: that one is meant to work.
                continue;
            }
            assert_refused(r);
        }
        if cmd.starts_with("DELETE") {
            c.upload("victim", b"victim").await?;
        }
    }
    assert_same_tree(&before, &sandbox.snapshot());
    // A PUT line cut by a line feed has no size: the body's end is unknown, so that
    // connection closes (PROTOCOL.md 5.3), and nothing is stored.
    c.send(b"PUT a\nb;5\nhello").await?;
    assert_code(&c.line().await?, 400);
    assert!(c.closed().await?);
    assert_same_tree(&before, &sandbox.snapshot());
    let mut other = server.raw().await?;
    assert_eq!(other.list().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn names_on_disk_that_break_the_rules_are_never_listed_or_served() -> TestResult {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sandbox = Sandbox::new()?;
    let root = sandbox.root_dir()?;
    for name in [
        &b"line\nfeed"[..],
        b"esc\x1b[2J",
        "rtl\u{202E}txt.exe".as_bytes(),
        b"back\\slash",
        b"not utf8 \xff\xfe",
        b"tab\there",
    ] {
        std::fs::write(root.path().join(OsStr::from_bytes(name)), b"hidden")?;
    }
    std::fs::write(root.path().join("fine.txt"), b"fine")?;
    let server =
        TestServer::start_with(root, StoreConfig::default(), ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    let listed = c.list().await?;
    assert_eq!(listed, vec![(md5_hex(b"fine"), "fine.txt".into(), 4)]);
    // Their content's id is unknown to the server, so it cannot be fetched that way either.
    assert_code(
        &c.cmd(&format!("DOWNLOAD {}", md5_hex(b"hidden"))).await?,
        404,
    );
    assert_code(&c.cmd("DOWNLOAD back\\slash").await?, 422);
    Ok(())
}

/// `é` as one code point (NFC) and as `e` + a combining accent (NFD) look the same to a person
/// and, on some filesystems, are the same file. barge refuses the second with `409` rather than
/// keep two names that cannot be told apart.
#[tokio::test]
async fn names_differing_only_by_unicode_normalisation_conflict() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    let nfc = "caf\u{e9}.txt";
    let nfd = "cafe\u{301}.txt";
    c.upload(nfc, b"composed").await?;
    assert_code(&c.cmd(&format!("UPLOAD {nfd};3")).await?, 409);
    c.send(format!("PUT {nfd};3\nabc")).await?;
    assert_code(&c.line().await?, 409);
    c.upload("other", b"other").await?;
    assert_code(&c.cmd(&format!("RENAME other\t{nfd}")).await?, 409);
    // And the other way round.
    c.upload("sub/re\u{301}sume\u{301}", b"decomposed").await?;
    assert_code(&c.cmd("UPLOAD sub/r\u{e9}sum\u{e9};1").await?, 409);
    // Nothing but the two originals and `other`.
    let names: Vec<String> = c.list().await?.into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            nfc.to_owned(),
            "other".into(),
            "sub/re\u{301}sume\u{301}".into()
        ]
    );
    Ok(())
}

#[tokio::test]
async fn malformed_sizes_in_every_form() -> TestResult {
    let sandbox = Sandbox::new()?;
    let cfg = StoreConfig {
        max_file_size: 1 << 20,
        ..StoreConfig::default()
    };
    let server = sandbox.server(cfg, ServerConfig::default()).await?;
    let before = sandbox.snapshot();
    let bad = [
        "-1",
        "1e9",
        "18446744073709551616",
        "99999999999999999999999999",
        "+5",
        " 5",
        "5 ",
        "5\t",
        "",
        "0x10",
        "５",
        "1_000",
        "1.5",
    ];
    let mut c = server.raw().await?;
    for size in bad {
        // One-line and prompt forms: 400, the connection goes on.
        assert_code(&c.cmd(&format!("UPLOAD f;{size}")).await?, 400);
        assert_code(&c.cmd("UPLOAD").await?, 330);
        assert_code(&c.cmd(&format!("f;{size}")).await?, 400);
        // PUT: without a size the body's end is unknown: 400, and that connection closes.
        let mut p = server.raw().await?;
        p.send(format!("PUT f;{size}\nhello\n")).await?;
        assert_code(&p.line().await?, 400);
        assert!(p.closed().await?, "{size:?}");
    }
    // Well-formed but over the maximum (u64::MAX included): 413 before any body byte.
    for size in [(1u64 << 20) + 1, u64::MAX] {
        assert_code(&c.cmd(&format!("UPLOAD f;{size}")).await?, 413);
    }
    assert_eq!(c.list().await?.len(), 0);
    assert_same_tree(&before, &sandbox.snapshot());
    // Well-formed, under the maximum, over the free space of the real disk: 507.
    let cfg = StoreConfig {
        max_file_size: u64::MAX,
        ..StoreConfig::default()
    };
    let server = TestServer::start_with(tempfile::tempdir()?, cfg, ServerConfig::default()).await?;
    let free = free_bytes(server.root());
    let mut c = server.raw().await?;
    assert_code(&c.cmd(&format!("UPLOAD huge;{}", free + 1)).await?, 507);
    assert_code(&c.cmd("LIST").await?, 210);
    assert_eq!(temp_files(server.root()), 0);
    Ok(())
}

fn free_bytes(path: &std::path::Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_bavail * st.f_frsize
}

#[tokio::test]
async fn over_long_lines_close_only_their_connection() -> TestResult {
    let server = TestServer::start().await?;
    let mut uploader = server.raw().await?;
    assert_code(&uploader.cmd("UPLOAD during.bin;200000").await?, 350);
    uploader.send(vec![7u8; 100_000]).await?;
    // A megabyte with no line feed at all, and an over-long answer to a prompt.
    let mut a = server.raw().await?;
    a.send(vec![b'A'; 1 << 20]).await.ok(); // The server may close before taking it all.
    assert_code(&a.line().await?, 414);
    assert!(a.closed().await?);
    let mut b = server.raw().await?;
    assert_code(&b.cmd("UPLOAD").await?, 330);
    b.send(format!("{};1\n", "n".repeat(9000))).await?;
    assert_code(&b.line().await?, 414);
    assert!(b.closed().await?);
    // Exactly at the limit (8192 bytes with the line feed) is still a line: refused, not cut.
    let mut d = server.raw().await?;
    let line = format!("DOWNLOAD {}", "d".repeat(8192 - 10));
    assert_eq!(line.len() + 1, 8192);
    assert_code(&d.cmd(&line).await?, 422);
    assert_code(&d.cmd("LIST").await?, 210);
    // The upload in progress on another connection was not disturbed.
    uploader.send(vec![7u8; 100_000]).await?;
    assert_code(&uploader.line().await?, 226);
    assert_eq!(
        std::fs::read(server.root().join("during.bin"))?,
        vec![7u8; 200_000]
    );
    Ok(())
}

/// The server's own timeouts, at their default values, on a paused clock.
#[tokio::test(start_paused = true)]
async fn partial_line_then_silence_hits_the_idle_timeout() -> TestResult {
    let server = TestServer::start().await?;
    let idle = ServerConfig::default().idle_timeout;
    let mut c = server.raw().await?;
    let start = tokio::time::Instant::now();
    c.send(b"LIST_FI").await?;
    let reply = read_line_within(&mut c, idle * 2).await?;
    assert_code(&reply, 408);
    let waited = start.elapsed();
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(read_eof_within(&mut c, Duration::from_secs(5)).await?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn fewer_bytes_than_declared_then_a_stall_hits_the_stall_timeout() -> TestResult {
    let server = TestServer::start().await?;
    let stall = ServerConfig::default().stall_timeout;
    let mut c = server.raw().await?;
    // Bodies up to 64 KiB only: a larger one is written by a long-lived blocking task, and
    // tokio's paused clock does not move while one exists (see the real-time test below).
    for (name, size) in [("small.bin", 1000usize), ("edge.bin", 64 * 1024)] {
        let mut c2 = server.raw().await?;
        assert_code(&c2.cmd(&format!("UPLOAD {name};{size}")).await?, 350);
        c2.send(vec![1u8; size / 2]).await?;
        let start = tokio::time::Instant::now();
        // No reply: the body's end was never reached, so the server just closes.
        assert!(read_eof_within(&mut c2, stall * 2).await?);
        let waited = start.elapsed();
        assert!(
            waited >= stall && waited < stall + Duration::from_secs(1),
            "{waited:?}"
        );
        let root = server.root().to_path_buf();
        eventually(|| temp_files(&root) == 0).await?;
        assert!(!root.join(name).exists());
        // The name is free again.
        c.upload(name, b"whole").await?;
    }
    // PUT stalls the same way.
    let mut p = server.raw().await?;
    p.send(b"PUT put.bin;10\nabc").await?;
    assert!(read_eof_within(&mut p, stall * 2).await?);
    assert!(!server.root().join("put.bin").exists());
    Ok(())
}

/// The same for a large (streamed) body, in real time with a short stall timeout.
#[tokio::test]
async fn fewer_bytes_than_declared_then_a_stall_large_body() -> TestResult {
    let stall = Duration::from_millis(300);
    let config = ServerConfig {
        stall_timeout: stall,
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut c = server.raw().await?;
    assert_code(&c.cmd("UPLOAD large.bin;1048576").await?, 350);
    c.send(vec![1u8; 600_000]).await?;
    let start = std::time::Instant::now();
    assert!(c.closed().await?);
    assert!(start.elapsed() >= stall, "{:?}", start.elapsed());
    let root = server.root().to_path_buf();
    eventually(|| temp_files(&root) == 0).await?;
    assert!(!root.join("large.bin").exists());
    let mut c = server.raw().await?;
    c.upload("large.bin", b"whole").await?;
    Ok(())
}

async fn read_line_within(c: &mut Raw, t: Duration) -> TestResult<String> {
    use tokio::io::AsyncBufReadExt;
    let mut buf = Vec::new();
    tokio::time::timeout(t, c.reader.read_until(b'\n', &mut buf)).await??;
    buf.pop();
    Ok(String::from_utf8(buf)?)
}

async fn read_eof_within(c: &mut Raw, t: Duration) -> TestResult<bool> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(t, c.reader.read_to_end(&mut buf)).await??;
    Ok(n == 0)
}

#[tokio::test]
async fn fewer_bytes_then_close_leaves_nothing() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    c.upload("keep", b"keep").await?;
    for (form, size) in [("UPLOAD", 100usize), ("PUT", 100), ("PUT", 1 << 20)] {
        let mut d = server.raw().await?;
        if form == "UPLOAD" {
            assert_code(&d.cmd(&format!("UPLOAD gone.bin;{size}")).await?, 350);
        } else {
            d.send(format!("PUT gone.bin;{size}\n")).await?;
        }
        d.send(vec![9u8; size - 1]).await?;
        drop(d);
        let root = server.root().to_path_buf();
        eventually(|| temp_files(&root) == 0).await?;
        assert!(!root.join("gone.bin").exists(), "{form} {size}");
        // The index did not learn of it either.
        assert_eq!(c.list().await?.len(), 1);
    }
    Ok(())
}

#[tokio::test]
async fn invalid_utf8_and_binary_garbage() -> TestResult {
    let sandbox = Sandbox::new()?;
    let server = sandbox
        .server(StoreConfig::default(), ServerConfig::default())
        .await?;
    let mut c = server.raw().await?;
    c.upload("victim", b"victim").await?;
    let before = sandbox.snapshot();
    // Invalid UTF-8 in every place a line is read: 400, and the connection goes on.
    for bytes in [
        &b"\xff\xfe\n"[..],
        b"UPLOAD \xc0\xae\xc0\xae/x;1\n", // over-long encoding of "../"
        b"DOWNLOAD \xed\xa0\x80\n",       // a UTF-16 surrogate
        b"DELETE vic\xe9tim\n",           // Latin-1
        b"RENAME victim\t\xff\n",
        b"UPLOAD\n\xff;1\n",
        b"DOWNLOAD\n\x80\n",
        b"RENAME victim\n\xfe\n",
        b"PUT \xff;3\nabc", // name not UTF-8: the line is refused whole, the body is unframed
    ] {
        let got = replies(&mut c, bytes).await?;
        let last = got.last().ok_or("no reply")?;
        assert_code(last, 400);
        if bytes.starts_with(b"PUT") {
            assert!(c.closed().await?);
            c = server.raw().await?;
        }
    }
    assert_same_tree(&before, &sandbox.snapshot());
    // Binary garbage, with line feeds: every line gets a refusal, in order.
    let mut noise = Noise::new(0x5eed);
    let mut garbage = noise.bytes(64 * 1024);
    // Keep every line under the limit, and make sure none starts like a real command.
    for (i, b) in garbage.iter_mut().enumerate() {
        if i % 200 == 199 {
            *b = b'\n';
        } else if *b == b'\n' {
            *b = 0;
        }
    }
    garbage.push(b'\n');
    let got = replies(&mut c, &garbage).await?;
    for r in &got {
        assert_code(r, 400);
    }
    // All-NUL and all-0xff lines.
    let got = replies(
        &mut c,
        &[
            vec![0u8; 4000],
            b"\n".to_vec(),
            vec![0xffu8; 4000],
            b"\n".to_vec(),
        ]
        .concat(),
    )
    .await?;
    assert_code(&got[0], 400);
    assert_code(&got[1], 400);
    assert_eq!(c.list().await?.len(), 1);
    assert_same_tree(&before, &sandbox.snapshot());
    // Garbage without line feeds is an over-long line: that connection closes, others live.
    let mut g = server.raw().await?;
    g.send(
        noise
            .bytes(20_000)
            .into_iter()
            .map(|b| if b == b'\n' { 0 } else { b })
            .collect::<Vec<_>>(),
    )
    .await
    .ok();
    assert_code(&g.line().await?, 414);
    assert_eq!(c.list().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn extra_bytes_after_a_body_are_read_as_commands() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    // UPLOAD: the body and, in the same segment, more than was declared.
    assert_code(&c.cmd("UPLOAD u.txt;5").await?, 350);
    c.send(b"helloLIST\nDELETE u.txt\n").await?;
    assert_eq!(
        c.line().await?,
        format!("226 {} Upload complete", md5_hex(b"hello"))
    );
    assert_eq!(c.line().await?, "210 1 file");
    c.line().await?;
    assert_eq!(c.line().await?, "250 Deleted u.txt");
    // PUT, with a larger body crossing the server's small-file threshold.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut batch = format!("PUT p.bin;{}\n", body.len()).into_bytes();
    batch.extend_from_slice(&body);
    batch.extend_from_slice(b"EXTRA-BYTES-NOT-A-COMMAND\nPUT q.txt;3\nabcxyz\n");
    c.send(&batch).await?;
    assert_eq!(
        c.line().await?,
        format!("226 {} Upload complete", md5_hex(&body))
    );
    assert_code(&c.line().await?, 400);
    assert_eq!(
        c.line().await?,
        format!("226 {} Upload complete", md5_hex(b"abc"))
    );
    assert_code(&c.line().await?, 400);
    assert_eq!(std::fs::read(server.root().join("p.bin"))?, body);
    assert_eq!(std::fs::read(server.root().join("q.txt"))?, b"abc");
    Ok(())
}

/// A client that pipelines thousands of commands and reads nothing until it has sent them all.
/// The server must keep answering in order once the client reads; what it holds meanwhile is
/// bounded by the socket buffers (checked on the real binary's memory in `load`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_commands_without_reading_is_answered_in_order() -> TestResult {
    let server = TestServer::start().await?;
    let mut c = server.raw().await?;
    c.upload("f", b"0123456789").await?;
    const N: usize = 20_000;
    let mut flood = Vec::new();
    for i in 0..N {
        match i % 4 {
            0 => flood.extend_from_slice(b"LIST\n"),
            1 => flood.extend_from_slice(b"DOWNLOAD f\n"),
            2 => flood.extend_from_slice(b"HELP\n"),
            _ => flood.extend_from_slice(b"FROB\n"),
        }
    }
    let Raw { mut reader, writer } = c;
    let send = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut writer = writer;
        tokio::time::timeout(WAIT * 3, writer.write_all(&flood)).await??;
        TestResult::Ok(writer)
    });
    // Read nothing for a while: the server must wait for us, not give up or buffer forever.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..N {
        let line = read_line(&mut reader).await?;
        match i % 4 {
            0 => {
                assert_eq!(line, "210 1 file");
                read_line(&mut reader).await?;
            }
            1 => {
                assert!(line.starts_with("213 10 "), "{i}: {line}");
                assert_eq!(read_bytes(&mut reader, 10).await?, b"0123456789");
            }
            2 => {
                let n = barge::protocol::HELP_LINES.len();
                assert!(line.starts_with(&format!("211 {n} ")), "{i}: {line}");
                for _ in 0..n {
                    read_line(&mut reader).await?;
                }
            }
            _ => assert_code(&line, 400),
        }
    }
    let mut r = Raw {
        reader,
        writer: send.await??,
    };
    assert_eq!(r.cmd("BYE").await?, "221 Bye");
    Ok(())
}

/// Symlinks inside the shared folder that point outside it: never listed, served, written
/// through, renamed through or deleted through; and the links themselves are left alone.
#[tokio::test]
async fn symlinks_pointing_outside_are_never_followed() -> TestResult {
    let sandbox = Sandbox::new()?;
    let root = sandbox.root_dir()?;
    let r = root.path();
    symlink(sandbox.outside.join("secret.txt"), r.join("link_file"))?;
    symlink(&sandbox.outside, r.join("link_dir"))?;
    std::fs::create_dir(r.join("sub"))?;
    symlink("../../outside", r.join("sub/relative_up"))?;
    symlink("/etc/passwd", r.join("passwd"))?;
    symlink("link_loop", r.join("link_loop"))?;
    std::fs::write(r.join("victim"), b"victim")?;
    let server =
        TestServer::start_with(root, StoreConfig::default(), ServerConfig::default()).await?;
    let mut c = server.raw().await?;
    let before = sandbox.snapshot();
    assert_eq!(
        c.list().await?,
        vec![(md5_hex(b"victim"), "victim".into(), 6)]
    );
    let secret_id = md5_hex(SECRET);
    for (cmd, want) in [
        ("DOWNLOAD link_file", 404),
        ("DOWNLOAD passwd", 404),
        ("DOWNLOAD link_loop", 404),
        ("DOWNLOAD link_dir/secret.txt", 404),
        ("DOWNLOAD link_dir/dir/inner.txt", 404),
        ("DOWNLOAD sub/relative_up/secret.txt", 404),
        (&format!("DOWNLOAD {secret_id}"), 404),
        ("UPLOAD link_file;3", 409),
        ("UPLOAD link_dir/new.txt;3", 409),
        ("UPLOAD link_dir/dir/new.txt;3", 409),
        ("UPLOAD sub/relative_up/new.txt;3", 409),
        ("UPLOAD link_loop/x;3", 409),
        ("RENAME victim\tlink_dir/moved", 409),
        ("RENAME victim\tlink_file", 409),
        ("RENAME victim\tsub/relative_up/moved", 409),
        ("RENAME link_file\tstolen", 404),
        ("RENAME link_dir/secret.txt\tstolen", 404),
        ("RENAME link_dir\tstolen", 404),
        ("DELETE link_file", 404),
        ("DELETE link_dir", 404),
        ("DELETE link_dir/secret.txt", 404),
        ("DELETE sub/relative_up/dir/inner.txt", 404),
        ("DELETE passwd", 404),
    ] {
        let got = c.cmd(cmd).await?;
        assert_code(&got, want);
    }
    // PUT through a link: the body is read and thrown away.
    c.send(b"PUT link_dir/put.txt;3\nabc").await?;
    assert_code(&c.line().await?, 409);
    assert_same_tree(&before, &sandbox.snapshot());
    Ok(())
}

/// The race of the issue: a subfolder is replaced by a symlink to the outside after the server
/// checked the name (`350` sent) and before the upload is linked into place.
#[tokio::test]
async fn symlink_swapped_in_during_an_upload_is_not_written_through() -> TestResult {
    let sandbox = Sandbox::new()?;
    let server = sandbox
        .server(StoreConfig::default(), ServerConfig::default())
        .await?;
    let r = server.root().to_path_buf();
    let mut c = server.raw().await?;
    for (i, size) in [10usize, 1 << 20].into_iter().enumerate() {
        std::fs::create_dir_all(r.join("sub"))?;
        assert_code(&c.cmd(&format!("UPLOAD sub/f{i};{size}")).await?, 350);
        c.send(vec![1u8; size / 2]).await?;
        std::fs::rename(r.join("sub"), r.join(format!("sub.orig{i}")))?;
        symlink(&sandbox.outside, r.join("sub"))?;
        let outside_before = snapshot(&sandbox.outside);
        c.send(vec![1u8; size - size / 2]).await?;
        assert_code(&c.line().await?, 409);
        assert_same_tree(&outside_before, &snapshot(&sandbox.outside));
        eventually(|| temp_files(&r) == 0).await?;
        std::fs::remove_file(r.join("sub"))?;
    }
    assert_code(&c.cmd("LIST").await?, 210);
    Ok(())
}

/// The same race, hammered: one thread swaps a real folder and a symlink to the outside back and
/// forth (atomically, with `RENAME_EXCHANGE`) while a client uploads into, downloads from,
/// renames within and deletes in that folder. Whatever interleaving happens, nothing outside
/// is created, changed or removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_swap_race_never_escapes() -> TestResult {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let sandbox = Sandbox::new()?;
    let server = sandbox
        .server(StoreConfig::default(), ServerConfig::default())
        .await?;
    let r = server.root().to_path_buf();
    // Files named like the outside ones, so a followed link would find something to hit.
    std::fs::create_dir_all(r.join("sub/dir"))?;
    std::fs::write(r.join("sub/secret.txt"), b"inside")?;
    std::fs::write(r.join("sub/dir/inner.txt"), b"inside")?;
    symlink(&sandbox.outside, r.join("swap"))?;
    let outside_before = snapshot(&sandbox.outside);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, a, b) = (stop.clone(), r.join("sub"), r.join("swap"));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).expect("exchange");
                swaps += 1;
            }
            swaps
        })
    };
    let mut c = server.raw().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut i = 0;
    while tokio::time::Instant::now() < deadline {
        i += 1;
        for cmd in [
            format!("UPLOAD sub/up{i};4"),
            "DOWNLOAD sub/secret.txt".to_owned(),
            format!("RENAME sub/secret.txt\tsub/moved{i}"),
            format!("RENAME sub/moved{i}\tsub/secret.txt"),
            "DELETE sub/dir/inner.txt".to_owned(),
        ] {
            let reply = c.cmd(&cmd).await?;
            if reply.starts_with("350 ") {
                c.send(b"data").await?;
                let done = c.line().await?;
                assert!(
                    done.starts_with("226 ") || done.starts_with("409 "),
                    "{done}"
                );
            } else if let Some(header) = reply.strip_prefix("213 ") {
                let size: usize = header.split(' ').next().unwrap_or_default().parse()?;
                assert_eq!(c.bytes(size).await?, b"inside");
            }
            assert!(!reply.starts_with('5'), "{cmd}: {reply}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().map_err(|_| "swapper panicked")?;
    assert!(swaps > 100, "only {swaps} swaps");
    assert_same_tree(&outside_before, &snapshot(&sandbox.outside));
    Ok(())
}

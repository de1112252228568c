//! Operability: the start-up banner, the audit log and the metrics.
//!
//! The audit lines are captured in process with the same JSON layer `barge serve --log-format
//! json` uses (a `tokio::test` runs the server's tasks on its own thread, where the capturing
//! subscriber is the default); the banner is read from the real binary.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use barge::server::ServerConfig;
use barge::store::StoreConfig;
use serde_json::Value;

use crate::common::{TestResult, TestServer, WAIT};

/// A writer into a shared buffer, for the log layer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }

    /// Every line, parsed (a line that is not JSON fails the test).
    fn json(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// The audit lines.
    fn audit(&self) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v["target"] == barge::server::audit::TARGET)
            .collect()
    }
}

/// The log of every test in this binary, as `barge serve --log-format json` writes it. One
/// global subscriber rather than one per test: `tracing` caches per call site whether any
/// subscriber wants it, and thread-local subscribers coming and going while other tests log
/// can leave a call site judged by another thread's state. Each test picks its own lines by
/// its clients' addresses (the `peer` of the connection's span).
fn capture() -> Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("barge=info"))
            .with_writer(move || writer.clone())
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        out
    })
    .clone()
}

/// The audit lines of the connection from `client`.
fn from(log: &Captured, client: std::net::SocketAddr) -> Vec<Value> {
    let peer = client.to_string();
    log.audit()
        .into_iter()
        .filter(|v| v["span"]["peer"] == peer.as_str())
        .collect()
}

/// The audit lines of `command`, with their outcomes.
fn of(lines: &[Value], command: &str) -> Vec<(String, Value)> {
    lines
        .iter()
        .filter(|v| v["fields"]["command"] == command)
        .map(|v| {
            (
                v["fields"]["outcome"].as_str().unwrap_or("").to_owned(),
                v.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_command_logs_one_audit_line_with_its_fields() -> TestResult {
    let log = capture();
    let server = TestServer::start().await?;
    let mut raw = server.raw().await?;
    let client = raw.writer.local_addr()?;
    let id = raw.upload("a.txt", b"hello").await?;

    let steps: &[(&str, &str, &str)] = &[
        ("UPLOAD a.txt;5", "upload", "409"),
        ("DOWNLOAD nothing.txt", "download", "404"),
        ("RENAME nothing.txt\tb.txt", "rename", "404"),
        ("DELETE nothing.txt", "delete", "404"),
        ("RENAME a.txt\tb.txt", "rename", "250"),
        ("PASS s3cret-password", "login", "400"),
        ("TOKEN barge_not_a_real_token_0123456789", "login", "530"),
        ("NONSENSE", "invalid", "4"),
    ];
    assert_eq!(raw.list().await?.len(), 1);
    for (line, _, code) in steps {
        let reply = raw.cmd(line).await?;
        assert!(reply.starts_with(code), "{line}: {reply}");
    }
    let (got, body) = raw.download(&id).await?;
    assert_eq!(got, id);
    assert_eq!(body, b"hello");
    assert!(raw.cmd("DELETE b.txt").await?.starts_with("250"));
    raw.cmd("DISCONNECT").await?;
    drop(raw);
    server.stop().await?;

    let lines = from(&log, client);
    // upload: one ok (the first) and one refused; the refused one names the file.
    let uploads = of(&lines, "upload");
    assert_eq!(uploads.len(), 2, "{uploads:#?}");
    let (outcome, ok) = &uploads[0];
    assert_eq!(outcome, "ok");
    assert_eq!(ok["fields"]["name"], "a.txt");
    assert_eq!(ok["fields"]["bytes"], 5);
    assert_eq!(ok["fields"]["id"], id.as_str());
    assert_eq!(ok["fields"]["code"], 226);
    assert!(ok["fields"]["duration_ms"].as_f64().is_some(), "{ok}");
    assert!(
        ok["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{ok}"
    );
    assert_eq!(ok["level"], "INFO");
    assert_eq!(uploads[1].0, "refused");
    assert_eq!(uploads[1].1["fields"]["code"], 409);
    assert!(uploads[1].1["fields"]["reason"].as_str().is_some());

    let outcomes = |c: &str| -> Vec<String> { of(&lines, c).into_iter().map(|(o, _)| o).collect() };
    assert_eq!(outcomes("list"), ["ok"]);
    assert_eq!(outcomes("download"), ["refused", "ok"]);
    assert_eq!(outcomes("rename"), ["refused", "ok"]);
    assert_eq!(outcomes("delete"), ["refused", "ok"]);
    assert_eq!(outcomes("login"), ["refused", "refused"]);
    assert_eq!(outcomes("invalid"), ["refused"]);
    assert_eq!(outcomes("connect"), ["ok"]);
    assert_eq!(outcomes("disconnect"), ["ok"]);
    let download = &of(&lines, "download")[1].1;
    // Asked for by id after the rename: the line names the file it found.
    assert_eq!(download["fields"]["name"], "b.txt");
    assert_eq!(download["fields"]["id"], id.as_str());
    assert_eq!(download["fields"]["bytes"], 5);
    let rename = &of(&lines, "rename")[1].1;
    assert_eq!(rename["fields"]["name"], "a.txt");
    assert_eq!(rename["fields"]["to"], "b.txt");
    assert_eq!(of(&lines, "delete")[1].1["fields"]["name"], "b.txt");

    let text = log.text();
    for secret in ["s3cret-password", "barge_not_a_real_token"] {
        assert!(!text.contains(secret), "a secret in the log: {text}");
    }
    Ok(())
}

#[tokio::test]
async fn pipelined_small_uploads_log_one_line_each_and_a_cut_upload_is_aborted() -> TestResult {
    let log = capture();
    let server = TestServer::start().await?;
    let mut raw = server.raw().await?;
    let client = raw.writer.local_addr()?;
    // Three small PUTs in one write: they are group-committed, yet each has its own line.
    raw.send(b"PUT a;1\naPUT b;1\nbPUT a;1\na").await?;
    for want in ["226", "226", "409"] {
        let reply = raw.line().await?;
        assert!(reply.starts_with(want), "{reply}");
    }
    // An upload whose sender leaves in the middle of its body.
    raw.send(b"UPLOAD big.bin;100000\n").await?;
    assert!(raw.line().await?.starts_with("350"));
    raw.send(vec![0u8; 1000]).await?;
    drop(raw);
    crate::common::eventually(|| {
        from(&log, client)
            .iter()
            .any(|v| v["fields"]["command"] == "disconnect")
    })
    .await?;
    server.stop().await?;
    let lines = from(&log, client);
    let uploads: Vec<(String, String)> = of(&lines, "upload")
        .into_iter()
        .map(|(o, v)| (v["fields"]["name"].as_str().unwrap_or("").to_owned(), o))
        .collect();
    let want: Vec<(String, String)> = [
        ("a", "ok"),
        ("b", "ok"),
        ("a", "refused"),
        ("big.bin", "aborted"),
    ]
    .iter()
    .map(|(n, o)| ((*n).to_owned(), (*o).to_owned()))
    .collect();
    assert_eq!(uploads, want);
    Ok(())
}

/// The value of one series in Prometheus text, every line checked to parse on the way.
fn series(text: &str, name: &str) -> f64 {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            key.starts_with("barge_") && key.chars().all(|c| !c.is_whitespace()),
            "bad series {line:?}"
        );
        if key == name {
            found = Some(value);
        }
    }
    found.unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_by_the_right_amounts() -> TestResult {
    let config = ServerConfig::default();
    let metrics = Arc::clone(&config.metrics);
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut raw = server.raw().await?;
    let big = vec![7u8; 300_000];
    raw.upload("one", b"0123456789").await?;
    let id = raw.upload("big", &big).await?;
    assert!(raw.cmd("UPLOAD one;3").await?.starts_with("409"));
    let (_, body) = raw.download(&id).await?;
    assert_eq!(body.len(), big.len());
    assert!(raw.cmd("DOWNLOAD nothing").await?.starts_with("404"));
    raw.list().await?;
    let text = metrics.encode();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let up = |o: &str| format!("barge_transfers_total{{direction=\"upload\",outcome=\"{o}\"}}");
    let down = |o: &str| format!("barge_transfers_total{{direction=\"download\",outcome=\"{o}\"}}");
    assert_eq!(series(&text, &up("ok")), 2.0);
    assert_eq!(series(&text, &up("refused")), 1.0);
    assert_eq!(series(&text, &down("ok")), 1.0);
    assert_eq!(series(&text, &down("refused")), 1.0);
    assert_eq!(series(&text, "barge_received_bytes_total"), 300_010.0);
    assert_eq!(series(&text, "barge_sent_bytes_total"), 300_000.0);
    assert_eq!(
        series(&text, "barge_connections_open{listener=\"tcp\"}"),
        1.0
    );
    assert_eq!(series(&text, "barge_temp_bytes_in_flight"), 0.0);
    assert_eq!(series(&text, "barge_index_files"), 2.0);
    assert_eq!(
        series(
            &text,
            "barge_request_duration_seconds_count{command=\"upload\",outcome=\"ok\"}"
        ),
        2.0
    );
    raw.cmd("DISCONNECT").await?;
    drop(raw);
    server.stop().await?;
    let text = metrics.encode();
    assert_eq!(
        series(&text, "barge_connections_open{listener=\"tcp\"}"),
        0.0
    );
    Ok(())
}

/// `barge serve` in the background with its stdout read line by line until `Press Ctrl-C`.
struct Banner {
    child: std::process::Child,
    text: String,
}

impl Banner {
    fn start(root: &std::path::Path, args: &[&str]) -> TestResult<Self> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
        cmd.arg("serve")
            .arg("--root")
            .arg(root)
            .args(["--port", "0"])
            .args(args)
            .env("BARGE_LOG", "barge=warn");
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> TestResult<Self> {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
                if line.starts_with("Press Ctrl-C") {
                    break;
                }
            }
            let _ = tx.send(text);
            // Keep reading, so the server's last words never meet a closed pipe.
            lines.for_each(drop);
        });
        let text = rx.recv_timeout(WAIT).map_err(|_| "no banner in time")?;
        Ok(Self { child, text })
    }
}

impl Drop for Banner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn banner_warns_on_loopback_and_its_command_works_when_pasted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("share");
    let server = Banner::start(&root, &["--host", "127.0.0.1"])?;
    let text = &server.text;
    assert!(text.contains("Warning: loopback only"), "{text}");
    assert!(text.contains("Created the folder"), "{text}");
    let command = text
        .lines()
        .skip_while(|l| !l.starts_with("From another machine:"))
        .nth(1)
        .ok_or_else(|| format!("no command in {text}"))?
        .trim();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"barge"), "{command}");
    assert!(words.contains(&"--fingerprint"), "{command}");
    std::fs::write(root.join("seen.txt"), b"x")?;
    let home = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(&words[1..])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env_remove("BARGE_HOST")
        .env_remove("BARGE_PORT")
        .stdin(Stdio::null())
        .output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command}: {out:?}");
    assert!(listing.contains("seen.txt"), "{listing}");
    Ok(())
}

#[test]
fn nothing_is_created_when_the_port_is_taken_or_the_root_is_wrong() -> TestResult {
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let root = dir.path().join("share");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_barge"))
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .output()
    };
    let root_s = root.to_str().ok_or("path")?;
    let out = run(&["--root", root_s, "--port", &port])?;
    assert!(!out.status.success());
    assert!(
        !root.exists(),
        "the root was created before the port was bound"
    );
    let deep = dir.path().join("typo/share");
    let out = run(&["--root", deep.to_str().ok_or("path")?, "--port", "0"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist, nor does its parent"), "{err}");
    assert!(!dir.path().join("typo").exists());
    let file = dir.path().join("file");
    std::fs::write(&file, b"x")?;
    let out = run(&["--root", file.to_str().ok_or("path")?, "--port", "0"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a file, not a folder"), "{err}");
    Ok(())
}

/// Removes the dummy interface when the test ends, whatever happens.
struct Dummy;

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", "barge0"]).status();
    }
}

/// Runs `ip ARGS`; whether it worked.
fn ip(args: &str) -> bool {
    Command::new("ip")
        .args(args.split(' '))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn banner_lists_a_lan_address_when_bound_to_any() -> TestResult {
    // A known non-loopback address, and no traffic goes to it: a dummy interface where the
    // kernel has them, else a network namespace of the server's own with the address on its
    // `lo` (containers often lack the dummy module but allow `unshare -n` as root).
    let _ = ip("link del barge0");
    let dummy = ip("link add barge0 type dummy")
        && ip("addr add 10.123.0.1/24 dev barge0")
        && ip("link set barge0 up");
    let _cleanup = Dummy;
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_str().ok_or("path")?;
    let serve = [
        env!("CARGO_BIN_EXE_barge"),
        "serve",
        "--root",
        root,
        "--port",
        "0",
        "--host",
        "0.0.0.0",
        "--public",
    ];
    let cmd = if dummy {
        let mut cmd = Command::new(serve[0]);
        cmd.args(&serve[1..]);
        cmd
    } else {
        let netns_works = Command::new("unshare")
            .args(["-n", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            netns_works,
            "this test needs root and either a dummy interface (ip link add barge0 type dummy) \
             or a network namespace (unshare -n); neither could be created"
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && ip addr add 10.123.0.1/32 dev lo && exec \"$@\"",
            "sh",
        ])
        .args(serve);
        cmd
    };
    let server = Banner::spawn(cmd)?;
    let text = &server.text;
    assert!(text.contains("Reachable at"), "{text}");
    assert!(text.contains("  10.123.0.1:"), "{text}");
    assert!(!text.contains("Warning: loopback only"), "{text}");
    assert!(text.contains("barge --host "), "{text}");
    Ok(())
}

#[test]
fn a_second_sigterm_stops_at_once_and_shows_nothing_partial() -> TestResult {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir()?;
    let mut server = crate::support::BinServer::start(dir.path(), &[])?;
    let mut tcp = std::net::TcpStream::connect(server.addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let mut greeting = [0u8; 64];
    let _ = tcp.read(&mut greeting)?;
    tcp.write_all(b"UPLOAD big.bin;10000000\n")?;
    let mut ready = [0u8; 64];
    let n = tcp.read(&mut ready)?;
    assert!(
        ready[..n].starts_with(b"350"),
        "{:?}",
        String::from_utf8_lossy(&ready[..n])
    );
    tcp.write_all(&[1u8; 100_000])?;
    let term = |pid: u32| {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
    };
    let started = std::time::Instant::now();
    assert!(term(server.pid())?.success());
    // The first signal starts the drain (the upload would get its grace period, 10 s);
    // the second must end the process well before that.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(term(server.pid())?.success());
    let status = loop {
        if let Some(status) = server.child.try_wait()? {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "still running after a second SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let visible: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != ".barge")
        .collect();
    assert!(visible.is_empty(), "partial files visible: {visible:?}");
    Ok(())
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body.
fn http(addr: &str, request: &str, body: &[u8]) -> TestResult<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    tcp.write_all(request.replace("\n", "\r\n").as_bytes())?;
    tcp.write_all(
        format!(
            "Host: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    tcp.write_all(body)?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// What follows `prefix` on the banner line that starts with it.
fn after<'a>(text: &'a str, prefix: &str) -> TestResult<&'a str> {
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .ok_or_else(|| format!("no {prefix:?} in {text}"))?
        .trim())
}

/// More small uploads than one group commit takes (256).
const PIPELINED: usize = 300;

/// Also checks that a group commit's audit lines, written together (`log_out`), arrive whole
/// and in order.
#[test]
fn the_binary_logs_json_audit_lines_for_tcp_and_web_and_serves_metrics() -> TestResult {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("stderr.log");
    let root = dir.path().join("share");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
    cmd.args([
        "--plain",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--root",
    ])
    .arg(&root)
    .args(["--log-format", "json", "--metrics", "127.0.0.1:0"])
    .args(["--web", "127.0.0.1:0"])
    .env_remove("BARGE_LOG")
    .stderr(std::fs::File::create(&log)?);
    let mut server = Banner::spawn(cmd)?;
    let text = server.text.clone();
    let tcp_addr = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .ok_or("no address")?
        .to_owned();
    let metrics = after(&text, "Metrics: http://")?
        .strip_suffix("/metrics")
        .ok_or("no /metrics")?
        .to_owned();
    let web = after(&text, "Web page: http://")?
        .trim_end_matches('/')
        .to_owned();

    // One upload over TCP.
    let mut tcp = std::net::TcpStream::connect(&tcp_addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let mut buf = [0u8; 256];
    let _ = tcp.read(&mut buf)?;
    tcp.write_all(b"UPLOAD a.txt;5\n")?;
    let n = tcp.read(&mut buf)?;
    assert!(buf[..n].starts_with(b"350"));
    tcp.write_all(b"hello")?;
    let n = tcp.read(&mut buf)?;
    assert!(
        buf[..n].starts_with(b"226"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    tcp.write_all(b"DISCONNECT\n")?;
    let _ = tcp.read(&mut buf)?;
    drop(tcp);

    // Pipelined small uploads: two group commits, whose audit lines are written together.
    let mut tcp = std::net::TcpStream::connect(&tcp_addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let mut puts = Vec::new();
    for i in 0..PIPELINED {
        puts.extend_from_slice(format!("PUT p{i:03}.txt;3\n{i:03}").as_bytes());
    }
    puts.extend_from_slice(b"DISCONNECT\n");
    tcp.write_all(&puts)?;
    let mut replies = String::new();
    std::io::BufReader::new(tcp).read_to_string(&mut replies)?;
    assert_eq!(
        replies.lines().filter(|l| l.starts_with("226 ")).count(),
        PIPELINED,
        "{replies}"
    );

    // One upload, one refused upload and one download over the web.
    assert_eq!(http(&web, "PUT /files/w.txt HTTP/1.1\n", b"abc")?.0, 201);
    assert_eq!(http(&web, "PUT /files/w.txt HTTP/1.1\n", b"abc")?.0, 409);
    let (status, body) = http(&web, "GET /files/w.txt HTTP/1.1\n", b"")?;
    assert_eq!((status, body.as_str()), (200, "abc"));

    let (status, metrics) = http(&metrics, "GET /metrics HTTP/1.1\n", b"")?;
    assert_eq!(status, 200);
    let up = |o: &str| format!("barge_transfers_total{{direction=\"upload\",outcome=\"{o}\"}}");
    let piped = PIPELINED as f64;
    assert_eq!(series(&metrics, &up("ok")), 2.0 + piped, "{metrics}");
    assert_eq!(series(&metrics, &up("refused")), 1.0, "{metrics}");
    assert_eq!(
        series(&metrics, "barge_received_bytes_total"),
        8.0 + 3.0 * piped
    );
    assert_eq!(series(&metrics, "barge_sent_bytes_total"), 3.0);
    assert_eq!(series(&metrics, "barge_index_files"), 2.0 + piped);
    assert!(
        metrics.contains("barge_connections_open{listener=\"web\"}"),
        "{metrics}"
    );

    // SIGTERM, and the log is complete.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let _ = server.child.wait()?;
    let lines: Vec<Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                format!(
                    "not JSON: {l:?}: {e} in {:?}",
                    std::fs::read_to_string(&log)
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"] == barge::server::audit::TARGET)
        .collect();
    let uploads: Vec<(String, String, String)> = audit
        .iter()
        .filter(|v| v["fields"]["command"] == "upload")
        .map(|v| {
            let s = |x: &Value| x.as_str().unwrap_or("").to_owned();
            (
                s(&v["span"]["name"]),
                s(&v["fields"]["name"]),
                s(&v["fields"]["outcome"]),
            )
        })
        .collect();
    let piped =
        (0..PIPELINED).map(|i| ("conn".to_owned(), format!("p{i:03}.txt"), "ok".to_owned()));
    let want: Vec<(String, String, String)> = std::iter::once(("conn", "a.txt", "ok"))
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        .chain(piped)
        .chain(
            [("web", "w.txt", "ok"), ("web", "w.txt", "refused")]
                .iter()
                .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned())),
        )
        .collect();
    assert_eq!(uploads, want, "{audit:#?}");
    for line in &audit {
        assert!(
            line["span"]["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{line}"
        );
    }
    let downloads = audit
        .iter()
        .filter(|v| v["fields"]["command"] == "download" && v["fields"]["outcome"] == "ok")
        .count();
    assert_eq!(downloads, 1);
    Ok(())
}

#[test]
fn on_a_terminal_the_qr_code_carries_a_fresh_token_only_with_qr_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("share");
    std::fs::create_dir(&root)?;
    let barge = env!("CARGO_BIN_EXE_barge");
    let root_s = root.to_str().ok_or("path")?;
    let added = Command::new(barge)
        .args(["user", "add", "alice", "--root", root_s])
        .env("BARGE_PASSWORD", "correct horse battery")
        .stdin(Stdio::null())
        .output()?;
    assert!(added.status.success(), "{added:?}");
    let tokens = || -> TestResult<String> {
        let out = Command::new(barge)
            .args(["token", "list", "--root", root_s])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // `script` gives the server a terminal for its standard output, as a person's would be.
    let on_a_terminal = |extra: &str| -> TestResult<Banner> {
        let line = format!(
            "{barge} serve --root {root_s} --host 127.0.0.1 --port 0 --web 127.0.0.1:0 {extra}"
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"])
            .env("BARGE_LOG", "barge=warn");
        Banner::spawn(cmd)
    };
    let plain = on_a_terminal("")?;
    assert!(
        plain.text.contains('▀') || plain.text.contains('▄'),
        "{}",
        plain.text
    );
    assert!(!plain.text.contains("new token"), "{}", plain.text);
    drop(plain);
    assert!(
        !tokens()?.contains("qr"),
        "a token was made without --qr-token"
    );
    let with_token = on_a_terminal("--qr-token --perm get")?;
    assert!(
        with_token
            .text
            .contains("The QR code logs in with a new token"),
        "{}",
        with_token.text
    );
    drop(with_token);
    assert!(tokens()?.contains("qr"), "{}", tokens()?);
    Ok(())
}

#[test]
fn a_root_the_user_cannot_read_or_write_is_refused_in_words() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;
    // Root reads and writes everything: the server runs as `nobody` here (setpriv, as root).
    let can_switch = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        can_switch,
        "this test needs root and setpriv (util-linux) to run the server as nobody"
    );
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let cases = [
        ("unwritable", 0o555, "cannot write to the shared folder"),
        ("unreadable", 0o300, "cannot read the shared folder"),
    ];
    for (name, mode, want) in cases {
        let root = dir.path().join(name);
        std::fs::create_dir(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode))?;
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_barge"))
            .args(["serve", "--read-only", "--port", "0", "--root"])
            .arg(&root)
            .stdin(Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {out:?}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!root.join(".barge").exists(), "{name}: state created");
    }
    Ok(())
}

#[tokio::test]
async fn a_reported_md5_mismatch_is_counted_and_audited() -> TestResult {
    let config = ServerConfig::default();
    let metrics = Arc::clone(&config.metrics);
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut raw = server.raw().await?;
    raw.upload("one", b"0123456789").await?;
    assert_eq!(series(&metrics.encode(), "barge_md5_mismatches_total"), 0.0);
    assert_eq!(
        raw.cmd("MISMATCH one").await?,
        "250 Noted: a checksum mismatch was reported"
    );
    assert!(raw.cmd("MISMATCH").await?.starts_with("400"));
    assert_eq!(series(&metrics.encode(), "barge_md5_mismatches_total"), 1.0);
    // Nothing was changed by the report.
    assert_eq!(raw.list().await?.len(), 1);
    Ok(())
}

/// `--web-max-connections-per-ip` reaches the gateway: with 2, a third connection from the same
/// address is closed at accept while the first two stay open (the default, 16, would keep it).
#[test]
fn the_web_connection_limits_come_from_the_flags() -> TestResult {
    use std::io::Read as _;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("share");
    let server = Banner::start(
        &root,
        &[
            "--plain",
            "--host",
            "127.0.0.1",
            "--web",
            "127.0.0.1:0",
            "--web-max-connections-per-ip",
            "2",
        ],
    )?;
    let web = after(&server.text, "Web page: http://")?
        .trim_end_matches('/')
        .to_owned();
    // Whether the server closes `s` within `wait` (end of stream or reset), sending nothing.
    let closed_within = |s: &mut std::net::TcpStream, wait: Duration| -> TestResult<bool> {
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        let start = Instant::now();
        let mut buf = [0u8; 64];
        while start.elapsed() < wait {
            match s.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => return Err(format!("unexpected {n} bytes").into()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Ok(true),
            }
        }
        Ok(false)
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(std::net::TcpStream::connect(&web)?);
    }
    let mut third = std::net::TcpStream::connect(&web)?;
    assert!(
        closed_within(&mut third, Duration::from_secs(3))?,
        "a third connection from one address was kept with --web-max-connections-per-ip 2"
    );
    for s in &mut held {
        assert!(
            !closed_within(s, Duration::from_millis(300))?,
            "a connection within the limit was closed"
        );
    }
    // Once one is gone, its slot is free again: a request is answered.
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        match http(&web, "GET /api/files HTTP/1.1\n", b"") {
            Ok((200, _)) => break,
            other if Instant::now() > deadline => {
                return Err(format!("not served after a slot was freed: {other:?}").into());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(())
}

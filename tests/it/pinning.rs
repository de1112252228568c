//! The real binary over TLS, as a user meets it: first contact, pinning like ssh's
//! `known_hosts`, a changed identity refused with exit status 5, and each wrong mode named.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::str::contains;

use crate::common::TestResult;
use crate::support::BinServer;

/// `barge` as a user runs it, with its own config folder (where pins are kept) and no terminal.
fn barge(port: u16, work: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
    cmd.current_dir(work)
        .env("BARGE_HOST", "127.0.0.1")
        .env("BARGE_PORT", port.to_string())
        .env("XDG_CONFIG_HOME", config)
        .env("BARGE_HISTORY", "")
        .env_remove("BARGE_PLAIN")
        .env_remove("BARGE_LOG")
        .timeout(Duration::from_secs(30));
    cmd
}

fn fingerprint_of(state: &Path) -> TestResult<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["serve", "--show-identity", "--state-dir"])
        .arg(state)
        .output()?;
    assert!(out.status.success(), "{out:?}");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[test]
fn first_contact_pinning_and_a_changed_identity() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let config = tempfile::tempdir()?;
    let server = BinServer::start_tls(root.path(), &[])?;
    let port = server.addr.port();
    let key = fingerprint_of(&root.path().join(".barge"))?;
    assert!(key.starts_with("SHA256:"), "{key}");

    // No terminal, key unknown: refused with 5, the key shown, nothing pinned.
    barge(port, work.path(), config.path())
        .arg("ls")
        .assert()
        .code(5)
        .stderr(contains(key.as_str()))
        .stderr(contains("--fingerprint"));
    assert!(!config.path().join("barge/known_hosts").exists());

    // --show-identity makes no identity where there is none.
    let empty = tempfile::tempdir()?;
    Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["serve", "--show-identity", "--state-dir"])
        .arg(empty.path())
        .assert()
        .failure()
        .stderr(contains("no identity"));
    assert_eq!(std::fs::read_dir(empty.path())?.count(), 0);

    // A wrong --fingerprint is refused too.
    barge(port, work.path(), config.path())
        .args([
            "--fingerprint",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ls",
        ])
        .assert()
        .code(5);

    // --trust-new pins it, in a private file.
    std::fs::write(work.path().join("a.txt"), b"hello")?;
    barge(port, work.path(), config.path())
        .args(["--trust-new", "put", "a.txt"])
        .assert()
        .success()
        .stderr(contains(key.as_str()));
    let pins = config.path().join("barge/known_hosts");
    let text = std::fs::read_to_string(&pins)?;
    assert!(text.contains(&format!("127.0.0.1:{port} {key}")), "{text}");
    assert_eq!(std::fs::metadata(&pins)?.permissions().mode() & 0o077, 0);

    // From now on, no flag needed.
    barge(port, work.path(), config.path())
        .arg("ls")
        .assert()
        .success()
        .stdout(contains("a.txt"));

    // Another server (another key) on the same address: a man in the middle, as far as the
    // client can tell. Refused with 5 even with --trust-new; the pin stays; nothing is sent.
    server.kill()?;
    let impostor_root = tempfile::tempdir()?;
    let impostor = BinServer::start_on(impostor_root.path(), port, &[])?;
    assert_eq!(impostor.addr.port(), port);
    for extra in [&[][..], &["--trust-new"][..]] {
        barge(port, work.path(), config.path())
            .args(extra)
            .args(["put", "a.txt"])
            .assert()
            .code(5)
            .stderr(contains("identity of 127.0.0.1"))
            .stderr(contains("changed"));
    }
    assert_eq!(std::fs::read_to_string(&pins)?, text);
    let stored: Vec<_> = std::fs::read_dir(impostor_root.path())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != ".barge")
        .collect();
    assert!(stored.is_empty(), "the impostor received {stored:?}");
    Ok(())
}

#[test]
fn the_right_fingerprint_is_trusted_and_pinned() -> TestResult {
    let root = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let config = tempfile::tempdir()?;
    let server = BinServer::start_tls(root.path(), &[])?;
    let key = fingerprint_of(&root.path().join(".barge"))?;
    barge(server.addr.port(), work.path(), config.path())
        .args(["--fingerprint", &key, "ls"])
        .assert()
        .success();
    let text = std::fs::read_to_string(config.path().join("barge/known_hosts"))?;
    assert!(text.contains(&key), "{text}");
    Ok(())
}

#[test]
fn each_wrong_mode_is_named_within_five_seconds() -> TestResult {
    let work = tempfile::tempdir()?;
    let config = tempfile::tempdir()?;

    // A TLS client meeting a plain server.
    let plain_root = tempfile::tempdir()?;
    let plain = BinServer::start(plain_root.path(), &[])?;
    let started = Instant::now();
    barge(plain.addr.port(), work.path(), config.path())
        .args(["--trust-new", "ls"])
        .assert()
        .code(3)
        .stderr(contains("plain text"))
        .stderr(contains("--plain"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // A plain client meeting a TLS server.
    let tls_root = tempfile::tempdir()?;
    let tls = BinServer::start_tls(tls_root.path(), &[])?;
    let started = Instant::now();
    barge(tls.addr.port(), work.path(), config.path())
        .args(["--plain", "ls"])
        .assert()
        .code(3)
        .stderr(contains("expects TLS"))
        .stderr(contains("drop --plain"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Neither attempt pinned anything.
    assert!(!config.path().join("barge/known_hosts").exists());
    Ok(())
}

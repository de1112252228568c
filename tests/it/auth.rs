//! Logins, permissions, confinement, the login slowdown and pairing (`PROTOCOL.md` sections 3,
//! 5.9 and 5.10), against in-process servers with a real user database, and the binary's
//! secure default, secret handling and pairing end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use barge::client::{AnyStream, Client, ClientError, Security};
use barge::protocol::Code;
use barge::security::identity::Identity;
use barge::security::pair::PairCode;
use barge::security::throttle::Policy;
use barge::security::tls::{self, Expectation};
use barge::security::users::{Permissions, Scope, Users};
use barge::server::{Access, AccessOptions, Grant, ServerConfig, Tls};
use barge::store::StoreConfig;
use tempfile::TempDir;
use tokio::io::BufReader;
use tokio::net::TcpSocket;

use crate::common::{Raw, TestResult, TestServer, WAIT, md5_hex};

const PASSWORD: &str = "correct horse battery staple";

/// A server with a user database in its own folder; `users` are (name, perms, folder).
struct AuthServer {
    server: TestServer,
    access: Arc<Access>,
    _state: TempDir,
}

fn options(loopback: bool, tls: bool) -> AccessOptions {
    AccessOptions {
        public: false,
        read_only: false,
        loopback,
        tls,
    }
}

async fn auth_server(
    users: &[(&str, Permissions, Option<&str>)],
    policy: Policy,
    tls_identity: Option<&Identity>,
) -> TestResult<AuthServer> {
    let state = tempfile::tempdir()?;
    let db = Users::open(state.path())?;
    for (name, perms, folder) in users {
        let scope = match folder {
            Some(f) => Scope::parse(f)?,
            None => Scope::whole_share(),
        };
        db.add_user(name, PASSWORD, *perms, &scope)?;
    }
    let access = Arc::new(Access::with_policy(
        db,
        options(true, tls_identity.is_some()),
        policy,
    ));
    let config = ServerConfig {
        access: Arc::clone(&access),
        ..ServerConfig::default()
    };
    let dir = tempfile::tempdir()?;
    let server = match tls_identity {
        Some(id) => {
            TestServer::start_accepting(
                dir,
                StoreConfig::default(),
                config,
                Tls::new(tls::server_config(id)?),
            )
            .await?
        }
        None => TestServer::start_with(dir, StoreConfig::default(), config).await?,
    };
    Ok(AuthServer {
        server,
        access,
        _state: state,
    })
}

/// A raw client logged in as `user`.
async fn logged_in(server: &TestServer, user: &str) -> TestResult<Raw> {
    let mut raw = server.raw().await?;
    assert_eq!(raw.cmd(&format!("USER {user}")).await?, "334 Send PASS");
    let reply = raw.cmd(&format!("PASS {PASSWORD}")).await?;
    assert!(reply.starts_with(&format!("230 {user} ")), "{reply}");
    Ok(raw)
}

fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

#[tokio::test]
async fn a_logged_out_session_may_only_log_in_and_a_failed_login_changes_nothing() -> TestResult {
    let s = auth_server(
        &[("alice", Permissions::ALL, None)],
        Policy::default(),
        None,
    )
    .await?;
    std::fs::write(s.server.root().join("a.txt"), b"abc")?;
    let mut raw = s.server.raw().await?;
    for cmd in [
        "LIST_FILES",
        "DOWNLOAD a.txt",
        "DOWNLOAD",
        "UPLOAD x;1",
        "UPLOAD",
        "RENAME a.txt\tb.txt",
        "RENAME",
        "DELETE a.txt",
        "DELETE",
    ] {
        assert_eq!(
            raw.cmd(cmd).await?,
            "530 Log in first (USER/PASS, TOKEN, or barge pair)",
            "{cmd}"
        );
    }
    // A PUT's body is read and discarded before the 530, so the next line is a command.
    raw.send("PUT p.txt;5\nhelloHELP\n").await?;
    assert!(raw.line().await?.starts_with("530 "));
    assert!(raw.line().await?.starts_with("211 "));
    for _ in 0..barge::protocol::HELP_LINES.len() {
        raw.line().await?;
    }
    assert_eq!(raw.cmd("PASS x").await?, "400 Send USER first");
    assert_eq!(
        raw.cmd("USER nobody").await?,
        "334 Send PASS",
        "names cannot be probed"
    );
    assert_eq!(raw.cmd("PASS wrong").await?, "530 Login incorrect");
    assert_eq!(raw.cmd("USER alice").await?, "334 Send PASS");
    assert_eq!(raw.cmd("PASS wrong").await?, "530 Login incorrect");
    assert_eq!(raw.cmd("LIST_FILES").await?.get(..3), Some("530"));
    // USER and PASS may be pipelined.
    raw.send(format!("USER alice\nPASS {PASSWORD}\n")).await?;
    assert_eq!(raw.line().await?, "334 Send PASS");
    assert_eq!(raw.line().await?, "230 alice get,put,modify Logged in");
    assert_eq!(raw.list().await?.len(), 1);
    assert_eq!(
        raw.cmd("USER alice").await?,
        "400 Already logged in; reconnect to change user"
    );
    assert_eq!(raw.cmd("TOKEN barge_x").await?.get(..3), Some("400"));
    // Nothing was stored or changed by the refused commands.
    assert!(!s.server.root().join("p.txt").exists());
    assert!(!s.server.root().join("b.txt").exists());
    assert!(s.server.root().join("a.txt").exists());
    Ok(())
}

#[tokio::test]
async fn each_permission_per_command_in_one_line_and_prompt_forms() -> TestResult {
    let get_only = Permissions {
        put: false,
        modify: false,
        ..Permissions::ALL
    };
    let put_only = Permissions {
        get: false,
        modify: false,
        ..Permissions::ALL
    };
    let modify_only = Permissions {
        get: false,
        put: false,
        ..Permissions::ALL
    };
    let users = [
        ("all", Permissions::ALL, None),
        ("reader", Permissions::READ_ONLY, None),
        ("getter", get_only, None),
        ("putter", put_only, None),
        ("modifier", modify_only, None),
        ("dropper", Permissions::DROP_BOX, None),
    ];
    let s = auth_server(&users, Policy::default(), None).await?;
    for (user, perms, _) in users {
        std::fs::write(s.server.root().join("f.txt"), b"file")?;
        let mut raw = logged_in(&s.server, user).await?;
        let allowed = |ok: bool, reply: &str, what: &str| {
            if ok {
                assert_ne!(code(reply), "403", "{user} {what}: {reply}");
            } else {
                assert_eq!(reply, "403 Not allowed for this user", "{user} {what}");
            }
        };
        let r = raw.cmd("LIST_FILES").await?;
        allowed(perms.may_list(), &r, "LIST_FILES");
        if code(&r) == "210" {
            let count: usize = r[4..].split(' ').next().unwrap_or("0").parse()?;
            for _ in 0..count {
                raw.line().await?;
            }
        }
        for form in ["DOWNLOAD f.txt", "DOWNLOAD"] {
            let r = raw.cmd(form).await?;
            allowed(perms.may_get(), &r, form);
            match code(&r) {
                "213" => drop(raw.bytes(4).await?),
                "331" => {
                    assert!(raw.cmd("f.txt").await?.starts_with("213 "));
                    raw.bytes(4).await?;
                }
                _ => {}
            }
        }
        let r = raw.cmd(&format!("UPLOAD {user}1;1")).await?;
        allowed(perms.may_put(), &r, "UPLOAD one-line");
        if code(&r) == "350" {
            raw.send("x").await?;
            assert!(raw.line().await?.starts_with("226 "));
        }
        let r = raw.cmd("UPLOAD").await?;
        allowed(perms.may_put(), &r, "UPLOAD prompt");
        if code(&r) == "330" {
            assert!(raw.cmd(&format!("{user}2;1")).await?.starts_with("350 "));
            raw.send("y").await?;
            assert!(raw.line().await?.starts_with("226 "));
        }
        raw.send(format!("PUT {user}3;1\nz")).await?;
        let r = raw.line().await?;
        allowed(perms.may_put(), &r, "PUT");
        assert_eq!(
            s.server.root().join(format!("{user}3")).exists(),
            perms.may_put()
        );
        let r = raw.cmd("RENAME f.txt\tg.txt").await?;
        allowed(perms.may_modify(), &r, "RENAME one-line");
        let r = raw.cmd("RENAME").await?;
        allowed(perms.may_modify(), &r, "RENAME prompt");
        if code(&r) == "332" {
            assert_eq!(code(&raw.cmd("g.txt").await?), "333");
            assert_eq!(code(&raw.cmd("h.txt").await?), "250");
        }
        let r = raw.cmd("DELETE h.txt").await?;
        allowed(perms.may_modify(), &r, "DELETE one-line");
        let r = raw.cmd("DELETE").await?;
        allowed(perms.may_modify(), &r, "DELETE prompt");
        if code(&r) == "331" {
            assert_eq!(code(&raw.cmd("nothing.txt").await?), "404");
        }
        assert_eq!(
            s.server.root().join("f.txt").exists(),
            !perms.may_modify(),
            "{user}"
        );
        // A drop box cannot overwrite: an existing name is a conflict.
        if user == "dropper" {
            assert_eq!(code(&raw.cmd("UPLOAD f.txt;1").await?), "409");
        }
        let _ = std::fs::remove_file(s.server.root().join("h.txt"));
    }
    Ok(())
}

#[tokio::test]
async fn a_confined_user_cannot_reach_outside_its_folder_by_any_form() -> TestResult {
    let s = auth_server(
        &[
            ("bob", Permissions::ALL, Some("box")),
            ("admin", Permissions::ALL, None),
        ],
        Policy::default(),
        None,
    )
    .await?;
    let root = s.server.root().to_owned();
    std::fs::create_dir_all(root.join("box"))?;
    std::fs::create_dir_all(root.join("boxx"))?;
    std::fs::write(root.join("secret.txt"), b"top secret")?;
    std::fs::write(root.join("boxx/near.txt"), b"near")?;
    std::fs::write(root.join("box/in.txt"), b"inside")?;
    let secret_id = md5_hex(b"top secret");
    let mut bob = logged_in(&s.server, "bob").await?;
    let listing = bob.list().await?;
    let names: Vec<&str> = listing.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, ["in.txt"]);
    for what in [
        "secret.txt",
        secret_id.as_str(),
        "boxx/near.txt",
        "box/in.txt",
    ] {
        assert_eq!(
            code(&bob.cmd(&format!("DOWNLOAD {what}")).await?),
            "404",
            "{what}"
        );
        assert_eq!(
            code(&bob.cmd(&format!("DELETE {what}")).await?),
            "404",
            "{what}"
        );
        assert_eq!(
            code(&bob.cmd(&format!("RENAME {what}\tstolen")).await?),
            "404",
            "{what}"
        );
    }
    for what in [
        "../secret.txt",
        "/secret.txt",
        "..",
        "a/../../secret.txt",
        "\\secret.txt",
    ] {
        let r = bob.cmd(&format!("DOWNLOAD {what}")).await?;
        assert!(matches!(code(&r), "422" | "404"), "{what}: {r}");
    }
    assert_eq!(code(&bob.cmd("RENAME in.txt\t../out.txt").await?), "422");
    assert_eq!(code(&bob.cmd("RENAME in.txt\t/out.txt").await?), "422");
    assert_eq!(
        bob.cmd("RENAME in.txt\tsub/moved.txt").await?,
        "250 Renamed in.txt to sub/moved.txt"
    );
    assert!(root.join("box/sub/moved.txt").exists());
    bob.upload("up.txt", b"up").await?;
    assert!(root.join("box/up.txt").exists());
    // The same content inside the folder: its id now finds the inside copy only.
    bob.upload("copy.txt", b"top secret").await?;
    let head = bob.cmd(&format!("DOWNLOAD {secret_id}")).await?;
    assert_eq!(head, format!("213 10 {secret_id} copy.txt"));
    bob.bytes(10).await?;
    assert_eq!(
        bob.cmd(&format!("DELETE {secret_id}")).await?,
        "250 Deleted copy.txt"
    );
    assert!(root.join("secret.txt").exists());
    // Error messages never show the real path.
    let r = bob.cmd("UPLOAD up.txt;1").await?;
    assert_eq!(code(&r), "409");
    assert!(!r.contains("box/"), "{r}");
    // The unconfined user sees everything.
    let mut admin = logged_in(&s.server, "admin").await?;
    assert_eq!(admin.list().await?.len(), 4);
    Ok(())
}

/// A raw plain connection from `source` (another loopback address counts as another peer).
async fn raw_from(source: &str, addr: SocketAddr) -> TestResult<Raw> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let stream = tokio::time::timeout(WAIT, socket.connect(addr)).await??;
    let (r, w) = stream.into_split();
    let mut raw = Raw {
        reader: BufReader::new(r),
        writer: w,
    };
    assert_eq!(raw.line().await?, "220 barge/1 ready");
    Ok(raw)
}

#[tokio::test]
async fn brute_force_is_slowed_per_address_and_another_address_logs_in_at_once() -> TestResult {
    let base = Duration::from_secs(2);
    let policy = Policy {
        free_failures: 2,
        base,
        ..Policy::default()
    };
    let s = auth_server(&[("alice", Permissions::ALL, None)], policy, None).await?;
    let mut attacker = raw_from("127.0.0.1", s.server.addr).await?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        attacker.cmd("USER alice").await?;
        assert_eq!(attacker.cmd("PASS guess").await?, "530 Login incorrect");
        times.push(started.elapsed());
    }
    // The first two are free, the third waits the first step.
    assert!(times[0] < base && times[1] < base, "{times:?}");
    assert!(times[2] >= base, "{times:?}");
    // Another address is not slowed, even while this one is.
    let mut other = raw_from("127.0.0.2", s.server.addr).await?;
    let started = Instant::now();
    other.cmd("USER alice").await?;
    assert!(
        other
            .cmd(&format!("PASS {PASSWORD}"))
            .await?
            .starts_with("230 ")
    );
    assert!(started.elapsed() < base, "{:?}", started.elapsed());
    // The right password from the slowed address still works, after its wait.
    let started = Instant::now();
    attacker.cmd("USER alice").await?;
    assert!(
        attacker
            .cmd(&format!("PASS {PASSWORD}"))
            .await?
            .starts_with("230 ")
    );
    // The fourth attempt owes the second step (2 × base), counted from the last failure.
    assert!(started.elapsed() >= base * 3 / 2, "{:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn anonymous_access_ends_when_the_first_user_is_added_without_a_restart() -> TestResult {
    let s = auth_server(&[], Policy::default(), None).await?;
    let mut before = s.server.raw().await?;
    assert_eq!(before.list().await?.len(), 0);
    let users = s.access.users().ok_or("no database")?;
    users.create_token("t", Permissions::READ_ONLY, &Scope::whole_share())?;
    let mut after = s.server.raw().await?;
    assert_eq!(code(&after.cmd("LIST_FILES").await?), "530");
    Ok(())
}

#[tokio::test]
async fn a_plain_server_on_a_network_address_takes_no_secrets() -> TestResult {
    let state = tempfile::tempdir()?;
    let db = Users::open(state.path())?;
    db.add_user("alice", PASSWORD, Permissions::ALL, &Scope::whole_share())?;
    let config = ServerConfig {
        access: Arc::new(Access::new(db, options(false, false))),
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_with(tempfile::tempdir()?, StoreConfig::default(), config).await?;
    let mut raw = server.raw().await?;
    assert_eq!(code(&raw.cmd("USER alice").await?), "403");
    assert_eq!(code(&raw.cmd("TOKEN barge_x").await?), "403");
    assert_eq!(code(&raw.cmd("LIST_FILES").await?), "530");
    Ok(())
}

async fn tls_client(
    addr: SocketAddr,
) -> TestResult<(
    Client<AnyStream>,
    Option<barge::security::identity::Fingerprint>,
)> {
    Ok(Client::connect_with(
        &addr.to_string(),
        WAIT,
        Security::Tls(Expectation::FirstContact),
    )
    .await?)
}

#[tokio::test]
async fn pairing_with_the_right_code_pins_the_key_and_grants_the_chosen_token() -> TestResult {
    let identity = Identity::generate()?;
    let s = auth_server(&[], Policy::default(), Some(&identity)).await?;
    let grant = Grant {
        perms: Permissions::READ_ONLY,
        folder: Scope::parse("shared")?,
        label: "laptop".into(),
    };
    let code = s.access.issue_code(grant, Duration::from_secs(600))?;
    let (mut client, presented) = tls_client(s.server.addr).await?;
    assert_eq!(presented, Some(identity.fingerprint()));
    let paired = client.pair(&code).await?;
    assert!(paired.token().starts_with("barge_"));
    assert!(paired.principal.starts_with("token:"));
    // The session is logged in as the token, with the chosen permissions.
    let e = client
        .rename(
            &barge::protocol::FileRef::parse("a")?,
            &barge::name::FileName::parse("b")?,
        )
        .await;
    assert!(matches!(e, Err(ClientError::Refused { code, .. }) if code == Code::FORBIDDEN));
    // The token works on a new connection; the code is used up.
    let (mut again, _) = tls_client(s.server.addr).await?;
    let who = again.login_token(paired.token()).await?;
    assert_eq!(who.perms, "get");
    let tokens = s.access.users().ok_or("no db")?.list_tokens()?;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].folder, Scope::parse("shared")?);
    let (mut late, _) = tls_client(s.server.addr).await?;
    assert!(matches!(
        late.pair(&code).await,
        Err(ClientError::Refused { code, .. }) if code == Code::PAIR_FAILED
    ));
    Ok(())
}

#[tokio::test]
async fn a_wrong_code_fails_and_burns_the_code_after_three_tries() -> TestResult {
    let identity = Identity::generate()?;
    let s = auth_server(&[], Policy::default(), Some(&identity)).await?;
    let grant = Grant {
        perms: Permissions::ALL,
        folder: Scope::whole_share(),
        label: "x".into(),
    };
    let code = s.access.issue_code(grant, Duration::from_secs(600))?;
    let text = code.to_string();
    let (slot, words) = text.split_once('-').ok_or("no -")?;
    let wrong: PairCode = if words == "acorn-acorn" {
        format!("{slot}-acorn-agent").parse()?
    } else {
        format!("{slot}-acorn-acorn").parse()?
    };
    for _ in 0..barge::security::pair::MAX_TRIES {
        let (mut client, _) = tls_client(s.server.addr).await?;
        assert!(
            matches!(client.pair(&wrong).await, Err(ClientError::Pairing(_))),
            "a wrong code must fail on the client"
        );
    }
    // Burnt: even the right code fails now, and no token was made.
    let (mut client, _) = tls_client(s.server.addr).await?;
    assert!(matches!(
        client.pair(&code).await,
        Err(ClientError::Refused { code, .. }) if code == Code::PAIR_FAILED
    ));
    assert!(s.access.users().ok_or("no db")?.list_tokens()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_plain_connection_cannot_pair() -> TestResult {
    let s = auth_server(&[], Policy::default(), None).await?;
    let mut raw = s.server.raw().await?;
    // On loopback, where logins work: the reason given is the plain connection, not the
    // address.
    assert_eq!(
        raw.cmd("PAIR 1 QUJD").await?,
        "403 Pairing needs TLS: a plain connection has nothing to bind it to"
    );
    Ok(())
}

// ---- The binary: secure default, secrets, pairing end to end. ----

mod bin {
    use std::io::{BufRead as _, BufReader};
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::process::{Child, Command as StdCommand, Stdio};
    use std::time::Duration;

    use assert_cmd::Command;
    use predicates::str::contains;
    use tempfile::{NamedTempFile, TempDir};

    use super::PASSWORD;
    use crate::common::{Raw, TestResult, WAIT};

    /// Exit status 6: login incorrect, or a login is needed.
    const LOGIN: i32 = 6;

    /// `barge ...` with its own config folder and no stray settings.
    fn barge(config: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
        cmd.env("XDG_CONFIG_HOME", config)
            .env("BARGE_HISTORY", "")
            .env_remove("BARGE_PLAIN")
            .env_remove("BARGE_LOG")
            .env_remove("BARGE_TOKEN")
            .env_remove("BARGE_USER")
            .env_remove("BARGE_PASSWORD")
            .env_remove("BARGE_HOST")
            .env_remove("BARGE_PORT")
            .env_remove("BARGE_ROOT")
            .env_remove("BARGE_STATE_DIR")
            .timeout(Duration::from_secs(30));
        cmd
    }

    /// A running `barge serve`: its address and what it printed before "Press Ctrl-C".
    struct Served {
        child: Child,
        port: u16,
        lines: Vec<String>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn serve(root: &Path, extra: &[&str], stderr: &Path) -> TestResult<Served> {
        let mut child = StdCommand::new(env!("CARGO_BIN_EXE_barge"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--root"])
            .arg(root)
            .args(extra)
            .env_remove("BARGE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(stderr)?))
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let done = line.starts_with("Press Ctrl-C");
                lines.push(line);
                if done {
                    let _ = tx.send(lines.clone());
                }
            }
        });
        let Ok(lines) = rx.recv_timeout(WAIT) else {
            let _ = child.kill();
            return Err("barge serve did not start".into());
        };
        let port = lines
            .first()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .ok_or("no address line")?;
        Ok(Served { child, port, lines })
    }

    /// A shared folder with the user alice (`extra`: options of `user add`), a configuration
    /// folder and a log file for a server.
    fn alice_added(extra: &[&str]) -> TestResult<(TempDir, TempDir, NamedTempFile)> {
        let root = tempfile::tempdir()?;
        let config = tempfile::tempdir()?;
        let log = tempfile::NamedTempFile::new()?;
        barge(config.path())
            .args(["user", "add", "alice"])
            .args(extra)
            .arg("--root")
            .arg(root.path())
            .env("BARGE_PASSWORD", PASSWORD)
            .assert()
            .success();
        Ok((root, config, log))
    }

    #[test]
    fn a_network_address_with_no_users_is_refused_unless_public() -> TestResult {
        let root = tempfile::tempdir()?;
        let config = tempfile::tempdir()?;
        barge(config.path())
            .args(["serve", "--host", "0.0.0.0", "--port", "0", "--root"])
            .arg(root.path())
            .assert()
            .failure()
            .stderr(contains("refusing to serve"))
            .stderr(contains("barge serve --pair"))
            .stderr(contains("barge user add"))
            .stderr(contains("--public"));
        Ok(())
    }

    #[test]
    fn a_users_file_others_can_read_is_refused_at_start() -> TestResult {
        let (root, config, _) = alice_added(&[])?;
        let file = root.path().join(".barge/users.json");
        let text = std::fs::read_to_string(&file)?;
        assert!(
            !text.contains(PASSWORD),
            "the password is stored only hashed"
        );
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o077, 0);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        barge(config.path())
            .args(["serve", "--port", "0", "--root"])
            .arg(root.path())
            .assert()
            .failure()
            .stderr(contains("users.json"));
        Ok(())
    }

    #[test]
    fn no_secret_on_the_command_line_in_debug_traces_or_logs() -> TestResult {
        let (root, config, log) = alice_added(&[])?;
        // No option takes a password or a token itself.
        for args in [["--password", "x"], ["--token", "barge_x"]] {
            barge(config.path()).args(args).arg("ls").assert().code(2);
        }
        let token_out = barge(config.path())
            .args(["token", "create", "--read-only", "--root"])
            .arg(root.path())
            .output()?;
        let token = String::from_utf8(token_out.stdout)?.trim().to_owned();
        assert!(token.starts_with("barge_"), "{token}");
        let served = serve(root.path(), &["--plain", "--debug"], log.path())?;
        // A client with --debug shows PASS **** and never the password.
        let out = barge(config.path())
            .args([
                "--plain",
                "--debug",
                "--host",
                "127.0.0.1",
                "--user",
                "alice",
            ])
            .args(["--port", &served.port.to_string(), "ls"])
            .env("BARGE_PASSWORD", PASSWORD)
            .output()?;
        assert!(out.status.success(), "{out:?}");
        let trace = String::from_utf8(out.stderr)?;
        assert!(trace.contains("> PASS ****"), "{trace}");
        assert!(!trace.contains(PASSWORD), "{trace}");
        // A token from BARGE_TOKEN likewise.
        let out = barge(config.path())
            .args(["--plain", "--debug", "--host", "127.0.0.1"])
            .args(["--port", &served.port.to_string(), "ls"])
            .env("BARGE_TOKEN", &token)
            .output()?;
        assert!(out.status.success(), "{out:?}");
        let trace = String::from_utf8(out.stderr)?;
        assert!(trace.contains("> TOKEN ****"), "{trace}");
        assert!(!trace.contains(&token), "{trace}");
        // A wrong password is exit status 6.
        barge(config.path())
            .args(["--plain", "--host", "127.0.0.1", "--user", "alice"])
            .args(["--port", &served.port.to_string(), "ls"])
            .env("BARGE_PASSWORD", "wrong")
            .assert()
            .code(LOGIN)
            .stderr(contains("login incorrect"));
        // The server's --debug log, and a failed login in it.
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let mut raw = Raw::connect(([127, 0, 0, 1], served.port).into()).await?;
            raw.line().await?;
            raw.cmd("USER alice").await?;
            raw.cmd("PASS not-the-password-either").await?;
            TestResult::Ok(())
        })?;
        drop(served);
        let log = std::fs::read_to_string(log.path())?;
        assert!(log.contains("PASS ****"), "{log}");
        assert!(log.contains("failed login for alice"), "{log}");
        for secret in [PASSWORD, "not-the-password-either", token.as_str()] {
            assert!(!log.contains(secret), "{secret} in the server's log");
        }
        Ok(())
    }

    #[test]
    fn a_login_slowed_by_earlier_failures_says_why_it_waits_and_gets_in() -> TestResult {
        let (root, config, log) = alice_added(&[])?;
        let served = serve(root.path(), &["--plain"], log.path())?;
        let ls = || {
            let mut cmd = barge(config.path());
            cmd.args(["--plain", "--host", "127.0.0.1", "--user", "alice"])
                .args(["--port", &served.port.to_string(), "ls"])
                .env("BARGE_PASSWORD", PASSWORD);
            cmd
        };
        // A login with no failures before it is quick and says nothing about waiting.
        let out = ls().output()?;
        assert!(out.status.success(), "{out:?}");
        assert!(!String::from_utf8(out.stderr)?.contains("waiting"));
        // Five failures from this address: the next attempt is held 4 s (3 free, 1 s, 2 s).
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let mut raw = Raw::connect(([127, 0, 0, 1], served.port).into()).await?;
            raw.line().await?;
            for _ in 0..5 {
                assert_eq!(raw.cmd("USER alice").await?, "334 Send PASS");
                assert!(raw.cmd("PASS wrong").await?.starts_with("530"));
            }
            TestResult::Ok(())
        })?;
        let out = ls().output()?;
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr)?;
        assert!(
            stderr.contains("waiting for 127.0.0.1")
                && stderr.contains("slows down logins from an address after failed attempts"),
            "{stderr}"
        );
        Ok(())
    }

    #[test]
    fn pairing_end_to_end_pins_the_server_and_saves_a_token() -> TestResult {
        let root = tempfile::tempdir()?;
        let config = tempfile::tempdir()?;
        let stranger = tempfile::tempdir()?;
        let log = tempfile::NamedTempFile::new()?;
        let served = serve(root.path(), &["--pair", "--perm", "get,put"], log.path())?;
        let code = served
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("Pairing code: "))
            .and_then(|l| l.split(' ').next())
            .ok_or("no pairing code printed")?
            .to_owned();
        let server = format!("127.0.0.1:{}", served.port);
        barge(config.path())
            .args(["pair", &server, &code])
            .assert()
            .success()
            .stderr(contains("Paired with"));
        let logins = config.path().join("barge/logins.json");
        assert_eq!(std::fs::metadata(&logins)?.permissions().mode() & 0o077, 0);
        assert!(
            std::fs::read_to_string(config.path().join("barge/known_hosts"))?.contains(&server)
        );
        // Later commands need neither --trust-new nor a password: pinned and logged in.
        let work = tempfile::tempdir()?;
        std::fs::write(work.path().join("n.txt"), b"note")?;
        barge(config.path())
            .current_dir(work.path())
            .args(["--host", "127.0.0.1", "--port", &served.port.to_string()])
            .args(["put", "n.txt"])
            .assert()
            .success();
        // The token may not delete (it was granted get,put).
        barge(config.path())
            .args(["--host", "127.0.0.1", "--port", &served.port.to_string()])
            .args(["rm", "n.txt"])
            .assert()
            .failure()
            .stderr(contains("Fail: deleting n.txt: not allowed for this user"));
        // The code is used up, and another client without a login is turned away.
        barge(stranger.path())
            .args(["pair", &server, &code])
            .assert()
            .failure();
        barge(stranger.path())
            .args(["--trust-new", "--host", "127.0.0.1"])
            .args(["--port", &served.port.to_string(), "ls"])
            .assert()
            .code(LOGIN);
        Ok(())
    }

    #[test]
    fn login_remembers_the_user_name_but_never_the_password() -> TestResult {
        let (root, config, log) = alice_added(&["--read-only"])?;
        let served = serve(root.path(), &["--plain"], log.path())?;
        let port = served.port.to_string();
        let client = |args: &[&str]| {
            let mut cmd = barge(config.path());
            cmd.args(["--plain", "--host", "127.0.0.1", "--port", &port])
                .args(args);
            cmd
        };
        // Without a login the server turns the client away with status 6.
        client(&["ls"]).assert().code(LOGIN);
        client(&["login", "--user", "alice"])
            .env("BARGE_PASSWORD", "wrong")
            .assert()
            .code(LOGIN);
        assert!(!config.path().join("barge/logins.json").exists());
        client(&["login", "--user", "alice"])
            .env("BARGE_PASSWORD", PASSWORD)
            .assert()
            .success();
        let saved = std::fs::read_to_string(config.path().join("barge/logins.json"))?;
        assert!(
            saved.contains("alice") && !saved.contains(PASSWORD),
            "{saved}"
        );
        // The saved name is used; its password is still needed each time.
        client(&["ls"])
            .env("BARGE_PASSWORD", PASSWORD)
            .assert()
            .success();
        client(&["ls"])
            .env("BARGE_PASSWORD", "wrong")
            .assert()
            .code(LOGIN);
        // The shell logs in with it too, once, before its first command.
        client(&["shell"])
            .env("BARGE_PASSWORD", PASSWORD)
            .write_stdin("ls\nbye\n")
            .assert()
            .success();
        client(&["shell"])
            .env("BARGE_PASSWORD", "wrong")
            .write_stdin("ls\nbye\n")
            .assert()
            .code(LOGIN);
        client(&["logout"]).assert().success();
        client(&["ls"])
            .env("BARGE_PASSWORD", PASSWORD)
            .assert()
            .code(LOGIN);
        Ok(())
    }
}

/// A server with alice and bob (every right) and carol (read-only), sharing `a.txt`.
async fn alice_bob_and_carol() -> TestResult<AuthServer> {
    let s = auth_server(
        &[
            ("alice", Permissions::ALL, None),
            ("bob", Permissions::ALL, None),
            ("carol", Permissions::READ_ONLY, None),
        ],
        Policy::default(),
        None,
    )
    .await?;
    std::fs::write(s.server.root().join("a.txt"), b"abc")?;
    Ok(s)
}

/// Gives bob carol's permissions by editing `users.json` as any editor would (a new file
/// renamed over it), which keeps his password.
fn give_bob_carols_rights(s: &AuthServer) -> TestResult {
    let path = s._state.path().join("users.json");
    let mut db: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let list = db["users"].as_array_mut().ok_or("no users")?;
    let carol = list
        .iter()
        .find(|u| u["name"] == "carol")
        .map(|u| u["perms"].clone())
        .ok_or("no carol")?;
    for u in list.iter_mut().filter(|u| u["name"] == "bob") {
        u["perms"] = carol.clone();
    }
    let tmp = s._state.path().join("users.json.new");
    std::fs::write(&tmp, serde_json::to_vec(&db)?)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

#[tokio::test]
async fn revoking_a_user_or_token_ends_open_sessions_and_new_rights_apply_at_once() -> TestResult {
    let s = alice_bob_and_carol().await?;
    let users = s.access.users().ok_or("no database")?;
    let token = users.create_token("t", Permissions::ALL, &Scope::whole_share())?;
    let mut alice = logged_in(&s.server, "alice").await?;
    let mut bob = logged_in(&s.server, "bob").await?;
    let mut by_token = s.server.raw().await?;
    let reply = by_token.cmd(&format!("TOKEN {}", token.secret())).await?;
    assert!(reply.starts_with("230 "), "{reply}");
    for raw in [&mut alice, &mut bob, &mut by_token] {
        assert_eq!(raw.list().await?.len(), 1);
    }
    // The admin commands run in another process: another handle on the same file.
    let admin = Users::open(s._state.path())?;
    assert!(admin.remove_user("alice")?);
    assert!(admin.revoke_token(&token.id)?);
    let revoked = "530 Your login was removed or changed on the server; log in again";
    assert_eq!(alice.cmd("LIST_FILES").await?, revoked);
    assert_eq!(alice.cmd("DELETE a.txt").await?, revoked);
    assert_eq!(by_token.cmd("DOWNLOAD a.txt").await?, revoked);
    assert_eq!(bob.list().await?.len(), 1, "others keep their login");
    // A permission change (here by hand in the file, as any edit would be) applies to bob's
    // next command: his record takes carol's read-only permissions.
    give_bob_carols_rights(&s)?;
    assert_eq!(
        bob.cmd("DELETE a.txt").await?,
        "403 Not allowed for this user"
    );
    assert_eq!(bob.list().await?.len(), 1);
    assert!(s.server.root().join("a.txt").exists());
    // The revoked session may log in again as someone who still exists.
    assert_eq!(alice.cmd("USER carol").await?, "334 Send PASS");
    assert!(
        alice
            .cmd(&format!("PASS {PASSWORD}"))
            .await?
            .starts_with("230 carol ")
    );
    Ok(())
}

/// A burst of credential checks runs at most `CHECKS_AT_ONCE` at a time (each argon2
/// verification holds 19 MiB): the others wait their turn, and every one is answered.
#[tokio::test]
async fn credential_checks_run_a_few_at_a_time_however_many_arrive() -> TestResult {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let s = auth_server(
        &[("alice", Permissions::ALL, None)],
        Policy::default(),
        None,
    )
    .await?;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24u8 {
        let (access, running, most) = (
            Arc::clone(&s.access),
            Arc::clone(&running),
            Arc::clone(&most),
        );
        // From as many addresses, so that no throttle orders them.
        let ip = std::net::IpAddr::from([10, 0, 0, i]);
        tasks.spawn(async move {
            access
                .check(ip, "alice", move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(None)
                })
                .await
        });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        assert!(done?.is_none());
        answered += 1;
    }
    assert_eq!(answered, 24);
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=barge::server::CHECKS_AT_ONCE).contains(&most),
        "{most} checks ran at once"
    );
    Ok(())
}

/// A burst of wrong logins from one address holds one place in the queue of credential
/// checks, not one per attempt: a login from another address that arrives during the burst is
/// checked next, not after the whole burst.
#[tokio::test]
async fn a_burst_from_one_address_does_not_make_other_logins_wait_for_all_of_it() -> TestResult {
    use std::sync::Mutex;
    let s = auth_server(
        &[("alice", Permissions::ALL, None)],
        Policy::default(),
        None,
    )
    .await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let check = |ip: std::net::IpAddr| {
        let (access, order) = (Arc::clone(&s.access), Arc::clone(&order));
        async move {
            access
                .check(ip, "alice", move |_| {
                    order.lock().unwrap().push(ip);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    Ok(None)
                })
                .await
        }
    };
    let flood = std::net::IpAddr::from([10, 0, 0, 66]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        tasks.spawn(check(flood));
    }
    // The burst has arrived (a fresh address: no throttle delay yet) and is being checked.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while order.lock().unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await?;
    let other = std::net::IpAddr::from([10, 0, 0, 7]);
    assert!(check(other).await.is_none());
    let position = order.lock().unwrap().iter().position(|ip| *ip == other);
    // Behind at most the burst's attempt being checked and the one queued after it.
    assert!(
        position.is_some_and(|p| p <= 2),
        "checked after {position:?} of the burst's attempts"
    );
    tasks.abort_all();
    Ok(())
}

/// The answer to a prompt is acted on with the rights the session has when it arrives: a
/// user removed, or a right taken, while a prompt waited gets `530` or `403` for the answer,
/// and nothing changes.
#[tokio::test]
async fn an_answer_to_a_prompt_is_checked_against_the_database_of_its_time() -> TestResult {
    let s = alice_bob_and_carol().await?;
    let mut alice = logged_in(&s.server, "alice").await?;
    let mut bob = logged_in(&s.server, "bob").await?;
    assert!(alice.cmd("DELETE").await?.starts_with("331 "));
    assert!(bob.cmd("RENAME").await?.starts_with("332 "));
    assert!(bob.cmd("a.txt").await?.starts_with("333 "));
    // Another process removes alice (as `barge user remove` would) and gives bob carol's
    // read-only rights (an edit of the file, which keeps his password).
    assert!(Users::open(s._state.path())?.remove_user("alice")?);
    give_bob_carols_rights(&s)?;
    let revoked = "530 Your login was removed or changed on the server; log in again";
    assert_eq!(alice.cmd("a.txt").await?, revoked);
    assert_eq!(bob.cmd("b.txt").await?, "403 Not allowed for this user");
    assert!(s.server.root().join("a.txt").exists());
    assert!(!s.server.root().join("b.txt").exists());
    // The sessions go on in step: the next command is answered as usual.
    assert_eq!(alice.cmd("LIST_FILES").await?, revoked);
    assert_eq!(bob.list().await?.len(), 1);
    Ok(())
}

//! LAN discovery end to end, on a network of our own: two network namespaces joined by a veth
//! pair (multicast does not work on loopback), the real `barge serve` announcing in one and
//! `barge discover` / `barge --host NAME` in the other. Needs root (`ip netns`): without it the
//! tests fail and say so, they never pass silently. The namespaces are deleted afterwards.

use std::io::{BufRead as _, BufReader};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use barge::discovery::{Announcement, Announcer, Service, ServiceAddresses};
use barge::security::identity::Identity;
use predicates::str::contains;

use crate::common::{TestResult, WAIT};

/// The server's address on the test network (the namespaces are private, so fixed addresses
/// cannot clash with anything).
const SERVER_IP: &str = "10.251.7.1";
const CLIENT_IP: &str = "10.251.7.2";
const PORT: u16 = 7070;

/// Two namespaces (`server`, `client`) and a veth pair between them; deleted on drop.
struct Lan {
    server: String,
    client: String,
}

fn ip(args: &[&str]) -> TestResult {
    let out = StdCommand::new("ip").args(args).output().map_err(|e| {
        format!("the discovery tests need `ip` (iproute2) and root: running ip {args:?}: {e}")
    })?;
    if !out.status.success() {
        return Err(format!(
            "the discovery tests need root to make network namespaces: ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

impl Lan {
    fn new(tag: &str) -> TestResult<Self> {
        let id = std::process::id();
        let lan = Self {
            server: format!("bgd{id}{tag}s"),
            client: format!("bgd{id}{tag}c"),
        };
        // Interface names hold at most 15 bytes.
        let (veth_s, veth_c) = (format!("bv{id}{tag}s"), format!("bv{id}{tag}c"));
        ip(&["netns", "add", &lan.server])?;
        ip(&["netns", "add", &lan.client])?;
        ip(&[
            "link", "add", &veth_s, "type", "veth", "peer", "name", &veth_c,
        ])?;
        ip(&["link", "set", &veth_s, "netns", &lan.server])?;
        ip(&["link", "set", &veth_c, "netns", &lan.client])?;
        for (ns, dev, addr) in [
            (&lan.server, &veth_s, SERVER_IP),
            (&lan.client, &veth_c, CLIENT_IP),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    /// `barge ARGS` inside namespace `ns`, with its own config folder and no terminal.
    fn barge(ns: &str, config: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_barge")])
            .env("XDG_CONFIG_HOME", config)
            .env("BARGE_HISTORY", "")
            .env_remove("BARGE_HOST")
            .env_remove("BARGE_PORT")
            .env_remove("BARGE_PLAIN")
            .env_remove("BARGE_TOKEN")
            .env_remove("BARGE_NO_ANNOUNCE")
            .env_remove("BARGE_LOG")
            .timeout(Duration::from_secs(30));
        cmd
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.server, &self.client] {
            let _ = StdCommand::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `barge serve` inside a namespace, with the lines of its banner; killed on drop.
struct Served {
    child: Child,
    banner: Vec<String>,
}

impl Served {
    fn start(ns: &str, root: &Path, extra: &[&str]) -> TestResult<Self> {
        let mut child = StdCommand::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_barge"), "serve"])
            .arg("--root")
            .arg(root)
            .args(extra)
            .env("BARGE_LOG", "barge=warn")
            .env_remove("BARGE_NO_ANNOUNCE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut served = Self {
            child,
            banner: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let last = line.starts_with("Press Ctrl-C");
                    served.banner.push(line);
                    if last {
                        // Keep reading in the background so the server never blocks on stdout.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return Ok(served);
                    }
                }
                Err(_) => {
                    return Err(format!("barge serve did not start: {:?}", served.banner).into());
                }
            }
        }
    }

    fn line_with(&self, needle: &str) -> Option<&str> {
        self.banner
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key fingerprint a banner shows.
fn key_of(served: &Served) -> TestResult<String> {
    let line = served
        .line_with("the server's key is ")
        .ok_or("no key line")?;
    Ok(line.rsplit(' ').next().unwrap_or("").to_owned())
}

#[test]
fn a_server_on_the_lan_is_discovered_and_reached_by_name() -> TestResult {
    let lan = Lan::new("d")?;
    let (root, quiet_root, local_root, config) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    std::fs::write(root.path().join("found.txt"), b"over the lan")?;
    let port = PORT.to_string();
    let server = Served::start(
        &lan.server,
        root.path(),
        &[
            "--host",
            "0.0.0.0",
            "--port",
            &port,
            "--public",
            "--name",
            "Lab Server",
            "--web",
            "0",
        ],
    )?;
    assert!(
        server
            .line_with("Announced on the local network as \"Lab Server\"")
            .is_some(),
        "{:?}",
        server.banner
    );
    let key = key_of(&server)?;
    let web_port = server
        .line_with("Web page: https://")
        .and_then(|l| l.trim_end_matches('/').rsplit(':').next())
        .ok_or("no web line")?
        .to_owned();
    // Neither a server told --no-announce nor one on loopback only may be announced.
    let quiet = Served::start(
        &lan.server,
        quiet_root.path(),
        &[
            "--host",
            "0.0.0.0",
            "--port",
            "7071",
            "--public",
            "--name",
            "quiet-one",
            "--no-announce",
        ],
    )?;
    assert!(quiet.line_with("Announced").is_none(), "{:?}", quiet.banner);
    let local = Served::start(
        &lan.server,
        local_root.path(),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "7072",
            "--name",
            "local-one",
        ],
    )?;
    assert!(local.line_with("Announced").is_none(), "{:?}", local.banner);

    let out = Lan::barge(&lan.client, config.path())
        .args(["discover", "--timeout", "3"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out)?;
    let row = text
        .lines()
        .find(|l| l.starts_with("Lab Server "))
        .ok_or_else(|| format!("not listed:\n{text}"))?;
    for want in [
        SERVER_IP,
        &port,
        &key,
        &format!("https://{SERVER_IP}:{web_port}/"),
    ] {
        assert!(row.contains(want), "{want} missing in {row:?}");
    }
    assert!(!text.contains("quiet-one"), "{text}");
    assert!(!text.contains("local-one"), "{text}");

    let json = Lan::barge(&lan.client, config.path())
        .args(["discover", "--json", "--timeout", "3"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json)?;
    let entry = json
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "Lab Server"))
        .ok_or("not in the JSON")?;
    assert_eq!(entry["fingerprint"], key.as_str());
    assert_eq!(entry["port"], PORT);
    assert_eq!(entry["addresses"][0], SERVER_IP);

    // By name: the first contact is refused without a decision, as for any server...
    Lan::barge(&lan.client, config.path())
        .args(["--host", "lab server", "ls"])
        .assert()
        .code(5)
        .stderr(contains(key.as_str()));
    // ...and with --trust-new the announced key matches, the listing comes, the pin is kept
    // under the name and the announced port.
    Lan::barge(&lan.client, config.path())
        .args(["--host", "Lab Server", "--trust-new", "ls"])
        .assert()
        .success()
        .stdout(contains("found.txt"));
    let pins = std::fs::read_to_string(config.path().join("barge/known_hosts"))?;
    assert!(
        pins.contains(&format!("lab%20server:{PORT} {key}")),
        "{pins}"
    );
    let work = tempfile::tempdir()?;
    Lan::barge(&lan.client, config.path())
        .current_dir(work.path())
        .args(["--host", "Lab Server", "get", "found.txt"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(work.path().join("found.txt"))?,
        b"over the lan"
    );
    // The shell connects by name the same way.
    Lan::barge(&lan.client, config.path())
        .args(["--host", "Lab Server", "shell"])
        .write_stdin("ls\nbye\n")
        .assert()
        .success()
        .stdout(contains("found.txt"));

    // A name nobody announces: cannot connect (3), in one line.
    Lan::barge(&lan.client, config.path())
        .args(["--host", "nobody-here", "ls"])
        .assert()
        .code(3)
        .stderr(contains("no barge server named \"nobody-here\""));

    // Gone from the network: nothing found, exit status 1 and one line.
    drop(server);
    let out = Lan::barge(&lan.client, config.path())
        .args(["discover", "--timeout", "1"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr)?;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no barge server answered"), "{err}");
    drop((quiet, local));
    Ok(())
}

/// Announces `service` from inside namespace `ns` until the returned sender is dropped.
fn announce_in(ns: &str, service: Service) -> TestResult<mpsc::Sender<()>> {
    let netns = std::fs::File::open(format!("/run/netns/{ns}"))?;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Only this thread moves; the responder's thread, started from it, follows it there.
        let started = rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("setns: {e}"))
        .and_then(|()| Announcer::start(&service).map_err(|e| e.to_string()));
        match started {
            Ok(announcer) => {
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.recv();
                drop(announcer);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx.recv_timeout(WAIT)??;
    Ok(stop_tx)
}

#[test]
fn a_spoofed_announcement_is_refused_on_connect() -> TestResult {
    let lan = Lan::new("p")?;
    let (root, config) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let port = PORT.to_string();
    let server = Served::start(
        &lan.server,
        root.path(),
        &[
            "--host", "0.0.0.0", "--port", &port, "--public", "--name", "real",
        ],
    )?;
    let real_key = key_of(&server)?;
    // Someone else on the network announces the real server's address and port under a name
    // of their choosing, with a key of their own.
    let forged = Identity::generate()?.fingerprint();
    assert_ne!(forged.to_string(), real_key);
    let _spoof = announce_in(
        &lan.client,
        Service {
            name: "impostor".into(),
            port: PORT,
            addresses: ServiceAddresses::Only(vec![SERVER_IP.parse()?]),
            announcement: Announcement {
                tls: true,
                fingerprint: Some(forged),
                web_port: None,
            },
        },
    )?;
    // Wait until the forged announcement is seen, so the refusal below is about the key.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Lan::barge(&lan.client, config.path())
            .args(["discover", "--timeout", "1.5"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text
            .lines()
            .any(|l| l.starts_with("impostor ") && l.contains(&forged.to_string()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the spoof is never seen: {text}");
    }
    // Even told to trust a new key, the client refuses a key that is not the announced one.
    Lan::barge(&lan.client, config.path())
        .args(["--host", "impostor", "--trust-new", "ls"])
        .assert()
        .code(5)
        .stderr(contains("announced on the local network"))
        .stderr(contains(forged.to_string()))
        .stderr(contains(real_key.as_str()))
        .stderr(contains("forged"));
    assert!(
        !config.path().join("barge/known_hosts").exists(),
        "nothing may be pinned after a refusal"
    );
    // The honest announcement, same network and same options, is accepted.
    Lan::barge(&lan.client, config.path())
        .args(["--host", "real", "--trust-new", "ls"])
        .assert()
        .success();
    drop(server);
    Ok(())
}

#[test]
fn barge_pair_finds_an_announced_name() -> TestResult {
    let lan = Lan::new("p")?;
    let (root, config) = (tempfile::tempdir()?, tempfile::tempdir()?);
    std::fs::write(root.path().join("paired.txt"), b"by name")?;
    let port = PORT.to_string();
    let server = Served::start(
        &lan.server,
        root.path(),
        &[
            "--host", "0.0.0.0", "--port", &port, "--pair", "--name", "Pair Me",
        ],
    )?;
    let key = key_of(&server)?;
    let code = server
        .line_with("Pairing code: ")
        .and_then(|l| l.strip_prefix("Pairing code: "))
        .and_then(|l| l.split(' ').next())
        .ok_or("no pairing code printed")?
        .to_owned();
    // By its announced name, not an address: the code pins the key under that name.
    Lan::barge(&lan.client, config.path())
        .args(["pair", "Pair Me", &code])
        .assert()
        .success()
        .stderr(contains("Paired with"));
    let pins = std::fs::read_to_string(config.path().join("barge/known_hosts"))?;
    assert!(pins.contains(&format!("pair%20me:{PORT} {key}")), "{pins}");
    // Later commands by the same name are pinned and logged in with the saved token.
    Lan::barge(&lan.client, config.path())
        .args(["--host", "Pair Me", "ls"])
        .assert()
        .success()
        .stdout(contains("paired.txt"));
    drop(server);
    Ok(())
}

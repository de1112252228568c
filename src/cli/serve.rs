//! `barge serve`: share a folder.
//!
//! The start order is the point: arguments and the root are checked first, the port is bound
//! next, and only then is anything created (the root, the state folder, the identity), so a
//! second server on a taken port or a typo leaves nothing behind. The banner and QR code are in
//! [`banner`], the `--config` file in [`config`], the root checks and `/metrics` in [`ops`];
//! the audit lines and metrics themselves are the library's (`barge::server::audit`,
//! `barge::metrics`).
//!
//! [`banner`]: super::banner
//! [`config`]: super::config
//! [`ops`]: super::ops

use std::path::PathBuf;
use std::time::Duration;

use std::io::Write as _;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use std::os::unix::fs::DirBuilderExt as _;

use std::sync::Arc;

use barge::security::identity::Identity;
use barge::security::pair;
use barge::security::users::Users;
use barge::server::{self, Access, AccessOptions, Grant, ServerConfig};
use barge::store::StoreConfig;

/// Options of `barge serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Folder to share (created if missing, when its parent folder exists)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "barge-files",
        env = "BARGE_ROOT"
    )]
    root: PathBuf,
    /// Refuse uploads, renames and deletes
    #[arg(long)]
    read_only: bool,
    /// Folder for the server's own state (its TLS identity); default: .barge in the shared folder
    #[arg(long, value_name = "DIR", env = "BARGE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Print the server's key fingerprint (what clients pin) and exit
    #[arg(long)]
    show_identity: bool,
    /// Connections served at once; more get a "busy" reply
    #[arg(long, default_value_t = 512, value_name = "N")]
    max_connections: usize,
    /// Connections served at once from one IP address; more get a "busy" reply
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_connections_per_ip: usize,
    /// With --web: web connections served at once (more are closed at accept)
    #[arg(long, default_value_t = 128, value_name = "N", requires = "web")]
    web_max_connections: usize,
    /// With --web: web connections served at once from one IP address (more are closed at
    /// accept); raise it when many downloads come from one host, e.g. behind a NAT
    #[arg(long, default_value_t = 16, value_name = "N", requires = "web")]
    web_max_connections_per_ip: usize,
    /// Slowest a file body may move, in bytes per second, judged over each minute; 0 turns
    /// the check off
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    min_rate: u64,
    /// Close connections silent for this many seconds
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    idle_timeout: u64,
    /// Largest upload accepted, in bytes (suffixes K, M, G, T allowed)
    #[arg(long, default_value = "1T", value_name = "SIZE", value_parser = parse_bytes)]
    max_file_size: u64,
    /// Free space to keep on the disk, in bytes (suffixes allowed)
    #[arg(long, default_value = "64M", value_name = "SIZE", value_parser = parse_bytes)]
    min_free_space: u64,
    /// Anonymous access for anyone who can reach the server, even with users configured or on
    /// a network address (honours --read-only)
    #[arg(long)]
    public: bool,
    /// Print a one-time pairing code; `barge pair HOST CODE` on another machine then pins this
    /// server and receives a token with the permissions below
    #[arg(long)]
    pair: bool,
    #[command(flatten)]
    grant: super::admin::PermArgs,
    /// Also serve a web page for browsers on this port (same files, same rules; HTTPS with the
    /// server's key, plain HTTP with --plain); ADDR:PORT to choose the address too
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = super::web::parse_web)]
    web: Option<(Option<String>, u16)>,
    /// Most files the shared folder may hold; uploads over it are refused (507)
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_files: u64,
    /// Seconds a partial upload (kept for `barge put` to resume) lives after its last byte
    #[arg(long, default_value_t = 86_400, value_name = "SECS")]
    partial_ttl: u64,
    /// Read options from a TOML file (keys as the flags: root = "/srv/share", port = 65432,
    /// read-only = true...); flags on the command line win
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (ADDR as HOST:PORT)
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Log lines as text for people (default) or one JSON object per line
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// With --web and logins: put a fresh token (with the --perm/--folder grant) in the QR
    /// code's link, so that scanning it logs in
    #[arg(long, requires = "web")]
    qr_token: bool,
    #[command(flatten)]
    announce: super::discover::AnnounceArgs,
    #[command(flatten)]
    storage: Box<super::storage::StorageArgs>,
}

/// How `barge serve` writes its log.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for log collectors.
    Json,
}

impl ServeArgs {
    /// The log format asked for.
    pub(crate) fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

/// Runs the server on `host:port` until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ServeArgs, host: &str, port: u16, plain: bool) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.root.join(barge::name::STATE_DIR));
    if args.show_identity {
        return show_identity(&state_dir);
    }
    check_flags(&args, plain)?;
    if args.storage.is_object() && args.state_dir.is_none() {
        anyhow::bail!(
            "--storage has no shared folder to keep the server's state in: add --state-dir DIR"
        );
    }
    // With --storage there is no shared folder: nothing to check or create.
    let root = if args.storage.is_object() {
        super::ops::Root::Exists
    } else {
        super::ops::check_root(&args.root)?
    };
    // Bind first: a port in use (another server) must fail before anything is created.
    let listener = listen(host, port)
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match &args.metrics {
        Some(at) => Some(
            TcpListener::bind(at.as_str())
                .await
                .with_context(|| format!("cannot listen on {at} for --metrics"))?,
        ),
        None => None,
    };
    let created_root = match root {
        super::ops::Root::Missing => {
            std::fs::create_dir(&args.root)
                .with_context(|| format!("creating the shared folder `{}`", args.root.display()))?;
            true
        }
        super::ops::Root::Exists => false,
    };
    let identity = if plain {
        None
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .with_context(|| format!("creating the state folder `{}`", state_dir.display()))?;
        let (identity, created) = Identity::load_or_create(&state_dir).with_context(|| {
            format!("loading the server identity from `{}`", state_dir.display())
        })?;
        if created {
            tracing::info!("created a new server identity in {}", state_dir.display());
        }
        Some(identity)
    };
    let users = Users::open(&state_dir)
        .with_context(|| format!("opening the user database in `{}`", state_dir.display()))?;
    // The web page listens on its own address: the server counts as loopback-only only if both
    // of its listeners are.
    let web_at = args
        .web
        .clone()
        .map(|(web_host, web_port)| (web_host.unwrap_or_else(|| host.to_owned()), web_port));
    let mut loopback = addr.ip().is_loopback();
    if let Some((web_host, web_port)) = &web_at {
        loopback &= is_loopback(web_host, *web_port).await?;
    }
    check_secure_default(&args, &users, loopback, host, addr.port())?;
    let access = Arc::new(Access::new(
        users,
        AccessOptions {
            public: args.public,
            read_only: args.read_only,
            loopback,
            tls: !plain,
        },
    ));
    let store_config = StoreConfig {
        read_only: args.read_only,
        max_file_size: args.max_file_size,
        min_free_space: args.min_free_space,
        max_files: args.max_files,
        partial_ttl: Duration::from_secs(args.partial_ttl),
        ..StoreConfig::default()
    };
    let web_connections = if args.web.is_some() {
        args.web_max_connections.max(1)
    } else {
        0
    };
    raise_fd_limit(args.max_connections.saturating_add(web_connections));
    let (store, shown) =
        super::storage::open(&args.storage, &args.root, &state_dir, store_config).await?;
    // Scripts and tests read the address at the end of this first line: keep its shape.
    println!(
        "barge {} sharing {shown} on {addr}{}",
        env!("CARGO_PKG_VERSION"),
        if args.read_only { " (read-only)" } else { "" }
    );
    if created_root {
        println!("Created the folder {shown} (it did not exist).");
    }
    let fingerprint = identity.as_ref().map(|i| i.fingerprint().to_string());
    match &fingerprint {
        Some(fp) => println!("TLS on; the server's key is {fp}"),
        None => println!("Plain text (--plain): no encryption, no server identity."),
    }
    if args.public {
        println!("Anonymous access is on (--public): anyone who can reach the server may use it.");
    }
    print!(
        "{}",
        super::banner::lines(
            addr,
            fingerprint.as_deref(),
            access.anonymous().is_none() && !args.pair
        )
    );
    if args.pair {
        let grant = Grant {
            perms: args.grant.perms(),
            folder: args.grant.folder(),
            label: "paired".to_owned(),
        };
        let code = access
            .issue_code(grant, pair::DEFAULT_LIFETIME)
            .context("issuing a pairing code")?;
        let host_shown = super::banner::reachable(addr)
            .first()
            .map_or_else(|| "HOST".to_owned(), |a| a.ip().to_string());
        println!(
            "Pairing code: {code} (one use, {} tries, valid {} minutes; grants {})\n\
             On the other machine: barge pair {host_shown}:{} {code}",
            pair::MAX_TRIES,
            pair::DEFAULT_LIFETIME.as_secs() / 60,
            args.grant.describe(),
            addr.port(),
        );
    }
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(barge::metrics::Metrics::new());
    let mut web_addr = None;
    let web = match web_at {
        Some(at) => {
            let (store, policy) = (Arc::clone(&store), Arc::clone(&access));
            let (addr, task) = super::web::start(
                at,
                store,
                policy,
                identity.as_ref(),
                super::web::Limits {
                    connections: args.web_max_connections.max(1),
                    per_ip: args.web_max_connections_per_ip.max(1),
                    min_rate: args.min_rate,
                },
                Arc::clone(&metrics),
                shutdown.clone(),
            )
            .await?;
            let scheme = if identity.is_some() { "https" } else { "http" };
            let urls: Vec<String> = super::banner::reachable(addr)
                .into_iter()
                .map(|a| format!("{scheme}://{}/", super::banner::authority(a)))
                .collect();
            for url in &urls {
                println!("Web page: {url}");
            }
            if urls.is_empty() {
                println!("Web page: {scheme}://{}/", super::banner::authority(addr));
            }
            if let Some(first) = urls.first() {
                super::banner::print_qr(first, args.qr_token, &args.grant, &access)?;
            }
            web_addr = Some(addr);
            Some(task)
        }
        None => None,
    };
    if let Some(listener) = metrics_listener {
        println!(
            "Metrics: http://{}/metrics",
            super::banner::authority(listener.local_addr()?)
        );
        tokio::spawn(super::ops::serve_metrics(
            listener,
            Arc::clone(&metrics),
            Arc::clone(&store),
            shutdown.clone(),
        ));
    }
    let fingerprint = identity.as_ref().map(Identity::fingerprint);
    let _announced = super::discover::announce(&args.announce, addr, fingerprint, web_addr);
    println!("Press Ctrl-C to stop (twice to stop at once).");
    let config = ServerConfig {
        max_connections: args.max_connections.max(1),
        max_connections_per_ip: args.max_connections_per_ip.max(1),
        min_rate: args.min_rate,
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        access,
        metrics,
        ..ServerConfig::default()
    };
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutting down: no new connections; running transfers get {}s (again to stop at once)",
            ServerConfig::default().shutdown_grace.as_secs()
        );
        signal.cancel();
        wait_for_signal().await;
        // Uploads in progress are only temporary files in the state folder, never visible
        // under their names, so stopping now loses them but shows nothing partial.
        tracing::warn!("stopping at once: transfers in progress are dropped");
        std::process::exit(130);
    });
    let store2 = std::sync::Arc::clone(&store);
    match identity {
        Some(identity) => {
            let tls = server::Tls::new(barge::security::tls::server_config(&identity)?);
            server::run(listener, tls, store2, config, shutdown).await?;
        }
        None => server::run(listener, server::PlainTcp, store2, config, shutdown).await?,
    }
    if let Some(web) = web {
        let _ = web.await;
    }
    store.close();
    // Standard output may be gone by now (a closed pipe): that is no reason to panic.
    let _ = writeln!(std::io::stdout(), "barge stopped.");
    Ok(())
}

/// Checks flags that only make sense together.
fn check_flags(args: &ServeArgs, plain: bool) -> anyhow::Result<()> {
    if args.pair && plain {
        anyhow::bail!("--pair needs TLS: pairing binds the code to the TLS session; drop --plain");
    }
    if !args.pair && !args.qr_token && args.grant.given() {
        anyhow::bail!(
            "--perm, --folder and --drop-box choose what a pairing code (--pair) or the QR \
             code's token (--qr-token) grants: add one of them"
        );
    }
    Ok(())
}

/// Whether every address `host` resolves to is a loopback address.
async fn is_loopback(host: &str, port: u16) -> anyhow::Result<bool> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

/// The secure default (`PROTOCOL.md` section 3): a server on a network address with no user
/// and no token would let anyone in, so it does not start unless told `--public`, or `--pair`
/// (whose code is the way to the first token).
fn check_secure_default(
    args: &ServeArgs,
    users: &Users,
    loopback: bool,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    let empty = users.is_empty().context("reading the user database")?;
    if loopback || !empty || args.public || args.pair {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve {host}:{port} with no users or tokens: anyone who can reach it could \
         read, change and delete every file.\n\
         Pick one:\n\
         \x20 barge serve --pair ...            prints a one-time code; on the other machine run\n\
         \x20                                   barge pair HOST:{port} CODE (pins this server, gets a token)\n\
         \x20 barge user add NAME --root DIR    (or barge token create --root DIR), then serve again\n\
         \x20 barge serve --public ...          anonymous access for everyone who can reach it"
    )
}

/// `--show-identity`: the fingerprint clients pin, without starting the server.
fn show_identity(state_dir: &std::path::Path) -> anyhow::Result<()> {
    match Identity::load(state_dir)
        .with_context(|| format!("reading the server identity in `{}`", state_dir.display()))?
    {
        Some(identity) => {
            println!("{}", identity.fingerprint());
            Ok(())
        }
        None => anyhow::bail!(
            "no identity in `{}` yet: it is created when the server first starts",
            state_dir.display()
        ),
    }
}

/// How many connections may wait to be accepted. The usual default (128) overflows when
/// hundreds of clients connect at once, and each overflow costs a client a one-second SYN
/// retransmit.
const BACKLOG: u32 = 1024;

/// Binds and listens on the first address `host:port` resolves to.
pub(crate) async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // A restarted server can take its port back while old connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to listen on")
    }))
}

/// Each connection (TCP, and web: one request at a time each) needs a socket, and a transfer a
/// file too: raise the soft limit on open files towards the hard one, so `--max-connections`
/// and `--web-max-connections` are not cut short by the default 1024.
fn raise_fd_limit(connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(256);
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let target = limit.maximum.map_or(want, |max| want.min(max));
    if setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    )
    .is_err()
        || target < want
    {
        tracing::warn!(
            "open-file limit is {target}; --max-connections {connections} may not be reachable"
        );
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Parses `1234`, `64K`, `10M`, `2G`, `1T` (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => return Err(format!("unknown size suffix in {s:?}; use K, M, G, T or P")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_bytes("1234"), Ok(1234));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1t"), Ok(1 << 40));
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}

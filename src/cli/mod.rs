//! The command line: clap definitions, dispatch, exit statuses and error reporting.
//!
//! Each client command's terminal side lives in [`commands`] (shared with the [`shell`]); output
//! and progress bars in [`output`]; `barge serve` in [`serve`]. The protocol work itself is the
//! library's [`barge::client`].

mod account;
mod admin;
mod banner;
mod commands;
mod config;
mod discover;
mod messages;
mod ops;
mod output;
mod remote;
pub(crate) mod serve;
mod shell;
mod storage;
mod web;
mod words;

use std::io::{self, IsTerminal as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

use barge::client::{ClientError, DEFAULT_PORT};
use commands::ClientCommand;
pub(crate) use messages::{describe_io, render};
use output::Ui;

/// How long connecting (and waiting for the greeting) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    failure: the server refused a request (no such file, name taken...), or a local error
  2    usage error: bad arguments
  3    cannot connect: no server at that address, or the server is busy
  4    verification failed: an MD5 did not match, nothing unverified was kept
  5    server identity not trusted: its key changed (a man in the middle?), or it is new
       and was neither confirmed, given with --fingerprint, nor accepted with --trust-new
  6    login incorrect (wrong user, password or token), or the server needs a login
  130  interrupted (Ctrl-C)";

/// Verified file sharing on your own network.
#[derive(Parser, Debug)]
#[command(name = "barge", version, about, after_help = EXIT_STATUS_HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Server to connect to (an address, a host name, or a name announced on the LAN)
    #[arg(long, global = true, env = "BARGE_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port of the server
    #[arg(long, global = true, env = "BARGE_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Show the protocol exchange on stderr (names escaped)
    #[arg(long, global = true)]
    debug: bool,
    /// Print nothing but errors (and the listing `ls` was asked for)
    #[arg(long, short, global = true, conflicts_with = "debug")]
    quiet: bool,
    /// Clear text instead of TLS, on both sides (for nc, or a network you trust)
    // BoolishValueParser: BARGE_PLAIN=1 (or yes, on) works as people expect of a variable.
    #[arg(long, global = true, env = "BARGE_PLAIN", value_parser = clap::builder::BoolishValueParser::new())]
    plain: bool,
    /// Trust the server only if its key has this fingerprint (SHA256:...), and pin it
    #[arg(
        long,
        global = true,
        value_name = "SHA256:...",
        conflicts_with = "plain"
    )]
    fingerprint: Option<barge::security::identity::Fingerprint>,
    /// Trust a server seen for the first time without asking, and pin its key (a changed
    /// key is still refused)
    #[arg(long, global = true, conflicts_with = "plain")]
    trust_new: bool,
    /// Log in as this user (the password is asked on the terminal, or read from
    /// --password-file or BARGE_PASSWORD; never given on the command line)
    #[arg(long, global = true, value_name = "NAME", env = "BARGE_USER")]
    user: Option<String>,
    /// Read the password from the first line of FILE
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<std::path::PathBuf>,
    /// Log in with the token in the first line of FILE (or set BARGE_TOKEN)
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "user")]
    token_file: Option<std::path::PathBuf>,
    /// The most files accepted in one listing (it may take 256 bytes of memory per file)
    #[arg(long, global = true, value_name = "N", env = "BARGE_MAX_LISTING",
          default_value_t = barge::client::ListingLimit::DEFAULT.files)]
    max_listing: u64,
}

impl Global {
    /// The server this command talks to, and how to trust it.
    fn remote(&self) -> remote::Remote {
        remote::Remote::new(
            &self.host,
            self.port,
            self.plain,
            self.fingerprint,
            self.trust_new,
            remote::LoginOptions {
                user: self.user.clone(),
                password_file: self.password_file.clone(),
                token_file: self.token_file.clone(),
            },
        )
        .with_listing_limit(self.max_listing)
    }
}

/// Where `barge shell` connects, also as `barge shell HOST [PORT]` (the first clients' form).
#[derive(Args, Debug)]
struct ShellArgs {
    /// The server (instead of --host)
    #[arg(value_name = "HOST")]
    host: Option<String>,
    /// Its port (instead of --port)
    #[arg(value_name = "PORT", requires = "host")]
    port: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Client(ClientCommand),
    /// Interactive session (the default when stdin is a terminal)
    Shell(ShellArgs),
    /// Share a folder: wait for clients and serve them
    Serve(serve::ServeArgs),
    /// Manage the server's users (on the server's machine)
    User(admin::UserArgs),
    /// Manage the server's access tokens (on the server's machine)
    Token(admin::TokenArgs),
    /// Pair with a server using the code `barge serve --pair` printed: pins its key and
    /// saves a token for it
    Pair(account::PairArgs),
    /// Check a user's password on the server and remember the user name for it (the
    /// password is never saved)
    Login,
    /// Forget the token or user name saved for the server
    Logout,
    /// List the barge servers announced on the local network (mDNS)
    Discover(discover::DiscoverArgs),
}

/// The exit statuses, as documented in `barge --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Success = 0,
    Failure = 1,
    Usage = 2,
    CannotConnect = 3,
    Verification = 4,
    Untrusted = 5,
    Login = 6,
    Interrupted = 130,
}

impl Status {
    /// Which of two failures to report when a command had several: the most specific.
    fn severity(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::CannotConnect => 3,
            Self::Verification => 4,
            Self::Untrusted => 5,
            Self::Login => 6,
            Self::Interrupted => 7,
        }
    }

    /// The worse of two statuses.
    pub(crate) fn max(self, other: Self) -> Self {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> Self {
        Self::from(s as u8)
    }
}

/// A failure already reported to the user (for example one `Fail:` line per file): `main` only
/// turns it into the exit status.
#[derive(Debug, thiserror::Error)]
#[error("failed")]
pub(crate) struct Reported(pub(crate) Status);

/// The connection was made but the session could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {0}")]
pub(crate) struct CannotConnect(pub(crate) String);

/// The user pressed Ctrl-C during a command.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub(crate) struct Interrupted;

/// Standard output was closed by its reader (`barge ls | head -1`).
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub(crate) struct StdoutClosed;

/// Runs the `barge` command.
pub(crate) fn main() -> ExitCode {
    let args = match config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("barge: {e:#}");
            return Status::Usage.into();
        }
    };
    let cli = match words::parse::<Cli, _, _>(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if matches!(cli.command, Some(Command::Serve(_))) {
        // Before the runtime's threads start: a long-running server's memory (issue 11).
        barge::heap::limit_arenas();
    }
    let runtime = if matches!(cli.command, Some(Command::Serve(_))) {
        barge::server::runtime()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("barge: cannot start: {e}");
            return Status::Failure.into();
        }
    };
    let ui = Ui::new(cli.global.quiet);
    messages::show_codes(cli.global.debug);
    let mut global = cli.global.clone();
    if let Some(Command::Shell(args)) = &cli.command {
        global.host = args.host.clone().unwrap_or(global.host);
        global.port = args.port.unwrap_or(global.port);
    }
    let remote = global.remote();
    let command = match cli.command {
        Some(Command::Serve(args)) => {
            init_server_tracing(cli.global.debug, args.log_format());
            return match runtime.block_on(serve::run(
                args,
                &cli.global.host,
                cli.global.port,
                cli.global.plain,
            )) {
                Ok(()) => Status::Success.into(),
                Err(e) => report(&e).into(),
            };
        }
        Some(Command::User(args)) => {
            return finish(admin::user(&args, cli.global.password_file.as_deref()));
        }
        Some(Command::Token(args)) => return finish(admin::token(&args)),
        Some(Command::Pair(args)) => {
            init_client_tracing(cli.global.debug);
            return finish(runtime.block_on(account::pair(&args, &cli.global, &ui)));
        }
        Some(Command::Login) => {
            init_client_tracing(cli.global.debug);
            return finish(runtime.block_on(account::login(&remote, &ui)));
        }
        Some(Command::Logout) => return finish(account::logout(&remote, &ui)),
        Some(Command::Discover(args)) => {
            init_client_tracing(cli.global.debug);
            return finish(runtime.block_on(discover::discover(&args, &ui)));
        }
        Some(Command::Client(command)) => Some(command),
        Some(Command::Shell(_)) => None,
        None if io::stdin().is_terminal() => None,
        None => {
            let _ = words::apply(Cli::command()).write_help(&mut io::stderr());
            return Status::Usage.into();
        }
    };
    init_client_tracing(cli.global.debug);
    catch_interrupts(&runtime);
    let status = match command {
        Some(command) => match runtime.block_on(one_shot(&remote, &ui, &command)) {
            Ok(()) => Status::Success,
            Err(e) => report(&e),
        },
        None => shell::run(&runtime, &remote, &ui),
    };
    status.into()
}

/// The exit status of a command that ran to its end, its error reported.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => Status::Success.into(),
        Err(e) => report(&e).into(),
    }
}

/// Connects, runs one command, says goodbye.
async fn one_shot(remote: &remote::Remote, ui: &Ui, command: &ClientCommand) -> anyhow::Result<()> {
    let mut client = remote::connect(remote, ui).await?;
    let result = interruptible(commands::run(&mut client, ui, command)).await;
    if client.is_usable() {
        // Polite, not essential: the server cleans up a dropped connection just the same.
        let _ = client.disconnect().await;
    }
    result
}

mod interrupt;

/// Listens for Ctrl-C for the rest of the program (see [`interruptible`]).
fn catch_interrupts(rt: &tokio::runtime::Runtime) {
    interrupt::install(rt);
}

/// Runs `fut` unless Ctrl-C comes first.
pub(crate) async fn interruptible<T>(
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = fut => r,
        () = interrupt::pressed() => Err(Interrupted.into()),
    }
}

/// Prints an error (unless it was reported already) and returns its exit status.
pub(crate) fn report(e: &anyhow::Error) -> Status {
    let status = status_of(e);
    if e.downcast_ref::<Reported>().is_none() && e.downcast_ref::<StdoutClosed>().is_none() {
        eprintln!("barge: {}", render(e));
    }
    status
}

/// The exit status an error calls for.
pub(crate) fn status_of(e: &anyhow::Error) -> Status {
    if let Some(Reported(status)) = e.downcast_ref::<Reported>() {
        return *status;
    }
    if e.downcast_ref::<StdoutClosed>().is_some() {
        // The reader has what it wanted; as for other Unix tools, that is not a failure.
        return Status::Success;
    }
    if e.downcast_ref::<Interrupted>().is_some() {
        return Status::Interrupted;
    }
    if e.downcast_ref::<remote::Untrusted>().is_some() {
        return Status::Untrusted;
    }
    if e.downcast_ref::<remote::LoginFailed>().is_some() {
        return Status::Login;
    }
    if e.downcast_ref::<CannotConnect>().is_some() {
        return Status::CannotConnect;
    }
    for cause in e.chain() {
        match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Connect { .. } | ClientError::Busy { .. }) => {
                return Status::CannotConnect;
            }
            Some(ClientError::ChecksumMismatch { .. }) => return Status::Verification,
            Some(ClientError::Refused { code, .. })
                if *code == barge::protocol::Code::NOT_LOGGED_IN =>
            {
                return Status::Login;
            }
            _ => {}
        }
    }
    Status::Failure
}

/// `--debug` for client commands: the exchange, one line per message, nothing else.
fn init_client_tracing(debug: bool) {
    if !debug {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("barge::wire=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
}

/// Logging for `barge serve`.
fn init_server_tracing(debug: bool, format: serve::LogFormat) {
    let default = if debug { "barge=debug" } else { "barge=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(barge::server::log_out::stderr());
    let _ = match format {
        // One object per line; the connection's span (peer, user) under "span".
        serve::LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        // Colour codes only for a person at a terminal, not in a log file or journal.
        serve::LogFormat::Text => fmt.with_ansi(io::stderr().is_terminal()).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        words::apply(Cli::command()).debug_assert();
    }

    #[test]
    fn every_listed_word_is_a_command() {
        for (word, args) in words::SAMPLES {
            for w in word.all_words() {
                let line: Vec<&str> = ["barge", w.as_str()]
                    .into_iter()
                    .chain(args.iter().copied())
                    .collect();
                let cli = words::parse::<Cli, _, _>(&line);
                assert!(
                    matches!(
                        cli,
                        Ok(Cli {
                            command: Some(Command::Client(_)),
                            ..
                        })
                    ),
                    "{w}: {cli:?}"
                );
            }
        }
    }

    #[test]
    fn errors_render_on_one_line() {
        let e = anyhow::Error::new(ClientError::Connect {
            addr: "127.0.0.1:65432".into(),
            source: io::ErrorKind::ConnectionRefused.into(),
        });
        assert_eq!(
            render(&e),
            "cannot connect to 127.0.0.1:65432: connection refused \u{2014} is `barge serve` running?"
        );
        assert_eq!(status_of(&e), Status::CannotConnect);
        let e = anyhow::Error::new(ClientError::ChecksumMismatch {
            expected: barge::protocol::FileId([1; 16]),
            actual: barge::protocol::FileId([2; 16]),
        })
        .context("uploading `a.txt`");
        assert_eq!(status_of(&e), Status::Verification);
        assert!(render(&e).starts_with("uploading `a.txt`: verification failed"));
        assert_eq!(
            Status::Failure.max(Status::Verification),
            Status::Verification
        );
        assert_eq!(
            Status::Verification.max(Status::Failure),
            Status::Verification
        );
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        let g = Global {
            host: "::1".into(),
            port: 7,
            debug: false,
            quiet: false,
            plain: false,
            fingerprint: None,
            trust_new: false,
            user: None,
            password_file: None,
            token_file: None,
            max_listing: 1,
        };
        assert_eq!(g.remote().addr, "[::1]:7");
        let g = Global {
            host: "files.local".into(),
            ..g
        };
        assert_eq!(g.remote().addr, "files.local:7");
    }
}

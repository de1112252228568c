//! Where the server is and how far to trust it: the connection options every client command
//! shares, the pins of known servers (`security::known_hosts`, like ssh's `known_hosts`), and
//! the first-contact question.
//!
//! The threat: a man in the middle on the network path. A pinned key must match, or nothing is
//! sent (exit status 5); a new key is trusted only when the user confirms it on a terminal,
//! gives it with `--fingerprint`, or says `--trust-new`; a changed key is never replaced.
//!
//! A `--host` that is neither an address nor a name the system resolver knows is looked up
//! among the servers announced on the local network (`barge discover`). The announcement is a
//! hint only: the pin (kept under the name and the announced port) is checked as usual, and on
//! first contact the key the server presents must also be the announced one, so a spoofed
//! announcement pointing at another machine, or at the real one with a forged key, is refused.
//!
//! After the connection is trusted, the session logs in (`PROTOCOL.md` section 5.9) with the
//! first of: `--token-file`, `BARGE_TOKEN`, `--user` (password from `--password-file`,
//! `BARGE_PASSWORD` or a prompt that does not echo), the token or user name saved for the
//! server by `barge pair` or `barge login`. The credential is kept in memory for the process,
//! so the shell logs in again after a reconnect without asking again. No secret is taken from
//! the command line, where `ps` would show it.

use std::fmt;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;

use barge::client::{AnyStream, Client, ClientError, Security};
use barge::discovery::{self, Found};
use barge::protocol::{Code, Secret};
use barge::security::identity::Fingerprint;
use barge::security::known_hosts::{KnownHosts, Lookup};
use barge::security::logins::Logins;
use barge::security::tls::Expectation;

use super::output::Ui;
use super::{CONNECT_TIMEOUT, CannotConnect};

/// The server to talk to and how to reach it.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    /// `host:port`, with brackets around an IPv6 address.
    pub(crate) addr: String,
    host: String,
    port: u16,
    plain: bool,
    fingerprint: Option<Fingerprint>,
    trust_new: bool,
    login: LoginOptions,
    /// The credential once found (asked at most once per process).
    credential: Arc<Mutex<Option<Option<Credential>>>>,
    /// The announced server `host` names, once looked up (`Some(None)`: not a discovered one).
    located: Arc<Mutex<Option<Option<Found>>>>,
    /// The largest listing accepted (`--max-listing`).
    listing_limit: barge::client::ListingLimit,
}

/// How to log in, as the command line said.
#[derive(Clone, Debug, Default)]
pub(crate) struct LoginOptions {
    /// `--user NAME`.
    pub(crate) user: Option<String>,
    /// `--password-file FILE`.
    pub(crate) password_file: Option<PathBuf>,
    /// `--token-file FILE`.
    pub(crate) token_file: Option<PathBuf>,
}

/// A secret to log in with.
#[derive(Clone, Debug)]
enum Credential {
    Token(Secret),
    Password { user: String, password: Secret },
}

/// The server refused the login (`530`): exit status 6.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LoginFailed(pub(crate) String);

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.found() {
            Some(found) => write!(f, "{}:{}", barge::name::escape(&self.host), found.port),
            None => f.write_str(&self.addr),
        }
    }
}

/// The server's key is not one the user trusts: exit status 5.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Untrusted(pub(crate) String);

impl Remote {
    pub(crate) fn new(
        host: &str,
        port: u16,
        plain: bool,
        fingerprint: Option<Fingerprint>,
        trust_new: bool,
        login: LoginOptions,
    ) -> Self {
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Self {
            addr,
            host: host.to_owned(),
            port,
            plain,
            fingerprint,
            trust_new,
            login,
            credential: Arc::new(Mutex::new(None)),
            located: Arc::new(Mutex::new(None)),
            listing_limit: barge::client::ListingLimit::DEFAULT,
        }
    }

    /// Accepts listings of up to `files` files (`--max-listing`).
    pub(crate) fn with_listing_limit(mut self, files: u64) -> Self {
        self.listing_limit = barge::client::ListingLimit { files };
        self
    }

    /// The host as pins and saved logins know it: as given, or for a server found by its
    /// announced name, that name with what a pin cannot hold (spaces, `#`, brackets, `%`,
    /// non-ASCII) percent-encoded.
    pub(crate) fn host(&self) -> String {
        if self.found().is_none() {
            return self.host.clone();
        }
        const PIN_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
            .add(b' ')
            .add(b'#')
            .add(b'[')
            .add(b']')
            .add(b'%');
        percent_encoding::utf8_percent_encode(&self.host, PIN_UNSAFE).to_string()
    }

    /// The port: the announced one for a server found on the local network.
    pub(crate) fn port(&self) -> u16 {
        self.found().map_or(self.port, |f| f.port)
    }

    /// The announced server `host` names, if it was looked up and is one.
    fn found(&self) -> Option<Found> {
        self.located
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .flatten()
    }

    /// Where to connect: the announced addresses of a discovered server (looked up once per
    /// process), else `host:port` as given.
    pub(crate) async fn targets(&self) -> anyhow::Result<(Vec<String>, Option<Found>)> {
        let cached = self
            .located
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let found = match cached {
            Some(found) => found,
            None => {
                let found = super::discover::locate(&self.host, self.port).await?;
                *self.located.lock().unwrap_or_else(PoisonError::into_inner) = Some(found.clone());
                found
            }
        };
        Ok(match found {
            Some(f) => (
                f.addresses.iter().map(discovery::show_addr).collect(),
                Some(f),
            ),
            None => (vec![self.addr.clone()], None),
        })
    }

    /// The user name given with `--user`.
    pub(crate) fn user(&self) -> Option<&str> {
        self.login.user.as_deref()
    }

    /// The credential this process logs in with, found once.
    fn credential(&self) -> anyhow::Result<Option<Credential>> {
        let mut cached = self
            .credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = &*cached {
            return Ok(c.clone());
        }
        let found = self.find_credential()?;
        *cached = Some(found.clone());
        Ok(found)
    }

    fn find_credential(&self) -> anyhow::Result<Option<Credential>> {
        if let Some(file) = &self.login.token_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the token file `{}`", file.display()))?;
            let token = text.lines().next().unwrap_or("").trim();
            anyhow::ensure!(
                !token.is_empty(),
                "the token file `{}` is empty",
                file.display()
            );
            return Ok(Some(Credential::Token(Secret::new(token))));
        }
        if let Some(token) = std::env::var("BARGE_TOKEN").ok().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::Token(Secret::new(token.trim()))));
        }
        // No configuration folder at all (no HOME) means nothing was saved.
        let saved = match (&self.login.user, Logins::for_user()) {
            (None, Ok(logins)) => logins
                .get(&self.host(), self.port())
                .context("reading the saved logins")?,
            _ => None,
        };
        if let Some(token) = saved.as_ref().and_then(|s| s.token.clone()) {
            return Ok(Some(Credential::Token(Secret::new(token))));
        }
        let user = self
            .login
            .user
            .clone()
            .or_else(|| saved.and_then(|s| s.user));
        let Some(user) = user else {
            return Ok(None);
        };
        let password = super::admin::read_password(
            self.login.password_file.as_deref(),
            &format!("Password for {user} on {}: ", self.addr),
            false,
        )?;
        Ok(Some(Credential::Password {
            user,
            password: Secret::new(password),
        }))
    }
}

/// How long a login may take before the CLI says what it is waiting for: a credential check
/// takes well under a second, the server's failed-login delay up to 30 s.
const SLOW_LOGIN_NOTE: std::time::Duration = std::time::Duration::from_secs(2);

/// Awaits `step` (a login or pairing step); if it takes longer than [`SLOW_LOGIN_NOTE`], says
/// why the wait (on stderr, unless `--quiet`) instead of seeming to hang.
pub(crate) async fn waiting_for_login<T>(
    ui: &Ui,
    remote: &Remote,
    step: impl std::future::Future<Output = T>,
) -> T {
    let mut step = std::pin::pin!(step);
    tokio::select! {
        done = &mut step => return done,
        () = tokio::time::sleep(SLOW_LOGIN_NOTE) => {}
    }
    ui.note(format_args!(
        "waiting for {remote} to answer the login: a server slows down logins from an \
         address after failed attempts (by up to 30 s)"
    ));
    step.await
}

/// Logs the session in with the credential the options and saved logins give, if any.
async fn log_in(remote: &Remote, client: &mut Client<AnyStream>, ui: &Ui) -> anyhow::Result<()> {
    let Some(credential) = remote.credential()? else {
        return Ok(());
    };
    let result = waiting_for_login(ui, remote, async {
        match &credential {
            Credential::Token(t) => client.login_token(t.expose()).await,
            Credential::Password { user, password } => {
                client.login_password(user, password.expose()).await
            }
        }
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(ClientError::Refused { code, .. }) if code == Code::NOT_LOGGED_IN => {
            let what = match &credential {
                Credential::Token(_) => "the token was not accepted (revoked?)".to_owned(),
                Credential::Password { user, .. } => {
                    format!("wrong user name or password for {user}")
                }
            };
            Err(LoginFailed(format!("login incorrect on {remote}: {what}")).into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("logging in to {remote}"))),
    }
}

/// Opens a session with the server: TLS with its pinned key unless `--plain`.
pub(crate) async fn connect(remote: &Remote, ui: &Ui) -> anyhow::Result<Client<AnyStream>> {
    let mut client = connect_trusted(remote, ui).await?;
    client.set_listing_limit(remote.listing_limit);
    log_in(remote, &mut client, ui).await?;
    Ok(client)
}

/// Opens a session with the server (TLS with its pinned key unless `--plain`), without
/// logging in.
async fn connect_trusted(remote: &Remote, ui: &Ui) -> anyhow::Result<Client<AnyStream>> {
    let (targets, found) = remote.targets().await?;
    if remote.plain {
        let (client, _) = connect_any(&targets, Security::Plain)
            .await
            .map_err(|e| connect_error(remote, e))?;
        return Ok(client);
    }
    let port = remote.port();
    let hosts = KnownHosts::for_user().context("finding the known-hosts file")?;
    let pinned = hosts
        .pinned(&remote.host(), port)
        .context("reading the known-hosts file")?;
    let announced = found.as_ref().and_then(|f| f.announcement.fingerprint);
    let expect = match (pinned, remote.fingerprint, announced) {
        (Some(pin), _, _) => Expectation::Pinned(pin),
        (None, Some(given), _) => Expectation::Pinned(given),
        // An announcement alone is never trusted, but on first contact it must not be
        // contradicted either: a server with another key is refused during the handshake.
        (None, None, Some(said)) => Expectation::Pinned(said),
        (None, None, None) => Expectation::FirstContact,
    };
    let (client, presented) = match connect_any(&targets, Security::Tls(expect)).await {
        Ok(ok) => ok,
        Err(ClientError::IdentityChanged { presented, .. })
            if announced.is_some_and(|said| expect == Expectation::Pinned(said))
                && pinned.is_none()
                && remote.fingerprint.is_none() =>
        {
            return Err(spoofed(remote, announced, presented));
        }
        Err(e) => return Err(connect_error(remote, e)),
    };
    if let Some(given) = remote.fingerprint
        && pinned.is_some_and(|p| p != given)
    {
        // The pin matched, but the user expected another key: believe neither silently.
        return Err(Untrusted(format!(
            "{remote} presented its pinned key {}, not the {given} you gave",
            pinned.map(|p| p.to_string()).unwrap_or_default()
        ))
        .into());
    }
    let Some(presented) = presented else {
        return Err(Untrusted(format!("{remote} presented no key")).into());
    };
    match (announced, pinned) {
        (Some(said), None) if said != presented => {
            return Err(spoofed(remote, Some(said), presented));
        }
        (Some(said), Some(pin)) if said != pin => ui.note(format_args!(
            "Note: the announcement of {remote} gives the key {said}, not its pinned key {pin}; \
             the pinned key was checked and matched, so the announcement is stale or forged."
        )),
        _ => {}
    }
    if pinned.is_none() {
        let trusted = remote.fingerprint.is_some() || remote.trust_new || ask(remote, &presented)?;
        if !trusted {
            return Err(Untrusted(format!(
                "{remote} is a server this machine does not know yet, with key {presented}.\n\
                 Check the key on the server (`barge serve --show-identity`), then connect with\n\
                 --fingerprint {presented}  (or --trust-new to accept it unchecked)"
            ))
            .into());
        }
        match hosts.lookup(&remote.host(), port, &presented)? {
            Lookup::Unknown => {
                hosts.add(&remote.host(), port, &presented)?;
                ui.note(format_args!(
                    "Trusting {remote} with key {presented} from now on (saved in {}).",
                    hosts.path().display()
                ));
            }
            Lookup::Match => {}
            Lookup::Mismatch { pinned } => {
                // Another client pinned a different key for it in the meantime.
                return Err(ClientError::IdentityChanged {
                    pinned: Some(pinned),
                    presented,
                }
                .into());
            }
        }
    }
    Ok(client)
}

/// Connects to the first of `targets` that answers (a discovered server may have several
/// addresses, not all reachable from here); other failures end the attempt at once.
pub(crate) async fn connect_any(
    targets: &[String],
    security: Security,
) -> Result<(Client<AnyStream>, Option<Fingerprint>), ClientError> {
    let mut last = None;
    for addr in targets {
        match Client::connect_with(addr, CONNECT_TIMEOUT, security).await {
            Ok(ok) => return Ok(ok),
            Err(e @ ClientError::Connect { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Connect {
        addr: targets.join(", "),
        source: io::ErrorKind::NotFound.into(),
    }))
}

/// The refusal of a server found on the local network whose key is not the announced one.
pub(crate) fn spoofed(
    remote: &Remote,
    said: Option<Fingerprint>,
    presented: Fingerprint,
) -> anyhow::Error {
    let said = said.map(|f| f.to_string()).unwrap_or_default();
    Untrusted(format!(
        "refusing {remote}: it was announced on the local network with the key {said}, but \
         it presented {presented}.\n\
         The announcement may be forged (anyone on the network can send one). Nothing was sent.\n\
         If you trust this server, check its key on the server (`barge serve --show-identity`)\n\
         and connect by its address with --fingerprint."
    ))
    .into()
}

/// A connection failure, with what the user can do about it.
pub(crate) fn connect_error(remote: &Remote, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::IdentityChanged { pinned, presented } => {
            let path = KnownHosts::for_user()
                .map(|h| h.path().display().to_string())
                .unwrap_or_else(|_| "the known-hosts file".into());
            Untrusted(format!(
                "WARNING: the identity of {remote} has changed!\n\
                 It presented {presented}{}.\n\
                 Someone may be intercepting the connection, or the server was reinstalled.\n\
                 Nothing was sent. If you know the server's key changed, delete the line for\n\
                 {}:{} in {path} and connect again.",
                pinned
                    .map(|p| format!(", but {p} is pinned for it"))
                    .unwrap_or_default(),
                remote.host().to_lowercase(),
                remote.port(),
            ))
            .into()
        }
        // These say "cannot connect" themselves.
        e @ (ClientError::Connect { .. } | ClientError::Busy { .. }) => e.into(),
        e => anyhow::Error::new(e).context(CannotConnect(remote.to_string())),
    }
}

/// Asks on the terminal whether to trust a server's key seen for the first time; never asks
/// when stdin or stderr is not a terminal (scripts must say `--fingerprint` or `--trust-new`).
fn ask(remote: &Remote, key: &Fingerprint) -> anyhow::Result<bool> {
    if !io::stdin().is_terminal() || !io::stderr().is_terminal() {
        return Ok(false);
    }
    let mut err = io::stderr().lock();
    writeln!(
        err,
        "The server {remote} is not known on this machine yet.\n\
         Its key fingerprint is {key}.\n\
         Compare it with what `barge serve --show-identity` prints on the server."
    )?;
    write!(err, "Trust it from now on? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

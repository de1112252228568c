//! `barge pair`, `barge login` and `barge logout`: getting a client its access to a server and
//! remembering it (`security::logins`, next to `known_hosts`).
//!
//! Design: `barge pair` saves the token the server created; `barge login` checks a password
//! once and saves only the user name, so later commands ask for the password again (or take
//! `BARGE_PASSWORD`): a password is never stored, and a password login cannot mint a token
//! (that would need a wire command beyond the agreed protocol; `barge token create` on the
//! server or pairing give tokens). Not here: the exchanges themselves (`barge::client`).

use anyhow::Context as _;

use barge::client::{ClientError, DEFAULT_PORT, Security};
use barge::security::known_hosts::{KnownHosts, Lookup};
use barge::security::logins::{Logins, SavedLogin};
use barge::security::pair::PairCode;
use barge::security::tls::Expectation;

use super::Global;
use super::output::Ui;
use super::remote::{self, Remote, Untrusted};

/// Options of `barge pair`.
#[derive(clap::Args, Debug)]
pub(crate) struct PairArgs {
    /// The server: HOST or HOST:PORT (an IPv6 address in brackets: [::1]:PORT)
    server: String,
    /// The code the server printed, such as 7-copper-lantern (give - to type it on the
    /// terminal, where it is not echoed)
    code: String,
}

/// Splits `HOST[:PORT]`, with the port of `--port` when none is given.
fn split_server(server: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .context("an IPv6 address needs its closing ]")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().context("invalid port")?,
            None => default_port,
        };
        return Ok((host.to_owned(), port));
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_owned(), port.parse().context("invalid port")?))
        }
        _ => Ok((server.to_owned(), default_port)),
    }
}

/// `barge pair HOST[:PORT] CODE`.
pub(crate) async fn pair(args: &PairArgs, global: &Global, ui: &Ui) -> anyhow::Result<()> {
    let default_port = if global.port == 0 {
        DEFAULT_PORT
    } else {
        global.port
    };
    let (host, port) = split_server(&args.server, default_port)?;
    let code_text = if args.code == "-" {
        rpassword::prompt_password("Pairing code: ").context("reading the code")?
    } else {
        args.code.clone()
    };
    let code: PairCode = code_text.parse()?;
    let remote = Remote::new(
        &host,
        port,
        false,
        None,
        false,
        remote::LoginOptions::default(),
    );
    // A name announced on the local network is found as for every other command; the pin and
    // the token are then kept under that name and its announced port.
    let (targets, found) = remote.targets().await?;
    let (host, port) = (remote.host(), remote.port());
    let hosts = KnownHosts::for_user().context("finding the known-hosts file")?;
    let pinned = hosts
        .pinned(&host, port)
        .context("reading the known-hosts file")?;
    let announced = found.as_ref().and_then(|f| f.announcement.fingerprint);
    // The pairing itself proves who holds the code; an announcement must still not be
    // contradicted by the key presented.
    let expect = match (pinned, announced) {
        (Some(pin), _) => Expectation::Pinned(pin),
        (None, Some(said)) => Expectation::Pinned(said),
        (None, None) => Expectation::FirstContact,
    };
    let (mut client, presented) = match remote::connect_any(&targets, Security::Tls(expect)).await {
        Ok(ok) => ok,
        Err(ClientError::IdentityChanged { presented, .. }) if pinned.is_none() => {
            return Err(remote::spoofed(&remote, announced, presented));
        }
        Err(e) => return Err(remote::connect_error(&remote, e)),
    };
    let presented = presented.ok_or_else(|| Untrusted(format!("{remote} presented no key")))?;
    let paired = match remote::waiting_for_login(ui, &remote, client.pair(&code)).await {
        Ok(p) => p,
        Err(ClientError::Pairing(why)) => {
            return Err(Untrusted(format!(
                "pairing with {remote} failed: {why}; nothing was saved"
            ))
            .into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("pairing with {remote}"))),
    };
    // The exchange proved this very TLS session ends at the holder of the code: pin its key.
    match hosts.lookup(&host, port, &presented)? {
        Lookup::Unknown => {
            hosts.add(&host, port, &presented)?;
        }
        Lookup::Match => {}
        Lookup::Mismatch { pinned } => {
            return Err(ClientError::IdentityChanged {
                pinned: Some(pinned),
                presented,
            }
            .into());
        }
    }
    let logins = Logins::for_user().context("finding the saved logins")?;
    logins
        .set(
            &host,
            port,
            SavedLogin {
                token: Some(paired.token().to_owned()),
                user: None,
            },
        )
        .context("saving the token")?;
    let _ = client.disconnect().await;
    ui.note(format_args!(
        "Paired with {remote} (key {presented}) as {}; the token is saved in {}.",
        paired.principal,
        logins.path().display()
    ));
    Ok(())
}

/// `barge login --user NAME`: checks the password and remembers the name for this server.
pub(crate) async fn login(remote: &Remote, ui: &Ui) -> anyhow::Result<()> {
    let Some(user) = remote.user().map(str::to_owned) else {
        anyhow::bail!("barge login needs --user NAME");
    };
    let client = remote::connect(remote, ui).await?;
    let _ = client.disconnect().await;
    let logins = Logins::for_user().context("finding the saved logins")?;
    logins
        .set(
            &remote.host(),
            remote.port(),
            SavedLogin {
                token: None,
                user: Some(user.clone()),
            },
        )
        .context("saving the login")?;
    ui.note(format_args!(
        "Logged in to {remote} as {user}; later commands use this name and ask for its \
         password (or take BARGE_PASSWORD). Saved in {}.",
        logins.path().display()
    ));
    Ok(())
}

/// `barge logout`: forgets the saved token or user name for the server.
pub(crate) fn logout(remote: &Remote, ui: &Ui) -> anyhow::Result<()> {
    let logins = Logins::for_user().context("finding the saved logins")?;
    if logins.set(&remote.host(), remote.port(), SavedLogin::default())? {
        ui.note(format_args!("Forgot the login saved for {remote}."));
    } else {
        ui.note(format_args!("No login was saved for {remote}."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_server;

    #[test]
    fn servers_split_into_host_and_port() {
        let cases = [
            ("h", ("h", 9)),
            ("h:7", ("h", 7)),
            ("[::1]:7", ("::1", 7)),
            ("[::1]", ("::1", 9)),
            ("::1", ("::1", 9)),
            ("10.0.0.1:80", ("10.0.0.1", 80)),
        ];
        for (text, (host, port)) in cases {
            let (h, p) = split_server(text, 9).unwrap_or_default();
            assert_eq!((h.as_str(), p), (host, port), "{text}");
        }
        assert!(split_server("h:x", 9).is_err());
    }
}

//! What `barge serve` prints when it starts: how another machine reaches it.
//!
//! It owns the addresses shown (every LAN address when bound to `0.0.0.0`/`::`, from
//! `if-addrs`), the command another machine types, the web URLs, the QR code of the web page
//! and the warning for a loopback-only server. It does not bind, check or create anything
//! (`serve` does, before the banner is printed).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// The addresses other machines can use to reach a listener bound to `bound`, best first:
/// the LAN addresses of every interface for an unspecified address (loopback and IPv6
/// link-local ones left out: the first is no use elsewhere, the second needs a zone), or the
/// bound address itself.
pub(crate) fn reachable(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut found: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
        // `0.0.0.0` listens on IPv4 only; `::` on both where the system maps IPv4 into it.
        .filter(|ip| bound.is_ipv6() || ip.is_ipv4())
        .collect();
    found.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    found.dedup();
    found
        .into_iter()
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// `host:port` as a URL authority (brackets around IPv6).
pub(crate) fn authority(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
        IpAddr::V4(v4) => format!("{v4}:{}", addr.port()),
    }
}

/// The command another machine types to list the share at `addr`.
pub(crate) fn client_command(addr: SocketAddr, fingerprint: Option<&str>) -> String {
    let trust = match fingerprint {
        Some(fp) => format!("--fingerprint {fp}"),
        None => "--plain".to_owned(),
    };
    format!(
        "barge --host {} --port {} {trust} ls",
        addr.ip(),
        addr.port()
    )
}

/// The lines saying where the server listens and how to connect; `fingerprint` is `None` for
/// a plain server, `login` whether a login is needed.
pub(crate) fn lines(bound: SocketAddr, fingerprint: Option<&str>, login: bool) -> String {
    let mut out = String::new();
    let reach = reachable(bound);
    if bound.ip().is_unspecified() {
        let _ = writeln!(out, "Reachable at (every address of this machine):");
        for addr in &reach {
            let _ = writeln!(out, "  {}", authority(*addr));
        }
        if reach.is_empty() {
            let _ = writeln!(out, "  (no network address found besides loopback)");
        }
    }
    if bound.ip().is_loopback() {
        let _ = writeln!(
            out,
            "Warning: loopback only: other machines cannot connect (use --host 0.0.0.0 to share \
             on the network)"
        );
    }
    if let Some(first) = reach.first() {
        let _ = writeln!(out, "From another machine:");
        let _ = writeln!(out, "  {}", client_command(*first, fingerprint));
        if login {
            let _ = writeln!(
                out,
                "  (a login is needed: add --user NAME, or pair with --pair / barge pair)"
            );
        }
    }
    out
}

/// A QR code of `text`, drawn with Unicode half blocks (two rows of modules per line) and a
/// quiet zone, dark modules as spaces so it scans on a dark terminal too.
pub(crate) fn qr(text: &str) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Prints the QR code of the web page's `url` when standard output is a terminal. With
/// `--qr-token` and logins needed, the link carries a fresh token with the `--perm`/`--folder`
/// grant; without it, the page shows its login form.
pub(crate) fn print_qr(
    url: &str,
    qr_token: bool,
    grant: &super::admin::PermArgs,
    access: &barge::server::Access,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return Ok(());
    }
    let link = match (qr_token, access.anonymous(), access.users()) {
        (true, None, Some(users)) => {
            let token = users
                .create_token("qr", grant.perms(), &grant.folder())
                .context("creating the QR code's token")?;
            println!(
                "The QR code logs in with a new token ({}); revoke it with barge token revoke {}",
                grant.describe(),
                token.id
            );
            format!("{url}login?token={}", token.secret())
        }
        _ => url.to_owned(),
    };
    if let Some(code) = qr(&link) {
        println!("{code}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_address_is_shown_as_is() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(reachable(a), vec![a]);
        let text = lines(a, Some("SHA256:x"), false);
        assert!(text.contains("Warning: loopback only"), "{text}");
        assert!(
            text.contains("barge --host 127.0.0.1 --port 4000 --fingerprint SHA256:x ls"),
            "{text}"
        );
    }

    #[test]
    fn every_lan_address_is_listed_for_any() {
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap_or_else(|_| unreachable!());
        for addr in reachable(any) {
            assert!(addr.is_ipv4() && !addr.ip().is_loopback(), "{addr}");
            assert_eq!(addr.port(), 4000);
        }
        assert!(!lines(any, None, false).contains("Warning"));
    }

    #[test]
    fn ipv6_in_urls_has_brackets() {
        let a: SocketAddr = "[::1]:80".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(authority(a), "[::1]:80");
    }

    #[test]
    fn the_qr_code_is_half_blocks() {
        let code = qr("https://10.0.0.1:8443/").unwrap_or_default();
        assert!(code.lines().count() > 10);
        assert!(code.chars().all(|c| " ▀▄█\n".contains(c)), "{code}");
    }
}

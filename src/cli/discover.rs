//! LAN discovery on the command line: `barge discover`, the announcement `barge serve` makes
//! (`--name`, `--no-announce`), and finding the server a `--host NAME` names.
//!
//! The trust decisions stay in [`super::remote`]: an announcement only says where to connect and
//! which key to expect; the pins and the first-contact rules decide.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;

use barge::discovery::{self, Announcement, Announcer, Found, Service};
use barge::name::escape;
use barge::security::identity::Fingerprint;

use super::CannotConnect;
use super::output::Ui;

/// How long connecting by name waits for the server to answer; it returns as soon as it does.
const FIND_WAIT: Duration = Duration::from_secs(3);
/// The longest `--timeout` taken: a typo must not make `barge discover` hang for hours.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Options of `barge discover`.
#[derive(clap::Args, Debug)]
pub(crate) struct DiscoverArgs {
    /// Listen for answers this many seconds (decimals allowed)
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_wait)]
    timeout: Duration,
    /// One JSON array for scripts instead of the table
    #[arg(long)]
    json: bool,
}

/// Announcement options of `barge serve`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AnnounceArgs {
    /// Name to announce on the local network (what `barge discover` shows and `--host`
    /// takes); default: this machine's host name
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Do not announce the server on the local network (mDNS); a server listening only on
    /// loopback never does
    #[arg(long, env = "BARGE_NO_ANNOUNCE")]
    no_announce: bool,
}

/// Parses `--timeout`: seconds, decimals allowed, at most [`MAX_WAIT`].
fn parse_wait(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid number of seconds {s:?}"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_WAIT)
        .ok_or_else(|| format!("the timeout is 0 to {} seconds", MAX_WAIT.as_secs()))
}

/// Announces the server listening on `listen`, unless told not to or it is loopback-only; its
/// web page (listening on `web`) only if others can reach it. Never fails the server: a network
/// without multicast gets a warning, not an outage.
pub(crate) fn announce(
    args: &AnnounceArgs,
    listen: SocketAddr,
    fingerprint: Option<Fingerprint>,
    web: Option<SocketAddr>,
) -> Option<Announcer> {
    if args.no_announce {
        return None;
    }
    let name = args.name.clone().unwrap_or_else(|| {
        let host = rustix::system::uname();
        discovery::default_name(&host.nodename().to_string_lossy())
    });
    let announcement = Announcement {
        tls: fingerprint.is_some(),
        fingerprint,
        web_port: web.filter(|w| !w.ip().is_loopback()).map(|w| w.port()),
    };
    let service = Service::for_listener(name, listen, announcement)?;
    match Announcer::start(&service) {
        Ok(announcer) => {
            println!(
                "Announced on the local network as \"{}\" (barge discover; barge --host {:?} ...)",
                escape(&service.name),
                escape(&service.name),
            );
            Some(announcer)
        }
        Err(e) => {
            tracing::warn!("not announced on the local network: {e}");
            None
        }
    }
}

/// `barge discover`: lists the servers that answer; an error (exit status 1) when none does.
pub(crate) async fn discover(args: &DiscoverArgs, ui: &Ui) -> anyhow::Result<()> {
    let found = discovery::browse(args.timeout)
        .await
        .context("looking for servers on the local network")?;
    if found.is_empty() {
        anyhow::bail!(
            "no barge server answered on the local network within {}",
            show_wait(args.timeout)
        );
    }
    let text = if args.json {
        json(&found)
    } else {
        table(&found)
    };
    ui.result(text.trim_end())
}

/// `2 s`, `0.5 s`.
fn show_wait(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// One aligned row per server, under a header; every text from the network escaped.
fn table(found: &[Found]) -> String {
    let header = ["NAME", "ADDRESS", "PORT", "KEY", "WEB"].map(str::to_owned);
    let rows: Vec<[String; 5]> = found
        .iter()
        .map(|f| {
            let addresses: Vec<String> = f.addresses.iter().map(|a| show_ip(*a)).collect();
            let key = match (f.announcement.tls, f.announcement.fingerprint) {
                (true, Some(fp)) => fp.to_string(),
                (true, None) => "TLS (key not announced)".to_owned(),
                (false, _) => "plain text".to_owned(),
            };
            let web = f
                .web_urls()
                .into_iter()
                .next()
                .unwrap_or_else(|| "-".into());
            [
                escape(&f.name),
                addresses.join(","),
                f.port.to_string(),
                key,
                web,
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The JSON form: an array of objects, one per server.
fn json(found: &[Found]) -> String {
    let list: Vec<serde_json::Value> = found
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "addresses": f.addresses.iter().map(|a| show_ip(*a)).collect::<Vec<_>>(),
                "port": f.port,
                "tls": f.announcement.tls,
                "fingerprint": f.announcement.fingerprint.map(|fp| fp.to_string()),
                "web": f.web_urls(),
            })
        })
        .collect();
    let mut text = serde_json::Value::Array(list).to_string();
    text.push('\n');
    text
}

/// An address without its port; a link-local IPv6 address with its interface number.
fn show_ip(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(a) if a.scope_id() != 0 => format!("{}%{}", a.ip(), a.scope_id()),
        a => a.ip().to_string(),
    }
}

/// The server `--host` names, when the name is not an address or a host name the system
/// resolver knows, but a server announced on the local network: `None` for addresses and
/// known host names (those are connected to as given).
///
/// # Errors
/// [`CannotConnect`] (exit status 3) when no server of that name answers either.
pub(crate) async fn locate(host: &str, port: u16) -> anyhow::Result<Option<Found>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() || bare.contains('%') {
        return Ok(None);
    }
    if tokio::net::lookup_host((host, port))
        .await
        .is_ok_and(|mut a| a.next().is_some())
    {
        return Ok(None);
    }
    let found = discovery::find(host, FIND_WAIT)
        .await
        .context("looking for the server on the local network")?;
    match found {
        Some(found) => Ok(Some(found)),
        None => Err(anyhow::anyhow!(
            "no such host, and no barge server named \"{}\" answered on the local network \
             within {} (`barge discover` lists them)",
            escape(host),
            show_wait(FIND_WAIT)
        )
        .context(CannotConnect(escape(host)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_bounds() {
        assert_eq!(parse_wait("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_wait("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        for bad in ["-1", "NaN", "inf", "601", "x", ""] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_escapes_names_and_aligns() {
        let fp = Fingerprint::of_spki(b"k");
        let found = [
            Found {
                name: "evil\u{1b}[2J".into(),
                port: 7070,
                addresses: vec!["10.0.0.1:7070".parse().unwrap()],
                announcement: Announcement {
                    tls: true,
                    fingerprint: Some(fp),
                    web_port: Some(8080),
                },
            },
            Found {
                name: "pi".into(),
                port: 9,
                addresses: vec![
                    "10.0.0.2:9".parse().unwrap(),
                    "[fe80::1%2]:9".parse().unwrap(),
                ],
                announcement: Announcement {
                    tls: false,
                    fingerprint: None,
                    web_port: None,
                },
            },
        ];
        let text = table(&found);
        assert!(!text.contains('\u{1b}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains(&fp.to_string()));
        assert!(lines[1].ends_with("https://10.0.0.1:8080/"), "{}", lines[1]);
        assert!(lines[2].contains("10.0.0.2,fe80::1%2"), "{}", lines[2]);
        assert!(lines[2].contains("plain text"));
        // Columns line up: the port starts at the same place on every line.
        let at = lines[0].find("PORT").unwrap();
        assert_eq!(&lines[1][at..at + 4], "7070");
        let json: serde_json::Value = serde_json::from_str(&json(&found)).unwrap();
        assert_eq!(json[1]["addresses"][1], "fe80::1%2");
        assert_eq!(json[0]["fingerprint"], fp.to_string());
        assert_eq!(json[1]["fingerprint"], serde_json::Value::Null);
        assert_eq!(json[0]["web"][0], "https://10.0.0.1:8080/");
    }
}

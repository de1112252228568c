//! LAN discovery with mDNS/DNS-SD (RFC 6762/6763): a server announces itself as an instance of
//! [`SERVICE_TYPE`] ([`announce`]), and clients list or look up the servers that answer
//! ([`browse`]).
//!
//! What an announcement says (TXT records, [`Announcement`]): the protocol version (`v=1`), whether
//! the server speaks TLS (`tls=1|0`), its key fingerprint (`fp=SHA256:...`) and the port of its web
//! page (`web=PORT`). Anyone on the network can send any of it: an announcement is a *hint*. This
//! module never decides trust; the client checks a discovered server's key against its pins and,
//! on first contact, against the announced fingerprint (see `barge`'s `cli::remote`).
//!
//! Not here: which addresses a server listens on, or any terminal output. What comes from the
//! network is bounded ([`MAX_FOUND`] servers, [`MAX_ADDRESSES`] addresses each) and parsed into
//! typed values; malformed announcements are dropped.

mod announce;
mod browse;

use std::net::{IpAddr, SocketAddr};

use crate::security::identity::Fingerprint;

pub use announce::{Announcer, Service, ServiceAddresses};
pub use browse::{browse, find};

/// The DNS-SD service type barge servers announce.
pub const SERVICE_TYPE: &str = "_barge._tcp.local.";
/// The protocol version announced in the `v` TXT record; others are ignored by [`browse`].
pub const PROTOCOL_VERSION: &str = "1";
/// The longest instance name DNS-SD allows (one DNS label), in bytes.
pub const MAX_NAME_LEN: usize = 63;
/// At most this many servers are kept from one browse: a network flooding announcements cannot
/// make the client grow without bound.
pub const MAX_FOUND: usize = 256;
/// At most this many addresses are kept for one server.
pub const MAX_ADDRESSES: usize = 16;

/// Why discovery could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS responder could not start or refused a request.
    #[error("mDNS: {0}")]
    Mdns(#[source] mdns_sd::Error),
    /// The name cannot be announced (empty, too long, or with control characters).
    #[error("invalid server name {0:?}: 1 to {MAX_NAME_LEN} bytes, no control characters")]
    InvalidName(String),
}

impl From<mdns_sd::Error> for DiscoveryError {
    fn from(e: mdns_sd::Error) -> Self {
        Self::Mdns(e)
    }
}

/// What a server says about itself in its TXT records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// Whether the server speaks TLS (`tls=1`).
    pub tls: bool,
    /// The server's key fingerprint (`fp=`), when it speaks TLS.
    pub fingerprint: Option<Fingerprint>,
    /// The port of its web page (`web=`), when it serves one.
    pub web_port: Option<u16>,
}

/// Why a TXT record set is not a barge announcement this client understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// `v` is missing or not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0:?}")]
    Version(Option<String>),
    /// A value does not parse.
    #[error("malformed {0} record")]
    Malformed(&'static str),
}

impl Announcement {
    /// The TXT records, as `(key, value)` pairs.
    #[must_use]
    pub fn to_txt(&self) -> Vec<(&'static str, String)> {
        let mut txt = vec![
            ("v", PROTOCOL_VERSION.to_owned()),
            ("tls", if self.tls { "1" } else { "0" }.to_owned()),
        ];
        if let Some(fp) = self.fingerprint {
            txt.push(("fp", fp.to_string()));
        }
        if let Some(port) = self.web_port {
            txt.push(("web", port.to_string()));
        }
        txt
    }

    /// Parses TXT records; `get` returns the value of a key (`None` when absent). Unknown keys
    /// are ignored, so later versions can add some.
    ///
    /// # Errors
    /// [`TxtError`] for another protocol version or a malformed value.
    pub fn from_txt<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, TxtError> {
        match get("v") {
            Some(PROTOCOL_VERSION) => {}
            other => return Err(TxtError::Version(other.map(crate::name::escape))),
        }
        let tls = match get("tls") {
            Some("1") => true,
            Some("0") => false,
            _ => return Err(TxtError::Malformed("tls")),
        };
        let fingerprint = get("fp")
            .map(|v| v.parse::<Fingerprint>())
            .transpose()
            .map_err(|_| TxtError::Malformed("fp"))?;
        let web_port = get("web")
            .map(|v| v.parse::<u16>().ok().filter(|p| *p != 0))
            .map(|p| p.ok_or(TxtError::Malformed("web")))
            .transpose()?;
        Ok(Self {
            tls,
            fingerprint,
            web_port,
        })
    }
}

/// A server that answered a browse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The instance name (what `--host` takes); untrusted text, escape it before printing.
    pub name: String,
    /// The TCP port of the barge protocol.
    pub port: u16,
    /// The server's addresses with the port, best first (IPv4, then global IPv6, then
    /// link-local IPv6 with its interface); never loopback.
    pub addresses: Vec<SocketAddr>,
    /// What the server says about itself.
    pub announcement: Announcement,
}

impl Found {
    /// The web page's URLs, one per address (`https` when the server speaks TLS).
    #[must_use]
    pub fn web_urls(&self) -> Vec<String> {
        let Some(port) = self.announcement.web_port else {
            return Vec::new();
        };
        let scheme = if self.announcement.tls {
            "https"
        } else {
            "http"
        };
        self.addresses
            .iter()
            .map(|a| {
                let mut at = *a;
                at.set_port(port);
                format!("{scheme}://{}/", show_addr(&at))
            })
            .collect()
    }
}

/// `ip:port`, with brackets around IPv6 and its interface number for a link-local address.
#[must_use]
pub fn show_addr(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) if a.scope_id() != 0 => {
            format!("[{}%{}]:{}", a.ip(), a.scope_id(), a.port())
        }
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Whether `name` can be announced as an instance name.
///
/// # Errors
/// [`DiscoveryError::InvalidName`].
pub fn check_name(name: &str) -> Result<(), DiscoveryError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name.chars().any(|c| c.is_control() || c == '\u{FEFF}')
    {
        return Err(DiscoveryError::InvalidName(crate::name::escape(name)));
    }
    Ok(())
}

/// The default instance name: this machine's host name without a domain, cut to
/// [`MAX_NAME_LEN`] bytes; `barge` when there is none.
#[must_use]
pub fn default_name(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or("").trim();
    let cleaned: String = short.chars().filter(|c| !c.is_control()).collect();
    let mut end = cleaned.len().min(MAX_NAME_LEN);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    match &cleaned[..end] {
        "" => "barge".to_owned(),
        name => name.to_owned(),
    }
}

/// The instance name inside a full service name (`name._barge._tcp.local.`), with DNS escapes
/// (`\.`, `\\`, `\DDD`) undone; `None` when it is not one of ours.
#[must_use]
pub fn instance_of(fullname: &str) -> Option<String> {
    let cut = fullname.len().checked_sub(SERVICE_TYPE.len() + 1)?;
    let (escaped, rest) = (fullname.get(..cut)?, fullname.get(cut..)?);
    if !rest
        .strip_prefix('.')
        .is_some_and(|t| t.eq_ignore_ascii_case(SERVICE_TYPE))
        || escaped.is_empty()
    {
        return None;
    }
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        let decimal = rest
            .get(..3)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u8>().ok());
        match (decimal, rest.split_first()) {
            (Some(d), _) => {
                bytes.push(d);
                rest = &rest[3..];
            }
            (None, Some((&c, tail))) => {
                bytes.push(c);
                rest = tail;
            }
            (None, None) => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

/// Orders addresses best first for connecting: IPv4, global IPv6, then link-local IPv6 (which
/// needs its interface); loopback and unspecified addresses are dropped (a remote server's
/// loopback address would reach this machine instead).
fn rank(addresses: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut kept: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|a| !a.ip().is_loopback() && !a.ip().is_unspecified())
        .filter(|a| match a {
            // A link-local IPv6 address is unusable without the interface it was seen on.
            SocketAddr::V6(v6) => !is_link_local(a.ip()) || v6.scope_id() != 0,
            SocketAddr::V4(_) => true,
        })
        .collect();
    kept.sort_by_key(|a| (a.is_ipv6(), is_link_local(a.ip()), *a));
    kept.dedup();
    kept.truncate(MAX_ADDRESSES);
    kept
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests;

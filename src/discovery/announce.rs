//! The server side of discovery: answering mDNS queries for one barge instance until stopped.
//!
//! Not here: deciding whether to announce at all (the CLI skips loopback-only servers and honours
//! `--no-announce`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

use super::{Announcement, DiscoveryError, SERVICE_TYPE, check_name};

/// How long stopping waits for the goodbye packets to go out, so clients drop the server at
/// once rather than when its records expire.
const GOODBYE_WAIT: Duration = Duration::from_millis(500);

/// Which addresses to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAddresses {
    /// Every IPv4 address of every interface but loopback, kept up to date (a server listening
    /// on `0.0.0.0`).
    AllV4,
    /// Every address of every interface but loopback, kept up to date (a server listening on
    /// `::`, which takes IPv4 too).
    All,
    /// These addresses only.
    Only(Vec<IpAddr>),
}

/// One barge instance to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The instance name clients see and connect with.
    pub name: String,
    /// The TCP port of the barge protocol.
    pub port: u16,
    /// Where the server can be reached.
    pub addresses: ServiceAddresses,
    /// The TXT records.
    pub announcement: Announcement,
}

impl Service {
    /// The service for a server listening on `listen`; `None` when it listens on loopback
    /// only, where nobody else on the network could reach it anyway.
    #[must_use]
    pub fn for_listener(
        name: String,
        listen: SocketAddr,
        announcement: Announcement,
    ) -> Option<Self> {
        let ip = listen.ip();
        if ip.is_loopback() {
            return None;
        }
        let addresses = match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => ServiceAddresses::AllV4,
            IpAddr::V6(v6) if v6.is_unspecified() => ServiceAddresses::All,
            ip => ServiceAddresses::Only(vec![ip]),
        };
        Some(Self {
            name,
            port: listen.port(),
            addresses,
            announcement,
        })
    }
}

/// A running announcement; dropping it says goodbye on the network and stops the responder.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Announcer {
    /// Starts answering for `service` on every interface but loopback (the responder runs on a
    /// thread of its own).
    ///
    /// # Errors
    /// [`DiscoveryError::InvalidName`] for a name that cannot be announced; `Mdns` when the
    /// responder cannot start. Sockets are opened on the responder's thread, so a network
    /// without multicast shows up as no answers, not as an error here.
    pub fn start(service: &Service) -> Result<Self, DiscoveryError> {
        check_name(&service.name)?;
        let daemon = ServiceDaemon::new()?;
        // Loopback is not the network: answering there could only confuse local browsers.
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        let host = format!("{}.local.", host_label(&service.name));
        let txt = service.announcement.to_txt();
        let info = match &service.addresses {
            ServiceAddresses::Only(ips) => ServiceInfo::new(
                SERVICE_TYPE,
                &service.name,
                &host,
                ips.as_slice(),
                service.port,
                txt.as_slice(),
            )?,
            all => {
                let mut info = ServiceInfo::new(
                    SERVICE_TYPE,
                    &service.name,
                    &host,
                    (),
                    service.port,
                    txt.as_slice(),
                )?
                .enable_addr_auto();
                if *all == ServiceAddresses::AllV4 {
                    info.set_interfaces(vec![IfKind::IPv4]);
                }
                info
            }
        };
        let fullname = info.get_fullname().to_owned();
        daemon.register(info)?;
        Ok(Self { daemon, fullname })
    }

    /// The full DNS-SD name announced (`NAME._barge._tcp.local.`).
    #[must_use]
    pub fn fullname(&self) -> &str {
        &self.fullname
    }
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // Best effort: a server going down must not wait on the network for long.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(GOODBYE_WAIT);
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(GOODBYE_WAIT);
        }
    }
}

/// A DNS host label made from the instance name (letters, digits and `-`), for the address
/// records; the instance name itself may hold any character. The `-barge` suffix keeps clear of
/// the `HOSTNAME.local` records the system's own responder (Avahi, Bonjour) may publish.
fn host_label(name: &str) -> String {
    let mut label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // A DNS label holds at most 63 bytes, the suffix included.
    label.truncate(57);
    label = label.trim_matches('-').to_owned();
    if label.is_empty() {
        label = "barge".to_owned();
    }
    format!("{label}-barge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listeners_are_never_announced() {
        let a = Announcement {
            tls: true,
            fingerprint: None,
            web_port: None,
        };
        for addr in ["127.0.0.1:7070", "[::1]:7070", "127.1.2.3:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(Service::for_listener("x".into(), addr, a), None, "{addr}");
        }
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let s = Service::for_listener("x".into(), any, a).unwrap();
        assert_eq!((s.addresses, s.port), (ServiceAddresses::AllV4, 7070));
        let any6: SocketAddr = "[::]:1".parse().unwrap();
        assert_eq!(
            Service::for_listener("x".into(), any6, a)
                .unwrap()
                .addresses,
            ServiceAddresses::All
        );
        let one: SocketAddr = "192.168.1.20:9".parse().unwrap();
        assert_eq!(
            Service::for_listener("x".into(), one, a).unwrap().addresses,
            ServiceAddresses::Only(vec![one.ip()])
        );
    }

    #[test]
    fn host_labels_are_dns_safe() {
        assert_eq!(host_label("Laptop"), "laptop-barge");
        assert_eq!(host_label("Anna's Mac.home"), "anna-s-mac-home-barge");
        assert_eq!(host_label("日本"), "barge-barge");
    }
}

//! The client side of discovery: asking the network which barge servers are there.
//!
//! Not here: trusting what they say (see the module above), or printing it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use mdns_sd::{IfKind, Receiver, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent};
use tokio::time::Instant;

use super::{Announcement, DiscoveryError, Found, MAX_FOUND, SERVICE_TYPE, instance_of, rank};

/// A running query; dropping it stops the querier's thread.
struct Query {
    daemon: ServiceDaemon,
    events: Receiver<ServiceEvent>,
}

impl Query {
    fn start() -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        // Servers announce on the network, not on loopback (see `Announcer::start`).
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok(Self { daemon, events })
    }

    /// The next event before `deadline`; `None` at the deadline or if the querier stopped.
    async fn next(&self, deadline: Instant) -> Option<ServiceEvent> {
        tokio::time::timeout_at(deadline, self.events.recv_async())
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        // Not waited for: the thread ends on its own, and nothing is owed to the network.
        let _ = self.daemon.shutdown();
    }
}

/// Every barge server that answers within `within`, sorted by name.
///
/// # Errors
/// [`DiscoveryError::Mdns`] when the querier cannot start.
pub async fn browse(within: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let query = Query::start()?;
    let deadline = Instant::now() + within;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    while let Some(event) = query.next(deadline).await {
        match event {
            ServiceEvent::ServiceResolved(info) => {
                let key = info.fullname.to_lowercase();
                let Some(server) = parse(&info) else {
                    continue;
                };
                if found.len() < MAX_FOUND || found.contains_key(&key) {
                    found.insert(key, server);
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                found.remove(&fullname.to_lowercase());
            }
            _ => {}
        }
    }
    let mut list: Vec<Found> = found.into_values().collect();
    list.sort_by_key(|a| a.name.to_lowercase());
    Ok(list)
}

/// The server announced as `name` (compared without regard to ASCII case, as DNS does), if one
/// answers within `within`; returns as soon as it does.
///
/// # Errors
/// [`DiscoveryError::Mdns`] when the querier cannot start.
pub async fn find(name: &str, within: Duration) -> Result<Option<Found>, DiscoveryError> {
    let query = Query::start()?;
    let deadline = Instant::now() + within;
    while let Some(event) = query.next(deadline).await {
        if let ServiceEvent::ServiceResolved(info) = event {
            match parse(&info) {
                Some(server) if server.name.eq_ignore_ascii_case(name) => return Ok(Some(server)),
                _ => {}
            }
        }
    }
    Ok(None)
}

/// A resolved instance as a typed [`Found`]; `None` for anything malformed, of another protocol
/// version, or with no usable address.
fn parse(info: &ResolvedService) -> Option<Found> {
    let name = instance_of(&info.fullname)?;
    if info.port == 0 {
        return None;
    }
    let announcement = match Announcement::from_txt(|k| info.get_property_val_str(k)) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!("ignoring {}: {e}", crate::name::escape(&info.fullname));
            return None;
        }
    };
    let port = info.port;
    let addresses = rank(info.addresses.iter().filter_map(|ip| match ip {
        ScopedIp::V4(v4) => Some(SocketAddr::new((*v4.addr()).into(), port)),
        ScopedIp::V6(v6) => {
            let scope = if v6.addr().is_unicast_link_local() {
                v6.scope_id().index
            } else {
                0
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                *v6.addr(),
                port,
                0,
                scope,
            )))
        }
        _ => None,
    }));
    if addresses.is_empty() {
        return None;
    }
    Some(Found {
        name,
        port,
        addresses,
        announcement,
    })
}

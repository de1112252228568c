//! Connections per remote address: one address may not take every slot of the server.
//!
//! The global limit (`ServerConfig::max_connections`) protects the machine; this one protects
//! the other clients from a single host that opens connections and sits on them until the idle
//! timeout. A slot is counted from accept to the end of the session, through a guard, so a
//! session that ends in any way gives its slot back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts open connections per IP address.
#[derive(Debug, Default)]
pub(crate) struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or `None` when it already has `limit` connections open.
    pub(crate) fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // IPv4 clients on a dual-stack socket show up as `::ffff:a.b.c.d`: count them as the
        // IPv4 address they are.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // The map holds only addresses with open connections: bounded by the global
                // connection limit.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_limit_and_slots_come_back() {
        let limits = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let s1 = limits.try_take(a).unwrap();
        let _s2 = limits.try_take(mapped).unwrap();
        assert!(limits.try_take(a).is_none(), "third from the same host");
        assert!(limits.try_take(b).is_some(), "another host is not affected");
        drop(s1);
        assert!(
            limits.try_take(a).is_some(),
            "a closed connection frees its slot"
        );
    }
}

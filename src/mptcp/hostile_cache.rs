//! Networks found hostile to MPTCP (an MP_CAPABLE SYN that got no answer while a plain SYN did),
//! remembered per (interface, gateway) for a while, as iOS does: new connections on such a
//! network start as plain TCP instead of paying the SYN retries again. Pure, explicit time.

use std::net::IpAddr;

use crate::expiring::ExpiringSet;
use crate::time::Instant;

/// Identifies a network: the interface index and its default gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkKey {
    /// Interface index (or any stable interface id of the caller).
    pub iface: u32,
    /// Default gateway on that interface (`None` for point-to-point links).
    pub gateway: Option<IpAddr>,
}

/// The cache of hostile networks with their expiry.
pub type HostileCache = ExpiringSet<NetworkKey>;

impl ExpiringSet<NetworkKey> {
    /// Records that MPTCP failed on `key` at `now`.
    pub fn mark_hostile(&mut self, key: NetworkKey, now: Instant) {
        self.insert(key, now);
    }

    /// MPTCP worked on `key` (e.g. after the network changed behind the same gateway): forget it.
    pub fn mark_good(&mut self, key: NetworkKey) {
        self.remove(&key);
    }

    /// Whether new connections on `key` should skip MP_CAPABLE at `now`.
    pub fn is_hostile(&self, key: NetworkKey, now: Instant) -> bool {
        self.contains(&key, now)
    }
}

//! Networks found hostile to MPTCP (an MP_CAPABLE SYN that got no answer while a plain SYN did),
//! remembered per (interface, gateway) for a while, as iOS does: new connections on such a
//! network start as plain TCP instead of paying the SYN retries again. Pure, explicit time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

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
#[derive(Debug, Clone)]
pub struct HostileCache {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<NetworkKey, Instant>,
}

impl HostileCache {
    /// A cache remembering a network for `ttl`, holding at most `max_entries` networks (the
    /// oldest expiry is evicted first).
    pub fn new(ttl: Duration, max_entries: usize) -> HostileCache {
        HostileCache {
            ttl,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
        }
    }

    /// Records that MPTCP failed on `key` at `now`.
    pub fn mark_hostile(&mut self, key: NetworkKey, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.expire(now);
            if self.entries.len() >= self.max_entries
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, now + self.ttl);
    }

    /// MPTCP worked on `key` (e.g. after the network changed behind the same gateway): forget it.
    pub fn mark_good(&mut self, key: NetworkKey) {
        self.entries.remove(&key);
    }

    /// Whether new connections on `key` should skip MP_CAPABLE at `now`.
    pub fn is_hostile(&self, key: NetworkKey, now: Instant) -> bool {
        self.entries.get(&key).is_some_and(|&until| now < until)
    }

    /// Drops expired entries.
    pub fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, until| now < *until);
    }

    /// Networks remembered (expired ones included until [`expire`](Self::expire)).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

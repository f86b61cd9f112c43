//! A bounded set whose members expire: each is remembered for a fixed time after it was last
//! inserted, and when the set is full the member closest to expiry makes room. Pure, explicit
//! time (STYLE.md point 1). Used for networks hostile to MPTCP
//! ([`crate::mptcp::hostile_cache`]) and for destinations known to speak MPTCP (the engine's
//! converter policy).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::time::Instant;

/// The set, with each member's expiry.
#[derive(Debug, Clone)]
pub struct ExpiringSet<K> {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<K, Instant>,
}

impl<K: Eq + Hash + Copy> ExpiringSet<K> {
    /// A set remembering each member for `ttl`, holding at most `max_entries` (at least 1).
    pub fn new(ttl: Duration, max_entries: usize) -> ExpiringSet<K> {
        ExpiringSet {
            ttl,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
        }
    }

    /// Remembers `key` from `now` on for the set's time to live (again, if it was there).
    pub fn insert(&mut self, key: K, now: Instant) {
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

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Whether `key` is remembered and not expired at `now`.
    pub fn contains(&self, key: &K, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|&until| now < until)
    }

    /// Drops expired members.
    pub fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, until| now < *until);
    }

    /// Members remembered (expired ones included until [`expire`](Self::expire)).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

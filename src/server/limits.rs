//! Connection limits of the converter: how many connections may still be sending their Convert
//! request (unauthenticated, so one global cap), how many dials one client key may have pending
//! (RFC 8803 §9.3: "SHOULD rate-limit the number of pending requests for a given Client"), how
//! many connections one key may hold, and how many the converter holds in all.

use std::collections::HashMap;
use std::hash::Hash;

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections accepted but still sending their request (not yet authenticated).
    pub max_requesting: usize,
    /// Authenticated connections of the whole converter (dialing or relaying).
    pub max_total: usize,
    /// Authenticated connections of one client key.
    pub max_per_key: usize,
    /// Dials in progress for one client key.
    pub max_pending_per_key: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_requesting: 1024,
            max_total: 20_000,
            max_per_key: 10_000,
            max_pending_per_key: 256,
        }
    }
}

/// Which limit a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitHit {
    /// Too many connections still sending their request.
    Requesting,
    /// The converter's total.
    Total,
    /// The key's total.
    PerKey,
    /// The key's pending dials.
    PendingPerKey,
}

impl LimitHit {
    /// snake_case name (status keys, logs).
    pub fn name(self) -> &'static str {
        match self {
            LimitHit::Requesting => "requesting",
            LimitHit::Total => "total",
            LimitHit::PerKey => "per_key",
            LimitHit::PendingPerKey => "pending_per_key",
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct KeyCount {
    pending: usize,
    total: usize,
}

/// The live counts, checked against a [`LimitsConfig`]. Every `try_*` that succeeds must be
/// matched by its release.
#[derive(Debug)]
pub struct Limits<K> {
    cfg: LimitsConfig,
    requesting: usize,
    total: usize,
    keys: HashMap<K, KeyCount>,
}

impl<K: Hash + Eq + Copy> Limits<K> {
    /// No connections yet.
    pub fn new(cfg: LimitsConfig) -> Self {
        Limits {
            cfg,
            requesting: 0,
            total: 0,
            keys: HashMap::new(),
        }
    }

    /// Replaces the configuration (reload); connections above a lowered limit stay.
    pub fn set_config(&mut self, cfg: LimitsConfig) {
        self.cfg = cfg;
    }

    /// A new connection starts sending its request.
    pub fn try_request(&mut self) -> Result<(), LimitHit> {
        if self.requesting >= self.cfg.max_requesting {
            return Err(LimitHit::Requesting);
        }
        self.requesting += 1;
        Ok(())
    }

    /// A connection finished (or abandoned) its request.
    pub fn end_request(&mut self) {
        self.requesting = self.requesting.saturating_sub(1);
    }

    /// An authenticated request of `key` wants a dial: counts it as pending and in the totals.
    pub fn try_dial(&mut self, key: K) -> Result<(), LimitHit> {
        let c = self.keys.get(&key).copied().unwrap_or_default();
        if self.total >= self.cfg.max_total {
            return Err(LimitHit::Total);
        }
        if c.total >= self.cfg.max_per_key {
            return Err(LimitHit::PerKey);
        }
        if c.pending >= self.cfg.max_pending_per_key {
            return Err(LimitHit::PendingPerKey);
        }
        let e = self.keys.entry(key).or_default();
        e.pending += 1;
        e.total += 1;
        self.total += 1;
        Ok(())
    }

    /// The dial of `key` finished (connected or failed): no longer pending.
    pub fn dial_done(&mut self, key: K) {
        if let Some(e) = self.keys.get_mut(&key) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// A connection of `key` ended (call [`Limits::dial_done`] first if it was still dialing).
    pub fn release(&mut self, key: K) {
        self.total = self.total.saturating_sub(1);
        if let Some(e) = self.keys.get_mut(&key) {
            e.total = e.total.saturating_sub(1);
            if e.total == 0 && e.pending == 0 {
                self.keys.remove(&key);
            }
        }
    }

    /// Connections still sending their request.
    pub fn requesting(&self) -> usize {
        self.requesting
    }

    /// Authenticated connections in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// (pending dials, connections) of `key`.
    pub fn of_key(&self, key: &K) -> (usize, usize) {
        self.keys.get(key).map_or((0, 0), |c| (c.pending, c.total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            max_requesting: 2,
            max_total: 5,
            max_per_key: 3,
            max_pending_per_key: 2,
        }
    }

    #[test]
    fn requesting_cap() {
        let mut l = Limits::<u8>::new(cfg());
        assert_eq!(l.try_request(), Ok(()));
        assert_eq!(l.try_request(), Ok(()));
        assert_eq!(l.try_request(), Err(LimitHit::Requesting));
        l.end_request();
        assert_eq!(l.try_request(), Ok(()));
        assert_eq!(l.requesting(), 2);
    }

    #[test]
    fn pending_then_total_per_key() {
        let mut l = Limits::<u8>::new(cfg());
        assert_eq!(l.try_dial(1), Ok(()));
        assert_eq!(l.try_dial(1), Ok(()));
        assert_eq!(l.try_dial(1), Err(LimitHit::PendingPerKey), "two dials pending");
        l.dial_done(1);
        assert_eq!(l.try_dial(1), Ok(()));
        l.dial_done(1);
        l.dial_done(1);
        assert_eq!(l.of_key(&1), (0, 3));
        assert_eq!(l.try_dial(1), Err(LimitHit::PerKey), "three connections");
        // Another key is not affected by key 1's.
        assert_eq!(l.try_dial(2), Ok(()));
        l.release(1);
        assert_eq!(l.try_dial(1), Ok(()));
        assert_eq!(l.total(), 4);
    }

    #[test]
    fn total_cap_across_keys() {
        let mut l = Limits::<u8>::new(cfg());
        for k in 0..5 {
            assert_eq!(l.try_dial(k), Ok(()));
        }
        assert_eq!(l.try_dial(9), Err(LimitHit::Total));
        l.dial_done(0);
        l.release(0);
        assert_eq!(l.of_key(&0), (0, 0));
        assert_eq!(l.try_dial(9), Ok(()));
    }

    #[test]
    fn refused_attempts_leave_no_trace() {
        let mut l = Limits::<u8>::new(LimitsConfig {
            max_total: 0,
            ..cfg()
        });
        assert_eq!(l.try_dial(1), Err(LimitHit::Total));
        assert_eq!(l.of_key(&1), (0, 0));
        assert_eq!(l.total(), 0);
        // Releasing more than was taken never underflows.
        l.release(1);
        l.dial_done(1);
        l.end_request();
        assert_eq!((l.total(), l.requesting()), (0, 0));
    }
}

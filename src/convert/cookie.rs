//! The Cookie TLV contents (RFC 8803 §6.2.7: an opaque cookie, "validated by means similar to
//! those in Section 4.1.2 of [RFC7413]") and the converter's replay cache.
//!
//! Our cookie is not handed out by the converter: it is a fresh proof, made by the client for each
//! connection, that it holds a [`ClientKey`]:
//!
//! ```text
//! key id (8) ‖ timestamp (8, unix seconds, big endian) ‖ nonce (16) ‖ HMAC-SHA256 (32)   = 64 bytes
//! HMAC-SHA256(secret, LABEL ‖ key id ‖ timestamp ‖ nonce ‖ len(Connect TLV) (2) ‖ Connect TLV)
//! ```
//!
//! The MAC covers the whole Connect TLV as sent (destination address, port and TCP options), so a
//! captured cookie cannot be moved to another destination; the label separates this MAC from any
//! other use of the secret. The timestamp bounds how long a cookie is valid (`max_clock_skew`
//! either way); the [`ReplayCache`] refuses a (key id, nonce) seen before within that window.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::key::{ClientKey, KeyId};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of our opaque cookie.
pub const COOKIE_LEN: usize = 64;
/// Domain separation: what this MAC is for (fixed length, so the fields after it are unambiguous).
const LABEL: &[u8; 24] = b"mpbond-convert-cookie-v1";

/// The opaque content of our Cookie TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// Which key made the proof.
    pub key: KeyId,
    /// When (unix seconds).
    pub timestamp: u64,
    /// Random per connection: the replay cache's key with `key`.
    pub nonce: [u8; 16],
    /// HMAC-SHA256 over the label, the fields above and the Connect TLV.
    pub mac: [u8; 32],
}

/// The cookie's MAC does not verify (wrong key, altered field or altered Connect TLV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cookie MAC does not verify")]
pub struct BadMac;

fn mac(key: &ClientKey, timestamp: u64, nonce: &[u8; 16], connect_tlv: &[u8]) -> HmacSha256 {
    // HMAC zero-pads a short key to the hash's 64-byte block (RFC 2104 §2); padding it here is
    // the same MAC and needs no fallible length check.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key.secret());
    let mut m = HmacSha256::new(&block.into());
    m.update(LABEL);
    m.update(&key.id().0);
    m.update(&timestamp.to_be_bytes());
    m.update(nonce);
    // A Connect TLV is at most 1016 bytes; the length keeps the input encoding injective.
    m.update(&(connect_tlv.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    m.update(connect_tlv);
    m
}

impl Cookie {
    /// The cookie proving `key` for the Connect TLV `connect_tlv` (its exact wire bytes).
    pub fn mint(key: &ClientKey, timestamp: u64, nonce: [u8; 16], connect_tlv: &[u8]) -> Cookie {
        let tag = mac(key, timestamp, &nonce, connect_tlv).finalize().into_bytes();
        let mut m = [0u8; 32];
        m.copy_from_slice(&tag);
        Cookie {
            key: key.id(),
            timestamp,
            nonce,
            mac: m,
        }
    }

    /// Reads a cookie from the Cookie TLV's opaque bytes (exactly [`COOKIE_LEN`]).
    pub fn parse(bytes: &[u8]) -> Option<Cookie> {
        let b: &[u8; COOKIE_LEN] = bytes.try_into().ok()?;
        let mut key = [0u8; 8];
        let mut ts = [0u8; 8];
        let mut nonce = [0u8; 16];
        let mut mac = [0u8; 32];
        key.copy_from_slice(&b[0..8]);
        ts.copy_from_slice(&b[8..16]);
        nonce.copy_from_slice(&b[16..32]);
        mac.copy_from_slice(&b[32..64]);
        Some(Cookie {
            key: KeyId(key),
            timestamp: u64::from_be_bytes(ts),
            nonce,
            mac,
        })
    }

    /// The opaque bytes.
    pub fn to_bytes(&self) -> [u8; COOKIE_LEN] {
        let mut b = [0u8; COOKIE_LEN];
        b[0..8].copy_from_slice(&self.key.0);
        b[8..16].copy_from_slice(&self.timestamp.to_be_bytes());
        b[16..32].copy_from_slice(&self.nonce);
        b[32..64].copy_from_slice(&self.mac);
        b
    }

    /// Checks the MAC with `key` over `connect_tlv`, in constant time (`verify_slice`).
    pub fn verify(&self, key: &ClientKey, connect_tlv: &[u8]) -> Result<(), BadMac> {
        if key.id() != self.key {
            return Err(BadMac);
        }
        mac(key, self.timestamp, &self.nonce, connect_tlv)
            .verify_slice(&self.mac)
            .map_err(|_| BadMac)
    }
}

/// Why [`ReplayCache::accept`] refused a cookie whose MAC verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Freshness {
    /// Older than `max_clock_skew`.
    #[error("cookie timestamp is older than the allowed clock skew")]
    Stale,
    /// Newer than now + `max_clock_skew`.
    #[error("cookie timestamp is in the future beyond the allowed clock skew")]
    Future,
    /// At or below the cache's floor: a cookie this old may have been forgotten, so it is refused.
    #[error("cookie timestamp is below the replay cache's window")]
    BelowWindow,
    /// (key id, nonce) seen before.
    #[error("cookie seen before (replay)")]
    Replay,
    /// The cache is full of entries at least as new as this cookie (more than `capacity`
    /// accepted within one second): refused so that nothing is forgotten too early.
    #[error("replay cache full")]
    Full,
}

/// The converter's memory of accepted cookies: bounded, replay-proof.
///
/// Invariant: **every cookie accepted with a timestamp above `floor` is in the cache**, and every
/// cookie at or below `floor` is refused. Entries leave the cache in timestamp order only — on
/// expiry (timestamp + skew < now: stale anyway) or, when the cache is full, the oldest one to make
/// room — and each removal raises `floor` to the removed timestamp. So a forgotten cookie can
/// never come back: removing it tightened the accepted window past it. A full cache costs
/// availability, never safety: cookies not newer than the oldest kept entry are refused
/// ([`Freshness::BelowWindow`] / [`Freshness::Full`]), fresh ones (timestamp = now) keep working
/// unless more than `capacity` arrive within one second. Memory: at most `capacity` entries in
/// each of two maps. A clock stepping backwards does not revive removed entries either.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    skew: u64,
    seen: HashMap<(KeyId, [u8; 16]), u64>,
    by_time: BTreeSet<(u64, KeyId, [u8; 16])>,
    floor: Option<u64>,
}

impl ReplayCache {
    /// A cache of at most `capacity` (at least 1) entries for cookies valid `max_clock_skew`
    /// either side of now (whole seconds).
    pub fn new(capacity: usize, max_clock_skew: Duration) -> ReplayCache {
        ReplayCache {
            capacity: capacity.max(1),
            skew: max_clock_skew.as_secs(),
            seen: HashMap::new(),
            by_time: BTreeSet::new(),
            floor: None,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The highest timestamp removed so far: cookies at or below it are refused.
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }

    /// Accepts a verified cookie (`now`: unix seconds) once: checks its timestamp window, refuses
    /// a (key, nonce) seen before, and remembers it.
    pub fn accept(&mut self, now: u64, key: KeyId, nonce: [u8; 16], timestamp: u64) -> Result<(), Freshness> {
        self.expire(now);
        if timestamp.saturating_add(self.skew) < now {
            return Err(Freshness::Stale);
        }
        if timestamp > now.saturating_add(self.skew) {
            return Err(Freshness::Future);
        }
        if self.floor.is_some_and(|f| timestamp <= f) {
            return Err(Freshness::BelowWindow);
        }
        if self.seen.contains_key(&(key, nonce)) {
            return Err(Freshness::Replay);
        }
        if self.seen.len() >= self.capacity {
            // Full of unexpired entries: make room by forgetting the oldest, which is safe only if
            // this cookie is newer than it (the floor rises to the forgotten timestamp).
            let Some(&oldest) = self.by_time.first() else {
                return Err(Freshness::Full);
            };
            if timestamp <= oldest.0 {
                return Err(Freshness::Full);
            }
            self.remove(oldest);
        }
        self.seen.insert((key, nonce), timestamp);
        self.by_time.insert((timestamp, key, nonce));
        Ok(())
    }

    /// Drops entries that no longer matter: timestamp + skew < now (they are stale).
    fn expire(&mut self, now: u64) {
        while let Some(&e) = self.by_time.first() {
            if e.0.saturating_add(self.skew) >= now {
                break;
            }
            self.remove(e);
        }
    }

    fn remove(&mut self, e: (u64, KeyId, [u8; 16])) {
        self.by_time.remove(&e);
        self.seen.remove(&(e.1, e.2));
        self.floor = Some(self.floor.map_or(e.0, |f| f.max(e.0)));
    }
}

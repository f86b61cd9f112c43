//! Initial sequence numbers, RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport,
//! secretkey), with M a 4-microsecond timer and F a keyed hash. The key comes from the caller (the
//! engine draws it from a CSPRNG at start); nothing here is random.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use super::SeqNum;
use crate::time::Instant;

/// The secret of RFC 6528's F(); keep it for the life of the process.
#[derive(Clone, PartialEq, Eq)]
pub struct IsnKey(pub [u8; 32]);

impl std::fmt::Debug for IsnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsnKey(..)")
    }
}

fn addr_bytes(a: IpAddr, out: &mut Sha256) {
    match a {
        IpAddr::V4(v) => out.update(v.octets()),
        IpAddr::V6(v) => out.update(v.octets()),
    }
}

/// F(): SHA-256 over the key and the 4-tuple; returns the first 8 bytes.
fn keyed_hash(key: &IsnKey, local: SocketAddr, remote: SocketAddr) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(key.0);
    addr_bytes(local.ip(), &mut h);
    h.update(local.port().to_be_bytes());
    addr_bytes(remote.ip(), &mut h);
    h.update(remote.port().to_be_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// RFC 6528 §3: the ISN for this 4-tuple at `now`, and (from the other half of the hash) a
/// per-connection timestamp offset (RFC 7323 §7.1 recommends a random offset per connection).
pub fn isn_and_ts_offset(key: &IsnKey, local: SocketAddr, remote: SocketAddr, now: Instant) -> (SeqNum, u32) {
    let h = keyed_hash(key, local, remote);
    let f = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let ts = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    // RFC 6528 §3: M is a timer that increments every 4 microseconds (wrapping is intended).
    let m = (now.as_micros() / 4) as u32;
    (SeqNum(m.wrapping_add(f)), ts)
}

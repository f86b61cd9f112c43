//! The Internet checksum (RFC 1071), with the IPv4/IPv6 pseudo-headers TCP and UDP use
//! (RFC 9293 §3.1, RFC 8200 §8.1) and the incremental update of RFC 1624.
//!
//! [`Checksum`] accumulates a one's-complement sum 8 bytes at a time in a `u64` with end-around
//! carry, which is equivalent to the 16-bit one's-complement sum (RFC 1071 §2(B), "parallel
//! summation"). Pieces may be added in any number of calls as long as every piece but the last has
//! an even length (so 16-bit alignment is kept).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A running Internet checksum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    acc: u64,
}

#[inline]
fn add_carry(acc: u64, v: u64) -> u64 {
    let (s, c) = acc.overflowing_add(v);
    s + u64::from(c)
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Checksum { acc: 0 }
    }

    /// Adds `data` (big-endian 16-bit words; an odd trailing byte is padded with zero).
    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) -> &mut Self {
        let mut acc = self.acc;
        let mut chunks = data.chunks_exact(32);
        for c in &mut chunks {
            // Four independent 8-byte adds per iteration; the compiler keeps them in registers.
            let mut w = [0u64; 4];
            for (i, wi) in w.iter_mut().enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                *wi = u64::from_be_bytes(b);
            }
            acc = add_carry(acc, w[0]);
            acc = add_carry(acc, w[1]);
            acc = add_carry(acc, w[2]);
            acc = add_carry(acc, w[3]);
        }
        let mut chunks8 = chunks.remainder().chunks_exact(8);
        for c in &mut chunks8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            acc = add_carry(acc, u64::from_be_bytes(b));
        }
        let rest = chunks8.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            acc = add_carry(acc, u64::from_be_bytes(b));
        }
        self.acc = acc;
        self
    }

    /// Adds one 16-bit word.
    #[inline]
    pub fn add_u16(&mut self, v: u16) -> &mut Self {
        self.acc = add_carry(self.acc, u64::from(v));
        self
    }

    /// Adds one 32-bit value (two 16-bit words).
    #[inline]
    pub fn add_u32(&mut self, v: u32) -> &mut Self {
        self.acc = add_carry(self.acc, u64::from(v));
        self
    }

    /// Adds the pseudo-header of TCP/UDP over IPv4 or IPv6 (`src` and `dst` must be the same family;
    /// a mixed pair is summed as IPv6 with the IPv4 address mapped).
    pub fn add_pseudo_header(&mut self, src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> &mut Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.add_pseudo_v4(s, d, proto, len),
            (s, d) => self.add_pseudo_v6(to_v6(s), to_v6(d), proto, len),
        }
    }

    /// RFC 9293 §3.1: the IPv4 pseudo-header {src, dst, zero, PTCL, TCP length}.
    pub fn add_pseudo_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> &mut Self {
        self.add_u32(u32::from(src))
            .add_u32(u32::from(dst))
            .add_u16(u16::from(proto));
        self.add_u32(len)
    }

    /// RFC 8200 §8.1: the IPv6 pseudo-header {src, dst, upper-layer length, zero, next header}.
    pub fn add_pseudo_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> &mut Self {
        self.add_bytes(&src.octets()).add_bytes(&dst.octets());
        self.add_u32(len).add_u16(u16::from(proto))
    }

    /// The folded 16-bit one's-complement sum (not complemented).
    pub fn fold(&self) -> u16 {
        let mut a = self.acc;
        a = (a >> 32) + (a & 0xffff_ffff);
        a = (a >> 32) + (a & 0xffff_ffff);
        a = (a >> 16) + (a & 0xffff);
        a = (a >> 16) + (a & 0xffff);
        a = (a >> 16) + (a & 0xffff);
        // After the folds `a` fits in 16 bits.
        (a & 0xffff) as u16
    }

    /// The checksum field value: the complement of the folded sum.
    pub fn finish(&self) -> u16 {
        !self.fold()
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The checksum of `data` alone (e.g. an IPv4 header whose checksum field is zero).
pub fn checksum(data: &[u8]) -> u16 {
    Checksum::new().add_bytes(data).finish()
}

/// True if `data` (which contains its own checksum field) sums to all ones, i.e. is intact.
pub fn verify(data: &[u8]) -> bool {
    Checksum::new().add_bytes(data).fold() == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changed from `old`
/// to `new`: HC' = ~(~HC + ~m + m').
pub fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    Checksum::new().add_u16(!hc).add_u16(!old).add_u16(new).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn matches_naive_sum_for_all_lengths() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(checksum(&data[..len]), naive(&data[..len]), "len {len}");
        }
        // RFC 1071 §3 example.
        assert_eq!(
            !checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn split_pieces_and_incremental_update() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut c = Checksum::new();
        c.add_bytes(&data[..40]).add_bytes(&data[40..]);
        assert_eq!(c.finish(), checksum(&data));
        let mut changed = data.clone();
        changed[10] = 0xab;
        changed[11] = 0xcd;
        let old = u16::from_be_bytes([data[10], data[11]]);
        assert_eq!(update_u16(checksum(&data), old, 0xabcd), checksum(&changed));
    }
}

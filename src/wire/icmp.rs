//! ICMP (RFC 792) and ICMPv6 (RFC 4443): echo messages and destination-unreachable errors.

use std::net::IpAddr;

use thiserror::Error;

use super::checksum::Checksum;
use super::ip;

/// IANA protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IANA protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// ICMP echo request type.
pub const ECHO_REQUEST_V4: u8 = 8;
/// ICMP echo reply type.
pub const ECHO_REPLY_V4: u8 = 0;
/// ICMPv6 echo request type.
pub const ECHO_REQUEST_V6: u8 = 128;
/// ICMPv6 echo reply type.
pub const ECHO_REPLY_V6: u8 = 129;

/// Why an ICMP message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IcmpError {
    /// Shorter than an echo header.
    #[error("ICMP message too short")]
    Truncated,
    /// The checksum does not verify.
    #[error("bad ICMP checksum")]
    BadChecksum,
    /// The caller's buffer is too small.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// An echo request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// True for a request, false for a reply.
    pub request: bool,
    /// Identifier.
    pub ident: u16,
    /// Sequence number.
    pub seq: u16,
}

fn message_checksum(src: IpAddr, dst: IpAddr, msg: &[u8]) -> Checksum {
    let mut c = Checksum::new();
    // RFC 4443 §2.3: the ICMPv6 checksum covers an IPv6 pseudo-header; ICMPv4's does not.
    if src.is_ipv6() {
        c.add_pseudo_header(src, dst, PROTO_ICMPV6, msg.len() as u32);
    }
    c.add_bytes(msg);
    c
}

/// Parses `msg` (the IP payload from `src` to `dst`): `Some` for an echo request/reply, `None`
/// for another (valid) message type.
pub fn parse_echo(src: IpAddr, dst: IpAddr, msg: &[u8], verify: bool) -> Result<Option<Echo>, IcmpError> {
    if msg.len() < 8 {
        return Err(IcmpError::Truncated);
    }
    if verify && message_checksum(src, dst, msg).fold() != 0xffff {
        return Err(IcmpError::BadChecksum);
    }
    let (req, rep) = if src.is_ipv6() {
        (ECHO_REQUEST_V6, ECHO_REPLY_V6)
    } else {
        (ECHO_REQUEST_V4, ECHO_REPLY_V4)
    };
    let request = match msg[0] {
        t if t == req => true,
        t if t == rep => false,
        _ => return Ok(None),
    };
    Ok(Some(Echo {
        request,
        ident: u16::from_be_bytes([msg[4], msg[5]]),
        seq: u16::from_be_bytes([msg[6], msg[7]]),
    }))
}

/// Writes an IP packet from `src` to `dst` carrying the ICMP message `msg` with its checksum
/// recomputed (for this pseudo-header); returns its length.
pub fn write_packet(buf: &mut [u8], src: IpAddr, dst: IpAddr, msg: &[u8]) -> Result<usize, IcmpError> {
    let hlen = ip::header_len(src);
    let out = buf
        .get_mut(hlen..hlen + msg.len())
        .ok_or(IcmpError::BufferTooSmall)?;
    if msg.len() < 4 {
        return Err(IcmpError::Truncated);
    }
    out.copy_from_slice(msg);
    out[2..4].copy_from_slice(&[0, 0]);
    let c = message_checksum(src, dst, out).finish();
    out[2..4].copy_from_slice(&c.to_be_bytes());
    let proto = if src.is_ipv6() { PROTO_ICMPV6 } else { PROTO_ICMP };
    ip::write_header(buf, src, dst, proto, msg.len(), 64, 0).map_err(|_| IcmpError::BufferTooSmall)?;
    Ok(hlen + msg.len())
}

/// Writes a destination-unreachable error from `src` about `original` (the offending packet, as
/// the host sent it) back to its sender `dst`. RFC 792: type 3 code 1 (host unreachable); RFC
/// 4443 §3.1: type 1 code 3 (address unreachable). The quote is the original IP header and the
/// start of its payload (RFC 1812 §4.3.2.3: as much as fits in 576 bytes; RFC 4443 §2.4(c): in
/// the minimum MTU 1280).
pub fn write_unreachable(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    original: &[u8],
) -> Result<usize, IcmpError> {
    let hlen = ip::header_len(src);
    let max_quote = if src.is_ipv6() { 1280 - 48 } else { 576 - 28 };
    let quote = &original[..original.len().min(max_quote)];
    let mut msg = [0u8; 1280];
    let (t, code) = if src.is_ipv6() { (1, 3) } else { (3, 1) };
    msg[0] = t;
    msg[1] = code;
    msg[8..8 + quote.len()].copy_from_slice(quote);
    let n = 8 + quote.len();
    if buf.len() < hlen + n {
        return Err(IcmpError::BufferTooSmall);
    }
    write_packet(buf, src, dst, &msg[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_roundtrip_v4_v6() {
        for (s, d, t) in [("198.18.0.1", "198.18.0.2", 8u8), ("fd00::1", "fd00::2", 128)] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let msg = [t, 0, 0, 0, 0x12, 0x34, 0, 7, 1, 2, 3];
            let mut b = [0u8; 100];
            let n = write_packet(&mut b, s, d, &msg).unwrap();
            let p = ip::parse(&b[..n]).unwrap();
            let e = parse_echo(s, d, &b[p.payload.clone()], true).unwrap().unwrap();
            assert_eq!(
                e,
                Echo {
                    request: true,
                    ident: 0x1234,
                    seq: 7
                }
            );
            let mut bad = b[p.payload.clone()].to_vec();
            bad[9] ^= 0xff;
            assert_eq!(parse_echo(s, d, &bad, true), Err(IcmpError::BadChecksum));
            assert_eq!(parse_echo(s, d, &bad[..5], true), Err(IcmpError::Truncated));
            let n = write_unreachable(&mut b, d, s, &[0x45; 30]).unwrap();
            assert!(
                parse_echo(d, s, &b[ip::parse(&b[..n]).unwrap().payload], true)
                    .unwrap()
                    .is_none()
            );
        }
    }
}

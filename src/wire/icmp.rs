//! ICMP (RFC 792) and ICMPv6 (RFC 4443): echo messages and destination-unreachable errors —
//! parsing them, writing them, and the byte-level rewriting a relay does (the echo identifier,
//! the TCP ports quoted in an error).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    write_with_ident(buf, src, dst, msg, None)
}

/// [`write_packet`] for an echo message `msg`, its identifier replaced by `ident` (a relay
/// giving a reply back the identifier its host chose).
pub fn write_echo(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    msg: &[u8],
    ident: u16,
) -> Result<usize, IcmpError> {
    if msg.len() < 8 {
        return Err(IcmpError::Truncated);
    }
    write_with_ident(buf, src, dst, msg, Some(ident))
}

fn write_with_ident(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    msg: &[u8],
    ident: Option<u16>,
) -> Result<usize, IcmpError> {
    let hlen = ip::header_len(src);
    let out = buf
        .get_mut(hlen..hlen + msg.len())
        .ok_or(IcmpError::BufferTooSmall)?;
    if msg.len() < 4 {
        return Err(IcmpError::Truncated);
    }
    out.copy_from_slice(msg);
    if let Some(ident) = ident {
        out[4..6].copy_from_slice(&ident.to_be_bytes());
    }
    out[2..4].copy_from_slice(&[0, 0]);
    let c = message_checksum(src, dst, out).finish();
    out[2..4].copy_from_slice(&c.to_be_bytes());
    let proto = if src.is_ipv6() { PROTO_ICMPV6 } else { PROTO_ICMP };
    ip::write_header(buf, src, dst, proto, msg.len(), 64, 0).map_err(|_| IcmpError::BufferTooSmall)?;
    Ok(hlen + msg.len())
}

/// Replaces the identifier of the echo message `msg` (a message only, no IP header) by `ident`
/// and redoes its checksum as ICMPv4 computes it (no pseudo-header). For ICMPv6 that checksum
/// is left to the kernel, which computes the checksums of raw ICMPv6 sockets itself (RFC 3542
/// §3.1). Shorter than an echo header: left alone.
pub fn set_echo_ident(msg: &mut [u8], ident: u16) {
    if msg.len() < 8 {
        return;
    }
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[2..4].copy_from_slice(&[0, 0]);
    let c = super::checksum::checksum(msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
}

/// Parses `msg` (the message from `src` to `dst`): `Some(quote)` for a destination-unreachable
/// error (RFC 792 type 3, RFC 4443 §3.1 type 1), the quote being the start of the packet it is
/// about; `None` for another message. `verify`: check the checksum.
pub fn parse_unreachable(
    src: IpAddr,
    dst: IpAddr,
    msg: &[u8],
    verify: bool,
) -> Result<Option<&[u8]>, IcmpError> {
    let unreachable = if src.is_ipv4() { 3 } else { 1 };
    if msg.len() < 8 || msg[0] != unreachable {
        return Ok(None);
    }
    if verify && message_checksum(src, dst, msg).fold() != 0xffff {
        return Err(IcmpError::BadChecksum);
    }
    Ok(Some(&msg[8..]))
}

/// Source and destination of the TCP segment quoted in an ICMP error (its IP header and at
/// least the ports). The quote is usually truncated, so lengths are not checked against the IP
/// header; `None` when it is not TCP or too short to hold the ports.
pub fn quoted_tcp(q: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let v = q.first()? >> 4;
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, usize) = match v {
        4 => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            let h: [u8; 20] = q.get(..20)?.try_into().ok()?;
            let s = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let d = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            (h[9], s.into(), d.into(), ihl.max(20))
        }
        6 => {
            let h = q.get(..40)?;
            let s: [u8; 16] = h[8..24].try_into().ok()?;
            let d: [u8; 16] = h[24..40].try_into().ok()?;
            (h[6], Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into(), 40)
        }
        _ => return None,
    };
    if proto != ip::PROTO_TCP {
        return None;
    }
    let p = q.get(l4..l4 + 4)?;
    Some((
        SocketAddr::new(src, u16::from_be_bytes([p[0], p[1]])),
        SocketAddr::new(dst, u16::from_be_bytes([p[2], p[3]])),
    ))
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
    write_dest_unreachable(buf, src, dst, Unreachable::Host, original)
}

/// Which destination-unreachable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// RFC 792 code 1 (host unreachable); RFC 4443 code 3 (address unreachable).
    Host,
    /// RFC 792 code 3 (port unreachable); RFC 4443 code 4 (port unreachable).
    Port,
}

/// [`write_unreachable`] with the error chosen by `what`.
pub fn write_dest_unreachable(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    what: Unreachable,
    original: &[u8],
) -> Result<usize, IcmpError> {
    let hlen = ip::header_len(src);
    let max_quote = if src.is_ipv6() { 1280 - 48 } else { 576 - 28 };
    let quote = &original[..original.len().min(max_quote)];
    let mut msg = [0u8; 1280];
    let (t, code) = match (src.is_ipv6(), what) {
        (true, Unreachable::Host) => (1, 3),
        (true, Unreachable::Port) => (1, 4),
        (false, Unreachable::Host) => (3, 1),
        (false, Unreachable::Port) => (3, 3),
    };
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
            // The same message with another identifier, as a relay writes it.
            let n = write_echo(&mut b, s, d, &msg, 0xbeef).unwrap();
            let q = ip::parse(&b[..n]).unwrap();
            let e = parse_echo(s, d, &b[q.payload], true).unwrap().unwrap();
            assert_eq!((e.ident, e.seq, e.request), (0xbeef, 7, true));
            assert_eq!(write_echo(&mut b, s, d, &msg[..7], 1), Err(IcmpError::Truncated));
            let n = write_packet(&mut b, s, d, &msg).unwrap();
            let mut bad = b[p.payload.clone()].to_vec();
            assert_eq!(n, p.payload.end);
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

    #[test]
    fn set_echo_ident_redoes_the_v4_checksum() {
        let mut m = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, 9];
        set_echo_ident(&mut m, 0x4321);
        assert_eq!(&m[4..6], &[0x43, 0x21]);
        assert!(super::super::checksum::verify(&m));
        let mut short = [8u8, 0, 0, 0, 1];
        set_echo_ident(&mut short, 7);
        assert_eq!(short, [8, 0, 0, 0, 1]);
    }

    #[test]
    fn unreachable_quote_names_the_tcp_ports() {
        let (s, d): (SocketAddr, SocketAddr) = (
            "198.18.0.1:61000".parse().unwrap(),
            "198.19.0.9:443".parse().unwrap(),
        );
        let fields = crate::wire::SegmentFields::default();
        let mut seg = [0u8; 80];
        let n = crate::wire::write_tcp_packet(&mut seg, s, d, &fields, &[], &[], 0).unwrap();
        assert_eq!(n, 40);
        let mut b = [0u8; 200];
        let gw: IpAddr = "198.18.0.254".parse().unwrap();
        let m = write_unreachable(&mut b, gw, s.ip(), &seg[..28]).unwrap();
        let p = ip::parse(&b[..m]).unwrap();
        let msg = &b[p.payload];
        let quote = parse_unreachable(gw, s.ip(), msg, true).unwrap().unwrap();
        assert_eq!(quoted_tcp(quote), Some((s, d)));
        assert_eq!(quoted_tcp(&quote[..23]), None);
        let mut bad = msg.to_vec();
        bad[12] ^= 1;
        assert_eq!(
            parse_unreachable(gw, s.ip(), &bad, true),
            Err(IcmpError::BadChecksum)
        );
        let echo = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(parse_unreachable(gw, s.ip(), &echo, false), Ok(None));
    }
}

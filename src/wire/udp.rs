//! UDP (RFC 768): a checked parser and a builder writing a whole IP packet.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::checksum::Checksum;
use super::ip::{self, PROTO_UDP};

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// Why a UDP datagram was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum UdpError {
    /// Shorter than the header, or the length field disagrees with the IP payload.
    #[error("bad UDP length")]
    BadLength,
    /// The checksum does not verify.
    #[error("bad UDP checksum")]
    BadChecksum,
    /// The caller's buffer is too small.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// Ports of a verified datagram and where its payload lies in the segment given to [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSummary {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length (the payload starts at [`UDP_HEADER_LEN`]).
    pub payload_len: usize,
}

/// Parses the UDP datagram `seg` (the IP payload) sent from `src` to `dst`, verifying the
/// checksum unless `verify` is false (the sender's checksum offload left it unfinished).
pub fn parse(src: IpAddr, dst: IpAddr, seg: &[u8], verify: bool) -> Result<UdpSummary, UdpError> {
    if seg.len() < UDP_HEADER_LEN {
        return Err(UdpError::BadLength);
    }
    let len = usize::from(u16::from_be_bytes([seg[4], seg[5]]));
    // RFC 768: the length field covers header and data; bytes past it are padding.
    if len < UDP_HEADER_LEN || len > seg.len() {
        return Err(UdpError::BadLength);
    }
    let seg = &seg[..len];
    let csum = u16::from_be_bytes([seg[6], seg[7]]);
    // RFC 768: a zero checksum over IPv4 means "not computed"; RFC 8200 §8.1: over IPv6 it MUST be
    // computed, a zero one is discarded.
    let check = verify && (csum != 0 || src.is_ipv6());
    if check {
        let ok = Checksum::new()
            .add_pseudo_header(src, dst, PROTO_UDP, len as u32)
            .add_bytes(seg)
            .fold()
            == 0xffff;
        if !ok || csum == 0 {
            return Err(UdpError::BadChecksum);
        }
    }
    Ok(UdpSummary {
        src_port: u16::from_be_bytes([seg[0], seg[1]]),
        dst_port: u16::from_be_bytes([seg[2], seg[3]]),
        payload_len: len - UDP_HEADER_LEN,
    })
}

/// Writes an IP packet carrying a UDP datagram from `src` to `dst` into `buf`; returns its length.
pub fn write_packet(
    buf: &mut [u8],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<usize, UdpError> {
    let hlen = ip::header_len(src.ip());
    let len = UDP_HEADER_LEN + payload.len();
    let ulen = u16::try_from(len).map_err(|_| UdpError::BufferTooSmall)?;
    let seg = buf.get_mut(hlen..hlen + len).ok_or(UdpError::BufferTooSmall)?;
    seg[0..2].copy_from_slice(&src.port().to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    seg[4..6].copy_from_slice(&ulen.to_be_bytes());
    seg[6..8].copy_from_slice(&[0, 0]);
    seg[8..].copy_from_slice(payload);
    let mut c = Checksum::new()
        .add_pseudo_header(src.ip(), dst.ip(), PROTO_UDP, len as u32)
        .add_bytes(seg)
        .finish();
    // RFC 768: a computed zero is sent as all ones.
    if c == 0 {
        c = 0xffff;
    }
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    ip::write_header(buf, src.ip(), dst.ip(), PROTO_UDP, len, 64, 0).map_err(|_| UdpError::BufferTooSmall)?;
    Ok(hlen + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let src: SocketAddr = "198.18.0.1:5000".parse().unwrap();
        let dst: SocketAddr = "198.18.0.2:53".parse().unwrap();
        let mut b = [0u8; 100];
        let n = write_packet(&mut b, src, dst, b"hello").unwrap();
        let ipv = ip::parse(&b[..n]).unwrap();
        let seg = &b[ipv.payload.clone()];
        let s = parse(src.ip(), dst.ip(), seg, true).unwrap();
        assert_eq!((s.src_port, s.dst_port, s.payload_len), (5000, 53, 5));
        let mut bad = seg.to_vec();
        bad[9] ^= 1;
        assert_eq!(parse(src.ip(), dst.ip(), &bad, true), Err(UdpError::BadChecksum));
        assert!(parse(src.ip(), dst.ip(), &bad, false).is_ok());
        assert_eq!(
            parse(src.ip(), dst.ip(), &seg[..7], true),
            Err(UdpError::BadLength)
        );
        let mut long = seg.to_vec();
        long[5] = 200;
        assert_eq!(parse(src.ip(), dst.ip(), &long, true), Err(UdpError::BadLength));
    }
}

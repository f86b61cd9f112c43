//! IPv4 (RFC 791) and IPv6 (RFC 8200) headers: a checked parser returning an [`IpSummary`], and
//! builders that write a header into a caller's buffer. etherparse validates the fixed headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use thiserror::Error;

use super::checksum;

/// IANA protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// Why an IP packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IpError {
    /// Empty buffer or a version nibble other than 4 or 6.
    #[error("not an IPv4 or IPv6 packet")]
    BadVersion,
    /// The header is malformed (too short, bad IHL) according to etherparse.
    #[error("malformed IP header")]
    Malformed,
    /// The total/payload length field claims more bytes than the buffer holds, or fewer than the header.
    #[error("IP length field inconsistent with the buffer")]
    BadLength,
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadChecksum,
    /// A fragment (MF set or non-zero offset): the TCP engine does not reassemble IP fragments.
    #[error("IP fragment")]
    Fragment,
    /// The caller's buffer is too small for what a builder had to write.
    #[error("buffer too small")]
    BufferTooSmall,
    /// Builder given a source and destination of different families.
    #[error("source and destination address families differ")]
    MixedFamilies,
}

/// What the transport layer needs from an IP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSummary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (IPv4 protocol, or IPv6 next header after the fixed header).
    pub proto: u8,
    /// Where the upper-layer payload lies in the parsed buffer (bytes past it, e.g. Ethernet padding, excluded).
    pub payload: Range<usize>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// Parses an IPv4 or IPv6 packet at the start of `buf`.
///
/// IPv6 extension headers are not walked: `proto` is the fixed header's next-header field and the
/// payload starts after the fixed header (TCP segments from our peers carry none).
pub fn parse(buf: &[u8]) -> Result<IpSummary, IpError> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => parse_v4(buf),
        Some(6) => parse_v6(buf),
        _ => Err(IpError::BadVersion),
    }
}

fn parse_v4(buf: &[u8]) -> Result<IpSummary, IpError> {
    let h = etherparse::Ipv4HeaderSlice::from_slice(buf).map_err(|_| IpError::Malformed)?;
    let hlen = usize::from(h.ihl()) * 4;
    let total = usize::from(h.total_len());
    if total < hlen || total > buf.len() {
        return Err(IpError::BadLength);
    }
    if !checksum::verify(h.slice()) {
        return Err(IpError::BadChecksum);
    }
    if h.is_fragmenting_payload() {
        return Err(IpError::Fragment);
    }
    Ok(IpSummary {
        src: IpAddr::V4(h.source_addr()),
        dst: IpAddr::V4(h.destination_addr()),
        proto: h.protocol().0,
        payload: hlen..total,
        ttl: h.ttl(),
    })
}

fn parse_v6(buf: &[u8]) -> Result<IpSummary, IpError> {
    let h = etherparse::Ipv6HeaderSlice::from_slice(buf).map_err(|_| IpError::Malformed)?;
    let end = IPV6_HEADER_LEN + usize::from(h.payload_length());
    if end > buf.len() {
        return Err(IpError::BadLength);
    }
    Ok(IpSummary {
        src: IpAddr::V6(h.source_addr()),
        dst: IpAddr::V6(h.destination_addr()),
        proto: h.next_header().0,
        payload: IPV6_HEADER_LEN..end,
        ttl: h.hop_limit(),
    })
}

/// Length of the header [`write_header`] writes for this address family.
pub fn header_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => IPV4_HEADER_LEN,
        IpAddr::V6(_) => IPV6_HEADER_LEN,
    }
}

/// Writes an IPv4 header (no options, DF set) for a payload of `payload_len` bytes into `buf`,
/// returning the header length.
pub fn write_v4(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload_len: usize,
    ttl: u8,
    ident: u16,
) -> Result<usize, IpError> {
    let total = u16::try_from(IPV4_HEADER_LEN + payload_len).map_err(|_| IpError::BufferTooSmall)?;
    let h = buf.get_mut(..IPV4_HEADER_LEN).ok_or(IpError::BufferTooSmall)?;
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    h[8] = ttl;
    h[9] = proto;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Ok(IPV4_HEADER_LEN)
}

/// Writes a fixed IPv6 header (traffic class and flow label zero) into `buf`, returning its length.
pub fn write_v6(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload_len: usize,
    hop_limit: u8,
) -> Result<usize, IpError> {
    let plen = u16::try_from(payload_len).map_err(|_| IpError::BufferTooSmall)?;
    let h = buf.get_mut(..IPV6_HEADER_LEN).ok_or(IpError::BufferTooSmall)?;
    h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&plen.to_be_bytes());
    h[6] = next_header;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    Ok(IPV6_HEADER_LEN)
}

/// Writes an IPv4 or IPv6 header depending on the address family; `ident` is used for IPv4 only.
pub fn write_header(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload_len: usize,
    ttl: u8,
    ident: u16,
) -> Result<usize, IpError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => write_v4(buf, s, d, proto, payload_len, ttl, ident),
        (IpAddr::V6(s), IpAddr::V6(d)) => write_v6(buf, s, d, proto, payload_len, ttl),
        _ => Err(IpError::MixedFamilies),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_roundtrip_and_errors() {
        let mut b = [0u8; 64];
        let n = write_v4(
            &mut b,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            6,
            10,
            64,
            7,
        )
        .unwrap();
        let s = parse(&b[..n + 10]).unwrap();
        assert_eq!(s.payload, 20..30);
        assert_eq!(s.proto, 6);
        assert_eq!(s.ttl, 64);
        assert_eq!(parse(&b[..n + 5]), Err(IpError::BadLength));
        b[8] = 1; // corrupt TTL without fixing the checksum
        assert_eq!(parse(&b[..n + 10]), Err(IpError::BadChecksum));
        assert_eq!(parse(&[]), Err(IpError::BadVersion));
        assert_eq!(parse(&[0x45, 0]), Err(IpError::Malformed));
    }

    #[test]
    fn v6_roundtrip() {
        let mut b = [0u8; 64];
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00::2".parse().unwrap();
        let n = write_v6(&mut b, src, dst, 6, 4, 9).unwrap();
        let s = parse(&b[..n + 4]).unwrap();
        assert_eq!(
            (s.src, s.dst, s.proto, s.payload, s.ttl),
            (src.into(), dst.into(), 6, 40..44, 9)
        );
        assert_eq!(parse(&b[..n + 3]), Err(IpError::BadLength));
    }
}

//! Packet formats: checked views and summaries for untrusted input, builders writing into a
//! caller's buffer (STYLE.md point 3). Nothing here allocates or panics on any input.

pub mod checksum;
pub mod gso;
pub mod icmp;
pub mod ip;
pub mod mptcp;
pub mod tcp;
pub mod udp;
pub mod vnet;

use std::net::SocketAddr;
use std::ops::Range;

use thiserror::Error;

pub use ip::{IpError, IpSummary};
pub use tcp::{SegmentFields, SegmentHeader, TcpError, TcpFlags};

/// Why an IP/TCP packet was rejected by [`parse_tcp_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    /// The IP layer rejected it.
    #[error("IP: {0}")]
    Ip(#[from] IpError),
    /// Not TCP.
    #[error("not a TCP packet (protocol {0})")]
    NotTcp(u8),
    /// The TCP layer rejected it.
    #[error("TCP: {0}")]
    Tcp(#[from] TcpError),
}

/// A parsed TCP/IP packet: where it comes from and goes to, the segment summary and where the
/// payload lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// TCP header summary.
    pub header: SegmentHeader,
    /// The TCP payload's range in the parsed buffer.
    pub payload: Range<usize>,
}

/// Parses an IPv4/IPv6 packet carrying TCP and verifies both checksums.
pub fn parse_tcp_packet(buf: &[u8]) -> Result<TcpPacket, PacketError> {
    let ip = ip::parse(buf)?;
    if ip.proto != ip::PROTO_TCP {
        return Err(PacketError::NotTcp(ip.proto));
    }
    let seg = buf.get(ip.payload.clone()).ok_or(IpError::BadLength)?;
    let view = tcp::TcpHeaderView::new(seg)?;
    if !tcp::verify_checksum(ip.src, ip.dst, seg) {
        return Err(TcpError::BadChecksum.into());
    }
    let header = view.summary()?;
    Ok(TcpPacket {
        src: SocketAddr::new(ip.src, header.src_port),
        dst: SocketAddr::new(ip.dst, header.dst_port),
        header,
        payload: ip.payload.start + view.header_len()..ip.payload.end,
    })
}

/// Writes a whole IP packet carrying a TCP segment (ports taken from `src`/`dst`, overriding
/// `fields`) into `buf`; returns its length.
pub fn write_tcp_packet(
    buf: &mut [u8],
    src: SocketAddr,
    dst: SocketAddr,
    fields: &SegmentFields,
    options: &[u8],
    payload: &[&[u8]],
    ident: u16,
) -> Result<usize, PacketError> {
    write_tcp_packet_with(buf, src, dst, fields, options, payload, ident, false)
}

/// [`write_tcp_packet`] with the choice of a partial TCP checksum
/// ([`tcp::write_segment_with`]): for super-segments, whose segments' checksums are computed
/// where they are cut.
#[expect(clippy::too_many_arguments, reason = "the fields of one packet")]
pub fn write_tcp_packet_with(
    buf: &mut [u8],
    src: SocketAddr,
    dst: SocketAddr,
    fields: &SegmentFields,
    options: &[u8],
    payload: &[&[u8]],
    ident: u16,
    partial: bool,
) -> Result<usize, PacketError> {
    let hlen = ip::header_len(src.ip());
    let f = SegmentFields {
        src_port: src.port(),
        dst_port: dst.port(),
        ..*fields
    };
    let tail = buf.get_mut(hlen..).ok_or(IpError::BufferTooSmall)?;
    let seg_len = tcp::write_segment_with(tail, src.ip(), dst.ip(), &f, options, payload, partial)?;
    ip::write_header(buf, src.ip(), dst.ip(), ip::PROTO_TCP, seg_len, 64, ident)?;
    Ok(hlen + seg_len)
}

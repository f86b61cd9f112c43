//! TCP super-segments (the kernel's GSO/TSO, done in software): [`segment`] cuts an IPv4 or IPv6
//! packet carrying a TCP segment larger than one MSS into packets of at most `seg_payload` payload
//! bytes each, as Linux's `tcp_gso_segment` does: every segment gets a copy of the IP header and
//! of the whole TCP header with its options (for MPTCP, the same DSS mapping on each), sequence
//! numbers advance by the payload before it, FIN and PSH stay on the last segment only, CWR on the
//! first only, the IPv4 identification increases by one per segment, and every checksum is
//! computed whole.
//!
//! It is the fallback of an interface that cannot hand a super-segment to the kernel
//! (`io/iface.rs`), and the simulator's model of the kernel's segmentation (`sim/link.rs`).

use thiserror::Error;

use super::checksum::Checksum;
use super::ip::{IPV4_HEADER_LEN, IPV6_HEADER_LEN, PROTO_TCP};
use super::tcp::TcpFlags;

/// The largest super-segment (the largest IPv4 packet; `gso_max_size` of most devices).
pub const MAX_PACKET: usize = 65_535;

/// Why a packet cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GsoError {
    /// Not a whole IPv4 or IPv6 packet with TCP right after the IP header.
    #[error("not a TCP/IP packet that can be segmented")]
    NotTcp,
    /// The segment size is zero.
    #[error("segment size 0")]
    ZeroSize,
    /// The output buffer cannot hold one segment.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Where the parts of a TCP/IP packet are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// IP header length (the TCP header starts here).
    pub ip_len: usize,
    /// TCP header length, options included.
    pub tcp_len: usize,
    /// Payload length (after both headers, up to the IP packet's own length).
    pub payload_len: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
}

impl Layout {
    /// Both headers.
    pub fn header_len(&self) -> usize {
        self.ip_len + self.tcp_len
    }
}

/// The layout of `packet`, an IPv4 (no fragment) or IPv6 (no extension header) TCP packet.
pub fn layout(packet: &[u8]) -> Result<Layout, GsoError> {
    let first = *packet.first().ok_or(GsoError::NotTcp)?;
    let (ip_len, total, v6) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let h = packet.get(..IPV4_HEADER_LEN).ok_or(GsoError::NotTcp)?;
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if ihl < IPV4_HEADER_LEN || h[9] != PROTO_TCP || frag & 0x3fff != 0 {
                return Err(GsoError::NotTcp);
            }
            (ihl, usize::from(u16::from_be_bytes([h[2], h[3]])), false)
        }
        6 => {
            let h = packet.get(..IPV6_HEADER_LEN).ok_or(GsoError::NotTcp)?;
            if h[6] != PROTO_TCP {
                return Err(GsoError::NotTcp);
            }
            let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            (IPV6_HEADER_LEN, IPV6_HEADER_LEN + plen, true)
        }
        _ => return Err(GsoError::NotTcp),
    };
    let doff = *packet.get(ip_len + 12).ok_or(GsoError::NotTcp)?;
    let tcp_len = usize::from(doff >> 4) * 4;
    if tcp_len < 20 || total > packet.len() || ip_len + tcp_len > total {
        return Err(GsoError::NotTcp);
    }
    Ok(Layout {
        ip_len,
        tcp_len,
        payload_len: total - ip_len - tcp_len,
        v6,
    })
}

/// How many segments `segment` makes of a payload of `payload_len` bytes.
pub fn segment_count(payload_len: usize, seg_payload: usize) -> usize {
    payload_len.div_ceil(seg_payload.max(1)).max(1)
}

/// Cuts `packet` into segments of at most `seg_payload` payload bytes, each written whole into
/// `out` and handed to `f` in order; returns how many. Every checksum is computed anew (the
/// super-segment's TCP checksum may be partial or anything). A packet whose payload fits one
/// segment is handed over as it is (copied) with its TCP checksum computed.
pub fn segment(
    packet: &[u8],
    seg_payload: usize,
    out: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    if seg_payload == 0 {
        return Err(GsoError::ZeroSize);
    }
    let l = layout(packet)?;
    let hl = l.header_len();
    if l.payload_len <= seg_payload {
        let whole = &packet[..hl + l.payload_len];
        let p = out.get_mut(..whole.len()).ok_or(GsoError::BufferTooSmall)?;
        p.copy_from_slice(whole);
        let t = l.ip_len;
        p[t + 16..t + 18].fill(0);
        let c = tcp_checksum(p, &l, l.tcp_len + l.payload_len);
        p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        f(p);
        return Ok(1);
    }
    if out.len() < hl + seg_payload.min(l.payload_len) {
        return Err(GsoError::BufferTooSmall);
    }
    let t = l.ip_len;
    let seq0 = u32::from_be_bytes([packet[t + 4], packet[t + 5], packet[t + 6], packet[t + 7]]);
    let flags0 = packet[t + 13];
    let id0 = u16::from_be_bytes([packet[4], packet[5]]);
    let payload = &packet[hl..hl + l.payload_len];
    let n = segment_count(l.payload_len, seg_payload);
    for (i, chunk) in payload.chunks(seg_payload).enumerate() {
        let len = hl + chunk.len();
        let p = &mut out[..len];
        p[..hl].copy_from_slice(&packet[..hl]);
        p[hl..].copy_from_slice(chunk);
        let tcp_seg_len = l.tcp_len + chunk.len();
        if l.v6 {
            p[4..6].copy_from_slice(&(tcp_seg_len as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            p[10..12].fill(0);
            let c = Checksum::new().add_bytes(&p[..t]).finish();
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * seg_payload) as u32);
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(TcpFlags::FIN.0 | TcpFlags::PSH.0);
        }
        if i > 0 {
            flags &= !TcpFlags::CWR.0;
        }
        p[t + 13] = flags;
        p[t + 16..t + 18].fill(0);
        let c = tcp_checksum(p, &l, tcp_seg_len);
        p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        f(p);
    }
    Ok(n)
}

/// The TCP checksum of the segment in `p` (its checksum field zero).
fn tcp_checksum(p: &[u8], l: &Layout, tcp_seg_len: usize) -> u16 {
    let mut c = pseudo_header(p, l, tcp_seg_len);
    c.add_bytes(&p[l.ip_len..l.ip_len + tcp_seg_len]);
    c.finish()
}

fn pseudo_header(p: &[u8], l: &Layout, tcp_seg_len: usize) -> Checksum {
    let mut c = Checksum::new();
    if l.v6 {
        c.add_bytes(&p[8..40]);
    } else {
        c.add_bytes(&p[12..20]);
    }
    c.add_u16(u16::from(PROTO_TCP)).add_u32(tcp_seg_len as u32);
    c
}

/// Rewrites the TCP checksum field of `packet` to the folded pseudo-header sum (not
/// complemented), the partial checksum a device that checksums on transmit completes
/// (`virtio_net_hdr` `NEEDS_CSUM`: it adds the sum from the TCP header to the end of the packet).
pub fn set_partial_checksum(packet: &mut [u8]) -> Result<Layout, GsoError> {
    let l = layout(packet)?;
    let c = pseudo_header(packet, &l, l.tcp_len + l.payload_len).fold();
    let t = l.ip_len;
    packet[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::SeqNum;
    use crate::wire::tcp::SegmentFields;
    use crate::wire::{parse_tcp_packet, write_tcp_packet};
    use std::net::SocketAddr;

    fn packet(src: &str, dst: &str, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let mut buf = vec![0u8; 70_000];
        let f = SegmentFields {
            seq: SeqNum(0xffff_f000),
            ack: SeqNum(7),
            flags,
            window: 1000,
            ..Default::default()
        };
        // An MPTCP-like option block (kind 30, length 20) so that options are visibly copied.
        let mut opts = [0u8; 20];
        opts[0] = 30;
        opts[1] = 20;
        opts[2..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let n = write_tcp_packet(&mut buf, s, d, &f, &opts, &[payload], 100).unwrap();
        buf.truncate(n);
        buf
    }

    fn check_split(src: &str, dst: &str) {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let flags = TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN | TcpFlags::CWR;
        let full = packet(src, dst, flags, &payload);
        let mut partial = full.clone();
        set_partial_checksum(&mut partial).unwrap();
        for p in [full, partial] {
            check_split_of(&p, &payload);
        }
    }

    fn check_split_of(p: &[u8], payload: &[u8]) {
        let mut out = vec![0u8; 2000];
        let mut got = Vec::new();
        let n = segment(p, 1400, &mut out, |s| got.push(s.to_vec())).unwrap();
        assert_eq!(n, 8);
        assert_eq!(got.len(), 8);
        let mut joined = Vec::new();
        for (i, s) in got.iter().enumerate() {
            // parse_tcp_packet verifies both checksums.
            let t = parse_tcp_packet(s).unwrap();
            assert_eq!(t.header.seq.0, 0xffff_f000u32.wrapping_add(1400 * i as u32));
            assert_eq!(t.header.ack.0, 7);
            let last = i == 7;
            assert_eq!(t.header.flags.fin(), last, "FIN on the last only");
            assert_eq!(
                t.header.flags.0 & TcpFlags::PSH.0 != 0,
                last,
                "PSH on the last only"
            );
            assert_eq!(
                t.header.flags.0 & TcpFlags::CWR.0 != 0,
                i == 0,
                "CWR on the first only"
            );
            let l = layout(s).unwrap();
            assert_eq!(
                &s[l.ip_len + 20..l.header_len()],
                &p[l.ip_len + 20..l.header_len()]
            );
            if !l.v6 {
                assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16);
            }
            joined.extend_from_slice(&s[t.payload.clone()]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn splits_ipv4_and_ipv6_like_the_kernel() {
        check_split("198.18.0.2:61000", "198.19.0.11:80");
        check_split("[fd00::2]:61000", "[fd00:1::11]:80");
    }

    #[test]
    fn small_packet_passes_whole_and_bad_input_is_an_error() {
        let p = packet("198.18.0.2:61000", "198.19.0.11:80", TcpFlags::ACK, b"hello");
        let mut out = vec![0u8; 2000];
        let mut got = Vec::new();
        assert_eq!(segment(&p, 1400, &mut out, |s| got.push(s.to_vec())), Ok(1));
        assert_eq!(got, vec![p.clone()]);
        assert_eq!(segment(&p, 0, &mut out, |_| {}), Err(GsoError::ZeroSize));
        assert_eq!(segment(&p[..30], 1400, &mut out, |_| {}), Err(GsoError::NotTcp));
        assert_eq!(segment(&[], 1400, &mut out, |_| {}), Err(GsoError::NotTcp));
        let big = packet("198.18.0.2:61000", "198.19.0.11:80", TcpFlags::ACK, &[1; 3000]);
        assert_eq!(
            segment(&big, 1400, &mut out[..100], |_| {}),
            Err(GsoError::BufferTooSmall)
        );
        let mut udp = p.clone();
        udp[9] = 17;
        assert_eq!(segment(&udp, 1400, &mut out, |_| {}), Err(GsoError::NotTcp));
    }

    #[test]
    fn partial_checksum_completes_to_the_full_one() {
        for (s, d) in [
            ("198.18.0.2:61000", "198.19.0.11:80"),
            ("[fd00::2]:61000", "[fd00:1::11]:80"),
        ] {
            let full = packet(s, d, TcpFlags::ACK, &[9; 3001]);
            let mut p = full.clone();
            let l = set_partial_checksum(&mut p).unwrap();
            // What a device does with NEEDS_CSUM: sum from csum_start to the end, store it.
            let c = Checksum::new().add_bytes(&p[l.ip_len..]).finish();
            p[l.ip_len + 16..l.ip_len + 18].copy_from_slice(&c.to_be_bytes());
            assert_eq!(p, full);
        }
    }
}

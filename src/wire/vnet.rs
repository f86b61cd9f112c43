//! The `virtio_net_hdr` (virtio 1.x §5.1.6, `linux/virtio_net.h`) that goes before every packet
//! on a TUN opened with `IFF_VNET_HDR` and on an AF_PACKET socket with `PACKET_VNET_HDR`: whether
//! the checksum still has to be completed (`NEEDS_CSUM`, from `csum_start` with the result at
//! `csum_start + csum_offset`) or was already checked (`DATA_VALID`), and whether the packet is a
//! TCP super-segment to be cut into segments of `gso_size` payload bytes. The kernel reads and
//! writes the legacy header in the machine's byte order (no `TUNSETVNETLE`/`BE` is set).

/// Size of the header on the wire.
pub const LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum field holds the pseudo-header sum only.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO; we never enable it).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: flag bit, the super-segment carries CWR.
pub const GSO_ECN: u8 = 0x80;
/// Offset of the checksum field in a TCP header.
pub const TCP_CSUM_OFFSET: u16 = 16;

/// One `virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers copied onto each segment (IP + TCP).
    pub hdr_len: u16,
    /// Payload bytes per segment of a super-segment.
    pub gso_size: u16,
    /// Where the checksummed range starts (the TCP header).
    pub csum_start: u16,
    /// Where in that range the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// A header for TCP packet `packet` whose checksum field holds the pseudo-header sum
    /// (`NEEDS_CSUM`), to be cut into segments of `seg_payload` bytes (0: one segment). `None`
    /// if it is not a TCP packet [`crate::wire::gso::layout`] accepts.
    pub fn partial_tcp(packet: &[u8], seg_payload: usize) -> Option<VnetHdr> {
        let l = crate::wire::gso::layout(packet).ok()?;
        let gso = match (seg_payload, l.v6) {
            (0, _) => GSO_NONE,
            (_, false) => GSO_TCPV4,
            (_, true) => GSO_TCPV6,
        };
        Some(VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: gso,
            hdr_len: u16::try_from(l.header_len()).ok()?,
            gso_size: u16::try_from(seg_payload).ok()?,
            csum_start: u16::try_from(l.ip_len).ok()?,
            csum_offset: TCP_CSUM_OFFSET,
        })
    }

    /// The bytes the kernel reads.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// The header at the start of `b`; `None` if `b` is shorter than [`LEN`].
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The kernel left the checksum for us to complete, or checked it: either way it is not to
    /// be verified (it cannot be, in the first case).
    pub fn checksum_trusted(&self) -> bool {
        self.flags & (F_NEEDS_CSUM | F_DATA_VALID) != 0
    }

    /// A TCP super-segment (TSO from the host, or GRO).
    pub fn is_tcp_super(&self) -> bool {
        matches!(self.gso_type & !GSO_ECN, GSO_TCPV4 | GSO_TCPV6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_packet(v6: bool, payload: usize) -> Vec<u8> {
        let b = if v6 {
            etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            etherparse::PacketBuilder::ipv4([100, 127, 77, 1], [198, 19, 0, 11], 64)
        };
        let mut buf = Vec::new();
        b.tcp(40000, 80, 7, 1000)
            .ack(9)
            .write(&mut buf, &vec![0xab; payload])
            .unwrap();
        buf
    }

    #[test]
    fn round_trips_every_field() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 0x1234,
            gso_size: 1440,
            csum_start: 40,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::decode(&h.encode()), Some(h));
        assert!(h.checksum_trusted());
        assert!(h.is_tcp_super(), "ECN bit does not hide the type");
    }

    #[test]
    fn machine_byte_order_as_the_kernel_lays_it_out() {
        let h = VnetHdr {
            gso_size: 1448,
            ..Default::default()
        };
        // `struct virtio_net_hdr`: u8 flags, u8 gso_type, then __virtio16 hdr_len, gso_size, ….
        assert_eq!(&h.encode()[4..6], &1448u16.to_ne_bytes());
    }

    #[test]
    fn short_input_and_plain_headers() {
        assert_eq!(VnetHdr::decode(&[0; LEN - 1]), None);
        let plain = VnetHdr::decode(&[0; LEN]).unwrap();
        assert!(!plain.checksum_trusted(), "no flag: our verification stays");
        assert!(!plain.is_tcp_super());
        let valid = VnetHdr {
            flags: F_DATA_VALID,
            ..plain
        };
        assert!(valid.checksum_trusted());
        let ufo = VnetHdr {
            gso_type: GSO_UDP,
            ..plain
        };
        assert!(!ufo.is_tcp_super());
    }

    #[test]
    fn partial_header_for_tcp_packets() {
        let p4 = tcp_packet(false, 3000);
        let h = VnetHdr::partial_tcp(&p4, 1000).unwrap();
        assert_eq!(
            (
                h.flags,
                h.gso_type,
                h.gso_size,
                h.csum_start,
                h.csum_offset,
                h.hdr_len
            ),
            (F_NEEDS_CSUM, GSO_TCPV4, 1000, 20, 16, 40)
        );
        let p6 = tcp_packet(true, 10);
        let h = VnetHdr::partial_tcp(&p6, 0).unwrap();
        assert_eq!((h.gso_type, h.csum_start, h.hdr_len), (GSO_NONE, 40, 60));
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .udp(1, 2)
            .write(&mut udp, b"x")
            .unwrap();
        assert_eq!(VnetHdr::partial_tcp(&udp, 0), None);
        assert_eq!(VnetHdr::partial_tcp(&[], 0), None);
    }
}

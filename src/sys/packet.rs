//! AF_PACKET receive with a `TPACKET_V2` memory-mapped frame ring and a classic-BPF filter that
//! admits only TCP segments addressed to mpbond's subflow port range (IPv4 and IPv6).
//!
//! The socket is `SOCK_DGRAM`, so every frame starts at the network header whatever the link type
//! (Ethernet Wi-Fi, raw-IP WWAN modems). Outgoing frames are ignored (`PACKET_IGNORE_OUTGOING`).
//!
//! Why `TPACKET_V2` and not `TPACKET_V3`: a V3 block is handed to user space only when it is full
//! or when its retire timer fires (1 ms at the least), so a lone segment (a SYN/ACK, the answer to
//! a request) waited a whole millisecond. A V2 frame belongs to user space as soon as the kernel
//! has written it, and the kernel wakes the reader for each one; under load the reader drains many
//! frames per wake-up, which is the batching.
//!
//! Frames are [`FRAME_SIZE`] bytes, enough for any packet of a 1500-byte MTU. A larger packet
//! (a GRO super-segment of up to 64 KiB, a jumbo frame) does not fit a frame: with
//! `PACKET_COPY_THRESH` the kernel then queues the whole packet on the socket and marks the frame
//! `TP_STATUS_COPY`; [`PacketRx::drain`] reads it from there into a buffer allocated once.
//! Packets whose checksum is not yet computed (veth, some drivers) are flagged:
//! [`RxFrame::csum_not_ready`] says so, and the parser must then skip checksum verification.

use std::io;
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::wire::vnet::{self, VnetHdr};

/// What the filter asks the kernel to copy of each packet: all of it (GRO segments up to 64 KiB).
const SNAP_LEN: u32 = 0x40000;

/// Errors from setting up the packet socket.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The interface does not exist (or has no index).
    #[error("interface {0:?} not found")]
    NoInterface(String),
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// Which step.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn sys(what: &'static str) -> PacketError {
    PacketError::Sys {
        what,
        source: io::Error::last_os_error(),
    }
}

// ---- classic BPF -------------------------------------------------------------------------------

const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_RSH: u16 = 0x70;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

/// One classic-BPF instruction (layout of `struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

const fn stmt(code: u16, k: u32) -> BpfInsn {
    BpfInsn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// The filter program: accept (whole packet) a TCP segment to a destination port in `ports`,
/// IPv4 (unfragmented or first fragment only) or IPv6 (TCP as the first next header), and, with
/// `icmp`, every ICMP / ICMPv6 message (errors quoting our segments: unreachable, time exceeded,
/// packet too big); drop everything else. Offsets are from the network header (`SOCK_DGRAM`).
pub fn port_filter(ports: &RangeInclusive<u16>, icmp: bool) -> Vec<BpfInsn> {
    let lo = u32::from(*ports.start());
    let hi = u32::from(*ports.end());
    // A protocol byte never equals 256: the ICMP tests then always fail.
    let (icmp4, icmp6) = if icmp { (1, 58) } else { (256, 256) };
    // Jumps are relative: target = index + 1 + offset. DROP is 19, ACCEPT is 20.
    vec![
        /* 0 */ stmt(BPF_LD | BPF_B | BPF_ABS, 0), //                A = version/IHL byte
        /* 1 */ stmt(BPF_ALU | BPF_RSH | BPF_K, 4), //               A = IP version
        /* 2 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, 9), //         v4 → 3, else → 12
        /* 3 */ stmt(BPF_LD | BPF_B | BPF_ABS, 9), //                A = protocol
        /* 4 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0), //         TCP → 6, else → 5
        /* 5 */ jump(BPF_JMP | BPF_JEQ | BPF_K, icmp4, 14, 13), //   ICMP → ACCEPT, else DROP
        /* 6 */ stmt(BPF_LD | BPF_H | BPF_ABS, 6), //                A = flags + fragment offset
        /* 7 */ jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 11, 0), //  later fragment → DROP
        /* 8 */ stmt(BPF_LDX | BPF_B | BPF_MSH, 0), //               X = 4 * IHL
        /* 9 */ stmt(BPF_LD | BPF_H | BPF_IND, 2), //                A = TCP destination port
        /* 10 */ jump(BPF_JMP | BPF_JGE | BPF_K, lo, 0, 8), //       < lo → DROP
        /* 11 */ jump(BPF_JMP | BPF_JGT | BPF_K, hi, 7, 8), //       > hi → DROP, else ACCEPT
        /* 12 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 0, 6), //        v6 → 13, else DROP
        /* 13 */ stmt(BPF_LD | BPF_B | BPF_ABS, 6), //               A = next header
        /* 14 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0), //        TCP → 16, else → 15
        /* 15 */ jump(BPF_JMP | BPF_JEQ | BPF_K, icmp6, 4, 3), //    ICMPv6 → ACCEPT, else DROP
        /* 16 */ stmt(BPF_LD | BPF_H | BPF_ABS, 42), //              A = TCP destination port
        /* 17 */ jump(BPF_JMP | BPF_JGE | BPF_K, lo, 0, 1), //       < lo → DROP
        /* 18 */ jump(BPF_JMP | BPF_JGT | BPF_K, hi, 0, 1), //       > hi → DROP, else ACCEPT
        /* 19 */ stmt(BPF_RET | BPF_K, 0),
        /* 20 */ stmt(BPF_RET | BPF_K, SNAP_LEN),
    ]
}

// ---- the ring ----------------------------------------------------------------------------------

/// Size of one ring block (the ring is a whole number of these; the `blocks` argument of
/// [`PacketRx::open`] counts them).
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Size of one ring frame: the V2 header and link-layer address (80 bytes for `SOCK_DGRAM`), then
/// up to 1,968 bytes of packet. Larger packets arrive through the copy path.
pub const FRAME_SIZE: u32 = 2048;
/// The largest packet [`PacketRx::drain`] can hand over (a GRO super-segment, the largest IP
/// packet); a longer one is flagged truncated.
pub const MAX_PACKET: usize = 65536;
/// Socket receive buffer asked for: it holds the large packets of the copy path until they are read.
const RCVBUF: usize = 8 << 20;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 1 << 1;
// Offsets inside `struct tpacket2_hdr`.
const PKT_STATUS_OFF: usize = std::mem::offset_of!(libc::tpacket2_hdr, tp_status);
const PKT_LEN_OFF: usize = std::mem::offset_of!(libc::tpacket2_hdr, tp_len);
const PKT_SNAPLEN_OFF: usize = std::mem::offset_of!(libc::tpacket2_hdr, tp_snaplen);
const PKT_NET_OFF: usize = std::mem::offset_of!(libc::tpacket2_hdr, tp_net);
/// Where the frame's `sockaddr_ll` starts: `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`.
const PKT_SLL_OFF: usize = std::mem::size_of::<libc::tpacket2_hdr>().next_multiple_of(16);
const SLL_HALEN_OFF: usize = PKT_SLL_OFF + std::mem::offset_of!(libc::sockaddr_ll, sll_halen);
const SLL_ADDR_OFF: usize = PKT_SLL_OFF + std::mem::offset_of!(libc::sockaddr_ll, sll_addr);

/// An AF_PACKET socket bound to one interface with a `TPACKET_V2` receive ring.
#[derive(Debug)]
pub struct PacketRx {
    fd: OwnedFd,
    ring: NonNull<u8>,
    ring_len: usize,
    frame_nr: u32,
    /// The frame to look at next.
    current: u32,
    /// Where a packet too large for a frame is read to (copy path); [`MAX_PACKET`] bytes.
    large: Box<[u8]>,
    /// The interface's MTU when the socket was opened (0: unknown).
    mtu: u32,
}

// SAFETY: the ring is a private mapping owned by this value; moving it to another thread is sound
// (only one thread uses a `PacketRx` at a time: it is not `Sync`).
unsafe impl Send for PacketRx {}

/// One received packet, borrowed from the ring.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The IP packet (from the network header), possibly a GRO super-segment.
    pub data: &'a [u8],
    /// The packet was longer than what could be read (larger than [`MAX_PACKET`], or the kernel
    /// had no room to queue it whole): the caller counts and drops it.
    pub truncated: bool,
    /// The checksum has not been computed yet (veth, local offload): do not verify it.
    pub csum_not_ready: bool,
    /// The device verified the checksum.
    pub csum_valid: bool,
    /// The link-layer source address (the next hop's MAC for off-link senders); `None` on
    /// interfaces without one (raw-IP modems).
    pub src_mac: Option<[u8; 6]>,
}

impl PacketRx {
    /// Opens a packet socket on interface `ifname`, with the port filter and a ring of `blocks`
    /// blocks of [`BLOCK_SIZE`] bytes ([`FRAME_SIZE`]-byte frames). Non-blocking; poll the fd for
    /// readability. With `icmp`, ICMP and ICMPv6 messages are received too.
    pub fn open(
        ifname: &str,
        ports: &RangeInclusive<u16>,
        icmp: bool,
        blocks: u32,
    ) -> Result<PacketRx, PacketError> {
        let ifindex = if_index(ifname)?;
        let proto_be = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto_be),
            )
        };
        if raw < 0 {
            return Err(sys("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // Attach the filter before binding so that no unfiltered packet is queued.
        let prog = port_filter(ports, icmp);
        let insns: Vec<libc::sock_filter> = prog
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: u16::try_from(insns.len()).unwrap_or(u16::MAX),
            filter: insns.as_ptr().cast_mut(),
        };
        setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog,
            "SO_ATTACH_FILTER",
        )?;
        let one: libc::c_int = 1;
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
            "PACKET_IGNORE_OUTGOING",
        )?;
        // A packet larger than a frame goes whole to the socket's queue (frame: TP_STATUS_COPY).
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_COPY_THRESH,
            &one,
            "PACKET_COPY_THRESH",
        )?;
        // Room for those packets; FORCE (root) may exceed net.core.rmem_max, else take what is allowed.
        super::sock::grow_rcvbuf(std::os::fd::AsFd::as_fd(&fd), RCVBUF).map_err(|source| {
            PacketError::Sys {
                what: "SO_RCVBUF",
                source,
            }
        })?;
        let version: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            "PACKET_VERSION",
        )?;

        let blocks = blocks.max(1);
        let frame_nr = BLOCK_SIZE / FRAME_SIZE * blocks;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: blocks,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: frame_nr,
        };
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "PACKET_RX_RING",
        )?;

        let ring_len = BLOCK_SIZE as usize * blocks as usize;
        // SAFETY: mapping the ring the kernel just allocated for this fd, with the length it was
        // configured with; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        let ptr = if ptr == libc::MAP_FAILED {
            // MAP_LOCKED may fail under a memlock limit: retry unlocked.
            // SAFETY: as above.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    ring_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(sys("mmap(PACKET_RX_RING)"));
            }
            p
        } else {
            ptr
        };
        let ring = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| sys("mmap returned null"))?;
        let mtu = link_mtu(&fd, ifname).unwrap_or(0);
        let rx = PacketRx {
            fd,
            ring,
            ring_len,
            frame_nr,
            current: 0,
            large: vec![0u8; MAX_PACKET].into_boxed_slice(),
            mtu,
        };

        // SAFETY: zeroed sockaddr_ll is a valid value; we fill the fields bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll and the length matches its size.
        let rc = unsafe {
            libc::bind(
                rx.fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(sys("bind(AF_PACKET)"));
        }
        Ok(rx)
    }

    /// The interface's MTU when the socket was opened (0: unknown): a packet received larger
    /// than it is a GRO super-segment (or a jumbo frame the link allowed).
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Whether the kernel has handed over a packet that [`PacketRx::drain`] would read now.
    pub fn has_frame(&self) -> bool {
        self.frame_status(self.current).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    fn frame_ptr(&self, index: u32) -> *mut u8 {
        // SAFETY: index < frame_nr, and frames never straddle blocks (BLOCK_SIZE is a multiple of
        // FRAME_SIZE), so the offset stays inside the mapping.
        unsafe { self.ring.as_ptr().add(index as usize * FRAME_SIZE as usize) }
    }

    fn frame_status(&self, index: u32) -> &AtomicU32 {
        // SAFETY: the status word is the first, 4-byte aligned u32 of the frame header (frames are
        // 16-byte aligned), shared with the kernel; AtomicU32 has the same layout as u32.
        unsafe { &*self.frame_ptr(index).add(PKT_STATUS_OFF).cast::<AtomicU32>() }
    }

    /// Calls `f` for every packet the kernel has handed over, at most `max_frames` (the cap on
    /// work per wake-up), in arrival order, and returns how many were visited. Each frame is given
    /// back to the kernel right after `f` returns.
    pub fn drain(&mut self, max_frames: u32, mut f: impl FnMut(RxFrame<'_>)) -> u32 {
        let mut count = 0;
        while count < max_frames {
            let index = self.current;
            // Acquire: the kernel writes the frame, then publishes TP_STATUS_USER.
            let status = self.frame_status(index).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            let frame = self.frame_ptr(index);
            // SAFETY: the frame belongs to user space until we store TP_STATUS_KERNEL; the header
            // reads are inside the frame, and the data slice is bounds-checked against FRAME_SIZE.
            let (snaplen, len, net) = unsafe {
                (
                    read_u32(frame, PKT_SNAPLEN_OFF) as usize,
                    read_u32(frame, PKT_LEN_OFF) as usize,
                    usize::from(std::ptr::read_volatile(frame.add(PKT_NET_OFF).cast::<u16>())),
                )
            };
            // SAFETY: the sockaddr_ll follows the header inside the frame (the kernel reserves
            // TPACKET2_HDRLEN before tp_net); read while the frame is ours.
            let src_mac = unsafe {
                (std::ptr::read_volatile(frame.add(SLL_HALEN_OFF)) == 6)
                    .then(|| std::ptr::read_volatile(frame.add(SLL_ADDR_OFF).cast::<[u8; 6]>()))
            };
            let csum_not_ready = status & libc::TP_STATUS_CSUMNOTREADY != 0;
            let csum_valid = status & libc::TP_STATUS_CSUM_VALID != 0;
            if status & TP_STATUS_COPY != 0 {
                // The whole packet waits on the socket queue, in the same order as the frames.
                match self.recv_large() {
                    Some(n) => f(RxFrame {
                        data: &self.large[..n.min(MAX_PACKET)],
                        truncated: n > MAX_PACKET,
                        csum_not_ready,
                        csum_valid,
                        src_mac,
                    }),
                    None => f(RxFrame {
                        data: &[],
                        truncated: true,
                        csum_not_ready,
                        csum_valid,
                        src_mac,
                    }),
                }
            } else if net + snaplen <= FRAME_SIZE as usize {
                // SAFETY: in bounds of this frame (checked just above), which is ours until the
                // status store below; the slice does not outlive `f`.
                let data = unsafe { std::slice::from_raw_parts(frame.add(net), snaplen) };
                f(RxFrame {
                    data,
                    truncated: snaplen < len,
                    csum_not_ready,
                    csum_valid,
                    src_mac,
                });
            } else {
                f(RxFrame {
                    data: &[],
                    truncated: true,
                    csum_not_ready,
                    csum_valid,
                    src_mac,
                });
            }
            // Release: our reads of the frame happen before the kernel may reuse it.
            self.frame_status(index)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.current = (index + 1) % self.frame_nr;
            count += 1;
        }
        count
    }

    /// Reads the next queued whole packet (copy path) into `self.large`; returns its full length
    /// (larger than the buffer when it was cut), or `None` when nothing was queued.
    fn recv_large(&mut self) -> Option<usize> {
        // SAFETY: the buffer is valid for writes of its whole length for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.large.as_mut_ptr().cast(),
                self.large.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        usize::try_from(n).ok()
    }
}

// ---- transmit with a virtio_net_hdr: super-segments the kernel or the NIC cuts ----------------

// The header itself: `wire::vnet`.

/// An AF_PACKET socket on one interface with `PACKET_VNET_HDR`: each IP packet sent goes with a
/// `virtio_net_hdr` that asks the kernel to cut a TCP super-segment into segments of `gso_size`
/// payload bytes (in software, or on the NIC with TSO) and to complete the TCP checksum
/// (`NEEDS_CSUM`). The kernel takes a vnet header on `SOCK_RAW` sockets only, so on an Ethernet
/// interface (Wi-Fi included) the frame's link-layer header is ours: toward the MAC address given
/// with each packet, from the interface's own. Raw-IP interfaces (WWAN modems) have none.
/// Send-only (protocol 0: nothing is received on it).
#[derive(Debug)]
pub struct PacketTx {
    fd: OwnedFd,
    ifindex: i32,
    /// The interface's MAC address; `None` on an interface without link-layer header.
    own_mac: Option<[u8; 6]>,
}

const ETH_HLEN: usize = 14;
const ARPHRD_RAWIP: u16 = 519;

impl PacketTx {
    /// Opens the socket on `ifname`; an error means this kernel or interface cannot take
    /// super-segments this way (the caller cuts them itself).
    pub fn open(ifname: &str) -> Result<PacketTx, PacketError> {
        let ifindex = if_index(ifname)?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(sys("socket(AF_PACKET) for sending"));
        }
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let own_mac = link_address(&fd, ifname)?;
        let one: libc::c_int = 1;
        setsockopt(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, &one, "PACKET_VNET_HDR")?;
        let sndbuf: libc::c_int = 4 << 20;
        if setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &sndbuf,
            "SO_SNDBUFFORCE",
        )
        .is_err()
        {
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf, "SO_SNDBUF")?;
        }
        Ok(PacketTx { fd, ifindex, own_mac })
    }

    /// Whether frames need the next hop's MAC address (an Ethernet interface).
    pub fn needs_mac(&self) -> bool {
        self.own_mac.is_some()
    }

    /// Sends TCP packet `packet` (IPv4 or IPv6, its TCP checksum field holding the pseudo-header
    /// sum: `wire::gso::set_partial_checksum`) to link-layer address `mac` (`None` on an
    /// interface without one), to be cut into segments of `seg_payload` bytes (0: sent as one).
    /// `hdr_len` is the IP plus TCP header length, `ip_len` the IP header's. An Ethernet
    /// interface without `mac` refuses (`InvalidInput`).
    pub fn send_tcp(
        &self,
        packet: &[u8],
        ip_len: usize,
        hdr_len: usize,
        seg_payload: usize,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let v6 = packet.first().is_some_and(|b| b >> 4 == 6);
        let proto = if v6 { libc::ETH_P_IPV6 } else { libc::ETH_P_IP } as u16;
        let mut eth = [0u8; ETH_HLEN];
        let ll = match (self.own_mac, mac) {
            (None, _) => 0,
            (Some(own), Some(dst)) => {
                eth[..6].copy_from_slice(&dst);
                eth[6..12].copy_from_slice(&own);
                eth[12..].copy_from_slice(&proto.to_be_bytes());
                ETH_HLEN
            }
            (Some(_), None) => return Err(io::ErrorKind::InvalidInput.into()),
        };
        let u16_of = |v: usize| u16::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let hdr = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: match (seg_payload, v6) {
                (0, _) => vnet::GSO_NONE,
                (_, false) => vnet::GSO_TCPV4,
                (_, true) => vnet::GSO_TCPV6,
            },
            hdr_len: u16_of(ll + hdr_len)?,
            gso_size: u16_of(seg_payload)?,
            csum_start: u16_of(ll + ip_len)?,
            csum_offset: vnet::TCP_CSUM_OFFSET,
        }
        .encode();
        // SAFETY: zeroed sockaddr_ll is a valid value; we fill the fields sendmsg needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = self.ifindex;
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: eth.as_mut_ptr().cast(),
                iov_len: ll,
            },
            libc::iovec {
                iov_base: packet.as_ptr().cast_mut().cast(),
                iov_len: packet.len(),
            },
        ];
        // SAFETY: zeroed msghdr is valid; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut sll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: `msg` points to live buffers for the duration of the call; the kernel only
        // reads them.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &raw const msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The MAC address of interface `ifname` (`SIOCGIFHWADDR`), `None` for a raw-IP interface;
/// an error for any other kind of link (its header is unknown here).
fn link_address(fd: &OwnedFd, ifname: &str) -> Result<Option<[u8; 6]>, PacketError> {
    let mut ifr = ifreq(ifname)?;
    // SAFETY: SIOCGIFHWADDR reads the name and writes the hardware address into `ifr`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut ifr) };
    if rc != 0 {
        return Err(sys("SIOCGIFHWADDR"));
    }
    // SAFETY: after SIOCGIFHWADDR the union holds the hardware address.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    match sa.sa_family {
        libc::ARPHRD_ETHER => {
            let mut mac = [0u8; 6];
            for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
                *d = *s as u8;
            }
            Ok(Some(mac))
        }
        libc::ARPHRD_NONE | ARPHRD_RAWIP => Ok(None),
        other => Err(PacketError::Sys {
            what: "link type without a known header",
            source: io::Error::other(format!("ARPHRD {other}")),
        }),
    }
}

/// An `ifreq` naming `ifname`, the rest zero.
fn ifreq(ifname: &str) -> Result<libc::ifreq, PacketError> {
    // SAFETY: zeroed ifreq is a valid value; the name is copied in below, NUL-terminated.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(PacketError::NoInterface(ifname.to_owned()));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

/// The MTU of interface `ifname` (`SIOCGIFMTU`, asked on `fd`, any socket of the interface's
/// network namespace).
fn link_mtu(fd: &OwnedFd, ifname: &str) -> Result<u32, PacketError> {
    let mut ifr = ifreq(ifname)?;
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `ifr`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &raw mut ifr) };
    if rc != 0 {
        return Err(sys("SIOCGIFMTU"));
    }
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// `PACKET_VNET_HDR` (`linux/if_packet.h`).
const PACKET_VNET_HDR: libc::c_int = 15;

/// # Safety
/// `base + off .. base + off + 4` must be inside a live mapping.
unsafe fn read_u32(base: *const u8, off: usize) -> u32 {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::read_volatile(base.add(off).cast::<u32>()) }
}

impl AsRawFd for PacketRx {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for PacketRx {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `open`; no frame borrows outlive `drain`.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_len);
        }
    }
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: i32,
    name: i32,
    value: &T,
    what: &'static str,
) -> Result<(), PacketError> {
    // SAFETY: `value` points to a live T and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 { Err(sys(what)) } else { Ok(()) }
}

/// The kernel's index of interface `name`.
pub fn if_index(name: &str) -> Result<i32, PacketError> {
    let c = std::ffi::CString::new(name).map_err(|_| PacketError::NoInterface(name.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(PacketError::NoInterface(name.to_owned()));
    }
    i32::try_from(idx).map_err(|_| PacketError::NoInterface(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions the filter uses, so the program is tested
    /// on synthetic packets without a kernel.
    fn run(prog: &[BpfInsn], pkt: &[u8]) -> Option<u32> {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |o: usize| pkt.get(o).copied().map(u32::from);
        let half = |o: usize| Some(byte(o)? << 8 | byte(o + 1)?);
        for _ in 0..prog.len() {
            let i = prog[pc];
            let k = i.k;
            pc += 1;
            match i.code {
                c if c == BPF_LD | BPF_B | BPF_ABS => a = byte(k as usize)?,
                c if c == BPF_LD | BPF_H | BPF_ABS => a = half(k as usize)?,
                c if c == BPF_LD | BPF_H | BPF_IND => a = half((x + k) as usize)?,
                c if c == BPF_LDX | BPF_B | BPF_MSH => x = 4 * (byte(k as usize)? & 0xf),
                c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= k,
                c if c & 0x07 == BPF_JMP => {
                    let cond = match c & 0xf0 {
                        BPF_JEQ => a == k,
                        BPF_JGT => a > k,
                        BPF_JGE => a >= k,
                        BPF_JSET => a & k != 0,
                        _ => panic!("unknown jump {c:#x}"),
                    };
                    pc += usize::from(if cond { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_K => return Some(k),
                c => panic!("unknown insn {c:#x}"),
            }
        }
        panic!("ran off the end")
    }

    fn v4(proto: u8, ihl: u8, frag: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(ihl) * 4 + 20];
        p[0] = 0x40 | ihl;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = proto;
        let t = usize::from(ihl) * 4;
        p[t + 2..t + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    fn v6(next: u8, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = next;
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn filter_admits_only_tcp_to_the_range() {
        let prog = port_filter(&(61000..=64999), false);
        let acc = |p: &[u8]| run(&prog, p) == Some(SNAP_LEN);
        assert!(acc(&v4(6, 5, 0, 61000)));
        assert!(acc(&v4(6, 5, 0, 64999)));
        assert!(acc(&v4(6, 15, 0x4000, 62000)), "options + DF bit");
        assert!(!acc(&v4(6, 5, 0, 60999)));
        assert!(!acc(&v4(6, 5, 0, 65000)));
        assert!(!acc(&v4(17, 5, 0, 62000)), "UDP");
        assert!(!acc(&v4(6, 5, 0x0001, 62000)), "later fragment");
        assert!(acc(&v6(6, 61000)));
        assert!(acc(&v6(6, 64999)));
        assert!(!acc(&v6(6, 60999)));
        assert!(!acc(&v6(6, 65000)));
        assert!(!acc(&v6(17, 62000)));
        assert!(!acc(&v6(0, 62000)), "hop-by-hop first");
        assert!(!acc(&v4(1, 5, 0, 0)), "ICMP without the flag");
        assert!(!acc(&v6(58, 0)), "ICMPv6 without the flag");
        assert_eq!(run(&prog, &[0x50]), Some(0), "not IP");
        let with_icmp = port_filter(&(61000..=64999), true);
        let acc_i = |p: &[u8]| run(&with_icmp, p) == Some(SNAP_LEN);
        assert!(acc_i(&v4(1, 5, 0, 0)) && acc_i(&v6(58, 0)), "ICMP with the flag");
        assert!(acc_i(&v4(6, 5, 0, 61000)) && acc_i(&v6(6, 64999)));
        assert!(!acc_i(&v4(17, 5, 0, 62000)) && !acc_i(&v6(17, 62000)) && !acc_i(&v4(6, 5, 0, 80)));
        assert_eq!(
            run(&prog, &[]),
            None,
            "short packet: the kernel drops on out-of-bounds loads"
        );
    }
}

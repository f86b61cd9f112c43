//! AF_PACKET receive with a `TPACKET_V3` memory-mapped ring and a classic-BPF filter that admits
//! only TCP segments addressed to mpbond's subflow port range (IPv4 and IPv6).
//!
//! The socket is `SOCK_DGRAM`, so every frame starts at the network header whatever the link type
//! (Ethernet Wi-Fi, raw-IP WWAN modems). Outgoing frames are ignored (`PACKET_IGNORE_OUTGOING`).
//! The kernel hands over GRO-merged segments larger than the MTU and, on veth and some drivers,
//! packets whose checksum is not yet computed: [`RxFrame::csum_not_ready`] says so, and the parser
//! must then skip checksum verification for that packet.

use std::io;
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of one ring block: holds many frames, and at least one 64 KiB GRO super-segment.
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Nominal frame size (only used by the kernel to size `tp_frame_nr` for `TPACKET_V3`).
const FRAME_SIZE: u32 = 2048;
/// How long the kernel keeps a partly filled block before handing it over (milliseconds). Small,
/// so that a lone segment (a SYN/ACK, a pure ACK) is not held back.
const BLOCK_TIMEOUT_MS: u32 = 1;
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

// Offsets inside `struct tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
const BLOCK_STATUS_OFF: usize = 8;
const BLOCK_NUM_PKTS_OFF: usize = 12;
const BLOCK_FIRST_PKT_OFF: usize = 16;
// Offsets inside `struct tpacket3_hdr`.
const PKT_NEXT_OFF: usize = 0;
const PKT_SNAPLEN_OFF: usize = 12;
const PKT_LEN_OFF: usize = 16;
const PKT_STATUS_OFF: usize = 20;
const PKT_NET_OFF: usize = 26;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;

/// An AF_PACKET socket bound to one interface with a `TPACKET_V3` receive ring.
#[derive(Debug)]
pub struct PacketRx {
    fd: OwnedFd,
    ring: NonNull<u8>,
    ring_len: usize,
    block_nr: u32,
    /// The block to look at next.
    current: u32,
}

// SAFETY: the ring is a private mapping owned by this value; moving it to another thread is sound
// (only one thread uses a `PacketRx` at a time: it is not `Sync`).
unsafe impl Send for PacketRx {}

/// One received packet, borrowed from the ring.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The IP packet (from the network header), possibly a GRO super-segment.
    pub data: &'a [u8],
    /// The packet was longer than what was copied (cannot happen with our snap length, kept for
    /// the caller to count and drop).
    pub truncated: bool,
    /// The checksum has not been computed yet (veth, local offload): do not verify it.
    pub csum_not_ready: bool,
    /// The device verified the checksum.
    pub csum_valid: bool,
}

impl PacketRx {
    /// Opens a packet socket on interface `ifname`, with the port filter and a ring of `blocks`
    /// blocks of [`BLOCK_SIZE`] bytes. Non-blocking; poll the fd for readability.
    /// With `icmp`, ICMP and ICMPv6 messages are received too.
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
        let version: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            "PACKET_VERSION",
        )?;

        let blocks = blocks.max(2);
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: blocks,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * blocks,
            tp_retire_blk_tov: BLOCK_TIMEOUT_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
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
        let rx = PacketRx {
            fd,
            ring,
            ring_len,
            block_nr: blocks,
            current: 0,
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

    fn block_ptr(&self, index: u32) -> *mut u8 {
        // SAFETY: index < block_nr, so the offset stays inside the mapping.
        unsafe { self.ring.as_ptr().add(index as usize * BLOCK_SIZE as usize) }
    }

    fn block_status(&self, index: u32) -> &AtomicU32 {
        // SAFETY: the status word is a 4-byte aligned u32 inside the mapped block header, shared
        // with the kernel; AtomicU32 has the same layout as u32.
        unsafe { &*self.block_ptr(index).add(BLOCK_STATUS_OFF).cast::<AtomicU32>() }
    }

    /// Calls `f` for every packet of every block the kernel has handed over, at most `max_blocks`
    /// blocks (the cap on work per wake-up), and returns the number of blocks consumed. Each block
    /// is given back to the kernel after its packets were visited.
    pub fn drain(&mut self, max_blocks: u32, mut f: impl FnMut(RxFrame<'_>)) -> u32 {
        let mut blocks = 0;
        for _ in 0..max_blocks {
            let index = self.current;
            // Acquire: the kernel writes the frames, then publishes TP_STATUS_USER.
            if self.block_status(index).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let block = self.block_ptr(index);
            // SAFETY: the block belongs to user space until we store TP_STATUS_KERNEL; every read
            // below is bounds-checked against BLOCK_SIZE before it is made.
            unsafe {
                let num = read_u32(block, BLOCK_NUM_PKTS_OFF);
                let mut off = read_u32(block, BLOCK_FIRST_PKT_OFF) as usize;
                for _ in 0..num {
                    if off + 32 > BLOCK_SIZE as usize {
                        break;
                    }
                    let pkt = block.add(off);
                    let snaplen = read_u32(pkt, PKT_SNAPLEN_OFF) as usize;
                    let len = read_u32(pkt, PKT_LEN_OFF) as usize;
                    let status = read_u32(pkt, PKT_STATUS_OFF);
                    let net = usize::from(std::ptr::read_unaligned(pkt.add(PKT_NET_OFF).cast::<u16>()));
                    if off + net + snaplen <= BLOCK_SIZE as usize {
                        let data = std::slice::from_raw_parts(pkt.add(net), snaplen);
                        f(RxFrame {
                            data,
                            truncated: snaplen < len,
                            csum_not_ready: status & libc::TP_STATUS_CSUMNOTREADY != 0,
                            csum_valid: status & libc::TP_STATUS_CSUM_VALID != 0,
                        });
                    }
                    let next = read_u32(pkt, PKT_NEXT_OFF) as usize;
                    if next == 0 {
                        break;
                    }
                    off += next;
                }
            }
            // Release: our reads of the block happen before the kernel may reuse it.
            self.block_status(index)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.current = (index + 1) % self.block_nr;
            blocks += 1;
        }
        blocks
    }
}

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

//! The TUN device: IP packets without the packet-info header, non-blocking, its fd exposed for
//! mio. The device is not persistent: it disappears when the fd is closed, so a daemon that exits
//! (or is killed) leaves no TUN behind.
//!
//! We create it ourselves with `IFF_VNET_HDR` and turn on `TUNSETOFFLOAD` (`TUN_F_CSUM`,
//! `TUN_F_TSO4`, `TUN_F_TSO6`): every packet then goes with a `virtio_net_hdr`
//! ([`crate::wire::vnet`]), the host hands us TCP super-packets of up to 64 KiB whose checksum
//! it left partial, and we may write super-segments (the kernel cuts them, or takes them whole
//! as GRO would) with partial checksums. A kernel that refuses either ioctl gets the plain
//! device through the `tun-tap` crate (whose `TUNSETIFF` has fixed flags), packets as they are.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tun_tap::{Iface, Mode};

use crate::wire::vnet;

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`).
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

#[derive(Debug)]
enum Dev {
    /// `IFF_VNET_HDR` with checksum and TSO offload.
    Vnet { fd: OwnedFd, name: String },
    /// Through tun-tap, without a vnet header.
    Plain(Iface),
}

/// An open TUN device.
#[derive(Debug)]
pub struct Tun {
    dev: Dev,
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags (the rest of the union unused).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name` and makes its fd non-blocking: with the
    /// vnet header and offloads when the kernel allows, else plain.
    pub fn open(name: &str) -> io::Result<Tun> {
        match open_vnet(name) {
            Ok(t) => Ok(t),
            Err(e) => {
                tracing::info!("TUN without offloads (IFF_VNET_HDR/TUNSETOFFLOAD: {e})");
                Tun::open_plain(name)
            }
        }
    }

    /// The plain device (no vnet header, the kernel checksums and cuts everything).
    pub fn open_plain(name: &str) -> io::Result<Tun> {
        let iface = Iface::without_packet_info(name, Mode::Tun)?;
        set_nonblocking(iface.as_raw_fd())?;
        check_name(iface.name(), name)?;
        Ok(Tun {
            dev: Dev::Plain(iface),
        })
    }

    /// Device name.
    pub fn name(&self) -> &str {
        match &self.dev {
            Dev::Vnet { name, .. } => name,
            Dev::Plain(i) => i.name(),
        }
    }

    /// Whether packets go with a `virtio_net_hdr` (and the offloads are on).
    pub fn vnet(&self) -> bool {
        matches!(self.dev, Dev::Vnet { .. })
    }

    /// Reads one packet into `buf`'s spare capacity (it is cleared first; the packet is cut at
    /// its capacity) and returns the vnet header (all zero on a plain device); `WouldBlock` when
    /// none is queued.
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> io::Result<vnet::VnetHdr> {
        buf.clear();
        let mut hdr = [0u8; vnet::LEN];
        let spare = buf.spare_capacity_mut();
        let data = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        let (iov, cnt) = match self.dev {
            Dev::Vnet { .. } => (
                [
                    libc::iovec {
                        iov_base: hdr.as_mut_ptr().cast(),
                        iov_len: hdr.len(),
                    },
                    data,
                ],
                2,
            ),
            Dev::Plain(_) => ([data, data], 1),
        };
        // SAFETY: every iovec points into memory we own and may write (the header array, the
        // vector's spare capacity) for its whole length; readv writes at most that much.
        let n = unsafe { libc::readv(self.as_raw_fd(), iov.as_ptr(), cnt) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let skip = if cnt == 2 { vnet::LEN } else { 0 };
        let len = n.saturating_sub(skip).min(buf.capacity());
        // SAFETY: the kernel initialised the first `len` bytes of the spare capacity.
        unsafe { buf.set_len(len) };
        Ok(vnet::VnetHdr::decode(&hdr).unwrap_or_default())
    }

    /// Writes one packet; on a vnet device after `hdr` (`None`: a plain header, the packet's
    /// checksums complete). A plain device ignores `hdr`: the caller must not ask it for
    /// offloads.
    pub fn send_with(&self, hdr: Option<&vnet::VnetHdr>, packet: &[u8]) -> io::Result<usize> {
        match &self.dev {
            Dev::Plain(i) => i.send(packet),
            Dev::Vnet { fd, .. } => {
                let h = hdr.copied().unwrap_or_default().encode();
                let iov = [
                    libc::iovec {
                        iov_base: h.as_ptr().cast_mut().cast(),
                        iov_len: h.len(),
                    },
                    libc::iovec {
                        iov_base: packet.as_ptr().cast_mut().cast(),
                        iov_len: packet.len(),
                    },
                ];
                // SAFETY: both iovecs point to live memory of their length; writev only reads.
                let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) };
                let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
                Ok(n.saturating_sub(vnet::LEN))
            }
        }
    }

    /// Writes one packet with complete checksums.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.send_with(None, packet)
    }
}

fn open_vnet(name: &str) -> io::Result<Tun> {
    if name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    // SAFETY: a NUL-terminated literal path; the returned fd is checked before use.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` lays out (40 bytes).
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(offloads)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let got: Vec<u8> = req
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let got = String::from_utf8_lossy(&got).into_owned();
    check_name(&got, name)?;
    Ok(Tun {
        dev: Dev::Vnet { fd, name: got },
    })
}

fn check_name(got: &str, want: &str) -> io::Result<()> {
    if got != want {
        return Err(io::Error::other(format!(
            "the kernel named the TUN {got:?} instead of {want:?}"
        )));
    }
    Ok(())
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        match &self.dev {
            Dev::Vnet { fd, .. } => fd.as_raw_fd(),
            Dev::Plain(i) => i.as_raw_fd(),
        }
    }
}

/// Sets `O_NONBLOCK` on `fd` (tun-tap's own setter needs its tokio feature, which pulls in an old
/// async stack we do not use).
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

//! The TUN device, through the `tun-tap` crate: IP packets without the packet-info header,
//! non-blocking, its fd exposed for mio. The device is not persistent: it disappears when the fd
//! is closed, so a daemon that exits (or is killed) leaves no TUN behind.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_tap::{Iface, Mode};

/// An open TUN device.
#[derive(Debug)]
pub struct Tun {
    iface: Iface,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name` and makes its fd non-blocking.
    pub fn open(name: &str) -> io::Result<Tun> {
        let iface = Iface::without_packet_info(name, Mode::Tun)?;
        set_nonblocking(iface.as_raw_fd())?;
        if iface.name() != name {
            return Err(io::Error::other(format!(
                "the kernel named the TUN {:?} instead of {name:?}",
                iface.name()
            )));
        }
        Ok(Tun { iface })
    }

    /// Device name.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// Reads one packet; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.iface.recv(buf)
    }

    /// Writes one packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.iface.send(packet)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
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

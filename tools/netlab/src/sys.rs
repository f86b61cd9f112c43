//! The only `unsafe` in netlab: thin wrappers over Linux calls that std and socket2 do not offer
//! (setns, AF_PACKET sockets with recvmmsg/sendmmsg, ppoll, MPTCP_INFO).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// `SOL_MPTCP` from `linux/socket.h`.
const SOL_MPTCP: libc::c_int = 284;
/// `MPTCP_INFO` from `linux/mptcp.h`.
const MPTCP_INFO: libc::c_int = 1;
/// `MPTCP_INFO_FLAG_FALLBACK` from `linux/mptcp.h`.
const MPTCP_INFO_FLAG_FALLBACK: u32 = 1;
/// `PACKET_IGNORE_OUTGOING` from `linux/if_packet.h` (Linux 4.20).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends SIGTERM to process `pid`.
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) with a plain pid and signal number has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the network namespace `fd` refers to.
pub fn setns_net(fd: &impl AsFd) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call (borrowed); setns only reads it
    // and changes the calling thread's network namespace, which is what the caller asked for.
    let r = unsafe { libc::setns(fd.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread at real-time priority (`SCHED_FIFO`) until dropped, then back to the
/// policy it had: for a sender whose pacing must not depend on how busy the machine is.
#[derive(Debug)]
pub struct RealtimeGuard {
    policy: libc::c_int,
    param: libc::sched_param,
    /// Not `Send`: the policy is the calling thread's, restored on that thread.
    _thread: std::marker::PhantomData<*const ()>,
}

/// The `SCHED_FIFO` priority [`RealtimeGuard`] asks for (low among real-time ones).
const REALTIME_PRIORITY: libc::c_int = 10;

impl RealtimeGuard {
    /// Raises the calling thread to `SCHED_FIFO`; `None` if not allowed (not root).
    pub fn enter() -> Option<RealtimeGuard> {
        // SAFETY: sched_getscheduler(0) reads the calling thread's policy; no pointers.
        let policy = unsafe { libc::sched_getscheduler(0) };
        if policy < 0 {
            return None;
        }
        // SAFETY: sched_param is plain data, for which all zeroes is a valid value.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        if unsafe { libc::sched_getparam(0, &mut param) } != 0 {
            return None;
        }
        let fifo = libc::sched_param {
            sched_priority: REALTIME_PRIORITY,
        };
        // SAFETY: pid 0 is the calling thread; `fifo` outlives the call.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) };
        (r == 0).then_some(RealtimeGuard {
            policy,
            param,
            _thread: std::marker::PhantomData,
        })
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        // SAFETY: pid 0 is the calling thread (the guard is not Send: it stays on it); `param`
        // outlives the call.
        unsafe { libc::sched_setscheduler(0, self.policy, &self.param) };
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: forever). Returns the number of
/// ready descriptors; EINTR counts as zero ready.
pub fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd of the given length; `ts_ptr`
    // is null or points at a timespec that lives until the call returns; no signal mask is passed.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(0)
    } else {
        Err(e)
    }
}

/// What `MPTCP_INFO` says about an MPTCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MptcpInfo {
    /// Subflows beyond the initial one (`mptcpi_subflows`).
    pub extra_subflows: u8,
    /// The connection fell back to plain TCP (`MPTCP_INFO_FLAG_FALLBACK`).
    pub fallback: bool,
}

/// Reads `MPTCP_INFO` from `fd`. `Ok(None)` when the socket is not an MPTCP socket or is a
/// fallback socket the kernel answers for as plain TCP.
pub fn mptcp_info(fd: &impl AsFd) -> io::Result<Option<MptcpInfo>> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and `len` is a valid socklen_t the kernel updates.
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            SOL_MPTCP,
            MPTCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOPROTOOPT | libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    if (len as usize) < 12 {
        return Ok(None);
    }
    // struct mptcp_info: six __u8 fields, then __u32 mptcpi_flags at offset 8.
    let flags = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
    Ok(Some(MptcpInfo {
        extra_subflows: buf[0],
        fallback: flags & MPTCP_INFO_FLAG_FALLBACK != 0,
    }))
}

/// A raw `AF_PACKET` socket bound to one interface, non-blocking, ignoring its own transmissions.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl PacketSocket {
    /// Opens a socket on `ifname` (in the calling thread's network namespace).
    pub fn open(ifname: &str) -> io::Result<Self> {
        let cname =
            std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto.into(),
            )
        })?;
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        set_int(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, one)?;
        // Large buffers so bursts at line rate are not dropped while frames wait for their time.
        // SO_*BUFFORCE needs CAP_NET_ADMIN; fall back silently to the capped variant.
        let size: libc::c_int = 16 << 20;
        if set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
            set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, size)?;
        }
        if set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
            set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, size)?;
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(Self { fd })
    }

    /// The descriptor, for polling.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Receives up to `bufs.len()` frames; `lens[i]` gets frame i's length (frames longer than
    /// their buffer are reported with their real length so the caller can drop them). Returns
    /// the number received; 0 when nothing is waiting.
    pub fn recv_batch(&self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        let n = bufs.len().min(lens.len()).min(64);
        let mut iovs: [libc::iovec; 64] =
            // SAFETY: iovec is plain old data; every used entry is overwritten below.
            unsafe { std::mem::zeroed() };
        // SAFETY: mmsghdr is plain old data; every used entry is filled below.
        let mut hdrs: [libc::mmsghdr; 64] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec describing a live, exclusively borrowed buffer
        // of the stated length; `n` headers are initialised; no timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let r = r as usize;
        for i in 0..r {
            lens[i] = hdrs[i].msg_len as usize;
        }
        Ok(r)
    }

    /// Sends `frames` in order; returns how many the kernel took (0 when its queue is full).
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(64);
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: iovec is plain old data; every used entry is overwritten below.
        let mut iovs: [libc::iovec; 64] = unsafe { std::mem::zeroed() };
        // SAFETY: mmsghdr is plain old data; every used entry is filled below.
        let mut hdrs: [libc::mmsghdr; 64] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: frames[i].as_ptr() as *mut libc::c_void,
                iov_len: frames[i].len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec describing a live buffer the kernel only reads;
        // the socket is bound, so no destination address is needed.
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

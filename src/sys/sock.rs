//! Socket options and calls the safe crates do not cover, for `mpbond server` (the RFC 8803
//! converter): TCP Fast Open on the kernel MPTCP listener, the destination's SYN/ACK options from
//! `TCP_INFO`, the ICMP error behind a failed dial (`IP_RECVERR` + `MSG_ERRQUEUE`), `splice(2)`
//! through pipes, and `RLIMIT_NOFILE`; and for the control sockets, the peer's credentials
//! (`SO_PEERCRED`, `SO_PEERGROUPS`) and group lookup.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `IPPROTO_MPTCP`: the kernel's MPTCP socket protocol.
pub const IPPROTO_MPTCP: i32 = libc::IPPROTO_MPTCP;

fn set_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed; the fd is borrowed, so open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A receive buffer of `bytes` for a socket that takes bursts (a UDP listener many laptops
/// send to, a packet socket): `SO_RCVBUFFORCE` where permitted (`CAP_NET_ADMIN`; past
/// `net.core.rmem_max`), else `SO_RCVBUF` (the kernel caps it at `rmem_max`).
pub fn grow_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want)
        .or_else(|_| set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want))
}

/// `TCP_FASTOPEN` on a listener: accept data in SYNs, with at most `qlen` pending TFO requests
/// (RFC 7413 §4.2). Also needs bit 0x2 of the `net.ipv4.tcp_fastopen` sysctl.
pub fn set_tcp_fastopen(fd: BorrowedFd<'_>, qlen: u32) -> io::Result<()> {
    let q = libc::c_int::try_from(qlen).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, q)
}

/// `TCP_FASTOPEN_NO_COOKIE`: on a listener, accept SYN data without a TFO cookie (RFC 7413
/// §7.3; RFC 8803 §4.2 does not mandate the TFO option: the Convert Cookie TLV replaces it); on a
/// client, send data in the SYN without one.
pub fn set_tcp_fastopen_no_cookie(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_FASTOPEN_NO_COOKIE,
        libc::c_int::from(on),
    )
}

/// `TCP_FASTOPEN_CONNECT`: a client's `connect` returns at once and its first write goes in the SYN.
pub fn set_tcp_fastopen_connect(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 1)
}

/// `TCP_SYNCNT`: SYN retransmissions before a connect gives up.
pub fn set_tcp_syncnt(fd: BorrowedFd<'_>, count: u8) -> io::Result<()> {
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_SYNCNT,
        libc::c_int::from(count.max(1)),
    )
}

/// `IP_RECVERR` / `IPV6_RECVERR`: queue ICMP errors on the socket's error queue so that
/// [`icmp_error`] can read their type and code.
pub fn set_recverr(fd: BorrowedFd<'_>, v6: bool) -> io::Result<()> {
    if v6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    }
}

/// An ICMP or ICMPv6 error read from a socket's error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMPv6 (else ICMP).
    pub v6: bool,
    /// The ICMP type.
    pub icmp_type: u8,
    /// The ICMP code.
    pub code: u8,
    /// The errno the kernel derived from it.
    pub errno: i32,
}

/// Reads the first ICMP error from the error queue of `fd` (with [`set_recverr`] set), if any.
pub fn icmp_error(fd: BorrowedFd<'_>) -> Option<IcmpError> {
    let mut control = [0u64; 64];
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below points into buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` describes valid, writable buffers; MSG_ERRQUEUE never blocks.
    let rc = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if rc < 0 {
        return None;
    }
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points to a header inside the control buffer.
        let (level, ty) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        let v4 = level == libc::IPPROTO_IP && ty == libc::IP_RECVERR;
        let v6 = level == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR;
        if v4 || v6 {
            // SAFETY: for IP(V6)_RECVERR the data is a `sock_extended_err`; read unaligned.
            let ee: libc::sock_extended_err =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            let icmp = if v6 {
                libc::SO_EE_ORIGIN_ICMP6
            } else {
                libc::SO_EE_ORIGIN_ICMP
            };
            if ee.ee_origin == icmp {
                return Some(IcmpError {
                    v6,
                    icmp_type: ee.ee_type,
                    code: ee.ee_code,
                    errno: i32::try_from(ee.ee_errno).unwrap_or(0),
                });
            }
        }
        // SAFETY: as above; NXTHDR returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    None
}

/// What `TCP_INFO` tells about the options a connected TCP socket negotiated with its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// The peer sent SACK-permitted (RFC 2018).
    pub sack: bool,
    /// Timestamps are in use (RFC 7323).
    pub timestamps: bool,
    /// The peer's window scale shift, if window scaling is in use (RFC 7323).
    pub peer_wscale: Option<u8>,
    /// The MSS this side sends with (the peer's MSS clamped by the path MTU, timestamps deducted).
    pub snd_mss: u32,
    /// The socket's TCP state (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
}

/// `getsockopt(TCP_INFO)`.
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    // SAFETY: tcp_info is plain data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // include/uapi/linux/tcp.h: TCPI_OPT_TIMESTAMPS 1, TCPI_OPT_SACK 2, TCPI_OPT_WSCALE 4.
    // `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4`: on little-endian ABIs the first-declared
    // bitfield is the low nibble; on big-endian ones the high nibble.
    let opts = info.tcpi_options;
    Ok(TcpInfo {
        sack: opts & 2 != 0,
        timestamps: opts & 1 != 0,
        peer_wscale: (opts & 4 != 0).then_some(if cfg!(target_endian = "little") {
            info.tcpi_snd_rcv_wscale & 0x0f
        } else {
            info.tcpi_snd_rcv_wscale >> 4
        }),
        snd_mss: info.tcpi_snd_mss,
        state: info.tcpi_state,
    })
}

/// Whether the kernel MPTCP connection on `fd` is established at the MPTCP level: the peer's key
/// arrived (the MP_CAPABLE third ACK, `MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED`). A socket that is
/// not MPTCP (or fell back to TCP, or a kernel without `MPTCP_INFO`) counts as established.
///
/// Why: Linux (seen on 6.18) keeps the bytes written to an MPTCP socket accepted with TCP Fast
/// Open before the third ACK in its send queue and sends them only on a later write; a Convert
/// reply written then (the converter dials at once) never leaves. Plain TCP sends it at once.
pub fn mptcp_established(fd: BorrowedFd<'_>) -> bool {
    /// `SOL_MPTCP` / `MPTCP_INFO` (include/uapi/linux/mptcp.h).
    const SOL_MPTCP: libc::c_int = 284;
    const MPTCP_INFO: libc::c_int = 1;
    const REMOTE_KEY_RECEIVED: u32 = 1 << 1;
    // struct mptcp_info: six u8 counters, then `__u32 mptcpi_flags` at offset 8.
    let mut info = [0u32; 4];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_MPTCP,
            MPTCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    rc != 0 || len < 12 || info[2] & REMOTE_KEY_RECEIVED != 0
}

/// Who is at the other end of a Unix socket: user, primary group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary groups (empty where the kernel cannot tell, before Linux 4.13).
    pub groups: Vec<u32>,
}

/// `SO_PEERCRED` and `SO_PEERGROUPS` of a connected Unix socket.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        match rc {
            0 => {
                groups.truncate(n);
                break;
            }
            // ERANGE: `len` says how much room the list needs.
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && n > groups.len() => {
                groups.resize(n, 0);
            }
            _ => {
                groups.clear();
                break;
            }
        }
    }
    Ok(PeerCred {
        uid: cred.uid,
        gid: cred.gid,
        groups,
    })
}

/// The id of group `name` (`getgrnam_r`: /etc/group or whatever NSS is configured), if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: plain data; zeroed is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` holds the strings `grp` points into.
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `F_SETPIPE_SZ`; returns the capacity the kernel granted.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl with an integer argument on an open descriptor.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// `splice(2)` up to `len` bytes from `from` to `to` (one of them a pipe), moving pages instead
/// of copying where the kernel can. `Ok(0)`: end of file on `from`. The pipe side never blocks
/// (`SPLICE_F_NONBLOCK`); a socket side blocks unless the socket is non-blocking itself.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets are allowed (both are streams); the fds are borrowed, so open.
    let rc = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Raises `RLIMIT_NOFILE` to at least `want` descriptors (the hard limit too, which needs
/// `CAP_SYS_RESOURCE`; without it, the soft limit goes up to the hard one). Returns the soft limit now.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid rlimit to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if cur.rlim_cur >= want {
        return Ok(cur.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: cur.rlim_max.max(want),
    };
    // SAFETY: `raised` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    let soft = libc::rlimit {
        rlim_cur: cur.rlim_max,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: `soft` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        return Ok(cur.rlim_max);
    }
    Err(io::Error::last_os_error())
}

/// Switches the process to `uid`/`gid` (no supplementary groups), for a server started as root
/// without systemd's `DynamicUser=`. Call before spawning threads.
pub fn drop_to_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setgroups with a zero-length list; then setgid/setuid with plain integers.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsFd;

    #[test]
    fn splice_moves_bytes_through_a_pipe() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        // SPLICE_F_NONBLOCK covers the pipe only: the socket must be non-blocking itself.
        b.set_nonblocking(true).unwrap();
        let (r, w) = pipe().unwrap();
        assert!(set_pipe_size(w.as_fd(), 1 << 16).unwrap() >= 1 << 16);
        a.write_all(b"through the kernel").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let n = splice(b.as_fd(), w.as_fd(), 1 << 16).unwrap();
        assert_eq!(n, 18);
        let mut out = [0u8; 32];
        let mut rf = std::fs::File::from(r);
        assert_eq!(rf.read(&mut out).unwrap(), 18);
        assert_eq!(&out[..18], b"through the kernel");
        // Nothing more to read: WouldBlock, not a block.
        let e = splice(b.as_fd(), w.as_fd(), 1 << 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(splice(b.as_fd(), w.as_fd(), 1 << 16).unwrap(), 0, "EOF");
        let info = tcp_info(b.as_fd()).unwrap();
        assert!(info.snd_mss > 0);
        assert!(icmp_error(b.as_fd()).is_none());
    }
}

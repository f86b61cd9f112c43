//! Batched datagram I/O: `sendmmsg(2)`.

use std::io;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Sends `packets[i]` to `addrs[i]` for each `i` in one system call (at most 64 per call, the rest
/// is left for the caller). Returns how many were sent.
pub fn sendmmsg(fd: RawFd, packets: &[&[u8]], addrs: &[SockAddr]) -> io::Result<usize> {
    const MAX: usize = 64;
    let n = packets.len().min(addrs.len()).min(MAX);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero iovec and mmsghdr are valid values (null pointers, zero lengths).
    let mut iov: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec {
            iov_base: packets[i].as_ptr().cast_mut().cast(),
            iov_len: packets[i].len(),
        };
        msgs[i].msg_hdr.msg_name = addrs[i].as_ptr().cast_mut().cast();
        msgs[i].msg_hdr.msg_namelen = addrs[i].len();
        msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs[..n]` point to `iov[..n]` and to addresses and buffers borrowed for the whole
    // call; the kernel only reads them (and writes msg_len).
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn sends_a_batch_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket2::SockAddr::from(rx.local_addr().unwrap());
        let pkts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let refs: Vec<&[u8]> = pkts.iter().map(|p| p.as_slice()).collect();
        let addrs = vec![to; 5];
        assert_eq!(super::sendmmsg(tx.as_raw_fd(), &refs, &addrs).unwrap(), 5);
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &pkts[usize::from(i)][..]);
        }
    }
}

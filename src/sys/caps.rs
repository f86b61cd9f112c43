//! Dropping privileges: once the routing is in place, the daemon keeps only `CAP_NET_ADMIN`
//! (routes, rules, nft, fwmark) and `CAP_NET_RAW` (AF_PACKET rings, raw sockets, binding sockets
//! to an interface), in its effective, permitted and bounding sets, with `no_new_privs`. The
//! systemd unit restricts the same set from outside; this holds for a plain `sudo mpbond up` too.
//!
//! Capabilities are per thread in Linux: call this before spawning the threads that must inherit
//! the reduced set.

use std::io;

/// `CAP_NET_ADMIN`.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`.
pub const CAP_NET_RAW: u32 = 13;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Keeps only the capabilities in `keep` for the calling thread (and the threads and programs it
/// starts afterwards).
pub fn keep_only(keep: &[u32]) -> io::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: a capability this kernel does not know; nothing to drop.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    let mut data = [CapData::default(); 2];
    for &cap in keep {
        let word = (cap / 32) as usize;
        if let Some(d) = data.get_mut(word) {
            d.effective |= 1 << (cap % 32);
            d.permitted |= 1 << (cap % 32);
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and data are valid, properly laid out (_LINUX_CAPABILITY_VERSION_3 takes two
    // data structs), and live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's effective capability mask (from `/proc/thread-self/status`).
pub fn effective() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::other("no CapEff in /proc/thread-self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_only_the_network_capabilities() {
        if effective().unwrap_or(0) & (1 << CAP_NET_ADMIN) == 0 {
            return; // not privileged: nothing to drop
        }
        // Capabilities are per thread: this leaves the other tests' threads as they are.
        let t = std::thread::spawn(|| {
            keep_only(&[CAP_NET_ADMIN, CAP_NET_RAW]).unwrap();
            let eff = effective().unwrap();
            // A raw socket still opens; a privileged operation outside the set fails.
            let raw = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::ICMPV4),
            );
            // SAFETY: plain syscall; changing the hostname needs CAP_SYS_ADMIN, which is gone.
            let rc = unsafe { libc::sethostname(c"x".as_ptr(), 0) };
            (eff, raw.is_ok(), rc)
        });
        let (eff, raw_ok, rc) = t.join().unwrap();
        assert_eq!(eff, (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW));
        assert!(raw_ok);
        assert_eq!(rc, -1);
    }
}

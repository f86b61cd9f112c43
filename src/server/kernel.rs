//! What the converter asks of the kernel: an MPTCP listener with TCP Fast Open (no TFO cookie:
//! the Convert Cookie TLV authenticates, RFC 8803 §4.2), the `net.ipv4.tcp_fastopen` server bit,
//! and MPTCP limits that accept the laptop's MP_JOINs.
//!
//! Measured on Linux 6.18: an `IPPROTO_MPTCP` listener honours `TCP_FASTOPEN` (queue length) and
//! the per-socket `TCP_FASTOPEN_NO_COOKIE`; the SYN's data is accepted only when
//! `net.ipv4.tcp_fastopen` (per network namespace) has bit 0x2 (server enable). Bit 0x200 (no
//! cookie for every listener) is needed only on kernels that refuse the per-socket option.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::Command;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::sock;

/// The sysctl holding the TCP Fast Open bits.
pub const TFO_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fastopen";
/// `net.ipv4.tcp_fastopen` bit: server side enabled.
pub const TFO_SERVER: u32 = 0x2;
/// `net.ipv4.tcp_fastopen` bit: no cookie needed on any listener.
pub const TFO_SERVER_NO_COOKIE: u32 = 0x200;
/// Pending TFO requests a listener holds (RFC 7413 §5.1 bounds them against SYN floods).
pub const TFO_QUEUE: u32 = 4096;
/// Subflows per MPTCP connection the converter accepts (the laptop joins one per extra path).
pub const WANT_SUBFLOWS: u32 = 2;

/// How a listener came up.
#[derive(Debug)]
pub struct Listener {
    /// The socket (non-blocking, listening).
    pub socket: Socket,
    /// The address bound.
    pub addr: SocketAddr,
    /// Whether the per-socket no-cookie option was accepted.
    pub no_cookie: bool,
}

/// Binds a kernel MPTCP listener on `addr` with TCP Fast Open, backlog `backlog`; with
/// `reuse_port`, one of a `SO_REUSEPORT` group (the kernel spreads new connections over the
/// group's listeners by their 4-tuple; MP_JOINs find their connection by its token, whichever
/// listener they reach).
pub fn listen(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<Listener> {
    let domain = Domain::for_address(addr);
    let socket =
        Socket::new(domain, Type::STREAM, Some(Protocol::from(sock::IPPROTO_MPTCP))).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) || e.raw_os_error() == Some(libc::ENOPROTOOPT)
            {
                io::Error::new(
                    e.kind(),
                    "the kernel has no MPTCP (sysctl net.mptcp.enabled=1, Linux ≥ 5.6)",
                )
            } else {
                e
            }
        })?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // 0.0.0.0 and [::] can then both be listed.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    // The options go on before listen(): the kernel sizes the TFO queue there.
    sock::set_tcp_fastopen(socket.as_fd(), TFO_QUEUE)?;
    let no_cookie = sock::set_tcp_fastopen_no_cookie(socket.as_fd(), true).is_ok();
    socket.listen(backlog)?;
    let addr = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))?;
    Ok(Listener {
        socket,
        addr,
        no_cookie,
    })
}

/// Reads `net.ipv4.tcp_fastopen`.
pub fn tfo_bits() -> io::Result<u32> {
    let s = std::fs::read_to_string(TFO_SYSCTL)?;
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{TFO_SYSCTL}: {e}")))
}

/// Makes sure `net.ipv4.tcp_fastopen` has `bits`, setting them if this process may. Logs what
/// it found and did; returns whether the bits are now set.
pub fn ensure_tfo_bits(bits: u32) -> bool {
    let cur = match tfo_bits() {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("cannot read net.ipv4.tcp_fastopen ({e}): TCP Fast Open state unknown");
            return false;
        }
    };
    if cur & bits == bits {
        tracing::info!("net.ipv4.tcp_fastopen = {cur:#x}: the server side of TCP Fast Open is on");
        return true;
    }
    let want = cur | bits;
    match std::fs::write(TFO_SYSCTL, format!("{want}\n")) {
        Ok(()) => {
            tracing::info!(
                "set net.ipv4.tcp_fastopen = {want:#x} (was {cur:#x}): Convert requests ride in the SYN"
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                "net.ipv4.tcp_fastopen = {cur:#x} lacks bit {bits:#x} and cannot be set ({e}): the kernel \
                 ignores data in SYNs, so every request costs one more round trip; run \
                 `sysctl -w net.ipv4.tcp_fastopen={want:#x}` as root (mpbond-server.service does it in ExecStartPre)"
            );
            false
        }
    }
}

/// The `subflows` and `add_addr_accepted` MPTCP limits of this network namespace (`ip mptcp limits`).
pub fn mptcp_limits() -> io::Result<(u32, u32)> {
    let out = Command::new("ip").args(["mptcp", "limits", "show"]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    parse_limits(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| io::Error::other("cannot parse `ip mptcp limits show`"))
}

fn parse_limits(text: &str) -> Option<(u32, u32)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let find = |name: &str| {
        words
            .windows(2)
            .find(|w| w[0] == name)
            .and_then(|w| w[1].parse().ok())
    };
    Some((find("subflows")?, find("add_addr_accepted").unwrap_or(0)))
}

/// Makes sure the MPTCP `subflows` limit is at least [`WANT_SUBFLOWS`] (the converter then
/// accepts the laptop's MP_JOIN on its second path), raising it if this process may (it needs
/// `CAP_NET_ADMIN`). Logs the outcome; returns whether the limit suffices.
pub fn ensure_mptcp_subflows() -> bool {
    match mptcp_limits() {
        Ok((subflows, _)) if subflows >= WANT_SUBFLOWS => {
            tracing::info!("MPTCP limits: {subflows} subflows per connection: MP_JOINs are accepted");
            true
        }
        Ok((subflows, _)) => {
            let set = Command::new("ip")
                .args(["mptcp", "limits", "set", "subflows", &WANT_SUBFLOWS.to_string()])
                .output();
            match set {
                Ok(o) if o.status.success() => {
                    tracing::info!("set the MPTCP subflow limit to {WANT_SUBFLOWS} (was {subflows})");
                    true
                }
                Ok(o) => {
                    warn_subflows(subflows, String::from_utf8_lossy(&o.stderr).trim());
                    false
                }
                Err(e) => {
                    warn_subflows(subflows, &e.to_string());
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!(
                "cannot read the MPTCP limits ({e}); the laptop's second subflow needs \
                 `ip mptcp limits set subflows {WANT_SUBFLOWS}`"
            );
            false
        }
    }
}

fn warn_subflows(subflows: u32, why: &str) {
    tracing::warn!(
        "MPTCP subflow limit is {subflows} and cannot be raised ({why}): the laptop's MP_JOINs are refused \
         and its connections use one path; run `ip mptcp limits set subflows {WANT_SUBFLOWS}` as root"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_mptcp_limits() {
        assert_eq!(parse_limits("add_addr_accepted 0 subflows 2 \n"), Some((2, 0)));
        assert_eq!(parse_limits("subflows 8 add_addr_accepted 8"), Some((8, 8)));
        assert_eq!(parse_limits("garbage"), None);
    }

    #[test]
    fn an_mptcp_listener_on_loopback() {
        // Skipped where the kernel has no MPTCP (the error says so).
        match listen("127.0.0.1:0".parse().unwrap(), 16, false) {
            Ok(l) => {
                assert_eq!(l.addr.ip().to_string(), "127.0.0.1");
                assert_ne!(l.addr.port(), 0);
            }
            Err(e) => assert!(e.to_string().contains("MPTCP"), "{e}"),
        }
    }
}

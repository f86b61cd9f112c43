//! The downstream dial: a plain kernel TCP connect to the destination, non-blocking, and what
//! its outcome means for the Error TLV (RFC 8803 §6.2.8).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use mio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::convert::converter::RefusalCause;
use crate::sys::sock;

/// SYN retransmissions toward a destination. RFC 8803 §9.3: the converter "SHOULD only
/// retransmit a SYN to a Server after having received a retransmitted SYN from the
/// corresponding Client"; the kernel cannot tie the two, so retransmissions are few and the dial
/// timeout ends the attempt.
pub const SYN_RETRIES: u8 = 3;

/// Starts a connect to `dst`; the socket becomes writable when it completes or fails.
pub fn start(dst: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    // No Nagle on a relay (see `accepted` in the event loop).
    s.set_tcp_nodelay(true)?;
    sock::set_tcp_syncnt(s.as_fd(), SYN_RETRIES)?;
    sock::set_recverr(s.as_fd(), dst.is_ipv6())?;
    match s.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(s)))
}

/// A dial that failed, as the Error TLV reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialFailure {
    /// The refusal cause (its `error_code()` is the Error TLV code).
    pub cause: RefusalCause,
    /// The Error TLV value: the ICMP code for Destination Unreachable, else empty.
    pub icmp_code: Option<u8>,
    /// The errno behind it.
    pub errno: i32,
}

impl DialFailure {
    /// The Error TLV value bytes.
    pub fn value(&self) -> Vec<u8> {
        self.icmp_code.map(|c| vec![c]).unwrap_or_default()
    }
}

/// What a failed connect's error means. `icmp` is the ICMP error the socket's error queue held.
///
/// - An RST from the destination (ECONNREFUSED without ICMP): Connection Reset (96), "the final
///   destination responded with an RST segment".
/// - An ICMP hard error (RFC 5461 Table 1: destination, host, port, network unreachable,
///   administratively prohibited): Destination Unreachable (97), whose Value "MUST echo the Code
///   field of the received ICMP message".
/// - No answer (ETIMEDOUT, or the converter's dial timeout) and local forwarding failures:
///   Network Failure (65), which the converter "MUST send ... when it experiences forwarding
///   issues to proxy a connection".
pub fn classify(err: &io::Error, icmp: Option<sock::IcmpError>) -> DialFailure {
    let errno = err.raw_os_error().unwrap_or(0);
    if let Some(i) = icmp {
        return DialFailure {
            cause: RefusalCause::DestUnreachable,
            icmp_code: Some(i.code),
            errno,
        };
    }
    let (cause, icmp_code) = match errno {
        libc::ECONNREFUSED | libc::ECONNRESET => (RefusalCause::DestRefused, None),
        // No route from the converter itself (no ICMP came back): the codes a router would have
        // sent, net unreachable (0) and host unreachable (1).
        libc::ENETUNREACH => (RefusalCause::DestUnreachable, Some(0)),
        libc::EHOSTUNREACH => (RefusalCause::DestUnreachable, Some(1)),
        _ => (RefusalCause::DestTimeout, None),
    };
    DialFailure {
        cause,
        icmp_code,
        errno,
    }
}

/// The failure of a dial whose socket reported an error (or that failed at once).
pub fn failure(s: &TcpStream, err: &io::Error) -> DialFailure {
    classify(err, sock::icmp_error(s.as_fd()))
}

/// The destination's SYN/ACK options as far as `TCP_INFO` tells them, laid out as Linux writes
/// them (MSS, SACK-permitted, timestamps, NOP + window scale), for the Extended TCP Header TLV
/// (RFC 8803 §6.2.6). The kernel does not give user space the SYN/ACK itself: the MSS is the
/// send MSS (the peer's, path-clamped) with the timestamp option added back, and the timestamp
/// values are zero (only the option's presence is known).
pub fn synack_options(s: &TcpStream) -> Vec<u8> {
    let Ok(info) = sock::tcp_info(s.as_fd()) else {
        return Vec::new();
    };
    let mut o = Vec::with_capacity(20);
    let mss = info.snd_mss + if info.timestamps { 12 } else { 0 };
    if let Ok(mss) = u16::try_from(mss)
        && mss > 0
    {
        o.extend_from_slice(&[2, 4]);
        o.extend_from_slice(&mss.to_be_bytes());
    }
    match (info.sack, info.timestamps) {
        (true, true) => {
            o.extend_from_slice(&[4, 2, 8, 10]);
            o.extend_from_slice(&[0; 8]);
        }
        (false, true) => {
            o.extend_from_slice(&[1, 1, 8, 10]);
            o.extend_from_slice(&[0; 8]);
        }
        (true, false) => o.extend_from_slice(&[1, 1, 4, 2]),
        (false, false) => {}
    }
    if let Some(ws) = info.peer_wscale {
        o.extend_from_slice(&[1, 3, 3, ws]);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn failures_map_to_the_rfc_codes() {
        let f = classify(&err(libc::ECONNREFUSED), None);
        assert_eq!((f.cause, f.value()), (RefusalCause::DestRefused, vec![]));
        let icmp = sock::IcmpError {
            v6: false,
            icmp_type: 3,
            code: 13,
            errno: libc::EHOSTUNREACH,
        };
        let f = classify(&err(libc::EHOSTUNREACH), Some(icmp));
        assert_eq!((f.cause, f.value()), (RefusalCause::DestUnreachable, vec![13]));
        // Port unreachable comes as ECONNREFUSED, but with the ICMP message queued.
        let icmp = sock::IcmpError { code: 3, ..icmp };
        let f = classify(&err(libc::ECONNREFUSED), Some(icmp));
        assert_eq!((f.cause, f.value()), (RefusalCause::DestUnreachable, vec![3]));
        assert_eq!(classify(&err(libc::ENETUNREACH), None).value(), vec![0]);
        let f = classify(&err(libc::ETIMEDOUT), None);
        assert_eq!(f.cause, RefusalCause::DestTimeout);
        assert_eq!(
            f.cause.error_code(),
            crate::convert::msg::ErrorCode::NetworkFailure
        );
    }

    #[test]
    fn a_dial_on_loopback_reports_its_options() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = start(l.local_addr().unwrap()).unwrap();
        let (_a, _) = l.accept().unwrap();
        // Connected once the SYN/ACK came back (loopback: at once, but poll a little).
        let mut o = Vec::new();
        for _ in 0..100 {
            if s.peer_addr().is_ok() {
                o = synack_options(&s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(&o[..2], &[2, 4], "MSS first: {o:?}");
        assert_eq!(o.len() % 4, 0, "{o:?}");
        assert!(
            o.windows(2).any(|w| w == [8, 10]),
            "timestamps on loopback: {o:?}"
        );
    }
}

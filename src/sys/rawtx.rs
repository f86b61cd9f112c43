//! Raw IP transmit on one physical interface: `SOCK_RAW`/`IPPROTO_RAW` sockets (the IP header is
//! ours: `IP_HDRINCL`, `IPV6_HDRINCL`), bound to the interface and carrying mpbond's fwmark so the
//! policy rules route them to the physical path and never back into the TUN. Batches go out with
//! one `sendmmsg(2)`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Most packets sent by one `sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// Raw IPv4 and IPv6 senders for one interface.
#[derive(Debug)]
pub struct RawTx {
    v4: Socket,
    v6: Option<Socket>,
}

/// Why a packet could not be handed to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The buffer is not an IPv4 or IPv6 packet with a full header.
    #[error("not an IP packet")]
    NotIp,
    /// IPv6 is disabled on this interface or machine.
    #[error("IPv6 is not available")]
    NoIpv6,
    /// The kernel refused the packet (no route, too big, buffer full: `WouldBlock`).
    #[error("send failed")]
    Io(#[from] io::Error),
}

impl RawTx {
    /// Opens the senders on interface `ifname` with fwmark `mark`. IPv6 is optional: a machine
    /// without IPv6 still gets a working IPv4 sender.
    pub fn open(ifname: &str, mark: u32) -> io::Result<RawTx> {
        let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
        v4.set_header_included_v4(true)?;
        Self::common(&v4, ifname, mark)?;
        let v6 = match Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))) {
            Ok(s) => {
                s.set_header_included_v6(true)?;
                Self::common(&s, ifname, mark)?;
                Some(s)
            }
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => None,
            Err(e) => return Err(e),
        };
        Ok(RawTx { v4, v6 })
    }

    fn common(s: &Socket, ifname: &str, mark: u32) -> io::Result<()> {
        s.bind_device(Some(ifname.as_bytes()))?;
        s.set_mark(mark)?;
        s.set_nonblocking(true)?;
        s.set_send_buffer_size(4 << 20)?;
        Ok(())
    }

    /// Sends one IP packet (header included).
    pub fn send(&self, packet: &[u8]) -> Result<(), TxError> {
        let (sock, addr) = self.route(packet)?;
        sock.send_to(packet, &addr)?;
        Ok(())
    }

    /// Sends a batch of IP packets of one family-mix; returns how many were accepted. Stops at the
    /// first error (`WouldBlock` when the socket buffer is full): the caller keeps the rest.
    pub fn send_batch(&self, packets: &[&[u8]]) -> Result<usize, TxError> {
        let mut sent = 0;
        while sent < packets.len() {
            // Group consecutive packets of the same family into one sendmmsg.
            let first = packets[sent];
            let (sock, _) = self.route(first)?;
            let fam = first.first().map(|b| b >> 4);
            let run = packets[sent..]
                .iter()
                .take(MAX_BATCH)
                .take_while(|p| p.first().map(|b| b >> 4) == fam)
                .count();
            let mut addrs = Vec::with_capacity(run);
            for p in &packets[sent..sent + run] {
                addrs.push(self.route(p)?.1);
            }
            let n = super::mmsg::sendmmsg(sock.as_raw_fd(), &packets[sent..sent + run], &addrs);
            match n {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(TxError::Io(e)),
            }
        }
        Ok(sent)
    }

    fn route(&self, packet: &[u8]) -> Result<(&Socket, SockAddr), TxError> {
        match destination(packet).ok_or(TxError::NotIp)? {
            IpAddr::V4(a) => Ok((&self.v4, SockAddr::from(SocketAddr::V4(SocketAddrV4::new(a, 0))))),
            IpAddr::V6(a) => {
                let s = self.v6.as_ref().ok_or(TxError::NoIpv6)?;
                Ok((s, SockAddr::from(SocketAddr::V6(SocketAddrV6::new(a, 0, 0, 0)))))
            }
        }
    }
}

/// The destination address of an IP packet, if it has a whole header.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_of_packets() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[198, 18, 0, 9]);
        assert_eq!(destination(&v4), Some("198.18.0.9".parse().unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24] = 0xfd;
        v6[39] = 1;
        assert_eq!(destination(&v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(destination(&v4[..10]), None);
        assert_eq!(destination(&[0x50; 40]), None);
        assert_eq!(destination(&[]), None);
    }
}

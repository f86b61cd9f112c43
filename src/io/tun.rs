//! The TUN thread: reads the packets the host routes into mpbond. Until the forwarding engine
//! arrives it counts them (packets, bytes, malformed), which `status` reports.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::Worker;
use crate::sys::tun::Tun;

const TUN: Token = Token(1);
/// Packets handled per wake-up before polling again (boringtun `MAX_ITR`).
const MAX_PER_WAKE: usize = 1024;

/// Counters of the TUN thread.
#[derive(Debug, Default)]
pub struct TunCounters {
    /// Packets read.
    pub rx_packets: AtomicU64,
    /// Bytes read.
    pub rx_bytes: AtomicU64,
    /// Packets written.
    pub tx_packets: AtomicU64,
    /// Bytes written.
    pub tx_bytes: AtomicU64,
    /// Packets read that were not valid IPv4 or IPv6 (dropped).
    pub rx_invalid: AtomicU64,
    /// Valid packets read carrying TCP.
    pub rx_tcp: AtomicU64,
    /// Valid packets read carrying UDP.
    pub rx_udp: AtomicU64,
    /// Valid packets read carrying ICMP or ICMPv6.
    pub rx_icmp: AtomicU64,
}

/// Starts the TUN thread; it owns `tun` (the device disappears when the thread ends).
pub fn spawn(tun: Tun, counters: Arc<TunCounters>) -> io::Result<Worker> {
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&tun.as_raw_fd()), TUN, Interest::READABLE)?;
    Worker::spawn("mpbond-tun", poll, move |poll, stop| {
        run(poll, &stop, &tun, &counters);
    })
}

fn run(mut poll: Poll, stop: &AtomicBool, tun: &Tun, counters: &TunCounters) {
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0u8; 65536];
    let mut more = false;
    while !stop.load(Ordering::SeqCst) {
        // After a capped batch, look again at once instead of waiting for a new edge.
        let timeout = more.then_some(Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!("tun poll failed: {e}");
            return;
        }
        more = false;
        for n in 0..MAX_PER_WAKE {
            match tun.recv(&mut buf) {
                Ok(len) => count(counters, &buf[..len]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("reading the TUN failed: {e}");
                    return;
                }
            }
            more = n + 1 == MAX_PER_WAKE;
        }
    }
}

/// Counts one packet read from the TUN; a packet that is not valid IP is counted as invalid.
pub fn count(counters: &TunCounters, packet: &[u8]) {
    let Ok(ip) = etherparse::IpSlice::from_slice(packet) else {
        counters.rx_invalid.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.rx_packets.fetch_add(1, Ordering::Relaxed);
    counters
        .rx_bytes
        .fetch_add(packet.len() as u64, Ordering::Relaxed);
    let proto = match ip.payload().ip_number {
        etherparse::IpNumber::TCP => &counters.rx_tcp,
        etherparse::IpNumber::UDP => &counters.rx_udp,
        etherparse::IpNumber::ICMP | etherparse::IpNumber::IPV6_ICMP => &counters.rx_icmp,
        _ => return,
    };
    proto.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_protocol_and_drops_garbage() {
        let c = TunCounters::default();
        let udp = etherparse::PacketBuilder::ipv4([100, 127, 77, 1], [198, 19, 0, 11], 64).udp(5000, 9);
        let mut buf = Vec::new();
        udp.write(&mut buf, b"hi").unwrap();
        count(&c, &buf);
        let tcp = etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(1, 2, 3, 1000);
        let mut buf6 = Vec::new();
        tcp.write(&mut buf6, &[]).unwrap();
        count(&c, &buf6);
        count(&c, &[0x45, 0, 0]);
        count(&c, &[]);
        assert_eq!(c.rx_packets.load(Ordering::Relaxed), 2);
        assert_eq!(
            c.rx_bytes.load(Ordering::Relaxed),
            (buf.len() + buf6.len()) as u64
        );
        assert_eq!(c.rx_udp.load(Ordering::Relaxed), 1);
        assert_eq!(c.rx_tcp.load(Ordering::Relaxed), 1);
        assert_eq!(c.rx_icmp.load(Ordering::Relaxed), 0);
        assert_eq!(c.rx_invalid.load(Ordering::Relaxed), 2);
    }
}

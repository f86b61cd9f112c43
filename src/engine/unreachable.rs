//! ICMP destination-unreachable errors, both ways: those the engine sends the host (no
//! interface for a destination, a UDP port refused), and those the network sends about one of
//! our upstream connections, passed on to the host while its connection is still opening.

use std::net::{IpAddr, SocketAddr};

use super::converters::ConverterFailure;
use super::{Dest, DropReason, Engine};
use crate::time::Instant;
use crate::wire::icmp::{self, Unreachable};

impl Engine {
    /// Queues for the host (`to`) a "host unreachable" error from `from` about `original`, the
    /// packet it sent.
    pub(super) fn queue_unreachable(&mut self, from: IpAddr, to: IpAddr, original: &[u8]) {
        self.queue_icmp_error(from, to, Unreachable::Host, original, 1400);
    }

    /// Queues for the host (`host`) a "port unreachable" error from `remote`, quoting an empty
    /// datagram of the flow between them.
    pub(super) fn queue_port_unreachable(&mut self, host: SocketAddr, remote: SocketAddr) {
        let mut quoted = [0u8; 64];
        let Ok(n) = crate::wire::udp::write_packet(&mut quoted, host, remote, &[]) else {
            return;
        };
        self.queue_icmp_error(remote.ip(), host.ip(), Unreachable::Port, &quoted[..n], 200);
    }

    /// Queues an error in a buffer of `room` bytes (the quote is cut to fit the RFC's bound).
    fn queue_icmp_error(
        &mut self,
        from: IpAddr,
        to: IpAddr,
        what: Unreachable,
        original: &[u8],
        room: usize,
    ) {
        let Some(buf) = self.to_host.push(Dest::Tun, room) else {
            return self.drop(DropReason::QueueFull);
        };
        match icmp::write_dest_unreachable(buf, from, to, what, original) {
            Ok(n) => {
                self.to_host.truncate_last(n);
                self.counters.unreachable_sent += 1;
            }
            Err(_) => self.to_host.discard_last(),
        }
    }

    /// An unreachable error about one of our upstream connections (`quote`: the start of the
    /// packet we sent). While the connection is still opening, the host's SYN is answered with
    /// the same error, so the application sees what it would without mpbond (RFC 1122
    /// §4.2.3.9: a hard error in SYN-SENT aborts the connection; once established, such errors
    /// are left to the retransmission timeout).
    pub(super) fn icmp_unreachable(&mut self, now: Instant, quote: &[u8]) {
        let Some((src, dst)) = icmp::quoted_tcp(quote) else {
            return self.drop(DropReason::BadIcmp);
        };
        let Some(id) = self.table.by_port(src.port(), dst) else {
            return self.drop(DropReason::NoFlow);
        };
        let Some(f) = self.table.get_mut(id) else { return };
        if f.upstream.remote() != dst || f.upstream.local() != src || f.host.is_some() {
            return;
        }
        if let Some((idx, _)) = f.upstream.converter() {
            // The converter cannot be reached: the flow goes direct, the host sees nothing.
            return self.converter_failed(now, id, idx, ConverterFailure::Unreachable);
        }
        let Some(syn) = f.syn.take() else { return };
        f.upstream.abort();
        let (host, dst) = (f.host_addr, f.dst);
        // The host's SYN as it sent it (addresses, ports, sequence number) is the quote.
        let mut quoted = [0u8; 128];
        let fields = crate::wire::SegmentFields {
            seq: syn.seq,
            flags: crate::wire::TcpFlags::SYN,
            window: syn.window,
            ..Default::default()
        };
        if let Ok(n) = crate::wire::write_tcp_packet(&mut quoted, host, dst, &fields, &[], &[], 0) {
            self.queue_unreachable(dst.ip(), host.ip(), &quoted[..n]);
        }
        self.counters.tcp_unreachable += 1;
        self.table.mark_dirty(id);
    }
}

//! TCP admission: a TCP segment the host sent goes to its flow; a new SYN becomes a new flow
//! with its upstream connection (of the kind the settings and the network call for), or is
//! answered with a reset or an ICMP error when it cannot be relayed. Also the resets the engine
//! sends the host.

use std::net::{IpAddr, SocketAddr};

use super::counters::tcp_reason;
use super::flow::TcpFlow;
use super::upstream::{Dial, Upstream, Via};
use super::{Dest, DropReason, Engine, mss_for};
use crate::mptcp::FallbackCause;
use crate::tcp;
use crate::time::Instant;
use crate::wire::SegmentHeader;
use crate::wire::tcp::{TcpHeaderView, verify_checksum};

impl Engine {
    /// A TCP segment `seg` from the host (`pkt`: the whole packet, quoted in an ICMP error).
    pub(super) fn tun_tcp(&mut self, now: Instant, pkt: &[u8], src: IpAddr, dst: IpAddr, seg: &[u8]) {
        let view = match TcpHeaderView::new(seg) {
            Ok(v) => v,
            Err(_) => return self.drop(DropReason::BadTcpHeader),
        };
        if !verify_checksum(src, dst, seg) {
            return self.drop(DropReason::BadTcpChecksum);
        }
        let hdr = match view.summary() {
            Ok(h) => h,
            Err(e) => return self.drop(tcp_reason(e)),
        };
        let (src, dst) = (
            SocketAddr::new(src, hdr.src_port),
            SocketAddr::new(dst, hdr.dst_port),
        );
        let payload = view.payload();
        let f = hdr.flags;
        let new_syn = f.syn() && !f.ack() && !f.rst();
        if let Some(id) = self.table.by_host(src, dst) {
            let Some(flow) = self.table.get_mut(id) else {
                return;
            };
            // RFC 9293 §3.10.7.4 (TIME-WAIT) / RFC 6191: the host may reuse the 4-tuple while our
            // host side lingers in TIME-WAIT; its new SYN starts a new flow.
            let lingering = flow
                .host
                .as_ref()
                .is_some_and(|h| matches!(h.state(), tcp::State::TimeWait | tcp::State::Closed));
            if !(new_syn && lingering) {
                flow.handle_host_segment(now, &hdr, payload);
                return self.table.mark_dirty(id);
            }
            self.remove_flow(id);
        }
        if !new_syn {
            // RFC 9293 §3.10.7.1: a segment for no connection draws a reset (none for a RST).
            return self.queue_rst(src, dst, &hdr, payload.len());
        }
        self.admit(now, pkt, src, dst, hdr, payload.len());
    }

    /// A new flow for the host's SYN `syn` from `src` to `dst`.
    fn admit(
        &mut self,
        now: Instant,
        pkt: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
        syn: SegmentHeader,
        len: usize,
    ) {
        self.expire_unresponsive(now);
        let Some(iface) = self.ifaces.choose(dst.ip()) else {
            self.drop(DropReason::NoInterface);
            return self.queue_unreachable(dst.ip(), src.ip(), pkt);
        };
        if self.table.len() >= self.cfg.max_flows {
            self.drop(DropReason::TableFull);
            return self.queue_rst(src, dst, &syn, len);
        }
        let Some(port) = self.table.alloc_port(dst) else {
            self.drop(DropReason::TableFull);
            return self.queue_rst(src, dst, &syn, len);
        };
        let Some(local_ip) = self.ifaces.local_addr(iface, dst.ip()) else {
            return self.drop(DropReason::NoInterface);
        };
        let mut tcp = self.cfg.upstream_tcp;
        tcp.mss = mss_for(self.cfg.iface_mtu, dst.ip());
        let (via, token) = match self.cfg.mptcp {
            Some(cfg) => {
                let Some((key, token)) = self.table.new_key() else {
                    self.drop(DropReason::TableFull);
                    return self.queue_rst(src, dst, &syn, len);
                };
                let paths = self.ifaces.local_paths(dst.ip(), self.backup_cellular());
                // A network where MP_CAPABLE SYNs went unanswered starts as plain TCP.
                let hostile = self.ifaces.is_hostile(iface, dst.ip(), now);
                if hostile {
                    self.counters.fallback(FallbackCause::Disabled);
                }
                let offer = !hostile;
                (
                    Via::Mptcp {
                        cfg,
                        key,
                        paths,
                        offer,
                    },
                    Some(token),
                )
            }
            None => (Via::Tcp, None),
        };
        let dial = Dial {
            now,
            dst,
            iface,
            local: SocketAddr::new(local_ip, port),
            tcp,
            isn_key: &self.cfg.isn_key,
        };
        let upstream = Upstream::connect(&dial, via);
        let id = self
            .table
            .insert(TcpFlow::new(src, dst, syn, upstream), port, token);
        self.counters.tcp_flows += 1;
        tracing::debug!(flow = id, %src, %dst, iface, port, "new TCP flow");
    }

    /// Queues for the host the reset answering its segment `hdr` (with `payload_len` bytes)
    /// from `src` to `dst` (none for a reset).
    pub(super) fn queue_rst(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        hdr: &SegmentHeader,
        payload_len: usize,
    ) {
        let Some(buf) = self.to_host.push(Dest::Tun, 80) else {
            return self.drop(DropReason::QueueFull);
        };
        match tcp::write_rst_reply(buf, src, dst, hdr, payload_len) {
            Ok(Some(n)) => self.to_host.truncate_last(n),
            _ => self.to_host.discard_last(),
        }
    }
}

//! TCP admission: a TCP segment the host sent goes to its flow; a new SYN becomes a new flow
//! with its upstream connection (of the kind the settings and the network call for), or is
//! answered with a reset or an ICMP error when it cannot be relayed. Also the resets the engine
//! sends the host.

use std::net::{IpAddr, SocketAddr};

use super::converters::ConverterFailure;
use super::counters::tcp_reason;
use super::flow::TcpFlow;
use super::table::FlowId;
use super::upstream::{Dial, Upstream, Via};
use super::{Dest, DropReason, Engine, mss_for};
use crate::convert::client;
use crate::mptcp::FallbackCause;
use crate::mptcp::crypto::Token;
use crate::tcp;
use crate::time::Instant;
use crate::wire::SegmentHeader;
use crate::wire::tcp::{TcpHeaderView, verify_checksum};

/// Most packets taken from an upstream connection that is replaced (see `flush_upstream`).
const FLUSH_MAX: usize = 16;

/// Why a new upstream connection could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialError {
    /// No interface can reach the address.
    NoInterface,
    /// The interface has no address of the family.
    NoAddress,
    /// No local port or MPTCP token left.
    Full,
}

impl Engine {
    /// A TCP segment `seg` from the host (`pkt`: the whole packet, quoted in an ICMP error);
    /// its checksum is verified when `verify`.
    pub(super) fn tun_tcp(
        &mut self,
        now: Instant,
        pkt: &[u8],
        (src, dst): (IpAddr, IpAddr),
        seg: &[u8],
        verify: bool,
    ) {
        let view = match TcpHeaderView::new(seg) {
            Ok(v) => v,
            Err(_) => return self.drop(DropReason::BadTcpHeader),
        };
        if verify && !verify_checksum(src, dst, seg) {
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
            // host side lingers in TIME-WAIT; its new SYN starts a new flow if it is not an old
            // duplicate (newer timestamp, or sequence number past RCV.NXT). Any other SYN goes
            // to the lingering connection, which answers it as TIME-WAIT does.
            let reopen = new_syn && flow.host.as_ref().is_some_and(|h| h.accepts_new_syn(&hdr));
            if !reopen {
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

    /// A new flow for the host's SYN `syn` from `src` to `dst`: through a converter when the
    /// destination is not known to speak MPTCP and one is up, else direct.
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
        if self.table.len() >= self.cfg.max_flows {
            self.drop(DropReason::TableFull);
            return self.queue_rst(src, dst, &syn, len);
        }
        let converter = self.pick_converter(now, dst);
        let (upstream, port, token) = match self.dial(now, dst, converter, &syn) {
            Ok(d) => d,
            Err(DialError::NoInterface) => {
                self.drop(DropReason::NoInterface);
                return self.queue_unreachable(dst.ip(), src.ip(), pkt);
            }
            Err(DialError::NoAddress) => return self.drop(DropReason::NoInterface),
            Err(DialError::Full) => {
                self.drop(DropReason::TableFull);
                return self.queue_rst(src, dst, &syn, len);
            }
        };
        let (iface, remote) = (upstream.iface(), upstream.remote());
        if upstream.converter().is_some() {
            self.counters.tcp_via_converter += 1;
        }
        let id = self
            .table
            .insert(TcpFlow::new(src, dst, syn, upstream), port, token);
        self.counters.tcp_flows += 1;
        tracing::debug!(flow = id, %src, %dst, %remote, iface, port, "new TCP flow");
    }

    /// The converter a new flow to `dst` goes through, if any (a converter needs MPTCP, and a
    /// wall clock for the cookie's timestamp).
    fn pick_converter(&mut self, now: Instant, dst: SocketAddr) -> Option<(usize, SocketAddr)> {
        if self.cfg.mptcp.is_none() || self.cfg.converter.is_none() || self.unix_now(now).is_none() {
            return None;
        }
        self.converters.choose(now, dst)
    }

    /// A new upstream connection for the host's SYN `syn` to `dst`, through `converter` when
    /// given: the connection, its local port and its MPTCP token.
    pub(super) fn dial(
        &mut self,
        now: Instant,
        dst: SocketAddr,
        converter: Option<(usize, SocketAddr)>,
        syn: &SegmentHeader,
    ) -> Result<(Upstream, u16, Option<Token>), DialError> {
        // The subflows' peer: the converter, or the destination itself.
        let remote = converter.map_or(dst, |c| c.1);
        let iface = self.ifaces.choose(remote.ip()).ok_or(DialError::NoInterface)?;
        let port = self.table.alloc_port(remote).ok_or(DialError::Full)?;
        self.counters.ports_reused = self.table.reused_ports();
        let local_ip = self
            .ifaces
            .local_addr(iface, remote.ip())
            .ok_or(DialError::NoAddress)?;
        let mut tcp = self.cfg.upstream_tcp;
        tcp.mss = mss_for(self.cfg.iface_mtu, remote.ip());
        let (via, token) = match self.cfg.mptcp {
            Some(mut cfg) => {
                // A destination port of the `[redundant]` classes and ports: its small writes
                // that wait on a reply go on every subflow (RFC 8684 §3.3.6, `redundancy.rs`).
                cfg.redundant_interactive |= self.cfg.redundancy.flow(dst.port());
                let (key, token) = self.table.new_key().ok_or(DialError::Full)?;
                let paths = self.ifaces.local_paths(remote.ip(), self.backup_paths());
                let via = match converter.and_then(|(i, _)| Some((i, self.convert_request(now, dst, syn)?))) {
                    Some((converter, request)) => Via::Convert {
                        cfg,
                        key,
                        paths,
                        converter,
                        request,
                        early: self.converters.accepted_recently(now, converter, dst),
                    },
                    None => {
                        // A network where MP_CAPABLE SYNs went unanswered starts as plain TCP.
                        let hostile = self.ifaces.is_hostile(iface, dst.ip(), now);
                        if hostile {
                            self.counters.fallback(FallbackCause::Disabled);
                        }
                        Via::Mptcp {
                            cfg,
                            key,
                            paths,
                            offer: !hostile,
                        }
                    }
                };
                (via, Some(token))
            }
            None => (Via::Tcp, None),
        };
        let dial = Dial {
            now,
            dst: remote,
            iface,
            local: SocketAddr::new(local_ip, port),
            tcp,
            isn_key: &self.cfg.isn_key,
        };
        Ok((Upstream::connect(&dial, via), port, token))
    }

    /// The Convert request for a flow to `dst` whose host sent `syn`: the destination, the SYN
    /// options RFC 8803 §7 lets travel, and a fresh cookie (`None`: no key, clock or nonce).
    fn convert_request(&self, now: Instant, dst: SocketAddr, syn: &SegmentHeader) -> Option<Vec<u8>> {
        let key = &self.cfg.converter.as_ref()?.key;
        let unix_now = self.unix_now(now)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).ok()?;
        let mut options = Vec::new();
        if syn.options.sack_permitted {
            options.extend_from_slice(&[4, 2]);
        }
        if syn.options.timestamps.is_some() {
            options.extend_from_slice(&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        Some(client::connect_request(key, unix_now, nonce, dst, &options))
    }

    /// Converter `idx` failed flow `id` before the destination answered: mark it down and, if
    /// the host still waits for its SYN's answer, dial the destination directly instead.
    pub(super) fn converter_failed(&mut self, now: Instant, id: FlowId, idx: usize, why: ConverterFailure) {
        self.counters.converter_failed += 1;
        let Some(f) = self.table.get_mut(id) else { return };
        self.converters.failed(now, idx, why, f.dst);
        let Some(f) = self.table.get_mut(id) else { return };
        let (dst, Some(syn)) = (f.dst, f.syn) else { return };
        if f.host.is_some() {
            return;
        }
        match self.dial(now, dst, None, &syn) {
            Ok((upstream, port, token)) => {
                tracing::info!(flow = id, %dst, ?why, "converter failed: going direct");
                self.flush_upstream(now, id);
                self.table.replace_upstream(id, upstream, port, token);
            }
            Err(_) => {
                // Nothing to go direct with: the host's SYN is answered with a reset.
                if let Some(f) = self.table.get_mut(id) {
                    f.upstream.abort();
                    if let Some(syn) = f.syn.take() {
                        let (src, dst) = (f.host_addr, f.dst);
                        self.queue_rst(src, dst, &syn, 0);
                    }
                }
            }
        }
    }

    /// Aborts the upstream of flow `id`, which is about to be replaced, and queues what it
    /// still has to send: the reset of the connection to a converter (RFC 8803 §6.2.8: "Upon reception of an
    /// Error TLV, a Client MUST reset the associated connection"; so too after a malformed
    /// reply), which would otherwise be dropped with it and leave the converter holding the
    /// connection until its own timeouts.
    fn flush_upstream(&mut self, now: Instant, id: FlowId) {
        let Some(f) = self.table.get_mut(id) else { return };
        // Aborted already when it reported the failure; not when an ICMP error did.
        f.upstream.abort();
        // An aborted connection has one reset per subflow to send, at most.
        for _ in 0..FLUSH_MAX {
            let Some((iface, t)) = f.upstream.poll_transmit(now, &mut self.scratch) else {
                return;
            };
            let n = t.len;
            let Some(buf) = self.to_host.push(Dest::Iface(iface), n) else {
                return self.counters.drop(DropReason::QueueFull);
            };
            buf.copy_from_slice(&self.scratch[..n]);
        }
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

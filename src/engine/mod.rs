//! The forwarding engine (sans-IO, STYLE.md point 1): the flow table, the relay between each host
//! TCP flow and its upstream connection, UDP and ICMP echo sessions, and the choice of interface.
//!
//! Driven by the engine thread (`io::engine`) with explicit times; it owns no socket, thread or
//! clock. Call order for each wake-up:
//!
//! 1. input: [`Engine::handle_tun_packet`] (a packet the host sent into the TUN),
//!    [`Engine::handle_iface_packet`] (a segment received on a physical interface at one of our
//!    subflow ports), [`Engine::handle_datagram`] / [`Engine::handle_icmp`] (a UDP payload or an
//!    ICMP message the socket thread received), [`Engine::handle_iface_state`] (netlink: an
//!    interface became usable or not), [`Engine::handle_timeout`] once
//!    [`Engine::poll_timeout`] has passed;
//! 2. output: [`Engine::poll_transmit`] until `None` (whole IP packets, each tagged with its
//!    destination: the TUN or an interface), then [`Engine::poll_datagram`] until `None` (what the
//!    socket thread must send, move or close);
//! 3. sleep until [`Engine::poll_timeout`] or the next input.
//!
//! Every packet from the TUN or an interface is untrusted: a bad one is counted by
//! [`DropReason`] and dropped, never a panic.
//!
//! This file owns the [`Engine`] itself: its state, the dispatch of each input to the part that
//! handles it, and the `poll_*` loop. The parts, each in its own file:
//!
//! | file | owns |
//! |---|---|
//! | `types.rs` | the public types and [`Config`] |
//! | `counters.rs` | [`Counters`], [`DropReason`], the fallback causes |
//! | `queue.rs` | the bounded queues of packets and datagrams made inside the engine |
//! | `ifaces.rs` | interface policy: choice, local addresses, hostile networks, unresponsive hold |
//! | `table.rs` | the flow table: maps, tokens, ports, dirty queue, timer heap |
//! | `admission.rs` | a host TCP packet: to its flow, or a new flow and its upstream, or a reset |
//! | `converters.rs` | which RFC 8803 converter a flow uses, which are down, what goes direct |
//! | `flow.rs` | one flow's relay between its host side and its upstream |
//! | `upstream/` | the upstream kinds (plain TCP, MPTCP, via a converter) behind one dispatcher |
//! | `notes.rs` | what upstream connections report (counters, hostile networks, ports) |
//! | `datagram.rs` | the UDP / ICMP echo relay; `sessions.rs` its session table |
//! | `relayed.rs` | UDP sessions through a converter's datagram relay |
//! | `unreachable.rs` | ICMP errors both ways: to the host, and about our upstream connections |
//! | `failover.rs` | the failover records |
//! | `health.rs` | the read-only view of path health the DNS forwarder fails over on |

mod admission;
pub mod converters;
mod counters;
mod datagram;
mod failover;
mod flow;
mod health;
mod ifaces;
mod notes;
mod queue;
mod relayed;
mod sessions;
mod table;
mod types;
mod unreachable;
mod upstream;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use counters::{Counters, DropReason, FALLBACK_CAUSES};
pub use failover::{FailoverCause, FailoverRecord};
pub use flow::{Refusal, TcpFlow};
pub use relayed::Via;
pub use sessions::{DatagramKind, Session, SessionId};
pub use types::{
    CELLULAR, Config, ConverterSettings, DatagramAction, Dest, FlowInfo, IfaceId, IfacePolicy, IfaceState,
    Transmit, WIFI,
};
pub use upstream::{ANSWER_WITHIN, Note, REPLY_WITHIN, SubflowView, Upstream, UpstreamConn};

use crate::mptcp::PathId;
use crate::time::Instant;
use crate::wire::icmp::{self, PROTO_ICMP, PROTO_ICMPV6};
use crate::wire::ip::{self, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{TcpHeaderView, verify_checksum};
use counters::{ip_reason, tcp_reason};
use ifaces::Ifaces;
use queue::Queue;
use table::{FlowId, FlowTable};

/// The engine. See the module documentation for the call order.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    ifaces: Ifaces,
    table: FlowTable,
    failovers: failover::Failovers,
    sessions: sessions::Sessions,
    next_sweep: Option<Instant>,
    /// When relayed sessions' paths become suspect (copy-when-suspect sessions with an ack
    /// request outstanding): their recent datagrams then go on the other paths too.
    suspect_timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, SessionId)>>,
    to_host: Queue<Dest>,
    datagrams: Queue<DatagramAction>,
    scratch: Vec<u8>,
    counters: Counters,
    converters: converters::Converters,
    /// Wall-clock time (since the UNIX epoch) at an engine instant, for converter cookies.
    unix_at: Option<(Instant, Duration)>,
    /// Rate caps by interface id.
    caps: Vec<Option<crate::budget::RateCap>>,
    /// Handover mode's own bytes on each backup interface, by id ([`Engine::overhead`]).
    overhead: Vec<u64>,
}

/// How often idle datagram sessions are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Engine {
    /// A new engine with no usable interface yet.
    pub fn new(mut cfg: Config) -> Self {
        // The host side's MSS follows the TUN's MTU (IPv6 headers, the larger, assumed).
        cfg.host_tcp.mss = mss_for(cfg.tun_mtu, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        Engine {
            ifaces: Ifaces::new(&cfg.ifaces, cfg.hostile_ttl, cfg.unresponsive_hold),
            table: FlowTable::new(cfg.ports.clone(), &cfg.isn_key),
            failovers: failover::Failovers::default(),
            sessions: sessions::Sessions::default(),
            next_sweep: None,
            suspect_timers: std::collections::BinaryHeap::new(),
            to_host: Queue::new(cfg.queue_cap),
            datagrams: Queue::new(cfg.queue_cap),
            scratch: vec![0; 256 * 1024],
            counters: Counters::default(),
            converters: converters::Converters::new(cfg.converter.as_ref().map_or(&[][..], |c| &c.addrs[..])),
            unix_at: None,
            caps: cfg
                .rate_caps
                .iter()
                .map(|r| r.map(crate::budget::RateCap::new))
                .collect(),
            overhead: Vec::new(),
            cfg,
        }
    }

    /// The wall clock reads `unix` (since the UNIX epoch) at `now`; the engine thread says so
    /// now and then (converter cookies carry wall-clock timestamps; NTP may step the clock).
    pub fn set_unix_time(&mut self, now: Instant, unix: Duration) {
        self.unix_at = Some((now, unix));
    }

    /// The wall-clock time at `now`, if known.
    fn unix_now(&self, now: Instant) -> Option<Duration> {
        let (at, unix) = self.unix_at?;
        Some(unix + now.saturating_duration_since(at))
    }

    /// The converters, for status.
    pub fn converters(&self, now: Instant) -> Vec<converters::ConverterView> {
        self.converters.views(now)
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bytes without payload on each backup interface, by id (the sum is
    /// `cellular_overhead_bytes`): the daemon's budget counts them per day.
    pub fn overhead(&self) -> &[u64] {
        &self.overhead
    }

    /// Counts `len` bytes of handover mode's own cost on `iface`, a backup interface.
    fn count_overhead(&mut self, iface: IfaceId, len: usize) {
        let i = usize::from(iface);
        if self.overhead.len() <= i {
            self.overhead.resize(i + 1, 0);
        }
        self.overhead[i] += len as u64;
        self.counters.cellular_overhead_bytes += len as u64;
    }

    /// What the engine believes about `iface`.
    pub fn iface_state(&self, iface: IfaceId) -> Option<IfaceState> {
        self.ifaces.state(iface)
    }

    /// Number of TCP flows and of UDP/ICMP sessions.
    pub fn flow_counts(&self) -> (usize, usize) {
        (self.table.len(), self.sessions.len())
    }

    /// Every flow and session, for status.
    pub fn flows(&self) -> Vec<FlowInfo> {
        let mut v: Vec<FlowInfo> = self
            .table
            .iter()
            .map(|f| FlowInfo {
                protocol: "tcp",
                source: f.host_addr,
                destination: f.dst,
                upstream: f.upstream.kind(),
                converter: f.upstream.converter().map(|c| c.1),
                iface: f.upstream.iface(),
                local: Some(f.upstream.local()),
                state: f.upstream.state_name(),
                subflows: f.upstream.subflows(),
                srtt_us: f.upstream.srtt_us(),
                bytes_up: f.bytes_up,
                bytes_down: f.bytes_down,
            })
            .collect();
        v.extend(self.sessions.iter().map(|s| FlowInfo {
            protocol: match s.kind {
                DatagramKind::Udp => "udp",
                DatagramKind::IcmpEcho => "icmp",
            },
            source: s.host,
            destination: s.remote,
            upstream: if s.via.is_some() { "converter" } else { "socket" },
            converter: s.via.as_ref().map(|v| v.addr),
            iface: s.iface,
            local: None,
            state: "active".into(),
            subflows: Vec::new(),
            srtt_us: 0,
            bytes_up: s.up.1,
            bytes_down: s.down.1,
        }));
        v
    }

    /// The most recent failovers.
    pub fn failovers(&self) -> Vec<FailoverRecord> {
        self.failovers.records()
    }

    /// The interface new traffic to `dst` uses: the primary of highest priority usable with an
    /// address of the family and answering, else the next primary, else a backup (else one
    /// that stopped answering, rather than nothing); never a `never` interface.
    pub fn choose_iface(&self, dst: IpAddr) -> Option<IfaceId> {
        self.ifaces.choose(dst)
    }

    fn drop(&mut self, r: DropReason) {
        self.counters.drop(r);
    }

    /// Forgets a flow (its upstream connection, if still lingering, is dropped with it).
    fn remove_flow(&mut self, id: FlowId) {
        if self.table.remove(id).is_some() {
            self.failovers.forget(id);
        }
    }

    /// Backup interfaces are backup paths (handover mode).
    fn backup_paths(&self) -> bool {
        self.cfg
            .mptcp
            .is_some_and(|m| m.mode == crate::config::Mode::Handover)
    }

    /// An interface became usable or not, or its addresses changed. MPTCP connections drop
    /// their subflows on an interface that went (their data is reinjected on the others at
    /// once) and join it again when it returns; UDP/ICMP sessions move to the interface now
    /// preferred (to cellular when Wi-Fi goes, back when it returns).
    pub fn handle_iface_state(&mut self, now: Instant, iface: IfaceId, state: IfaceState) {
        let Some(was) = self.ifaces.set_state(iface, state) else {
            return;
        };
        tracing::info!(iface, usable = state.usable, v4 = ?state.v4, v6 = ?state.v6, "interface state");
        let went = was.usable && !state.usable;
        if went && self.ifaces.policy(iface).role == crate::config::IfaceRole::Primary {
            self.counters.failovers += 1;
        }
        let backup_paths = self.backup_paths();
        let mut affected = Vec::new();
        for id in self.table.ids() {
            let Some(f) = self.table.get_mut(id) else {
                continue;
            };
            // The subflows' peer (the destination, or its converter) decides the family.
            let dst = f.upstream.remote().ip();
            let on_iface = f.upstream.subflows().iter().any(|s| s.iface == iface);
            let Some(conn) = f.upstream.mptcp() else {
                continue;
            };
            if went {
                if on_iface {
                    affected.push(id);
                }
                conn.path_down(now, PathId(iface));
            } else if state.usable {
                match self.ifaces.path(iface, dst, backup_paths) {
                    Some(path) => {
                        conn.add_path(now, path);
                        conn.path_up(now, PathId(iface));
                    }
                    None => conn.path_down(now, PathId(iface)),
                }
            }
            self.table.mark_dirty(id);
        }
        if went {
            self.failovers
                .record(now, iface, FailoverCause::Unavailable, &affected);
        }
        self.move_sessions(now);
    }

    /// Sets the policy (role, priority) of `iface`, e.g. one that appeared after start; tell it
    /// before [`Self::handle_iface_state`] makes the interface usable. Connections already
    /// using the interface take the new role at once (a `never` one is dropped from them, with
    /// REMOVE_ADDR, RFC 8684 §3.4.2). Ignored beyond [`MAX_INTERFACES`](crate::config::MAX_INTERFACES).
    pub fn set_iface_policy(&mut self, now: Instant, iface: IfaceId, policy: IfacePolicy) {
        if self.ifaces.policy(iface) == policy || !self.ifaces.set_policy(iface, policy) {
            return;
        }
        tracing::info!(iface, role = %policy.role, priority = policy.priority, "interface policy");
        if !self.ifaces.state(iface).is_some_and(|s| s.usable) {
            return;
        }
        let backup_paths = self.backup_paths();
        for id in self.table.ids() {
            let Some(f) = self.table.get_mut(id) else {
                continue;
            };
            let dst = f.upstream.remote().ip();
            let Some(conn) = f.upstream.mptcp() else {
                continue;
            };
            match self.ifaces.path(iface, dst, backup_paths) {
                Some(path) => {
                    conn.add_path(now, path);
                    conn.set_path_backup(path.id, path.backup);
                }
                None => conn.path_down(now, PathId(iface)),
            }
            self.table.mark_dirty(id);
        }
        self.move_sessions(now);
    }

    /// A packet the host wrote into the TUN.
    pub fn handle_tun_packet(&mut self, now: Instant, pkt: &[u8]) {
        self.handle_tun_packet_checked(now, pkt, false);
    }

    /// [`Engine::handle_tun_packet`] for a packet whose TCP or UDP checksum the kernel left
    /// partial or verified (`checked`: the TUN's vnet header said `NEEDS_CSUM` or `DATA_VALID`),
    /// which is then not verified again. A TCP segment may be longer than the MSS we announced
    /// (the host's TSO): it is taken whole.
    pub fn handle_tun_packet_checked(&mut self, now: Instant, pkt: &[u8], checked: bool) {
        let ipv = match ip::parse(pkt) {
            Ok(i) => i,
            Err(e) => return self.drop(ip_reason(e)),
        };
        let Some(seg) = pkt.get(ipv.payload.clone()) else {
            return self.drop(DropReason::BadIpLength);
        };
        match (ipv.proto, ipv.src) {
            (PROTO_TCP, _) => self.tun_tcp(now, pkt, (ipv.src, ipv.dst), seg, !checked),
            (PROTO_UDP, _) => self.tun_udp(now, pkt, (ipv.src, ipv.dst), seg, !checked),
            (PROTO_ICMP, IpAddr::V4(_)) | (PROTO_ICMPV6, IpAddr::V6(_)) => {
                self.tun_icmp(now, ipv.src, ipv.dst, seg)
            }
            _ => self.drop(DropReason::UnsupportedProtocol),
        }
    }

    /// A packet received on interface `iface` (the BPF filter admits TCP to our port range).
    /// `csum_not_ready`: the kernel left the TCP checksum unfinished (local offload), so it
    /// cannot be verified.
    pub fn handle_iface_packet(&mut self, now: Instant, iface: IfaceId, pkt: &[u8], csum_not_ready: bool) {
        let ipv = match ip::parse(pkt) {
            Ok(i) => i,
            Err(e) => return self.drop(ip_reason(e)),
        };
        if ipv.proto != PROTO_TCP {
            return self.drop(DropReason::UnsupportedProtocol);
        }
        let Some(seg) = pkt.get(ipv.payload.clone()) else {
            return self.drop(DropReason::BadIpLength);
        };
        let view = match TcpHeaderView::new(seg) {
            Ok(v) => v,
            Err(_) => return self.drop(DropReason::BadTcpHeader),
        };
        if !csum_not_ready && !verify_checksum(ipv.src, ipv.dst, seg) {
            return self.drop(DropReason::BadTcpChecksum);
        }
        let hdr = match view.summary() {
            Ok(h) => h,
            Err(e) => return self.drop(tcp_reason(e)),
        };
        let remote = SocketAddr::new(ipv.src, hdr.src_port);
        let Some(id) = self.table.by_port(hdr.dst_port, remote) else {
            return self.drop(DropReason::NoFlow);
        };
        self.ifaces.heard(iface, now);
        // A segment without payload on a backup the flow's data does not use: handover mode's
        // own cost (a join, a probe's answer, a keep-alive, an ACK of a DATA_ACK-only exchange).
        // (The cheap checks first: the flow's active path is looked for only on a backup.)
        if view.payload().is_empty()
            && self.ifaces.is_backup(iface)
            && self.table.get(id).is_some_and(|f| f.upstream.iface() != iface)
        {
            self.count_overhead(iface, pkt.len());
        }
        let Some(f) = self.table.get_mut(id) else {
            return self.drop(DropReason::NoFlow);
        };
        let local = SocketAddr::new(ipv.dst, hdr.dst_port);
        f.upstream
            .handle_segment(now, iface, (local, remote), &hdr, view.payload());
        if !view.payload().is_empty() {
            self.failovers.moved(now, id, iface);
        }
        self.table.mark_dirty(id);
    }

    /// A UDP payload the socket of `session` received from its destination.
    pub fn handle_datagram(&mut self, now: Instant, session: SessionId, payload: &[u8]) {
        self.datagram_down(now, session, None, payload);
    }

    /// The same, received by the session's socket on `iface` (a session sending copies has one
    /// per path; only an answer on its own path keeps that path alive).
    pub fn handle_datagram_on(&mut self, now: Instant, session: SessionId, iface: IfaceId, payload: &[u8]) {
        self.datagram_down(now, session, Some(iface), payload);
    }

    /// The destination of UDP `session` answered "port unreachable" (the session's connected
    /// socket reported `ECONNREFUSED`): the host gets the same ICMP error, quoting a datagram of
    /// its flow, so its socket reports "connection refused" as without mpbond.
    pub fn handle_datagram_refused(&mut self, now: Instant, session: SessionId) {
        self.datagram_refused(now, session);
    }

    /// An ICMP/ICMPv6 message the raw socket of `iface` received from `from` (the message
    /// only, no IP header): an error about one of our upstream connections, or an echo reply.
    pub fn handle_icmp(&mut self, now: Instant, iface: IfaceId, from: IpAddr, msg: &[u8]) {
        // ICMPv6 checksums need our address for the pseudo-header; the kernel verified them
        // before the raw socket saw the message (RFC 4443 §2.3 is checked there).
        let Some(to_self) = self.ifaces.local_addr(iface, from) else {
            return self.drop(DropReason::NoInterface);
        };
        match icmp::parse_unreachable(from, to_self, msg, from.is_ipv4()) {
            Ok(Some(quote)) => self.icmp_unreachable(now, quote),
            Ok(None) => self.echo_reply(now, iface, from, to_self, msg),
            Err(_) => self.drop(DropReason::BadIcmpChecksum),
        }
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let suspect = self.suspect_timers.peek().map(|r| r.0.0);
        [self.table.poll_timeout(), self.next_sweep, suspect]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.table.pop_due(now) {
            if let Some(f) = self.table.get_mut(id) {
                f.handle_timeout(now);
            }
            self.table.mark_dirty(id);
        }
        while let Some(&std::cmp::Reverse((t, id))) = self.suspect_timers.peek()
            && t <= now
        {
            self.suspect_timers.pop();
            self.suspect_due(now, id);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.expire_sessions(now);
            self.next_sweep = (!self.sessions.is_empty()).then(|| now + SWEEP_INTERVAL);
        }
    }

    /// Writes the next packet due into `buf` (at least 65,536 bytes): a whole IP packet and
    /// where it goes.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            if let Some((dest, len)) = self.to_host.pop(buf) {
                return Some(Transmit::whole(dest, len));
            }
            let id = self.table.next_dirty()?;
            if self.table.begin_service(id) && !self.service(now, id) {
                // Refused (a reset for the host is queued) or gone.
                continue;
            }
            let Some(f) = self.table.get_mut(id) else {
                continue;
            };
            if let Some(t) = f.poll_transmit(now, buf) {
                // Handover mode's own cost: no payload, on a backup the flow's data does not
                // use (the cheap checks first: the active path is looked for only then).
                let overhead = match t.dest {
                    Dest::Iface(i) => {
                        self.ifaces.is_backup(i) && carries_no_data(&buf[..t.len]) && f.upstream.iface() != i
                    }
                    _ => false,
                };
                if let Dest::Iface(i) = t.dest {
                    if !self.rate_ok(now, i, t.len) {
                        continue;
                    }
                    if overhead {
                        self.count_overhead(i, t.len);
                    }
                }
                return Some(t);
            }
            // Done with this flow for now: its timer is re-armed, or it is removed.
            if self.table.finish_dirty(id) {
                self.remove_flow(id);
                tracing::debug!(flow = id, "TCP flow finished");
            }
        }
    }

    /// Sets the rate cap of `iface` (bytes/s; `None`: none), e.g. one that appeared after
    /// start, as [`Config::rate_caps`] does for those at start. Ignored beyond
    /// [`MAX_INTERFACES`](crate::config::MAX_INTERFACES).
    pub fn set_rate_cap(&mut self, iface: IfaceId, rate: Option<u64>) {
        let i = usize::from(iface);
        if i >= crate::config::MAX_INTERFACES {
            return;
        }
        if self.caps.len() <= i {
            self.caps.resize(i + 1, None);
        }
        self.caps[i] = rate.map(crate::budget::RateCap::new);
    }

    /// The rate cap of `iface` in bytes/s, if it has one.
    pub fn rate_cap(&self, iface: IfaceId) -> Option<u64> {
        self.caps
            .get(usize::from(iface))
            .copied()
            .flatten()
            .map(|c| c.rate())
    }

    /// Whether `len` bytes may go out of `iface` at `now` under its rate cap (else dropped,
    /// counted).
    fn rate_ok(&mut self, now: Instant, iface: IfaceId, len: usize) -> bool {
        let ok = match self.caps.get_mut(usize::from(iface)) {
            Some(Some(cap)) => cap.take(now, len),
            _ => true,
        };
        if !ok {
            self.drop(DropReason::RateCap);
        }
        ok
    }

    /// Relays flow `id`'s data and records what its upstream reported; false if the flow went
    /// or was refused (the host's SYN is answered with a reset).
    fn service(&mut self, now: Instant, id: FlowId) -> bool {
        let Some(f) = self.table.get_mut(id) else {
            return false;
        };
        let s = f.service(now, &self.cfg.host_tcp, &self.cfg.isn_key);
        let mut notes = Vec::new();
        while let Some(n) = f.upstream.poll_note() {
            notes.push(n);
        }
        self.counters.tcp_bytes_up += s.up;
        self.counters.tcp_bytes_down += s.down;
        for n in notes {
            self.handle_note(now, id, n);
        }
        let Some(f) = self.table.get_mut(id) else {
            return false;
        };
        if s.established {
            self.counters.tcp_established += 1;
        }
        let Some(why) = s.refused else {
            return true;
        };
        match why {
            Refusal::Reset => self.counters.tcp_refused += 1,
            Refusal::TimedOut => self.counters.tcp_timed_out += 1,
        }
        if let Some(syn) = f.syn.take() {
            let (src, dst) = (f.host_addr, f.dst);
            self.queue_rst(src, dst, &syn, 0);
        }
        false
    }

    /// The next action for the socket thread; a `Send` payload is written into `buf`.
    pub fn poll_datagram(&mut self, buf: &mut [u8]) -> Option<DatagramAction> {
        let (mut action, n) = self.datagrams.pop(buf)?;
        if let DatagramAction::Send { len, .. } = &mut action {
            *len = n;
        }
        Some(action)
    }
}

/// Whether the TCP segment in IP packet `pkt` carries no data (a handshake, an ACK, a probe).
fn carries_no_data(pkt: &[u8]) -> bool {
    let Ok(ipv) = ip::parse(pkt) else {
        return false;
    };
    pkt.get(ipv.payload)
        .and_then(|seg| TcpHeaderView::new(seg).ok())
        .is_some_and(|v| v.payload().is_empty())
}

/// The MSS of a path with this MTU toward `dst`'s family.
fn mss_for(mtu: u32, dst: IpAddr) -> u16 {
    let overhead = if dst.is_ipv4() { 40 } else { 60 };
    u16::try_from(mtu.saturating_sub(overhead).clamp(536, 65535 - 100)).unwrap_or(1220)
}

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

mod dgram;
mod failover;
mod flow;
mod upstream;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

pub use dgram::{DatagramKind, Session, SessionId};
pub use failover::{FailoverCause, FailoverRecord};
pub use flow::{Refusal, TcpFlow};
pub use upstream::{Note, SubflowView, Upstream};

use crate::mptcp::crypto::TokenTable;
use crate::mptcp::hostile_cache::{HostileCache, NetworkKey};
use crate::mptcp::{self, FallbackCause, LocalPath, MptcpConfig, PathId};
use crate::tcp::{self, IsnKey};
use crate::time::Instant;
use crate::wire::icmp::{self, PROTO_ICMP, PROTO_ICMPV6};
use crate::wire::ip::{self, IpError, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{TcpError, TcpHeaderView, verify_checksum};
use crate::wire::udp::{self, UDP_HEADER_LEN, UdpError};

/// A physical interface (index into the daemon's list: Wi-Fi is 0, cellular 1).
pub type IfaceId = u8;
/// The Wi-Fi interface.
pub const WIFI: IfaceId = 0;
/// The cellular interface.
pub const CELLULAR: IfaceId = 1;

/// Where a packet from [`Engine::poll_transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// Back to the host, written into the TUN.
    Tun,
    /// Out of a physical interface (raw IP transmit).
    Iface(IfaceId),
}

/// A packet written by [`Engine::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub dest: Dest,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
}

/// What the socket thread must do, from [`Engine::poll_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramAction {
    /// Send the payload written at the start of the caller's buffer (UDP payload, or a whole
    /// ICMP message) to `dst` from interface `iface` (opening or moving the session's socket).
    Send {
        /// The session.
        session: SessionId,
        /// UDP or ICMP echo.
        kind: DatagramKind,
        /// Interface to send from.
        iface: IfaceId,
        /// Destination (port unused for ICMP).
        dst: SocketAddr,
        /// Payload length in the caller's buffer.
        len: usize,
    },
    /// The session moved to `iface`: reopen its socket there.
    Move {
        /// The session.
        session: SessionId,
        /// UDP or ICMP echo.
        kind: DatagramKind,
        /// New interface.
        iface: IfaceId,
        /// Destination.
        dst: SocketAddr,
    },
    /// The session ended (idle): close its socket.
    Close {
        /// The session.
        session: SessionId,
    },
}

/// What the engine knows about an interface (from netlink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceState {
    /// Up with carrier and its I/O thread open.
    pub usable: bool,
    /// Its IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 address (global or ULA).
    pub v6: Option<Ipv6Addr>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Local ports for upstream connections (the range the interface threads' filters admit and
    /// the kernel is told to leave alone).
    pub ports: RangeInclusive<u16>,
    /// The TUN's MTU (sizes the host-side MSS).
    pub tun_mtu: u32,
    /// The physical interfaces' MTU (sizes the upstream MSS).
    pub iface_mtu: u32,
    /// Host-side TCP settings (MSS is set from `tun_mtu`).
    pub host_tcp: tcp::Config,
    /// Upstream TCP settings (MSS is set from `iface_mtu`).
    pub upstream_tcp: tcp::Config,
    /// Idle timeout of a UDP session.
    pub udp_idle: Duration,
    /// Idle timeout of a DNS (port 53) session.
    pub dns_idle: Duration,
    /// Idle timeout of an ICMP echo session.
    pub icmp_idle: Duration,
    /// Most TCP flows at once (new SYNs beyond are refused).
    pub max_flows: usize,
    /// Most UDP/ICMP sessions at once.
    pub max_sessions: usize,
    /// Packets and datagrams queued inside the engine at most (beyond: dropped, counted).
    pub queue_cap: usize,
    /// Key of RFC 6528 initial sequence numbers.
    pub isn_key: IsnKey,
    /// Upstream connections are MPTCP with these settings (their `tcp` field is replaced by
    /// `upstream_tcp`); `None`: plain TCP on one interface.
    pub mptcp: Option<MptcpConfig>,
    /// How long a network stays known as hostile to MPTCP (new connections there start as
    /// plain TCP).
    pub hostile_ttl: Duration,
    /// How long an interface whose paths stopped answering is avoided for new flows, unless
    /// a subflow on it answers again first.
    pub unresponsive_hold: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ports: 61000..=64999,
            tun_mtu: 65000,
            iface_mtu: 1500,
            host_tcp: tcp::Config {
                delayed_ack: Duration::ZERO,
                ..tcp::Config::default()
            },
            upstream_tcp: tcp::Config::default(),
            udp_idle: Duration::from_secs(30),
            dns_idle: Duration::from_secs(5),
            icmp_idle: Duration::from_secs(10),
            max_flows: 65536,
            max_sessions: 65536,
            queue_cap: 4096,
            isn_key: IsnKey([0; 32]),
            mptcp: Some(MptcpConfig::default()),
            hostile_ttl: Duration::from_secs(600),
            unresponsive_hold: Duration::from_secs(30),
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $v:ident = $name:literal,)*) => {
        /// Why a packet was dropped (each counted separately).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DropReason { $($(#[$m])* $v,)* }
        impl DropReason {
            /// All reasons, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Short name (status JSON key).
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
        }
    };
}

drop_reasons! {
    /// Not IPv4 or IPv6.
    BadIpVersion = "ip_version",
    /// Malformed IP header.
    BadIpHeader = "ip_header",
    /// IP length fields inconsistent with the packet.
    BadIpLength = "ip_length",
    /// Bad IPv4 header checksum.
    BadIpChecksum = "ip_checksum",
    /// An IP fragment (not reassembled).
    IpFragment = "ip_fragment",
    /// TCP header too short or bad data offset.
    BadTcpHeader = "tcp_header",
    /// Malformed TCP options.
    BadTcpOptions = "tcp_options",
    /// Bad TCP checksum.
    BadTcpChecksum = "tcp_checksum",
    /// Bad UDP length.
    BadUdpLength = "udp_length",
    /// Bad UDP checksum.
    BadUdpChecksum = "udp_checksum",
    /// Truncated ICMP message.
    BadIcmp = "icmp_header",
    /// Bad ICMP checksum.
    BadIcmpChecksum = "icmp_checksum",
    /// ICMP other than echo.
    IcmpNotEcho = "icmp_not_echo",
    /// Transport protocol not relayed.
    UnsupportedProtocol = "protocol",
    /// A segment on an interface for no flow of ours.
    NoFlow = "no_flow",
    /// A reply for no session.
    NoSession = "no_session",
    /// The flow or session table is full.
    TableFull = "table_full",
    /// The engine's internal queue was full.
    QueueFull = "queue_full",
    /// No usable interface for the destination's family.
    NoInterface = "no_interface",
}

/// The engine's counters.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// TCP flows opened (host SYNs accepted for relaying).
    pub tcp_flows: u64,
    /// Of those, established end to end.
    pub tcp_established: u64,
    /// Refused by the destination (RST to the host).
    pub tcp_refused: u64,
    /// The destination never answered (RST to the host).
    pub tcp_timed_out: u64,
    /// UDP sessions opened.
    pub udp_sessions: u64,
    /// ICMP echo sessions opened.
    pub icmp_sessions: u64,
    /// Session moves between interfaces.
    pub session_moves: u64,
    /// TCP payload bytes host → destinations.
    pub tcp_bytes_up: u64,
    /// TCP payload bytes destinations → host.
    pub tcp_bytes_down: u64,
    /// Datagram payload bytes host → destinations.
    pub dgram_bytes_up: u64,
    /// Datagram payload bytes destinations → host.
    pub dgram_bytes_down: u64,
    /// The destination was reported unreachable (ICMP) while connecting.
    pub tcp_unreachable: u64,
    /// Unreachable errors sent to the host.
    pub unreachable_sent: u64,
    /// Times the Wi-Fi became unusable while it was the preferred interface.
    pub failovers: u64,
    /// Upstream connections that completed the MPTCP handshake.
    pub mptcp_connected: u64,
    /// Upstream connections that run as plain TCP, by cause (index: [`FALLBACK_CAUSES`]).
    pub fallbacks: [u64; FALLBACK_CAUSES.len()],
    /// Subflows that came up (initial and joined).
    pub subflows_up: u64,
    /// Subflows that went away.
    pub subflows_down: u64,
    /// Subflows failed over because their path stopped answering.
    pub unresponsive: u64,
    /// Dropped packets by [`DropReason`] (index = position in [`DropReason::ALL`]).
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Dropped packets for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
    /// All counters as (name, value), for status.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = [
            ("tcp_flows", self.tcp_flows),
            ("tcp_established", self.tcp_established),
            ("tcp_refused", self.tcp_refused),
            ("tcp_timed_out", self.tcp_timed_out),
            ("udp_sessions", self.udp_sessions),
            ("icmp_sessions", self.icmp_sessions),
            ("session_moves", self.session_moves),
            ("tcp_bytes_up", self.tcp_bytes_up),
            ("tcp_bytes_down", self.tcp_bytes_down),
            ("dgram_bytes_up", self.dgram_bytes_up),
            ("dgram_bytes_down", self.dgram_bytes_down),
            ("tcp_unreachable", self.tcp_unreachable),
            ("unreachable_sent", self.unreachable_sent),
            ("failovers", self.failovers),
            ("mptcp_connected", self.mptcp_connected),
            ("subflows_up", self.subflows_up),
            ("subflows_down", self.subflows_down),
            ("unresponsive_failovers", self.unresponsive),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (name, n) in FALLBACK_CAUSES.iter().zip(self.fallbacks) {
            v.push((format!("fallback_{name}"), n));
        }
        for r in DropReason::ALL {
            v.push((format!("dropped_{}", r.name()), self.dropped(*r)));
        }
        v
    }
}

/// Local ports one MPTCP flow may hold for rejoined subflows, and again for subflows toward the
/// server's other addresses: bounded, whatever the paths and the server do.
const MAX_FLOW_PORTS: usize = 8;

/// Names of the MPTCP fallback causes, in counter order.
pub const FALLBACK_CAUSES: [&str; 6] = [
    "no_mp_capable_answer",
    "bad_mp_capable",
    "syn_unanswered",
    "options_stripped",
    "hostile_network",
    "checksum_failed",
];

fn fallback_index(c: FallbackCause) -> usize {
    use crate::mptcp::handshake::Fallback;
    match c {
        FallbackCause::Handshake(Fallback::NoMpCapable) => 0,
        FallbackCause::Handshake(_) => 1,
        FallbackCause::SynUnanswered => 2,
        FallbackCause::OptionsStripped => 3,
        // Only hostile networks start connections without MPTCP.
        FallbackCause::Disabled => 4,
        FallbackCause::ChecksumFailed => 5,
    }
}

/// A flow as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// `tcp`, `udp` or `icmp`.
    pub protocol: &'static str,
    /// The host side.
    pub source: SocketAddr,
    /// The destination.
    pub destination: SocketAddr,
    /// The upstream kind (`tcp`; `mptcp` later).
    pub upstream: &'static str,
    /// The interface in use.
    pub iface: IfaceId,
    /// Local address of the upstream (TCP) or zero.
    pub local: Option<SocketAddr>,
    /// Upstream state name.
    pub state: String,
    /// Subflows of the upstream (one for plain TCP, none for datagrams).
    pub subflows: Vec<SubflowView>,
    /// Smoothed RTT of the upstream in µs.
    pub srtt_us: u64,
    /// Bytes host → destination.
    pub bytes_up: u64,
    /// Bytes destination → host.
    pub bytes_down: u64,
}

/// A bounded queue of packets made inside the engine (resets, ICMP errors, UDP replies,
/// datagrams for the socket thread), with recycled buffers.
#[derive(Debug)]
struct Queue<M> {
    items: VecDeque<(M, Vec<u8>)>,
    free: Vec<Vec<u8>>,
    cap: usize,
}

impl<M> Queue<M> {
    fn new(cap: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            free: Vec::new(),
            cap,
        }
    }
    /// A buffer of `len` zero bytes to fill, or `None` when full.
    fn push(&mut self, meta: M, len: usize) -> Option<&mut [u8]> {
        if self.items.len() >= self.cap {
            return None;
        }
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        self.items.push_back((meta, b));
        self.items.back_mut().map(|(_, b)| b.as_mut_slice())
    }
    fn truncate_last(&mut self, len: usize) {
        if let Some((_, b)) = self.items.back_mut() {
            b.truncate(len);
        }
    }
    fn discard_last(&mut self) {
        if let Some((_, b)) = self.items.pop_back() {
            self.free.push(b);
        }
    }
    /// Copies the next item into `buf`.
    fn pop(&mut self, buf: &mut [u8]) -> Option<(M, usize)> {
        let (m, b) = self.items.pop_front()?;
        let n = b.len().min(buf.len());
        buf[..n].copy_from_slice(&b[..n]);
        if self.free.len() < 64 {
            self.free.push(b);
        }
        Some((m, n))
    }
}

type FlowId = u64;

/// The engine. See the module documentation for the call order.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    ifaces: [IfaceState; 2],
    flows: HashMap<FlowId, TcpFlow>,
    by_host: HashMap<(SocketAddr, SocketAddr), FlowId>,
    /// Upstream local port and destination → flow (a port is reused toward other
    /// destinations, so the range limits flows per destination, not in all).
    by_port: HashMap<(u16, SocketAddr), FlowId>,
    tokens: TokenTable,
    hostile: HostileCache,
    /// When an interface's paths stopped answering (cleared when one answers again).
    unresponsive: [Option<Instant>; 2],
    failovers: failover::Failovers,
    next_flow: FlowId,
    next_port: u16,
    dirty: VecDeque<FlowId>,
    timers: BinaryHeap<Reverse<(Instant, FlowId)>>,
    sessions: dgram::Sessions,
    next_sweep: Option<Instant>,
    to_host: Queue<Dest>,
    datagrams: Queue<DatagramAction>,
    scratch: Vec<u8>,
    counters: Counters,
}

const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Engine {
    /// A new engine with no usable interface yet.
    pub fn new(mut cfg: Config) -> Self {
        // The host side's MSS follows the TUN's MTU (IPv6 headers, the larger, assumed).
        cfg.host_tcp.mss = mss_for(cfg.tun_mtu, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        // RFC 6056 §3.3.1: start at a port chosen by the (random) ISN key rather than at the
        // range's start, so a restarted daemon does not reuse the 4-tuples of its previous run
        // (still in TIME-WAIT at the servers) and the ports are not predictable.
        let (lo, hi) = (*cfg.ports.start(), *cfg.ports.end());
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let seed = u32::from_le_bytes([
            cfg.isn_key.0[0],
            cfg.isn_key.0[1],
            cfg.isn_key.0[2],
            cfg.isn_key.0[3],
        ]);
        let next_port = lo.saturating_add((seed % span) as u16);
        let cap = cfg.queue_cap;
        let hostile_ttl = cfg.hostile_ttl;
        Engine {
            cfg,
            ifaces: [IfaceState::default(); 2],
            flows: HashMap::new(),
            by_host: HashMap::new(),
            by_port: HashMap::new(),
            tokens: TokenTable::new(),
            hostile: HostileCache::new(hostile_ttl, 64),
            unresponsive: [None; 2],
            failovers: failover::Failovers::default(),
            next_flow: 0,
            next_port,
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            sessions: dgram::Sessions::default(),
            next_sweep: None,
            to_host: Queue::new(cap),
            datagrams: Queue::new(cap),
            scratch: vec![0; 256 * 1024],
            counters: Counters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What the engine believes about `iface`.
    pub fn iface_state(&self, iface: IfaceId) -> Option<IfaceState> {
        self.ifaces.get(usize::from(iface)).copied()
    }

    /// Number of TCP flows and of UDP/ICMP sessions.
    pub fn flow_counts(&self) -> (usize, usize) {
        (self.flows.len(), self.sessions.len())
    }

    /// Every flow and session, for status.
    pub fn flows(&self) -> Vec<FlowInfo> {
        let mut v: Vec<FlowInfo> = self
            .flows
            .values()
            .map(|f| FlowInfo {
                protocol: "tcp",
                source: f.host_addr,
                destination: f.dst,
                upstream: f.upstream.kind(),
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
            upstream: "socket",
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

    fn drop(&mut self, r: DropReason) {
        self.counters.dropped[r as usize] += 1;
    }

    /// The most recent failovers.
    pub fn failovers(&self) -> Vec<FailoverRecord> {
        self.failovers.records()
    }

    /// The interface new traffic to `dst` uses: Wi-Fi when usable with an address of the
    /// family and answering, else cellular (else a Wi-Fi that stopped answering, rather than
    /// nothing).
    pub fn choose_iface(&self, dst: IpAddr) -> Option<IfaceId> {
        let ok = |i: IfaceId| {
            let s = &self.ifaces[usize::from(i)];
            s.usable && self.local_addr(i, dst).is_some()
        };
        [WIFI, CELLULAR]
            .into_iter()
            .find(|&i| ok(i) && self.unresponsive[usize::from(i)].is_none())
            .or_else(|| [WIFI, CELLULAR].into_iter().find(|&i| ok(i)))
    }

    /// The local paths an MPTCP connection to `dst` may use now (cellular is the backup path
    /// in handover mode).
    fn local_paths(&self, dst: IpAddr, backup_cellular: bool) -> Vec<LocalPath> {
        [WIFI, CELLULAR]
            .into_iter()
            .filter(|&i| self.ifaces[usize::from(i)].usable)
            .filter_map(|i| {
                Some(LocalPath {
                    id: PathId(i),
                    addr: self.local_addr(i, dst)?,
                    backup: i == CELLULAR && backup_cellular,
                })
            })
            .collect()
    }

    fn network_key(&self, iface: IfaceId, dst: IpAddr) -> NetworkKey {
        NetworkKey {
            iface: u32::from(iface),
            gateway: self.local_addr(iface, dst),
        }
    }

    /// Moves UDP/ICMP sessions to the interface now preferred.
    fn move_sessions(&mut self) {
        for id in self.sessions.ids() {
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            let (cur, remote, kind) = (s.iface, s.remote, s.kind);
            let Some(best) = self.choose_iface(remote.ip()) else {
                continue;
            };
            if best != cur {
                self.sessions.set_iface(id, best);
                self.counters.session_moves += 1;
                let action = DatagramAction::Move {
                    session: id,
                    kind,
                    iface: best,
                    dst: remote,
                };
                if self.datagrams.push(action, 0).is_none() {
                    self.drop(DropReason::QueueFull);
                }
            }
        }
    }

    fn local_addr(&self, iface: IfaceId, dst: IpAddr) -> Option<IpAddr> {
        let s = self.ifaces.get(usize::from(iface))?;
        match dst {
            IpAddr::V4(_) => s.v4.map(IpAddr::V4),
            IpAddr::V6(_) => s.v6.map(IpAddr::V6),
        }
    }

    /// An interface became usable or not, or its addresses changed. MPTCP connections drop
    /// their subflows on an interface that went (their data is reinjected on the others at
    /// once) and join it again when it returns; UDP/ICMP sessions move to the interface now
    /// preferred (to cellular when Wi-Fi goes, back when it returns).
    pub fn handle_iface_state(&mut self, now: Instant, iface: IfaceId, state: IfaceState) {
        let Some(slot) = self.ifaces.get_mut(usize::from(iface)) else {
            return;
        };
        let was = *slot;
        if was == state {
            return;
        }
        tracing::info!(iface, usable = state.usable, v4 = ?state.v4, v6 = ?state.v6, "interface state");
        *slot = state;
        let went = was.usable && !state.usable;
        if iface == WIFI && went {
            self.counters.failovers += 1;
        }
        if was.v4 != state.v4 || was.v6 != state.v6 || went {
            // Another network (or none): what was learnt about it no longer holds.
            self.unresponsive[usize::from(iface)] = None;
            for dst in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                if let Some(a) = match dst {
                    IpAddr::V4(_) => was.v4.map(IpAddr::V4),
                    IpAddr::V6(_) => was.v6.map(IpAddr::V6),
                } {
                    self.hostile.mark_good(NetworkKey {
                        iface: u32::from(iface),
                        gateway: Some(a),
                    });
                }
            }
        }
        let backup_cellular = self
            .cfg
            .mptcp
            .is_some_and(|m| m.mode == crate::config::Mode::Handover);
        let ids: Vec<FlowId> = self.flows.keys().copied().collect();
        let mut affected = Vec::new();
        for id in ids {
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            let dst = f.dst.ip();
            let on_iface = f.upstream.subflows().iter().any(|s| s.iface == iface);
            let Some(conn) = f.upstream.as_mptcp() else {
                continue;
            };
            if went {
                if on_iface {
                    affected.push(id);
                }
                conn.path_down(now, PathId(iface));
            } else if state.usable {
                let addr = match dst {
                    IpAddr::V4(_) => state.v4.map(IpAddr::V4),
                    IpAddr::V6(_) => state.v6.map(IpAddr::V6),
                };
                match addr {
                    Some(addr) => {
                        let path = LocalPath {
                            id: PathId(iface),
                            addr,
                            backup: iface == CELLULAR && backup_cellular,
                        };
                        conn.add_path(now, path);
                        conn.path_up(now, PathId(iface));
                    }
                    None => conn.path_down(now, PathId(iface)),
                }
            }
            self.mark_dirty(id);
        }
        if went {
            self.failovers
                .record(now, iface, FailoverCause::Unavailable, &affected);
        }
        self.move_sessions();
    }

    fn mark_dirty(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(&id) {
            // New input: service it again even if it is queued and was serviced already.
            f.serviced = false;
            if !f.dirty {
                f.dirty = true;
                self.dirty.push_back(id);
            }
        }
    }

    /// A packet the host wrote into the TUN.
    pub fn handle_tun_packet(&mut self, now: Instant, pkt: &[u8]) {
        let ipv = match ip::parse(pkt) {
            Ok(i) => i,
            Err(e) => return self.drop(ip_reason(e)),
        };
        let Some(seg) = pkt.get(ipv.payload.clone()) else {
            return self.drop(DropReason::BadIpLength);
        };
        match (ipv.proto, ipv.src) {
            (PROTO_TCP, _) => self.tun_tcp(now, pkt, ipv.src, ipv.dst, seg),
            (PROTO_UDP, _) => self.tun_udp(now, pkt, ipv.src, ipv.dst, seg),
            (PROTO_ICMP, IpAddr::V4(_)) | (PROTO_ICMPV6, IpAddr::V6(_)) => {
                self.tun_icmp(now, ipv.src, ipv.dst, seg)
            }
            _ => self.drop(DropReason::UnsupportedProtocol),
        }
    }

    fn tun_tcp(&mut self, now: Instant, pkt: &[u8], src: IpAddr, dst: IpAddr, seg: &[u8]) {
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
        if let Some(&id) = self.by_host.get(&(src, dst)) {
            let Some(flow) = self.flows.get_mut(&id) else {
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
                return self.mark_dirty(id);
            }
            self.remove_flow(id);
        }
        if !new_syn {
            // RFC 9293 §3.10.7.1: a segment for no connection draws a reset (none for a RST).
            self.queue_rst(src, dst, &hdr, payload.len());
            return;
        }
        self.expire_unresponsive(now);
        let Some(iface) = self.choose_iface(dst.ip()) else {
            self.drop(DropReason::NoInterface);
            return self.queue_unreachable(dst.ip(), src.ip(), pkt);
        };
        if self.flows.len() >= self.cfg.max_flows {
            self.drop(DropReason::TableFull);
            return self.queue_rst(src, dst, &hdr, payload.len());
        }
        let Some(port) = self.alloc_port(dst) else {
            self.drop(DropReason::TableFull);
            return self.queue_rst(src, dst, &hdr, payload.len());
        };
        let Some(local_ip) = self.local_addr(iface, dst.ip()) else {
            return self.drop(DropReason::NoInterface);
        };
        let mut cfg = self.cfg.upstream_tcp;
        cfg.mss = mss_for(self.cfg.iface_mtu, dst.ip());
        let upstream = match self.cfg.mptcp {
            Some(mut mcfg) => {
                let Ok((key, _token)) = self.tokens.generate() else {
                    self.drop(DropReason::TableFull);
                    return self.queue_rst(src, dst, &hdr, payload.len());
                };
                mcfg.tcp = cfg;
                let handover = mcfg.mode == crate::config::Mode::Handover;
                let paths = self.local_paths(dst.ip(), handover);
                // A network where MP_CAPABLE SYNs went unanswered starts as plain TCP.
                let hostile = self.hostile.is_hostile(self.network_key(iface, dst.ip()), now);
                if hostile {
                    self.counters.fallbacks[fallback_index(FallbackCause::Disabled)] += 1;
                }
                let conn = mptcp::Connection::connect(
                    now,
                    mcfg,
                    &paths,
                    PathId(iface),
                    dst,
                    vec![port],
                    key,
                    &self.cfg.isn_key,
                    !hostile,
                );
                Upstream::mptcp(conn)
            }
            None => {
                let conn = tcp::Connection::connect(
                    now,
                    SocketAddr::new(local_ip, port),
                    dst,
                    cfg,
                    &self.cfg.isn_key,
                );
                Upstream::Tcp {
                    conn: Box::new(conn),
                    iface,
                }
            }
        };
        let flow = TcpFlow::new(src, dst, hdr, upstream, port);
        self.next_flow += 1;
        let id = self.next_flow;
        self.flows.insert(id, flow);
        self.by_host.insert((src, dst), id);
        self.by_port.insert((port, dst), id);
        self.counters.tcp_flows += 1;
        tracing::debug!(flow = id, %src, %dst, iface, port, "new TCP flow");
        self.mark_dirty(id);
    }

    /// Forgets a flow (its upstream connection, if still lingering, is dropped with it).
    fn remove_flow(&mut self, id: FlowId) {
        if let Some(mut f) = self.flows.remove(&id) {
            let keys = f.upstream.ports().into_iter().map(|p| (p, f.dst));
            for k in keys.chain(f.other_keys.iter().copied()) {
                if self.by_port.get(&k) == Some(&id) {
                    self.by_port.remove(&k);
                }
            }
            if let Some(c) = f.upstream.as_mptcp() {
                self.tokens.release(c.local_token());
            }
            self.by_host.remove(&(f.host_addr, f.dst));
            self.failovers.forget(id);
        }
    }

    /// A local port not in use toward `dst`.
    fn alloc_port(&mut self, dst: SocketAddr) -> Option<u16> {
        let (lo, hi) = (*self.cfg.ports.start(), *self.cfg.ports.end());
        let n = u32::from(hi.checked_sub(lo)?) + 1;
        for _ in 0..n {
            let p = self.next_port;
            self.next_port = if p >= hi { lo } else { p + 1 };
            if !self.by_port.contains_key(&(p, dst)) {
                return Some(p);
            }
        }
        None
    }

    fn queue_rst(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        hdr: &crate::wire::SegmentHeader,
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

    fn queue_unreachable(&mut self, from: IpAddr, to: IpAddr, original: &[u8]) {
        let Some(buf) = self.to_host.push(Dest::Tun, 1400) else {
            return self.drop(DropReason::QueueFull);
        };
        match icmp::write_unreachable(buf, from, to, original) {
            Ok(n) => {
                self.to_host.truncate_last(n);
                self.counters.unreachable_sent += 1;
            }
            Err(_) => self.to_host.discard_last(),
        }
    }

    fn tun_udp(&mut self, now: Instant, pkt: &[u8], src: IpAddr, dst: IpAddr, seg: &[u8]) {
        let u = match udp::parse(src, dst, seg, true) {
            Ok(u) => u,
            Err(UdpError::BadChecksum) => return self.drop(DropReason::BadUdpChecksum),
            Err(_) => return self.drop(DropReason::BadUdpLength),
        };
        let payload = &seg[UDP_HEADER_LEN..UDP_HEADER_LEN + u.payload_len];
        let (host, remote) = (SocketAddr::new(src, u.src_port), SocketAddr::new(dst, u.dst_port));
        let idle = if u.dst_port == 53 {
            self.cfg.dns_idle
        } else {
            self.cfg.udp_idle
        };
        self.datagram_up(now, DatagramKind::Udp, host, remote, idle, payload, pkt);
    }

    fn tun_icmp(&mut self, now: Instant, src: IpAddr, dst: IpAddr, msg: &[u8]) {
        let echo = match icmp::parse_echo(src, dst, msg, true) {
            Ok(Some(e)) if e.request => e,
            Ok(_) => return self.drop(DropReason::IcmpNotEcho),
            Err(icmp::IcmpError::BadChecksum) => return self.drop(DropReason::BadIcmpChecksum),
            Err(_) => return self.drop(DropReason::BadIcmp),
        };
        let (host, remote) = (SocketAddr::new(src, echo.ident), SocketAddr::new(dst, echo.ident));
        let idle = self.cfg.icmp_idle;
        self.datagram_up(now, DatagramKind::IcmpEcho, host, remote, idle, msg, &[]);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one internal helper shared by UDP and ICMP"
    )]
    fn datagram_up(
        &mut self,
        now: Instant,
        kind: DatagramKind,
        host: SocketAddr,
        remote: SocketAddr,
        idle: Duration,
        payload: &[u8],
        original: &[u8],
    ) {
        self.expire_unresponsive(now);
        let Some(best) = self.choose_iface(remote.ip()) else {
            self.drop(DropReason::NoInterface);
            if !original.is_empty() {
                self.queue_unreachable(remote.ip(), host.ip(), original);
            }
            return;
        };
        let full = self.sessions.len() >= self.cfg.max_sessions;
        let (id, iface, wire_ident) = match self.sessions.find(kind, host, remote) {
            Some(s) => {
                s.last = now;
                (s.id, s.iface, s.wire_ident)
            }
            None if full => return self.drop(DropReason::TableFull),
            None => {
                match kind {
                    DatagramKind::Udp => self.counters.udp_sessions += 1,
                    DatagramKind::IcmpEcho => self.counters.icmp_sessions += 1,
                }
                let s = self.sessions.insert(kind, host, remote, best, now, idle);
                (s.id, best, s.wire_ident)
            }
        };
        if iface != best {
            self.sessions.set_iface(id, best);
            self.counters.session_moves += 1;
        }
        if let Some(s) = self.sessions.get_mut(id) {
            s.up.0 += 1;
            s.up.1 += payload.len() as u64;
        }
        self.counters.dgram_bytes_up += payload.len() as u64;
        let action = DatagramAction::Send {
            session: id,
            kind,
            iface: best,
            dst: remote,
            len: payload.len(),
        };
        match self.datagrams.push(action, payload.len()) {
            Some(b) => {
                b.copy_from_slice(payload);
                if kind == DatagramKind::IcmpEcho && b.len() >= 8 {
                    // Our identifier on the wire; the checksum is redone for it (ICMPv4; the
                    // kernel computes ICMPv6 checksums of raw sockets itself, RFC 3542 §3.1).
                    b[4..6].copy_from_slice(&wire_ident.to_be_bytes());
                    b[2..4].copy_from_slice(&[0, 0]);
                    let c = crate::wire::checksum::checksum(b);
                    b[2..4].copy_from_slice(&c.to_be_bytes());
                }
            }
            None => self.drop(DropReason::QueueFull),
        }
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// A UDP payload the socket of `session` received from its destination.
    pub fn handle_datagram(&mut self, now: Instant, session: SessionId, payload: &[u8]) {
        let Some(s) = self.sessions.get_mut(session) else {
            return self.drop(DropReason::NoSession);
        };
        s.last = now;
        s.down.0 += 1;
        s.down.1 += payload.len() as u64;
        let (from, to) = (s.remote, s.host);
        self.counters.dgram_bytes_down += payload.len() as u64;
        let need = ip::header_len(from.ip()) + UDP_HEADER_LEN + payload.len();
        let Some(buf) = self.to_host.push(Dest::Tun, need) else {
            return self.drop(DropReason::QueueFull);
        };
        match udp::write_packet(buf, from, to, payload) {
            Ok(n) => self.to_host.truncate_last(n),
            Err(_) => self.to_host.discard_last(),
        }
    }

    /// The destination of UDP `session` answered "port unreachable" (the session's connected
    /// socket reported `ECONNREFUSED`): the host gets the same ICMP error, quoting a datagram of
    /// its flow, so its socket reports "connection refused" as without mpbond.
    pub fn handle_datagram_refused(&mut self, _now: Instant, session: SessionId) {
        let Some(s) = self.sessions.get_mut(session) else {
            return self.drop(DropReason::NoSession);
        };
        let (host, remote) = (s.host, s.remote);
        let mut quoted = [0u8; 64];
        let Ok(n) = udp::write_packet(&mut quoted, host, remote, &[]) else {
            return;
        };
        let Some(buf) = self.to_host.push(Dest::Tun, 200) else {
            return self.drop(DropReason::QueueFull);
        };
        match icmp::write_dest_unreachable(buf, remote.ip(), host.ip(), icmp::Unreachable::Port, &quoted[..n])
        {
            Ok(n) => {
                self.to_host.truncate_last(n);
                self.counters.unreachable_sent += 1;
            }
            Err(_) => self.to_host.discard_last(),
        }
    }

    /// An ICMP/ICMPv6 message the raw socket of `iface` received from `from` (the message
    /// only, no IP header).
    pub fn handle_icmp(&mut self, now: Instant, iface: IfaceId, from: IpAddr, msg: &[u8]) {
        // ICMPv6 checksums need our address for the pseudo-header; the kernel verified them
        // before the raw socket saw the message (RFC 4443 §2.3 is checked there).
        let Some(to_self) = self.local_addr(iface, from) else {
            return self.drop(DropReason::NoInterface);
        };
        // RFC 792 type 3 / RFC 4443 §3.1 type 1: destination unreachable.
        let unreachable = if from.is_ipv4() { 3 } else { 1 };
        if msg.len() >= 8 && msg[0] == unreachable {
            if from.is_ipv4() && !crate::wire::checksum::verify(msg) {
                return self.drop(DropReason::BadIcmpChecksum);
            }
            return self.icmp_unreachable(now, &msg[8..]);
        }
        let echo = match icmp::parse_echo(from, to_self, msg, from.is_ipv4()) {
            Ok(Some(e)) if !e.request => e,
            Ok(_) => return, // requests to us, errors: not ours to relay
            Err(icmp::IcmpError::BadChecksum) => return self.drop(DropReason::BadIcmpChecksum),
            Err(_) => return self.drop(DropReason::BadIcmp),
        };
        let Some(s) = self.sessions.echo_session(iface, from, echo.ident) else {
            return self.drop(DropReason::NoSession);
        };
        s.last = now;
        s.down.0 += 1;
        s.down.1 += msg.len() as u64;
        let (to, host_ident) = (s.host.ip(), s.host.port());
        self.counters.dgram_bytes_down += msg.len() as u64;
        let need = ip::header_len(from) + msg.len();
        let Some(buf) = self.to_host.push(Dest::Tun, need) else {
            return self.drop(DropReason::QueueFull);
        };
        match icmp::write_packet(buf, from, to, msg) {
            Ok(n) => {
                // Back to the host's identifier, checksum redone.
                let h = ip::header_len(from);
                let m = &mut buf[h..n];
                m[4..6].copy_from_slice(&host_ident.to_be_bytes());
                m[2..4].copy_from_slice(&[0, 0]);
                let mut c = crate::wire::checksum::Checksum::new();
                if from.is_ipv6() {
                    c.add_pseudo_header(from, to, PROTO_ICMPV6, m.len() as u32);
                }
                let c = c.add_bytes(m).finish();
                m[2..4].copy_from_slice(&c.to_be_bytes());
                self.to_host.truncate_last(n);
            }
            Err(_) => self.to_host.discard_last(),
        }
    }

    /// An unreachable error about one of our upstream connections (`quote`: the start of the
    /// packet we sent). While the connection is still opening, the host's SYN is answered with
    /// the same error, so the application sees what it would without mpbond (RFC 1122
    /// §4.2.3.9: a hard error in SYN-SENT aborts the connection; once established, such errors
    /// are left to the retransmission timeout).
    fn icmp_unreachable(&mut self, _now: Instant, quote: &[u8]) {
        let Some((src, dst)) = quoted_tcp(quote) else {
            return self.drop(DropReason::BadIcmp);
        };
        let Some(&id) = self.by_port.get(&(src.port(), dst)) else {
            return self.drop(DropReason::NoFlow);
        };
        let Some(f) = self.flows.get_mut(&id) else { return };
        if f.upstream.remote() != dst || f.upstream.local() != src || f.host.is_some() {
            return;
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
        self.mark_dirty(id);
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
        let Some(&id) = self.by_port.get(&(hdr.dst_port, remote)) else {
            return self.drop(DropReason::NoFlow);
        };
        let Some(f) = self.flows.get_mut(&id) else {
            return self.drop(DropReason::NoFlow);
        };
        let local = SocketAddr::new(ipv.dst, hdr.dst_port);
        f.handle_upstream_segment(now, iface, (local, remote), &hdr, view.payload());
        if !view.payload().is_empty() {
            self.failovers.moved(now, id, iface);
        }
        self.mark_dirty(id);
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Entries whose flow re-armed or went are stale: drop them here.
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            match self.flows.get(&id) {
                Some(f) if f.armed == Some(t) => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let flow = self.timers.peek().map(|Reverse((t, _))| *t);
        match (flow, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            if f.armed != Some(t) {
                continue;
            }
            f.armed = None;
            f.handle_timeout(now);
            self.mark_dirty(id);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            for s in self.sessions.expire(now) {
                tracing::debug!(session = s.id.0, "session idle, closed");
                if self
                    .datagrams
                    .push(DatagramAction::Close { session: s.id }, 0)
                    .is_none()
                {
                    self.drop(DropReason::QueueFull);
                }
            }
            self.next_sweep = (!self.sessions.is_empty()).then(|| now + SWEEP_INTERVAL);
        }
    }

    /// Writes the next packet due into `buf` (at least 65,536 bytes): a whole IP packet and
    /// where it goes.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            if let Some((dest, len)) = self.to_host.pop(buf) {
                return Some(Transmit { dest, len });
            }
            let &id = self.dirty.front()?;
            let Some(f) = self.flows.get_mut(&id) else {
                self.dirty.pop_front();
                continue;
            };
            if !f.serviced {
                f.serviced = true;
                let s = f.service(now, &self.cfg.host_tcp, &self.cfg.isn_key, &mut self.scratch);
                let mut notes = Vec::new();
                while let Some(n) = f.upstream.poll_note() {
                    notes.push(n);
                }
                self.counters.tcp_bytes_up += s.up;
                self.counters.tcp_bytes_down += s.down;
                for n in notes {
                    self.handle_note(now, id, n);
                }
                let Some(f) = self.flows.get_mut(&id) else {
                    continue;
                };
                if s.established {
                    self.counters.tcp_established += 1;
                }
                if let Some(why) = s.refused {
                    match why {
                        Refusal::Reset => self.counters.tcp_refused += 1,
                        Refusal::TimedOut => self.counters.tcp_timed_out += 1,
                    }
                    if let Some(syn) = f.syn.take() {
                        let (src, dst) = (f.host_addr, f.dst);
                        self.queue_rst(src, dst, &syn, 0);
                    }
                    continue;
                }
            }
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            if let Some((dest, len)) = f.poll_transmit(now, buf) {
                return Some(Transmit { dest, len });
            }
            // Done with this flow for now: re-arm its timer or remove it.
            self.dirty.pop_front();
            f.dirty = false;
            f.serviced = false;
            if f.is_finished() {
                self.remove_flow(id);
                tracing::debug!(flow = id, "TCP flow finished");
                continue;
            }
            let t = f.poll_timeout();
            if t != f.armed {
                f.armed = t;
                if let Some(t) = t {
                    self.timers.push(Reverse((t, id)));
                }
            }
        }
    }

    /// Records what an upstream connection reported.
    fn handle_note(&mut self, now: Instant, id: FlowId, note: Note) {
        let Some(f) = self.flows.get_mut(&id) else { return };
        let dst = f.dst;
        let initial = f.upstream.as_mptcp().map(|c| c.initial_path().0);
        match note {
            Note::Connected { mptcp } => {
                if mptcp {
                    self.counters.mptcp_connected += 1;
                }
            }
            Note::Fallback(cause) => {
                if cause != FallbackCause::Disabled {
                    self.counters.fallbacks[fallback_index(cause)] += 1;
                }
                tracing::debug!(flow = id, %dst, %cause, "MPTCP fallback");
                if cause == FallbackCause::SynUnanswered
                    && let Some(i) = initial
                {
                    // RFC 8684 §3.7 / iOS: remember the network, start plain there for a while.
                    let key = self.network_key(i, dst.ip());
                    self.hostile.mark_hostile(key, now);
                }
            }
            Note::SubflowUp { iface, .. } => {
                self.counters.subflows_up += 1;
                if let Some(slot) = self.unresponsive.get_mut(usize::from(iface))
                    && slot.take().is_some()
                {
                    tracing::info!(iface, "interface answers again");
                    self.move_sessions();
                }
            }
            Note::SubflowDown { .. } => {
                self.counters.subflows_down += 1;
                // A path joined again gets a fresh local port: no stale state at the peer
                // (a subflow it still believes in) collides with the new subflow's 4-tuple.
                let wants = f.upstream.ports().len() < MAX_FLOW_PORTS && !f.upstream.is_closed();
                if wants && let Some(p) = self.alloc_port(dst) {
                    self.by_port.insert((p, dst), id);
                    if let Some(c) = self.flows.get_mut(&id).and_then(|f| f.upstream.as_mptcp()) {
                        c.add_port(p);
                    }
                }
            }
            Note::PortNeeded { remote } => {
                // A subflow toward another address of the server (its ADD_ADDR): a port whose
                // segments from there reach this flow. Bounded like the rejoin ports.
                if f.other_keys.len() < MAX_FLOW_PORTS
                    && let Some(p) = self.alloc_port(remote)
                {
                    self.by_port.insert((p, remote), id);
                    if let Some(f) = self.flows.get_mut(&id) {
                        f.other_keys.push((p, remote));
                        if let Some(c) = f.upstream.as_mptcp() {
                            c.add_remote_port(now, remote, p);
                        }
                    }
                }
            }
            Note::Unresponsive { iface, silent_for } => {
                self.counters.unresponsive += 1;
                let since =
                    Instant::from_micros(now.as_micros().saturating_sub(silent_for.as_micros() as u64));
                self.failovers
                    .record(since, iface, FailoverCause::Unresponsive, &[id]);
                if let Some(slot) = self.unresponsive.get_mut(usize::from(iface))
                    && slot.is_none()
                {
                    tracing::info!(
                        iface,
                        silent_ms = silent_for.as_millis() as u64,
                        "interface unresponsive"
                    );
                    *slot = Some(now);
                    self.move_sessions();
                }
            }
        }
    }

    /// Forgets that an interface stopped answering once [`Config::unresponsive_hold`] passed
    /// (new flows try it again).
    fn expire_unresponsive(&mut self, now: Instant) {
        let hold = self.cfg.unresponsive_hold;
        let mut changed = false;
        for slot in &mut self.unresponsive {
            if slot.is_some_and(|t| now >= t + hold) {
                *slot = None;
                changed = true;
            }
        }
        if changed {
            self.move_sessions();
        }
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

/// Source and destination of the TCP segment quoted in an ICMP error (IP header and at least the
/// ports); the quote is usually truncated, so lengths are not checked against the IP header.
fn quoted_tcp(q: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let v = q.first()? >> 4;
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, usize) = match v {
        4 => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            let h: [u8; 20] = q.get(..20)?.try_into().ok()?;
            let s = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let d = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            (h[9], s.into(), d.into(), ihl.max(20))
        }
        6 => {
            let h = q.get(..40)?;
            let s: [u8; 16] = h[8..24].try_into().ok()?;
            let d: [u8; 16] = h[24..40].try_into().ok()?;
            (h[6], Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into(), 40)
        }
        _ => return None,
    };
    if proto != PROTO_TCP {
        return None;
    }
    let p = q.get(l4..l4 + 4)?;
    Some((
        SocketAddr::new(src, u16::from_be_bytes([p[0], p[1]])),
        SocketAddr::new(dst, u16::from_be_bytes([p[2], p[3]])),
    ))
}

fn mss_for(mtu: u32, dst: IpAddr) -> u16 {
    let overhead = if dst.is_ipv4() { 40 } else { 60 };
    u16::try_from(mtu.saturating_sub(overhead).clamp(536, 65535 - 100)).unwrap_or(1220)
}

fn ip_reason(e: IpError) -> DropReason {
    match e {
        IpError::BadVersion => DropReason::BadIpVersion,
        IpError::BadLength => DropReason::BadIpLength,
        IpError::BadChecksum => DropReason::BadIpChecksum,
        IpError::Fragment => DropReason::IpFragment,
        _ => DropReason::BadIpHeader,
    }
}

fn tcp_reason(e: TcpError) -> DropReason {
    match e {
        TcpError::BadOption => DropReason::BadTcpOptions,
        TcpError::BadChecksum => DropReason::BadTcpChecksum,
        _ => DropReason::BadTcpHeader,
    }
}

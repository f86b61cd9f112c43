//! The engine's public types: interfaces, where packets go, what the socket thread is asked to
//! do, the settings, and a flow as `status` shows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::{DatagramKind, SessionId, SubflowView};
use crate::config::IfaceRole;
use crate::mptcp::MptcpConfig;
use crate::tcp::{self, IsnKey};

/// A physical interface (index into the daemon's list, below
/// [`MAX_INTERFACES`](crate::config::MAX_INTERFACES); with the default policies Wi-Fi is 0,
/// cellular 1).
pub type IfaceId = u8;
/// The Wi-Fi interface of the default policies (primary).
pub const WIFI: IfaceId = 0;
/// The cellular interface of the default policies (backup).
pub const CELLULAR: IfaceId = 1;

/// What an interface is for, as the engine applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfacePolicy {
    /// Primary, backup or never.
    pub role: IfaceRole,
    /// Order among interfaces of the same role, higher first (Ethernet before Wi-Fi).
    pub priority: u8,
}

impl IfacePolicy {
    /// A primary interface of `priority`.
    pub const fn primary(priority: u8) -> IfacePolicy {
        IfacePolicy {
            role: IfaceRole::Primary,
            priority,
        }
    }

    /// A backup interface of `priority`.
    pub const fn backup(priority: u8) -> IfacePolicy {
        IfacePolicy {
            role: IfaceRole::Backup,
            priority,
        }
    }
}

/// Where a packet from [`Engine::poll_transmit`](super::Engine::poll_transmit) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// Back to the host, written into the TUN.
    Tun,
    /// Out of a physical interface (raw IP transmit).
    Iface(IfaceId),
}

/// A packet written by [`Engine::poll_transmit`](super::Engine::poll_transmit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub dest: Dest,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
    /// A TCP super-segment to be cut into segments of this many payload bytes (the kernel's GSO
    /// or `wire::gso`); 0: the packet goes as it is.
    pub seg_payload: usize,
    /// The TCP checksum is partial, for the device to complete (`tcp::Transmit::csum_partial`).
    pub csum_partial: bool,
}

impl Transmit {
    /// A packet that goes as it is.
    pub fn whole(dest: Dest, len: usize) -> Transmit {
        Transmit {
            dest,
            len,
            seg_payload: 0,
            csum_partial: false,
        }
    }
}

/// What the socket thread must do, from [`Engine::poll_datagram`](super::Engine::poll_datagram).
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
        /// The session is redundant (a copy of each datagram goes on each path): its socket on
        /// `iface` is opened if needed beside its sockets on other interfaces, which stay. Else
        /// (one path at a time) a session with no socket on `iface` toward `dst` has its
        /// sockets closed and one opened there.
        redundant: bool,
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
    /// Used only when nothing else works: its data budget is past the soft share (issue 16).
    /// New flows do not start on it while another interface works, and MPTCP connections
    /// keep no standing subflow on it ([`crate::mptcp::LocalPath::last_resort`]).
    pub last_resort: bool,
}

impl IfaceState {
    /// Its address of `dst`'s family.
    pub fn addr_for(&self, dst: IpAddr) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
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
    /// RFC 8803 converters carrying flows to destinations without MPTCP (needs `mptcp`).
    pub converter: Option<ConverterSettings>,
    /// Which UDP flows through a converter go on every path.
    pub redundancy: crate::redundancy::Redundancy,
    /// Rate caps by interface id, bytes/s ([`crate::budget::RateCap`]): enforced here, on every
    /// packet and datagram the engine sends to that interface.
    pub rate_caps: Vec<Option<u64>>,
    /// The policy of each interface, by id (an interface beyond the list, until
    /// [`Engine::set_iface_policy`](super::Engine::set_iface_policy) says otherwise: a primary
    /// of priority 0). Default: Wi-Fi (0) primary, cellular (1) backup.
    pub ifaces: Vec<IfacePolicy>,
}

/// The converters a laptop uses and the key that proves it may.
#[derive(Debug, Clone)]
pub struct ConverterSettings {
    /// Their addresses, in order.
    pub addrs: Vec<std::net::SocketAddr>,
    /// This laptop's client key.
    pub key: crate::convert::key::ClientKey,
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
            converter: None,
            redundancy: crate::redundancy::Redundancy::default(),
            rate_caps: Vec::new(),
            ifaces: vec![IfacePolicy::primary(10), IfacePolicy::backup(0)],
        }
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
    /// The upstream kind (`tcp` or `mptcp`; `socket` for datagrams).
    pub upstream: &'static str,
    /// The RFC 8803 converter the flow goes through, if any.
    pub converter: Option<SocketAddr>,
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

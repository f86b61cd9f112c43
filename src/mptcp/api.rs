//! Settings, events and reports of the MPTCP connection engine ([`super::connection`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::PathId;
use super::handshake::{CapableConfig, Fallback, JoinError};
use super::send::SubflowId;
use crate::config::{JoinPolicy, Mode};
use crate::tcp::{self, State};

/// Settings of an MPTCP connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MptcpConfig {
    /// Settings of every subflow.
    pub tcp: tcp::Config,
    /// MP_CAPABLE preferences (checksums).
    pub capable: CapableConfig,
    /// Scheduler mode.
    pub mode: Mode,
    /// When the client joins the backup path.
    pub join: JoinPolicy,
    /// SYNs sent with MP_CAPABLE before retrying without it (§3.7; iOS and Linux do this).
    pub mpc_syn_attempts: u32,
    /// Data-level send buffer (backpressure beyond it).
    pub send_buffer: usize,
    /// Data-level receive buffer: unread bytes beyond it stop draining the subflows.
    pub recv_buffer: usize,
    /// Consecutive RTOs after which a subflow counts as stalled: its data is reinjected on the
    /// others and the scheduler avoids it until it makes progress.
    pub stall_rtos: u32,
    /// A subflow silent for this many smoothed RTTs (data unacknowledged, or a probe
    /// unanswered) while its link is up counts as unresponsive and is failed over; 0 disables
    /// the check (then only [`stall_rtos`](Self::stall_rtos) applies).
    pub stale_rtts: u32,
    /// Lower bound of that silence.
    pub stale_floor: Duration,
    /// Minimum time between two join attempts on one path.
    pub join_retry: Duration,
    /// Client: a connection opens its additional subflows (the backup's MP_JOIN) only once it
    /// has lived this long, unless its data has no other subflow to go on (the initial one
    /// failed or fell silent: then at once). A short exchange (an HTTP request with
    /// `Connection: close`) is over before the join would pay for its handshake, on both
    /// hosts. Zero: joins follow the MP_CAPABLE at once.
    pub join_delay: Duration,
    /// Flap damping, handover mode: a regular path (Wi-Fi) that lost its subflow (link down or
    /// unresponsive) and came back is held as a backup (RFC 8684 §3.3.8, MP_PRIO) for this
    /// long after its new subflow answered, probed meanwhile, before it is made primary
    /// again; each further loss within [`flap_half_life`](Self::flap_half_life) doubles the
    /// hold, up to [`flap_hold_max`](Self::flap_hold_max). Zero (the default) disables the
    /// damping: measured in the lab (`lab_flap`, 3 downloads, Wi-Fi down/up/blackholed every
    /// second), a 500 ms hold made the longest stall 460 ms, none made it 125 ms (about one
    /// single failover); why the hold costs that much is not understood yet.
    pub flap_hold: Duration,
    /// Longest hold of a flapping path.
    pub flap_hold_max: Duration,
    /// The flap count of a path halves after this long without a loss (so the hold shrinks
    /// back to [`flap_hold`](Self::flap_hold) once the path is steady).
    pub flap_half_life: Duration,
    /// Most subflows alive at once.
    pub max_subflows: usize,
    /// A connection without any usable subflow for this long times out.
    pub orphan_timeout: Duration,
    /// A subflow on a backup path that has heard nothing from the peer for this long may have
    /// lost its NAT mapping (carrier NATs forget idle TCP mappings, some after 20-30 s, and
    /// drop what they no longer know): when it is needed (its regular path failed or is
    /// suspected), it is probed and, in parallel, a fresh MP_JOIN is opened on the same path
    /// (a new local port: a new mapping); whichever answers first carries on
    /// (`connection/standby.rs`). Zero disables this (the backup is trusted as it is).
    pub nat_idle: Duration,
    /// Keep-alive of standing backup subflows: a probe (RFC 9293 §3.8.4 form) after this long
    /// without a segment from the peer, which keeps a NAT mapping alive at the price of two
    /// small packets per interval on the backup path; zero (the default) sends none (the
    /// fresh join of [`nat_idle`](Self::nat_idle) covers a forgotten mapping within a few
    /// RTTs). Never on a [`LocalPath::last_resort`] path.
    pub backup_keepalive: Duration,
    /// Small writes that wait on a reply (the chunk is shorter than a segment and nothing else
    /// is in flight at the data level) go on every subflow at once, with the same mapping
    /// (`connection/output.rs`), in any mode; [`Mode::Redundant`] sends every chunk so.
    pub redundant_interactive: bool,
}

/// Default [`MptcpConfig::join_delay`]: a few round trips of a typical Internet path, so that a
/// short request/response exchange ends without a second subflow, and well below the time a
/// long transfer runs before an outage matters (a loss in that window joins at once, on demand).
pub const DEFAULT_JOIN_DELAY: Duration = Duration::from_millis(100);

/// Default [`MptcpConfig::nat_idle`]: below the 20 s after which the strictest carrier NATs
/// seen forget an idle TCP mapping (a false suspicion costs one probe and one join).
pub const DEFAULT_NAT_IDLE: Duration = Duration::from_secs(15);

impl Default for MptcpConfig {
    fn default() -> Self {
        MptcpConfig {
            tcp: tcp::Config::default(),
            capable: CapableConfig::default(),
            mode: Mode::Handover,
            join: JoinPolicy::Immediate,
            mpc_syn_attempts: 2,
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            stall_rtos: 1,
            stale_rtts: 2,
            stale_floor: Duration::from_millis(30),
            join_retry: Duration::from_secs(1),
            // At once, as a bare MPTCP stack does; the daemon's config sets DEFAULT_JOIN_DELAY
            // in the handover and interactive modes.
            join_delay: Duration::ZERO,
            flap_hold: Duration::ZERO,
            flap_hold_max: Duration::from_secs(8),
            flap_half_life: Duration::from_secs(15),
            max_subflows: 8,
            orphan_timeout: Duration::from_secs(60),
            nat_idle: DEFAULT_NAT_IDLE,
            backup_keepalive: Duration::ZERO,
            redundant_interactive: false,
        }
    }
}

/// A local path (interface) the client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPath {
    /// The caller's id for it (returned with every packet to send).
    pub id: PathId,
    /// Source address of subflows on it.
    pub addr: IpAddr,
    /// Subflows on it are backups (RFC 8684 §3.3.8 flag B), e.g. cellular in handover mode.
    pub backup: bool,
    /// Used only when nothing else works (its data budget is past its soft share): no
    /// standing subflow and no keep-alive on it while a subflow on another path can carry
    /// the data; a join from it only when none can (an on-demand join at failover).
    pub last_resort: bool,
    /// Order among paths of the same kind (regular or backup) in handover mode, lower first:
    /// the scheduler and the initial subflow prefer the lowest rank, and a regular path is
    /// made a backup (MP_PRIO, RFC 8684 §3.3.8) while a lower-ranked regular path works (an
    /// Ethernet before a Wi-Fi). Paths of equal rank are ordered by RTT, as before.
    pub rank: u8,
}

/// Why the connection (or a subflow) runs as regular TCP (peer or path incompatible, §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FallbackCause {
    /// The MP_CAPABLE handshake did not complete (no or unusable MP_CAPABLE answer).
    #[error("MP_CAPABLE handshake: {0}")]
    Handshake(#[from] Fallback),
    /// SYNs with MP_CAPABLE went unanswered; the SYN without it was answered. Remember the
    /// network as MPTCP-hostile ([`super::hostile_cache::HostileCache`]).
    #[error("SYN with MP_CAPABLE unanswered")]
    SynUnanswered,
    /// MPTCP options disappeared after the handshake (a middlebox strips them).
    #[error("MPTCP options stripped mid-connection")]
    OptionsStripped,
    /// The caller asked for plain TCP (e.g. hostile network).
    #[error("MPTCP disabled for this connection")]
    Disabled,
    /// A DSS checksum failed on the only subflow (a middlebox altered the payload): MP_FAIL
    /// and an infinite mapping both ways (§3.7).
    #[error("DSS checksum failed on the only subflow")]
    ChecksumFailed,
}

/// Why we reset a subflow (the connection goes on over the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubflowResetCause {
    /// The peer broke the protocol (bad mapping, bad HMAC, ...).
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(&'static str),
    /// The peer sent a DSS mapping or DATA_FIN that contradicts the data-level stream.
    #[error("bad DSS mapping: {0}")]
    BadMapping(super::mapping::MappingError),
    /// The path interferes with MPTCP (checksum failure, unmapped data) and fallback is
    /// impossible with several subflows.
    #[error("path incompatible: {0}")]
    PathIncompatible(&'static str),
}

/// Why [`Connection::accept_join`](super::Connection::accept_join) refused an MP_JOIN SYN (answer it with a RST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// The MP_JOIN is unusable (missing, wrong form, unknown token), §3.2.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// Not a SYN or mixed address families.
    #[error(transparent)]
    Tcp(#[from] tcp::AcceptError),
    /// The connection is not (or no longer) in MPTCP mode, or has too many subflows.
    #[error("connection does not accept subflows")]
    NotAccepting,
    /// The OS random source failed.
    #[error("no random nonce")]
    Random,
}

/// What happened, for the application and the policy layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The connection is usable; `mptcp` false means regular TCP (fallback).
    Connected {
        /// MPTCP in use.
        mptcp: bool,
    },
    /// New data for [`Connection::recv`](super::Connection::recv).
    Readable,
    /// Send-buffer space freed after [`Connection::send`](super::Connection::send) refused bytes.
    Writable,
    /// The peer's DATA_FIN (or FIN after fallback) arrived: no more data.
    PeerClosed,
    /// Both directions closed gracefully.
    Closed,
    /// The peer reset the connection (MP_FASTCLOSE, or RST after fallback).
    Reset,
    /// No subflow could carry the connection for too long.
    TimedOut,
    /// A subflow can carry data.
    SubflowUp {
        /// Its id.
        id: SubflowId,
        /// Its path.
        path: PathId,
        /// Backup priority (ours or the peer's).
        backup: bool,
    },
    /// A subflow is gone (reset, timed out, path down).
    SubflowDown {
        /// Its id.
        id: SubflowId,
        /// Its path.
        path: PathId,
    },
    /// The connection continues as regular TCP (§3.7).
    Fallback {
        /// Path of the subflow where it happened.
        path: PathId,
        /// Why.
        cause: FallbackCause,
    },
    /// A path stopped answering while its link stayed up: its subflow was failed over.
    PathUnresponsive {
        /// The path.
        path: PathId,
        /// How long it had been silent when that was decided.
        silent_for: Duration,
        /// How long the probe that went unanswered had been out (what arrived on the same
        /// interface since it left shows whether the interface, or only this path, is silent).
        probe_out_for: Duration,
    },
    /// A join toward `remote`, an address the peer announced, needs a local port that
    /// reaches this connection: answer with [`super::Connection::add_remote_port`] (or not: no
    /// subflow goes there then).
    PortNeeded {
        /// The peer's address and port.
        remote: SocketAddr,
    },
    /// We reset a subflow.
    SubflowReset {
        /// Its id.
        id: SubflowId,
        /// Why.
        cause: SubflowResetCause,
    },
}

/// Health of one subflow, for the policy layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubflowInfo {
    /// Id.
    pub id: SubflowId,
    /// Path.
    pub path: PathId,
    /// Local and remote address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// TCP state.
    pub state: State,
    /// Carries MPTCP data now (handshake done, not stalled, path up).
    pub usable: bool,
    /// Backup priority, ours or the peer's.
    pub backup: bool,
    /// RTO count, time of last ACK progress, SRTT, bytes in flight, cwnd.
    pub health: tcp::Health,
    /// Payload bytes sent (including retransmissions).
    pub bytes_sent: u64,
}

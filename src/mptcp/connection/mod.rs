//! The MPTCP connection engine (RFC 8684), sans-IO, on top of [`tcp::Connection`] subflows.
//!
//! # Call order
//!
//! Create with [`Connection::connect`] (client: the initial subflow's SYN with MP_CAPABLE leaves
//! on the first `poll_transmit`) or [`Connection::accept`] (server, from a received SYN). Then,
//! whenever something happens:
//!
//! 1. feed input: [`handle_packet`](Connection::handle_packet) for every segment of one of its
//!    subflows (already parsed and checksum-verified), [`accept_join`](Connection::accept_join)
//!    for an MP_JOIN SYN whose token names this connection (server; see
//!    [`super::endpoint::Endpoint`] for the demux), [`handle_timeout`](Connection::handle_timeout)
//!    once the deadline from `poll_timeout` passed, the application's
//!    [`send`](Connection::send) / [`recv`](Connection::recv) / [`close`](Connection::close) /
//!    [`abort`](Connection::abort), and the policy layer's
//!    [`path_down`](Connection::path_down) / [`path_up`](Connection::path_up) /
//!    [`set_path_backup`](Connection::set_path_backup);
//! 2. drain output: [`poll_transmit`](Connection::poll_transmit) until `None`, sending each
//!    packet on the returned path;
//! 3. drain [`poll_event`](Connection::poll_event) until `None`;
//! 4. sleep until [`poll_timeout`](Connection::poll_timeout) (or the next input).
//!
//! Fallback to regular TCP (§3.7) is invisible to the application apart from
//! [`Event::Fallback`] and `Connected { mptcp: false }`: the same `send`/`recv` carry the bytes.
//!
//! # Files
//!
//! This file owns the connection's state, its creation, the read-only API and the input
//! dispatch ([`Connection::handle_packet`], and `after_io`: the ordered bookkeeping after any
//! input). The rest is split by concern: `handshake.rs` (the MP_CAPABLE / MP_JOIN arms),
//! `options.rs` (DSS, ADD_ADDR, REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE on established
//! subflows), `fallback.rs` (§3.7), `data.rs` (moving data between the subflows and the
//! data-level buffers, data-level retransmission), `paths.rs` (the path manager),
//! `announce.rs` (our ADD_ADDR), `lifecycle.rs` (the connection's `Phase`, subflow deaths,
//! close), `output.rs` (scheduling and `poll_transmit`), `timer.rs` (the timer table,
//! `poll_timeout`, `handle_timeout`), `liveness.rs` (unresponsive paths, backup
//! priorities), `damping.rs` (what a path remembers across a flap: its RTTs, its flap
//! count and the hold-down of a path that came back) and `standby.rs` (backups that are
//! really there: a backup idle past a NAT's memory raced against a fresh join, keep-alives,
//! last-resort paths).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::PathId;
use super::addr::RemoteAddrs;
pub use super::api::{
    Event, FallbackCause, JoinRefused, LocalPath, MptcpConfig, SubflowInfo, SubflowResetCause,
};
use super::crypto::{Key, Token};
use super::handshake::{CapableInitiator, CapableListener, Negotiated};
use super::recv::DataRecvBuffer;
use super::send::{DataSendBuffer, SubflowId};
use super::subflow::{Handshake, Subflow, SubflowMp};
use crate::tcp::{self, IsnKey, State};
use crate::time::Instant;
use crate::wire::mptcp::{MpTcpRst, MptcpOption, RstReason};
use crate::wire::tcp::SegmentHeader;

mod announce;
mod damping;
mod data;
mod fallback;
mod fastopen;
mod handshake;
mod lifecycle;
mod liveness;
mod options;
mod output;
mod paths;
mod standby;
mod timer;

use announce::Announcements;
use data::DataRto;
use lifecycle::Phase;
pub(in crate::mptcp) use liveness::Liveness;
use paths::PathManager;
use timer::{Timer, Timers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// One MPTCP connection (client or server role). See the module documentation for the call
/// order.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    cfg: MptcpConfig,
    isn_key: IsnKey,
    local_key: Key,
    /// The destination: the initial subflow's remote address.
    remote: SocketAddr,
    /// Local paths, ports and joins ([`paths`]).
    pm: PathManager,
    subflows: Vec<Subflow>,
    next_id: u32,
    /// Chunks also sent on another subflow (redundant scheduling, `output.rs`).
    redundant_copies: u64,
    /// The MP_CAPABLE outcome; `None` until it completed (or for ever, as plain TCP).
    neg: Option<Negotiated>,
    send: DataSendBuffer,
    recv: Option<DataRecvBuffer>,
    /// The peer's addresses (§3.4), once MPTCP is in use.
    remote_addrs: Option<RemoteAddrs>,
    /// Server: our own addresses announced with ADD_ADDR (§3.4.1).
    announced: Announcements,
    events: VecDeque<Event>,
    /// Where the connection stands (see [`lifecycle`]).
    phase: Phase,
    /// The connection runs as regular TCP (§3.7); possible in every phase, for good.
    fallback: bool,
    /// Only one subflow ever: infinite-mapping fallback is still possible (§3.7).
    single_subflow: bool,
    /// The application closed its direction ([`close`](Self::close)); the DATA_FIN follows
    /// the queued data, whatever the phase.
    app_closed: bool,
    /// [`send`](Self::send) ran out of room: report [`Event::Writable`] when some frees up.
    want_writable: bool,
    /// [`Event::Readable`] reported and not read since (one report per batch of data).
    readable_reported: bool,
    /// [`Event::PeerClosed`] reported (once).
    peer_closed_reported: bool,
    /// The connection's own deadlines ([`timer`]).
    timers: Timers,
    /// Retransmissions of the DATA_FIN so far (backoff of [`Timer::FinRtx`]).
    fin_rtx_backoff: u32,
    /// What [`Timer::DataRto`] watches.
    data_rto: Option<DataRto>,
    /// The initial subflow's SYN carried this many octets ([`send_in_syn`](Self::send_in_syn)),
    /// not yet accounted for (until its SYN-ACK).
    syn_data: Option<(SubflowId, usize)>,
    /// Counters: forged or invalid input dropped.
    pub dropped: u64,
}

fn find_opt(opts: &[MptcpOption], f: impl Fn(&MptcpOption) -> bool) -> Option<&MptcpOption> {
    opts.iter().find(|o| f(o))
}

fn parse_opts(h: &SegmentHeader) -> Vec<MptcpOption> {
    h.options
        .mptcp
        .iter()
        .filter_map(|raw| MptcpOption::parse(raw).ok())
        .collect()
}

fn tcprst(reason: RstReason) -> MptcpOption {
    MptcpOption::MpTcpRst(MpTcpRst {
        transient: false,
        reserved_flags: 0,
        reason,
    })
}

impl Connection {
    fn new_common(
        role: Role,
        cfg: MptcpConfig,
        isn_key: IsnKey,
        remote: SocketAddr,
        local_key: Key,
        pm: PathManager,
    ) -> Connection {
        Connection {
            role,
            cfg,
            isn_key,
            local_key,
            remote,
            pm,
            subflows: Vec::new(),
            next_id: 0,
            redundant_copies: 0,
            neg: None,
            send: DataSendBuffer::new(local_key.idsn().wrapping_add(1), cfg.send_buffer),
            recv: None,
            remote_addrs: None,
            announced: Announcements::default(),
            events: VecDeque::new(),
            phase: Phase::Connecting,
            fallback: false,
            single_subflow: true,
            app_closed: false,
            want_writable: false,
            readable_reported: false,
            peer_closed_reported: false,
            timers: Timers::default(),
            fin_rtx_backoff: 0,
            data_rto: None,
            syn_data: None,
            dropped: 0,
        }
    }

    /// Client: opens a connection to `remote` from `paths[primary]`, with `local_key` (unique:
    /// [`super::crypto::TokenTable::generate`]) and local `ports` (at least one; subflows take
    /// them in turn). `mptcp` false starts as plain TCP (e.g. a network in the
    /// [`super::hostile_cache::HostileCache`]).
    #[expect(clippy::too_many_arguments, reason = "all are needed at creation")]
    pub fn connect(
        now: Instant,
        cfg: MptcpConfig,
        paths: &[LocalPath],
        primary: PathId,
        remote: SocketAddr,
        ports: Vec<u16>,
        local_key: Key,
        isn_key: &IsnKey,
        mptcp: bool,
    ) -> Connection {
        let pm = PathManager::client(now, paths, primary, ports, now + cfg.join_delay);
        let mut c = Connection::new_common(Role::Client, cfg, isn_key.clone(), remote, local_key, pm);
        let addr = paths
            .iter()
            .find(|p| p.id == primary)
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.addr);
        let local = SocketAddr::new(addr, c.pm.take_port());
        let tcp = tcp::Connection::connect(now, local, remote, cfg.tcp, isn_key);
        let iss = tcp.iss().0;
        let hs = if mptcp {
            c.capable_syn()
        } else {
            c.fallback = true;
            c.events.push_back(Event::Fallback {
                path: primary,
                cause: FallbackCause::Disabled,
            });
            Handshake::Plain
        };
        c.push_subflow(primary, tcp, SubflowMp::new(hs, iss));
        if c.fallback {
            c.setup_plain_rx(0);
        }
        if let Some(p) = c.pm.path_mut(primary) {
            p.next_join = now + cfg.join_retry;
        }
        c
    }

    /// Server: a connection from a SYN `syn` received on `path` (from `remote` to `local`), with
    /// our `local_key` (unique, [`super::crypto::TokenTable`]). A SYN without a usable
    /// MP_CAPABLE gives a plain TCP connection (§3.1: respond without MP_CAPABLE).
    #[expect(clippy::too_many_arguments, reason = "all are needed at creation")]
    pub fn accept(
        now: Instant,
        cfg: MptcpConfig,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &SegmentHeader,
        local_key: Key,
        isn_key: &IsnKey,
    ) -> Result<Connection, tcp::AcceptError> {
        let tcp = tcp::Connection::accept(now, local, remote, syn, cfg.tcp, isn_key)?;
        let pm = PathManager::server(path);
        let mut c = Connection::new_common(Role::Server, cfg, isn_key.clone(), remote, local_key, pm);
        let opts = parse_opts(syn);
        let mpc = find_opt(&opts, |o| matches!(o, MptcpOption::MpCapable(_)));
        let listener = CapableListener { config: cfg.capable };
        let hs = match listener.on_syn(mpc) {
            Ok(s) => Handshake::CapableSynRecv {
                sr: listener.accept(s, local_key),
                early_dss: Vec::new(),
            },
            Err(f) => {
                c.fallback = true;
                c.events.push_back(Event::Fallback {
                    path,
                    cause: FallbackCause::Handshake(f),
                });
                Handshake::Plain
            }
        };
        let mut mp = SubflowMp::new(hs, tcp.iss().0);
        mp.irs = Some(syn.seq.0);
        c.push_subflow(path, tcp, mp);
        if c.fallback {
            c.setup_plain_rx(0);
        }
        Ok(c)
    }

    /// The handshake state of a client's initial subflow: SYN with MP_CAPABLE.
    fn capable_syn(&self) -> Handshake {
        Handshake::CapableSyn {
            init: CapableInitiator::new(self.cfg.capable, self.local_key),
            mpc_syns: 0,
            max_mpc_syns: self.cfg.mpc_syn_attempts,
        }
    }

    fn push_subflow(&mut self, path: PathId, tcp: tcp::Connection, mut mp: SubflowMp) {
        mp.checksums = self.neg.is_some_and(|n| n.checksums);
        let id = SubflowId(self.next_id);
        self.next_id += 1;
        self.subflows.push(Subflow {
            id,
            path,
            tcp,
            mp,
            up: false,
            dead: false,
            bytes_sent: 0,
        });
    }

    // ------------------------------------------------------------------ read-only API

    /// Our token (how MP_JOIN SYNs name this connection), once MP_CAPABLE completed.
    pub fn token(&self) -> Option<Token> {
        self.neg.map(|n| n.local_token())
    }

    /// The token of our key (reserved in the caller's token table from creation on).
    pub fn local_token(&self) -> Token {
        self.local_key.token()
    }

    /// MPTCP in use (handshake done, no fallback).
    pub fn is_mptcp(&self) -> bool {
        self.neg.is_some() && !self.fallback
    }

    /// The 4-tuples (local, remote) of the subflows that may still receive packets.
    pub fn subflow_tuples(&self) -> impl Iterator<Item = (SocketAddr, SocketAddr)> + '_ {
        self.subflows.iter().map(|s| (s.tcp.local(), s.tcp.remote()))
    }

    /// Health and state of every subflow (the policy layer's input).
    pub fn subflows(&self) -> Vec<SubflowInfo> {
        self.subflows
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.dead)
            .map(|(i, s)| SubflowInfo {
                id: s.id,
                path: s.path,
                local: s.tcp.local(),
                remote: s.tcp.remote(),
                state: s.tcp.state(),
                usable: self.usable(i),
                backup: s.mp.backup || s.mp.peer_backup,
                health: s.tcp.health(),
                bytes_sent: s.bytes_sent,
            })
            .collect()
    }

    /// Chunks also sent on another subflow (redundant scheduling).
    pub fn redundant_copies(&self) -> u64 {
        self.redundant_copies
    }

    /// The destination (the initial subflow's remote address).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The path the initial subflow was opened on (or restarted on).
    pub fn initial_path(&self) -> PathId {
        self.pm.initial
    }

    /// The peer's addresses we know, by address ID (0: the initial one; others from ADD_ADDR
    /// or MP_JOIN, §3.2).
    pub fn peer_addresses(&self) -> Vec<(u8, IpAddr)> {
        self.remote_addrs
            .as_ref()
            .map(|ra| ra.iter().map(|(id, a)| (id, a.addr)).collect())
            .unwrap_or_default()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handshake done and able to carry data now.
    fn ready(&self, i: usize) -> bool {
        let s = &self.subflows[i];
        !s.dead
            && matches!(s.tcp.state(), State::Established | State::CloseWait)
            && match s.mp.hs {
                Handshake::Established | Handshake::CapableUnconfirmed(_) => {
                    !self.fallback || s.mp.no_options
                }
                Handshake::Plain => true,
                _ => false,
            }
            && (s.mp.rx.is_some())
            && self.pm.available_to(self.role, s.path)
    }

    /// Ready, and not stalled on retransmission timeouts.
    fn usable(&self, i: usize) -> bool {
        self.ready(i) && self.subflows[i].tcp.health().consecutive_rtos < self.cfg.stall_rtos
    }

    fn live_subflows(&self) -> usize {
        self.subflows.iter().filter(|s| !s.dead).count()
    }

    // ------------------------------------------------------------------ input

    /// A segment for one of this connection's subflows, received on `path`.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        hdr: &SegmentHeader,
        payload: &[u8],
    ) {
        let _ = path;
        let Some(i) = self
            .subflows
            .iter()
            .position(|s| !s.dead && s.tcp.local() == local && s.tcp.remote() == remote)
        else {
            self.dropped += 1;
            return;
        };
        if hdr.flags.rst() && self.on_fastclose(hdr) {
            return;
        }
        {
            let s = &mut self.subflows[i];
            s.tcp.handle_segment_with(now, hdr, payload, &mut s.mp);
        }
        if let Some((h, _ins)) = self.subflows[i].mp.accepted.take() {
            self.on_accepted(now, i, &h, payload.len());
            self.settle_syn_data(i);
            if !payload.is_empty() {
                self.note_data_rx(now, i);
            }
        }
        self.after_io(now);
    }

    /// Bookkeeping after any input, phase by phase. The order matters: each phase's doc line
    /// says what it needs from the ones before it.
    fn after_io(&mut self, now: Instant) {
        // Subflow level: who is still alive, what arrived.
        self.take_subflow_events(); // 1
        self.drain_subflows(); // 2
        // Data level: DATA_ACKs and what they free.
        self.fallback_data_acks(); // 3
        self.forget_acked_mappings(); // 4
        self.reinject_stalled(); // 5
        // Reports and the close.
        self.report_subflows_up(); // 6
        self.report_peer_closed(); // 7
        self.close_when_done(now); // 8
        self.check_orphan(now); // 9
        // Policy: paths and timers on what is left.
        self.check_liveness(now); // 10
        self.damp(now); // 10b
        self.sync_priorities(); // 11
        self.check_data_rto(now); // 12
        self.send_announcements(now); // 13
        self.give_up_joins(); // 14
        self.check_standby(now); // 14b
        self.manage_paths(now); // 15
    }
}

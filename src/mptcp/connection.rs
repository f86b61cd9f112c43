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

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::PathId;
use super::addr::{self, AddAddrOutcome, AddrIdSet, RemoteAddrs};
pub use super::api::{
    Event, FallbackCause, JoinRefused, LocalPath, MptcpConfig, SubflowInfo, SubflowResetCause,
};
use super::crypto::{Key, Nonce, Token};
use super::handshake::{CapableInitiator, CapableListener, JoinInitiator, JoinResponder, Negotiated};
use super::mapping::{Mapping, MappingError, MappingOutcome, ReceivedDss, SubflowReceiver, dss_checksum};
use super::recv::DataRecvBuffer;
use super::scheduler::{self, Candidate};
use super::send::{DataSendBuffer, SubflowId};
use super::seq::{DataSeq, SubflowSeq};
use super::subflow::{Handshake, Subflow, SubflowMp};
use crate::config::{JoinPolicy, Mode};
use crate::tcp::{self, IsnKey, State, Transmit};
use crate::time::Instant;
use crate::wire::mptcp::{CapablePayload, MpTcpRst, MptcpOption, RstReason};
use crate::wire::tcp::SegmentHeader;

#[path = "liveness.rs"]
mod liveness;
pub(in crate::mptcp) use liveness::Liveness;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy)]
struct PathState {
    path: LocalPath,
    available: bool,
    next_join: Instant,
    /// Remote address ID the last join on this path went to.
    joining: Option<u8>,
    /// Remote address IDs whose joins from this path never completed: the path manager tries
    /// the peer's other addresses first (cleared when the path comes back).
    failed: AddrIdSet,
}

impl PathState {
    fn new(path: LocalPath, now: Instant) -> PathState {
        PathState {
            path,
            available: true,
            next_join: now,
            joining: None,
            failed: AddrIdSet::default(),
        }
    }
}

/// One of our own addresses announced to the peer with ADD_ADDR, repeated until echoed.
#[derive(Debug, Clone, Copy)]
struct Announcement {
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
    next: Instant,
    sent: u8,
}

/// One MPTCP connection (client or server role). See the module documentation for the call
/// order.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    cfg: MptcpConfig,
    isn_key: IsnKey,
    paths: Vec<PathState>,
    initial_path: PathId,
    remote: SocketAddr,
    ports: Vec<u16>,
    next_port: usize,
    subflows: Vec<Subflow>,
    next_id: u32,
    neg: Option<Negotiated>,
    send: DataSendBuffer,
    recv: Option<DataRecvBuffer>,
    fallback: bool,
    /// Only one subflow ever: infinite-mapping fallback is still possible (§3.7).
    single_subflow: bool,
    remote_addrs: Option<RemoteAddrs>,
    /// Local ports granted for subflows toward the peer's other addresses
    /// ([`Connection::add_remote_port`]); each is used by one join.
    remote_ports: Vec<(SocketAddr, u16)>,
    /// A port asked for with [`Event::PortNeeded`] and not yet granted.
    port_request: Option<SocketAddr>,
    /// Server: our own addresses announced with ADD_ADDR (§3.4.1), by address ID.
    announced: Vec<Announcement>,
    events: VecDeque<Event>,
    connected: bool,
    terminal: bool,
    peer_closed_reported: bool,
    want_writable: bool,
    readable_reported: bool,
    subflows_closing: bool,
    fin_rtx: Option<(Instant, u32)>,
    /// Data-level retransmission timer: (deadline, DATA_ACK it waits to see move, backoff).
    data_rto: Option<(Instant, DataSeq, u32)>,
    local_key: Key,
    app_closed: bool,
    closed_at: Option<Instant>,
    orphan_since: Option<Instant>,
    bytes_sent: Vec<(SubflowId, u64)>,
    /// Counters: forged or invalid input dropped.
    pub dropped: u64,
}

thread_local! {
    /// The copy buffer between a subflow and the data-level buffers, one per thread for all
    /// connections: an idle connection holds none (memory per idle flow, issue 6 P6).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65536]);
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
        initial_path: PathId,
    ) -> Connection {
        Connection {
            role,
            cfg,
            isn_key,
            paths: Vec::new(),
            initial_path,
            remote,
            ports: Vec::new(),
            next_port: 0,
            subflows: Vec::new(),
            next_id: 0,
            neg: None,
            send: DataSendBuffer::new(local_key.idsn().wrapping_add(1), cfg.send_buffer),
            recv: None,
            fallback: false,
            single_subflow: true,
            remote_addrs: None,
            remote_ports: Vec::new(),
            port_request: None,
            announced: Vec::new(),
            events: VecDeque::new(),
            connected: false,
            terminal: false,
            peer_closed_reported: false,
            want_writable: false,
            readable_reported: false,
            subflows_closing: false,
            fin_rtx: None,
            data_rto: None,
            local_key,
            app_closed: false,
            closed_at: None,
            orphan_since: None,
            bytes_sent: Vec::new(),
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
        let mut c = Connection::new_common(Role::Client, cfg, isn_key.clone(), remote, local_key, primary);
        c.paths = paths.iter().map(|&path| PathState::new(path, now)).collect();
        c.ports = if ports.is_empty() { vec![49152] } else { ports };
        let addr = paths
            .iter()
            .find(|p| p.id == primary)
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.addr);
        let local = SocketAddr::new(addr, c.take_port());
        let tcp = tcp::Connection::connect(now, local, remote, cfg.tcp, isn_key);
        let iss = tcp.iss().0;
        let hs = if mptcp {
            Handshake::CapableSyn {
                init: CapableInitiator::new(cfg.capable, local_key),
                mpc_syns: 0,
                max_mpc_syns: cfg.mpc_syn_attempts,
            }
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
        if let Some(p) = c.paths.iter_mut().find(|p| p.path.id == primary) {
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
        let mut c = Connection::new_common(Role::Server, cfg, isn_key.clone(), remote, local_key, path);
        let opts = parse_opts(syn);
        let mpc = find_opt(&opts, |o| matches!(o, MptcpOption::MpCapable(_)));
        let listener = CapableListener { config: cfg.capable };
        let hs = match listener.on_syn(mpc) {
            Ok(s) => Handshake::CapableSynRecv(listener.accept(s, local_key)),
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

    fn take_port(&mut self) -> u16 {
        let p = self.ports[self.next_port % self.ports.len()];
        self.next_port += 1;
        p
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
        });
        self.bytes_sent.push((id, 0));
    }

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
                bytes_sent: self
                    .bytes_sent
                    .iter()
                    .find(|(id, _)| *id == s.id)
                    .map_or(0, |b| b.1),
            })
            .collect()
    }

    fn path_available(&self, path: PathId) -> bool {
        self.role == Role::Server || self.paths.iter().any(|p| p.path.id == path && p.available)
    }

    /// Handshake done and able to carry data now.
    fn ready(&self, i: usize) -> bool {
        let s = &self.subflows[i];
        !s.dead
            && matches!(s.tcp.state(), State::Established | State::CloseWait)
            && s.mp.join_ack.is_none()
            && match s.mp.hs {
                Handshake::Established => !self.fallback || s.mp.no_options,
                Handshake::Plain => true,
                _ => false,
            }
            && (s.mp.rx.is_some())
            && self.path_available(s.path)
    }

    fn usable(&self, i: usize) -> bool {
        self.ready(i) && self.subflows[i].tcp.health().consecutive_rtos < self.cfg.stall_rtos
    }

    // ------------------------------------------------------------------ application API

    /// Queues bytes; returns how many fit (fewer: wait for [`Event::Writable`]).
    pub fn send(&mut self, data: &[u8]) -> usize {
        if self.terminal {
            return 0;
        }
        let n = self.send.write(data).unwrap_or(0);
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }

    /// Reads in-order data-level bytes; returns how many (0: nothing ready).
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let n = self.recv.as_mut().map_or(0, |r| r.read(buf));
        if n > 0 {
            self.readable_reported = false;
            // Room again at the data level: take what the subflows hold, so their receive
            // windows reopen now (a window update goes out with the next transmit) rather than
            // at the peer's next zero-window probe.
            self.drain_subflows();
        }
        n
    }

    /// Room in the data-level send buffer.
    pub fn send_capacity(&self) -> usize {
        if self.terminal { 0 } else { self.send.free_space() }
    }

    /// The destination (the initial subflow's remote address).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The path the initial subflow was opened on (or restarted on).
    pub fn initial_path(&self) -> PathId {
        self.initial_path
    }

    /// Bytes ready for [`recv`](Self::recv).
    pub fn recv_available(&self) -> usize {
        self.recv.as_ref().map_or(0, |r| r.readable())
    }

    /// The peer closed and everything was read.
    pub fn recv_finished(&self) -> bool {
        self.recv.as_ref().is_some_and(|r| r.is_finished())
    }

    /// Closes our direction: a DATA_FIN follows the queued data (§3.3.3).
    pub fn close(&mut self) {
        self.app_closed = true;
        self.send.close();
    }

    /// Aborts: MP_FASTCLOSE on a RST on every subflow (§3.5), everything dropped; no event.
    pub fn abort(&mut self) {
        let fc = self.neg.filter(|_| !self.fallback).map(|n| n.fastclose_option());
        for s in &mut self.subflows {
            s.mp.rst_opt = fc;
            s.tcp.abort();
            s.dead = true;
        }
        self.terminal = true;
    }

    /// Whether a terminal event was reported (or [`abort`](Self::abort) called).
    pub fn is_closed(&self) -> bool {
        self.terminal
    }

    // ------------------------------------------------------------------ policy API

    /// The policy layer declares `path` down (link gone): its subflows are dropped at once and
    /// what they carried is reinjected on the others, without waiting for an RTO (§3.3.6).
    pub fn path_down(&mut self, now: Instant, path: PathId) {
        if let Some(p) = self.paths.iter_mut().find(|p| p.path.id == path) {
            p.available = false;
        }
        let mut removed = Vec::new();
        for i in 0..self.subflows.len() {
            if self.subflows[i].path == path && !self.subflows[i].dead {
                self.subflows[i].mp.rst_opt = None;
                self.subflows[i].tcp.abort();
                self.kill_subflow(i);
                removed.push(self.subflows[i].mp.local_addr_id);
            }
        }
        // §3.4.2: the peer learns at once that the address is gone (it closes its side of
        // those subflows and retransmits what they carried on the others).
        for id in removed {
            self.signal_removed(id);
        }
        self.sync_priorities();
        self.after_io(now);
    }

    /// Adds `path`, or updates it (a new address: its old subflows are dropped as if the path
    /// went down, and new ones are joined from the new address).
    pub fn add_path(&mut self, now: Instant, path: LocalPath) {
        match self.paths.iter().position(|p| p.path.id == path.id) {
            Some(k) if self.paths[k].path.addr != path.addr => {
                self.path_down(now, path.id);
                self.paths[k].path = path;
                self.path_up(now, path.id);
            }
            Some(k) => self.paths[k].path = path,
            None => {
                self.paths.push(PathState::new(path, now));
                self.after_io(now);
            }
        }
    }

    /// Adds a local port for subflows; the next subflow opened takes it (a fresh 4-tuple for a
    /// path joined again, so no stale state at the peer collides with it).
    pub fn add_port(&mut self, port: u16) {
        let at = self.next_port % self.ports.len().max(1);
        self.ports.insert(at, port);
    }

    /// Local ports in use or reserved by this connection.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The path is back: the path manager re-creates a subflow on it (client).
    pub fn path_up(&mut self, now: Instant, path: PathId) {
        if let Some(p) = self.paths.iter_mut().find(|p| p.path.id == path) {
            p.available = true;
            p.next_join = now;
            // Another network: every peer address is worth a try again.
            p.failed = AddrIdSet::default();
        }
        self.after_io(now);
    }

    /// The peer's addresses we know, by address ID (0: the initial one; others from ADD_ADDR
    /// or MP_JOIN, §3.2).
    pub fn peer_addresses(&self) -> Vec<(u8, IpAddr)> {
        self.remote_addrs
            .as_ref()
            .map(|ra| ra.iter().map(|(id, a)| (id, a.addr)).collect())
            .unwrap_or_default()
    }

    /// Grants local `port` for one subflow toward `remote`, one of the peer's other addresses
    /// (the answer to [`Event::PortNeeded`]: the caller makes sure that segments from `remote` to
    /// `port` reach this connection).
    pub fn add_remote_port(&mut self, now: Instant, remote: SocketAddr, port: u16) {
        if self.port_request == Some(remote) {
            self.port_request = None;
        }
        self.remote_ports.push((remote, port));
        self.after_io(now);
    }

    /// Server: announces our address `addr` (and `port`, if joins should use another port) under
    /// `addr_id` (1–255) with ADD_ADDR, repeated until the peer echoes it (RFC 8684 §3.4.1);
    /// joins that arrive for it are answered with that address ID. False if the connection
    /// does not use MPTCP or the ID is 0 or taken.
    pub fn announce_addr(&mut self, now: Instant, addr_id: u8, addr: IpAddr, port: Option<u16>) -> bool {
        if addr_id == 0 || !self.is_mptcp() || self.announced.iter().any(|a| a.addr_id == addr_id) {
            return false;
        }
        self.announced.push(Announcement {
            addr_id,
            addr,
            port,
            next: now,
            sent: 0,
        });
        self.after_io(now);
        true
    }

    /// Sends due ADD_ADDR announcements on a subflow that carries data.
    fn send_announcements(&mut self, now: Instant) {
        let due = |a: &Announcement| a.sent < Self::ANNOUNCE_TRIES && now >= a.next;
        if !self.announced.iter().any(due) {
            return;
        }
        let Some(neg) = self.neg else { return };
        let Some(i) = (0..self.subflows.len()).find(|&i| self.ready(i)) else {
            return;
        };
        for a in self.announced.iter_mut().filter(|a| due(a)) {
            // §3.4.1: "If the sender does not receive an echo ... within a configured time, it
            // SHOULD retransmit the ADD_ADDR".
            let s = &mut self.subflows[i];
            s.mp.oneoff
                .push_back(addr::announce(&neg, a.addr_id, a.addr, a.port));
            s.tcp.request_ack();
            a.sent += 1;
            a.next = now + Self::ANNOUNCE_RTX;
        }
    }

    /// ADD_ADDR repetitions until echoed, and their spacing.
    const ANNOUNCE_TRIES: u8 = 4;
    const ANNOUNCE_RTX: Duration = Duration::from_secs(1);

    /// Changes the backup priority of `path`'s subflows and tells the peer (MP_PRIO, §3.3.8).
    pub fn set_path_backup(&mut self, path: PathId, backup: bool) {
        if let Some(p) = self.paths.iter_mut().find(|p| p.path.id == path) {
            p.path.backup = backup;
        }
        for s in &mut self.subflows {
            if s.path == path && !s.dead && s.mp.backup != backup {
                s.mp.backup = backup;
                if !self.fallback && self.neg.is_some() {
                    s.mp.oneoff.push_back(MptcpOption::MpPrio { backup });
                    s.tcp.request_ack();
                }
            }
        }
    }

    // ------------------------------------------------------------------ events and timers

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.subflows.iter().filter_map(|s| s.tcp.poll_timeout()).min();
        let mut add = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        if let Some((at, _)) = self.fin_rtx {
            add(at);
        }
        if let Some(since) = self.orphan_since {
            add(since + self.cfg.orphan_timeout);
        }
        if self.terminal {
            return t;
        }
        if let Some(x) = self.liveness_deadline() {
            add(x);
        }
        if let Some((x, _, _)) = self.data_rto {
            add(x);
        }
        for p in &self.paths {
            if self.join_wanted(p).is_some() {
                add(p.next_join);
            }
        }
        let pending = self.announced.iter().filter(|a| a.sent < Self::ANNOUNCE_TRIES);
        if let Some(next) = pending.map(|a| a.next).min()
            && (0..self.subflows.len()).any(|i| self.ready(i))
        {
            add(next);
        }
        t
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in &mut self.subflows {
            s.tcp.handle_timeout(now);
        }
        if let Some((at, n)) = self.fin_rtx
            && now >= at
        {
            if self.send.fin_acked() {
                self.fin_rtx = None;
            } else {
                // RFC 8684 §3.3.3: the DATA_FIN is retransmitted until DATA_ACKed.
                let fin = self.subflows.iter().find_map(|s| s.mp.bare_fin);
                if let Some(i) = (0..self.subflows.len()).find(|&i| self.ready(i))
                    && let Some(fin) = fin
                {
                    self.subflows[i].mp.bare_fin = Some(fin);
                    self.subflows[i].tcp.request_ack();
                }
                let back = self.cfg.tcp.initial_rto.saturating_mul(1 << n.min(6));
                self.fin_rtx = Some((now + back, n + 1));
            }
        }
        self.after_io(now);
    }

    // ------------------------------------------------------------------ input

    /// An MP_JOIN SYN for this connection (server): verifies the token (§3.2: "Demultiplexing
    /// subflow SYNs MUST be done using the token") and answers with our HMAC. `Err`: reset it.
    pub fn accept_join(
        &mut self,
        now: Instant,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &SegmentHeader,
        nonce: Nonce,
    ) -> Result<(), JoinRefused> {
        // After a graceful close, joins are still taken for a while (like TIME-WAIT): the
        // peer may be missing the DATA_ACK of its DATA_FIN and need a subflow to get it.
        let linger = self.cfg.tcp.time_wait.max(Duration::from_secs(2)) * 4;
        let open = !self.terminal || self.closed_at.is_some_and(|t| now < t + linger);
        let Some(neg) = self.neg.filter(|_| !self.fallback && open) else {
            return Err(JoinRefused::NotAccepting);
        };
        if self.live_subflows() >= self.cfg.max_subflows {
            return Err(JoinRefused::NotAccepting);
        }
        let opts = parse_opts(syn);
        let join = find_opt(&opts, |o| matches!(o, MptcpOption::MpJoin(_)));
        // §3.2: our address ID for the address the join came to (0: the initial one).
        let addr_id = self
            .announced
            .iter()
            .find(|a| a.addr == local.ip())
            .map_or(0, |a| a.addr_id);
        let (resp, synack) = JoinResponder::on_syn(
            join,
            |t| (t == neg.local_token()).then_some(&neg),
            nonce,
            false,
            addr_id,
        )?;
        let tcp = tcp::Connection::accept(now, local, remote, syn, self.cfg.tcp, &self.isn_key)?;
        let mut mp = SubflowMp::new(Handshake::JoinSynRecv(resp, synack), tcp.iss().0);
        mp.irs = Some(syn.seq.0);
        self.push_subflow(path, tcp, mp);
        Ok(())
    }

    fn live_subflows(&self) -> usize {
        self.subflows.iter().filter(|s| !s.dead).count()
    }

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
        if hdr.flags.rst() {
            let opts = parse_opts(hdr);
            if let Some(neg) = self.neg
                && let Some(fc) = find_opt(&opts, |o| matches!(o, MptcpOption::MpFastclose { .. }))
            {
                // RFC 8684 §3.5: act on an MP_FASTCLOSE only with the valid key.
                if neg.is_valid_fastclose(fc) {
                    for s in &mut self.subflows {
                        s.mp.rst_opt = None;
                        s.tcp.abort();
                        s.dead = true;
                    }
                    self.terminal_event(Event::Reset);
                    return;
                }
                self.dropped += 1;
            }
        }
        {
            let s = &mut self.subflows[i];
            s.tcp.handle_segment_with(now, hdr, payload, &mut s.mp);
        }
        if let Some((h, _ins)) = self.subflows[i].mp.accepted.take() {
            self.on_accepted(now, i, &h, payload.len());
            if !payload.is_empty() {
                self.note_data_rx(now, i);
            }
        }
        self.after_io(now);
    }

    fn setup_negotiated(&mut self, neg: Negotiated) {
        self.neg = Some(neg);
        self.recv = Some(DataRecvBuffer::new(
            neg.remote_first_dsn(),
            self.cfg.recv_buffer.saturating_mul(4),
        ));
        self.remote_addrs = Some(RemoteAddrs::new(self.remote.ip()));
        for s in &mut self.subflows {
            s.mp.checksums = neg.checksums;
        }
    }

    fn new_rx(&self) -> SubflowReceiver {
        SubflowReceiver::new(
            SubflowSeq::FIRST_DATA,
            self.neg.is_some_and(|n| n.checksums),
            self.cfg.tcp.recv_buffer,
        )
    }

    /// Plain TCP from the start on subflow `i`: the subflow's bytes are the data stream.
    fn setup_plain_rx(&mut self, i: usize) {
        let base = DataSeq(1);
        if self.recv.is_none() {
            self.recv = Some(DataRecvBuffer::new(base, self.cfg.recv_buffer.saturating_mul(4)));
        }
        let mut rx = SubflowReceiver::new(SubflowSeq::FIRST_DATA, false, self.cfg.tcp.recv_buffer);
        let inf = Mapping {
            dsn: base,
            subflow_seq: SubflowSeq::FIRST_DATA,
            data_len: 0,
            data_fin: false,
            checksum: None,
        };
        if let Some(recv) = self.recv.as_mut() {
            let _ = rx.on_mapping(inf, recv);
        }
        let s = &mut self.subflows[i];
        s.mp.rx = Some(rx);
        s.mp.no_options = true;
    }

    fn enter_fallback(&mut self, i: usize, cause: FallbackCause) {
        self.fallback = true;
        self.events.push_back(Event::Fallback {
            path: self.subflows[i].path,
            cause,
        });
        if self.neg.is_none() || self.subflows[i].mp.rx.is_none() {
            self.subflows[i].mp.hs = Handshake::Plain;
            self.setup_plain_rx(i);
            return;
        }
        // §3.7: after the handshake, fall back with an infinite mapping: the subflow's bytes
        // from the first unmapped one map linearly onto the data stream.
        let s = &mut self.subflows[i];
        let (end_seq, end_dsn) = s.mp.last_rx_map_end.unwrap_or((
            SubflowSeq::FIRST_DATA,
            self.neg.map_or(DataSeq(1), |n| n.remote_first_dsn()),
        ));
        // With a single subflow and no reinjection into it, DSN − subflow sequence number is the
        // same for every octet: the infinite mapping starts at the first octet not yet handed on
        // (segments whose mapping was stripped may sit before the last mapping seen).
        let pending = s.mp.rx.as_ref().map_or(0, |r| r.pending_bytes()) as u32;
        let seq = s
            .recv_rel()
            .map_or(end_seq, |r| SubflowSeq(r.0.wrapping_sub(pending)));
        let dsn = end_dsn.wrapping_add(i64::from(seq.diff(end_seq)) as u64);
        let inf = Mapping {
            dsn,
            subflow_seq: seq,
            data_len: 0,
            data_fin: false,
            checksum: s.mp.checksums.then_some(0),
        };
        if let (Some(rx), Some(recv)) = (s.mp.rx.as_mut(), self.recv.as_mut()) {
            let _ = rx.on_mapping(inf, recv);
        }
        s.mp.no_options = true;
        s.mp.mpc_unconfirmed = None;
        s.mp.bare_fin = None;
        if self.app_closed && !self.send.has_pending() && !self.send.fin_acked() {
            // Our DATA_FIN already went out in a DSS: after fallback it is the subflow's FIN.
            s.tcp.close();
        }
        // Every other subflow goes (§3.7: fallback leaves a single subflow).
        for j in 0..self.subflows.len() {
            if j != i && !self.subflows[j].dead {
                self.subflows[j].tcp.abort();
                self.kill_subflow(j);
            }
        }
    }

    /// The data-level retransmission timer (RFC 8684 §3.3.6: the sender "MUST keep data in its
    /// send buffer as long as the data has not been acknowledged at the connection level"; data
    /// the subflows delivered may still be lost above them, e.g. dropped by the peer outside
    /// its data-level window). When the DATA_ACK has not moved for twice the largest subflow
    /// RTO (backing off), and no subflow still holds data of its own to retransmit, everything
    /// not DATA_ACKed is sent again.
    fn check_data_rto(&mut self, now: Instant) {
        let live = |s: &&Subflow| !s.dead && !s.mp.no_options;
        if self.fallback || self.neg.is_none() || self.terminal || self.send.in_flight() == 0 {
            self.data_rto = None;
            return;
        }
        let una = self.send.snd_una();
        if self.data_rto.is_some_and(|(at, seen, _)| seen == una && now < at) {
            return;
        }
        let base = self
            .subflows
            .iter()
            .filter(live)
            .map(|s| s.tcp.health().rto)
            .max()
            .unwrap_or(self.cfg.tcp.initial_rto)
            .max(Duration::from_millis(200))
            * 2;
        match self.data_rto {
            Some((_, seen, n)) if seen == una => {
                let drained = self
                    .subflows
                    .iter()
                    .filter(live)
                    .all(|s| s.tcp.send_queued() == 0);
                if drained && (0..self.subflows.len()).any(|i| self.ready(i)) {
                    let q = self.send.retransmit_unacked();
                    tracing::debug!(bytes = q, dsn = una.0, "data-level retransmission timeout");
                }
                self.data_rto = Some((now + base * (1 << n.min(6)), una, n + 1));
            }
            _ => self.data_rto = Some((now + base, una, 1)),
        }
    }

    /// §3.7, single subflow: MP_FAIL for `dsn` on the next ACK (the failure report, or the answer
    /// to the peer's), an infinite mapping on the next data segment, regular TCP from here on.
    fn fail_to_tcp(&mut self, i: usize, dsn: DataSeq) {
        if self.fallback {
            return;
        }
        self.enter_fallback(i, FallbackCause::ChecksumFailed);
        let s = &mut self.subflows[i];
        s.mp.oneoff.push_front(MptcpOption::MpFail { dsn: dsn.0 });
        s.mp.infinite_tx = true;
        s.tcp.request_ack();
    }

    fn reset_subflow(&mut self, i: usize, opt: MptcpOption, cause: SubflowResetCause) {
        let id = self.subflows[i].id;
        self.subflows[i].mp.rst_opt = Some(opt);
        self.subflows[i].tcp.abort();
        self.events.push_back(Event::SubflowReset { id, cause });
        self.kill_subflow(i);
    }

    fn kill_subflow(&mut self, i: usize) {
        let s = &mut self.subflows[i];
        if s.dead {
            return;
        }
        s.dead = true;
        if !s.up
            && matches!(s.mp.hs, Handshake::JoinSyn(_) | Handshake::Established)
            && let Some(p) = self.paths.iter_mut().find(|p| p.path.id == s.path)
            && let Some(id) = p.joining
        {
            // A join that never carried data: try the peer's other addresses from this path.
            p.failed.insert(id);
        }
        // After fallback the data stream continues on the remaining subflow alone: nothing is
        // reinjected into it.
        if !self.fallback {
            self.send.mark_subflow_failed(s.id);
        }
        self.events.push_back(Event::SubflowDown {
            id: s.id,
            path: s.path,
        });
    }

    fn on_accepted(&mut self, now: Instant, i: usize, h: &SegmentHeader, payload_len: usize) {
        let _ = now;
        let opts = parse_opts(h);
        let syn = h.flags.syn();
        if syn && h.flags.ack() && self.subflows[i].mp.irs.is_none() {
            self.subflows[i].mp.irs = Some(h.seq.0);
        }
        let hs = std::mem::replace(&mut self.subflows[i].mp.hs, Handshake::Taken);
        match hs {
            Handshake::CapableSyn {
                init,
                mpc_syns,
                max_mpc_syns,
            } if syn && h.flags.ack() => {
                self.subflows[i].mp.irs = Some(h.seq.0);
                let mpc = find_opt(&opts, |o| matches!(o, MptcpOption::MpCapable(_)));
                // The SYNs with MP_CAPABLE went unanswered and the last one went without it.
                let sent_mpc_last = mpc_syns < max_mpc_syns;
                match init.on_syn_ack(mpc) {
                    Ok(neg) => {
                        self.setup_negotiated(neg);
                        let rx = self.new_rx();
                        let s = &mut self.subflows[i];
                        s.mp.hs = Handshake::Established;
                        s.mp.rx = Some(rx);
                        // RFC 8684 §3.1: the third ACK carries both keys; repeated until a DSS
                        // from the peer confirms it.
                        s.mp.mpc_unconfirmed = Some(neg.third_ack_option(None));
                    }
                    Err(f) => {
                        let cause = if mpc.is_none() && !sent_mpc_last {
                            FallbackCause::SynUnanswered
                        } else {
                            FallbackCause::Handshake(f)
                        };
                        self.enter_fallback(i, cause);
                    }
                }
            }
            Handshake::CapableSynRecv(sr) if !syn && h.flags.ack() => {
                let mpc = find_opt(&opts, |o| matches!(o, MptcpOption::MpCapable(_)));
                if mpc.is_none() && find_opt(&opts, |o| matches!(o, MptcpOption::Dss(_))).is_some() {
                    // Third ACK and first data lost; a later segment: wait for the
                    // retransmission of the one carrying MP_CAPABLE, keeping its mapping (TCP
                    // acknowledges the data, so it will not come again).
                    for o in &opts {
                        if let MptcpOption::Dss(d) = o
                            && self.subflows[i].mp.early_dss.len() < 1024
                        {
                            self.subflows[i].mp.early_dss.push(*d);
                        }
                    }
                    self.subflows[i].mp.hs = Handshake::CapableSynRecv(sr);
                    return;
                }
                match sr.on_third_ack(mpc) {
                    Ok((neg, map)) => {
                        self.setup_negotiated(neg);
                        let mut rx = self.new_rx();
                        if let (Some(m), Some(recv)) = (map, self.recv.as_mut()) {
                            let _ = rx.on_mapping(m, recv);
                            self.subflows[i].mp.last_rx_map_end = Some((
                                m.subflow_seq.wrapping_add(m.subflow_len()),
                                m.dsn.wrapping_add(u64::from(m.subflow_len())),
                            ));
                        }
                        let s = &mut self.subflows[i];
                        s.mp.hs = Handshake::Established;
                        s.mp.rx = Some(rx);
                        let early = std::mem::take(&mut s.mp.early_dss);
                        for d in early {
                            let rcv_nxt = self.recv.as_ref().map_or(DataSeq(0), |r| r.rcv_nxt());
                            if let Some(m) = ReceivedDss::expand(&d, self.send.snd_una(), rcv_nxt).mapping {
                                self.on_mapping(i, m);
                            }
                        }
                        self.process_options(i, h, &opts, payload_len);
                    }
                    Err(f) => self.enter_fallback(i, FallbackCause::Handshake(f)),
                }
            }
            Handshake::JoinSyn(j) if syn && h.flags.ack() => {
                self.subflows[i].mp.irs = Some(h.seq.0);
                let join = find_opt(&opts, |o| matches!(o, MptcpOption::MpJoin(_)));
                match j.on_syn_ack(join) {
                    Ok((joined, ack)) => {
                        let rx = self.new_rx();
                        let s = &mut self.subflows[i];
                        s.mp.hs = Handshake::Established;
                        s.mp.peer_backup = joined.peer_backup;
                        s.mp.remote_addr_id = joined.peer_addr_id;
                        s.mp.rx = Some(rx);
                        // §3.2: the third ACK is delivered reliably; no data before.
                        s.mp.join_ack = Some(ack);
                        // A second subflow: infinite-mapping fallback is no longer possible.
                        self.single_subflow = false;
                    }
                    Err(e) => {
                        // §3.2: "Host A MUST close the subflow with a TCP RST".
                        self.reset_subflow(
                            i,
                            tcprst(e.rst_reason()),
                            SubflowResetCause::PeerMisbehaved("MP_JOIN SYN/ACK"),
                        );
                    }
                }
            }
            Handshake::JoinSynRecv(resp, synack) if !syn && h.flags.ack() => {
                let join = find_opt(&opts, |o| matches!(o, MptcpOption::MpJoin(_)));
                match resp.on_ack(join) {
                    Ok(joined) => {
                        let rx = self.new_rx();
                        let s = &mut self.subflows[i];
                        s.mp.hs = Handshake::Established;
                        s.mp.peer_backup = joined.peer_backup;
                        s.mp.remote_addr_id = joined.peer_addr_id;
                        s.mp.rx = Some(rx);
                        // §3.2: "receipt of this packet MUST trigger a regular TCP ACK".
                        s.tcp.request_ack();
                        self.single_subflow = false;
                        let remote_ip = s.tcp.remote().ip();
                        if let Some(ra) = self.remote_addrs.as_mut() {
                            ra.on_join(joined.peer_addr_id, remote_ip);
                        }
                    }
                    Err(e) => {
                        let _ = synack;
                        // §3.2: "If Host B does not receive the expected HMAC ... it MUST close
                        // the subflow with a TCP RST."
                        self.dropped += 1;
                        self.reset_subflow(
                            i,
                            tcprst(e.rst_reason()),
                            SubflowResetCause::PeerMisbehaved("MP_JOIN third ACK"),
                        );
                    }
                }
            }
            Handshake::Established => {
                self.subflows[i].mp.hs = Handshake::Established;
                if !syn && self.subflows[i].mp.join_ack.is_some() {
                    // The peer answered after our third ACK: it has it (§3.2).
                    self.subflows[i].mp.join_ack = None;
                }
                self.process_options(i, h, &opts, payload_len);
            }
            other => self.subflows[i].mp.hs = other,
        }
    }

    fn process_options(&mut self, i: usize, h: &SegmentHeader, opts: &[MptcpOption], payload_len: usize) {
        if self.fallback || self.subflows[i].mp.no_options {
            return;
        }
        if opts.is_empty() && !h.flags.syn() && !h.flags.rst() {
            let _ = payload_len;
            if self.subflows[i].mp.mpc_unconfirmed.is_some() {
                // Our MP_CAPABLE is not confirmed yet: the server may still be waiting for it
                // (third ACK and first data lost) and ACKs without options meanwhile. Only an
                // ACK of data past the first segment without a DSS shows it fell back.
                let s = &self.subflows[i];
                let acked = h.ack.0.wrapping_sub(s.mp.iss) as i32;
                if acked <= 1 {
                    return;
                }
            }
            // §3.7: MPTCP options vanished after the handshake: a middlebox. Fall back with an
            // infinite mapping while that is still possible (one subflow, the data stream
            // continuous on it), otherwise the subflow MUST be closed with "Middlebox
            // interference".
            if self.single_subflow {
                self.enter_fallback(i, FallbackCause::OptionsStripped);
            } else {
                self.reset_subflow(
                    i,
                    tcprst(RstReason::MiddleboxInterference),
                    SubflowResetCause::PathIncompatible("options stripped"),
                );
            }
            return;
        }
        let Some(neg) = self.neg else { return };
        let window = {
            let s = &self.subflows[i];
            let shift = s.tcp.window_scale().map_or(0, |w| w.0);
            u32::from(h.window) << shift
        };
        for opt in opts {
            match opt {
                MptcpOption::Dss(dss) => {
                    let rcv_nxt = self.recv.as_ref().map_or(DataSeq(0), |r| r.rcv_nxt());
                    let r = ReceivedDss::expand(dss, self.send.snd_una(), rcv_nxt);
                    if let Some(a) = r.data_ack {
                        // RFC 8684 §3.1: a DSS from the peer confirms our MP_CAPABLE.
                        self.subflows[i].mp.mpc_unconfirmed = None;
                        if let Ok(o) = self.send.on_data_ack(a, window) {
                            if o.freed > 0 && self.want_writable {
                                self.want_writable = false;
                                self.events.push_back(Event::Writable);
                            }
                            if self.send.fin_acked() {
                                for s in &mut self.subflows {
                                    s.mp.bare_fin = None;
                                }
                            }
                        } else {
                            self.dropped += 1;
                        }
                    }
                    if let Some(m) = r.mapping {
                        self.on_mapping(i, m);
                    }
                }
                MptcpOption::MpCapable(c) => {
                    if let CapablePayload::BothKeysWithData {
                        data_len, checksum, ..
                    } = c.payload
                    {
                        let m = Mapping::from_capable_data(
                            neg.remote_first_dsn().wrapping_add(u64::MAX),
                            data_len,
                            checksum,
                        );
                        self.on_mapping(i, m);
                    }
                }
                MptcpOption::MpPrio { backup } => {
                    // §3.3.8: the subflow's priority changes.
                    self.subflows[i].mp.peer_backup = *backup;
                }
                MptcpOption::AddAddr(a) => {
                    let Some(ra) = self.remote_addrs.as_mut() else {
                        continue;
                    };
                    match ra.on_add_addr(&neg, a) {
                        Ok(AddAddrOutcome::EchoOfOurs { addr_id }) => {
                            // §3.4.1: the echo ends the repetitions of our announcement.
                            if let Some(x) = self.announced.iter_mut().find(|x| x.addr_id == addr_id) {
                                x.sent = Self::ANNOUNCE_TRIES;
                            }
                        }
                        Ok(_) => {
                            // §3.4.1: echo a fresh ADD_ADDR. The path manager joins toward it
                            // from paths of its family when the addresses it tried before do not
                            // answer (or the peer forbade joins to its first address, flag C).
                            self.subflows[i].mp.oneoff.push_back(addr::echo(a));
                            self.subflows[i].tcp.request_ack();
                        }
                        Err(_) => self.dropped += 1,
                    }
                }
                MptcpOption::RemoveAddr { addr_ids } => {
                    let removed = self
                        .remote_addrs
                        .as_mut()
                        .map(|ra| ra.on_remove_addr(addr_ids))
                        .unwrap_or_default();
                    // §3.4.2: subflows using a removed address are closed.
                    for (id, ra) in removed {
                        for j in 0..self.subflows.len() {
                            let s = &self.subflows[j];
                            if !s.dead && s.mp.remote_addr_id == id && s.tcp.remote().ip() == ra.addr {
                                self.subflows[j].tcp.abort();
                                self.kill_subflow(j);
                            }
                        }
                    }
                }
                MptcpOption::MpFail { dsn } if self.single_subflow => {
                    // §3.7: the peer's checksum failed on the only subflow; all data in flight
                    // is contiguous here, so answer with MP_FAIL and an infinite mapping and
                    // go on as regular TCP.
                    self.fail_to_tcp(i, DataSeq(*dsn));
                    return;
                }
                MptcpOption::MpFail { .. } => {
                    // §3.7: the peer's checksum failed for data we sent on this subflow: stop
                    // using it; what it carried is reinjected elsewhere.
                    self.reset_subflow(
                        i,
                        tcprst(RstReason::MiddleboxInterference),
                        SubflowResetCause::PathIncompatible("MP_FAIL received"),
                    );
                    return;
                }
                _ => {}
            }
            if self.subflows[i].dead {
                return;
            }
        }
    }

    fn on_mapping(&mut self, i: usize, m: Mapping) {
        let (Some(rx), Some(recv)) = (self.subflows[i].mp.rx.as_mut(), self.recv.as_mut()) else {
            return;
        };
        match rx.on_mapping(m, recv) {
            Ok(MappingOutcome::Added | MappingOutcome::Duplicate) if !m.is_infinite() => {
                let end = (
                    m.subflow_seq.wrapping_add(m.subflow_len()),
                    m.dsn.wrapping_add(u64::from(m.subflow_len())),
                );
                let s = &mut self.subflows[i];
                if s.mp.last_rx_map_end.is_none_or(|(seq, _)| end.0.diff(seq) > 0) {
                    s.mp.last_rx_map_end = Some(end);
                }
            }
            Ok(MappingOutcome::DataFin) => {
                // A bare DATA_FIN came on a pure ACK: acknowledge it at once.
                self.subflows[i].tcp.request_ack();
            }
            Ok(MappingOutcome::Infinite) if !self.fallback => {
                // §3.7: the peer went back to regular TCP (after an MP_FAIL, or options
                // stripped in its direction); "the receiver SHOULD stop generating Data ACKs".
                self.enter_fallback(i, FallbackCause::OptionsStripped);
            }
            Ok(_) => {}
            Err(e) => self.on_mapping_error(i, e),
        }
    }

    fn on_mapping_error(&mut self, i: usize, e: MappingError) {
        use super::mapping::Fault;
        match (e, e.fault()) {
            (MappingError::ChecksumFailed { dsn }, _) if self.single_subflow => {
                // §3.7: "if a receiver identifies a checksum failure when there is only one
                // path, it will send back an MP_FAIL option on the subflow-level ACK" and the
                // data stream continues as regular TCP from the failed mapping on.
                self.fail_to_tcp(i, dsn);
            }
            (MappingError::ChecksumFailed { dsn }, _) => {
                // §3.7: a checksum failure is signalled with MP_FAIL; with other subflows the
                // subflow is closed with a RST carrying it.
                self.reset_subflow(
                    i,
                    MptcpOption::MpFail { dsn: dsn.0 },
                    SubflowResetCause::PathIncompatible("DSS checksum failed"),
                );
            }
            (MappingError::Unmapped { .. }, _) if self.single_subflow => {
                self.enter_fallback(i, FallbackCause::OptionsStripped);
            }
            (_, Fault::PathIncompatible) => self.reset_subflow(
                i,
                tcprst(RstReason::MiddleboxInterference),
                SubflowResetCause::PathIncompatible("unmapped data"),
            ),
            (e, _) => {
                tracing::debug!(subflow = i, error = %e, "bad DSS mapping, subflow reset");
                self.reset_subflow(
                    i,
                    tcprst(RstReason::MptcpSpecific),
                    SubflowResetCause::BadMapping(e),
                )
            }
        }
    }

    fn terminal_event(&mut self, ev: Event) {
        if !self.terminal {
            self.terminal = true;
            self.events.push_back(ev);
        }
    }

    /// Bookkeeping after any input: subflow events, data moved up, DATA_ACKs derived after
    /// fallback, stall detection, path manager, close.
    fn after_io(&mut self, now: Instant) {
        for i in 0..self.subflows.len() {
            while let Some(ev) = self.subflows[i].tcp.poll_event() {
                match ev {
                    tcp::Event::Reset | tcp::Event::TimedOut => {
                        let initial_syn = matches!(self.subflows[i].mp.hs, Handshake::CapableSyn { .. });
                        let other_path = self
                            .paths
                            .iter()
                            .any(|p| p.available && p.path.id != self.subflows[i].path);
                        if initial_syn && !self.subflows[i].dead && (ev == tcp::Event::Reset || !other_path) {
                            // RFC 9293 §3.10.7.3: a RST answering our SYN means "connection
                            // refused" (no retry elsewhere: the destination said no); a SYN that
                            // timed out with no other path to try fails the connection.
                            self.subflows[i].dead = true;
                            self.terminal_event(if ev == tcp::Event::Reset {
                                Event::Reset
                            } else {
                                Event::TimedOut
                            });
                        } else if self.fallback && !self.subflows[i].dead {
                            self.subflows[i].dead = true;
                            self.terminal_event(if ev == tcp::Event::Reset {
                                Event::Reset
                            } else {
                                Event::TimedOut
                            });
                        }
                        self.kill_subflow(i);
                    }
                    tcp::Event::Closed => {
                        if self.fallback && self.subflows[i].mp.no_options {
                            // After fallback a graceful close means our FIN (the DATA_FIN) was
                            // acknowledged.
                            let nxt = self.send.snd_nxt();
                            let _ = self.send.on_data_ack(nxt, u32::MAX);
                        }
                        self.subflows[i].dead = true;
                    }
                    _ => {}
                }
            }
            if matches!(
                self.subflows[i].mp.hs,
                Handshake::CapableSyn { .. } | Handshake::JoinSyn(_)
            ) && self.subflows[i].tcp.is_closed()
                && !self.subflows[i].dead
            {
                self.kill_subflow(i);
            }
        }
        self.drain_subflows();
        // Fallback: DATA_ACK from the subflow ACK (no DSS any more).
        if self.fallback
            && let Some(s) = self
                .subflows
                .iter_mut()
                .find(|s| s.mp.no_options && !s.mp.tx_maps.is_empty())
        {
            let una = SubflowSeq::from_absolute(s.tcp.snd_una().0, s.mp.iss);
            if let Some(d) = s.mp.dsn_of(una)
                && let Ok(o) = self.send.on_data_ack(d, u32::MAX)
                && o.freed > 0
                && self.want_writable
            {
                self.want_writable = false;
                self.events.push_back(Event::Writable);
            }
        }
        if self.fallback
            && let Some(s) = self.subflows.iter().find(|s| s.mp.no_options)
            && matches!(s.tcp.state(), State::FinWait2 | State::TimeWait)
            && !self.send.fin_acked()
        {
            // The subflow FIN (our DATA_FIN after fallback) was acknowledged.
            let nxt = self.send.snd_nxt();
            let _ = self.send.on_data_ack(nxt, u32::MAX);
        }
        for s in &mut self.subflows {
            // Forget mappings the subflow ACK covered (keep the last for DSN derivation).
            let una = SubflowSeq::from_absolute(s.tcp.snd_una().0, s.mp.iss);
            while s.mp.tx_maps.len() > 1
                && s.mp.tx_maps[0]
                    .subflow_seq
                    .wrapping_add(s.mp.tx_maps[0].subflow_len())
                    .diff(una)
                    <= 0
            {
                s.mp.tx_maps.pop_front();
            }
            if self.send.fin_acked() {
                s.mp.bare_fin = None;
            }
        }
        // Stall detection and subflow-up reports.
        for i in 0..self.subflows.len() {
            if self.subflows[i].dead {
                continue;
            }
            let rtos = self.subflows[i].tcp.health().consecutive_rtos;
            // After fallback the subflow's stream is the data stream: never reinject into it.
            let other = (0..self.subflows.len()).any(|j| j != i && self.ready(j));
            if rtos >= self.cfg.stall_rtos && !self.subflows[i].mp.reinjected && !self.fallback && other {
                // §3.3.6: data of a stalled subflow is retransmitted on another (only when there
                // is another: reinjecting into the same subflow would only duplicate it).
                self.subflows[i].mp.reinjected = true;
                self.send.mark_subflow_failed(self.subflows[i].id);
            } else if rtos == 0 {
                self.subflows[i].mp.reinjected = false;
            }
            if !self.subflows[i].up && self.ready(i) {
                self.subflows[i].up = true;
                let s = &self.subflows[i];
                let ev = Event::SubflowUp {
                    id: s.id,
                    path: s.path,
                    backup: s.mp.backup || s.mp.peer_backup,
                };
                self.events.push_back(ev);
                if !self.connected {
                    self.connected = true;
                    self.events.push_back(Event::Connected {
                        mptcp: !self.fallback,
                    });
                }
            }
        }
        // Peer's DATA_FIN.
        if !self.peer_closed_reported && self.recv.as_ref().is_some_and(|r| r.fin_received()) {
            self.peer_closed_reported = true;
            self.events.push_back(Event::PeerClosed);
        }
        // Both directions done: close the subflows (FIN), then report.
        let both_done = self.send.fin_acked() && self.recv.as_ref().is_some_and(|r| r.fin_received());
        if both_done && !self.subflows_closing {
            self.subflows_closing = true;
            for s in &mut self.subflows {
                if !s.dead {
                    s.tcp.close();
                }
            }
        }
        if self.subflows_closing {
            for s in &mut self.subflows {
                if !s.dead && matches!(s.tcp.state(), State::Established | State::CloseWait) {
                    s.tcp.close();
                }
            }
            // Both data streams are complete: a subflow stalled on RTOs has nothing left to
            // carry; reset it rather than wait for its FIN to time out.
            for i in 0..self.subflows.len() {
                // (Several RTOs: one lost FIN is no dead path, and the peer may still need
                // our DATA_ACK on it.)
                if !self.subflows[i].dead
                    && self.subflows[i].tcp.health().consecutive_rtos >= self.cfg.stall_rtos.max(3)
                {
                    self.subflows[i].mp.rst_opt = None;
                    self.subflows[i].tcp.abort();
                    self.kill_subflow(i);
                }
            }
        }
        if self.subflows_closing
            && !self.terminal
            && self
                .subflows
                .iter()
                .all(|s| s.dead || matches!(s.tcp.state(), State::TimeWait | State::Closed | State::FinWait2))
        {
            self.terminal_event(Event::Closed);
            self.closed_at = Some(now);
        }
        // Orphan detection.
        if !self.terminal {
            let any = (0..self.subflows.len()).any(|i| !self.subflows[i].dead);
            if any {
                self.orphan_since = None;
            } else if self.orphan_since.is_none() {
                self.orphan_since = Some(now);
            }
            if let Some(since) = self.orphan_since
                && now >= since + self.cfg.orphan_timeout
            {
                self.terminal_event(Event::TimedOut);
            }
        } else {
            self.orphan_since = None;
        }
        self.check_liveness(now);
        self.sync_priorities();
        self.check_data_rto(now);
        self.send_announcements(now);
        self.give_up_joins();
        self.manage_paths(now);
    }

    fn drain_subflows(&mut self) {
        let limit = self.cfg.recv_buffer;
        let mut new_data = false;
        for i in 0..self.subflows.len() {
            loop {
                let Some(recv) = self.recv.as_mut() else { return };
                if recv.readable() >= limit {
                    break;
                }
                let s = &mut self.subflows[i];
                let (Some(rel), Some(rx)) = (s.recv_rel(), s.mp.rx.as_mut()) else {
                    break;
                };
                let res = SCRATCH.with_borrow_mut(|sc| {
                    let room = (limit - recv.readable()).min(sc.len());
                    let n = s.tcp.recv(&mut sc[..room]);
                    (n > 0).then(|| rx.on_data(rel, &sc[..n], recv))
                });
                match res {
                    None => break,
                    Some(Ok(k)) => new_data |= k > 0,
                    Some(Err(e)) => {
                        self.on_mapping_error(i, e);
                        break;
                    }
                }
            }
            // After fallback the subflow FIN is the DATA_FIN.
            let s = &self.subflows[i];
            if s.mp.no_options
                && s.tcp.recv_finished()
                && s.mp.rx.as_ref().is_some_and(|r| r.pending_bytes() == 0)
                && let Some(recv) = self.recv.as_mut()
                && !recv.fin_received()
            {
                let at = recv.rcv_nxt();
                let _ = recv.insert_data_fin(at);
            }
        }
        if (new_data || self.recv_available() > 0) && !self.readable_reported && self.recv_available() > 0 {
            self.readable_reported = true;
            self.events.push_back(Event::Readable);
        }
    }

    /// Where a join from `p` should go now ([`Self::join_target`]), if the path manager wants
    /// one there (and, toward another address, a port for it is granted or can be asked for).
    fn join_wanted(&self, p: &PathState) -> Option<(u8, SocketAddr)> {
        if self.role != Role::Client
            || !self.is_mptcp()
            || !p.available
            || self.terminal
            || self.subflows_closing
        {
            return None;
        }
        if self.subflows.iter().any(|s| !s.dead && s.path == p.path.id) {
            return None;
        }
        // Only once the peer confirmed our MP_CAPABLE (a DSS arrived, §3.1): until then the
        // third ACK may still be on its way, and an MP_JOIN that overtakes it names a token the
        // peer does not know yet, which it MUST answer with a RST (§3.2).
        if self
            .subflows
            .iter()
            .any(|s| !s.dead && s.mp.mpc_unconfirmed.is_some())
        {
            return None;
        }
        if self.live_subflows() >= self.cfg.max_subflows {
            return None;
        }
        let needed = match self.cfg.join {
            JoinPolicy::Immediate => true,
            // Only when no other subflow can carry the data.
            JoinPolicy::OnDemand => !(0..self.subflows.len()).any(|i| self.usable(i)),
        };
        if !needed {
            return None;
        }
        self.join_target(p)
            .filter(|&(_, to)| !self.needs_port(to) || self.port_request.is_none())
    }

    /// Where a join from `p` goes: the peer's addresses of `p`'s family (no subflow toward an
    /// address we cannot reach), by address ID, so the initial address first, then those it
    /// announced (§3.4.1). Skipped: addresses whose joins from this path never completed, until
    /// all have failed; and the initial address and port if the peer set flag C (§3.1: "MUST
    /// NOT try to open any additional subflows toward this address and port").
    fn join_target(&self, p: &PathState) -> Option<(u8, SocketAddr)> {
        let ra = self.remote_addrs.as_ref()?;
        let no_source = self.neg.is_some_and(|n| n.peer_no_subflows_to_source);
        let cands = ra
            .iter()
            .filter(|(_, a)| a.addr.is_ipv4() == p.path.addr.is_ipv4())
            .map(|(id, a)| (id, SocketAddr::new(a.addr, a.port.unwrap_or(self.remote.port()))))
            .filter(|&(_, to)| !(no_source && to == self.remote));
        let mut first = None;
        for (id, to) in cands {
            if !p.failed.contains(id) {
                return Some((id, to));
            }
            first.get_or_insert((id, to));
        }
        first
    }

    /// A join toward `to` needs a port granted for it first (not the initial address).
    fn needs_port(&self, to: SocketAddr) -> bool {
        to != self.remote && !self.remote_ports.iter().any(|&(r, _)| r == to)
    }

    /// A join whose SYN went unanswered `mpc_syn_attempts` times is abandoned (not after the
    /// full SYN retry budget of two minutes): the path manager tries the peer's next address
    /// from that path, or the same one again after `join_retry`.
    fn give_up_joins(&mut self) {
        for i in 0..self.subflows.len() {
            let s = &self.subflows[i];
            if !s.dead
                && matches!(s.mp.hs, Handshake::JoinSyn(_))
                && s.tcp.health().consecutive_rtos >= self.cfg.mpc_syn_attempts
            {
                self.subflows[i].mp.rst_opt = None;
                self.subflows[i].tcp.abort();
                self.kill_subflow(i);
            }
        }
    }

    fn manage_paths(&mut self, now: Instant) {
        if self.role == Role::Client
            && self.neg.is_none()
            && !self.fallback
            && !self.terminal
            && self.live_subflows() == 0
        {
            // The initial subflow died before MP_CAPABLE completed (its path went down): start
            // over on another available path, regular paths first.
            let mut avail: Vec<PathState> = self.paths.iter().filter(|p| p.available).copied().collect();
            // Another path than the one that just failed first, then regular before backup.
            let failed = self.initial_path;
            avail.sort_by_key(|p| (p.path.id == failed, p.path.backup));
            if let Some(p) = avail.first() {
                self.initial_path = p.path.id;
                let local = SocketAddr::new(p.path.addr, self.take_port());
                let tcp = tcp::Connection::connect(now, local, self.remote, self.cfg.tcp, &self.isn_key);
                let iss = tcp.iss().0;
                let hs = Handshake::CapableSyn {
                    init: CapableInitiator::new(self.cfg.capable, self.local_key),
                    mpc_syns: 0,
                    max_mpc_syns: self.cfg.mpc_syn_attempts,
                };
                self.push_subflow(p.path.id, tcp, SubflowMp::new(hs, iss));
            }
            return;
        }
        for k in 0..self.paths.len() {
            let p = self.paths[k];
            if now < p.next_join {
                continue;
            }
            let Some((remote_id, to)) = self.join_wanted(&p) else {
                continue;
            };
            let port = if to == self.remote {
                self.take_port()
            } else if let Some(k) = self.remote_ports.iter().position(|&(r, _)| r == to) {
                self.remote_ports.remove(k).1
            } else {
                // Ask the caller for a port that reaches us from that address; the join
                // waits for it.
                if self.port_request.is_none() {
                    self.port_request = Some(to);
                    self.events.push_back(Event::PortNeeded { remote: to });
                }
                continue;
            };
            self.paths[k].next_join = now + self.cfg.join_retry;
            self.paths[k].joining = Some(remote_id);
            self.open_join(now, p.path, SocketAddr::new(p.path.addr, port), to);
        }
    }

    fn open_join(&mut self, now: Instant, path: LocalPath, local: SocketAddr, remote: SocketAddr) {
        let Some(neg) = self.neg else { return };
        let Ok(nonce) = super::crypto::os_random_nonce() else {
            return;
        };
        // Address ID 0 is the initial subflow's address (§3.2: "implicit and have the value
        // zero"); other local addresses get their path id + 1.
        let addr_id = if path.id == self.initial_path {
            0
        } else {
            path.id.0.wrapping_add(1)
        };
        // In handover mode the backup path joins as a backup subflow (§3.3.8, flag B).
        let backup = path.backup && self.cfg.mode == Mode::Handover;
        let tcp = tcp::Connection::connect(now, local, remote, self.cfg.tcp, &self.isn_key);
        let mut mp = SubflowMp::new(
            Handshake::JoinSyn(JoinInitiator::new(&neg, nonce, backup, addr_id)),
            tcp.iss().0,
        );
        mp.backup = backup;
        mp.local_addr_id = addr_id;
        self.push_subflow(path.id, tcp, mp);
    }

    // ------------------------------------------------------------------ output

    fn fill(&mut self, now: Instant) {
        if self.terminal {
            return;
        }
        for _ in 0..4096 {
            if !self.send.has_pending() {
                return;
            }
            let cands: Vec<Candidate> = (0..self.subflows.len())
                .filter(|&i| self.ready(i))
                .map(|i| {
                    let s = &self.subflows[i];
                    let h = s.tcp.health();
                    let mss = usize::from(s.tcp.eff_mss());
                    Candidate {
                        idx: i,
                        backup: s.mp.backup || s.mp.peer_backup,
                        srtt: h.srtt,
                        has_room: s.tcp.send_queued() < h.cwnd as usize + mss && s.tcp.send_capacity() >= mss,
                        failing: h.consecutive_rtos >= self.cfg.stall_rtos,
                    }
                })
                .collect();
            let Some(i) = scheduler::pick(self.cfg.mode, &cands) else {
                return;
            };
            if !self.push_chunk(now, i) {
                return;
            }
        }
    }

    fn push_chunk(&mut self, now: Instant, i: usize) -> bool {
        let s = &mut self.subflows[i];
        let checksums = s.mp.checksums && !s.mp.no_options;
        let opt_len = if s.tcp.timestamps_enabled() { 12 } else { 0 }
            + if s.mp.no_options {
                0
            } else if checksums {
                28
            } else {
                26
            };
        let mut max_len = usize::from(s.tcp.eff_mss()).saturating_sub(opt_len).max(64);
        let rel0 = SubflowSeq::from_absolute(s.tcp.send_seq().0, s.mp.iss);
        if s.mp.mpc_unconfirmed.is_some() && rel0 == SubflowSeq::FIRST_DATA && self.app_closed {
            // The MP_CAPABLE carrying the first data has no DATA_FIN flag (§3.1): keep the
            // DATA_FIN out of the first chunk.
            max_len = max_len.min(self.send.buffered().saturating_sub(1)).max(1);
        }
        let Some(chunk) = self.send.next_chunk(s.id, max_len) else {
            return false;
        };
        let rel = SubflowSeq::from_absolute(s.tcp.send_seq().0, s.mp.iss);
        if chunk.len == 0 {
            // A DATA_FIN alone.
            if s.mp.no_options {
                s.tcp.close();
            } else {
                let mut m = chunk.mapping(SubflowSeq(0));
                if checksums {
                    m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, &[]));
                }
                s.mp.bare_fin = Some(m);
                s.tcp.request_ack();
                self.fin_rtx = Some((now + s.tcp.health().rto, 0));
            }
            return true;
        }
        let send = &self.send;
        let (n, sent, m) = SCRATCH.with_borrow_mut(|sc| {
            if sc.len() < chunk.len {
                sc.resize(chunk.len, 0);
            }
            let n = send.copy_out(chunk.dsn, &mut sc[..chunk.len]);
            let bytes = &sc[..n];
            let mut m = chunk.mapping(rel);
            if checksums {
                // RFC 8684 §3.3.1: the checksum covers the pseudo-header and the mapped payload.
                m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, bytes));
            }
            (n, s.tcp.send(bytes), m)
        });
        debug_assert_eq!(sent, n);
        if let Some(b) = self.bytes_sent.iter_mut().find(|b| b.0 == s.id) {
            b.1 += sent as u64;
        }
        s.mp.tx_maps.push_back(m);
        if chunk.data_fin {
            if s.mp.no_options {
                s.tcp.close();
            } else {
                self.fin_rtx = Some((now + s.tcp.health().rto.max(Duration::from_millis(200)) * 2, 0));
            }
        }
        true
    }

    /// Writes the next packet due into `buf` (at least MSS + 100 bytes); returns the path to
    /// send it on and what was written.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, Transmit)> {
        self.fill(now);
        let data_ack = self.recv.as_ref().map(|r| r.data_ack());
        for k in 0..self.subflows.len() {
            let s = &mut self.subflows[k];
            if !s.dead
                && !self.paths.is_empty()
                && !self.paths.iter().any(|p| p.path.id == s.path && p.available)
            {
                continue;
            }
            s.mp.data_ack = data_ack;
            if let Some(t) = s.tcp.poll_transmit_with(now, buf, &mut s.mp) {
                if s.mp.live.busy_since.is_none() && s.tcp.health().bytes_in_flight > 0 {
                    s.mp.live.busy_since = Some(now);
                }
                return Some((s.path, t));
            }
        }
        // Drop subflows that are gone for good.
        self.subflows.retain(|s| !(s.dead && s.tcp.is_closed()));
        None
    }
}

//! Many MPTCP connections behind one demux: client connections get a block of local ports from
//! a configured range (a subflow's local port names its connection: O(1) lookup by port);
//! server subflows are found by 4-tuple, MP_JOIN SYNs by token (RFC 8684 §3.2:
//! "Demultiplexing subflow SYNs MUST be done using the token"). Segments matching nothing get a
//! RST (RFC 9293 §3.10.7.1).
//!
//! Call order as for [`Connection`]: `handle_packet` / `handle_timeout` / per-connection
//! application calls through [`Endpoint::get_mut`], then `poll_transmit` until `None`, then
//! [`Endpoint::poll_event`], then sleep until `poll_timeout`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use super::PathId;
use super::connection::{Connection, Event, LocalPath, MptcpConfig};
use super::crypto::{KeyGenError, Token, TokenTable, os_random_nonce};
use crate::tcp::{self, IsnKey, Transmit};
use crate::time::Instant;
use crate::wire::mptcp::MptcpOption;
use crate::wire::tcp::SegmentHeader;

/// A connection's handle in its [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnHandle(pub usize);

/// Why a client connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Every port block of the range is in use.
    #[error("no free local port block")]
    NoPorts,
    /// No unique key could be generated.
    #[error(transparent)]
    Key(#[from] KeyGenError),
}

/// Endpoint settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Settings of every connection.
    pub mptcp: MptcpConfig,
    /// Local ports for client subflows.
    pub ports: RangeInclusive<u16>,
    /// Ports per client connection (its subflows take them in turn).
    pub ports_per_conn: u16,
    /// Accept connections to these local addresses (server role).
    pub listen: Vec<SocketAddr>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Segments that matched nothing (answered with a RST).
    pub unmatched: u64,
    /// MP_JOIN SYNs refused (unknown token, bad form, ...).
    pub joins_refused: u64,
}

/// A connection with its token and port block.
type Slot = Option<(Connection, Option<Token>, Option<usize>)>;

/// The demux of many connections.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    isn_key: IsnKey,
    tokens: TokenTable,
    conns: Vec<Slot>,
    free_slots: Vec<usize>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), ConnHandle>,
    by_token: HashMap<Token, ConnHandle>,
    blocks: Vec<Option<ConnHandle>>,
    free_blocks: VecDeque<usize>,
    rsts: VecDeque<(PathId, SocketAddr, SocketAddr, SegmentHeader, usize)>,
    events: VecDeque<(ConnHandle, Event)>,
    /// Counters.
    pub stats: EndpointStats,
}

impl Endpoint {
    /// An endpoint with `isn_key` for subflow ISNs (RFC 6528).
    pub fn new(cfg: EndpointConfig, isn_key: IsnKey) -> Endpoint {
        let per = u32::from(cfg.ports_per_conn.max(1));
        let span = u32::from(*cfg.ports.end()).saturating_sub(u32::from(*cfg.ports.start())) + 1;
        let nblocks = (span / per) as usize;
        Endpoint {
            cfg,
            isn_key,
            tokens: TokenTable::new(),
            conns: Vec::new(),
            free_slots: Vec::new(),
            by_tuple: HashMap::new(),
            by_token: HashMap::new(),
            blocks: vec![None; nblocks],
            free_blocks: (0..nblocks).collect(),
            rsts: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    fn slot(&mut self) -> usize {
        self.free_slots.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        })
    }

    /// Opens a client connection (see [`Connection::connect`]).
    pub fn connect(
        &mut self,
        now: Instant,
        paths: &[LocalPath],
        primary: PathId,
        remote: SocketAddr,
        mptcp: bool,
    ) -> Result<ConnHandle, ConnectError> {
        let block = self.free_blocks.pop_front().ok_or(ConnectError::NoPorts)?;
        let (key, token) = match self.tokens.generate() {
            Ok(k) => k,
            Err(e) => {
                self.free_blocks.push_front(block);
                return Err(e.into());
            }
        };
        let per = self.cfg.ports_per_conn.max(1);
        let first = self.cfg.ports.start() + block as u16 * per;
        let ports = (first..first + per).collect();
        let c = Connection::connect(
            now,
            self.cfg.mptcp,
            paths,
            primary,
            remote,
            ports,
            key,
            &self.isn_key,
            mptcp,
        );
        let h = ConnHandle(self.slot());
        self.blocks[block] = Some(h);
        self.by_token.insert(token, h);
        self.conns[h.0] = Some((c, Some(token), Some(block)));
        Ok(h)
    }

    /// The connection behind `h`.
    pub fn get_mut(&mut self, h: ConnHandle) -> Option<&mut Connection> {
        self.conns.get_mut(h.0)?.as_mut().map(|c| &mut c.0)
    }

    fn by_port(&self, port: u16) -> Option<ConnHandle> {
        if !self.cfg.ports.contains(&port) {
            return None;
        }
        let b = usize::from((port - self.cfg.ports.start()) / self.cfg.ports_per_conn.max(1));
        self.blocks.get(b).copied().flatten()
    }

    /// A parsed segment received on `path`, from `remote` to `local`.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        hdr: &SegmentHeader,
        payload: &[u8],
    ) {
        let found = self
            .by_tuple
            .get(&(local, remote))
            .copied()
            .or_else(|| self.by_port(local.port()));
        if let Some(h) = found
            && let Some((c, _, _)) = self.conns.get_mut(h.0).and_then(|c| c.as_mut())
            && c.subflow_tuples().any(|t| t == (local, remote))
        {
            c.handle_packet(now, path, local, remote, hdr, payload);
            self.collect(h);
            return;
        }
        if hdr.flags.syn() && !hdr.flags.ack() && !hdr.flags.rst() {
            let join = hdr
                .options
                .mptcp
                .iter()
                .filter_map(|raw| MptcpOption::parse(raw).ok())
                .find_map(|o| match o {
                    MptcpOption::MpJoin(crate::wire::mptcp::MpJoin::Syn { receiver_token, .. }) => {
                        Some(Token(receiver_token))
                    }
                    _ => None,
                });
            if let Some(token) = join {
                let Some(&h) = self.by_token.get(&token) else {
                    // §3.2: "If the token received at Host B is unknown ... MUST respond with
                    // a TCP RST".
                    self.stats.joins_refused += 1;
                    self.rsts.push_back((path, local, remote, *hdr, payload.len()));
                    return;
                };
                let nonce = os_random_nonce();
                let ok = match (self.conns.get_mut(h.0).and_then(|c| c.as_mut()), nonce) {
                    (Some((c, _, _)), Ok(n)) => c.accept_join(now, path, local, remote, hdr, n).is_ok(),
                    _ => false,
                };
                if ok {
                    self.by_tuple.insert((local, remote), h);
                    self.collect(h);
                } else {
                    self.stats.joins_refused += 1;
                    self.rsts.push_back((path, local, remote, *hdr, payload.len()));
                }
                return;
            }
            if self.cfg.listen.contains(&local)
                && let Ok((key, token)) = self.tokens.generate()
            {
                match Connection::accept(now, self.cfg.mptcp, path, local, remote, hdr, key, &self.isn_key) {
                    Ok(c) => {
                        let h = ConnHandle(self.slot());
                        self.conns[h.0] = Some((c, Some(token), None));
                        self.by_token.insert(token, h);
                        self.by_tuple.insert((local, remote), h);
                        self.collect(h);
                    }
                    Err(_) => {
                        self.tokens.release(token);
                    }
                }
                return;
            }
        }
        self.stats.unmatched += 1;
        self.rsts.push_back((path, local, remote, *hdr, payload.len()));
    }

    fn collect(&mut self, h: ConnHandle) {
        if let Some((c, _, _)) = self.conns.get_mut(h.0).and_then(|c| c.as_mut()) {
            while let Some(ev) = c.poll_event() {
                self.events.push_back((h, ev));
            }
        }
    }

    /// The next event of any connection.
    pub fn poll_event(&mut self) -> Option<(ConnHandle, Event)> {
        for i in 0..self.conns.len() {
            self.collect(ConnHandle(i));
        }
        self.events.pop_front()
    }

    /// Earliest deadline of all connections.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.0.poll_timeout())
            .min()
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for c in self.conns.iter_mut().flatten() {
            c.0.handle_timeout(now);
        }
    }

    /// The next packet to send (RSTs first).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, Transmit)> {
        while let Some((path, local, remote, hdr, len)) = self.rsts.pop_front() {
            if let Ok(Some(n)) = tcp::write_rst_reply(buf, remote, local, &hdr, len) {
                let t = Transmit {
                    len: n,
                    seq: tcp::SeqNum(0),
                    payload_len: 0,
                    flags: crate::wire::tcp::TcpFlags::RST,
                    retransmission: false,
                    seg_payload: 0,
                    csum_partial: false,
                };
                return Some((path, t));
            }
        }
        for c in self.conns.iter_mut().flatten() {
            if let Some(t) = c.0.poll_transmit(now, buf) {
                return Some(t);
            }
        }
        None
    }

    /// Forgets connection `h` once the application is done with it: frees its token, ports and
    /// demux entries.
    pub fn remove(&mut self, h: ConnHandle) {
        let Some(Some((c, token, block))) = self.conns.get_mut(h.0).map(|c| c.take()) else {
            return;
        };
        for t in c.subflow_tuples() {
            self.by_tuple.remove(&t);
        }
        self.by_tuple.retain(|_, v| *v != h);
        if let Some(t) = token {
            self.tokens.release(t);
            self.by_token.remove(&t);
        }
        if let Some(b) = block {
            self.blocks[b] = None;
            self.free_blocks.push_back(b);
        }
        self.free_slots.push(h.0);
    }

    /// Connections alive.
    pub fn len(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// No connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

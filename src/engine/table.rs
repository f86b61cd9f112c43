//! The flow table: every relayed TCP flow under its id, found by the host's 4-tuple or by the
//! (local port, remote) key of one of its upstream subflows; the allocation of MPTCP tokens and
//! of local ports; the queue of flows with new input (dirty) and the heap of their deadlines.
//!
//! A flow enters with [`FlowTable::insert`] and leaves with [`FlowTable::remove`], each one
//! operation over all the maps, and every port a flow is given is recorded with it, so the maps
//! cannot disagree about which flows exist.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use super::flow::TcpFlow;
use super::upstream::Upstream;
use crate::mptcp::crypto::{Key, Token, TokenTable};
use crate::tcp::IsnKey;
use crate::time::Instant;

/// A flow's id (serial number since start).
pub(super) type FlowId = u64;

/// Local ports one MPTCP flow may hold for rejoined subflows, and again for subflows toward the
/// server's other addresses: bounded, whatever the paths and the server do.
const MAX_FLOW_PORTS: usize = 8;

/// A flow and the table's bookkeeping about it.
#[derive(Debug)]
struct Entry {
    flow: TcpFlow,
    /// Local ports toward the destination (the first one, then one per rejoined subflow).
    ports: Vec<u16>,
    /// Port-map keys of subflows toward the server's other addresses (ADD_ADDR).
    others: Vec<(u16, SocketAddr)>,
    /// The MPTCP token reserved for it.
    token: Option<Token>,
    /// In the dirty queue.
    dirty: bool,
    /// Serviced since it entered the dirty queue.
    serviced: bool,
    /// The deadline registered in the timer heap.
    armed: Option<Instant>,
}

/// The flow table (see the module documentation).
#[derive(Debug)]
pub(super) struct FlowTable {
    flows: HashMap<FlowId, Entry>,
    by_host: HashMap<(SocketAddr, SocketAddr), FlowId>,
    /// Upstream local port and remote → flow (a port is reused toward other destinations, so
    /// the range limits flows per destination, not in all).
    by_port: HashMap<(u16, SocketAddr), FlowId>,
    tokens: TokenTable,
    ports: RangeInclusive<u16>,
    next_flow: FlowId,
    next_port: u16,
    reused_ports: u64,
    dirty: VecDeque<FlowId>,
    timers: BinaryHeap<Reverse<(Instant, FlowId)>>,
}

impl FlowTable {
    /// An empty table allocating local ports from `ports`.
    pub fn new(ports: RangeInclusive<u16>, isn_key: &IsnKey) -> Self {
        // RFC 6056 §3.3.1: start at a port chosen by the (random) ISN key rather than at the
        // range's start, so a restarted daemon does not reuse the 4-tuples of its previous run
        // (still in TIME-WAIT at the servers) and the ports are not predictable.
        let (lo, hi) = (*ports.start(), *ports.end());
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let seed = u32::from_le_bytes([isn_key.0[0], isn_key.0[1], isn_key.0[2], isn_key.0[3]]);
        let next_port = lo.saturating_add((seed % span) as u16);
        FlowTable {
            flows: HashMap::new(),
            by_host: HashMap::new(),
            by_port: HashMap::new(),
            tokens: TokenTable::new(),
            ports,
            next_flow: 0,
            next_port,
            reused_ports: 0,
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
        }
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// All flows.
    pub fn iter(&self) -> impl Iterator<Item = &TcpFlow> {
        self.flows.values().map(|e| &e.flow)
    }

    /// Ids of all flows.
    pub fn ids(&self) -> Vec<FlowId> {
        self.flows.keys().copied().collect()
    }

    /// By id.
    pub fn get(&self, id: FlowId) -> Option<&TcpFlow> {
        self.flows.get(&id).map(|e| &e.flow)
    }

    /// By id, to change it.
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut TcpFlow> {
        self.flows.get_mut(&id).map(|e| &mut e.flow)
    }

    /// The flow of the host's 4-tuple.
    pub fn by_host(&self, host: SocketAddr, dst: SocketAddr) -> Option<FlowId> {
        self.by_host.get(&(host, dst)).copied()
    }

    /// The flow a segment from `remote` to local port `port` belongs to.
    pub fn by_port(&self, port: u16, remote: SocketAddr) -> Option<FlowId> {
        self.by_port.get(&(port, remote)).copied()
    }

    /// A new MPTCP key whose token no other connection has; released when the flow given it
    /// in [`insert`](Self::insert) is removed.
    pub fn new_key(&mut self) -> Option<(Key, Token)> {
        self.tokens.generate().ok()
    }

    /// A local port not in use toward `dst`. A port whose flow lingers only for its host side
    /// (the host's TIME-WAIT, while the upstream connection is gone: nothing of it can still
    /// arrive or be sent) is free: the new flow takes its mapping over, and the old flow's
    /// removal leaves the new mapping alone ([`release_upstream`](Self::release_upstream)).
    /// Without that, every `Connection: close` HTTP exchange held a port for the host's
    /// TIME-WAIT, and the range capped new connections per destination at range ÷ TIME-WAIT.
    pub fn alloc_port(&mut self, dst: SocketAddr) -> Option<u16> {
        let (lo, hi) = (*self.ports.start(), *self.ports.end());
        let n = u32::from(hi.checked_sub(lo)?) + 1;
        for _ in 0..n {
            let p = self.next_port;
            self.next_port = if p >= hi { lo } else { p + 1 };
            match self.by_port.get(&(p, dst)) {
                None => return Some(p),
                Some(id) if self.flows.get(id).is_none_or(|e| e.flow.upstream.is_closed()) => {
                    self.reused_ports += 1;
                    return Some(p);
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Ports taken over from flows whose upstream was gone ([`alloc_port`](Self::alloc_port)).
    pub fn reused_ports(&self) -> u64 {
        self.reused_ports
    }

    /// Adds `flow`, its upstream on local port `port` (from [`alloc_port`](Self::alloc_port))
    /// and holding `token` (from [`new_key`](Self::new_key)); it is dirty at once.
    pub fn insert(&mut self, flow: TcpFlow, port: u16, token: Option<Token>) -> FlowId {
        self.next_flow += 1;
        let id = self.next_flow;
        self.by_host.insert((flow.host_addr, flow.dst), id);
        // Segments come from the upstream's peer: the destination, or the converter.
        self.by_port.insert((port, flow.upstream.remote()), id);
        let entry = Entry {
            flow,
            ports: vec![port],
            others: Vec::new(),
            token,
            dirty: false,
            serviced: false,
            armed: None,
        };
        self.flows.insert(id, entry);
        self.mark_dirty(id);
        id
    }

    /// Removes a flow from every map and releases its token and ports.
    pub fn remove(&mut self, id: FlowId) -> Option<TcpFlow> {
        let mut e = self.flows.remove(&id)?;
        self.release_upstream(id, &mut e);
        let host = (e.flow.host_addr, e.flow.dst);
        if self.by_host.get(&host) == Some(&id) {
            self.by_host.remove(&host);
        }
        Some(e.flow)
    }

    /// Flow `id` goes on over `upstream` (local port `port`, holding `token`) instead: the
    /// ports and token of the one it replaces are released. The flow is dirty at once.
    pub fn replace_upstream(&mut self, id: FlowId, upstream: Upstream, port: u16, token: Option<Token>) {
        let Some(mut e) = self.flows.remove(&id) else {
            return;
        };
        self.release_upstream(id, &mut e);
        self.by_port.insert((port, upstream.remote()), id);
        e.flow.upstream = upstream;
        e.ports = vec![port];
        e.token = token;
        self.flows.insert(id, e);
        self.mark_dirty(id);
    }

    /// Unmaps the ports of `e`'s upstream and releases its token.
    fn release_upstream(&mut self, id: FlowId, e: &mut Entry) {
        let remote = e.flow.upstream.remote();
        for k in e.ports.iter().map(|&p| (p, remote)).chain(e.others.drain(..)) {
            if self.by_port.get(&k) == Some(&id) {
                self.by_port.remove(&k);
            }
        }
        e.ports.clear();
        if let Some(t) = e.token.take() {
            self.tokens.release(t);
        }
    }

    /// A fresh local port toward the upstream peer of flow `id`, for a subflow joined again
    /// (within [`MAX_FLOW_PORTS`]).
    pub fn add_rejoin_port(&mut self, id: FlowId) -> Option<u16> {
        let e = self.flows.get(&id)?;
        if e.ports.len() >= MAX_FLOW_PORTS {
            return None;
        }
        let dst = e.flow.upstream.remote();
        let p = self.map_new_port(id, dst)?;
        self.flows.get_mut(&id)?.ports.push(p);
        Some(p)
    }

    /// A local port whose segments from `remote`, another address of the server, reach flow
    /// `id` (within [`MAX_FLOW_PORTS`]).
    pub fn add_remote_port(&mut self, id: FlowId, remote: SocketAddr) -> Option<u16> {
        if self.flows.get(&id)?.others.len() >= MAX_FLOW_PORTS {
            return None;
        }
        let p = self.map_new_port(id, remote)?;
        self.flows.get_mut(&id)?.others.push((p, remote));
        Some(p)
    }

    fn map_new_port(&mut self, id: FlowId, remote: SocketAddr) -> Option<u16> {
        let p = self.alloc_port(remote)?;
        self.by_port.insert((p, remote), id);
        Some(p)
    }

    /// Flow `id` has new input: service it again even if it is queued and was serviced already.
    pub fn mark_dirty(&mut self, id: FlowId) {
        if let Some(e) = self.flows.get_mut(&id) {
            e.serviced = false;
            if !e.dirty {
                e.dirty = true;
                self.dirty.push_back(id);
            }
        }
    }

    /// The first flow in the dirty queue (flows gone since are skipped).
    pub fn next_dirty(&mut self) -> Option<FlowId> {
        loop {
            let &id = self.dirty.front()?;
            if self.flows.contains_key(&id) {
                return Some(id);
            }
            self.dirty.pop_front();
        }
    }

    /// True the first time since flow `id` became dirty: it is to be serviced now.
    pub fn begin_service(&mut self, id: FlowId) -> bool {
        match self.flows.get_mut(&id) {
            Some(e) if !e.serviced => {
                e.serviced = true;
                true
            }
            _ => false,
        }
    }

    /// Done with the first dirty flow, `id`, for now (it has nothing more to send): takes it
    /// off the queue and re-arms its timer. True if it is finished (the caller removes it).
    pub fn finish_dirty(&mut self, id: FlowId) -> bool {
        self.dirty.pop_front();
        let Some(e) = self.flows.get_mut(&id) else {
            return false;
        };
        e.dirty = false;
        e.serviced = false;
        if e.flow.is_finished() {
            return true;
        }
        let t = e.flow.poll_timeout();
        if t != e.armed {
            e.armed = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, id)));
            }
        }
        false
    }

    /// The earliest deadline of a flow.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Entries whose flow re-armed or went are stale: drop them here.
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            match self.flows.get(&id) {
                Some(e) if e.armed == Some(t) => return Some(t),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// A flow whose deadline is at or before `now` (disarmed: the caller runs its timers).
    pub fn pop_due(&mut self, now: Instant) -> Option<FlowId> {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                return None;
            }
            self.timers.pop();
            match self.flows.get_mut(&id) {
                Some(e) if e.armed == Some(t) => {
                    e.armed = None;
                    return Some(id);
                }
                _ => {}
            }
        }
        None
    }
}

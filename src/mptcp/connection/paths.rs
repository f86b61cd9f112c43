//! The path manager: the client's local paths and ports ([`PathManager`]), the policy layer's
//! calls that change them (path down / up / added, backup priority, ports granted), and the
//! joins it opens from each path toward the peer's addresses (RFC 8684 §3.2, §3.4), or the
//! initial subflow it starts again elsewhere.

use std::net::SocketAddr;

use super::damping::{Damping, Hold, RttMemory};
use super::standby::Race;
use super::{Connection, Event, LocalPath, MptcpOption, Phase, Role};
use crate::config::{JoinPolicy, Mode};
use crate::mptcp::PathId;
use crate::mptcp::addr::AddrIdSet;
use crate::mptcp::handshake::JoinInitiator;
use crate::mptcp::subflow::{Handshake, SubflowMp};
use crate::tcp;
use crate::time::Instant;

/// One local path as the path manager sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PathState {
    pub path: LocalPath,
    pub available: bool,
    /// The next join from this path is not opened before this.
    pub next_join: Instant,
    /// Remote address ID the last join on this path went to.
    pub joining: Option<u8>,
    /// Remote address IDs whose joins from this path never completed: the path manager tries
    /// the peer's other addresses first (cleared when the path comes back).
    pub failed: AddrIdSet,
    /// What the path's subflows measured, kept across their loss ([`damping`]).
    ///
    /// [`damping`]: super::damping
    pub rtt: Option<RttMemory>,
    /// The path's recent losses ([`damping`]).
    ///
    /// [`damping`]: super::damping
    pub damping: Damping,
    /// A stale backup on this path raced against a fresh join ([`standby`]).
    ///
    /// [`standby`]: super::standby
    pub race: Option<Race>,
    /// When the last race on this path started.
    pub last_race: Option<Instant>,
}

impl PathState {
    fn new(path: LocalPath, now: Instant) -> PathState {
        PathState {
            path,
            available: true,
            next_join: now,
            joining: None,
            failed: AddrIdSet::default(),
            rtt: None,
            damping: Damping::default(),
            race: None,
            last_race: None,
        }
    }
}

/// The local paths and ports a connection's subflows use.
#[derive(Debug)]
pub(super) struct PathManager {
    /// Client: the local paths (a server has none: every path a packet came on is available).
    paths: Vec<PathState>,
    /// The path the initial subflow was opened (or restarted) on.
    pub initial: PathId,
    /// Local ports subflows take in turn.
    ports: Vec<u16>,
    next_port: usize,
    /// Local ports granted for subflows toward the peer's other addresses
    /// ([`Connection::add_remote_port`]); each is used by one join.
    remote_ports: Vec<(SocketAddr, u16)>,
    /// A port asked for with [`Event::PortNeeded`] and not yet granted.
    port_request: Option<SocketAddr>,
    /// Client: no join is opened before this while the data has a subflow to go on
    /// ([`MptcpConfig::join_delay`](super::MptcpConfig::join_delay)).
    joins_from: Instant,
}

impl PathManager {
    /// A client's, opening no join before `joins_from` while one is not needed.
    pub fn client(
        now: Instant,
        paths: &[LocalPath],
        initial: PathId,
        ports: Vec<u16>,
        joins_from: Instant,
    ) -> PathManager {
        PathManager {
            paths: paths.iter().map(|&path| PathState::new(path, now)).collect(),
            initial,
            ports: if ports.is_empty() { vec![49152] } else { ports },
            next_port: 0,
            remote_ports: Vec::new(),
            port_request: None,
            joins_from,
        }
    }

    pub fn server(initial: PathId) -> PathManager {
        PathManager {
            paths: Vec::new(),
            initial,
            ports: Vec::new(),
            next_port: 0,
            remote_ports: Vec::new(),
            port_request: None,
            joins_from: Instant::ZERO,
        }
    }

    /// The next local port, in turn.
    pub fn take_port(&mut self) -> u16 {
        let p = self.ports[self.next_port % self.ports.len()];
        self.next_port += 1;
        p
    }

    pub fn path(&self, id: PathId) -> Option<&PathState> {
        self.paths.iter().find(|p| p.path.id == id)
    }

    pub fn path_mut(&mut self, id: PathId) -> Option<&mut PathState> {
        self.paths.iter_mut().find(|p| p.path.id == id)
    }

    /// Subflows on `id` may carry data (a server's always may).
    pub fn available_to(&self, role: Role, id: PathId) -> bool {
        role == Role::Server || self.paths.iter().any(|p| p.path.id == id && p.available)
    }

    /// The client declared `id` down (no packet leaves on it).
    pub fn is_down(&self, id: PathId) -> bool {
        !self.paths.is_empty() && !self.paths.iter().any(|p| p.path.id == id && p.available)
    }

    /// Another path than `id` is available.
    pub fn other_available(&self, id: PathId) -> bool {
        self.paths.iter().any(|p| p.available && p.path.id != id)
    }

    /// `id` is a backup path.
    pub fn is_backup(&self, id: PathId) -> bool {
        self.paths.iter().any(|p| p.path.id == id && p.path.backup)
    }

    /// The rank of `id` ([`LocalPath::rank`]; 0 for a path the client does not have).
    pub fn rank(&self, id: PathId) -> u8 {
        self.path(id).map_or(0, |p| p.path.rank)
    }

    /// The order of `id` among the paths in handover mode: regular before backup, then by rank.
    pub fn tier(&self, id: PathId) -> (bool, u8) {
        (self.is_backup(id), self.rank(id))
    }

    /// `id` is used only when nothing else works ([`LocalPath::last_resort`]).
    pub fn is_last_resort(&self, id: PathId) -> bool {
        self.paths.iter().any(|p| p.path.id == id && p.path.last_resort)
    }

    /// The local paths (for [`super::standby`]).
    pub fn paths(&self) -> &[PathState] {
        &self.paths
    }

    /// The local paths, to change (for [`super::standby`]).
    pub fn paths_mut(&mut self) -> &mut [PathState] {
        &mut self.paths
    }

    /// A port granted with [`Connection::add_remote_port`] for a subflow toward `to`, taken.
    pub fn take_remote_port(&mut self, to: SocketAddr) -> Option<u16> {
        let k = self.remote_ports.iter().position(|&(r, _)| r == to)?;
        Some(self.remote_ports.remove(k).1)
    }

    /// The local ports of the connection, in turn order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Asks the caller for a port toward `to` ([`Event::PortNeeded`]), unless a request is
    /// pending already: the event to report.
    pub fn request_port(&mut self, to: SocketAddr) -> Option<Event> {
        if self.port_request.is_some() {
            return None;
        }
        self.port_request = Some(to);
        Some(Event::PortNeeded { remote: to })
    }

    /// The join from `id` never completed: its target address counts as failed from there.
    pub fn join_failed(&mut self, id: PathId) {
        if let Some(p) = self.path_mut(id)
            && let Some(addr_id) = p.joining
        {
            p.failed.insert(addr_id);
        }
    }
}

impl Connection {
    /// The policy layer declares `path` down (link gone): its subflows are dropped at once and
    /// what they carried is reinjected on the others, without waiting for an RTO (§3.3.6).
    pub fn path_down(&mut self, now: Instant, path: PathId) {
        if let Some(p) = self.pm.path_mut(path) {
            p.available = false;
        }
        let mut removed = Vec::new();
        if (0..self.subflows.len())
            .any(|i| self.subflows[i].path == path && self.subflows[i].up && !self.subflows[i].dead)
        {
            self.note_path_loss(now, path);
        }
        for i in 0..self.subflows.len() {
            if self.subflows[i].path == path && !self.subflows[i].dead {
                self.drop_subflow(i);
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
        match self.pm.paths.iter().position(|p| p.path.id == path.id) {
            Some(k) if self.pm.paths[k].path.addr != path.addr => {
                self.path_down(now, path.id);
                // Another network: nothing measured on the old one applies.
                self.pm.paths[k] = PathState::new(path, now);
                self.path_up(now, path.id);
            }
            Some(k) => self.pm.paths[k].path = path,
            None => {
                self.pm.paths.push(PathState::new(path, now));
                self.after_io(now);
            }
        }
    }

    /// Adds a local port for subflows; the next subflow opened takes it (a fresh 4-tuple for a
    /// path joined again, so no stale state at the peer collides with it).
    pub fn add_port(&mut self, port: u16) {
        let pm = &mut self.pm;
        let at = pm.next_port % pm.ports.len().max(1);
        pm.ports.insert(at, port);
    }

    /// Local ports in use or reserved by this connection.
    pub fn ports(&self) -> &[u16] {
        &self.pm.ports
    }

    /// The path is back: the path manager re-creates a subflow on it (client).
    pub fn path_up(&mut self, now: Instant, path: PathId) {
        if let Some(p) = self.pm.path_mut(path) {
            p.available = true;
            p.next_join = now;
            // Another network: every peer address is worth a try again.
            p.failed = AddrIdSet::default();
        }
        self.after_io(now);
    }

    /// Grants local `port` for one subflow toward `remote`, one of the peer's other addresses
    /// (the answer to [`Event::PortNeeded`]: the caller makes sure that segments from `remote` to
    /// `port` reach this connection).
    pub fn add_remote_port(&mut self, now: Instant, remote: SocketAddr, port: u16) {
        if self.pm.port_request == Some(remote) {
            self.pm.port_request = None;
        }
        self.pm.remote_ports.push((remote, port));
        self.after_io(now);
    }

    /// Changes the backup priority of `path`'s subflows and tells the peer (MP_PRIO, §3.3.8).
    pub fn set_path_backup(&mut self, path: PathId, backup: bool) {
        if let Some(p) = self.pm.path_mut(path) {
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

    /// Where a join from `p` should go now ([`Self::join_target`]), if the path manager wants
    /// one there (and, toward another address, a port for it is granted or can be asked for).
    fn join_wanted(&self, p: &PathState) -> Option<(u8, SocketAddr)> {
        let winding_down = matches!(self.phase, Phase::Closing | Phase::Closed { .. });
        if self.role != Role::Client || !self.is_mptcp() || !p.available || winding_down {
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
            .any(|s| !s.dead && matches!(s.mp.hs, Handshake::CapableUnconfirmed(_)))
        {
            return None;
        }
        if self.live_subflows() >= self.cfg.max_subflows {
            return None;
        }
        let needed = if p.path.last_resort {
            // Only when no subflow on another path can carry the data (one that fell silent
            // with nowhere to move to cannot): an on-demand join at failover.
            !self.carried_elsewhere(p.path.id)
        } else {
            match self.cfg.join {
                JoinPolicy::Immediate => true,
                // Only when no other subflow can carry the data.
                JoinPolicy::OnDemand => !(0..self.subflows.len()).any(|i| self.usable(i)),
            }
        };
        if !needed {
            return None;
        }
        self.join_target(p)
            .filter(|&(_, to)| !self.needs_port(to) || self.pm.port_request.is_none())
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

    /// Whether a subflow on another path than `path` can carry the data now (usable, and not
    /// fallen silent with nowhere to move to).
    fn carried_elsewhere(&self, path: PathId) -> bool {
        (0..self.subflows.len())
            .any(|i| self.usable(i) && self.subflows[i].path != path && !self.subflows[i].mp.live.suspect)
    }

    /// When the join from `p` is due: its retry time, and while the connection is young and
    /// its data has a subflow to go on, not before `joins_from` (a short exchange is over
    /// before a second subflow would be worth its handshake; RFC 8684 §3.2 leaves the time of
    /// a join to the host). A connection whose only subflow failed joins at once.
    fn join_due(&self, p: &PathState) -> Instant {
        if p.next_join < self.pm.joins_from && self.carried_elsewhere(p.path.id) {
            self.pm.joins_from
        } else {
            p.next_join
        }
    }

    /// A join toward `to` needs a port granted for it first (not the initial address).
    fn needs_port(&self, to: SocketAddr) -> bool {
        to != self.remote && !self.pm.remote_ports.iter().any(|&(r, _)| r == to)
    }

    /// When the path manager next has a join to open (for the timer table).
    pub(super) fn next_join(&self) -> Option<Instant> {
        self.pm
            .paths
            .iter()
            .filter(|p| self.join_wanted(p).is_some())
            .map(|p| self.join_due(p))
            .min()
    }

    /// Phase 14, before [`manage_paths`](Self::manage_paths) so that an abandoned join is
    /// retried in the same call: a join whose SYN went unanswered `mpc_syn_attempts` times is
    /// abandoned (not after the full SYN retry budget of two minutes); the path manager tries
    /// the peer's next address from that path, or the same one again after `join_retry`.
    pub(super) fn give_up_joins(&mut self) {
        for i in 0..self.subflows.len() {
            let s = &self.subflows[i];
            if !s.dead
                && matches!(s.mp.hs, Handshake::JoinSyn(_))
                && s.tcp.health().consecutive_rtos >= self.cfg.mpc_syn_attempts
            {
                self.drop_subflow(i);
            }
        }
    }

    /// Phase 15, last: with every other phase done deciding which subflows are gone, open the
    /// joins due (or start the initial subflow again on another path).
    pub(super) fn manage_paths(&mut self, now: Instant) {
        if self.role == Role::Client
            && self.neg.is_none()
            && !self.fallback
            && !self.is_closed()
            && self.live_subflows() == 0
        {
            self.restart_initial(now);
            return;
        }
        for k in 0..self.pm.paths.len() {
            let p = self.pm.paths[k];
            if now < self.join_due(&p) {
                continue;
            }
            let Some((remote_id, to)) = self.join_wanted(&p) else {
                continue;
            };
            let port = if to == self.remote {
                self.pm.take_port()
            } else if let Some(k) = self.pm.remote_ports.iter().position(|&(r, _)| r == to) {
                self.pm.remote_ports.remove(k).1
            } else {
                // Ask the caller for a port that reaches us from that address; the join
                // waits for it.
                if self.pm.port_request.is_none() {
                    self.pm.port_request = Some(to);
                    self.events.push_back(Event::PortNeeded { remote: to });
                }
                continue;
            };
            self.pm.paths[k].next_join = now + self.cfg.join_retry;
            self.pm.paths[k].joining = Some(remote_id);
            let _ = self.open_join(now, p.path, (SocketAddr::new(p.path.addr, port), to), None);
        }
    }

    /// The initial subflow died before MP_CAPABLE completed (its path went down): start over
    /// on another available path, regular paths first.
    fn restart_initial(&mut self, now: Instant) {
        let mut avail: Vec<PathState> = self.pm.paths.iter().filter(|p| p.available).copied().collect();
        // Another path than the one that just failed first, then regular before backup.
        let failed = self.pm.initial;
        avail.sort_by_key(|p| (p.path.id == failed, p.path.backup, p.path.rank));
        if let Some(p) = avail.first() {
            self.pm.initial = p.path.id;
            let local = SocketAddr::new(p.path.addr, self.pm.take_port());
            let tcp = tcp::Connection::connect(now, local, self.remote, self.cfg.tcp, &self.isn_key);
            let iss = tcp.iss().0;
            let hs = self.capable_syn();
            self.push_subflow(p.path.id, tcp, SubflowMp::new(hs, iss));
        }
    }

    /// The address ID of our address on `path`: 0 for the initial subflow's address (§3.2:
    /// "implicit and have the value zero"), path id + 1 for the others.
    pub(super) fn local_addr_id(&self, path: crate::mptcp::PathId) -> u8 {
        if path == self.pm.initial {
            0
        } else {
            path.0.wrapping_add(1)
        }
    }

    /// Opens a join from `local` on `path` toward `remote`, with the backup priority the path
    /// gives it or `backup`; its id, unless no nonce could be drawn.
    pub(super) fn open_join(
        &mut self,
        now: Instant,
        path: LocalPath,
        (local, remote): (SocketAddr, SocketAddr),
        backup: Option<bool>,
    ) -> Option<crate::mptcp::send::SubflowId> {
        let neg = self.neg?;
        let nonce = crate::mptcp::crypto::os_random_nonce().ok()?;
        let addr_id = self.local_addr_id(path.id);
        // In handover mode the backup path joins as a backup subflow (§3.3.8, flag B), and so
        // does a regular path that flapped, until its hold passed ([`super::damping`]).
        let hold = self.hold_for_join(now, path.id);
        let handover = self.cfg.mode == Mode::Handover;
        // So does a regular path while a better-ranked one works (it would be made one at once).
        let backup = backup.unwrap_or(
            (path.backup && handover) || hold != Hold::No || (handover && self.outranked(path.id)),
        );
        let tcp = tcp::Connection::connect(now, local, remote, self.cfg.tcp, &self.isn_key);
        let mut mp = SubflowMp::new(
            Handshake::JoinSyn(JoinInitiator::new(&neg, nonce, backup, addr_id)),
            tcp.iss().0,
        );
        mp.backup = backup;
        mp.live.hold = hold;
        mp.local_addr_id = addr_id;
        self.push_subflow(path.id, tcp, mp);
        self.subflows.last().map(|s| s.id)
    }
}

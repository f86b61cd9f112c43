//! The converter's side of the datagram relay (`dgram.rs`), sans-IO: the table of relayed
//! sessions, each with its destination, its return path (the laptop's address now), its
//! anti-replay window and its own sequence numbers, plus the tombstones of ended sessions.
//!
//! Call order, per datagram received on the relay listener from `from`:
//! [`RelayTable::handle_up`] → [`Up::Relay`] (send the payload on the session's socket; if the
//! laptop asked, send [`RelayTable::seal_ack`] back) or [`Up::Copy`] (a redundant session's
//! second copy: send nothing on, count it) or [`Up::Open`] (a verified, fresh first
//! datagram: apply the egress policy and limits, open a socket toward the destination, then
//! [`RelayTable::insert`] — or send [`RelayTable::seal_refused`]) or an error (count, drop,
//! send nothing). Per datagram a session's socket received: [`RelayTable::seal_down`], send it
//! to the address returned, and for a redundant session the same bytes to each of
//! [`RelayTable::extra_paths`].
//!
//! Redundant sessions (the laptop sets [`REDUNDANT`] and sends each datagram on every path with
//! the same number, each copy with its own index and MAC): whichever copy comes first is
//! relayed; a later copy is a duplicate to the session's window and is counted as a copy, not as
//! an attack, if its MAC verifies and its (number, index) was never seen before (a window per
//! copy index). The source of such an authenticated, never-seen datagram that is not the return
//! path becomes an extra return path (at most [`MAX_EXTRA_PATHS`], the least recently heard
//! replaced; one not heard from for [`EXTRA_PATH_IDLE`] is forgotten), to which the session's
//! down datagrams go too. So no address gets anything unless a datagram that was never seen
//! before, sealed under the session's key, came from it — the same proof the roaming return
//! path rests on — and no path gets more than one copy of each down datagram.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::dgram::{
    self, ACK_REQUESTED, DgramError, Header, Kind, MAX_COPIES, REDUNDANT, RefuseReason, RelayId, Replay,
    ReplayWindow, copy_index,
};
use super::key::{ClientKey, KeyId};
use crate::time::Instant;

/// A session's key in the table.
pub type SessionKey = (KeyId, RelayId);

/// Return paths a redundant session keeps besides its newest one (one per other interface of
/// the laptop; bounded, so a session's state stays small whatever the sources).
pub const MAX_EXTRA_PATHS: usize = 3;
/// An extra return path no authenticated datagram came from for this long is forgotten.
pub const EXTRA_PATH_IDLE: Duration = Duration::from_secs(30);

/// Limits of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// A session with no datagram either way for this long ends.
    pub idle: Duration,
    /// A first datagram whose timestamp is further than this from now is refused.
    pub max_clock_skew: Duration,
    /// Tombstones kept at most (more: the oldest goes and the window of fresh first datagrams
    /// tightens past it).
    pub max_tombstones: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            idle: Duration::from_secs(120),
            max_clock_skew: Duration::from_secs(120),
            max_tombstones: 1 << 16,
        }
    }
}

/// One relayed session.
#[derive(Debug, Clone)]
pub struct RelaySession {
    /// Its destination (fixed for the session's life).
    pub dst: SocketAddr,
    /// Where its datagrams go back: the source of its newest authenticated datagram.
    pub peer: SocketAddr,
    recv: ReplayWindow,
    next_down: u64,
    last_ts: u64,
    /// Last datagram either way.
    pub last: Instant,
    /// Datagrams and payload bytes laptop → destination.
    pub up: (u64, u64),
    /// Datagrams and payload bytes destination → laptop.
    pub down: (u64, u64),
    /// Times its return path moved.
    pub moves: u64,
    /// The laptop's newest datagram asked for redundancy ([`REDUNDANT`]).
    pub redundant: bool,
    /// Other verified return paths (redundant sessions) and when each was last heard from.
    extra: Vec<(SocketAddr, Instant)>,
    /// Redundant copies received (duplicates of a datagram relayed already).
    pub copies: u64,
    /// The numbers seen with each copy index 1.. (allocated on the first copy of an index).
    copy_seen: Vec<ReplayWindow>,
    /// It carries ICMP echo ([`Kind::EchoUp`]), else UDP (fixed for its life).
    pub echo: bool,
}

impl RelaySession {
    /// Remembers `addr` (an authenticated datagram's source, not the return path) as an extra
    /// return path heard at `now`; true if it is new.
    /// Whether (`seq`, copy `index`) was never seen.
    fn copy_check(&self, seq: u64, index: u8) -> Result<(), Replay> {
        self.copy_seen
            .get(usize::from(index))
            .map_or(Ok(()), |w| w.check(seq))
    }

    /// Records (`seq`, copy `index`) as seen (a redundant datagram, after its MAC verified).
    fn copy_accept(&mut self, seq: u64, index: u8) {
        let i = usize::from(index);
        while self.copy_seen.len() <= i && self.copy_seen.len() < usize::from(MAX_COPIES) {
            // A new index: nothing below the session's window may teach a path.
            let floor = self.recv.top().saturating_sub(dgram::WINDOW);
            self.copy_seen.push(ReplayWindow::starting_after(floor));
        }
        if let Some(w) = self.copy_seen.get_mut(i) {
            let _ = w.accept(seq);
        }
    }

    fn heard_extra(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if addr == self.peer {
            return false;
        }
        if let Some(e) = self.extra.iter_mut().find(|e| e.0 == addr) {
            e.1 = now;
            return false;
        }
        if self.extra.len() >= MAX_EXTRA_PATHS
            && let Some(i) = (0..self.extra.len()).min_by_key(|&i| self.extra[i].1)
        {
            self.extra.swap_remove(i);
        }
        self.extra.push((addr, now));
        true
    }
}

/// A verified, fresh first datagram of a session the table does not hold: the caller decides
/// (policy, limits, a socket) and then [`RelayTable::insert`]s it or refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    /// The session.
    pub key: SessionKey,
    /// Its destination.
    pub dst: SocketAddr,
    /// The laptop's address.
    pub from: SocketAddr,
    seq: u64,
    timestamp: u64,
    floor: u64,
    /// The laptop asked for an ack.
    pub ack: bool,
    /// The laptop asked for redundancy.
    pub redundant: bool,
    /// An ICMP echo session: open a ping socket toward `dst`'s address, not a UDP socket.
    pub echo: bool,
    copy: u8,
}

/// What a datagram from a laptop asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Up<'a> {
    /// A datagram of a session held: send `payload` on its socket.
    Relay {
        /// The session.
        key: SessionKey,
        /// The host's UDP payload.
        payload: &'a [u8],
        /// Its return path moved to the datagram's source.
        moved: bool,
        /// The laptop asked for an ack.
        ack: bool,
    },
    /// A redundant session's authentic copy of a datagram relayed already: nothing to send on.
    Copy {
        /// The session.
        key: SessionKey,
        /// Its source became an extra return path.
        new_path: bool,
        /// The laptop asked for an ack.
        ack: bool,
    },
    /// The first datagram of a new session.
    Open {
        /// What to decide about.
        opening: Opening,
        /// The host's UDP payload.
        payload: &'a [u8],
    },
}

/// Why a datagram from a laptop is dropped (counted by name; nothing is sent back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpError {
    /// Not a relay datagram at all, or malformed.
    #[error(transparent)]
    Dgram(#[from] DgramError),
    /// A datagram of a kind only the converter sends.
    #[error("not an up datagram")]
    WrongKind,
    /// No such key (unknown or revoked).
    #[error("unknown key")]
    UnknownKey,
    /// Replay or left of the window.
    #[error(transparent)]
    Replay(#[from] Replay),
    /// A session's datagram to another destination than its first.
    #[error("destination differs from the session's")]
    OtherDestination,
    /// A session's datagram of the other kind (echo in a UDP session, or UDP in an echo one).
    #[error("datagram kind differs from the session's")]
    OtherKind,
    /// An echo datagram whose payload is not an ICMP echo request of its family (RFC 792
    /// type 8, RFC 4443 §4.1 type 128; code 0): the converter sends nothing else.
    #[error("echo datagram without an echo request")]
    NotEcho,
    /// A first datagram whose timestamp is too old or too new.
    #[error("first datagram not fresh")]
    Stale,
    /// A first datagram at or below the tombstones' floor (one may have been forgotten).
    #[error("first datagram below the tombstone window")]
    BelowWindow,
}

impl UpError {
    /// snake_case name (status counters).
    pub fn name(&self) -> &'static str {
        match self {
            UpError::Dgram(DgramError::NotRelay) => "not_relay",
            UpError::Dgram(DgramError::Short) => "short",
            UpError::Dgram(DgramError::BadMac) => "bad_mac",
            UpError::Dgram(_) => "malformed",
            UpError::WrongKind => "wrong_kind",
            UpError::UnknownKey => "unknown_key",
            UpError::Replay(_) => "replay",
            UpError::OtherDestination => "other_destination",
            UpError::OtherKind => "other_kind",
            UpError::NotEcho => "not_echo",
            UpError::Stale => "stale",
            UpError::BelowWindow => "below_window",
        }
    }
}

/// Whether `msg` is an ICMP echo request to `dst`'s family with code 0 (RFC 792: type 8;
/// RFC 4443 §4.1: type 128), at least its 8-byte header.
pub fn is_echo_request(dst: SocketAddr, msg: &[u8]) -> bool {
    let want = if dst.is_ipv4() {
        crate::wire::icmp::ECHO_REQUEST_V4
    } else {
        crate::wire::icmp::ECHO_REQUEST_V6
    };
    msg.len() >= 8 && msg[0] == want && msg[1] == 0
}

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    last_seq: u64,
    last_ts: u64,
}

/// The converter's relayed sessions. See the module documentation for the call order.
///
/// Invariant (replay safety across a session's end): a datagram accepted once is never accepted
/// again. Within a session, the window; after it ended, its tombstone (a reopening must come
/// with a higher number) while its datagrams' timestamps are fresh; once the tombstone went,
/// either every datagram of it is stale (expiry: `last_ts + skew < now`) or the floor rose to
/// its `last_ts` (eviction when full), refusing every first datagram stamped at or below it.
#[derive(Debug)]
pub struct RelayTable {
    cfg: RelayConfig,
    sessions: HashMap<SessionKey, RelaySession>,
    tombs: HashMap<SessionKey, Tombstone>,
    tomb_order: VecDeque<SessionKey>,
    floor: u64,
}

impl RelayTable {
    /// An empty table.
    pub fn new(cfg: RelayConfig) -> RelayTable {
        RelayTable {
            cfg,
            sessions: HashMap::new(),
            tombs: HashMap::new(),
            tomb_order: VecDeque::new(),
            floor: 0,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        self.tombs.len()
    }

    /// A session.
    pub fn get(&self, key: &SessionKey) -> Option<&RelaySession> {
        self.sessions.get(key)
    }

    /// Every session.
    pub fn iter(&self) -> impl Iterator<Item = (&SessionKey, &RelaySession)> {
        self.sessions.iter()
    }

    /// A datagram `bytes` from `from` at `now` (`unix_secs`: the converter's wall clock);
    /// `keys` finds a client key by id.
    pub fn handle_up<'a>(
        &mut self,
        now: Instant,
        unix_secs: u64,
        from: SocketAddr,
        bytes: &'a [u8],
        keys: impl FnOnce(&KeyId) -> Option<ClientKey>,
    ) -> Result<Up<'a>, UpError> {
        let u = dgram::parse(bytes)?;
        let h = u.header;
        if !h.kind.is_up() {
            return Err(UpError::WrongKind);
        }
        let echo = h.kind == Kind::EchoUp;
        let Some(dst) = h.addr else {
            return Err(UpError::Dgram(DgramError::Malformed));
        };
        let key = keys(&h.key).ok_or(UpError::UnknownKey)?;
        let skey = (h.key, h.session);
        let ack = h.flags & ACK_REQUESTED != 0;
        if let Some(s) = self.sessions.get_mut(&skey) {
            // RFC 4303 §3.4.3: the cheap window check first, the window updated only after the
            // integrity check succeeded.
            let redundant = h.flags & REDUNDANT != 0;
            let index = copy_index(h.flags);
            match s.recv.check(h.seq) {
                Err(Replay::Duplicate) if redundant => {
                    // Another path's copy (same number by design): never seen with this index,
                    // then authentic (the window per index updated only after the MAC).
                    s.copy_check(h.seq, index)?;
                    u.verify(&key)?;
                    if dst != s.dst {
                        return Err(UpError::OtherDestination);
                    }
                    if echo != s.echo {
                        return Err(UpError::OtherKind);
                    }
                    s.copy_accept(h.seq, index);
                    let new_path = s.redundant && s.heard_extra(from, now);
                    s.copies += 1;
                    s.last = now;
                    return Ok(Up::Copy {
                        key: skey,
                        new_path,
                        ack,
                    });
                }
                r => r?,
            }
            let payload = u.verify(&key)?;
            if dst != s.dst {
                return Err(UpError::OtherDestination);
            }
            if echo != s.echo {
                return Err(UpError::OtherKind);
            }
            if echo && !is_echo_request(dst, payload) {
                return Err(UpError::NotEcho);
            }
            let newest = s.recv.accept(h.seq)?;
            if redundant {
                s.copy_accept(h.seq, index);
            }
            if newest {
                s.redundant = redundant;
                if !redundant {
                    s.extra.clear();
                }
            }
            // Roaming: only the newest authenticated datagram moves the return path, so a
            // reordered one from the old path does not move it back.
            let moved = newest && from != s.peer;
            if moved {
                let old = std::mem::replace(&mut s.peer, from);
                s.extra.retain(|e| e.0 != from);
                if s.redundant {
                    // The old path stays a return path while it is heard from.
                    s.heard_extra(old, now);
                }
                s.moves += 1;
            } else if s.redundant {
                s.heard_extra(from, now);
            }
            s.last_ts = s.last_ts.max(h.timestamp);
            s.last = now;
            s.up.0 += 1;
            s.up.1 += payload.len() as u64;
            return Ok(Up::Relay {
                key: skey,
                payload,
                moved,
                ack,
            });
        }
        // A first datagram: the MAC proves the key before anything else happens.
        let payload = u.verify(&key)?;
        if echo && !is_echo_request(dst, payload) {
            return Err(UpError::NotEcho);
        }
        let skew = self.cfg.max_clock_skew.as_secs();
        if h.timestamp.saturating_add(skew) < unix_secs || h.timestamp > unix_secs.saturating_add(skew) {
            return Err(UpError::Stale);
        }
        self.expire_tombs(unix_secs);
        let floor = match self.tombs.get(&skey) {
            Some(t) if h.seq <= t.last_seq => return Err(Replay::Duplicate.into()),
            Some(t) => t.last_seq,
            None if h.timestamp <= self.floor => return Err(UpError::BelowWindow),
            None => 0,
        };
        if h.seq == 0 {
            return Err(Replay::Zero.into());
        }
        Ok(Up::Open {
            opening: Opening {
                key: skey,
                dst,
                from,
                seq: h.seq,
                timestamp: h.timestamp,
                floor,
                ack,
                redundant: h.flags & REDUNDANT != 0,
                echo,
                copy: copy_index(h.flags),
            },
            payload,
        })
    }

    /// Holds the session `o` was the first datagram of (its payload counted as relayed).
    pub fn insert(&mut self, now: Instant, o: &Opening, payload_len: usize) {
        let mut recv = ReplayWindow::starting_after(o.floor);
        let _ = recv.accept(o.seq);
        self.tombs.remove(&o.key);
        self.sessions.insert(
            o.key,
            RelaySession {
                dst: o.dst,
                peer: o.from,
                recv,
                next_down: 1,
                last_ts: o.timestamp,
                last: now,
                up: (1, payload_len as u64),
                down: (0, 0),
                moves: 0,
                redundant: false,
                extra: Vec::new(),
                copies: 0,
                copy_seen: Vec::new(),
                echo: o.echo,
            },
        );
        if o.redundant
            && let Some(s) = self.sessions.get_mut(&o.key)
        {
            s.redundant = true;
            s.copy_accept(o.seq, o.copy);
        }
    }

    /// Where the destination's datagrams of session `key` go besides the return path that
    /// [`RelayTable::seal_down`] returned: the extra return paths of a redundant session heard
    /// from within [`EXTRA_PATH_IDLE`] (the others are forgotten now). Empty for the others.
    pub fn extra_paths(&mut self, now: Instant, key: &SessionKey) -> &[(SocketAddr, Instant)] {
        let Some(s) = self.sessions.get_mut(key) else {
            return &[];
        };
        s.extra
            .retain(|e| now.saturating_duration_since(e.1) < EXTRA_PATH_IDLE);
        if !s.redundant {
            return &[];
        }
        &s.extra
    }

    /// The destination's `payload` for session `key` at `now`, sealed into `out`: its length
    /// and where to send it (the session's return path).
    pub fn seal_down(
        &mut self,
        now: Instant,
        unix_secs: u64,
        key: &ClientKey,
        skey: &SessionKey,
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        let kind = match self.sessions.get(skey)?.echo {
            true => Kind::EchoDown,
            false => Kind::Down,
        };
        let sent = self.seal_to_peer(kind, unix_secs, key, skey, payload, out)?;
        if let Some(s) = self.sessions.get_mut(skey) {
            s.last = now;
            s.down.0 += 1;
            s.down.1 += payload.len() as u64;
        }
        Some(sent)
    }

    /// An ack for session `skey` into `out`: its length and where it goes.
    pub fn seal_ack(
        &mut self,
        unix_secs: u64,
        key: &ClientKey,
        skey: &SessionKey,
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        self.seal_to_peer(Kind::Ack, unix_secs, key, skey, &[], out)
    }

    /// A datagram of `kind` for session `skey`, numbered in its down direction.
    fn seal_to_peer(
        &mut self,
        kind: Kind,
        unix_secs: u64,
        key: &ClientKey,
        skey: &SessionKey,
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        let s = self.sessions.get_mut(skey)?;
        let h = Header {
            kind,
            flags: 0,
            key: skey.0,
            session: skey.1,
            seq: s.next_down,
            timestamp: unix_secs,
            addr: kind.is_data().then_some(s.dst),
        };
        let n = dgram::seal(key, &h, payload, out).ok()?;
        s.next_down += 1;
        Some((n, s.peer))
    }

    /// The refusal of `o` (to `o.from`; no state is kept). Smaller than the datagram it answers,
    /// so it amplifies nothing.
    pub fn seal_refused(
        unix_secs: u64,
        key: &ClientKey,
        o: &Opening,
        why: RefuseReason,
        out: &mut [u8],
    ) -> Option<usize> {
        let h = Header {
            kind: Kind::Refused,
            flags: 0,
            key: o.key.0,
            session: o.key.1,
            seq: o.seq,
            timestamp: unix_secs,
            addr: None,
        };
        dgram::seal(key, &h, &[why.code()], out).ok()
    }

    /// Ends the sessions idle at `now` (tombstones kept); returns them.
    pub fn expire(&mut self, now: Instant, unix_secs: u64) -> Vec<(SessionKey, RelaySession)> {
        let idle = self.cfg.idle;
        let dead: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last) >= idle)
            .map(|(k, _)| *k)
            .collect();
        let out: Vec<(SessionKey, RelaySession)> = dead
            .into_iter()
            .filter_map(|k| self.remove(k).map(|s| (k, s)))
            .collect();
        self.expire_tombs(unix_secs);
        out
    }

    /// Ends the sessions of keys not in `valid`; returns them.
    pub fn retain_keys(&mut self, valid: &[KeyId]) -> Vec<(SessionKey, RelaySession)> {
        let dead: Vec<SessionKey> = self
            .sessions
            .keys()
            .filter(|k| !valid.contains(&k.0))
            .copied()
            .collect();
        dead.into_iter()
            .filter_map(|k| self.remove(k).map(|s| (k, s)))
            .collect()
    }

    /// Removes a session, leaving its tombstone.
    pub fn remove(&mut self, k: SessionKey) -> Option<RelaySession> {
        let s = self.sessions.remove(&k)?;
        if self.tombs.len() >= self.cfg.max_tombstones.max(1) {
            while let Some(old) = self.tomb_order.pop_front() {
                if let Some(t) = self.tombs.remove(&old) {
                    self.floor = self.floor.max(t.last_ts);
                    break;
                }
            }
        }
        let t = Tombstone {
            last_seq: s.recv.top(),
            last_ts: s.last_ts,
        };
        if self.tombs.insert(k, t).is_none() {
            self.tomb_order.push_back(k);
        }
        Some(s)
    }

    /// Forgets tombstones whose datagrams are all stale now.
    fn expire_tombs(&mut self, unix_secs: u64) {
        let skew = self.cfg.max_clock_skew.as_secs();
        while let Some(k) = self.tomb_order.front().copied() {
            match self.tombs.get(&k) {
                Some(t) if t.last_ts.saturating_add(skew) >= unix_secs => break,
                _ => {
                    self.tomb_order.pop_front();
                    self.tombs.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;

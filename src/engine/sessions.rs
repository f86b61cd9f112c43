//! UDP and ICMP echo sessions: which host 5-tuple is relayed through which interface, and when
//! an idle session ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::IfaceId;
use crate::time::Instant;

/// A session's id, shared with the socket thread that owns its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// What a session relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// UDP datagrams (through a UDP socket per session).
    Udp,
    /// ICMP / ICMPv6 echo (through a raw ICMP socket per interface and family).
    IcmpEcho,
}

/// One relayed UDP 5-tuple or ICMP echo identifier.
#[derive(Debug, Clone)]
pub struct Session {
    /// Id.
    pub id: SessionId,
    /// What it relays.
    pub kind: DatagramKind,
    /// The host side (for ICMP the port is the echo identifier).
    pub host: SocketAddr,
    /// The destination (for ICMP the port is the echo identifier).
    pub remote: SocketAddr,
    /// The interface it uses now.
    pub iface: IfaceId,
    /// Last datagram either way.
    pub last: Instant,
    /// Idle time after which it ends.
    pub idle: Duration,
    /// ICMP echo: the identifier used on the wire (allocated like a NAT does, so that echo
    /// replies reaching the host's own raw sockets on the physical interface do not look like
    /// answers to the host's ping).
    pub wire_ident: u16,
    /// Datagrams and bytes host → destination.
    pub up: (u64, u64),
    /// Datagrams and bytes destination → host.
    pub down: (u64, u64),
    /// The converter it goes through (its socket then talks to the converter), or direct.
    pub via: Option<super::relayed::Via>,
}

/// The session table (O(1) by 5-tuple, by id, and for echo replies by (source, identifier)).
#[derive(Debug, Default)]
pub struct Sessions {
    by_key: HashMap<(DatagramKind, SocketAddr, SocketAddr), SessionId>,
    by_id: HashMap<SessionId, Session>,
    echo: HashMap<(IfaceId, IpAddr, u16), SessionId>,
    next: u64,
}

impl Sessions {
    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    /// The session for this 5-tuple, if any.
    pub fn find(&mut self, kind: DatagramKind, host: SocketAddr, remote: SocketAddr) -> Option<&mut Session> {
        let id = *self.by_key.get(&(kind, host, remote))?;
        self.by_id.get_mut(&id)
    }
    /// A new session.
    pub fn insert(
        &mut self,
        kind: DatagramKind,
        host: SocketAddr,
        remote: SocketAddr,
        iface: IfaceId,
        now: Instant,
        idle: Duration,
    ) -> &mut Session {
        self.next += 1;
        let id = SessionId(self.next);
        self.by_key.insert((kind, host, remote), id);
        let mut wire_ident = 0;
        if kind == DatagramKind::IcmpEcho {
            // A free identifier toward this destination (bounded search; the table is far from
            // holding 65,536 echo sessions to one address).
            wire_ident = (self.next as u16).wrapping_mul(40503) ^ 0x6d70;
            for _ in 0..u16::MAX {
                if !self.echo.contains_key(&(iface, remote.ip(), wire_ident)) {
                    break;
                }
                wire_ident = wire_ident.wrapping_add(1);
            }
            self.echo.insert((iface, remote.ip(), wire_ident), id);
        }
        self.by_id.entry(id).or_insert(Session {
            id,
            kind,
            host,
            remote,
            iface,
            last: now,
            idle,
            wire_ident,
            up: (0, 0),
            down: (0, 0),
            via: None,
        })
    }
    /// Moves a session to another interface.
    pub fn set_iface(&mut self, id: SessionId, iface: IfaceId) {
        if let Some(s) = self.by_id.get_mut(&id) {
            if s.kind == DatagramKind::IcmpEcho {
                self.echo.remove(&(s.iface, s.remote.ip(), s.wire_ident));
                self.echo.insert((iface, s.remote.ip(), s.wire_ident), id);
            }
            s.iface = iface;
        }
    }
    /// By id.
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.by_id.get_mut(&id)
    }
    /// The echo session an echo reply from `from` with `ident` arriving on `iface` belongs to.
    pub fn echo_session(&mut self, iface: IfaceId, from: IpAddr, ident: u16) -> Option<&mut Session> {
        let id = *self.echo.get(&(iface, from, ident))?;
        self.by_id.get_mut(&id)
    }
    /// All sessions.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.by_id.values()
    }
    /// Ids of all sessions.
    pub fn ids(&self) -> Vec<SessionId> {
        self.by_id.keys().copied().collect()
    }
    /// Removes the sessions idle at `now`, returning them.
    pub fn expire(&mut self, now: Instant) -> Vec<Session> {
        let dead: Vec<SessionId> = self
            .by_id
            .values()
            .filter(|s| now.saturating_duration_since(s.last) >= s.idle)
            .map(|s| s.id)
            .collect();
        let mut out = Vec::with_capacity(dead.len());
        for id in dead {
            if let Some(s) = self.by_id.remove(&id) {
                self.by_key.remove(&(s.kind, s.host, s.remote));
                if s.kind == DatagramKind::IcmpEcho {
                    self.echo.remove(&(s.iface, s.remote.ip(), s.wire_ident));
                }
                out.push(s);
            }
        }
        out
    }
}

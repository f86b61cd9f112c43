//! The connection toward the original destination that a host flow is relayed to.
//!
//! [`Upstream::Mptcp`] is the normal case: an MPTCP connection (RFC 8684) whose subflows run
//! over the physical interfaces, which falls back to regular TCP by itself when the destination
//! or the path does not speak MPTCP (§3.7). [`Upstream::Tcp`] is plain TCP on one interface,
//! used when MPTCP is disabled. Both offer the same data-level calls (`send`/`recv`/`close`/
//! `abort`), connection-level events expressed as [`tcp::Event`], `handle_segment` for a segment
//! that arrived on an interface, and `poll_transmit` saying which interface a packet leaves by.
//! What only MPTCP has to say (subflows coming and going, fallback causes, unresponsive paths)
//! is reported as [`Note`]s for the engine's counters and failover records.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::IfaceId;
use crate::mptcp::{self, FallbackCause, PathId};
use crate::tcp::{self, Event};
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// Something the MPTCP connection reported that the engine records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Connected; `mptcp` false: as regular TCP.
    Connected {
        /// MPTCP in use.
        mptcp: bool,
    },
    /// The connection runs as regular TCP from now on, and why.
    Fallback(FallbackCause),
    /// A subflow on `iface` can carry data.
    SubflowUp {
        /// Its interface.
        iface: IfaceId,
        /// It is a backup subflow.
        backup: bool,
    },
    /// A subflow on `iface` is gone.
    SubflowDown {
        /// Its interface.
        iface: IfaceId,
    },
    /// A subflow toward `remote`, another address of the server, needs a local port.
    PortNeeded {
        /// The server's other address.
        remote: SocketAddr,
    },
    /// The path over `iface` stopped answering and its subflow was failed over.
    Unresponsive {
        /// The interface.
        iface: IfaceId,
        /// How long it had been silent.
        silent_for: Duration,
    },
}

/// A subflow as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubflowView {
    /// Interface index (0 Wi-Fi, 1 cellular).
    pub iface: IfaceId,
    /// Local address.
    pub local: SocketAddr,
    /// TCP state.
    pub state: String,
    /// Carrying data now.
    pub usable: bool,
    /// Backup priority.
    pub backup: bool,
    /// Smoothed RTT in µs (0: not measured).
    pub srtt_us: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
}

/// The connection toward the destination.
#[derive(Debug)]
pub enum Upstream {
    /// Plain TCP on one interface (a server without MPTCP, or before the MPTCP engine).
    Tcp {
        /// The connection.
        conn: Box<tcp::Connection>,
        /// The interface its packets leave by.
        iface: IfaceId,
    },
    /// MPTCP (or its regular-TCP fallback).
    Mptcp {
        /// The connection.
        conn: Box<mptcp::Connection>,
        /// Connection events not yet passed on.
        notes: VecDeque<Note>,
        /// A data-level event decoded while draining, waiting to be returned.
        pending: VecDeque<Event>,
    },
}

impl Upstream {
    /// `"tcp"` (or `"mptcp"`), for status.
    pub fn kind(&self) -> &'static str {
        match self {
            Upstream::Tcp { .. } => "tcp",
            Upstream::Mptcp { conn, .. } => {
                if conn.is_mptcp() {
                    "mptcp"
                } else {
                    "tcp"
                }
            }
        }
    }
    /// The destination.
    pub fn remote(&self) -> SocketAddr {
        match self {
            Upstream::Tcp { conn, .. } => conn.remote(),
            Upstream::Mptcp { conn, .. } => conn.remote(),
        }
    }
    /// The interface carrying (most of) the traffic now.
    pub fn iface(&self) -> IfaceId {
        match self {
            Upstream::Tcp { iface, .. } => *iface,
            Upstream::Mptcp { conn, .. } => active_path(conn).0,
        }
    }
    /// A segment for this connection arrived on `iface`, from `remote` to `local`.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        iface: IfaceId,
        (local, remote): (SocketAddr, SocketAddr),
        hdr: &SegmentHeader,
        payload: &[u8],
    ) {
        match self {
            Upstream::Mptcp { conn, .. } => {
                conn.handle_packet(now, PathId(iface), local, remote, hdr, payload)
            }
            Upstream::Tcp { conn, iface: mine } => {
                if iface == *mine {
                    conn.handle_segment(now, hdr, payload);
                }
            }
        }
    }
    /// The next packet to send and the interface it leaves by.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(IfaceId, usize)> {
        match self {
            Upstream::Tcp { conn, iface } => conn.poll_transmit(now, buf).map(|t| (*iface, t.len)),
            Upstream::Mptcp { conn, .. } => conn.poll_transmit(now, buf).map(|(p, t)| (p.0, t.len)),
        }
    }
    /// The next connection-level event.
    pub fn poll_event(&mut self) -> Option<Event> {
        match self {
            Upstream::Tcp { conn, .. } => conn.poll_event(),
            Upstream::Mptcp { conn, notes, pending } => {
                if let Some(e) = pending.pop_front() {
                    return Some(e);
                }
                while let Some(ev) = conn.poll_event() {
                    if let Some(e) = translate(ev, notes) {
                        return Some(e);
                    }
                }
                None
            }
        }
    }
    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Upstream::Tcp { conn, .. } => conn.poll_timeout(),
            Upstream::Mptcp { conn, .. } => conn.poll_timeout(),
        }
    }
    /// Runs expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Upstream::Tcp { conn, .. } => conn.handle_timeout(now),
            Upstream::Mptcp { conn, .. } => conn.handle_timeout(now),
        }
    }
    /// Queues bytes; returns how many were taken.
    pub fn send(&mut self, data: &[u8]) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.send(data),
            Upstream::Mptcp { conn, .. } => conn.send(data),
        }
    }
    /// Room in the send buffer.
    pub fn send_capacity(&self) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.send_capacity(),
            Upstream::Mptcp { conn, .. } => conn.send_capacity(),
        }
    }
    /// Reads in-order bytes.
    pub fn recv(&mut self, out: &mut [u8]) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.recv(out),
            Upstream::Mptcp { conn, .. } => conn.recv(out),
        }
    }
    /// Bytes ready to read.
    pub fn recv_available(&self) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.recv_available(),
            Upstream::Mptcp { conn, .. } => conn.recv_available(),
        }
    }
    /// The destination closed its side and everything was read.
    pub fn recv_finished(&self) -> bool {
        match self {
            Upstream::Tcp { conn, .. } => conn.recv_finished(),
            Upstream::Mptcp { conn, .. } => conn.recv_finished(),
        }
    }
    /// Half-close after the queued data.
    pub fn close(&mut self) {
        match self {
            Upstream::Tcp { conn, .. } => conn.close(),
            Upstream::Mptcp { conn, .. } => conn.close(),
        }
    }
    /// Reset.
    pub fn abort(&mut self) {
        match self {
            Upstream::Tcp { conn, .. } => conn.abort(),
            Upstream::Mptcp { conn, .. } => conn.abort(),
        }
    }
    /// Nothing left of the connection (closed, reset or timed out).
    pub fn is_closed(&self) -> bool {
        match self {
            Upstream::Tcp { conn, .. } => conn.is_closed(),
            Upstream::Mptcp { conn, .. } => conn.is_closed(),
        }
    }
    /// State name for status.
    pub fn state_name(&self) -> String {
        match self {
            Upstream::Tcp { conn, .. } => format!("{:?}", conn.state()),
            Upstream::Mptcp { conn, .. } => {
                let subs = conn.subflows();
                match subs.iter().find(|s| s.usable).or(subs.first()) {
                    Some(s) => format!("{:?}", s.state),
                    None => "NoSubflow".into(),
                }
            }
        }
    }
    /// Smoothed RTT in microseconds (0 if not measured).
    pub fn srtt_us(&self) -> u64 {
        match self {
            Upstream::Tcp { conn, .. } => conn.health().srtt.map_or(0, |d| d.as_micros() as u64),
            Upstream::Mptcp { conn, .. } => {
                let subs = conn.subflows();
                let path = active_path(conn);
                subs.iter()
                    .find(|s| s.path == path)
                    .and_then(|s| s.health.srtt)
                    .map_or(0, |d| d.as_micros() as u64)
            }
        }
    }
    /// Local address of the (first) subflow.
    pub fn local(&self) -> SocketAddr {
        match self {
            Upstream::Tcp { conn, .. } => conn.local(),
            Upstream::Mptcp { conn, .. } => {
                let subs = conn.subflows();
                let path = active_path(conn);
                subs.iter()
                    .find(|s| s.path == path)
                    .or(subs.first())
                    .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |s| s.local)
            }
        }
    }
}

impl Upstream {
    /// A new MPTCP upstream.
    pub fn mptcp(conn: mptcp::Connection) -> Upstream {
        Upstream::Mptcp {
            conn: Box::new(conn),
            notes: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    /// The MPTCP connection, if this is one.
    pub fn as_mptcp(&mut self) -> Option<&mut mptcp::Connection> {
        match self {
            Upstream::Mptcp { conn, .. } => Some(conn),
            Upstream::Tcp { .. } => None,
        }
    }

    /// The next note for the engine (after [`poll_event`](Self::poll_event) drained).
    pub fn poll_note(&mut self) -> Option<Note> {
        match self {
            Upstream::Mptcp { conn, notes, pending } => {
                // Notes hide behind data-level events: decode everything queued.
                while let Some(ev) = conn.poll_event() {
                    if let Some(e) = translate(ev, notes) {
                        pending.push_back(e);
                    }
                }
                notes.pop_front()
            }
            Upstream::Tcp { .. } => None,
        }
    }

    /// Local ports of the connection (keys in the engine's port map).
    pub fn ports(&self) -> Vec<u16> {
        match self {
            Upstream::Tcp { conn, .. } => vec![conn.local().port()],
            Upstream::Mptcp { conn, .. } => conn.ports().to_vec(),
        }
    }

    /// The subflows, for status (one for plain TCP).
    pub fn subflows(&self) -> Vec<SubflowView> {
        match self {
            Upstream::Tcp { conn, iface } => vec![SubflowView {
                iface: *iface,
                local: conn.local(),
                state: format!("{:?}", conn.state()),
                usable: conn.state() == tcp::State::Established,
                backup: false,
                srtt_us: conn.health().srtt.map_or(0, |d| d.as_micros() as u64),
                bytes_sent: 0,
            }],
            Upstream::Mptcp { conn, .. } => conn
                .subflows()
                .into_iter()
                .map(|s| SubflowView {
                    iface: s.path.0,
                    local: s.local,
                    state: format!("{:?}", s.state),
                    usable: s.usable,
                    backup: s.backup,
                    srtt_us: s.health.srtt.map_or(0, |d| d.as_micros() as u64),
                    bytes_sent: s.bytes_sent,
                })
                .collect(),
        }
    }
}

/// The path carrying the data now: a usable regular subflow's, else a usable backup's, else
/// the initial one.
fn active_path(conn: &mptcp::Connection) -> PathId {
    let subs = conn.subflows();
    subs.iter()
        .filter(|s| s.usable)
        .min_by_key(|s| s.backup)
        .map_or(conn.initial_path(), |s| s.path)
}

/// An MPTCP event as a data-level [`Event`], or recorded as a [`Note`].
fn translate(ev: mptcp::Event, notes: &mut VecDeque<Note>) -> Option<Event> {
    use mptcp::Event as M;
    match ev {
        M::Connected { mptcp } => {
            notes.push_back(Note::Connected { mptcp });
            Some(Event::Connected)
        }
        M::Readable => Some(Event::Readable),
        M::Writable => Some(Event::Writable),
        M::PeerClosed => Some(Event::PeerClosed),
        M::Closed => Some(Event::Closed),
        M::Reset => Some(Event::Reset),
        M::TimedOut => Some(Event::TimedOut),
        M::SubflowUp { path, backup, .. } => {
            notes.push_back(Note::SubflowUp {
                iface: path.0,
                backup,
            });
            None
        }
        M::SubflowDown { path, .. } => {
            notes.push_back(Note::SubflowDown { iface: path.0 });
            None
        }
        M::Fallback { cause, .. } => {
            notes.push_back(Note::Fallback(cause));
            None
        }
        M::PathUnresponsive { path, silent_for } => {
            notes.push_back(Note::Unresponsive {
                iface: path.0,
                silent_for,
            });
            None
        }
        M::PortNeeded { remote } => {
            notes.push_back(Note::PortNeeded { remote });
            None
        }
        M::SubflowReset { .. } => None,
    }
}

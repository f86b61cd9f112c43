//! The connection toward the original destination that a host flow is relayed to.
//!
//! [`Upstream`] is the seam where the MPTCP connection plugs in: today a plain TCP connection
//! over one interface ([`Upstream::Tcp`]); the MPTCP connection (`mptcp::Connection`, several
//! subflows over several interfaces) becomes a second variant implementing the same calls:
//! data-level `send`/`recv`/`close`/`abort`, connection-level events expressed as
//! [`tcp::Event`], `handle_segment` for a segment that arrived on interface `iface` at one of its
//! local ports, and `poll_transmit` saying which interface each packet leaves by.

use std::net::SocketAddr;

use super::IfaceId;
use crate::tcp::{self, Event};
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// The connection toward the destination.
#[derive(Debug)]
pub enum Upstream {
    /// Plain TCP on one interface (a server without MPTCP, or before the MPTCP engine).
    Tcp {
        /// The connection.
        conn: tcp::Connection,
        /// The interface its packets leave by.
        iface: IfaceId,
    },
}

impl Upstream {
    /// `"tcp"` (or `"mptcp"`), for status.
    pub fn kind(&self) -> &'static str {
        match self {
            Upstream::Tcp { .. } => "tcp",
        }
    }
    /// The destination.
    pub fn remote(&self) -> SocketAddr {
        match self {
            Upstream::Tcp { conn, .. } => conn.remote(),
        }
    }
    /// The interface carrying (most of) the traffic now.
    pub fn iface(&self) -> IfaceId {
        match self {
            Upstream::Tcp { iface, .. } => *iface,
        }
    }
    /// A segment for this connection arrived on `iface`.
    pub fn handle_segment(&mut self, now: Instant, iface: IfaceId, hdr: &SegmentHeader, payload: &[u8]) {
        match self {
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
        }
    }
    /// The next connection-level event.
    pub fn poll_event(&mut self) -> Option<Event> {
        match self {
            Upstream::Tcp { conn, .. } => conn.poll_event(),
        }
    }
    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Upstream::Tcp { conn, .. } => conn.poll_timeout(),
        }
    }
    /// Runs expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Upstream::Tcp { conn, .. } => conn.handle_timeout(now),
        }
    }
    /// Queues bytes; returns how many were taken.
    pub fn send(&mut self, data: &[u8]) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.send(data),
        }
    }
    /// Room in the send buffer.
    pub fn send_capacity(&self) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.send_capacity(),
        }
    }
    /// Reads in-order bytes.
    pub fn recv(&mut self, out: &mut [u8]) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.recv(out),
        }
    }
    /// Bytes ready to read.
    pub fn recv_available(&self) -> usize {
        match self {
            Upstream::Tcp { conn, .. } => conn.recv_available(),
        }
    }
    /// The destination closed its side and everything was read.
    pub fn recv_finished(&self) -> bool {
        match self {
            Upstream::Tcp { conn, .. } => conn.recv_finished(),
        }
    }
    /// Half-close after the queued data.
    pub fn close(&mut self) {
        match self {
            Upstream::Tcp { conn, .. } => conn.close(),
        }
    }
    /// Reset.
    pub fn abort(&mut self) {
        match self {
            Upstream::Tcp { conn, .. } => conn.abort(),
        }
    }
    /// Nothing left of the connection (closed, reset or timed out).
    pub fn is_closed(&self) -> bool {
        match self {
            Upstream::Tcp { conn, .. } => conn.is_closed(),
        }
    }
    /// State name for status.
    pub fn state_name(&self) -> String {
        match self {
            Upstream::Tcp { conn, .. } => format!("{:?}", conn.state()),
        }
    }
    /// Smoothed RTT in microseconds (0 if not measured).
    pub fn srtt_us(&self) -> u64 {
        match self {
            Upstream::Tcp { conn, .. } => conn.health().srtt.map_or(0, |d| d.as_micros() as u64),
        }
    }
    /// Local address of the (first) subflow.
    pub fn local(&self) -> SocketAddr {
        match self {
            Upstream::Tcp { conn, .. } => conn.local(),
        }
    }
}

//! The plain-TCP upstream kind: one TCP connection on one interface (MPTCP disabled). It has no
//! notes to report and no paths to follow.

use std::net::SocketAddr;

use super::{Dial, Note, SubflowView, UpstreamConn, srtt_us};
use crate::engine::IfaceId;
use crate::tcp::{self, Event};
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// Plain TCP on one interface.
#[derive(Debug)]
pub struct TcpUpstream {
    conn: tcp::Connection,
    /// The interface its packets leave by.
    iface: IfaceId,
}

impl TcpUpstream {
    /// Sends the SYN from `dial.local` on `dial.iface`.
    pub fn connect(dial: &Dial<'_>) -> Self {
        TcpUpstream {
            conn: tcp::Connection::connect(dial.now, dial.local, dial.dst, dial.tcp, dial.isn_key),
            iface: dial.iface,
        }
    }
}

impl UpstreamConn for TcpUpstream {
    delegate_to_conn!();

    fn kind(&self) -> &'static str {
        "tcp"
    }
    fn local(&self) -> SocketAddr {
        self.conn.local()
    }
    fn iface(&self) -> IfaceId {
        self.iface
    }
    fn handle_segment(
        &mut self,
        now: Instant,
        iface: IfaceId,
        _tuple: (SocketAddr, SocketAddr),
        hdr: &SegmentHeader,
        payload: &[u8],
    ) {
        if iface == self.iface {
            self.conn.handle_segment(now, hdr, payload);
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(IfaceId, crate::tcp::Transmit)> {
        self.conn.poll_transmit(now, buf).map(|t| (self.iface, t))
    }
    fn poll_event(&mut self) -> Option<Event> {
        self.conn.poll_event()
    }
    fn poll_note(&mut self) -> Option<Note> {
        None
    }
    fn state_name(&self) -> String {
        format!("{:?}", self.conn.state())
    }
    fn srtt_us(&self) -> u64 {
        srtt_us(self.conn.health().srtt)
    }
    fn subflows(&self) -> Vec<SubflowView> {
        vec![SubflowView {
            iface: self.iface,
            local: self.conn.local(),
            state: self.state_name(),
            usable: self.conn.state() == tcp::State::Established,
            backup: false,
            srtt_us: self.srtt_us(),
            bytes_sent: 0,
        }]
    }
}

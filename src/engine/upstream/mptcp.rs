//! The MPTCP upstream kind (RFC 8684): an MPTCP connection whose subflows run over the physical
//! interfaces, falling back to regular TCP by itself (§3.7). Its connection events are split
//! here into the data-level [`Event`]s the relay follows and the [`Note`]s the engine records.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::{Dial, Note, SubflowView, UpstreamConn, srtt_us};
use crate::engine::IfaceId;
use crate::mptcp::crypto::Key;
use crate::mptcp::{self, LocalPath, MptcpConfig, PathId};
use crate::tcp::Event;
use crate::time::Instant;
use crate::wire::SegmentHeader;

/// MPTCP (or its regular-TCP fallback).
#[derive(Debug)]
pub struct MptcpUpstream {
    conn: mptcp::Connection,
    /// Connection events not yet passed on.
    notes: VecDeque<Note>,
    /// A data-level event decoded while draining, waiting to be returned.
    pending: VecDeque<Event>,
}

impl MptcpUpstream {
    /// Sends the (MP_CAPABLE unless `!offer`) SYN from `dial.local`'s port on `dial.iface`.
    pub fn connect(
        dial: &Dial<'_>,
        mut cfg: MptcpConfig,
        key: Key,
        paths: &[LocalPath],
        offer: bool,
    ) -> Self {
        cfg.tcp = dial.tcp;
        let conn = mptcp::Connection::connect(
            dial.now,
            cfg,
            paths,
            PathId(dial.iface),
            dial.dst,
            vec![dial.local.port()],
            key,
            dial.isn_key,
            offer,
        );
        MptcpUpstream {
            conn,
            notes: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    /// Puts `data` in the SYN (TCP Fast Open, RFC 8684 Appendix B); see
    /// [`mptcp::Connection::send_in_syn`].
    pub fn send_in_syn(&mut self, data: &[u8]) -> usize {
        self.conn.send_in_syn(data)
    }

    /// The path carrying the data now: a usable regular subflow's, else a usable backup's,
    /// else the initial one.
    fn active_path(&self) -> PathId {
        let subs = self.conn.subflows();
        subs.iter()
            .filter(|s| s.usable)
            .min_by_key(|s| s.backup)
            .map_or(self.conn.initial_path(), |s| s.path)
    }
}

impl UpstreamConn for MptcpUpstream {
    delegate_to_conn!();

    fn kind(&self) -> &'static str {
        if self.conn.is_mptcp() { "mptcp" } else { "tcp" }
    }
    fn local(&self) -> SocketAddr {
        let subs = self.conn.subflows();
        let path = self.active_path();
        subs.iter()
            .find(|s| s.path == path)
            .or(subs.first())
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |s| s.local)
    }
    fn iface(&self) -> IfaceId {
        self.active_path().0
    }
    fn handle_segment(
        &mut self,
        now: Instant,
        iface: IfaceId,
        (local, remote): (SocketAddr, SocketAddr),
        hdr: &SegmentHeader,
        payload: &[u8],
    ) {
        self.conn
            .handle_packet(now, PathId(iface), local, remote, hdr, payload)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(IfaceId, crate::tcp::Transmit)> {
        self.conn.poll_transmit(now, buf).map(|(p, t)| (p.0, t))
    }
    fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        while let Some(ev) = self.conn.poll_event() {
            if let Some(e) = translate(ev, &mut self.notes) {
                return Some(e);
            }
        }
        None
    }
    fn poll_note(&mut self) -> Option<Note> {
        // Notes hide behind data-level events: decode everything queued.
        while let Some(ev) = self.conn.poll_event() {
            if let Some(e) = translate(ev, &mut self.notes) {
                self.pending.push_back(e);
            }
        }
        self.notes.pop_front()
    }
    fn state_name(&self) -> String {
        let subs = self.conn.subflows();
        match subs.iter().find(|s| s.usable).or(subs.first()) {
            Some(s) => format!("{:?}", s.state),
            None => "NoSubflow".into(),
        }
    }
    fn srtt_us(&self) -> u64 {
        let path = self.active_path();
        let subs = self.conn.subflows();
        srtt_us(subs.iter().find(|s| s.path == path).and_then(|s| s.health.srtt))
    }
    fn subflows(&self) -> Vec<SubflowView> {
        self.conn
            .subflows()
            .into_iter()
            .map(|s| SubflowView {
                iface: s.path.0,
                local: s.local,
                state: format!("{:?}", s.state),
                usable: s.usable,
                backup: s.backup,
                srtt_us: srtt_us(s.health.srtt),
                bytes_sent: s.bytes_sent,
            })
            .collect()
    }
    fn mptcp(&mut self) -> Option<&mut mptcp::Connection> {
        Some(&mut self.conn)
    }
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
        M::PathUnresponsive {
            path,
            silent_for,
            probe_out_for,
        } => {
            notes.push_back(Note::Unresponsive {
                iface: path.0,
                silent_for,
                probe_out_for,
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

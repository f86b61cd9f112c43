//! Fallback to regular TCP (RFC 8684 §3.7): plain TCP from the start, the infinite mapping
//! after the handshake, MP_FAIL on a checksum failure, and the data-level ACKs derived from
//! the subflow's own ACKs afterwards.

use super::{Connection, Event, FallbackCause, Handshake, MptcpOption, State};
use crate::mptcp::mapping::{Mapping, SubflowReceiver};
use crate::mptcp::recv::DataRecvBuffer;
use crate::mptcp::seq::{DataSeq, SubflowSeq};

impl Connection {
    /// Plain TCP from the start on subflow `i`: the subflow's bytes are the data stream.
    pub(super) fn setup_plain_rx(&mut self, i: usize) {
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

    /// Subflow `i` goes on as regular TCP, for `cause`; every other subflow goes.
    pub(super) fn enter_fallback(&mut self, i: usize, cause: FallbackCause) {
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
        if matches!(s.mp.hs, Handshake::CapableUnconfirmed(_)) {
            // No MP_CAPABLE to repeat any more.
            s.mp.hs = Handshake::Established;
        }
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

    /// §3.7, single subflow: MP_FAIL for `dsn` on the next ACK (the failure report, or the answer
    /// to the peer's), an infinite mapping on the next data segment, regular TCP from here on.
    pub(super) fn fail_to_tcp(&mut self, i: usize, dsn: DataSeq) {
        if self.fallback {
            return;
        }
        self.enter_fallback(i, FallbackCause::ChecksumFailed);
        let s = &mut self.subflows[i];
        s.mp.oneoff.push_front(MptcpOption::MpFail { dsn: dsn.0 });
        s.mp.infinite_tx = true;
        s.tcp.request_ack();
    }

    /// After fallback our FIN is the DATA_FIN: its acknowledgment DATA_ACKs everything.
    pub(super) fn fin_acked_by_subflow(&mut self) {
        let nxt = self.send.snd_nxt();
        let _ = self.send.on_data_ack(nxt, u32::MAX);
    }

    /// Phase 3, after the data was drained and before
    /// [`forget_acked_mappings`](Self::forget_acked_mappings) trims the mappings it reads: after
    /// fallback no DSS comes any more, so the DATA_ACK follows from the subflow ACK, and the
    /// acknowledged subflow FIN acknowledges the DATA_FIN.
    pub(super) fn fallback_data_acks(&mut self) {
        if !self.fallback {
            return;
        }
        if let Some(s) = self
            .subflows
            .iter_mut()
            .find(|s| s.mp.no_options && !s.mp.tx_maps.is_empty())
        {
            let una = SubflowSeq::from_absolute(s.tcp.snd_una().0, s.mp.iss);
            if let Some(d) = s.mp.dsn_of(una)
                && let Ok(o) = self.send.on_data_ack(d, u32::MAX)
            {
                self.freed(o.freed);
            }
        }
        if let Some(s) = self.subflows.iter().find(|s| s.mp.no_options)
            && matches!(s.tcp.state(), State::FinWait2 | State::TimeWait)
            && !self.send.fin_acked()
        {
            // The subflow FIN (our DATA_FIN after fallback) was acknowledged.
            self.fin_acked_by_subflow();
        }
    }
}

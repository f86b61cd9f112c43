//! The data level: the application's [`send`](Connection::send) / [`recv`](Connection::recv),
//! moving received bytes from the subflows into the data-level receive buffer, the send-side
//! bookkeeping after ACKs (mappings forgotten, stalled subflows reinjected), and the data-level
//! retransmissions (DATA_FIN, and everything not DATA_ACKed, §3.3.3 and §3.3.6).

use std::time::Duration;

use super::{Connection, Event, Timer};
use crate::mptcp::seq::{DataSeq, SubflowSeq};
use crate::mptcp::subflow::Subflow;
use crate::time::Instant;

thread_local! {
    /// The copy buffer between a subflow and the data-level buffers, one per thread for all
    /// connections: an idle connection holds none (memory per idle flow, issue 6 P6).
    pub(super) static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65536]);
}

/// What the data-level retransmission timer ([`Timer::DataRto`]) watches.
#[derive(Debug, Clone, Copy)]
pub(super) struct DataRto {
    /// The DATA_ACK it waits to see move.
    seen: DataSeq,
    /// Timeouts so far without it moving.
    backoff: u32,
}

impl Connection {
    /// Queues bytes; returns how many fit (fewer: wait for [`Event::Writable`]).
    pub fn send(&mut self, data: &[u8]) -> usize {
        if self.is_closed() {
            return 0;
        }
        let n = self.send.write(data).unwrap_or(0);
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }

    /// Reads in-order data-level bytes; returns how many (0: nothing ready).
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.recv_into(buf.len(), crate::tcp::slice_sink(buf))
    }

    /// As [`recv`](Self::recv), up to `max` bytes handed to `sink` in one or two slices straight
    /// from the data-level receive buffer (a relay passes them on without a copy of its own).
    pub fn recv_into(&mut self, max: usize, sink: impl FnMut(&[u8])) -> usize {
        let n = self.recv.as_mut().map_or(0, |r| r.read_into(max, sink));
        if n > 0 {
            self.readable_reported = false;
            // Room again at the data level: take what the subflows hold, so their receive
            // windows reopen now (a window update goes out with the next transmit) rather than
            // at the peer's next zero-window probe.
            self.drain_subflows();
        }
        n
    }

    /// Room in the data-level send buffer.
    pub fn send_capacity(&self) -> usize {
        if self.is_closed() {
            0
        } else {
            self.send.free_space()
        }
    }

    /// Bytes ready for [`recv`](Self::recv).
    pub fn recv_available(&self) -> usize {
        self.recv.as_ref().map_or(0, |r| r.readable())
    }

    /// The peer closed and everything was read.
    pub fn recv_finished(&self) -> bool {
        self.recv.as_ref().is_some_and(|r| r.is_finished())
    }

    /// Reports [`Event::Writable`] if the application waits for room and some was freed.
    pub(super) fn freed(&mut self, bytes: usize) {
        if bytes > 0 && self.want_writable {
            self.want_writable = false;
            self.events.push_back(Event::Writable);
        }
    }

    /// Phase 2, after the subflow events (a subflow reset there still hands on what it
    /// received): received bytes move up into the data-level buffer, within its limit; after
    /// fallback the subflow FIN becomes the DATA_FIN.
    pub(super) fn drain_subflows(&mut self) {
        let limit = self.cfg.recv_buffer;
        let mut new_data = false;
        for i in 0..self.subflows.len() {
            loop {
                let Some(recv) = self.recv.as_mut() else { return };
                if recv.readable() >= limit {
                    break;
                }
                let s = &mut self.subflows[i];
                let (Some(rel), Some(rx)) = (s.recv_rel(), s.mp.rx.as_mut()) else {
                    break;
                };
                let res = SCRATCH.with_borrow_mut(|sc| {
                    let room = (limit - recv.readable()).min(sc.len());
                    let n = s.tcp.recv(&mut sc[..room]);
                    (n > 0).then(|| rx.on_data(rel, &sc[..n], recv))
                });
                match res {
                    None => break,
                    Some(Ok(k)) => new_data |= k > 0,
                    Some(Err(e)) => {
                        self.on_mapping_error(i, e);
                        break;
                    }
                }
            }
            // After fallback the subflow FIN is the DATA_FIN.
            let s = &self.subflows[i];
            if s.mp.no_options
                && s.tcp.recv_finished()
                && s.mp.rx.as_ref().is_some_and(|r| r.pending_bytes() == 0)
                && let Some(recv) = self.recv.as_mut()
                && !recv.fin_received()
            {
                let at = recv.rcv_nxt();
                let _ = recv.insert_data_fin(at);
            }
        }
        if (new_data || self.recv_available() > 0) && !self.readable_reported && self.recv_available() > 0 {
            self.readable_reported = true;
            self.events.push_back(Event::Readable);
        }
    }

    /// Phase 4, after [`fallback_data_acks`](Self::fallback_data_acks) read the mappings: those
    /// the subflow ACK covered are forgotten (the last kept for DSN derivation), and the bare
    /// DATA_FIN once it is DATA_ACKed.
    pub(super) fn forget_acked_mappings(&mut self) {
        for s in &mut self.subflows {
            let una = SubflowSeq::from_absolute(s.tcp.snd_una().0, s.mp.iss);
            while s.mp.tx_maps.len() > 1
                && s.mp.tx_maps[0]
                    .subflow_seq
                    .wrapping_add(s.mp.tx_maps[0].subflow_len())
                    .diff(una)
                    <= 0
            {
                s.mp.tx_maps.pop_front();
            }
            if self.send.fin_acked() {
                s.mp.bare_fin = None;
            }
        }
    }

    /// Phase 5, after the ACK bookkeeping: data of a subflow stalled on RTOs is queued again
    /// for the others (§3.3.6), once per stall.
    pub(super) fn reinject_stalled(&mut self) {
        for i in 0..self.subflows.len() {
            if self.subflows[i].dead {
                continue;
            }
            let rtos = self.subflows[i].tcp.health().consecutive_rtos;
            // After fallback the subflow's stream is the data stream: never reinject into it.
            let other = (0..self.subflows.len()).any(|j| j != i && self.ready(j));
            if rtos >= self.cfg.stall_rtos && !self.subflows[i].mp.reinjected && !self.fallback && other {
                // §3.3.6: data of a stalled subflow is retransmitted on another (only when there
                // is another: reinjecting into the same subflow would only duplicate it).
                self.subflows[i].mp.reinjected = true;
                self.send.mark_subflow_failed(self.subflows[i].id);
            } else if rtos == 0 {
                self.subflows[i].mp.reinjected = false;
            }
        }
    }

    /// Phase 12, after every phase that processes DATA_ACKs or removes subflows: the
    /// data-level retransmission timer (RFC 8684 §3.3.6: the sender "MUST keep data in its
    /// send buffer as long as the data has not been acknowledged at the connection level"; data
    /// the subflows delivered may still be lost above them, e.g. dropped by the peer outside
    /// its data-level window). When the DATA_ACK has not moved for twice the largest subflow
    /// RTO (backing off), and no subflow still holds data of its own to retransmit, everything
    /// not DATA_ACKed is sent again.
    pub(super) fn check_data_rto(&mut self, now: Instant) {
        let live = |s: &&Subflow| !s.dead && !s.mp.no_options;
        if self.fallback || self.neg.is_none() || self.is_closed() || self.send.in_flight() == 0 {
            self.set_data_rto(None);
            return;
        }
        let una = self.send.snd_una();
        let due = self.timers.get(Timer::DataRto).is_none_or(|at| now >= at);
        if self.data_rto.is_some_and(|w| w.seen == una) && !due {
            return;
        }
        let base = self
            .subflows
            .iter()
            .filter(live)
            .map(|s| s.tcp.health().rto)
            .max()
            .unwrap_or(self.cfg.tcp.initial_rto)
            .max(Duration::from_millis(200))
            * 2;
        match self.data_rto {
            Some(DataRto { seen, backoff: n }) if seen == una => {
                let drained = self
                    .subflows
                    .iter()
                    .filter(live)
                    .all(|s| s.tcp.send_queued() == 0);
                if drained && (0..self.subflows.len()).any(|i| self.ready(i)) {
                    let q = self.send.retransmit_unacked();
                    tracing::debug!(bytes = q, dsn = una.0, "data-level retransmission timeout");
                }
                self.set_data_rto(Some((now + base * (1 << n.min(6)), una, n + 1)));
            }
            _ => self.set_data_rto(Some((now + base, una, 1))),
        }
    }

    /// Arms [`Timer::DataRto`] at a deadline, watching a DATA_ACK, with a backoff count (or
    /// disarms it).
    fn set_data_rto(&mut self, rto: Option<(Instant, DataSeq, u32)>) {
        self.timers.set(Timer::DataRto, rto.map(|r| r.0));
        self.data_rto = rto.map(|(_, seen, backoff)| DataRto { seen, backoff });
    }

    /// [`Timer::FinRtx`] expired: the DATA_FIN goes again on a subflow that can carry it,
    /// backing off, unless it was DATA_ACKed meanwhile.
    pub(super) fn on_fin_rtx(&mut self, now: Instant) {
        if self.send.fin_acked() {
            self.timers.set(Timer::FinRtx, None);
            return;
        }
        // RFC 8684 §3.3.3: the DATA_FIN is retransmitted until DATA_ACKed.
        let fin = self.subflows.iter().find_map(|s| s.mp.bare_fin);
        if let Some(i) = (0..self.subflows.len()).find(|&i| self.ready(i))
            && let Some(fin) = fin
        {
            self.subflows[i].mp.bare_fin = Some(fin);
            self.subflows[i].tcp.request_ack();
        }
        let n = self.fin_rtx_backoff;
        let back = self.cfg.tcp.initial_rto.saturating_mul(1 << n.min(6));
        self.arm_fin_rtx(now + back, n + 1);
    }

    /// Arms [`Timer::FinRtx`] at `at`, the `backoff`-th retransmission.
    pub(super) fn arm_fin_rtx(&mut self, at: Instant, backoff: u32) {
        self.timers.set(Timer::FinRtx, Some(at));
        self.fin_rtx_backoff = backoff;
    }
}

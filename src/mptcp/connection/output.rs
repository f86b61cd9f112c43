//! Output: the scheduler's choice of subflow for each chunk of queued data ([`fill`]), the
//! chunk's DSS mapping (`push_chunk`), and [`poll_transmit`](Connection::poll_transmit).
//!
//! [`fill`]: Connection::fill

use std::time::Duration;

use super::data::SCRATCH;
use super::{Connection, PathId};
use crate::config::Mode;
use crate::mptcp::mapping::{Mapping, dss_checksum};
use crate::mptcp::scheduler::{self, Candidate};
use crate::mptcp::seq::SubflowSeq;
use crate::mptcp::subflow::{Handshake, Segment};
use crate::tcp::Transmit;
use crate::time::Instant;
use crate::wire::tcp::TIMESTAMPS_LEN;

impl Connection {
    /// Hands queued data to the subflows the scheduler picks, a chunk at a time, while one has
    /// room.
    fn fill(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        for _ in 0..4096 {
            if !self.send.has_pending() {
                return;
            }
            let cands: Vec<Candidate> = (0..self.subflows.len())
                .filter(|&i| self.ready(i))
                .map(|i| {
                    let s = &self.subflows[i];
                    let h = s.tcp.health();
                    let mss = usize::from(s.tcp.eff_mss());
                    Candidate {
                        idx: i,
                        backup: s.mp.backup || s.mp.peer_backup,
                        srtt: h.srtt,
                        has_room: s.tcp.send_queued() < h.cwnd as usize + mss && s.tcp.send_capacity() >= mss,
                        failing: h.consecutive_rtos >= self.cfg.stall_rtos,
                        rank: self.pm.rank(s.path),
                    }
                })
                .collect();
            let Some(i) = scheduler::pick(self.cfg.mode, &cands) else {
                return;
            };
            let mapped = self.subflows[i].mp.tx_maps.len();
            if !self.push_chunk(now, i) {
                return;
            }
            if self.subflows[i].mp.tx_maps.len() > mapped
                && let Some(m) = self.subflows[i].mp.tx_maps.back().copied()
                && self.redundant_chunk(i, &m)
            {
                for c in cands.iter().filter(|c| c.idx != i && !c.failing && c.has_room) {
                    self.copy_chunk(c.idx, &m);
                }
            }
        }
    }

    /// Whether the chunk just mapped by `m` on subflow `i` also goes on the other subflows:
    /// every chunk in redundant mode; else, with [`redundant_interactive`], a small write that
    /// waits on a reply (shorter than a segment, nothing else in flight at the data level).
    ///
    /// [`redundant_interactive`]: crate::mptcp::MptcpConfig::redundant_interactive
    fn redundant_chunk(&self, i: usize, m: &Mapping) -> bool {
        let len = usize::from(m.data_len - u16::from(m.data_fin));
        if len == 0 || self.subflows[i].mp.no_options {
            return false;
        }
        self.cfg.mode == Mode::Redundant
            || (self.cfg.redundant_interactive
                && len < self.chunk_limit(i)
                && self.send.in_flight() <= u64::from(m.data_len))
    }

    /// Sends the octets of mapping `m` (sent on another subflow) on subflow `j` too, with the
    /// same data sequence numbers. RFC 8684 §3.3.1: "the same data sequence number can be
    /// mapped to by different subflows ... This would also permit the same data to be sent
    /// simultaneously on multiple subflows for resilience"; the receiver "SHOULD treat the
    /// first data that is received ... as the data that should be delivered to the
    /// application" and ignore the later copy (§3.3.6: "a sender [may] always send the same
    /// data, with the same data sequence number, on multiple subflows, if desired for
    /// reliability reasons"). The data level frees the octets on the DATA_ACK as before;
    /// subflow `j` keeps its own copy until its subflow-level ACK and retransmits it itself
    /// (§3.3.6: "a host MUST still retransmit the original data on the original subflow").
    ///
    /// A DATA_FIN the mapping ends with stays on the first subflow (its retransmission is
    /// armed there): the copy maps the data octets only.
    fn copy_chunk(&mut self, j: usize, m: &Mapping) {
        let len = usize::from(m.data_len - u16::from(m.data_fin));
        if len > self.chunk_limit(j) {
            return;
        }
        let s = &mut self.subflows[j];
        if s.mp.no_options {
            return;
        }
        let checksums = s.mp.checksums;
        let rel = SubflowSeq::from_absolute(s.tcp.send_seq().0, s.mp.iss);
        let send = &self.send;
        let (sent, mj) = SCRATCH.with_borrow_mut(|sc| {
            if sc.len() < len {
                sc.resize(len, 0);
            }
            let n = send.copy_out(m.dsn, &mut sc[..len]);
            // The mapping covers what the subflow took, never more: a mapping past the octets
            // queued would overlap the next chunk's on this subflow.
            let sent = s.tcp.send(&sc[..n]);
            let bytes = &sc[..sent];
            let mut mj = Mapping {
                subflow_seq: rel,
                data_len: sent as u16,
                data_fin: false,
                checksum: None,
                ..*m
            };
            if checksums {
                // RFC 8684 §3.3.1: the checksum covers this subflow's pseudo-header.
                mj.checksum = Some(dss_checksum(mj.dsn, mj.subflow_seq, mj.data_len, bytes));
            }
            (sent, mj)
        });
        if sent == 0 {
            return;
        }
        s.bytes_sent += sent as u64;
        s.mp.tx_maps.push_back(mj);
        self.redundant_copies += 1;
    }

    /// Queues the next chunk of data (or the DATA_FIN) on subflow `i` with its mapping, sized so
    /// that a segment carries it with its options; false if there was nothing to send.
    /// The most data octets one new mapping on subflow `i` covers: what one segment carries
    /// beside the options a data segment has as a rule.
    pub(super) fn chunk_limit(&self, i: usize) -> usize {
        let s = &self.subflows[i];
        let ts_len = if s.tcp.timestamps_enabled() {
            TIMESTAMPS_LEN
        } else {
            0
        };
        let opt_len = ts_len + s.mp.plan(Segment::Chunk).len;
        let one = usize::from(s.tcp.eff_mss()).saturating_sub(opt_len).max(64);
        // A subflow sending super-segments gets one mapping per super-segment: the kernel's GSO
        // (or `wire::gso`) repeats the DSS option, mapping included, on every segment cut from
        // it, as Linux's MPTCP does under TSO. RFC 8684 §3.3.1: the mapping "MUST apply to some
        // or all of the subflow sequence space in the TCP segment that carries the option", which
        // holds for each of those segments since the mapping covers them all; the explicit
        // mapping "was chosen to assist with compatibility with situations where TCP/IP
        // segmentation ... is undertaken separately from the stack" (TSO), and "a single mapping
        // [may] cover many packets". With DSS checksums on, one segment per mapping as before.
        if s.mp.checksums && !s.mp.no_options {
            return one;
        }
        (one * s.tcp.super_segment_count())
            .min(s.tcp.send_capacity().max(one))
            .min(usize::from(u16::MAX))
    }

    fn push_chunk(&mut self, now: Instant, i: usize) -> bool {
        let mut max_len = self.chunk_limit(i);
        let s = &mut self.subflows[i];
        let checksums = s.mp.checksums && !s.mp.no_options;
        let rel0 = SubflowSeq::from_absolute(s.tcp.send_seq().0, s.mp.iss);
        if matches!(s.mp.hs, Handshake::CapableUnconfirmed(_))
            && rel0 == SubflowSeq::FIRST_DATA
            && self.app_closed
        {
            // The MP_CAPABLE carrying the first data has no DATA_FIN flag (§3.1): keep the
            // DATA_FIN out of the first chunk.
            max_len = max_len.min(self.send.buffered().saturating_sub(1)).max(1);
        }
        let Some(chunk) = self.send.next_chunk(s.id, max_len) else {
            return false;
        };
        let rel = SubflowSeq::from_absolute(s.tcp.send_seq().0, s.mp.iss);
        if chunk.len == 0 {
            // A DATA_FIN alone.
            if s.mp.no_options {
                s.tcp.close();
            } else {
                let mut m = chunk.mapping(SubflowSeq(0));
                if checksums {
                    m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, &[]));
                }
                s.mp.bare_fin = Some(m);
                s.tcp.request_ack();
                let at = now + s.tcp.health().rto;
                self.arm_fin_rtx(at, 0);
            }
            return true;
        }
        let send = &self.send;
        let (n, sent, m) = SCRATCH.with_borrow_mut(|sc| {
            if sc.len() < chunk.len {
                sc.resize(chunk.len, 0);
            }
            let n = send.copy_out(chunk.dsn, &mut sc[..chunk.len]);
            let bytes = &sc[..n];
            let mut m = chunk.mapping(rel);
            if checksums {
                // RFC 8684 §3.3.1: the checksum covers the pseudo-header and the mapped payload.
                m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, bytes));
            }
            (n, s.tcp.send(bytes), m)
        });
        debug_assert_eq!(sent, n);
        s.bytes_sent += sent as u64;
        s.mp.tx_maps.push_back(m);
        if chunk.data_fin {
            if s.mp.no_options {
                s.tcp.close();
            } else {
                let at = now + s.tcp.health().rto.max(Duration::from_millis(200)) * 2;
                self.arm_fin_rtx(at, 0);
            }
        }
        true
    }

    /// Writes the next packet due into `buf` (at least MSS + 100 bytes); returns the path to
    /// send it on and what was written.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(PathId, Transmit)> {
        self.fill(now);
        let data_ack = self.recv.as_ref().map(|r| r.data_ack());
        for k in 0..self.subflows.len() {
            let s = &mut self.subflows[k];
            if !s.dead && self.pm.is_down(s.path) {
                continue;
            }
            s.mp.data_ack = data_ack;
            if let Some(t) = s.tcp.poll_transmit_with(now, buf, &mut s.mp) {
                if s.mp.live.busy_since.is_none() && s.tcp.health().bytes_in_flight > 0 {
                    s.mp.live.busy_since = Some(now);
                }
                return Some((s.path, t));
            }
        }
        // Drop subflows that are gone for good.
        self.subflows.retain(|s| !(s.dead && s.tcp.is_closed()));
        None
    }
}

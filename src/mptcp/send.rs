//! The data-level send buffer: the connection's outgoing byte stream keyed by DSN, what was
//! sent on which subflow, DATA_ACK processing, reinjection, and the DATA_FIN (RFC 8684 §3.3.2,
//! §3.3.3, §3.3.6).
//!
//! Call order: the application [`write`](DataSendBuffer::write)s (and eventually
//! [`close`](DataSendBuffer::close)s); the scheduler picks a subflow and asks
//! [`next_chunk`](DataSendBuffer::next_chunk) for what to send there — data to reinject first,
//! then new data — copies the octets with [`copy_out`](DataSendBuffer::copy_out) and sends them
//! with the mapping from [`Chunk::mapping`]; every DATA_ACK received goes to
//! [`on_data_ack`](DataSendBuffer::on_data_ack); when a subflow fails or stalls,
//! [`mark_subflow_failed`](DataSendBuffer::mark_subflow_failed) makes what it carried and the
//! peer has not DATA_ACKed eligible again for another subflow.
//!
//! RFC 8684 §3.3.2: "An MPTCP sender MUST NOT free data from the send buffer until it has been
//! acknowledged by both a Data ACK received on any subflow and at the subflow level by all
//! subflows on which the data was sent." This buffer frees on DATA_ACK; the second half holds
//! because each subflow's TCP engine keeps its own copy of what it sent until its subflow-level
//! ACK (its retransmission queue), so the octets stay available to that subflow.

use std::collections::{BTreeMap, VecDeque};

use super::mapping::Mapping;
use super::seq::{DataSeq, SubflowSeq};

/// Identifies a subflow within its connection (assigned by the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubflowId(pub u32);

/// A piece of the data-level stream to send on one subflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// DSN of the first octet (of the DATA_FIN if `len` is 0).
    pub dsn: DataSeq,
    /// Data octets (not counting the DATA_FIN).
    pub len: usize,
    /// The chunk ends with the DATA_FIN (§3.3.3).
    pub data_fin: bool,
    /// The octets were sent before on a subflow that failed.
    pub reinjection: bool,
}

impl Chunk {
    /// The Data-Level Length to announce: data octets plus one for the DATA_FIN (§3.3.3: "the
    /// DATA_FIN is included in the Data-Level Length").
    pub fn data_level_len(&self) -> usize {
        self.len + usize::from(self.data_fin)
    }

    /// The mapping for this chunk when its first octet goes out at relative subflow sequence
    /// number `subflow_seq`. A DATA_FIN without data gets subflow sequence number 0 (§3.3.3:
    /// "the DSS MUST have a subflow sequence number of 0, a Data-Level Length of 1"). The caller
    /// fills in `checksum` (see [`super::mapping::dss_checksum`]) if checksums are in use.
    /// `len` must be at most 65,535 − 1 (ask [`DataSendBuffer::next_chunk`] for no more).
    pub fn mapping(&self, subflow_seq: SubflowSeq) -> Mapping {
        Mapping {
            dsn: self.dsn,
            subflow_seq: if self.len == 0 { SubflowSeq(0) } else { subflow_seq },
            data_len: u16::try_from(self.data_level_len()).unwrap_or(u16::MAX),
            data_fin: self.data_fin,
            checksum: None,
        }
    }
}

/// Why [`DataSendBuffer::write`] refused data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The stream was closed (DATA_FIN queued); nothing may follow.
    #[error("data-level stream already closed")]
    Closed,
}

/// A DATA_ACK that cannot be right; the peer misbehaved (or the segment is forged): ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataAckError {
    /// It acknowledges DSNs never sent.
    #[error("DATA_ACK {ack:?} beyond data sent (up to {snd_nxt:?})")]
    BeyondSent {
        /// The DATA_ACK.
        ack: DataSeq,
        /// Next DSN not yet sent.
        snd_nxt: DataSeq,
    },
}

/// What a DATA_ACK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Octets freed (DATA_FIN not counted).
    pub freed: usize,
    /// This DATA_ACK acknowledged our DATA_FIN.
    pub fin_acked: bool,
}

#[derive(Debug, Clone, Copy)]
struct SentRange {
    start: u64,
    end: u64,
    subflow: SubflowId,
}

/// The data-level send buffer of one MPTCP connection.
#[derive(Debug)]
pub struct DataSendBuffer {
    /// DSN of offset 0 (our IDSN + 1).
    base: DataSeq,
    /// Offset up to which the peer DATA_ACKed (can be `written + 1` once the DATA_FIN is acked).
    una: u64,
    /// Octets `[min(una, written), written)`.
    buf: VecDeque<u8>,
    capacity: usize,
    /// Octets written by the application (offset of the end of the data).
    written: u64,
    closed: bool,
    /// Offset of the first octet never sent (`written + 1` once the DATA_FIN went out).
    next_new: u64,
    /// Sent and not yet DATA_ACKed, in send order.
    sent: VecDeque<SentRange>,
    /// Ranges to send again, disjoint, start → end.
    reinject: BTreeMap<u64, u64>,
    /// Right edge of the peer's data-level window (offset), once a DATA_ACK told it.
    peer_window_end: Option<u64>,
}

impl DataSendBuffer {
    /// An empty buffer whose first octet will be `first_dsn` (our IDSN + 1, RFC 8684 §3.1),
    /// holding at most `capacity` unacknowledged octets.
    pub fn new(first_dsn: DataSeq, capacity: usize) -> DataSendBuffer {
        DataSendBuffer {
            base: first_dsn,
            una: 0,
            buf: VecDeque::new(),
            capacity,
            written: 0,
            closed: false,
            next_new: 0,
            sent: VecDeque::new(),
            reinject: BTreeMap::new(),
            peer_window_end: None,
        }
    }

    fn data_una(&self) -> u64 {
        self.una.min(self.written)
    }

    /// Appends application data; returns how much fit.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if self.closed {
            return Err(WriteError::Closed);
        }
        let n = data.len().min(self.free_space());
        self.buf.extend(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    /// The first `n` octets written were delivered outside the data sequence space (TCP Fast
    /// Open data, RFC 8684 Appendix B.2): they are dropped and the next octet takes the first
    /// DSN. Only before anything was sent.
    pub fn forget_front(&mut self, n: usize) {
        if self.next_new != 0 || self.una != 0 {
            return;
        }
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.written -= n as u64;
    }

    /// The next `len` new octets are already queued on `subflow` (SYN data it must send again,
    /// RFC 8684 Appendix B.3): they count as sent there, whatever the peer's window (they are in
    /// flight at the subflow level already), never with the DATA_FIN.
    pub fn take_queued(&mut self, subflow: SubflowId, len: usize) -> Option<Chunk> {
        let s = self.next_new;
        let len = (len as u64)
            .min(self.written.saturating_sub(s))
            .min(u64::from(u16::MAX) - 1);
        if len == 0 {
            return None;
        }
        self.next_new = s + len;
        self.sent.push_back(SentRange {
            start: s,
            end: s + len,
            subflow,
        });
        Some(Chunk {
            dsn: self.base.wrapping_add(s),
            len: len as usize,
            data_fin: false,
            reinjection: false,
        })
    }

    /// The application closed its side: queue the DATA_FIN (§3.3.3), which takes the DSN after
    /// the last octet.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Room for [`write`](Self::write).
    pub fn free_space(&self) -> usize {
        self.capacity.saturating_sub(self.buf.len())
    }

    /// Oldest DSN not DATA_ACKed: the reference for expanding a 32-bit DATA_ACK
    /// ([`DataSeq::from_low32`]).
    pub fn snd_una(&self) -> DataSeq {
        self.base.wrapping_add(self.una)
    }

    /// Next DSN never sent.
    pub fn snd_nxt(&self) -> DataSeq {
        self.base.wrapping_add(self.next_new)
    }

    /// Octets (and DATA_FIN) sent and not DATA_ACKed.
    pub fn in_flight(&self) -> u64 {
        self.next_new - self.una
    }

    /// Octets written and not DATA_ACKed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Octets waiting to be reinjected.
    pub fn reinject_pending(&self) -> u64 {
        self.reinject.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether there is anything for [`next_chunk`](Self::next_chunk) (ignoring `max_len`).
    pub fn has_pending(&self) -> bool {
        !self.reinject.is_empty()
            || self.next_new < self.sendable_end()
            || (self.closed && self.next_new == self.written)
    }

    /// Whether the peer DATA_ACKed our DATA_FIN: our direction is closed (§3.3.3).
    pub fn fin_acked(&self) -> bool {
        self.closed && self.una == self.written + 1
    }

    fn sendable_end(&self) -> u64 {
        match self.peer_window_end {
            Some(w) => self.written.min(w),
            None => self.written,
        }
    }

    /// The next chunk to send on `subflow`, at most `max_len` data octets (capped at 65,534 so
    /// the Data-Level Length fits 16 bits with a DATA_FIN): octets to reinject first, then new
    /// octets within the peer's data-level window, then a bare DATA_FIN. `None` when there is
    /// nothing to send.
    pub fn next_chunk(&mut self, subflow: SubflowId, max_len: usize) -> Option<Chunk> {
        let max_len = max_len.min(usize::from(u16::MAX) - 1) as u64;
        if let Some((&s, &e)) = self.reinject.first_key_value() {
            self.reinject.remove(&s);
            // RFC 8684 §3.3.5: "a sender is allowed to send data segments with data-level
            // sequence numbers between (DATA_ACK, DATA_ACK + receive_window)", for a reinjection as
            // for new data (the receiver would drop what lies beyond, and the range go round
            // again).
            let data_end = e.min(self.sendable_end());
            let len = data_end.saturating_sub(s).min(max_len);
            let fin = s + len == self.written && e > self.written;
            if len == 0 && !fin {
                self.reinject.insert(s, e);
                return None;
            }
            let end = s + len + u64::from(fin);
            if end < e {
                self.reinject.insert(end, e);
            }
            self.sent.push_back(SentRange {
                start: s,
                end,
                subflow,
            });
            return Some(Chunk {
                dsn: self.base.wrapping_add(s),
                len: len as usize,
                data_fin: fin,
                reinjection: true,
            });
        }
        let limit = self.sendable_end();
        if self.next_new < limit {
            let s = self.next_new;
            let len = (limit - s).min(max_len);
            if len == 0 {
                return None;
            }
            let fin = self.closed && s + len == self.written;
            let end = s + len + u64::from(fin);
            self.next_new = end;
            self.sent.push_back(SentRange {
                start: s,
                end,
                subflow,
            });
            return Some(Chunk {
                dsn: self.base.wrapping_add(s),
                len: len as usize,
                data_fin: fin,
                reinjection: false,
            });
        }
        if self.closed && self.next_new == self.written {
            let s = self.written;
            self.next_new = s + 1;
            self.sent.push_back(SentRange {
                start: s,
                end: s + 1,
                subflow,
            });
            return Some(Chunk {
                dsn: self.base.wrapping_add(s),
                len: 0,
                data_fin: true,
                reinjection: false,
            });
        }
        None
    }

    /// Copies the octets at `dsn..dsn + out.len()` (from a [`Chunk`]) into `out`; returns how
    /// many were available (fewer only if some were already DATA_ACKed and freed, or were never
    /// written).
    pub fn copy_out(&self, dsn: DataSeq, out: &mut [u8]) -> usize {
        let first = self.data_una();
        let off = dsn.diff(self.base.wrapping_add(first));
        if off < 0 {
            return 0;
        }
        let start = off as u64;
        if start >= self.written - first {
            return 0;
        }
        let start = start as usize;
        let n = out.len().min(self.buf.len() - start);
        let (a, b) = self.buf.as_slices();
        let mut copied = 0;
        if start < a.len() {
            let k = n.min(a.len() - start);
            out[..k].copy_from_slice(&a[start..start + k]);
            copied = k;
        }
        if copied < n {
            let from = start + copied - a.len();
            out[copied..n].copy_from_slice(&b[from..from + (n - copied)]);
        }
        n
    }

    /// Processes a DATA_ACK (already expanded to 64 bits against [`snd_una`](Self::snd_una))
    /// and the window that came with it (§3.3.4: the receive window "is relative to the Data
    /// ACK"; §3.3.2: the caller MUST NOT use RCV.WND of a segment without a DATA_ACK at the
    /// connection level, so only pass windows that came with one).
    pub fn on_data_ack(&mut self, ack: DataSeq, window: u32) -> Result<AckOutcome, DataAckError> {
        let rel = ack.diff(self.snd_una());
        if rel < 0 {
            return Ok(AckOutcome::default()); // old, reordered
        }
        let off = self.una + rel as u64;
        if off > self.next_new {
            return Err(DataAckError::BeyondSent {
                ack,
                snd_nxt: self.snd_nxt(),
            });
        }
        // RFC 8684 §3.3.5: the sender "should only update its local receive window values when
        // the largest sequence number allowed (i.e., DATA_ACK + receive window) increases".
        let end = off + u64::from(window);
        self.peer_window_end = Some(self.peer_window_end.map_or(end, |w| w.max(end)));
        let was_fin_acked = self.fin_acked();
        let freed = (off.min(self.written) - self.data_una()) as usize;
        self.buf.drain(..freed);
        self.una = off;
        self.sent.retain(|r| r.end > off);
        for r in &mut self.sent {
            r.start = r.start.max(off);
        }
        while let Some((&s, &e)) = self.reinject.first_key_value() {
            if s >= off {
                break;
            }
            self.reinject.remove(&s);
            if e > off {
                self.reinject.insert(off, e);
                break;
            }
        }
        Ok(AckOutcome {
            freed,
            fin_acked: !was_fin_acked && self.fin_acked(),
        })
    }

    /// `subflow` failed (RST, timeout, interface gone) or stalls: every range sent on it that
    /// the peer has not DATA_ACKed becomes eligible for [`next_chunk`](Self::next_chunk) on
    /// another subflow (§3.3.6: data "may be retransmitted on another subflow"; §3.7: data whose
    /// subflow failed "will be retransmitted on other subflows"). Ranges also sent on a subflow
    /// still alive are reinjected as well (cheap insurance; the receiver drops duplicates).
    /// Returns the octets queued for reinjection.
    pub fn mark_subflow_failed(&mut self, subflow: SubflowId) -> u64 {
        let mut queued = 0;
        let una = self.una;
        let mut keep = VecDeque::with_capacity(self.sent.len());
        for r in std::mem::take(&mut self.sent) {
            if r.subflow == subflow {
                let s = r.start.max(una);
                if r.end > s {
                    queued += self.add_reinject(s, r.end);
                }
            } else {
                keep.push_back(r);
            }
        }
        self.sent = keep;
        queued
    }

    /// The data-level retransmission timeout fired (§3.3.6): every data octet sent and not
    /// DATA_ACKed is queued to be sent again, on whichever subflow takes it (the DATA_FIN has its
    /// own timer). Returns the octets queued.
    pub fn retransmit_unacked(&mut self) -> u64 {
        let (s, e) = (self.data_una(), self.next_new.min(self.written));
        if e <= s {
            return 0;
        }
        self.sent.retain(|r| r.end > e);
        self.add_reinject(s, e)
    }

    /// Adds `[s, e)` to the reinjection set; returns octets newly added.
    fn add_reinject(&mut self, mut s: u64, mut e: u64) -> u64 {
        let before = self.reinject_pending();
        // Merge with any range overlapping or touching [s, e).
        if let Some((&ps, &pe)) = self.reinject.range(..=s).next_back()
            && pe >= s
        {
            self.reinject.remove(&ps);
            s = ps;
            e = e.max(pe);
        }
        while let Some((&ns, &ne)) = self.reinject.range(s..).next() {
            if ns > e {
                break;
            }
            self.reinject.remove(&ns);
            e = e.max(ne);
        }
        self.reinject.insert(s, e);
        self.reinject_pending() - before
    }
}

//! The data-level receive buffer: reassembly of the connection's byte stream from DSN ranges
//! that arrive from any subflow, in any order, with overlaps and duplicates (RFC 8684 §3.3.1,
//! §3.3.2, §3.3.4).
//!
//! Call order: for every DSN range that a subflow's mapping yields
//! ([`super::mapping::SubflowReceiver`] does that), [`DataRecvBuffer::insert`]; for a DATA_FIN,
//! [`DataRecvBuffer::insert_data_fin`]; the application drains with [`DataRecvBuffer::read`];
//! every outgoing segment carries [`DataRecvBuffer::data_ack`] and [`DataRecvBuffer::window`].
//!
//! Positions are kept as offsets from the first data DSN (IDSN + 1), so the 64-bit wrap of the
//! DSN space (the IDSN can sit just below 2^64) never reaches the comparisons.

use std::collections::{BTreeMap, VecDeque};

use super::seq::DataSeq;

/// A DATA_FIN that contradicts what was already received: the peer misbehaved (RFC 8684 §3.3.3:
/// the DATA_FIN occupies the final octet of the data sequence space, so it cannot move and
/// nothing may follow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataFinError {
    /// A second DATA_FIN at another DSN.
    #[error("DATA_FIN at {second:?} conflicts with DATA_FIN at {first:?}")]
    Conflict {
        /// The DATA_FIN's DSN as first received.
        first: DataSeq,
        /// The contradicting DSN.
        second: DataSeq,
    },
    /// A DATA_FIN below data already received in order.
    #[error("DATA_FIN at {fin:?} but data received up to {received:?}")]
    BeforeReceivedData {
        /// The DATA_FIN's DSN.
        fin: DataSeq,
        /// DSN up to which data was received in order.
        received: DataSeq,
    },
}

/// What [`DataRecvBuffer::insert`] did with a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertOutcome {
    /// Bytes not seen before, now stored.
    pub new_bytes: usize,
    /// Bytes already received (retransmissions, reinjections, duplicates on another subflow).
    /// RFC 8684 §3.3.1: the first data received for a DSN is the one delivered, later copies
    /// "SHOULD be ignored".
    pub duplicate_bytes: usize,
    /// Bytes past the right edge of the data-level receive window, or after the DATA_FIN;
    /// dropped (the sender retransmits them once the window opens).
    pub dropped_bytes: usize,
}

/// The data-level receive buffer of one MPTCP connection.
#[derive(Debug)]
pub struct DataRecvBuffer {
    /// DSN of offset 0 (the peer's IDSN + 1).
    base: DataSeq,
    /// Offset of the first byte in `ready` (everything before was read by the application).
    read_off: u64,
    /// In-order bytes not yet read.
    ready: VecDeque<u8>,
    /// Out-of-order ranges past `rcv_nxt`, by start offset; never overlapping or adjacent to
    /// `rcv_nxt`.
    ooo: BTreeMap<u64, Vec<u8>>,
    ooo_bytes: usize,
    capacity: usize,
    /// Offset of the DATA_FIN, once known.
    fin: Option<u64>,
}

impl DataRecvBuffer {
    /// An empty buffer expecting `first_dsn` (the peer's IDSN + 1, RFC 8684 §3.1: "The SYN with
    /// MP_CAPABLE occupies the first octet of data sequence space") holding at most `capacity`
    /// bytes (in-order unread plus out-of-order).
    pub fn new(first_dsn: DataSeq, capacity: usize) -> DataRecvBuffer {
        DataRecvBuffer {
            base: first_dsn,
            read_off: 0,
            ready: VecDeque::new(),
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            capacity,
            fin: None,
        }
    }

    fn rcv_nxt_off(&self) -> u64 {
        self.read_off + self.ready.len() as u64
    }

    /// Right edge (exclusive offset) of what may be stored: the advertised window.
    fn window_end_off(&self) -> u64 {
        let end = self.rcv_nxt_off() + self.window() as u64;
        match self.fin {
            Some(fin) => end.min(fin),
            None => end,
        }
    }

    /// The DSN of the next byte expected in order.
    pub fn rcv_nxt(&self) -> DataSeq {
        self.base.wrapping_add(self.rcv_nxt_off())
    }

    /// The DATA_ACK to send: the next DSN expected, counting the DATA_FIN's octet once every
    /// byte before it arrived (RFC 8684 §3.3.2: "The Data ACK specifies the next data sequence
    /// number it expects to receive"; §3.3.3: the DATA_FIN "is only DATA_ACKed once all data has
    /// been successfully received at the connection level").
    pub fn data_ack(&self) -> DataSeq {
        let nxt = self.rcv_nxt_off();
        if self.fin == Some(nxt) {
            self.base.wrapping_add(nxt + 1)
        } else {
            self.base.wrapping_add(nxt)
        }
    }

    /// The data-level receive window to advertise, relative to [`data_ack`](Self::data_ack)
    /// (§3.3.4: the window "is shared by all subflows and is relative to the Data ACK"):
    /// capacity minus in-order bytes the application has not read yet.
    pub fn window(&self) -> u32 {
        u32::try_from(self.capacity.saturating_sub(self.ready.len())).unwrap_or(u32::MAX)
    }

    /// Bytes ready for [`read`](Self::read).
    pub fn readable(&self) -> usize {
        self.ready.len()
    }

    /// Bytes held out of order.
    pub fn out_of_order_bytes(&self) -> usize {
        self.ooo_bytes
    }

    /// Whether the DATA_FIN arrived and every byte before it is in order (the application reads
    /// EOF after draining [`readable`](Self::readable)).
    pub fn fin_received(&self) -> bool {
        self.fin == Some(self.rcv_nxt_off())
    }

    /// Whether the application read everything up to the DATA_FIN.
    pub fn is_finished(&self) -> bool {
        self.fin_received() && self.ready.is_empty()
    }

    /// Stores `data`, which the peer mapped to DSNs `[dsn, dsn + len)`.
    pub fn insert(&mut self, dsn: DataSeq, data: &[u8]) -> InsertOutcome {
        let mut out = InsertOutcome::default();
        let nxt = self.rcv_nxt_off();
        // Signed position relative to rcv_nxt: negative = already received (old or duplicate).
        let rel = dsn.diff(self.base.wrapping_add(nxt));
        let mut data = data;
        let mut start = nxt;
        if rel < 0 {
            let old = usize::try_from(rel.unsigned_abs())
                .unwrap_or(usize::MAX)
                .min(data.len());
            out.duplicate_bytes += old;
            data = &data[old..];
        } else {
            start = nxt + rel as u64;
        }
        let end_limit = self.window_end_off();
        let room = end_limit.saturating_sub(start);
        if (data.len() as u64) > room {
            let keep = usize::try_from(room).unwrap_or(usize::MAX);
            out.dropped_bytes += data.len() - keep;
            data = &data[..keep];
        }
        if data.is_empty() {
            return out;
        }
        let end = start + data.len() as u64;
        let touches_ooo = self.ooo.first_key_value().is_some_and(|(&s, _)| s <= end);
        if start == nxt && !touches_ooo {
            // Fast path: in order, and nothing held out of order overlaps or follows directly.
            out.new_bytes += data.len();
            self.ready.extend(data);
        } else {
            self.store_ooo(start, data, &mut out);
            self.pull_ooo();
        }
        out
    }

    /// Moves out-of-order ranges that became contiguous into `ready`.
    fn pull_ooo(&mut self) {
        while let Some((&start, _)) = self.ooo.first_key_value() {
            let nxt = self.rcv_nxt_off();
            if start > nxt {
                break;
            }
            let Some((_, bytes)) = self.ooo.pop_first() else {
                break;
            };
            self.ooo_bytes -= bytes.len();
            let skip = usize::try_from(nxt - start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.ready.extend(&bytes[skip..]);
        }
    }

    /// Stores `[start, start + data.len())` (entirely past `rcv_nxt`), only the parts not yet
    /// held.
    fn store_ooo(&mut self, start: u64, data: &[u8], out: &mut InsertOutcome) {
        let end = start + data.len() as u64;
        // Existing ranges that may overlap: the last one starting before `start`, and all
        // starting in [start, end).
        let mut covered: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, v)) = self.ooo.range(..start).next_back() {
            let e = s + v.len() as u64;
            if e > start {
                covered.push((s, e));
            }
        }
        for (&s, v) in self.ooo.range(start..end) {
            covered.push((s, s + v.len() as u64));
        }
        let mut pos = start;
        for (s, e) in covered {
            if s > pos {
                self.put(pos, &data[(pos - start) as usize..(s - start) as usize], out);
            }
            let overlap_end = e.min(end);
            if overlap_end > pos {
                out.duplicate_bytes += (overlap_end - pos.max(s)) as usize;
                pos = overlap_end;
            }
        }
        if pos < end {
            self.put(pos, &data[(pos - start) as usize..], out);
        }
    }

    fn put(&mut self, at: u64, bytes: &[u8], out: &mut InsertOutcome) {
        if bytes.is_empty() {
            return;
        }
        out.new_bytes += bytes.len();
        self.ooo_bytes += bytes.len();
        self.ooo.insert(at, bytes.to_vec());
    }

    /// Records the peer's DATA_FIN at `dsn` (RFC 8684 §3.3.3: it "occupies 1 octet (the final
    /// octet) of the connection-level sequence space"). Idempotent for the same DSN.
    pub fn insert_data_fin(&mut self, dsn: DataSeq) -> Result<(), DataFinError> {
        let nxt = self.rcv_nxt_off();
        let rel = dsn.diff(self.base.wrapping_add(nxt));
        if rel < 0 {
            // A retransmitted DATA_FIN that was already consumed is fine; anything else before
            // rcv_nxt contradicts data received after it.
            if self.fin.is_some_and(|f| self.base.wrapping_add(f) == dsn) {
                return Ok(());
            }
            return Err(DataFinError::BeforeReceivedData {
                fin: dsn,
                received: self.base.wrapping_add(nxt),
            });
        }
        let off = nxt + rel as u64;
        match self.fin {
            Some(f) if f != off => Err(DataFinError::Conflict {
                first: self.base.wrapping_add(f),
                second: dsn,
            }),
            Some(_) => Ok(()),
            None => {
                // Out-of-order data stored past the FIN cannot be part of the stream.
                if let Some((&s, v)) = self.ooo.iter().next_back()
                    && s + v.len() as u64 > off
                {
                    return Err(DataFinError::Conflict {
                        first: self.base.wrapping_add(s + v.len() as u64),
                        second: dsn,
                    });
                }
                self.fin = Some(off);
                Ok(())
            }
        }
    }

    /// Copies in-order bytes into `buf`; returns how many (0 when nothing is ready).
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        self.read_into(buf.len(), crate::tcp::slice_sink(buf))
    }

    /// Hands up to `max` in-order bytes to `sink` in one or two slices (the ring's two halves,
    /// not a byte at a time: a byte loop was the engine's hottest function on downloads);
    /// returns the count.
    pub fn read_into(&mut self, max: usize, mut sink: impl FnMut(&[u8])) -> usize {
        let n = max.min(self.ready.len());
        let (a, b) = self.ready.as_slices();
        let na = n.min(a.len());
        if na > 0 {
            sink(&a[..na]);
        }
        if n > na {
            sink(&b[..n - na]);
        }
        self.ready.drain(..n);
        self.read_off += n as u64;
        n
    }
}

//! Data Sequence Mappings (RFC 8684 §3.3.1): the 64-bit [`Mapping`], the DSS checksum
//! (Figure 10), and the per-subflow receive side [`SubflowReceiver`] that turns a subflow's
//! in-order bytes into DSN ranges for the [`DataRecvBuffer`].
//!
//! Call order on the receive side, per subflow: for every segment that passed the TCP validity
//! checks (§3: "standard TCP validity checks ... MUST be undertaken before processing any MPTCP
//! signals"), first [`SubflowReceiver::on_mapping`] for its DSS mapping (if any), then, when the
//! TCP engine releases bytes in subflow order, [`SubflowReceiver::on_data`] with them. Any
//! error: see [`MappingError::fault`] for what to do with the subflow.

use std::collections::VecDeque;

use super::recv::{DataFinError, DataRecvBuffer};
use super::seq::{DataSeq, SubflowSeq};
use crate::wire::mptcp::{DsnField, Dss, DssMapping, MptcpOption};

/// One Data Sequence Mapping with the DSN expanded to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// DSN of the first mapped octet.
    pub dsn: DataSeq,
    /// Relative subflow sequence number of the first mapped octet.
    pub subflow_seq: SubflowSeq,
    /// Data-Level Length as on the wire: data octets plus one if `data_fin`; 0 = infinite.
    pub data_len: u16,
    /// The mapping ends with the DATA_FIN (§3.3.3).
    pub data_fin: bool,
    /// DSS checksum, when checksums are in use.
    pub checksum: Option<u16>,
}

impl Mapping {
    /// The mapping of a DSS option; a 4-byte DSN is expanded relative to `reference` (the
    /// receiver's data-level `rcv_nxt`, RFC 8684 §3.3.1).
    pub fn from_dss(m: &DssMapping, data_fin: bool, reference: DataSeq) -> Mapping {
        Mapping {
            dsn: DataSeq::from_field(m.dsn, reference),
            subflow_seq: SubflowSeq(m.subflow_seq),
            data_len: m.data_len,
            data_fin,
            checksum: m.checksum,
        }
    }

    /// The implicit mapping of an MP_CAPABLE with data (length 22/24): RFC 8684 §3.1 "the data
    /// parameters in an MP_CAPABLE are semantically equivalent to those in a DSS option"; the
    /// first data octet is IDSN + 1 and the first subflow octet after the SYN (relative 1).
    pub fn from_capable_data(peer_idsn: DataSeq, data_len: u16, checksum: Option<u16>) -> Mapping {
        Mapping {
            dsn: peer_idsn.wrapping_add(1),
            subflow_seq: SubflowSeq::FIRST_DATA,
            data_len,
            data_fin: false,
            checksum,
        }
    }

    /// The DSS mapping field for sending; `long` selects the 8-byte DSN (RFC 8684 §3.3.1: a
    /// sender "MUST send the full 64-bit data sequence number if it is transmitting at a
    /// sufficiently high rate that the 32-bit value could wrap within the MSL").
    pub fn to_dss(&self, long: bool) -> DssMapping {
        DssMapping {
            dsn: if long {
                DsnField::Long(self.dsn.0)
            } else {
                DsnField::Short(self.dsn.low32())
            },
            subflow_seq: self.subflow_seq.0,
            data_len: self.data_len,
            checksum: self.checksum,
        }
    }

    /// An infinite mapping (Data-Level Length 0, §3.3.1, §3.7): fallback to regular TCP.
    pub fn is_infinite(&self) -> bool {
        self.data_len == 0
    }

    /// A DATA_FIN not attached to data (§3.3.3: "the DSS MUST have a subflow sequence number of
    /// 0, a Data-Level Length of 1"): it covers no subflow octets.
    pub fn is_bare_data_fin(&self) -> bool {
        self.data_fin && self.data_len == 1
    }

    /// Octets this mapping covers on the subflow: the Data-Level Length without the DATA_FIN
    /// (§3.3.3: "the DATA_FIN is included in the Data-Level Length but not at the subflow level").
    pub fn subflow_len(&self) -> u32 {
        u32::from(self.data_len) - u32::from(self.data_fin && self.data_len > 0)
    }

    /// DSN of the DATA_FIN if this mapping carries one.
    pub fn data_fin_dsn(&self) -> Option<DataSeq> {
        (self.data_fin && !self.is_infinite()).then(|| self.dsn.wrapping_add(u64::from(self.subflow_len())))
    }

    /// Maps exactly the same subflow octets to the same DSNs as `other`; the two may differ in
    /// the DATA_FIN (and so in Data-Level Length and checksum).
    fn same_octets(&self, other: &Mapping) -> bool {
        !self.is_infinite()
            && !other.is_infinite()
            && self.dsn == other.dsn
            && self.subflow_seq == other.subflow_seq
            && self.subflow_len() == other.subflow_len()
    }

    /// Same DSN − subflow-seq offset as `other`: overlapping parts map identically.
    fn same_offset(&self, other: &Mapping) -> bool {
        // Distances, so that both wraps (2^64 and 2^32) are harmless.
        self.dsn.diff(other.dsn) == i64::from(self.subflow_seq.diff(other.subflow_seq))
    }
}

/// The DSS option for an outgoing segment, always with 8-octet DATA_ACK and DSN (as Linux
/// sends them). This meets both width rules at once: RFC 8684 §3.3.1, a sender "MUST send the
/// full 64-bit data sequence number if it is transmitting at a sufficiently high rate that the
/// 32-bit value could wrap within the Maximum Segment Lifetime", and §3.3.2, "If data is
/// received with a 64-bit DSN, it MUST be acknowledged with a 64-bit Data ACK". Length: 4 + 8 +
/// 14 (+ 2 with checksum) = 26/28 octets.
pub fn dss_option(data_ack: Option<DataSeq>, mapping: Option<&Mapping>) -> MptcpOption {
    MptcpOption::Dss(Dss {
        data_ack: data_ack.map(|a| DsnField::Long(a.0)),
        mapping: mapping.map(|m| m.to_dss(true)),
        data_fin: mapping.is_some_and(|m| m.data_fin),
    })
}

/// A received DSS with its sequence numbers expanded to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedDss {
    /// The DATA_ACK, expanded against our `snd_una`.
    pub data_ack: Option<DataSeq>,
    /// The mapping, its DSN expanded against our data-level `rcv_nxt`.
    pub mapping: Option<Mapping>,
}

impl ReceivedDss {
    /// Expands `dss` (RFC 8684 §3.3.1: "MUST be able to receive and process both 64-bit and
    /// 32-bit sequence number values"). Flag F without a mapping carries no DSN and is dropped:
    /// the DATA_FIN's position is given by a mapping (§3.3.3).
    pub fn expand(dss: &Dss, snd_una: DataSeq, rcv_nxt: DataSeq) -> ReceivedDss {
        ReceivedDss {
            data_ack: dss.data_ack.map(|f| DataSeq::from_field(f, snd_una)),
            mapping: dss.mapping.map(|m| Mapping::from_dss(&m, dss.data_fin, rcv_nxt)),
        }
    }
}

/// Ones'-complement sum (RFC 1071) that can be fed in pieces of any length.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnesComplementSum {
    sum: u64,
    odd: bool,
}

impl OnesComplementSum {
    /// Adds `bytes` as if they followed everything added before.
    pub fn add(&mut self, mut bytes: &[u8]) {
        if self.odd
            && let Some((&first, rest)) = bytes.split_first()
        {
            self.sum += u64::from(first);
            self.odd = false;
            bytes = rest;
        }
        let mut pairs = bytes.chunks_exact(2);
        for p in &mut pairs {
            self.sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            self.sum += u64::from(*last) << 8;
            self.odd = true;
        }
    }

    /// The folded 16-bit sum (not complemented).
    pub fn fold(&self) -> u16 {
        let mut s = self.sum;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }
}

fn pseudo_header(dsn: DataSeq, subflow_seq: SubflowSeq, data_len: u16, csum_field: u16) -> [u8; 16] {
    // RFC 8684 §3.3.1, Figure 10: DSN (8 octets, "always the 64-bit value"), subflow sequence
    // number (4), Data-Level Length (2), zeros (2).
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&dsn.0.to_be_bytes());
    h[8..12].copy_from_slice(&subflow_seq.0.to_be_bytes());
    h[12..14].copy_from_slice(&data_len.to_be_bytes());
    h[14..16].copy_from_slice(&csum_field.to_be_bytes());
    h
}

/// The DSS checksum to send for a mapping (RFC 8684 §3.3.1: "the standard TCP checksum ...
/// operating over the data covered by this mapping, along with a pseudo-header as shown in
/// Figure 10"). `payload` is the mapping's subflow octets (empty for a bare DATA_FIN, whose
/// checksum "will only cover the pseudo-header", §3.3.3).
pub fn dss_checksum(dsn: DataSeq, subflow_seq: SubflowSeq, data_len: u16, payload: &[u8]) -> u16 {
    let mut s = OnesComplementSum::default();
    s.add(&pseudo_header(dsn, subflow_seq, data_len, 0));
    s.add(payload);
    !s.fold()
}

/// Whether a received DSS checksum is right: the sum over the pseudo-header carrying the received
/// checksum in place of the zeros, plus the payload, must be all ones (so either ones'-complement
/// zero is accepted, as in TCP).
pub fn verify_dss_checksum(mapping: &Mapping, payload: &[u8]) -> bool {
    let Some(received) = mapping.checksum else {
        return false;
    };
    let mut s = OnesComplementSum::default();
    s.add(&pseudo_header(
        mapping.dsn,
        mapping.subflow_seq,
        mapping.data_len,
        received,
    ));
    s.add(payload);
    s.fold() == 0xffff
}

/// What to do with a subflow after a [`MappingError`] (STYLE.md point 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The peer broke the protocol: reset the subflow with MP_TCPRST "MPTCP-specific error"
    /// (0x01).
    PeerMisbehaved,
    /// Something on the path interferes with MPTCP (peer incompatible with this path): send
    /// MP_FAIL / fall back (§3.7), or reset with "Middlebox interference" (0x06) when fallback
    /// is impossible.
    PathIncompatible,
    /// The caller broke this API's contract (a local bug); nothing to tell the peer.
    Local,
}

/// Why a mapping or the data it maps was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// RFC 8684 §3.3.1: "A sender MUST NOT change this mapping after it has been declared".
    /// A mapping overlapping a known one maps the same subflow octets elsewhere.
    #[error("DSS mapping {new:?} changes the declared mapping {old:?}")]
    Changed {
        /// The mapping declared first.
        old: Mapping,
        /// The contradicting one.
        new: Mapping,
    },
    /// With checksums on, a mapping that starts before the octets already verified and handed on
    /// but extends past them: it cannot be the mapping declared there (§3.3.1 MUST NOT change).
    #[error("DSS mapping {new:?} straddles already-consumed subflow data")]
    OverlapsConsumed {
        /// The mapping.
        new: Mapping,
    },
    /// RFC 8684 §3.3: "If a checksum is present but its use had not been negotiated ... the
    /// receiver MUST close the subflow with a RST".
    #[error("DSS checksum present but not negotiated")]
    UnexpectedChecksum,
    /// RFC 8684 §3.3: "If a checksum is not present when its use has been negotiated, the
    /// receiver MUST close the subflow with a RST".
    #[error("DSS checksum negotiated but missing")]
    MissingChecksum,
    /// The DSS checksum did not verify: the payload or its length was altered on the path
    /// (§3.7). Send MP_FAIL carrying `dsn` (the start of the failed mapping). Nothing from it
    /// onward was handed to the data level; the octets stay here, so that on a single subflow an
    /// infinite mapping can still place them (§3.7: the infinite mapping "acts retroactively",
    /// from the last octet known intact). With other subflows, drop this receiver with its
    /// subflow.
    #[error("DSS checksum failed for mapping at {dsn:?}")]
    ChecksumFailed {
        /// DSN to put in MP_FAIL.
        dsn: DataSeq,
    },
    /// More subflow data without a mapping than the limit (§3.3.1: "If a mapping for that
    /// subflow-level sequence space does not arrive within a receive window of data, that
    /// subflow SHOULD be treated as broken"; §3.7: RST with "Middlebox interference").
    #[error("{bytes} bytes of subflow data without a DSS mapping")]
    Unmapped {
        /// Unmapped bytes held.
        bytes: usize,
    },
    /// More pending mappings than a receive window of segments can carry (at least
    /// [`SubflowReceiver::MAX_MAPPINGS`]): a state exhaustion attempt.
    #[error("too many pending DSS mappings")]
    TooManyMappings,
    /// DATA_FIN inconsistent with the data-level stream.
    #[error(transparent)]
    DataFin(#[from] DataFinError),
    /// [`SubflowReceiver::on_data`] was given bytes past a gap (the TCP engine must release
    /// subflow bytes in order).
    #[error("subflow data at {got:?} but {expected:?} expected")]
    NotInOrder {
        /// Next relative subflow sequence number expected.
        expected: SubflowSeq,
        /// What was passed.
        got: SubflowSeq,
    },
}

impl MappingError {
    /// How to react.
    pub fn fault(&self) -> Fault {
        match self {
            MappingError::Changed { .. }
            | MappingError::OverlapsConsumed { .. }
            | MappingError::UnexpectedChecksum
            | MappingError::MissingChecksum
            | MappingError::TooManyMappings
            | MappingError::DataFin(_) => Fault::PeerMisbehaved,
            MappingError::ChecksumFailed { .. } | MappingError::Unmapped { .. } => Fault::PathIncompatible,
            MappingError::NotInOrder { .. } => Fault::Local,
        }
    }
}

/// What [`SubflowReceiver::on_mapping`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingOutcome {
    /// A new mapping was recorded.
    Added,
    /// The same mapping was already known (retransmission, TSO copy, §3.1).
    Duplicate,
    /// The mapping covers only octets already handed on; ignored.
    Stale,
    /// A DATA_FIN without data was passed to the data level.
    DataFin,
    /// An infinite mapping: this subflow now maps linearly for good (§3.7). The connection
    /// must treat it as fallback (single subflow, no more DATA_ACKs needed).
    Infinite,
}

/// Receive-side mapping state of one subflow.
#[derive(Debug)]
pub struct SubflowReceiver {
    checksums: bool,
    /// Relative subflow sequence number of the next in-order octet the TCP engine will release.
    next: SubflowSeq,
    /// In-order octets not yet handed to the data level: `[next - len, next)`.
    pending: VecDeque<u8>,
    /// Known mappings not yet consumed, sorted by subflow sequence number.
    mappings: VecDeque<Mapping>,
    infinite: Option<Mapping>,
    max_unmapped: usize,
    max_mappings: usize,
}

impl SubflowReceiver {
    /// Pending mappings allowed at once, at least (small windows).
    pub const MAX_MAPPINGS: usize = 1024;
    /// Fewest payload octets a peer's mapping is assumed to cover when sizing the limit on
    /// pending mappings: the default MSS (RFC 9293 §3.7.1).
    const MIN_MAPPING_OCTETS: usize = 536;

    /// A receiver for a subflow whose first data octet is `first` (relative 1, or later for a
    /// subflow joining after data-level fallback), with DSS checksums on or off as negotiated
    /// (§3.1), holding at most `max_unmapped` octets while waiting for their mapping (one receive
    /// window, §3.3.1). With checksums on, octets of a mapping wait here until the whole mapping
    /// is in, so the limit is raised to at least one maximal mapping (65,535 octets).
    pub fn new(first: SubflowSeq, checksums: bool, max_unmapped: usize) -> SubflowReceiver {
        SubflowReceiver {
            checksums,
            next: first,
            pending: VecDeque::new(),
            mappings: VecDeque::new(),
            infinite: None,
            // Every segment of a receive window may arrive out of order with its own mapping
            // (Linux maps each segment when it does not use TSO), and the TCP level accepts
            // all of it (RFC 9293 §3.10.7.4: in-window segments are kept): hold their mappings
            // too. Found against the Linux kernel: a lost segment followed by ~1.5 MB of
            // in-window data overflowed a fixed cap of 1,024 and reset a healthy subflow.
            max_mappings: Self::MAX_MAPPINGS.max(max_unmapped / Self::MIN_MAPPING_OCTETS),
            max_unmapped: if checksums {
                max_unmapped.max(usize::from(u16::MAX))
            } else {
                max_unmapped
            },
        }
    }

    fn pending_start(&self) -> SubflowSeq {
        SubflowSeq(self.next.0.wrapping_sub(self.pending.len() as u32))
    }

    /// Octets received but not yet mapped to the data level.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Whether an infinite mapping is in force.
    pub fn is_infinite(&self) -> bool {
        self.infinite.is_some()
    }

    /// Processes a mapping received on this subflow (DSS with flag M, or MP_CAPABLE with data).
    pub fn on_mapping(
        &mut self,
        m: Mapping,
        recv: &mut DataRecvBuffer,
    ) -> Result<MappingOutcome, MappingError> {
        // RFC 8684 §3.3: a checksum present/absent against the negotiation MUST close the
        // subflow with a RST.
        match (self.checksums, m.checksum.is_some()) {
            (true, false) => return Err(MappingError::MissingChecksum),
            (false, true) => return Err(MappingError::UnexpectedChecksum),
            _ => {}
        }
        if self.infinite.is_some() {
            // §3.7: "Once MPTCP falls back to regular TCP, it MUST NOT revert to MPTCP later".
            return Ok(MappingOutcome::Stale);
        }
        if m.is_bare_data_fin() {
            // §3.3.3: "The checksum in this case will only cover the pseudo-header."
            if self.checksums && !verify_dss_checksum(&m, &[]) {
                return Err(MappingError::ChecksumFailed { dsn: m.dsn });
            }
            recv.insert_data_fin(m.dsn)?;
            return Ok(MappingOutcome::DataFin);
        }
        if m.is_infinite() {
            // Mappings already declared still place the octets before the infinite mapping's
            // start (a segment may carry the mapping of octets that arrive later).
            self.infinite = Some(m);
            self.process(recv)?;
            return Ok(MappingOutcome::Infinite);
        }
        let start = self.pending_start();
        let rel = m.subflow_seq.diff(start);
        let end_rel = i64::from(rel) + i64::from(m.subflow_len());
        if end_rel <= 0 {
            // Covers only octets already handed on (a retransmitted segment).
            if let Some(fin) = m.data_fin_dsn() {
                recv.insert_data_fin(fin)?;
            }
            return Ok(MappingOutcome::Stale);
        }
        if rel < 0 && self.checksums {
            // With checksums, mappings are consumed whole, so one straddling the consumed edge
            // cannot be the mapping that was verified there.
            return Err(MappingError::OverlapsConsumed { new: m });
        }
        let mut insert_at = self.mappings.len();
        for (i, old) in self.mappings.iter().enumerate() {
            if *old == m {
                return Ok(MappingOutcome::Duplicate);
            }
            if old.same_octets(&m) {
                // The same mapping with or without the DATA_FIN octet (§3.3.3: the DATA_FIN
                // "is included in the Data-Level Length but not at the subflow level"). Linux
                // extends the mapping of its last data by that octet once the application has
                // closed, so segments of one mapping sent before and after the close differ
                // only there (found against the kernel under load: both subflows were reset
                // as "changed mapping" right after the transfer). Keep the form with the
                // DATA_FIN; with checksums its own checksum then verifies the data and the
                // DATA_FIN together, as the peer computed it for that Data-Level Length.
                if m.data_fin && !old.data_fin {
                    self.mappings[i] = m;
                }
                return Ok(MappingOutcome::Duplicate);
            }
            let o_rel = i64::from(old.subflow_seq.diff(start));
            let o_end = o_rel + i64::from(old.subflow_len());
            let overlap = i64::from(rel) < o_end && o_rel < end_rel;
            // §3.3.1: "A sender MUST NOT change this mapping after it has been declared".
            if overlap && (self.checksums || !m.same_offset(old)) {
                return Err(MappingError::Changed { old: *old, new: m });
            }
            if o_rel > i64::from(rel) && insert_at == self.mappings.len() {
                insert_at = i;
            }
        }
        if self.mappings.len() >= self.max_mappings {
            return Err(MappingError::TooManyMappings);
        }
        self.mappings.insert(insert_at, m);
        self.process(recv)?;
        Ok(MappingOutcome::Added)
    }

    /// Takes octets the TCP engine releases in subflow order, starting at relative sequence
    /// number `seq` (octets before the next expected one are skipped as already seen). Returns
    /// the number of octets handed to the data level by this call.
    pub fn on_data(
        &mut self,
        seq: SubflowSeq,
        data: &[u8],
        recv: &mut DataRecvBuffer,
    ) -> Result<usize, MappingError> {
        let rel = seq.diff(self.next);
        if rel > 0 {
            return Err(MappingError::NotInOrder {
                expected: self.next,
                got: seq,
            });
        }
        let skip = usize::try_from(rel.unsigned_abs())
            .unwrap_or(usize::MAX)
            .min(data.len());
        let fresh = &data[skip..];
        self.pending.extend(fresh);
        self.next = self.next.wrapping_add(fresh.len() as u32);
        let handed = self.process(recv)?;
        if self.pending.len() > self.max_unmapped {
            return Err(MappingError::Unmapped {
                bytes: self.pending.len(),
            });
        }
        Ok(handed)
    }

    /// Hands every pending octet that has a (verified) mapping to the data level.
    fn process(&mut self, recv: &mut DataRecvBuffer) -> Result<usize, MappingError> {
        let mut handed = 0;
        loop {
            let start = self.pending_start();
            // Drop mappings that end at or before the consumed edge.
            while let Some(front) = self.mappings.front() {
                let end = i64::from(front.subflow_seq.diff(start)) + i64::from(front.subflow_len());
                if end > 0 {
                    break;
                }
                // Its octets went up under an overlapping mapping (same offsets); a DATA_FIN
                // it carries still counts.
                if let Some(fin) = front.data_fin_dsn() {
                    recv.insert_data_fin(fin)?;
                }
                self.mappings.pop_front();
            }
            if self.pending.is_empty() {
                return Ok(handed);
            }
            if let Some(inf) = self.infinite {
                // §3.7: the infinite mapping maps the rest of the subflow linearly, starting at
                // its subflow sequence number; earlier unmapped octets cannot be placed.
                let rel = start.diff(inf.subflow_seq);
                if rel < 0 {
                    let mapped = self.mappings.iter().any(|m| {
                        let r = i64::from(start.diff(m.subflow_seq));
                        r >= 0 && r < i64::from(m.subflow_len())
                    });
                    if !mapped {
                        let drop = usize::try_from(rel.unsigned_abs())
                            .unwrap_or(usize::MAX)
                            .min(self.pending.len());
                        self.pending.drain(..drop);
                        continue;
                    }
                } else {
                    let dsn = inf.dsn.wrapping_add(rel as u64);
                    let bytes = self.pending.make_contiguous();
                    recv.insert(dsn, bytes);
                    let n = bytes.len();
                    handed += n;
                    self.pending.clear();
                    // The mapping's anchor follows the consumed edge: offsets from it are 32-bit
                    // differences, which a subflow that carried 2 GiB since the fallback would
                    // otherwise overflow (the octets then looked older than the mapping and
                    // were dropped after the subflow had acknowledged them).
                    self.infinite = Some(Mapping {
                        dsn: dsn.wrapping_add(n as u64),
                        subflow_seq: start.wrapping_add(n as u32),
                        ..inf
                    });
                    return Ok(handed);
                }
            }
            let Some(idx) = self.mappings.iter().position(|m| {
                let rel = i64::from(start.diff(m.subflow_seq));
                rel >= 0 && rel < i64::from(m.subflow_len())
            }) else {
                return Ok(handed); // unmapped for now
            };
            let m = self.mappings[idx];
            let off = start.diff(m.subflow_seq) as u32;
            let remaining = (m.subflow_len() - off) as usize;
            let n = if self.checksums {
                // The checksum covers the whole mapping: wait for all of it, verify, and only
                // then let any of it through (§3.7: data from a failed mapping on "is not
                // trustworthy"). `off` is 0 here (mappings are consumed whole).
                if self.pending.len() < remaining {
                    return Ok(handed);
                }
                let bytes = &self.pending.make_contiguous()[..remaining];
                if !verify_dss_checksum(&m, bytes) {
                    // §3.7: "Failed data MUST NOT be DATA_ACKed": none of it goes up.
                    return Err(MappingError::ChecksumFailed { dsn: m.dsn });
                }
                remaining
            } else {
                remaining.min(self.pending.len())
            };
            let bytes = &self.pending.make_contiguous()[..n];
            recv.insert(m.dsn.wrapping_add(u64::from(off)), bytes);
            self.pending.drain(..n);
            handed += n;
            if n == remaining {
                self.mappings.remove(idx);
                if let Some(fin) = m.data_fin_dsn() {
                    recv.insert_data_fin(fin)?;
                }
            }
        }
    }
}

//! One subflow: a [`tcp::Connection`] plus its MPTCP state, and the [`OptionHook`] that writes
//! MP_CAPABLE / MP_JOIN / DSS (with DATA_ACK) / MP_PRIO / ADD_ADDR / MP_FAIL / MP_TCPRST /
//! MP_FASTCLOSE into its segments.
//!
//! Which of those a segment carries is decided in one place, [`SubflowMp::plan`]: the TCP
//! engine's reservation ([`OptionHook::reserve`]), the writing itself
//! ([`OptionHook::write_options`]) and the connection's sizing of a new data mapping
//! (`push_chunk`) all ask it, so the three cannot disagree.

use std::collections::VecDeque;

use super::PathId;
use super::handshake::{CapableInitiator, CapableSynReceived, JoinInitiator, JoinResponder};
use super::mapping::{Mapping, SubflowReceiver, dss_option};
use super::send::SubflowId;
use super::seq::{DataSeq, SubflowSeq};
use crate::tcp::{self, InSegment, OptionHook, OutSegment, SegmentPlan, SeqNum};
use crate::wire::mptcp::{
    CapablePayload, DSS_CHECKSUM_LEN, DSS_DATA_ACK64_LEN, DSS_HEADER_LEN, DSS_MAPPING64_LEN, Dss, MptcpOption,
};
use crate::wire::tcp::{SegmentHeader, TcpFlags};

/// A DSS with a 64-bit DATA_ACK and a mapping (the option of a data segment), without checksum.
const DSS_DATA_LEN: usize = DSS_HEADER_LEN + DSS_DATA_ACK64_LEN + DSS_MAPPING64_LEN;
/// A DSS with a 64-bit DATA_ACK alone (the option of a pure ACK).
const DSS_ACK_LEN: usize = DSS_HEADER_LEN + DSS_DATA_ACK64_LEN;
/// Room counted for the DSS of a data segment that also carries a signal (its DATA_ACK left
/// out): the mapping and header are 18 octets; the two more are the margin this stack has always
/// reserved there, kept so that segment sizes stay as they were.
const DSS_BESIDE_SIGNAL_LEN: usize = DSS_HEADER_LEN + DSS_MAPPING64_LEN + 2;

/// Where the subflow's MPTCP handshake stands, with the data each step needs.
#[derive(Debug)]
pub(super) enum Handshake {
    /// Client, initial subflow, SYN sent. `mpc_syns` SYNs carried MP_CAPABLE so far; after
    /// `max_mpc_syns` the SYN goes without it (RFC 8684 §3.7 / iOS, Linux behaviour).
    CapableSyn {
        init: CapableInitiator,
        mpc_syns: u32,
        max_mpc_syns: u32,
    },
    /// Server, initial subflow, SYN/ACK sent. `early_dss`: DSS options that arrived before the
    /// MP_CAPABLE third ACK (kept for their mappings).
    CapableSynRecv {
        sr: CapableSynReceived,
        early_dss: Vec<Dss>,
    },
    /// Client, initial subflow: MP_CAPABLE done on our side and data may flow, but not yet
    /// confirmed by a DSS from the peer (§3.1); the key-carrying option is repeated until then.
    CapableUnconfirmed(MptcpOption),
    /// Client, MP_JOIN SYN sent.
    JoinSyn(JoinInitiator),
    /// Client, MP_JOIN SYN/ACK received: the third-ACK MP_JOIN, repeated until the peer
    /// acknowledges it (§3.2); no data before.
    JoinAck(MptcpOption),
    /// Server, MP_JOIN SYN/ACK sent (the option is kept for retransmissions).
    JoinSynRecv(JoinResponder, MptcpOption),
    /// MPTCP in use on this subflow.
    Established,
    /// Plain TCP (fallback, §3.7).
    Plain,
    /// Transient while a state is being consumed.
    Taken,
}

/// The MPTCP side of a subflow.
#[derive(Debug)]
pub(super) struct SubflowMp {
    pub hs: Handshake,
    /// Our ISN (absolute) and the peer's, for relative subflow sequence numbers (§3.3.1).
    pub iss: u32,
    pub irs: Option<u32>,
    pub rx: Option<SubflowReceiver>,
    /// Mappings of what was queued on this subflow, by relative subflow sequence number.
    pub tx_maps: VecDeque<Mapping>,
    /// Local backup priority (our MP_JOIN B flag / MP_PRIO).
    pub backup: bool,
    /// The peer's backup priority for this subflow (its MP_JOIN B flag / MP_PRIO, §3.3.8).
    pub peer_backup: bool,
    pub local_addr_id: u8,
    pub remote_addr_id: u8,
    /// One-off options for the next pure ACK (MP_PRIO, ADD_ADDR echo, MP_FAIL, ...).
    pub oneoff: VecDeque<MptcpOption>,
    /// Option for the RST, if this subflow is reset by us (MP_TCPRST or MP_FASTCLOSE).
    pub rst_opt: Option<MptcpOption>,
    /// A bare DATA_FIN mapping to repeat on pure ACKs until DATA_ACKed (§3.3.3).
    pub bare_fin: Option<Mapping>,
    /// End of the last mapping received here: where an infinite mapping starts (§3.7).
    pub last_rx_map_end: Option<(SubflowSeq, DataSeq)>,
    /// The connection's DATA_ACK and window to advertise, refreshed before each transmit.
    pub data_ack: Option<DataSeq>,
    /// MPTCP options are no longer written (fallback to regular TCP, §3.7), except a pending
    /// MP_FAIL.
    pub no_options: bool,
    /// After an MP_FAIL (§3.7): the next data segment carries an infinite mapping (with
    /// `no_options` already set).
    pub infinite_tx: bool,
    /// DSS checksums in use.
    pub checksums: bool,
    /// The subflow stalled (RTOs) and its data was queued for reinjection.
    pub reinjected: bool,
    /// Set by [`on_segment`](OptionHook::on_segment): an accepted segment to process.
    pub accepted: Option<(SegmentHeader, InSegment)>,
    /// Liveness signals (unresponsive-path detection).
    pub live: super::connection::Liveness,
}

/// The segment [`SubflowMp::plan`] plans the options of.
#[derive(Debug, Clone, Copy)]
pub(super) enum Segment<'a> {
    /// The TCP engine reserves room: position and room not known yet, so the plan is an upper
    /// bound.
    Reserve(&'a SegmentPlan),
    /// The segment is being written into `room` octets of option space.
    Write(&'a OutSegment, usize),
    /// The connection sizes a new data mapping: the option a data segment carries as a rule
    /// (one-off signals and states aside, which make room for themselves when they go out).
    Chunk,
}

/// What a segment's MPTCP option space carries, rung by rung of [`SubflowMp::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carry {
    /// Nothing.
    Nothing,
    /// One option as it is (the RST's, the SYN's, an MP_FAIL after fallback, the join's third
    /// ACK, the unconfirmed MP_CAPABLE on an ACK); `pop`: it is the head of the one-off queue.
    Single { opt: MptcpOption, pop: bool },
    /// The SYN's MP_CAPABLE, counted against the SYN budget.
    CapableSyn(MptcpOption),
    /// After an MP_FAIL: the infinite mapping on the first data segment (§3.7).
    Infinite,
    /// The first data segment: MP_CAPABLE with the data-level length (§3.1).
    CapableData(MptcpOption),
    /// A data segment's DSS (mapping, DATA_ACK left out) and the pending signal.
    DssWithSignal(MptcpOption),
    /// A data segment's DSS: DATA_ACK and mapping (§3.3).
    DataDss,
    /// A pure ACK repeating the bare DATA_FIN (§3.3.3).
    BareFin(Mapping),
    /// A pure ACK: DATA_ACK and the pending signal, as many as fit.
    AckAndSignal,
}

/// A [`Carry`] and the option octets it takes at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    pub carry: Carry,
    pub len: usize,
}

impl Plan {
    const NOTHING: Plan = Plan::of(Carry::Nothing, 0);

    const fn of(carry: Carry, len: usize) -> Plan {
        Plan { carry, len }
    }

    fn single(opt: MptcpOption) -> Plan {
        Plan::of(Carry::Single { opt, pop: false }, opt.len())
    }
}

impl SubflowMp {
    pub fn new(hs: Handshake, iss: u32) -> SubflowMp {
        SubflowMp {
            hs,
            iss,
            irs: None,
            rx: None,
            tx_maps: VecDeque::new(),
            backup: false,
            peer_backup: false,
            local_addr_id: 0,
            remote_addr_id: 0,
            oneoff: VecDeque::new(),
            rst_opt: None,
            bare_fin: None,
            last_rx_map_end: None,
            data_ack: None,
            no_options: false,
            infinite_tx: false,
            checksums: false,
            reinjected: false,
            accepted: None,
            live: Default::default(),
        }
    }

    /// The options `seg` carries and their length, in order of precedence: a RST carries its
    /// reset option; a SYN its handshake option; after fallback only an MP_FAIL and then one
    /// infinite mapping; a join's third ACK goes alone until acknowledged; a data segment carries
    /// the MP_CAPABLE with data (the first one) or a DSS (with a pending signal if it fits); a
    /// pure ACK the unconfirmed MP_CAPABLE, the bare DATA_FIN, or the DATA_ACK and a signal.
    pub fn plan(&self, seg: Segment<'_>) -> Plan {
        let (flags, payload, at) = match seg {
            Segment::Reserve(p) => (p.flags, p.has_payload, None),
            Segment::Write(s, room) => (s.flags, s.payload_len > 0, Some((self.rel(s.seq), room))),
            Segment::Chunk => (TcpFlags::ACK, true, None),
        };
        let chunk = matches!(seg, Segment::Chunk);
        if flags.rst() {
            return self.rst_opt.map_or(Plan::NOTHING, Plan::single);
        }
        if flags.syn() {
            return match &self.hs {
                Handshake::CapableSyn {
                    init,
                    mpc_syns,
                    max_mpc_syns,
                } if mpc_syns < max_mpc_syns => {
                    let opt = init.syn_option();
                    Plan::of(Carry::CapableSyn(opt), opt.len())
                }
                Handshake::CapableSynRecv { sr, .. } => Plan::single(sr.syn_ack_option()),
                Handshake::JoinSyn(j) => Plan::single(j.syn_option()),
                Handshake::JoinSynRecv(_, o) => Plan::single(*o),
                _ => Plan::NOTHING,
            };
        }
        if matches!(self.hs, Handshake::Plain) || (chunk && self.no_options) {
            return Plan::NOTHING;
        }
        if self.no_options {
            // After fallback only an MP_FAIL and then one infinite mapping still go out (§3.7:
            // "the receiver of an MP_FAIL MUST also respond with an MP_FAIL in the reverse
            // direction"), the MP_FAIL first so that the peer learns why.
            if let Some(opt) = self.pending_mp_fail() {
                return Plan::of(Carry::Single { opt, pop: true }, opt.len());
            }
            if self.infinite_tx && payload {
                return Plan::of(
                    Carry::Infinite,
                    self.infinite_dss(DataSeq(0), SubflowSeq(0)).len(),
                );
            }
            return Plan::NOTHING;
        }
        if let Handshake::JoinAck(j) = self.hs
            && !chunk
        {
            return Plan::single(j);
        }
        let csum = if self.checksums { DSS_CHECKSUM_LEN } else { 0 };
        if payload {
            if let Some((rel, _)) = at
                && let Some(opt) = self.capable_with_data(rel)
            {
                return Plan::of(Carry::CapableData(opt), opt.len());
            }
            if let Some(&o) = self.oneoff.front().filter(|_| !chunk)
                && at.is_none_or(|(_, room)| o.len() + DSS_BESIDE_SIGNAL_LEN + csum <= room)
            {
                // A pending signal (MP_PRIO, ...) rides on this data segment: the DSS leaves
                // out its DATA_ACK this once to make room (the next segment carries it).
                return Plan::of(
                    Carry::DssWithSignal(o),
                    (DSS_DATA_LEN + csum).max(DSS_BESIDE_SIGNAL_LEN + csum + o.len()),
                );
            }
            return Plan::of(Carry::DataDss, DSS_DATA_LEN + csum);
        }
        if let Handshake::CapableUnconfirmed(mpc) = self.hs
            && at.is_none_or(|(rel, _)| rel == SubflowSeq::FIRST_DATA)
        {
            // §3.1: the key-carrying MP_CAPABLE is repeated on ACKs until confirmed.
            return Plan::single(mpc);
        }
        if let Some(fin) = self.bare_fin {
            return Plan::of(Carry::BareFin(fin), DSS_DATA_LEN + csum);
        }
        Plan::of(
            Carry::AckAndSignal,
            DSS_ACK_LEN + self.oneoff.front().map_or(0, |o| o.len()),
        )
    }

    /// RFC 8684 §3.1: the first data segment carries the MP_CAPABLE with both keys and the
    /// Data-Level Length (the mapping is implicit: DSN IDSN+1, subflow seq 1), if the segment at
    /// `rel` is that one.
    fn capable_with_data(&self, rel: SubflowSeq) -> Option<MptcpOption> {
        let Handshake::CapableUnconfirmed(MptcpOption::MpCapable(mut c)) = self.hs else {
            return None;
        };
        let m = self.tx_map_at(rel)?;
        if rel != SubflowSeq::FIRST_DATA || m.subflow_seq != SubflowSeq::FIRST_DATA || m.data_fin {
            return None;
        }
        let CapablePayload::BothKeys {
            sender_key,
            receiver_key,
        } = c.payload
        else {
            return None;
        };
        c.payload = CapablePayload::BothKeysWithData {
            sender_key,
            receiver_key,
            data_len: m.data_len,
            checksum: m.checksum,
        };
        Some(MptcpOption::MpCapable(c))
    }

    /// The DSS carrying an infinite mapping from `dsn` / `subflow_seq` (§3.7; with checksums in
    /// use, its checksum field is zero).
    fn infinite_dss(&self, dsn: DataSeq, subflow_seq: SubflowSeq) -> MptcpOption {
        let inf = Mapping {
            dsn,
            subflow_seq,
            data_len: 0,
            data_fin: false,
            checksum: self.checksums.then_some(0),
        };
        dss_option(None, Some(&inf))
    }

    /// An MP_FAIL waiting in the one-off queue.
    fn pending_mp_fail(&self) -> Option<MptcpOption> {
        self.oneoff
            .front()
            .copied()
            .filter(|o| matches!(o, MptcpOption::MpFail { .. }))
    }

    fn rel(&self, seq: SeqNum) -> SubflowSeq {
        SubflowSeq::from_absolute(seq.0, self.iss)
    }

    /// The mapping covering relative subflow sequence number `rel`, if any.
    pub fn tx_map_at(&self, rel: SubflowSeq) -> Option<&Mapping> {
        let i = self
            .tx_maps
            .partition_point(|m| m.subflow_seq.wrapping_add(m.subflow_len()).diff(rel) <= 0);
        self.tx_maps
            .get(i)
            .filter(|m| rel.diff(m.subflow_seq) >= 0 && m.subflow_len() > 0)
    }

    /// The DSN of relative subflow sequence number `rel` (the DSN after the last mapping if
    /// `rel` is past all of them): derives DATA_ACKs from subflow ACKs after fallback (§3.7).
    pub fn dsn_of(&self, rel: SubflowSeq) -> Option<DataSeq> {
        if let Some(m) = self.tx_map_at(rel) {
            return Some(m.dsn.wrapping_add(rel.diff(m.subflow_seq) as u64));
        }
        let last = self.tx_maps.back()?;
        let end = last.subflow_seq.wrapping_add(last.subflow_len());
        (rel.diff(end) >= 0).then(|| last.dsn.wrapping_add(u64::from(last.subflow_len())))
    }
}

fn put(opt: &MptcpOption, space: &mut [u8], at: &mut usize) {
    if opt.len() <= space.len() - *at
        && let Ok(n) = opt.write(&mut space[*at..])
    {
        *at += n;
    }
}

impl OptionHook for SubflowMp {
    fn reserve(&mut self, plan: &SegmentPlan) -> usize {
        self.plan(Segment::Reserve(plan)).len
    }

    fn limit_payload(&mut self, seq: SeqNum, max: usize) -> usize {
        let rel = self.rel(seq);
        match self.tx_map_at(rel) {
            Some(m) => {
                let end = m.subflow_seq.wrapping_add(m.subflow_len());
                (end.diff(rel).max(1) as usize).min(max)
            }
            None => max,
        }
    }

    fn write_options(&mut self, seg: &OutSegment, space: &mut [u8]) -> usize {
        let mut at = 0;
        if seg.probe {
            // The peer drops a probe without looking at its options (RFC 9293 §3.10.7.4): a
            // one-off signal (REMOVE_ADDR, MP_PRIO, §3.4.2 / §3.3.8) put here would be lost;
            // it waits for the next acceptable segment. The DATA_ACK is harmless.
            if let Some(d) = self.data_ack.map(|ack| dss_option(Some(ack), None))
                && d.len() <= space.len()
            {
                put(&d, space, &mut at);
            }
            return at;
        }
        let rel = self.rel(seg.seq);
        let map = self.tx_map_at(rel).copied();
        match self.plan(Segment::Write(seg, space.len())).carry {
            Carry::Nothing => {}
            Carry::Single { opt, pop } => {
                put(&opt, space, &mut at);
                if pop {
                    self.oneoff.pop_front();
                }
            }
            Carry::CapableSyn(opt) => {
                if let Handshake::CapableSyn { mpc_syns, .. } = &mut self.hs {
                    *mpc_syns += 1;
                }
                put(&opt, space, &mut at);
            }
            Carry::Infinite => {
                if let Some(m) = map {
                    // §3.7: after an MP_FAIL on the only subflow, "signal an infinite mapping ...
                    // on the first new packet"; it starts at this segment's first octet (the data
                    // stream and the subflow are contiguous from here on) and carries a zero
                    // checksum field when checksums are in use.
                    let off = rel.diff(m.subflow_seq).max(0) as u64;
                    put(&self.infinite_dss(m.dsn.wrapping_add(off), rel), space, &mut at);
                    self.infinite_tx = false;
                }
            }
            Carry::CapableData(opt) => put(&opt, space, &mut at),
            Carry::DssWithSignal(o) => {
                put(&dss_option(None, map.as_ref()), space, &mut at);
                put(&o, space, &mut at);
                self.oneoff.pop_front();
            }
            // RFC 8684 §3.3: DSS with the DATA_ACK and the mapping of this payload.
            Carry::DataDss => put(&dss_option(self.data_ack, map.as_ref()), space, &mut at),
            Carry::BareFin(fin) => put(&dss_option(self.data_ack, Some(&fin)), space, &mut at),
            Carry::AckAndSignal => {
                let dss = self.data_ack.map(|ack| dss_option(Some(ack), None));
                let dss_len = dss.map_or(0, |d| d.len());
                let signal = self.oneoff.front().copied().filter(|o| o.len() <= space.len());
                // A signal too long to share the 40 option octets with the DATA_ACK (an IPv6
                // ADD_ADDR with its HMAC takes 28) goes alone; the next ACK carries the DATA_ACK.
                if let Some(d) = dss
                    && signal.is_none_or(|o| dss_len + o.len() <= space.len())
                {
                    put(&d, space, &mut at);
                }
                if let Some(o) = signal {
                    put(&o, space, &mut at);
                    self.oneoff.pop_front();
                }
            }
        }
        at
    }

    fn on_segment(&mut self, header: &SegmentHeader, seg: &InSegment) {
        self.accepted = Some((*header, *seg));
    }
}

/// A subflow of a connection.
#[derive(Debug)]
pub(super) struct Subflow {
    pub id: SubflowId,
    pub path: PathId,
    pub tcp: tcp::Connection,
    pub mp: SubflowMp,
    /// Reported up to the application (SubflowUp sent).
    pub up: bool,
    /// Removed from use (reset, timed out, path down); dropped once its TCP is closed.
    pub dead: bool,
    /// Payload octets handed to this subflow's TCP (reported in [`super::SubflowInfo`]).
    pub bytes_sent: u64,
}

impl Subflow {
    /// Relative subflow sequence number of the next byte `tcp.recv` returns.
    pub fn recv_rel(&self) -> Option<SubflowSeq> {
        self.mp
            .irs
            .map(|irs| SubflowSeq::from_absolute(self.tcp.recv_seq().0, irs))
    }
}

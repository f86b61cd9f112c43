//! One subflow: a [`tcp::Connection`] plus its MPTCP state, and the [`OptionHook`] that writes
//! MP_CAPABLE / MP_JOIN / DSS (with DATA_ACK) / MP_PRIO / ADD_ADDR / MP_FAIL / MP_TCPRST /
//! MP_FASTCLOSE into its segments.

use std::collections::VecDeque;

use super::PathId;
use super::handshake::{CapableInitiator, CapableSynReceived, JoinInitiator, JoinResponder};
use super::mapping::{Mapping, SubflowReceiver, dss_option};
use super::send::SubflowId;
use super::seq::{DataSeq, SubflowSeq};
use crate::tcp::{self, InSegment, OptionHook, OutSegment, SegmentPlan, SeqNum};
use crate::wire::mptcp::{Dss, MptcpOption};
use crate::wire::tcp::SegmentHeader;

/// Where the subflow's MPTCP handshake stands.
#[derive(Debug)]
pub(super) enum Handshake {
    /// Client, initial subflow, SYN sent. `mpc_syns` SYNs carried MP_CAPABLE so far; after
    /// `max_mpc_syns` the SYN goes without it (RFC 8684 §3.7 / iOS, Linux behaviour).
    CapableSyn {
        init: CapableInitiator,
        mpc_syns: u32,
        max_mpc_syns: u32,
    },
    /// Server, initial subflow, SYN/ACK sent.
    CapableSynRecv(CapableSynReceived),
    /// Client, MP_JOIN SYN sent.
    JoinSyn(JoinInitiator),
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
    /// Client join: the third-ACK MP_JOIN, repeated until the peer acknowledges it (§3.2).
    pub join_ack: Option<MptcpOption>,
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
    /// Client, initial subflow, MP_CAPABLE not yet confirmed by a DSS from the peer (§3.1).
    pub mpc_unconfirmed: Option<MptcpOption>,
    /// DSS checksums in use.
    pub checksums: bool,
    /// The subflow stalled (RTOs) and its data was queued for reinjection.
    pub reinjected: bool,
    /// Server: DSS options that arrived before the MP_CAPABLE third ACK (kept for their
    /// mappings).
    pub early_dss: Vec<Dss>,
    /// Set by [`on_segment`](OptionHook::on_segment): an accepted segment to process.
    pub accepted: Option<(SegmentHeader, InSegment)>,
    /// Liveness signals (unresponsive-path detection).
    pub live: super::connection::Liveness,
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
            join_ack: None,
            oneoff: VecDeque::new(),
            rst_opt: None,
            bare_fin: None,
            last_rx_map_end: None,
            data_ack: None,
            no_options: false,
            infinite_tx: false,
            mpc_unconfirmed: None,
            checksums: false,
            reinjected: false,
            early_dss: Vec::new(),
            accepted: None,
            live: Default::default(),
        }
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
        if plan.flags.rst() {
            return self.rst_opt.map_or(0, |o| o.len());
        }
        if plan.flags.syn() {
            return match &self.hs {
                Handshake::CapableSyn {
                    init,
                    mpc_syns,
                    max_mpc_syns,
                } if mpc_syns < max_mpc_syns => init.syn_option().len(),
                Handshake::CapableSynRecv(s) => s.syn_ack_option().len(),
                Handshake::JoinSyn(j) => j.syn_option().len(),
                Handshake::JoinSynRecv(_, o) => o.len(),
                _ => 0,
            };
        }
        if matches!(self.hs, Handshake::Plain) {
            return 0;
        }
        if self.no_options {
            if let Some(o) = self.pending_mp_fail() {
                return o.len();
            }
            if self.infinite_tx && plan.has_payload {
                return self.infinite_dss(DataSeq(0), SubflowSeq(0)).len();
            }
            return 0;
        }
        if let Some(j) = &self.join_ack {
            return j.len();
        }
        let csum = if self.checksums { 2 } else { 0 };
        if plan.has_payload {
            let signal = self.oneoff.front().map_or(0, |o| 20 + csum + o.len());
            return (26 + csum).max(signal);
        }
        if let Some(m) = &self.mpc_unconfirmed {
            return m.len();
        }
        if self.bare_fin.is_some() {
            return 26 + csum;
        }
        12 + self.oneoff.front().map_or(0, |o| o.len())
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
        if seg.flags.rst() {
            if let Some(o) = self.rst_opt {
                put(&o, space, &mut at);
            }
            return at;
        }
        if seg.flags.syn() {
            let opt = match &mut self.hs {
                Handshake::CapableSyn {
                    init,
                    mpc_syns,
                    max_mpc_syns,
                } => {
                    if *mpc_syns >= *max_mpc_syns {
                        return 0;
                    }
                    *mpc_syns += 1;
                    init.syn_option()
                }
                Handshake::CapableSynRecv(s) => s.syn_ack_option(),
                Handshake::JoinSyn(j) => j.syn_option(),
                Handshake::JoinSynRecv(_, o) => *o,
                _ => return 0,
            };
            put(&opt, space, &mut at);
            return at;
        }
        if matches!(self.hs, Handshake::Plain) {
            return 0;
        }
        let rel = self.rel(seg.seq);
        if self.no_options {
            // After fallback only an MP_FAIL and then one infinite mapping still go out (§3.7:
            // "the receiver of an MP_FAIL MUST also respond with an MP_FAIL in the reverse
            // direction"), the MP_FAIL first so that the peer learns why.
            if let Some(o) = self.pending_mp_fail() {
                put(&o, space, &mut at);
                self.oneoff.pop_front();
                return at;
            }
            if self.infinite_tx
                && seg.payload_len > 0
                && let Some(m) = self.tx_map_at(rel).copied()
            {
                // §3.7: after an MP_FAIL on the only subflow, "signal an infinite mapping ... on
                // the first new packet"; it starts at this segment's first octet (the data
                // stream and the subflow are contiguous from here on) and carries a zero
                // checksum field when checksums are in use.
                let off = rel.diff(m.subflow_seq).max(0) as u64;
                put(&self.infinite_dss(m.dsn.wrapping_add(off), rel), space, &mut at);
                self.infinite_tx = false;
            }
            return at;
        }
        if let Some(j) = self.join_ack {
            put(&j, space, &mut at);
            return at;
        }
        if seg.payload_len > 0 {
            let map = self.tx_map_at(rel).copied();
            if let (Some(mpc), Some(m)) = (self.mpc_unconfirmed, map)
                && rel == SubflowSeq::FIRST_DATA
                && m.subflow_seq == SubflowSeq::FIRST_DATA
                && !m.data_fin
                && let MptcpOption::MpCapable(mut c) = mpc
            {
                // RFC 8684 §3.1: the first data segment carries the MP_CAPABLE with both keys and
                // the Data-Level Length (the mapping is implicit: DSN IDSN+1, subflow seq 1).
                if let crate::wire::mptcp::CapablePayload::BothKeys {
                    sender_key,
                    receiver_key,
                } = c.payload
                {
                    c.payload = crate::wire::mptcp::CapablePayload::BothKeysWithData {
                        sender_key,
                        receiver_key,
                        data_len: m.data_len,
                        checksum: m.checksum,
                    };
                    put(&MptcpOption::MpCapable(c), space, &mut at);
                    return at;
                }
            }
            if let Some(o) = self.oneoff.front().copied()
                && o.len() + 20 + usize::from(self.checksums) * 2 <= space.len()
            {
                // A pending signal (MP_PRIO, ...) rides on this data segment: the DSS leaves
                // out its DATA_ACK this once to make room (the next segment carries it).
                put(&dss_option(None, map.as_ref()), space, &mut at);
                put(&o, space, &mut at);
                self.oneoff.pop_front();
                return at;
            }
            // RFC 8684 §3.3: DSS with the DATA_ACK and the mapping of this payload.
            put(&dss_option(self.data_ack, map.as_ref()), space, &mut at);
            return at;
        }
        if let Some(mpc) = self.mpc_unconfirmed
            && rel == SubflowSeq::FIRST_DATA
        {
            // §3.1: the key-carrying MP_CAPABLE is repeated on ACKs until confirmed.
            put(&mpc, space, &mut at);
            return at;
        }
        if let Some(fin) = self.bare_fin {
            put(&dss_option(self.data_ack, Some(&fin)), space, &mut at);
            return at;
        }
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
}

impl Subflow {
    /// Relative subflow sequence number of the next byte `tcp.recv` returns.
    pub fn recv_rel(&self) -> Option<SubflowSeq> {
        self.mp
            .irs
            .map(|irs| SubflowSeq::from_absolute(self.tcp.recv_seq().0, irs))
    }
}

//! The MPTCP options of segments on established subflows: DSS (DATA_ACK and mappings, §3.3),
//! the MP_CAPABLE carrying the first data (§3.1), MP_PRIO (§3.3.8), ADD_ADDR and REMOVE_ADDR
//! (§3.4), MP_FAIL (§3.7), MP_FASTCLOSE (§3.5), options vanishing (a middlebox, §3.7), and
//! what a mapping's arrival or a mapping error does to the subflow.

use super::{
    Connection, Event, FallbackCause, Handshake, MptcpOption, RstReason, SubflowResetCause, find_opt,
    parse_opts, tcprst,
};
use crate::mptcp::addr::{self, AddAddrOutcome};
use crate::mptcp::mapping::{Mapping, MappingError, MappingOutcome, ReceivedDss};
use crate::mptcp::seq::DataSeq;
use crate::wire::mptcp::CapablePayload;
use crate::wire::tcp::SegmentHeader;

impl Connection {
    /// A RST with an MP_FASTCLOSE resets the whole connection. True if it did.
    pub(super) fn on_fastclose(&mut self, hdr: &SegmentHeader) -> bool {
        let opts = parse_opts(hdr);
        let Some(neg) = self.neg else { return false };
        let Some(fc) = find_opt(&opts, |o| matches!(o, MptcpOption::MpFastclose { .. })) else {
            return false;
        };
        // RFC 8684 §3.5: act on an MP_FASTCLOSE only with the valid key.
        if !neg.is_valid_fastclose(fc) {
            self.dropped += 1;
            return false;
        }
        for s in &mut self.subflows {
            s.mp.rst_opt = None;
            s.tcp.abort();
            s.dead = true;
        }
        self.terminal_event(Event::Reset);
        true
    }

    /// The options `opts` of segment `h` on established subflow `i`.
    pub(super) fn process_options(
        &mut self,
        i: usize,
        h: &SegmentHeader,
        opts: &[MptcpOption],
        payload_len: usize,
    ) {
        if self.fallback || self.subflows[i].mp.no_options {
            return;
        }
        if opts.is_empty() && !h.flags.syn() && !h.flags.rst() {
            let _ = payload_len;
            self.on_options_missing(i, h);
            return;
        }
        let Some(neg) = self.neg else { return };
        let window = {
            let s = &self.subflows[i];
            let shift = s.tcp.window_scale().map_or(0, |w| w.0);
            u32::from(h.window) << shift
        };
        for opt in opts {
            match opt {
                MptcpOption::Dss(dss) => {
                    let rcv_nxt = self.recv.as_ref().map_or(DataSeq(0), |r| r.rcv_nxt());
                    let r = ReceivedDss::expand(dss, self.send.snd_una(), rcv_nxt);
                    if let Some(a) = r.data_ack {
                        // RFC 8684 §3.1: a DSS from the peer confirms our MP_CAPABLE.
                        let s = &mut self.subflows[i];
                        if matches!(s.mp.hs, Handshake::CapableUnconfirmed(_)) {
                            s.mp.hs = Handshake::Established;
                        }
                        if let Ok(o) = self.send.on_data_ack(a, window) {
                            self.freed(o.freed);
                            if self.send.fin_acked() {
                                for s in &mut self.subflows {
                                    s.mp.bare_fin = None;
                                }
                            }
                        } else {
                            self.dropped += 1;
                        }
                    }
                    if let Some(m) = r.mapping {
                        self.on_mapping(i, m);
                    }
                }
                MptcpOption::MpCapable(c) => {
                    if let CapablePayload::BothKeysWithData {
                        data_len, checksum, ..
                    } = c.payload
                    {
                        let m = Mapping::from_capable_data(
                            neg.remote_first_dsn().wrapping_add(u64::MAX),
                            data_len,
                            checksum,
                        );
                        self.on_mapping(i, m);
                    }
                }
                MptcpOption::MpPrio { backup } => {
                    // §3.3.8: the subflow's priority changes.
                    self.subflows[i].mp.peer_backup = *backup;
                }
                MptcpOption::AddAddr(a) => {
                    let Some(ra) = self.remote_addrs.as_mut() else {
                        continue;
                    };
                    match ra.on_add_addr(&neg, a) {
                        Ok(AddAddrOutcome::EchoOfOurs { addr_id }) => {
                            // §3.4.1: the echo ends the repetitions of our announcement.
                            self.announced.echoed(addr_id);
                        }
                        Ok(_) => {
                            // §3.4.1: echo a fresh ADD_ADDR. The path manager joins toward it
                            // from paths of its family when the addresses it tried before do not
                            // answer (or the peer forbade joins to its first address, flag C).
                            self.subflows[i].mp.oneoff.push_back(addr::echo(a));
                            self.subflows[i].tcp.request_ack();
                        }
                        Err(_) => self.dropped += 1,
                    }
                }
                MptcpOption::RemoveAddr { addr_ids } => {
                    let removed = self
                        .remote_addrs
                        .as_mut()
                        .map(|ra| ra.on_remove_addr(addr_ids))
                        .unwrap_or_default();
                    // §3.4.2: subflows using a removed address are closed.
                    for (id, ra) in removed {
                        for j in 0..self.subflows.len() {
                            let s = &self.subflows[j];
                            if !s.dead && s.mp.remote_addr_id == id && s.tcp.remote().ip() == ra.addr {
                                self.subflows[j].tcp.abort();
                                self.kill_subflow(j);
                            }
                        }
                    }
                }
                MptcpOption::MpFail { dsn } if self.single_subflow => {
                    // §3.7: the peer's checksum failed on the only subflow; all data in flight
                    // is contiguous here, so answer with MP_FAIL and an infinite mapping and
                    // go on as regular TCP.
                    self.fail_to_tcp(i, DataSeq(*dsn));
                    return;
                }
                MptcpOption::MpFail { .. } => {
                    // §3.7: the peer's checksum failed for data we sent on this subflow: stop
                    // using it; what it carried is reinjected elsewhere.
                    self.reset_subflow(
                        i,
                        tcprst(RstReason::MiddleboxInterference),
                        SubflowResetCause::PathIncompatible("MP_FAIL received"),
                    );
                    return;
                }
                _ => {}
            }
            if self.subflows[i].dead {
                return;
            }
        }
    }

    /// A segment without MPTCP options on established subflow `i`.
    fn on_options_missing(&mut self, i: usize, h: &SegmentHeader) {
        let s = &self.subflows[i];
        if matches!(s.mp.hs, Handshake::CapableUnconfirmed(_)) {
            // Our MP_CAPABLE is not confirmed yet: the server may still be waiting for it
            // (third ACK and first data lost) and ACKs without options meanwhile. Only an
            // ACK of data past the first segment without a DSS shows it fell back.
            let acked = h.ack.0.wrapping_sub(s.mp.iss) as i32;
            if acked <= 1 {
                return;
            }
        }
        // §3.7: MPTCP options vanished after the handshake: a middlebox. Fall back with an
        // infinite mapping while that is still possible (one subflow, the data stream
        // continuous on it), otherwise the subflow MUST be closed with "Middlebox
        // interference".
        if self.single_subflow {
            self.enter_fallback(i, FallbackCause::OptionsStripped);
        } else {
            self.reset_subflow(
                i,
                tcprst(RstReason::MiddleboxInterference),
                SubflowResetCause::PathIncompatible("options stripped"),
            );
        }
    }

    /// A mapping `m` received on subflow `i`.
    pub(super) fn on_mapping(&mut self, i: usize, m: Mapping) {
        let (Some(rx), Some(recv)) = (self.subflows[i].mp.rx.as_mut(), self.recv.as_mut()) else {
            return;
        };
        match rx.on_mapping(m, recv) {
            Ok(MappingOutcome::Added | MappingOutcome::Duplicate) if !m.is_infinite() => {
                let end = (
                    m.subflow_seq.wrapping_add(m.subflow_len()),
                    m.dsn.wrapping_add(u64::from(m.subflow_len())),
                );
                let s = &mut self.subflows[i];
                if s.mp.last_rx_map_end.is_none_or(|(seq, _)| end.0.diff(seq) > 0) {
                    s.mp.last_rx_map_end = Some(end);
                }
            }
            Ok(MappingOutcome::DataFin) => {
                // A bare DATA_FIN came on a pure ACK: acknowledge it at once.
                self.subflows[i].tcp.request_ack();
            }
            Ok(MappingOutcome::Infinite) if !self.fallback => {
                // §3.7: the peer went back to regular TCP (after an MP_FAIL, or options
                // stripped in its direction); "the receiver SHOULD stop generating Data ACKs".
                self.enter_fallback(i, FallbackCause::OptionsStripped);
            }
            Ok(_) => {}
            Err(e) => self.on_mapping_error(i, e),
        }
    }

    /// Subflow `i`'s data did not fit its mappings: fall back, fail, or reset the subflow.
    pub(super) fn on_mapping_error(&mut self, i: usize, e: MappingError) {
        use crate::mptcp::mapping::Fault;
        match (e, e.fault()) {
            (MappingError::ChecksumFailed { dsn }, _) if self.single_subflow => {
                // §3.7: "if a receiver identifies a checksum failure when there is only one
                // path, it will send back an MP_FAIL option on the subflow-level ACK" and the
                // data stream continues as regular TCP from the failed mapping on.
                self.fail_to_tcp(i, dsn);
            }
            (MappingError::ChecksumFailed { dsn }, _) => {
                // §3.7: a checksum failure is signalled with MP_FAIL; with other subflows the
                // subflow is closed with a RST carrying it.
                self.reset_subflow(
                    i,
                    MptcpOption::MpFail { dsn: dsn.0 },
                    SubflowResetCause::PathIncompatible("DSS checksum failed"),
                );
            }
            (MappingError::Unmapped { .. }, _) if self.single_subflow => {
                self.enter_fallback(i, FallbackCause::OptionsStripped);
            }
            (_, Fault::PathIncompatible) => self.reset_subflow(
                i,
                tcprst(RstReason::MiddleboxInterference),
                SubflowResetCause::PathIncompatible("unmapped data"),
            ),
            (e, _) => {
                tracing::debug!(subflow = i, error = %e, "bad DSS mapping, subflow reset");
                self.reset_subflow(
                    i,
                    tcprst(RstReason::MptcpSpecific),
                    SubflowResetCause::BadMapping(e),
                )
            }
        }
    }
}

//! The subflow handshakes on the connection's side (RFC 8684 §3.1 MP_CAPABLE, §3.2 MP_JOIN):
//! the server's [`accept_join`](Connection::accept_join), and the arms of
//! [`on_accepted`](Connection::on_accepted) that move a subflow's [`Handshake`] on with each
//! accepted segment, handing established subflows to the option processing.

use std::net::SocketAddr;

use super::{
    Connection, FallbackCause, Handshake, JoinRefused, MptcpOption, SubflowResetCause, find_opt, parse_opts,
    tcprst,
};
use crate::mptcp::PathId;
use crate::mptcp::addr::RemoteAddrs;
use crate::mptcp::crypto::Nonce;
use crate::mptcp::handshake::{JoinResponder, Negotiated};
use crate::mptcp::mapping::{ReceivedDss, SubflowReceiver};
use crate::mptcp::recv::DataRecvBuffer;
use crate::mptcp::seq::{DataSeq, SubflowSeq};
use crate::mptcp::subflow::SubflowMp;
use crate::tcp;
use crate::time::Instant;
use crate::wire::tcp::SegmentHeader;

impl Connection {
    /// An MP_JOIN SYN for this connection (server): verifies the token (§3.2: "Demultiplexing
    /// subflow SYNs MUST be done using the token") and answers with our HMAC. `Err`: reset it.
    pub fn accept_join(
        &mut self,
        now: Instant,
        path: PathId,
        local: SocketAddr,
        remote: SocketAddr,
        syn: &SegmentHeader,
        nonce: Nonce,
    ) -> Result<(), JoinRefused> {
        let open = self.accepting_joins(now);
        let Some(neg) = self.neg.filter(|_| !self.fallback && open) else {
            return Err(JoinRefused::NotAccepting);
        };
        if self.live_subflows() >= self.cfg.max_subflows {
            return Err(JoinRefused::NotAccepting);
        }
        let opts = parse_opts(syn);
        let join = find_opt(&opts, |o| matches!(o, MptcpOption::MpJoin(_)));
        // §3.2: our address ID for the address the join came to (0: the initial one).
        let addr_id = self.announced.id_of(local.ip());
        let (resp, synack) = JoinResponder::on_syn(
            join,
            |t| (t == neg.local_token()).then_some(&neg),
            nonce,
            false,
            addr_id,
        )?;
        let tcp = tcp::Connection::accept(now, local, remote, syn, self.cfg.tcp, &self.isn_key)?;
        let mut mp = SubflowMp::new(Handshake::JoinSynRecv(resp, synack), tcp.iss().0);
        mp.irs = Some(syn.seq.0);
        self.push_subflow(path, tcp, mp);
        Ok(())
    }

    fn setup_negotiated(&mut self, neg: Negotiated) {
        self.neg = Some(neg);
        self.recv = Some(DataRecvBuffer::new(
            neg.remote_first_dsn(),
            self.cfg.recv_buffer.saturating_mul(4),
        ));
        self.remote_addrs = Some(RemoteAddrs::new(self.remote.ip()));
        for s in &mut self.subflows {
            s.mp.checksums = neg.checksums;
        }
    }

    fn new_rx(&self) -> SubflowReceiver {
        SubflowReceiver::new(
            SubflowSeq::FIRST_DATA,
            self.neg.is_some_and(|n| n.checksums),
            self.cfg.tcp.recv_buffer,
        )
    }

    /// A segment subflow `i`'s TCP accepted (`h`, with `payload_len` octets): the handshake
    /// moves on, or, once established, its options are processed.
    pub(super) fn on_accepted(&mut self, now: Instant, i: usize, h: &SegmentHeader, payload_len: usize) {
        let _ = now;
        let opts = parse_opts(h);
        let syn = h.flags.syn();
        if syn && h.flags.ack() && self.subflows[i].mp.irs.is_none() {
            self.subflows[i].mp.irs = Some(h.seq.0);
        }
        let hs = std::mem::replace(&mut self.subflows[i].mp.hs, Handshake::Taken);
        match hs {
            Handshake::CapableSyn {
                init,
                mpc_syns,
                max_mpc_syns,
            } if syn && h.flags.ack() => {
                self.subflows[i].mp.irs = Some(h.seq.0);
                let mpc = find_opt(&opts, |o| matches!(o, MptcpOption::MpCapable(_)));
                // The SYNs with MP_CAPABLE went unanswered and the last one went without it.
                let sent_mpc_last = mpc_syns < max_mpc_syns;
                match init.on_syn_ack(mpc) {
                    Ok(neg) => {
                        self.setup_negotiated(neg);
                        let rx = self.new_rx();
                        let s = &mut self.subflows[i];
                        // RFC 8684 §3.1: the third ACK carries both keys; repeated until a DSS
                        // from the peer confirms it.
                        s.mp.hs = Handshake::CapableUnconfirmed(neg.third_ack_option(None));
                        s.mp.rx = Some(rx);
                    }
                    Err(f) => {
                        let cause = if mpc.is_none() && !sent_mpc_last {
                            FallbackCause::SynUnanswered
                        } else {
                            FallbackCause::Handshake(f)
                        };
                        self.enter_fallback(i, cause);
                    }
                }
            }
            Handshake::CapableSynRecv { sr, mut early_dss } if !syn && h.flags.ack() => {
                let mpc = find_opt(&opts, |o| matches!(o, MptcpOption::MpCapable(_)));
                if mpc.is_none() && find_opt(&opts, |o| matches!(o, MptcpOption::Dss(_))).is_some() {
                    // Third ACK and first data lost; a later segment: wait for the
                    // retransmission of the one carrying MP_CAPABLE, keeping its mapping (TCP
                    // acknowledges the data, so it will not come again).
                    for o in &opts {
                        if let MptcpOption::Dss(d) = o
                            && early_dss.len() < 1024
                        {
                            early_dss.push(*d);
                        }
                    }
                    self.subflows[i].mp.hs = Handshake::CapableSynRecv { sr, early_dss };
                    return;
                }
                match sr.on_third_ack(mpc) {
                    Ok((neg, map)) => {
                        self.setup_negotiated(neg);
                        let mut rx = self.new_rx();
                        if let (Some(m), Some(recv)) = (map, self.recv.as_mut()) {
                            let _ = rx.on_mapping(m, recv);
                            self.subflows[i].mp.last_rx_map_end = Some((
                                m.subflow_seq.wrapping_add(m.subflow_len()),
                                m.dsn.wrapping_add(u64::from(m.subflow_len())),
                            ));
                        }
                        let s = &mut self.subflows[i];
                        s.mp.hs = Handshake::Established;
                        s.mp.rx = Some(rx);
                        for d in early_dss {
                            let rcv_nxt = self.recv.as_ref().map_or(DataSeq(0), |r| r.rcv_nxt());
                            if let Some(m) = ReceivedDss::expand(&d, self.send.snd_una(), rcv_nxt).mapping {
                                self.on_mapping(i, m);
                            }
                        }
                        self.process_options(i, h, &opts, payload_len);
                    }
                    Err(f) => self.enter_fallback(i, FallbackCause::Handshake(f)),
                }
            }
            Handshake::JoinSyn(j) if syn && h.flags.ack() => {
                self.subflows[i].mp.irs = Some(h.seq.0);
                let join = find_opt(&opts, |o| matches!(o, MptcpOption::MpJoin(_)));
                match j.on_syn_ack(join) {
                    Ok((joined, ack)) => {
                        let rx = self.new_rx();
                        let s = &mut self.subflows[i];
                        // §3.2: the third ACK is delivered reliably; no data before.
                        s.mp.hs = Handshake::JoinAck(ack);
                        s.mp.peer_backup = joined.peer_backup;
                        s.mp.remote_addr_id = joined.peer_addr_id;
                        s.mp.rx = Some(rx);
                        // A second subflow: infinite-mapping fallback is no longer possible.
                        self.single_subflow = false;
                    }
                    Err(e) => {
                        // §3.2: "Host A MUST close the subflow with a TCP RST".
                        self.reset_subflow(
                            i,
                            tcprst(e.rst_reason()),
                            SubflowResetCause::PeerMisbehaved("MP_JOIN SYN/ACK"),
                        );
                    }
                }
            }
            Handshake::JoinSynRecv(resp, synack) if !syn && h.flags.ack() => {
                let join = find_opt(&opts, |o| matches!(o, MptcpOption::MpJoin(_)));
                match resp.on_ack(join) {
                    Ok(joined) => {
                        let rx = self.new_rx();
                        let s = &mut self.subflows[i];
                        s.mp.hs = Handshake::Established;
                        s.mp.peer_backup = joined.peer_backup;
                        s.mp.remote_addr_id = joined.peer_addr_id;
                        s.mp.rx = Some(rx);
                        // §3.2: "receipt of this packet MUST trigger a regular TCP ACK".
                        s.tcp.request_ack();
                        self.single_subflow = false;
                        let remote_ip = s.tcp.remote().ip();
                        if let Some(ra) = self.remote_addrs.as_mut() {
                            ra.on_join(joined.peer_addr_id, remote_ip);
                        }
                    }
                    Err(e) => {
                        let _ = synack;
                        // §3.2: "If Host B does not receive the expected HMAC ... it MUST close
                        // the subflow with a TCP RST."
                        self.dropped += 1;
                        self.reset_subflow(
                            i,
                            tcprst(e.rst_reason()),
                            SubflowResetCause::PeerMisbehaved("MP_JOIN third ACK"),
                        );
                    }
                }
            }
            Handshake::JoinAck(ack) => {
                // The peer answered after our third ACK: it has it (§3.2).
                self.subflows[i].mp.hs = if syn {
                    Handshake::JoinAck(ack)
                } else {
                    Handshake::Established
                };
                self.process_options(i, h, &opts, payload_len);
            }
            hs @ (Handshake::Established | Handshake::CapableUnconfirmed(_)) => {
                self.subflows[i].mp.hs = hs;
                self.process_options(i, h, &opts, payload_len);
            }
            other => self.subflows[i].mp.hs = other,
        }
    }
}

//! TCP Fast Open on the initial subflow (RFC 7413 client without a cookie, RFC 8684 Appendix B):
//! [`send_in_syn`](Connection::send_in_syn) puts the first octets in the MP_CAPABLE SYN (an
//! RFC 8803 Convert request, so the converter dials without waiting a round trip), and
//! `settle_syn_data` decides, once the SYN-ACK came, whether they were taken as TFO data or must
//! go as the first octets of the data stream.

use super::{Connection, Role};
use crate::mptcp::mapping::dss_checksum;
use crate::mptcp::seq::SubflowSeq;
use crate::tcp;

impl Connection {
    /// Client, right after [`connect`](Self::connect) and before the first `poll_transmit`:
    /// `data` rides in the initial subflow's SYN (RFC 7413 §4.2.2, without a cookie: for a
    /// listener that takes SYN data without one, as Linux with `TFO_SERVER_COOKIE_NOT_REQD`).
    /// Returns the octets taken (0 if it is too late, or called twice); what does not fit the SYN
    /// follows it as ordinary data.
    ///
    /// RFC 8684 Appendix B.2: "the TFO data must not be considered part of the data sequence
    /// number space": octets the SYN-ACK acknowledges are the listener's before any DSN, and the
    /// first octet after them is subflow sequence number 1 and DSN IDSN+1 (Figure 19). Octets it
    /// does not acknowledge (a listener without TFO; or the SYN with data was lost and its
    /// retransmission went without it, §4.2.2) are "effectively sent (in fact re-sent) after the
    /// establishment" and "become part of the Data Sequence Mapping" (Figure 20).
    pub fn send_in_syn(&mut self, data: &[u8]) -> usize {
        let Some(s) = self.subflows.first_mut() else {
            return 0;
        };
        let untouched = s.tcp.state() == tcp::State::SynSent
            && s.tcp.snd_nxt() == s.tcp.iss()
            && s.tcp.send_queued() == 0
            && self.send.snd_nxt() == self.send.snd_una()
            && self.send.buffered() == 0;
        if self.role != Role::Client || self.syn_data.is_some() || !untouched {
            return 0;
        }
        let n = self.send.write(data).unwrap_or(0);
        // The same octets wait in the data-level buffer (in case they must be mapped after all)
        // and in the subflow's own send queue, which puts them in the SYN.
        s.tcp.enable_fast_open();
        let queued = s.tcp.send(&data[..n]);
        debug_assert_eq!(queued, n, "a fresh subflow's send queue takes the SYN data");
        self.syn_data = Some((s.id, n));
        n
    }

    /// After subflow `i` accepted a segment: if it is the one whose SYN carried data and the
    /// handshake is over (SYN-ACK, or fallback to plain TCP), account for that data.
    pub(super) fn settle_syn_data(&mut self, i: usize) {
        let Some((id, len)) = self.syn_data else {
            return;
        };
        let s = &self.subflows[i];
        if s.id != id || matches!(s.tcp.state(), tcp::State::SynSent | tcp::State::Closed) {
            return;
        }
        self.syn_data = None;
        let limit = self.chunk_limit(i);
        let s = &mut self.subflows[i];
        // What the SYN-ACK acknowledged beyond the SYN itself was taken as TFO data.
        let acked = (s.tcp.snd_una().0.wrapping_sub(s.tcp.iss().0).wrapping_sub(1) as usize).min(len);
        // Appendix B.2 / Figure 19: relative subflow sequence numbers count from after it.
        s.mp.iss = s.mp.iss.wrapping_add(acked as u32);
        self.send.forget_front(acked);
        s.bytes_sent += len as u64;
        let mut rest = len - acked;
        // Figure 20: the rest is in the subflow's send queue from relative sequence number 1 and
        // goes (again) as the first octets of the data stream: map it there, a segment's worth
        // per mapping as new data is.
        let mut rel = SubflowSeq::FIRST_DATA;
        while rest > 0 {
            let Some(chunk) = self.send.take_queued(s.id, rest.min(limit)) else {
                return;
            };
            let mut m = chunk.mapping(rel);
            if s.mp.checksums && !s.mp.no_options {
                let mut bytes = vec![0u8; chunk.len];
                let n = self.send.copy_out(chunk.dsn, &mut bytes);
                // RFC 8684 §3.3.1: the checksum covers the pseudo-header and the mapped payload.
                m.checksum = Some(dss_checksum(m.dsn, m.subflow_seq, m.data_len, &bytes[..n]));
            }
            s.mp.tx_maps.push_back(m);
            rel = rel.wrapping_add(chunk.len as u32);
            rest -= chunk.len;
        }
    }

    /// Subflow `id` is gone before its SYN was answered: its SYN data stays in the data-level
    /// buffer, to go as ordinary data on whichever subflow carries the connection.
    pub(super) fn forget_syn_data_of(&mut self, id: crate::mptcp::send::SubflowId) {
        if self.syn_data.is_some_and(|(s, _)| s == id) {
            self.syn_data = None;
        }
    }
}

//! Input processing: RFC 9293 §3.10.7 "SEGMENT ARRIVES" with RFC 5961 (challenge ACKs), RFC 7323
//! (PAWS, TS.Recent), the ACK processing that feeds loss recovery (`recovery.rs`: RFC 2018/6675
//! SACK, RFC 6582 NewReno, RFC 6937 PRR), data and FIN (`recv.rs`), and the timers (RFC 6298
//! retransmission, persist, keep-alive, delayed ACK, TIME-WAIT).

use std::time::Duration;

use super::conn::{
    Connection, EV_CLOSED, EV_CONNECTED, EV_PEER_CLOSED, EV_READABLE, EV_RESET, EV_TIMED_OUT, EV_WRITABLE,
};
use super::recovery::Phase;
use super::rtt::RttEstimator;
use super::timer::Timer;
use super::{InSegment, NoHook, OptionHook, State};
use crate::time::Instant;
use crate::wire::tcp::SegmentHeader;

impl Connection {
    /// [`handle_segment_with`](Self::handle_segment_with) without an option hook.
    pub fn handle_segment(&mut self, now: Instant, hdr: &SegmentHeader, payload: &[u8]) {
        self.handle_segment_with(now, hdr, payload, &mut NoHook);
    }

    /// Processes one segment of this connection (parsed and checksum-verified by the caller).
    /// Segments larger than the MSS (GRO, large-MTU TUN) are accepted.
    pub fn handle_segment_with<H: OptionHook>(
        &mut self,
        now: Instant,
        hdr: &SegmentHeader,
        payload: &[u8],
        hook: &mut H,
    ) {
        match self.state {
            State::Closed => return,
            State::SynSent => return self.on_segment_syn_sent(now, hdr, payload, hook),
            _ => {}
        }
        let f = hdr.flags;
        if self.state == State::SynReceived && f.syn() && hdr.seq == self.rcv.irs() {
            if f.ack() && !f.rst() && self.snd.off(hdr.ack) == 1 {
                // Simultaneous open (RFC 9293 §3.5 figure 8): the peer's SYN-ACK completes ours.
                self.snd.on_syn_acked();
                self.snd.set_window(u64::from(hdr.window));
                self.become_established(now);
                self.rcv.set_ack_now();
            } else if !f.ack() && !f.rst() {
                // A retransmitted SYN: our SYN-ACK was lost; send it again.
                self.snd.resend_syn();
            }
            return;
        }
        // RFC 7323 §5.3 R1: PAWS runs before the sequence-number check.
        if self.ts_ok && !f.rst() {
            match hdr.options.timestamps {
                // RFC 7323 §3.2: a non-RST segment without TSopt SHOULD be silently dropped.
                None => return,
                Some(ts) => {
                    if self.rcv.paws_rejects(ts.val, now) {
                        // RFC 7323 §5.3 R1: "send an acknowledgment in reply ... and drop the segment".
                        self.rcv.set_ack_now();
                        return;
                    }
                }
            }
        }
        let seg_off = self.rcv.off(hdr.seq);
        let rcv_nxt = self.rcv.nxt() as i64;
        let wnd = self.rcv.window() as i64;
        let seg_len = payload.len() as i64 + i64::from(f.syn()) + i64::from(f.fin());
        // RFC 9293 §3.10.7.4 first: the four acceptability cases.
        let in_wnd = |x: i64| rcv_nxt <= x && x < rcv_nxt + wnd;
        let acceptable = match (seg_len, wnd) {
            (0, 0) => seg_off == rcv_nxt,
            (0, _) => in_wnd(seg_off),
            (_, 0) => false,
            _ => in_wnd(seg_off) || in_wnd(seg_off + seg_len - 1),
        };
        if !acceptable {
            // "If an incoming segment is not acceptable, an acknowledgment should be sent in reply
            // (unless the RST bit is set ...)".
            if !f.rst() {
                if seg_len > 0 {
                    self.rcv.set_ack_now();
                } else {
                    // An out-of-window pure ACK: answer, but rate-limited (as RFC 5961 §7 does for
                    // challenge ACKs) so two confused ends cannot ping-pong ACKs forever.
                    self.challenge_ack(now);
                }
                if self.state == State::TimeWait && f.fin() {
                    // §3.10.7.4 eighth: a retransmitted FIN restarts the TIME-WAIT timeout.
                    self.timers.set(Timer::TimeWait, now + self.cfg.time_wait);
                }
                // "If the RCV.WND is zero ... special allowance should be made to accept valid ACKs".
                if wnd == 0 && seg_off == rcv_nxt && f.ack() && !f.syn() {
                    self.process_ack(now, hdr, 0, seg_off);
                }
            }
            return;
        }
        // RFC 5961 §3.2 (RFC 9293 §3.10.7.4 second): a RST is acted on only if its sequence number
        // exactly matches RCV.NXT; one merely in the window draws a challenge ACK.
        if f.rst() {
            if seg_off == rcv_nxt {
                self.on_reset();
            } else {
                self.challenge_ack(now);
            }
            return;
        }
        // RFC 5961 §4.2 (RFC 9293 §3.10.7.4 fourth): a SYN in a synchronized state draws a
        // challenge ACK and is dropped.
        if f.syn() {
            self.challenge_ack(now);
            return;
        }
        // Fifth: segments without ACK are dropped.
        if !f.ack() {
            return;
        }
        // RFC 7323 §4.3 (3): TS.Recent <- SEG.TSval if SEG.TSval >= TS.Recent and
        // SEG.SEQ <= Last.ACK.sent.
        if self.ts_ok
            && let Some(ts) = hdr.options.timestamps
        {
            self.rcv.update_ts_recent(ts.val, seg_off, now);
        }
        let ins = self.in_segment(hdr, payload.len());
        hook.on_segment(hdr, &ins);
        self.on_alive(now);
        if self.state == State::SynReceived {
            // §3.10.7.4 fifth, SYN-RECEIVED: if SND.UNA < SEG.ACK =< SND.NXT enter ESTABLISHED,
            // else send <SEQ=SEG.ACK><CTL=RST>.
            let a = self.snd.off(hdr.ack);
            if a == 1 && self.snd.nxt() == 1 {
                self.snd.set_wl(0, 0);
                self.become_established(now);
            } else {
                self.rst_pending = Some(hdr.ack);
                return;
            }
        }
        if !self.process_ack(now, hdr, payload.len(), seg_off) {
            return;
        }
        self.process_data_and_fin(now, hdr, payload, seg_off - 1);
    }

    fn in_segment(&self, hdr: &SegmentHeader, payload_len: usize) -> InSegment {
        InSegment {
            seq: hdr.seq + u32::from(hdr.flags.syn()),
            payload_len,
            state: self.state,
        }
    }

    fn on_segment_syn_sent<H: OptionHook>(
        &mut self,
        now: Instant,
        hdr: &SegmentHeader,
        payload: &[u8],
        hook: &mut H,
    ) {
        let f = hdr.flags;
        // RFC 9293 §3.10.7.3 first: if SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless
        // RST) and drop.
        let ack_off = if f.ack() {
            let a = self.snd.off(hdr.ack);
            if a <= 0 || a > self.snd.syn_ack_limit() as i64 {
                if !f.rst() {
                    self.rst_pending = Some(hdr.ack);
                }
                return;
            }
            Some(a as u64)
        } else {
            None
        };
        let ack_ok = ack_off.is_some();
        // Second: a RST is accepted only if its ACK acknowledges our SYN (RFC 5961 §3.2 notes this
        // is the SYN-SENT rule); otherwise it is dropped.
        if f.rst() {
            if ack_ok {
                self.enter_closed();
                self.emit_event(EV_RESET);
            }
            return;
        }
        if !f.syn() {
            return;
        }
        // Fourth: the peer's SYN.
        self.rcv.on_syn(hdr.seq);
        self.on_syn_options(now, hdr);
        // RFC 7323 §2.2: the window field of a SYN is not scaled.
        self.snd.open_window(hdr.window);
        self.snd.set_wl(0, 0);
        let ins = self.in_segment(hdr, payload.len());
        hook.on_segment(hdr, &ins);
        if let Some(ack_off) = ack_off {
            // RFC 7413 §4.2.2 "Client: Receiving SYN-ACK": the SYN-ACK may acknowledge all, part
            // or none of the data our SYN carried; the rest is sent again (as a retransmission)
            // after the handshake.
            let data_acked = self.snd.on_syn_ack(ack_off);
            if data_acked > 0 && self.snd.take_writable() {
                self.emit_event(EV_WRITABLE);
            }
            self.snd.set_wl(0, ack_off);
            if let Some((1, sent)) = self.snd.take_timing() {
                self.rtt.on_sample(now - sent);
            }
            self.timers.stop(Timer::Retransmit);
            self.become_established(now);
            self.rcv.set_ack_now();
            self.on_alive(now);
            self.process_data_and_fin(now, hdr, payload, 0);
        } else {
            // Simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment and send it".
            self.state = State::SynReceived;
            self.snd.resend_syn();
            self.timers.stop(Timer::Retransmit);
        }
    }

    fn become_established(&mut self, now: Instant) {
        // A close() during the handshake queued a FIN: continue in FIN-WAIT-1 (RFC 9293 §3.10.4).
        self.state = if self.snd.fin_queued() {
            State::FinWait1
        } else {
            State::Established
        };
        self.emit_event(EV_CONNECTED);
        self.timers.stop(Timer::Retransmit);
        if self.rto_count > 0 && self.rtt.srtt().is_none() {
            // RFC 6298 §5.7: after a SYN timeout with no measurement the RTO MUST be
            // re-initialized to 3 s when data transmission begins.
            self.rtt = RttEstimator::new(Duration::from_secs(3), self.cfg.min_rto, self.cfg.max_rto);
        }
        self.rto_count = 0;
        self.last_progress = now;
        self.on_alive(now);
    }

    /// Any acceptable segment: the peer is alive (keep-alive restarts, RFC 9293 §3.8.4).
    fn on_alive(&mut self, now: Instant) {
        self.last_recv = now;
        self.keepalive_sent = 0;
        if let Some(k) = self.cfg.keepalive
            && self.state.is_synchronized()
        {
            self.timers.set(Timer::Keepalive, now + k.idle);
        }
    }

    fn on_reset(&mut self) {
        // RFC 9293 §3.10.7.4 second: in every state the connection goes to CLOSED; users are told
        // "connection reset" except in CLOSING/LAST-ACK/TIME-WAIT.
        let ev = match self.state {
            State::Closing | State::LastAck | State::TimeWait => EV_CLOSED,
            _ => EV_RESET,
        };
        self.enter_closed();
        self.emit_event(ev);
    }

    /// RFC 5961 §7: challenge ACKs are rate-limited.
    fn challenge_ack(&mut self, now: Instant) {
        if now - self.challenge_window >= Duration::from_secs(1) {
            self.challenge_window = now;
            self.challenge_count = 0;
        }
        if self.challenge_count < self.cfg.challenge_ack_limit {
            self.challenge_count += 1;
            self.rcv.set_ack_now();
        }
    }

    /// RFC 9293 §3.10.7.4 fifth (ACK processing). Returns false if the segment must be dropped.
    fn process_ack(&mut self, now: Instant, hdr: &SegmentHeader, payload_len: usize, seg_off: i64) -> bool {
        let ack_off = self.snd.off(hdr.ack);
        if ack_off > self.snd.max_sent() as i64 {
            // "If the ACK acks something not yet sent (SEG.ACK > SND.NXT), then send an ACK, drop
            // the segment, and return."
            self.rcv.set_ack_now();
            return false;
        }
        // RFC 5961 §5.2: the ACK value MUST be within [SND.UNA - MAX.SND.WND, SND.NXT]; otherwise
        // send an ACK (rate-limited challenge) and drop.
        if ack_off < self.snd.una() as i64 - self.snd.max_wnd() as i64 {
            self.challenge_ack(now);
            return false;
        }
        let ack_off = ack_off.max(0) as u64;
        self.snd.pacer.on_ack(now, self.cfg.initial_window);
        let (una_before, sacked_before) = (self.snd.una(), self.recovery.sacked_bytes());
        let mut sack_new = 0;
        if self.sack_ok {
            // RFC 2018 §4 / RFC 6675 §3: record SACK blocks in the scoreboard.
            for b in hdr.options.sack_blocks() {
                let (l, r) = (self.snd.off(b.left), self.snd.off(b.right));
                if l >= 0 && r > l {
                    let una = self.snd.una().max(ack_off);
                    sack_new += self
                        .recovery
                        .on_sack_block(l as u64, r as u64, una, self.snd.max_sent());
                }
            }
        }
        let new_wnd = u64::from(hdr.window) << self.snd.wscale();
        if ack_off > self.snd.una() {
            self.on_new_ack(now, hdr, ack_off);
            // RFC 6675 §5: the scoreboard was updated; if it already shows SND.UNA's segment as
            // lost (IsLost(HighACK + 1)), loss recovery starts without waiting for more ACKs.
            if sack_new > 0
                && self.recovery.phase() == Phase::None
                && self.snd.has_outstanding()
                && self
                    .recovery
                    .check_sack_loss(now, self.snd.una(), self.snd.max_sent())
            {
                self.snd.stop_timing();
            }
        } else if ack_off == self.snd.una()
            && payload_len == 0
            && !hdr.flags.fin()
            && self.snd.has_outstanding()
            && (new_wnd == self.snd.wnd() || sack_new > 0)
        {
            // RFC 5681 §2: a duplicate ACK.
            if self.recovery.on_dupack(now, self.snd.una(), self.snd.max_sent()) {
                self.snd.stop_timing();
            }
        }
        self.snd.update_window(seg_off, ack_off, new_wnd);
        if self.snd.wnd() > 0 {
            self.timers.stop(Timer::Persist);
            self.snd.reset_persist_backoff();
        }
        self.recovery
            .on_ack_delivered(una_before, self.snd.una(), sacked_before, self.snd.max_sent());
        let fin_acked = self.snd.fin_acked();
        match self.state {
            // §3.10.7.4 fifth, FIN-WAIT-1: "if the FIN segment is now acknowledged, then enter
            // FIN-WAIT-2 and continue processing".
            State::FinWait1 if fin_acked => self.state = State::FinWait2,
            // CLOSING: "if the ACK acknowledges our FIN, then enter the TIME-WAIT state".
            State::Closing if fin_acked => self.enter_time_wait(now),
            // LAST-ACK: "if our FIN is now acknowledged, delete the TCB, enter the CLOSED state".
            State::LastAck if fin_acked => {
                self.enter_closed();
                self.emit_event(EV_CLOSED);
                return false;
            }
            _ => {}
        }
        true
    }

    /// An ACK advancing SND.UNA to `ack_off`: RTT sample, buffer release, window growth or
    /// recovery progress, the retransmission timer.
    fn on_new_ack(&mut self, now: Instant, hdr: &SegmentHeader, ack_off: u64) {
        let flight_before = self.snd.nxt().max(ack_off) - self.snd.una();
        let wnd_before = self.snd.wnd();
        // RTT measurement: the timed segment (Karn: never a retransmitted one), or RFC 7323 §4
        // RTTM from TSecr when retransmissions made the timing ambiguous.
        if let Some(sent) = self.snd.take_sample(ack_off) {
            self.rtt.on_sample(now - sent);
        } else if self.ts_ok
            && (self.recovery.in_recovery() || !self.snd.timing())
            && let Some(ts) = hdr.options.timestamps
            && ts.ecr != 0
        {
            let ms = self.ts_now(now).wrapping_sub(ts.ecr);
            if ms < 60_000 && self.rtt.srtt().is_none_or(|_| self.recovery.in_recovery()) {
                self.rtt.on_sample(Duration::from_millis(u64::from(ms)));
            }
        }
        // RFC 9438 §4.6: an implementation that derives ssthresh from cwnd (as `Cubic` does)
        // "MUST use other measures to prevent cwnd from growing when the volume of bytes in
        // flight is smaller than cwnd", which "also effectively avoids cwnd from growing beyond
        // the receive window". cwnd grows only if the flight nearly filled it and the peer's
        // window did not hold the sender back.
        let cwnd = u64::from(self.recovery.cwnd());
        let limited = flight_before + 3 * u64::from(self.recovery.mss()) >= cwnd && cwnd < wnd_before;
        let data_acked = self.snd.on_ack(ack_off);
        self.recovery.on_cumulative_ack(ack_off);
        self.rto_count = 0;
        self.last_progress = now;
        self.rtt.reset_backoff();
        // Window arithmetic counts data bytes (SYN and FIN occupy sequence space, not the pipe).
        let acked32 = u32::try_from(data_acked).unwrap_or(u32::MAX);
        let srtt = self.rtt.srtt();
        self.recovery
            .on_new_ack(now, ack_off, self.snd.flight(), acked32, srtt, limited);
        // RFC 6298 §5.2: all outstanding data acknowledged: turn off the timer; §5.3: new data
        // acknowledged: restart it.
        if self.snd.has_outstanding() {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        } else {
            self.timers.stop(Timer::Retransmit);
        }
        self.snd.reset_persist_backoff();
        if self.snd.take_writable() {
            self.emit_event(EV_WRITABLE);
        }
    }

    fn process_data_and_fin(&mut self, now: Instant, hdr: &SegmentHeader, payload: &[u8], data_off: i64) {
        let receiving = matches!(self.state, State::Established | State::FinWait1 | State::FinWait2);
        let mut fin_in_window = hdr.flags.fin();
        if receiving && !payload.is_empty() {
            let r = self
                .rcv
                .on_data(data_off, payload, self.cfg.mss, self.cfg.delayed_ack.is_zero());
            fin_in_window &= r.within_buffer;
            if r.readable {
                self.emit_event(EV_READABLE);
            }
            if r.delay_ack && !self.timers.is_set(Timer::DelayedAck) {
                self.timers.set(Timer::DelayedAck, now + self.cfg.delayed_ack);
            }
        }
        if fin_in_window {
            self.rcv
                .on_fin((data_off + 1 + payload.len() as i64).max(0) as u64);
        }
        // §3.10.7.4 eighth: the FIN is processed once everything before it arrived.
        if receiving && self.rcv.take_fin() {
            self.emit_event(EV_PEER_CLOSED);
            let fin_acked = self.snd.fin_acked();
            match self.state {
                State::Established => self.state = State::CloseWait,
                // FIN-WAIT-1: "If our FIN has been ACKed ... enter TIME-WAIT ...; otherwise, enter
                // the CLOSING state."
                State::FinWait1 if fin_acked => self.enter_time_wait(now),
                State::FinWait1 => self.state = State::Closing,
                State::FinWait2 => self.enter_time_wait(now),
                _ => {}
            }
        }
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.timers.clear();
        // RFC 9293 §3.10.7.4: "start the time-wait timer" (2 MSL; configurable here).
        self.timers.set(Timer::TimeWait, now + self.cfg.time_wait);
    }

    /// Runs the timers that expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_expired(now) {
            match t {
                Timer::Retransmit => self.on_rto(now),
                Timer::DelayedAck => self.rcv.set_ack_now(),
                Timer::Persist => self.snd.on_persist_timeout(),
                Timer::Keepalive => self.on_keepalive(now),
                Timer::TimeWait => {
                    self.enter_closed();
                    self.emit_event(EV_CLOSED);
                }
                Timer::Pacing => {}
            }
        }
    }

    fn timed_out(&mut self) {
        self.enter_closed();
        self.emit_event(EV_TIMED_OUT);
    }

    fn on_rto(&mut self, now: Instant) {
        match self.state {
            State::SynSent | State::SynReceived => {
                self.rto_count += 1;
                if self.rto_count > self.cfg.syn_retries {
                    return self.timed_out();
                }
                // RFC 6298 §5.5 back off and retransmit the SYN (SYN-ACK).
                self.rtt.back_off();
                self.snd.stop_timing();
                self.snd.resend_syn();
            }
            State::Closed | State::TimeWait => {}
            _ => {
                if !self.snd.has_outstanding() {
                    return;
                }
                self.rto_count += 1;
                // RFC 9293 §3.8.3: after R2 retransmissions, close the connection.
                if self.rto_count > self.cfg.data_retries {
                    return self.timed_out();
                }
                self.recovery.on_rto(now, self.snd.una(), self.snd.max_sent());
                // RFC 6298 §5.4: retransmit the earliest segment not yet acknowledged (go-back-N
                // from SND.UNA under the loss window); §5.5: back off the timer.
                self.snd.rewind();
                self.rtt.back_off();
                self.snd.stop_timing();
            }
        }
    }

    fn on_keepalive(&mut self, now: Instant) {
        let Some(k) = self.cfg.keepalive else { return };
        if !matches!(self.state, State::Established | State::CloseWait) {
            return;
        }
        if self.snd.has_outstanding() {
            // Data outstanding: the retransmission timer watches the peer.
            self.timers.set(Timer::Keepalive, now + k.idle);
            return;
        }
        if self.keepalive_sent >= k.probes {
            return self.timed_out();
        }
        // RFC 9293 §3.8.4: a probe with SEG.SEQ = SND.NXT-1 and no data.
        self.keepalive_sent += 1;
        self.snd.request_probe(false);
        self.timers.set(Timer::Keepalive, now + k.interval);
    }
}

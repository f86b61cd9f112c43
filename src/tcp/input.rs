//! Input processing: RFC 9293 §3.10.7 "SEGMENT ARRIVES" with RFC 5961 (challenge ACKs), RFC 7323
//! (PAWS, TS.Recent), RFC 2018/6675 (SACK scoreboard, loss recovery), RFC 6582 (NewReno), and the
//! timers (RFC 6298 retransmission, persist, keep-alive, delayed ACK, TIME-WAIT).

use std::time::Duration;

use super::conn::{
    Connection, EV_CLOSED, EV_CONNECTED, EV_PEER_CLOSED, EV_READABLE, EV_RESET, EV_TIMED_OUT, EV_WRITABLE,
    Recovery,
};
use super::rtt::RttEstimator;
use super::timer::Timer;
use super::{NoHook, OptionHook, State};
use crate::time::Instant;
use crate::wire::tcp::SegmentHeader;

/// RFC 7323 §5.5: TS.Recent is invalid after 24 days of idleness.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

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
        if self.state == State::SynReceived && f.syn() && hdr.seq == self.irs {
            if f.ack() && !f.rst() && self.snd_off(hdr.ack) == 1 {
                // Simultaneous open (RFC 9293 §3.5 figure 8): the peer's SYN-ACK completes ours.
                self.snd_una = 1;
                self.snd_wnd = u64::from(hdr.window);
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.become_established(now);
                self.ack_now = true;
            } else if !f.ack() && !f.rst() {
                // A retransmitted SYN: our SYN-ACK was lost; send it again.
                self.snd_nxt = 0;
            }
            return;
        }
        // RFC 7323 §5.3 R1: PAWS runs before the sequence-number check.
        if self.ts_ok && !f.rst() {
            match hdr.options.timestamps {
                // RFC 7323 §3.2: a non-RST segment without TSopt SHOULD be silently dropped.
                None => return,
                Some(ts) => {
                    let older = (ts.val.wrapping_sub(self.ts_recent) as i32) < 0;
                    if older && now - self.ts_recent_at < PAWS_IDLE {
                        // RFC 7323 §5.3 R1: "send an acknowledgment in reply ... and drop the segment".
                        self.ack_now = true;
                        return;
                    }
                }
            }
        }
        let seg_off = self.rcv_off(hdr.seq);
        let rcv_nxt = self.rcv_nxt() as i64;
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
                    self.ack_now = true;
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
            && (ts.val.wrapping_sub(self.ts_recent) as i32) >= 0
            && seg_off <= self.last_ack_sent as i64
        {
            self.ts_recent = ts.val;
            self.ts_recent_at = now;
        }
        let ins = self.in_segment(hdr, payload.len());
        hook.on_segment(hdr, &ins);
        self.on_alive(now);
        if self.state == State::SynReceived {
            // §3.10.7.4 fifth, SYN-RECEIVED: if SND.UNA < SEG.ACK =< SND.NXT enter ESTABLISHED,
            // else send <SEQ=SEG.ACK><CTL=RST>.
            let a = self.snd_off(hdr.ack);
            if a == 1 && self.snd_nxt == 1 {
                self.snd_wl1 = 0;
                self.snd_wl2 = 0;
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
        let ack_ok = if f.ack() {
            let a = self.snd_off(hdr.ack);
            if a <= 0 || a > self.snd_nxt as i64 {
                if !f.rst() {
                    self.rst_pending = Some(hdr.ack);
                }
                return;
            }
            true
        } else {
            false
        };
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
        self.irs = hdr.seq;
        self.syn_received = true;
        self.on_syn_options(now, hdr);
        // RFC 7323 §2.2: the window field of a SYN is not scaled.
        self.snd_wnd = u64::from(hdr.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = 0;
        self.snd_wl2 = 0;
        self.rcv_adv = self.rcv_nxt() + self.rcv.window() as u64;
        let ins = self.in_segment(hdr, payload.len());
        hook.on_segment(hdr, &ins);
        if ack_ok {
            self.snd_una = 1;
            self.snd_wl2 = 1;
            if let Some((1, sent)) = self.rtt_probe.take() {
                self.rtt.on_sample(now - sent);
            }
            self.timers.stop(Timer::Retransmit);
            self.become_established(now);
            self.ack_now = true;
            self.on_alive(now);
            self.process_data_and_fin(now, hdr, payload, 0);
        } else {
            // Simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment and send it".
            self.state = State::SynReceived;
            self.snd_nxt = 0;
            self.timers.stop(Timer::Retransmit);
        }
    }

    fn become_established(&mut self, now: Instant) {
        // A close() during the handshake queued a FIN: continue in FIN-WAIT-1 (RFC 9293 §3.10.4).
        self.state = if self.fin_queued {
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
    pub(super) fn challenge_ack(&mut self, now: Instant) {
        if now - self.challenge_window >= Duration::from_secs(1) {
            self.challenge_window = now;
            self.challenge_count = 0;
        }
        if self.challenge_count < self.cfg.challenge_ack_limit {
            self.challenge_count += 1;
            self.ack_now = true;
        }
    }

    /// RFC 9293 §3.10.7.4 fifth (ACK processing). Returns false if the segment must be dropped.
    fn process_ack(&mut self, now: Instant, hdr: &SegmentHeader, payload_len: usize, seg_off: i64) -> bool {
        let ack_off = self.snd_off(hdr.ack);
        if ack_off > self.snd_max as i64 {
            // "If the ACK acks something not yet sent (SEG.ACK > SND.NXT), then send an ACK, drop
            // the segment, and return."
            self.ack_now = true;
            return false;
        }
        // RFC 5961 §5.2: the ACK value MUST be within [SND.UNA - MAX.SND.WND, SND.NXT]; otherwise
        // send an ACK (rate-limited challenge) and drop.
        if ack_off < self.snd_una as i64 - self.max_snd_wnd as i64 {
            self.challenge_ack(now);
            return false;
        }
        let ack_off = ack_off.max(0) as u64;
        // An acceptable ACK clocks out a new (bounded) burst, see `after_paced_send`, unless the
        // rest of an earlier burst is still being paced out (ACKs arriving meanwhile would
        // otherwise release IW segments each, a burst again when they come back to back).
        if now >= self.pace_next {
            self.burst_budget = self.cfg.initial_window.max(1);
        }
        let (una_before, sacked_before) = (self.snd_una, self.scoreboard.sacked_bytes());
        let mut sack_new = 0;
        if self.sack_ok {
            // RFC 2018 §4 / RFC 6675 §3: record SACK blocks in the scoreboard.
            for b in hdr.options.sack_blocks() {
                let (l, r) = (self.snd_off(b.left), self.snd_off(b.right));
                if l >= 0 && r > l {
                    sack_new +=
                        self.scoreboard
                            .add(l as u64, r as u64, self.snd_una.max(ack_off), self.snd_max);
                }
            }
        }
        let new_wnd = u64::from(hdr.window) << self.snd_wscale;
        if ack_off > self.snd_una {
            self.on_new_ack(now, hdr, ack_off);
            // RFC 6675 §5: the scoreboard was updated; if it already shows SND.UNA's segment as
            // lost (IsLost(HighACK + 1)), loss recovery starts without waiting for more ACKs.
            if sack_new > 0 && self.recovery == Recovery::None && self.snd_max > self.snd_una {
                self.check_sack_loss(now);
            }
        } else if ack_off == self.snd_una
            && payload_len == 0
            && !hdr.flags.fin()
            && self.snd_max > self.snd_una
            && (new_wnd == self.snd_wnd || sack_new > 0)
        {
            // RFC 5681 §2: a duplicate ACK.
            self.on_dupack(now);
        }
        // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated. If (SND.WL1 <
        // SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)), set SND.WND <- SEG.WND ..."
        if ack_off >= self.snd_una {
            let wl1 = self.snd_wl1 as i64;
            if wl1 < seg_off || (wl1 == seg_off && self.snd_wl2 <= ack_off) {
                self.snd_wnd = new_wnd;
                self.max_snd_wnd = self.max_snd_wnd.max(new_wnd);
                self.snd_wl1 = seg_off.max(0) as u64;
                self.snd_wl2 = ack_off;
            }
        }
        if self.snd_wnd > 0 {
            self.timers.stop(Timer::Persist);
            self.persist_backoff = 0;
        }
        if self.recovery == Recovery::Fast && self.sack_ok {
            // RFC 6937 §3: DeliveredData = change in SND.UNA + change in SACKed bytes.
            let delivered = (self.snd_una - una_before) as i64 + self.scoreboard.sacked_bytes() as i64
                - sacked_before as i64;
            self.prr_on_ack(delivered.max(0) as u64);
        }
        let fin_acked = self.fin_queued && self.snd_una > self.data_end();
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

    fn on_new_ack(&mut self, now: Instant, hdr: &SegmentHeader, ack_off: u64) {
        let flight_before = self.snd_nxt.max(ack_off) - self.snd_una;
        let wnd_before = self.snd_wnd;
        // RTT measurement: the timed segment (Karn: never a retransmitted one), or RFC 7323 §4
        // RTTM from TSecr when retransmissions made the timing ambiguous.
        match self.rtt_probe {
            Some((end, sent)) if ack_off >= end => {
                self.rtt.on_sample(now - sent);
                self.rtt_probe = None;
            }
            _ => {
                if self.ts_ok
                    && (self.recovery != Recovery::None || self.rtt_probe.is_none())
                    && let Some(ts) = hdr.options.timestamps
                    && ts.ecr != 0
                {
                    let ms = self.ts_now(now).wrapping_sub(ts.ecr);
                    if ms < 60_000 && self.rtt.srtt().is_none_or(|_| self.recovery != Recovery::None) {
                        self.rtt.on_sample(Duration::from_millis(u64::from(ms)));
                    }
                }
            }
        }
        self.snd_una = ack_off;
        if self.snd_nxt < ack_off {
            self.snd_nxt = ack_off;
        }
        let data_to = ack_off.min(self.data_end());
        let mut data_acked = 0u64;
        if data_to > self.sbuf_base {
            data_acked = data_to - self.sbuf_base;
            self.sbuf.ack(data_acked as usize);
            self.sbuf_base = data_to;
        }
        self.scoreboard.on_cumulative_ack(ack_off);
        self.high_rxt = self.high_rxt.max(ack_off);
        self.dupacks = 0;
        self.rto_count = 0;
        self.last_progress = now;
        self.rtt.reset_backoff();
        let mss = self.win.mss;
        // Window arithmetic counts data bytes (SYN and FIN occupy sequence space, not the pipe).
        let acked32 = u32::try_from(data_acked).unwrap_or(u32::MAX);
        match self.recovery {
            Recovery::Fast => {
                if ack_off >= self.recover {
                    // RFC 6582 §3.2 step 6 (full ACK): cwnd = min(ssthresh, max(FlightSize, SMSS) +
                    // SMSS); RFC 6675 §5: recovery ends when RecoveryPoint is acknowledged.
                    let flight = u32::try_from(self.snd_nxt - self.snd_una).unwrap_or(u32::MAX);
                    self.win.cwnd = if self.sack_ok {
                        self.win.ssthresh
                    } else {
                        self.win.ssthresh.min(flight.max(mss) + mss)
                    };
                    self.recovery = Recovery::None;
                } else if !self.sack_ok {
                    // RFC 6582 §3.2 step 5 (partial ACK): retransmit the first unacknowledged
                    // segment, deflate cwnd by the amount acknowledged, add back one SMSS if at
                    // least one SMSS was acknowledged.
                    self.rtx_una = true;
                    self.win.cwnd = self.win.cwnd.saturating_sub(acked32);
                    if acked32 >= mss {
                        self.win.cwnd += mss;
                    }
                    self.win.cwnd = self.win.cwnd.max(mss);
                }
            }
            Recovery::Rto => {
                if ack_off >= self.recover {
                    self.recovery = Recovery::None;
                }
                let srtt = self.rtt.srtt();
                self.cc.on_ack(now, &mut self.win, acked32, srtt, true);
            }
            Recovery::None => {
                let cwnd = u64::from(self.win.cwnd);
                // RFC 9438 §4.6: an implementation that derives ssthresh from cwnd (as `Cubic`
                // does) "MUST use other measures to prevent cwnd from growing when the volume of
                // bytes in flight is smaller than cwnd", which "also effectively avoids cwnd from
                // growing beyond the receive window". cwnd grows only if the flight nearly filled
                // it and the peer's window did not hold the sender back.
                let limited = flight_before + 3 * u64::from(mss) >= cwnd && cwnd < wnd_before;
                let srtt = self.rtt.srtt();
                self.cc.on_ack(now, &mut self.win, acked32, srtt, limited);
            }
        }
        // RFC 6298 §5.2: all outstanding data acknowledged: turn off the timer; §5.3: new data
        // acknowledged: restart it.
        if self.snd_una >= self.snd_max {
            self.timers.stop(Timer::Retransmit);
        } else {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        self.persist_backoff = 0;
        if self.want_writable && self.sbuf.free() > 0 {
            self.want_writable = false;
            self.emit_event(EV_WRITABLE);
        }
    }

    fn on_dupack(&mut self, now: Instant) {
        self.dupacks += 1;
        match self.recovery {
            Recovery::Fast => {
                if !self.sack_ok {
                    // RFC 6582 §3.2 step 4: each further duplicate ACK inflates cwnd by SMSS.
                    self.win.cwnd = self.win.cwnd.saturating_add(self.win.mss);
                }
            }
            // RFC 6582 §4.1: no fast retransmit for duplicate ACKs below `recover` after a timeout.
            Recovery::Rto => {}
            Recovery::None => {
                // RFC 6675 §5: DupAcks >= DupThresh, or IsLost(HighACK + 1).
                let lost = self.sack_ok
                    && self.scoreboard.lost_boundary(self.cfg.dupthresh, self.win.mss) > self.snd_una;
                // RFC 6582 §3.2 step 2: only if the cumulative ACK covers more than `recover`.
                if (self.dupacks >= self.cfg.dupthresh || lost)
                    && (self.snd_una > self.recover || self.recover == 0)
                {
                    self.enter_fast_recovery(now);
                }
            }
        }
    }

    fn check_sack_loss(&mut self, now: Instant) {
        let lost = self.scoreboard.lost_boundary(self.cfg.dupthresh, self.win.mss) > self.snd_una;
        if lost && (self.snd_una > self.recover || self.recover == 0) {
            self.enter_fast_recovery(now);
        }
    }

    /// RFC 6937 §3 Proportional Rate Reduction (the reduction RFC 9438 §4.6 mentions as an
    /// alternative to an immediate one): during SACK recovery cwnd = pipe + sndcnt, so the sender
    /// transmits in proportion to what the receiver got (ssthresh / RecoverFS of it while pipe is
    /// above ssthresh) instead of sending cwnd - pipe at once whenever the scoreboard marks a run
    /// of holes lost — such a burst of retransmissions overflows the queue that just dropped
    /// the originals and loses the retransmissions too (then only the RTO repairs them).
    fn prr_on_ack(&mut self, delivered: u64) {
        self.prr_delivered += delivered;
        let pipe = self.pipe();
        let ssthresh = u64::from(self.win.ssthresh);
        let mss = u64::from(self.win.mss);
        let sndcnt = if pipe > ssthresh {
            // Proportional part: sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out.
            let fs = self.recover_fs.max(1);
            (self.prr_delivered * ssthresh)
                .div_ceil(fs)
                .saturating_sub(self.prr_out)
        } else {
            // Slow-start reduction bound (PRR-SSRB):
            // limit = MAX(prr_delivered - prr_out, DeliveredData) + MSS.
            let limit = self.prr_delivered.saturating_sub(self.prr_out).max(delivered) + mss;
            (ssthresh - pipe).min(limit)
        };
        self.win.cwnd = u32::try_from(pipe + sndcnt).unwrap_or(u32::MAX);
    }

    fn enter_fast_recovery(&mut self, now: Instant) {
        let flight = u32::try_from(self.snd_max - self.snd_una).unwrap_or(u32::MAX);
        // RFC 6937 §3: "At the beginning of recovery": prr_delivered = prr_out = 0,
        // RecoverFS = snd.nxt - snd.una.
        self.prr_delivered = 0;
        self.prr_out = 0;
        self.recover_fs = self.snd_max - self.snd_una;
        // RFC 6675 §5 step (4.1)/RFC 6582 §3.2 step 2: RecoveryPoint = HighData.
        self.recover = self.snd_max;
        self.cc.on_congestion(now, &mut self.win, flight);
        self.recovery = Recovery::Fast;
        self.high_rxt = self.snd_una;
        self.rtx_una = true;
        self.rtt_probe = None;
        if !self.sack_ok {
            // RFC 6582 §3.2 step 3: cwnd = ssthresh + 3*SMSS.
            self.win.cwnd = self.win.ssthresh + 3 * self.win.mss;
        }
    }

    fn process_data_and_fin(&mut self, now: Instant, hdr: &SegmentHeader, payload: &[u8], data_off: i64) {
        let receiving = matches!(self.state, State::Established | State::FinWait1 | State::FinWait2);
        let window_end = self.rcv.read_offset() + self.rcv.cap() as u64;
        let mut fin_in_window = hdr.flags.fin();
        if receiving && !payload.is_empty() {
            let skip = usize::try_from(-data_off).unwrap_or(0).min(payload.len());
            let mut data = &payload[skip..];
            let mut off = data_off.max(0) as u64;
            if let Some(fin) = self.rcv_fin {
                // Bytes past a FIN already seen are ignored.
                let limit = fin.saturating_sub(1).saturating_sub(off) as usize;
                data = &data[..data.len().min(limit)];
            }
            if off + data.len() as u64 > window_end {
                fin_in_window = false;
            }
            if data.is_empty() {
                off = 0;
            }
            let had_ooo = self.rcv.has_out_of_order();
            let ins = self.rcv.insert(off, data);
            let seen = u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .min(u32::from(self.cfg.mss));
            self.rcv_mss = self.rcv_mss.max(seen);
            if ins.advanced > 0 {
                self.emit_event(EV_READABLE);
            }
            if ins.out_of_order || had_ooo || ins.duplicate || self.cfg.delayed_ack.is_zero() {
                // RFC 5681 §4.2: an out-of-order segment or one filling a gap SHOULD be acknowledged
                // at once: one (duplicate) ACK per such segment, even if several arrive before the
                // next poll_transmit (the sender counts duplicate ACKs).
                if self.ack_now && (ins.out_of_order || ins.duplicate) {
                    self.extra_acks = (self.extra_acks + 1).min(3);
                }
                self.ack_now = true;
            } else {
                self.unacked_rcv = self.unacked_rcv.saturating_add(ins.advanced as u32);
                // RFC 9293 §3.8.6.3: an ACK SHOULD be generated for at least every second
                // full-sized segment, and MUST within 0.5 s.
                if self.unacked_rcv >= 2 * self.rcv_mss {
                    self.ack_now = true;
                } else if !self.timers.is_set(Timer::DelayedAck) {
                    self.timers.set(Timer::DelayedAck, now + self.cfg.delayed_ack);
                }
            }
        }
        if hdr.flags.fin() && fin_in_window && self.rcv_fin.is_none() {
            let fin_off = (data_off + 1 + payload.len() as i64).max(0) as u64;
            if fin_off >= self.rcv_nxt() {
                self.rcv_fin = Some(fin_off);
            }
        }
        // §3.10.7.4 eighth: the FIN is processed once everything before it arrived.
        if let Some(fin) = self.rcv_fin
            && !self.fin_received
            && self.rcv_nxt() == fin
            && matches!(self.state, State::Established | State::FinWait1 | State::FinWait2)
        {
            self.fin_received = true;
            self.ack_now = true;
            self.emit_event(EV_PEER_CLOSED);
            let fin_acked = self.fin_queued && self.snd_una > self.data_end();
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
                Timer::DelayedAck => self.ack_now = true,
                Timer::Persist => {
                    self.probe_pending = true;
                    self.persist_backoff = (self.persist_backoff + 1).min(10);
                }
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
                self.rtt_probe = None;
                self.snd_nxt = 0;
            }
            State::Closed | State::TimeWait => {}
            _ => {
                if self.snd_una >= self.snd_max {
                    return;
                }
                self.rto_count += 1;
                // RFC 9293 §3.8.3: after R2 retransmissions, close the connection.
                if self.rto_count > self.cfg.data_retries {
                    return self.timed_out();
                }
                let flight = u32::try_from(self.snd_max - self.snd_una).unwrap_or(u32::MAX);
                if self.recovery != Recovery::Rto {
                    // RFC 5681 §3.1: ssthresh is reduced on the first timeout only ("held constant"
                    // on repeated retransmissions of the same segment); cwnd = loss window.
                    self.cc.on_rto(now, &mut self.win, flight);
                } else {
                    self.win.cwnd = self.win.mss;
                }
                self.recovery = Recovery::Rto;
                self.recover = self.snd_max;
                self.dupacks = 0;
                self.rtx_una = false;
                self.high_rxt = self.snd_una;
                // RFC 2018 §8: after a retransmit timeout the sender SHOULD turn off SACKed bits.
                self.scoreboard.clear();
                // RFC 6298 §5.4: retransmit the earliest segment not yet acknowledged (go-back-N
                // from SND.UNA under the loss window); §5.5: back off the timer.
                self.snd_nxt = self.snd_una;
                self.rtt.back_off();
                self.rtt_probe = None;
            }
        }
    }

    fn on_keepalive(&mut self, now: Instant) {
        let Some(k) = self.cfg.keepalive else { return };
        if !matches!(self.state, State::Established | State::CloseWait) {
            return;
        }
        if self.snd_una < self.snd_max {
            // Data outstanding: the retransmission timer watches the peer.
            self.timers.set(Timer::Keepalive, now + k.idle);
            return;
        }
        if self.keepalive_sent >= k.probes {
            return self.timed_out();
        }
        // RFC 9293 §3.8.4: a probe with SEG.SEQ = SND.NXT-1 and no data.
        self.keepalive_sent += 1;
        self.probe_pending = true;
        self.timers.set(Timer::Keepalive, now + k.interval);
    }
}

//! The output path: `poll_transmit` picks the next segment due (a RST, the SYN or SYN-ACK, a
//! retransmission or new data under the windows and the pacer, a probe, a pure ACK) and `emit`
//! lays out its options, sizes its payload, lets the option hook write, and builds the packet.

use super::timer::Timer;
use super::{Connection, NoHook, OptionHook, OutSegment, SegmentPlan, SeqNum, State, Transmit};
use crate::time::Instant;
use crate::wire::tcp::{MAX_OPTIONS_LEN, OptionWriter, SegmentFields, TcpFlags, Timestamps};
use crate::wire::{write_tcp_packet, write_tcp_packet_with};

impl Connection {
    /// [`poll_transmit_with`](Self::poll_transmit_with) without an option hook.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.poll_transmit_with(now, buf, &mut NoHook)
    }

    /// Writes the next segment due (a whole IP packet) into `buf`.
    pub fn poll_transmit_with<H: OptionHook>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut H,
    ) -> Option<Transmit> {
        if let Some(seq) = self.rst_pending.take() {
            return self.write_rst(buf, hook, seq);
        }
        match self.state {
            State::Closed => return None,
            State::SynSent | State::SynReceived => {
                if self.snd.syn_due() {
                    let mut flags = TcpFlags::SYN;
                    if self.state == State::SynReceived {
                        flags |= TcpFlags::ACK;
                    }
                    let rtx = self.snd.syn_was_sent();
                    // RFC 7413 §4.2.2 "Client: Sending SYN" 1b: the first SYN carries the data
                    // queued so far, up to one MSS (`emit` sizes it); "when the SYN timer fires,
                    // the client SHOULD retransmit a SYN packet without data".
                    let queued = self.snd.queued() as u64;
                    let data = (self.cfg.fast_open && self.state == State::SynSent && !rtx && queued > 0)
                        .then_some(queued);
                    let t = self.emit(now, buf, hook, 0, flags, data, rtx)?;
                    // Time the SYN (Karn: not a retransmitted one); every SYN-ACK acknowledges it.
                    self.snd.set_timing(if rtx { None } else { Some((1, now)) });
                    // Step 2: SND.NXT includes the data.
                    self.snd.on_syn_sent(1 + t.payload_len as u64);
                    return Some(t);
                }
                return None;
            }
            _ => {}
        }
        if let Some(t) = self.transmit_data(now, buf, hook) {
            return Some(t);
        }
        if self.rcv.ack_now() {
            // A pure ACK carries the highest sequence number sent (SND.NXT may have been pulled back
            // by an RTO), so the peer finds it in its window (as Linux's tcp_acceptable_seq).
            let off = self.snd.max_sent().max(self.snd.nxt());
            return self.emit(now, buf, hook, off, TcpFlags::ACK, None, false);
        }
        if self.snd.take_probe() {
            // RFC 9293 §3.8.6.1 zero-window probe / §3.8.4 keep-alive: a segment the peer must
            // answer with an ACK carrying its window; SEG.SEQ = SND.UNA - 1 with no data.
            let off = self.snd.una().saturating_sub(1);
            let t = self.emit(now, buf, hook, off, TcpFlags::ACK, None, true);
            self.snd.probe_sent();
            return t;
        }
        None
    }

    /// Writes a RST with sequence number `seq`.
    fn write_rst<H: OptionHook>(&mut self, buf: &mut [u8], hook: &mut H, seq: SeqNum) -> Option<Transmit> {
        let f = SegmentFields {
            seq,
            flags: TcpFlags::RST,
            ..Default::default()
        };
        // RSTs carry no TCP options of ours, but the hook may add one (MPTCP's MP_TCPRST,
        // RFC 8684 §3.6).
        let mut opts = OptionWriter::new();
        let plan = SegmentPlan {
            flags: f.flags,
            has_payload: false,
            retransmission: false,
        };
        let space = hook.reserve(&plan).min(MAX_OPTIONS_LEN);
        if space > 0 {
            let out = OutSegment {
                seq,
                ack: f.ack,
                flags: f.flags,
                payload_len: 0,
                retransmission: false,
                probe: false,
            };
            let n = hook.write_options(&out, &mut opts.spare()[..space]);
            opts.advance(n.min(space));
        }
        let len =
            write_tcp_packet(buf, self.local, self.remote, &f, opts.bytes(), &[], self.ip_ident).ok()?;
        Some(Transmit {
            len,
            seq,
            payload_len: 0,
            flags: f.flags,
            retransmission: false,
            seg_payload: 0,
            csum_partial: false,
        })
    }

    fn sendable_state(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
        )
    }

    /// True if the pacer holds the next data segment back (the pacing timer is then armed).
    fn pacing_blocked(&mut self, now: Instant) -> bool {
        match self.snd.pacer.blocked(now, self.cfg.pacing, self.rtt.srtt()) {
            Some(at) => {
                self.timers.set(Timer::Pacing, at);
                true
            }
            None => false,
        }
    }

    /// A data segment of `bytes` payload left: the pacer accounts for it.
    fn after_paced_send(&mut self, now: Instant, bytes: usize) {
        let srtt = self.rtt.srtt();
        self.snd
            .pacer
            .on_sent(now, bytes, self.cfg.pacing, srtt, self.recovery.window());
    }

    fn transmit_data<H: OptionHook>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut H,
    ) -> Option<Transmit> {
        if !self.sendable_state() {
            return None;
        }
        let data_end = self.snd.data_end();
        let fin_end = self.snd.fin_end();
        let (una, max) = (self.snd.una(), self.snd.max_sent());
        // 1. Fast retransmit of SND.UNA (RFC 6675 §5 step 4.3, RFC 6582 §3.2 steps 3 and 5).
        if self.recovery.una_retransmit_due() && una < max {
            if self.pacing_blocked(now) {
                return None;
            }
            self.recovery.clear_una_retransmit();
            let end = data_end.min(max);
            let t = if una < end {
                self.emit(now, buf, hook, una, TcpFlags::ACK, Some(end - una), true)?
            } else {
                self.emit(now, buf, hook, una, TcpFlags::ACK | TcpFlags::FIN, None, true)?
            };
            self.after_paced_send(now, t.payload_len);
            self.recovery
                .on_una_retransmitted(una + t.payload_len as u64, t.payload_len);
            return Some(t);
        }
        let sack_recovery = self.recovery.sack_recovery();
        let flight = if sack_recovery {
            self.recovery.pipe(una, max)
        } else {
            self.snd.flight()
        };
        let cwnd = u64::from(self.recovery.cwnd());
        let seg = u64::from(self.recovery.mss());
        // 2. RFC 6675 §5 step (C): while cwnd - pipe >= 1 SMSS, NextSeg() rule 1: the first lost
        // hole above HighRxt.
        if sack_recovery {
            if flight + seg > cwnd {
                return None;
            }
            if let Some((a, b)) = self.recovery.next_lost_hole(una, max) {
                if self.pacing_blocked(now) {
                    return None;
                }
                let t = if a < data_end {
                    self.emit(now, buf, hook, a, TcpFlags::ACK, Some(b.min(data_end) - a), true)?
                } else {
                    self.emit(now, buf, hook, a, TcpFlags::ACK | TcpFlags::FIN, None, true)?
                };
                self.recovery.on_hole_retransmitted(a, t.payload_len);
                self.snd.stop_timing();
                self.after_paced_send(now, t.payload_len);
                return Some(t);
            }
        }
        // 3. New data (or data after SND.NXT was pulled back by an RTO), then the FIN.
        let nxt = self.snd.nxt();
        if nxt >= fin_end {
            return None;
        }
        let rtx = self.snd.resending();
        let avail = data_end.saturating_sub(nxt);
        if avail == 0 {
            // Only the FIN is left (it needs no window).
            let t = self.emit(now, buf, hook, nxt, TcpFlags::ACK | TcpFlags::FIN, None, rtx)?;
            self.snd.advance_to(fin_end);
            return Some(t);
        }
        let wnd_room = self.snd.window_room();
        let cwnd_room = cwnd.saturating_sub(flight);
        // A super-segment (when the interface cuts them) carries several segments' worth of new
        // data, still within both windows: it is as big as they allow and no bigger.
        let segs = if rtx { 1 } else { self.super_segment_count() as u64 };
        let len = avail.min(wnd_room).min(cwnd_room).min(seg * segs);
        if wnd_room == 0 {
            // RFC 9293 §3.8.6.1: the peer's window is closed with data waiting: probe on a timer
            // (the persist timer), backing off exponentially.
            if nxt == una && !self.timers.is_set(Timer::Persist) {
                let d = self
                    .rtt
                    .rto()
                    .saturating_mul(1 << self.snd.persist_backoff().min(10))
                    .min(self.cfg.max_rto);
                self.timers.set(Timer::Persist, now + d);
            }
            return None;
        }
        // RFC 9293 §3.8.6.2.1 sender SWS avoidance (and §3.7.4 Nagle when enabled): send a full
        // segment, or everything queued when nothing is outstanding (or Nagle is off), or at
        // least half the largest window the peer offered.
        let idle = nxt == una;
        let ok = len >= seg || idle || len >= self.snd.max_wnd() / 2 || (len == avail && !self.cfg.nagle);
        // Do not send a runt just because the congestion window has less than a segment left.
        let cwnd_runt = len < avail.min(seg) && len == cwnd_room && !idle;
        if len == 0 || !ok || cwnd_runt {
            return None;
        }
        if self.pacing_blocked(now) {
            return None;
        }
        if idle && !rtx && self.snd.pacer.idle(now) > self.rtt.rto() {
            // RFC 5681 §4.1: after an idle period longer than the RTO, cwnd SHOULD restart from
            // min(IW, cwnd) (the ACK clock is gone).
            self.recovery.restart_after_idle(self.cfg.initial_window);
        }
        let t = self.emit(now, buf, hook, nxt, TcpFlags::ACK, Some(len), rtx)?;
        let consumed = t.payload_len as u64 + u64::from(t.flags.fin());
        if rtx {
            self.snd.stop_timing();
        } else {
            self.snd.time_segment(nxt + consumed, now);
        }
        self.snd.advance_to(nxt + consumed);
        self.after_paced_send(now, t.payload_len);
        self.recovery.on_sent(t.payload_len);
        Some(t)
    }

    /// Lays out options, sizes the payload, calls the hook and writes the packet. `data` is the
    /// largest payload wanted from offset `off` (from `off + 1` on a SYN, whose data follows it);
    /// FIN is added when the payload reaches the end of queued data and a FIN is queued (and
    /// dropped from `flags` otherwise).
    #[expect(
        clippy::too_many_arguments,
        reason = "internal builder with one call site per kind"
    )]
    pub(super) fn emit<H: OptionHook>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hook: &mut H,
        off: u64,
        mut flags: TcpFlags,
        data: Option<u64>,
        rtx: bool,
    ) -> Option<Transmit> {
        let syn = flags.syn();
        // Offset of the first payload byte (a SYN occupies `off` itself).
        let data_off = off + u64::from(syn);
        let mut opts = OptionWriter::new();
        let ts = Timestamps {
            val: self.ts_now(now),
            ecr: if flags.ack() { self.rcv.ts_recent() } else { 0 },
        };
        if syn {
            opts.mss(self.cfg.mss);
            let active = self.state == State::SynSent;
            // RFC 7323 §2.2/§3.2, RFC 2018 §2: offer in a SYN; in a SYN-ACK only if the SYN had it.
            if self.cfg.window_scaling && (active || self.ws_ok) {
                opts.wscale(self.rcv.wscale());
            }
            let sack = self.cfg.sack && (active || self.sack_ok);
            let tsopt = self.cfg.timestamps && (active || self.ts_ok);
            match (sack, tsopt) {
                (true, true) => {
                    opts.sack_permitted_timestamps(ts);
                }
                (true, false) => {
                    opts.sack_permitted();
                }
                (false, true) => {
                    opts.timestamps(ts);
                }
                (false, false) => {}
            }
        } else if self.ts_ok {
            // RFC 7323 §3.2: once negotiated, TSopt MUST be sent in every non-RST segment.
            opts.timestamps(ts);
        }
        let plan = SegmentPlan {
            flags,
            has_payload: data.is_some_and(|d| d > 0),
            retransmission: rtx,
        };
        let reserve = hook.reserve(&plan).min(MAX_OPTIONS_LEN);
        // RFC 2018 §4: SACK blocks in ACKs while out-of-order data is held; fewer blocks if the hook
        // needs the room.
        if flags.ack() && self.sack_ok && !syn && self.rcv.has_out_of_order() {
            let room = MAX_OPTIONS_LEN.saturating_sub(opts.len() + reserve);
            let (blocks, fit) = self.rcv.sack_blocks(room.saturating_sub(4));
            opts.sack(&blocks[..fit]);
        }
        let mut payload_len = 0usize;
        let mut seg_room = usize::MAX;
        if let Some(max) = data {
            // RFC 9293 §3.7.1: the segment MUST fit the Eff.snd.MSS, whose TCPhdrsize counts the
            // options as sent: padded to a 32-bit boundary (§3.1), e.g. TS (12) + DSS without
            // checksum (26) occupy 40 bytes.
            let opt_space = (opts.len() + reserve).next_multiple_of(4).min(MAX_OPTIONS_LEN);
            let room = usize::from(self.eff_mss()).saturating_sub(opt_space).max(1);
            seg_room = room;
            // New data may fill a super-segment: `segs` segments of `room` bytes, each of which
            // gets these same headers and options when the interface cuts it (RFC 9293 §3.7.1
            // holds for every one of them).
            let segs = if rtx || syn { 1 } else { self.super_segment_count() };
            payload_len = (max as usize).min(room * segs);
            if payload_len > 1 {
                payload_len = hook
                    .limit_payload(self.snd.seq(data_off), payload_len)
                    .clamp(1, payload_len);
            }
        }
        // A probe is the one segment below SND.UNA (a pure ACK sent while a probe waits is none).
        let probe = !syn && off < self.snd.una();
        let garbage = probe && self.snd.garbage_probe() && data.is_none();
        if garbage {
            payload_len = 1;
        }
        let end = data_off + payload_len as u64;
        let data_end = self.snd.data_end();
        if garbage {
            flags = TcpFlags(flags.0 & !TcpFlags::FIN.0);
        } else if self.snd.fin_queued() && end == data_end && !syn && (flags.fin() || data.is_some()) {
            flags |= TcpFlags::FIN;
        } else {
            flags = TcpFlags(flags.0 & !TcpFlags::FIN.0);
        }
        if payload_len > 0 && !garbage && !syn && !flags.fin() && end == data_end {
            flags |= TcpFlags::PSH;
        }
        let rcv_nxt = self.rcv.nxt();
        let seq = self.snd.seq(off);
        let ack = if flags.ack() {
            self.rcv.seq(rcv_nxt)
        } else {
            SeqNum(0)
        };
        // The hook sees a probe's garbage octet as no payload, as it was planned (`reserve`
        // above): the octet is no stream data to map. The peer drops a probe unprocessed
        // (it is out of its window on purpose), so a signal the hook has to send (REMOVE_ADDR,
        // MP_PRIO) must not ride on it (`OutSegment::probe`): it goes on the pure ACK sent
        // before the probe when both are due (`poll_transmit`).
        let out = OutSegment {
            seq,
            ack,
            flags,
            payload_len: if garbage { 0 } else { payload_len },
            retransmission: rtx,
            probe,
        };
        let space = reserve.min(opts.remaining());
        if space > 0 {
            let n = hook.write_options(&out, &mut opts.spare()[..space]);
            opts.advance(n.min(space));
        }
        let window = if syn {
            // RFC 7323 §2.2: the window field of a SYN or SYN-ACK is not scaled.
            self.rcv.syn_window()
        } else {
            self.rcv.advertise_window()
        };
        let (a, b) = if garbage {
            (&[0u8][..], &[][..])
        } else if payload_len > 0 {
            self.snd.payload(data_off, payload_len)
        } else {
            (&[][..], &[][..])
        };
        let f = SegmentFields {
            seq,
            ack,
            flags,
            window,
            ..Default::default()
        };
        let seg_payload = if payload_len > seg_room { seg_room } else { 0 };
        let csum_partial = seg_payload > 0 || (self.cfg.partial_checksums && payload_len > 0);
        // A super-segment's checksums are computed where it is cut (the kernel or the NIC,
        // or `wire::gso`): only the pseudo-header sum here.
        let len = write_tcp_packet_with(
            buf,
            self.local,
            self.remote,
            &f,
            opts.bytes(),
            &[a, b],
            self.ip_ident,
            csum_partial,
        )
        .ok()?;
        // Each segment cut from a super-segment takes the next IPv4 identification.
        let segments = crate::wire::gso::segment_count(payload_len, seg_room);
        self.ip_ident = self.ip_ident.wrapping_add(segments as u16);
        if flags.ack() {
            self.rcv.on_ack_sent(rcv_nxt);
            self.timers.stop(Timer::DelayedAck);
        }
        // The garbage octet of a probe is no data: nothing to time or retransmit.
        let data_len = if garbage { 0 } else { payload_len };
        if data_len > 0 {
            self.snd.pacer.on_data_sent(now);
        }
        let consumes = data_len > 0 || syn || flags.fin();
        // RFC 6298 §5.1: every time a segment containing data (SYN/FIN included) is sent, start the
        // timer if it is not running.
        if consumes && !self.timers.is_set(Timer::Retransmit) {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        if consumes {
            self.timers.stop(Timer::Persist);
        }
        Some(Transmit {
            len,
            seq,
            payload_len,
            flags,
            retransmission: rtx,
            seg_payload,
            csum_partial,
        })
    }
}

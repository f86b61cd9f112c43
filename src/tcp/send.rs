//! The send half of a connection: the send sequence space of RFC 9293 §3.3.1 (SND.UNA, SND.NXT,
//! SND.WND, SND.WL1/WL2 and the highest offset sent), the send buffer, the segment timed for an
//! RTT sample (Karn), the pending zero-window / keep-alive probe, and the pacing and burst limiter.
//!
//! Offsets are `u64` counts from the ISS: the SYN is 0, the first data byte is 1, a FIN follows
//! the last data byte. Wire sequence numbers come from [`SendState::seq`] / [`SendState::off`].

use std::time::Duration;

use super::SeqNum;
use super::cc::Window;
use super::send_buf::SendBuffer;
use crate::time::Instant;

/// Send sequence space and send buffer.
///
/// Invariants:
/// - `una <= max` and `nxt <= max`; `nxt >= una` except while the SYN is due again (`nxt == 0`
///   before it is (re)sent). An RTO pulls `nxt` back to `una` (go-back-N), `max` never decreases.
/// - The buffer holds the queued bytes `buf_base .. data_end()`; `buf_base` is 1 until data is
///   acknowledged, then the lower of SND.UNA and the end of the data (a FIN occupies the offset
///   `data_end()` and is not in the buffer).
/// - Once `fin_queued`, nothing more is accepted by [`push`](Self::push).
#[derive(Debug)]
pub(super) struct SendState {
    iss: SeqNum,
    una: u64,
    nxt: u64,
    max: u64,
    wnd: u64,
    max_wnd: u64,
    wl1: u64,
    wl2: u64,
    /// Shift applied to the peer's window field (RFC 7323 §2.3).
    wscale: u8,
    buf: SendBuffer,
    buf_base: u64,
    fin_queued: bool,
    /// `push` refused bytes: report [`super::Event::Writable`] once space frees.
    want_writable: bool,
    /// The segment timed for an RTT sample: (offset just past it, when it was sent). Karn: never a
    /// retransmitted one, so any retransmission clears it.
    rtt_probe: Option<(u64, Instant)>,
    /// Exponent of the persist timer's backoff (RFC 9293 §3.8.6.1), at most 10.
    persist_backoff: u32,
    /// A zero-window or keep-alive probe is due.
    probe_pending: bool,
    /// The pending probe carries one garbage octet (see [`super::Connection::send_probe`]).
    garbage_probe: bool,
    /// Pacing and the per-ACK burst limit.
    pub(super) pacer: Pacer,
}

impl SendState {
    pub(super) fn new(now: Instant, iss: SeqNum, buffer: usize, initial_window: u32) -> Self {
        SendState {
            iss,
            una: 0,
            nxt: 0,
            max: 0,
            wnd: 0,
            max_wnd: 0,
            wl1: 0,
            wl2: 0,
            wscale: 0,
            buf: SendBuffer::new(buffer),
            buf_base: 1,
            fin_queued: false,
            want_writable: false,
            rtt_probe: None,
            persist_backoff: 0,
            probe_pending: false,
            garbage_probe: false,
            pacer: Pacer::new(now, initial_window),
        }
    }

    // ------------------------------------------------------------------ sequence space

    /// Our initial sequence number.
    pub(super) fn iss(&self) -> SeqNum {
        self.iss
    }
    /// SND.UNA as an offset.
    pub(super) fn una(&self) -> u64 {
        self.una
    }
    /// SND.NXT as an offset.
    pub(super) fn nxt(&self) -> u64 {
        self.nxt
    }
    /// The highest offset sent so far (exclusive end; SND.NXT before any RTO pulled it back).
    pub(super) fn max_sent(&self) -> u64 {
        self.max
    }
    /// The wire sequence number of offset `off`.
    pub(super) fn seq(&self, off: u64) -> SeqNum {
        self.iss + off as u32
    }
    /// `seq` as an offset (relative to SND.UNA, so wrap-safe within 2^31).
    pub(super) fn off(&self, seq: SeqNum) -> i64 {
        self.una as i64 + i64::from(seq.diff(self.seq(self.una)))
    }
    /// Offset just past the last byte queued for sending.
    pub(super) fn data_end(&self) -> u64 {
        self.buf_base + self.buf.len() as u64
    }
    /// Offset just past everything to send, the FIN included.
    pub(super) fn fin_end(&self) -> u64 {
        self.data_end() + u64::from(self.fin_queued)
    }
    /// SND.NXT - SND.UNA: what the sender counts as in flight outside SACK recovery.
    pub(super) fn flight(&self) -> u64 {
        self.nxt - self.una
    }
    /// True if anything sent is not yet acknowledged.
    pub(super) fn has_outstanding(&self) -> bool {
        self.una < self.max
    }
    /// True while SND.NXT repeats offsets sent before (after an RTO pulled it back).
    pub(super) fn resending(&self) -> bool {
        self.nxt < self.max
    }

    // ------------------------------------------------------------------ handshake

    /// True if the SYN (or SYN-ACK) is due: never sent or pulled back for a retransmission.
    pub(super) fn syn_due(&self) -> bool {
        self.nxt == 0
    }
    /// True if a SYN was sent before (the next one is a retransmission).
    pub(super) fn syn_was_sent(&self) -> bool {
        self.max > 0
    }
    /// The SYN left, carrying data up to `end` (1 without data): the SYN occupies offset 0. A
    /// retransmitted SYN without data does not take back the data an earlier one carried.
    pub(super) fn on_syn_sent(&mut self, end: u64) {
        self.nxt = end;
        self.max = self.max.max(end);
    }
    /// The highest offset a SYN-ACK may acknowledge (RFC 9293 §3.10.7.3: SEG.ACK =< SND.NXT): the
    /// end of the data a SYN carried, once one did (RFC 7413), though a retransmitted SYN without
    /// data moved SND.NXT back to 1.
    pub(super) fn syn_ack_limit(&self) -> u64 {
        if self.max > 1 { self.max } else { self.nxt }
    }
    /// Sends the SYN (SYN-ACK) again on the next `poll_transmit`.
    pub(super) fn resend_syn(&mut self) {
        self.nxt = 0;
    }
    /// The peer's SYN-ACK (simultaneous open) acknowledged our SYN.
    pub(super) fn on_syn_acked(&mut self) {
        self.una = 1;
    }
    /// The SYN-ACK acknowledged our SYN and the data it carried up to `ack_off` (≥ 1); returns the
    /// data bytes acknowledged. RFC 7413 §4.2.2: "The client SHOULD retransmit any unacknowledged
    /// data in the first ACK packet": SND.NXT goes back to SND.UNA.
    pub(super) fn on_syn_ack(&mut self, ack_off: u64) -> u64 {
        let acked = self.on_ack(ack_off);
        if self.nxt > self.una {
            self.rewind();
        }
        acked
    }

    // ------------------------------------------------------------------ the peer's window

    /// SND.WND in bytes (scaled).
    pub(super) fn wnd(&self) -> u64 {
        self.wnd
    }
    /// The largest window the peer offered (RFC 5961 §5.2 MAX.SND.WND).
    pub(super) fn max_wnd(&self) -> u64 {
        self.max_wnd
    }
    /// The shift applied to the peer's window field.
    pub(super) fn wscale(&self) -> u8 {
        self.wscale
    }
    pub(super) fn set_wscale(&mut self, shift: u8) {
        self.wscale = shift;
    }
    /// The window of the peer's SYN (never scaled) opens the send window.
    pub(super) fn open_window(&mut self, syn_window: u16) {
        self.wnd = u64::from(syn_window);
        self.max_wnd = self.wnd;
    }
    /// Takes `wnd` as SND.WND without the SND.WL1/WL2 test (the SYN-ACK of a simultaneous open).
    pub(super) fn set_window(&mut self, wnd: u64) {
        self.wnd = wnd;
        self.max_wnd = self.max_wnd.max(self.wnd);
    }
    /// Sets SND.WL1 and SND.WL2.
    pub(super) fn set_wl(&mut self, wl1: u64, wl2: u64) {
        self.wl1 = wl1;
        self.wl2 = wl2;
    }
    /// Free window space beyond SND.NXT.
    pub(super) fn window_room(&self) -> u64 {
        (self.una + self.wnd).saturating_sub(self.nxt)
    }
    /// RFC 9293 §3.10.7.4 fifth: the window update of an acceptable ACK at `ack_off`
    /// (≥ SND.UNA) of a segment at `seg_off` announcing `new_wnd` bytes.
    pub(super) fn update_window(&mut self, seg_off: i64, ack_off: u64, new_wnd: u64) {
        // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated. If (SND.WL1 <
        // SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)), set SND.WND <- SEG.WND ..."
        if ack_off >= self.una {
            let wl1 = self.wl1 as i64;
            if wl1 < seg_off || (wl1 == seg_off && self.wl2 <= ack_off) {
                self.wnd = new_wnd;
                self.max_wnd = self.max_wnd.max(new_wnd);
                self.wl1 = seg_off.max(0) as u64;
                self.wl2 = ack_off;
            }
        }
    }

    // ------------------------------------------------------------------ sending and acknowledgment

    /// SND.NXT moves to `end` (segments left); the highest offset sent follows.
    pub(super) fn advance_to(&mut self, end: u64) {
        self.nxt = end;
        self.max = self.max.max(self.nxt);
    }
    /// RFC 6298 §5.4 go-back-N: the next segment starts at SND.UNA again.
    pub(super) fn rewind(&mut self) {
        self.nxt = self.una;
    }
    /// SND.UNA advances to `ack_off` (> SND.UNA); returns the data bytes this acknowledged, which
    /// leave the buffer.
    pub(super) fn on_ack(&mut self, ack_off: u64) -> u64 {
        self.una = ack_off;
        if self.nxt < ack_off {
            self.nxt = ack_off;
        }
        let data_to = ack_off.min(self.data_end());
        let mut data_acked = 0u64;
        if data_to > self.buf_base {
            data_acked = data_to - self.buf_base;
            self.buf.ack(data_acked as usize);
            self.buf_base = data_to;
        }
        data_acked
    }
    /// True if a FIN was queued and the peer acknowledged it.
    pub(super) fn fin_acked(&self) -> bool {
        self.fin_queued && self.una > self.data_end()
    }

    // ------------------------------------------------------------------ the buffer

    /// Queues as much of `data` as fits; returns the count. Refusing bytes arms
    /// [`take_writable`](Self::take_writable).
    pub(super) fn push(&mut self, data: &[u8]) -> usize {
        if self.fin_queued {
            return 0;
        }
        let n = self.buf.push(data);
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }
    /// True once after `push` refused bytes and space freed since.
    pub(super) fn take_writable(&mut self) -> bool {
        if self.want_writable && self.buf.free() > 0 {
            self.want_writable = false;
            return true;
        }
        false
    }
    /// No more data: a FIN follows what is queued.
    pub(super) fn queue_fin(&mut self) {
        self.fin_queued = true;
    }
    pub(super) fn fin_queued(&self) -> bool {
        self.fin_queued
    }
    /// Space left in the buffer (0 once a FIN is queued).
    pub(super) fn capacity(&self) -> usize {
        if self.fin_queued { 0 } else { self.buf.free() }
    }
    /// Bytes queued and not yet acknowledged.
    pub(super) fn queued(&self) -> usize {
        self.buf.len()
    }
    /// The `len` queued bytes from offset `off` (within the buffer), as one or two slices.
    pub(super) fn payload(&self, off: u64, len: usize) -> (&[u8], &[u8]) {
        self.buf.slices((off - self.buf_base) as usize, len)
    }
    pub(super) fn heap_bytes(&self) -> usize {
        self.buf.heap_bytes()
    }

    // ------------------------------------------------------------------ RTT timing (Karn)

    /// Times the segment ending at `end` sent at `now`, unless one is being timed already.
    pub(super) fn time_segment(&mut self, end: u64, now: Instant) {
        if self.rtt_probe.is_none() {
            self.rtt_probe = Some((end, now));
        }
    }
    /// Times the segment ending at `end` (or nothing), replacing any timed one.
    pub(super) fn set_timing(&mut self, probe: Option<(u64, Instant)>) {
        self.rtt_probe = probe;
    }
    /// True while a segment is timed.
    pub(super) fn timing(&self) -> bool {
        self.rtt_probe.is_some()
    }
    /// Stops timing (a retransmission made the sample ambiguous).
    pub(super) fn stop_timing(&mut self) {
        self.rtt_probe = None;
    }
    /// The timed segment, which is no longer timed.
    pub(super) fn take_timing(&mut self) -> Option<(u64, Instant)> {
        self.rtt_probe.take()
    }
    /// When the timed segment was sent, if `ack_off` covers it (it is then no longer timed).
    pub(super) fn take_sample(&mut self, ack_off: u64) -> Option<Instant> {
        match self.rtt_probe {
            Some((end, sent)) if ack_off >= end => {
                self.rtt_probe = None;
                Some(sent)
            }
            _ => None,
        }
    }

    // ------------------------------------------------------------------ probes

    /// The persist timer's backoff exponent.
    pub(super) fn persist_backoff(&self) -> u32 {
        self.persist_backoff
    }
    /// The persist timer fired: a probe is due and the next interval doubles.
    pub(super) fn on_persist_timeout(&mut self) {
        self.probe_pending = true;
        self.persist_backoff = (self.persist_backoff + 1).min(10);
    }
    /// The window opened or data was acknowledged: the backoff restarts.
    pub(super) fn reset_persist_backoff(&mut self) {
        self.persist_backoff = 0;
    }
    /// A probe is due on the next `poll_transmit`, with a garbage octet if `garbage`.
    pub(super) fn request_probe(&mut self, garbage: bool) {
        self.probe_pending = true;
        if garbage {
            self.garbage_probe = true;
        }
    }
    /// True (once) if a probe is due.
    pub(super) fn take_probe(&mut self) -> bool {
        std::mem::take(&mut self.probe_pending)
    }
    /// Drops a pending probe (the connection closed).
    pub(super) fn cancel_probe(&mut self) {
        self.probe_pending = false;
    }
    /// True while the probe being written carries a garbage octet.
    pub(super) fn garbage_probe(&self) -> bool {
        self.garbage_probe
    }
    /// The probe was written.
    pub(super) fn probe_sent(&mut self) {
        self.garbage_probe = false;
    }
}

/// Pacing and the per-ACK burst limit of data segments.
///
/// Invariant: `burst_budget` is at most the initial window; it is refilled by an acceptable ACK
/// only once `next` has passed (the excess of an earlier burst is paced out first).
#[derive(Debug)]
pub(super) struct Pacer {
    /// Earliest time the next paced segment may leave.
    next: Instant,
    /// Segments that may still leave back to back before the rest is paced.
    burst_budget: u32,
    /// When data was last sent (RFC 5681 §4.1 idle detection).
    last_data_sent: Instant,
}

impl Pacer {
    fn new(now: Instant, initial_window: u32) -> Self {
        Pacer {
            next: now,
            burst_budget: initial_window.max(1),
            last_data_sent: now,
        }
    }

    /// The time the next data segment must wait for, if it must: always when `pacing`, otherwise
    /// once the burst budget is spent; never before an RTT is measured.
    pub(super) fn blocked(&self, now: Instant, pacing: bool, srtt: Option<Duration>) -> Option<Instant> {
        let paced = pacing || self.burst_budget == 0;
        (paced && srtt.is_some() && now < self.next).then_some(self.next)
    }

    /// A data segment of `bytes` payload left at `now`.
    pub(super) fn on_sent(
        &mut self,
        now: Instant,
        bytes: usize,
        pacing: bool,
        srtt: Option<Duration>,
        win: &Window,
    ) {
        let Some(srtt) = srtt else { return };
        if !pacing {
            // RFC 6582 §3.2 step 6 and §6: when the window allows far more than is in flight (the
            // end of a recovery whose cumulative ACK covers a whole window, a receive window that
            // reopens) the implementation is encouraged to avoid a burst: "limit the number of
            // data packets that can be sent in response to a single acknowledgment" ... "Other
            // possible mechanisms ... include rate-based pacing". Up to IW segments (a burst
            // RFC 6928 already allows) leave at once per ACK; the rest is paced at the window's
            // rate, so the window is still used in full within one RTT.
            if self.burst_budget > 0 {
                self.burst_budget -= 1;
                if self.burst_budget > 0 {
                    return;
                }
            }
        }
        // Rate = factor * cwnd / SRTT (factor 2 in slow start, 1.25 after, as Linux does).
        let factor = if win.in_slow_start() { 2.0 } else { 1.25 };
        let rate = factor * f64::from(win.cwnd) / srtt.as_secs_f64().max(1e-6);
        let gap = Duration::from_secs_f64(bytes as f64 / rate);
        self.next = self.next.max(now) + gap;
    }

    /// An acceptable ACK clocks out a new (bounded) burst, unless the rest of an earlier burst is
    /// still being paced out (ACKs arriving meanwhile would otherwise release IW segments each, a
    /// burst again when they come back to back). `initial_window` (segments) is a burst.
    pub(super) fn on_ack(&mut self, now: Instant, initial_window: u32) {
        if now >= self.next {
            self.burst_budget = initial_window.max(1);
        }
    }

    /// Data payload left at `now`.
    pub(super) fn on_data_sent(&mut self, now: Instant) {
        self.last_data_sent = now;
    }

    /// How long no data was sent.
    pub(super) fn idle(&self, now: Instant) -> Duration {
        now - self.last_data_sent
    }
}

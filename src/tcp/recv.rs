//! The receive half of a connection: the receive sequence space of RFC 9293 §3.3.1 (RCV.NXT, the
//! advertised window's right edge), the reassembly buffer, the peer's FIN, the timestamp the
//! peer is echoed (RFC 7323 TS.Recent, PAWS), and the acknowledgment bookkeeping (immediate and
//! delayed ACKs, RFC 5681 §4.2 / RFC 9293 §3.8.6.3).
//!
//! Offsets are `u64` counts from the IRS: the peer's SYN is 0, its first data byte 1. The
//! reassembler counts data bytes from 0, so data offset `d` is sequence offset `1 + d`.

use std::time::Duration;

use super::SeqNum;
use super::reassembly::Reassembler;
use crate::time::Instant;
use crate::wire::tcp::SackBlock;

/// RFC 7323 §5.5: TS.Recent is invalid after 24 days of idleness.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

/// Receive sequence space, reassembly and ACK bookkeeping.
///
/// Invariants:
/// - RCV.NXT is 0 until the peer's SYN arrived, then 1 + the in-order data + 1 once the FIN was
///   reached (`fin_received`); it only grows.
/// - `fin` is the offset of the peer's FIN once seen; bytes past it are never stored.
/// - `adv` (the right edge advertised) never moves left (RFC 9293 §3.8.6 SHOULD NOT shrink).
/// - `extra_acks` ≤ 3; `ack_now` is set whenever an ACK is owed at once.
#[derive(Debug)]
pub(super) struct RecvState {
    irs: SeqNum,
    syn_received: bool,
    buf: Reassembler,
    fin: Option<u64>,
    fin_received: bool,
    /// Right edge of the window last advertised (offset).
    adv: u64,
    /// Largest segment seen (capped at our MSS): the receiver's estimate of the sender's MSS.
    mss: u32,
    /// Shift applied to the window we advertise (RFC 7323 §2.3).
    wscale: u8,
    ts_recent: u32,
    ts_recent_at: Instant,
    /// RCV.NXT carried by the last ACK sent (RFC 7323 Last.ACK.sent).
    last_ack_sent: u64,
    /// In-order bytes received since the last ACK.
    unacked: u32,
    ack_now: bool,
    /// Further immediate ACKs owed (one per out-of-order segment, RFC 5681 §4.2), capped.
    extra_acks: u8,
}

/// What [`RecvState::on_data`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    /// New in-order bytes became readable.
    pub readable: bool,
    /// The data did not reach past the buffer's end (a FIN after it is in the window).
    pub within_buffer: bool,
    /// No ACK is owed yet: start the delayed-ACK timer if it is not running.
    pub delay_ack: bool,
}

impl RecvState {
    pub(super) fn new(now: Instant, buffer: usize, wscale: u8) -> Self {
        RecvState {
            irs: SeqNum(0),
            syn_received: false,
            buf: Reassembler::new(0, buffer.max(1)),
            fin: None,
            fin_received: false,
            adv: 0,
            mss: 536,
            wscale,
            ts_recent: 0,
            ts_recent_at: now,
            last_ack_sent: 0,
            unacked: 0,
            ack_now: false,
            extra_acks: 0,
        }
    }

    // ------------------------------------------------------------------ sequence space

    /// The peer's initial sequence number.
    pub(super) fn irs(&self) -> SeqNum {
        self.irs
    }
    /// The wire sequence number of offset `off`.
    pub(super) fn seq(&self, off: u64) -> SeqNum {
        self.irs + off as u32
    }
    /// RCV.NXT as an offset from the IRS.
    pub(super) fn nxt(&self) -> u64 {
        if !self.syn_received {
            return 0;
        }
        1 + self.buf.contiguous_end() + u64::from(self.fin_received)
    }
    /// `seq` as an offset (relative to RCV.NXT, so wrap-safe within 2^31).
    pub(super) fn off(&self, seq: SeqNum) -> i64 {
        let nxt = self.nxt();
        nxt as i64 + i64::from(seq.diff(self.seq(nxt)))
    }
    /// The peer's SYN with sequence number `irs` arrived; the window opens.
    pub(super) fn on_syn(&mut self, irs: SeqNum) {
        self.irs = irs;
        self.syn_received = true;
        self.adv = self.nxt() + self.buf.window() as u64;
    }
    /// RCV.WND: space beyond the in-order data.
    pub(super) fn window(&self) -> usize {
        self.buf.window()
    }
    /// The window field of a SYN or SYN-ACK (RFC 7323 §2.2: not scaled).
    pub(super) fn syn_window(&self) -> u16 {
        self.buf.window().min(65535) as u16
    }
    /// Offset just past the buffer (in data offsets): bytes beyond it cannot be stored.
    pub(super) fn buffer_end(&self) -> u64 {
        self.buf.read_offset() + self.buf.cap() as u64
    }
    pub(super) fn wscale(&self) -> u8 {
        self.wscale
    }
    /// Window scaling was not negotiated: advertise unscaled.
    pub(super) fn disable_wscale(&mut self) {
        self.wscale = 0;
    }

    /// The window field for a non-SYN segment; moves the advertised right edge following RFC 9293
    /// §3.8.6.2.2 (receiver SWS avoidance) and never moves it left (§3.8.6: SHOULD NOT shrink).
    pub(super) fn advertise_window(&mut self) -> u16 {
        let nxt = self.nxt();
        let potential = nxt + self.buf.window() as u64;
        let cap = self.buf.cap() as u64;
        let step = u64::from(self.mss).min(cap / 2).max(1);
        if potential >= self.adv + step || self.adv < nxt {
            self.adv = self.adv.max(potential);
        }
        let wnd = self.adv.saturating_sub(nxt) >> self.wscale;
        wnd.min(65535) as u16
    }

    // ------------------------------------------------------------------ timestamps (RFC 7323)

    /// TS.Recent, echoed in TSecr.
    pub(super) fn ts_recent(&self) -> u32 {
        self.ts_recent
    }
    /// The TSval of the peer's SYN.
    pub(super) fn set_ts_recent(&mut self, val: u32, now: Instant) {
        self.ts_recent = val;
        self.ts_recent_at = now;
    }
    /// RFC 7323 §5.3 R1: true if a segment with `tsval` is older than TS.Recent (and TS.Recent is
    /// still valid, §5.5), so PAWS rejects it.
    pub(super) fn paws_rejects(&self, tsval: u32, now: Instant) -> bool {
        let older = (tsval.wrapping_sub(self.ts_recent) as i32) < 0;
        older && now - self.ts_recent_at < PAWS_IDLE
    }
    /// RFC 7323 §4.3 (3): TS.Recent <- SEG.TSval if SEG.TSval >= TS.Recent and
    /// SEG.SEQ <= Last.ACK.sent.
    pub(super) fn update_ts_recent(&mut self, tsval: u32, seg_off: i64, now: Instant) {
        if (tsval.wrapping_sub(self.ts_recent) as i32) >= 0 && seg_off <= self.last_ack_sent as i64 {
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        }
    }

    // ------------------------------------------------------------------ acknowledgments

    /// True if an ACK is owed at once.
    pub(super) fn ack_now(&self) -> bool {
        self.ack_now
    }
    /// An ACK is owed at once.
    pub(super) fn set_ack_now(&mut self) {
        self.ack_now = true;
    }
    /// No ACK is owed any more (the connection closed).
    pub(super) fn cancel_acks(&mut self) {
        self.ack_now = false;
        self.extra_acks = 0;
    }
    /// An ACK carrying RCV.NXT = `nxt` was written.
    pub(super) fn on_ack_sent(&mut self, nxt: u64) {
        if self.extra_acks > 0 {
            self.extra_acks -= 1;
        } else {
            self.ack_now = false;
        }
        self.unacked = 0;
        self.last_ack_sent = nxt;
    }
    /// RFC 2018 §4: up to `room / 8` (at most 4) SACK blocks for the out-of-order data held.
    /// Returns the blocks and their count.
    pub(super) fn sack_blocks(&self, room: usize) -> ([SackBlock; 4], usize) {
        let mut sb = [SackBlock::default(); 4];
        if !self.buf.has_out_of_order() {
            return (sb, 0);
        }
        let mut blocks = [(0u64, 0u64); 4];
        let n = self.buf.sack_blocks(&mut blocks);
        let fit = (room / 8).min(n);
        for (i, &(l, r)) in blocks.iter().take(fit).enumerate() {
            sb[i] = SackBlock {
                left: self.seq(1 + l),
                right: self.seq(1 + r),
            };
        }
        (sb, fit)
    }
    /// True while out-of-order data is held.
    pub(super) fn has_out_of_order(&self) -> bool {
        self.buf.has_out_of_order()
    }

    // ------------------------------------------------------------------ data and FIN

    /// Stores `payload` (not empty) found at data offset `data_off` (negative: it starts before
    /// the first data byte, i.e. it carried the SYN), and decides how to acknowledge it. `mss`
    /// is our MSS; `ack_every` is true when delayed ACKs are off.
    pub(super) fn on_data(&mut self, data_off: i64, payload: &[u8], mss: u16, ack_every: bool) -> Received {
        let skip = usize::try_from(-data_off).unwrap_or(0).min(payload.len());
        let mut data = &payload[skip..];
        let mut off = data_off.max(0) as u64;
        if let Some(fin) = self.fin {
            // Bytes past a FIN already seen are ignored.
            let limit = fin.saturating_sub(1).saturating_sub(off) as usize;
            data = &data[..data.len().min(limit)];
        }
        let within_buffer = off + data.len() as u64 <= self.buffer_end();
        if data.is_empty() {
            off = 0;
        }
        let had_ooo = self.buf.has_out_of_order();
        let ins = self.buf.insert(off, data);
        let seen = u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .min(u32::from(mss));
        self.mss = self.mss.max(seen);
        let mut delay_ack = false;
        if ins.out_of_order || had_ooo || ins.duplicate || ack_every {
            // RFC 5681 §4.2: an out-of-order segment or one filling a gap SHOULD be acknowledged
            // at once: one (duplicate) ACK per such segment, even if several arrive before the
            // next poll_transmit (the sender counts duplicate ACKs).
            if self.ack_now && (ins.out_of_order || ins.duplicate) {
                self.extra_acks = (self.extra_acks + 1).min(3);
            }
            self.ack_now = true;
        } else {
            self.unacked = self.unacked.saturating_add(ins.advanced as u32);
            // RFC 9293 §3.8.6.3: an ACK SHOULD be generated for at least every second
            // full-sized segment, and MUST within 0.5 s.
            if self.unacked >= 2 * self.mss {
                self.ack_now = true;
            } else {
                delay_ack = true;
            }
        }
        Received {
            readable: ins.advanced > 0,
            within_buffer,
            delay_ack,
        }
    }

    /// A FIN in the window at offset `fin_off`: remembered unless it lies below RCV.NXT.
    pub(super) fn on_fin(&mut self, fin_off: u64) {
        if self.fin.is_none() && fin_off >= self.nxt() {
            self.fin = Some(fin_off);
        }
    }

    /// RFC 9293 §3.10.7.4 eighth: true (once) when everything before the peer's FIN arrived; the
    /// FIN is then consumed and acknowledged at once.
    pub(super) fn take_fin(&mut self) -> bool {
        if let Some(fin) = self.fin
            && !self.fin_received
            && self.nxt() == fin
        {
            self.fin_received = true;
            self.ack_now = true;
            return true;
        }
        false
    }

    // ------------------------------------------------------------------ the application

    /// Reads in-order bytes into `out`; returns the count. When `synchronized`, decides (RFC 9293
    /// §3.8.6.2.2 receiver SWS avoidance) whether the window update is worth a segment: only if
    /// the advertised window had become small.
    pub(super) fn read_into(&mut self, max: usize, sink: impl FnMut(&[u8]), synchronized: bool) -> usize {
        let before_adv = self.adv.saturating_sub(self.nxt());
        let n = self.buf.read_into(max, sink);
        if n > 0 && synchronized {
            let potential = self.nxt() + self.buf.window() as u64;
            let cap = self.buf.cap() as u64;
            let thresh = (2 * u64::from(self.mss)).min(cap / 2);
            if before_adv < cap / 2 && potential >= self.adv + thresh {
                self.ack_now = true;
            }
        }
        n
    }
    /// Bytes ready to read.
    pub(super) fn readable(&self) -> usize {
        self.buf.readable()
    }
    /// Data offset of the next byte the application reads.
    pub(super) fn read_offset(&self) -> u64 {
        self.buf.read_offset()
    }
    /// True once the peer's FIN was consumed and every byte before it read.
    pub(super) fn finished(&self) -> bool {
        self.fin_received && self.buf.readable() == 0
    }
    pub(super) fn heap_bytes(&self) -> usize {
        self.buf.heap_bytes()
    }
}

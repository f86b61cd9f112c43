//! The sender's congestion state: the congestion window and its controller (`cc/`), and loss
//! recovery on top of them: the SACK scoreboard with RFC 6675 loss detection and NextSeg, RFC
//! 6582 NewReno fast recovery when SACK is off, RFC 6937 proportional rate reduction during SACK
//! recovery, and the RTO recovery of RFC 5681 §3.1 / RFC 6582 §4.1.
//!
//! Offsets are the connection's send offsets (`u64`, SYN = 0); SND.UNA and the highest offset
//! sent are passed in by the caller, which owns them (`send.rs`).

use std::time::Duration;

use super::Config;
use super::cc::{Controller, Window};
use super::sack::Scoreboard;
use crate::time::Instant;

/// Loss-recovery phase of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Normal operation.
    None,
    /// Fast recovery (RFC 6675 with SACK, RFC 6582 without) until `recover` is acknowledged.
    Fast,
    /// After a retransmission timeout, until `recover` is acknowledged.
    Rto,
}

/// RFC 6937 PRR state of the current fast recovery.
#[derive(Debug, Clone, Copy, Default)]
struct Prr {
    /// Bytes delivered to the receiver since recovery began (prr_delivered).
    delivered: u64,
    /// Bytes sent since recovery began (prr_out).
    out: u64,
    /// The flight size when recovery began (RecoverFS).
    recover_fs: u64,
}

/// Congestion window, controller and loss-recovery state.
///
/// Invariants:
/// - `win.mss` is the sender MSS (SMSS) and `win.cwnd >= win.mss` outside PRR's transient
///   reductions; `phase != None` only while `recover` is not yet cumulatively acknowledged.
/// - `high_rxt` (RFC 6675 HighRxt) never lies below SND.UNA once an ACK was processed.
/// - The scoreboard holds SACKed ranges above SND.UNA only; it is emptied after an RTO.
/// - `sack` mirrors the connection's negotiated SACK (set with the other SYN options).
#[derive(Debug)]
pub(super) struct Recovery {
    cc: Controller,
    win: Window,
    /// SACK was negotiated: RFC 6675 recovery (with PRR) instead of RFC 6582.
    sack: bool,
    /// RFC 6675 DupThresh.
    dupthresh: u32,
    phase: Phase,
    /// RFC 6582 `recover` / RFC 6675 RecoveryPoint.
    recover: u64,
    dupacks: u32,
    /// RFC 6675 HighRxt: the highest offset retransmitted in this recovery.
    high_rxt: u64,
    /// SND.UNA's segment is to be retransmitted on the next chance (fast retransmit, RFC 6582
    /// partial ACK).
    rtx_una: bool,
    prr: Prr,
    scoreboard: Scoreboard,
}

impl Recovery {
    pub(super) fn new(cfg: &Config) -> Self {
        let mss = u32::from(cfg.mss.max(64));
        let iw = cfg.initial_window.max(1);
        Recovery {
            cc: Controller::new(cfg.congestion),
            // RFC 6928 / RFC 5681 §3.1: IW; ssthresh initially arbitrarily high.
            win: Window {
                cwnd: iw * mss,
                ssthresh: u32::MAX,
                mss,
            },
            sack: false,
            dupthresh: cfg.dupthresh,
            phase: Phase::None,
            recover: 0,
            dupacks: 0,
            high_rxt: 0,
            rtx_una: false,
            prr: Prr::default(),
            scoreboard: Scoreboard::new(),
        }
    }

    /// The handshake fixed SACK use and the sender MSS: the initial window (`initial_window`
    /// segments, RFC 6928) is sized from it.
    pub(super) fn on_handshake(&mut self, sack: bool, mss: u32, initial_window: u32) {
        self.sack = sack;
        self.win.mss = mss;
        self.win.cwnd = initial_window.max(1) * self.win.mss;
    }

    // ------------------------------------------------------------------ window

    pub(super) fn window(&self) -> &Window {
        &self.win
    }
    /// SMSS.
    pub(super) fn mss(&self) -> u32 {
        self.win.mss
    }
    pub(super) fn cwnd(&self) -> u32 {
        self.win.cwnd
    }
    pub(super) fn controller(&self) -> &Controller {
        &self.cc
    }
    /// RFC 5681 §4.1: after an idle period longer than the RTO, cwnd SHOULD restart from
    /// min(IW, cwnd) (the ACK clock is gone). `initial_window` is IW in segments.
    pub(super) fn restart_after_idle(&mut self, initial_window: u32) {
        let iw = initial_window.max(1) * self.win.mss;
        self.win.cwnd = self.win.cwnd.min(iw);
    }

    // ------------------------------------------------------------------ phase

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }
    /// True while in fast recovery or RTO recovery.
    pub(super) fn in_recovery(&self) -> bool {
        self.phase != Phase::None
    }
    /// True during RFC 6675 fast recovery (SACK negotiated): the flight is `pipe`.
    pub(super) fn sack_recovery(&self) -> bool {
        self.phase == Phase::Fast && self.sack
    }

    // ------------------------------------------------------------------ scoreboard and pipe

    /// Records a SACK block `[l, r)` clipped to `(una, max)`; returns newly SACKed bytes.
    pub(super) fn on_sack_block(&mut self, l: u64, r: u64, una: u64, max: u64) -> u64 {
        self.scoreboard.add(l, r, una, max)
    }
    pub(super) fn sacked_bytes(&self) -> u64 {
        self.scoreboard.sacked_bytes()
    }
    pub(super) fn heap_bytes(&self) -> usize {
        self.scoreboard.heap_bytes()
    }
    /// RFC 6675 §4 IsLost(SND.UNA + 1) with SACK on.
    fn una_lost(&self, una: u64) -> bool {
        self.scoreboard.lost_boundary(self.dupthresh, self.win.mss) > una
    }

    /// RFC 6675 §4 SetPipe(): outstanding bytes not SACKed and not lost, plus retransmissions.
    pub(super) fn pipe(&self, una: u64, max: u64) -> u64 {
        let lb = self
            .scoreboard
            .lost_boundary(self.dupthresh, self.win.mss)
            .clamp(una, max);
        let hr = self.high_rxt.clamp(una, max);
        // Holes below HighRxt were retransmitted: counted once.
        let below = (hr - una) - self.scoreboard.sacked_in(una, hr);
        // Holes between HighRxt and the loss boundary are lost and not retransmitted: not counted.
        let from = lb.max(hr);
        let above = (max - from) - self.scoreboard.sacked_in(from, max);
        below + above
    }

    /// RFC 6675 §5 step (C), NextSeg() rule 1: the first lost hole above HighRxt.
    pub(super) fn next_lost_hole(&self, una: u64, max: u64) -> Option<(u64, u64)> {
        let lb = self
            .scoreboard
            .lost_boundary(self.dupthresh, self.win.mss)
            .clamp(una, max);
        let from = self.high_rxt.max(una);
        self.scoreboard.next_hole(from, lb)
    }

    // ------------------------------------------------------------------ retransmissions

    /// True if SND.UNA's segment is to be retransmitted now (RFC 6675 §5 step 4.3, RFC 6582 §3.2
    /// steps 3 and 5).
    pub(super) fn una_retransmit_due(&self) -> bool {
        self.rtx_una
    }
    /// The retransmission of SND.UNA's segment is being written.
    pub(super) fn clear_una_retransmit(&mut self) {
        self.rtx_una = false;
    }
    /// SND.UNA's segment was retransmitted up to `end` with `len` payload bytes.
    pub(super) fn on_una_retransmitted(&mut self, end: u64, len: usize) {
        self.high_rxt = self.high_rxt.max(end);
        self.prr.out += len as u64;
    }
    /// The hole starting at `start` was retransmitted with `len` payload bytes (a FIN alone
    /// counts as one offset).
    pub(super) fn on_hole_retransmitted(&mut self, start: u64, len: usize) {
        self.high_rxt = start + (len as u64).max(1);
        self.prr.out += len as u64;
    }
    /// New data of `len` payload bytes was sent.
    pub(super) fn on_sent(&mut self, len: usize) {
        self.prr.out += len as u64;
    }

    // ------------------------------------------------------------------ acknowledgments

    /// SND.UNA advanced to `ack_off`: the scoreboard forgets what lies below it.
    pub(super) fn on_cumulative_ack(&mut self, ack_off: u64) {
        self.scoreboard.on_cumulative_ack(ack_off);
        self.high_rxt = self.high_rxt.max(ack_off);
        self.dupacks = 0;
    }

    /// The window's response to `acked` new data bytes acknowledged up to `ack_off`. `flight` is
    /// SND.NXT - SND.UNA after the ACK, `limited` whether the flight nearly filled cwnd and the
    /// peer's window did not hold the sender back (RFC 9438 §4.6, decided before the ACK).
    pub(super) fn on_new_ack(
        &mut self,
        now: Instant,
        ack_off: u64,
        flight: u64,
        acked: u32,
        srtt: Option<Duration>,
        limited: bool,
    ) {
        let mss = self.win.mss;
        match self.phase {
            Phase::Fast => {
                if ack_off >= self.recover {
                    // RFC 6582 §3.2 step 6 (full ACK): cwnd = min(ssthresh, max(FlightSize, SMSS) +
                    // SMSS); RFC 6675 §5: recovery ends when RecoveryPoint is acknowledged.
                    let flight = u32::try_from(flight).unwrap_or(u32::MAX);
                    self.win.cwnd = if self.sack {
                        self.win.ssthresh
                    } else {
                        self.win.ssthresh.min(flight.max(mss) + mss)
                    };
                    self.phase = Phase::None;
                } else if !self.sack {
                    // RFC 6582 §3.2 step 5 (partial ACK): retransmit the first unacknowledged
                    // segment, deflate cwnd by the amount acknowledged, add back one SMSS if at
                    // least one SMSS was acknowledged.
                    self.rtx_una = true;
                    self.win.cwnd = self.win.cwnd.saturating_sub(acked);
                    if acked >= mss {
                        self.win.cwnd += mss;
                    }
                    self.win.cwnd = self.win.cwnd.max(mss);
                }
            }
            Phase::Rto => {
                if ack_off >= self.recover {
                    self.phase = Phase::None;
                }
                self.cc.on_ack(now, &mut self.win, acked, srtt, true);
            }
            Phase::None => self.cc.on_ack(now, &mut self.win, acked, srtt, limited),
        }
    }

    /// RFC 5681 §2: a duplicate ACK. Returns true if fast recovery began.
    pub(super) fn on_dupack(&mut self, now: Instant, una: u64, max: u64) -> bool {
        self.dupacks += 1;
        match self.phase {
            Phase::Fast => {
                if !self.sack {
                    // RFC 6582 §3.2 step 4: each further duplicate ACK inflates cwnd by SMSS.
                    self.win.cwnd = self.win.cwnd.saturating_add(self.win.mss);
                }
                false
            }
            // RFC 6582 §4.1: no fast retransmit for duplicate ACKs below `recover` after a timeout.
            Phase::Rto => false,
            Phase::None => {
                // RFC 6675 §5: DupAcks >= DupThresh, or IsLost(HighACK + 1).
                let lost = self.sack && self.una_lost(una);
                // RFC 6582 §3.2 step 2: only if the cumulative ACK covers more than `recover`.
                if (self.dupacks >= self.dupthresh || lost) && (una > self.recover || self.recover == 0) {
                    self.enter_fast(now, una, max);
                    return true;
                }
                false
            }
        }
    }

    /// RFC 6675 §5: the scoreboard was updated by an ACK that advanced SND.UNA; if it already
    /// shows SND.UNA's segment as lost (IsLost(HighACK + 1)), loss recovery starts without
    /// waiting for more ACKs. Returns true if fast recovery began.
    pub(super) fn check_sack_loss(&mut self, now: Instant, una: u64, max: u64) -> bool {
        if self.una_lost(una) && (una > self.recover || self.recover == 0) {
            self.enter_fast(now, una, max);
            return true;
        }
        false
    }

    fn enter_fast(&mut self, now: Instant, una: u64, max: u64) {
        let flight = u32::try_from(max - una).unwrap_or(u32::MAX);
        // RFC 6937 §3: "At the beginning of recovery": prr_delivered = prr_out = 0,
        // RecoverFS = snd.nxt - snd.una.
        self.prr = Prr {
            delivered: 0,
            out: 0,
            recover_fs: max - una,
        };
        // RFC 6675 §5 step (4.1)/RFC 6582 §3.2 step 2: RecoveryPoint = HighData.
        self.recover = max;
        self.cc.on_congestion(now, &mut self.win, flight);
        self.phase = Phase::Fast;
        self.high_rxt = una;
        self.rtx_una = true;
        if !self.sack {
            // RFC 6582 §3.2 step 3: cwnd = ssthresh + 3*SMSS.
            self.win.cwnd = self.win.ssthresh + 3 * self.win.mss;
        }
    }

    /// After an ACK was processed during SACK recovery: SND.UNA moved from `una_before` to `una`
    /// and the scoreboard held `sacked_before` bytes before it.
    pub(super) fn on_ack_delivered(&mut self, una_before: u64, una: u64, sacked_before: u64, max: u64) {
        if !self.sack_recovery() {
            return;
        }
        // RFC 6937 §3: DeliveredData = change in SND.UNA + change in SACKed bytes.
        let delivered =
            (una - una_before) as i64 + self.scoreboard.sacked_bytes() as i64 - sacked_before as i64;
        self.prr_on_ack(delivered.max(0) as u64, una, max);
    }

    /// RFC 6937 §3 Proportional Rate Reduction (the reduction RFC 9438 §4.6 mentions as an
    /// alternative to an immediate one): during SACK recovery cwnd = pipe + sndcnt, so the sender
    /// transmits in proportion to what the receiver got (ssthresh / RecoverFS of it while pipe is
    /// above ssthresh) instead of sending cwnd - pipe at once whenever the scoreboard marks a run
    /// of holes lost — such a burst of retransmissions overflows the queue that just dropped
    /// the originals and loses the retransmissions too (then only the RTO repairs them).
    fn prr_on_ack(&mut self, delivered: u64, una: u64, max: u64) {
        self.prr.delivered += delivered;
        let pipe = self.pipe(una, max);
        let ssthresh = u64::from(self.win.ssthresh);
        let mss = u64::from(self.win.mss);
        let sndcnt = if pipe > ssthresh {
            // Proportional part: sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out.
            let fs = self.prr.recover_fs.max(1);
            (self.prr.delivered * ssthresh)
                .div_ceil(fs)
                .saturating_sub(self.prr.out)
        } else {
            // Slow-start reduction bound (PRR-SSRB):
            // limit = MAX(prr_delivered - prr_out, DeliveredData) + MSS.
            let limit = self.prr.delivered.saturating_sub(self.prr.out).max(delivered) + mss;
            (ssthresh - pipe).min(limit)
        };
        self.win.cwnd = u32::try_from(pipe + sndcnt).unwrap_or(u32::MAX);
    }

    // ------------------------------------------------------------------ timeout

    /// A retransmission timeout with `una .. max` outstanding.
    pub(super) fn on_rto(&mut self, now: Instant, una: u64, max: u64) {
        let flight = u32::try_from(max - una).unwrap_or(u32::MAX);
        if self.phase != Phase::Rto {
            // RFC 5681 §3.1: ssthresh is reduced on the first timeout only ("held constant"
            // on repeated retransmissions of the same segment); cwnd = loss window.
            self.cc.on_rto(now, &mut self.win, flight);
        } else {
            self.win.cwnd = self.win.mss;
        }
        self.phase = Phase::Rto;
        self.recover = max;
        self.dupacks = 0;
        self.rtx_una = false;
        self.high_rxt = una;
        // RFC 2018 §8: after a retransmit timeout the sender SHOULD turn off SACKed bits.
        self.scoreboard.clear();
    }
}

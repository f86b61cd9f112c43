//! CUBIC, RFC 9438 (text: draft-ietf-tcpm-rfc8312bis-15). Windows are computed in segments as in
//! the RFC and converted to bytes with the current SMSS.

use std::time::Duration;

use super::Window;
use crate::time::Instant;

/// RFC 9438 §5: C SHOULD be 0.4.
pub const C: f64 = 0.4;
/// RFC 9438 §5: beta_cubic SHOULD be 0.7.
pub const BETA: f64 = 0.7;
/// RFC 9438 §4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta).
pub const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// CUBIC state.
#[derive(Debug, Clone, Default)]
pub struct Cubic {
    /// W_max in segments (window before the last reduction), 0 if no congestion event yet.
    w_max: f64,
    /// W_last_max for fast convergence (RFC 9438 §4.7).
    w_last_max: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch_start: Option<Instant>,
    /// K in seconds.
    k: f64,
    /// cwnd in segments at the epoch start.
    cwnd_epoch: f64,
    /// W_est in segments (RFC 9438 §4.3).
    w_est: f64,
    /// cwnd in segments with fractional growth kept.
    cwnd_seg: f64,
}

impl Cubic {
    /// Fresh state.
    pub fn new() -> Self {
        Self::default()
    }

    /// RFC 9438 §4.2 eq. 1: W_cubic(t) = C * (t - K)^3 + W_max, in segments, `t` in seconds since
    /// the epoch start.
    pub fn w_cubic(&self, t: f64) -> f64 {
        C * (t - self.k).powi(3) + self.w_max
    }
    /// K in seconds (RFC 9438 §4.2 eq. 2).
    pub fn k(&self) -> f64 {
        self.k
    }
    /// W_max in segments.
    pub fn w_max(&self) -> f64 {
        self.w_max
    }
    /// Start of the current epoch.
    pub fn epoch_start(&self) -> Option<Instant> {
        self.epoch_start
    }

    /// RFC 9438 §4.2 - §4.5, called for ACKs in congestion avoidance.
    pub fn on_ack_ca(&mut self, now: Instant, w: &mut Window, acked: u32, srtt: Option<Duration>) {
        let mss = f64::from(w.mss);
        let cwnd = f64::from(w.cwnd) / mss;
        if self.epoch_start.is_none() || (self.cwnd_seg - cwnd).abs() >= 1.0 {
            // The byte window was changed by someone else (recovery exit): resync.
            self.cwnd_seg = cwnd;
        }
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                // RFC 9438 §4.2: the epoch starts at the first ACK in congestion avoidance; with no
                // prior congestion event W_max is the current window (K = 0).
                self.epoch_start = Some(now);
                if self.w_max < cwnd {
                    self.w_max = cwnd;
                }
                self.cwnd_epoch = cwnd;
                self.k = ((self.w_max - cwnd).max(0.0) / C).cbrt();
                self.w_est = cwnd;
                now
            }
        };
        let segs = f64::from(acked) / mss;
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        let t = (now - epoch).as_secs_f64();
        // RFC 9438 §4.3: W_est += alpha * segments_acked / cwnd; alpha becomes 1 once W_est >= W_max.
        let alpha = if self.w_est >= self.w_max { 1.0 } else { ALPHA };
        self.w_est += alpha * segs / self.cwnd_seg.max(1.0);
        let w_cubic_next = self.w_cubic(t + rtt);
        if self.w_cubic(t) < self.w_est {
            // RFC 9438 §4.3: Reno-friendly region: cwnd SHOULD be set to W_est.
            self.cwnd_seg = self.cwnd_seg.max(self.w_est);
        } else {
            // RFC 9438 §4.4/§4.5: target = W_cubic(t + RTT) clamped to [cwnd, 1.5 cwnd]; cwnd MUST
            // grow by (target - cwnd) / cwnd for each acknowledged segment.
            let target = w_cubic_next.clamp(self.cwnd_seg, 1.5 * self.cwnd_seg);
            self.cwnd_seg += (target - self.cwnd_seg) / self.cwnd_seg.max(1.0) * segs;
        }
        let bytes = (self.cwnd_seg * mss).min(f64::from(u32::MAX / 2));
        w.cwnd = w.cwnd.max(bytes as u32);
    }

    fn reduce(&mut self, w: &mut Window) -> f64 {
        let mss = f64::from(w.mss);
        let cwnd = f64::from(w.cwnd) / mss;
        // RFC 9438 §4.7 fast convergence: if cwnd < W_last_max, W_max = cwnd * (1 + beta) / 2.
        self.w_max = if cwnd < self.w_last_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.w_last_max = cwnd;
        self.epoch_start = None;
        // RFC 9438 §4.6: ssthresh = cwnd * beta_cubic, at least 2 segments.
        let ss = (cwnd * BETA).max(2.0);
        w.ssthresh = (ss * mss) as u32;
        ss
    }

    /// RFC 9438 §4.6: multiplicative decrease on a congestion event.
    pub fn on_congestion(&mut self, _now: Instant, w: &mut Window) {
        let ss = self.reduce(w);
        w.cwnd = w.ssthresh;
        self.cwnd_seg = ss;
        self.k = ((self.w_max - ss).max(0.0) / C).cbrt();
    }

    /// RFC 9438 §4.8: on a retransmission timeout, ssthresh as in §4.6, cwnd to 1 segment
    /// (RFC 5681 loss window) and a new epoch when congestion avoidance resumes.
    pub fn on_rto(&mut self, _now: Instant, w: &mut Window) {
        self.reduce(w);
        w.cwnd = w.mss;
        self.cwnd_seg = 1.0;
    }
}

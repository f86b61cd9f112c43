//! Congestion control: the window state shared by all algorithms and the algorithms themselves,
//! CUBIC (RFC 9438, the default) and NewReno (RFC 5681 + RFC 6582). Loss *detection* and the
//! recovery procedures (RFC 6675, RFC 6582) live in the connection; this module decides by how
//! much the window grows on ACKs and shrinks on congestion.

pub mod cubic;
pub mod newreno;

use std::time::Duration;

use crate::time::Instant;

pub use cubic::Cubic;
pub use newreno::NewReno;

/// Which algorithm a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CcAlgorithm {
    /// RFC 9438 CUBIC.
    #[default]
    Cubic,
    /// RFC 5681 / RFC 6582 NewReno.
    NewReno,
}

/// The sender's window state, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Congestion window.
    pub cwnd: u32,
    /// Slow-start threshold.
    pub ssthresh: u32,
    /// Sender maximum segment size (SMSS).
    pub mss: u32,
}

impl Window {
    /// True while in slow start (RFC 5681 §3.1: cwnd < ssthresh).
    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }
}

/// A congestion controller (enum dispatch, no allocation).
#[derive(Debug, Clone)]
pub enum Controller {
    /// CUBIC.
    Cubic(Cubic),
    /// NewReno.
    NewReno(NewReno),
}

impl Controller {
    /// A fresh controller of the given kind.
    pub fn new(alg: CcAlgorithm) -> Self {
        match alg {
            CcAlgorithm::Cubic => Controller::Cubic(Cubic::new()),
            CcAlgorithm::NewReno => Controller::NewReno(NewReno::new()),
        }
    }

    /// New data was cumulatively acknowledged outside loss recovery. `cwnd_limited` is false when
    /// the application did not fill the window (then the window does not grow, RFC 9438 §5.8 /
    /// RFC 7661 spirit).
    pub fn on_ack(
        &mut self,
        now: Instant,
        w: &mut Window,
        acked: u32,
        srtt: Option<Duration>,
        cwnd_limited: bool,
    ) {
        if !cwnd_limited || acked == 0 {
            return;
        }
        if w.in_slow_start() {
            // RFC 5681 §3.1 with RFC 3465 appropriate byte counting (L = 2*SMSS).
            w.cwnd = w.cwnd.saturating_add(acked.min(2 * w.mss));
            return;
        }
        match self {
            Controller::Cubic(c) => c.on_ack_ca(now, w, acked, srtt),
            Controller::NewReno(r) => r.on_ack_ca(w, acked),
        }
    }

    /// A loss was detected by fast retransmit (once per window of data): sets ssthresh and the
    /// window to use after recovery. `flight` is the data outstanding.
    pub fn on_congestion(&mut self, now: Instant, w: &mut Window, flight: u32) {
        match self {
            Controller::Cubic(c) => c.on_congestion(now, w),
            Controller::NewReno(_) => {
                // RFC 5681 §3.1 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS).
                w.ssthresh = (flight / 2).max(2 * w.mss);
                w.cwnd = w.ssthresh;
            }
        }
    }

    /// The retransmission timer expired (first expiry of a loss episode).
    pub fn on_rto(&mut self, now: Instant, w: &mut Window, flight: u32) {
        match self {
            Controller::Cubic(c) => c.on_rto(now, w),
            Controller::NewReno(_) => {
                // RFC 5681 §3.1 eq. 4 and: "cwnd MUST be set to no more than the loss window, LW,
                // which equals 1 full-sized segment".
                w.ssthresh = (flight / 2).max(2 * w.mss);
                w.cwnd = w.mss;
            }
        }
    }

    /// The CUBIC state for inspection (tests, health).
    pub fn cubic(&self) -> Option<&Cubic> {
        match self {
            Controller::Cubic(c) => Some(c),
            Controller::NewReno(_) => None,
        }
    }
}

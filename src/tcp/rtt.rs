//! Round-trip time estimation and the retransmission timeout, RFC 6298.

use std::time::Duration;

/// RFC 6298 §2 estimator with exponential backoff (§5.5).
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    backoff: u32,
    latest: Duration,
}

/// RFC 6298 §2: G, the clock granularity (our clock has microseconds; 1 ms is what the sender's
/// timers realistically achieve).
const G: Duration = Duration::from_millis(1);

impl RttEstimator {
    /// RFC 6298 §2.1: until a measurement is made the RTO is `initial` (SHOULD be 1 s).
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min_rto, max_rto),
            min_rto,
            max_rto,
            backoff: 0,
            latest: Duration::ZERO,
        }
    }

    /// Feeds one RTT measurement.
    pub fn on_sample(&mut self, r: Duration) {
        self.latest = r;
        match self.srtt {
            // RFC 6298 §2.2: first measurement: SRTT <- R, RTTVAR <- R/2.
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            // RFC 6298 §2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|; SRTT <- 7/8 SRTT + 1/8 R'
            // (RTTVAR MUST be updated with the old SRTT first).
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        // RFC 6298 §2.2/2.3: RTO <- SRTT + max(G, K*RTTVAR), K = 4. §2.4: the minimum is ours to
        // configure (the SHOULD of 1 s is relaxed like Linux's 200 ms for a LAN/relay); §2.5: a
        // maximum of at least 60 s MAY be placed.
        self.rto = (srtt + G.max(self.rttvar * 4)).clamp(self.min_rto, self.max_rto);
        // A valid sample means the timer was not backed off for this segment (Karn, §5 note).
        self.backoff = 0;
    }

    /// RFC 6298 §5.5: the host MUST set RTO <- RTO * 2 ("back off the timer") on expiry.
    pub fn back_off(&mut self) {
        self.backoff = (self.backoff + 1).min(16);
    }

    /// Clears the backoff (an ACK for new data arrived after the timer stopped firing).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// The current timeout including backoff, capped at the maximum.
    pub fn rto(&self) -> Duration {
        self.rto.saturating_mul(1 << self.backoff).min(self.max_rto)
    }
    /// Smoothed RTT, if measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
    /// RTT variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
    /// The latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }
    /// Number of backoffs applied.
    pub fn backoff(&self) -> u32 {
        self.backoff
    }
}

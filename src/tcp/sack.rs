//! The sender's SACK scoreboard, RFC 6675 §3-§4: which bytes above SND.UNA the receiver has
//! selectively acknowledged, and the derived IsLost / pipe / NextSeg quantities.
//!
//! Offsets are the connection's sequence-space offsets (`u64`, SYN = 0).

use super::ranges::RangeSet;

/// Cap on scoreboard ranges; information beyond it is dropped, which only causes extra
/// retransmissions (RFC 2018 §8: the sender must tolerate reneging anyway).
const MAX_RANGES: usize = 128;

/// SACKed ranges above SND.UNA.
#[derive(Debug, Clone, Default)]
pub struct Scoreboard {
    sacked: RangeSet,
    sacked_bytes: u64,
}

impl Scoreboard {
    /// Empty scoreboard.
    pub fn new() -> Self {
        Self::default()
    }
    /// True if nothing is SACKed.
    pub fn is_empty(&self) -> bool {
        self.sacked.is_empty()
    }
    /// Total SACKed bytes above SND.UNA.
    pub fn sacked_bytes(&self) -> u64 {
        self.sacked_bytes
    }
    /// The highest SACKed offset (exclusive end), RFC 6675's "HighACK"-side of the scoreboard.
    pub fn highest_sacked(&self) -> Option<u64> {
        self.sacked.last().map(|(_, e)| e)
    }
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.sacked.heap_bytes()
    }
    /// Forgets everything (RFC 2018 §8: after an RTO the SACKed bits SHOULD be turned off).
    pub fn clear(&mut self) {
        self.sacked.clear();
        self.sacked_bytes = 0;
    }
    /// Records one SACK block `[l, r)`, clipped to `(una, max)`; returns newly SACKed bytes.
    pub fn add(&mut self, l: u64, r: u64, una: u64, max: u64) -> u64 {
        let (l, r) = (l.max(una), r.min(max));
        if l >= r {
            return 0;
        }
        let n = self.sacked.insert(l, r, MAX_RANGES).unwrap_or(0);
        self.sacked_bytes += n;
        n
    }
    /// SND.UNA advanced to `una`.
    pub fn on_cumulative_ack(&mut self, una: u64) {
        let removed = self.sacked.remove_below(una);
        self.sacked_bytes = self.sacked_bytes.saturating_sub(removed);
    }
    /// Is the byte at `off` SACKed?
    pub fn is_sacked(&self, off: u64) -> bool {
        self.sacked.containing(off).is_some()
    }
    /// SACKed bytes in `[a, b)`.
    pub fn sacked_in(&self, a: u64, b: u64) -> u64 {
        self.sacked.covered(a, b)
    }

    /// RFC 6675 §4 IsLost(): a byte is lost if DupThresh discontiguous SACKed sequences, or more
    /// than (DupThresh - 1) * SMSS bytes, are SACKed above it. Returns the boundary below which
    /// every unSACKed byte is lost (0 if none is).
    pub fn lost_boundary(&self, dupthresh: u32, mss: u32) -> u64 {
        let byte_limit = u64::from(dupthresh.saturating_sub(1)) * u64::from(mss);
        let mut bytes = 0;
        for (count, &(s, e)) in self.sacked.ranges().iter().rev().enumerate() {
            bytes += e - s;
            if count + 1 >= dupthresh as usize || bytes > byte_limit {
                return s;
            }
        }
        0
    }

    /// The first unSACKed hole `[x, y)` in `[from, limit)`.
    pub fn next_hole(&self, from: u64, limit: u64) -> Option<(u64, u64)> {
        self.sacked.first_gap(from, limit)
    }
}

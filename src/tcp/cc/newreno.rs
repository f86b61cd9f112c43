//! NewReno congestion avoidance, RFC 5681 §3.1 (the fast-recovery part, RFC 6582, is in the
//! connection's loss recovery).

use super::Window;

/// Byte-counting congestion avoidance.
#[derive(Debug, Clone, Default)]
pub struct NewReno {
    bytes_acked: u32,
}

impl NewReno {
    /// Fresh state.
    pub fn new() -> Self {
        Self::default()
    }

    /// RFC 5681 §3.1 eq. 3 (byte counting variant, RFC 3465 §2.1): cwnd grows by SMSS once per
    /// cwnd bytes acknowledged.
    pub fn on_ack_ca(&mut self, w: &mut Window, acked: u32) {
        self.bytes_acked = self.bytes_acked.saturating_add(acked);
        if self.bytes_acked >= w.cwnd {
            self.bytes_acked -= w.cwnd;
            w.cwnd = w.cwnd.saturating_add(w.mss);
        }
    }
}

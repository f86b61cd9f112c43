//! Packet scheduler: which subflow gets the next chunk of the data-level stream
//! (`crate::config::Mode`). Pure: it sees one [`Candidate`] per subflow.
//!
//! RFC 8684 §3.3.8: a backup subflow (flag B, ours or the peer's) is used only when no regular
//! subflow is available; all modes apply that first.

use std::time::Duration;

use crate::config::Mode;

/// What the scheduler knows of one subflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Caller's index.
    pub idx: usize,
    /// Backup priority (local or peer, §3.3.8).
    pub backup: bool,
    /// Smoothed RTT, if measured.
    pub srtt: Option<Duration>,
    /// The congestion window has room for another segment.
    pub has_room: bool,
    /// Not able to carry data now (handshake pending, stalled on RTOs, declared down).
    pub failing: bool,
    /// The rank of its path ([`crate::mptcp::LocalPath::rank`]; 0 for a server's subflows).
    pub rank: u8,
}

fn rtt(c: &Candidate) -> Duration {
    // An unmeasured subflow sorts after measured ones.
    c.srtt.unwrap_or(Duration::from_secs(3600))
}

/// The subflow for the next chunk, or `None` to wait (for cwnd space, or because none can send).
///
/// - handover: the usable regular subflow of the lowest path rank, then lowest RTT (in practice
///   the Ethernet or Wi-Fi one), even when it has no room (wait rather than spill onto cellular);
///   backups only when no regular one is usable, again by rank then RTT.
/// - interactive: the lowest-RTT usable subflow; wait for it when it is full.
/// - aggregate: the lowest-RTT usable subflow that has room (spill onto the others).
pub fn pick(mode: Mode, cands: &[Candidate]) -> Option<usize> {
    let usable = |b: bool| cands.iter().filter(move |c| !c.failing && c.backup == b);
    let tier_backup = usable(false).next().is_none();
    let mut tier: Vec<&Candidate> = usable(tier_backup).collect();
    match mode {
        Mode::Handover => tier.sort_by_key(|c| (c.rank, rtt(c), c.idx)),
        Mode::Interactive | Mode::Aggregate | Mode::Redundant => tier.sort_by_key(|c| (rtt(c), c.idx)),
    }
    match mode {
        Mode::Handover | Mode::Interactive | Mode::Redundant => {
            tier.first().filter(|c| c.has_room).map(|c| c.idx)
        }
        Mode::Aggregate => tier.iter().find(|c| c.has_room).map(|c| c.idx),
    }
}

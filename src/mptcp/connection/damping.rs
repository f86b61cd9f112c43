//! Flap damping (issue 14): what a path remembers across the loss of its subflows, so that a
//! Wi-Fi going down and up (or blackholed and back) every second neither stalls the data nor
//! drags it back and forth.
//!
//! - *RTT memory*: the smoothed RTT, its variation and the smallest probe RTT of the path's
//!   last subflows. A subflow joined again has no RTT sample of its own until it sends data
//!   whose ACK it can time, and never if its SYN was retransmitted (Karn's rule, RFC 6298
//!   §3) and it only receives (a download). Its liveness bounds were then derived from its
//!   RTO, seconds, so the next blackhole of the path went unnoticed for seconds: this was the
//!   1.8 s stall of issue 14, at the loss that followed a rejoin whose SYN was lost in the
//!   flapping. The bounds now fall back to what the path measured before.
//! - *Hold-down*: each loss of a path adds to its flap count, which halves every
//!   `flap_half_life` without a loss. A regular path that lost its subflow and came back is
//!   held as a backup (§3.3.8: flag B in its MP_JOIN, MP_PRIO later) from the moment its new
//!   subflow answers, for `flap_hold` doubled for every further recent loss (up to
//!   `flap_hold_max`), while the other path stays primary. Meanwhile it is probed: a probe
//!   left unanswered fails it over like any unresponsive subflow (one more flap). Once the
//!   hold passed with the last probe answered, the path is made primary again
//!   (`sync_priorities`).

use std::time::Duration;

use super::Connection;
use crate::mptcp::PathId;
use crate::time::Instant;

/// What the last subflows of a path measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RttMemory {
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Its variation.
    pub rttvar: Duration,
    /// Smallest RTT of an answered probe.
    pub probe_rtt: Option<Duration>,
}

/// Flap history of one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Damping {
    /// Recent losses (halved every `flap_half_life`, counted at `last_loss`).
    flaps: u32,
    /// When the path last lost its subflows.
    last_loss: Option<Instant>,
}

/// Most flaps counted (the hold is capped by `flap_hold_max` anyway).
const MAX_FLAPS: u32 = 16;

impl Damping {
    /// The flap count as of `now` (decayed).
    fn flaps_at(&self, now: Instant, half_life: Duration) -> u32 {
        let Some(at) = self.last_loss else { return 0 };
        if half_life.is_zero() {
            return self.flaps;
        }
        let halvings = (now.saturating_duration_since(at).as_millis() / half_life.as_millis().max(1)).min(31);
        self.flaps >> halvings
    }

    /// The path lost its subflows at `now`.
    pub fn lost(&mut self, now: Instant, half_life: Duration) {
        self.flaps = (self.flaps_at(now, half_life) + 1).min(MAX_FLAPS);
        self.last_loss = Some(now);
    }
}

/// Hold-down of one subflow of a regular path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::mptcp) enum Hold {
    /// Not held (or released).
    #[default]
    No,
    /// To be held this long from when it answers (it is still joining).
    Pending(Duration),
    /// Held as a backup until then.
    Until(Instant),
}

impl Connection {
    /// The hold a subflow joined on `path` at `now` gets: none for a backup path or a path
    /// without recent losses, else `flap_hold` doubled for every further recent loss.
    pub(super) fn hold_for_join(&self, now: Instant, path: PathId) -> Hold {
        let cfg = &self.cfg;
        if cfg.flap_hold.is_zero() || cfg.mode != crate::config::Mode::Handover || self.pm.is_backup(path) {
            return Hold::No;
        }
        let Some(p) = self.pm.path(path) else {
            return Hold::No;
        };
        let flaps = p.damping.flaps_at(now, cfg.flap_half_life);
        if flaps == 0 {
            return Hold::No;
        }
        let hold = cfg.flap_hold.saturating_mul(1 << (flaps - 1).min(16));
        Hold::Pending(hold.min(cfg.flap_hold_max.max(cfg.flap_hold)))
    }

    /// Subflow `i` is held as a backup (its path flapped and has not answered long enough).
    pub(super) fn held(&self, i: usize) -> bool {
        self.subflows[i].mp.live.hold != Hold::No
    }

    /// `path` lost its working subflow at `now` (link down, or unresponsive): one more flap.
    pub(super) fn note_path_loss(&mut self, now: Instant, path: PathId) {
        let half_life = self.cfg.flap_half_life;
        if let Some(p) = self.pm.path_mut(path) {
            p.damping.lost(now, half_life);
        }
    }

    /// Remembers the RTT measured by every ready subflow for its path (client).
    pub(super) fn remember_rtts(&mut self) {
        for i in 0..self.subflows.len() {
            if !self.ready(i) {
                continue;
            }
            let s = &self.subflows[i];
            let h = s.tcp.health();
            let probe_rtt = s.mp.live.probe_rtt;
            let path = s.path;
            if let Some(p) = self.pm.path_mut(path) {
                let old = p.rtt;
                p.rtt = match (h.srtt, old) {
                    (Some(srtt), _) => Some(RttMemory {
                        srtt,
                        rttvar: h.rttvar,
                        probe_rtt: probe_rtt.or(old.and_then(|m| m.probe_rtt)),
                    }),
                    (None, Some(m)) => Some(RttMemory {
                        probe_rtt: probe_rtt.or(m.probe_rtt),
                        ..m
                    }),
                    (None, None) => None,
                };
            }
        }
    }

    /// What subflow `i`'s path measured before (for a subflow without its own sample).
    pub(super) fn rtt_memory(&self, i: usize) -> Option<RttMemory> {
        self.pm.path(self.subflows[i].path).and_then(|p| p.rtt)
    }

    /// Phase 10b, after liveness (a held subflow that failed its probe is gone) and before
    /// `sync_priorities`, which acts on the result: starts the hold of subflows that just
    /// answered, releases those whose hold passed with no probe in flight.
    pub(super) fn damp(&mut self, now: Instant) {
        for i in 0..self.subflows.len() {
            if !self.ready(i) {
                continue;
            }
            let path = self.subflows[i].path.0;
            let live = &mut self.subflows[i].mp.live;
            match live.hold {
                Hold::No => {}
                Hold::Pending(d) => live.hold = Hold::Until(now + d),
                Hold::Until(t) => {
                    if now >= t && live.probe.is_none() {
                        tracing::debug!(path, "flap hold passed: primary again");
                        live.hold = Hold::No;
                    }
                }
            }
        }
    }

    /// The next hold to pass (for the timer table). A hold whose subflow has a probe in
    /// flight waits for the probe's outcome (its own deadline).
    pub(super) fn hold_deadline(&self) -> Option<Instant> {
        (0..self.subflows.len())
            .filter(|&i| self.ready(i))
            .filter_map(|i| match self.subflows[i].mp.live {
                l if l.probe.is_some() => None,
                l => match l.hold {
                    Hold::Until(t) => Some(t),
                    // Started by `damp` in the same `after_io` that made it ready.
                    Hold::No | Hold::Pending(_) => None,
                },
            })
            .min()
    }
}

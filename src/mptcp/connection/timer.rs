//! The connection's timers (STYLE.md point 5, as `tcp/timer.rs`): a small enum and a table of
//! absolute deadlines; [`poll_timeout`](Connection::poll_timeout) is the minimum of it and of
//! the subflows' own timers.
//!
//! Three timers are armed and disarmed where their cause happens and stored in the
//! connection's table. The other four follow from state that changes in many places (a
//! subflow's liveness signals, whether a join is wanted, whether a subflow can carry an
//! announcement, a flap hold), so their deadlines are filled into a copy of the table when it is asked for,
//! exactly as the phases of `after_io` that act on them will see it.

use super::Connection;
use crate::time::Instant;

/// One timer of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Stored: the DATA_FIN is retransmitted until DATA_ACKed (RFC 8684 §3.3.3).
    FinRtx,
    /// Stored: data-level retransmission (§3.3.6), see `check_data_rto`.
    DataRto,
    /// Stored: the connection has had no subflow since `orphan_timeout` before this.
    Orphan,
    /// Derived: the next liveness decision on a subflow (`liveness_deadline`).
    Liveness,
    /// Derived: the next join the path manager opens (`next_join`).
    Join,
    /// Derived: the next ADD_ADDR repetition (`next_announcement`).
    Announce,
    /// Derived: the next flap hold to pass (`hold_deadline`).
    Hold,
    /// Derived: the next keep-alive of a backup, or check of a backup idle long enough to
    /// have lost its NAT mapping (`standby_deadline`).
    Standby,
}

const N: usize = Timer::Standby as usize + 1;

/// Absolute deadlines, one per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Timers {
    at: [Option<Instant>; N],
}

impl Timers {
    /// The deadline of `t`, if armed.
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.at[t as usize]
    }

    /// Arms `t` at `at`, or disarms it (`None`).
    pub fn set(&mut self, t: Timer, at: Option<Instant>) {
        self.at[t as usize] = at;
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

impl Connection {
    /// The table with the derived deadlines filled in. Once closed, only the DATA_FIN and
    /// orphan timers still count (the other phases do nothing then).
    fn deadlines(&self) -> Timers {
        let mut t = self.timers;
        if self.is_closed() {
            t.set(Timer::DataRto, None);
            return t;
        }
        t.set(Timer::Liveness, self.liveness_deadline());
        t.set(Timer::Join, self.next_join());
        t.set(Timer::Announce, self.next_announcement());
        t.set(Timer::Hold, self.hold_deadline());
        t.set(Timer::Standby, self.standby_deadline());
        t
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let subflows = self.subflows.iter().filter_map(|s| s.tcp.poll_timeout()).min();
        subflows.into_iter().chain(self.deadlines().next()).min()
    }

    /// What [`poll_timeout`](Self::poll_timeout) is made of, for diagnostics (the simulator
    /// names it when a deadline stays due).
    pub fn describe_deadlines(&self) -> String {
        let subflows: Vec<_> = self
            .subflows
            .iter()
            .map(|s| {
                (
                    s.path.0,
                    s.dead,
                    s.tcp.poll_timeout(),
                    s.mp.live,
                    s.mp.backup,
                    s.tcp.health().last_recv,
                    s.tcp.health().bytes_in_flight,
                )
            })
            .collect();
        format!(
            "{:?}, subflows (path, dead, timeout) {subflows:?}",
            self.deadlines()
        )
    }

    /// Runs the timers due at `now`: the subflows' own, the DATA_FIN retransmission; the others
    /// are acted on by the phases of `after_io`, which check them against `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in &mut self.subflows {
            s.tcp.handle_timeout(now);
        }
        if self.timers.get(Timer::FinRtx).is_some_and(|at| now >= at) {
            self.on_fin_rtx(now);
        }
        self.after_io(now);
    }
}

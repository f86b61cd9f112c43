//! The connection's timers: a small enum and a table of absolute deadlines; the next wake-up is
//! the minimum (STYLE.md point 5).

use crate::time::Instant;

/// One timer of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// RFC 6298 retransmission timer (also SYN / SYN-ACK retransmission).
    Retransmit = 0,
    /// Delayed ACK, RFC 9293 §3.8.6.3.
    DelayedAck = 1,
    /// Zero-window probe (persist), RFC 9293 §3.8.6.1.
    Persist = 2,
    /// Keep-alive, RFC 9293 §3.8.4.
    Keepalive = 3,
    /// TIME-WAIT expiry, RFC 9293 §3.10.7.4.
    TimeWait = 4,
    /// Pacing: the next data segment may leave at this time.
    Pacing = 5,
}

const N: usize = 6;
const ALL: [Timer; N] = [
    Timer::Retransmit,
    Timer::DelayedAck,
    Timer::Persist,
    Timer::Keepalive,
    Timer::TimeWait,
    Timer::Pacing,
];

/// Absolute deadlines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
    at: [Option<Instant>; N],
}

impl Timers {
    /// Arms `t` at `when` (replacing any earlier setting).
    pub fn set(&mut self, t: Timer, when: Instant) {
        self.at[t as usize] = Some(when);
    }
    /// Disarms `t`.
    pub fn stop(&mut self, t: Timer) {
        self.at[t as usize] = None;
    }
    /// The deadline of `t`.
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.at[t as usize]
    }
    /// True if armed.
    pub fn is_set(&self, t: Timer) -> bool {
        self.at[t as usize].is_some()
    }
    /// Disarms everything.
    pub fn clear(&mut self) {
        self.at = [None; N];
    }
    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
    /// Disarms and returns the first timer (in enum order) expired at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        for t in ALL {
            if self.at[t as usize].is_some_and(|d| d <= now) {
                self.at[t as usize] = None;
                return Some(t);
            }
        }
        None
    }
}

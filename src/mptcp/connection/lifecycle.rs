//! The connection's lifecycle: its [`Phase`], the application's [`close`](Connection::close)
//! and [`abort`](Connection::abort), subflows dying (reset, timed out, closed), the reports
//! that follow (subflow up, connected, peer closed, closed, timed out) and the orderly close of
//! the subflows once both data streams are complete.

use std::time::Duration;

use super::{Connection, Event, MptcpOption, State, SubflowResetCause, Timer};
use crate::mptcp::subflow::Handshake;
use crate::tcp;
use crate::time::Instant;

/// Where the connection stands. Fallback, our own close (`app_closed`) and the once-only
/// reports are independent of it and stay flags on [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No subflow has been able to carry data yet.
    Connecting,
    /// A subflow came up ([`Event::Connected`] reported).
    Open,
    /// Both data streams are complete (our DATA_FIN acknowledged, the peer's received): the
    /// subflows are being closed with FIN.
    Closing,
    /// A terminal event was reported, or [`abort`](Connection::abort) called. `graceful_at`:
    /// when, if it followed [`Closing`](Phase::Closing): subflows opened after that (joins taken
    /// for a while, see `accept_join`) are closed at once too.
    Closed { graceful_at: Option<Instant> },
}

impl Connection {
    /// Closes our direction: a DATA_FIN follows the queued data (§3.3.3).
    pub fn close(&mut self) {
        self.app_closed = true;
        self.send.close();
    }

    /// Aborts: MP_FASTCLOSE on a RST on every subflow (§3.5), everything dropped; no event.
    pub fn abort(&mut self) {
        let fc = self.neg.filter(|_| !self.fallback).map(|n| n.fastclose_option());
        for s in &mut self.subflows {
            s.mp.rst_opt = fc;
            s.tcp.abort();
            s.dead = true;
        }
        self.phase = Phase::Closed { graceful_at: None };
    }

    /// Whether a terminal event was reported (or [`abort`](Self::abort) called).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    /// The subflows are being closed because both data streams are complete (also after the
    /// graceful [`Event::Closed`], for subflows that join late).
    fn subflows_closing(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closing | Phase::Closed { graceful_at: Some(_) }
        )
    }

    /// When the graceful close was reported, if it was.
    pub(super) fn closed_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed { graceful_at } => graceful_at,
            _ => None,
        }
    }

    /// Reports `ev` as the terminal event, unless one was reported already.
    pub(super) fn terminal_event(&mut self, ev: Event) {
        if !self.is_closed() {
            self.phase = Phase::Closed { graceful_at: None };
            self.events.push_back(ev);
        }
    }

    /// Resets subflow `i` with `opt` on its RST and reports why.
    pub(super) fn reset_subflow(&mut self, i: usize, opt: MptcpOption, cause: SubflowResetCause) {
        let id = self.subflows[i].id;
        self.subflows[i].mp.rst_opt = Some(opt);
        self.subflows[i].tcp.abort();
        self.events.push_back(Event::SubflowReset { id, cause });
        self.kill_subflow(i);
    }

    /// Aborts subflow `i` with a bare RST (no MPTCP option) and removes it from use.
    pub(super) fn drop_subflow(&mut self, i: usize) {
        self.subflows[i].mp.rst_opt = None;
        self.subflows[i].tcp.abort();
        self.kill_subflow(i);
    }

    /// Removes subflow `i` from use: what it carried is reinjected elsewhere (§3.3.6), and a
    /// join that never carried data marks its target address as failed from that path.
    pub(super) fn kill_subflow(&mut self, i: usize) {
        let s = &mut self.subflows[i];
        if s.dead {
            return;
        }
        s.dead = true;
        let id = s.id;
        self.forget_syn_data_of(id);
        let s = &mut self.subflows[i];
        if !s.up
            && !s.mp.live.retired
            && matches!(
                s.mp.hs,
                Handshake::JoinSyn(_)
                    | Handshake::JoinAck(_)
                    | Handshake::Established
                    | Handshake::CapableUnconfirmed(_)
            )
        {
            // A join that never carried data: try the peer's other addresses from this path.
            self.pm.join_failed(s.path);
        }
        // After fallback the data stream continues on the remaining subflow alone: nothing is
        // reinjected into it.
        if !self.fallback {
            self.send.mark_subflow_failed(s.id);
        }
        self.events.push_back(Event::SubflowDown {
            id: s.id,
            path: s.path,
        });
    }

    /// Phase 1, first: the subflows' own events (reset, timed out, closed) mark them dead
    /// before any later phase counts live subflows or moves data on them.
    pub(super) fn take_subflow_events(&mut self) {
        for i in 0..self.subflows.len() {
            while let Some(ev) = self.subflows[i].tcp.poll_event() {
                match ev {
                    tcp::Event::Reset | tcp::Event::TimedOut => {
                        let initial_syn = matches!(self.subflows[i].mp.hs, Handshake::CapableSyn { .. });
                        let other_path = self.pm.other_available(self.subflows[i].path);
                        let terminal = if ev == tcp::Event::Reset {
                            Event::Reset
                        } else {
                            Event::TimedOut
                        };
                        if initial_syn && !self.subflows[i].dead && (ev == tcp::Event::Reset || !other_path) {
                            // RFC 9293 §3.10.7.3: a RST answering our SYN means "connection
                            // refused" (no retry elsewhere: the destination said no); a SYN that
                            // timed out with no other path to try fails the connection.
                            self.subflows[i].dead = true;
                            self.terminal_event(terminal);
                        } else if self.fallback && !self.subflows[i].dead {
                            self.subflows[i].dead = true;
                            self.terminal_event(terminal);
                        }
                        self.kill_subflow(i);
                    }
                    tcp::Event::Closed => {
                        if self.fallback && self.subflows[i].mp.no_options {
                            // After fallback a graceful close means our FIN (the DATA_FIN) was
                            // acknowledged.
                            self.fin_acked_by_subflow();
                        }
                        self.subflows[i].dead = true;
                    }
                    _ => {}
                }
            }
            if matches!(
                self.subflows[i].mp.hs,
                Handshake::CapableSyn { .. } | Handshake::JoinSyn(_)
            ) && self.subflows[i].tcp.is_closed()
                && !self.subflows[i].dead
            {
                self.kill_subflow(i);
            }
        }
    }

    /// Phase 6, after stall detection: subflows able to carry data are reported up (and the
    /// first one connects the connection), before the close phases below can report `Closed`.
    pub(super) fn report_subflows_up(&mut self) {
        for i in 0..self.subflows.len() {
            if self.subflows[i].dead || self.subflows[i].up || !self.ready(i) {
                continue;
            }
            self.subflows[i].up = true;
            let s = &self.subflows[i];
            let ev = Event::SubflowUp {
                id: s.id,
                path: s.path,
                backup: s.mp.backup || s.mp.peer_backup,
            };
            self.events.push_back(ev);
            if self.phase == Phase::Connecting {
                self.phase = Phase::Open;
                self.events.push_back(Event::Connected {
                    mptcp: !self.fallback,
                });
            }
        }
    }

    /// Phase 7, after the data was drained (a DATA_FIN counts once its mapping was consumed):
    /// the peer's DATA_FIN is reported once.
    pub(super) fn report_peer_closed(&mut self) {
        if !self.peer_closed_reported && self.recv.as_ref().is_some_and(|r| r.fin_received()) {
            self.peer_closed_reported = true;
            self.events.push_back(Event::PeerClosed);
        }
    }

    /// Phase 8, after the DATA_ACK bookkeeping of phases 2–4: once both data streams are done,
    /// the subflows are closed (FIN), then `Closed` is reported.
    pub(super) fn close_when_done(&mut self, now: Instant) {
        let both_done = self.send.fin_acked() && self.recv.as_ref().is_some_and(|r| r.fin_received());
        if both_done && matches!(self.phase, Phase::Connecting | Phase::Open) {
            self.phase = Phase::Closing;
            for s in &mut self.subflows {
                if !s.dead {
                    s.tcp.close();
                }
            }
        }
        if !self.subflows_closing() {
            return;
        }
        for s in &mut self.subflows {
            if !s.dead && matches!(s.tcp.state(), State::Established | State::CloseWait) {
                s.tcp.close();
            }
        }
        // Both data streams are complete: a subflow stalled on RTOs has nothing left to
        // carry; reset it rather than wait for its FIN to time out.
        for i in 0..self.subflows.len() {
            // (Several RTOs: one lost FIN is no dead path, and the peer may still need
            // our DATA_ACK on it.)
            if !self.subflows[i].dead
                && self.subflows[i].tcp.health().consecutive_rtos >= self.cfg.stall_rtos.max(3)
            {
                self.drop_subflow(i);
            }
        }
        if self.phase == Phase::Closing
            && self
                .subflows
                .iter()
                .all(|s| s.dead || matches!(s.tcp.state(), State::TimeWait | State::Closed | State::FinWait2))
        {
            self.terminal_event(Event::Closed);
            self.phase = Phase::Closed {
                graceful_at: Some(now),
            };
        }
    }

    /// Phase 9, after every phase that may kill a subflow: a connection left without any
    /// subflow for `orphan_timeout` times out.
    pub(super) fn check_orphan(&mut self, now: Instant) {
        if self.is_closed() {
            self.timers.set(Timer::Orphan, None);
            return;
        }
        if self.subflows.iter().any(|s| !s.dead) {
            self.timers.set(Timer::Orphan, None);
        } else if self.timers.get(Timer::Orphan).is_none() {
            self.timers
                .set(Timer::Orphan, Some(now + self.cfg.orphan_timeout));
        }
        if self.timers.get(Timer::Orphan).is_some_and(|at| now >= at) {
            self.terminal_event(Event::TimedOut);
        }
    }

    /// After a graceful close, joins are still taken for a while (like TIME-WAIT): the peer
    /// may be missing the DATA_ACK of its DATA_FIN and need a subflow to get it.
    pub(super) fn accepting_joins(&self, now: Instant) -> bool {
        let linger = self.cfg.tcp.time_wait.max(Duration::from_secs(2)) * 4;
        !self.is_closed() || self.closed_at().is_some_and(|t| now < t + linger)
    }
}

//! Path liveness and backup priorities (the policy half of handover, issue 5 point 5): the
//! liveness signals of every subflow, the failover of an unresponsive one, REMOVE_ADDR for our
//! addresses gone (§3.4.2), and MP_PRIO kept in step with the regular paths.
//!
//! A subflow whose path stops answering while its link stays up (a blackholed Wi-Fi router,
//! a captive portal gone silent, heavy loss) is detected well before its retransmission timer
//! would give up, from two signals, each bounded by a few smoothed RTTs:
//!
//! - *sending*: data is in flight and nothing at all came back for the bound;
//! - *receiving*: data was arriving and stopped; the subflow is probed (a keep-alive form
//!   segment, RFC 9293 §3.8.4, that the peer must answer at once) and the probe goes unanswered
//!   for the bound. A sender that merely paused answers the probe, so bursty traffic does not
//!   trip it.
//!
//! Such a subflow is then treated as if its link went down: its data is reinjected on the
//! others (§3.3.6), and the peer is told to stop using it with a REMOVE_ADDR for its address
//! (§3.4.2; the peer closes the subflows using that address and retransmits what they carried).
//! The path manager joins the path again later; when it answers, traffic returns.
//!
//! In handover mode, backup subflows (RFC 8684 §3.3.8, flag B) are used only while no regular
//! subflow can carry data; the priorities are kept in step with that on both sides with MP_PRIO,
//! so the peer sends on the backup at once when the regular path fails, and stops when it
//! returns.

use std::time::Duration;

use super::{Connection, Event};
use crate::config::Mode;
use crate::time::Instant;
use crate::wire::mptcp::MptcpOption;

/// Liveness state of one subflow (kept in its `SubflowMp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::mptcp) struct Liveness {
    /// Since when data has been in flight without a break (for the sending signal).
    pub(in crate::mptcp) busy_since: Option<Instant>,
    /// When payload last arrived.
    pub(in crate::mptcp) last_data_rx: Option<Instant>,
    /// The probe in flight: when it was sent.
    pub(in crate::mptcp) probe: Option<Instant>,
    /// When the last probe was sent.
    pub(in crate::mptcp) last_probe: Option<Instant>,
    /// Smallest round trip of an answered probe: the path's RTT without the queueing delay that
    /// inflates SRTT during a bulk download (the probe and its answer cross the idle
    /// directions).
    pub(in crate::mptcp) probe_rtt: Option<Duration>,
    /// Flap hold-down of the subflow ([`super::damping`]).
    pub(in crate::mptcp) hold: super::damping::Hold,
    /// Fell silent with nowhere to move its traffic: a path kept only as a last resort may
    /// be joined now ([`super::standby`]). Cleared when the peer is heard again.
    pub(in crate::mptcp) suspect: bool,
    /// A backup subflow just made regular (its regular path failed): checked once for a lost
    /// NAT mapping ([`super::standby`]).
    pub(in crate::mptcp) verify: bool,
    /// Closed by the standby policy (a lost race, a last-resort path not needed): its join
    /// target does not count as failed.
    pub(in crate::mptcp) retired: bool,
}

/// Least time between two probes on one subflow (bounds the probe traffic of bursty flows;
/// each probe is one small segment that the peer acknowledges at once).
const PROBE_SPACING: Duration = Duration::from_millis(50);

/// A subflow is probed only this long after its last data: a flow silent for longer is idle,
/// not failing (and an idle path costs nothing when it fails).
const ACTIVE: Duration = Duration::from_secs(1);

/// Least time between two probes of a subflow held after a flap ([`super::damping`]): it
/// must keep answering to be made primary again.
const HOLD_PROBE_EVERY: Duration = Duration::from_millis(100);

impl Connection {
    /// Liveness is watched while MPTCP is in use and the connection open.
    fn liveness_on(&self) -> bool {
        self.is_mptcp() && !self.is_closed()
    }

    /// The silence bound of subflow `i` if its liveness is watched (it can carry data, and the
    /// check is enabled).
    fn watched(&self, i: usize) -> Option<Duration> {
        if self.ready(i) { self.stale_bound(i) } else { None }
    }

    /// How long a path may stay silent before it counts as unresponsive: `stale_rtts` RTTs
    /// without queueing delay. (A floor at SRTT + 4 RTTVAR, against a queue-delayed healthy
    /// path taken for a dead one, was tried: it slowed the detection of a blackhole through a
    /// converter at 50 ms RTT from ~290 to ~400 ms in the lab, and the false failover it was
    /// for has not been reproduced in the simulator.)
    fn stale_bound(&self, i: usize) -> Option<Duration> {
        if self.cfg.stale_rtts == 0 {
            return None;
        }
        let rtt = self.path_rtt(i);
        // Some slack for jitter on short paths.
        let slack = rtt + Duration::from_millis(20);
        Some((rtt * self.cfg.stale_rtts).max(slack).max(self.cfg.stale_floor))
    }

    /// The best estimate of subflow `i`'s round trip without queueing delay. A subflow without
    /// an RTT sample of its own (joined again after a flap, its SYN retransmitted, only
    /// receiving) takes what its path measured before ([`super::damping`]); only a path never
    /// measured falls back to the RTO.
    pub(super) fn path_rtt(&self, i: usize) -> Duration {
        let s = &self.subflows[i];
        let h = s.tcp.health();
        let mem = self.rtt_memory(i);
        let srtt = h.srtt.or(mem.map(|m| m.srtt)).unwrap_or(h.rto);
        let probe_rtt = s.mp.live.probe_rtt.or(mem.and_then(|m| m.probe_rtt));
        // A probe "answered" by an unrelated segment underestimates: trust it down to half SRTT.
        probe_rtt.map_or(srtt, |p| p.clamp(srtt / 2, srtt))
    }

    /// A held subflow is probed once it was silent this long.
    fn hold_probe_after(&self, i: usize) -> Option<Duration> {
        self.held(i).then(|| self.path_rtt(i).max(HOLD_PROBE_EVERY))
    }

    /// Records payload arrival on subflow `i` (liveness input).
    pub(super) fn note_data_rx(&mut self, now: Instant, i: usize) {
        if let Some(s) = self.subflows.get_mut(i) {
            s.mp.live.last_data_rx = Some(now);
            s.mp.live.probe = None;
            s.mp.live.suspect = false;
        }
    }

    /// The next time [`check_liveness`](Self::check_liveness) has something to decide.
    pub(super) fn liveness_deadline(&self) -> Option<Instant> {
        if !self.liveness_on() {
            return None;
        }
        let mut t: Option<Instant> = None;
        for i in 0..self.subflows.len() {
            let Some(bound) = self.watched(i) else { continue };
            let send_after = self.send_silence(i);
            let hold_after = self.hold_probe_after(i);
            let s = &self.subflows[i];
            let mut add = |x: Instant| t = Some(t.map_or(x, |y: Instant| y.min(x)));
            match s.mp.live.probe {
                Some(at) => add(at + bound),
                None => {
                    let spaced = |x: Instant| s.mp.live.last_probe.map_or(x, |p| x.max(p + PROBE_SPACING));
                    if let Some(busy) = s.mp.live.busy_since {
                        add(spaced(busy.max(s.tcp.health().last_recv) + send_after));
                    }
                    if let Some(after) = hold_after {
                        add(spaced(s.tcp.health().last_recv + after));
                    }
                    if !s.mp.backup
                        && let Some(rx) = s.mp.live.last_data_rx
                    {
                        let quiet = rx.max(s.tcp.health().last_recv);
                        let spaced = s.mp.live.last_probe.map_or(rx, |p| p + PROBE_SPACING);
                        let at = (quiet + self.probe_after(i)).max(spaced);
                        if at < rx + ACTIVE {
                            add(at);
                        }
                    }
                }
            }
        }
        t
    }

    /// Silence on a sending subflow (data in flight, nothing coming back) after which it is
    /// probed: an RTT and a half. The probe's answer is immediate, whereas the peer may delay
    /// its ACK of a lone segment (RFC 9293 §3.8.6.3), so silence alone decides nothing.
    fn send_silence(&self, i: usize) -> Duration {
        self.path_rtt(i) + self.probe_after(i)
    }

    /// Silence on a receiving subflow after which it is probed: half an RTT (a bulk transfer
    /// delivers many segments per RTT), at least 10 ms.
    fn probe_after(&self, i: usize) -> Duration {
        (self.path_rtt(i) / 2).max(Duration::from_millis(10))
    }

    /// Phase 10, once the subflows dead after this input are known and the close phases had
    /// their say: updates the liveness signals of every subflow; a subflow found unresponsive
    /// is failed over (only when another subflow can take its traffic).
    pub(super) fn check_liveness(&mut self, now: Instant) {
        if !self.liveness_on() {
            return;
        }
        self.remember_rtts();
        for i in 0..self.subflows.len() {
            // A subflow whose data stopped longer than ACTIVE ago is idle: its receiving
            // signal is disarmed here, whatever else holds, so that no deadline of it stays
            // in the past (a backup made regular again by `sync_priorities` after this phase
            // would otherwise bring back a receiving deadline the check no longer acts on).
            let live = &mut self.subflows[i].mp.live;
            if live.last_data_rx.is_some_and(|rx| now >= rx + ACTIVE) {
                live.last_data_rx = None;
            }
            let Some(bound) = self.watched(i) else { continue };
            let probe_after = self.probe_after(i);
            let send_after = self.send_silence(i);
            let hold_after = self.hold_probe_after(i);
            let s = &mut self.subflows[i];
            let h = s.tcp.health();
            let live = &mut s.mp.live;
            // Sending signal.
            if h.bytes_in_flight == 0 {
                live.busy_since = None;
            } else if live.busy_since.is_none() {
                live.busy_since = Some(now);
            }
            // When the path fell silent, and when the unanswered probe left.
            let mut silent_since = None;
            match live.probe {
                Some(at) if h.last_recv > at => {
                    // Answered (data arriving clears the probe instead, so this is the ACK
                    // answering it): the path is alive, the sender just paused.
                    live.probe = None;
                    live.suspect = false;
                    let rtt = h.last_recv - at;
                    live.probe_rtt = Some(live.probe_rtt.map_or(rtt, |r| r.min(rtt)));
                }
                Some(at) => {
                    if now >= at + bound {
                        // Silent since the last thing heard.
                        silent_since = Some((h.last_recv.min(at), at));
                    }
                }
                None => {
                    // Sending: any segment from the peer (duplicate ACKs during a loss recovery
                    // too) shows the path alive; only silence counts, not slow progress.
                    let sending = live
                        .busy_since
                        .is_some_and(|busy| now >= busy.max(h.last_recv) + send_after);
                    // Receiving: nothing at all arrived for a while, and the subflow is still
                    // active. A backup subflow falling silent is expected (the peer moved to a
                    // regular one).
                    let receiving = !s.mp.backup
                        && live
                            .last_data_rx
                            .is_some_and(|rx| now >= rx.max(h.last_recv) + probe_after && now < rx + ACTIVE);
                    // Held after a flap: it must keep answering to be made primary again.
                    let held = hold_after.is_some_and(|after| now >= h.last_recv + after);
                    if (sending || receiving || held)
                        && live.last_probe.is_none_or(|p| now >= p + PROBE_SPACING)
                    {
                        live.probe = Some(now);
                        live.last_probe = Some(now);
                        s.tcp.send_probe();
                    }
                }
            }
            let Some((since, probed)) = silent_since else {
                continue;
            };
            tracing::debug!(
                path = self.subflows[i].path.0,
                in_flight = h.bytes_in_flight,
                busy = ?self.subflows[i].mp.live.busy_since.map(|t| now - t),
                ack_progress_ago = ?(now - h.last_ack_progress),
                last_recv_ago = ?(now - h.last_recv),
                probe_ago = ?self.subflows[i].mp.live.probe.map(|t| now - t),
                data_rx_ago = ?self.subflows[i].mp.live.last_data_rx.map(|t| now - t),
                ?bound,
                "liveness: silent"
            );
            let other = (0..self.subflows.len()).any(|j| j != i && self.ready(j));
            if !other {
                // Nowhere to move to: start the watch over (probing goes on, spaced, while the
                // subflow counts as active).
                let live = &mut self.subflows[i].mp.live;
                live.probe = None;
                live.suspect = true;
                if live.busy_since.is_some() {
                    live.busy_since = Some(now);
                }
                continue;
            }
            self.fail_unresponsive(now, i, since, probed);
        }
    }

    /// Subflow `i` stopped answering (silent since `since`, its probe out since `probed`): drop
    /// it, reinject its data, tell the peer to stop using its address, and try the path again
    /// later.
    fn fail_unresponsive(&mut self, now: Instant, i: usize, since: Instant, probed: Instant) {
        let (path, addr_id) = (self.subflows[i].path, self.subflows[i].mp.local_addr_id);
        tracing::debug!(
            path = path.0,
            silent_ms = (now - since).as_millis() as u64,
            "subflow unresponsive"
        );
        if self.subflows[i].up {
            self.note_path_loss(now, path);
        }
        self.drop_subflow(i);
        self.events.push_back(Event::PathUnresponsive {
            path,
            silent_for: now - since,
            probe_out_for: now - probed,
        });
        self.signal_removed(addr_id);
        if let Some(p) = self.pm.path_mut(path) {
            p.next_join = now + self.cfg.join_retry;
        }
        self.sync_priorities();
    }

    /// RFC 8684 §3.4.2: tells the peer that our address `addr_id` is gone (on a subflow that
    /// still works), unless another live subflow still uses it.
    pub(super) fn signal_removed(&mut self, addr_id: u8) {
        // A server's address does not go away with one path of its client.
        if self.role != super::Role::Client
            || self
                .subflows
                .iter()
                .any(|s| !s.dead && s.mp.local_addr_id == addr_id)
        {
            return;
        }
        let Some(opt) = crate::mptcp::addr::remove(&[addr_id]) else {
            return;
        };
        if let Some(j) = (0..self.subflows.len()).find(|&j| self.ready(j)) {
            let s = &mut self.subflows[j];
            s.mp.oneoff.push_back(opt);
            s.tcp.request_ack();
        }
    }

    /// A path ahead of `path` (by [`PathManager::tier`](super::paths::PathManager::tier)) has
    /// a ready subflow not held after a flap.
    pub(super) fn outranked(&self, path: crate::mptcp::PathId) -> bool {
        let mine = self.pm.tier(path);
        (0..self.subflows.len())
            .any(|j| self.ready(j) && !self.held(j) && self.pm.tier(self.subflows[j].path) < mine)
    }

    /// Phase 11, after liveness may have failed the last regular subflow over and `damp` has
    /// started or ended holds, so that the backups take over in the same step. Handover mode:
    /// a subflow on a backup path is a backup (§3.3.8) exactly while a regular subflow that
    /// is not held can carry data, and a subflow on a regular path exactly while it is held or
    /// a lower-ranked regular path works;
    /// changes are announced with MP_PRIO on the subflow concerned.
    pub(super) fn sync_priorities(&mut self) {
        if self.cfg.mode != Mode::Handover || !self.is_mptcp() || self.is_closed() {
            return;
        }
        let backup_path = |c: &Connection, i: usize| c.pm.is_backup(c.subflows[i].path);
        for i in 0..self.subflows.len() {
            if !self.ready(i) {
                continue;
            }
            // A path is a backup while a path ahead of it (regular before backup, then by
            // rank: Ethernet, Wi-Fi, cellular) has a ready subflow; a regular path held after a
            // flap does not count as one until its hold passed, and is a backup meanwhile
            // ([`super::damping`]).
            let on_backup_path = backup_path(self, i);
            let want = self.held(i) || self.outranked(self.subflows[i].path);
            let s = &mut self.subflows[i];
            if s.mp.backup != want {
                s.mp.backup = want;
                // A backup taking over: is it really there ([`super::standby`])?
                s.mp.live.verify |= on_backup_path && !want;
                // RFC 8684 §3.3.8: MP_PRIO changes the priority of the subflow it is sent on.
                s.mp.oneoff.push_back(MptcpOption::MpPrio { backup: want });
                s.tcp.request_ack();
            }
        }
    }
}

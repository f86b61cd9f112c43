//! Backups that are really there (issue 14), and paths kept as a last resort (issue 16).
//!
//! A carrier NAT forgets an idle TCP mapping (some after 20-30 s) and drops the packets of a
//! mapping it does not know: a backup subflow that heard nothing for that long may be dead
//! while it looks established. So a backup idle longer than `nat_idle` is not trusted blindly
//! when it is needed — its regular path failed (it was just made regular), is suspected (a
//! liveness probe is out on the regular subflow: before the failover), or data is being sent
//! on it. It is probed, and in parallel a fresh MP_JOIN is opened on the same path from
//! another local port (a new NAT mapping): a [`Race`]. Whichever answers first carries on;
//! the other is closed with a RST carrying MP_TCPRST (RFC 8684 §3.6) — not with REMOVE_ADDR,
//! which names an address and would close the winner too: both subflows come from the same
//! address, so they share its address ID (§3.2: the ID "must map uniquely to a source IP
//! address"). The RST of a subflow whose mapping the NAT forgot may not get through; the
//! peer's half then sees no more data (the new subflow is regular, the old one still a
//! backup to it) and goes when the connection does. It still counts against the peer's
//! subflow limit until then (Linux: `ip mptcp limits`, `subflows` 2 by default and for
//! `mpbond server`): a connection raced twice on the same path may find its second fresh join
//! refused there.
//!
//! A keep-alive on standing backups (`backup_keepalive`, off by default) keeps the mapping
//! at the price of two small packets per interval on the backup path.
//!
//! A path marked [`last_resort`](crate::mptcp::LocalPath::last_resort) (its data budget past
//! the soft share) carries no standing subflow and no keep-alive while a subflow on another
//! path can carry the data: its subflows are closed then (RST with MP_TCPRST
//! "administratively prohibited", §3.6: "prohibited by the policies of the sending host"),
//! and the path manager joins it only when nothing else can (`join_wanted`).

use std::net::SocketAddr;

use super::{Connection, MptcpOption, Phase, Role, tcprst};
use crate::mptcp::send::SubflowId;
use crate::time::Instant;
use crate::wire::mptcp::RstReason;

/// A backup idle long enough to have lost its NAT mapping, probed at `since`, against a fresh
/// join on its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Race {
    /// The stale subflow.
    old: SubflowId,
    /// The fresh join (`None` while its local port is being asked for).
    fresh: Option<SubflowId>,
    /// When the probe went out.
    since: Instant,
}

impl Connection {
    fn index_of(&self, id: SubflowId) -> Option<usize> {
        self.subflows.iter().position(|s| s.id == id && !s.dead)
    }

    /// The standby policy applies: a client using MPTCP, open.
    fn standby_on(&self) -> bool {
        self.role == Role::Client && self.is_mptcp() && matches!(self.phase, Phase::Connecting | Phase::Open)
    }

    /// Phase 14b, after `give_up_joins` (a fresh join that failed is gone) and before
    /// `manage_paths`: settles the races, closes what a last-resort path does not need, starts
    /// the races due and sends the keep-alives due.
    pub(super) fn check_standby(&mut self, now: Instant) {
        if !self.standby_on() {
            return;
        }
        let mut changed = self.settle_races(now);
        changed |= self.retire_last_resort();
        self.start_races(now);
        self.send_keepalives(now);
        if changed {
            self.sync_priorities();
        }
    }

    /// Closes subflow `i` on its own (RFC 8684 §3.6: MP_TCPRST on the RST says why); what it
    /// carried is reinjected on the others (§3.3.6, in `kill_subflow`).
    fn retire(&mut self, i: usize, reason: RstReason) {
        let s = &mut self.subflows[i];
        s.mp.live.retired = true;
        s.mp.rst_opt = Some(tcprst(reason));
        s.tcp.abort();
        self.kill_subflow(i);
    }

    /// Ends the races that have a winner; true if a subflow was closed.
    fn settle_races(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for k in 0..self.pm.paths_mut().len() {
            let Some(r) = self.pm.paths_mut()[k].race else {
                continue;
            };
            let fresh = r.fresh.and_then(|id| self.index_of(id));
            let outcome = match self.index_of(r.old) {
                // The stale subflow went (path down, reset, unresponsive): the fresh join
                // stays as the path's subflow.
                None => Some("stale subflow gone"),
                Some(i) if self.subflows[i].tcp.health().last_recv > r.since => {
                    // It answered: the NAT kept the mapping. The fresh join is not needed.
                    if let Some(j) = fresh {
                        self.retire(j, RstReason::AdminProhibited);
                        changed = true;
                    }
                    Some("stale subflow answered")
                }
                Some(i) => match fresh {
                    Some(j) if self.ready(j) => {
                        // The fresh join carries data first: the mapping was lost. Signals
                        // waiting on the old subflow (REMOVE_ADDR of the failed path, ADD_ADDR
                        // echoes) go on the new one; MP_PRIO is per subflow and stays.
                        let mut pending: Vec<MptcpOption> = self.subflows[i]
                            .mp
                            .oneoff
                            .drain(..)
                            .filter(|o| !matches!(o, MptcpOption::MpPrio { .. }))
                            .collect();
                        // What went out on the stale subflow during the race was lost at the
                        // NAT, the REMOVE_ADDR of the failed path too (without it the peer
                        // keeps sending on that path until its RTO): §3.4.2 again, for every
                        // address of ours left without a subflow ("If an Address ID is not
                        // known, the receiver will silently ignore it").
                        let path = self.subflows[j].path;
                        let gone: Vec<u8> = self
                            .pm
                            .paths()
                            .iter()
                            .map(|p| p.path.id)
                            .filter(|&id| {
                                id != path && !self.subflows.iter().any(|s| !s.dead && s.path == id)
                            })
                            .map(|id| self.local_addr_id(id))
                            .collect();
                        pending.extend(crate::mptcp::addr::remove(&gone));
                        // Ahead of what the fresh subflow queued itself (its MP_PRIO): the
                        // REMOVE_ADDR rides the first segment, the reinjected data.
                        if !pending.is_empty() {
                            let q = &mut self.subflows[j].mp.oneoff;
                            for o in pending.into_iter().rev() {
                                q.push_front(o);
                            }
                            self.subflows[j].tcp.request_ack();
                        }
                        // §3.6 "Unspecified error ... implies that the subflow is no longer
                        // available".
                        self.retire(i, RstReason::Unspecified);
                        changed = true;
                        Some("fresh join answered first")
                    }
                    Some(_) => None,
                    // Its SYNs went unanswered (`give_up_joins`): the path may be dead.
                    None if r.fresh.is_some() => Some("fresh join failed"),
                    // No port came for it.
                    None if now >= r.since + self.cfg.join_retry => Some("no port for a fresh join"),
                    None => None,
                },
            };
            if let Some(why) = outcome {
                tracing::debug!(path = self.pm.paths_mut()[k].path.id.0, why, "standby race over");
                self.pm.paths_mut()[k].race = None;
            }
        }
        changed
    }

    /// From when subflow `i` is about to carry data, if it is: it was just made regular or
    /// data is in flight on it (at once), or a regular subflow on another path is suspected
    /// (its liveness probe unanswered for an RTT: before the failover; a probe answered in
    /// time, as during a bulk transfer's pauses, is no suspicion).
    fn needed_from(&self, i: usize) -> Option<Instant> {
        let s = &self.subflows[i];
        if s.mp.live.verify || (!s.mp.backup && s.tcp.health().bytes_in_flight > 0) {
            return Some(Instant::ZERO);
        }
        (0..self.subflows.len())
            .filter(|&j| {
                self.subflows[j].path != s.path && !self.pm.is_backup(self.subflows[j].path) && self.ready(j)
            })
            .filter_map(|j| self.subflows[j].mp.live.probe.map(|at| at + self.path_rtt(j)))
            .min()
    }

    /// The subflow of path `p` to race and when, if one is needed: a ready subflow on a backup
    /// path, once it is needed, has been idle `nat_idle`, and `join_retry` passed since the
    /// last race.
    fn race_due(&self, p: &super::paths::PathState) -> Option<(usize, Instant)> {
        if self.cfg.nat_idle.is_zero()
            || p.race.is_some()
            || !p.available
            || !p.path.backup
            || self.live_subflows() >= self.cfg.max_subflows
        {
            return None;
        }
        let i = (0..self.subflows.len()).find(|&i| self.subflows[i].path == p.path.id && self.ready(i))?;
        let needed = self.needed_from(i)?;
        let idle_at = self.subflows[i].tcp.health().last_recv + self.cfg.nat_idle;
        let at = p
            .last_race
            .map_or(idle_at, |t| idle_at.max(t + self.cfg.join_retry));
        Some((i, at.max(needed)))
    }

    fn start_races(&mut self, now: Instant) {
        for k in 0..self.pm.paths().len() {
            let p = self.pm.paths()[k];
            if let Some(r) = p.race {
                if r.fresh.is_none() {
                    self.open_fresh(now, k);
                }
                continue;
            }
            let Some((i, at)) = self.race_due(&p) else {
                // Not stale (or not needed): nothing to check for this takeover.
                if let Some(i) = (0..self.subflows.len()).find(|&i| self.subflows[i].path == p.path.id) {
                    self.subflows[i].mp.live.verify = false;
                }
                continue;
            };
            if now < at {
                if now < self.subflows[i].tcp.health().last_recv + self.cfg.nat_idle {
                    // Fresh enough: trusted.
                    self.subflows[i].mp.live.verify = false;
                }
                continue;
            }
            let s = &mut self.subflows[i];
            tracing::debug!(
                path = p.path.id.0,
                idle_ms = (now - s.tcp.health().last_recv).as_millis() as u64,
                "backup idle past a NAT's memory: probed, and a fresh join raced against it"
            );
            s.mp.live.verify = false;
            s.mp.live.last_probe = Some(now);
            s.tcp.send_probe();
            let old = s.id;
            let pm = &mut self.pm.paths_mut()[k];
            pm.race = Some(Race {
                old,
                fresh: None,
                since: now,
            });
            pm.last_race = Some(now);
            self.open_fresh(now, k);
        }
    }

    /// Opens the fresh join of path `k`'s race from a local port no subflow of ours used
    /// toward the same peer address (a new NAT mapping), or asks for one.
    fn open_fresh(&mut self, now: Instant, k: usize) {
        let p = self.pm.paths_mut()[k];
        let Some(r) = p.race else { return };
        let Some(i) = self.index_of(r.old) else { return };
        let to = self.subflows[i].tcp.remote();
        let unused = |port: u16| {
            let local = SocketAddr::new(p.path.addr, port);
            !self
                .subflows
                .iter()
                .any(|s| s.tcp.local() == local && s.tcp.remote() == to)
        };
        let port = match self.pm.take_remote_port(to) {
            Some(port) => port,
            None => match self.pm.ports().iter().copied().find(|&port| unused(port)) {
                Some(port) => port,
                None => {
                    if let Some(ev) = self.pm.request_port(to) {
                        self.events.push_back(ev);
                    }
                    return;
                }
            },
        };
        // The fresh join is regular (§3.3.8: flag B clear on its MP_JOIN) whatever the stale
        // subflow's priority: it is opened because the path is about to carry data, and the
        // peer must send on it, not on the stale one (whose MP_PRIO the NAT may have dropped),
        // as soon as it is up; an MP_PRIO to make it regular would compete with the
        // REMOVE_ADDR for the option space of its first segment (seen in the lab: the kernel
        // then answered on the stale backup, after 200 ms RTOs). If the regular path turns
        // out alive, `sync_priorities` makes it a backup again.
        let fresh = self.open_join(now, p.path, (SocketAddr::new(p.path.addr, port), to), Some(false));
        if let Some(r) = self.pm.paths_mut()[k].race.as_mut() {
            r.fresh = fresh;
        }
    }

    /// Closes the subflows of last-resort paths while a subflow on another path can carry
    /// the data; true if one was closed.
    fn retire_last_resort(&mut self) -> bool {
        let mut changed = false;
        for i in 0..self.subflows.len() {
            let path = self.subflows[i].path;
            if self.subflows[i].dead || !self.pm.is_last_resort(path) {
                continue;
            }
            let other = (0..self.subflows.len()).any(|j| {
                self.subflows[j].path != path && self.usable(j) && !self.subflows[j].mp.live.suspect
            });
            if other {
                tracing::debug!(path = path.0, "last-resort path not needed: its subflow closed");
                self.retire(i, RstReason::AdminProhibited);
                changed = true;
            }
        }
        changed
    }

    /// When the keep-alive of standing backup subflow `i` is due, if it gets one.
    fn keepalive_due(&self, i: usize) -> Option<Instant> {
        let ka = self.cfg.backup_keepalive;
        let s = &self.subflows[i];
        if ka.is_zero()
            || !self.ready(i)
            || !s.mp.backup
            || !self.pm.is_backup(s.path)
            || self.pm.is_last_resort(s.path)
        {
            return None;
        }
        let last =
            s.mp.live
                .last_probe
                .map_or(s.tcp.health().last_recv, |p| p.max(s.tcp.health().last_recv));
        Some(last + ka)
    }

    fn send_keepalives(&mut self, now: Instant) {
        for i in 0..self.subflows.len() {
            if self.keepalive_due(i).is_some_and(|at| now >= at) {
                let s = &mut self.subflows[i];
                s.mp.live.last_probe = Some(now);
                // The RFC 9293 §3.8.4 keep-alive form, answered at once by the peer.
                s.tcp.send_probe();
            }
        }
    }

    /// The next keep-alive, race to start, or race to give up (for the timer table).
    pub(super) fn standby_deadline(&self) -> Option<Instant> {
        if !self.standby_on() {
            return None;
        }
        let paths = self.pm.paths();
        let races = (0..paths.len()).filter_map(|k| match paths[k].race {
            Some(Race {
                fresh: None, since, ..
            }) => Some(since + self.cfg.join_retry),
            Some(_) => None,
            None => self.race_due(&paths[k]).map(|(_, at)| at),
        });
        let keepalives = (0..self.subflows.len()).filter_map(|i| self.keepalive_due(i));
        races.chain(keepalives).min()
    }
}

//! Interface policy: what the engine knows about each physical interface (usable, its
//! addresses), which one new traffic uses, the local paths an MPTCP connection may take, the
//! networks known to be hostile to MPTCP, and interfaces whose paths stopped answering (avoided
//! for new flows until one answers again or [`Config::unresponsive_hold`] passed).
//!
//! [`Config::unresponsive_hold`]: super::Config::unresponsive_hold

use std::net::IpAddr;
use std::time::Duration;

use super::{IfaceId, IfacePolicy, IfaceState};
use crate::config::{IfaceRole, MAX_INTERFACES};
use crate::mptcp::hostile_cache::{HostileCache, NetworkKey};
use crate::mptcp::{LocalPath, PathId};
use crate::time::Instant;

/// One interface as the engine sees it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    state: IfaceState,
    policy: IfacePolicy,
    /// When its paths stopped answering (cleared when one answers again).
    unresponsive: Option<Instant>,
    /// When a segment of a known flow last arrived on it (any flow: the interface carries
    /// traffic both ways while one connection's subflow there falls silent).
    heard: Option<Instant>,
}

impl Slot {
    /// Not usable yet, never heard.
    fn new(policy: IfacePolicy) -> Slot {
        Slot {
            state: IfaceState::default(),
            policy,
            unresponsive: None,
            heard: None,
        }
    }
}

/// The interfaces as the engine sees them, by id (at most [`MAX_INTERFACES`]).
#[derive(Debug)]
pub(super) struct Ifaces {
    slots: Vec<Slot>,
    hostile: HostileCache,
    unresponsive_hold: Duration,
}

/// The policy of an interface nobody gave one.
const UNSET: IfacePolicy = IfacePolicy::primary(0);

impl Ifaces {
    /// No usable interface yet; `policies` by id.
    pub fn new(policies: &[IfacePolicy], hostile_ttl: Duration, unresponsive_hold: Duration) -> Self {
        Ifaces {
            slots: policies
                .iter()
                .take(MAX_INTERFACES)
                .map(|&policy| Slot::new(policy))
                .collect(),
            hostile: HostileCache::new(hostile_ttl, 64),
            unresponsive_hold,
        }
    }

    /// The slot of `iface`, created (unusable, [`UNSET`] policy) if it is new; `None` beyond
    /// [`MAX_INTERFACES`].
    fn slot_mut(&mut self, iface: IfaceId) -> Option<&mut Slot> {
        let i = usize::from(iface);
        if i >= MAX_INTERFACES {
            return None;
        }
        while self.slots.len() <= i {
            self.slots.push(Slot::new(UNSET));
        }
        self.slots.get_mut(i)
    }

    fn slot(&self, iface: IfaceId) -> Option<&Slot> {
        self.slots.get(usize::from(iface))
    }

    /// The ids known so far.
    pub fn ids(&self) -> impl Iterator<Item = IfaceId> + '_ {
        (0..self.slots.len()).map(|i| i as IfaceId)
    }

    /// What is known about `iface`.
    pub fn state(&self, iface: IfaceId) -> Option<IfaceState> {
        self.slot(iface).map(|s| s.state)
    }

    /// The policy of `iface`.
    pub fn policy(&self, iface: IfaceId) -> IfacePolicy {
        self.slot(iface).map_or(UNSET, |s| s.policy)
    }

    /// Whether `iface` is a backup (cellular) interface: where handover mode's own cost is
    /// counted (`cellular_overhead_bytes`).
    pub fn is_backup(&self, iface: IfaceId) -> bool {
        self.slot(iface)
            .is_some_and(|s| s.policy.role == IfaceRole::Backup)
    }

    /// Sets the policy of `iface` (an interface that appeared); false beyond
    /// [`MAX_INTERFACES`].
    pub fn set_policy(&mut self, iface: IfaceId, policy: IfacePolicy) -> bool {
        self.slot_mut(iface).map(|s| s.policy = policy).is_some()
    }

    /// Records the new state of `iface`; returns the previous one, or `None` when nothing
    /// changed (or no such interface). When it went or its addresses changed it is another
    /// network (or none): what was learnt about the old one (unresponsive, hostile) is
    /// forgotten.
    pub fn set_state(&mut self, iface: IfaceId, state: IfaceState) -> Option<IfaceState> {
        let slot = self.slot_mut(iface)?;
        let was = slot.state;
        if was == state {
            return None;
        }
        slot.state = state;
        let went = was.usable && !state.usable;
        if was.v4 != state.v4 || was.v6 != state.v6 || went {
            slot.unresponsive = None;
            for a in [was.v4.map(IpAddr::V4), was.v6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                self.hostile.mark_good(NetworkKey {
                    iface: u32::from(iface),
                    gateway: Some(a),
                });
            }
        }
        Some(was)
    }

    /// The address of `iface` in `dst`'s family.
    pub fn local_addr(&self, iface: IfaceId, dst: IpAddr) -> Option<IpAddr> {
        self.slot(iface)?.state.addr_for(dst)
    }

    /// The interfaces that may carry traffic, best first: primaries by priority (higher
    /// first), then backups by priority; equal priorities by id. `never` ones are left out.
    fn ordered(&self) -> Vec<IfaceId> {
        let mut ids: Vec<IfaceId> = self
            .ids()
            .filter(|&i| self.policy(i).role != IfaceRole::Never)
            .collect();
        ids.sort_by_key(|&i| {
            let p = self.policy(i);
            (p.role == IfaceRole::Backup, std::cmp::Reverse(p.priority), i)
        });
        ids
    }

    /// The interface new traffic to `dst` uses: the first of [`Self::ordered`] usable with an
    /// address of the family and answering (the best primary, else the next primary, else a
    /// backup), else one that stopped answering, rather than nothing.
    /// An interface past its budget's soft share ([`IfaceState::last_resort`]) comes after
    /// every other that works, answering or not.
    pub fn choose(&self, dst: IpAddr) -> Option<IfaceId> {
        let order = self.ordered();
        let state = |i: IfaceId| self.slots[usize::from(i)];
        let ok = |i: IfaceId| state(i).state.usable && self.local_addr(i, dst).is_some();
        let answering = |i: IfaceId| state(i).unresponsive.is_none();
        let spare = |i: IfaceId| !state(i).state.last_resort;
        let first = |want: &dyn Fn(IfaceId) -> bool| order.iter().copied().find(|&i| ok(i) && want(i));
        first(&|i| answering(i) && spare(i))
            .or_else(|| first(&spare))
            .or_else(|| first(&answering))
            .or_else(|| first(&|_| true))
    }

    /// The interfaces besides `except` a redundant datagram to `dst` also goes on: usable, with
    /// an address of the family, not past their budget's soft share (a copy is never the last
    /// resort), never a `never` interface, answering or not (a blackholed path may come back any
    /// moment).
    pub fn copy_paths(&self, dst: IpAddr, except: IfaceId) -> impl Iterator<Item = IfaceId> + '_ {
        self.ids().filter(move |&i| {
            self.slot(i).is_some_and(|slot| {
                let s = slot.state;
                i != except
                    && slot.policy.role != IfaceRole::Never
                    && s.usable
                    && !s.last_resort
                    && s.addr_for(dst).is_some()
            })
        })
    }

    /// The local path over `iface` for a connection to `dst`, if it has an address of the
    /// family and is not a `never` interface. In handover mode (`handover`) a backup
    /// interface is a backup path; the path's rank follows the interface's priority.
    pub fn path(&self, iface: IfaceId, dst: IpAddr, handover: bool) -> Option<LocalPath> {
        let slot = self.slot(iface)?;
        if slot.policy.role == IfaceRole::Never {
            return None;
        }
        Some(LocalPath {
            id: PathId(iface),
            addr: self.local_addr(iface, dst)?,
            backup: slot.policy.role == IfaceRole::Backup && handover,
            last_resort: slot.state.last_resort,
            rank: u8::MAX - slot.policy.priority,
        })
    }

    /// The local paths an MPTCP connection to `dst` may use now, best first.
    pub fn local_paths(&self, dst: IpAddr, handover: bool) -> Vec<LocalPath> {
        self.ordered()
            .into_iter()
            .filter(|&i| self.slots[usize::from(i)].state.usable)
            .filter_map(|i| self.path(i, dst, handover))
            .collect()
    }

    fn network_key(&self, iface: IfaceId, dst: IpAddr) -> NetworkKey {
        NetworkKey {
            iface: u32::from(iface),
            gateway: self.local_addr(iface, dst),
        }
    }

    /// MP_CAPABLE SYNs went unanswered on the network of `iface` (toward `dst`'s family).
    pub fn mark_hostile(&mut self, iface: IfaceId, dst: IpAddr, now: Instant) {
        let key = self.network_key(iface, dst);
        self.hostile.mark_hostile(key, now);
    }

    /// New connections on `iface` toward `dst` start as plain TCP.
    pub fn is_hostile(&self, iface: IfaceId, dst: IpAddr, now: Instant) -> bool {
        self.hostile.is_hostile(self.network_key(iface, dst), now)
    }

    /// The paths over `iface` stopped answering at `now`; true if it was answering until now.
    pub fn mark_unresponsive(&mut self, iface: IfaceId, now: Instant) -> bool {
        match self.slots.get_mut(usize::from(iface)) {
            Some(slot) if slot.unresponsive.is_none() => {
                slot.unresponsive = Some(now);
                true
            }
            _ => false,
        }
    }

    /// A segment of a known flow arrived on `iface` at `now`.
    pub fn heard(&mut self, iface: IfaceId, now: Instant) {
        if let Some(slot) = self.slots.get_mut(usize::from(iface)) {
            slot.heard = Some(now);
        }
    }

    /// Whether a segment of a known flow arrived on `iface` at `since` or later.
    pub fn heard_since(&self, iface: IfaceId, since: Instant) -> bool {
        self.slot(iface).and_then(|s| s.heard).is_some_and(|t| t >= since)
    }

    /// A subflow on `iface` answers; true if the interface was held as unresponsive.
    pub fn mark_answering(&mut self, iface: IfaceId) -> bool {
        self.slots
            .get_mut(usize::from(iface))
            .is_some_and(|slot| slot.unresponsive.take().is_some())
    }

    /// Forgets that an interface stopped answering once the hold passed (new flows try it
    /// again); true if one was forgotten.
    pub fn expire_unresponsive(&mut self, now: Instant) -> bool {
        let hold = self.unresponsive_hold;
        let mut changed = false;
        for slot in &mut self.slots {
            if slot.unresponsive.is_some_and(|t| now >= t + hold) {
                slot.unresponsive = None;
                changed = true;
            }
        }
        changed
    }
}

impl Ifaces {
    /// Whether `iface` is up with an address (netlink's view).
    pub fn is_usable(&self, iface: IfaceId) -> bool {
        self.slot(iface).is_some_and(|s| s.state.usable)
    }

    /// Whether `iface` is held as unresponsive (read-only, for the DNS forwarder).
    pub fn is_unresponsive(&self, iface: IfaceId) -> bool {
        self.slot(iface).is_some_and(|s| s.unresponsive.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CELLULAR, WIFI};

    fn up(v4: [u8; 4], last_resort: bool) -> IfaceState {
        IfaceState {
            usable: true,
            v4: Some(v4.into()),
            v6: None,
            last_resort,
        }
    }

    #[test]
    fn a_last_resort_interface_is_chosen_only_when_nothing_else_works() {
        let dst = IpAddr::from([198, 19, 0, 10]);
        let mut f = Ifaces::new(
            &[IfacePolicy::primary(10), IfacePolicy::backup(0)],
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        f.set_state(WIFI, up([198, 18, 1, 2], true));
        f.set_state(CELLULAR, up([198, 18, 2, 2], false));
        assert_eq!(
            f.choose(dst),
            Some(CELLULAR),
            "Wi-Fi past its budget's soft share"
        );
        // Even an unresponsive interface comes before a last-resort one...
        f.mark_unresponsive(CELLULAR, Instant::ZERO);
        assert_eq!(f.choose(dst), Some(CELLULAR));
        // ... but an unusable one does not.
        f.set_state(
            CELLULAR,
            IfaceState {
                usable: false,
                ..up([198, 18, 2, 2], false)
            },
        );
        assert_eq!(f.choose(dst), Some(WIFI));
        let p = f.path(WIFI, dst, true).unwrap();
        assert!(p.last_resort && !p.backup);
        f.set_state(WIFI, up([198, 18, 1, 2], false));
        assert!(!f.path(WIFI, dst, true).unwrap().last_resort);
    }

    #[test]
    fn primaries_by_priority_then_backups_and_never_is_left_out() {
        let dst = IpAddr::from([198, 19, 0, 10]);
        let never = IfacePolicy {
            role: IfaceRole::Never,
            priority: 255,
        };
        let mut f = Ifaces::new(
            &[
                IfacePolicy::primary(10),
                IfacePolicy::backup(0),
                IfacePolicy::primary(20),
            ],
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        f.set_policy(3, never);
        for i in 0..4 {
            f.set_state(i, up([198, 18, i + 1, 2], false));
        }
        assert_eq!(f.choose(dst), Some(2), "Ethernet first");
        let order: Vec<_> = f
            .local_paths(dst, true)
            .iter()
            .map(|p| (p.id.0, p.backup))
            .collect();
        assert_eq!(order, [(2, false), (0, false), (1, true)]);
        f.mark_unresponsive(2, Instant::ZERO);
        assert_eq!(f.choose(dst), Some(0), "then Wi-Fi");
        f.mark_unresponsive(0, Instant::ZERO);
        assert_eq!(f.choose(dst), Some(1), "then the backup");
        f.mark_unresponsive(1, Instant::ZERO);
        assert_eq!(f.choose(dst), Some(2), "all silent: the best again");
        assert!(f.path(3, dst, true).is_none());
        assert!(!f.set_policy(crate::config::MAX_INTERFACES as IfaceId, never));
        assert_eq!(f.set_state(200, up([1, 1, 1, 1], false)), None);
    }
}

//! Interface policy: what the engine knows about each physical interface (usable, its
//! addresses), which one new traffic uses, the local paths an MPTCP connection may take, the
//! networks known to be hostile to MPTCP, and interfaces whose paths stopped answering (avoided
//! for new flows until one answers again or [`Config::unresponsive_hold`] passed).
//!
//! [`Config::unresponsive_hold`]: super::Config::unresponsive_hold

use std::net::IpAddr;
use std::time::Duration;

use super::{CELLULAR, IfaceId, IfaceState, WIFI};
use crate::mptcp::hostile_cache::{HostileCache, NetworkKey};
use crate::mptcp::{LocalPath, PathId};
use crate::time::Instant;

/// The interfaces as the engine sees them.
#[derive(Debug)]
pub(super) struct Ifaces {
    states: [IfaceState; 2],
    /// When an interface's paths stopped answering (cleared when one answers again).
    unresponsive: [Option<Instant>; 2],
    hostile: HostileCache,
    unresponsive_hold: Duration,
}

impl Ifaces {
    /// No usable interface yet.
    pub fn new(hostile_ttl: Duration, unresponsive_hold: Duration) -> Self {
        Ifaces {
            states: [IfaceState::default(); 2],
            unresponsive: [None; 2],
            hostile: HostileCache::new(hostile_ttl, 64),
            unresponsive_hold,
        }
    }

    /// What is known about `iface`.
    pub fn state(&self, iface: IfaceId) -> Option<IfaceState> {
        self.states.get(usize::from(iface)).copied()
    }

    /// Records the new state of `iface`; returns the previous one, or `None` when nothing
    /// changed (or no such interface). When it went or its addresses changed it is another
    /// network (or none): what was learnt about the old one (unresponsive, hostile) is
    /// forgotten.
    pub fn set_state(&mut self, iface: IfaceId, state: IfaceState) -> Option<IfaceState> {
        let slot = self.states.get_mut(usize::from(iface))?;
        let was = *slot;
        if was == state {
            return None;
        }
        *slot = state;
        let went = was.usable && !state.usable;
        if was.v4 != state.v4 || was.v6 != state.v6 || went {
            self.unresponsive[usize::from(iface)] = None;
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
        self.states.get(usize::from(iface))?.addr_for(dst)
    }

    /// The interface new traffic to `dst` uses: Wi-Fi when usable with an address of the
    /// family and answering, else cellular (else a Wi-Fi that stopped answering, rather than
    /// nothing).
    /// An interface past its budget's soft share ([`IfaceState::last_resort`]) comes after
    /// every other that works, answering or not.
    pub fn choose(&self, dst: IpAddr) -> Option<IfaceId> {
        let ok = |i: IfaceId| self.states[usize::from(i)].usable && self.local_addr(i, dst).is_some();
        let answering = |i: IfaceId| self.unresponsive[usize::from(i)].is_none();
        let spare = |i: IfaceId| !self.states[usize::from(i)].last_resort;
        let first = |want: &dyn Fn(IfaceId) -> bool| [WIFI, CELLULAR].into_iter().find(|&i| ok(i) && want(i));
        first(&|i| answering(i) && spare(i))
            .or_else(|| first(&spare))
            .or_else(|| first(&answering))
            .or_else(|| first(&|_| true))
    }

    /// The interfaces besides `except` a redundant datagram to `dst` also goes on: usable, with
    /// an address of the family, not past their budget's soft share (a copy is never the last
    /// resort), answering or not (a blackholed path may come back any moment).
    pub fn copy_paths(&self, dst: IpAddr, except: IfaceId) -> impl Iterator<Item = IfaceId> + '_ {
        (0..self.states.len())
            .filter_map(|i| IfaceId::try_from(i).ok())
            .filter(move |&i| {
                let s = self.states[usize::from(i)];
                i != except && s.usable && !s.last_resort && s.addr_for(dst).is_some()
            })
    }

    /// The local path over `iface` for a connection to `dst` (cellular is the backup path in
    /// handover mode), if it has an address of the family.
    pub fn path(&self, iface: IfaceId, dst: IpAddr, backup_cellular: bool) -> Option<LocalPath> {
        Some(LocalPath {
            id: PathId(iface),
            addr: self.local_addr(iface, dst)?,
            backup: iface == CELLULAR && backup_cellular,
            last_resort: self.states[usize::from(iface)].last_resort,
        })
    }

    /// The local paths an MPTCP connection to `dst` may use now.
    pub fn local_paths(&self, dst: IpAddr, backup_cellular: bool) -> Vec<LocalPath> {
        [WIFI, CELLULAR]
            .into_iter()
            .filter(|&i| self.states[usize::from(i)].usable)
            .filter_map(|i| self.path(i, dst, backup_cellular))
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
        match self.unresponsive.get_mut(usize::from(iface)) {
            Some(slot) if slot.is_none() => {
                *slot = Some(now);
                true
            }
            _ => false,
        }
    }

    /// A subflow on `iface` answers; true if the interface was held as unresponsive.
    pub fn mark_answering(&mut self, iface: IfaceId) -> bool {
        self.unresponsive
            .get_mut(usize::from(iface))
            .is_some_and(|slot| slot.take().is_some())
    }

    /// Forgets that an interface stopped answering once the hold passed (new flows try it
    /// again); true if one was forgotten.
    pub fn expire_unresponsive(&mut self, now: Instant) -> bool {
        let hold = self.unresponsive_hold;
        let mut changed = false;
        for slot in &mut self.unresponsive {
            if slot.is_some_and(|t| now >= t + hold) {
                *slot = None;
                changed = true;
            }
        }
        changed
    }
}

impl Ifaces {
    /// Whether `iface` is held as unresponsive (read-only, for the DNS forwarder).
    pub fn is_unresponsive(&self, iface: IfaceId) -> bool {
        self.unresponsive
            .get(usize::from(iface))
            .is_some_and(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut f = Ifaces::new(Duration::from_secs(60), Duration::from_secs(30));
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
}

//! Which paths' resolvers must be learnt again or forgotten while mpbond runs (sans-IO): an
//! interface picked up while running has its resolvers learnt once it has addresses, again
//! when its addresses change (another network), and retried a few times while it has none yet
//! (DHCP gives the address and the resolvers about together; resolved or NetworkManager may
//! learn them a moment later); one that vanished is forgotten until it is back.
//!
//! Call order (the daemon's learner thread drives it): [`PathBook::steps`] with the interfaces
//! as the netlink watcher keeps them, each time they change and at [`PathBook::poll_timeout`];
//! for each [`Step::Learn`], learn the path's servers and give the result to
//! [`PathBook::learnt`], which says what to tell the DNS thread (a [`PathUpdate`], or nothing
//! when the resolvers did not change); for each [`Step::Forget`], tell it [`PathUpdate::Forget`].

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::engine::IfaceId;
use crate::route::plan::LinkState;
use crate::time::Instant;

/// Learning again after an empty result waits this long first, doubling each time.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries of an empty result at most (1 + 2 + 4 + 8 s: about 15 s after the address came).
pub const MAX_RETRIES: u32 = 4;

/// What the DNS thread is told about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathUpdate {
    /// Path `id` is interface `name`, forwarding to `resolvers` (best first).
    Set {
        /// Path (interface id).
        id: IfaceId,
        /// Its interface.
        name: String,
        /// Its resolvers, best first (maybe none).
        resolvers: Vec<IpAddr>,
    },
    /// Path `id`'s interface vanished: no resolver, no socket, until it is set again.
    Forget {
        /// Path (interface id).
        id: IfaceId,
    },
}

/// What to do for a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Learn its resolvers (then [`PathBook::learnt`]).
    Learn(IfaceId),
    /// Its interface vanished: tell the DNS thread [`PathUpdate::Forget`].
    Forget(IfaceId),
}

/// The network a path's resolvers were learnt on: its interface, index and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Network {
    name: String,
    index: u32,
    addresses: Vec<IpNet>,
}

impl Network {
    fn of(l: &LinkState) -> Network {
        let mut addresses = l.addresses.clone();
        addresses.sort();
        Network {
            name: l.name.clone(),
            index: l.index,
            addresses,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Entry {
    /// The network the resolvers were last learnt on (`None`: not yet, or forgotten).
    learnt_on: Option<Network>,
    /// What the DNS thread was told (`None`: nothing, or forgotten).
    told: Option<(String, Vec<IpAddr>)>,
    /// The last learning found nothing: when to try again, and how many retries were made.
    retry: Option<(Instant, u32)>,
}

/// The paths' learning state, by interface id. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct PathBook {
    paths: Vec<Entry>,
}

impl PathBook {
    /// The paths set up at `up`: `links[i]` is path `i` as it was then (absent: index 0),
    /// `resolvers[i]` what the DNS thread started with.
    pub fn new(links: &[LinkState], resolvers: &[Vec<IpAddr>]) -> PathBook {
        PathBook {
            paths: links
                .iter()
                .zip(resolvers)
                .map(|(l, r)| Entry {
                    learnt_on: (l.index != 0 && !l.addresses.is_empty()).then(|| Network::of(l)),
                    told: Some((l.name.clone(), r.clone())),
                    retry: None,
                })
                .collect(),
        }
    }

    /// What to do now that the interfaces are `links` (by id, as the watcher keeps them).
    pub fn steps(&mut self, now: Instant, links: &[LinkState]) -> Vec<Step> {
        let mut steps = Vec::new();
        for (i, l) in links.iter().enumerate().take(crate::config::MAX_INTERFACES) {
            if self.paths.len() <= i {
                self.paths.push(Entry::default());
            }
            let id = i as IfaceId;
            let e = &mut self.paths[i];
            if l.index == 0 {
                e.learnt_on = None;
                e.retry = None;
                if e.told.take().is_some() {
                    steps.push(Step::Forget(id));
                }
                continue;
            }
            // No address yet: nothing to learn for (nor to match servers to).
            if l.addresses.is_empty() {
                continue;
            }
            let changed = e.learnt_on.as_ref() != Some(&Network::of(l));
            let due = e.retry.is_some_and(|(at, _)| now >= at);
            if changed || due {
                if changed {
                    e.retry = None;
                }
                steps.push(Step::Learn(id));
            }
        }
        steps
    }

    /// The resolvers learnt for path `id` on `link` at `now`: what to tell the DNS thread, if
    /// anything changed. An empty result is tried again later (a few times).
    pub fn learnt(
        &mut self,
        now: Instant,
        id: IfaceId,
        link: &LinkState,
        resolvers: Vec<IpAddr>,
    ) -> Option<PathUpdate> {
        let e = self.paths.get_mut(usize::from(id))?;
        e.learnt_on = Some(Network::of(link));
        e.retry = if resolvers.is_empty() {
            let n = e.retry.map_or(0, |(_, n)| n + 1);
            (n < MAX_RETRIES).then(|| (now + FIRST_RETRY * 2u32.pow(n), n))
        } else {
            None
        };
        let told = (link.name.clone(), resolvers);
        if e.told.as_ref() == Some(&told) {
            return None;
        }
        e.told = Some(told.clone());
        Some(PathUpdate::Set {
            id,
            name: told.0,
            resolvers: told.1,
        })
    }

    /// When [`PathBook::steps`] has a retry due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.paths.iter().filter_map(|e| e.retry.map(|(at, _)| at)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32, nets: &[&str]) -> LinkState {
        LinkState {
            name: name.into(),
            index,
            up: true,
            carrier: true,
            addresses: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn a_hot_plugged_interface_is_learnt_once_it_has_an_address_and_forgotten_when_it_goes() {
        let wlan = link("wlan0", 2, &["198.18.1.2/24"]);
        let mut b = PathBook::new(std::slice::from_ref(&wlan), &[vec![ip("198.18.1.1")]]);
        // Nothing changed on the path set up at `up`.
        assert!(b.steps(t(0), std::slice::from_ref(&wlan)).is_empty());
        // A tether appears: no address yet, nothing to learn.
        let mut usb = link("usb0", 9, &[]);
        assert!(b.steps(t(1), &[wlan.clone(), usb.clone()]).is_empty());
        usb.addresses = vec!["198.18.4.2/24".parse().unwrap()];
        assert_eq!(b.steps(t(2), &[wlan.clone(), usb.clone()]), [Step::Learn(1)]);
        assert_eq!(
            b.learnt(t(2), 1, &usb, vec![ip("198.18.4.1")]),
            Some(PathUpdate::Set {
                id: 1,
                name: "usb0".into(),
                resolvers: vec![ip("198.18.4.1")]
            })
        );
        // Learnt: not again until it changes; the same result again tells nothing.
        assert!(b.steps(t(3), &[wlan.clone(), usb.clone()]).is_empty());
        assert_eq!(b.learnt(t(3), 1, &usb, vec![ip("198.18.4.1")]), None);
        assert_eq!(b.poll_timeout(), None);
        // Another network on it (new addresses): learnt again.
        usb.addresses.push("fd18:4::2/64".parse().unwrap());
        assert_eq!(b.steps(t(4), &[wlan.clone(), usb.clone()]), [Step::Learn(1)]);
        // It vanishes: forgotten once; it comes back: learnt again and told even if the same.
        let mut gone = usb.clone();
        gone.index = 0;
        gone.addresses.clear();
        assert_eq!(b.steps(t(5), &[wlan.clone(), gone.clone()]), [Step::Forget(1)]);
        assert!(b.steps(t(6), &[wlan.clone(), gone]).is_empty());
        usb.index = 11;
        assert_eq!(b.steps(t(7), &[wlan.clone(), usb.clone()]), [Step::Learn(1)]);
        assert!(b.learnt(t(7), 1, &usb, vec![ip("198.18.4.1")]).is_some());
        // The path set up at `up` is forgotten too when its interface vanishes.
        let mut wgone = wlan.clone();
        wgone.index = 0;
        assert_eq!(b.steps(t(8), &[wgone, usb]), [Step::Forget(0)]);
    }

    #[test]
    fn an_empty_result_is_retried_a_few_times_with_a_growing_wait() {
        let usb = link("usb0", 9, &["198.18.4.2/24"]);
        let mut b = PathBook::default();
        let links = std::slice::from_ref(&usb);
        assert_eq!(b.steps(t(0), links), [Step::Learn(0)]);
        // Nothing learnt (resolved or NetworkManager not there yet): told so, retried.
        assert_eq!(
            b.learnt(t(0), 0, &usb, vec![]),
            Some(PathUpdate::Set {
                id: 0,
                name: "usb0".into(),
                resolvers: vec![]
            })
        );
        let mut at = Vec::new();
        let mut now = t(0);
        for _ in 0..10 {
            let Some(due) = b.poll_timeout() else { break };
            assert!(b.steps(now, links).is_empty());
            assert_eq!(b.steps(due, links), [Step::Learn(0)]);
            assert_eq!(b.learnt(due, 0, &usb, vec![]), None);
            at.push(due.saturating_duration_since(now).as_secs());
            now = due;
        }
        assert_eq!(at, [1, 2, 4, 8]);
        // A later address change learns again (and the retries start over).
        let usb2 = link("usb0", 9, &["198.18.5.2/24"]);
        assert_eq!(b.steps(t(30), std::slice::from_ref(&usb2)), [Step::Learn(0)]);
        assert_eq!(b.learnt(t(30), 0, &usb2, vec![]), None);
        assert_eq!(b.poll_timeout(), Some(t(31)));
        // Found at last: no more retries.
        assert_eq!(b.steps(t(31), std::slice::from_ref(&usb2)), [Step::Learn(0)]);
        assert!(b.learnt(t(31), 0, &usb2, vec![ip("198.18.5.1")]).is_some());
        assert_eq!(b.poll_timeout(), None);
    }
}

//! A read-only view of each path's health for the DNS forwarder (`dns::forwarder`): the same
//! signals the subflows fail over on (usable from netlink, unresponsive from the subflows) and
//! the path new traffic uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Engine, IfaceId};
use crate::dns::PathSignal;

impl Engine {
    /// Each interface's health, in id order (a `never` interface is never usable).
    pub fn path_health(&self, count: u8) -> Vec<PathSignal> {
        let primary = [
            self.ifaces.choose(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            self.ifaces.choose(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ];
        (0..count)
            .map(|i: IfaceId| PathSignal {
                usable: self.ifaces.state(i).is_some_and(|s| s.usable)
                    && self.ifaces.policy(i).role != crate::config::IfaceRole::Never,
                unresponsive: self.ifaces.is_unresponsive(i),
                primary: primary.contains(&Some(i)),
            })
            .collect()
    }
}

//! The converter's egress policy: which destinations an authenticated client may have the
//! converter dial. Default deny for every address class that would let a client reach what the
//! converter reaches but the client should not (the converter's own host and networks, RFC 8803
//! §9.1 "MUST be as protected as a core IP router"), and for SMTP. The configuration's allow-list
//! overrides any class. 198.18.0.0/15 (benchmarking, RFC 2544) is an ordinary destination: the
//! lab's hosts live there.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::convert::scope::{Scope, canonical, special_scope};

/// Why the policy refuses a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Denied {
    /// A special-purpose address scope (loopback, private, …), denied by default.
    Scope(Scope),
    /// One of the converter's own addresses.
    OwnAddress,
    /// A port denied by default (25, SMTP: an open converter would be a spam relay) or port 0.
    Port,
    /// In the configuration's deny-list.
    Configured,
}

impl Denied {
    /// snake_case name (status keys, logs).
    pub fn name(self) -> &'static str {
        match self {
            Denied::Scope(s) => s.name(),
            Denied::OwnAddress => "own_address",
            Denied::Port => "port",
            Denied::Configured => "configured",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Ports denied unless allowed: 25 (SMTP submission from an open relay is abuse).
pub const DEFAULT_DENIED_PORTS: &[u16] = &[25];

/// The egress policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Destination prefixes allowed whatever their class (config `egress.allow`).
    pub allow: Vec<IpNet>,
    /// Ports allowed although denied by default (config `egress.allow_ports`).
    pub allow_ports: Vec<u16>,
    /// Destination prefixes denied in addition to the default classes (config `egress.deny`).
    pub deny: Vec<IpNet>,
    /// The converter's own addresses (refreshed from the kernel while running).
    pub own: HashSet<IpAddr>,
}

impl EgressPolicy {
    /// Whether the converter may dial `dst`; the class that refuses it otherwise.
    pub fn check(&self, dst: SocketAddr) -> Result<(), Denied> {
        if dst.port() == 0
            || (DEFAULT_DENIED_PORTS.contains(&dst.port()) && !self.allow_ports.contains(&dst.port()))
        {
            return Err(Denied::Port);
        }
        self.check_addr(dst.ip())
    }

    /// Whether the converter may send ICMP echo requests to `dst`: [`EgressPolicy::check`]
    /// without the port (echo has none), so the same addresses are refused as for TCP and UDP.
    pub fn check_addr(&self, dst: IpAddr) -> Result<(), Denied> {
        let ip = canonical(dst);
        let allowed = |ip: IpAddr| self.allow.iter().any(|n| n.contains(&ip));
        if allowed(ip) || allowed(dst) {
            return Ok(());
        }
        if self.deny.iter().any(|n| n.contains(&ip) || n.contains(&dst)) {
            return Err(Denied::Configured);
        }
        if self.own.contains(&ip) || self.own.contains(&dst) {
            return Err(Denied::OwnAddress);
        }
        special_scope(ip).map(Denied::Scope).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_default_deny_class() {
        let mut p = EgressPolicy::default();
        p.own.insert("198.19.3.2".parse().unwrap());
        p.own.insert("fd19:3::2".parse().unwrap());
        for (dst, want) in [
            ("0.0.0.0:80", Denied::Scope(Scope::Unspecified)),
            ("0.1.2.3:80", Denied::Scope(Scope::Unspecified)),
            ("[::]:80", Denied::Scope(Scope::Unspecified)),
            ("127.0.0.1:80", Denied::Scope(Scope::Loopback)),
            ("127.255.0.9:443", Denied::Scope(Scope::Loopback)),
            ("[::1]:80", Denied::Scope(Scope::Loopback)),
            ("169.254.169.254:80", Denied::Scope(Scope::LinkLocal)),
            ("[fe80::1]:80", Denied::Scope(Scope::LinkLocal)),
            ("10.0.0.1:80", Denied::Scope(Scope::Private)),
            ("172.16.0.1:80", Denied::Scope(Scope::Private)),
            ("172.31.255.255:80", Denied::Scope(Scope::Private)),
            ("192.168.1.1:80", Denied::Scope(Scope::Private)),
            ("100.64.0.1:80", Denied::Scope(Scope::Cgnat)),
            ("100.127.255.254:80", Denied::Scope(Scope::Cgnat)),
            ("[fc00::1]:80", Denied::Scope(Scope::UniqueLocal)),
            ("[fd12:3456::1]:80", Denied::Scope(Scope::UniqueLocal)),
            ("224.0.0.1:80", Denied::Scope(Scope::Multicast)),
            ("239.255.255.250:80", Denied::Scope(Scope::Multicast)),
            ("[ff02::1]:80", Denied::Scope(Scope::Multicast)),
            ("255.255.255.255:80", Denied::Scope(Scope::Broadcast)),
            ("240.0.0.1:80", Denied::Scope(Scope::Reserved)),
            ("198.19.3.2:80", Denied::OwnAddress),
            ("[fd19:3::2]:80", Denied::OwnAddress),
            ("93.184.216.34:25", Denied::Port),
            ("93.184.216.34:0", Denied::Port),
        ] {
            assert_eq!(p.check(sa(dst)), Err(want), "{dst}");
            // ICMP echo (no port) is refused the same addresses.
            if want != Denied::Port {
                assert_eq!(p.check_addr(sa(dst).ip()), Err(want), "echo to {dst}");
            }
        }
        assert_eq!(p.check_addr("93.184.216.34".parse().unwrap()), Ok(()));
    }

    #[test]
    fn ordinary_destinations_pass() {
        let p = EgressPolicy::default();
        for dst in [
            "93.184.216.34:80",
            "172.15.255.255:443",
            "172.32.0.1:443",
            "100.63.255.255:80",
            "100.128.0.1:80",
            "198.18.0.1:80",
            "198.19.0.11:80",
            "[2001:db8::1]:443",
        ] {
            assert_eq!(p.check(sa(dst)), Ok(()), "{dst}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        let p = EgressPolicy::default();
        assert_eq!(
            p.check(sa("[::ffff:127.0.0.1]:80")),
            Err(Denied::Scope(Scope::Loopback))
        );
        assert_eq!(
            p.check(sa("[::ffff:10.1.2.3]:80")),
            Err(Denied::Scope(Scope::Private))
        );
        assert_eq!(p.check(sa("[::10.1.2.3]:80")), Err(Denied::Scope(Scope::Private)));
        assert_eq!(p.check(sa("[::ffff:198.19.0.11]:80")), Ok(()));
    }

    #[test]
    fn allow_list_overrides_each_class() {
        let p = EgressPolicy {
            allow: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
                "fd19::/16".parse().unwrap(),
                "169.254.1.0/24".parse().unwrap(),
                "100.64.0.0/10".parse().unwrap(),
                "198.19.3.2/32".parse().unwrap(),
            ],
            allow_ports: vec![25],
            own: ["198.19.3.2".parse().unwrap()].into_iter().collect(),
            ..EgressPolicy::default()
        };
        assert_eq!(p.check(sa("127.0.0.1:80")), Ok(()));
        assert_eq!(p.check(sa("[::ffff:127.0.0.1]:80")), Ok(()));
        assert_eq!(p.check(sa("10.1.2.3:80")), Ok(()));
        assert_eq!(
            p.check(sa("10.2.0.1:80")),
            Err(Denied::Scope(Scope::Private)),
            "outside the allowed /16"
        );
        assert_eq!(p.check(sa("[fd19::11]:80")), Ok(()));
        assert_eq!(p.check(sa("169.254.1.9:80")), Ok(()));
        assert_eq!(
            p.check(sa("169.254.2.9:80")),
            Err(Denied::Scope(Scope::LinkLocal))
        );
        assert_eq!(p.check(sa("100.100.0.1:80")), Ok(()));
        assert_eq!(p.check(sa("198.19.3.2:80")), Ok(()));
        assert_eq!(p.check(sa("93.184.216.34:25")), Ok(()), "port 25 allowed");
        assert_eq!(p.check(sa("93.184.216.34:0")), Err(Denied::Port), "port 0 never");
    }

    #[test]
    fn extra_deny_prefixes() {
        let p = EgressPolicy {
            deny: vec!["203.0.113.0/24".parse().unwrap()],
            ..EgressPolicy::default()
        };
        assert_eq!(p.check(sa("203.0.113.7:80")), Err(Denied::Configured));
        assert_eq!(p.check(sa("203.0.114.7:80")), Ok(()));
    }
}

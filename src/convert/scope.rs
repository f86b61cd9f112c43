//! Address scopes that are not for a converter: loopback, link-local, private, shared carrier
//! space, unique-local, multicast, broadcast, reserved, unspecified. The laptop never sends a
//! flow to such a destination through a converter (a converter on the Internet cannot reach the
//! laptop's LAN, and must not learn of it), and the converter refuses to dial one unless its
//! configuration allows it (RFC 8803 §9.1: a converter "MUST be as protected as a core IP
//! router"). One list for both sides.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A special-purpose address scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// 0.0.0.0/8 or `::`.
    Unspecified,
    /// 127.0.0.0/8 or `::1`.
    Loopback,
    /// 169.254.0.0/16 or fe80::/10.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16 (RFC 1918).
    Private,
    /// 100.64.0.0/10 (RFC 6598 shared address space, carrier-grade NAT).
    Cgnat,
    /// fc00::/7 (RFC 4193 unique local).
    UniqueLocal,
    /// 224.0.0.0/4 or ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4 (reserved, never a unicast destination).
    Reserved,
}

impl Scope {
    /// snake_case name (status keys, logs).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Unspecified => "unspecified",
            Scope::Loopback => "loopback",
            Scope::LinkLocal => "link_local",
            Scope::Private => "private",
            Scope::Cgnat => "cgnat",
            Scope::UniqueLocal => "unique_local",
            Scope::Multicast => "multicast",
            Scope::Broadcast => "broadcast",
            Scope::Reserved => "reserved",
        }
    }
}

/// The special scope of `ip` (an IPv6 address embedding an IPv4 one judged as that IPv4
/// address), or `None` for an ordinary unicast address.
pub fn special_scope(ip: IpAddr) -> Option<Scope> {
    match canonical(ip) {
        IpAddr::V4(a) => class_v4(a),
        IpAddr::V6(a) => class_v6(a),
    }
}

/// An IPv6 address that embeds an IPv4 one (`::ffff:a.b.c.d` mapped, `::a.b.c.d` compatible)
/// reaches that IPv4 address: judge it as such, or `::ffff:127.0.0.1` would bypass the policy.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
                    let ([a, b], [c, d]) = (s[6].to_be_bytes(), s[7].to_be_bytes());
                    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                } else {
                    IpAddr::V6(v6)
                }
            }
        },
        v4 => v4,
    }
}

fn class_v4(a: Ipv4Addr) -> Option<Scope> {
    let o = a.octets();
    Some(match o {
        [0, ..] => Scope::Unspecified,
        [127, ..] => Scope::Loopback,
        [169, 254, ..] => Scope::LinkLocal,
        [10, ..] | [192, 168, ..] => Scope::Private,
        [172, b, ..] if (16..32).contains(&b) => Scope::Private,
        [100, b, ..] if (64..128).contains(&b) => Scope::Cgnat,
        [255, 255, 255, 255] => Scope::Broadcast,
        [a0, ..] if (224..240).contains(&a0) => Scope::Multicast,
        [a0, ..] if a0 >= 240 => Scope::Reserved,
        _ => return None,
    })
}

fn class_v6(a: Ipv6Addr) -> Option<Scope> {
    let s0 = a.segments()[0];
    Some(if a.is_unspecified() {
        Scope::Unspecified
    } else if a.is_loopback() {
        Scope::Loopback
    } else if s0 & 0xffc0 == 0xfe80 {
        Scope::LinkLocal
    } else if s0 & 0xfe00 == 0xfc00 {
        Scope::UniqueLocal
    } else if s0 & 0xff00 == 0xff00 {
        Scope::Multicast
    } else {
        return None;
    })
}

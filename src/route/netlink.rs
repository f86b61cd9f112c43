//! A small synchronous rtnetlink client over netlink-packet-route + netlink-sys: requests with an
//! ACK, dumps, and a multicast listener for the watcher.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction as NlRuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::plan::{Family, LinkState, Route, Rule, RuleAction};

/// Multicast groups the watcher joins (`RTMGRP_*` bit masks).
pub mod groups {
    /// Link changes.
    pub const LINK: u32 = 1;
    /// IPv4 address changes.
    pub const IPV4_IFADDR: u32 = 0x10;
    /// IPv4 route changes.
    pub const IPV4_ROUTE: u32 = 0x40;
    /// IPv6 address changes.
    pub const IPV6_IFADDR: u32 = 0x100;
    /// IPv6 route changes.
    pub const IPV6_ROUTE: u32 = 0x400;
}

/// An rtnetlink socket.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn decode_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad netlink message: {e}"))
}

/// Splits a datagram into netlink messages.
pub fn parse_datagram(buf: &[u8]) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(decode_error("truncated message"));
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            Ok(m) => out.push(m),
            // A message type this crate version does not know: skip it.
            Err(e) => tracing::debug!("skipping undecodable netlink message: {e}"),
        }
        off += (len + 3) & !3;
    }
    Ok(out)
}

impl Rtnl {
    /// Opens a socket for requests.
    pub fn open() -> io::Result<Rtnl> {
        Rtnl::open_groups(0)
    }

    /// Opens a socket subscribed to the multicast `groups` (see [`groups`]).
    pub fn open_groups(groups: u32) -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        if groups == 0 {
            socket.connect(&SocketAddr::new(0, 0))?;
        }
        Ok(Rtnl { socket, seq: 1 })
    }

    /// The underlying socket (for registration with mio).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Receives one datagram of messages.
    pub fn recv(&self) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        let (buf, _) = self.socket.recv_from_full()?;
        parse_datagram(&buf)
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Sends a request and waits for its ACK; a NACK becomes the matching `io::Error`.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_REQUEST | NLM_F_ACK)?;
        loop {
            for m in self.recv()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
            }
        }
    }

    /// Sends a dump request and collects every answer.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        loop {
            for m in self.recv()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(io::Error::from_raw_os_error(-code.get()));
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// Every link with its addresses.
    pub fn links(&mut self) -> io::Result<Vec<LinkState>> {
        let mut links: Vec<LinkState> = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_state(&l)),
                _ => None,
            })
            .collect();
        for m in self.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))? {
            if let RouteNetlinkMessage::NewAddress(a) = m
                && let Some(net) = address_net(&a)
                && let Some(l) = links.iter_mut().find(|l| l.index == a.header.index)
            {
                l.addresses.push(net);
            }
        }
        Ok(links)
    }

    /// Bytes received and sent by every link, by name (from the kernel's 64-bit counters).
    pub fn link_bytes(&mut self) -> io::Result<Vec<(String, u64, u64)>> {
        Ok(self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = link_state(&l).name;
                    l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Stats64(s) => Some((name.clone(), s.rx_bytes, s.tx_bytes)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The index of link `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self
            .links()?
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.index))
    }

    /// Priorities of every rule of `family`.
    pub fn rule_priorities(&mut self, family: Family) -> io::Result<Vec<u32>> {
        let mut msg = RuleMessage::default();
        msg.header.family = af(family);
        Ok(self
            .dump(RouteNetlinkMessage::GetRule(msg))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Some(
                    r.attributes
                        .iter()
                        .find_map(|a| match a {
                            RuleAttribute::Priority(p) => Some(*p),
                            _ => None,
                        })
                        .unwrap_or(0),
                ),
                _ => None,
            })
            .collect())
    }

    /// Number of routes in `table` (both families).
    pub fn count_routes(&mut self, table: u32) -> io::Result<usize> {
        let mut n = 0;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            for m in self.dump(RouteNetlinkMessage::GetRoute(msg))? {
                if let RouteNetlinkMessage::NewRoute(r) = m
                    && route_table(&r) == table
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn link_msg(&mut self, name: &str) -> io::Result<LinkMessage> {
        let index = self
            .link_index(name)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        Ok(msg)
    }

    /// Sets a link up or down.
    pub fn set_link_up(&mut self, name: &str, up: bool) -> io::Result<()> {
        let mut msg = self.link_msg(name)?;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()> {
        let mut msg = self.link_msg(name)?;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Deletes a link.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let msg = self.link_msg(name)?;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
    }

    fn addr_msg(&mut self, dev: &str, addr: &IpNet) -> io::Result<AddressMessage> {
        let index = self
            .link_index(dev)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let ip = addr.addr();
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(&ip);
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(ip));
        if ip.is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        } else {
            msg.attributes.push(AddressAttribute::Address(ip));
        }
        Ok(msg)
    }

    /// Adds an address.
    pub fn add_address(&mut self, dev: &str, addr: &IpNet) -> io::Result<()> {
        let msg = self.addr_msg(dev, addr)?;
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Removes an address.
    pub fn del_address(&mut self, dev: &str, addr: &IpNet) -> io::Result<()> {
        let msg = self.addr_msg(dev, addr)?;
        self.request(RouteNetlinkMessage::DelAddress(msg), 0)
    }

    fn route_msg(&mut self, route: &Route, for_add: bool) -> io::Result<RouteMessage> {
        let mut msg = RouteMessage::default();
        let ip = route.dst.addr();
        msg.header.address_family = family_of(&ip);
        msg.header.destination_prefix_length = route.dst.prefix_len();
        msg.header.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Table(route.table));
        if route.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(route.dst.network().into()));
        }
        match self.link_index(&route.dev)? {
            Some(index) => msg.attributes.push(RouteAttribute::Oif(index)),
            // Deleting a route through a link that is gone: the route went with it.
            None if !for_add => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
            None => return Err(io::Error::from_raw_os_error(libc::ENODEV)),
        }
        Ok(msg)
    }

    /// Adds a route.
    pub fn add_route(&mut self, route: &Route) -> io::Result<()> {
        let msg = self.route_msg(route, true)?;
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Removes a route.
    pub fn del_route(&mut self, route: &Route) -> io::Result<()> {
        let mut msg = self.route_msg(route, false)?;
        msg.header.scope = RouteScope::NoWhere;
        self.request(RouteNetlinkMessage::DelRoute(msg), 0)
    }

    /// Adds a rule.
    pub fn add_rule(&mut self, rule: &Rule) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewRule(rule_msg(rule)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes a rule.
    pub fn del_rule(&mut self, rule: &Rule) -> io::Result<()> {
        self.request(RouteNetlinkMessage::DelRule(rule_msg(rule)), 0)
    }
}

fn af(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn rule_msg(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = af(rule.family);
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some(m) = rule.fwmark {
        msg.attributes.push(RuleAttribute::FwMark(m.mark));
        msg.attributes.push(RuleAttribute::FwMask(u32::MAX));
        if m.invert {
            msg.header.flags = RuleFlags::Invert;
        }
    }
    match &rule.action {
        RuleAction::Lookup {
            table,
            suppress_prefixlength,
        } => {
            msg.header.action = NlRuleAction::ToTable;
            msg.header.table = u8::try_from(*table).unwrap_or(0);
            msg.attributes.push(RuleAttribute::Table(*table));
            if let Some(p) = suppress_prefixlength {
                msg.attributes
                    .push(RuleAttribute::SuppressPrefixLen(u32::from(*p)));
            }
        }
        RuleAction::Unreachable => msg.header.action = NlRuleAction::Unreachable,
    }
    msg
}

/// The table of a route message (the attribute wins over the 8-bit header field).
pub fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// The output interface of a route message.
pub fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// A [`LinkState`] (without addresses) from a link message.
pub fn link_state(l: &LinkMessage) -> LinkState {
    LinkState {
        name: l
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_default(),
        index: l.header.index,
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
        addresses: Vec::new(),
    }
}

/// The address and prefix of an address message.
pub fn address_net(a: &AddressMessage) -> Option<IpNet> {
    let ip = a
        .attributes
        .iter()
        .find_map(|x| match x {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })?;
    IpNet::new(ip, a.header.prefix_len).ok()
}

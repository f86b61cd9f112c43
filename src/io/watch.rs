//! The netlink watcher: follows link up/down, carrier and address changes of the physical
//! interfaces (for `status`) and puts back what the kernel removes from the TUN when it goes
//! down (routes in mpbond's table, IPv6 addresses) once it is up again.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;

use super::Worker;
use crate::daemon::status::InterfaceStatus;
use crate::route::netlink::{self, Rtnl, groups};
use crate::route::{Applier, Op};

const NETLINK: Token = Token(1);

/// What the watcher follows.
#[derive(Debug)]
pub struct Watch {
    /// The physical interfaces, shared with the status handler.
    pub interfaces: Arc<Mutex<Vec<InterfaceStatus>>>,
    /// TUN device name.
    pub tun: String,
    /// mpbond's routing table.
    pub table: u32,
    /// Ops to re-apply when the TUN is (back) up: `Plan::on_tun_up`.
    pub reapply: Vec<Op>,
    /// Told (without blocking) after each batch of changes: the engine re-reads `interfaces`.
    pub changed: Option<crossbeam_channel::Sender<()>>,
    /// An interface that appears and is detected as Ethernet, Wi-Fi or cellular is added
    /// (`Config::adopt_new`).
    pub adopt_new: bool,
    /// Woken after each batch of changes: the DNS resolver learner re-reads `interfaces`.
    pub dns: Option<Arc<mio::Waker>>,
}

/// The interface of a new-link message `msg`, if it is one to add to `ifaces`, and its place
/// (engine id) there: not known, not the TUN, detected by `classify`, and room for it. At most
/// [`MAX_INTERFACES`] are used; once the list is full, an interface detected while running that
/// vanished since gives its place to the new one (the first such), so interfaces that came and
/// went do not use up the places.
///
/// [`MAX_INTERFACES`]: crate::config::MAX_INTERFACES
pub fn adopt(
    msg: &RouteNetlinkMessage,
    ifaces: &[InterfaceStatus],
    tun: &str,
    classify: &dyn Fn(&str) -> Option<crate::cli::ifdetect::Role>,
) -> Option<(usize, InterfaceStatus)> {
    let RouteNetlinkMessage::NewLink(l) = msg else {
        return None;
    };
    let s = netlink::link_state(l);
    if s.name == tun || s.name.is_empty() || ifaces.iter().any(|i| i.name == s.name) {
        return None;
    }
    let slot = if ifaces.len() < crate::config::MAX_INTERFACES {
        ifaces.len()
    } else {
        ifaces.iter().position(|i| i.adopted && i.index == 0)?
    };
    let (role, priority) = crate::cli::ifdetect::policy(classify(&s.name)?);
    Some((
        slot,
        InterfaceStatus {
            adopted: true,
            ..InterfaceStatus::absent(s.name, role, priority)
        },
    ))
}

/// The part of the watcher that turns events into state and decisions (no I/O).
#[derive(Debug)]
pub struct Tracker {
    tun: String,
    table: u32,
    tun_index: u32,
    tun_up: bool,
}

impl Tracker {
    /// A tracker for TUN `tun` (index `tun_index`, currently up or not) and table `table`.
    pub fn new(tun: &str, tun_index: u32, tun_up: bool, table: u32) -> Tracker {
        Tracker {
            tun: tun.to_string(),
            table,
            tun_index,
            tun_up,
        }
    }

    /// Applies one message to `ifaces`; returns whether the TUN's routes and addresses must be
    /// re-applied now.
    pub fn handle(&mut self, msg: &RouteNetlinkMessage, ifaces: &mut [InterfaceStatus]) -> bool {
        match msg {
            RouteNetlinkMessage::NewLink(l) => {
                let s = netlink::link_state(l);
                if s.name == self.tun {
                    let came_up = s.up && !self.tun_up;
                    self.tun_index = s.index;
                    self.tun_up = s.up;
                    return came_up;
                }
                if let Some(i) = ifaces.iter_mut().find(|i| i.name == s.name) {
                    if i.index != s.index {
                        i.addresses.clear();
                    }
                    if (i.up, i.carrier) != (s.up, s.carrier) {
                        tracing::info!(iface = %i.name, up = s.up, carrier = s.carrier, "link changed");
                    }
                    i.index = s.index;
                    i.up = s.up;
                    i.carrier = s.carrier;
                }
                false
            }
            RouteNetlinkMessage::DelLink(l) => {
                let s = netlink::link_state(l);
                if let Some(i) = ifaces.iter_mut().find(|i| i.index == s.index && i.index != 0) {
                    tracing::info!(iface = %i.name, "link removed");
                    i.index = 0;
                    i.up = false;
                    i.carrier = false;
                    i.addresses.clear();
                }
                if s.index == self.tun_index {
                    self.tun_up = false;
                }
                false
            }
            RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
                let add = matches!(msg, RouteNetlinkMessage::NewAddress(_));
                let Some(net) = netlink::address_net(a) else {
                    return false;
                };
                if let Some(i) = ifaces
                    .iter_mut()
                    .find(|i| i.index == a.header.index && i.index != 0)
                {
                    i.addresses.retain(|x| *x != net);
                    if add {
                        i.addresses.push(net);
                    }
                    tracing::info!(iface = %i.name, address = %net, added = add, "address changed");
                }
                !add && a.header.index == self.tun_index && self.tun_up
            }
            RouteNetlinkMessage::DelRoute(r) => netlink::route_table(r) == self.table && self.tun_up,
            _ => false,
        }
    }
}

/// Starts the watcher. `ifaces` must hold the current state (from a dump) already.
pub fn spawn(watch: Watch) -> io::Result<Worker> {
    let sock = Rtnl::open_groups(
        groups::LINK | groups::IPV4_IFADDR | groups::IPV6_IFADDR | groups::IPV4_ROUTE | groups::IPV6_ROUTE,
    )?;
    sock.socket().set_non_blocking(true)?;
    let mut applier = Applier::new()?;
    let mut dump = Rtnl::open()?;
    let tun = dump.links()?.into_iter().find(|l| l.name == watch.tun);
    let tracker = Tracker::new(
        &watch.tun,
        tun.as_ref().map_or(0, |t| t.index),
        tun.is_some_and(|t| t.up),
        watch.table,
    );
    let poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&sock.socket().as_raw_fd()),
        NETLINK,
        Interest::READABLE,
    )?;
    Worker::spawn("mpbond-watch", poll, move |poll, stop| {
        run(poll, &stop, &sock, tracker, &watch, &mut applier, &mut dump);
    })
}

fn run(
    mut poll: Poll,
    stop: &AtomicBool,
    sock: &Rtnl,
    mut tracker: Tracker,
    watch: &Watch,
    applier: &mut Applier,
    dump: &mut Rtnl,
) {
    let mut events = Events::with_capacity(8);
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!("watcher poll failed: {e}");
            return;
        }
        let mut reapply = false;
        loop {
            let msgs = match sock.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Events were lost: read the whole state again.
                    tracing::warn!("netlink events lost; resynchronising");
                    resync(dump, watch);
                    reapply = true;
                    continue;
                }
                Err(e) => {
                    tracing::error!("watcher recv failed: {e}");
                    return;
                }
            };
            let Ok(mut ifaces) = watch.interfaces.lock() else {
                return;
            };
            for m in msgs {
                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                    if watch.adopt_new {
                        let sys = std::path::Path::new("/sys/class/net");
                        let classify = |n: &str| crate::cli::ifdetect::classify(sys, n);
                        if let Some((slot, new)) = adopt(&inner, &ifaces, &watch.tun, &classify) {
                            tracing::info!(iface = %new.name, role = %new.role, id = slot, "interface appeared: used");
                            if let Err(e) = crate::route::apply::nft_add_uplink(&new.name) {
                                tracing::warn!(iface = %new.name, "cannot add it to the nft filter: {e}");
                            }
                            if let Some(old) = ifaces.get_mut(slot) {
                                tracing::info!(iface = %old.name, "it takes the place of this vanished interface");
                                *old = new;
                            } else {
                                ifaces.push(new);
                            }
                        }
                    }
                    reapply |= tracker.handle(&inner, &mut ifaces);
                }
            }
        }
        if let Some(c) = &watch.changed {
            let _ = c.try_send(());
        }
        if let Some(w) = &watch.dns {
            let _ = w.wake();
        }
        if reapply {
            for op in &watch.reapply {
                match applier.reapply(op) {
                    Ok(true) => tracing::info!(target: "mpbond::route", "put back: {op}"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("cannot put back `{op}`: {e}"),
                }
            }
        }
    }
}

/// Re-reads every interface of `watch` from the kernel.
pub fn resync(dump: &mut Rtnl, watch: &Watch) {
    let Ok(links) = dump.links() else { return };
    let Ok(mut ifaces) = watch.interfaces.lock() else {
        return;
    };
    for i in ifaces.iter_mut() {
        match links.iter().find(|l| l.name == i.name) {
            Some(l) => {
                i.index = l.index;
                i.up = l.up;
                i.carrier = l.carrier;
                i.addresses = l.addresses.clone();
            }
            None => {
                i.index = 0;
                i.up = false;
                i.carrier = false;
                i.addresses.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::Role;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::route::{RouteAttribute, RouteMessage};

    fn link(name: &str, index: u32, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn addr(index: u32, a: &str, add: bool) -> RouteNetlinkMessage {
        let net: ipnet::IpNet = a.parse().unwrap();
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = net.prefix_len();
        m.attributes.push(AddressAttribute::Local(net.addr()));
        if add {
            RouteNetlinkMessage::NewAddress(m)
        } else {
            RouteNetlinkMessage::DelAddress(m)
        }
    }

    fn del_route(table: u32) -> RouteNetlinkMessage {
        let mut m = RouteMessage::default();
        m.attributes.push(RouteAttribute::Table(table));
        RouteNetlinkMessage::DelRoute(m)
    }

    fn ifaces() -> Vec<InterfaceStatus> {
        vec![InterfaceStatus {
            index: 2,
            up: true,
            carrier: true,
            ..InterfaceStatus::absent("wlan0".into(), Role::Primary, 10)
        }]
    }

    #[test]
    fn a_detected_interface_that_appears_is_added_once_with_its_role() {
        use crate::cli::ifdetect::Role as Kind;
        let classify = |n: &str| match n {
            "usb0" => Some(Kind::Cellular),
            "enp5s0" => Some(Kind::Ethernet),
            _ => None,
        };
        let mut i = ifaces();
        let (slot, usb) = adopt(&link("usb0", 11, LinkFlags::empty()), &i, "mpbond0", &classify).unwrap();
        assert_eq!(
            (slot, usb.name.as_str(), usb.role, usb.priority, usb.adopted),
            (1, "usb0", Role::Backup, 0, true)
        );
        i.push(usb);
        let mut t = Tracker::new("mpbond0", 9, true, 100);
        assert!(!t.handle(&link("usb0", 11, LinkFlags::Up | LinkFlags::LowerUp), &mut i));
        assert_eq!((i[1].index, i[1].up, i[1].carrier), (11, true, true));
        // Known, the TUN, or not detected: not added.
        for name in ["usb0", "wlan0", "mpbond0", "veth3"] {
            assert!(
                adopt(&link(name, 12, LinkFlags::Up), &i, "mpbond0", &classify).is_none(),
                "{name}"
            );
        }
        let (slot, eth) = adopt(&link("enp5s0", 13, LinkFlags::Up), &i, "mpbond0", &classify).unwrap();
        assert_eq!(
            (slot, eth.role, eth.priority),
            (2, Role::Primary, crate::config::PRIORITY_ETHERNET)
        );
        // At most MAX_INTERFACES.
        while i.len() < crate::config::MAX_INTERFACES {
            i.push(InterfaceStatus {
                name: format!("x{}", i.len()),
                ..i[0].clone()
            });
        }
        assert!(adopt(&link("enp5s0", 13, LinkFlags::Up), &i, "mpbond0", &classify).is_none());
        // The tether vanishes: its place goes to the next interface that appears; a listed
        // interface that is absent keeps its place.
        i[3].index = 0;
        let mut gone = LinkMessage::default();
        gone.header.index = 11;
        t.handle(&RouteNetlinkMessage::DelLink(gone), &mut i);
        assert_eq!(i[1].index, 0);
        let (slot, eth) = adopt(&link("enp5s0", 13, LinkFlags::Up), &i, "mpbond0", &classify).unwrap();
        assert_eq!((slot, eth.name.as_str()), (1, "enp5s0"));
        i[slot] = eth;
        t.handle(&link("enp5s0", 13, LinkFlags::Up), &mut i);
        // Full again, and no vanished interface was detected while running.
        assert!(adopt(&link("usb0", 14, LinkFlags::Up), &i, "mpbond0", &classify).is_none());
        // Known now: not added twice.
        assert!(adopt(&link("enp5s0", 15, LinkFlags::Up), &i, "mpbond0", &classify).is_none());
    }

    #[test]
    fn physical_links_and_addresses_are_followed() {
        let mut t = Tracker::new("mpbond0", 9, true, 100);
        let mut i = ifaces();
        assert!(!t.handle(&link("wlan0", 2, LinkFlags::Up), &mut i));
        assert!(i[0].up && !i[0].carrier);
        assert!(!t.handle(&addr(2, "198.18.1.2/24", true), &mut i));
        assert!(!t.handle(&addr(2, "fd18:1::2/64", true), &mut i));
        assert!(!t.handle(&addr(2, "198.18.1.2/24", true), &mut i));
        assert_eq!(i[0].addresses.len(), 2);
        assert!(!t.handle(&addr(2, "198.18.1.2/24", false), &mut i));
        assert_eq!(
            i[0].addresses,
            vec!["fd18:1::2/64".parse::<ipnet::IpNet>().unwrap()]
        );
        // Another interface's address is not ours.
        assert!(!t.handle(&addr(5, "10.0.0.1/8", true), &mut i));
        assert_eq!(i[0].addresses.len(), 1);
        let mut gone = LinkMessage::default();
        gone.header.index = 2;
        assert!(!t.handle(&RouteNetlinkMessage::DelLink(gone), &mut i));
        assert!(i[0].index == 0 && !i[0].up && i[0].addresses.is_empty());
        // It comes back with a new index.
        assert!(!t.handle(&link("wlan0", 7, LinkFlags::Up | LinkFlags::LowerUp), &mut i));
        assert!(i[0].index == 7 && i[0].up && i[0].carrier);
    }

    #[test]
    fn the_tun_coming_back_up_or_losing_a_route_triggers_a_reapply() {
        let mut t = Tracker::new("mpbond0", 9, true, 100);
        let mut i = ifaces();
        // Still up: nothing to do; a route deleted from our table while up: put it back.
        assert!(!t.handle(&link("mpbond0", 9, LinkFlags::Up), &mut i));
        assert!(t.handle(&del_route(100), &mut i));
        assert!(!t.handle(&del_route(254), &mut i));
        assert!(t.handle(&addr(9, "fd6d::1/128", false), &mut i));
        // Down: the kernel flushes routes; nothing can be put back until it is up again.
        assert!(!t.handle(&link("mpbond0", 9, LinkFlags::empty()), &mut i));
        assert!(!t.handle(&del_route(100), &mut i));
        assert!(!t.handle(&addr(9, "fd6d::1/128", false), &mut i));
        assert!(t.handle(&link("mpbond0", 9, LinkFlags::Up), &mut i));
        assert!(!t.handle(&link("mpbond0", 9, LinkFlags::Up), &mut i));
    }
}

//! The daemon's side of the DNS forwarder: learn the paths' resolvers, bind mpbond's resolver
//! sockets (port 53: before the daemon drops its privileges), and make mpbond the system's
//! resolver through the journal, so `down` and crash recovery put the old setup back. While
//! running, the learner thread learns the resolvers of the interfaces that appear (and of those
//! whose network changed) and tells the DNS thread, which forgets the paths of those that vanish.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::Sender;
use mio::{Events, Poll};

use super::RunDir;
use super::status::{DnsPathStatus, DnsStatus, InterfaceStatus};
use crate::config::{Config, DnsBackend};
use crate::dns::DnsCounters;
use crate::dns::paths::{PathBook, PathUpdate, Step};
use crate::dns::system::{self, Before, Learnt};
use crate::io::Worker;
use crate::io::dns::{DNS_PORT, Listeners, ShownPaths};
use crate::route::plan::LinkState;
use crate::route::{self, Applier, HostState, Journal};
use crate::sys;

/// The forwarder, ready for its thread.
#[derive(Debug)]
pub struct Prepared {
    /// Its sockets.
    pub listeners: Listeners,
    /// Interfaces by path id.
    pub paths: Vec<String>,
    /// Each path's resolvers.
    pub resolvers: Vec<Vec<IpAddr>>,
    /// What the learner thread needs for the paths that come later.
    pub learn: LearnBase,
    /// What `status` shows.
    pub view: View,
}

/// What was learnt at `up`, to assign the servers of interfaces that come later as those of
/// the ones present then were.
#[derive(Debug, Clone)]
pub struct LearnBase {
    /// Where per-link servers come from.
    pub backend: DnsBackend,
    /// The servers read at `up` (the replaced resolv.conf's, resolved's).
    pub learnt: Learnt,
    /// `[dns.servers]`: an interface's list replaces what was learnt.
    pub overrides: BTreeMap<String, Vec<IpAddr>>,
    /// mpbond's own addresses (never a path's resolver).
    pub own: Vec<IpAddr>,
    /// The paths as they were at `up`, by id.
    pub links: Vec<LinkState>,
    /// The journal (resolved backend: a link picked up later with per-link servers stops
    /// being a DNS default route, as those at `up` did, journalled so `down` puts it back).
    pub journal: std::path::PathBuf,
    /// Links already no DNS default route (done at `up`).
    pub demoted: Vec<String>,
}

/// What `status` shows of the forwarder.
#[derive(Debug, Clone)]
pub struct View {
    /// Addresses it answers on.
    pub listen: Vec<IpAddr>,
    /// `resolved` or `resolv-conf`.
    pub backend: &'static str,
    /// Interfaces and their resolvers, by path id (the DNS thread keeps them).
    pub paths: ShownPaths,
    /// The thread's counters.
    pub counters: Arc<Mutex<DnsCounters>>,
}

impl View {
    /// The status section.
    pub fn status(&self) -> DnsStatus {
        let c = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let paths = self.paths.lock().map(|p| p.clone()).unwrap_or_default();
        DnsStatus {
            listen: self.listen.clone(),
            backend: self.backend.to_string(),
            paths: paths
                .into_iter()
                .enumerate()
                // A forgotten path (its interface vanished) is not shown.
                .filter(|(_, (name, _))| !name.is_empty())
                .map(|(i, (name, resolvers))| DnsPathStatus {
                    interface: name,
                    resolvers,
                    answered: c.answered.get(i).copied().unwrap_or(0),
                })
                .collect(),
            counters: crate::dns::forwarder::DnsCounters {
                // Shown per path.
                answered: Vec::new(),
                ..c
            },
        }
    }
}

/// mpbond's resolver addresses: the TUN's.
fn own_addresses(config: &Config) -> Vec<IpAddr> {
    let mut own = vec![IpAddr::V4(config.tun.ipv4)];
    if let Some(v6) = config.tun.ipv6 {
        own.push(IpAddr::V6(v6));
    }
    own
}

/// Learns the resolvers, binds the sockets and (journalled) makes mpbond the system's resolver.
/// `None` when DNS is off or its sockets cannot be bound (the daemon goes on without it). An
/// error from changing the system's resolver rolls back everything in the journal.
pub fn prepare(
    rd: &RunDir,
    config: &Config,
    host: &HostState,
    applier: &mut Applier,
) -> anyhow::Result<Option<Prepared>> {
    if !config.dns.enable {
        return Ok(None);
    }
    let paths: Vec<&str> = config.used_interfaces().map(|i| i.name.as_str()).collect();
    let own = own_addresses(config);
    let (learnt, before) =
        system::learn(&config.dns, &paths).context("cannot read the system's resolvers")?;
    let resolvers = system::assign(&learnt, &paths, &host.links, &config.dns.servers, &own);
    // The IPv6 address may be missing (IPv6 off on this host): answer where we can.
    let listen: Vec<IpAddr> = own
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() || host.ipv6_available)
        .collect();
    let listeners = match Listeners::bind(&listen, DNS_PORT) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "DNS: cannot listen on port {DNS_PORT} of {listen:?} ({e}); name lookups stay as they are"
            );
            return Ok(None);
        }
    };
    let (backend, demoted) = match &before {
        Before::Resolved { default_routes } => (
            DnsBackend::Resolved,
            default_routes.iter().map(|(d, _)| d.clone()).collect(),
        ),
        Before::ResolvConf { .. } => (DnsBackend::ResolvConf, Vec::new()),
    };
    let ops = system::ops(&before, &config.tun.name, &listen);
    let mut journal =
        Journal::reopen(&rd.journal()).with_context(|| format!("cannot open {}", rd.journal().display()))?;
    route::apply_all(&ops, &mut journal, applier).context(
        "cannot make mpbond the system's resolver (`[dns] enable = false` or `--no-dns` leaves DNS alone)",
    )?;
    for (name, r) in paths.iter().zip(&resolvers) {
        tracing::info!(iface = name, resolvers = ?r, "DNS: forwarding over this path to these resolvers");
    }
    let names: Vec<String> = paths.iter().map(|p| (*p).to_string()).collect();
    Ok(Some(Prepared {
        listeners,
        view: View {
            listen,
            backend: match backend {
                DnsBackend::Resolved => "resolved",
                _ => "resolv-conf",
            },
            paths: Arc::new(Mutex::new(
                names.iter().cloned().zip(resolvers.iter().cloned()).collect(),
            )),
            counters: Arc::new(Mutex::new(DnsCounters::default())),
        },
        learn: LearnBase {
            backend,
            learnt,
            overrides: config.dns.servers.clone(),
            own,
            links: names
                .iter()
                .map(|n| {
                    host.link(n).cloned().unwrap_or_else(|| LinkState {
                        name: n.clone(),
                        index: 0,
                        up: false,
                        carrier: false,
                        addresses: Vec::new(),
                    })
                })
                .collect(),
            journal: rd.journal(),
            demoted,
        },
        paths: names,
        resolvers,
    }))
}

/// The interfaces as the watcher keeps them, as links.
fn links_of(list: &[InterfaceStatus]) -> Vec<LinkState> {
    list.iter()
        .map(|i| LinkState {
            name: i.name.clone(),
            index: i.index,
            up: i.up,
            carrier: i.carrier,
            addresses: i.addresses.clone(),
        })
        .collect()
}

/// The learner thread: woken by the netlink watcher after each batch of changes (and at its
/// retry times), it learns the resolvers of the paths that need it ([`PathBook`]) and tells
/// the DNS thread (`to_dns`, woken with `dns_waker`).
pub fn spawn_learner(
    base: LearnBase,
    resolvers: &[Vec<IpAddr>],
    interfaces: Arc<Mutex<Vec<InterfaceStatus>>>,
    to_dns: Sender<PathUpdate>,
    dns_waker: Arc<mio::Waker>,
) -> std::io::Result<Worker> {
    let mut book = PathBook::new(&base.links, resolvers);
    let mut demoted = base.demoted.clone();
    Worker::spawn(
        "mpbond-dns-learn",
        Poll::new()?,
        move |mut poll, stop: Arc<AtomicBool>| {
            let mut events = Events::with_capacity(4);
            while !stop.load(Ordering::SeqCst) {
                let links = match interfaces.lock() {
                    Ok(g) => links_of(&g),
                    Err(_) => return,
                };
                let now = sys::clock::boottime();
                for step in book.steps(now, &links) {
                    let update = match step {
                        Step::Forget(id) => Some(PathUpdate::Forget { id }),
                        Step::Learn(id) => {
                            let Some(link) = links.get(usize::from(id)) else {
                                continue;
                            };
                            let (r, from_resolved) = resolvers_of(&base, &links, id);
                            if from_resolved && !demoted.contains(&link.name) {
                                demote(&base.journal, &link.name);
                                demoted.push(link.name.clone());
                            }
                            book.learnt(sys::clock::boottime(), id, link, r)
                        }
                    };
                    if let Some(u) = update
                        && to_dns.try_send(u).is_ok()
                    {
                        let _ = dns_waker.wake();
                    }
                }
                // Woken by the watcher, by a retry coming due, or to stop; a bounded wait anyway.
                let t = sys::clock::boottime();
                let wait = book
                    .poll_timeout()
                    .map_or(Duration::from_secs(5), |d| d.saturating_duration_since(t))
                    .min(Duration::from_secs(5));
                if poll.poll(&mut events, Some(wait)).is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        },
    )
}

/// Journalled, makes `dev` no DNS default route of systemd-resolved (mpbond0's `~.` takes every
/// lookup), as `up` does for the links present then; `down` puts its old flag back.
fn demote(journal: &std::path::Path, dev: &str) {
    let old = crate::route::resolved::resolvectl(&["default-route", dev])
        .ok()
        .and_then(|o| system::parse_default_route(&o))
        .unwrap_or(true);
    let op = route::Op::ResolvedDefaultRoute {
        dev: dev.to_string(),
        value: false,
        old,
    };
    let r = Journal::reopen(journal)
        .and_then(|mut j| j.append(&op))
        .map_err(|e| format!("journal: {e}"))
        .and_then(|()| crate::route::resolved::set_default_route(dev, false).map_err(|e| e.to_string()));
    match r {
        Ok(()) => tracing::info!(target: "mpbond::route", "{op}"),
        Err(e) => tracing::warn!(iface = dev, "DNS: cannot make it no DNS default route: {e}"),
    }
}

/// Path `id`'s resolvers (I/O: `resolvectl`, `nmcli`): its interface's own servers, else those
/// read at `up` that its subnet holds or that no path's subnet does, as at `up`; `[dns.servers]`
/// wins. Also whether its own came from systemd-resolved.
fn resolvers_of(base: &LearnBase, links: &[LinkState], id: u8) -> (Vec<IpAddr>, bool) {
    let Some(link) = links.get(usize::from(id)) else {
        return (Vec::new(), false);
    };
    let mut own = system::resolved_link(base.backend, &link.name);
    let from_resolved = !own.is_empty();
    if !from_resolved {
        own = system::nmcli_dns(&link.name);
    }
    let mut learnt = Learnt {
        servers: vec![(link.name.clone(), own)],
    };
    learnt.servers.extend(
        base.learnt
            .servers
            .iter()
            .filter(|(l, _)| *l != link.name)
            .cloned(),
    );
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let per = system::assign(&learnt, &names, links, &base.overrides, &base.own);
    (
        per.get(usize::from(id)).cloned().unwrap_or_default(),
        from_resolved,
    )
}

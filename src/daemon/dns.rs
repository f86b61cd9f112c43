//! The daemon's side of the DNS forwarder: learn the paths' resolvers, bind mpbond's resolver
//! sockets (port 53: before the daemon drops its privileges), and make mpbond the system's
//! resolver through the journal, so `down` and crash recovery put the old setup back.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::RunDir;
use super::status::{DnsPathStatus, DnsStatus};
use crate::config::{Config, DnsBackend};
use crate::dns::DnsCounters;
use crate::dns::system::{self, Before};
use crate::io::dns::{DNS_PORT, Listeners};
use crate::route::{self, Applier, HostState, Journal};

/// The forwarder, ready for its thread.
#[derive(Debug)]
pub struct Prepared {
    /// Its sockets.
    pub listeners: Listeners,
    /// Each path's resolvers.
    pub resolvers: Vec<Vec<IpAddr>>,
    /// What `status` shows.
    pub view: View,
}

/// What `status` shows of the forwarder.
#[derive(Debug, Clone)]
pub struct View {
    /// Addresses it answers on.
    pub listen: Vec<IpAddr>,
    /// `resolved` or `resolv-conf`.
    pub backend: &'static str,
    /// Interfaces by path id.
    pub paths: Vec<String>,
    /// Their resolvers.
    pub resolvers: Vec<Vec<IpAddr>>,
    /// The thread's counters.
    pub counters: Arc<Mutex<DnsCounters>>,
}

impl View {
    /// The status section.
    pub fn status(&self) -> DnsStatus {
        let c = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        DnsStatus {
            listen: self.listen.clone(),
            backend: self.backend.to_string(),
            paths: self
                .paths
                .iter()
                .enumerate()
                .map(|(i, name)| DnsPathStatus {
                    interface: name.clone(),
                    resolvers: self.resolvers.get(i).cloned().unwrap_or_default(),
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
    let backend = match before {
        Before::Resolved { .. } => DnsBackend::Resolved,
        Before::ResolvConf { .. } => DnsBackend::ResolvConf,
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
    Ok(Some(Prepared {
        listeners,
        view: View {
            listen,
            backend: match backend {
                DnsBackend::Resolved => "resolved",
                _ => "resolv-conf",
            },
            paths: paths.iter().map(|p| (*p).to_string()).collect(),
            resolvers: resolvers.clone(),
            counters: Arc::new(Mutex::new(DnsCounters::default())),
        },
        resolvers,
    }))
}

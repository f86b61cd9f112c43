//! The daemon in the foreground: lock, plan, apply (journaled), start the threads, report
//! readiness, wait for a termination signal, undo everything.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::status::{
    ConverterStatus, FailoverStatus, FlowStatus, InterfaceStatus, Status, SubflowStatus, TunStatus,
};
use super::{LifecycleError, RunDir, clean_stale_journal, read_pid};
use crate::config::Config;
use crate::io::control::{self, Request};
use crate::io::engine::{self as engine_thread, EngineRequest};
use crate::io::iface::IfaceConfig;
use crate::io::pool::Pool;
use crate::io::tun::TunCounters;
use crate::io::{self as threads, Worker, watch};
use crate::route::{self, Applier, Journal, journal};
use crate::sys;

/// Environment variable: when set, the daemon writes `READY` on stdout once up (the background
/// `up` waits for that line).
pub const READY_STDOUT_ENV: &str = "MPBOND_READY_STDOUT";

/// State shared between the threads and the status handler.
#[derive(Debug)]
struct Shared {
    pid: u32,
    started: crate::time::Instant,
    config: Config,
    tun_counters: Arc<TunCounters>,
    interfaces: Arc<Mutex<Vec<InterfaceStatus>>>,
    engine: crossbeam_channel::Sender<EngineRequest>,
    budget: super::budget::Shown,
    dns: Option<super::dns::View>,
}

impl Shared {
    fn status(&self) -> Status {
        use std::sync::atomic::Ordering::Relaxed;
        let now = sys::clock::boottime();
        let mut interfaces = self.interfaces.lock().map(|g| g.clone()).unwrap_or_default();
        // Counters over netlink (sysfs shows another namespace's links unless it was remounted).
        let bytes = route::netlink::Rtnl::open()
            .and_then(|mut r| r.link_bytes())
            .unwrap_or_default();
        for i in &mut interfaces {
            if let Some((_, rx, tx)) = bytes.iter().find(|(n, _, _)| *n == i.name) {
                i.rx_bytes = *rx;
                i.tx_bytes = *tx;
            }
        }
        let mut addresses = vec![ipnet::IpNet::from(std::net::IpAddr::V4(self.config.tun.ipv4))];
        if let Some(v6) = self.config.tun.ipv6 {
            addresses.push(ipnet::IpNet::from(std::net::IpAddr::V6(v6)));
        }
        let c = &self.tun_counters;
        // The engine thread answers at its next wake-up (at most its idle period away).
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let snap = self
            .engine
            .try_send(EngineRequest::Snapshot(reply_tx))
            .ok()
            .and_then(|()| reply_rx.recv_timeout(Duration::from_secs(2)).ok())
            .unwrap_or_default();
        for (i, st) in interfaces.iter_mut().zip(&snap.ifaces) {
            i.usable = st.usable;
        }
        for (i, sz) in interfaces.iter_mut().zip(&snap.rx_sizes) {
            i.mtu = sz.mtu;
            i.rx_above_mtu = sz.above_mtu;
            i.rx_largest = sz.largest;
        }
        let names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
        let flows = snap
            .flows
            .iter()
            .map(|f| FlowStatus {
                protocol: f.protocol.to_string(),
                source: f.source,
                destination: f.destination,
                mptcp: f.upstream == "mptcp",
                converter: f.converter,
                bytes_up: f.bytes_up,
                bytes_down: f.bytes_down,
            })
            .collect();
        let name = |i: u8| names.get(usize::from(i)).cloned().unwrap_or_default();
        let subflows = snap
            .flows
            .iter()
            .enumerate()
            .flat_map(|(n, f)| {
                // The subflows go to the converter when one carries the flow.
                let peer = f.converter.unwrap_or(f.destination);
                f.subflows.iter().map(move |sf| (n, peer, sf))
            })
            .map(|(n, remote, sf)| SubflowStatus {
                flow: n,
                interface: name(sf.iface),
                local: sf.local,
                remote,
                state: sf.state.clone(),
                srtt_us: sf.srtt_us,
                usable: sf.usable,
                backup: sf.backup,
                bytes_sent: sf.bytes_sent,
            })
            .collect();
        let recent_failovers = snap
            .failovers
            .iter()
            .map(|r| FailoverStatus {
                from: name(r.from),
                cause: match r.cause {
                    crate::engine::FailoverCause::Unavailable => "unavailable".into(),
                    crate::engine::FailoverCause::Unresponsive => "unresponsive".into(),
                },
                ago_ms: snap.now_us.saturating_sub(r.at_us) / 1000,
                flows: r.flows,
                resumed: r.resumed,
                first_resume_us: r.first_resume_us,
                last_resume_us: r.last_resume_us,
            })
            .collect();
        let counters: std::collections::BTreeMap<String, u64> = snap.counters.into_iter().collect();
        Status {
            pid: self.pid,
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            mode: self.config.mode,
            tun: TunStatus {
                name: self.config.tun.name.clone(),
                mtu: self.config.tun.mtu,
                addresses,
                rx_packets: c.rx_packets.load(Relaxed),
                rx_bytes: c.rx_bytes.load(Relaxed),
                tx_packets: c.tx_packets.load(Relaxed),
                tx_bytes: c.tx_bytes.load(Relaxed),
                rx_invalid: c.rx_invalid.load(Relaxed),
                rx_tcp: c.rx_tcp.load(Relaxed),
                rx_udp: c.rx_udp.load(Relaxed),
                rx_icmp: c.rx_icmp.load(Relaxed),
                offload: c.offload.load(Relaxed),
                rx_super: c.rx_super.load(Relaxed),
                rx_csum_offloaded: c.rx_csum_offloaded.load(Relaxed),
                tx_super: c.tx_super.load(Relaxed),
                tx_csum_offloaded: c.tx_csum_offloaded.load(Relaxed),
                tx_software: c.tx_software.load(Relaxed),
            },
            interfaces,
            flows,
            subflows,
            failovers: counters.get("failovers").copied().unwrap_or(0)
                + counters.get("unresponsive_failovers").copied().unwrap_or(0),
            recent_failovers,
            counters,
            converters: snap
                .converters
                .iter()
                .map(|c| ConverterStatus {
                    addr: c.addr,
                    up: c.up,
                    retry_in_ms: c.retry_in_ms,
                    flows: c.flows,
                    sessions: c.sessions,
                    failures: c.failures,
                    last_failure: c.last_failure.map(|f| f.name().to_string()),
                })
                .collect(),
            budget: self.budget.lock().map(|g| g.clone()).unwrap_or_default(),
            dns: self.dns.as_ref().map(super::dns::View::status),
        }
    }
}

/// Opens and locks the pid file; `AlreadyUp` when another daemon holds it.
fn lock_pid_file(rd: &RunDir) -> anyhow::Result<File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(rd.dir())
        .with_context(|| format!("cannot create run dir {}", rd.dir().display()))?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(rd.pid_file())
        .with_context(|| format!("cannot open {}", rd.pid_file().display()))?;
    if !sys::proc::try_lock(&f)? {
        return Err(LifecycleError::AlreadyUp {
            pid: read_pid(rd).unwrap_or(0),
            dir: rd.dir().to_owned(),
        }
        .into());
    }
    f.set_len(0)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_all()?;
    Ok(f)
}

/// Runs the daemon until a termination signal. Everything it changed is undone before it
/// returns, on success and on failure.
pub fn run(rd: &RunDir, config: &Config) -> anyhow::Result<()> {
    // Block the termination signals before any thread exists, so all threads inherit the mask
    // and the main thread collects them with sigtimedwait.
    sys::proc::block_termination_signals().context("cannot block signals")?;
    let lock = lock_pid_file(rd)?;
    let result = run_locked(rd, config);
    let _ = std::fs::remove_file(rd.socket());
    let _ = std::fs::remove_file(rd.pid_file());
    drop(lock);
    result
}

fn run_locked(rd: &RunDir, config: &Config) -> anyhow::Result<()> {
    clean_stale_journal(rd)?;
    // A bad converter key is a usage error found before anything on the laptop changes.
    let converter = converter_settings(config)?;
    let mut applier = Applier::new().context("cannot open rtnetlink")?;
    let host = applier
        .host_state(config)
        .context("cannot read the network state")?;
    let plan = route::plan(config, &host)?;
    let mut journal = Journal::create(&rd.journal())
        .with_context(|| format!("cannot create {}", rd.journal().display()))?;
    route::apply_all(&plan.ops, &mut journal, &mut applier)?;
    drop(journal);

    let undo = |applier: &mut Applier| {
        if let Err(e) = journal::replay(&rd.journal(), applier) {
            tracing::error!("undo incomplete (run `mpbond down` again): {e}");
        }
    };
    // Port 53 is bound before the privileges go.
    let dns = match super::dns::prepare(rd, config, &host, &mut applier) {
        Ok(d) => d,
        Err(e) => {
            undo(&mut applier);
            return Err(e);
        }
    };
    // From here on the daemon needs only the network capabilities (per thread: before any worker
    // starts, so they all inherit the reduced set).
    if let Err(e) = sys::caps::keep_only(&[sys::caps::CAP_NET_ADMIN, sys::caps::CAP_NET_RAW]) {
        undo(&mut applier);
        return Err(anyhow::Error::new(e).context("cannot drop privileges"));
    }
    let mut workers = match start_threads(rd, config, &plan, &host, &mut applier, converter, dns) {
        Ok(w) => w,
        Err(e) => {
            undo(&mut applier);
            return Err(e);
        }
    };
    tracing::info!("mpbond is up: {} routes the traffic", config.tun.name);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if std::env::var_os(READY_STDOUT_ENV).is_some() {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"READY\n").and_then(|()| out.flush());
    }

    let signal = loop {
        if let Some(sig) = sys::proc::wait_for_termination(Duration::from_secs(3600)) {
            break sig;
        }
    };
    tracing::info!("signal {signal}: shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for w in &mut workers {
        w.stop();
    }
    drop(workers);
    undo(&mut applier);
    tracing::info!("mpbond is down");
    Ok(())
}

/// The converters and this laptop's key for them, read from the key file.
/// Who may read the status, with the group looked up now; a group that does not exist leaves the
/// status to root (said in the log).
fn status_access(s: &crate::config::StatusConfig) -> control::Access {
    use crate::config::StatusReaders;
    match s.readers {
        StatusReaders::Root => control::Access::Owner,
        StatusReaders::Everyone => control::Access::Everyone,
        StatusReaders::Group => match sys::sock::group_id(&s.group) {
            Some(gid) => control::Access::Group(gid),
            None => {
                tracing::warn!(
                    "group {:?} does not exist: `mpbond status` is for root only (create it, or set [status] readers)",
                    s.group
                );
                control::Access::Owner
            }
        },
    }
}

fn converter_settings(config: &Config) -> anyhow::Result<Option<crate::engine::ConverterSettings>> {
    let Some(c) = &config.converter else {
        return Ok(None);
    };
    let key = crate::convert::key::ClientKey::load(&c.key_file).map_err(|e| {
        crate::config::ConfigError::Invalid {
            key: "converter.key_file",
            reason: e.to_string(),
        }
    })?;
    tracing::info!(converters = ?c.addresses, key = %key.id(), "flows to servers without MPTCP go through a converter");
    Ok(Some(crate::engine::ConverterSettings {
        addrs: c.addresses.clone(),
        key,
    }))
}

fn start_threads(
    rd: &RunDir,
    config: &Config,
    plan: &route::Plan,
    host: &route::HostState,
    applier: &mut Applier,
    converter: Option<crate::engine::ConverterSettings>,
    dns: Option<super::dns::Prepared>,
) -> anyhow::Result<Vec<Worker>> {
    let tun = applier.take_tun().context("the plan did not create the TUN")?;
    let interfaces: Vec<InterfaceStatus> = config
        .used_interfaces()
        .map(|i| {
            let l = host.link(&i.name);
            InterfaceStatus {
                index: l.map_or(0, |l| l.index),
                up: l.is_some_and(|l| l.up),
                carrier: l.is_some_and(|l| l.carrier),
                addresses: l.map(|l| l.addresses.clone()).unwrap_or_default(),
                ..InterfaceStatus::absent(i.name.clone(), i.role, i.priority)
            }
        })
        .collect();
    let (req_tx, req_rx) = crossbeam_channel::bounded(16);
    let shared = Arc::new(Shared {
        pid: std::process::id(),
        started: sys::clock::boottime(),
        config: config.clone(),
        tun_counters: Arc::new(TunCounters::default()),
        interfaces: Arc::new(Mutex::new(interfaces)),
        engine: req_tx,
        budget: Default::default(),
        dns: dns.as_ref().map(|d| d.view.clone()),
    });
    let mut workers = Vec::new();
    let mut dns_health = None;
    let mut dns_learner = None;
    if let Some(d) = dns {
        let (health_tx, health_rx) = crossbeam_channel::bounded(16);
        let (update_tx, update_rx) = crossbeam_channel::bounded(64);
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).context("no randomness for the DNS query IDs")?;
        let learn_resolvers = d.resolvers.clone();
        let w = threads::dns::spawn(threads::dns::DnsSetup {
            paths: d.paths,
            resolvers: d.resolvers,
            updates: update_rx,
            shown: d.view.paths.clone(),
            fwmark: config.routing.fwmark,
            listeners: d.listeners,
            health: health_rx,
            counters: d.view.counters.clone(),
            seed: u64::from_le_bytes(seed),
        })
        .context("DNS thread")?;
        dns_health = Some((health_tx, w.waker()));
        let learner = super::dns::spawn_learner(
            d.learn,
            &learn_resolvers,
            shared.interfaces.clone(),
            update_tx,
            w.waker(),
        )
        .context("DNS learner thread")?;
        dns_learner = Some(learner.waker());
        workers.push(w);
        workers.push(learner);
    }
    let pool = Pool::new(8192, 512);
    // With the vnet header the host takes our segments toward it as super-segments with partial
    // checksums (the kernel cuts them, or takes them whole as GRO would).
    let tun_vnet = tun.vnet();
    shared
        .tun_counters
        .offload
        .store(tun_vnet, std::sync::atomic::Ordering::Relaxed);
    let (tun_tx, tun_rx) = crossbeam_channel::bounded(1024);
    let (tun_worker, to_tun) =
        threads::tun::spawn(tun, shared.tun_counters.clone(), pool.clone(), tun_tx).context("TUN thread")?;
    workers.push(tun_worker);
    let (changed_tx, changed_rx) = crossbeam_channel::bounded(1);
    let w = watch::Watch {
        interfaces: shared.interfaces.clone(),
        tun: plan.tun.clone(),
        table: config.routing.table,
        reapply: plan.on_tun_up(),
        changed: Some(changed_tx.clone()),
        adopt_new: config.adopt_new,
        dns: dns_learner,
    };
    workers.push(watch::spawn(w).context("netlink watcher")?);
    // Events between the initial dump and the watcher's subscription would be lost: read again.
    if let Ok(mut dump) = route::netlink::Rtnl::open() {
        watch::resync(
            &mut dump,
            &watch::Watch {
                interfaces: shared.interfaces.clone(),
                tun: plan.tun.clone(),
                table: config.routing.table,
                reapply: Vec::new(),
                changed: None,
                adopt_new: false,
                dns: None,
            },
        );
    }
    let overhead: engine_thread::Overhead =
        Arc::new(std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)));
    workers.push(
        super::budget::spawn(
            config,
            shared.interfaces.clone(),
            changed_tx.clone(),
            shared.budget.clone(),
            overhead.clone(),
        )
        .context("budget thread")?,
    );
    let _ = changed_tx.try_send(());
    let ifaces = config
        .used_interfaces()
        .enumerate()
        .map(|(id, i)| IfaceConfig {
            id: id as u8,
            name: i.name.clone(),
            ports: config.routing.subflow_ports.clone(),
            fwmark: config.routing.fwmark,
            ring_blocks: 8,
            netns: None,
        })
        .collect();
    let mut isn_key = [0u8; 32];
    getrandom::fill(&mut isn_key).context("no randomness for the ISN key")?;
    let engine_cfg = crate::engine::Config {
        ports: config.routing.subflow_ports.clone(),
        tun_mtu: config.tun.mtu,
        isn_key: crate::tcp::IsnKey(isn_key),
        mptcp: Some(crate::mptcp::MptcpConfig {
            mode: config.mode,
            join: config.join,
            join_delay: config.join_delay,
            nat_idle: config.nat_idle,
            backup_keepalive: config.backup_keepalive,
            redundant_interactive: config.redundant.interactive_tcp,
            capable: crate::mptcp::handshake::CapableConfig {
                checksum_required: config.checksums,
                ..Default::default()
            },
            ..crate::mptcp::MptcpConfig::default()
        }),
        converter,
        redundancy: config.redundant.clone(),
        // By interface id: each interface gets the cap of its role.
        rate_caps: config
            .used_interfaces()
            .map(|i| config.budget.limits_for(i.role).and_then(|l| l.rate))
            .collect(),
        upstream_tcp: crate::tcp::Config {
            super_segments: if config.super_segments {
                crate::wire::gso::MAX_PACKET
            } else {
                0
            },
            ..crate::tcp::Config::default()
        },
        ifaces: config
            .used_interfaces()
            .map(|i| crate::engine::IfacePolicy {
                role: i.role,
                priority: i.priority,
            })
            .collect(),
        host_tcp: crate::tcp::Config {
            super_segments: if tun_vnet { crate::wire::gso::MAX_PACKET } else { 0 },
            partial_checksums: tun_vnet,
            ..crate::engine::Config::default().host_tcp
        },
        ..crate::engine::Config::default()
    };
    workers.push(
        engine_thread::spawn(engine_thread::Setup {
            engine: engine_cfg,
            ifaces,
            interfaces: shared.interfaces.clone(),
            changed: changed_rx,
            from_tun: tun_rx,
            to_tun,
            pool,
            requests: req_rx,
            dns_health,
            overhead,
            budget: config.budget.clone(),
        })
        .context("engine thread")?,
    );
    let handler_state = shared.clone();
    let handler: control::Handler = Box::new(move |req| match req {
        Request::Status => serde_json::to_value(handler_state.status())
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        Request::Shutdown => {
            sys::proc::terminate_self();
            serde_json::json!({ "ok": true })
        }
    });
    workers.push(
        control::spawn(&rd.socket(), status_access(&config.status), handler)
            .with_context(|| format!("cannot listen on {}", rd.socket().display()))?,
    );
    Ok(workers)
}

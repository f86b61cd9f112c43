//! The daemon in the foreground: lock, plan, apply (journaled), start the threads, report
//! readiness, wait for a termination signal, undo everything.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::status::{InterfaceStatus, Role, Status, TunStatus};
use super::{LifecycleError, RunDir, clean_stale_journal, read_pid};
use crate::config::Config;
use crate::io::control::{self, Request};
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
            },
            interfaces,
            flows: Vec::new(),
            subflows: Vec::new(),
            failovers: 0,
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
    // From here on the daemon needs only the network capabilities (per thread: before any worker
    // starts, so they all inherit the reduced set).
    if let Err(e) = sys::caps::keep_only(&[sys::caps::CAP_NET_ADMIN, sys::caps::CAP_NET_RAW]) {
        undo(&mut applier);
        return Err(anyhow::Error::new(e).context("cannot drop privileges"));
    }
    let mut workers = match start_threads(rd, config, &plan, &host, &mut applier) {
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

fn start_threads(
    rd: &RunDir,
    config: &Config,
    plan: &route::Plan,
    host: &route::HostState,
    applier: &mut Applier,
) -> anyhow::Result<Vec<Worker>> {
    let tun = applier.take_tun().context("the plan did not create the TUN")?;
    let interfaces: Vec<InterfaceStatus> = [(Role::Wifi, &config.wifi), (Role::Cellular, &config.cellular)]
        .into_iter()
        .map(|(role, name)| {
            let l = host.link(name);
            InterfaceStatus {
                name: name.clone(),
                role,
                index: l.map_or(0, |l| l.index),
                up: l.is_some_and(|l| l.up),
                carrier: l.is_some_and(|l| l.carrier),
                addresses: l.map(|l| l.addresses.clone()).unwrap_or_default(),
                rx_bytes: 0,
                tx_bytes: 0,
            }
        })
        .collect();
    let shared = Arc::new(Shared {
        pid: std::process::id(),
        started: sys::clock::boottime(),
        config: config.clone(),
        tun_counters: Arc::new(TunCounters::default()),
        interfaces: Arc::new(Mutex::new(interfaces)),
    });
    let mut workers = Vec::new();
    workers.push(threads::tun::spawn(tun, shared.tun_counters.clone()).context("TUN thread")?);
    let w = watch::Watch {
        interfaces: shared.interfaces.clone(),
        tun: plan.tun.clone(),
        table: config.routing.table,
        reapply: plan.on_tun_up(),
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
            },
        );
    }
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
        control::spawn(&rd.socket(), handler)
            .with_context(|| format!("cannot listen on {}", rd.socket().display()))?,
    );
    Ok(workers)
}

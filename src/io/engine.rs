//! The engine thread: owns the [`Engine`] (all protocol state) and the handles of the interface
//! threads and of the datagram thread. It waits with a crossbeam `select` on batches from the TUN
//! thread, interface events, datagram results, interface-state notifications from the netlink
//! watcher and control requests, with the engine's next timer as the timeout; after each wake-up
//! it drains a capped amount of further input, runs the timers, and sends the engine's output in
//! batches to the TUN thread, each interface thread and the datagram thread.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use mio::Poll;

use super::Worker;
use super::dgram::{self, DgramCmd, DgramEvent, DgramHandle};
use super::iface::{self, IfaceConfig, IfaceEvent, IfaceHandle};
use super::pool::{Batch, Pool};
use super::tun::TunSender;
use crate::daemon::status::InterfaceStatus;
use crate::engine::{self, DatagramAction, Dest, Engine, FlowInfo, IfaceState};
use crate::sys;
use crate::time::Instant;

/// Input batches handled per wake-up at most before output is flushed (cap on work).
const MAX_BATCHES_PER_WAKE: usize = 64;
/// Packets written per flush at most before input is looked at again.
const MAX_OUT_PER_WAKE: usize = 8192;
/// Longest sleep (the stop flag is looked at this often).
const MAX_IDLE: Duration = Duration::from_millis(100);
/// After a wake-up that handled packets, the engine looks for the next input this long before it
/// sleeps: a request/response exchange's answer (from the interface thread) or the host's next
/// request (from the TUN thread) then reaches it without a futex wake-up and a context switch,
/// which cost more than this on a busy machine. Bulk transfers are not slowed: the channels are
/// rarely empty then.
const SPIN: Duration = Duration::from_micros(50);
/// Packets the engine reads from the TUN itself at most per look while it spins.
const SPIN_READ: usize = 8;
/// Segments the engine reads from an interface's receive ring itself at most per look while it
/// spins.
const SPIN_RECEIVE: u32 = 64;
/// How often the engine is told the wall-clock time (converter cookies; NTP may step it).
const WALL_CLOCK_EVERY: Duration = Duration::from_secs(10);
/// How often the engine's overhead counts are published for the budget thread.
const OVERHEAD_EVERY: Duration = Duration::from_secs(1);

/// Handover mode's own bytes on each backup interface, by interface id, as the engine counted
/// them since it started ([`Engine::overhead`]); the budget thread counts them per day.
pub type Overhead = Arc<[std::sync::atomic::AtomicU64; crate::config::MAX_INTERFACES]>;

/// A request to the engine thread.
#[derive(Debug)]
pub enum EngineRequest {
    /// Reply with a [`Snapshot`].
    Snapshot(Sender<Snapshot>),
}

/// The engine's state for `status`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters by name.
    pub counters: Vec<(String, u64)>,
    /// Flows and sessions.
    pub flows: Vec<FlowInfo>,
    /// What the engine believes of each interface.
    pub ifaces: Vec<IfaceState>,
    /// Recent failovers.
    pub failovers: Vec<engine::FailoverRecord>,
    /// The RFC 8803 converters.
    pub converters: Vec<engine::converters::ConverterView>,
    /// The engine clock when the snapshot was taken (µs).
    pub now_us: u64,
    /// Received packet sizes per interface thread, in the order of the interface list.
    pub rx_sizes: Vec<RxSizes>,
}

/// What an interface thread saw of the size of the packets it received (GRO proof).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxSizes {
    /// The interface's MTU (0: unknown).
    pub mtu: u32,
    /// Packets larger than the MTU (GRO super-segments).
    pub above_mtu: u64,
    /// The largest packet, bytes.
    pub largest: u64,
}

/// Everything the engine thread needs.
#[derive(Debug)]
pub struct Setup {
    /// Engine settings.
    pub engine: engine::Config,
    /// The interface threads to run: Wi-Fi (id 0) then cellular (id 1).
    pub ifaces: Vec<IfaceConfig>,
    /// The interfaces' state as the netlink watcher keeps it.
    pub interfaces: Arc<Mutex<Vec<InterfaceStatus>>>,
    /// The watcher's "something changed" notifications.
    pub changed: Receiver<()>,
    /// Packets from the TUN thread.
    pub from_tun: Receiver<Batch>,
    /// Packets to the TUN thread.
    pub to_tun: TunSender,
    /// The buffer pool.
    pub pool: Pool,
    /// Control requests.
    pub requests: Receiver<EngineRequest>,
    /// Where the paths' health goes when it changes (the DNS thread, woken after a send).
    pub dns_health: Option<(Sender<Vec<crate::dns::PathSignal>>, Arc<mio::Waker>)>,
    /// Where the engine's overhead counts are published.
    pub overhead: Overhead,
    /// The data budgets by role: an interface picked up while running gets its role's rate cap.
    pub budget: crate::config::BudgetConfig,
}

/// Starts the interface threads, the datagram thread and the engine thread.
pub fn spawn(setup: Setup) -> io::Result<Worker> {
    let (if_tx, if_rx) = crossbeam_channel::bounded(1024);
    let mut handles = Vec::new();
    let mut names = Vec::new();
    for c in &setup.ifaces {
        names.push(c.name.clone());
        handles.push(iface::spawn(c.clone(), setup.pool.clone(), if_tx.clone())?);
    }
    let (dg_tx, dg_rx) = crossbeam_channel::bounded(1024);
    let fwmark = setup.ifaces.first().map_or(0, |c| c.fwmark);
    let dgram = dgram::spawn(names, fwmark, setup.pool.clone(), dg_tx)?;
    Worker::spawn("mpbond-engine", Poll::new()?, move |_poll, stop| {
        let mut t = Thread {
            engine: Engine::new(setup.engine.clone()),
            open: vec![false; handles.len()],
            last_index: vec![0; handles.len()],
            names: setup.ifaces.iter().map(|c| c.name.clone()).collect(),
            handles,
            dgram,
            out: setup.pool.get_whole(),
            setup,
            if_rx,
            if_tx,
            dg_rx,
            scratch: vec![0; 65536],
            health: Vec::new(),
        };
        t.run(&stop);
        t.dgram.stop();
    })
}

struct Thread {
    engine: Engine,
    handles: Vec<IfaceHandle>,
    open: Vec<bool>,
    last_index: Vec<u32>,
    /// The interface each thread in `handles` is for.
    names: Vec<String>,
    dgram: DgramHandle,
    setup: Setup,
    if_rx: Receiver<IfaceEvent>,
    /// For the threads of interfaces that appear while running.
    if_tx: crossbeam_channel::Sender<IfaceEvent>,
    dg_rx: Receiver<Vec<DgramEvent>>,
    scratch: Vec<u8>,
    /// Where the engine builds its next packet: a large one leaves in this buffer (no copy), a
    /// small one is copied to a small buffer (see [`Pool::get_whole`]).
    out: super::pool::PacketBuf,
    /// The path health last sent to the DNS thread.
    health: Vec<crate::dns::PathSignal>,
}

fn now() -> Instant {
    sys::clock::boottime()
}

/// Wall-clock time since the UNIX epoch.
fn unix_now() -> Duration {
    #[expect(
        clippy::disallowed_methods,
        reason = "io/ reads the wall clock for the engine"
    )]
    let t = std::time::SystemTime::now();
    t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

impl Thread {
    fn run(&mut self, stop: &AtomicBool) {
        self.refresh_ifaces(now());
        let mut more = false;
        // Until when to spin for input before sleeping (see `SPIN`).
        let mut spin_until: Option<Instant> = None;
        let mut wall_clock_at = now();
        let mut overhead_at = wall_clock_at;
        self.engine.set_unix_time(wall_clock_at, unix_now());
        while !stop.load(Ordering::SeqCst) {
            let t = now();
            if t.saturating_duration_since(wall_clock_at) >= WALL_CLOCK_EVERY {
                wall_clock_at = t;
                self.engine.set_unix_time(t, unix_now());
            }
            if t.saturating_duration_since(overhead_at) >= OVERHEAD_EVERY {
                overhead_at = t;
                for (slot, &v) in self.setup.overhead.iter().zip(self.engine.overhead()) {
                    slot.store(v, Ordering::Relaxed);
                }
            }
            let mut timeout = if more {
                Duration::ZERO
            } else {
                self.engine
                    .poll_timeout()
                    .map_or(MAX_IDLE, |d| d.saturating_duration_since(t))
                    .min(MAX_IDLE)
            };
            // The spin lasts until its deadline even when a timer cuts one look short (a timer
            // due first ends this look, the next goes on spinning).
            if let Some(until) = spin_until
                && !timeout.is_zero()
            {
                timeout = if self.spin(until.min(t + timeout)) {
                    Duration::ZERO
                } else {
                    // What is left until the timer (the spin may have used it all).
                    (t + timeout).saturating_duration_since(now())
                };
            }
            // Whether packets came in (then spin for the next before sleeping again).
            let mut handled = false;
            select! {
                recv(self.setup.from_tun) -> m => match m {
                    Ok(b) => {
                        handled = true;
                        self.on_tun(&b)
                    }
                    Err(_) => self.setup.from_tun = crossbeam_channel::never(),
                },
                recv(self.if_rx) -> m => match m {
                    Ok(e) => {
                        handled = true;
                        self.on_iface(e)
                    }
                    Err(_) => self.if_rx = crossbeam_channel::never(),
                },
                recv(self.dg_rx) -> m => match m {
                    Ok(b) => {
                        handled = true;
                        self.on_dgram(b)
                    }
                    Err(_) => self.dg_rx = crossbeam_channel::never(),
                },
                recv(self.setup.changed) -> m => match m {
                    Ok(()) => self.refresh_ifaces(now()),
                    Err(_) => self.setup.changed = crossbeam_channel::never(),
                },
                recv(self.setup.requests) -> m => match m {
                    Ok(EngineRequest::Snapshot(reply)) => {
                        let _ = reply.try_send(self.snapshot());
                    }
                    Err(_) => self.setup.requests = crossbeam_channel::never(),
                },
                default(timeout) => {}
            }
            for _ in 0..MAX_BATCHES_PER_WAKE {
                let mut any = false;
                if let Ok(b) = self.setup.from_tun.try_recv() {
                    self.on_tun(&b);
                    any = true;
                }
                if let Ok(e) = self.if_rx.try_recv() {
                    self.on_iface(e);
                    any = true;
                }
                if let Ok(b) = self.dg_rx.try_recv() {
                    self.on_dgram(b);
                    any = true;
                }
                if !any {
                    break;
                }
                handled = true;
            }
            let t = now();
            self.engine.handle_timeout(t);
            more = self.flush(t);
            if handled || more {
                spin_until = Some(t + SPIN);
            } else if spin_until.is_some_and(|u| t >= u) {
                spin_until = None;
            }
            self.publish_health();
        }
    }

    /// Spins until a packet channel has input (true), or the TUN or an interface's receive ring
    /// had packets, which this thread reads and handles itself (true), or `until` passes (false).
    fn spin(&mut self, until: Instant) -> bool {
        loop {
            for _ in 0..64 {
                if !self.setup.from_tun.is_empty() || !self.if_rx.is_empty() || !self.dg_rx.is_empty() {
                    return true;
                }
                std::hint::spin_loop();
            }
            let from_tun = &self.setup.from_tun;
            if let Some(b) = self
                .setup
                .to_tun
                .try_read(&self.setup.pool, SPIN_READ, || !from_tun.is_empty())
            {
                self.on_tun(&b);
                return true;
            }
            if self.receive_direct() > 0 {
                return true;
            }
            if now() >= until {
                return false;
            }
        }
    }

    /// Reads the interfaces' receive rings on this thread and hands the segments to the engine
    /// straight from the rings (see `iface`'s module documentation); returns how many.
    fn receive_direct(&mut self) -> u32 {
        let t = now();
        let mut n = 0;
        for (i, h) in self.handles.iter().enumerate() {
            let (eng, if_rx) = (&mut self.engine, &self.if_rx);
            let id = i as engine::IfaceId;
            n += h.try_receive(
                SPIN_RECEIVE,
                || !if_rx.is_empty(),
                |p, csum_not_ready| eng.handle_iface_packet(t, id, p, csum_not_ready),
            );
        }
        n
    }

    /// Tells the DNS thread when a path's health changed.
    fn publish_health(&mut self) {
        let Some((tx, waker)) = &self.setup.dns_health else {
            return;
        };
        let h = self.engine.path_health(self.handles.len() as u8);
        if h != self.health && tx.try_send(h.clone()).is_ok() {
            let _ = waker.wake();
            self.health = h;
        }
    }

    fn on_tun(&mut self, batch: &Batch) {
        let t = now();
        for p in batch {
            let checked = p.meta.csum_not_ready || p.meta.csum_valid;
            self.engine.handle_tun_packet_checked(t, p, checked);
        }
    }

    fn on_iface(&mut self, e: IfaceEvent) {
        let t = now();
        match e {
            IfaceEvent::Received { iface, packets } => {
                for p in &packets {
                    self.engine
                        .handle_iface_packet(t, iface, p, p.meta.csum_not_ready);
                }
            }
            IfaceEvent::Opened { iface } => {
                if let Some(o) = self.open.get_mut(usize::from(iface)) {
                    *o = true;
                }
                self.refresh_ifaces(t);
            }
            IfaceEvent::Closed { iface, reason } => {
                tracing::info!(iface, "interface thread closed: {reason}");
                if let Some(o) = self.open.get_mut(usize::from(iface)) {
                    *o = false;
                }
                self.refresh_ifaces(t);
            }
        }
    }

    fn on_dgram(&mut self, batch: Vec<DgramEvent>) {
        let t = now();
        for e in batch {
            match e {
                DgramEvent::Udp {
                    session,
                    iface,
                    payload,
                } => self.engine.handle_datagram_on(t, session, iface, &payload),
                DgramEvent::UdpRefused { session } => self.engine.handle_datagram_refused(t, session),
                DgramEvent::Icmp { iface, from, message } => {
                    self.engine.handle_icmp(t, iface, from, &message)
                }
            }
        }
    }

    /// Reads the watcher's view of the interfaces into the engine; asks a closed interface
    /// thread to reopen when its link is back.
    fn refresh_ifaces(&mut self, t: Instant) {
        let list = match self.setup.interfaces.lock() {
            Ok(g) => g.clone(),
            Err(_) => return,
        };
        self.add_ifaces(t, &list);
        for (i, st) in list.iter().enumerate().take(self.handles.len()) {
            let link_ok = st.index != 0 && st.up && st.carrier;
            if link_ok && (!self.open[i] || self.last_index[i] != st.index) {
                self.handles[i].reopen();
            }
            self.last_index[i] = st.index;
            let v4 = st.addresses.iter().find_map(|a| match a.addr() {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            });
            let v6 = st.addresses.iter().find_map(|a| match a.addr() {
                IpAddr::V6(v) if (v.segments()[0] & 0xffc0) != 0xfe80 => Some(v),
                _ => None,
            });
            let state = IfaceState {
                // An interface whose data budget is used up is not used (daemon::budget).
                usable: link_ok && self.open[i] && !st.budget_blocked,
                v4,
                v6,
                // Past its budget's soft share: only when nothing else works (issue 16).
                last_resort: st.budget_soft,
            };
            self.engine.handle_iface_state(t, i as engine::IfaceId, state);
        }
    }

    /// Starts the threads of the interfaces the watcher added to `list` (picked up while
    /// running, or in the place of one that vanished) and gives the engine their policy and
    /// their role's rate cap.
    fn add_ifaces(&mut self, t: Instant, list: &[InterfaceStatus]) {
        let Some(template) = self.setup.ifaces.first().cloned() else {
            return;
        };
        for (i, st) in list.iter().enumerate().take(crate::config::MAX_INTERFACES) {
            if self.names.get(i) == Some(&st.name) {
                continue;
            }
            // Only the next id, or the place of a vanished interface.
            if i > self.handles.len() {
                return;
            }
            let id = i as engine::IfaceId;
            let c = IfaceConfig {
                id,
                name: st.name.clone(),
                ..template.clone()
            };
            let h = match iface::spawn(c, self.setup.pool.clone(), self.if_tx.clone()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(iface = %st.name, "cannot start the interface thread: {e}");
                    return;
                }
            };
            if i < self.handles.len() {
                // The old interface's subflows and sessions go first (it vanished; the engine
                // may not have seen it unusable yet), then its thread.
                self.engine.handle_iface_state(t, id, IfaceState::default());
                self.handles[i] = h;
                self.open[i] = false;
                self.last_index[i] = 0;
                self.names[i] = st.name.clone();
            } else {
                self.handles.push(h);
                self.open.push(false);
                self.last_index.push(0);
                self.names.push(st.name.clone());
            }
            let policy = engine::IfacePolicy {
                role: st.role,
                priority: st.priority,
            };
            self.engine.set_iface_policy(t, id, policy);
            let cap = self.setup.budget.limits_for(st.role).and_then(|l| l.rate);
            self.engine.set_rate_cap(id, cap);
            self.dgram.send(vec![DgramCmd::AddIface {
                iface: id,
                name: st.name.clone(),
            }]);
            tracing::info!(iface = %st.name, id, role = %st.role, rate_cap = ?cap, "interface added");
        }
    }

    fn snapshot(&self) -> Snapshot {
        use std::sync::atomic::Ordering::Relaxed;
        Snapshot {
            counters: {
                let mut c = self.engine.counters().named();
                // How the interfaces sent super-segments: whole (the kernel cut them) or cut here.
                let (mut whole, mut cut) = (0, 0);
                for h in &self.handles {
                    whole += h.stats().tx_super.load(std::sync::atomic::Ordering::Relaxed);
                    cut += h.stats().tx_super_cut.load(std::sync::atomic::Ordering::Relaxed);
                }
                c.push(("tx_super_segments".to_string(), whole));
                c.push(("tx_super_segments_cut".to_string(), cut));
                c
            },
            flows: self.engine.flows(),
            failovers: self.engine.failovers(),
            converters: self.engine.converters(now()),
            now_us: crate::sys::clock::boottime().as_micros(),
            rx_sizes: self
                .handles
                .iter()
                .map(|h| {
                    let st = h.stats();
                    RxSizes {
                        mtu: u32::try_from(st.mtu.load(Relaxed)).unwrap_or(0),
                        above_mtu: st.rx_above_mtu.load(Relaxed),
                        largest: st.rx_largest.load(Relaxed),
                    }
                })
                .collect(),
            ifaces: (0..self.handles.len() as u8)
                .filter_map(|i| self.engine.iface_state(i))
                .collect(),
        }
    }

    /// Sends the engine's output; returns whether the cap was hit (more is waiting).
    fn flush(&mut self, t: Instant) -> bool {
        let pool = &self.setup.pool;
        let mut to_tun: Batch = Vec::new();
        let mut to_if: Vec<Batch> = self.handles.iter().map(|_| Vec::new()).collect();
        let mut n = 0;
        while n < MAX_OUT_PER_WAKE {
            let Some(tx) = self.engine.poll_transmit(t, &mut self.out) else {
                break;
            };
            n += 1;
            let mut p = if tx.len <= super::pool::SMALL {
                pool.copy_from(&self.out[..tx.len])
            } else {
                let mut p = std::mem::replace(&mut self.out, pool.get_whole());
                p.truncate(tx.len);
                p
            };
            p.meta.seg_payload = u16::try_from(tx.seg_payload).unwrap_or(0);
            p.meta.csum_partial = tx.csum_partial;
            match tx.dest {
                Dest::Tun => {
                    to_tun.push(p);
                    if to_tun.len() >= super::tun::MAX_BATCH {
                        self.setup.to_tun.send(std::mem::take(&mut to_tun));
                    }
                }
                Dest::Iface(i) => {
                    let i = usize::from(i);
                    if let Some(b) = to_if.get_mut(i) {
                        b.push(p);
                        if b.len() >= iface::MAX_BATCH {
                            self.handles[i].send(std::mem::take(b));
                        }
                    }
                }
            }
        }
        if !to_tun.is_empty() {
            self.setup.to_tun.send(to_tun);
        }
        for (i, b) in to_if.into_iter().enumerate() {
            if !b.is_empty() {
                self.handles[i].send(b);
            }
        }
        let mut cmds = Vec::new();
        while let Some(a) = self.engine.poll_datagram(&mut self.scratch) {
            cmds.push(match a {
                DatagramAction::Send {
                    session,
                    kind,
                    iface,
                    dst,
                    len,
                    redundant,
                } => DgramCmd::Send {
                    session,
                    kind,
                    iface,
                    dst,
                    payload: pool.copy_from(&self.scratch[..len]),
                    redundant,
                },
                DatagramAction::Move {
                    session, iface, dst, ..
                } => DgramCmd::Move { session, iface, dst },
                DatagramAction::Close { session } => DgramCmd::Close { session },
            });
            if cmds.len() >= 256 {
                self.dgram.send(std::mem::take(&mut cmds));
            }
        }
        if !cmds.is_empty() {
            self.dgram.send(cmds);
        }
        n >= MAX_OUT_PER_WAKE
    }
}

//! One I/O thread per physical interface (STYLE.md point 7): it owns the interface's AF_PACKET
//! receive ring and raw transmit sockets, and nothing else. Received subflow segments go to the
//! engine as batches over a bounded crossbeam channel; the engine hands batches to send through
//! [`IfaceHandle::send`], which wakes the thread with a `mio::Waker`.
//!
//! A small batch to send (a request, a pure ACK, a SYN) is sent by the engine thread itself when
//! nothing is queued for the interface thread: that saves a thread wake-up on the latency path.
//! Larger batches (bulk transfers) go to the interface thread.
//!
//! The engine thread also reads the receive ring itself while it spins for input after a wake-up
//! ([`IfaceHandle::try_receive`]): the answer to a request then reaches it without this thread's
//! wake-up and the hand-off over the channel (tens of microseconds each on a busy machine), and
//! straight from the ring, without a copy. The ring sits behind a lock that each side only
//! tries; this thread hands what it drained to the engine's channel before it lets the lock go,
//! and the engine reads the ring only while that channel is empty, so segments reach the engine
//! in the order they arrived.
//!
//! Super-segments (TCP packets of up to 64 KB that the engine marks with their segment size,
//! `PacketMeta::seg_payload`) go out whole on an AF_PACKET socket with a `virtio_net_hdr`
//! ([`PacketTx`]): the kernel cuts them (or the NIC, with TSO) and completes the checksums. That
//! socket skips IP routing, so the frame goes to the link-layer address that packets from the
//! same remote address last came from (the next hop); until one is known, or on an interface
//! where the socket cannot be opened, or when the kernel refuses the packet, the thread cuts the
//! super-segment itself (`wire::gso`) and sends the segments on the raw IP sockets.
//!
//! The thread survives its interface disappearing (a USB tether unplugged): sockets are closed
//! and reopened, every [`REOPEN_INTERVAL`] or at once on [`IfaceHandle::reopen`], until the
//! interface is back.

use std::collections::VecDeque;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::pool::{Batch, PacketMeta, Pool};
use crate::sys::packet::{PacketRx, PacketTx};
use crate::sys::rawtx::{RawTx, TxError};

/// Received packets handed to the engine per wake-up at most, before the thread looks at its
/// commands again (the cap on work per wake-up, as boringtun's `MAX_ITR`).
pub const MAX_FRAMES_PER_WAKE: u32 = 1024;
/// Packets per batch sent to the engine.
pub const MAX_BATCH: usize = 64;
/// Batches of at most this many packets are sent by the engine thread itself when the interface
/// thread has nothing queued (see the module documentation).
pub const DIRECT_MAX: usize = 4;
/// How often a closed interface is tried again.
pub const REOPEN_INTERVAL: Duration = Duration::from_millis(500);
/// How long a received batch waits for room in the engine's channel before it is dropped.
const ENGINE_BUSY_WAIT: Duration = Duration::from_millis(5);
/// Packets waiting for a full socket buffer to drain before new ones are dropped.
const MAX_PENDING_TX: usize = 4096;
/// Remote addresses whose next-hop link-layer address is remembered (all forgotten beyond).
const MAX_NEXT_HOPS: usize = 1024;

const RX: Token = Token(0);
const WAKE: Token = Token(1);

/// Which interface (index into the daemon's interface list).
pub type IfaceId = u8;

/// How to run one interface thread.
#[derive(Debug, Clone)]
pub struct IfaceConfig {
    /// Small stable id used in messages.
    pub id: IfaceId,
    /// Interface name.
    pub name: String,
    /// The subflow port range the receive filter admits.
    pub ports: RangeInclusive<u16>,
    /// fwmark carried by every packet sent.
    pub fwmark: u32,
    /// Ring size in 1 MiB blocks (512 frames each).
    pub ring_blocks: u32,
    /// Network namespace to enter first (lab and tests); `None` in production.
    pub netns: Option<String>,
}

/// What an interface thread tells the engine.
#[derive(Debug)]
pub enum IfaceEvent {
    /// Segments received on the interface.
    Received {
        /// From which interface.
        iface: IfaceId,
        /// The packets (IP, from the network header).
        packets: Batch,
    },
    /// The sockets are open: the interface can carry subflows.
    Opened {
        /// Which interface.
        iface: IfaceId,
    },
    /// The sockets were closed (interface gone or failing); they are retried.
    Closed {
        /// Which interface.
        iface: IfaceId,
        /// Why, one line.
        reason: String,
    },
}

/// Counters of one interface, readable from any thread without locks.
#[derive(Debug, Default)]
pub struct IfaceStats {
    /// Packets handed to the engine.
    pub rx_packets: AtomicU64,
    /// Bytes handed to the engine.
    pub rx_bytes: AtomicU64,
    /// Packets the kernel accepted for sending.
    pub tx_packets: AtomicU64,
    /// Bytes the kernel accepted for sending.
    pub tx_bytes: AtomicU64,
    /// Received packets dropped because the engine's channel was full.
    pub rx_dropped_busy: AtomicU64,
    /// Received packets dropped because they were truncated.
    pub rx_dropped_truncated: AtomicU64,
    /// Packets dropped on send (no route, too big, buffer full for too long, interface gone).
    pub tx_dropped: AtomicU64,
    /// Super-segments handed to the kernel whole (it cuts them).
    pub tx_super: AtomicU64,
    /// Super-segments cut by this thread (no next-hop address yet, no vnet socket, refused).
    pub tx_super_cut: AtomicU64,
    /// Packets received larger than the interface's MTU: GRO super-segments the kernel merged
    /// and the ring handed over whole (or jumbo frames).
    pub rx_above_mtu: AtomicU64,
    /// The largest packet received (IP header included), bytes.
    pub rx_largest: AtomicU64,
    /// The interface's MTU when its sockets were last opened (0: unknown).
    pub mtu: AtomicU64,
    /// Whether the sockets are open now.
    pub open: AtomicBool,
}

impl IfaceStats {
    /// Counts one received packet of `len` bytes on a link of `mtu` (0: unknown, nothing is
    /// above it).
    fn received_size(&self, len: usize, mtu: u32) {
        let len = len as u64;
        if mtu > 0 && len > u64::from(mtu) {
            self.rx_above_mtu.fetch_add(1, Ordering::Relaxed);
        }
        self.rx_largest.fetch_max(len, Ordering::Relaxed);
    }
}

enum Cmd {
    Send(Batch),
    Reopen,
    Shutdown,
}

/// What the engine thread and an interface thread share.
#[derive(Debug, Default)]
struct TxShared {
    /// The open transmit sockets (`None` while the interface is closed).
    tx: Mutex<Option<Arc<RawTx>>>,
    /// Packets handed to the thread and not yet sent or dropped: while any is, a direct send
    /// would overtake it.
    queued: AtomicUsize,
    /// The open receive ring (`None` while the interface is closed); whoever holds the lock
    /// reads it (see the module documentation).
    rx: Mutex<Option<PacketRx>>,
    /// Remote address → the link-layer source address of the packets last received from it
    /// (the next hop of super-segments sent whole), learnt by whoever reads the ring.
    next_hops: Mutex<std::collections::HashMap<std::net::IpAddr, [u8; 6]>>,
}

/// The engine's handle on an interface thread.
#[derive(Debug)]
pub struct IfaceHandle {
    cmd: Sender<Cmd>,
    waker: Arc<Waker>,
    stats: Arc<IfaceStats>,
    shared: Arc<TxShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IfaceHandle {
    /// Sends a small batch at once when nothing is queued for the thread (in order, since only
    /// the handle's owner queues); otherwise, and for what the socket did not take, queues it for
    /// the thread and wakes it. A full command queue drops the batch (counted): the senders'
    /// congestion control sees a loss, as on a congested link.
    pub fn send(&self, mut batch: Batch) {
        // Only this handle increases `queued`: a zero read stays zero until it queues something.
        if batch.len() <= DIRECT_MAX
            && self.shared.queued.load(Ordering::Acquire) == 0
            && batch.iter().all(|p| p.meta.seg_payload == 0)
        {
            let sent = self.send_direct(&batch);
            if sent == batch.len() {
                return;
            }
            batch.drain(..sent);
        }
        let n = batch.len();
        self.shared.queued.fetch_add(n, Ordering::AcqRel);
        match self.cmd.try_send(Cmd::Send(batch)) {
            Ok(()) => {
                let _ = self.waker.wake();
            }
            Err(_) => {
                self.shared.queued.fetch_sub(n, Ordering::AcqRel);
                self.stats.tx_dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Sends the packets of a small batch on the shared sockets; returns how many the kernel took
    /// (the rest, if any, goes through the thread, which deals with full buffers and errors).
    fn send_direct(&self, batch: &Batch) -> usize {
        let tx = match self.shared.tx.lock() {
            Ok(g) => g.clone(),
            Err(_) => None,
        };
        let Some(tx) = tx else { return 0 };
        let mut refs: [&[u8]; DIRECT_MAX] = [&[]; DIRECT_MAX];
        for (r, p) in refs.iter_mut().zip(batch.iter()) {
            *r = p.as_slice();
        }
        let n = batch.len().min(DIRECT_MAX);
        let sent = tx.send_batch(&refs[..n]).unwrap_or(0);
        let bytes: usize = refs[..sent].iter().map(|r| r.len()).sum();
        self.stats.tx_packets.fetch_add(sent as u64, Ordering::Relaxed);
        self.stats.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        sent
    }

    /// Reads up to `max` segments from the receive ring on the calling thread and gives each to
    /// `f` (the IP packet, borrowed from the ring, and whether its checksum is not computed
    /// yet), unless the interface thread is reading or the interface is closed. `pending` is
    /// asked once the ring is held: when it says segments this thread handed over earlier are
    /// still waiting for the caller, nothing is read (they come first). Returns how many
    /// segments `f` was given.
    pub fn try_receive(
        &self,
        max: u32,
        pending: impl FnOnce() -> bool,
        mut f: impl FnMut(&[u8], bool),
    ) -> u32 {
        let Ok(mut ring) = self.shared.rx.try_lock() else {
            return 0;
        };
        let Some(rx) = ring.as_mut() else { return 0 };
        // Nothing arrived (most looks of a spin): the next-hop table the interface thread
        // consults for each send is not locked for nothing.
        if !rx.has_frame() || pending() {
            return 0;
        }
        let Ok(mut hops) = self.shared.next_hops.lock() else {
            return 0;
        };
        let (mut n, mut bytes, mtu) = (0, 0, rx.mtu());
        rx.drain(max, |frame| {
            if accept(&frame, &mut hops, &self.stats, mtu) {
                n += 1;
                bytes += frame.data.len() as u64;
                f(frame.data, frame.csum_not_ready);
            }
        });
        self.stats.rx_packets.fetch_add(u64::from(n), Ordering::Relaxed);
        self.stats.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        n
    }

    /// Asks the thread to open its sockets now if they are closed (the interface came back).
    pub fn reopen(&self) {
        let _ = self.cmd.try_send(Cmd::Reopen);
        let _ = self.waker.wake();
    }

    /// The interface's counters.
    pub fn stats(&self) -> &Arc<IfaceStats> {
        &self.stats
    }
}

impl Drop for IfaceHandle {
    fn drop(&mut self) {
        // The command queue may be full: the shutdown flag in a blocking send would wait for the
        // thread, which is fine since it drains commands at every wake-up.
        let _ = self.cmd.send(Cmd::Shutdown);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the thread for `config`; received packets and state changes go to `events`.
pub fn spawn(config: IfaceConfig, pool: Pool, events: Sender<IfaceEvent>) -> io::Result<IfaceHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(256);
    let stats = Arc::new(IfaceStats::default());
    let thread_stats = stats.clone();
    let shared = Arc::new(TxShared::default());
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("mpbond-if-{}", config.name))
        .spawn(move || {
            let span = tracing::info_span!("iface", iface = %config.name);
            let _enter = span.enter();
            if let Some(ns) = &config.netns
                && let Err(e) = crate::sys::netns::enter(ns)
            {
                tracing::error!("cannot enter network namespace {ns}: {e}");
                return;
            }
            let mut t = Thread {
                config,
                pool,
                poll,
                events,
                cmd: cmd_rx,
                stats: thread_stats,
                shared: thread_shared,
                socks: None,
                pending: VecDeque::new(),
                gone_at: None,
                cut: vec![0; crate::wire::gso::MAX_PACKET],
            };
            t.run();
        })?;
    Ok(IfaceHandle {
        cmd: cmd_tx,
        waker,
        stats,
        shared,
        thread: Some(thread),
    })
}

struct Sockets {
    /// The receive ring's descriptor, registered with the poll (the ring is in [`TxShared::rx`]).
    rx_fd: std::os::fd::RawFd,
    tx: Arc<RawTx>,
    /// Super-segments go out whole here; `None` where it cannot be opened.
    vnet: Option<PacketTx>,
}

struct Thread {
    config: IfaceConfig,
    pool: Pool,
    poll: Poll,
    events: Sender<IfaceEvent>,
    cmd: Receiver<Cmd>,
    stats: Arc<IfaceStats>,
    shared: Arc<TxShared>,
    socks: Option<Sockets>,
    /// Packets the socket buffer had no room for yet.
    pending: VecDeque<super::pool::PacketBuf>,
    /// When the interface last went away under an open socket: a link that is down accepts
    /// the socket and fails it at once, so reopening waits [`REOPEN_INTERVAL`] after that
    /// (instead of cycling open/close at every netlink event).
    gone_at: Option<crate::time::Instant>,
    /// Where a super-segment is cut in software.
    cut: Vec<u8>,
}

impl Thread {
    fn run(&mut self) {
        self.open();
        let mut events = Events::with_capacity(16);
        let mut more_rx = false;
        loop {
            let timeout = if more_rx {
                Some(Duration::ZERO)
            } else if self.socks.is_none() {
                Some(REOPEN_INTERVAL)
            } else if !self.pending.is_empty() {
                // The raw socket buffer was full: try again soon.
                Some(Duration::from_millis(1))
            } else {
                None
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("poll failed: {e}");
                return;
            }
            if events.iter().any(|e| e.token() == RX && e.is_error()) {
                // The interface went away under the socket (ENETDOWN on unregister).
                self.close("socket error: interface gone");
                self.gone_at = Some(crate::sys::clock::boottime());
            }
            if self.socks.is_none() && self.may_reopen() {
                self.open();
            }
            // Commands first: they may ask to stop.
            while let Ok(cmd) = self.cmd.try_recv() {
                match cmd {
                    Cmd::Send(batch) => self.queue(batch),
                    // Open sockets stay as they are: a vanished interface errors them (and closes them)
                    // on its own.
                    Cmd::Reopen if self.socks.is_none() && self.may_reopen() => self.open(),
                    Cmd::Reopen => {}
                    Cmd::Shutdown => {
                        self.close("shutdown");
                        return;
                    }
                }
            }
            self.flush();
            more_rx = self.receive();
        }
    }

    fn may_reopen(&self) -> bool {
        self.gone_at
            .is_none_or(|t| crate::sys::clock::boottime() >= t + REOPEN_INTERVAL)
    }

    fn open(&mut self) {
        let c = &self.config;
        let res = PacketRx::open(&c.name, &c.ports, false, c.ring_blocks)
            .map_err(|e| e.to_string())
            .and_then(|rx| {
                RawTx::open(&c.name, c.fwmark)
                    .map(|tx| {
                        let vnet = PacketTx::open(&c.name)
                            .inspect_err(|e| {
                                tracing::info!("super-segments are cut in software: {e}");
                            })
                            .ok();
                        let s = Sockets {
                            rx_fd: rx.as_raw_fd(),
                            tx: Arc::new(tx),
                            vnet,
                        };
                        (rx, s)
                    })
                    .map_err(|e| e.to_string())
            });
        match res {
            Ok((rx, s)) => {
                if let Err(e) = self
                    .poll
                    .registry()
                    .register(&mut SourceFd(&s.rx_fd), RX, Interest::READABLE)
                {
                    tracing::warn!("cannot register the ring: {e}");
                    return;
                }
                tracing::info!("interface open");
                if let Ok(mut g) = self.shared.tx.lock() {
                    *g = Some(s.tx.clone());
                }
                self.stats.mtu.store(u64::from(rx.mtu()), Ordering::Relaxed);
                if let Ok(mut g) = self.shared.rx.lock() {
                    *g = Some(rx);
                }
                self.socks = Some(s);
                self.stats.open.store(true, Ordering::Relaxed);
                let _ = self.events.send(IfaceEvent::Opened {
                    iface: self.config.id,
                });
            }
            Err(e) => tracing::debug!("interface not available: {e}"),
        }
    }

    fn close(&mut self, reason: &str) {
        if let Some(s) = self.socks.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&s.rx_fd));
            if let Ok(mut g) = self.shared.tx.lock() {
                *g = None;
            }
            if let Ok(mut g) = self.shared.rx.lock() {
                *g = None;
            }
            tracing::info!("interface closed: {reason}");
            self.stats.open.store(false, Ordering::Relaxed);
            self.stats
                .tx_dropped
                .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
            self.done(self.pending.len());
            self.pending.clear();
            let _ = self.events.send(IfaceEvent::Closed {
                iface: self.config.id,
                reason: reason.to_owned(),
            });
        }
    }

    /// `n` queued packets were sent or dropped.
    fn done(&self, n: usize) {
        self.shared.queued.fetch_sub(n, Ordering::AcqRel);
    }

    fn queue(&mut self, batch: Batch) {
        if self.socks.is_none() {
            self.stats
                .tx_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.done(batch.len());
            return;
        }
        for p in batch {
            if self.pending.len() >= MAX_PENDING_TX {
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                self.done(1);
            } else {
                self.pending.push_back(p);
            }
        }
    }

    /// Sends what is pending, in `sendmmsg` batches, until done or the socket buffer is full.
    fn flush(&mut self) {
        let mut fatal = None;
        while let Some(front) = self.pending.front() {
            if front.meta.seg_payload > 0 {
                match self.send_super() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        fatal = Some(e);
                        break;
                    }
                }
            }
            let Some(s) = &self.socks else { return };
            let n = self
                .pending
                .iter()
                .take(crate::sys::rawtx::MAX_BATCH)
                .take_while(|p| p.meta.seg_payload == 0)
                .count();
            let refs: Vec<&[u8]> = self.pending.iter().take(n).map(|p| p.as_slice()).collect();
            let bytes: Vec<usize> = refs.iter().map(|r| r.len()).collect();
            match s.tx.send_batch(&refs) {
                Ok(0) => break,
                Ok(sent) => {
                    self.stats.tx_packets.fetch_add(sent as u64, Ordering::Relaxed);
                    self.stats
                        .tx_bytes
                        .fetch_add(bytes[..sent].iter().sum::<usize>() as u64, Ordering::Relaxed);
                    self.pending.drain(..sent);
                    self.shared.queued.fetch_sub(sent, Ordering::AcqRel);
                }
                Err(TxError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(TxError::Io(e)) if is_gone(&e) => {
                    fatal = Some(e.to_string());
                    break;
                }
                Err(e) => {
                    // This packet cannot be sent (not IP, no route, too big): drop it, go on.
                    tracing::debug!("dropping a packet: {e}");
                    self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                    self.pending.pop_front();
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if let Some(reason) = fatal {
            self.close(&reason);
        }
    }

    /// Sends the super-segment at the front of the queue whole on the vnet socket, or cuts it
    /// into segments that take its place in the queue. Ok(false): the socket buffer is full
    /// (try again later); Err: the interface is gone.
    fn send_super(&mut self) -> Result<bool, String> {
        let Some(s) = &self.socks else { return Ok(false) };
        let Some(p) = self.pending.front_mut() else {
            return Ok(true);
        };
        let seg = usize::from(p.meta.seg_payload);
        let dst = crate::sys::rawtx::destination(p);
        let mac = dst.and_then(|d| {
            let hops = self.shared.next_hops.lock().ok()?;
            hops.get(&d).copied()
        });
        if let Some(vnet) = &s.vnet
            && (mac.is_some() || !vnet.needs_mac())
        {
            if let Ok(l) = crate::wire::gso::set_partial_checksum(p) {
                match vnet.send_tcp(p, l.ip_len, l.header_len(), seg, mac) {
                    Ok(()) => {
                        let len = p.len() as u64;
                        self.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
                        self.stats.tx_bytes.fetch_add(len, Ordering::Relaxed);
                        self.stats.tx_super.fetch_add(1, Ordering::Relaxed);
                        self.pending.pop_front();
                        self.done(1);
                        return Ok(true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if is_gone(&e) => return Err(e.to_string()),
                    // Refused (EINVAL, EMSGSIZE…): cut it here instead.
                    Err(e) => tracing::debug!("vnet send refused, cutting in software: {e}"),
                }
            }
        }
        let Some(p) = self.pending.pop_front() else {
            return Ok(true);
        };
        let mut parts = Vec::new();
        let pool = &self.pool;
        match crate::wire::gso::segment(&p, seg, &mut self.cut, |s| parts.push(pool.copy_from(s))) {
            Ok(n) => {
                self.stats.tx_super_cut.fetch_add(1, Ordering::Relaxed);
                // The parts replace the super-segment in the queue (and in the count of queued).
                self.shared.queued.fetch_add(n - 1, Ordering::AcqRel);
                for part in parts.into_iter().rev() {
                    self.pending.push_front(part);
                }
            }
            Err(e) => {
                tracing::debug!("dropping a super-segment: {e}");
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                self.done(1);
            }
        }
        Ok(true)
    }

    /// Drains up to [`MAX_FRAMES_PER_WAKE`] ring frames into batches for the engine. A batch goes
    /// out when it is full and when the ring is empty: nothing waits for more packets to come, so
    /// a lone segment is handed over at once. Returns whether to look again without sleeping:
    /// the cap was hit (more may be waiting, and readiness is edge-triggered), or the engine
    /// thread holds the ring (segments that came after its last look would wait otherwise).
    fn receive(&mut self) -> bool {
        if self.socks.is_none() {
            return false;
        }
        let mut ring = match self.shared.rx.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => {
                std::thread::yield_now();
                return true;
            }
            Err(TryLockError::Poisoned(_)) => return false,
        };
        let Some(rx) = ring.as_mut() else { return false };
        let Ok(mut hops) = self.shared.next_hops.lock() else {
            return false;
        };
        let iface = self.config.id;
        let mut batch: Batch = Vec::with_capacity(MAX_BATCH);
        let (pool, stats, events) = (&self.pool, &self.stats, &self.events);
        let mtu = rx.mtu();
        let flush = |batch: &mut Batch| {
            if batch.is_empty() {
                return;
            }
            let n = batch.len() as u64;
            let bytes: u64 = batch.iter().map(|p| p.len() as u64).sum();
            let packets = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
            // A busy engine gets a moment before the batch is dropped (the ring keeps filling
            // meanwhile: that is the backpressure); a gone engine gets none.
            let sent = match events.try_send(IfaceEvent::Received { iface, packets }) {
                Ok(()) => true,
                Err(TrySendError::Full(ev)) => events.send_timeout(ev, ENGINE_BUSY_WAIT).is_ok(),
                Err(TrySendError::Disconnected(_)) => false,
            };
            if sent {
                stats.rx_packets.fetch_add(n, Ordering::Relaxed);
                stats.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
            } else {
                stats.rx_dropped_busy.fetch_add(n, Ordering::Relaxed);
            }
        };
        let frames = rx.drain(MAX_FRAMES_PER_WAKE, |frame| {
            if !accept(&frame, &mut hops, stats, mtu) {
                return;
            }
            let mut p = pool.copy_from(frame.data);
            p.meta = PacketMeta {
                csum_not_ready: frame.csum_not_ready,
                csum_valid: frame.csum_valid,
                ..PacketMeta::default()
            };
            batch.push(p);
            if batch.len() >= MAX_BATCH {
                flush(&mut batch);
            }
        });
        // Inside the lock: the engine reads the ring only after these reached its channel.
        flush(&mut batch);
        frames >= MAX_FRAMES_PER_WAKE
    }
}

/// Whether a received frame goes to the engine (a truncated one is counted and dropped); counts
/// its size against the link's `mtu` (GRO-merged frames are larger) and learns the next hop of
/// its source address.
fn accept(
    frame: &crate::sys::packet::RxFrame<'_>,
    next_hops: &mut std::collections::HashMap<std::net::IpAddr, [u8; 6]>,
    stats: &IfaceStats,
    mtu: u32,
) -> bool {
    if frame.truncated {
        stats.rx_dropped_truncated.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    stats.received_size(frame.data.len(), mtu);
    if let (Some(mac), Some(src)) = (frame.src_mac, source(frame.data))
        && next_hops.get(&src) != Some(&mac)
    {
        if next_hops.len() >= MAX_NEXT_HOPS {
            next_hops.clear();
        }
        next_hops.insert(src, mac);
    }
    true
}

/// The source address of an IP packet, if it has a whole header.
fn source(packet: &[u8]) -> Option<std::net::IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(b.into())
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(b.into())
        }
        _ => None,
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV | libc::ENXIO | libc::ENETDOWN)
    )
}

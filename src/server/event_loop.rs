//! The converter's one event loop (STYLE.md point 7): a mio `Poll`, edge-triggered, every socket
//! drained until `WouldBlock`, the work per wake-up bounded (accepts per listener, bytes per
//! direction; what is left over is resumed on the next turn without waiting for an event).
//!
//! A connection goes through these phases:
//!
//! ```text
//! accept ─► Request ──Connect, policy and limits pass──► Dialing ──SYN/ACK──► Relay ─► closed
//!              │                                          │
//!              └──Refused / policy / limit──► Refusing ◄──┘ RST, ICMP, timeout
//!                                              (Error TLV written, FIN, drain, close)
//! ```
//!
//! The protocol decisions (is this a valid, authenticated Connect; what the replies say) are
//! `convert::converter`'s; this file only moves bytes and applies policy and limits.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

use super::config::ServerConfig;
use super::dial;
use super::limits::Limits;
use super::policy::EgressPolicy;
use super::relay::{Half, PipePool};
use super::status::{ServerStatus, Stats};
use crate::convert::converter::{self, Converter, RefusalCause};
use crate::convert::key::{ClientKey, KeyId};
use crate::convert::msg::ErrorCode;
use crate::io::WAKE;
use crate::sys::clock::boottime;
use crate::sys::sock;
use crate::time::Instant;
use std::os::fd::AsFd as _;

mod phases;

/// Token of listener `i` is `LISTENER_BASE + i`.
const LISTENER_BASE: usize = 1;
/// At most this many listeners.
pub const MAX_LISTENERS: usize = 64;
/// Connection slot `s` has tokens `CONN_BASE + 2s` (client side) and `+ 1` (destination side).
const CONN_BASE: usize = LISTENER_BASE + MAX_LISTENERS;
/// Accepts per listener per turn.
const ACCEPT_BUDGET: usize = 256;
/// Bytes per direction per turn.
const RELAY_BUDGET: usize = 512 * 1024;
/// Early data (after the Convert message) read before the dial, at most.
const EARLY_MAX: usize = 64 * 1024;
/// How long a refused connection may take to read its Error TLV and close.
const REFUSE_LINGER: Duration = Duration::from_secs(2);
/// Request timeout once more than half the request slots are taken (floods).
const BUSY_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Timer resolution.
const TICK: Duration = Duration::from_millis(100);
/// How often the status snapshot is published.
const PUBLISH: Duration = Duration::from_millis(200);
/// How often the converter's own addresses are read again.
const OWN_REFRESH: Duration = Duration::from_secs(30);
/// Idle pipes kept for reuse.
const POOL_FREE: usize = 512;

/// Messages to the loop.
#[derive(Debug)]
pub enum Control {
    /// A new keyring (SIGHUP), already in the shared [`Converter`]: the ids of the keys now
    /// valid. The connections of revoked keys are closed.
    Keys(Vec<KeyId>),
}

enum Phase {
    Request {
        buf: Vec<u8>,
        since: Instant,
    },
    Dialing {
        key: KeyId,
        dst: SocketAddr,
        down: TcpStream,
        early: Vec<u8>,
        deadline: Instant,
    },
    Relay {
        key: KeyId,
        down: TcpStream,
        up_half: Half,
        down_half: Half,
        reply_len: u64,
        counted_up: u64,
        counted_down: u64,
        active: Instant,
        /// Counted in `replies_held` already: the Convert reply waited for the client's
        /// MPTCP handshake ([`Conn::up_ready`]).
        held: bool,
    },
    Refusing {
        reply: Vec<u8>,
        off: usize,
        shut: bool,
        deadline: Instant,
    },
}

struct Conn {
    id: u64,
    up: TcpStream,
    peer: SocketAddr,
    phase: Phase,
    /// The client's MPTCP connection is established (its third ACK came): bytes written to it
    /// now leave ([`sock::mptcp_established`]).
    up_ready: bool,
}

impl Conn {
    /// Whether the client side may be written to. Until the MP_CAPABLE third ACK arrives,
    /// Linux would strand what is written to a Fast Open MPTCP socket; the ACK's arrival wakes
    /// the socket (readable and writable), which drives the connection again.
    fn up_ready(&mut self) -> bool {
        if !self.up_ready {
            self.up_ready = sock::mptcp_established(self.up.as_fd());
        }
        self.up_ready
    }
}

/// How a connection ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Normal close.
    Close,
    /// Close with an RST (`SO_LINGER` 0) on both sides.
    Reset,
    /// RST on the client side only (the destination reset or vanished).
    ResetUp,
    /// RST on the destination side only (the client reset).
    ResetDown,
}

/// At most `per_sec` log lines a second for one kind of event.
struct RateLimit {
    window: Instant,
    n: u32,
    per_sec: u32,
}

impl RateLimit {
    fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.n = 0;
        }
        self.n += 1;
        self.n <= self.per_sec
    }
}

/// The loop's state; runs on its own thread ([`EventLoop::run`]).
pub struct EventLoop {
    registry: Registry,
    listeners: Vec<(TcpListener, SocketAddr, bool)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    again: Vec<usize>,
    /// Shared by every event loop: one replay cache and one keyring.
    converter: Arc<Mutex<Converter>>,
    key_ids: Vec<KeyId>,
    policy: EgressPolicy,
    /// Shared by every event loop: the limits hold for the whole converter.
    limits: Arc<Mutex<Limits<KeyId>>>,
    cfg: ServerConfig,
    pool: PipePool,
    stats: Stats,
    rx: Receiver<Control>,
    shared: Arc<Mutex<ServerStatus>>,
    started: Instant,
    next_id: u64,
    publish_every: super::Every,
    own_every: super::Every,
    accept_paused_until: Option<Instant>,
    log_limit: RateLimit,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "cookie timestamps are wall-clock time (RFC 8803 §6.2.7 cookie)"
)]
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Locks state shared between the event loops. A loop that panicked holding the lock left it
/// consistent (every update is one call), so a poisoned lock is taken as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the event loops share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The Convert protocol state: keys and the replay cache.
    pub converter: Arc<Mutex<Converter>>,
    /// The connection limits.
    pub limits: Arc<Mutex<Limits<KeyId>>>,
}

impl Shared {
    /// The shared state of a converter with `keys`.
    pub fn new(cfg: &ServerConfig, keys: Vec<ClientKey>) -> Shared {
        Shared {
            converter: Arc::new(Mutex::new(Converter::new(keys, cfg.converter.clone()))),
            limits: Arc::new(Mutex::new(Limits::new(cfg.limits))),
        }
    }
}

fn is_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}

fn linger0(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

impl EventLoop {
    /// Sets up the loop over already-bound listeners; `state` is shared with the other loops,
    /// `shared` is this loop's published status.
    pub fn new(
        poll: &Poll,
        listeners: Vec<(std::net::TcpListener, bool)>,
        cfg: ServerConfig,
        state: &Shared,
        rx: Receiver<Control>,
        shared: Arc<Mutex<ServerStatus>>,
    ) -> io::Result<EventLoop> {
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::other(format!(
                "at most {MAX_LISTENERS} listen addresses"
            )));
        }
        let mut ls = Vec::new();
        for (i, (l, no_cookie)) in listeners.into_iter().enumerate() {
            let addr = l.local_addr()?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            ls.push((l, addr, no_cookie));
        }
        let now = boottime();
        let mut policy = cfg.policy.clone();
        policy.own = super::own_addresses(&ls.iter().map(|l| l.1).collect::<Vec<_>>());
        Ok(EventLoop {
            registry: poll.registry().try_clone()?,
            listeners: ls,
            conns: Vec::new(),
            free: Vec::new(),
            again: Vec::new(),
            key_ids: lock(&state.converter).key_ids(),
            converter: state.converter.clone(),
            policy,
            limits: state.limits.clone(),
            cfg,
            pool: PipePool::new(POOL_FREE),
            stats: Stats::default(),
            rx,
            shared,
            started: now,
            next_id: 0,
            publish_every: super::Every::new(PUBLISH, now),
            own_every: super::Every::new(OWN_REFRESH, now + OWN_REFRESH),
            accept_paused_until: None,
            log_limit: RateLimit {
                window: now,
                n: 0,
                per_sec: 20,
            },
        })
    }

    /// Runs on `poll` (the one given to [`EventLoop::new`]) until `stop` is set (woken through [`WAKE`]).
    pub fn run(mut self, mut poll: Poll, stop: &AtomicBool) {
        let mut events = Events::with_capacity(1024);
        let mut pending_listeners = vec![false; self.listeners.len()];
        while !stop.load(Ordering::SeqCst) {
            let busy = !self.again.is_empty() || pending_listeners.iter().any(|p| *p);
            let timeout = if busy { Duration::ZERO } else { TICK };
            if let Err(e) = poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("server poll failed: {e}");
                return;
            }
            let now = boottime();
            for ev in &events {
                let t = ev.token().0;
                if t == WAKE.0 {
                    self.control(now);
                } else if (LISTENER_BASE..CONN_BASE).contains(&t) {
                    pending_listeners[t - LISTENER_BASE] = true;
                } else if t >= CONN_BASE {
                    let slot = (t - CONN_BASE) / 2;
                    let down_side = (t - CONN_BASE) % 2 == 1;
                    self.drive(slot, down_side, now);
                }
            }
            for (i, pending) in pending_listeners.iter_mut().enumerate() {
                if *pending && self.accept_paused_until.is_none_or(|t| now >= t) {
                    *pending = self.accept(i, now);
                }
            }
            for slot in std::mem::take(&mut self.again) {
                self.drive(slot, false, now);
            }
            self.sweep(now);
            if self.publish_every.due(now) {
                self.publish(now);
            }
            if self.own_every.due(now) {
                let addrs: Vec<SocketAddr> = self.listeners.iter().map(|l| l.1).collect();
                self.policy.own = super::own_addresses(&addrs);
            }
        }
    }

    fn control(&mut self, now: Instant) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Control::Keys(ids) => {
                    self.key_ids = ids;
                    let revoked: Vec<usize> = (0..self.conns.len())
                        .filter(|&s| match self.conns[s].as_ref().map(|c| &c.phase) {
                            Some(Phase::Dialing { key, .. } | Phase::Relay { key, .. }) => {
                                !self.key_ids.contains(key)
                            }
                            _ => false,
                        })
                        .collect();
                    if !revoked.is_empty() {
                        tracing::info!("closing {} connection(s) of revoked keys", revoked.len());
                    }
                    for s in revoked {
                        self.stats.add("revoked_closed", 1);
                        self.close(s, End::Reset, now);
                    }
                }
            }
        }
    }

    /// Accepts up to the budget; returns whether more may be waiting.
    fn accept(&mut self, i: usize, now: Instant) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let res = self.listeners[i].0.accept();
            match res {
                Ok((stream, peer)) => self.accepted(stream, peer, now),
                Err(e) if is_block(&e) => return false,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    self.stats.add("accept_out_of_resources", 1);
                    if self.log_limit.allow(now) {
                        tracing::warn!("accept: {e}; pausing accepts for 100 ms");
                    }
                    self.accept_paused_until = Some(now + TICK);
                    return true;
                }
                Err(e) => {
                    tracing::debug!("accept: {e}");
                }
            }
        }
        true
    }

    fn accepted(&mut self, mut up: TcpStream, peer: SocketAddr, now: Instant) {
        self.stats.add("accepted", 1);
        let admitted = lock(&self.limits).try_request();
        if let Err(hit) = admitted {
            // Too many unauthenticated connections: answer Resource Exceeded in one write and
            // close, holding no state (RFC 8803 §6.2.8 "MUST be sent ... when it does not have
            // sufficient resources to handle a new connection").
            *self.stats.limit_hits.entry(hit.name()).or_default() += 1;
            self.stats.refused(RefusalCause::Limit, None);
            let _ = (&up).write(&converter::error_reply(ErrorCode::ResourceExceeded, &[]));
            linger0(&up);
            return;
        }
        // No Nagle on a relay: both ends already chose how to segment. With it, the destination's
        // first bytes waited behind the unacknowledged Convert reply for the laptop's next ACK
        // (P8 time to first byte 62.8 ms against 42.0 ms without).
        let _ = up.set_nodelay(true);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let tok = Token(CONN_BASE + 2 * slot);
        if let Err(e) = self
            .registry
            .register(&mut up, tok, Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!("register: {e}");
            lock(&self.limits).end_request();
            self.free.push(slot);
            return;
        }
        self.next_id += 1;
        self.conns[slot] = Some(Conn {
            id: self.next_id,
            up,
            peer,
            phase: Phase::Request {
                buf: Vec::new(),
                since: now,
            },
            up_ready: false,
        });
        // With TCP Fast Open the request is already in the receive queue.
        self.read_request(slot, now);
    }

    fn drive(&mut self, slot: usize, down_side: bool, now: Instant) {
        let Some(c) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        match c.phase {
            Phase::Request { .. } => self.read_request(slot, now),
            Phase::Dialing { .. } => {
                if down_side {
                    self.check_dial(slot, now);
                }
            }
            Phase::Relay { .. } => self.pump(slot, now),
            Phase::Refusing { .. } => self.refusing(slot, now),
        }
    }

    fn sweep(&mut self, now: Instant) {
        let busy = lock(&self.limits).requesting() * 2 > self.cfg.limits.max_requesting;
        let req_timeout = if busy {
            self.cfg.request_timeout.min(BUSY_REQUEST_TIMEOUT)
        } else {
            self.cfg.request_timeout
        };
        enum Due {
            Silent,
            Truncated,
            Dial,
            Idle,
            Linger,
            Repump,
            Handshake,
        }
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_ref() else {
                continue;
            };
            let due = match &c.phase {
                Phase::Request { buf, since } if now.saturating_duration_since(*since) >= req_timeout => {
                    if buf.is_empty() {
                        Due::Silent
                    } else {
                        Due::Truncated
                    }
                }
                Phase::Dialing { deadline, .. } if now >= *deadline => Due::Dial,
                // A client that never completed its MPTCP handshake holds a dialed destination.
                Phase::Relay {
                    held: true, active, ..
                } if !c.up_ready && now.saturating_duration_since(*active) >= req_timeout => Due::Handshake,
                Phase::Relay { active, .. }
                    if now.saturating_duration_since(*active) >= self.cfg.idle_timeout =>
                {
                    Due::Idle
                }
                Phase::Refusing { deadline, .. } if now >= *deadline => Due::Linger,
                // Bytes waiting for a writable edge that has not come for a tick: pump again
                // (a safety net; counted, so that lost wake-ups show in the status).
                Phase::Relay {
                    up_half,
                    down_half,
                    active,
                    ..
                } if (up_half.has_pending() || down_half.has_pending())
                    && now.saturating_duration_since(*active) >= TICK =>
                {
                    Due::Repump
                }
                _ => continue,
            };
            match due {
                Due::Silent => {
                    self.stats.add("request_timeouts", 1);
                    self.close(slot, End::Reset, now);
                }
                Due::Truncated => {
                    self.stats.add("request_timeouts", 1);
                    let reply = converter::error_reply(ErrorCode::MalformedMessage, &[]);
                    self.refuse(slot, RefusalCause::Malformed, None, reply, now);
                }
                Due::Dial => {
                    let f = dial::DialFailure {
                        cause: RefusalCause::DestTimeout,
                        icmp_code: None,
                        errno: libc::ETIMEDOUT,
                    };
                    self.dial_failure(slot, f, None, now);
                }
                Due::Idle => {
                    self.stats.add("idle_timeouts", 1);
                    self.close(slot, End::Reset, now);
                }
                Due::Linger => self.close(slot, End::Reset, now),
                Due::Handshake => {
                    self.stats.add("handshake_timeouts", 1);
                    self.close(slot, End::Reset, now);
                }
                Due::Repump => {
                    self.stats.add("repumps", 1);
                    self.pump(slot, now);
                }
            }
        }
    }

    fn publish(&mut self, now: Instant) {
        let mut s = self.stats.snapshot();
        s.pid = std::process::id();
        s.uptime_secs = now.saturating_duration_since(self.started).as_secs();
        s.listen = self.listeners.iter().map(|l| l.1).collect();
        s.keys_loaded = self.key_ids.len() as u64;
        s.workers = 1;
        for c in self.conns.iter().flatten() {
            match c.phase {
                Phase::Request { .. } => s.now.requesting += 1,
                Phase::Dialing { .. } => s.now.dialing += 1,
                Phase::Relay { .. } => s.now.relaying += 1,
                Phase::Refusing { .. } => s.now.refusing += 1,
            }
        }
        for (id, k) in &mut s.keys {
            if let Some(kid) = self.key_ids.iter().find(|k| k.to_string() == *id) {
                k.connections = lock(&self.limits).of_key(kid).1 as u64;
            }
        }
        s.counters.insert("pipes_created".into(), self.pool.created);
        s.counters.insert("pipes_in_use".into(), self.pool.in_use);
        s.counters.insert(
            "tfo_no_cookie_listeners".into(),
            self.listeners.iter().filter(|l| l.2).count() as u64,
        );
        if let Ok(mut g) = self.shared.lock() {
            *g = s;
        }
    }
}

//! The converter's datagram relay, thin I/O around `convert::relay` (STYLE.md point 16): one UDP
//! listener on each TCP listen address (same port), and per relayed laptop session one UDP
//! socket connected to its destination — the stable public address and port the destination
//! sees, whichever path the laptop's datagrams come over.
//!
//! One thread for all sessions (not one per event loop): a laptop that moved to another path
//! sends from another address and port, which `SO_REUSEPORT` would hash to another socket; here
//! every datagram finds its session. Work per wake-up is bounded per socket; a session's first
//! datagram passes the MAC and freshness checks (`RelayTable::handle_up`), then the egress
//! policy and the shared limits (a session counts as one connection of its key), before a
//! socket is opened or anything is sent. Garbage, forgeries and replays are counted and dropped
//! without an answer; memory is bounded by the limits (sessions), the tombstone cap and idle
//! expiry.
//!
//! ICMP echo sessions ([`Kind::EchoUp`](crate::convert::dgram::Kind)) get a ping socket each
//! (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, `IPPROTO_ICMPV6` for IPv6), connected to the
//! destination: no capability is needed (the server runs with none once it listens), the
//! kernel picks the echo identifier, fills the checksum and hands the socket only the echo
//! replies to its own identifier from that address — no process of the converter sees other
//! ICMP. The kernel allows them to the groups in `net.ipv4.ping_group_range` (IPv6 too); a
//! server whose group is not in it refuses echo sessions (`echo_no_ping_socket`, reason
//! failure) and the laptop pings direct. A raw socket would need `CAP_NET_RAW` kept (or a raw
//! descriptor opened before the capabilities are dropped) and receives every ICMP message of
//! the host: more privilege for the same service, so it is not used.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token};

use super::config::ServerConfig;
use super::event_loop::{Control, Shared, lock};
use super::limits::Limits;
use super::policy::EgressPolicy;
use super::status::{ServerStatus, Stats};
use crate::convert::converter::Converter;
use crate::convert::dgram::{MAX_OVERHEAD, RefuseReason};
use crate::convert::key::{ClientKey, KeyId};
use crate::convert::relay::{Opening, RelayConfig, RelayTable, SessionKey, Up};
use crate::io::WAKE;
use crate::sys::clock::boottime;
use crate::time::Instant;

/// Token of listener `i` is `LISTENER_BASE + i`.
const LISTENER_BASE: usize = 1;
/// Session sockets' tokens start here.
const SESSION_BASE: usize = LISTENER_BASE + super::event_loop::MAX_LISTENERS;
/// Datagrams read per socket per turn.
const BUDGET: usize = 512;
/// Timer resolution.
const TICK: Duration = Duration::from_millis(100);
/// How often idle sessions are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often the status snapshot is published.
const PUBLISH: Duration = Duration::from_millis(200);
/// How often the converter's own addresses are read again.
const OWN_REFRESH: Duration = Duration::from_secs(30);
/// Largest datagram read.
const MAX_DGRAM: usize = 65_536;
/// Receive buffer asked for each UDP listener (the kernel accounts twice this).
const LISTENER_RCVBUF: usize = 4 << 20;

#[expect(
    clippy::disallowed_methods,
    reason = "relay datagram timestamps are wall-clock time (freshness of a session's first datagram)"
)]
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct SessionSock {
    sock: UdpSocket,
    token: Token,
    /// The listener its laptop's newest datagram came to (answers leave from there).
    listener: usize,
}

/// The relay thread's state; runs on its own thread ([`UdpRelay::run`]).
pub struct UdpRelay {
    registry: Registry,
    listeners: Vec<(UdpSocket, SocketAddr)>,
    socks: HashMap<SessionKey, SessionSock>,
    by_token: HashMap<Token, SessionKey>,
    next_token: usize,
    table: RelayTable,
    converter: Arc<Mutex<Converter>>,
    limits: Arc<Mutex<Limits<KeyId>>>,
    policy: EgressPolicy,
    stats: Stats,
    rx: Receiver<Control>,
    shared: Arc<Mutex<ServerStatus>>,
    started: Instant,
    publish_every: super::Every,
    expire_every: super::Every,
    own_every: super::Every,
    out: Vec<u8>,
}

impl std::fmt::Debug for UdpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpRelay")
            .field("listeners", &self.listeners.len())
            .field("sessions", &self.table.len())
            .finish_non_exhaustive()
    }
}

/// Binds the UDP listeners beside the TCP ones (`addrs`: the TCP listeners' bound addresses).
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<std::net::UdpSocket>> {
    addrs
        .iter()
        .map(|a| {
            let s = socket2::Socket::new(socket2::Domain::for_address(*a), socket2::Type::DGRAM, None)?;
            if a.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_nonblocking(true)?;
            s.set_cloexec(true)?;
            // Room for the bursts of every laptop's relayed datagrams while the relay thread
            // is busy or descheduled (at 200 Mbit/s the default 208 KiB holds ~4 ms): a full
            // queue drops datagrams, ack requests among them. Set while the server may still
            // hold CAP_NET_ADMIN (before the capabilities are dropped).
            match crate::sys::sock::grow_rcvbuf(std::os::fd::AsFd::as_fd(&s), LISTENER_RCVBUF) {
                // As the kernel reports it: twice the request, for its bookkeeping.
                Ok(()) => {
                    tracing::debug!(%a, bytes = ?s.recv_buffer_size(), "UDP relay listener receive buffer")
                }
                Err(e) => tracing::warn!(%a, "UDP relay listener receive buffer left as it is: {e}"),
            }
            s.bind(&(*a).into())?;
            Ok(s.into())
        })
        .collect()
}

impl UdpRelay {
    /// Sets up the relay over bound listeners; `state` is shared with the event loops.
    pub fn new(
        poll: &Poll,
        listeners: Vec<std::net::UdpSocket>,
        cfg: &ServerConfig,
        state: &Shared,
        rx: Receiver<Control>,
        shared: Arc<Mutex<ServerStatus>>,
    ) -> io::Result<UdpRelay> {
        let mut ls = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let addr = l.local_addr()?;
            let mut l = UdpSocket::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            ls.push((l, addr));
        }
        let now = boottime();
        let mut policy = cfg.policy.clone();
        policy.own = super::own_addresses(&ls.iter().map(|l| l.1).collect::<Vec<_>>());
        Ok(UdpRelay {
            registry: poll.registry().try_clone()?,
            listeners: ls,
            socks: HashMap::new(),
            by_token: HashMap::new(),
            next_token: SESSION_BASE,
            table: RelayTable::new(RelayConfig {
                idle: cfg.udp_idle_timeout,
                max_clock_skew: cfg.converter.max_clock_skew,
                max_tombstones: cfg.converter.replay_capacity,
            }),
            converter: state.converter.clone(),
            limits: state.limits.clone(),
            policy,
            stats: Stats::default(),
            rx,
            shared,
            started: now,
            publish_every: super::Every::new(PUBLISH, now),
            expire_every: super::Every::new(EXPIRE_EVERY, now + EXPIRE_EVERY),
            own_every: super::Every::new(OWN_REFRESH, now + OWN_REFRESH),
            out: vec![0; MAX_DGRAM + MAX_OVERHEAD],
        })
    }

    /// Runs on `poll` until `stop` is set.
    pub fn run(mut self, mut poll: Poll, stop: &AtomicBool) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; MAX_DGRAM];
        // Sockets with datagrams left over after their budget.
        let mut again: Vec<Token> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let timeout = if again.is_empty() { TICK } else { Duration::ZERO };
            if let Err(e) = poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("UDP relay poll failed: {e}");
                return;
            }
            let now = boottime();
            let mut ready: Vec<Token> = std::mem::take(&mut again);
            for ev in &events {
                if ev.token() == WAKE {
                    self.control();
                } else if !ready.contains(&ev.token()) {
                    ready.push(ev.token());
                }
            }
            for t in ready {
                let more = if (LISTENER_BASE..SESSION_BASE).contains(&t.0) {
                    self.read_listener(t.0 - LISTENER_BASE, now, &mut buf)
                } else {
                    self.read_session(t, now, &mut buf)
                };
                if more {
                    again.push(t);
                }
            }
            if self.expire_every.due(now) {
                self.expire(now);
            }
            if self.publish_every.due(now) {
                self.publish(now);
            }
            if self.own_every.due(now) {
                let addrs: Vec<SocketAddr> = self.listeners.iter().map(|l| l.1).collect();
                self.policy.own = super::own_addresses(&addrs);
            }
        }
    }

    fn control(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Control::Keys(ids) => {
                    let gone = self.table.retain_keys(&ids);
                    if !gone.is_empty() {
                        tracing::info!("ending {} UDP session(s) of revoked keys", gone.len());
                    }
                    for (k, _) in gone {
                        self.stats.add("udp_revoked_closed", 1);
                        self.close(k);
                    }
                }
            }
        }
    }

    /// Reads datagrams from laptops on listener `i`; true if its budget ran out.
    fn read_listener(&mut self, i: usize, now: Instant, buf: &mut [u8]) -> bool {
        for _ in 0..BUDGET {
            let Some((l, _)) = self.listeners.get(i) else {
                return false;
            };
            match l.recv_from(buf) {
                Ok((n, from)) => self.laptop_datagram(i, from, &buf[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("UDP relay listener: {e}");
                    self.stats.add("udp_listener_errors", 1);
                }
            }
        }
        true
    }

    fn laptop_datagram(&mut self, i: usize, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.stats.add("udp_datagrams_in", 1);
        let unix = unix_secs();
        let mut key = None;
        let verdict = self.table.handle_up(now, unix, from, bytes, |id| {
            key = lock(&self.converter).key(id);
            key.clone()
        });
        let Some(key) = key else {
            // Unknown key or not even a relay datagram.
            return self.dropped(verdict.err().map_or("unknown_key", |e| e.name()));
        };
        match verdict {
            Err(e) => self.dropped(e.name()),
            Ok(Up::Relay {
                key: sk,
                payload,
                moved,
                ack,
            }) => {
                let Some(s) = self.socks.get_mut(&sk) else {
                    return self.dropped("no_socket");
                };
                if moved {
                    s.listener = i;
                    self.stats.add("udp_path_moves", 1);
                    tracing::debug!(key = %sk.0, session = sk.1.0, %from, "UDP session moved to a new laptop address");
                }
                match s.sock.send(payload) {
                    Ok(_) => {
                        self.stats.add("udp_datagrams_up", 1);
                        self.stats.add("udp_bytes_up", payload.len() as u64);
                        self.stats.key(sk.0).bytes_up += payload.len() as u64;
                    }
                    Err(_) => self.stats.add("udp_send_errors", 1),
                }
                if ack {
                    self.ack(&key, &sk, unix);
                }
            }
            Ok(Up::Copy {
                key: sk,
                new_path,
                ack,
            }) => {
                // A redundant session's second copy: counted apart from replays (attacks).
                self.stats.add("udp_redundant_copies", 1);
                if new_path {
                    self.stats.add("udp_redundant_paths", 1);
                    tracing::debug!(key = %sk.0, session = sk.1.0, %from, "redundant UDP session: extra return path");
                }
                if ack {
                    self.ack(&key, &sk, unix);
                }
            }
            Ok(Up::Open { opening, payload }) => self.open(i, &key, &opening, payload, now, unix),
        }
    }

    fn dropped(&mut self, why: &'static str) {
        *self.stats.counters.entry(drop_name(why)).or_default() += 1;
    }

    /// A verified first datagram: policy, limits, a socket, then the session.
    fn open(&mut self, i: usize, key: &ClientKey, o: &Opening, payload: &[u8], now: Instant, unix: u64) {
        // Echo has no port: the same addresses are refused, the port rules do not apply.
        let allowed = if o.echo {
            self.policy.check_addr(o.dst.ip())
        } else {
            self.policy.check(o.dst)
        };
        if let Err(d) = allowed {
            *self.stats.policy_denied.entry(d.name()).or_default() += 1;
            self.stats.add("udp_refused_policy", 1);
            return self.refuse(i, key, o, RefuseReason::Policy, unix);
        }
        let admitted = lock(&self.limits).try_dial(o.key.0);
        if let Err(hit) = admitted {
            *self.stats.limit_hits.entry(hit.name()).or_default() += 1;
            self.stats.add("udp_refused_limit", 1);
            return self.refuse(i, key, o, RefuseReason::Limit, unix);
        }
        lock(&self.limits).dial_done(o.key.0);
        let sock = match self.connect(o.dst, o.echo) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(dst = %o.dst, echo = o.echo, "UDP relay socket: {e}");
                lock(&self.limits).release(o.key.0);
                let what = match (o.echo, e.kind()) {
                    (true, io::ErrorKind::PermissionDenied) => "echo_no_ping_socket",
                    _ => "udp_socket_errors",
                };
                self.stats.add(what, 1);
                return self.refuse(i, key, o, RefuseReason::Failure, unix);
            }
        };
        self.table.insert(now, o, payload.len());
        self.stats.add("udp_sessions_opened", 1);
        if o.echo {
            self.stats.add("echo_sessions_opened", 1);
        }
        self.stats.key(o.key.0).connected_total += 1;
        tracing::debug!(key = %o.key.0, session = o.key.1.0, dst = %o.dst, from = %o.from, "UDP session opened");
        let sk = o.key;
        let (sock, token) = sock;
        match sock.send(payload) {
            Ok(_) => {
                self.stats.add("udp_datagrams_up", 1);
                self.stats.add("udp_bytes_up", payload.len() as u64);
                self.stats.key(sk.0).bytes_up += payload.len() as u64;
            }
            Err(_) => self.stats.add("udp_send_errors", 1),
        }
        self.by_token.insert(token, sk);
        self.socks.insert(
            sk,
            SessionSock {
                sock,
                token,
                listener: i,
            },
        );
        if o.ack {
            self.ack(key, &sk, unix);
        }
    }

    /// A socket connected to `dst`: UDP, or for `echo` a ping socket (see the module
    /// documentation) connected to its address.
    fn connect(&mut self, dst: SocketAddr, echo: bool) -> io::Result<(UdpSocket, Token)> {
        let any: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let proto = match (echo, dst.is_ipv4()) {
            (false, _) => None,
            (true, true) => Some(socket2::Protocol::ICMPV4),
            (true, false) => Some(socket2::Protocol::ICMPV6),
        };
        let s = socket2::Socket::new(socket2::Domain::for_address(dst), socket2::Type::DGRAM, proto)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        // A ping socket's port is its echo identifier: 0 lets the kernel pick a free one.
        s.bind(&any.into())?;
        s.connect(&dst.into())?;
        let mut sock = UdpSocket::from_std(s.into());
        let token = Token(self.next_token);
        self.next_token += 1;
        self.registry.register(&mut sock, token, Interest::READABLE)?;
        Ok((sock, token))
    }

    fn refuse(&mut self, i: usize, key: &ClientKey, o: &Opening, why: RefuseReason, unix: u64) {
        let Some(n) = RelayTable::seal_refused(unix, key, o, why, &mut self.out) else {
            return;
        };
        if let Some((l, _)) = self.listeners.get(i) {
            let _ = l.send_to(&self.out[..n], o.from);
        }
    }

    fn ack(&mut self, key: &ClientKey, sk: &SessionKey, unix: u64) {
        let Some((n, to)) = self.table.seal_ack(unix, key, sk, &mut self.out) else {
            return;
        };
        let i = self.socks.get(sk).map_or(0, |s| s.listener);
        if let Some((l, _)) = self.listeners.get(i)
            && l.send_to(&self.out[..n], to).is_ok()
        {
            self.stats.add("udp_acks", 1);
        }
    }

    /// Reads what a session's destination sent; true if its budget ran out.
    fn read_session(&mut self, t: Token, now: Instant, buf: &mut [u8]) -> bool {
        let Some(&sk) = self.by_token.get(&t) else {
            return false;
        };
        let Some(key) = lock(&self.converter).key(&sk.0) else {
            return false;
        };
        let unix = unix_secs();
        let Some((dst, echo)) = self.table.get(&sk).map(|s| (s.dst, s.echo)) else {
            return false;
        };
        for _ in 0..BUDGET {
            let Some(s) = self.socks.get(&sk) else {
                return false;
            };
            let n = match s.sock.recv_from(buf) {
                // A ping socket takes the echo replies to its identifier from any source: only
                // the destination's are its session's (a connected UDP socket filters itself).
                Ok((_, from)) if echo && from.ip() != dst.ip() => {
                    self.stats.add("echo_other_source", 1);
                    continue;
                }
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.stats.add("udp_destination_refused", 1);
                    continue;
                }
                Err(_) => {
                    self.stats.add("udp_receive_errors", 1);
                    return false;
                }
            };
            let listener = s.listener;
            let Some((len, to)) = self
                .table
                .seal_down(now, unix, &key, &sk, &buf[..n], &mut self.out)
            else {
                self.stats.add("udp_seal_errors", 1);
                continue;
            };
            let Some((l, _)) = self.listeners.get(listener) else {
                return false;
            };
            match l.send_to(&self.out[..len], to) {
                Ok(_) => {
                    self.stats.add("udp_datagrams_down", 1);
                    self.stats.add("udp_bytes_down", n as u64);
                    self.stats.key(sk.0).bytes_down += n as u64;
                }
                Err(_) => self.stats.add("udp_send_errors", 1),
            }
            // A redundant session: the same datagram (same number: the laptop's window drops
            // the later copy) to each other return path its authenticated datagrams came from.
            for &(extra, _) in self.table.extra_paths(now, &sk) {
                let l = self
                    .listeners
                    .get(listener)
                    .filter(|l| l.1.is_ipv4() == extra.is_ipv4())
                    .or_else(|| self.listeners.iter().find(|l| l.1.is_ipv4() == extra.is_ipv4()));
                match l.map(|l| l.0.send_to(&self.out[..len], extra)) {
                    Some(Ok(_)) => self.stats.add("udp_datagrams_down_copies", 1),
                    _ => self.stats.add("udp_send_errors", 1),
                }
            }
        }
        true
    }

    fn expire(&mut self, now: Instant) {
        for (k, _) in self.table.expire(now, unix_secs()) {
            self.stats.add("udp_sessions_expired", 1);
            self.close(k);
        }
    }

    fn close(&mut self, k: SessionKey) {
        if let Some(mut s) = self.socks.remove(&k) {
            let _ = self.registry.deregister(&mut s.sock);
            self.by_token.remove(&s.token);
        }
        self.table.remove(k);
        lock(&self.limits).release(k.0);
    }

    fn publish(&mut self, now: Instant) {
        let mut s = self.stats.snapshot();
        s.pid = std::process::id();
        s.uptime_secs = now.saturating_duration_since(self.started).as_secs();
        s.now.udp_sessions = self.table.len() as u64;
        s.counters
            .insert("udp_tombstones".into(), self.table.tombstones() as u64);
        if let Ok(mut g) = self.shared.lock() {
            *g = s;
        }
    }
}

/// The status counter of a drop reason.
fn drop_name(why: &'static str) -> &'static str {
    match why {
        "not_relay" => "udp_drop_not_relay",
        "short" => "udp_drop_short",
        "bad_mac" => "udp_drop_bad_mac",
        "malformed" => "udp_drop_malformed",
        "wrong_kind" => "udp_drop_wrong_kind",
        "unknown_key" => "udp_drop_unknown_key",
        "replay" => "udp_drop_replay",
        "other_destination" => "udp_drop_other_destination",
        "other_kind" => "udp_drop_other_kind",
        "not_echo" => "udp_drop_not_echo",
        "stale" => "udp_drop_stale",
        "below_window" => "udp_drop_below_window",
        _ => "udp_drop_other",
    }
}

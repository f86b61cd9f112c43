//! The DNS thread: owns mpbond's resolver sockets on the TUN addresses (UDP and TCP, IPv4 and
//! IPv6), the upstream sockets (one UDP socket per path and family, one TCP connection per TCP
//! attempt), each bound to its interface (`SO_BINDTODEVICE`) and carrying mpbond's fwmark so
//! the policy rules send it out of that interface, never into the TUN. Every decision is the
//! [`Forwarder`]'s; the engine thread sends it the paths' health, the daemon's learner the paths
//! that come and go while running (their interface and resolvers: [`PathUpdate`]).

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::{WAKE, Worker};
use crate::dns::paths::PathUpdate;
use crate::dns::{
    AttemptId, ClientId, DnsCounters, Forwarder, ForwarderConfig, Output, PathSignal, Transport,
};
use crate::engine::IfaceId;
use crate::sys;
use crate::time::Instant;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// Messages read per socket per wake-up at most (cap on work).
const MAX_PER_WAKE: usize = 256;
/// Client TCP connections at most; more are closed at once.
const MAX_CLIENT_CONNS: usize = 64;
/// A client TCP connection idle this long is closed (RFC 7766 §6.2.3 suggests seconds).
const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// An upstream TCP connection this old is closed (the forwarder has moved on or answered).
const UPSTREAM_TCP_LIFE: Duration = Duration::from_secs(5);
/// First token of the listeners (UDP then TCP, in the order given).
const FIRST_LISTENER: usize = 1;
/// First token of the upstream UDP sockets: `FIRST_UPSTREAM + 2 * path + v6`.
const FIRST_UPSTREAM: usize = 16;
/// First token of the TCP connections.
const FIRST_CONN: usize = 64;

/// mpbond's resolver sockets, bound before the daemon drops its privileges (port 53).
#[derive(Debug, Default)]
pub struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Binds UDP and TCP port `port` on each of `addrs`.
    pub fn bind(addrs: &[IpAddr], port: u16) -> io::Result<Listeners> {
        let mut l = Listeners::default();
        for &a in addrs {
            let sa = SocketAddr::new(a, port);
            let domain = Domain::for_address(sa);
            let u = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            if a.is_ipv6() {
                u.set_only_v6(true)?;
            }
            u.bind(&sa.into())?;
            u.set_nonblocking(true)?;
            l.udp.push(u.into());
            let t = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            if a.is_ipv6() {
                t.set_only_v6(true)?;
            }
            t.set_reuse_address(true)?;
            t.bind(&sa.into())?;
            t.listen(64)?;
            t.set_nonblocking(true)?;
            l.tcp.push(t.into());
        }
        Ok(l)
    }
}

/// Each path's interface and resolvers (best first), by path id, as `status` shows them (a
/// forgotten path: no name).
pub type ShownPaths = Arc<Mutex<Vec<(String, Vec<IpAddr>)>>>;

/// Everything the DNS thread needs.
#[derive(Debug)]
pub struct DnsSetup {
    /// Interface names, by path id.
    pub paths: Vec<String>,
    /// Each path's resolvers, best first.
    pub resolvers: Vec<Vec<IpAddr>>,
    /// Paths that appear, change or vanish while running (the sender wakes this thread).
    pub updates: Receiver<PathUpdate>,
    /// Where the paths are published for `status`.
    pub shown: ShownPaths,
    /// fwmark of the upstream sockets.
    pub fwmark: u32,
    /// The resolver sockets.
    pub listeners: Listeners,
    /// The paths' health, from the engine thread (which wakes this thread after a send).
    pub health: Receiver<Vec<PathSignal>>,
    /// Where the counters are published for `status`.
    pub counters: Arc<Mutex<DnsCounters>>,
    /// Seed of the upstream query IDs.
    pub seed: u64,
}

struct ClientConn {
    stream: TcpStream,
    id: ClientId,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    last: Instant,
    eof: bool,
    open: usize,
}

struct UpConn {
    stream: TcpStream,
    path: IfaceId,
    resolver: IpAddr,
    attempt: AttemptId,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    started: Instant,
}

enum Conn {
    Client(ClientConn),
    Upstream(UpConn),
}

struct Thread {
    poll: Poll,
    fwd: Forwarder,
    paths: Vec<String>,
    fwmark: u32,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    upstream: HashMap<(IfaceId, bool), UdpSocket>,
    udp_clients: HashMap<ClientId, (usize, SocketAddr)>,
    tcp_clients: HashMap<ClientId, Token>,
    conns: HashMap<Token, Conn>,
    next_client: u64,
    next_token: usize,
    health: Receiver<Vec<PathSignal>>,
    updates: Receiver<PathUpdate>,
    shown: ShownPaths,
    counters: Arc<Mutex<DnsCounters>>,
    published: DnsCounters,
}

fn now() -> Instant {
    sys::clock::boottime()
}

/// Starts the DNS thread.
pub fn spawn(setup: DnsSetup) -> io::Result<Worker> {
    let poll = Poll::new()?;
    let mut udp = Vec::new();
    for (i, s) in setup.listeners.udp.into_iter().enumerate() {
        let mut s = UdpSocket::from_std(s);
        poll.registry()
            .register(&mut s, Token(FIRST_LISTENER + i), Interest::READABLE)?;
        udp.push(s);
    }
    let mut tcp = Vec::new();
    for (i, s) in setup.listeners.tcp.into_iter().enumerate() {
        let mut s = TcpListener::from_std(s);
        poll.registry()
            .register(&mut s, Token(FIRST_LISTENER + udp.len() + i), Interest::READABLE)?;
        tcp.push(s);
    }
    let fwd = Forwarder::new(
        ForwarderConfig {
            seed: setup.seed,
            ..ForwarderConfig::default()
        },
        setup.resolvers,
    );
    Worker::spawn("mpbond-dns", poll, move |poll, stop| {
        let mut t = Thread {
            poll,
            fwd,
            paths: setup.paths,
            fwmark: setup.fwmark,
            udp,
            tcp,
            upstream: HashMap::new(),
            udp_clients: HashMap::new(),
            tcp_clients: HashMap::new(),
            conns: HashMap::new(),
            next_client: 0,
            next_token: FIRST_CONN,
            health: setup.health,
            updates: setup.updates,
            shown: setup.shown,
            counters: setup.counters,
            published: DnsCounters::default(),
        };
        t.run(&stop);
    })
}

impl Thread {
    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(128);
        let mut buf = vec![0u8; 65536];
        let mut housekeeping = now();
        while !stop.load(Ordering::SeqCst) {
            let t = now();
            let timeout = self
                .fwd
                .poll_timeout()
                .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(t))
                .min(Duration::from_secs(1));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("DNS poll failed: {e}");
                return;
            }
            let t = now();
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {
                        self.read_updates(t);
                        self.read_health(t);
                    }
                    Token(k) if k >= FIRST_CONN => self.on_conn(t, Token(k), &mut buf),
                    Token(k) if k >= FIRST_UPSTREAM => {
                        let path = ((k - FIRST_UPSTREAM) / 2) as IfaceId;
                        let v6 = (k - FIRST_UPSTREAM) % 2 == 1;
                        self.read_upstream(t, path, v6, &mut buf);
                    }
                    Token(k) if k >= FIRST_LISTENER + self.udp.len() => {
                        self.accept(t, k - FIRST_LISTENER - self.udp.len());
                    }
                    Token(k) => self.read_clients(t, k - FIRST_LISTENER, &mut buf),
                }
            }
            // Paths and health may also have arrived while the thread was busy.
            self.read_updates(t);
            self.read_health(t);
            self.fwd.handle_timeout(t);
            self.flush(t);
            if t.saturating_duration_since(housekeeping) >= Duration::from_secs(1) {
                housekeeping = t;
                self.expire_conns(t);
            }
            if *self.fwd.counters() != self.published {
                self.published = self.fwd.counters().clone();
                if let Ok(mut c) = self.counters.lock() {
                    *c = self.published.clone();
                }
            }
        }
    }

    fn read_health(&mut self, t: Instant) {
        let mut latest = None;
        while let Ok(h) = self.health.try_recv() {
            latest = Some(h);
        }
        if let Some(h) = latest {
            // A path that went is another network when it comes back: reopen its sockets then.
            for (i, s) in h.iter().enumerate() {
                if !s.usable {
                    for v6 in [false, true] {
                        self.upstream.remove(&(i as IfaceId, v6));
                    }
                }
            }
            self.fwd.handle_paths(t, &h);
        }
    }

    /// Takes the paths that appeared, changed or vanished.
    fn read_updates(&mut self, t: Instant) {
        let mut any = false;
        while let Ok(u) = self.updates.try_recv() {
            any = true;
            match u {
                PathUpdate::Set { id, name, resolvers } => {
                    let i = usize::from(id);
                    if i >= crate::config::MAX_INTERFACES {
                        continue;
                    }
                    if self.paths.len() <= i {
                        self.paths.resize(i + 1, String::new());
                    }
                    if self.paths[i] != name {
                        // Another interface in this place: the old one's sockets go.
                        self.drop_sockets(id);
                        self.paths[i].clone_from(&name);
                    }
                    tracing::info!(iface = %name, id, ?resolvers, "DNS: forwarding over this path to these resolvers");
                    self.fwd.set_resolvers(t, id, resolvers);
                }
                PathUpdate::Forget { id } => {
                    self.drop_sockets(id);
                    if let Some(n) = self.paths.get_mut(usize::from(id)) {
                        tracing::info!(iface = %n, id, "DNS: interface gone; its path is forgotten");
                        n.clear();
                    }
                    self.fwd.forget_path(t, id);
                }
            }
        }
        if any {
            if let Ok(mut g) = self.shown.lock() {
                *g = self
                    .paths
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), self.fwd.resolvers(i as IfaceId).to_vec()))
                    .collect();
            }
        }
    }

    /// Closes the upstream sockets and connections of `path`.
    fn drop_sockets(&mut self, path: IfaceId) {
        for v6 in [false, true] {
            self.upstream.remove(&(path, v6));
        }
        let conns: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Upstream(u) if u.path == path))
            .map(|(&k, _)| k)
            .collect();
        for k in conns {
            self.close_conn(k);
        }
    }

    fn client_id(&mut self) -> ClientId {
        self.next_client += 1;
        ClientId(self.next_client)
    }

    fn read_clients(&mut self, t: Instant, i: usize, buf: &mut [u8]) {
        for _ in 0..MAX_PER_WAKE {
            let Some(sock) = self.udp.get(i) else { return };
            match sock.recv_from(buf) {
                Ok((n, peer)) => {
                    let id = self.client_id();
                    self.udp_clients.insert(id, (i, peer));
                    if !self.fwd.handle_query(t, id, Transport::Udp, &buf[..n]) {
                        self.udp_clients.remove(&id);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("DNS listener: {e}");
                    return;
                }
            }
        }
    }

    fn accept(&mut self, t: Instant, i: usize) {
        for _ in 0..MAX_PER_WAKE {
            let Some(l) = self.tcp.get(i) else { return };
            match l.accept() {
                Ok((mut stream, _)) => {
                    let clients = self
                        .conns
                        .values()
                        .filter(|c| matches!(c, Conn::Client(_)))
                        .count();
                    if clients >= MAX_CLIENT_CONNS {
                        continue;
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let id = self.client_id();
                    self.tcp_clients.insert(id, token);
                    self.conns.insert(
                        token,
                        Conn::Client(ClientConn {
                            stream,
                            id,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            last: t,
                            eof: false,
                            open: 0,
                        }),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("DNS accept: {e}");
                    return;
                }
            }
        }
    }

    fn on_conn(&mut self, t: Instant, token: Token, buf: &mut [u8]) {
        let close = match self.conns.get_mut(&token) {
            Some(Conn::Client(c)) => {
                let mut queries = Vec::new();
                let mut close = read_some(&mut c.stream, &mut c.rbuf, buf, &mut c.eof);
                c.last = t;
                // RFC 1035 §4.2.2: each message is preceded by its two-octet length.
                while c.rbuf.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([c.rbuf[0], c.rbuf[1]]));
                    if c.rbuf.len() < 2 + len {
                        break;
                    }
                    queries.push(c.rbuf[2..2 + len].to_vec());
                    c.rbuf.drain(..2 + len);
                }
                let id = c.id;
                for q in queries {
                    if self.fwd.handle_query(t, id, Transport::Tcp, &q)
                        && let Some(Conn::Client(c)) = self.conns.get_mut(&token)
                    {
                        c.open += 1;
                    }
                }
                if let Some(Conn::Client(c)) = self.conns.get_mut(&token) {
                    close |= write_some(&mut c.stream, &mut c.wbuf);
                    close |= c.eof && c.open == 0 && c.wbuf.is_empty();
                }
                close
            }
            Some(Conn::Upstream(u)) => {
                let mut eof = false;
                let failed = write_some(&mut u.stream, &mut u.wbuf)
                    | read_some(&mut u.stream, &mut u.rbuf, buf, &mut eof);
                let reply = (u.rbuf.len() >= 2)
                    .then(|| usize::from(u16::from_be_bytes([u.rbuf[0], u.rbuf[1]])))
                    .and_then(|len| u.rbuf.get(2..2 + len).map(<[u8]>::to_vec));
                let (path, resolver, attempt) = (u.path, u.resolver, u.attempt);
                if let Some(r) = reply {
                    self.fwd.handle_reply(t, path, resolver, &r);
                    true
                } else if failed || eof {
                    self.fwd.handle_send_failed(t, attempt);
                    true
                } else {
                    false
                }
            }
            None => false,
        };
        if close {
            self.close_conn(token);
        }
    }

    fn close_conn(&mut self, token: Token) {
        match self.conns.remove(&token) {
            Some(Conn::Client(mut c)) => {
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.tcp_clients.remove(&c.id);
            }
            Some(Conn::Upstream(mut u)) => {
                let _ = self.poll.registry().deregister(&mut u.stream);
            }
            None => {}
        }
    }

    fn expire_conns(&mut self, t: Instant) {
        let old: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| match c {
                Conn::Client(c) => t.saturating_duration_since(c.last) >= CLIENT_IDLE,
                Conn::Upstream(u) => t.saturating_duration_since(u.started) >= UPSTREAM_TCP_LIFE,
            })
            .map(|(&k, _)| k)
            .collect();
        for k in old {
            self.close_conn(k);
        }
    }

    fn read_upstream(&mut self, t: Instant, path: IfaceId, v6: bool, buf: &mut [u8]) {
        for _ in 0..MAX_PER_WAKE {
            let Some(s) = self.upstream.get(&(path, v6)) else {
                return;
            };
            match s.recv_from(buf) {
                Ok((n, from)) => {
                    if from.port() == DNS_PORT {
                        self.fwd.handle_reply(t, path, from.ip(), &buf[..n]);
                    } else {
                        self.fwd
                            .handle_reply(t, path, IpAddr::V4(Ipv4Addr::UNSPECIFIED), &buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // An ICMP error queued on the socket: the timeout moves the query on.
                    tracing::debug!(path, "DNS upstream: {e}");
                    return;
                }
            }
        }
    }

    /// A socket of `domain`/`ty` bound to `path`'s interface and carrying the fwmark.
    fn path_socket(&self, path: IfaceId, domain: Domain, ty: Type, proto: Protocol) -> io::Result<Socket> {
        let name = self
            .paths
            .get(usize::from(path))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| io::Error::other("unknown path"))?;
        let s = Socket::new(domain, ty, Some(proto))?;
        s.set_mark(self.fwmark)?;
        s.bind_device(Some(name.as_bytes()))?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    fn upstream_udp(&mut self, path: IfaceId, v6: bool) -> io::Result<&UdpSocket> {
        if !self.upstream.contains_key(&(path, v6)) {
            let (domain, any): (Domain, SocketAddr) = if v6 {
                (Domain::IPV6, (Ipv6Addr::UNSPECIFIED, 0).into())
            } else {
                (Domain::IPV4, (Ipv4Addr::UNSPECIFIED, 0).into())
            };
            let s = self.path_socket(path, domain, Type::DGRAM, Protocol::UDP)?;
            s.bind(&any.into())?;
            let mut s = UdpSocket::from_std(s.into());
            let token = Token(FIRST_UPSTREAM + 2 * usize::from(path) + usize::from(v6));
            self.poll.registry().register(&mut s, token, Interest::READABLE)?;
            self.upstream.insert((path, v6), s);
        }
        self.upstream
            .get(&(path, v6))
            .ok_or_else(|| io::Error::other("no socket"))
    }

    /// The resolver's socket address (a link-local IPv6 one scoped to the path's interface).
    fn resolver_addr(&self, path: IfaceId, resolver: IpAddr) -> SocketAddr {
        match resolver {
            IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => {
                let scope = self
                    .paths
                    .get(usize::from(path))
                    .and_then(|n| sys::packet::if_index(n).ok())
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0);
                SocketAddr::V6(SocketAddrV6::new(a, DNS_PORT, 0, scope))
            }
            a => SocketAddr::new(a, DNS_PORT),
        }
    }

    fn send_udp(&mut self, path: IfaceId, resolver: IpAddr, payload: &[u8]) -> io::Result<()> {
        let to = self.resolver_addr(path, resolver);
        let v6 = resolver.is_ipv6();
        let r = self.upstream_udp(path, v6)?.send_to(payload, to);
        if r.is_err() {
            // Reopened at the next send (the interface may have come back as another one).
            self.upstream.remove(&(path, v6));
        }
        r.map(drop)
    }

    fn open_tcp(
        &mut self,
        t: Instant,
        path: IfaceId,
        resolver: IpAddr,
        attempt: AttemptId,
        payload: &[u8],
    ) -> io::Result<()> {
        let to = self.resolver_addr(path, resolver);
        let s = self.path_socket(path, Domain::for_address(to), Type::STREAM, Protocol::TCP)?;
        match s.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(s.into());
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let len = u16::try_from(payload.len()).map_err(|_| io::Error::other("message too long"))?;
        let mut wbuf = len.to_be_bytes().to_vec();
        wbuf.extend_from_slice(payload);
        self.conns.insert(
            token,
            Conn::Upstream(UpConn {
                stream,
                path,
                resolver,
                attempt,
                wbuf,
                rbuf: Vec::new(),
                started: t,
            }),
        );
        Ok(())
    }

    fn answer(&mut self, client: ClientId, payload: &[u8]) {
        if let Some((i, peer)) = self.udp_clients.remove(&client) {
            if let Some(s) = self.udp.get(i)
                && let Err(e) = s.send_to(payload, peer)
            {
                tracing::debug!("DNS answer to {peer}: {e}");
            }
            return;
        }
        let Some(&token) = self.tcp_clients.get(&client) else {
            return;
        };
        let close = match self.conns.get_mut(&token) {
            Some(Conn::Client(c)) => {
                let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
                c.wbuf.extend_from_slice(&len.to_be_bytes());
                c.wbuf
                    .extend_from_slice(&payload[..usize::from(len).min(payload.len())]);
                c.open = c.open.saturating_sub(1);
                let failed = write_some(&mut c.stream, &mut c.wbuf);
                failed || (c.eof && c.open == 0 && c.wbuf.is_empty())
            }
            _ => false,
        };
        if close {
            self.close_conn(token);
        } else if let Some(Conn::Client(c)) = self.conns.get_mut(&token) {
            let interest = if c.wbuf.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            let _ = self.poll.registry().reregister(&mut c.stream, token, interest);
        }
    }

    /// Carries out the forwarder's output (a failed send goes back to it, which may add more).
    fn flush(&mut self, t: Instant) {
        // Each failure moves a query to its next attempt; the number of attempts is bounded, so
        // this ends; the cap guards against a bug turning it into a spin.
        for _ in 0..100_000 {
            let Some(o) = self.fwd.poll_output() else { return };
            match o {
                Output::Send {
                    path,
                    resolver,
                    transport,
                    attempt,
                    payload,
                } => {
                    let r = match transport {
                        Transport::Udp => self.send_udp(path, resolver, &payload),
                        Transport::Tcp => self.open_tcp(t, path, resolver, attempt, &payload),
                    };
                    if let Err(e) = r {
                        tracing::debug!(path, %resolver, "DNS upstream send failed: {e}");
                        self.fwd.handle_send_failed(t, attempt);
                    }
                }
                Output::Answer { client, payload } => self.answer(client, &payload),
            }
        }
    }
}

/// Reads what `stream` has into `rbuf`; true on a hard error. Sets `eof` at end of stream.
fn read_some(stream: &mut TcpStream, rbuf: &mut Vec<u8>, buf: &mut [u8], eof: &mut bool) -> bool {
    for _ in 0..MAX_PER_WAKE {
        match stream.read(buf) {
            Ok(0) => {
                *eof = true;
                return false;
            }
            Ok(n) => {
                rbuf.extend_from_slice(&buf[..n]);
                // Two messages of the largest size is plenty of buffer.
                if rbuf.len() > 2 * 65537 {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

/// Writes what it can of `wbuf`; true on a hard error.
fn write_some(stream: &mut TcpStream, wbuf: &mut Vec<u8>) -> bool {
    while !wbuf.is_empty() {
        match stream.write(wbuf) {
            Ok(0) => return true,
            Ok(n) => {
                wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            // Not connected yet: the connect is still in progress.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

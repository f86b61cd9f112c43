//! The servers of the `inet` namespace: minimal HTTP/1.1 over a kernel MPTCP socket and over a
//! plain TCP socket, and a UDP echo. Each listener is a thread; each connection gets a thread.
//!
//! HTTP:
//! - `GET /bytes/N` → `N` bytes of [`crate::pattern`] (byte i = `(i*7 + i/251) as u8`).
//! - `POST /sink` with `Content-Length: N` → `{"bytes":N,"fnv1a64":"<16 hex digits>"}` of what
//!   arrived.
//! - `GET /` → a short help text. Keep-alive is supported; `Connection: close` ends the connection.

use crate::pattern::{Fnv64, fill};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// `IPPROTO_MPTCP`.
pub const IPPROTO_MPTCP: i32 = 262;
const MAX_HEADER: usize = 16 * 1024;
const TICK: Duration = Duration::from_millis(200);

/// What the servers have seen (shared, updated live).
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted on an MPTCP listener that are real MPTCP connections.
    pub mptcp_conns: AtomicU64,
    /// Connections accepted on an MPTCP listener that fell back to plain TCP (no MP_CAPABLE).
    pub fallback_conns: AtomicU64,
    /// Connections accepted on a plain TCP listener.
    pub tcp_conns: AtomicU64,
    /// HTTP requests served.
    pub requests: AtomicU64,
    /// UDP datagrams echoed.
    pub udp_echoed: AtomicU64,
    /// DNS queries answered.
    pub dns_answered: AtomicU64,
}

/// Which sockets to serve on.
#[derive(Debug, Clone, Default)]
pub struct ServeSpec {
    /// HTTP over kernel MPTCP sockets.
    pub mptcp: Vec<SocketAddr>,
    /// HTTP over plain TCP sockets.
    pub tcp: Vec<SocketAddr>,
    /// UDP echo sockets.
    pub udp: Vec<SocketAddr>,
    /// DNS responders ([`crate::dns`]) on UDP sockets.
    pub dns: Vec<SocketAddr>,
}

impl ServeSpec {
    /// The lab's standard servers (see [`crate::Server`]), IPv4 and IPv6.
    pub fn lab() -> Self {
        use crate::Server;
        Self {
            mptcp: vec![Server::Mptcp.addr(false), Server::Mptcp.addr(true)],
            tcp: vec![Server::Tcp.addr(false), Server::Tcp.addr(true)],
            udp: vec![Server::UdpEcho.addr(false), Server::UdpEcho.addr(true)],
            dns: [false, true]
                .map(|v6| SocketAddr::new(Server::UdpEcho.ip(v6), crate::dns::DNS_PORT))
                .to_vec(),
        }
    }
}

/// Running servers; dropping this stops them (listeners within ~200 ms, connections at their
/// next read or write tick).
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    /// Live counters.
    pub stats: Arc<ServerStats>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds every socket of `spec` (inside namespace `ns` when given, else in the current one) and
/// serves until the returned value is dropped. Binding errors are returned before anything runs.
pub fn start(ns: Option<&str>, spec: &ServeSpec) -> io::Result<Servers> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ServerStats::default());
    let bind = || -> io::Result<Vec<(Kind, Socket)>> {
        let mut v = Vec::new();
        for a in &spec.mptcp {
            v.push((Kind::Mptcp, listen(*a, true)?));
        }
        for a in &spec.tcp {
            v.push((Kind::Tcp, listen(*a, false)?));
        }
        let udp = spec.udp.iter().map(|a| (Kind::Udp, a));
        for (kind, a) in udp.chain(spec.dns.iter().map(|a| (Kind::Dns, a))) {
            let s = Socket::new(Domain::for_address(*a), Type::DGRAM, None)?;
            if a.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.bind(&SockAddr::from(*a))
                .map_err(|e| ctx(e, &format!("bind udp {a}")))?;
            v.push((kind, s));
        }
        Ok(v)
    };
    let sockets = match ns {
        Some(ns) => crate::netns::run_in(ns, bind)??,
        None => bind()?,
    };
    let mut threads = Vec::new();
    for (kind, sock) in sockets {
        let (stop, stats) = (stop.clone(), stats.clone());
        let t = std::thread::Builder::new()
            .name(format!("netlab-{kind:?}"))
            .spawn(move || match kind {
                Kind::Udp => udp_serve(sock.into(), &stop, &stats, false),
                Kind::Dns => udp_serve(sock.into(), &stop, &stats, true),
                _ => accept_loop(kind, sock, stop, stats),
            })?;
        threads.push(t);
    }
    Ok(Servers { stop, threads, stats })
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mptcp,
    Tcp,
    Udp,
    Dns,
}

fn listen(a: SocketAddr, mptcp: bool) -> io::Result<Socket> {
    let proto = if mptcp {
        Protocol::from(IPPROTO_MPTCP)
    } else {
        Protocol::TCP
    };
    let s = Socket::new(Domain::for_address(a), Type::STREAM, Some(proto))
        .map_err(|e| ctx(e, &format!("socket for {a} (mptcp={mptcp})")))?;
    s.set_reuse_address(true)?;
    if a.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&SockAddr::from(a))
        .map_err(|e| ctx(e, &format!("bind {a}")))?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn accept_loop(kind: Kind, sock: Socket, stop: Arc<AtomicBool>, stats: Arc<ServerStats>) -> io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&sock),
            events: libc::POLLIN,
            revents: 0,
        }];
        crate::sys::ppoll(&mut fds, Some(TICK))?;
        loop {
            let conn = match sock.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNABORTED and friends: the peer gave up; keep serving.
                Err(_) => break,
            };
            let mptcp = kind == Kind::Mptcp;
            if mptcp {
                match crate::sys::mptcp_info(&conn) {
                    Ok(Some(i)) if !i.fallback => stats.mptcp_conns.fetch_add(1, Ordering::Relaxed),
                    _ => stats.fallback_conns.fetch_add(1, Ordering::Relaxed),
                };
            } else {
                stats.tcp_conns.fetch_add(1, Ordering::Relaxed);
            }
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("netlab-conn".into())
                .spawn(move || {
                    let stream: TcpStream = conn.into();
                    // A connection's error ends only that connection.
                    let _ = serve_conn(stream, &stop, &stats);
                })?;
        }
    }
    Ok(())
}

/// Reads into `buf`, retrying on read timeouts until `stop` is set. `Ok(0)` is EOF.
fn read_some(s: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<usize> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::other("server stopping"));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn write_all(s: &mut TcpStream, mut buf: &[u8], stop: &AtomicBool) -> io::Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::other("server stopping"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    content_length: Option<u64>,
    close: bool,
    expect_continue: bool,
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    let mut close = version == "HTTP/1.0";
    let mut content_length = None;
    let mut expect_continue = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            content_length = Some(v.parse().ok()?);
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        } else if k.eq_ignore_ascii_case("expect") {
            expect_continue = v.eq_ignore_ascii_case("100-continue");
        }
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        content_length,
        close,
        expect_continue,
    })
}

fn serve_conn(mut s: TcpStream, stop: &AtomicBool, stats: &ServerStats) -> io::Result<()> {
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(TICK))?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read the head.
        let end = loop {
            if let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if pending.len() > MAX_HEADER {
                return write_all(&mut s, b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", stop);
            }
            let n = read_some(&mut s, &mut buf, stop)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
        };
        let head = parse_head(&pending[..end]);
        pending.drain(..end + 4);
        let Some(head) = head else {
            return write_all(
                &mut s,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                stop,
            );
        };
        let conn_hdr = if head.close { "close" } else { "keep-alive" };
        match (head.method.as_str(), head.target.as_str()) {
            ("GET", t) if t.starts_with("/bytes/") => {
                let Ok(n) = t["/bytes/".len()..].parse::<u64>() else {
                    return write_all(
                        &mut s,
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        stop,
                    );
                };
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: {conn_hdr}\r\n\r\n"
                );
                write_all(&mut s, h.as_bytes(), stop)?;
                let mut off = 0u64;
                while off < n {
                    let k = (n - off).min(buf.len() as u64) as usize;
                    fill(off, &mut buf[..k]);
                    write_all(&mut s, &buf[..k], stop)?;
                    off += k as u64;
                }
            }
            ("POST", "/sink") => {
                let Some(n) = head.content_length else {
                    return write_all(
                        &mut s,
                        b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        stop,
                    );
                };
                if head.expect_continue && pending.is_empty() {
                    // curl waits a second for this before sending a larger body.
                    write_all(&mut s, b"HTTP/1.1 100 Continue\r\n\r\n", stop)?;
                }
                let mut h = Fnv64::default();
                let take = (n as usize).min(pending.len());
                h.update(&pending[..take]);
                pending.drain(..take);
                let mut got = take as u64;
                while got < n {
                    let want = (n - got).min(buf.len() as u64) as usize;
                    let k = read_some(&mut s, &mut buf[..want], stop)?;
                    if k == 0 {
                        return Ok(());
                    }
                    h.update(&buf[..k]);
                    got += k as u64;
                }
                let body = format!("{{\"bytes\":{n},\"fnv1a64\":\"{:016x}\"}}\n", h.value());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {conn_hdr}\r\n\r\n{body}",
                    body.len()
                );
                write_all(&mut s, resp.as_bytes(), stop)?;
            }
            ("GET", "/") => {
                let body = "netlab server\nGET /bytes/N  -> N bytes, byte i = (i*7 + i/251) mod 256\nPOST /sink   -> {\"bytes\":N,\"fnv1a64\":\"...\"}\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn_hdr}\r\n\r\n{body}",
                    body.len()
                );
                write_all(&mut s, resp.as_bytes(), stop)?;
            }
            _ => {
                write_all(
                    &mut s,
                    format!("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: {conn_hdr}\r\n\r\n")
                        .as_bytes(),
                    stop,
                )?;
            }
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if head.close {
            return Ok(());
        }
    }
}

/// Echoes each datagram, or with `dns` answers it as a DNS query ([`crate::dns::answer`]).
fn udp_serve(sock: UdpSocket, stop: &AtomicBool, stats: &ServerStats, dns: bool) -> io::Result<()> {
    sock.set_read_timeout(Some(TICK))?;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if dns => {
                // A message that is no query is ignored, as a resolver would.
                if let Some(r) = crate::dns::answer(&buf[..n])
                    && sock.send_to(&r, from).is_ok()
                {
                    stats.dns_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok((n, from)) => {
                // A failed echo is a lost datagram, as on a real network.
                if sock.send_to(&buf[..n], from).is_ok() {
                    stats.udp_echoed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

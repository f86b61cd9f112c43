//! Client-side measurements the lab's stock clients do not give: a download that timestamps
//! every read (failover gap), request/response round trips on one keep-alive connection, a
//! connection setup rate, and a server that holds many idle connections. Every loop is bounded
//! in count and time.

use netlab::client::{ClientOpts, connect};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest interval without received bytes from `event` on: the receive times (seconds from
/// a common origin, ascending) after `event` are taken with `event` itself as the first point.
/// `end` closes the last interval when the transfer did not finish (`None`: it finished, the
/// last receive ends it).
pub fn longest_gap(event: f64, recv: &[f64], end: Option<f64>) -> f64 {
    let mut prev = event;
    let mut gap = 0.0f64;
    for &t in recv.iter().filter(|&&t| t > event) {
        gap = gap.max(t - prev);
        prev = t;
    }
    if let Some(e) = end {
        gap = gap.max(e - prev);
    }
    gap
}

/// A download whose reads were timestamped.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Seconds from connect start of every read that returned data.
    pub recv: Vec<f64>,
    /// Bytes received (body).
    pub bytes: u64,
    /// The whole body arrived.
    pub complete: bool,
    /// Seconds from connect start when the reading stopped.
    pub end: f64,
}

/// `GET /bytes/N` from `addr` (MPTCP socket when `mptcp`), timestamping every read; sends on
/// `first` once the first body bytes arrived. Stops at `timeout` (then `complete` is false).
/// The body is not checked byte by byte (the lab tests do that); its length is.
pub fn timed_get(
    addr: SocketAddr,
    n: u64,
    mptcp: bool,
    timeout: Duration,
    origin: Instant,
    first: std::sync::mpsc::Sender<()>,
) -> Result<Trace, String> {
    let opts = ClientOpts {
        mptcp,
        timeout,
        ..ClientOpts::default()
    };
    let deadline = Instant::now() + timeout;
    let mut s = connect(addr, &opts).map_err(|e| e.to_string())?;
    s.write_all(&get_request(addr, n))
        .map_err(|e| format!("send request: {e}"))?;
    timed_response(&mut s, n, deadline, origin, first, Vec::new())
}

/// The request [`timed_get`] sends: `GET /bytes/N` for `addr`, `Connection: close`.
pub fn get_request(addr: SocketAddr, n: u64) -> Vec<u8> {
    format!("GET /bytes/{n} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Reads the response to [`get_request`] from `s` as [`timed_get`] does, until `deadline`;
/// `head` holds bytes of the response already read.
pub fn timed_response(
    s: &mut std::net::TcpStream,
    n: u64,
    deadline: Instant,
    origin: Instant,
    first: std::sync::mpsc::Sender<()>,
    mut head: Vec<u8>,
) -> Result<Trace, String> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut trace = Trace {
        recv: Vec::with_capacity(1 << 16),
        bytes: 0,
        complete: false,
        end: 0.0,
    };
    let mut in_body = false;
    let mut told = false;
    let mut note = |trace: &mut Trace, body: usize, t: f64| {
        if body > 0 {
            trace.bytes += body as u64;
            if trace.recv.len() < 4_000_000 {
                trace.recv.push(t);
            }
            if !told {
                told = true;
                let _ = first.send(());
            }
        }
    };
    if !head.is_empty() {
        let body = head_end(&mut head, &[], &mut in_body)?;
        note(&mut trace, body, origin.elapsed().as_secs_f64());
    }
    while Instant::now() < deadline && trace.bytes < n {
        let k = match s.read(&mut buf) {
            Ok(0) => return Err(format!("connection closed after {} of {n} bytes", trace.bytes)),
            Ok(k) => k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(format!("read after {} bytes: {e}", trace.bytes)),
        };
        let t = origin.elapsed().as_secs_f64();
        let body = if in_body {
            k
        } else {
            head_end(&mut head, &buf[..k], &mut in_body)?
        };
        note(&mut trace, body, t);
    }
    trace.complete = trace.bytes >= n;
    trace.end = origin.elapsed().as_secs_f64();
    Ok(trace)
}

/// Appends `chunk` to the response `head` read so far; once the head is complete (`in_body` is
/// then set), returns how many of its bytes are body.
fn head_end(head: &mut Vec<u8>, chunk: &[u8], in_body: &mut bool) -> Result<usize, String> {
    head.extend_from_slice(chunk);
    match head.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => {
            *in_body = true;
            Ok(head.len() - (p + 4))
        }
        None if head.len() > 16 * 1024 => Err("response head over 16 KiB".into()),
        None => Ok(0),
    }
}

/// Round trips (µs) of `count` 64-byte request/response exchanges on one TCP connection to the
/// echo server `addr` (a [`HoldServer`] with `echo`), after 10 unmeasured ones. Bounded by
/// `timeout` overall.
pub fn request_rtts(addr: SocketAddr, count: usize, timeout: Duration) -> Result<Vec<f64>, String> {
    let deadline = Instant::now() + timeout;
    let opts = ClientOpts {
        timeout,
        ..ClientOpts::default()
    };
    let mut s = connect(addr, &opts).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let req = [0x42u8; 64];
    let mut resp = [0u8; 64];
    let mut rtts = Vec::with_capacity(count);
    for i in 0..count + 10 {
        if Instant::now() > deadline {
            return Err(format!("timed out after {i} requests"));
        }
        let t = Instant::now();
        s.write_all(&req).map_err(|e| format!("send: {e}"))?;
        s.read_exact(&mut resp).map_err(|e| format!("receive: {e}"))?;
        if i >= 10 {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(rtts)
}

/// Connections per second: sequential connect (handshake complete) and close to `addr`, as many
/// as fit in `time`, at most `max`.
pub fn connect_rate(addr: SocketAddr, max: usize, time: Duration) -> Result<f64, String> {
    let opts = ClientOpts {
        timeout: Duration::from_secs(5),
        ..ClientOpts::default()
    };
    let t = Instant::now();
    let mut n = 0usize;
    while n < max && t.elapsed() < time {
        let s = connect(addr, &opts).map_err(|e| format!("connection {n}: {e}"))?;
        drop(s);
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// A server that accepts connections and reads whatever arrives on them, on one thread (mio),
/// counting bytes: it discards the data (many idle flows) or, with `echo`, sends it back
/// (`TCP_NODELAY`; request/response latency). Stops on drop.
#[derive(Debug)]
pub struct HoldServer {
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    /// Bytes read so far.
    pub bytes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// When the server runs in a child process: the child and its stdin (closing it stops it).
    child: Option<(std::process::Child, std::process::ChildStdin)>,
}

/// The child process's side of [`HoldServer::start_process`]: serves `addr` in `ns` (discarding)
/// and prints `accepted bytes` every 20 ms until its stdin closes.
pub fn run_hold_child(ns: &str, addr: SocketAddr) -> Result<(), String> {
    let server = HoldServer::start(ns, addr, false)?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        d.store(true, Ordering::Relaxed);
    });
    let mut out = std::io::stdout();
    while !done.load(Ordering::Relaxed) {
        let line = format!(
            "{} {}\n",
            server.accepted.load(Ordering::Relaxed),
            server.bytes.load(Ordering::Relaxed)
        );
        if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl HoldServer {
    /// Listens on `addr` inside namespace `ns`.
    pub fn start(ns: &str, addr: SocketAddr, echo: bool) -> Result<HoldServer, String> {
        let listener = netlab::netns::run_in(ns, move || {
            let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.listen(4096)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(std::net::TcpListener::from(s))
        })
        .map_err(|e| format!("enter {ns}: {e}"))?
        .map_err(|e| format!("listen {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (st, acc, by) = (stop.clone(), accepted.clone(), bytes.clone());
        let thread = std::thread::Builder::new()
            .name("bench-hold".into())
            .spawn(move || serve(mio::net::TcpListener::from_std(listener), echo, &st, &acc, &by))
            .map_err(|e| format!("spawn: {e}"))?;
        Ok(HoldServer {
            stop,
            accepted,
            bytes,
            thread: Some(thread),
            child: None,
        })
    }

    /// Like [`start`](Self::start) (discarding), but in a child process running `exe
    /// --hold-server NS ADDR` (see [`run_hold_child`]), so its sockets count against the child's
    /// open-file limit, not this process's: 10,000 client flows here and 10,000 accepted ones
    /// there fit where one process could hold only one side.
    pub fn start_process(exe: &std::path::Path, ns: &str, addr: SocketAddr) -> Result<HoldServer, String> {
        let crate::child::Helper {
            child, stdin, lines, ..
        } = crate::child::spawn_helper(exe, &["--hold-server", ns, &addr.to_string()], "hold server")?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (acc, by) = (accepted.clone(), bytes.clone());
        let thread = std::thread::Builder::new()
            .name("bench-hold-rx".into())
            .spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let mut w = line.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
                    if let (Some(a), Some(b)) = (w.next(), w.next()) {
                        acc.store(a, Ordering::Relaxed);
                        by.store(b, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
            .map_err(|e| format!("spawn: {e}"))?;
        Ok(HoldServer {
            stop,
            accepted,
            bytes,
            thread: Some(thread),
            child: Some((child, stdin)),
        })
    }
}

impl Drop for HoldServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some((mut child, stdin)) = self.child.take() {
            // Closing its stdin stops it; past 5 s it is killed.
            drop(stdin);
            crate::child::wait_exit(&mut child, Duration::from_secs(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut listener: mio::net::TcpListener,
    echo: bool,
    stop: &AtomicBool,
    accepted: &AtomicU64,
    bytes: &AtomicU64,
) -> std::io::Result<()> {
    use mio::{Events, Interest, Poll, Token};
    const LISTENER: Token = Token(usize::MAX);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<mio::net::TcpStream>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut c, _)) => {
                            if echo {
                                c.set_nodelay(true)?;
                            }
                            let t = Token(conns.len());
                            poll.registry().register(&mut c, t, Interest::READABLE)?;
                            conns.push(Some(c));
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let Some(slot) = conns.get_mut(ev.token().0) else {
                continue;
            };
            let mut closed = false;
            if let Some(c) = slot.as_mut() {
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(k) => {
                            bytes.fetch_add(k as u64, Ordering::Relaxed);
                            // Small request/response exchanges: the answer fits the send buffer.
                            if echo && c.write_all(&buf[..k]).is_err() {
                                closed = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if closed && let Some(mut c) = slot.take() {
                let _ = poll.registry().deregister(&mut c);
            }
        }
    }
    Ok(())
}
